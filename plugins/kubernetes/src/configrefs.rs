//! ConfigMaps and Secrets the pod spec references, copied for the primary as Flagger's
//! config tracking does: at promotion `<name>` is copied to `<name>-primary` and the
//! primary's pod spec points at the copy, so a later edit of `<name>` (for the next
//! candidate) does not reach the running primary before it is promoted.
//!
//! A ConfigMap or Secret annotated `dax.dev/config-tracking: disabled` is shared as is.

use crate::api::{CONFIG_MAP, SECRET};
use crate::workload::MANAGED_BY;
use serde_json::{json, Value};

pub const TRACKING_OFF: &str = "dax.dev/config-tracking";
/// On a copy: the name of the original, and the app whose primary uses it.
pub const COPY_OF: &str = "dax.dev/copy-of";
pub const COPY_FOR: &str = "dax.dev/copy-for";

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RefKind {
    ConfigMap,
    Secret,
}

impl RefKind {
    pub fn kind(self) -> crate::api::Kind {
        match self {
            RefKind::ConfigMap => CONFIG_MAP,
            RefKind::Secret => SECRET,
        }
    }
}

/// Every place in a pod spec that names a ConfigMap or Secret, as a pointer to the string.
fn ref_paths(pod: &Value) -> Vec<(RefKind, String)> {
    let mut out = Vec::new();
    for (i, v) in pod["volumes"].as_array().into_iter().flatten().enumerate() {
        if v.get("configMap").is_some() {
            out.push((RefKind::ConfigMap, format!("/volumes/{i}/configMap/name")));
        }
        if v.get("secret").is_some() {
            out.push((RefKind::Secret, format!("/volumes/{i}/secret/secretName")));
        }
        for (j, s) in v["projected"]["sources"]
            .as_array()
            .into_iter()
            .flatten()
            .enumerate()
        {
            if s.get("configMap").is_some() {
                out.push((
                    RefKind::ConfigMap,
                    format!("/volumes/{i}/projected/sources/{j}/configMap/name"),
                ));
            }
            if s.get("secret").is_some() {
                out.push((
                    RefKind::Secret,
                    format!("/volumes/{i}/projected/sources/{j}/secret/name"),
                ));
            }
        }
    }
    for list in ["containers", "initContainers"] {
        for (i, c) in pod[list].as_array().into_iter().flatten().enumerate() {
            for (j, e) in c["envFrom"].as_array().into_iter().flatten().enumerate() {
                if e.get("configMapRef").is_some() {
                    out.push((
                        RefKind::ConfigMap,
                        format!("/{list}/{i}/envFrom/{j}/configMapRef/name"),
                    ));
                }
                if e.get("secretRef").is_some() {
                    out.push((
                        RefKind::Secret,
                        format!("/{list}/{i}/envFrom/{j}/secretRef/name"),
                    ));
                }
            }
            for (j, e) in c["env"].as_array().into_iter().flatten().enumerate() {
                if e["valueFrom"].get("configMapKeyRef").is_some() {
                    out.push((
                        RefKind::ConfigMap,
                        format!("/{list}/{i}/env/{j}/valueFrom/configMapKeyRef/name"),
                    ));
                }
                if e["valueFrom"].get("secretKeyRef").is_some() {
                    out.push((
                        RefKind::Secret,
                        format!("/{list}/{i}/env/{j}/valueFrom/secretKeyRef/name"),
                    ));
                }
            }
        }
    }
    out
}

/// The ConfigMaps and Secrets a pod spec references, sorted, without duplicates.
pub fn references(pod: &Value) -> Vec<(RefKind, String)> {
    let mut out: Vec<(RefKind, String)> = ref_paths(pod)
        .into_iter()
        .filter_map(|(k, p)| Some((k, pod.pointer(&p)?.as_str()?.to_string())))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Point the pod spec's references in `renamed` at `<name>-primary`.
pub fn point_at_copies(pod: &mut Value, renamed: &[(RefKind, String)]) {
    for (kind, path) in ref_paths(pod) {
        if let Some(v) = pod.pointer_mut(&path) {
            if let Some(name) = v.as_str() {
                if renamed.iter().any(|(k, n)| *k == kind && n == name) {
                    *v = json!(copy_name(name));
                }
            }
        }
    }
}

pub fn copy_name(name: &str) -> String {
    format!("{name}-primary")
}

/// Whether the object opted out of being copied.
pub fn tracked(object: &Value) -> bool {
    object["metadata"]["annotations"][TRACKING_OFF] != "disabled"
}

/// The primary's copy of a ConfigMap or Secret.
/// `app` is recorded so `finalize` deletes only its own unused copies.
pub fn copy(kind: RefKind, source: &Value, namespace: &str, app: &str) -> Value {
    let name = source["metadata"]["name"].as_str().unwrap_or_default();
    let k = kind.kind();
    let mut out = json!({
        "apiVersion": k.api_version,
        "kind": k.kind,
        "metadata": {
            "name": copy_name(name),
            "namespace": namespace,
            "labels": { MANAGED_BY.0: MANAGED_BY.1 },
            "annotations": { COPY_OF: name, COPY_FOR: app },
        },
    });
    for key in ["data", "binaryData", "stringData", "type", "immutable"] {
        if let Some(v) = source.get(key) {
            out[key] = v.clone();
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod() -> Value {
        json!({
            "volumes": [
                {"name": "a", "configMap": {"name": "settings"}},
                {"name": "b", "secret": {"secretName": "tls"}},
                {"name": "c", "projected": {"sources": [{"configMap": {"name": "extra"}}, {"secret": {"name": "token"}}]}},
                {"name": "d", "emptyDir": {}}
            ],
            "containers": [{
                "name": "web",
                "envFrom": [{"configMapRef": {"name": "settings"}}, {"secretRef": {"name": "creds"}}],
                "env": [{"name": "X", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "x"}}},
                        {"name": "Y", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}]
            }],
            "initContainers": [{"name": "init", "env": [{"name": "Z", "valueFrom": {"configMapKeyRef": {"name": "boot", "key": "z"}}}]}]
        })
    }

    #[test]
    fn finds_every_kind_of_reference_once() {
        let refs = references(&pod());
        let names: Vec<String> = refs.iter().map(|(k, n)| format!("{k:?}/{n}")).collect();
        assert_eq!(
            names,
            [
                "ConfigMap/boot",
                "ConfigMap/extra",
                "ConfigMap/settings",
                "Secret/creds",
                "Secret/tls",
                "Secret/token"
            ]
        );
    }

    #[test]
    fn rewrites_only_the_copied_ones() {
        let mut p = pod();
        point_at_copies(
            &mut p,
            &[
                (RefKind::ConfigMap, "settings".into()),
                (RefKind::Secret, "creds".into()),
            ],
        );
        assert_eq!(p["volumes"][0]["configMap"]["name"], "settings-primary");
        assert_eq!(
            p["containers"][0]["envFrom"][0]["configMapRef"]["name"],
            "settings-primary"
        );
        assert_eq!(
            p["containers"][0]["envFrom"][1]["secretRef"]["name"],
            "creds-primary"
        );
        assert_eq!(
            p["containers"][0]["env"][0]["valueFrom"]["secretKeyRef"]["name"],
            "creds-primary"
        );
        assert_eq!(p["volumes"][1]["secret"]["secretName"], "tls");
        assert_eq!(
            p["initContainers"][0]["env"][0]["valueFrom"]["configMapKeyRef"]["name"],
            "boot"
        );
    }

    #[test]
    fn copies_data_not_identity() {
        let s = json!({"metadata": {"name": "creds", "uid": "u", "resourceVersion": "3"}, "type": "Opaque", "data": {"k": "dg=="}});
        let c = copy(RefKind::Secret, &s, "shop", "web");
        assert_eq!(c["metadata"]["annotations"][COPY_FOR], "web");
        assert_eq!(c["metadata"]["name"], "creds-primary");
        assert_eq!(c["data"], json!({"k": "dg=="}));
        assert_eq!(c["type"], "Opaque");
        assert!(c["metadata"].get("uid").is_none());
        assert!(!tracked(
            &json!({"metadata": {"annotations": {TRACKING_OFF: "disabled"}}})
        ));
    }
}
