//! Showing a verdict: a console report for people and SARIF 2.1.0 for code-scanning tools.

use super::{sev_name, GateFinding, GateVerdict};
use crate::contract::Severity;
use serde_json::{json, Value};
use std::fmt::Write as _;

/// The verdict as the operator reads it in a terminal.
pub fn render_console(v: &GateVerdict) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "{}", v.summary);
    let _ = writeln!(
        out,
        "  policy: block >= {}{}",
        sev_name(v.severity),
        if v.ignore_unfixed {
            ", ignore unfixed"
        } else {
            ""
        }
    );
    for s in &v.scanners {
        match &s.error {
            Some(e) => {
                let _ = writeln!(out, "  scanner {}: ERROR {e}", s.scanner);
            }
            None => {
                let _ = writeln!(
                    out,
                    "  scanner {}: {} finding(s) for {}",
                    s.scanner, s.findings, s.artifact_name
                );
            }
        }
    }
    for e in &v.scanner_errors {
        let _ = writeln!(
            out,
            "  {} scanner `{}` failed: {}",
            if e.blocking { "BLOCKED:" } else { "warning:" },
            e.scanner,
            e.error
        );
    }
    section(&mut out, "blocking", &v.blocked);
    section(&mut out, "ignored", &v.ignored);
    section(&mut out, "allowed", &v.allowed);
    for e in &v.expired_ignores {
        let _ = writeln!(
            out,
            "  note: ignore entry `{}` expired on {} and no longer ignores {} finding(s){}",
            e.id,
            e.expired,
            e.findings,
            e.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default()
        );
    }
    out
}

fn section(out: &mut String, title: &str, items: &[GateFinding]) {
    if items.is_empty() {
        return;
    }
    let _ = writeln!(out, "  {title} ({}):", items.len());
    for g in items {
        let f = &g.finding;
        let pkg = if f.package.is_empty() {
            String::new()
        } else if f.installed_version.is_empty() {
            format!(" {}", f.package)
        } else {
            format!(" {} {}", f.package, f.installed_version)
        };
        let fix = if f.fixed_version.is_empty() {
            String::new()
        } else {
            format!(" (fixed in {})", f.fixed_version)
        };
        let _ = writeln!(
            out,
            "    {:<8} {}{pkg}{fix} [{}] {}",
            sev_name(f.severity),
            f.id,
            g.scanner,
            g.reason
        );
        if !f.title.is_empty() {
            let _ = writeln!(out, "             {}", truncate(&f.title, 100));
        }
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        s.to_string()
    } else {
        format!("{}…", s.chars().take(max).collect::<String>())
    }
}

fn sarif_level(sev: Severity, blocked: bool) -> &'static str {
    if blocked {
        "error"
    } else {
        match sev {
            Severity::Critical | Severity::High => "warning",
            _ => "note",
        }
    }
}

/// SARIF 2.1.0: one run per scanner; blocked findings are `error`s, allowed ones
/// `warning`/`note`, ignored ones carry an external suppression with the reason.
pub fn to_sarif(v: &GateVerdict) -> Value {
    let mut runs = Vec::new();
    for s in &v.scanners {
        let mut rules: Vec<Value> = Vec::new();
        let mut rule_ids: Vec<String> = Vec::new();
        let mut results = Vec::new();
        let groups: [(&[GateFinding], bool, bool); 3] = [
            (&v.blocked, true, false),
            (&v.allowed, false, false),
            (&v.ignored, false, true),
        ];
        for (items, blocked, suppressed) in groups {
            for g in items.iter().filter(|g| g.scanner == s.scanner) {
                let f = &g.finding;
                let rule_index = match rule_ids.iter().position(|r| r == &f.id) {
                    Some(i) => i,
                    None => {
                        rule_ids.push(f.id.clone());
                        let mut rule = json!({
                            "id": f.id,
                            "shortDescription": { "text": if f.title.is_empty() { f.id.clone() } else { f.title.clone() } },
                            "properties": { "security-severity": security_severity(f.severity), "tags": [format!("{:?}", f.class).to_lowercase(), sev_name(f.severity)] },
                        });
                        if !f.primary_url.is_empty() {
                            rule["helpUri"] = json!(f.primary_url);
                        }
                        rules.push(rule);
                        rule_ids.len() - 1
                    }
                };
                let mut text = format!("{} {}", sev_name(f.severity), f.id);
                if !f.package.is_empty() {
                    text.push_str(&format!(" in {} {}", f.package, f.installed_version));
                }
                if !f.fixed_version.is_empty() {
                    text.push_str(&format!(", fixed in {}", f.fixed_version));
                }
                text.push_str(&format!(": {}", g.reason));
                let target = if f.target.is_empty() {
                    s.artifact_name.as_str()
                } else {
                    f.target.as_str()
                };
                let mut result = json!({
                    "ruleId": f.id,
                    "ruleIndex": rule_index,
                    "level": sarif_level(f.severity, blocked),
                    "message": { "text": text },
                    "locations": [{ "physicalLocation": { "artifactLocation": { "uri": target } } }],
                    "properties": { "package": f.package, "installedVersion": f.installed_version, "fixedVersion": f.fixed_version, "status": f.status },
                });
                if suppressed {
                    result["suppressions"] =
                        json!([{ "kind": "external", "justification": g.reason }]);
                }
                results.push(result);
            }
        }
        let mut run = json!({
            "tool": { "driver": { "name": format!("dax-gate/{}", s.scanner), "rules": rules } },
            "results": results,
        });
        if let Some(err) = &s.error {
            run["invocations"] = json!([{ "executionSuccessful": false, "toolExecutionNotifications": [{ "level": "error", "message": { "text": err } }] }]);
        } else {
            run["invocations"] = json!([{ "executionSuccessful": true }]);
        }
        runs.push(run);
    }
    json!({
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": runs,
    })
}

/// GitHub code scanning ranks security results by this CVSS-like number.
fn security_severity(s: Severity) -> &'static str {
    match s {
        Severity::Critical => "9.5",
        Severity::High => "8.0",
        Severity::Medium => "5.5",
        Severity::Low => "2.0",
        Severity::Unknown => "0.0",
    }
}
