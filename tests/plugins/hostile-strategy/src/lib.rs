//! A strategy that lies to the engine, for the tests of the host's authority, or attacks the
//! sandbox. The `attack` parameter picks a script of steps, played in order whatever the
//! outcomes say; the last step repeats forever (the runaway attacks). Two attacks are not
//! scripts: `state:BYTES` answers `start` with a state blob of that size, `sleep` sleeps
//! in `next`.
use dax_sdk::strategy::*;

struct Hostile;

impl PluginGuest for Hostile {
    fn describe() -> PluginInfo {
        info(
            "hostile-strategy",
            "0.1.0",
            PluginRole::Strategy,
            "Lies about how a deployment ends",
            "{}",
        )
    }
    fn validate_config(_config: String) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

fn weight(w: u8) -> Step {
    Step::SetTraffic(TrafficSplit {
        candidate_weight: w,
        matches: vec![],
        mirror_percent: 0,
    })
}

fn analyze() -> Step {
    Step::Analyze(AnalysisRequest {
        window_ms: 0,
        compare_baseline: false,
    })
}

fn script(attack: &str) -> Result<Vec<Step>, PluginError> {
    use Step::*;
    let promoted = Finish(FinalStatus::Promoted);
    Ok(match attack {
        "promote-first" => vec![Promote, promoted],
        "finish-promoted" => vec![DeployCandidate, weight(50), promoted],
        "promote-after-rollback" => vec![
            DeployCandidate,
            Rollback("hostile".into()),
            Promote,
            promoted,
        ],
        "traffic-after-rollback" => vec![
            DeployCandidate,
            Rollback("hostile".into()),
            weight(50),
            promoted,
        ],
        "finish-rolled-back-without-rollback" => {
            vec![DeployCandidate, weight(50), Finish(FinalStatus::RolledBack)]
        }
        "weight-250" => vec![DeployCandidate, weight(250), promoted],
        "mirror-250" => vec![
            DeployCandidate,
            SetTraffic(TrafficSplit {
                candidate_weight: 10,
                matches: vec![],
                mirror_percent: 250,
            }),
            promoted,
        ],
        "replicas" => vec![
            DeployCandidate,
            Scale((Slot::Candidate, 4_000_000_000)),
            promoted,
        ],
        "wait-forever" => vec![DeployCandidate, Wait(u64::MAX), promoted],
        "skip-analysis" => vec![DeployCandidate, Promote, promoted],
        "promote-after-analysis" => vec![DeployCandidate, weight(50), analyze(), Promote, promoted],
        "loop-set-traffic" => vec![DeployCandidate, weight(10)],
        "loop-check-status" => vec![DeployCandidate, CheckStatus(Slot::Candidate)],
        "loop-analyze" => vec![DeployCandidate, analyze()],
        "loop-hooks" => vec![DeployCandidate, RunHooks(HookPhase::PreRollout)],
        "sleep" => vec![DeployCandidate, promoted],
        other => {
            return Err(PluginError::InvalidConfig(format!(
                "unknown attack `{other}`"
            )))
        }
    })
}

fn attack(params: &str) -> String {
    // `{"attack":"NAME"}`: parsed by hand to keep the plugin free of dependencies.
    params
        .split("\"attack\"")
        .nth(1)
        .and_then(|r| r.split('"').nth(1))
        .unwrap_or("")
        .to_string()
}

fn play(params: &str, index: u32) -> Result<Decision, PluginError> {
    let steps = script(&attack(params))?;
    let i = (index as usize).min(steps.len() - 1);
    Ok(Decision {
        next: steps[i].clone(),
        state: (index + 1).to_le_bytes().to_vec(),
        note: format!("hostile step {index}"),
    })
}

impl Guest for Hostile {
    fn describe_plan(params: String) -> Result<Plan, PluginError> {
        let steps = script(&attack(&params))?;
        Ok(Plan {
            steps: steps.iter().map(|s| format!("{s:?}")).collect(),
            best_case_ms: 0,
            worst_case_rollback_ms: 0,
        })
    }
    fn start(params: String) -> Result<Decision, PluginError> {
        if let Some(n) = attack(&params).strip_prefix("state:") {
            let state = vec![7u8; n.parse().unwrap_or(0)];
            return Ok(Decision {
                next: weight(10),
                state,
                note: "bloated state".into(),
            });
        }
        play(&params, 0)
    }
    fn next(params: String, state: Vec<u8>, _obs: Observation) -> Result<Decision, PluginError> {
        if attack(&params) == "sleep" {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
        let index = u32::from_le_bytes(
            state
                .get(..4)
                .and_then(|b| b.try_into().ok())
                .unwrap_or([0; 4]),
        );
        play(&params, index)
    }
}

dax_sdk::export_strategy!(Hostile);
