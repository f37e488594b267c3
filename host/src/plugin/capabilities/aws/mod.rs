//! `dax:host/aws`: AWS API calls the host signs and sends for a plugin.
//!
//! ```text
//!  plugin ──call(service, action, region?, json|query body)──▶ AwsView (this file)
//!     shape ─▶ grant: action? ─▶ region? ─▶ every ARN in the body? ─▶ encode
//!     client.rs: credentials (AWS SDK chain), SigV4, send, retry throttling/5xx ─▶ AWS
//! ```
//!
//! The plugin holds no key: the AWS SDK's providers load credentials in the host, and the
//! host builds the parts that decide what is called (URL, `Action`, `X-Amz-Target`) from the
//! checked service and action, so the body cannot name another action.

mod client;
pub mod grant;
mod names;

pub use client::AwsAccess;
pub use grant::AwsGrant;

use crate::plugin::bindings::capabilities::dax::host::aws::{
    self as wit, AwsError, AwsRequest, AwsResponse, Host, Protocol,
};
use crate::plugin::capabilities::log::escape;
use crate::plugin::sandbox::{push_denial, PerCall, PluginState};
use client::Outgoing;
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// Largest request body a plugin may hand over.
pub const MAX_REQUEST_BYTES: usize = 1024 * 1024;

/// Link `dax:host/aws`; each call sees only [`AwsView`], not the whole store.
pub fn add_to_linker(linker: &mut Linker<PluginState>) -> anyhow::Result<()> {
    wit::add_to_linker::<PluginState, AwsCapability>(linker, |state| AwsView {
        plugin: state.plugin.clone(),
        access: state.aws.clone(),
        denials: state.denials.clone(),
    })?;
    Ok(())
}

struct AwsCapability;
impl HasData for AwsCapability {
    type Data<'a> = AwsView;
}

/// What a `dax:host/aws` call may use of its plugin instance.
pub struct AwsView {
    plugin: Arc<str>,
    /// `None` without a `grants.aws` table: every call is refused.
    access: Option<Arc<AwsAccess>>,
    denials: Arc<PerCall<Vec<String>>>,
}

/// AWS's refusal, from either error format.
pub use wit::ServiceError;

/// Why a call failed, before it becomes the WIT `aws-error`.
#[derive(Debug)]
pub enum AwsFailure {
    Denied(String),
    Service(ServiceError),
    Unavailable(String),
    TooLarge(String),
    Invalid(String),
}

impl From<AwsFailure> for AwsError {
    fn from(f: AwsFailure) -> Self {
        match f {
            AwsFailure::Denied(m) => AwsError::Denied(m),
            AwsFailure::Service(e) => AwsError::Service(e),
            AwsFailure::Unavailable(m) => AwsError::Unavailable(m),
            AwsFailure::TooLarge(m) => AwsError::TooLarge(m),
            AwsFailure::Invalid(m) => AwsError::Invalid(m),
        }
    }
}

impl Host for AwsView {
    async fn call(&mut self, req: AwsRequest) -> Result<AwsResponse, AwsError> {
        let result = match &self.access {
            None => Err(AwsFailure::Denied(format!(
                "plugin `{p}` has no AWS grant: add [plugins.{p}.grants.aws] with the actions and regions it needs",
                p = self.plugin
            ))),
            Some(access) => call(access, req).await,
        };
        if let Err(AwsFailure::Denied(why)) = &result {
            push_denial(&self.plugin, &self.denials, why.clone());
        }
        result.map_err(AwsError::from)
    }
}

/// Check one request against the grant, encode it, and send it.
async fn call(access: &AwsAccess, req: AwsRequest) -> Result<AwsResponse, AwsFailure> {
    let plugin = &*access.plugin;
    let grant = &access.grant;
    if !grant::is_service_name(&req.service) {
        return Err(AwsFailure::Invalid(format!(
            "`{}` is not an AWS service name as IAM spells it (e.g. \"ecs\", \"elasticloadbalancing\")",
            escape(&req.service)
        )));
    }
    if req.action.is_empty()
        || req.action.len() > 128
        || !req.action.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(AwsFailure::Invalid(format!(
            "`{}` is not an AWS action name (e.g. \"UpdateService\")",
            escape(&req.action)
        )));
    }
    grant
        .allow_action(plugin, &req.service, &req.action)
        .map_err(AwsFailure::Denied)?;
    let region = match req.region {
        Some(r) => r,
        None => access.default_region().await.ok_or_else(|| {
            AwsFailure::Invalid(
                "no region given and none configured for the host (AWS_REGION, the profile's region): pass one".into(),
            )
        })?,
    };
    if !grant::is_region(&region) {
        return Err(AwsFailure::Invalid(format!(
            "`{}` is not a region name (e.g. \"us-east-1\")",
            escape(&region)
        )));
    }
    grant
        .allow_region(plugin, &region)
        .map_err(AwsFailure::Denied)?;
    let named = match grant.resources {
        Some(_) => expanded_names(plugin, grant, &req.service, &region, &req.body)?,
        None => Vec::new(),
    };
    let out = encode(&req.service, &req.action, region, req.body)?;
    let arns = arns_in(&out);
    grant
        .allow_resources(plugin, arns.iter().chain(&named).map(String::as_str))
        .map_err(AwsFailure::Denied)?;
    let answer = access.send(&out).await?;
    Ok(AwsResponse {
        status: answer.status,
        body: answer.body,
        request_id: answer.request_id,
    })
}

/// The ARNs the bare names of a request resolve to (see names.rs), or the refusal of a name
/// that cannot be scoped.
fn expanded_names(
    plugin: &str,
    grant: &AwsGrant,
    service: &str,
    region: &str,
    body: &Protocol,
) -> Result<Vec<String>, AwsFailure> {
    let json = match body {
        Protocol::Json(j) => serde_json::from_str::<serde_json::Value>(&j.body).ok(),
        Protocol::Query(_) => None,
    };
    let query = match body {
        Protocol::Query(q) => Some(q.params.as_slice()),
        Protocol::Json(_) => None,
    };
    let mut arns = Vec::new();
    for n in names::bare_names(
        service,
        region,
        grant.account.as_deref(),
        json.as_ref(),
        query,
    ) {
        match n.arn {
            _ if n.malformed => {
                return Err(AwsFailure::Denied(format!(
                    "plugin `{plugin}` passed `{}` in `{}`, which is neither a resource name nor an ARN, so grants.aws.resources cannot scope it",
                    escape(&n.name),
                    escape(&n.field)
                )))
            }
            Some(arn) => arns.push(arn),
            None if service == "ecs" => {
                return Err(AwsFailure::Denied(format!(
                    "plugin `{plugin}` names `{}` in `{}` without an ARN, which grants.aws.resources cannot scope: set grants.aws.account of [plugins.{plugin}] (the account the credentials act in) so the host can expand names, or pass the full ARN",
                    escape(&n.name),
                    escape(&n.field)
                )))
            }
            None => {
                return Err(AwsFailure::Denied(format!(
                    "plugin `{plugin}` names `{}` in `{}` without an ARN, which grants.aws.resources cannot scope: pass the ARN instead (e.g. LoadBalancerArns / TargetGroupArns)",
                    escape(&n.name),
                    escape(&n.field)
                )))
            }
        }
    }
    Ok(arns)
}

/// Build the body and headers of the service's protocol. The action comes from the checked
/// request, never from the body.
fn encode(
    service: &str,
    action: &str,
    region: String,
    body: Protocol,
) -> Result<Outgoing, AwsFailure> {
    let (content_type, target, bytes) = match body {
        Protocol::Json(j) => {
            let content_type = match j.json_version.as_str() {
                "1.0" => "application/x-amz-json-1.0",
                "1.1" => "application/x-amz-json-1.1",
                other => {
                    return Err(AwsFailure::Invalid(format!(
                        "json-version `{}` is not 1.0 or 1.1",
                        escape(other)
                    )))
                }
            };
            if j.target_prefix.is_empty()
                || j.target_prefix.len() > 128
                || !j
                    .target_prefix
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.')
            {
                return Err(AwsFailure::Invalid(format!(
                    "`{}` is not a JSON target prefix (e.g. \"AmazonEC2ContainerServiceV20141113\")",
                    escape(&j.target_prefix)
                )));
            }
            if j.body.len() > MAX_REQUEST_BYTES {
                return Err(AwsFailure::Invalid(format!(
                    "the request body is larger than {} KiB",
                    MAX_REQUEST_BYTES / 1024
                )));
            }
            let value: serde_json::Value = serde_json::from_str(&j.body)
                .map_err(|e| AwsFailure::Invalid(format!("the request body is not JSON: {e}")))?;
            if !value.is_object() {
                return Err(AwsFailure::Invalid(
                    "the request body must be a JSON object (`{}` for none)".into(),
                ));
            }
            (
                content_type,
                Some(format!("{}.{action}", j.target_prefix)),
                j.body.into_bytes(),
            )
        }
        Protocol::Query(q) => {
            if q.version.is_empty() || !q.version.chars().all(|c| c.is_ascii_digit() || c == '-') {
                return Err(AwsFailure::Invalid(format!(
                    "`{}` is not an API version (e.g. \"2015-12-01\")",
                    escape(&q.version)
                )));
            }
            if let Some((k, _)) = q.params.iter().find(|(k, _)| {
                k.eq_ignore_ascii_case("Action") || k.eq_ignore_ascii_case("Version")
            }) {
                return Err(AwsFailure::Invalid(format!(
                    "parameter `{}` is set by the host from the request's action and version",
                    escape(k)
                )));
            }
            let mut form = form_urlencoded::Serializer::new(String::new());
            form.append_pair("Action", action);
            form.append_pair("Version", &q.version);
            for (k, v) in &q.params {
                form.append_pair(k, v);
            }
            let text = form.finish();
            if text.len() > MAX_REQUEST_BYTES {
                return Err(AwsFailure::Invalid(format!(
                    "the request body is larger than {} KiB",
                    MAX_REQUEST_BYTES / 1024
                )));
            }
            (
                "application/x-www-form-urlencoded; charset=utf-8",
                None,
                text.into_bytes(),
            )
        }
    };
    Ok(Outgoing {
        service: service.to_string(),
        region,
        content_type,
        target,
        body: bytes,
    })
}

/// Every `arn:` value of the request: all JSON strings, or all Query parameter values.
fn arns_in(out: &Outgoing) -> Vec<String> {
    fn walk(v: &serde_json::Value, into: &mut Vec<String>) {
        match v {
            serde_json::Value::String(s) if s.starts_with("arn:") => into.push(s.clone()),
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, into)),
            serde_json::Value::Object(o) => o.values().for_each(|v| walk(v, into)),
            _ => {}
        }
    }
    let mut arns = Vec::new();
    if out.target.is_some() {
        if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&out.body) {
            walk(&v, &mut arns);
        }
    } else {
        arns.extend(
            form_urlencoded::parse(&out.body)
                .filter(|(_, v)| v.starts_with("arn:"))
                .map(|(_, v)| v.into_owned()),
        );
    }
    arns
}

#[cfg(test)]
mod tests {
    use super::*;
    use wit::{JsonBody, QueryBody};

    #[test]
    fn the_action_sent_is_the_action_checked() {
        let out = encode(
            "ecs",
            "DescribeServices",
            "eu-west-1".into(),
            Protocol::Json(JsonBody {
                target_prefix: "AmazonEC2ContainerServiceV20141113".into(),
                json_version: "1.1".into(),
                body: r#"{"cluster":"arn:aws:ecs:eu-west-1:1:cluster/prod","services":["arn:aws:ecs:eu-west-1:1:service/prod/web"]}"#.into(),
            }),
        )
        .unwrap();
        assert_eq!(
            out.target.as_deref(),
            Some("AmazonEC2ContainerServiceV20141113.DescribeServices")
        );
        assert_eq!(arns_in(&out).len(), 2);
        // A query body cannot carry a second Action.
        let smuggled = encode(
            "elasticloadbalancing",
            "DescribeListeners",
            "eu-west-1".into(),
            Protocol::Query(QueryBody {
                version: "2015-12-01".into(),
                params: vec![("action".into(), "DeleteLoadBalancer".into())],
            }),
        );
        assert!(matches!(smuggled, Err(AwsFailure::Invalid(m)) if m.contains("set by the host")));
        let out = encode(
            "elasticloadbalancing",
            "ModifyListener",
            "eu-west-1".into(),
            Protocol::Query(QueryBody {
                version: "2015-12-01".into(),
                params: vec![(
                    "ListenerArn".into(),
                    "arn:aws:elasticloadbalancing:x&y=z".into(),
                )],
            }),
        )
        .unwrap();
        let body = String::from_utf8(out.body.clone()).unwrap();
        assert!(
            body.starts_with("Action=ModifyListener&Version=2015-12-01&"),
            "{body}"
        );
        assert_eq!(arns_in(&out), vec!["arn:aws:elasticloadbalancing:x&y=z"]);
    }
}
