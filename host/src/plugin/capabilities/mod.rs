//! Everything a plugin can reach outside its own memory, one module per capability, after
//! Spin's factors: each owns its grant type (a field of [`Grants`] below, the
//! `[plugins.NAME.grants]` table), its per-plugin state, its linker registration and its
//! limits, enforced before any work is done.
//!
//! | module | what | grant |
//! |---|---|---|
//! | [`log`] | `dax:host/log`, stdout/stderr into `tracing` | always (bounded) |
//! | [`fs`] | WASI preopens, quota, symlink rules | `dirs` |
//! | [`http`] | `wasi:http` to granted destinations, host-held credentials | `http`, `http_auth` |
//! | [`kube`] | `dax:host/kube`, Kubernetes API calls with host-held credentials | `kube` |
//!
//! Adding one: its WIT interface in `wit/deps/dax-host/host.wit` (imported by the
//! `capabilities` world), a module here, a field in [`Grants`], a line in [`add_to_linker`],
//! and its state in `sandbox.rs` (see the README's "Adding a capability").

pub mod fs;
pub mod http;
pub mod kube;
pub mod log;

use super::sandbox::PluginState;
use serde::{Deserialize, Serialize};
use wasmtime::component::{HasSelf, Linker};

/// Capabilities granted to one plugin. Everything absent is denied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Outbound HTTP destinations as `scheme://host:port`; `*` wildcards allowed in the
    /// host (`https://*.example.com:443`). Checked on every request.
    #[serde(default)]
    pub http: Vec<String>,
    /// Host directories visible to the plugin.
    #[serde(default)]
    pub dirs: Vec<fs::DirGrant>,
    /// Credentials the host adds to requests for a granted HTTP destination, so the plugin
    /// never sees them.
    #[serde(default)]
    pub http_auth: Vec<http::HttpAuth>,
    /// Kubernetes API calls through `dax:host/kube`, scoped to namespaces, resources and verbs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube: Option<kube::KubeGrant>,
}

/// Link every host capability (`dax:host/*`): the `capabilities` world's bindings link all of its
/// imports at once, each answered by the `Host` trait its module implements on
/// [`PluginState`]. See the README's "Adding a capability".
pub fn add_to_linker(linker: &mut Linker<PluginState>) -> anyhow::Result<()> {
    super::bindings::host_log::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    kube::add_to_linker(linker)?;
    Ok(())
}
