//! An HPA scaling `<app>` is mirrored as `<hpa>-primary` scaling `<app>-primary` (Flagger's
//! `autoscalerRef`): between rollouts the primary serves and must scale the same way.

use crate::api::HPA;
use crate::workload::{primary_name, MANAGED_BY};
use serde_json::{json, Value};

/// The HPA among `hpas` whose scale target is the Deployment `app`.
pub fn find<'a>(hpas: &'a [Value], app: &str) -> Option<&'a Value> {
    hpas.iter().find(|h| {
        let t = &h["spec"]["scaleTargetRef"];
        t["kind"] == "Deployment" && t["name"] == app
    })
}

/// The primary's copy of `hpa`.
pub fn primary_hpa(hpa: &Value, app: &str, namespace: &str) -> Value {
    let name = hpa["metadata"]["name"].as_str().unwrap_or(app);
    let mut spec = hpa["spec"].clone();
    spec["scaleTargetRef"]["name"] = json!(primary_name(app));
    json!({
        "apiVersion": HPA.api_version,
        "kind": HPA.kind,
        "metadata": { "name": format!("{name}-primary"), "namespace": namespace, "labels": { MANAGED_BY.0: MANAGED_BY.1 } },
        "spec": spec,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_the_hpa_of_the_app_onto_the_primary() {
        let hpas = vec![
            json!({"metadata": {"name": "other"}, "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "api"}}}),
            json!({"metadata": {"name": "web"}, "spec": {"minReplicas": 2, "maxReplicas": 5,
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"}}}),
        ];
        let h = find(&hpas, "web").unwrap();
        let p = primary_hpa(h, "web", "shop");
        assert_eq!(p["metadata"]["name"], "web-primary");
        assert_eq!(p["spec"]["scaleTargetRef"]["name"], "web-primary");
        assert_eq!(p["spec"]["maxReplicas"], 5);
        assert!(find(&hpas, "db").is_none());
    }
}
