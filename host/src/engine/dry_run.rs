//! A dry run of the strategy before anything runs, so that a target whose router cannot
//! follow a strategy is refused by `dax validate` (and by `dax deploy` before its first
//! step) instead of failing mid-rollout.
//!
//! ```text
//! target.traffic_support(config)          the only call that reaches the target plugin
//! strategy.start / next against a simulated rollout, every answer through the engine's own
//! rules (decide::before_strategy, decide::vet) on a Ledger, as in a real run:
//!   deploy-candidate / check-status / scale   ready = desired (the workload's replicas,
//!                                             or the replicas scaled to)
//!   analyze                                   every [[checks]] entry passes (score 100 when
//!                                             a baseline is asked); in a second run every
//!                                             analysis fails, so rollback paths count too
//!   run-hooks / await-approval                yes
//!   wait / set-traffic / promote / rollback   done (a wait moves the rollout clock)
//! each set-traffic that would be sent ─ what it needs (Need) ─ compared with the support
//! ```
//!
//! Bounded whatever the strategy does: each call within the plugin's own limits (CPU and
//! wall time, output size with the state blob), each run within `max_steps` decisions (the
//! engine's step limit), all runs together within [`MAX_CALLS`] strategy calls and
//! [`MAX_TIME`]. Only the first step that needs each feature is kept, so memory does not
//! grow with the number of steps.

use super::decide::{self, EngineStep, Moment, Next, Policy, Vetted};
use super::ledger::Ledger;
use super::resolve::ResolvedSet;
use crate::config::{DeploymentConfig, LoadedConfig, Problem};
use crate::contract::{
    AnalysisOutcome, CheckResult, CheckVerdict, MatchSource, Observation, Outcome, Slot,
    StatusOutcome, Step, Strategy, TrafficSplit, TrafficSupport,
};
use crate::plugin::capabilities::log;
use crate::state::{DecidedBy, Event, Record};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Most strategy calls of one dry run (both simulated rollouts together).
pub const MAX_CALLS: u64 = 4_000;
/// Longest a dry run may take (each call is also bounded by the plugin's own deadlines).
pub const MAX_TIME: Duration = Duration::from_secs(20);
/// Longest text kept from a plugin (a match name, a target's note) in a message.
const MAX_SHOWN_BYTES: usize = 200;

/// Which simulated rollout a step was seen in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    ChecksPass,
    ChecksFail,
}

impl Scenario {
    fn describe(self) -> &'static str {
        match self {
            Scenario::ChecksPass => "a rollout where every check passes",
            Scenario::ChecksFail => "a rollout whose checks fail",
        }
    }
}

/// What a traffic split asks of the target's router (the fields of `traffic-support`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Need {
    /// A candidate weight strictly between 0 and 100.
    Weights,
    HeaderMatches,
    CookieMatches,
    /// A mirror percent above 0.
    Mirroring,
}

impl Need {
    /// What `split` needs, in a fixed order.
    pub fn of(split: &TrafficSplit) -> Vec<Need> {
        let mut needs = Vec::new();
        if split.candidate_weight > 0 && split.candidate_weight < 100 {
            needs.push(Need::Weights);
        }
        let source = |s: MatchSource| split.matches.iter().any(|m| m.source == s);
        if source(MatchSource::Header) {
            needs.push(Need::HeaderMatches);
        }
        if source(MatchSource::Cookie) {
            needs.push(Need::CookieMatches);
        }
        if split.mirror_percent > 0 {
            needs.push(Need::Mirroring);
        }
        needs
    }

    pub fn supported_by(self, s: &TrafficSupport) -> bool {
        match self {
            Need::Weights => s.weights,
            Need::HeaderMatches => s.header_matches,
            Need::CookieMatches => s.cookie_matches,
            Need::Mirroring => s.mirroring,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Need::Weights => "weights between 0 and 100",
            Need::HeaderMatches => "header matches",
            Need::CookieMatches => "cookie matches",
            Need::Mirroring => "mirroring",
        }
    }
}

/// The first step that needs a feature, and how many steps need it in all.
#[derive(Debug, Clone, PartialEq)]
pub struct FirstUse {
    pub scenario: Scenario,
    /// The decision number, as the journal would number it.
    pub n: u64,
    /// The step, as the timeline shows it, with the names of its matches.
    pub step: String,
    /// Steps of that same simulated rollout that need it.
    pub count: u64,
}

/// The engine stepped in during a dry run (a real run would journal it as `by: engine`).
#[derive(Debug, Clone, PartialEq)]
pub struct Intervention {
    pub scenario: Scenario,
    pub n: u64,
    pub why: String,
}

/// What the strategy would do, as far as the target's router is concerned.
#[derive(Debug, Clone, Default)]
pub struct DryRun {
    pub needs: BTreeMap<Need, FirstUse>,
    pub interventions: Vec<Intervention>,
    /// Why the dry run stopped before its rollouts finished (call or time budget).
    pub cut_short: Option<String>,
    /// Strategy calls made.
    pub calls: u64,
}

/// Run the strategy against simulated rollouts (see the module docs). Calls nothing but
/// the strategy.
pub async fn dry_run(strategy: &dyn Strategy, cfg: &DeploymentConfig) -> DryRun {
    let mut out = DryRun::default();
    let started = Instant::now();
    let analyzed = simulate(strategy, cfg, Scenario::ChecksPass, started, &mut out).await;
    // Failing checks change nothing unless the strategy analyzes and checks exist.
    if analyzed && !cfg.checks.is_empty() && out.cut_short.is_none() {
        simulate(strategy, cfg, Scenario::ChecksFail, started, &mut out).await;
    }
    out
}

/// The simulated target: replicas per slot and the rollout clock.
struct World {
    stable: u32,
    candidate: u32,
    elapsed_ms: u64,
}

impl World {
    fn status(&self, which: Slot) -> Outcome {
        let n = match which {
            Slot::Stable => self.stable,
            Slot::Candidate => self.candidate,
        };
        Outcome::TargetStatus(StatusOutcome {
            which,
            desired: n,
            ready: n,
            updated: n,
        })
    }

    /// Carry out `step` and say how it went.
    fn execute(&mut self, step: &Step, cfg: &DeploymentConfig, scenario: Scenario) -> Outcome {
        match step {
            Step::DeployCandidate => {
                self.candidate = cfg.replicas();
                self.status(Slot::Candidate)
            }
            Step::Scale(slot, n) => {
                match slot {
                    Slot::Stable => self.stable = *n,
                    Slot::Candidate => self.candidate = *n,
                }
                self.status(*slot)
            }
            Step::CheckStatus(slot) => self.status(*slot),
            Step::Analyze(req) => {
                let pass = scenario == Scenario::ChecksPass;
                let verdict = if pass {
                    CheckVerdict::Pass
                } else {
                    CheckVerdict::Fail
                };
                Outcome::Analysis(AnalysisOutcome {
                    checks: cfg
                        .checks
                        .iter()
                        .map(|c| CheckResult {
                            name: c.name.clone(),
                            verdict,
                            value: None,
                            detail: "dry run".into(),
                        })
                        .collect(),
                    score: req
                        .compare_baseline
                        .then_some(if pass { 100.0 } else { 0.0 }),
                })
            }
            Step::RunHooks(_) => Outcome::Hooks(true),
            Step::AwaitApproval(_) => Outcome::Approval(true),
            Step::Wait(ms) => {
                self.elapsed_ms = self.elapsed_ms.saturating_add(*ms);
                Outcome::Done
            }
            Step::Promote => {
                self.stable = self.stable.max(self.candidate);
                self.candidate = 0;
                Outcome::Done
            }
            Step::Rollback(_) => {
                self.candidate = 0;
                Outcome::Done
            }
            Step::SetTraffic(_) | Step::Finish(_) => Outcome::Done,
        }
    }
}

/// One simulated rollout, until a finish or the budget. Returns whether it analyzed.
async fn simulate(
    strategy: &dyn Strategy,
    cfg: &DeploymentConfig,
    scenario: Scenario,
    started: Instant,
    out: &mut DryRun,
) -> bool {
    let policy = Policy::of(cfg);
    let mut world = World {
        stable: cfg.replicas(),
        candidate: 0,
        elapsed_ms: 0,
    };
    let mut ledger = Ledger::default();
    // The strategy's state blob, as the journal would keep it (an engine decision keeps it).
    let mut state: Vec<u8> = Vec::new();
    let mut analyzed = false;
    let mut seq = 0;
    let mut record = |ledger: &mut Ledger, elapsed_ms: u64, event: Event| {
        seq += 1;
        ledger.apply(&Record {
            seq,
            ts: chrono::Utc::now(),
            elapsed_ms,
            event,
        });
    };
    loop {
        let n = ledger.decisions + 1;
        let moment = Moment {
            elapsed_ms: world.elapsed_ms,
            abort_requested: false,
        };
        let decided = match decide::before_strategy(&ledger, &policy, moment) {
            Next::Engine(e) => {
                // An engine step that follows the engine's own decision (the finish after
                // its rollback) is part of the intervention already noted.
                if ledger.last.as_ref().map(|l| l.by) == Some(DecidedBy::Strategy) {
                    out.interventions.push(Intervention {
                        scenario,
                        n,
                        why: e.note.clone(),
                    });
                }
                e
            }
            Next::Strategy => {
                if out.calls >= MAX_CALLS {
                    out.cut_short = Some(format!(
                        "the strategy did not finish within {MAX_CALLS} calls"
                    ));
                    return analyzed;
                }
                if started.elapsed() >= MAX_TIME {
                    out.cut_short = Some(format!(
                        "the strategy did not finish within {}s ({} calls)",
                        MAX_TIME.as_secs(),
                        out.calls
                    ));
                    return analyzed;
                }
                out.calls += 1;
                let answer = match &ledger.last {
                    None => strategy.start().await,
                    Some(last) => {
                        let obs = Observation {
                            elapsed_ms: world.elapsed_ms,
                            last: last.outcome.clone().unwrap_or(Outcome::Started),
                        };
                        strategy.next(&state, &obs).await
                    }
                };
                let (e, why) = match answer {
                    Ok(d) => match decide::vet(d.next, &ledger, &policy) {
                        Vetted::Forward(step) => {
                            state = d.state;
                            let by = DecidedBy::Strategy;
                            let forward = EngineStep {
                                step,
                                note: d.note,
                                by,
                                ends_as: None,
                            };
                            (forward, None)
                        }
                        Vetted::Refused { why, instead } => (instead, Some(why)),
                    },
                    Err(e) => {
                        let why = format!("strategy error: {e}");
                        (EngineStep::stop(&ledger, why.clone(), None), Some(why))
                    }
                };
                if let Some(why) = why {
                    out.interventions.push(Intervention { scenario, n, why });
                }
                e
            }
        };
        let step = decided.step;
        record(
            &mut ledger,
            world.elapsed_ms,
            Event::Decision {
                n,
                step: step.clone(),
                state: String::new(),
                note: String::new(),
                by: decided.by,
                ends_as: decided.ends_as,
            },
        );
        if let Step::SetTraffic(split) = &step {
            for need in Need::of(split) {
                let first = out.needs.entry(need).or_insert_with(|| FirstUse {
                    scenario,
                    n,
                    step: describe_split(split),
                    count: 0,
                });
                if first.scenario == scenario {
                    first.count += 1;
                }
            }
        }
        if matches!(step, Step::Finish(_)) {
            return analyzed;
        }
        analyzed |= matches!(step, Step::Analyze(_));
        let outcome = world.execute(&step, cfg, scenario);
        record(
            &mut ledger,
            world.elapsed_ms,
            Event::Outcome {
                n,
                outcome,
                detail: String::new(),
            },
        );
    }
}

/// `set weight 0%, header "x-canary"`: the timeline's words plus the names matched on.
fn describe_split(split: &TrafficSplit) -> String {
    let mut parts = vec![format!("set weight {}%", split.candidate_weight)];
    for m in split.matches.iter().take(3) {
        let source = match m.source {
            MatchSource::Header => "header",
            MatchSource::Cookie => "cookie",
        };
        parts.push(format!("{source} \"{}\"", shown(&m.name)));
    }
    if split.matches.len() > 3 {
        parts.push(format!("{} more match rules", split.matches.len() - 3));
    }
    if split.mirror_percent > 0 {
        parts.push(format!("mirror {}%", split.mirror_percent));
    }
    parts.join(", ")
}

/// Plugin text fit for a one-line message: escaped and cut.
fn shown(text: &str) -> String {
    log::cut(&log::escape(text), MAX_SHOWN_BYTES).into_owned()
}

/// Whether the check before a deployment reports everything it finds (`dax validate`) or
/// only what must stop the deployment (`dax deploy`: traffic the target cannot carry out).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Validate,
    Deploy,
}

/// Ask the target what its router supports, dry-run the strategy, and report each feature
/// the strategy needs that the target lacks (and, for `dax validate`, a strategy that does
/// not finish on its own when every step succeeds).
pub async fn traffic_problems(cfg: &LoadedConfig, set: &ResolvedSet, mode: Mode) -> Vec<Problem> {
    let c = &cfg.config;
    let (target_name, strategy_name) = (&c.target.plugin, &c.strategy.plugin);
    let (Some(target), Some(strategy)) =
        (set.plugins.get(target_name), set.plugins.get(strategy_name))
    else {
        return Vec::new();
    };
    let target_label = format!("target `{target_name}` ({})", target.info().name);
    let support = match target
        .traffic_support(c.plugin_config(target_name), &cfg.base_dir)
        .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return vec![cfg.problem(
                "target.plugin",
                format!("{target_label} could not say which traffic splits it supports: {e}"),
                crate::plugin::fault_help(&e),
            )]
        }
        Err(e) => {
            return vec![cfg.problem(
                "target.plugin",
                format!(
                    "cannot start {target_label} to ask which traffic splits it supports: {e:#}"
                ),
                "",
            )]
        }
    };
    let lacks_something = [
        Need::Weights,
        Need::HeaderMatches,
        Need::CookieMatches,
        Need::Mirroring,
    ]
    .iter()
    .any(|n| !n.supported_by(&support));
    if mode == Mode::Deploy && !lacks_something {
        return Vec::new();
    }
    let strategy = match strategy.strategy(c.strategy_params()).await {
        Ok(s) => s,
        Err(e) => {
            return vec![cfg.problem(
                "strategy.plugin",
                format!("cannot start strategy plugin `{strategy_name}` for a dry run: {e:#}"),
                "",
            )]
        }
    };
    let run = dry_run(strategy.as_ref(), c).await;
    let mut problems = Vec::new();
    for (need, first) in &run.needs {
        if need.supported_by(&support) {
            continue;
        }
        let later = match first.count - 1 {
            0 => String::new(),
            1 => " and 1 later step".to_string(),
            more => format!(" and {more} later steps"),
        };
        let help = if support.note.trim().is_empty() {
            format!(
                "use a target (or router) that supports {}, or strategy params that do not need them",
                need.describe()
            )
        } else {
            format!("the target says: {}", shown(&support.note))
        };
        problems.push(cfg.problem(
            "strategy.plugin",
            format!(
                "strategy `{strategy_name}` needs {} at step {} of {} ({}){later}, which {target_label} does not support",
                need.describe(),
                first.n,
                first.scenario.describe(),
                first.step,
            ),
            help,
        ));
    }
    if mode == Mode::Validate {
        let help = "a strategy must finish on its own when every step succeeds: check its params (`dax plan` shows its steps) or use another strategy";
        for i in run
            .interventions
            .iter()
            .filter(|i| i.scenario == Scenario::ChecksPass)
        {
            // A planned wait is not progress, so a wait as long as the deadline ends the
            // rollout (e.g. blue-green's scaleDownDelay against a short progress_deadline).
            let help = if i.why.starts_with("progress deadline exceeded") {
                "raise `progress_deadline` in [deployment] above the strategy's longest wait, or shorten that wait in [strategy.params]"
            } else {
                help
            };
            problems.push(cfg.problem(
                "strategy.plugin",
                format!(
                    "dry run of strategy `{strategy_name}` ({}): the engine stepped in at step {}: {}",
                    i.scenario.describe(),
                    i.n,
                    i.why
                ),
                help,
            ));
        }
        if let Some(why) = &run.cut_short {
            problems.push(cfg.problem(
                "strategy.plugin",
                format!("dry run of strategy `{strategy_name}` stopped: {why}"),
                help,
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contract::{FinalStatus, RequestMatch, StringMatch};

    #[test]
    fn each_feature_a_split_needs() {
        let split = |w: u8, m: Vec<MatchSource>, mirror: u8| TrafficSplit {
            candidate_weight: w,
            matches: m
                .into_iter()
                .map(|source| RequestMatch {
                    source,
                    name: "x".into(),
                    value: StringMatch::Exact("y".into()),
                })
                .collect(),
            mirror_percent: mirror,
        };
        assert_eq!(Need::of(&split(0, vec![], 0)), vec![]);
        // All or nothing needs no weights.
        assert_eq!(Need::of(&split(100, vec![], 0)), vec![]);
        assert_eq!(Need::of(&split(20, vec![], 0)), vec![Need::Weights]);
        assert_eq!(
            Need::of(&split(0, vec![MatchSource::Cookie, MatchSource::Header], 0)),
            vec![Need::HeaderMatches, Need::CookieMatches]
        );
        assert_eq!(Need::of(&split(0, vec![], 100)), vec![Need::Mirroring]);
    }

    #[test]
    fn a_split_is_described_with_its_match_names_escaped() {
        let split = TrafficSplit {
            candidate_weight: 0,
            matches: vec![RequestMatch {
                source: MatchSource::Header,
                name: "x-canary\n\u{1b}[31m".into(),
                value: StringMatch::Exact("insider".into()),
            }],
            mirror_percent: 0,
        };
        assert_eq!(
            describe_split(&split),
            "set weight 0%, header \"x-canary\\n\\u{1b}[31m\""
        );
    }

    /// A strategy that sets 20% then finishes promoted without a promote: the engine's
    /// rule refuses the finish, and the dry run says so.
    struct Liar;

    #[async_trait::async_trait]
    impl Strategy for Liar {
        async fn describe_plan(&self) -> crate::contract::CallResult<crate::contract::Plan> {
            unreachable!()
        }
        async fn start(&self) -> crate::contract::CallResult<crate::contract::Decision> {
            Ok(crate::contract::Decision {
                next: Step::DeployCandidate,
                state: vec![0],
                note: String::new(),
            })
        }
        async fn next(
            &self,
            state: &[u8],
            _obs: &Observation,
        ) -> crate::contract::CallResult<crate::contract::Decision> {
            let next = match state {
                [0] => Step::SetTraffic(TrafficSplit {
                    candidate_weight: 20,
                    ..Default::default()
                }),
                _ => Step::Finish(FinalStatus::Promoted),
            };
            Ok(crate::contract::Decision {
                next,
                state: vec![1],
                note: String::new(),
            })
        }
    }

    #[tokio::test]
    async fn the_engine_rules_apply_in_a_dry_run() {
        let cfg = crate::config::parse(
            "[deployment]\napp = \"a\"\nversion = \"v2\"\n[target]\nplugin = \"t\"\n[strategy]\nplugin = \"s\"\n[plugins.t]\nsource = \"builtin:local\"\n[plugins.s]\nsource = \"builtin:canary\"\n",
            "d.toml",
            std::path::Path::new("."),
        )
        .unwrap();
        let run = dry_run(&Liar, &cfg.config).await;
        assert_eq!(run.calls, 3);
        assert_eq!(run.needs[&Need::Weights].n, 2);
        assert_eq!(run.needs[&Need::Weights].step, "set weight 20%");
        assert_eq!(run.interventions.len(), 1, "{:?}", run.interventions);
        assert_eq!(run.interventions[0].n, 3);
        assert!(
            run.interventions[0]
                .why
                .contains("finished as promoted, but no promote succeeded"),
            "{:?}",
            run.interventions
        );
        assert!(run.cut_short.is_none());
    }
}
