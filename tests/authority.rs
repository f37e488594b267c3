//! The host, not the strategy, decides what a deployment ended as.
//!
//! Each test runs the `hostile-strategy` Wasm plugin (tests/plugins/hostile-strategy: an
//! attack script picked by its `attack` parameter) against the `file-target` test target
//! (whose state file logs every call it received), next to a healthy canary deployment in
//! the same engine, and asserts the refusal text, the final status, what reached the target,
//! and that the healthy deployment still promoted.

use dax::config;
use dax::contract::{FinalStatus, Step};
use dax::engine::{Engine, HostResolver, Report};
use dax::state::{DecidedBy, Event, Record, StateDir};
use std::sync::Arc;
use std::time::{Duration, Instant};

struct World {
    dir: tempfile::TempDir,
}

/// One deployment file's variable parts.
struct Deploy<'a> {
    app: &'a str,
    strategy: &'a str,
    params: &'a str,
    deployment_extra: &'a str,
    target_extra: &'a str,
    /// Include a `[[checks]]` entry (which passes).
    checks: bool,
}

impl Default for Deploy<'_> {
    fn default() -> Self {
        Deploy {
            app: "shop",
            strategy: "hostile",
            params: "",
            deployment_extra: "",
            target_extra: "",
            checks: true,
        }
    }
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("target-state")).unwrap();
        World { dir }
    }

    fn engine(&self) -> Engine {
        let options = dax::plugin::HostOptions {
            cache_dir: dax_tests::repo_root().join("target/test-component-cache"),
            ..Default::default()
        };
        Engine::new(
            StateDir::new(self.dir.path().join("state")),
            Arc::new(HostResolver::new(options)),
        )
    }

    fn load(&self, d: &Deploy) -> config::LoadedConfig {
        let checks = if d.checks {
            "[[checks]]\nname = \"success-rate\"\nprovider = \"metrics\"\nquery = \"value:100\"\nmin = 99\n"
        } else {
            ""
        };
        let text = format!(
            r#"[deployment]
app = "{app}"
version = "v2"
{deployment_extra}

[target]
plugin = "files"

[strategy]
plugin = "{strategy}"
[strategy.params]
{params}

{checks}
[plugins.files]
source = "{file_target}"
[plugins.files.config]
{target_extra}
[plugins.files.grants]
dirs = [{{ host = "target-state", guest = "/state", writable = true }}]

[plugins.hostile]
source = "{hostile}"

[plugins.canary]
source = "{canary}"

[plugins.metrics]
source = "{metrics}"
"#,
            app = d.app,
            strategy = d.strategy,
            params = d.params,
            deployment_extra = d.deployment_extra,
            target_extra = d.target_extra,
            file_target = dax_tests::plugin_path("file-target").display(),
            hostile = dax_tests::plugin_path("hostile-strategy").display(),
            canary = dax_tests::plugin_path("canary").display(),
            metrics = dax_tests::plugin_path("hello-metrics").display(),
        );
        let path = self.dir.path().join(format!("{}.toml", d.app));
        std::fs::write(&path, text).unwrap();
        config::load_file(&path).unwrap_or_else(|p| panic!("config problems: {p:#?}"))
    }

    /// Every call the file target received for `app`.
    fn target_calls(&self, app: &str) -> Vec<String> {
        let path = self.dir.path().join(format!("target-state/{app}.json"));
        let Ok(text) = std::fs::read_to_string(path) else {
            return Vec::new();
        };
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        v["calls"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_str().unwrap().to_string())
            .collect()
    }

    fn records(&self, id: &str) -> Vec<Record> {
        StateDir::new(self.dir.path().join("state"))
            .open(id)
            .unwrap()
            .1
    }
}

fn attack(name: &str) -> String {
    format!("attack = \"{name}\"")
}

/// Run the hostile deployment `d` beside a healthy canary of app `healthy`; both must end.
async fn run_beside_a_healthy_canary(w: &World, d: Deploy<'_>) -> Report {
    let engine = w.engine();
    let hostile = w.load(&d);
    let healthy = w.load(&Deploy {
        app: "healthy",
        strategy: "canary",
        params: "interval = \"100ms\"\nthreshold = 2\nmaxWeight = 20\nstepWeight = 10",
        ..Default::default()
    });
    let (a, b) = tokio::join!(
        tokio::time::timeout(Duration::from_secs(120), engine.deploy(hostile, None, None)),
        tokio::time::timeout(Duration::from_secs(120), engine.deploy(healthy, None, None)),
    );
    let healthy = b.expect("the healthy deployment hung").unwrap();
    assert_eq!(
        healthy.status,
        FinalStatus::Promoted,
        "the healthy deployment beside the hostile one: {}",
        healthy.reason
    );
    a.expect("the hostile deployment hung").unwrap()
}

/// The engine's decisions that replaced the strategy's, with their notes.
fn engine_notes(records: &[Record]) -> Vec<String> {
    records
        .iter()
        .filter_map(|r| match &r.event {
            Event::Decision { by, note, .. } if *by != DecidedBy::Strategy => Some(note.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promote_before_anything_is_refused_and_ends_failed() {
    let w = World::new();
    let params = attack("promote-first");
    let r = run_beside_a_healthy_canary(
        &w,
        Deploy {
            params: &params,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.status, FinalStatus::Failed, "{}", r.reason);
    assert_eq!(
        r.reason,
        "strategy `hostile` fault: promote refused by the safety policy (`require_ready`): the candidate was never seen ready"
    );
    assert!(
        w.target_calls("shop").iter().all(|c| c != "promote"),
        "promote reached the target: {:?}",
        w.target_calls("shop")
    );
    // The summary's headline names the rule.
    assert!(
        r.summary.render().contains("FAILED"),
        "{}",
        r.summary.render()
    );
    assert!(r.summary.render().contains("`require_ready`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finish_promoted_without_a_promote_rolls_back_and_ends_failed() {
    let w = World::new();
    let params = attack("finish-promoted");
    let r = run_beside_a_healthy_canary(
        &w,
        Deploy {
            params: &params,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.status, FinalStatus::Failed, "{}", r.reason);
    assert_eq!(
        r.reason,
        "strategy `hostile` fault: finished as promoted, but no promote succeeded on the target"
    );
    let calls = w.target_calls("shop");
    assert!(calls.contains(&"rollback".to_string()), "{calls:?}");
    assert!(!calls.contains(&"promote".to_string()), "{calls:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_moves_forward_after_a_rollback() {
    for script in ["promote-after-rollback", "traffic-after-rollback"] {
        let w = World::new();
        let params = attack(script);
        let r = run_beside_a_healthy_canary(
            &w,
            Deploy {
                params: &params,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(r.status, FinalStatus::RolledBack, "{script}: {}", r.reason);
        let notes = engine_notes(&w.records(&r.id)).join("\n");
        assert!(
            notes.contains("after a rollback; only status checks, hooks, waits, scaling stable and finishing are allowed then"),
            "{script}: {notes}"
        );
        let calls = w.target_calls("shop");
        let after: Vec<&String> = calls
            .iter()
            .skip_while(|c| *c != "rollback")
            .skip(1)
            .filter(|c| *c != "finalize")
            .collect();
        assert!(
            after.is_empty(),
            "{script}: calls after the rollback: {after:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finishing_rolled_back_without_rolling_back_makes_the_engine_roll_back() {
    let w = World::new();
    let params = attack("finish-rolled-back-without-rollback");
    let r = run_beside_a_healthy_canary(
        &w,
        Deploy {
            params: &params,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.status, FinalStatus::RolledBack, "{}", r.reason);
    assert!(
        r.reason
            .contains("finished as rolled-back with the candidate still exposed"),
        "{}",
        r.reason
    );
    assert!(w.target_calls("shop").contains(&"rollback".to_string()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_range_steps_never_reach_the_target() {
    let cases = [
        (
            "weight-250",
            "strategy `hostile` fault: set-traffic weight 250% is outside 0..=100",
        ),
        (
            "mirror-250",
            "strategy `hostile` fault: set-traffic mirror 250% is outside 0..=100",
        ),
        (
            "replicas",
            "strategy `hostile` fault: scale candidate to 4000000000 replicas is above `max_replicas` = 100 in [deployment]",
        ),
        (
            "wait-forever",
            "is longer than `max_wait` = 1h in [deployment]",
        ),
    ];
    for (script, refusal) in cases {
        let w = World::new();
        let params = attack(script);
        let r = run_beside_a_healthy_canary(
            &w,
            Deploy {
                params: &params,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(r.status, FinalStatus::Failed, "{script}: {}", r.reason);
        assert!(r.reason.contains(refusal), "{script}: {}", r.reason);
        // Journaled and shown: the engine's decision in the strategy's place says why.
        let notes = engine_notes(&w.records(&r.id)).join("\n");
        assert!(notes.contains(refusal), "{script}: {notes}");
        let calls = w.target_calls("shop");
        assert!(
            calls
                .iter()
                .all(|c| !c.contains("250") && !c.contains("4000000000")),
            "{script}: {calls:?}"
        );
        assert!(
            calls.contains(&"rollback".to_string()),
            "{script}: {calls:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn skipping_analysis_is_the_operators_explicit_choice() {
    // With checks and the default policy: refused.
    let w = World::new();
    let params = attack("skip-analysis");
    let r = run_beside_a_healthy_canary(
        &w,
        Deploy {
            params: &params,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.status, FinalStatus::Failed);
    assert!(
        r.reason.contains(
            "promote refused by the safety policy (`require_analysis`): no analysis has passed yet"
        ),
        "{}",
        r.reason
    );
    // The operator turns the policy off: the same strategy promotes, and the reason says
    // that no analysis ran.
    let w = World::new();
    let r = run_beside_a_healthy_canary(
        &w,
        Deploy {
            params: &params,
            deployment_extra: "require_analysis = false",
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.status, FinalStatus::Promoted, "{}", r.reason);
    assert_eq!(
        r.reason,
        "promoted without analysis (`require_analysis = false` in [deployment])"
    );
}

#[test]
fn validate_refuses_skip_analysis_unless_the_policy_is_off() {
    let w = World::new();
    let path = w.dir.path().join("skip.toml");
    let text =
        std::fs::read_to_string(dax_tests::repo_root().join("examples/quickstart/canary.toml"))
            .unwrap()
            .replace(
                "[strategy.params]",
                "[strategy.params]\nskipAnalysis = true",
            );
    std::fs::write(&path, &text).unwrap();
    let problems = config::load_file(&path).expect_err("skipAnalysis must be refused");
    let p = problems
        .iter()
        .find(|p| p.field == "strategy.params.skipAnalysis")
        .unwrap_or_else(|| panic!("{problems:#?}"));
    assert!(p.help.contains("require_analysis = false"), "{p:?}");
    let text = text.replace("[deployment]", "[deployment]\nrequire_analysis = false");
    std::fs::write(&path, &text).unwrap();
    config::load_file(&path).expect("with the policy off skipAnalysis is valid");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_promote_is_retried_then_rolled_back_and_ends_failed() {
    let w = World::new();
    let params = attack("promote-after-analysis");
    let r = run_beside_a_healthy_canary(
        &w,
        Deploy {
            params: &params,
            target_extra: "fail = \"promote\"",
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.status, FinalStatus::Failed, "{}", r.reason);
    assert!(
        r.reason.starts_with("promote failed 3 times: "),
        "{}",
        r.reason
    );
    let calls = w.target_calls("shop");
    assert_eq!(
        calls.iter().filter(|c| *c == "promote").count(),
        0,
        "failing calls are not logged by the target: {calls:?}"
    );
    assert!(calls.contains(&"rollback".to_string()), "{calls:?}");
    let records = w.records(&r.id);
    let promotes = records
        .iter()
        .filter(|r| {
            matches!(
                &r.event,
                Event::Decision {
                    step: Step::Promote,
                    ..
                }
            )
        })
        .count();
    assert_eq!(promotes, 3, "one promote and two retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_rollback_ends_failed_and_says_so_in_the_headline() {
    let w = World::new();
    let params = attack("finish-promoted");
    let r = run_beside_a_healthy_canary(
        &w,
        Deploy {
            params: &params,
            target_extra: "fail = \"rollback\"",
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.status, FinalStatus::Failed, "{}", r.reason);
    assert!(
        r.reason.contains("; rollback failed 3 times: "),
        "{}",
        r.reason
    );
    let headline = r.summary.render().lines().next().unwrap().to_string();
    assert!(headline.contains("rollback failed 3 times"), "{headline}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runaway_strategies_are_paced_and_stopped_by_the_step_limit() {
    for script in [
        "loop-set-traffic",
        "loop-check-status",
        "loop-analyze",
        "loop-hooks",
    ] {
        let w = World::new();
        let params = attack(script);
        let started = Instant::now();
        let r = run_beside_a_healthy_canary(
            &w,
            Deploy {
                params: &params,
                deployment_extra: "max_steps = 60\nmax_step_rate = 50",
                ..Default::default()
            },
        )
        .await;
        let took = started.elapsed();
        assert_eq!(r.status, FinalStatus::Failed, "{script}: {}", r.reason);
        assert!(
            r.reason
                .starts_with("step limit: strategy `hostile` took 60 steps without finishing (`max_steps` in [deployment])"),
            "{script}: {}",
            r.reason
        );
        let records = w.records(&r.id);
        assert!(records.len() < 200, "{script}: {} records", records.len());
        // 60 steps at 50 per second after a burst of 20: at least ~0.8 s of pacing.
        assert!(
            took >= Duration::from_millis(700),
            "{script}: not paced ({took:?})"
        );
        let target_calls = w.target_calls("shop").len();
        assert!(target_calls <= 70, "{script}: {target_calls} target calls");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeating_a_step_is_not_progress() {
    let w = World::new();
    let params = attack("loop-set-traffic");
    let r = run_beside_a_healthy_canary(
        &w,
        Deploy {
            params: &params,
            deployment_extra: "progress_deadline = \"2s\"\nmax_step_rate = 20",
            ..Default::default()
        },
    )
    .await;
    assert_eq!(r.status, FinalStatus::RolledBack, "{}", r.reason);
    assert!(
        r.reason
            .starts_with("progress deadline exceeded: no progress for "),
        "{}",
        r.reason
    );
}
