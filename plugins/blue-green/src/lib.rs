//! # blue-green: deploy beside the old version, analyze, switch all traffic at once
//!
//! Params (`[strategy.params]`, camelCase after Flagger / Argo Rollouts):
//!
//! | param | default | meaning |
//! |---|---|---|
//! | `interval` | `"1m"` | length of each pre-/post-promotion analysis |
//! | `iterations` | `1` | passing pre-promotion analyses needed before the switch |
//! | `threshold` | `5` | rolls back when `failedChecks >= threshold` (Flagger's `>=`; counted over the whole rollout) |
//! | `mirror` | `false` | during pre-promotion analysis, copy live traffic to the candidate (where the target supports it) |
//! | `mirrorWeight` | `100` | percent of stable requests mirrored |
//! | `autoPromotionEnabled` | `true` | `false` waits for `dax promote` before switching |
//! | `postPromotionAnalysis` | – | `{iterations = 2, interval = "30s"}`: analyze after the switch; failure switches back automatically |
//! | `scaleDownDelay` | `"30s"` | keep the old version after the switch (fast switch-back) before promoting, which retires it |
//! | `canaryReadyThreshold` / `primaryReadyThreshold` | `100` | percent of replicas that must be ready |
//! | `progressDeadline` | `"10m"` | readiness deadline since the start |
//! | `compareBaseline`, `scoreThresholds`, `pauseOnInconclusive` | as in `canary` | statistical judge |
//!
//! Flow: `confirm-rollout` gate → deploy candidate (no traffic) → readiness → `pre-rollout`
//! hooks → [mirror on] → `iterations` × (wait interval, analyze) → [mirror off] →
//! [await approval] → `confirm-promotion` gate → set weight 100 → [post-promotion analyses;
//! a failure sets weight 0 and rolls back] → wait `scaleDownDelay` → promote → `post-rollout`.
//!
//! Plan: best case `interval × iterations` (+ post-promotion analyses + `scaleDownDelay`);
//! worst-case rollback `interval × threshold`.

use serde::Deserialize;
use strategy_kit::machine::{Config, Ctx, HookFailure, Op, Spec};
use strategy_kit::params::{parse_params, Duration, ScoreThresholds};
use strategy_kit::types::{Error, HookPhase, TrafficSplit};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Params {
    #[serde(default = "default_interval")]
    pub interval: Duration,
    #[serde(default = "one")]
    pub iterations: u32,
    #[serde(default = "default_threshold")]
    pub threshold: u32,
    #[serde(default)]
    pub mirror: bool,
    #[serde(default = "hundred")]
    pub mirror_weight: u8,
    #[serde(default = "yes")]
    pub auto_promotion_enabled: bool,
    pub post_promotion_analysis: Option<PostPromotion>,
    #[serde(default = "default_scale_down")]
    pub scale_down_delay: Duration,
    #[serde(default = "hundred")]
    pub primary_ready_threshold: u8,
    #[serde(default = "hundred")]
    pub canary_ready_threshold: u8,
    pub progress_deadline: Option<Duration>,
    #[serde(default)]
    pub pause_on_inconclusive: bool,
    #[serde(default)]
    pub compare_baseline: bool,
    #[serde(default)]
    pub score_thresholds: ScoreThresholds,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PostPromotion {
    #[serde(default = "one")]
    pub iterations: u32,
    pub interval: Option<Duration>,
}

fn default_interval() -> Duration {
    Duration(60_000)
}
fn default_scale_down() -> Duration {
    Duration(30_000)
}
fn default_threshold() -> u32 {
    5
}
fn one() -> u32 {
    1
}
fn hundred() -> u8 {
    100
}
fn yes() -> bool {
    true
}

pub struct BlueGreen;

impl Spec for BlueGreen {
    type Params = Params;

    fn parse(params: &str) -> Result<Params, Error> {
        let p: Params = parse_params(params)?;
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_string()));
        if p.threshold == 0 {
            return bad("threshold: must be at least 1 (rollback when failedChecks >= threshold)");
        }
        if p.interval.ms() == 0 {
            return bad("interval: must be longer than 0s");
        }
        if p.iterations == 0 {
            return bad("iterations: must be at least 1");
        }
        if p.mirror_weight == 0 || p.mirror_weight > 100 {
            return bad("mirrorWeight: percent in 1..=100");
        }
        if p.primary_ready_threshold > 100 || p.canary_ready_threshold > 100 {
            return bad("primaryReadyThreshold / canaryReadyThreshold: percent, 0..=100");
        }
        if p.post_promotion_analysis
            .as_ref()
            .is_some_and(|a| a.iterations == 0)
        {
            return bad("postPromotionAnalysis.iterations: must be at least 1 (or remove postPromotionAnalysis)");
        }
        p.score_thresholds.check()?;
        Ok(p)
    }

    fn config(p: &Params) -> Config {
        Config {
            threshold: p.threshold,
            retry_ms: p.interval.ms(),
            poll_ms: 2_000.min(p.interval.ms()),
            deadline_ms: Some(p.progress_deadline.map(|d| d.ms()).unwrap_or(600_000)),
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
        if p.mirror {
            ops.push(Op::SetTraffic(TrafficSplit {
                mirror_percent: p.mirror_weight,
                ..Default::default()
            }));
        }
        for i in 1..=p.iterations {
            ops.push(Op::Analysis {
                wait_ms: interval,
                window_ms: interval,
                label: format!("pre-promotion {i}/{}", p.iterations),
            });
        }
        if p.mirror {
            ops.push(Op::SetTraffic(TrafficSplit::default()));
        }
        if !p.auto_promotion_enabled {
            ops.push(Op::Approval(
                "pre-promotion analysis passed: switch all traffic to the candidate?".into(),
            ));
        }
        ops.push(Op::Hook {
            phase: HookPhase::ConfirmPromotion,
            on_fail: HookFailure::Gate,
        });
        ops.push(Op::SetTraffic(TrafficSplit::weight(100)));
        if let Some(post) = &p.post_promotion_analysis {
            let d = post.interval.map(|d| d.ms()).unwrap_or(interval);
            for i in 1..=post.iterations {
                ops.push(Op::Analysis {
                    wait_ms: d,
                    window_ms: d,
                    label: format!("post-promotion {i}/{}", post.iterations),
                });
            }
        }
        if p.scale_down_delay.ms() > 0 {
            ops.push(Op::Wait {
                ms: p.scale_down_delay.ms(),
                why: "scale-down delay: old version kept for a fast switch-back".into(),
            });
        }
        ops.push(Op::Promote);
        ops.push(Op::Hook {
            phase: HookPhase::PostRollout,
            on_fail: HookFailure::Ignore,
        });
        ops
    }
}

pub const SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false,"properties":{"interval":{"type":"string"},"iterations":{"type":"integer","minimum":1},"threshold":{"type":"integer","minimum":1},"mirror":{"type":"boolean"},"mirrorWeight":{"type":"integer","minimum":1,"maximum":100},"autoPromotionEnabled":{"type":"boolean"},"postPromotionAnalysis":{"type":"object","properties":{"iterations":{"type":"integer","minimum":1},"interval":{"type":"string"}}},"scaleDownDelay":{"type":"string"},"primaryReadyThreshold":{"type":"integer"},"canaryReadyThreshold":{"type":"integer"},"progressDeadline":{"type":"string"},"pauseOnInconclusive":{"type":"boolean"},"compareBaseline":{"type":"boolean"},"scoreThresholds":{"type":"object"}}}"#;

strategy_kit::strategy_plugin!(
    BlueGreen,
    "blue-green",
    "Blue-green: analyze the new version beside the old, then switch all traffic at once",
    SCHEMA
);

#[cfg(test)]
mod tests;
