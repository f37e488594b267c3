use super::*;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  template:
    spec:
      securityContext:
        runAsNonRoot: true
      containers:
        - name: app
          image: ghcr.io/acme/web:1.2.3
          securityContext:
            readOnlyRootFilesystem: true
          resources:
            limits: { cpu: 500m, memory: 256Mi }
---
apiVersion: v1
kind: Service
metadata:
  name: web
"#;

const BAD_POD: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: debug
spec:
  containers:
    - name: shell
      image: busybox
      securityContext:
        privileged: true
        runAsUser: 0
"#;

fn ids(v: &[Violation]) -> Vec<&str> {
    v.iter().map(|x| x.rule.as_str()).collect()
}

fn cfg(json: &str) -> Config {
    serde_json::from_str(json).unwrap()
}

#[test]
fn compliant_deployment_has_no_findings() {
    let docs = parse_manifests(&[DEPLOYMENT.to_string()]).unwrap();
    assert_eq!(docs.len(), 2);
    let v = check(&cfg(r#"{"allowed_registries":["ghcr.io/acme"]}"#), &docs);
    assert!(v.is_empty(), "{v:?}");
}

#[test]
fn bad_pod_violates_every_rule_with_default_severities() {
    let docs = parse_manifests(&[BAD_POD.to_string()]).unwrap();
    let v = check(&cfg(r#"{"allowed_registries":["ghcr.io"]}"#), &docs);
    assert_eq!(
        ids(&v),
        [
            "no-root",
            "no-privileged",
            "resource-limits",
            "read-only-root-fs",
            "no-latest-tag",
            "allowed-registries"
        ]
    );
    assert_eq!(v[0].severity, Sev::High);
    assert_eq!(v[1].severity, Sev::Critical);
    assert_eq!(v[0].resource, "Pod/debug");
    assert_eq!(v[0].container, "shell");
    assert!(v[5].message.contains("docker.io"), "{}", v[5].message);
    // Without allowed registries the registry rule does not run.
    assert_eq!(check(&Config::default(), &docs).len(), 5);
}

#[test]
fn rules_can_be_disabled_and_reweighted() {
    let docs = parse_manifests(&[BAD_POD.to_string()]).unwrap();
    let c = cfg(
        r#"{"rules":{"read-only-root-fs":{"enabled":false},"no-root":{"severity":"critical"},"resource-limits":{"severity":"LOW"}}}"#,
    );
    let v = check(&c, &docs);
    assert!(!ids(&v).contains(&"read-only-root-fs"));
    assert_eq!(
        v.iter().find(|x| x.rule == "no-root").unwrap().severity,
        Sev::Critical
    );
    assert_eq!(
        v.iter()
            .find(|x| x.rule == "resource-limits")
            .unwrap()
            .severity,
        Sev::Low
    );
}

#[test]
fn config_problems_name_the_field() {
    let p = config_problems(r#"{"rules":{"no-roots":{}}}"#);
    assert_eq!(p[0].0, "rules.no-roots");
    assert!(p[0].1.contains("no-root,"), "{}", p[0].1);
    assert!(!config_problems(r#"{"allowd":[]}"#).is_empty());
    let p = config_problems(r#"{"rules":{"allowed-registries":{"enabled":true}}}"#);
    assert_eq!(p[0].0, "allowed_registries");
    assert!(config_problems(r#"{"rules":{"no-root":{"severity":"HIGH"}}}"#).is_empty());
}

#[test]
fn cronjob_init_containers_lists_and_json() {
    let cron = r#"{"apiVersion":"batch/v1","kind":"CronJob","metadata":{"name":"nightly"},"spec":{"jobTemplate":{"spec":{"template":{"spec":{"initContainers":[{"name":"init","image":"alpine:latest"}],"containers":[{"name":"job","image":"ghcr.io/acme/job@sha256:abc","securityContext":{"runAsUser":1000,"readOnlyRootFilesystem":true},"resources":{"limits":{"cpu":"1","memory":"1Gi"}}}]}}}}}}"#;
    let docs = parse_manifests(&[cron.to_string()]).unwrap();
    let v = check(&Config::default(), &docs);
    assert!(v.iter().all(|x| x.container == "init"), "{v:?}");
    assert!(ids(&v).contains(&"no-latest-tag"));
    let list = r#"{"kind":"List","items":[{"kind":"Pod","metadata":{"name":"p"},"spec":{"containers":[{"name":"c","image":"nginx:1.25","securityContext":{"privileged":true}}]}}]}"#;
    let v = check(
        &Config::default(),
        &parse_manifests(&[list.to_string()]).unwrap(),
    );
    assert!(ids(&v).contains(&"no-privileged"));
    assert_eq!(v[0].location, "manifest[0] item 0");
}

#[test]
fn ecs_task_definitions() {
    let td = r#"{"family":"api","containerDefinitions":[{"name":"api","image":"123456789012.dkr.ecr.eu-west-1.amazonaws.com/api:2.0","user":"1000","memory":512,"readonlyRootFilesystem":true},{"name":"sidecar","image":"envoyproxy/envoy","privileged":true}]}"#;
    let v = check(
        &cfg(r#"{"allowed_registries":["123456789012.dkr.ecr.eu-west-1.amazonaws.com"]}"#),
        &parse_manifests(&[td.to_string()]).unwrap(),
    );
    assert!(v.iter().all(|x| x.container == "sidecar"), "{v:?}");
    assert_eq!(
        ids(&v),
        [
            "no-root",
            "no-privileged",
            "resource-limits",
            "read-only-root-fs",
            "no-latest-tag",
            "allowed-registries"
        ]
    );
    assert_eq!(v[0].resource, "TaskDefinition/api");
}

#[test]
fn image_references() {
    assert_eq!(
        ImageRef::parse("nginx"),
        ImageRef {
            registry: "docker.io".into(),
            repository: "library/nginx".into(),
            tag: None,
            digest: None
        }
    );
    let r = ImageRef::parse("localhost:5000/team/app:1.0@sha256:ff");
    assert_eq!(r.registry, "localhost:5000");
    assert_eq!(r.repository, "team/app");
    assert_eq!(r.tag.as_deref(), Some("1.0"));
    assert_eq!(r.digest.as_deref(), Some("sha256:ff"));
    assert!(r.allowed_by("localhost:5000"));
    assert!(r.allowed_by("localhost:5000/team"));
    assert!(!r.allowed_by("localhost:5000/te"));
    assert!(ImageRef::parse("acme/app:1").allowed_by("docker.io/acme"));
}

#[test]
fn invalid_yaml_is_reported_with_its_position() {
    let e = parse_manifests(&["ok: 1".into(), "a: [1,\n".into()]).unwrap_err();
    assert!(e.starts_with("manifest[1] document 1"), "{e}");
}
