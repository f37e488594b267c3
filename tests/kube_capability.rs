//! `dax:host/kube` against a real API server (tests/k8s): what a grant lets through, and every
//! way a hostile plugin tries to get past it. The probe plugin (tests/plugins/kube-probe)
//! makes the calls; the host answers. The plugin holds no credential throughout.
//!
//! Skipped locally when tests/k8s/build.sh has not run; a failure under `CI=true`.

use dax::contract::Slot;
use dax::plugin::{Limits, PluginSpec};
use dax_tests::k8s::Cluster;
use dax_tests::{fresh_host, plugin_path, spec};
use serde_json::{json, Value};
use std::path::Path;
use std::sync::Arc;

const NS: &str = "kcap";
const OTHER_NS: &str = "kcap-other";

const SETUP: &str = r#"
apiVersion: v1
kind: Namespace
metadata: {name: kcap}
---
apiVersion: v1
kind: Namespace
metadata: {name: kcap-other}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: kcap}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: registry.invalid/web:v1}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: kcap-other}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: app, image: registry.invalid/web:v1}]
---
apiVersion: v1
kind: Secret
metadata: {name: db-password, namespace: kcap}
stringData: {password: hunter2}
"#;

/// The grant most tests use: deployments, services and config maps in `kcap`.
fn grant(cluster: &Cluster, extra: &str) -> toml::Value {
    toml::from_str(&format!(
        r#"
        kubeconfig = "{}"
        namespaces = ["{NS}"]
        resources = ["apps/deployments", "services", "configmaps"]
        verbs = ["get", "list", "apply", "patch"]
        {extra}
        "#,
        cluster.kubeconfig.display()
    ))
    .unwrap()
}

fn probe_spec(kube: Option<toml::Value>, http: Vec<String>) -> PluginSpec {
    let mut s = spec(&plugin_path("kube-probe"));
    s.grants.kube = kube.map(|k| k.try_into().expect("a valid kube grant"));
    s.grants.http = http;
    s
}

struct Probe(Arc<dyn dax::contract::Target>);

impl Probe {
    async fn new(host: &dax::plugin::PluginHost, spec: PluginSpec) -> Probe {
        let plugin = host
            .load("kube-probe", &spec, Path::new("."))
            .await
            .unwrap();
        Probe(plugin.target(json!({})).await.unwrap())
    }

    /// Make one call; the plugin's report `{"ok": ..}` / `{"err": variant, "message": ..}`.
    async fn call(&self, call: Value) -> Value {
        let status = self
            .0
            .status(&call.to_string(), Slot::Stable)
            .await
            .expect("the probe itself never fails");
        serde_json::from_str(&status.message).unwrap()
    }
}

fn deployment(ns: &str, name: &str, op: &str) -> Value {
    json!({"op": op, "api_version": "apps/v1", "kind": "Deployment", "namespace": ns, "name": name})
}

#[track_caller]
fn assert_refused(answer: &Value, variant: &str, text: &str) {
    assert_eq!(answer["err"], variant, "{answer}");
    let message = answer["message"].as_str().unwrap();
    assert!(message.contains(text), "`{text}` not in: {message}");
}

fn setup() -> Option<&'static Cluster> {
    let cluster = Cluster::shared()?;
    cluster.apply(SETUP);
    Some(cluster)
}

#[tokio::test]
async fn granted_calls_work_and_carry_no_credentials_or_bookkeeping() {
    let Some(cluster) = setup() else { return };
    let (host, _cache) = fresh_host();
    let probe = Probe::new(&host, probe_spec(Some(grant(cluster, "")), vec![])).await;

    let got = probe.call(deployment(NS, "web", "get")).await;
    assert_eq!(got["ok"]["metadata"]["name"], "web", "{got}");
    assert!(got["ok"]["metadata"].get("managedFields").is_none());
    let status = probe.call(deployment(NS, "web", "get-status")).await;
    assert!(status["ok"]["status"].is_object(), "{status}");

    // Server-side apply as field manager `dax`, then a merge and a JSON patch.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "probe", "namespace": NS}, "data": {"a": "1"}});
    let applied = probe.call(json!({"op": "apply", "body": cm})).await;
    assert_eq!(applied["ok"]["data"]["a"], "1", "{applied}");
    let managers = cluster.kubectl(&[
        "get",
        "configmap",
        "probe",
        "-n",
        NS,
        "--show-managed-fields",
        "-o",
        "jsonpath={.metadata.managedFields[*].manager}",
    ]);
    assert!(
        managers.split_whitespace().any(|m| m == "dax"),
        "{managers}"
    );
    let merged = probe
        .call(
            json!({"op": "patch-merge", "api_version": "v1", "kind": "ConfigMap",
            "namespace": NS, "name": "probe", "body": {"data": {"b": "2"}}}),
        )
        .await;
    assert_eq!(merged["ok"]["data"]["b"], "2", "{merged}");
    let patched = probe
        .call(
            json!({"op": "patch-json", "api_version": "v1", "kind": "ConfigMap",
            "namespace": NS, "name": "probe", "body": [{"op": "remove", "path": "/data/a"}]}),
        )
        .await;
    assert!(patched["ok"]["data"].get("a").is_none(), "{patched}");

    let listed = probe
        .call(
            json!({"op": "list", "api_version": "apps/v1", "kind": "Deployment",
            "namespace": NS, "body": "app=web"}),
        )
        .await;
    assert_eq!(
        listed["ok"]["items"], 0,
        "the selector matches the Deployment's labels, not pods: {listed}"
    );
    let listed = probe
        .call(
            json!({"op": "list", "api_version": "apps/v1", "kind": "Deployment", "namespace": NS}),
        )
        .await;
    assert_eq!(listed["ok"]["items"], 1, "{listed}");

    let missing = probe.call(deployment(NS, "nothing-here", "get")).await;
    assert_refused(&missing, "not-found", "nothing-here");
}

#[tokio::test]
async fn calls_outside_the_grant_are_refused_naming_the_grant_to_add() {
    let Some(cluster) = setup() else { return };
    let (host, _cache) = fresh_host();
    let probe = Probe::new(&host, probe_spec(Some(grant(cluster, "")), vec![])).await;

    // Another namespace.
    let other = probe.call(deployment(OTHER_NS, "web", "get")).await;
    assert_refused(
        &other,
        "denied",
        "add \"kcap-other\" to grants.kube.namespaces of [plugins.kube-probe]",
    );
    // Secrets in the granted namespace.
    let secret = probe
        .call(json!({"op": "get", "api_version": "v1", "kind": "Secret", "namespace": NS, "name": "db-password"}))
        .await;
    assert_refused(
        &secret,
        "denied",
        "add \"secrets\" to grants.kube.resources",
    );
    assert!(!secret.to_string().contains("hunter2"));
    // A cluster-scoped kind from an ungranted group.
    let crb = probe
        .call(
            json!({"op": "get", "api_version": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding", "name": "cluster-admin"}),
        )
        .await;
    assert_refused(&crb, "denied", "API group `rbac.authorization.k8s.io`");
    // A cluster-scoped kind of the granted core group.
    let nsobj = probe
        .call(json!({"op": "get", "api_version": "v1", "kind": "Namespace", "name": NS}))
        .await;
    assert_refused(
        &nsobj,
        "denied",
        "add \"namespaces\" to grants.kube.resources",
    );
    // An ungranted verb.
    let delete = probe.call(deployment(NS, "web", "delete")).await;
    assert_refused(
        &delete,
        "denied",
        "add \"delete\" to grants.kube.verbs of [plugins.kube-probe]",
    );
    // A kind from an ungranted group (the Gateway API CRDs are installed).
    let route = probe
        .call(
            json!({"op": "get", "api_version": "gateway.networking.k8s.io/v1",
            "kind": "HTTPRoute", "namespace": NS, "name": "web"}),
        )
        .await;
    assert_refused(&route, "denied", "API group `gateway.networking.k8s.io`");
    // Applying an object into another namespace.
    let cm = json!({"apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "sneaky", "namespace": OTHER_NS}, "data": {}});
    let applied = probe.call(json!({"op": "apply", "body": cm})).await;
    assert_refused(&applied, "denied", "grants.kube.namespaces");
    assert!(!cluster
        .kubectl_output(&["get", "configmap", "sneaky", "-n", OTHER_NS], "")
        .status
        .success());
    // Names that would leave their URL path segment.
    for name in [
        "../../../api/v1/namespaces/kcap/secrets/db-password",
        "web/status",
        "web?watch=1",
    ] {
        let escaped = probe.call(deployment(NS, name, "get")).await;
        assert_refused(&escaped, "invalid", "is not a Kubernetes object name");
    }
    // Listing every namespace at once.
    let all = probe
        .call(json!({"op": "list", "api_version": "apps/v1", "kind": "Deployment"}))
        .await;
    assert_refused(
        &all,
        "invalid",
        "Deployment is namespaced: give the namespace",
    );

    // The refusal did not cost the plugin its other calls.
    let got = probe.call(deployment(NS, "web", "get")).await;
    assert_eq!(got["ok"]["metadata"]["name"], "web", "{got}");

    // No grant at all: the import alone is refused at load time.
    let err = host
        .load("kube-probe", &probe_spec(None, vec![]), Path::new("."))
        .await
        .err()
        .expect("a plugin importing dax:host/kube without grants.kube must not load");
    let text = format!("{err:#}");
    assert!(
        text.contains("imports capabilities its entry does not grant: dax:host/kube needs [plugins.kube-probe.grants.kube]"),
        "{text}"
    );
}

#[test]
fn inspect_lists_the_capabilities_a_plugin_imports_without_granting_them() {
    let out = std::process::Command::new(dax_tests::dax_bin())
        .args(["--output", "json", "plugin", "inspect"])
        .arg(plugin_path("kube-probe"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let caps: Vec<&str> = report["capabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert!(caps.contains(&"dax:host/kube"), "{report}");
    assert!(caps.contains(&"wasi:http/outgoing-handler"), "{report}");
}

#[tokio::test]
async fn the_api_server_cannot_be_reached_around_the_capability() {
    let Some(cluster) = setup() else { return };
    let (host, _cache) = fresh_host();
    let url = format!(
        "{}/api/v1/namespaces/{NS}/secrets/db-password",
        cluster.server
    );
    // Without an HTTP grant the request never leaves the host.
    let probe = Probe::new(&host, probe_spec(Some(grant(cluster, "")), vec![])).await;
    let direct = probe.call(json!({"op": "http-get", "body": url})).await;
    assert_eq!(direct["err"], "http", "{direct}");
    // With one, the API server sees a request without any credential of the host's.
    let port = cluster.server.rsplit(':').next().unwrap();
    let granted = Probe::new(
        &host,
        probe_spec(
            Some(grant(cluster, "")),
            vec![format!("https://127.0.0.1:{port}")],
        ),
    )
    .await;
    let answer = granted.call(json!({"op": "http-get", "body": url})).await;
    assert!(!answer.to_string().contains("hunter2"), "{answer}");
    // The plugin either cannot even verify the server's certificate (the cluster's own CA is
    // the host's secret too), or it is anonymous to the API server.
    match answer["ok"]["status"].as_u64() {
        Some(status) => assert!(
            status == 401 || status == 403,
            "answered {status}: {answer}"
        ),
        None => assert_eq!(answer["err"], "http", "{answer}"),
    }
}

#[tokio::test]
async fn huge_answers_are_refused_and_the_host_keeps_working() {
    let Some(cluster) = setup() else { return };
    // 200 config maps of 2 KiB each: a list of ~450 KiB against a 64 KiB limit.
    let filler = "x".repeat(2048);
    let mut manifest = String::new();
    for i in 0..200 {
        manifest.push_str(&format!(
            "---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: filler-{i}, namespace: {NS}, labels: {{filler: \"yes\"}}}}\ndata: {{x: {filler}}}\n"
        ));
    }
    cluster.apply(&manifest);
    let (host, _cache) = fresh_host();
    let probe = Probe::new(
        &host,
        probe_spec(Some(grant(cluster, "max_response_kib = 64")), vec![]),
    )
    .await;
    let huge = probe
        .call(json!({"op": "list", "api_version": "v1", "kind": "ConfigMap", "namespace": NS, "body": "filler=yes"}))
        .await;
    assert_refused(&huge, "too-large", "larger than 64 KiB");
    assert_refused(
        &huge,
        "too-large",
        "grants.kube.max_response_kib of [plugins.kube-probe]",
    );
    let got = probe.call(deployment(NS, "web", "get")).await;
    assert_eq!(got["ok"]["metadata"]["name"], "web", "{got}");
}

#[tokio::test]
async fn a_stalling_api_server_is_cut_at_the_grant_timeout() {
    // Accepts connections and never answers (not even the TLS handshake).
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for conn in listener.incoming() {
            held.push(conn);
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"https://127.0.0.1:{port}\", insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{token: secret-token}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u}}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    let grant: toml::Value = toml::from_str(&format!(
        "kubeconfig = \"{}\"\nnamespaces = [\"{NS}\"]\nresources = [\"apps/deployments\"]\nverbs = [\"get\"]\ntimeout = \"1s\"",
        kubeconfig.display()
    ))
    .unwrap();
    let (host, _cache) = fresh_host();
    let mut spec = probe_spec(Some(grant), vec![]);
    spec.limits = Limits {
        wall_timeout: Some(std::time::Duration::from_secs(20)),
        ..Limits::default()
    };
    let probe = Probe::new(&host, spec).await;
    let started = std::time::Instant::now();
    let stalled = probe.call(deployment(NS, "web", "get")).await;
    assert_refused(
        &stalled,
        "unavailable",
        "took longer than 1s: raise grants.kube.timeout",
    );
    assert!(started.elapsed() < std::time::Duration::from_secs(10));
    assert!(!stalled.to_string().contains("secret-token"));
}

#[tokio::test]
async fn malformed_grants_are_refused_at_load_naming_the_field() {
    let (host, _cache) = fresh_host();
    for (grant, field) in [
        ("namespaces = [\"a\"]\nresources = [\"*\"]\nverbs = [\"get\"]", "grants.kube.resources"),
        ("namespaces = [\"*\"]\nresources = [\"services\"]\nverbs = [\"get\"]", "grants.kube.namespaces"),
        ("namespaces = [\"a\"]\nresources = [\"services\"]", "grants.kube.verbs"),
        ("kubeconfig = \"/nonexistent/kubeconfig\"\nnamespaces = [\"a\"]\nresources = [\"services\"]\nverbs = [\"get\"]", "grants.kube.kubeconfig"),
        ("namespaces = [\"a\"]\nresources = [\"services\"]\nverbs = [\"get\"]\ntimeout = \"0s\"", "grants.kube.timeout must be more than 0s"),
        // Longer than the plugin's wall clock (10 s by default): it could never take effect.
        ("namespaces = [\"a\"]\nresources = [\"services\"]\nverbs = [\"get\"]\ntimeout = \"11s\"", "raise limits.wall_timeout above it"),
    ] {
        let err = host
            .load("kube-probe", &probe_spec(Some(toml::from_str(grant).unwrap()), vec![]), Path::new("."))
            .await
            .err()
            .unwrap_or_else(|| panic!("`{grant}` was accepted"));
        let text = format!("{err:#}");
        assert!(text.contains(field), "`{field}` not in: {text}");
    }
}
