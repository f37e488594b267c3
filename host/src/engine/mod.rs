//! The deployment engine: one async task per deployment, any number per process.
//!
//! ```text
//! deploy(file) ─ validate: resolve + verify plugins, roles, each plugin's config check
//!   ─ journal `created` ─ scanners + gate policy (`gate`) ─ strategy loop:
//!        decide (strategy.start/next, or an engine/operator override)  ─ journal `decision`
//!        execute the step against target / checks / hooks / approvals / timer
//!        journal `outcome` ─ build the next observation
//!   ─ finish: finalize target ─ journal `finished` ─ notifications ─ summary
//! ```
//!
//! The strategy emits `run-hooks` for pre-rollout, confirm-rollout, confirm-traffic-increase,
//! confirm-promotion and post-rollout. The engine runs `rollout` hooks (and keeps `load`
//! generators running) within every `analyze` step, runs `rollback` hooks when it executes a
//! `rollback` step, and fires `event` hooks for every journal record.
//!
//! # Analysis semantics
//! Each check is **pass / fail / no-data / error** (see [`analysis`] for the exact rules:
//! inclusive bounds, NaN and empty series are no-data, no-data is never a pass). The engine
//! reports verdicts; the strategy counts them. The canary strategy counts like Flagger: a
//! failed analysis (any check not `pass`) increments the failure count and the rollout is
//! rolled back when `failures >= threshold`.
//!
//! **Inconclusive** analyses (no `fail`, but some `no-data` or `error`): with
//! `[deployment] on_inconclusive = "pause"` the engine journals `paused` and waits for an
//! operator: `dax promote ID` accepts the analysis (the inconclusive checks are reported to
//! the strategy as `pass` with the detail "accepted by operator"), `dax abort ID` rolls back.
//! With the default `"fail"` the verdicts go to the strategy unchanged.
//!
//! **Progress deadline** (`[deployment] progress_deadline`, default 10m): when nothing has
//! really advanced the rollout for that long — a first successful deploy, more candidate
//! replicas ready than before, a weight reached for the first time, a passing analysis, a
//! promotion, a rollback done, an operator's answer — the engine rolls back on its own.
//! Repeating a step is not progress; waits count against the deadline, time spent waiting
//! for an operator does not. After `dax resume` the deadline starts afresh.
//!
//! # The host is the authority
//! The engine keeps its own [`ledger::Ledger`] of what happened on the target and decides
//! how a deployment ends from it ([`decide`]): promoted only if a promote succeeded and no
//! rollback followed; failed promotes and rollbacks are retried, then end failed; after a
//! rollback traffic never moves towards the candidate again; the safety policy of
//! `[deployment]` (`require_analysis`, `require_ready`) holds before any promote; step
//! values are range-checked (`max_replicas`, `max_wait`, weights 0..=100) before a target
//! sees them; a runaway strategy meets `max_steps`, and `max_step_rate` paces every step
//! that calls out. A refused step is journaled as the engine's decision in its place.
//!
//! **Operator control**: `dax abort ID` rolls back at the next step boundary (or at once
//! during a wait or a pause). `dax promote ID` answers a pending approval or pause, or ends
//! the current `wait` early (like Argo Rollouts' promote of a timed pause); at other times
//! it is journaled and has no effect.
//!
//! # Durability
//! Every decision is journaled before it is executed and its outcome after (see
//! [`crate::state`]). [`Engine::resume`] rebuilds a run from the journal: the strategy's state
//! blob comes from the last decision, the target's real state is read with `status` and
//! journaled (`resumed`), a decision without an outcome is executed again (target calls are
//! idempotent by contract), and one with an outcome continues with `strategy.next`.

pub mod analysis;
pub mod builtins;
mod compat;
pub mod control;
pub mod decide;
pub mod dry_run;
mod execute;
mod gate;
pub mod hooks;
pub mod ledger;
mod replay;
pub mod resolve;
mod run;
pub mod summary;

pub use decide::DEFAULT_PROGRESS_DEADLINE;
pub use resolve::{HostResolver, PluginResolver, ResolvedPlugin};
pub use summary::Summary;

use crate::config::{self, LoadedConfig, Problem};
use crate::contract::{FinalStatus, PluginRole, Slot};
use crate::state::{Event, Journal, PluginRecord, Record, StateDir};
use anyhow::anyhow;
use run::Run;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Called with every journal record as it is written (progress displays).
pub type Observer = Arc<dyn Fn(&Record) + Send + Sync>;

/// Why a deployment could not run.
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    #[error("the deployment file has {} problem(s)", .0.len())]
    Invalid(Vec<Problem>),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// How a deployment ended.
#[derive(Debug, Clone)]
pub struct Report {
    pub id: String,
    pub status: FinalStatus,
    pub reason: String,
    pub summary: Summary,
}

/// Runs deployments. Cheap to clone; share one per process.
#[derive(Clone)]
pub struct Engine {
    pub state: StateDir,
    pub resolver: Arc<dyn PluginResolver>,
    pub http: reqwest::Client,
    /// How often the engine looks for `dax promote` / `dax abort` (its control bell).
    pub control_poll: Duration,
    /// Wakes the deployments that `dax promote` / `dax abort` name; made on first use so
    /// that `control_poll` can still be set after `new`.
    bell: Arc<std::sync::OnceLock<Arc<control::ControlBell>>>,
    /// Deployments that may be starting at once (resolve, create the journal, instantiate).
    /// Start-up is CPU and filesystem work; letting 10,000 deployments do it at the same
    /// instant would delay the timers of the ones already rolling out. Waiting deployments
    /// queue here without occupying the runtime.
    pub startup: Arc<tokio::sync::Semaphore>,
}

/// Start-ups in flight per core (see `Engine::startup`).
const STARTUPS_PER_CORE: usize = 16;

impl Engine {
    pub fn new(state: StateDir, resolver: Arc<dyn PluginResolver>) -> Self {
        Engine {
            state,
            resolver,
            http: reqwest::Client::builder()
                .user_agent(concat!("dax/", env!("CARGO_PKG_VERSION")))
                .build()
                .expect("HTTP client"),
            control_poll: Duration::from_millis(250),
            bell: Arc::default(),
            startup: Arc::new(tokio::sync::Semaphore::new(
                STARTUPS_PER_CORE
                    * std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(2),
            )),
        }
    }

    fn bell(&self) -> &Arc<control::ControlBell> {
        self.bell
            .get_or_init(|| control::ControlBell::new(&self.state, self.control_poll))
    }

    async fn startup_permit(&self) -> tokio::sync::OwnedSemaphorePermit {
        self.startup
            .clone()
            .acquire_owned()
            .await
            .expect("the start-up semaphore is never closed")
    }

    /// Create a journal off the runtime's threads (directory and file creation can block).
    async fn create_journal(&self, id: &str) -> anyhow::Result<Journal> {
        let (state, id) = (self.state.clone(), id.to_string());
        tokio::task::spawn_blocking(move || state.create(&id)).await?
    }

    async fn open_journal(&self, id: &str) -> anyhow::Result<(Journal, Vec<Record>)> {
        let (state, id) = (self.state.clone(), id.to_string());
        tokio::task::spawn_blocking(move || state.open(&id)).await?
    }

    /// Validate everything (`dax validate`): every problem, located in the file.
    pub async fn validate(&self, cfg: &LoadedConfig) -> Vec<Problem> {
        let (set, mut problems) = resolve::validate(cfg, self.resolver.as_ref()).await;
        problems.extend(gate_policy_problems(cfg));
        if let (Some(set), true) = (&set, problems.is_empty()) {
            problems.extend(dry_run::traffic_problems(cfg, set, dry_run::Mode::Validate).await);
        }
        problems
    }

    /// The strategy's outline of the rollout (`dax plan`).
    pub async fn plan(&self, cfg: &LoadedConfig) -> Result<crate::contract::Plan, DeployError> {
        let set = self.resolved(cfg).await?;
        let strategy = set.plugins[&cfg.config.strategy.plugin]
            .strategy(cfg.config.strategy_params())
            .await?;
        Ok(strategy.describe_plan().await.map_err(|e| anyhow!("{e}"))?)
    }

    async fn resolved(&self, cfg: &LoadedConfig) -> Result<resolve::ResolvedSet, DeployError> {
        let (set, mut problems) = resolve::validate(cfg, self.resolver.as_ref()).await;
        problems.extend(gate_policy_problems(cfg));
        match set {
            Some(set) if problems.is_empty() => Ok(set),
            _ => Err(DeployError::Invalid(problems)),
        }
    }

    /// Run a deployment to its end. `id` defaults to a fresh one.
    pub async fn deploy(
        &self,
        cfg: LoadedConfig,
        id: Option<String>,
        observer: Option<Observer>,
    ) -> Result<Report, DeployError> {
        let permit = self.startup_permit().await;
        let set = self.resolved(&cfg).await?;
        // A strategy the target's router cannot follow is refused before anything starts.
        let problems = dry_run::traffic_problems(&cfg, &set, dry_run::Mode::Deploy).await;
        if !problems.is_empty() {
            return Err(DeployError::Invalid(problems));
        }
        let id = id.unwrap_or_else(|| crate::state::new_id(&cfg.config.deployment.app));
        let journal = self.create_journal(&id).await?;
        let cfg = Arc::new(cfg);
        let mut run = Run::new(self, &id, cfg.clone(), journal, observer, 0);
        let c = &cfg.config;
        run.record(Event::Created {
            id: id.clone(),
            app: c.deployment.app.clone(),
            version: c.deployment.version.clone(),
            namespace: c.deployment.namespace.clone(),
            file: cfg.path.display().to_string(),
            base_dir: cfg.base_dir.display().to_string(),
            config: cfg.raw.clone(),
            pid: std::process::id(),
        })
        .await?;
        run.record(Event::PluginsResolved {
            plugins: plugin_records(&cfg, &set),
        })
        .await?;
        let instantiated = run.instantiate(&set).await;
        drop(permit);
        if let Err(e) = instantiated {
            return Ok(run
                .finish_without_rollout(FinalStatus::Failed, format!("{e:#}"))
                .await?);
        }
        run.notify(
            "started",
            &format!("deploying {} {}", c.deployment.app, c.deployment.version),
        )
        .await;
        if !run.gate().await? {
            let reason = run.reason.clone();
            return Ok(run
                .finish_without_rollout(FinalStatus::Failed, reason)
                .await?);
        }
        Ok(run.drive(replay::Pending::Decide).await?)
    }

    /// Continue a deployment from its journal after the host stopped (crash, kill, reboot).
    pub async fn resume(
        &self,
        id: &str,
        observer: Option<Observer>,
    ) -> Result<Report, DeployError> {
        let permit = self.startup_permit().await;
        let (journal, records) = self.open_journal(id).await?;
        if let Some(report) = replay::finished_report(id, &records) {
            return Ok(report);
        }
        // The same folds the live run keeps: what the summary shows, what the ledger knows.
        let summary = Summary::fold(id, &records);
        if let Some(pid) = summary.live_host() {
            return Err(anyhow!(
                "deployment `{id}` is still run by process {pid}; stop that process first (or use `dax abort {id}` to roll it back from there)"
            )
            .into());
        }
        let Some(Event::Created {
            file,
            base_dir,
            config: raw,
            ..
        }) = records.first().map(|r| &r.event)
        else {
            return Err(anyhow!("journal of `{id}` does not start with a `created` record").into());
        };
        let cfg = config::parse(raw, file, std::path::Path::new(base_dir))
            .map_err(DeployError::Invalid)?;
        let set = self.resolved(&cfg).await?;
        // The code that runs must be the code that started the rollout, unless the operator
        // asked to roll back (`compat` says why and how).
        let changed = compat::changed_plugins(&records, &cfg, &plugin_records(&cfg, &set));
        let rollback_asked = compat::rollback_asked(&self.state, id, &records);
        if !rollback_asked {
            if let Some(what) = changed.first() {
                return Err(compat::refusal(&self.state, id, what).into());
            }
            if let Some(e) = compat::strategy_cannot_read_state(&records, &set, &cfg).await {
                let what = format!(
                    "strategy `{}` ({}) cannot read the state it journaled: {e}",
                    cfg.config.strategy.plugin,
                    cfg.config
                        .plugins
                        .get(&cfg.config.strategy.plugin)
                        .map(|p| p.source.as_str())
                        .unwrap_or("?")
                );
                return Err(compat::refusal(&self.state, id, &what).into());
            }
        }
        let offset = records.last().map(|r| r.elapsed_ms).unwrap_or(0);
        let cfg = Arc::new(cfg);
        let mut run = Run::new(self, id, cfg.clone(), journal, observer, offset);
        run.summary = summary;
        run.ledger = ledger::Ledger::fold(&records);
        if let Err(e) = run.instantiate(&set).await {
            return Ok(run
                .finish_without_rollout(FinalStatus::Failed, format!("{e:#}"))
                .await?);
        }
        // Look at the target's real state rather than trusting the journal alone.
        let app = cfg.config.deployment.app.clone();
        let stable = run.target().status(&app, Slot::Stable).await.ok();
        let candidate = run.target().status(&app, Slot::Candidate).await.ok();
        drop(permit);
        run.record(Event::Resumed {
            pid: std::process::id(),
            stable: stable.clone(),
            candidate: candidate.clone(),
            note: if changed.is_empty() {
                String::new()
            } else {
                format!(
                    "rolling back, as asked, with other plugin code than the rollout started with: {}",
                    changed.join("; ")
                )
            },
        })
        .await?;

        match replay::gate_verdict(&records) {
            Some((false, summary)) => {
                return Ok(run
                    .finish_without_rollout(
                        FinalStatus::Failed,
                        format!("release gate blocked: {summary}"),
                    )
                    .await?)
            }
            None => {
                if !run.gate().await? {
                    let reason = run.reason.clone();
                    return Ok(run
                        .finish_without_rollout(FinalStatus::Failed, reason)
                        .await?);
                }
            }
            Some((true, _)) => {}
        }
        // Traffic was already shifted: the rollout hooks' load comes back with it, so the
        // next analysis window holds requests again.
        if run.ledger.weight > 0 && !run.ledger.rollback_started && !run.ledger.promoted {
            run.start_load();
        }
        let pending = replay::pending(
            &run.ledger,
            &run.policy,
            &records,
            offset,
            stable,
            candidate,
        );
        Ok(run.drive(pending).await?)
    }
}

fn gate_policy_problems(cfg: &LoadedConfig) -> Vec<Problem> {
    match &cfg.config.gate {
        Some(g) => match serde_json::from_value::<crate::gate::GatePolicy>(g.clone()) {
            Ok(_) => Vec::new(),
            Err(e) => {
                let msg = e.to_string();
                let field = msg
                    .strip_prefix("unknown field `")
                    .and_then(|r| r.split('`').next())
                    .map(|f| format!("gate.{f}"))
                    .unwrap_or_else(|| "gate".into());
                vec![cfg.problem(
                    &field,
                    format!("invalid gate policy: {msg}"),
                    "see the README's `[gate]` section",
                )]
            }
        },
        None => Vec::new(),
    }
}

fn plugin_records(
    cfg: &LoadedConfig,
    set: &resolve::ResolvedSet,
) -> BTreeMap<String, PluginRecord> {
    set.plugins
        .iter()
        .map(|(name, p)| {
            let info = p.info();
            (
                name.clone(),
                PluginRecord {
                    source: cfg.config.plugins[name].source.clone(),
                    role: info.role.to_string(),
                    version: info.version,
                    digest: p.digest(),
                },
            )
        })
        .collect()
}

/// The role a plugin plays, for messages.
pub fn role_name(role: PluginRole) -> &'static str {
    role.interface()
}
