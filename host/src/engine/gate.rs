//! The release gate of a run: every scanner of `[gate]` scans the artifact, the host's gate
//! policy (`crate::gate`) decides, and the verdict is journaled before any rollout step.

use super::run::Run;
use crate::contract::Artifact;
use crate::state::Event;
use anyhow::Context;
use std::time::Duration;

impl Run {
    /// Scanners and the gate policy. Returns whether the release may go on.
    pub(super) async fn gate(&mut self) -> anyhow::Result<bool> {
        let Some(policy) = &self.cfg.config.gate else {
            return Ok(true);
        };
        let policy: crate::gate::GatePolicy =
            serde_json::from_value(policy.clone()).context("invalid [gate] table")?;
        let artifact = Artifact {
            name: self.cfg.config.deployment.artifact.clone(),
            digest: String::new(),
            manifests: Vec::new(),
        };
        let scans = self.scanners.iter().map(|(name, s)| {
            let artifact = artifact.clone();
            async move {
                let r =
                    match tokio::time::timeout(Duration::from_secs(600), s.scan(&artifact)).await {
                        Ok(Ok(report)) => Ok(report),
                        Ok(Err(e)) => Err(e.to_string()),
                        Err(_) => Err("scanner timed out after 600s".to_string()),
                    };
                (name.clone(), r)
            }
        });
        let reports = futures::future::join_all(scans).await;
        let verdict = crate::gate::evaluate(&policy, &reports, chrono::Utc::now().date_naive());
        self.record(Event::Gate {
            passed: verdict.passed,
            summary: verdict.summary.clone(),
            detail: serde_json::to_value(&verdict).unwrap_or_default(),
        })
        .await?;
        if !verdict.passed {
            // Name what blocked, so the operator sees why without opening the journal.
            let mut blocking: Vec<String> = verdict
                .blocked
                .iter()
                .take(10)
                .map(|b| {
                    let f = &b.finding;
                    let package = if f.package.is_empty() {
                        String::new()
                    } else {
                        format!(" in {}", f.package)
                    };
                    format!("{} ({:?}{package}, {})", f.id, f.severity, b.scanner)
                })
                .collect();
            if verdict.blocked.len() > 10 {
                blocking.push(format!("and {} more", verdict.blocked.len() - 10));
            }
            blocking.extend(
                verdict
                    .scanner_errors
                    .iter()
                    .filter(|e| e.blocking)
                    .map(|e| format!("scanner `{}` failed: {}", e.scanner, e.error)),
            );
            self.reason = format!(
                "release gate blocked: {}; blocking: {}",
                verdict.summary,
                blocking.join(", ")
            );
        }
        Ok(verdict.passed)
    }
}
