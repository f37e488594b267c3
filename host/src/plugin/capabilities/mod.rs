//! Host capabilities plugins may import (`dax:host/*`), and the WASI calls the host
//! narrows. One module per capability; each enforces its own grant and limits before
//! doing any work.

pub mod aws;
pub mod fs;
pub mod kube;
pub mod log;

use super::sandbox::PluginState;
use wasmtime::component::{HasSelf, Linker};

/// Link every host capability (`dax:host/*`): the `capabilities` world's bindings link all of its
/// imports at once, each answered by the `Host` trait its module implements on
/// [`PluginState`]. See the README's "Adding a capability".
pub fn add_to_linker(linker: &mut Linker<PluginState>) -> anyhow::Result<()> {
    super::bindings::host_log::add_to_linker::<PluginState, HasSelf<PluginState>>(linker, |s| s)?;
    kube::add_to_linker(linker)?;
    aws::add_to_linker(linker)?;
    Ok(())
}
