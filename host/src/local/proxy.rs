//! The local target's reverse proxy: weighted split between stable and candidate, header and
//! cookie matches to the candidate, mirroring, round-robin over replicas, and per-version
//! statistics; plus the `/metrics` exposition server.

use super::stats::{registry, SeriesKey, SlotLabel};
use crate::contract::{MatchSource, RequestMatch, StringMatch, TrafficSplit};
use bytes::Bytes;
use http_body_util::{combinators::BoxBody, BodyExt, Empty, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rand::Rng as _;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
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

/// The replicas of one version in one slot.
pub struct Pool {
    pub slot: SlotLabel,
    pub version: String,
    pub ports: Vec<u16>,
    next: AtomicUsize,
    /// The stats series this pool records into (its app is filled in by `RouteTable::new`).
    key: SeriesKey,
}

impl Pool {
    pub fn new(slot: SlotLabel, version: String, ports: Vec<u16>) -> Self {
        Pool {
            key: SeriesKey {
                app: String::new(),
                slot,
                version: version.clone(),
            },
            slot,
            version,
            ports,
            next: AtomicUsize::new(0),
        }
    }

    fn pick(&self) -> Option<u16> {
        if self.ports.is_empty() {
            return None;
        }
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        Some(self.ports[i % self.ports.len()])
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
    name: String,
    matcher: Matcher,
}

impl CompiledMatch {
    fn holds(&self, headers: &HeaderMap) -> bool {
        match self.source {
            MatchSource::Header => headers
                .get_all(self.name.as_str())
                .iter()
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
                p
            })
        };
        let (stable, candidate) = (with_app(stable), with_app(candidate));
        Ok(RouteTable {
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
            let name = match m.source {
                // Header names are case-insensitive; cookie names are not.
                MatchSource::Header => {
                    let lower = m.name.to_ascii_lowercase();
                    HeaderName::from_bytes(lower.as_bytes()).map_err(|_| {
                        format!("invalid header name `{}` in a traffic match", m.name)
                    })?;
                    lower
                }
                MatchSource::Cookie => m.name.clone(),
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
                matcher,
            })
        })
        .collect()
}

pub type SharedRoutes = Arc<RwLock<Arc<RouteTable>>>;

struct Ctx {
    routes: SharedRoutes,
    client: HttpClient,
}

/// Headers that describe one hop, not the message (RFC 9110 §7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "upgrade",
];

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Also drop headers the Connection header names.
    let named: Vec<String> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    for h in HOP_BY_HOP
        .iter()
        .copied()
        .chain(named.iter().map(String::as_str))
    {
        headers.remove(h);
    }
    headers.remove(hyper::header::TRANSFER_ENCODING);
}

fn upstream_request(
    parts: &hyper::http::request::Parts,
    port: u16,
    body: Body,
    client_addr: SocketAddr,
) -> Request<Body> {
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let uri: Uri = format!("http://127.0.0.1:{port}{pq}")
        .parse()
        .unwrap_or_else(|_| Uri::from_static("http://127.0.0.1/"));
    let mut req = Request::new(body);
    *req.method_mut() = parts.method.clone();
    *req.uri_mut() = uri;
    let mut headers = parts.headers.clone();
    strip_hop_by_hop(&mut headers);
    if let Ok(v) = HeaderValue::from_str(&client_addr.ip().to_string()) {
        headers.append("x-forwarded-for", v);
    }
    *req.headers_mut() = headers;
    req
}

async fn handle(
    ctx: Arc<Ctx>,
    req: Request<Incoming>,
    client_addr: SocketAddr,
) -> Result<Response<Body>, Infallible> {
    let start = Instant::now();
    let table = ctx.routes.read().unwrap_or_else(|e| e.into_inner()).clone();
    let (pool, mirror) = table.choose(req.headers());
    let Some(pool) = pool else {
        let mut resp = Response::new(full(
            "dax local proxy: no version is running yet (the deployment has not started or has finished)\n",
        ));
        *resp.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
        return Ok(resp);
    };
    let port = pool.pick().expect("choose() only returns non-empty pools");
    let (parts, body) = req.into_parts();

    let body: Body = if mirror {
        match Limited::new(body, MIRROR_BODY_LIMIT).collect().await {
            Ok(collected) => {
                let bytes = collected.to_bytes();
                if let Some(cand) = table.candidate.as_ref() {
                    if let Some(mport) = cand.pick() {
                        let mreq =
                            upstream_request(&parts, mport, full(bytes.clone()), client_addr);
                        let client = ctx.client.clone();
                        let mkey = cand.key.clone();
                        tokio::spawn(async move {
                            // The answer is discarded; only the fact it was served is recorded.
                            if let Ok(Ok(resp)) =
                                tokio::time::timeout(UPSTREAM_TIMEOUT, client.request(mreq)).await
                            {
                                let _ = resp.into_body().collect().await;
                                registry().record_mirrored(&mkey);
                            }
                        });
                    }
                }
                full(bytes)
            }
            Err(e) => {
                let mut resp = Response::new(full(format!(
                    "dax local proxy: cannot read the request body: {e}\n"
                )));
                *resp.status_mut() = StatusCode::PAYLOAD_TOO_LARGE;
                return Ok(resp);
            }
        }
    } else {
        body.boxed()
    };

    let upstream = upstream_request(&parts, port, body, client_addr);
    let result = tokio::time::timeout(UPSTREAM_TIMEOUT, ctx.client.request(upstream)).await;
    let mut resp = match result {
        Ok(Ok(resp)) => resp.map(|b| b.boxed()),
        Ok(Err(e)) => {
            let mut r = Response::new(full(format!(
                "dax local proxy: {} {} (port {port}) failed: {e}\n",
                table.app, pool.version
            )));
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            r
        }
        Err(_) => {
            let mut r = Response::new(full(format!(
                "dax local proxy: {} {} (port {port}) did not answer within {UPSTREAM_TIMEOUT:?}\n",
                table.app, pool.version
            )));
            *r.status_mut() = StatusCode::GATEWAY_TIMEOUT;
            r
        }
    };
    registry().record(&pool.key, resp.status().as_u16(), start.elapsed());
    strip_hop_by_hop(resp.headers_mut());
    let h = resp.headers_mut();
    h.insert("x-dax-slot", HeaderValue::from_static(pool.slot.as_str()));
    if let Ok(v) = HeaderValue::from_str(&pool.version) {
        h.insert("x-dax-version", v);
    }
    Ok(resp)
}

/// Accept connections on `listener` until the returned task is aborted; aborting it also
/// closes every open connection (they live in the task's `JoinSet`).
fn serve<F, Fut>(listener: TcpListener, handler: F) -> JoinHandle<()>
where
    F: Fn(Request<Incoming>, SocketAddr) -> Fut + Clone + Send + Sync + 'static,
    Fut: std::future::Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
{
    tokio::spawn(async move {
        let mut conns = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let handler = handler.clone();
                    conns.spawn(async move {
                        let svc = hyper::service::service_fn(move |req| handler(req, peer));
                        let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                            .serve_connection(TokioIo::new(stream), svc)
                            .await;
                    });
                }
                // Reap finished connections so the set does not grow without bound.
                Some(_) = conns.join_next(), if !conns.is_empty() => {}
            }
        }
    })
}

/// Start the proxy on `listener`, routing by whatever table `routes` holds.
pub fn start_proxy(
    listener: TcpListener,
    routes: SharedRoutes,
    client: HttpClient,
) -> JoinHandle<()> {
    let ctx = Arc::new(Ctx { routes, client });
    serve(listener, move |req, peer| handle(ctx.clone(), req, peer))
}

/// Serve the in-process statistics at `/metrics` in Prometheus text format.
pub fn start_metrics(listener: TcpListener) -> JoinHandle<()> {
    serve(listener, |req: Request<Incoming>, _peer| async move {
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
    })
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
}
