//! Property tests ("fuzzing") of every input an outsider controls, run by `cargo test` with a
//! bounded number of cases so CI keeps them (a few seconds each):
//!
//! - `config`: the deployment TOML and `dax validate` — random bytes and structured mutations
//!   of the real example and golden files; never a panic, always a located problem;
//! - `journal`: a damaged journal — `parse_journal`, `StateDir::open`, `Summary` and
//!   `Engine::resume` give an error or a report, never a panic or a hang;
//! - `gate`: `.trivyignore`, the `[gate]` policy and its evaluation with arbitrary findings
//!   (the Trivy report parser has its own property tests in `plugins/trivy`);
//! - `plugin_values`: every value a plugin returns through the WIT — metric answers (NaN,
//!   infinities, huge series) through the verdict and the judge, steps and outcomes through
//!   the journal's summary;
//! - `engine`: a native strategy answering generated decisions, run through `Engine::deploy`
//!   against a native target that records what reaches it, checking the host's invariants.
//!
//! `engine::*` and `journal::engine_corpus_journals_resume_in_time` failed before the engine
//! kept its own ledger (issue 10): they guard the host's invariants and a resume of damaged
//! journals. The whole suite takes about 30 s on 2 cores.
//!
//! Every file under `tests/fuzz/corpus/` is also run through its target on every run (the
//! seed corpus; add an input that once failed there). Shrunk failures are kept by proptest in
//! `tests/fuzz/regressions/` (commit them). `PROPTEST_CASES=N` runs N cases per property
//! instead of the defaults, e.g. `PROPTEST_CASES=20000 cargo test -p dax-tests --test fuzz`.

mod config;
mod engine;
mod gate;
mod journal;
mod natives;
mod plugin_values;

use proptest::test_runner::{Config, FileFailurePersistence};
use std::path::PathBuf;

/// Cases per property: `default`, or `PROPTEST_CASES` when set.
pub fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A proptest config with `default` cases (see [`cases`]) whose shrunk failures are kept in
/// `tests/fuzz/regressions/NAME.txt` (paths are relative to `tests/`, cargo's working
/// directory for this crate).
pub fn config(default: u32, regressions: &'static str) -> Config {
    Config {
        cases: cases(default),
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
        ..Config::default()
    }
}

/// `tests/fuzz/corpus/KIND`.
pub fn corpus_dir(kind: &str) -> PathBuf {
    dax_tests::repo_root().join("tests/fuzz/corpus").join(kind)
}

/// Every file of `tests/fuzz/corpus/KIND`, sorted, as `(name, bytes)`.
pub fn corpus(kind: &str) -> Vec<(String, Vec<u8>)> {
    let dir = corpus_dir(kind);
    let mut files: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("seed corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read(&p).unwrap(),
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty seed corpus {}", dir.display());
    files
}
