//! End-to-end tests of the deployment engine and the `dax` CLI, through real plugins: the
//! Flagger-style `canary` strategy (Wasm, built from plugins/canary), the `file-target` test target (Wasm, its
//! state in a granted directory so it survives the host being killed), and the
//! `hello-metrics` metric provider (Wasm; `value:N` answers N, anything else is no data).
//!
//! Webhooks, notifications and the load generator talk to a small HTTP server on 127.0.0.1.

use dax::config;
use dax::contract::{CheckVerdict, FinalStatus, Outcome};
use dax::engine::{Engine, HostResolver};
use dax::state::{ControlAction, Event, Record, StateDir};
use dax_tests::dax_bin;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// ------------------------------------------------------------------ fixtures

/// A scratch world: state dir, the file target's dir, and a deployment file.
struct World {
    dir: tempfile::TempDir,
}

struct Opts {
    query: String,
    params: String,
    deployment_extra: String,
    target_extra: String,
    extra: String,
}

impl Default for Opts {
    fn default() -> Self {
        Opts {
            query: "value:100".into(),
            params: r#"interval = "150ms"
threshold = 2
maxWeight = 30
stepWeight = 10"#
                .into(),
            deployment_extra: String::new(),
            target_extra: String::new(),
            extra: String::new(),
        }
    }
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("target-state")).unwrap();
        std::fs::create_dir_all(dir.path().join("state")).unwrap();
        World { dir }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn state(&self) -> StateDir {
        StateDir::new(self.state_dir())
    }

    fn engine(&self) -> Engine {
        let options = dax::plugin::HostOptions {
            cache_dir: cache_dir(),
            ..Default::default()
        };
        Engine::new(self.state(), Arc::new(HostResolver::new(options)))
    }

    /// Write `deploy.toml` and return its path.
    fn write(&self, o: &Opts) -> PathBuf {
        let text = format!(
            r#"[deployment]
app = "shop"
version = "v2"
artifact = "shop:v2"
{deployment_extra}

[target]
plugin = "files"
[target.workload]
replicas = 1

[strategy]
plugin = "canary"
[strategy.params]
{params}

[[checks]]
name = "success-rate"
provider = "metrics"
query = "{query}"
min = 99

{extra}

[plugins.files]
source = "{file_target}"
[plugins.files.config]
stable_version = "v1"
{target_extra}
[plugins.files.grants]
dirs = [{{ host = "target-state", guest = "/state", writable = true }}]

[plugins.canary]
source = "{canary}"

[plugins.metrics]
source = "{metrics}"
"#,
            canary = plugin_path("canary").display(),
            deployment_extra = o.deployment_extra,
            params = o.params,
            query = o.query,
            extra = o.extra,
            target_extra = o.target_extra,
            file_target = plugin_path("file-target").display(),
            metrics = plugin_path("hello-metrics").display(),
        );
        let path = self.dir.path().join("deploy.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(&self, o: &Opts) -> config::LoadedConfig {
        config::load_file(&self.write(o)).unwrap_or_else(|p| panic!("config problems: {p:#?}"))
    }

    /// The file target's real state for the app.
    fn target_state(&self) -> serde_json::Value {
        let text = std::fs::read_to_string(self.dir.path().join("target-state/shop.json")).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

/// A plugin component built from this repository. `DAX_TEST_PREBUILT_PLUGINS=DIR` uses
/// `DIR/NAME.wasm` instead of building (for quick local iteration only).
fn plugin_path(name: &str) -> PathBuf {
    match std::env::var_os("DAX_TEST_PREBUILT_PLUGINS") {
        Some(dir) if !dax_tests::in_ci() => PathBuf::from(dir).join(format!("{name}.wasm")),
        _ => dax_tests::plugin_path(name),
    }
}

fn cache_dir() -> PathBuf {
    dax_tests::repo_root().join("target/test-component-cache")
}

/// Every decision has an outcome, seq numbers are contiguous, it starts with `created` and
/// ends with `finished`.
fn assert_complete_journal(records: &[Record]) -> FinalStatus {
    assert!(
        matches!(
            records.first().map(|r| &r.event),
            Some(Event::Created { .. })
        ),
        "journal must start with created"
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64, "seq numbers are contiguous");
    }
    let mut decisions = Vec::new();
    for r in records {
        if let Event::Decision { n, .. } = r.event {
            decisions.push(n);
        }
    }
    for n in &decisions {
        assert!(
            records
                .iter()
                .any(|r| matches!(r.event, Event::Outcome { n: m, .. } if m == *n)),
            "decision {n} has no outcome:\n{records:#?}"
        );
    }
    match records.last().map(|r| &r.event) {
        Some(Event::Finished { status, .. }) => *status,
        other => panic!("journal does not end with finished: {other:?}"),
    }
}

fn weights(records: &[Record]) -> Vec<u8> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Decision {
                step: dax::contract::Step::SetTraffic(t),
                ..
            } => Some(t.candidate_weight),
            _ => None,
        })
        .collect()
}

// ------------------------------------------------------------------ a tiny HTTP server

#[derive(Clone, Debug)]
struct Req {
    method: String,
    path: String,
    body: String,
}

struct Server {
    url: String,
    requests: Arc<Mutex<Vec<Req>>>,
}

/// Answers every request with `status(path)`.
async fn server(status: fn(&str) -> u16) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let requests = Arc::new(Mutex::new(Vec::new()));
    let log = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let (head_end, len) = loop {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        let head = String::from_utf8_lossy(&buf[..i]).to_lowercase();
                        let len = head
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0usize);
                        break (i + 4, len);
                    }
                };
                while buf.len() < head_end + len {
                    let Ok(n) = sock.read(&mut chunk).await else {
                        return;
                    };
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                }
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let mut first = head.lines().next().unwrap_or_default().split(' ');
                let method = first.next().unwrap_or_default().to_string();
                let path = first.next().unwrap_or_default().to_string();
                let body = String::from_utf8_lossy(&buf[head_end..]).to_string();
                let code = status(&path);
                log.lock().unwrap().push(Req { method, path, body });
                let resp = format!(
                    "HTTP/1.1 {code} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    });
    Server { url, requests }
}

fn ok_except_fail(path: &str) -> u16 {
    if path.starts_with("/fail") {
        500
    } else {
        200
    }
}

// ------------------------------------------------------------------ in-process engine tests

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promotes_when_every_check_passes_and_notifies() {
    let w = World::new();
    let srv = server(ok_except_fail).await;
    std::env::set_var("DAX_TEST_NOTIFY_TOKEN", "tok-very-secret-42");
    let o = Opts {
        extra: format!(
            r#"[[hooks]]
name = "smoke"
type = "pre-rollout"
url = "{u}/smoke"
metadata = {{ token = "${{env:DAX_TEST_NOTIFY_TOKEN}}" }}
[[hooks]]
name = "load"
type = "rollout"
load = {{ url = "{u}/load", rps = 50 }}
[[notifications]]
kind = "slack"
url = "{u}/slack"
[[notifications]]
kind = "webhook"
url = "{u}/generic"
on = ["promoted"]"#,
            u = srv.url
        ),
        ..Default::default()
    };
    let cfg = w.load(&o);
    let report = w
        .engine()
        .deploy(cfg, Some("p1".into()), None)
        .await
        .unwrap();
    assert_eq!(
        report.status,
        FinalStatus::Promoted,
        "{}",
        report.summary.render()
    );
    let records = w.state().read("p1").unwrap();
    assert_eq!(assert_complete_journal(&records), FinalStatus::Promoted);
    assert_eq!(
        weights(&records),
        vec![10, 20, 30],
        "the canary ladder 10/20/30 then promotion"
    );
    let st = w.target_state();
    assert_eq!(st["stable"]["version"], "v2", "{st}");
    assert_eq!(st["candidate"]["replicas"], 0);
    assert_eq!(st["weight"], 0);

    let reqs = srv.requests.lock().unwrap().clone();
    let smoke = reqs
        .iter()
        .find(|r| r.path == "/smoke")
        .expect("pre-rollout hook called");
    let body: serde_json::Value = serde_json::from_str(&smoke.body).unwrap();
    assert_eq!(body["name"], "shop");
    assert_eq!(body["namespace"], "default");
    assert_eq!(body["type"], "pre-rollout");
    assert_eq!(
        body["metadata"]["token"], "tok-very-secret-42",
        "hooks get the real secret"
    );
    assert!(
        reqs.iter()
            .filter(|r| r.path == "/load" && r.method == "GET")
            .count()
            >= 3,
        "load generator sent traffic"
    );
    let slack: Vec<_> = reqs.iter().filter(|r| r.path == "/slack").collect();
    assert!(
        slack
            .iter()
            .any(|r| r.body.contains("\"text\"") && r.body.contains("promoted")),
        "{slack:?}"
    );
    let generic: Vec<_> = reqs.iter().filter(|r| r.path == "/generic").collect();
    assert_eq!(
        generic.len(),
        1,
        "only the `promoted` event goes to the generic webhook"
    );
    assert!(generic[0].body.contains("\"event\":\"promoted\""));

    // The secret never reaches the journal.
    let journal =
        std::fs::read_to_string(w.state().deployment_dir("p1").join("journal.jsonl")).unwrap();
    assert!(!journal.contains("tok-very-secret-42"));
    assert!(
        journal.contains("${env:DAX_TEST_NOTIFY_TOKEN}"),
        "the journal keeps the reference, not the value"
    );
    // The final timeline shows weights and metric values.
    let text = report.summary.render();
    assert!(
        text.contains("PROMOTED") && text.contains("success-rate 100 ✓") && text.contains(" 30% "),
        "{text}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolls_back_on_a_failed_check() {
    let w = World::new();
    let cfg = w.load(&Opts {
        query: "value:97.5".into(),
        ..Default::default()
    });
    let report = w
        .engine()
        .deploy(cfg, Some("f1".into()), None)
        .await
        .unwrap();
    assert_eq!(report.status, FinalStatus::RolledBack);
    let records = w.state().read("f1").unwrap();
    assert_eq!(assert_complete_journal(&records), FinalStatus::RolledBack);
    let failed: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Outcome {
                outcome: Outcome::Analysis(a),
                ..
            } => Some(a.checks[0].clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        failed.len(),
        2,
        "threshold 2: rolled back after two failed analyses (Flagger's >=)"
    );
    assert!(failed
        .iter()
        .all(|c| c.verdict == CheckVerdict::Fail && c.detail == "97.50 < min 99"));
    let st = w.target_state();
    assert_eq!(st["stable"]["version"], "v1");
    assert_eq!(st["candidate"]["replicas"], 0);
    assert_eq!(st["weight"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolls_back_on_a_failed_rollout_webhook_and_calls_rollback_hooks() {
    let w = World::new();
    let srv = server(ok_except_fail).await;
    let cfg = w.load(&Opts {
        extra: format!(
            r#"[[hooks]]
name = "acceptance"
type = "rollout"
url = "{u}/fail"
[[hooks]]
name = "cleanup"
type = "rollback"
url = "{u}/rolled-back""#,
            u = srv.url
        ),
        ..Default::default()
    });
    let report = w
        .engine()
        .deploy(cfg, Some("h1".into()), None)
        .await
        .unwrap();
    assert_eq!(report.status, FinalStatus::RolledBack);
    let records = w.state().read("h1").unwrap();
    assert_complete_journal(&records);
    let hook_checks: Vec<_> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Outcome {
                outcome: Outcome::Analysis(a),
                ..
            } => a
                .checks
                .iter()
                .find(|c| c.name == "hook:acceptance")
                .cloned(),
            _ => None,
        })
        .collect();
    assert!(
        !hook_checks.is_empty()
            && hook_checks
                .iter()
                .all(|c| c.verdict == CheckVerdict::Fail && c.detail.contains("500")),
        "{hook_checks:?}"
    );
    let reqs = srv.requests.lock().unwrap().clone();
    assert_eq!(
        reqs.iter().filter(|r| r.path == "/rolled-back").count(),
        1,
        "rollback hook called once"
    );
    assert_eq!(w.target_state()["stable"]["version"], "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_data_never_promotes_and_can_pause_for_a_human() {
    // Default: no-data counts as a failed check for the canary → rollback.
    let w = World::new();
    let cfg = w.load(&Opts {
        query: "nothing-matches".into(),
        ..Default::default()
    });
    let report = w
        .engine()
        .deploy(cfg, Some("n1".into()), None)
        .await
        .unwrap();
    assert_eq!(report.status, FinalStatus::RolledBack);
    assert!(report
        .summary
        .checks
        .iter()
        .all(|c| c.verdict == CheckVerdict::NoData));

    // on_inconclusive = "pause": halts until an operator answers; abort rolls back.
    let w = World::new();
    let cfg = w.load(&Opts {
        query: "nothing-matches".into(),
        deployment_extra: "on_inconclusive = \"pause\"".into(),
        ..Default::default()
    });
    let engine = w.engine();
    let run = tokio::spawn(async move { engine.deploy(cfg, Some("n2".into()), None).await });
    let state = w.state();
    let paused_at = wait_until(Duration::from_secs(20), || {
        let s = dax::engine::Summary::from_records("n2", &state.read("n2").ok()?);
        (s.status == "paused").then_some(s)
    })
    .await;
    assert!(
        paused_at.note.contains("inconclusive") && paused_at.note.contains("no data"),
        "{}",
        paused_at.note
    );
    assert_eq!(paused_at.weight, 10, "halted at the first weight");
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        dax::engine::Summary::from_records("n2", &state.read("n2").unwrap()).status,
        "paused",
        "still halted"
    );
    state.send_control("n2", ControlAction::Abort).unwrap();
    let report = run.await.unwrap().unwrap();
    assert_eq!(report.status, FinalStatus::RolledBack);
    assert!(
        report.reason.contains("aborted by operator"),
        "{}",
        report.reason
    );
    assert_eq!(w.target_state()["stable"]["version"], "v1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn progress_deadline_rolls_back_a_candidate_that_never_gets_ready() {
    let w = World::new();
    let cfg = w.load(&Opts {
        deployment_extra: "progress_deadline = \"1s\"".into(),
        target_extra: "never_ready = true".into(),
        ..Default::default()
    });
    let t0 = Instant::now();
    let report = w
        .engine()
        .deploy(cfg, Some("d1".into()), None)
        .await
        .unwrap();
    assert_eq!(report.status, FinalStatus::RolledBack);
    assert!(
        report.reason.contains("progress deadline exceeded"),
        "{}",
        report.reason
    );
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "the engine's deadline (1s) acts long before the canary's own (10m)"
    );
    let records = w.state().read("d1").unwrap();
    assert!(records.iter().any(|r| matches!(
        &r.event,
        Event::Decision {
            by: dax::state::DecidedBy::Engine,
            step: dax::contract::Step::Rollback(_),
            ..
        }
    )));
    assert_eq!(w.target_state()["candidate"]["replicas"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn manual_promote_and_abort_from_another_process() {
    let steps = r#"interval = "150ms"
threshold = 2
steps = [{ setWeight = 20 }, { pause = {} }, { setWeight = 50 }, { analysis = {} }]"#;
    for (action, expected) in [
        ("promote", FinalStatus::Promoted),
        ("abort", FinalStatus::RolledBack),
    ] {
        let w = World::new();
        let cfg = w.load(&Opts {
            params: steps.into(),
            ..Default::default()
        });
        let engine = w.engine();
        let id = format!("m-{action}");
        let run = {
            let id = id.clone();
            tokio::spawn(async move { engine.deploy(cfg, Some(id), None).await })
        };
        let state = w.state();
        let s = wait_until(Duration::from_secs(20), || {
            let s = dax::engine::Summary::from_records(&id, &state.read(&id).ok()?);
            (s.status == "paused").then_some(s)
        })
        .await;
        assert_eq!(s.weight, 20);
        // `dax promote ID` / `dax abort ID` run as separate processes.
        let out = Command::new(dax_bin())
            .args([action, &id, "--state-dir"])
            .arg(w.state_dir())
            .output()
            .unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report = run.await.unwrap().unwrap();
        assert_eq!(
            report.status,
            expected,
            "{action}: {}",
            report.summary.render()
        );
        let records = w.state().read(&id).unwrap();
        assert_complete_journal(&records);
        let ws = weights(&records);
        assert_eq!(ws[0], 20);
        assert_eq!(
            ws.contains(&50),
            action == "promote",
            "{action}: weights {ws:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_deployments_run_concurrently_in_one_engine() {
    let w = World::new();
    let engine = w.engine();
    let n = 16;
    let mut tasks = Vec::new();
    let t0 = Instant::now();
    for i in 0..n {
        // Each deployment gets its own app (own state file in the target).
        let mut cfg = w.load(&Opts::default());
        cfg.config.deployment.app = format!("app{i}");
        let engine = engine.clone();
        tasks.push(tokio::spawn(async move {
            engine.deploy(cfg, Some(format!("c{i}")), None).await
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap().unwrap().status, FinalStatus::Promoted);
    }
    let single = {
        let w2 = World::new();
        let t = Instant::now();
        w2.engine()
            .deploy(w2.load(&Opts::default()), None, None)
            .await
            .unwrap();
        t.elapsed()
    };
    // 16 rollouts of ~1s each must overlap, not queue behind each other.
    assert!(
        t0.elapsed() < single * 6,
        "concurrent {:?} vs single {:?}",
        t0.elapsed(),
        single
    );
}

async fn wait_until<T>(limit: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            t0.elapsed() < limit,
            "condition not reached within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ------------------------------------------------------------------ the dax binary

fn dax(args: &[&str], cwd: &Path) -> std::process::Output {
    Command::new(dax_bin())
        .args(args)
        .current_dir(cwd)
        .env("DAX_CACHE_DIR", cache_dir())
        .output()
        .unwrap()
}

fn journal_lines(state: &StateDir, id: &str) -> usize {
    std::fs::read(state.deployment_dir(id).join("journal.jsonl"))
        .map(|b| b.iter().filter(|&&c| c == b'\n').count())
        .unwrap_or(0)
}

/// `dax deploy` killed with SIGKILL after N journal lines, for every N, then `dax resume`:
/// every run ends promoted (or rolled back) with a complete journal, and the target's real
/// state agrees.
#[test]
fn sigkill_at_every_journal_line_then_resume_completes() {
    for (query, want, code) in [
        ("value:100", FinalStatus::Promoted, 0),
        ("value:5", FinalStatus::RolledBack, 1),
    ] {
        let params = r#"interval = "100ms"
threshold = 1
maxWeight = 20
stepWeight = 10"#;
        // A clean run first, to learn how many lines a whole rollout writes.
        let clean = World::new();
        let file = clean.write(&Opts {
            query: query.into(),
            params: params.into(),
            ..Default::default()
        });
        let out = dax(
            &[
                "deploy",
                file.to_str().unwrap(),
                "--id",
                "clean",
                "--output",
                "json",
                "--state-dir",
                clean.state_dir().to_str().unwrap(),
            ],
            clean.dir.path(),
        );
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let total = journal_lines(&clean.state(), "clean");
        assert!(total >= 10, "a rollout writes many records ({total})");

        for n in 1..total {
            let w = World::new();
            let file = w.write(&Opts {
                query: query.into(),
                params: params.into(),
                ..Default::default()
            });
            let state = w.state();
            let mut child = Command::new(dax_bin())
                .args([
                    "deploy",
                    file.to_str().unwrap(),
                    "--id",
                    "k",
                    "--no-progress",
                    "--state-dir",
                    w.state_dir().to_str().unwrap(),
                ])
                .current_dir(w.dir.path())
                .env("DAX_CACHE_DIR", cache_dir())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let t0 = Instant::now();
            while journal_lines(&state, "k") < n && t0.elapsed() < Duration::from_secs(30) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            let killed_at = journal_lines(&state, "k");
            let finished_before = state
                .read("k")
                .map(|r| r.iter().any(|r| matches!(r.event, Event::Finished { .. })))
                .unwrap_or(false);

            let out = dax(
                &[
                    "resume",
                    "k",
                    "--no-progress",
                    "--state-dir",
                    w.state_dir().to_str().unwrap(),
                ],
                w.dir.path(),
            );
            assert_eq!(
                out.status.code(),
                Some(code),
                "kill after {killed_at} lines: resume said\n{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let records = state.read("k").unwrap();
            assert_eq!(
                assert_complete_journal(&records),
                want,
                "kill after {killed_at} lines"
            );
            // The resume's exit checkpoint adopted the killed process's host log and retired
            // its own: the journal file alone holds every record.
            let logs: Vec<_> = std::fs::read_dir(w.state_dir().join("log"))
                .map(|d| d.flatten().map(|e| e.path()).collect())
                .unwrap_or_default();
            assert!(logs.is_empty(), "kill after {killed_at} lines: {logs:?}");
            let bytes = std::fs::read(state.deployment_dir("k").join("journal.jsonl")).unwrap();
            assert_eq!(
                dax::state::parse_journal(&bytes).unwrap().0,
                records,
                "kill after {killed_at} lines"
            );
            if !finished_before {
                assert!(
                    records
                        .iter()
                        .any(|r| matches!(r.event, Event::Resumed { .. })),
                    "resume looked at the target"
                );
            }
            let st = w.target_state();
            let want_stable = if want == FinalStatus::Promoted {
                "v2"
            } else {
                "v1"
            };
            assert_eq!(
                st["stable"]["version"], want_stable,
                "kill after {killed_at} lines: {st}"
            );
            assert_eq!(st["candidate"]["replicas"], 0);
            assert_eq!(st["weight"], 0);
        }
    }
}

#[test]
fn cli_plan_status_history_and_json_output() {
    let w = World::new();
    let file = w.write(&Opts {
        params: "interval = \"1m\"\nthreshold = 5\nmaxWeight = 50\nstepWeight = 10".into(),
        ..Default::default()
    });
    let f = file.to_str().unwrap();
    let sd = w.state_dir();
    let sd = sd.to_str().unwrap();
    let out = dax(&["plan", f, "--output", "json"], w.dir.path());
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        plan["best_case_ms"], 300_000,
        "interval × maxWeight/stepWeight = 5m"
    );
    assert_eq!(
        plan["worst_case_rollback_ms"], 300_000,
        "interval × threshold = 5m"
    );
    let out = dax(&["plan", f], w.dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("best case") && text.contains("5m00s"),
        "{text}"
    );

    let out = dax(&["validate", f, "--output", "json"], w.dir.path());
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["valid"],
        true
    );

    // A short, failing deployment: exit code 1, JSON report.
    let file = w.write(&Opts {
        query: "value:1".into(),
        ..Default::default()
    });
    let out = dax(
        &[
            "deploy",
            file.to_str().unwrap(),
            "--id",
            "x1",
            "--output",
            "json",
            "--state-dir",
            sd,
        ],
        w.dir.path(),
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "rolled back = exit 1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["status"], "rolled-back");
    assert_eq!(
        report["summary"]["timeline"][0]["step"],
        "confirm-rollout hooks"
    );

    let out = dax(&["status", "x1", "--state-dir", sd], w.dir.path());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("ROLLED-BACK") && text.contains("success-rate 1 ✗"),
        "{text}"
    );
    let out = dax(
        &["history", "--output", "json", "--state-dir", sd],
        w.dir.path(),
    );
    let h: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(h[0]["id"], "x1");
    let out = dax(&["status", "nope", "--state-dir", sd], w.dir.path());
    assert_eq!(out.status.code(), Some(4), "unknown deployment = exit 4");
    let out = dax(&["promote", "x1", "--state-dir", sd], w.dir.path());
    assert_eq!(
        out.status.code(),
        Some(2),
        "cannot promote a finished deployment"
    );
    let out = dax(
        &["deploy", "/nonexistent.toml", "--state-dir", sd],
        w.dir.path(),
    );
    assert_eq!(out.status.code(), Some(3), "invalid config = exit 3");
}

/// `dax validate` on every `tests/golden/*.toml`, compared with the `.out` next to it.
/// Regenerate with `DAX_UPDATE_GOLDEN=1`.
#[test]
fn golden_validate_outputs() {
    let dir = dax_tests::repo_root().join("tests/golden");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    assert!(files.len() >= 4, "golden files present");
    let mut failures = Vec::new();
    for path in files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let out = Command::new(dax_bin())
            .args(["validate", name])
            .current_dir(&dir)
            .env("DAX_CACHE_DIR", cache_dir())
            .env("DAX_GOLDEN_SECRET", "s3cr3t-golden-value")
            .env_remove("DAX_GOLDEN_UNSET")
            .output()
            .unwrap();
        let got = format!(
            "exit: {}\n--- stdout\n{}--- stderr\n{}",
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !got.contains("s3cr3t-golden-value"),
            "secret leaked in {name}"
        );
        // Digests of embedded plugins change whenever they are rebuilt; compare the shape.
        let got = mask_digests(&got);
        let expected_path = path.with_extension("out");
        if std::env::var("DAX_UPDATE_GOLDEN").is_ok() {
            std::fs::write(&expected_path, &got).unwrap();
            continue;
        }
        let expected = mask_digests(&std::fs::read_to_string(&expected_path).unwrap_or_default());
        if expected != got {
            failures.push(format!("{name}:\n--- expected\n{expected}\n--- got\n{got}"));
        }
    }
    assert!(
        failures.is_empty(),
        "golden mismatches (DAX_UPDATE_GOLDEN=1 to accept):\n{}",
        failures.join("\n")
    );
}

/// Issue 6 end to end: `dax deploy` refuses a release whose Trivy report has a blocking
/// finding (before touching the target), and proceeds once the finding is ignored with an
/// unexpired entry. The report is a real one from Trivy's test suite, read by the embedded
/// trivy plugin through a read-only directory grant.
#[tokio::test]
async fn deploy_refuses_a_release_the_gate_blocks_and_proceeds_when_ignored() {
    let w = World::new();
    let reports = dax_tests::repo_root().join("../shared/testdata/trivy");
    assert!(
        reports.join("dockerfile.json").is_file(),
        "shared test data missing at {}",
        reports.display()
    );
    let gate = |ignore: &str| Opts {
        extra: format!(
            r#"[gate]
scanners = ["trivy"]
severity = "HIGH"
{ignore}

[plugins.trivy]
source = "builtin:trivy"
[plugins.trivy.config]
report = "/reports/dockerfile.json"
check_artifact = false
[plugins.trivy.grants]
dirs = [{{ host = "{dir}", guest = "/reports" }}]
"#,
            dir = reports.display()
        ),
        ..Default::default()
    };
    let state = w.state_dir();
    let state = state.to_str().unwrap();

    let path = w.write(&gate(""));
    let out = dax(
        &["--state-dir", state, "deploy", path.to_str().unwrap()],
        w.dir.path(),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !out.status.success(),
        "a blocked release must not exit 0:\n{text}"
    );
    assert!(
        text.contains("DS-0002"),
        "the summary must name the blocking finding:\n{text}"
    );
    assert!(
        !w.dir.path().join("target-state/shop.json").exists(),
        "the target must not be touched when the gate blocks"
    );

    let path = w.write(&gate(
        "[[gate.ignore]]\nid = \"DS-0002\"\nexpires = \"2999-01-01\"\nreason = \"root user accepted until the base image moves\"",
    ));
    let out = dax(
        &["--state-dir", state, "deploy", path.to_str().unwrap()],
        w.dir.path(),
    );
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "an ignored finding must let the release through:\n{text}"
    );
    assert_eq!(
        w.target_state()["stable"]["version"],
        "v2",
        "promoted:\n{text}"
    );
}

/// Replace every sha256 (64 hex digits, other than the all-zero placeholder) by `<sha256>`.
fn mask_digests(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..]
            .iter()
            .take_while(|b| b.is_ascii_hexdigit())
            .count();
        let starts_word = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
        if run == 64 && starts_word && bytes[i..i + 64].iter().any(|b| *b != b'0') {
            out.push_str("<sha256>");
            i += 64;
        } else {
            let step = if run > 0 {
                run
            } else {
                text[i..].chars().next().map_or(1, char::len_utf8)
            };
            out.push_str(&text[i..i + step]);
            i += step;
        }
    }
    out
}
