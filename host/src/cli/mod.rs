//! The `dax` command line.
//!
//! Exit codes (every command):
//!
//! | code | meaning |
//! |-----:|---------|
//! | 0 | promoted (deploy/resume), valid (validate), done (other commands) |
//! | 1 | rolled back |
//! | 2 | failed: the deployment failed, was blocked by the gate, or an error stopped the command |
//! | 3 | invalid deployment file (every problem is printed) |
//! | 4 | no such deployment |
//! | 64 | bad command line |
//! | 130 | interrupted by Ctrl-C or SIGTERM: the deployment is left resumable (see below) |
//! | 141 | stdout was closed before `dax` finished writing (`dax history \| head -1`): output stops quietly, as for a program stopped by SIGPIPE; the command's work (a deployment) still ran to its end |
//!
//! `--output json` prints one JSON document on stdout instead of text (secrets redacted).
//!
//! **Ctrl-C and SIGTERM** stop `dax` at once and leave the deployment *resumable*, the same
//! state a crash or SIGKILL leaves: the journal is kept, the local target's processes keep
//! running (each in its own process group, so the terminal's Ctrl-C does not reach them),
//! and `dax resume ID` adopts them and continues; `dax abort ID` then `dax resume ID` rolls
//! back instead. We chose this over rolling back on Ctrl-C because one path (resume) then
//! covers every way a host can stop, a rollback may itself take long or need the operator,
//! and rolling back stays one explicit command away.

pub mod cache;
pub mod gate;
pub mod output;
pub mod plugin;
pub mod plugin_oci;

use output::{errln, outln};

use crate::config::{self, secrets, Problem};
use crate::contract::FinalStatus;
use crate::engine::{DeployError, Engine, HostResolver, Observer, Report, Summary};
use crate::state::{default_state_dir, ControlAction, Record, StateDir};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub const EXIT_PROMOTED: i32 = 0;
pub const EXIT_ROLLED_BACK: i32 = 1;
pub const EXIT_FAILED: i32 = 2;
pub const EXIT_INVALID: i32 = 3;
pub const EXIT_NOT_FOUND: i32 = 4;
pub const EXIT_USAGE: i32 = 64;
pub const EXIT_INTERRUPTED: i32 = 130;
pub const EXIT_STDOUT_CLOSED: i32 = 141;

#[derive(Debug, Parser)]
#[command(
    name = "dax",
    version,
    about = "Deployment Architect: progressive delivery with sandboxed Wasm plugins"
)]
pub struct Cli {
    /// Output format.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    /// Where journals live (default: $DAX_STATE_DIR or ~/.local/state/dax).
    #[arg(long, global = true, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// When a journal record counts as written: `disk` (fsync'd; survives a machine crash)
    /// or `page-cache` (survives `dax` being killed, not the machine crashing; for
    /// thousands of concurrent deployments on a disk that cannot flush that often).
    #[arg(long, global = true, value_enum, default_value_t = JournalSync::Disk, env = "DAX_JOURNAL_SYNC")]
    pub journal_sync: JournalSync,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JournalSync {
    Disk,
    PageCache,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run a deployment described by FILE to promotion or rollback.
    Deploy {
        file: PathBuf,
        /// Deployment ID (default: APP-DATE-TIME-XXXX).
        #[arg(long)]
        id: Option<String>,
        /// No live progress display.
        #[arg(long)]
        no_progress: bool,
    },
    /// Check FILE completely (syntax, keys, types, plugins, digests, roles, plugin configs).
    Validate { file: PathBuf },
    /// Show the steps the strategy will take, and how long at best and until rollback at worst.
    Plan { file: PathBuf },
    /// Show live progress of one deployment, or list the ones not finished.
    Status {
        id: Option<String>,
        /// Keep showing progress until the deployment ends.
        #[arg(long)]
        watch: bool,
    },
    /// Approve a pending approval or pause of a running deployment (or end its current wait).
    Promote { id: String },
    /// Roll a running deployment back.
    Abort { id: String },
    /// Continue a deployment whose host stopped, from its journal.
    Resume {
        id: String,
        #[arg(long)]
        no_progress: bool,
    },
    /// List past and current deployments.
    History {
        /// Show only the last N.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Build, list and inspect plugins.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Run the scanners and the gate policy on their own.
    Gate(gate::GateArgs),
    /// Show or prune the compile cache of plugins.
    #[command(subcommand)]
    Cache(cache::CacheCommand),
}

/// Parse the command line and run it; returns the process exit code.
pub async fn main() -> i32 {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let code = if e.use_stderr() { EXIT_USAGE } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    let json = cli.output == Output::Json;
    let code = match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            let msg = secrets::redact(&format!("{e:#}")).into_owned();
            if json {
                print_json(&serde_json::json!({ "error": msg }));
            } else {
                errln!("error: {msg}");
            }
            EXIT_FAILED
        }
    };
    if output::stdout_closed() {
        EXIT_STDOUT_CLOSED
    } else {
        code
    }
}

fn engine(cli_state: &Option<PathBuf>, sync: JournalSync) -> Engine {
    let dir = cli_state.clone().unwrap_or_else(default_state_dir);
    let resolver = HostResolver::new(crate::plugin::HostOptions::default());
    let mut state = StateDir::new(dir);
    state.durability = match sync {
        JournalSync::Disk => crate::state::Durability::Fsync,
        JournalSync::PageCache => crate::state::Durability::Buffered,
    };
    Engine::new(state, Arc::new(resolver))
}

pub async fn run(cli: Cli) -> anyhow::Result<i32> {
    let json = cli.output == Output::Json;
    match cli.command {
        Command::Plugin(cmd) => plugin::run(cmd, json).await,
        Command::Cache(cmd) => cache::run(cmd, json),
        Command::Gate(args) => gate::run(&args, json).await,
        Command::Validate { file } => {
            let engine = engine(&cli.state_dir, cli.journal_sync);
            let problems = match config::load_file(&file) {
                Err(problems) => problems,
                Ok(cfg) => engine.validate(&cfg).await,
            };
            if json {
                print_json(
                    &serde_json::json!({ "file": file, "valid": problems.is_empty(), "problems": problems }),
                );
            } else if problems.is_empty() {
                outln!("{}: OK", file.display());
            } else {
                print_problems(&problems);
            }
            Ok(if problems.is_empty() { 0 } else { EXIT_INVALID })
        }
        Command::Plan { file } => {
            let engine = engine(&cli.state_dir, cli.journal_sync);
            let cfg = match config::load_file(&file) {
                Ok(c) => c,
                Err(p) => return Ok(invalid(&p, json)),
            };
            match engine.plan(&cfg).await {
                Ok(plan) => {
                    if json {
                        print_json(&serde_json::to_value(&plan)?);
                    } else {
                        outln!(
                            "plan for {} {} with `{}`:",
                            cfg.config.deployment.app,
                            cfg.config.deployment.version,
                            cfg.config.strategy.plugin
                        );
                        for (i, s) in plan.steps.iter().enumerate() {
                            outln!("  {:>2}. {s}", i + 1);
                        }
                        outln!(
                            "best case (every check passes): {}",
                            crate::engine::summary::fmt_ms(plan.best_case_ms)
                        );
                        outln!(
                            "worst case (checks fail from the first analysis) until rollback: {}",
                            crate::engine::summary::fmt_ms(plan.worst_case_rollback_ms)
                        );
                    }
                    Ok(0)
                }
                Err(DeployError::Invalid(p)) => Ok(invalid(&p, json)),
                Err(DeployError::Other(e)) => Err(e),
            }
        }
        Command::Deploy {
            file,
            id,
            no_progress,
        } => {
            let engine = engine(&cli.state_dir, cli.journal_sync);
            let cfg = match config::load_file(&file) {
                Ok(c) => c,
                Err(p) => return Ok(invalid(&p, json)),
            };
            let progress = Progress::new(!json && !no_progress);
            let fut = engine.deploy(cfg, id, Some(progress.observer()));
            finish(with_ctrl_c(fut).await, &progress, json)
        }
        Command::Resume { id, no_progress } => {
            let engine = engine(&cli.state_dir, cli.journal_sync);
            if engine.state.read(&id).is_err() {
                return Ok(not_found(&engine.state, &id, json));
            }
            let progress = Progress::new(!json && !no_progress);
            *progress.id.lock().unwrap_or_else(|e| e.into_inner()) = id.clone();
            progress
                .records
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .extend(engine.state.read(&id)?);
            let fut = engine.resume(&id, Some(progress.observer()));
            finish(with_ctrl_c(fut).await, &progress, json)
        }
        Command::Promote { id } => control(&cli.state_dir, &id, ControlAction::Promote, json),
        Command::Abort { id } => control(&cli.state_dir, &id, ControlAction::Abort, json),
        Command::Status { id, watch } => {
            let state = StateDir::new(cli.state_dir.clone().unwrap_or_else(default_state_dir));
            match id {
                None => {
                    let active: Vec<Summary> = summaries(&state)?
                        .into_iter()
                        .filter(|s| !s.is_finished())
                        .collect();
                    if json {
                        print_json(&serde_json::to_value(&active)?);
                    } else if active.is_empty() {
                        outln!("no deployment in progress (see `dax history`)");
                    } else {
                        for s in &active {
                            outln!(
                                "{}  {} {}  {}  {}",
                                s.id,
                                s.app,
                                s.version,
                                s.status,
                                s.progress_line()
                            );
                        }
                    }
                    Ok(0)
                }
                Some(id) => {
                    let Ok(records) = state.read(&id) else {
                        return Ok(not_found(&state, &id, json));
                    };
                    let mut s = Summary::from_records(&id, &records);
                    if watch && !json {
                        let bar = indicatif::ProgressBar::new_spinner();
                        bar.enable_steady_tick(Duration::from_millis(120));
                        while !s.is_finished() && s.status != "interrupted" {
                            bar.set_message(format!("[{}] {}", s.status, s.progress_line()));
                            tokio::time::sleep(Duration::from_millis(500)).await;
                            s = Summary::from_records(&id, &state.read(&id)?);
                        }
                        bar.finish_and_clear();
                    }
                    if json {
                        let mut v = serde_json::to_value(&s)?;
                        secrets::redact_json(&mut v);
                        print_json(&v);
                    } else {
                        outln!("{}", s.render());
                        if !s.is_finished() {
                            outln!("[{}] {}", s.status, s.progress_line());
                        }
                    }
                    Ok(0)
                }
            }
        }
        Command::History { limit } => {
            let state = StateDir::new(cli.state_dir.clone().unwrap_or_else(default_state_dir));
            let all = summaries(&state)?;
            let shown: Vec<&Summary> = all.iter().rev().take(limit).collect();
            if json {
                let rows: Vec<serde_json::Value> = shown
                    .iter()
                    .map(|s| {
                        serde_json::json!({
                            "id": s.id, "app": s.app, "version": s.version, "status": s.status,
                            "reason": s.reason, "started": s.started, "elapsed_ms": s.elapsed_ms,
                        })
                    })
                    .collect();
                print_json(&serde_json::Value::Array(rows));
            } else if shown.is_empty() {
                outln!("no deployments in {}", state.root.display());
            } else {
                outln!(
                    "{:<36} {:<12} {:<8} {:<12} {:>8}  reason",
                    "id",
                    "app",
                    "version",
                    "status",
                    "time"
                );
                for s in shown {
                    outln!(
                        "{:<36} {:<12} {:<8} {:<12} {:>8}  {}",
                        s.id,
                        s.app,
                        s.version,
                        s.status,
                        crate::engine::summary::fmt_ms(s.elapsed_ms),
                        secrets::redact(&s.reason)
                    );
                }
            }
            Ok(0)
        }
    }
}

fn summaries(state: &StateDir) -> anyhow::Result<Vec<Summary>> {
    Ok(state
        .read_all()?
        .into_iter()
        .filter_map(|(id, records)| records.ok().map(|r| Summary::from_records(&id, &r)))
        .collect())
}

fn control(
    state_dir: &Option<PathBuf>,
    id: &str,
    action: ControlAction,
    json: bool,
) -> anyhow::Result<i32> {
    let state = StateDir::new(state_dir.clone().unwrap_or_else(default_state_dir));
    let Ok(records) = state.read(id) else {
        return Ok(not_found(&state, id, json));
    };
    let s = Summary::from_records(id, &records);
    if s.is_finished() {
        let msg = format!("deployment {id} already ended: {}", s.status);
        if json {
            print_json(&serde_json::json!({ "id": id, "accepted": false, "message": msg }));
        } else {
            errln!("{msg}");
        }
        return Ok(EXIT_FAILED);
    }
    state.send_control(id, action)?;
    let verb = if action == ControlAction::Promote {
        "promote"
    } else {
        "abort"
    };
    let note = if s.status == "interrupted" {
        format!("; its host is gone, so it applies when you run `dax resume {id}`")
    } else {
        String::new()
    };
    if json {
        print_json(
            &serde_json::json!({ "id": id, "accepted": true, "action": verb, "status": s.status }),
        );
    } else {
        outln!("{verb} requested for {id} ({}){note}", s.status);
    }
    Ok(0)
}

fn not_found(state: &StateDir, id: &str, json: bool) -> i32 {
    let msg = format!(
        "no deployment `{id}` in {} (see `dax history`)",
        state.root.display()
    );
    if json {
        print_json(&serde_json::json!({ "error": msg }));
    } else {
        errln!("error: {msg}");
    }
    EXIT_NOT_FOUND
}

fn invalid(problems: &[Problem], json: bool) -> i32 {
    if json {
        print_json(&serde_json::json!({ "valid": false, "problems": problems }));
    } else {
        print_problems(problems);
    }
    EXIT_INVALID
}

fn print_problems(problems: &[Problem]) {
    for p in problems {
        errln!("{}", secrets::redact(&p.to_string()));
    }
    errln!("{} problem(s) found", problems.len());
}

fn print_json(v: &serde_json::Value) {
    let mut v = v.clone();
    secrets::redact_json(&mut v);
    outln!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
}

enum Ended {
    Done(Box<Result<Report, DeployError>>),
    /// Stopped by a signal (named); what keeps running for `dax resume`.
    Interrupted(&'static str, Vec<String>),
}

/// Run a deployment until it ends or Ctrl-C / SIGTERM arrives. On a signal the deployment is
/// left resumable: the local target's processes are detached (they keep running and `dax
/// resume` adopts them) before the engine's future is dropped, and the journal stays as is.
async fn with_ctrl_c(fut: impl std::future::Future<Output = Result<Report, DeployError>>) -> Ended {
    use tokio::signal::unix::{signal, SignalKind};
    tokio::pin!(fut);
    let mut term = signal(SignalKind::terminate()).ok();
    let sigterm = async {
        match term.as_mut() {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    };
    let signal_name = tokio::select! {
        r = &mut fut => return Ended::Done(Box::new(r)),
        _ = tokio::signal::ctrl_c() => "Ctrl-C",
        _ = sigterm => "SIGTERM",
    };
    // Still inside this function, so `fut` (and the target it owns) is not dropped yet.
    Ended::Interrupted(signal_name, crate::local::detach_all_local_targets())
}

fn finish(ended: Ended, progress: &Progress, json: bool) -> anyhow::Result<i32> {
    progress.done();
    match ended {
        Ended::Interrupted(signal, still_running) => {
            let id = progress.id();
            let started = !progress
                .id
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .is_empty();
            if json {
                print_json(&serde_json::json!({
                    "id": started.then_some(&id),
                    "status": "interrupted",
                    "signal": signal,
                    "still_running": still_running,
                }));
            } else if !started {
                errln!("interrupted by {signal} before the deployment started: nothing to resume");
            } else {
                errln!(
                    "interrupted by {signal}: deployment {id} is not finished and can be resumed"
                );
                if !still_running.is_empty() {
                    errln!(
                        "  still running, for `dax resume` to take over (the local proxy is down until then):"
                    );
                    for p in &still_running {
                        errln!("    {p}");
                    }
                }
                errln!("  continue:  dax resume {id}");
                errln!("  roll back: dax abort {id} && dax resume {id}");
            }
            Ok(EXIT_INTERRUPTED)
        }
        Ended::Done(result) => match *result {
            Err(DeployError::Invalid(p)) => Ok(invalid(&p, json)),
            Err(DeployError::Other(e)) => Err(e),
            Ok(report) => {
                if json {
                    print_json(&serde_json::json!({
                        "id": report.id,
                        "status": crate::engine::summary::status_name(report.status),
                        "reason": report.reason,
                        "summary": report.summary,
                    }));
                } else {
                    outln!("{}", secrets::redact(&report.summary.render()));
                }
                Ok(match report.status {
                    FinalStatus::Promoted => EXIT_PROMOTED,
                    FinalStatus::RolledBack => EXIT_ROLLED_BACK,
                    FinalStatus::Failed => EXIT_FAILED,
                })
            }
        },
    }
}

/// Live progress: a spinner with the current step, weight and checks, and one line per
/// decision above it.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    records: Arc<Mutex<Vec<Record>>>,
    id: Arc<Mutex<String>>,
}

impl Progress {
    fn new(show: bool) -> Self {
        let bar = show.then(|| {
            let b = indicatif::ProgressBar::new_spinner();
            b.set_style(
                indicatif::ProgressStyle::with_template("{spinner} {elapsed:>4} {wide_msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
            );
            b.enable_steady_tick(Duration::from_millis(120));
            b
        });
        Progress {
            bar,
            records: Arc::new(Mutex::new(Vec::new())),
            id: Arc::new(Mutex::new(String::new())),
        }
    }

    fn observer(&self) -> Observer {
        let bar = self.bar.clone();
        let records = self.records.clone();
        let id_cell = self.id.clone();
        Arc::new(move |r: &Record| {
            let mut all = records.lock().unwrap_or_else(|e| e.into_inner());
            all.push(r.clone());
            if let crate::state::Event::Created { id, .. } = &r.event {
                *id_cell.lock().unwrap_or_else(|e| e.into_inner()) = id.clone();
            }
            let Some(bar) = &bar else { return };
            let id = id_cell.lock().unwrap_or_else(|e| e.into_inner()).clone();
            let s = Summary::from_records(&id, &all);
            use crate::state::Event as E;
            match &r.event {
                E::Created { app, version, .. } => {
                    bar.println(format!("deployment {id}: {app} {version}"))
                }
                E::Gate {
                    passed, summary, ..
                } => bar.println(format!(
                    "gate {}: {summary}",
                    if *passed { "passed" } else { "BLOCKED" }
                )),
                E::Outcome { .. } => {
                    if let Some(e) = s.timeline.last() {
                        bar.println(secrets::redact(&format!(
                            "{:>7} {:>3}%  {:<32} {}",
                            crate::engine::summary::fmt_ms(e.elapsed_ms),
                            e.weight,
                            e.step,
                            if e.checks.is_empty() {
                                e.result.clone()
                            } else {
                                s.progress_line()
                                    .split(" · ")
                                    .skip(2)
                                    .collect::<Vec<_>>()
                                    .join("  ")
                            }
                        )));
                    }
                }
                E::Paused { reason, .. } => bar.println(format!(
                    "PAUSED: {reason}\n  continue: dax promote {id}    roll back: dax abort {id}"
                )),
                E::Resumed { .. } => bar.println(format!("resumed {id}")),
                _ => {}
            }
            bar.set_message(
                secrets::redact(&format!("[{}] {}", s.status, s.progress_line())).into_owned(),
            );
        })
    }

    fn id(&self) -> String {
        let id = self.id.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if id.is_empty() {
            "ID".into()
        } else {
            id
        }
    }

    fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}
