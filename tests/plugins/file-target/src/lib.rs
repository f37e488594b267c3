//! A deployment target whose whole state is a JSON file in a granted, writable directory,
//! so the target's real state survives the host being killed (used by the engine's
//! crash/resume tests). Every call is idempotent and logged in the file.
//!
//! Config: `dir` (guest path of the granted directory, default `/state`),
//! `stable_version` (default `v1`), `never_ready` (the candidate never becomes ready),
//! `fail` (a call name that always fails, e.g. `"promote"`).
use dax_sdk::target::*;
use serde::{Deserialize, Serialize};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default = "default_dir")]
    dir: String,
    #[serde(default = "default_stable")]
    stable_version: String,
    #[serde(default)]
    never_ready: bool,
    #[serde(default)]
    fail: Option<String>,
}

fn default_dir() -> String {
    "/state".into()
}
fn default_stable() -> String {
    "v1".into()
}

#[derive(Serialize, Deserialize, Default, Clone, PartialEq, Debug)]
pub struct SlotState {
    pub version: String,
    pub replicas: u32,
}

/// Everything the target knows about one app.
#[derive(Serialize, Deserialize, Default, Clone, PartialEq, Debug)]
pub struct AppState {
    pub stable: SlotState,
    pub candidate: SlotState,
    pub weight: u8,
    /// Every call, in order: `deploy v2`, `set-traffic 10`, `promote`...
    pub calls: Vec<String>,
}

impl AppState {
    pub fn apply(&mut self, call: &Call) {
        match call {
            Call::Deploy { version, replicas } => {
                self.candidate = SlotState {
                    version: version.clone(),
                    replicas: *replicas,
                };
            }
            Call::SetTraffic(w) => self.weight = *w,
            Call::Scale { stable, replicas } => {
                if *stable {
                    self.stable.replicas = *replicas
                } else {
                    self.candidate.replicas = *replicas
                }
            }
            Call::Promote => {
                if self.candidate.replicas > 0 || !self.candidate.version.is_empty() {
                    self.stable.version = self.candidate.version.clone();
                }
                self.candidate = SlotState::default();
                self.weight = 0;
            }
            Call::Rollback => {
                self.candidate = SlotState::default();
                self.weight = 0;
            }
            Call::Finalize => {}
        }
    }
}

pub enum Call {
    Deploy { version: String, replicas: u32 },
    SetTraffic(u8),
    Scale { stable: bool, replicas: u32 },
    Promote,
    Rollback,
    Finalize,
}

impl Call {
    fn label(&self) -> String {
        match self {
            Call::Deploy { version, .. } => format!("deploy {version}"),
            Call::SetTraffic(w) => format!("set-traffic {w}"),
            Call::Scale { stable, replicas } => format!(
                "scale {} {replicas}",
                if *stable { "stable" } else { "candidate" }
            ),
            Call::Promote => "promote".into(),
            Call::Rollback => "rollback".into(),
            Call::Finalize => "finalize".into(),
        }
    }
    fn name(&self) -> &'static str {
        match self {
            Call::Deploy { .. } => "deploy",
            Call::SetTraffic(_) => "set-traffic",
            Call::Scale { .. } => "scale",
            Call::Promote => "promote",
            Call::Rollback => "rollback",
            Call::Finalize => "finalize",
        }
    }
}

fn path(cfg: &Config, app: &str) -> String {
    format!("{}/{app}.json", cfg.dir.trim_end_matches('/'))
}

fn load(cfg: &Config, app: &str) -> Result<AppState, PluginError> {
    match std::fs::read_to_string(path(cfg, app)) {
        Ok(text) => serde_json::from_str(&text)
            .map_err(|e| PluginError::Internal(format!("corrupt state file: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(AppState {
            stable: SlotState {
                version: cfg.stable_version.clone(),
                replicas: 1,
            },
            ..Default::default()
        }),
        Err(e) => Err(PluginError::Unavailable(format!(
            "cannot read {}: {e} (grant the directory writable)",
            path(cfg, app)
        ))),
    }
}

/// Write-then-rename, so a kill never leaves a half-written state file.
fn save(cfg: &Config, app: &str, st: &AppState) -> Result<(), PluginError> {
    let p = path(cfg, app);
    let tmp = format!("{p}.tmp");
    let text =
        serde_json::to_string_pretty(st).map_err(|e| PluginError::Internal(e.to_string()))?;
    std::fs::write(&tmp, text)
        .map_err(|e| PluginError::Unavailable(format!("cannot write {tmp}: {e}")))?;
    std::fs::rename(&tmp, &p)
        .map_err(|e| PluginError::Unavailable(format!("cannot rename {tmp}: {e}")))
}

fn mutate(config: &str, app: &str, call: Call) -> Result<(), PluginError> {
    let cfg: Config = parse_config(config)?;
    if cfg.fail.as_deref() == Some(call.name()) {
        return Err(PluginError::Unavailable(format!(
            "{} fails (configured with `fail`)",
            call.name()
        )));
    }
    let mut st = load(&cfg, app)?;
    st.calls.push(call.label());
    st.apply(&call);
    save(&cfg, app, &st)
}

struct FileTarget;

impl PluginGuest for FileTarget {
    fn describe() -> PluginInfo {
        info(
            "file-target",
            "0.1.0",
            PluginRole::Target,
            "Keeps a rollout's state in a JSON file (tests)",
            "{}",
        )
    }
    fn validate_config(config: String) -> Vec<ConfigProblem> {
        validate_with::<Config>(&config)
    }
}

impl Guest for FileTarget {
    fn deploy(config: String, w: Workload) -> Result<(), PluginError> {
        let replicas = w.replicas;
        mutate(
            &config,
            &w.app,
            Call::Deploy {
                version: w.version,
                replicas,
            },
        )
    }
    fn supported_traffic(_config: String) -> Result<TrafficSupport, PluginError> {
        // Records weights only.
        Ok(TrafficSupport {
            weights: true,
            header_matches: false,
            cookie_matches: false,
            mirroring: false,
            note: "file-target records weights only".into(),
        })
    }
    fn set_traffic(config: String, app: String, split: TrafficSplit) -> Result<(), PluginError> {
        if split.candidate_weight > 100 {
            return Err(PluginError::InvalidInput("weight above 100".into()));
        }
        mutate(&config, &app, Call::SetTraffic(split.candidate_weight))
    }
    fn scale(config: String, app: String, which: Slot, replicas: u32) -> Result<(), PluginError> {
        mutate(
            &config,
            &app,
            Call::Scale {
                stable: which == Slot::Stable,
                replicas,
            },
        )
    }
    fn status(config: String, app: String, which: Slot) -> Result<WorkloadStatus, PluginError> {
        let cfg: Config = parse_config(&config)?;
        let st = load(&cfg, &app)?;
        let (slot, ready) = match which {
            Slot::Stable => (&st.stable, st.stable.replicas),
            Slot::Candidate => (
                &st.candidate,
                if cfg.never_ready {
                    0
                } else {
                    st.candidate.replicas
                },
            ),
        };
        Ok(WorkloadStatus {
            desired: slot.replicas,
            ready,
            updated: ready,
            version: slot.version.clone(),
            message: if ready < slot.replicas {
                "candidate not ready (never_ready)".into()
            } else {
                String::new()
            },
        })
    }
    fn promote(config: String, app: String) -> Result<(), PluginError> {
        mutate(&config, &app, Call::Promote)
    }
    fn rollback(config: String, app: String) -> Result<(), PluginError> {
        mutate(&config, &app, Call::Rollback)
    }
    fn finalize(config: String, app: String) -> Result<(), PluginError> {
        mutate(&config, &app, Call::Finalize)
    }
}

dax_sdk::export_target!(FileTarget);
