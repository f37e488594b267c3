//! On-disk cache of compiled components, trusted only when this machine's key vouches for it.
//!
//! A compiled `.cwasm` is native code that runs outside the sandbox, so whoever can write the
//! cache directory (a CI cache restored from another branch, another local user) must not be
//! able to make `dax` run their code as a pinned plugin. Hence:
//!
//! ```text
//! <cache_dir>/wasmtime-<dax version>-<engine compatibility hash>/<sha256 of the .wasm>.cwasm
//!     = artifact (Component::serialize) | tag (32 bytes) | "\nDAXCWASM2"
//! tag = BLAKE3-keyed(key; trailer, engine tag, wasm sha256, artifact length, artifact)
//! key = 32 random bytes in `$DAX_CACHE_KEY_FILE` or `<data dir>/dax/cache.key` (mode 0600),
//!       never inside the cache directory
//! ```
//!
//! An entry is deserialized only when its tag verifies; on any mismatch (wrong tag, other
//! key, truncated or foreign file, no key yet) the component is recompiled from the pinned
//! `.wasm` and the entry rewritten. A cache or key that other users could write or read
//! turns the disk cache off (with a warning): components are then compiled in memory.
//!
//! A cached load reads the entry once, in small pieces, through the keyed BLAKE3 hash, and
//! wasmtime then maps that same open file (`/proc/self/fd/N`, not the path, which may name
//! another file by then) as the component's code. The artifact comes first in the entry so it
//! starts page-aligned, as a mapped image must. `dax` never writes an entry in place (it
//! renames a new file over it), so a verified entry does not change under a running process.
//!
//! Verifying reads and hashes every byte (a third of a small plugin's cached load), so once an
//! entry has verified, a *stamp* remembers which file it was, the way ccache's inode cache and
//! git's index trust a file's stat data:
//!
//! ```text
//! <digest>.cwasm.verified = BLAKE3-keyed(key; "DAXSTAMP1", engine tag, wasm sha256,
//!                                        device, inode, size, mtime, ctime of the entry)
//! ```
//!
//! A later load whose open entry has exactly that stat data skips the hash. Nothing short of
//! root can give a changed or different file the same inode *and* ctime (every write, rename
//! onto it or `touch` sets ctime to now), a restored or copied entry is a new inode, and the
//! stamp itself needs the key. Since file timestamps come from a coarse clock, an entry is
//! stamped only once its ctime is [`STAMP_AFTER`] old, so a write in the same clock tick as the
//! verification cannot keep the old ctime.
//!
//! The same argument lets a load skip reading and hashing a `.wasm` source file it hashed
//! before (11 MB for a JavaScript plugin), so the pin check of a later run costs a `stat`:
//!
//! ```text
//! sources/<device>-<inode> = sha256 hex of the file | BLAKE3-keyed(key; "DAXSOURCE1", engine tag,
//!                                              that sha256, device, inode, size, mtime, ctime)
//! ```
//!
//! Both kinds of stamp are written and trusted only on local file systems, whose ctime is the
//! kernel's own: a network file system's server (or a FUSE daemon) reports whatever it likes.
//!
//! Nothing here deletes: entries of other engines and unused ones stay until `dax cache prune`
//! (`maintenance.rs`) removes them.

pub mod maintenance;

use std::hash::{Hash, Hasher};
use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::FileExt as _;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

/// Last bytes of every entry; a new layout gets a new trailer.
const TRAILER: &[u8] = b"\nDAXCWASM2";
const TAG_LEN: usize = blake3::OUT_LEN;
const KEY_LEN: usize = blake3::KEY_LEN;
/// What follows the artifact in an entry: its tag and the trailer.
const SUFFIX_LEN: usize = TAG_LEN + TRAILER.len();
/// How much of an entry is read and hashed at a time when verifying it.
const VERIFY_CHUNK: usize = 64 << 10;
/// First bytes hashed into every entry stamp; a new stamp layout gets a new label.
const STAMP_LABEL: &[u8] = b"DAXSTAMP1";
/// First bytes hashed into every source stamp.
const SOURCE_STAMP_LABEL: &[u8] = b"DAXSOURCE1";
/// Length of a sha256 in hex, as a source stamp starts.
const DIGEST_HEX_LEN: usize = 64;
/// How old an entry's ctime must be before a stamp may vouch for it (far above the
/// granularity of any local file system's clock).
pub const STAMP_AFTER: std::time::Duration = std::time::Duration::from_secs(2);
/// Environment variable naming the key file (default: `<data dir>/dax/cache.key`).
pub const KEY_FILE_ENV: &str = "DAX_CACHE_KEY_FILE";

#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
    /// The engine's compatibility settings, bound into every tag.
    engine_tag: String,
    /// `Err(why)` when the disk cache is off; components are then compiled in memory.
    key: Result<[u8; KEY_LEN], String>,
}

/// Where a component came from, for benchmarks and `dax plugin inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileSource {
    Compiled,
    Cache,
    /// Already compiled by this process.
    Memory,
}

/// The key file used unless told otherwise: `$DAX_CACHE_KEY_FILE`, else
/// `<data dir>/dax/cache.key` (`~/.local/share/dax/cache.key` on Linux).
pub fn default_key_file() -> Option<PathBuf> {
    std::env::var_os(KEY_FILE_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| dirs::data_local_dir().map(|d| d.join("dax").join("cache.key")))
}

impl CompileCache {
    /// The cache under `root` for `engine`, authenticated with the [default key
    /// file](default_key_file). Never fails: a cache that cannot be trusted is turned off
    /// with a warning.
    pub fn new(root: &Path, engine: &Engine) -> anyhow::Result<Self> {
        Ok(Self::with_key_file(
            root,
            default_key_file().as_deref(),
            engine,
        ))
    }

    /// Like [`new`](Self::new) with an explicit key file (`None`: no key, no disk cache).
    pub fn with_key_file(root: &Path, key_file: Option<&Path>, engine: &Engine) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let engine_tag = format!(
            "wasmtime-{}-{:016x}",
            env!("CARGO_PKG_VERSION"),
            hasher.finish()
        );
        let dir = root.join(&engine_tag);
        let key = prepare_dir(root, &dir).and_then(|()| match key_file {
            Some(path) => load_or_create_key(path),
            None => Err(format!(
                "no place for the cache key (no data directory); set {KEY_FILE_ENV} to a file path"
            )),
        });
        if let Err(why) = &key {
            tracing::warn!("compile cache off, plugins are compiled in memory: {why}");
        }
        CompileCache {
            dir,
            engine_tag,
            key,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The name of this engine's directory under the cache root:
    /// `wasmtime-<dax version>-<engine compatibility hash>`.
    pub fn engine_tag(&self) -> &str {
        &self.engine_tag
    }

    /// Why the disk cache is off, if it is.
    pub fn disabled_reason(&self) -> Option<&str> {
        self.key.as_ref().err().map(String::as_str)
    }

    /// The entry file of the component whose `.wasm` has sha256 `digest`.
    pub fn entry_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm"))
    }

    /// The stamp that vouches for the entry of `digest` by its stat data.
    pub fn stamp_path(&self, digest: &str) -> PathBuf {
        self.dir.join(format!("{digest}.cwasm.verified"))
    }

    /// Load the compiled form of `wasm` (whose sha256 is `digest`) or compile and store it.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        wasm: &[u8],
    ) -> anyhow::Result<(Component, CompileSource)> {
        if let Some(component) = self.get(engine, digest) {
            return Ok((component, CompileSource::Cache));
        }
        Ok((self.compile(engine, digest, wasm)?, CompileSource::Compiled))
    }

    /// The cached compiled form of the `.wasm` whose sha256 is `digest`, if an entry is
    /// there and this machine's key vouches for it (a forged one is warned about).
    pub fn get(&self, engine: &Engine, digest: &str) -> Option<Component> {
        let key = self.key.as_ref().ok()?;
        let entry = self.entry_path(digest);
        match self.read_verified(key, digest, &entry) {
            Ok(Some(verified)) => {
                // SAFETY: `verified` holds exactly the bytes whose keyed tag verified, so this
                // cache wrote them with `Component::serialize` of an engine with these
                // compatibility settings (the tag binds them) for this very `.wasm` digest.
                // The key never lives in the cache directory, so no one who can only write
                // the cache can produce a valid tag.
                #[allow(unsafe_code)]
                let loaded = unsafe { verified.load(engine) };
                match loaded {
                    Ok(component) => return Some(component),
                    Err(e) => tracing::warn!(
                        "recompiling: cache entry {} did not load: {e:#}",
                        entry.display()
                    ),
                }
            }
            Ok(None) => {}
            Err(Mismatch::Forged(why)) => tracing::warn!(
                "recompiling from the pinned .wasm: cache entry {} {why}",
                entry.display()
            ),
            Err(Mismatch::Unusable(why)) => {
                tracing::debug!("recompiling: cache entry {} {why}", entry.display())
            }
        }
        None
    }

    /// Compile `wasm` (whose sha256 is `digest`) and store it, tagged, for the next process.
    pub fn compile(&self, engine: &Engine, digest: &str, wasm: &[u8]) -> anyhow::Result<Component> {
        let component = Component::new(engine, wasm)?;
        let Ok(key) = &self.key else {
            return Ok(component);
        };
        let entry = self.entry_path(digest);
        match component.serialize() {
            Ok(artifact) => {
                if let Err(e) = self.write_entry(key, digest, &entry, &artifact) {
                    tracing::warn!(
                        "could not write compile cache entry {}: {e}",
                        entry.display()
                    );
                }
            }
            Err(e) => tracing::warn!("could not serialize a compiled component: {e:#}"),
        }
        Ok(component)
    }

    /// The tag that vouches for `artifact` as the compiled form of `digest` on this engine.
    fn tag(&self, key: &[u8; KEY_LEN], digest: &str, artifact: &[u8]) -> blake3::Hash {
        let mut hasher = self.tag_hasher(key, digest, artifact.len());
        hasher.update(artifact);
        hasher.finalize()
    }

    /// The tag's hasher up to the artifact bytes, which the caller feeds (at once, or as it
    /// reads them).
    fn tag_hasher(&self, key: &[u8; KEY_LEN], digest: &str, artifact_len: usize) -> blake3::Hasher {
        let mut hasher = self.keyed_hasher(key, TRAILER, digest);
        hasher.update(&(artifact_len as u64).to_le_bytes());
        hasher
    }

    /// A keyed hasher over `label` (what is being vouched for), this engine and `digest`,
    /// each length-prefixed: the common start of tags and stamps.
    fn keyed_hasher(&self, key: &[u8; KEY_LEN], label: &[u8], digest: &str) -> blake3::Hasher {
        let mut hasher = blake3::Hasher::new_keyed(key);
        for part in [label, self.engine_tag.as_bytes(), digest.as_bytes()] {
            hasher.update(&(part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
        hasher
    }

    /// The stamp that vouches for a file with this stat data: the cache entry of `digest`
    /// (`label` [`STAMP_LABEL`]) or a source file whose sha256 is `digest`
    /// ([`SOURCE_STAMP_LABEL`]).
    fn stamp(
        &self,
        key: &[u8; KEY_LEN],
        label: &[u8],
        digest: &str,
        meta: &std::fs::Metadata,
    ) -> blake3::Hash {
        let mut hasher = self.keyed_hasher(key, label, digest);
        for n in file_identity(meta) {
            hasher.update(&n.to_le_bytes());
        }
        hasher.finalize()
    }

    /// Whether a stamp vouches for the entry of `digest` that has this stat data.
    fn stamped(
        &self,
        key: &[u8; KEY_LEN],
        digest: &str,
        file: &std::fs::File,
        meta: &std::fs::Metadata,
    ) -> bool {
        // `blake3::Hash` compares in constant time.
        read_stamp::<TAG_LEN>(&self.stamp_path(digest)).is_some_and(|stamp| {
            on_local_file_system(file)
                && self.stamp(key, STAMP_LABEL, digest, meta) == blake3::Hash::from_bytes(stamp)
        })
    }

    /// Stamp the entry of `digest`, which just verified with stat data `before`, if it is
    /// still that file and its ctime is old enough (see the module docs).
    fn write_stamp(
        &self,
        key: &[u8; KEY_LEN],
        digest: &str,
        file: &std::fs::File,
        before: &std::fs::Metadata,
    ) {
        let Some(after) = settled(file, before) else {
            return;
        };
        let stamp = self.stamp(key, STAMP_LABEL, digest, &after);
        if let Err(e) = self.replace(digest, &self.stamp_path(digest), &[stamp.as_bytes()]) {
            tracing::debug!("could not stamp cache entry of {digest}: {e}");
        }
    }

    /// Where the stamp of a source file with this stat data lives (one per file, whatever
    /// the paths it is loaded by).
    pub fn source_stamp_path(&self, meta: &std::fs::Metadata) -> PathBuf {
        self.dir
            .join("sources")
            .join(format!("{:x}-{:x}", meta.dev(), meta.ino()))
    }

    /// The sha256 (hex) of the open `.wasm` source `file` (stat data `meta`), if a stamp
    /// vouches that this very, unchanged file hashed to it before: the file then need not be
    /// read at all when its compiled form is cached (see the module docs).
    pub fn stamped_source_digest(
        &self,
        file: &std::fs::File,
        meta: &std::fs::Metadata,
    ) -> Option<String> {
        let key = self.key.as_ref().ok()?;
        let stamp = read_stamp::<{ DIGEST_HEX_LEN + TAG_LEN }>(&self.source_stamp_path(meta))?;
        let (digest, tag) = stamp.split_at(DIGEST_HEX_LEN);
        let digest = std::str::from_utf8(digest).ok()?;
        let tag: [u8; TAG_LEN] = tag.try_into().expect("split at DIGEST_HEX_LEN");
        // `blake3::Hash` compares in constant time.
        (on_local_file_system(file)
            && self.stamp(key, SOURCE_STAMP_LABEL, digest, meta) == blake3::Hash::from_bytes(tag))
        .then(|| digest.to_string())
    }

    /// Remember that the open source `file`, whose stat data was `before` when it was read,
    /// hashed to `digest`, if it is still that file and its ctime is old enough.
    pub fn stamp_source(&self, file: &std::fs::File, before: &std::fs::Metadata, digest: &str) {
        let Ok(key) = &self.key else {
            return;
        };
        let Some(after) = settled(file, before) else {
            return;
        };
        let stamp = self.stamp(key, SOURCE_STAMP_LABEL, digest, &after);
        let path = self.source_stamp_path(&after);
        let written = path
            .parent()
            .map_or(Ok(()), |dir| {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
            })
            .and_then(|()| self.replace(digest, &path, &[digest.as_bytes(), stamp.as_bytes()]));
        if let Err(e) = written {
            tracing::debug!("could not stamp source {}: {e}", path.display());
        }
    }

    /// `entry`, open, if its tag verifies; `Ok(None)` when there is no entry.
    fn read_verified(
        &self,
        key: &[u8; KEY_LEN],
        digest: &str,
        entry: &Path,
    ) -> Result<Option<VerifiedEntry>, Mismatch> {
        let unreadable = |e: std::io::Error| Mismatch::Unusable(format!("cannot be read: {e}"));
        let file = match open_no_follow(entry) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) if e.raw_os_error() == Some(nix::libc::ELOOP) => {
                return Err(Mismatch::Forged("is a symbolic link".into()))
            }
            Err(e) => return Err(unreadable(e)),
        };
        let meta = file.metadata().map_err(unreadable)?;
        if !meta.file_type().is_file() {
            return Err(Mismatch::Forged("is not a regular file".into()));
        }
        let len = usize::try_from(meta.len())
            .map_err(|_| Mismatch::Forged("is larger than this machine can address".into()))?;
        if len <= SUFFIX_LEN {
            return Err(Mismatch::Forged("is truncated".into()));
        }
        // The very file that verified before and is unchanged since: no need to hash it again
        // (unless wasmtime cannot map it and needs its bytes read anyway).
        let mappable = proc_fd_available();
        if mappable && self.stamped(key, digest, &file, &meta) {
            return Ok(Some(VerifiedEntry {
                file,
                artifact: None,
            }));
        }
        let artifact_len = len - SUFFIX_LEN;
        let mut suffix = [0u8; SUFFIX_LEN];
        file.read_exact_at(&mut suffix, artifact_len as u64)
            .map_err(unreadable)?;
        let (tag, trailer) = suffix.split_at(TAG_LEN);
        if trailer != TRAILER {
            return Err(Mismatch::Unusable(
                "has no `DAXCWASM2` trailer (another dax version wrote it, or it is truncated)"
                    .into(),
            ));
        }
        let tag: [u8; TAG_LEN] = tag.try_into().expect("split at TAG_LEN");
        // The artifact is only hashed here (wasmtime maps the file itself), so it streams
        // through a small buffer that stays in cache; without `/proc` it is kept to load.
        let mut kept = (!mappable).then(|| Vec::with_capacity(artifact_len));
        let mut hasher = self.tag_hasher(key, digest, artifact_len);
        let mut buf = vec![0u8; VERIFY_CHUNK.min(artifact_len)];
        let mut at = 0;
        while at < artifact_len {
            let piece = &mut buf[..VERIFY_CHUNK.min(artifact_len - at)];
            file.read_exact_at(piece, at as u64).map_err(unreadable)?;
            hasher.update(piece);
            if let Some(kept) = &mut kept {
                kept.extend_from_slice(piece);
            }
            at += piece.len();
        }
        // `blake3::Hash` compares in constant time.
        if hasher.finalize() != blake3::Hash::from_bytes(tag) {
            return Err(Mismatch::Forged(
                "is not authenticated by this machine's cache key (the key changed, or the entry was replaced)"
                    .into(),
            ));
        }
        if kept.is_none() {
            self.write_stamp(key, digest, &file, &meta);
        }
        Ok(Some(VerifiedEntry {
            file,
            artifact: kept,
        }))
    }

    /// Write `parts` to `path` (a file of `digest`'s) atomically: a private temporary file
    /// renamed over it, so a concurrent reader sees the old file or the new one, never half
    /// of one.
    fn replace(&self, digest: &str, path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
        let tmp = self
            .dir
            .join(format!("{digest}.{:016x}.tmp", rand::random::<u64>()));
        let written = write_private(&tmp, parts).and_then(|()| std::fs::rename(&tmp, path));
        if written.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        written
    }

    /// Write the entry of `digest`, tagged, in place of any older one.
    fn write_entry(
        &self,
        key: &[u8; KEY_LEN],
        digest: &str,
        entry: &Path,
        artifact: &[u8],
    ) -> std::io::Result<()> {
        let tag = self.tag(key, digest, artifact);
        let written = self.replace(digest, entry, &[artifact, tag.as_bytes(), TRAILER]);
        // The digest file an older dax kept next to each entry means nothing now, and a stamp
        // names the replaced file (it would never match again; this keeps the directory tidy).
        let _ = std::fs::remove_file(self.dir.join(format!("{digest}.cwasm.sha256")));
        let _ = std::fs::remove_file(self.stamp_path(digest));
        written
    }
}

/// A cache entry whose tag verified, still open.
struct VerifiedEntry {
    file: std::fs::File,
    /// The verified artifact bytes, kept only where wasmtime cannot map the open file.
    artifact: Option<Vec<u8>>,
}

impl VerifiedEntry {
    /// Deserialize the verified artifact: wasmtime maps this open file itself (through
    /// `/proc/self/fd`, so the very inode that verified, whatever the path names now); where
    /// `/proc` is missing, from the verified bytes.
    ///
    /// # Safety
    /// As [`Component::deserialize`]: the bytes must come from `Component::serialize` of a
    /// compatible engine, which the verified tag establishes.
    #[allow(unsafe_code)]
    unsafe fn load(self, engine: &Engine) -> wasmtime::Result<Component> {
        match &self.artifact {
            // SAFETY: see above; the caller's contract.
            Some(bytes) => unsafe { Component::deserialize(engine, bytes) },
            None => {
                let by_fd = PathBuf::from(format!("/proc/self/fd/{}", self.file.as_raw_fd()));
                // The mapping wasmtime makes covers the tag and trailer too; an ELF image
                // ignores bytes after its sections.
                // SAFETY: see above; the caller's contract.
                unsafe { Component::deserialize_file(engine, &by_fd) }
            }
        }
    }
}

/// What a stamp binds: which file (device, inode) and its size and times. Only root can give
/// a changed or different file the same values (every change sets ctime to "now").
fn file_identity(meta: &std::fs::Metadata) -> [u64; 7] {
    [
        meta.dev(),
        meta.ino(),
        meta.size(),
        meta.mtime() as u64,
        meta.mtime_nsec() as u64,
        meta.ctime() as u64,
        meta.ctime_nsec() as u64,
    ]
}

/// Open `path` for reading without following a link (this cache writes regular files only)
/// and without waiting on a FIFO planted there; the caller's fstat sees what was opened.
fn open_no_follow(path: &Path) -> std::io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK)
        .open(path)
}

/// The first `N` bytes of the stamp file at `path` (not following a link), if it has them.
fn read_stamp<const N: usize>(path: &Path) -> Option<[u8; N]> {
    let mut stamp = [0u8; N];
    open_no_follow(path)
        .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut stamp))
        .ok()?;
    Some(stamp)
}

/// The stat data of the open `file` if it is still what it was (`before`), its ctime is
/// [`STAMP_AFTER`] old, and it is on a local file system: the conditions for a stamp.
fn settled(file: &std::fs::File, before: &std::fs::Metadata) -> Option<std::fs::Metadata> {
    let after = file.metadata().ok()?;
    let unchanged = file_identity(&after) == file_identity(before);
    let changed_at = std::time::UNIX_EPOCH
        + std::time::Duration::new(
            after.ctime().max(0) as u64,
            after.ctime_nsec().clamp(0, 999_999_999) as u32,
        );
    let settled = std::time::SystemTime::now()
        .duration_since(changed_at)
        .is_ok_and(|age| age >= STAMP_AFTER);
    (unchanged && settled && on_local_file_system(file)).then_some(after)
}

/// Whether `file` lives on a file system whose inode numbers and ctimes the kernel itself
/// keeps (a network or FUSE file system reports what its server says).
fn on_local_file_system(file: &std::fs::File) -> bool {
    use nix::sys::statfs::{
        fstatfs, BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC,
        XFS_SUPER_MAGIC,
    };
    let Ok(fs) = fstatfs(file) else {
        return false;
    };
    // ext2/3/4 share one magic number.
    [
        EXT4_SUPER_MAGIC,
        XFS_SUPER_MAGIC,
        BTRFS_SUPER_MAGIC,
        TMPFS_MAGIC,
        OVERLAYFS_SUPER_MAGIC,
    ]
    .contains(&fs.filesystem_type())
}

/// Whether open files can be named as `/proc/self/fd/N` here (checked once per process).
fn proc_fd_available() -> bool {
    static AVAILABLE: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *AVAILABLE.get_or_init(|| Path::new("/proc/self/fd").is_dir())
}

/// Write `parts` to a new file at `path`, readable by this user only. `create_new`
/// refuses to follow anything (a planted link) already at that name.
fn write_private(path: &Path, parts: &[&[u8]]) -> std::io::Result<()> {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    // No fsync: after a crash a torn entry fails its tag and a torn key is replaced.
    for part in parts {
        file.write_all(part)?;
    }
    Ok(())
}

/// Why an entry was not used.
enum Mismatch {
    /// Someone else's bytes may be in there: worth a warning.
    Forged(String),
    /// Unreadable or from an older layout: recompiled quietly.
    Unusable(String),
}

/// Create the cache directories (private to the user when this creates them) and check
/// that no other user can write them.
fn prepare_dir(root: &Path, dir: &Path) -> Result<(), String> {
    let root_existed = root.exists();
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create the cache directory {}: {e}", dir.display()))?;
    if !root_existed {
        let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700));
    }
    for d in [root, dir] {
        check_private(d, "cache directory", 0o022)?;
    }
    Ok(())
}

/// Refuse `path` unless it is owned by this user and has none of the `forbidden` mode bits.
fn check_private(path: &Path, what: &str, forbidden: u32) -> Result<(), String> {
    let meta = std::fs::metadata(path)
        .map_err(|e| format!("cannot inspect the {what} {}: {e}", path.display()))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(format!(
            "the {what} {} is owned by uid {}, not by this user (uid {me}); use a directory of your own \
             (set DAX_CACHE_DIR / {KEY_FILE_ENV})",
            path.display(),
            meta.uid()
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & forbidden != 0 {
        let (access, risk, fix) = if forbidden == 0o022 {
            (
                "writable by group or others",
                "others could plant code in it",
                "go-w",
            )
        } else {
            (
                "accessible to group or others",
                "others could forge cache entries",
                "go-rwx",
            )
        };
        return Err(format!(
            "the {what} {} is {access} (mode {mode:04o}), so {risk}; run `chmod {fix} {}`",
            path.display(),
            path.display()
        ));
    }
    Ok(())
}

/// Read the 32-byte key at `path`, creating it (mode 0600) if it does not exist.
fn load_or_create_key(path: &Path) -> Result<[u8; KEY_LEN], String> {
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.exists() {
        std::fs::create_dir_all(parent).map_err(|e| {
            format!(
                "cannot create the directory of the cache key {}: {e}",
                path.display()
            )
        })?;
        let _ = std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o700));
    }
    // Whoever may replace the key file may choose the key. A sticky directory (`/tmp`)
    // protects files from other users, so only its group/other write bits without the
    // sticky bit matter.
    let parent_mode = std::fs::metadata(parent)
        .map_err(|e| format!("cannot inspect {}: {e}", parent.display()))?
        .mode();
    if parent_mode & 0o022 != 0 && parent_mode & 0o1000 == 0 {
        return Err(format!(
            "the directory of the cache key {} is writable by group or others (mode {:04o}); \
             run `chmod go-w {}` or set {KEY_FILE_ENV}",
            parent.display(),
            parent_mode & 0o7777,
            parent.display()
        ));
    }
    for _ in 0..3 {
        match std::fs::metadata(path).and_then(|meta| {
            if !meta.is_file() {
                return Err(std::io::Error::other("not a regular file"));
            }
            std::fs::read(path)
        }) {
            Ok(bytes) => {
                check_private(path, "cache key file", 0o077)?;
                if let Ok(key) = <[u8; KEY_LEN]>::try_from(bytes.as_slice()) {
                    return Ok(key);
                }
                // Damaged (e.g. a full disk): replace it; entries tagged with it recompile.
                tracing::warn!(
                    "cache key {} is damaged ({} bytes, not {KEY_LEN}); making a new one",
                    path.display(),
                    bytes.len()
                );
                write_new_key(path, parent, true)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                write_new_key(path, parent, false)?;
            }
            Err(e) => return Err(format!("cannot read the cache key {}: {e}", path.display())),
        }
    }
    Err(format!(
        "the cache key {} keeps changing under dax",
        path.display()
    ))
}

/// Write a fresh random key to `path` through a private temporary file. Without `replace`,
/// an existing key (another `dax` was faster) wins and is read by the caller's next round.
fn write_new_key(path: &Path, parent: &Path, replace: bool) -> Result<(), String> {
    let key: [u8; KEY_LEN] = rand::random();
    let tmp = parent.join(format!(".cache.key.{:016x}.tmp", rand::random::<u64>()));
    let fail = |e: std::io::Error| format!("cannot write the cache key {}: {e}", path.display());
    let result = write_private(&tmp, &[&key]).and_then(|()| {
        if replace {
            std::fs::rename(&tmp, path)
        } else {
            // `link` never replaces an existing file, unlike `rename`.
            match std::fs::hard_link(&tmp, path) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
                other => other,
            }
        }
    });
    let _ = std::fs::remove_file(&tmp);
    result.map_err(fail)
}
