//! What the plugin asks of ECS and ELBv2, built from its config and the objects it reads:
//! pure functions, unit-tested natively.

use dax_sdk::target::{MatchSource, RequestMatch, Slot, StringMatch, WorkloadStatus};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// The Docker label carrying the version a task definition revision was made for.
pub const VERSION_LABEL: &str = "dax.version";

pub const CONFIG_SCHEMA: &str = r#"{"type":"object","required":["cluster","listener_arn","stable_target_group_arn","candidate_target_group_arn"],"properties":{"region":{"type":"string"},"cluster":{"type":"string"},"listener_arn":{"type":"string"},"stable_target_group_arn":{"type":"string"},"candidate_target_group_arn":{"type":"string"},"container":{"type":"string"},"ab_rule_priority":{"type":"integer","minimum":1,"maximum":50000}},"additionalProperties":false}"#;

/// The plugin's `[plugins.NAME.config]` table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Default: the host's AWS region.
    #[serde(default)]
    pub region: Option<String>,
    /// Cluster name or ARN.
    pub cluster: String,
    /// The ALB listener whose default action splits traffic.
    pub listener_arn: String,
    /// The target group the stable service is registered in.
    pub stable_target_group_arn: String,
    /// The target group the candidate service is registered in.
    pub candidate_target_group_arn: String,
    /// The container whose image `artifact` replaces. Default: the first one.
    #[serde(default)]
    pub container: Option<String>,
    /// Priority of the listener rule the plugin owns for A/B matches.
    #[serde(default = "default_priority")]
    pub ab_rule_priority: u32,
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
            ("stable_target_group_arn", &c.stable_target_group_arn, ":targetgroup/"),
            ("candidate_target_group_arn", &c.candidate_target_group_arn, ":targetgroup/"),
        ] {
            if !arn.starts_with("arn:") || !arn.contains(":elasticloadbalancing:") || !arn.contains(kind) {
                return Err((field.into(), format!("`{arn}` is not an ELBv2 {} ARN", kind.trim_matches(&[':', '/'][..]))));
            }
        }
        if c.stable_target_group_arn == c.candidate_target_group_arn {
            return Err(("candidate_target_group_arn".into(), "must differ from stable_target_group_arn".into()));
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
    v.get(key).and_then(Value::as_u64).unwrap_or(0).min(u32::MAX as u64) as u32
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
pub fn new_revision(stable_td: &Value, c: &Config, image: &str, version: &str) -> Result<Value, String> {
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
            .ok_or_else(|| format!("the stable task definition has no container `{name}` (config.container)"))?,
        None => 0,
    };
    let container = containers.get_mut(index).and_then(Value::as_object_mut).ok_or("the stable task definition has no container")?;
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
pub fn candidate_service(stable: &Value, c: &Config, name: &str, task_definition: &str, replicas: u32) -> Value {
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
        return Err(format!("an ALB rule takes at most {MAX_VALUES} condition values; got {} matches", matches.len()));
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
            MatchSource::Cookie => ("Cookie".to_string(), format!("*{}={}*", m.name, value.trim_matches('*'))),
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
pub fn forward(prefix: &str, stable_tg: &str, stable_weight: u8, candidate_tg: &str, candidate_weight: u8) -> Vec<(String, String)> {
    let p = format!("{prefix}.member.1.");
    vec![
        (format!("{p}Type"), "forward".into()),
        (format!("{p}ForwardConfig.TargetGroups.member.1.TargetGroupArn"), stable_tg.into()),
        (format!("{p}ForwardConfig.TargetGroups.member.1.Weight"), stable_weight.to_string()),
        (format!("{p}ForwardConfig.TargetGroups.member.2.TargetGroupArn"), candidate_tg.into()),
        (format!("{p}ForwardConfig.TargetGroups.member.2.Weight"), candidate_weight.to_string()),
    ]
}

/// A service's status: ready = running tasks, bounded by healthy targets when its target
/// group has any registered.
pub fn readiness(service: &Value, target_states: &[String], version: String) -> WorkloadStatus {
    let desired = count(service, "desiredCount");
    let running = count(service, "runningCount");
    let pending = count(service, "pendingCount");
    let healthy = target_states.iter().filter(|s| *s == "healthy").count() as u32;
    let ready = if target_states.is_empty() { running } else { running.min(healthy) };
    let updated = service
        .get("deployments")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .find(|d| str_of(d, "status") == "PRIMARY")
        .map(|d| count(d, "runningCount"))
        .filter(|n| *n > 0)
        .unwrap_or(running);
    let mut message = format!("{}: {running}/{desired} running, {pending} pending", str_of(service, "serviceName"));
    if !target_states.is_empty() {
        message.push_str(&format!(", {healthy}/{} targets healthy", target_states.len()));
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
    WorkloadStatus { desired, ready, updated: updated.min(desired), version, message }
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
        assert_eq!(Config::parse(&bad.to_string()).unwrap_err().0, "listener_arn");
        assert!(Config::parse(r#"{"cluster":"p","typo":1}"#).is_err());
    }

    #[test]
    fn a_new_revision_changes_the_image_and_labels_the_version() {
        let td = json!({"family": "web", "revision": 3, "status": "ACTIVE", "taskDefinitionArn": "arn:x",
            "containerDefinitions": [{"name": "sidecar", "image": "envoy"}, {"name": "app", "image": "web:1", "dockerLabels": {"team": "a"}}],
            "requiresCompatibilities": ["FARGATE"], "cpu": "256", "memory": "512", "networkMode": "awsvpc"});
        let r = new_revision(&td, &config(), "web:2", "v2").unwrap();
        assert!(r.get("revision").is_none() && r.get("taskDefinitionArn").is_none() && r.get("status").is_none());
        assert_eq!(r["containerDefinitions"][0]["image"], "envoy");
        assert_eq!(r["containerDefinitions"][1]["image"], "web:2");
        assert_eq!(r["containerDefinitions"][1]["dockerLabels"], json!({"team": "a", "dax.version": "v2"}));
        assert_eq!(version_of(&r), "v2");
        let mut c = config();
        c.container = Some("nope".into());
        assert!(new_revision(&td, &c, "web:2", "v2").unwrap_err().contains("config.container"));
    }

    #[test]
    fn the_candidate_service_uses_the_candidate_target_group() {
        let stable = json!({"serviceName": "web", "launchType": "FARGATE",
            "networkConfiguration": {"awsvpcConfiguration": {"subnets": ["s1"]}},
            "loadBalancers": [{"targetGroupArn": "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/blue/1", "containerName": "app", "containerPort": 8080}]});
        let s = candidate_service(&stable, &config(), "web-candidate", "arn:td:4", 2);
        assert_eq!(s["loadBalancers"][0]["targetGroupArn"], "arn:aws:elasticloadbalancing:us-east-1:1:targetgroup/green/2");
        assert_eq!(s["loadBalancers"][0]["containerPort"], 8080);
        assert_eq!(s["desiredCount"], 2);
        assert_eq!(s["networkConfiguration"]["awsvpcConfiguration"]["subnets"][0], "s1");
    }

    #[test]
    fn ab_matches_become_header_conditions() {
        let m = |source, name: &str, value| RequestMatch { source, name: name.into(), value };
        let p = rule_conditions(&[
            m(MatchSource::Header, "x-canary", StringMatch::Exact("always".into())),
            m(MatchSource::Cookie, "beta", StringMatch::Exact("1".into())),
            m(MatchSource::Header, "user-agent", StringMatch::Prefix("Mozilla".into())),
        ])
        .unwrap();
        assert!(p.contains(&("Conditions.member.1.HttpHeaderConfig.HttpHeaderName".into(), "x-canary".into())));
        assert!(p.contains(&("Conditions.member.2.HttpHeaderConfig.Values.member.1".into(), "*beta=1*".into())));
        assert!(p.contains(&("Conditions.member.3.HttpHeaderConfig.Values.member.1".into(), "Mozilla*".into())));
        assert!(rule_conditions(&[m(MatchSource::Header, "x", StringMatch::Regex("a.*".into()))]).unwrap_err().contains("not regular expressions"));
        assert!(rule_conditions(&[m(MatchSource::Header, "x", StringMatch::Exact("a*".into()))]).is_err());
    }

    #[test]
    fn readiness_counts_running_tasks_bounded_by_healthy_targets() {
        let svc = json!({"serviceName": "web", "desiredCount": 3, "runningCount": 3, "pendingCount": 0});
        assert_eq!(readiness(&svc, &[], "v2".into()).ready, 3);
        let states = vec!["healthy".to_string(), "unhealthy".into(), "initial".into()];
        let s = readiness(&svc, &states, "v2".into());
        assert_eq!((s.desired, s.ready), (3, 1));
        assert!(s.message.contains("1/3 targets healthy"), "{}", s.message);
        let never = json!({"serviceName": "web", "desiredCount": 2, "runningCount": 0, "pendingCount": 2});
        assert_eq!(readiness(&never, &[], String::new()).ready, 0);
    }

    #[test]
    fn weights_go_into_one_forward_action() {
        let p = forward("DefaultActions", "A", 90, "B", 10);
        assert_eq!(p[0], ("DefaultActions.member.1.Type".into(), "forward".into()));
        assert_eq!(p[2].1, "90");
        assert_eq!(p[4].1, "10");
    }
}
