//! One deployment in progress: its plugins, its journal, its ledger, and the strategy loop.
//!
//! ```text
//! drive: loop {
//!     decide   engine sequences (decide::before_strategy) or the strategy, vetted
//!     journal  `decision`                       (before anything is acted on)
//!     execute  against target / checks / hooks / approvals / timer   (execute.rs)
//!     journal  `outcome`                        (the ledger and summary fold both)
//! } until a `finish` step ─ finalize target ─ journal `finished` ─ notifications
//! ```

use super::decide::{self, EngineStep, Moment, Next, Policy, Vetted};
use super::execute::Pacer;
use super::ledger::Ledger;
use super::replay::Pending;
use super::{control, hooks, resolve, summary, Engine, Observer, Report, Summary};
use crate::config::LoadedConfig;
use crate::contract::{
    FinalStatus, HookPhase, MetricProvider, Observation, Outcome, Scanner, Step, Strategy, Target,
};
use crate::state::{ControlAction, DecidedBy, Event, Journal, Record};
use anyhow::{anyhow, Context};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// One deployment in progress.
pub(super) struct Run {
    pub(super) engine: Engine,
    pub(super) id: String,
    pub(super) cfg: Arc<LoadedConfig>,
    journal: Journal,
    observer: Option<Observer>,
    pub(super) target: Option<Arc<dyn Target>>,
    strategy: Option<Arc<dyn Strategy>>,
    pub(super) scanners: Vec<(String, Arc<dyn Scanner>)>,
    pub(super) providers: HashMap<String, Arc<dyn MetricProvider>>,
    started: Instant,
    offset_ms: u64,
    /// What happened on the target, folded from every record this run journals (and, on
    /// resume, from the journal before it): the authority on how the deployment ends.
    pub(super) ledger: Ledger,
    pub(super) policy: Policy,
    pub(super) pacer: Pacer,
    /// This deployment's control bell, and whether its control file is still unread.
    control: control::Registration,
    control_unread: bool,
    /// The journal so far, folded (what `finish` reports without re-reading the journal).
    pub(super) summary: Summary,
    pub(super) abort_requested: bool,
    pub(super) load: Vec<hooks::LoadGenerator>,
    /// Why the deployment could not start (gate, instantiation), for `finish`.
    pub(super) reason: String,
}

/// A decision about to be journaled.
struct Decided {
    step: Step,
    state: Vec<u8>,
    note: String,
    by: DecidedBy,
    ends_as: Option<FinalStatus>,
}

impl Decided {
    fn engine(e: EngineStep, state: Vec<u8>) -> Decided {
        Decided {
            step: e.step,
            state,
            note: e.note,
            by: e.by,
            ends_as: e.ends_as,
        }
    }
}

impl Run {
    pub(super) fn new(
        engine: &Engine,
        id: &str,
        cfg: Arc<LoadedConfig>,
        journal: Journal,
        observer: Option<Observer>,
        offset_ms: u64,
    ) -> Self {
        let policy = Policy::of(&cfg.config);
        let pacer = Pacer::new(cfg.config.deployment.max_step_rate);
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
            ledger: Ledger::default(),
            policy,
            pacer,
            control: engine.bell().register(id),
            control_unread: true,
            summary: Summary::new(id),
            abort_requested: false,
            load: Vec::new(),
            reason: String::new(),
        }
    }

    pub(super) fn target(&self) -> &Arc<dyn Target> {
        self.target.as_ref().expect("target instantiated")
    }

    pub(super) fn elapsed_ms(&self) -> u64 {
        // Saturating: a damaged journal's clock may be anywhere near u64::MAX.
        self.offset_ms
            .saturating_add(self.started.elapsed().as_millis() as u64)
    }

    pub(super) async fn record(&mut self, event: Event) -> anyhow::Result<Record> {
        let rec = self.journal.append(self.elapsed_ms(), event).await?;
        self.summary.apply(&rec);
        self.ledger.apply(&rec);
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

    pub(super) async fn instantiate(&mut self, set: &resolve::ResolvedSet) -> anyhow::Result<()> {
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

    /// End a deployment that never reached its strategy loop: its plugins could not start
    /// (then there is no target instance: the target is instantiated last) or the release
    /// gate blocked it. No `finalize` here on purpose: no step has run, so the rollout holds
    /// nothing on the target to release, and a blocked release must not touch the target at
    /// all (tests/engine.rs, `deploy_refuses_a_release_the_gate_blocks_and_proceeds_when_ignored`).
    /// What a native target holds by being constructed (the local target's listeners) is
    /// released when the instance drops.
    pub(super) async fn finish_without_rollout(
        &mut self,
        status: FinalStatus,
        reason: String,
    ) -> anyhow::Result<Report> {
        self.reason = reason;
        self.finish(status).await
    }

    /// The final reason: why it stopped (from the ledger, or why it could not start), or
    /// what the promotion rests on.
    fn final_reason(&self, status: FinalStatus, strategy_note: &str) -> String {
        if !self.reason.is_empty() {
            return self.reason.clone();
        }
        if !self.ledger.reason.is_empty() {
            return self.ledger.reason.clone();
        }
        let analyses = self.ledger.analyses_passed;
        match status {
            FinalStatus::Promoted if self.cfg.config.checks.is_empty() => {
                "promoted (no checks configured)".into()
            }
            FinalStatus::Promoted if analyses == 0 => {
                "promoted without analysis (`require_analysis = false` in [deployment])".into()
            }
            FinalStatus::Promoted => format!(
                "every analysis passed ({analyses} passing {})",
                if analyses == 1 {
                    "analysis"
                } else {
                    "analyses"
                }
            ),
            _ if !strategy_note.is_empty() => strategy_note.to_string(),
            FinalStatus::RolledBack => "rolled back".into(),
            FinalStatus::Failed => "failed".into(),
        }
    }

    pub(super) async fn finish(&mut self, status: FinalStatus) -> anyhow::Result<Report> {
        self.load.clear();
        let note = match &self.ledger.last {
            Some(l) if matches!(l.step, Step::Finish(_)) && l.by == DecidedBy::Strategy => {
                self.summary.note.clone()
            }
            _ => String::new(),
        };
        let reason = self.final_reason(status, &note);
        self.reason = reason.clone();
        self.record(Event::Finished { status, reason }).await?;
        let summary = std::mem::take(&mut self.summary);
        let event = summary::status_name(status);
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

    pub(super) async fn notify(&self, event: &str, text: &str) {
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
        for (index, rec) in all.into_iter().enumerate().skip(self.ledger.controls_seen) {
            self.record(Event::Control {
                index,
                action: rec.action,
            })
            .await?;
            out.push(rec.action);
        }
        Ok(out)
    }

    /// Sleep up to `dur`, waking for operator control. Returns the action that woke it.
    pub(super) async fn wait_for_control(
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

    /// The strategy loop, until a `finish` step.
    pub(super) async fn drive(mut self, pending: Pending) -> anyhow::Result<Report> {
        let strategy = self.strategy.clone().expect("strategy instantiated");
        match pending {
            Pending::Decide => {}
            // Stopped after finishing the target but before the `finished` record.
            Pending::Finish(status) => return self.finish(status).await,
            Pending::Refuse { n, why } => {
                self.record_outcome(n, Outcome::Failed(why), String::new())
                    .await?;
            }
            Pending::Redo {
                n,
                step,
                stable,
                candidate,
            } => {
                let (outcome, detail) = self.execute_resumed(&step, stable, candidate).await?;
                self.record_outcome(n, outcome, detail).await?;
                if let Step::Finish(status) = step {
                    return self.finish(status).await;
                }
            }
        }
        loop {
            let d = self.decide(&strategy).await?;
            let n = self.ledger.decisions + 1;
            self.record(Event::Decision {
                n,
                step: d.step.clone(),
                state: hex::encode(&d.state),
                note: d.note,
                by: d.by,
                ends_as: d.ends_as,
            })
            .await?;
            let (outcome, detail) = self.execute(&d.step).await?;
            self.record_outcome(n, outcome, detail).await?;
            if let Step::Finish(status) = d.step {
                return self.finish(status).await;
            }
        }
    }

    async fn record_outcome(
        &mut self,
        n: u64,
        outcome: Outcome,
        detail: String,
    ) -> anyhow::Result<()> {
        self.record(Event::Outcome { n, outcome, detail }).await?;
        Ok(())
    }

    /// The next step: the engine's own sequence, or the strategy's answer once vetted.
    async fn decide(&mut self, strategy: &Arc<dyn Strategy>) -> anyhow::Result<Decided> {
        for action in self.take_control().await? {
            if action == ControlAction::Abort {
                self.abort_requested = true;
            }
        }
        let state = self
            .ledger
            .last
            .as_ref()
            .map(|l| l.state.clone())
            .unwrap_or_default();
        let moment = Moment {
            elapsed_ms: self.elapsed_ms(),
            abort_requested: self.abort_requested,
        };
        if let Next::Engine(e) = decide::before_strategy(&self.ledger, &self.policy, moment) {
            if e.by == DecidedBy::Operator {
                self.abort_requested = false;
            }
            return Ok(Decided::engine(e, state));
        }
        let answer = match &self.ledger.last {
            None => strategy.start().await,
            Some(last) => {
                let obs = Observation {
                    elapsed_ms: self.elapsed_ms(),
                    last: last.outcome.clone().unwrap_or(Outcome::Started),
                };
                strategy.next(&last.state, &obs).await
            }
        };
        Ok(match answer {
            Ok(d) => match decide::vet(d.next, &self.ledger, &self.policy) {
                Vetted::Forward(step) => Decided {
                    step,
                    state: d.state,
                    note: d.note,
                    by: DecidedBy::Strategy,
                    ends_as: None,
                },
                // The refused step is never executed (its note says why); its state is
                // not taken either.
                Vetted::Refused { instead, .. } => Decided::engine(instead, state),
            },
            Err(e) => Decided::engine(
                EngineStep::stop(&self.ledger, format!("strategy error: {e}"), None),
                state,
            ),
        })
    }
}
