//! N concurrent deployments in one host, each stepping every second: host CPU, RSS per
//! deployment and step lateness (how late each 1 s wait ends, p50/p99).
//!
//! ```sh
//! cargo bench -p dax --bench engine_concurrency -- 100 1000 10000
//! DAX_BENCH_STEPS=10 DAX_BENCH_FSYNC=1 cargo bench -p dax --bench engine_concurrency -- 1000
//! ```
//!
//! Each deployment runs the real engine (journal, decisions, outcomes, analysis) with
//! host-native doubles for the strategy (wait 1 s → set weight → analyze, repeated), the
//! target (no-op) and one metric check (constant 100). Journals go to a temp dir; by default
//! they are written without fsync (page cache) because 10,000 deployments × 3 records/s of
//! fsyncs measure the disk, not the engine; `DAX_BENCH_FSYNC=1` turns fsync on.

use dax::contract::*;
use dax::engine::{Engine, PluginResolver, ResolvedPlugin};
use dax::plugin::PluginSpec;
use dax::state::{Durability, StateDir};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// When each wait started, per deployment, and how late each ended.
#[derive(Default)]
struct Lateness {
    samples: Mutex<Vec<u64>>,
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
        Ok(self.wait(0))
    }
    async fn next(&self, state: &[u8], obs: &Observation) -> CallResult<Decision> {
        let phase = state[0];
        let step = state[1] as u32;
        match phase {
            0 => {
                let started = u64::from_le_bytes(state[2..10].try_into().unwrap());
                let late = now_ms(self.epoch).saturating_sub(started + 1000);
                self.lateness.samples.lock().unwrap().push(late);
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
            _ => {
                let ok = matches!(&obs.last, Outcome::Analysis(a) if a.checks.iter().all(|c| c.verdict == CheckVerdict::Pass));
                if !ok {
                    return Ok(Decision {
                        next: Step::Finish(FinalStatus::RolledBack),
                        state: vec![3],
                        note: String::new(),
                    });
                }
                if step + 1 >= self.steps {
                    Ok(Decision {
                        next: Step::Finish(FinalStatus::Promoted),
                        state: vec![3],
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
    async fn target(&self, _c: serde_json::Value, _b: &Path) -> anyhow::Result<Arc<dyn Target>> {
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

async fn run(n: usize, steps: u32, fsync: bool) -> (f64, f64, f64, u64, u64, u64, usize) {
    let dir = tempfile::tempdir().unwrap();
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
    let cfg = dax::config::parse(CONFIG, "bench.toml", Path::new(".")).unwrap();
    let rss0 = rss_kib();
    let cpu0 = cpu_seconds();
    let t0 = Instant::now();
    let peak = Arc::new(std::sync::atomic::AtomicU64::new(rss0));
    let sampler = {
        let peak = peak.clone();
        tokio::spawn(async move {
            loop {
                peak.fetch_max(rss_kib(), std::sync::atomic::Ordering::Relaxed);
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
    for t in tasks {
        if let Ok(Ok(r)) = t.await {
            if r.status == FinalStatus::Promoted {
                promoted += 1;
            }
        }
    }
    sampler.abort();
    let wall = t0.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    let rss_per = (peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(rss0)) as f64
        / n as f64;
    let mut s = lateness.samples.lock().unwrap().clone();
    s.sort_unstable();
    (
        wall,
        cpu,
        rss_per,
        percentile(&s, 0.5),
        percentile(&s, 0.99),
        *s.last().unwrap_or(&0),
        promoted,
    )
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
        .unwrap_or(5);
    let fsync = std::env::var("DAX_BENCH_FSYNC").is_ok_and(|v| v == "1");
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(2);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!(
        "engine_concurrency: {steps} steps of 1 s per deployment (wait 1s → set weight → analyze), journal {}, {threads} cores",
        if fsync { "fsync'd" } else { "without fsync" }
    );
    println!(
        "{:>7} | {:>7} | {:>9} | {:>11} | {:>13} | {:>8} | {:>8} | {:>8} | {:>8}",
        "N",
        "wall s",
        "CPU s",
        "CPU % core",
        "RSS/deploy KiB",
        "late p50",
        "late p99",
        "late max",
        "promoted"
    );
    for n in ns {
        let (wall, cpu, rss, p50, p99, max, promoted) = rt.block_on(run(n, steps, fsync));
        println!(
            "{:>7} | {:>7.1} | {:>9.2} | {:>10.1}% | {:>14.1} | {:>6} ms | {:>6} ms | {:>6} ms | {:>8}",
            n,
            wall,
            cpu,
            100.0 * cpu / wall,
            rss,
            p50,
            p99,
            max,
            promoted
        );
    }
}
