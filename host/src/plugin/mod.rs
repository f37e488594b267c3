//! Loading and running Wasm plugins: one wasmtime `Engine`, a compile cache on disk,
//! `InstancePre` reuse, and the deny-by-default sandbox each call runs in.
//!
//! ```text
//! PluginHost::load(name, spec)  ── resolve source ─ verify sha256 ─ compile (or cache hit)
//!        │                           ─ check contract version/role ─ link ─ InstancePre
//!        ▼
//! LoadedPlugin::{target, strategy, scanner, metric_provider}(config)  → Arc<dyn Trait>
//!        │   each returned object owns one sandboxed instance (its own Store)
//!        ▼
//! calls run with a CPU deadline (epochs), a memory limit and an output-size cap
//! ```

pub mod spec;

pub use spec::{DirGrant, Grants, HttpAuth, Limits, PluginSpec};

use crate::contract::{
    CallResult, ConfigProblem, MetricProvider, PluginInfo, PluginRole, Scanner, Strategy, Target,
};
use std::path::PathBuf;
use std::sync::Arc;

/// Host-wide settings for plugin execution.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Where compiled components are cached (default: `~/.cache/dax/components`).
    pub cache_dir: PathBuf,
}

/// The one wasmtime engine of a `dax` process, plus its compile cache.
pub struct PluginHost {
    _private: (),
}

/// A verified, compiled, linked plugin, ready to instantiate cheaply.
#[derive(Clone)]
pub struct LoadedPlugin {
    _private: (),
}

impl PluginHost {
    pub fn new(_options: HostOptions) -> anyhow::Result<Self> {
        todo!()
    }

    /// Resolve `spec.source` (relative paths against `base_dir`), verify its digest, compile
    /// (or load from cache), check role and contract version, and prepare instantiation.
    pub async fn load(
        &self,
        _name: &str,
        _spec: &PluginSpec,
        _base_dir: &std::path::Path,
    ) -> anyhow::Result<LoadedPlugin> {
        todo!()
    }
}

impl LoadedPlugin {
    pub fn name(&self) -> &str {
        todo!()
    }
    pub fn info(&self) -> &PluginInfo {
        todo!()
    }
    pub fn role(&self) -> PluginRole {
        todo!()
    }
    /// Run the plugin's own config validation.
    pub async fn validate_config(&self, _config: &serde_json::Value) -> CallResult<Vec<ConfigProblem>> {
        todo!()
    }
    pub async fn target(&self, _config: serde_json::Value) -> anyhow::Result<Arc<dyn Target>> {
        todo!()
    }
    pub async fn strategy(&self, _params: serde_json::Value) -> anyhow::Result<Arc<dyn Strategy>> {
        todo!()
    }
    pub async fn scanner(&self, _config: serde_json::Value) -> anyhow::Result<Arc<dyn Scanner>> {
        todo!()
    }
    pub async fn metric_provider(
        &self,
        _config: serde_json::Value,
    ) -> anyhow::Result<Arc<dyn MetricProvider>> {
        todo!()
    }
}
