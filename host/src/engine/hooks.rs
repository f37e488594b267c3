//! Webhooks (Flagger's hook set), the built-in load generator, and notifications.
//!
//! A webhook is `POST url` with a JSON body shaped like Flagger's:
//! `{"name": app, "namespace": ns, "phase": "Progressing", "type": "pre-rollout",
//!   "version": "v2", "deployment": ID, "metadata": {...}}`. Any 2xx within `timeout`
//! advances; any other status, a connection error or a timeout counts as failed.
//! `event` hooks get `metadata.eventMessage` / `metadata.eventType` for every journal record
//! and are fire-and-forget.

use crate::config::{secrets, DeploymentConfig, Hook, LoadSpec, Notification, NotificationKind};
use crate::contract::{CheckResult, CheckVerdict, HookPhase};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Flagger's canary phase names, as its webhooks send them.
fn flagger_phase(phase: HookPhase) -> &'static str {
    match phase {
        HookPhase::ConfirmRollout => "Waiting",
        HookPhase::ConfirmPromotion => "Promoting",
        HookPhase::PostRollout => "Succeeded",
        HookPhase::Rollback => "Failed",
        _ => "Progressing",
    }
}

pub fn payload(cfg: &DeploymentConfig, id: &str, hook: &Hook) -> serde_json::Value {
    json!({
        "name": cfg.deployment.app,
        "namespace": cfg.deployment.namespace,
        "phase": flagger_phase(hook.phase),
        "type": hook.phase.as_str(),
        "version": cfg.deployment.version,
        "deployment": id,
        "metadata": crate::config::toml_to_json(&hook.metadata),
    })
}

/// Call one webhook: `Ok(status)` for 2xx, else `Err(reason)`.
pub async fn call(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
    timeout: Duration,
) -> Result<u16, String> {
    match client.post(url).timeout(timeout).json(body).send().await {
        Ok(resp) if resp.status().is_success() => Ok(resp.status().as_u16()),
        Ok(resp) => {
            let status = resp.status();
            let text = resp.text().await.unwrap_or_default();
            let text: String = text.chars().take(200).collect();
            Err(format!(
                "HTTP {status}{}",
                if text.is_empty() {
                    String::new()
                } else {
                    format!(": {text}")
                }
            ))
        }
        Err(e) if e.is_timeout() => Err(format!("no answer within {}s", timeout.as_secs_f64())),
        Err(e) => Err(format!("{}", secrets::redact(&without_url(&e)))),
    }
}

fn without_url(e: &reqwest::Error) -> String {
    // reqwest includes the URL, which may carry a secret token; redaction covers it too.
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(inner) = src {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        src = inner.source();
    }
    s
}

/// Run every webhook of `phase` concurrently; one [`CheckResult`] per hook (`hook:NAME`).
pub async fn run_phase(
    client: &reqwest::Client,
    cfg: &DeploymentConfig,
    id: &str,
    phase: HookPhase,
) -> Vec<CheckResult> {
    let hooks = cfg
        .hooks
        .iter()
        .filter(|h| h.phase == phase && h.url.is_some());
    let calls = hooks.map(|hook| async move {
        let url = hook.url.as_deref().unwrap_or_default();
        let result = call(client, url, &payload(cfg, id, hook), hook.timeout).await;
        let (verdict, detail) = match result {
            Ok(status) => (CheckVerdict::Pass, format!("HTTP {status}")),
            Err(e) => (CheckVerdict::Fail, e),
        };
        CheckResult {
            name: format!("hook:{}", hook.name),
            verdict,
            value: None,
            detail,
        }
    });
    futures::future::join_all(calls).await
}

/// Fire `event` hooks for one journal record, without waiting.
pub fn fire_event(
    client: &reqwest::Client,
    cfg: &Arc<crate::config::LoadedConfig>,
    id: &str,
    event_type: &str,
    message: &str,
) {
    for hook in cfg
        .config
        .hooks
        .iter()
        .filter(|h| h.phase == HookPhase::Event && h.url.is_some())
    {
        let mut body = payload(&cfg.config, id, hook);
        body["metadata"]["eventMessage"] = json!(secrets::redact(message));
        body["metadata"]["eventType"] = json!(event_type);
        let client = client.clone();
        let url = hook.url.clone().unwrap_or_default();
        let timeout = hook.timeout;
        tokio::spawn(async move {
            if let Err(e) = call(&client, &url, &body, timeout).await {
                tracing::debug!("event hook failed: {e}");
            }
        });
    }
}

/// The built-in load generator of a `rollout` hook with `load`: requests at `rps` until
/// dropped. Answers are counted, never awaited in line, so a slow app cannot slow the rate.
pub struct LoadGenerator {
    task: tokio::task::JoinHandle<()>,
    pub sent: Arc<AtomicU64>,
    pub ok: Arc<AtomicU64>,
}

impl LoadGenerator {
    pub fn start(client: reqwest::Client, spec: LoadSpec) -> Self {
        let sent = Arc::new(AtomicU64::new(0));
        let ok = Arc::new(AtomicU64::new(0));
        let (s, o) = (sent.clone(), ok.clone());
        let task = tokio::spawn(async move {
            let period = Duration::from_secs_f64(1.0 / spec.rps.max(0.001));
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let method =
                reqwest::Method::from_bytes(spec.method.as_bytes()).unwrap_or(reqwest::Method::GET);
            loop {
                tick.tick().await;
                let mut req = client
                    .request(method.clone(), &spec.url)
                    .timeout(Duration::from_secs(5));
                for (k, v) in &spec.headers {
                    req = req.header(k, v);
                }
                s.fetch_add(1, Ordering::Relaxed);
                let o = o.clone();
                tokio::spawn(async move {
                    if let Ok(r) = req.send().await {
                        if r.status().is_success() {
                            o.fetch_add(1, Ordering::Relaxed);
                        }
                        let _ = r.bytes().await;
                    }
                });
            }
        });
        LoadGenerator { task, sent, ok }
    }
}

impl Drop for LoadGenerator {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Send one notification event (`started`, `promoted`, `rolled-back`, `failed`, `paused`).
/// Failures are logged, never fatal: a notification must not change a rollout's outcome.
pub async fn notify(
    client: &reqwest::Client,
    cfg: &DeploymentConfig,
    id: &str,
    event: &str,
    text: &str,
    summary: &serde_json::Value,
) {
    let sends = cfg
        .notifications
        .iter()
        .filter(|n| n.on.is_empty() || n.on.iter().any(|e| e == event))
        .map(|n: &Notification| {
            let mut body = match n.kind {
                NotificationKind::Slack => json!({ "text": text }),
                NotificationKind::Webhook => json!({
                    "event": event,
                    "deployment": id,
                    "app": cfg.deployment.app,
                    "version": cfg.deployment.version,
                    "namespace": cfg.deployment.namespace,
                    "message": text,
                    "summary": summary,
                }),
            };
            secrets::redact_json(&mut body);
            async move {
                if let Err(e) = call(client, &n.url, &body, Duration::from_secs(10)).await {
                    tracing::warn!("notification ({:?}) failed: {e}", n.kind);
                }
            }
        });
    futures::future::join_all(sends).await;
}
