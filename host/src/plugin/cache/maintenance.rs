//! `dax cache show` and `dax cache prune`: what the compile cache holds, and removing what no
//! run of this `dax` will read again.
//!
//! Nothing else ever deletes from the cache, so without this it only grows: every upgrade of
//! `dax` (or change of engine settings) starts a new `wasmtime-*` directory and leaves the old
//! one behind, every plugin version ever loaded keeps its compiled entry (a JavaScript plugin's
//! is tens of MB), and every `.wasm` file ever loaded keeps a small source stamp.
//!
//! Only files named as the cache names them are removed (entries, their stamps, source stamps,
//! leftovers of interrupted writes), and only inside `wasmtime-*` directories of the cache
//! root: `DAX_CACHE_DIR` may point anywhere, and a file the cache did not write is reported,
//! never deleted. Symbolic links are not followed. Removing an entry another `dax` is loading
//! is safe: an open or mapped file lives on until closed, and a later load recompiles.

use serde::Serialize;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// A write in progress is never this old; an older temporary file is a leftover.
const STALE_TEMPORARY: Duration = Duration::from_secs(3600);

/// One file of the cache, as the cache names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `<sha256>.cwasm`: a compiled component.
    Entry,
    /// `<sha256>.cwasm.verified`: the stamp that vouches for an entry.
    EntryStamp,
    /// `sources/<device>-<inode>`: the remembered sha256 of a `.wasm` file.
    SourceStamp,
    /// `*.tmp`: a write not (yet) renamed into place.
    Temporary,
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What the cache would have named `name` in an engine directory (`in_sources`: in its
/// `sources/` folder); `None` for anything else.
fn classify(name: &str, in_sources: bool) -> Option<Kind> {
    if let Some(stem) = name.strip_suffix(".tmp") {
        let (digest, nonce) = stem.rsplit_once('.')?;
        return (is_hex(digest) && is_hex(nonce)).then_some(Kind::Temporary);
    }
    if in_sources {
        let (device, inode) = name.split_once('-')?;
        return (is_hex(device) && is_hex(inode)).then_some(Kind::SourceStamp);
    }
    let is_digest = |s: &str| s.len() == 64 && is_hex(s);
    if name.strip_suffix(".cwasm").is_some_and(is_digest) {
        Some(Kind::Entry)
    } else if name.strip_suffix(".cwasm.verified").is_some_and(is_digest) {
        Some(Kind::EntryStamp)
    } else {
        None
    }
}

/// The files of one engine directory (`<root>/wasmtime-*`).
#[derive(Debug, Serialize)]
pub struct EngineDir {
    /// The directory's name: `wasmtime-<dax version>-<engine compatibility hash>`.
    pub engine: String,
    /// Whether this `dax` reads it (the others belong to other versions or engine settings).
    pub current: bool,
    pub entries: u64,
    pub entry_bytes: u64,
    /// Entry stamps, source stamps and temporary files.
    pub other_cache_files: u64,
    /// Files the cache did not write (never removed).
    pub foreign_files: Vec<PathBuf>,
}

/// Every engine directory under a cache root.
#[derive(Debug, Serialize)]
pub struct Survey {
    pub root: PathBuf,
    pub engines: Vec<EngineDir>,
}

struct CacheFile {
    path: PathBuf,
    kind: Kind,
    bytes: u64,
    /// When it was last read or written, as far as the file system keeps access times.
    last_used: SystemTime,
}

/// The cache files of the engine directory `dir`, and the paths of everything else in it.
fn scan(dir: &Path) -> std::io::Result<(Vec<CacheFile>, Vec<PathBuf>)> {
    let mut files = Vec::new();
    let mut foreign = Vec::new();
    let mut folders = vec![(dir.to_path_buf(), false)];
    while let Some((folder, in_sources)) = folders.pop() {
        for item in std::fs::read_dir(&folder)? {
            let item = item?;
            let path = item.path();
            // `DirEntry::metadata` does not follow symbolic links.
            let meta = item.metadata()?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            if meta.is_dir() && !in_sources && name == "sources" {
                folders.push((path, true));
                continue;
            }
            match classify(&name, in_sources).filter(|_| meta.is_file()) {
                Some(kind) => files.push(CacheFile {
                    path,
                    kind,
                    bytes: meta.len(),
                    last_used: last_used(&meta),
                }),
                None => foreign.push(path),
            }
        }
    }
    Ok((files, foreign))
}

/// The later of the access and modification times: a load maps or reads the file (which sets
/// its access time, at most once a day under Linux's default `relatime`), a compile writes it.
/// On a `noatime` mount this is the time it was written.
fn last_used(meta: &std::fs::Metadata) -> SystemTime {
    let modified = meta.modified().unwrap_or(SystemTime::UNIX_EPOCH);
    meta.accessed().map_or(modified, |a| a.max(modified))
}

/// The engine directories under `root` (none if `root` does not exist).
fn engine_dirs(root: &Path) -> std::io::Result<Vec<(String, PathBuf)>> {
    let items = match std::fs::read_dir(root) {
        Ok(items) => items,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut dirs = Vec::new();
    for item in items {
        let item = item?;
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with("wasmtime-") && item.metadata()?.is_dir() {
            dirs.push((name, item.path()));
        }
    }
    dirs.sort();
    Ok(dirs)
}

/// What the cache under `root` holds; `current` is the engine directory this `dax` uses.
pub fn survey(root: &Path, current: &str) -> std::io::Result<Survey> {
    let mut engines = Vec::new();
    for (engine, dir) in engine_dirs(root)? {
        let (files, foreign_files) = scan(&dir)?;
        let entries = files.iter().filter(|f| f.kind == Kind::Entry);
        engines.push(EngineDir {
            current: engine == current,
            engine,
            entries: entries.clone().count() as u64,
            entry_bytes: entries.map(|f| f.bytes).sum(),
            other_cache_files: files.iter().filter(|f| f.kind != Kind::Entry).count() as u64,
            foreign_files,
        });
    }
    Ok(Survey {
        root: root.to_path_buf(),
        engines,
    })
}

/// Why a file is (or would be) removed.
#[derive(Debug, Default, Serialize)]
pub struct Removed {
    pub entries: u64,
    pub entry_bytes: u64,
    pub stamps: u64,
    pub temporary_files: u64,
}

impl Removed {
    fn add(&mut self, file: &CacheFile) {
        match file.kind {
            Kind::Entry => {
                self.entries += 1;
                self.entry_bytes += file.bytes;
            }
            Kind::EntryStamp | Kind::SourceStamp => self.stamps += 1,
            Kind::Temporary => self.temporary_files += 1,
        }
    }
}

/// What `prune` removed (or, dry, would remove) and kept.
#[derive(Debug, Serialize)]
pub struct Pruned {
    pub root: PathBuf,
    pub dry_run: bool,
    /// Everything in the engine directories of other `dax` versions or engine settings.
    pub other_engines: Removed,
    /// Entries (with their stamps) and source stamps of this engine not used within
    /// `unused_for`, and leftover temporary files.
    pub unused: Removed,
    pub unused_for_seconds: u64,
    pub kept_entries: u64,
    pub kept_entry_bytes: u64,
    /// Files the cache did not write, left in place.
    pub foreign_files: Vec<PathBuf>,
}

/// Remove from the cache under `root` everything this `dax` (engine directory `current`)
/// will not read again: other engines' directories whole, and in its own, what was not used
/// within `unused_for` of `now`. With `dry_run`, only report it.
pub fn prune(
    root: &Path,
    current: &str,
    unused_for: Duration,
    now: SystemTime,
    dry_run: bool,
) -> std::io::Result<Pruned> {
    let mut pruned = Pruned {
        root: root.to_path_buf(),
        dry_run,
        other_engines: Removed::default(),
        unused: Removed::default(),
        unused_for_seconds: unused_for.as_secs(),
        kept_entries: 0,
        kept_entry_bytes: 0,
        foreign_files: Vec::new(),
    };
    let unused_since = |f: &CacheFile, age: Duration| {
        now.duration_since(f.last_used)
            .is_ok_and(|idle| idle >= age)
    };
    for (engine, dir) in engine_dirs(root)? {
        let (files, foreign) = scan(&dir)?;
        pruned.foreign_files.extend(foreign);
        let other_engine = engine != current;
        // An entry's stamp goes with it; a stamp left without its entry vouches for nothing.
        let removed_entries: Vec<PathBuf> = files
            .iter()
            .filter(|f| f.kind == Kind::Entry && (other_engine || unused_since(f, unused_for)))
            .map(|f| f.path.clone())
            .collect();
        for file in &files {
            let remove = other_engine
                || match file.kind {
                    Kind::Entry | Kind::SourceStamp => unused_since(file, unused_for),
                    Kind::EntryStamp => {
                        let entry = file.path.with_extension("");
                        removed_entries.contains(&entry) || !entry.exists()
                    }
                    Kind::Temporary => unused_since(file, STALE_TEMPORARY),
                };
            if !remove {
                if file.kind == Kind::Entry {
                    pruned.kept_entries += 1;
                    pruned.kept_entry_bytes += file.bytes;
                }
                continue;
            }
            if !dry_run {
                match std::fs::remove_file(&file.path) {
                    Ok(()) => {}
                    // Removed meanwhile (another prune, or a rewrite): nothing to count.
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => {
                        return Err(std::io::Error::new(
                            e.kind(),
                            format!("cannot remove {}: {e}", file.path.display()),
                        ))
                    }
                }
            }
            if other_engine {
                pruned.other_engines.add(file);
            } else {
                pruned.unused.add(file);
            }
        }
        if other_engine && !dry_run {
            // Only once empty: a foreign file keeps its directory.
            let _ = std::fs::remove_dir(dir.join("sources"));
            let _ = std::fs::remove_dir(&dir);
        }
    }
    Ok(pruned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs::{File, FileTimes};

    const DIGEST_A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const DIGEST_B: &str = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb";
    const CURRENT: &str = "wasmtime-1.0.0-00000000000000aa";
    const OLD: &str = "wasmtime-0.9.0-00000000000000bb";
    const DAY: Duration = Duration::from_secs(86_400);

    /// Write `path` with `len` bytes, last used `age` ago.
    fn file(path: &Path, len: usize, age: Duration) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, vec![0u8; len]).unwrap();
        let at = SystemTime::now() - age;
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_times(FileTimes::new().set_accessed(at).set_modified(at))
            .unwrap();
    }

    #[test]
    fn names_the_cache_does_not_write_are_foreign() {
        assert_eq!(
            classify(&format!("{DIGEST_A}.cwasm"), false),
            Some(Kind::Entry)
        );
        assert_eq!(
            classify(&format!("{DIGEST_A}.cwasm.verified"), false),
            Some(Kind::EntryStamp)
        );
        assert_eq!(classify("803-1a2b", true), Some(Kind::SourceStamp));
        assert_eq!(
            classify(&format!("{DIGEST_A}.00ff00ff00ff00ff.tmp"), false),
            Some(Kind::Temporary)
        );
        for name in [
            "notes.txt",
            "abc.cwasm",
            "803-1a2b",
            ".cwasm",
            "x.tmp",
            "a-b",
        ] {
            assert_eq!(classify(name, false), None, "{name}");
        }
        assert_eq!(classify(&format!("{DIGEST_A}.cwasm"), true), None);
    }

    #[test]
    fn prune_removes_other_engines_and_what_was_not_used_and_nothing_else() {
        let root = tempfile::tempdir().unwrap();
        let root = root.path();
        let (cur, old) = (root.join(CURRENT), root.join(OLD));
        file(&cur.join(format!("{DIGEST_A}.cwasm")), 1000, Duration::ZERO);
        file(
            &cur.join(format!("{DIGEST_A}.cwasm.verified")),
            32,
            40 * DAY,
        );
        file(&cur.join(format!("{DIGEST_B}.cwasm")), 3000, 40 * DAY);
        file(
            &cur.join(format!("{DIGEST_B}.cwasm.verified")),
            32,
            40 * DAY,
        );
        file(&cur.join("sources/803-11"), 96, 40 * DAY);
        file(&cur.join("sources/803-12"), 96, DAY);
        file(
            &cur.join(format!("{DIGEST_B}.0123456789abcdef.tmp")),
            10,
            2 * DAY,
        );
        file(
            &cur.join(format!("{DIGEST_A}.0123456789abcdee.tmp")),
            10,
            Duration::ZERO,
        );
        file(&old.join(format!("{DIGEST_A}.cwasm")), 5000, Duration::ZERO);
        file(&old.join("sources/803-11"), 96, Duration::ZERO);
        // Not the cache's: left alone wherever they are.
        file(&root.join("README"), 5, 400 * DAY);
        file(&cur.join("notes.txt"), 5, 400 * DAY);
        file(
            &root.join("wasmtime-0.8.0-00000000000000cc/keep.me"),
            5,
            400 * DAY,
        );
        // A link named like an entry, to a file outside the cache: neither is touched.
        let outside = root.join("outside.cwasm");
        file(&outside, 7, 400 * DAY);
        std::os::unix::fs::symlink(&outside, old.join(format!("{DIGEST_B}.cwasm"))).unwrap();

        let dry = prune(root, CURRENT, 30 * DAY, SystemTime::now(), true).unwrap();
        assert_eq!(dry.other_engines.entries, 1);
        assert_eq!(dry.unused.entries, 1);
        assert!(
            cur.join(format!("{DIGEST_B}.cwasm")).exists(),
            "a dry run removes nothing"
        );

        let done = prune(root, CURRENT, 30 * DAY, SystemTime::now(), false).unwrap();
        assert_eq!(
            (
                done.other_engines.entries,
                done.other_engines.entry_bytes,
                done.other_engines.stamps
            ),
            (1, 5000, 1)
        );
        assert_eq!((done.unused.entries, done.unused.entry_bytes), (1, 3000));
        // B's stamp with its entry, and the unused source stamp; A's stamp stays with A.
        assert_eq!(done.unused.stamps, 2);
        assert_eq!(
            done.unused.temporary_files, 1,
            "only the stale temporary file"
        );
        assert_eq!((done.kept_entries, done.kept_entry_bytes), (1, 1000));
        let left = |p: &Path| p.exists() || p.symlink_metadata().is_ok();
        for kept in [
            cur.join(format!("{DIGEST_A}.cwasm")),
            cur.join(format!("{DIGEST_A}.cwasm.verified")),
            cur.join("sources/803-12"),
            cur.join(format!("{DIGEST_A}.0123456789abcdee.tmp")),
            root.join("README"),
            cur.join("notes.txt"),
            root.join("wasmtime-0.8.0-00000000000000cc/keep.me"),
            outside.clone(),
            old.join(format!("{DIGEST_B}.cwasm")),
        ] {
            assert!(left(&kept), "{} was removed", kept.display());
        }
        for gone in [
            cur.join(format!("{DIGEST_B}.cwasm")),
            cur.join(format!("{DIGEST_B}.cwasm.verified")),
            cur.join("sources/803-11"),
            old.join(format!("{DIGEST_A}.cwasm")),
            old.join("sources"),
        ] {
            assert!(!left(&gone), "{} was kept", gone.display());
        }
        // The old engine's directory stays only because of the foreign link in it.
        assert!(done
            .foreign_files
            .contains(&old.join(format!("{DIGEST_B}.cwasm"))));
        assert_eq!(survey(root, CURRENT).unwrap().engines.len(), 3);
    }

    #[test]
    fn a_missing_cache_is_empty() {
        let root = tempfile::tempdir().unwrap();
        let gone = root.path().join("never-created");
        assert!(survey(&gone, CURRENT).unwrap().engines.is_empty());
        let pruned = prune(&gone, CURRENT, DAY, SystemTime::now(), false).unwrap();
        assert_eq!(pruned.kept_entries + pruned.unused.entries, 0);
    }
}
