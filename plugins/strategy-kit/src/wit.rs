//! Conversions between the kit's types and the WIT bindings of `dax_sdk::strategy`, and the
//! [`strategy_plugin!`] macro that exports a [`Spec`](crate::machine::Spec) as a component.

use crate::types as k;
use dax_sdk::strategy as w;

pub fn to_wit_error(e: k::Error) -> w::PluginError {
    match e {
        k::Error::InvalidConfig(m) => w::PluginError::InvalidConfig(m),
        k::Error::InvalidInput(m) => w::PluginError::InvalidInput(m),
    }
}

fn slot_to(s: k::Slot) -> w::Slot {
    match s {
        k::Slot::Stable => w::Slot::Stable,
        k::Slot::Candidate => w::Slot::Candidate,
    }
}

fn slot_from(s: w::Slot) -> k::Slot {
    match s {
        w::Slot::Stable => k::Slot::Stable,
        w::Slot::Candidate => k::Slot::Candidate,
    }
}

fn traffic_to(t: k::TrafficSplit) -> w::TrafficSplit {
    w::TrafficSplit {
        candidate_weight: t.candidate_weight,
        mirror_percent: t.mirror_percent,
        matches: t
            .matches
            .into_iter()
            .map(|m| w::RequestMatch {
                source: match m.source {
                    k::MatchSource::Header => w::MatchSource::Header,
                    k::MatchSource::Cookie => w::MatchSource::Cookie,
                },
                name: m.name,
                value: match m.value {
                    k::StringMatch::Exact(v) => w::StringMatch::Exact(v),
                    k::StringMatch::Prefix(v) => w::StringMatch::Prefix(v),
                    k::StringMatch::Suffix(v) => w::StringMatch::Suffix(v),
                    k::StringMatch::Regex(v) => w::StringMatch::Regex(v),
                },
            })
            .collect(),
    }
}

fn phase_to(p: k::HookPhase) -> w::HookPhase {
    match p {
        k::HookPhase::PreRollout => w::HookPhase::PreRollout,
        k::HookPhase::Rollout => w::HookPhase::Rollout,
        k::HookPhase::ConfirmRollout => w::HookPhase::ConfirmRollout,
        k::HookPhase::ConfirmTrafficIncrease => w::HookPhase::ConfirmTrafficIncrease,
        k::HookPhase::ConfirmPromotion => w::HookPhase::ConfirmPromotion,
        k::HookPhase::PostRollout => w::HookPhase::PostRollout,
        k::HookPhase::Rollback => w::HookPhase::Rollback,
        k::HookPhase::Event => w::HookPhase::Event,
    }
}

fn step_to(s: k::Step) -> w::Step {
    match s {
        k::Step::DeployCandidate => w::Step::DeployCandidate,
        k::Step::SetTraffic(t) => w::Step::SetTraffic(traffic_to(t)),
        k::Step::Scale(slot, n) => w::Step::Scale((slot_to(slot), n)),
        k::Step::CheckStatus(slot) => w::Step::CheckStatus(slot_to(slot)),
        k::Step::Analyze(r) => w::Step::Analyze(w::AnalysisRequest {
            window_ms: r.window_ms,
            compare_baseline: r.compare_baseline,
        }),
        k::Step::RunHooks(p) => w::Step::RunHooks(phase_to(p)),
        k::Step::Wait(ms) => w::Step::Wait(ms),
        k::Step::AwaitApproval(m) => w::Step::AwaitApproval(m),
        k::Step::Promote => w::Step::Promote,
        k::Step::Rollback(r) => w::Step::Rollback(r),
        k::Step::Finish(f) => w::Step::Finish(match f {
            k::FinalStatus::Promoted => w::FinalStatus::Promoted,
            k::FinalStatus::RolledBack => w::FinalStatus::RolledBack,
            k::FinalStatus::Failed => w::FinalStatus::Failed,
        }),
    }
}

pub fn decision_to(d: k::Decision) -> w::Decision {
    w::Decision {
        next: step_to(d.next),
        state: d.state,
        note: d.note,
    }
}

pub fn plan_to(p: k::Plan) -> w::Plan {
    w::Plan {
        steps: p.steps,
        best_case_ms: p.best_case_ms,
        worst_case_rollback_ms: p.worst_case_rollback_ms,
    }
}

pub fn observation_from(o: w::Observation) -> k::Observation {
    let last = match o.last {
        w::Outcome::Started => k::Outcome::Started,
        w::Outcome::Done => k::Outcome::Done,
        w::Outcome::TargetStatus(s) => k::Outcome::TargetStatus(k::StatusOutcome {
            which: slot_from(s.which),
            desired: s.desired,
            ready: s.ready,
            updated: s.updated,
        }),
        w::Outcome::Analysis(a) => k::Outcome::Analysis(k::AnalysisOutcome {
            score: a.score,
            checks: a
                .checks
                .into_iter()
                .map(|c| k::CheckResult {
                    name: c.name,
                    value: c.value,
                    detail: c.detail,
                    verdict: match c.verdict {
                        w::CheckVerdict::Pass => k::CheckVerdict::Pass,
                        w::CheckVerdict::Fail => k::CheckVerdict::Fail,
                        w::CheckVerdict::NoData => k::CheckVerdict::NoData,
                        w::CheckVerdict::Error => k::CheckVerdict::Error,
                    },
                })
                .collect(),
        }),
        w::Outcome::Hooks(ok) => k::Outcome::Hooks(ok),
        w::Outcome::Approval(ok) => k::Outcome::Approval(ok),
        w::Outcome::Failed(m) => k::Outcome::Failed(m),
    };
    k::Observation {
        elapsed_ms: o.elapsed_ms,
        last,
    }
}

/// Export a [`Spec`](crate::machine::Spec) as a strategy component:
/// `strategy_kit::strategy_plugin!(Canary, "canary", "Flagger-style canary", SCHEMA);`
/// The export itself is only compiled for wasm (native builds are for unit tests).
#[macro_export]
macro_rules! strategy_plugin {
    ($spec:ty, $name:literal, $description:literal, $schema:expr) => {
        /// The component's exports, backed by the kit's interpreter.
        pub struct Component;

        impl dax_sdk::strategy::PluginGuest for Component {
            fn describe() -> dax_sdk::strategy::PluginInfo {
                dax_sdk::strategy::info(
                    $name,
                    env!("CARGO_PKG_VERSION"),
                    dax_sdk::strategy::PluginRole::Strategy,
                    $description,
                    $schema,
                )
            }
            fn validate_config(config: String) -> Vec<dax_sdk::strategy::ConfigProblem> {
                dax_sdk::strategy::problems($crate::machine::validate::<$spec>(&config))
            }
        }

        impl dax_sdk::strategy::Guest for Component {
            fn describe_plan(
                params: String,
            ) -> Result<dax_sdk::strategy::Plan, dax_sdk::strategy::PluginError> {
                $crate::machine::describe_plan::<$spec>(&params)
                    .map($crate::wit::plan_to)
                    .map_err($crate::wit::to_wit_error)
            }
            fn start(
                params: String,
            ) -> Result<dax_sdk::strategy::Decision, dax_sdk::strategy::PluginError> {
                $crate::machine::start::<$spec>(&params)
                    .map($crate::wit::decision_to)
                    .map_err($crate::wit::to_wit_error)
            }
            fn next(
                params: String,
                state: Vec<u8>,
                obs: dax_sdk::strategy::Observation,
            ) -> Result<dax_sdk::strategy::Decision, dax_sdk::strategy::PluginError> {
                $crate::machine::next::<$spec>(&params, &state, &$crate::wit::observation_from(obs))
                    .map($crate::wit::decision_to)
                    .map_err($crate::wit::to_wit_error)
            }
        }

        #[cfg(target_arch = "wasm32")]
        dax_sdk::export_strategy!(Component);
    };
}
