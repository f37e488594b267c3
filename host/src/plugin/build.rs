//! `dax plugin build`: compile every plugin crate in the repository into a Wasm component.
//!
//! Toolchain choice, in order:
//! 1. rustup with the `wasm32-wasip2` target installed: `cargo build --target wasm32-wasip2`
//!    links a component directly.
//! 2. Debian's Rust (`rustc-web`, `cargo-web`, `rust-web-src`, `lld-19`, `wasi-libc`): build
//!    std for `wasm32-wasip1` from source and link with `wasm-ld`; installed automatically
//!    when running as root. The core module is then turned into a component with
//!    `wit-component` and the WASI preview1 *reactor* adapter matching this wasmtime.
//!
//! Rust plugin crates live in three cargo workspaces: `plugins/` (first-party, embedded in
//! the binary with `--embed`), `examples/plugins/` and `tests/plugins/`. JavaScript plugins
//! (`examples/plugins/js-*` with a `package.json`) are built with their own `npm run build`.

use anyhow::{bail, Context as _};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// Debian packages of the fallback toolchain.
pub const DEBIAN_PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "rust-web-src",
    "lld-19",
    "wasi-libc",
];
const DEBIAN_WASM_LD: &str = "/usr/lib/llvm-19/bin/wasm-ld";
const DEBIAN_WASI_LIBC: &str = "/usr/lib/wasm32-wasi";
const DEBIAN_STD_SRC: &str = "/usr/lib/rustlib/src/rust/library";

/// The Rust plugin workspaces, relative to the repository root.
pub const WORKSPACES: &[&str] = &["plugins", "examples/plugins", "tests/plugins"];
/// Where embedded first-party components live (read by `host/build.rs`).
pub const EMBED_DIR: &str = "host/builtin";

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub repo_root: PathBuf,
    /// Where components are written (`target/plugins` by default).
    pub out_dir: PathBuf,
    /// Copy first-party components into `host/builtin/` and record their source hash.
    pub embed: bool,
    /// Build only these packages (all when empty).
    pub only: Vec<String>,
    /// Also build JavaScript example plugins (needs node + npm).
    pub javascript: bool,
    /// Workspaces to build, relative to the repository root (default: [`WORKSPACES`]).
    pub workspaces: Vec<String>,
}

impl BuildOptions {
    pub fn for_repo(repo_root: PathBuf) -> Self {
        let target_dir = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| repo_root.join("target"));
        BuildOptions {
            out_dir: target_dir.join("plugins"),
            repo_root,
            embed: false,
            only: Vec::new(),
            javascript: true,
            workspaces: WORKSPACES.iter().map(|w| w.to_string()).collect(),
        }
    }
}

/// One component produced by a build.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BuiltPlugin {
    pub name: String,
    pub workspace: String,
    pub path: PathBuf,
    pub sha256: String,
    pub bytes: usize,
}

/// Which compiler builds the plugins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toolchain {
    /// rustup's cargo with the wasm32-wasip2 target.
    RustupWasip2,
    /// Debian's rustc/cargo with std built from source for wasm32-wasip1.
    DebianWasip1,
}

/// Find the repository root: the nearest ancestor of `start` holding `wit/` and `plugins/`.
pub fn find_repo_root(start: &Path) -> Option<PathBuf> {
    start
        .ancestors()
        .find(|d| d.join("wit").is_dir() && d.join("plugins").is_dir())
        .map(Path::to_path_buf)
}

/// Pick a toolchain, installing Debian's when that is possible and needed.
pub fn choose_toolchain(log: &mut dyn FnMut(&str)) -> anyhow::Result<Toolchain> {
    let rustup_has_wasip2 = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .any(|l| l.trim() == "wasm32-wasip2")
        })
        .unwrap_or(false);
    if rustup_has_wasip2 {
        return Ok(Toolchain::RustupWasip2);
    }
    if debian_toolchain_present() {
        return Ok(Toolchain::DebianWasip1);
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .map(|o| o.stdout.starts_with(b"0"))
        .unwrap_or(false);
    let install = format!("apt-get install -y {}", DEBIAN_PACKAGES.join(" "));
    if is_root && Path::new("/usr/bin/apt-get").exists() {
        log(&format!(
            "no wasm toolchain found; installing Debian's: {install}"
        ));
        let status = Command::new("sh")
            .arg("-c")
            .arg(format!("(apt-get install -y -q {pk} || (apt-get update -q && apt-get install -y -q {pk})) >&2", pk = DEBIAN_PACKAGES.join(" ")))
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()?;
        if status.success() && debian_toolchain_present() {
            return Ok(Toolchain::DebianWasip1);
        }
        bail!("installing the Debian wasm toolchain failed; try `{install}` by hand");
    }
    bail!(
        "no toolchain can build wasm plugins here. Either run `rustup target add wasm32-wasip2`, \
         or on Debian/Ubuntu run `sudo {install}`"
    )
}

fn toolchain_name(toolchain: &Toolchain) -> &'static str {
    match toolchain {
        Toolchain::RustupWasip2 => "rustup-wasm32-wasip2",
        Toolchain::DebianWasip1 => "debian-wasm32-wasip1",
    }
}

fn debian_toolchain_present() -> bool {
    [
        "/usr/bin/rustc",
        "/usr/bin/cargo",
        DEBIAN_WASM_LD,
        DEBIAN_WASI_LIBC,
        DEBIAN_STD_SRC,
    ]
    .iter()
    .all(|p| Path::new(p).exists())
}

/// Build every plugin crate (and JS plugin) into a component under `options.out_dir`.
pub fn build_all(
    options: &BuildOptions,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<BuiltPlugin>> {
    check_something_to_build(options)?;
    let toolchain = choose_toolchain(log)?;
    log(&format!(
        "toolchain: {}",
        match toolchain {
            Toolchain::RustupWasip2 => "rustup wasm32-wasip2",
            Toolchain::DebianWasip1 => "Debian rustc-web, wasm32-wasip1 + reactor adapter",
        }
    ));
    std::fs::create_dir_all(&options.out_dir)?;
    let target_dir = options
        .out_dir
        .parent()
        .unwrap_or(&options.out_dir)
        .join("wasm");
    let mut workspaces = Vec::new();
    for workspace in &options.workspaces {
        let dir = options.repo_root.join(workspace);
        if dir.join("Cargo.toml").is_file() {
            let packages = cdylib_packages(&dir, &toolchain)?;
            workspaces.push(Workspace {
                name: workspace,
                dir,
                packages,
            });
        }
    }
    check_packages_exist(options, &workspaces)?;
    let mut built = Vec::new();
    for Workspace {
        name: workspace,
        dir,
        packages,
    } in &workspaces
    {
        let wanted: Vec<_> = packages
            .iter()
            .filter(|(name, _)| options.only.is_empty() || options.only.iter().any(|o| o == name))
            .collect();
        if wanted.is_empty() {
            continue;
        }
        log(&format!(
            "building {} plugin(s) in {workspace}/",
            wanted.len()
        ));
        for (package, lib_name) in wanted {
            // One package per invocation: cargo would otherwise unify the SDK's role features.
            cargo_build(dir, &target_dir, &toolchain, package)?;
            let triple = match toolchain {
                Toolchain::RustupWasip2 => "wasm32-wasip2",
                Toolchain::DebianWasip1 => "wasm32-wasip1",
            };
            let artifact = target_dir
                .join(triple)
                .join("release")
                .join(format!("{lib_name}.wasm"));
            let bytes = std::fs::read(&artifact)
                .with_context(|| format!("reading {}", artifact.display()))?;
            let component = componentize(&bytes)
                .with_context(|| format!("turning {package} into a component"))?;
            let path = options.out_dir.join(format!("{package}.wasm"));
            std::fs::write(&path, &component)?;
            built.push(BuiltPlugin {
                name: package.clone(),
                workspace: workspace.to_string(),
                sha256: hex::encode(Sha256::digest(&component)),
                bytes: component.len(),
                path,
            });
        }
    }
    if options.javascript {
        built.extend(build_javascript(options, log)?);
    }
    if built.is_empty() {
        bail!(
            "nothing was built in {}: every plugin asked for was skipped (see the messages above)",
            options.repo_root.display()
        );
    }
    if options.embed {
        embed(options, &built, log)?;
    }
    Ok(built)
}

/// A Rust plugin workspace found in the repository.
struct Workspace<'a> {
    /// Relative to the repository root, as in [`BuildOptions::workspaces`].
    name: &'a str,
    dir: PathBuf,
    /// `(package name, lib target name)` of its cdylib crates.
    packages: Vec<(String, String)>,
}

/// Refuse a repository with no plugin workspace before choosing (or installing) a
/// toolchain: `dax plugin build` that builds nothing is an error, not a success.
fn check_something_to_build(options: &BuildOptions) -> anyhow::Result<()> {
    let root = &options.repo_root;
    if !root.is_dir() {
        bail!(
            "`{}` is not a directory; pass --repo with the root of a dax repository",
            root.display()
        );
    }
    let has_workspace = options
        .workspaces
        .iter()
        .any(|w| root.join(w).join("Cargo.toml").is_file());
    if has_workspace || !javascript_plugin_dirs(root).is_empty() {
        return Ok(());
    }
    let looked_for: Vec<String> = options
        .workspaces
        .iter()
        .map(|w| format!("{w}/Cargo.toml"))
        .collect();
    let what = if root.join("wit").is_dir() && root.join("plugins").is_dir() {
        "a dax repository, but it has no plugin workspace".to_string()
    } else {
        "not a dax repository (it has no wit/ and plugins/ folders)".to_string()
    };
    bail!(
        "`{}` is {what}: looked for {} and JavaScript plugins (examples/plugins/*/package.json), found none; \
         pass --repo with the root of a dax repository",
        root.display(),
        looked_for.join(", ")
    )
}

/// Refuse `-p NAME` for a name that no workspace (nor JavaScript plugin) has, listing
/// the names that exist.
fn check_packages_exist(options: &BuildOptions, workspaces: &[Workspace]) -> anyhow::Result<()> {
    let rust: Vec<&str> = workspaces
        .iter()
        .flat_map(|w| w.packages.iter().map(|(name, _)| name.as_str()))
        .collect();
    let javascript: Vec<String> = javascript_plugin_dirs(&options.repo_root)
        .iter()
        .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    for name in &options.only {
        if rust.contains(&name.as_str()) {
            continue;
        }
        if javascript.contains(name) {
            if !options.javascript {
                bail!("`{name}` is a JavaScript plugin, and JavaScript plugins are not built here (--no-js or --check)");
            }
            continue;
        }
        let looked_in: Vec<String> = workspaces.iter().map(|w| format!("{}/", w.name)).collect();
        bail!(
            "no plugin package named `{name}` in {}; the plugins there are: {}{}",
            looked_in.join(", "),
            rust.join(", "),
            if javascript.is_empty() {
                String::new()
            } else {
                format!("; JavaScript plugins: {}", javascript.join(", "))
            }
        );
    }
    Ok(())
}

/// `examples/plugins/*` folders with a `package.json`, sorted.
fn javascript_plugin_dirs(repo_root: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(repo_root.join("examples/plugins")) else {
        return Vec::new();
    };
    let mut dirs: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.join("package.json").is_file())
        .collect();
    dirs.sort();
    dirs
}

/// `(package name, lib target name)` of every cdylib crate in a workspace.
fn cdylib_packages(
    workspace: &Path,
    toolchain: &Toolchain,
) -> anyhow::Result<Vec<(String, String)>> {
    let output = cargo_command(toolchain)
        .current_dir(workspace)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .with_context(|| format!("running cargo metadata in {}", workspace.display()))?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed in {}: {}",
            workspace.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let metadata: serde_json::Value = serde_json::from_slice(&output.stdout)?;
    let mut out = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        for target in package["targets"].as_array().into_iter().flatten() {
            let kinds = target["crate_types"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if kinds.iter().any(|k| k == "cdylib") {
                let name = package["name"].as_str().unwrap_or_default().to_string();
                out.push((
                    name,
                    target["name"]
                        .as_str()
                        .unwrap_or_default()
                        .replace('-', "_"),
                ));
            }
        }
    }
    out.sort();
    Ok(out)
}

fn cargo_command(toolchain: &Toolchain) -> Command {
    let mut cmd = match toolchain {
        Toolchain::RustupWasip2 => Command::new("cargo"),
        Toolchain::DebianWasip1 => Command::new("/usr/bin/cargo"),
    };
    // Variables set by an outer `cargo run` would point the inner build at the wrong compiler.
    for var in [
        "RUSTC",
        "RUSTC_WRAPPER",
        "RUSTFLAGS",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_BUILD_TARGET",
        "RUSTUP_TOOLCHAIN",
        "CARGO",
    ] {
        cmd.env_remove(var);
    }
    if *toolchain == Toolchain::DebianWasip1 {
        cmd.env("RUSTC", "/usr/bin/rustc");
    }
    cmd
}

fn cargo_build(
    workspace: &Path,
    target_dir: &Path,
    toolchain: &Toolchain,
    package: &str,
) -> anyhow::Result<()> {
    let mut cmd = cargo_command(toolchain);
    cmd.current_dir(workspace)
        .args(["build", "--release", "--quiet", "-p", package])
        .env("CARGO_TARGET_DIR", target_dir);
    // Same bytes from the same sources wherever the repository is checked out, so CI can
    // compare a rebuild with the embedded components: cargo's trim-paths rewrites source
    // paths without putting them in RUSTFLAGS (which would change every crate's hash).
    cmd.env("RUSTC_BOOTSTRAP", "1")
        .arg("-Ztrim-paths")
        .env("CARGO_PROFILE_RELEASE_TRIM_PATHS", "all");
    match toolchain {
        Toolchain::RustupWasip2 => {
            cmd.args(["--target", "wasm32-wasip2"]);
        }
        Toolchain::DebianWasip1 => {
            cmd.args(["--target", "wasm32-wasip1", "-Zbuild-std=std,panic_abort"])
                .env("CARGO_TARGET_WASM32_WASIP1_LINKER", DEBIAN_WASM_LD)
                .env(
                    "RUSTFLAGS",
                    format!("-C link-self-contained=no -L {DEBIAN_WASI_LIBC}"),
                );
        }
    }
    let status = cmd
        .status()
        .with_context(|| format!("running cargo build in {}", workspace.display()))?;
    if !status.success() {
        bail!(
            "building plugin `{package}` in {} failed (see the compiler output above)",
            workspace.display()
        );
    }
    Ok(())
}

/// Turn a core module into a component; components (wasip2 builds) pass through.
pub fn componentize(bytes: &[u8]) -> anyhow::Result<Vec<u8>> {
    if bytes.len() >= 8 && bytes[4..8] != [1, 0, 0, 0] {
        return Ok(bytes.to_vec());
    }
    let stripped = strip_name_section(bytes)?;
    let component = wit_component::ComponentEncoder::default()
        .module(&stripped)?
        .adapter(
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_ADAPTER_NAME,
            wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER,
        )?
        .validate(true)
        .encode()?;
    Ok(component)
}

/// Drop the `name` custom section of a core module. It holds symbol names whose hashes
/// depend on where the repository is checked out; without it a build is byte-for-byte
/// reproducible, so CI can compare a rebuild with the embedded components.
fn strip_name_section(module: &[u8]) -> anyhow::Result<Vec<u8>> {
    fn leb(bytes: &[u8], mut i: usize) -> anyhow::Result<(usize, usize)> {
        let (mut value, mut shift) = (0usize, 0);
        loop {
            let byte = *bytes.get(i).context("truncated wasm module")?;
            i += 1;
            value |= ((byte & 0x7f) as usize) << shift;
            shift += 7;
            if byte < 0x80 {
                return Ok((value, i));
            }
        }
    }
    let mut out = module[..8].to_vec();
    let mut i = 8;
    while i < module.len() {
        let start = i;
        let id = module[i];
        let (len, body) = leb(module, i + 1)?;
        let end = body + len;
        anyhow::ensure!(end <= module.len(), "truncated wasm module");
        let is_name = id == 0 && {
            let (name_len, name_start) = leb(module, body)?;
            module.get(name_start..name_start + name_len) == Some(b"name".as_slice())
        };
        if !is_name {
            out.extend_from_slice(&module[start..end]);
        }
        i = end;
    }
    Ok(out)
}

/// Build `examples/plugins/js-*` with npm (componentize-js), if node and npm are here.
fn build_javascript(
    options: &BuildOptions,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<BuiltPlugin>> {
    let mut built = Vec::new();
    for dir in javascript_plugin_dirs(&options.repo_root) {
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        if !options.only.is_empty() && !options.only.contains(&name) {
            continue;
        }
        if Command::new("npm").arg("--version").output().is_err() {
            log(&format!("skipping {name}: npm is not installed (install Node.js to build JavaScript plugins)"));
            continue;
        }
        log(&format!(
            "building JavaScript plugin {name} (componentize-js)"
        ));
        let out = options.out_dir.join(format!("{name}.wasm"));
        let npm = |args: &[&str]| -> anyhow::Result<()> {
            let status = Command::new("npm")
                .args(args)
                .current_dir(&dir)
                .env("DAX_PLUGIN_OUT", &out)
                .status()?;
            if !status.success() {
                bail!("`npm {}` failed in {}", args.join(" "), dir.display());
            }
            Ok(())
        };
        if !dir.join("node_modules").is_dir() {
            // `npm install` follows the committed lockfile; `npm ci` refuses it when the
            // lockfile lacks other platforms' optional binaries, as npm 11 writes it here.
            npm(&["install", "--no-audit", "--no-fund"])?;
        }
        npm(&["run", "build"])?;
        let component = std::fs::read(&out)
            .with_context(|| format!("{} did not produce {}", name, out.display()))?;
        built.push(BuiltPlugin {
            name,
            workspace: "examples/plugins".into(),
            sha256: hex::encode(Sha256::digest(&component)),
            bytes: component.len(),
            path: out,
        });
    }
    Ok(built)
}

/// sha256 over every input of the first-party plugins: the WIT, the contract types, the SDK
/// and `plugins/`.
pub fn source_hash(repo_root: &Path) -> anyhow::Result<String> {
    let mut files = Vec::new();
    for dir in ["wit", "contract", "sdk", "plugins"] {
        collect_files(&repo_root.join(dir), &mut files)?;
    }
    files.sort();
    let mut hasher = Sha256::new();
    for file in files {
        let relative = file.strip_prefix(repo_root).unwrap_or(&file);
        hasher.update(relative.to_string_lossy().as_bytes());
        hasher.update([0]);
        hasher.update(std::fs::read(&file)?);
        hasher.update([0]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name == "target" || name.starts_with('.') || name == "node_modules" {
            continue;
        }
        if path.is_dir() {
            collect_files(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

const SOURCES_FILE: &str = "SOURCES";

fn embed(
    options: &BuildOptions,
    built: &[BuiltPlugin],
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<()> {
    let dir = options.repo_root.join(EMBED_DIR);
    std::fs::create_dir_all(&dir)?;
    let mut manifest = format!(
        "# Written by `dax plugin build --embed`. `dax plugin build --check` fails when these no longer\n\
         # match the sources. sources-sha256 covers wit/, contract/, sdk/ and plugins/.\nsources-sha256 {}\ntoolchain {}\n",
        source_hash(&options.repo_root)?,
        toolchain_name(&choose_toolchain(log)?)
    );
    for plugin in built.iter().filter(|p| p.workspace == "plugins") {
        // Hash what is actually copied: another build may have rewritten the output since.
        let bytes = std::fs::read(&plugin.path)?;
        std::fs::write(dir.join(format!("{}.wasm", plugin.name)), &bytes)?;
        manifest.push_str(&format!(
            "{} {}\n",
            plugin.name,
            hex::encode(Sha256::digest(&bytes))
        ));
        log(&format!(
            "embedded {} ({} KiB)",
            plugin.name,
            plugin.bytes / 1024
        ));
    }
    std::fs::write(dir.join(SOURCES_FILE), manifest)?;
    Ok(())
}

/// What `--check` found.
#[derive(Debug, Default, serde::Serialize)]
pub struct CheckReport {
    pub sources_current: bool,
    /// Whether rebuilt bytes were compared (same toolchain as the one that embedded them).
    pub bytes_compared: bool,
    /// Embedded files that do not match the digests recorded in `SOURCES`.
    pub differing: Vec<String>,
    /// Embedded components whose fresh rebuild has other bytes. Informational: symbol
    /// hashes, and with them function order, still depend on the checkout path.
    pub rebuilt_differently: Vec<String>,
    pub missing: Vec<String>,
}

/// Prove the embedded components come from the current sources: the recorded source hash
/// must match, and each embedded component must equal a fresh rebuild byte for byte.
pub fn check_embedded(repo_root: &Path, rebuilt: &[BuiltPlugin]) -> anyhow::Result<CheckReport> {
    let dir = repo_root.join(EMBED_DIR);
    let manifest = std::fs::read_to_string(dir.join(SOURCES_FILE)).with_context(|| {
        format!(
            "{}/{SOURCES_FILE} is missing; run `dax plugin build --embed`",
            EMBED_DIR
        )
    })?;
    let recorded = manifest
        .lines()
        .find_map(|l| l.strip_prefix("sources-sha256 "))
        .unwrap_or_default()
        .trim()
        .to_string();
    let mut report = CheckReport {
        sources_current: recorded == source_hash(repo_root)?,
        ..Default::default()
    };
    let recorded_toolchain = manifest
        .lines()
        .find_map(|l| l.strip_prefix("toolchain "))
        .unwrap_or_default();
    // Different compilers give different bytes; compare them only for the same toolchain.
    let compare_bytes = recorded_toolchain == toolchain_name(&choose_toolchain(&mut |_| {})?);
    report.bytes_compared = compare_bytes && !rebuilt.is_empty();
    for line in manifest.lines().filter(|l| {
        !l.starts_with('#') && !l.starts_with("sources-sha256") && !l.starts_with("toolchain ")
    }) {
        let Some((name, digest)) = line.split_once(' ') else {
            continue;
        };
        let embedded =
            std::fs::read(dir.join(format!("{name}.wasm"))).map(|b| hex::encode(Sha256::digest(b)));
        if embedded.as_deref().ok() != Some(digest) {
            report.differing.push(format!(
                "{name} (embedded file does not match {SOURCES_FILE})"
            ));
        }
        match rebuilt.iter().find(|p| p.name == name) {
            Some(p) if compare_bytes && p.sha256 != digest => {
                report.rebuilt_differently.push(name.to_string())
            }
            Some(_) => {}
            None if !rebuilt.is_empty() => report.missing.push(name.to_string()),
            None => {}
        }
    }
    for p in rebuilt.iter().filter(|p| p.workspace == "plugins") {
        if !manifest
            .lines()
            .any(|l| l.split(' ').next() == Some(p.name.as_str()))
        {
            report.missing.push(p.name.clone());
        }
    }
    Ok(report)
}
