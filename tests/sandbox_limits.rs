//! Issue 10, "every call is bounded in time" and "limits that hold for everything a plugin
//! returns or writes": hostile plugins (tests/plugins/adversary, hostile-strategy) against
//! the real plugin host. Each test asserts the refusal text and that the host, the same
//! plugin and a healthy plugin keep working.

use dax::contract::{CallError, MetricAnswer, Observation, Outcome};
use dax::plugin::{DirGrant, Limits, LoadError, PluginHost, PluginSpec};
use dax_tests::dax_bin;
use dax_tests::query;
use dax_tests::{fresh_host, plugin_path, spec};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

const MIB: usize = 1024 * 1024;

fn fault(result: Result<impl std::fmt::Debug, CallError>, plugin: &str) -> String {
    match result {
        Err(CallError::Fault { plugin: p, reason }) => {
            assert_eq!(p, plugin);
            reason
        }
        other => panic!("expected a fault of {plugin}, got {other:?}"),
    }
}

/// The adversary under `name`, with `limits` and extra grants.
fn adversary(name: &str, limits: Limits, dirs: Vec<DirGrant>) -> (String, PluginSpec) {
    let mut s = spec(&plugin_path("adversary"));
    s.limits = limits;
    s.grants.dirs = dirs;
    (name.to_string(), s)
}

async fn provider(
    host: &PluginHost,
    (name, spec): &(String, PluginSpec),
) -> Arc<dyn dax::contract::MetricProvider> {
    host.load(name, spec, Path::new("."))
        .await
        .unwrap()
        .metric_provider(serde_json::json!({}))
        .await
        .unwrap()
}

async fn healthy(host: &PluginHost) -> Arc<dyn dax::contract::MetricProvider> {
    host.load(
        "hello-metrics",
        &spec(&plugin_path("hello-metrics")),
        Path::new("."),
    )
    .await
    .unwrap()
    .metric_provider(serde_json::json!({}))
    .await
    .unwrap()
}

fn grant(host: &Path, guest: &str, writable: bool, quota_mib: Option<u64>) -> DirGrant {
    DirGrant {
        host: host.to_path_buf(),
        guest: Some(guest.into()),
        writable,
        quota_mib,
    }
}

/// A directory granted at `/attack` whose `describe` file tells the adversary's
/// `describe` what to do.
fn describe_attack(attack: &str) -> (tempfile::TempDir, DirGrant) {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("describe"), attack).unwrap();
    let g = grant(dir.path(), "/attack", false, None);
    (dir, g)
}

// ---------------------------------------------------------------- log capture

/// Everything the host logs in this test process (plugin output goes through `tracing`).
fn captured() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOG: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOG.get_or_init(|| {
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let _ = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .with_writer(move || Capture(sink.clone()))
            .try_init();
        log
    })
}

struct Capture(Arc<Mutex<Vec<u8>>>);

impl Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Captured log lines tagged with plugin `name`.
fn lines_of(name: &str) -> Vec<String> {
    let log = captured().lock().unwrap();
    String::from_utf8_lossy(&log)
        .lines()
        .filter(|l| l.contains(&format!("plugin={name}")))
        .map(String::from)
        .collect()
}

// ---------------------------------------------------------------- deadlines

#[tokio::test]
async fn a_sleeping_call_is_stopped_at_its_wall_clock_deadline() {
    let (host, _cache) = fresh_host();
    let limits = Limits {
        call_timeout: Duration::from_secs(5),
        wall_timeout: Some(Duration::from_secs(1)),
        ..Limits::default()
    };
    let bad = provider(&host, &adversary("sleeper", limits, vec![])).await;
    let good = healthy(&host).await;

    let started = Instant::now();
    let sleeping = tokio::spawn({
        let bad = bad.clone();
        async move { bad.run_query(&query("sleep:600000")).await }
    });
    // A healthy plugin answers while the other one sleeps.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        good.run_query(&query("value:1")).await.unwrap(),
        MetricAnswer::Value(1.0)
    );
    let reason = fault(sleeping.await.unwrap(), "sleeper");
    assert!(
        reason.contains("exceeded its wall-clock deadline of 1s per call")
            && reason.contains("limits.wall_timeout of [plugins.sleeper]"),
        "{reason}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the sleeping call took {:?}",
        started.elapsed()
    );
    // The timed-out instance was dropped; the next call runs on a fresh one.
    assert_eq!(
        bad.run_query(&query("ok")).await.unwrap(),
        MetricAnswer::Value(1.0)
    );
    // A short sleep is within the deadline: waiting costs no CPU budget.
    let limits = Limits {
        call_timeout: Duration::from_millis(200),
        wall_timeout: Some(Duration::from_secs(5)),
        ..Limits::default()
    };
    let patient = provider(&host, &adversary("patient", limits, vec![])).await;
    assert_eq!(
        patient.run_query(&query("sleep:600")).await.unwrap(),
        MetricAnswer::Value(2.0)
    );
    // The CPU deadline still names its own key.
    let reason = fault(patient.run_query(&query("loop")).await, "patient");
    assert!(
        reason.contains("exceeded its CPU deadline of 200ms per call")
            && reason.contains("limits.call_timeout"),
        "{reason}"
    );
}

/// A loopback HTTP server that sends headers and part of the body, then stalls forever.
fn stalling_http_server() -> std::net::SocketAddr {
    use std::io::Read;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for mut stream in listener.incoming().flatten() {
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\npartial body"
            );
            held.push(stream);
        }
    });
    addr
}

#[tokio::test]
async fn a_stalled_http_body_is_stopped_at_the_wall_clock_deadline() {
    let (host, _cache) = fresh_host();
    let server = stalling_http_server();
    let (name, mut s) = adversary(
        "stalled",
        Limits {
            wall_timeout: Some(Duration::from_secs(1)),
            ..Limits::default()
        },
        vec![],
    );
    s.grants.http = vec![format!("http://{server}")];
    let bad = provider(&host, &(name, s)).await;
    let started = Instant::now();
    let reason = fault(
        bad.run_query(&query(&format!("http:http://{server}/slow")))
            .await,
        "stalled",
    );
    assert!(
        reason.contains("exceeded its wall-clock deadline of 1s per call")
            && reason.contains("limits.wall_timeout"),
        "{reason}"
    );
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(
        bad.run_query(&query("ok")).await.unwrap(),
        MetricAnswer::Value(1.0)
    );
}

#[tokio::test]
async fn describe_and_validate_config_are_bounded_in_time() {
    let (host, _cache) = fresh_host();
    let limits = Limits {
        wall_timeout: Some(Duration::from_millis(800)),
        ..Limits::default()
    };
    let (_dir, attack) = describe_attack("sleep");
    let (name, s) = adversary("sleepy", limits.clone(), vec![attack]);
    let started = Instant::now();
    let err: LoadError = host.load(&name, &s, Path::new(".")).await.err().unwrap();
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(err.field, "limits.wall_timeout");
    assert!(
        err.message.contains("`describe` failed")
            && err.message.contains("wall-clock deadline of 800ms"),
        "{err:?}"
    );
    assert!(err.help.contains("raise `limits.wall_timeout`"), "{err:?}");

    let (name, s) = adversary("slow-validate", limits, vec![]);
    let plugin = host.load(&name, &s, Path::new(".")).await.unwrap();
    let started = Instant::now();
    let reason = fault(
        plugin
            .validate_config(&serde_json::json!({"attack": "sleep"}))
            .await,
        "slow-validate",
    );
    assert!(reason.contains("limits.wall_timeout"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(4));
    assert!(plugin
        .validate_config(&serde_json::json!({}))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn a_sleeping_strategy_next_is_stopped() {
    let (host, _cache) = fresh_host();
    let mut s = spec(&plugin_path("hostile-strategy"));
    s.limits.wall_timeout = Some(Duration::from_millis(500));
    let plugin = host
        .load("sleepy-strategy", &s, Path::new("."))
        .await
        .unwrap();
    let strategy = plugin
        .strategy(serde_json::json!({"attack": "sleep"}))
        .await
        .unwrap();
    let first = strategy.start().await.unwrap();
    let observation = Observation {
        elapsed_ms: 1,
        last: Outcome::Done,
    };
    let started = Instant::now();
    let reason = fault(
        strategy.next(&first.state, &observation).await,
        "sleepy-strategy",
    );
    assert!(
        reason.contains("wall-clock deadline of 500ms") && reason.contains("limits.wall_timeout"),
        "{reason}"
    );
    assert!(started.elapsed() < Duration::from_secs(3));
    // The same plugin still starts another deployment.
    strategy.start().await.unwrap();
}

/// `dax validate` used to hang forever on a plugin whose `describe` sleeps.
#[test]
fn dax_validate_fails_promptly_on_a_sleeping_describe() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("attack")).unwrap();
    std::fs::write(dir.path().join("attack/describe"), "sleep").unwrap();
    std::fs::write(
        dir.path().join("deploy.toml"),
        format!(
            r#"[deployment]
app = "demo"
version = "v2"

[target]
plugin = "local"

[strategy]
plugin = "canary"

[[checks]]
name = "up"
provider = "sleepy"
query = "ok"
min = 1

[plugins.local]
source = "builtin:local"

[plugins.canary]
source = "builtin:canary"

[plugins.sleepy]
source = "{}"
grants.dirs = [{{ host = "attack", guest = "/attack" }}]
limits.wall_timeout = "1s"
"#,
            plugin_path("adversary").display()
        ),
    )
    .unwrap();
    let dax = dax_bin();
    let started = Instant::now();
    let out = Command::new(dax)
        .args(["validate", "deploy.toml"])
        .current_dir(dir.path())
        .env("DAX_CACHE_DIR", dir.path().join("cache"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        // Compiling the plugins (debug build, shared CPU) takes most of it.
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(
        stderr.contains("`plugins.sleepy.limits.wall_timeout`: cannot load plugin `sleepy`")
            && stderr.contains("exceeded its wall-clock deadline of 1s per call")
            && stderr.contains("help: raise `limits.wall_timeout` of [plugins.sleepy]"),
        "{stderr}"
    );
}

// ---------------------------------------------------------------- sizes

#[tokio::test]
async fn huge_errors_describe_problems_and_state_are_refused_or_cut() {
    let (host, _cache) = fresh_host();
    let roomy = Limits {
        memory_mib: 512,
        ..Limits::default()
    };
    let bad = provider(&host, &adversary("bloater", roomy.clone(), vec![])).await;
    let good = healthy(&host).await;

    // A 50 MB error message reaches the engine cut to 4 KiB, marked.
    match bad.run_query(&query(&format!("bigerr:{}", 50 * MIB))).await {
        Err(CallError::Plugin { error, .. }) => {
            let text = error.to_string();
            assert!(text.len() < 5 * 1024, "{} bytes", text.len());
            assert!(
                text.contains(&format!("… [{} more bytes cut]", 50 * MIB - 4096)),
                "{}",
                &text[text.len() - 100..]
            );
        }
        other => panic!("expected a plugin error, got {other:?}"),
    }

    // A 50 MB describe() is refused at load time, naming the limit.
    let (_dir, attack) = describe_attack(&format!("huge:{}", 50 * MIB));
    let (name, s) = adversary("huge-describe", roomy.clone(), vec![attack]);
    let err = host.load(&name, &s, Path::new(".")).await.err().unwrap();
    assert_eq!(err.field, "limits.max_output_kib");
    assert!(
        err.message
            .contains("returned a describe() answer of 51201 KiB, more than its limit of 1024 KiB (limits.max_output_kib of [plugins.huge-describe])"),
        "{err:?}"
    );

    // A million config problems, or one enormous one, are a fault.
    let (name, s) = adversary("problems", roomy.clone(), vec![]);
    let plugin = host.load(&name, &s, Path::new(".")).await.unwrap();
    let reason = fault(
        plugin
            .validate_config(&serde_json::json!({"attack": "problems:1000000"}))
            .await,
        "problems",
    );
    assert_eq!(
        reason,
        "reported 1000000 config problems; at most 1000 are accepted"
    );
    let reason = fault(
        plugin
            .validate_config(&serde_json::json!({"attack": format!("problem-bytes:{}", 2 * MIB)}))
            .await,
        "problems",
    );
    assert!(
        reason.contains("returned config problems of 2049 KiB")
            && reason.contains("limits.max_output_kib"),
        "{reason}"
    );
    assert!(plugin
        .validate_config(&serde_json::json!({}))
        .await
        .unwrap()
        .is_empty());

    // A 100 MB strategy state is refused; a 600 KiB one fits the 1 MiB limit (its JSON form,
    // about 1.2 MB, would not: the state is measured by its bytes).
    let mut s = spec(&plugin_path("hostile-strategy"));
    s.limits = roomy;
    let strategies = host
        .load("bloated-state", &s, Path::new("."))
        .await
        .unwrap();
    let huge = strategies
        .strategy(serde_json::json!({"attack": format!("state:{}", 100 * MIB)}))
        .await
        .unwrap();
    let reason = fault(huge.start().await, "bloated-state");
    assert!(
        reason.contains("returned a decision (state included) of 102401 KiB, more than its limit of 1024 KiB (limits.max_output_kib of [plugins.bloated-state])"),
        "{reason}"
    );
    let fits = strategies
        .strategy(serde_json::json!({"attack": format!("state:{}", 600 * 1024)}))
        .await
        .unwrap();
    assert_eq!(fits.start().await.unwrap().state.len(), 600 * 1024);

    assert_eq!(
        bad.run_query(&query("ok")).await.unwrap(),
        MetricAnswer::Value(1.0)
    );
    assert_eq!(
        good.run_query(&query("value:2")).await.unwrap(),
        MetricAnswer::Value(2.0)
    );
}

#[tokio::test]
async fn stdout_floods_are_cut_and_log_lines_cannot_be_forged() {
    captured();
    let (host, _cache) = fresh_host();
    let flooder = provider(&host, &adversary("flooder", Limits::default(), vec![])).await;
    assert_eq!(
        flooder.run_query(&query("flood:200000")).await.unwrap(),
        MetricAnswer::Value(3.0)
    );
    let lines = lines_of("flooder");
    let kept = lines.iter().filter(|l| l.contains("flood line")).count();
    assert_eq!(kept, 1000, "lines kept per call");
    let notes: Vec<_> = lines
        .iter()
        .filter(|l| l.contains("of plugin output dropped"))
        .collect();
    assert_eq!(notes.len(), 1, "{notes:?}");
    assert!(
        notes[0].contains("199000 lines (")
            && notes[0].contains("at most 1000 lines and 256 KiB per call are kept"),
        "{}",
        notes[0]
    );
    // The next call has a fresh budget.
    flooder.run_query(&query("flood:10")).await.unwrap();
    assert_eq!(
        lines_of("flooder")
            .iter()
            .filter(|l| l.contains("flood line"))
            .count(),
        1010
    );

    let forger = provider(&host, &adversary("forger", Limits::default(), vec![])).await;
    assert_eq!(
        forger.run_query(&query("forge")).await.unwrap(),
        MetricAnswer::Value(4.0)
    );
    let log = String::from_utf8_lossy(&captured().lock().unwrap()).into_owned();
    assert!(!log.contains('\x1b'), "a raw escape reached the log");
    for line in log.lines() {
        assert!(
            !line.starts_with("2026-01-01T00:00:00"),
            "forged host line: {line}"
        );
    }
    let forged: Vec<_> = lines_of("forger")
        .into_iter()
        .filter(|l| l.contains("deployment promoted"))
        .collect();
    // stdout and stderr are split into lines, each behind the host's own prefix and tagged;
    // a `dax:host/log` message is one line, its newline escaped.
    assert_eq!(forged.len(), 3, "{forged:?}");
    for line in &forged {
        assert!(
            line.contains(" dax::plugin::capabilities::log: ") && line.contains("plugin=forger"),
            "{line}"
        );
    }
    assert_eq!(
        forged
            .iter()
            .filter(|l| l.contains(
                "WARN dax::plugin::capabilities::log: \\n2026-01-01T00:00:00.000000Z  INFO dax: deployment promoted plugin=forger"
            ))
            .count(),
        1,
        "{forged:?}"
    );
    assert!(
        lines_of("forger")
            .iter()
            .any(|l| l.contains("\\u{1b}[2Jscreen cleared")),
        "the ANSI escape must appear escaped"
    );

    // A guest panic's message reaches the fault.
    let reason = fault(forger.run_query(&query("trap")).await, "forger");
    assert!(
        reason.starts_with("trapped: ")
            && reason.contains("deliberate panic in the adversary plugin"),
        "{reason}"
    );
    assert_eq!(
        forger.run_query(&query("ok")).await.unwrap(),
        MetricAnswer::Value(1.0)
    );
}

// ---------------------------------------------------------------- memory

#[tokio::test]
async fn memory_limits_the_host_cannot_give_are_refused_at_load() {
    let (host, _cache) = fresh_host();
    let limits = Limits {
        memory_mib: 100_000,
        ..Limits::default()
    };
    let (name, s) = adversary("greedy", limits, vec![]);
    let err = host.load(&name, &s, Path::new(".")).await.err().unwrap();
    assert_eq!(err.field, "limits.memory_mib");
    let most = if host.pooling() { 1024 } else { 4096 };
    assert!(
        err.message.contains(&format!(
            "limits.memory_mib = 100000 is more than this host can give one plugin instance ({most} MiB"
        )),
        "{err:?}"
    );
    assert_eq!(
        err.help,
        format!("set `limits.memory_mib` of [plugins.greedy] to at most {most}")
    );
    assert_eq!(
        healthy(&host)
            .await
            .run_query(&query("value:5"))
            .await
            .unwrap(),
        MetricAnswer::Value(5.0)
    );
}

/// A metric provider with eight linear memories whose `run-query` grows seven of them by
/// 16 MiB each: every memory is under 64 MiB, the instance is not.
const MULTI_MEMORY_CORE: &str = r#"(module
  (memory (export "memory") 1)
  (memory $m1 0) (memory $m2 0) (memory $m3 0) (memory $m4 0)
  (memory $m5 0) (memory $m6 0) (memory $m7 0)
  (global $heap (mut i32) (i32.const 4096))
  (data (i32.const 300) "multi-memory")
  (data (i32.const 320) "0.1.0")
  (data (i32.const 330) "Grows every memory")
  (data (i32.const 350) "{}")
  (func (export "cabi_realloc") (param i32 i32 i32 i32) (result i32)
    (local $ptr i32)
    (local.set $ptr (i32.and (i32.add (global.get $heap) (i32.const 7)) (i32.const -8)))
    (global.set $heap (i32.add (local.get $ptr) (local.get 3)))
    (local.get $ptr))
  (func (export "dax:plugin/plugin@0.1.0#describe") (result i32)
    (i32.store (i32.const 0) (i32.const 300)) (i32.store (i32.const 4) (i32.const 12))
    (i32.store (i32.const 8) (i32.const 320)) (i32.store (i32.const 12) (i32.const 5))
    (i32.store8 (i32.const 16) (i32.const 2))
    (i32.store (i32.const 20) (i32.const 330)) (i32.store (i32.const 24) (i32.const 18))
    (i32.store (i32.const 28) (i32.const 350)) (i32.store (i32.const 32) (i32.const 2))
    (i32.const 0))
  (func (export "dax:plugin/plugin@0.1.0#validate-config") (param i32 i32) (result i32)
    (i32.store (i32.const 200) (i32.const 0)) (i32.store (i32.const 204) (i32.const 0))
    (i32.const 200))
  (func (export "dax:plugin/metric-provider@0.1.0#run-query")
    (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32)
    (drop (memory.grow $m1 (i32.const 256))) (drop (memory.grow $m2 (i32.const 256)))
    (drop (memory.grow $m3 (i32.const 256))) (drop (memory.grow $m4 (i32.const 256)))
    (drop (memory.grow $m5 (i32.const 256))) (drop (memory.grow $m6 (i32.const 256)))
    (drop (memory.grow $m7 (i32.const 256)))
    ;; ok(value(1.0))
    (i32.store8 (i32.const 400) (i32.const 0))
    (i32.store8 (i32.const 408) (i32.const 0))
    (f64.store (i32.const 416) (f64.const 1))
    (i32.const 400))
)"#;

fn multi_memory_component() -> Vec<u8> {
    let mut resolve = wit_parser::Resolve::default();
    let (package, _) = resolve
        .push_dir(dax_tests::repo_root().join("wit"))
        .unwrap();
    let world = resolve
        .select_world(&[package], Some("metric-provider-plugin"))
        .unwrap();
    let mut core = wat::parse_str(MULTI_MEMORY_CORE).unwrap();
    wit_component::embed_component_metadata(
        &mut core,
        &resolve,
        world,
        wit_component::StringEncoding::UTF8,
    )
    .unwrap();
    wit_component::ComponentEncoder::default()
        .module(&core)
        .unwrap()
        .validate(true)
        .encode()
        .unwrap()
}

#[tokio::test]
async fn memory_mib_holds_for_all_memories_of_an_instance() {
    // The pooling allocator refuses a core module with several memories outright (one per
    // module; several modules of a component share the instance limit below), so this runs
    // on the on-demand allocator, the host's fallback when pooling is unavailable.
    let cache = tempfile::tempdir().unwrap();
    let host = PluginHost::new(dax::plugin::HostOptions {
        cache_dir: cache.path().to_path_buf(),
        pooling: false,
        ..Default::default()
    })
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("multi-memory.wasm");
    std::fs::write(&path, multi_memory_component()).unwrap();
    let many = host
        .load("many-memories", &spec(&path), dir.path())
        .await
        .unwrap()
        .metric_provider(serde_json::json!({}))
        .await
        .unwrap();
    let good = healthy(&host).await;
    let reason = fault(many.run_query(&query("grow")).await, "many-memories");
    assert!(
        reason.starts_with("memory limit exceeded: plugin instance memory (all 5 memories and its tables together) would reach")
            && reason.contains("above limits.memory_mib = 64 (raise `limits.memory_mib` of [plugins.many-memories]"),
        "{reason}"
    );
    // With room for all of them (7 x 16 MiB), the same call succeeds.
    let mut roomy = spec(&path);
    roomy.limits.memory_mib = 128;
    let roomy = host
        .load("roomy", &roomy, dir.path())
        .await
        .unwrap()
        .metric_provider(serde_json::json!({}))
        .await
        .unwrap();
    assert_eq!(
        roomy.run_query(&query("grow")).await.unwrap(),
        MetricAnswer::Value(1.0)
    );
    assert_eq!(
        good.run_query(&query("value:4")).await.unwrap(),
        MetricAnswer::Value(4.0)
    );
    // With the pooling allocator the module is refused at load time.
    let (pooled, _cache) = fresh_host();
    if pooled.pooling() {
        let err = pooled
            .load("many-memories", &spec(&path), dir.path())
            .await
            .err()
            .unwrap();
        assert!(
            err.message.contains("defined memories count of 8 exceeds"),
            "{err:?}"
        );
    }
}

// ---------------------------------------------------------------- writable directories

#[tokio::test]
async fn writable_directories_have_a_quota_and_no_escaping_symlinks() {
    let (host, _cache) = fresh_host();
    let out = tempfile::tempdir().unwrap();
    std::fs::write(out.path().join("data.txt"), "inside").unwrap();
    let limits = Limits {
        wall_timeout: Some(Duration::from_secs(20)),
        call_timeout: Duration::from_secs(10),
        ..Limits::default()
    };
    let writer = adversary(
        "writer",
        limits,
        vec![grant(out.path(), "/out", true, Some(1))],
    );
    let bad = provider(&host, &writer).await;
    let good = healthy(&host).await;

    // Small writes fit.
    assert_eq!(
        bad.run_query(&query("fill:/out/small:1000")).await.unwrap(),
        MetricAnswer::Value(1000.0)
    );
    // Past the quota: refused after the call, naming the grant and its key.
    let reason = fault(
        bad.run_query(&query("fill:/out/big:3000000")).await,
        "writer",
    );
    assert!(
        reason.starts_with(
            "wrote past the quota of its writable directory `/out` (grants.dirs[0]): it holds "
        ) && reason.contains(
            "the quota is 1024 KiB (raise `grants.dirs[0].quota_mib` of [plugins.writer]"
        ),
        "{reason}"
    );
    std::fs::remove_file(out.path().join("big")).unwrap();
    // A runaway writer is stopped during the call, long before it fills the disk.
    let started = Instant::now();
    let reason = fault(
        bad.run_query(&query("fill:/out/huge:4000000000")).await,
        "writer",
    );
    assert!(reason.contains("grants.dirs[0].quota_mib"), "{reason}");
    let written = std::fs::metadata(out.path().join("huge")).unwrap().len();
    eprintln!(
        "runaway writer stopped after {written} bytes (quota 1 MiB) in {:?}",
        started.elapsed()
    );
    assert!(
        written < 2_000_000_000,
        "{written} bytes written in {:?}",
        started.elapsed()
    );
    std::fs::remove_file(out.path().join("huge")).unwrap();

    // Symlinks: absolute targets and `..` are refused and never created; inside is fine.
    for (target, link) in [
        ("/etc/passwd", "abs"),
        ("../../etc/passwd", "up"),
        ("a/../../x", "mid"),
    ] {
        let err = bad
            .run_query(&query(&format!("symlink:{target}>{link}")))
            .await
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(&format!("symlink {link} -> {target}")),
            "{err}"
        );
        assert!(
            out.path().join(link).symlink_metadata().is_err(),
            "{link} -> {target} was created"
        );
    }
    assert_eq!(
        bad.run_query(&query("symlink:data.txt>inside"))
            .await
            .unwrap(),
        MetricAnswer::Value(5.0)
    );
    assert_eq!(
        std::fs::read_link(out.path().join("inside")).unwrap(),
        PathBuf::from("data.txt")
    );

    assert_eq!(
        bad.run_query(&query("ok")).await.unwrap(),
        MetricAnswer::Value(1.0)
    );
    assert_eq!(
        good.run_query(&query("value:3")).await.unwrap(),
        MetricAnswer::Value(3.0)
    );
}

#[tokio::test]
async fn load_errors_name_the_field_to_fix() {
    let (host, _cache) = fresh_host();
    let here = tempfile::tempdir().unwrap();
    let (name, s) = adversary(
        "dirs",
        Limits::default(),
        vec![
            grant(here.path(), "/ok", false, None),
            grant(&here.path().join("missing"), "/missing", false, None),
        ],
    );
    let err = host.load(&name, &s, here.path()).await.err().unwrap();
    assert_eq!(err.field, "grants.dirs[1].host");
    assert!(err.message.contains("is not a directory"), "{err:?}");

    let mut pinned = spec(&plugin_path("hello-metrics"));
    pinned.sha256 = Some("0".repeat(64));
    let err = host
        .load("pinned", &pinned, here.path())
        .await
        .err()
        .unwrap();
    assert_eq!(err.field, "sha256");

    let err = host
        .load("gone", &spec(&here.path().join("gone.wasm")), here.path())
        .await
        .err()
        .unwrap();
    assert_eq!(err.field, "source");
    assert_eq!(
        healthy(&host)
            .await
            .run_query(&query("value:6"))
            .await
            .unwrap(),
        MetricAnswer::Value(6.0)
    );
}
