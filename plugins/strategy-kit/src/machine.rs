//! A deterministic interpreter for rollout programs.
//!
//! Each strategy turns its params into a list of [`Op`]s (a "program"); this module runs
//! the program one WIT step at a time. The state blob holds the program counter, the
//! sub-phase of the current op, the failed-check counter and what was done to traffic and
//! scale (so a rollback can undo it). Programs are recomputed from the params at every call,
//! which is why params travel with every call and why the same inputs give the same answer.
//!
//! Failure rules shared by every strategy:
//! - an analysis that does not pass increments `failedChecks`; the rollout rolls back when
//!   `failedChecks >= threshold` (Flagger's comparison), otherwise the same analysis is
//!   retried after its interval. `failedChecks` is not reset by a later pass (as in Flagger);
//! - a `failed` outcome of any step (target error, plugin fault) rolls back at once;
//! - rollback: restore the stable replica count if we scaled it, route all traffic to
//!   stable if we ever moved any, then `rollback(reason)`, then `finish(rolled-back)`
//!   (`finish(failed)` if the rollback step itself failed).

use crate::analysis::{classify, Verdict};
use crate::params::{decode_state, encode_state, format_ms, ScoreThresholds};
use crate::types::*;
use serde::{Deserialize, Serialize};

/// What to do when the webhooks of a phase do not all answer 2xx.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookFailure {
    /// Note it and go on (post-rollout: the new version is already live).
    Ignore,
    /// Count it as a failed check; retry after the interval until `threshold` (pre-rollout).
    Count,
    /// A gate: retry after the interval until it answers 2xx (confirm-* hooks).
    Gate,
}

/// The opening every traffic-shifting strategy shares, in Flagger's order: the
/// confirm-rollout gate, deploy the candidate, wait for both slots to be ready
/// (`*ReadyThreshold` percent), then the pre-rollout hooks (a failure counts).
pub fn rollout_preamble(canary_ready_threshold: u8, primary_ready_threshold: u8) -> Vec<Op> {
    vec![
        Op::Hook {
            phase: crate::types::HookPhase::ConfirmRollout,
            on_fail: HookFailure::Gate,
        },
        Op::Deploy,
        Op::AwaitReady {
            slot: crate::types::Slot::Candidate,
            percent: canary_ready_threshold,
            min_ready: 0,
        },
        Op::AwaitReady {
            slot: crate::types::Slot::Stable,
            percent: primary_ready_threshold,
            min_ready: 0,
        },
        Op::Hook {
            phase: crate::types::HookPhase::PreRollout,
            on_fail: HookFailure::Count,
        },
    ]
}

/// A replica count for `Scale`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Replicas {
    Count(u32),
    /// Percent of the stable slot's desired replicas (learnt from its last status), rounded up.
    PercentOfStable(u8),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    /// `deploy-candidate`.
    Deploy,
    /// `check-status(slot)` until `ready * 100 >= percent * desired` and `ready >= min_ready`,
    /// polling every `poll_ms`; not ready by `deadline_ms` (elapsed since start) => rollback.
    AwaitReady {
        slot: Slot,
        percent: u8,
        min_ready: u32,
    },
    Hook {
        phase: HookPhase,
        on_fail: HookFailure,
    },
    SetTraffic(TrafficSplit),
    /// `scale(slot, n)`.
    Scale {
        slot: Slot,
        to: Replicas,
    },
    Wait {
        ms: u64,
        why: String,
    },
    /// `wait(wait_ms)` then `analyze(window_ms)`; a failure retries both.
    Analysis {
        wait_ms: u64,
        window_ms: u64,
        label: String,
    },
    /// `await-approval(message)`: approve continues, abort rolls back.
    Approval(String),
    Promote,
}

impl Op {
    pub fn describe(&self) -> String {
        match self {
            Op::Deploy => "deploy candidate".into(),
            Op::AwaitReady {
                slot,
                percent,
                min_ready,
            } => {
                let slot = slot_name(*slot);
                if *min_ready > 0 {
                    format!("wait until {min_ready} {slot} replicas are ready")
                } else {
                    format!("wait until {percent}% of {slot} replicas are ready")
                }
            }
            Op::Hook { phase, .. } => format!("run {} hooks", phase.as_str()),
            Op::SetTraffic(t) => describe_traffic(t),
            Op::Scale { slot, to } => match to {
                Replicas::Count(n) => format!("scale {} to {n}", slot_name(*slot)),
                Replicas::PercentOfStable(p) => {
                    format!("scale {} to {p}% of stable replicas", slot_name(*slot))
                }
            },
            Op::Wait { ms, why } => format!("wait {} ({why})", format_ms(*ms)),
            Op::Analysis {
                wait_ms,
                window_ms,
                label,
            } => {
                format!(
                    "after {}: analyze {} ({label})",
                    format_ms(*wait_ms),
                    format_ms(*window_ms)
                )
            }
            Op::Approval(m) => format!("await approval: {m}"),
            Op::Promote => "promote candidate".into(),
        }
    }
}

pub fn slot_name(s: Slot) -> &'static str {
    match s {
        Slot::Stable => "stable",
        Slot::Candidate => "candidate",
    }
}

pub fn describe_traffic(t: &TrafficSplit) -> String {
    let mut s = format!("set candidate weight {}", t.candidate_weight);
    if !t.matches.is_empty() {
        s.push_str(&format!(
            " + {} request match(es) to candidate",
            t.matches.len()
        ));
    }
    if t.mirror_percent > 0 {
        s.push_str(&format!(", mirror {}%", t.mirror_percent));
    }
    s
}

/// Settings of the interpreter that come from the params.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// Failed checks that trigger a rollback (`failedChecks >= threshold`).
    pub threshold: u32,
    /// Wait before retrying a gate hook or a counted hook failure.
    pub retry_ms: u64,
    /// Wait between readiness polls.
    pub poll_ms: u64,
    /// Readiness must be reached before this much time since the rollout started.
    pub deadline_ms: Option<u64>,
    pub compare_baseline: bool,
    pub scores: ScoreThresholds,
    pub pause_on_inconclusive: bool,
}

/// What a program may depend on beyond the params: learnt during the run and persisted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ctx {
    /// Desired replicas of the stable slot, from its first status.
    pub stable_desired: Option<u32>,
}

/// A strategy as a program over [`Op`]s.
pub trait Spec {
    type Params;
    /// Parse and validate the params (errors name the field).
    fn parse(params: &str) -> Result<Self::Params, Error>;
    fn config(p: &Self::Params) -> Config;
    /// The program. It may grow once `ctx` learns something, but its prefix up to the op
    /// that learnt it must not change.
    fn program(p: &Self::Params, ctx: &Ctx) -> Vec<Op>;
    /// Override the plan derived from the program (e.g. when it depends on `ctx`).
    fn plan(_p: &Self::Params) -> Option<Plan> {
        None
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Sub {
    /// The op's main step was emitted.
    Main,
    /// A wait before retrying / polling / analysing was emitted.
    Waiting,
    /// An approval for an inconclusive analysis was emitted.
    Inconclusive,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum RollbackStage {
    RestoreStable,
    ResetTraffic,
    Rollback,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
enum Mode {
    Run,
    RollingBack {
        reason: String,
        stage: RollbackStage,
    },
    Finished,
}

/// The state blob (JSON).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunState {
    pc: usize,
    sub: Sub,
    mode: Mode,
    /// Flagger's `failedChecks`.
    failed_checks: u32,
    /// Analyses passed so far (for notes).
    passed: u32,
    /// The traffic split last asked for.
    traffic: TrafficSplit,
    /// Stable replicas before we first scaled stable down, to restore on rollback.
    stable_restore: Option<u32>,
    ctx: Ctx,
    promoted: bool,
    /// Set when the stable replica count could not be restored during a rollback: the
    /// rollout then ends `failed` so the operator looks at it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    rollback_problem: Option<String>,
}

enum Action {
    Emit(Step, String),
    Advance(String),
    Rollback(String),
}

fn invalid(msg: String) -> Error {
    Error::InvalidInput(msg)
}

/// Outline the rollout without running it.
pub fn describe_plan<S: Spec>(params: &str) -> Result<Plan, Error> {
    let p = S::parse(params)?;
    if let Some(plan) = S::plan(&p) {
        return Ok(plan);
    }
    Ok(plan_of(&S::program(&p, &Ctx::default()), &S::config(&p)))
}

/// Plan math: best case = every wait and analysis interval once (readiness and hooks assumed
/// instant); worst-case rollback = time to the first analysis plus `threshold` analyses.
pub fn plan_of(program: &[Op], cfg: &Config) -> Plan {
    let mut best = 0u64;
    let mut before_first: Option<u64> = None;
    let mut first_wait = 0u64;
    for op in program {
        match op {
            Op::Wait { ms, .. } => best += ms,
            Op::Analysis { wait_ms, .. } => {
                if before_first.is_none() {
                    before_first = Some(best);
                    first_wait = if *wait_ms > 0 { *wait_ms } else { cfg.retry_ms };
                }
                best += wait_ms;
            }
            _ => {}
        }
    }
    let worst = before_first
        .map(|b| b + first_wait * cfg.threshold as u64)
        .unwrap_or(0);
    let mut steps: Vec<String> = program.iter().map(Op::describe).collect();
    steps.push("finish (promoted)".into());
    Plan {
        steps,
        best_case_ms: best,
        worst_case_rollback_ms: worst,
    }
}

/// Validate params for `validate-config`: every problem as (field, message).
pub fn validate<S: Spec>(params: &str) -> Vec<(String, String)> {
    match S::parse(params) {
        Ok(_) => Vec::new(),
        Err(e) => vec![(String::new(), e.to_string())],
    }
}

pub fn start<S: Spec>(params: &str) -> Result<Decision, Error> {
    let p = S::parse(params)?;
    let cfg = S::config(&p);
    let mut st = RunState {
        pc: 0,
        sub: Sub::Main,
        mode: Mode::Run,
        failed_checks: 0,
        passed: 0,
        traffic: TrafficSplit::default(),
        stable_restore: None,
        ctx: Ctx::default(),
        promoted: false,
        rollback_problem: None,
    };
    let program = S::program(&p, &st.ctx);
    let (step, note) = enter(&mut st, &program, &cfg, "start".into());
    Ok(Decision {
        next: step,
        state: encode_state(&st),
        note,
    })
}

pub fn next<S: Spec>(params: &str, state: &[u8], obs: &Observation) -> Result<Decision, Error> {
    let p = S::parse(params)?;
    let cfg = S::config(&p);
    let mut st: RunState = decode_state(state)?;
    let (step, note) = match st.mode.clone() {
        Mode::Finished => {
            return Err(invalid(
                "the rollout already finished; `next` must not be called again".into(),
            ))
        }
        Mode::RollingBack { reason, stage } => rollback_next(&mut st, reason, stage, &obs.last),
        Mode::Run => {
            let program = S::program(&p, &st.ctx);
            let op = program.get(st.pc).ok_or_else(|| {
                invalid(format!(
                    "state points at step {} but the program has {}; did the params change?",
                    st.pc,
                    program.len()
                ))
            })?;
            match on_outcome(&mut st, op, &cfg, obs)? {
                Action::Emit(step, note) => (step, note),
                Action::Rollback(reason) => begin_rollback(&mut st, reason),
                Action::Advance(note) => {
                    st.pc += 1;
                    // The program may have grown from what this op learnt.
                    let program = S::program(&p, &st.ctx);
                    enter(&mut st, &program, &cfg, note)
                }
            }
        }
    };
    if matches!(step, Step::Finish(_)) {
        st.mode = Mode::Finished;
    }
    Ok(Decision {
        next: step,
        state: encode_state(&st),
        note,
    })
}

/// Emit the first step of the op at `st.pc` (or finish when the program is done).
fn enter(st: &mut RunState, program: &[Op], cfg: &Config, prior: String) -> (Step, String) {
    st.sub = Sub::Main;
    let Some(op) = program.get(st.pc) else {
        st.mode = Mode::Finished;
        return (
            Step::Finish(FinalStatus::Promoted),
            join(prior, "rollout complete: promoted"),
        );
    };
    let step = match op {
        Op::Deploy => Step::DeployCandidate,
        Op::AwaitReady { slot, .. } => Step::CheckStatus(*slot),
        Op::Hook { phase, .. } => Step::RunHooks(*phase),
        Op::SetTraffic(t) => {
            st.traffic = t.clone();
            Step::SetTraffic(t.clone())
        }
        Op::Scale { slot, to } => {
            let n = match to {
                Replicas::Count(n) => *n,
                Replicas::PercentOfStable(p) => {
                    let base = st.ctx.stable_desired.unwrap_or(1).max(1);
                    ((base as u64 * *p as u64).div_ceil(100)).max(1) as u32
                }
            };
            if *slot == Slot::Stable && st.stable_restore.is_none() {
                st.stable_restore = Some(st.ctx.stable_desired.unwrap_or(n));
            }
            Step::Scale(*slot, n)
        }
        Op::Wait { ms, .. } => Step::Wait(*ms),
        Op::Analysis {
            wait_ms, window_ms, ..
        } => {
            if *wait_ms > 0 {
                st.sub = Sub::Waiting;
                Step::Wait(*wait_ms)
            } else {
                Step::Analyze(AnalysisRequest {
                    window_ms: *window_ms,
                    compare_baseline: cfg.compare_baseline,
                })
            }
        }
        Op::Approval(m) => Step::AwaitApproval(m.clone()),
        Op::Promote => Step::Promote,
    };
    (step, join(prior, &op.describe()))
}

fn join(prior: String, next: &str) -> String {
    if prior.is_empty() {
        next.to_string()
    } else {
        format!("{prior}; next: {next}")
    }
}

fn unexpected(op: &Op, got: &Outcome) -> Error {
    let got = match got {
        Outcome::Started => "started",
        Outcome::Done => "done",
        Outcome::TargetStatus(_) => "target-status",
        Outcome::Analysis(_) => "analysis",
        Outcome::Hooks(_) => "hooks",
        Outcome::Approval(_) => "approval",
        Outcome::Failed(_) => "failed",
    };
    invalid(format!(
        "unexpected outcome `{got}` for step `{}`",
        op.describe()
    ))
}

fn on_outcome(
    st: &mut RunState,
    op: &Op,
    cfg: &Config,
    obs: &Observation,
) -> Result<Action, Error> {
    let last = &obs.last;
    if let Outcome::Failed(why) = last {
        // A hook step that errored is a hook failure, not a target failure.
        if let Op::Hook { phase, on_fail } = op {
            if st.sub == Sub::Main {
                return Ok(hook_failed(st, *phase, *on_fail, cfg, why));
            }
        }
        return Ok(Action::Rollback(format!("{} failed: {why}", op.describe())));
    }
    if matches!(last, Outcome::Started) {
        return Err(unexpected(op, last));
    }
    let action = match (op, st.sub, last) {
        (Op::Deploy, Sub::Main, Outcome::TargetStatus(_) | Outcome::Done) => {
            Action::Advance("candidate deployed".into())
        }
        (
            Op::AwaitReady {
                slot,
                percent,
                min_ready,
            },
            Sub::Main,
            Outcome::TargetStatus(s),
        ) => {
            if *slot == Slot::Stable && st.ctx.stable_desired.is_none() {
                st.ctx.stable_desired = Some(s.desired);
            }
            let ready =
                s.ready as u64 * 100 >= *percent as u64 * s.desired as u64 && s.ready >= *min_ready;
            let what = format!("{} {}/{} ready", slot_name(*slot), s.ready, s.desired);
            if ready {
                Action::Advance(what)
            } else if cfg.deadline_ms.is_some_and(|d| obs.elapsed_ms >= d) {
                Action::Rollback(format!(
                    "progress deadline {} exceeded: {what}, need {percent}%",
                    format_ms(cfg.deadline_ms.unwrap_or(0))
                ))
            } else {
                st.sub = Sub::Waiting;
                Action::Emit(
                    Step::Wait(cfg.poll_ms),
                    format!("{what}; polling again in {}", format_ms(cfg.poll_ms)),
                )
            }
        }
        (Op::AwaitReady { slot, .. }, Sub::Waiting, Outcome::Done) => {
            st.sub = Sub::Main;
            Action::Emit(
                Step::CheckStatus(*slot),
                format!("check {} status", slot_name(*slot)),
            )
        }
        (Op::Hook { phase, on_fail }, Sub::Main, Outcome::Hooks(ok)) => {
            if *ok {
                Action::Advance(format!("{} hooks passed", phase.as_str()))
            } else {
                hook_failed(
                    st,
                    *phase,
                    *on_fail,
                    cfg,
                    "a webhook did not answer 2xx in time",
                )
            }
        }
        (Op::Hook { phase, .. }, Sub::Waiting, Outcome::Done) => {
            st.sub = Sub::Main;
            Action::Emit(
                Step::RunHooks(*phase),
                format!("retry {} hooks", phase.as_str()),
            )
        }
        (Op::SetTraffic(t), Sub::Main, Outcome::Done) => {
            Action::Advance(format!("traffic: candidate {}%", t.candidate_weight))
        }
        (Op::Scale { slot, .. }, Sub::Main, Outcome::TargetStatus(_) | Outcome::Done) => {
            Action::Advance(format!("{} scaled", slot_name(*slot)))
        }
        (Op::Wait { .. }, Sub::Main, Outcome::Done) => Action::Advance(String::new()),
        (Op::Analysis { window_ms, .. }, Sub::Waiting, Outcome::Done) => {
            st.sub = Sub::Main;
            Action::Emit(
                Step::Analyze(AnalysisRequest {
                    window_ms: *window_ms,
                    compare_baseline: cfg.compare_baseline,
                }),
                format!("analyze {}", format_ms(*window_ms)),
            )
        }
        (
            Op::Analysis {
                wait_ms,
                window_ms,
                label,
            },
            Sub::Main,
            Outcome::Analysis(a),
        ) => match classify(a, cfg.compare_baseline, &cfg.scores) {
            Verdict::Pass(why) => {
                st.passed += 1;
                Action::Advance(format!("analysis passed ({label}): {why}"))
            }
            Verdict::Inconclusive(why) if cfg.pause_on_inconclusive => {
                st.sub = Sub::Inconclusive;
                Action::Emit(
                        Step::AwaitApproval(format!("analysis inconclusive ({label}): {why}; promote to continue, abort to roll back")),
                        format!("analysis inconclusive ({label}): waiting for an operator"),
                    )
            }
            Verdict::Fail(why) | Verdict::Inconclusive(why) => {
                st.failed_checks += 1;
                if st.failed_checks >= cfg.threshold {
                    Action::Rollback(format!(
                        "analysis failed ({label}): {why}; failed checks {} >= threshold {}",
                        st.failed_checks, cfg.threshold
                    ))
                } else {
                    let wait = if *wait_ms > 0 { *wait_ms } else { cfg.retry_ms };
                    if wait > 0 {
                        st.sub = Sub::Waiting;
                        Action::Emit(
                            Step::Wait(wait),
                            format!(
                                "analysis failed ({label}): {why}; failed checks {}/{}",
                                st.failed_checks, cfg.threshold
                            ),
                        )
                    } else {
                        Action::Emit(
                            Step::Analyze(AnalysisRequest {
                                window_ms: *window_ms,
                                compare_baseline: cfg.compare_baseline,
                            }),
                            format!(
                                "analysis failed ({label}): {why}; failed checks {}/{}",
                                st.failed_checks, cfg.threshold
                            ),
                        )
                    }
                }
            }
        },
        (Op::Analysis { label, .. }, Sub::Inconclusive, Outcome::Approval(ok)) => {
            if *ok {
                st.passed += 1;
                Action::Advance(format!(
                    "inconclusive analysis ({label}) approved by operator"
                ))
            } else {
                Action::Rollback(format!(
                    "inconclusive analysis ({label}) rejected by operator"
                ))
            }
        }
        (Op::Approval(m), Sub::Main, Outcome::Approval(ok)) => {
            if *ok {
                Action::Advance(format!("approved: {m}"))
            } else {
                Action::Rollback(format!("aborted by operator at: {m}"))
            }
        }
        (Op::Promote, Sub::Main, Outcome::Done) => {
            st.promoted = true;
            Action::Advance("candidate promoted".into())
        }
        _ => return Err(unexpected(op, last)),
    };
    Ok(action)
}

fn hook_failed(
    st: &mut RunState,
    phase: HookPhase,
    on_fail: HookFailure,
    cfg: &Config,
    why: &str,
) -> Action {
    let name = phase.as_str();
    match on_fail {
        HookFailure::Ignore => Action::Advance(format!("{name} hooks failed ({why}); ignored")),
        HookFailure::Gate => {
            st.sub = Sub::Waiting;
            Action::Emit(
                Step::Wait(cfg.retry_ms),
                format!(
                    "{name} gate closed ({why}); retrying in {}",
                    format_ms(cfg.retry_ms)
                ),
            )
        }
        HookFailure::Count => {
            st.failed_checks += 1;
            if st.failed_checks >= cfg.threshold {
                Action::Rollback(format!(
                    "{name} hooks failed ({why}); failed checks {} >= threshold {}",
                    st.failed_checks, cfg.threshold
                ))
            } else {
                st.sub = Sub::Waiting;
                Action::Emit(
                    Step::Wait(cfg.retry_ms),
                    format!(
                        "{name} hooks failed ({why}); failed checks {}/{}",
                        st.failed_checks, cfg.threshold
                    ),
                )
            }
        }
    }
}

fn begin_rollback(st: &mut RunState, reason: String) -> (Step, String) {
    if st.promoted {
        // Nothing to roll back to once the candidate is the stable version.
        st.mode = Mode::Finished;
        return (
            Step::Finish(FinalStatus::Failed),
            format!("failed after promotion: {reason}"),
        );
    }
    let note = format!("rolling back: {reason}");
    let stage = if st.stable_restore.is_some() {
        RollbackStage::RestoreStable
    } else if st.traffic != TrafficSplit::default() {
        RollbackStage::ResetTraffic
    } else {
        RollbackStage::Rollback
    };
    let step = rollback_stage_step(st, &reason, stage);
    st.mode = Mode::RollingBack { reason, stage };
    (step, note)
}

fn rollback_stage_step(st: &mut RunState, reason: &str, stage: RollbackStage) -> Step {
    match stage {
        RollbackStage::RestoreStable => Step::Scale(Slot::Stable, st.stable_restore.unwrap_or(1)),
        RollbackStage::ResetTraffic => {
            st.traffic = TrafficSplit::default();
            Step::SetTraffic(TrafficSplit::default())
        }
        RollbackStage::Rollback => Step::Rollback(reason.to_string()),
    }
}

fn rollback_next(
    st: &mut RunState,
    reason: String,
    stage: RollbackStage,
    last: &Outcome,
) -> (Step, String) {
    // Failures of the preparatory stages do not stop the rollback: the `rollback` step
    // itself returns all traffic to stable.
    let after = |st: &mut RunState, stage: RollbackStage| -> Option<RollbackStage> {
        match stage {
            RollbackStage::RestoreStable if st.traffic != TrafficSplit::default() => {
                Some(RollbackStage::ResetTraffic)
            }
            RollbackStage::RestoreStable | RollbackStage::ResetTraffic => {
                Some(RollbackStage::Rollback)
            }
            RollbackStage::Rollback => None,
        }
    };
    let prior = match last {
        Outcome::Failed(e) => {
            if stage == RollbackStage::RestoreStable {
                st.rollback_problem = Some(format!("stable replicas not restored: {e}"));
            }
            format!("rollback step failed: {e}")
        }
        _ => String::new(),
    };
    match after(st, stage) {
        Some(next_stage) => {
            let step = rollback_stage_step(st, &reason, next_stage);
            st.mode = Mode::RollingBack {
                reason: reason.clone(),
                stage: next_stage,
            };
            (step, join(prior, &format!("rolling back: {reason}")))
        }
        None => {
            st.mode = Mode::Finished;
            if let Some(problem) = st.rollback_problem.clone() {
                (
                    Step::Finish(FinalStatus::Failed),
                    format!("rolled back with a problem ({problem}): {reason}"),
                )
            } else if let Outcome::Failed(e) = last {
                (
                    Step::Finish(FinalStatus::Failed),
                    format!("rollback failed: {e}"),
                )
            } else {
                (
                    Step::Finish(FinalStatus::RolledBack),
                    format!("rolled back: {reason}"),
                )
            }
        }
    }
}
