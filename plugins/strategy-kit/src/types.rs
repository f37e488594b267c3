//! The `dax:plugin/strategy` types the state machines work with. The plain data types come
//! from `dax-contract` (the same definitions, and serde shapes, the host uses), so the
//! machines can be tested natively and their traces compared; `wit.rs` converts them to and
//! from the generated bindings. Only the kit's own error type lives here.

pub use dax_contract::{
    AnalysisOutcome, AnalysisRequest, CheckResult, CheckVerdict, Decision, FinalStatus, HookPhase,
    MatchSource, Observation, Outcome, Plan, RequestMatch, Slot, StatusOutcome, Step, StringMatch,
    TrafficSplit,
};

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
