//! A target whose `supported-traffic` answer attacks the host's dry run (tests/traffic_support.rs).
//! The `attack` config key picks it: `forge-note` (weights only, with a note that tries to
//! forge a terminal line and is 100 KiB long), `sleep` (never answers), `error` (answers
//! `unsupported`). Every other call fails with "called": `dax validate` and the check before
//! `dax deploy` must never make one.
use dax_sdk::target::*;

struct HostileTarget;

fn attack(config: &str) -> String {
    // `{"attack":"NAME"}`: parsed by hand to keep the plugin free of dependencies.
    config
        .split("\"attack\"")
        .nth(1)
        .and_then(|r| r.split('"').nth(1))
        .unwrap_or("")
        .to_string()
}

fn called(what: &str) -> PluginError {
    PluginError::Internal(format!("{what} called"))
}

impl PluginGuest for HostileTarget {
    fn describe() -> PluginInfo {
        info(
            "hostile-target",
            "0.1.0",
            PluginRole::Target,
            "Attacks the dry run with its traffic support",
            "{}",
        )
    }
    fn validate_config(_config: String) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

impl Guest for HostileTarget {
    fn supported_traffic(config: String) -> Result<TrafficSupport, PluginError> {
        match attack(&config).as_str() {
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Err(PluginError::Internal("woke up".into()))
            }
            "error" => Err(PluginError::Unsupported("no router configured".into())),
            _ => Ok(TrafficSupport {
                weights: true,
                header_matches: false,
                cookie_matches: false,
                mirroring: false,
                note: format!(
                    "use router \"mesh\"\n\u{1b}[31m2026-01-01 INFO dax: promoted{}",
                    "x".repeat(100 * 1024)
                ),
            }),
        }
    }
    fn deploy(_config: String, _w: Workload) -> Result<(), PluginError> {
        Err(called("deploy"))
    }
    fn set_traffic(_config: String, _app: String, _split: TrafficSplit) -> Result<(), PluginError> {
        Err(called("set-traffic"))
    }
    fn scale(
        _config: String,
        _app: String,
        _which: Slot,
        _replicas: u32,
    ) -> Result<(), PluginError> {
        Err(called("scale"))
    }
    fn status(_config: String, _app: String, _which: Slot) -> Result<WorkloadStatus, PluginError> {
        Err(called("status"))
    }
    fn promote(_config: String, _app: String) -> Result<(), PluginError> {
        Err(called("promote"))
    }
    fn rollback(_config: String, _app: String) -> Result<(), PluginError> {
        Err(called("rollback"))
    }
    fn finalize(_config: String, _app: String) -> Result<(), PluginError> {
        Err(called("finalize"))
    }
}

dax_sdk::export_target!(HostileTarget);
