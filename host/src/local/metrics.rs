//! `builtin:local-metrics`: the standard checks answered from the local proxy's in-process
//! statistics, so the quickstart needs no Prometheus server.

use super::stats::{now_ms, registry, Counts, Selector, SlotLabel};
use crate::contract::{
    CallError, CallResult, MetricAnswer, MetricProvider, MetricQuery, PluginError, PluginInfo,
    PluginRole, QueryKind, Sample,
};
use serde::Deserialize;

pub const SUPPORTED_QUERIES: [&str; 2] = ["request-success-rate", "request-duration"];
const NAME: &str = "local-metrics";

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    /// App to ask about when a query carries no `app` var.
    #[serde(default)]
    app: Option<String>,
}

/// The built-in metric provider over the local proxy's statistics.
pub struct LocalMetrics {
    default_app: Option<String>,
}

impl LocalMetrics {
    /// Config: `{}` or `{ app = "demo" }` (the app used when a query has no `app` var).
    pub fn new(config: serde_json::Value) -> anyhow::Result<Self> {
        let cfg: Config = if config.is_null() {
            Config::default()
        } else {
            serde_json::from_value(config).map_err(|e| {
                anyhow::anyhow!("local-metrics config: {e} (the only setting is `app`)")
            })?
        };
        Ok(LocalMetrics {
            default_app: cfg.app,
        })
    }

    pub fn info() -> PluginInfo {
        PluginInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            role: PluginRole::MetricProvider,
            description: "request success rate and p99 latency from the local target's proxy"
                .into(),
            config_schema: r#"{"type":"object","properties":{"app":{"type":"string"}},"additionalProperties":false}"#.into(),
        }
    }
}

fn invalid(msg: String) -> CallError {
    CallError::Plugin {
        plugin: NAME.into(),
        error: PluginError::InvalidInput(msg),
    }
}

#[derive(Clone, Copy)]
enum Query {
    SuccessRate,
    Duration,
}

impl Query {
    fn eval(self, c: &Counts) -> Option<f64> {
        match self {
            Query::SuccessRate => c.success_rate(),
            Query::Duration => c.quantile_seconds(0.99).map(|s| s * 1000.0),
        }
    }
}

#[async_trait::async_trait]
impl MetricProvider for LocalMetrics {
    async fn run_query(&self, q: &MetricQuery) -> CallResult<MetricAnswer> {
        let query = match q.text.trim() {
            "request-success-rate" => Query::SuccessRate,
            "request-duration" => Query::Duration,
            other => {
                return Err(invalid(format!(
                    "unknown query `{other}`: local-metrics answers {} (percent of non-5xx \
                     responses, and p99 latency in ms)",
                    SUPPORTED_QUERIES.join(" and ")
                )))
            }
        };
        let var = |name: &str| {
            q.vars
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
                .filter(|v| !v.is_empty())
        };
        let app = var("app").or(self.default_app.as_deref()).ok_or_else(|| {
            invalid("no `app` var given and no `app` in the local-metrics config".into())
        })?;
        let slot = match var("slot").unwrap_or("candidate") {
            "candidate" => SlotLabel::Candidate,
            "stable" => SlotLabel::Stable,
            other => {
                return Err(invalid(format!(
                    "unknown slot `{other}`: use `candidate` or `stable`"
                )))
            }
        };
        // The `version` var names the candidate; it narrows the candidate slot to that version
        // (a rolled-back earlier candidate of the same app must not count), not the stable one.
        let version = (slot == SlotLabel::Candidate)
            .then(|| var("version"))
            .flatten();
        let sel = Selector { app, slot, version };
        let window_ms = q.window_ms.max(1000);
        let now = now_ms();
        let describe = || {
            format!(
                "no requests to {app} ({}{}) in the last {} s",
                slot.as_str(),
                version.map(|v| format!(" {v}")).unwrap_or_default(),
                window_ms / 1000
            )
        };
        match q.kind {
            QueryKind::Instant => {
                let counts = registry().window(&sel, now.saturating_sub(window_ms), now);
                Ok(match query.eval(&counts) {
                    Some(v) => MetricAnswer::Value(v),
                    None => MetricAnswer::NoData(describe()),
                })
            }
            QueryKind::Range => {
                let step = if q.step_ms == 0 {
                    (window_ms / 10).max(1000)
                } else {
                    q.step_ms.max(1000)
                };
                let start = now.saturating_sub(window_ms);
                let mut samples = Vec::new();
                let mut t = start + step;
                while t <= now + step / 2 {
                    let end = t.min(now);
                    let counts = registry().window(&sel, end.saturating_sub(step), end);
                    if let Some(v) = query.eval(&counts) {
                        samples.push(Sample {
                            timestamp_ms: end,
                            value: v,
                        });
                    }
                    t += step;
                }
                Ok(if samples.is_empty() {
                    MetricAnswer::NoData(describe())
                } else {
                    MetricAnswer::Series(samples)
                })
            }
        }
    }
}
