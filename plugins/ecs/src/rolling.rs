//! `mode = "rolling"`: the stable service rolls onto the new revision through ECS's own
//! deployment (minimumHealthyPercent / maximumPercent, the circuit breaker), and dax's
//! strategy (builtin:rolling) analyzes and gates around it.
//!
//! There is no second service and no traffic to move: `scale` and a weight-0 `set-traffic`
//! are no-ops, weights and matches are refused (and `supported-traffic` says so, so `dax
//! validate` refuses canary, blue-green and A/B strategies). The candidate slot is the
//! service's deployment of the new revision; the stable slot is the service. The rollout is
//! remembered in two tags of the service (`dax.previous`, `dax.candidate`), so rollback is
//! idempotent and `dax resume` can repeat any call: rollback reverts only while the service
//! still runs the candidate revision, and promotion clears `dax.candidate`.

use crate::api::Api;
use crate::plan::{self, Config, CANDIDATE_TAG, PREVIOUS_TAG};
use dax_sdk::target::*;

pub fn traffic_support() -> TrafficSupport {
    TrafficSupport {
        weights: false,
        header_matches: false,
        cookie_matches: false,
        mirroring: false,
        note: "mode = \"rolling\": ECS replaces the service's tasks in place and moves no traffic; use builtin:rolling (or mode = \"services\" for canary, blue-green and A/B)".into(),
    }
}

fn stable(api: &Api, app: &str, c: &Config) -> Result<serde_json::Value, PluginError> {
    api.service_with_tags(app)?.ok_or_else(|| {
        PluginError::NotFound(format!(
            "no ECS service `{app}` in cluster `{}`: create the service first",
            c.cluster
        ))
    })
}

pub fn deploy(c: &Config, w: &Workload) -> Result<(), PluginError> {
    let api = Api::new(c);
    let service = stable(&api, &w.app, c)?;
    let current = plan::str_of(&service, "taskDefinition").to_string();
    let td = api.task_definition(&current)?;
    // Resume: the service already rolls out (or runs) this version.
    if plan::version_of(&td) == w.version {
        return Ok(());
    }
    let register =
        plan::new_revision(&td, c, &w.artifact, &w.version).map_err(PluginError::InvalidInput)?;
    let candidate = api.register_task_definition(&register)?;
    // Tags first: a restart between the two calls then finds what to roll back to.
    api.tag(
        plan::str_of(&service, "serviceArn"),
        &[(PREVIOUS_TAG, &current), (CANDIDATE_TAG, &candidate)],
    )?;
    api.update_service_with(plan::rolling_update(
        c,
        &w.app,
        &candidate,
        Some(w.replicas),
    ))
}

pub fn set_traffic(split: &TrafficSplit) -> Result<(), PluginError> {
    if split.candidate_weight == 0 && split.matches.is_empty() && split.mirror_percent == 0 {
        return Ok(()); // all traffic on what the service runs: always true
    }
    Err(PluginError::Unsupported(
        "mode = \"rolling\" moves no traffic (ECS replaces tasks in place): use builtin:rolling, or mode = \"services\" for weights and matches".into(),
    ))
}

pub fn status(c: &Config, app: &str, which: Slot) -> Result<WorkloadStatus, PluginError> {
    let api = Api::new(c);
    let Some(service) = api.service_with_tags(app)? else {
        return Ok(WorkloadStatus {
            desired: 0,
            ready: 0,
            updated: 0,
            version: String::new(),
            message: format!("no service {app}"),
        });
    };
    let current = plan::str_of(&service, "taskDefinition");
    let rolling_out = plan::tag_of(&service, CANDIDATE_TAG) == current && !current.is_empty();
    let health = if c.stable_target_group_arn.is_empty() {
        Vec::new()
    } else {
        api.target_health(&c.stable_target_group_arn)?
    };
    match which {
        Slot::Candidate if rolling_out => {
            let version = plan::version_of(&api.task_definition(current)?);
            Ok(plan::rolling_readiness(&service, current, &health, version))
        }
        Slot::Candidate => Ok(WorkloadStatus {
            desired: 0,
            ready: 0,
            updated: 0,
            version: String::new(),
            message: format!("{app}: no rollout of dax in progress"),
        }),
        Slot::Stable => {
            // While rolling out, the stable version is the one being replaced.
            let of = if rolling_out {
                plan::tag_of(&service, PREVIOUS_TAG)
            } else {
                current
            };
            let version = plan::version_of(&api.task_definition(of)?);
            Ok(plan::readiness(&service, &health, version))
        }
    }
}

pub fn promote(c: &Config, app: &str) -> Result<(), PluginError> {
    let api = Api::new(c);
    let service = stable(&api, app, c)?;
    if !plan::tag_of(&service, CANDIDATE_TAG).is_empty() {
        api.tag(plan::str_of(&service, "serviceArn"), &[(CANDIDATE_TAG, "")])?;
    }
    Ok(())
}

pub fn rollback(c: &Config, app: &str) -> Result<(), PluginError> {
    let api = Api::new(c);
    let service = stable(&api, app, c)?;
    let current = plan::str_of(&service, "taskDefinition");
    let previous = plan::tag_of(&service, PREVIOUS_TAG);
    if plan::tag_of(&service, CANDIDATE_TAG) == current
        && !current.is_empty()
        && !previous.is_empty()
    {
        api.update_service_with(plan::rolling_update(c, app, previous, None))?;
    }
    if !plan::tag_of(&service, CANDIDATE_TAG).is_empty() {
        api.tag(plan::str_of(&service, "serviceArn"), &[(CANDIDATE_TAG, "")])?;
    }
    Ok(())
}
