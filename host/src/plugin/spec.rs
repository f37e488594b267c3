//! How an operator declares a plugin in TOML: where it comes from, its pinned digest,
//! and everything it is allowed to do. Deny by default: an empty grant table grants nothing.

use serde::{Deserialize, Serialize};
use std::time::Duration;

/// One `[plugins.NAME]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// `builtin:NAME`, a path to a `.wasm` file (relative to the TOML file), or an
    /// `https://` URL (see [`super::source`] for the rules a URL must follow).
    pub source: String,
    /// Pinned sha256 of the `.wasm` (hex). Required for URLs; checked whenever given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<String>,
    /// Allow a plain `http://` source (refused by default: anyone on the network path can
    /// read and alter it). The `sha256` pin is required and checked all the same.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_insecure_http: bool,
    /// The plugin's own config table, passed to it as JSON.
    #[serde(default = "empty_table")]
    pub config: toml::Value,
    #[serde(default)]
    pub grants: Grants,
    #[serde(default)]
    pub limits: Limits,
}

fn empty_table() -> toml::Value {
    toml::Value::Table(Default::default())
}

pub use super::capabilities::fs::{DirGrant, DEFAULT_DIR_QUOTA_MIB};
pub use super::capabilities::http::HttpAuth;
pub use super::capabilities::Grants;

/// Resource limits for one plugin instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// CPU time per call, e.g. `"5s"`, `"500ms"`: counted in epoch ticks in which the
    /// plugin's code runs (time blocked in the host does not count).
    #[serde(with = "duration_str")]
    pub call_timeout: Duration,
    /// Wall-clock time per call, whatever the plugin waits on (sleeps, clocks, HTTP).
    /// Default: twice `call_timeout`.
    #[serde(with = "duration_str::option", skip_serializing_if = "Option::is_none")]
    pub wall_timeout: Option<Duration>,
    /// Memory cap in MiB for one plugin instance: all its linear memories and tables together.
    pub memory_mib: u64,
    /// Largest value a call may hand back, in KiB: answers, describe(), config problems,
    /// strategy state (its raw bytes).
    pub max_output_kib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_secs(5),
            wall_timeout: None,
            memory_mib: 64,
            max_output_kib: 1024,
        }
    }
}

impl Limits {
    /// The wall-clock deadline of one call: `wall_timeout`, or twice `call_timeout`.
    pub fn wall_timeout(&self) -> Duration {
        self.wall_timeout.unwrap_or(self.call_timeout * 2)
    }

    /// `max_output_kib` in bytes.
    pub fn max_output_bytes(&self) -> usize {
        (self.max_output_kib as usize).saturating_mul(1024)
    }
}

/// `"5s"`, `"250ms"`, `"2m"`, `"1h"`, `"1m30s"` durations, as Flagger/Argo users write them.
pub mod duration_str {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format(*d))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        parse(&text).map_err(serde::de::Error::custom)
    }

    /// The longest duration [`parse`] accepts (`u64::MAX` milliseconds), as written in errors.
    const MAX_DURATION_TEXT: &str = "18446744073709551615ms (about 584 million years)";
    /// The same for an optional duration (`None` when the key is absent).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use std::time::Duration;

        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            let text = String::deserialize(d)?;
            super::parse(&text)
                .map(Some)
                .map_err(serde::de::Error::custom)
        }
    }

    /// Parse a duration such as `1m30s`.
    pub fn parse(text: &str) -> Result<Duration, String> {
        let t = text.trim();
        if t.is_empty() {
            return Err("empty duration: write e.g. \"30s\", \"500ms\" or \"2m\"".into());
        }
        let mut total_ms: u128 = 0;
        let mut rest = t;
        while !rest.is_empty() {
            let digits = rest
                .find(|c: char| !c.is_ascii_digit())
                .unwrap_or(rest.len());
            if digits == 0 {
                return Err(format!(
                    "invalid duration `{text}`: write e.g. \"30s\", \"500ms\" or \"2m\""
                ));
            }
            let n: u128 = rest[..digits]
                .parse()
                .map_err(|_| format!("invalid duration `{text}`"))?;
            rest = &rest[digits..];
            let unit_len = rest
                .find(|c: char| c.is_ascii_digit())
                .unwrap_or(rest.len());
            let factor = match &rest[..unit_len] {
                "ms" => 1,
                "s" => 1_000,
                "m" => 60_000,
                "h" => 3_600_000,
                "" => {
                    return Err(format!(
                        "invalid duration `{text}`: missing unit (ms, s, m or h)"
                    ))
                }
                u => {
                    return Err(format!(
                        "invalid duration `{text}`: unknown unit `{u}` (use ms, s, m or h)"
                    ))
                }
            };
            // Checked: a 39-digit number times a unit overflowed u128 (a panic in debug
            // builds), and a total above u64::MAX ms was silently truncated (`as u64`), so
            // "18446744073709551616ms" meant 0 ms. Found by tests/fuzz.
            total_ms = n
                .checked_mul(factor)
                .and_then(|ms| total_ms.checked_add(ms))
                .filter(|ms| *ms <= u64::MAX as u128)
                .ok_or_else(|| {
                    format!("duration `{text}` is too long: write at most {MAX_DURATION_TEXT}")
                })?;
            rest = &rest[unit_len..];
        }
        Ok(Duration::from_millis(total_ms as u64))
    }

    /// Format a duration the shortest way it round-trips through [`parse`].
    pub fn format(d: Duration) -> String {
        let ms = d.as_millis();
        if ms == 0 {
            "0s".into()
        } else if ms.is_multiple_of(3_600_000) {
            format!("{}h", ms / 3_600_000)
        } else if ms.is_multiple_of(60_000) {
            format!("{}m", ms / 60_000)
        } else if ms.is_multiple_of(1_000) {
            format!("{}s", ms / 1_000)
        } else {
            format!("{ms}ms")
        }
    }

    #[cfg(test)]
    mod tests {
        use super::*;
        #[test]
        fn parses_compound_durations() {
            assert_eq!(parse("1m30s").unwrap(), Duration::from_secs(90));
            assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
            assert!(parse("5").unwrap_err().contains("missing unit"));
            assert!(parse("5d").unwrap_err().contains("unknown unit"));
            assert_eq!(format(Duration::from_secs(120)), "2m");
        }

        #[test]
        fn refuses_durations_that_overflow_instead_of_panicking_or_wrapping() {
            // Regressions found by tests/fuzz: overflowed u128 (panic) / truncated to 0 ms.
            let huge = format!("{}h", u128::MAX);
            assert!(parse(&huge).unwrap_err().contains("too long"), "{huge}");
            assert!(parse("18446744073709551616ms")
                .unwrap_err()
                .contains("too long"));
            assert_eq!(
                parse("18446744073709551615ms").unwrap(),
                Duration::from_millis(u64::MAX)
            );
        }
    }
}
