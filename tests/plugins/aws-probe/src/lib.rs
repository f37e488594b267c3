//! A target plugin that makes whatever `dax:host/aws` (or direct `wasi:http`) call a test
//! scripts, and reports the host's answer: the probe for the aws capability's grant checks.
//!
//! `status(config, app, _)` takes `app` as a JSON call, e.g.
//! `{"op":"call","service":"ecs","action":"ListClusters","region":"us-east-1","json":{}}` or
//! `{"op":"call","service":"sts","action":"GetCallerIdentity","query":{"version":"2011-06-15"}}`
//! or `{"op":"http-get","url":"http://169.254.169.254/"}`, and answers in `message`:
//! `{"ok": {"status":..,"body":..}}` or `{"err": "<variant>", "code": .., "message": ".."}`.
use dax_sdk::target::aws::{self, AwsError, AwsRequest, JsonBody, Protocol, QueryBody};
use dax_sdk::target::*;
use serde::Deserialize;
use serde_json::{json, Value};

struct Probe;

#[derive(Deserialize)]
struct Call {
    op: String,
    #[serde(default)]
    service: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    region: Option<String>,
    /// JSON protocol: the body object (target prefix defaults to ECS's).
    #[serde(default)]
    json: Option<Value>,
    #[serde(default)]
    target_prefix: Option<String>,
    /// Query protocol: `{"version": .., "params": [[k, v], ..]}`.
    #[serde(default)]
    query: Option<QueryCall>,
    #[serde(default)]
    url: String,
}

#[derive(Deserialize)]
struct QueryCall {
    version: String,
    #[serde(default)]
    params: Vec<(String, String)>,
}

fn run(call: Call) -> String {
    if call.op == "http-get" {
        return match dax_sdk::http::get(&call.url, &[]) {
            Ok(r) => json!({ "ok": { "status": r.status, "body": r.text() } }).to_string(),
            Err(e) => json!({ "err": "http", "message": e }).to_string(),
        };
    }
    let body = match (call.json, call.query) {
        (Some(j), _) => Protocol::Json(JsonBody {
            target_prefix: call
                .target_prefix
                .unwrap_or_else(|| "AmazonEC2ContainerServiceV20141113".into()),
            json_version: "1.1".into(),
            body: match j {
                Value::String(s) => s,
                other => other.to_string(),
            },
        }),
        (None, Some(q)) => Protocol::Query(QueryBody {
            version: q.version,
            params: q.params,
        }),
        (None, None) => {
            return json!({ "err": "probe", "message": "give json or query" }).to_string()
        }
    };
    let request = AwsRequest {
        service: call.service,
        action: call.action,
        region: call.region,
        body,
    };
    match aws::call(&request) {
        Ok(r) => {
            json!({ "ok": { "status": r.status, "body": r.body, "request_id": r.request_id } })
                .to_string()
        }
        Err(e) => {
            let (variant, code, message) = match e {
                AwsError::Denied(m) => ("denied", String::new(), m),
                AwsError::Service(s) => ("service", s.code, format!("{} {}", s.status, s.message)),
                AwsError::Unavailable(m) => ("unavailable", String::new(), m),
                AwsError::TooLarge(m) => ("too-large", String::new(), m),
                AwsError::Invalid(m) => ("invalid", String::new(), m),
            };
            json!({ "err": variant, "code": code, "message": message }).to_string()
        }
    }
}

impl PluginGuest for Probe {
    fn describe() -> PluginInfo {
        info(
            "aws-probe",
            "0.1.0",
            PluginRole::Target,
            "Makes the AWS calls a test scripts",
            "{}",
        )
    }
    fn validate_config(_config: String) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

impl Guest for Probe {
    fn supported_traffic(_config: String) -> Result<TrafficSupport, PluginError> {
        Ok(TrafficSupport {
            weights: false,
            header_matches: false,
            cookie_matches: false,
            mirroring: false,
            note: "a probe".into(),
        })
    }
    fn deploy(_config: String, _w: Workload) -> Result<(), PluginError> {
        Ok(())
    }
    fn set_traffic(_config: String, _app: String, _split: TrafficSplit) -> Result<(), PluginError> {
        Ok(())
    }
    fn scale(
        _config: String,
        _app: String,
        _which: Slot,
        _replicas: u32,
    ) -> Result<(), PluginError> {
        Ok(())
    }
    fn status(_config: String, app: String, _which: Slot) -> Result<WorkloadStatus, PluginError> {
        let call: Call =
            serde_json::from_str(&app).map_err(|e| PluginError::InvalidInput(e.to_string()))?;
        Ok(WorkloadStatus {
            desired: 0,
            ready: 0,
            updated: 0,
            version: String::new(),
            message: run(call),
        })
    }
    fn promote(_config: String, _app: String) -> Result<(), PluginError> {
        Ok(())
    }
    fn rollback(_config: String, _app: String) -> Result<(), PluginError> {
        Ok(())
    }
    fn finalize(_config: String, _app: String) -> Result<(), PluginError> {
        Ok(())
    }
}

dax_sdk::export_target!(Probe);
