//! `dax resume` with other code than the rollout started with: an upgraded `dax` (whose
//! `builtin:` plugins changed with it), or a plugin file replaced in between.
//!
//! The journal holds the strategy's state blob, which only the strategy that wrote it is
//! promised to read (the 0.1 release of `ab-test` wrote its match rules in a JSON shape
//! the next one no longer reads), and a target or provider may have changed what its calls
//! mean. Two checks, before anything is journaled or any target is touched:
//!
//! - a plugin whose sha256 differs from the one journaled at the start refuses the resume;
//! - the strategy that would run now must read the journaled state: its last recorded call
//!   is replayed (strategies are deterministic in state and observation) and an error
//!   refuses the resume. This also covers journals that recorded no digests.
//!
//! A refusal names the journal file, the plugin, and the two ways on. One of them always
//! works: with `dax abort ID` pending (or a rollback already under way) neither check
//! applies, because the engine then rolls back through the target without asking the
//! strategy, so an upgrade never strands a deployment.

use super::ledger::Ledger;
use super::resolve::ResolvedSet;
use crate::config::LoadedConfig;
use crate::contract::{Observation, Outcome, Strategy};
use crate::state::{ControlAction, DecidedBy, Event, PluginRecord, Record, StateDir};
use anyhow::anyhow;
use std::collections::BTreeMap;
use std::sync::Arc;

/// Whether the operator asked to roll back: then the code may differ (see the module docs).
pub(super) fn rollback_asked(state: &StateDir, id: &str, records: &[Record]) -> bool {
    let ledger = Ledger::fold(records);
    ledger.rollback_started
        || state
            .read_control(id)
            .iter()
            .skip(ledger.controls_seen)
            .any(|c| c.action == ControlAction::Abort)
}

/// Plugins whose sha256 now differs from the one journaled at the start, described.
pub(super) fn changed_plugins(
    records: &[Record],
    cfg: &LoadedConfig,
    now: &BTreeMap<String, PluginRecord>,
) -> Vec<String> {
    let Some(Event::PluginsResolved { plugins }) = records
        .iter()
        .map(|r| &r.event)
        .find(|e| matches!(e, Event::PluginsResolved { .. }))
    else {
        return Vec::new();
    };
    plugins
        .iter()
        .filter_map(|(name, was)| {
            let is = now.get(name)?;
            (!was.digest.is_empty() && was.digest != is.digest).then(|| {
                format!(
                    "plugin `{name}` ({}) has sha256 {} now, {} when the deployment started",
                    cfg.config
                        .plugins
                        .get(name)
                        .map(|p| p.source.as_str())
                        .unwrap_or("?"),
                    is.digest,
                    was.digest
                )
            })
        })
        .collect()
}

/// Replay the journal's last strategy call with the strategy that would run now; the error
/// it gives, if any. Calls whose answer merely differs are not errors: a strategy's notes
/// may mention times, which a replay cannot reproduce to the millisecond.
pub(super) async fn strategy_cannot_read_state(
    records: &[Record],
    set: &ResolvedSet,
    cfg: &LoadedConfig,
) -> Option<String> {
    let mut decisions = BTreeMap::new();
    let mut outcomes = BTreeMap::new();
    for r in records {
        match &r.event {
            Event::Decision { n, state, by, .. } => {
                decisions.insert(*n, (state.as_str(), *by, r.elapsed_ms));
            }
            Event::Outcome { n, outcome, .. } => {
                outcomes.insert(*n, outcome);
            }
            _ => {}
        }
    }
    // The last decision the strategy made from a journaled state and observation.
    let (state, last, elapsed_ms) = decisions.iter().rev().find_map(|(n, (_, by, at))| {
        let before = n.checked_sub(1)?;
        let (state, _, _) = decisions.get(&before)?;
        let outcome: &Outcome = outcomes.get(&before)?;
        (*by == DecidedBy::Strategy).then_some((*state, outcome.clone(), *at))
    })?;
    let state = hex::decode(state).ok()?;
    let plugin = set.plugins.get(&cfg.config.strategy.plugin)?;
    let strategy: Arc<dyn Strategy> = match plugin.strategy(cfg.config.strategy_params()).await {
        Ok(s) => s,
        Err(e) => return Some(format!("{e:#}")),
    };
    let observation = Observation { elapsed_ms, last };
    strategy
        .next(&state, &observation)
        .await
        .err()
        .map(|e| e.to_string())
}

/// The refusal of a resume with other code: what changed, the journal, and the two ways on.
pub(super) fn refusal(state: &StateDir, id: &str, what: &str) -> anyhow::Error {
    anyhow!(
        "cannot resume deployment `{id}` ({}): {what}. A rollout continues only with the plugin code that started it. \
         Either finish it with that code (the same plugin files; for `builtin:` plugins, the dax release that started it: `dax resume {id}` there), \
         or roll it back with this dax: `dax abort {id} && dax resume {id}` (the engine rolls back through the target without asking the strategy)",
        state.deployment_dir(id).join("journal.jsonl").display()
    )
}
