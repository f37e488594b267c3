//! Plugin signatures: ed25519 over the plugin's sha256, and the `[trust]` policy that can
//! require one from a listed key before any non-builtin plugin loads.
//!
//! A signature signs `dax plugin signature v1\nsha256:<hex of the .wasm>` — the same digest
//! as the `sha256` pin, so one signature covers the plugin wherever it is stored. It is a
//! small JSON document ([`PluginSignature`]): in a sidecar `FILE.sig` (one document a line,
//! so several signers can sign one file) for files and URLs (`URL.sig`), and as an OCI
//! referrer of the plugin's manifest for `oci://` sources ([`super::oci`]).
//!
//! Keys are files of one line: `ed25519-public BASE64` (32 bytes) and `ed25519-secret
//! BASE64` (the 32-byte seed, written with mode 0600).

use super::source::{DownloadLimits, SourceKind};
use super::spec::PluginSpec;
use anyhow::Context as _;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

const PUBLIC_PREFIX: &str = "ed25519-public ";
const SECRET_PREFIX: &str = "ed25519-secret ";

fn b64() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}

/// The bytes a signature signs for a plugin whose `.wasm` has sha256 `digest_hex`.
fn message(digest_hex: &str) -> Vec<u8> {
    format!("dax plugin signature v1\nsha256:{digest_hex}").into_bytes()
}

/// One signature document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct PluginSignature {
    /// Always `ed25519`.
    pub algorithm: String,
    /// The signer's public key, base64: which key to check it with, and shown to operators.
    pub public_key: String,
    /// `sha256:<hex>` of the signed `.wasm`.
    pub digest: String,
    /// base64 of the 64-byte ed25519 signature over [`message`].
    pub signature: String,
}

/// A public key the operator trusts, with where it came from (for messages).
#[derive(Debug, Clone)]
pub struct TrustedKey {
    pub label: String,
    pub key: VerifyingKey,
}

/// A short, stable name for a public key: `ed25519:` and the first 16 hex digits of the
/// sha256 of its bytes.
pub fn fingerprint(key: &VerifyingKey) -> String {
    format!(
        "ed25519:{}",
        &hex::encode(Sha256::digest(key.as_bytes()))[..16]
    )
}

/// Write a new key pair to `PREFIX.key` (secret, mode 0600) and `PREFIX.pub`.
pub fn keygen(prefix: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
    use base64::Engine as _;
    let seed: [u8; 32] = rand::random();
    let signing = SigningKey::from_bytes(&seed);
    let secret = prefix.with_extension("key");
    let public = prefix.with_extension("pub");
    for path in [&secret, &public] {
        if path.exists() {
            anyhow::bail!(
                "{} already exists; choose another name (keys are never overwritten)",
                path.display()
            );
        }
    }
    {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&secret)
            .with_context(|| format!("writing {}", secret.display()))?;
        writeln!(file, "{SECRET_PREFIX}{}", b64().encode(seed))?;
    }
    std::fs::write(
        &public,
        format!(
            "{PUBLIC_PREFIX}{}\n",
            b64().encode(signing.verifying_key().as_bytes())
        ),
    )
    .with_context(|| format!("writing {}", public.display()))?;
    Ok((secret, public))
}

fn read_key_line(path: &Path, prefix: &str, what: &str) -> anyhow::Result<[u8; 32]> {
    use base64::Engine as _;
    let raw = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read {what} {}", path.display()))?;
    let bytes = raw
        .trim()
        .strip_prefix(prefix)
        .and_then(|b| b64().decode(b.trim()).ok())
        .and_then(|b| <[u8; 32]>::try_from(b).ok());
    bytes.ok_or_else(|| {
        anyhow::anyhow!(
            "{} is not a dax {what} (expected one line `{prefix}BASE64`, as `dax plugin keygen` writes)",
            path.display()
        )
    })
}

/// Read a public key file.
pub fn read_public_key(path: &Path) -> anyhow::Result<TrustedKey> {
    let bytes = read_key_line(path, PUBLIC_PREFIX, "ed25519 public key")?;
    let key = VerifyingKey::from_bytes(&bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a valid ed25519 key: {e}", path.display()))?;
    Ok(TrustedKey {
        label: format!("{} ({})", path.display(), fingerprint(&key)),
        key,
    })
}

/// Sign a plugin whose `.wasm` has sha256 `digest_hex` with the secret key at `key_path`.
pub fn sign(digest_hex: &str, key_path: &Path) -> anyhow::Result<PluginSignature> {
    use base64::Engine as _;
    let seed = read_key_line(key_path, SECRET_PREFIX, "ed25519 secret key")?;
    let signing = SigningKey::from_bytes(&seed);
    Ok(PluginSignature {
        algorithm: "ed25519".into(),
        public_key: b64().encode(signing.verifying_key().as_bytes()),
        digest: format!("sha256:{digest_hex}"),
        signature: b64().encode(signing.sign(&message(digest_hex)).to_bytes()),
    })
}

/// What the signatures found for a plugin say, given the keys the operator trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// A valid signature over the plugin's digest by this trusted key.
    SignedBy(String),
    /// No signature at all.
    Unsigned,
    /// Signatures exist, but none is a valid one by a trusted key; the fingerprints of the
    /// keys that signed (validly) and how many did not verify.
    Untrusted {
        signers: Vec<String>,
        invalid: usize,
    },
}

impl Verdict {
    /// One line for `dax plugin inspect` / `verify`.
    pub fn describe(&self) -> String {
        match self {
            Verdict::SignedBy(label) => format!("signed by {label}"),
            Verdict::Unsigned => "unsigned".into(),
            Verdict::Untrusted { signers, invalid } => {
                let mut parts = Vec::new();
                if !signers.is_empty() {
                    parts.push(format!(
                        "signed only by keys not trusted here: {}",
                        signers.join(", ")
                    ));
                }
                if *invalid > 0 {
                    parts.push(format!(
                        "{invalid} signature(s) that do not verify for this plugin"
                    ));
                }
                parts.join("; ")
            }
        }
    }
}

/// Check signature documents (JSON, one a line or one per document) against `trusted`.
pub fn verdict(digest_hex: &str, documents: &[Vec<u8>], trusted: &[TrustedKey]) -> Verdict {
    use base64::Engine as _;
    let mut signers = Vec::new();
    let mut invalid = 0;
    let mut any = false;
    for doc in documents {
        for line in String::from_utf8_lossy(doc)
            .lines()
            .filter(|l| !l.trim().is_empty())
        {
            any = true;
            let Ok(sig) = serde_json::from_str::<PluginSignature>(line) else {
                invalid += 1;
                continue;
            };
            let key = b64()
                .decode(&sig.public_key)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .and_then(|b| VerifyingKey::from_bytes(&b).ok());
            let signature = b64()
                .decode(&sig.signature)
                .ok()
                .and_then(|b| ed25519_dalek::Signature::from_slice(&b).ok());
            let (Some(key), Some(signature)) = (key, signature) else {
                invalid += 1;
                continue;
            };
            let valid = sig.algorithm == "ed25519"
                && sig.digest == format!("sha256:{digest_hex}")
                && key.verify(&message(digest_hex), &signature).is_ok();
            if !valid {
                invalid += 1;
                continue;
            }
            if let Some(t) = trusted.iter().find(|t| t.key == key) {
                return Verdict::SignedBy(t.label.clone());
            }
            signers.push(fingerprint(&key));
        }
    }
    if any {
        Verdict::Untrusted { signers, invalid }
    } else {
        Verdict::Unsigned
    }
}

/// The `[trust]` table of a deployment file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustPolicy {
    /// Refuse every non-builtin plugin without a valid signature by one of `keys`.
    #[serde(default)]
    pub require_signature: bool,
    /// Public key files (relative to the deployment file's folder), as `dax plugin keygen`
    /// writes them.
    #[serde(default)]
    pub keys: Vec<String>,
}

impl TrustPolicy {
    /// Problems with the table, as (field, message, help), for `dax validate`.
    pub fn problems(&self, base_dir: &Path) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        if self.require_signature && self.keys.is_empty() {
            out.push((
                "trust.keys".into(),
                "`require_signature = true` but `keys` lists no key, so no plugin could ever load".into(),
                "list the public keys you trust: `keys = [\"keys/vendor.pub\"]` (`dax plugin keygen` writes a pair)".into(),
            ));
        }
        for (i, key) in self.keys.iter().enumerate() {
            if let Err(e) = read_public_key(&base_dir.join(key)) {
                out.push((
                    format!("trust.keys[{i}]"),
                    format!("{e:#}"),
                    "give the path of a public key file (relative to this file) written by `dax plugin keygen`".into(),
                ));
            }
        }
        out
    }

    fn trusted_keys(&self, base_dir: &Path) -> anyhow::Result<Vec<TrustedKey>> {
        self.keys
            .iter()
            .map(|k| read_public_key(&base_dir.join(k)))
            .collect()
    }
}

/// The signature documents stored for `spec.source`, and the digest they must sign: the
/// pin when there is one (URLs and registries always have one), else the file's digest.
pub async fn find_signatures(
    name: &str,
    spec: &PluginSpec,
    base_dir: &Path,
) -> anyhow::Result<Option<(String, Vec<Vec<u8>>)>> {
    let limits = DownloadLimits {
        max_bytes: 64 << 10,
        ..DownloadLimits::default()
    };
    let pin = spec
        .sha256
        .as_deref()
        .and_then(super::source::normalize_pin);
    let source = spec.source.as_str();
    match SourceKind::of(source) {
        SourceKind::Path => {
            let path = if Path::new(source).is_absolute() {
                PathBuf::from(source)
            } else {
                base_dir.join(source)
            };
            let digest = match pin {
                Some(pin) => pin,
                None => hex::encode(Sha256::digest(std::fs::read(&path).with_context(|| {
                    format!(
                        "plugin `{name}`: cannot read source `{source}` ({})",
                        path.display()
                    )
                })?)),
            };
            let mut sidecar = path.into_os_string();
            sidecar.push(".sig");
            let docs = std::fs::read(&sidecar).map(|d| vec![d]).unwrap_or_default();
            Ok(Some((digest, docs)))
        }
        SourceKind::Https | SourceKind::Http => {
            let digest = pin.context("a URL source must pin `sha256`")?;
            let url = format!("{source}.sig");
            let docs = super::source::download(name, &url, spec.allow_insecure_http, &limits)
                .await
                .map(|d| vec![d])
                .unwrap_or_default();
            Ok(Some((digest, docs)))
        }
        SourceKind::Oci => {
            let digest = pin.context("an oci:// source must pin `sha256`")?;
            let docs = super::oci::pull_signatures(
                name,
                source,
                spec.allow_insecure_http,
                &DownloadLimits::default(),
            )
            .await?;
            Ok(Some((digest, docs)))
        }
        // Builtins ship inside this binary; other schemes are host-native test plugins.
        SourceKind::Builtin(_) | SourceKind::OtherScheme(_) => Ok(None),
    }
}

/// Apply `policy` to one plugin before it loads: `Ok(spec)` to load, pinned to the digest
/// that was signed (so the bytes loaded are the bytes verified, even for an unpinned file
/// that changes in between), or the refusal.
pub async fn enforce(
    policy: &TrustPolicy,
    name: &str,
    spec: &PluginSpec,
    base_dir: &Path,
) -> Result<PluginSpec, super::LoadError> {
    if !policy.require_signature {
        return Ok(spec.clone());
    }
    let source = spec.source.as_str();
    let Some((digest, docs)) = find_signatures(name, spec, base_dir)
        .await
        .map_err(super::LoadError::from)?
    else {
        return Ok(spec.clone());
    };
    let trusted = policy.trusted_keys(base_dir).map_err(|e| {
        super::LoadError::new(
            "source",
            format!("plugin `{name}`: [trust] keys: {e:#}"),
            "fix `[trust] keys`",
        )
    })?;
    match verdict(&digest, &docs, &trusted) {
        Verdict::SignedBy(_) => {
            let mut pinned = spec.clone();
            pinned.sha256 = Some(digest);
            Ok(pinned)
        }
        other => {
            let where_ = match SourceKind::of(source) {
                SourceKind::Oci => "as an OCI referrer of the plugin".to_string(),
                _ => format!("in `{source}.sig`"),
            };
            Err(super::LoadError::new(
                "source",
                format!(
                    "plugin `{name}` (source `{source}`, sha256 {digest}) is refused: [trust] require_signature = true needs a valid signature by one of [{}], and it is {} ({where_})",
                    policy.keys.join(", "),
                    other.describe()
                ),
                format!(
                    "review the plugin, then sign it with a trusted key: `dax plugin sign {source} --key KEY.key` (the key whose .pub is listed in [trust] keys), or remove [plugins.{name}]"
                ),
            ))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_and_verifies_by_listed_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let (secret, public) = keygen(&dir.path().join("vendor")).unwrap();
        let (other_secret, _) = keygen(&dir.path().join("other")).unwrap();
        let trusted = vec![read_public_key(&public).unwrap()];
        let digest = "ab".repeat(32);
        let sig = serde_json::to_vec(&sign(&digest, &secret).unwrap()).unwrap();
        assert!(matches!(
            verdict(&digest, std::slice::from_ref(&sig), &trusted),
            Verdict::SignedBy(_)
        ));
        // Another digest: the same signature does not verify.
        let other_digest = "cd".repeat(32);
        assert_eq!(
            verdict(&other_digest, &[sig], &trusted),
            Verdict::Untrusted {
                signers: vec![],
                invalid: 1
            }
        );
        let by_other = serde_json::to_vec(&sign(&digest, &other_secret).unwrap()).unwrap();
        assert!(matches!(
            verdict(&digest, &[by_other], &trusted),
            Verdict::Untrusted { ref signers, invalid: 0 } if signers.len() == 1
        ));
        assert_eq!(verdict(&digest, &[], &trusted), Verdict::Unsigned);
        assert!(
            keygen(&dir.path().join("vendor")).is_err(),
            "never overwrites a key"
        );
    }
}
