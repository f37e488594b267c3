use super::*;
use std::path::PathBuf;

fn testdata() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/testdata/trivy")
}

fn load(name: &str) -> TrivyReport {
    let path = testdata().join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    parse(&text, name).unwrap()
}

#[test]
fn centos7_vulnerabilities_map_every_field() {
    let r = load("centos-7.json");
    let f = findings(&r);
    assert_eq!(f.len(), 3);
    let bash = &f[0];
    assert_eq!(bash.id, "CVE-2019-18276");
    assert_eq!(bash.severity, Sev::Low);
    assert_eq!(bash.class, Class::Vulnerability);
    assert_eq!(bash.package, "bash");
    assert_eq!(bash.installed_version, "4.2.46-31.el7");
    assert_eq!(bash.fixed_version, "");
    assert_eq!(bash.status, "will_not_fix");
    assert!(bash.title.starts_with("bash: when effective UID"));
    assert_eq!(
        bash.primary_url,
        "https://avd.aquasec.com/nvd/cve-2019-18276"
    );
    assert_eq!(
        bash.target,
        "testdata/fixtures/images/centos-7.tar.gz (centos 7.6.1810)"
    );
    let ssl = &f[1];
    assert_eq!(
        (ssl.id.as_str(), ssl.package.as_str()),
        ("CVE-2019-1559", "openssl-libs")
    );
    assert_eq!(ssl.fixed_version, "1:1.0.2k-19.el7");
    assert_eq!(ssl.severity, Sev::Medium);
    assert_eq!(ssl.status, "fixed");
}

#[test]
fn every_report_in_testdata_parses_and_counts_match_jq() {
    // Expected counts are the lengths of Results[].Vulnerabilities/Misconfigurations.
    let expected = [
        ("alpine-310.json", 4),
        ("centos-7.json", 3),
        ("centos-7-ignore-unfixed.json", 2),
        ("centos-7-medium.json", 1),
        ("debian-buster.json", 2),
        ("dockerfile.json", 1),
        ("fluentd-gems.json", 2),
        ("npm.json", 1),
    ];
    let mut seen = 0;
    for entry in std::fs::read_dir(testdata()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if !name.ends_with(".json") {
            continue;
        }
        let want = expected
            .iter()
            .find(|(n, _)| *n == name)
            .unwrap_or_else(|| panic!("new test report {name}: add its count"));
        let f = findings(&load(&name));
        assert_eq!(f.len(), want.1, "{name}");
        assert!(
            f.iter().all(|i| !i.id.is_empty() && !i.target.is_empty()),
            "{name}"
        );
        seen += 1;
    }
    assert_eq!(seen, expected.len());
}

#[test]
fn dockerfile_misconfiguration() {
    let f = findings(&load("dockerfile.json"));
    assert_eq!(f[0].id, "DS-0002");
    assert_eq!(f[0].class, Class::Misconfiguration);
    assert_eq!(f[0].severity, Sev::High);
    assert_eq!(f[0].target, "Dockerfile");
    assert_eq!(f[0].status, "FAIL");
    assert!(f[0].title.contains("root"), "{}", f[0].title);
}

#[test]
fn language_packages_keep_multi_version_fix() {
    let f = findings(&load("fluentd-gems.json"));
    let gem = f.iter().find(|i| i.package == "activesupport").unwrap();
    assert_eq!(gem.fixed_version, "6.0.3.1, 5.2.4.3");
    assert_eq!(gem.target, "Ruby");
    assert_eq!(gem.severity, Sev::High);
}

#[test]
fn secrets_passed_misconfigs_and_missing_titles() {
    let text = r#"{"SchemaVersion":2,"ArtifactName":"app","Results":[
      {"Target":"config.env","Class":"secret","Secrets":[{"RuleID":"aws-access-key-id","Category":"AWS","Severity":"CRITICAL","Title":"AWS Access Key ID","StartLine":3,"Match":"AWS_ACCESS_KEY_ID=AKIA****"}]},
      {"Target":"Dockerfile","Class":"config","Misconfigurations":[{"ID":"DS001","Title":"t","Severity":"MEDIUM","Status":"PASS"},{"ID":"","AVDID":"AVD-DS-0026","Title":"No HEALTHCHECK","Severity":"LOW","Status":"FAIL"}]},
      {"Target":"x","Class":"os-pkgs","Vulnerabilities":[{"VulnerabilityID":"CVE-1","PkgName":"p","InstalledVersion":"1","Severity":"weird","Description":"first line\nsecond","References":["https://ref"]}]}
    ]}"#;
    let f = findings(&parse(text, "inline").unwrap());
    assert_eq!(f.len(), 3, "{f:?}");
    assert_eq!(f[0].class, Class::Secret);
    assert_eq!(f[0].target, "config.env:3");
    assert!(
        !format!("{f:?}").contains("AKIA"),
        "secret text must never be copied"
    );
    assert_eq!(f[1].id, "AVD-DS-0026");
    assert_eq!(f[2].severity, Sev::Unknown);
    assert_eq!(f[2].title, "first line");
    assert_eq!(f[2].primary_url, "https://ref");
}

#[test]
fn unknown_schema_and_garbage_are_clear_errors() {
    let e = parse(r#"{"SchemaVersion":1,"Results":[]}"#, "old.json").unwrap_err();
    assert!(matches!(e, ReportError::UnsupportedSchema(_)));
    assert!(
        e.to_string().contains("old.json has SchemaVersion 1")
            || e.to_string().contains("`old.json` has SchemaVersion 1"),
        "{e}"
    );
    let e = parse(r#"[{"Target":"x"}]"#, "v1.json").unwrap_err();
    assert!(matches!(e, ReportError::Malformed(_)), "{e:?}");
    let e = parse(r#"{"Results":[]}"#, "none.json").unwrap_err();
    assert!(e.to_string().contains("no SchemaVersion"), "{e}");
    let e = parse("not json", "x.json").unwrap_err();
    assert!(e.to_string().contains("not a Trivy JSON report"), "{e}");
}

#[test]
fn artifact_names_and_digests_are_checked() {
    let r = load("centos-7.json");
    // Unknown name/digest: nothing to compare.
    check_artifact(&r, "c.json", "", "").unwrap();
    check_artifact(&r, "c.json", "python3 app.py --port {port}", "").unwrap();
    check_artifact(&r, "c.json", "testdata/fixtures/images/centos-7.tar.gz", "").unwrap();
    check_artifact(
        &r,
        "c.json",
        "ghcr.io/aquasecurity/trivy-test-images:centos-7",
        "",
    )
    .unwrap();
    let e = check_artifact(&r, "c.json", "registry.example/app:2.0", "").unwrap_err();
    assert!(matches!(e, ReportError::ArtifactMismatch(_)));
    assert!(
        e.to_string().contains("registry.example/app:2.0") && e.to_string().contains("centos-7"),
        "{e}"
    );
    // No RepoDigests in this report: a digest cannot be checked and is accepted.
    check_artifact(&r, "c.json", "", "sha256:0000").unwrap();

    let with_digest = parse(
        r#"{"SchemaVersion":2,"ArtifactName":"alpine:3.10","Metadata":{"RepoTags":["alpine:3.10"],"RepoDigests":["alpine@sha256:aaaa"]},"Results":[]}"#,
        "a.json",
    )
    .unwrap();
    check_artifact(
        &with_digest,
        "a.json",
        "docker.io/library/alpine:3.10",
        "sha256:aaaa",
    )
    .unwrap();
    check_artifact(&with_digest, "a.json", "alpine@sha256:aaaa", "").unwrap();
    let e = check_artifact(&with_digest, "a.json", "alpine:3.10", "sha256:bbbb").unwrap_err();
    assert!(
        e.to_string().contains("sha256:bbbb") && e.to_string().contains("sha256:aaaa"),
        "{e}"
    );
}
