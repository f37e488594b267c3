//! # strategy-kit
//!
//! What the first-party strategies (`canary`, `blue-green`, `ab-test`, `rolling`) share:
//! - [`params`]: Go-style durations, counts-or-percents, score thresholds, state blob codec;
//! - [`analysis`]: how one analysis outcome is read (no-data never passes);
//! - [`machine`]: a deterministic interpreter of rollout programs (the step protocol of
//!   `wit/strategy.wit`), with Flagger's failed-check counting and a safe rollback sequence;
//! - [`sim`]: a native simulator with scripted outcomes and replay checks for tests;
//! - [`wit`]: conversions to the WIT bindings and the [`strategy_plugin!`] export macro.
//!
//! Strategies never sleep, read clocks or do I/O: all time comes from `wait` steps and the
//! observation's `elapsed-ms`.

pub mod analysis;
pub mod machine;
pub mod params;
pub mod sim;
pub mod types;
pub mod wit;

pub use dax_sdk;
