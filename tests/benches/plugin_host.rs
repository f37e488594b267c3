//! Plugin host benchmark: prints one table measured in one run.
//!
//! `cargo bench -p dax-tests --bench plugin_host`
//!
//! - warm call: host -> plugin -> host for a trivial `run-query`, through the same
//!   `MetricProvider` trait the engine uses, vs the same logic as a native Rust impl;
//! - instantiation of a fresh instance from the `InstancePre`;
//! - load from the compile cache vs a cold compile, for a Rust and a JavaScript plugin.

use dax::contract::{CallResult, MetricAnswer, MetricProvider, MetricQuery, QueryKind};
use dax::plugin::{CompileSource, HostOptions, PluginHost};
use std::path::Path;
use std::time::{Duration, Instant};

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

fn fmt(d: Duration) -> String {
    if d < Duration::from_micros(10) {
        format!("{:.2} µs", d.as_nanos() as f64 / 1000.0)
    } else if d < Duration::from_millis(10) {
        format!("{:.1} µs", d.as_nanos() as f64 / 1000.0)
    } else {
        format!("{:.1} ms", d.as_secs_f64() * 1000.0)
    }
}

async fn load_times(bytes: &[u8]) -> (Duration, Duration) {
    let cache = tempfile::tempdir().unwrap();
    let options = HostOptions {
        cache_dir: cache.path().to_path_buf(),
        pooling: true,
    };
    let spec = dax_tests::spec(Path::new("bench.wasm"));
    let host = PluginHost::new(options.clone()).unwrap();
    let start = Instant::now();
    let (_, source) = host
        .load_bytes("bench", &spec, Path::new("."), bytes, "bench")
        .await
        .unwrap();
    let cold = start.elapsed();
    assert_eq!(source, CompileSource::Compiled);
    let mut cached = Vec::new();
    for _ in 0..5 {
        let host = PluginHost::new(options.clone()).unwrap();
        let start = Instant::now();
        let (_, source) = host
            .load_bytes("bench", &spec, Path::new("."), bytes, "bench")
            .await
            .unwrap();
        cached.push(start.elapsed());
        assert_eq!(source, CompileSource::Cache);
    }
    cached.sort();
    (cold, cached[cached.len() / 2])
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
    let wasm_call = per_call(15, 20_000, || async {
        assert_eq!(wasm.run_query(&q).await.unwrap(), MetricAnswer::Value(1.0))
    })
    .await;
    let native_call = per_call(15, 20_000, || async {
        assert_eq!(
            native.run_query(&q).await.unwrap(),
            MetricAnswer::Value(1.0)
        )
    })
    .await;
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

    let (rust_cold, rust_cached) = load_times(&rust).await;
    let (js_cold, js_cached) = load_times(&js).await;

    println!(
        "pooling allocator: {}",
        if host.pooling() {
            "on"
        } else {
            "off (unavailable here)"
        }
    );
    println!("{:<52} {:>12} {:>10}", "measurement", "time", "target");
    println!(
        "{:<52} {:>12} {:>10}",
        "warm call, Wasm plugin (trait -> sandbox -> guest)",
        fmt(wasm_call),
        "<= 2 µs"
    );
    println!(
        "{:<52} {:>12} {:>10}",
        "same logic, native Rust trait call",
        fmt(native_call),
        ""
    );
    println!(
        "{:<52} {:>11.0}x {:>10}",
        "  ratio Wasm / native",
        wasm_call.as_secs_f64() / native_call.as_secs_f64(),
        ""
    );
    println!(
        "{:<52} {:>12} {:>10}",
        "instantiate from InstancePre, Rust plugin",
        fmt(instantiate_rust),
        "<= 50 µs"
    );
    println!(
        "{:<52} {:>12} {:>10}",
        "instantiate from InstancePre, JS plugin",
        fmt(instantiate_js),
        ""
    );
    println!(
        "{:<52} {:>12} {:>10}",
        format!(
            "cold compile + load, Rust plugin ({} KiB)",
            rust.len() / 1024
        ),
        fmt(rust_cold),
        ""
    );
    println!(
        "{:<52} {:>12} {:>10}",
        "load from compile cache, Rust plugin",
        fmt(rust_cached),
        ""
    );
    println!(
        "{:<52} {:>11.0}x {:>10}",
        "  ratio cold / cached",
        rust_cold.as_secs_f64() / rust_cached.as_secs_f64(),
        ">= 20x"
    );
    println!(
        "{:<52} {:>12} {:>10}",
        format!("cold compile + load, JS plugin ({} KiB)", js.len() / 1024),
        fmt(js_cold),
        ""
    );
    println!(
        "{:<52} {:>12} {:>10}",
        "load from compile cache, JS plugin",
        fmt(js_cached),
        ""
    );
    println!(
        "{:<52} {:>11.0}x {:>10}",
        "  ratio cold / cached",
        js_cold.as_secs_f64() / js_cached.as_secs_f64(),
        ">= 20x"
    );
}
