//! A hostile strategy, as a native `Strategy` answering a generated script of decisions
//! (any step, weights above 100, u32::MAX replicas, u64::MAX waits, empty and huge notes and
//! state blobs, errors), run through `Engine::deploy` against a native target that records
//! every call reaching it and fails the ones it is told to (promote, rollback, set-traffic),
//! with a native metric provider answering any value (NaN, infinities, huge series).
//!
//! The host's invariants (issue 10, "The host, not the strategy, decides what a deployment
//! ended as"), whatever the strategy says:
//! 1. no panic, and the run ends within a bounded time (progress deadline 300 ms);
//! 2. the final status is `promoted` ONLY if a `promote` succeeded on the target and no
//!    rollback reached the target after it;
//! 3. weights (and mirror percents) outside 0..=100 never reach the target;
//! 4. after a rollback reached the target, no `set-traffic` or `promote` does;
//! 5. the journal is complete: it ends with `finished`, with the status reported;
//! 6. with a check configured (`require_analysis` is on by default), no promote reaches the
//!    target when no analysis could pass;
//! 7. no promote reaches the target when the candidate was never ready.
//!
//! Before the engine kept its own ledger (issue 10) it enforced none of 2-4, 6, 7 and a
//! strategy that never advanced ran forever; `regressions/engine.txt` keeps that case.

use super::natives::{self, Answer, Call, MetricBehaviour, Script, Tail, TargetBehaviour, World};
use super::plugin_values::{blob, float, step, txt};
use dax::contract::{FinalStatus, Step};
use dax::state::{Event, StateDir};
use proptest::prelude::*;
use std::sync::Arc;
use std::time::Duration;

/// Longest a run may take: the strategy's own steps take milliseconds, a progress deadline
/// of 300 ms ends a run that does not advance, a rollback is retried a few times.
const RUN_LIMIT: Duration = Duration::from_secs(15);

fn answer() -> impl Strategy<Value = Answer> {
    prop_oneof![
        12 => (step(), blob(), txt()).prop_map(|(step, state, note)| Answer::Decide { step, state, note }),
        1 => txt().prop_map(Answer::Error),
    ]
}

fn script() -> impl Strategy<Value = Script> {
    (
        proptest::collection::vec(answer(), 0..10),
        prop_oneof![
            3 => prop_oneof![
                Just(FinalStatus::Promoted),
                Just(FinalStatus::RolledBack),
                Just(FinalStatus::Failed),
            ].prop_map(Tail::Finish),
            1 => step().prop_filter("a forever-step the engine can end", |s| !matches!(s, Step::Finish(_))).prop_map(Tail::Forever),
        ],
    )
        .prop_map(|(answers, tail)| Script { answers, tail })
}

fn target() -> impl Strategy<Value = TargetBehaviour> {
    (
        any::<bool>(),
        prop_oneof![3 => Just(0u32), 1 => 1u32..5],
        prop_oneof![5 => Just(false), 1 => Just(true)],
        prop_oneof![3 => Just(true), 1 => Just(false)],
    )
        .prop_map(
            |(fail_promote, failing_rollbacks, fail_set_traffic, candidate_ready)| {
                TargetBehaviour {
                    fail_promote,
                    failing_rollbacks,
                    fail_set_traffic,
                    candidate_ready,
                }
            },
        )
}

fn metrics() -> impl Strategy<Value = MetricBehaviour> {
    prop_oneof![
        4 => float().prop_map(MetricBehaviour::Value),
        2 => (0usize..5000, float(), float()).prop_map(|(len, a, b)| MetricBehaviour::Series { len, a, b }),
        1 => txt().prop_map(MetricBehaviour::NoData),
        1 => txt().prop_map(MetricBehaviour::Error),
    ]
}

/// Answers every pause (`await-approval`) as an operator would, promote or abort in turn.
async fn operator(state: StateDir, id: String, promote_first: bool) {
    let mut answered = 0;
    let mut promote = promote_first;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        let Ok(records) = state.read(&id) else {
            continue;
        };
        let pauses = records
            .iter()
            .filter(|r| matches!(r.event, Event::Paused { .. }))
            .count();
        if pauses > answered {
            let action = if promote {
                dax::state::ControlAction::Promote
            } else {
                dax::state::ControlAction::Abort
            };
            let _ = state.send_control(&id, action);
            answered = pauses;
            promote = !promote;
        }
    }
}

/// Run one deployment and check the invariants; `Err` names the broken one.
fn run(
    script: Script,
    target: TargetBehaviour,
    metrics: MetricBehaviour,
    with_check: bool,
    promote_first: bool,
) -> Result<(), String> {
    let world = Arc::new(World::new(target, Some(script), metrics));
    let dir = tempfile::tempdir().unwrap();
    let engine = natives::engine(dir.path(), world.clone());
    let text = natives::deployment_toml("fuzz", "fuzz:script", with_check, "300ms");
    let cfg = dax::config::parse(&text, "deploy.toml", dir.path()).unwrap();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let state = engine.state.clone();
    let outcome = rt.block_on(async {
        let op = tokio::spawn(operator(state.clone(), "fuzz".into(), promote_first));
        let task = tokio::spawn(async move { engine.deploy(cfg, Some("fuzz".into()), None).await });
        let r = tokio::time::timeout(RUN_LIMIT, task).await;
        op.abort();
        r
    });
    rt.shutdown_timeout(Duration::from_secs(1));
    let report = match outcome {
        Err(_) => {
            return Err(format!(
                "1. the run did not end within {RUN_LIMIT:?}; target calls: {}",
                short(&world.calls())
            ))
        }
        Ok(Err(join)) if join.is_panic() => {
            let p = join.into_panic();
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            return Err(format!("1. the engine panicked: {msg}"));
        }
        Ok(Err(e)) => return Err(format!("the deployment task failed: {e}")),
        Ok(Ok(Err(e))) => {
            return Err(format!(
                "deploy returned an error instead of a report: {e:#}"
            ))
        }
        Ok(Ok(Ok(report))) => report,
    };
    let calls = world.calls();
    let mut broken = Vec::new();
    if report.status == FinalStatus::Promoted {
        match calls.iter().rposition(|c| *c == Call::Promote { ok: true }) {
            None => broken.push(format!(
                "2. PROMOTED without a successful promote on the target ({})",
                report.reason
            )),
            Some(i)
                if calls[i..]
                    .iter()
                    .any(|c| matches!(c, Call::Rollback { .. })) =>
            {
                broken.push(format!(
                    "2. PROMOTED although a rollback followed the promote ({})",
                    report.reason
                ))
            }
            Some(_) => {}
        }
    }
    for c in &calls {
        if let Call::SetTraffic(t) = c {
            if t.candidate_weight > 100 || t.mirror_percent > 100 {
                broken.push(format!(
                    "3. weight {}% / mirror {}% reached the target",
                    t.candidate_weight, t.mirror_percent
                ));
            }
        }
    }
    if let Some(i) = calls
        .iter()
        .position(|c| matches!(c, Call::Rollback { .. }))
    {
        if let Some(c) = calls[i..]
            .iter()
            .find(|c| matches!(c, Call::SetTraffic(_) | Call::Promote { .. }))
        {
            broken.push(format!("4. {c:?} reached the target after a rollback"));
        }
    }
    let promoted_on_target = calls.iter().any(|c| matches!(c, Call::Promote { .. }));
    if with_check && !can_pass(&world.metrics) && promoted_on_target {
        broken.push(format!(
            "6. a promote reached the target though no analysis could pass (metrics {:?})",
            world.metrics
        ));
    }
    if !world.target.candidate_ready && promoted_on_target {
        broken.push("7. a promote reached the target though the candidate was never ready".into());
    }
    match state.read("fuzz") {
        Err(e) => broken.push(format!("5. journal unreadable: {e:#}")),
        Ok(records) => match records.last().map(|r| &r.event) {
            Some(Event::Finished { status, .. }) if *status == report.status => {}
            other => broken.push(format!(
                "5. the journal ends with {other:?}, not `finished` {:?}",
                report.status
            )),
        },
    }
    if broken.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "{}
  status {:?}: {}
  target calls: {}",
            broken.join("\n"),
            report.status,
            report.reason,
            short(&calls)
        ))
    }
}

/// Whether any analysis could pass the check `min = 99` with this answer (series: maybe).
fn can_pass(m: &MetricBehaviour) -> bool {
    match m {
        MetricBehaviour::Value(v) => v.is_finite() && *v >= 99.0,
        MetricBehaviour::Series { len, .. } => *len > 0,
        MetricBehaviour::NoData(_) | MetricBehaviour::Error(_) => false,
    }
}

/// The calls, compactly (a huge script makes long lists).
fn short(calls: &[Call]) -> String {
    let names: Vec<String> = calls
        .iter()
        .map(|c| match c {
            Call::SetTraffic(t) => format!("set {}%", t.candidate_weight),
            Call::Promote { ok } => format!("promote{}", if *ok { "" } else { "(failed)" }),
            Call::Rollback { ok } => format!("rollback{}", if *ok { "" } else { "(failed)" }),
            other => format!("{other:?}").to_lowercase(),
        })
        .collect();
    if names.len() > 40 {
        format!("{} ... ({} calls)", names[..40].join(", "), names.len())
    } else {
        names.join(", ")
    }
}

proptest! {
    // Each case is a whole deployment: few cases, and shrinking stops early.
    #![proptest_config(proptest::test_runner::Config {
        max_shrink_iters: 8,
        ..super::config(32, "fuzz/regressions/engine.txt")
    })]

    #[test]
    fn hostile_strategy_cannot_break_the_host_invariants(
        script in script(),
        target in target(),
        metrics in metrics(),
        with_check in any::<bool>(),
        promote_first in any::<bool>(),
    ) {
        if let Err(e) = run(script, target, metrics, with_check, promote_first) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// Issue 10's own examples, as fixed cases.
#[test]
fn promote_first_and_finish_promoted_after_a_failed_promote_do_not_promote() {
    let decide = |step: Step| Answer::Decide {
        step,
        state: natives::Blob::Bytes(vec![]),
        note: natives::Txt::Short(String::new()),
    };
    let cases = [
        // `finish(promoted)` as the first answer, with a failing check configured.
        (
            vec![],
            TargetBehaviour {
                candidate_ready: true,
                ..Default::default()
            },
            MetricBehaviour::Value(0.0),
        ),
        // `promote` first.
        (
            vec![decide(Step::Promote)],
            TargetBehaviour {
                candidate_ready: true,
                ..Default::default()
            },
            MetricBehaviour::Value(0.0),
        ),
        // `finish(promoted)` after a failed promote.
        (
            vec![decide(Step::DeployCandidate), decide(Step::Promote)],
            TargetBehaviour {
                candidate_ready: true,
                fail_promote: true,
                ..Default::default()
            },
            MetricBehaviour::Value(100.0),
        ),
        // `finish(promoted)` after its own rollback.
        (
            vec![
                decide(Step::DeployCandidate),
                decide(Step::Promote),
                decide(Step::Rollback("x".into())),
            ],
            TargetBehaviour {
                candidate_ready: true,
                ..Default::default()
            },
            MetricBehaviour::Value(100.0),
        ),
        // 250% never reaches the target.
        (
            vec![
                decide(Step::DeployCandidate),
                decide(Step::SetTraffic(dax::contract::TrafficSplit {
                    candidate_weight: 250,
                    ..Default::default()
                })),
            ],
            TargetBehaviour {
                candidate_ready: true,
                ..Default::default()
            },
            MetricBehaviour::Value(100.0),
        ),
    ];
    let mut failures = Vec::new();
    for (i, (answers, target, metrics)) in cases.into_iter().enumerate() {
        let script = Script {
            answers,
            tail: Tail::Finish(FinalStatus::Promoted),
        };
        if let Err(e) = run(script, target, metrics, true, true) {
            failures.push(format!("case {i}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}
