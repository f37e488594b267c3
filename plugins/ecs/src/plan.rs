//! What the plugin asks of ECS and ELBv2, built from its config and the objects it reads:
//! pure functions, unit-tested natively.

use dax_sdk::target::{MatchSource, RequestMatch, Slot, StringMatch, WorkloadStatus};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The Docker label carrying the version a task definition revision was made for.
pub const VERSION_LABEL: &str = "dax.version";

pub const CONFIG_SCHEMA: &str = r#"{"type":"object","required":["cluster"],"properties":{"mode":{"type":"string","enum":["services","rolling"]},"region":{"type":"string"},"cluster":{"type":"string"},"listener_arn":{"type":"string"},"stable_target_group_arn":{"type":"string"},"candidate_target_group_arn":{"type":"string"},"container":{"type":"string"},"ab_rule_priority":{"type":"integer","minimum":1,"maximum":50000},"minimum_healthy_percent":{"type":"integer","minimum":0,"maximum":100},"maximum_percent":{"type":"integer","minimum":100,"maximum":400},"circuit_breaker":{"type":"boolean"}},"additionalProperties":false}"#;

/// How a new version reaches users.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// The candidate as a second service in its own target group; traffic by listener weights
    /// (canary, blue-green) or a listener rule (A/B).
    #[default]
    Services,
    /// ECS's own rolling deployment of the stable service (minimumHealthyPercent,
    /// maximumPercent, circuit breaker), with dax's analysis and gate around it.
    Rolling,
}

/// The plugin's `[plugins.NAME.config]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub mode: Mode,
    /// Default: the host's AWS region.
    #[serde(default)]
    pub region: Option<String>,
    /// Cluster name or ARN.
    pub cluster: String,
    /// The ALB listener whose default action splits traffic (mode = "services").
    #[serde(default)]
    pub listener_arn: String,
    /// The target group the stable service is registered in (mode = "services"; in
    /// "rolling", optional: its target health bounds readiness).
    #[serde(default)]
    pub stable_target_group_arn: String,
    /// The target group the candidate service is registered in (mode = "services").
    #[serde(default)]
    pub candidate_target_group_arn: String,
    /// The container whose image `artifact` replaces. Default: the first one.
    #[serde(default)]
    pub container: Option<String>,
    /// Priority of the listener rule the plugin owns for A/B matches.
    #[serde(default = "default_priority")]
    pub ab_rule_priority: u32,
    /// mode = "rolling": ECS's deploymentConfiguration.minimumHealthyPercent.
    #[serde(default = "default_min_healthy")]
    pub minimum_healthy_percent: u32,
    /// mode = "rolling": ECS's deploymentConfiguration.maximumPercent.
    #[serde(default = "default_max_percent")]
    pub maximum_percent: u32,
    /// mode = "rolling": ECS's deployment circuit breaker (dax rolls back, not ECS).
    #[serde(default = "yes")]
    pub circuit_breaker: bool,
}

fn default_min_healthy() -> u32 {
    100
}
fn default_max_percent() -> u32 {
    200
}
fn yes() -> bool {
    true
}

fn default_priority() -> u32 {
    1
}

impl Config {
    /// Parse and check; `Err((field, problem))`.
    pub fn parse(text: &str) -> Result<Config, (String, String)> {
        let c: Config = serde_json::from_str(text).map_err(|e| (String::new(), e.to_string()))?;
        if c.cluster.is_empty() {
            return Err(("cluster".into(), "give the cluster's name or ARN".into()));
        }
        for (field, arn, kind) in [
            ("listener_arn", &c.listener_arn, ":listener/"),
            (
                "stable_target_group_arn",
                &c.stable_target_group_arn,
                ":targetgroup/",
            ),
            (
                "candidate_target_group_arn",
                &c.candidate_target_group_arn,
                ":targetgroup/",
            ),
        ] {
            if c.mode == Mode::Rolling && (arn.is_empty() || field != "stable_target_group_arn") {
                // ECS's own deployment moves no traffic: only the stable target group is read.
                if !arn.is_empty() && field != "stable_target_group_arn" {
                    return Err((field.into(), "is not used with mode = \"rolling\" (ECS replaces the service's tasks in place): remove it".into()));
                }
                continue;
            }
            if arn.is_empty() {
                return Err((
                    field.into(),
                    format!(
                        "required with mode = \"services\": the ELBv2 {} ARN",
                        kind.trim_matches(&[':', '/'][..])
                    ),
                ));
            }
            if !arn.starts_with("arn:")
                || !arn.contains(":elasticloadbalancing:")
                || !arn.contains(kind)
            {
                return Err((
                    field.into(),
                    format!(
                        "`{arn}` is not an ELBv2 {} ARN",
                        kind.trim_matches(&[':', '/'][..])
                    ),
                ));
            }
        }
        if c.mode == Mode::Rolling {
            if c.minimum_healthy_percent > 100 {
                return Err(("minimum_healthy_percent".into(), "must be 0..=100".into()));
            }
            if !(100..=400).contains(&c.maximum_percent) {
                return Err((
                    "maximum_percent".into(),
                    "must be 100..=400 (ECS's range)".into(),
                ));
            }
            if c.minimum_healthy_percent == 100 && c.maximum_percent == 100 {
                return Err(("maximum_percent".into(), "with minimum_healthy_percent = 100, ECS cannot replace a task: raise maximum_percent above 100 or lower minimum_healthy_percent".into()));
            }
        }
        if c.mode == Mode::Services && c.stable_target_group_arn == c.candidate_target_group_arn {
            return Err((
                "candidate_target_group_arn".into(),
                "must differ from stable_target_group_arn".into(),
            ));
        }
        if !(1..=50000).contains(&c.ab_rule_priority) {
            return Err(("ab_rule_priority".into(), "must be 1..=50000".into()));
        }
        Ok(c)
    }
}

pub fn candidate_name(app: &str) -> String {
    format!("{app}-candidate")
}

pub fn service_name(app: &str, which: Slot) -> String {
    match which {
        Slot::Stable => app.to_string(),
        Slot::Candidate => candidate_name(app),
    }
}

pub fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("")
}

pub fn count(v: &Value, key: &str) -> u32 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or(0)
        .min(u32::MAX as u64) as u32
}

/// The version label of a task definition (empty when it was not made by dax).
pub fn version_of(td: &Value) -> String {
    td.get("containerDefinitions")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find_map(|c| c.get("dockerLabels")?.get(VERSION_LABEL)?.as_str())
        .unwrap_or("")
        .to_string()
}

/// Fields of a described task definition that `RegisterTaskDefinition` takes back.
const REGISTERABLE: &[&str] = &[
    "family",
    "taskRoleArn",
    "executionRoleArn",
    "networkMode",
    "containerDefinitions",
    "volumes",
    "placementConstraints",
    "requiresCompatibilities",
    "cpu",
    "memory",
    "pidMode",
    "ipcMode",
    "proxyConfiguration",
    "inferenceAccelerators",
    "ephemeralStorage",
    "runtimePlatform",
];

/// A new revision of the stable task definition with the candidate's image and version label.
pub fn new_revision(
    stable_td: &Value,
    c: &Config,
    image: &str,
    version: &str,
) -> Result<Value, String> {
    let mut body = Map::new();
    for key in REGISTERABLE {
        if let Some(v) = stable_td.get(*key) {
            if !v.is_null() {
                body.insert((*key).into(), v.clone());
            }
        }
    }
    let containers = body
        .get_mut("containerDefinitions")
        .and_then(Value::as_array_mut)
        .ok_or("the stable task definition has no containerDefinitions")?;
    let index = match &c.container {
        Some(name) => containers
            .iter()
            .position(|d| str_of(d, "name") == name)
            .ok_or_else(|| {
                format!("the stable task definition has no container `{name}` (config.container)")
            })?,
        None => 0,
    };
    let container = containers
        .get_mut(index)
        .and_then(Value::as_object_mut)
        .ok_or("the stable task definition has no container")?;
    container.insert("image".into(), Value::String(image.into()));
    let labels = container.entry("dockerLabels").or_insert_with(|| json!({}));
    if !labels.is_object() {
        *labels = json!({});
    }
    labels[VERSION_LABEL] = Value::String(version.into());
    Ok(Value::Object(body))
}

/// `CreateService` of the candidate: the stable service's shape, the new revision, and the
/// candidate target group in place of the stable one.
pub fn candidate_service(
    stable: &Value,
    c: &Config,
    name: &str,
    task_definition: &str,
    replicas: u32,
) -> Value {
    let mut body = json!({
        "cluster": c.cluster,
        "serviceName": name,
        "taskDefinition": task_definition,
        "desiredCount": replicas,
    });
    for key in [
        "launchType",
        "capacityProviderStrategy",
        "platformVersion",
        "networkConfiguration",
        "deploymentConfiguration",
        "healthCheckGracePeriodSeconds",
        "placementConstraints",
        "placementStrategy",
    ] {
        match stable.get(key) {
            Some(Value::Null) | None => {}
            Some(Value::Array(a)) if a.is_empty() => {}
            Some(v) => body[key] = v.clone(),
        }
    }
    // Only one of launchType and capacityProviderStrategy may be given.
    if body.get("capacityProviderStrategy").is_some() {
        body.as_object_mut().unwrap().remove("launchType");
    }
    let lbs: Vec<Value> = stable
        .get("loadBalancers")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter(|lb| str_of(lb, "targetGroupArn") == c.stable_target_group_arn)
        .map(|lb| {
            let mut lb = lb.clone();
            lb["targetGroupArn"] = Value::String(c.candidate_target_group_arn.clone());
            lb.as_object_mut().unwrap().remove("loadBalancerName");
            lb
        })
        .collect();
    if !lbs.is_empty() {
        body["loadBalancers"] = Value::Array(lbs);
    }
    body
}

/// ALB rule conditions (Query parameters after `Conditions.member.N.`) for A/B matches: one
/// `http-header` condition per match; cookies through the `Cookie` header.
pub fn rule_conditions(matches: &[RequestMatch]) -> Result<Vec<(String, String)>, String> {
    const MAX_VALUES: usize = 5;
    if matches.len() > MAX_VALUES {
        return Err(format!(
            "an ALB rule takes at most {MAX_VALUES} condition values; got {} matches",
            matches.len()
        ));
    }
    let mut params = Vec::new();
    for (i, m) in matches.iter().enumerate() {
        let wildcard_free = |v: &str| {
            if v.contains(['*', '?']) {
                Err(format!("ALB header conditions treat `*` and `?` as wildcards, so `{v}` cannot be matched exactly"))
            } else {
                Ok(v.to_string())
            }
        };
        let value = match &m.value {
            StringMatch::Exact(v) => wildcard_free(v)?,
            StringMatch::Prefix(v) => format!("{}*", wildcard_free(v)?),
            StringMatch::Suffix(v) => format!("*{}", wildcard_free(v)?),
            StringMatch::Regex(r) => {
                return Err(format!("an ALB matches headers with `*` and `?` wildcards, not regular expressions (`{r}`)"))
            }
        };
        let (header, value) = match m.source {
            MatchSource::Header => (m.name.clone(), value),
            // `Cookie: a=1; name=value; b=2`: the pair anywhere in the header.
            MatchSource::Cookie => (
                "Cookie".to_string(),
                format!("*{}={}*", m.name, value.trim_matches('*')),
            ),
        };
        if value.len() > 128 || header.is_empty() || header.len() > 40 {
            return Err(format!("ALB header conditions take names up to 40 and values up to 128 characters (`{header}`)"));
        }
        let p = format!("Conditions.member.{}.", i + 1);
        params.push((format!("{p}Field"), "http-header".into()));
        params.push((format!("{p}HttpHeaderConfig.HttpHeaderName"), header));
        params.push((format!("{p}HttpHeaderConfig.Values.member.1"), value));
    }
    Ok(params)
}

/// Query parameters of a forward action splitting between two target groups.
pub fn forward(
    prefix: &str,
    stable_tg: &str,
    stable_weight: u8,
    candidate_tg: &str,
    candidate_weight: u8,
) -> Vec<(String, String)> {
    let p = format!("{prefix}.member.1.");
    vec![
        (format!("{p}Type"), "forward".into()),
        (
            format!("{p}ForwardConfig.TargetGroups.member.1.TargetGroupArn"),
            stable_tg.into(),
        ),
        (
            format!("{p}ForwardConfig.TargetGroups.member.1.Weight"),
            stable_weight.to_string(),
        ),
        (
            format!("{p}ForwardConfig.TargetGroups.member.2.TargetGroupArn"),
            candidate_tg.into(),
        ),
        (
            format!("{p}ForwardConfig.TargetGroups.member.2.Weight"),
            candidate_weight.to_string(),
        ),
    ]
}

/// A service's status: ready = running tasks, bounded by healthy targets when its target
/// group has any registered.
pub fn readiness(service: &Value, target_states: &[String], version: String) -> WorkloadStatus {
    let desired = count(service, "desiredCount");
    let running = count(service, "runningCount");
    let pending = count(service, "pendingCount");
    let healthy = target_states.iter().filter(|s| *s == "healthy").count() as u32;
    let ready = if target_states.is_empty() {
        running
    } else {
        running.min(healthy)
    };
    let updated = service
        .get("deployments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|d| str_of(d, "status") == "PRIMARY")
        .map(|d| count(d, "runningCount"))
        .filter(|n| *n > 0)
        .unwrap_or(running);
    let mut message = format!(
        "{}: {running}/{desired} running, {pending} pending",
        str_of(service, "serviceName")
    );
    if !target_states.is_empty() {
        message.push_str(&format!(
            ", {healthy}/{} targets healthy",
            target_states.len()
        ));
    }
    let rollout = service
        .get("deployments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|d| str_of(d, "status") == "PRIMARY")
        .map(|d| str_of(d, "rolloutState"))
        .unwrap_or("");
    if rollout == "FAILED" {
        message.push_str(", ECS rollout FAILED (circuit breaker)");
    }
    WorkloadStatus {
        desired,
        ready,
        updated: updated.min(desired),
        version,
        message,
    }
}

/// Tags on the stable service that remember a rolling rollout (mode = "rolling"): the
/// revision it replaces and the one it rolls out, so rollback is idempotent and survives a
/// restart of dax (the plugin keeps no state of its own).
pub const PREVIOUS_TAG: &str = "dax.previous";
pub const CANDIDATE_TAG: &str = "dax.candidate";

/// A tag of a service described with `include: ["TAGS"]` ("" when absent).
pub fn tag_of<'a>(service: &'a Value, key: &str) -> &'a str {
    service
        .get("tags")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|t| str_of(t, "key") == key)
        .map(|t| str_of(t, "value"))
        .unwrap_or("")
}

/// `UpdateService` onto `task_definition` through ECS's rolling deployment.
pub fn rolling_update(
    c: &Config,
    service: &str,
    task_definition: &str,
    desired: Option<u32>,
) -> Value {
    let mut body = json!({
        "cluster": c.cluster,
        "service": service,
        "taskDefinition": task_definition,
        "deploymentConfiguration": {
            "minimumHealthyPercent": c.minimum_healthy_percent,
            "maximumPercent": c.maximum_percent,
            // dax decides how a deployment ends: ECS stops a failing one, dax rolls it back.
            "deploymentCircuitBreaker": {"enable": c.circuit_breaker, "rollback": false},
        },
    });
    if let Some(n) = desired.filter(|n| *n > 0) {
        body["desiredCount"] = json!(n);
    }
    body
}

/// Readiness of ECS's own deployment of `task_definition`: its PRIMARY deployment's running
/// tasks, counted ready only once ECS says the rollout COMPLETED (all new tasks healthy, old
/// ones drained), bounded by healthy targets. Without a deployment for that revision (the
/// `EXTERNAL` controller, or moto, which starts none on UpdateService) the service's counts.
pub fn rolling_readiness(
    service: &Value,
    task_definition: &str,
    target_states: &[String],
    version: String,
) -> WorkloadStatus {
    let primary = service
        .get("deployments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|d| {
            str_of(d, "status") == "PRIMARY" && str_of(d, "taskDefinition") == task_definition
        });
    let Some(d) = primary else {
        let mut s = readiness(service, target_states, version);
        s.message
            .push_str(" (no ECS deployment of this revision listed: the service's counts)");
        return s;
    };
    let desired = count(d, "desiredCount");
    let running = count(d, "runningCount");
    let state = str_of(d, "rolloutState");
    let healthy = target_states.iter().filter(|s| *s == "healthy").count() as u32;
    let mut ready = match state {
        "FAILED" => 0,
        // Older ECS answers carry no rolloutState: running tasks are what it says.
        "COMPLETED" | "" => running,
        _ => running.min(desired.saturating_sub(1)),
    };
    if !target_states.is_empty() {
        ready = ready.min(healthy);
    }
    let mut message = format!(
        "{} deployment {}: {running}/{desired} running, {} pending, rollout {}",
        str_of(service, "serviceName"),
        str_of(d, "id"),
        count(d, "pendingCount"),
        if state.is_empty() {
            "state not reported"
        } else {
            state
        }
    );
    if state == "FAILED" {
        message.push_str(&format!(
            " (circuit breaker: {})",
            str_of(d, "rolloutStateReason")
        ));
    }
    WorkloadStatus {
        desired,
        ready,
        updated: ready.min(desired),
        version,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        Config::parse(
            &json!({
                "cluster": "prod",
                "listener_arn": "arn:aws:elasticloadbalancing:us-east-1:1:listener/app/web/1/2",
                "stable_target_group_arn": "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/blue/1",
                "candidate_target_group_arn": "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/green/2",
                "container": "app"
            })
            .to_string(),
        )
        .unwrap()
    }

    #[test]
    fn config_is_checked() {
        let bad = json!({"cluster": "prod", "listener_arn": "x", "stable_target_group_arn": "y", "candidate_target_group_arn": "z"});
        assert_eq!(
            Config::parse(&bad.to_string()).unwrap_err().0,
            "listener_arn"
        );
        assert!(Config::parse(r#"{"cluster":"p","typo":1}"#).is_err());
    }

    #[test]
    fn a_new_revision_changes_the_image_and_labels_the_version() {
        let td = json!({"family": "web", "revision": 3, "status": "ACTIVE", "taskDefinitionArn": "arn:x",
            "containerDefinitions": [{"name": "sidecar", "image": "envoy"}, {"name": "app", "image": "web:1", "dockerLabels": {"team": "a"}}],
            "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512", "networkMode": "awsvpc"});
        let r = new_revision(&td, &config(), "web:2", "v2").unwrap();
        assert!(
            r.get("revision").is_none()
                && r.get("taskDefinitionArn").is_none()
                && r.get("status").is_none()
        );
        assert_eq!(r["containerDefinitions"][0]["image"], "envoy");
        assert_eq!(r["containerDefinitions"][1]["image"], "web:2");
        assert_eq!(
            r["containerDefinitions"][1]["dockerLabels"],
            json!({"team": "a", "dax.version": "v2"})
        );
        assert_eq!(version_of(&r), "v2");
        let mut c = config();
        c.container = Some("nope".into());
        assert!(new_revision(&td, &c, "web:2", "v2")
            .unwrap_err()
            .contains("config.container"));
    }

    #[test]
    fn the_candidate_service_uses_the_candidate_target_group() {
        let stable = json!({"serviceName": "web", "launchType": "FARGATE",
            "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["s1"]}},
            "loadBalancers": [{"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/blue/1", "containerName": "app", "containerPort": 8080}]});
        let s = candidate_service(&stable, &config(), "web-candidate", "arn:td:4", 2);
        assert_eq!(
            s["loadBalancers"][0]["targetGroupArn"],
            "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/green/2"
        );
        assert_eq!(s["loadBalancers"][0]["containerPort"], 8080);
        assert_eq!(s["desiredCount"], 2);
        assert_eq!(
            s["networkConfiguration"]["awsvpcConfiguration"]["subnets"][0],
            "s1"
        );
    }

    #[test]
    fn ab_matches_become_header_conditions() {
        let m = |source, name: &str, value| RequestMatch {
            source,
            name: name.into(),
            value,
        };
        let p = rule_conditions(&[
            m(
                MatchSource::Header,
                "x-canary",
                StringMatch::Exact("always".into()),
            ),
            m(MatchSource::Cookie, "beta", StringMatch::Exact("1".into())),
            m(
                MatchSource::Header,
                "user-agent",
                StringMatch::Prefix("Mozilla".into()),
            ),
        ])
        .unwrap();
        assert!(p.contains(&(
            "Conditions.member.1.HttpHeaderConfig.HttpHeaderName".into(),
            "x-canary".into()
        )));
        assert!(p.contains(&(
            "Conditions.member.2.HttpHeaderConfig.Values.member.1".into(),
            "*beta=1*".into()
        )));
        assert!(p.contains(&(
            "Conditions.member.3.HttpHeaderConfig.Values.member.1".into(),
            "Mozilla*".into()
        )));
        assert!(rule_conditions(&[m(
            MatchSource::Header,
            "x",
            StringMatch::Regex("a.*".into())
        )])
        .unwrap_err()
        .contains("not regular expressions"));
        assert!(
            rule_conditions(&[m(MatchSource::Header, "x", StringMatch::Exact("a*".into()))])
                .is_err()
        );
    }

    #[test]
    fn readiness_counts_running_tasks_bounded_by_healthy_targets() {
        let svc =
            json!({"serviceName": "web", "desiredCount": 3, "runningCount": 3, "pendingCount": 0});
        assert_eq!(readiness(&svc, &[], "v2".into()).ready, 3);
        let states = vec!["healthy".to_string(), "unhealthy".into(), "initial".into()];
        let s = readiness(&svc, &states, "v2".into());
        assert_eq!((s.desired, s.ready), (3, 1));
        assert!(s.message.contains("1/3 targets healthy"), "{}", s.message);
        let never =
            json!({"serviceName": "web", "desiredCount": 2, "runningCount": 0, "pendingCount": 2});
        assert_eq!(readiness(&never, &[], String::new()).ready, 0);
    }

    #[test]
    fn rolling_mode_needs_no_listener_and_checks_percents() {
        let c = Config::parse(r#"{"mode":"rolling","cluster":"prod"}"#).unwrap();
        assert_eq!(
            (
                c.mode,
                c.minimum_healthy_percent,
                c.maximum_percent,
                c.circuit_breaker
            ),
            (Mode::Rolling, 100, 200, true)
        );
        let err = Config::parse(r#"{"mode":"rolling","cluster":"prod","listener_arn":"arn:aws:elasticloadbalancing:us-east-1:1:listener/app/web/1/2"}"#).unwrap_err();
        assert_eq!(err.0, "listener_arn");
        let err = Config::parse(r#"{"mode":"rolling","cluster":"prod","maximum_percent":100}"#)
            .unwrap_err();
        assert!(err.1.contains("cannot replace a task"), "{err:?}");
        assert_eq!(
            Config::parse(r#"{"cluster":"prod"}"#).unwrap_err().0,
            "listener_arn"
        );
        let body = rolling_update(&c, "web", "arn:td:4", Some(3));
        assert_eq!(
            body["deploymentConfiguration"]["deploymentCircuitBreaker"],
            json!({"enable": true, "rollback": false})
        );
        assert_eq!(
            (body["desiredCount"].clone(), body["taskDefinition"].clone()),
            (json!(3), json!("arn:td:4"))
        );
        // A zero count (a strategy that deploys at 0 and scales) keeps the service's count.
        assert!(rolling_update(&c, "web", "arn:td:4", Some(0))
            .get("desiredCount")
            .is_none());
    }

    /// What moto cannot show (it starts no deployment on UpdateService): ECS's rollout states.
    #[test]
    fn rolling_readiness_follows_the_ecs_deployment_of_the_new_revision() {
        let svc = |state: &str, running: u32| {
            json!({"serviceName": "web", "taskDefinition": "td:2", "desiredCount": 3, "runningCount": 5,
                "tags": [{"key": "dax.candidate", "value": "td:2"}],
                "deployments": [
                    {"id": "ecs-svc/2", "status": "PRIMARY", "taskDefinition": "td:2", "desiredCount": 3, "runningCount": running, "pendingCount": 3 - running, "rolloutState": state, "rolloutStateReason": "tasks failed to start"},
                    {"id": "ecs-svc/1", "status": "ACTIVE", "taskDefinition": "td:1", "desiredCount": 3, "runningCount": 3}]})
        };
        assert_eq!(tag_of(&svc("", 0), CANDIDATE_TAG), "td:2");
        let s = rolling_readiness(&svc("IN_PROGRESS", 3), "td:2", &[], "v2".into());
        assert_eq!(
            (s.desired, s.ready),
            (3, 2),
            "all running but not COMPLETED is not ready: {s:?}"
        );
        let s = rolling_readiness(&svc("COMPLETED", 3), "td:2", &[], "v2".into());
        assert_eq!((s.desired, s.ready), (3, 3), "{s:?}");
        let states = vec![
            "healthy".to_string(),
            "healthy".into(),
            "draining".into(),
            "initial".into(),
        ];
        assert_eq!(
            rolling_readiness(&svc("COMPLETED", 3), "td:2", &states, "v2".into()).ready,
            2
        );
        let s = rolling_readiness(&svc("FAILED", 1), "td:2", &[], "v2".into());
        assert_eq!(s.ready, 0);
        assert!(
            s.message.contains("circuit breaker: tasks failed to start"),
            "{}",
            s.message
        );
        // No deployment of that revision listed (moto): the service's counts.
        let s = rolling_readiness(&svc("COMPLETED", 3), "td:9", &[], "v9".into());
        assert!(s.message.contains("the service's counts"), "{}", s.message);
        assert_eq!(s.ready, 5);
    }

    #[test]
    fn weights_go_into_one_forward_action() {
        let p = forward("DefaultActions", "A", 90, "B", 10);
        assert_eq!(
            p[0],
            ("DefaultActions.member.1.Type".into(), "forward".into())
        );
        assert_eq!(p[2].1, "90");
        assert_eq!(p[4].1, "10");
    }
}
