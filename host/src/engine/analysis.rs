//! One analysis: every `[[checks]]` entry queried once, plus the `rollout` webhooks.
//!
//! Verdict of one check (the rules `dax` guarantees, whatever the strategy):
//! - **pass**: the provider returned a number `v` with `min <= v <= max` (bounds inclusive,
//!   either optional);
//! - **fail**: it returned a number outside the range;
//! - **no-data**: it answered *no data*, an empty series, or NaN (e.g. a success rate of 0/0
//!   requests). No data is never a pass;
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
            match (check.kind, values.last()) {
                (_, None) => f64::NAN,
                (QueryKind::Instant, Some(last)) => *last,
                (QueryKind::Range, Some(_)) => values.iter().sum::<f64>() / values.len() as f64,
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
}
