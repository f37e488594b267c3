//! Everything except the I/O: templating, the built-in checks, request URLs and parsing
//! Prometheus' HTTP API answers. Unit-tested natively.

use serde::Deserialize;

/// The candidate's success rate in percent: non-5xx responses over all responses
/// (Flagger's `request-success-rate`, over the local proxy's metric names).
pub const SUCCESS_RATE: &str = r#"100 * sum(rate(dax_proxy_requests_total{app="{{app}}", slot="{{slot}}", status_class!="5xx"}[{{interval}}])) / sum(rate(dax_proxy_requests_total{app="{{app}}", slot="{{slot}}"}[{{interval}}]))"#;

/// The candidate's p99 latency in milliseconds (Flagger's `request-duration`).
pub const DURATION_P99: &str = r#"1000 * histogram_quantile(0.99, sum by (le) (rate(dax_proxy_request_duration_seconds_bucket{app="{{app}}", slot="{{slot}}"}[{{interval}}])))"#;

/// What went wrong, sorted by what the operator should do about it.
#[derive(Debug, Clone, PartialEq)]
pub enum PromError {
    /// The query itself is wrong (PromQL error, unknown template variable, ambiguous result).
    Query(String),
    /// Prometheus could not answer now (unreachable, timeout, 5xx).
    Unavailable(String),
    /// The request was refused by the host's sandbox: a config problem.
    Config(String),
}

/// The answer, mirroring the WIT `answer` variant.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    Value(f64),
    Series(Vec<(u64, f64)>),
    NoData(String),
}

/// Prometheus duration for a window: `30s`, `1500ms`, `5m`.
pub fn prom_duration(ms: u64) -> String {
    if ms == 0 {
        "1m".into()
    } else if ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1000) {
        format!("{}s", ms / 1000)
    } else {
        format!("{ms}ms")
    }
}

/// Expand a built-in check name into PromQL, or return the text unchanged.
pub fn builtin(text: &str) -> &str {
    match text.trim() {
        "request-success-rate" => SUCCESS_RATE,
        "request-duration" => DURATION_P99,
        _ => text,
    }
}

/// Substitute `{{name}}` / `{{ name }}` from `vars`, with defaults for the built-ins
/// (`slot = candidate`, `interval` from the window). An unknown variable is an error naming it.
pub fn render(text: &str, vars: &[(String, String)], window_ms: u64) -> Result<String, PromError> {
    let lookup = |name: &str| -> Option<String> {
        vars.iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
            .or_else(|| match name {
                "slot" => Some("candidate".into()),
                "interval" => Some(prom_duration(window_ms)),
                _ => None,
            })
    };
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| PromError::Query(format!("unclosed `{{{{` in query `{text}`")))?;
        let name = after[..end].trim();
        let value = lookup(name).ok_or_else(|| {
            let known: Vec<&str> = vars.iter().map(|(k, _)| k.as_str()).collect();
            PromError::Query(format!(
                "unknown template variable `{{{{{name}}}}}` in query `{text}` (known: {}, slot, interval)",
                known.join(", ")
            ))
        })?;
        // Values end up inside PromQL string literals: keep quotes and backslashes inert.
        out.push_str(&value.replace('\\', "\\\\").replace('"', "\\\""));
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Percent-encode a query parameter value.
pub fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn seconds(ms: u64) -> String {
    format!("{}.{:03}", ms / 1000, ms % 1000)
}

/// URL of an instant query evaluated at `now_ms`.
pub fn instant_url(address: &str, promql: &str, now_ms: u64) -> String {
    format!(
        "{}/api/v1/query?query={}&time={}",
        address.trim_end_matches('/'),
        encode(promql),
        seconds(now_ms)
    )
}

/// URL of a range query over `[now - window, now]`; a `step_ms` of 0 picks ~60 points (at least 1s).
pub fn range_url(address: &str, promql: &str, now_ms: u64, window_ms: u64, step_ms: u64) -> String {
    let window = if window_ms == 0 { 60_000 } else { window_ms };
    let step = if step_ms == 0 {
        (window / 60).max(1000)
    } else {
        step_ms
    };
    format!(
        "{}/api/v1/query_range?query={}&start={}&end={}&step={}",
        address.trim_end_matches('/'),
        encode(promql),
        seconds(now_ms.saturating_sub(window)),
        seconds(now_ms),
        seconds(step)
    )
}

#[derive(Debug, Deserialize)]
struct ApiResponse {
    status: String,
    #[serde(default)]
    data: Option<ApiData>,
    #[serde(rename = "errorType", default)]
    error_type: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ApiData {
    result_type: String,
    result: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct InstantSeries {
    #[serde(default)]
    metric: serde_json::Map<String, serde_json::Value>,
    value: (f64, String),
}

#[derive(Debug, Deserialize)]
struct RangeSeries {
    #[serde(default)]
    metric: serde_json::Map<String, serde_json::Value>,
    values: Vec<(f64, String)>,
}

fn parse_value(s: &str) -> f64 {
    // Prometheus writes NaN, +Inf, -Inf as strings; Rust's parser reads "NaN" and "inf".
    match s {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        other => other.parse().unwrap_or(f64::NAN),
    }
}

fn labels(m: &serde_json::Map<String, serde_json::Value>) -> String {
    let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", inner.join(", "))
}

/// Interpret an HTTP answer of `/api/v1/query` or `/api/v1/query_range`.
pub fn interpret(status: u16, body: &str, promql: &str, range: bool) -> Result<Answer, PromError> {
    let parsed: ApiResponse = match serde_json::from_str(body) {
        Ok(p) => p,
        Err(_) => {
            let snippet: String = body.chars().take(200).collect();
            return Err(if status >= 500 || status == 0 {
                PromError::Unavailable(format!("Prometheus answered HTTP {status}: {snippet}"))
            } else {
                PromError::Unavailable(format!(
                    "not a Prometheus API answer (HTTP {status}): {snippet}; check that `address` points at a Prometheus server"
                ))
            });
        }
    };
    if parsed.status != "success" {
        let kind = parsed.error_type.unwrap_or_else(|| "error".into());
        let msg = parsed.error.unwrap_or_default();
        return Err(match kind.as_str() {
            "bad_data" | "execution" => {
                PromError::Query(format!("PromQL {kind}: {msg} (query: `{promql}`)"))
            }
            _ => PromError::Unavailable(format!(
                "Prometheus {kind} (HTTP {status}): {msg} (query: `{promql}`)"
            )),
        });
    }
    let data = parsed
        .data
        .ok_or_else(|| PromError::Unavailable("Prometheus answered success without data".into()))?;
    match (data.result_type.as_str(), range) {
        ("scalar", _) => {
            let (_, v): (f64, String) = serde_json::from_value(data.result)
                .map_err(|e| PromError::Unavailable(format!("malformed scalar result: {e}")))?;
            let v = parse_value(&v);
            Ok(if v.is_nan() {
                Answer::NoData(format!("`{promql}` evaluated to NaN"))
            } else {
                Answer::Value(v)
            })
        }
        ("vector", false) => {
            let series: Vec<InstantSeries> = serde_json::from_value(data.result)
                .map_err(|e| PromError::Unavailable(format!("malformed vector result: {e}")))?;
            match series.as_slice() {
                [] => Ok(Answer::NoData(format!("`{promql}` returned no series"))),
                [one] => {
                    let v = parse_value(&one.value.1);
                    Ok(if v.is_nan() {
                        Answer::NoData(format!(
                            "`{promql}` evaluated to NaN (no requests in the window?)"
                        ))
                    } else {
                        Answer::Value(v)
                    })
                }
                many => Err(PromError::Query(format!(
                    "`{promql}` returned {} series ({} ...); a check needs one value: aggregate it, e.g. sum(...)",
                    many.len(),
                    labels(&many[0].metric)
                ))),
            }
        }
        ("matrix", true) => {
            let series: Vec<RangeSeries> = serde_json::from_value(data.result)
                .map_err(|e| PromError::Unavailable(format!("malformed matrix result: {e}")))?;
            match series.as_slice() {
                [] => Ok(Answer::NoData(format!("`{promql}` returned no series over the window"))),
                [one] => {
                    let samples: Vec<(u64, f64)> = one
                        .values
                        .iter()
                        .map(|(t, v)| ((t * 1000.0).round() as u64, parse_value(v)))
                        .filter(|(_, v)| !v.is_nan())
                        .collect();
                    Ok(if samples.is_empty() {
                        Answer::NoData(format!("`{promql}` was NaN over the whole window"))
                    } else {
                        Answer::Series(samples)
                    })
                }
                many => Err(PromError::Query(format!(
                    "`{promql}` returned {} series ({} ...); a check needs one series: aggregate it, e.g. sum(...)",
                    many.len(),
                    labels(&many[0].metric)
                ))),
            }
        }
        ("matrix", false) => Err(PromError::Query(format!(
            "`{promql}` is a range vector; use `kind = \"range\"` or wrap it in a function such as rate(...)"
        ))),
        (other, _) => Err(PromError::Query(format!(
            "`{promql}` returned a {other} result, which is not a number"
        ))),
    }
}

#[cfg(test)]
mod tests;
