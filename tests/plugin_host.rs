//! The plugin host against real components built from this repository: one trivial plugin
//! per role, adversarial plugins that must each fail with a clear error while a
//! well-behaved plugin keeps working in the same host, and every way loading must refuse.

use dax::contract::{
    Artifact, CallError, FinalStatus, MetricAnswer, Observation, Outcome, Slot, Step, TrafficSplit,
    Workload,
};
use dax::plugin::{CompileSource, DirGrant, Limits, PluginSpec};
use dax_tests::query;
use dax_tests::{fresh_host, plugin_path, spec};
use std::io::{Read, Write};
use std::path::Path;
use std::time::{Duration, Instant};

fn fault_reason(result: Result<MetricAnswer, CallError>) -> String {
    match result {
        Err(CallError::Fault { plugin, reason }) => {
            assert_eq!(plugin, "adversary");
            reason
        }
        other => panic!("expected a fault, got {other:?}"),
    }
}

#[tokio::test]
async fn one_plugin_per_role_loads_and_answers() {
    let (host, _cache) = fresh_host();
    let here = Path::new(".");

    let metrics = host
        .load("hello-metrics", &spec(&plugin_path("hello-metrics")), here)
        .await
        .unwrap();
    assert_eq!(metrics.info().name, "hello-metrics");
    let provider = metrics
        .metric_provider(serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(
        provider.run_query(&query("value:99.5")).await.unwrap(),
        MetricAnswer::Value(99.5)
    );
    match provider.run_query(&query("series:1,2,3")).await.unwrap() {
        MetricAnswer::Series(s) => assert_eq!(
            s.iter().map(|s| s.value).collect::<Vec<_>>(),
            vec![1.0, 2.0, 3.0]
        ),
        other => panic!("expected a series, got {other:?}"),
    }
    assert!(matches!(
        provider.run_query(&query("nothing")).await.unwrap(),
        MetricAnswer::NoData(_)
    ));

    let target = host
        .load("hello-target", &spec(&plugin_path("hello-target")), here)
        .await
        .unwrap();
    let problems = target
        .validate_config(&serde_json::json!({"bad": true}))
        .await
        .unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "bad");
    let t = target.target(serde_json::json!({})).await.unwrap();
    let w = Workload {
        app: "demo".into(),
        version: "v2".into(),
        artifact: "img:2".into(),
        replicas: 2,
        spec: "{}".into(),
    };
    t.deploy(&w).await.unwrap();
    let err = t
        .deploy(&Workload {
            artifact: String::new(),
            ..w
        })
        .await
        .unwrap_err();
    assert!(err.to_string().contains("empty artifact"), "{err}");
    t.set_traffic(
        "demo",
        &TrafficSplit {
            candidate_weight: 30,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(
        t.status("demo", Slot::Candidate).await.unwrap().version,
        "demo-candidate"
    );

    let scanner = host
        .load("hello-scanner", &spec(&plugin_path("hello-scanner")), here)
        .await
        .unwrap();
    let report = scanner
        .scanner(serde_json::json!({}))
        .await
        .unwrap()
        .scan(&Artifact {
            name: "registry.local/app:1".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(report.findings.len(), 1);
    assert_eq!(report.findings[0].package, "hello");

    let strategy = host
        .load(
            "hello-strategy",
            &spec(&plugin_path("hello-strategy")),
            here,
        )
        .await
        .unwrap();
    let s = strategy.strategy(serde_json::json!({})).await.unwrap();
    let deploy = s.start().await.unwrap();
    assert_eq!(deploy.next, Step::DeployCandidate);
    let ready = Outcome::TargetStatus(dax::contract::StatusOutcome {
        which: dax::contract::Slot::Candidate,
        desired: 1,
        ready: 1,
        updated: 1,
    });
    let first = s
        .next(
            &deploy.state,
            &Observation {
                elapsed_ms: 5,
                last: ready,
            },
        )
        .await
        .unwrap();
    assert!(matches!(first.next, Step::SetTraffic(ref t) if t.candidate_weight == 50));
    let second = s
        .next(
            &first.state,
            &Observation {
                elapsed_ms: 10,
                last: Outcome::Done,
            },
        )
        .await
        .unwrap();
    assert!(matches!(second.next, Step::Analyze(_)));
    let failed = Outcome::Analysis(dax::contract::AnalysisOutcome {
        checks: vec![dax::contract::CheckResult {
            name: "x".into(),
            verdict: dax::contract::CheckVerdict::NoData,
            value: None,
            detail: String::new(),
        }],
        score: None,
    });
    let third = s
        .next(
            &second.state,
            &Observation {
                elapsed_ms: 20,
                last: failed,
            },
        )
        .await
        .unwrap();
    assert!(
        matches!(third.next, Step::Rollback(_)),
        "no-data must not promote: {third:?}"
    );
    let last = s
        .next(
            &third.state,
            &Observation {
                elapsed_ms: 30,
                last: Outcome::Done,
            },
        )
        .await
        .unwrap();
    assert_eq!(last.next, Step::Finish(FinalStatus::RolledBack));

    // A plugin used in the wrong role is refused with both roles named.
    let err = metrics
        .target(serde_json::json!({}))
        .await
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("metric-provider") && err.contains("target"),
        "{err}"
    );
}

/// A loopback HTTP server answering every request with `body`; returns its address.
fn tiny_http_server(body: &'static str) -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut stream = stream;
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    addr
}

#[tokio::test]
async fn adversarial_plugins_fail_clearly_while_a_good_plugin_keeps_working() {
    let (host, _cache) = fresh_host();
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("allowed.txt"), "granted content").unwrap();
    let granted = tiny_http_server("granted");
    let forbidden = tiny_http_server("secret");
    std::env::set_var("DAX_TEST_SECRET", "must-not-leak");

    let mut adversary_spec = spec(&plugin_path("adversary"));
    adversary_spec.limits = Limits {
        call_timeout: Duration::from_millis(500),
        wall_timeout: None,
        memory_mib: 32,
        max_output_kib: 64,
    };
    adversary_spec.grants.dirs = vec![DirGrant {
        host: data.path().to_path_buf(),
        guest: Some("/data".into()),
        writable: false,
        quota_mib: None,
    }];
    adversary_spec.grants.http = vec![format!("http://{granted}")];
    let adversary = host
        .load("adversary", &adversary_spec, Path::new("."))
        .await
        .unwrap();
    let bad = adversary
        .metric_provider(serde_json::json!({}))
        .await
        .unwrap();
    let good = host
        .load(
            "hello-metrics",
            &spec(&plugin_path("hello-metrics")),
            Path::new("."),
        )
        .await
        .unwrap()
        .metric_provider(serde_json::json!({}))
        .await
        .unwrap();

    // An infinite loop is stopped at its deadline; meanwhile the good plugin answers at once.
    let started = Instant::now();
    let looping = tokio::spawn({
        let bad = bad.clone();
        async move { bad.run_query(&query("loop")).await }
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    let quick = Instant::now();
    assert_eq!(
        good.run_query(&query("value:1")).await.unwrap(),
        MetricAnswer::Value(1.0)
    );
    assert!(
        quick.elapsed() < Duration::from_millis(400),
        "good plugin was blocked for {:?}",
        quick.elapsed()
    );
    let reason = fault_reason(looping.await.unwrap());
    assert!(reason.contains("deadline"), "{reason}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "loop ran for {:?}",
        started.elapsed()
    );

    // Unbounded allocation hits the memory limit, named with the knob to raise.
    let reason = fault_reason(bad.run_query(&query("alloc")).await);
    assert!(
        reason.contains("memory limit exceeded") && reason.contains("memory_mib"),
        "{reason}"
    );

    // A panic is a trap for that call only.
    let reason = fault_reason(bad.run_query(&query("trap")).await);
    assert!(
        reason.contains("trap") || reason.contains("unreachable"),
        "{reason}"
    );

    // After every fault the same plugin works again on a fresh instance.
    assert_eq!(
        bad.run_query(&query("ok")).await.unwrap(),
        MetricAnswer::Value(1.0)
    );

    // Files: the granted directory is readable, nothing outside it, and it is read-only.
    assert_eq!(
        bad.run_query(&query("read:/data/allowed.txt"))
            .await
            .unwrap(),
        MetricAnswer::Value(15.0)
    );
    for path in [
        "/etc/hostname",
        "/data/../etc/hostname",
        "/proc/self/environ",
    ] {
        let err = bad
            .run_query(&query(&format!("read:{path}")))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(path),
            "reading {path} should fail naming it: {err}"
        );
    }
    let err = bad
        .run_query(&query("write:/data/allowed.txt"))
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("write /data/allowed.txt"), "{err}");
    assert_eq!(
        std::fs::read_to_string(data.path().join("allowed.txt")).unwrap(),
        "granted content"
    );

    // The environment is empty: nothing inherited from the host.
    match bad.run_query(&query("env")).await.unwrap() {
        MetricAnswer::NoData(text) => {
            assert!(text.starts_with("env has 0 vars"), "{text}");
            assert!(!text.contains("DAX_TEST_SECRET"));
        }
        other => panic!("unexpected {other:?}"),
    }

    // HTTP: the granted destination works, anything else is denied and the error names it.
    match bad
        .run_query(&query(&format!("http:http://{granted}/x")))
        .await
        .unwrap()
    {
        MetricAnswer::NoData(text) => assert_eq!(text, "status 200 body granted"),
        other => panic!("unexpected {other:?}"),
    }
    let err = bad
        .run_query(&query(&format!("http:http://{forbidden}/x")))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("denied") && err.contains("grants.http"),
        "{err}"
    );

    // An answer above max_output_kib is refused.
    let reason = fault_reason(bad.run_query(&query("big:200000")).await);
    assert!(
        reason.contains("64 KiB") && reason.contains("max_output_kib"),
        "{reason}"
    );

    // And the well-behaved plugin is still fine after all of that.
    assert_eq!(
        good.run_query(&query("value:2")).await.unwrap(),
        MetricAnswer::Value(2.0)
    );
}

#[tokio::test]
async fn loading_refuses_bad_components_with_actionable_errors() {
    let (host, _cache) = fresh_host();
    let dir = tempfile::tempdir().unwrap();
    let here = dir.path();
    let load_err = |spec: PluginSpec| {
        let host = &host;
        async move {
            format!(
                "{:#}",
                host.load("x", &spec, here)
                    .await
                    .err()
                    .expect("load must fail")
            )
        }
    };

    std::fs::write(here.join("garbage.wasm"), b"not wasm at all").unwrap();
    let err = load_err(spec(&here.join("garbage.wasm"))).await;
    assert!(err.contains("not a WebAssembly file"), "{err}");

    let core = wat::parse_str("(module (func (export \"f\")))").unwrap();
    std::fs::write(here.join("core.wasm"), core).unwrap();
    let err = load_err(spec(&here.join("core.wasm"))).await;
    assert!(
        err.contains("core WebAssembly module, not a component")
            && err.contains("dax plugin build"),
        "{err}"
    );

    let unknown = wat::parse_str(
        r#"(component
            (core module $m (func (export "f") (result i32) i32.const 0))
            (core instance $i (instantiate $m))
            (func $f (result u32) (canon lift (core func $i "f")))
            (instance $api (export "get" (func $f)))
            (export "acme:tools/api@1.0.0" (instance $api)))"#,
    )
    .unwrap();
    std::fs::write(here.join("unknown.wasm"), unknown).unwrap();
    let err = load_err(spec(&here.join("unknown.wasm"))).await;
    assert!(
        err.contains("none of the dax plugin worlds") && err.contains("acme:tools/api@1.0.0"),
        "{err}"
    );

    let future = wat::parse_str(
        r#"(component
            (core module $m (func (export "f") (result i32) i32.const 0))
            (core instance $i (instantiate $m))
            (func $f (result u32) (canon lift (core func $i "f")))
            (instance $api (export "describe" (func $f)))
            (export "dax:plugin/plugin@2.0.0" (instance $api))
            (export "dax:plugin/metric-provider@2.0.0" (instance $api)))"#,
    )
    .unwrap();
    std::fs::write(here.join("future.wasm"), future).unwrap();
    let err = load_err(spec(&here.join("future.wasm"))).await;
    assert!(
        err.contains("dax:plugin@2.0.0") && err.contains("0.1.x") && err.contains("rebuild"),
        "{err}"
    );

    let mut pinned = spec(&plugin_path("hello-metrics"));
    pinned.sha256 = Some("0".repeat(64));
    let err = load_err(pinned).await;
    assert!(
        err.contains("sha256") && err.contains(&"0".repeat(64)) && err.contains("pin"),
        "{err}"
    );

    let err = load_err(spec(&here.join("missing.wasm"))).await;
    assert!(err.contains("missing.wasm"), "{err}");

    let mut builtin = spec(Path::new("x"));
    builtin.source = "builtin:no-such-plugin".into();
    let err = load_err(builtin).await;
    assert!(
        err.contains("unknown builtin plugin `no-such-plugin`")
            && err.contains("available builtins"),
        "{err}"
    );

    // The right digest is accepted.
    let bytes = std::fs::read(plugin_path("hello-metrics")).unwrap();
    let mut pinned = spec(&plugin_path("hello-metrics"));
    pinned.sha256 = Some(sha256_hex(&bytes));
    host.load("x", &pinned, here).await.unwrap();
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Every live instance holds one of the host's pooled slots: a host out of slots refuses the
/// next instance with a fault that names the setting to raise, and the slots come back when
/// the instances go.
#[tokio::test]
async fn a_host_out_of_instance_slots_says_which_setting_to_raise_and_recovers() {
    let cache = tempfile::tempdir().unwrap();
    let host = dax::plugin::PluginHost::new(dax::plugin::HostOptions {
        cache_dir: cache.path().to_path_buf(),
        pooling: true,
        max_instances: 3,
    })
    .unwrap();
    assert!(host.pooling(), "this test needs the pooling allocator");
    let spec = spec(&plugin_path("hello-metrics"));
    // Each loaded plugin keeps the instance its `describe` ran on.
    let mut loaded = Vec::new();
    let refused = loop {
        match host.load("hello-metrics", &spec, Path::new(".")).await {
            Ok(plugin) => loaded.push(plugin),
            Err(e) => break e.to_string(),
        }
        assert!(loaded.len() <= 3, "a fourth instance fit in three slots");
    };
    assert!(!loaded.is_empty(), "not even one instance fit: {refused}");
    assert!(
        refused.contains("every plugin instance slot of this dax process is in use")
            && refused.contains("DAX_MAX_INSTANCES"),
        "{refused}"
    );
    loaded.clear();
    let again = host.load("hello-metrics", &spec, Path::new(".")).await;
    assert!(again.is_ok(), "slots did not come back: {:?}", again.err());
}

#[tokio::test]
async fn second_load_comes_from_the_compile_cache() {
    let cache = tempfile::tempdir().unwrap();
    let options = dax::plugin::HostOptions {
        cache_dir: cache.path().to_path_buf(),
        pooling: true,
        ..Default::default()
    };
    let bytes = std::fs::read(plugin_path("hello-metrics")).unwrap();
    let spec = spec(&plugin_path("hello-metrics"));
    let host = dax::plugin::PluginHost::new(options.clone()).unwrap();
    let (_, first) = host
        .load_bytes("m", &spec, Path::new("."), &bytes, "test")
        .await
        .unwrap();
    assert_eq!(first, CompileSource::Compiled);
    // A new host process would see the same cache directory.
    let host = dax::plugin::PluginHost::new(options).unwrap();
    let (plugin, second) = host
        .load_bytes("m", &spec, Path::new("."), &bytes, "test")
        .await
        .unwrap();
    assert_eq!(second, CompileSource::Cache);
    let provider = plugin.metric_provider(serde_json::json!({})).await.unwrap();
    assert_eq!(
        provider.run_query(&query("value:3")).await.unwrap(),
        MetricAnswer::Value(3.0)
    );
}

/// The contract is language-neutral: a JavaScript plugin built with componentize-js runs in
/// the same host, through the same trait, with the same errors.
#[tokio::test]
async fn javascript_plugin_implements_the_same_contract() {
    let (host, _cache) = fresh_host();
    let path = dax_tests::js_plugin("js-metrics");
    let plugin = host
        .load("js-metrics", &spec(&path), Path::new("."))
        .await
        .unwrap();
    assert_eq!(plugin.info().name, "js-metrics");
    assert_eq!(plugin.role(), dax::contract::PluginRole::MetricProvider);
    let problems = plugin
        .validate_config(&serde_json::json!({"scale": "ten"}))
        .await
        .unwrap();
    assert_eq!(problems.len(), 1);
    assert_eq!(problems[0].field, "scale");

    let provider = plugin
        .metric_provider(serde_json::json!({"scale": 10}))
        .await
        .unwrap();
    assert_eq!(
        provider.run_query(&query("value:2.5")).await.unwrap(),
        MetricAnswer::Value(25.0)
    );
    match provider.run_query(&query("series:1,2")).await.unwrap() {
        MetricAnswer::Series(s) => {
            assert_eq!(
                s.iter().map(|s| s.value).collect::<Vec<_>>(),
                vec![10.0, 20.0]
            );
            assert_eq!(s[1].timestamp_ms, 1000);
        }
        other => panic!("expected a series, got {other:?}"),
    }
    assert!(matches!(
        provider.run_query(&query("nothing")).await.unwrap(),
        MetricAnswer::NoData(_)
    ));
    let err = provider.run_query(&query("value:abc")).await.unwrap_err();
    assert!(
        matches!(&err, CallError::Plugin { error: dax::contract::PluginError::InvalidInput(m), .. } if m.contains("abc")),
        "{err}"
    );
}

/// A plugin handle can outlive the host that loaded it (a deployment still holding its
/// plugins while the host is dropped): its CPU deadline must still stop an infinite loop,
/// so the epoch keeps ticking for as long as anything holds the engine.
#[tokio::test]
async fn a_plugin_that_outlives_its_host_is_still_stopped_at_its_deadline() {
    let (host, _cache) = fresh_host();
    let mut adversary_spec = spec(&plugin_path("adversary"));
    adversary_spec.limits.call_timeout = Duration::from_millis(300);
    let bad = host
        .load("adversary", &adversary_spec, Path::new("."))
        .await
        .unwrap()
        .metric_provider(serde_json::json!({}))
        .await
        .unwrap();
    drop(host);
    // On a thread of its own: a loop nothing interrupts would block this test's runtime too.
    let started = Instant::now();
    let (done, outcome) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _ = done.send(runtime.block_on(bad.run_query(&query("loop"))));
    });
    let looping = outcome.recv_timeout(Duration::from_secs(20)).expect(
        "the loop was never interrupted: nothing advanced the epoch after the host was dropped",
    );
    let reason = fault_reason(looping);
    assert!(reason.contains("deadline"), "{reason}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "loop ran for {:?}",
        started.elapsed()
    );
}
