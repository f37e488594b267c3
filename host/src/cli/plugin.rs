//! `dax plugin ...`: build, list and inspect plugins.

use crate::plugin::build::{self, BuildOptions};
use crate::plugin::{builtin, HostOptions, PluginHost, PluginSpec};
use anyhow::Context as _;
use std::path::PathBuf;

/// Subcommands of `dax plugin`.
#[derive(Debug, clap::Subcommand)]
pub enum PluginCommand {
    /// Build every plugin crate under plugins/, examples/plugins/ and tests/plugins/ (and
    /// JavaScript plugins under examples/plugins/) into components in target/plugins/.
    Build {
        /// Also refresh the components embedded in the dax binary (host/builtin/).
        #[arg(long)]
        embed: bool,
        /// Fail unless the embedded components equal a fresh build of the current sources.
        #[arg(long, conflicts_with = "embed")]
        check: bool,
        /// Build only these packages.
        #[arg(short = 'p', long = "package")]
        packages: Vec<String>,
        /// Skip JavaScript plugins.
        #[arg(long)]
        no_js: bool,
        /// Repository root (default: found from the current directory).
        #[arg(long)]
        repo: Option<PathBuf>,
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

/// Run a `dax plugin` subcommand; returns the process exit code.
pub async fn run(cmd: PluginCommand, json: bool) -> anyhow::Result<i32> {
    match cmd {
        PluginCommand::Build {
            embed,
            check,
            packages,
            no_js,
            repo,
        } => {
            let root = match repo {
                Some(r) => r,
                None => build::find_repo_root(&std::env::current_dir()?)
                    .context("not inside a dax repository (no wit/ and plugins/ above the current directory); pass --repo")?,
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
                    println!("embedded plugins are stale: {report:?}\nrun `cargo run -p dax -- plugin build --embed` and commit host/builtin/");
                }
                return Ok(if ok { 0 } else { 1 });
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&built)?);
            } else {
                for p in &built {
                    println!(
                        "{:<24} {:>8} KiB  {}",
                        p.name,
                        p.bytes / 1024,
                        p.path.display()
                    );
                }
            }
            Ok(0)
        }
        PluginCommand::List => {
            let host = PluginHost::new(HostOptions::default())?;
            let mut rows = Vec::new();
            for name in builtin::names() {
                let spec = spec_for(&format!("builtin:{name}"), None);
                match host.load(name, &spec, std::path::Path::new(".")).await {
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
