//! `dax resume` of a journal written by an earlier release: the `ab-test` deployment in
//! `tests/fixtures/journals/ab-test-0.1-before-contract-crate/` (see its README), whose
//! strategy state today's `ab-test` cannot read. The resume must refuse before touching
//! anything, naming the journal file and the two ways on; `dax abort` then `dax resume`
//! must roll it back with this release, leaving no demo process behind.
//!
//! Run: `cargo test -p dax-tests --test resume_upgrade`. Needs `python3`.

use dax_tests::{dax_bin, demo_app, free_port, repo_root};
use serde_json::Value;
use std::path::Path;
use std::process::Command;

const ID: &str = "shop-ab";

/// The fixture, filled in, as the state folder of a scratch directory.
fn install(dir: &Path) -> std::path::PathBuf {
    let fixture = repo_root().join("tests/fixtures/journals/ab-test-0.1-before-contract-crate");
    let state = dir.join("state");
    let deployment = state.join("deployments").join(ID);
    std::fs::create_dir_all(deployment.join("local")).unwrap();
    let fill = |text: String| {
        text.replace("@DEMO_APP@", demo_app().to_str().unwrap())
            .replace("@PORT@", &free_port().to_string())
            .replace("@METRICS_PORT@", &free_port().to_string())
            .replace("@STATE_DIR@", state.to_str().unwrap())
            .replace("@BASE_DIR@", dir.to_str().unwrap())
    };
    let journal = std::fs::read_to_string(fixture.join("journal.jsonl")).unwrap();
    // One port for the whole journal: the config and the local target's state agree.
    let port = free_port().to_string();
    let journal = fill(journal.replace("@PORT@", &port));
    std::fs::write(deployment.join("journal.jsonl"), journal).unwrap();
    let local = std::fs::read_to_string(fixture.join("local-target.json")).unwrap();
    std::fs::write(
        deployment.join("local/local-target.json"),
        fill(local.replace("@PORT@", &port)),
    )
    .unwrap();
    state
}

fn dax(state: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(dax_bin())
        .args(args)
        .arg("--state-dir")
        .arg(state)
        .env(
            "DAX_CACHE_DIR",
            repo_root().join("target/test-component-cache"),
        )
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_journal_of_the_previous_release_is_refused_clearly_then_rolled_back_on_abort() {
    let dir = tempfile::tempdir().unwrap();
    let state = install(dir.path());
    let journal = state.join("deployments").join(ID).join("journal.jsonl");
    let before = std::fs::read_to_string(&journal).unwrap();

    // Refused, before anything is journaled, with the file and what to do.
    let (code, _, err) = dax(&state, &["resume", ID, "--no-progress"]);
    assert_eq!(code, Some(2), "{err}");
    for part in [
        format!("cannot resume deployment `{ID}` ({})", journal.display()),
        "strategy `ab-test` (builtin:ab-test) cannot read the state it journaled".into(),
        "state blob is not this strategy's state".into(),
        format!("`dax resume {ID}` there"),
        format!("`dax abort {ID} && dax resume {ID}`"),
    ] {
        assert!(err.contains(&part), "missing `{part}` in:\n{err}");
    }
    assert_eq!(
        std::fs::read_to_string(&journal).unwrap(),
        before,
        "a refused resume journals nothing"
    );

    // The way out with this release: abort, then resume rolls back.
    let (code, out, err) = dax(&state, &["abort", ID]);
    assert_eq!(code, Some(0), "{out}{err}");
    let (code, out, err) = dax(&state, &["resume", ID, "--output", "json"]);
    assert_eq!(code, Some(1), "{out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["status"], "rolled-back", "{report:#}");
    assert!(
        report["reason"]
            .as_str()
            .unwrap()
            .contains("aborted by operator"),
        "{report:#}"
    );
    // Nothing of the old rollout keeps running.
    let marker = format!("{}={}", dax::local::process::OWNER_ENV, state.display());
    let left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| {
            std::fs::read(e.path().join("environ")).is_ok_and(|env| {
                env.split(|b| *b == 0)
                    .any(|v| v.starts_with(marker.as_bytes()))
            })
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(left.is_empty(), "demo processes left: {left:?}");
}
