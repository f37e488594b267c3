//! # ab-test: route matching requests to the new version, analyze, then promote or roll back
//!
//! Params (`[strategy.params]`, after Flagger's A/B testing):
//!
//! | param | default | meaning |
//! |---|---|---|
//! | `match` | required | conditions; a request goes to the candidate when it matches **all** of them |
//! | `interval` | `"1m"` | length of each analysis |
//! | `iterations` | `10` | passing analyses needed before promotion |
//! | `threshold` | `5` | rolls back when `failedChecks >= threshold` (Flagger's `>=`) |
//! | `canaryReadyThreshold` / `primaryReadyThreshold`, `progressDeadline` | `100`, `100`, `"10m"` | readiness |
//! | `compareBaseline`, `scoreThresholds`, `pauseOnInconclusive` | as in `canary` | statistical judge |
//!
//! A condition is written any of these ways:
//! `{header = "x-canary", exact = "insider"}`, `{cookie = "canary", regex = "^always$"}`,
//! `{source = "header", name = "user-agent", prefix = "Mozilla"}`, or Flagger's
//! `{headers = {x-canary = {exact = "insider"}}}`; the operator is one of `exact`, `prefix`,
//! `suffix`, `regex` (RE2 syntax, checked by the target).
//!
//! Flow: `confirm-rollout` gate → deploy candidate → readiness → `pre-rollout` hooks →
//! `confirm-traffic-increase` gate → route matching requests (weight 0 for the rest) →
//! `iterations` × (wait interval, analyze) → `confirm-promotion` gate → promote →
//! `post-rollout` hooks. Plan: best `interval × iterations`, rollback `interval × threshold`.

use serde::Deserialize;
use serde_json::Value;
use strategy_kit::machine::{Config, Ctx, HookFailure, Op, Spec};
use strategy_kit::params::{parse_params, Duration, ScoreThresholds};
use strategy_kit::types::{Error, HookPhase, MatchSource, RequestMatch, StringMatch, TrafficSplit};

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawParams {
    #[serde(rename = "match", default)]
    pub matches: Vec<Value>,
    #[serde(default = "default_interval")]
    pub interval: Duration,
    #[serde(default = "ten")]
    pub iterations: u32,
    #[serde(default = "five")]
    pub threshold: u32,
    #[serde(default = "hundred")]
    pub primary_ready_threshold: u8,
    #[serde(default = "hundred")]
    pub canary_ready_threshold: u8,
    pub progress_deadline: Option<Duration>,
    #[serde(default)]
    pub pause_on_inconclusive: bool,
    #[serde(default)]
    pub compare_baseline: bool,
    #[serde(default)]
    pub score_thresholds: ScoreThresholds,
}

fn default_interval() -> Duration {
    Duration(60_000)
}
fn ten() -> u32 {
    10
}
fn five() -> u32 {
    5
}
fn hundred() -> u8 {
    100
}

/// Parsed params: the raw ones plus the conditions in contract form.
#[derive(Debug, Clone)]
pub struct Params {
    pub raw: RawParams,
    pub matches: Vec<RequestMatch>,
}

const OPS: [&str; 4] = ["exact", "prefix", "suffix", "regex"];

fn string_match(obj: &serde_json::Map<String, Value>, at: &str) -> Result<StringMatch, Error> {
    let found: Vec<&str> = OPS
        .iter()
        .copied()
        .filter(|k| obj.contains_key(*k))
        .collect();
    let [op] = found.as_slice() else {
        return Err(Error::InvalidConfig(format!(
            "{at}: give exactly one of exact, prefix, suffix, regex"
        )));
    };
    let value = obj[*op]
        .as_str()
        .ok_or_else(|| Error::InvalidConfig(format!("{at}.{op}: must be a string")))?
        .to_string();
    if *op == "regex" && value.is_empty() {
        return Err(Error::InvalidConfig(format!("{at}.regex: empty pattern")));
    }
    Ok(match *op {
        "exact" => StringMatch::Exact(value),
        "prefix" => StringMatch::Prefix(value),
        "suffix" => StringMatch::Suffix(value),
        _ => StringMatch::Regex(value),
    })
}

/// Turn one `match` entry into one or more conditions.
pub fn parse_condition(entry: &Value, at: &str) -> Result<Vec<RequestMatch>, Error> {
    let obj = entry.as_object().ok_or_else(|| {
        Error::InvalidConfig(format!(
            "{at}: must be a table like {{header = \"x-canary\", exact = \"insider\"}}"
        ))
    })?;
    let name_of = |v: &Value, what: &str| -> Result<String, Error> {
        match v.as_str() {
            Some(s) if !s.is_empty() => Ok(s.to_string()),
            _ => Err(Error::InvalidConfig(format!(
                "{at}.{what}: must be a non-empty name"
            ))),
        }
    };
    let allowed = |extra: &[&str]| -> Result<(), Error> {
        for k in obj.keys() {
            if !OPS.contains(&k.as_str()) && !extra.contains(&k.as_str()) {
                return Err(Error::InvalidConfig(format!("{at}: unknown key `{k}`")));
            }
        }
        Ok(())
    };
    if let Some(headers) = obj.get("headers") {
        allowed(&["headers"])?;
        let map = headers
            .as_object()
            .ok_or_else(|| Error::InvalidConfig(format!("{at}.headers: must be a table")))?;
        return map
            .iter()
            .map(|(name, m)| {
                let mo = m.as_object().ok_or_else(|| {
                    Error::InvalidConfig(format!(
                        "{at}.headers.{name}: must be a table like {{exact = \"v\"}}"
                    ))
                })?;
                Ok(RequestMatch {
                    source: MatchSource::Header,
                    name: name.clone(),
                    value: string_match(mo, &format!("{at}.headers.{name}"))?,
                })
            })
            .collect();
    }
    let (source, name) = if let Some(h) = obj.get("header") {
        allowed(&["header"])?;
        (MatchSource::Header, name_of(h, "header")?)
    } else if let Some(c) = obj.get("cookie") {
        allowed(&["cookie"])?;
        (MatchSource::Cookie, name_of(c, "cookie")?)
    } else if let Some(s) = obj.get("source") {
        allowed(&["source", "name"])?;
        let source = match s.as_str() {
            Some("header") => MatchSource::Header,
            Some("cookie") => MatchSource::Cookie,
            _ => {
                return Err(Error::InvalidConfig(format!(
                    "{at}.source: must be \"header\" or \"cookie\""
                )))
            }
        };
        (
            source,
            name_of(obj.get("name").unwrap_or(&Value::Null), "name")?,
        )
    } else {
        return Err(Error::InvalidConfig(format!(
            "{at}: name what to match with `header = \"NAME\"` or `cookie = \"NAME\"`"
        )));
    };
    Ok(vec![RequestMatch {
        source,
        name,
        value: string_match(obj, at)?,
    }])
}

pub struct AbTest;

impl Spec for AbTest {
    type Params = Params;

    fn parse(params: &str) -> Result<Params, Error> {
        let raw: RawParams = parse_params(params)?;
        let bad = |m: &str| Err(Error::InvalidConfig(m.to_string()));
        if raw.matches.is_empty() {
            return bad(
                "match: required; e.g. match = [{header = \"x-canary\", exact = \"insider\"}]",
            );
        }
        if raw.threshold == 0 {
            return bad("threshold: must be at least 1 (rollback when failedChecks >= threshold)");
        }
        if raw.iterations == 0 {
            return bad("iterations: must be at least 1");
        }
        if raw.interval.ms() == 0 {
            return bad("interval: must be longer than 0s");
        }
        if raw.primary_ready_threshold > 100 || raw.canary_ready_threshold > 100 {
            return bad("primaryReadyThreshold / canaryReadyThreshold: percent, 0..=100");
        }
        raw.score_thresholds.check()?;
        let mut matches = Vec::new();
        for (i, m) in raw.matches.iter().enumerate() {
            matches.extend(parse_condition(m, &format!("match[{i}]"))?);
        }
        Ok(Params { raw, matches })
    }

    fn config(p: &Params) -> Config {
        Config {
            threshold: p.raw.threshold,
            retry_ms: p.raw.interval.ms(),
            poll_ms: 2_000.min(p.raw.interval.ms()),
            deadline_ms: Some(p.raw.progress_deadline.map(|d| d.ms()).unwrap_or(600_000)),
            compare_baseline: p.raw.compare_baseline,
            scores: p.raw.score_thresholds,
            pause_on_inconclusive: p.raw.pause_on_inconclusive,
        }
    }

    fn program(p: &Params, _ctx: &Ctx) -> Vec<Op> {
        let r = &p.raw;
        let interval = r.interval.ms();
        let mut ops = strategy_kit::machine::rollout_preamble(
            r.canary_ready_threshold,
            r.primary_ready_threshold,
        );
        ops.extend([
            Op::Hook {
                phase: HookPhase::ConfirmTrafficIncrease,
                on_fail: HookFailure::Gate,
            },
            Op::SetTraffic(TrafficSplit {
                candidate_weight: 0,
                matches: p.matches.clone(),
                mirror_percent: 0,
            }),
        ]);
        for i in 1..=r.iterations {
            ops.push(Op::Analysis {
                wait_ms: interval,
                window_ms: interval,
                label: format!("iteration {i}/{}", r.iterations),
            });
        }
        ops.push(Op::Hook {
            phase: HookPhase::ConfirmPromotion,
            on_fail: HookFailure::Gate,
        });
        ops.push(Op::Promote);
        ops.push(Op::Hook {
            phase: HookPhase::PostRollout,
            on_fail: HookFailure::Ignore,
        });
        ops
    }
}

pub const SCHEMA: &str = r#"{"$schema":"https://json-schema.org/draft/2020-12/schema","type":"object","additionalProperties":false,"required":["match"],"properties":{"match":{"type":"array","minItems":1,"items":{"type":"object"}},"interval":{"type":"string"},"iterations":{"type":"integer","minimum":1},"threshold":{"type":"integer","minimum":1},"primaryReadyThreshold":{"type":"integer"},"canaryReadyThreshold":{"type":"integer"},"progressDeadline":{"type":"string"},"pauseOnInconclusive":{"type":"boolean"},"compareBaseline":{"type":"boolean"},"scoreThresholds":{"type":"object"}}}"#;

strategy_kit::strategy_plugin!(AbTest, "ab-test", "A/B testing: route requests matching headers or cookies to the new version, analyze, promote or roll back", SCHEMA);

#[cfg(test)]
mod tests;
