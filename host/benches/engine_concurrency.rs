//! N concurrent deployments in one host, each stepping every second: host CPU, RSS per
//! deployment and step lateness (how late each 1 s wait ends, p50/p99).
//!
//! ```sh
//! cargo bench -p dax --bench engine_concurrency -- 100 1000 10000
//! DAX_BENCH_STEPS=10 DAX_BENCH_FSYNC=0 DAX_BENCH_STARTUPS=8 cargo bench -p dax --bench engine_concurrency -- 1000
//! ```
//!
//! Each deployment runs the real engine (journal, decisions, outcomes, analysis) with
//! host-native doubles for the strategy (wait 1 s → set weight → analyze, repeated
//! `DAX_BENCH_STEPS` times, default 30 so that every deployment is still rolling out when the
//! last one starts), the target (no-op) and one metric check (constant 100). Journals go to a
//! temp dir and are fsync'd as in production (group commit); `DAX_BENCH_FSYNC=0` writes them
//! to the page cache only. `DAX_BENCH_STARTUPS` overrides the engine's start-up permits.
//! `DAX_BENCH_DIR` puts the state directories on another filesystem: on ext4, creating
//! files is much slower for a few minutes after many were deleted nearby (its allocator skips
//! recently freed inodes), which is what the previous run's cleanup does.
//!
//! With journals fsync'd and N ≥ 10,000 it also says whether issue 14's target was met (p99
//! lateness of every step < 100 ms, every deployment promoted) and exits 1 when it was not.
//!
//! Columns: `peak` is the most deployments rolling out at once; `start-up` is when the last
//! one took its first step; `steady CPU` is the CPU share after that; lateness is reported for
//! every wait and for the waits that began after the start-up burst.

use dax::contract::*;

/// The same allocator as the `dax` binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use dax::engine::resolve::TargetContext;
use dax::engine::{Engine, PluginResolver, ResolvedPlugin};
use dax::plugin::PluginSpec;
use dax::state::{Durability, StateDir};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How late each wait ended, with when it started; and when the last deployment began its
/// rollout (the end of the start-up burst).
#[derive(Default)]
struct Lateness {
    /// (wait started, ms after the epoch; ms late)
    samples: Mutex<Vec<(u64, u64)>>,
    last_start_ms: std::sync::atomic::AtomicU64,
    /// Deployments between their first and their last strategy step, and the most at once.
    rolling_out: std::sync::atomic::AtomicU64,
    peak_rolling_out: std::sync::atomic::AtomicU64,
}

struct BenchStrategy {
    steps: u32,
    lateness: Arc<Lateness>,
    epoch: Instant,
}

fn now_ms(epoch: Instant) -> u64 {
    epoch.elapsed().as_millis() as u64
}

// State: [phase, step, wait_started_ms (8 bytes)].
#[async_trait::async_trait]
impl Strategy for BenchStrategy {
    async fn describe_plan(&self) -> CallResult<Plan> {
        Ok(Plan {
            steps: vec![],
            best_case_ms: self.steps as u64 * 1000,
            worst_case_rollback_ms: 1000,
        })
    }
    async fn start(&self) -> CallResult<Decision> {
        self.lateness
            .last_start_ms
            .fetch_max(now_ms(self.epoch), std::sync::atomic::Ordering::Relaxed);
        let now = self
            .lateness
            .rolling_out
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.lateness
            .peak_rolling_out
            .fetch_max(now + 1, std::sync::atomic::Ordering::Relaxed);
        Ok(self.wait(0))
    }
    async fn next(&self, state: &[u8], obs: &Observation) -> CallResult<Decision> {
        let phase = state[0];
        let step = state[1] as u32;
        match phase {
            0 => {
                let started = u64::from_le_bytes(state[2..10].try_into().unwrap());
                let late = now_ms(self.epoch).saturating_sub(started + 1000);
                self.lateness.samples.lock().unwrap().push((started, late));
                let w = ((step + 1) * 100 / self.steps).min(100) as u8;
                Ok(Decision {
                    next: Step::SetTraffic(TrafficSplit {
                        candidate_weight: w,
                        ..Default::default()
                    }),
                    state: vec![1, step as u8],
                    note: String::new(),
                })
            }
            1 => Ok(Decision {
                next: Step::Analyze(AnalysisRequest {
                    window_ms: 1000,
                    compare_baseline: false,
                }),
                state: vec![2, step as u8],
                note: String::new(),
            }),
            5 => Ok(Decision {
                next: Step::Promote,
                state: vec![4, 0],
                note: String::new(),
            }),
            4 => Ok(Decision {
                next: Step::Finish(FinalStatus::Promoted),
                state: vec![3],
                note: String::new(),
            }),
            _ => {
                let ok = matches!(&obs.last, Outcome::Analysis(a) if a.checks.iter().all(|c| c.verdict == CheckVerdict::Pass));
                if !ok || step + 1 >= self.steps {
                    self.lateness
                        .rolling_out
                        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
                }
                if !ok {
                    return Ok(Decision {
                        next: Step::Finish(FinalStatus::RolledBack),
                        state: vec![3],
                        note: String::new(),
                    });
                }
                if step + 1 >= self.steps {
                    // The engine promotes only a candidate it saw ready, and finishes as
                    // promoted only after a promote succeeded.
                    Ok(Decision {
                        next: Step::CheckStatus(Slot::Candidate),
                        state: vec![5, 0],
                        note: String::new(),
                    })
                } else {
                    Ok(self.wait(step + 1))
                }
            }
        }
    }
}

impl BenchStrategy {
    fn wait(&self, step: u32) -> Decision {
        let mut state = vec![0, step as u8];
        state.extend_from_slice(&now_ms(self.epoch).to_le_bytes());
        Decision {
            next: Step::Wait(1000),
            state,
            note: String::new(),
        }
    }
}

struct NoopTarget;

#[async_trait::async_trait]
impl Target for NoopTarget {
    async fn traffic_support(&self) -> CallResult<TrafficSupport> {
        // Everything, so `dax deploy` skips its dry run of the strategy.
        Ok(TrafficSupport {
            weights: true,
            header_matches: true,
            cookie_matches: true,
            mirroring: true,
            note: String::new(),
        })
    }
    async fn deploy(&self, _w: &Workload) -> CallResult<()> {
        Ok(())
    }
    async fn set_traffic(&self, _a: &str, _s: &TrafficSplit) -> CallResult<()> {
        Ok(())
    }
    async fn scale(&self, _a: &str, _s: Slot, _r: u32) -> CallResult<()> {
        Ok(())
    }
    async fn status(&self, _a: &str, _s: Slot) -> CallResult<WorkloadStatus> {
        Ok(WorkloadStatus {
            desired: 1,
            ready: 1,
            updated: 1,
            ..Default::default()
        })
    }
    async fn promote(&self, _a: &str) -> CallResult<()> {
        Ok(())
    }
    async fn rollback(&self, _a: &str) -> CallResult<()> {
        Ok(())
    }
    async fn finalize(&self, _a: &str) -> CallResult<()> {
        Ok(())
    }
}

struct ConstMetrics;

#[async_trait::async_trait]
impl MetricProvider for ConstMetrics {
    async fn run_query(&self, _q: &MetricQuery) -> CallResult<MetricAnswer> {
        Ok(MetricAnswer::Value(100.0))
    }
}

struct Natives {
    steps: u32,
    lateness: Arc<Lateness>,
    epoch: Instant,
}

struct Native {
    role: PluginRole,
    steps: u32,
    lateness: Arc<Lateness>,
    epoch: Instant,
}

#[async_trait::async_trait]
impl ResolvedPlugin for Native {
    fn info(&self) -> PluginInfo {
        PluginInfo {
            name: format!("bench-{}", self.role),
            version: "0".into(),
            role: self.role,
            description: String::new(),
            config_schema: "{}".into(),
        }
    }
    async fn validate_config(&self, _c: &serde_json::Value) -> CallResult<Vec<ConfigProblem>> {
        Ok(vec![])
    }
    async fn target(
        &self,
        _c: serde_json::Value,
        _ctx: TargetContext<'_>,
    ) -> anyhow::Result<Arc<dyn Target>> {
        Ok(Arc::new(NoopTarget))
    }
    async fn strategy(&self, _p: serde_json::Value) -> anyhow::Result<Arc<dyn Strategy>> {
        Ok(Arc::new(BenchStrategy {
            steps: self.steps,
            lateness: self.lateness.clone(),
            epoch: self.epoch,
        }))
    }
    async fn metric_provider(
        &self,
        _c: serde_json::Value,
    ) -> anyhow::Result<Arc<dyn MetricProvider>> {
        Ok(Arc::new(ConstMetrics))
    }
}

#[async_trait::async_trait]
impl PluginResolver for Natives {
    async fn resolve(
        &self,
        _name: &str,
        spec: &PluginSpec,
        _base: &Path,
    ) -> anyhow::Result<Arc<dyn ResolvedPlugin>> {
        let role = match spec.source.as_str() {
            "bench:target" => PluginRole::Target,
            "bench:strategy" => PluginRole::Strategy,
            _ => PluginRole::MetricProvider,
        };
        Ok(Arc::new(Native {
            role,
            steps: self.steps,
            lateness: self.lateness.clone(),
            epoch: self.epoch,
        }))
    }
}

const CONFIG: &str = r#"
[deployment]
app = "bench"
version = "v2"
[target]
plugin = "t"
[strategy]
plugin = "s"
[[checks]]
name = "success-rate"
provider = "m"
query = "request-success-rate"
min = 99
[plugins.t]
source = "bench:target"
[plugins.s]
source = "bench:strategy"
[plugins.m]
source = "bench:metrics"
"#;

/// utime + stime of this process, in seconds.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: f64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// One row of the table.
struct Row {
    wall_s: f64,
    /// When the last deployment began its rollout: the start-up burst.
    startup_s: f64,
    cpu_s: f64,
    /// CPU used between the end of the start-up burst and the end, as % of one core.
    steady_cpu_pct: f64,
    rss_per_kib: f64,
    /// Lateness of every wait (p50, p99, max), and of the waits that began after start-up.
    all: (u64, u64, u64),
    steady: (u64, u64, u64),
    promoted: usize,
    peak_rolling_out: u64,
}

fn lateness_stats(mut late: Vec<u64>) -> (u64, u64, u64) {
    late.sort_unstable();
    (
        percentile(&late, 0.5),
        percentile(&late, 0.99),
        *late.last().unwrap_or(&0),
    )
}

async fn run(n: usize, steps: u32, fsync: bool, startups: Option<usize>) -> Row {
    let dir = match std::env::var_os("DAX_BENCH_DIR") {
        Some(parent) => tempfile::tempdir_in(parent).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let lateness = Arc::new(Lateness::default());
    let epoch = Instant::now();
    let resolver = Natives {
        steps,
        lateness: lateness.clone(),
        epoch,
    };
    let mut state = StateDir::new(dir.path());
    state.durability = if fsync {
        Durability::Fsync
    } else {
        Durability::Buffered
    };
    let mut engine = Engine::new(state, Arc::new(resolver));
    engine.control_poll = Duration::from_secs(1);
    if let Some(permits) = startups {
        engine.startup = Arc::new(tokio::sync::Semaphore::new(permits));
    }
    let cfg = dax::config::parse(CONFIG, "bench.toml", Path::new(".")).unwrap();
    let rss0 = rss_kib();
    let cpu0 = cpu_seconds();
    let flush0 = dax::state::flush_stats();
    let t0 = Instant::now();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(rss0));
    // (ms after the epoch, CPU seconds) every 200 ms, for the steady-state CPU share.
    let cpu_samples = Arc::new(Mutex::new(Vec::new()));
    let sampler = {
        let (peak, cpu_samples) = (peak.clone(), cpu_samples.clone());
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
                cpu_samples
                    .lock()
                    .unwrap()
                    .push((now_ms(epoch), cpu_seconds()));
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        })
    };
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let engine = engine.clone();
        let cfg = cfg.clone();
        tasks.push(tokio::spawn(async move {
            engine.deploy(cfg, Some(format!("d{i}")), None).await
        }));
    }
    let mut promoted = 0;
    let mut first_other = None;
    for t in tasks {
        match t.await {
            Ok(Ok(r)) if r.status == FinalStatus::Promoted => promoted += 1,
            other => {
                first_other.get_or_insert_with(|| match other {
                    Ok(Ok(r)) => format!("ended {:?}: {:?}", r.status, r.reason),
                    Ok(Err(e)) => format!("failed: {e:#}"),
                    Err(e) => format!("panicked: {e}"),
                });
            }
        }
    }
    // A run whose deployments did not promote measured something else: say what.
    if let Some(other) = first_other {
        eprintln!(
            "  N={n}: {} of {n} deployments did not promote; the first {other}",
            n - promoted
        );
    }
    sampler.abort();
    let flush1 = dax::state::flush_stats();
    if flush1.rounds > flush0.rounds {
        let rounds = flush1.rounds - flush0.rounds;
        eprintln!(
            "  N={n}: {rounds} flush rounds, {:.0} appends each, {:.1} ms each on average, longest {:.1} ms",
            (flush1.appends - flush0.appends) as f64 / rounds as f64,
            (flush1.busy_us - flush0.busy_us) as f64 / rounds as f64 / 1000.0,
            flush1.longest_us as f64 / 1000.0
        );
    }
    // The journals of the finished deployments are written from the host log now (what
    // `dax` does on its way out), before the state directory is deleted.
    let checkpoint = Instant::now();
    dax::state::checkpoint().unwrap();
    eprintln!(
        "  N={n}: the final checkpoint wrote every journal in {:.0} ms",
        checkpoint.elapsed().as_secs_f64() * 1000.0
    );
    if flush1.checkpoints > flush0.checkpoints {
        eprintln!(
            "  N={n}: {} checkpoints of the host log during the run, {:.0} ms in all",
            flush1.checkpoints - flush0.checkpoints,
            (flush1.checkpoint_us - flush0.checkpoint_us) as f64 / 1000.0
        );
    }
    let wall_s = t0.elapsed().as_secs_f64();
    let cpu_s = cpu_seconds() - cpu0;
    let rss_per_kib = (peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(rss0)) as f64
        / n as f64;
    let last_start = lateness
        .last_start_ms
        .load(std::sync::atomic::Ordering::Relaxed);
    let steady_cpu_pct = {
        let samples = cpu_samples.lock().unwrap();
        let from = samples.iter().find(|(t, _)| *t >= last_start).copied();
        match (from, samples.last()) {
            (Some((t1, c1)), Some(&(t2, c2))) if t2 > t1 => {
                100.0 * (c2 - c1) / ((t2 - t1) as f64 / 1000.0)
            }
            _ => 100.0 * cpu_s / wall_s,
        }
    };
    let samples = lateness.samples.lock().unwrap().clone();
    if let Some(path) = std::env::var_os("DAX_BENCH_SAMPLES") {
        // Every wait as "started_ms late_ms", for plotting where the late ones cluster.
        let text: String = samples.iter().map(|(s, l)| format!("{s} {l}\n")).collect();
        std::fs::write(path, text).unwrap();
    }
    let steady = samples
        .iter()
        .filter(|(started, _)| *started > last_start)
        .map(|(_, late)| *late)
        .collect();
    Row {
        wall_s,
        startup_s: last_start as f64 / 1000.0,
        cpu_s,
        steady_cpu_pct,
        rss_per_kib,
        all: lateness_stats(samples.iter().map(|(_, late)| *late).collect()),
        steady: lateness_stats(steady),
        promoted,
        peak_rolling_out: lateness
            .peak_rolling_out
            .load(std::sync::atomic::Ordering::Relaxed),
    }
}

fn main() {
    let mut ns: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if ns.is_empty() {
        ns = vec![100, 1000, 10000];
    }
    let steps: u32 = std::env::var("DAX_BENCH_STEPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(30);
    // Journals are fsync'd as in production unless DAX_BENCH_FSYNC=0.
    let fsync = std::env::var("DAX_BENCH_FSYNC").map_or(true, |v| v != "0");
    let startups: Option<usize> = std::env::var("DAX_BENCH_STARTUPS")
        .ok()
        .and_then(|v| v.parse().ok());
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "engine_concurrency: {steps} steps of 1 s per deployment (wait 1s → set weight → analyze), journal {}, {threads} cores",
        if fsync { "fsync'd (group commit)" } else { "without fsync" }
    );
    println!(
        "{:>6} | {:>6} | {:>6} | {:>8} | {:>6} | {:>10} | {:>9} | {:>22} | {:>23} | {:>8}",
        "N",
        "peak",
        "wall s",
        "start-up",
        "CPU s",
        "steady CPU",
        "RSS/dep",
        "late all p50/p99/max",
        "late steady p50/p99/max",
        "promoted"
    );
    let mut missed = false;
    for n in ns {
        let r = rt.block_on(run(n, steps, fsync, startups));
        println!(
            "{:>6} | {:>6} | {:>6.1} | {:>6.1} s | {:>6.2} | {:>9.1}% | {:>5.1} KiB | {:>5} / {:>5} / {:>5} ms | {:>5} / {:>5} / {:>5} ms  | {:>8}",
            n,
            r.peak_rolling_out,
            r.wall_s,
            r.startup_s,
            r.cpu_s,
            r.steady_cpu_pct,
            r.rss_per_kib,
            r.all.0,
            r.all.1,
            r.all.2,
            r.steady.0,
            r.steady.1,
            r.steady.2,
            r.promoted
        );
        // Issue 14's target: 10,000 deployments, journals fsync'd, p99 lateness < 100 ms.
        if fsync && n >= 10_000 {
            let met = r.all.1 < 100 && r.promoted == n;
            missed |= !met;
            println!(
                "  target: {n} durable deployments at p99 lateness < 100 ms, all promoted: {}",
                if met { "met" } else { "NOT met" }
            );
        }
    }
    if missed {
        std::process::exit(1);
    }
}
