//! `dax validate` and `dax deploy` refuse a strategy the target's router cannot follow
//! (issue 11): the strategy is dry-run against a simulated rollout and every `set-traffic`
//! it would send is compared with the target's `supported-traffic` answer.
//!
//! The target is `file-target` (tests/plugins: weights only, note "file-target records
//! weights only", every call it receives is logged in its state file), or the embedded
//! `local` target (everything). Strategies are the embedded first-party ones and the
//! `hostile-strategy` test plugin.

use dax::config::{self, Problem};
use dax::contract::FinalStatus;
use dax::engine::{DeployError, Engine, HostResolver};
use dax::state::StateDir;
use dax_tests::{dax_bin, plugin_path, repo_root};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

struct World {
    dir: tempfile::TempDir,
}

/// One deployment file's variable parts.
struct Deploy<'a> {
    app: &'a str,
    target: &'a str,
    strategy: &'a str,
    params: &'a str,
    deployment_extra: &'a str,
    plugins_extra: &'a str,
}

impl Default for Deploy<'_> {
    fn default() -> Self {
        Deploy {
            app: "shop",
            target: "files",
            strategy: "canary",
            params: "interval = \"100ms\"\nthreshold = 1\nmaxWeight = 20\nstepWeight = 10",
            deployment_extra: "",
            plugins_extra: "",
        }
    }
}

const HEADER_MATCH: &str =
    "interval = \"100ms\"\niterations = 1\nthreshold = 1\nmatch = [{ header = \"x-canary\", exact = \"insider\" }]";

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("target-state")).unwrap();
        World { dir }
    }

    fn engine(&self) -> Engine {
        let options = dax::plugin::HostOptions {
            cache_dir: cache_dir(),
            ..Default::default()
        };
        Engine::new(
            StateDir::new(self.dir.path().join("state")),
            Arc::new(HostResolver::new(options)),
        )
    }

    /// Write the deployment file of `d` and return its path.
    fn write(&self, d: &Deploy) -> PathBuf {
        let text = format!(
            r#"[deployment]
app = "{app}"
version = "v2"
{deployment_extra}

[target]
plugin = "{target}"

[strategy]
plugin = "{strategy}"
[strategy.params]
{params}

[[checks]]
name = "success-rate"
provider = "metrics"
query = "value:100"
min = 99

{target_plugin}
{strategy_plugin}
{plugins_extra}

[plugins.metrics]
source = "{metrics}"
"#,
            app = d.app,
            target = d.target,
            strategy = d.strategy,
            params = d.params,
            deployment_extra = d.deployment_extra,
            plugins_extra = d.plugins_extra,
            target_plugin = plugin_table(d.target),
            strategy_plugin = plugin_table(d.strategy),
            metrics = plugin_path("hello-metrics").display(),
        );
        let path = self.dir.path().join(format!("{}.toml", d.app));
        std::fs::write(&path, text).unwrap();
        path
    }

    fn load(&self, d: &Deploy) -> config::LoadedConfig {
        config::load_file(&self.write(d)).unwrap_or_else(|p| panic!("config problems: {p:#?}"))
    }

    async fn validate(&self, d: &Deploy<'_>) -> Vec<Problem> {
        self.engine().validate(&self.load(d)).await
    }

    /// The file target's state file of `app`, if any call reached it.
    fn target_state(&self, app: &str) -> Option<String> {
        std::fs::read_to_string(self.dir.path().join(format!("target-state/{app}.json"))).ok()
    }

    /// `dax ARGS` in the world's folder, with its own state folder.
    fn dax(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(dax_bin())
            .args(args)
            .arg("--state-dir")
            .arg(self.dir.path().join("state"))
            .current_dir(self.dir.path())
            .env("DAX_CACHE_DIR", cache_dir())
            .output()
            .unwrap();
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

/// The `[plugins.NAME]` table of a target or strategy (only those a file uses: every
/// listed plugin's config is validated).
fn plugin_table(name: &str) -> String {
    match name {
        "files" => format!(
            "[plugins.files]\nsource = \"{}\"\n[plugins.files.grants]\ndirs = [{{ host = \"target-state\", guest = \"/state\", writable = true }}]\n",
            plugin_path("file-target").display()
        ),
        "local" => "[plugins.local]\nsource = \"builtin:local\"\n[plugins.local.config]\nlisten = \"127.0.0.1:0\"\nmetrics_listen = \"127.0.0.1:0\"\n".into(),
        "hostile" => format!(
            "[plugins.hostile]\nsource = \"{}\"\n",
            plugin_path("hostile-strategy").display()
        ),
        "hostile-target" => format!(
            "[plugins.hostile-target]\nsource = \"{}\"\n",
            plugin_path("hostile-target").display()
        ),
        "ab" => "[plugins.ab]\nsource = \"builtin:ab-test\"\n".into(),
        other => format!("[plugins.{other}]\nsource = \"builtin:{other}\"\n"),
    }
}

fn cache_dir() -> PathBuf {
    repo_root().join("target/test-component-cache")
}

fn messages(problems: &[Problem]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("\n")
}

fn deployments(state: &Path) -> usize {
    std::fs::read_dir(state.join("deployments"))
        .map(|d| d.count())
        .unwrap_or(0)
}

const AB_REFUSED: &str = "`strategy.plugin`: strategy `ab` needs header matches at step 7 of a rollout where every check passes (set weight 0%, header \"x-canary\"), which target `files` (file-target) does not support\n  help: the target says: file-target records weights only";

#[test]
fn validate_refuses_an_ab_test_on_a_weights_only_target() {
    let w = World::new();
    w.write(&Deploy {
        strategy: "ab",
        params: HEADER_MATCH,
        ..Default::default()
    });
    let (code, stdout, stderr) = w.dax(&["validate", "shop.toml"]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stderr.contains(AB_REFUSED), "{stderr}");
    assert!(stderr.ends_with("1 problem(s) found\n"), "{stderr}");

    // `--output json` carries the same problem.
    let (code, stdout, _) = w.dax(&["validate", "shop.toml", "--output", "json"]);
    assert_eq!(code, 3);
    let v: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(v["valid"], false);
    assert_eq!(v["problems"][0]["field"], "strategy.plugin");
    assert!(
        v["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("strategy `ab` needs header matches at step 7"),
        "{v}"
    );
    assert_eq!(
        v["problems"][0]["help"],
        "the target says: file-target records weights only"
    );
    // Validation reached nothing but `supported-traffic`.
    assert_eq!(w.target_state("shop"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validate_refuses_mirroring_on_a_weights_only_target() {
    let w = World::new();
    let problems = w
        .validate(&Deploy {
            strategy: "blue-green",
            params: "interval = \"100ms\"\nmirror = true\nmirrorWeight = 50",
            ..Default::default()
        })
        .await;
    assert_eq!(problems.len(), 1, "{}", messages(&problems));
    let p = &problems[0];
    assert_eq!(p.field, "strategy.plugin");
    assert!(
        p.message.starts_with("strategy `blue-green` needs mirroring at step 6 of a rollout where every check passes (set weight 0%, mirror 50%)"),
        "{}",
        p.message
    );
    assert!(
        p.message
            .ends_with("which target `files` (file-target) does not support"),
        "{}",
        p.message
    );
    assert_eq!(p.help, "the target says: file-target records weights only");
    // Without mirroring the switch is all or nothing: no weights needed either.
    let problems = w
        .validate(&Deploy {
            strategy: "blue-green",
            params: "interval = \"100ms\"",
            ..Default::default()
        })
        .await;
    assert!(problems.is_empty(), "{}", messages(&problems));
    assert_eq!(w.target_state("shop"), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weights_on_a_weights_only_target_and_matches_on_the_local_target_are_valid() {
    let w = World::new();
    let problems = w.validate(&Deploy::default()).await;
    assert!(problems.is_empty(), "{}", messages(&problems));
    let problems = w
        .validate(&Deploy {
            target: "local",
            strategy: "ab",
            params: HEADER_MATCH,
            deployment_extra: "artifact = \"python3 app.py --version v2 --port {port}\"",
            ..Default::default()
        })
        .await;
    assert!(problems.is_empty(), "{}", messages(&problems));
    assert_eq!(w.target_state("shop"), None);
}

/// `dax deploy` performs the same check before anything starts: same message, exit 3, no
/// journal, no call on the target. A healthy deployment right after still promotes.
#[test]
fn deploy_refuses_before_any_call_reaches_the_target() {
    let w = World::new();
    w.write(&Deploy {
        strategy: "ab",
        params: HEADER_MATCH,
        ..Default::default()
    });
    let (code, stdout, stderr) = w.dax(&["deploy", "shop.toml", "--no-progress"]);
    assert_eq!(code, 3, "{stdout}{stderr}");
    assert!(stderr.contains(AB_REFUSED), "{stderr}");
    assert_eq!(w.target_state("shop"), None, "a call reached the target");
    assert_eq!(deployments(&w.dir.path().join("state")), 0);

    w.write(&Deploy {
        app: "healthy",
        ..Default::default()
    });
    let (code, stdout, stderr) = w.dax(&["deploy", "healthy.toml", "--no-progress"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    let state = w
        .target_state("healthy")
        .expect("the healthy deployment ran");
    assert!(state.contains("set-traffic 20"), "{state}");
}

/// The engine API refuses the same way (`DeployError::Invalid`), while a deployment the
/// target can follow runs beside it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_refuses_mirroring_beside_a_healthy_deployment() {
    let w = World::new();
    let engine = w.engine();
    let refused = w.load(&Deploy {
        strategy: "blue-green",
        params: "interval = \"100ms\"\nmirror = true",
        ..Default::default()
    });
    let healthy = w.load(&Deploy {
        app: "healthy",
        ..Default::default()
    });
    let (a, b) = tokio::join!(
        engine.deploy(refused, None, None),
        engine.deploy(healthy, None, None)
    );
    match a {
        Err(DeployError::Invalid(p)) => {
            assert_eq!(p.len(), 1, "{}", messages(&p));
            assert!(p[0].message.contains("needs mirroring"), "{}", p[0].message);
        }
        Err(e) => panic!("refused for another reason: {e:#}"),
        Ok(r) => panic!("not refused: {:?} {}", r.status, r.reason),
    }
    assert_eq!(w.target_state("shop"), None);
    let b = b.unwrap();
    assert_eq!(b.status, FinalStatus::Promoted, "{}", b.reason);
}

/// A strategy that never finishes meets the engine's step limit in the dry run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strategy_that_loops_forever_is_stopped_in_the_dry_run() {
    let w = World::new();
    let started = Instant::now();
    let problems = w
        .validate(&Deploy {
            strategy: "hostile",
            params: "attack = \"loop-set-traffic\"",
            ..Default::default()
        })
        .await;
    let took = started.elapsed();
    assert_eq!(problems.len(), 1, "{}", messages(&problems));
    assert_eq!(
        problems[0].message,
        "dry run of strategy `hostile` (a rollout where every check passes): the engine stepped in at step 1001: step limit: strategy `hostile` took 1000 steps without finishing (`max_steps` in [deployment])"
    );
    assert!(
        problems[0]
            .help
            .starts_with("a strategy must finish on its own"),
        "{}",
        problems[0].help
    );
    eprintln!("dry run of 1000 looping steps: {took:?}");

    // With the step limit lifted, the dry run's own call budget stops it.
    let started = Instant::now();
    let problems = w
        .validate(&Deploy {
            strategy: "hostile",
            params: "attack = \"loop-set-traffic\"",
            deployment_extra: "max_steps = 1000000000",
            ..Default::default()
        })
        .await;
    let took = started.elapsed();
    assert_eq!(problems.len(), 1, "{}", messages(&problems));
    assert!(
        problems[0].message == "dry run of strategy `hostile` stopped: the strategy did not finish within 4000 calls"
            || problems[0]
                .message
                .starts_with("dry run of strategy `hostile` stopped: the strategy did not finish within 20s"),
        "{}",
        problems[0].message
    );
    assert!(took < Duration::from_secs(40), "{took:?}");
    eprintln!("dry run to the call budget: {took:?}");

    // `dax deploy` refuses only what the target cannot do: the loop is left to the engine's
    // limits at run time, as before (tests/authority.rs).
    assert_eq!(w.target_state("shop"), None);
}

/// A strategy whose answers break the plugin's limits (a state blob above
/// `limits.max_output_kib`, a call past its deadline) is reported, not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_strategy_in_the_dry_run_is_held_to_its_limits() {
    let w = World::new();
    let problems = w
        .validate(&Deploy {
            strategy: "hostile",
            params: "attack = \"state:2000000\"",
            ..Default::default()
        })
        .await;
    assert_eq!(problems.len(), 1, "{}", messages(&problems));
    let m = &problems[0].message;
    assert!(
        m.starts_with("dry run of strategy `hostile` (a rollout where every check passes): the engine stepped in at step 1: strategy error: plugin `hostile` faulted"),
        "{m}"
    );
    assert!(m.contains("limits.max_output_kib"), "{m}");

    let started = Instant::now();
    let problems = w
        .validate(&Deploy {
            strategy: "hostile",
            params: "attack = \"sleep\"",
            plugins_extra:
                "[plugins.hostile.limits]\ncall_timeout = \"200ms\"\nwall_timeout = \"500ms\"",
            ..Default::default()
        })
        .await;
    assert_eq!(problems.len(), 1, "{}", messages(&problems));
    let m = &problems[0].message;
    assert!(
        m.starts_with("dry run of strategy `hostile` (a rollout where every check passes): the engine stepped in at step 2: strategy error: plugin `hostile` faulted"),
        "{m}"
    );
    assert!(m.contains("limits.wall_timeout"), "{m}");
    assert!(started.elapsed() < Duration::from_secs(10));

    // The host kept working: a valid file right after is valid.
    let problems = w.validate(&Deploy::default()).await;
    assert!(problems.is_empty(), "{}", messages(&problems));
}

/// A target's `supported-traffic` answer is plugin output like any other: a note that tries
/// to forge a terminal line is escaped and cut, a target that never answers or answers an
/// error is reported at `target.plugin`, and no other target call is made.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hostile_targets_traffic_support_is_bounded() {
    let w = World::new();
    let ab = |extra: &'static str| Deploy {
        target: "hostile-target",
        strategy: "ab",
        params: HEADER_MATCH,
        plugins_extra: extra,
        ..Default::default()
    };
    let problems = w
        .validate(&ab(
            "[plugins.hostile-target.config]\nattack = \"forge-note\"",
        ))
        .await;
    assert_eq!(problems.len(), 1, "{}", messages(&problems));
    let p = &problems[0];
    assert!(
        p.message
            .ends_with("which target `hostile-target` (hostile-target) does not support"),
        "{}",
        p.message
    );
    assert!(
        p.help.starts_with(
            "the target says: use router \"mesh\"\\n\\u{1b}[31m2026-01-01 INFO dax: promoted"
        ),
        "{}",
        p.help
    );
    assert!(p.help.ends_with(" more bytes cut]"), "{}", p.help);
    assert!(p.help.len() < 400, "{} bytes", p.help.len());
    assert!(!p.help.contains('\n') && !p.help.contains('\u{1b}'));
    // `dax deploy` refuses it the same way; any other call would have failed the run.
    match w
        .engine()
        .deploy(
            w.load(&ab(
                "[plugins.hostile-target.config]\nattack = \"forge-note\"",
            )),
            None,
            None,
        )
        .await
    {
        Err(DeployError::Invalid(p)) => assert_eq!(p, problems),
        Err(e) => panic!("refused for another reason: {e:#}"),
        Ok(r) => panic!("not refused: {:?} {}", r.status, r.reason),
    }

    let started = Instant::now();
    let problems = w
        .validate(&ab(
            "[plugins.hostile-target.config]\nattack = \"sleep\"\n[plugins.hostile-target.limits]\ncall_timeout = \"200ms\"\nwall_timeout = \"500ms\"",
        ))
        .await;
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(problems.len(), 1, "{}", messages(&problems));
    let p = &problems[0];
    assert_eq!(p.field, "target.plugin");
    assert!(
        p.message.starts_with("target `hostile-target` (hostile-target) could not say which traffic splits it supports: plugin `hostile-target` faulted"),
        "{}",
        p.message
    );
    assert!(p.message.contains("limits.wall_timeout"), "{}", p.message);
    assert!(p.help.contains("limits.wall_timeout"), "{}", p.help);

    let problems = w
        .validate(&ab("[plugins.hostile-target.config]\nattack = \"error\""))
        .await;
    assert_eq!(problems.len(), 1, "{}", messages(&problems));
    assert_eq!(
        problems[0].message,
        "target `hostile-target` (hostile-target) could not say which traffic splits it supports: plugin `hostile-target` returned an error: unsupported: no router configured"
    );

    // The host kept working.
    let problems = w.validate(&Deploy::default()).await;
    assert!(problems.is_empty(), "{}", messages(&problems));
}
