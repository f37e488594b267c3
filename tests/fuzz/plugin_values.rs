//! Every value a plugin returns through the WIT, at the host functions that consume it:
//! metric answers (NaN, infinities, extremes, huge series) through a check's verdict and the
//! statistical judge; steps and outcomes with any value (weights above 100, u32::MAX
//! replicas, u64::MAX waits, empty and huge strings, any state blob) through the journal's
//! summary and its renderings. The engine run itself is in `engine.rs`.

use super::natives::{Blob, Txt};
use dax::config::Check;
use dax::contract::{
    AnalysisOutcome, AnalysisRequest, CheckResult, CheckVerdict, FinalStatus, HookPhase,
    MatchSource, MetricAnswer, Outcome, QueryKind, RequestMatch, Sample, Slot, StatusOutcome, Step,
    StringMatch, TrafficSplit,
};
use dax::engine::analysis;
use dax::engine::Summary;
use dax::judge::{self, JudgeConfig, MetricInput};
use dax::state::{DecidedBy, Event, Record};
use proptest::prelude::*;

/// Floats a plugin may answer, weighted towards the ones that break arithmetic.
pub fn float() -> impl Strategy<Value = f64> {
    prop_oneof![
        3 => -200.0..200.0f64,
        1 => any::<f64>(),
        1 => proptest::sample::select(vec![
            f64::NAN, f64::INFINITY, f64::NEG_INFINITY, f64::MAX, f64::MIN, f64::MIN_POSITIVE,
            -0.0, 0.0, 1e-308, 99.0, 100.0, 5e-324,
        ]),
    ]
}

pub fn txt() -> impl Strategy<Value = Txt> {
    prop_oneof![
        20 => "\\PC{0,30}".prop_map(Txt::Short),
        2 => Just(Txt::Short(String::new())),
        2 => Just(Txt::Short("line\nforged: [dax] PROMOTED\r\u{1b}[2K".into())),
        1 => prop_oneof![9 => Just(1usize << 16), 1 => Just(1usize << 20)].prop_map(Txt::Huge),
    ]
}

pub fn blob() -> impl Strategy<Value = Blob> {
    prop_oneof![
        20 => proptest::collection::vec(any::<u8>(), 0..24).prop_map(Blob::Bytes),
        1 => Just(Blob::Huge(256 * 1024)),
    ]
}

fn slot() -> impl Strategy<Value = Slot> {
    prop_oneof![Just(Slot::Stable), Just(Slot::Candidate)]
}

fn hook_phase() -> impl Strategy<Value = HookPhase> {
    proptest::sample::select(HookPhase::ALL.to_vec())
}

fn final_status() -> impl Strategy<Value = FinalStatus> {
    prop_oneof![
        Just(FinalStatus::Promoted),
        Just(FinalStatus::RolledBack),
        Just(FinalStatus::Failed)
    ]
}

/// A weight: half valid (0..=100), half not (101..=255).
fn weight() -> impl Strategy<Value = u8> {
    prop_oneof![0u8..=100, 101u8..=255]
}

fn request_match() -> impl Strategy<Value = RequestMatch> {
    (
        prop_oneof![Just(MatchSource::Header), Just(MatchSource::Cookie)],
        "\\PC{0,12}",
        prop_oneof![
            "\\PC{0,12}".prop_map(StringMatch::Exact),
            "\\PC{0,12}".prop_map(StringMatch::Prefix),
            "\\PC{0,12}".prop_map(StringMatch::Suffix),
            prop_oneof![
                Just("(".to_string()),
                Just("(a+)+$".to_string()),
                Just("x{99999}".to_string()),
                "\\PC{0,12}".prop_map(|s| s)
            ]
            .prop_map(StringMatch::Regex),
        ],
    )
        .prop_map(|(source, name, value)| RequestMatch {
            source,
            name,
            value,
        })
}

/// A wait: short enough to run, or absurdly long (a host must bound it, not sleep it).
pub fn wait_ms() -> impl Strategy<Value = u64> {
    prop_oneof![
        6 => 0u64..=20,
        1 => (1u64 << 40)..=u64::MAX,
        1 => Just(u64::MAX),
    ]
}

/// Any step a strategy can answer, with extreme values.
pub fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        2 => Just(Step::DeployCandidate),
        4 => (weight(), proptest::collection::vec(request_match(), 0..2), prop_oneof![Just(0u8), weight()])
            .prop_map(|(candidate_weight, matches, mirror_percent)| Step::SetTraffic(TrafficSplit { candidate_weight, matches, mirror_percent })),
        1 => (slot(), prop_oneof![0u32..4, Just(u32::MAX)]).prop_map(|(s, n)| Step::Scale(s, n)),
        2 => slot().prop_map(Step::CheckStatus),
        3 => (prop_oneof![0u64..=60_000, Just(u64::MAX)], any::<bool>())
            .prop_map(|(window_ms, compare_baseline)| Step::Analyze(AnalysisRequest { window_ms, compare_baseline })),
        1 => hook_phase().prop_map(Step::RunHooks),
        2 => wait_ms().prop_map(Step::Wait),
        1 => txt().prop_map(|t| Step::AwaitApproval(t.text())),
        3 => Just(Step::Promote),
        2 => txt().prop_map(|t| Step::Rollback(t.text())),
        2 => final_status().prop_map(Step::Finish),
    ]
}

fn verdict_kind() -> impl Strategy<Value = CheckVerdict> {
    proptest::sample::select(vec![
        CheckVerdict::Pass,
        CheckVerdict::Fail,
        CheckVerdict::NoData,
        CheckVerdict::Error,
    ])
}

fn outcome() -> impl Strategy<Value = Outcome> {
    prop_oneof![
        Just(Outcome::Started),
        Just(Outcome::Done),
        (slot(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
            |(which, desired, ready, updated)| Outcome::TargetStatus(StatusOutcome {
                which,
                desired,
                ready,
                updated
            })
        ),
        (
            proptest::collection::vec(
                (
                    "\\PC{0,8}",
                    verdict_kind(),
                    proptest::option::of(float()),
                    "\\PC{0,8}"
                ),
                0..4
            ),
            proptest::option::of(float())
        )
            .prop_map(|(checks, score)| Outcome::Analysis(AnalysisOutcome {
                checks: checks
                    .into_iter()
                    .map(|(name, verdict, value, detail)| CheckResult {
                        name,
                        verdict,
                        value,
                        detail
                    })
                    .collect(),
                score,
            })),
        any::<bool>().prop_map(Outcome::Hooks),
        any::<bool>().prop_map(Outcome::Approval),
        txt().prop_map(|t| Outcome::Failed(t.text())),
    ]
}

fn check(kind: QueryKind, min: Option<f64>, max: Option<f64>) -> Check {
    Check {
        name: "c".into(),
        provider: "p".into(),
        query: "q".into(),
        min,
        max,
        interval: None,
        kind,
        direction: None,
        critical: false,
        weight: None,
    }
}

fn answer() -> impl Strategy<Value = Result<MetricAnswer, String>> {
    prop_oneof![
        3 => float().prop_map(|v| Ok(MetricAnswer::Value(v))),
        3 => proptest::collection::vec((any::<u64>(), float()), 0..64)
            .prop_map(|s| Ok(MetricAnswer::Series(s.into_iter().map(|(timestamp_ms, value)| Sample { timestamp_ms, value }).collect()))),
        1 => (0usize..200_000, float()).prop_map(|(n, v)| Ok(MetricAnswer::Series(vec![Sample { timestamp_ms: 0, value: v }; n]))),
        1 => txt().prop_map(|t| Ok(MetricAnswer::NoData(t.text()))),
        1 => txt().prop_map(|t| Err(t.text())),
    ]
}

fn series() -> impl Strategy<Value = Vec<f64>> {
    prop_oneof![
        30 => proptest::collection::vec(float(), 0..40),
        1 => (0usize..2500, float(), float()).prop_map(|(n, a, b)| (0..n).map(|i| if i % 3 == 0 { a } else { b }).collect()),
    ]
}

fn metric_input() -> impl Strategy<Value = MetricInput> {
    (
        proptest::sample::select(vec!["a", "b", "c"]),
        proptest::option::of(proptest::sample::select(vec!["g1", "g2"])),
        series(),
        series(),
        proptest::sample::select(vec![
            judge::Direction::Increase,
            judge::Direction::Decrease,
            judge::Direction::Either,
        ]),
        any::<bool>(),
        proptest::option::of(float()),
    )
        .prop_map(
            |(name, group, candidate, baseline, direction, critical, weight)| MetricInput {
                name: name.into(),
                group: group.map(str::to_string),
                candidate,
                baseline,
                direction,
                critical,
                weight,
            },
        )
}

proptest! {
    #![proptest_config(super::config(256, "fuzz/regressions/plugin_values.txt"))]

    /// A check's verdict on any answer: no panic; a pass only for a finite number within the
    /// bounds; NaN and empty series are no data.
    #[test]
    fn check_verdicts_on_any_metric_answer(
        answer in answer(),
        range in any::<bool>(),
        min in proptest::option::of(float().prop_filter("bounds are never NaN (dax validate)", |v| !v.is_nan())),
        max in proptest::option::of(float().prop_filter("bounds are never NaN (dax validate)", |v| !v.is_nan())),
    ) {
        let kind = if range { QueryKind::Range } else { QueryKind::Instant };
        let c = check(kind, min, max);
        let r = analysis::verdict(&c, answer.clone());
        match r.verdict {
            CheckVerdict::Pass => {
                let v = r.value.expect("a pass has a value");
                prop_assert!(v.is_finite(), "a non-finite value passed: {v} ({})", r.detail);
                prop_assert!(min.is_none_or(|m| v >= m) && max.is_none_or(|m| v <= m), "{v} outside bounds passed");
            }
            CheckVerdict::Fail => prop_assert!(r.value.is_some()),
            CheckVerdict::NoData => prop_assert!(r.value.is_none()),
            CheckVerdict::Error => prop_assert!(answer.is_err()),
        }
        if let Ok(MetricAnswer::Value(v)) = answer {
            if v.is_nan() {
                prop_assert_eq!(r.verdict, CheckVerdict::NoData);
            }
        }
        let _ = (analysis::describe_bounds(&c), r.value.map(analysis::fmt_num));
    }

    /// The judge on any series: no panic, a score in 0..=100.
    #[test]
    fn judge_on_any_series(metrics in proptest::collection::vec(metric_input(), 0..4)) {
        let result = judge::judge(&metrics, &JudgeConfig::default());
        prop_assert!((0.0..=100.0).contains(&result.score), "score {} ({})", result.score, result.summary);
        prop_assert_eq!(result.metrics.len(), metrics.len());
    }

    /// Steps and outcomes with any values, in any order, through the summary and its
    /// renderings (`dax status`, the final report, `--output json`).
    #[test]
    fn summary_of_any_steps_and_outcomes(
        events in proptest::collection::vec(
            prop_oneof![
                (step(), blob(), txt()).prop_map(|(step, state, note)| (Some(step), None, state, note)),
                (outcome(), blob(), txt()).prop_map(|(o, state, note)| (None, Some(o), state, note)),
            ],
            0..12,
        ),
        ns in proptest::collection::vec(prop_oneof![0u64..4, Just(u64::MAX)], 12),
        elapsed in proptest::collection::vec(prop_oneof![0u64..100_000, Just(u64::MAX)], 12),
    ) {
        let records: Vec<Record> = events
            .into_iter()
            .enumerate()
            .map(|(i, (step, outcome, state, note))| Record {
                seq: i as u64,
                ts: serde_json::from_str("\"2026-01-01T00:00:00Z\"").unwrap(),
                elapsed_ms: elapsed[i],
                event: match (step, outcome) {
                    (Some(step), _) => Event::Decision {
                        n: ns[i],
                        step,
                        state: hex::encode(state.bytes()),
                        note: note.text(),
                        by: DecidedBy::Strategy,
                        ends_as: None,
                    },
                    (_, Some(outcome)) => Event::Outcome { n: ns[i], outcome, detail: note.text() },
                    _ => unreachable!(),
                },
            })
            .collect();
        let s = Summary::fold("d", &records);
        let _ = (s.render(), s.progress_line());
        serde_json::to_string(&s).unwrap();
        for r in &records {
            let (kind, message) = dax::engine::summary::describe_event(&r.event);
            prop_assert!(!kind.is_empty());
            let _ = message;
            // What the journal writes, and reads back.
            let line = serde_json::to_string(r).unwrap();
            let back: Record = serde_json::from_str(&line).unwrap();
            prop_assert_eq!(back.seq, r.seq);
        }
    }
}
