//! The sandbox one plugin instance runs in: WASI with nothing inherited, granted
//! directories only, outbound HTTP only to granted destinations, a memory limiter and a
//! CPU deadline per call. Everything here is built from the plugin's TOML entry.

use super::spec::{Grants, HttpAuth, Limits};
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use wasmtime::component::ResourceTable;
use wasmtime::ResourceLimiter;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{FsPerms, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

/// Everything granted to one plugin, resolved and shared by all its instances.
#[derive(Debug)]
pub struct Sandbox {
    pub plugin: Arc<str>,
    pub limits: Limits,
    pub http: Arc<HttpPolicy>,
    dirs: Vec<ResolvedDir>,
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
    ) -> anyhow::Result<Self> {
        let mut dirs = Vec::new();
        for (i, dir) in grants.dirs.iter().enumerate() {
            let host = if dir.host.is_absolute() {
                dir.host.clone()
            } else {
                base_dir.join(&dir.host)
            };
            if !host.is_dir() {
                anyhow::bail!(
                    "plugin `{plugin}`: grants.dirs[{i}].host `{}` is not a directory; create it or fix the path",
                    host.display()
                );
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
            dirs.push(ResolvedDir {
                host,
                guest,
                writable: dir.writable,
            });
        }
        Ok(Sandbox {
            plugin: plugin.into(),
            limits: limits.clone(),
            http: Arc::new(HttpPolicy::new(plugin, &grants.http, &grants.http_auth)?),
            dirs,
        })
    }

    /// A fresh store state: WASI context with no env, no args, no sockets, stdio into
    /// `tracing`, and only the granted preopens.
    pub fn new_state(&self) -> anyhow::Result<PluginState> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.stdout(LogStream {
            plugin: self.plugin.clone(),
            stream: "stdout",
        })
        .stderr(LogStream {
            plugin: self.plugin.clone(),
            stream: "stderr",
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
        Ok(PluginState {
            plugin: self.plugin.clone(),
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http_ctx: WasiHttpCtx::new(),
            http_hooks: HttpHooks {
                policy: self.http.clone(),
            },
            limiter: MemoryLimiter {
                plugin: self.plugin.clone(),
                max_bytes: (self.limits.memory_mib as usize).saturating_mul(1024 * 1024),
                exceeded: None,
            },
            call_started: Instant::now(),
            call_timeout: self.limits.call_timeout,
            log_lines_this_call: 0,
        })
    }
}

/// The data of one wasmtime `Store`: one plugin instance.
pub struct PluginState {
    pub plugin: Arc<str>,
    wasi: WasiCtx,
    table: ResourceTable,
    http_ctx: WasiHttpCtx,
    http_hooks: HttpHooks,
    pub limiter: MemoryLimiter,
    /// Set at the start of every call; the epoch callback compares against it.
    pub call_started: Instant,
    pub call_timeout: Duration,
    pub log_lines_this_call: u32,
}

impl PluginState {
    /// Reset per-call bookkeeping before a call.
    pub fn begin_call(&mut self) {
        self.call_started = Instant::now();
        self.log_lines_this_call = 0;
        self.limiter.exceeded = None;
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

/// Caps linear memory and tables; remembers why it refused so the error names the limit.
pub struct MemoryLimiter {
    plugin: Arc<str>,
    max_bytes: usize,
    pub exceeded: Option<String>,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_bytes {
            let msg = format!(
                "memory limit exceeded: the plugin asked for {} MiB, its limit is {} MiB (raise `limits.memory_mib` of [plugins.{}] if this is expected)",
                desired.div_ceil(1024 * 1024),
                self.max_bytes / (1024 * 1024),
                self.plugin
            );
            self.exceeded = Some(msg.clone());
            // Trap instead of letting `memory.grow` return -1: the guest would abort with a
            // less helpful message.
            wasmtime::bail!(msg);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Tables hold function references; 100k entries is far beyond any real plugin.
        Ok(desired <= 100_000)
    }
}

// ---------------------------------------------------------------- outbound HTTP

/// One granted destination: `scheme://host:port`, host may contain `*` wildcards.
#[derive(Debug, Clone)]
struct Destination {
    scheme: String,
    host: wildmatch::WildMatch,
    port: u16,
    text: String,
}

impl Destination {
    fn parse(plugin: &str, text: &str) -> anyhow::Result<Self> {
        let bad = || {
            anyhow::anyhow!(
                "plugin `{plugin}`: grants.http entry `{text}` is not `scheme://host:port` (e.g. \"http://127.0.0.1:9090\" or \"https://*.example.com:443\")"
            )
        };
        let (scheme, rest) = text.split_once("://").ok_or_else(bad)?;
        let scheme = scheme.to_ascii_lowercase();
        if scheme != "http" && scheme != "https" {
            return Err(bad());
        }
        let rest = rest.trim_end_matches('/');
        if rest.contains('/') || rest.is_empty() {
            return Err(bad());
        }
        let (host, port) = match rest.rsplit_once(':') {
            Some((h, p)) if !h.ends_with(']') || rest.starts_with('[') => {
                (h, p.parse::<u16>().map_err(|_| bad())?)
            }
            _ => (rest, if scheme == "https" { 443 } else { 80 }),
        };
        Ok(Destination {
            host: wildmatch::WildMatch::new(&host.to_ascii_lowercase()),
            scheme,
            port,
            text: text.into(),
        })
    }

    fn matches(&self, scheme: &str, host: &str, port: u16) -> bool {
        self.scheme == scheme && self.port == port && self.host.matches(host)
    }
}

/// The HTTP grants of one plugin, checked on every request in `send_request`.
#[derive(Debug)]
pub struct HttpPolicy {
    plugin: Arc<str>,
    allowed: Vec<Destination>,
    auth: Vec<(Destination, http::HeaderValue)>,
    /// Denied requests, for the error the engine reports when the call then fails.
    denials: Mutex<Vec<String>>,
}

impl HttpPolicy {
    fn new(plugin: &str, allowed: &[String], auth: &[HttpAuth]) -> anyhow::Result<Self> {
        let allowed = allowed
            .iter()
            .map(|t| Destination::parse(plugin, t))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let mut creds = Vec::new();
        for a in auth {
            let dest = Destination::parse(plugin, &a.destination)?;
            if !allowed.iter().any(|d| d.text == dest.text) {
                anyhow::bail!(
                    "plugin `{plugin}`: grants.http_auth destination `{}` is not in grants.http; grant it first",
                    a.destination
                );
            }
            let value = match (&a.bearer_token, &a.basic_user) {
                (Some(token), None) => format!("Bearer {token}"),
                (None, Some(user)) => {
                    use base64::Engine as _;
                    let pass = a.basic_password.clone().unwrap_or_default();
                    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}")))
                }
                _ => anyhow::bail!(
                    "plugin `{plugin}`: grants.http_auth for `{}` needs exactly one of bearer_token or basic_user",
                    a.destination
                ),
            };
            let mut value = http::HeaderValue::from_str(&value).map_err(|_| {
                anyhow::anyhow!(
                    "plugin `{plugin}`: credential for `{}` is not a valid header value",
                    a.destination
                )
            })?;
            value.set_sensitive(true);
            creds.push((dest, value));
        }
        Ok(HttpPolicy {
            plugin: plugin.into(),
            allowed,
            auth: creds,
            denials: Mutex::new(Vec::new()),
        })
    }

    /// Whether no destination is granted at all.
    pub fn is_empty(&self) -> bool {
        self.allowed.is_empty()
    }

    /// Why the last requests were denied (drained).
    pub fn take_denials(&self) -> Vec<String> {
        std::mem::take(&mut *self.denials.lock().unwrap())
    }

    fn check(&self, uri: &http::Uri) -> Result<Option<http::HeaderValue>, String> {
        let scheme = uri.scheme_str().unwrap_or("https").to_ascii_lowercase();
        let host = uri
            .host()
            .unwrap_or("")
            .trim_matches(|c| c == '[' || c == ']')
            .to_ascii_lowercase();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        if self.allowed.iter().any(|d| d.matches(&scheme, &host, port)) {
            let cred = self
                .auth
                .iter()
                .find(|(d, _)| d.matches(&scheme, &host, port))
                .map(|(_, v)| v.clone());
            Ok(cred)
        } else {
            let dest = format!("{scheme}://{host}:{port}");
            Err(format!(
                "plugin `{}` tried to reach {dest}, which it has no grant for: add \"{dest}\" to grants.http of [plugins.{}] if it should",
                self.plugin, self.plugin
            ))
        }
    }
}

struct HttpHooks {
    policy: Arc<HttpPolicy>,
}

type SendFuture = Box<
    dyn std::future::Future<
            Output = Result<
                (
                    http::Response<wasmtime_wasi_http::WasiBody>,
                    Box<
                        dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>>
                            + Send,
                    >,
                ),
                wasmtime_wasi_http::Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        mut request: http::Request<wasmtime_wasi_http::WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        fut: Box<dyn std::future::Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> SendFuture {
        let _ = fut;
        let verdict = self.policy.check(request.uri());
        let policy = self.policy.clone();
        Box::new(async move {
            match verdict {
                Err(reason) => {
                    tracing::warn!(plugin = %policy.plugin, "{reason}");
                    policy.denials.lock().unwrap().push(reason);
                    Err(wasmtime_wasi_http::Error::HttpRequestDenied)
                }
                Ok(credential) => {
                    if let Some(value) = credential {
                        // The host holds the credential; the plugin never sees it.
                        request
                            .headers_mut()
                            .insert(http::header::AUTHORIZATION, value);
                    }
                    use http_body_util::BodyExt;
                    let (res, io) =
                        wasmtime_wasi_http::default_send_request(request, options).await?;
                    Ok((
                        res.map(BodyExt::boxed_unsync),
                        Box::new(io) as Box<dyn std::future::Future<Output = _> + Send>,
                    ))
                }
            }
        })
    }
}

// ---------------------------------------------------------------- stdio into tracing

/// Plugin stdout/stderr, forwarded line by line to `tracing` with the plugin's name.
#[derive(Clone)]
struct LogStream {
    plugin: Arc<str>,
    stream: &'static str,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            target: self.clone(),
            buffer: Vec::new(),
        })
    }
}

struct LineWriter {
    target: LogStream,
    buffer: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self, line: &[u8]) {
        let text = String::from_utf8_lossy(line);
        let text = super::capabilities::log::truncate(
            text.trim_end(),
            super::capabilities::log::MAX_MESSAGE_BYTES,
        );
        tracing::info!(plugin = %self.target.plugin, stream = self.target.stream, "{text}");
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.buffer.extend_from_slice(buf);
        while let Some(pos) = self.buffer.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.buffer.drain(..=pos).collect();
            self.emit(&line);
        }
        // A line without newline longer than the cap is flushed as is.
        if self.buffer.len() > super::capabilities::log::MAX_MESSAGE_BYTES {
            let line = std::mem::take(&mut self.buffer);
            self.emit(&line);
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        if !self.buffer.is_empty() {
            let line = std::mem::take(&mut self.buffer);
            self.emit(&line);
        }
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        self.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn destinations_match_scheme_host_and_port() {
        let p = HttpPolicy::new(
            "p",
            &[
                "http://127.0.0.1:9090".into(),
                "https://*.example.com".into(),
            ],
            &[],
        )
        .unwrap();
        assert!(p
            .check(&"http://127.0.0.1:9090/api".parse().unwrap())
            .is_ok());
        assert!(p
            .check(&"http://127.0.0.1:9091/api".parse().unwrap())
            .is_err());
        assert!(p
            .check(&"https://127.0.0.1:9090/".parse().unwrap())
            .is_err());
        assert!(p
            .check(&"https://api.example.com/x".parse().unwrap())
            .is_ok());
        assert!(p.check(&"https://example.org/x".parse().unwrap()).is_err());
        let err = p
            .check(&"http://10.0.0.1:80/".parse().unwrap())
            .unwrap_err();
        assert!(
            err.contains("http://10.0.0.1:80") && err.contains("grants.http"),
            "{err}"
        );
    }

    #[test]
    fn malformed_grants_are_rejected_with_the_entry() {
        let err = HttpPolicy::new("p", &["127.0.0.1:9090".into()], &[])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("127.0.0.1:9090") && err.contains("scheme://host:port"),
            "{err}"
        );
    }
}
