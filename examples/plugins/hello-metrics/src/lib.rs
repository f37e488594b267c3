//! A well-behaved metric provider: answers `value:N` queries with N, `series:a,b,c` with a
//! series, and anything else with no data.
use dax_sdk::metric_provider::*;

struct Hello;

impl PluginGuest for Hello {
    fn describe() -> PluginInfo {
        info(
            "hello-metrics",
            "0.1.0",
            PluginRole::MetricProvider,
            "Echoes numbers in queries",
            "{}",
        )
    }
    fn validate_config(_config: String) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

impl Guest for Hello {
    fn run_query(_config: String, q: Query) -> Result<Answer, PluginError> {
        if let Some(v) = q.text.strip_prefix("value:") {
            return v
                .trim()
                .parse()
                .map(Answer::Value)
                .map_err(|_| PluginError::InvalidInput(format!("not a number: {v}")));
        }
        if let Some(list) = q.text.strip_prefix("series:") {
            log::info(&format!("series query {}", q.text));
            let samples = list
                .split(',')
                .enumerate()
                .map(|(i, v)| Sample {
                    timestamp_ms: i as u64 * 1000,
                    value: v.trim().parse().unwrap_or(f64::NAN),
                })
                .collect();
            return Ok(Answer::Series(samples));
        }
        Ok(Answer::NoData(format!("no series matches `{}`", q.text)))
    }
}

dax_sdk::export_metric_provider!(Hello);
