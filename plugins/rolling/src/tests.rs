use super::*;
use proptest::prelude::*;
use strategy_kit::machine::describe_plan;
use strategy_kit::sim::{analysis, happy, run_from, status, Trace, World};
use strategy_kit::types::*;

fn start_world(n: u32) -> World {
    World {
        stable_replicas: n,
        ..Default::default()
    }
}

fn sim(params: &str, script: impl FnMut(&Step, &World) -> Outcome) -> Trace {
    let t =
        run_from::<Rolling>(params, start_world(3), script, 1_000).expect("simulation finishes");
    t.verify_replay::<Rolling>(params)
        .expect("replay gives the same decisions");
    t
}

/// A world where scaled replicas become ready at once.
fn world(_n: u32) -> impl FnMut(&Step, &World) -> Outcome {
    |s, w| match s {
        Step::CheckStatus(Slot::Stable) => {
            status(Slot::Stable, w.stable_replicas, w.stable_replicas)
        }
        Step::CheckStatus(Slot::Candidate) => {
            status(Slot::Candidate, w.candidate_replicas, w.candidate_replicas)
        }
        Step::DeployCandidate => status(Slot::Candidate, 1, 1),
        _ => happy(s, w),
    }
}

#[test]
fn kubernetes_batches() {
    use IntOrPercent::*;
    // 4 replicas, 25% / 25%: surge 1, unavailable 1.
    let b = batches(4, Percent(25), Percent(25));
    assert_eq!(
        b[0],
        Batch {
            candidate: 1,
            stable: 2
        }
    );
    assert_eq!(
        b.last(),
        Some(&Batch {
            candidate: 4,
            stable: 0
        })
    );
    // No surge: take one down first, then replace one by one.
    let b = batches(3, Count(0), Count(1));
    assert_eq!(
        b,
        vec![
            Batch {
                candidate: 0,
                stable: 2
            },
            Batch {
                candidate: 1,
                stable: 1
            },
            Batch {
                candidate: 2,
                stable: 0
            },
            Batch {
                candidate: 3,
                stable: 0
            },
        ]
    );
    // Surge everything: blue-green-like.
    assert_eq!(
        batches(3, Percent(100), Count(0)),
        vec![Batch {
            candidate: 3,
            stable: 0
        }]
    );
    // 25% of 2 rounds to 0 unavailable, 1 surge.
    assert_eq!(batches(2, Percent(25), Percent(25)).len(), 2);
}

#[test]
fn happy_path_replaces_in_batches_with_health_checks() {
    let p = r#"{"maxSurge":1,"maxUnavailable":0,"interval":"10s"}"#;
    let t = sim(p, world(3));
    assert_eq!(t.final_status(), Some(FinalStatus::Promoted));
    let scales: Vec<(Slot, u32)> = t
        .steps()
        .into_iter()
        .filter_map(|s| {
            if let Step::Scale(sl, n) = s {
                Some((sl, n))
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
            (Slot::Stable, 0),
        ]
    );
    // Every candidate scale-up is followed by a readiness check before stable shrinks.
    let steps = t.steps();
    for (i, s) in steps.iter().enumerate() {
        if matches!(s, Step::Scale(Slot::Candidate, _)) {
            assert_eq!(steps[i + 1], Step::CheckStatus(Slot::Candidate));
        }
    }
    assert!(t.weights().is_empty(), "rolling never touches traffic");
    // Without `replicas`, the plan is shown for 4 replicas (4 batches of one) and says so.
    let plan = describe_plan::<Rolling>(p).unwrap();
    assert_eq!(plan.best_case_ms, 4 * 10_000);
    assert!(plan.steps[0].contains("shown for 4"), "{:?}", plan.steps);
}

#[test]
fn plan_uses_replicas_param() {
    let p = r#"{"replicas":3,"maxSurge":1,"maxUnavailable":0,"interval":"10s","analysis":true,"threshold":2}"#;
    let plan = describe_plan::<Rolling>(p).unwrap();
    assert_eq!(plan.best_case_ms, 3 * 10_000, "one pause per batch");
    assert_eq!(
        plan.worst_case_rollback_ms,
        2 * 10_000,
        "first batch's analysis failing threshold times"
    );
}

#[test]
fn unready_batch_rolls_back_and_restores_stable() {
    let p = r#"{"maxSurge":0,"maxUnavailable":1,"progressDeadline":"20s"}"#;
    let t = sim(p, |s, w| match s {
        Step::CheckStatus(Slot::Candidate) => status(Slot::Candidate, w.candidate_replicas, 0),
        _ => world(3)(s, w),
    });
    assert_eq!(t.final_status(), Some(FinalStatus::RolledBack));
    let steps = t.steps();
    let n = steps.len();
    assert_eq!(
        steps[n - 3],
        Step::Scale(Slot::Stable, 3),
        "stable restored before rollback: {steps:?}"
    );
    assert!(matches!(&steps[n - 2], Step::Rollback(r) if r.contains("progress deadline")));
    assert_eq!(t.worlds.last().unwrap().stable_replicas, 3);
}

#[test]
fn analysis_failure_between_batches_rolls_back() {
    let p = r#"{"maxSurge":1,"maxUnavailable":0,"interval":"5s","analysis":true,"threshold":1}"#;
    let t = sim(p, |s, w| {
        if matches!(s, Step::Analyze(_)) {
            analysis(CheckVerdict::Fail)
        } else {
            world(3)(s, w)
        }
    });
    assert_eq!(t.final_status(), Some(FinalStatus::RolledBack));
    assert_eq!(t.worlds.last().unwrap().stable_replicas, 3);
}

#[test]
fn both_zero_is_rejected() {
    let e = strategy_kit::machine::start::<Rolling>(r#"{"maxSurge":0,"maxUnavailable":"0%"}"#)
        .unwrap_err();
    assert!(e.to_string().contains("maxSurge / maxUnavailable"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]
    #[test]
    fn batches_respect_surge_and_availability(n in 1u32..40, s in 0u32..10, u in 0u32..10, sp in 0u32..=100, up in 0u32..=100, pct in any::<bool>()) {
        let (surge, unav) = if pct { (IntOrPercent::Percent(sp), IntOrPercent::Percent(up)) } else { (IntOrPercent::Count(s), IntOrPercent::Count(u)) };
        prop_assume!(!(surge.resolve(n, true) == 0 && unav.resolve(n, false) == 0 && !pct));
        let smax = surge.resolve(n, true);
        let mut umax = unav.resolve(n, false);
        if smax == 0 && umax == 0 { umax = 1; }
        let b = batches(n, surge, unav);
        prop_assert_eq!(b.last().copied(), Some(Batch { candidate: n, stable: 0 }));
        let mut prev = Batch { candidate: 0, stable: n };
        for x in &b {
            // Scale-up happens first: the peak is new candidate + old stable.
            prop_assert!(x.candidate + prev.stable <= n + smax);
            prop_assert!(x.candidate + x.stable + umax >= n);
            prop_assert!(x.candidate >= prev.candidate && x.stable <= prev.stable);
            prev = *x;
        }
    }

    #[test]
    fn rollback_restores_stable_count(n in 1u32..8, bytes in proptest::collection::vec(any::<u8>(), 1..80)) {
        let params = r#"{"maxSurge":1,"maxUnavailable":1,"interval":"5s","analysis":true,"threshold":2}"#;
        let mut i = 0usize;
        let t = run_from::<Rolling>(params, start_world(n), |s, w| {
            i += 1;
            let b = if i <= bytes.len() { bytes[i - 1] } else { 255 };
            match (s, b % 5) {
                (Step::Rollback(_), _) => Outcome::Done,
                (_, 0) => Outcome::Failed("chaos".into()),
                (Step::Analyze(_), 1) => analysis(CheckVerdict::Error),
                _ => world(n)(s, w),
            }
        }, 2_000).unwrap();
        t.verify_replay::<Rolling>(params).unwrap();
        let end = t.worlds.last().unwrap();
        match t.final_status() {
            Some(FinalStatus::RolledBack) => prop_assert_eq!(end.stable_replicas, n),
            // Only when restoring the stable count itself failed.
            Some(FinalStatus::Failed) => prop_assert!(t.notes().last().unwrap().contains("stable replicas not restored")),
            Some(FinalStatus::Promoted) => prop_assert_eq!(end.candidate_replicas, n),
            other => prop_assert!(false, "{:?}", other),
        }
    }
}
