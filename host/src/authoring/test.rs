//! `dax plugin test`: run a plugin's role calls from a scripted input file in the real host
//! (same sandbox, grants and limits as in a deployment), print each answer and check it
//! against what the file expects, so authors test without a deployment.
//!
//! The input (TOML, or JSON when the file ends in `.json`):
//!
//! ```toml
//! config = { scale = 2.0 }        # [plugins.NAME.config] (a strategy's [strategy.params])
//! grants = { http = [] }          # optional, as [plugins.NAME.grants]
//! limits = { call_timeout = "2s" } # optional, as [plugins.NAME.limits]
//!
//! [[call]]
//! call = "run-query"              # a call of the plugin's role (see CALLS)
//! query = { text = "value:21", kind = "instant", window_ms = 60000, step_ms = 0, vars = [] }
//! expect.ok = { kind = "value", value = 42.0 }   # or expect.error = "a piece of the error"
//! ```
//!
//! Arguments use the host's contract types (`crate::contract`) in their serde form, the
//! same as `--output json` of the other commands.

use anyhow::{bail, Context as _};
use serde::Serialize;
use serde_json::{json, Value};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::contract::{self as c, CallResult, PluginRole};
use crate::plugin::{Grants, HostOptions, Limits, LoadedPlugin, PluginHost, PluginSpec};

/// The calls of each role and the arguments they take.
pub const CALLS: &[(&str, &str)] = &[
    ("describe", "any role: no arguments"),
    ("validate-config", "any role: no arguments (uses `config`)"),
    ("run-query", "metric-provider: query"),
    ("scan", "scanner: artifact"),
    ("describe-plan", "strategy: no arguments"),
    ("start", "strategy: no arguments"),
    (
        "next",
        "strategy: observation, state (default: the state of the previous decision)",
    ),
    ("traffic-support", "target: no arguments"),
    ("deploy", "target: workload"),
    ("set-traffic", "target: app, split"),
    ("scale", "target: app, slot, replicas"),
    ("status", "target: app, slot"),
    ("promote", "target: app"),
    ("rollback", "target: app"),
    ("finalize", "target: app"),
];

/// A parsed input file.
#[derive(Debug)]
pub struct TestInput {
    pub config: Value,
    pub grants: Grants,
    pub limits: Limits,
    pub calls: Vec<ScriptedCall>,
    /// Relative paths in grants resolve against the input file's folder.
    pub base_dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ScriptedCall {
    pub call: String,
    pub args: serde_json::Map<String, Value>,
    pub expect: Option<Value>,
}

/// What one call answered.
#[derive(Debug, Serialize)]
pub struct CallReport {
    pub call: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ok: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `None` when the file expects nothing of this call.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub passed: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mismatch: Option<String>,
}

/// The whole run.
#[derive(Debug, Serialize)]
pub struct TestReport {
    pub plugin: String,
    pub role: PluginRole,
    pub sha256: String,
    pub calls: Vec<CallReport>,
    pub passed: usize,
    pub failed: usize,
}

impl TestInput {
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let mut doc: Value = if path.extension().is_some_and(|e| e == "json") {
            serde_json::from_str(&text)
                .with_context(|| format!("{} is not valid JSON", path.display()))?
        } else {
            toml::from_str(&text)
                .with_context(|| format!("{} is not valid TOML", path.display()))?
        };
        let Some(table) = doc.as_object_mut() else {
            bail!(
                "{} must be a table with `config` and [[call]] entries",
                path.display()
            );
        };
        let field = |table: &mut serde_json::Map<String, Value>, key: &str| table.remove(key);
        let config = field(table, "config").unwrap_or_else(|| json!({}));
        let grants = match field(table, "grants") {
            Some(v) => serde_json::from_value(v)
                .with_context(|| format!("{}: `grants`", path.display()))?,
            None => Grants::default(),
        };
        let limits = match field(table, "limits") {
            Some(v) => serde_json::from_value(v)
                .with_context(|| format!("{}: `limits`", path.display()))?,
            None => Limits::default(),
        };
        let calls = match field(table, "call") {
            Some(Value::Array(calls)) => calls,
            Some(_) => bail!("{}: `call` must be a list of tables ([[call]])", path.display()),
            None => bail!("{} has no [[call]] entries: add at least one, e.g. `[[call]]\\ncall = \"describe\"`", path.display()),
        };
        if let Some(unknown) = table.keys().next() {
            bail!(
                "{}: unknown key `{unknown}`; the keys are config, grants, limits and [[call]]",
                path.display()
            );
        }
        let calls = calls
            .into_iter()
            .enumerate()
            .map(|(i, call)| {
                let Value::Object(mut args) = call else {
                    bail!("{}: call[{i}] must be a table", path.display());
                };
                let name = match args.remove("call") {
                    Some(Value::String(name)) => name,
                    _ => bail!("{}: call[{i}] needs `call = \"NAME\"`", path.display()),
                };
                if !CALLS.iter().any(|(n, _)| *n == name) {
                    bail!(
                        "{}: call[{i}]: unknown call `{name}`; the calls are: {}",
                        path.display(),
                        CALLS.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", ")
                    );
                }
                let expect = args.remove("expect");
                Ok(ScriptedCall {
                    call: name,
                    args,
                    expect,
                })
            })
            .collect::<anyhow::Result<_>>()?;
        Ok(TestInput {
            config,
            grants,
            limits,
            calls,
            base_dir: path
                .parent()
                .map(Path::to_path_buf)
                .unwrap_or_else(|| PathBuf::from(".")),
        })
    }
}

/// Load the plugin at `source` (a `.wasm` path or `builtin:NAME`) as a deployment would
/// (with the input's grants and limits) and run every scripted call in order.
pub async fn run(
    source: &str,
    input: &TestInput,
    expected_role: Option<PluginRole>,
) -> anyhow::Result<TestReport> {
    let host = PluginHost::new(HostOptions::default())?;
    let spec = PluginSpec {
        source: source.to_string(),
        sha256: None,
        allow_insecure_http: false,
        config: toml::Value::try_from(&input.config).context("`config` must be a table")?,
        grants: input.grants.clone(),
        limits: input.limits.clone(),
    };
    let name = source
        .rsplit(['/', ':'])
        .next()
        .map(|s| s.trim_end_matches(".wasm").to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "plugin".into());
    let plugin = host
        .load(&name, &spec, &input.base_dir)
        .await
        .map_err(|e| anyhow::anyhow!("loading {source}: {e} (`{}`: {})", e.field, e.help))?;
    if let Some(role) = expected_role {
        if plugin.role() != role {
            bail!(
                "{source} is a {} plugin, not a {role} plugin (--role {role})",
                plugin.role()
            );
        }
    }
    let role = Role::bind(&plugin, input.config.clone()).await?;
    let mut calls = Vec::new();
    let mut last_state: Vec<u8> = Vec::new();
    for (i, scripted) in input.calls.iter().enumerate() {
        let answer = call(&plugin, &role, &input.config, scripted, &mut last_state)
            .await
            .with_context(|| format!("call[{i}] `{}`", scripted.call))?;
        let (ok, error) = match answer {
            Ok(v) => (Some(v), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let mismatch = scripted
            .expect
            .as_ref()
            .and_then(|expect| check(expect, ok.as_ref(), error.as_deref()).err());
        calls.push(CallReport {
            call: scripted.call.clone(),
            passed: scripted.expect.as_ref().map(|_| mismatch.is_none()),
            ok,
            error,
            mismatch,
        });
    }
    let failed = calls.iter().filter(|c| c.passed == Some(false)).count();
    Ok(TestReport {
        plugin: plugin.info().name.clone(),
        role: plugin.role(),
        sha256: plugin.digest().to_string(),
        passed: calls.iter().filter(|c| c.passed == Some(true)).count(),
        failed,
        calls,
    })
}

/// The plugin bound to its config, as the engine holds it.
enum Role {
    Target(Arc<dyn c::Target>),
    Scanner(Arc<dyn c::Scanner>),
    MetricProvider(Arc<dyn c::MetricProvider>),
    Strategy(Arc<dyn c::Strategy>),
}

impl Role {
    async fn bind(plugin: &LoadedPlugin, config: Value) -> anyhow::Result<Self> {
        Ok(match plugin.role() {
            PluginRole::Target => Role::Target(plugin.target(config).await?),
            PluginRole::Scanner => Role::Scanner(plugin.scanner(config).await?),
            PluginRole::MetricProvider => {
                Role::MetricProvider(plugin.metric_provider(config).await?)
            }
            PluginRole::Strategy => Role::Strategy(plugin.strategy(config).await?),
        })
    }
}

/// Make one call; `Err` is a problem of the input file, `Ok(Err)` the plugin's answer.
async fn call(
    plugin: &LoadedPlugin,
    role: &Role,
    config: &Value,
    scripted: &ScriptedCall,
    last_state: &mut Vec<u8>,
) -> anyhow::Result<Result<Value, c::CallError>> {
    fn arg<T: serde::de::DeserializeOwned>(call: &ScriptedCall, key: &str) -> anyhow::Result<T> {
        let value = call
            .args
            .get(key)
            .with_context(|| format!("missing argument `{key}`"))?;
        serde_json::from_value(value.clone()).with_context(|| format!("argument `{key}`"))
    }
    fn answer<T: Serialize>(result: CallResult<T>) -> anyhow::Result<Result<Value, c::CallError>> {
        Ok(match result {
            Ok(v) => Ok(match serde_json::to_value(v)? {
                // Calls that answer nothing show as an empty table, so `expect.ok = {}` fits.
                Value::Null => json!({}),
                v => v,
            }),
            Err(e) => Err(e),
        })
    }
    let wrong_role = || {
        anyhow::anyhow!(
            "`{}` is not a call of a {} plugin; see `dax plugin test --help` for the calls of each role",
            scripted.call,
            plugin.role()
        )
    };
    let s = scripted;
    match (s.call.as_str(), role) {
        ("describe", _) => answer(Ok(plugin.info().clone())),
        ("validate-config", _) => answer(plugin.validate_config(config).await),
        ("run-query", Role::MetricProvider(p)) => answer(p.run_query(&arg(s, "query")?).await),
        ("scan", Role::Scanner(p)) => answer(p.scan(&arg(s, "artifact")?).await),
        ("describe-plan", Role::Strategy(p)) => answer(p.describe_plan().await),
        ("start", Role::Strategy(p)) => {
            let decision = p.start().await;
            if let Ok(d) = &decision {
                last_state.clone_from(&d.state);
            }
            answer(decision)
        }
        ("next", Role::Strategy(p)) => {
            let state: Vec<u8> = match s.args.get("state") {
                Some(_) => arg(s, "state")?,
                None => last_state.clone(),
            };
            let decision = p.next(&state, &arg(s, "observation")?).await;
            if let Ok(d) = &decision {
                last_state.clone_from(&d.state);
            }
            answer(decision)
        }
        ("traffic-support", Role::Target(p)) => answer(p.traffic_support().await),
        ("deploy", Role::Target(p)) => answer(p.deploy(&arg(s, "workload")?).await),
        ("set-traffic", Role::Target(p)) => answer(
            p.set_traffic(&arg::<String>(s, "app")?, &arg(s, "split")?)
                .await,
        ),
        ("scale", Role::Target(p)) => answer(
            p.scale(
                &arg::<String>(s, "app")?,
                arg(s, "slot")?,
                arg(s, "replicas")?,
            )
            .await,
        ),
        ("status", Role::Target(p)) => {
            answer(p.status(&arg::<String>(s, "app")?, arg(s, "slot")?).await)
        }
        ("promote", Role::Target(p)) => answer(p.promote(&arg::<String>(s, "app")?).await),
        ("rollback", Role::Target(p)) => answer(p.rollback(&arg::<String>(s, "app")?).await),
        ("finalize", Role::Target(p)) => answer(p.finalize(&arg::<String>(s, "app")?).await),
        _ => Err(wrong_role()),
    }
}

/// Check an answer against `expect`: `{ok = ...}` matched field by field (a table need
/// only hold the expected keys; lists must have the same length), `{error = "..."}` a
/// piece of the error text.
fn check(expect: &Value, ok: Option<&Value>, error: Option<&str>) -> Result<(), String> {
    let Some(expect) = expect.as_object() else {
        return Err("`expect` must be a table with `ok` or `error`".into());
    };
    if let Some(want) = expect.get("ok") {
        return match (ok, error) {
            (Some(got), _) => subset(want, got, "ok"),
            (None, Some(e)) => Err(format!("expected an answer, got the error: {e}")),
            (None, None) => Err("no answer".into()),
        };
    }
    if let Some(want) = expect.get("error") {
        let want = want.as_str().unwrap_or_default();
        return match error {
            Some(e) if e.contains(want) => Ok(()),
            Some(e) => Err(format!("expected an error containing `{want}`, got: {e}")),
            None => Err(format!(
                "expected an error containing `{want}`, got the answer: {}",
                ok.map(Value::to_string).unwrap_or_default()
            )),
        };
    }
    Err("`expect` must have `ok` or `error`".into())
}

fn subset(want: &Value, got: &Value, at: &str) -> Result<(), String> {
    match (want, got) {
        (Value::Object(w), Value::Object(g)) => {
            for (key, w) in w {
                let g = g
                    .get(key)
                    .ok_or_else(|| format!("{at}.{key}: missing in the answer {got}"))?;
                subset(w, g, &format!("{at}.{key}"))?;
            }
            Ok(())
        }
        (Value::Array(w), Value::Array(g)) if w.len() == g.len() => w
            .iter()
            .zip(g)
            .enumerate()
            .try_for_each(|(i, (w, g))| subset(w, g, &format!("{at}[{i}]"))),
        (Value::Number(w), Value::Number(g)) if w.as_f64() == g.as_f64() => Ok(()),
        (w, g) if w == g => Ok(()),
        (w, g) => Err(format!("{at}: expected {w}, got {g}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expectations_match_field_by_field() {
        let got = json!({"kind": "value", "value": 42, "extra": [1, 2]});
        assert!(check(
            &json!({"ok": {"kind": "value", "value": 42.0}}),
            Some(&got),
            None
        )
        .is_ok());
        assert_eq!(
            check(&json!({"ok": {"value": 41}}), Some(&got), None).unwrap_err(),
            "ok.value: expected 41, got 42"
        );
        assert!(check(&json!({"ok": {"extra": [1]}}), Some(&got), None).is_err());
        assert!(check(&json!({"error": "boom"}), None, Some("it went boom")).is_ok());
        assert!(check(&json!({"error": "boom"}), Some(&got), None).is_err());
    }
}
