//! `${env:VAR}` and `${file:path}` interpolation, and redaction of the values it produced.
//!
//! Every value that came from the environment or a file is treated as a secret: it is
//! registered here and replaced by `***` wherever the host writes text for people or disk
//! (logs, journals, `--output json`, notifications). Journals store the raw, uninterpolated
//! file so `dax resume` re-reads secrets from the environment instead of from disk.

use std::borrow::Cow;
use std::path::Path;
use std::sync::{OnceLock, RwLock};

/// Shortest value that is redacted; shorter ones would mangle unrelated text (`"1"`).
const MIN_SECRET_LEN: usize = 3;

fn registry() -> &'static RwLock<Vec<String>> {
    static SECRETS: OnceLock<RwLock<Vec<String>>> = OnceLock::new();
    SECRETS.get_or_init(|| RwLock::new(Vec::new()))
}

/// Remember `value` as a secret for the rest of the process.
pub fn register(value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let mut all = registry().write().unwrap_or_else(|e| e.into_inner());
    if !all.iter().any(|s| s == value) {
        all.push(value.to_string());
        // Longest first, so a secret containing another is replaced whole.
        all.sort_by_key(|s| std::cmp::Reverse(s.len()));
    }
}

/// Whether any secret is registered (lets hot paths skip redaction work).
pub fn any() -> bool {
    !registry()
        .read()
        .unwrap_or_else(|e| e.into_inner())
        .is_empty()
}

/// Replace every registered secret in `text` by `***`.
pub fn redact(text: &str) -> Cow<'_, str> {
    let all = registry().read().unwrap_or_else(|e| e.into_inner());
    if all.is_empty() || !all.iter().any(|s| text.contains(s.as_str())) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for s in all.iter() {
        out = out.replace(s.as_str(), "***");
    }
    Cow::Owned(out)
}

/// Redact every string inside a JSON value.
pub fn redact_json(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::String(s) => {
            if let Cow::Owned(r) = redact(s) {
                *s = r;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact_json),
        serde_json::Value::Object(map) => map.values_mut().for_each(redact_json),
        _ => {}
    }
}

/// Substitute `${env:VAR}` and `${file:path}` in `text`. `None` if there is nothing to do.
/// Relative file paths are resolved against `base_dir`. Substituted values are registered
/// as secrets.
pub fn interpolate(text: &str, base_dir: &Path) -> Result<Option<String>, String> {
    if !text.contains("${") {
        return Ok(None);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unterminated `${{` in `{}`", redact(text)))?;
        let expr = &after[..end];
        let value = if let Some(var) = expr.strip_prefix("env:") {
            std::env::var(var).map_err(|_| {
                format!("environment variable `{var}` is not set (referenced as `${{env:{var}}}`)")
            })?
        } else if let Some(file) = expr.strip_prefix("file:") {
            let path = base_dir.join(file);
            let content = std::fs::read_to_string(&path).map_err(|e| {
                format!(
                    "cannot read `{}` (referenced as `${{file:{file}}}`): {e}",
                    path.display()
                )
            })?;
            content.trim_end_matches(['\n', '\r']).to_string()
        } else {
            return Err(format!(
                "unknown interpolation `${{{expr}}}`: write `${{env:VAR}}` or `${{file:path}}`"
            ));
        };
        register(&value);
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpolates_env_and_file_and_redacts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("tok"), "file-secret-123\n").unwrap();
        std::env::set_var("DAX_TEST_SECRET_XYZ", "env-secret-456");
        let got = interpolate("a ${env:DAX_TEST_SECRET_XYZ} b ${file:tok}", dir.path())
            .unwrap()
            .unwrap();
        assert_eq!(got, "a env-secret-456 b file-secret-123");
        assert_eq!(redact(&got), "a *** b ***");
        assert!(interpolate("${env:DAX_NOPE_NOT_SET}", dir.path())
            .unwrap_err()
            .contains("DAX_NOPE_NOT_SET"));
        assert!(interpolate("${vault:x}", dir.path())
            .unwrap_err()
            .contains("unknown interpolation"));
        assert_eq!(interpolate("plain", dir.path()).unwrap(), None);
    }
}
