//! Resolving the plugins a deployment file names, checking their roles and configs
//! (`dax validate`), and instantiating them for a run.
//!
//! Wasm plugins go through [`PluginHost::load`]; host-native builtins (`builtin:local`,
//! `builtin:local-metrics`) and, in tests, native doubles are registered by source name.

use crate::config::{LoadedConfig, Problem};
use crate::contract::{
    CallResult, ConfigProblem, MetricProvider, PluginInfo, PluginRole, Scanner, Strategy, Target,
    TrafficSupport,
};
use crate::plugin::{LoadError, LoadedPlugin, PluginHost, PluginSpec};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

/// What a target instance is created for.
#[derive(Debug, Clone, Copy)]
pub struct TargetContext<'a> {
    /// The deployment file's folder: relative paths in the target's config resolve here.
    pub base_dir: &'a Path,
    /// The deployment's own state folder (`STATE_DIR/deployments/ID`): a target keeps there
    /// what it needs to take over again after `dax resume` (the `local` target does).
    pub deployment_dir: &'a Path,
}

/// A resolved, verified plugin, ready to instantiate with a config.
#[async_trait::async_trait]
pub trait ResolvedPlugin: Send + Sync {
    fn info(&self) -> PluginInfo;
    /// sha256 of the code that runs (empty for host-native builtins).
    fn digest(&self) -> String {
        String::new()
    }
    async fn validate_config(&self, config: &serde_json::Value) -> CallResult<Vec<ConfigProblem>>;
    async fn target(
        &self,
        _config: serde_json::Value,
        _ctx: TargetContext<'_>,
    ) -> anyhow::Result<Arc<dyn Target>> {
        anyhow::bail!("plugin `{}` is not a target", self.info().name)
    }
    /// What this target's `set-traffic` can carry out with `config`, asked before anything
    /// runs (`dax validate`, and `dax deploy` before its first step; see `dry_run`). Only
    /// `traffic_support` is called on the instance. A native target whose construction has
    /// effects (the local target binds listeners) answers without one instead.
    async fn traffic_support(
        &self,
        config: serde_json::Value,
        base_dir: &Path,
    ) -> anyhow::Result<CallResult<TrafficSupport>> {
        // Nothing is deployed: the instance gets no deployment folder of its own.
        let nowhere = std::env::temp_dir().join("dax-traffic-support");
        let ctx = TargetContext {
            base_dir,
            deployment_dir: &nowhere,
        };
        Ok(self.target(config, ctx).await?.traffic_support().await)
    }
    async fn strategy(&self, _params: serde_json::Value) -> anyhow::Result<Arc<dyn Strategy>> {
        anyhow::bail!("plugin `{}` is not a strategy", self.info().name)
    }
    async fn scanner(&self, _config: serde_json::Value) -> anyhow::Result<Arc<dyn Scanner>> {
        anyhow::bail!("plugin `{}` is not a scanner", self.info().name)
    }
    async fn metric_provider(
        &self,
        _config: serde_json::Value,
    ) -> anyhow::Result<Arc<dyn MetricProvider>> {
        anyhow::bail!("plugin `{}` is not a metric provider", self.info().name)
    }
}

/// Turns `[plugins.NAME]` tables into [`ResolvedPlugin`]s.
#[async_trait::async_trait]
pub trait PluginResolver: Send + Sync {
    async fn resolve(
        &self,
        name: &str,
        spec: &PluginSpec,
        base_dir: &Path,
    ) -> anyhow::Result<Arc<dyn ResolvedPlugin>>;
}

/// The production resolver: native builtins by source, everything else through the
/// Wasm plugin host (created lazily, so commands that need no Wasm never build an engine).
pub struct HostResolver {
    host: tokio::sync::OnceCell<Arc<PluginHost>>,
    options: crate::plugin::HostOptions,
    natives: HashMap<String, Arc<dyn ResolvedPlugin>>,
}

impl HostResolver {
    pub fn new(options: crate::plugin::HostOptions) -> Self {
        let mut natives: HashMap<String, Arc<dyn ResolvedPlugin>> = HashMap::new();
        for (name, plugin) in super::builtins::native_builtins() {
            natives.insert(format!("builtin:{name}"), plugin);
        }
        HostResolver {
            host: tokio::sync::OnceCell::new(),
            options,
            natives,
        }
    }

    /// Register a host-native plugin under a source name such as `test:scripted`.
    pub fn with_native(mut self, source: &str, plugin: Arc<dyn ResolvedPlugin>) -> Self {
        self.natives.insert(source.to_string(), plugin);
        self
    }

    async fn host(&self) -> anyhow::Result<&Arc<PluginHost>> {
        self.host
            .get_or_try_init(|| async { PluginHost::new(self.options.clone()).map(Arc::new) })
            .await
    }
}

#[async_trait::async_trait]
impl PluginResolver for HostResolver {
    async fn resolve(
        &self,
        name: &str,
        spec: &PluginSpec,
        base_dir: &Path,
    ) -> anyhow::Result<Arc<dyn ResolvedPlugin>> {
        if let Some(p) = self.natives.get(spec.source.as_str()) {
            return Ok(p.clone());
        }
        let loaded = self.host().await?.load(name, spec, base_dir).await?;
        Ok(Arc::new(WasmPlugin(loaded)))
    }
}

/// A Wasm plugin loaded by the plugin host.
pub struct WasmPlugin(pub LoadedPlugin);

#[async_trait::async_trait]
impl ResolvedPlugin for WasmPlugin {
    fn info(&self) -> PluginInfo {
        self.0.info().clone()
    }
    fn digest(&self) -> String {
        self.0.digest().to_string()
    }
    async fn validate_config(&self, config: &serde_json::Value) -> CallResult<Vec<ConfigProblem>> {
        self.0.validate_config(config).await
    }
    async fn target(
        &self,
        config: serde_json::Value,
        _ctx: TargetContext<'_>,
    ) -> anyhow::Result<Arc<dyn Target>> {
        self.0.target(config).await
    }
    async fn strategy(&self, params: serde_json::Value) -> anyhow::Result<Arc<dyn Strategy>> {
        self.0.strategy(params).await
    }
    async fn scanner(&self, config: serde_json::Value) -> anyhow::Result<Arc<dyn Scanner>> {
        self.0.scanner(config).await
    }
    async fn metric_provider(
        &self,
        config: serde_json::Value,
    ) -> anyhow::Result<Arc<dyn MetricProvider>> {
        self.0.metric_provider(config).await
    }
}

/// Every plugin a deployment uses, resolved.
pub struct ResolvedSet {
    pub plugins: BTreeMap<String, Arc<dyn ResolvedPlugin>>,
}

/// The role each referenced plugin must have, with the field that references it.
pub fn required_roles(cfg: &LoadedConfig) -> Vec<(String, PluginRole, String)> {
    let c = &cfg.config;
    let mut out = vec![
        (
            c.target.plugin.clone(),
            PluginRole::Target,
            "target.plugin".to_string(),
        ),
        (
            c.strategy.plugin.clone(),
            PluginRole::Strategy,
            "strategy.plugin".to_string(),
        ),
    ];
    for (i, check) in c.checks.iter().enumerate() {
        out.push((
            check.provider.clone(),
            PluginRole::MetricProvider,
            format!("checks[{i}].provider"),
        ));
    }
    for (i, s) in gate_scanners(cfg).into_iter().enumerate() {
        out.push((s, PluginRole::Scanner, format!("gate.scanners[{i}]")));
    }
    out
}

pub fn gate_scanners(cfg: &LoadedConfig) -> Vec<String> {
    cfg.config
        .gate
        .as_ref()
        .and_then(|g| g.get("scanners"))
        .and_then(|s| s.as_array())
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// The plugin half of `dax validate`: resolve and verify every plugin (source, digest,
/// contract), check each referenced plugin's role, and run each plugin's own config
/// validation — collecting every problem, located in the file.
pub async fn validate(
    cfg: &LoadedConfig,
    resolver: &dyn PluginResolver,
) -> (Option<ResolvedSet>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut plugins = BTreeMap::new();
    let results =
        futures::future::join_all(cfg.config.plugins.iter().map(|(name, spec)| async move {
            // The [trust] policy first: a refused plugin is never fetched or compiled, and
            // an accepted one loads pinned to the digest that was signed.
            let resolved = match crate::plugin::signature::enforce(
                &cfg.config.trust,
                name,
                spec,
                &cfg.base_dir,
            )
            .await
            {
                Ok(spec) => resolver.resolve(name, &spec, &cfg.base_dir).await,
                Err(refusal) => Err(anyhow::Error::new(refusal)),
            };
            (name.clone(), resolved)
        }))
        .await;
    for (name, result) in results {
        match result {
            Ok(p) => {
                plugins.insert(name, p);
            }
            Err(e) => {
                // The plugin host says which field of `[plugins.NAME]` is wrong; anything
                // else (a native resolver) is about `source`.
                let typed = match e.downcast_ref::<LoadError>() {
                    Some(typed) => typed.clone(),
                    None => LoadError::source(format!("{e:#}")),
                };
                problems.push(cfg.problem(
                    &format!("plugins.{name}.{}", typed.field),
                    format!("cannot load plugin `{name}`: {}", typed.message),
                    typed.help,
                ))
            }
        }
    }
    for (name, role, field) in required_roles(cfg) {
        if let Some(p) = plugins.get(&name) {
            let info = p.info();
            if info.role != role {
                problems.push(cfg.problem(
                    &field,
                    format!(
                        "plugin `{name}` ({}) is a {} plugin, but a {role} plugin is needed here",
                        info.name, info.role
                    ),
                    format!("point `{field}` at a {role} plugin"),
                ));
            }
        }
    }
    // Each plugin's own config check (the strategy's config is `[strategy.params]`).
    let checks = plugins.iter().map(|(name, p)| {
        let (config, field) =
            if p.info().role == PluginRole::Strategy && *name == cfg.config.strategy.plugin {
                (cfg.config.strategy_params(), "strategy.params".to_string())
            } else {
                (
                    cfg.config.plugin_config(name),
                    format!("plugins.{name}.config"),
                )
            };
        async move { (name.clone(), field, p.validate_config(&config).await) }
    });
    for (name, field, result) in futures::future::join_all(checks).await {
        match result {
            Ok(found) => {
                for cp in found {
                    let f = if cp.field.is_empty() {
                        field.clone()
                    } else {
                        format!("{field}.{}", cp.field)
                    };
                    problems.push(cfg.problem(
                        &f,
                        format!("plugin `{name}`: {}", cp.message),
                        "fix the value as the plugin says (`dax plugin inspect` shows its config schema)",
                    ));
                }
            }
            Err(e) => problems.push(cfg.problem(
                &field,
                format!("plugin `{name}` could not check its config: {e}"),
                crate::plugin::fault_help(&e),
            )),
        }
    }
    let set = if problems.is_empty() {
        Some(ResolvedSet { plugins })
    } else {
        None
    };
    (set, problems)
}
