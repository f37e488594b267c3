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
///
/// Its escaped forms are remembered too: a secret in a value of the wrong type comes back in
/// serde's message as `invalid type: string "..."`, Rust-escaped, so a multi-line key or a
/// password with a quote or backslash went through redaction whole (found by tests/fuzz);
/// and a plugin that echoes a secret from its config in an error (`` `...` is not a
/// duration ``) is shown with its control characters escaped ([`log::escape`]), which is
/// neither form (also found by tests/fuzz).
///
/// [`log::escape`]: crate::plugin::capabilities::log::escape
pub fn register(value: &str) {
    if value.len() < MIN_SECRET_LEN {
        return;
    }
    let debug = format!("{value:?}");
    let rust_escaped = &debug[1..debug.len() - 1];
    let as_shown = crate::plugin::capabilities::log::escape(value);
    let mut all = registry().write().unwrap_or_else(|e| e.into_inner());
    for form in [value, rust_escaped, &as_shown] {
        if !all.iter().any(|s| s == form) {
            all.push(form.to_string());
        }
    }
    // Longest first, so a secret containing another is replaced whole.
    all.sort_by_key(|s| std::cmp::Reverse(s.len()));
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

/// Largest file `${file:..}` reads: a secret is a token or a password, not a data set.
pub const MAX_SECRET_FILE_BYTES: u64 = 1024 * 1024;

/// Read a `${file:..}` secret: a regular file of at most [`MAX_SECRET_FILE_BYTES`].
/// `${file:/dev/zero}` used to grow `dax validate` until it ran out of memory and
/// `${file:some-fifo}` (or `/dev/stdin`) blocked it forever (found by tests/fuzz): the type is
/// checked before opening (opening a FIFO blocks) and the read is bounded.
fn read_secret_file(path: &Path) -> std::io::Result<String> {
    use std::io::Read;
    let meta = std::fs::metadata(path)?;
    if !meta.is_file() {
        return Err(std::io::Error::other(
            "not a regular file (a directory, device, FIFO or socket)",
        ));
    }
    let mut text = String::new();
    std::fs::File::open(path)?
        .take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_string(&mut text)?;
    if text.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {} KiB: a secret file holds one value",
            MAX_SECRET_FILE_BYTES / 1024
        )));
    }
    Ok(text)
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
            let content = read_secret_file(&path).map_err(|e| {
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

    #[test]
    fn escaped_secrets_are_redacted_too() {
        // Regression found by tests/fuzz: serde quotes a mistyped value Rust-escaped.
        let secret = "pw \"quoted\" back\\slash\nsecond-line";
        register(secret);
        let message = format!("invalid type: string {secret:?}, expected f64");
        assert_eq!(
            redact(&message),
            "invalid type: string \"***\", expected f64"
        );
    }

    #[test]
    fn a_secret_echoed_by_a_plugin_is_redacted_as_shown() {
        // Regression found by tests/fuzz: a plugin's "`$VALUE}` is not a duration" is shown
        // with control characters escaped, which neither the raw nor the Rust form matched.
        let secret = "shown \"quoted\" back\\slash\nline2\tTAB";
        register(secret);
        let from_plugin = format!("`${secret}}}` is not a duration");
        let shown = crate::plugin::capabilities::log::escape(&from_plugin);
        assert_eq!(redact(&shown), "`$***}` is not a duration");
    }

    #[test]
    fn file_secrets_must_be_small_regular_files() {
        // Regressions found by tests/fuzz: /dev/zero never ended, a FIFO blocked forever.
        let dir = tempfile::tempdir().unwrap();
        let err = interpolate("${file:/dev/zero}", dir.path()).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        let fifo = dir.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let err = interpolate("${file:fifo}", dir.path()).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        let err = interpolate("${file:.}", dir.path()).unwrap_err();
        assert!(err.contains("not a regular file"), "{err}");
        std::fs::write(dir.path().join("big"), vec![b'x'; 1024 * 1024 + 1]).unwrap();
        let err = interpolate("${file:big}", dir.path()).unwrap_err();
        assert!(err.contains("larger than 1024 KiB"), "{err}");
    }
}
