//! Group commit: the journals of many concurrent deployments become durable together.
//!
//! An append hands its line to the journal thread and waits until the line is on disk before
//! the engine acts on it. The thread works in *rounds*: it takes every append waiting at that
//! moment, writes each line to its journal (one `write` per line), makes them all durable with
//! one flush, and wakes them all. File I/O thus never runs on the async runtime's threads,
//! where a `write` that waits for the filesystem's own journal commit would hold up every
//! other deployment scheduled on that thread. With one deployment a round is the same
//! single `fdatasync` as before; with 10,000 deployments appending 60,000 records a second,
//! a round covers thousands of appends for the price of one flush instead of one each, which
//! no disk could keep up with.
//!
//! The flush is `fdatasync` when a round holds one journal that already existed, and
//! `syncfs(2)` (everything dirty on that filesystem, directory entries included) when it holds
//! several journals or a newly created one. `syncfs` also flushes other programs' dirty data
//! on the same filesystem, so a state directory on a busy disk makes rounds slower; put
//! `--state-dir` on its own filesystem if that matters.

use std::fs::File;
use std::io;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};

/// One append waiting for durability.
struct Waiter {
    file: Arc<File>,
    /// The record's line, newline included.
    line: Vec<u8>,
    /// The filesystem the journal is on (`st_dev`).
    device: u64,
    /// The journal (or its directory entry) is new: flush the whole filesystem.
    created: bool,
    /// Wait for the disk, or only for the write (see `Event::must_reach_disk`).
    flush: bool,
    done: tokio::sync::oneshot::Sender<Result<(), String>>,
}

/// Queue `line` for `file`. Lines queued in one order are written in that order.
pub(super) fn submit(
    file: Arc<File>,
    device: u64,
    created: bool,
    flush: bool,
    line: Vec<u8>,
) -> Pending {
    let (done, finished) = tokio::sync::oneshot::channel();
    let sent = flusher().send(Waiter {
        file,
        line,
        device,
        created,
        flush,
        done,
    });
    Pending {
        finished: sent.ok().map(|_| finished),
    }
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

fn flusher() -> &'static mpsc::Sender<Waiter> {
    static SENDER: OnceLock<mpsc::Sender<Waiter>> = OnceLock::new();
    SENDER.get_or_init(|| {
        let (tx, rx) = mpsc::channel();
        std::thread::Builder::new()
            .name("dax-journal-flush".into())
            .spawn(move || run_rounds(rx))
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
}

static STATS: std::sync::Mutex<FlushStats> = std::sync::Mutex::new(FlushStats {
    rounds: 0,
    appends: 0,
    busy_us: 0,
    longest_us: 0,
});

/// Rounds, appends covered and time spent flushing since the process started.
pub fn stats() -> FlushStats {
    *STATS.lock().unwrap_or_else(|e| e.into_inner())
}

fn run_rounds(rx: mpsc::Receiver<Waiter>) {
    while let Ok(first) = rx.recv() {
        let mut round = vec![first];
        round.extend(rx.try_iter());
        let started = std::time::Instant::now();
        // A line that cannot be written fails its own append; the flush covers the rest.
        let mut written: Vec<Result<(), String>> = round
            .iter()
            .map(|w| {
                use std::io::Write;
                (&*w.file)
                    .write_all(&w.line)
                    .map_err(|e| format!("writing the journal: {e}"))
            })
            .collect();
        // Appends that need no flush are done once written.
        let (lazy, durable): (Vec<_>, Vec<_>) = round
            .into_iter()
            .zip(written.drain(..))
            .partition(|(w, _)| !w.flush);
        for (w, written) in lazy {
            let _ = w.done.send(written);
        }
        let (round, written): (Vec<Waiter>, Vec<_>) = durable.into_iter().unzip();
        if round.is_empty() {
            continue;
        }
        let flushed = flush(&round).map_err(|e| format!("flushing the journal: {e}"));
        let took = started.elapsed().as_micros() as u64;
        {
            let mut s = STATS.lock().unwrap_or_else(|e| e.into_inner());
            s.rounds += 1;
            s.appends += round.len() as u64;
            s.busy_us += took;
            s.longest_us = s.longest_us.max(took);
        }
        for (w, written) in round.into_iter().zip(written) {
            let _ = w.done.send(written.and(flushed.clone()));
        }
    }
}

fn flush(round: &[Waiter]) -> io::Result<()> {
    let first = &round[0];
    let one_existing_file = round
        .iter()
        .all(|w| !w.created && Arc::ptr_eq(&w.file, &first.file));
    if one_existing_file {
        return first.file.sync_data();
    }
    // Journals of one state directory share a filesystem, but a deployment folder may be a
    // mount of its own: flush each distinct filesystem once.
    let mut devices = Vec::new();
    for w in round {
        if !devices.contains(&w.device) {
            devices.push(w.device);
            nix::unistd::syncfs(&*w.file).map_err(io::Error::from)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_waiters_share_rounds_and_all_succeed() {
        let dir = tempfile::tempdir().unwrap();
        let mut tasks = Vec::new();
        for i in 0..200 {
            let path = dir.path().join(format!("j{i}"));
            tasks.push(tokio::spawn(async move {
                let file = Arc::new(File::create(&path).unwrap());
                let device = std::os::unix::fs::MetadataExt::dev(&file.metadata().unwrap());
                for n in 0..5 {
                    let line = format!("{n}\n").into_bytes();
                    submit(file.clone(), device, n == 0, true, line)
                        .done()
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        for i in 0..200 {
            let text = std::fs::read_to_string(dir.path().join(format!("j{i}"))).unwrap();
            assert_eq!(text, "0\n1\n2\n3\n4\n");
        }
    }
}
