//! Outbound HTTP (`wasi:http`): only to the `scheme://host:port` destinations in
//! `grants.http`, checked on every request, with credentials from `grants.http_auth` added by
//! the host so the plugin never holds them.

use crate::plugin::sandbox::{push_denial, PerCall};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use wasmtime_wasi_http::WasiHttpHooks;

/// A credential the host injects into requests to `destination`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAuth {
    /// `scheme://host:port`, exactly as in `grants.http`.
    pub destination: String,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub basic_user: Option<String>,
    #[serde(default)]
    pub basic_password: Option<String>,
}

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
}

impl HttpPolicy {
    pub(crate) fn new(plugin: &str, allowed: &[String], auth: &[HttpAuth]) -> anyhow::Result<Self> {
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
        })
    }

    /// Whether no destination is granted at all.
    pub fn is_empty(&self) -> bool {
        self.allowed.is_empty()
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

pub(crate) struct HttpHooks {
    policy: Arc<HttpPolicy>,
    /// The instance's denial list, for the error the engine reports when the call fails.
    denials: Arc<PerCall<Vec<String>>>,
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

impl HttpHooks {
    pub(crate) fn new(policy: Arc<HttpPolicy>, denials: Arc<PerCall<Vec<String>>>) -> Self {
        HttpHooks { policy, denials }
    }
}

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
        let denials = self.denials.clone();
        Box::new(async move {
            match verdict {
                Err(reason) => {
                    push_denial(&policy.plugin, &denials, reason);
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
