//! Property tests of the report parser, run natively by `cargo test -p trivy` (tests/run.sh):
//! whatever a report file holds — random bytes, flipped bytes of real reports, JSON-level
//! mutations (keys deleted, values of the wrong type, huge strings and numbers, unicode, deep
//! nesting) — `parse` gives a report or a clear error, `findings` and `check_artifact` never
//! panic.
//!
//! Seeds: the real Trivy reports in `../shared/testdata/trivy` (when present) and the
//! repository's seed corpus `tests/fuzz/corpus/trivy`. `PROPTEST_CASES=N` runs N cases.

use super::*;
use proptest::prelude::*;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;

fn cases(default: u32) -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every seed report, as text.
fn seeds() -> &'static Vec<String> {
    static SEEDS: OnceLock<Vec<String>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        for dir in [
            here.join("../../tests/fuzz/corpus/trivy"),
            here.join("../../../shared/testdata/trivy"),
        ] {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            let mut files: Vec<PathBuf> = entries.map(|e| e.unwrap().path()).collect();
            files.sort();
            for f in files
                .iter()
                .filter(|f| f.extension().is_some_and(|e| e == "json"))
            {
                out.push(std::fs::read_to_string(f).unwrap());
            }
        }
        assert!(
            out.len() >= 5,
            "seed corpus tests/fuzz/corpus/trivy is missing"
        );
        out
    })
}

/// The parser's contract on one text.
fn check(text: &str) {
    match parse(text, "fuzz.json") {
        Ok(report) => {
            let items = findings(&report);
            let entries: usize = report
                .results
                .iter()
                .flatten()
                .map(|r| {
                    r.vulnerabilities.as_ref().map_or(0, Vec::len)
                        + r.misconfigurations.as_ref().map_or(0, Vec::len)
                        + r.secrets.as_ref().map_or(0, Vec::len)
                        + r.licenses.as_ref().map_or(0, Vec::len)
                })
                .sum();
            assert!(items.len() <= entries);
            for (name, digest) in [
                ("", ""),
                ("app", "sha256:aaaa"),
                ("docker.io/library/alpine:3.10", ""),
                ("a b", "x@y@z"),
                ("\u{202e}", "@"),
            ] {
                if let Err(e) = check_artifact(&report, "fuzz.json", name, digest) {
                    assert!(e.to_string().contains("fuzz.json"), "{e}");
                }
            }
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains("fuzz.json"), "{msg}");
        }
    }
}

/// A JSON value to put somewhere it does not belong.
fn wrong_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        Just(Value::Bool(true)),
        Just(serde_json::json!(2)),
        Just(serde_json::json!(2.5)),
        Just(serde_json::json!(-1)),
        Just(serde_json::json!(u64::MAX)),
        Just(serde_json::json!(i64::MIN)),
        Just(serde_json::json!("")),
        Just(serde_json::json!("CRITICAL")),
        Just(serde_json::json!([])),
        Just(serde_json::json!({})),
        Just(serde_json::json!([{"VulnerabilityID": 1}])),
        Just(Value::String("\u{1b}[2J\nforged".into())),
        Just(Value::String("h".repeat(200_000))),
        any::<String>().prop_map(Value::String),
        (1usize..200).prop_map(|d| {
            let mut v = Value::Null;
            for _ in 0..d {
                v = Value::Array(vec![v]);
            }
            v
        }),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    /// Remove the `k`th key met in a walk of the document.
    Delete(usize),
    /// Replace the `k`th value met by another.
    Replace(usize, Value),
    /// Duplicate the `k`th array element met.
    Duplicate(usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        1 => any::<usize>().prop_map(Mutation::Delete),
        3 => (any::<usize>(), wrong_value()).prop_map(|(k, v)| Mutation::Replace(k, v)),
        1 => any::<usize>().prop_map(Mutation::Duplicate),
    ]
}

/// Number of values in the document (the root excluded).
fn count(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.len() + a.iter().map(count).sum::<usize>(),
        Value::Object(o) => o.len() + o.values().map(count).sum::<usize>(),
        _ => 0,
    }
}

/// Apply `m` to the `*k`th value met in a pre-order walk; returns whether it was applied.
fn apply(v: &mut Value, m: &Mutation, k: &mut usize) -> bool {
    match v {
        Value::Object(o) => {
            let keys: Vec<String> = o.keys().cloned().collect();
            for key in keys {
                if *k == 0 {
                    match m {
                        Mutation::Delete(_) => {
                            o.remove(&key);
                        }
                        Mutation::Replace(_, new) => {
                            o.insert(key, new.clone());
                        }
                        Mutation::Duplicate(_) => {}
                    }
                    return true;
                }
                *k -= 1;
                if apply(o.get_mut(&key).unwrap(), m, k) {
                    return true;
                }
            }
            false
        }
        Value::Array(a) => {
            for i in 0..a.len() {
                if *k == 0 {
                    match m {
                        Mutation::Delete(_) => {
                            a.remove(i);
                        }
                        Mutation::Replace(_, new) => a[i] = new.clone(),
                        Mutation::Duplicate(_) => {
                            let item = a[i].clone();
                            a.insert(i, item);
                        }
                    }
                    return true;
                }
                *k -= 1;
                if apply(&mut a[i], m, k) {
                    return true;
                }
            }
            false
        }
        _ => false,
    }
}

fn mutate(text: &str, mutations: &[Mutation]) -> String {
    let mut doc: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    for m in mutations {
        let n = count(&doc).max(1);
        let mut k = match m {
            Mutation::Delete(k) | Mutation::Replace(k, _) | Mutation::Duplicate(k) => k % n,
        };
        apply(&mut doc, m, &mut k);
    }
    doc.to_string()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(256), ..ProptestConfig::default() })]

    #[test]
    fn random_text_is_a_report_or_a_clear_error(text in any::<String>()) {
        check(&text);
    }

    #[test]
    fn json_shaped_text_is_a_report_or_a_clear_error(text in "[\\[\\]{}\",:0-9a-zA-Z ]{0,300}") {
        check(&text);
        check(&format!("{{\"SchemaVersion\":2,\"Results\":{text}}}"));
    }

    #[test]
    fn mutated_real_reports(
        seed in 0..seeds().len(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        check(&mutate(&seeds()[seed], &mutations));
    }

    #[test]
    fn flipped_bytes_of_real_reports(
        seed in 0..seeds().len(),
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..6),
        cut in proptest::option::of(any::<usize>()),
    ) {
        let mut bytes = seeds()[seed].clone().into_bytes();
        for (at, mask) in flips {
            let i = at % bytes.len();
            bytes[i] ^= mask;
        }
        if let Some(c) = cut {
            bytes.truncate(c % (bytes.len() + 1));
        }
        check(&String::from_utf8_lossy(&bytes));
    }
}

/// Every seed as it is: the corpus files parse or give a clear error, never panic.
#[test]
fn seed_corpus() {
    for text in seeds() {
        check(text);
    }
}
