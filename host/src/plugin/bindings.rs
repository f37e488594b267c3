//! Host-side bindings generated from `wit/`, one module per plugin world.
//!
//! The `target` world's module owns the shared `dax:plugin/types` and `dax:host/log`
//! definitions; the other worlds reuse them through `with`, so a type such as
//! `PluginError` exists once on the host side.

pub mod target {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "dax:plugin/target-plugin",
        exports: { default: async },
    });
}

pub mod scanner {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "dax:plugin/scanner-plugin",
        exports: { default: async },
        with: {
            "dax:plugin/types": super::target::dax::plugin::types,
            "dax:host/log": super::target::dax::host::log,
        },
    });
}

pub mod metric_provider {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "dax:plugin/metric-provider-plugin",
        exports: { default: async },
        with: {
            "dax:plugin/types": super::target::dax::plugin::types,
            "dax:host/log": super::target::dax::host::log,
        },
    });
}

pub mod strategy {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "dax:plugin/strategy-plugin",
        exports: { default: async },
        with: {
            "dax:plugin/types": super::target::dax::plugin::types,
            "dax:host/log": super::target::dax::host::log,
        },
    });
}

pub use target::dax::host::log as host_log;
pub use target::dax::plugin::types as wit_types;
