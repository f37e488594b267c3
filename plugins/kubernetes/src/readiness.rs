//! Whether a Deployment finished rolling out, by Flagger's rules (`pkg/canary`
//! `IsPrimaryReady`/`IsCanaryReady`): the controller observed the latest generation, every
//! desired replica is updated, no old replica is left, and enough updated replicas are
//! available. `ProgressDeadlineExceeded` ends the wait at once with the reason.

use serde_json::Value;

/// One slot's observed state, as `target.status` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Observed {
    pub desired: u32,
    /// `desired` when the rollout is complete by the rules below, fewer otherwise.
    pub ready: u32,
    pub updated: u32,
    pub message: String,
}

fn count(v: &Value) -> u32 {
    v.as_u64().unwrap_or(0).min(u32::MAX as u64) as u32
}

/// Assess `deployment` (an object as the API returns it, with `status`). `threshold` is the
/// percent of updated replicas that must be available. `Err` carries the progress-deadline
/// failure, which no amount of waiting fixes.
pub fn assess(deployment: &Value, threshold: u8) -> Result<Observed, String> {
    let name = deployment["metadata"]["name"].as_str().unwrap_or("?");
    let spec = &deployment["spec"];
    let status = &deployment["status"];
    let desired = spec.get("replicas").map(count).unwrap_or(1);
    let generation = deployment["metadata"]["generation"].as_u64().unwrap_or(0);
    let observed = status["observedGeneration"].as_u64().unwrap_or(0);
    let replicas = count(&status["replicas"]);
    let updated = count(&status["updatedReplicas"]);
    let available = count(&status["availableReplicas"]);

    if let Some(c) = status["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|c| c["type"] == "Progressing" && c["reason"] == "ProgressDeadlineExceeded")
    {
        let deadline = spec["progressDeadlineSeconds"].as_u64().unwrap_or(600);
        return Err(format!(
            "Deployment {name} exceeded its progress deadline (progressDeadlineSeconds = {deadline}): {}",
            c["message"].as_str().unwrap_or("no progress")
        ));
    }

    let need_available = (updated as u64 * threshold as u64).div_ceil(100) as u32;
    let waiting = if observed < generation {
        Some(format!(
            "waiting for {name} generation {generation} to be observed (observed {observed})"
        ))
    } else if updated < desired {
        Some(format!(
            "waiting for {name} rollout: {updated} of {desired} replicas updated"
        ))
    } else if replicas > updated {
        Some(format!(
            "waiting for {name} rollout: {} old replicas pending termination",
            replicas - updated
        ))
    } else if available < need_available {
        Some(format!(
            "waiting for {name} rollout: {available} of {updated} updated replicas available"
        ))
    } else {
        None
    };
    Ok(match waiting {
        Some(message) => Observed {
            desired,
            ready: available.min(desired.saturating_sub(1)),
            updated,
            message,
        },
        None => Observed {
            desired,
            ready: desired,
            updated,
            message: format!("{name}: {available}/{desired} available"),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn dep(generation: u64, status: Value) -> Value {
        json!({"metadata": {"name": "web", "generation": generation}, "spec": {"replicas": 3}, "status": status})
    }

    #[test]
    fn complete_rollout_is_ready() {
        let d = dep(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
        );
        let o = assess(&d, 100).unwrap();
        assert_eq!((o.desired, o.ready, o.updated), (3, 3, 3));
    }

    #[test]
    fn each_rule_holds_readiness_back() {
        let cases = [
            (
                json!({"observedGeneration": 1, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 3}),
                "generation 2 to be observed",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 2, "availableReplicas": 3}),
                "2 of 3 replicas updated",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 4, "updatedReplicas": 3, "availableReplicas": 3}),
                "1 old replicas pending",
            ),
            (
                json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
                "2 of 3 updated replicas available",
            ),
        ];
        for (status, why) in cases {
            let o = assess(&dep(2, status), 100).unwrap();
            assert!(o.ready < o.desired, "{o:?}");
            assert!(o.message.contains(why), "{} lacks {why}", o.message);
        }
    }

    #[test]
    fn threshold_lowers_the_available_bar() {
        let d = dep(
            2,
            json!({"observedGeneration": 2, "replicas": 3, "updatedReplicas": 3, "availableReplicas": 2}),
        );
        assert_eq!(assess(&d, 60).unwrap().ready, 3);
        assert_eq!(assess(&d, 70).unwrap().ready, 2);
    }

    #[test]
    fn zero_replicas_is_ready_and_missing_status_is_not() {
        let d = json!({"metadata": {"name": "web", "generation": 1}, "spec": {"replicas": 0}, "status": {"observedGeneration": 1}});
        assert_eq!(assess(&d, 100).unwrap().ready, 0);
        let fresh = json!({"metadata": {"name": "web", "generation": 1}, "spec": {"replicas": 2}});
        let o = assess(&fresh, 100).unwrap();
        assert_eq!((o.ready, o.desired), (0, 2));
    }

    #[test]
    fn progress_deadline_is_an_error_naming_the_deadline() {
        let d = json!({"metadata": {"name": "web", "generation": 1}, "spec": {"replicas": 1, "progressDeadlineSeconds": 3},
            "status": {"observedGeneration": 1, "conditions": [{"type": "Progressing", "status": "False",
            "reason": "ProgressDeadlineExceeded", "message": "ReplicaSet \"web-1\" has timed out progressing."}]}});
        let e = assess(&d, 100).unwrap_err();
        assert!(
            e.contains("exceeded its progress deadline (progressDeadlineSeconds = 3)"),
            "{e}"
        );
        assert!(e.contains("has timed out progressing"), "{e}");
    }
}
