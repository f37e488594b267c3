//! # dax-sdk: write Deployment Architect plugins in Rust
//!
//! A plugin is a WebAssembly component implementing one world of the `dax:plugin` WIT
//! package (see `wit/` at the repository root; every type is documented there). This
//! crate generates the bindings for you and adds small helpers.
//!
//! Pick the role with a cargo feature; `dax_sdk::<role>` then holds everything for it:
//!
//! ```toml
//! [lib]
//! crate-type = ["cdylib", "rlib"]
//!
//! [dependencies]
//! dax-sdk = { path = "../../sdk", features = ["metric-provider"] }
//! ```
//!
//! then implement the role's `Guest` trait plus `PluginGuest` and export them:
//!
//! ```ignore
//! use dax_sdk::metric_provider::*;
//!
//! struct Constant;
//! impl PluginGuest for Constant {
//!     fn describe() -> PluginInfo { info("constant", "0.1.0", PluginRole::MetricProvider, "Always 42", "{}") }
//!     fn validate_config(_config: String) -> Vec<ConfigProblem> { vec![] }
//! }
//! impl Guest for Constant {
//!     fn run_query(_config: String, _q: Query) -> Result<Answer, PluginError> { Ok(Answer::Value(42.0)) }
//! }
//! dax_sdk::export_metric_provider!(Constant);
//! ```
//!
//! Build every plugin of the repository with `dax plugin build`; it picks a wasm toolchain
//! and turns the core module into a component.

// Each world exports the shared `plugin` interface, whose generated export macros are
// crate-global: two roles in one build would define them twice. Cargo unifies features of
// all packages built together, so build plugin crates one at a time.
#[cfg(any(
    all(
        feature = "target",
        any(feature = "scanner", feature = "metric-provider", feature = "strategy")
    ),
    all(
        feature = "scanner",
        any(feature = "metric-provider", feature = "strategy")
    ),
    all(feature = "metric-provider", feature = "strategy"),
))]
compile_error!(
    "dax-sdk: plugins of different roles are being compiled in one cargo invocation, which unifies their \
     role features; build (and test) plugin crates one at a time with `-p NAME` (`dax plugin build` does this)"
);

/// Everything a plugin of one role needs, generated from its world: the WIT types, the
/// `plugin` export (`PluginGuest`), the role's export (`Guest`), logging and helpers.
macro_rules! role_module {
    ($feature:literal, $module:ident, $world:literal, $macro_name:literal, $bindings:literal, $role_path:ident) => {
        #[cfg(feature = $feature)]
        pub mod $module {
            #[doc(hidden)]
            pub mod bindings {
                wit_bindgen::generate!({
                    path: "../wit",
                    world: $world,
                    pub_export_macro: true,
                    export_macro_name: $macro_name,
                    default_bindings_module: $bindings,
                    generate_all,
                });
            }
            // Named explicitly so they win over the role interface's aliases of the same names.
            pub use bindings::dax::plugin::types::{
                ConfigProblem, MatchSource, PluginError, PluginInfo, PluginRole, RequestMatch, Sample, Severity, Slot,
                StringMatch, TrafficSplit,
            };
            pub use bindings::exports::dax::plugin::plugin::Guest as PluginGuest;
            pub use bindings::exports::dax::plugin::$role_path::*;

            /// Build the answer of `describe`.
            pub fn info(name: &str, version: &str, role: PluginRole, description: &str, config_schema: &str) -> PluginInfo {
                PluginInfo {
                    name: name.into(),
                    version: version.into(),
                    role,
                    description: description.into(),
                    config_schema: config_schema.into(),
                }
            }

            /// Parse the JSON config the host passes to every call into your own serde type.
            pub fn parse_config<T: serde::de::DeserializeOwned>(config: &str) -> Result<T, PluginError> {
                serde_json::from_str(config).map_err(|e| PluginError::InvalidConfig(e.to_string()))
            }

            /// `validate-config` for plugins whose config is fully described by a serde type
            /// (use `#[serde(deny_unknown_fields)]` to reject typos): one problem or none.
            pub fn validate_with<T: serde::de::DeserializeOwned>(config: &str) -> Vec<ConfigProblem> {
                match serde_json::from_str::<T>(config) {
                    Ok(_) => Vec::new(),
                    Err(e) => vec![ConfigProblem { field: String::new(), message: e.to_string() }],
                }
            }

            /// `validate-config`'s answer from a plugin's own checks, as `(field, message)`
            /// pairs (an empty field means the config as a whole).
            pub fn problems(found: impl IntoIterator<Item = (String, String)>) -> Vec<ConfigProblem> {
                found.into_iter().map(|(field, message)| ConfigProblem { field, message }).collect()
            }

            /// Refuse a call whose config those checks flag: the first problem, as
            /// `PluginError::InvalidConfig` ("field: message").
            pub fn refuse_if_invalid(found: impl IntoIterator<Item = (String, String)>) -> Result<(), PluginError> {
                match found.into_iter().next() {
                    None => Ok(()),
                    Some((field, message)) if field.is_empty() => Err(PluginError::InvalidConfig(message)),
                    Some((field, message)) => Err(PluginError::InvalidConfig(format!("{field}: {message}"))),
                }
            }

            /// Kubernetes API calls made by the host with the operator's credentials
            /// (`dax:host/kube`); only what `[plugins.NAME.grants.kube]` grants gets through.
            pub use bindings::dax::host::kube;
            /// AWS API calls the host signs and sends (`dax:host/aws`); only what
            /// `[plugins.NAME.grants.aws]` grants gets through.
            pub use bindings::dax::host::aws;

            /// Log through the host (`dax:host/log`): lines appear in the host's output
            /// tagged with the plugin's name.
            pub mod log {
                use super::bindings::dax::host::log::{log, Level};
                pub fn debug(message: &str) { log(Level::Debug, message) }
                pub fn info(message: &str) { log(Level::Info, message) }
                pub fn warn(message: &str) { log(Level::Warn, message) }
                pub fn error(message: &str) { log(Level::Error, message) }
            }
        }
    };
}

role_module!(
    "target",
    target,
    "dax:plugin/target-plugin",
    "export_target",
    "dax_sdk::target::bindings",
    target
);
role_module!(
    "scanner",
    scanner,
    "dax:plugin/scanner-plugin",
    "export_scanner",
    "dax_sdk::scanner::bindings",
    scanner
);
role_module!(
    "metric-provider",
    metric_provider,
    "dax:plugin/metric-provider-plugin",
    "export_metric_provider",
    "dax_sdk::metric_provider::bindings",
    metric_provider
);
role_module!(
    "strategy",
    strategy,
    "dax:plugin/strategy-plugin",
    "export_strategy",
    "dax_sdk::strategy::bindings",
    strategy
);

/// Export a target plugin: `dax_sdk::export_target!(MyTarget);`
#[cfg(feature = "target")]
#[macro_export]
macro_rules! export_target { ($t:ident) => { $crate::target::bindings::export_target!($t with_types_in $crate::target::bindings); }; }
/// Export a scanner plugin: `dax_sdk::export_scanner!(MyScanner);`
#[cfg(feature = "scanner")]
#[macro_export]
macro_rules! export_scanner { ($t:ident) => { $crate::scanner::bindings::export_scanner!($t with_types_in $crate::scanner::bindings); }; }
/// Export a metric provider plugin: `dax_sdk::export_metric_provider!(MyProvider);`
#[cfg(feature = "metric-provider")]
#[macro_export]
macro_rules! export_metric_provider { ($t:ident) => { $crate::metric_provider::bindings::export_metric_provider!($t with_types_in $crate::metric_provider::bindings); }; }
/// Export a strategy plugin: `dax_sdk::export_strategy!(MyStrategy);`
#[cfg(feature = "strategy")]
#[macro_export]
macro_rules! export_strategy { ($t:ident) => { $crate::strategy::bindings::export_strategy!($t with_types_in $crate::strategy::bindings); }; }

#[cfg(feature = "http")]
pub mod http;

/// Milliseconds since the Unix epoch by the host's wall clock (WASI `wall-clock`), e.g. the
/// end of a metric query's window; 0 if the clock reads before the epoch.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
