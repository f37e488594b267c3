//! Child processes of the local target: spawn, health-check, stop, adopt, sweep.
//!
//! Every child runs in its own process group (so a version that forks helpers is stopped
//! whole, and a terminal's Ctrl-C, which signals the foreground group, does not reach it) and
//! is registered in a process-wide table: [`shutdown_all_local_targets`] kills everything
//! synchronously, [`detach_all_local_targets`] lets everything run on for `dax resume`.
//! Dropping a [`Proc`] kills its group unless it was detached.
//!
//! A child's stdout and stderr go to a log file in the target's home folder, not to a pipe:
//! a pipe would break (and could kill the child) when the host dies, and the child must
//! outlive a killed or interrupted host so that `dax resume` can adopt it. Every child also
//! carries `DAX_LOCAL_OWNER=<home>` in its environment, so a resumed target finds and stops
//! the ones its state file never recorded (the host died between spawn and write).

use anyhow::{anyhow, bail, Context as _};
use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::io::{Read as _, Seek as _, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

/// The environment variable that marks a child with the home folder of its target.
pub const OWNER_ENV: &str = "DAX_LOCAL_OWNER";

/// Process groups started (or adopted) by any local target in this host process, with a
/// label such as `demo candidate v2 (pid 123, port 4567)` for messages.
static LIVE_GROUPS: LazyLock<Mutex<HashMap<i32, String>>> = LazyLock::new(Default::default);

fn live_groups() -> std::sync::MutexGuard<'static, HashMap<i32, String>> {
    LIVE_GROUPS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Kill (SIGKILL, whole process group) every child of every `LocalTarget` in this process.
/// Synchronous and non-blocking.
pub fn shutdown_all_local_targets() {
    let groups: Vec<i32> = live_groups().drain().map(|(pgid, _)| pgid).collect();
    for pgid in groups {
        let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
    }
}

/// Let every child of every `LocalTarget` in this process run on after the host stops
/// (Ctrl-C / SIGTERM: the deployment stays resumable and `dax resume` adopts them).
/// Returns what keeps running, one label per process.
pub fn detach_all_local_targets() -> Vec<String> {
    let mut left: Vec<String> = live_groups().drain().map(|(_, label)| label).collect();
    left.sort();
    left
}

fn register(pgid: i32, label: String) {
    live_groups().insert(pgid, label);
}

/// Remove from the table; true if it was still there (i.e. nobody killed or detached it yet).
fn unregister(pgid: i32) -> bool {
    live_groups().remove(&pgid).is_some()
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

/// Where a running process came from, as the state file keeps it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProcRecord {
    pub pid: i32,
    pub port: u16,
    pub version: String,
    /// `/proc/<pid>/cmdline` once ready (informational; a launcher may exec another program).
    pub cmdline: Vec<String>,
    /// When the process started (clock ticks after boot, `/proc/<pid>/stat`) and on which
    /// boot: with the pid, this names one process, so a recycled pid is never adopted.
    #[serde(default)]
    pub start_ticks: Option<u64>,
    #[serde(default)]
    pub boot_id: Option<String>,
    /// Its log file (stdout and stderr).
    #[serde(default)]
    pub log: Option<PathBuf>,
}

pub struct Proc {
    pub pid: i32,
    pub port: u16,
    pub version: String,
    /// Refreshed once the process is ready: a launcher script (a pyenv shim, `env`, ...)
    /// execs the real program, which changes the command line but not the pid.
    cmdline: Mutex<Vec<String>>,
    start_ticks: Option<u64>,
    /// `None` for a process adopted from a previous host run (not our child).
    child: tokio::sync::Mutex<Option<tokio::process::Child>>,
    log: PathBuf,
}

/// How much of a log file an error message quotes.
const LOG_TAIL_BYTES: u64 = 4096;

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
            start_ticks: self.start_ticks,
            boot_id: boot_id(),
            log: Some(self.log.clone()),
        }
    }

    fn refresh_cmdline(&self) {
        if let Some(c) = read_cmdline(self.pid) {
            *self.cmdline.lock().unwrap_or_else(|e| e.into_inner()) = c;
        }
    }

    /// The last lines the process wrote to stdout/stderr.
    pub fn log_tail(&self) -> String {
        log_tail(&self.log)
    }

    /// Still running (a zombie is not)?
    pub async fn is_running(&self) -> bool {
        let mut child = self.child.lock().await;
        match child.as_mut() {
            Some(c) => matches!(c.try_wait(), Ok(None)),
            None => is_same_process(self.pid, self.start_ticks),
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
            match child.as_mut() {
                Some(c) => {
                    let _ = c.wait().await;
                }
                None => {
                    // Not our child: its new parent reaps it; wait until it is gone.
                    let deadline = Instant::now() + Duration::from_secs(2);
                    while pid_alive(pgid) && Instant::now() < deadline {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if unregister(self.pid) {
            let _ = killpg(Pid::from_raw(self.pid), Signal::SIGKILL);
        }
        // A dropped `Child` that still runs is reaped by tokio in the background.
    }
}

/// The last lines of a log file (at most a few KiB), for error messages.
pub fn log_tail(path: &Path) -> String {
    let Ok(mut f) = std::fs::File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let from = len.saturating_sub(LOG_TAIL_BYTES);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(from)).is_err() || f.read_to_end(&mut buf).is_err() {
        return String::new();
    }
    let text = String::from_utf8_lossy(&buf);
    // A cut first line is dropped.
    let text = if from > 0 {
        text.split_once('\n').map(|(_, rest)| rest).unwrap_or("")
    } else {
        &text
    };
    text.trim_end().to_string()
}

/// Is `pid` a live (non-zombie) process? Reads `/proc`, so it never signals anything.
pub fn pid_alive(pid: i32) -> bool {
    stat_fields(pid)
        .and_then(|f| f.first().and_then(|s| s.chars().next()))
        .is_some_and(|state| state != 'Z' && state != 'X')
}

/// The fields of `/proc/<pid>/stat` after the parenthesised command name (field 3 first).
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// When `pid` started, in clock ticks after boot (field 22 of `/proc/<pid>/stat`).
fn start_ticks(pid: i32) -> Option<u64> {
    stat_fields(pid)?.get(19)?.parse().ok()
}

/// The process group of `pid` (field 5).
fn process_group(pid: i32) -> Option<i32> {
    stat_fields(pid)?.get(2)?.parse().ok()
}

fn boot_id() -> Option<String> {
    static ID: LazyLock<Option<String>> = LazyLock::new(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .ok()
            .map(|s| s.trim().to_string())
    });
    ID.clone()
}

/// Is `pid` alive and still the process that started at `ticks`?
fn is_same_process(pid: i32, ticks: Option<u64>) -> bool {
    pid_alive(pid) && (ticks.is_none() || start_ticks(pid) == ticks)
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

/// Is the recorded process still running, and is it the same process (same start time on
/// the same boot; records written before start times were kept compare the command line)?
fn is_recorded_process(record: &ProcRecord) -> bool {
    if !pid_alive(record.pid) {
        return false;
    }
    match (record.start_ticks, &record.boot_id) {
        (Some(ticks), Some(boot)) => {
            Some(boot) == boot_id().as_ref() && start_ticks(record.pid) == Some(ticks)
        }
        _ => read_cmdline(record.pid).as_ref() == Some(&record.cmdline),
    }
}

/// Re-attach to a process a previous host run started, if it is still that process.
pub fn adopt(record: ProcRecord, label: &str) -> Option<Arc<Proc>> {
    if !is_recorded_process(&record) {
        return None;
    }
    register(
        record.pid,
        format!("{label} (pid {}, port {})", record.pid, record.port),
    );
    Some(Arc::new(Proc {
        pid: record.pid,
        port: record.port,
        version: record.version,
        cmdline: Mutex::new(record.cmdline),
        start_ticks: start_ticks(record.pid),
        child: tokio::sync::Mutex::new(None),
        log: record.log.unwrap_or_default(),
    }))
}

/// SIGKILL every process marked with `owner` (see [`OWNER_ENV`]) outside the process
/// groups in `keep`: what a killed host started but never recorded, or could not adopt.
/// Returns how many it killed.
pub fn sweep(owner: &Path, keep: &[i32]) -> usize {
    let marker = format!("{OWNER_ENV}={}", owner.display());
    let mine = process_group(std::process::id() as i32);
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return 0;
    };
    let mut killed = 0;
    for entry in entries.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        if !environ.split(|b| *b == 0).any(|v| v == marker.as_bytes()) {
            continue;
        }
        let group = process_group(pid);
        if group.is_some_and(|g| keep.contains(&g)) || group == mine {
            continue;
        }
        if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() {
            killed += 1;
        }
    }
    killed
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
/// also `PORT`), its output going to a log file in `home`, marked as `home`'s (see
/// [`sweep`]). Does not wait for readiness.
pub fn spawn(
    spec: &LaunchSpec,
    base_dir: &Path,
    home: &Path,
    label: &str,
) -> anyhow::Result<Arc<Proc>> {
    let port = free_port()?;
    let fill = |s: &str| s.replace("{port}", &port.to_string());
    let program = resolve(&fill(&spec.program), base_dir);
    let args: Vec<String> = spec
        .args
        .iter()
        .map(|a| resolve(&fill(a), base_dir))
        .collect();
    let log = home.join(format!(
        "{}-{port}.log",
        spec.version
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            })
            .collect::<String>()
    ));
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)
        .with_context(|| format!("cannot create the log file {}", log.display()))?;
    let err = out.try_clone()?;
    let mut cmd = tokio::process::Command::new(&program);
    cmd.args(&args)
        .envs(spec.env.iter().map(|(k, v)| (k, fill(v))))
        .env("PORT", port.to_string())
        .env(OWNER_ENV, home)
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        // Its own group: stopped whole, and out of reach of the terminal's Ctrl-C.
        .process_group(0)
        // Whether it outlives this `Proc` is decided by `Drop` (see the module docs).
        .kill_on_drop(false);
    let child = cmd.spawn().with_context(|| {
        format!(
            "cannot start {label} `{program}`: check that the program exists and is executable \
             (relative paths resolve against the deployment file's folder, then the current directory)"
        )
    })?;
    let pid = child
        .id()
        .ok_or_else(|| anyhow!("{label} `{program}` exited immediately"))? as i32;
    register(pid, format!("{label} (pid {pid}, port {port})"));
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
        start_ticks: start_ticks(pid),
        child: tokio::sync::Mutex::new(Some(child)),
        log,
    }))
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
