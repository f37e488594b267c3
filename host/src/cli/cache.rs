//! `dax cache ...`: what the compile cache holds, and pruning it (see
//! `plugin/cache/maintenance.rs`).

use crate::plugin::cache::maintenance::{self, Pruned, Removed, Survey};
use crate::plugin::{HostOptions, PluginHost};
use std::time::{Duration, SystemTime};

/// Subcommands of `dax cache`.
#[derive(Debug, clap::Subcommand)]
pub enum CacheCommand {
    /// Show where the compile cache is and what each engine's directory in it holds.
    Show,
    /// Remove what this dax will not read again: the compiled plugins of other dax versions
    /// (or engine settings), and its own entries and stamps not used for --unused-days.
    Prune {
        /// Keep what was used (loaded or compiled) within this many days.
        #[arg(long, default_value_t = 30)]
        unused_days: u32,
        /// Only say what would be removed.
        #[arg(long)]
        dry_run: bool,
    },
}

pub fn run(cmd: CacheCommand, json: bool) -> anyhow::Result<i32> {
    let options = HostOptions::default();
    // The engine this dax runs plugins with names the one directory it reads.
    let host = PluginHost::new(options.clone())?;
    let current = host.compile_cache().engine_tag().to_string();
    let root = &options.cache_dir;
    match cmd {
        CacheCommand::Show => {
            let survey = maintenance::survey(root, &current)
                .map_err(|e| anyhow::anyhow!("cannot read the cache {}: {e}", root.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&survey)?);
            } else {
                print_survey(&survey, host.compile_cache().disabled_reason());
            }
        }
        CacheCommand::Prune {
            unused_days,
            dry_run,
        } => {
            let unused_for = Duration::from_secs(u64::from(unused_days) * 86_400);
            let pruned = maintenance::prune(root, &current, unused_for, SystemTime::now(), dry_run)
                .map_err(|e| anyhow::anyhow!("cannot prune the cache {}: {e}", root.display()))?;
            if json {
                println!("{}", serde_json::to_string_pretty(&pruned)?);
            } else {
                print_pruned(&pruned, unused_days);
            }
        }
    }
    Ok(0)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1u64 << 20) as f64)
}

fn print_survey(survey: &Survey, disabled: Option<&str>) {
    println!("compile cache: {}", survey.root.display());
    if let Some(why) = disabled {
        println!("  off for this dax: {why}");
    }
    if survey.engines.is_empty() {
        println!("  empty: nothing compiled yet");
        return;
    }
    println!(
        "{:<42} {:<12} {:>8} {:>12} {:>12}",
        "ENGINE", "READ BY", "ENTRIES", "SIZE", "OTHER FILES"
    );
    for e in &survey.engines {
        println!(
            "{:<42} {:<12} {:>8} {:>12} {:>12}",
            e.engine,
            if e.current { "this dax" } else { "another dax" },
            e.entries,
            mib(e.entry_bytes),
            e.other_cache_files
        );
    }
    let stale: u64 = survey
        .engines
        .iter()
        .filter(|e| !e.current)
        .map(|e| e.entry_bytes)
        .sum();
    if stale > 0 {
        println!(
            "{} of compiled plugins belong to other dax versions or engine settings: `dax cache prune` removes them",
            mib(stale)
        );
    }
    for f in survey.engines.iter().flat_map(|e| &e.foreign_files) {
        println!("not written by dax (left alone): {}", f.display());
    }
}

fn describe(r: &Removed) -> String {
    format!(
        "{} entries ({}), {} stamps, {} leftover temporary files",
        r.entries,
        mib(r.entry_bytes),
        r.stamps,
        r.temporary_files
    )
}

fn print_pruned(p: &Pruned, unused_days: u32) {
    let verb = if p.dry_run { "would remove" } else { "removed" };
    println!("compile cache: {}", p.root.display());
    println!(
        "{verb} from other dax versions or engine settings: {}",
        describe(&p.other_engines)
    );
    println!(
        "{verb} as unused for {unused_days} days: {}",
        describe(&p.unused)
    );
    println!(
        "kept: {} entries ({})",
        p.kept_entries,
        mib(p.kept_entry_bytes)
    );
    for f in &p.foreign_files {
        println!("not written by dax (left alone): {}", f.display());
    }
}
