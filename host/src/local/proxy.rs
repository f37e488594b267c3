//! The local target's reverse proxy: weighted split between stable and candidate, header and
//! cookie matches to the candidate, mirroring, round-robin over replicas, and per-version
//! statistics; plus the `/metrics` exposition server.

use super::stats::{registry, SeriesKey, SlotLabel};
use crate::contract::{MatchSource, RequestMatch, StringMatch, TrafficSplit};
use arc_swap::ArcSwap;
use bytes::Bytes;
use futures::stream::{FuturesUnordered, StreamExt as _};
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::client::conn::http1 as upstream_http1;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{Authority, PathAndQuery, Scheme};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng as _;
use std::collections::HashSet;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};

pub type Body = BoxBody<Bytes, hyper::Error>;
pub type HttpClient = Client<HttpConnector, Body>;

/// Upstream request timeout; a stuck version answers 504 (counted as 5xx) rather than hang.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);
/// Mirroring buffers the request body to send it twice; larger bodies are not mirrored.
const MIRROR_BODY_LIMIT: usize = 1 << 20;

pub fn client() -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .pool_max_idle_per_host(64)
        .build(connector)
}

fn full(text: impl Into<Bytes>) -> Body {
    Full::new(text.into())
        .map_err(|never| match never {})
        .boxed()
}

fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// GET `path` on a local port; the status code or why there was none.
pub async fn probe(
    client: &HttpClient,
    port: u16,
    path: &str,
    timeout: Duration,
) -> Result<u16, String> {
    let uri: Uri = format!("http://127.0.0.1:{port}{path}")
        .parse()
        .map_err(|e| format!("invalid readiness path `{path}`: {e}"))?;
    let req = Request::get(uri).body(empty()).map_err(|e| e.to_string())?;
    match tokio::time::timeout(timeout, client.request(req)).await {
        Ok(Ok(resp)) => {
            let status = resp.status().as_u16();
            let _ = resp.into_body().collect().await;
            Ok(status)
        }
        Ok(Err(e)) => Err(format!("failed: {e}")),
        Err(_) => Err(format!("timed out after {timeout:?}")),
    }
}

/// Strings the proxy puts in every request or response (versions, app names, upstream
/// authorities), allocated once per distinct value for the life of the process, so copying
/// them per request costs no allocation and no reference count. Bounded by the distinct
/// versions and ports one host ever runs.
fn intern(s: &str) -> &'static str {
    static SET: LazyLock<Mutex<HashSet<&'static str>>> = LazyLock::new(Default::default);
    let mut set = SET.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&v) = set.get(s) {
        return v;
    }
    let v: &'static str = Box::leak(s.to_owned().into_boxed_str());
    set.insert(v);
    v
}

/// One replica: its port and the `127.0.0.1:PORT` authority, built once.
#[derive(Clone)]
struct Upstream {
    port: u16,
    authority: Authority,
    host: HeaderValue,
}

impl Upstream {
    fn new(port: u16) -> Self {
        let text = intern(&format!("127.0.0.1:{port}"));
        Upstream {
            port,
            authority: Authority::from_static(text),
            host: HeaderValue::from_static(text),
        }
    }
}

/// The replicas of one version in one slot.
pub struct Pool {
    pub slot: SlotLabel,
    pub version: String,
    pub ports: Vec<u16>,
    upstreams: Vec<Upstream>,
    next: AtomicUsize,
    /// The stats series this pool records into (its app is filled in by `RouteTable::new`).
    key: SeriesKey,
    /// That series, resolved once when the table is built.
    series: Option<&'static super::stats::Series>,
    /// `x-dax-version` (None when the version is not a valid header value).
    version_header: Option<HeaderValue>,
    /// `version`, interned for the error messages of requests in flight.
    version_name: &'static str,
}

impl Pool {
    pub fn new(slot: SlotLabel, version: String, ports: Vec<u16>) -> Self {
        let version_header = HeaderValue::from_str(&version)
            .ok()
            .map(|_| HeaderValue::from_static(intern(&version)));
        Pool {
            version_name: intern(&version),
            key: SeriesKey {
                app: String::new(),
                slot,
                version: version.clone(),
            },
            slot,
            upstreams: ports.iter().map(|&p| Upstream::new(p)).collect(),
            version,
            ports,
            next: AtomicUsize::new(0),
            series: None,
            version_header,
        }
    }

    fn pick(&self) -> Option<&Upstream> {
        match self.upstreams.len() {
            0 => None,
            // One replica (the common case): no shared round-robin counter to bounce
            // between cores.
            1 => self.upstreams.first(),
            n => Some(&self.upstreams[self.next.fetch_add(1, Ordering::Relaxed) % n]),
        }
    }

    fn series(&self) -> &'static super::stats::Series {
        self.series.unwrap_or_else(|| registry().series(&self.key))
    }
}

enum Matcher {
    Exact(String),
    Prefix(String),
    Suffix(String),
    Regex(regex::Regex),
}

impl Matcher {
    fn test(&self, v: &str) -> bool {
        match self {
            Matcher::Exact(s) => v == s,
            Matcher::Prefix(s) => v.starts_with(s.as_str()),
            Matcher::Suffix(s) => v.ends_with(s.as_str()),
            Matcher::Regex(r) => r.is_match(v),
        }
    }
}

struct CompiledMatch {
    source: MatchSource,
    /// The cookie name, or the header name in lower case.
    name: String,
    /// The header name, parsed once (for header matches).
    header: Option<HeaderName>,
    matcher: Matcher,
}

impl CompiledMatch {
    fn holds(&self, headers: &HeaderMap) -> bool {
        match self.source {
            MatchSource::Header => self
                .header
                .iter()
                .flat_map(|h| headers.get_all(h))
                .filter_map(|v| v.to_str().ok())
                .any(|v| self.matcher.test(v)),
            MatchSource::Cookie => headers
                .get_all(hyper::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|pair| pair.trim().split_once('='))
                .any(|(k, v)| k == self.name && self.matcher.test(v)),
        }
    }
}

/// An immutable routing snapshot; the target swaps in a new one on every change.
pub struct RouteTable {
    pub app: String,
    /// `app`, interned for the error messages of requests in flight.
    app_name: &'static str,
    pub stable: Option<Pool>,
    pub candidate: Option<Pool>,
    weight: u8,
    mirror: u8,
    matches: Vec<CompiledMatch>,
}

impl RouteTable {
    pub fn empty() -> Self {
        RouteTable {
            app: String::new(),
            app_name: "",
            stable: None,
            candidate: None,
            weight: 0,
            mirror: 0,
            matches: Vec::new(),
        }
    }

    /// Build a table; fails (naming the match) on an invalid regex or out-of-range percent.
    pub fn new(
        app: String,
        stable: Option<Pool>,
        candidate: Option<Pool>,
        split: &TrafficSplit,
    ) -> Result<Self, String> {
        let with_app = |p: Option<Pool>| {
            p.map(|mut p| {
                p.key.app = app.clone();
                p.series = Some(registry().series(&p.key));
                p
            })
        };
        let (stable, candidate) = (with_app(stable), with_app(candidate));
        Ok(RouteTable {
            app_name: intern(&app),
            app,
            stable,
            candidate,
            weight: split.candidate_weight,
            mirror: split.mirror_percent,
            matches: compile_matches(&split.matches)?,
        })
    }

    /// Which pool serves this request, and whether to mirror it to the candidate.
    fn choose(&self, headers: &HeaderMap) -> (Option<&Pool>, bool) {
        fn usable(p: &Option<Pool>) -> Option<&Pool> {
            p.as_ref().filter(|p| !p.ports.is_empty())
        }
        let (stable, candidate) = (usable(&self.stable), usable(&self.candidate));
        let Some(candidate) = candidate else {
            return (stable, false);
        };
        let Some(stable) = stable else {
            return (Some(candidate), false);
        };
        let matched = !self.matches.is_empty() && self.matches.iter().all(|m| m.holds(headers));
        let mut rng = rand::rng();
        if matched || (self.weight > 0 && rng.random_range(0..100u8) < self.weight) {
            return (Some(candidate), false);
        }
        let mirror = self.mirror > 0 && rng.random_range(0..100u8) < self.mirror;
        (Some(stable), mirror)
    }
}

fn compile_matches(matches: &[RequestMatch]) -> Result<Vec<CompiledMatch>, String> {
    matches
        .iter()
        .map(|m| {
            let (name, header) = match m.source {
                // Header names are case-insensitive; cookie names are not.
                MatchSource::Header => {
                    let lower = m.name.to_ascii_lowercase();
                    let header = HeaderName::from_bytes(lower.as_bytes()).map_err(|_| {
                        format!("invalid header name `{}` in a traffic match", m.name)
                    })?;
                    (lower, Some(header))
                }
                MatchSource::Cookie => (m.name.clone(), None),
            };
            let matcher = match &m.value {
                StringMatch::Exact(s) => Matcher::Exact(s.clone()),
                StringMatch::Prefix(s) => Matcher::Prefix(s.clone()),
                StringMatch::Suffix(s) => Matcher::Suffix(s.clone()),
                StringMatch::Regex(r) => Matcher::Regex(regex::Regex::new(r).map_err(|e| {
                    format!(
                        "invalid regex `{r}` in the traffic match on `{}`: {e}",
                        m.name
                    )
                })?),
            };
            Ok(CompiledMatch {
                source: m.source,
                name,
                header,
                matcher,
            })
        })
        .collect()
}

pub type SharedRoutes = Arc<ArcSwap<RouteTable>>;

/// A new, empty routing table to share between the target and its proxy.
pub fn shared_routes() -> SharedRoutes {
    Arc::new(ArcSwap::from_pointee(RouteTable::empty()))
}

struct Ctx {
    routes: SharedRoutes,
    /// How long a version may take to answer (response headers) before the client gets 504.
    timeout: Duration,
}

/// The pooled client for mirrored requests and HTTP/2 clients (see `Upstreams` for the common
/// path): one per event loop. A pooled connection is driven by a task on the loop that opened
/// it, so with one pool shared by all loops a request on one loop often went out through a
/// connection on another, waking that loop's thread for the request and this one for the
/// answer.
fn loop_client() -> HttpClient {
    thread_local! {
        static CLIENT: HttpClient = client();
    }
    CLIENT.with(Clone::clone)
}

/// Where one request goes: copied out of the route table so nothing is held across an await.
struct Route {
    upstream: Upstream,
    slot: SlotLabel,
    app: &'static str,
    version: &'static str,
    version_header: Option<HeaderValue>,
    series: &'static super::stats::Series,
    /// The candidate replica and series to mirror this request to.
    mirror: Option<(Upstream, &'static super::stats::Series)>,
}

impl Ctx {
    fn route(&self, headers: &HeaderMap) -> Option<Route> {
        // A lock-free snapshot: no lock and (usually) no reference count per request.
        let table = self.routes.load();
        let (pool, mirror) = table.choose(headers);
        let pool = pool?;
        let mirror = if mirror {
            table
                .candidate
                .as_ref()
                .and_then(|c| Some((c.pick()?.clone(), c.series())))
        } else {
            None
        };
        Some(Route {
            upstream: pool.pick()?.clone(),
            slot: pool.slot,
            app: table.app_name,
            version: pool.version_name,
            version_header: pool.version_header.clone(),
            series: pool.series(),
            mirror,
        })
    }
}

/// Headers the proxy adds to what it forwards.
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_DAX_SLOT: HeaderName = HeaderName::from_static("x-dax-slot");
const X_DAX_VERSION: HeaderName = HeaderName::from_static("x-dax-version");

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [HeaderName; 9] = [
    hyper::header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    hyper::header::PROXY_AUTHENTICATE,
    hyper::header::PROXY_AUTHORIZATION,
    hyper::header::TE,
    hyper::header::TRAILER,
    hyper::header::UPGRADE,
    hyper::header::TRANSFER_ENCODING,
];

/// Remove hop-by-hop headers in place, including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names present (a handful) instead of a lookup per hop-by-hop name:
    // most messages carry none of them.
    if !headers.keys().any(|name| HOP_BY_HOP.contains(name)) {
        return;
    }
    if headers.contains_key(hyper::header::CONNECTION) {
        // Rare on HTTP/1.1 (keep-alive is the default), so allocating here is fine.
        let named: Vec<HeaderName> = headers
            .get_all(hyper::header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| HeaderName::from_bytes(s.trim().as_bytes()).ok())
            .collect();
        for h in named {
            headers.remove(h);
        }
    }
    for h in &HOP_BY_HOP {
        headers.remove(h);
    }
}

/// The upstream request: the client's method, path, headers and body, sent to `to`. An
/// absolute URI for the pooled client, origin-form for this connection's own upstreams.
fn upstream_request(
    method: &hyper::Method,
    path: Option<PathAndQuery>,
    mut headers: HeaderMap,
    body: Body,
    to: &Upstream,
    absolute: bool,
) -> Request<Body> {
    let mut uri = hyper::http::uri::Parts::default();
    uri.path_and_query = Some(path.unwrap_or_else(|| PathAndQuery::from_static("/")));
    if absolute {
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(to.authority.clone());
    }
    if !headers.contains_key(hyper::header::HOST) {
        headers.insert(hyper::header::HOST, to.host.clone());
    }
    let mut req = Request::new(body);
    *req.method_mut() = method.clone();
    *req.uri_mut() = Uri::from_parts(uri).unwrap_or_else(|_| Uri::from_static("/"));
    *req.headers_mut() = headers;
    req
}

/// The upstream connections of ONE client connection, driven on that connection's own task.
///
/// A shared pooled client (hyper-util's) runs each upstream connection on a task of its own and
/// hands every request to it through channels: two extra task wakeups per request, often on
/// the other core, plus the pool's lock. Here each HTTP/1 client connection keeps its own
/// keep-alive connection per replica (HTTP/1 has one request in flight per connection, so one
/// is enough) and polls it in the same task that serves the client, the way nginx's worker
/// handles both sides of a request in one event loop. Closed when the client's connection
/// closes.
#[derive(Default)]
struct Upstreams {
    /// Idle senders by port (a client connection rarely talks to more than two).
    idle: Mutex<Vec<(u16, upstream_http1::SendRequest<Body>)>>,
    driver: Mutex<Driver>,
}

#[derive(Default)]
struct Driver {
    conns: FuturesUnordered<Pin<Box<dyn Future<Output = ()> + Send>>>,
    waker: Option<Waker>,
}

/// Upstream connections a client connection may keep (one per replica it was routed to).
const MAX_IDLE_UPSTREAMS: usize = 8;

impl Upstreams {
    fn take(&self, port: u16) -> Option<upstream_http1::SendRequest<Body>> {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        let i = idle.iter().position(|(p, _)| *p == port)?;
        Some(idle.swap_remove(i).1)
    }

    fn put(&self, port: u16, sender: upstream_http1::SendRequest<Body>) {
        let mut idle = self.idle.lock().unwrap_or_else(|e| e.into_inner());
        if idle.len() >= MAX_IDLE_UPSTREAMS {
            idle.remove(0);
        }
        idle.push((port, sender));
    }

    /// Drop the connection to `port` (after a failure or timeout, when its state is unknown).
    fn forget(&self, port: u16) {
        drop(self.take(port));
    }

    async fn connect(&self, port: u16) -> Result<upstream_http1::SendRequest<Body>, String> {
        let stream = TcpStream::connect(("127.0.0.1", port))
            .await
            .map_err(|e| format!("cannot connect: {e}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = upstream_http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
        let waker = {
            let mut d = self.driver.lock().unwrap_or_else(|e| e.into_inner());
            d.conns.push(Box::pin(async move {
                let _ = conn.await;
            }));
            d.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
        Ok(sender)
    }

    /// Send `req` on this client connection's connection to `port`, opening one if needed; a
    /// request a reused connection could not even start (closed meanwhile) is retried once on
    /// a new one.
    ///
    /// Opening a connection is the rare path and is boxed: hyper moves each request's future
    /// (which holds this one) by value, so every byte of a state the common path never enters
    /// is copied on every request.
    async fn send(&self, port: u16, req: Request<Body>) -> Result<Response<Incoming>, String> {
        let mut sender = match self.take(port) {
            Some(s) if !s.is_closed() => s,
            _ => return Box::pin(self.send_on_new(port, req)).await,
        };
        if sender.ready().await.is_err() {
            return Box::pin(self.send_on_new(port, req)).await;
        }
        let sent = sender.try_send_request(req);
        self.put(port, sender);
        match sent.await {
            Ok(resp) => Ok(resp),
            Err(mut e) => match e.take_message() {
                Some(req) => {
                    self.forget(port);
                    Box::pin(self.send_on_new(port, req)).await
                }
                None => Err(e.into_error().to_string()),
            },
        }
    }

    /// Send `req` on a new connection to `port` (kept for the next request).
    async fn send_on_new(
        &self,
        port: u16,
        req: Request<Body>,
    ) -> Result<Response<Incoming>, String> {
        let mut sender = self.connect(port).await?;
        sender.ready().await.map_err(|e| e.to_string())?;
        let sent = sender.send_request(req);
        self.put(port, sender);
        sent.await.map_err(|e| e.to_string())
    }

    /// Poll every upstream connection; never completes (runs beside the client connection).
    fn drive(self: Arc<Self>) -> impl Future<Output = ()> + Send {
        std::future::poll_fn(move |cx: &mut Context<'_>| {
            let mut d = self.driver.lock().unwrap_or_else(|e| e.into_inner());
            if !d.waker.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                d.waker = Some(cx.waker().clone());
            }
            while let Poll::Ready(Some(())) = d.conns.poll_next_unpin(cx) {}
            Poll::<()>::Pending
        })
    }
}

/// What one client connection shares between its requests.
struct ClientConn {
    ctx: Arc<Ctx>,
    forwarded_for: Option<HeaderValue>,
    upstreams: Arc<Upstreams>,
}

fn bad_gateway(status: StatusCode, text: String) -> Response<Body> {
    let mut r = Response::new(full(text));
    *r.status_mut() = status;
    r
}

async fn handle(
    conn: Arc<ClientConn>,
    req: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let Some(route) = conn.ctx.route(req.headers()) else {
        return Ok(bad_gateway(
            StatusCode::SERVICE_UNAVAILABLE,
            "dax local proxy: no version is running yet (the deployment has not started or has finished)\n".into(),
        ));
    };
    let (parts, body) = req.into_parts();
    let (method, version) = (parts.method, parts.version);
    let path = parts.uri.into_parts().path_and_query;
    let mut headers = parts.headers;
    strip_hop_by_hop(&mut headers);
    if let Some(v) = &conn.forwarded_for {
        headers.append(X_FORWARDED_FOR, v.clone());
    }

    let body: Body = match route.mirror {
        None => body.boxed(),
        Some((to, series)) => {
            let timeout = conn.ctx.timeout;
            match mirror(body, &method, &path, &headers, &to, series, timeout).await {
                Ok(body) => body,
                Err(answer) => return Ok(answer),
            }
        }
    };

    let port = route.upstream.port;
    // HTTP/2 clients send requests concurrently on one connection: they use the shared pool.
    let pooled = version == Version::HTTP_2;
    let upstream = upstream_request(&method, path, headers, body, &route.upstream, pooled);
    let sent = async {
        if pooled {
            loop_client()
                .request(upstream)
                .await
                .map_err(|e| e.to_string())
        } else {
            conn.upstreams.send(port, upstream).await
        }
    };
    let timeout = conn.ctx.timeout;
    // A deadline from the clock already read for `start`, not a second read.
    let deadline = tokio::time::Instant::from_std(start + timeout);
    let mut resp = match tokio::time::timeout_at(deadline, sent).await {
        Ok(Ok(resp)) => resp.map(|b| b.boxed()),
        Ok(Err(e)) => {
            conn.upstreams.forget(port);
            bad_gateway(
                StatusCode::BAD_GATEWAY,
                format!(
                    "dax local proxy: {} {} (port {port}) failed: {e}\n",
                    route.app, route.version
                ),
            )
        }
        Err(_) => {
            conn.upstreams.forget(port);
            bad_gateway(
                StatusCode::GATEWAY_TIMEOUT,
                format!(
                    "dax local proxy: {} {} (port {port}) did not answer within {timeout:?}\n",
                    route.app, route.version
                ),
            )
        }
    };
    route.series.record(resp.status().as_u16(), start.elapsed());
    strip_hop_by_hop(resp.headers_mut());
    let h = resp.headers_mut();
    h.insert(X_DAX_SLOT, HeaderValue::from_static(route.slot.as_str()));
    if let Some(v) = route.version_header {
        h.insert(X_DAX_VERSION, v);
    }
    Ok(resp)
}

/// Buffer the request `body` (up to `MIRROR_BODY_LIMIT`), send a copy of the request to `to`
/// in the background (its answer discarded, only counted in `series`) and return the body to
/// forward; or the answer for the client when the body cannot be read.
async fn mirror(
    body: Incoming,
    method: &hyper::Method,
    path: &Option<PathAndQuery>,
    headers: &HeaderMap,
    to: &Upstream,
    series: &'static super::stats::Series,
    timeout: Duration,
) -> Result<Body, Response<Body>> {
    let bytes = match Limited::new(body, MIRROR_BODY_LIMIT).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return Err(bad_gateway(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("dax local proxy: cannot read the request body: {e}\n"),
            ))
        }
    };
    let copy = upstream_request(
        method,
        path.clone(),
        headers.clone(),
        full(bytes.clone()),
        to,
        true,
    );
    let client = loop_client();
    tokio::spawn(async move {
        if let Ok(Ok(resp)) = tokio::time::timeout(timeout, client.request(copy)).await {
            let _ = resp.into_body().collect().await;
            series.record_mirrored();
        }
    });
    Ok(full(bytes))
}

/// Accept connections on `listener` until the returned task is aborted; aborting it also
/// closes every open connection (they live in the task's `JoinSet`, and run on the proxy's
/// event loops, see `event_loops.rs`). `per_conn` makes, for each
/// connection, its request handler and a future to run beside it on the same task.
fn serve<M, F, Fut, D>(listener: TcpListener, per_conn: M) -> JoinHandle<()>
where
    M: Fn(SocketAddr) -> (F, D) + Send + 'static,
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    D: Future<Output = ()> + Send + 'static,
{
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let (handler, beside) = per_conn(peer);
                    super::event_loops::spawn_connection(&mut conns, stream, |stream| async move {
                        let svc = hyper::service::service_fn(handler);
                        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let served = builder.serve_connection(TokioIo::new(stream), svc);
                        super::event_loops::run_beside(served, beside).await
                    });
                }
                // Reap finished connections so the set does not grow without bound.
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    })
}

/// Start the proxy on `listener`, routing by whatever table `routes` holds.
pub fn start_proxy(listener: TcpListener, routes: SharedRoutes) -> JoinHandle<()> {
    start_proxy_with_timeout(listener, routes, UPSTREAM_TIMEOUT)
}

fn start_proxy_with_timeout(
    listener: TcpListener,
    routes: SharedRoutes,
    timeout: Duration,
) -> JoinHandle<()> {
    let ctx = Arc::new(Ctx { routes, timeout });
    serve(listener, move |peer: SocketAddr| {
        let conn = Arc::new(ClientConn {
            ctx: ctx.clone(),
            forwarded_for: HeaderValue::from_str(&peer.ip().to_string()).ok(),
            upstreams: Arc::default(),
        });
        let drive = conn.upstreams.clone().drive();
        (move |req| handle(conn.clone(), req), drive)
    })
}

/// Serve the in-process statistics at `/metrics` in Prometheus text format.
pub fn start_metrics(listener: TcpListener) -> JoinHandle<()> {
    let handler = |req: Request<Incoming>| async move {
        let resp = if req.uri().path() == "/metrics" {
            let mut r = Response::new(full(registry().render_prometheus()));
            r.headers_mut().insert(
                hyper::header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            r
        } else {
            let mut r = Response::new(full("not found: the metrics are at /metrics\n"));
            *r.status_mut() = StatusCode::NOT_FOUND;
            r
        };
        Ok(resp)
    };
    serve(listener, move |_peer| (handler, std::future::pending()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(weight: u8, matches: Vec<RequestMatch>) -> RouteTable {
        RouteTable::new(
            "t".into(),
            Some(Pool::new(SlotLabel::Stable, "v1".into(), vec![1])),
            Some(Pool::new(SlotLabel::Candidate, "v2".into(), vec![2])),
            &TrafficSplit {
                candidate_weight: weight,
                matches,
                mirror_percent: 0,
            },
        )
        .unwrap()
    }

    #[test]
    fn all_matches_must_hold() {
        let t = table(
            0,
            vec![
                RequestMatch {
                    source: MatchSource::Header,
                    name: "X-Canary".into(),
                    value: StringMatch::Prefix("al".into()),
                },
                RequestMatch {
                    source: MatchSource::Cookie,
                    name: "user".into(),
                    value: StringMatch::Regex("^beta-[0-9]+$".into()),
                },
            ],
        );
        let mut h = HeaderMap::new();
        h.insert("x-canary", HeaderValue::from_static("always"));
        assert_eq!(t.choose(&h).0.unwrap().version, "v1", "cookie missing");
        h.insert("cookie", HeaderValue::from_static("a=b; user=beta-42"));
        assert_eq!(t.choose(&h).0.unwrap().version, "v2");
        h.insert("cookie", HeaderValue::from_static("user=beta-x"));
        assert_eq!(t.choose(&h).0.unwrap().version, "v1");
    }

    #[test]
    fn bad_regex_is_reported() {
        let err = compile_matches(&[RequestMatch {
            source: MatchSource::Header,
            name: "x".into(),
            value: StringMatch::Regex("(".into()),
        }])
        .err()
        .unwrap();
        assert!(err.contains("invalid regex `(`"), "{err}");
    }

    /// A backend on a fresh port: echoes the request headers it got as `name: value` lines
    /// and answers with a hop-by-hop header of its own; `/slow` never answers.
    async fn echo_backend() -> u16 {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                        if req.uri().path() == "/slow" {
                            std::future::pending::<()>().await;
                        }
                        let mut text = format!("{} {}\n", req.method(), req.uri());
                        for (k, v) in req.headers() {
                            text.push_str(&format!("{k}: {}\n", v.to_str().unwrap_or("?")));
                        }
                        let mut resp = Response::new(Full::new(Bytes::from(text)));
                        resp.headers_mut()
                            .insert("keep-alive", HeaderValue::from_static("timeout=5"));
                        resp.headers_mut()
                            .insert("x-secret-hop", HeaderValue::from_static("1"));
                        resp.headers_mut()
                            .insert("connection", HeaderValue::from_static("x-secret-hop"));
                        Ok::<_, Infallible>(resp)
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        port
    }

    /// A backend that answers one request per connection and then closes it without saying
    /// so (no `Connection: close`), like a server with a keep-alive of zero.
    async fn one_shot_backend() -> u16 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move {
            loop {
                let (mut stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let mut got = Vec::new();
                    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                        let Ok(n) = stream.read(&mut buf).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        got.extend_from_slice(&buf[..n]);
                    }
                    let _ = stream
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok")
                        .await;
                });
            }
        });
        port
    }

    async fn proxy_to(port: u16, timeout: Duration) -> SocketAddr {
        proxy_serving(port, timeout).await.0
    }

    /// A proxy sending everything to `port`, and the task that serves it.
    async fn proxy_serving(port: u16, timeout: Duration) -> (SocketAddr, JoinHandle<()>) {
        let routes = shared_routes();
        routes.store(Arc::new(
            RouteTable::new(
                "proxytest".into(),
                Some(Pool::new(SlotLabel::Stable, "v1".into(), vec![port])),
                None,
                &TrafficSplit::weight(0),
            )
            .unwrap(),
        ));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (addr, start_proxy_with_timeout(listener, routes, timeout))
    }

    /// One client connection, several requests in a row (keep-alive, like a browser).
    async fn client_conn(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Body> {
        let stream = TcpStream::connect(addr).await.unwrap();
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        sender
    }

    async fn get(
        sender: &mut hyper::client::conn::http1::SendRequest<Body>,
        path: &str,
        headers: &[(&str, &str)],
    ) -> (StatusCode, HeaderMap, String) {
        sender.ready().await.unwrap();
        let mut req = Request::get(path).header("host", "proxy.test");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = sender
            .send_request(req.body(empty()).unwrap())
            .await
            .unwrap();
        let (parts, body) = resp.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            parts.status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    }

    /// Stopping the proxy closes the connections it holds open, although they run on the
    /// proxy's own event loops, not on the runtime that accepted them.
    #[tokio::test]
    async fn stopping_the_proxy_closes_its_open_connections() {
        use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
        let (addr, server) = proxy_serving(echo_backend().await, UPSTREAM_TIMEOUT).await;
        // A keep-alive connection, served once and now idle on one of the event loops.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        stream
            .write_all(b"GET / HTTP/1.1\r\nhost: proxy.test\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 4096];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(
            buf[..n].starts_with(b"HTTP/1.1 200"),
            "{:?}",
            String::from_utf8_lossy(&buf[..n])
        );
        server.abort();
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        })
        .await;
        assert!(
            closed.is_ok(),
            "the connection stayed open after the proxy stopped"
        );
    }

    #[tokio::test]
    async fn hop_by_hop_headers_are_stripped_both_ways() {
        let addr = proxy_to(echo_backend().await, UPSTREAM_TIMEOUT).await;
        let mut c = client_conn(addr).await;
        for _ in 0..3 {
            let (status, headers, body) = get(
                &mut c,
                "/a?b=c",
                &[
                    ("connection", "X-Private, keep-alive"),
                    ("x-private", "secret"),
                    ("te", "trailers"),
                    ("proxy-authorization", "Basic eA=="),
                    ("x-kept", "yes"),
                ],
            )
            .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            assert!(body.starts_with("GET /a?b=c\n"), "{body}");
            assert!(body.contains("x-kept: yes\n"), "{body}");
            assert!(body.contains("host: proxy.test\n"), "{body}");
            assert!(body.contains("x-forwarded-for: 127.0.0.1\n"), "{body}");
            for gone in ["x-private", "te:", "proxy-authorization", "connection"] {
                assert!(!body.contains(gone), "`{gone}` was forwarded:\n{body}");
            }
            for gone in ["keep-alive", "x-secret-hop"] {
                assert!(
                    !headers.contains_key(gone),
                    "`{gone}` came back: {headers:?}"
                );
            }
            assert_eq!(headers["x-dax-version"], "v1");
            assert_eq!(headers["x-dax-slot"], "stable");
        }
    }

    #[tokio::test]
    async fn a_version_that_does_not_answer_gets_504_and_the_connection_keeps_working() {
        let addr = proxy_to(echo_backend().await, Duration::from_millis(300)).await;
        let mut c = client_conn(addr).await;
        let started = Instant::now();
        let (status, _, body) = get(&mut c, "/slow", &[]).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
        assert!(
            body.contains("proxytest v1 (port") && body.contains("did not answer within 300ms"),
            "{body}"
        );
        assert!(started.elapsed() < Duration::from_secs(5));
        // The same client connection, and a new one, are served right after.
        let (status, _, body) = get(&mut c, "/after", &[]).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let (status, _, _) = get(&mut client_conn(addr).await, "/", &[]).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn an_upstream_that_closes_its_keepalive_connection_is_reconnected() {
        let addr = proxy_to(one_shot_backend().await, UPSTREAM_TIMEOUT).await;
        let mut c = client_conn(addr).await;
        for i in 0..20 {
            let (status, _, body) = get(&mut c, "/", &[]).await;
            assert_eq!(status, StatusCode::OK, "request {i}: {body}");
            assert_eq!(body, "ok");
        }
    }

    #[tokio::test]
    async fn a_dead_version_gets_502_naming_it() {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let addr = proxy_to(port, UPSTREAM_TIMEOUT).await;
        let mut c = client_conn(addr).await;
        let (status, _, body) = get(&mut c, "/", &[]).await;
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
        assert!(
            body.contains(&format!(
                "proxytest v1 (port {port}) failed: cannot connect"
            )),
            "{body}"
        );
    }
}
