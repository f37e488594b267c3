//! Host-native plugins for the engine properties: a target that records every call that
//! reaches it (and fails the ones it is told to), a strategy that answers a generated script,
//! a well-behaved rollout strategy (for resuming damaged journals), a metric provider that
//! answers a generated value, and a resolver that hands them to an `Engine` by source name
//! (`fuzz:target`, `fuzz:script`, `fuzz:rollout`, `fuzz:metrics`).

use dax::contract::*;
use dax::engine::{PluginResolver, ResolvedPlugin};
use dax::plugin::PluginSpec;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

/// A string a plugin returns; `Huge` keeps proptest's failure output short.
#[derive(Debug, Clone)]
pub enum Txt {
    Short(String),
    Huge(usize),
}

impl Txt {
    pub fn text(&self) -> String {
        match self {
            Txt::Short(s) => s.clone(),
            Txt::Huge(n) => "\u{1b}[2J\nforged log line\r".repeat(n / 24 + 1),
        }
    }
}

/// A strategy's state blob.
#[derive(Debug, Clone)]
pub enum Blob {
    Bytes(Vec<u8>),
    Huge(usize),
}

impl Blob {
    pub fn bytes(&self) -> Vec<u8> {
        match self {
            Blob::Bytes(b) => b.clone(),
            Blob::Huge(n) => vec![0xa5; *n],
        }
    }
}

/// One answer of the scripted strategy.
#[derive(Debug, Clone)]
pub enum Answer {
    Decide { step: Step, state: Blob, note: Txt },
    Error(Txt),
}

/// What the scripted strategy answers once its script is used up.
#[derive(Debug, Clone)]
pub enum Tail {
    Finish(FinalStatus),
    /// The same step forever: only the engine can end the run.
    Forever(Step),
}

#[derive(Debug, Clone)]
pub struct Script {
    pub answers: Vec<Answer>,
    pub tail: Tail,
}

/// How the native target behaves.
#[derive(Debug, Clone, Default)]
pub struct TargetBehaviour {
    pub fail_promote: bool,
    /// The first N rollbacks fail.
    pub failing_rollbacks: u32,
    pub fail_set_traffic: bool,
    pub candidate_ready: bool,
}

/// What the native metric provider answers.
#[derive(Debug, Clone)]
pub enum MetricBehaviour {
    Value(f64),
    /// `len` samples alternating between `a` and `b`.
    Series {
        len: usize,
        a: f64,
        b: f64,
    },
    NoData(Txt),
    Error(Txt),
}

/// A call that reached the target, with whether it succeeded.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    Deploy(u32),
    SetTraffic(TrafficSplit),
    Scale(Slot, u32),
    Status(Slot),
    Promote { ok: bool },
    Rollback { ok: bool },
    Finalize,
}

/// Everything one deployment's native plugins do, and what reached the target.
#[derive(Debug)]
pub struct World {
    pub target: TargetBehaviour,
    pub script: Option<Script>,
    pub metrics: MetricBehaviour,
    pub calls: Mutex<Vec<Call>>,
    rollbacks: AtomicU32,
}

impl World {
    pub fn new(target: TargetBehaviour, script: Option<Script>, metrics: MetricBehaviour) -> Self {
        World {
            target,
            script,
            metrics,
            calls: Mutex::new(Vec::new()),
            rollbacks: AtomicU32::new(0),
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        self.calls.lock().unwrap().clone()
    }

    fn log(&self, call: Call) {
        self.calls.lock().unwrap().push(call);
    }
}

/// A deployment file for these natives. `strategy` is `fuzz:script` or `fuzz:rollout`.
pub fn deployment_toml(app: &str, strategy: &str, with_check: bool, deadline: &str) -> String {
    let check = if with_check {
        "[[checks]]\nname = \"sr\"\nprovider = \"m\"\nquery = \"success-rate\"\nmin = 99\n"
    } else {
        ""
    };
    format!(
        "[deployment]\napp = \"{app}\"\nversion = \"v2\"\nprogress_deadline = \"{deadline}\"\n\
         [target]\nplugin = \"t\"\n[strategy]\nplugin = \"s\"\n{check}\
         [plugins.t]\nsource = \"fuzz:target\"\n[plugins.s]\nsource = \"{strategy}\"\n\
         [plugins.m]\nsource = \"fuzz:metrics\"\n"
    )
}

fn plugin_error(t: &Txt) -> CallError {
    CallError::Plugin {
        plugin: "fuzz".into(),
        error: PluginError::Internal(t.text()),
    }
}

struct FuzzTarget(Arc<World>);

#[async_trait::async_trait]
impl Target for FuzzTarget {
    async fn traffic_support(&self) -> CallResult<dax::contract::TrafficSupport> {
        Ok(dax::contract::TrafficSupport {
            weights: true,
            header_matches: true,
            cookie_matches: true,
            mirroring: true,
            note: String::new(),
        })
    }
    async fn deploy(&self, w: &Workload) -> CallResult<()> {
        self.0.log(Call::Deploy(w.replicas));
        Ok(())
    }
    async fn set_traffic(&self, _app: &str, split: &TrafficSplit) -> CallResult<()> {
        self.0.log(Call::SetTraffic(split.clone()));
        if self.0.target.fail_set_traffic {
            return Err(plugin_error(&Txt::Short("traffic refused".into())));
        }
        Ok(())
    }
    async fn scale(&self, _app: &str, slot: Slot, replicas: u32) -> CallResult<()> {
        self.0.log(Call::Scale(slot, replicas));
        Ok(())
    }
    async fn status(&self, _app: &str, slot: Slot) -> CallResult<WorkloadStatus> {
        self.0.log(Call::Status(slot));
        let ready = slot == Slot::Stable || self.0.target.candidate_ready;
        Ok(WorkloadStatus {
            desired: 1,
            ready: ready as u32,
            updated: 1,
            version: match slot {
                Slot::Stable => "v1".into(),
                Slot::Candidate => "v2".into(),
            },
            message: String::new(),
        })
    }
    async fn promote(&self, _app: &str) -> CallResult<()> {
        let ok = !self.0.target.fail_promote;
        self.0.log(Call::Promote { ok });
        if ok {
            Ok(())
        } else {
            Err(plugin_error(&Txt::Short("promote refused".into())))
        }
    }
    async fn rollback(&self, _app: &str) -> CallResult<()> {
        let n = self.0.rollbacks.fetch_add(1, Ordering::SeqCst);
        let ok = n >= self.0.target.failing_rollbacks;
        self.0.log(Call::Rollback { ok });
        if ok {
            Ok(())
        } else {
            Err(plugin_error(&Txt::Short("rollback refused".into())))
        }
    }
    async fn finalize(&self, _app: &str) -> CallResult<()> {
        self.0.log(Call::Finalize);
        Ok(())
    }
}

/// Answers its script in order, whatever the engine observed.
struct Scripted {
    world: Arc<World>,
    at: AtomicUsize,
}

impl Scripted {
    fn answer(&self) -> CallResult<Decision> {
        let script = self.world.script.as_ref().expect("a script");
        let i = self.at.fetch_add(1, Ordering::SeqCst);
        match script.answers.get(i) {
            Some(Answer::Decide { step, state, note }) => Ok(Decision {
                next: step.clone(),
                state: state.bytes(),
                note: note.text(),
            }),
            Some(Answer::Error(t)) => Err(plugin_error(t)),
            None => Ok(Decision {
                next: match &script.tail {
                    Tail::Finish(s) => Step::Finish(*s),
                    Tail::Forever(step) => step.clone(),
                },
                state: vec![],
                note: String::new(),
            }),
        }
    }
}

#[async_trait::async_trait]
impl Strategy for Scripted {
    async fn describe_plan(&self) -> CallResult<Plan> {
        Ok(Plan {
            steps: vec![],
            best_case_ms: 0,
            worst_case_rollback_ms: 0,
        })
    }
    async fn start(&self) -> CallResult<Decision> {
        self.answer()
    }
    async fn next(&self, _state: &[u8], _obs: &Observation) -> CallResult<Decision> {
        self.answer()
    }
}

/// A correct little canary whose state blob is the index of its last step: deploy, 20%,
/// analyze, 50%, wait, check, promote, finish; a failed step or analysis rolls back. Any
/// state it does not know (a damaged journal) rolls back too.
pub struct Rollout;

const ROLLBACK: u8 = 100;

fn plan() -> Vec<Step> {
    vec![
        Step::DeployCandidate,
        Step::SetTraffic(TrafficSplit {
            candidate_weight: 20,
            ..Default::default()
        }),
        Step::Analyze(AnalysisRequest {
            window_ms: 1000,
            compare_baseline: false,
        }),
        Step::SetTraffic(TrafficSplit {
            candidate_weight: 50,
            ..Default::default()
        }),
        Step::Wait(5),
        Step::CheckStatus(Slot::Candidate),
        Step::Promote,
        Step::Finish(FinalStatus::Promoted),
    ]
}

#[async_trait::async_trait]
impl Strategy for Rollout {
    async fn describe_plan(&self) -> CallResult<Plan> {
        Ok(Plan {
            steps: plan().iter().map(|s| format!("{s:?}")).collect(),
            best_case_ms: 5,
            worst_case_rollback_ms: 5,
        })
    }
    async fn start(&self) -> CallResult<Decision> {
        Ok(Decision {
            next: plan()[0].clone(),
            state: vec![0],
            note: "start".into(),
        })
    }
    async fn next(&self, state: &[u8], obs: &Observation) -> CallResult<Decision> {
        let failed = match &obs.last {
            Outcome::Failed(_) | Outcome::Hooks(false) | Outcome::Approval(false) => true,
            Outcome::Analysis(a) => a.checks.iter().any(|c| c.verdict != CheckVerdict::Pass),
            _ => false,
        };
        let decision = |next: Step, state: u8| {
            Ok(Decision {
                next,
                state: vec![state],
                note: String::new(),
            })
        };
        match state {
            [ROLLBACK] => decision(Step::Finish(FinalStatus::RolledBack), ROLLBACK + 1),
            [i] if !failed && (*i as usize) + 1 < plan().len() => {
                decision(plan()[*i as usize + 1].clone(), i + 1)
            }
            [_] if failed => decision(Step::Rollback("a step failed".into()), ROLLBACK),
            _ => decision(Step::Rollback("unknown state".into()), ROLLBACK),
        }
    }
}

struct FuzzMetrics(Arc<World>);

#[async_trait::async_trait]
impl MetricProvider for FuzzMetrics {
    async fn run_query(&self, _q: &MetricQuery) -> CallResult<MetricAnswer> {
        match &self.0.metrics {
            MetricBehaviour::Value(v) => Ok(MetricAnswer::Value(*v)),
            MetricBehaviour::Series { len, a, b } => Ok(MetricAnswer::Series(
                (0..*len)
                    .map(|i| Sample {
                        timestamp_ms: i as u64 * 1000,
                        value: if i % 2 == 0 { *a } else { *b },
                    })
                    .collect(),
            )),
            MetricBehaviour::NoData(t) => Ok(MetricAnswer::NoData(t.text())),
            MetricBehaviour::Error(t) => Err(plugin_error(t)),
        }
    }
}

struct Native {
    role: PluginRole,
    source: String,
    world: Arc<World>,
}

#[async_trait::async_trait]
impl ResolvedPlugin for Native {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: self.source.clone(),
            version: "0.0.0".into(),
            role: self.role,
            description: "fuzz double".into(),
            config_schema: "{}".into(),
        }
    }
    async fn validate_config(&self, _c: &serde_json::Value) -> CallResult<Vec<ConfigProblem>> {
        Ok(vec![])
    }
    async fn target(
        &self,
        _c: serde_json::Value,
        _ctx: dax::engine::resolve::TargetContext<'_>,
    ) -> anyhow::Result<Arc<dyn Target>> {
        Ok(Arc::new(FuzzTarget(self.world.clone())))
    }
    async fn strategy(&self, _p: serde_json::Value) -> anyhow::Result<Arc<dyn Strategy>> {
        Ok(match self.source.as_str() {
            "fuzz:script" => Arc::new(Scripted {
                world: self.world.clone(),
                at: AtomicUsize::new(0),
            }),
            _ => Arc::new(Rollout),
        })
    }
    async fn metric_provider(
        &self,
        _c: serde_json::Value,
    ) -> anyhow::Result<Arc<dyn MetricProvider>> {
        Ok(Arc::new(FuzzMetrics(self.world.clone())))
    }
}

/// Hands out the natives of one [`World`] by source name.
pub struct Resolver(pub Arc<World>);

#[async_trait::async_trait]
impl PluginResolver for Resolver {
    async fn resolve(
        &self,
        _name: &str,
        spec: &PluginSpec,
        _base: &Path,
    ) -> anyhow::Result<Arc<dyn ResolvedPlugin>> {
        let role = match spec.source.as_str() {
            "fuzz:target" => PluginRole::Target,
            "fuzz:script" | "fuzz:rollout" => PluginRole::Strategy,
            "fuzz:metrics" => PluginRole::MetricProvider,
            other => anyhow::bail!("no fuzz plugin `{other}`"),
        };
        Ok(Arc::new(Native {
            role,
            source: spec.source.clone(),
            world: self.0.clone(),
        }))
    }
}

/// An engine over `state` whose plugins are `world`'s natives; journals go to the page
/// cache (no flush per record) and operator control is polled every 10 ms.
pub fn engine(state: &Path, world: Arc<World>) -> dax::engine::Engine {
    let mut dir = dax::state::StateDir::new(state);
    dir.durability = dax::state::Durability::Buffered;
    let mut engine = dax::engine::Engine::new(dir, Arc::new(Resolver(world)));
    engine.control_poll = std::time::Duration::from_millis(10);
    engine
}
