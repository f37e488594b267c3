//! The rules and the manifest walking, free of WIT types so they are unit-tested natively.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// Rule ids, their default severity and what they check.
pub const RULES: &[(&str, Sev, &str)] = &[
    (
        "no-root",
        Sev::High,
        "containers must not run as root (runAsNonRoot or a non-zero runAsUser)",
    ),
    (
        "no-privileged",
        Sev::Critical,
        "containers must not be privileged",
    ),
    (
        "resource-limits",
        Sev::Medium,
        "containers must set CPU and memory limits",
    ),
    (
        "no-latest-tag",
        Sev::Medium,
        "images must be pinned to a tag other than `latest` or a digest",
    ),
    (
        "read-only-root-fs",
        Sev::Low,
        "containers must use a read-only root filesystem",
    ),
    (
        "allowed-registries",
        Sev::High,
        "images must come from an allowed registry",
    ),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Sev {
    #[serde(alias = "unknown")]
    Unknown,
    #[serde(alias = "low")]
    Low,
    #[serde(alias = "medium")]
    Medium,
    #[serde(alias = "high")]
    High,
    #[serde(alias = "critical")]
    Critical,
}

/// `[plugins.manifest-policy.config]`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Registries (`ghcr.io`) or repository prefixes (`ghcr.io/acme`) images may come from.
    /// The `allowed-registries` rule only runs when this is non-empty.
    #[serde(default)]
    pub allowed_registries: Vec<String>,
    /// Per-rule settings: `rules.no-latest-tag = { enabled = false }`,
    /// `rules.no-root = { severity = "CRITICAL" }`.
    #[serde(default)]
    pub rules: BTreeMap<String, RuleConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    #[serde(default)]
    pub enabled: Option<bool>,
    #[serde(default)]
    pub severity: Option<Sev>,
}

impl Config {
    fn rule(&self, id: &str) -> Option<Sev> {
        let (_, default, _) = RULES.iter().find(|(r, _, _)| *r == id)?;
        let rc = self.rules.get(id);
        if rc.and_then(|r| r.enabled) == Some(false) {
            return None;
        }
        if id == "allowed-registries" && self.allowed_registries.is_empty() {
            return None;
        }
        Some(rc.and_then(|r| r.severity).unwrap_or(*default))
    }
}

/// Problems with a config, as `(field, message)`.
pub fn config_problems(config: &str) -> Vec<(String, String)> {
    let cfg: Config = match serde_json::from_str(config) {
        Ok(c) => c,
        Err(e) => return vec![(String::new(), e.to_string())],
    };
    let mut out = Vec::new();
    for id in cfg.rules.keys() {
        if !RULES.iter().any(|(r, _, _)| r == id) {
            let known: Vec<&str> = RULES.iter().map(|(r, _, _)| *r).collect();
            out.push((
                format!("rules.{id}"),
                format!("unknown rule `{id}`; rules are {}", known.join(", ")),
            ));
        }
    }
    if cfg.rules.get("allowed-registries").and_then(|r| r.enabled) == Some(true)
        && cfg.allowed_registries.is_empty()
    {
        out.push((
            "allowed_registries".into(),
            "the allowed-registries rule is enabled but no registry is listed: add e.g. allowed_registries = [\"ghcr.io/acme\"]".into(),
        ));
    }
    out
}

/// One rule violation.
#[derive(Debug, Clone, PartialEq)]
pub struct Violation {
    pub rule: String,
    pub severity: Sev,
    /// `Deployment/web`, `TaskDefinition/api`.
    pub resource: String,
    pub container: String,
    pub image: String,
    pub message: String,
    /// `manifest[0]` or `manifest[1] doc 2`.
    pub location: String,
}

/// Parse every document of every manifest (YAML, multi-document YAML or JSON).
pub fn parse_manifests(manifests: &[String]) -> Result<Vec<(String, Value)>, String> {
    let mut docs = Vec::new();
    for (i, text) in manifests.iter().enumerate() {
        let trimmed = text.trim_start();
        if trimmed.starts_with('{') || trimmed.starts_with('[') {
            let v: Value = serde_json::from_str(text)
                .map_err(|e| format!("manifest[{i}] is not valid JSON: {e}"))?;
            match v {
                Value::Array(items) => {
                    for (j, item) in items.into_iter().enumerate() {
                        docs.push((format!("manifest[{i}] item {j}"), item));
                    }
                }
                v => docs.push((format!("manifest[{i}]"), v)),
            }
            continue;
        }
        let mut n = 0;
        for de in serde_norway::Deserializer::from_str(text) {
            let v = Value::deserialize(de)
                .map_err(|e| format!("manifest[{i}] document {} is not valid YAML: {e}", n + 1))?;
            n += 1;
            if v.is_null() {
                continue; // empty document between `---` separators
            }
            docs.push((
                if n == 1 {
                    format!("manifest[{i}]")
                } else {
                    format!("manifest[{i}] doc {n}")
                },
                v,
            ));
        }
    }
    Ok(docs)
}

/// A container in a normalized shape shared by Kubernetes and ECS.
struct Container<'a> {
    name: String,
    image: String,
    /// Kubernetes container securityContext (or null).
    sc: &'a Value,
    resources: &'a Value,
    ecs: Option<&'a Value>,
}

fn s(v: &Value) -> String {
    v.as_str().map(str::to_string).unwrap_or_default()
}

/// The pod spec of a Kubernetes workload, if the object is one.
fn pod_spec(doc: &Value) -> Option<&Value> {
    let spec = doc.get("spec")?;
    match doc.get("kind").and_then(Value::as_str).unwrap_or("") {
        "Pod" => Some(spec),
        "CronJob" => spec.pointer("/jobTemplate/spec/template/spec"),
        _ => spec.pointer("/template/spec"),
    }
}

fn resource_name(doc: &Value) -> String {
    if let Some(family) = doc.get("family").and_then(Value::as_str) {
        return format!("TaskDefinition/{family}");
    }
    format!(
        "{}/{}",
        doc.get("kind").and_then(Value::as_str).unwrap_or("Object"),
        doc.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or("?")
    )
}

/// Check every document against the enabled rules.
pub fn check(cfg: &Config, docs: &[(String, Value)]) -> Vec<Violation> {
    let mut out = Vec::new();
    for (location, doc) in docs {
        if doc.get("kind").and_then(Value::as_str) == Some("List") {
            let items: Vec<(String, Value)> = doc
                .get("items")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .enumerate()
                        .map(|(j, v)| (format!("{location} item {j}"), v.clone()))
                        .collect()
                })
                .unwrap_or_default();
            out.extend(check(cfg, &items));
            continue;
        }
        let resource = resource_name(doc);
        let null = Value::Null;
        let mut containers = Vec::new();
        let mut pod_sc = &null;
        if let Some(defs) = doc.get("containerDefinitions").and_then(Value::as_array) {
            for c in defs {
                containers.push(Container {
                    name: s(&c["name"]),
                    image: s(&c["image"]),
                    sc: &null,
                    resources: &null,
                    ecs: Some(c),
                });
            }
        } else if let Some(spec) = pod_spec(doc) {
            pod_sc = spec.get("securityContext").unwrap_or(&null);
            for key in ["initContainers", "containers"] {
                for c in spec
                    .get(key)
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    containers.push(Container {
                        name: s(&c["name"]),
                        image: s(&c["image"]),
                        sc: c.get("securityContext").unwrap_or(&null),
                        resources: c.get("resources").unwrap_or(&null),
                        ecs: None,
                    });
                }
            }
        } else {
            continue; // Services, ConfigMaps...: nothing to check.
        }
        for c in &containers {
            let mut push = |rule: &str, message: String| {
                if let Some(severity) = cfg.rule(rule) {
                    out.push(Violation {
                        rule: rule.into(),
                        severity,
                        resource: resource.clone(),
                        container: c.name.clone(),
                        image: c.image.clone(),
                        message,
                        location: location.clone(),
                    });
                }
            };
            let who = format!("{resource} container `{}`", c.name);
            match c.ecs {
                Some(e) => {
                    let user = e.get("user").map(|u| {
                        u.as_str()
                            .map(str::to_string)
                            .unwrap_or_else(|| u.to_string())
                    });
                    let root = match user.as_deref() {
                        None | Some("") => true,
                        Some(u) => {
                            let name = u.split(':').next().unwrap_or(u);
                            name == "root" || name == "0"
                        }
                    };
                    if root {
                        push(
                            "no-root",
                            format!("{who} runs as root: set `user` to a non-root uid"),
                        );
                    }
                    if e.get("privileged").and_then(Value::as_bool) == Some(true) {
                        push(
                            "no-privileged",
                            format!("{who} is privileged: remove `privileged: true`"),
                        );
                    }
                    if e.get("memory").is_none() {
                        push(
                            "resource-limits",
                            format!("{who} has no hard `memory` limit"),
                        );
                    }
                    if e.get("readonlyRootFilesystem").and_then(Value::as_bool) != Some(true) {
                        push("read-only-root-fs", format!("{who} has a writable root filesystem: set `readonlyRootFilesystem: true`"));
                    }
                }
                None => {
                    let non_root =
                        c.sc.get("runAsNonRoot")
                            .or_else(|| pod_sc.get("runAsNonRoot"))
                            .and_then(Value::as_bool);
                    let uid =
                        c.sc.get("runAsUser")
                            .or_else(|| pod_sc.get("runAsUser"))
                            .and_then(Value::as_i64);
                    let root = match (uid, non_root) {
                        (Some(0), _) => true,
                        (Some(_), _) => false,
                        (None, Some(true)) => false,
                        _ => true,
                    };
                    if root {
                        push(
                            "no-root",
                            format!("{who} may run as root: set securityContext.runAsNonRoot: true or a non-zero runAsUser"),
                        );
                    }
                    if c.sc.get("privileged").and_then(Value::as_bool) == Some(true) {
                        push(
                            "no-privileged",
                            format!("{who} is privileged: remove securityContext.privileged"),
                        );
                    }
                    let limits = c.resources.get("limits");
                    let missing: Vec<&str> = ["cpu", "memory"]
                        .into_iter()
                        .filter(|k| limits.and_then(|l| l.get(*k)).is_none())
                        .collect();
                    if !missing.is_empty() {
                        push(
                            "resource-limits",
                            format!(
                                "{who} has no {} limit: set resources.limits",
                                missing.join(" or ")
                            ),
                        );
                    }
                    if c.sc.get("readOnlyRootFilesystem").and_then(Value::as_bool) != Some(true) {
                        push(
                            "read-only-root-fs",
                            format!("{who} has a writable root filesystem: set securityContext.readOnlyRootFilesystem: true"),
                        );
                    }
                }
            }
            let img = ImageRef::parse(&c.image);
            if c.image.is_empty() {
                push("no-latest-tag", format!("{who} has no image"));
            } else if img.digest.is_none() && img.tag.as_deref().is_none_or(|t| t == "latest") {
                push(
                    "no-latest-tag",
                    format!("{who} uses `{}`: pin a version tag or a digest", c.image),
                );
            }
            if !c.image.is_empty() && !cfg.allowed_registries.iter().any(|a| img.allowed_by(a)) {
                push(
                    "allowed-registries",
                    format!(
                        "{who} image `{}` comes from `{}`, not from an allowed registry ({})",
                        c.image,
                        img.registry,
                        cfg.allowed_registries.join(", ")
                    ),
                );
            }
        }
    }
    out
}

/// An image reference split the way the container runtimes do.
#[derive(Debug, PartialEq)]
pub struct ImageRef {
    pub registry: String,
    /// Repository path without registry, e.g. `library/nginx`.
    pub repository: String,
    pub tag: Option<String>,
    pub digest: Option<String>,
}

impl ImageRef {
    pub fn parse(image: &str) -> ImageRef {
        let (rest, digest) = match image.split_once('@') {
            Some((r, d)) => (r, Some(d.to_string())),
            None => (image, None),
        };
        let (name, tag) = match rest.rfind(':') {
            Some(i) if !rest[i..].contains('/') => (&rest[..i], Some(rest[i + 1..].to_string())),
            _ => (rest, None),
        };
        let (registry, repository) = match name.split_once('/') {
            Some((first, path))
                if first.contains('.') || first.contains(':') || first == "localhost" =>
            {
                (first.to_string(), path.to_string())
            }
            Some(_) => ("docker.io".to_string(), name.to_string()),
            None => ("docker.io".to_string(), format!("library/{name}")),
        };
        ImageRef {
            registry,
            repository,
            tag,
            digest,
        }
    }

    /// `allowed` is a registry (`ghcr.io`) or a registry/repository prefix (`ghcr.io/acme`).
    pub fn allowed_by(&self, allowed: &str) -> bool {
        let allowed = allowed.trim().trim_end_matches('/');
        let full = format!("{}/{}", self.registry, self.repository);
        allowed == self.registry || full == allowed || full.starts_with(&format!("{allowed}/"))
    }
}

#[cfg(test)]
mod tests;
