//! Every local example in `examples/quickstart/` runs through the real `dax deploy` on the
//! embedded `local` target with the demo app, and ends as its comments say: promoted (or,
//! for `canary-faulty.toml`, rolled back), through the traffic steps the strategy is meant
//! to take. The A/B example is also probed while it runs: a request with the matching header
//! is answered by the candidate, one without by the stable version.
//!
//! To keep each run to seconds, the files are run as written except for these overrides
//! (`shortened`): a free proxy port instead of the documented one, every duration in
//! `[strategy.params]` (intervals, pauses, delays) at 1 s, each check's window at 3 s (the
//! local metrics count whole seconds) and the load generators at 50 requests/s.
//! `canary-prometheus.toml` needs a Prometheus server: `tests/prometheus_e2e.rs` runs it.
//!
//! Run: `cargo test -p dax-tests --test examples`. Needs `python3`.

use dax_tests::{dax_bin, demo_app, free_port, repo_root};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use std::time::{Duration, Instant};

/// One example, ready to run from a scratch folder.
struct Example {
    dir: tempfile::TempDir,
    file: PathBuf,
    port: u16,
    id: String,
}

impl Example {
    /// `examples/quickstart/NAME.toml`, shortened, written to a temporary folder.
    fn new(name: &str) -> Example {
        let source = repo_root().join(format!("examples/quickstart/{name}.toml"));
        let text = std::fs::read_to_string(&source).unwrap();
        let port = free_port();
        let doc = shortened(&text, port);
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join(format!("{name}.toml"));
        std::fs::write(&file, toml::to_string(&doc).unwrap()).unwrap();
        Example {
            dir,
            file,
            port,
            id: format!("example-{name}"),
        }
    }

    fn dax(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(dax_bin());
        cmd.args(args)
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .current_dir(self.dir.path())
            .env(
                "DAX_CACHE_DIR",
                repo_root().join("target/test-component-cache"),
            );
        cmd
    }

    /// `dax deploy FILE --output json`, started (and killed if the test fails first).
    fn spawn_deploy(&self) -> Running {
        self.dax(&[
            "deploy",
            self.file.to_str().unwrap(),
            "--id",
            &self.id,
            "--output",
            "json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map(|c| Running(Some(c)))
        .unwrap()
    }

    /// Demo processes this example's local target started (marked with its state folder).
    fn demo_pids(&self) -> Vec<i32> {
        let marker = format!(
            "{}={}",
            dax::local::process::OWNER_ENV,
            self.dir.path().join("state").display()
        );
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if env
                .split(|b| *b == 0)
                .any(|v| v.starts_with(marker.as_bytes()))
            {
                pids.push(pid);
            }
        }
        pids
    }

    /// `dax status ID --output json`, once the deployment exists.
    fn status(&self) -> Option<Value> {
        let out = self
            .dax(&["status", &self.id, "--output", "json"])
            .output()
            .unwrap();
        out.status
            .success()
            .then(|| serde_json::from_slice(&out.stdout).ok())
            .flatten()
    }
}

/// A running `dax deploy`, interrupted (SIGTERM: it leaves the demo processes for `dax
/// resume`, so the whole process group goes) when dropped before it ended.
struct Running(Option<Child>);

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// However the test ends, no demo process of it is left (a `dax deploy` killed early leaves
/// them running for `dax resume`).
impl Drop for Example {
    fn drop(&mut self) {
        for pid in self.demo_pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

/// What `dax deploy --output json` ended with.
struct Ended {
    code: Option<i32>,
    status: String,
    summary: Value,
    stderr: String,
}

impl Ended {
    fn of(mut running: Running) -> Ended {
        let child = running.0.take().expect("not waited for yet");
        let out = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let json: Value = serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("no JSON from dax deploy ({e}):\n{stdout}\n{stderr}"));
        Ended {
            code: out.status.code(),
            status: json["status"].as_str().unwrap_or_default().to_string(),
            summary: json["summary"].clone(),
            stderr,
        }
    }

    fn timeline(&self) -> &[Value] {
        self.summary["timeline"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or(&[])
    }

    /// The steps of the timeline, as the summary names them.
    fn steps(&self) -> Vec<String> {
        self.timeline()
            .iter()
            .map(|e| e["step"].as_str().unwrap_or_default().to_string())
            .collect()
    }

    /// The candidate weights the rollout went through, in order, without repeats.
    fn weights(&self) -> Vec<u64> {
        let mut out: Vec<u64> = Vec::new();
        for e in self.timeline() {
            let w = e["weight"].as_u64().unwrap();
            if out.last() != Some(&w) {
                out.push(w);
            }
        }
        out
    }

    /// The last steps are the promotion and the end (no traffic step follows: `promote`
    /// itself moves everything to the candidate).
    fn assert_ends_with_promotion(&self) {
        let steps = self.steps();
        let tail: Vec<&str> = steps
            .iter()
            .rev()
            .take(3)
            .rev()
            .map(String::as_str)
            .collect();
        assert_eq!(
            tail,
            ["promote", "post-rollout hooks", "finish promoted"],
            "{steps:#?}"
        );
    }

    fn assert_status(&self, status: &str, code: i32) {
        assert_eq!(
            (self.status.as_str(), self.code),
            (status, Some(code)),
            "reason: {}\nsteps: {:#?}\nstderr:\n{}",
            self.summary["reason"],
            self.steps(),
            self.stderr
        );
    }
}

/// The example as `dax deploy` will run it here: see the module docs.
fn shortened(text: &str, port: u16) -> toml::Table {
    let app = demo_app();
    let app = app.to_str().unwrap();
    let mut doc: toml::Table = toml::from_str(text).unwrap();
    let documented = doc["plugins"]["local"]["config"]["listen"]
        .as_str()
        .unwrap()
        .to_string();
    let listen = format!("127.0.0.1:{port}");
    // The demo app by absolute path, since the file moves to a scratch folder.
    fn rewrite(v: &mut toml::Value, f: &dyn Fn(&str) -> String) {
        match v {
            toml::Value::String(s) => *s = f(s),
            toml::Value::Array(a) => a.iter_mut().for_each(|v| rewrite(v, f)),
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| rewrite(v, f)),
            _ => {}
        }
    }
    for section in ["deployment", "plugins", "hooks"] {
        if let Some(v) = doc.get_mut(section) {
            rewrite(v, &|s| {
                s.replace("../demo-app/app.py", app)
                    .replace(&documented, &listen)
            });
        }
    }
    // Every duration of the strategy at 1 s.
    fn durations(v: &mut toml::Value) {
        match v {
            toml::Value::String(s) if dax::plugin::spec::duration_str::parse(s).is_ok() => {
                *s = "1s".into()
            }
            toml::Value::Array(a) => a.iter_mut().for_each(durations),
            toml::Value::Table(t) => t.iter_mut().for_each(|(_, v)| durations(v)),
            _ => {}
        }
    }
    if let Some(params) = doc.get_mut("strategy").and_then(|s| s.get_mut("params")) {
        durations(params);
    }
    for check in doc
        .get_mut("checks")
        .and_then(|c| c.as_array_mut())
        .into_iter()
        .flatten()
    {
        check["interval"] = "3s".into();
    }
    for hook in doc
        .get_mut("hooks")
        .and_then(|c| c.as_array_mut())
        .into_iter()
        .flatten()
    {
        if let Some(load) = hook.get_mut("load") {
            load["rps"] = 50.0.into();
        }
    }
    doc
}

/// One GET through the proxy; the version that answered (`x-dax-version`), if any.
fn served_by(port: u16, headers: &[(&str, &str)]) -> Option<String> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let extra: String = headers
        .iter()
        .map(|(k, v)| format!("{k}: {v}\r\n"))
        .collect();
    write!(
        s,
        "GET /probe HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra}\r\n"
    )
    .ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    answer
        .lines()
        .find_map(|l| l.strip_prefix("x-dax-version: "))
        .map(|v| v.trim().to_string())
}

/// Wait until `what` holds (polled every 200 ms), or panic after `limit`.
fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run(name: &str) -> Ended {
    let ex = Example::new(name);
    let ended = Ended::of(ex.spawn_deploy());
    let left = ex.demo_pids();
    assert!(
        left.is_empty(),
        "{name}: demo processes left running: {left:?}"
    );
    ended
}

#[test]
fn canary_promotes_step_by_step() {
    let ended = run("canary");
    ended.assert_status("promoted", 0);
    // stepWeight 10 up to maxWeight 50, then the promotion.
    assert_eq!(
        ended.weights(),
        [0, 10, 20, 30, 40, 50],
        "{:#?}",
        ended.steps()
    );
    ended.assert_ends_with_promotion();
}

#[test]
fn faulty_canary_rolls_back() {
    let ended = run("canary-faulty");
    ended.assert_status("rolled-back", 1);
    let w = ended.weights();
    assert_eq!(w.last(), Some(&0), "all traffic back on v1: {w:?}");
    assert!(
        !ended.steps().iter().any(|s| s == "promote"),
        "{:#?}",
        ended.steps()
    );
}

#[test]
fn argo_steps_pause_for_dax_promote() {
    let ex = Example::new("canary-steps");
    let child = ex.spawn_deploy();
    // The manual pause (`{ pause = {} }`) after the first analysis: approve it.
    let paused = wait_for(Duration::from_secs(60), "the manual pause", || {
        ex.status().filter(|s| s["status"] == "paused")
    });
    assert_eq!(paused["weight"], 20, "{paused:#}");
    let out = ex.dax(&["promote", &ex.id]).output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let ended = Ended::of(child);
    ended.assert_status("promoted", 0);
    assert_eq!(ended.weights(), [0, 20, 50], "{:#?}", ended.steps());
    ended.assert_ends_with_promotion();
}

#[test]
fn ab_test_routes_matching_requests_to_the_candidate() {
    let ex = Example::new("ab-test");
    let child = ex.spawn_deploy();
    // While it runs: `x-canary: insider` reaches v2, everyone else v1.
    let insider = wait_for(Duration::from_secs(60), "the A/B route", || {
        served_by(ex.port, &[("x-canary", "insider")]).filter(|v| v == "v2")
    });
    assert_eq!(insider, "v2");
    let others: Vec<Option<String>> = (0..20).map(|_| served_by(ex.port, &[])).collect();
    let ended = Ended::of(child);
    ended.assert_status("promoted", 0);
    assert!(
        others.iter().flatten().all(|v| v == "v1") && others.iter().flatten().count() > 0,
        "requests without the header: {others:?}"
    );
    // Weight 0 for everyone else the whole time, the match rule, then promotion.
    assert_eq!(ended.weights(), [0], "{:#?}", ended.steps());
    assert!(
        ended
            .steps()
            .contains(&"set weight 0% + 1 match rule(s)".to_string()),
        "the route is in the timeline: {:#?}",
        ended.steps()
    );
    ended.assert_ends_with_promotion();
}

#[test]
fn blue_green_mirrors_then_switches_at_once() {
    let ended = run("blue-green");
    ended.assert_status("promoted", 0);
    // No weight in between: 0 (mirrored) then 100.
    assert_eq!(ended.weights(), [0, 100], "{:#?}", ended.steps());
    let steps = ended.steps();
    assert!(
        steps.contains(&"set weight 0% mirror 100%".to_string()),
        "mirroring in the timeline: {steps:#?}"
    );
    ended.assert_ends_with_promotion();
}

#[test]
fn rolling_replaces_replicas_in_batches() {
    let ended = run("rolling");
    ended.assert_status("promoted", 0);
    let steps = ended.steps();
    // maxSurge 1, maxUnavailable 0, 4 replicas: v2 grows one at a time while v1 shrinks.
    let scaled: Vec<&str> = steps
        .iter()
        .filter(|s| s.starts_with("scale"))
        .map(String::as_str)
        .collect();
    assert_eq!(
        scaled,
        [
            "scale candidate to 1",
            "scale stable to 3",
            "scale candidate to 2",
            "scale stable to 2",
            "scale candidate to 3",
            "scale stable to 1",
            "scale candidate to 4",
            "scale stable to 0",
        ],
        "batches: {steps:#?}"
    );
    ended.assert_ends_with_promotion();
}

/// The examples are what the README and their own comments promise: valid as written.
#[test]
fn every_local_example_is_valid_as_written() {
    let dir = repo_root().join("examples/quickstart");
    let mut names: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    names.sort();
    for strategy in ["canary", "blue-green", "ab-test", "rolling"] {
        assert!(
            names.iter().any(|p| std::fs::read_to_string(p)
                .unwrap()
                .contains(&format!("source = \"builtin:{strategy}\""))),
            "no example in examples/quickstart uses the {strategy} strategy"
        );
    }
    for file in &names {
        let out = Command::new(dax_bin())
            .args(["validate", file.to_str().unwrap()])
            .env(
                "DAX_CACHE_DIR",
                repo_root().join("target/test-component-cache"),
            )
            .current_dir(Path::new("/"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
