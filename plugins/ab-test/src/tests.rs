use super::*;
use proptest::prelude::*;
use strategy_kit::machine::{describe_plan, start};
use strategy_kit::sim::{analysis, happy, run, Trace, World};
use strategy_kit::types::*;

const BASIC: &str = r#"{"interval":"1m","iterations":4,"threshold":2,
  "match":[{"header":"x-canary","exact":"insider"},{"cookie":"canary","regex":"^always$"}]}"#;

fn sim(params: &str, script: impl FnMut(&Step, &World) -> Outcome) -> Trace {
    let t = run::<AbTest>(params, script, 500).expect("simulation finishes");
    t.verify_replay::<AbTest>(params)
        .expect("replay gives the same decisions");
    t
}

#[test]
fn plan() {
    let plan = describe_plan::<AbTest>(BASIC).unwrap();
    assert_eq!(plan.best_case_ms, 4 * 60_000);
    assert_eq!(plan.worst_case_rollback_ms, 2 * 60_000);
}

#[test]
fn routes_matching_requests_then_promotes() {
    let t = sim(BASIC, happy);
    assert_eq!(t.final_status(), Some(FinalStatus::Promoted));
    let routes: Vec<TrafficSplit> = t
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
    assert_eq!(routes.len(), 1);
    assert_eq!(routes[0].candidate_weight, 0);
    assert_eq!(
        routes[0].matches,
        vec![
            RequestMatch {
                source: MatchSource::Header,
                name: "x-canary".into(),
                value: StringMatch::Exact("insider".into())
            },
            RequestMatch {
                source: MatchSource::Cookie,
                name: "canary".into(),
                value: StringMatch::Regex("^always$".into())
            },
        ]
    );
    assert_eq!(
        t.steps()
            .iter()
            .filter(|s| matches!(s, Step::Analyze(_)))
            .count(),
        4
    );
}

#[test]
fn condition_spellings() {
    let p = r#"{"match":[{"source":"header","name":"user-agent","prefix":"Mozilla"},
        {"headers":{"x-region":{"suffix":"-eu"}}}]}"#;
    let t = sim(p, happy);
    let Step::SetTraffic(split) = t
        .steps()
        .into_iter()
        .find(|s| matches!(s, Step::SetTraffic(_)))
        .unwrap()
    else {
        unreachable!()
    };
    assert_eq!(
        split.matches[0].value,
        StringMatch::Prefix("Mozilla".into())
    );
    assert_eq!(
        split.matches[1],
        RequestMatch {
            source: MatchSource::Header,
            name: "x-region".into(),
            value: StringMatch::Suffix("-eu".into())
        }
    );
    for (bad, needle) in [
        (r#"{}"#, "match: required"),
        (
            r#"{"match":[{"header":"x","exact":"a","prefix":"b"}]}"#,
            "match[0]: give exactly one",
        ),
        (r#"{"match":[{"exact":"a"}]}"#, "header = "),
        (
            r#"{"match":[{"header":"x","equals":"a"}]}"#,
            "unknown key `equals`",
        ),
        (
            r#"{"match":[{"source":"query","name":"x","exact":"a"}]}"#,
            "match[0].source",
        ),
    ] {
        let e = start::<AbTest>(bad).unwrap_err();
        assert!(e.to_string().contains(needle), "{bad}: {e}");
    }
}

#[test]
fn failing_analysis_rolls_back_and_clears_routes() {
    let t = sim(BASIC, |s, w| {
        if matches!(s, Step::Analyze(_)) {
            analysis(CheckVerdict::Fail)
        } else {
            happy(s, w)
        }
    });
    assert_eq!(t.final_status(), Some(FinalStatus::RolledBack));
    let end = t.worlds.last().unwrap();
    assert_eq!(
        end.traffic,
        TrafficSplit::default(),
        "matches removed, all traffic stable"
    );
    assert_eq!(end.elapsed_ms, 2 * 60_000);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]
    #[test]
    fn weight_stays_zero_and_rollback_clean(iterations in 1u32..5, threshold in 1u32..4, bytes in proptest::collection::vec(any::<u8>(), 1..100)) {
        let params = serde_json::json!({"interval":"5s","iterations":iterations,"threshold":threshold,
            "match":[{"header":"x-canary","exact":"1"}]}).to_string();
        let mut i = 0usize;
        let t = run::<AbTest>(&params, |s, w| {
            i += 1;
            let b = if i <= bytes.len() { bytes[i - 1] } else { 255 };
            match (s, b % 5) {
                (Step::Rollback(_), _) => Outcome::Done,
                (_, 0) => Outcome::Failed("chaos".into()),
                (Step::Analyze(_), 1) => analysis(CheckVerdict::NoData),
                (Step::RunHooks(_), 1) => Outcome::Hooks(false),
                _ => happy(s, w),
            }
        }, 2_000).unwrap();
        t.verify_replay::<AbTest>(&params).unwrap();
        prop_assert!(t.weights().iter().all(|w| *w == 0));
        let end = t.worlds.last().unwrap();
        if t.final_status() == Some(FinalStatus::RolledBack) {
            prop_assert_eq!(&end.traffic, &TrafficSplit::default());
        }
    }
}
