//! The target calls against the API: what `deploy`, `status`, `scale`, `promote`,
//! `rollback` and `finalize` read and write. Each call reads the real state and applies
//! the desired one (server-side apply), so repeating a call (`dax resume` after a crash)
//! converges on the same objects.

use crate::api::{Api, DEPLOYMENT, HPA};
use crate::autoscaler;
use crate::config::Config;
use crate::configrefs::{self, RefKind};
use crate::readiness::{self, Observed};
use crate::routers;
use crate::workload::{self, canary_name, primary_name, VERSION};
use dax_sdk::target::{PluginError, Slot};
use serde_json::{json, Value};

/// On `<app>-primary` while a promotion is under way: the version being promoted...
pub const PROMOTING: &str = "dax.dev/promoting";
/// ...and the primary's pod template and version before it, which `rollback` restores.
pub const PREVIOUS_TEMPLATE: &str = "dax.dev/previous-template";
pub const PREVIOUS_VERSION: &str = "dax.dev/previous-version";

/// How often `promote` looks at the primary's rollout.
const POLL_MS: u64 = 200;

/// What `deploy` needs from the engine's workload.
pub struct Rollout<'a> {
    pub app: &'a str,
    pub version: &'a str,
    pub artifact: &'a str,
    pub replicas: u32,
    /// `[target.workload]` as JSON.
    pub spec: &'a Value,
}

fn invalid(e: String) -> PluginError {
    PluginError::InvalidInput(e)
}

fn must_exist(
    found: Option<Value>,
    api: &dyn Api,
    name: &str,
    hint: &str,
) -> Result<Value, PluginError> {
    found.ok_or_else(|| {
        PluginError::NotFound(format!(
            "Deployment {name} not found in namespace {}{hint}",
            api.namespace()
        ))
    })
}

/// Create or update the candidate `<app>` next to `<app>-primary` (created from the app's
/// current pod template on the first rollout), the three Services, the primary's HPA and
/// the route, which sends nothing to the candidate.
pub fn deploy(api: &mut dyn Api, cfg: &Config, w: &Rollout) -> Result<(), PluginError> {
    let app = w.app;
    let manifest = workload::manifest(w.spec, app).map_err(PluginError::InvalidConfig)?;
    let existing = api.get(DEPLOYMENT, app)?;
    let source = match (&existing, &manifest) {
        (Some(e), _) => e.clone(),
        (None, Some(m)) => m.clone(),
        (None, None) => {
            return Err(PluginError::NotFound(format!(
                "Deployment {app} not found in namespace {}: create it, or give its manifest as [target.workload] manifest",
                api.namespace()
            )))
        }
    };
    let labels = workload::match_labels(&source).map_err(invalid)?;
    let template = &source["spec"]["template"];
    let container = cfg.container.as_deref();

    if api.get(DEPLOYMENT, &primary_name(app))?.is_none() {
        // First rollout: the primary starts as the app runs now (or as the manifest says).
        let replicas = match source["spec"]["replicas"].as_u64() {
            Some(r) if r > 0 => r as u32,
            _ => w.replicas.max(1),
        };
        let version = workload::version_of(&source, container);
        let template = primary_template(api, cfg, app, template)?;
        api.apply(
            workload::primary_deployment(
                api.namespace(),
                app,
                &source,
                &template,
                replicas,
                &version,
            )
            .map_err(invalid)?,
        )?;
    }
    mirror_hpa(api, cfg, app)?;

    let target_port =
        workload::target_port(cfg.target_port.as_ref(), template, container, cfg.port);
    let ns = api.namespace().to_string();
    let primary_labels = workload::primary_labels(&labels);
    api.apply(workload::service(
        &ns,
        &primary_name(app),
        &primary_labels,
        cfg.port,
        &target_port,
    ))?;
    api.apply(workload::service(
        &ns,
        &canary_name(app),
        &labels,
        cfg.port,
        &target_port,
    ))?;
    if cfg.router != crate::config::RouterKind::Service {
        // With the service router the apex is the switch itself: routers::reset below.
        api.apply(workload::service(
            &ns,
            app,
            &primary_labels,
            cfg.port,
            &target_port,
        ))?;
    }

    let candidate = workload::candidate_deployment(
        &ns,
        app,
        manifest.as_ref(),
        template,
        container,
        &workload::Candidate {
            artifact: w.artifact,
            replicas: w.replicas,
            version: w.version,
        },
    )
    .map_err(invalid)?;
    api.apply(candidate)?;
    routers::prepare(api, cfg, app)?;
    routers::reset(api, cfg, app)
}

/// The app's pod template for the primary: with `copy_config`, the ConfigMaps and Secrets
/// it references are copied to `<name>-primary` now and the template points at the copies.
fn primary_template(
    api: &mut dyn Api,
    cfg: &Config,
    app: &str,
    template: &Value,
) -> Result<Value, PluginError> {
    let mut template = template.clone();
    if !cfg.copy_config {
        return Ok(template);
    }
    let mut copied = Vec::new();
    for (kind, name) in configrefs::references(&template["spec"]) {
        // A reference to a missing object is left alone: the pods fail the same way as the app's would.
        let Some(source) = api.get(kind.kind(), &name)? else {
            continue;
        };
        if !configrefs::tracked(&source) {
            continue;
        }
        api.apply(configrefs::copy(kind, &source, api.namespace(), app))?;
        copied.push((kind, name));
    }
    configrefs::point_at_copies(&mut template["spec"], &copied);
    Ok(template)
}

fn mirror_hpa(api: &mut dyn Api, cfg: &Config, app: &str) -> Result<(), PluginError> {
    if !cfg.hpa {
        return Ok(());
    }
    let hpas = api.list(HPA).map_err(|e| match e {
        PluginError::InvalidConfig(m) => {
            PluginError::InvalidConfig(format!("{m}, or set `hpa = false` in the plugin's config"))
        }
        other => other,
    })?;
    if let Some(hpa) = autoscaler::find(&hpas, app) {
        let copy = autoscaler::primary_hpa(hpa, app, api.namespace());
        api.apply(copy)?;
    }
    Ok(())
}

fn slot_name(app: &str, which: Slot) -> String {
    match which {
        Slot::Stable => primary_name(app),
        Slot::Candidate => app.to_string(),
    }
}

/// One slot's state: Flagger's readiness rules; a Deployment past its progress deadline is
/// an error (the engine rolls back); a missing one reports nothing desired.
pub fn status(
    api: &mut dyn Api,
    cfg: &Config,
    app: &str,
    which: Slot,
) -> Result<(Observed, String), PluginError> {
    let mut name = slot_name(app, which);
    let mut found = api.get(DEPLOYMENT, &name)?;
    if found.is_none() && which == Slot::Stable {
        // Before the first rollout the app's own Deployment is what serves: strategies
        // size the rollout from it.
        found = api.get(DEPLOYMENT, app)?;
        name = app.to_string();
    }
    let Some(dep) = found else {
        let none = Observed {
            desired: 0,
            ready: 0,
            updated: 0,
            message: format!("Deployment {name} does not exist"),
        };
        return Ok((none, String::new()));
    };
    let observed = readiness::assess(&dep, cfg.ready_threshold).map_err(PluginError::Internal)?;
    let version = if which == Slot::Candidate && observed.desired == 0 {
        String::new()
    } else {
        workload::version_of(&dep, cfg.container.as_deref())
    };
    Ok((observed, version))
}

pub fn scale(api: &mut dyn Api, app: &str, which: Slot, replicas: u32) -> Result<(), PluginError> {
    let name = slot_name(app, which);
    if api.get(DEPLOYMENT, &name)?.is_none() {
        return Err(PluginError::NotFound(format!(
            "Deployment {name} not found in namespace {}: deploy creates it",
            api.namespace()
        )));
    }
    api.merge_patch(
        DEPLOYMENT,
        &name,
        json!({ "spec": { "replicas": replicas } }),
    )?;
    Ok(())
}

/// The candidate's pod template goes into `<app>-primary` (remembering the old one until
/// the primary has rolled out), then all traffic to the primary and the candidate to zero.
pub fn promote(api: &mut dyn Api, cfg: &Config, app: &str) -> Result<(), PluginError> {
    let candidate = must_exist(api.get(DEPLOYMENT, app)?, api, app, ": nothing to promote")?;
    let primary = must_exist(
        api.get(DEPLOYMENT, &primary_name(app))?,
        api,
        &primary_name(app),
        ": run deploy first",
    )?;
    let container = cfg.container.as_deref();
    let version = workload::version_of(&candidate, container);
    let annotations = &primary["metadata"]["annotations"];
    let under_way = annotations[PROMOTING] == version.as_str();
    if workload::version_of(&primary, container) != version || under_way {
        let template = primary_template(api, cfg, app, &candidate["spec"]["template"])?;
        let current = |key: &str| primary["spec"][key].as_u64().unwrap_or(1) as u32;
        // A strategy that scaled the primary down (blue-green, rolling) gets the candidate's size back.
        let replicas =
            current("replicas").max(candidate["spec"]["replicas"].as_u64().unwrap_or(1) as u32);
        let mut object = workload::primary_deployment(
            api.namespace(),
            app,
            &candidate,
            &template,
            replicas,
            &version,
        )
        .map_err(invalid)?;
        let (previous_template, previous_version) = if under_way {
            (
                annotations[PREVIOUS_TEMPLATE].clone(),
                annotations[PREVIOUS_VERSION].clone(),
            )
        } else {
            (
                json!(primary["spec"]["template"].to_string()),
                json!(workload::version_of(&primary, container)),
            )
        };
        let meta = &mut object["metadata"]["annotations"];
        meta[PROMOTING] = json!(version);
        meta[PREVIOUS_TEMPLATE] = previous_template;
        meta[PREVIOUS_VERSION] = previous_version;
        api.apply(object)?;
    }
    mirror_hpa(api, cfg, app)?;
    wait_for_primary(api, cfg, app)?;
    routers::reset(api, cfg, app)?;
    api.merge_patch(DEPLOYMENT, app, json!({ "spec": { "replicas": 0 } }))?;
    forget_promotion(api, app)
}

fn wait_for_primary(api: &mut dyn Api, cfg: &Config, app: &str) -> Result<(), PluginError> {
    let name = primary_name(app);
    let timeout = cfg.promotion_timeout_ms();
    let start = api.now_ms();
    loop {
        let dep = must_exist(api.get(DEPLOYMENT, &name)?, api, &name, "")?;
        let o = readiness::assess(&dep, cfg.ready_threshold).map_err(PluginError::Internal)?;
        if o.ready >= o.desired {
            return Ok(());
        }
        if api.now_ms().saturating_sub(start) >= timeout {
            return Err(PluginError::Unavailable(format!(
                "{name} did not finish rolling out within promotion_timeout = {} ({}); raise `promotion_timeout` \
                 in the plugin's config and `limits.wall_timeout` in [plugins.NAME.limits] above it",
                cfg.promotion_timeout, o.message
            )));
        }
        api.sleep_ms(POLL_MS);
    }
}

/// Drop the promotion bookkeeping from the primary, if any.
fn forget_promotion(api: &mut dyn Api, app: &str) -> Result<(), PluginError> {
    let name = primary_name(app);
    let Some(primary) = api.get(DEPLOYMENT, &name)? else {
        return Ok(());
    };
    if primary["metadata"]["annotations"].get(PROMOTING).is_some() {
        api.merge_patch(
            DEPLOYMENT,
            &name,
            json!({ "metadata": { "annotations": { PROMOTING: null, PREVIOUS_TEMPLATE: null, PREVIOUS_VERSION: null } } }),
        )?;
    }
    Ok(())
}

/// All traffic to the primary (restored to its previous template if a promotion was cut
/// short) and the candidate to zero.
pub fn rollback(api: &mut dyn Api, cfg: &Config, app: &str) -> Result<(), PluginError> {
    // Each part is tried even when an earlier one fails (e.g. a route the grant does not
    // cover): the candidate leaves however the traffic stands. The first error is reported.
    let restored = (|| {
        if let Some(primary) = api.get(DEPLOYMENT, &primary_name(app))? {
            if let Some(restored) = restore_primary(&primary) {
                api.apply(restored)?;
            }
        }
        Ok(())
    })();
    let routed = routers::reset(api, cfg, app);
    let scaled = (|| {
        if api.get(DEPLOYMENT, app)?.is_some() {
            api.merge_patch(DEPLOYMENT, app, json!({ "spec": { "replicas": 0 } }))?;
        }
        Ok(())
    })();
    restored.and(routed).and(scaled)
}

/// The primary as it was before an unfinished promotion, or `None`.
pub fn restore_primary(primary: &Value) -> Option<Value> {
    let annotations = &primary["metadata"]["annotations"];
    annotations.get(PROMOTING)?;
    let template: Value = serde_json::from_str(annotations[PREVIOUS_TEMPLATE].as_str()?).ok()?;
    let spec = workload::deployment_spec(
        primary["spec"]["replicas"].clone(),
        primary["spec"]["selector"].clone(),
        template,
        primary,
    );
    Some(json!({
        "apiVersion": DEPLOYMENT.api_version,
        "kind": DEPLOYMENT.kind,
        "metadata": {
            "name": primary["metadata"]["name"].clone(),
            "namespace": primary["metadata"]["namespace"].clone(),
            "labels": { workload::MANAGED_BY.0: workload::MANAGED_BY.1 },
            "annotations": { VERSION: annotations[PREVIOUS_VERSION].clone() },
        },
        "spec": spec,
    }))
}

/// Remove what only the rollout needed: the router's temporary objects, promotion
/// bookkeeping, and copies of ConfigMaps/Secrets the primary no longer uses.
pub fn finalize(api: &mut dyn Api, cfg: &Config, app: &str) -> Result<(), PluginError> {
    routers::finalize(api, cfg, app)?;
    forget_promotion(api, app)?;
    if !cfg.copy_config {
        return Ok(());
    }
    let Some(primary) = api.get(DEPLOYMENT, &primary_name(app))? else {
        return Ok(());
    };
    let in_use = configrefs::references(&primary["spec"]["template"]["spec"]);
    for kind in [RefKind::ConfigMap, RefKind::Secret] {
        let uses_kind = in_use.iter().any(|(k, _)| *k == kind);
        let objects = match api.list(kind.kind()) {
            Ok(o) => o,
            // Not granted (e.g. no `secrets`) and not used: nothing of this kind was copied.
            Err(PluginError::InvalidConfig(_)) if !uses_kind => continue,
            Err(e) => return Err(e),
        };
        for o in objects {
            let name = o["metadata"]["name"].as_str().unwrap_or_default();
            let ours = o["metadata"]["labels"][workload::MANAGED_BY.0] == workload::MANAGED_BY.1
                && o["metadata"]["annotations"][configrefs::COPY_FOR] == app;
            if ours && !in_use.iter().any(|(k, n)| *k == kind && n == name) {
                api.delete(kind.kind(), name)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
