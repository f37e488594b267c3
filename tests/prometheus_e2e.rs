//! A whole deployment through the real engine with a real Prometheus doing the metrics:
//! the embedded `local` target runs the demo app (`examples/demo-app/app.py`) v1 and the
//! candidate behind its proxy, whose `/metrics` exposition a Prometheus server (Debian package
//! `prometheus`, started here on a loopback port) scrapes every second; the embedded
//! `prometheus` metric provider (`builtin:prometheus`, granted only that server over HTTP)
//! answers the canary's checks with PromQL; the built-in `load` rollout hook drives traffic.
//!
//! - a faulty candidate (30% of its answers are HTTP 500) is rolled back: its success rate,
//!   as Prometheus computes it, is below the check's minimum;
//! - a healthy candidate is promoted.
//!
//! The deployment file is written the way a user would write it (see
//! `examples/quickstart/canary-prometheus.toml`), loaded with `config::load_file` and run by
//! `Engine::deploy`. No child process may outlive the deployment.
//!
//! Without `/usr/bin/prometheus` the tests are skipped locally and fail under `CI=true`.
//! Run: `cargo test -p dax-tests --test prometheus_e2e -- --nocapture`.

use dax::config;
use dax::contract::{CheckResult, CheckVerdict, FinalStatus, Outcome};
use dax::engine::{Engine, HostResolver, Report};
use dax::local::process::pid_alive;
use dax::state::{Event, Record, StateDir};
use dax_tests::{demo_app, free_port, repo_root, Prometheus};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The cases run one after the other: each keeps its own Prometheus, proxy and demo apps,
/// and the process scan below must see only its own children.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The deployment file. `@NAME@` are filled in by [`deployment_file`].
///
/// Timing: the load starts with the first traffic shift; each analysis comes `interval` (3s)
/// later and queries a 10s window (the checks' `interval`), which holds 2-3 scrapes of the
/// candidate by then, enough for `rate()`. An analysis without data (no scrape yet) counts as
/// failed, like a failing one: `threshold = 2` absorbs one such start-up miss.
const DEPLOYMENT: &str = r#"
[deployment]
app = "@APP@"
version = "@VERSION@"
artifact = "python3 @APP_PY@ --version @VERSION@ --port {port} @CANDIDATE_FLAGS@"
progress_deadline = "1m"

[target]
plugin = "local"
[target.workload]
replicas = 1

[strategy]
plugin = "canary"
[strategy.params]
interval = "3s"
threshold = 2
maxWeight = 30
stepWeight = 10

# Flagger's built-in checks, as PromQL over the proxy's dax_proxy_* metrics.
[[checks]]
name = "request-success-rate"
provider = "prometheus"
query = "request-success-rate"
min = 99.0
interval = "10s"

[[checks]]
name = "request-duration"
provider = "prometheus"
query = "request-duration"
max = 1000.0
interval = "10s"

# Plain PromQL with the engine's template variables: the candidate really gets traffic.
[[checks]]
name = "candidate-requests"
provider = "prometheus"
query = 'sum(rate(dax_proxy_requests_total{app="{{app}}", slot="candidate"}[{{interval}}]))'
min = 0.1
interval = "10s"

[[hooks]]
name = "load"
type = "rollout"
load = { url = "http://127.0.0.1:@PROXY_PORT@/", rps = 50 }

[plugins.local]
source = "builtin:local"
[plugins.local.config]
listen = "127.0.0.1:@PROXY_PORT@"
metrics_listen = "127.0.0.1:@METRICS_PORT@"
readiness_path = "/healthz"
startup_timeout = "20s"
stop_timeout = "2s"
stable = { version = "v1", command = "python3", args = ["@APP_PY@", "--version", "v1", "--port", "{port}"] }

[plugins.canary]
source = "builtin:canary"

[plugins.prometheus]
source = "builtin:prometheus"
[plugins.prometheus.config]
address = "@PROMETHEUS@"
[plugins.prometheus.grants]
http = ["@PROMETHEUS@"]
"#;

struct Case {
    app: &'static str,
    version: &'static str,
    candidate_flags: &'static str,
}

/// What one deployment left behind.
struct Run {
    report: Report,
    /// The summary with its timeline, for failure messages.
    summary: String,
    records: Vec<Record>,
    prom: Prometheus,
}

/// An engine with its state in `state_dir`, sharing the other tests' component cache.
fn engine(state_dir: &Path) -> Engine {
    Engine::new(
        StateDir::new(state_dir.to_path_buf()),
        Arc::new(HostResolver::new(dax::plugin::HostOptions {
            cache_dir: repo_root().join("target/test-component-cache"),
            ..Default::default()
        })),
    )
}

/// This process' live children whose command line contains `token`, with that command line.
fn children_running(token: &str) -> Vec<(i32, String)> {
    let me = std::process::id().to_string();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| {
            // `pid (comm) state ppid ...`: the parent follows the state letter.
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let ppid = stat.rsplit_once(')')?.1.split_whitespace().nth(1)?;
            let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            (ppid == me && cmdline.contains(token) && pid_alive(pid)).then_some((pid, cmdline))
        })
        .collect()
}

/// Run `case` end to end and check what every case must show: the `expected` outcome within
/// a minute, metrics from the `prometheus` plugin only, both versions run and none of their
/// processes left. `None` when Prometheus is not installed (skipped locally).
async fn deploy(case: &Case, expected: FinalStatus) -> Option<Run> {
    let _one = ONE_AT_A_TIME.lock().await;
    let started = Instant::now();
    let app_py = demo_app();
    let metrics_port = free_port();
    let prom = Prometheus::start(metrics_port)?;
    let proxy_port = free_port();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("deploy.toml");
    let text = DEPLOYMENT
        .replace("@APP@", case.app)
        .replace("@VERSION@", case.version)
        .replace("@CANDIDATE_FLAGS@", case.candidate_flags)
        .replace("@APP_PY@", &app_py.display().to_string())
        .replace("@PROXY_PORT@", &proxy_port.to_string())
        .replace("@METRICS_PORT@", &metrics_port.to_string())
        .replace("@PROMETHEUS@", &prom.address());
    std::fs::write(&file, text).unwrap();
    let cfg = config::load_file(&file).unwrap_or_else(|p| panic!("config problems: {p:#?}"));

    // Deploy only once Prometheus scrapes (the proxy's endpoint is still down), so the first
    // analysis finds the first seconds of traffic in it.
    tokio::task::block_in_place(|| prom.wait_ready(Duration::from_secs(30)));

    // Note the demo apps (children of this process: the cases run one at a time) while the
    // deployment runs.
    let app_py = app_py.display().to_string();
    let done = Arc::new(AtomicBool::new(false));
    let watcher = {
        let (done, app_py) = (done.clone(), app_py.clone());
        std::thread::spawn(move || {
            let mut seen = std::collections::BTreeMap::new();
            while !done.load(Ordering::Relaxed) {
                seen.extend(children_running(&app_py));
                std::thread::sleep(Duration::from_millis(100));
            }
            seen
        })
    };

    let state = StateDir::new(dir.path().join("state"));
    let engine = engine(&dir.path().join("state"));
    let t0 = Instant::now();
    let report = engine
        .deploy(cfg, Some(case.app.into()), None)
        .await
        .unwrap_or_else(|e| panic!("{}: deploy failed: {e}", case.app));
    let elapsed = t0.elapsed();
    done.store(true, Ordering::Relaxed);
    let seen = watcher.join().unwrap();
    drop(engine);
    let records = state.read(case.app).unwrap();
    eprintln!(
        "{}: {:?}, deployment {:.1}s, with Prometheus' start {:.1}s\n{}",
        case.app,
        report.status,
        elapsed.as_secs_f64(),
        started.elapsed().as_secs_f64(),
        report.summary.render()
    );

    // Both versions ran, and none of their processes survives the deployment.
    for version in ["v1", case.version] {
        assert!(
            seen.values()
                .any(|c| c.contains(&format!("--version {version} "))),
            "{}: demo app {version} never ran: {seen:?}",
            case.app
        );
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while seen.keys().any(|p| pid_alive(*p)) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let survivors: Vec<_> = seen.iter().filter(|(p, _)| pid_alive(**p)).collect();
    assert!(
        survivors.is_empty(),
        "{}: child processes outlived the deployment: {survivors:?}",
        case.app
    );
    assert_eq!(
        children_running(&app_py),
        vec![],
        "{}: demo apps outlived the deployment",
        case.app
    );
    let summary = report.summary.render();
    assert_eq!(report.status, expected, "{summary}");
    assert!(
        elapsed < Duration::from_secs(60),
        "took {elapsed:?}\n{summary}"
    );
    assert_prometheus_provider(&records);
    Some(Run {
        report,
        summary,
        records,
        prom,
    })
}

/// Every check result of every analysis, in order.
fn analyses(records: &[Record]) -> Vec<Vec<CheckResult>> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Outcome {
                outcome: Outcome::Analysis(a),
                ..
            } => Some(a.checks.clone()),
            _ => None,
        })
        .collect()
}

fn check<'a>(analysis: &'a [CheckResult], name: &str) -> &'a CheckResult {
    analysis
        .iter()
        .find(|c| c.name == name)
        .unwrap_or_else(|| panic!("no `{name}` in {analysis:?}"))
}

/// The journal says the metrics came from the embedded `prometheus` plugin, the only
/// metric provider of the deployment.
fn assert_prometheus_provider(records: &[Record]) {
    let plugins = records
        .iter()
        .find_map(|r| match &r.event {
            Event::PluginsResolved { plugins } => Some(plugins.clone()),
            _ => None,
        })
        .expect("no plugins-resolved record");
    let providers: Vec<_> = plugins
        .iter()
        .filter(|(_, p)| p.role.contains("metric"))
        .collect();
    assert_eq!(providers.len(), 1, "{plugins:#?}");
    let (name, p) = providers[0];
    assert_eq!(name, "prometheus");
    assert_eq!(p.source, "builtin:prometheus", "{p:?}");
}

/// The last value Prometheus scraped for `selector`, summed over its series. The proxy's
/// endpoint is gone with the deployment, so its series are stale now: look back a minute.
fn scraped_total(prom: &Prometheus, selector: &str) -> f64 {
    let promql = format!("sum(last_over_time({selector}[1m]))");
    let result = prom.query(&promql);
    let series = result.as_array().unwrap();
    assert_eq!(series.len(), 1, "`{promql}`: {result}");
    series[0]["value"][1].as_str().unwrap().parse().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faulty_candidate_is_rolled_back_on_prometheus_success_rate() {
    let case = Case {
        app: "prom-e2e-faulty",
        version: "v3",
        candidate_flags: "--error-rate 0.3",
    };
    let Some(Run {
        report,
        summary,
        records,
        prom,
    }) = deploy(&case, FinalStatus::RolledBack).await
    else {
        return;
    };
    assert!(
        report.reason.contains("request-success-rate"),
        "the rollback names the failing check: {}\n{summary}",
        report.reason
    );

    // The success rate Prometheus computed is a real number, below the minimum: about 70%.
    let all = analyses(&records);
    assert!(
        all.len() >= 2,
        "threshold 2 needs two failed analyses: {all:?}"
    );
    let last = all.last().unwrap();
    let rate = check(last, "request-success-rate");
    assert_eq!(rate.verdict, CheckVerdict::Fail, "{rate:?}\n{summary}");
    let value = rate.value.expect("a failing check has a value");
    assert!(value > 30.0 && value < 99.0, "success rate {value}");
    // The other checks had data from the same Prometheus: traffic, and a latency.
    assert_eq!(
        check(last, "candidate-requests").verdict,
        CheckVerdict::Pass
    );
    assert!(check(last, "request-duration").value.is_some(), "{last:?}");
    // The summary's timeline shows the value too.
    assert!(
        summary.contains("request-success-rate"),
        "summary without the check:\n{summary}"
    );

    // Prometheus itself holds the candidate's 5xx answers, scraped from the proxy.
    let errors = scraped_total(
        &prom,
        r#"dax_proxy_requests_total{app="prom-e2e-faulty", slot="candidate", status_class="5xx", job="dax-proxy"}"#,
    );
    assert!(errors > 0.0, "no candidate 5xx in Prometheus");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthy_candidate_is_promoted_on_prometheus_checks() {
    let case = Case {
        app: "prom-e2e-healthy",
        version: "v2",
        candidate_flags: "",
    };
    let Some(Run {
        summary,
        records,
        prom,
        ..
    }) = deploy(&case, FinalStatus::Promoted).await
    else {
        return;
    };

    // Every analysis that had data passed; the last one, at the top weight, passed outright
    // with Prometheus' numbers: 100% success, a latency, candidate traffic.
    let all = analyses(&records);
    assert!(all.len() >= 3, "one analysis per weight 10/20/30: {all:?}");
    for a in &all {
        for c in a {
            assert_ne!(c.verdict, CheckVerdict::Fail, "{c:?}\n{summary}");
        }
    }
    let last = all.last().unwrap();
    for c in last {
        assert_eq!(c.verdict, CheckVerdict::Pass, "{c:?}\n{summary}");
    }
    assert_eq!(check(last, "request-success-rate").value, Some(100.0));
    let p99 = check(last, "request-duration").value.unwrap();
    assert!(p99 > 0.0 && p99 <= 1000.0, "p99 {p99} ms");
    assert!(check(last, "candidate-requests").value.unwrap() > 0.1);

    // Prometheus scraped the candidate's answers, none of them 5xx.
    let answered = scraped_total(
        &prom,
        r#"dax_proxy_requests_total{app="prom-e2e-healthy", slot="candidate", job="dax-proxy"}"#,
    );
    assert!(answered > 0.0, "no candidate requests in Prometheus");
    let errors = scraped_total(
        &prom,
        r#"dax_proxy_requests_total{app="prom-e2e-healthy", status_class="5xx", job="dax-proxy"}"#,
    );
    assert_eq!(errors, 0.0, "a healthy run has no 5xx in Prometheus");
}

/// `examples/quickstart/canary-prometheus.toml` is valid (`dax validate`) and really asks
/// the `prometheus` plugin for every check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_documented_prometheus_example_is_valid() {
    let file = repo_root().join("examples/quickstart/canary-prometheus.toml");
    let cfg = config::load_file(&file).unwrap_or_else(|p| panic!("{p:#?}"));
    let problems = engine(&tempfile::tempdir().unwrap().path().join("state"))
        .validate(&cfg)
        .await;
    assert!(problems.is_empty(), "{problems:#?}");
    assert!(!cfg.config.checks.is_empty());
    for c in &cfg.config.checks {
        assert_eq!(c.provider, "prometheus", "{}", c.name);
    }
    assert_eq!(
        cfg.config.plugins["prometheus"].source, "builtin:prometheus",
        "the example uses the embedded plugin"
    );
}
