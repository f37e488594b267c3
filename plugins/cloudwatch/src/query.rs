//! Everything except the I/O: the config, turning a check's query into `GetMetricData`
//! queries, the time window CloudWatch is asked about, the Query-protocol parameters, and
//! reading the XML answer into a value, a series or no-data. Unit-tested natively.

use crate::xml::Node;
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::collections::BTreeMap;

/// CloudWatch's Query-protocol API version.
pub const API_VERSION: &str = "2010-08-01";

/// The built-in checks, with the query arguments they take.
pub const BUILTINS: &[&str] = &["request-success-rate", "request-duration"];

/// The statistic of `request-duration` when neither the config nor the query names one
/// (Flagger's request-duration is a p99, like the `prometheus` plugin's).
pub const DEFAULT_DURATION_STAT: &str = "p99";

/// Most datapoints asked for in one range query; a longer window gets a coarser period.
const MAX_POINTS: u64 = 1440;

/// Most answer pages followed (`NextToken`); one check asks for a handful of series.
pub const MAX_PAGES: usize = 10;

/// `[plugins.NAME.config]`.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Region of the metrics; default: the host's AWS region.
    #[serde(default)]
    pub region: Option<String>,
    /// The ALB, as its ARN or its `LoadBalancer` dimension (`app/NAME/ID`).
    #[serde(default)]
    pub load_balancer: Option<String>,
    /// Target group of the candidate (query var `slot = candidate`): ARN or `targetgroup/NAME/ID`.
    #[serde(default)]
    pub candidate_target_group: Option<String>,
    /// Target group of the stable version (`slot = stable`, used by baseline comparisons).
    #[serde(default)]
    pub stable_target_group: Option<String>,
    /// Statistic of `request-duration`, e.g. `p99`, `p95`, `Average`.
    #[serde(default)]
    pub duration_stat: Option<String>,
}

/// Problems with a config, as `(field, message)`.
pub fn config_problems(config: &str) -> Vec<(String, String)> {
    let cfg: Config = match serde_json::from_str(config) {
        Ok(c) => c,
        Err(e) => {
            return vec![(
                String::new(),
                format!("{e}; the keys are region, load_balancer, candidate_target_group, stable_target_group, duration_stat"),
            )]
        }
    };
    let mut problems = Vec::new();
    if let Some(r) = &cfg.region {
        if !is_region(r) {
            problems.push((
                "region".into(),
                format!("`{r}` is not a region name, e.g. \"eu-west-1\""),
            ));
        }
    }
    if let Some(lb) = &cfg.load_balancer {
        if let Err(m) = load_balancer_dimension(lb) {
            problems.push(("load_balancer".into(), m));
        }
    }
    for (field, tg) in [
        ("candidate_target_group", &cfg.candidate_target_group),
        ("stable_target_group", &cfg.stable_target_group),
    ] {
        if let Some(tg) = tg {
            if let Err(m) = target_group_dimension(tg) {
                problems.push((field.into(), m));
            }
        }
    }
    if let Some(stat) = &cfg.duration_stat {
        if let Err(m) = check_stat(stat) {
            problems.push(("duration_stat".into(), m));
        }
    }
    problems
}

pub fn parse_config(config: &str) -> Result<Config, String> {
    if let Some((field, message)) = config_problems(config).into_iter().next() {
        return Err(if field.is_empty() {
            message
        } else {
            format!("{field}: {message}")
        });
    }
    serde_json::from_str(config).map_err(|e| e.to_string())
}

fn is_region(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.contains('-')
        && !s.starts_with('-')
        && !s.ends_with('-')
        && s.chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

/// The `LoadBalancer` dimension (`app/NAME/ID`) of an ALB given as its ARN, the ARN of one of
/// its listeners (`listener/app/NAME/ID/LISTENER-ID`, what the `ecs` plugin is configured
/// with) or the dimension itself.
pub fn load_balancer_dimension(value: &str) -> Result<String, String> {
    let v = value.trim();
    let listener_lb;
    let dim = match (v.split_once(":loadbalancer/"), v.split_once(":listener/")) {
        (Some((_, rest)), _) if v.starts_with("arn:") => rest,
        (_, Some((_, rest))) if v.starts_with("arn:") => {
            listener_lb = rest
                .rsplit_once('/')
                .map(|(lb, _)| lb)
                .unwrap_or("")
                .to_string();
            &listener_lb
        }
        _ => v,
    };
    if dim.starts_with("app/") && dim.split('/').count() == 3 && !dim.ends_with('/') {
        Ok(dim.to_string())
    } else {
        Err(format!(
            "`{v}` is not an Application Load Balancer: give its ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:loadbalancer/app/NAME/ID), a listener's ARN or its CloudWatch dimension app/NAME/ID"
        ))
    }
}

/// The `TargetGroup` dimension (`targetgroup/NAME/ID`) of a target group given as ARN or dimension.
pub fn target_group_dimension(value: &str) -> Result<String, String> {
    let v = value.trim();
    let dim = match v.split_once(':') {
        Some(_) if v.starts_with("arn:") => v.rsplit(':').next().unwrap_or(""),
        _ => v,
    };
    if dim.starts_with("targetgroup/") && dim.split('/').count() == 3 && !dim.ends_with('/') {
        Ok(dim.to_string())
    } else {
        Err(format!(
            "`{v}` is not a target group: give its ARN (arn:aws:elasticloadbalancing:REGION:ACCOUNT:targetgroup/NAME/ID) or its CloudWatch dimension targetgroup/NAME/ID"
        ))
    }
}

/// A CloudWatch statistic: `Sum`, `Average`, `Minimum`, `Maximum`, `SampleCount`, or an
/// extended one (`p99`, `p99.9`, `tm90`, `TM(10%:90%)`, `IQM`...). CloudWatch checks the rest.
pub fn check_stat(stat: &str) -> Result<(), String> {
    let ok = !stat.is_empty()
        && stat.len() <= 32
        && stat.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && stat
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".%:()".contains(c));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{stat}` is not a CloudWatch statistic, e.g. \"Sum\", \"Average\", \"p99\""
        ))
    }
}

/// The time span asked of CloudWatch, in seconds since the epoch, and its period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Window {
    pub start_s: u64,
    pub end_s: u64,
    pub period_s: u64,
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// The window of a query. CloudWatch keeps standard-resolution metrics per minute, takes a
/// period of a multiple of 60 s and answers fastest when start and end are on the period's
/// boundaries, so: the end is the next whole minute after `now` (the current, still filling
/// minute is included: ALB stamps each minute's datapoint with its start), an instant
/// query asks for one period as long as the window rounded up to whole minutes (one
/// datapoint), and a range query for periods of the step rounded up to whole minutes
/// (at most 1440 of them) covering the window.
pub fn window(now_ms: u64, window_ms: u64, step_ms: u64, range: bool) -> Window {
    let end_s = (now_ms / 1000 / 60 + 1) * 60;
    let window_s = round_up(window_ms.div_ceil(1000).max(60), 60);
    if !range {
        return Window {
            start_s: end_s - window_s,
            end_s,
            period_s: window_s,
        };
    }
    let mut period_s = round_up(step_ms.div_ceil(1000).max(60), 60);
    if window_s / period_s > MAX_POINTS {
        period_s = round_up(window_s.div_ceil(MAX_POINTS), 60);
    }
    let span = round_up(window_s.max(period_s), period_s);
    Window {
        start_s: end_s - span,
        end_s,
        period_s,
    }
}

/// How the answer is computed from the queries' results.
#[derive(Debug, Clone, PartialEq)]
pub enum Compute {
    /// The one returning query's values, times `scale`.
    Returned { id: String, scale: f64 },
    /// `100 - 100 * errors / requests` per datapoint; a period without `errors` datapoints
    /// had no errors (an ALB publishes `HTTPCode_Target_5XX_Count` only when it is not 0),
    /// a period without requests has no success rate.
    SuccessRate { errors: String, requests: String },
}

/// The `GetMetricData` queries of one check, and how to read their answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// `MetricDataQuery` objects as AWS spells them (`Id`, `MetricStat`, `Expression`...).
    pub queries: Vec<Value>,
    pub compute: Compute,
    /// What the check measures, for no-data messages.
    pub what: String,
}

/// What went wrong with a query, sorted by who must fix it.
#[derive(Debug, Clone, PartialEq)]
pub enum QueryError {
    /// The query text is wrong.
    Query(String),
    /// The config lacks what a built-in needs.
    Config(String),
}

fn metric_stat(id: &str, metric: &str, stat: &str, lb: &str, tg: &str, period_s: u64) -> Value {
    json!({
        "Id": id,
        "MetricStat": {
            "Metric": {
                "Namespace": "AWS/ApplicationELB",
                "MetricName": metric,
                "Dimensions": [{"Name": "LoadBalancer", "Value": lb}, {"Name": "TargetGroup", "Value": tg}],
            },
            "Period": period_s,
            "Stat": stat,
        },
        "ReturnData": true,
    })
}

/// Turn a check's query into a plan. `slot` (`candidate` or `stable`, from the query's
/// variables) picks the target group of the built-ins.
pub fn plan(text: &str, cfg: &Config, slot: &str, period_s: u64) -> Result<Plan, QueryError> {
    let text = text.trim();
    let name = text.split_whitespace().next().unwrap_or("");
    if BUILTINS.contains(&name) {
        return builtin(name, text[name.len()..].trim(), cfg, slot, period_s);
    }
    if text.starts_with('[') || text.starts_with('{') {
        return json_plan(text, period_s);
    }
    if text.is_empty() {
        return Err(QueryError::Query(format!(
            "the query is empty: give a built-in check ({}), a metric math or Metrics Insights expression, or GetMetricData queries as JSON",
            BUILTINS.join(", ")
        )));
    }
    // A metric math expression that needs no other query (SEARCH(...), a Metrics Insights
    // SELECT, a constant), asked for as it is.
    Ok(Plan {
        queries: vec![
            json!({"Id": "q", "Expression": text, "Period": period_s, "ReturnData": true}),
        ],
        compute: Compute::Returned {
            id: "q".into(),
            scale: 1.0,
        },
        what: format!("`{text}`"),
    })
}

fn builtin(
    name: &str,
    args: &str,
    cfg: &Config,
    slot: &str,
    period_s: u64,
) -> Result<Plan, QueryError> {
    let mut target_group = match slot {
        "stable" => cfg.stable_target_group.clone(),
        _ => cfg.candidate_target_group.clone(),
    };
    let mut load_balancer = cfg.load_balancer.clone();
    let mut stat = cfg
        .duration_stat
        .clone()
        .unwrap_or_else(|| DEFAULT_DURATION_STAT.into());
    for arg in args.split_whitespace() {
        let (k, v) = arg.split_once('=').ok_or_else(|| {
            QueryError::Query(format!("`{arg}` in query `{name} {args}` is not key=value (keys: target_group, load_balancer, stat)"))
        })?;
        match k {
            "target_group" => target_group = Some(v.into()),
            "load_balancer" => load_balancer = Some(v.into()),
            "stat" if name == "request-duration" => stat = v.into(),
            _ => {
                let keys = if name == "request-duration" {
                    "target_group, load_balancer, stat"
                } else {
                    "target_group, load_balancer"
                };
                return Err(QueryError::Query(format!(
                    "`{name}` takes no argument `{k}` (its arguments: {keys})"
                )));
            }
        }
    }
    let field = if slot == "stable" {
        "stable_target_group"
    } else {
        "candidate_target_group"
    };
    let tg = target_group.ok_or_else(|| {
        QueryError::Config(format!(
            "`{name}` for the {slot} needs its target group: set `{field}` in the plugin's config or write `{name} target_group=targetgroup/NAME/ID`"
        ))
    })?;
    let tg = target_group_dimension(&tg).map_err(QueryError::Config)?;
    let lb = load_balancer.ok_or_else(|| {
        QueryError::Config(format!(
            "`{name}` needs the load balancer: set `load_balancer` in the plugin's config or write `{name} load_balancer=app/NAME/ID`"
        ))
    })?;
    let lb = load_balancer_dimension(&lb).map_err(QueryError::Config)?;
    check_stat(&stat).map_err(QueryError::Query)?;
    Ok(match name {
        "request-success-rate" => Plan {
            queries: vec![
                metric_stat(
                    "errors",
                    "HTTPCode_Target_5XX_Count",
                    "Sum",
                    &lb,
                    &tg,
                    period_s,
                ),
                metric_stat("requests", "RequestCount", "Sum", &lb, &tg, period_s),
            ],
            compute: Compute::SuccessRate {
                errors: "errors".into(),
                requests: "requests".into(),
            },
            what: format!("requests to {tg} of {lb}"),
        },
        _ => Plan {
            // TargetResponseTime is in seconds; checks speak milliseconds.
            queries: vec![metric_stat(
                "duration",
                "TargetResponseTime",
                &stat,
                &lb,
                &tg,
                period_s,
            )],
            compute: Compute::Returned {
                id: "duration".into(),
                scale: 1000.0,
            },
            what: format!("TargetResponseTime {stat} of {tg} of {lb}"),
        },
    })
}

/// A period CloudWatch accepts: 1, 5, 10, 30 (high-resolution metrics) or a multiple of 60.
fn check_period(id: &str, p: &Value) -> Result<(), QueryError> {
    match p.as_u64() {
        Some(1 | 5 | 10 | 30) => Ok(()),
        Some(n) if n > 0 && n % 60 == 0 => Ok(()),
        _ => Err(QueryError::Query(format!(
            "query `{id}`: Period {p} is not one CloudWatch takes (1, 5, 10, 30 or a multiple of 60 seconds)"
        ))),
    }
}

/// `{"Namespace", "MetricName", "Dimensions": {name: value} | [{Name, Value}], "Stat",
/// "Period"?, "Unit"?}` → a `MetricStat` query.
fn expand_shorthand(mut q: Map<String, Value>) -> Result<Map<String, Value>, String> {
    let mut metric = Map::new();
    for key in ["Namespace", "MetricName"] {
        match q.remove(key) {
            Some(v @ Value::String(_)) => {
                metric.insert(key.into(), v);
            }
            _ => return Err(format!("`{key}` must be a string")),
        }
    }
    match q.remove("Dimensions") {
        None => {}
        Some(Value::Object(dims)) => {
            let list: Vec<Value> = dims
                .into_iter()
                .map(|(k, v)| json!({"Name": k, "Value": v}))
                .collect();
            metric.insert("Dimensions".into(), Value::Array(list));
        }
        Some(list @ Value::Array(_)) => {
            metric.insert("Dimensions".into(), list);
        }
        Some(_) => {
            return Err(
                "`Dimensions` must be a table {Name = \"value\"} or a list of {Name, Value}".into(),
            )
        }
    }
    let mut stat = Map::new();
    stat.insert("Metric".into(), Value::Object(metric));
    stat.insert(
        "Stat".into(),
        q.remove("Stat").ok_or("`Stat` is missing, e.g. \"Sum\"")?,
    );
    for key in ["Period", "Unit"] {
        if let Some(v) = q.remove(key) {
            stat.insert(key.into(), v);
        }
    }
    q.insert("MetricStat".into(), Value::Object(stat));
    Ok(q)
}

/// GetMetricData queries as JSON, as AWS spells them (Flagger's CloudWatch query format):
/// one object or a list. Exactly one of them may return data.
fn json_plan(text: &str, period_s: u64) -> Result<Plan, QueryError> {
    let parsed: Value = serde_json::from_str(text)
        .map_err(|e| QueryError::Query(format!("the query looks like JSON but is not: {e}")))?;
    let items = match parsed {
        Value::Array(items) => items,
        one @ Value::Object(_) => vec![one],
        _ => unreachable!("starts with [ or {{"),
    };
    if items.is_empty() {
        return Err(QueryError::Query("the list of queries is empty".into()));
    }
    let mut queries = Vec::new();
    let mut returned = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let Value::Object(mut q) = item else {
            return Err(QueryError::Query(format!(
                "query {} is not an object",
                i + 1
            )));
        };
        if !q.contains_key("Id") {
            q.insert("Id".into(), json!(format!("q{}", i + 1)));
        }
        let id = q["Id"].as_str().unwrap_or("").to_string();
        if id.is_empty()
            || !id.starts_with(|c: char| c.is_ascii_lowercase())
            || !id.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        {
            return Err(QueryError::Query(format!(
                "query {}: Id {} must start with a lowercase letter and hold only letters, digits and _",
                i + 1,
                q["Id"]
            )));
        }
        if q.contains_key("MetricName") {
            q = expand_shorthand(q).map_err(|m| QueryError::Query(format!("query `{id}`: {m}")))?;
        }
        if let Some(Value::Object(stat)) = q.get_mut("MetricStat") {
            match stat.get("Period") {
                Some(p) => check_period(&id, p)?,
                None => {
                    stat.insert("Period".into(), json!(period_s));
                }
            }
        } else if q.contains_key("Expression") {
            match q.get("Period") {
                Some(p) => check_period(&id, p)?,
                None => {
                    q.insert("Period".into(), json!(period_s));
                }
            }
        } else {
            return Err(QueryError::Query(format!(
                "query `{id}` has neither `MetricStat` (or `Namespace`/`MetricName`/`Stat`) nor `Expression`"
            )));
        }
        if q.get("ReturnData").and_then(Value::as_bool) != Some(false) {
            returned.push(id.clone());
        }
        queries.push(Value::Object(q));
    }
    let id = match returned.as_slice() {
        [one] => one.clone(),
        [] => return Err(QueryError::Query("every query has \"ReturnData\": false; one must return the check's value".into())),
        many => {
            return Err(QueryError::Query(format!(
                "queries {} all return data; a check needs one value: set \"ReturnData\": false on all but one",
                many.iter().map(|i| format!("`{i}`")).collect::<Vec<_>>().join(", ")
            )))
        }
    };
    Ok(Plan {
        what: format!("query `{id}`"),
        queries,
        compute: Compute::Returned { id, scale: 1.0 },
    })
}

/// Flatten JSON into Query-protocol parameters: `a.b`, lists as `a.member.N`.
fn flatten(v: &Value, prefix: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::Object(m) => m
            .iter()
            .for_each(|(k, v)| flatten(v, &format!("{prefix}.{k}"), out)),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, v)| flatten(v, &format!("{prefix}.member.{}", i + 1), out)),
        Value::String(s) => out.push((prefix.into(), s.clone())),
        Value::Number(n) => out.push((prefix.into(), n.to_string())),
        Value::Bool(b) => out.push((prefix.into(), b.to_string())),
        Value::Null => {}
    }
}

/// The parameters of one `GetMetricData` call (the host adds `Action` and `Version`).
pub fn params(plan: &Plan, w: &Window, next_token: Option<&str>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (i, q) in plan.queries.iter().enumerate() {
        flatten(q, &format!("MetricDataQueries.member.{}", i + 1), &mut out);
    }
    out.push(("StartTime".into(), iso8601(w.start_s)));
    out.push(("EndTime".into(), iso8601(w.end_s)));
    out.push(("ScanBy".into(), "TimestampAscending".into()));
    if let Some(t) = next_token {
        out.push(("NextToken".into(), t.into()));
    }
    out
}

/// Days since 1970-01-01 of a civil date, and back (H. Hinnant's algorithms).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719468;
    let era = z.div_euclid(146097);
    let doe = z - era * 146097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

/// `2026-11-30T08:01:00Z`.
pub fn iso8601(epoch_s: u64) -> String {
    let (y, mo, d) = civil_from_days((epoch_s / 86400) as i64);
    let s = epoch_s % 86400;
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Milliseconds since the epoch of a UTC timestamp as CloudWatch writes it
/// (`2026-11-30T08:01:00Z`, `...00.000Z`, `...00+00:00`).
pub fn parse_iso8601(text: &str) -> Option<u64> {
    let t = text.trim();
    let b = t.as_bytes();
    if b.len() < 19
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let num = |r: std::ops::Range<usize>| t.get(r)?.parse::<u32>().ok();
    let (y, mo, d, h, mi, s) = (
        num(0..4)?,
        num(5..7)?,
        num(8..10)?,
        num(11..13)?,
        num(14..16)?,
        num(17..19)?,
    );
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let mut rest = &t[19..];
    let mut ms = 0u64;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits: String = frac.chars().take_while(char::is_ascii_digit).collect();
        ms = format!("{digits:0<3}")[..3].parse().ok()?;
        rest = &frac[digits.len()..];
    }
    if !matches!(rest, "Z" | "" | "+00:00") {
        return None;
    }
    let days = days_from_civil(y as i64, mo, d);
    let secs = days * 86400 + (h * 3600 + mi * 60 + s) as i64;
    u64::try_from(secs).ok().map(|s| s * 1000 + ms)
}

/// One `MetricDataResults` member, across answer pages.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Series {
    pub label: String,
    pub status: String,
    /// (timestamp ms, value), in time order.
    pub points: Vec<(u64, f64)>,
    pub messages: Vec<String>,
}

/// What one answer page says besides its series: the next page's token and the
/// answer-level messages.
#[derive(Debug, Default)]
pub struct Page {
    pub next_token: Option<String>,
    pub messages: Vec<String>,
}

fn messages(node: Option<&Node>) -> Vec<String> {
    node.map(|m| {
        m.members()
            .map(|msg| format!("{}: {}", msg.text_of("Code"), msg.text_of("Value")))
            .collect()
    })
    .unwrap_or_default()
}

/// Read one `GetMetricDataResponse`, adding its series to `into`.
pub fn read_page(xml: &str, into: &mut BTreeMap<String, Series>) -> Result<Page, String> {
    let doc = Node::parse(xml)?;
    let result = doc.child("GetMetricDataResult").ok_or_else(|| {
        let snippet: String = xml.chars().take(200).collect();
        format!("not a GetMetricData answer: {snippet}")
    })?;
    for r in result
        .child("MetricDataResults")
        .map(|r| r.members().collect::<Vec<_>>())
        .unwrap_or_default()
    {
        let id = r.text_of("Id").to_string();
        let stamps: Vec<&Node> = r
            .child("Timestamps")
            .map(|t| t.members().collect())
            .unwrap_or_default();
        let values: Vec<&Node> = r
            .child("Values")
            .map(|t| t.members().collect())
            .unwrap_or_default();
        if stamps.len() != values.len() {
            return Err(format!(
                "result `{id}` has {} timestamps but {} values",
                stamps.len(),
                values.len()
            ));
        }
        let series = into.entry(id.clone()).or_default();
        series.label = r.text_of("Label").to_string();
        series.status = r.text_of("StatusCode").to_string();
        series.messages.extend(messages(r.child("Messages")));
        for (t, v) in stamps.iter().zip(values) {
            let ts = parse_iso8601(&t.text)
                .ok_or_else(|| format!("result `{id}`: `{}` is not a timestamp", t.text.trim()))?;
            let value: f64 = v
                .text
                .trim()
                .parse()
                .map_err(|_| format!("result `{id}`: `{}` is not a number", v.text.trim()))?;
            series.points.push((ts, value));
        }
    }
    let next_token = Some(result.text_of("NextToken").to_string()).filter(|t| !t.is_empty());
    Ok(Page {
        next_token,
        messages: messages(result.child("Messages")),
    })
}

/// The answer, mirroring the WIT `answer` variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Value(f64),
    Series(Vec<(u64, f64)>),
    NoData(String),
}

/// The check's value from the results of every page.
pub fn interpret(
    plan: &Plan,
    results: &BTreeMap<String, Series>,
    w: &Window,
    range: bool,
    notes: &[String],
) -> Result<Answer, String> {
    let get = |id: &str| {
        results
            .get(id)
            .ok_or_else(|| format!("CloudWatch answered no result for query `{id}`"))
    };
    for (id, s) in results {
        if s.status == "Forbidden" || s.status == "InternalError" {
            return Err(format!(
                "query `{id}` ended {}: {}",
                s.status,
                s.messages.join("; ")
            ));
        }
    }
    let mut points: Vec<(u64, f64)> = match &plan.compute {
        Compute::Returned { id, scale } => get(id)?
            .points
            .iter()
            .map(|&(t, v)| (t, v * scale))
            .collect(),
        Compute::SuccessRate { errors, requests } => {
            let errors: BTreeMap<u64, f64> = get(errors)?.points.iter().copied().collect();
            get(requests)?
                .points
                .iter()
                .filter(|(_, r)| *r > 0.0)
                .map(|&(t, r)| {
                    (
                        t,
                        100.0 - 100.0 * errors.get(&t).copied().unwrap_or(0.0) / r,
                    )
                })
                .collect()
        }
    };
    points.retain(|(_, v)| v.is_finite());
    points.sort_by_key(|(t, _)| *t);
    if points.is_empty() {
        let mut why = format!(
            "CloudWatch has no datapoints for {} between {} and {} (period {}s)",
            plan.what,
            iso8601(w.start_s),
            iso8601(w.end_s),
            w.period_s
        );
        let all: Vec<&String> = notes
            .iter()
            .chain(results.values().flat_map(|s| &s.messages))
            .collect();
        if !all.is_empty() {
            why.push_str(&format!(
                "; CloudWatch says: {}",
                all.iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join("; ")
            ));
        }
        return Ok(Answer::NoData(why));
    }
    Ok(if range {
        Answer::Series(points)
    } else {
        Answer::Value(points.last().unwrap().1)
    })
}

#[cfg(test)]
mod tests;
