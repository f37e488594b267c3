//! The deployment TOML: types, parsing with line:column locations, `${env:..}`/`${file:..}`
//! interpolation (values are secrets, see [`secrets`]), and the structural half of
//! `dax validate` (the plugin half — resolution, digests, roles, each plugin's own config
//! check — lives in `engine::validate`, because it needs the plugin host).
//!
//! Parsing keeps going after a problem so one run of `dax validate` reports every problem:
//! syntax errors are recovered by the TOML parser, each top-level section (and each
//! `[[checks]]`, `[[hooks]]`, `[[notifications]]` entry and `[plugins.NAME]` table) is
//! deserialized on its own, unknown keys are collected with `serde_ignored` instead of
//! failing on the first, and cross-references are checked last.

pub mod problem;
pub mod secrets;

pub use problem::{Problem, SpanIndex};

use crate::contract::{HookPhase, QueryKind};
use crate::plugin::spec::duration_str;
use crate::plugin::PluginSpec;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// The top-level sections of a deployment file (each documented in
/// `docs/reference/config.md`, which `tests/reference.rs` keeps in step with the types).
pub const SECTIONS: [&str; 9] = [
    "deployment",
    "target",
    "strategy",
    "checks",
    "hooks",
    "gate",
    "notifications",
    "plugins",
    "trust",
];

/// A whole deployment file, interpolated.
#[derive(Debug, Clone, Serialize)]
pub struct DeploymentConfig {
    pub deployment: DeploymentSection,
    pub target: TargetSection,
    pub strategy: StrategySection,
    pub checks: Vec<Check>,
    pub hooks: Vec<Hook>,
    /// The `[gate]` table, handed to `dax::gate::GatePolicy`.
    pub gate: Option<serde_json::Value>,
    pub notifications: Vec<Notification>,
    pub plugins: BTreeMap<String, PluginSpec>,
    /// The `[trust]` table: which plugin signatures are required (see `plugin::signature`).
    pub trust: crate::plugin::signature::TrustPolicy,
}

/// What to do when an analysis has no failed check but some check had no data or errored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum OnInconclusive {
    /// Report the analysis as it is; the strategy counts no-data/error as failed checks.
    #[default]
    Fail,
    /// Pause until an operator runs `dax promote ID` (continue) or `dax abort ID`.
    Pause,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeploymentSection {
    pub app: String,
    pub version: String,
    #[serde(default)]
    pub artifact: String,
    #[serde(default = "default_namespace")]
    pub namespace: String,
    /// Longest time without progress (a ready workload, a passing analysis, a step done)
    /// before the engine rolls back. Waits and approvals do not count against it.
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub progress_deadline: Option<Duration>,
    #[serde(default)]
    pub on_inconclusive: OnInconclusive,
    /// The host's safety policy: whatever the strategy says, no promote before one analysis
    /// passed when `[[checks]]` exist. Turning it off is the operator's explicit choice
    /// (needed for a strategy's own `skipAnalysis`).
    #[serde(default = "yes")]
    pub require_analysis: bool,
    /// No promote before the candidate was seen ready (`ready >= desired > 0`).
    #[serde(default = "yes")]
    pub require_ready: bool,
    /// Most decisions one deployment may take before the engine stops it as a runaway.
    #[serde(default = "default_max_steps")]
    pub max_steps: u64,
    /// Most steps per second that call the target, providers or hooks; a faster strategy
    /// is paced, not failed.
    #[serde(default = "default_max_step_rate")]
    pub max_step_rate: f64,
    /// Longest `wait` (and analysis window) a strategy may ask for.
    #[serde(default = "default_max_wait", with = "duration_str")]
    pub max_wait: Duration,
    /// Most replicas a strategy may ask for in one `scale` step.
    #[serde(default = "default_max_replicas")]
    pub max_replicas: u32,
}

fn default_namespace() -> String {
    "default".into()
}
fn yes() -> bool {
    true
}
fn default_max_steps() -> u64 {
    1000
}
fn default_max_step_rate() -> f64 {
    10.0
}
fn default_max_wait() -> Duration {
    Duration::from_secs(3600)
}
fn default_max_replicas() -> u32 {
    100
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetSection {
    pub plugin: String,
    /// Target-specific extras, passed as `Workload.spec`.
    #[serde(default = "empty_table")]
    pub workload: toml::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StrategySection {
    pub plugin: String,
    #[serde(default = "empty_table")]
    pub params: toml::Value,
}

fn empty_table() -> toml::Value {
    toml::Value::Table(Default::default())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    Increase,
    Decrease,
    Either,
}

/// One `[[checks]]` entry: a metric query and its accepted range.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Check {
    pub name: String,
    pub provider: String,
    pub query: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
    #[serde(
        default,
        with = "opt_duration",
        skip_serializing_if = "Option::is_none"
    )]
    pub interval: Option<Duration>,
    #[serde(default = "default_kind")]
    pub kind: QueryKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub direction: Option<Direction>,
    #[serde(default)]
    pub critical: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weight: Option<f64>,
}

fn default_kind() -> QueryKind {
    QueryKind::Instant
}

/// One `[[hooks]]` entry: an HTTP webhook or a load generator.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hook {
    pub name: String,
    #[serde(rename = "type")]
    pub phase: HookPhase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default = "default_hook_timeout", with = "duration_str")]
    pub timeout: Duration,
    #[serde(default = "empty_table")]
    pub metadata: toml::Value,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub load: Option<LoadSpec>,
}

fn default_hook_timeout() -> Duration {
    Duration::from_secs(10)
}

/// The built-in load generator: requests at a fixed rate while the rollout is analysed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoadSpec {
    pub url: String,
    #[serde(default = "default_rps")]
    pub rps: f64,
    #[serde(default = "default_method")]
    pub method: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

fn default_rps() -> f64 {
    10.0
}
fn default_method() -> String {
    "GET".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NotificationKind {
    /// Slack incoming webhook (`{"text": ...}`), also understood by Mattermost and others.
    Slack,
    /// Generic JSON: the deployment summary as an object.
    Webhook,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Notification {
    pub kind: NotificationKind,
    pub url: String,
    /// Which events to send: `started`, `promoted`, `rolled-back`, `failed`, `paused`.
    /// Default: all of them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub on: Vec<String>,
}

/// `Option<Duration>` as `"30s"`-style strings.
pub mod opt_duration {
    use super::duration_str;
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&duration_str::format(*d)),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text = String::deserialize(d)?;
        duration_str::parse(&text)
            .map(Some)
            .map_err(serde::de::Error::custom)
    }
}

/// A parsed deployment file with everything needed to report problems against it.
#[derive(Debug, Clone)]
pub struct LoadedConfig {
    pub config: DeploymentConfig,
    /// The file as written (secrets still as `${env:..}` references): what journals store.
    pub raw: String,
    pub path: PathBuf,
    /// Folder of the file: relative paths in it are resolved against this.
    pub base_dir: PathBuf,
    pub spans: SpanIndex,
}

impl LoadedConfig {
    /// A problem located at `field` of this file.
    pub fn problem(
        &self,
        field: &str,
        message: impl Into<String>,
        help: impl Into<String>,
    ) -> Problem {
        self.spans.problem(field, message, help)
    }
}

/// Read and parse `path`. Every problem found is returned, not just the first.
pub fn load_file(path: &Path) -> Result<LoadedConfig, Vec<Problem>> {
    let raw = std::fs::read_to_string(path).map_err(|e| {
        vec![Problem {
            file: path.display().to_string(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("cannot read the deployment file: {e}"),
            help: "check the path".into(),
        }]
    })?;
    let base_dir = path
        .parent()
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .unwrap_or(Path::new("."))
        .to_path_buf();
    parse(&raw, &path.display().to_string(), &base_dir)
}

/// Parse the text of a deployment file named `file` (for messages) whose relative paths are
/// resolved against `base_dir`.
pub fn parse(raw: &str, file: &str, base_dir: &Path) -> Result<LoadedConfig, Vec<Problem>> {
    let mut spans = SpanIndex::new(file, raw);
    let (mut root, syntax) = DeTable::parse_recoverable(raw);
    let mut problems: Vec<Problem> = syntax
        .iter()
        .map(|e| {
            let message = e.message().trim();
            match e.span() {
                Some(span) => spans.problem_at(
                    Some(span),
                    "",
                    format!("TOML syntax error: {message}"),
                    "fix the TOML syntax (https://toml.io)",
                ),
                None => unlocated_syntax_error(&spans, raw, message),
            }
        })
        .collect();
    if !problems.is_empty() {
        return Err(problems);
    }
    let root_table = root.get_mut();
    index_and_interpolate_table(root_table, "", base_dir, &mut spans, &mut problems);

    for (key, _) in root_table.iter() {
        if !SECTIONS.contains(&key.get_ref().as_ref()) {
            let hint = problem::suggest(key.get_ref(), SECTIONS)
                .map(|s| format!("did you mean `{s}`? "))
                .unwrap_or_default();
            problems.push(spans.problem_at(
                Some(key.span()),
                key.get_ref(),
                format!("unknown section `{}`", key.get_ref()),
                format!("{hint}known sections: {}", SECTIONS.join(", ")),
            ));
        }
    }

    let mut take = |name: &str| root_table.remove(name);
    let deployment: Option<DeploymentSection> =
        required_section(take("deployment"), "deployment", &spans, &mut problems);
    let target: Option<TargetSection> =
        required_section(take("target"), "target", &spans, &mut problems);
    let strategy: Option<StrategySection> =
        required_section(take("strategy"), "strategy", &spans, &mut problems);
    let checks: Vec<(usize, Check)> =
        array_section(take("checks"), "checks", &spans, &mut problems);
    let hooks: Vec<(usize, Hook)> = array_section(take("hooks"), "hooks", &spans, &mut problems);
    let notifications: Vec<(usize, Notification)> = array_section(
        take("notifications"),
        "notifications",
        &spans,
        &mut problems,
    );
    let gate = take("gate").and_then(|v| {
        let path = "gate";
        match toml::Value::deserialize(toml::de::ValueDeserializer::from(v)) {
            Ok(v @ toml::Value::Table(_)) => Some(toml_to_json(&v)),
            Ok(_) => {
                problems.push(spans.problem(path, "`gate` must be a table", "write `[gate]`"));
                None
            }
            Err(e) => {
                problems.push(de_problem(&spans, path, &e));
                None
            }
        }
    });
    let trust = take("trust")
        .and_then(|v| {
            de_value::<crate::plugin::signature::TrustPolicy>(v, "trust", &spans, &mut problems)
        })
        .unwrap_or_default();
    for (field, message, help) in trust.problems(base_dir) {
        problems.push(spans.problem(&field, message, help));
    }
    let mut plugins = BTreeMap::new();
    // Names of every `[plugins.NAME]` table, even those with problems, so a reference to a
    // broken plugin is not reported as a reference to a missing one.
    let mut plugin_names = Vec::new();
    if let Some(v) = take("plugins") {
        let span = v.span();
        match v.into_inner() {
            DeValue::Table(t) => {
                for (name, value) in t {
                    plugin_names.push(name.get_ref().to_string());
                    let path = format!("plugins.{}", name.get_ref());
                    if let Some(spec) = de_value::<PluginSpec>(value, &path, &spans, &mut problems)
                    {
                        // Checked here, before anything is fetched: a URL must pin its digest.
                        for p in crate::plugin::source::pinning_problems(name.get_ref(), &spec) {
                            let field = format!("{path}.{}", p.field);
                            problems.push(spans.problem(&field, p.message, p.help));
                        }
                        plugins.insert(name.into_inner().into_owned(), spec);
                    }
                }
            }
            _ => problems.push(spans.problem_at(
                Some(span),
                "plugins",
                "`plugins` must be a table of tables",
                "write `[plugins.NAME]` with `source = \"builtin:NAME\"`",
            )),
        }
    }

    let refs = References {
        target: target.as_ref().map(|t: &TargetSection| t.plugin.as_str()),
        strategy: strategy
            .as_ref()
            .map(|s: &StrategySection| s.plugin.as_str()),
        checks: &checks,
        hooks: &hooks,
        notifications: &notifications,
        gate: gate.as_ref(),
        plugin_names: &plugin_names,
    };
    check_references(&refs, &spans, &mut problems);
    if let (Some(d), Some(s)) = (&deployment, &strategy) {
        check_safety_policy(d, s, &spans, &mut problems);
    }
    // Report in file order.
    problems.sort_by_key(|p| (p.line == 0, p.line, p.column));
    let (Some(deployment), Some(target), Some(strategy)) = (deployment, target, strategy) else {
        return Err(problems);
    };
    let config = DeploymentConfig {
        deployment,
        target,
        strategy,
        checks: checks.into_iter().map(|(_, c)| c).collect(),
        hooks: hooks.into_iter().map(|(_, h)| h).collect(),
        gate,
        notifications: notifications.into_iter().map(|(_, n)| n).collect(),
        plugins,
        trust,
    };
    if problems.is_empty() {
        Ok(LoadedConfig {
            config,
            raw: raw.to_string(),
            path: PathBuf::from(file),
            base_dir: base_dir.to_path_buf(),
            spans,
        })
    } else {
        Err(problems)
    }
}

/// The safety policy's own values, and a strategy parameter that only works with it off.
fn check_safety_policy(
    d: &DeploymentSection,
    s: &StrategySection,
    spans: &SpanIndex,
    problems: &mut Vec<Problem>,
) {
    if !(d.max_step_rate > 0.0 && d.max_step_rate.is_finite()) {
        problems.push(spans.problem(
            "deployment.max_step_rate",
            "`max_step_rate` must be a positive number of steps per second",
            "e.g. `max_step_rate = 10`",
        ));
    }
    if d.max_steps == 0 {
        problems.push(spans.problem(
            "deployment.max_steps",
            "`max_steps` must be at least 1",
            "the default is 1000",
        ));
    }
    let skips = s
        .params
        .get("skipAnalysis")
        .and_then(|v| v.as_bool())
        .unwrap_or(false);
    if skips && d.require_analysis {
        problems.push(spans.problem(
            "strategy.params.skipAnalysis",
            "`skipAnalysis = true` asks to promote without analysis, which the host's safety policy refuses",
            "skipping analysis must be the operator's explicit choice: also set `require_analysis = false` in [deployment]",
        ));
    }
}

/// A syntax error the TOML parser gives without a position: its nesting limit on dotted keys
/// (`a.b.c...` with 80 parts), found by tests/fuzz as a problem with neither a line nor a
/// field. Point at the most deeply nested line, the likely culprit, and name the limit.
fn unlocated_syntax_error(spans: &SpanIndex, raw: &str, message: &str) -> Problem {
    let depth = |line: &str| {
        line.chars()
            .filter(|c| matches!(c, '.' | '[' | '{'))
            .count()
    };
    let (index, deepest) = raw
        .lines()
        .enumerate()
        .max_by_key(|(i, l)| (depth(l), std::cmp::Reverse(*i)))
        .unwrap_or((0, ""));
    let offset = raw.lines().take(index).map(|l| l.len() + 1).sum::<usize>();
    let (message, help) = if message.contains("recursion") {
        (
            format!("TOML syntax error: {message}: keys, tables or arrays nested 80 levels deep or more ({} here)", depth(deepest) + 1),
            "nest less deeply (a deployment file needs a handful of levels)",
        )
    } else {
        (
            format!(
                "TOML syntax error: {message} (position unknown; the most nested line is shown)"
            ),
            "fix the TOML syntax (https://toml.io)",
        )
    };
    spans.problem_at(Some(offset..offset), "", message, help)
}

/// What cross-reference checks look at (whatever parsed).
struct References<'a> {
    target: Option<&'a str>,
    strategy: Option<&'a str>,
    checks: &'a [(usize, Check)],
    hooks: &'a [(usize, Hook)],
    notifications: &'a [(usize, Notification)],
    gate: Option<&'a serde_json::Value>,
    plugin_names: &'a [String],
}

/// Record the span of every key and value, and interpolate strings in place.
fn index_and_interpolate_table(
    table: &mut DeTable<'_>,
    prefix: &str,
    base_dir: &Path,
    spans: &mut SpanIndex,
    problems: &mut Vec<Problem>,
) {
    for (key, value) in table.iter_mut() {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        spans.spans.insert(path.clone(), key.span());
        index_and_interpolate_value(value, &path, base_dir, spans, problems);
    }
}

fn index_and_interpolate_value(
    value: &mut Spanned<DeValue<'_>>,
    path: &str,
    base_dir: &Path,
    spans: &mut SpanIndex,
    problems: &mut Vec<Problem>,
) {
    let span = value.span();
    spans.value_spans.insert(path.to_string(), span.clone());
    match value.get_mut() {
        DeValue::String(s) => match secrets::interpolate(s, base_dir) {
            Ok(Some(v)) => *s = std::borrow::Cow::Owned(v),
            Ok(None) => {}
            Err(msg) => problems.push(spans.problem_at(
                Some(span),
                path,
                msg,
                "set the variable or create the file, or write the value directly",
            )),
        },
        DeValue::Array(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                let p = format!("{path}[{i}]");
                spans.spans.insert(p.clone(), item.span());
                index_and_interpolate_value(item, &p, base_dir, spans, problems);
            }
        }
        DeValue::Table(t) => index_and_interpolate_table(t, path, base_dir, spans, problems),
        _ => {}
    }
}

fn required_section<T: serde::de::DeserializeOwned>(
    value: Option<Spanned<DeValue<'_>>>,
    name: &str,
    spans: &SpanIndex,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    match value {
        Some(v) => de_value(v, name, spans, problems),
        None => {
            problems.push(spans.problem(
                name,
                format!("missing section `[{name}]`"),
                match name {
                    "deployment" => {
                        "add `[deployment]` with `app = \"...\"` and `version = \"...\"`"
                    }
                    "target" => {
                        "add `[target]` with `plugin = \"NAME\"` naming a `[plugins.NAME]` table"
                    }
                    _ => {
                        "add `[strategy]` with `plugin = \"canary\"` and a `[plugins.canary]` table"
                    }
                },
            ));
            None
        }
    }
}

/// The entries that parsed, with their index in the file.
fn array_section<T: serde::de::DeserializeOwned>(
    value: Option<Spanned<DeValue<'_>>>,
    name: &str,
    spans: &SpanIndex,
    problems: &mut Vec<Problem>,
) -> Vec<(usize, T)> {
    let Some(value) = value else {
        return Vec::new();
    };
    let span = value.span();
    match value.into_inner() {
        DeValue::Array(items) => items
            .into_iter()
            .enumerate()
            .filter_map(|(i, item)| {
                de_value(item, &format!("{name}[{i}]"), spans, problems).map(|v| (i, v))
            })
            .collect(),
        _ => {
            problems.push(spans.problem_at(
                Some(span),
                name,
                format!("`{name}` must be an array of tables"),
                format!("write each entry as `[[{name}]]`"),
            ));
            Vec::new()
        }
    }
}

/// Deserialize one value, reporting its type errors and every unknown key in it.
fn de_value<T: serde::de::DeserializeOwned>(
    value: Spanned<DeValue<'_>>,
    path: &str,
    spans: &SpanIndex,
    problems: &mut Vec<Problem>,
) -> Option<T> {
    let mut unknown = Vec::new();
    let de = toml::de::ValueDeserializer::from(value);
    let result = serde_ignored::deserialize(de, |p| unknown.push(ignored_path(path, &p)));
    for field in unknown {
        let key = field.rsplit('.').next().unwrap_or(&field).to_string();
        problems.push(spans.problem(
            &field,
            format!("unknown key `{key}`"),
            "remove it or check its spelling against the schema (README: Running deployments)",
        ));
    }
    match result {
        Ok(v) => Some(v),
        Err(e) => {
            problems.push(de_problem(spans, path, &e));
            None
        }
    }
}

fn ignored_path(prefix: &str, path: &serde_ignored::Path<'_>) -> String {
    use serde_ignored::Path as P;
    match path {
        P::Root => prefix.to_string(),
        P::Seq { parent, index } => format!("{}[{index}]", ignored_path(prefix, parent)),
        P::Map { parent, key } => {
            let p = ignored_path(prefix, parent);
            if p.is_empty() {
                key.clone()
            } else {
                format!("{p}.{key}")
            }
        }
        P::Some { parent } | P::NewtypeStruct { parent } | P::NewtypeVariant { parent } => {
            ignored_path(prefix, parent)
        }
    }
}

fn de_problem(spans: &SpanIndex, path: &str, e: &toml::de::Error) -> Problem {
    let msg = e.message().trim().to_string();
    // serde names the missing or offending field in backticks; point the path at it.
    let field = msg
        .strip_prefix("missing field `")
        .and_then(|r| r.split('`').next())
        .map(|f| format!("{path}.{f}"))
        .or_else(|| {
            msg.strip_prefix("unknown field `")
                .and_then(|r| r.split('`').next())
                .map(|f| format!("{path}.{f}"))
        })
        .or_else(|| e.span().and_then(|s| spans.innermost(path, &s)))
        .unwrap_or_else(|| path.to_string());
    let help = if msg.starts_with("missing field") {
        "add the field"
    } else if msg.starts_with("unknown field") {
        "remove it or check its spelling"
    } else if msg.contains("duration") {
        "durations look like \"30s\", \"500ms\", \"2m\" or \"1m30s\""
    } else {
        "check the value's type against the schema (README: Running deployments)"
    };
    let span = if field != path {
        spans.span_of(&field).or(e.span())
    } else {
        e.span()
    };
    spans.problem_at(span, &field, msg, help)
}

/// Cross-references and ranges that serde cannot check.
fn check_references(r: &References<'_>, spans: &SpanIndex, problems: &mut Vec<Problem>) {
    let names: Vec<&str> = r.plugin_names.iter().map(String::as_str).collect();
    let mut refer = |field: &str, name: &str, role: &str| {
        if !names.contains(&name) {
            let hint = problem::suggest(name, names.iter().copied())
                .map(|s| format!("did you mean `{s}`? or "))
                .unwrap_or_default();
            problems.push(spans.problem(
                field,
                format!("no plugin named `{name}` (expected a {role} plugin)"),
                format!("{hint}add a `[plugins.{name}]` table with `source = \"...\"`"),
            ));
        }
    };
    if let Some(t) = r.target {
        refer("target.plugin", t, "target");
    }
    if let Some(s) = r.strategy {
        refer("strategy.plugin", s, "strategy");
    }
    for (i, c) in r.checks {
        refer(
            &format!("checks[{i}].provider"),
            &c.provider,
            "metric-provider",
        );
    }
    if let Some(serde_json::Value::Array(scanners)) = r.gate.and_then(|g| g.get("scanners")) {
        for (i, s) in scanners.iter().enumerate() {
            if let Some(s) = s.as_str() {
                refer(&format!("gate.scanners[{i}]"), s, "scanner");
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    for (i, c) in r.checks {
        if !seen.insert(c.name.as_str()) {
            problems.push(spans.problem(
                &format!("checks[{i}].name"),
                format!("duplicate check name `{}`", c.name),
                "give every check its own name",
            ));
        }
        // `min = nan` made every comparison false, so the check always passed; a NaN or
        // infinite weight made the judge's score NaN (found by tests/fuzz).
        for (key, bound) in [("min", c.min), ("max", c.max)] {
            if bound.is_some_and(f64::is_nan) {
                problems.push(spans.problem(
                    &format!("checks[{i}].{key}"),
                    format!(
                        "`{key}` is NaN: no value compares to it, so the check would always pass"
                    ),
                    format!("write a number, e.g. `{key} = 99`"),
                ));
            }
        }
        if let Some(w) = c.weight {
            if !(w.is_finite() && w >= 0.0) {
                problems.push(spans.problem(
                    &format!("checks[{i}].weight"),
                    format!("weight {w} is not a finite number >= 0"),
                    "write a weight such as `weight = 1`",
                ));
            }
        }
        if let (Some(min), Some(max)) = (c.min, c.max) {
            if min > max {
                problems.push(spans.problem(
                    &format!("checks[{i}].min"),
                    format!("min {min} is greater than max {max}: no value can pass"),
                    "swap or fix the bounds",
                ));
            }
        }
        if c.min.is_none() && c.max.is_none() && c.direction.is_none() {
            problems.push(spans.problem(
                &format!("checks[{i}]"),
                format!(
                    "check `{}` has neither `min` nor `max`: it would always pass",
                    c.name
                ),
                "add `min = ...` and/or `max = ...` (or `direction` for the statistical judge)",
            ));
        }
    }
    for (i, h) in r.hooks {
        let field = format!("hooks[{i}]");
        match (&h.url, &h.load) {
            (None, None) => problems.push(spans.problem(
                &field,
                format!("hook `{}` has neither `url` nor `load`", h.name),
                "add `url = \"http://...\"` (webhook) or `load = { url = \"...\", rps = 10 }`",
            )),
            (Some(_), Some(_)) => problems.push(spans.problem(
                &field,
                format!("hook `{}` has both `url` and `load`", h.name),
                "split it into two hooks",
            )),
            (None, Some(_)) if h.phase != HookPhase::Rollout => problems.push(spans.problem(
                &format!("{field}.type"),
                format!("load generator `{}` must have `type = \"rollout\"`", h.name),
                "load runs while the rollout is analysed; use type = \"rollout\"",
            )),
            _ => {}
        }
        for url in h.url.iter().chain(h.load.as_ref().map(|l| &l.url)) {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                problems.push(spans.problem(
                    &format!("{field}.url"),
                    format!("`{}` is not an http(s) URL", secrets::redact(url)),
                    "write `http://host:port/path`",
                ));
            }
        }
        if let Some(l) = &h.load {
            if !(l.rps > 0.0 && l.rps <= 10_000.0) {
                problems.push(spans.problem(
                    &format!("{field}.load.rps"),
                    format!("rps {} out of range", l.rps),
                    "use 0 < rps <= 10000",
                ));
            }
        }
    }
    for (i, n) in r.notifications {
        if !(n.url.starts_with("http://") || n.url.starts_with("https://") || n.url.contains("${"))
        {
            problems.push(spans.problem(
                &format!("notifications[{i}].url"),
                "notification url is not an http(s) URL",
                "write `https://hooks.slack.com/...` or `${env:SLACK_WEBHOOK_URL}`",
            ));
        }
        for (j, ev) in n.on.iter().enumerate() {
            if !["started", "promoted", "rolled-back", "failed", "paused"].contains(&ev.as_str()) {
                problems.push(spans.problem(
                    &format!("notifications[{i}].on[{j}]"),
                    format!("unknown event `{ev}`"),
                    "use started, promoted, rolled-back, failed or paused",
                ));
            }
        }
    }
}

/// TOML to JSON for plugin configs (datetimes become RFC 3339 strings).
pub fn toml_to_json(v: &toml::Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        toml::Value::String(s) => J::String(s.clone()),
        toml::Value::Integer(i) => J::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f)
            .map(J::Number)
            .unwrap_or(J::Null),
        toml::Value::Boolean(b) => J::Bool(*b),
        toml::Value::Datetime(d) => J::String(d.to_string()),
        toml::Value::Array(a) => J::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => J::Object(
            t.iter()
                .map(|(k, v)| (k.clone(), toml_to_json(v)))
                .collect(),
        ),
    }
}

impl DeploymentConfig {
    /// The `[target.workload]` table as JSON.
    pub fn workload_spec(&self) -> serde_json::Value {
        toml_to_json(&self.target.workload)
    }
    /// `[target.workload] replicas`, default 1.
    pub fn replicas(&self) -> u32 {
        self.target
            .workload
            .get("replicas")
            .and_then(|v| v.as_integer())
            .map(|r| r.clamp(0, u32::MAX as i64) as u32)
            .unwrap_or(1)
    }
    pub fn strategy_params(&self) -> serde_json::Value {
        toml_to_json(&self.strategy.params)
    }
    pub fn plugin_config(&self, name: &str) -> serde_json::Value {
        self.plugins
            .get(name)
            .map(|p| toml_to_json(&p.config))
            .unwrap_or_else(|| serde_json::json!({}))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[deployment]
app = "demo"
version = "v2"
[target]
plugin = "local"
[strategy]
plugin = "canary"
[strategy.params]
interval = "1s"
[[checks]]
name = "sr"
provider = "m"
query = "request-success-rate"
min = 99
[plugins.local]
source = "builtin:local"
[plugins.canary]
source = "builtin:canary"
[plugins.m]
source = "builtin:local-metrics"
"#;

    #[test]
    fn parses_a_good_file() {
        let c = parse(GOOD, "good.toml", Path::new(".")).unwrap();
        assert_eq!(c.config.deployment.app, "demo");
        assert_eq!(c.config.checks[0].min, Some(99.0));
        assert_eq!(c.config.plugins.len(), 3);
        assert_eq!(c.config.replicas(), 1);
    }

    #[test]
    fn reports_every_problem_with_location() {
        let bad = GOOD
            .replace("version = \"v2\"", "version = \"v2\"\nverison = 3")
            .replace("min = 99", "min = \"high\"\nfoo = 1")
            .replace("provider = \"m\"", "provider = \"nope\"");
        let problems = parse(&bad, "bad.toml", Path::new(".")).unwrap_err();
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert!(
            text.iter()
                .any(|t| t.starts_with("bad.toml:5:1: `deployment.verison`: unknown key")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|t| t.starts_with("bad.toml:16:1: `checks[0].min`: invalid type")),
            "{text:#?}"
        );
        assert!(
            text.iter()
                .any(|t| t.contains("`checks[0].foo`: unknown key")),
            "{text:#?}"
        );
    }

    #[test]
    fn nan_bounds_and_non_finite_weights_are_problems() {
        // Regression found by tests/fuzz: `min = nan` made a check that always passes.
        let bad = GOOD.replace("min = 99", "min = nan\nmax = nan\nweight = inf");
        let problems = parse(&bad, "bad.toml", Path::new(".")).unwrap_err();
        let text: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
        assert_eq!(problems.len(), 3, "{text:#?}");
        assert!(
            text[0].starts_with("bad.toml:15:1: `checks[0].min`: `min` is NaN"),
            "{text:#?}"
        );
        assert!(
            text[1].starts_with("bad.toml:16:1: `checks[0].max`: `max` is NaN"),
            "{text:#?}"
        );
        assert!(
            text[2].contains("`checks[0].weight`: weight inf is not a finite number"),
            "{text:#?}"
        );
    }

    #[test]
    fn too_deep_dotted_keys_are_located() {
        // Regression found by tests/fuzz: the parser's nesting limit came without a position.
        let bad = format!("{GOOD}\n{} = 1\n", vec!["k"; 90].join("."));
        let problems = parse(&bad, "bad.toml", Path::new(".")).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert_eq!(problems[0].line, 23, "{problems:#?}");
        assert!(problems[0]
            .message
            .contains("nested 80 levels deep or more"));
    }

    #[test]
    fn reports_unknown_reference_with_suggestion() {
        let bad = GOOD.replace("plugin = \"canary\"", "plugin = \"canry\"");
        let problems = parse(&bad, "bad.toml", Path::new(".")).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:#?}");
        assert!(problems[0].help.contains("did you mean `canary`"));
        assert_eq!(problems[0].line, 8);
    }
}
