//! The contract traits implemented by Wasm plugins: each call converts the host's plain
//! types to the generated bindings, runs in the sandbox, and converts the answer back.

use super::bindings::{self, wit_types as wit};
use super::capabilities::log;
use super::{Answer, LoadedPlugin, World};
use crate::contract::{self as c, CallError, CallResult};
use bindings::metric_provider::exports::dax::plugin::metric_provider as wmetric;
use bindings::scanner::exports::dax::plugin::scanner as wscan;
use bindings::strategy::exports::dax::plugin::strategy as wstrat;
use bindings::target::exports::dax::plugin::target as wtarget;
use std::future::Future;
use std::pin::Pin;
use wasmtime::Store;

type PluginState = super::sandbox::PluginState;

/// Call a function of the `plugin` interface, which every world exports as its own generated
/// type; hence the box (these calls run at load and validate time only, never per step).
macro_rules! plugin_interface_call {
    ($world:expr, |$g:ident, $store:ident| $call:expr) => {
        plugin_interface_call!(@arms $world, |$g, $store| $call, Target Scanner MetricProvider Strategy)
    };
    (@arms $world:expr, |$g:ident, $store:ident| $call:expr, $($variant:ident)*) => {
        match $world {
            $(World::$variant(w) => {
                let $g = w.dax_plugin_plugin().clone();
                Box::pin(async move {
                    let answer = $call.await;
                    ($store, answer)
                }) as Pin<Box<dyn Future<Output = Answer<_>> + Send + '_>>
            })*
        }
    };
}

impl World {
    pub(crate) fn describe(
        &self,
        mut store: Store<PluginState>,
    ) -> impl Future<Output = Answer<c::PluginInfo>> + Send + use<> {
        let call = plugin_interface_call!(self, |g, store| g.call_describe(&mut store));
        async move {
            let (store, info) = call.await;
            let info = info.map(|info: wit::PluginInfo| c::PluginInfo {
                name: info.name,
                version: info.version,
                role: match info.role {
                    wit::PluginRole::Target => c::PluginRole::Target,
                    wit::PluginRole::Scanner => c::PluginRole::Scanner,
                    wit::PluginRole::MetricProvider => c::PluginRole::MetricProvider,
                    wit::PluginRole::Strategy => c::PluginRole::Strategy,
                },
                description: info.description,
                config_schema: info.config_schema,
            });
            (store, info)
        }
    }
}

impl LoadedPlugin {
    /// Call `validate-config` with the plugin's config table; at most
    /// [`super::MAX_CONFIG_PROBLEMS`] problems, together within `limits.max_output_kib`.
    pub async fn validate_config(
        &self,
        config: &serde_json::Value,
    ) -> CallResult<Vec<c::ConfigProblem>> {
        let config = config.to_string();
        let problems: Vec<wit::ConfigProblem> = self
            .call(|mut store, world| {
                plugin_interface_call!(world, |g, store| g
                    .call_validate_config(&mut store, &config))
            })
            .await?;
        if problems.len() > super::MAX_CONFIG_PROBLEMS {
            return Err(CallError::Fault {
                plugin: self.name().to_string(),
                reason: format!(
                    "reported {} config problems; at most {} are accepted",
                    problems.len(),
                    super::MAX_CONFIG_PROBLEMS
                ),
            });
        }
        let size: usize = problems
            .iter()
            .map(|p| p.field.len() + p.message.len())
            .sum();
        if size > self.max_output_bytes() {
            return Err(self.too_big("config problems", size));
        }
        Ok(problems
            .into_iter()
            .map(|p| c::ConfigProblem {
                field: log::escape(&p.field).into_owned(),
                message: log::escape(&p.message).into_owned(),
            })
            .collect())
    }
}

/// Longest plugin error message kept: errors are for people (journal, terminal, other
/// plugins' observations); longer ones are cut with a marker.
pub const MAX_ERROR_MESSAGE_BYTES: usize = 4 * 1024;

/// A plugin's error, its message cut to [`MAX_ERROR_MESSAGE_BYTES`] and escaped.
fn plugin_error(plugin: &LoadedPlugin, e: wit::PluginError) -> CallError {
    let bound = |m: String| {
        let escaped = log::escape(&m);
        let cut = log::cut(&escaped, MAX_ERROR_MESSAGE_BYTES);
        if cut.len() == m.len() {
            m
        } else {
            cut.into_owned()
        }
    };
    let error = match e {
        wit::PluginError::InvalidConfig(m) => c::PluginError::InvalidConfig(bound(m)),
        wit::PluginError::InvalidInput(m) => c::PluginError::InvalidInput(bound(m)),
        wit::PluginError::Unavailable(m) => c::PluginError::Unavailable(bound(m)),
        wit::PluginError::NotFound(m) => c::PluginError::NotFound(bound(m)),
        wit::PluginError::Unsupported(m) => c::PluginError::Unsupported(bound(m)),
        wit::PluginError::Internal(m) => c::PluginError::Internal(bound(m)),
    };
    CallError::Plugin {
        plugin: plugin.name().to_string(),
        error,
    }
}

/// Refuse answers larger than the plugin's `limits.max_output_kib` (measured as JSON, the
/// form they are journaled in).
fn check_size<T: serde::Serialize>(plugin: &LoadedPlugin, value: &T) -> CallResult<()> {
    let size = serde_json::to_vec(value).map(|v| v.len()).unwrap_or(0);
    if size > plugin.max_output_bytes() {
        return Err(plugin.too_big("an answer", size));
    }
    Ok(())
}

/// Call one export of a role's interface on a warm instance:
/// `guest_call!(self.plugin, Target.dax_plugin_target, |g, store| g.call_deploy(store, ..))`.
/// The call's future owns the store and hands it back (see [`LoadedPlugin::call`]); what
/// the call borrows stays borrowed, nothing is copied for it.
macro_rules! guest_call {
    ($plugin:expr, $variant:ident . $interface:ident, |$g:ident, $store:ident| $call:expr) => {
        $plugin.call(|mut store, world| {
            let $g = match world {
                World::$variant(w) => w.$interface().clone(),
                _ => unreachable!("role checked when the plugin object was created"),
            };
            async move {
                let $store = &mut store;
                let answer = $call.await;
                (store, answer)
            }
        })
    };
}

// ---------------------------------------------------------------- shared conversions

fn to_wit_slot(s: c::Slot) -> wit::Slot {
    match s {
        c::Slot::Stable => wit::Slot::Stable,
        c::Slot::Candidate => wit::Slot::Candidate,
    }
}

fn from_wit_slot(s: wit::Slot) -> c::Slot {
    match s {
        wit::Slot::Stable => c::Slot::Stable,
        wit::Slot::Candidate => c::Slot::Candidate,
    }
}

fn to_wit_split(s: &c::TrafficSplit) -> wit::TrafficSplit {
    wit::TrafficSplit {
        candidate_weight: s.candidate_weight,
        matches: s
            .matches
            .iter()
            .map(|m| wit::RequestMatch {
                source: match m.source {
                    c::MatchSource::Header => wit::MatchSource::Header,
                    c::MatchSource::Cookie => wit::MatchSource::Cookie,
                },
                name: m.name.clone(),
                value: match &m.value {
                    c::StringMatch::Exact(v) => wit::StringMatch::Exact(v.clone()),
                    c::StringMatch::Prefix(v) => wit::StringMatch::Prefix(v.clone()),
                    c::StringMatch::Suffix(v) => wit::StringMatch::Suffix(v.clone()),
                    c::StringMatch::Regex(v) => wit::StringMatch::Regex(v.clone()),
                },
            })
            .collect(),
        mirror_percent: s.mirror_percent,
    }
}

fn from_wit_split(s: wit::TrafficSplit) -> c::TrafficSplit {
    c::TrafficSplit {
        candidate_weight: s.candidate_weight,
        matches: s
            .matches
            .into_iter()
            .map(|m| c::RequestMatch {
                source: match m.source {
                    wit::MatchSource::Header => c::MatchSource::Header,
                    wit::MatchSource::Cookie => c::MatchSource::Cookie,
                },
                name: m.name,
                value: match m.value {
                    wit::StringMatch::Exact(v) => c::StringMatch::Exact(v),
                    wit::StringMatch::Prefix(v) => c::StringMatch::Prefix(v),
                    wit::StringMatch::Suffix(v) => c::StringMatch::Suffix(v),
                    wit::StringMatch::Regex(v) => c::StringMatch::Regex(v),
                },
            })
            .collect(),
        mirror_percent: s.mirror_percent,
    }
}

// ---------------------------------------------------------------- target

pub(crate) struct WasmTarget {
    plugin: LoadedPlugin,
    config: String,
}

impl WasmTarget {
    pub(crate) fn new(plugin: LoadedPlugin, config: serde_json::Value) -> Self {
        WasmTarget {
            plugin,
            config: config.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl c::Target for WasmTarget {
    async fn deploy(&self, w: &c::Workload) -> CallResult<()> {
        let w = wtarget::Workload {
            app: w.app.clone(),
            version: w.version.clone(),
            artifact: w.artifact.clone(),
            replicas: w.replicas,
            spec: w.spec.clone(),
        };
        guest_call!(self.plugin, Target.dax_plugin_target, |g, store| g
            .call_deploy(store, &self.config, &w))
        .await?
        .map_err(|e| plugin_error(&self.plugin, e))
    }

    async fn traffic_support(&self) -> CallResult<c::TrafficSupport> {
        let s = guest_call!(self.plugin, Target.dax_plugin_target, |g, store| g
            .call_supported_traffic(store, &self.config))
        .await?
        .map_err(|e| plugin_error(&self.plugin, e))?;
        let support = c::TrafficSupport {
            weights: s.weights,
            header_matches: s.header_matches,
            cookie_matches: s.cookie_matches,
            mirroring: s.mirroring,
            note: s.note,
        };
        check_size(&self.plugin, &support)?;
        Ok(support)
    }

    async fn set_traffic(&self, app: &str, split: &c::TrafficSplit) -> CallResult<()> {
        let split = to_wit_split(split);
        guest_call!(self.plugin, Target.dax_plugin_target, |g, store| g
            .call_set_traffic(store, &self.config, app, &split))
        .await?
        .map_err(|e| plugin_error(&self.plugin, e))
    }

    async fn scale(&self, app: &str, slot: c::Slot, replicas: u32) -> CallResult<()> {
        let slot = to_wit_slot(slot);
        guest_call!(self.plugin, Target.dax_plugin_target, |g, store| g
            .call_scale(store, &self.config, app, slot, replicas))
        .await?
        .map_err(|e| plugin_error(&self.plugin, e))
    }

    async fn status(&self, app: &str, slot: c::Slot) -> CallResult<c::WorkloadStatus> {
        let slot = to_wit_slot(slot);
        let result = guest_call!(self.plugin, Target.dax_plugin_target, |g, store| g
            .call_status(store, &self.config, app, slot))
        .await?
        .map_err(|e| plugin_error(&self.plugin, e))?;
        let status = c::WorkloadStatus {
            desired: result.desired,
            ready: result.ready,
            updated: result.updated,
            version: result.version,
            message: result.message,
        };
        check_size(&self.plugin, &status)?;
        Ok(status)
    }

    async fn promote(&self, app: &str) -> CallResult<()> {
        guest_call!(self.plugin, Target.dax_plugin_target, |g, store| g
            .call_promote(store, &self.config, app))
        .await?
        .map_err(|e| plugin_error(&self.plugin, e))
    }

    async fn rollback(&self, app: &str) -> CallResult<()> {
        guest_call!(self.plugin, Target.dax_plugin_target, |g, store| g
            .call_rollback(store, &self.config, app))
        .await?
        .map_err(|e| plugin_error(&self.plugin, e))
    }

    async fn finalize(&self, app: &str) -> CallResult<()> {
        guest_call!(self.plugin, Target.dax_plugin_target, |g, store| g
            .call_finalize(store, &self.config, app))
        .await?
        .map_err(|e| plugin_error(&self.plugin, e))
    }
}

// ---------------------------------------------------------------- metric provider

pub(crate) struct WasmMetricProvider {
    plugin: LoadedPlugin,
    config: String,
}

impl WasmMetricProvider {
    pub(crate) fn new(plugin: LoadedPlugin, config: serde_json::Value) -> Self {
        WasmMetricProvider {
            plugin,
            config: config.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl c::MetricProvider for WasmMetricProvider {
    async fn run_query(&self, q: &c::MetricQuery) -> CallResult<c::MetricAnswer> {
        let vars: Vec<(&str, &str)> = q.vars.iter().map(|(k, v)| (&**k, &**v)).collect();
        let kind = match q.kind {
            c::QueryKind::Instant => wmetric::QueryKind::Instant,
            c::QueryKind::Range => wmetric::QueryKind::Range,
        };
        // Built in the guest call itself, so the call's (boxed) future holds it once.
        let answer = guest_call!(
            self.plugin,
            MetricProvider.dax_plugin_metric_provider,
            |g, store| g.call_run_query(
                store,
                &self.config,
                wmetric::Query {
                    text: &q.text,
                    kind,
                    window_ms: q.window_ms,
                    step_ms: q.step_ms,
                    vars: &vars,
                }
            )
        )
        .await?
        .map_err(|e| plugin_error(&self.plugin, e))?;
        Ok(match answer {
            wmetric::Answer::Value(v) => c::MetricAnswer::Value(v),
            wmetric::Answer::NoData(why) => {
                let answer = c::MetricAnswer::NoData(why);
                check_size(&self.plugin, &answer)?;
                answer
            }
            wmetric::Answer::Series(samples) => {
                let answer = c::MetricAnswer::Series(
                    samples
                        .into_iter()
                        .map(|s| c::Sample {
                            timestamp_ms: s.timestamp_ms,
                            value: s.value,
                        })
                        .collect(),
                );
                check_size(&self.plugin, &answer)?;
                answer
            }
        })
    }
}

// ---------------------------------------------------------------- scanner

pub(crate) struct WasmScanner {
    plugin: LoadedPlugin,
    config: String,
}

impl WasmScanner {
    pub(crate) fn new(plugin: LoadedPlugin, config: serde_json::Value) -> Self {
        WasmScanner {
            plugin,
            config: config.to_string(),
        }
    }
}

#[async_trait::async_trait]
impl c::Scanner for WasmScanner {
    async fn scan(&self, a: &c::Artifact) -> CallResult<c::ScanReport> {
        let artifact = wscan::Artifact {
            name: a.name.clone(),
            digest: a.digest.clone(),
            manifests: a.manifests.clone(),
        };
        let report = guest_call!(self.plugin, Scanner.dax_plugin_scanner, |g, store| g
            .call_scan(store, &self.config, &artifact))
        .await?
        .map_err(|e| plugin_error(&self.plugin, e))?;
        let report = c::ScanReport {
            artifact_name: report.artifact_name,
            findings: report
                .findings
                .into_iter()
                .map(|f| c::Finding {
                    id: f.id,
                    severity: match f.severity {
                        wit::Severity::Unknown => c::Severity::Unknown,
                        wit::Severity::Low => c::Severity::Low,
                        wit::Severity::Medium => c::Severity::Medium,
                        wit::Severity::High => c::Severity::High,
                        wit::Severity::Critical => c::Severity::Critical,
                    },
                    class: match f.class {
                        wscan::FindingClass::Vulnerability => c::FindingClass::Vulnerability,
                        wscan::FindingClass::Misconfiguration => c::FindingClass::Misconfiguration,
                        wscan::FindingClass::Secret => c::FindingClass::Secret,
                        wscan::FindingClass::Policy => c::FindingClass::Policy,
                        wscan::FindingClass::License => c::FindingClass::License,
                    },
                    package: f.package_name,
                    installed_version: f.installed_version,
                    fixed_version: f.fixed_version,
                    status: f.status,
                    title: f.title,
                    primary_url: f.primary_url,
                    target: f.target,
                })
                .collect(),
        };
        check_size(&self.plugin, &report)?;
        Ok(report)
    }
}

// ---------------------------------------------------------------- strategy

pub(crate) struct WasmStrategy {
    plugin: LoadedPlugin,
    params: String,
}

impl WasmStrategy {
    pub(crate) fn new(plugin: LoadedPlugin, params: serde_json::Value) -> Self {
        WasmStrategy {
            plugin,
            params: params.to_string(),
        }
    }

    /// A decision within `limits.max_output_kib`: its state counted by its real byte size
    /// (not its JSON form, which is up to four times larger), the rest as JSON.
    fn decision(&self, d: wstrat::Decision) -> CallResult<c::Decision> {
        let state = d.state;
        let decision = c::Decision {
            next: from_wit_step(d.next),
            state: Vec::new(),
            note: d.note,
        };
        let rest = serde_json::to_vec(&decision).map(|v| v.len()).unwrap_or(0);
        let size = state.len().saturating_add(rest);
        if size > self.plugin.max_output_bytes() {
            return Err(self.plugin.too_big("a decision (state included)", size));
        }
        Ok(c::Decision { state, ..decision })
    }
}

fn from_wit_step(s: wstrat::Step) -> c::Step {
    match s {
        wstrat::Step::DeployCandidate => c::Step::DeployCandidate,
        wstrat::Step::SetTraffic(split) => c::Step::SetTraffic(from_wit_split(split)),
        wstrat::Step::Scale((slot, n)) => c::Step::Scale(from_wit_slot(slot), n),
        wstrat::Step::CheckStatus(slot) => c::Step::CheckStatus(from_wit_slot(slot)),
        wstrat::Step::Analyze(r) => c::Step::Analyze(c::AnalysisRequest {
            window_ms: r.window_ms,
            compare_baseline: r.compare_baseline,
        }),
        wstrat::Step::RunHooks(p) => c::Step::RunHooks(match p {
            wstrat::HookPhase::PreRollout => c::HookPhase::PreRollout,
            wstrat::HookPhase::Rollout => c::HookPhase::Rollout,
            wstrat::HookPhase::ConfirmRollout => c::HookPhase::ConfirmRollout,
            wstrat::HookPhase::ConfirmTrafficIncrease => c::HookPhase::ConfirmTrafficIncrease,
            wstrat::HookPhase::ConfirmPromotion => c::HookPhase::ConfirmPromotion,
            wstrat::HookPhase::PostRollout => c::HookPhase::PostRollout,
            wstrat::HookPhase::Rollback => c::HookPhase::Rollback,
            wstrat::HookPhase::Event => c::HookPhase::Event,
        }),
        wstrat::Step::Wait(ms) => c::Step::Wait(ms),
        wstrat::Step::AwaitApproval(what) => c::Step::AwaitApproval(what),
        wstrat::Step::Promote => c::Step::Promote,
        wstrat::Step::Rollback(why) => c::Step::Rollback(why),
        wstrat::Step::Finish(f) => c::Step::Finish(match f {
            wstrat::FinalStatus::Promoted => c::FinalStatus::Promoted,
            wstrat::FinalStatus::RolledBack => c::FinalStatus::RolledBack,
            wstrat::FinalStatus::Failed => c::FinalStatus::Failed,
        }),
    }
}

fn to_wit_observation(o: &c::Observation) -> wstrat::Observation {
    let last = match &o.last {
        c::Outcome::Started => wstrat::Outcome::Started,
        c::Outcome::Done => wstrat::Outcome::Done,
        c::Outcome::TargetStatus(s) => wstrat::Outcome::TargetStatus(wstrat::StatusOutcome {
            which: to_wit_slot(s.which),
            desired: s.desired,
            ready: s.ready,
            updated: s.updated,
        }),
        c::Outcome::Analysis(a) => wstrat::Outcome::Analysis(wstrat::AnalysisOutcome {
            checks: a
                .checks
                .iter()
                .map(|r| wstrat::CheckResult {
                    name: r.name.clone(),
                    verdict: match r.verdict {
                        c::CheckVerdict::Pass => wstrat::CheckVerdict::Pass,
                        c::CheckVerdict::Fail => wstrat::CheckVerdict::Fail,
                        c::CheckVerdict::NoData => wstrat::CheckVerdict::NoData,
                        c::CheckVerdict::Error => wstrat::CheckVerdict::Error,
                    },
                    value: r.value,
                    detail: r.detail.clone(),
                })
                .collect(),
            score: a.score,
        }),
        c::Outcome::Hooks(ok) => wstrat::Outcome::Hooks(*ok),
        c::Outcome::Approval(ok) => wstrat::Outcome::Approval(*ok),
        c::Outcome::Failed(why) => wstrat::Outcome::Failed(why.clone()),
    };
    wstrat::Observation {
        elapsed_ms: o.elapsed_ms,
        last,
    }
}

#[async_trait::async_trait]
impl c::Strategy for WasmStrategy {
    async fn describe_plan(&self) -> CallResult<c::Plan> {
        let plan = guest_call!(self.plugin, Strategy.dax_plugin_strategy, |g, store| g
            .call_describe_plan(store, &self.params))
        .await?
        .map_err(|e| plugin_error(&self.plugin, e))?;
        let plan = c::Plan {
            steps: plan.steps,
            best_case_ms: plan.best_case_ms,
            worst_case_rollback_ms: plan.worst_case_rollback_ms,
        };
        check_size(&self.plugin, &plan)?;
        Ok(plan)
    }

    async fn start(&self) -> CallResult<c::Decision> {
        let d = guest_call!(self.plugin, Strategy.dax_plugin_strategy, |g, store| g
            .call_start(store, &self.params))
        .await?
        .map_err(|e| plugin_error(&self.plugin, e))?;
        self.decision(d)
    }

    async fn next(&self, state: &[u8], observation: &c::Observation) -> CallResult<c::Decision> {
        let obs = to_wit_observation(observation);
        let d = guest_call!(self.plugin, Strategy.dax_plugin_strategy, |g, store| g
            .call_next(store, &self.params, state, &obs))
        .await?
        .map_err(|e| plugin_error(&self.plugin, e))?;
        self.decision(d)
    }
}
