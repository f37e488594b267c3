//! How an operator declares a plugin in TOML: where it comes from, its pinned digest,
//! and everything it is allowed to do. Deny by default: an empty grant table grants nothing.

use serde::{Deserialize, Serialize};
use std::path::PathBuf;
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

/// Capabilities granted to one plugin. Everything absent is denied.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    /// Outbound HTTP destinations as `scheme://host:port`; `*` wildcards allowed in the
    /// host (`https://*.example.com:443`). Checked on every request.
    #[serde(default)]
    pub http: Vec<String>,
    /// Host directories visible to the plugin.
    #[serde(default)]
    pub dirs: Vec<DirGrant>,
    /// Credentials the host adds to requests for a granted HTTP destination, so the plugin
    /// never sees them.
    #[serde(default)]
    pub http_auth: Vec<HttpAuth>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Directory on the host (relative paths are resolved against the TOML file's folder).
    pub host: PathBuf,
    /// Where the plugin sees it, e.g. `/reports`. Defaults to the host path's last component
    /// under `/`.
    #[serde(default)]
    pub guest: Option<String>,
    /// Read-only unless set.
    #[serde(default)]
    pub writable: bool,
}

/// A credential the host injects into requests to `destination`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpAuth {
    /// `scheme://host:port`, exactly as in `grants.http`.
    pub destination: String,
    #[serde(default)]
    pub bearer_token: Option<String>,
    #[serde(default)]
    pub basic_user: Option<String>,
    #[serde(default)]
    pub basic_password: Option<String>,
}

/// Resource limits for one plugin instance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// CPU deadline per call, e.g. `"5s"`, `"500ms"`.
    #[serde(with = "duration_str")]
    pub call_timeout: Duration,
    /// Linear memory cap in MiB.
    pub memory_mib: u64,
    /// Largest answer (strings, lists) a call may return, in KiB.
    pub max_output_kib: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            call_timeout: Duration::from_secs(5),
            memory_mib: 64,
            max_output_kib: 1024,
        }
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
            total_ms += n * factor;
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
    }
}
