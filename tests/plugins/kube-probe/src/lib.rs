//! A target plugin that makes whatever `dax:host/kube` (or direct `wasi:http`) call a test
//! scripts, and reports the host's answer: the probe for the kube capability's grant checks.
//!
//! `status(config, app, _)` takes `app` as a JSON call, e.g.
//! `{"op":"get","api_version":"apps/v1","kind":"Deployment","namespace":"shop","name":"web"}`
//! (ops: get, get-status, list, apply, patch-merge, patch-json, delete, http-get), and answers
//! in `message`: `{"ok": ...}` or `{"err": "<variant>", "message": "..."}`.
use dax_sdk::target::kube::{self, KindRef, KubeError, ListOptions, PatchBody};
use dax_sdk::target::*;
use serde::Deserialize;
use serde_json::{json, Value};

struct Probe;

#[derive(Deserialize)]
struct Call {
    op: String,
    #[serde(default)]
    api_version: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    name: String,
    /// Object (apply), patch body, selector (list) or URL (http-get).
    #[serde(default)]
    body: Value,
    #[serde(default)]
    force: bool,
}

fn report(result: Result<Value, KubeError>) -> String {
    match result {
        Ok(v) => json!({ "ok": v }).to_string(),
        Err(e) => {
            let (variant, message) = match e {
                KubeError::Denied(m) => ("denied", m),
                KubeError::NotFound(m) => ("not-found", m),
                KubeError::Api(s) => ("api", format!("{} {}: {}", s.code, s.reason, s.message)),
                KubeError::Unavailable(m) => ("unavailable", m),
                KubeError::TooLarge(m) => ("too-large", m),
                KubeError::Invalid(m) => ("invalid", m),
            };
            json!({ "err": variant, "message": message }).to_string()
        }
    }
}

fn text(s: String) -> Value {
    serde_json::from_str(&s).unwrap_or(Value::String(s))
}

fn run(call: Call) -> String {
    let of = KindRef {
        api_version: call.api_version.clone(),
        kind: call.kind.clone(),
        namespace: call.namespace.clone(),
    };
    let body_text = || match &call.body {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let result = match call.op.as_str() {
        "get" => kube::get(&of, &call.name).map(text),
        "get-status" => kube::get_status(&of, &call.name).map(text),
        "list" => kube::list(
            &of,
            &ListOptions {
                label_selector: call.body.as_str().map(str::to_string),
                field_selector: None,
            },
        )
        .map(
            |s| json!({ "bytes": s.len(), "items": text(s)["items"].as_array().map(|a| a.len()) }),
        ),
        "apply" => kube::apply(&body_text(), call.force).map(text),
        "patch-merge" => kube::patch(&of, &call.name, &PatchBody::Merge(body_text())).map(text),
        "patch-json" => kube::patch(&of, &call.name, &PatchBody::Json(body_text())).map(text),
        "delete" => kube::delete(&of, &call.name).map(Value::Bool),
        "http-get" => {
            let url = call.body.as_str().unwrap_or_default();
            return match dax_sdk::http::get(url, &[]) {
                Ok(r) => json!({ "ok": { "status": r.status, "body": r.text() } }).to_string(),
                Err(e) => json!({ "err": "http", "message": e }).to_string(),
            };
        }
        other => {
            return json!({ "err": "probe", "message": format!("unknown op {other}") }).to_string()
        }
    };
    report(result)
}

impl PluginGuest for Probe {
    fn describe() -> PluginInfo {
        info(
            "kube-probe",
            "0.1.0",
            PluginRole::Target,
            "Makes the Kubernetes calls a test scripts",
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
