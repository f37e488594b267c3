//! `dax plugin build`: compile plugin projects into Wasm components: one project wherever
//! it lives (`dax plugin build [PATH]`: Rust, JavaScript or Python), or every plugin of
//! this repository (`dax plugin build --all`, with `--embed`/`--check` for the builtins).
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
            let path = options.out_dir.join(format!("{package}.wasm"));
            let mut plugin =
                build_rust_package(dir, &target_dir, &toolchain, package, lib_name, &path)?;
            plugin.workspace = workspace.to_string();
            built.push(plugin);
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
    let metadata = cargo_metadata(workspace, toolchain)?;
    Ok(cdylibs_of(&metadata)
        .into_iter()
        .map(|p| (p.name, p.lib_name))
        .collect())
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

/// Build one cdylib package of the cargo workspace at `workspace` and write its component
/// to `out`.
fn build_rust_package(
    workspace: &Path,
    target_dir: &Path,
    toolchain: &Toolchain,
    package: &str,
    lib_name: &str,
    out: &Path,
) -> anyhow::Result<BuiltPlugin> {
    // One package per invocation: cargo would otherwise unify the SDK's role features.
    cargo_build(workspace, target_dir, toolchain, package)?;
    let triple = match toolchain {
        Toolchain::RustupWasip2 => "wasm32-wasip2",
        Toolchain::DebianWasip1 => "wasm32-wasip1",
    };
    let artifact = target_dir
        .join(triple)
        .join("release")
        .join(format!("{lib_name}.wasm"));
    let bytes =
        std::fs::read(&artifact).with_context(|| format!("reading {}", artifact.display()))?;
    let component =
        componentize(&bytes).with_context(|| format!("turning {package} into a component"))?;
    write_component(package, workspace, out, component)
}

/// Write a component to `out` (creating its folder) and describe it.
fn write_component(
    name: &str,
    project: &Path,
    out: &Path,
    component: Vec<u8>,
) -> anyhow::Result<BuiltPlugin> {
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    std::fs::write(out, &component).with_context(|| format!("writing {}", out.display()))?;
    Ok(BuiltPlugin {
        name: name.to_string(),
        workspace: project.display().to_string(),
        sha256: hex::encode(Sha256::digest(&component)),
        bytes: component.len(),
        path: out.to_path_buf(),
    })
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
        if !npm_present() {
            log(&format!("skipping {name}: npm is not installed (install Node.js to build JavaScript plugins)"));
            continue;
        }
        let out = options.out_dir.join(format!("{name}.wasm"));
        let mut plugin = build_javascript_project(&dir, &name, &out, log)?;
        plugin.workspace = "examples/plugins".into();
        built.push(plugin);
    }
    Ok(built)
}

fn npm_present() -> bool {
    Command::new("npm").arg("--version").output().is_ok()
}

/// Build one JavaScript plugin project: `npm install` once, then `npm run build` with
/// `DAX_PLUGIN_OUT` naming the component to write (the project's build script runs
/// componentize-js).
fn build_javascript_project(
    dir: &Path,
    name: &str,
    out: &Path,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<BuiltPlugin> {
    log(&format!(
        "building JavaScript plugin {name} (componentize-js)"
    ));
    if let Some(parent) = out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let npm = |args: &[&str]| -> anyhow::Result<()> {
        let status = Command::new("npm")
            .args(args)
            .current_dir(dir)
            .env("DAX_PLUGIN_OUT", out)
            // Build chatter goes to stderr: stdout is the command's answer (`--output json`).
            .stdout(std::io::stderr())
            .status()
            .with_context(|| format!("running npm in {} (is Node.js installed?)", dir.display()))?;
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
    let component = std::fs::read(out)
        .with_context(|| format!("{name}'s `npm run build` did not write {}", out.display()))?;
    write_component(name, dir, out, component)
}

/// sha256 over every input of the first-party plugins: the WIT, the SDK and `plugins/`.
pub fn source_hash(repo_root: &Path) -> anyhow::Result<String> {
    let mut files = Vec::new();
    for dir in ["wit", "sdk", "plugins"] {
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
        "# Written by `dax plugin build --all --embed`. `dax plugin build --all --check` fails when these no longer\n\
         # match the sources. sources-sha256 covers wit/, sdk/ and plugins/.\nsources-sha256 {}\ntoolchain {}\n",
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
            "{}/{SOURCES_FILE} is missing; run `dax plugin build --all --embed`",
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

// ---------------------------------------------------------------------------------------
// One plugin project, wherever it lives: `dax plugin build [PATH]`.
// ---------------------------------------------------------------------------------------

/// The language of a plugin project, told by the file at its root.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProjectKind {
    /// `Cargo.toml`: a cdylib crate (or a workspace of them) using `dax-sdk`.
    Rust,
    /// `package.json` whose `build` script runs componentize-js.
    JavaScript,
    /// `pyproject.toml` with a `[tool.dax]` table, built with componentize-py.
    Python,
}

/// The pinned componentize-py that `dax plugin build` installs into the build cache.
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// Where developer tools and build outputs are cached: `$DAX_BUILD_CACHE`, else
/// `~/.cache/dax-build` (the platform's cache directory).
pub fn build_cache_dir() -> PathBuf {
    std::env::var_os("DAX_BUILD_CACHE")
        .map(PathBuf::from)
        .or_else(|| dirs::cache_dir().map(|d| d.join("dax-build")))
        .unwrap_or_else(|| std::env::temp_dir().join("dax-build"))
}

/// Tell which kind of plugin project `dir` is, or say why it is none.
pub fn detect_project(dir: &Path) -> anyhow::Result<ProjectKind> {
    if !dir.is_dir() {
        bail!("`{}` is not a directory: pass the folder of a plugin project (`dax plugin new` makes one)", dir.display());
    }
    if dir.join("Cargo.toml").is_file() {
        return Ok(ProjectKind::Rust);
    }
    if dir.join("package.json").is_file() {
        return Ok(ProjectKind::JavaScript);
    }
    if dir.join("pyproject.toml").is_file() {
        return Ok(ProjectKind::Python);
    }
    bail!(
        "`{}` is not a plugin project: it has no Cargo.toml (Rust), package.json (JavaScript) or \
         pyproject.toml (Python); create one with `dax plugin new NAME --role ROLE --lang rust|js|python`",
        dir.display()
    )
}

/// Build the plugin project at `dir` (any language) into `out_dir` (default `dir/dist`).
/// `only` narrows a Rust workspace to some packages; an unknown name is an error.
pub fn build_project(
    dir: &Path,
    only: &[String],
    out_dir: Option<&Path>,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<BuiltPlugin>> {
    let kind = detect_project(dir)?;
    let dir = dir
        .canonicalize()
        .with_context(|| format!("resolving {}", dir.display()))?;
    let out_dir = out_dir
        .map(Path::to_path_buf)
        .unwrap_or_else(|| dir.join("dist"));
    if kind != ProjectKind::Rust && !only.is_empty() {
        bail!(
            "-p {} selects packages of a Rust workspace, but `{}` is a {kind:?} project (one plugin); drop -p",
            only.join(" -p "),
            dir.display()
        );
    }
    match kind {
        ProjectKind::Rust => build_rust_project(&dir, only, &out_dir, log),
        ProjectKind::JavaScript => {
            let name = package_json_name(&dir)?;
            if !npm_present() {
                bail!("`{}` is a JavaScript plugin and npm is not installed: install Node.js (20 or newer) and npm", dir.display());
            }
            let out = out_dir.join(format!("{name}.wasm"));
            Ok(vec![build_javascript_project(&dir, &name, &out, log)?])
        }
        ProjectKind::Python => Ok(vec![build_python_project(&dir, &out_dir, log)?]),
    }
}

fn build_rust_project(
    dir: &Path,
    only: &[String],
    out_dir: &Path,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<Vec<BuiltPlugin>> {
    let toolchain = choose_toolchain(log)?;
    log(&format!("toolchain: {}", toolchain_name(&toolchain)));
    let metadata = cargo_metadata(dir, &toolchain)?;
    // The crate at `dir` itself, or every member when `dir` is a workspace without a package.
    let own_manifest = dir.join("Cargo.toml");
    let all = cdylibs_of(&metadata);
    let here: Vec<_> = all
        .iter()
        .filter(|p| Path::new(&p.manifest_path) == own_manifest)
        .cloned()
        .collect();
    let is_package = metadata["packages"]
        .as_array()
        .into_iter()
        .flatten()
        .any(|p| p["manifest_path"].as_str().map(Path::new) == Some(own_manifest.as_path()));
    let candidates = if is_package { here } else { all };
    if candidates.is_empty() {
        bail!(
            "`{}` is a Rust project without a plugin crate: a plugin needs `[lib] crate-type = [\"cdylib\"]` \
             and a `dax-sdk` dependency (`dax plugin new NAME --lang rust` shows one)",
            dir.display()
        );
    }
    for name in only {
        if !candidates.iter().any(|p| &p.name == name) {
            bail!(
                "no plugin package named `{name}` in {}; the plugins there are: {}",
                dir.display(),
                candidates
                    .iter()
                    .map(|p| p.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
    }
    let target_dir = PathBuf::from(
        metadata["target_directory"]
            .as_str()
            .context("cargo metadata gave no target_directory")?,
    )
    .join("wasm");
    let mut built = Vec::new();
    for package in candidates
        .iter()
        .filter(|p| only.is_empty() || only.contains(&p.name))
    {
        log(&format!("building Rust plugin {}", package.name));
        let out = out_dir.join(format!("{}.wasm", package.name));
        built.push(build_rust_package(
            dir,
            &target_dir,
            &toolchain,
            &package.name,
            &package.lib_name,
            &out,
        )?);
    }
    Ok(built)
}

#[derive(Debug, Clone)]
struct CdylibPackage {
    name: String,
    lib_name: String,
    manifest_path: String,
}

fn cargo_metadata(dir: &Path, toolchain: &Toolchain) -> anyhow::Result<serde_json::Value> {
    let output = cargo_command(toolchain)
        .current_dir(dir)
        .args(["metadata", "--no-deps", "--format-version", "1"])
        .output()
        .with_context(|| format!("running cargo metadata in {}", dir.display()))?;
    if !output.status.success() {
        bail!(
            "cargo metadata failed in {}: {}",
            dir.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(serde_json::from_slice(&output.stdout)?)
}

fn cdylibs_of(metadata: &serde_json::Value) -> Vec<CdylibPackage> {
    let mut out = Vec::new();
    for package in metadata["packages"].as_array().into_iter().flatten() {
        for target in package["targets"].as_array().into_iter().flatten() {
            let is_cdylib = target["crate_types"]
                .as_array()
                .is_some_and(|kinds| kinds.iter().any(|k| k == "cdylib"));
            if is_cdylib {
                out.push(CdylibPackage {
                    name: package["name"].as_str().unwrap_or_default().to_string(),
                    lib_name: target["name"]
                        .as_str()
                        .unwrap_or_default()
                        .replace('-', "_"),
                    manifest_path: package["manifest_path"]
                        .as_str()
                        .unwrap_or_default()
                        .to_string(),
                });
            }
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    out
}

fn package_json_name(dir: &Path) -> anyhow::Result<String> {
    let file = dir.join("package.json");
    let json: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&file)?)
        .with_context(|| format!("{} is not valid JSON", file.display()))?;
    let name = json["name"]
        .as_str()
        .with_context(|| format!("{} has no \"name\"", file.display()))?;
    if json["scripts"]["build"].as_str().is_none() {
        bail!(
            "{} has no \"build\" script: a JavaScript plugin's `npm run build` must write the component \
             to $DAX_PLUGIN_OUT (`dax plugin new NAME --lang js` shows one)",
            file.display()
        );
    }
    Ok(name.rsplit('/').next().unwrap_or(name).to_string())
}

/// `[tool.dax]` of a Python plugin's pyproject.toml.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct PythonPluginSettings {
    /// The world it implements, e.g. `scanner-plugin` (in package `dax:plugin`).
    world: String,
    /// The module implementing it (default `app`).
    #[serde(default = "default_python_module")]
    module: String,
    /// The WIT folder, relative to the project (default `wit`).
    #[serde(default = "default_wit_dir")]
    wit: String,
}

fn default_python_module() -> String {
    "app".into()
}
fn default_wit_dir() -> String {
    "wit".into()
}

fn build_python_project(
    dir: &Path,
    out_dir: &Path,
    log: &mut dyn FnMut(&str),
) -> anyhow::Result<BuiltPlugin> {
    let file = dir.join("pyproject.toml");
    let pyproject: toml::Table = toml::from_str(&std::fs::read_to_string(&file)?)
        .with_context(|| format!("{} is not valid TOML", file.display()))?;
    let name = pyproject
        .get("project")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .with_context(|| format!("{} has no [project] name", file.display()))?
        .to_string();
    let settings: PythonPluginSettings = pyproject
        .get("tool")
        .and_then(|t| t.get("dax"))
        .with_context(|| {
            format!(
                "{} has no [tool.dax] table: a Python plugin names its world there, e.g. \
                 `[tool.dax] world = \"scanner-plugin\"` (`dax plugin new NAME --lang python` shows one)",
                file.display()
            )
        })?
        .clone()
        .try_into()
        .with_context(|| format!("{} [tool.dax]", file.display()))?;
    let componentize_py = componentize_py(log)?;
    log(&format!(
        "building Python plugin {name} (componentize-py {COMPONENTIZE_PY_VERSION})"
    ));
    std::fs::create_dir_all(out_dir)?;
    let out = out_dir.join(format!("{name}.wasm"));
    let world = if settings.world.contains('/') {
        settings.world.clone()
    } else {
        format!("dax:plugin/{}", settings.world)
    };
    let status = Command::new(&componentize_py)
        .current_dir(dir)
        .args(["--quiet", "-d", &settings.wit, "-w", &world, "componentize"])
        // No WASI at all: the plugin imports only the dax:host interfaces (deny by default).
        .arg("--stub-wasi")
        .args([&settings.module, "-p", ".", "-o"])
        .arg(&out)
        .env_remove("VIRTUAL_ENV")
        .stdout(std::io::stderr())
        .status()
        .with_context(|| format!("running {}", componentize_py.display()))?;
    if !status.success() {
        bail!(
            "componentize-py failed for {} (see its output above)",
            dir.display()
        );
    }
    let component = std::fs::read(&out)?;
    write_component(&name, dir, &out, component)
}

/// componentize-py: `$DAX_COMPONENTIZE_PY`, else the pinned one in the build cache,
/// installed there with pip on first use (from PyPI, in its own venv).
pub fn componentize_py(log: &mut dyn FnMut(&str)) -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("DAX_COMPONENTIZE_PY") {
        return Ok(PathBuf::from(path));
    }
    let venv = build_cache_dir().join("componentize-py");
    let bin = venv.join("bin").join("componentize-py");
    let installed = Command::new(&bin)
        .arg("--version")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(COMPONENTIZE_PY_VERSION));
    if installed {
        return Ok(bin);
    }
    log(&format!(
        "installing componentize-py {COMPONENTIZE_PY_VERSION} into {} (once)",
        venv.display()
    ));
    let run = |cmd: &mut Command, what: &str| -> anyhow::Result<()> {
        let status = cmd
            .stdout(std::process::Stdio::null())
            .status()
            .with_context(|| format!("{what} (is python3 installed?)"))?;
        if !status.success() {
            bail!("{what} failed; install it by hand with `python3 -m venv {0} && {0}/bin/pip install componentize-py=={COMPONENTIZE_PY_VERSION}` or set DAX_COMPONENTIZE_PY", venv.display());
        }
        Ok(())
    };
    run(
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
        "creating a Python venv for componentize-py",
    )?;
    run(
        Command::new(venv.join("bin").join("pip")).args([
            "install",
            "--quiet",
            &format!("componentize-py=={COMPONENTIZE_PY_VERSION}"),
        ]),
        "installing componentize-py",
    )?;
    Ok(bin)
}
