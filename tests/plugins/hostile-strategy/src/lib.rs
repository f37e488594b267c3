//! A misbehaving strategy for the sandbox tests. `[strategy.params]` pick the attack:
//! `{"attack": "state:BYTES"}` answers `start` with a state blob of that size,
//! `{"attack": "sleep"}` sleeps in `next`; anything else sets weight 10 then finishes.
use dax_sdk::strategy::*;

struct Hostile;

impl PluginGuest for Hostile {
    fn describe() -> PluginInfo {
        info("hostile-strategy", "0.1.0", PluginRole::Strategy, "Bloats its state or sleeps", "{}")
    }
    fn validate_config(_config: String) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

fn attack(params: &str) -> &str {
    params.split("\"attack\":\"").nth(1).and_then(|rest| rest.split('"').next()).unwrap_or("")
}

impl Guest for Hostile {
    fn describe_plan(_params: String) -> Result<Plan, PluginError> {
        Ok(Plan { steps: vec!["weight 10".into()], best_case_ms: 0, worst_case_rollback_ms: 0 })
    }
    fn start(params: String) -> Result<Decision, PluginError> {
        let state = match attack(&params).strip_prefix("state:") {
            Some(n) => vec![7u8; n.parse().unwrap_or(0)],
            None => vec![1],
        };
        let weight = TrafficSplit { candidate_weight: 10, matches: vec![], mirror_percent: 0 };
        Ok(Decision { next: Step::SetTraffic(weight), state, note: "weight 10".into() })
    }
    fn next(params: String, _state: Vec<u8>, _obs: Observation) -> Result<Decision, PluginError> {
        if attack(&params) == "sleep" {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        Ok(Decision { next: Step::Finish(FinalStatus::RolledBack), state: vec![2], note: "done".into() })
    }
}

dax_sdk::export_strategy!(Hostile);
