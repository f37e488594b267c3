//! # canary: Flagger-style progressive traffic shifting (plus Argo-style explicit steps)
//!
//! Params (`[strategy.params]`, camelCase like Flagger's `analysis` block):
//!
//! | param | default | meaning |
//! |---|---|---|
//! | `interval` | `"1m"` | time between weight increases; also each analysis window |
//! | `threshold` | `5` | failed checks before rollback: rolls back when `failedChecks >= threshold` (Flagger's `>=`) |
//! | `maxWeight` | `50` | last canary weight before promotion |
//! | `stepWeight` | `10` | weight increment |
//! | `stepWeights` | – | explicit weights instead of `stepWeight`/`maxWeight`, e.g. `[1, 5, 20, 50]` |
//! | `stepWeightPromotion` | – | after the analysis, shift the rest of the traffic in these increments (one per interval) before promoting |
//! | `canaryReadyThreshold` / `primaryReadyThreshold` | `100` | percent of desired replicas that must be ready |
//! | `progressDeadline` | `"10m"` | the candidate (and stable) must be ready this long after the start, else rollback |
//! | `skipAnalysis` | `false` | promote as soon as the candidate is ready |
//! | `compareBaseline` | `false` | ask the engine's statistical judge for a score at each analysis |
//! | `scoreThresholds` | `{pass = 95, marginal = 75}` | how the judge score is read |
//! | `pauseOnInconclusive` | `false` | a score between marginal and pass waits for `dax promote` / `dax abort` instead of counting as a failure |
//! | `preset` | – | CodeDeploy-style shift instead of the weight ladder: `"canary10-5m"` (10% analyzed for 5 min, then 100%), `"linear10-1m"` (+10% every minute, each step analyzed, until 100%), `"all-at-once"`; any percent and duration (`"canary20-30s"`) |
//! | `steps` | – | Argo Rollouts steps instead of the weight ladder: `{setWeight = 20}`, `{pause = {duration = "1m"}}`, `{pause = {}}` (waits for approval), `{analysis = {}}` (optional `interval`), `{setCanaryScale = {weight = 50}}` or `{replicas = 3}` |
//!
//! Flow (Flagger): `confirm-rollout` hooks (a gate, retried every interval) → deploy the
//! candidate → wait for candidate and stable readiness → `pre-rollout` hooks (a failure counts
//! as a failed check) → for each weight: `confirm-traffic-increase` gate, set the weight, wait
//! one interval, analyze that interval; a failed analysis (any check `fail`, `no-data` or
//! `error`) increments `failedChecks` and is retried after another interval at the same
//! weight; `failedChecks >= threshold` rolls back → `confirm-promotion` gate → promote →
//! `post-rollout` hooks (failures are noted, not fatal) → finish.
//!
//! Timing (Flagger's documented formulas, shown by `dax plan`): a passing rollout takes
//! `interval × ceil(maxWeight / stepWeight)` (`interval × len(stepWeights)`), a rollout whose
//! checks fail from the first analysis rolls back after `interval × threshold`.

use serde::Deserialize;
use strategy_kit::machine::{Config, Ctx, HookFailure, Op, Replicas, Spec};
use strategy_kit::params::{parse_params, Duration, ScoreThresholds};
use strategy_kit::types::{Error, HookPhase, Slot, TrafficSplit};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Params {
    #[serde(default = "default_interval")]
    pub interval: Duration,
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    pub max_weight: Option<u8>,
    pub step_weight: Option<u8>,
    pub step_weights: Option<Vec<u8>>,
    pub step_weight_promotion: Option<u8>,
    #[serde(default = "hundred")]
    pub primary_ready_threshold: u8,
    #[serde(default = "hundred")]
    pub canary_ready_threshold: u8,
    pub progress_deadline: Option<Duration>,
    #[serde(default)]
    pub skip_analysis: bool,
    #[serde(default)]
    pub pause_on_inconclusive: bool,
    #[serde(default)]
    pub compare_baseline: bool,
    #[serde(default)]
    pub score_thresholds: ScoreThresholds,
    pub steps: Option<Vec<ArgoStep>>,
    pub preset: Option<String>,
}

/// A CodeDeploy-style preset as Argo steps: `canaryP-D` sets P% and analyzes for D, then
/// shifts everything; `linearP-D` adds P% every D (each weight analyzed) until 100%;
/// `all-at-once` shifts everything. The steps end at weight 100, before promotion.
pub fn expand_preset(preset: &str) -> Result<Vec<ArgoStep>, String> {
    let help = "write \"canary10-5m\", \"linear10-1m\" or \"all-at-once\" (any percent 1..=99, any duration)";
    if preset == "all-at-once" {
        return Ok(vec![ArgoStep::SetWeight(100)]);
    }
    let (kind, rest) = if let Some(rest) = preset.strip_prefix("canary") {
        ("canary", rest)
    } else if let Some(rest) = preset.strip_prefix("linear") {
        ("linear", rest)
    } else {
        return Err(format!("preset: `{preset}` is unknown; {help}"));
    };
    let (percent, duration) = rest
        .split_once('-')
        .ok_or_else(|| format!("preset: `{preset}` has no duration; {help}"))?;
    let percent: u8 = percent
        .parse()
        .ok()
        .filter(|p| (1..=99).contains(p))
        .ok_or_else(|| {
            format!("preset: `{preset}`: `{percent}` is not a percent in 1..=99; {help}")
        })?;
    let ms = strategy_kit::params::parse_duration(duration)
        .map_err(|e| format!("preset: `{preset}`: {e}"))?;
    if ms == 0 {
        return Err(format!(
            "preset: `{preset}`: the duration must be longer than 0s"
        ));
    }
    let analysis = || {
        ArgoStep::Analysis(InlineAnalysis {
            interval: Some(Duration(ms)),
        })
    };
    let mut steps = Vec::new();
    let mut weight = 0u8;
    while weight < 100 {
        weight = match kind {
            "canary" if weight == 0 => percent,
            "canary" => 100,
            _ => weight.saturating_add(percent).min(100),
        };
        steps.push(ArgoStep::SetWeight(weight));
        if weight < 100 {
            steps.push(analysis());
        }
    }
    Ok(steps)
}

/// One Argo Rollouts canary step.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum ArgoStep {
    SetWeight(u8),
    Pause(Pause),
    Analysis(InlineAnalysis),
    SetCanaryScale(CanaryScale),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Pause {
    pub duration: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InlineAnalysis {
    /// The analysis window (and the wait before it); default: `interval`.
    pub interval: Option<Duration>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CanaryScale {
    pub weight: Option<u8>,
    pub replicas: Option<u32>,
}

fn default_interval() -> Duration {
    Duration(60_000)
}
fn default_threshold() -> u32 {
    5
}
fn hundred() -> u8 {
    100
}

const DEFAULT_DEADLINE_MS: u64 = 600_000;
const POLL_MS: u64 = 2_000;

impl Params {
    /// The weight ladder of the Flagger mode.
    pub fn weights(&self) -> Vec<u8> {
        if let Some(ws) = &self.step_weights {
            return ws.clone();
        }
        let max = self.max_weight.unwrap_or(50);
        let step = self.step_weight.unwrap_or(10).max(1);
        let mut out = Vec::new();
        let mut w = 0u8;
        while w < max {
            w = w.saturating_add(step).min(max);
            out.push(w);
        }
        out
    }

    pub fn max_weight(&self) -> u8 {
        match &self.step_weights {
            Some(ws) => ws.last().copied().unwrap_or(0),
            None => self.max_weight.unwrap_or(50),
        }
    }

    fn check(&self) -> Result<(), Error> {
        let bad = |m: String| Err(Error::InvalidConfig(m));
        if self.threshold == 0 {
            return bad(
                "threshold: must be at least 1 (rollback when failedChecks >= threshold)".into(),
            );
        }
        if self.interval.ms() == 0 {
            return bad("interval: must be longer than 0s".into());
        }
        if self.primary_ready_threshold > 100 || self.canary_ready_threshold > 100 {
            return bad("primaryReadyThreshold / canaryReadyThreshold: percent, 0..=100".into());
        }
        self.score_thresholds.check()?;
        if let Some(steps) = &self.steps {
            if self.step_weight.is_some()
                || self.step_weights.is_some()
                || self.max_weight.is_some()
            {
                return bad("steps: use either Argo-style `steps` or Flagger-style stepWeight/stepWeights/maxWeight, not both".into());
            }
            if steps.is_empty() {
                return bad(
                    "steps: empty list; add e.g. {setWeight = 20} or remove `steps`".into(),
                );
            }
            for (i, s) in steps.iter().enumerate() {
                match s {
                    ArgoStep::SetWeight(w) if *w > 100 => return bad(format!("steps[{i}].setWeight: {w} is over 100")),
                    ArgoStep::SetCanaryScale(c) => match (c.weight, c.replicas) {
                        (Some(w), None) if w <= 100 => {}
                        (None, Some(_)) => {}
                        _ => return bad(format!("steps[{i}].setCanaryScale: give exactly one of weight (0..=100) or replicas")),
                    },
                    _ => {}
                }
            }
            return Ok(());
        }
        if let Some(ws) = &self.step_weights {
            if self.step_weight.is_some() {
                return bad("stepWeights: give either stepWeights or stepWeight, not both".into());
            }
            if ws.is_empty() {
                return bad("stepWeights: empty list; give e.g. [5, 10, 25, 50]".into());
            }
            if ws.iter().any(|w| *w == 0 || *w > 100) || ws.windows(2).any(|p| p[0] >= p[1]) {
                return bad(format!(
                    "stepWeights: {ws:?} must be strictly increasing percents in 1..=100"
                ));
            }
            if let Some(max) = self.max_weight {
                if ws.last().copied().unwrap_or(0) > max {
                    return bad(format!("stepWeights: {ws:?} goes above maxWeight {max}"));
                }
            }
        } else {
            let max = self.max_weight.unwrap_or(50);
            let step = self.step_weight.unwrap_or(10);
            if max == 0 || max > 100 {
                return bad(format!("maxWeight: {max} must be in 1..=100"));
            }
            if step == 0 || step > max {
                return bad(format!(
                    "stepWeight: {step} must be in 1..=maxWeight ({max})"
                ));
            }
        }
        if let Some(p) = self.step_weight_promotion {
            if p == 0 || p > 100 {
                return bad(format!("stepWeightPromotion: {p} must be in 1..=100"));
            }
        }
        Ok(())
    }
}

pub struct Canary;

impl Spec for Canary {
    type Params = Params;

    fn parse(params: &str) -> Result<Params, Error> {
        let mut p: Params = parse_params(params)?;
        if let Some(preset) = p.preset.clone() {
            if p.steps.is_some()
                || p.step_weight.is_some()
                || p.step_weights.is_some()
                || p.max_weight.is_some()
                || p.step_weight_promotion.is_some()
                || p.skip_analysis
            {
                return Err(Error::InvalidConfig("preset: use either `preset` or steps/stepWeight/stepWeights/maxWeight/stepWeightPromotion/skipAnalysis, not both".into()));
            }
            p.steps = Some(expand_preset(&preset).map_err(Error::InvalidConfig)?);
        }
        p.check()?;
        Ok(p)
    }

    fn config(p: &Params) -> Config {
        Config {
            threshold: p.threshold,
            retry_ms: p.interval.ms(),
            poll_ms: POLL_MS.min(p.interval.ms()),
            deadline_ms: Some(
                p.progress_deadline
                    .map(|d| d.ms())
                    .unwrap_or(DEFAULT_DEADLINE_MS),
            ),
            compare_baseline: p.compare_baseline,
            scores: p.score_thresholds,
            pause_on_inconclusive: p.pause_on_inconclusive,
        }
    }

    fn program(p: &Params, _ctx: &Ctx) -> Vec<Op> {
        let interval = p.interval.ms();
        let mut ops = strategy_kit::machine::rollout_preamble(
            p.canary_ready_threshold,
            p.primary_ready_threshold,
        );
        let mut weight = 0u8;
        if let Some(steps) = &p.steps {
            for (i, s) in steps.iter().enumerate() {
                match s {
                    ArgoStep::SetWeight(w) => {
                        if *w > weight {
                            ops.push(Op::Hook { phase: HookPhase::ConfirmTrafficIncrease, on_fail: HookFailure::Gate });
                        }
                        weight = *w;
                        ops.push(Op::SetTraffic(TrafficSplit::weight(*w)));
                    }
                    ArgoStep::Pause(Pause { duration: Some(d) }) => {
                        ops.push(Op::Wait { ms: d.ms(), why: format!("steps[{i}] pause") })
                    }
                    ArgoStep::Pause(Pause { duration: None }) => ops.push(Op::Approval(format!(
                        "paused at steps[{i}] with candidate weight {weight}: promote to continue, abort to roll back"
                    ))),
                    ArgoStep::Analysis(a) => {
                        let d = a.interval.map(|d| d.ms()).unwrap_or(interval);
                        ops.push(Op::Analysis { wait_ms: d, window_ms: d, label: format!("steps[{i}] at weight {weight}") })
                    }
                    ArgoStep::SetCanaryScale(c) => {
                        let to = match (c.replicas, c.weight) {
                            (Some(n), _) => Replicas::Count(n),
                            (None, w) => Replicas::PercentOfStable(w.unwrap_or(100)),
                        };
                        ops.push(Op::Scale { slot: Slot::Candidate, to });
                        ops.push(Op::AwaitReady { slot: Slot::Candidate, percent: p.canary_ready_threshold, min_ready: 0 });
                    }
                }
            }
        } else if !p.skip_analysis {
            for w in p.weights() {
                ops.push(Op::Hook {
                    phase: HookPhase::ConfirmTrafficIncrease,
                    on_fail: HookFailure::Gate,
                });
                ops.push(Op::SetTraffic(TrafficSplit::weight(w)));
                ops.push(Op::Analysis {
                    wait_ms: interval,
                    window_ms: interval,
                    label: format!("weight {w}"),
                });
                weight = w;
            }
        }
        ops.push(Op::Hook {
            phase: HookPhase::ConfirmPromotion,
            on_fail: HookFailure::Gate,
        });
        if let (Some(step), None) = (p.step_weight_promotion, &p.steps) {
            let mut w = weight;
            while w < 100 {
                w = w.saturating_add(step).min(100);
                ops.push(Op::SetTraffic(TrafficSplit::weight(w)));
                ops.push(Op::Wait {
                    ms: interval,
                    why: format!("promotion at weight {w}"),
                });
            }
        }
        ops.push(Op::Promote);
        ops.push(Op::Hook {
            phase: HookPhase::PostRollout,
            on_fail: HookFailure::Ignore,
        });
        ops
    }
}

pub const SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false,"properties":{"interval":{"type":"string"},"threshold":{"type":"integer","minimum":1},"maxWeight":{"type":"integer","minimum":1,"maximum":100},"stepWeight":{"type":"integer","minimum":1,"maximum":100},"stepWeights":{"type":"array","items":{"type":"integer","minimum":1,"maximum":100}},"stepWeightPromotion":{"type":"integer","minimum":1,"maximum":100},"primaryReadyThreshold":{"type":"integer","minimum":0,"maximum":100},"canaryReadyThreshold":{"type":"integer","minimum":0,"maximum":100},"progressDeadline":{"type":"string"},"skipAnalysis":{"type":"boolean"},"pauseOnInconclusive":{"type":"boolean"},"compareBaseline":{"type":"boolean"},"scoreThresholds":{"type":"object","properties":{"pass":{"type":"number"},"marginal":{"type":"number"}}},"steps":{"type":"array","items":{"type":"object"}},"preset":{"type":"string"}}}"#;

strategy_kit::strategy_plugin!(
    Canary,
    "canary",
    "Flagger-style canary: progressive traffic shifting with metric analysis",
    SCHEMA
);

#[cfg(test)]
mod tests;
