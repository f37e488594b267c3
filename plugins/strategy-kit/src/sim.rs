//! A native simulator for strategy tests: drives a [`Spec`] with scripted outcomes the way
//! the engine would, records every call, and can replay the record to prove that the same
//! state blob and observation always give the same decision (resumption).

use crate::machine::{self, Spec};
use crate::types::*;

/// What the simulated world looks like after the steps so far.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct World {
    pub elapsed_ms: u64,
    pub traffic: TrafficSplit,
    pub stable_replicas: u32,
    pub candidate_replicas: u32,
    pub promoted: bool,
    pub rolled_back: bool,
    /// Number of steps executed so far.
    pub steps: usize,
}

/// One `next` call: its inputs and its answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub state_in: Vec<u8>,
    pub obs: Observation,
    pub decision: Decision,
}

#[derive(Debug, Clone)]
pub struct Trace {
    pub first: Decision,
    pub records: Vec<Record>,
    /// World snapshots after each executed step (same length as `records`).
    pub worlds: Vec<World>,
}

impl Trace {
    /// Every step emitted, in order (the first one from `start` included).
    pub fn steps(&self) -> Vec<Step> {
        std::iter::once(self.first.next.clone())
            .chain(self.records.iter().map(|r| r.decision.next.clone()))
            .collect()
    }

    pub fn final_status(&self) -> Option<FinalStatus> {
        match self.steps().last() {
            Some(Step::Finish(s)) => Some(*s),
            _ => None,
        }
    }

    pub fn notes(&self) -> Vec<String> {
        std::iter::once(self.first.note.clone())
            .chain(self.records.iter().map(|r| r.decision.note.clone()))
            .collect()
    }

    /// Candidate weights asked for, in order.
    pub fn weights(&self) -> Vec<u8> {
        self.steps()
            .iter()
            .filter_map(|s| match s {
                Step::SetTraffic(t) => Some(t.candidate_weight),
                _ => None,
            })
            .collect()
    }

    /// Call `next` again with every recorded (state, observation) pair, also after a JSON
    /// round trip of the state, and require identical decisions.
    pub fn verify_replay<S: Spec>(&self, params: &str) -> Result<(), String> {
        let again = machine::start::<S>(params).map_err(|e| e.to_string())?;
        if again != self.first {
            return Err(format!(
                "start is not deterministic: {again:?} vs {:?}",
                self.first
            ));
        }
        for (i, r) in self.records.iter().enumerate() {
            // A resumed host reads the blob back from its journal: simulate that round trip.
            let value: serde_json::Value = serde_json::from_slice(&r.state_in)
                .map_err(|e| format!("step {i}: state is not JSON: {e}"))?;
            let reread = serde_json::to_vec(&value).map_err(|e| e.to_string())?;
            for blob in [&r.state_in, &reread] {
                let d = machine::next::<S>(params, blob, &r.obs)
                    .map_err(|e| format!("step {i}: {e}"))?;
                if d != r.decision {
                    return Err(format!(
                        "step {i}: replay diverged: {:?} vs {:?}",
                        d.next, r.decision.next
                    ));
                }
            }
        }
        Ok(())
    }
}

/// The outcome a healthy world gives to a step (3 replicas everywhere, every check passes).
pub fn happy(step: &Step, _world: &World) -> Outcome {
    match step {
        Step::DeployCandidate => status(Slot::Candidate, 3, 3),
        Step::CheckStatus(s) => status(*s, 3, 3),
        Step::Scale(s, n) => status(*s, *n, *n),
        Step::Analyze(req) => Outcome::Analysis(AnalysisOutcome {
            checks: vec![CheckResult {
                name: "request-success-rate".into(),
                verdict: CheckVerdict::Pass,
                value: Some(100.0),
                detail: String::new(),
            }],
            score: if req.compare_baseline {
                Some(100.0)
            } else {
                None
            },
        }),
        Step::RunHooks(_) => Outcome::Hooks(true),
        Step::AwaitApproval(_) => Outcome::Approval(true),
        _ => Outcome::Done,
    }
}

pub fn status(which: Slot, desired: u32, ready: u32) -> Outcome {
    Outcome::TargetStatus(StatusOutcome {
        which,
        desired,
        ready,
        updated: ready,
    })
}

pub fn analysis(verdict: CheckVerdict) -> Outcome {
    Outcome::Analysis(AnalysisOutcome {
        checks: vec![CheckResult {
            name: "request-success-rate".into(),
            verdict,
            value: None,
            detail: "scripted".into(),
        }],
        score: None,
    })
}

/// Run a strategy to its `finish` (or `max_steps`) with `script` answering every step.
/// Starts from a world with 3 stable replicas.
pub fn run<S: Spec>(
    params: &str,
    script: impl FnMut(&Step, &World) -> Outcome,
    max_steps: usize,
) -> Result<Trace, Error> {
    let world = World {
        stable_replicas: 3,
        ..Default::default()
    };
    run_from::<S>(params, world, script, max_steps)
}

/// [`run`] from a given initial world.
pub fn run_from<S: Spec>(
    params: &str,
    mut world: World,
    mut script: impl FnMut(&Step, &World) -> Outcome,
    max_steps: usize,
) -> Result<Trace, Error> {
    let first = machine::start::<S>(params)?;
    let mut current = first.clone();
    let mut records = Vec::new();
    let mut worlds = Vec::new();
    while !matches!(current.next, Step::Finish(_)) {
        if records.len() >= max_steps {
            return Err(Error::InvalidInput(format!(
                "no finish after {max_steps} steps"
            )));
        }
        let outcome = script(&current.next, &world);
        apply(&current.next, &outcome, &mut world);
        worlds.push(world.clone());
        let obs = Observation {
            elapsed_ms: world.elapsed_ms,
            last: outcome,
        };
        let decision = machine::next::<S>(params, &current.state, &obs)?;
        records.push(Record {
            state_in: current.state.clone(),
            obs,
            decision: decision.clone(),
        });
        current = decision;
    }
    Ok(Trace {
        first,
        records,
        worlds,
    })
}

fn apply(step: &Step, outcome: &Outcome, w: &mut World) {
    w.steps += 1;
    if matches!(outcome, Outcome::Failed(_)) && !matches!(step, Step::Rollback(_)) {
        return;
    }
    match step {
        Step::Wait(ms) => w.elapsed_ms += ms,
        Step::SetTraffic(t) => w.traffic = t.clone(),
        Step::DeployCandidate => {
            if let Outcome::TargetStatus(s) = outcome {
                w.candidate_replicas = s.desired
            }
        }
        Step::Scale(Slot::Stable, n) => w.stable_replicas = *n,
        Step::Scale(Slot::Candidate, n) => w.candidate_replicas = *n,
        Step::Promote => {
            w.promoted = true;
            w.traffic = TrafficSplit::weight(100);
        }
        // The contract: rollback returns all traffic to stable and removes the candidate.
        Step::Rollback(_) => {
            w.rolled_back = true;
            w.traffic = TrafficSplit::default();
            w.candidate_replicas = 0;
        }
        _ => {}
    }
}
