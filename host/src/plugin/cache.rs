//! On-disk cache of compiled components.
//!
//! Key: the sha256 of the `.wasm` bytes and a hash of the engine's compatibility settings
//! (wasmtime version, target, compiler flags), so a changed plugin or a changed `dax` never
//! reuses a stale artifact. Only artifacts this cache wrote itself are ever deserialized:
//! the directory is private to the user (0700) and every entry carries the sha256 of its
//! contents, checked before loading. Precompiled artifacts from plugin vendors are never
//! accepted — plugins are distributed as `.wasm` and compiled here.

use anyhow::Context as _;
use sha2::{Digest, Sha256};
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use wasmtime::component::Component;
use wasmtime::Engine;

#[derive(Clone)]
pub struct CompileCache {
    dir: PathBuf,
}

/// Where a component came from, for benchmarks and `dax plugin inspect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompileSource {
    Compiled,
    Cache,
    /// Already compiled by this process.
    Memory,
}

impl CompileCache {
    pub fn new(root: &Path, engine: &Engine) -> anyhow::Result<Self> {
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        let dir = root.join(format!(
            "wasmtime-{}-{:016x}",
            env!("CARGO_PKG_VERSION"),
            hasher.finish()
        ));
        std::fs::create_dir_all(&dir)
            .with_context(|| format!("creating compile cache {}", dir.display()))?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700));
        }
        Ok(CompileCache { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Load the compiled form of `wasm` (whose sha256 is `digest`) or compile and store it.
    pub fn get_or_compile(
        &self,
        engine: &Engine,
        digest: &str,
        wasm: &[u8],
    ) -> anyhow::Result<(Component, CompileSource)> {
        let artifact = self.dir.join(format!("{digest}.cwasm"));
        let check = self.dir.join(format!("{digest}.cwasm.sha256"));
        if let (Ok(bytes), Ok(expected)) =
            (std::fs::read(&artifact), std::fs::read_to_string(&check))
        {
            if hex::encode(Sha256::digest(&bytes)) == expected.trim() {
                // SAFETY: the bytes were produced by `Component::serialize` of this same
                // engine configuration (the directory name pins it), written by this cache
                // into a user-private directory, and match the digest recorded next to them.
                #[allow(unsafe_code)]
                let loaded = unsafe { Component::deserialize(engine, &bytes) };
                match loaded {
                    Ok(component) => return Ok((component, CompileSource::Cache)),
                    Err(e) => tracing::warn!(
                        "ignoring unusable cache entry {}: {e:#}",
                        artifact.display()
                    ),
                }
            }
        }
        let component = Component::new(engine, wasm)?;
        if let Ok(bytes) = component.serialize() {
            // Write to a temp file and rename, so a concurrent reader never sees half a file.
            let tmp = self
                .dir
                .join(format!("{digest}.{}.tmp", std::process::id()));
            if std::fs::write(&tmp, &bytes).is_ok() && std::fs::rename(&tmp, &artifact).is_ok() {
                let _ = std::fs::write(&check, hex::encode(Sha256::digest(&bytes)));
            }
        }
        Ok((component, CompileSource::Compiled))
    }
}
