//! Executing one step against the target, the metric providers, the hooks, an operator
//! or the clock; and pacing, so that no strategy can call the target faster than
//! `max_step_rate` (`[deployment]`).

use super::run::Run;
use super::{analysis, hooks};
use crate::config::OnInconclusive;
use crate::contract::{
    AnalysisOutcome, CheckVerdict, HookPhase, Outcome, Slot, StatusOutcome, Step, Target, Workload,
    WorkloadStatus,
};
use crate::state::{ControlAction, Event};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A token bucket over the steps that call out (everything but `wait`, approvals and
/// `finish`): a strategy that loops is slowed to `rate` steps per second after a burst.
pub struct Pacer {
    rate: f64,
    tokens: f64,
    last: Instant,
}

/// Steps a deployment may take at once before pacing starts.
const PACER_BURST: f64 = 20.0;

impl Pacer {
    pub fn new(rate: f64) -> Pacer {
        let rate = if rate.is_finite() && rate > 0.0 {
            rate
        } else {
            10.0
        };
        Pacer {
            rate,
            tokens: PACER_BURST,
            last: Instant::now(),
        }
    }

    /// How long to wait before the next step may call out.
    fn delay(&mut self) -> Duration {
        let now = Instant::now();
        self.tokens = (self.tokens + now.duration_since(self.last).as_secs_f64() * self.rate)
            .min(PACER_BURST);
        self.last = now;
        self.tokens -= 1.0;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }
}

impl Run {
    /// Wait for the pacer if `step` calls out.
    async fn pace(&mut self, step: &Step) {
        if matches!(
            step,
            Step::Wait(_) | Step::AwaitApproval(_) | Step::Finish(_)
        ) {
            return;
        }
        let delay = self.pacer.delay();
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
    }

    /// Execute a decision left without an outcome by a stopped host, after looking at the
    /// target: a promotion or rollback the target already shows is not repeated.
    pub(super) async fn execute_resumed(
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

    pub(super) async fn execute(&mut self, step: &Step) -> anyhow::Result<(Outcome, String)> {
        self.pace(step).await;
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
                    n: self.ledger.decisions,
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
                let approved = action == Some(ControlAction::Promote);
                // `dax abort` at a pause rolls back, whatever the strategy answers next: a
                // strategy that only ever asks again would otherwise never end.
                if action == Some(ControlAction::Abort) {
                    self.abort_requested = true;
                }
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
    pub(super) fn start_load(&mut self) {
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
                n: self.ledger.decisions,
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
