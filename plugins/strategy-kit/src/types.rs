//! Plain Rust mirrors of the `dax:plugin/strategy` types, with `PartialEq` and serde so the
//! state machines can be tested natively and their traces compared. `wit.rs` converts them
//! to and from the generated bindings.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Slot {
    Stable,
    Candidate,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
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

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficSplit {
    pub candidate_weight: u8,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub matches: Vec<RequestMatch>,
    #[serde(default, skip_serializing_if = "is_zero")]
    pub mirror_percent: u8,
}

fn is_zero(v: &u8) -> bool {
    *v == 0
}

impl TrafficSplit {
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
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
#[serde(rename_all = "kebab-case")]
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
#[serde(rename_all = "kebab-case")]
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
    pub state: Vec<u8>,
    pub note: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<String>,
    pub best_case_ms: u64,
    pub worst_case_rollback_ms: u64,
}

/// Why a strategy call failed; maps onto the WIT `plugin-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Error {
    /// The params are unusable: the operator must fix `[strategy.params]`.
    InvalidConfig(String),
    /// The state blob or observation is unusable (an engine bug or a corrupted journal).
    InvalidInput(String),
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Error::InvalidConfig(m) => write!(f, "invalid config: {m}"),
            Error::InvalidInput(m) => write!(f, "invalid input: {m}"),
        }
    }
}

impl std::error::Error for Error {}
