//! Host-side bindings generated from `wit/`: one module for the `capabilities` world
//! (every capability a plugin can import, `dax:host/*`) and one per plugin role world.
//!
//! The role worlds include that world; their bindings reuse the `capabilities` module's
//! capability interfaces for the whole `dax:host` package, and the `target` module's
//! `dax:plugin/types`, through `with`, so each type exists once on the host side and a new
//! capability needs no edit here.

pub mod capabilities {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "dax:host/capabilities",
        imports: { "dax:host/kube": async, "dax:host/aws": async },
    });
}

pub mod target {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "dax:plugin/target-plugin",
        exports: { default: async },
        with: {
            "dax:host": super::capabilities::dax::host,
        },
    });
}

pub mod scanner {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "dax:plugin/scanner-plugin",
        exports: { default: async },
        with: {
            "dax:plugin/types": super::target::dax::plugin::types,
            "dax:host": super::capabilities::dax::host,
        },
    });
}

pub mod metric_provider {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "dax:plugin/metric-provider-plugin",
        exports: { default: async },
        // The query is lowered straight from the engine's strings, not from copies of them.
        ownership: Borrowing { duplicate_if_necessary: false },
        with: {
            "dax:plugin/types": super::target::dax::plugin::types,
            "dax:host": super::capabilities::dax::host,
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
            "dax:host": super::capabilities::dax::host,
        },
    });
}

pub use capabilities::dax::host::log as host_log;
pub use target::dax::plugin::types as wit_types;
