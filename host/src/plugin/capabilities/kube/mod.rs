//! `dax:host/kube`: Kubernetes API calls the host makes for a plugin.
//!
//! ```text
//!  plugin ──get/list/apply/patch/delete(kind-ref, name)──▶ KubeView (this file)
//!     grant: verb? ─▶ name? ─▶ API group? ─▶ discovery ─▶ resource? ─▶ namespace?
//!     client.rs: credentials (kube-rs), timeout, answer size limit ─▶ API server
//! ```
//!
//! The plugin holds no credential: kube-rs loads the kubeconfig (or the in-cluster service
//! account) in the host. Every check runs before any request leaves the host, and the API
//! group is checked before discovery, so a plugin cannot even probe kinds outside its grant.

mod client;
pub mod grant;

pub use client::KubeAccess;
pub use grant::KubeGrant;

use crate::plugin::bindings::capabilities::dax::host::kube::{
    self as wit, ApiStatus, Host, KindRef, KubeError, ListOptions, PatchBody,
};
use crate::plugin::sandbox::{push_denial, PerCall, PluginState};
use client::Kind;
use grant::{check_object_name, is_dns_label, Verb};
use kube::core::params::{DeleteParams, GetParams, ListParams, Patch, PatchParams};
use std::sync::Arc;
use wasmtime::component::{HasData, Linker};

/// The field manager of every server-side apply and patch.
pub const FIELD_MANAGER: &str = "dax";

/// Link `dax:host/kube`; each call sees only [`KubeView`], not the whole store.
pub fn add_to_linker(linker: &mut Linker<PluginState>) -> anyhow::Result<()> {
    wit::add_to_linker::<PluginState, KubeCapability>(linker, |state| KubeView {
        plugin: state.plugin.clone(),
        access: state.kube.clone(),
        denials: state.denials.clone(),
    })?;
    Ok(())
}

struct KubeCapability;
impl HasData for KubeCapability {
    type Data<'a> = KubeView;
}

/// What a `dax:host/kube` call may use of its plugin instance.
pub struct KubeView {
    plugin: Arc<str>,
    /// `None` without a `grants.kube` table: every call is refused.
    access: Option<Arc<KubeAccess>>,
    denials: Arc<PerCall<Vec<String>>>,
}

/// Why a call failed, before it becomes the WIT `kube-error`.
#[derive(Debug)]
pub enum KubeFailure {
    Denied(String),
    NotFound(String),
    Api {
        code: u16,
        reason: String,
        message: String,
    },
    Unavailable(String),
    TooLarge(String),
    Invalid(String),
}

impl From<KubeFailure> for KubeError {
    fn from(f: KubeFailure) -> Self {
        match f {
            KubeFailure::Denied(m) => KubeError::Denied(m),
            KubeFailure::NotFound(m) => KubeError::NotFound(m),
            KubeFailure::Api {
                code,
                reason,
                message,
            } => KubeError::Api(ApiStatus {
                code,
                reason,
                message,
            }),
            KubeFailure::Unavailable(m) => KubeError::Unavailable(m),
            KubeFailure::TooLarge(m) => KubeError::TooLarge(m),
            KubeFailure::Invalid(m) => KubeError::Invalid(m),
        }
    }
}

/// A checked call: the kind resolved, its namespace allowed.
struct Checked {
    kind: Kind,
    namespace: Option<String>,
}

impl KubeView {
    /// Run one call under the grant's deadline; log and record refusals.
    async fn call<T>(
        &self,
        verb: Verb,
        body: impl AsyncFnOnce(&KubeAccess) -> Result<T, KubeFailure>,
    ) -> Result<T, KubeError> {
        let result = match &self.access {
            None => Err(KubeFailure::Denied(format!(
                "plugin `{p}` has no Kubernetes grant: add [plugins.{p}.grants.kube] with the namespaces, resources and verbs it needs",
                p = self.plugin
            ))),
            Some(access) => match access.grant.allow_verb(&self.plugin, verb) {
                Err(why) => Err(KubeFailure::Denied(why)),
                Ok(()) => {
                    let timeout = access.grant.timeout();
                    match tokio::time::timeout(timeout, body(access)).await {
                        Ok(result) => result,
                        Err(_) => Err(KubeFailure::Unavailable(format!(
                            "the Kubernetes call took longer than {}: raise grants.kube.timeout of [plugins.{}] if the API server is that slow",
                            crate::plugin::spec::duration_str::format(timeout),
                            self.plugin
                        ))),
                    }
                }
            },
        };
        if let Err(KubeFailure::Denied(why)) = &result {
            push_denial(&self.plugin, &self.denials, why.clone());
        }
        result.map_err(KubeError::from)
    }
}

/// Check a kind-ref against the grant, resolving the kind by discovery in between.
async fn check(access: &KubeAccess, of: &KindRef) -> Result<Checked, KubeFailure> {
    let plugin = &access.plugin;
    let api_version_ok = !of.api_version.is_empty()
        && of.api_version.len() <= 253
        && of.api_version.matches('/').count() <= 1
        && of
            .api_version
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '/'));
    if !api_version_ok {
        return Err(KubeFailure::Invalid(format!(
            "`{}` is not an apiVersion (e.g. \"v1\", \"apps/v1\")",
            crate::plugin::capabilities::log::escape(&of.api_version)
        )));
    }
    if of.kind.is_empty()
        || of.kind.len() > 63
        || !of.kind.chars().all(|c| c.is_ascii_alphanumeric())
    {
        return Err(KubeFailure::Invalid(format!(
            "`{}` is not a kind (e.g. \"Deployment\")",
            crate::plugin::capabilities::log::escape(&of.kind)
        )));
    }
    let group = of
        .api_version
        .rsplit_once('/')
        .map(|(g, _)| g)
        .unwrap_or("");
    access
        .grant
        .allow_group(plugin, group, &of.kind)
        .map_err(KubeFailure::Denied)?;
    let kind = access.kind(&of.api_version, &of.kind).await?;
    access
        .grant
        .allow_resource(plugin, &kind.resource.group, &kind.resource.plural)
        .map_err(KubeFailure::Denied)?;
    match (&of.namespace, kind.namespaced) {
        (Some(ns), true) => {
            if !is_dns_label(ns) {
                return Err(KubeFailure::Invalid(format!(
                    "`{}` is not a namespace name",
                    crate::plugin::capabilities::log::escape(ns)
                )));
            }
            access
                .grant
                .allow_namespace(plugin, ns)
                .map_err(KubeFailure::Denied)?;
        }
        (None, true) => {
            return Err(KubeFailure::Invalid(format!(
                "{} is namespaced: give the namespace",
                of.kind
            )))
        }
        (Some(_), false) => {
            return Err(KubeFailure::Invalid(format!(
                "{} is cluster-scoped: give no namespace",
                of.kind
            )))
        }
        (None, false) => {}
    }
    Ok(Checked {
        kind,
        namespace: of.namespace.clone(),
    })
}

fn name_ok(name: &str) -> Result<(), KubeFailure> {
    check_object_name(name).map_err(KubeFailure::Invalid)
}

fn build(
    r: Result<http::Request<Vec<u8>>, kube::core::request::Error>,
) -> Result<http::Request<Vec<u8>>, KubeFailure> {
    r.map_err(|e| KubeFailure::Invalid(e.to_string()))
}

fn parse_json(what: &str, text: &str) -> Result<serde_json::Value, KubeFailure> {
    serde_json::from_str(text).map_err(|e| KubeFailure::Invalid(format!("{what} is not JSON: {e}")))
}

/// The answer as the plugin gets it: JSON text without `managedFields` (bookkeeping of the
/// API server that is often larger than the object itself).
fn answer(bytes: Vec<u8>) -> String {
    match serde_json::from_slice::<serde_json::Value>(&bytes) {
        Ok(mut v) => {
            strip_managed_fields(&mut v);
            if let Some(items) = v.get_mut("items").and_then(|i| i.as_array_mut()) {
                items.iter_mut().for_each(strip_managed_fields);
            }
            v.to_string()
        }
        Err(_) => String::from_utf8_lossy(&bytes).into_owned(),
    }
}

fn strip_managed_fields(v: &mut serde_json::Value) {
    if let Some(meta) = v.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("managedFields");
    }
}

fn patch_params() -> PatchParams {
    PatchParams {
        field_manager: Some(FIELD_MANAGER.into()),
        ..Default::default()
    }
}

impl Host for KubeView {
    async fn get(&mut self, of: KindRef, name: String) -> Result<String, KubeError> {
        self.call(Verb::Get, async |access| {
            name_ok(&name)?;
            let c = check(access, &of).await?;
            let req = KubeAccess::collection(&c.kind, c.namespace.as_deref())
                .get(&name, &GetParams::default());
            Ok(answer(access.send(build(req)?).await?))
        })
        .await
    }

    async fn get_status(&mut self, of: KindRef, name: String) -> Result<String, KubeError> {
        self.call(Verb::Get, async |access| {
            name_ok(&name)?;
            let c = check(access, &of).await?;
            let req = KubeAccess::collection(&c.kind, c.namespace.as_deref())
                .get_subresource("status", &name);
            Ok(answer(access.send(build(req)?).await?))
        })
        .await
    }

    async fn list(&mut self, of: KindRef, options: ListOptions) -> Result<String, KubeError> {
        self.call(Verb::List, async |access| {
            let c = check(access, &of).await?;
            let params = ListParams {
                label_selector: options.label_selector.clone(),
                field_selector: options.field_selector.clone(),
                ..Default::default()
            };
            let req = KubeAccess::collection(&c.kind, c.namespace.as_deref()).list(&params);
            Ok(answer(access.send(build(req)?).await?))
        })
        .await
    }

    async fn apply(&mut self, object: String, force: bool) -> Result<String, KubeError> {
        self.call(Verb::Apply, async |access| {
            let value = parse_json("the object", &object)?;
            let field = |path: &[&str]| {
                let mut v = &value;
                for p in path {
                    v = v.get(p)?;
                }
                v.as_str().map(str::to_string)
            };
            let (Some(api_version), Some(kind), Some(name)) = (
                field(&["apiVersion"]),
                field(&["kind"]),
                field(&["metadata", "name"]),
            ) else {
                return Err(KubeFailure::Invalid(
                    "the object needs string fields apiVersion, kind and metadata.name".into(),
                ));
            };
            name_ok(&name)?;
            let of = KindRef {
                api_version,
                kind,
                namespace: field(&["metadata", "namespace"]),
            };
            let c = check(access, &of).await?;
            let mut params = PatchParams::apply(FIELD_MANAGER);
            params.force = force;
            let req = KubeAccess::collection(&c.kind, c.namespace.as_deref()).patch(
                &name,
                &params,
                &Patch::Apply(&value),
            );
            Ok(answer(access.send(build(req)?).await?))
        })
        .await
    }

    async fn patch(
        &mut self,
        of: KindRef,
        name: String,
        body: PatchBody,
    ) -> Result<String, KubeError> {
        self.call(Verb::Patch, async |access| {
            name_ok(&name)?;
            let patch = match &body {
                PatchBody::Merge(text) => Patch::Merge(parse_json("the merge patch", text)?),
                PatchBody::Strategic(text) => {
                    Patch::Strategic(parse_json("the strategic merge patch", text)?)
                }
                PatchBody::Json(text) => {
                    let ops: json_patch::Patch = serde_json::from_str(text).map_err(|e| {
                        KubeFailure::Invalid(format!(
                            "the JSON patch is not a list of RFC 6902 operations: {e}"
                        ))
                    })?;
                    Patch::Json(ops)
                }
            };
            let c = check(access, &of).await?;
            let req = KubeAccess::collection(&c.kind, c.namespace.as_deref()).patch(
                &name,
                &patch_params(),
                &patch,
            );
            Ok(answer(access.send(build(req)?).await?))
        })
        .await
    }

    async fn delete(&mut self, of: KindRef, name: String) -> Result<bool, KubeError> {
        self.call(Verb::Delete, async |access| {
            name_ok(&name)?;
            let c = check(access, &of).await?;
            let req = KubeAccess::collection(&c.kind, c.namespace.as_deref())
                .delete(&name, &DeleteParams::background());
            match access.send(build(req)?).await {
                Ok(_) => Ok(true),
                Err(KubeFailure::NotFound(_)) => Ok(false),
                Err(e) => Err(e),
            }
        })
        .await
    }
}
