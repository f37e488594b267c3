//! Where a plugin's bytes come from — `builtin:NAME`, a local `.wasm` path or a URL — and
//! the rules that keep a downloaded plugin as trustworthy as a file the operator reviewed:
//!
//! - a URL source must pin `sha256` (checked by `dax validate` and before every download;
//!   the digest itself is compared after loading, like every pin);
//! - an `oci://` reference ([`super::oci`]) follows the same rules as a URL: pinned by the
//!   sha256 of its `.wasm` layer, plain-http registries only with `allow_insecure_http`,
//!   the same bounds;
//! - plain `http://` is refused unless the plugin's table says `allow_insecure_http = true`,
//!   and an `https://` download may not be redirected to `http://`;
//! - a download is bounded in size ([`DownloadLimits::max_bytes`], 64 MiB) and in time
//!   ([`DownloadLimits::timeout`], 60 s), so a hostile server can neither fill memory nor
//!   hang `dax`.

use super::builtin;
use super::cache::CompileCache;
use super::spec::PluginSpec;
use sha2::{Digest as _, Sha256};
use std::borrow::Cow;
use std::io::Read as _;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Bounds on downloading a plugin from a URL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DownloadLimits {
    /// Largest component accepted, in bytes; the download stops as soon as it is passed.
    pub max_bytes: u64,
    /// Wall-clock time for the whole download: connecting, headers and body.
    pub timeout: Duration,
}

impl Default for DownloadLimits {
    fn default() -> Self {
        DownloadLimits {
            max_bytes: 64 << 20,
            timeout: Duration::from_secs(60),
        }
    }
}

/// What kind of place a `source` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind<'a> {
    /// `builtin:NAME`
    Builtin(&'a str),
    /// `https://...`
    Https,
    /// `http://...`
    Http,
    /// `oci://registry/repo:tag` or `oci://registry/repo@sha256:...` (see [`super::oci`]).
    Oci,
    /// `SCHEME://...` for any other scheme (refused).
    OtherScheme(&'a str),
    /// A file path, relative to the deployment file's folder unless absolute.
    Path,
}

impl<'a> SourceKind<'a> {
    pub fn of(source: &'a str) -> Self {
        if let Some(name) = source.strip_prefix("builtin:") {
            return SourceKind::Builtin(name);
        }
        match source.split_once("://") {
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("https") => SourceKind::Https,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("http") => SourceKind::Http,
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("oci") => SourceKind::Oci,
            // A scheme is letters, digits, `+`, `-`, `.` (RFC 3986); anything else with `://`
            // in it is an odd but possible file name.
            Some((scheme, _))
                if !scheme.is_empty()
                    && scheme
                        .chars()
                        .next()
                        .is_some_and(|c| c.is_ascii_alphabetic())
                    && scheme
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) =>
            {
                SourceKind::OtherScheme(scheme)
            }
            _ => SourceKind::Path,
        }
    }

    /// Fetched over the network, so it must pin its digest.
    fn is_url(self) -> bool {
        matches!(self, SourceKind::Https | SourceKind::Http | SourceKind::Oci)
    }
}

/// A pinning rule a `[plugins.NAME]` table breaks, found without fetching anything.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PinningProblem {
    /// The key of `[plugins.NAME]` to fix: `source` or `sha256`.
    pub field: &'static str,
    pub message: String,
    pub help: String,
}

/// Check the pinning rules of one plugin table: used by `dax validate` (as located
/// problems) and before any download.
pub fn pinning_problems(name: &str, spec: &PluginSpec) -> Vec<PinningProblem> {
    let mut problems = Vec::new();
    let source = spec.source.as_str();
    let kind = SourceKind::of(source);
    if let SourceKind::OtherScheme(scheme) = kind {
        problems.push(PinningProblem {
            field: "source",
            message: format!(
                "plugin `{name}`: `{scheme}://` sources are not supported (source `{source}`)"
            ),
            help: "use `builtin:NAME`, a path to a .wasm file, or an https:// URL or oci:// reference with a pinned `sha256`"
                .into(),
        });
    }
    if kind == SourceKind::Oci {
        if let Err(e) = super::oci::parse(name, source) {
            problems.push(PinningProblem {
                field: "source",
                message: format!("{e:#}"),
                help: "write `oci://REGISTRY/REPOSITORY:TAG` or `oci://REGISTRY/REPOSITORY@sha256:DIGEST`".into(),
            });
        }
    }
    if kind == SourceKind::Http && !spec.allow_insecure_http {
        problems.push(PinningProblem {
            field: "source",
            message: format!(
                "plugin `{name}`: `{source}` is plain http://, which anyone on the network path can read and alter"
            ),
            help: format!(
                "use an https:// URL, or, on a network you trust, set `allow_insecure_http = true` in [plugins.{name}] \
                 (the `sha256` pin is still required and checked)"
            ),
        });
    }
    match &spec.sha256 {
        None if kind == SourceKind::Oci => problems.push(PinningProblem {
            field: "sha256",
            message: format!(
                "plugin `{name}` is pulled from `{source}` but pins no `sha256`; dax runs a downloaded plugin only when its digest is pinned"
            ),
            help: format!(
                "pull it once, review it, and add the digest of its .wasm to [plugins.{name}]: `sha256 = \"...\"` \
                 (`dax plugin pull {source} -o plugin.wasm` prints it)"
            ),
        }),
        None if kind.is_url() => problems.push(PinningProblem {
            field: "sha256",
            message: format!(
                "plugin `{name}` is downloaded from `{source}` but pins no `sha256`; dax runs a downloaded plugin only when its digest is pinned"
            ),
            help: format!(
                "download it once, review it, and add its digest to [plugins.{name}]: `sha256 = \"...\"` \
                 (e.g. `curl -fsSL {source} | sha256sum`, or `dax plugin inspect FILE` on the downloaded file)"
            ),
        }),
        Some(pin) if normalize_pin(pin).is_none() => problems.push(PinningProblem {
            field: "sha256",
            message: format!("plugin `{name}`: `sha256 = \"{pin}\"` is not a sha256 digest"),
            help: "write the 64 hex digits of the digest, optionally prefixed with `sha256:`"
                .into(),
        }),
        _ => {}
    }
    problems
}

/// Fail with the first of [`pinning_problems`], if any.
fn refuse_pinning_problems(name: &str, spec: &PluginSpec) -> anyhow::Result<()> {
    match pinning_problems(name, spec).into_iter().next() {
        Some(problem) => anyhow::bail!("{} ({})", problem.message, problem.help),
        None => Ok(()),
    }
}

/// A pinned digest as 64 lowercase hex digits, accepting a `sha256:` prefix.
pub fn normalize_pin(pin: &str) -> Option<String> {
    let hex = pin.trim();
    let hex = hex.strip_prefix("sha256:").unwrap_or(hex);
    (hex.len() == 64 && hex.chars().all(|c| c.is_ascii_hexdigit()))
        .then(|| hex.to_ascii_lowercase())
}

/// Fetch the bytes named by `spec.source` (relative paths against `base_dir`), returning
/// them with a description for messages. URLs are downloaded within the default
/// [`DownloadLimits`].
pub async fn resolve_source(
    name: &str,
    spec: &PluginSpec,
    base_dir: &Path,
) -> anyhow::Result<(Vec<u8>, String)> {
    resolve_source_within(name, spec, base_dir, &DownloadLimits::default()).await
}

/// [`resolve_source`] with explicit download bounds.
pub async fn resolve_source_within(
    name: &str,
    spec: &PluginSpec,
    base_dir: &Path,
    limits: &DownloadLimits,
) -> anyhow::Result<(Vec<u8>, String)> {
    let source = spec.source.as_str();
    refuse_pinning_problems(name, spec)?;
    match SourceKind::of(source) {
        SourceKind::Builtin(builtin) => {
            let (_, bytes) = resolve_builtin(name, builtin)?;
            Ok((bytes.to_vec(), format!("builtin:{builtin}")))
        }
        SourceKind::Https | SourceKind::Http => {
            let bytes = download(name, source, spec.allow_insecure_http, limits).await?;
            Ok((bytes, source.to_string()))
        }
        SourceKind::Oci => {
            let pulled = super::oci::pull(name, source, spec.allow_insecure_http, limits).await?;
            Ok((pulled.wasm, source.to_string()))
        }
        SourceKind::OtherScheme(_) => unreachable!("refused by pinning_problems"),
        SourceKind::Path => {
            let (file, path) = open_path(name, source, base_dir)?;
            let bytes = read_whole(&file, 0).map_err(|e| cannot_read(name, source, &path, e))?;
            Ok((bytes, path.display().to_string()))
        }
    }
}

/// A plugin's component as `PluginHost::load` takes it: where it came from, its sha256, and
/// its bytes. A local file whose digest a stamp of the compile cache vouches for is not read
/// unless it must be compiled (see `cache.rs`).
pub struct Wasm<'a> {
    /// Where the bytes came from, for messages: `builtin:NAME`, a path or a URL.
    pub origin: String,
    /// sha256 (hex) of the bytes.
    pub digest: String,
    bytes: WasmBytes<'a>,
}

enum WasmBytes<'a> {
    Read(Cow<'a, [u8]>),
    /// A local file, open, whose digest a stamp vouched for: not read yet.
    Unread {
        file: std::fs::File,
        len: u64,
    },
}

impl<'a> Wasm<'a> {
    /// Bytes already in memory, hashed here.
    pub fn from_bytes(bytes: impl Into<Cow<'a, [u8]>>, origin: impl Into<String>) -> Self {
        let bytes = bytes.into();
        Wasm {
            origin: origin.into(),
            digest: hex::encode(Sha256::digest(&bytes)),
            bytes: WasmBytes::Read(bytes),
        }
    }

    /// Size in bytes.
    pub(crate) fn len(&self) -> u64 {
        match &self.bytes {
            WasmBytes::Read(bytes) => bytes.len() as u64,
            WasmBytes::Unread { len, .. } => *len,
        }
    }

    /// Whether a stamp vouched for the digest, so the bytes were not read (yet).
    pub fn vouched_by_stamp(&self) -> bool {
        matches!(self.bytes, WasmBytes::Unread { .. })
    }

    /// The first (up to) 8 bytes: the magic number and version, which say what the file is.
    pub(crate) fn header(&self) -> std::io::Result<Vec<u8>> {
        match &self.bytes {
            WasmBytes::Read(bytes) => Ok(bytes[..bytes.len().min(8)].to_vec()),
            WasmBytes::Unread { file, len } => {
                let mut header = vec![0u8; (*len).min(8) as usize];
                file.read_exact_at(&mut header, 0)?;
                Ok(header)
            }
        }
    }

    /// All the bytes. A file read only now is hashed again: it must still be what the stamp
    /// vouched for.
    pub fn into_bytes(self) -> anyhow::Result<Cow<'a, [u8]>> {
        match self.bytes {
            WasmBytes::Read(bytes) => Ok(bytes),
            WasmBytes::Unread { file, len } => {
                let bytes = read_whole(&file, len)
                    .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", self.origin))?;
                let digest = hex::encode(Sha256::digest(&bytes));
                if digest != self.digest {
                    anyhow::bail!(
                        "{} changed while it was being loaded (sha256 {} when checked, {digest} now); load it again",
                        self.origin,
                        self.digest
                    );
                }
                Ok(Cow::Owned(bytes))
            }
        }
    }
}

/// Resolve `spec.source` for loading. A builtin's digest was computed when `dax` was built;
/// a local file whose stamp in `cache` vouches for its digest is left unread; anything else
/// is read (or downloaded) and hashed, and a local file stamped for the next run.
pub async fn resolve_for_load(
    name: &str,
    spec: &PluginSpec,
    base_dir: &Path,
    cache: &CompileCache,
) -> anyhow::Result<Wasm<'static>> {
    let source = spec.source.as_str();
    refuse_pinning_problems(name, spec)?;
    match SourceKind::of(source) {
        SourceKind::Builtin(builtin) => {
            let (digest, bytes) = resolve_builtin(name, builtin)?;
            Ok(Wasm {
                origin: format!("builtin:{builtin}"),
                digest: digest.to_string(),
                bytes: WasmBytes::Read(Cow::Borrowed(bytes)),
            })
        }
        SourceKind::Path => {
            let (file, path) = open_path(name, source, base_dir)?;
            let origin = path.display().to_string();
            let meta = file
                .metadata()
                .map_err(|e| cannot_read(name, source, &path, e))?;
            if let Some(digest) = cache.stamped_source_digest(&file, &meta) {
                let len = meta.len();
                return Ok(Wasm {
                    origin,
                    digest,
                    bytes: WasmBytes::Unread { file, len },
                });
            }
            let bytes =
                read_whole(&file, meta.len()).map_err(|e| cannot_read(name, source, &path, e))?;
            let wasm = Wasm::from_bytes(bytes, origin);
            cache.stamp_source(&file, &meta, &wasm.digest);
            Ok(wasm)
        }
        _ => {
            let (bytes, origin) = resolve_source(name, spec, base_dir).await?;
            Ok(Wasm::from_bytes(bytes, origin))
        }
    }
}

/// Open the local file `source` names (relative to `base_dir`).
fn open_path(
    name: &str,
    source: &str,
    base_dir: &Path,
) -> anyhow::Result<(std::fs::File, PathBuf)> {
    let path = if Path::new(source).is_absolute() {
        PathBuf::from(source)
    } else {
        base_dir.join(source)
    };
    match std::fs::File::open(&path) {
        Ok(file) => Ok((file, path)),
        Err(e) => Err(cannot_read(name, source, &path, e)),
    }
}

/// Everything in the open `file` from where it is (the start, for a file just opened);
/// `len` is the size expected, to allocate once.
fn read_whole(file: &std::fs::File, len: u64) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::with_capacity(len as usize);
    (&*file).read_to_end(&mut bytes)?;
    Ok(bytes)
}

fn cannot_read(name: &str, source: &str, path: &Path, e: std::io::Error) -> anyhow::Error {
    anyhow::anyhow!(
        "plugin `{name}`: cannot read source `{source}` ({}): {e}; use `builtin:NAME`, a path to a .wasm file, or an https:// URL",
        path.display()
    )
}

/// The build-time sha256 and the bytes of the embedded plugin `builtin`.
fn resolve_builtin(name: &str, builtin: &str) -> anyhow::Result<(&'static str, &'static [u8])> {
    let natives = crate::engine::builtins::native_names();
    if natives.contains(&builtin) {
        anyhow::bail!("plugin `{name}`: `builtin:{builtin}` is host-native, not a Wasm plugin");
    }
    builtin::find(builtin).ok_or_else(|| {
        let mut known: Vec<&str> = builtin::names();
        known.extend(natives);
        anyhow::anyhow!(
            "plugin `{name}`: unknown builtin plugin `{builtin}`; available builtins: {}",
            known.join(", ")
        )
    })
}

/// Download `url` within `limits`, streaming so memory never holds more than the bound.
pub(crate) async fn download(
    name: &str,
    url: &str,
    allow_insecure_http: bool,
    limits: &DownloadLimits,
) -> anyhow::Result<Vec<u8>> {
    let max = limits.max_bytes;
    let too_big = || {
        anyhow::anyhow!(
            "plugin `{name}`: downloading {url} stopped: the component is larger than the {} limit for plugin downloads; \
             check the URL (a plugin component is rarely more than a few MiB)",
            format_bytes(max)
        )
    };
    let client = reqwest::Client::builder()
        .connect_timeout(limits.timeout)
        .redirect(redirect_policy(allow_insecure_http))
        .build()?;
    let fetch = async {
        let mut response = client
            .get(url)
            .send()
            .await
            .map_err(|e| anyhow::anyhow!("plugin `{name}`: downloading {url}: {e:#}"))?;
        if !response.status().is_success() {
            anyhow::bail!(
                "plugin `{name}`: downloading {url} failed with HTTP {}",
                response.status()
            );
        }
        if response.content_length().is_some_and(|len| len > max) {
            return Err(too_big());
        }
        let mut bytes = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| anyhow::anyhow!("plugin `{name}`: downloading {url}: {e:#}"))?
        {
            if (bytes.len() + chunk.len()) as u64 > max {
                return Err(too_big());
            }
            bytes.extend_from_slice(&chunk);
        }
        Ok(bytes)
    };
    match tokio::time::timeout(limits.timeout, fetch).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!(
            "plugin `{name}`: downloading {url} did not finish within {}, the time limit for plugin downloads; \
             check that the server is reachable and serving the file",
            super::spec::duration_str::format(limits.timeout)
        ),
    }
}

/// Follow at most 5 redirects, and never from https:// down to plain http:// unless the
/// operator allowed plain HTTP for this plugin.
fn redirect_policy(allow_insecure_http: bool) -> reqwest::redirect::Policy {
    reqwest::redirect::Policy::custom(move |attempt| {
        if attempt.previous().len() >= 5 {
            attempt.error("too many redirects (more than 5)")
        } else if attempt.url().scheme() == "http" && !allow_insecure_http {
            let to = attempt.url().to_string();
            attempt.error(format!(
                "redirected to plain http:// ({to}); set `allow_insecure_http = true` to allow it"
            ))
        } else {
            attempt.follow()
        }
    })
}

pub(crate) fn format_bytes(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 && n.is_multiple_of(1 << 10) {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(source: &str, sha256: Option<&str>) -> PluginSpec {
        PluginSpec {
            source: source.into(),
            sha256: sha256.map(String::from),
            allow_insecure_http: false,
            config: toml::Value::Table(Default::default()),
            grants: Default::default(),
            limits: Default::default(),
        }
    }

    #[test]
    fn classifies_sources() {
        assert_eq!(
            SourceKind::of("builtin:canary"),
            SourceKind::Builtin("canary")
        );
        assert_eq!(SourceKind::of("HTTPS://x/p.wasm"), SourceKind::Https);
        assert_eq!(SourceKind::of("http://x/p.wasm"), SourceKind::Http);
        assert_eq!(
            SourceKind::of("ftp://x/p.wasm"),
            SourceKind::OtherScheme("ftp")
        );
        assert_eq!(SourceKind::of("./p.wasm"), SourceKind::Path);
        assert_eq!(SourceKind::of("/abs/p.wasm"), SourceKind::Path);
        assert_eq!(SourceKind::of("odd dir://p.wasm"), SourceKind::Path);
    }

    #[test]
    fn urls_must_pin_and_http_must_opt_in() {
        let pin = "a".repeat(64);
        assert!(pinning_problems("p", &spec("./p.wasm", None)).is_empty());
        assert!(pinning_problems("p", &spec("builtin:canary", None)).is_empty());
        assert!(pinning_problems("p", &spec("https://x/p.wasm", Some(&pin))).is_empty());
        let unpinned = pinning_problems("p", &spec("https://x/p.wasm", None));
        assert_eq!(unpinned.len(), 1);
        assert_eq!(unpinned[0].field, "sha256");
        assert!(unpinned[0].message.contains("pins no `sha256`"));
        let http = pinning_problems("p", &spec("http://x/p.wasm", Some(&pin)));
        assert_eq!(http.len(), 1);
        assert_eq!(http[0].field, "source");
        assert!(http[0].help.contains("allow_insecure_http = true"));
        let mut allowed = spec("http://x/p.wasm", Some(&pin));
        allowed.allow_insecure_http = true;
        assert!(pinning_problems("p", &allowed).is_empty());
        let bad_pin = pinning_problems("p", &spec("./p.wasm", Some("abc")));
        assert_eq!(bad_pin[0].field, "sha256");
        assert_eq!(
            normalize_pin(&format!("sha256:{}", "AB".repeat(32))),
            Some("ab".repeat(32))
        );
    }
}
