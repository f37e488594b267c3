//! The target calls against an in-memory API whose Deployments finish rolling out at once.

use super::*;
use crate::api::{Kind, HTTP_ROUTE, INGRESS, SERVICE};
use dax_sdk::target::TrafficSplit;
use std::collections::BTreeMap;

#[derive(Default)]
struct Fake {
    objects: BTreeMap<(String, String), Value>,
    requests: u32,
    /// Deployments whose rollout never finishes.
    stuck: Vec<String>,
    clock: u64,
    /// A kind the grant does not cover: every call on it is refused.
    denied: Option<&'static str>,
}

/// Merge `b` into `a` (maps recursively, lists of named objects by name as server-side
/// apply does for containers, everything else replaced; `null` removes).
fn merge(a: &mut Value, b: &Value) {
    let named = |v: &Value| {
        v.as_array()
            .is_some_and(|l| l.iter().all(|x| x["name"].is_string()))
    };
    if named(a) && named(b) && a.as_array().is_some_and(|l| !l.is_empty()) {
        let list = a.as_array_mut().unwrap();
        for item in b.as_array().unwrap() {
            match list.iter_mut().find(|x| x["name"] == item["name"]) {
                Some(x) => merge(x, item),
                None => list.push(item.clone()),
            }
        }
        return;
    }
    match (a.as_object_mut(), b.as_object()) {
        (Some(am), Some(bm)) => {
            for (k, v) in bm {
                if v.is_null() {
                    am.remove(k);
                } else {
                    merge(am.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *a = b.clone(),
    }
}

impl Fake {
    fn key(kind: Kind, name: &str) -> (String, String) {
        (kind.kind.to_string(), name.to_string())
    }
    fn obj(&self, kind: Kind, name: &str) -> Option<&Value> {
        self.objects.get(&Self::key(kind, name))
    }
    fn with_status(&self, mut v: Value) -> Value {
        if v["kind"] == "Deployment" {
            let name = v["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let n = v["spec"]["replicas"].as_u64().unwrap_or(1);
            let g = v["metadata"]["generation"].clone();
            v["status"] = if self.stuck.contains(&name) {
                json!({"observedGeneration": g, "replicas": n, "updatedReplicas": 0, "availableReplicas": 0})
            } else {
                json!({"observedGeneration": g, "replicas": n, "updatedReplicas": n, "availableReplicas": n})
            };
        }
        v
    }
    fn store(&mut self, kind: Kind, name: &str, v: Value) -> Value {
        let mut v = v;
        let old = self.obj(kind, name).cloned().unwrap_or(Value::Null);
        let generation = old["metadata"]["generation"].as_u64().unwrap_or(0);
        v["metadata"]["generation"] = json!(generation);
        if v != old {
            v["metadata"]["generation"] = json!(generation + 1);
        }
        self.objects.insert(Self::key(kind, name), v.clone());
        self.with_status(v)
    }
}

impl Api for Fake {
    fn get(&mut self, kind: Kind, name: &str) -> Result<Option<Value>, PluginError> {
        self.requests += 1;
        Ok(self.obj(kind, name).cloned().map(|v| self.with_status(v)))
    }
    fn list(&mut self, kind: Kind) -> Result<Vec<Value>, PluginError> {
        self.requests += 1;
        Ok(self
            .objects
            .iter()
            .filter(|((k, _), _)| k == kind.kind)
            .map(|(_, v)| v.clone())
            .collect())
    }
    fn apply(&mut self, object: Value) -> Result<Value, PluginError> {
        self.requests += 1;
        let kind = crate::api::kind_of(&object);
        if self.denied == Some(kind.kind) {
            return Err(PluginError::InvalidConfig(format!(
                "{} not granted",
                kind.grant
            )));
        }
        let name = object["metadata"]["name"].as_str().unwrap().to_string();
        let mut v = self.obj(kind, &name).cloned().unwrap_or(json!({}));
        // Good enough for these tests: the plugin owns whole objects it applies, except the
        // candidate `<app>` (image, replicas and version only), which is merged.
        if kind != DEPLOYMENT || object["spec"].get("selector").is_some() {
            v = json!({"metadata": {"generation": v["metadata"]["generation"].clone()}});
        }
        merge(&mut v, &object);
        Ok(self.store(kind, &name, v))
    }
    fn merge_patch(&mut self, kind: Kind, name: &str, patch: Value) -> Result<Value, PluginError> {
        self.requests += 1;
        let mut v = self
            .obj(kind, name)
            .cloned()
            .ok_or_else(|| PluginError::NotFound(name.into()))?;
        merge(&mut v, &patch);
        Ok(self.store(kind, name, v))
    }
    fn delete(&mut self, kind: Kind, name: &str) -> Result<bool, PluginError> {
        self.requests += 1;
        Ok(self.objects.remove(&Self::key(kind, name)).is_some())
    }
    fn namespace(&self) -> &str {
        "shop"
    }
    fn sleep_ms(&mut self, ms: u64) {
        self.clock += ms;
    }
    fn now_ms(&mut self) -> u64 {
        self.clock
    }
}

fn app() -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "web", "namespace": "shop"},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {
                    "containers": [{"name": "web", "image": "shop/web:v1", "ports": [{"containerPort": 8080}],
                        "envFrom": [{"configMapRef": {"name": "settings"}}]}]
                }
            }
        }
    })
}

fn cluster() -> Fake {
    let mut f = Fake::default();
    f.store(DEPLOYMENT, "web", app());
    f.store(
        crate::api::CONFIG_MAP,
        "settings",
        json!({"kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"color": "blue"}}),
    );
    f.store(
        HPA,
        "web",
        json!({"kind": "HorizontalPodAutoscaler", "metadata": {"name": "web"}, "spec": {"maxReplicas": 4, "scaleTargetRef": {"kind": "Deployment", "name": "web"}}}),
    );
    f
}

fn cfg(router: &str) -> Config {
    let extra = if router == "gateway-api" {
        r#","gateway_api":{"parent_refs":[{"name":"gw"}]}"#
    } else {
        ""
    };
    Config::parse(&format!(
        r#"{{"namespace":"shop","router":"{router}"{extra}}}"#
    ))
    .unwrap()
}

fn v2() -> Rollout<'static> {
    static SPEC: std::sync::OnceLock<Value> = std::sync::OnceLock::new();
    Rollout {
        app: "web",
        version: "v2",
        artifact: "shop/web:v2",
        replicas: 1,
        spec: SPEC.get_or_init(|| json!({})),
    }
}

fn image(f: &Fake, name: &str) -> String {
    f.obj(DEPLOYMENT, name).unwrap()["spec"]["template"]["spec"]["containers"][0]["image"]
        .as_str()
        .unwrap()
        .to_string()
}

fn weights(f: &Fake) -> Vec<u64> {
    let r = f.obj(HTTP_ROUTE, "web").unwrap();
    let rules = r["spec"]["rules"].as_array().unwrap();
    rules.last().unwrap()["backendRefs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["weight"].as_u64().unwrap())
        .collect()
}

#[test]
fn deploy_bootstraps_the_primary_from_the_app_and_starts_the_candidate() {
    let mut f = cluster();
    let c = cfg("gateway-api");
    let before = status(&mut f, &c, "web", Slot::Stable).unwrap();
    assert_eq!(
        (before.0.desired, before.1.as_str()),
        (3, "shop/web:v1"),
        "before the first rollout the app is the stable"
    );
    deploy(&mut f, &c, &v2()).unwrap();
    let p = f.obj(DEPLOYMENT, "web-primary").unwrap();
    assert_eq!(image(&f, "web-primary"), "shop/web:v1");
    assert_eq!(p["spec"]["replicas"], 3);
    assert_eq!(p["metadata"]["annotations"][VERSION], "shop/web:v1");
    // The primary reads its own copy of the ConfigMap.
    assert_eq!(
        p["spec"]["template"]["spec"]["containers"][0]["envFrom"][0]["configMapRef"]["name"],
        "settings-primary"
    );
    assert_eq!(
        f.obj(crate::api::CONFIG_MAP, "settings-primary").unwrap()["data"]["color"],
        "blue"
    );
    assert_eq!(
        f.obj(HPA, "web-primary").unwrap()["spec"]["scaleTargetRef"]["name"],
        "web-primary"
    );
    assert_eq!(image(&f, "web"), "shop/web:v2");
    assert_eq!(f.obj(DEPLOYMENT, "web").unwrap()["spec"]["replicas"], 1);
    assert_eq!(
        f.obj(SERVICE, "web").unwrap()["spec"]["selector"],
        json!({"app": "web-primary"})
    );
    assert_eq!(
        f.obj(SERVICE, "web-canary").unwrap()["spec"]["selector"],
        json!({"app": "web"})
    );
    assert_eq!(
        f.obj(SERVICE, "web-primary").unwrap()["spec"]["ports"][0]["targetPort"],
        8080
    );
    assert_eq!(weights(&f), [100, 0]);
    let (s, version) = status(&mut f, &c, "web", Slot::Candidate).unwrap();
    assert_eq!((s.ready, s.desired, version.as_str()), (1, 1, "v2"));
}

#[test]
fn a_canary_promotes_and_repeating_any_call_changes_nothing() {
    let mut f = cluster();
    let c = cfg("gateway-api");
    deploy(&mut f, &c, &v2()).unwrap();
    deploy(&mut f, &c, &v2()).unwrap();
    for w in [10, 30] {
        routers::set(
            &mut f,
            &c,
            "web",
            &TrafficSplit {
                candidate_weight: w,
                matches: vec![],
                mirror_percent: 0,
            },
        )
        .unwrap();
        assert_eq!(weights(&f), [100 - w as u64, w as u64]);
    }
    // The next candidate's config must not reach the primary before promotion.
    f.store(
        crate::api::CONFIG_MAP,
        "settings",
        json!({"kind": "ConfigMap", "metadata": {"name": "settings"}, "data": {"color": "green"}}),
    );
    promote(&mut f, &c, "web").unwrap();
    let once = f.objects.clone();
    promote(&mut f, &c, "web").unwrap();
    finalize(&mut f, &c, "web").unwrap();
    finalize(&mut f, &c, "web").unwrap();
    assert_eq!(image(&f, "web-primary"), "shop/web:v2");
    assert_eq!(
        f.obj(crate::api::CONFIG_MAP, "settings-primary").unwrap()["data"]["color"],
        "green"
    );
    let p = f.obj(DEPLOYMENT, "web-primary").unwrap();
    assert_eq!(p["metadata"]["annotations"][VERSION], "v2");
    assert!(p["metadata"]["annotations"].get(PROMOTING).is_none(), "{p}");
    assert_eq!(
        p["spec"]["template"]["metadata"]["labels"]["app"],
        "web-primary"
    );
    assert_eq!(f.obj(DEPLOYMENT, "web").unwrap()["spec"]["replicas"], 0);
    assert_eq!(weights(&f), [100, 0]);
    let stable = status(&mut f, &c, "web", Slot::Stable).unwrap();
    assert_eq!(stable.1, "v2");
    let cand = status(&mut f, &c, "web", Slot::Candidate).unwrap();
    assert_eq!((cand.0.desired, cand.1.as_str()), (0, ""));
    for (k, v) in &once {
        if k.0 != "Deployment" {
            assert_eq!(Some(v), f.objects.get(k), "{k:?} changed");
        }
    }
}

#[test]
fn a_promotion_cut_short_is_undone_by_rollback() {
    let mut f = cluster();
    let c = cfg("service");
    deploy(&mut f, &c, &v2()).unwrap();
    f.stuck.push("web-primary".into());
    let e = promote(&mut f, &c, "web").unwrap_err();
    assert!(
        format!("{e:?}").contains("did not finish rolling out within promotion_timeout = 8s"),
        "{e:?}"
    );
    assert_eq!(image(&f, "web-primary"), "shop/web:v2");
    f.stuck.clear();
    rollback(&mut f, &c, "web").unwrap();
    assert_eq!(image(&f, "web-primary"), "shop/web:v1");
    let p = f.obj(DEPLOYMENT, "web-primary").unwrap();
    assert_eq!(p["metadata"]["annotations"][VERSION], "shop/web:v1");
    assert!(p["metadata"]["annotations"].get(PROMOTING).is_none());
    assert_eq!(f.obj(DEPLOYMENT, "web").unwrap()["spec"]["replicas"], 0);
    assert_eq!(
        f.obj(SERVICE, "web").unwrap()["spec"]["selector"],
        json!({"app": "web-primary"})
    );
}

#[test]
fn the_service_router_switches_the_apex_selector_only_all_or_nothing() {
    let mut f = cluster();
    let c = cfg("service");
    deploy(&mut f, &c, &v2()).unwrap();
    routers::set(
        &mut f,
        &c,
        "web",
        &TrafficSplit {
            candidate_weight: 100,
            matches: vec![],
            mirror_percent: 0,
        },
    )
    .unwrap();
    assert_eq!(
        f.obj(SERVICE, "web").unwrap()["spec"]["selector"],
        json!({"app": "web"})
    );
    let e = routers::set(
        &mut f,
        &c,
        "web",
        &TrafficSplit {
            candidate_weight: 50,
            matches: vec![],
            mirror_percent: 0,
        },
    )
    .unwrap_err();
    let PluginError::Unsupported(m) = e else {
        panic!("{e:?}")
    };
    assert!(
        m.contains("not a 50% weight; use router \"gateway-api\""),
        "{m}"
    );
    rollback(&mut f, &c, "web").unwrap();
    assert_eq!(
        f.obj(SERVICE, "web").unwrap()["spec"]["selector"],
        json!({"app": "web-primary"})
    );
}

#[test]
fn nginx_finalize_removes_the_canary_ingress() {
    let mut f = cluster();
    f.store(
        INGRESS,
        "web",
        json!({"kind": "Ingress", "metadata": {"name": "web"}, "spec": {"rules": [{"http": {"paths": [{"path": "/", "backend": {"service": {"name": "web"}}}]}}]}}),
    );
    let c = cfg("nginx");
    deploy(&mut f, &c, &v2()).unwrap();
    routers::set(
        &mut f,
        &c,
        "web",
        &TrafficSplit {
            candidate_weight: 40,
            matches: vec![],
            mirror_percent: 0,
        },
    )
    .unwrap();
    assert_eq!(
        f.obj(INGRESS, "web-canary").unwrap()["metadata"]["annotations"]
            ["nginx.ingress.kubernetes.io/canary-weight"],
        "40"
    );
    promote(&mut f, &c, "web").unwrap();
    finalize(&mut f, &c, "web").unwrap();
    assert!(f.obj(INGRESS, "web-canary").is_none());
}

#[test]
fn a_missing_app_says_how_to_provide_it() {
    let mut f = Fake::default();
    let e = deploy(&mut f, &cfg("service"), &v2()).unwrap_err();
    assert!(
        format!("{e:?}").contains(
            "Deployment web not found in namespace shop: create it, or give its manifest"
        ),
        "{e:?}"
    );
}

#[test]
fn api_requests_per_call() {
    let mut f = cluster();
    let c = cfg("gateway-api");
    deploy(&mut f, &c, &v2()).unwrap();
    f.requests = 0;
    routers::set(
        &mut f,
        &c,
        "web",
        &TrafficSplit {
            candidate_weight: 10,
            matches: vec![],
            mirror_percent: 0,
        },
    )
    .unwrap();
    assert_eq!(f.requests, 1, "set-traffic with gateway-api is one apply");
    f.requests = 0;
    status(&mut f, &c, "web", Slot::Candidate).unwrap();
    assert_eq!(f.requests, 1, "status is one get");
}

#[test]
fn rollback_scales_the_candidate_down_even_when_the_route_is_refused() {
    let mut f = cluster();
    let c = cfg("gateway-api");
    deploy(&mut f, &c, &v2()).unwrap();
    f.denied = Some("HTTPRoute");
    let e = rollback(&mut f, &c, "web").unwrap_err();
    assert!(
        format!("{e:?}").contains("gateway.networking.k8s.io/httproutes not granted"),
        "{e:?}"
    );
    assert_eq!(f.obj(DEPLOYMENT, "web").unwrap()["spec"]["replicas"], 0);
}
