//! `cloudwatch`: a metric provider that asks Amazon CloudWatch (`GetMetricData`) through the
//! host's `dax:host/aws` capability; the host signs the calls, the plugin never sees a key.
//!
//! Grant: `[plugins.cloudwatch.grants.aws] actions = ["cloudwatch:GetMetricData"]`,
//! `regions = [...]` (IAM's service prefix is `cloudwatch`; the host signs for, and sends
//! to, the `monitoring` endpoint).
//!
//! | key | type | default | meaning |
//! |---|---|---|---|
//! | `region` | string | the host's AWS region | region of the metrics (must be in `grants.aws.regions`) |
//! | `load_balancer` | string | – | the ALB of the built-in checks: its ARN, one of its listeners' ARNs, or its dimension `app/NAME/ID` |
//! | `candidate_target_group` | string | – | target group of the candidate (`slot = candidate`): ARN or `targetgroup/NAME/ID` |
//! | `stable_target_group` | string | – | target group of the stable version (`slot = stable`, baseline comparisons) |
//! | `duration_stat` | string | `"p99"` | statistic of `request-duration`, e.g. `"p95"`, `"Average"` |
//!
//! Queries (`[[checks]] query`):
//! - `request-success-rate`: percent of the target group's requests not answered 5XX by
//!   its targets, `100 - 100 * HTTPCode_Target_5XX_Count / RequestCount` (AWS/ApplicationELB,
//!   dimensions LoadBalancer + TargetGroup, Sum). Computed here rather than with metric math:
//!   an ALB publishes no 5XX datapoint for a minute without 5XX, which counts as 0 errors.
//! - `request-duration`: `TargetResponseTime` (`duration_stat`) in milliseconds.
//!   Both take `target_group=...` / `load_balancer=...` (and `stat=...`) after the name to
//!   override the config, e.g. `request-duration stat=p95`.
//! - GetMetricData queries as JSON, as AWS spells them (Flagger's CloudWatch format): one
//!   object or a list, e.g. `[{"Id":"e","MetricStat":{...},"ReturnData":false},
//!   {"Id":"rate","Expression":"100*e/r"}]`; exactly one returns data. A metric stat may be
//!   written flat: `{"Namespace":"AWS/SQS","MetricName":"ApproximateAgeOfOldestMessage",
//!   "Dimensions":{"QueueName":"jobs"},"Stat":"Maximum"}`.
//! - Anything else is one metric math expression that needs no other query (`SEARCH(...)`,
//!   a Metrics Insights `SELECT ...`).
//!
//! Window: the check's interval, rounded up to whole minutes and ending at the next whole
//! minute (CloudWatch periods are multiples of 60 s); an instant query asks for one period
//! that long, a range query for periods of the step (at least 60 s). A period given in a
//! JSON query is kept (1, 5, 10, 30 or a multiple of 60). No datapoints is answered as
//! explicit no-data, never as 0.

pub mod query;
pub use query_xml as xml;

#[cfg(target_arch = "wasm32")]
mod guest {
    use super::query::{self, Answer, QueryError};
    use dax_sdk::metric_provider::aws::{self, AwsError, AwsRequest, Protocol, QueryBody};
    use dax_sdk::metric_provider::*;
    use std::collections::BTreeMap;

    const SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false,"properties":{"region":{"type":"string","description":"region of the metrics; default: the host's AWS region"},"load_balancer":{"type":"string","description":"the ALB of the built-in checks: its ARN, a listener ARN, or app/NAME/ID"},"candidate_target_group":{"type":"string","description":"target group of the candidate: ARN or targetgroup/NAME/ID"},"stable_target_group":{"type":"string","description":"target group of the stable version: ARN or targetgroup/NAME/ID"},"duration_stat":{"type":"string","description":"statistic of request-duration (default p99)"}}}"#;

    struct CloudWatch;

    impl PluginGuest for CloudWatch {
        fn describe() -> PluginInfo {
            info(
                "cloudwatch",
                env!("CARGO_PKG_VERSION"),
                PluginRole::MetricProvider,
                "Amazon CloudWatch GetMetricData: metric stats, metric math, and Flagger's built-in checks for an ALB target group",
                SCHEMA,
            )
        }
        fn validate_config(config: String) -> Vec<ConfigProblem> {
            problems(query::config_problems(&config))
        }
    }

    /// The host's or AWS's refusal as a plugin error.
    fn failure(e: AwsError) -> PluginError {
        match e {
            // The message names the grant to add.
            AwsError::Denied(m) => PluginError::InvalidConfig(m),
            AwsError::Service(s) if s.code.contains("AccessDenied") || s.code == "UnauthorizedOperation" => PluginError::InvalidConfig(format!(
                "CloudWatch refused cloudwatch:GetMetricData ({}: {}): the host's AWS identity needs an IAM policy allowing it",
                s.code, s.message
            )),
            AwsError::Service(s) if s.status >= 500 || s.code.contains("Throttl") => {
                PluginError::Unavailable(format!("cloudwatch:GetMetricData: {}: {}", s.code, s.message))
            }
            AwsError::Service(s) => PluginError::InvalidInput(format!(
                "CloudWatch refused the query ({} {}): {}",
                s.status, s.code, s.message
            )),
            AwsError::Unavailable(m) | AwsError::TooLarge(m) => PluginError::Unavailable(format!("cloudwatch:GetMetricData: {m}")),
            AwsError::Invalid(m) => PluginError::Internal(format!("cloudwatch:GetMetricData: {m}")),
        }
    }

    impl Guest for CloudWatch {
        fn run_query(config: String, q: Query) -> Result<Answer_, PluginError> {
            let cfg = query::parse_config(&config).map_err(PluginError::InvalidConfig)?;
            let range = matches!(q.kind, QueryKind::Range);
            let window = query::window(dax_sdk::now_ms(), q.window_ms, q.step_ms, range);
            let slot = q
                .vars
                .iter()
                .find(|(k, _)| k == "slot")
                .map(|(_, v)| v.as_str())
                .unwrap_or("candidate");
            let plan = query::plan(&q.text, &cfg, slot, window.period_s).map_err(|e| match e {
                QueryError::Query(m) => PluginError::InvalidInput(m),
                QueryError::Config(m) => PluginError::InvalidConfig(m),
            })?;
            let mut results = BTreeMap::new();
            let mut notes = Vec::new();
            let mut token: Option<String> = None;
            for _ in 0..query::MAX_PAGES {
                let request = AwsRequest {
                    service: "cloudwatch".into(),
                    action: "GetMetricData".into(),
                    region: cfg.region.clone(),
                    body: Protocol::Query(QueryBody {
                        version: query::API_VERSION.into(),
                        params: query::params(&plan, &window, token.as_deref()),
                    }),
                };
                let answer = aws::call(&request).map_err(failure)?;
                let page = query::read_page(&answer.body, &mut results).map_err(|e| {
                    PluginError::Unavailable(format!("cloudwatch:GetMetricData: {e}"))
                })?;
                notes.extend(page.messages);
                token = page.next_token;
                if token.is_none() {
                    break;
                }
            }
            let answer = query::interpret(&plan, &results, &window, range, &notes)
                .map_err(PluginError::Unavailable)?;
            Ok(match answer {
                Answer::Value(v) => Answer_::Value(v),
                Answer::Series(s) => Answer_::Series(
                    s.into_iter()
                        .map(|(timestamp_ms, value)| Sample {
                            timestamp_ms,
                            value,
                        })
                        .collect(),
                ),
                Answer::NoData(why) => Answer_::NoData(why),
            })
        }
    }

    // The WIT `answer`, named apart from this crate's own.
    use dax_sdk::metric_provider::Answer as Answer_;

    dax_sdk::export_metric_provider!(CloudWatch);
}
