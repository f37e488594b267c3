//! Bare resource names in a request, as the ARNs AWS resolves them to.
//!
//! ECS takes `"cluster": "prod"`, `"service": "web"` as readily as full ARNs, and AWS resolves
//! a name in the caller's account and the request's region. So a grant's `resources` patterns
//! would see nothing of a request made with names: before such a request is signed, the host
//! expands every name in a resource field to the ARN AWS would act on (with the request's
//! region and `grants.aws.account`) and checks it like any other ARN. Without `account`, a
//! bare name under `resources` is refused. ELBv2 takes ARNs everywhere except the `Names` of
//! its Describe calls, which are refused under `resources` (use the ARNs).
//!
//! Services without a table here (e.g. CloudWatch, whose metrics are no resources) have only
//! their ARNs checked.

use serde_json::Value;

/// A resource named without an ARN, and the ARN AWS resolves it to (`None` when it cannot be
/// expanded: no account known, or a kind that only takes ARNs under `resources`).
#[derive(Debug, PartialEq)]
pub struct BareName {
    pub field: String,
    pub name: String,
    pub arn: Option<String>,
    /// Not a name at all (`../prod/web`): AWS might read part of it as a path.
    pub malformed: bool,
}

/// The partition of a region: what `arn:PARTITION:` says.
fn partition(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else if region.starts_with("us-iso-") {
        "aws-iso"
    } else if region.starts_with("us-isob-") {
        "aws-iso-b"
    } else {
        "aws"
    }
}

/// The last `/` segment of an ARN, or the name itself.
fn short(name_or_arn: &str) -> &str {
    if name_or_arn.starts_with("arn:") {
        name_or_arn.rsplit('/').next().unwrap_or(name_or_arn)
    } else {
        name_or_arn
    }
}

/// What kind of ECS resource a top-level request field names.
#[derive(Clone, Copy)]
enum EcsKind {
    Cluster,
    Service,
    TaskDefinition,
    Task,
    TaskSet,
    ContainerInstance,
}

fn ecs_kind(field: &str) -> Option<EcsKind> {
    Some(match field {
        "cluster" | "clusters" => EcsKind::Cluster,
        "service" | "services" | "serviceName" => EcsKind::Service,
        "taskDefinition" | "taskDefinitions" | "family" => EcsKind::TaskDefinition,
        "task" | "tasks" => EcsKind::Task,
        "taskSet" | "taskSets" | "primaryTaskSet" => EcsKind::TaskSet,
        "containerInstance" | "containerInstances" => EcsKind::ContainerInstance,
        _ => return None,
    })
}

/// Every bare name in the top-level resource fields of an ECS JSON request.
fn ecs_names(region: &str, account: Option<&str>, body: &Value) -> Vec<BareName> {
    let Some(fields) = body.as_object() else {
        return Vec::new();
    };
    // Names inside a cluster resolve in the request's cluster ("default" when none is given).
    let cluster = fields
        .get("cluster")
        .and_then(Value::as_str)
        .map(short)
        .unwrap_or("default");
    let service = fields
        .get("service")
        .and_then(Value::as_str)
        .map(short)
        .unwrap_or("*");
    let mut names = Vec::new();
    for (field, value) in fields {
        let Some(kind) = ecs_kind(field) else {
            continue;
        };
        let values: Vec<&Value> = match value {
            Value::Array(a) => a.iter().collect(),
            v => vec![v],
        };
        for v in values {
            let Some(name) = v.as_str() else { continue };
            if name.starts_with("arn:") {
                continue; // checked as an ARN already
            }
            // ECS names are letters, digits, `-` and `_` (a task definition adds `:revision`).
            let allowed = |c: char| {
                c.is_ascii_alphanumeric()
                    || c == '-'
                    || c == '_'
                    || (c == ':' && matches!(kind, EcsKind::TaskDefinition))
            };
            if name.is_empty() || !name.chars().all(allowed) {
                names.push(BareName {
                    field: field.clone(),
                    name: name.to_string(),
                    arn: None,
                    malformed: true,
                });
                continue;
            }
            let resource = match kind {
                EcsKind::Cluster => format!("cluster/{name}"),
                EcsKind::Service => format!("service/{cluster}/{name}"),
                // `family` or `family:revision`; a family alone means its latest revision.
                EcsKind::TaskDefinition if name.contains(':') => format!("task-definition/{name}"),
                EcsKind::TaskDefinition => format!("task-definition/{name}:*"),
                EcsKind::Task => format!("task/{cluster}/{name}"),
                EcsKind::TaskSet => format!("task-set/{cluster}/{service}/{name}"),
                EcsKind::ContainerInstance => format!("container-instance/{cluster}/{name}"),
            };
            names.push(BareName {
                field: field.clone(),
                name: name.to_string(),
                arn: account
                    .map(|a| format!("arn:{}:ecs:{region}:{a}:{resource}", partition(region))),
                malformed: false,
            });
        }
    }
    names
}

/// ELBv2 names load balancers and target groups by name only in `Names.member.N` of its
/// Describe calls: those cannot be scoped (an ARN has an id the name does not tell).
fn elbv2_names(params: &[(String, String)]) -> Vec<BareName> {
    params
        .iter()
        .filter(|(k, v)| k.starts_with("Names.member.") && !v.starts_with("arn:"))
        .map(|(k, v)| BareName {
            field: k.clone(),
            name: v.clone(),
            arn: None,
            malformed: false,
        })
        .collect()
}

/// The bare names of one request to `service` (JSON body or Query parameters).
pub fn bare_names(
    service: &str,
    region: &str,
    account: Option<&str>,
    json: Option<&Value>,
    query: Option<&[(String, String)]>,
) -> Vec<BareName> {
    match (service, json, query) {
        ("ecs", Some(body), _) => ecs_names(region, account, body),
        ("elasticloadbalancing", _, Some(params)) => elbv2_names(params),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn ecs_names_become_the_arns_aws_resolves_them_to() {
        let body = json!({"cluster": "prod", "services": ["web", "arn:aws:ecs:eu-west-1:1:service/prod/api"],
            "taskDefinition": "web:3", "desiredCount": 2, "loadBalancers": [{"containerName": "app"}]});
        let arns: Vec<_> = bare_names("ecs", "eu-west-1", Some("123456789012"), Some(&body), None)
            .into_iter()
            .map(|n| n.arn.unwrap())
            .collect();
        assert_eq!(
            arns,
            vec![
                "arn:aws:ecs:eu-west-1:123456789012:cluster/prod",
                "arn:aws:ecs:eu-west-1:123456789012:service/prod/web",
                "arn:aws:ecs:eu-west-1:123456789012:task-definition/web:3",
            ]
        );
        // A service named without a cluster lives in `default`; a cluster ARN gives its name.
        let n = bare_names(
            "ecs",
            "cn-north-1",
            Some("1"),
            Some(&json!({"service": "web"})),
            None,
        );
        assert_eq!(
            n[0].arn.as_deref(),
            Some("arn:aws-cn:ecs:cn-north-1:1:service/default/web")
        );
        let body = json!({"cluster": "arn:aws:ecs:eu-west-1:1:cluster/prod", "service": "web", "family": "web"});
        let n = bare_names("ecs", "eu-west-1", Some("1"), Some(&body), None);
        let arns: Vec<_> = n.iter().filter_map(|n| n.arn.as_deref()).collect();
        assert!(
            arns.contains(&"arn:aws:ecs:eu-west-1:1:service/prod/web"),
            "{arns:?}"
        );
        assert!(
            arns.contains(&"arn:aws:ecs:eu-west-1:1:task-definition/web:*"),
            "{arns:?}"
        );
        // No account: the names are found but cannot be expanded.
        let n = bare_names(
            "ecs",
            "eu-west-1",
            None,
            Some(&json!({"cluster": "prod"})),
            None,
        );
        assert_eq!(
            n,
            vec![BareName {
                field: "cluster".into(),
                name: "prod".into(),
                arn: None,
                malformed: false
            }]
        );
        // A name with a path in it is no name.
        let n = bare_names(
            "ecs",
            "eu-west-1",
            Some("1"),
            Some(&json!({"service": "../prod/web"})),
            None,
        );
        assert!(n[0].malformed && n[0].arn.is_none(), "{n:?}");
    }

    #[test]
    fn elbv2_names_are_found_and_never_expanded() {
        let params = vec![
            ("Names.member.1".to_string(), "web".to_string()),
            (
                "LoadBalancerArns.member.1".to_string(),
                "arn:aws:elasticloadbalancing:x".to_string(),
            ),
        ];
        let n = bare_names(
            "elasticloadbalancing",
            "eu-west-1",
            Some("1"),
            None,
            Some(&params),
        );
        assert_eq!(n.len(), 1);
        assert_eq!((n[0].name.as_str(), n[0].arn.as_deref()), ("web", None));
        assert!(bare_names(
            "cloudwatch",
            "eu-west-1",
            Some("1"),
            Some(&json!({"a": "b"})),
            None
        )
        .is_empty());
    }
}
