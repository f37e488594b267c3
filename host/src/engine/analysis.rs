//! One analysis: every `[[checks]]` entry queried once, plus the `rollout` webhooks.
//!
//! Verdict of one check (the rules `dax` guarantees, whatever the strategy):
//! - **pass**: the provider returned a number `v` with `min <= v <= max` (bounds inclusive,
//!   either optional);
//! - **fail**: it returned a number outside the range;
//! - **no-data**: it answered *no data*, an empty series, NaN (e.g. a success rate of 0/0
//!   requests) or an infinity. No data is never a pass;
//! - **error**: the query failed (provider error, plugin fault, timeout).
//!
//! An `instant` check takes the last sample when a provider answers with a series; a `range`
//! check takes the series' mean. A failed `rollout` webhook adds a `fail` check named
//! `hook:NAME`. Counting failures against a threshold is the strategy's job; the canary
//! strategy counts like Flagger (`failed >= threshold` rolls back) and counts no-data and
//! error as failed checks.

use crate::config::{Check, DeploymentConfig};
use crate::contract::{
    AnalysisOutcome, CheckResult, CheckVerdict, MetricAnswer, MetricProvider, MetricQuery,
    QueryKind,
};
use crate::plugin::spec::duration_str;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Longest a single metric query may take before it counts as an error.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(30);

/// Substitute `{{app}}`, `{{version}}`, `{{namespace}}`, `{{interval}}`, `{{slot}}`.
pub fn render_template(text: &str, vars: &[(String, String)]) -> String {
    let mut out = text.to_string();
    for (k, v) in vars {
        out = out.replace(&format!("{{{{{k}}}}}"), v);
        out = out.replace(&format!("{{{{ {k} }}}}"), v);
    }
    out
}

pub fn query_vars(cfg: &DeploymentConfig, window: Duration, slot: &str) -> Vec<(String, String)> {
    vec![
        ("app".into(), cfg.deployment.app.clone()),
        ("version".into(), cfg.deployment.version.clone()),
        ("namespace".into(), cfg.deployment.namespace.clone()),
        ("interval".into(), duration_str::format(window)),
        ("slot".into(), slot.into()),
    ]
}

/// The verdict for one provider answer (pure; see the module docs).
pub fn verdict(check: &Check, answer: Result<MetricAnswer, String>) -> CheckResult {
    let name = check.name.clone();
    let value = match answer {
        Err(e) => {
            return CheckResult {
                name,
                verdict: CheckVerdict::Error,
                value: None,
                detail: e,
            }
        }
        Ok(MetricAnswer::NoData(why)) => {
            return CheckResult {
                name,
                verdict: CheckVerdict::NoData,
                value: None,
                detail: format!("no data: {why}"),
            }
        }
        Ok(MetricAnswer::Value(v)) => v,
        Ok(MetricAnswer::Series(s)) => {
            let values: Vec<f64> = s.iter().map(|x| x.value).filter(|v| !v.is_nan()).collect();
            let n = values.len() as f64;
            match (check.kind, values.last()) {
                (_, None) => f64::NAN,
                (QueryKind::Instant, Some(last)) => *last,
                // Divided first: the sum of large finite samples overflows to infinity.
                (QueryKind::Range, Some(_)) => values.iter().map(|v| v / n).sum::<f64>(),
            }
        }
    };
    if value.is_nan() {
        return CheckResult {
            name,
            verdict: CheckVerdict::NoData,
            value: None,
            detail: "no data: the query's value is NaN or the series is empty".into(),
        };
    }
    // An infinity is no measurement: `+inf` passed every `min`-only check (found by
    // tests/fuzz). The judge drops non-finite samples the same way.
    if value.is_infinite() {
        return CheckResult {
            name,
            verdict: CheckVerdict::NoData,
            value: None,
            detail: format!("no data: the query's value is {value}"),
        };
    }
    let bounds = describe_bounds(check);
    let (verdict, detail) = match (check.min, check.max) {
        (Some(min), _) if value < min => (
            CheckVerdict::Fail,
            format!("{} < min {}", fmt_num(value), fmt_num(min)),
        ),
        (_, Some(max)) if value > max => (
            CheckVerdict::Fail,
            format!("{} > max {}", fmt_num(value), fmt_num(max)),
        ),
        _ => (
            CheckVerdict::Pass,
            format!("{} within {bounds}", fmt_num(value)),
        ),
    };
    CheckResult {
        name,
        verdict,
        value: Some(value),
        detail,
    }
}

pub fn describe_bounds(check: &Check) -> String {
    match (check.min, check.max) {
        (Some(a), Some(b)) => format!("[{}, {}]", fmt_num(a), fmt_num(b)),
        (Some(a), None) => format!(">= {}", fmt_num(a)),
        (None, Some(b)) => format!("<= {}", fmt_num(b)),
        (None, None) => "any".into(),
    }
}

pub fn fmt_num(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e12 {
        format!("{}", v as i64)
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// Run every check once, concurrently.
pub async fn run_checks(
    cfg: &DeploymentConfig,
    providers: &HashMap<String, Arc<dyn MetricProvider>>,
    window_ms: u64,
) -> Vec<CheckResult> {
    let futures = cfg.checks.iter().map(|check| async move {
        let window = check
            .interval
            .unwrap_or(Duration::from_millis(window_ms.max(1000)));
        let vars = query_vars(cfg, window, "candidate");
        let query = MetricQuery {
            text: render_template(&check.query, &vars),
            kind: check.kind,
            window_ms: window.as_millis() as u64,
            step_ms: 0,
            vars,
        };
        let answer = match providers.get(&check.provider) {
            None => Err(format!(
                "metric provider `{}` is not loaded",
                check.provider
            )),
            Some(p) => match tokio::time::timeout(QUERY_TIMEOUT, p.run_query(&query)).await {
                Ok(Ok(a)) => Ok(a),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "query timed out after {}s",
                    QUERY_TIMEOUT.as_secs()
                )),
            },
        };
        verdict(check, answer)
    });
    futures::future::join_all(futures).await
}

/// Compare the candidate with the stable version (Kayenta-style, see [`crate::judge`]):
/// every check is queried as a range for both slots, and the judge scores the pair.
/// Returns the score (0..=100) and a one-line summary. A check's `direction`, `critical` and
/// `weight` shape its part in the score; a failed query makes that metric *no data*.
pub async fn judge_against_baseline(
    cfg: &DeploymentConfig,
    providers: &HashMap<String, Arc<dyn MetricProvider>>,
    window_ms: u64,
) -> (f64, String) {
    let series = |check: &Check, slot: &'static str| {
        let window = check
            .interval
            .unwrap_or(Duration::from_millis(window_ms.max(1000)));
        let vars = query_vars(cfg, window, slot);
        let query = MetricQuery {
            text: render_template(&check.query, &vars),
            kind: QueryKind::Range,
            window_ms: window.as_millis() as u64,
            step_ms: 1000,
            vars,
        };
        let provider = providers.get(&check.provider).cloned();
        async move {
            let Some(p) = provider else { return Vec::new() };
            match tokio::time::timeout(QUERY_TIMEOUT, p.run_query(&query)).await {
                Ok(Ok(MetricAnswer::Series(s))) => s
                    .iter()
                    .map(|s| s.value)
                    .filter(|v| v.is_finite())
                    .collect(),
                Ok(Ok(MetricAnswer::Value(v))) if v.is_finite() => vec![v],
                _ => Vec::new(),
            }
        }
    };
    let inputs = futures::future::join_all(cfg.checks.iter().map(|check| async move {
        let (candidate, baseline) =
            tokio::join!(series(check, "candidate"), series(check, "stable"));
        crate::judge::MetricInput {
            name: check.name.clone(),
            group: None,
            candidate,
            baseline,
            direction: match check.direction {
                Some(crate::config::Direction::Increase) => crate::judge::Direction::Increase,
                Some(crate::config::Direction::Decrease) => crate::judge::Direction::Decrease,
                Some(crate::config::Direction::Either) | None => crate::judge::Direction::Either,
            },
            critical: check.critical,
            weight: check.weight,
        }
    }))
    .await;
    let result = crate::judge::judge(&inputs, &crate::judge::JudgeConfig::default());
    (result.score, result.summary)
}

/// An analysis has no failed check but some no-data or error ones.
pub fn is_inconclusive(outcome: &AnalysisOutcome) -> bool {
    !outcome
        .checks
        .iter()
        .any(|c| c.verdict == CheckVerdict::Fail)
        && outcome
            .checks
            .iter()
            .any(|c| matches!(c.verdict, CheckVerdict::NoData | CheckVerdict::Error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::Sample;

    fn check(min: Option<f64>, max: Option<f64>, kind: QueryKind) -> Check {
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

    #[test]
    fn bounds_are_inclusive() {
        let c = check(Some(99.0), Some(100.0), QueryKind::Instant);
        assert_eq!(
            verdict(&c, Ok(MetricAnswer::Value(99.0))).verdict,
            CheckVerdict::Pass
        );
        assert_eq!(
            verdict(&c, Ok(MetricAnswer::Value(100.0))).verdict,
            CheckVerdict::Pass
        );
        let r = verdict(&c, Ok(MetricAnswer::Value(98.9)));
        assert_eq!(r.verdict, CheckVerdict::Fail);
        assert_eq!(r.detail, "98.90 < min 99");
        assert_eq!(
            verdict(&c, Ok(MetricAnswer::Value(100.5))).verdict,
            CheckVerdict::Fail
        );
    }

    #[test]
    fn no_data_is_never_a_pass() {
        let c = check(None, Some(500.0), QueryKind::Instant);
        assert_eq!(
            verdict(&c, Ok(MetricAnswer::NoData("empty".into()))).verdict,
            CheckVerdict::NoData
        );
        assert_eq!(
            verdict(&c, Ok(MetricAnswer::Value(f64::NAN))).verdict,
            CheckVerdict::NoData
        );
        assert_eq!(
            verdict(&c, Ok(MetricAnswer::Series(vec![]))).verdict,
            CheckVerdict::NoData
        );
        assert_eq!(verdict(&c, Err("boom".into())).verdict, CheckVerdict::Error);
    }

    #[test]
    fn infinities_are_no_data_and_large_means_do_not_overflow() {
        // Regressions found by tests/fuzz: +inf passed a `min`-only check, and the mean of
        // two f64::MAX samples was +inf.
        let c = check(Some(99.0), None, QueryKind::Range);
        let r = verdict(&c, Ok(MetricAnswer::Value(f64::INFINITY)));
        assert_eq!(
            (r.verdict, r.detail.as_str()),
            (CheckVerdict::NoData, "no data: the query's value is inf")
        );
        let big = Sample {
            timestamp_ms: 0,
            value: f64::MAX,
        };
        let r = verdict(&c, Ok(MetricAnswer::Series(vec![big, big])));
        assert_eq!((r.verdict, r.value), (CheckVerdict::Pass, Some(f64::MAX)));
    }

    #[test]
    fn series_use_last_for_instant_and_mean_for_range() {
        let s = vec![
            Sample {
                timestamp_ms: 0,
                value: 10.0,
            },
            Sample {
                timestamp_ms: 1,
                value: 30.0,
            },
        ];
        let inst = verdict(
            &check(None, Some(25.0), QueryKind::Instant),
            Ok(MetricAnswer::Series(s.clone())),
        );
        assert_eq!((inst.verdict, inst.value), (CheckVerdict::Fail, Some(30.0)));
        let range = verdict(
            &check(None, Some(25.0), QueryKind::Range),
            Ok(MetricAnswer::Series(s)),
        );
        assert_eq!(
            (range.verdict, range.value),
            (CheckVerdict::Pass, Some(20.0))
        );
    }

    #[test]
    fn templates_and_inconclusive() {
        let vars = vec![("app".to_string(), "demo".to_string())];
        assert_eq!(
            render_template("x{app=\"{{app}}\"} {{ app }}", &vars),
            "x{app=\"demo\"} demo"
        );
        let mk = |v| CheckResult {
            name: "a".into(),
            verdict: v,
            value: None,
            detail: String::new(),
        };
        assert!(is_inconclusive(&AnalysisOutcome {
            checks: vec![mk(CheckVerdict::Pass), mk(CheckVerdict::NoData)],
            score: None
        }));
        assert!(!is_inconclusive(&AnalysisOutcome {
            checks: vec![mk(CheckVerdict::Fail), mk(CheckVerdict::NoData)],
            score: None
        }));
        assert!(!is_inconclusive(&AnalysisOutcome {
            checks: vec![mk(CheckVerdict::Pass)],
            score: None
        }));
    }

    /// Answers a series around 40 for the stable slot and around `candidate` otherwise.
    struct BySlot {
        candidate: f64,
    }

    #[async_trait::async_trait]
    impl MetricProvider for BySlot {
        async fn run_query(&self, q: &MetricQuery) -> crate::contract::CallResult<MetricAnswer> {
            let stable = q.vars.iter().any(|(k, v)| k == "slot" && v == "stable");
            let base = if stable { 40.0 } else { self.candidate };
            Ok(MetricAnswer::Series(
                (0..30)
                    .map(|i| Sample {
                        timestamp_ms: i * 1000,
                        value: base + (i % 6) as f64,
                    })
                    .collect(),
            ))
        }
    }

    async fn judged(candidate: f64) -> (f64, String) {
        let raw = r#"
[deployment]
app = "demo"
version = "v2"
artifact = "x"
[target]
plugin = "t"
[strategy]
plugin = "s"
[[checks]]
name = "success"
provider = "m"
query = "q"
min = 0.0
direction = "decrease"
[plugins.t]
source = "t.wasm"
[plugins.s]
source = "s.wasm"
[plugins.m]
source = "m.wasm"
"#;
        let loaded = crate::config::parse(raw, "judge.toml", std::path::Path::new(".")).unwrap();
        let mut providers: HashMap<String, Arc<dyn MetricProvider>> = HashMap::new();
        providers.insert("m".into(), Arc::new(BySlot { candidate }));
        judge_against_baseline(&loaded.config, &providers, 30_000).await
    }

    #[tokio::test]
    async fn baseline_comparison_scores_through_the_judge() {
        let (same, _) = judged(40.0).await;
        assert_eq!(same, 100.0, "identical distributions must pass");
        let (worse, summary) = judged(10.0).await;
        assert!(
            worse < 75.0,
            "a candidate far below its baseline must fail: {worse} {summary}"
        );
        // Higher is fine for a metric that only fails on a decrease.
        let (better, _) = judged(70.0).await;
        assert_eq!(better, 100.0);
    }
}
