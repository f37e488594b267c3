use super::*;
use crate::contract::{Finding, FindingClass, ScanReport, Severity};

fn vuln(id: &str, sev: Severity, pkg: &str, fixed: &str, status: &str) -> Finding {
    Finding {
        id: id.into(),
        severity: sev,
        class: FindingClass::Vulnerability,
        package: pkg.into(),
        installed_version: "1.0".into(),
        fixed_version: fixed.into(),
        status: status.into(),
        title: format!("{id} title"),
        primary_url: String::new(),
        target: "img (os)".into(),
    }
}

fn report(findings: Vec<Finding>) -> Vec<(String, Result<ScanReport, String>)> {
    vec![(
        "trivy".into(),
        Ok(ScanReport {
            artifact_name: "img".into(),
            findings,
        }),
    )]
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

fn ids(list: &[GateFinding]) -> Vec<String> {
    list.iter()
        .map(|g| format!("{}:{}", g.finding.id, g.finding.package))
        .collect()
}

#[test]
fn policy_from_toml_with_defaults_and_dates() {
    let doc: toml::Value = toml::from_str(
        r#"
        [gate]
        scanners = ["trivy"]
        severity = "medium"
        ignore_unfixed = true
        max = { LOW = 3, critical = 0 }
        on_scanner_error = "warn"
        [[gate.ignore]]
        id = "CVE-1"
        expires = 2027-01-01
        reason = "vendor"
        [[gate.ignore]]
        id = "*"
        packages = ["bash"]
        expires = "2026-02-03"
        "#,
    )
    .unwrap();
    let p: GatePolicy = doc["gate"].clone().try_into().unwrap();
    assert_eq!(p.severity, Severity::Medium);
    assert_eq!(p.max.low, Some(3));
    assert_eq!(p.max.critical, Some(0));
    assert_eq!(p.on_scanner_error, OnScannerError::Warn);
    assert_eq!(p.ignore[0].expires, Some(day("2027-01-01")));
    assert_eq!(p.ignore[1].expires, Some(day("2026-02-03")));
    assert!(p.problems().is_empty());

    let d: GatePolicy = toml::from_str("").unwrap();
    assert_eq!(d.severity, Severity::High);
    assert_eq!(d.on_scanner_error, OnScannerError::Block);

    let err = toml::from_str::<GatePolicy>("severity = \"HIGHEST\"").unwrap_err();
    assert!(err.to_string().contains("unknown severity"), "{err}");
    let err = toml::from_str::<GatePolicy>("ignore_unfxed = true").unwrap_err();
    assert!(err.to_string().contains("ignore_unfxed"), "{err}");
    let bad: GatePolicy = toml::from_str("[[ignore]]\nid = \"*\"").unwrap();
    assert_eq!(bad.problems()[0].0, "gate.ignore[0].packages");
}

#[test]
fn threshold_blocks_at_and_above() {
    let r = report(vec![
        vuln("C1", Severity::Critical, "a", "2", "fixed"),
        vuln("H1", Severity::High, "b", "2", "fixed"),
        vuln("M1", Severity::Medium, "c", "2", "fixed"),
    ]);
    let v = evaluate(&GatePolicy::default(), &r, day("2026-01-01"));
    assert!(!v.passed);
    assert_eq!(ids(&v.blocked), ["C1:a", "H1:b"]);
    assert_eq!(ids(&v.allowed), ["M1:c"]);
    assert_eq!(v.blocked_counts.critical, 1);
    assert!(v.summary.contains("BLOCKED"), "{}", v.summary);
}

#[test]
fn ignore_unfixed_follows_trivy_status_semantics() {
    let p = GatePolicy {
        severity: Severity::Low,
        ignore_unfixed: true,
        ..Default::default()
    };
    let r = report(vec![
        vuln("A", Severity::High, "a", "", "will_not_fix"),
        vuln("B", Severity::High, "b", "", ""),
        vuln("C", Severity::High, "c", "2", "fixed"),
        vuln("D", Severity::High, "d", "2", "affected"),
        vuln("E", Severity::High, "e", "2", ""),
    ]);
    let v = evaluate(&p, &r, day("2026-01-01"));
    assert_eq!(ids(&v.blocked), ["C:c", "E:e"]);
    assert_eq!(v.ignored.len(), 3);
    assert!(v
        .ignored
        .iter()
        .all(|g| g.reason.starts_with("ignore_unfixed")));
}

#[test]
fn ignore_entries_expire_and_can_be_per_package() {
    let p = GatePolicy {
        ignore: vec![
            IgnoreRule {
                id: "cve-1".into(),
                expires: Some(day("2026-06-01")),
                reason: Some("vendor fix pending".into()),
                packages: vec![],
            },
            IgnoreRule {
                id: "CVE-2".into(),
                expires: None,
                reason: None,
                packages: vec!["openssl".into()],
            },
            IgnoreRule {
                id: "*".into(),
                expires: None,
                reason: Some("test-only tool".into()),
                packages: vec!["bash".into()],
            },
        ],
        ..Default::default()
    };
    let r = report(vec![
        vuln("CVE-1", Severity::Critical, "zlib", "2", "fixed"),
        vuln("CVE-2", Severity::Critical, "openssl", "2", "fixed"),
        vuln("CVE-2", Severity::Critical, "openssl-libs", "2", "fixed"),
        vuln("CVE-3", Severity::Critical, "bash", "2", "fixed"),
    ]);
    let before = evaluate(&p, &r, day("2026-05-31"));
    assert_eq!(ids(&before.blocked), ["CVE-2:openssl-libs"]);
    assert_eq!(before.ignored.len(), 3);
    let why = before
        .ignored
        .iter()
        .find(|g| g.finding.id == "CVE-1")
        .unwrap();
    assert!(
        why.reason.contains("vendor fix pending") && why.reason.contains("2026-06-01"),
        "{}",
        why.reason
    );
    assert!(before.expired_ignores.is_empty());

    // On the expiry date the entry stops ignoring (Trivy: now > exp midnight).
    let after = evaluate(&p, &r, day("2026-06-01"));
    assert_eq!(ids(&after.blocked), ["CVE-1:zlib", "CVE-2:openssl-libs"]);
    assert_eq!(after.expired_ignores.len(), 1);
    assert_eq!(after.expired_ignores[0].findings, 1);
}

#[test]
fn max_counts_allow_up_to_n() {
    let p = GatePolicy {
        severity: Severity::Critical,
        max: MaxCounts {
            medium: Some(2),
            critical: Some(1),
            ..Default::default()
        },
        ..Default::default()
    };
    let two = report(vec![
        vuln("M1", Severity::Medium, "a", "2", "fixed"),
        vuln("M2", Severity::Medium, "b", "2", "fixed"),
        vuln("C1", Severity::Critical, "c", "2", "fixed"),
    ]);
    let v = evaluate(&p, &two, day("2026-01-01"));
    assert!(v.passed, "{}", v.summary);
    let mut three = two.clone();
    if let Ok(r) = &mut three[0].1 {
        r.findings
            .push(vuln("M3", Severity::Medium, "d", "2", "fixed"));
    }
    let v = evaluate(&p, &three, day("2026-01-01"));
    assert!(!v.passed);
    assert_eq!(ids(&v.blocked), ["M1:a", "M2:b", "M3:d"]);
    assert!(
        v.blocked[0].reason.contains("exceed max 2"),
        "{}",
        v.blocked[0].reason
    );
}

#[test]
fn scanner_errors_block_unless_warn() {
    let reports = vec![("trivy".to_string(), Err("report not found".to_string()))];
    let v = evaluate(&GatePolicy::default(), &reports, day("2026-01-01"));
    assert!(!v.passed);
    assert!(v.scanner_errors[0].blocking);
    let warn = GatePolicy {
        on_scanner_error: OnScannerError::Warn,
        ..Default::default()
    };
    let v = evaluate(&warn, &reports, day("2026-01-01"));
    assert!(v.passed);
    assert!(v.summary.contains("warn only"), "{}", v.summary);
}

#[test]
fn renders_console_json_and_sarif() {
    let p = GatePolicy {
        ignore: vec![IgnoreRule {
            id: "L1".into(),
            expires: None,
            reason: Some("accepted".into()),
            packages: vec![],
        }],
        ..Default::default()
    };
    let r = report(vec![
        vuln("H1", Severity::High, "openssl", "2", "fixed"),
        vuln("L1", Severity::Low, "bash", "", ""),
        vuln("M1", Severity::Medium, "zlib", "", ""),
    ]);
    let v = evaluate(&p, &r, day("2026-01-01"));
    let text = render_console(&v);
    assert!(
        text.contains("blocking (1)") && text.contains("H1 openssl 1.0 (fixed in 2)"),
        "{text}"
    );
    assert!(text.contains("accepted"), "{text}");

    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["passed"], false);
    assert_eq!(json["blocked"][0]["id"], "H1");
    assert_eq!(json["blocked"][0]["severity"], "HIGH");
    assert_eq!(json["ignored"][0]["reason"], "ignore `L1`: accepted");
    assert_eq!(json["passed_findings"][0]["id"], "M1");

    let sarif = to_sarif(&v);
    assert_eq!(sarif["version"], "2.1.0");
    let results = sarif["runs"][0]["results"].as_array().unwrap();
    assert_eq!(results.len(), 3);
    assert_eq!(results[0]["level"], "error");
    assert_eq!(results[0]["ruleId"], "H1");
    let suppressed: Vec<_> = results
        .iter()
        .filter(|r| r.get("suppressions").is_some())
        .collect();
    assert_eq!(suppressed.len(), 1);
    assert_eq!(suppressed[0]["ruleId"], "L1");
    let rules = sarif["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap();
    assert_eq!(rules.len(), 3);
}

#[test]
fn policy_from_json_as_the_config_module_hands_it_over() {
    // config::toml_to_json turns TOML dates into strings.
    let v = serde_json::json!({
        "scanners": ["trivy"], "severity": "CRITICAL", "ignore_unfixed": false,
        "ignore": [{ "id": "CVE-1", "expires": "2027-01-01", "packages": ["openssl"] }],
        "max": { "HIGH": 2 }, "on_scanner_error": "block"
    });
    let p: GatePolicy = serde_json::from_value(v).unwrap();
    assert_eq!(p.ignore[0].expires, Some(day("2027-01-01")));
    assert_eq!(p.max.high, Some(2));
    let e = serde_json::from_value::<GatePolicy>(
        serde_json::json!({"ignore": [{"id": "x", "expires": "soon"}]}),
    )
    .unwrap_err();
    assert!(e.to_string().contains("invalid date `soon`"), "{e}");
}
