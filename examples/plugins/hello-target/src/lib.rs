//! A trivial target: remembers nothing, answers every call.
use dax_sdk::target::*;

struct Hello;

impl PluginGuest for Hello {
    fn describe() -> PluginInfo {
        info(
            "hello-target",
            "0.1.0",
            PluginRole::Target,
            "Accepts every call",
            "{}",
        )
    }
    fn validate_config(config: String) -> Vec<ConfigProblem> {
        if config.contains("\"bad\"") {
            vec![ConfigProblem {
                field: "bad".into(),
                message: "`bad` is not allowed".into(),
            }]
        } else {
            Vec::new()
        }
    }
}

impl Guest for Hello {
    fn deploy(_config: String, w: Workload) -> Result<(), PluginError> {
        if w.artifact.is_empty() {
            return Err(PluginError::InvalidInput("empty artifact".into()));
        }
        Ok(())
    }
    fn supported_traffic(_config: String) -> Result<TrafficSupport, PluginError> {
        // Accepts any split (it routes nothing).
        Ok(TrafficSupport {
            weights: true,
            header_matches: true,
            cookie_matches: true,
            mirroring: true,
            note: String::new(),
        })
    }
    fn set_traffic(_config: String, _app: String, split: TrafficSplit) -> Result<(), PluginError> {
        if split.candidate_weight > 100 {
            return Err(PluginError::InvalidInput("weight above 100".into()));
        }
        Ok(())
    }
    fn scale(
        _config: String,
        _app: String,
        _which: Slot,
        _replicas: u32,
    ) -> Result<(), PluginError> {
        Ok(())
    }
    fn status(_config: String, app: String, which: Slot) -> Result<WorkloadStatus, PluginError> {
        Ok(WorkloadStatus {
            desired: 2,
            ready: 2,
            updated: 2,
            version: format!(
                "{app}-{}",
                if which == Slot::Stable {
                    "stable"
                } else {
                    "candidate"
                }
            ),
            message: String::new(),
        })
    }
    fn promote(_config: String, _app: String) -> Result<(), PluginError> {
        Ok(())
    }
    fn rollback(_config: String, _app: String) -> Result<(), PluginError> {
        Ok(())
    }
    fn finalize(_config: String, _app: String) -> Result<(), PluginError> {
        Ok(())
    }
}

dax_sdk::export_target!(Hello);
