//! Granted directories (WASI preopens): the one file-system call the host narrows beyond
//! what cap-std enforces. cap-std refuses to *follow* a symlink out of a preopen and to
//! create one with an absolute target, but it creates `link -> ../../etc/passwd` happily;
//! any other program reading the granted directory would then follow it. So a plugin may
//! only create symlinks whose target is relative and has no `..`.

use crate::plugin::sandbox::PluginState;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use wasmtime::component::{Linker, Resource};
use wasmtime_wasi::filesystem::WasiFilesystemView;
use wasmtime_wasi::p2::bindings::filesystem::types::{self, Descriptor, ErrorCode, HostDescriptor};

/// The `wasi:filesystem` version `wasmtime_wasi::p2::add_to_linker_async` defines (older
/// 0.2 imports resolve to it).
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Replace `descriptor.symlink-at` with a version that refuses targets leaving the grant.
/// Call after `wasmtime_wasi::p2::add_to_linker_async`.
pub fn refuse_escaping_symlinks(linker: &mut Linker<PluginState>) -> anyhow::Result<()> {
    linker.allow_shadowing(true);
    linker.instance(FILESYSTEM_TYPES)?.func_wrap_async(
        "[method]descriptor.symlink-at",
        |mut store, (dir, target, link): (Resource<Descriptor>, String, String)| {
            Box::new(async move {
                let state = store.data_mut();
                if !symlink_target_allowed(&target) {
                    let reason = format!(
                        "plugin `{}` tried to create a symlink `{}` -> `{}`, which points outside its granted directory; symlinks must be relative and may not use `..`",
                        state.plugin,
                        crate::plugin::capabilities::log::escape(&link),
                        crate::plugin::capabilities::log::escape(&target)
                    );
                    state.deny(reason);
                    return Ok((Err(ErrorCode::NotPermitted),));
                }
                let mut fs = state.filesystem();
                match HostDescriptor::symlink_at(&mut fs, dir, target, link).await {
                    Ok(()) => Ok((Ok(()),)),
                    Err(e) => Ok((Err(types::Host::convert_error_code(&mut fs, e)?),)),
                }
            })
        },
    )?;
    linker.allow_shadowing(false);
    Ok(())
}

// ---------------------------------------------------------------- the grant

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Directory on the host (relative paths are resolved against the TOML file's folder).
    pub host: PathBuf,
    /// Where the plugin sees it, e.g. `/reports`. Defaults to the host path's last component
    /// under `/`.
    #[serde(default)]
    pub guest: Option<String>,
    /// Read-only unless set.
    #[serde(default)]
    pub writable: bool,
    /// Size quota of a writable directory in MiB (default [`DEFAULT_DIR_QUOTA_MIB`]): the
    /// whole tree, files the operator put there included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quota_mib: Option<u64>,
}

/// Quota of a writable directory grant without `quota_mib`.
pub const DEFAULT_DIR_QUOTA_MIB: u64 = 64;

impl DirGrant {
    /// The quota in bytes (only enforced when the grant is writable).
    pub fn quota_bytes(&self) -> u64 {
        self.quota_mib
            .unwrap_or(DEFAULT_DIR_QUOTA_MIB)
            .saturating_mul(1024 * 1024)
    }
}

// ---------------------------------------------------------------- disk quota

/// The writable directory grants of one plugin with their quotas. wasmtime-wasi has no
/// hook on writes, so the host measures each tree before and after every call and every
/// [`QUOTA_POLL`] during it, stopping the call once a tree is over its quota.
#[derive(Debug)]
pub struct DiskQuota {
    plugin: Arc<str>,
    dirs: Vec<QuotaDir>,
}

#[derive(Debug)]
pub(crate) struct QuotaDir {
    pub(crate) index: usize,
    pub(crate) host: std::path::PathBuf,
    pub(crate) guest: String,
    pub(crate) limit: u64,
}

/// How often a writable tree is measured during a call.
pub const QUOTA_POLL: Duration = Duration::from_millis(100);
/// What each file, directory or symlink costs on top of its length, so a plugin cannot
/// fill the disk's inodes with empty files.
const ENTRY_BYTES: u64 = 512;

impl DiskQuota {
    pub(crate) fn new(plugin: &str, dirs: Vec<QuotaDir>) -> Self {
        DiskQuota {
            plugin: plugin.into(),
            dirs,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty()
    }

    /// The size of each writable tree now (blocking file-system walk).
    pub fn usage(&self) -> Vec<u64> {
        self.dirs
            .iter()
            .map(|d| tree_size(&d.host, d.limit.saturating_mul(2)))
            .collect()
    }

    /// Why the plugin is over its quota: a tree over its limit that also grew since
    /// `before` (so a plugin can always clean up a directory that was already too full).
    pub fn exceeded(&self, before: &[u64], now: &[u64]) -> Option<String> {
        self.dirs
            .iter()
            .zip(before.iter().zip(now))
            .find(|(d, (b, n))| **n > d.limit && n > b)
            .map(|(d, (_, n))| {
                format!(
                    "wrote past the quota of its writable directory `{}` (grants.dirs[{}]): it holds {} KiB, the quota is {} KiB (raise `grants.dirs[{}].quota_mib` of [plugins.{}] if this is expected)",
                    d.guest,
                    d.index,
                    n / 1024,
                    d.limit / 1024,
                    d.index,
                    self.plugin
                )
            })
    }
}

/// Bytes under `root` (lengths plus [`ENTRY_BYTES`] per entry), not following symlinks;
/// stops counting past `stop_after`.
fn tree_size(root: &Path, stop_after: u64) -> u64 {
    let mut total = 0u64;
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            total = total.saturating_add(meta.len()).saturating_add(ENTRY_BYTES);
            if meta.is_dir() {
                pending.push(entry.path());
            }
            if total > stop_after {
                return total;
            }
        }
    }
    total
}

// ---------------------------------------------------------------- symlinks

/// Whether a symlink target stays inside the directory it is created in: relative and
/// without `..` (absolute targets are already refused by cap-std).
pub fn symlink_target_allowed(target: &str) -> bool {
    let path = Path::new(target);
    !path.has_root()
        && path.components().all(|c| {
            matches!(
                c,
                std::path::Component::Normal(_) | std::path::Component::CurDir
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_must_stay_inside() {
        assert!(symlink_target_allowed("file.txt"));
        assert!(symlink_target_allowed("./sub/file.txt"));
        assert!(!symlink_target_allowed("/etc/passwd"));
        assert!(!symlink_target_allowed("../../etc/passwd"));
        assert!(!symlink_target_allowed("sub/../../x"));
    }
}
