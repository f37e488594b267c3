//! Plugin authoring as an outsider does it, in every language: `dax plugin new` into a
//! folder outside this repository, `dax plugin build DIR`, `dax plugin test DIR` (the
//! project's own scripted test), then a real `dax deploy` on the local target that uses the
//! new strategy and the new metric provider. Plus the refusals of each command.
//!
//! JavaScript needs node + npm, Python needs python3 (componentize-py is installed into the
//! build cache on first use); without them the test is skipped locally and fails under CI.

use dax_tests::{dax_bin, demo_app, in_ci};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch folder outside the repository (the system temp dir).
fn outside_the_repo() -> tempfile::TempDir {
    let dir = tempfile::Builder::new()
        .prefix("dax-authoring-")
        .tempdir_in(std::env::temp_dir())
        .unwrap();
    assert!(
        !dir.path().starts_with(dax_tests::repo_root()),
        "the temp dir must be outside the repository"
    );
    dir
}

/// Run `dax ARGS` in `cwd`; (exit code, stdout, stderr).
fn dax(cwd: &Path, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(dax_bin())
        .args(args)
        .current_dir(cwd)
        .env(
            "DAX_CACHE_DIR",
            dax_tests::repo_root().join("target/test-component-cache"),
        )
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `dax plugin new`, `dax plugin build`, `dax plugin test` for one role and language;
/// returns the built component.
fn new_build_test(root: &Path, name: &str, role: &str, lang: &str) -> PathBuf {
    let dir = root.join(name);
    let (code, out, err) = dax(
        root,
        &[
            "plugin",
            "new",
            name,
            "--role",
            role,
            "--lang",
            lang,
            "--dir",
            dir.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "plugin new: {out}{err}");
    assert!(
        dir.join("wit/types.wit").is_file(),
        "the project carries the WIT"
    );

    let (code, out, err) = dax(&dir, &["plugin", "build"]);
    assert_eq!(code, 0, "plugin build ({lang} {role}): {out}{err}");
    let wasm = dir.join("dist").join(format!("{name}.wasm"));
    assert!(
        out.contains(&wasm.display().to_string()),
        "build prints where the component is: {out}"
    );
    assert!(wasm.is_file());

    let (code, out, err) = dax(
        root,
        &[
            "plugin",
            "test",
            dir.to_str().unwrap(),
            "--role",
            role,
            "--input",
            dir.join("test/calls.toml").to_str().unwrap(),
            "--output",
            "json",
        ],
    );
    assert_eq!(code, 0, "plugin test ({lang} {role}): {out}{err}");
    let report: Value = serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(report["failed"], 0, "{out}");
    assert!(report["passed"].as_u64().unwrap() >= 3, "{out}");
    assert_eq!(report["role"], role, "{out}");
    wasm
}

/// A deployment of the demo app on the local target that uses the given strategy and
/// metric provider components; asserts it is promoted.
fn deploy_with(root: &Path, strategy: &Path, metrics: &Path) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let app = demo_app();
    let app = app.display();
    let file = root.join("deploy.toml");
    std::fs::write(
        &file,
        format!(
            r#"[deployment]
app = "demo"
version = "v2"
artifact = "python3 {app} --version v2 --port {{port}}"
progress_deadline = "1m"

[target]
plugin = "local"
[target.workload]
replicas = 1

[strategy]
plugin = "my-strategy"
[strategy.params]
weight = 40

[[checks]]
name = "answer"
provider = "my-metrics"
query = "value:21"
min = 40.0
interval = "1s"

[plugins.local]
source = "builtin:local"
[plugins.local.config]
listen = "127.0.0.1:{port}"
stop_timeout = "2s"
stable = {{ version = "v1", command = "python3", args = ["{app}", "--version", "v1", "--port", "{{port}}"] }}

[plugins.my-strategy]
source = "{strategy}"

[plugins.my-metrics]
source = "{metrics}"
[plugins.my-metrics.config]
scale = 2.0
"#,
            strategy = strategy.display(),
            metrics = metrics.display(),
        ),
    )
    .unwrap();
    let state = root.join("state");
    let (code, out, err) = dax(
        root,
        &[
            "deploy",
            file.to_str().unwrap(),
            "--no-progress",
            "--output",
            "json",
            "--state-dir",
            state.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "deploy: {out}{err}");
    assert!(out.contains("promoted"), "{out}");
}

/// Make, build and test a plugin of each role in `roles` (besides the metric provider and
/// the strategy, which a deployment then uses).
fn made_built_tested_deployed(lang: &str, roles: &[&str]) {
    let root = outside_the_repo();
    let metrics = new_build_test(root.path(), "my-metrics", "metric-provider", lang);
    let strategy = new_build_test(root.path(), "my-strategy", "strategy", lang);
    for role in roles {
        new_build_test(root.path(), &format!("my-{role}"), role, lang);
    }
    deploy_with(root.path(), &strategy, &metrics);
}

/// Whether `tool --version` runs; a missing tool fails under CI and skips locally.
fn have(tool: &str, why: &str) -> bool {
    let ok = Command::new(tool)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        assert!(
            !in_ci(),
            "{tool} is needed for {why} (tests/run.sh installs it)"
        );
        eprintln!("skipped: {tool} is not installed ({why})");
    }
    ok
}

#[test]
fn a_rust_plugin_of_every_role_is_made_built_tested_and_deployed_outside_the_repo() {
    made_built_tested_deployed("rust", &["scanner", "target"]);
}

#[test]
fn javascript_plugins_are_made_built_tested_and_deployed_outside_the_repo() {
    if have("npm", "JavaScript plugins") {
        // A JavaScript build takes a minute or more (componentize-js): the roles not
        // deployed are covered by the Rust and Python tests and by `dax plugin test`.
        made_built_tested_deployed("js", &["target"]);
    }
}

#[test]
fn python_plugins_are_made_built_tested_and_deployed_outside_the_repo() {
    if have("python3", "Python plugins") {
        made_built_tested_deployed("python", &["scanner"]);
    }
}

#[test]
fn authoring_commands_refuse_what_they_cannot_do() {
    let root = outside_the_repo();
    let r = root.path();

    // A folder that is no plugin project: an error naming it, never "built nothing".
    let (code, _, err) = dax(r, &["plugin", "build", r.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(
        err.contains(&format!("`{}` is not a plugin project: it has no Cargo.toml (Rust), package.json (JavaScript) or pyproject.toml (Python)", r.display())),
        "{err}"
    );
    // The repository itself is not one project.
    let (code, _, err) = dax(&dax_tests::repo_root(), &["plugin", "build"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("is the dax repository, not a plugin project: use `dax plugin build --all`"),
        "{err}"
    );
    // An unknown -p in a Rust workspace names what exists.
    let examples = dax_tests::repo_root().join("examples/plugins");
    let (code, _, err) = dax(
        r,
        &["plugin", "build", examples.to_str().unwrap(), "-p", "nope"],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("no plugin package named `nope` in") && err.contains("hello-metrics"),
        "{err}"
    );
    // A Rust crate that is not a plugin.
    std::fs::create_dir(r.join("lib")).unwrap();
    std::fs::write(
        r.join("lib/Cargo.toml"),
        "[package]\nname = \"lib\"\nversion = \"0.1.0\"\nedition = \"2021\"\n[workspace]\n",
    )
    .unwrap();
    std::fs::create_dir(r.join("lib/src")).unwrap();
    std::fs::write(r.join("lib/src/lib.rs"), "").unwrap();
    let (code, _, err) = dax(r, &["plugin", "build", "lib"]);
    assert_ne!(code, 0);
    assert!(
        err.contains("is a Rust project without a plugin crate"),
        "{err}"
    );
    // A Python project without [tool.dax].
    std::fs::create_dir(r.join("py")).unwrap();
    std::fs::write(r.join("py/pyproject.toml"), "[project]\nname = \"py\"\n").unwrap();
    let (code, _, err) = dax(r, &["plugin", "build", "py"]);
    assert_ne!(code, 0);
    assert!(err.contains("has no [tool.dax] table"), "{err}");

    // `new`: bad names and non-empty folders.
    let (code, _, err) = dax(
        r,
        &[
            "plugin",
            "new",
            "My_Plugin",
            "--role",
            "scanner",
            "--lang",
            "rust",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("`My_Plugin` is not a plugin name"), "{err}");
    let (code, _, err) = dax(
        r,
        &[
            "plugin", "new", "x", "--role", "scanner", "--lang", "rust", "--dir", "lib",
        ],
    );
    assert_ne!(code, 0);
    assert!(err.contains("already exists and is not empty"), "{err}");

    // `test`: a failed expectation exits 1 and says what differed; a wrong role or an
    // unknown call is an error; the builtin plugins are tested the same way.
    let canary = r.join("canary.toml");
    std::fs::write(
        &canary,
        "config = {}\n[[call]]\ncall = \"describe\"\nexpect.ok = { name = \"not-canary\" }\n[[call]]\ncall = \"start\"\n",
    )
    .unwrap();
    let wasm = Path::new("builtin:canary");
    let (code, out, err) = dax(
        r,
        &[
            "plugin",
            "test",
            wasm.to_str().unwrap(),
            "--input",
            canary.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 1, "{out}{err}");
    assert!(
        out.contains("FAIL describe")
            && out.contains("ok.name: expected \"not-canary\", got \"canary\""),
        "{out}"
    );
    assert!(out.contains("0 passed, 1 failed"), "{out}");
    let (code, _, err) = dax(
        r,
        &[
            "plugin",
            "test",
            wasm.to_str().unwrap(),
            "--role",
            "scanner",
            "--input",
            canary.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("is a strategy plugin, not a scanner plugin"),
        "{err}"
    );
    std::fs::write(
        &canary,
        "[[call]]\ncall = \"scan\"\nartifact = { name = \"x\", digest = \"\", manifests = [] }\n",
    )
    .unwrap();
    let (code, _, err) = dax(
        r,
        &[
            "plugin",
            "test",
            wasm.to_str().unwrap(),
            "--input",
            canary.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("`scan` is not a call of a strategy plugin"),
        "{err}"
    );
    std::fs::write(&canary, "[[call]]\ncall = \"launch\"\n").unwrap();
    let (code, _, err) = dax(
        r,
        &[
            "plugin",
            "test",
            wasm.to_str().unwrap(),
            "--input",
            canary.to_str().unwrap(),
        ],
    );
    assert_ne!(code, 0);
    assert!(
        err.contains("unknown call `launch`; the calls are: describe, validate-config"),
        "{err}"
    );
}

/// docs/plugins/reference.md lists, for every first-party plugin, exactly the top-level keys
/// of its describe() config schema, each with the schema's type (and `required` for the
/// required ones): the reference cannot drift from the plugins.
#[test]
fn the_plugin_reference_matches_every_config_schema() {
    let doc =
        std::fs::read_to_string(dax_tests::repo_root().join("docs/plugins/reference.md")).unwrap();
    // Every embedded Wasm plugin, as `dax plugin list` names them: a new one cannot ship
    // undocumented.
    let (code, out, err) = dax(
        &dax_tests::repo_root(),
        &["plugin", "list", "--output", "json"],
    );
    assert_eq!(code, 0, "{err}");
    let listed: Vec<Value> = serde_json::from_str(&out).unwrap();
    let first_party: Vec<String> = listed
        .iter()
        .filter(|p| p["kind"] == "wasm")
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    assert!(first_party.len() >= 8, "{out}");
    for name in &first_party {
        let name = name.as_str();
        let section = doc
            .split("\n## ")
            .find(|s| s.starts_with(&format!("{name}\n")))
            .unwrap_or_else(|| panic!("docs/plugins/reference.md has no `## {name}` section"));
        // `| `key` | type | default | meaning |` rows.
        let rows: Vec<Vec<String>> = section
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                l.trim_matches('|')
                    .split(" | ")
                    .map(|c| c.trim().to_string())
                    .collect()
            })
            .collect();
        let (code, out, err) = dax(
            &dax_tests::repo_root(),
            &[
                "plugin",
                "inspect",
                &format!("builtin:{name}"),
                "--output",
                "json",
            ],
        );
        assert_eq!(code, 0, "{err}");
        let info: Value = serde_json::from_str(&out).unwrap();
        let schema: Value =
            serde_json::from_str(info["info"]["config_schema"].as_str().unwrap()).unwrap();
        let properties = schema["properties"].as_object().unwrap();
        let required: Vec<&str> = schema["required"]
            .as_array()
            .map(|r| r.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let documented: Vec<&str> = rows.iter().map(|r| r[0].trim_matches('`')).collect();
        let mut in_schema: Vec<&str> = properties.keys().map(String::as_str).collect();
        let mut sorted = documented.clone();
        sorted.sort();
        in_schema.sort();
        assert_eq!(
            sorted, in_schema,
            "{name}: the reference's keys differ from describe()'s schema"
        );
        for row in &rows {
            let key = row[0].trim_matches('`');
            let want = match &properties[key]["type"] {
                Value::String(t) => t.clone(),
                Value::Array(ts) => ts
                    .iter()
                    .filter_map(Value::as_str)
                    .collect::<Vec<_>>()
                    .join(" or "),
                _ => "object".into(), // `enum`-only or untyped schemas are documented as objects
            };
            assert_eq!(
                row[1], want,
                "{name}: `{key}` has type {want} in its schema"
            );
            assert_eq!(
                row[2] == "required",
                required.contains(&key),
                "{name}: `{key}` is {}required in its schema",
                if required.contains(&key) { "" } else { "not " }
            );
            assert!(
                row.len() == 4 && !row[3].is_empty(),
                "{name}: `{key}` needs a meaning"
            );
        }
    }
}
