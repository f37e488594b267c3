//! `trivy`: a scanner plugin that reads Trivy's JSON report (SchemaVersion 2) and hands every
//! finding to the host's gate policy.
//!
//! Config (`[plugins.trivy.config]`):
//! - `report = "/reports/app.json"`: a path inside a directory granted read-only with
//!   `grants.dirs = [{ host = "./reports", guest = "/reports" }]`; or
//! - `report_url = "http://127.0.0.1:8081/reports/app.json"`: fetched over HTTP; the address
//!   must be in `grants.http` (a Trivy server's results store, an artifact server, ...);
//! - `check_artifact = true` (default): refuse a report for another artifact than the one
//!   being released (name against `ArtifactName`/`RepoTags`/`RepoDigests`, digest against
//!   `Metadata.RepoDigests` when the report has them).

pub mod report;

use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub report: Option<String>,
    #[serde(default)]
    pub report_url: Option<String>,
    #[serde(default = "yes")]
    pub check_artifact: bool,
}

fn yes() -> bool {
    true
}

/// Problems with a config, as `(field, message)`.
pub fn config_problems(config: &str) -> Vec<(String, String)> {
    let cfg: Config = match serde_json::from_str(config) {
        Ok(c) => c,
        Err(e) => return vec![(String::new(), e.to_string())],
    };
    let mut out = Vec::new();
    match (&cfg.report, &cfg.report_url) {
        (None, None) => out.push((
            "report".into(),
            "set `report = \"/reports/FILE.json\"` (with a `grants.dirs` entry for its folder) or `report_url = \"http://...\"`".into(),
        )),
        (Some(_), Some(_)) => out.push(("report_url".into(), "set either `report` or `report_url`, not both".into())),
        (Some(path), None) if !path.starts_with('/') => out.push((
            "report".into(),
            format!("`{path}` must be an absolute path as the plugin sees it (the `guest` side of a `grants.dirs` entry), e.g. \"/reports/app.json\""),
        )),
        (None, Some(url)) if !(url.starts_with("http://") || url.starts_with("https://")) => {
            out.push(("report_url".into(), format!("`{url}` is not an http(s) URL")))
        }
        _ => {}
    }
    out
}

#[cfg(target_arch = "wasm32")]
mod guest {
    use super::report::{self, Class, ReportError, Sev};
    use super::{config_problems, Config};
    use dax_sdk::scanner::*;

    const SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false,"properties":{"report":{"type":"string","description":"Guest path of a Trivy JSON report inside a granted directory"},"report_url":{"type":"string","description":"URL of a Trivy JSON report (address must be granted)"},"check_artifact":{"type":"boolean","default":true}}}"#;

    struct Trivy;

    impl PluginGuest for Trivy {
        fn describe() -> PluginInfo {
            info(
                "trivy",
                env!("CARGO_PKG_VERSION"),
                PluginRole::Scanner,
                "Reads Trivy JSON reports (vulnerabilities, misconfigurations, secrets, licenses)",
                SCHEMA,
            )
        }
        fn validate_config(config: String) -> Vec<ConfigProblem> {
            problems(config_problems(&config))
        }
    }

    fn read_file(path: &str) -> Result<String, PluginError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(text),
            Err(e) => {
                let dir = std::path::Path::new(path)
                    .parent()
                    .map(|p| p.to_string_lossy().into_owned())
                    .filter(|p| !p.is_empty() && p != "/")
                    .unwrap_or_else(|| "/reports".into());
                if std::fs::read_dir(&dir).is_err() {
                    Err(PluginError::NotFound(format!(
                        "Trivy report `{path}` not found: the directory `{dir}` is not visible to the plugin; grant the host folder holding the report with `grants.dirs = [{{ host = \"./reports\", guest = \"{dir}\" }}]`"
                    )))
                } else {
                    Err(PluginError::NotFound(format!(
                        "Trivy report `{path}` not found in the granted directory `{dir}` ({e}): run `trivy image --format json --output <that folder>/{} IMAGE` first, or fix `report`",
                        std::path::Path::new(path).file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default()
                    )))
                }
            }
        }
    }

    fn fetch(url: &str) -> Result<String, PluginError> {
        let resp = dax_sdk::http::get(url, &[("accept", "application/json")])
            .map_err(|e| PluginError::Unavailable(format!("fetching Trivy report `{url}`: {e}")))?;
        match resp.status {
            200..=299 => Ok(resp.text()),
            404 => Err(PluginError::NotFound(format!(
                "Trivy report `{url}` not found (HTTP 404)"
            ))),
            s => Err(PluginError::Unavailable(format!(
                "fetching Trivy report `{url}`: HTTP {s}: {}",
                resp.text().chars().take(300).collect::<String>()
            ))),
        }
    }

    impl Guest for Trivy {
        fn scan(config: String, a: Artifact) -> Result<Report, PluginError> {
            refuse_if_invalid(config_problems(&config))?;
            let cfg: Config = parse_config(&config)?;
            let (text, origin) = match (&cfg.report, &cfg.report_url) {
                (Some(path), _) => (read_file(path)?, path.clone()),
                (None, Some(url)) => (fetch(url)?, url.clone()),
                (None, None) => unreachable!("checked by config_problems"),
            };
            let parsed = report::parse(&text, &origin).map_err(|e| match e {
                ReportError::Malformed(m) => PluginError::InvalidInput(m),
                ReportError::UnsupportedSchema(m) => PluginError::Unsupported(m),
                ReportError::ArtifactMismatch(m) => PluginError::InvalidConfig(m),
            })?;
            if cfg.check_artifact {
                report::check_artifact(&parsed, &origin, &a.name, &a.digest)
                    .map_err(|e| PluginError::InvalidConfig(e.to_string()))?;
            }
            let findings: Vec<Finding> = report::findings(&parsed)
                .into_iter()
                .map(|i| Finding {
                    id: i.id,
                    severity: match i.severity {
                        Sev::Critical => Severity::Critical,
                        Sev::High => Severity::High,
                        Sev::Medium => Severity::Medium,
                        Sev::Low => Severity::Low,
                        Sev::Unknown => Severity::Unknown,
                    },
                    class: match i.class {
                        Class::Vulnerability => FindingClass::Vulnerability,
                        Class::Misconfiguration => FindingClass::Misconfiguration,
                        Class::Secret => FindingClass::Secret,
                        Class::License => FindingClass::License,
                    },
                    package_name: i.package,
                    installed_version: i.installed_version,
                    fixed_version: i.fixed_version,
                    status: i.status,
                    title: i.title,
                    primary_url: i.primary_url,
                    target: i.target,
                })
                .collect();
            log::info(&format!(
                "{origin}: {} finding(s) for {}",
                findings.len(),
                parsed.artifact_name
            ));
            Ok(Report {
                artifact_name: parsed.artifact_name,
                findings,
            })
        }
    }

    dax_sdk::export_scanner!(Trivy);
}
