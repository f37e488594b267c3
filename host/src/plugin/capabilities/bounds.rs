//! The per-call bounds every network capability grant carries (`timeout`, `max_response_kib`),
//! checked the same way for each and against the plugin's own wall clock.

use crate::plugin::spec::duration_str;
use std::time::Duration;

/// A grant's `max_response_kib` (or the capability's default) in bytes.
pub fn max_response_bytes(max_response_kib: Option<u64>, default_kib: u64) -> usize {
    (max_response_kib.unwrap_or(default_kib) as usize).saturating_mul(1024)
}

/// Refuse a call deadline of zero, and one the plugin's `limits.wall_timeout` always cuts
/// short: every call the grant lets run longer would end as a wall-clock fault instead of the
/// capability's own "timed out" answer, so the setting could never take effect.
/// A default longer than the wall clock is not the operator's doing and is left alone.
/// `Err((field, problem))`, as `check_shape` reports it.
pub fn check_timeout(
    field: &'static str,
    timeout: Option<Duration>,
    default: Duration,
    wall_timeout: Duration,
) -> Result<(), (&'static str, String)> {
    if timeout.unwrap_or(default) == Duration::ZERO {
        return Err((field, "must be more than 0s".into()));
    }
    if let Some(timeout) = timeout.filter(|t| *t > wall_timeout) {
        return Err((
            field,
            format!(
                "= \"{}\" can never be reached: the plugin's limits.wall_timeout is {} (default: twice call_timeout) and ends the call first; raise limits.wall_timeout above it or lower the timeout",
                duration_str::format(timeout),
                duration_str::format(wall_timeout)
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_must_be_reachable() {
        let s = Duration::from_secs;
        assert!(check_timeout("grants.kube.timeout", Some(s(10)), s(10), s(10)).is_ok());
        // A default longer than the wall clock is not the operator's doing: allowed.
        assert!(check_timeout("grants.aws.timeout", None, s(20), s(10)).is_ok());
        let (field, problem) =
            check_timeout("grants.aws.timeout", Some(s(30)), s(20), s(10)).unwrap_err();
        assert_eq!(field, "grants.aws.timeout");
        assert!(
            problem.contains("limits.wall_timeout is 10s") && problem.contains("\"30s\""),
            "{problem}"
        );
        let (_, problem) =
            check_timeout("grants.kube.timeout", Some(s(0)), s(10), s(10)).unwrap_err();
        assert_eq!(problem, "must be more than 0s");
    }

    #[test]
    fn response_bound_in_bytes() {
        assert_eq!(max_response_bytes(None, 4096), 4 << 20);
        assert_eq!(max_response_bytes(Some(1), 4096), 1024);
    }
}
