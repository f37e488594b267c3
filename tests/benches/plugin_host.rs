//! Plugin host benchmark: prints one table measured in one run.
//!
//! `cargo bench -p dax-tests --bench plugin_host`
//!
//! - warm call: host -> plugin -> host for a trivial `run-query`, through the same
//!   `MetricProvider` trait the engine uses, vs the same logic as a native Rust impl, and
//!   vs bare wasmtime calling the same component on the same engine (our floor: async with
//!   the same pooling, epoch interruption and memory limiter, and a sync call); `dax` and
//!   bare wasmtime alternate in short rounds and the ratio is the median of the rounds'
//!   ratios, so a VM whose speed drifts during the run moves both sides alike;
//! - instantiation of a fresh instance from the `InstancePre`;
//! - load of a `.wasm` file from the compile cache vs a cold compile, for a Rust and a
//!   JavaScript plugin: as a later run loads it (stamps vouch for the entry and the `.wasm`,
//!   so neither is read) and as the first load after a build (the `.wasm` read and hashed,
//!   the entry read and its keyed hash checked).
//!
//! With `DAX_BENCH_JSON=/path/file.json` it also writes the numbers as one JSON object
//! (`bench/peers/` prints them beside go-plugin and Extism).

use dax::contract::{CallResult, MetricAnswer, MetricProvider, MetricQuery, QueryKind};
use dax::plugin::bindings::metric_provider::exports::dax::plugin::metric_provider as wmetric;
use dax::plugin::bindings::metric_provider::MetricProviderPluginPre;
use dax::plugin::bindings::wit_types::PluginError;
use dax::plugin::cache::STAMP_AFTER;
use dax::plugin::sandbox::{PluginState, Sandbox};
use dax::plugin::wasmtime::component::{Component, Linker};
use dax::plugin::wasmtime::{Store, UpdateDeadline};
use dax::plugin::{CompileSource, HostOptions, PluginHost};
use std::path::Path;
use std::time::{Duration, Instant};

/// The allocator of the `dax` binary, so calls are measured as they ship (a call's future is
/// boxed by `async_trait`, and glibc's malloc is slow for one that size).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

struct NativeEcho;

#[async_trait::async_trait]
impl MetricProvider for NativeEcho {
    async fn run_query(&self, q: &MetricQuery) -> CallResult<MetricAnswer> {
        // The same logic as tests/plugins/hello-metrics.
        match q.text.strip_prefix("value:") {
            Some(v) => Ok(MetricAnswer::Value(v.trim().parse().unwrap_or(f64::NAN))),
            None => Ok(MetricAnswer::NoData(format!(
                "no series matches `{}`",
                q.text
            ))),
        }
    }
}

fn query() -> MetricQuery {
    MetricQuery {
        text: "value:1".into(),
        kind: QueryKind::Instant,
        window_ms: 1,
        step_ms: 0,
        vars: vec![],
    }
}

/// Calls in a `DAX_BENCH_PROFILE` loop.
const PROFILE_CALLS: u32 = 20_000_000;

/// Median of `rounds` rounds of `iters` calls each, per call.
async fn per_call<F, Fut>(rounds: usize, iters: usize, mut f: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iters {
            f().await;
        }
        samples.push(start.elapsed() / iters as u32);
    }
    samples.sort();
    samples[rounds / 2]
}

/// [`per_call`] for a body that borrows something mutably (a wasmtime store).
macro_rules! per_call_mut {
    ($rounds:expr, $iters:expr, $body:expr) => {{
        let mut samples = Vec::with_capacity($rounds);
        for _ in 0..$rounds {
            let start = Instant::now();
            for _ in 0..$iters {
                $body;
            }
            samples.push(start.elapsed() / $iters as u32);
        }
        samples.sort();
        samples[$rounds / 2]
    }};
}

/// A store like the one `dax` gives every plugin instance: the plugin's sandbox state, its
/// memory limiter and an epoch deadline (the callback counts ticks against the CPU budget).
fn bare_store(host: &PluginHost, yield_on_tick: bool) -> Store<PluginState> {
    let sandbox = Sandbox::new(
        "bare",
        &Default::default(),
        &Default::default(),
        Path::new("."),
    )
    .unwrap();
    let mut store = Store::new(host.engine(), sandbox.new_state().unwrap());
    store.limiter(|s| &mut s.limiter);
    store.epoch_deadline_callback(move |mut ctx| {
        let state = ctx.data_mut();
        state.cpu_ticks += 1;
        if state.cpu_ticks > state.cpu_tick_budget {
            return Err(dax::plugin::wasmtime::Error::msg("cpu deadline"));
        }
        Ok(if yield_on_tick {
            UpdateDeadline::Yield(1)
        } else {
            UpdateDeadline::Continue(1)
        })
    });
    store.set_epoch_deadline(1);
    store
}

fn bare_query() -> wmetric::Query<'static> {
    wmetric::Query {
        text: "value:1",
        kind: wmetric::QueryKind::Instant,
        window_ms: 1,
        step_ms: 0,
        vars: &[],
    }
}

/// The same `run-query` call with plain wasmtime on `dax`'s engine, async: `dax`'s linker,
/// the generated bindings, `call_async` on a fiber. Our floor.
struct BareAsync {
    store: Store<PluginState>,
    guest: wmetric::Guest,
}

impl BareAsync {
    async fn new(host: &PluginHost, component: &Component) -> Self {
        let pre = MetricProviderPluginPre::new(host.linker().instantiate_pre(component).unwrap())
            .unwrap();
        let mut store = bare_store(host, true);
        let world = pre.instantiate_async(&mut store).await.unwrap();
        let guest = world.dax_plugin_metric_provider().clone();
        BareAsync { store, guest }
    }

    async fn call(&mut self) {
        // A CPU budget per call, as `dax` gives each call: without it the ticks of every call
        // add up and a long loop ends in "cpu deadline".
        self.store.data_mut().begin_call();
        self.store.set_epoch_deadline(1);
        let answer = self
            .guest
            .call_run_query(&mut self.store, "{}", bare_query())
            .await
            .unwrap();
        assert!(matches!(answer, Ok(wmetric::Answer::Value(v)) if v == 1.0));
    }
}

/// Warm calls of `dax` and of bare wasmtime in alternating rounds of `iters`, so a machine
/// that speeds up or slows down during the run moves both sides alike: (dax median, bare
/// median, median of the rounds' ratios).
async fn paired_warm_calls(
    rounds: usize,
    iters: usize,
    wasm: &dyn MetricProvider,
    bare: &mut BareAsync,
) -> (Duration, Duration, f64) {
    let q = query();
    let (mut dax, mut floor, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iters {
            assert_eq!(wasm.run_query(&q).await.unwrap(), MetricAnswer::Value(1.0));
        }
        let d = start.elapsed() / iters as u32;
        let start = Instant::now();
        for _ in 0..iters {
            bare.call().await;
        }
        let b = start.elapsed() / iters as u32;
        ratios.push(d.as_secs_f64() / b.as_secs_f64());
        dax.push(d);
        floor.push(b);
    }
    dax.sort();
    floor.sort();
    ratios.sort_by(f64::total_cmp);
    (dax[rounds / 2], floor[rounds / 2], ratios[rounds / 2])
}

/// The same `run-query` call with plain wasmtime, sync: the typed function called without a
/// fiber (below the floor `dax` can reach: every plugin call may yield).
fn bare_sync_call(host: &PluginHost, component: &Component) -> Option<Duration> {
    // `run-query` of this plugin calls no import, so every import is a trap (WASI's sync
    // bindings do not link here).
    let mut linker = Linker::<PluginState>::new(host.engine());
    linker.define_unknown_imports_as_traps(component).unwrap();
    let mut store = bare_store(host, false);
    match linker.instantiate(&mut store, component) {
        Ok(instance) => {
            let interface = instance
                .get_export_index(&mut store, None, "dax:plugin/metric-provider@0.1.0")
                .expect("the metric-provider export");
            let index = instance
                .get_export_index(&mut store, Some(&interface), "run-query")
                .expect("run-query");
            let run_query = instance
                .get_typed_func::<(&str, wmetric::Query), (Result<wmetric::Answer, PluginError>,)>(
                    &mut store, &index,
                )
                .unwrap();
            match run_query.call(&mut store, ("{}", bare_query())) {
                Ok(_) => {
                    for _ in 0..2_000 {
                        run_query
                            .call(&mut store, ("{}", bare_query()))
                            .unwrap()
                            .0
                            .unwrap();
                    }
                    Some(per_call_mut!(15, 20_000, {
                        let (answer,) = run_query.call(&mut store, ("{}", bare_query())).unwrap();
                        assert!(matches!(answer, Ok(wmetric::Answer::Value(v)) if v == 1.0));
                    }))
                }
                Err(e) => {
                    eprintln!("bare sync call not measured: {e:#}");
                    None
                }
            }
        }
        Err(e) => {
            eprintln!("bare sync call not measured: {e:#}");
            None
        }
    }
}

fn fmt(d: Duration) -> String {
    if d < Duration::from_micros(10) {
        format!("{:.2} µs", d.as_nanos() as f64 / 1000.0)
    } else if d < Duration::from_millis(10) {
        format!("{:.1} µs", d.as_nanos() as f64 / 1000.0)
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }
}

/// How long each kind of load took (medians).
struct LoadTimes {
    /// Compile into an empty cache, then load.
    cold: Duration,
    /// From the cache just after a build (entry and `.wasm` under `STAMP_AFTER` old): the
    /// `.wasm` is read and hashed, the entry read and its keyed hash checked.
    hashed: Duration,
    /// From the cache in a later run: stamps vouch for the entry and the `.wasm` by their
    /// stat data.
    stamped: Duration,
    /// A new plugin host (engine with its pooled instance slots, linker, compile cache)
    /// plus a `stamped` load: what a `dax` process pays before its first plugin call.
    start_up: Duration,
}

/// Medians of `colds` cold loads (each into an empty compile cache) and of `rounds` loads
/// from the compile cache of each kind, interleaved round by round so that all three see the
/// machine in the same state. Every load reads a `.wasm` file the way `dax deploy` does, by a
/// fresh host dropped before the next load is timed (no `dax` process loads while another
/// host is torn down).
async fn load_times(bytes: &[u8], colds: usize, rounds: usize) -> LoadTimes {
    let sources = tempfile::tempdir().unwrap();
    let source = |name: &str| {
        let path = sources.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let (cold_source, stamped_source, hashed_source) = (
        source("cold.wasm"),
        source("stamped.wasm"),
        source("hashed.wasm"),
    );
    let load = |options: &HostOptions, path: &Path, expect: CompileSource| {
        let options = options.clone();
        let spec = dax_tests::spec(path);
        async move {
            let new_host = Instant::now();
            let host = PluginHost::new(options).unwrap();
            let start = Instant::now();
            let (_, source) = host
                .load_reporting("bench", &spec, Path::new("."))
                .await
                .unwrap();
            let took = start.elapsed();
            assert_eq!(source, expect);
            (took, start - new_host)
        }
    };
    let cache = || {
        let dir = tempfile::tempdir().unwrap();
        let options = HostOptions {
            cache_dir: dir.path().to_path_buf(),
            pooling: true,
            ..Default::default()
        };
        (dir, options)
    };
    // A cache as a later run finds it: the entry and the `.wasm` settled, then stamped by one
    // load, so neither is read or hashed again.
    let (stamped_dir, stamped_cache) = cache();
    load(&stamped_cache, &stamped_source, CompileSource::Compiled).await;
    tokio::time::sleep(STAMP_AFTER + Duration::from_millis(50)).await;
    load(&stamped_cache, &stamped_source, CompileSource::Cache).await;
    // A cache whose entry, like the `.wasm`, is replaced by a fresh copy (a new inode, a new
    // ctime) before each load, as just after a build: every load reads and hashes both.
    let (hashed_dir, hashed_cache) = cache();
    load(&hashed_cache, &hashed_source, CompileSource::Compiled).await;
    let entry = cwasm_in(hashed_dir.path());
    let renew = |path: &Path| {
        let copy = path.with_extension("copy");
        std::fs::copy(path, &copy).unwrap();
        std::fs::rename(&copy, path).unwrap();
    };
    let (mut cold, mut stamped, mut hashed, mut start_up) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        if round < colds {
            let (_dir, empty) = cache();
            cold.push(load(&empty, &cold_source, CompileSource::Compiled).await.0);
        }
        let (load_took, new_host_took) =
            load(&stamped_cache, &stamped_source, CompileSource::Cache).await;
        stamped.push(load_took);
        start_up.push(new_host_took + load_took);
        renew(&entry);
        renew(&hashed_source);
        hashed.push(
            load(&hashed_cache, &hashed_source, CompileSource::Cache)
                .await
                .0,
        );
    }
    drop((stamped_dir, hashed_dir));
    let median = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2]
    };
    LoadTimes {
        cold: median(cold),
        hashed: median(hashed),
        stamped: median(stamped),
        start_up: median(start_up),
    }
}

/// The one `.cwasm` entry under a compile cache directory.
fn cwasm_in(dir: &Path) -> std::path::PathBuf {
    let engine_dir = std::fs::read_dir(dir)
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::read_dir(engine_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cwasm"))
        .expect("a compiled entry")
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let rust = std::fs::read(dax_tests::plugin_path("hello-metrics")).unwrap();
    let js = std::fs::read(dax_tests::js_plugin("js-metrics")).unwrap();

    let (host, _cache) = dax_tests::fresh_host();
    let plugin = host
        .load(
            "hello-metrics",
            &dax_tests::spec(&dax_tests::plugin_path("hello-metrics")),
            Path::new("."),
        )
        .await
        .unwrap();
    let wasm = plugin.metric_provider(serde_json::json!({})).await.unwrap();
    let native = NativeEcho;
    let q = query();
    // Warm up: compile caches, the idle instance, the tokio timer wheel.
    for _ in 0..2_000 {
        wasm.run_query(&q).await.unwrap();
    }
    // `DAX_BENCH_PROFILE=warm-call|bare-call|cached-load perf record ...`: one loop, for a
    // profiler (`bare-call` is the floor's loop, to set beside `warm-call`'s profile).
    match std::env::var("DAX_BENCH_PROFILE").as_deref() {
        Ok("warm-call") => {
            let start = Instant::now();
            for _ in 0..PROFILE_CALLS {
                wasm.run_query(&q).await.unwrap();
            }
            eprintln!("{} per call", fmt(start.elapsed() / PROFILE_CALLS));
            return;
        }
        Ok("bare-call") => {
            let component = Component::new(host.engine(), &rust).unwrap();
            let mut bare = BareAsync::new(&host, &component).await;
            let start = Instant::now();
            for _ in 0..PROFILE_CALLS {
                bare.call().await;
            }
            eprintln!("{} per call", fmt(start.elapsed() / PROFILE_CALLS));
            return;
        }
        Ok("cached-load") => {
            load_times(&rust, 1, 5_000).await;
            return;
        }
        _ => {}
    }
    let component = Component::new(host.engine(), &rust).unwrap();
    let mut bare = BareAsync::new(&host, &component).await;
    // What `async_trait` boxes per call: up to 1 KiB, mimalloc's fast path for small objects.
    let future_bytes = std::mem::size_of_val(wasm.run_query(&q).as_ref().get_ref());
    for _ in 0..2_000 {
        bare.call().await;
    }
    let (wasm_call, bare_async, warm_ratio) =
        paired_warm_calls(41, 5_000, wasm.as_ref(), &mut bare).await;
    let native_call = per_call(15, 20_000, || async {
        assert_eq!(
            native.run_query(&q).await.unwrap(),
            MetricAnswer::Value(1.0)
        )
    })
    .await;
    let bare_sync = bare_sync_call(&host, &component);
    let instantiate_rust = per_call(11, 2_000, || async {
        plugin.instantiate_fresh().await.unwrap()
    })
    .await;

    let js_plugin = host
        .load(
            "js-metrics",
            &dax_tests::spec(&dax_tests::js_plugin("js-metrics")),
            Path::new("."),
        )
        .await
        .unwrap();
    let instantiate_js = per_call(7, 200, || async {
        js_plugin.instantiate_fresh().await.unwrap()
    })
    .await;

    // Medians: of 11 cold loads for the Rust plugin, 1 for the JS one (seconds each), and of
    // 21 cached loads of each kind.
    let rust_loads = load_times(&rust, 11, 21).await;
    let js_loads = load_times(&js, 1, 21).await;

    println!(
        "pooling allocator: {}",
        if host.pooling() {
            "on"
        } else {
            "off (unavailable here)"
        }
    );
    let mut table = Table::default();
    table.row(
        "warm call, Wasm plugin (trait -> sandbox -> guest)",
        fmt(wasm_call),
        Some(("<= 2 µs", wasm_call <= Duration::from_micros(2))),
    );
    table.row(
        "bare wasmtime, same component, async call",
        fmt(bare_async),
        None,
    );
    table.row(
        "  ratio dax warm call / bare async call",
        format!("{warm_ratio:.2}x"),
        Some(("<= 1.2x", warm_ratio <= 1.2)),
    );
    table.row(
        "  future of one warm call (boxed by the trait)",
        format!("{future_bytes} B"),
        Some(("<= 1024 B", future_bytes <= 1024)),
    );
    table.row(
        "bare wasmtime, same component, sync call",
        bare_sync.map(fmt).unwrap_or_else(|| "n/a".into()),
        None,
    );
    table.row("same logic, native Rust trait call", fmt(native_call), None);
    table.row(
        "  ratio Wasm / native",
        format!(
            "{:.0}x",
            wasm_call.as_secs_f64() / native_call.as_secs_f64()
        ),
        None,
    );
    table.row(
        "instantiate from InstancePre, Rust plugin",
        fmt(instantiate_rust),
        Some(("<= 50 µs", instantiate_rust <= Duration::from_micros(50))),
    );
    table.row(
        "instantiate from InstancePre, JS plugin",
        fmt(instantiate_js),
        None,
    );
    for (plugin, bytes, loads) in [("Rust", &rust, &rust_loads), ("JS", &js, &js_loads)] {
        let cached_ratio = loads.cold.as_secs_f64() / loads.stamped.as_secs_f64();
        table.row(
            &format!(
                "cold compile + load, {plugin} plugin ({} KiB)",
                bytes.len() / 1024
            ),
            fmt(loads.cold),
            None,
        );
        table.row(
            &format!("load from compile cache, {plugin} plugin"),
            fmt(loads.stamped),
            None,
        );
        table.row(
            "  ratio cold / cached",
            format!("{cached_ratio:.0}x"),
            Some((">= 100x", cached_ratio >= 100.0)),
        );
        table.row(
            "  same, first load after a build (all bytes hashed)",
            fmt(loads.hashed),
            None,
        );
        table.row(
            "  ratio cold / hashed load",
            format!(
                "{:.0}x",
                loads.cold.as_secs_f64() / loads.hashed.as_secs_f64()
            ),
            None,
        );
        table.row(
            "  new plugin host + load from compile cache",
            fmt(loads.start_up),
            None,
        );
    }
    let missed = table.print();

    if let Some(path) = std::env::var_os("DAX_BENCH_JSON") {
        let us = |d: Duration| d.as_secs_f64() * 1e6;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let json = serde_json::json!({
            "dax_warm_call_us": us(wasm_call),
            "bare_wasmtime_async_call_us": us(bare_async),
            "warm_call_ratio": warm_ratio,
            "warm_call_future_bytes": future_bytes,
            "bare_wasmtime_sync_call_us": bare_sync.map(us),
            "native_call_us": us(native_call),
            "instantiate_us": us(instantiate_rust),
            "instantiate_js_us": us(instantiate_js),
            "cold_load_rust_ms": ms(rust_loads.cold),
            "cached_load_rust_ms": ms(rust_loads.stamped),
            "hashed_cached_load_rust_ms": ms(rust_loads.hashed),
            "start_up_rust_ms": ms(rust_loads.start_up),
            "cold_load_js_ms": ms(js_loads.cold),
            "cached_load_js_ms": ms(js_loads.stamped),
            "hashed_cached_load_js_ms": ms(js_loads.hashed),
            "pooling": host.pooling(),
            "targets_missed": missed,
        });
        std::fs::write(&path, format!("{json:#}\n")).unwrap_or_else(|e| {
            panic!("writing DAX_BENCH_JSON {}: {e}", Path::new(&path).display())
        });
        println!("wrote {}", Path::new(&path).display());
    }
    if !missed.is_empty() {
        eprintln!("plugin_host bench: missed {}", missed.join("; "));
        std::process::exit(1);
    }
}

/// The bench's table: a row per measurement, its target if it has one, and whether this run
/// met it.
#[derive(Default)]
struct Table {
    rows: Vec<(String, String, Option<Target>)>,
}

/// A row's target as printed, and whether this run met it.
type Target = (&'static str, bool);

impl Table {
    fn row(&mut self, label: &str, value: String, target: Option<Target>) {
        self.rows.push((label.to_string(), value, target));
    }

    /// Print the table; the targets this run missed, as `label (value, target)`.
    fn print(&self) -> Vec<String> {
        println!(
            "{:<52} {:>12} {:>10}  met",
            "measurement", "value", "target"
        );
        let mut missed = Vec::new();
        for (label, value, target) in &self.rows {
            let (text, verdict) = match *target {
                Some((text, true)) => (text, "yes"),
                Some((text, false)) => {
                    missed.push(format!("{} ({value}, target {text})", label.trim()));
                    (text, "NO")
                }
                None => ("", ""),
            };
            println!("{label:<52} {value:>12} {text:>10}  {verdict}");
        }
        match missed.len() {
            0 => println!("every target met"),
            n => println!("{n} target(s) missed"),
        }
        missed
    }
}
