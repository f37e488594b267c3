//! `[plugins.NAME.grants.aws]`: which AWS actions, regions and resources a plugin may use,
//! whose credentials, and where requests go. Checked on every call before anything is
//! signed; a refusal names the grant to add.

use crate::plugin::capabilities::bounds;
use crate::plugin::spec::duration_str;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use wildmatch::WildMatch;

/// Deadline of one call, retries included, when the grant sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// Largest answer handed to the plugin when the grant sets no `max_response_kib`.
pub const DEFAULT_MAX_RESPONSE_KIB: u64 = 4 * 1024;

/// The AWS grant of one plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AwsGrant {
    /// Actions as IAM spells them, `service:Action`; `*` wildcards in the action part
    /// (`ecs:Describe*`). Nothing else is signed.
    #[serde(default)]
    pub actions: Vec<String>,
    /// Regions the plugin may call, e.g. `["eu-west-1"]`.
    #[serde(default)]
    pub regions: Vec<String>,
    /// ARN patterns (`*` wildcards). When set, every `arn:` value anywhere in a request must
    /// match one of them; when absent, ARNs are not checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<String>>,
    /// The account the credentials act in (12 digits). With `resources`, bare resource names
    /// (`"cluster": "prod"`) are expanded to ARNs in this account and the request's region
    /// and checked; without it they are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account: Option<String>,
    /// Shared config/credentials profile. Default: `$AWS_PROFILE`, then `default`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub profile: Option<String>,
    /// A role the host assumes (STS AssumeRole) with the credentials it found.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_arn: Option<String>,
    /// Send every request to this URL instead of the service's AWS endpoint (a VPC
    /// endpoint, a proxy, or an emulator in tests), e.g. `http://127.0.0.1:5000`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Deadline of one call, retries of throttled and 5xx answers included, e.g. `"20s"`.
    #[serde(
        default,
        with = "duration_str::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Largest answer handed to the plugin, in KiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_response_kib: Option<u64>,
}

impl AwsGrant {
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    pub fn max_response_bytes(&self) -> usize {
        bounds::max_response_bytes(self.max_response_kib, DEFAULT_MAX_RESPONSE_KIB)
    }

    /// Check the grant's own shape at load time, for a plugin whose calls last at most
    /// `wall_timeout`: `Err((field, problem))`.
    pub fn check_shape(&self, wall_timeout: Duration) -> Result<(), (&'static str, String)> {
        if self.actions.is_empty() {
            return Err((
                "grants.aws.actions",
                "grants nothing: list the actions the plugin may call, e.g. actions = [\"ecs:DescribeServices\", \"elasticloadbalancing:ModifyListener\"]".into(),
            ));
        }
        for a in &self.actions {
            let ok = match a.split_once(':') {
                Some((service, action)) => {
                    is_service_name(service)
                        && !action.is_empty()
                        && action
                            .chars()
                            .all(|c| c.is_ascii_alphanumeric() || c == '*')
                }
                None => false,
            };
            if !ok {
                return Err((
                    "grants.aws.actions",
                    format!("`{a}` is not `service:Action` (e.g. \"ecs:UpdateService\", \"ecs:Describe*\"); the service part takes no wildcard"),
                ));
            }
        }
        if self.regions.is_empty() {
            return Err((
                "grants.aws.regions",
                "grants nothing: list the regions the plugin may call, e.g. regions = [\"eu-west-1\"]".into(),
            ));
        }
        if let Some(r) = self.regions.iter().find(|r| !is_region(r)) {
            return Err((
                "grants.aws.regions",
                format!(
                    "`{r}` is not a region name (e.g. \"us-east-1\"); wildcards are not accepted"
                ),
            ));
        }
        if let Some(patterns) = &self.resources {
            if let Some(p) = patterns.iter().find(|p| !p.starts_with("arn:")) {
                return Err((
                    "grants.aws.resources",
                    format!("`{p}` is not an ARN pattern (e.g. \"arn:aws:ecs:eu-west-1:123456789012:service/prod/*\")"),
                ));
            }
        }
        if let Some(a) = &self.account {
            if a.len() != 12 || !a.chars().all(|c| c.is_ascii_digit()) {
                return Err((
                    "grants.aws.account",
                    format!("`{a}` is not an AWS account id (12 digits, e.g. \"123456789012\")"),
                ));
            }
        }
        if let Some(e) = &self.endpoint {
            match url_scheme_host(e) {
                Some(_) => {}
                None => {
                    return Err((
                        "grants.aws.endpoint",
                        format!("`{e}` is not an http(s) URL (e.g. \"https://vpce-1234.ecs.eu-west-1.vpce.amazonaws.com\")"),
                    ))
                }
            }
        }
        bounds::check_timeout(
            "grants.aws.timeout",
            self.timeout,
            DEFAULT_TIMEOUT,
            wall_timeout,
        )?;
        Ok(())
    }

    /// Whether `service:action` is granted.
    pub fn allow_action(&self, plugin: &str, service: &str, action: &str) -> Result<(), String> {
        let wanted = format!("{service}:{action}");
        let granted = self.actions.iter().any(|a| match a.split_once(':') {
            Some((s, pattern)) => s == service && WildMatch::new(pattern).matches(action),
            None => false,
        });
        if granted {
            Ok(())
        } else {
            Err(format!(
                "plugin `{plugin}` may not call `{wanted}`: add \"{wanted}\" to grants.aws.actions of [plugins.{plugin}] if it should"
            ))
        }
    }

    /// Whether `region` is granted.
    pub fn allow_region(&self, plugin: &str, region: &str) -> Result<(), String> {
        if self.regions.iter().any(|r| r == region) {
            Ok(())
        } else {
            Err(format!(
                "plugin `{plugin}` may not call AWS in region `{region}`: add \"{region}\" to grants.aws.regions of [plugins.{plugin}] if it should"
            ))
        }
    }

    /// Whether every ARN in `arns` matches `resources` (always, when the grant has none).
    pub fn allow_resources<'a>(
        &self,
        plugin: &str,
        arns: impl IntoIterator<Item = &'a str>,
    ) -> Result<(), String> {
        let Some(patterns) = &self.resources else {
            return Ok(());
        };
        for arn in arns {
            if !patterns.iter().any(|p| WildMatch::new(p).matches(arn)) {
                let arn = crate::plugin::capabilities::log::escape(arn);
                return Err(format!(
                    "plugin `{plugin}` may not touch `{arn}`: add a pattern matching it to grants.aws.resources of [plugins.{plugin}] if it should"
                ));
            }
        }
        Ok(())
    }
}

/// An IAM service prefix: `ecs`, `elasticloadbalancing`, `cloudwatch`.
pub fn is_service_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// `us-east-1`, `eu-central-2`, `us-gov-west-1`, `cn-north-1`: it goes into a host name.
pub fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.contains('-')
}

/// The scheme and host of an `http(s)://host[:port][/]` URL.
pub fn url_scheme_host(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "http" && scheme != "https" {
        return None;
    }
    let host = rest.trim_end_matches('/');
    if host.is_empty() || host.contains(['/', '?', '#', '@', ' ']) {
        return None;
    }
    Some((scheme, host))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default wall clock of a plugin call.
    const WALL: Duration = Duration::from_secs(10);

    fn grant() -> AwsGrant {
        toml::from_str(
            r#"
            actions = ["ecs:Describe*", "ecs:UpdateService", "elasticloadbalancing:ModifyListener"]
            regions = ["eu-west-1"]
            resources = ["arn:aws:ecs:eu-west-1:123456789012:*/prod*"]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn refusals_name_the_grant_to_add() {
        let g = grant();
        assert!(g.allow_action("e", "ecs", "DescribeServices").is_ok());
        assert!(g.allow_action("e", "ecs", "UpdateService").is_ok());
        assert!(g
            .allow_action("e", "ecs", "DeleteService")
            .unwrap_err()
            .contains(
                "add \"ecs:DeleteService\" to grants.aws.actions of [plugins.e] if it should"
            ));
        // The service part is exact: `ecs:Describe*` grants nothing of `ec2`.
        assert!(g.allow_action("e", "ec2", "DescribeInstances").is_err());
        assert!(g.allow_region("e", "eu-west-1").is_ok());
        assert!(g
            .allow_region("e", "us-east-1")
            .unwrap_err()
            .contains("add \"us-east-1\" to grants.aws.regions of [plugins.e]"));
        assert!(g
            .allow_resources("e", ["arn:aws:ecs:eu-west-1:123456789012:service/prod/web"])
            .is_ok());
        assert!(g
            .allow_resources("e", ["arn:aws:ecs:eu-west-1:999999999999:service/prod/web"])
            .unwrap_err()
            .contains("to grants.aws.resources of [plugins.e]"));
    }

    #[test]
    fn grant_shape_is_checked() {
        assert!(grant().check_shape(WALL).is_ok());
        for (toml, field) in [
            ("regions = [\"eu-west-1\"]", "grants.aws.actions"),
            (
                "actions = [\"*\"]\nregions = [\"eu-west-1\"]",
                "grants.aws.actions",
            ),
            (
                "actions = [\"*:Get*\"]\nregions = [\"eu-west-1\"]",
                "grants.aws.actions",
            ),
            ("actions = [\"ecs:Get*\"]", "grants.aws.regions"),
            (
                "actions = [\"ecs:Get*\"]\nregions = [\"*\"]",
                "grants.aws.regions",
            ),
            (
                "actions = [\"ecs:Get*\"]\nregions = [\"eu-west-1\"]\nresources = [\"*\"]",
                "grants.aws.resources",
            ),
            (
                "actions = [\"ecs:Get*\"]\nregions = [\"eu-west-1\"]\nendpoint = \"file:///x\"",
                "grants.aws.endpoint",
            ),
        ] {
            let g: AwsGrant = toml::from_str(toml).unwrap();
            assert_eq!(g.check_shape(WALL).unwrap_err().0, field, "{toml}");
        }
        assert!(toml::from_str::<AwsGrant>("secret_key = \"x\"").is_err());
    }

    #[test]
    fn regions_stay_one_host_label() {
        assert!(is_region("us-east-1"));
        assert!(is_region("us-gov-west-1"));
        for bad in [
            "",
            "us",
            "evil.com/x",
            "us-east-1.evil.com",
            "-us-east-1",
            "US-EAST-1",
        ] {
            assert!(!is_region(bad), "{bad}");
        }
    }
}
