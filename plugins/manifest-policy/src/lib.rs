//! `manifest-policy`: a scanner that checks the workload manifests a target will apply
//! (Kubernetes workloads, ECS task definitions; YAML or JSON) against security rules.
//!
//! Rules (id, default severity): `no-root` HIGH, `no-privileged` CRITICAL, `resource-limits`
//! MEDIUM, `no-latest-tag` MEDIUM, `read-only-root-fs` LOW, `allowed-registries` HIGH (runs
//! when `allowed_registries` is set). Per deployment:
//!
//! ```toml
//! [plugins.manifest-policy.config]
//! allowed_registries = ["ghcr.io/acme"]
//! rules.read-only-root-fs = { enabled = false }
//! rules.no-root = { severity = "CRITICAL" }
//! ```

pub mod policy;

#[cfg(target_arch = "wasm32")]
mod guest {
    use super::policy::{self, Sev};
    use dax_sdk::scanner::*;

    const SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false,"properties":{"allowed_registries":{"type":"array","items":{"type":"string"}},"rules":{"type":"object","propertyNames":{"enum":["no-root","no-privileged","resource-limits","no-latest-tag","read-only-root-fs","allowed-registries"]},"additionalProperties":{"type":"object","additionalProperties":false,"properties":{"enabled":{"type":"boolean"},"severity":{"enum":["UNKNOWN","LOW","MEDIUM","HIGH","CRITICAL"]}}}}}}"#;

    struct ManifestPolicy;

    impl PluginGuest for ManifestPolicy {
        fn describe() -> PluginInfo {
            info(
                "manifest-policy",
                env!("CARGO_PKG_VERSION"),
                PluginRole::Scanner,
                "Checks workload manifests: no root, no privileged, limits, pinned images, read-only root fs, allowed registries",
                SCHEMA,
            )
        }
        fn validate_config(config: String) -> Vec<ConfigProblem> {
            problems(policy::config_problems(&config))
        }
    }

    impl Guest for ManifestPolicy {
        fn scan(config: String, a: Artifact) -> Result<Report, PluginError> {
            refuse_if_invalid(policy::config_problems(&config))?;
            let cfg: policy::Config = parse_config(&config)?;
            if a.manifests.is_empty() {
                log::warn("no manifests to check: the target gave none for this artifact");
            }
            let docs = policy::parse_manifests(&a.manifests).map_err(PluginError::InvalidInput)?;
            let findings = policy::check(&cfg, &docs)
                .into_iter()
                .map(|v| Finding {
                    id: v.rule,
                    severity: match v.severity {
                        Sev::Critical => Severity::Critical,
                        Sev::High => Severity::High,
                        Sev::Medium => Severity::Medium,
                        Sev::Low => Severity::Low,
                        Sev::Unknown => Severity::Unknown,
                    },
                    class: FindingClass::Policy,
                    package_name: format!("{}:{}", v.resource, v.container),
                    installed_version: v.image,
                    fixed_version: String::new(),
                    status: "FAIL".into(),
                    title: v.message,
                    primary_url: String::new(),
                    target: v.location,
                })
                .collect();
            Ok(Report {
                artifact_name: a.name,
                findings,
            })
        }
    }

    dax_sdk::export_scanner!(ManifestPolicy);
}
