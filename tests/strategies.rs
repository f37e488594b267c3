//! The first-party strategies (`plugins/canary`, `blue-green`, `ab-test`, `rolling`) driven
//! through the real plugin host: components built from this repository, loaded by
//! `PluginHost::load`, answered with scripted target / metric / webhook / operator outcomes.
//!
//! Every run is also replayed: for each recorded call, a *fresh* strategy instance (as after
//! a host restart) gets the journaled state blob and the same observation and must answer
//! exactly the same decision.

use dax::contract::{
    AnalysisOutcome, CallError, CheckResult, CheckVerdict, Decision, FinalStatus, HookPhase,
    MatchSource, Observation, Outcome, PluginError, Slot, StatusOutcome, Step, Strategy,
    StringMatch, TrafficSplit,
};
use dax::plugin::LoadedPlugin;
use dax_tests::{fresh_host, plugin_path, spec};
use serde_json::{json, Value};
use std::sync::Arc;

/// The simulated world the scripted outcomes are computed from.
#[derive(Debug, Clone, Default)]
struct World {
    elapsed_ms: u64,
    traffic: TrafficSplit,
    stable: u32,
    candidate: u32,
    promoted: bool,
    steps: usize,
}

struct Record {
    state_in: Vec<u8>,
    obs: Observation,
    decision: Decision,
}

struct Run {
    first: Decision,
    records: Vec<Record>,
    world: World,
}

impl Run {
    fn steps(&self) -> Vec<Step> {
        std::iter::once(self.first.next.clone())
            .chain(self.records.iter().map(|r| r.decision.next.clone()))
            .collect()
    }
    fn final_status(&self) -> FinalStatus {
        match self.steps().last() {
            Some(Step::Finish(s)) => *s,
            other => panic!("run did not finish: {other:?}"),
        }
    }
    fn weights(&self) -> Vec<u8> {
        self.steps()
            .iter()
            .filter_map(|s| match s {
                Step::SetTraffic(t) => Some(t.candidate_weight),
                _ => None,
            })
            .collect()
    }
    fn rollback_reason(&self) -> String {
        self.steps()
            .into_iter()
            .find_map(|s| match s {
                Step::Rollback(r) => Some(r),
                _ => None,
            })
            .expect("a rollback step")
    }
}

fn status(which: Slot, desired: u32, ready: u32) -> Outcome {
    Outcome::TargetStatus(StatusOutcome {
        which,
        desired,
        ready,
        updated: ready,
    })
}

fn analysis(verdict: CheckVerdict) -> Outcome {
    Outcome::Analysis(AnalysisOutcome {
        checks: vec![CheckResult {
            name: "request-success-rate".into(),
            verdict,
            value: Some(99.5),
            detail: "scripted".into(),
        }],
        score: None,
    })
}

/// A healthy world: everything ready, every check passes, every hook and operator says yes.
fn happy(step: &Step, w: &World) -> Outcome {
    match step {
        Step::DeployCandidate => status(Slot::Candidate, 2, 2),
        Step::CheckStatus(Slot::Stable) => status(Slot::Stable, w.stable, w.stable),
        Step::CheckStatus(Slot::Candidate) => status(Slot::Candidate, w.candidate, w.candidate),
        Step::Scale(s, n) => status(*s, *n, *n),
        Step::Analyze(_) => analysis(CheckVerdict::Pass),
        Step::RunHooks(_) => Outcome::Hooks(true),
        Step::AwaitApproval(_) => Outcome::Approval(true),
        _ => Outcome::Done,
    }
}

fn apply(step: &Step, outcome: &Outcome, w: &mut World) {
    w.steps += 1;
    if matches!(outcome, Outcome::Failed(_)) {
        return;
    }
    match step {
        Step::Wait(ms) => w.elapsed_ms += ms,
        Step::SetTraffic(t) => w.traffic = t.clone(),
        Step::DeployCandidate => w.candidate = 2,
        Step::Scale(Slot::Stable, n) => w.stable = *n,
        Step::Scale(Slot::Candidate, n) => w.candidate = *n,
        Step::Promote => {
            w.promoted = true;
            w.traffic = TrafficSplit {
                candidate_weight: 100,
                ..Default::default()
            };
        }
        // The contract: rollback returns all traffic to stable and removes the candidate.
        Step::Rollback(_) => {
            w.traffic = TrafficSplit::default();
            w.candidate = 0;
        }
        _ => {}
    }
}

async fn load(name: &str) -> (LoadedPlugin, tempfile::TempDir) {
    let (host, cache) = fresh_host();
    let loaded = host
        .load(name, &spec(&plugin_path(name)), std::path::Path::new("."))
        .await
        .unwrap_or_else(|e| panic!("loading the {name} strategy: {e:#}"));
    assert_eq!(loaded.info().name, name);
    (loaded, cache)
}

async fn drive(
    s: &Arc<dyn Strategy>,
    stable: u32,
    mut script: impl FnMut(&Step, &World) -> Outcome,
) -> Run {
    let first = s.start().await.expect("start");
    let mut world = World {
        stable,
        ..Default::default()
    };
    let mut current = first.clone();
    let mut records = Vec::new();
    while !matches!(current.next, Step::Finish(_)) {
        assert!(
            records.len() < 400,
            "no finish after 400 steps: {:?}",
            current.next
        );
        let outcome = script(&current.next, &world);
        apply(&current.next, &outcome, &mut world);
        let obs = Observation {
            elapsed_ms: world.elapsed_ms,
            last: outcome,
        };
        let decision = s.next(&current.state, &obs).await.expect("next");
        records.push(Record {
            state_in: current.state.clone(),
            obs,
            decision: decision.clone(),
        });
        current = decision;
    }
    Run {
        first,
        records,
        world,
    }
}

/// Resume from the journaled state at every step with a fresh instance: same decisions.
async fn assert_resumes(loaded: &LoadedPlugin, params: &Value, run: &Run) {
    for (i, r) in run.records.iter().enumerate() {
        let fresh = loaded.strategy(params.clone()).await.unwrap();
        let again = fresh.next(&r.state_in, &r.obs).await.expect("resumed next");
        assert_eq!(again, r.decision, "resuming at step {i} diverged");
    }
}

async fn run_checked(
    loaded: &LoadedPlugin,
    params: &Value,
    stable: u32,
    script: impl FnMut(&Step, &World) -> Outcome,
) -> Run {
    let s = loaded.strategy(params.clone()).await.unwrap();
    let run = drive(&s, stable, script).await;
    assert_resumes(loaded, params, &run).await;
    if run.final_status() == FinalStatus::RolledBack {
        assert_eq!(
            run.world.traffic,
            TrafficSplit::default(),
            "rollback must leave 100% on stable"
        );
        assert!(!run.world.promoted);
    }
    run
}

#[tokio::test]
async fn canary_through_the_host() {
    let (canary, _cache) = load("canary").await;
    let params = json!({"interval": "1m", "threshold": 2, "maxWeight": 50, "stepWeight": 10});
    let s = canary.strategy(params.clone()).await.unwrap();

    // Flagger's documented timings.
    let plan = s.describe_plan().await.unwrap();
    assert_eq!(
        plan.best_case_ms,
        5 * 60_000,
        "interval × maxWeight / stepWeight"
    );
    assert_eq!(
        plan.worst_case_rollback_ms,
        2 * 60_000,
        "interval × threshold"
    );

    // Happy path.
    let run = run_checked(&canary, &params, 2, happy).await;
    assert_eq!(run.final_status(), FinalStatus::Promoted);
    assert_eq!(run.weights(), vec![10, 20, 30, 40, 50]);
    assert_eq!(run.world.elapsed_ms, plan.best_case_ms);
    let steps = run.steps();
    assert_eq!(steps[1], Step::DeployCandidate);
    assert!(steps.contains(&Step::RunHooks(HookPhase::PreRollout)));
    let promote = steps.iter().position(|s| *s == Step::Promote).unwrap();
    assert_eq!(
        steps[promote - 1],
        Step::RunHooks(HookPhase::ConfirmPromotion)
    );
    assert_eq!(steps[promote + 1], Step::RunHooks(HookPhase::PostRollout));

    // No data from the first analysis: rollback after `threshold` analyses, in the planned time.
    let run = run_checked(&canary, &params, 2, |s, w| match s {
        Step::Analyze(_) => analysis(CheckVerdict::NoData),
        _ => happy(s, w),
    })
    .await;
    assert_eq!(run.final_status(), FinalStatus::RolledBack);
    assert_eq!(run.world.elapsed_ms, plan.worst_case_rollback_ms);
    assert!(
        run.rollback_reason().contains("no data"),
        "{}",
        run.rollback_reason()
    );

    // A failing pre-rollout webhook counts toward the threshold; no traffic ever moves.
    let run = run_checked(&canary, &params, 2, |s, w| match s {
        Step::RunHooks(HookPhase::PreRollout) => Outcome::Hooks(false),
        _ => happy(s, w),
    })
    .await;
    assert_eq!(run.final_status(), FinalStatus::RolledBack);
    assert!(run.weights().iter().all(|w| *w == 0));

    // A closed confirm-traffic-increase gate holds the weight until it opens.
    let mut closed = 2;
    let run = run_checked(&canary, &params, 2, |s, w| match s {
        Step::RunHooks(HookPhase::ConfirmTrafficIncrease)
            if w.traffic.candidate_weight == 30 && closed > 0 =>
        {
            closed -= 1;
            Outcome::Hooks(false)
        }
        _ => happy(s, w),
    })
    .await;
    assert_eq!(run.final_status(), FinalStatus::Promoted);
    assert_eq!(run.weights(), vec![10, 20, 30, 40, 50]);
    assert_eq!(
        run.world.elapsed_ms,
        7 * 60_000,
        "two extra intervals at the gate"
    );
}

#[tokio::test]
async fn canary_failure_at_every_step() {
    let (canary, _cache) = load("canary").await;
    let params = json!({"interval": "30s", "threshold": 2, "maxWeight": 30, "stepWeight": 10});
    let executed = {
        let s = canary.strategy(params.clone()).await.unwrap();
        drive(&s, 2, happy).await.records.len()
    };
    for k in 0..executed {
        let run = run_checked(&canary, &params, 2, |s, w| {
            if w.steps == k {
                Outcome::Failed(format!("target error at step {k}"))
            } else {
                happy(s, w)
            }
        })
        .await;
        let failed = &run.steps()[k];
        match failed {
            // Webhook calls that error are webhook failures: retried (gates, pre-rollout) or ignored (post-rollout).
            Step::RunHooks(_) => assert_eq!(
                run.final_status(),
                FinalStatus::Promoted,
                "step {k}: {failed:?}"
            ),
            _ => {
                assert_eq!(
                    run.final_status(),
                    FinalStatus::RolledBack,
                    "step {k}: {failed:?}"
                );
                assert!(run
                    .rollback_reason()
                    .contains(&format!("target error at step {k}")));
            }
        }
    }
}

#[tokio::test]
async fn canary_argo_steps_and_manual_pause() {
    let (canary, _cache) = load("canary").await;
    let params = json!({"interval": "30s", "threshold": 1, "steps": [
        {"setWeight": 20}, {"pause": {"duration": "1m"}}, {"setWeight": 40}, {"pause": {}},
        {"analysis": {}}, {"setCanaryScale": {"replicas": 3}}
    ]});
    let run = run_checked(&canary, &params, 2, happy).await;
    assert_eq!(run.final_status(), FinalStatus::Promoted);
    assert_eq!(run.weights(), vec![20, 40]);
    assert!(run.steps().contains(&Step::Scale(Slot::Candidate, 3)));
    assert!(run
        .steps()
        .iter()
        .any(|s| matches!(s, Step::AwaitApproval(_))));

    // `dax abort` at the pause.
    let run = run_checked(&canary, &params, 2, |s, w| match s {
        Step::AwaitApproval(_) => Outcome::Approval(false),
        _ => happy(s, w),
    })
    .await;
    assert_eq!(run.final_status(), FinalStatus::RolledBack);
    assert!(run.rollback_reason().contains("aborted by operator"));
}

#[tokio::test]
async fn blue_green_through_the_host() {
    let (bg, _cache) = load("blue-green").await;
    let params = json!({"interval": "20s", "iterations": 2, "threshold": 2, "mirror": true,
        "autoPromotionEnabled": false, "postPromotionAnalysis": {"iterations": 1}, "scaleDownDelay": "5s"});
    let run = run_checked(&bg, &params, 2, happy).await;
    assert_eq!(run.final_status(), FinalStatus::Promoted);
    let traffic: Vec<TrafficSplit> = run
        .steps()
        .into_iter()
        .filter_map(|s| {
            if let Step::SetTraffic(t) = s {
                Some(t)
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        traffic[0].mirror_percent, 100,
        "mirroring during pre-promotion analysis"
    );
    assert_eq!(
        traffic.last().unwrap().candidate_weight,
        100,
        "then all traffic at once"
    );
    let steps = run.steps();
    let approval = steps
        .iter()
        .position(|s| matches!(s, Step::AwaitApproval(_)))
        .unwrap();
    let switch = steps
        .iter()
        .position(|s| matches!(s, Step::SetTraffic(t) if t.candidate_weight == 100))
        .unwrap();
    assert!(
        approval < switch,
        "autoPromotionEnabled = false waits before switching"
    );

    // Operator says no.
    let run = run_checked(&bg, &params, 2, |s, w| match s {
        Step::AwaitApproval(_) => Outcome::Approval(false),
        _ => happy(s, w),
    })
    .await;
    assert_eq!(run.final_status(), FinalStatus::RolledBack);

    // Post-promotion analysis fails: switch back to stable, then roll back.
    let mut analyses = 0;
    let run = run_checked(&bg, &params, 2, |s, w| match s {
        Step::Analyze(_) => {
            analyses += 1;
            analysis(if analyses > 2 {
                CheckVerdict::Fail
            } else {
                CheckVerdict::Pass
            })
        }
        _ => happy(s, w),
    })
    .await;
    assert_eq!(run.final_status(), FinalStatus::RolledBack);
    let steps = run.steps();
    let n = steps.len();
    assert_eq!(steps[n - 3], Step::SetTraffic(TrafficSplit::default()));
    assert!(run.rollback_reason().contains("post-promotion"));
}

#[tokio::test]
async fn ab_test_through_the_host() {
    let (ab, _cache) = load("ab-test").await;
    let params = json!({"interval": "10s", "iterations": 3, "threshold": 1,
        "match": [{"header": "x-canary", "exact": "insider"}, {"cookie": "canary", "regex": "^always$"}]});
    let run = run_checked(&ab, &params, 2, happy).await;
    assert_eq!(run.final_status(), FinalStatus::Promoted);
    let split = run
        .steps()
        .into_iter()
        .find_map(|s| {
            if let Step::SetTraffic(t) = s {
                Some(t)
            } else {
                None
            }
        })
        .unwrap();
    assert_eq!(split.candidate_weight, 0);
    assert_eq!(split.matches.len(), 2);
    assert_eq!(split.matches[0].source, MatchSource::Header);
    assert_eq!(
        split.matches[1].value,
        StringMatch::Regex("^always$".into())
    );

    let run = run_checked(&ab, &params, 2, |s, w| match s {
        Step::Analyze(_) => analysis(CheckVerdict::Error),
        _ => happy(s, w),
    })
    .await;
    assert_eq!(run.final_status(), FinalStatus::RolledBack);
    assert_eq!(run.world.elapsed_ms, 10_000);

    // Bad params are reported by validate-config, naming the field.
    let problems = ab
        .validate_config(&json!({"match": [{"header": "x", "equals": "y"}]}))
        .await
        .unwrap();
    assert_eq!(problems.len(), 1);
    assert!(problems[0].message.contains("match[0]"), "{problems:?}");
}

#[tokio::test]
async fn rolling_through_the_host() {
    let (rolling, _cache) = load("rolling").await;
    let params = json!({"maxSurge": 1, "maxUnavailable": 0, "interval": "5s"});
    let run = run_checked(&rolling, &params, 3, happy).await;
    assert_eq!(run.final_status(), FinalStatus::Promoted);
    let scales: Vec<(Slot, u32)> = run
        .steps()
        .into_iter()
        .filter_map(|s| {
            if let Step::Scale(slot, n) = s {
                Some((slot, n))
            } else {
                None
            }
        })
        .collect();
    assert_eq!(
        scales,
        vec![
            (Slot::Candidate, 1),
            (Slot::Stable, 2),
            (Slot::Candidate, 2),
            (Slot::Stable, 1),
            (Slot::Candidate, 3),
            (Slot::Stable, 0)
        ]
    );
    assert!(run.weights().is_empty());

    // A batch that never gets ready: rollback restores the stable replicas first.
    let params = json!({"maxSurge": 0, "maxUnavailable": 1, "progressDeadline": "10s"});
    let run = run_checked(&rolling, &params, 3, |s, w| match s {
        Step::CheckStatus(Slot::Candidate) => status(Slot::Candidate, w.candidate, 0),
        _ => happy(s, w),
    })
    .await;
    assert_eq!(run.final_status(), FinalStatus::RolledBack);
    assert_eq!(run.world.stable, 3);
    assert!(run.rollback_reason().contains("progress deadline"));
}

#[tokio::test]
async fn bad_params_and_state_are_plugin_errors() {
    let (canary, _cache) = load("canary").await;
    let problems = canary
        .validate_config(&json!({"threshold": 0}))
        .await
        .unwrap();
    assert!(
        problems.iter().any(|p| p.message.contains("threshold")),
        "{problems:?}"
    );
    assert!(canary
        .validate_config(&json!({"interval": "30s"}))
        .await
        .unwrap()
        .is_empty());

    let s = canary.strategy(json!({"stepWeight": 90})).await.unwrap();
    match s.start().await {
        Err(CallError::Plugin {
            error: PluginError::InvalidConfig(m),
            ..
        }) => assert!(m.contains("stepWeight"), "{m}"),
        other => panic!("expected invalid-config, got {other:?}"),
    }
    let s = canary.strategy(json!({})).await.unwrap();
    let obs = Observation {
        elapsed_ms: 0,
        last: Outcome::Done,
    };
    match s.next(b"{not state", &obs).await {
        Err(CallError::Plugin {
            error: PluginError::InvalidInput(m),
            ..
        }) => assert!(m.contains("state blob")),
        other => panic!("expected invalid-input, got {other:?}"),
    }
}
