//! The embedded `local` target against the real demo app (`examples/demo-app/app.py`):
//! traffic split, header/cookie matching, mirroring, `local-metrics`, promote/rollback,
//! scaling, adoption after a host crash, and that no child process outlives the target.
//!
//! Run: `cargo test -p dax-tests --test local_target`. Needs `python3` on PATH.

use bytes::Bytes;
use dax::contract::{
    CallError, MatchSource, MetricAnswer, MetricProvider, MetricQuery, PluginError, QueryKind,
    RequestMatch, Slot, StringMatch, Target, TrafficSplit, Workload,
};
use dax::local::process::pid_alive;
use dax::local::{shutdown_all_local_targets, LocalMetrics, LocalTarget};
use dax_tests::demo_app;
use futures::StreamExt as _;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use serde_json::json;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// `shutdown_all_local_targets` kills the children of every target in this process, so the
/// test that calls it runs alone (write lock) while the others share (read lock).
static EXCLUSIVE: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn config(extra: serde_json::Value) -> serde_json::Value {
    let app = demo_app();
    let mut cfg = json!({
        "listen": "127.0.0.1:0",
        "metrics_listen": "127.0.0.1:0",
        "startup_timeout": "20s",
        "stop_timeout": "2s",
        "stable": {
            "version": "v1",
            "command": "python3",
            "args": [app.to_string_lossy(), "--version", "v1", "--port", "{port}"],
        },
    });
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        cfg[k] = v;
    }
    cfg
}

fn workload(app: &str, version: &str, extra_args: &str) -> Workload {
    Workload {
        app: app.into(),
        version: version.into(),
        artifact: format!(
            "python3 {} --version {version} --port {{port}} {extra_args}",
            demo_app().display()
        ),
        replicas: 1,
        spec: "{}".into(),
    }
}

async fn target() -> LocalTarget {
    LocalTarget::new(config(json!({})), &std::env::temp_dir())
        .await
        .expect("local target starts")
}

type HttpClient = Client<HttpConnector, Empty<Bytes>>;

fn client() -> HttpClient {
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(64)
        .build_http()
}

#[derive(Debug)]
struct Reply {
    status: u16,
    /// `x-dax-version` set by the proxy.
    version: String,
    slot: String,
    body: String,
}

async fn get(client: &HttpClient, addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Reply {
    let mut req = hyper::Request::get(format!("http://{addr}{path}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client
        .request(req.body(Empty::new()).unwrap())
        .await
        .expect("request through the proxy");
    let status = resp.status().as_u16();
    let header = |n: &str| {
        resp.headers()
            .get(n)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string()
    };
    let (version, slot) = (header("x-dax-version"), header("x-dax-slot"));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Reply {
        status,
        version,
        slot,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

/// `n` requests, 64 in flight, counted by the version that answered.
async fn send(
    client: &HttpClient,
    addr: SocketAddr,
    n: usize,
    headers: &[(&str, &str)],
) -> HashMap<String, usize> {
    let replies: Vec<Reply> = futures::stream::iter(0..n)
        .map(|_| get(client, addr, "/", headers))
        .buffer_unordered(64)
        .collect()
        .await;
    let mut by_version = HashMap::new();
    for r in replies {
        *by_version.entry(r.version).or_insert(0) += 1;
    }
    by_version
}

async fn wait_dead(pids: &[i32]) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while pids.iter().any(|p| pid_alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for p in pids {
        assert!(!pid_alive(*p), "child process {p} is still running");
    }
}

async fn pids(t: &LocalTarget) -> Vec<i32> {
    t.backends().await.iter().map(|b| b.pid).collect()
}

fn split(weight: u8) -> TrafficSplit {
    TrafficSplit {
        candidate_weight: weight,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn traffic_split_is_within_two_points_of_the_weight() {
    let _g = EXCLUSIVE.read().await;
    let t = target().await;
    t.deploy(&workload("split", "v2", "")).await.unwrap();
    let c = client();
    let addr = t.proxy_addr();

    // Deployed but not yet weighted: the candidate gets nothing.
    let before = send(&c, addr, 200, &[]).await;
    assert_eq!(before.get("v1"), Some(&200), "{before:?}");

    t.set_traffic("split", &split(30)).await.unwrap();
    let started = Instant::now();
    let counts = send(&c, addr, 10_000, &[]).await;
    let took = started.elapsed();
    let v2 = *counts.get("v2").unwrap_or(&0) as f64 / 10_000.0;
    assert_eq!(counts.values().sum::<usize>(), 10_000, "{counts:?}");
    assert!(
        (v2 - 0.30).abs() <= 0.02,
        "candidate share {v2} for weight 30: {counts:?}"
    );
    eprintln!("10,000 requests through the proxy in {took:?}: {counts:?}");

    // The app itself answered (its JSON carries the version the proxy reported).
    let r = get(&c, addr, "/", &[]).await;
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains(&format!("\"version\": \"{}\"", r.version)),
        "{r:?}"
    );

    let all = pids(&t).await;
    assert_eq!(all.len(), 2);
    t.finalize("split").await.unwrap();
    wait_dead(&all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn header_and_cookie_matches_route_exactly() {
    let _g = EXCLUSIVE.read().await;
    let t = target().await;
    t.deploy(&workload("ab", "v2", "")).await.unwrap();
    let c = client();
    let addr = t.proxy_addr();

    let header_match = RequestMatch {
        source: MatchSource::Header,
        name: "X-Canary".into(),
        value: StringMatch::Exact("always".into()),
    };
    t.set_traffic(
        "ab",
        &TrafficSplit {
            candidate_weight: 0,
            matches: vec![header_match.clone()],
            mirror_percent: 0,
        },
    )
    .await
    .unwrap();
    let with = send(&c, addr, 300, &[("x-canary", "always")]).await;
    assert_eq!(with.get("v2"), Some(&300), "{with:?}");
    let without = send(&c, addr, 300, &[]).await;
    assert_eq!(without.get("v1"), Some(&300), "{without:?}");
    let other = send(&c, addr, 100, &[("x-canary", "always-not")]).await;
    assert_eq!(other.get("v1"), Some(&100), "exact means exact: {other:?}");

    // Cookie (regex) AND header (prefix): both must hold.
    t.set_traffic(
        "ab",
        &TrafficSplit {
            candidate_weight: 0,
            matches: vec![
                RequestMatch {
                    source: MatchSource::Cookie,
                    name: "user".into(),
                    value: StringMatch::Regex("^beta-[0-9]+$".into()),
                },
                RequestMatch {
                    source: MatchSource::Header,
                    name: "x-region".into(),
                    value: StringMatch::Prefix("eu-".into()),
                },
            ],
            mirror_percent: 0,
        },
    )
    .await
    .unwrap();
    let both = send(
        &c,
        addr,
        200,
        &[("cookie", "a=1; user=beta-7"), ("x-region", "eu-west")],
    )
    .await;
    assert_eq!(both.get("v2"), Some(&200), "{both:?}");
    let cookie_only = send(&c, addr, 200, &[("cookie", "user=beta-7")]).await;
    assert_eq!(cookie_only.get("v1"), Some(&200), "{cookie_only:?}");
    let bad_cookie = send(
        &c,
        addr,
        200,
        &[("cookie", "user=beta-x"), ("x-region", "eu-west")],
    )
    .await;
    assert_eq!(bad_cookie.get("v1"), Some(&200), "{bad_cookie:?}");

    // A broken regex is refused and the previous routing stays.
    let err = t
        .set_traffic(
            "ab",
            &TrafficSplit {
                candidate_weight: 0,
                matches: vec![RequestMatch {
                    source: MatchSource::Header,
                    name: "x".into(),
                    value: StringMatch::Regex("(".into()),
                }],
                mirror_percent: 0,
            },
        )
        .await
        .unwrap_err();
    assert!(
        matches!(&err, CallError::Plugin { error: PluginError::InvalidInput(m), .. } if m.contains("invalid regex")),
        "{err}"
    );
    let still = send(
        &c,
        addr,
        50,
        &[("cookie", "user=beta-1"), ("x-region", "eu-north")],
    )
    .await;
    assert_eq!(still.get("v2"), Some(&50), "{still:?}");

    let all = pids(&t).await;
    t.finalize("ab").await.unwrap();
    wait_dead(&all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mirroring_copies_stable_requests_to_the_candidate() {
    let _g = EXCLUSIVE.read().await;
    let t = target().await;
    t.deploy(&workload("mirror", "v2", "")).await.unwrap();
    t.set_traffic(
        "mirror",
        &TrafficSplit {
            candidate_weight: 0,
            matches: vec![],
            mirror_percent: 100,
        },
    )
    .await
    .unwrap();
    let c = client();
    let served = send(&c, t.proxy_addr(), 100, &[]).await;
    assert_eq!(
        served.get("v1"),
        Some(&100),
        "clients only see stable: {served:?}"
    );

    // The candidate really received the copies: ask it directly.
    let cand = t
        .backends()
        .await
        .into_iter()
        .find(|b| b.slot == Slot::Candidate)
        .unwrap();
    let direct: SocketAddr = format!("127.0.0.1:{}", cand.port).parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut seen = String::new();
    while Instant::now() < deadline {
        seen = get(&c, direct, "/stats", &[]).await.body;
        if seen.contains("\"requests\": 100") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(
        seen.contains("\"requests\": 100"),
        "candidate /stats: {seen}"
    );

    // Mirrored copies are recorded as such, not as candidate traffic.
    let key = dax::local::stats::SeriesKey {
        app: "mirror".into(),
        slot: dax::local::stats::SlotLabel::Candidate,
        version: "v2".into(),
    };
    // The proxy records a copy once the candidate's answer has been read, which can come
    // just after the candidate counted the request.
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut totals = dax::local::stats::registry().totals(&key);
    while totals.mirrored < 100 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
        totals = dax::local::stats::registry().totals(&key);
    }
    assert_eq!(totals.mirrored, 100);
    assert_eq!(totals.total(), 0);

    let all = pids(&t).await;
    t.finalize("mirror").await.unwrap();
    wait_dead(&all).await;
}

fn query(text: &str, app: &str, slot: &str, kind: QueryKind) -> MetricQuery {
    MetricQuery {
        text: text.into(),
        kind,
        window_ms: 30_000,
        step_ms: 1_000,
        vars: vec![
            ("app".into(), app.into()),
            ("slot".into(), slot.into()),
            ("version".into(), "v2".into()),
        ],
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_metrics_answer_no_data_then_real_values() {
    let _g = EXCLUSIVE.read().await;
    let metrics = LocalMetrics::new(json!({})).unwrap();
    let q = |text, slot| query(text, "metrics", slot, QueryKind::Instant);
    for text in ["request-success-rate", "request-duration"] {
        let a = metrics.run_query(&q(text, "candidate")).await.unwrap();
        assert!(
            matches!(a, MetricAnswer::NoData(_)),
            "{text} before traffic: {a:?}"
        );
    }

    let t = target().await;
    t.deploy(&workload(
        "metrics",
        "v2",
        "--error-rate 0.5 --latency-ms 100",
    ))
    .await
    .unwrap();
    t.set_traffic("metrics", &split(50)).await.unwrap();
    let c = client();
    send(&c, t.proxy_addr(), 600, &[]).await;

    let MetricAnswer::Value(rate) = metrics
        .run_query(&q("request-success-rate", "candidate"))
        .await
        .unwrap()
    else {
        panic!("candidate success rate should have a value")
    };
    assert!(
        (35.0..=65.0).contains(&rate),
        "faulty candidate success rate {rate}"
    );
    let MetricAnswer::Value(stable_rate) = metrics
        .run_query(&q("request-success-rate", "stable"))
        .await
        .unwrap()
    else {
        panic!("stable success rate should have a value")
    };
    assert_eq!(stable_rate, 100.0);
    let MetricAnswer::Value(p99) = metrics
        .run_query(&q("request-duration", "candidate"))
        .await
        .unwrap()
    else {
        panic!("candidate p99 should have a value")
    };
    // 100 ms of injected latency (plus queueing in the Python app under 64 parallel requests).
    assert!((100.0..=2500.0).contains(&p99), "candidate p99 {p99} ms");
    let MetricAnswer::Value(stable_p99) = metrics
        .run_query(&q("request-duration", "stable"))
        .await
        .unwrap()
    else {
        panic!("stable p99 should have a value")
    };
    assert!(
        stable_p99 < p99,
        "stable p99 {stable_p99} ms vs candidate {p99} ms"
    );

    let range = metrics
        .run_query(&query(
            "request-success-rate",
            "metrics",
            "candidate",
            QueryKind::Range,
        ))
        .await
        .unwrap();
    let MetricAnswer::Series(samples) = range else {
        panic!("range: {range:?}")
    };
    assert!(!samples.is_empty() && samples.iter().all(|s| (0.0..=100.0).contains(&s.value)));

    let err = metrics
        .run_query(&q("error-rate", "candidate"))
        .await
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        matches!(
            &err,
            CallError::Plugin {
                error: PluginError::InvalidInput(_),
                ..
            }
        ) && msg.contains("request-success-rate")
            && msg.contains("request-duration"),
        "{msg}"
    );

    // The same numbers in Prometheus format on /metrics.
    let text = get(&c, t.metrics_addr(), "/metrics", &[]).await.body;
    assert!(
        text.contains("dax_proxy_requests_total{app=\"metrics\",slot=\"candidate\",version=\"v2\",status_class=\"5xx\"}"),
        "{text}"
    );
    assert!(text.contains("dax_proxy_request_duration_seconds_bucket{app=\"metrics\",slot=\"stable\",version=\"v1\",le=\"+Inf\"}"));

    let all = pids(&t).await;
    t.finalize("metrics").await.unwrap();
    wait_dead(&all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_replaces_stable_and_rollback_stops_the_candidate() {
    let _g = EXCLUSIVE.read().await;
    let t = target().await;
    let c = client();
    let addr = t.proxy_addr();
    t.deploy(&workload("promo", "v2", "")).await.unwrap();
    let st = t.status("promo", Slot::Candidate).await.unwrap();
    assert_eq!(
        (st.desired, st.ready, st.updated, st.version.as_str()),
        (1, 1, 1, "v2"),
        "{st:?}"
    );
    let old_stable: Vec<i32> = t
        .backends()
        .await
        .iter()
        .filter(|b| b.slot == Slot::Stable)
        .map(|b| b.pid)
        .collect();
    let cand_pid = t
        .backends()
        .await
        .iter()
        .find(|b| b.slot == Slot::Candidate)
        .unwrap()
        .pid;

    t.set_traffic("promo", &split(50)).await.unwrap();
    t.promote("promo").await.unwrap();
    wait_dead(&old_stable).await;
    let st = t.status("promo", Slot::Stable).await.unwrap();
    assert_eq!((st.ready, st.version.as_str()), (1, "v2"), "{st:?}");
    let cand = t.status("promo", Slot::Candidate).await.unwrap();
    assert_eq!(cand.desired, 0, "{cand:?}");
    // The candidate's process now serves as stable: same pid, all traffic.
    assert_eq!(pids(&t).await, vec![cand_pid]);
    let r = get(&c, addr, "/", &[]).await;
    assert_eq!((r.version.as_str(), r.slot.as_str()), ("v2", "stable"));
    assert_eq!(send(&c, addr, 100, &[]).await.get("v2"), Some(&100));

    // Next candidate, then roll it back.
    t.deploy(&workload("promo", "v3", "")).await.unwrap();
    t.scale("promo", Slot::Candidate, 2).await.unwrap();
    let st = t.status("promo", Slot::Candidate).await.unwrap();
    assert_eq!((st.desired, st.ready), (2, 2), "{st:?}");
    t.set_traffic("promo", &split(100)).await.unwrap();
    let v3 = send(&c, addr, 100, &[]).await;
    assert_eq!(v3.get("v3"), Some(&100), "{v3:?}");
    // Round-robin: both replicas served.
    let replicas: Vec<_> = t
        .backends()
        .await
        .into_iter()
        .filter(|b| b.slot == Slot::Candidate)
        .collect();
    assert_eq!(replicas.len(), 2);
    for b in &replicas {
        let stats = get(
            &c,
            format!("127.0.0.1:{}", b.port).parse().unwrap(),
            "/stats",
            &[],
        )
        .await;
        assert!(
            stats.body.contains("\"requests\": 50"),
            "replica {}: {}",
            b.port,
            stats.body
        );
    }
    let v3_pids: Vec<i32> = replicas.iter().map(|b| b.pid).collect();
    t.rollback("promo").await.unwrap();
    wait_dead(&v3_pids).await;
    assert_eq!(send(&c, addr, 100, &[]).await.get("v2"), Some(&100));
    assert_eq!(t.status("promo", Slot::Candidate).await.unwrap().desired, 0);
    assert!(
        t.promote("promo").await.is_err(),
        "nothing to promote after a rollback"
    );

    t.finalize("promo").await.unwrap();
    wait_dead(&[cand_pid]).await;
    // The proxy is gone too.
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "proxy still listening"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_candidate_is_reported_and_leaves_nothing() {
    let _g = EXCLUSIVE.read().await;
    let t = target().await;
    let mut w = workload("broken", "v2", "");
    w.artifact = format!("python3 {} --error-rate 7", demo_app().display());
    let err = t.deploy(&w).await.unwrap_err().to_string();
    assert!(
        err.contains("exited before becoming ready") && err.contains("--error-rate"),
        "{err}"
    );
    // Stable runs; no candidate process remains.
    let b = t.backends().await;
    assert_eq!(b.len(), 1, "{b:?}");
    assert_eq!(b[0].slot, Slot::Stable);
    drop(t);
    wait_dead(&[b[0].pid]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_target_kills_its_children() {
    let _g = EXCLUSIVE.read().await;
    let t = target().await;
    t.deploy(&workload("dropped", "v2", "")).await.unwrap();
    let all = pids(&t).await;
    assert_eq!(all.len(), 2);
    assert!(all.iter().all(|p| pid_alive(*p)));
    drop(t);
    wait_dead(&all).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_all_kills_every_child_of_every_target() {
    let _g = EXCLUSIVE.write().await;
    let a = target().await;
    let b = target().await;
    a.deploy(&workload("ctrlc-a", "v2", "")).await.unwrap();
    b.deploy(&workload("ctrlc-b", "v2", "")).await.unwrap();
    let mut all = pids(&a).await;
    all.extend(pids(&b).await);
    assert_eq!(all.len(), 4);
    shutdown_all_local_targets();
    wait_dead(&all).await;
    // Finalizing afterwards is harmless.
    a.finalize("ctrlc-a").await.unwrap();
    b.finalize("ctrlc-b").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_target_adopts_the_processes_of_a_crashed_host() {
    let _g = EXCLUSIVE.read().await;
    let state = tempfile::tempdir().unwrap();
    let cfg = config(json!({ "state_dir": state.path() }));
    let first = LocalTarget::new(cfg.clone(), &std::env::temp_dir())
        .await
        .unwrap();
    first.deploy(&workload("resume", "v2", "")).await.unwrap();
    first.set_traffic("resume", &split(100)).await.unwrap();
    let before = pids(&first).await;
    // A crashed host runs no destructor.
    std::mem::forget(first);

    let second = LocalTarget::new(cfg, &std::env::temp_dir()).await.unwrap();
    assert_eq!(
        pids(&second).await,
        before,
        "the same processes are adopted"
    );
    let c = client();
    let served = send(&c, second.proxy_addr(), 50, &[]).await;
    assert_eq!(
        served.get("v2"),
        Some(&50),
        "the traffic split survives too: {served:?}"
    );
    assert_eq!(
        second
            .status("resume", Slot::Candidate)
            .await
            .unwrap()
            .ready,
        1
    );
    second.finalize("resume").await.unwrap();
    wait_dead(&before).await;
    assert!(!state.path().join("local-target.json").exists());
}

/// A target made for a deployment keeps its state under the deployment's folder by default,
/// and a resumed one adopts only the processes it recorded: a recorded pid now used by
/// another process (a recycled pid) is neither adopted nor killed, the missing replica is
/// started again, and a marked child the state file never recorded (the host died between
/// spawn and write) is stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_adopts_only_the_recorded_processes() {
    let _g = EXCLUSIVE.read().await;
    let deployment = tempfile::tempdir().unwrap();
    let tmp = std::env::temp_dir();
    let new_target = || LocalTarget::for_deployment(config(json!({})), &tmp, deployment.path());
    let first = new_target().await.unwrap();
    first.deploy(&workload("recycle", "v2", "")).await.unwrap();
    first.set_traffic("recycle", &split(30)).await.unwrap();
    let before = first.backends().await;
    std::mem::forget(first); // a crashed host runs no destructor
    let home = deployment.path().join("local");
    let state_file = home.join("local-target.json");
    assert!(state_file.exists(), "no state in {}", home.display());

    // The candidate dies and an unrelated process gets a pid the state file names.
    let candidate = before.iter().find(|b| b.slot == Slot::Candidate).unwrap();
    let stable = before.iter().find(|b| b.slot == Slot::Stable).unwrap();
    std::process::Command::new("kill")
        .args(["-9", &candidate.pid.to_string()])
        .status()
        .unwrap();
    wait_dead(&[candidate.pid]).await;
    let mut stranger = std::process::Command::new("sleep")
        .arg("60")
        .spawn()
        .unwrap();
    let mut state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&state_file).unwrap()).unwrap();
    state["candidate"]["procs"][0]["pid"] = json!(stranger.id());
    std::fs::write(&state_file, state.to_string()).unwrap();
    // A child of this target that no state file recorded.
    let mut unrecorded = std::process::Command::new("python3")
        .arg(demo_app())
        .args(["--version", "v9", "--port", "0"])
        .env(dax::local::process::OWNER_ENV, &home)
        .process_group(0)
        .spawn()
        .unwrap();
    let unrecorded_pid = unrecorded.id() as i32;

    let second = new_target().await.unwrap();
    let after = second.backends().await;
    let pid_of = |slot| after.iter().find(|b| b.slot == slot).unwrap().pid;
    assert_eq!(
        pid_of(Slot::Stable),
        stable.pid,
        "the stable process is adopted"
    );
    let new_candidate = pid_of(Slot::Candidate);
    assert!(
        new_candidate != candidate.pid && new_candidate != stranger.id() as i32,
        "a new candidate is started: {after:?}"
    );
    assert!(
        pid_alive(stranger.id() as i32),
        "the stranger is left alone"
    );
    wait_dead(&[unrecorded_pid]).await;
    let _ = unrecorded.wait();
    // The traffic split came back with the state.
    let served = send(&client(), second.proxy_addr(), 200, &[]).await;
    let v2 = served.get("v2").copied().unwrap_or(0);
    assert!((30..=90).contains(&v2), "about 30% to v2: {served:?}");

    second.finalize("recycle").await.unwrap();
    wait_dead(&[stable.pid, new_candidate]).await;
    assert!(!state_file.exists());
    assert!(pid_alive(stranger.id() as i32));
    let _ = stranger.kill();
    let _ = stranger.wait();
}

/// The quickstart files drive the local target as written (relative paths resolve against the
/// file's folder): at half the traffic, v2's success rate passes the file's check and the
/// faulty v3's fails it. (The full `dax deploy` run is the engine's test.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quickstart_configs_drive_the_local_target() {
    let _g = EXCLUSIVE.read().await;
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples/quickstart");
    for (file, should_pass) in [("canary.toml", true), ("canary-faulty.toml", false)] {
        let text = std::fs::read_to_string(dir.join(file)).unwrap();
        let doc: toml::Value = toml::from_str(&text).unwrap();
        let mut cfg = serde_json::to_value(&doc["plugins"]["local"]["config"]).unwrap();
        cfg["listen"] = json!("127.0.0.1:0"); // the documented port may be busy here
        let t = LocalTarget::new(cfg, &dir)
            .await
            .unwrap_or_else(|e| panic!("{file}: {e:#}"));
        let d = &doc["deployment"];
        let w = Workload {
            app: format!("quickstart-{}", d["app"].as_str().unwrap()),
            version: d["version"].as_str().unwrap().into(),
            artifact: d["artifact"].as_str().unwrap().into(),
            replicas: doc["target"]["workload"]["replicas"].as_integer().unwrap() as u32,
            spec: serde_json::to_string(&doc["target"]["workload"]).unwrap(),
        };
        t.deploy(&w).await.unwrap_or_else(|e| panic!("{file}: {e}"));
        t.set_traffic(&w.app, &split(50)).await.unwrap();
        send(&client(), t.proxy_addr(), 200, &[]).await;

        let check = doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["query"].as_str() == Some("request-success-rate"))
            .unwrap();
        let min = check["min"].as_float().unwrap();
        let metrics = LocalMetrics::new(json!({})).unwrap();
        let mut q = query(
            "request-success-rate",
            &w.app,
            "candidate",
            QueryKind::Instant,
        );
        q.vars[2].1 = w.version.clone();
        let MetricAnswer::Value(rate) = metrics.run_query(&q).await.unwrap() else {
            panic!("{file}: no data")
        };
        assert_eq!(
            rate >= min,
            should_pass,
            "{file}: success rate {rate} vs min {min}"
        );
        let all = pids(&t).await;
        t.finalize(&w.app).await.unwrap();
        wait_dead(&all).await;
    }
}
