//! The host's own account of what a deployment did on its target.
//!
//! A strategy's answers are input to check, never a verdict to trust: the engine decides
//! what a deployment ended as from this ledger, which it folds from the journal's decisions
//! and outcomes. The live run applies each record as it is written and `dax resume` folds
//! the whole journal with the same [`Ledger::apply`], so both see the same counters.

use crate::contract::{CheckVerdict, FinalStatus, Outcome, Slot, Step};
use crate::state::{DecidedBy, Event, Record};

/// What has happened on the target so far, as the host saw it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Ledger {
    /// Number of the last decision (decisions are numbered from 1).
    pub decisions: u64,
    /// Control records (`dax promote` / `dax abort`) already consumed.
    pub controls_seen: usize,
    /// The last decision, and its outcome once executed.
    pub last: Option<LastStep>,
    /// A `deploy-candidate` succeeded.
    pub deployed: bool,
    /// The candidate was seen ready (`ready >= desired > 0`) at least once.
    pub candidate_ready: bool,
    /// Most candidate replicas seen ready (progress when it grows).
    pub candidate_ready_max: u32,
    /// The candidate's traffic weight on the target now, and the highest it reached.
    pub weight: u8,
    pub max_weight: u8,
    /// Analyses in which every check passed.
    pub analyses_passed: u32,
    /// A `promote` succeeded on the target and no rollback ran after it.
    pub promoted: bool,
    /// Failed `promote` / `rollback` attempts in a row.
    pub promote_failures: u32,
    pub rollback_failures: u32,
    /// A rollback was decided (by anyone); once set, traffic never moves towards the
    /// candidate again.
    pub rollback_started: bool,
    /// A rollback succeeded on the target.
    pub rolled_back: bool,
    /// Why the deployment is being rolled back or ended (the first reason, with what
    /// happened to it appended), shown in the summary's headline.
    pub reason: String,
    /// The status the engine ends with once its own rollback is done (`failed` when the
    /// rollback repairs a fault: a failed promote, a strategy that lied about the end).
    pub rollback_ends_as: Option<FinalStatus>,
    /// Rollout clock of the last real progress (see [`Ledger::apply`]).
    pub last_progress_ms: u64,
}

/// The last decision and, once executed, its outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct LastStep {
    pub n: u64,
    pub step: Step,
    pub by: DecidedBy,
    /// The strategy's state blob after this decision.
    pub state: Vec<u8>,
    pub outcome: Option<Outcome>,
}

impl Ledger {
    /// Fold a whole journal.
    pub fn fold(records: &[Record]) -> Ledger {
        let mut ledger = Ledger::default();
        for r in records {
            ledger.apply(r);
        }
        ledger
    }

    /// Fold one record in. Progress — what resets the progress deadline — is only what
    /// really advances a rollout: the first successful deploy, more candidate replicas
    /// ready than ever before, a weight reached for the first time, a passing analysis, a
    /// promotion, a rollback done, an operator's answer. Repeating a step is not progress.
    pub fn apply(&mut self, r: &Record) {
        match &r.event {
            Event::Created { .. } | Event::Resumed { .. } => {
                // The deadline starts afresh with every (re)start of the host.
                self.last_progress_ms = r.elapsed_ms;
            }
            Event::Control { index, .. } => {
                self.controls_seen = self.controls_seen.max(index + 1);
                self.last_progress_ms = r.elapsed_ms;
            }
            Event::Decision {
                n,
                step,
                state,
                by,
                ends_as,
                note,
            } => {
                self.decisions = self.decisions.max(*n);
                if matches!(step, Step::Finish(_)) && *by != DecidedBy::Strategy {
                    // The engine's own finish carries the deployment's final reason.
                    self.reason = note.clone();
                }
                if let Step::Rollback(reason) = step {
                    if !self.rollback_started {
                        self.reason = reason.clone();
                    }
                    self.rollback_started = true;
                    if ends_as.is_some() {
                        self.rollback_ends_as = *ends_as;
                    }
                }
                self.last = Some(LastStep {
                    n: *n,
                    step: step.clone(),
                    by: *by,
                    state: hex::decode(state).unwrap_or_default(),
                    outcome: None,
                });
            }
            Event::Outcome { n, outcome, .. } => {
                let Some(last) = self.last.as_mut().filter(|l| l.n == *n) else {
                    return;
                };
                last.outcome = Some(outcome.clone());
                let step = last.step.clone();
                if self.account(&step, outcome) {
                    self.last_progress_ms = r.elapsed_ms;
                }
            }
            Event::Finished { reason, .. } => self.reason = reason.clone(),
            Event::PluginsResolved { .. } | Event::Gate { .. } | Event::Paused { .. } => {}
        }
    }

    /// Account for one executed step. Returns whether it made progress.
    fn account(&mut self, step: &Step, outcome: &Outcome) -> bool {
        let mut progress = false;
        if let Outcome::TargetStatus(s) = outcome {
            if s.which == Slot::Candidate {
                if s.desired > 0 && s.ready >= s.desired {
                    self.candidate_ready = true;
                }
                if s.ready > self.candidate_ready_max {
                    self.candidate_ready_max = s.ready;
                    progress = true;
                }
            }
        }
        match (step, outcome) {
            (Step::DeployCandidate, outcome) => {
                // Even a failed deploy may have left something for a rollback to remove.
                let ok = matches!(outcome, Outcome::TargetStatus(_) | Outcome::Done);
                progress |= ok && !self.deployed;
                self.deployed = true;
            }
            (Step::SetTraffic(split), Outcome::Done) => {
                self.weight = split.candidate_weight;
                if split.candidate_weight > self.max_weight {
                    self.max_weight = split.candidate_weight;
                    progress = true;
                }
            }
            (Step::Analyze(_), Outcome::Analysis(a))
                if !a.checks.is_empty()
                    && a.checks.iter().all(|c| c.verdict == CheckVerdict::Pass) =>
            {
                self.analyses_passed += 1;
                progress = true;
            }
            (Step::Promote, Outcome::Done) => {
                progress |= !self.promoted;
                self.promoted = true;
                self.promote_failures = 0;
            }
            (Step::Promote, Outcome::Failed(e)) => {
                self.promote_failures += 1;
                self.reason = format!("promote failed: {e}");
            }
            (Step::Rollback(_), Outcome::Done) => {
                // The first one: a strategy rolling back again and again is not progressing.
                progress |= !self.rolled_back;
                self.rolled_back = true;
                self.promoted = false;
                self.weight = 0;
                self.rollback_failures = 0;
            }
            (Step::Rollback(_), Outcome::Failed(_)) => self.rollback_failures += 1,
            (_, Outcome::Approval(_)) => progress = true,
            _ => {}
        }
        progress
    }

    /// Whether the deployment touched the target in a way a rollback must undo.
    pub fn candidate_exposed(&self) -> bool {
        (self.deployed || self.max_weight > 0) && !self.rolled_back && !self.promoted
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{AnalysisOutcome, CheckResult, StatusOutcome, TrafficSplit};
    use chrono::Utc;

    fn rec(seq: u64, elapsed_ms: u64, event: Event) -> Record {
        Record {
            seq,
            ts: Utc::now(),
            elapsed_ms,
            event,
        }
    }

    fn decision(n: u64, step: Step) -> Event {
        Event::Decision {
            n,
            step,
            state: String::new(),
            note: String::new(),
            by: DecidedBy::Strategy,
            ends_as: None,
        }
    }

    fn outcome(n: u64, outcome: Outcome) -> Event {
        Event::Outcome {
            n,
            outcome,
            detail: String::new(),
        }
    }

    fn run(events: Vec<Event>) -> Ledger {
        let records: Vec<Record> = events
            .into_iter()
            .enumerate()
            .map(|(i, e)| rec(i as u64, i as u64 * 1000, e))
            .collect();
        Ledger::fold(&records)
    }

    fn weight(w: u8) -> Step {
        Step::SetTraffic(TrafficSplit {
            candidate_weight: w,
            ..Default::default()
        })
    }

    #[test]
    fn a_promote_counts_only_when_it_succeeded_and_no_rollback_followed() {
        let l = run(vec![
            decision(1, Step::Promote),
            outcome(1, Outcome::Failed("boom".into())),
        ]);
        assert!(!l.promoted);
        assert_eq!(l.promote_failures, 1);
        let l = run(vec![
            decision(1, Step::Promote),
            outcome(1, Outcome::Done),
            decision(2, Step::Rollback("late".into())),
            outcome(2, Outcome::Done),
        ]);
        assert!(!l.promoted && l.rolled_back);
        assert_eq!(l.reason, "late");
    }

    #[test]
    fn only_new_weights_ready_replicas_and_passing_analyses_are_progress() {
        let ready = |r| {
            Outcome::TargetStatus(StatusOutcome {
                which: Slot::Candidate,
                desired: 2,
                ready: r,
                updated: r,
            })
        };
        let pass = Outcome::Analysis(AnalysisOutcome {
            checks: vec![CheckResult {
                name: "ok".into(),
                verdict: CheckVerdict::Pass,
                value: Some(1.0),
                detail: String::new(),
            }],
            score: None,
        });
        let l = run(vec![
            decision(1, weight(10)),
            outcome(1, Outcome::Done), // progress at 1000
            decision(2, weight(10)),
            outcome(2, Outcome::Done), // same weight again: not progress
            decision(3, Step::CheckStatus(Slot::Candidate)),
            outcome(3, ready(0)), // nothing ready: not progress
        ]);
        assert_eq!(l.last_progress_ms, 1000);
        assert_eq!(l.max_weight, 10);
        let l = run(vec![
            decision(1, Step::CheckStatus(Slot::Candidate)),
            outcome(1, ready(2)),
            decision(
                2,
                Step::Analyze(crate::contract::AnalysisRequest {
                    window_ms: 0,
                    compare_baseline: false,
                }),
            ),
            outcome(2, pass),
        ]);
        assert!(l.candidate_ready);
        assert_eq!(l.analyses_passed, 1);
        assert_eq!(l.last_progress_ms, 3000);
    }

    #[test]
    fn an_outcome_for_another_decision_is_ignored() {
        let l = run(vec![decision(2, Step::Promote), outcome(1, Outcome::Done)]);
        assert!(!l.promoted);
    }
}
