//! A trivial scanner: one finding per artifact, severity from the config.
use dax_sdk::scanner::*;

struct Hello;

impl PluginGuest for Hello {
    fn describe() -> PluginInfo {
        info(
            "hello-scanner",
            "0.1.0",
            PluginRole::Scanner,
            "Reports one finding",
            "{}",
        )
    }
    fn validate_config(_config: String) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

impl Guest for Hello {
    fn scan(_config: String, a: Artifact) -> Result<Report, PluginError> {
        Ok(Report {
            artifact_name: a.name.clone(),
            findings: vec![Finding {
                id: "HELLO-1".into(),
                severity: Severity::High,
                class: FindingClass::Vulnerability,
                package_name: "hello".into(),
                installed_version: "1.0".into(),
                fixed_version: "1.1".into(),
                status: "fixed".into(),
                title: format!("hello finding in {}", a.name),
                primary_url: String::new(),
                target: a.name,
            }],
        })
    }
}

dax_sdk::export_scanner!(Hello);
