//! Deployment Architect (`dax`): the host runtime.
//!
//! Modules mirror the architecture (see `ARCHITECTURE.md` in the design docs):
//! - [`contract`]: the plugin roles as Rust types and traits (mirrors `wit/`);
//! - [`plugin`]: loading, caching and sandboxing Wasm plugins;
//! - [`authoring`]: developer tooling for plugin authors (`dax plugin build/new/test`);
//! - [`config`]: the deployment TOML, interpolation and `dax validate`;
//! - [`engine`]: the deployment loop, analysis, hooks, notifications;
//! - [`state`]: the durable per-deployment journal;
//! - [`judge`]: the Kayenta-style statistical comparison of canary and baseline;
//! - [`gate`]: the release gate policy applied to every scanner's findings;
//! - [`local`]: the embedded `local` target (processes + weighted proxy + metrics);
//! - [`cli`]: the `dax` command line.

pub mod authoring;
pub mod cli;
pub mod config;
pub mod contract;
pub mod engine;
pub mod gate;
pub mod judge;
pub mod local;
pub mod plugin;
pub mod state;
