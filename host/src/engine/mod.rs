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
//! **Progress deadline** (`[deployment] progress_deadline`, default 10m): when no step has
//! made progress (a step done other than a `wait`, a ready workload, a passing analysis,
//! passing hooks, an operator answer) for that long, the engine rolls back on its own.
//! Like Flagger's `progressDeadlineSeconds`, waits count (a strategy polling an unready
//! workload waits between polls); time spent waiting for an operator does not. After
//! `dax resume` the deadline starts afresh.
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
pub mod control;
pub mod hooks;
pub mod resolve;
pub mod summary;

pub use resolve::{HostResolver, PluginResolver, ResolvedPlugin};
pub use summary::Summary;

use crate::config::{self, LoadedConfig, OnInconclusive, Problem};
use crate::contract::{
    AnalysisOutcome, Artifact, CheckVerdict, FinalStatus, HookPhase, MetricProvider, Observation,
    Outcome, PluginRole, Scanner, Slot, StatusOutcome, Step, Strategy, Target, Workload,
    WorkloadStatus,
};
use crate::state::{ControlAction, DecidedBy, Event, Journal, PluginRecord, Record, StateDir};
use anyhow::{anyhow, Context};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Default `progress_deadline`, as Flagger's `progressDeadlineSeconds`.
pub const DEFAULT_PROGRESS_DEADLINE: Duration = Duration::from_secs(600);
/// A rollback that fails this many times in a row ends the deployment as failed.
const MAX_ROLLBACK_ATTEMPTS: u32 = 3;

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
        let (_, mut problems) = resolve::validate(cfg, self.resolver.as_ref()).await;
        problems.extend(gate_policy_problems(cfg));
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
        if !run.gate(&set).await? {
            let reason = run.reason.clone();
            return Ok(run
                .finish_without_rollout(FinalStatus::Failed, reason)
                .await?);
        }
        Ok(run.drive(Pending::Start).await?)
    }

    /// Continue a deployment from its journal after the host stopped (crash, kill, reboot).
    pub async fn resume(
        &self,
        id: &str,
        observer: Option<Observer>,
    ) -> Result<Report, DeployError> {
        let permit = self.startup_permit().await;
        let (journal, records) = self.open_journal(id).await?;
        if let Some(report) = finished_report(id, &records) {
            return Ok(report);
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
        // The code that runs must be the code that started the rollout.
        if let Some(Event::PluginsResolved { plugins }) = records
            .iter()
            .map(|r| &r.event)
            .find(|e| matches!(e, Event::PluginsResolved { .. }))
        {
            let now = plugin_records(&cfg, &set);
            for (name, was) in plugins {
                if let Some(is) = now.get(name) {
                    if !was.digest.is_empty() && was.digest != is.digest {
                        return Err(anyhow!(
                            "plugin `{name}` changed since deployment `{id}` started (sha256 {} then, {} now); restore the original plugin or abort with `dax abort {id}`",
                            was.digest, is.digest
                        )
                        .into());
                    }
                }
            }
        }
        let offset = records.last().map(|r| r.elapsed_ms).unwrap_or(0);
        let cfg = Arc::new(cfg);
        let mut run = Run::new(self, id, cfg.clone(), journal, observer, offset);
        run.summary = Summary::fold(id, &records);
        run.n = records
            .iter()
            .filter_map(|r| match r.event {
                Event::Decision { n, .. } => Some(n),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        run.control_seen = records
            .iter()
            .filter_map(|r| match r.event {
                Event::Control { index, .. } => Some(index + 1),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        for r in &records {
            match &r.event {
                Event::Decision {
                    step: Step::Rollback(reason),
                    ..
                } => run.reason = reason.clone(),
                Event::Decision {
                    step: Step::SetTraffic(split),
                    ..
                } => run.weight = split.candidate_weight,
                Event::Outcome {
                    outcome: Outcome::Failed(_),
                    n,
                    ..
                } if decision_of(&records, *n)
                    .is_some_and(|(s, _, _)| matches!(s, Step::Rollback(_))) =>
                {
                    run.rollback_failures += 1;
                }
                _ => {}
            }
        }
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
            note: String::new(),
        })
        .await?;

        let gate_done = records.iter().find_map(|r| match &r.event {
            Event::Gate {
                passed, summary, ..
            } => Some((*passed, summary.clone())),
            _ => None,
        });
        match gate_done {
            Some((false, summary)) => {
                return Ok(run
                    .finish_without_rollout(
                        FinalStatus::Failed,
                        format!("release gate blocked: {summary}"),
                    )
                    .await?)
            }
            None => {
                if !run.gate(&set).await? {
                    let reason = run.reason.clone();
                    return Ok(run
                        .finish_without_rollout(FinalStatus::Failed, reason)
                        .await?);
                }
            }
            Some((true, _)) => {}
        }

        let last = records.iter().rev().find_map(|r| match &r.event {
            Event::Decision {
                n, step, state, by, ..
            } => Some((*n, step.clone(), state.clone(), *by, r.elapsed_ms)),
            _ => None,
        });
        let pending = match last {
            None => Pending::Start,
            Some((n, step, state, by, decided_at)) => {
                let state =
                    hex::decode(&state).context("strategy state in the journal is not hex")?;
                let outcome = records.iter().rev().find_map(|r| match &r.event {
                    Event::Outcome { n: m, outcome, .. } if *m == n => Some(outcome.clone()),
                    _ => None,
                });
                match outcome {
                    Some(outcome) => Pending::Continue {
                        step,
                        by,
                        state,
                        outcome,
                    },
                    None => {
                        let already = offset.saturating_sub(decided_at);
                        let step = match step {
                            Step::Wait(ms) => Step::Wait(ms.saturating_sub(already)),
                            s => s,
                        };
                        Pending::Redo {
                            n,
                            step,
                            state,
                            by,
                            stable,
                            candidate,
                        }
                    }
                }
            }
        };
        Ok(run.drive(pending).await?)
    }
}

fn decision_of(records: &[Record], n: u64) -> Option<(Step, DecidedBy, String)> {
    records.iter().find_map(|r| match &r.event {
        Event::Decision {
            n: m,
            step,
            by,
            state,
            ..
        } if *m == n => Some((step.clone(), *by, state.clone())),
        _ => None,
    })
}

fn finished_report(id: &str, records: &[Record]) -> Option<Report> {
    records.iter().rev().find_map(|r| match &r.event {
        Event::Finished { status, reason } => Some(Report {
            id: id.to_string(),
            status: *status,
            reason: reason.clone(),
            summary: Summary::from_records(id, records),
        }),
        _ => None,
    })
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

/// Where the strategy loop starts.
enum Pending {
    /// Fresh rollout: `strategy.start`.
    Start,
    /// The last decision has an outcome: decide the next step.
    Continue {
        step: Step,
        by: DecidedBy,
        state: Vec<u8>,
        outcome: Outcome,
    },
    /// Resumed with a decision that has no outcome: execute it again.
    Redo {
        n: u64,
        step: Step,
        state: Vec<u8>,
        by: DecidedBy,
        stable: Option<WorkloadStatus>,
        candidate: Option<WorkloadStatus>,
    },
}

/// One deployment in progress.
struct Run {
    engine: Engine,
    id: String,
    cfg: Arc<LoadedConfig>,
    journal: Journal,
    observer: Option<Observer>,
    target: Option<Arc<dyn Target>>,
    strategy: Option<Arc<dyn Strategy>>,
    scanners: Vec<(String, Arc<dyn Scanner>)>,
    providers: HashMap<String, Arc<dyn MetricProvider>>,
    started: Instant,
    offset_ms: u64,
    n: u64,
    last_progress_ms: u64,
    control_seen: usize,
    /// This deployment's control bell, and whether its control file is still unread.
    control: control::Registration,
    control_unread: bool,
    /// The journal so far, folded (what `finish` reports without re-reading the journal).
    summary: Summary,
    abort_requested: bool,
    load: Vec<hooks::LoadGenerator>,
    rollback_failures: u32,
    reason: String,
    weight: u8,
}

impl Run {
    fn new(
        engine: &Engine,
        id: &str,
        cfg: Arc<LoadedConfig>,
        journal: Journal,
        observer: Option<Observer>,
        offset_ms: u64,
    ) -> Self {
        Run {
            engine: engine.clone(),
            id: id.to_string(),
            cfg,
            journal,
            observer,
            target: None,
            strategy: None,
            scanners: Vec::new(),
            providers: HashMap::new(),
            started: Instant::now(),
            offset_ms,
            n: 0,
            last_progress_ms: offset_ms,
            control_seen: 0,
            control: engine.bell().register(id),
            control_unread: true,
            summary: Summary::new(id),
            abort_requested: false,
            load: Vec::new(),
            rollback_failures: 0,
            reason: String::new(),
            weight: 0,
        }
    }

    fn target(&self) -> &Arc<dyn Target> {
        self.target.as_ref().expect("target instantiated")
    }

    fn elapsed_ms(&self) -> u64 {
        self.offset_ms + self.started.elapsed().as_millis() as u64
    }

    async fn record(&mut self, event: Event) -> anyhow::Result<Record> {
        let rec = self.journal.append(self.elapsed_ms(), event).await?;
        self.summary.apply(&rec);
        if let Some(o) = &self.observer {
            o(&rec);
        }
        if self
            .cfg
            .config
            .hooks
            .iter()
            .any(|h| h.phase == HookPhase::Event)
        {
            let (kind, message) = summary::describe_event(&rec.event);
            hooks::fire_event(&self.engine.http, &self.cfg, &self.id, kind, &message);
        }
        Ok(rec)
    }

    async fn instantiate(&mut self, set: &resolve::ResolvedSet) -> anyhow::Result<()> {
        let c = &self.cfg.config;
        let get = |name: &str| {
            set.plugins
                .get(name)
                .cloned()
                .ok_or_else(|| anyhow!("plugin `{name}` is not resolved"))
        };
        self.strategy = Some(
            get(&c.strategy.plugin)?
                .strategy(c.strategy_params())
                .await
                .with_context(|| format!("cannot start strategy plugin `{}`", c.strategy.plugin))?,
        );
        let mut providers = HashMap::new();
        for check in &c.checks {
            if !providers.contains_key(&check.provider) {
                let p = get(&check.provider)?
                    .metric_provider(c.plugin_config(&check.provider))
                    .await
                    .with_context(|| {
                        format!("cannot start metric provider `{}`", check.provider)
                    })?;
                providers.insert(check.provider.clone(), p);
            }
        }
        self.providers = providers;
        for name in resolve::gate_scanners(&self.cfg) {
            let s = get(&name)?
                .scanner(c.plugin_config(&name))
                .await
                .with_context(|| format!("cannot start scanner `{name}`"))?;
            self.scanners.push((name, s));
        }
        // The target last: a native target may start listeners or adopt processes.
        let deployment_dir = self.engine.state.deployment_dir(&self.id);
        let ctx = resolve::TargetContext {
            base_dir: &self.cfg.base_dir,
            deployment_dir: &deployment_dir,
        };
        self.target = Some(
            get(&c.target.plugin)?
                .target(c.plugin_config(&c.target.plugin), ctx)
                .await
                .with_context(|| format!("cannot start target plugin `{}`", c.target.plugin))?,
        );
        Ok(())
    }

    /// Scanners and the gate policy. Returns whether the release may go on.
    async fn gate(&mut self, set: &resolve::ResolvedSet) -> anyhow::Result<bool> {
        let _ = set;
        let Some(policy) = &self.cfg.config.gate else {
            return Ok(true);
        };
        let policy: crate::gate::GatePolicy =
            serde_json::from_value(policy.clone()).context("invalid [gate] table")?;
        let artifact = Artifact {
            name: self.cfg.config.deployment.artifact.clone(),
            digest: String::new(),
            manifests: Vec::new(),
        };
        let scans = self.scanners.iter().map(|(name, s)| {
            let artifact = artifact.clone();
            async move {
                let r =
                    match tokio::time::timeout(Duration::from_secs(600), s.scan(&artifact)).await {
                        Ok(Ok(report)) => Ok(report),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("scanner timed out after 600s".to_string()),
                    };
                (name.clone(), r)
            }
        });
        let reports = futures::future::join_all(scans).await;
        let verdict = crate::gate::evaluate(&policy, &reports, chrono::Utc::now().date_naive());
        self.record(Event::Gate {
            passed: verdict.passed,
            summary: verdict.summary.clone(),
            detail: serde_json::to_value(&verdict).unwrap_or_default(),
        })
        .await?;
        if !verdict.passed {
            // Name what blocked, so the operator sees why without opening the journal.
            let mut blocking: Vec<String> = verdict
                .blocked
                .iter()
                .take(10)
                .map(|b| {
                    let f = &b.finding;
                    let package = if f.package.is_empty() {
                        String::new()
                    } else {
                        format!(" in {}", f.package)
                    };
                    format!("{} ({:?}{package}, {})", f.id, f.severity, b.scanner)
                })
                .collect();
            if verdict.blocked.len() > 10 {
                blocking.push(format!("and {} more", verdict.blocked.len() - 10));
            }
            blocking.extend(
                verdict
                    .scanner_errors
                    .iter()
                    .filter(|e| e.blocking)
                    .map(|e| format!("scanner `{}` failed: {}", e.scanner, e.error)),
            );
            self.reason = format!(
                "release gate blocked: {}; blocking: {}",
                verdict.summary,
                blocking.join(", ")
            );
        }
        Ok(verdict.passed)
    }

    async fn finish_without_rollout(
        &mut self,
        status: FinalStatus,
        reason: String,
    ) -> anyhow::Result<Report> {
        self.reason = reason;
        self.finish(status).await
    }

    async fn finish(&mut self, status: FinalStatus) -> anyhow::Result<Report> {
        self.load.clear();
        if self.reason.is_empty() {
            self.reason = match status {
                FinalStatus::Promoted => "every analysis passed".into(),
                FinalStatus::RolledBack => "rolled back".into(),
                FinalStatus::Failed => "failed".into(),
            };
        }
        self.record(Event::Finished {
            status,
            reason: self.reason.clone(),
        })
        .await?;
        let summary = std::mem::take(&mut self.summary);
        let event = match status {
            FinalStatus::Promoted => "promoted",
            FinalStatus::RolledBack => "rolled-back",
            FinalStatus::Failed => "failed",
        };
        let c = &self.cfg.config;
        let text = format!(
            "{} {} {event}: {} ({})",
            c.deployment.app,
            c.deployment.version,
            self.reason,
            summary::fmt_ms(summary.elapsed_ms)
        );
        if !c.notifications.is_empty() {
            self.notify_with(
                event,
                &text,
                serde_json::to_value(&summary).unwrap_or_default(),
            )
            .await;
        }
        Ok(Report {
            id: self.id.clone(),
            status,
            reason: self.reason.clone(),
            summary,
        })
    }

    async fn notify(&self, event: &str, text: &str) {
        self.notify_with(event, text, serde_json::json!({})).await
    }

    async fn notify_with(&self, event: &str, text: &str, summary: serde_json::Value) {
        if !self.cfg.config.notifications.is_empty() {
            hooks::notify(
                &self.engine.http,
                &self.cfg.config,
                &self.id,
                event,
                text,
                &summary,
            )
            .await;
        }
    }

    /// Unconsumed control records, journaled as consumed.
    async fn take_control(&mut self) -> anyhow::Result<Vec<ControlAction>> {
        // The control file can only have news at the start and after the bell rang.
        let unread = std::mem::take(&mut self.control_unread);
        if !unread && !self.control.listener.take_ring() {
            return Ok(Vec::new());
        }
        let all = self.engine.state.read_control(&self.id);
        let mut out = Vec::new();
        for (index, rec) in all.into_iter().enumerate().skip(self.control_seen) {
            self.record(Event::Control {
                index,
                action: rec.action,
            })
            .await?;
            self.control_seen = index + 1;
            out.push(rec.action);
        }
        Ok(out)
    }

    /// Sleep up to `dur`, waking for operator control. Returns the action that woke it.
    async fn wait_for_control(
        &mut self,
        dur: Option<Duration>,
    ) -> anyhow::Result<Option<ControlAction>> {
        let until = dur.map(|d| Instant::now() + d);
        loop {
            let actions = self.take_control().await?;
            if actions.contains(&ControlAction::Abort) {
                return Ok(Some(ControlAction::Abort));
            }
            if let Some(first) = actions.first() {
                return Ok(Some(*first));
            }
            let listener = self.control.listener.clone();
            match until {
                Some(u) => {
                    let left = u.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Ok(None);
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(left) => {}
                        _ = listener.rung() => {}
                    }
                }
                None => listener.rung().await,
            }
        }
    }

    fn deadline(&self) -> Duration {
        self.cfg
            .config
            .deployment
            .progress_deadline
            .unwrap_or(DEFAULT_PROGRESS_DEADLINE)
    }

    /// The strategy loop, until a `finish` step.
    async fn drive(mut self, pending: Pending) -> anyhow::Result<Report> {
        let strategy = self.strategy.clone().expect("strategy instantiated");
        let mut prev: Option<(Step, DecidedBy, Vec<u8>, Outcome)> = None;
        match pending {
            Pending::Start => {}
            // Stopped after finishing the target but before the `finished` record.
            Pending::Continue {
                step: Step::Finish(status),
                ..
            } => return self.finish(status).await,
            Pending::Continue {
                step,
                by,
                state,
                outcome,
            } => prev = Some((step, by, state, outcome)),
            Pending::Redo {
                n,
                step,
                state,
                by,
                stable,
                candidate,
            } => {
                let (outcome, detail) = self.execute_resumed(&step, stable, candidate).await?;
                self.after(n, &step, &outcome, detail).await?;
                if let Step::Finish(status) = step {
                    return self.finish(status).await;
                }
                prev = Some((step, by, state, outcome));
            }
        }
        loop {
            let (step, state, note, by) = self.decide(&strategy, prev.take()).await?;
            self.n += 1;
            let n = self.n;
            if let Step::Rollback(reason) = &step {
                self.reason = reason.clone();
            }
            self.record(Event::Decision {
                n,
                step: step.clone(),
                state: hex::encode(&state),
                note,
                by,
            })
            .await?;
            if let Step::Finish(status) = step {
                let (outcome, detail) = self.execute(&step).await?;
                self.after(n, &step, &outcome, detail).await?;
                return self.finish(status).await;
            }
            let (outcome, detail) = self.execute(&step).await?;
            self.after(n, &step, &outcome, detail).await?;
            prev = Some((step, by, state, outcome));
        }
    }

    async fn after(
        &mut self,
        n: u64,
        step: &Step,
        outcome: &Outcome,
        detail: String,
    ) -> anyhow::Result<()> {
        if matches!(step, Step::Rollback(_)) {
            if matches!(outcome, Outcome::Failed(_)) {
                self.rollback_failures += 1;
            } else {
                self.rollback_failures = 0;
            }
        }
        if let Step::SetTraffic(split) = step {
            if outcome == &Outcome::Done {
                self.weight = split.candidate_weight;
            }
        }
        if makes_progress(step, outcome) {
            self.last_progress_ms = self.elapsed_ms();
        }
        self.record(Event::Outcome {
            n,
            outcome: outcome.clone(),
            detail,
        })
        .await?;
        Ok(())
    }

    /// The next step: an engine or operator override, or the strategy's answer.
    async fn decide(
        &mut self,
        strategy: &Arc<dyn Strategy>,
        prev: Option<(Step, DecidedBy, Vec<u8>, Outcome)>,
    ) -> anyhow::Result<(Step, Vec<u8>, String, DecidedBy)> {
        let state = prev.as_ref().map(|p| p.2.clone()).unwrap_or_default();
        // Sequences the engine owns: after its rollback (or an operator's), finish.
        if let Some((step, by, _, outcome)) = &prev {
            if *by != DecidedBy::Strategy {
                if let Step::Rollback(reason) = step {
                    return Ok(
                        if matches!(outcome, Outcome::Failed(_))
                            && self.rollback_failures < MAX_ROLLBACK_ATTEMPTS
                        {
                            (
                                Step::Rollback(reason.clone()),
                                state,
                                "retry rollback".into(),
                                DecidedBy::Engine,
                            )
                        } else if matches!(outcome, Outcome::Failed(_)) {
                            self.reason =
                                format!("{reason}; rollback failed {MAX_ROLLBACK_ATTEMPTS} times");
                            (
                                Step::Finish(FinalStatus::Failed),
                                state,
                                "rollback failed".into(),
                                DecidedBy::Engine,
                            )
                        } else {
                            (
                                Step::Finish(FinalStatus::RolledBack),
                                state,
                                "rolled back".into(),
                                DecidedBy::Engine,
                            )
                        },
                    );
                }
            }
            if matches!(step, Step::Rollback(_)) && self.rollback_failures >= MAX_ROLLBACK_ATTEMPTS
            {
                self.reason = format!(
                    "{}; rollback failed {MAX_ROLLBACK_ATTEMPTS} times",
                    self.reason
                );
                return Ok((
                    Step::Finish(FinalStatus::Failed),
                    state,
                    "rollback failed".into(),
                    DecidedBy::Engine,
                ));
            }
        }
        // An abort, whenever it arrives.
        for action in self.take_control().await? {
            if action == ControlAction::Abort {
                self.abort_requested = true;
            }
        }
        let in_rollback = prev
            .as_ref()
            .is_some_and(|p| matches!(p.0, Step::Rollback(_)));
        if self.abort_requested && !in_rollback {
            self.abort_requested = false;
            return Ok((
                Step::Rollback("aborted by operator".into()),
                state,
                "operator abort".into(),
                DecidedBy::Operator,
            ));
        }
        let stalled = self.elapsed_ms().saturating_sub(self.last_progress_ms);
        if !in_rollback && prev.is_some() && stalled > self.deadline().as_millis() as u64 {
            return Ok((
                Step::Rollback(format!(
                    "progress deadline exceeded: no progress for {}",
                    summary::fmt_ms(stalled)
                )),
                state,
                "progress deadline".into(),
                DecidedBy::Engine,
            ));
        }
        let answer = match &prev {
            None => strategy.start().await,
            Some((_, _, state, outcome)) => {
                let obs = Observation {
                    elapsed_ms: self.elapsed_ms(),
                    last: outcome.clone(),
                };
                strategy.next(state, &obs).await
            }
        };
        match answer {
            Ok(d) => Ok((d.next, d.state, d.note, DecidedBy::Strategy)),
            Err(e) if in_rollback => {
                // The strategy faulted after a rollback: the rollback is done, finish.
                self.reason = format!("{}; strategy error after rollback: {e}", self.reason);
                Ok((
                    Step::Finish(FinalStatus::RolledBack),
                    state,
                    "strategy error".into(),
                    DecidedBy::Engine,
                ))
            }
            Err(e) => Ok((
                Step::Rollback(format!("strategy error: {e}")),
                state,
                "strategy error".into(),
                DecidedBy::Engine,
            )),
        }
    }

    /// Execute a decision left without an outcome by a stopped host, after looking at the
    /// target: a promotion or rollback the target already shows is not repeated.
    async fn execute_resumed(
        &mut self,
        step: &Step,
        stable: Option<WorkloadStatus>,
        candidate: Option<WorkloadStatus>,
    ) -> anyhow::Result<(Outcome, String)> {
        let version = &self.cfg.config.deployment.version;
        match step {
            Step::Promote
                if stable.as_ref().is_some_and(|s| &s.version == version)
                    && candidate.as_ref().is_some_and(|c| c.desired == 0) =>
            {
                Ok((Outcome::Done, "target already shows the promotion".into()))
            }
            Step::Rollback(_)
                if candidate.as_ref().is_some_and(|c| c.desired == 0)
                    && stable.as_ref().is_some_and(|s| &s.version != version) =>
            {
                let hooks = hooks::run_phase(
                    &self.engine.http,
                    &self.cfg.config,
                    &self.id,
                    HookPhase::Rollback,
                )
                .await;
                Ok((
                    Outcome::Done,
                    format!("target already rolled back{}", hook_detail(&hooks)),
                ))
            }
            _ => self.execute(step).await,
        }
    }

    async fn execute(&mut self, step: &Step) -> anyhow::Result<(Outcome, String)> {
        let app = self.cfg.config.deployment.app.clone();
        let target = self.target().clone();
        let failed =
            |e: crate::contract::CallError| (Outcome::Failed(e.to_string()), String::new());
        Ok(match step {
            Step::DeployCandidate => {
                let c = &self.cfg.config;
                let workload = Workload {
                    app: app.clone(),
                    version: c.deployment.version.clone(),
                    artifact: c.deployment.artifact.clone(),
                    replicas: c.replicas(),
                    spec: c.workload_spec().to_string(),
                };
                match target.deploy(&workload).await {
                    Ok(()) => status_outcome(&target, &app, Slot::Candidate).await,
                    Err(e) => failed(e),
                }
            }
            Step::SetTraffic(split) => match target.set_traffic(&app, split).await {
                Ok(()) => {
                    // Load starts with the first traffic shift, so the first analysis window
                    // already holds requests for the candidate.
                    self.start_load();
                    (Outcome::Done, String::new())
                }
                Err(e) => failed(e),
            },
            Step::Scale(slot, replicas) => match target.scale(&app, *slot, *replicas).await {
                Ok(()) => status_outcome(&target, &app, *slot).await,
                Err(e) => failed(e),
            },
            Step::CheckStatus(slot) => status_outcome(&target, &app, *slot).await,
            Step::Analyze(req) => self.analyze(req.window_ms, req.compare_baseline).await?,
            Step::RunHooks(phase) => {
                let results =
                    hooks::run_phase(&self.engine.http, &self.cfg.config, &self.id, *phase).await;
                let ok = results.iter().all(|r| r.verdict == CheckVerdict::Pass);
                (Outcome::Hooks(ok), hook_detail(&results))
            }
            Step::Wait(ms) => {
                let woke = self
                    .wait_for_control(Some(Duration::from_millis(*ms)))
                    .await?;
                match woke {
                    Some(ControlAction::Abort) => {
                        self.abort_requested = true;
                        (Outcome::Done, "wait interrupted by `dax abort`".into())
                    }
                    Some(ControlAction::Promote) => {
                        (Outcome::Done, "wait ended early by `dax promote`".into())
                    }
                    None => (Outcome::Done, String::new()),
                }
            }
            Step::AwaitApproval(what) => {
                self.record(Event::Paused {
                    n: self.n,
                    reason: what.clone(),
                })
                .await?;
                self.notify(
                    "paused",
                    &format!(
                        "{} {} waits for approval: {what} (dax promote {} / dax abort {})",
                        app, self.cfg.config.deployment.version, self.id, self.id
                    ),
                )
                .await;
                let action = self.wait_for_control(None).await?;
                self.last_progress_ms = self.elapsed_ms();
                let approved = action == Some(ControlAction::Promote);
                (
                    Outcome::Approval(approved),
                    if approved {
                        "approved".into()
                    } else {
                        "aborted".into()
                    },
                )
            }
            Step::Promote => {
                self.load.clear();
                match target.promote(&app).await {
                    Ok(()) => (Outcome::Done, String::new()),
                    Err(e) => failed(e),
                }
            }
            Step::Rollback(_) => {
                self.load.clear();
                let result = target.rollback(&app).await;
                let hooks = hooks::run_phase(
                    &self.engine.http,
                    &self.cfg.config,
                    &self.id,
                    HookPhase::Rollback,
                )
                .await;
                match result {
                    Ok(()) => (
                        Outcome::Done,
                        hook_detail(&hooks).trim_start_matches("; ").to_string(),
                    ),
                    Err(e) => failed(e),
                }
            }
            Step::Finish(_) => {
                self.load.clear();
                match target.finalize(&app).await {
                    Ok(()) => (Outcome::Done, String::new()),
                    Err(e) => (Outcome::Done, format!("finalize failed: {e}")),
                }
            }
        })
    }

    /// Start the `load` generators of the rollout hooks, unless they already run.
    fn start_load(&mut self) {
        if !self.load.is_empty() {
            return;
        }
        for hook in self
            .cfg
            .config
            .hooks
            .iter()
            .filter(|h| h.phase == HookPhase::Rollout)
        {
            if let Some(spec) = &hook.load {
                self.load.push(hooks::LoadGenerator::start(
                    self.engine.http.clone(),
                    spec.clone(),
                ));
            }
        }
    }

    async fn analyze(
        &mut self,
        window_ms: u64,
        compare_baseline: bool,
    ) -> anyhow::Result<(Outcome, String)> {
        self.start_load();
        let cfg = self.cfg.clone();
        let (mut checks, hook_results) = tokio::join!(
            analysis::run_checks(&cfg.config, &self.providers, window_ms),
            hooks::run_phase(&self.engine.http, &cfg.config, &self.id, HookPhase::Rollout)
        );
        checks.extend(hook_results);
        let mut outcome = AnalysisOutcome {
            checks,
            score: None,
        };
        let mut detail = String::new();
        if compare_baseline {
            let (score, summary) =
                analysis::judge_against_baseline(&cfg.config, &self.providers, window_ms).await;
            outcome.score = Some(score);
            detail = format!("judge: {summary}");
        }
        if cfg.config.deployment.on_inconclusive == OnInconclusive::Pause
            && analysis::is_inconclusive(&outcome)
        {
            let why: Vec<String> = outcome
                .checks
                .iter()
                .filter(|c| c.verdict != CheckVerdict::Pass)
                .map(|c| format!("{}: {}", c.name, c.detail))
                .collect();
            let reason = format!("inconclusive analysis ({})", why.join("; "));
            self.record(Event::Paused {
                n: self.n,
                reason: reason.clone(),
            })
            .await?;
            self.notify(
                "paused",
                &format!(
                    "{} {}: {reason} (dax promote {} / dax abort {})",
                    cfg.config.deployment.app, cfg.config.deployment.version, self.id, self.id
                ),
            )
            .await;
            let action = self.wait_for_control(None).await?;
            self.last_progress_ms = self.elapsed_ms();
            if action == Some(ControlAction::Promote) {
                for c in outcome
                    .checks
                    .iter_mut()
                    .filter(|c| c.verdict != CheckVerdict::Pass)
                {
                    c.detail = format!("accepted by operator (was {:?}: {})", c.verdict, c.detail);
                    c.verdict = CheckVerdict::Pass;
                }
            } else {
                self.abort_requested = true;
            }
        }
        Ok((Outcome::Analysis(outcome), detail))
    }
}

fn hook_detail(results: &[crate::contract::CheckResult]) -> String {
    results
        .iter()
        .map(|r| format!("; {} {}", r.name, r.detail))
        .collect::<String>()
        .trim_start_matches("; ")
        .to_string()
}

async fn status_outcome(target: &Arc<dyn Target>, app: &str, slot: Slot) -> (Outcome, String) {
    match target.status(app, slot).await {
        Ok(s) => (
            Outcome::TargetStatus(StatusOutcome {
                which: slot,
                desired: s.desired,
                ready: s.ready,
                updated: s.updated,
            }),
            s.message,
        ),
        Err(e) => (Outcome::Failed(e.to_string()), String::new()),
    }
}

/// Whether an outcome counts as progress for the progress deadline.
fn makes_progress(step: &Step, outcome: &Outcome) -> bool {
    if matches!(step, Step::Wait(_)) {
        // Waiting is not progress (a strategy polling an unready workload waits in between).
        return false;
    }
    match outcome {
        Outcome::Done | Outcome::Approval(_) | Outcome::Started => true,
        Outcome::TargetStatus(s) => s.ready >= s.desired,
        Outcome::Analysis(a) => a.checks.iter().all(|c| c.verdict == CheckVerdict::Pass),
        Outcome::Hooks(ok) => *ok,
        Outcome::Failed(_) => false,
    }
}

/// The role a plugin plays, for messages.
pub fn role_name(role: PluginRole) -> &'static str {
    role.interface()
}
