//! Parameter building blocks shared by every strategy: Go-style durations (`"1m30s"`),
//! counts-or-percents (`3` or `"25%"`), score thresholds, and JSON parsing that names the
//! offending field.

use crate::types::Error;
use serde::{de, Deserialize, Deserializer, Serialize};

/// A duration written like Flagger / Argo write them: `"500ms"`, `"30s"`, `"1m30s"`, `"2h"`.
/// Stored in milliseconds. Bare numbers are refused: `30` could mean seconds or ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Duration(pub u64);

impl Duration {
    pub fn ms(self) -> u64 {
        self.0
    }
}

/// Parse a Go-style duration into milliseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty duration; write e.g. \"30s\" or \"1m\"".into());
    }
    if s == "0" {
        return Ok(0);
    }
    let mut total: f64 = 0.0;
    let mut rest = s;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(format!(
                "`{text}` is not a duration; write e.g. \"30s\", \"1m30s\", \"500ms\""
            ));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| format!("`{text}`: bad number `{}`", &rest[..num_len]))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let factor = match unit {
            "ms" => 1.0,
            "s" => 1_000.0,
            "m" => 60_000.0,
            "h" => 3_600_000.0,
            "" => return Err(format!("`{text}` lacks a unit; write e.g. \"{}s\"", value)),
            other => {
                return Err(format!(
                    "`{text}`: unknown unit `{other}` (use ms, s, m or h)"
                ))
            }
        };
        total += value * factor;
    }
    if total > u64::MAX as f64 / 2.0 {
        return Err(format!("`{text}` is too long"));
    }
    Ok(total.round() as u64)
}

/// Format milliseconds compactly for plans and notes: `90000` -> `1m30s`.
pub fn format_ms(ms: u64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    if !ms.is_multiple_of(1000) {
        return format!("{ms}ms");
    }
    let mut secs = ms / 1000;
    let mut out = String::new();
    let h = secs / 3600;
    secs %= 3600;
    let m = secs / 60;
    secs %= 60;
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if secs > 0 {
        out.push_str(&format!("{secs}s"));
    }
    out
}

impl<'de> Deserialize<'de> for Duration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match v {
            serde_json::Value::String(s) => {
                parse_duration(&s).map(Duration).map_err(de::Error::custom)
            }
            other => Err(de::Error::custom(format!(
                "expected a duration string such as \"30s\" or \"1m\", found `{other}`"
            ))),
        }
    }
}

/// A replica count or a percent of the desired replicas (`3` or `"25%"`), like Kubernetes'
/// `maxSurge` / `maxUnavailable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum IntOrPercent {
    Count(u32),
    Percent(u32),
}

impl IntOrPercent {
    /// Resolve against `total`; percents round up (surge) or down (unavailable) as in Kubernetes.
    pub fn resolve(self, total: u32, round_up: bool) -> u32 {
        match self {
            IntOrPercent::Count(n) => n,
            IntOrPercent::Percent(p) => {
                let x = total as u64 * p as u64;
                (if round_up { x.div_ceil(100) } else { x / 100 }) as u32
            }
        }
    }
}

impl<'de> Deserialize<'de> for IntOrPercent {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = serde_json::Value::deserialize(d)?;
        match &v {
            serde_json::Value::Number(n) => n
                .as_u64()
                .filter(|n| *n <= u32::MAX as u64)
                .map(|n| IntOrPercent::Count(n as u32))
                .ok_or_else(|| {
                    de::Error::custom(format!("expected a non-negative count, found {n}"))
                }),
            serde_json::Value::String(s) => s
                .trim()
                .strip_suffix('%')
                .and_then(|p| p.trim().parse::<u32>().ok())
                .filter(|p| *p <= 100)
                .map(IntOrPercent::Percent)
                .ok_or_else(|| {
                    de::Error::custom(format!(
                        "expected a count or a percent like \"25%\", found \"{s}\""
                    ))
                }),
            other => Err(de::Error::custom(format!(
                "expected a count or a percent like \"25%\", found `{other}`"
            ))),
        }
    }
}

/// Judge score thresholds (Kayenta's `pass` / `marginal`), used when `compareBaseline` is set:
/// score >= pass passes; marginal <= score < pass is inconclusive; below marginal fails.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScoreThresholds {
    #[serde(default = "default_pass")]
    pub pass: f64,
    #[serde(default = "default_marginal")]
    pub marginal: f64,
}

fn default_pass() -> f64 {
    95.0
}
fn default_marginal() -> f64 {
    75.0
}

impl Default for ScoreThresholds {
    fn default() -> Self {
        ScoreThresholds {
            pass: default_pass(),
            marginal: default_marginal(),
        }
    }
}

impl ScoreThresholds {
    pub fn check(&self) -> Result<(), Error> {
        if !(0.0..=100.0).contains(&self.marginal)
            || !(0.0..=100.0).contains(&self.pass)
            || self.marginal > self.pass
        {
            return Err(Error::InvalidConfig(format!(
                "scoreThresholds: need 0 <= marginal ({}) <= pass ({}) <= 100",
                self.marginal, self.pass
            )));
        }
        Ok(())
    }
}

/// Parse the params JSON into `T`; the error names the field path (serde's message says which).
pub fn parse_params<T: de::DeserializeOwned>(params: &str) -> Result<T, Error> {
    let text = if params.trim().is_empty() {
        "{}"
    } else {
        params
    };
    serde_json::from_str(text).map_err(|e| Error::InvalidConfig(format!("[strategy.params]: {e}")))
}

/// Serialise a state value into the opaque blob.
pub fn encode_state<T: Serialize>(state: &T) -> Vec<u8> {
    serde_json::to_vec(state).expect("strategy state serialises to JSON")
}

/// Read a state blob back.
pub fn decode_state<T: de::DeserializeOwned>(blob: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(blob).map_err(|e| {
        Error::InvalidInput(format!(
            "state blob is not this strategy's state ({e}); was the journal edited?"
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s"), Ok(30_000));
        assert_eq!(parse_duration("1m30s"), Ok(90_000));
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("2h"), Ok(7_200_000));
        assert_eq!(parse_duration("1.5s"), Ok(1_500));
        assert_eq!(parse_duration("0"), Ok(0));
        assert!(parse_duration("30").unwrap_err().contains("lacks a unit"));
        assert!(parse_duration("3d").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").is_err());
        assert!(parse_duration("s").is_err());
        assert_eq!(format_ms(90_000), "1m30s");
        assert_eq!(format_ms(1_500), "1500ms");
        let d: Result<Duration, _> = serde_json::from_str("30");
        assert!(d.unwrap_err().to_string().contains("duration string"));
    }

    #[test]
    fn int_or_percent() {
        let p: IntOrPercent = serde_json::from_str("\"25%\"").unwrap();
        assert_eq!(p.resolve(10, true), 3);
        assert_eq!(p.resolve(10, false), 2);
        let c: IntOrPercent = serde_json::from_str("2").unwrap();
        assert_eq!(c.resolve(10, true), 2);
        assert!(serde_json::from_str::<IntOrPercent>("\"120%\"").is_err());
        assert!(serde_json::from_str::<IntOrPercent>("-1").is_err());
    }
}
