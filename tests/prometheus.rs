//! The `prometheus` metric-provider plugin against a real Prometheus server (Debian package
//! `prometheus`), started here on a loopback port, scraping an exposition endpoint this test
//! serves every second with the agreed `dax_proxy_*` metric names.
//!
//! Without `/usr/bin/prometheus` the test is skipped locally and fails under `CI=true`.

use dax::contract::{CallError, MetricAnswer, MetricProvider, MetricQuery, PluginError, QueryKind};
use dax::plugin::PluginHost;
use dax_tests::{free_port, fresh_host, plugin_path, spec, Prometheus};
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// Requests per second the fake proxy reports for each slot, and the candidate's 5xx share.
const CANDIDATE_RPS: f64 = 100.0;
const CANDIDATE_5XX_RPS: f64 = 1.0;
const STABLE_RPS: f64 = 50.0;

/// Exposition text at `t` seconds after start: counters grow linearly, so every rate is exact.
fn exposition(t: f64) -> String {
    let mut out = String::new();
    out.push_str("# TYPE dax_proxy_requests_total counter\n");
    let c_ok = (CANDIDATE_RPS - CANDIDATE_5XX_RPS) * t;
    let c_err = CANDIDATE_5XX_RPS * t;
    out.push_str(&format!("dax_proxy_requests_total{{app=\"demo\",slot=\"candidate\",version=\"v2\",status_class=\"2xx\"}} {c_ok}\n"));
    out.push_str(&format!("dax_proxy_requests_total{{app=\"demo\",slot=\"candidate\",version=\"v2\",status_class=\"5xx\"}} {c_err}\n"));
    out.push_str(&format!("dax_proxy_requests_total{{app=\"demo\",slot=\"stable\",version=\"v1\",status_class=\"2xx\"}} {}\n", STABLE_RPS * t));
    out.push_str("# TYPE dax_proxy_request_duration_seconds histogram\n");
    // Candidate: every request between 25 ms and 50 ms; stable: every request under 5 ms.
    for (slot, version, rps, first_le) in [
        ("candidate", "v2", CANDIDATE_RPS, "0.05"),
        ("stable", "v1", STABLE_RPS, "0.005"),
    ] {
        let mut reached = false;
        for le in [
            "0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "+Inf",
        ] {
            reached |= le == first_le;
            let v = if reached { rps * t } else { 0.0 };
            out.push_str(&format!(
                "dax_proxy_request_duration_seconds_bucket{{app=\"demo\",slot=\"{slot}\",version=\"{version}\",le=\"{le}\"}} {v}\n"
            ));
        }
        out.push_str(&format!("dax_proxy_request_duration_seconds_sum{{app=\"demo\",slot=\"{slot}\",version=\"{version}\"}} {}\n", rps * t * 0.03));
        out.push_str(&format!("dax_proxy_request_duration_seconds_count{{app=\"demo\",slot=\"{slot}\",version=\"{version}\"}} {}\n", rps * t));
    }
    out
}

/// A minimal HTTP/1.1 server for Prometheus' scrapes (one response per connection).
async fn serve_metrics() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let start = Instant::now();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 2048];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                let body = exposition(start.elapsed().as_secs_f64());
                let resp = format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    port
}

async fn provider(host: &PluginHost, address: &str, granted: &str) -> Arc<dyn MetricProvider> {
    let mut s = spec(&plugin_path("prometheus"));
    s.grants.http = vec![granted.to_string()];
    let plugin = host
        .load("prometheus", &s, Path::new("."))
        .await
        .expect("loading the prometheus plugin");
    plugin
        .metric_provider(serde_json::json!({ "address": address }))
        .await
        .expect("instantiating the prometheus plugin")
}

fn q(text: &str, kind: QueryKind, vars: &[(&str, &str)]) -> MetricQuery {
    MetricQuery {
        text: text.into(),
        kind,
        window_ms: 10_000,
        step_ms: 1_000,
        vars: vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_plugin_against_a_real_prometheus() {
    let metrics_port = serve_metrics().await;
    let Some(prom) = Prometheus::start(metrics_port) else {
        return;
    };
    let address = prom.address();
    let (host, _cache) = fresh_host();
    let p = provider(&host, &address, &address).await;
    let demo = [("app", "demo"), ("version", "v2")];

    // Wait until Prometheus is up and has enough scrapes for rate() over the window.
    let deadline = Instant::now() + Duration::from_secs(60);
    let first = loop {
        match p
            .run_query(&q("request-success-rate", QueryKind::Instant, &demo))
            .await
        {
            Ok(MetricAnswer::Value(v)) => break v,
            other => {
                assert!(
                    Instant::now() < deadline,
                    "Prometheus on {address} gave no success rate within 60s; last answer: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    let started = Instant::now();

    // Built-in checks: exact rates from the linear counters.
    assert!((first - 99.0).abs() < 0.01, "success rate {first}");
    match p
        .run_query(&q(
            "request-success-rate",
            QueryKind::Instant,
            &[("app", "demo"), ("slot", "stable")],
        ))
        .await
        .unwrap()
    {
        MetricAnswer::Value(v) => assert!((v - 100.0).abs() < 1e-9, "stable success rate {v}"),
        other => panic!("{other:?}"),
    }
    // p99 in the 25..50 ms bucket, linearly interpolated: 25 + 25 * 0.99 = 49.75 ms.
    match p
        .run_query(&q("request-duration", QueryKind::Instant, &demo))
        .await
        .unwrap()
    {
        MetricAnswer::Value(v) => assert!((v - 49.75).abs() < 0.01, "candidate p99 {v} ms"),
        other => panic!("{other:?}"),
    }
    match p
        .run_query(&q(
            "request-duration",
            QueryKind::Instant,
            &[("app", "demo"), ("slot", "stable")],
        ))
        .await
        .unwrap()
    {
        MetricAnswer::Value(v) => assert!(v > 0.0 && v <= 5.0, "stable p99 {v} ms"),
        other => panic!("{other:?}"),
    }

    // Rates of absolute counts need a full window of scrapes (rate() extrapolates otherwise).
    let wait = Duration::from_secs(12).saturating_sub(started.elapsed());
    tokio::time::sleep(wait).await;
    // Operator PromQL, with the host's substitution already done.
    let text = r#"sum(rate(dax_proxy_requests_total{app="demo", slot="candidate"}[5s]))"#;
    match p
        .run_query(&q(text, QueryKind::Instant, &demo))
        .await
        .unwrap()
    {
        MetricAnswer::Value(v) => assert!((v - CANDIDATE_RPS).abs() < 1.0, "candidate rps {v}"),
        other => panic!("{other:?}"),
    }
    // `{{app}}`-style vars also work in free text.
    let templated =
        r#"sum(rate(dax_proxy_requests_total{app="{{app}}", slot="{{ slot }}"}[{{interval}}]))"#;
    match p
        .run_query(&q(
            templated,
            QueryKind::Instant,
            &[("app", "demo"), ("slot", "stable")],
        ))
        .await
        .unwrap()
    {
        MetricAnswer::Value(v) => assert!((v - STABLE_RPS).abs() < 1.0, "stable rps {v}"),
        other => panic!("{other:?}"),
    }

    // Range: a 1s-step series over the window.
    match p
        .run_query(&q("request-success-rate", QueryKind::Range, &demo))
        .await
        .unwrap()
    {
        MetricAnswer::Series(s) => {
            assert!(s.len() >= 3, "only {} samples: {s:?}", s.len());
            assert!(s.iter().all(|x| (x.value - 99.0).abs() < 0.01), "{s:?}");
            assert!(
                s.windows(2)
                    .all(|w| w[1].timestamp_ms - w[0].timestamp_ms == 1_000),
                "{s:?}"
            );
            let now_ms = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis() as u64;
            assert!(now_ms - s.last().unwrap().timestamp_ms < 5_000, "{s:?}");
        }
        other => panic!("{other:?}"),
    }

    // No data: an app with no series, both for plain PromQL and for a built-in (0/0 = NaN).
    match p
        .run_query(&q(
            r#"dax_proxy_requests_total{app="ghost"}"#,
            QueryKind::Instant,
            &demo,
        ))
        .await
        .unwrap()
    {
        MetricAnswer::NoData(why) => assert!(why.contains("no series"), "{why}"),
        other => panic!("expected no data, got {other:?}"),
    }
    match p
        .run_query(&q(
            "request-success-rate",
            QueryKind::Instant,
            &[("app", "ghost")],
        ))
        .await
        .unwrap()
    {
        MetricAnswer::NoData(_) => {}
        other => panic!("expected no data, got {other:?}"),
    }
    match p
        .run_query(&q(
            "request-success-rate",
            QueryKind::Range,
            &[("app", "ghost")],
        ))
        .await
        .unwrap()
    {
        MetricAnswer::NoData(_) => {}
        other => panic!("expected no data, got {other:?}"),
    }
    // 0/0 written out by hand is NaN too: no data, never a zero.
    match p
        .run_query(&q("0/0", QueryKind::Instant, &demo))
        .await
        .unwrap()
    {
        MetricAnswer::NoData(why) => assert!(why.contains("NaN"), "{why}"),
        other => panic!("expected no data, got {other:?}"),
    }

    // PromQL errors come back as invalid input with Prometheus' own message.
    match p
        .run_query(&q("sum(rate(", QueryKind::Instant, &demo))
        .await
    {
        Err(CallError::Plugin {
            error: PluginError::InvalidInput(m),
            ..
        }) => {
            assert!(m.contains("bad_data") && m.contains("parse error"), "{m}")
        }
        other => panic!("expected a PromQL error, got {other:?}"),
    }
    // Several series where one value is needed.
    match p
        .run_query(&q("dax_proxy_requests_total", QueryKind::Instant, &demo))
        .await
    {
        Err(CallError::Plugin {
            error: PluginError::InvalidInput(m),
            ..
        }) => assert!(m.contains("3 series"), "{m}"),
        other => panic!("expected an ambiguity error, got {other:?}"),
    }
    // An unknown template variable is named.
    match p
        .run_query(&q("up{job=\"{{job}}\"}", QueryKind::Instant, &demo))
        .await
    {
        Err(CallError::Plugin {
            error: PluginError::InvalidInput(m),
            ..
        }) => assert!(m.contains("{{job}}"), "{m}"),
        other => panic!("expected a template error, got {other:?}"),
    }

    // Unreachable: granted, but nothing listens there.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let unreachable = provider(&host, &dead, &dead).await;
    match unreachable
        .run_query(&q("up", QueryKind::Instant, &demo))
        .await
    {
        Err(CallError::Plugin {
            error: PluginError::Unavailable(m),
            ..
        }) => {
            assert!(m.contains("unreachable") && m.contains(&dead), "{m}")
        }
        other => panic!("expected unavailable, got {other:?}"),
    }

    // Denied: the plugin asks for an address it was not granted; the host refuses.
    let denied = provider(&host, &address, &dead).await;
    match denied.run_query(&q("up", QueryKind::Instant, &demo)).await {
        Err(CallError::Plugin {
            error: PluginError::InvalidConfig(m),
            ..
        }) => {
            assert!(m.contains("grants.http") && m.contains(&address), "{m}")
        }
        other => panic!("expected a denied request, got {other:?}"),
    }
    drop(prom);
}
