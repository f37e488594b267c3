//! The release gate: one policy applied the same way to every scanner's findings.
//!
//! Scanners report everything they find ([`crate::contract::ScanReport`]); this module decides
//! what blocks a release. The semantics follow Trivy's so that a policy ported from a
//! `trivy --exit-code 1` pipeline behaves the same:
//!
//! - `severity`: a finding at or above it blocks (Trivy's `--severity` lists severities to
//!   keep; a threshold of `LOW` keeps `LOW,MEDIUM,HIGH,CRITICAL`);
//! - `ignore_unfixed`: a vulnerability without a fix is ignored. Like Trivy (where
//!   `--ignore-unfixed` is shorthand for ignoring every status except `fixed`), a finding is
//!   unfixed when it has no fixed version, or when its status is known and is not `fixed`;
//! - `ignore`: `.trivyignore` entries: an id with an optional expiry date (expired on and
//!   after that date, as Trivy's `exp:` does) and reason, optionally limited to packages.
//!   `id = "*"` with `packages` ignores everything found in those packages;
//! - `max`: per-severity maximum counts. A severity with a maximum may have up to that many
//!   findings (after ignores) before they all block; without a maximum, a severity at or
//!   above the threshold allows none and one below it allows any number;
//! - `on_scanner_error`: a scanner that failed or timed out blocks the release unless this
//!   says `warn`.

mod render;
pub mod trivyignore;

pub use render::{render_console, to_sarif};

use crate::contract::{Finding, FindingClass, ScanReport, Severity};
pub use chrono::NaiveDate;
use serde::{Deserialize, Deserializer, Serialize};

/// The `[gate]` table of a deployment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatePolicy {
    /// Keys of `[plugins.NAME]` tables with the scanner role, run in this order.
    #[serde(default)]
    pub scanners: Vec<String>,
    /// Block on findings at or above this severity (default `HIGH`).
    #[serde(default = "default_severity", deserialize_with = "severity_ci")]
    pub severity: Severity,
    /// Ignore vulnerabilities that have no fix.
    #[serde(default)]
    pub ignore_unfixed: bool,
    /// Ignore entries (`[[gate.ignore]]`).
    #[serde(default)]
    pub ignore: Vec<IgnoreRule>,
    /// Per-severity maximum counts (`max = { MEDIUM = 10, CRITICAL = 0 }`).
    #[serde(default)]
    pub max: MaxCounts,
    /// What a failed or timed-out scanner does to the release.
    #[serde(default)]
    pub on_scanner_error: OnScannerError,
}

fn default_severity() -> Severity {
    Severity::High
}

impl Default for GatePolicy {
    fn default() -> Self {
        GatePolicy {
            scanners: Vec::new(),
            severity: default_severity(),
            ignore_unfixed: false,
            ignore: Vec::new(),
            max: MaxCounts::default(),
            on_scanner_error: OnScannerError::Block,
        }
    }
}

/// One ignore entry, as a line of `.trivyignore` (`CVE-2019-1559 exp:2027-01-01`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IgnoreRule {
    /// Finding id (CVE, rule id...), compared case-insensitively; `*` matches any id and
    /// then needs `packages`.
    pub id: String,
    /// The entry stops ignoring on this date (`expires = 2027-01-01` or `"2027-01-01"`).
    #[serde(
        default,
        deserialize_with = "date_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub expires: Option<NaiveDate>,
    /// Why it is ignored; shown in the verdict.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Only ignore the id in these packages (all packages when empty).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub packages: Vec<String>,
}

impl IgnoreRule {
    fn matches(&self, finding: &Finding) -> bool {
        let id_ok = self.id == "*" || self.id.eq_ignore_ascii_case(&finding.id);
        let pkg_ok =
            self.packages.is_empty() || self.packages.iter().any(|p| p == &finding.package);
        id_ok && pkg_ok
    }

    fn expired(&self, today: NaiveDate) -> bool {
        self.expires.is_some_and(|exp| today >= exp)
    }

    fn describe(&self) -> String {
        let mut s = format!("ignore `{}`", self.id);
        if !self.packages.is_empty() {
            s.push_str(&format!(" in {}", self.packages.join(", ")));
        }
        if let Some(exp) = self.expires {
            s.push_str(&format!(" until {exp}"));
        }
        if let Some(reason) = &self.reason {
            s.push_str(&format!(": {reason}"));
        }
        s
    }
}

/// Maximum number of (non-ignored) findings allowed per severity.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MaxCounts {
    #[serde(default, alias = "CRITICAL", skip_serializing_if = "Option::is_none")]
    pub critical: Option<u32>,
    #[serde(default, alias = "HIGH", skip_serializing_if = "Option::is_none")]
    pub high: Option<u32>,
    #[serde(default, alias = "MEDIUM", skip_serializing_if = "Option::is_none")]
    pub medium: Option<u32>,
    #[serde(default, alias = "LOW", skip_serializing_if = "Option::is_none")]
    pub low: Option<u32>,
    #[serde(default, alias = "UNKNOWN", skip_serializing_if = "Option::is_none")]
    pub unknown: Option<u32>,
}

impl MaxCounts {
    pub fn get(&self, severity: Severity) -> Option<u32> {
        match severity {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
            Severity::Unknown => self.unknown,
        }
    }
}

/// What a scanner error does to the release.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnScannerError {
    /// The release is blocked (fail safe).
    #[default]
    Block,
    /// The error is reported and the release goes on.
    Warn,
}

/// Why a finding ended where it did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateFinding {
    pub scanner: String,
    #[serde(flatten)]
    pub finding: Finding,
    /// For blocked and passed findings: the policy line that decided; for ignored ones: why.
    pub reason: String,
}

/// A scanner that gave no report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScannerError {
    pub scanner: String,
    pub error: String,
    /// True when the policy made this error block the release.
    pub blocking: bool,
}

/// An ignore entry that would have matched but has expired.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExpiredIgnore {
    pub id: String,
    pub expired: NaiveDate,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// How many findings it no longer ignores.
    pub findings: usize,
}

/// Counts of findings per severity.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct SeverityCounts {
    #[serde(rename = "CRITICAL")]
    pub critical: usize,
    #[serde(rename = "HIGH")]
    pub high: usize,
    #[serde(rename = "MEDIUM")]
    pub medium: usize,
    #[serde(rename = "LOW")]
    pub low: usize,
    #[serde(rename = "UNKNOWN")]
    pub unknown: usize,
}

impl SeverityCounts {
    fn add(&mut self, severity: Severity) {
        *self.slot(severity) += 1;
    }
    fn slot(&mut self, severity: Severity) -> &mut usize {
        match severity {
            Severity::Critical => &mut self.critical,
            Severity::High => &mut self.high,
            Severity::Medium => &mut self.medium,
            Severity::Low => &mut self.low,
            Severity::Unknown => &mut self.unknown,
        }
    }
    pub fn get(&self, severity: Severity) -> usize {
        match severity {
            Severity::Critical => self.critical,
            Severity::High => self.high,
            Severity::Medium => self.medium,
            Severity::Low => self.low,
            Severity::Unknown => self.unknown,
        }
    }
    pub fn total(&self) -> usize {
        self.critical + self.high + self.medium + self.low + self.unknown
    }
}

/// Per-scanner summary line of a verdict.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScannerSummary {
    pub scanner: String,
    /// The artifact as the scanner saw it; empty when it failed.
    pub artifact_name: String,
    pub findings: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// The gate's answer: whether the release may go on, and why.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct GateVerdict {
    /// True when nothing blocks the release.
    pub passed: bool,
    /// One line for progress displays and the journal.
    pub summary: String,
    /// The policy thresholds that were applied.
    pub severity: Severity,
    pub ignore_unfixed: bool,
    pub scanners: Vec<ScannerSummary>,
    /// Findings that block the release, most severe first.
    pub blocked: Vec<GateFinding>,
    /// Findings ignored by `ignore_unfixed` or an ignore entry, with the reason.
    pub ignored: Vec<GateFinding>,
    /// Findings the policy allows (below the threshold or within a maximum).
    #[serde(rename = "passed_findings")]
    pub allowed: Vec<GateFinding>,
    pub scanner_errors: Vec<ScannerError>,
    /// Ignore entries that matched something but have expired (they no longer ignore).
    pub expired_ignores: Vec<ExpiredIgnore>,
    /// Blocked findings per severity.
    pub blocked_counts: SeverityCounts,
}

impl GateVerdict {
    pub fn is_blocked(&self) -> bool {
        !self.passed
    }
}

impl GatePolicy {
    /// Problems in the policy itself, for `dax validate` (`gate.ignore[2].packages: ...`).
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        for (i, rule) in self.ignore.iter().enumerate() {
            if rule.id.trim().is_empty() {
                out.push((
                    format!("gate.ignore[{i}].id"),
                    "empty id: write a finding id such as \"CVE-2019-1559\", or \"*\" with `packages`".into(),
                ));
            }
            if rule.id == "*" && rule.packages.is_empty() {
                out.push((
                    format!("gate.ignore[{i}].packages"),
                    "`id = \"*\"` ignores every finding: list the `packages` it applies to".into(),
                ));
            }
        }
        out
    }
}

/// Apply `policy` to the reports of its scanners (`(scanner name, report or error)`).
/// `today` decides which ignore entries have expired.
pub fn evaluate(
    policy: &GatePolicy,
    reports: &[(String, Result<ScanReport, String>)],
    today: NaiveDate,
) -> GateVerdict {
    let mut ignored = Vec::new();
    let mut candidates: Vec<GateFinding> = Vec::new();
    let mut scanner_errors = Vec::new();
    let mut scanners = Vec::new();
    let mut expired: Vec<ExpiredIgnore> = Vec::new();

    for (scanner, result) in reports {
        match result {
            Err(error) => {
                scanner_errors.push(ScannerError {
                    scanner: scanner.clone(),
                    error: error.clone(),
                    blocking: policy.on_scanner_error == OnScannerError::Block,
                });
                scanners.push(ScannerSummary {
                    scanner: scanner.clone(),
                    artifact_name: String::new(),
                    findings: 0,
                    error: Some(error.clone()),
                });
            }
            Ok(report) => {
                scanners.push(ScannerSummary {
                    scanner: scanner.clone(),
                    artifact_name: report.artifact_name.clone(),
                    findings: report.findings.len(),
                    error: None,
                });
                for finding in &report.findings {
                    let entry = |reason: String| GateFinding {
                        scanner: scanner.clone(),
                        finding: finding.clone(),
                        reason,
                    };
                    if policy.ignore_unfixed && is_unfixed(finding) {
                        let why = if finding.fixed_version.is_empty() {
                            "ignore_unfixed: no fixed version".to_string()
                        } else {
                            format!("ignore_unfixed: status `{}`", finding.status)
                        };
                        ignored.push(entry(why));
                        continue;
                    }
                    let mut matched = None;
                    for rule in policy.ignore.iter().filter(|r| r.matches(finding)) {
                        if rule.expired(today) {
                            let exp = rule.expires.expect("expired implies a date");
                            match expired
                                .iter_mut()
                                .find(|e| e.id == rule.id && e.expired == exp)
                            {
                                Some(e) => e.findings += 1,
                                None => expired.push(ExpiredIgnore {
                                    id: rule.id.clone(),
                                    expired: exp,
                                    reason: rule.reason.clone(),
                                    findings: 1,
                                }),
                            }
                        } else if matched.is_none() {
                            matched = Some(rule);
                        }
                    }
                    match matched {
                        Some(rule) => ignored.push(entry(rule.describe())),
                        None => candidates.push(entry(String::new())),
                    }
                }
            }
        }
    }

    // Decide per severity: a count within the allowance passes, otherwise all block.
    let mut by_severity = SeverityCounts::default();
    for c in &candidates {
        by_severity.add(c.finding.severity);
    }
    let mut blocked = Vec::new();
    let mut allowed = Vec::new();
    for mut c in candidates {
        let sev = c.finding.severity;
        let count = by_severity.get(sev);
        let at_threshold = sev >= policy.severity;
        match policy.max.get(sev) {
            Some(max) if count as u64 > max as u64 => {
                c.reason = format!("{count} {} findings exceed max {max}", sev_name(sev));
                blocked.push(c);
            }
            Some(max) => {
                c.reason = format!("{count} within max {max} for {}", sev_name(sev));
                allowed.push(c);
            }
            None if at_threshold => {
                c.reason = format!(
                    "{} >= threshold {}",
                    sev_name(sev),
                    sev_name(policy.severity)
                );
                blocked.push(c);
            }
            None => {
                c.reason = format!(
                    "{} below threshold {}",
                    sev_name(sev),
                    sev_name(policy.severity)
                );
                allowed.push(c);
            }
        }
    }
    let order = |a: &GateFinding, b: &GateFinding| {
        b.finding
            .severity
            .cmp(&a.finding.severity)
            .then_with(|| a.finding.id.cmp(&b.finding.id))
            .then_with(|| a.finding.package.cmp(&b.finding.package))
    };
    blocked.sort_by(order);
    allowed.sort_by(order);
    ignored.sort_by(order);

    let mut blocked_counts = SeverityCounts::default();
    for b in &blocked {
        blocked_counts.add(b.finding.severity);
    }
    let blocking_errors = scanner_errors.iter().filter(|e| e.blocking).count();
    let passed = blocked.is_empty() && blocking_errors == 0;
    let summary = summarize(
        passed,
        &blocked_counts,
        ignored.len(),
        allowed.len(),
        &scanner_errors,
    );
    GateVerdict {
        passed,
        summary,
        severity: policy.severity,
        ignore_unfixed: policy.ignore_unfixed,
        scanners,
        blocked,
        ignored,
        allowed,
        scanner_errors,
        expired_ignores: expired,
        blocked_counts,
    }
}

/// Trivy's notion of "unfixed" (see the module docs). Only vulnerabilities have fixes.
fn is_unfixed(f: &Finding) -> bool {
    f.class == FindingClass::Vulnerability
        && (f.fixed_version.trim().is_empty()
            || (!f.status.is_empty() && !f.status.eq_ignore_ascii_case("fixed")))
}

/// `CRITICAL`, `HIGH`... as operators write them.
pub fn sev_name(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "CRITICAL",
        Severity::High => "HIGH",
        Severity::Medium => "MEDIUM",
        Severity::Low => "LOW",
        Severity::Unknown => "UNKNOWN",
    }
}

/// Parse `HIGH`, `high`, `High`.
pub fn parse_severity(text: &str) -> Result<Severity, String> {
    match text.trim().to_ascii_uppercase().as_str() {
        "CRITICAL" => Ok(Severity::Critical),
        "HIGH" => Ok(Severity::High),
        "MEDIUM" => Ok(Severity::Medium),
        "LOW" => Ok(Severity::Low),
        "UNKNOWN" => Ok(Severity::Unknown),
        _ => Err(format!(
            "unknown severity `{text}`: use one of UNKNOWN, LOW, MEDIUM, HIGH, CRITICAL"
        )),
    }
}

fn summarize(
    passed: bool,
    blocked: &SeverityCounts,
    ignored: usize,
    allowed: usize,
    errors: &[ScannerError],
) -> String {
    let mut parts = Vec::new();
    if blocked.total() > 0 {
        let per: Vec<String> = [
            Severity::Critical,
            Severity::High,
            Severity::Medium,
            Severity::Low,
            Severity::Unknown,
        ]
        .into_iter()
        .filter(|s| blocked.get(*s) > 0)
        .map(|s| format!("{} {}", blocked.get(s), sev_name(s)))
        .collect();
        parts.push(format!("{} blocking ({})", blocked.total(), per.join(", ")));
    }
    for e in errors {
        parts.push(format!(
            "scanner `{}` failed{}",
            e.scanner,
            if e.blocking { "" } else { " (warn only)" }
        ));
    }
    parts.push(format!("{ignored} ignored"));
    parts.push(format!("{allowed} allowed"));
    format!(
        "gate {}: {}",
        if passed { "passed" } else { "BLOCKED" },
        parts.join(", ")
    )
}

fn severity_ci<'de, D: Deserializer<'de>>(d: D) -> Result<Severity, D::Error> {
    let text = String::deserialize(d)?;
    parse_severity(&text).map_err(serde::de::Error::custom)
}

/// Accept a TOML date (`2027-01-01`) or a string (`"2027-01-01"`).
fn date_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<NaiveDate>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum DateIn {
        Text(String),
        Toml(toml::value::Datetime),
    }
    let text = match DateIn::deserialize(d)? {
        DateIn::Text(t) => t,
        DateIn::Toml(dt) => match dt.date {
            Some(date) if dt.time.is_none() => date.to_string(),
            _ => {
                return Err(serde::de::Error::custom(format!(
                    "`expires = {dt}`: write a date such as 2027-01-01"
                )))
            }
        },
    };
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d")
        .map(Some)
        .map_err(|e| {
            serde::de::Error::custom(format!(
                "invalid date `{text}` ({e}): write e.g. 2027-01-01"
            ))
        })
}

#[cfg(test)]
mod tests;
