use super::*;
use proptest::prelude::*;
use strategy_kit::machine::describe_plan;
use strategy_kit::sim::{analysis, happy, run, status, Trace, World};
use strategy_kit::types::*;

const BASIC: &str = r#"{"interval":"30s","iterations":3,"threshold":2,"scaleDownDelay":"10s"}"#;

fn sim(params: &str, script: impl FnMut(&Step, &World) -> Outcome) -> Trace {
    let t = run::<BlueGreen>(params, script, 500).expect("simulation finishes");
    t.verify_replay::<BlueGreen>(params)
        .expect("replay gives the same decisions");
    t
}

#[test]
fn plan_counts_iterations_and_delay() {
    let plan = describe_plan::<BlueGreen>(BASIC).unwrap();
    assert_eq!(plan.best_case_ms, 3 * 30_000 + 10_000);
    assert_eq!(plan.worst_case_rollback_ms, 2 * 30_000);
    let with_post = describe_plan::<BlueGreen>(r#"{"interval":"1m","iterations":2,"scaleDownDelay":"0s","postPromotionAnalysis":{"iterations":2,"interval":"30s"}}"#).unwrap();
    assert_eq!(with_post.best_case_ms, 2 * 60_000 + 2 * 30_000);
}

#[test]
fn happy_path_switches_once_after_analysis() {
    let t = sim(BASIC, happy);
    assert_eq!(t.final_status(), Some(FinalStatus::Promoted));
    assert_eq!(t.weights(), vec![100], "no intermediate weights");
    let steps = t.steps();
    let switch = steps
        .iter()
        .position(|s| *s == Step::SetTraffic(TrafficSplit::weight(100)))
        .unwrap();
    assert_eq!(
        steps[..switch]
            .iter()
            .filter(|s| matches!(s, Step::Analyze(_)))
            .count(),
        3
    );
    assert_eq!(
        steps[switch - 1],
        Step::RunHooks(HookPhase::ConfirmPromotion)
    );
    let promote = steps.iter().position(|s| *s == Step::Promote).unwrap();
    assert_eq!(
        steps[promote - 1],
        Step::Wait(10_000),
        "scale-down delay before retiring the old version"
    );
}

#[test]
fn failing_pre_promotion_analysis_never_switches() {
    let t = sim(BASIC, |s, w| {
        if matches!(s, Step::Analyze(_)) {
            analysis(CheckVerdict::Fail)
        } else {
            happy(s, w)
        }
    });
    assert_eq!(t.final_status(), Some(FinalStatus::RolledBack));
    assert!(t.weights().is_empty(), "{:?}", t.steps());
    assert_eq!(t.worlds.last().unwrap().elapsed_ms, 60_000);
}

#[test]
fn mirroring_during_analysis_only() {
    let t = sim(
        r#"{"interval":"10s","iterations":2,"mirror":true,"mirrorWeight":50}"#,
        happy,
    );
    let traffic: Vec<TrafficSplit> = t
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
        traffic,
        vec![
            TrafficSplit {
                candidate_weight: 0,
                matches: vec![],
                mirror_percent: 50
            },
            TrafficSplit::default(),
            TrafficSplit::weight(100)
        ]
    );
    // Mirroring failing analysis: rollback clears the mirror first.
    let t = sim(
        r#"{"interval":"10s","threshold":1,"mirror":true}"#,
        |s, w| {
            if matches!(s, Step::Analyze(_)) {
                analysis(CheckVerdict::NoData)
            } else {
                happy(s, w)
            }
        },
    );
    assert_eq!(t.final_status(), Some(FinalStatus::RolledBack));
    let steps = t.steps();
    let n = steps.len();
    assert_eq!(steps[n - 3], Step::SetTraffic(TrafficSplit::default()));
    assert!(matches!(steps[n - 2], Step::Rollback(_)));
}

#[test]
fn post_promotion_failure_switches_back() {
    let p = r#"{"interval":"10s","threshold":1,"postPromotionAnalysis":{"iterations":2}}"#;
    let mut analyses = 0;
    let t = sim(p, |s, w| match s {
        Step::Analyze(_) => {
            analyses += 1;
            analysis(if analyses == 2 {
                CheckVerdict::Fail
            } else {
                CheckVerdict::Pass
            })
        }
        _ => happy(s, w),
    });
    assert_eq!(t.final_status(), Some(FinalStatus::RolledBack));
    let steps = t.steps();
    let n = steps.len();
    assert_eq!(t.weights(), vec![100, 0], "switch then switch back");
    assert_eq!(steps[n - 3], Step::SetTraffic(TrafficSplit::default()));
    assert!(matches!(&steps[n - 2], Step::Rollback(r) if r.contains("post-promotion")));
    assert!(!steps.contains(&Step::Promote));
}

#[test]
fn manual_promotion_gate() {
    let p = r#"{"interval":"10s","autoPromotionEnabled":false}"#;
    let t = sim(p, happy);
    assert_eq!(t.final_status(), Some(FinalStatus::Promoted));
    let steps = t.steps();
    let approval = steps
        .iter()
        .position(|s| matches!(s, Step::AwaitApproval(_)))
        .unwrap();
    let switch = steps
        .iter()
        .position(|s| *s == Step::SetTraffic(TrafficSplit::weight(100)))
        .unwrap();
    assert!(approval < switch);
    let t = sim(p, |s, w| {
        if matches!(s, Step::AwaitApproval(_)) {
            Outcome::Approval(false)
        } else {
            happy(s, w)
        }
    });
    assert_eq!(t.final_status(), Some(FinalStatus::RolledBack));
    assert!(t.weights().is_empty());
}

#[test]
fn unready_candidate_hits_deadline() {
    let t = sim(r#"{"progressDeadline":"20s"}"#, |s, w| match s {
        Step::DeployCandidate | Step::CheckStatus(Slot::Candidate) => status(Slot::Candidate, 2, 0),
        _ => happy(s, w),
    });
    assert_eq!(t.final_status(), Some(FinalStatus::RolledBack));
}

#[test]
fn every_failed_step_ends_safely() {
    let len = sim(BASIC, happy).steps().len() - 1;
    for k in 0..len {
        let t = sim(BASIC, |s, w| {
            if w.steps == k {
                Outcome::Failed("boom".into())
            } else {
                happy(s, w)
            }
        });
        let end = t.worlds.last().unwrap();
        match t.final_status() {
            Some(FinalStatus::RolledBack) => {
                assert_eq!(end.traffic, TrafficSplit::default(), "step {k}");
                assert!(!end.promoted);
            }
            Some(FinalStatus::Promoted) => assert!(
                matches!(t.steps()[k], Step::RunHooks(_)),
                "step {k} failure ignored"
            ),
            other => panic!("step {k}: {other:?}"),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn rollback_always_restores_stable(
        iterations in 1u32..4, threshold in 1u32..4, mirror in any::<bool>(), post in any::<bool>(),
        bytes in proptest::collection::vec(any::<u8>(), 1..200),
    ) {
        let mut p = serde_json::json!({"interval":"5s","iterations":iterations,"threshold":threshold,"mirror":mirror});
        if post { p["postPromotionAnalysis"] = serde_json::json!({"iterations": 2}); }
        let params = p.to_string();
        let mut i = 0usize;
        let t = run::<BlueGreen>(&params, |s, w| {
            i += 1;
            let b = if i <= bytes.len() { bytes[i - 1] } else { 255 };
            match (s, b % 6) {
                (Step::Rollback(_), _) => Outcome::Done,
                (_, 0) => Outcome::Failed("chaos".into()),
                (Step::Analyze(_), 1) => analysis(CheckVerdict::Fail),
                (Step::RunHooks(_), 1) => Outcome::Hooks(false),
                _ => happy(s, w),
            }
        }, 2_000).unwrap();
        t.verify_replay::<BlueGreen>(&params).unwrap();
        for s in t.steps() {
            if let Step::SetTraffic(tr) = s { prop_assert!(tr.candidate_weight == 0 || tr.candidate_weight == 100); }
        }
        let end = t.worlds.last().unwrap();
        match t.final_status() {
            Some(FinalStatus::RolledBack) => { prop_assert_eq!(&end.traffic, &TrafficSplit::default()); prop_assert!(!end.promoted); }
            Some(FinalStatus::Promoted) => prop_assert!(end.promoted),
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
