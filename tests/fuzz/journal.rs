//! A damaged journal: truncated, flipped bytes, deleted, duplicated and reordered records,
//! records of another deployment, huge lines, numbers changed to extremes. Reading it
//! (`parse_journal`, `StateDir::open`), folding it (`Summary`) and `Engine::resume` on it
//! must end with an error or a report: never a panic, never a hang. The same damage to a
//! dead process's host log (`STATE_DIR/log/`, the records no journal file holds yet):
//! `StateDir::read` and `open` agree, and `open` moves what it read into the journal.
//!
//! The journals damaged here are real: two deployments run once per test process by the
//! engine with native plugins (one promoted, one rolled back), plus the seed corpus
//! `tests/fuzz/corpus/journal/`.

use super::natives::{self, MetricBehaviour, TargetBehaviour, World};
use dax::engine::Summary;
use dax::state::{parse_journal, Record, StateDir};
use proptest::prelude::*;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// A world whose rollout passes (`value` 100 >= min 99) or fails.
fn world(passing: bool) -> Arc<World> {
    Arc::new(World::new(
        TargetBehaviour {
            candidate_ready: true,
            ..Default::default()
        },
        None,
        MetricBehaviour::Value(if passing { 100.0 } else { 1.0 }),
    ))
}

/// The journal of one real deployment with the `Rollout` strategy.
fn real_journal(app: &str, passing: bool) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let engine = natives::engine(dir.path(), world(passing));
    let text = natives::deployment_toml(app, "fuzz:rollout", true, "2s");
    let cfg = dax::config::parse(&text, "deploy.toml", dir.path()).unwrap();
    let report = runtime()
        .block_on(engine.deploy(cfg, Some(app.to_string()), None))
        .unwrap();
    let expected = if passing {
        dax::contract::FinalStatus::Promoted
    } else {
        dax::contract::FinalStatus::RolledBack
    };
    assert_eq!(report.status, expected, "{}", report.reason);
    std::fs::read(engine.state.deployment_dir(app).join("journal.jsonl")).unwrap()
}

/// The promoted and the rolled-back journal.
fn journals() -> &'static (Vec<u8>, Vec<u8>) {
    static J: OnceLock<(Vec<u8>, Vec<u8>)> = OnceLock::new();
    J.get_or_init(|| (real_journal("shop", true), real_journal("other", false)))
}

fn lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split_inclusive(|b| *b == b'\n')
        .map(<[u8]>::to_vec)
        .collect()
}

#[derive(Debug, Clone)]
enum Damage {
    Truncate(usize),
    Flip(usize, u8),
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    /// Line `.1` of the other deployment's journal inserted at `.0`.
    ForeignLine(usize, usize),
    /// A valid record with a `len`-byte reason, at `at`.
    HugeRecord {
        at: usize,
        len: usize,
    },
    /// `len` bytes of junk, with or without a final newline.
    HugeJunk {
        at: usize,
        len: usize,
        newline: bool,
    },
    /// The `k`th number of line `line` replaced.
    Number {
        line: usize,
        k: usize,
        with: &'static str,
    },
}

fn damage() -> impl Strategy<Value = Damage> {
    let n = any::<usize>();
    prop_oneof![
        2 => n.prop_map(Damage::Truncate),
        2 => (n, 1u8..=255).prop_map(|(i, m)| Damage::Flip(i, m)),
        1 => n.prop_map(Damage::DeleteLine),
        1 => n.prop_map(Damage::DuplicateLine),
        1 => (n, n).prop_map(|(a, b)| Damage::SwapLines(a, b)),
        1 => (n, n).prop_map(|(a, b)| Damage::ForeignLine(a, b)),
        1 => (n, prop_oneof![Just(1usize << 16), Just(8usize << 20)])
            .prop_map(|(at, len)| Damage::HugeRecord { at, len }),
        1 => (n, prop_oneof![Just(1usize << 16), Just(4usize << 20)], any::<bool>())
            .prop_map(|(at, len, newline)| Damage::HugeJunk { at, len, newline }),
        3 => (n, n, proptest::sample::select(vec![
            "0", "-1", "255", "256", "4294967296", "18446744073709551615",
            "18446744073709551616", "1e400", "NaN", "9007199254740993", "1.5",
        ]))
            .prop_map(|(line, k, with)| Damage::Number { line, k, with }),
    ]
}

fn apply(base: &[u8], other: &[u8], damages: &[Damage]) -> Vec<u8> {
    let mut bytes = base.to_vec();
    for d in damages {
        let mut ls = lines(&bytes);
        let n = ls.len().max(1);
        match d {
            Damage::Truncate(i) => bytes.truncate(i % (bytes.len() + 1)),
            Damage::Flip(i, m) if !bytes.is_empty() => {
                let i = i % bytes.len();
                bytes[i] ^= m;
            }
            Damage::DeleteLine(i) if !ls.is_empty() => {
                ls.remove(i % n);
                bytes = ls.concat();
            }
            Damage::DuplicateLine(i) if !ls.is_empty() => {
                let l = ls[i % n].clone();
                ls.insert(i % n, l);
                bytes = ls.concat();
            }
            Damage::SwapLines(a, b) if !ls.is_empty() => {
                ls.swap(a % n, b % n);
                bytes = ls.concat();
            }
            Damage::ForeignLine(at, j) => {
                let theirs = lines(other);
                ls.insert(at % (ls.len() + 1), theirs[j % theirs.len()].clone());
                bytes = ls.concat();
            }
            Damage::HugeRecord { at, len } => {
                let rec = format!(
                    "{{\"seq\":{at},\"ts\":\"2026-01-01T00:00:00Z\",\"elapsed_ms\":1,\"type\":\"paused\",\"n\":1,\"reason\":\"{}\"}}\n",
                    "r".repeat(*len)
                );
                ls.insert(at % (ls.len() + 1), rec.into_bytes());
                bytes = ls.concat();
            }
            Damage::HugeJunk { at, len, newline } => {
                let mut junk = vec![b'{'; *len];
                if *newline {
                    junk.push(b'\n');
                }
                ls.insert(at % (ls.len() + 1), junk);
                bytes = ls.concat();
            }
            Damage::Number { line, k, with } if !ls.is_empty() => {
                let l = &ls[line % n];
                let text = String::from_utf8_lossy(l).into_owned();
                let runs: Vec<(usize, usize)> = digit_runs(&text);
                if !runs.is_empty() {
                    let (s, e) = runs[k % runs.len()];
                    let replaced = format!("{}{with}{}", &text[..s], &text[e..]);
                    ls[line % n] = replaced.into_bytes();
                    bytes = ls.concat();
                }
            }
            _ => {}
        }
    }
    bytes
}

/// Byte ranges of the runs of ASCII digits in `text`.
fn digit_runs(text: &str) -> Vec<(usize, usize)> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i].is_ascii_digit() {
            let s = i;
            while i < b.len() && b[i].is_ascii_digit() {
                i += 1;
            }
            out.push((s, i));
        } else {
            i += 1;
        }
    }
    out
}

/// `parse_journal`'s contract: the well-formed prefix re-parses to the same records, and an
/// error names the corrupt line.
fn check_parse(bytes: &[u8]) -> Option<Vec<Record>> {
    match parse_journal(bytes) {
        Ok((records, good_len)) => {
            let good_len = good_len as usize;
            assert!(good_len <= bytes.len());
            assert!(good_len == 0 || bytes[good_len - 1] == b'\n');
            let (again, len) = parse_journal(&bytes[..good_len]).expect("the good prefix parses");
            assert_eq!(len as usize, good_len);
            assert_eq!(again, records);
            Some(records)
        }
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(msg.contains("is corrupt"), "{msg}");
            None
        }
    }
}

/// Everything `dax status` / `dax history` do with records.
fn check_summary(records: &[Record]) {
    let s = Summary::fold("victim", records);
    let _ = (s.render(), s.progress_line(), s.is_finished());
    serde_json::to_string(&s).expect("a summary serializes");
    let s = Summary::from_records("victim", records);
    let _ = s.render();
}

/// Write `bytes` as the journal of deployment `victim` in a fresh state dir.
fn victim(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let d = StateDir::new(dir.path()).deployment_dir("victim");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(d.join("journal.jsonl"), bytes).unwrap();
    dir
}

/// `StateDir::open` drops a torn last line and nothing else; the journal stays appendable.
fn check_open(bytes: &[u8]) {
    let dir = victim(bytes);
    let state = StateDir::new(dir.path());
    let read = state.read("victim");
    match state.open("victim") {
        Ok((journal, records)) => {
            assert_eq!(Some(&records), read.as_ref().ok(), "open and read disagree");
            let again = state.read("victim").expect("a repaired journal reads");
            assert_eq!(again, records, "open changed more than a torn last line");
            runtime()
                .block_on(journal.append(
                    0,
                    dax::state::Event::Paused {
                        n: 0,
                        reason: "appended".into(),
                    },
                ))
                .expect("a repaired journal takes appends");
            let after = state
                .read("victim")
                .expect("still readable after an append");
            assert_eq!(after.len(), records.len() + 1);
        }
        Err(_) => assert!(read.is_err(), "open failed on a journal that reads"),
    }
}

/// `bytes` (journal lines) as the host log of a process that died before writing any of
/// them to deployment `victim`'s journal: each line behind `victim<TAB>`, no journal file.
fn victim_log(bytes: &[u8]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("log");
    std::fs::create_dir_all(&log).unwrap();
    let mut text = Vec::new();
    for line in bytes.split_inclusive(|&b| b == b'\n') {
        text.extend_from_slice(b"victim\t");
        text.extend_from_slice(line);
    }
    std::fs::write(log.join("1-1.jsonl"), text).unwrap();
    dir
}

/// Reading a damaged log names the file and line or gives records; `open` (a resume) gives
/// the same records and writes them to the journal, whose file alone then reads the same.
fn check_log(bytes: &[u8]) {
    let dir = victim_log(bytes);
    let state = StateDir::new(dir.path());
    let read = state.read("victim");
    if let Err(e) = &read {
        let msg = format!("{e:#}");
        assert!(
            msg.contains("1-1.jsonl line") || msg.contains("no deployment"),
            "{msg}"
        );
    }
    match state.open("victim") {
        Ok((_journal, records)) => {
            assert_eq!(Some(&records), read.as_ref().ok(), "open and read disagree");
            let file = state.deployment_dir("victim").join("journal.jsonl");
            let (in_file, _) = parse_journal(&std::fs::read(file).unwrap()).unwrap();
            assert_eq!(
                in_file, records,
                "open wrote the logged records to the journal"
            );
            assert!(
                !dir.path().join("log/1-1.jsonl").exists(),
                "open adopted the dead process's log"
            );
        }
        Err(_) => assert!(read.is_err(), "open failed on a log that reads"),
    }
}

/// How long `dax resume` may take on a damaged journal whose rollout needs a few ms.
const RESUME_LIMIT: Duration = Duration::from_secs(20);

/// `Engine::resume` gives a report or an error, in time, without panicking.
fn check_resume(bytes: &[u8]) -> Result<(), String> {
    let dir = victim(bytes);
    let engine = natives::engine(dir.path(), world(true));
    let outcome = runtime().block_on(async {
        let task = tokio::spawn(async move { engine.resume("victim", None).await.map(|_| ()) });
        tokio::time::timeout(RESUME_LIMIT, task).await
    });
    match outcome {
        Err(_) => Err(format!(
            "`dax resume` still running after {RESUME_LIMIT:?} (a hang)"
        )),
        Ok(Err(join)) if join.is_panic() => {
            let p = join.into_panic();
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Err(format!("`dax resume` panicked: {msg}"))
        }
        Ok(Err(e)) => Err(format!("resume task failed: {e}")),
        // A report or an error are both fine; the journal must still read afterwards unless
        // it was unreadable to begin with.
        Ok(Ok(result)) => {
            let state = StateDir::new(dir.path());
            if result.is_ok() {
                state
                    .read("victim")
                    .map_err(|e| format!("journal unreadable after resume: {e:#}"))?;
            }
            Ok(())
        }
    }
}

proptest! {
    #![proptest_config(super::config(256, "fuzz/regressions/journal.txt"))]

    #[test]
    fn random_bytes_parse_or_name_the_corrupt_line(
        bytes in proptest::collection::vec(any::<u8>(), 0..4096),
    ) {
        if let Some(records) = check_parse(&bytes) {
            check_summary(&records);
        }
    }

    #[test]
    fn damaged_journals_read_fold_and_reopen(
        promoted in any::<bool>(),
        damages in proptest::collection::vec(damage(), 1..5),
    ) {
        let (a, b) = journals();
        let (base, other) = if promoted { (a, b) } else { (b, a) };
        let bytes = apply(base, other, &damages);
        if let Some(records) = check_parse(&bytes) {
            check_summary(&records);
        }
        check_open(&bytes);
    }

    #[test]
    fn damaged_host_logs_read_and_reopen_alike(
        promoted in any::<bool>(),
        damages in proptest::collection::vec(damage(), 1..5),
    ) {
        let (a, b) = journals();
        let (base, other) = if promoted { (a, b) } else { (b, a) };
        check_log(&apply(base, other, &damages));
    }
}

proptest! {
    // Each case runs the engine: fewer cases, and shrinking stops early.
    #![proptest_config(proptest::test_runner::Config {
        max_shrink_iters: 32,
        ..super::config(48, "fuzz/regressions/resume.txt")
    })]

    #[test]
    fn resume_of_a_damaged_journal_reports_or_errs_in_time(
        promoted in any::<bool>(),
        damages in proptest::collection::vec(damage(), 1..4),
    ) {
        let (a, b) = journals();
        let (base, other) = if promoted { (a, b) } else { (b, a) };
        let bytes = apply(base, other, &damages);
        if let Err(e) = check_resume(&bytes) {
            return Err(TestCaseError::fail(e));
        }
    }
}

/// Every truncation of a real journal at a line boundary (a host killed after each record)
/// resumes to an end.
#[test]
fn resume_after_every_record() {
    let (a, _) = journals();
    let ls = lines(a);
    for k in 1..ls.len() {
        let bytes = ls[..k].concat();
        check_resume(&bytes).unwrap_or_else(|e| panic!("after record {k}: {e}"));
    }
}

/// The seed corpus: real and damaged journals kept in the repository.
#[test]
fn corpus_journals_read_fold_reopen_and_resume() {
    for (name, bytes) in super::corpus("journal") {
        if let Some(records) = check_parse(&bytes) {
            check_summary(&records);
        }
        check_open(&bytes);
        check_resume(&bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

/// Damaged journals that `Engine::resume` once did not survive (now it refuses the redo of an
/// out-of-range step and saturates the rollout clock):
/// - `elapsed-max.jsonl`: a record with `elapsed_ms` = u64::MAX; the rollout clock
///   (`offset + elapsed`) overflows: panic "attempt to add with overflow" (engine/mod.rs);
/// - `wait-max-without-outcome.jsonl`: the last decision a `wait` of u64::MAX ms with no
///   outcome; resume redoes the wait and sleeps for ~584 million years.
#[test]
fn engine_corpus_journals_resume_in_time() {
    let mut failures = Vec::new();
    for (name, bytes) in super::corpus("journal-engine") {
        if let Some(records) = check_parse(&bytes) {
            check_summary(&records);
        }
        check_open(&bytes);
        if let Err(e) = check_resume(&bytes) {
            failures.push(format!("{name}: {e}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

/// Arbitrary records, not only damaged real ones, through the summary.
#[test]
fn summary_of_records_in_any_order() {
    let (a, b) = journals();
    let mut records = parse_journal(a).unwrap().0;
    records.extend(parse_journal(b).unwrap().0);
    records.reverse();
    check_summary(&records);
    records.sort_by_key(|r| std::cmp::Reverse(r.elapsed_ms));
    check_summary(&records);
}

/// Writes the two real journals into the seed corpus (run by hand after a format change:
/// `DAX_FUZZ_WRITE_CORPUS=1 cargo test -p dax-tests --test fuzz write_corpus`).
#[test]
fn write_corpus() {
    if std::env::var_os("DAX_FUZZ_WRITE_CORPUS").is_none() {
        return;
    }
    let (a, b) = journals();
    let dir = super::corpus_dir("journal");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("promoted.jsonl"), a).unwrap();
    std::fs::write(dir.join("rolled-back.jsonl"), b).unwrap();
}
