//! What a journal says, at a glance: the current state of a deployment (`dax status`), and
//! the final summary with a timeline of weights and metric values.

use crate::contract::{CheckResult, CheckVerdict, FinalStatus, Outcome, Slot, Step};
use crate::plugin::spec::duration_str;
use crate::state::{DecidedBy, Event, Record};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt::Write;
use std::time::Duration;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub id: String,
    pub app: String,
    pub version: String,
    pub namespace: String,
    /// `running`, `paused`, `interrupted` (its host is gone: `dax resume`), `promoted`,
    /// `rolled-back` or `failed`.
    pub status: String,
    pub reason: String,
    pub started: Option<DateTime<Utc>>,
    pub updated: Option<DateTime<Utc>>,
    pub elapsed_ms: u64,
    /// The step being executed (or the last one).
    pub step: String,
    pub note: String,
    pub weight: u8,
    /// The checks of the last analysis.
    pub checks: Vec<CheckResult>,
    pub gate: Option<String>,
    pub decisions: u64,
    pub resumes: u32,
    pub timeline: Vec<TimelineEntry>,
    /// The process that last ran the deployment (to tell `running` from `interrupted`).
    #[serde(skip)]
    host_pid: u32,
}

/// One executed step.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TimelineEntry {
    pub n: u64,
    pub elapsed_ms: u64,
    pub weight: u8,
    pub step: String,
    pub by: String,
    pub note: String,
    /// Short outcome, empty while it runs.
    pub result: String,
    pub checks: Vec<CheckResult>,
}

impl Summary {
    /// Fold a journal into a summary.
    pub fn from_records(id: &str, records: &[Record]) -> Summary {
        let mut s = Summary::fold(id, records);
        if matches!(s.status.as_str(), "running" | "paused")
            && s.host_pid != 0
            && !process_alive(s.host_pid)
        {
            s.status = "interrupted".into();
            s.reason = format!(
                "its host process ({}) is gone: run `dax resume {id}`",
                s.host_pid
            );
        }
        s
    }

    /// Fold a journal into a summary, as its host process saw it.
    pub fn fold(id: &str, records: &[Record]) -> Summary {
        let mut s = Summary::new(id);
        for r in records {
            s.apply(r);
        }
        s
    }

    /// An empty summary, before the first record.
    pub fn new(id: &str) -> Summary {
        Summary {
            id: id.to_string(),
            status: "running".into(),
            ..Default::default()
        }
    }

    /// Fold one more record in (the engine keeps its run's summary current this way rather
    /// than re-reading the journal at the end).
    pub fn apply(&mut self, r: &Record) {
        let s = self;
        s.updated = Some(r.ts);
        s.elapsed_ms = r.elapsed_ms;
        match &r.event {
            Event::Created {
                app,
                version,
                namespace,
                pid: p,
                ..
            } => {
                s.app = app.clone();
                s.version = version.clone();
                s.namespace = namespace.clone();
                s.started = Some(r.ts);
                s.host_pid = *p;
            }
            Event::Resumed { pid: p, .. } => {
                s.host_pid = *p;
                s.resumes += 1;
                if s.status == "paused" {
                    s.status = "running".into();
                }
            }
            Event::Gate {
                passed, summary, ..
            } => {
                s.gate = Some(format!(
                    "{}: {summary}",
                    if *passed { "passed" } else { "blocked" }
                ));
            }
            Event::Decision {
                n, step, note, by, ..
            } => {
                s.decisions = s.decisions.max(*n);
                s.step = describe_step(step);
                s.note = note.clone();
                s.status = "running".into();
                s.timeline.push(TimelineEntry {
                    n: *n,
                    elapsed_ms: r.elapsed_ms,
                    weight: s.weight,
                    step: s.step.clone(),
                    by: match by {
                        DecidedBy::Strategy => "",
                        DecidedBy::Engine => "engine",
                        DecidedBy::Operator => "operator",
                    }
                    .into(),
                    note: note.clone(),
                    ..Default::default()
                });
            }
            Event::Outcome { n, outcome, detail } => {
                if let Some(e) = s.timeline.iter_mut().rev().find(|e| e.n == *n) {
                    e.result = describe_outcome(outcome, detail);
                    if let Outcome::Analysis(a) = outcome {
                        e.checks = a.checks.clone();
                        s.checks = a.checks.clone();
                    }
                    if outcome == &Outcome::Done {
                        if let Some(w) = weight_of(&e.step) {
                            s.weight = w;
                            e.weight = w;
                        }
                    }
                }
            }
            Event::Paused { reason, .. } => {
                s.status = "paused".into();
                s.note = reason.clone();
            }
            Event::Control { .. } => {
                if s.status == "paused" {
                    s.status = "running".into();
                }
            }
            Event::Finished { status, reason } => {
                s.status = status_name(*status).into();
                s.reason = reason.clone();
            }
            Event::PluginsResolved { .. } => {}
        }
    }

    /// The process that last ran the deployment, if it is another one and still alive: a
    /// second host must not take over its processes and traffic.
    pub fn live_host(&self) -> Option<u32> {
        (self.host_pid != 0 && self.host_pid != std::process::id() && process_alive(self.host_pid))
            .then_some(self.host_pid)
    }

    pub fn is_finished(&self) -> bool {
        matches!(self.status.as_str(), "promoted" | "rolled-back" | "failed")
    }

    /// One line for progress displays: step, weight, each check's last value vs threshold.
    pub fn progress_line(&self) -> String {
        let mut line = format!("{} · weight {}%", self.step, self.weight);
        for c in &self.checks {
            let _ = write!(line, " · {} {} {}", c.name, value_of(c), mark(c.verdict));
        }
        line
    }

    /// The final report: outcome, then the timeline.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "{} {} → {} after {}{}",
            self.app,
            self.version,
            self.status.to_uppercase(),
            fmt_ms(self.elapsed_ms),
            if self.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", self.reason)
            }
        );
        let _ = writeln!(out, "deployment {}", self.id);
        if let Some(g) = &self.gate {
            let _ = writeln!(out, "gate: {g}");
        }
        if self.resumes > 0 {
            let _ = writeln!(
                out,
                "resumed {} time(s) after the host stopped",
                self.resumes
            );
        }
        out.push_str(&self.render_timeline());
        out
    }

    /// Time, traffic weight (as a bar), step, result and metric values, one row per step.
    pub fn render_timeline(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\n {:>7}  {:>4} {:<10}  {:<30} result",
            "time", "wt", "", "step"
        );
        for e in &self.timeline {
            let filled = (e.weight as usize).div_ceil(10).min(10);
            let bar: String = "█".repeat(filled) + &"░".repeat(10 - filled);
            let who = if e.by.is_empty() {
                String::new()
            } else {
                format!("[{}] ", e.by)
            };
            let mut step: String = format!("{who}{}", e.step);
            if step.chars().count() > 30 {
                step = step.chars().take(29).collect::<String>() + "…";
            }
            let result = if e.checks.is_empty() {
                e.result.clone()
            } else {
                e.checks
                    .iter()
                    .map(|c| format!("{} {} {}", c.name, value_of(c), mark(c.verdict)))
                    .collect::<Vec<_>>()
                    .join("  ")
            };
            let _ = writeln!(
                out,
                " {:>7}  {:>3}% {bar}  {step:<30} {result}",
                fmt_ms(e.elapsed_ms),
                e.weight
            );
        }
        out
    }
}

fn value_of(c: &CheckResult) -> String {
    match c.value {
        Some(v) => super::analysis::fmt_num(v),
        None => match c.verdict {
            CheckVerdict::NoData => "no-data".into(),
            CheckVerdict::Error => "error".into(),
            CheckVerdict::Fail => "failed".into(),
            CheckVerdict::Pass => "ok".into(),
        },
    }
}

fn mark(v: CheckVerdict) -> &'static str {
    match v {
        CheckVerdict::Pass => "✓",
        CheckVerdict::Fail => "✗",
        CheckVerdict::NoData => "∅",
        CheckVerdict::Error => "!",
    }
}

pub fn status_name(s: FinalStatus) -> &'static str {
    match s {
        FinalStatus::Promoted => "promoted",
        FinalStatus::RolledBack => "rolled-back",
        FinalStatus::Failed => "failed",
    }
}

fn weight_of(step: &str) -> Option<u8> {
    step.strip_prefix("set weight ")?
        .split('%')
        .next()?
        .parse()
        .ok()
}

/// `1m05s`-style elapsed time.
pub fn fmt_ms(ms: u64) -> String {
    let s = ms / 1000;
    if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if ms >= 10_000 || ms.is_multiple_of(1000) {
        format!("{s}s")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

fn slot_name(s: Slot) -> &'static str {
    match s {
        Slot::Stable => "stable",
        Slot::Candidate => "candidate",
    }
}

pub fn describe_step(step: &Step) -> String {
    match step {
        Step::DeployCandidate => "deploy candidate".into(),
        Step::SetTraffic(t) => {
            let mut s = format!("set weight {}%", t.candidate_weight);
            if !t.matches.is_empty() {
                let _ = write!(s, " + {} match rule(s)", t.matches.len());
            }
            if t.mirror_percent > 0 {
                let _ = write!(s, " mirror {}%", t.mirror_percent);
            }
            s
        }
        Step::Scale(slot, n) => format!("scale {} to {n}", slot_name(*slot)),
        Step::CheckStatus(slot) => format!("check {} status", slot_name(*slot)),
        Step::Analyze(a) => format!(
            "analyze {}{}",
            duration_str::format(Duration::from_millis(a.window_ms)),
            if a.compare_baseline {
                " vs baseline"
            } else {
                ""
            }
        ),
        Step::RunHooks(p) => format!("{} hooks", p.as_str()),
        Step::Wait(ms) => format!("wait {}", duration_str::format(Duration::from_millis(*ms))),
        Step::AwaitApproval(what) => format!("await approval: {what}"),
        Step::Promote => "promote".into(),
        Step::Rollback(reason) => format!("rollback: {reason}"),
        Step::Finish(s) => format!("finish {}", status_name(*s)),
    }
}

pub fn describe_outcome(o: &Outcome, detail: &str) -> String {
    let base = match o {
        Outcome::Started | Outcome::Done => "done".to_string(),
        Outcome::TargetStatus(s) => format!("ready {}/{}", s.ready, s.desired),
        Outcome::Analysis(a) => {
            let failed = a
                .checks
                .iter()
                .filter(|c| c.verdict != CheckVerdict::Pass)
                .count();
            if failed == 0 {
                format!("pass ({} checks)", a.checks.len())
            } else {
                format!("{failed} of {} checks not passing", a.checks.len())
            }
        }
        Outcome::Hooks(true) => "hooks ok".into(),
        Outcome::Hooks(false) => "hooks failed".into(),
        Outcome::Approval(true) => "approved".into(),
        Outcome::Approval(false) => "aborted".into(),
        Outcome::Failed(e) => format!("failed: {e}"),
    };
    if detail.is_empty() || matches!(o, Outcome::Analysis(_)) {
        base
    } else {
        format!("{base} ({detail})")
    }
}

/// `(type, message)` of a journal event, for `event` webhooks.
pub fn describe_event(e: &Event) -> (&'static str, String) {
    match e {
        Event::Created { app, version, .. } => {
            ("created", format!("deployment of {app} {version} created"))
        }
        Event::PluginsResolved { plugins } => (
            "plugins-resolved",
            format!("{} plugins resolved", plugins.len()),
        ),
        Event::Gate {
            passed, summary, ..
        } => (
            "gate",
            format!(
                "gate {}: {summary}",
                if *passed { "passed" } else { "blocked" }
            ),
        ),
        Event::Decision { step, note, .. } => {
            ("decision", format!("{} ({note})", describe_step(step)))
        }
        Event::Outcome {
            outcome, detail, ..
        } => ("outcome", describe_outcome(outcome, detail)),
        Event::Paused { reason, .. } => ("paused", reason.clone()),
        Event::Control { action, .. } => ("control", format!("operator: {action:?}")),
        Event::Resumed { .. } => ("resumed", "deployment resumed after a host restart".into()),
        Event::Finished { status, reason } => {
            ("finished", format!("{}: {reason}", status_name(*status)))
        }
    }
}

fn process_alive(pid: u32) -> bool {
    pid == std::process::id() || std::path::Path::new(&format!("/proc/{pid}")).exists()
}
