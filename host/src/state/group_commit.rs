//! Group commit: the records of many concurrent deployments become durable together.
//!
//! An append hands its line to the journal thread and waits until the line is on disk before
//! the engine acts on it. The thread works in *rounds*: it takes every append waiting at that
//! moment, writes them to the host log (`host_log`, one `write` per round), makes the round
//! durable with one `fdatasync` of that one file, and wakes them all. File I/O thus never runs
//! on the async runtime's threads, and the disk sees one sequential write per round whether
//! the round holds one deployment's record or the records of 10,000 deployments.
//!
//! Each line also goes to its deployment's journal file: as it comes while the process has at
//! most `LIVE_JOURNALS` journals open (so `tail -f journal.jsonl` shows it), at the next
//! *checkpoint* otherwise, because keeping thousands of files current costs the disk a random
//! write per file (BENCHMARKS.md). A checkpoint runs when the log reaches `CHECKPOINT_BYTES`,
//! when no journal has been open for `IDLE`, and when `dax` exits (`checkpoint`). Readers
//! never wait for one: they merge the logs with the journal files.

use super::host_log::{HostLog, JournalTail};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Journals written as their records come while at most this many are open.
const LIVE_JOURNALS: usize = 64;
/// A log this large is checkpointed even while deployments run.
const CHECKPOINT_BYTES: u64 = 1 << 30;
/// A log with no journal open for this long is checkpointed.
const IDLE: Duration = Duration::from_secs(1);

/// Journals open in this process.
static OPEN_JOURNALS: AtomicUsize = AtomicUsize::new(0);

/// Counts one open journal while it lives, and tells the journal thread when it closes.
pub(super) struct OpenJournal {
    root: Arc<Path>,
    id: Arc<str>,
}

impl OpenJournal {
    pub(super) fn new(root: Arc<Path>, id: Arc<str>) -> OpenJournal {
        OPEN_JOURNALS.fetch_add(1, Ordering::Relaxed);
        OpenJournal { root, id }
    }
}

impl Drop for OpenJournal {
    fn drop(&mut self) {
        OPEN_JOURNALS.fetch_sub(1, Ordering::Relaxed);
        if let Some(flusher) = FLUSHER.get() {
            let _ = flusher.send(Message::Closed {
                root: self.root.clone(),
                id: self.id.clone(),
            });
        }
    }
}

/// One append waiting for the log.
struct Append {
    /// The state directory and the deployment.
    root: Arc<Path>,
    id: Arc<str>,
    seq: u64,
    /// The record's line, newline included.
    line: Vec<u8>,
    /// Wait for the disk, or only for the write (see `Event::must_reach_disk`).
    flush: bool,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

enum Message {
    Append(Append),
    Checkpoint(mpsc::Sender<Result<(), String>>),
    /// A journal was dropped: its file can be closed (the checkpoint opens it again).
    Closed {
        root: Arc<Path>,
        id: Arc<str>,
    },
}

/// Queue record `seq`'s `line` for deployment `id` of state directory `root`. Lines queued
/// in one order are written in that order.
pub(super) fn submit(
    root: Arc<Path>,
    id: Arc<str>,
    seq: u64,
    flush: bool,
    line: Vec<u8>,
) -> Pending {
    let (done, finished) = tokio::sync::oneshot::channel();
    let sent = flusher().send(Message::Append(Append {
        root,
        id,
        seq,
        line,
        flush,
        done,
    }));
    Pending {
        finished: sent.ok().map(|_| finished),
    }
}

/// Write every journal from the logs of this process, make them durable and delete the logs
/// (see `host_log`). `dax` calls it on its way out; without it nothing is lost, readers merge
/// the logs, and the next checkpoint on the state directory adopts them.
pub fn checkpoint() -> anyhow::Result<()> {
    let Some(flusher) = FLUSHER.get() else {
        return Ok(());
    };
    let (reply, answer) = mpsc::channel();
    if flusher.send(Message::Checkpoint(reply)).is_err() {
        anyhow::bail!("the journal flush thread has stopped");
    }
    answer
        .recv()
        .map_err(|_| anyhow::anyhow!("the journal flush thread has stopped"))?
        .map_err(|e| anyhow::anyhow!("checkpointing the journals: {e}"))
}

/// A queued line.
pub(super) struct Pending {
    finished: Option<tokio::sync::oneshot::Receiver<Result<(), String>>>,
}

impl Pending {
    /// Until the line is written (and on disk, if it had to be).
    pub(super) async fn done(self) -> io::Result<()> {
        let Some(finished) = self.finished else {
            return Err(io::Error::other("the journal flush thread has stopped"));
        };
        match finished.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(io::Error::other(e)),
            Err(_) => Err(io::Error::other("the journal flush thread has stopped")),
        }
    }
}

static FLUSHER: OnceLock<mpsc::Sender<Message>> = OnceLock::new();

fn flusher() -> &'static mpsc::Sender<Message> {
    FLUSHER.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("dax-journal-flush".into())
            .spawn(move || Flusher::default().run(rx))
            .expect("cannot start the journal flush thread");
        tx
    })
}

/// Counters of the flush rounds so far in this process (benchmarks print them).
#[derive(Debug, Default, Clone, Copy)]
pub struct FlushStats {
    pub rounds: u64,
    pub appends: u64,
    pub busy_us: u64,
    pub longest_us: u64,
    pub checkpoints: u64,
    pub checkpoint_us: u64,
}

static STATS: std::sync::Mutex<FlushStats> = std::sync::Mutex::new(FlushStats {
    rounds: 0,
    appends: 0,
    busy_us: 0,
    longest_us: 0,
    checkpoints: 0,
    checkpoint_us: 0,
});

/// Rounds, appends covered and time spent flushing since the process started.
pub fn stats() -> FlushStats {
    *STATS.lock().unwrap_or_else(|e| e.into_inner())
}

/// The journal thread's state: this process's log of each state directory it wrote to.
#[derive(Default)]
struct Flusher {
    logs: Vec<HostLog>,
}

impl Flusher {
    fn run(mut self, rx: mpsc::Receiver<Message>) {
        loop {
            let mut round = Vec::new();
            let mut checkpoints = Vec::new();
            let mut closed = Vec::new();
            match rx.recv_timeout(IDLE) {
                Ok(Message::Append(a)) => round.push(a),
                Ok(Message::Checkpoint(reply)) => checkpoints.push(reply),
                Ok(Message::Closed { root, id }) => self.close(&root, &id),
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let idle = OPEN_JOURNALS.load(Ordering::Relaxed) == 0;
                    if idle && self.logs.iter().any(|l| !l.is_empty()) {
                        // Nobody waits for it; `checkpoint` logs a failure.
                        let _ = self.checkpoint();
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => return,
            }
            for message in rx.try_iter() {
                match message {
                    Message::Append(a) => round.push(a),
                    Message::Checkpoint(reply) => checkpoints.push(reply),
                    // After this round's lines: a journal closes after its last append.
                    Message::Closed { root, id } => closed.push((root, id)),
                }
            }
            if !round.is_empty() {
                self.round(round);
            }
            for (root, id) in closed {
                self.close(&root, &id);
            }
            if !checkpoints.is_empty() || self.logs.iter().any(|l| l.len >= CHECKPOINT_BYTES) {
                let result = self.checkpoint().map_err(|e| format!("{e:#}"));
                for reply in checkpoints {
                    let _ = reply.send(result.clone());
                }
            }
        }
    }

    /// Close the file of a journal that was dropped; its entry (where the file ends) stays
    /// until the checkpoint.
    fn close(&mut self, root: &Path, id: &str) {
        if let Some(log) = self.logs.iter_mut().find(|l| l.root() == root) {
            if let Some(tail) = log.tails.get_mut(id) {
                tail.close();
            }
        }
    }

    /// One round: log every append, flush once if any must reach the disk, wake them all.
    fn round(&mut self, round: Vec<Append>) {
        let started = std::time::Instant::now();
        let live = OPEN_JOURNALS.load(Ordering::Relaxed) <= LIVE_JOURNALS;
        let mut results: Vec<Result<(), String>> = vec![Ok(()); round.len()];
        let mut durable = 0;
        // Almost always one state directory; tests and embedders may use several.
        let mut roots: Vec<&Arc<Path>> = Vec::new();
        for a in &round {
            if !roots.iter().any(|r| **r == a.root) {
                roots.push(&a.root);
            }
        }
        for root in roots {
            let at = match self.logs.iter().position(|l| l.root() == &**root) {
                Some(at) => at,
                None => {
                    self.logs.push(HostLog::new(root));
                    self.logs.len() - 1
                }
            };
            let log = &mut self.logs[at];
            let mut bytes = Vec::new();
            let mut flush = false;
            let mine: Vec<usize> = (0..round.len())
                .filter(|&i| *round[i].root == **root)
                .collect();
            for &i in &mine {
                let a = &round[i];
                // The journal is opened before its first line is logged: a journal that
                // cannot be opened fails the append rather than leaving a gap in the file.
                if !log.tails.contains_key(&*a.id) {
                    match open_own_journal(root, &a.id, a.seq) {
                        Ok(tail) => {
                            log.tails.insert(a.id.to_string(), tail);
                        }
                        Err(e) => {
                            results[i] = Err(format!("opening the journal: {e}"));
                            continue;
                        }
                    }
                }
                bytes.extend_from_slice(a.id.as_bytes());
                bytes.push(b'\t');
                bytes.extend_from_slice(&a.line);
                flush |= a.flush;
            }
            let logged = log
                .append(&bytes)
                .and_then(|()| if flush { log.sync() } else { Ok(()) })
                .map_err(|e| format!("writing the host log: {e}"));
            for &i in &mine {
                if results[i].is_ok() {
                    results[i] = logged.clone();
                }
                durable += usize::from(round[i].flush);
            }
            if logged.is_err() {
                continue;
            }
            if live {
                // The log holds the line; the journal file is a view, so a failed write here
                // is repaired by the next checkpoint and fails nothing now.
                for &i in &mine {
                    let a = &round[i];
                    if let Some(tail) = log.tails.get_mut(&*a.id) {
                        if tail.next_seq == a.seq
                            && tail.file().and_then(|f| f.write_all(&a.line)).is_ok()
                        {
                            tail.next_seq = a.seq + 1;
                        }
                    }
                }
            }
        }
        if durable > 0 {
            let took = started.elapsed().as_micros() as u64;
            let mut s = STATS.lock().unwrap_or_else(|e| e.into_inner());
            s.rounds += 1;
            s.appends += durable as u64;
            s.busy_us += took;
            s.longest_us = s.longest_us.max(took);
        }
        for (a, result) in round.into_iter().zip(results) {
            let _ = a.done.send(result);
        }
    }

    fn checkpoint(&mut self) -> anyhow::Result<()> {
        let started = std::time::Instant::now();
        let mut first_error = None;
        for log in &mut self.logs {
            if let Err(e) = log.checkpoint() {
                tracing::warn!(
                    "checkpoint of {}: {e:#} (the log is kept; readers still see every record)",
                    log.root().display()
                );
                first_error.get_or_insert(e);
            }
        }
        // Forget state directories that were deleted (tests, benchmarks).
        self.logs.retain(|log| log.root().exists());
        let mut s = STATS.lock().unwrap_or_else(|e| e.into_inner());
        s.checkpoints += 1;
        s.checkpoint_us += started.elapsed().as_micros() as u64;
        first_error.map_or(Ok(()), Err)
    }
}

/// This process's own journal of deployment `id`, whose first line in the log is `seq`:
/// `StateDir::create` and `StateDir::open` left the file holding every record before it.
fn open_own_journal(root: &Path, id: &str, seq: u64) -> io::Result<JournalTail> {
    let path = super::StateDir::new(root).journal_path(id);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)?;
    Ok(JournalTail::new(path, file, seq))
}

/// Tests that count on when checkpoints run take turns.
#[cfg(test)]
pub(super) static TEST_SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiters_share_rounds_and_all_succeed() {
        let _serial = TEST_SERIAL.lock().await;
        let dir = tempfile::tempdir().unwrap();
        let root: Arc<Path> = Arc::from(dir.path());
        let mut tasks = Vec::new();
        for i in 0..200 {
            std::fs::create_dir_all(dir.path().join(format!("deployments/j{i}"))).unwrap();
            let root = root.clone();
            tasks.push(tokio::spawn(async move {
                let id: Arc<str> = Arc::from(format!("j{i}"));
                for n in 0..5 {
                    let line = format!("{{\"seq\":{n}}}\n").into_bytes();
                    submit(root.clone(), id.clone(), n, true, line)
                        .done()
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        checkpoint().unwrap();
        for i in 0..200 {
            let text =
                std::fs::read_to_string(dir.path().join(format!("deployments/j{i}/journal.jsonl")))
                    .unwrap();
            let seqs: String = (0..5).map(|n| format!("{{\"seq\":{n}}}\n")).collect();
            assert_eq!(text, seqs);
        }
        assert!(
            !dir.path().join("log").read_dir().unwrap().any(|_| true),
            "the checkpoint deleted the log"
        );
    }
}
