//! `dax plugin push/pull/keygen/sign/verify`: distributing plugins through OCI registries
//! and signing them (see `plugin::oci` and `plugin::signature`).

use crate::plugin::signature::{self, Verdict};
use crate::plugin::source::{DownloadLimits, SourceKind};
use crate::plugin::{oci, PluginSpec};
use anyhow::Context as _;
use sha2::{Digest as _, Sha256};
use std::path::{Path, PathBuf};

/// Subcommands of `dax plugin` for distribution and trust.
#[derive(Debug, clap::Subcommand)]
pub enum DistributionCommand {
    /// Push a plugin component to an OCI registry (CNCF Wasm artifact layout); registry
    /// credentials come from the Docker config file (`$DOCKER_CONFIG`, `~/.docker/config.json`).
    Push {
        /// The .wasm component.
        file: PathBuf,
        /// Where: `oci://REGISTRY/REPOSITORY:TAG`.
        target: String,
        /// Talk plain http to the registry (a registry on a network you trust).
        #[arg(long)]
        allow_insecure_http: bool,
    },
    /// Pull a plugin component from an OCI registry into a file; prints its sha256 to pin.
    Pull {
        /// `oci://REGISTRY/REPOSITORY:TAG` or `...@sha256:DIGEST`.
        source: String,
        /// The file to write (`--out`; `--output` is the global output format).
        #[arg(short = 'o', long = "out")]
        out: PathBuf,
        /// Expected sha256 of the .wasm; the pull fails (and writes nothing) otherwise.
        #[arg(long)]
        sha256: Option<String>,
        #[arg(long)]
        allow_insecure_http: bool,
    },
    /// Write a new ed25519 key pair: PREFIX.key (secret, mode 0600) and PREFIX.pub.
    Keygen {
        /// Path prefix of the two files, e.g. `keys/vendor`.
        prefix: PathBuf,
    },
    /// Sign a plugin: writes FILE.sig beside a file, or stores the signature as an OCI
    /// referrer of an oci:// plugin.
    Sign {
        /// A .wasm path or an oci:// reference.
        source: String,
        /// The secret key (`dax plugin keygen` writes it).
        #[arg(long)]
        key: PathBuf,
        #[arg(long)]
        allow_insecure_http: bool,
    },
    /// Check that a plugin carries a valid signature by one of the given public keys
    /// (exit 0) or not (exit 1).
    Verify {
        /// A .wasm path, an https:// URL or an oci:// reference.
        source: String,
        /// Trusted public keys.
        #[arg(long = "key", required = true)]
        keys: Vec<PathBuf>,
        /// The plugin's sha256 (taken from the registry or the file when not given).
        #[arg(long)]
        sha256: Option<String>,
        #[arg(long)]
        allow_insecure_http: bool,
    },
}

/// Run a distribution subcommand; returns the process exit code.
pub async fn run(cmd: DistributionCommand, json: bool) -> anyhow::Result<i32> {
    match cmd {
        DistributionCommand::Push {
            file,
            target,
            allow_insecure_http,
        } => {
            require_oci(&target)?;
            let wasm =
                std::fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
            let manifest = oci::push(&wasm, &target, allow_insecure_http).await?;
            let sha256 = hex::encode(Sha256::digest(&wasm));
            if json {
                println!(
                    "{}",
                    serde_json::json!({"target": target, "manifest": manifest, "sha256": sha256})
                );
            } else {
                println!("pushed {} to {target}", file.display());
                println!("manifest     {manifest}");
                println!("sha256       {sha256}  (pin: sha256 = \"{sha256}\")");
            }
            Ok(0)
        }
        DistributionCommand::Pull {
            source,
            out,
            sha256,
            allow_insecure_http,
        } => {
            require_oci(&source)?;
            let pulled = oci::pull(
                "pulled",
                &source,
                allow_insecure_http,
                &DownloadLimits::default(),
            )
            .await?;
            let digest = hex::encode(Sha256::digest(&pulled.wasm));
            if let Some(pin) = sha256 {
                let pin = crate::plugin::source::normalize_pin(&pin)
                    .context("--sha256 is not a sha256 digest (64 hex digits)")?;
                if pin != digest {
                    anyhow::bail!(
                        "sha256 of {source} is {digest}, but --sha256 is {pin}; nothing was written"
                    );
                }
            }
            std::fs::write(&out, &pulled.wasm)
                .with_context(|| format!("cannot write {}", out.display()))?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"source": source, "manifest": pulled.manifest_digest, "sha256": digest})
                );
            } else {
                println!("pulled {source} to {}", out.display());
                println!("manifest     {}", pulled.manifest_digest);
                println!("sha256       {digest}  (pin: sha256 = \"{digest}\")");
            }
            Ok(0)
        }
        DistributionCommand::Keygen { prefix } => {
            let (secret, public) = signature::keygen(&prefix)?;
            let key = signature::read_public_key(&public)?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"secret_key_file": secret, "public_key_file": public, "fingerprint": signature::fingerprint(&key.key)})
                );
            } else {
                println!("secret key   {}  (keep it private)", secret.display());
                println!("public key   {}", key.label);
            }
            Ok(0)
        }
        DistributionCommand::Sign {
            source,
            key,
            allow_insecure_http,
        } => {
            match SourceKind::of(&source) {
                SourceKind::Oci => {
                    let pulled = oci::pull(
                        "signed",
                        &source,
                        allow_insecure_http,
                        &DownloadLimits::default(),
                    )
                    .await?;
                    let digest = hex::encode(Sha256::digest(&pulled.wasm));
                    let sig = signature::sign(&digest, &key)?;
                    // Sign the manifest pulled, not whatever the tag points to by now.
                    let by_digest = format!(
                        "{}@{}",
                        source.split_once('@').map_or_else(
                            || strip_tag(&source),
                            |(repo, _)| repo.to_string()
                        ),
                        pulled.manifest_digest
                    );
                    let stored = oci::push_signature(
                        &by_digest,
                        allow_insecure_http,
                        &serde_json::to_vec(&sig)?,
                    )
                    .await?;
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"source": source, "sha256": digest, "signature": stored, "manifest": pulled.manifest_digest})
                        );
                    } else {
                        println!("signed {source} (sha256 {digest}); signature {stored} refers to {}", pulled.manifest_digest);
                    }
                }
                SourceKind::Path => {
                    let wasm = std::fs::read(&source)
                        .with_context(|| format!("cannot read {source}"))?;
                    let digest = hex::encode(Sha256::digest(&wasm));
                    let sig = signature::sign(&digest, &key)?;
                    let sidecar = format!("{source}.sig");
                    use std::io::Write as _;
                    let mut file = std::fs::OpenOptions::new()
                        .create(true)
                        .append(true)
                        .open(&sidecar)
                        .with_context(|| format!("cannot write {sidecar}"))?;
                    writeln!(file, "{}", serde_json::to_string(&sig)?)?;
                    if json {
                        println!(
                            "{}",
                            serde_json::json!({"source": source, "sha256": digest, "signature": sidecar})
                        );
                    } else {
                        println!("signed {source} (sha256 {digest}); signature appended to {sidecar}");
                    }
                }
                _ => anyhow::bail!(
                    "`dax plugin sign` signs a .wasm file or an oci:// plugin; for a URL, sign the file and publish FILE.sig beside it"
                ),
            }
            Ok(0)
        }
        DistributionCommand::Verify {
            source,
            keys,
            sha256,
            allow_insecure_http,
        } => {
            let verdict = verdict_for(&source, sha256, allow_insecure_http, &keys).await?;
            if json {
                println!(
                    "{}",
                    serde_json::json!({"source": source, "trusted": matches!(verdict, Verdict::SignedBy(_)), "signature": verdict.describe()})
                );
            } else {
                println!("{source}: {}", verdict.describe());
            }
            Ok(if matches!(verdict, Verdict::SignedBy(_)) {
                0
            } else {
                1
            })
        }
    }
}

/// `oci://host/repo:tag` without its tag (a `:` after the last `/`).
fn strip_tag(source: &str) -> String {
    match source.rfind('/') {
        Some(slash) => match source[slash..].find(':') {
            Some(colon) => source[..slash + colon].to_string(),
            None => source.to_string(),
        },
        None => source.to_string(),
    }
}

fn require_oci(reference: &str) -> anyhow::Result<()> {
    if SourceKind::of(reference) != SourceKind::Oci {
        anyhow::bail!(
            "`{reference}` is not an oci:// reference; write `oci://REGISTRY/REPOSITORY:TAG`"
        );
    }
    Ok(())
}

/// What the signatures of `source` say about `keys`. For an oci:// source without a
/// `sha256`, the digest is that of the component the registry serves now.
pub async fn verdict_for(
    source: &str,
    sha256: Option<String>,
    allow_insecure_http: bool,
    keys: &[PathBuf],
) -> anyhow::Result<Verdict> {
    let trusted = keys
        .iter()
        .map(|k| signature::read_public_key(k))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let mut sha256 = sha256;
    if sha256.is_none() && SourceKind::of(source) == SourceKind::Oci {
        let pulled = oci::pull(
            "verified",
            source,
            allow_insecure_http,
            &DownloadLimits::default(),
        )
        .await?;
        sha256 = Some(hex::encode(Sha256::digest(&pulled.wasm)));
    }
    let spec = PluginSpec {
        source: source.to_string(),
        sha256,
        allow_insecure_http,
        config: toml::Value::Table(Default::default()),
        grants: Default::default(),
        limits: Default::default(),
    };
    match signature::find_signatures("verified", &spec, Path::new(".")).await? {
        Some((digest, docs)) => Ok(signature::verdict(&digest, &docs, &trusted)),
        None => anyhow::bail!(
            "`{source}` is a builtin plugin: it ships inside this binary and carries no signature"
        ),
    }
}
