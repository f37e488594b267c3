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
//! calls run with a CPU deadline (epochs), a wall-clock deadline, a memory limit per
//! instance, an output-size cap and, for writable directories, a disk quota
//! ```

pub mod bindings;
pub mod builtin;
pub mod cache;
pub mod capabilities;
pub mod oci;
mod roles;
pub mod sandbox;
pub mod signature;
pub mod source;
pub mod spec;

pub use cache::CompileSource;
pub use source::resolve_source;
pub use spec::{DirGrant, Grants, HttpAuth, Limits, PluginSpec};
/// The wasmtime this host embeds, for benchmarks that call a component without `dax`'s
/// wrapper on the very same engine (`tests/benches/plugin_host.rs`).
pub use {wasmtime, wasmtime_wasi};

use crate::contract::{
    CallError, CallResult, MetricProvider, PluginInfo, PluginRole, Scanner, Strategy, Target,
};
use anyhow::Context as _;
use crossbeam_queue::ArrayQueue;
use sandbox::{CallLog, PluginState, Sandbox};
use std::collections::HashMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;
use wasmtime::component::{Component, Linker};
use wasmtime::{
    Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store, UpdateDeadline,
};

/// The contract version this host implements (`dax:plugin@...` in `wit/`).
pub const CONTRACT_VERSION: &str = "0.1.0";
const CONTRACT_PACKAGE: &str = "dax:plugin";

/// How often the epoch advances: the granularity of CPU deadlines.
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);
/// The largest memory one instance can get from the pooling allocator (its per-memory
/// slot), and without pooling (a 32-bit address space).
const POOLED_MEMORY_MIB: u64 = 1024;
const ON_DEMAND_MEMORY_MIB: u64 = 4096;
/// Plugin instances one host can have alive at once unless told otherwise. The pooling
/// allocator reserves every slot, with its async stack and that stack's guard page, when the
/// host starts: ~4.5 µs per slot, paid by every `dax` process before its first plugin call
/// (1,000 slots took 4.8 ms; see BENCHMARKS.md). One deployment keeps at most
/// `MAX_IDLE_INSTANCES` idle instances per plugin plus one per call in flight, so a `dax`
/// run needs a few dozen.
pub const DEFAULT_MAX_INSTANCES: u32 = 256;
/// Environment variable that overrides [`HostOptions::max_instances`].
pub const MAX_INSTANCES_ENV: &str = "DAX_MAX_INSTANCES";
/// Most instance slots a host may reserve (each reserves a memory slot's address space).
const MAX_INSTANCES_CEILING: u32 = 20_000;
/// Longest plugin name or version `describe` may return.
const MAX_IDENTITY_BYTES: usize = 256;
/// Most problems one `validate-config` call may report.
const MAX_CONFIG_PROBLEMS: usize = 1_000;

/// Why a plugin could not be loaded, with the field of its `[plugins.NAME]` table to fix
/// (`source`, `sha256`, `limits.memory_mib`, `grants.dirs[1].host`, ...) and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// Path under `[plugins.NAME]`, e.g. `grants.dirs[1].host`.
    pub field: String,
    pub message: String,
    pub help: String,
}

impl LoadError {
    pub fn new(
        field: impl Into<String>,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Self {
        LoadError {
            field: field.into(),
            message: message.into(),
            help: help.into(),
        }
    }

    /// A problem with the plugin's code: where it comes from, what it is, what it exports.
    pub fn source(error: impl std::fmt::Display) -> Self {
        LoadError::new(
            "source",
            error.to_string(),
            "check `source` (builtin:NAME, a path relative to this file, or a URL) and `sha256`; `dax plugin list` shows the builtins",
        )
    }
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for LoadError {}

impl From<anyhow::Error> for LoadError {
    fn from(e: anyhow::Error) -> Self {
        match e.downcast::<LoadError>() {
            Ok(typed) => typed,
            Err(e) => LoadError::source(format!("{e:#}")),
        }
    }
}
/// Idle warm instances kept per loaded plugin.
const MAX_IDLE_INSTANCES: usize = 8;
/// Largest `.wasm` whose compile-cache entry is loaded on the async worker itself.
const INLINE_CACHE_LOAD_MAX_WASM: u64 = 1024 * 1024;

/// Host-wide settings for plugin execution.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Where compiled components are cached (default: `~/.cache/dax/components`).
    pub cache_dir: PathBuf,
    /// Use wasmtime's pooling allocator (falls back to on-demand if the machine refuses
    /// the address-space reservation).
    pub pooling: bool,
    /// With pooling: most plugin instances alive at once (idle ones and those in a call),
    /// across every plugin of this host; `$DAX_MAX_INSTANCES` overrides it. Every slot is
    /// reserved at start-up, so a larger number costs start-up time. (On-demand allocation
    /// has no such bound.)
    pub max_instances: u32,
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
            max_instances: DEFAULT_MAX_INSTANCES,
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
}

impl PluginHost {
    pub fn new(options: HostOptions) -> anyhow::Result<Self> {
        let max_instances = max_instances(
            options.max_instances,
            std::env::var(MAX_INSTANCES_ENV).ok().as_deref(),
        )?;
        let (engine, pooling) = if options.pooling {
            match Engine::new(&engine_config(Some(max_instances))) {
                Ok(engine) => (engine, true),
                Err(e) => {
                    tracing::debug!(
                        "pooling allocator unavailable ({e:#}); using on-demand allocation"
                    );
                    (Engine::new(&engine_config(None))?, false)
                }
            }
        } else {
            (Engine::new(&engine_config(None))?, false)
        };

        let mut linker = Linker::new(&engine);
        // WASI p2 (clocks, random, stdio, filesystem through granted preopens; sockets are
        // linked but every address is denied) and wasi:http (checked per destination).
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        capabilities::fs::refuse_escaping_symlinks(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        capabilities::add_to_linker(&mut linker)?;

        // The epoch advances for as long as anything holds the engine: the host or a plugin
        // that outlives it (whose CPU deadlines still need ticks). Holding it weakly means
        // the last owner, not this thread, tears down the engine and its pooled memory.
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("dax-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        let cache = cache::CompileCache::new(&options.cache_dir, &engine)?;
        Ok(PluginHost {
            engine,
            linker: Arc::new(linker),
            cache,
            compiled: Mutex::new(HashMap::new()),
            pooling,
        })
    }

    pub fn compile_cache(&self) -> &cache::CompileCache {
        &self.cache
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// The linker every plugin is instantiated with (WASI, wasi:http, `dax:host/*`).
    pub fn linker(&self) -> &Linker<PluginState> {
        &self.linker
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
    ) -> Result<LoadedPlugin, LoadError> {
        self.load_reporting(name, spec, base_dir)
            .await
            .map(|(p, _)| p)
    }

    /// Like [`load`](Self::load); also says whether the compile cache answered.
    pub async fn load_reporting(
        &self,
        name: &str,
        spec: &PluginSpec,
        base_dir: &Path,
    ) -> Result<(LoadedPlugin, CompileSource), LoadError> {
        let wasm = source::resolve_for_load(name, spec, base_dir, &self.cache)
            .await
            .map_err(LoadError::from)?;
        self.load_checked(name, spec, base_dir, wasm, true).await
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
    ) -> Result<(LoadedPlugin, CompileSource), LoadError> {
        let wasm = source::Wasm::from_bytes(bytes, origin);
        self.load_checked(name, spec, base_dir, wasm, true).await
    }

    /// Load a plugin to show what it is and what it imports (`dax plugin inspect`), whatever
    /// its entry grants: the only load that does not refuse ungranted capability imports.
    pub async fn load_for_inspection(
        &self,
        name: &str,
        spec: &PluginSpec,
        base_dir: &Path,
    ) -> Result<LoadedPlugin, LoadError> {
        let wasm = source::resolve_for_load(name, spec, base_dir, &self.cache)
            .await
            .map_err(LoadError::from)?;
        self.load_checked(name, spec, base_dir, wasm, false)
            .await
            .map(|(p, _)| p)
    }

    async fn load_checked(
        &self,
        name: &str,
        spec: &PluginSpec,
        base_dir: &Path,
        wasm: source::Wasm<'_>,
        require_grants: bool,
    ) -> Result<(LoadedPlugin, CompileSource), LoadError> {
        self.check_limits(name, &spec.limits)?;
        let digest = wasm.digest.clone();
        let origin = wasm.origin.clone();
        let origin = origin.as_str();
        if let Some(pinned) = &spec.sha256 {
            let pinned = pinned
                .trim()
                .trim_start_matches("sha256:")
                .to_ascii_lowercase();
            if pinned != digest {
                return Err(LoadError::new(
                    "sha256",
                    format!(
                        "plugin `{name}`: sha256 of {origin} is {digest}, but [plugins.{name}] pins {pinned}; \
                         the file changed or is not the one you reviewed — if the new file is intended, pin its digest"
                    ),
                    "compare the file with the one you reviewed; pin its digest (`sha256sum FILE`) only if the change is intended",
                ));
            }
        }
        let header = wasm.header().map_err(|e| {
            LoadError::source(format!("plugin `{name}`: cannot read {origin}: {e}"))
        })?;
        check_is_component(name, origin, &header).map_err(LoadError::source)?;
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
                // Loading and compiling block (a large JS component compiles for seconds):
                // keep them off the async workers. A cache hit needs only the digest; the
                // bytes are copied for the blocking thread only when they must be compiled.
                // A small component's entry loads in a few hundred microseconds, of which a
                // hop to the blocking pool would be a tenth: load it right here.
                let cached = if wasm.len() <= INLINE_CACHE_LOAD_MAX_WASM {
                    self.cache.get(&self.engine, &digest)
                } else {
                    let (engine, cache) = (self.engine.clone(), self.cache.clone());
                    let key = digest.clone();
                    tokio::task::spawn_blocking(move || cache.get(&engine, &key)).await?
                };
                if let Some(component) = cached {
                    compiled = CompileSource::Cache;
                    return anyhow::Ok(component);
                }
                let (engine, cache) = (self.engine.clone(), self.cache.clone());
                let digest = digest.clone();
                let bytes = wasm.into_bytes()?.into_owned();
                let component =
                    tokio::task::spawn_blocking(move || cache.compile(&engine, &digest, &bytes))
                        .await?
                        .with_context(|| {
                            format!("plugin `{name}`: {origin} is not a valid component")
                        })?;
                compiled = CompileSource::Compiled;
                anyhow::Ok(component)
            })
            .await
            .map_err(LoadError::from)?
            .clone();
        let world =
            detect_world(name, origin, &component, &self.engine).map_err(LoadError::source)?;
        let imports: Vec<String> = component
            .component_type()
            .imports(&self.engine)
            .map(|(n, _)| n.to_string())
            .collect();
        if require_grants {
            capabilities::check_imports_granted(name, &imports, &spec.grants)?;
        }
        let instance_pre = self.linker.instantiate_pre(&component).map_err(|e| {
            LoadError::source(format!(
                "plugin `{name}`: {origin} needs an import this host does not provide ({e:#}); \
                 it may be built for a newer dax or ask for a capability that does not exist"
            ))
        })?;
        let pre = match world {
            PluginRole::Target => bindings::target::TargetPluginPre::new(instance_pre)
                .map(WorldPre::Target),
            PluginRole::Scanner => bindings::scanner::ScannerPluginPre::new(instance_pre)
                .map(WorldPre::Scanner),
            PluginRole::MetricProvider => {
                bindings::metric_provider::MetricProviderPluginPre::new(instance_pre)
                    .map(WorldPre::MetricProvider)
            }
            PluginRole::Strategy => bindings::strategy::StrategyPluginPre::new(instance_pre)
                .map(WorldPre::Strategy),
        }
        .map_err(|e| {
            LoadError::source(format!(
                "plugin `{name}`: {origin} does not match the `{world}` world of this dax ({e:#}); rebuild it against the WIT of this dax version"
            ))
        })?;
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
            idle: ArrayQueue::new(MAX_IDLE_INSTANCES),
            capabilities: capabilities::imported(&imports),
        };
        let plugin = LoadedPlugin {
            inner: Arc::new(inner),
        };
        let info = plugin
            .call(|store, world| world.describe(store))
            .await
            .and_then(|info| plugin.check_describe(info))
            .map_err(|e| {
                let message = format!("plugin `{name}`: `describe` failed: {e}");
                match fault_limit(&e) {
                    Some(key) => LoadError::new(key, message, fault_help(&e)),
                    None => LoadError::source(message),
                }
            })?;
        if info.role != world {
            return Err(LoadError::source(format!(
                "plugin `{name}`: describe() says role `{}` but the component exports the `{}` world; fix the plugin",
                info.role, world
            )));
        }
        let plugin = plugin.with_info(info);
        Ok((plugin, compiled))
    }

    /// Refuse limits this host cannot honour, instead of silently capping them.
    fn check_limits(&self, name: &str, limits: &Limits) -> Result<(), LoadError> {
        let (most, why) = if self.pooling {
            (POOLED_MEMORY_MIB, "the pooling allocator's memory slot")
        } else {
            (ON_DEMAND_MEMORY_MIB, "a 32-bit Wasm memory")
        };
        if limits.memory_mib > most {
            return Err(LoadError::new(
                "limits.memory_mib",
                format!(
                    "plugin `{name}`: limits.memory_mib = {} is more than this host can give one plugin instance ({most} MiB, {why})",
                    limits.memory_mib
                ),
                format!("set `limits.memory_mib` of [plugins.{name}] to at most {most}"),
            ));
        }
        let zero = [
            ("memory_mib", limits.memory_mib == 0),
            ("max_output_kib", limits.max_output_kib == 0),
            ("call_timeout", limits.call_timeout.is_zero()),
            (
                "wall_timeout",
                limits.wall_timeout.is_some_and(|w| w.is_zero()),
            ),
        ];
        if let Some((key, _)) = zero.iter().find(|(_, is_zero)| *is_zero) {
            return Err(LoadError::new(
                format!("limits.{key}"),
                format!("plugin `{name}`: limits.{key} must be above zero"),
                format!("raise `limits.{key}` of [plugins.{name}] or remove it for the default"),
            ));
        }
        Ok(())
    }
}

/// `requested` instance slots, or `override_text` (the value of `$DAX_MAX_INSTANCES`) when
/// set; refused outside 1..=[`MAX_INSTANCES_CEILING`].
fn max_instances(requested: u32, override_text: Option<&str>) -> anyhow::Result<u32> {
    let (value, from) = match override_text.map(str::trim).filter(|t| !t.is_empty()) {
        Some(text) => (
            text.parse::<u32>().map_err(|_| {
                anyhow::anyhow!(
                    "{MAX_INSTANCES_ENV}=`{text}` is not a whole number; set it to how many plugin instances may be alive at once (default {DEFAULT_MAX_INSTANCES}) or unset it"
                )
            })?,
            MAX_INSTANCES_ENV,
        ),
        None => (requested, "HostOptions::max_instances"),
    };
    if !(1..=MAX_INSTANCES_CEILING).contains(&value) {
        anyhow::bail!(
            "{from} is {value}: how many plugin instances may be alive at once must be from 1 to {MAX_INSTANCES_CEILING}"
        );
    }
    Ok(value)
}

/// The engine's settings; `pooled_instances` is the pooling allocator's slot count, `None`
/// for on-demand allocation.
fn engine_config(pooled_instances: Option<u32>) -> Config {
    let mut config = Config::new();
    config.wasm_component_model(true);
    config.epoch_interruption(true);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if let Some(instances) = pooled_instances {
        let mut pool = PoolingAllocationConfig::default();
        // A store keeps the async stack of its last call, so every live instance can hold
        // one: as many stacks as instances.
        pool.total_component_instances(instances)
            .total_stacks(instances)
            .total_core_instances(instances.saturating_mul(4))
            .total_memories(instances.saturating_mul(2))
            .total_tables(instances.saturating_mul(2))
            .max_memories_per_component(8)
            .max_tables_per_component(8)
            .max_core_instances_per_component(50)
            // Per-plugin memory limits are enforced by the store limiter; this is the
            // ceiling one memory can reach (`check_limits` refuses a larger memory_mib).
            .max_memory_size((POOLED_MEMORY_MIB as usize) << 20);
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

/// A live instance: its store (memory, WASI state), exports and call log.
pub(crate) struct Warm {
    store: Store<PluginState>,
    /// Boxed: the generated exports are a few hundred bytes, and a warm instance moves in and
    /// out of the idle list on every call.
    world: Box<World>,
    log: CallLog,
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
    /// Lock-free: a warm call pops and pushes one.
    idle: ArrayQueue<Warm>,
    /// The capabilities the component imports (`dax:host/kube`, `wasi:http`, ...).
    capabilities: Vec<String>,
}

/// A verified, compiled, linked plugin, ready to instantiate cheaply. Clones share it.
#[derive(Clone)]
pub struct LoadedPlugin {
    inner: Arc<Inner>,
}

/// What a call's future ends with: the instance's store, which the future owns while the
/// guest runs (so it needs no box to borrow it), and the guest's answer.
pub(crate) type Answer<R> = (Store<PluginState>, wasmtime::Result<R>);

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
    /// The capabilities the component imports (`dax:host/kube`, `wasi:http/outgoing-handler`, ...).
    pub fn capabilities(&self) -> &[String] {
        &self.inner.capabilities
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
        // trap once the call's guest code has run for more ticks than its CPU budget.
        store.epoch_deadline_callback(|mut ctx| {
            let state = ctx.data_mut();
            state.cpu_ticks += 1;
            if state.cpu_ticks > state.cpu_tick_budget {
                return Err(wasmtime::Error::new(DeadlineExceeded::Cpu(
                    state.call_timeout,
                )));
            }
            Ok(UpdateDeadline::Yield(1))
        });
        store.set_epoch_deadline(1);
        let world = match &self.inner.pre {
            WorldPre::Target(pre) => pre.instantiate_async(&mut store).await.map(World::Target),
            WorldPre::Scanner(pre) => pre.instantiate_async(&mut store).await.map(World::Scanner),
            WorldPre::MetricProvider(pre) => pre
                .instantiate_async(&mut store)
                .await
                .map(World::MetricProvider),
            WorldPre::Strategy(pre) => pre.instantiate_async(&mut store).await.map(World::Strategy),
        };
        match world {
            Ok(world) => {
                // What instantiation printed does not count against the first call's budget.
                let log = store.data().call_log();
                log.end_call();
                Ok(Warm {
                    store,
                    world: Box::new(world),
                    log,
                })
            }
            // Memories are created (and limited) while instantiating: say which limit.
            Err(e) => match store.data_mut().limiter.exceeded.take() {
                Some(limit) => Err(anyhow::anyhow!(limit)),
                None => match e.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
                    Some(full) => Err(anyhow::anyhow!(slots_exhausted(full))),
                    None => Err(anyhow::Error::from(e)),
                },
            },
        }
    }

    /// Run one call on a warm instance within the sandbox's deadlines (CPU and wall clock)
    /// and disk quota, turning every way a plugin can misbehave into a [`CallError::Fault`]
    /// that names the plugin and the limit. An instance whose call failed is dropped, never
    /// reused.
    ///
    /// `f` gets the instance's store and exports and returns the guest call, which hands the
    /// store back with the answer.
    pub(crate) async fn call<R, Fut>(
        &self,
        f: impl FnOnce(Store<PluginState>, &World) -> Fut,
    ) -> CallResult<R>
    where
        Fut: Future<Output = Answer<R>>,
    {
        let fault = |reason: String| CallError::Fault {
            plugin: self.inner.name.clone(),
            reason,
        };
        let wall = self.inner.sandbox.limits.wall_timeout();
        let warm = self.inner.idle.pop();
        // When the call's wall clock started, if it had to instantiate (see below otherwise).
        let mut started = None;
        let Warm {
            mut store,
            world,
            log,
        } = match warm {
            Some(w) => w,
            None => {
                let now = tokio::time::Instant::now();
                started = Some(now);
                // Boxed, like every path a warm call does not take: the call's future (and
                // the box `async_trait` puts it in) is sized by its largest path.
                match Box::pin(tokio::time::timeout_at(now + wall, self.instantiate())).await {
                    Ok(Ok(w)) => w,
                    Ok(Err(e)) => return Err(fault(format!("could not instantiate: {e:#}"))),
                    Err(_) => return Err(fault(self.wall_reason())),
                }
            }
        };
        store.data_mut().begin_call();
        store.set_epoch_deadline(1);
        let outcome = if self.inner.sandbox.quota.is_empty() {
            let mut run = std::pin::pin!(f(store, &world));
            // Most calls finish in their first poll, and pay for neither a clock read nor a
            // timer. On a warm instance the wall clock starts when the call first waits:
            // until then its guest code ran for at most one epoch tick, after which it yields.
            let first = std::future::poll_fn(|cx| Poll::Ready(run.as_mut().poll(cx))).await;
            match first {
                Poll::Ready(answer) => Outcome::Done(answer),
                Poll::Pending => {
                    let started = started.unwrap_or_else(tokio::time::Instant::now);
                    Outcome::from(Box::pin(tokio::time::timeout_at(started + wall, run)).await)
                }
            }
        } else {
            Box::pin(self.run_within_quota(f(store, &world), started)).await
        };
        let result = match outcome {
            Outcome::Done((store, Ok(value))) => {
                // Only a fault's message uses the denials: `end_call` forgets them.
                log.end_call();
                // A full idle list drops the instance.
                let _ = self.inner.idle.push(Warm { store, world, log });
                return Ok(value);
            }
            Outcome::Done((store, Err(error))) => Err(fault(describe_fault(
                &error,
                store.data(),
                &log.take_denials(),
            ))),
            // The call was cut off inside the instance, and its store dropped with it: the
            // instance is never reused.
            Outcome::WallClock => Err(fault(with_denials(self.wall_reason(), &log.take_denials()))),
            Outcome::Quota(reason) => Err(fault(with_denials(reason, &log.take_denials()))),
        };
        log.end_call();
        result
    }

    fn wall_reason(&self) -> String {
        format!(
            "exceeded its wall-clock deadline of {} per call (limits.wall_timeout of [plugins.{}])",
            spec::duration_str::format(self.inner.sandbox.limits.wall_timeout()),
            self.inner.name
        )
    }

    /// A call of a plugin with a disk quota: the writable trees are measured before it, every
    /// [`capabilities::fs::QUOTA_POLL`] while it waits and after it ends, since a call that
    /// ended well can still have left a tree over its quota. Out of line (and boxed by the
    /// caller), so the futures of calls without a quota stay small.
    async fn run_within_quota<R>(
        &self,
        run: impl Future<Output = Answer<R>>,
        started: Option<tokio::time::Instant>,
    ) -> Outcome<R> {
        let quota = &self.inner.sandbox.quota;
        let usage = || {
            let quota = quota.clone();
            async move {
                tokio::task::spawn_blocking(move || quota.usage())
                    .await
                    .unwrap_or_default()
            }
        };
        let before = usage().await;
        let started = started.unwrap_or_else(tokio::time::Instant::now);
        let wall = self.inner.sandbox.limits.wall_timeout();
        let outcome = tokio::select! {
            result = tokio::time::timeout_at(started + wall, run) => Outcome::from(result),
            reason = watch_quota(quota.clone(), &before) => Outcome::Quota(reason),
        };
        match outcome {
            Outcome::Done((store, Ok(value))) => match quota.exceeded(&before, &usage().await) {
                Some(reason) => Outcome::Quota(reason),
                None => Outcome::Done((store, Ok(value))),
            },
            other => other,
        }
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
        self.inner.sandbox.limits.max_output_bytes()
    }

    /// A fault for a value larger than `limits.max_output_kib`.
    pub(crate) fn too_big(&self, what: &str, bytes: usize) -> CallError {
        CallError::Fault {
            plugin: self.inner.name.clone(),
            reason: format!(
                "returned {what} of {} KiB, more than its limit of {} KiB (limits.max_output_kib of [plugins.{}])",
                bytes.div_ceil(1024),
                self.max_output_bytes() / 1024,
                self.inner.name
            ),
        }
    }

    /// Bound what `describe` returned: identity strings short, the whole within
    /// `limits.max_output_kib`.
    fn check_describe(&self, info: PluginInfo) -> CallResult<PluginInfo> {
        let identity = info.name.len().max(info.version.len());
        if identity > MAX_IDENTITY_BYTES {
            return Err(CallError::Fault {
                plugin: self.inner.name.clone(),
                reason: format!(
                    "returned a name or version of {identity} bytes from describe(); at most {MAX_IDENTITY_BYTES} are accepted"
                ),
            });
        }
        let size = info.name.len()
            + info.version.len()
            + info.description.len()
            + info.config_schema.len();
        if size > self.max_output_bytes() {
            return Err(self.too_big("a describe() answer", size));
        }
        // Shown by `dax plugin list` and in messages: one line each, no terminal controls.
        let line = |text: String| match capabilities::log::escape(&text) {
            std::borrow::Cow::Borrowed(_) => text,
            std::borrow::Cow::Owned(escaped) => escaped,
        };
        Ok(PluginInfo {
            name: line(info.name),
            version: line(info.version),
            description: line(info.description),
            ..info
        })
    }
}

/// How a call ended.
enum Outcome<R> {
    Done(Answer<R>),
    WallClock,
    Quota(String),
}

impl<R> From<Result<Answer<R>, tokio::time::error::Elapsed>> for Outcome<R> {
    fn from(r: Result<Answer<R>, tokio::time::error::Elapsed>) -> Self {
        match r {
            Ok(done) => Outcome::Done(done),
            Err(_) => Outcome::WallClock,
        }
    }
}

/// Measure the writable trees every [`capabilities::fs::QUOTA_POLL`]; resolves with the reason once
/// one is over its quota (and never otherwise).
async fn watch_quota(quota: Arc<capabilities::fs::DiskQuota>, before: &[u64]) -> String {
    loop {
        tokio::time::sleep(capabilities::fs::QUOTA_POLL).await;
        let q = quota.clone();
        let Ok(now) = tokio::task::spawn_blocking(move || q.usage()).await else {
            continue;
        };
        if let Some(reason) = quota.exceeded(before, &now) {
            return reason;
        }
    }
}

/// The limit key (`limits.call_timeout`, `grants.dirs[0].quota_mib`, ...) a fault names,
/// when a limit stopped the call.
pub fn fault_limit(error: &CallError) -> Option<String> {
    let CallError::Fault { reason, .. } = error else {
        return None;
    };
    const KEYS: [&str; 4] = [
        "limits.call_timeout",
        "limits.wall_timeout",
        "limits.memory_mib",
        "limits.max_output_kib",
    ];
    if let Some(key) = KEYS.iter().find(|k| reason.contains(*k)) {
        return Some(key.to_string());
    }
    let pos = reason.find("grants.dirs[")?;
    Some(
        reason[pos..]
            .chars()
            .take_while(|c| *c != '`' && *c != ' ')
            .collect(),
    )
}

/// The help line for a plugin fault: the limit to raise when a limit stopped it.
pub fn fault_help(error: &CallError) -> String {
    let plugin = match error {
        CallError::Fault { plugin, .. } => plugin,
        _ => return "this is an error the plugin reported; see the message".into(),
    };
    match fault_limit(error) {
        Some(key) => format!(
            "raise `{key}` of [plugins.{plugin}] if the plugin really needs more; otherwise fix or replace the plugin"
        ),
        None => "this is a fault of the plugin (it trapped or broke the contract); try another version of the plugin".into(),
    }
}

/// The error the epoch callback raises when a call's guest code runs past its CPU budget.
#[derive(Debug)]
enum DeadlineExceeded {
    Cpu(Duration),
}

impl std::fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DeadlineExceeded::Cpu(d) => write!(
                f,
                "exceeded its CPU deadline of {} per call",
                spec::duration_str::format(*d)
            ),
        }
    }
}

impl std::error::Error for DeadlineExceeded {}

fn describe_fault(error: &wasmtime::Error, state: &PluginState, denials: &[String]) -> String {
    let reason = if let Some(limit) = &state.limiter.exceeded {
        limit.clone()
    } else if let Some(deadline) = error.downcast_ref::<DeadlineExceeded>() {
        format!(
            "{deadline} (limits.call_timeout of [plugins.{}])",
            state.plugin
        )
    } else if let Some(full) = error.downcast_ref::<wasmtime::PoolConcurrencyLimitError>() {
        slots_exhausted(full)
    } else if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        let mut reason = format!("trapped: {trap}");
        // A Rust guest prints its panic message to stderr just before trapping.
        if let Some(said) = state.output.lock().stderr_tail() {
            reason.push_str(&format!("; its last stderr lines: {said}"));
        }
        reason
    } else {
        capabilities::log::cut(&format!("{error:#}"), 4096).into_owned()
    };
    with_denials(reason, denials)
}

/// Why an instance or a call's stack could not be had: every pooled slot is taken.
fn slots_exhausted(full: &wasmtime::PoolConcurrencyLimitError) -> String {
    format!(
        "every plugin instance slot of this dax process is in use ({full}); \
         set {MAX_INSTANCES_ENV} above it (default {DEFAULT_MAX_INSTANCES})"
    )
}

/// A fault's reason followed by what the host refused during the call, which often
/// explains it (a denied HTTP destination, an escaping symlink).
fn with_denials(mut reason: String, denials: &[String]) -> String {
    if !denials.is_empty() {
        reason.push_str(&format!("; denied during the call: {}", denials.join("; ")));
    }
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_instances_takes_the_option_unless_the_environment_overrides_it() {
        assert_eq!(max_instances(40, None).unwrap(), 40);
        assert_eq!(max_instances(40, Some(" ")).unwrap(), 40);
        assert_eq!(max_instances(40, Some(" 900 ")).unwrap(), 900);
    }

    #[test]
    fn max_instances_refuses_what_it_cannot_reserve_and_names_the_variable() {
        let bad = max_instances(40, Some("lots")).unwrap_err().to_string();
        assert!(bad.contains("DAX_MAX_INSTANCES=`lots`"), "{bad}");
        let zero = max_instances(40, Some("0")).unwrap_err().to_string();
        assert!(zero.contains("DAX_MAX_INSTANCES is 0"), "{zero}");
        let huge = max_instances(MAX_INSTANCES_CEILING + 1, None)
            .unwrap_err()
            .to_string();
        assert!(huge.contains("HostOptions::max_instances"), "{huge}");
    }
}
