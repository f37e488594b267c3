//! Child processes of the local target: spawn, health-check, stop, adopt.
//!
//! Every child runs in its own process group (so a version that forks helpers is stopped
//! whole) and is registered in a process-wide table, so [`shutdown_all_local_targets`] can
//! kill everything synchronously from a Ctrl-C handler. Dropping a [`Proc`] kills its group
//! too: nothing outlives the target that started it.

use anyhow::{anyhow, bail, Context as _};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet, VecDeque};
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, BufReader};

/// Process groups started by any local target in this host process.
static LIVE_GROUPS: LazyLock<Mutex<HashSet<i32>>> = LazyLock::new(Default::default);

/// Kill (SIGKILL, whole process group) every child of every `LocalTarget` in this process.
/// Synchronous and non-blocking, for the CLI's Ctrl-C handler.
pub fn shutdown_all_local_targets() {
    let groups: Vec<i32> = LIVE_GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .drain()
        .collect();
    for pgid in groups {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

fn register(pgid: i32) {
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pgid);
}

/// Remove from the table; true if it was still there (i.e. nobody killed it yet).
fn unregister(pgid: i32) -> bool {
    LIVE_GROUPS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .remove(&pgid)
}

/// What to run for one version: enough to start more replicas of it later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchSpec {
    pub version: String,
    pub program: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
}

impl LaunchSpec {
    /// A command line such as `python3 app.py --port {port}`, split like a POSIX shell would.
    pub fn from_command_line(
        version: &str,
        line: &str,
        env: BTreeMap<String, String>,
    ) -> anyhow::Result<Self> {
        let words = shell_words::split(line)
            .with_context(|| format!("cannot split the artifact command line `{line}`"))?;
        let (program, args) = words.split_first().ok_or_else(|| {
            anyhow!(
                "the artifact command line is empty: write e.g. `python3 app.py --port {{port}}`"
            )
        })?;
        Ok(LaunchSpec {
            version: version.to_string(),
            program: program.clone(),
            args: args.to_vec(),
            env,
        })
    }
}

/// Where a running process came from.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcRecord {
    pub pid: i32,
    pub port: u16,
    pub version: String,
    /// `/proc/<pid>/cmdline` when started, to recognise the process (not a reused pid) later.
    pub cmdline: Vec<String>,
}

pub struct Proc {
    pub pid: i32,
    pub port: u16,
    pub version: String,
    /// Refreshed once the process is ready: a launcher script (a pyenv shim, `env`, ...)
    /// execs the real program, which changes the command line but not the pid.
    cmdline: Mutex<Vec<String>>,
    /// `None` for a process adopted from a previous host run (not our child).
    child: tokio::sync::Mutex<Option<tokio::process::Child>>,
    log: Arc<Mutex<VecDeque<String>>>,
}

const LOG_LINES: usize = 40;

impl Proc {
    pub fn pid(&self) -> i32 {
        self.pid
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// What the state file keeps about this process.
    pub fn record(&self) -> ProcRecord {
        ProcRecord {
            pid: self.pid,
            port: self.port,
            version: self.version.clone(),
            cmdline: self
                .cmdline
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone(),
        }
    }

    fn refresh_cmdline(&self) {
        if let Some(c) = read_cmdline(self.pid) {
            *self.cmdline.lock().unwrap_or_else(|e| e.into_inner()) = c;
        }
    }

    /// The last lines the process wrote to stdout/stderr.
    pub fn log_tail(&self) -> String {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().cloned().collect::<Vec<_>>().join("\n")
    }

    /// Still running (a zombie is not)?
    pub async fn is_running(&self) -> bool {
        let mut child = self.child.lock().await;
        match child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => pid_alive(self.pid),
        }
    }

    /// SIGTERM to the process group, then SIGKILL after `grace` if it has not exited.
    pub async fn stop(&self, grace: Duration) {
        let pgid = self.pid;
        if !unregister(pgid) {
            return; // already killed (shutdown_all or an earlier stop)
        }
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGTERM);
        let mut child = self.child.lock().await;
        let exited = match child.as_mut() {
            Some(c) => tokio::time::timeout(grace, c.wait()).await.is_ok(),
            None => {
                let deadline = Instant::now() + grace;
                while pid_alive(pgid) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                !pid_alive(pgid)
            }
        };
        // Also catches helpers the process forked into its group and left behind.
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        if !exited {
            if let Some(c) = child.as_mut() {
                let _ = c.wait().await;
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if unregister(self.pid) {
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        // kill_on_drop on the Child lets tokio reap it in the background.
    }
}

/// Is `pid` a live (non-zombie) process? Reads `/proc`, so it never signals anything.
pub fn pid_alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state letter follows the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.trim_start().chars().next())
            .is_some_and(|state| state != 'Z' && state != 'X'),
        Err(_) => false,
    }
}

fn read_cmdline(pid: i32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect(),
    )
}

/// Re-attach to a process a previous host run started, if it is still that process.
pub fn adopt(record: ProcRecord) -> Option<Arc<Proc>> {
    if !pid_alive(record.pid) || read_cmdline(record.pid)? != record.cmdline {
        return None;
    }
    register(record.pid);
    Some(Arc::new(Proc {
        pid: record.pid,
        port: record.port,
        version: record.version,
        cmdline: Mutex::new(record.cmdline),
        child: tokio::sync::Mutex::new(None),
        log: Default::default(),
    }))
}

/// Kill a recorded process group left by a previous run (when it cannot be adopted).
pub fn kill_leftover(record: &ProcRecord) {
    if pid_alive(record.pid) && read_cmdline(record.pid).as_ref() == Some(&record.cmdline) {
        let _ = killpg(Pid::from_raw(record.pid), Signal::SIGKILL);
    }
}

/// Ask the OS for a free loopback port (it is free now; the child binds it right after).
pub fn free_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").context("cannot bind a loopback port")?;
    Ok(l.local_addr()?.port())
}

/// Resolve a relative path against the deployment file's folder when it exists there.
fn resolve(word: &str, base_dir: &Path) -> String {
    let p = Path::new(word);
    if word.is_empty() || p.is_absolute() || word.starts_with('-') {
        return word.to_string();
    }
    let candidate = base_dir.join(p);
    if candidate.exists() {
        candidate.to_string_lossy().into_owned()
    } else {
        word.to_string()
    }
}

/// Start one process of `spec` on a fresh port (`{port}` in program, args and env values;
/// also `PORT`). Does not wait for readiness.
pub fn spawn(spec: &LaunchSpec, base_dir: &Path, label: &str) -> anyhow::Result<Arc<Proc>> {
    let port = free_port()?;
    let fill = |s: &str| s.replace("{port}", &port.to_string());
    let program = resolve(&fill(&spec.program), base_dir);
    let args: Vec<String> = spec
        .args
        .iter()
        .map(|a| resolve(&fill(a), base_dir))
        .collect();
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args)
        .envs(spec.env.iter().map(|(k, v)| (k, fill(v))))
        .env("PORT", port.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn().with_context(|| {
        format!(
            "cannot start {label} `{program}`: check that the program exists and is executable \
             (relative paths resolve against the deployment file's folder, then the current directory)"
        )
    })?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("{label} `{program}` exited immediately"))? as i32;
    register(pid);
    let log: Arc<Mutex<VecDeque<String>>> = Default::default();
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(BufReader::new(out), log.clone(), label.to_string()));
    }
    if let Some(err) = child.stderr.take() {
        tokio::spawn(pump(BufReader::new(err), log.clone(), label.to_string()));
    }
    let cmdline = read_cmdline(pid).unwrap_or_else(|| {
        std::iter::once(program.clone())
            .chain(args.iter().cloned())
            .collect()
    });
    Ok(Arc::new(Proc {
        pid,
        port,
        version: spec.version.clone(),
        cmdline: Mutex::new(cmdline),
        child: tokio::sync::Mutex::new(Some(child)),
        log,
    }))
}

/// Keep the last lines of a child's output (for error messages) and trace them.
async fn pump<R: tokio::io::AsyncBufRead + Unpin>(
    reader: R,
    log: Arc<Mutex<VecDeque<String>>>,
    label: String,
) {
    let mut lines = reader.lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::debug!(target: "dax::local::child", "{label}: {line}");
        let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == LOG_LINES {
            log.pop_front();
        }
        log.push_back(line);
    }
}

/// Poll the readiness path until it answers 2xx, the process exits, or `timeout` passes.
pub async fn wait_ready(
    proc: &Proc,
    client: &super::proxy::HttpClient,
    readiness_path: &str,
    timeout: Duration,
    label: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        if !proc.is_running().await {
            // Give the output pumps a moment to catch the last lines.
            tokio::time::sleep(Duration::from_millis(50)).await;
            bail!(
                "{label} (pid {}) exited before becoming ready; its last output:\n{}",
                proc.pid(),
                proc.log_tail()
            );
        }
        let last =
            match super::proxy::probe(client, proc.port(), readiness_path, Duration::from_secs(1))
                .await
            {
                Ok(status) if (200..300).contains(&status) => {
                    proc.refresh_cmdline();
                    return Ok(());
                }
                Ok(status) => format!("answered {status}"),
                Err(e) => e,
            };
        if Instant::now() >= deadline {
            bail!(
                "{label} (pid {}, port {}) was not ready within {:?}: GET {readiness_path} {last}. \
                 Raise `startup_timeout` or check `readiness_path`; its last output:\n{}",
                proc.pid(),
                proc.port(),
                timeout,
                proc.log_tail()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
