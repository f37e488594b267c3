//! `dax plugin ...`: build, list and inspect plugins.

use crate::authoring::build::{self, BuildOptions};
use crate::authoring::{new, test};
use crate::contract::PluginRole;
use crate::plugin::{builtin, HostOptions, PluginHost, PluginSpec};
use anyhow::Context as _;
use std::path::{Path, PathBuf};

/// Subcommands of `dax plugin`.
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Build the plugin project at PATH (default: the current directory) into a component
    /// in PATH/dist/ — a Rust crate, a JavaScript project (componentize-js) or a Python
    /// project (componentize-py); with --all, every plugin of this repository.
    Build {
        /// The plugin project (Cargo.toml, package.json or pyproject.toml); default `.`.
        #[arg(conflicts_with_all = ["all", "repo"])]
        path: Option<PathBuf>,
        /// Build every plugin crate under plugins/, examples/plugins/ and tests/plugins/
        /// (and JavaScript plugins under examples/plugins/) into $CARGO_TARGET_DIR/plugins/.
        #[arg(long)]
        all: bool,
        /// Also refresh the components embedded in the dax binary (host/builtin/).
        #[arg(long, requires = "all")]
        embed: bool,
        /// Fail unless the embedded components equal a fresh build of the current sources.
        #[arg(long, conflicts_with = "embed", requires = "all")]
        check: bool,
        /// Build only these packages (of the repository, or of a Rust workspace at PATH).
        #[arg(short = 'p', long = "package")]
        packages: Vec<String>,
        /// Skip JavaScript plugins.
        #[arg(long, requires = "all")]
        no_js: bool,
        /// Repository root for --all (default: found from the current directory).
        #[arg(long, requires = "all")]
        repo: Option<PathBuf>,
        /// Where to write the component(s) of PATH (default: PATH/dist).
        #[arg(long, conflicts_with = "all")]
        out_dir: Option<PathBuf>,
    },
    /// Create a plugin project (outside any repository) that builds with `dax plugin build`
    /// and passes its own test (`dax plugin test . --input test/calls.toml`) as generated.
    New {
        /// The plugin's name (lowercase letters, digits and hyphens).
        name: String,
        #[arg(long, value_enum)]
        role: RoleArg,
        #[arg(long, value_enum)]
        lang: new::Language,
        /// Folder to create (default: ./NAME); must not exist or be empty.
        #[arg(long)]
        dir: Option<PathBuf>,
    },
    /// Run a plugin's role calls from a scripted input file in the real host (sandbox,
    /// grants and limits as in a deployment) and print the answers.
    ///
    /// Calls: describe, validate-config (any role); run-query (metric-provider); scan
    /// (scanner); describe-plan, start, next (strategy); traffic-support, deploy,
    /// set-traffic, scale, status, promote, rollback, finalize (target). Exit code 1 when an
    /// answer does not match the file's `expect`.
    Test {
        /// A component (.wasm), `builtin:NAME`, or a plugin project (built first).
        plugin: String,
        /// The scripted calls (TOML, or JSON for *.json); see `test/calls.toml` of a project
        /// made by `dax plugin new`.
        #[arg(long)]
        input: PathBuf,
        /// Fail unless the plugin has this role.
        #[arg(long, value_enum)]
        role: Option<RoleArg>,
    },
    /// List the builtin plugins of this binary.
    List,
    /// Load a plugin (builtin:NAME, a .wasm path or a URL) and show what it is.
    Inspect {
        source: String,
        /// Expected sha256, checked like `sha256 = ...` in TOML.
        #[arg(long)]
        sha256: Option<String>,
        /// Allow a plain http:// URL, like `allow_insecure_http = true` in TOML.
        #[arg(long)]
        allow_insecure_http: bool,
        /// Public keys to check the plugin's signatures against (`dax plugin keygen`).
        #[arg(long = "key")]
        keys: Vec<PathBuf>,
    },
    /// push, pull, keygen, sign, verify.
    #[command(flatten)]
    Distribution(super::plugin_oci::DistributionCommand),
}

/// A plugin role on the command line.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum RoleArg {
    Target,
    Scanner,
    MetricProvider,
    Strategy,
}

impl From<RoleArg> for PluginRole {
    fn from(role: RoleArg) -> Self {
        match role {
            RoleArg::Target => PluginRole::Target,
            RoleArg::Scanner => PluginRole::Scanner,
            RoleArg::MetricProvider => PluginRole::MetricProvider,
            RoleArg::Strategy => PluginRole::Strategy,
        }
    }
}

/// Run a `dax plugin` subcommand; returns the process exit code.
pub async fn run(cmd: PluginCommand, json: bool) -> anyhow::Result<i32> {
    match cmd {
        PluginCommand::Build {
            path,
            all: false,
            packages,
            out_dir,
            ..
        } => {
            let dir = path.unwrap_or_else(|| PathBuf::from("."));
            if build::find_repo_root(&dir)
                .is_some_and(|root| root.canonicalize().ok() == dir.canonicalize().ok())
            {
                anyhow::bail!(
                    "`{}` is the dax repository, not a plugin project: use `dax plugin build --all` to build every plugin in it",
                    dir.display()
                );
            }
            let built = tokio::task::spawn_blocking(move || {
                build::build_project(&dir, &packages, out_dir.as_deref(), &mut |line| {
                    eprintln!("dax plugin build: {line}")
                })
            })
            .await??;
            print_built(&built, json)?;
            Ok(0)
        }
        PluginCommand::Build {
            embed,
            check,
            packages,
            no_js,
            repo,
            ..
        } => {
            let root = match repo {
                Some(r) => r,
                None => build::find_repo_root(&std::env::current_dir()?)
                    .context("--all builds the plugins of a dax repository, and there is none here (no wit/ and plugins/ above the current directory); pass --repo, or build one project with `dax plugin build PATH`")?,
            };
            let mut options = BuildOptions::for_repo(root.clone());
            options.embed = embed;
            options.only = packages;
            options.javascript = !no_js && !check;
            let built = tokio::task::spawn_blocking(move || {
                build::build_all(&options, &mut |line| eprintln!("dax plugin build: {line}"))
            })
            .await??;
            if check {
                let report = build::check_embedded(&root, &built)?;
                let ok = report.sources_current
                    && report.differing.is_empty()
                    && report.missing.is_empty();
                if json {
                    println!(
                        "{}",
                        serde_json::to_string_pretty(
                            &serde_json::json!({"ok": ok, "report": report})
                        )?
                    );
                } else if ok && report.bytes_compared && report.rebuilt_differently.is_empty() {
                    println!(
                        "embedded plugins are byte-for-byte a fresh build of the current sources"
                    );
                } else if ok {
                    println!(
                        "embedded plugins were built from the current sources (SOURCES matches); \
                         a fresh build differs in bytes for: {:?}",
                        report.rebuilt_differently
                    );
                } else {
                    println!("embedded plugins are stale: {report:?}\nrun `cargo run -p dax -- plugin build --all --embed` and commit host/builtin/");
                }
                return Ok(if ok { 0 } else { 1 });
            }
            print_built(&built, json)?;
            Ok(0)
        }
        PluginCommand::New {
            name,
            role,
            lang,
            dir,
        } => {
            let project = new::NewProject {
                dir: dir.unwrap_or_else(|| PathBuf::from(&name)),
                name,
                role: role.into(),
                language: lang,
            };
            let files = new::create(&project)?;
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "dir": project.dir, "files": files,
                    }))?
                );
            } else {
                let dir = project.dir.display();
                println!(
                    "created {dir} ({} files): a {} plugin in {:?}",
                    files.len(),
                    project.role,
                    lang
                );
                println!("next:\n  dax plugin build {dir}\n  dax plugin test {dir} --input {dir}/test/calls.toml");
            }
            Ok(0)
        }
        PluginCommand::Test {
            plugin,
            input,
            role,
        } => {
            let input = test::TestInput::read(&input)?;
            let source = if Path::new(&plugin).is_dir() {
                let plugin = PathBuf::from(plugin);
                let built = tokio::task::spawn_blocking(move || {
                    build::build_project(&plugin, &[], None, &mut |line| {
                        eprintln!("dax plugin build: {line}")
                    })
                })
                .await??;
                match built.as_slice() {
                    [one] => one.path.display().to_string(),
                    many => anyhow::bail!(
                        "that project builds {} plugins; pass one component (.wasm) instead: {}",
                        many.len(),
                        many.iter()
                            .map(|p| p.path.display().to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }
            } else {
                plugin
            };
            let report = test::run(&source, &input, role.map(Into::into)).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                println!(
                    "{} ({} plugin, sha256 {})",
                    report.plugin, report.role, report.sha256
                );
                for c in &report.calls {
                    let mark = match c.passed {
                        Some(true) => "ok  ",
                        Some(false) => "FAIL",
                        None => "    ",
                    };
                    let answer = match (&c.ok, &c.error) {
                        (Some(v), _) => v.to_string(),
                        (None, Some(e)) => format!("error: {e}"),
                        (None, None) => String::new(),
                    };
                    println!("{mark} {:<16} {answer}", c.call);
                    if let Some(why) = &c.mismatch {
                        println!("     {why}");
                    }
                }
                println!("{} passed, {} failed", report.passed, report.failed);
            }
            Ok(if report.failed == 0 { 0 } else { 1 })
        }
        PluginCommand::List => {
            let host = PluginHost::new(HostOptions::default())?;
            let mut rows = Vec::new();
            for name in builtin::names() {
                let spec = spec_for(&format!("builtin:{name}"), None);
                match host.load_for_inspection(name, &spec, std::path::Path::new(".")).await {
                    Ok(p) => rows.push(serde_json::json!({
                        "name": name, "kind": "wasm", "role": p.role(), "version": p.info().version,
                        "sha256": p.digest(), "description": p.info().description,
                    })),
                    Err(e) => rows.push(serde_json::json!({"name": name, "kind": "wasm", "error": format!("{e:#}")})),
                }
            }
            for (name, plugin) in crate::engine::builtins::native_builtins() {
                let info = plugin.info();
                rows.push(serde_json::json!({
                    "name": name, "kind": "native", "role": info.role, "version": info.version,
                    "description": info.description,
                }));
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                println!(
                    "{:<18} {:<7} {:<16} {:<8} DESCRIPTION",
                    "NAME", "KIND", "ROLE", "VERSION"
                );
                for r in &rows {
                    println!(
                        "{:<18} {:<7} {:<16} {:<8} {}",
                        r["name"].as_str().unwrap_or(""),
                        r["kind"].as_str().unwrap_or(""),
                        r["role"].as_str().unwrap_or("?"),
                        r["version"].as_str().unwrap_or("-"),
                        r["description"]
                            .as_str()
                            .or(r["error"].as_str())
                            .unwrap_or("")
                    );
                }
            }
            Ok(0)
        }
        PluginCommand::Distribution(cmd) => super::plugin_oci::run(cmd, json).await,
        PluginCommand::Inspect {
            source,
            sha256,
            allow_insecure_http,
            keys,
        } => {
            let host = PluginHost::new(HostOptions::default())?;
            let mut spec = spec_for(&source, sha256);
            spec.allow_insecure_http = allow_insecure_http;
            let plugin = host
                .load_for_inspection("inspected", &spec, &std::env::current_dir()?)
                .await?;
            let info = plugin.info();
            let signature = if matches!(
                crate::plugin::source::SourceKind::of(&source),
                crate::plugin::source::SourceKind::Builtin(_)
            ) {
                "builtin (ships inside this binary)".to_string()
            } else {
                super::plugin_oci::verdict_for(
                    &source,
                    Some(plugin.digest().to_string()),
                    allow_insecure_http,
                    &keys,
                )
                .await
                .map(|v| v.describe())
                .unwrap_or_else(|e| format!("not checked: {e:#}"))
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&serde_json::json!({
                        "source": source, "sha256": plugin.digest(), "info": info,
                        "contract": format!("dax:plugin@{}", crate::plugin::CONTRACT_VERSION),
                        "capabilities": plugin.capabilities(),
                        "signature": signature,
                    }))?
                );
            } else {
                println!("source       {source}");
                println!("sha256       {}", plugin.digest());
                println!("name         {}", info.name);
                println!("version      {}", info.version);
                println!("role         {}", info.role);
                println!(
                    "contract     dax:plugin@{} (the plugin's world is compatible with it)",
                    crate::plugin::CONTRACT_VERSION
                );
                println!("description  {}", info.description);
                println!("signature    {signature}");
                println!("config       {}", info.config_schema);
                println!(
                    "capabilities {}",
                    if plugin.capabilities().is_empty() {
                        "none".to_string()
                    } else {
                        plugin.capabilities().join(", ")
                    }
                );
            }
            Ok(0)
        }
    }
}

/// One line per component: name, size and where it is.
fn print_built(built: &[build::BuiltPlugin], json: bool) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string_pretty(built)?);
    } else {
        for p in built {
            println!(
                "{:<24} {:>8} KiB  {}",
                p.name,
                p.bytes / 1024,
                p.path.display()
            );
        }
    }
    Ok(())
}

fn spec_for(source: &str, sha256: Option<String>) -> PluginSpec {
    PluginSpec {
        source: source.to_string(),
        sha256,
        allow_insecure_http: false,
        config: toml::Value::Table(Default::default()),
        grants: Default::default(),
        limits: Default::default(),
    }
}
