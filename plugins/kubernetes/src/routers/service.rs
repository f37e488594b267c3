//! No router: the apex Service `<app>` selects the primary's pods or the candidate's
//! (blue-green). Only all-or-nothing switches.

use crate::api::{Api, DEPLOYMENT};
use crate::config::Config;
use crate::workload;
use dax_sdk::target::{PluginError, TrafficSplit};

pub fn unsupported(split: &TrafficSplit) -> Option<String> {
    let mut why = Vec::new();
    if !matches!(split.candidate_weight, 0 | 100) {
        why.push(format!("a {}% weight", split.candidate_weight));
    }
    if !split.matches.is_empty() {
        why.push("header/cookie matches".to_string());
    }
    if split.mirror_percent > 0 {
        why.push("mirroring".to_string());
    }
    (!why.is_empty()).then(|| {
        format!(
            "router \"service\" only switches the apex Service between primary and candidate (0 or 100 percent), \
             not {}; use router \"gateway-api\"",
            why.join(" or ")
        )
    })
}

pub fn set(
    api: &mut dyn Api,
    cfg: &Config,
    app: &str,
    split: &TrafficSplit,
) -> Result<(), PluginError> {
    let dep = api.get(DEPLOYMENT, app)?.ok_or_else(|| {
        PluginError::NotFound(format!(
            "Deployment {app} not found in namespace {}: run deploy first",
            api.namespace()
        ))
    })?;
    let labels = workload::match_labels(&dep).map_err(PluginError::InvalidInput)?;
    let selector = if split.candidate_weight == 100 {
        labels
    } else {
        workload::primary_labels(&labels)
    };
    let target_port = workload::target_port(
        cfg.target_port.as_ref(),
        &dep["spec"]["template"],
        cfg.container.as_deref(),
        cfg.port,
    );
    api.apply(workload::service(
        api.namespace(),
        app,
        &selector,
        cfg.port,
        &target_port,
    ))?;
    Ok(())
}
