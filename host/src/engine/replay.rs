//! `dax resume`: what a journal says about where a stopped run was. The counters come from
//! the same [`Ledger::apply`] the live run uses; this module only finds where to pick up.

use super::decide::Policy;
use super::ledger::Ledger;
use super::{Report, Summary};
use crate::contract::{FinalStatus, Step, WorkloadStatus};
use crate::state::{Event, Record};

/// Where the strategy loop starts.
pub(super) enum Pending {
    /// Decide the next step (a fresh rollout, or the last decision has its outcome).
    Decide,
    /// Stopped after finishing the target but before the `finished` record.
    Finish(FinalStatus),
    /// Resumed with a decision that has no outcome whose values the policy refuses (a
    /// damaged or foreign journal is input like any other): journal it as failed.
    Refuse { n: u64, why: String },
    /// Resumed with a decision that has no outcome: execute it again (target calls are
    /// idempotent by contract), after looking at the target.
    Redo {
        n: u64,
        step: Step,
        stable: Option<WorkloadStatus>,
        candidate: Option<WorkloadStatus>,
    },
}

/// Where a resumed run picks up. `now_ms` is the rollout clock at the resume: a `wait` that
/// was interrupted only waits for what is left of it.
pub(super) fn pending(
    ledger: &Ledger,
    policy: &Policy,
    records: &[Record],
    now_ms: u64,
    stable: Option<WorkloadStatus>,
    candidate: Option<WorkloadStatus>,
) -> Pending {
    let Some(last) = &ledger.last else {
        return Pending::Decide;
    };
    match (&last.outcome, &last.step) {
        (Some(_), Step::Finish(status)) => Pending::Finish(*status),
        (Some(_), _) => Pending::Decide,
        (None, step) => {
            if let Some(why) = super::decide::out_of_range(step, policy) {
                return Pending::Refuse {
                    n: last.n,
                    why: format!("refused on resume: {why}"),
                };
            }
            let decided_at = records
                .iter()
                .find_map(|r| match r.event {
                    Event::Decision { n, .. } if n == last.n => Some(r.elapsed_ms),
                    _ => None,
                })
                .unwrap_or(now_ms);
            let step = match step {
                Step::Wait(ms) => Step::Wait(ms.saturating_sub(now_ms.saturating_sub(decided_at))),
                s => s.clone(),
            };
            Pending::Redo {
                n: last.n,
                step,
                stable,
                candidate,
            }
        }
    }
}

/// The report of a journal that already has its `finished` record.
pub(super) fn finished_report(id: &str, records: &[Record]) -> Option<Report> {
    records.iter().rev().find_map(|r| match &r.event {
        Event::Finished { status, reason } => Some(Report {
            id: id.to_string(),
            status: *status,
            reason: reason.clone(),
            summary: Summary::from_records(id, records),
        }),
        _ => None,
    })
}

/// The gate's verdict, if the run got that far: `(passed, summary)`.
pub(super) fn gate_verdict(records: &[Record]) -> Option<(bool, String)> {
    records.iter().find_map(|r| match &r.event {
        Event::Gate {
            passed, summary, ..
        } => Some((*passed, summary.clone())),
        _ => None,
    })
}
