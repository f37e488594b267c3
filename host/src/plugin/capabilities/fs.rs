//! Granted directories (WASI preopens): the one file-system call the host narrows beyond
//! what cap-std enforces. cap-std refuses to *follow* a symlink out of a preopen and to
//! create one with an absolute target, but it creates `link -> ../../etc/passwd` happily;
//! any other program reading the granted directory would then follow it. So a plugin may
//! only create symlinks whose target is relative and has no `..`.

use crate::plugin::sandbox::{symlink_target_allowed, PluginState};
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
                    tracing::warn!(plugin = %state.plugin, "{reason}");
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
