//! The host's side of the API server: credentials (loaded here and nowhere else), discovery
//! of kinds, and requests bounded by the grant's timeout and answer size.

use super::grant::KubeGrant;
use super::KubeFailure;
use http_body_util::BodyExt;
use kube::core::{ApiResource, DynamicObject, Resource as _};
use kube::discovery::Scope;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use tokio::sync::OnceCell;

/// One plugin's access to one cluster: shared by all its instances.
pub struct KubeAccess {
    pub plugin: std::sync::Arc<str>,
    pub grant: KubeGrant,
    /// The grant's kubeconfig, resolved against the TOML file's folder.
    kubeconfig: Option<PathBuf>,
    client: OnceCell<kube::Client>,
    /// apiVersion + kind -> resource and scope, filled by discovery.
    kinds: Mutex<HashMap<(String, String), Kind>>,
}

/// A resolved kind.
#[derive(Debug, Clone)]
pub struct Kind {
    pub resource: ApiResource,
    pub namespaced: bool,
}

impl std::fmt::Debug for KubeAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeAccess")
            .field("plugin", &self.plugin)
            .field("grant", &self.grant)
            .finish_non_exhaustive()
    }
}

impl KubeAccess {
    /// Check a plugin's `grants.kube` at load time (its calls last at most `wall_timeout`) and
    /// prepare its access; relative kubeconfig paths start at `base_dir` (the TOML file's
    /// folder).
    pub fn from_grant(
        plugin: &str,
        grant: &KubeGrant,
        base_dir: &std::path::Path,
        wall_timeout: std::time::Duration,
    ) -> Result<Self, crate::plugin::LoadError> {
        grant
            .check_shape(wall_timeout)
            .map_err(|e| crate::plugin::capabilities::grant_shape_error(plugin, e))?;
        let kubeconfig = grant.kubeconfig.as_ref().map(|p| base_dir.join(p));
        if let Some(path) = &kubeconfig {
            if !path.is_file() {
                return Err(crate::plugin::LoadError::new(
                    "grants.kube.kubeconfig",
                    format!(
                        "plugin `{plugin}`: grants.kube.kubeconfig `{}` is not a file",
                        path.display()
                    ),
                    "fix the path (relative paths start at this file's folder) or leave it out to use $KUBECONFIG or ~/.kube/config",
                ));
            }
        }
        Ok(Self::new(plugin.into(), grant.clone(), kubeconfig))
    }

    fn new(plugin: std::sync::Arc<str>, grant: KubeGrant, kubeconfig: Option<PathBuf>) -> Self {
        KubeAccess {
            plugin,
            grant,
            kubeconfig,
            client: OnceCell::new(),
            kinds: Mutex::new(HashMap::new()),
        }
    }

    /// The client, made on first use (loading a kubeconfig may run an exec credential plugin).
    async fn client(&self) -> Result<&kube::Client, KubeFailure> {
        self.client
            .get_or_try_init(|| async {
                let options = kube::config::KubeConfigOptions {
                    context: self.grant.context.clone(),
                    ..Default::default()
                };
                let config = match (&self.kubeconfig, &self.grant.context) {
                    (Some(path), _) => {
                        let file = kube::config::Kubeconfig::read_from(path).map_err(|e| {
                            format!("reading grants.kube.kubeconfig `{}`: {e}", path.display())
                        })?;
                        kube::Config::from_custom_kubeconfig(file, &options)
                            .await
                            .map_err(|e| {
                                format!("grants.kube.kubeconfig `{}`: {e}", path.display())
                            })?
                    }
                    (None, Some(_)) => kube::Config::from_kubeconfig(&options)
                        .await
                        .map_err(|e| format!("grants.kube.context: {e}"))?,
                    (None, None) => kube::Config::infer()
                        .await
                        .map_err(|e| format!("no kubeconfig or in-cluster account found: {e}"))?,
                };
                kube::Client::try_from(config).map_err(|e| format!("Kubernetes client: {e}"))
            })
            .await
            .map_err(|e: String| {
                KubeFailure::Unavailable(format!(
                    "plugin `{}`: {e}; fix [plugins.{}.grants.kube]",
                    self.plugin, self.plugin
                ))
            })
    }

    /// Resolve apiVersion + kind by discovery (cached).
    pub async fn kind(&self, api_version: &str, kind: &str) -> Result<Kind, KubeFailure> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(k) = self.kinds.lock().unwrap().get(&key) {
            return Ok(k.clone());
        }
        let (group, version) = match api_version.split_once('/') {
            Some((g, v)) => (g, v),
            None => ("", api_version),
        };
        let gvk = kube::core::GroupVersionKind::gvk(group, version, kind);
        let client = self.client().await?;
        let (resource, caps) = kube::discovery::pinned_kind(client, &gvk)
            .await
            .map_err(|e| match &e {
                kube::Error::Api(s) if s.code == 404 => KubeFailure::NotFound(format!(
                    "the API server serves no kind {kind} in {api_version}"
                )),
                kube::Error::Discovery(_) => KubeFailure::NotFound(format!(
                    "the API server serves no kind {kind} in {api_version}: {e}"
                )),
                _ => failure_of(e),
            })?;
        let k = Kind {
            resource,
            namespaced: caps.scope == Scope::Namespaced,
        };
        self.kinds.lock().unwrap().insert(key, k.clone());
        Ok(k)
    }

    /// The URL path of a kind's collection.
    pub fn collection(kind: &Kind, namespace: Option<&str>) -> kube::core::Request {
        kube::core::Request::new(DynamicObject::url_path(&kind.resource, namespace))
    }

    /// Send one request; the body of a 2xx answer, read up to the grant's size limit.
    pub async fn send(&self, request: http::Request<Vec<u8>>) -> Result<Vec<u8>, KubeFailure> {
        let client = self.client().await?;
        let response = client
            .send(request.map(kube::client::Body::from))
            .await
            .map_err(failure_of)?;
        let status = response.status();
        let limit = self.grant.max_response_bytes();
        let mut body = response.into_body();
        let mut bytes = Vec::new();
        while let Some(frame) = body.frame().await {
            let frame =
                frame.map_err(|e| KubeFailure::Unavailable(format!("reading the answer: {e}")))?;
            if let Some(data) = frame.data_ref() {
                if bytes.len() + data.len() > limit {
                    return Err(KubeFailure::TooLarge(format!(
                        "the API server's answer is larger than {} KiB: narrow the call (selectors) or raise grants.kube.max_response_kib of [plugins.{}]",
                        limit / 1024,
                        self.plugin
                    )));
                }
                bytes.extend_from_slice(data);
            }
        }
        if status.is_success() {
            return Ok(bytes);
        }
        let parsed: Option<kube::core::Status> = serde_json::from_slice(&bytes).ok();
        let (reason, message) = match parsed {
            Some(s) => (s.reason, s.message),
            None => (
                status.canonical_reason().unwrap_or("").to_string(),
                String::from_utf8_lossy(&bytes).chars().take(1024).collect(),
            ),
        };
        Err(match status.as_u16() {
            404 => KubeFailure::NotFound(message),
            code if code >= 500 => KubeFailure::Unavailable(format!("{code} {reason}: {message}")),
            code => KubeFailure::Api {
                code,
                reason,
                message,
            },
        })
    }
}

/// A client-side error (connection, TLS, credentials, API status from kube's helpers).
fn failure_of(e: kube::Error) -> KubeFailure {
    match e {
        kube::Error::Api(s) if s.code == 404 => KubeFailure::NotFound(s.message),
        kube::Error::Api(s) if s.code >= 500 => {
            KubeFailure::Unavailable(format!("{} {}: {}", s.code, s.reason, s.message))
        }
        kube::Error::Api(s) => KubeFailure::Api {
            code: s.code,
            reason: s.reason,
            message: s.message,
        },
        other => KubeFailure::Unavailable(other.to_string()),
    }
}
