//! The embedded `local` target: each version of an app runs as local processes behind the
//! host's own weighted HTTP reverse proxy, with per-version request statistics.
//!
//! - [`LocalTarget`] (`builtin:local`) implements [`Target`]: starts, health-checks, scales,
//!   promotes, rolls back and stops processes, and steers the proxy;
//! - [`proxy`]: the reverse proxy (weights, header/cookie matches, mirroring) and `/metrics`;
//! - [`stats`]: the in-process per-version statistics both the exposition and
//!   [`LocalMetrics`] (`builtin:local-metrics`) read;
//! - [`process`]: child processes, their process groups and log files, adoption, and
//!   [`detach_all_local_targets`] for Ctrl-C.
//!
//! **Resume.** The target keeps its state (which processes run for which slot and version,
//! their ports, the traffic split with its matches and mirroring, the listen addresses) in
//! its *home* folder: `state_dir` when configured, else the deployment's own state folder
//! (`STATE_DIR/deployments/ID/local/`, see [`LocalTarget::for_deployment`]). A target
//! created again for the same deployment (`dax resume`) adopts the processes that still run
//! and are the recorded ones (same pid *and* start time), stops the rest, starts missing
//! replicas, and serves the proxy on the same addresses with the same routes. The children's
//! logs stay in the home folder.
//!
//! Stats are keyed by app name in one registry per host process: two targets running the
//! same app name in one process would share numbers.

mod event_loops;
pub mod metrics;
pub mod process;
pub mod proxy;
pub mod stats;

pub use metrics::LocalMetrics;
pub use process::{detach_all_local_targets, shutdown_all_local_targets};

use crate::contract::{
    CallError, CallResult, PluginError, PluginInfo, PluginRole, Slot, Target, TrafficSplit,
    TrafficSupport, Workload, WorkloadStatus,
};
use crate::plugin::spec::duration_str;
use process::{LaunchSpec, Proc, ProcRecord};
use proxy::{HttpClient, Pool, RouteTable, SharedRoutes};
use serde::{Deserialize, Serialize};
use stats::SlotLabel;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

const NAME: &str = "local";
const STATE_FILE: &str = "local-target.json";

fn default_listen() -> String {
    "127.0.0.1:8080".into()
}
fn default_metrics_listen() -> String {
    "127.0.0.1:0".into()
}
fn default_readiness() -> String {
    "/healthz".into()
}
fn default_startup_timeout() -> Duration {
    Duration::from_secs(20)
}
fn default_stop_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `[plugins.local.config]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalConfig {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_metrics_listen")]
    metrics_listen: String,
    #[serde(default = "default_readiness")]
    readiness_path: String,
    #[serde(
        default = "default_startup_timeout",
        deserialize_with = "duration_str::deserialize"
    )]
    startup_timeout: Duration,
    /// How long a stopped version gets between SIGTERM and SIGKILL.
    #[serde(
        default = "default_stop_timeout",
        deserialize_with = "duration_str::deserialize"
    )]
    stop_timeout: Duration,
    #[serde(default)]
    stable: Option<StableConfig>,
    #[serde(default)]
    state_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct StableConfig {
    version: String,
    command: String,
    #[serde(default)]
    args: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Defaults to the candidate's replica count.
    #[serde(default)]
    replicas: Option<u32>,
}

/// `[target.workload]` as the local target reads it (`Workload.spec`).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct WorkloadSpec {
    #[serde(default)]
    env: BTreeMap<String, String>,
    /// Carried in `Workload.replicas`; accepted here so the table can hold it.
    #[serde(default)]
    #[allow(dead_code)]
    replicas: Option<u32>,
}

#[derive(Default)]
struct SlotState {
    launch: Option<LaunchSpec>,
    desired: u32,
    procs: Vec<Arc<Proc>>,
}

#[derive(Default)]
struct State {
    app: Option<String>,
    stable: SlotState,
    candidate: SlotState,
    split: TrafficSplit,
    finalized: bool,
}

impl State {
    fn slot_mut(&mut self, slot: Slot) -> &mut SlotState {
        match slot {
            Slot::Stable => &mut self.stable,
            Slot::Candidate => &mut self.candidate,
        }
    }
    fn slot(&self, slot: Slot) -> &SlotState {
        match slot {
            Slot::Stable => &self.stable,
            Slot::Candidate => &self.candidate,
        }
    }
}

/// What the state file keeps so a resumed deployment can adopt or clean its processes.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Persisted {
    app: Option<String>,
    split: TrafficSplit,
    #[serde(default)]
    proxy_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    stable: PersistedSlot,
    candidate: PersistedSlot,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PersistedSlot {
    launch: Option<LaunchSpec>,
    desired: u32,
    procs: Vec<ProcRecord>,
}

/// One running process, as [`LocalTarget::backends`] reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub slot: Slot,
    pub version: String,
    pub pid: i32,
    pub port: u16,
}

/// Where a target keeps its state file and its children's logs.
struct Home {
    dir: PathBuf,
    /// Kept for a later `dax resume` (state_dir or the deployment's folder); a temporary
    /// home (a target made with [`LocalTarget::new`] and no `state_dir`) goes with the target.
    kept: bool,
}

impl Home {
    fn state_file(&self) -> Option<PathBuf> {
        self.kept.then(|| self.dir.join(STATE_FILE))
    }
}

impl Drop for Home {
    fn drop(&mut self) {
        if !self.kept {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The `local` target (`builtin:local`). See the module docs.
pub struct LocalTarget {
    cfg: LocalConfig,
    base_dir: PathBuf,
    home: Home,
    state_file: Option<PathBuf>,
    client: HttpClient,
    routes: SharedRoutes,
    proxy_addr: SocketAddr,
    metrics_addr: SocketAddr,
    servers: std::sync::Mutex<Vec<JoinHandle<()>>>,
    state: tokio::sync::Mutex<State>,
}

fn perr(error: PluginError) -> CallError {
    CallError::Plugin {
        plugin: NAME.into(),
        error,
    }
}

async fn bind(addr: &str, field: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(addr).await.map_err(|e| {
        anyhow::anyhow!(
            "local target: cannot listen on {addr} (`{field}`): {e}; pick another address, \
             e.g. `{field} = \"127.0.0.1:0\"` for any free port"
        )
    })
}

impl LocalTarget {
    /// What `set_traffic` supports, whatever the config: the local router splits by
    /// weight, routes on headers and cookies and mirrors. Known without binding listeners,
    /// so `dax validate` asks this instead of constructing a target.
    pub fn traffic_support_of_any_config() -> TrafficSupport {
        TrafficSupport {
            weights: true,
            header_matches: true,
            cookie_matches: true,
            mirroring: true,
            note: String::new(),
        }
    }

    /// Check `[plugins.local.config]` without starting anything (`dax validate`): unknown
    /// keys, types, durations, addresses and the readiness path.
    pub fn check_config(config: &serde_json::Value) -> anyhow::Result<()> {
        Self::parse_config(config.clone()).map(drop)
    }

    fn parse_config(config: serde_json::Value) -> anyhow::Result<LocalConfig> {
        let config = if config.is_null() {
            serde_json::json!({})
        } else {
            config
        };
        let cfg: LocalConfig = serde_json::from_value(config)
            .map_err(|e| anyhow::anyhow!("local target config ([plugins.local.config]): {e}"))?;
        if !cfg.readiness_path.starts_with('/') {
            anyhow::bail!(
                "local target config: `readiness_path` must start with `/` (got `{}`)",
                cfg.readiness_path
            );
        }
        for (field, addr) in [
            ("listen", &cfg.listen),
            ("metrics_listen", &cfg.metrics_listen),
        ] {
            let host_port = addr
                .rsplit_once(':')
                .filter(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
            if host_port.is_none() {
                anyhow::bail!(
                    "local target config: `{field}` must be HOST:PORT, like 127.0.0.1:8080 (got `{addr}`)"
                );
            }
        }
        Ok(cfg)
    }

    /// A target that keeps state only when `state_dir` is configured (tests, tools).
    pub async fn new(config: serde_json::Value, base_dir: &Path) -> anyhow::Result<Self> {
        Self::create(config, base_dir, None).await
    }

    /// The target of one deployment: unless `state_dir` is configured, its state lives in
    /// `deployment_dir/local/`, so `dax resume` of that deployment finds its processes.
    pub async fn for_deployment(
        config: serde_json::Value,
        base_dir: &Path,
        deployment_dir: &Path,
    ) -> anyhow::Result<Self> {
        Self::create(config, base_dir, Some(deployment_dir.join("local"))).await
    }

    /// Bind the proxy and metrics listeners and, when the home folder holds the state of an
    /// unfinished deployment, adopt its processes that still run (restarting the missing
    /// ones). On failure nothing the home folder recorded is left running.
    async fn create(
        config: serde_json::Value,
        base_dir: &Path,
        default_home: Option<PathBuf>,
    ) -> anyhow::Result<Self> {
        let cfg = Self::parse_config(config)?;
        let home = match cfg.state_dir.clone().or(default_home) {
            Some(dir) => Home {
                dir: std::path::absolute(base_dir.join(dir))?,
                kept: true,
            },
            None => {
                static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
                let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                Home {
                    dir: std::env::temp_dir().join(format!("dax-local-{}-{n}", std::process::id())),
                    kept: false,
                }
            }
        };
        std::fs::create_dir_all(&home.dir).map_err(|e| {
            anyhow::anyhow!(
                "local target: cannot create its state folder {} (`state_dir`): {e}",
                home.dir.display()
            )
        })?;
        let state_file = home.state_file();
        let persisted: Option<Persisted> = match &state_file {
            Some(f) if f.exists() => {
                let text = std::fs::read_to_string(f)?;
                match serde_json::from_str(&text) {
                    Ok(p) => Some(p),
                    Err(e) => {
                        tracing::warn!(
                            "ignoring unreadable local target state {}: {e}",
                            f.display()
                        );
                        None
                    }
                }
            }
            _ => None,
        };
        let listeners = Self::bind_listeners(&cfg, persisted.as_ref()).await;
        let (proxy_listener, metrics_listener) = match listeners {
            Ok(l) => l,
            Err(e) => {
                // The deployment cannot go on with this target: stop what it recorded.
                if let Some(p) = &persisted {
                    for rec in p.stable.procs.iter().chain(&p.candidate.procs) {
                        if let Some(proc) = process::adopt(rec.clone(), "leftover") {
                            proc.stop(cfg.stop_timeout).await;
                        }
                    }
                }
                if home.kept {
                    process::sweep(&home.dir, &[]);
                }
                return Err(e);
            }
        };
        let proxy_addr = proxy_listener.local_addr()?;
        let metrics_addr = metrics_listener.local_addr()?;
        let client = proxy::client();
        let routes: SharedRoutes = proxy::shared_routes();
        let servers = vec![
            proxy::start_proxy(proxy_listener, routes.clone()),
            proxy::start_metrics(metrics_listener),
        ];
        tracing::info!(
            "local target: proxy on http://{proxy_addr}, metrics on http://{metrics_addr}/metrics"
        );

        let target = LocalTarget {
            cfg,
            base_dir: base_dir.to_path_buf(),
            home,
            state_file,
            client,
            routes,
            proxy_addr,
            metrics_addr,
            servers: std::sync::Mutex::new(servers),
            state: tokio::sync::Mutex::new(State::default()),
        };
        if target.home.kept {
            target.restore(persisted.unwrap_or_default()).await?;
        }
        Ok(target)
    }

    /// The proxy and metrics listeners; a resumed deployment gets its previous addresses back
    /// when the config asks for any free port (`:0`), so clients and scrapers keep working.
    async fn bind_listeners(
        cfg: &LocalConfig,
        persisted: Option<&Persisted>,
    ) -> anyhow::Result<(TcpListener, TcpListener)> {
        async fn rebind(
            addr: &str,
            field: &str,
            prev: Option<SocketAddr>,
        ) -> anyhow::Result<TcpListener> {
            if let Some(prev) = prev.filter(|_| addr.ends_with(":0")) {
                if let Ok(l) = TcpListener::bind(prev).await {
                    return Ok(l);
                }
            }
            bind(addr, field).await
        }
        let proxy = rebind(&cfg.listen, "listen", persisted.and_then(|p| p.proxy_addr)).await?;
        let metrics = rebind(
            &cfg.metrics_listen,
            "metrics_listen",
            persisted.and_then(|p| p.metrics_addr),
        )
        .await?;
        Ok((proxy, metrics))
    }

    /// The proxy's address (where traffic for the app goes).
    pub fn proxy_addr(&self) -> SocketAddr {
        self.proxy_addr
    }

    /// The address serving `/metrics` in Prometheus text format.
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics_addr
    }

    /// Every process this target runs now.
    pub async fn backends(&self) -> Vec<Backend> {
        let st = self.state.lock().await;
        [Slot::Stable, Slot::Candidate]
            .into_iter()
            .flat_map(|slot| {
                st.slot(slot).procs.iter().map(move |p| Backend {
                    slot,
                    version: p.version.clone(),
                    pid: p.pid(),
                    port: p.port(),
                })
            })
            .collect()
    }

    pub fn info() -> PluginInfo {
        PluginInfo {
            name: NAME.into(),
            version: env!("CARGO_PKG_VERSION").into(),
            role: PluginRole::Target,
            description: "runs each version as local processes behind a weighted HTTP proxy".into(),
            config_schema: CONFIG_SCHEMA.into(),
        }
    }

    /// Take over what a previous host recorded in the home folder: adopt the recorded
    /// processes that still run and answer readiness, stop the others and any marked process
    /// it never recorded, start missing replicas, and route as before.
    async fn restore(&self, p: Persisted) -> anyhow::Result<()> {
        let mut st = self.state.lock().await;
        st.app = p.app.clone();
        st.split = p.split.clone();
        let app = p.app.clone().unwrap_or_default();
        let mut slots = Vec::new();
        for (slot, ps) in [(Slot::Stable, p.stable), (Slot::Candidate, p.candidate)] {
            let mut procs = Vec::new();
            for rec in ps.procs {
                let label = format!("{app} {slot} {}", rec.version);
                match process::adopt(rec, &label) {
                    Some(proc) if self.probe_ready(&proc).await => procs.push(proc),
                    Some(proc) => proc.stop(self.cfg.stop_timeout).await,
                    None => {}
                }
            }
            slots.push((slot, ps.launch, ps.desired, procs));
        }
        let adopted: Vec<i32> = slots
            .iter()
            .flat_map(|(_, _, _, procs)| procs.iter().map(|p| p.pid()))
            .collect();
        let swept = process::sweep(&self.home.dir, &adopted);
        if swept > 0 {
            tracing::info!(
                "local target: stopped {swept} process(es) a previous host left unrecorded"
            );
        }
        for (slot, launch, desired, mut procs) in slots {
            let adopted = procs.len();
            if let Some(launch) = &launch {
                let missing = (desired as usize).saturating_sub(procs.len());
                if missing > 0 {
                    procs.extend(self.start(launch, missing as u32, &app, slot).await?);
                }
            }
            if launch.is_some() {
                tracing::info!(
                    "local target: resumed {app} {slot}: adopted {adopted}, now {} process(es)",
                    procs.len()
                );
            }
            let s = st.slot_mut(slot);
            s.launch = launch;
            s.desired = desired;
            s.procs = procs;
        }
        self.rebuild_routes(&st).map_err(anyhow::Error::msg)?;
        self.persist(&st);
        Ok(())
    }

    async fn probe_ready(&self, proc: &Proc) -> bool {
        matches!(
            proxy::probe(&self.client, proc.port(), &self.cfg.readiness_path, Duration::from_secs(1)).await,
            Ok(s) if (200..300).contains(&s)
        )
    }

    /// Start `n` processes of `launch` and wait until all are ready; on failure none is left.
    async fn start(
        &self,
        launch: &LaunchSpec,
        n: u32,
        app: &str,
        slot: Slot,
    ) -> anyhow::Result<Vec<Arc<Proc>>> {
        let label = format!("{app} {slot} {}", launch.version);
        let mut procs = Vec::new();
        for _ in 0..n {
            procs.push(process::spawn(
                launch,
                &self.base_dir,
                &self.home.dir,
                &label,
            )?);
        }
        let waits = procs.iter().map(|p| {
            process::wait_ready(
                p,
                &self.client,
                &self.cfg.readiness_path,
                self.cfg.startup_timeout,
                &label,
            )
        });
        if let Err(e) = futures::future::try_join_all(waits).await {
            stop_all(std::mem::take(&mut procs), self.cfg.stop_timeout).await;
            return Err(e);
        }
        tracing::info!(
            "local target: {label} ready on port(s) {}",
            procs
                .iter()
                .map(|p| p.port().to_string())
                .collect::<Vec<_>>()
                .join(",")
        );
        Ok(procs)
    }

    fn rebuild_routes(&self, st: &State) -> Result<(), String> {
        let pool = |label: SlotLabel, s: &SlotState| {
            s.launch.as_ref().map(|l| {
                Pool::new(
                    label,
                    l.version.clone(),
                    s.procs.iter().map(|p| p.port()).collect(),
                )
            })
        };
        let table = RouteTable::new(
            st.app.clone().unwrap_or_default(),
            pool(SlotLabel::Stable, &st.stable),
            pool(SlotLabel::Candidate, &st.candidate),
            &st.split,
        )?;
        self.routes.store(Arc::new(table));
        Ok(())
    }

    fn persist(&self, st: &State) {
        let Some(file) = &self.state_file else { return };
        let slot = |s: &SlotState| PersistedSlot {
            launch: s.launch.clone(),
            desired: s.desired,
            procs: s.procs.iter().map(|p| p.record()).collect(),
        };
        let p = Persisted {
            app: st.app.clone(),
            split: st.split.clone(),
            proxy_addr: Some(self.proxy_addr),
            metrics_addr: Some(self.metrics_addr),
            stable: slot(&st.stable),
            candidate: slot(&st.candidate),
        };
        let tmp = file.with_extension("json.tmp");
        let result = serde_json::to_vec_pretty(&p)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|_| std::fs::rename(&tmp, file));
        if let Err(e) = result {
            tracing::warn!("local target: cannot write {}: {e}", file.display());
        }
    }

    fn check(&self, st: &State, app: &str) -> CallResult<()> {
        if st.finalized {
            return Err(perr(PluginError::Unavailable(
                "this local target was finalized; start a new deployment".into(),
            )));
        }
        match &st.app {
            Some(a) if a != app => Err(perr(PluginError::NotFound(format!(
                "this local target runs app `{a}`, not `{app}`"
            )))),
            None => Err(perr(PluginError::NotFound(format!(
                "app `{app}` has not been deployed to this local target"
            )))),
            _ => Ok(()),
        }
    }

    fn stable_launch(&self, st: &State) -> CallResult<LaunchSpec> {
        if let Some(l) = &st.stable.launch {
            return Ok(l.clone());
        }
        let s = self.cfg.stable.as_ref().ok_or_else(|| {
            perr(PluginError::InvalidConfig(
                "the local target needs a stable version to compare the candidate with: add \
                 `stable = { version = \"v1\", command = \"...\", args = [...] }` to \
                 [plugins.local.config]"
                    .into(),
            ))
        })?;
        Ok(LaunchSpec {
            version: s.version.clone(),
            program: s.command.clone(),
            args: s.args.clone(),
            env: s.env.clone(),
        })
    }
}

async fn stop_all(procs: Vec<Arc<Proc>>, grace: Duration) {
    futures::future::join_all(procs.iter().map(|p| p.stop(grace))).await;
}

fn unavailable(e: anyhow::Error) -> CallError {
    perr(PluginError::Unavailable(format!("{e:#}")))
}

#[async_trait::async_trait]
impl Target for LocalTarget {
    async fn deploy(&self, workload: &Workload) -> CallResult<()> {
        let mut st = self.state.lock().await;
        if st.finalized {
            return self.check(&st, &workload.app);
        }
        if let Some(a) = &st.app {
            if a != &workload.app {
                return self.check(&st, &workload.app);
            }
        }
        let spec: WorkloadSpec = if workload.spec.trim().is_empty() {
            WorkloadSpec::default()
        } else {
            serde_json::from_str(&workload.spec).map_err(|e| {
                perr(PluginError::InvalidInput(format!(
                    "[target.workload] for the local target: {e} (it accepts `env` and `replicas`)"
                )))
            })?
        };
        let candidate =
            LaunchSpec::from_command_line(&workload.version, &workload.artifact, spec.env)
                .map_err(|e| perr(PluginError::InvalidInput(format!("{e:#}"))))?;
        let replicas = workload.replicas.max(1);
        let app = workload.app.clone();

        if st.stable.procs.is_empty() {
            let launch = self.stable_launch(&st)?;
            let desired = self
                .cfg
                .stable
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(replicas)
                .max(1);
            let procs = self
                .start(&launch, desired, &app, Slot::Stable)
                .await
                .map_err(unavailable)?;
            st.app = Some(app.clone());
            st.stable = SlotState {
                launch: Some(launch),
                desired,
                procs,
            };
        }
        st.app = Some(app.clone());

        // Deploying the same candidate again (e.g. after a resume) keeps what runs.
        let mut same = st.candidate.launch.as_ref() == Some(&candidate)
            && st.candidate.procs.len() == replicas as usize;
        for p in &st.candidate.procs {
            same = same && p.is_running().await;
        }
        if !same {
            let old = std::mem::take(&mut st.candidate);
            st.split = TrafficSplit::default();
            self.rebuild_routes(&st)
                .map_err(|e| perr(PluginError::Internal(e)))?;
            stop_all(old.procs, self.cfg.stop_timeout).await;
            let procs = self
                .start(&candidate, replicas, &app, Slot::Candidate)
                .await
                .map_err(unavailable)?;
            st.candidate = SlotState {
                launch: Some(candidate),
                desired: replicas,
                procs,
            };
        }
        st.split = TrafficSplit::default();
        self.rebuild_routes(&st)
            .map_err(|e| perr(PluginError::Internal(e)))?;
        self.persist(&st);
        Ok(())
    }

    async fn traffic_support(&self) -> CallResult<TrafficSupport> {
        Ok(Self::traffic_support_of_any_config())
    }

    async fn set_traffic(&self, app: &str, split: &TrafficSplit) -> CallResult<()> {
        if split.candidate_weight > 100 || split.mirror_percent > 100 {
            return Err(perr(PluginError::InvalidInput(format!(
                "traffic percentages must be 0..=100 (candidate weight {}, mirror {})",
                split.candidate_weight, split.mirror_percent
            ))));
        }
        let mut st = self.state.lock().await;
        self.check(&st, app)?;
        let previous = std::mem::replace(&mut st.split, split.clone());
        if let Err(e) = self.rebuild_routes(&st) {
            st.split = previous;
            return Err(perr(PluginError::InvalidInput(e)));
        }
        self.persist(&st);
        Ok(())
    }

    async fn scale(&self, app: &str, slot: Slot, replicas: u32) -> CallResult<()> {
        let mut st = self.state.lock().await;
        self.check(&st, app)?;
        let Some(launch) = st.slot(slot).launch.clone() else {
            return Err(perr(PluginError::NotFound(format!(
                "no {slot} version of `{app}` is deployed, so it cannot be scaled"
            ))));
        };
        let have = st.slot(slot).procs.len() as u32;
        if replicas > have {
            let more = self
                .start(&launch, replicas - have, app, slot)
                .await
                .map_err(unavailable)?;
            st.slot_mut(slot).procs.extend(more);
            st.slot_mut(slot).desired = replicas;
            self.rebuild_routes(&st)
                .map_err(|e| perr(PluginError::Internal(e)))?;
        } else {
            let s = st.slot_mut(slot);
            s.desired = replicas;
            let excess = s.procs.split_off(replicas as usize);
            // Route away first, then stop.
            self.rebuild_routes(&st)
                .map_err(|e| perr(PluginError::Internal(e)))?;
            stop_all(excess, self.cfg.stop_timeout).await;
        }
        self.persist(&st);
        Ok(())
    }

    async fn status(&self, app: &str, slot: Slot) -> CallResult<WorkloadStatus> {
        let st = self.state.lock().await;
        // Before the first deploy nothing runs yet (the stable version starts with it), which
        // a strategy reading the stable size first (`rolling`) must see as such, not as an
        // error: the configured stable size, none ready.
        if st.app.is_none() && !st.finalized {
            let desired = match slot {
                Slot::Stable => self.cfg.stable.as_ref().and_then(|s| s.replicas),
                Slot::Candidate => None,
            };
            return Ok(WorkloadStatus {
                desired: desired.unwrap_or(0),
                message: format!("app `{app}` is not deployed yet: its {slot} version starts with the first deploy"),
                ..Default::default()
            });
        }
        self.check(&st, app)?;
        let s = st.slot(slot);
        let Some(launch) = &s.launch else {
            return Ok(WorkloadStatus {
                message: format!("no {slot} version deployed"),
                ..Default::default()
            });
        };
        let mut running = 0;
        let mut ready = 0;
        for p in &s.procs {
            if p.is_running().await {
                running += 1;
                if self.probe_ready(p).await {
                    ready += 1;
                }
            }
        }
        Ok(WorkloadStatus {
            desired: s.desired,
            ready,
            updated: running,
            version: launch.version.clone(),
            message: format!(
                "{ready}/{} ready ({running} running) on port(s) {}",
                s.desired,
                s.procs
                    .iter()
                    .map(|p| p.port().to_string())
                    .collect::<Vec<_>>()
                    .join(",")
            ),
        })
    }

    async fn promote(&self, app: &str) -> CallResult<()> {
        let mut st = self.state.lock().await;
        self.check(&st, app)?;
        if st.candidate.launch.is_none() {
            return Err(perr(PluginError::InvalidInput(format!(
                "no candidate of `{app}` is deployed, so there is nothing to promote"
            ))));
        }
        let candidate = std::mem::take(&mut st.candidate);
        let old = std::mem::replace(&mut st.stable, candidate);
        st.split = TrafficSplit::default();
        // All traffic to the new stable before the old one stops: no request is dropped.
        self.rebuild_routes(&st)
            .map_err(|e| perr(PluginError::Internal(e)))?;
        self.persist(&st);
        stop_all(old.procs, self.cfg.stop_timeout).await;
        Ok(())
    }

    async fn rollback(&self, app: &str) -> CallResult<()> {
        let mut st = self.state.lock().await;
        if st.app.is_none() && !st.finalized {
            // Nothing was deployed (e.g. the host stopped before the first deploy): nothing
            // to roll back, which a retried rollback must be able to see.
            return Ok(());
        }
        self.check(&st, app)?;
        let candidate = std::mem::take(&mut st.candidate);
        st.split = TrafficSplit::default();
        self.rebuild_routes(&st)
            .map_err(|e| perr(PluginError::Internal(e)))?;
        self.persist(&st);
        stop_all(candidate.procs, self.cfg.stop_timeout).await;
        Ok(())
    }

    async fn finalize(&self, _app: &str) -> CallResult<()> {
        // Stops everything whatever the app name: finalize must never leave processes behind.
        let mut st = self.state.lock().await;
        let stable = std::mem::take(&mut st.stable);
        let candidate = std::mem::take(&mut st.candidate);
        st.finalized = true;
        self.routes.store(Arc::new(RouteTable::empty()));
        for server in self
            .servers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            server.abort();
        }
        stop_all(
            stable.procs.into_iter().chain(candidate.procs).collect(),
            self.cfg.stop_timeout,
        )
        .await;
        if let Some(f) = &self.state_file {
            let _ = std::fs::remove_file(f);
        }
        Ok(())
    }
}

impl Drop for LocalTarget {
    fn drop(&mut self) {
        for server in self
            .servers
            .get_mut()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            server.abort();
        }
        // The processes are killed as their `Proc`s drop with the state.
    }
}

const CONFIG_SCHEMA: &str = r#"{
  "type": "object",
  "additionalProperties": false,
  "properties": {
    "listen": {"type": "string", "default": "127.0.0.1:8080"},
    "metrics_listen": {"type": "string", "default": "127.0.0.1:0"},
    "readiness_path": {"type": "string", "default": "/healthz"},
    "startup_timeout": {"type": "string", "default": "20s"},
    "stop_timeout": {"type": "string", "default": "5s"},
    "state_dir": {"type": "string"},
    "stable": {
      "type": "object",
      "required": ["version", "command"],
      "additionalProperties": false,
      "properties": {
        "version": {"type": "string"},
        "command": {"type": "string"},
        "args": {"type": "array", "items": {"type": "string"}},
        "env": {"type": "object", "additionalProperties": {"type": "string"}},
        "replicas": {"type": "integer", "minimum": 1}
      }
    }
  }
}"#;
