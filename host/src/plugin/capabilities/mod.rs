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
//! | [`aws`] | `dax:host/aws`, AWS API calls signed with host-held credentials | `aws` |
//!
//! Adding one: its WIT interface in `wit/deps/dax-host/host.wit` (imported by the
//! `capabilities` world), a module here, a field in [`Grants`], a line in [`add_to_linker`],
//! and its state in `sandbox.rs` (see the README's "Adding a capability").

pub mod aws;
pub mod bounds;
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
    /// AWS API calls through `dax:host/aws`, scoped to actions, regions and resource ARNs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws: Option<aws::AwsGrant>,
}

/// Link every host capability (`dax:host/*`): the `capabilities` world's bindings link all of its
/// imports at once, each answered by the `Host` trait its module implements on
/// [`PluginState`]. See the README's "Adding a capability".
pub fn add_to_linker(linker: &mut Linker<PluginState>) -> anyhow::Result<()> {
    super::bindings::host_log::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    kube::add_to_linker(linker)?;
    aws::add_to_linker(linker)?;
    Ok(())
}

/// The load error of a grant whose shape `check_shape` refused (`(field, problem)`).
pub(crate) fn grant_shape_error(
    plugin: &str,
    (field, problem): (&'static str, String),
) -> super::LoadError {
    super::LoadError::new(
        field,
        format!("plugin `{plugin}`: {field} {problem}"),
        "fix the grant",
    )
}

/// Capability interfaces a component may import that need a grant, with the check and the
/// grant to add. Interfaces not listed are either always granted (`dax:host/log`) or deny
/// per call (`wasi:http`, whose every request is checked against `grants.http`).
const GRANTED_IMPORTS: &[GrantedImport] = &[
    ("dax:host/kube", |g| g.kube.is_some(), "grants.kube"),
    ("dax:host/aws", |g| g.aws.is_some(), "grants.aws"),
];

/// (interface, whether the grants cover it, the grant's TOML key).
type GrantedImport = (&'static str, fn(&Grants) -> bool, &'static str);

/// What a component imports that is a capability (for `dax plugin inspect`): `dax:host/*`,
/// `wasi:http/*` and `wasi:filesystem/*`, without versions.
pub fn imported(imports: &[String]) -> Vec<String> {
    let mut found: Vec<String> = imports
        .iter()
        .filter(|i| {
            i.starts_with("dax:host/")
                || i.starts_with("wasi:http/")
                || i.starts_with("wasi:filesystem/")
        })
        .map(|i| i.split('@').next().unwrap_or(i).to_string())
        .collect();
    found.sort();
    found.dedup();
    found
}

/// Refuse at load time a plugin importing a capability its entry does not grant, listing
/// every missing grant (not only the first call's).
pub fn check_imports_granted(
    plugin: &str,
    imports: &[String],
    grants: &Grants,
) -> Result<(), super::LoadError> {
    let missing: Vec<(&str, &str)> = GRANTED_IMPORTS
        .iter()
        .filter(|(interface, granted, _)| {
            !granted(grants)
                && imports
                    .iter()
                    .any(|i| i.split('@').next() == Some(*interface))
        })
        .map(|(interface, _, grant)| (*interface, *grant))
        .collect();
    let Some((_, first_grant)) = missing.first() else {
        return Ok(());
    };
    let list = missing
        .iter()
        .map(|(interface, grant)| format!("{interface} needs [plugins.{plugin}.{grant}]"))
        .collect::<Vec<_>>()
        .join("; ");
    Err(super::LoadError::new(
        *first_grant,
        format!("plugin `{plugin}` imports capabilities its entry does not grant: {list}"),
        "add the grant tables (the README's sandbox section lists their keys), or use a plugin that does not need them",
    ))
}
