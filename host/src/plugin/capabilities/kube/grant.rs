//! `[plugins.NAME.grants.kube]`: which cluster, and exactly which namespaces, resources and
//! verbs a plugin may use there. Checked on every call before anything reaches the API
//! server; a refusal names the grant to add.

use crate::plugin::capabilities::bounds;
use crate::plugin::spec::duration_str;
use serde::{Deserialize, Serialize};
use std::path::PathBuf;
use std::time::Duration;

/// Per-call deadline when the grant sets none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest answer handed to the plugin when the grant sets no `max_response_kib`.
pub const DEFAULT_MAX_RESPONSE_KIB: u64 = 4 * 1024;

/// The Kubernetes grant of one plugin.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KubeGrant {
    /// Kubeconfig file (relative to the TOML file's folder). Default: `$KUBECONFIG`, then
    /// `~/.kube/config`, then the in-cluster service account.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// Kubeconfig context. Default: the file's current context.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context: Option<String>,
    /// Namespaces the plugin may touch.
    #[serde(default)]
    pub namespaces: Vec<String>,
    /// Resources as `group/plural` (`apps/deployments`), or `plural` for the core group
    /// (`services`). Secrets and cluster-scoped kinds only when named here.
    #[serde(default)]
    pub resources: Vec<String>,
    /// `get` (also the `/status` subresource), `list`, `apply`, `patch`, `delete`.
    #[serde(default)]
    pub verbs: Vec<Verb>,
    /// Deadline of one call (discovery included), e.g. `"10s"`.
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

/// What a call does, as granted in `verbs`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verb {
    Get,
    List,
    Apply,
    Patch,
    Delete,
}

impl Verb {
    pub fn name(self) -> &'static str {
        match self {
            Verb::Get => "get",
            Verb::List => "list",
            Verb::Apply => "apply",
            Verb::Patch => "patch",
            Verb::Delete => "delete",
        }
    }
}

impl KubeGrant {
    pub fn timeout(&self) -> Duration {
        self.timeout.unwrap_or(DEFAULT_TIMEOUT)
    }

    pub fn max_response_bytes(&self) -> usize {
        bounds::max_response_bytes(self.max_response_kib, DEFAULT_MAX_RESPONSE_KIB)
    }

    /// Check the grant's own shape at load time, for a plugin whose calls last at most
    /// `wall_timeout`: `Err((field, problem))`.
    pub fn check_shape(&self, wall_timeout: Duration) -> Result<(), (&'static str, String)> {
        if self.verbs.is_empty() {
            return Err((
                "grants.kube.verbs",
                "grants nothing: list the calls the plugin may make, e.g. verbs = [\"get\", \"list\", \"apply\"]".into(),
            ));
        }
        if self.resources.is_empty() {
            return Err((
                "grants.kube.resources",
                "grants nothing: list resources as group/plural, e.g. resources = [\"apps/deployments\", \"services\"]".into(),
            ));
        }
        for r in &self.resources {
            let (group, plural) = split_resource(r);
            let ok_part = |s: &str| {
                !s.is_empty()
                    && s.chars().all(|c| {
                        c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.'
                    })
            };
            if !ok_part(plural)
                || (!group.is_empty() && !ok_part(group))
                || r.matches('/').count() > 1
            {
                return Err((
                    "grants.kube.resources",
                    format!("`{r}` is not `group/plural` or `plural` (e.g. \"apps/deployments\", \"services\"); wildcards are not accepted"),
                ));
            }
        }
        for ns in &self.namespaces {
            if !is_dns_label(ns) {
                return Err((
                    "grants.kube.namespaces",
                    format!("`{ns}` is not a namespace name; wildcards are not accepted"),
                ));
            }
        }
        bounds::check_timeout(
            "grants.kube.timeout",
            self.timeout,
            DEFAULT_TIMEOUT,
            wall_timeout,
        )?;
        Ok(())
    }

    /// Whether `verb` is granted; the refusal names what to add.
    pub fn allow_verb(&self, plugin: &str, verb: Verb) -> Result<(), String> {
        if self.verbs.contains(&verb) {
            Ok(())
        } else {
            Err(format!(
                "plugin `{plugin}` may not `{v}` Kubernetes objects: add \"{v}\" to grants.kube.verbs of [plugins.{plugin}] if it should",
                v = verb.name()
            ))
        }
    }

    /// Whether any granted resource is in API group `group` (checked before discovery, so a
    /// plugin cannot probe the cluster's kinds outside its grant).
    pub fn allow_group(&self, plugin: &str, group: &str, kind: &str) -> Result<(), String> {
        if self.resources.iter().any(|r| split_resource(r).0 == group) {
            Ok(())
        } else {
            Err(format!(
                "plugin `{plugin}` may not use {kind} objects (API group `{}`): add \"{}\" to grants.kube.resources of [plugins.{plugin}] if it should",
                display_group(group),
                resource_name(group, &format!("<{}s>", kind.to_ascii_lowercase()))
            ))
        }
    }

    /// Whether resource `group/plural` is granted.
    pub fn allow_resource(&self, plugin: &str, group: &str, plural: &str) -> Result<(), String> {
        let wanted = resource_name(group, plural);
        if self.resources.contains(&wanted) {
            Ok(())
        } else {
            Err(format!(
                "plugin `{plugin}` may not use `{wanted}`: add \"{wanted}\" to grants.kube.resources of [plugins.{plugin}] if it should"
            ))
        }
    }

    /// Whether namespace `ns` is granted.
    pub fn allow_namespace(&self, plugin: &str, ns: &str) -> Result<(), String> {
        if self.namespaces.iter().any(|n| n == ns) {
            Ok(())
        } else {
            Err(format!(
                "plugin `{plugin}` may not use namespace `{ns}`: add \"{ns}\" to grants.kube.namespaces of [plugins.{plugin}] if it should"
            ))
        }
    }
}

/// `apps/deployments` -> (`apps`, `deployments`); `services` -> (``, `services`).
fn split_resource(r: &str) -> (&str, &str) {
    match r.rsplit_once('/') {
        Some((g, p)) => (g, p),
        None => ("", r),
    }
}

/// How a resource is written in `resources`.
pub fn resource_name(group: &str, plural: &str) -> String {
    if group.is_empty() {
        plural.to_string()
    } else {
        format!("{group}/{plural}")
    }
}

fn display_group(group: &str) -> &str {
    if group.is_empty() {
        "core"
    } else {
        group
    }
}

/// RFC 1123 label: what namespaces are.
pub fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// An object name that stays one path segment: the name goes into the request's URL, so
/// `../secrets/x` or `a?watch=1` would reach other resources. Kubernetes names are at most
/// 253 characters of `[a-z0-9.-]`, plus `:` for RBAC names.
pub fn check_object_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name != "."
        && name != ".."
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | ':' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a Kubernetes object name (at most 253 characters of a-z, 0-9, `-`, `.`, `:`)",
            crate::plugin::capabilities::log::escape(&name.chars().take(300).collect::<String>())
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The default wall clock of a plugin call.
    const WALL: Duration = Duration::from_secs(10);

    fn grant() -> KubeGrant {
        toml::from_str(
            r#"
            namespaces = ["shop"]
            resources = ["apps/deployments", "services", "gateway.networking.k8s.io/httproutes"]
            verbs = ["get", "apply"]
            "#,
        )
        .unwrap()
    }

    #[test]
    fn refusals_name_the_grant_to_add() {
        let g = grant();
        assert!(g.allow_verb("k", Verb::Get).is_ok());
        assert!(g
            .allow_verb("k", Verb::Delete)
            .unwrap_err()
            .contains("add \"delete\" to grants.kube.verbs of [plugins.k]"));
        assert!(g.allow_resource("k", "apps", "deployments").is_ok());
        assert!(g.allow_resource("k", "", "services").is_ok());
        assert!(g
            .allow_resource("k", "", "secrets")
            .unwrap_err()
            .contains("add \"secrets\" to grants.kube.resources"));
        assert!(g
            .allow_group("k", "gateway.networking.k8s.io", "HTTPRoute")
            .is_ok());
        assert!(g
            .allow_group("k", "rbac.authorization.k8s.io", "ClusterRoleBinding")
            .unwrap_err()
            .contains("API group `rbac.authorization.k8s.io`"));
        assert!(g
            .allow_namespace("k", "kube-system")
            .unwrap_err()
            .contains("add \"kube-system\" to grants.kube.namespaces"));
    }

    #[test]
    fn grant_shape_is_checked() {
        let mut g = grant();
        assert!(g.check_shape(WALL).is_ok());
        g.resources.push("*".into());
        assert_eq!(g.check_shape(WALL).unwrap_err().0, "grants.kube.resources");
        let mut g = grant();
        g.namespaces.push("*".into());
        assert_eq!(g.check_shape(WALL).unwrap_err().0, "grants.kube.namespaces");
        let mut g = grant();
        g.verbs.clear();
        assert_eq!(g.check_shape(WALL).unwrap_err().0, "grants.kube.verbs");
        assert!(toml::from_str::<KubeGrant>("verbs = [\"escalate\"]").is_err());
    }

    #[test]
    fn names_cannot_leave_their_path_segment() {
        assert!(check_object_name("web-primary").is_ok());
        assert!(check_object_name("system:controller").is_ok());
        for bad in [
            "",
            ".",
            "..",
            "../secrets/x",
            "a/b",
            "a?watch=true",
            "a%2Fb",
            "a b",
            "a#b",
        ] {
            assert!(check_object_name(bad).is_err(), "{bad}");
        }
    }
}
