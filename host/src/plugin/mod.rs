//! Loading and running Wasm plugins: one wasmtime `Engine`, a compile cache on disk,
//! `InstancePre` reuse, and the deny-by-default sandbox each call runs in.
//!
//! ```text
//! PluginHost::load(name, spec)  ── resolve source ─ verify sha256 ─ compile (or cache hit)
//!        │                           ─ check contract version/role ─ link ─ InstancePre
//!        ▼
//! LoadedPlugin::{target, strategy, scanner, metric_provider}(config)  → Arc<dyn Trait>
//!        │   each returned object owns one sandboxed instance (its own Store)
//!        ▼
//! calls run with a CPU deadline (epochs), a memory limit and an output-size cap
//! ```

pub mod bindings;
pub mod build;
pub mod builtin;
pub mod cache;
pub mod capabilities;
mod roles;
pub mod sandbox;
pub mod source;
pub mod spec;

pub use cache::CompileSource;
pub use source::resolve_source;
pub use spec::{DirGrant, Grants, HttpAuth, Limits, PluginSpec};

use crate::contract::{
    CallError, CallResult, ConfigProblem, MetricProvider, PluginInfo, PluginRole, Scanner,
    Strategy, Target,
};
use anyhow::Context as _;
use sandbox::{PluginState, Sandbox};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

/// The contract version this host implements (`dax:plugin@...` in `wit/`).
pub const CONTRACT_VERSION: &str = "0.1.0";
const CONTRACT_PACKAGE: &str = "dax:plugin";

/// How often the epoch advances: the granularity of CPU deadlines.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Idle warm instances kept per loaded plugin.
const MAX_IDLE_INSTANCES: usize = 8;

/// Host-wide settings for plugin execution.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Where compiled components are cached (default: `~/.cache/dax/components`).
    pub cache_dir: PathBuf,
    /// Use wasmtime's pooling allocator (falls back to on-demand if the machine refuses
    /// the address-space reservation).
    pub pooling: bool,
}

impl Default for HostOptions {
    fn default() -> Self {
        let cache_dir = std::env::var_os("DAX_CACHE_DIR")
            .map(PathBuf::from)
            .or_else(|| dirs::cache_dir().map(|d| d.join("dax")))
            .unwrap_or_else(|| std::env::temp_dir().join("dax-cache"))
            .join("components");
        HostOptions {
            cache_dir,
            pooling: true,
        }
    }
}

/// The one wasmtime engine of a `dax` process, its linker and its compile cache.
pub struct PluginHost {
    engine: Engine,
    linker: Arc<Linker<PluginState>>,
    cache: cache::CompileCache,
    /// Components compiled or loaded by this process, by sha256: concurrent loads of the
    /// same plugin (many deployments starting at once) compile it once.
    compiled: Mutex<HashMap<String, Arc<tokio::sync::OnceCell<Component>>>>,
    pooling: bool,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for PluginHost {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::Relaxed);
    }
}

impl PluginHost {
    pub fn new(options: HostOptions) -> anyhow::Result<Self> {
        let (engine, pooling) = if options.pooling {
            match Engine::new(&engine_config(true)) {
                Ok(engine) => (engine, true),
                Err(e) => {
                    tracing::debug!(
                        "pooling allocator unavailable ({e:#}); using on-demand allocation"
                    );
                    (Engine::new(&engine_config(false))?, false)
                }
            }
        } else {
            (Engine::new(&engine_config(false))?, false)
        };

        let mut linker = Linker::new(&engine);
        // WASI p2 (clocks, random, stdio, filesystem through granted preopens; sockets are
        // linked but every address is denied) and wasi:http (checked per destination).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        bindings::host_log::add_to_linker::<PluginState, HasSelf<PluginState>>(&mut linker, |s| s)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("dax-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })?;
        }
        let cache = cache::CompileCache::new(&options.cache_dir, &engine)?;
        Ok(PluginHost {
            engine,
            linker: Arc::new(linker),
            cache,
            compiled: Mutex::new(HashMap::new()),
            pooling,
            ticker_stop,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Whether the pooling allocator is in use.
    pub fn pooling(&self) -> bool {
        self.pooling
    }

    /// Resolve `spec.source` (relative paths against `base_dir`), verify its digest, compile
    /// (or load from cache), check role and contract version, and prepare instantiation.
    pub async fn load(
        &self,
        name: &str,
        spec: &PluginSpec,
        base_dir: &Path,
    ) -> anyhow::Result<LoadedPlugin> {
        let (bytes, origin) = resolve_source(name, spec, base_dir).await?;
        self.load_bytes(name, spec, base_dir, &bytes, &origin)
            .await
            .map(|(p, _)| p)
    }

    /// Like [`load`](Self::load) for bytes already in memory; also says whether the compile
    /// cache answered.
    pub async fn load_bytes(
        &self,
        name: &str,
        spec: &PluginSpec,
        base_dir: &Path,
        bytes: &[u8],
        origin: &str,
    ) -> anyhow::Result<(LoadedPlugin, CompileSource)> {
        let digest = hex::encode(Sha256::digest(bytes));
        if let Some(pinned) = &spec.sha256 {
            let pinned = pinned
                .trim()
                .trim_start_matches("sha256:")
                .to_ascii_lowercase();
            if pinned != digest {
                anyhow::bail!(
                    "plugin `{name}`: sha256 of {origin} is {digest}, but [plugins.{name}] pins {pinned}; \
                     the file changed or is not the one you reviewed — if the new file is intended, pin its digest"
                );
            }
        }
        check_is_component(name, origin, bytes)?;
        let cell = self
            .compiled
            .lock()
            .unwrap()
            .entry(digest.clone())
            .or_default()
            .clone();
        let mut compiled = CompileSource::Memory;
        let component = cell
            .get_or_try_init(|| async {
                let engine = self.engine.clone();
                let bytes = bytes.to_vec();
                let digest = digest.clone();
                // Compiling can take seconds (large JS components); keep it off the async workers.
                let cache = self.cache.clone();
                let (component, source) = tokio::task::spawn_blocking(move || {
                    cache.get_or_compile(&engine, &digest, &bytes)
                })
                .await?
                .with_context(|| format!("plugin `{name}`: {origin} is not a valid component"))?;
                compiled = source;
                anyhow::Ok(component)
            })
            .await?
            .clone();
        let world = detect_world(name, origin, &component, &self.engine)?;
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            anyhow::anyhow!(
                "plugin `{name}`: {origin} needs an import this host does not provide ({e:#}); \
                 it may be built for a newer dax or ask for a capability that does not exist"
            )
        })?;
        let pre = match world {
            PluginRole::Target => {
                WorldPre::Target(bindings::target::TargetPluginPre::new(instance_pre)?)
            }
            PluginRole::Scanner => {
                WorldPre::Scanner(bindings::scanner::ScannerPluginPre::new(instance_pre)?)
            }
            PluginRole::MetricProvider => WorldPre::MetricProvider(
                bindings::metric_provider::MetricProviderPluginPre::new(instance_pre)?,
            ),
            PluginRole::Strategy => {
                WorldPre::Strategy(bindings::strategy::StrategyPluginPre::new(instance_pre)?)
            }
        };
        let sandbox = Sandbox::new(name, &spec.grants, &spec.limits, base_dir)?;
        let inner = Inner {
            name: name.to_string(),
            digest,
            origin: origin.to_string(),
            role: world,
            info: None,
            engine: self.engine.clone(),
            sandbox,
            pre,
            idle: Mutex::new(Vec::new()),
        };
        let plugin = LoadedPlugin {
            inner: Arc::new(inner),
        };
        let info = plugin
            .call(|store, world| Box::pin(async move { world.describe(store).await }))
            .await
            .map_err(|e| anyhow::anyhow!("plugin `{name}`: `describe` failed: {e}"))?;
        if info.role != world {
            anyhow::bail!(
                "plugin `{name}`: describe() says role `{}` but the component exports the `{}` world; fix the plugin",
                info.role,
                world
            );
        }
        let plugin = plugin.with_info(info);
        Ok((plugin, compiled))
    }
}

fn engine_config(pooling: bool) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if pooling {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(1_000)
            .total_core_instances(4_000)
            .total_memories(2_000)
            .total_tables(2_000)
            .max_memories_per_component(8)
            .max_tables_per_component(8)
            .max_core_instances_per_component(50)
            // Per-plugin memory limits are enforced by the store limiter; this is the ceiling.
            .max_memory_size(1 << 30);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    }
    config
}

/// Refuse anything that is not a WebAssembly component, saying what it is instead.
fn check_is_component(name: &str, origin: &str, bytes: &[u8]) -> anyhow::Result<()> {
    if bytes.len() < 8 || &bytes[0..4] != b"\0asm" {
        anyhow::bail!("plugin `{name}`: {origin} is not a WebAssembly file (no `\\0asm` header)");
    }
    match bytes[4..8] {
        [0x01, 0x00, 0x00, 0x00] => anyhow::bail!(
            "plugin `{name}`: {origin} is a core WebAssembly module, not a component; \
             build it with `dax plugin build` (or `wasm-tools component new` with the WASI reactor adapter)"
        ),
        [_, _, 0x01, 0x00] => Ok(()),
        _ => anyhow::bail!("plugin `{name}`: {origin} uses an unknown WebAssembly binary version"),
    }
}

/// Find which `dax:plugin` world a component implements, refusing incompatible versions.
fn detect_world(
    name: &str,
    origin: &str,
    component: &Component,
    engine: &Engine,
) -> anyhow::Result<PluginRole> {
    let host_version = semver::Version::parse(CONTRACT_VERSION)?;
    let exports: Vec<String> = component
        .component_type()
        .exports(engine)
        .map(|(n, _)| n.to_string())
        .collect();
    let mut found = None;
    for export in &exports {
        let Some(rest) = export.strip_prefix(&format!("{CONTRACT_PACKAGE}/")) else {
            continue;
        };
        let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
        let role = match interface {
            "target" => PluginRole::Target,
            "scanner" => PluginRole::Scanner,
            "metric-provider" => PluginRole::MetricProvider,
            "strategy" => PluginRole::Strategy,
            _ => continue,
        };
        let version = semver::Version::parse(version).map_err(|_| {
            anyhow::anyhow!(
                "plugin `{name}`: {origin} exports `{export}` without a valid contract version"
            )
        })?;
        if !contract_compatible(&host_version, &version) {
            anyhow::bail!(
                "plugin `{name}`: {origin} was built for {CONTRACT_PACKAGE}@{version}, but this dax implements \
                 {CONTRACT_PACKAGE}@{CONTRACT_VERSION} (compatible: {}); rebuild the plugin against the WIT of this dax \
                 version or use a dax release that supports {version}",
                compatible_range(&host_version)
            );
        }
        if let Some(previous) = found.replace(role) {
            anyhow::bail!("plugin `{name}`: {origin} exports both `{previous}` and `{role}`; one world per plugin");
        }
    }
    found.ok_or_else(|| {
        anyhow::anyhow!(
            "plugin `{name}`: {origin} implements none of the dax plugin worlds (target, scanner, metric-provider, \
             strategy of {CONTRACT_PACKAGE}@{CONTRACT_VERSION}); its exports are: [{}]",
            exports.join(", ")
        )
    })
}

/// Semver compatibility as cargo reads it: same major, and same minor while major is 0.
fn contract_compatible(host: &semver::Version, plugin: &semver::Version) -> bool {
    if host.major != plugin.major {
        return false;
    }
    if host.major == 0 && host.minor != plugin.minor {
        return false;
    }
    // A plugin built against a newer minor/patch may rely on things this host lacks; the
    // linker catches missing imports, so only the major line matters here.
    true
}

fn compatible_range(host: &semver::Version) -> String {
    if host.major == 0 {
        format!("{}.{}.x", host.major, host.minor)
    } else {
        format!("{}.x", host.major)
    }
}

// ---------------------------------------------------------------- loaded plugins

enum WorldPre {
    Target(bindings::target::TargetPluginPre<PluginState>),
    Scanner(bindings::scanner::ScannerPluginPre<PluginState>),
    MetricProvider(bindings::metric_provider::MetricProviderPluginPre<PluginState>),
    Strategy(bindings::strategy::StrategyPluginPre<PluginState>),
}

/// The exports of one live instance.
pub(crate) enum World {
    Target(bindings::target::TargetPlugin),
    Scanner(bindings::scanner::ScannerPlugin),
    MetricProvider(bindings::metric_provider::MetricProviderPlugin),
    Strategy(bindings::strategy::StrategyPlugin),
}

/// A live instance: its store (memory, WASI state) and exports.
pub(crate) struct Warm {
    store: Store<PluginState>,
    world: World,
}

struct Inner {
    name: String,
    digest: String,
    origin: String,
    role: PluginRole,
    info: Option<PluginInfo>,
    engine: Engine,
    sandbox: Sandbox,
    pre: WorldPre,
    /// Warm instances ready for the next call. Calls carry their config, so any instance
    /// serves any deployment of this plugin; a faulted instance is never returned here.
    idle: Mutex<Vec<Warm>>,
}

/// A verified, compiled, linked plugin, ready to instantiate cheaply. Clones share it.
#[derive(Clone)]
pub struct LoadedPlugin {
    inner: Arc<Inner>,
}

/// What a call closure returns: a boxed future borrowing the instance.
pub(crate) type CallFuture<'a, R> = Pin<Box<dyn Future<Output = wasmtime::Result<R>> + Send + 'a>>;

impl LoadedPlugin {
    pub fn name(&self) -> &str {
        &self.inner.name
    }
    pub fn info(&self) -> &PluginInfo {
        self.inner
            .info
            .as_ref()
            .expect("describe() runs at load time")
    }
    pub fn role(&self) -> PluginRole {
        self.inner.role
    }
    /// sha256 (hex) of the component bytes.
    pub fn digest(&self) -> &str {
        &self.inner.digest
    }
    /// Where the component came from (`builtin:NAME`, a path or a URL).
    pub fn origin(&self) -> &str {
        &self.inner.origin
    }

    fn with_info(self, info: PluginInfo) -> Self {
        let mut inner =
            Arc::try_unwrap(self.inner).unwrap_or_else(|_| unreachable!("sole owner at load time"));
        inner.info = Some(info);
        LoadedPlugin {
            inner: Arc::new(inner),
        }
    }

    /// Create (and drop) one fresh instance: what a call pays when no warm instance is idle.
    /// Public for benchmarks.
    pub async fn instantiate_fresh(&self) -> anyhow::Result<()> {
        self.instantiate().await.map(drop)
    }

    /// A fresh instance from the `InstancePre`, in a new store with this plugin's sandbox.
    pub(crate) async fn instantiate(&self) -> anyhow::Result<Warm> {
        let state = self.inner.sandbox.new_state()?;
        let mut store = Store::new(&self.inner.engine, state);
        store.limiter(|s| &mut s.limiter);
        // Yield to the executor at every tick so a busy plugin never starves other tasks;
        // trap once the call has run past its deadline.
        store.epoch_deadline_callback(|ctx| {
            let state = ctx.data();
            if state.call_started.elapsed() > state.call_timeout {
                return Err(wasmtime::Error::new(DeadlineExceeded(state.call_timeout)));
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        let world = match &self.inner.pre {
            WorldPre::Target(pre) => World::Target(pre.instantiate_async(&mut store).await?),
            WorldPre::Scanner(pre) => World::Scanner(pre.instantiate_async(&mut store).await?),
            WorldPre::MetricProvider(pre) => {
                World::MetricProvider(pre.instantiate_async(&mut store).await?)
            }
            WorldPre::Strategy(pre) => World::Strategy(pre.instantiate_async(&mut store).await?),
        };
        Ok(Warm { store, world })
    }

    /// Run one call on a warm instance with the sandbox's deadline, turning every way a
    /// plugin can misbehave into a [`CallError::Fault`] that names the plugin.
    pub(crate) async fn call<R: Send>(
        &self,
        f: impl for<'a> FnOnce(&'a mut Store<PluginState>, &'a World) -> CallFuture<'a, R> + Send,
    ) -> CallResult<R> {
        let fault = |reason: String| CallError::Fault {
            plugin: self.inner.name.clone(),
            reason,
        };
        let warm = self.inner.idle.lock().unwrap().pop();
        let mut warm = match warm {
            Some(w) => w,
            None => self
                .instantiate()
                .await
                .map_err(|e| fault(format!("could not instantiate: {e:#}")))?,
        };
        let timeout = self.inner.sandbox.limits.call_timeout;
        warm.store.data_mut().begin_call();
        warm.store.set_epoch_deadline(1);
        let Warm { store, world } = &mut warm;
        // The epoch callback stops runaway guest code. Only HTTP can keep a call waiting in
        // the host (files are local), so only plugins with HTTP grants pay for a timer.
        let outcome = if self.inner.sandbox.http.is_empty() {
            Ok(f(store, world).await)
        } else {
            tokio::time::timeout(timeout + EPOCH_TICK * 5, f(store, world)).await
        };
        let denials = self.inner.sandbox.http.take_denials();
        match outcome {
            Ok(Ok(value)) => {
                let mut idle = self.inner.idle.lock().unwrap();
                if idle.len() < MAX_IDLE_INSTANCES {
                    idle.push(warm);
                }
                Ok(value)
            }
            Ok(Err(error)) => Err(fault(describe_fault(&error, &warm.store, &denials))),
            Err(_) => Err(fault(format!(
                "exceeded its deadline of {:?} per call (limits.call_timeout of [plugins.{}])",
                timeout, self.inner.name
            ))),
        }
    }

    /// Call `validate-config` with the plugin's config table.
    pub async fn validate_config(
        &self,
        config: &serde_json::Value,
    ) -> CallResult<Vec<ConfigProblem>> {
        let config = config.to_string();
        self.call(move |store, world| {
            Box::pin(async move { world.validate_config(store, &config).await })
        })
        .await
    }

    fn expect_role(&self, wanted: PluginRole) -> anyhow::Result<()> {
        if self.inner.role != wanted {
            anyhow::bail!(
                "plugin `{}` is a {} plugin, but it is used as a {wanted}; reference a {wanted} plugin here",
                self.inner.name,
                self.inner.role
            );
        }
        Ok(())
    }

    pub async fn target(&self, config: serde_json::Value) -> anyhow::Result<Arc<dyn Target>> {
        self.expect_role(PluginRole::Target)?;
        Ok(Arc::new(roles::WasmTarget::new(self.clone(), config)))
    }
    pub async fn strategy(&self, params: serde_json::Value) -> anyhow::Result<Arc<dyn Strategy>> {
        self.expect_role(PluginRole::Strategy)?;
        Ok(Arc::new(roles::WasmStrategy::new(self.clone(), params)))
    }
    pub async fn scanner(&self, config: serde_json::Value) -> anyhow::Result<Arc<dyn Scanner>> {
        self.expect_role(PluginRole::Scanner)?;
        Ok(Arc::new(roles::WasmScanner::new(self.clone(), config)))
    }
    pub async fn metric_provider(
        &self,
        config: serde_json::Value,
    ) -> anyhow::Result<Arc<dyn MetricProvider>> {
        self.expect_role(PluginRole::MetricProvider)?;
        Ok(Arc::new(roles::WasmMetricProvider::new(
            self.clone(),
            config,
        )))
    }

    pub(crate) fn max_output_bytes(&self) -> usize {
        (self.inner.sandbox.limits.max_output_kib as usize).saturating_mul(1024)
    }
}

/// The error the epoch callback raises when a call runs past its deadline.
#[derive(Debug)]
struct DeadlineExceeded(Duration);

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "exceeded its CPU deadline of {:?} per call", self.0)
    }
}

impl std::error::Error for DeadlineExceeded {}

fn describe_fault(
    error: &wasmtime::Error,
    store: &Store<PluginState>,
    denials: &[String],
) -> String {
    let state = store.data();
    let mut reason = if let Some(limit) = &state.limiter.exceeded {
        limit.clone()
    } else if let Some(deadline) = error.downcast_ref::<DeadlineExceeded>() {
        format!(
            "{deadline} (limits.call_timeout of [plugins.{}])",
            state.plugin
        )
    } else if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        format!("trapped: {trap}")
    } else {
        format!("{error:#}")
    };
    if !denials.is_empty() {
        reason.push_str(&format!("; denied during the call: {}", denials.join("; ")));
    }
    reason
}
