//! A trivial strategy: deploy the candidate, set weight 50 once it is ready, analyze,
//! promote if the analysis passed. (The host refuses a promote before the candidate was
//! seen ready and, when checks exist, before an analysis passed: see the README.)
use dax_sdk::strategy::*;

struct Hello;

impl PluginGuest for Hello {
    fn describe() -> PluginInfo {
        info(
            "hello-strategy",
            "0.1.0",
            PluginRole::Strategy,
            "One step to 50%, then promote",
            "{}",
        )
    }
    fn validate_config(_config: String) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

fn decide(next: Step, state: u8, note: &str) -> Result<Decision, PluginError> {
    Ok(Decision {
        next,
        state: vec![state],
        note: note.into(),
    })
}

impl Guest for Hello {
    fn describe_plan(_params: String) -> Result<Plan, PluginError> {
        Ok(Plan {
            steps: vec![
                "deploy candidate".into(),
                "set weight 50".into(),
                "analyze".into(),
                "promote".into(),
            ],
            best_case_ms: 0,
            worst_case_rollback_ms: 0,
        })
    }
    fn start(_params: String) -> Result<Decision, PluginError> {
        decide(Step::DeployCandidate, 0, "deploy")
    }
    fn next(_params: String, state: Vec<u8>, obs: Observation) -> Result<Decision, PluginError> {
        match (state.first().copied(), obs.last) {
            (Some(0), Outcome::TargetStatus(s)) if s.desired > 0 && s.ready >= s.desired => decide(
                Step::SetTraffic(TrafficSplit {
                    candidate_weight: 50,
                    matches: vec![],
                    mirror_percent: 0,
                }),
                1,
                "weight 50",
            ),
            (Some(0), Outcome::TargetStatus(_)) => {
                decide(Step::CheckStatus(Slot::Candidate), 0, "wait until ready")
            }
            (Some(0), _) => decide(Step::Rollback("deploy failed".into()), 4, "rollback"),
            (Some(1), _) => decide(
                Step::Analyze(AnalysisRequest {
                    window_ms: 1000,
                    compare_baseline: false,
                }),
                2,
                "analyze",
            ),
            (Some(2), Outcome::Analysis(a))
                if a.checks.iter().all(|c| c.verdict == CheckVerdict::Pass) =>
            {
                decide(Step::Promote, 3, "promote")
            }
            (Some(2), _) => decide(Step::Rollback("analysis failed".into()), 4, "rollback"),
            (Some(3), _) => decide(Step::Finish(FinalStatus::Promoted), 5, "done"),
            (Some(4), _) => decide(Step::Finish(FinalStatus::RolledBack), 5, "done"),
            _ => Err(PluginError::InvalidInput(format!(
                "unexpected state {state:?}"
            ))),
        }
    }
}

dax_sdk::export_strategy!(Hello);
