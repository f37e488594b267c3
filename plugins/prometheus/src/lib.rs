//! `prometheus`: a metric provider that runs PromQL through a Prometheus server's HTTP API.
//!
//! Config (`[plugins.prometheus.config]`): `address = "http://127.0.0.1:9090"` (the same
//! `scheme://host:port` must be in `grants.http`; credentials go in `grants.http_auth`, the
//! host adds them to requests so the plugin never sees them).
//!
//! Queries: any PromQL (`{{app}}`, `{{version}}`, `{{namespace}}`, `{{interval}}`, `{{slot}}`
//! are filled from the query's variables), or the built-in checks `request-success-rate`
//! (percent non-5xx) and `request-duration` (p99 in ms) over the `dax_proxy_*` metrics.
//! An empty or NaN result is answered as explicit no-data, never as 0.

pub mod prom;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub address: String,
}

/// Problems with a config, as `(field, message)`.
pub fn config_problems(config: &str) -> Vec<(String, String)> {
    let cfg: Config = match serde_json::from_str(config) {
        Ok(c) => c,
        Err(e) => {
            return vec![(
                String::new(),
                format!("{e}; expected `address = \"http://127.0.0.1:9090\"`"),
            )]
        }
    };
    let a = cfg.address.trim();
    let rest = a
        .strip_prefix("http://")
        .or_else(|| a.strip_prefix("https://"));
    match rest {
        None => vec![(
            "address".into(),
            format!("`{a}` must start with http:// or https://, e.g. \"http://127.0.0.1:9090\""),
        )],
        Some(r) if r.is_empty() || r.starts_with('/') => {
            vec![(
                "address".into(),
                format!("`{a}` has no host, e.g. \"http://127.0.0.1:9090\""),
            )]
        }
        Some(_) => Vec::new(),
    }
}

#[cfg(target_arch = "wasm32")]
mod guest {
    use super::prom::{self, PromError};
    use super::{config_problems, Config};
    use dax_sdk::metric_provider::*;

    const SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false,"required":["address"],"properties":{"address":{"type":"string","description":"Prometheus base URL, e.g. http://127.0.0.1:9090 (grant it in grants.http)"}}}"#;

    struct Prometheus;

    impl PluginGuest for Prometheus {
        fn describe() -> PluginInfo {
            info(
                "prometheus",
                env!("CARGO_PKG_VERSION"),
                PluginRole::MetricProvider,
                "PromQL instant and range queries against a Prometheus server, with Flagger's built-in checks",
                SCHEMA,
            )
        }
        fn validate_config(config: String) -> Vec<ConfigProblem> {
            problems(config_problems(&config))
        }
    }

    impl Guest for Prometheus {
        fn run_query(config: String, q: Query) -> Result<Answer, PluginError> {
            refuse_if_invalid(config_problems(&config))?;
            let cfg: Config = parse_config(&config)?;
            let address = cfg.address.trim().trim_end_matches('/').to_string();
            let to_plugin_error = |e: PromError| match e {
                PromError::Query(m) => PluginError::InvalidInput(m),
                PromError::Unavailable(m) => PluginError::Unavailable(m),
                PromError::Config(m) => PluginError::InvalidConfig(m),
            };
            let promql = prom::render(prom::builtin(&q.text), &q.vars, q.window_ms)
                .map_err(to_plugin_error)?;
            let range = matches!(q.kind, QueryKind::Range);
            let url = if range {
                prom::range_url(&address, &promql, dax_sdk::now_ms(), q.window_ms, q.step_ms)
            } else {
                prom::instant_url(&address, &promql, dax_sdk::now_ms())
            };
            log::debug(&format!("GET {url}"));
            let resp = dax_sdk::http::get(&url, &[("accept", "application/json")]).map_err(|e| {
                if e.contains("denied") {
                    PluginError::InvalidConfig(format!(
                        "Prometheus at {address}: {e} (add \"{address}\" to this plugin's grants.http)"
                    ))
                } else {
                    PluginError::Unavailable(format!("Prometheus at {address} is unreachable: {e}"))
                }
            })?;
            let answer = prom::interpret(resp.status, &resp.text(), &promql, range)
                .map_err(to_plugin_error)?;
            Ok(match answer {
                prom::Answer::Value(v) => Answer::Value(v),
                prom::Answer::Series(s) => Answer::Series(
                    s.into_iter()
                        .map(|(timestamp_ms, value)| Sample {
                            timestamp_ms,
                            value,
                        })
                        .collect(),
                ),
                prom::Answer::NoData(why) => Answer::NoData(why),
            })
        }
    }

    dax_sdk::export_metric_provider!(Prometheus);
}
