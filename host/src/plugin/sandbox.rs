//! The sandbox one plugin instance runs in: WASI with nothing inherited, granted
//! directories only (writable ones under a size quota), outbound HTTP only to granted
//! destinations, a memory limiter for the whole instance and a CPU budget per call (the
//! wall-clock deadline is enforced around the call, in `plugin::LoadedPlugin::call`).
//! Everything here is built from the plugin's TOML entry.

use super::capabilities::aws::AwsAccess;
use super::capabilities::fs::{DiskQuota, QuotaDir};
use super::capabilities::http::{HttpHooks, HttpPolicy};
use super::capabilities::kube::KubeAccess;
use super::capabilities::log::{PluginOutput, Stream};
use super::spec::{Grants, Limits};
use super::LoadError;
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// Everything granted to one plugin, resolved and shared by all its instances.
#[derive(Debug)]
pub struct Sandbox {
    pub plugin: Arc<str>,
    pub limits: Limits,
    pub http: Arc<HttpPolicy>,
    dirs: Vec<ResolvedDir>,
    /// The writable grants, whose size is watched during every call.
    pub quota: Arc<DiskQuota>,
    /// `dax:host/kube` access (client, discovery cache), shared by all instances.
    pub kube: Option<Arc<KubeAccess>>,
    /// `dax:host/aws` access (credentials, HTTP client), shared by all instances.
    pub aws: Option<Arc<AwsAccess>>,
}

#[derive(Debug)]
struct ResolvedDir {
    host: std::path::PathBuf,
    guest: String,
    writable: bool,
}

impl Sandbox {
    /// Resolve a plugin's grants; relative directories are taken from `base_dir`.
    pub fn new(
        plugin: &str,
        grants: &Grants,
        limits: &Limits,
        base_dir: &Path,
    ) -> Result<Self, LoadError> {
        let mut dirs = Vec::new();
        let mut quota = Vec::new();
        for (i, dir) in grants.dirs.iter().enumerate() {
            let host = if dir.host.is_absolute() {
                dir.host.clone()
            } else {
                base_dir.join(&dir.host)
            };
            if !host.is_dir() {
                return Err(LoadError::new(
                    format!("grants.dirs[{i}].host"),
                    format!(
                        "plugin `{plugin}`: grants.dirs[{i}].host `{}` is not a directory",
                        host.display()
                    ),
                    "create the directory or fix the path (relative paths start at this file's folder)",
                ));
            }
            let guest = match &dir.guest {
                Some(g) => g.clone(),
                None => format!(
                    "/{}",
                    host.file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default()
                ),
            };
            if dir.writable {
                quota.push(QuotaDir {
                    index: i,
                    host: host.clone(),
                    guest: guest.clone(),
                    limit: dir.quota_bytes(),
                });
            }
            dirs.push(ResolvedDir {
                host,
                guest,
                writable: dir.writable,
            });
        }
        let http = HttpPolicy::new(plugin, &grants.http, &grants.http_auth)
            .map_err(|e| LoadError::new("grants.http", format!("{e:#}"), "fix the grant"))?;
        // Each capability checks its own grant and builds its per-plugin state.
        let kube = grants
            .kube
            .as_ref()
            .map(|grant| {
                KubeAccess::from_grant(plugin, grant, base_dir, limits.wall_timeout()).map(Arc::new)
            })
            .transpose()?;
        let aws = grants
            .aws
            .as_ref()
            .map(|grant| AwsAccess::from_grant(plugin, grant, limits.wall_timeout()).map(Arc::new))
            .transpose()?;
        Ok(Sandbox {
            plugin: plugin.into(),
            limits: limits.clone(),
            http: Arc::new(http),
            dirs,
            quota: Arc::new(DiskQuota::new(plugin, quota)),
            kube,
            aws,
        })
    }

    /// A fresh store state: WASI context with no env, no args, no sockets, stdio into
    /// `tracing`, and only the granted preopens.
    pub fn new_state(&self) -> anyhow::Result<PluginState> {
        let output = Arc::new(PerCall::new(PluginOutput::new(self.plugin.clone())));
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(LogStream {
            output: output.clone(),
            stream: Stream::Stdout,
        })
        .stderr(LogStream {
            output: output.clone(),
            stream: Stream::Stderr,
        })
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false);
        for dir in &self.dirs {
            let perms = if dir.writable {
                FsPerms::ReadWrite
            } else {
                FsPerms::ReadOnly
            };
            wasi.preopened_dir(&dir.host, &dir.guest, perms)?;
        }
        let denials = Arc::new(PerCall::new(Vec::new()));
        Ok(PluginState {
            plugin: self.plugin.clone(),
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http_ctx: WasiHttpCtx::new(),
            http_hooks: HttpHooks::new(self.http.clone(), denials.clone()),
            limiter: MemoryLimiter {
                plugin: self.plugin.clone(),
                max_bytes: (self.limits.memory_mib as usize).saturating_mul(1024 * 1024),
                memories: 0,
                memory_bytes: 0,
                table_bytes: 0,
                exceeded: None,
            },
            cpu_ticks: 0,
            cpu_tick_budget: ticks_for(self.limits.call_timeout),
            call_timeout: self.limits.call_timeout,
            output,
            denials,
            kube: self.kube.clone(),
            aws: self.aws.clone(),
        })
    }
}

/// How many epoch ticks of running guest code make up `timeout` (at least one).
fn ticks_for(timeout: Duration) -> u64 {
    (timeout.as_millis() / super::EPOCH_TICK.as_millis()).max(1) as u64
}

/// The data of one wasmtime `Store`: one plugin instance.
pub struct PluginState {
    pub plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    http_ctx: WasiHttpCtx,
    http_hooks: HttpHooks,
    pub limiter: MemoryLimiter,
    /// Epoch ticks in which this call's guest code ran; the epoch callback counts them.
    pub cpu_ticks: u64,
    pub cpu_tick_budget: u64,
    pub call_timeout: Duration,
    /// What the plugin prints or logs, bounded per call.
    pub output: Arc<PerCall<PluginOutput>>,
    /// What the host refused during the current call (HTTP destinations, symlinks).
    pub denials: Arc<PerCall<Vec<String>>>,
    /// `dax:host/kube` access, when granted.
    pub kube: Option<Arc<KubeAccess>>,
    /// `dax:host/aws` access, when granted.
    pub aws: Option<Arc<AwsAccess>>,
}

impl PluginState {
    /// Reset the per-call CPU and memory bookkeeping before a call. Output and denials are
    /// reset when the previous call ends ([`CallLog::end_call`]), so the common path
    /// takes no lock here.
    pub fn begin_call(&mut self) {
        self.cpu_ticks = 0;
        self.limiter.exceeded = None;
    }

    /// Record (and log) something the host refused during this call (the first few are kept).
    pub fn deny(&self, reason: String) {
        push_denial(&self.plugin, &self.denials, reason);
    }

    /// This instance's output and denials, to keep beside its store: a call cut off by its
    /// wall-clock deadline drops the store, and its fault still names what was refused.
    pub fn call_log(&self) -> CallLog {
        CallLog {
            output: self.output.clone(),
            denials: self.denials.clone(),
        }
    }
}

/// What one instance printed and was refused during the current call.
#[derive(Clone)]
pub struct CallLog {
    output: Arc<PerCall<PluginOutput>>,
    denials: Arc<PerCall<Vec<String>>>,
}

impl CallLog {
    /// After a call (and after its fault, if any, was described with
    /// [`take_denials`](Self::take_denials)): emit the output it left unterminated, reset the
    /// output budget and forget the denials, ready for the next call.
    pub fn end_call(&self) {
        if let Some(mut output) = self.output.lock_if_written() {
            output.end_call();
            output.begin_call();
        }
        if let Some(mut denials) = self.denials.lock_if_written() {
            denials.clear();
        }
    }

    /// What the host refused during this call (drained).
    pub fn take_denials(&self) -> Vec<String> {
        self.denials
            .lock_if_written()
            .map(|mut denials| std::mem::take(&mut *denials))
            .unwrap_or_default()
    }
}

/// Per-call bookkeeping that several parts of the host write (stdio, capabilities) and the
/// call path resets after every call. Most calls write nothing, and their reset then takes
/// no lock: one plain load instead of two atomic read-modify-writes per record.
pub struct PerCall<T> {
    /// Set by every [`lock`](Self::lock), cleared by the reset; both while holding the lock.
    written: AtomicBool,
    value: Mutex<T>,
}

impl<T> PerCall<T> {
    pub fn new(value: T) -> Self {
        PerCall {
            written: AtomicBool::new(false),
            value: Mutex::new(value),
        }
    }

    /// Lock it to write (or read); it counts as written until the next reset.
    pub fn lock(&self) -> MutexGuard<'_, T> {
        let guard = self.value.lock().unwrap_or_else(|e| e.into_inner());
        self.written.store(true, Ordering::Release);
        guard
    }

    /// Lock it for the reset, if anything locked it since the last one. A writer that races
    /// the reset has its write kept for the next one, as if it came after this call.
    fn lock_if_written(&self) -> Option<MutexGuard<'_, T>> {
        if !self.written.load(Ordering::Acquire) {
            return None;
        }
        let guard = self.value.lock().unwrap_or_else(|e| e.into_inner());
        self.written.store(false, Ordering::Relaxed);
        Some(guard)
    }
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http_ctx,
            table: &mut self.table,
            hooks: &mut self.http_hooks,
        }
    }
}

/// Denials kept per call: enough to explain the failure, bounded against a plugin that
/// retries forever.
const MAX_DENIALS: usize = 5;

/// Log what the host refused a plugin and keep it for the call's error (the first few).
pub(crate) fn push_denial(plugin: &str, denials: &PerCall<Vec<String>>, reason: String) {
    tracing::warn!(plugin = %plugin, "{reason}");
    let mut denials = denials.lock();
    if denials.len() < MAX_DENIALS {
        denials.push(reason);
    }
}

/// Bytes wasmtime counts per table element (a function reference).
const TABLE_ELEMENT_BYTES: usize = 8;

/// Caps the memory of one instance: all its linear memories and tables together. Remembers
/// why it refused so the error names the limit.
pub struct MemoryLimiter {
    plugin: Arc<str>,
    max_bytes: usize,
    /// Memories that hold at least one page.
    memories: usize,
    memory_bytes: usize,
    table_bytes: usize,
    pub exceeded: Option<String>,
}

impl MemoryLimiter {
    /// Account for growing one memory or table from `current` to `desired` bytes, or
    /// refuse with a message naming the limit.
    fn grow(&mut self, current: usize, desired: usize, table: bool) -> wasmtime::Result<bool> {
        let used = self.memory_bytes + self.table_bytes;
        let after = (used + desired).saturating_sub(current);
        if after > self.max_bytes {
            let msg = format!(
                "memory limit exceeded: plugin instance memory (all {} memories and its tables together) would reach {} MiB, above limits.memory_mib = {} (raise `limits.memory_mib` of [plugins.{}] if this is expected)",
                self.memories + usize::from(!table && current == 0 && desired > 0),
                after.div_ceil(1024 * 1024),
                self.max_bytes / (1024 * 1024),
                self.plugin
            );
            self.exceeded = Some(msg.clone());
            // Trap instead of letting `memory.grow` return -1: the guest would abort with a
            // less helpful message.
            wasmtime::bail!(msg);
        }
        if table {
            self.table_bytes = self.table_bytes + desired - current;
        } else {
            if current == 0 && desired > 0 {
                self.memories += 1;
            }
            self.memory_bytes = self.memory_bytes + desired - current;
        }
        Ok(true)
    }
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(current, desired, false)
    }

    fn table_growing(
        &mut self,
        current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        self.grow(
            current.saturating_mul(TABLE_ELEMENT_BYTES),
            desired.saturating_mul(TABLE_ELEMENT_BYTES),
            true,
        )
    }
}

// ---------------------------------------------------------------- stdio into tracing

/// Plugin stdout/stderr, into the instance's bounded [`PluginOutput`].
#[derive(Clone)]
struct LogStream {
    output: Arc<PerCall<PluginOutput>>,
    stream: Stream,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for LogStream {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.output.lock().write(self.stream, buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_call_records_are_reset_after_every_call() {
        let log = CallLog {
            output: Arc::new(PerCall::new(PluginOutput::new("p".into()))),
            denials: Arc::new(PerCall::new(Vec::new())),
        };
        push_denial("p", &log.denials, "refused x".into());
        assert_eq!(log.take_denials(), vec!["refused x".to_string()]);
        assert!(log.take_denials().is_empty(), "taken once");
        push_denial("p", &log.denials, "refused y".into());
        log.end_call();
        assert!(
            log.take_denials().is_empty(),
            "a call's denials never reach the next call's fault"
        );
        // A reset of an untouched record changes nothing.
        log.end_call();
        push_denial("p", &log.denials, "refused z".into());
        assert_eq!(log.take_denials(), vec!["refused z".to_string()]);
    }

    #[test]
    fn memory_limit_counts_every_memory_of_the_instance() {
        let mut limiter = MemoryLimiter {
            plugin: "p".into(),
            max_bytes: 64 << 20,
            memories: 0,
            memory_bytes: 0,
            table_bytes: 0,
            exceeded: None,
        };
        for _ in 0..3 {
            assert!(limiter.memory_growing(0, 20 << 20, None).unwrap());
        }
        let err = limiter.memory_growing(0, 20 << 20, None).unwrap_err();
        assert!(
            err.to_string().contains("all 4 memories")
                && err.to_string().contains("limits.memory_mib = 64"),
            "{err}"
        );
    }
}
