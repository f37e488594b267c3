//! The plain data types of the `dax:plugin` contract that the host and the first-party
//! strategy kit (`plugins/strategy-kit`, compiled to wasm32) both use: traffic splits, the
//! strategy's steps, observations, decisions and plans.
//!
//! One definition, one set of serde attributes. These are the host's: the engine writes
//! `Step`, `Outcome` and `Decision` into the deployment journal, so their JSON shape is the
//! journal format and must stay readable by later versions. The kit used to mirror these
//! types by hand with serde's default (externally tagged) enums and `skip_serializing_if`
//! on `TrafficSplit`; where the two differed, the host's attributes won.
//!
//! Only serde here (no tokio, no async): the crate must build for `wasm32-wasip2`.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum StringMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MatchSource {
    Header,
    Cookie,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestMatch {
    pub source: MatchSource,
    pub name: String,
    pub value: StringMatch,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Slot {
    Stable,
    Candidate,
}

impl fmt::Display for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Slot::Stable => "stable",
            Slot::Candidate => "candidate",
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficSplit {
    pub candidate_weight: u8,
    #[serde(default)]
    pub matches: Vec<RequestMatch>,
    #[serde(default)]
    pub mirror_percent: u8,
}

impl TrafficSplit {
    /// A plain weighted split: no request matches, no mirroring.
    pub fn weight(w: u8) -> Self {
        TrafficSplit {
            candidate_weight: w,
            ..Default::default()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct AnalysisRequest {
    pub window_ms: u64,
    pub compare_baseline: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum HookPhase {
    PreRollout,
    Rollout,
    ConfirmRollout,
    ConfirmTrafficIncrease,
    ConfirmPromotion,
    PostRollout,
    Rollback,
    Event,
}

impl HookPhase {
    pub const ALL: [HookPhase; 8] = [
        HookPhase::PreRollout,
        HookPhase::Rollout,
        HookPhase::ConfirmRollout,
        HookPhase::ConfirmTrafficIncrease,
        HookPhase::ConfirmPromotion,
        HookPhase::PostRollout,
        HookPhase::Rollback,
        HookPhase::Event,
    ];

    /// The name used in TOML (`type = "pre-rollout"`), same as Flagger's.
    pub fn as_str(self) -> &'static str {
        match self {
            HookPhase::PreRollout => "pre-rollout",
            HookPhase::Rollout => "rollout",
            HookPhase::ConfirmRollout => "confirm-rollout",
            HookPhase::ConfirmTrafficIncrease => "confirm-traffic-increase",
            HookPhase::ConfirmPromotion => "confirm-promotion",
            HookPhase::PostRollout => "post-rollout",
            HookPhase::Rollback => "rollback",
            HookPhase::Event => "event",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FinalStatus {
    Promoted,
    RolledBack,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "step", content = "arg", rename_all = "kebab-case")]
pub enum Step {
    DeployCandidate,
    SetTraffic(TrafficSplit),
    Scale(Slot, u32),
    CheckStatus(Slot),
    Analyze(AnalysisRequest),
    RunHooks(HookPhase),
    Wait(u64),
    AwaitApproval(String),
    Promote,
    Rollback(String),
    Finish(FinalStatus),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CheckVerdict {
    Pass,
    Fail,
    NoData,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CheckResult {
    pub name: String,
    pub verdict: CheckVerdict,
    pub value: Option<f64>,
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AnalysisOutcome {
    pub checks: Vec<CheckResult>,
    pub score: Option<f64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusOutcome {
    pub which: Slot,
    pub desired: u32,
    pub ready: u32,
    pub updated: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "outcome", content = "value", rename_all = "kebab-case")]
pub enum Outcome {
    Started,
    Done,
    TargetStatus(StatusOutcome),
    Analysis(AnalysisOutcome),
    Hooks(bool),
    Approval(bool),
    Failed(String),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub elapsed_ms: u64,
    pub last: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    pub next: Step,
    /// Opaque to the host; persisted in the journal before `next` is executed.
    pub state: Vec<u8>,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<String>,
    pub best_case_ms: u64,
    pub worst_case_rollback_ms: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The journal stores these shapes; changing them breaks resuming old deployments.
    #[test]
    fn journal_shapes_stay_put() {
        let step = Step::SetTraffic(TrafficSplit {
            candidate_weight: 10,
            matches: vec![RequestMatch {
                source: MatchSource::Header,
                name: "x-user".into(),
                value: StringMatch::Exact("beta".into()),
            }],
            mirror_percent: 0,
        });
        assert_eq!(
            serde_json::to_string(&step).unwrap(),
            r#"{"step":"set-traffic","arg":{"candidate_weight":10,"matches":[{"source":"header","name":"x-user","value":{"kind":"exact","value":"beta"}}],"mirror_percent":0}}"#
        );
        let outcome = Outcome::TargetStatus(StatusOutcome {
            which: Slot::Candidate,
            desired: 2,
            ready: 1,
            updated: 1,
        });
        assert_eq!(
            serde_json::to_string(&outcome).unwrap(),
            r#"{"outcome":"target-status","value":{"which":"candidate","desired":2,"ready":1,"updated":1}}"#
        );
        // Older journals may omit the optional split fields.
        let old: Step =
            serde_json::from_str(r#"{"step":"set-traffic","arg":{"candidate_weight":50}}"#)
                .unwrap();
        assert_eq!(old, Step::SetTraffic(TrafficSplit::weight(50)));
    }
}
