//! What happens next, decided by the host around the strategy: pure functions of the
//! [`Ledger`], the safety [`Policy`] and the moment.
//!
//! ```text
//! before_strategy(ledger, policy, moment)
//!   ├─ Next::Engine(step)   the engine's own sequences: retry a failed rollback/promote,
//!   │                       finish after its rollback, operator abort, step limit,
//!   │                       progress deadline
//!   └─ Next::Strategy       ask the strategy, then vet(answer):
//!                              ├─ Vetted::Forward(step)        execute it
//!                              └─ Vetted::Refused{why, instead} journal `instead`, never
//!                                                              forward the refused step
//! ```
//!
//! The invariants this enforces whatever a strategy answers: a deployment ends promoted only
//! if a promote succeeded on the target and no rollback followed; a failed promote or
//! rollback (after the engine's retries) ends failed; after a rollback traffic never moves
//! towards the candidate again; no promote before the safety policy allows it; every step
//! value is in range before any target sees it.

use super::ledger::Ledger;
use crate::config::DeploymentConfig;
use crate::contract::{FinalStatus, Outcome, Slot, Step};
use crate::state::DecidedBy;
use std::time::Duration;

/// Failed `rollback` or `promote` attempts in a row before the engine gives up on them.
pub const MAX_ATTEMPTS: u32 = 3;
/// Default `progress_deadline`, as Flagger's `progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);
/// Most header/cookie match rules in one traffic split.
pub const MAX_MATCH_RULES: usize = 64;

/// The host's rules for one deployment, from its `[deployment]` section.
#[derive(Debug, Clone)]
pub struct Policy {
    /// The strategy plugin's name, for reasons that blame it.
    pub strategy: String,
    /// `require_analysis`, in force only when `[[checks]]` exist.
    pub require_analysis: bool,
    pub require_ready: bool,
    pub max_steps: u64,
    pub max_wait_ms: u64,
    pub max_replicas: u32,
    pub progress_deadline_ms: u64,
}

impl Policy {
    pub fn of(c: &DeploymentConfig) -> Policy {
        let d = &c.deployment;
        Policy {
            strategy: c.strategy.plugin.clone(),
            require_analysis: d.require_analysis && !c.checks.is_empty(),
            require_ready: d.require_ready,
            max_steps: d.max_steps,
            max_wait_ms: d.max_wait.as_millis() as u64,
            max_replicas: d.max_replicas,
            progress_deadline_ms: d
                .progress_deadline
                .unwrap_or(DEFAULT_PROGRESS_DEADLINE)
                .as_millis() as u64,
        }
    }
}

/// A step the engine takes on its own.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineStep {
    pub step: Step,
    /// Shown in the timeline; for a `finish`, the deployment's final reason.
    pub note: String,
    pub by: DecidedBy,
    /// For a rollback: the status to end with once it is done (default `rolled-back`).
    pub ends_as: Option<FinalStatus>,
}

impl EngineStep {
    fn engine(step: Step, note: impl Into<String>) -> EngineStep {
        EngineStep {
            step,
            note: note.into(),
            by: DecidedBy::Engine,
            ends_as: None,
        }
    }

    fn ends_as(mut self, status: FinalStatus) -> EngineStep {
        self.ends_as = Some(status);
        self
    }

    /// Roll back for `reason` if the candidate is exposed on the target; otherwise finish
    /// (as `ends_as`, or as the earlier rollback said, or `failed` after a promotion).
    pub fn stop(l: &Ledger, reason: String, ends_as: Option<FinalStatus>) -> EngineStep {
        if l.candidate_exposed() {
            let step = EngineStep::engine(Step::Rollback(reason.clone()), reason);
            return match ends_as {
                Some(s) => step.ends_as(s),
                None => step,
            };
        }
        let status = if l.rolled_back {
            l.rollback_ends_as
                .or(ends_as)
                .unwrap_or(FinalStatus::RolledBack)
        } else if l.promoted {
            // Nothing to roll back to once the candidate is the stable version.
            FinalStatus::Failed
        } else {
            ends_as.unwrap_or(FinalStatus::RolledBack)
        };
        let note = if l.rollback_started && !l.reason.is_empty() {
            format!("{}; then {reason}", l.reason)
        } else {
            reason
        };
        EngineStep::engine(Step::Finish(status), note)
    }
}

/// What the engine knows at a step boundary besides the ledger.
#[derive(Debug, Clone, Copy)]
pub struct Moment {
    pub elapsed_ms: u64,
    /// `dax abort` arrived and is not handled yet.
    pub abort_requested: bool,
}

/// Who decides the next step.
#[derive(Debug, Clone, PartialEq)]
pub enum Next {
    Strategy,
    Engine(EngineStep),
}

/// The engine's own sequences, which come before asking the strategy.
pub fn before_strategy(l: &Ledger, p: &Policy, m: Moment) -> Next {
    if let Some(last) = &l.last {
        match (&last.step, &last.outcome) {
            (Step::Rollback(reason), Some(Outcome::Failed(e))) => {
                return Next::Engine(if l.rollback_failures < MAX_ATTEMPTS {
                    EngineStep::engine(
                        Step::Rollback(reason.clone()),
                        format!(
                            "retry rollback (attempt {} of {MAX_ATTEMPTS})",
                            l.rollback_failures + 1
                        ),
                    )
                } else {
                    EngineStep::engine(
                        Step::Finish(FinalStatus::Failed),
                        format!("{}; rollback failed {MAX_ATTEMPTS} times: {e}", l.reason),
                    )
                });
            }
            (Step::Rollback(_), Some(Outcome::Done)) if last.by != DecidedBy::Strategy => {
                return Next::Engine(EngineStep::engine(
                    Step::Finish(l.rollback_ends_as.unwrap_or(FinalStatus::RolledBack)),
                    l.reason.clone(),
                ));
            }
            (Step::Promote, Some(Outcome::Failed(e))) => {
                return Next::Engine(if l.promote_failures < MAX_ATTEMPTS {
                    EngineStep::engine(
                        Step::Promote,
                        format!(
                            "retry promote (attempt {} of {MAX_ATTEMPTS})",
                            l.promote_failures + 1
                        ),
                    )
                } else {
                    let reason = format!("promote failed {MAX_ATTEMPTS} times: {e}");
                    EngineStep::engine(Step::Rollback(reason.clone()), reason)
                        .ends_as(FinalStatus::Failed)
                });
            }
            _ => {}
        }
    }
    if m.abort_requested && !l.rollback_started {
        return Next::Engine(EngineStep {
            by: DecidedBy::Operator,
            ..EngineStep::engine(
                Step::Rollback("aborted by operator".into()),
                "operator abort",
            )
        });
    }
    if l.decisions >= p.max_steps {
        let reason = format!(
            "step limit: strategy `{}` took {} steps without finishing (`max_steps` in [deployment])",
            p.strategy, l.decisions
        );
        return Next::Engine(EngineStep::stop(l, reason, Some(FinalStatus::Failed)));
    }
    let stalled = m.elapsed_ms.saturating_sub(l.last_progress_ms);
    if l.last.is_some() && stalled > p.progress_deadline_ms {
        let reason = format!(
            "progress deadline exceeded: no progress for {} (`progress_deadline` in [deployment])",
            super::summary::fmt_ms(stalled)
        );
        return Next::Engine(EngineStep::stop(l, reason, None));
    }
    Next::Strategy
}

/// The strategy's answer, checked.
#[derive(Debug, Clone, PartialEq)]
pub enum Vetted {
    Forward(Step),
    /// The step is never executed; `why` is journaled with `instead`.
    Refused {
        why: String,
        instead: EngineStep,
    },
}

/// Check a step the strategy asked for against the ledger and the policy.
pub fn vet(step: Step, l: &Ledger, p: &Policy) -> Vetted {
    let s = &p.strategy;
    let refuse = |why: String, ends_as: FinalStatus| {
        let reason = format!("strategy `{s}` fault: {why}");
        Vetted::Refused {
            instead: EngineStep::stop(l, reason.clone(), Some(ends_as)),
            why: reason,
        }
    };
    if let Some(why) = out_of_range(&step, p) {
        return refuse(why, FinalStatus::Failed);
    }
    let moves_forward = matches!(
        step,
        Step::DeployCandidate
            | Step::SetTraffic(_)
            | Step::Promote
            | Step::Analyze(_)
            | Step::AwaitApproval(_)
            | Step::Scale(Slot::Candidate, _)
    );
    if l.rollback_started && moves_forward {
        return refuse(
            format!(
                "asked for `{}` after a rollback; only status checks, hooks, waits, scaling stable and finishing are allowed then",
                super::summary::describe_step(&step)
            ),
            l.rollback_ends_as.unwrap_or(FinalStatus::RolledBack),
        );
    }
    match step {
        Step::Promote if p.require_ready && !l.candidate_ready => refuse(
            "promote refused by the safety policy (`require_ready`): the candidate was never seen ready".into(),
            FinalStatus::Failed,
        ),
        Step::Promote if p.require_analysis && l.analyses_passed == 0 => refuse(
            "promote refused by the safety policy (`require_analysis`): no analysis has passed yet; set `require_analysis = false` in [deployment] to allow promoting without analysis".into(),
            FinalStatus::Failed,
        ),
        Step::Finish(FinalStatus::Promoted) if !l.promoted => refuse(
            "finished as promoted, but no promote succeeded on the target".into(),
            FinalStatus::Failed,
        ),
        Step::Finish(status @ (FinalStatus::RolledBack | FinalStatus::Failed))
            if l.candidate_exposed() =>
        {
            let reason = format!(
                "strategy `{s}` finished as {} with the candidate still exposed; rolled back by the engine",
                super::summary::status_name(status)
            );
            Vetted::Refused {
                why: reason.clone(),
                instead: EngineStep::engine(Step::Rollback(reason.clone()), reason)
                    .ends_as(status),
            }
        }
        step => Vetted::Forward(step),
    }
}

/// Why a step's values are out of range, if they are.
pub(super) fn out_of_range(step: &Step, p: &Policy) -> Option<String> {
    let fmt = |ms: u64| crate::plugin::spec::duration_str::format(Duration::from_millis(ms));
    match step {
        Step::SetTraffic(t) if t.candidate_weight > 100 => Some(format!(
            "set-traffic weight {}% is outside 0..=100",
            t.candidate_weight
        )),
        Step::SetTraffic(t) if t.mirror_percent > 100 => Some(format!(
            "set-traffic mirror {}% is outside 0..=100",
            t.mirror_percent
        )),
        Step::SetTraffic(t) if t.matches.len() > MAX_MATCH_RULES => Some(format!(
            "set-traffic with {} match rules (at most {MAX_MATCH_RULES})",
            t.matches.len()
        )),
        Step::Scale(slot, n) if *n > p.max_replicas => Some(format!(
            "scale {slot} to {n} replicas is above `max_replicas` = {} in [deployment]",
            p.max_replicas
        )),
        Step::Wait(ms) if *ms > p.max_wait_ms => Some(format!(
            "wait {} is longer than `max_wait` = {} in [deployment]",
            fmt(*ms),
            fmt(p.max_wait_ms)
        )),
        Step::Analyze(a) if a.window_ms > p.max_wait_ms => Some(format!(
            "analysis window {} is longer than `max_wait` = {} in [deployment]",
            fmt(a.window_ms),
            fmt(p.max_wait_ms)
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::TrafficSplit;
    use crate::engine::ledger::LastStep;

    fn policy() -> Policy {
        Policy {
            strategy: "canary".into(),
            require_analysis: true,
            require_ready: true,
            max_steps: 100,
            max_wait_ms: 60_000,
            max_replicas: 10,
            progress_deadline_ms: 600_000,
        }
    }

    fn refused(v: Vetted) -> (String, EngineStep) {
        match v {
            Vetted::Refused { why, instead } => (why, instead),
            Vetted::Forward(s) => panic!("forwarded {s:?}"),
        }
    }

    #[test]
    fn out_of_range_values_never_reach_the_target() {
        let l = Ledger::default();
        let (why, instead) = refused(vet(
            Step::SetTraffic(TrafficSplit {
                candidate_weight: 250,
                ..Default::default()
            }),
            &l,
            &policy(),
        ));
        assert_eq!(
            why,
            "strategy `canary` fault: set-traffic weight 250% is outside 0..=100"
        );
        // Nothing was deployed: end at once, as failed.
        assert_eq!(instead.step, Step::Finish(FinalStatus::Failed));
        let (why, _) = refused(vet(Step::Scale(Slot::Candidate, 11), &l, &policy()));
        assert!(why.contains("`max_replicas` = 10"), "{why}");
        let (why, _) = refused(vet(Step::Wait(3_600_000), &l, &policy()));
        assert!(why.contains("`max_wait` = 1m"), "{why}");
    }

    #[test]
    fn promote_needs_a_ready_candidate_and_a_passing_analysis() {
        let mut l = Ledger {
            deployed: true,
            ..Default::default()
        };
        let (why, instead) = refused(vet(Step::Promote, &l, &policy()));
        assert!(why.contains("`require_ready`"), "{why}");
        assert!(matches!(instead.step, Step::Rollback(_)));
        assert_eq!(instead.ends_as, Some(FinalStatus::Failed));
        l.candidate_ready = true;
        let (why, _) = refused(vet(Step::Promote, &l, &policy()));
        assert!(why.contains("`require_analysis`"), "{why}");
        l.analyses_passed = 1;
        assert_eq!(
            vet(Step::Promote, &l, &policy()),
            Vetted::Forward(Step::Promote)
        );
        let off = Policy {
            require_analysis: false,
            ..policy()
        };
        l.analyses_passed = 0;
        assert_eq!(vet(Step::Promote, &l, &off), Vetted::Forward(Step::Promote));
    }

    #[test]
    fn finishing_promoted_without_a_promote_fails_and_rolls_back() {
        let l = Ledger {
            deployed: true,
            max_weight: 50,
            ..Default::default()
        };
        let (why, instead) = refused(vet(Step::Finish(FinalStatus::Promoted), &l, &policy()));
        assert_eq!(
            why,
            "strategy `canary` fault: finished as promoted, but no promote succeeded on the target"
        );
        assert!(matches!(instead.step, Step::Rollback(_)));
        assert_eq!(instead.ends_as, Some(FinalStatus::Failed));
    }

    #[test]
    fn after_a_rollback_traffic_never_moves_forward() {
        let l = Ledger {
            deployed: true,
            rollback_started: true,
            rolled_back: true,
            reason: "analysis failed".into(),
            ..Default::default()
        };
        for step in [
            Step::Promote,
            Step::SetTraffic(TrafficSplit {
                candidate_weight: 10,
                ..Default::default()
            }),
        ] {
            let (why, instead) = refused(vet(step, &l, &policy()));
            assert!(why.contains("after a rollback"), "{why}");
            assert_eq!(instead.step, Step::Finish(FinalStatus::RolledBack));
        }
        assert_eq!(
            vet(Step::Finish(FinalStatus::RolledBack), &l, &policy()),
            Vetted::Forward(Step::Finish(FinalStatus::RolledBack))
        );
    }

    #[test]
    fn failed_rollbacks_are_retried_then_end_failed() {
        let mut l = Ledger {
            rollback_started: true,
            rollback_failures: 1,
            reason: "analysis failed".into(),
            last: Some(LastStep {
                n: 4,
                step: Step::Rollback("analysis failed".into()),
                by: DecidedBy::Strategy,
                state: Vec::new(),
                outcome: Some(Outcome::Failed("target down".into())),
            }),
            ..Default::default()
        };
        let m = Moment {
            elapsed_ms: 0,
            abort_requested: false,
        };
        let Next::Engine(e) = before_strategy(&l, &policy(), m) else {
            panic!()
        };
        assert_eq!(e.step, Step::Rollback("analysis failed".into()));
        l.rollback_failures = MAX_ATTEMPTS;
        let Next::Engine(e) = before_strategy(&l, &policy(), m) else {
            panic!()
        };
        assert_eq!(e.step, Step::Finish(FinalStatus::Failed));
        assert_eq!(
            e.note,
            "analysis failed; rollback failed 3 times: target down"
        );
    }

    #[test]
    fn a_runaway_strategy_hits_the_step_limit() {
        let l = Ledger {
            decisions: 100,
            ..Default::default()
        };
        let m = Moment {
            elapsed_ms: 0,
            abort_requested: false,
        };
        let Next::Engine(e) = before_strategy(&l, &policy(), m) else {
            panic!()
        };
        assert_eq!(e.step, Step::Finish(FinalStatus::Failed));
        assert!(e.note.contains("`max_steps`"), "{}", e.note);
    }
}
