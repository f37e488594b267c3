use super::*;
use proptest::prelude::*;
use strategy_kit::machine::{describe_plan, start};
use strategy_kit::sim::{analysis, happy, run, status, Trace, World};
use strategy_kit::types::*;

const BASIC: &str = r#"{"interval":"1m","threshold":2,"maxWeight":50,"stepWeight":10}"#;

fn sim(params: &str, script: impl FnMut(&Step, &World) -> Outcome) -> Trace {
    let t = run::<Canary>(params, script, 500).expect("simulation finishes");
    t.verify_replay::<Canary>(params)
        .expect("replay gives the same decisions");
    t
}

/// After a rollback, traffic is 100% stable and nothing routes to the candidate again.
fn assert_clean_rollback(t: &Trace) {
    let steps = t.steps();
    let rb = steps
        .iter()
        .position(|s| matches!(s, Step::Rollback(_)))
        .expect("a rollback step");
    assert!(
        steps[rb..]
            .iter()
            .all(|s| !matches!(s, Step::SetTraffic(x) if x.candidate_weight > 0)),
        "traffic moved to candidate after rollback: {steps:?}"
    );
    assert_eq!(t.worlds.last().unwrap().traffic, TrafficSplit::default());
    assert!(
        !t.worlds.last().unwrap().promoted,
        "a rolled-back rollout never completed a promote"
    );
}

#[test]
fn plan_matches_flaggers_formulas() {
    let plan = describe_plan::<Canary>(BASIC).unwrap();
    assert_eq!(
        plan.best_case_ms,
        5 * 60_000,
        "interval × maxWeight/stepWeight"
    );
    assert_eq!(
        plan.worst_case_rollback_ms,
        2 * 60_000,
        "interval × threshold"
    );
    assert!(
        plan.steps.iter().any(|s| s == "set candidate weight 50"),
        "{:?}",
        plan.steps
    );

    let explicit =
        describe_plan::<Canary>(r#"{"interval":"30s","threshold":3,"stepWeights":[1,5,20,50,80]}"#)
            .unwrap();
    assert_eq!(
        explicit.best_case_ms,
        5 * 30_000,
        "interval × number of stepWeights"
    );
    assert_eq!(explicit.worst_case_rollback_ms, 3 * 30_000);

    // 50 / 15 is not whole: weights 15, 30, 45, 50.
    let uneven =
        describe_plan::<Canary>(r#"{"interval":"10s","maxWeight":50,"stepWeight":15}"#).unwrap();
    assert_eq!(uneven.best_case_ms, 4 * 10_000);
}

#[test]
fn happy_path_walks_the_ladder_and_promotes() {
    let t = sim(BASIC, happy);
    assert_eq!(t.final_status(), Some(FinalStatus::Promoted));
    assert_eq!(t.weights(), vec![10, 20, 30, 40, 50]);
    let steps = t.steps();
    assert_eq!(steps[0], Step::RunHooks(HookPhase::ConfirmRollout));
    assert_eq!(steps[1], Step::DeployCandidate);
    assert_eq!(steps[2], Step::CheckStatus(Slot::Candidate));
    assert_eq!(steps[3], Step::CheckStatus(Slot::Stable));
    assert_eq!(steps[4], Step::RunHooks(HookPhase::PreRollout));
    assert_eq!(steps[5], Step::RunHooks(HookPhase::ConfirmTrafficIncrease));
    assert_eq!(steps[6], Step::SetTraffic(TrafficSplit::weight(10)));
    assert_eq!(steps[7], Step::Wait(60_000));
    assert_eq!(
        steps[8],
        Step::Analyze(AnalysisRequest {
            window_ms: 60_000,
            compare_baseline: false
        })
    );
    let n = steps.len();
    assert_eq!(
        &steps[n - 4..],
        &[
            Step::RunHooks(HookPhase::ConfirmPromotion),
            Step::Promote,
            Step::RunHooks(HookPhase::PostRollout),
            Step::Finish(FinalStatus::Promoted)
        ]
    );
    // Elapsed time equals the plan's best case.
    assert_eq!(
        t.worlds.last().unwrap().elapsed_ms,
        describe_plan::<Canary>(BASIC).unwrap().best_case_ms
    );
}

#[test]
fn failed_step_anywhere_rolls_back_cleanly() {
    let happy_len = sim(BASIC, happy).steps().len() - 1; // executed steps (finish excluded)
    for k in 0..happy_len {
        let t = sim(BASIC, |step, w| {
            if w.steps == k {
                Outcome::Failed(format!("boom at {k}"))
            } else {
                happy(step, w)
            }
        });
        let steps = t.steps();
        let failed_step = &steps[k];
        match failed_step {
            // A failing webhook call counts as a hook failure: gates retry, post-rollout is ignored.
            Step::RunHooks(HookPhase::PostRollout) => {
                assert_eq!(t.final_status(), Some(FinalStatus::Promoted))
            }
            Step::RunHooks(HookPhase::ConfirmRollout)
            | Step::RunHooks(HookPhase::ConfirmTrafficIncrease)
            | Step::RunHooks(HookPhase::ConfirmPromotion)
            | Step::RunHooks(HookPhase::PreRollout) => {
                assert_eq!(
                    t.final_status(),
                    Some(FinalStatus::Promoted),
                    "single hook failure at {k} is retried"
                )
            }
            _ => {
                assert_eq!(
                    t.final_status(),
                    Some(FinalStatus::RolledBack),
                    "failure at step {k} ({failed_step:?})"
                );
                assert_clean_rollback(&t);
                let reason = t.steps().into_iter().find_map(|s| {
                    if let Step::Rollback(r) = s {
                        Some(r)
                    } else {
                        None
                    }
                });
                assert!(reason.unwrap().contains(&format!("boom at {k}")));
            }
        }
    }
}

#[test]
fn no_data_rolls_back_after_threshold_in_planned_time() {
    let t = sim(BASIC, |step, w| match step {
        Step::Analyze(_) => analysis(CheckVerdict::NoData),
        _ => happy(step, w),
    });
    assert_eq!(t.final_status(), Some(FinalStatus::RolledBack));
    assert_clean_rollback(&t);
    let analyses = t
        .steps()
        .iter()
        .filter(|s| matches!(s, Step::Analyze(_)))
        .count();
    assert_eq!(analyses, 2, "threshold 2: rollback at failedChecks >= 2");
    assert_eq!(
        t.weights(),
        vec![10, 0],
        "stays at 10 while failing, then back to 0"
    );
    assert_eq!(
        t.worlds.last().unwrap().elapsed_ms,
        describe_plan::<Canary>(BASIC)
            .unwrap()
            .worst_case_rollback_ms
    );
}

#[test]
fn intermittent_failure_below_threshold_still_promotes() {
    let mut n = 0;
    let t = sim(BASIC, |step, w| match step {
        Step::Analyze(_) => {
            n += 1;
            analysis(if n == 3 {
                CheckVerdict::Error
            } else {
                CheckVerdict::Pass
            })
        }
        _ => happy(step, w),
    });
    assert_eq!(t.final_status(), Some(FinalStatus::Promoted));
    assert_eq!(
        t.weights(),
        vec![10, 20, 30, 40, 50],
        "the failed analysis is retried at the same weight"
    );
}

#[test]
fn pre_rollout_webhook_failure_counts_toward_threshold() {
    let t = sim(BASIC, |step, w| match step {
        Step::RunHooks(HookPhase::PreRollout) => Outcome::Hooks(false),
        _ => happy(step, w),
    });
    assert_eq!(t.final_status(), Some(FinalStatus::RolledBack));
    assert!(
        t.weights().is_empty(),
        "no traffic before pre-rollout hooks pass"
    );
    assert_eq!(
        t.steps()
            .iter()
            .filter(|s| **s == Step::RunHooks(HookPhase::PreRollout))
            .count(),
        2
    );
}

#[test]
fn confirm_gates_hold_until_open() {
    let mut closed = 3;
    let t = sim(BASIC, |step, w| match step {
        Step::RunHooks(HookPhase::ConfirmTrafficIncrease)
            if w.traffic.candidate_weight == 20 && closed > 0 =>
        {
            closed -= 1;
            Outcome::Hooks(false)
        }
        _ => happy(step, w),
    });
    assert_eq!(t.final_status(), Some(FinalStatus::Promoted));
    assert_eq!(t.weights(), vec![10, 20, 30, 40, 50]);
    let gates = t
        .steps()
        .iter()
        .filter(|s| **s == Step::RunHooks(HookPhase::ConfirmTrafficIncrease))
        .count();
    assert_eq!(gates, 5 + 3);

    let mut closed = 2;
    let t = sim(BASIC, |step, w| match step {
        Step::RunHooks(HookPhase::ConfirmPromotion) if closed > 0 => {
            closed -= 1;
            Outcome::Hooks(false)
        }
        _ => happy(step, w),
    });
    assert_eq!(t.final_status(), Some(FinalStatus::Promoted));
    assert_eq!(
        t.worlds.last().unwrap().elapsed_ms,
        7 * 60_000,
        "two retries of one interval each"
    );
}

#[test]
fn progress_deadline_rolls_back_unready_candidate() {
    let p = r#"{"interval":"10s","progressDeadline":"30s"}"#;
    let t = sim(p, |step, w| match step {
        Step::DeployCandidate | Step::CheckStatus(Slot::Candidate) => status(Slot::Candidate, 4, 3),
        _ => happy(step, w),
    });
    assert_eq!(t.final_status(), Some(FinalStatus::RolledBack));
    let last = t.worlds.last().unwrap();
    assert!(
        last.elapsed_ms >= 30_000 && last.elapsed_ms < 40_000,
        "{}",
        last.elapsed_ms
    );
    let reason = t
        .steps()
        .into_iter()
        .find_map(|s| {
            if let Step::Rollback(r) = s {
                Some(r)
            } else {
                None
            }
        })
        .unwrap();
    assert!(
        reason.contains("progress deadline") && reason.contains("3/4"),
        "{reason}"
    );

    // 75% ready is enough with canaryReadyThreshold = 75.
    let p = r#"{"interval":"10s","canaryReadyThreshold":75}"#;
    let t = sim(p, |step, w| match step {
        Step::DeployCandidate | Step::CheckStatus(Slot::Candidate) => status(Slot::Candidate, 4, 3),
        _ => happy(step, w),
    });
    assert_eq!(t.final_status(), Some(FinalStatus::Promoted));
}

#[test]
fn skip_analysis_promotes_without_traffic_steps() {
    let t = sim(r#"{"skipAnalysis":true}"#, happy);
    assert_eq!(t.final_status(), Some(FinalStatus::Promoted));
    assert!(t
        .steps()
        .iter()
        .all(|s| !matches!(s, Step::Analyze(_) | Step::SetTraffic(_))));
}

#[test]
fn step_weight_promotion_shifts_rest_before_promote() {
    let t = sim(
        r#"{"interval":"5s","maxWeight":30,"stepWeight":15,"stepWeightPromotion":40}"#,
        happy,
    );
    assert_eq!(t.weights(), vec![15, 30, 70, 100]);
    assert_eq!(t.final_status(), Some(FinalStatus::Promoted));
}

#[test]
fn inconclusive_score_pauses_for_operator() {
    let p = r#"{"interval":"5s","maxWeight":20,"stepWeight":10,"compareBaseline":true,"pauseOnInconclusive":true}"#;
    let score = |s: f64| {
        Outcome::Analysis(AnalysisOutcome {
            checks: vec![],
            score: Some(s),
        })
    };
    let t = sim(p, |step, w| match step {
        Step::Analyze(req) => {
            assert!(req.compare_baseline);
            score(80.0)
        }
        Step::AwaitApproval(_) => Outcome::Approval(true),
        _ => happy(step, w),
    });
    assert_eq!(t.final_status(), Some(FinalStatus::Promoted));
    assert_eq!(
        t.steps()
            .iter()
            .filter(|s| matches!(s, Step::AwaitApproval(_)))
            .count(),
        2
    );

    let t = sim(p, |step, w| match step {
        Step::Analyze(_) => score(80.0),
        Step::AwaitApproval(_) => Outcome::Approval(false),
        _ => happy(step, w),
    });
    assert_eq!(t.final_status(), Some(FinalStatus::RolledBack));
    assert_clean_rollback(&t);

    // Without pauseOnInconclusive a marginal score counts as a failure; a low one too.
    let p2 = r#"{"interval":"5s","threshold":1,"compareBaseline":true}"#;
    let t = sim(p2, |step, w| {
        if matches!(step, Step::Analyze(_)) {
            score(80.0)
        } else {
            happy(step, w)
        }
    });
    assert_eq!(t.final_status(), Some(FinalStatus::RolledBack));
}

#[test]
fn argo_steps_with_pauses_analysis_and_scale() {
    let p = r#"{"interval":"30s","threshold":1,"steps":[
        {"setWeight":20},{"pause":{"duration":"1m"}},{"setCanaryScale":{"weight":50}},
        {"setWeight":50},{"pause":{}},{"analysis":{"interval":"2m"}},{"setCanaryScale":{"replicas":5}}]}"#;
    let plan = describe_plan::<Canary>(p).unwrap();
    assert_eq!(plan.best_case_ms, 60_000 + 120_000);
    assert_eq!(
        plan.worst_case_rollback_ms,
        60_000 + 120_000,
        "pause then one failing 2m analysis"
    );
    let t = sim(p, happy);
    assert_eq!(t.final_status(), Some(FinalStatus::Promoted));
    let steps = t.steps();
    assert_eq!(t.weights(), vec![20, 50]);
    assert!(steps.contains(&Step::Wait(60_000)));
    assert!(
        steps.contains(&Step::Scale(Slot::Candidate, 2)),
        "50% of 3 stable replicas, rounded up: {steps:?}"
    );
    assert!(steps.contains(&Step::Scale(Slot::Candidate, 5)));
    assert!(steps
        .iter()
        .any(|s| matches!(s, Step::AwaitApproval(m) if m.contains("steps[4]"))));
    assert!(steps.contains(&Step::Analyze(AnalysisRequest {
        window_ms: 120_000,
        compare_baseline: false
    })));

    // Abort at the manual pause.
    let t = sim(p, |step, w| {
        if matches!(step, Step::AwaitApproval(_)) {
            Outcome::Approval(false)
        } else {
            happy(step, w)
        }
    });
    assert_eq!(t.final_status(), Some(FinalStatus::RolledBack));
    assert_clean_rollback(&t);
}

#[test]
fn rollback_step_failure_finishes_failed() {
    let t = sim(BASIC, |step, w| match step {
        Step::Analyze(_) => analysis(CheckVerdict::Fail),
        Step::Rollback(_) => Outcome::Failed("target unreachable".into()),
        _ => happy(step, w),
    });
    assert_eq!(t.final_status(), Some(FinalStatus::Failed));
}

#[test]
fn bad_params_name_the_field() {
    for (p, field) in [
        (r#"{"threshold":0}"#, "threshold"),
        (r#"{"interval":30}"#, "duration"),
        (r#"{"maxWeight":50,"stepWeight":60}"#, "stepWeight"),
        (r#"{"stepWeights":[10,5]}"#, "stepWeights"),
        (r#"{"stepWeigth":10}"#, "stepWeigth"),
        (r#"{"steps":[{"setWeight":20}],"maxWeight":50}"#, "steps"),
        (r#"{"steps":[{"setCanaryScale":{}}]}"#, "setCanaryScale"),
        (
            r#"{"scoreThresholds":{"pass":50,"marginal":70}}"#,
            "scoreThresholds",
        ),
    ] {
        let err = start::<Canary>(p).unwrap_err();
        assert!(
            matches!(&err, Error::InvalidConfig(m) if m.contains(field)),
            "{p}: {err}"
        );
    }
    assert!(start::<Canary>("").is_ok(), "all defaults");
}

#[test]
fn corrupt_state_is_an_input_error() {
    let obs = Observation {
        elapsed_ms: 0,
        last: Outcome::Done,
    };
    let err = strategy_kit::machine::next::<Canary>(BASIC, b"not json", &obs).unwrap_err();
    assert!(matches!(err, Error::InvalidInput(_)));
}

/// Scripted outcome from a random byte: mostly healthy, sometimes failing in every way.
fn chaos(step: &Step, w: &World, b: u8) -> Outcome {
    match (step, b % 8) {
        (_, 0) if !matches!(step, Step::Rollback(_)) => Outcome::Failed("chaos".into()),
        (Step::Analyze(_), 1) => analysis(CheckVerdict::Fail),
        (Step::Analyze(_), 2) => analysis(CheckVerdict::NoData),
        (Step::Analyze(_), 3) => Outcome::Analysis(AnalysisOutcome {
            checks: vec![],
            score: Some(80.0),
        }),
        (Step::RunHooks(_), 1 | 2) => Outcome::Hooks(false),
        (Step::AwaitApproval(_), 1) => Outcome::Approval(false),
        (Step::CheckStatus(s), 1) => status(*s, 3, 1),
        _ => happy(step, w),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn weights_bounded_and_rollbacks_clean(
        max in 1u8..=100,
        step in 1u8..=100,
        threshold in 1u32..6,
        promo in proptest::option::of(1u8..=100),
        inconclusive_pause in any::<bool>(),
        bytes in proptest::collection::vec(any::<u8>(), 1..400),
    ) {
        let step = step.min(max);
        let mut p = serde_json::json!({
            "interval": "10s", "threshold": threshold, "maxWeight": max, "stepWeight": step,
            "progressDeadline": "1m", "compareBaseline": true, "pauseOnInconclusive": inconclusive_pause,
        });
        if let Some(promo) = promo { p["stepWeightPromotion"] = promo.into(); }
        let params = p.to_string();
        let mut i = 0usize;
        // Chaos for as many steps as there are bytes, then a healthy world (gates open eventually).
        let t = run::<Canary>(&params, |s, w| { i += 1; if i <= bytes.len() { chaos(s, w, bytes[i - 1]) } else { happy(s, w) } }, 2_000).unwrap();
        t.verify_replay::<Canary>(&params).unwrap();
        let steps = t.steps();
        // Weights may pass maxWeight only once the confirm-promotion gate has been reached.
        let promotion_phase = steps.iter().rposition(|s| *s == Step::RunHooks(HookPhase::ConfirmPromotion))
            .unwrap_or(steps.len());
        for (i, s) in steps.iter().enumerate() {
            if let Step::SetTraffic(tr) = s {
                prop_assert!(tr.candidate_weight <= 100);
                if i < promotion_phase {
                    prop_assert!(tr.candidate_weight <= max, "weight {} > maxWeight {} at {}", tr.candidate_weight, max, i);
                }
            }
        }
        match t.final_status() {
            Some(FinalStatus::RolledBack) => {
                let w = t.worlds.last().unwrap();
                prop_assert_eq!(w.traffic.candidate_weight, 0);
                prop_assert!(!w.promoted);
            }
            Some(FinalStatus::Promoted) => prop_assert!(t.worlds.last().unwrap().promoted),
            other => prop_assert!(false, "unexpected end {:?}", other),
        }
    }
}

/// CodeDeploy-style presets expand to weight steps, each weight below 100 analyzed for the
/// preset's duration, ending at 100 before promotion.
#[test]
fn codedeploy_presets_expand_to_steps() {
    let t = sim(r#"{"threshold":1,"preset":"canary10-5m"}"#, happy);
    assert_eq!(t.final_status(), Some(FinalStatus::Promoted));
    assert_eq!(t.weights(), vec![10, 100]);
    let plan = describe_plan::<Canary>(r#"{"preset":"canary10-5m"}"#).unwrap();
    assert_eq!(plan.best_case_ms, 300_000);
    let t = sim(r#"{"threshold":1,"preset":"linear10-1m"}"#, happy);
    assert_eq!(t.weights(), vec![10, 20, 30, 40, 50, 60, 70, 80, 90, 100]);
    let plan = describe_plan::<Canary>(r#"{"preset":"linear10-1m"}"#).unwrap();
    assert_eq!(
        plan.best_case_ms,
        9 * 60_000,
        "nine analyzed steps of 1 min, then 100%"
    );
    let t = sim(r#"{"threshold":1,"preset":"linear30-1s"}"#, happy);
    assert_eq!(t.weights(), vec![30, 60, 90, 100]);
    assert_eq!(
        sim(r#"{"preset":"all-at-once"}"#, happy).weights(),
        vec![100]
    );
    for (bad, text) in [
        (r#"{"preset":"blue10-5m"}"#, "is unknown"),
        (r#"{"preset":"canary0-5m"}"#, "not a percent"),
        (r#"{"preset":"canary100-5m"}"#, "not a percent"),
        (r#"{"preset":"linear10"}"#, "no duration"),
        (r#"{"preset":"linear10-0s"}"#, "longer than 0s"),
        (r#"{"preset":"canary10-5m","stepWeight":5}"#, "not both"),
    ] {
        let err = Canary::parse(bad).unwrap_err();
        assert!(format!("{err:?}").contains(text), "{bad}: {err:?}");
    }
}
