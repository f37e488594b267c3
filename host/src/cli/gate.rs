//! `dax gate`: run scanners and the gate policy on their own, so a pipeline can gate a
//! release before deploying it.
//!
//! ```text
//! dax gate deploy.toml                      # the file's [gate] policy and scanners
//! dax gate --trivy-report out/app.json --severity HIGH --ignore-unfixed \
//!          --ignorefile .trivyignore --sarif gate.sarif
//! ```
//!
//! Exit code: 0 the release may go on, 1 the gate blocked it, 2 the gate could not run.

use crate::contract::{Artifact, ScanReport};
use crate::gate::{self, GatePolicy, GateVerdict, OnScannerError};
use crate::plugin::{DirGrant, Grants, HostOptions, PluginHost, PluginSpec};
use anyhow::{bail, Context};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Arguments of `dax gate`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct GateArgs {
    /// Deployment file whose `[gate]` policy and scanners to run.
    #[arg(
        value_name = "FILE",
        required_unless_present = "trivy_report",
        conflicts_with = "trivy_report"
    )]
    pub file: Option<PathBuf>,
    /// Gate a Trivy JSON report file instead of a deployment (uses the embedded `trivy` plugin
    /// with a read-only grant of the report's folder).
    #[arg(long, value_name = "PATH")]
    pub trivy_report: Option<PathBuf>,
    /// Block on findings at or above this severity (UNKNOWN, LOW, MEDIUM, HIGH, CRITICAL).
    /// Overrides the file's `gate.severity`; default HIGH.
    #[arg(long, value_name = "SEVERITY")]
    pub severity: Option<String>,
    /// Ignore vulnerabilities that have no fix.
    #[arg(long)]
    pub ignore_unfixed: bool,
    /// A `.trivyignore` file (`ID [exp:YYYY-MM-DD] [# reason]` per line); added to the policy's ignores.
    #[arg(long, value_name = "PATH")]
    pub ignorefile: Option<PathBuf>,
    /// Also write the verdict as SARIF 2.1.0 to this file.
    #[arg(long, value_name = "PATH")]
    pub sarif: Option<PathBuf>,
    /// With --trivy-report: the artifact being released (image reference); the report must be for it.
    #[arg(long, value_name = "NAME")]
    pub artifact: Option<String>,
    /// With --trivy-report: the artifact's digest (`sha256:...`), checked against the report's RepoDigests.
    #[arg(long, value_name = "DIGEST")]
    pub digest: Option<String>,
    /// Let a failed scanner only warn instead of blocking.
    #[arg(long)]
    pub warn_on_scanner_error: bool,
    /// Use this trivy plugin (`builtin:trivy`, a `.wasm` path, or a URL) with --trivy-report.
    #[arg(
        long,
        value_name = "SOURCE",
        default_value = "builtin:trivy",
        hide = true
    )]
    pub trivy_plugin: String,
    /// Evaluate ignore expiry as of this date (YYYY-MM-DD) instead of today.
    #[arg(long, value_name = "DATE", hide = true)]
    pub today: Option<String>,
}

/// How long one scanner may take before it counts as failed.
const SCAN_TIMEOUT: Duration = Duration::from_secs(600);

/// Run `dax gate`; returns the process exit code.
pub async fn run(args: &GateArgs, json: bool) -> anyhow::Result<i32> {
    let verdict = match evaluate_args(args).await {
        Ok(v) => v,
        Err(e) => {
            if json {
                println!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            }
            eprintln!("error: {e:#}");
            return Ok(2);
        }
    };
    if let Some(path) = &args.sarif {
        let text = serde_json::to_string_pretty(&gate::to_sarif(&verdict))?;
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("error: cannot write SARIF to {}: {e}", path.display());
            return Ok(2);
        }
    }
    if json {
        println!("{}", serde_json::to_string_pretty(&verdict)?);
    } else {
        print!("{}", gate::render_console(&verdict));
    }
    Ok(if verdict.passed { 0 } else { 1 })
}

/// Everything `dax gate` does except printing: build the policy, run the scanners, evaluate.
pub async fn evaluate_args(args: &GateArgs) -> anyhow::Result<GateVerdict> {
    let today = match &args.today {
        Some(d) => chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .with_context(|| format!("--today `{d}`: write a date such as 2026-01-31"))?,
        None => chrono::Local::now().date_naive(),
    };
    let (mut policy, runs) = match (&args.file, &args.trivy_report) {
        (Some(file), None) => from_deployment(file).await?,
        (None, Some(report)) => from_report(args, report)?,
        _ => bail!("give either a deployment FILE or --trivy-report PATH"),
    };
    apply_flags(&mut policy, args)?;
    let host = PluginHost::new(HostOptions::default()).context("starting the plugin host")?;
    let mut reports = Vec::new();
    for run in runs {
        let result = scan_one(&host, &run).await;
        reports.push((run.name.clone(), result));
    }
    Ok(gate::evaluate(&policy, &reports, today))
}

/// One scanner to run: its `[plugins.NAME]` entry and the artifact it scans.
struct ScanRun {
    name: String,
    spec: PluginSpec,
    config: serde_json::Value,
    base_dir: PathBuf,
    artifact: Artifact,
}

/// Load and run one scanner. Load failures and scan errors become the scanner's error in
/// the verdict, so the policy (`on_scanner_error`) decides what they mean.
async fn scan_one(host: &PluginHost, run: &ScanRun) -> Result<ScanReport, String> {
    let loaded = host
        .load(&run.name, &run.spec, &run.base_dir)
        .await
        .map_err(|e| format!("cannot load scanner `{}`: {e:#}", run.name))?;
    let scanner = loaded
        .scanner(run.config.clone())
        .await
        .map_err(|e| format!("cannot start scanner `{}`: {e:#}", run.name))?;
    match tokio::time::timeout(SCAN_TIMEOUT, scanner.scan(&run.artifact)).await {
        Ok(Ok(report)) => Ok(report),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!(
            "scanner `{}` timed out after {}s",
            run.name,
            SCAN_TIMEOUT.as_secs()
        )),
    }
}

async fn from_deployment(file: &Path) -> anyhow::Result<(GatePolicy, Vec<ScanRun>)> {
    let loaded = crate::config::load_file(file).map_err(|problems| {
        anyhow::anyhow!(
            "{} problem(s) in the deployment file:\n{}",
            problems.len(),
            problems
                .iter()
                .map(|p| format!("  {p}"))
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let cfg = &loaded.config;
    let Some(gate_table) = &cfg.gate else {
        bail!(
            "{} has no [gate] table: add one, e.g.\n  [gate]\n  scanners = [\"trivy\"]\n  severity = \"HIGH\"",
            file.display()
        );
    };
    let policy: GatePolicy = serde_json::from_value(gate_table.clone())
        .map_err(|e| anyhow::anyhow!("{}: invalid [gate] table: {e}", file.display()))?;
    if let Some((field, msg)) = policy.problems().into_iter().next() {
        bail!("{}: `{field}`: {msg}", file.display());
    }
    if policy.scanners.is_empty() {
        bail!(
            "{}: `gate.scanners` is empty: list the scanner plugins to run, e.g. [\"trivy\"]",
            file.display()
        );
    }
    let artifact = Artifact {
        name: cfg.deployment.artifact.clone(),
        digest: String::new(),
        manifests: Vec::new(),
    };
    let mut runs = Vec::new();
    for name in &policy.scanners {
        let spec = cfg.plugins.get(name).with_context(|| {
            format!(
                "{}: `gate.scanners` names `{name}` but there is no [plugins.{name}] table",
                file.display()
            )
        })?;
        runs.push(ScanRun {
            name: name.clone(),
            spec: spec.clone(),
            config: cfg.plugin_config(name),
            base_dir: loaded.base_dir.clone(),
            artifact: artifact.clone(),
        });
    }
    Ok((policy, runs))
}

fn from_report(args: &GateArgs, report: &Path) -> anyhow::Result<(GatePolicy, Vec<ScanRun>)> {
    let meta = std::fs::metadata(report)
        .with_context(|| format!("cannot read Trivy report {}", report.display()))?;
    if !meta.is_file() {
        bail!(
            "{} is not a file: give the path of a Trivy JSON report",
            report.display()
        );
    }
    let abs =
        std::fs::canonicalize(report).with_context(|| format!("resolving {}", report.display()))?;
    let dir = abs
        .parent()
        .context("the report has no parent folder")?
        .to_path_buf();
    let file_name = abs
        .file_name()
        .context("the report path has no file name")?
        .to_string_lossy()
        .into_owned();
    let spec = PluginSpec {
        source: if args.trivy_plugin.is_empty() {
            "builtin:trivy".into()
        } else {
            args.trivy_plugin.clone()
        },
        sha256: None,
        allow_insecure_http: false,
        config: toml::Value::Table(Default::default()),
        grants: Grants {
            dirs: vec![DirGrant {
                host: dir.clone(),
                guest: Some("/reports".into()),
                writable: false,
                quota_mib: None,
            }],
            ..Default::default()
        },
        limits: Default::default(),
    };
    let config = serde_json::json!({
        "report": format!("/reports/{file_name}"),
        // Without --artifact there is nothing to compare the report with.
        "check_artifact": args.artifact.is_some() || args.digest.is_some(),
    });
    let policy = GatePolicy {
        scanners: vec!["trivy".into()],
        ..Default::default()
    };
    let run = ScanRun {
        name: "trivy".into(),
        spec,
        config,
        base_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        artifact: Artifact {
            name: args.artifact.clone().unwrap_or_default(),
            digest: args.digest.clone().unwrap_or_default(),
            manifests: Vec::new(),
        },
    };
    Ok((policy, vec![run]))
}

/// Command-line options on top of the policy (flags win).
fn apply_flags(policy: &mut GatePolicy, args: &GateArgs) -> anyhow::Result<()> {
    if let Some(s) = &args.severity {
        policy.severity =
            gate::parse_severity(s).map_err(|e| anyhow::anyhow!("--severity: {e}"))?;
    }
    if args.ignore_unfixed {
        policy.ignore_unfixed = true;
    }
    if args.warn_on_scanner_error {
        policy.on_scanner_error = OnScannerError::Warn;
    }
    if let Some(path) = &args.ignorefile {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read the ignore file {}", path.display()))?;
        let rules = gate::trivyignore::parse(&text, &path.display().to_string())
            .map_err(anyhow::Error::msg)?;
        policy.ignore.extend(rules);
    }
    Ok(())
}
