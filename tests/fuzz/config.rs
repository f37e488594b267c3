//! The deployment TOML and `dax validate`: whatever the file holds, parsing ends with a
//! config or with problems, each located (a line or a field) and none leaking a secret.
//!
//! Inputs: random bytes; structured mutations (deleted, duplicated, swapped and inserted
//! lines, values replaced by wrong types, huge numbers, NaN, unicode, deep nesting,
//! `${env:..}`/`${file:..}` edge cases, truncation) of the example and golden files and of
//! the seed corpus `tests/fuzz/corpus/toml/`; a few of them through the whole `dax validate`
//! (every plugin resolved and asked to check its config).

use dax::config::{self, LoadedConfig, Problem};
use proptest::prelude::*;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::OnceLock;

/// Value of `${env:DAX_FUZZ_SECRET}`: quotes, a backslash and newlines, which error messages
/// escape, so a redaction that only knows the raw value misses it.
const ENV_SECRET: &str = "env-secret \"quoted\" back\\slash\nline2\tTAB";
/// Content of `secret.pem` (`${file:secret.pem}`): a multi-line key.
const FILE_SECRET: &str =
    "-----BEGIN KEY-----\nMIIBfilesecretAAAA\nZZZZfilesecret9999\n-----END KEY-----";

/// A folder the fuzzed files live in: `secret.pem`, a FIFO, a 2 MiB file, a subfolder.
fn fixture_dir() -> &'static Path {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| {
        // Set once, before any case reads it.
        std::env::set_var("DAX_FUZZ_SECRET", ENV_SECRET);
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("secret.pem"), format!("{FILE_SECRET}\n")).unwrap();
        std::fs::write(dir.path().join("big.bin"), vec![b'a'; 2 * 1024 * 1024]).unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let fifo = dir.path().join("fifo");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success(), "mkfifo");
        dir
    })
    .path()
}

/// The files mutations start from: the quickstart examples, the golden files and the corpus.
fn seeds() -> &'static Vec<(String, String)> {
    static SEEDS: OnceLock<Vec<(String, String)>> = OnceLock::new();
    SEEDS.get_or_init(|| {
        let root = dax_tests::repo_root();
        let mut out = Vec::new();
        for dir in ["examples/quickstart", "tests/golden"] {
            let mut files: Vec<PathBuf> = std::fs::read_dir(root.join(dir))
                .unwrap()
                .map(|e| e.unwrap().path())
                .filter(|p| p.extension().is_some_and(|e| e == "toml"))
                .collect();
            files.sort();
            for f in files {
                out.push((
                    format!("{dir}/{}", f.file_name().unwrap().to_string_lossy()),
                    std::fs::read_to_string(&f).unwrap(),
                ));
            }
        }
        for (name, bytes) in super::corpus("toml") {
            out.push((
                format!("corpus/{name}"),
                String::from_utf8(bytes).expect("toml corpus files are UTF-8"),
            ));
        }
        assert!(out.len() >= 8, "seed files missing: {out:?}");
        out
    })
}

/// What a parse must look like, whatever the input: a config, or at least one problem, each
/// located, printable, and free of secrets once redacted (as `dax validate` prints them).
fn check_problems(text: &str, file: &str, problems: &[Problem]) {
    let lines = text.lines().count().max(1);
    for p in problems {
        assert_eq!(p.file, file, "{p:?}");
        assert!(!p.message.trim().is_empty(), "empty message: {p:?}");
        assert!(
            p.line > 0 || !p.field.is_empty() || p.message.starts_with("cannot read"),
            "problem with neither a line nor a field: {p:?}"
        );
        if p.line > 0 {
            assert!(p.line <= lines + 1, "line {} of {lines}: {p:?}", p.line);
            assert!(p.column >= 1, "{p:?}");
        }
        assert_no_secret(&dax::config::secrets::redact(&p.to_string()));
    }
}

fn assert_no_secret(shown: &str) {
    for needle in [
        "filesecret",
        "MIIBfile",
        "back\\\\slash",
        "line2",
        "quoted\\\"",
    ] {
        assert!(
            !shown.contains(needle),
            "a secret reached the output (`{needle}`):\n{shown}"
        );
    }
}

/// Parse `text` as the file `name` in the fixture folder and check the outcome.
fn parse_checked(text: &str) -> Option<LoadedConfig> {
    fixture_dir();
    match config::parse(text, "fuzz.toml", fixture_dir()) {
        Ok(loaded) => {
            // What `dax plan --output json` and the journal do with a good config.
            let json = serde_json::to_value(&loaded.config).expect("a parsed config serializes");
            let _ = (
                loaded.config.replicas(),
                loaded.config.workload_spec(),
                json,
            );
            Some(loaded)
        }
        Err(problems) => {
            assert!(!problems.is_empty(), "an error without problems");
            check_problems(text, "fuzz.toml", &problems);
            None
        }
    }
}

/// Bytes that may not be UTF-8 go through `load_file`, as `dax validate FILE` reads them.
fn load_checked(bytes: &[u8]) {
    static N: AtomicUsize = AtomicUsize::new(0);
    let path = fixture_dir().join(format!("case-{}.toml", N.fetch_add(1, Ordering::Relaxed)));
    std::fs::write(&path, bytes).unwrap();
    let file = path.display().to_string();
    let result = config::load_file(&path);
    std::fs::remove_file(&path).unwrap();
    if let Err(problems) = result {
        assert!(!problems.is_empty());
        check_problems(&String::from_utf8_lossy(bytes), &file, &problems);
    }
}

// ------------------------------------------------------------------ generators

/// `${env:..}` / `${file:..}` edge cases, as the inside of a TOML basic string.
fn interpolation() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("${".to_string()),
        Just("${}".to_string()),
        Just("${env:}".to_string()),
        Just("${file:}".to_string()),
        Just("${env:DAX_FUZZ_SECRET}".to_string()),
        Just("${file:secret.pem}".to_string()),
        Just("${file:fifo}".to_string()),
        Just("${file:/dev/zero}".to_string()),
        Just("${file:/dev/stdin}".to_string()),
        Just("${file:big.bin}".to_string()),
        Just("${file:sub}".to_string()),
        Just("${file:.}".to_string()),
        Just("${file:missing}".to_string()),
        Just("${file:/proc/self/status}".to_string()),
        Just("${env:DAX_FUZZ_UNSET_VARIABLE}".to_string()),
        Just("${vault:x}".to_string()),
        Just("${env:A=B}".to_string()),
        Just("${env:\\u0000}".to_string()),
        Just("${env:${env:DAX_FUZZ_SECRET}}".to_string()),
        Just("$${env:DAX_FUZZ_SECRET}}".to_string()),
        Just("${env:DAX_FUZZ_SECRET}${file:secret.pem}".to_string()),
        Just("http://x/${env:DAX_FUZZ_SECRET}".to_string()),
        Just("${file:secret.pem".to_string()),
        Just(format!("${{{}", "x".repeat(10_000))),
        Just(format!("${{env:{}}}", "A".repeat(5_000))),
        Just("${file:../../../../../../../../etc/hostname}".to_string()),
        "[a-z${}:./]{0,24}",
    ]
}

/// Text with every kind of character a file may hold, escaped for a TOML basic string.
fn unicode() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<String>(),
        Just("\u{202e}evil\u{200b}\u{feff}".to_string()),
        Just("e\u{301}\u{301}\u{301}🦀👩‍👩‍👧".to_string()),
        Just("\u{0}\u{7}\u{1b}[31m".to_string()),
        Just("x".repeat(100_000)),
    ]
    .prop_map(|s| escape(&s))
}

fn escape(s: &str) -> String {
    let mut out = String::new();
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

/// A value of any TOML type, and some that are not TOML at all.
fn weird_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => interpolation().prop_map(|s| format!("\"{s}\"")),
        2 => unicode().prop_map(|s| format!("\"{s}\"")),
        1 => prop_oneof![
            Just("\"\""),
            Just("0"),
            Just("-1"),
            Just("9223372036854775807"),
            Just("-9223372036854775808"),
            Just("99999999999999999999999999"),
            Just("1e308"),
            Just("1e309"),
            Just("-1e308"),
            Just("5e-324"),
            Just("inf"),
            Just("-inf"),
            Just("nan"),
            Just("-nan"),
            Just("true"),
            Just("[]"),
            Just("{}"),
            Just("[1, \"two\", 3.0, [], {}]"),
            Just("1979-05-27T07:32:00Z"),
            Just("07:32:00"),
            Just("1979-05-27"),
            Just("'''multi\nline'''"),
            Just("\"340282366920938463463374607431768211455h\""),
            Just("\"18446744073709551616ms\""),
            Just("\"18446744073709551615ms\""),
            Just("\"0s\""),
            Just("\"1m1m1m\""),
            Just("\"-5s\""),
            Just("\"5 s\""),
            Just("\"5\""),
            Just("\"HIGH\""),
            Just("\"*\""),
            Just("\"builtin:\""),
            Just("\"builtin:../../etc\""),
            Just("\"rollout\""),
            Just("\"range\""),
        ]
        .prop_map(str::to_string),
        1 => (1usize..200).prop_map(|d| format!("{}{}", "[".repeat(d), "]".repeat(d))),
        1 => (1usize..200).prop_map(|d| format!("{}1{}", "{ a = ".repeat(d), " }".repeat(d))),
        1 => any::<i64>().prop_map(|i| i.to_string()),
        1 => any::<f64>().prop_map(|f| format!("{f:?}")),
        1 => "[0-9]{1,40}",
    ]
}

/// Keys the schema knows (and some it does not).
fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        proptest::sample::select(vec![
            "app",
            "version",
            "artifact",
            "namespace",
            "progress_deadline",
            "on_inconclusive",
            "plugin",
            "workload",
            "params",
            "replicas",
            "name",
            "provider",
            "query",
            "min",
            "max",
            "interval",
            "kind",
            "direction",
            "critical",
            "weight",
            "type",
            "url",
            "timeout",
            "metadata",
            "load",
            "rps",
            "method",
            "headers",
            "on",
            "source",
            "sha256",
            "config",
            "grants",
            "limits",
            "call_timeout",
            "memory_mib",
            "max_output_kib",
            "http",
            "dirs",
            "http_auth",
            "host",
            "guest",
            "writable",
            "scanners",
            "severity",
            "ignore_unfixed",
            "ignore",
            "id",
            "expires",
            "packages",
            "on_scanner_error",
            "listen",
            "stable",
            "maxWeight",
            "stepWeight",
            "threshold",
            "\"quoted key\"",
            "a.b.c",
        ])
        .prop_map(str::to_string),
        (1usize..120).prop_map(|d| vec!["k"; d].join(".")),
        "[a-zA-Z_-]{1,12}",
    ]
}

/// A line to insert: a key/value, a table header, or junk.
fn line() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (key(), weird_value()).prop_map(|(k, v)| format!("{k} = {v}")),
        2 => proptest::sample::select(vec![
            "[deployment]", "[target]", "[strategy]", "[[checks]]", "[[hooks]]",
            "[[notifications]]", "[gate]", "[[gate.ignore]]", "[gate.max]", "[plugins]",
            "[[plugins]]", "[checks]", "[plugins.x]", "[plugins.x.config]",
            "[plugins.x.limits]", "[plugins.x.grants]", "[[plugins.x.grants.dirs]]",
            "[target.workload]", "[strategy.params]", "[deployment.deployment]", "[]", "[[",
        ])
        .prop_map(str::to_string),
        1 => (1usize..120).prop_map(|d| format!("[{}]", vec!["t"; d].join("."))),
        1 => unicode(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    DeleteLine(usize),
    DuplicateLine(usize),
    SwapLines(usize, usize),
    /// Replace the value of the `n`th `key = value` line.
    ReplaceValue(usize, String),
    InsertLine(usize, String),
    /// Cut the file at this character.
    Truncate(usize),
    InsertText(usize, String),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let n = any::<usize>();
    prop_oneof![
        2 => n.prop_map(Mutation::DeleteLine),
        1 => n.prop_map(Mutation::DuplicateLine),
        1 => (n, n).prop_map(|(a, b)| Mutation::SwapLines(a, b)),
        4 => (n, weird_value()).prop_map(|(i, v)| Mutation::ReplaceValue(i, v)),
        3 => (n, line()).prop_map(|(i, l)| Mutation::InsertLine(i, l)),
        1 => n.prop_map(Mutation::Truncate),
        1 => (n, unicode()).prop_map(|(i, s)| Mutation::InsertText(i, s)),
    ]
}

fn apply(text: &str, mutations: &[Mutation]) -> String {
    let mut lines: Vec<String> = text.lines().map(str::to_string).collect();
    for m in mutations {
        let len = lines.len().max(1);
        match m {
            Mutation::DeleteLine(i) if !lines.is_empty() => {
                lines.remove(i % len);
            }
            Mutation::DuplicateLine(i) if !lines.is_empty() => {
                let l = lines[i % len].clone();
                lines.insert(i % len, l);
            }
            Mutation::SwapLines(a, b) if !lines.is_empty() => lines.swap(a % len, b % len),
            Mutation::ReplaceValue(i, v) => {
                let assignments: Vec<usize> = (0..lines.len())
                    .filter(|&j| {
                        !lines[j].trim_start().starts_with('#') && lines[j].contains(" = ")
                    })
                    .collect();
                if !assignments.is_empty() {
                    let j = assignments[i % assignments.len()];
                    let key = lines[j].split(" = ").next().unwrap().to_string();
                    lines[j] = format!("{key} = {v}");
                }
            }
            Mutation::InsertLine(i, l) => lines.insert(i % (lines.len() + 1), l.clone()),
            Mutation::Truncate(i) => {
                let joined = lines.join("\n");
                let cut: String = joined
                    .chars()
                    .take(i % (joined.chars().count() + 1))
                    .collect();
                lines = cut.lines().map(str::to_string).collect();
            }
            Mutation::InsertText(i, s) => {
                let joined = lines.join("\n");
                let at = i % (joined.chars().count() + 1);
                let mut out: String = joined.chars().take(at).collect();
                out.push_str(s);
                out.extend(joined.chars().skip(at));
                lines = out.lines().map(str::to_string).collect();
            }
            _ => {}
        }
    }
    lines.join("\n") + "\n"
}

fn seed_index() -> impl Strategy<Value = usize> {
    0..seeds().len()
}

proptest! {
    #![proptest_config(super::config(256, "fuzz/regressions/config.txt"))]

    /// Arbitrary bytes, read as `dax validate FILE` reads them.
    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        load_checked(&bytes);
    }

    /// Arbitrary text built from TOML's own punctuation.
    #[test]
    fn toml_shaped_text_never_panics(text in "([\\[\\]{}=.,\"'#\\n a-z0-9$:-]){0,400}") {
        parse_checked(&text);
    }

    /// The real files, mutated.
    #[test]
    fn mutated_files_parse_or_give_located_problems(
        seed in seed_index(),
        mutations in proptest::collection::vec(mutation(), 1..6),
    ) {
        let text = apply(&seeds()[seed].1, &mutations);
        parse_checked(&text);
    }

    /// Byte flips of the real files (may break UTF-8).
    #[test]
    fn flipped_bytes_never_panic(
        seed in seed_index(),
        flips in proptest::collection::vec((any::<usize>(), 1u8..=255), 1..8),
    ) {
        let mut bytes = seeds()[seed].1.clone().into_bytes();
        for (at, mask) in flips {
            let i = at % bytes.len();
            bytes[i] ^= mask;
        }
        load_checked(&bytes);
    }
}

// ------------------------------------------------------------------ the whole `dax validate`

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| tokio::runtime::Runtime::new().unwrap())
}

/// One engine for every case: its plugin host compiles each embedded plugin once.
fn engine() -> &'static dax::engine::Engine {
    static ENGINE: OnceLock<(dax::engine::Engine, tempfile::TempDir)> = OnceLock::new();
    &ENGINE
        .get_or_init(|| {
            let state = tempfile::tempdir().unwrap();
            let options = dax::plugin::HostOptions {
                cache_dir: dax_tests::repo_root().join("target/test-component-cache"),
                ..Default::default()
            };
            let resolver = std::sync::Arc::new(dax::engine::HostResolver::new(options));
            (
                dax::engine::Engine::new(dax::state::StateDir::new(state.path()), resolver),
                state,
            )
        })
        .0
}

proptest! {
    #![proptest_config(super::config(128, "fuzz/regressions/validate.txt"))]

    /// Mutations of the quickstart examples (whose plugins are all embedded) through the
    /// whole of `dax validate`: each plugin resolved, loaded and asked to check its config.
    #[test]
    fn dax_validate_on_mutated_examples(
        seed in 0usize..3,
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let text = apply(&seeds()[seed].1, &mutations);
        // URL sources are left out: they would download (no network in tests). Found here:
        // an unpinned `http://` source is fetched by `dax validate`, and the download error
        // shows the URL percent-encoded, which redaction misses (plugin loading, issue 10's
        // "URL sources" item).
        let loaded = parse_checked(&text)
            .filter(|l| !l.config.plugins.values().any(|p| p.source.contains("://")));
        if let Some(loaded) = loaded {
            let problems = runtime().block_on(async {
                tokio::time::timeout(
                    std::time::Duration::from_secs(60),
                    engine().validate(&loaded),
                )
                .await
                .expect("dax validate ended within 60 s")
            });
            check_problems(&text, "fuzz.toml", &problems);
        }
    }
}

// ------------------------------------------------------------------ seed corpus and regressions

/// Every corpus file, as it is, must parse or give located problems.
#[test]
fn corpus_files_parse_or_give_located_problems() {
    for (name, bytes) in super::corpus("toml") {
        let text = String::from_utf8(bytes).unwrap();
        let _ = name;
        parse_checked(&text);
    }
}

/// Regressions found by this fuzzer, each as the smallest file that showed it.
#[test]
fn found_by_fuzzing() {
    let base = "[deployment]\napp = \"a\"\nversion = \"v\"\n[target]\nplugin = \"t\"\n[strategy]\nplugin = \"s\"\n[plugins.t]\nsource = \"builtin:local\"\n[plugins.s]\nsource = \"builtin:canary\"\n";
    let problem = |extra: &str| -> String {
        let text = format!("{base}{extra}");
        let problems = config::parse(&text, "fuzz.toml", fixture_dir()).unwrap_err();
        check_problems(&text, "fuzz.toml", &problems);
        problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
            .join("\n")
    };
    // A duration that overflowed u128 panicked (debug) and one above u64::MAX ms wrapped to 0.
    let p = problem(&format!(
        "[[hooks]]\nname = \"h\"\ntype = \"pre-rollout\"\nurl = \"http://x/\"\ntimeout = \"{}h\"\n",
        u128::MAX
    ));
    assert!(
        p.contains("`hooks[0].timeout`") && p.contains("is too long"),
        "{p}"
    );
    let p = problem("[plugins.t.limits]\ncall_timeout = \"18446744073709551616ms\"\n");
    assert!(p.contains("is too long"), "{p}");
    // `${file:..}` of a FIFO blocked forever, of /dev/zero grew until out of memory.
    for f in ["fifo", "/dev/zero", "/dev/stdin", "sub"] {
        let p = problem(&format!(
            "[[notifications]]\nkind = \"slack\"\nurl = \"${{file:{f}}}\"\n"
        ));
        assert!(p.contains("not a regular file"), "{f}: {p}");
    }
    let p = problem("[[notifications]]\nkind = \"slack\"\nurl = \"${file:big.bin}\"\n");
    assert!(p.contains("larger than 1024 KiB"), "{p}");
    // `min = nan` made a check that always passes.
    let p = problem("[[checks]]\nname = \"c\"\nprovider = \"t\"\nquery = \"q\"\nmin = nan\n");
    assert!(p.contains("`checks[0].min`: `min` is NaN"), "{p}");
    // A secret in a value of the wrong type was printed escaped, which redaction missed.
    let p = problem("[[hooks]]\nname = \"h\"\ntype = \"rollout\"\nload = { url = \"http://x/\", rps = \"${file:secret.pem}\" }\n");
    assert!(p.contains("invalid type"), "{p}");
    let p = problem("[deployment.x]\ny = \"${env:DAX_FUZZ_SECRET}\"\n[target.workload]\nreplicas = \"${env:DAX_FUZZ_SECRET}\"\n");
    assert!(!p.is_empty());
}
