//! The durable per-deployment journal.
//!
//! Layout: `STATE_DIR/deployments/ID/journal.jsonl` (written only by the process running the
//! deployment), `STATE_DIR/deployments/ID/control.jsonl` (appended by `dax promote` /
//! `dax abort` from other processes) and `STATE_DIR/control-bell.jsonl` (one line per control
//! record, naming the deployment, so that an engine watches one file rather than each of its
//! deployments polling its own; see `engine::control`), and `STATE_DIR/log/` (the host logs,
//! see below). `STATE_DIR` is `--state-dir`,
//! else `$DAX_STATE_DIR`, else `~/.local/state/dax`.
//!
//! Why fsync'd append-only JSON-lines files rather than an embedded database:
//! - **simple**: one writer per deployment, appends only; no schema migrations, no
//!   locking between the thousands of deployments of one host;
//! - **inspectable**: `cat`, `tail -f`, `jq` show exactly what the engine decided and did;
//! - **crash-safe**: each record is one line written with a single `write`, and the host log
//!   holding it is `fdatasync`ed before the engine acts on it. A crash can only tear the
//!   *last* line; the reader ignores a final line that has no newline or does not parse (the
//!   torn-last-line rule) and the writer truncates it away before appending again. A bad line
//!   anywhere else is corruption and is reported, never skipped.
//!
//! Records reach the disk through the host log (`host_log`): one sequential file per process
//! that group commit (`group_commit`) flushes once for every record queued meanwhile. The
//! journal files are written from it, as records come while a process has few journals
//! open, at checkpoints otherwise; readers merge the logs with the journal files.
//!
//! Records are redacted (`config::secrets`) before they reach the disk, and the deployment
//! file is stored as written (with `${env:..}` references, not their values).

mod group_commit;
mod host_log;
pub use group_commit::{checkpoint, stats as flush_stats, FlushStats};

use crate::config::secrets;
use crate::contract::{FinalStatus, Outcome, Step, WorkloadStatus};
use anyhow::{bail, Context};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// The state directory: `--state-dir`, `$DAX_STATE_DIR`, or `~/.local/state/dax`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("DAX_STATE_DIR") {
        return PathBuf::from(d);
    }
    dirs::state_dir()
        .or_else(|| dirs::home_dir().map(|h| h.join(".local/state")))
        .unwrap_or_else(|| PathBuf::from(".dax-state"))
        .join("dax")
}

/// Who made a decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DecidedBy {
    Strategy,
    /// The engine overrode the strategy (progress deadline, strategy fault, abort).
    Engine,
    /// An operator (`dax promote` / `dax abort`).
    Operator,
}

/// One plugin as resolved when the deployment started.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PluginRecord {
    pub source: String,
    pub role: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub digest: String,
}

/// What happened. Appended before an action is executed (`decision`) and after (`outcome`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case")]
pub enum Event {
    Created {
        id: String,
        app: String,
        version: String,
        namespace: String,
        /// The deployment file's path and folder, and its text as written.
        file: String,
        base_dir: String,
        config: String,
        pid: u32,
    },
    PluginsResolved {
        plugins: BTreeMap<String, PluginRecord>,
    },
    /// Scanners ran and the gate policy decided.
    Gate {
        passed: bool,
        summary: String,
        #[serde(default)]
        detail: serde_json::Value,
    },
    /// The next step, decided and about to be executed. `state` is the strategy's blob
    /// after this decision (hex), what `next` gets on resume.
    Decision {
        n: u64,
        step: Step,
        state: String,
        note: String,
        by: DecidedBy,
        /// On a rollback the engine decided to repair a fault (a failed promote, a strategy
        /// that claimed an end it did not reach): the status the deployment ends with.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        ends_as: Option<FinalStatus>,
    },
    /// The result of executing decision `n`.
    Outcome {
        n: u64,
        outcome: Outcome,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        detail: String,
    },
    /// Waiting for an operator (approval step, or an inconclusive analysis).
    Paused {
        n: u64,
        reason: String,
    },
    /// A control record (`dax promote`/`dax abort`) was consumed.
    Control {
        index: usize,
        action: ControlAction,
    },
    /// The host restarted the deployment from its journal and looked at the target.
    Resumed {
        pid: u32,
        stable: Option<WorkloadStatus>,
        candidate: Option<WorkloadStatus>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        note: String,
    },
    Finished {
        status: FinalStatus,
        reason: String,
    },
}

impl Event {
    /// Whether the engine must wait for this record to reach the disk (with
    /// `Durability::Fsync`) before going on: records that come before the engine changes
    /// something outside itself: the target, traffic, webhooks, an operator's view. The others
    /// (a `wait`, outcomes, consumed control records...) are written before the engine goes
    /// on and reach the disk with the next record that must: lines of a journal are written
    /// in order and a flush covers everything written before it. Losing them to a machine
    /// crash only repeats work that has no effect: `dax resume` decides or executes again.
    pub fn must_reach_disk(&self) -> bool {
        match self {
            Event::Created { .. } | Event::Finished { .. } => true,
            Event::Decision { step, .. } => !matches!(step, Step::Wait(_)),
            Event::PluginsResolved { .. }
            | Event::Gate { .. }
            | Event::Outcome { .. }
            | Event::Paused { .. }
            | Event::Control { .. }
            | Event::Resumed { .. } => false,
        }
    }
}

/// One line of a journal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub seq: u64,
    pub ts: DateTime<Utc>,
    /// Rollout clock: ms since the rollout started, across resumes.
    pub elapsed_ms: u64,
    #[serde(flatten)]
    pub event: Event,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ControlAction {
    Promote,
    Abort,
}

/// A request from another process (`dax promote ID`, `dax abort ID`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ControlRecord {
    pub action: ControlAction,
    pub ts: DateTime<Utc>,
    #[serde(default)]
    pub by: String,
}

/// A line of `control-bell.jsonl`: deployment `id` has a new control record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BellRing {
    pub id: String,
}

/// When an append counts as written. `Fsync` (the default): on disk, surviving a machine
/// crash. `Buffered` (`--journal-sync page-cache`): in the kernel's page cache, surviving the
/// `dax` process being killed but not the machine crashing; for hosts running more
/// deployments at once than their disk can flush (see BENCHMARKS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    Fsync,
    Buffered,
}

/// The state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    pub root: PathBuf,
    pub durability: Durability,
}

impl StateDir {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        StateDir {
            root: root.into(),
            durability: Durability::Fsync,
        }
    }

    pub fn control_bell_path(&self) -> PathBuf {
        self.root.join("control-bell.jsonl")
    }

    pub fn deployment_dir(&self, id: &str) -> PathBuf {
        self.root.join("deployments").join(id)
    }

    /// `STATE_DIR/deployments/ID/journal.jsonl`.
    pub fn journal_path(&self, id: &str) -> PathBuf {
        self.deployment_dir(id).join("journal.jsonl")
    }

    fn check_id(id: &str) -> anyhow::Result<()> {
        if id.is_empty()
            || !id
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
            || id.starts_with('.')
        {
            bail!("invalid deployment id `{id}`: use letters, digits, `-`, `_` and `.`");
        }
        Ok(())
    }

    /// Start a new journal. Fails if `id` exists.
    pub fn create(&self, id: &str) -> anyhow::Result<Journal> {
        Self::check_id(id)?;
        let dir = self.deployment_dir(id);
        let path = self.journal_path(id);
        if path.exists() {
            bail!(
                "deployment `{id}` already exists in {}",
                self.root.display()
            );
        }
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("cannot create {}", dir.display()))?;
        // Made durable by the host log's flushes (the records) and the next checkpoint (the
        // names); readers find a deployment in either.
        std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        Ok(Journal::new(&self.root, id, 0, self.durability))
    }

    /// Read a journal (torn-last-line rule applied) and open it for appending. Records that
    /// only a host log holds (the process that wrote them died before a checkpoint) are
    /// written to the journal file first, so it holds everything before the next append.
    pub fn open(&self, id: &str) -> anyhow::Result<(Journal, Vec<Record>)> {
        Self::check_id(id)?;
        let logged = host_log::logged_records(&self.root, id)?;
        if logged.is_empty() && !self.journal_path(id).exists() {
            return Err(self.no_such_deployment(id));
        }
        // Locked: a checkpoint adopting a dead process's log may write this journal too.
        let (mut tail, mut records) = host_log::open_tail(&self.root, id)?;
        for (record, line) in logged {
            if record.seq >= tail.next_seq {
                let mut line = line;
                line.push(b'\n');
                tail.file()?.write_all(&line)?;
                tail.next_seq = record.seq + 1;
                records.push(record);
            }
        }
        tail.file()?.sync_all()?;
        std::fs::File::open(self.deployment_dir(id))?.sync_all()?;
        let j = Journal::new(&self.root, id, tail.next_seq, self.durability);
        drop(tail);
        // A resume usually follows a crash: write the journals of any log its process left.
        if let Err(e) = host_log::adopt_orphans(&self.root, None) {
            tracing::warn!("{e:#} (readers still see every record of that log)");
        }
        Ok((j, records))
    }

    /// The records of a journal (read-only).
    pub fn read(&self, id: &str) -> anyhow::Result<Vec<Record>> {
        Self::check_id(id)?;
        // Logs first: a checkpoint moves records from a log to the journal and then deletes
        // the log, so reading in this order cannot miss a record that moved meanwhile.
        let logged = host_log::logged_records(&self.root, id)?;
        self.merged(id, logged)
    }

    fn no_such_deployment(&self, id: &str) -> anyhow::Error {
        anyhow::anyhow!(
            "no deployment `{id}` in {} (see `dax history`, or pass --state-dir)",
            self.root.display()
        )
    }

    /// Every deployment's records, oldest deployment first, reading the logs once (what
    /// `dax history` and `dax status` list). A journal that cannot be read is an `Err`.
    pub fn read_all(&self) -> anyhow::Result<Vec<(String, anyhow::Result<Vec<Record>>)>> {
        let mut logged = host_log::logged(&self.root, None)?;
        Ok(self
            .listed(logged.keys().cloned())?
            .into_iter()
            .map(|id| {
                let records = self.merged(&id, logged.remove(&id).unwrap_or_default());
                (id, records)
            })
            .collect())
    }

    /// `id`'s journal file (torn-last-line rule applied), followed by the `logged` records it
    /// lacks.
    fn merged(&self, id: &str, logged: Vec<host_log::Logged>) -> anyhow::Result<Vec<Record>> {
        let path = self.journal_path(id);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !logged.is_empty() => Vec::new(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(self.no_such_deployment(id))
            }
            Err(e) => bail!("cannot read {}: {e}", path.display()),
        };
        let (mut records, _) =
            parse_journal(&bytes).with_context(|| format!("journal {}", path.display()))?;
        let last = records.last().map(|r| r.seq);
        records.extend(
            logged
                .into_iter()
                .map(|(record, _)| record)
                .filter(|r| last.is_none_or(|last| r.seq > last)),
        );
        Ok(records)
    }

    /// IDs of every deployment, oldest first.
    pub fn list(&self) -> anyhow::Result<Vec<String>> {
        self.listed(host_log::logged_ids(&self.root))
    }

    /// The deployments with a folder, and those only the logs name (`logged`).
    fn listed(&self, logged: impl IntoIterator<Item = String>) -> anyhow::Result<Vec<String>> {
        let dir = self.root.join("deployments");
        let mut out: Vec<(Option<std::time::SystemTime>, String)> = Vec::new();
        for e in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            if e.path().join("journal.jsonl").exists() {
                let created = e
                    .path()
                    .join("journal.jsonl")
                    .metadata()
                    .and_then(|m| m.created().or(m.modified()))
                    .ok();
                out.push((created, e.file_name().to_string_lossy().into_owned()));
            }
        }
        // A deployment whose folder a machine crash lost before a checkpoint wrote it.
        let known: std::collections::HashSet<String> =
            out.iter().map(|(_, id)| id.clone()).collect();
        for id in logged {
            if !known.contains(&id) && Self::check_id(&id).is_ok() {
                out.push((None, id));
            }
        }
        out.sort();
        Ok(out.into_iter().map(|(_, id)| id).collect())
    }

    /// Append a control record for a running (or interrupted) deployment.
    pub fn send_control(&self, id: &str, action: ControlAction) -> anyhow::Result<()> {
        Self::check_id(id)?;
        let dir = self.deployment_dir(id);
        if !self.journal_path(id).exists() {
            bail!(
                "no deployment `{id}` in {} (see `dax history`)",
                self.root.display()
            );
        }
        let rec = ControlRecord {
            action,
            ts: Utc::now(),
            by: std::env::var("USER").unwrap_or_default(),
        };
        let mut line = serde_json::to_string(&rec)?;
        line.push('\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("control.jsonl"))?;
        f.write_all(line.as_bytes())?;
        f.sync_data()?;
        // Then ring the bell: one short O_APPEND write, atomic between concurrent writers.
        let mut ring = serde_json::to_string(&BellRing { id: id.to_string() })?;
        ring.push('\n');
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.control_bell_path())?
            .write_all(ring.as_bytes())?;
        Ok(())
    }

    /// Every complete control record so far.
    pub fn read_control(&self, id: &str) -> Vec<ControlRecord> {
        let Ok(text) = std::fs::read_to_string(self.deployment_dir(id).join("control.jsonl"))
        else {
            return Vec::new();
        };
        text.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .filter_map(|l| serde_json::from_str(l.trim()).ok())
            .collect()
    }
}

/// Parse journal bytes; returns the records and the length of the well-formed prefix.
pub fn parse_journal(bytes: &[u8]) -> anyhow::Result<(Vec<Record>, u64)> {
    let mut records = Vec::new();
    let mut good_len = 0u64;
    let mut pos = 0usize;
    let mut line_no = 0;
    while pos < bytes.len() {
        line_no += 1;
        let end = bytes[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map(|i| pos + i);
        let Some(end) = end else {
            break; // torn: no newline
        };
        let line = &bytes[pos..end];
        match serde_json::from_slice::<Record>(line) {
            Ok(r) => {
                check_seq(&r).with_context(|| format!("line {line_no} is corrupt"))?;
                records.push(r);
                good_len = (end + 1) as u64;
            }
            Err(e) => {
                if end + 1 >= bytes.len() {
                    break; // torn last line
                }
                bail!("line {line_no} is corrupt ({e}); it is not the last line, so this is not a torn write");
            }
        }
        pos = end + 1;
    }
    Ok((records, good_len))
}

/// `open` appends at seq + 1: a record at u64::MAX leaves no room (found by tests/fuzz: the
/// addition overflowed).
fn check_seq(record: &Record) -> anyhow::Result<()> {
    if record.seq == u64::MAX {
        bail!("seq {} leaves no number for another record", record.seq);
    }
    Ok(())
}

/// An open journal. Cheap to clone; appends are serialized.
#[derive(Clone)]
pub struct Journal {
    pub id: String,
    inner: Arc<Mutex<JournalState>>,
    durability: Durability,
}

struct JournalState {
    /// The state directory and the deployment, as the journal thread routes lines.
    root: Arc<Path>,
    id: Arc<str>,
    next_seq: u64,
    /// Counted while open: how many journals are open decides how they are written.
    _open: group_commit::OpenJournal,
}

impl Journal {
    fn new(root: &Path, id: &str, next_seq: u64, durability: Durability) -> Self {
        Journal {
            id: id.to_string(),
            inner: Arc::new(Mutex::new(JournalState {
                root: Arc::from(root),
                id: Arc::from(id),
                next_seq,
                _open: group_commit::OpenJournal::new(Arc::from(root), Arc::from(id)),
            })),
            durability,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, JournalState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Append one event; with `Durability::Fsync`, on disk before returning if the event
    /// must reach it (see `Event::must_reach_disk`), otherwise written.
    pub async fn append(&self, elapsed_ms: u64, event: Event) -> anyhow::Result<Record> {
        let queued = (|| -> anyhow::Result<_> {
            let mut f = self.lock();
            let to_disk = self.durability == Durability::Fsync && event.must_reach_disk();
            let record = Record {
                seq: f.next_seq,
                ts: Utc::now(),
                elapsed_ms,
                event,
            };
            let mut line = if secrets::any() {
                let mut value = serde_json::to_value(&record)?;
                secrets::redact_json(&mut value);
                serde_json::to_vec(&value)?
            } else {
                serde_json::to_vec(&record)?
            };
            line.push(b'\n');
            f.next_seq += 1;
            // Queued under the lock, so lines reach the log in `seq` order.
            let pending =
                group_commit::submit(f.root.clone(), f.id.clone(), record.seq, to_disk, line);
            Ok((record, pending))
        })();
        let (record, pending) =
            queued.with_context(|| format!("cannot append to the journal of `{}`", self.id))?;
        pending
            .done()
            .await
            .with_context(|| format!("cannot append to the journal of `{}`", self.id))?;
        Ok(record)
    }
}

/// A new deployment ID: `APP-YYYYMMDD-HHMMSS-XXXX`.
pub fn new_id(app: &str) -> String {
    let app: String = app
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .take(40)
        .collect();
    format!(
        "{}-{}-{:04x}",
        app,
        Utc::now().format("%Y%m%d-%H%M%S"),
        rand::random::<u16>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn append_read_and_torn_last_line() {
        let _serial = group_commit::TEST_SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        let j = sd.create("d1").unwrap();
        j.append(
            0,
            Event::Paused {
                n: 1,
                reason: "a".into(),
            },
        )
        .await
        .unwrap();
        j.append(
            5,
            Event::Paused {
                n: 2,
                reason: "b".into(),
            },
        )
        .await
        .unwrap();
        let path = sd.deployment_dir("d1").join("journal.jsonl");
        // Simulate a crash in the middle of the third write.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"seq\":2,\"ts\":").unwrap();
        let recs = sd.read("d1").unwrap();
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[1].elapsed_ms, 5);
        let (j, recs) = sd.open("d1").unwrap();
        assert_eq!(recs.len(), 2);
        let r = j
            .append(
                9,
                Event::Paused {
                    n: 3,
                    reason: "c".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(r.seq, 2);
        let recs = sd.read("d1").unwrap();
        assert_eq!(recs.len(), 3, "torn line was truncated before the append");
        // Corruption in the middle is an error, not silently skipped.
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replacen("\"seq\":1", "\"seq\":x", 1);
        std::fs::write(&path, text).unwrap();
        assert!(sd.read("d1").unwrap_err().to_string().contains("journal"));
    }

    #[tokio::test]
    async fn secrets_are_redacted_on_disk() {
        let _serial = group_commit::TEST_SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        secrets::register("hunter2-secret-token");
        let j = sd.create("d2").unwrap();
        j.append(
            0,
            Event::Paused {
                n: 1,
                reason: "token hunter2-secret-token".into(),
            },
        )
        .await
        .unwrap();
        // Neither the host log nor (after a checkpoint) the journal holds the secret.
        let logged: String = host_log::log_files(dir.path())
            .iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        assert!(logged.contains("token ***") && !logged.contains("hunter2"));
        checkpoint().unwrap();
        let text = std::fs::read_to_string(sd.deployment_dir("d2").join("journal.jsonl")).unwrap();
        assert!(!text.contains("hunter2"));
        assert!(text.contains("token ***"));
    }

    fn paused(n: u64) -> Event {
        Event::Paused {
            n,
            reason: format!("r{n}"),
        }
    }

    /// A process died before a checkpoint: its log holds records its journal lacks, and a
    /// folder it created may be missing. Readers see every record; `open` (`dax resume`)
    /// writes them to the journal before appending and adopts the log (every journal in it
    /// written, the log deleted); a log held by a live process is left alone.
    #[tokio::test]
    async fn a_dead_process_log_is_read_resumed_and_adopted() {
        let _serial = group_commit::TEST_SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        // Open throughout, so no idle checkpoint adopts the log before the test does.
        let _holder = sd.create("holder").unwrap();
        let j = sd.create("kept").unwrap();
        j.append(0, paused(0)).await.unwrap();
        j.append(0, paused(1)).await.unwrap();
        drop(j);
        let line = |seq: u64| {
            let record = Record {
                seq,
                ts: Utc::now(),
                elapsed_ms: seq,
                event: paused(seq),
            };
            serde_json::to_string(&record).unwrap()
        };
        let log = dir.path().join("log/1-1.jsonl");
        std::fs::create_dir_all(log.parent().unwrap()).unwrap();
        std::fs::write(
            &log,
            format!(
                "kept\t{}\nkept\t{}\nlost\t{}\nkept\t{}\nlost\t{{\"seq\":1,\"ts",
                line(0),
                line(2),
                line(0),
                line(3)
            ),
        )
        .unwrap();
        let seqs = |records: Vec<Record>| records.iter().map(|r| r.seq).collect::<Vec<_>>();
        assert_eq!(seqs(sd.read("kept").unwrap()), [0, 1, 2, 3]);
        assert_eq!(
            seqs(sd.read("lost").unwrap()),
            [0],
            "torn last line ignored"
        );
        assert_eq!(sd.list().unwrap(), ["lost", "holder", "kept"]);
        let listed: Vec<String> = sd
            .read_all()
            .unwrap()
            .into_iter()
            .map(|(id, _)| id)
            .collect();
        assert_eq!(
            listed,
            ["lost", "holder", "kept"],
            "read_all lists as list does"
        );
        // Even with no `deployments` folder at all, the log's deployments are listed.
        let bare = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(bare.path().join("log")).unwrap();
        std::fs::copy(&log, bare.path().join("log/1-1.jsonl")).unwrap();
        assert_eq!(StateDir::new(bare.path()).list().unwrap(), ["kept", "lost"]);
        // A live process's log is not adopted.
        let held = std::fs::File::open(&log).unwrap();
        held.lock().unwrap();
        assert_eq!(host_log::adopt_orphans(dir.path(), None).unwrap(), 0);
        drop(held);
        let (j, records) = sd.open("kept").unwrap();
        assert_eq!(seqs(records), [0, 1, 2, 3]);
        assert_eq!(j.append(0, paused(4)).await.unwrap().seq, 4);
        assert!(
            !log.exists(),
            "`open` (a resume) adopted the dead process's log"
        );
        let text = std::fs::read(sd.deployment_dir("lost").join("journal.jsonl")).unwrap();
        assert_eq!(seqs(parse_journal(&text).unwrap().0), [0]);
        checkpoint().unwrap();
        let text = std::fs::read(sd.deployment_dir("kept").join("journal.jsonl")).unwrap();
        assert_eq!(seqs(parse_journal(&text).unwrap().0), [0, 1, 2, 3, 4]);
    }

    /// A long-running process keeps no descriptor for a deployment whose journal it dropped:
    /// the journal thread closes the file (a checkpoint opens it again to write).
    #[tokio::test]
    async fn dropped_journals_release_their_files() {
        let _serial = group_commit::TEST_SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        // Open throughout, so no idle checkpoint closes them instead.
        let holder = sd.create("holder").unwrap();
        holder.append(0, paused(0)).await.unwrap();
        let open_files = || {
            std::fs::read_dir("/proc/self/fd")
                .unwrap()
                .flatten()
                .filter_map(|fd| std::fs::read_link(fd.path()).ok())
                .filter(|target| {
                    target.starts_with(dir.path().join("deployments"))
                        && !target.starts_with(sd.deployment_dir("holder"))
                })
                .count()
        };
        for i in 0..5 {
            let j = sd.create(&format!("r{i}")).unwrap();
            j.append(0, paused(0)).await.unwrap();
        }
        let t0 = std::time::Instant::now();
        while open_files() > 0 && t0.elapsed() < std::time::Duration::from_secs(5) {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert_eq!(open_files(), 0, "dropped journals' files are closed");
        checkpoint().unwrap();
        for i in 0..5 {
            assert_eq!(sd.read(&format!("r{i}")).unwrap().len(), 1);
        }
    }

    /// With more journals open than are kept live, lines reach the files at the checkpoint;
    /// readers see them before it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_open_journals_are_written_at_the_checkpoint() {
        let _serial = group_commit::TEST_SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        let journals: Vec<Journal> = (0..100)
            .map(|i| sd.create(&format!("m{i}")).unwrap())
            .collect();
        for j in &journals {
            j.append(0, paused(0)).await.unwrap();
            j.append(0, paused(1)).await.unwrap();
        }
        let behind = (0..100)
            .filter(|i| {
                let path = sd.deployment_dir(&format!("m{i}")).join("journal.jsonl");
                std::fs::read(path).unwrap().is_empty()
            })
            .count();
        assert!(behind > 0, "some journals wait for the checkpoint");
        for i in 0..100 {
            assert_eq!(sd.read(&format!("m{i}")).unwrap().len(), 2);
        }
        checkpoint().unwrap();
        for i in 0..100 {
            let path = sd.deployment_dir(&format!("m{i}")).join("journal.jsonl");
            assert_eq!(
                parse_journal(&std::fs::read(path).unwrap())
                    .unwrap()
                    .0
                    .len(),
                2
            );
        }
        assert!(host_log::log_files(dir.path()).is_empty());
        drop(journals);
    }

    #[test]
    fn control_records_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path());
        assert!(sd.send_control("nope", ControlAction::Abort).is_err());
        drop(sd.create("d3").unwrap());
        sd.send_control("d3", ControlAction::Promote).unwrap();
        sd.send_control("d3", ControlAction::Abort).unwrap();
        let c = sd.read_control("d3");
        assert_eq!(c.len(), 2);
        assert_eq!(c[1].action, ControlAction::Abort);
        assert_eq!(sd.list().unwrap(), vec!["d3".to_string()]);
    }
}
