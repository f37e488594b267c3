//! The Kubernetes API as the plugin sees it: the host's `dax:host/kube` calls behind a
//! trait (so the rollout logic runs against an in-memory fake in unit tests), returning
//! `serde_json::Value` objects and the plugin's own errors.

use dax_sdk::target::PluginError;
use serde_json::Value;

/// One kind the plugin touches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    pub api_version: &'static str,
    pub kind: &'static str,
    /// `group/plural` as written in the grant's `resources`.
    pub grant: &'static str,
}

pub const DEPLOYMENT: Kind = Kind {
    api_version: "apps/v1",
    kind: "Deployment",
    grant: "apps/deployments",
};
pub const SERVICE: Kind = Kind {
    api_version: "v1",
    kind: "Service",
    grant: "services",
};
pub const CONFIG_MAP: Kind = Kind {
    api_version: "v1",
    kind: "ConfigMap",
    grant: "configmaps",
};
pub const SECRET: Kind = Kind {
    api_version: "v1",
    kind: "Secret",
    grant: "secrets",
};
pub const HPA: Kind = Kind {
    api_version: "autoscaling/v2",
    kind: "HorizontalPodAutoscaler",
    grant: "autoscaling/horizontalpodautoscalers",
};
pub const HTTP_ROUTE: Kind = Kind {
    api_version: "gateway.networking.k8s.io/v1",
    kind: "HTTPRoute",
    grant: "gateway.networking.k8s.io/httproutes",
};
pub const VIRTUAL_SERVICE: Kind = Kind {
    api_version: "networking.istio.io/v1",
    kind: "VirtualService",
    grant: "networking.istio.io/virtualservices",
};
pub const DESTINATION_RULE: Kind = Kind {
    api_version: "networking.istio.io/v1",
    kind: "DestinationRule",
    grant: "networking.istio.io/destinationrules",
};
pub const INGRESS: Kind = Kind {
    api_version: "networking.k8s.io/v1",
    kind: "Ingress",
    grant: "networking.k8s.io/ingresses",
};

/// The calls the plugin makes, all in one namespace.
pub trait Api {
    /// The object, or `None` when it does not exist.
    fn get(&mut self, kind: Kind, name: &str) -> Result<Option<Value>, PluginError>;
    /// Every object of a kind in the namespace.
    fn list(&mut self, kind: Kind) -> Result<Vec<Value>, PluginError>;
    /// Server-side apply (field manager `dax`, forced: the plugin owns what it writes).
    fn apply(&mut self, object: Value) -> Result<Value, PluginError>;
    /// JSON merge patch.
    fn merge_patch(&mut self, kind: Kind, name: &str, patch: Value) -> Result<Value, PluginError>;
    /// `false` when it did not exist.
    fn delete(&mut self, kind: Kind, name: &str) -> Result<bool, PluginError>;
    fn namespace(&self) -> &str;
    /// Wait between two looks at a rollout.
    fn sleep_ms(&mut self, ms: u64);
    /// Milliseconds since some fixed point, for timeouts.
    fn now_ms(&mut self) -> u64;
}

/// An object's skeleton: apiVersion, kind, name and the API's namespace.
pub fn object(api: &dyn Api, kind: Kind, name: &str) -> Value {
    serde_json::json!({
        "apiVersion": kind.api_version,
        "kind": kind.kind,
        "metadata": { "name": name, "namespace": api.namespace() },
    })
}

#[cfg(target_arch = "wasm32")]
pub use host::HostApi;

#[cfg(target_arch = "wasm32")]
mod host {
    use super::{Api, Kind};
    use dax_sdk::target::kube::{self, KindRef, KubeError, ListOptions, PatchBody};
    use dax_sdk::target::PluginError;
    use serde_json::Value;

    /// The host's `dax:host/kube`, scoped by the operator's grant. Counts its requests.
    pub struct HostApi {
        namespace: String,
        pub requests: u32,
    }

    impl HostApi {
        pub fn new(namespace: &str) -> HostApi {
            HostApi {
                namespace: namespace.to_string(),
                requests: 0,
            }
        }
        fn of(&self, kind: Kind) -> KindRef {
            KindRef {
                api_version: kind.api_version.into(),
                kind: kind.kind.into(),
                namespace: Some(self.namespace.clone()),
            }
        }
    }

    fn parse(text: String, what: &str) -> Result<Value, PluginError> {
        serde_json::from_str(&text).map_err(|e| {
            PluginError::Internal(format!("{what}: the API answered invalid JSON: {e}"))
        })
    }

    /// What the operator reads: the call, and what to do about it.
    fn error(kind: Kind, call: &str, e: KubeError) -> PluginError {
        let what = format!("{call} {}", kind.kind);
        match e {
            KubeError::Denied(m) => PluginError::InvalidConfig(format!(
                "{what}: {m} (the plugin needs `{}` in `resources` of [plugins.NAME.grants.kube])",
                kind.grant
            )),
            KubeError::NotFound(m) => PluginError::NotFound(format!("{what}: {m}")),
            KubeError::Api(s) => {
                let m = format!("{what}: {} {}: {}", s.code, s.reason, s.message);
                match s.code {
                    409 | 429 => PluginError::Unavailable(m),
                    c if c >= 500 => PluginError::Unavailable(m),
                    400 | 422 => PluginError::InvalidInput(m),
                    _ => PluginError::Internal(m),
                }
            }
            KubeError::Unavailable(m) => PluginError::Unavailable(format!("{what}: {m}")),
            KubeError::TooLarge(m) => PluginError::Internal(format!("{what}: {m}")),
            KubeError::Invalid(m) => PluginError::Internal(format!("{what}: {m}")),
        }
    }

    impl Api for HostApi {
        fn get(&mut self, kind: Kind, name: &str) -> Result<Option<Value>, PluginError> {
            self.requests += 1;
            match kube::get(&self.of(kind), name) {
                Ok(text) => parse(text, "get").map(Some),
                Err(KubeError::NotFound(_)) => Ok(None),
                Err(e) => Err(error(kind, "get", e)),
            }
        }
        fn list(&mut self, kind: Kind) -> Result<Vec<Value>, PluginError> {
            self.requests += 1;
            let text = kube::list(
                &self.of(kind),
                &ListOptions {
                    label_selector: None,
                    field_selector: None,
                },
            )
            .map_err(|e| error(kind, "list", e))?;
            let mut list = parse(text, "list")?;
            Ok(match list.get_mut("items").map(Value::take) {
                Some(Value::Array(items)) => items,
                _ => Vec::new(),
            })
        }
        fn apply(&mut self, object: Value) -> Result<Value, PluginError> {
            self.requests += 1;
            let kind = super::kind_of(&object);
            kube::apply(&object.to_string(), true)
                .map_err(|e| error(kind, "apply", e))
                .and_then(|t| parse(t, "apply"))
        }
        fn merge_patch(
            &mut self,
            kind: Kind,
            name: &str,
            patch: Value,
        ) -> Result<Value, PluginError> {
            self.requests += 1;
            kube::patch(&self.of(kind), name, &PatchBody::Merge(patch.to_string()))
                .map_err(|e| error(kind, "patch", e))
                .and_then(|t| parse(t, "patch"))
        }
        fn delete(&mut self, kind: Kind, name: &str) -> Result<bool, PluginError> {
            self.requests += 1;
            kube::delete(&self.of(kind), name).map_err(|e| error(kind, "delete", e))
        }
        fn namespace(&self) -> &str {
            &self.namespace
        }
        fn sleep_ms(&mut self, ms: u64) {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        fn now_ms(&mut self) -> u64 {
            use std::sync::OnceLock;
            use std::time::Instant;
            static START: OnceLock<Instant> = OnceLock::new();
            START.get_or_init(Instant::now).elapsed().as_millis() as u64
        }
    }
}

/// The [`Kind`] of an object the plugin built (for error messages).
pub fn kind_of(object: &Value) -> Kind {
    let k = object["kind"].as_str().unwrap_or_default();
    [
        DEPLOYMENT, SERVICE, CONFIG_MAP, SECRET, HPA, HTTP_ROUTE, INGRESS,
    ]
    .into_iter()
    .find(|x| x.kind == k)
    .unwrap_or(DEPLOYMENT)
}
