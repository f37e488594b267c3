//! The Extism peer benchmark: a Rust host using the `extism` crate calls a trivial plugin
//! (src/plugin.wat, the same job as dax's hello-metrics) warm, and times getting a fresh
//! plugin instance from the compiled plugin (`Plugin::new_from_compiled` plus the first call,
//! where Extism instantiates the module). Prints one JSON line.
//!
//! Each Extism call also sends a start and a stop message to Extism's timeout thread, so the
//! mean depends on how fast that thread gets a core: on a busy machine the mean is far above
//! the p50.
//!
//! `cargo run --release -- [--quick]`

use extism::{CompiledPlugin, Manifest, Plugin, PluginBuilder, Wasm};
use std::time::{Duration, Instant};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_nanos() as f64 / 1000.0
}

/// One call as dax's bench makes it: query in, number out.
fn call(plugin: &mut Plugin) {
    let out: &str = plugin.call("run_query", "value:1").expect("run_query");
    assert_eq!(out.parse::<f64>().expect("a number"), 1.0);
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (rounds, iters, inst_rounds, inst_iters) = if quick {
        (5, 4_000, 5, 100)
    } else {
        (15, 20_000, 11, 500)
    };
    let wasm = wat::parse_str(include_str!("plugin.wat")).expect("plugin.wat parses");

    let start = Instant::now();
    let compiled: CompiledPlugin = PluginBuilder::new(Manifest::new([Wasm::data(wasm)]))
        .with_wasi(false)
        .with_cache_disabled()
        .compile()
        .expect("compile the plugin");
    let compile = start.elapsed();

    let mut plugin = Plugin::new_from_compiled(&compiled).expect("instantiate");
    let no_data = plugin.call::<&str, &str>("run_query", "up");
    assert!(no_data.is_err(), "a query without `value:` fails");
    for _ in 0..2_000 {
        call(&mut plugin);
    }

    // Mean: median over rounds of a round's time / calls (as dax's plugin_host bench does).
    let mut round_means = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..iters {
            call(&mut plugin);
        }
        round_means.push(start.elapsed() / iters as u32);
    }
    // p50: every call timed on its own.
    let mut each = Vec::with_capacity(iters);
    for _ in 0..iters {
        let start = Instant::now();
        call(&mut plugin);
        each.push(start.elapsed());
    }

    let mut instantiate = Vec::with_capacity(inst_rounds);
    for _ in 0..inst_rounds {
        let start = Instant::now();
        for _ in 0..inst_iters {
            // Extism instantiates the module lazily, in the first call: time both.
            let mut fresh = Plugin::new_from_compiled(&compiled).expect("instantiate");
            call(&mut fresh);
        }
        instantiate.push(start.elapsed() / inst_iters as u32);
    }

    let line = serde_json::json!({
        "extism": extism::extism_version().trim_end_matches(char::from(0)),
        "calls": rounds * iters,
        "warm_call_mean_us": us(median(round_means)),
        "warm_call_p50_us": us(median(each)),
        "instantiate_us": us(median(instantiate)),
        "compile_ms": us(compile) / 1000.0,
    });
    println!("{line}");
}
