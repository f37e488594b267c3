//! # rolling: replace the old version batch by batch, for targets without traffic splitting
//!
//! Params (`[strategy.params]`, after Kubernetes' RollingUpdate):
//!
//! | param | default | meaning |
//! |---|---|---|
//! | `maxSurge` | `"25%"` | replicas above the desired count during the update (count or percent, rounded up) |
//! | `maxUnavailable` | `"25%"` | replicas below the desired count (count or percent, rounded down); not both 0 |
//! | `replicas` | stable's desired | desired replica count (default: what the stable workload reports at start) |
//! | `interval` | `"0s"` | pause after each batch |
//! | `analysis` | `false` | analyze each `interval` pause; failures count toward `threshold` |
//! | `threshold` | `3` | rolls back when `failedChecks >= threshold` |
//! | `progressDeadline` | `"10m"` | every batch must be ready this long after the start |
//! | `compareBaseline`, `scoreThresholds`, `pauseOnInconclusive` | as in `canary` | statistical judge |
//!
//! Flow: `confirm-rollout` gate → read the stable replica count → `pre-rollout` hooks →
//! deploy the candidate → repeat { scale the candidate up as far as `maxSurge` allows and wait
//! until those replicas are ready; scale stable down as far as `maxUnavailable` allows;
//! [wait / analyze] } until the candidate has every replica → `confirm-promotion` gate →
//! promote → `post-rollout` hooks. Rollback first restores the stable replica count.
//!
//! Invariants (property-tested): while replacing, `candidate + stable <= replicas + maxSurge`
//! and ready replicas never drop below `replicas - maxUnavailable`.

use serde::Deserialize;
use strategy_kit::machine::{plan_of, Config, Ctx, HookFailure, Op, Replicas, Spec};
use strategy_kit::params::{parse_params, Duration, IntOrPercent, ScoreThresholds};
use strategy_kit::types::{Error, HookPhase, Plan, Slot};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Params {
    #[serde(default = "quarter")]
    pub max_surge: IntOrPercent,
    #[serde(default = "quarter")]
    pub max_unavailable: IntOrPercent,
    pub replicas: Option<u32>,
    #[serde(default)]
    pub interval: Option<Duration>,
    #[serde(default)]
    pub analysis: bool,
    #[serde(default = "three")]
    pub threshold: u32,
    pub progress_deadline: Option<Duration>,
    #[serde(default)]
    pub pause_on_inconclusive: bool,
    #[serde(default)]
    pub compare_baseline: bool,
    #[serde(default)]
    pub score_thresholds: ScoreThresholds,
}

fn quarter() -> IntOrPercent {
    IntOrPercent::Percent(25)
}
fn three() -> u32 {
    3
}

/// Replica counts after one batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Batch {
    pub candidate: u32,
    pub stable: u32,
}

/// The batches of a rolling update of `n` replicas (Kubernetes' arithmetic: surge rounds
/// up, unavailable rounds down, and at least one of them is positive).
pub fn batches(n: u32, surge: IntOrPercent, unavailable: IntOrPercent) -> Vec<Batch> {
    let n = n.max(1);
    let s = surge.resolve(n, true);
    let mut u = unavailable.resolve(n, false);
    if s == 0 && u == 0 {
        u = 1; // a percent that rounded to 0; Kubernetes does the same
    }
    let (mut c, mut st) = (0u32, n);
    let mut out = Vec::new();
    while c < n || st > 0 {
        let new_c = n.min((n + s).saturating_sub(st)).max(c);
        let new_st = st.min((n.saturating_sub(u)).saturating_sub(new_c));
        if new_c == c && new_st == st {
            break; // cannot happen when s + u > 0; guards against a loop
        }
        c = new_c;
        st = new_st;
        out.push(Batch {
            candidate: c,
            stable: st,
        });
    }
    out
}

pub struct Rolling;

const PLAN_REPLICAS: u32 = 4;

impl Rolling {
    fn ops(p: &Params, n: Option<u32>) -> Vec<Op> {
        let mut ops = vec![
            Op::Hook {
                phase: HookPhase::ConfirmRollout,
                on_fail: HookFailure::Gate,
            },
            // Reads (and remembers) the stable replica count; percent 0 is always "ready".
            Op::AwaitReady {
                slot: Slot::Stable,
                percent: 0,
                min_ready: 0,
            },
        ];
        let Some(n) = p.replicas.or(n) else {
            return ops;
        };
        ops.push(Op::Hook {
            phase: HookPhase::PreRollout,
            on_fail: HookFailure::Count,
        });
        ops.push(Op::Deploy);
        let pause = p.interval.map(|d| d.ms()).unwrap_or(0);
        let mut prev = Batch {
            candidate: 0,
            stable: n.max(1),
        };
        for (i, b) in batches(n, p.max_surge, p.max_unavailable)
            .into_iter()
            .enumerate()
        {
            // Also right after deploy: the target may have created the candidate at another size.
            if b.candidate != prev.candidate || i == 0 {
                ops.push(Op::Scale {
                    slot: Slot::Candidate,
                    to: Replicas::Count(b.candidate),
                });
                if b.candidate > 0 {
                    ops.push(Op::AwaitReady {
                        slot: Slot::Candidate,
                        percent: 100,
                        min_ready: b.candidate,
                    });
                }
            }
            if b.stable != prev.stable {
                ops.push(Op::Scale {
                    slot: Slot::Stable,
                    to: Replicas::Count(b.stable),
                });
            }
            let label = format!(
                "batch {}: candidate {}, stable {}",
                i + 1,
                b.candidate,
                b.stable
            );
            if p.analysis {
                let d = if pause > 0 { pause } else { 60_000 };
                ops.push(Op::Analysis {
                    wait_ms: d,
                    window_ms: d,
                    label,
                });
            } else if pause > 0 {
                ops.push(Op::Wait {
                    ms: pause,
                    why: label,
                });
            }
            prev = b;
        }
        ops.push(Op::Hook {
            phase: HookPhase::ConfirmPromotion,
            on_fail: HookFailure::Gate,
        });
        ops.push(Op::Promote);
        ops.push(Op::Hook {
            phase: HookPhase::PostRollout,
            on_fail: HookFailure::Ignore,
        });
        ops
    }
}

impl Spec for Rolling {
    type Params = Params;

    fn parse(params: &str) -> Result<Params, Error> {
        let p: Params = parse_params(params)?;
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_string()));
        if p.threshold == 0 {
            return bad("threshold: must be at least 1 (rollback when failedChecks >= threshold)");
        }
        if matches!(
            p.max_surge,
            IntOrPercent::Count(0) | IntOrPercent::Percent(0)
        ) && matches!(
            p.max_unavailable,
            IntOrPercent::Count(0) | IntOrPercent::Percent(0)
        ) {
            return bad("maxSurge / maxUnavailable: both are 0, so no replica could ever be replaced; raise one");
        }
        if p.replicas == Some(0) {
            return bad(
                "replicas: must be at least 1 (or leave it out to use the stable workload's count)",
            );
        }
        p.score_thresholds.check()?;
        Ok(p)
    }

    fn config(p: &Params) -> Config {
        let pause = p.interval.map(|d| d.ms()).unwrap_or(0);
        Config {
            threshold: p.threshold,
            retry_ms: if pause > 0 { pause } else { 10_000 },
            poll_ms: 2_000,
            deadline_ms: Some(p.progress_deadline.map(|d| d.ms()).unwrap_or(600_000)),
            compare_baseline: p.compare_baseline,
            scores: p.score_thresholds,
            pause_on_inconclusive: p.pause_on_inconclusive,
        }
    }

    fn program(p: &Params, ctx: &Ctx) -> Vec<Op> {
        Rolling::ops(p, ctx.stable_desired)
    }

    fn plan(p: &Params) -> Option<Plan> {
        let n = p.replicas.unwrap_or(PLAN_REPLICAS);
        let mut plan = plan_of(&Rolling::ops(p, Some(n)), &Rolling::config(p));
        if p.replicas.is_none() {
            plan.steps.insert(
                0,
                format!("replicas: the stable workload's count at start (shown for {n})"),
            );
        }
        Some(plan)
    }
}

pub const SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false,"properties":{"maxSurge":{"type":["integer","string"]},"maxUnavailable":{"type":["integer","string"]},"replicas":{"type":"integer","minimum":1},"interval":{"type":"string"},"analysis":{"type":"boolean"},"threshold":{"type":"integer","minimum":1},"progressDeadline":{"type":"string"},"pauseOnInconclusive":{"type":"boolean"},"compareBaseline":{"type":"boolean"},"scoreThresholds":{"type":"object"}}}"#;

strategy_kit::strategy_plugin!(Rolling, "rolling", "Rolling update: replace replicas in maxSurge/maxUnavailable batches with health checks between them", SCHEMA);

#[cfg(test)]
mod tests;
