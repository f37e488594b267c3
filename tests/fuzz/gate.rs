//! The release gate's inputs: `.trivyignore` files, the `[gate]` policy (any JSON a TOML
//! table can become) and its evaluation with arbitrary findings from arbitrary scanners.
//! Parsing gives rules or an error naming the line; evaluation never panics, puts every
//! finding in exactly one of blocked / ignored / allowed, and blocks exactly when the policy
//! says so; the console and SARIF renderings never panic.

use dax::contract::{Finding, FindingClass, ScanReport, Severity};
use dax::gate::{self, trivyignore, GatePolicy, IgnoreRule, MaxCounts, NaiveDate, OnScannerError};
use proptest::prelude::*;

// ------------------------------------------------------------------ .trivyignore

fn ignore_line() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => ("[A-Z]{2,4}-[0-9]{1,6}-[0-9]{1,6}", proptest::option::of("exp:[0-9]{4}-[0-9]{2}-[0-9]{2}"), proptest::option::of(".{0,20}"))
            .prop_map(|(id, exp, reason)| {
                let mut l = id;
                if let Some(e) = exp { l = format!("{l} {e}"); }
                if let Some(r) = reason { l = format!("{l} # {r}"); }
                l
            }),
        1 => Just("exp:".to_string()),
        1 => Just("CVE-1 exp:2026-02-30".to_string()),
        1 => Just("CVE-1 exp:99999-01-01".to_string()),
        1 => Just("CVE-1 exp:-1-01-01".to_string()),
        1 => Just("CVE-1 exp:+262143-12-31".to_string()),
        1 => Just("# only a comment".to_string()),
        1 => Just("\u{feff}CVE-2\r".to_string()),
        1 => Just("   \t  ".to_string()),
        1 => Just("x".repeat(100_000)),
        2 => any::<String>(),
    ]
}

fn check_trivyignore(text: &str) {
    match trivyignore::parse(text, "fuzz/.trivyignore") {
        Ok(rules) => {
            for r in &rules {
                assert!(
                    !r.id.is_empty() && !r.id.contains(char::is_whitespace),
                    "{r:?}"
                );
                assert!(!r.id.starts_with('#'), "{r:?}");
            }
            // Parsed rules are valid policy entries.
            let policy = GatePolicy {
                ignore: rules,
                ..GatePolicy::default()
            };
            let json = serde_json::to_value(&policy).unwrap();
            let back: GatePolicy = serde_json::from_value(json).expect("rules round-trip");
            assert_eq!(back, policy);
        }
        Err(e) => assert!(e.starts_with("fuzz/.trivyignore:"), "{e}"),
    }
}

// ------------------------------------------------------------------ findings and policies

fn severity() -> impl Strategy<Value = Severity> {
    proptest::sample::select(vec![
        Severity::Unknown,
        Severity::Low,
        Severity::Medium,
        Severity::High,
        Severity::Critical,
    ])
}

fn class() -> impl Strategy<Value = FindingClass> {
    proptest::sample::select(vec![
        FindingClass::Vulnerability,
        FindingClass::Misconfiguration,
        FindingClass::Secret,
        FindingClass::Policy,
        FindingClass::License,
    ])
}

/// Strings a scanner may return: short ids that collide, empty, huge, control characters.
fn field() -> impl Strategy<Value = String> {
    prop_oneof![
        30 => proptest::sample::select(vec!["CVE-1", "cve-1", "CVE-2", "DS002", "*", "openssl", "bash", "fixed", "FIXED", "will_not_fix", "1.0", ""]).prop_map(str::to_string),
        4 => "\\PC{0,12}",
        2 => Just("\u{1b}[2J\nforged\r".to_string()),
        1 => Just("p".repeat(70_000)),
    ]
}

fn finding() -> impl Strategy<Value = Finding> {
    (
        (field(), severity(), class(), field()),
        (field(), field(), field(), field()),
        (field(), field()),
    )
        .prop_map(
            |(
                (id, severity, class, package),
                (installed_version, fixed_version, status, title),
                (primary_url, target),
            )| Finding {
                id,
                severity,
                class,
                package,
                installed_version,
                fixed_version,
                status,
                title,
                primary_url,
                target,
            },
        )
}

fn date() -> impl Strategy<Value = NaiveDate> {
    prop_oneof![
        (1970i32..2100, 1u32..=12, 1u32..=28)
            .prop_map(|(y, m, d)| NaiveDate::from_ymd_opt(y, m, d).unwrap()),
        Just(NaiveDate::MIN),
        Just(NaiveDate::MAX),
    ]
}

fn rule() -> impl Strategy<Value = IgnoreRule> {
    (
        field(),
        proptest::option::of(date()),
        proptest::option::of(field()),
        proptest::collection::vec(field(), 0..3),
    )
        .prop_map(|(id, expires, reason, packages)| IgnoreRule {
            id,
            expires,
            reason,
            packages,
        })
}

fn max_count() -> impl Strategy<Value = Option<u32>> {
    proptest::option::of(prop_oneof![0u32..4, Just(u32::MAX)])
}

fn policy() -> impl Strategy<Value = GatePolicy> {
    (
        severity(),
        any::<bool>(),
        proptest::collection::vec(rule(), 0..4),
        (
            max_count(),
            max_count(),
            max_count(),
            max_count(),
            max_count(),
        ),
        any::<bool>(),
    )
        .prop_map(
            |(severity, ignore_unfixed, ignore, (critical, high, medium, low, unknown), warn)| {
                GatePolicy {
                    scanners: vec![],
                    severity,
                    ignore_unfixed,
                    ignore,
                    max: MaxCounts {
                        critical,
                        high,
                        medium,
                        low,
                        unknown,
                    },
                    on_scanner_error: if warn {
                        OnScannerError::Warn
                    } else {
                        OnScannerError::Block
                    },
                }
            },
        )
}

type Reports = Vec<(String, Result<ScanReport, String>)>;

fn reports() -> impl Strategy<Value = Reports> {
    proptest::collection::vec(
        (
            field(),
            prop_oneof![
                4 => (field(), proptest::collection::vec(finding(), 0..12))
                    .prop_map(|(artifact_name, findings)| Ok(ScanReport { artifact_name, findings })),
                1 => field().prop_map(Err),
            ],
        ),
        0..4,
    )
}

/// The gate's contract, checked on one evaluation.
fn check_verdict(policy: &GatePolicy, reports: &Reports, today: NaiveDate) {
    let v = gate::evaluate(policy, reports, today);
    let found: usize = reports
        .iter()
        .filter_map(|(_, r)| r.as_ref().ok())
        .map(|r| r.findings.len())
        .sum();
    assert_eq!(
        v.blocked.len() + v.ignored.len() + v.allowed.len(),
        found,
        "every finding lands in exactly one list"
    );
    assert_eq!(v.blocked_counts.total(), v.blocked.len());
    let blocking_errors = reports.iter().filter(|(_, r)| r.is_err()).count() > 0
        && policy.on_scanner_error == OnScannerError::Block;
    assert_eq!(
        v.passed,
        v.blocked.is_empty() && !blocking_errors,
        "{}",
        v.summary
    );
    assert_eq!(v.is_blocked(), !v.passed);
    assert_eq!(v.scanners.len(), reports.len());
    // A finding at or above the threshold with no maximum for its severity, neither
    // unfixed-ignored nor matched by a live ignore entry, blocks.
    for f in &v.allowed {
        let sev = f.finding.severity;
        assert!(
            sev < policy.severity || policy.max.get(sev).is_some(),
            "allowed at or above the threshold without a max: {f:?}"
        );
    }
    for f in &v.blocked {
        assert!(
            !(policy.ignore_unfixed
                && f.finding.class == FindingClass::Vulnerability
                && f.finding.fixed_version.trim().is_empty()),
            "an unfixed vulnerability blocked under ignore_unfixed: {f:?}"
        );
    }
    let _ = gate::render_console(&v);
    serde_json::to_string(&gate::to_sarif(&v)).expect("SARIF serializes");
    serde_json::to_string(&v).expect("the verdict serializes (journal detail)");
}

proptest! {
    #![proptest_config(super::config(256, "fuzz/regressions/gate.txt"))]

    #[test]
    fn trivyignore_lines_parse_or_name_the_line(lines in proptest::collection::vec(ignore_line(), 0..12)) {
        check_trivyignore(&lines.join("\n"));
    }

    #[test]
    fn trivyignore_random_text_never_panics(text in any::<String>()) {
        check_trivyignore(&text);
    }

    /// Any JSON (what a `[gate]` table becomes) either is a policy or is refused.
    #[test]
    fn gate_policy_from_any_json(json in json_value(4)) {
        if let Ok(policy) = serde_json::from_value::<GatePolicy>(json) {
            let _ = policy.problems();
            check_verdict(&policy, &Vec::new(), NaiveDate::MIN);
        }
    }

    #[test]
    fn evaluation_with_arbitrary_findings(policy in policy(), reports in reports(), today in date()) {
        check_verdict(&policy, &reports, today);
    }
}

/// JSON values of bounded depth, with keys the policy knows.
fn json_value(depth: u32) -> impl Strategy<Value = serde_json::Value> {
    use serde_json::Value as J;
    let leaf = prop_oneof![
        Just(J::Null),
        any::<bool>().prop_map(J::Bool),
        any::<i64>().prop_map(J::from),
        any::<f64>().prop_map(J::from),
        Just(J::from(u64::MAX)),
        proptest::sample::select(vec![
            "HIGH",
            "high",
            "Critical",
            "nope",
            "warn",
            "block",
            "2027-01-01",
            "2027-02-30",
            "*",
            "CVE-1",
            ""
        ])
        .prop_map(J::from),
        any::<String>().prop_map(J::from),
    ];
    leaf.prop_recursive(depth, 64, 6, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..4).prop_map(J::Array),
            proptest::collection::vec(
                (
                    proptest::sample::select(vec![
                        "scanners",
                        "severity",
                        "ignore_unfixed",
                        "ignore",
                        "max",
                        "on_scanner_error",
                        "id",
                        "expires",
                        "reason",
                        "packages",
                        "CRITICAL",
                        "HIGH",
                        "medium",
                        "low",
                        "UNKNOWN",
                        "other",
                    ]),
                    inner,
                ),
                0..5,
            )
            .prop_map(|kv| J::Object(kv.into_iter().map(|(k, v)| (k.to_string(), v)).collect())),
        ]
    })
}

/// The seed corpus: `.trivyignore` files kept in the repository.
#[test]
fn corpus_trivyignore_files() {
    for (name, bytes) in super::corpus("trivyignore") {
        let text = String::from_utf8_lossy(&bytes);
        let _ = name;
        check_trivyignore(&text);
    }
}
