//! The ECS and ELBv2 calls the plugin makes, through the host's `dax:host/aws` (the host
//! signs them; this plugin never sees a key).

use crate::plan::{self, Config};
use crate::xml::Node;
use dax_sdk::target::aws::{self, AwsError, AwsRequest, JsonBody, Protocol, QueryBody};
use dax_sdk::target::PluginError;
use serde_json::{json, Value};

const ECS_TARGET: &str = "AmazonEC2ContainerServiceV20141113";
const ELBV2_VERSION: &str = "2015-12-01";

pub struct Api<'a> {
    c: &'a Config,
}

/// AWS's refusal as a plugin error, naming the call.
fn failure(action: &str, e: AwsError) -> PluginError {
    match e {
        // The operator must add a grant: the message says which.
        AwsError::Denied(m) => PluginError::InvalidConfig(m),
        AwsError::Service(s)
            if s.code.ends_with("NotFoundException") || s.code.ends_with("NotFound") =>
        {
            PluginError::NotFound(format!("{action}: {}: {}", s.code, s.message))
        }
        AwsError::Service(s) if s.status >= 500 || s.code.contains("Throttl") => {
            PluginError::Unavailable(format!("{action}: {}: {}", s.code, s.message))
        }
        AwsError::Service(s) => {
            PluginError::Internal(format!("{action}: {} {}: {}", s.status, s.code, s.message))
        }
        AwsError::Unavailable(m) => PluginError::Unavailable(format!("{action}: {m}")),
        AwsError::TooLarge(m) => PluginError::Unavailable(format!("{action}: {m}")),
        AwsError::Invalid(m) => PluginError::Internal(format!("{action}: {m}")),
    }
}

impl<'a> Api<'a> {
    pub fn new(c: &'a Config) -> Self {
        Api { c }
    }

    fn ecs(&self, action: &str, body: Value) -> Result<Value, PluginError> {
        let request = AwsRequest {
            service: "ecs".into(),
            action: action.into(),
            region: self.c.region.clone(),
            body: Protocol::Json(JsonBody {
                target_prefix: ECS_TARGET.into(),
                json_version: "1.1".into(),
                body: body.to_string(),
            }),
        };
        let answer = aws::call(&request).map_err(|e| failure(&format!("ecs:{action}"), e))?;
        serde_json::from_str(&answer.body)
            .map_err(|e| PluginError::Internal(format!("ecs:{action} answered no JSON: {e}")))
    }

    fn elb(&self, action: &str, params: Vec<(String, String)>) -> Result<Node, PluginError> {
        let request = AwsRequest {
            service: "elasticloadbalancing".into(),
            action: action.into(),
            region: self.c.region.clone(),
            body: Protocol::Query(QueryBody {
                version: ELBV2_VERSION.into(),
                params,
            }),
        };
        let answer = aws::call(&request)
            .map_err(|e| failure(&format!("elasticloadbalancing:{action}"), e))?;
        let doc = Node::parse(&answer.body)
            .map_err(|e| PluginError::Internal(format!("elasticloadbalancing:{action}: {e}")))?;
        Ok(doc
            .child(&format!("{action}Result"))
            .cloned()
            .unwrap_or_default())
    }

    /// A service that exists and is not deleted.
    pub fn service(&self, name: &str) -> Result<Option<Value>, PluginError> {
        let answer = self.ecs(
            "DescribeServices",
            json!({"cluster": self.c.cluster, "services": [name]}),
        )?;
        Ok(answer["services"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| {
                plan::str_of(s, "serviceName") == name && plan::str_of(s, "status") != "INACTIVE"
            })
            .cloned())
    }

    /// A service with its tags (mode = "rolling" keeps its rollout in them).
    pub fn service_with_tags(&self, name: &str) -> Result<Option<Value>, PluginError> {
        let answer = self.ecs(
            "DescribeServices",
            json!({"cluster": self.c.cluster, "services": [name], "include": ["TAGS"]}),
        )?;
        Ok(answer["services"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| {
                plan::str_of(s, "serviceName") == name && plan::str_of(s, "status") != "INACTIVE"
            })
            .cloned())
    }

    /// Set tags on a resource (overwriting the values of existing keys).
    pub fn tag(&self, arn: &str, tags: &[(&str, &str)]) -> Result<(), PluginError> {
        let tags: Vec<Value> = tags
            .iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect();
        self.ecs("TagResource", json!({"resourceArn": arn, "tags": tags}))
            .map(drop)
    }

    /// `UpdateService` with a body built by the caller (plan::rolling_update).
    pub fn update_service_with(&self, body: Value) -> Result<(), PluginError> {
        self.ecs("UpdateService", body).map(drop)
    }

    pub fn task_definition(&self, arn: &str) -> Result<Value, PluginError> {
        let answer = self.ecs("DescribeTaskDefinition", json!({"taskDefinition": arn}))?;
        Ok(answer["taskDefinition"].clone())
    }

    pub fn register_task_definition(&self, body: &Value) -> Result<String, PluginError> {
        let answer = self.ecs("RegisterTaskDefinition", body.clone())?;
        let arn = plan::str_of(&answer["taskDefinition"], "taskDefinitionArn");
        if arn.is_empty() {
            return Err(PluginError::Internal(
                "ecs:RegisterTaskDefinition answered no taskDefinitionArn".into(),
            ));
        }
        Ok(arn.to_string())
    }

    pub fn create_service(&self, body: &Value) -> Result<(), PluginError> {
        self.ecs("CreateService", body.clone()).map(drop)
    }

    pub fn update_service(
        &self,
        name: &str,
        task_definition: Option<&str>,
        desired: Option<u32>,
    ) -> Result<(), PluginError> {
        let mut body = json!({"cluster": self.c.cluster, "service": name});
        if let Some(td) = task_definition {
            body["taskDefinition"] = json!(td);
        }
        if let Some(n) = desired {
            body["desiredCount"] = json!(n);
        }
        self.ecs("UpdateService", body).map(drop)
    }

    /// Scale a service to zero and delete it; nothing to do when it is gone already.
    pub fn delete_service(&self, name: &str) -> Result<(), PluginError> {
        if self.service(name)?.is_none() {
            return Ok(());
        }
        self.update_service(name, None, Some(0))?;
        match self.ecs(
            "DeleteService",
            json!({"cluster": self.c.cluster, "service": name, "force": true}),
        ) {
            Ok(_) | Err(PluginError::NotFound(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The health states of a target group's registered targets.
    pub fn target_health(&self, target_group: &str) -> Result<Vec<String>, PluginError> {
        let result = self.elb(
            "DescribeTargetHealth",
            vec![("TargetGroupArn".into(), target_group.into())],
        )?;
        Ok(result
            .child("TargetHealthDescriptions")
            .map(|d| {
                d.members()
                    .map(|m| {
                        m.path(&["TargetHealth", "State"])
                            .map(|s| s.text.trim().to_string())
                            .unwrap_or_default()
                    })
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The listener's default action forwards to both target groups with these weights.
    pub fn set_weights(&self, stable: u8, candidate: u8) -> Result<(), PluginError> {
        let mut params = vec![("ListenerArn".to_string(), self.c.listener_arn.clone())];
        params.extend(plan::forward(
            "DefaultActions",
            &self.c.stable_target_group_arn,
            stable,
            &self.c.candidate_target_group_arn,
            candidate,
        ));
        self.elb("ModifyListener", params).map(drop)
    }

    /// The ARN of the A/B rule (the listener's rule at `ab_rule_priority`).
    fn ab_rule(&self) -> Result<Option<String>, PluginError> {
        let result = self.elb(
            "DescribeRules",
            vec![("ListenerArn".into(), self.c.listener_arn.clone())],
        )?;
        let priority = self.c.ab_rule_priority.to_string();
        Ok(result
            .child("Rules")
            .and_then(|rules| rules.members().find(|r| r.text_of("Priority") == priority))
            .map(|r| r.text_of("RuleArn").to_string()))
    }

    /// Send requests matching `conditions` to the candidate target group.
    pub fn put_ab_rule(&self, conditions: &[(String, String)]) -> Result<(), PluginError> {
        let action = vec![
            ("Actions.member.1.Type".to_string(), "forward".to_string()),
            (
                "Actions.member.1.TargetGroupArn".to_string(),
                self.c.candidate_target_group_arn.clone(),
            ),
        ];
        let mut params = match self.ab_rule()? {
            Some(arn) => vec![("RuleArn".to_string(), arn)],
            None => vec![
                ("ListenerArn".to_string(), self.c.listener_arn.clone()),
                ("Priority".to_string(), self.c.ab_rule_priority.to_string()),
            ],
        };
        let modify = params[0].0 == "RuleArn";
        params.extend(conditions.iter().cloned());
        params.extend(action);
        self.elb(if modify { "ModifyRule" } else { "CreateRule" }, params)
            .map(drop)
    }

    pub fn remove_ab_rule(&self) -> Result<(), PluginError> {
        match self.ab_rule()? {
            Some(arn) => match self.elb("DeleteRule", vec![("RuleArn".into(), arn)]) {
                Ok(_) | Err(PluginError::NotFound(_)) => Ok(()),
                Err(e) => Err(e),
            },
            None => Ok(()),
        }
    }
}
