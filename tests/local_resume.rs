//! `dax resume` on the embedded `local` target, as a user runs it: the real `dax` binary on a
//! quickstart-like deployment (builtin:local + the demo app + builtin:canary + local-metrics
//! checks + a load hook), killed with SIGKILL after every journal line or interrupted with
//! Ctrl-C / SIGTERM, then resumed. Every run must end with a complete journal, the right
//! final status and no demo-app process left behind; a closed stdout must not crash `dax`.
//!
//! Run: `cargo test -p dax-tests --test local_resume`. Needs `python3` on PATH.
//! `DAX_TEST_EVERY_NTH=K` kills after every K-th line only (quick local iteration).

use dax::contract::FinalStatus;
use dax::local::process::{pid_alive, OWNER_ENV};
use dax::state::{Event, Record, StateDir};
use dax_tests::dax_bin;
use dax_tests::demo_app;
use std::os::unix::process::CommandExt as _;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

// ------------------------------------------------------------------ fixtures

/// A scratch deployment: state dir, a free proxy port and the deployment file.
struct World {
    dir: tempfile::TempDir,
    port: u16,
}

impl World {
    fn new() -> World {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        World {
            dir: tempfile::tempdir().unwrap(),
            port,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    fn state(&self) -> StateDir {
        StateDir::new(self.state_dir())
    }

    /// The quickstart's canary with short intervals: two steps of 25%, one every second.
    /// The checks look at the last 3 s: `local-metrics` counts whole seconds, so a 1 s
    /// window is only the current, partial second. `threshold = 3`: the first analysis after
    /// a resume has no data (the load generator restarts with it).
    /// `candidate_args` makes the candidate faulty (`--error-rate 0.5`) or not.
    fn write(&self, candidate_args: &str) -> PathBuf {
        let app = demo_app();
        let app = app.display();
        let text = format!(
            r#"[deployment]
app = "demo"
version = "v2"
artifact = "python3 {app} --version v2 --port {{port}} {candidate_args}"
progress_deadline = "1m"

[target]
plugin = "local"
[target.workload]
replicas = 1

[strategy]
plugin = "canary"
[strategy.params]
interval = "1s"
threshold = 3
maxWeight = 50
stepWeight = 25

[[checks]]
name = "request-success-rate"
provider = "local-metrics"
query = "request-success-rate"
min = 99.0
interval = "3s"

[[checks]]
name = "request-duration"
provider = "local-metrics"
query = "request-duration"
max = 500.0
interval = "3s"

[[hooks]]
name = "load"
type = "rollout"
load = {{ url = "http://127.0.0.1:{port}/", rps = 50 }}

[plugins.local]
source = "builtin:local"
[plugins.local.config]
listen = "127.0.0.1:{port}"
stop_timeout = "2s"
stable = {{ version = "v1", command = "python3", args = ["{app}", "--version", "v1", "--port", "{{port}}"] }}

[plugins.canary]
source = "builtin:canary"

[plugins.local-metrics]
source = "builtin:local-metrics"
"#,
            port = self.port,
        );
        let path = self.dir.path().join("deploy.toml");
        std::fs::write(&path, text).unwrap();
        path
    }

    /// `dax ARGS --state-dir STATE`, with the shared compile cache.
    fn dax(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(dax_bin());
        cmd.args(args)
            .arg("--state-dir")
            .arg(self.state_dir())
            .current_dir(self.dir.path())
            .env("DAX_CACHE_DIR", cache_dir());
        cmd
    }

    fn journal_lines(&self, id: &str) -> usize {
        std::fs::read(self.state().deployment_dir(id).join("journal.jsonl"))
            .map(|b| b.iter().filter(|&&c| c == b'\n').count())
            .unwrap_or(0)
    }

    /// Live processes started by this world's local targets (marked with its state folder).
    fn demo_pids(&self) -> Vec<i32> {
        let marker = format!("{OWNER_ENV}={}", self.state_dir().display());
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Ok(env) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            let marked = env
                .split(|b| *b == 0)
                .any(|v| v.starts_with(marker.as_bytes()));
            if marked && pid_alive(pid) {
                pids.push(pid);
            }
        }
        pids
    }

    /// No process of this world survives (a stop may take a moment to be reaped).
    fn assert_no_orphans(&self, context: &str) {
        let t0 = Instant::now();
        while !self.demo_pids().is_empty() && t0.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let left = self.demo_pids();
        assert!(
            left.is_empty(),
            "{context}: demo processes left behind: {left:?}"
        );
    }
}

impl Drop for World {
    fn drop(&mut self) {
        // Never leak processes into other tests, even when an assertion failed.
        for pid in self.demo_pids() {
            let _ = Command::new("kill").args(["-9", &pid.to_string()]).status();
        }
    }
}

fn cache_dir() -> PathBuf {
    dax_tests::repo_root().join("target/test-component-cache")
}

fn output(mut cmd: Command) -> (Option<i32>, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Every decision has an outcome, seq numbers are contiguous, it starts with `created` and
/// ends with `finished`; returns the final status.
fn assert_complete_journal(records: &[Record], context: &str) -> FinalStatus {
    assert!(
        matches!(
            records.first().map(|r| &r.event),
            Some(Event::Created { .. })
        ),
        "{context}: journal must start with created"
    );
    for (i, r) in records.iter().enumerate() {
        assert_eq!(r.seq, i as u64, "{context}: seq numbers are contiguous");
    }
    for r in records {
        if let Event::Decision { n, .. } = r.event {
            assert!(
                records
                    .iter()
                    .any(|o| matches!(o.event, Event::Outcome { n: m, .. } if m == n)),
                "{context}: decision {n} has no outcome:\n{records:#?}"
            );
        }
    }
    match records.last().map(|r| &r.event) {
        Some(Event::Finished { status, .. }) => *status,
        other => panic!("{context}: journal does not end with finished: {other:?}"),
    }
}

fn has_traffic_shift(records: &[Record]) -> bool {
    let shifts: Vec<u64> = records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Decision {
                n,
                step: dax::contract::Step::SetTraffic(t),
                ..
            } if t.candidate_weight > 0 => Some(*n),
            _ => None,
        })
        .collect();
    records
        .iter()
        .any(|r| matches!(r.event, Event::Outcome { n, .. } if shifts.contains(&n)))
}

/// The tests of this file run one at a time: each drives real processes and timed
/// analyses, and three at once on a small machine starve the 1 s analysis windows.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// The demo apps' logs of a world, for failure messages.
fn logs(w: &World) -> String {
    let mut out = String::new();
    let dir = w.state().deployment_dir("k").join("local");
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(e.path()).unwrap_or_default();
        out.push_str(&format!("--- {}\n{text}\n", e.path().display()));
    }
    out
}

// ------------------------------------------------------------------ tests

/// `dax deploy` killed with SIGKILL after N journal lines, for every N of a whole rollout,
/// then `dax resume`: the local target adopts the demo processes the killed host left (or
/// stops them), and every run ends with a complete journal, the right status and no orphan.
///
/// The healthy candidate is killed after every line; the faulty one (rolled back) after every
/// third line, to keep the test within a few minutes on two cores.
#[test]
fn sigkill_at_every_journal_line_then_resume_on_the_local_target() {
    let _one = one_at_a_time();
    let every_nth: usize = std::env::var("DAX_TEST_EVERY_NTH")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1);
    for (candidate_args, want, code, stride) in [
        ("", FinalStatus::Promoted, 0, every_nth),
        (
            "--error-rate 0.5",
            FinalStatus::RolledBack,
            1,
            every_nth.max(3),
        ),
    ] {
        // A clean run first, to learn how many lines a whole rollout writes.
        let clean = World::new();
        let file = clean.write(candidate_args);
        let (status, _, stderr) = output(clean.dax(&[
            "deploy",
            file.to_str().unwrap(),
            "--id",
            "clean",
            "--no-progress",
        ]));
        assert_eq!(status, Some(code), "clean run: {stderr}");
        clean.assert_no_orphans("clean run");
        let total = clean.journal_lines("clean");
        assert!(total >= 10, "a rollout writes many records ({total})");
        drop(clean);

        for n in (1..total).step_by(stride) {
            let w = World::new();
            let file = w.write(candidate_args);
            let mut child = w
                .dax(&[
                    "deploy",
                    file.to_str().unwrap(),
                    "--id",
                    "k",
                    "--no-progress",
                ])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let t0 = Instant::now();
            while w.journal_lines("k") < n && t0.elapsed() < Duration::from_secs(60) {
                if child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            child.kill().unwrap(); // SIGKILL: no destructor, no signal handler runs
            child.wait().unwrap();
            let killed_at = w.journal_lines("k");
            let context = format!("{want:?}, killed after {killed_at} lines");

            let (status, stdout, stderr) = output(w.dax(&["resume", "k", "--no-progress"]));
            assert_eq!(
                status,
                Some(code),
                "{context}: resume said\n{stdout}\n{stderr}\n{}",
                logs(&w)
            );
            let records = w.state().read("k").unwrap();
            assert_eq!(
                assert_complete_journal(&records, &context),
                want,
                "{context}"
            );
            w.assert_no_orphans(&context);
        }
    }
}

/// Ctrl-C (SIGINT to dax's whole process group, as a terminal sends it) and SIGTERM leave a
/// resumable deployment: `dax` says so and exits 130, the demo processes keep running, and
/// `dax resume` adopts them and promotes, leaving nothing behind.
#[test]
fn ctrl_c_and_sigterm_leave_a_resumable_deployment() {
    let _one = one_at_a_time();
    for (signal, whole_group) in [("-INT", true), ("-TERM", false)] {
        let w = World::new();
        let file = w.write("");
        let mut child = w
            .dax(&[
                "deploy",
                file.to_str().unwrap(),
                "--id",
                "c",
                "--no-progress",
            ])
            .process_group(0)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        // Interrupt after the first traffic shift, while the canary analyses.
        let t0 = Instant::now();
        while !w.state().read("c").is_ok_and(|r| has_traffic_shift(&r)) {
            assert!(t0.elapsed() < Duration::from_secs(60), "no traffic shift");
            assert!(child.try_wait().unwrap().is_none(), "dax ended early");
            std::thread::sleep(Duration::from_millis(10));
        }
        let before = w.demo_pids();
        assert_eq!(before.len(), 2, "stable and candidate run");
        let target = if whole_group {
            format!("-{pid}")
        } else {
            pid.to_string()
        };
        let ok = Command::new("kill")
            .args([signal, "--", &target])
            .status()
            .unwrap();
        assert!(ok.success());
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(130), "{signal}: {stderr}");
        assert!(
            stderr.contains("deployment c is not finished and can be resumed")
                && stderr.contains("continue:  dax resume c")
                && stderr.contains("still running"),
            "{signal}: {stderr}"
        );
        let mut after = w.demo_pids();
        after.sort();
        let mut before = before;
        before.sort();
        assert_eq!(after, before, "{signal}: the demo processes keep running");

        let (status, stdout, stderr) = output(w.dax(&["resume", "c", "--no-progress"]));
        assert_eq!(status, Some(0), "{signal}: resume said\n{stdout}\n{stderr}");
        let records = w.state().read("c").unwrap();
        let context = format!("{signal} then resume");
        assert_eq!(
            assert_complete_journal(&records, &context),
            FinalStatus::Promoted
        );
        // The resumed target adopted both processes rather than starting new ones.
        let resumed = records.iter().find_map(|r| match &r.event {
            Event::Resumed { candidate, .. } => candidate.clone(),
            _ => None,
        });
        assert!(
            resumed.is_some_and(|c| c.ready == 1 && c.version == "v2"),
            "{context}: {records:#?}"
        );
        w.assert_no_orphans(&context);
    }
}

/// A closed stdout (`dax history | head -1`) ends the output quietly with exit code 141,
/// never a panic; the deployment itself is not affected.
#[test]
fn a_closed_stdout_is_not_a_crash() {
    let _one = one_at_a_time();
    let w = World::new();
    let file = w.write("");
    let closed = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader); // every write now fails with a broken pipe
        writer
    };
    let out = w
        .dax(&[
            "deploy",
            file.to_str().unwrap(),
            "--id",
            "p",
            "--no-progress",
        ])
        .stdout(closed())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(141), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let records = w.state().read("p").unwrap();
    assert_eq!(
        assert_complete_journal(&records, "deploy with a closed stdout"),
        FinalStatus::Promoted
    );
    w.assert_no_orphans("deploy with a closed stdout");
    for args in [
        &["resume", "p"][..],
        &["history"][..],
        &["status", "p"][..],
        &["history", "--output", "json"][..],
    ] {
        let out = w.dax(args).stdout(closed()).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(141), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
    }
    // And through a real `| head -1`, as in a shell.
    let shell = format!(
        "{} resume p --state-dir {} | head -1",
        dax_bin().display(),
        w.state_dir().display()
    );
    let out = Command::new("sh")
        .args(["-c", &shell])
        .env("DAX_CACHE_DIR", cache_dir())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{stderr}");
}
