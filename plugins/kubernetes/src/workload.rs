//! The objects of Flagger's model, built from the app's Deployment `<app>`:
//! - `<app>-primary`, the stable Deployment: a copy of `<app>`'s pod template whose selector
//!   label (`app.kubernetes.io/name`, `app` or `name`) reads `<value>-primary`;
//! - `<app>` itself is the candidate: it runs `artifact` during a rollout and has 0
//!   replicas between rollouts;
//! - the Services `<app>` (apex, what clients call), `<app>-primary` and `<app>-canary`.
//!
//! Pure functions: nothing here calls the API.

use crate::api::{DEPLOYMENT, SERVICE};
use serde_json::{json, Map, Value};

/// Annotation holding the version (`[deployment] version`) a Deployment runs.
pub const VERSION: &str = "dax.dev/version";
/// Label on every object the plugin creates.
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "dax");
/// Labels that name the app, in the order Flagger's `selectorLabels` tries them.
const SELECTOR_KEYS: [&str; 3] = ["app.kubernetes.io/name", "app", "name"];

pub fn primary_name(app: &str) -> String {
    format!("{app}-primary")
}
pub fn canary_name(app: &str) -> String {
    format!("{app}-canary")
}

/// `spec.selector.matchLabels` of a Deployment; the plugin rewrites one of them for the
/// primary, so `matchExpressions` are refused.
pub fn match_labels(deployment: &Value) -> Result<Map<String, Value>, String> {
    let name = deployment["metadata"]["name"].as_str().unwrap_or("?");
    let selector = &deployment["spec"]["selector"];
    if selector
        .get("matchExpressions")
        .is_some_and(|e| e.as_array().is_some_and(|a| !a.is_empty()))
    {
        return Err(format!("Deployment {name}: spec.selector.matchExpressions is not supported; select pods with matchLabels"));
    }
    match selector["matchLabels"].as_object() {
        Some(m) if !m.is_empty() => Ok(m.clone()),
        _ => Err(format!(
            "Deployment {name} has no spec.selector.matchLabels"
        )),
    }
}

/// The label whose value tells primary pods from candidate pods.
pub fn selector_key(labels: &Map<String, Value>) -> String {
    SELECTOR_KEYS
        .iter()
        .find(|k| labels.contains_key(**k))
        .map(|k| k.to_string())
        .or_else(|| labels.keys().next().cloned())
        .unwrap_or_else(|| "app".into())
}

/// The primary's selector: the app's, with the selector label's value suffixed `-primary`.
pub fn primary_labels(labels: &Map<String, Value>) -> Map<String, Value> {
    let key = selector_key(labels);
    let mut out = labels.clone();
    let value = labels.get(&key).and_then(Value::as_str).unwrap_or_default();
    out.insert(key, Value::String(format!("{value}-primary")));
    out
}

/// The parts of a pod template worth copying (no server-set metadata).
fn clean_template(template: &Value) -> Value {
    let mut meta = Map::new();
    for key in ["labels", "annotations"] {
        if let Some(v) = template["metadata"].get(key) {
            meta.insert(key.into(), v.clone());
        }
    }
    json!({ "metadata": meta, "spec": template["spec"].clone() })
}

/// Index of the container that runs `artifact`: the named one, else the first.
pub fn container_index(template: &Value, container: Option<&str>) -> Result<usize, String> {
    let containers = template["spec"]["containers"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    if containers.is_empty() {
        return Err("the pod template has no containers".into());
    }
    match container {
        None => Ok(0),
        Some(name) => containers.iter().position(|c| c["name"] == name).ok_or_else(|| {
            let names: Vec<&str> = containers.iter().filter_map(|c| c["name"].as_str()).collect();
            format!("no container `{name}` in the pod template (it has {names:?}); fix `container` in the plugin's config")
        }),
    }
}

/// The version a Deployment runs: its `dax.dev/version` annotation, else the image of the
/// target container (a Deployment dax never rolled out).
pub fn version_of(deployment: &Value, container: Option<&str>) -> String {
    if let Some(v) = deployment["metadata"]["annotations"][VERSION].as_str() {
        return v.to_string();
    }
    let template = &deployment["spec"]["template"];
    container_index(template, container)
        .ok()
        .and_then(|i| template["spec"]["containers"][i]["image"].as_str())
        .unwrap_or_default()
        .to_string()
}

/// A Deployment spec of `replicas`, `selector` and `template`, with the rollout settings
/// (`strategy`, `minReadySeconds`, ...) of the Deployment `from` carried over.
pub fn deployment_spec(replicas: Value, selector: Value, template: Value, from: &Value) -> Value {
    let mut spec = json!({
        "replicas": replicas,
        "selector": selector,
        "template": template,
    });
    for key in [
        "strategy",
        "minReadySeconds",
        "progressDeadlineSeconds",
        "revisionHistoryLimit",
    ] {
        if let Some(v) = from["spec"].get(key) {
            spec[key] = v.clone();
        }
    }
    spec
}

/// `<app>-primary` running `template` (a candidate's or the app's pod template; its
/// selector label is rewritten here), with the app's rollout settings.
pub fn primary_deployment(
    namespace: &str,
    app: &str,
    source: &Value,
    template: &Value,
    replicas: u32,
    version: &str,
) -> Result<Value, String> {
    let labels = primary_labels(&match_labels(source)?);
    let mut template = clean_template(template);
    let meta = template["metadata"]
        .as_object_mut()
        .expect("built as an object");
    let pod_labels = meta.entry("labels").or_insert_with(|| json!({}));
    if !pod_labels.is_object() {
        *pod_labels = json!({});
    }
    for (k, v) in &labels {
        pod_labels[k] = v.clone();
    }
    let spec = deployment_spec(
        json!(replicas),
        json!({ "matchLabels": labels }),
        template,
        source,
    );
    Ok(json!({
        "apiVersion": DEPLOYMENT.api_version,
        "kind": DEPLOYMENT.kind,
        "metadata": {
            "name": primary_name(app),
            "namespace": namespace,
            "labels": { MANAGED_BY.0: MANAGED_BY.1 },
            "annotations": { VERSION: version },
        },
        "spec": spec,
    }))
}

/// What the candidate runs.
#[derive(Debug, Clone, Copy)]
pub struct Candidate<'a> {
    pub artifact: &'a str,
    pub replicas: u32,
    pub version: &'a str,
}

/// What the plugin applies to `<app>` to make it the candidate. From a manifest
/// (`[target.workload] manifest`) the whole Deployment; for a Deployment already in the
/// cluster only the fields dax owns (image, replicas, version), so the owner of the rest
/// (kubectl, a GitOps tool) keeps it.
pub fn candidate_deployment(
    namespace: &str,
    app: &str,
    manifest: Option<&Value>,
    existing_template: &Value,
    container: Option<&str>,
    run: &Candidate,
) -> Result<Value, String> {
    let Candidate {
        artifact,
        replicas,
        version,
    } = *run;
    let mut object = match manifest {
        Some(m) => {
            let mut m = m.clone();
            let meta = &mut m["metadata"];
            meta["name"] = json!(app);
            meta["namespace"] = json!(namespace);
            m["apiVersion"] = json!(DEPLOYMENT.api_version);
            m["kind"] = json!(DEPLOYMENT.kind);
            m
        }
        None => {
            let i = container_index(existing_template, container)?;
            let name = existing_template["spec"]["containers"][i]["name"].clone();
            json!({
                "apiVersion": DEPLOYMENT.api_version,
                "kind": DEPLOYMENT.kind,
                "metadata": { "name": app, "namespace": namespace },
                "spec": { "template": { "spec": { "containers": [ { "name": name } ] } } },
            })
        }
    };
    let i = match manifest {
        Some(m) => container_index(&m["spec"]["template"], container)?,
        None => 0,
    };
    object["spec"]["template"]["spec"]["containers"][i]["image"] = json!(artifact);
    object["spec"]["replicas"] = json!(replicas);
    if !object["metadata"]["annotations"].is_object() {
        object["metadata"]["annotations"] = json!({});
    }
    object["metadata"]["annotations"][VERSION] = json!(version);
    Ok(object)
}

/// `targetPort` of the Services: the config's, else the target container's first port
/// (by name when it has one), else `port`.
pub fn target_port(
    configured: Option<&Value>,
    template: &Value,
    container: Option<&str>,
    port: u16,
) -> Value {
    if let Some(p) = configured {
        return p.clone();
    }
    let first = container_index(template, container)
        .ok()
        .and_then(|i| template["spec"]["containers"][i]["ports"].get(0).cloned());
    match first {
        Some(p) => p
            .get("name")
            .filter(|n| n.is_string())
            .or_else(|| p.get("containerPort"))
            .cloned()
            .unwrap_or(json!(port)),
        None => json!(port),
    }
}

/// A ClusterIP Service selecting `selector`.
pub fn service(
    namespace: &str,
    name: &str,
    selector: &Map<String, Value>,
    port: u16,
    target_port: &Value,
) -> Value {
    json!({
        "apiVersion": SERVICE.api_version,
        "kind": SERVICE.kind,
        "metadata": { "name": name, "namespace": namespace, "labels": { MANAGED_BY.0: MANAGED_BY.1 } },
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [ { "name": "http", "protocol": "TCP", "port": port, "targetPort": target_port } ],
        },
    })
}

/// `[target.workload] manifest`: a Deployment as a table, or as JSON text (e.g. from
/// `manifest = "${file:web.json}"`). `None` when absent.
pub fn manifest(spec: &Value, app: &str) -> Result<Option<Value>, String> {
    let m = match spec.get("manifest") {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::String(text)) => serde_json::from_str::<Value>(text).map_err(|e| {
            format!("[target.workload] manifest is not JSON: {e} (give a table or JSON text)")
        })?,
        Some(v) => v.clone(),
    };
    if m["kind"] != "Deployment" {
        return Err(format!(
            "[target.workload] manifest must be a Deployment, not `{}`",
            m["kind"].as_str().unwrap_or("?")
        ));
    }
    if let Some(name) = m["metadata"]["name"].as_str() {
        if name != app {
            return Err(format!("[target.workload] manifest names Deployment `{name}`, but [deployment] app is `{app}`"));
        }
    }
    match_labels(&json!({"metadata": {"name": app}, "spec": m["spec"].clone()}))?;
    container_index(&m["spec"]["template"], None)?;
    Ok(Some(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app() -> Value {
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "namespace": "shop", "uid": "x", "resourceVersion": "7"},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "50%", "maxUnavailable": 0}},
                "template": {
                    "metadata": {"labels": {"app": "web", "tier": "fe"}, "creationTimestamp": null},
                    "spec": {"containers": [
                        {"name": "web", "image": "shop/web:v1", "ports": [{"name": "http", "containerPort": 8080}]},
                        {"name": "sidecar", "image": "proxy:1"}
                    ]}
                }
            }
        })
    }

    #[test]
    fn primary_relabels_selector_and_pods_and_keeps_rollout_settings() {
        let a = app();
        let p = primary_deployment("shop", "web", &a, &a["spec"]["template"], 3, "v1").unwrap();
        assert_eq!(p["metadata"]["name"], "web-primary");
        assert_eq!(
            p["spec"]["selector"]["matchLabels"],
            json!({"app": "web-primary"})
        );
        assert_eq!(
            p["spec"]["template"]["metadata"]["labels"],
            json!({"app": "web-primary", "tier": "fe"})
        );
        assert!(p["spec"]["template"]["metadata"]
            .get("creationTimestamp")
            .is_none());
        assert_eq!(p["spec"]["strategy"]["rollingUpdate"]["maxSurge"], "50%");
        assert_eq!(p["metadata"]["annotations"][VERSION], "v1");
        assert!(p["metadata"].get("uid").is_none());
    }

    #[test]
    fn selector_key_prefers_the_well_known_labels() {
        let m = |v: Value| v.as_object().unwrap().clone();
        assert_eq!(selector_key(&m(json!({"tier": "fe", "app": "web"}))), "app");
        assert_eq!(
            selector_key(&m(json!({"app": "x", "app.kubernetes.io/name": "web"}))),
            "app.kubernetes.io/name"
        );
        assert_eq!(selector_key(&m(json!({"tier": "fe"}))), "tier");
        let expr = json!({"metadata": {"name": "web"}, "spec": {"selector": {"matchExpressions": [{"key": "app"}]}}});
        assert!(match_labels(&expr)
            .unwrap_err()
            .contains("matchExpressions is not supported"));
    }

    #[test]
    fn candidate_from_the_cluster_sets_only_what_dax_owns() {
        let a = app();
        let c = candidate_deployment(
            "shop",
            "web",
            None,
            &a["spec"]["template"],
            Some("web"),
            &Candidate {
                artifact: "shop/web:v2",
                replicas: 2,
                version: "v2",
            },
        )
        .unwrap();
        assert_eq!(
            c,
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": "web", "namespace": "shop", "annotations": {VERSION: "v2"}},
                "spec": {"replicas": 2, "template": {"spec": {"containers": [{"name": "web", "image": "shop/web:v2"}]}}}})
        );
        let e = candidate_deployment(
            "shop",
            "web",
            None,
            &a["spec"]["template"],
            Some("nope"),
            &Candidate {
                artifact: "x",
                replicas: 1,
                version: "v2",
            },
        )
        .unwrap_err();
        assert!(
            e.contains("no container `nope`") && e.contains("\"sidecar\""),
            "{e}"
        );
    }

    #[test]
    fn candidate_from_a_manifest_is_the_whole_manifest_with_the_artifact() {
        let a = app();
        let c = candidate_deployment(
            "shop",
            "web",
            Some(&a),
            &Value::Null,
            Some("sidecar"),
            &Candidate {
                artifact: "proxy:2",
                replicas: 1,
                version: "v2",
            },
        )
        .unwrap();
        assert_eq!(
            c["spec"]["template"]["spec"]["containers"][1]["image"],
            "proxy:2"
        );
        assert_eq!(
            c["spec"]["template"]["spec"]["containers"][0]["image"],
            "shop/web:v1"
        );
        assert_eq!(c["spec"]["selector"], a["spec"]["selector"]);
        assert_eq!(c["spec"]["replicas"], 1);
    }

    #[test]
    fn version_and_target_port() {
        let mut a = app();
        assert_eq!(version_of(&a, None), "shop/web:v1");
        a["metadata"]["annotations"] = json!({VERSION: "v1"});
        assert_eq!(version_of(&a, None), "v1");
        assert_eq!(
            target_port(None, &a["spec"]["template"], None, 80),
            json!("http")
        );
        assert_eq!(
            target_port(None, &a["spec"]["template"], Some("sidecar"), 80),
            json!(80)
        );
        assert_eq!(
            target_port(Some(&json!(9090)), &a["spec"]["template"], None, 80),
            json!(9090)
        );
    }

    #[test]
    fn manifests_are_checked() {
        assert_eq!(manifest(&json!({}), "web").unwrap(), None);
        let text = app().to_string();
        assert!(manifest(&json!({ "manifest": text }), "web")
            .unwrap()
            .is_some());
        assert!(manifest(&json!({"manifest": "{"}), "web")
            .unwrap_err()
            .contains("not JSON"));
        assert!(manifest(&json!({"manifest": {"kind": "Service"}}), "web")
            .unwrap_err()
            .contains("must be a Deployment"));
        assert!(manifest(&json!({ "manifest": app() }), "shop")
            .unwrap_err()
            .contains("app is `shop`"));
    }
}
