//! Trivy's JSON report (SchemaVersion 2) and its mapping to plain findings.
//!
//! Kept free of the WIT bindings so it is unit-tested natively (`cargo test -p trivy`).

use serde::Deserialize;

/// The fields of a Trivy report that the gate needs; everything else is skipped.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TrivyReport {
    #[serde(default)]
    pub schema_version: Option<i64>,
    #[serde(default)]
    pub artifact_name: String,
    #[serde(default)]
    pub metadata: Option<Metadata>,
    #[serde(default)]
    pub results: Option<Vec<TrivyResult>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Metadata {
    #[serde(default)]
    pub repo_tags: Option<Vec<String>>,
    #[serde(default)]
    pub repo_digests: Option<Vec<String>>,
    #[serde(rename = "ImageID", default)]
    pub image_id: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct TrivyResult {
    #[serde(default)]
    pub target: String,
    #[serde(default)]
    pub vulnerabilities: Option<Vec<Vulnerability>>,
    #[serde(default)]
    pub misconfigurations: Option<Vec<Misconfiguration>>,
    #[serde(default)]
    pub secrets: Option<Vec<Secret>>,
    #[serde(default)]
    pub licenses: Option<Vec<License>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Vulnerability {
    #[serde(rename = "VulnerabilityID")]
    pub vulnerability_id: String,
    #[serde(default)]
    pub pkg_name: String,
    #[serde(default)]
    pub installed_version: String,
    #[serde(default)]
    pub fixed_version: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub severity: String,
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(rename = "PrimaryURL", default)]
    pub primary_url: Option<String>,
    #[serde(default)]
    pub references: Option<Vec<String>>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Misconfiguration {
    #[serde(rename = "ID", default)]
    pub id: String,
    #[serde(rename = "AVDID", default)]
    pub avd_id: Option<String>,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub message: Option<String>,
    #[serde(default)]
    pub severity: String,
    #[serde(rename = "PrimaryURL", default)]
    pub primary_url: Option<String>,
    #[serde(default)]
    pub status: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Secret {
    #[serde(rename = "RuleID", default)]
    pub rule_id: String,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub severity: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub start_line: Option<u64>,
    // `Match` (the secret itself, redacted or not) is deliberately never read.
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct License {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub pkg_name: String,
    #[serde(default)]
    pub severity: String,
    #[serde(default)]
    pub category: Option<String>,
    #[serde(default)]
    pub link: Option<String>,
}

/// Mirrors the WIT `severity` without depending on the bindings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sev {
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

impl Sev {
    pub fn parse(s: &str) -> Sev {
        match s.to_ascii_uppercase().as_str() {
            "CRITICAL" => Sev::Critical,
            "HIGH" => Sev::High,
            "MEDIUM" => Sev::Medium,
            "LOW" => Sev::Low,
            _ => Sev::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Vulnerability,
    Misconfiguration,
    Secret,
    License,
}

/// One finding, field for field the WIT `finding` record.
#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub id: String,
    pub severity: Sev,
    pub class: Class,
    pub package: String,
    pub installed_version: String,
    pub fixed_version: String,
    pub status: String,
    pub title: String,
    pub primary_url: String,
    pub target: String,
}

/// Why a report cannot be used.
#[derive(Debug, Clone, PartialEq)]
pub enum ReportError {
    /// Not JSON, or not shaped like a Trivy report.
    Malformed(String),
    /// A schema version this plugin does not read.
    UnsupportedSchema(String),
    /// The report describes another artifact than the one being released.
    ArtifactMismatch(String),
}

impl std::fmt::Display for ReportError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReportError::Malformed(m)
            | ReportError::UnsupportedSchema(m)
            | ReportError::ArtifactMismatch(m) => f.write_str(m),
        }
    }
}

/// Parse a report; `origin` names it in errors (a path or URL).
pub fn parse(text: &str, origin: &str) -> Result<TrivyReport, ReportError> {
    let report: TrivyReport = serde_json::from_str(text).map_err(|e| {
        ReportError::Malformed(format!(
            "`{origin}` is not a Trivy JSON report ({e}); produce one with `trivy image --format json --output FILE IMAGE`"
        ))
    })?;
    match report.schema_version {
        Some(2) => Ok(report),
        Some(v) => Err(ReportError::UnsupportedSchema(format!(
            "`{origin}` has SchemaVersion {v}; this plugin reads SchemaVersion 2 (Trivy 0.20 and later): regenerate the report with a current Trivy"
        ))),
        None => Err(ReportError::UnsupportedSchema(format!(
            "`{origin}` has no SchemaVersion (a Trivy report from before 0.20, or not a Trivy report); regenerate it with a current Trivy (`--format json`)"
        ))),
    }
}

/// Strip registry defaults so `alpine:3.10`, `docker.io/library/alpine:3.10` compare equal.
fn normalize(image: &str) -> String {
    let s = image.trim();
    let s = s
        .strip_prefix("docker.io/")
        .or_else(|| s.strip_prefix("index.docker.io/"))
        .unwrap_or(s);
    let s = s.strip_prefix("library/").unwrap_or(s);
    s.to_string()
}

/// Check that `report` describes the artifact being released. An empty `name` or `digest`
/// means "unknown" and is not checked, nor is a name with spaces (a command line); the digest is only checked when the report lists
/// `Metadata.RepoDigests` (or an `ImageID`).
pub fn check_artifact(
    report: &TrivyReport,
    origin: &str,
    name: &str,
    digest: &str,
) -> Result<(), ReportError> {
    let meta = report.metadata.as_ref();
    // A command line (the `local` target's artifact) is nothing Trivy scans: no name to compare.
    let comparable = !name.trim().is_empty() && !name.trim().contains(char::is_whitespace);
    if comparable {
        let want = normalize(name);
        let mut known: Vec<String> = vec![report.artifact_name.clone()];
        if let Some(tags) = meta.and_then(|m| m.repo_tags.as_ref()) {
            known.extend(tags.iter().cloned());
        }
        if let Some(digests) = meta.and_then(|m| m.repo_digests.as_ref()) {
            known.extend(digests.iter().cloned());
        }
        let matches = known.iter().any(|k| normalize(k) == want);
        if !matches {
            return Err(ReportError::ArtifactMismatch(format!(
                "`{origin}` is a report for `{}`{}, not for the artifact being released `{name}`: point `report` at the report of this artifact (or set `check_artifact = false` if the names legitimately differ)",
                report.artifact_name,
                meta.and_then(|m| m.repo_tags.as_ref())
                    .filter(|t| !t.is_empty())
                    .map(|t| format!(" (tags {})", t.join(", ")))
                    .unwrap_or_default()
            )));
        }
    }
    if !digest.trim().is_empty() {
        let digests: Vec<&String> = meta
            .and_then(|m| m.repo_digests.as_ref())
            .map(|d| d.iter().collect())
            .unwrap_or_default();
        if !digests.is_empty() {
            let ok = digests
                .iter()
                .any(|d| d.rsplit('@').next() == Some(digest.trim()))
                || meta.and_then(|m| m.image_id.as_deref()) == Some(digest.trim());
            if !ok {
                return Err(ReportError::ArtifactMismatch(format!(
                    "`{origin}` was produced for digest(s) {} but the artifact being released has digest {digest}: rescan the image that is being deployed",
                    digests.iter().map(|d| d.as_str()).collect::<Vec<_>>().join(", ")
                )));
            }
        }
    }
    Ok(())
}

fn non_empty(s: Option<&String>) -> String {
    s.map(|v| v.trim().to_string()).unwrap_or_default()
}

/// Every finding of the report, unfiltered: the host's gate policy decides what matters.
pub fn findings(report: &TrivyReport) -> Vec<Item> {
    let mut out = Vec::new();
    for result in report.results.iter().flatten() {
        for v in result.vulnerabilities.iter().flatten() {
            let title = match v.title.as_deref().filter(|t| !t.trim().is_empty()) {
                Some(t) => t.to_string(),
                // Some advisories have no title; the description's first line is the next best.
                None => v
                    .description
                    .as_deref()
                    .and_then(|d| d.lines().next())
                    .unwrap_or("")
                    .chars()
                    .take(200)
                    .collect(),
            };
            let url = match v.primary_url.as_deref().filter(|u| !u.is_empty()) {
                Some(u) => u.to_string(),
                None => v
                    .references
                    .as_ref()
                    .and_then(|r| r.first())
                    .cloned()
                    .unwrap_or_default(),
            };
            out.push(Item {
                id: v.vulnerability_id.clone(),
                severity: Sev::parse(&v.severity),
                class: Class::Vulnerability,
                package: v.pkg_name.clone(),
                installed_version: v.installed_version.clone(),
                fixed_version: non_empty(v.fixed_version.as_ref()),
                status: non_empty(v.status.as_ref()),
                title,
                primary_url: url,
                target: result.target.clone(),
            });
        }
        for m in result.misconfigurations.iter().flatten() {
            // Trivy lists passed checks too with `--include-non-failures`; only failures are findings.
            let status = non_empty(m.status.as_ref());
            if !status.is_empty() && status != "FAIL" {
                continue;
            }
            let id = if m.id.is_empty() {
                non_empty(m.avd_id.as_ref())
            } else {
                m.id.clone()
            };
            let title = match m.message.as_deref().filter(|s| !s.is_empty()) {
                Some(msg) => format!("{}: {msg}", m.title),
                None => m.title.clone(),
            };
            out.push(Item {
                id,
                severity: Sev::parse(&m.severity),
                class: Class::Misconfiguration,
                package: String::new(),
                installed_version: String::new(),
                fixed_version: String::new(),
                status,
                title,
                primary_url: non_empty(m.primary_url.as_ref()),
                target: result.target.clone(),
            });
        }
        for s in result.secrets.iter().flatten() {
            let target = match s.start_line {
                Some(line) => format!("{}:{line}", result.target),
                None => result.target.clone(),
            };
            out.push(Item {
                id: s.rule_id.clone(),
                severity: Sev::parse(&s.severity),
                class: Class::Secret,
                package: non_empty(s.category.as_ref()),
                installed_version: String::new(),
                fixed_version: String::new(),
                status: String::new(),
                title: s.title.clone(),
                primary_url: String::new(),
                target,
            });
        }
        for l in result.licenses.iter().flatten() {
            out.push(Item {
                id: l.name.clone(),
                severity: Sev::parse(&l.severity),
                class: Class::License,
                package: l.pkg_name.clone(),
                installed_version: String::new(),
                fixed_version: String::new(),
                status: non_empty(l.category.as_ref()),
                title: format!("license {}", l.name),
                primary_url: non_empty(l.link.as_ref()),
                target: result.target.clone(),
            });
        }
    }
    out
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod fuzz;
