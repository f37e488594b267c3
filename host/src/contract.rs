//! The plugin contract as the host sees it: plain Rust types mirroring `wit/`, and one
//! async trait per plugin role.
//!
//! The engine only talks to these traits. A Wasm plugin implements them through
//! `plugin::roles` (which converts to and from the generated bindings); host-native
//! integrations such as the `local` target and the built-in proxy metrics implement them
//! directly. Keeping the engine off the generated types lets both kinds mix freely.

use serde::{Deserialize, Serialize};
use std::fmt;

// The plain types both the host and the strategy kit use live in one crate.
pub use dax_contract::{
    AnalysisOutcome, AnalysisRequest, CheckResult, CheckVerdict, Decision, FinalStatus, HookPhase,
    MatchSource, Observation, Outcome, Plan, RequestMatch, Slot, StatusOutcome, Step, StringMatch,
    TrafficSplit,
};

/// Mirrors `dax:plugin/types.plugin-role`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginRole {
    Target,
    Scanner,
    MetricProvider,
    Strategy,
}

impl PluginRole {
    /// The WIT interface a component of this role exports, without package or version.
    pub fn interface(self) -> &'static str {
        match self {
            PluginRole::Target => "target",
            PluginRole::Scanner => "scanner",
            PluginRole::MetricProvider => "metric-provider",
            PluginRole::Strategy => "strategy",
        }
    }
}

impl fmt::Display for PluginRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.interface())
    }
}

/// Mirrors `dax:plugin/types.plugin-info`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginInfo {
    pub name: String,
    pub version: String,
    pub role: PluginRole,
    pub description: String,
    /// JSON Schema of the plugin's config, as a JSON string.
    pub config_schema: String,
}

/// Mirrors `dax:plugin/types.config-problem`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigProblem {
    pub field: String,
    pub message: String,
}

/// Mirrors `dax:plugin/types.plugin-error`: the error a plugin chose to return.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "kind", content = "message", rename_all = "kebab-case")]
pub enum PluginError {
    #[error("invalid config: {0}")]
    InvalidConfig(String),
    #[error("invalid input: {0}")]
    InvalidInput(String),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("not found: {0}")]
    NotFound(String),
    #[error("unsupported: {0}")]
    Unsupported(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// Why a call into a plugin did not produce an answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// The plugin answered with an error of its own.
    #[error("plugin `{plugin}` returned an error: {error}")]
    Plugin { plugin: String, error: PluginError },
    /// The plugin faulted: trap, CPU deadline, memory limit, oversized answer.
    /// The host and every other plugin instance are unaffected.
    #[error("plugin `{plugin}` faulted: {reason}")]
    Fault { plugin: String, reason: String },
}

impl CallError {
    pub fn plugin_name(&self) -> &str {
        match self {
            CallError::Plugin { plugin, .. } | CallError::Fault { plugin, .. } => plugin,
        }
    }
}

pub type CallResult<T> = Result<T, CallError>;

/// What a target's `set-traffic` can carry out with its config (mirrors `traffic-support`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrafficSupport {
    pub weights: bool,
    pub header_matches: bool,
    pub cookie_matches: bool,
    pub mirroring: bool,
    #[serde(default)]
    pub note: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Sample {
    pub timestamp_ms: u64,
    pub value: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Severity {
    Unknown,
    Low,
    Medium,
    High,
    Critical,
}

// ---------------------------------------------------------------- target

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    pub app: String,
    pub version: String,
    pub artifact: String,
    pub replicas: u32,
    /// Target-specific extras as a JSON object string.
    pub spec: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkloadStatus {
    pub desired: u32,
    pub ready: u32,
    pub updated: u32,
    pub version: String,
    pub message: String,
}

/// A deployment target (mirrors `dax:plugin/target`). Config is bound at construction.
#[async_trait::async_trait]
pub trait Target: Send + Sync {
    /// What `set_traffic` can do with this target's config; touches no system.
    async fn traffic_support(&self) -> CallResult<TrafficSupport>;
    async fn deploy(&self, workload: &Workload) -> CallResult<()>;
    async fn set_traffic(&self, app: &str, split: &TrafficSplit) -> CallResult<()>;
    async fn scale(&self, app: &str, slot: Slot, replicas: u32) -> CallResult<()>;
    async fn status(&self, app: &str, slot: Slot) -> CallResult<WorkloadStatus>;
    async fn promote(&self, app: &str) -> CallResult<()>;
    async fn rollback(&self, app: &str) -> CallResult<()>;
    async fn finalize(&self, app: &str) -> CallResult<()>;
}

// ---------------------------------------------------------------- metric provider

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum QueryKind {
    Instant,
    Range,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricQuery {
    pub text: String,
    pub kind: QueryKind,
    pub window_ms: u64,
    pub step_ms: u64,
    pub vars: Vec<(String, String)>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "kebab-case")]
pub enum MetricAnswer {
    Value(f64),
    Series(Vec<Sample>),
    NoData(String),
}

/// A metric provider (mirrors `dax:plugin/metric-provider`). Config is bound at construction.
#[async_trait::async_trait]
pub trait MetricProvider: Send + Sync {
    async fn run_query(&self, query: &MetricQuery) -> CallResult<MetricAnswer>;
}

// ---------------------------------------------------------------- scanner

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    pub digest: String,
    pub manifests: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FindingClass {
    Vulnerability,
    Misconfiguration,
    Secret,
    Policy,
    License,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    pub severity: Severity,
    pub class: FindingClass,
    pub package: String,
    pub installed_version: String,
    pub fixed_version: String,
    pub status: String,
    pub title: String,
    pub primary_url: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScanReport {
    pub artifact_name: String,
    pub findings: Vec<Finding>,
}

/// A scanner (mirrors `dax:plugin/scanner`). Config is bound at construction.
#[async_trait::async_trait]
pub trait Scanner: Send + Sync {
    async fn scan(&self, artifact: &Artifact) -> CallResult<ScanReport>;
}

// ---------------------------------------------------------------- strategy

/// A rollout strategy (mirrors `dax:plugin/strategy`). Params are bound at construction.
#[async_trait::async_trait]
pub trait Strategy: Send + Sync {
    async fn describe_plan(&self) -> CallResult<Plan>;
    async fn start(&self) -> CallResult<Decision>;
    async fn next(&self, state: &[u8], observation: &Observation) -> CallResult<Decision>;
}
