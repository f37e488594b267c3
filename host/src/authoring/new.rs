//! `dax plugin new NAME --role ROLE --lang rust|js|python`: a plugin project that builds
//! and tests outside this repository.
//!
//! The project carries everything it needs, written from copies compiled into `dax`
//! (`include_str!`): the WIT contract in `wit/`, and for Rust the SDK sources as a
//! vendored path dependency (`dax-sdk/`) with a lockfile seeded from the first-party
//! plugins'. So a project made by a `dax` binary builds against exactly the contract that
//! binary's host speaks, with no git or registry dependency on the dax repository (which a
//! vendor cannot reach, and whose newer WIT could differ from the host they deploy on).

use anyhow::{bail, Context as _};
use std::path::PathBuf;

use crate::contract::PluginRole;

/// The languages a project can be written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Language {
    Rust,
    Js,
    Python,
}

/// The contract, as compiled into this binary: `(path under wit/, text)`.
pub const WIT_FILES: &[(&str, &str)] = &[
    ("types.wit", include_str!("../../../wit/types.wit")),
    ("target.wit", include_str!("../../../wit/target.wit")),
    ("scanner.wit", include_str!("../../../wit/scanner.wit")),
    (
        "metric-provider.wit",
        include_str!("../../../wit/metric-provider.wit"),
    ),
    ("strategy.wit", include_str!("../../../wit/strategy.wit")),
    (
        "deps/dax-host/host.wit",
        include_str!("../../../wit/deps/dax-host/host.wit"),
    ),
];

/// The Rust SDK's sources: `(path under sdk/, text)`.
pub const SDK_FILES: &[(&str, &str)] = &[
    ("src/lib.rs", include_str!("../../../sdk/src/lib.rs")),
    ("src/http.rs", include_str!("../../../sdk/src/http.rs")),
];
const SDK_MANIFEST: &str = include_str!("../../../sdk/Cargo.toml");
/// Pins the SDK's dependencies to the versions the first-party plugins are built with.
const SEED_LOCKFILE: &str = include_str!("../../../plugins/Cargo.lock");

const RUST_MANIFEST: &str = include_str!("templates/rust/Cargo.toml");
const GITIGNORE: &str = "target/\ndist/\nnode_modules/\ntypes/\ntypings/\n__pycache__/\n";

/// Everything `dax plugin new` is asked for.
#[derive(Debug, Clone)]
pub struct NewProject {
    pub name: String,
    pub role: PluginRole,
    pub language: Language,
    /// The folder to create (default: `./NAME`); must not exist or be empty.
    pub dir: PathBuf,
}

/// Create the project; returns the files written (relative to the project folder).
pub fn create(project: &NewProject) -> anyhow::Result<Vec<String>> {
    check_name(&project.name)?;
    let dir = &project.dir;
    if dir.exists()
        && std::fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .next()
            .is_some()
    {
        bail!(
            "`{}` already exists and is not empty; pick another --dir (or remove it)",
            dir.display()
        );
    }
    let files = match project.language {
        Language::Rust => rust_files(project),
        Language::Js => js_files(project),
        Language::Python => python_files(project),
    };
    let mut written = Vec::new();
    for (path, text) in files {
        let full = dir.join(&path);
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&full, text).with_context(|| format!("writing {}", full.display()))?;
        written.push(path);
    }
    Ok(written)
}

/// A plugin name: lowercase letters, digits and hyphens, starting with a letter (it names
/// the crate or package, the component file and `[plugins.NAME]`).
fn check_name(name: &str) -> anyhow::Result<()> {
    let ok = name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-');
    if !ok {
        bail!(
            "`{name}` is not a plugin name: use 1 to 64 lowercase letters, digits and hyphens, starting with a letter (e.g. `my-metrics`)"
        );
    }
    Ok(())
}

/// The WIT world of a role, e.g. `metric-provider-plugin`.
pub fn world(role: PluginRole) -> String {
    format!("{}-plugin", role.interface())
}

fn fill(template: &str, project: &NewProject) -> String {
    template
        .replace("{{name}}", &project.name)
        .replace("{{role}}", project.role.interface())
        .replace("{{world}}", &world(project.role))
        .replace("{{project_world}}", &project_world(project.role))
}

/// The world JavaScript and Python projects build (`wit/project.wit`): the role's world
/// importing only `dax:host/log`. Their toolchains import every interface of a world, used
/// or not, and dax refuses a plugin importing a capability it was not granted.
pub fn project_world(role: PluginRole) -> String {
    format!("{}-project", role.interface())
}

const PROJECT_WORLD: &str = include_str!("templates/project-world.wit");

fn wit_files() -> Vec<(String, String)> {
    WIT_FILES
        .iter()
        .map(|(path, text)| (format!("wit/{path}"), text.to_string()))
        .collect()
}

/// The scripted calls of `test/calls.toml`: the same for every language, since every
/// template implements the same behaviour for its role.
fn calls(role: PluginRole) -> &'static str {
    match role {
        PluginRole::Target => include_str!("templates/calls/target.toml"),
        PluginRole::Scanner => include_str!("templates/calls/scanner.toml"),
        PluginRole::MetricProvider => include_str!("templates/calls/metric-provider.toml"),
        PluginRole::Strategy => include_str!("templates/calls/strategy.toml"),
    }
}

fn common_files(project: &NewProject, readme: String) -> Vec<(String, String)> {
    let mut files = wit_files();
    files.push(("test/calls.toml".into(), calls(project.role).to_string()));
    files.push((".gitignore".into(), GITIGNORE.into()));
    files.push(("README.md".into(), readme));
    files
}

fn readme(project: &NewProject, language: &str, source: &str, guide: &str) -> String {
    format!(
        "# {name}\n\nA dax {role} plugin in {language}, made by `dax plugin new`.\n\n\
         ```sh\n\
         dax plugin build .                              # writes dist/{name}.wasm\n\
         dax plugin test . --input test/calls.toml       # runs test/calls.toml in the real host\n\
         ```\n\n\
         The code is in `{source}`; the contract it implements is `wit/` (world \
         `dax:plugin/{world}`), documented in place. Use it in a deployment with\n\n\
         ```toml\n[plugins.{name}]\nsource = \"path/to/dist/{name}.wasm\"\n```\n\n\
         {guide}\n",
        name = project.name,
        role = project.role,
        world = world(project.role),
    )
}

// ------------------------------------------------------------------------------- Rust

fn rust_files(project: &NewProject) -> Vec<(String, String)> {
    let source = match project.role {
        PluginRole::Target => include_str!("templates/rust/target.rs"),
        PluginRole::Scanner => include_str!("templates/rust/scanner.rs"),
        PluginRole::MetricProvider => include_str!("templates/rust/metric-provider.rs"),
        PluginRole::Strategy => include_str!("templates/rust/strategy.rs"),
    };
    let mut files = common_files(
        project,
        readme(
            project,
            "Rust",
            "src/lib.rs",
            "`dax-sdk/` is the Rust SDK, vendored (with `wit/`) so the project builds anywhere; \
             `cargo doc -p dax-sdk --open` documents it. A wasm toolchain is picked by \
             `dax plugin build` (rustup's `wasm32-wasip2` target, or Debian's `rustc-web`).",
        ),
    );
    files.push(("Cargo.toml".into(), fill(RUST_MANIFEST, project)));
    files.push(("Cargo.lock".into(), SEED_LOCKFILE.into()));
    files.push(("src/lib.rs".into(), fill(source, project)));
    files.push(("dax-sdk/Cargo.toml".into(), vendored_sdk_manifest()));
    for (path, text) in SDK_FILES {
        files.push((format!("dax-sdk/{path}"), text.to_string()));
    }
    files
}

/// The SDK's Cargo.toml without the dax workspace it inherits from.
fn vendored_sdk_manifest() -> String {
    let mut out = String::new();
    for line in SDK_MANIFEST.lines() {
        let line = match line.trim() {
            "version.workspace = true" => format!("version = \"{}\"", env!("CARGO_PKG_VERSION")),
            "edition.workspace = true" => "edition = \"2021\"".into(),
            "license.workspace = true" => "license = \"Apache-2.0\"".into(),
            // `[lints] workspace = true` needs the dax workspace's lint table.
            "[lints]" | "workspace = true" => continue,
            _ => line.to_string(),
        };
        out.push_str(&line);
        out.push('\n');
    }
    out
}

// ------------------------------------------------------------------------- JavaScript

/// The lockfile of the JavaScript example: the generated project installs the same
/// componentize-js tree (jco comes with it), reproducibly and from npm's cache when warm.
const JS_SEED_LOCKFILE: &str =
    include_str!("../../../examples/plugins/js-metrics/package-lock.json");

fn js_files(project: &NewProject) -> Vec<(String, String)> {
    let source = match project.role {
        PluginRole::Target => include_str!("templates/js/target.js"),
        PluginRole::Scanner => include_str!("templates/js/scanner.js"),
        PluginRole::MetricProvider => include_str!("templates/js/metric-provider.js"),
        PluginRole::Strategy => include_str!("templates/js/strategy.js"),
    };
    let mut files = common_files(
        project,
        readme(
            project,
            "JavaScript",
            "plugin.js",
            "`npm run build` (what `dax plugin build` runs) first writes TypeScript declarations \
             for the world into `types/` with jco's type generator (`types.mjs`), then builds the component with \
             componentize-js; `dax.js` has small helpers and says how WIT types map to \
             JavaScript (u64 is a BigInt, variants are `{ tag, val }`, errors are thrown). \
             Editors type-check `plugin.js` against `types/` through `jsconfig.json`.",
        ),
    );
    files.push(("wit/project.wit".into(), fill(PROJECT_WORLD, project)));
    files.push((
        "package.json".into(),
        fill(include_str!("templates/js/package.json"), project),
    ));
    files.push(("package-lock.json".into(), js_lockfile(&project.name)));
    files.push((
        "build.mjs".into(),
        fill(include_str!("templates/js/build.mjs"), project),
    ));
    files.push((
        "types.mjs".into(),
        fill(include_str!("templates/js/types.mjs"), project),
    ));
    files.push(("dax.js".into(), include_str!("templates/js/dax.js").into()));
    files.push((
        "jsconfig.json".into(),
        include_str!("templates/js/jsconfig.json").into(),
    ));
    files.push(("plugin.js".into(), fill(source, project)));
    files
}

fn js_lockfile(name: &str) -> String {
    let mut lock: serde_json::Value =
        serde_json::from_str(JS_SEED_LOCKFILE).expect("the JS example's lockfile is JSON");
    lock["name"] = name.into();
    let root = &mut lock["packages"][""];
    root["name"] = name.into();
    root["version"] = "0.1.0".into();
    root["devDependencies"]["@bytecodealliance/jco"] = "1.35.0".into();
    root["devDependencies"]["@bytecodealliance/jco-transpile"] = "0.15.0".into();
    serde_json::to_string_pretty(&lock).expect("JSON") + "\n"
}

// ----------------------------------------------------------------------------- Python

fn python_files(project: &NewProject) -> Vec<(String, String)> {
    let source = match project.role {
        PluginRole::Target => include_str!("templates/python/target.py"),
        PluginRole::Scanner => include_str!("templates/python/scanner.py"),
        PluginRole::MetricProvider => include_str!("templates/python/metric-provider.py"),
        PluginRole::Strategy => include_str!("templates/python/strategy.py"),
    };
    let guide = format!(
        "`dax plugin build` runs componentize-py {version} (installed once into \
         `~/.cache/dax-build/componentize-py`, or `$DAX_BUILD_CACHE`) with the world named in \
         `pyproject.toml` `[tool.dax]`; the component imports no WASI at all (`--stub-wasi`), \
         only what dax grants. `dax_plugin.py` has typed helpers and says how WIT types map \
         to Python. For editor completion and type checking, write the typed bindings once:\n\n\
         ```sh\n~/.cache/dax-build/componentize-py/bin/componentize-py -d wit -w dax:plugin/{world} bindings typings\n```",
        version = super::build::COMPONENTIZE_PY_VERSION,
        world = project_world(project.role),
    );
    let mut files = common_files(project, readme(project, "Python", "app.py", &guide));
    files.push(("wit/project.wit".into(), fill(PROJECT_WORLD, project)));
    files.push((
        "pyproject.toml".into(),
        fill(include_str!("templates/python/pyproject.toml"), project),
    ));
    files.push((
        "dax_plugin.py".into(),
        include_str!("templates/python/dax_plugin.py").into(),
    ));
    files.push(("app.py".into(), fill(source, project)));
    files
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    /// Every file of wit/ and sdk/src/ is carried into new projects: a file added there
    /// must be added to WIT_FILES or SDK_FILES too, or generated projects would not build.
    #[test]
    fn the_embedded_contract_and_sdk_are_complete() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let mut on_disk = Vec::new();
        collect(&root.join("wit"), &root.join("wit"), &mut on_disk);
        let mut embedded: Vec<String> = WIT_FILES.iter().map(|(p, _)| p.to_string()).collect();
        on_disk.sort();
        embedded.sort();
        assert_eq!(embedded, on_disk, "wit/ and new::WIT_FILES differ");
        let mut on_disk = Vec::new();
        collect(&root.join("sdk/src"), &root.join("sdk"), &mut on_disk);
        let mut embedded: Vec<String> = SDK_FILES.iter().map(|(p, _)| p.to_string()).collect();
        on_disk.sort();
        embedded.sort();
        assert_eq!(embedded, on_disk, "sdk/src/ and new::SDK_FILES differ");
    }

    fn collect(dir: &Path, base: &Path, out: &mut Vec<String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                collect(&path, base, out);
            } else {
                out.push(
                    path.strip_prefix(base)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned(),
                );
            }
        }
    }

    #[test]
    fn the_vendored_sdk_manifest_stands_alone() {
        let manifest: toml::Table = toml::from_str(&vendored_sdk_manifest()).unwrap();
        assert!(!vendored_sdk_manifest().contains("workspace"));
        assert_eq!(manifest["package"]["name"].as_str(), Some("dax-sdk"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("my-metrics").is_ok());
        for bad in ["", "My", "1x", "a_b", "a-", "a/b"] {
            assert!(check_name(bad).is_err(), "{bad}");
        }
    }
}
