//! The host log: one append-only file per `dax` process and state directory, holding every
//! journal record of that process's deployments in the order they were written.
//!
//! Why: a journal per deployment is what operators read, but making thousands of them durable
//! every second costs a random write per file on every flush (BENCHMARKS.md, "What would hold
//! on this disk"). One sequential log costs one write per flush, whatever the number of
//! deployments. So the log is the durable record (group commit flushes it, and nothing else,
//! before the engine acts), and the journals are its per-deployment views: written from the
//! log as records come while a process runs few deployments, and at *checkpoints* otherwise.
//! A checkpoint writes every record the journals lack, makes them durable (`syncfs`) and
//! deletes the log.
//!
//! Layout: `STATE_DIR/log/PID-NANOS.jsonl`, lines `ID<TAB>JOURNAL-LINE`. The writing process
//! holds an exclusive `flock` on its log; a log nobody holds is an orphan (its process died)
//! and the next checkpoint of any process on that state directory adopts it: writes what its
//! journals lack, syncs, deletes it. Readers (`dax status`, `dax resume`...) merge every log's
//! records with the journal file's (`StateDir::read`), so nothing depends on a checkpoint
//! having run. A crash can tear only the last line of a log, which readers ignore.

use super::{parse_journal, Record};
use anyhow::{bail, Context};
use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::path::{Path, PathBuf};

/// `STATE_DIR/log`.
pub(super) fn log_dir(root: &Path) -> PathBuf {
    root.join("log")
}

/// Every log file of a state directory (none if the folder does not exist).
pub(super) fn log_files(root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(log_dir(root)) else {
        return Vec::new();
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "jsonl"))
        .collect();
    files.sort();
    files
}

/// Calls `each(id, journal_line_without_newline)` for every complete line of a log; a final
/// line without a newline is a torn write (or one being written) and is skipped. A missing
/// file (deleted by a checkpoint meanwhile) has no lines.
fn for_each_line(
    path: &Path,
    mut each: impl FnMut(&str, &[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let mut reader = io::BufReader::with_capacity(1 << 20, file);
    let mut line = Vec::new();
    let mut line_no = 0;
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 || line.last() != Some(&b'\n') {
            return Ok(());
        }
        line_no += 1;
        let body = &line[..line.len() - 1];
        let Some(tab) = body.iter().position(|&b| b == b'\t') else {
            bail!(
                "{} line {line_no} is corrupt (no deployment id before a tab)",
                path.display()
            );
        };
        let id = std::str::from_utf8(&body[..tab]).with_context(|| {
            format!(
                "{} line {line_no} is corrupt (id not UTF-8)",
                path.display()
            )
        })?;
        each(id, &body[tab + 1..]).with_context(|| format!("{} line {line_no}", path.display()))?;
    }
}

/// A record from a log, with its line as written (without the newline).
pub(super) type Logged = (Record, Vec<u8>);

/// Deployment `id`'s records in every log of `root`, by `seq`, each once, with its line.
pub(super) fn logged_records(root: &Path, id: &str) -> anyhow::Result<Vec<Logged>> {
    Ok(logged(root, Some(id))?.remove(id).unwrap_or_default())
}

/// The records in every log of `root` (of deployment `only`, or of all), by deployment, then
/// by `seq`, each once, with its line.
pub(super) fn logged(
    root: &Path,
    only: Option<&str>,
) -> anyhow::Result<HashMap<String, Vec<Logged>>> {
    let mut found: HashMap<String, Vec<Logged>> = HashMap::new();
    for path in log_files(root) {
        for_each_line(&path, |id, line| {
            if only.is_none_or(|only| only == id) {
                let record: Record = serde_json::from_slice(line)
                    .map_err(|e| anyhow::anyhow!("is corrupt ({e})"))?;
                super::check_seq(&record).context("is corrupt")?;
                found
                    .entry(id.to_string())
                    .or_default()
                    .push((record, line.to_vec()));
            }
            Ok(())
        })?;
    }
    for records in found.values_mut() {
        records.sort_by_key(|(r, _)| r.seq);
        records.dedup_by_key(|(r, _)| r.seq);
    }
    Ok(found)
}

/// The deployment ids that appear in any log of `root`.
pub(super) fn logged_ids(root: &Path) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    for path in log_files(root) {
        let _ = for_each_line(&path, |id, _| {
            if !ids.contains(id) {
                ids.insert(id.to_string());
            }
            Ok(())
        });
    }
    ids
}

/// The `seq` of a journal line. Records serialize `seq` first, so this usually reads the
/// number after `{"seq":` without parsing the rest; a redacted record went through a JSON
/// value, whose keys are sorted, and is parsed.
fn seq_of(line: &[u8]) -> Option<u64> {
    if let Some(rest) = line.strip_prefix(b"{\"seq\":") {
        let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if let Some(seq) = std::str::from_utf8(&rest[..digits])
            .ok()
            .and_then(|d| d.parse().ok())
        {
            return Some(seq);
        }
    }
    #[derive(serde::Deserialize)]
    struct Seq {
        seq: u64,
    }
    serde_json::from_slice::<Seq>(line).ok().map(|s| s.seq)
}

/// How far ahead a log reserves its disk blocks, at most (it starts at 1 MiB and doubles).
const RESERVE: u64 = 64 << 20;

/// This process's log of one state directory, as the flush thread writes it.
pub(super) struct HostLog {
    root: PathBuf,
    /// Open while there is a log; the exclusive `flock` on it says its process is alive.
    file: Option<(File, PathBuf)>,
    /// Bytes in the log (what a size checkpoint looks at).
    pub len: u64,
    /// Bytes reserved on disk ahead of the writes (see `RESERVE`).
    reserved: u64,
    /// The log's directory entry is not on disk yet: the first flush syncs the folder too.
    new_entry: bool,
    /// The journals of the deployments in this log.
    pub tails: Tails,
}

impl HostLog {
    pub fn new(root: &Path) -> HostLog {
        HostLog {
            root: root.to_path_buf(),
            file: None,
            len: 0,
            reserved: 0,
            new_entry: false,
            tails: Tails::new(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn is_empty(&self) -> bool {
        self.file.is_none()
    }

    /// Append `id<TAB>line` for each queued line (one `write`).
    pub fn append(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.file.is_none() {
            let dir = log_dir(&self.root);
            std::fs::create_dir_all(&dir)?;
            let nanos = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or_default();
            let path = dir.join(format!("{}-{nanos}.jsonl", std::process::id()));
            // Locked before it has the name readers and adopters look for, so no checkpoint
            // of another process can take it for an orphan.
            let creating = path.with_extension("creating");
            let file = std::fs::OpenOptions::new()
                .create_new(true)
                .append(true)
                .open(&creating)?;
            file.lock()?;
            std::fs::rename(&creating, &path)?;
            self.file = Some((file, path));
            self.new_entry = true;
            self.len = 0;
            self.reserved = 0;
        }
        let (file, _) = self.file.as_mut().expect("opened above");
        if self.len + bytes.len() as u64 > self.reserved {
            // Blocks reserved ahead, so a flush does not also allocate them (best effort: a
            // filesystem without `fallocate` allocates as it goes).
            let flags = nix::fcntl::FallocateFlags::FALLOC_FL_KEEP_SIZE;
            let step = self.reserved.clamp(1 << 20, RESERVE);
            let _ = nix::fcntl::fallocate(&*file, flags, self.reserved as i64, step as i64);
            self.reserved += step;
        }
        if let Err(e) = file.write_all(bytes) {
            // A partial write (disk full) is cut off, so the next round's lines do not run
            // into it and corrupt the middle of the log.
            let _ = file.set_len(self.len);
            return Err(e);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Make everything appended so far durable.
    pub fn sync(&mut self) -> io::Result<()> {
        let Some((file, _)) = &self.file else {
            return Ok(());
        };
        file.sync_data()?;
        if std::mem::take(&mut self.new_entry) {
            File::open(log_dir(&self.root))?.sync_all()?;
        }
        Ok(())
    }

    /// The log's path, if it exists.
    pub fn path(&self) -> Option<&Path> {
        self.file.as_ref().map(|(_, p)| p.as_path())
    }

    /// Write what the journals lack, make them durable and delete the log. Journals still
    /// open go on from where they are: the next line for each opens its file again.
    pub fn checkpoint(&mut self) -> anyhow::Result<()> {
        let written = self.write_journals();
        if written.is_err() && !self.root.exists() {
            // The state directory was deleted (tests, benchmarks): nothing left to keep.
            self.file = None;
            self.tails.clear();
            self.len = 0;
            return Ok(());
        }
        written
    }

    fn write_journals(&mut self) -> anyhow::Result<()> {
        if let Some(path) = self.path().map(Path::to_path_buf) {
            // Every deployment in the log got its journal opened when its first line came.
            replay(&path, &mut self.tails, &mut |id| {
                bail!("no journal was opened for `{id}`")
            })?;
            make_durable(&self.root, &mut self.tails)?;
            std::fs::remove_file(&path)?;
            self.file = None;
            self.len = 0;
        }
        self.tails.clear();
        adopt_orphans(&self.root, None)?;
        Ok(())
    }
}

/// One journal file as the log's lines are written to it: the file and the first `seq` it
/// lacks.
pub(super) struct JournalTail {
    path: PathBuf,
    /// Open while the deployment's journal is; closed (`close`) when it is not, so a
    /// long-running process does not keep a descriptor per deployment it ever ran.
    file: Option<File>,
    pub next_seq: u64,
}

impl JournalTail {
    pub fn new(path: PathBuf, file: File, next_seq: u64) -> JournalTail {
        JournalTail {
            path,
            file: Some(file),
            next_seq,
        }
    }

    /// The journal file, opened again (to append) if it was closed.
    pub fn file(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            let file = std::fs::OpenOptions::new().append(true).open(&self.path)?;
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("opened above"))
    }

    pub fn close(&mut self) {
        self.file = None;
    }
}

/// The journals a log's lines go to, by deployment id.
pub(super) type Tails = HashMap<String, JournalTail>;

/// Write every line of the log at `path` that its journal lacks (`seq ≥ next_seq`), in
/// order. A journal not in `tails` is opened with `open`; one that cannot be is skipped and
/// named in the error, after the others were written.
pub(super) fn replay(
    path: &Path,
    tails: &mut Tails,
    open: &mut dyn FnMut(&str) -> anyhow::Result<JournalTail>,
) -> anyhow::Result<()> {
    let mut failed: Vec<String> = Vec::new();
    for_each_line(path, |id, line| {
        let Some(seq) = seq_of(line) else {
            bail!("is corrupt (a journal line starts with its seq)");
        };
        if !tails.contains_key(id) {
            match open(id) {
                Ok(tail) => {
                    tails.insert(id.to_string(), tail);
                }
                Err(e) => {
                    if failed.len() < 5 && !failed.iter().any(|f| f.starts_with(id)) {
                        failed.push(format!("{id}: {e:#}"));
                    }
                    return Ok(());
                }
            }
        }
        let journal = tails.get_mut(id).expect("inserted above");
        if seq >= journal.next_seq {
            let mut bytes = Vec::with_capacity(line.len() + 1);
            bytes.extend_from_slice(line);
            bytes.push(b'\n');
            journal
                .file()
                .and_then(|f| f.write_all(&bytes))
                .with_context(|| format!("writing the journal of `{id}`"))?;
            journal.next_seq = seq + 1;
        }
        Ok(())
    })?;
    if !failed.is_empty() {
        bail!("journals not written: {}", failed.join("; "));
    }
    Ok(())
}

/// Up to this many journals, a checkpoint flushes each one (and its folder) rather than
/// whole filesystems, which would also wait for every other program's writes.
const FLUSH_EACH_UP_TO: usize = 64;

/// Make the journals of `tails` (in state directory `root`) durable, names included.
pub(super) fn make_durable(root: &Path, tails: &mut Tails) -> io::Result<()> {
    if tails.len() <= FLUSH_EACH_UP_TO {
        let state = super::StateDir::new(root);
        for (id, tail) in tails.iter_mut() {
            tail.file()?.sync_data()?;
            File::open(state.deployment_dir(id))?.sync_all()?;
        }
        if !tails.is_empty() {
            File::open(root.join("deployments"))?.sync_all()?;
        }
        return Ok(());
    }
    // Journals of one state directory share a filesystem, but a deployment folder may be a
    // mount of its own: flush each distinct filesystem once.
    let mut devices = Vec::new();
    for tail in tails.values() {
        let folder = File::open(tail.path.parent().unwrap_or(root))?;
        let device = std::os::unix::fs::MetadataExt::dev(&folder.metadata()?);
        if !devices.contains(&device) {
            devices.push(device);
            nix::unistd::syncfs(&folder).map_err(io::Error::from)?;
        }
    }
    Ok(())
}

/// Open deployment `id`'s journal to add records from a log: created if missing, locked
/// (`dax resume` of the same deployment takes the same lock), a torn last line cut off.
/// Returns it with the records it holds.
pub(super) fn open_tail(root: &Path, id: &str) -> anyhow::Result<(JournalTail, Vec<Record>)> {
    let state = super::StateDir::new(root);
    let dir = state.deployment_dir(id);
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let path = state.journal_path(id);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .read(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("cannot open {}", path.display()))?;
    file.lock()?;
    let bytes = std::fs::read(&path)?;
    let (records, good_len) =
        parse_journal(&bytes).with_context(|| format!("journal {}", path.display()))?;
    if good_len != bytes.len() as u64 {
        file.set_len(good_len)?;
    }
    let next_seq = records.last().map(|r| r.seq + 1).unwrap_or(0);
    Ok((JournalTail::new(path, file, next_seq), records))
}

/// Adopt the logs of `root` whose process is gone: write what their journals lack, sync,
/// delete them. `own` is this process's log, never adopted. Returns how many were adopted.
pub(super) fn adopt_orphans(root: &Path, own: Option<&Path>) -> anyhow::Result<usize> {
    let mut adopted = 0;
    for path in log_files(root) {
        if Some(path.as_path()) == own {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        // Held by a running process: not an orphan.
        if file.try_lock().is_err() {
            continue;
        }
        let mut tails = Tails::new();
        replay(&path, &mut tails, &mut |id| Ok(open_tail(root, id)?.0))
            .with_context(|| format!("adopting {}", path.display()))?;
        make_durable(root, &mut tails)?;
        std::fs::remove_file(&path)?;
        adopted += 1;
    }
    Ok(adopted)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seq_is_read_from_the_line_prefix() {
        assert_eq!(seq_of(b"{\"seq\":42,\"ts\":1}"), Some(42));
        assert_eq!(seq_of(b"{\"a\":\"x\",\"seq\":7}"), Some(7));
        assert_eq!(seq_of(b"{\"ts\":1}"), None);
    }
}
