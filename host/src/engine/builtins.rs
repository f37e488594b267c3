//! Host-native builtins: `builtin:local` (the local target) and `builtin:local-metrics`.
//! Every other `builtin:NAME` is a Wasm plugin embedded in the binary (see `plugin`).

use super::resolve::{ResolvedPlugin, TargetContext};
use crate::contract::{
    CallResult, ConfigProblem, MetricProvider, PluginInfo, Target, TrafficSupport,
};
use crate::local::{LocalMetrics, LocalTarget};
use std::sync::Arc;

/// The one registry of host-native builtins: `(name, plugin)`, used as `builtin:NAME`. They
/// are implemented in Rust inside the host rather than as Wasm because they need what no
/// plugin is granted (spawning processes, serving a proxy); `info()` gives their role and
/// description to `dax plugin list`.
pub fn native_builtins() -> Vec<(&'static str, Arc<dyn ResolvedPlugin>)> {
    vec![
        ("local", Arc::new(LocalTargetPlugin)),
        ("local-metrics", Arc::new(LocalMetricsPlugin)),
    ]
}

/// Names of the host-native builtins (without `builtin:`).
pub fn native_names() -> Vec<&'static str> {
    native_builtins().into_iter().map(|(n, _)| n).collect()
}

struct LocalTargetPlugin;

#[async_trait::async_trait]
impl ResolvedPlugin for LocalTargetPlugin {
    fn info(&self) -> PluginInfo {
        LocalTarget::info()
    }
    async fn validate_config(&self, config: &serde_json::Value) -> CallResult<Vec<ConfigProblem>> {
        // Constructing the target binds its listeners, so validation parses the config only.
        Ok(match LocalTarget::check_config(config) {
            Ok(()) => Vec::new(),
            Err(e) => vec![ConfigProblem {
                field: String::new(),
                message: format!("{e:#}"),
            }],
        })
    }
    async fn target(
        &self,
        config: serde_json::Value,
        ctx: TargetContext<'_>,
    ) -> anyhow::Result<Arc<dyn Target>> {
        // Its state lives with the deployment, so `dax resume ID` adopts its processes.
        Ok(Arc::new(
            LocalTarget::for_deployment(config, ctx.base_dir, ctx.deployment_dir).await?,
        ))
    }
    async fn traffic_support(
        &self,
        _config: serde_json::Value,
        _base_dir: &std::path::Path,
    ) -> anyhow::Result<CallResult<TrafficSupport>> {
        // Constructing the target binds its listeners; what it supports needs no instance.
        Ok(Ok(LocalTarget::traffic_support_of_any_config()))
    }
}

struct LocalMetricsPlugin;

#[async_trait::async_trait]
impl ResolvedPlugin for LocalMetricsPlugin {
    fn info(&self) -> PluginInfo {
        LocalMetrics::info()
    }
    async fn validate_config(&self, config: &serde_json::Value) -> CallResult<Vec<ConfigProblem>> {
        Ok(match LocalMetrics::new(config.clone()) {
            Ok(_) => Vec::new(),
            Err(e) => vec![ConfigProblem {
                field: String::new(),
                message: format!("{e:#}"),
            }],
        })
    }
    async fn metric_provider(
        &self,
        config: serde_json::Value,
    ) -> anyhow::Result<Arc<dyn MetricProvider>> {
        Ok(Arc::new(LocalMetrics::new(config)?))
    }
}
