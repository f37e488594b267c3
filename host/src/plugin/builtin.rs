//! First-party plugins embedded in the binary (`builtin:NAME` sources).
//!
//! The bytes come from `host/builtin/*.wasm`, written by `dax plugin build --all --embed` from the
//! sources under `plugins/`; `host/builtin/SOURCES` records the sha256 of those sources so
//! CI can prove the embedded artifacts are current (`dax plugin build --all --check`).

include!(concat!(env!("OUT_DIR"), "/builtin_plugins.rs"));

/// The component bytes of an embedded plugin.
pub fn wasm(name: &str) -> Option<&'static [u8]> {
    find(name).map(|(_, bytes)| bytes)
}

/// The sha256 (hex) and component bytes of an embedded plugin; the digest was computed
/// when `dax` was built.
pub fn find(name: &str) -> Option<(&'static str, &'static [u8])> {
    BUILTIN_PLUGINS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, digest, bytes)| (*digest, *bytes))
}

/// Names of the embedded Wasm plugins.
pub fn names() -> Vec<&'static str> {
    BUILTIN_PLUGINS.iter().map(|(n, _, _)| *n).collect()
}

// Host-native builtins (`builtin:local`, `builtin:local-metrics`) are not here: their one
// registry, with their descriptions, is `crate::engine::builtins`.
