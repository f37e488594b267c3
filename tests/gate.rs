//! The release gate end to end: real Trivy reports (../shared/testdata/trivy) read by the real
//! `trivy` plugin in the real plugin host, judged by `dax::gate`; the `manifest-policy`
//! plugin; and `dax gate` on the command line.
//!
//! Ground truth comes from the reports themselves (read here with serde_json), and for the
//! filters from the reports Trivy produced with `--ignore-unfixed` and
//! `--ignore-unfixed --severity MEDIUM`.

use dax::cli::gate::{run, GateArgs};
use dax::contract::{Artifact, CallError, FindingClass, PluginError, ScanReport, Severity};
use dax::gate::{evaluate, GatePolicy, IgnoreRule, NaiveDate};
use dax::plugin::{DirGrant, PluginHost, PluginSpec};
use dax_tests::{fresh_host, plugin_path, repo_root, spec};
use serde_json::Value;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn testdata() -> PathBuf {
    let dir = repo_root().join("../shared/testdata/trivy");
    assert!(dir.is_dir(), "test reports missing at {}", dir.display());
    dir.canonicalize().unwrap()
}

fn day(s: &str) -> NaiveDate {
    NaiveDate::parse_from_str(s, "%Y-%m-%d").unwrap()
}

/// `[plugins.trivy]` with the test reports granted read-only at `/reports`.
fn trivy_spec(dir: &Path) -> PluginSpec {
    let mut s = spec(&plugin_path("trivy"));
    s.grants.dirs = vec![DirGrant {
        host: dir.to_path_buf(),
        guest: Some("/reports".into()),
        writable: false,
        quota_mib: None,
    }];
    s
}

async fn scan(
    host: &PluginHost,
    spec: &PluginSpec,
    config: Value,
    artifact: &Artifact,
) -> Result<ScanReport, CallError> {
    let plugin = host
        .load("trivy", spec, Path::new("."))
        .await
        .expect("loading the trivy plugin");
    let scanner = plugin
        .scanner(config)
        .await
        .expect("instantiating the trivy plugin");
    scanner.scan(artifact).await
}

async fn scan_report(host: &PluginHost, file: &str) -> ScanReport {
    let config = serde_json::json!({ "report": format!("/reports/{file}") });
    scan(host, &trivy_spec(&testdata()), config, &Artifact::default())
        .await
        .unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// `(id, package)` of every vulnerability in a report, read straight from its JSON.
fn raw_vulns(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(testdata().join(file)).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["Results"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|r| r["Vulnerabilities"].as_array().cloned().unwrap_or_default())
        .collect()
}

fn id_pkg_raw(file: &str) -> BTreeSet<(String, String)> {
    raw_vulns(file)
        .iter()
        .map(|v| {
            (
                v["VulnerabilityID"].as_str().unwrap().to_string(),
                v["PkgName"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn report_files() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(testdata())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert!(
        names.len() >= 8,
        "expected the 8 Trivy reports, found {names:?}"
    );
    names
}

#[tokio::test]
async fn policy_keeps_exactly_what_trivy_kept_for_centos7() {
    let (host, _cache) = fresh_host();
    let report = scan_report(&host, "centos-7.json").await;
    let reports = vec![("trivy".to_string(), Ok(report))];

    // `trivy --ignore-unfixed` (all severities): threshold UNKNOWN keeps every severity.
    let policy = GatePolicy {
        severity: Severity::Unknown,
        ignore_unfixed: true,
        ..Default::default()
    };
    let v = evaluate(&policy, &reports, day("2026-01-01"));
    let kept: BTreeSet<_> = v
        .blocked
        .iter()
        .map(|g| (g.finding.id.clone(), g.finding.package.clone()))
        .collect();
    assert_eq!(kept, id_pkg_raw("centos-7-ignore-unfixed.json"));
    assert_eq!(kept.len(), 2);
    assert!(v
        .ignored
        .iter()
        .any(|g| g.finding.id == "CVE-2019-18276" && g.reason.contains("ignore_unfixed")));

    // `trivy --ignore-unfixed --severity MEDIUM`. Trivy's --severity lists severities to keep;
    // the gate blocks at or above: the same here since the image has nothing above MEDIUM.
    let policy = GatePolicy {
        severity: Severity::Medium,
        ignore_unfixed: true,
        ..Default::default()
    };
    let v = evaluate(&policy, &reports, day("2026-01-01"));
    let kept: BTreeSet<_> = v
        .blocked
        .iter()
        .map(|g| (g.finding.id.clone(), g.finding.package.clone()))
        .collect();
    assert_eq!(kept, id_pkg_raw("centos-7-medium.json"));
    assert_eq!(kept.len(), 1);
    assert!(!v.passed);
    assert!(
        v.allowed.iter().any(|g| g.finding.id == "CVE-2018-0734"),
        "LOW stays below the threshold"
    );

    // The unfiltered policy keeps all three, as the unfiltered report has them.
    let v = evaluate(
        &GatePolicy {
            severity: Severity::Unknown,
            ..Default::default()
        },
        &reports,
        day("2026-01-01"),
    );
    let kept: BTreeSet<_> = v
        .blocked
        .iter()
        .map(|g| (g.finding.id.clone(), g.finding.package.clone()))
        .collect();
    assert_eq!(kept, id_pkg_raw("centos-7.json"));
}

#[tokio::test]
async fn every_report_maps_every_finding_and_the_default_policy_blocks_high_and_critical() {
    let (host, _cache) = fresh_host();
    for file in report_files() {
        let report = scan_report(&host, &file).await;
        let raw: Value =
            serde_json::from_str(&std::fs::read_to_string(testdata().join(&file)).unwrap())
                .unwrap();
        assert_eq!(
            report.artifact_name,
            raw["ArtifactName"].as_str().unwrap(),
            "{file}"
        );

        // Every vulnerability, field by field.
        let vulns: Vec<_> = report
            .findings
            .iter()
            .filter(|f| f.class == FindingClass::Vulnerability)
            .collect();
        let raw_v = raw_vulns(&file);
        assert_eq!(vulns.len(), raw_v.len(), "{file}");
        for (f, r) in vulns.iter().zip(&raw_v) {
            assert_eq!(f.id, r["VulnerabilityID"].as_str().unwrap(), "{file}");
            assert_eq!(f.package, r["PkgName"].as_str().unwrap(), "{file}");
            assert_eq!(
                f.installed_version,
                r["InstalledVersion"].as_str().unwrap(),
                "{file}"
            );
            assert_eq!(
                f.fixed_version,
                r["FixedVersion"].as_str().unwrap_or(""),
                "{file}"
            );
            assert_eq!(f.status, r["Status"].as_str().unwrap_or(""), "{file}");
            assert_eq!(
                format!("{:?}", f.severity).to_uppercase(),
                r["Severity"].as_str().unwrap(),
                "{file}"
            );
            assert_eq!(
                f.primary_url,
                r["PrimaryURL"].as_str().unwrap_or(""),
                "{file}"
            );
            assert!(!f.target.is_empty(), "{file}");
        }
        let raw_misconf: usize = raw["Results"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["Misconfigurations"].as_array().map_or(0, |m| m.len()))
            .sum();
        let misconf = report
            .findings
            .iter()
            .filter(|f| f.class == FindingClass::Misconfiguration)
            .count();
        assert_eq!(misconf, raw_misconf, "{file}");

        // Default policy: HIGH and above block.
        let expected_blocking = report
            .findings
            .iter()
            .filter(|f| f.severity >= Severity::High)
            .count();
        let v = evaluate(
            &GatePolicy::default(),
            &[("trivy".into(), Ok(report.clone()))],
            day("2026-01-01"),
        );
        assert_eq!(v.blocked.len(), expected_blocking, "{file}: {}", v.summary);
        assert_eq!(v.passed, expected_blocking == 0, "{file}");
        assert_eq!(
            v.blocked.len() + v.allowed.len() + v.ignored.len(),
            report.findings.len(),
            "{file}"
        );
    }
}

#[tokio::test]
async fn dockerfile_misconfiguration_blocks_until_ignored_with_an_unexpired_entry() {
    let (host, _cache) = fresh_host();
    let report = scan_report(&host, "dockerfile.json").await;
    let f = &report.findings[0];
    assert_eq!(
        (f.id.as_str(), f.class, f.severity),
        ("DS-0002", FindingClass::Misconfiguration, Severity::High)
    );
    let reports = vec![("trivy".to_string(), Ok(report))];
    let mut policy = GatePolicy::default();
    assert!(!evaluate(&policy, &reports, day("2026-01-01")).passed);
    policy.ignore.push(IgnoreRule {
        id: "DS-0002".into(),
        expires: Some(day("2026-03-01")),
        reason: Some("base image runs as root until the migration".into()),
        packages: vec![],
    });
    let v = evaluate(&policy, &reports, day("2026-02-28"));
    assert!(v.passed, "{}", v.summary);
    assert!(v.ignored[0].reason.contains("until the migration"));
    let v = evaluate(&policy, &reports, day("2026-03-01"));
    assert!(!v.passed, "expired entries stop ignoring");
    assert_eq!(v.expired_ignores[0].id, "DS-0002");
}

#[tokio::test]
async fn clear_errors_for_missing_reports_grants_and_wrong_artifacts() {
    let (host, _cache) = fresh_host();
    let dir = testdata();

    // The file is not in the granted folder.
    let err = scan(
        &host,
        &trivy_spec(&dir),
        serde_json::json!({ "report": "/reports/nope.json" }),
        &Artifact::default(),
    )
    .await
    .unwrap_err();
    let text = err.to_string();
    assert!(
        matches!(
            &err,
            CallError::Plugin {
                error: PluginError::NotFound(_),
                ..
            }
        ),
        "{text}"
    );
    assert!(text.contains("/reports/nope.json"), "{text}");

    // No grant at all: the message says which grant to add.
    let err = scan(
        &host,
        &spec(&plugin_path("trivy")),
        serde_json::json!({ "report": "/reports/centos-7.json" }),
        &Artifact::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("grants.dirs") && err.contains("/reports"),
        "{err}"
    );

    // A report for another image than the one being released.
    let artifact = Artifact {
        name: "registry.example/shop:2.0".into(),
        ..Default::default()
    };
    let err = scan(
        &host,
        &trivy_spec(&dir),
        serde_json::json!({ "report": "/reports/centos-7.json" }),
        &artifact,
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("registry.example/shop:2.0") && err.contains("centos-7"),
        "{err}"
    );
    // ...accepted when it is the scanned image (by tag), or when checking is turned off.
    let tagged = Artifact {
        name: "ghcr.io/aquasecurity/trivy-test-images:centos-7".into(),
        ..Default::default()
    };
    scan(
        &host,
        &trivy_spec(&dir),
        serde_json::json!({ "report": "/reports/centos-7.json" }),
        &tagged,
    )
    .await
    .unwrap();
    scan(
        &host,
        &trivy_spec(&dir),
        serde_json::json!({ "report": "/reports/centos-7.json", "check_artifact": false }),
        &artifact,
    )
    .await
    .unwrap();

    // An unknown schema version.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("old.json"),
        r#"{"SchemaVersion":1,"Results":[]}"#,
    )
    .unwrap();
    let err = scan(
        &host,
        &trivy_spec(tmp.path()),
        serde_json::json!({ "report": "/reports/old.json" }),
        &Artifact::default(),
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(err.contains("SchemaVersion 1"), "{err}");

    // A failed scanner blocks the release by default.
    let v = evaluate(
        &GatePolicy::default(),
        &[("trivy".into(), Err(err))],
        day("2026-01-01"),
    );
    assert!(!v.passed && v.scanner_errors[0].blocking);

    // The plugin's own config check.
    let plugin = host
        .load("trivy", &trivy_spec(&dir), Path::new("."))
        .await
        .unwrap();
    let problems = plugin
        .validate_config(&serde_json::json!({ "report": "relative.json" }))
        .await
        .unwrap();
    assert_eq!(problems[0].field, "report");
    let problems = plugin
        .validate_config(&serde_json::json!({ "reprot": "/reports/x.json" }))
        .await
        .unwrap();
    assert!(!problems.is_empty());
}

#[tokio::test]
async fn manifest_policy_plugin_reports_rule_violations() {
    let (host, _cache) = fresh_host();
    let plugin = host
        .load(
            "manifest-policy",
            &spec(&plugin_path("manifest-policy")),
            Path::new("."),
        )
        .await
        .unwrap();
    let config = serde_json::json!({
        "allowed_registries": ["ghcr.io/acme"],
        "rules": { "read-only-root-fs": { "enabled": false }, "no-latest-tag": { "severity": "HIGH" } }
    });
    assert!(plugin.validate_config(&config).await.unwrap().is_empty());
    let bad = plugin
        .validate_config(&serde_json::json!({ "rules": { "no-rot": {} } }))
        .await
        .unwrap();
    assert_eq!(bad[0].field, "rules.no-rot");

    let scanner = plugin.scanner(config).await.unwrap();
    let manifest = r#"
apiVersion: apps/v1
kind: Deployment
metadata: { name: shop }
spec:
  template:
    spec:
      containers:
        - name: web
          image: docker.io/acme/shop:latest
          securityContext: { privileged: true }
        - name: sidecar
          image: ghcr.io/acme/proxy:1.4
          securityContext: { runAsNonRoot: true }
          resources: { limits: { cpu: 100m, memory: 64Mi } }
"#;
    let report = scanner
        .scan(&Artifact {
            name: "shop".into(),
            digest: String::new(),
            manifests: vec![manifest.into()],
        })
        .await
        .unwrap();
    let got: BTreeSet<(String, Severity)> = report
        .findings
        .iter()
        .map(|f| (f.id.clone(), f.severity))
        .collect();
    let want: BTreeSet<(String, Severity)> = [
        ("no-root", Severity::High),
        ("no-privileged", Severity::Critical),
        ("resource-limits", Severity::Medium),
        ("no-latest-tag", Severity::High),
        ("allowed-registries", Severity::High),
    ]
    .into_iter()
    .map(|(i, s)| (i.to_string(), s))
    .collect();
    assert_eq!(got, want);
    assert!(report
        .findings
        .iter()
        .all(|f| f.package == "Deployment/shop:web" && f.class == FindingClass::Policy));
    let v = evaluate(
        &GatePolicy::default(),
        &[("manifest-policy".into(), Ok(report))],
        day("2026-01-01"),
    );
    assert_eq!(v.blocked.len(), 4);
    assert_eq!(v.allowed.len(), 1);

    let err = scanner
        .scan(&Artifact {
            name: "shop".into(),
            digest: String::new(),
            manifests: vec!["kind: [unclosed".into()],
        })
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("manifest[0]"), "{err}");
}

fn cli_args(report: &Path) -> GateArgs {
    GateArgs {
        trivy_report: Some(report.to_path_buf()),
        trivy_plugin: plugin_path("trivy").display().to_string(),
        today: Some("2026-01-01".into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn dax_gate_on_a_report_file_exits_0_1_2_and_writes_sarif() {
    let centos = testdata().join("centos-7.json");
    let tmp = tempfile::tempdir().unwrap();

    // Default HIGH: centos-7 has nothing above MEDIUM.
    assert_eq!(run(&cli_args(&centos), true).await.unwrap(), 0);

    // MEDIUM + ignore-unfixed: CVE-2019-1559 blocks; SARIF lists it as an error.
    let sarif = tmp.path().join("gate.sarif");
    let mut args = cli_args(&centos);
    args.severity = Some("medium".into());
    args.ignore_unfixed = true;
    args.sarif = Some(sarif.clone());
    assert_eq!(run(&args, false).await.unwrap(), 1);
    let doc: Value = serde_json::from_str(&std::fs::read_to_string(&sarif).unwrap()).unwrap();
    assert_eq!(doc["version"], "2.1.0");
    let errors: Vec<&Value> = doc["runs"][0]["results"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["level"] == "error")
        .collect();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["ruleId"], "CVE-2019-1559");

    // A .trivyignore entry that has not expired lets it through; an expired one does not.
    let ignore = tmp.path().join(".trivyignore");
    std::fs::write(
        &ignore,
        "# accepted\nCVE-2019-1559 exp:2026-06-01 # patched in next base image\n",
    )
    .unwrap();
    args.ignorefile = Some(ignore.clone());
    assert_eq!(run(&args, false).await.unwrap(), 0);
    args.today = Some("2026-06-01".into());
    assert_eq!(run(&args, false).await.unwrap(), 1);

    // The verdict in JSON names what was ignored and why.
    args.today = Some("2026-01-01".into());
    let v = dax::cli::gate::evaluate_args(&args).await.unwrap();
    let json = serde_json::to_value(&v).unwrap();
    assert_eq!(json["passed"], true);
    assert!(json["ignored"]
        .as_array()
        .unwrap()
        .iter()
        .any(|g| g["id"] == "CVE-2019-1559"
            && g["reason"]
                .as_str()
                .unwrap()
                .contains("patched in next base image")));

    // Errors: a missing report, a bad severity, and a report for another artifact.
    assert_eq!(
        run(&cli_args(&tmp.path().join("missing.json")), false)
            .await
            .unwrap(),
        2
    );
    let mut bad = cli_args(&centos);
    bad.severity = Some("SEVERE".into());
    assert_eq!(run(&bad, false).await.unwrap(), 2);
    let mut other = cli_args(&centos);
    other.artifact = Some("registry.example/shop:2.0".into());
    // The scanner fails: blocked by default, a warning when asked.
    assert_eq!(run(&other, false).await.unwrap(), 1);
    other.warn_on_scanner_error = true;
    assert_eq!(run(&other, false).await.unwrap(), 0);
}

#[tokio::test]
async fn dax_gate_on_a_deployment_file() {
    let tmp = tempfile::tempdir().unwrap();
    let trivy = plugin_path("trivy");
    let file = tmp.path().join("deploy.toml");
    let write = |ignore: &str| {
        std::fs::write(
            &file,
            format!(
                r#"
[deployment]
app = "demo"
version = "v2"
artifact = "ghcr.io/aquasecurity/trivy-test-images:centos-7"

[target]
plugin = "local"

[strategy]
plugin = "canary"

[gate]
scanners = ["trivy"]
severity = "MEDIUM"
ignore_unfixed = true
{ignore}

[plugins.local]
source = "builtin:local"
[plugins.canary]
source = "builtin:canary"

[plugins.trivy]
source = "{trivy}"
[plugins.trivy.config]
report = "/reports/centos-7.json"
[plugins.trivy.grants]
dirs = [{{ host = "{dir}", guest = "/reports" }}]
"#,
                trivy = trivy.display(),
                dir = testdata().display(),
            ),
        )
        .unwrap();
    };
    let args = GateArgs {
        file: Some(file.clone()),
        today: Some("2026-01-01".into()),
        ..Default::default()
    };
    write("");
    let v = dax::cli::gate::evaluate_args(&args).await.unwrap();
    assert!(!v.passed, "{}", v.summary);
    assert_eq!(v.blocked.len(), 1);
    assert_eq!(v.blocked[0].finding.id, "CVE-2019-1559");
    assert_eq!(run(&args, true).await.unwrap(), 1);

    write("[[gate.ignore]]\nid = \"CVE-2019-1559\"\nexpires = 2026-06-01\nreason = \"vendor backport verified\"\npackages = [\"openssl-libs\"]");
    assert_eq!(run(&args, false).await.unwrap(), 0);
    write("[[gate.ignore]]\nid = \"CVE-2019-1559\"\nexpires = 2025-06-01");
    assert_eq!(run(&args, false).await.unwrap(), 1);
    // A typo in the gate table is an error (exit 2), not a silent pass.
    write("ignore_unfxed = true");
    assert_eq!(run(&args, false).await.unwrap(), 2);
}
