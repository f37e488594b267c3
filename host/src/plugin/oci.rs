//! Plugins in OCI registries: `oci://registry/repo:tag` and `oci://registry/repo@sha256:...`.
//!
//! A plugin is stored in the CNCF Wasm OCI artifact layout: an OCI image manifest whose
//! config has media type `application/vnd.wasm.config.v0+json` and whose one layer is the
//! component (`application/wasm`). The `sha256` pin of `[plugins.NAME]` is the digest of that
//! layer (the `.wasm` file), so a plugin keeps its pin whether it is read from a file, a URL or
//! a registry. Signatures ([`super::signature`]) are stored as OCI referrers of the plugin's
//! manifest: found through the referrers API where the registry has it, else through the
//! referrers tag schema (tag `sha256-<manifest digest>`, an index of referrers), which every
//! registry can store.
//!
//! The registry protocol is `oci-client`'s; this module adds the layout, the bounds
//! ([`DownloadLimits`], as for URLs), plain-http opt-in and Docker-config credentials.
//! Credentials are used only by the host to talk to the registry; no plugin ever sees them.

use super::source::DownloadLimits;
use anyhow::Context as _;
use futures::StreamExt as _;
use oci_client::client::{ClientConfig, ClientProtocol, Config, ImageLayer};
use oci_client::manifest::{
    ImageIndexEntry, OciDescriptor, OciImageIndex, OciImageManifest, OciManifest,
    IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest as _, Sha256};

/// Media type of the config of a Wasm OCI artifact (CNCF TAG Runtime layout).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Media type of the one layer: the component.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Media type of a signature referrer's artifact type and of its one layer.
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.dax.plugin.signature.v1+json";
const EMPTY_CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.empty.v1+json";
/// A signature is a few hundred bytes; anything much larger is not ours.
const MAX_SIGNATURE_BYTES: u64 = 64 << 10;
/// Signature referrers read per plugin at most (a registry could list millions).
const MAX_SIGNATURES: usize = 32;

/// `oci://REF` → the reference, with a message naming the plugin when it does not parse.
pub fn parse(name: &str, source: &str) -> anyhow::Result<Reference> {
    let rest = source
        .strip_prefix("oci://")
        .or_else(|| source.strip_prefix("OCI://"))
        .unwrap_or(source);
    rest.parse::<Reference>().map_err(|e| {
        anyhow::anyhow!(
            "plugin `{name}`: `{source}` is not an OCI reference ({e}); write `oci://REGISTRY/REPOSITORY:TAG` or `oci://REGISTRY/REPOSITORY@sha256:DIGEST`"
        )
    })
}

/// A registry client: https unless the operator allowed plain http for this plugin.
pub fn client(allow_insecure_http: bool, limits: &DownloadLimits) -> Client {
    Client::new(ClientConfig {
        protocol: if allow_insecure_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        connect_timeout: Some(limits.timeout),
        read_timeout: Some(limits.timeout),
        ..Default::default()
    })
}

/// Credentials for `registry` from the Docker config file (`$DOCKER_CONFIG/config.json`,
/// else `~/.docker/config.json`): `auths.<registry>.auth` (base64 `user:password`) or
/// `username`/`password`. Anonymous when there is no file or no entry.
pub fn registry_auth(registry: &str) -> anyhow::Result<RegistryAuth> {
    let path = match std::env::var_os("DOCKER_CONFIG") {
        Some(dir) => std::path::PathBuf::from(dir).join("config.json"),
        None => match dirs::home_dir() {
            Some(home) => home.join(".docker").join("config.json"),
            None => return Ok(RegistryAuth::Anonymous),
        },
    };
    let Ok(raw) = std::fs::read_to_string(&path) else {
        return Ok(RegistryAuth::Anonymous);
    };
    let config: serde_json::Value = serde_json::from_str(&raw)
        .with_context(|| format!("Docker config {} is not JSON", path.display()))?;
    let Some(auths) = config.get("auths").and_then(|a| a.as_object()) else {
        return Ok(RegistryAuth::Anonymous);
    };
    // Keys are written as `host:port`, `https://host:port` or `https://host/v1/`.
    let host_of = |key: &str| {
        let key = key.split_once("://").map_or(key, |(_, rest)| rest);
        key.split('/').next().unwrap_or(key).to_string()
    };
    let Some(entry) = auths
        .iter()
        .find(|(k, _)| host_of(k) == registry)
        .map(|(_, v)| v)
    else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let Some(auth) = entry.get("auth").and_then(|a| a.as_str()) {
        use base64::Engine as _;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            });
        return match decoded {
            Some((user, password)) => Ok(RegistryAuth::Basic(user, password)),
            None => anyhow::bail!(
                "Docker config {}: `auths.{registry}.auth` is not base64 of `user:password`",
                path.display()
            ),
        };
    }
    match (
        entry.get("username").and_then(|u| u.as_str()),
        entry.get("password").and_then(|p| p.as_str()),
    ) {
        (Some(u), Some(p)) => Ok(RegistryAuth::Basic(u.into(), p.into())),
        _ => Ok(RegistryAuth::Anonymous),
    }
}

/// A Wasm plugin pulled from a registry.
pub struct Pulled {
    /// The component.
    pub wasm: Vec<u8>,
    /// Digest of the manifest (`sha256:...`): what signatures refer to.
    pub manifest_digest: String,
}

/// Pull the plugin at `source` within `limits` (the whole pull, manifest and layer).
pub async fn pull(
    name: &str,
    source: &str,
    allow_insecure_http: bool,
    limits: &DownloadLimits,
) -> anyhow::Result<Pulled> {
    let reference = parse(name, source)?;
    let auth = registry_auth(reference.resolve_registry())?;
    let client = client(allow_insecure_http, limits);
    let fetch = async {
        let (manifest, manifest_digest) =
            pull_plugin_manifest(name, source, &client, &reference, &auth).await?;
        let layer = &manifest.layers[0];
        if layer.size < 0 || layer.size as u64 > limits.max_bytes {
            anyhow::bail!(
                "plugin `{name}`: {source} stopped: its component is {} bytes, larger than the {} limit for plugin downloads; \
                 check the reference (a plugin component is rarely more than a few MiB)",
                layer.size,
                super::source::format_bytes(limits.max_bytes)
            );
        }
        let wasm = read_blob(name, source, &client, &reference, layer, limits.max_bytes).await?;
        Ok(Pulled {
            wasm,
            manifest_digest,
        })
    };
    within(name, source, limits, fetch).await
}

async fn within<T>(
    name: &str,
    source: &str,
    limits: &DownloadLimits,
    work: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(result) => result,
        Err(_) => anyhow::bail!(
            "plugin `{name}`: pulling {source} did not finish within {}, the time limit for plugin downloads; \
             check that the registry is reachable",
            super::spec::duration_str::format(limits.timeout)
        ),
    }
}

/// The plugin's manifest and its digest, checked to be a Wasm artifact (and, for a
/// `@sha256:` reference, to have that digest).
async fn pull_plugin_manifest(
    name: &str,
    source: &str,
    client: &Client,
    reference: &Reference,
    auth: &RegistryAuth,
) -> anyhow::Result<(OciImageManifest, String)> {
    let (raw, _) = client
        .pull_manifest_raw(
            reference,
            auth,
            &[OCI_IMAGE_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE],
        )
        .await
        .map_err(|e| anyhow::anyhow!("plugin `{name}`: pulling {source}: {e}"))?;
    let digest = format!("sha256:{}", hex::encode(Sha256::digest(&raw)));
    if let Some(wanted) = reference.digest() {
        if wanted != digest {
            anyhow::bail!(
                "plugin `{name}`: the registry answered {source} with a manifest whose digest is {digest}, not {wanted}; \
                 the registry or the network path altered it"
            );
        }
    }
    let manifest: OciImageManifest = serde_json::from_slice(&raw).map_err(|e| {
        anyhow::anyhow!("plugin `{name}`: {source} is not an OCI image manifest: {e}")
    })?;
    let is_wasm = manifest.config.media_type == WASM_CONFIG_MEDIA_TYPE
        && manifest.layers.len() == 1
        && manifest.layers[0].media_type == WASM_LAYER_MEDIA_TYPE;
    if !is_wasm {
        anyhow::bail!(
            "plugin `{name}`: {source} is not a Wasm plugin artifact (config `{}`, layers [{}]); \
             expected config `{WASM_CONFIG_MEDIA_TYPE}` and one `{WASM_LAYER_MEDIA_TYPE}` layer, as `dax plugin push` writes",
            manifest.config.media_type,
            manifest
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    Ok((manifest, digest))
}

/// Read one blob, stopping past `max` bytes, and check its digest.
async fn read_blob(
    name: &str,
    source: &str,
    client: &Client,
    reference: &Reference,
    descriptor: &OciDescriptor,
    max: u64,
) -> anyhow::Result<Vec<u8>> {
    let mut stream = client
        .pull_blob_stream(reference, descriptor)
        .await
        .map_err(|e| anyhow::anyhow!("plugin `{name}`: pulling {source}: {e}"))?;
    let mut bytes = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| anyhow::anyhow!("plugin `{name}`: pulling {source}: {e}"))?;
        if (bytes.len() + chunk.len()) as u64 > max {
            anyhow::bail!(
                "plugin `{name}`: pulling {source} stopped: a blob is larger than the {} limit",
                super::source::format_bytes(max)
            );
        }
        bytes.extend_from_slice(&chunk);
    }
    let actual = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
    if actual != descriptor.digest {
        anyhow::bail!(
            "plugin `{name}`: the registry served blob {} of {source} with digest {actual}; the registry or the network path altered it",
            descriptor.digest
        );
    }
    Ok(bytes)
}

/// Push `wasm` to `target` in the Wasm OCI layout; returns the manifest digest.
pub async fn push(wasm: &[u8], target: &str, allow_insecure_http: bool) -> anyhow::Result<String> {
    let reference = parse("pushed", target)?;
    let auth = registry_auth(reference.resolve_registry())?;
    let client = client(allow_insecure_http, &DownloadLimits::default());
    let layer_digest = format!("sha256:{}", hex::encode(Sha256::digest(wasm)));
    let config = serde_json::json!({
        "architecture": "wasm",
        "os": "wasip2",
        "layerDigests": [layer_digest],
    });
    let layers = [ImageLayer::new(
        wasm.to_vec(),
        WASM_LAYER_MEDIA_TYPE.to_string(),
        None,
    )];
    let config = Config::new(
        serde_json::to_vec(&config)?,
        WASM_CONFIG_MEDIA_TYPE.to_string(),
        None,
    );
    client
        .push(&reference, &layers, config, &auth, None)
        .await
        .map_err(|e| anyhow::anyhow!("pushing to {target}: {e}"))?;
    client
        .fetch_manifest_digest(&reference, &auth)
        .await
        .map_err(|e| anyhow::anyhow!("reading back the digest of {target}: {e}"))
}

/// Store `signature` (JSON) as a referrer of the plugin manifest at `target`.
pub async fn push_signature(
    target: &str,
    allow_insecure_http: bool,
    signature: &[u8],
) -> anyhow::Result<String> {
    let reference = parse("signed", target)?;
    let auth = registry_auth(reference.resolve_registry())?;
    let client = client(allow_insecure_http, &DownloadLimits::default());
    let (subject_raw, subject_digest) = client
        .pull_manifest_raw(
            &reference,
            &auth,
            &[OCI_IMAGE_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE],
        )
        .await
        .map_err(|e| anyhow::anyhow!("reading {target}: {e}"))?;
    let subject_digest = if subject_digest.is_empty() {
        format!("sha256:{}", hex::encode(Sha256::digest(&subject_raw)))
    } else {
        subject_digest
    };
    let empty = b"{}".to_vec();
    let layer = ImageLayer::new(signature.to_vec(), SIGNATURE_MEDIA_TYPE.to_string(), None);
    let config = Config::new(empty, EMPTY_CONFIG_MEDIA_TYPE.to_string(), None);
    let mut manifest = OciImageManifest::build(std::slice::from_ref(&layer), &config, None);
    manifest.artifact_type = Some(SIGNATURE_MEDIA_TYPE.to_string());
    manifest.subject = Some(OciDescriptor {
        media_type: OCI_IMAGE_MEDIA_TYPE.to_string(),
        digest: subject_digest.clone(),
        size: subject_raw.len() as i64,
        ..Default::default()
    });
    // Pushed by its own digest (untagged, so it never replaces the plugin's tag), from the
    // exact bytes whose digest is recorded in the index.
    let body = serde_json::to_vec(&manifest)?;
    let signature_digest = format!("sha256:{}", hex::encode(Sha256::digest(&body)));
    let by_digest = Reference::with_digest(
        reference.registry().to_string(),
        reference.repository().to_string(),
        signature_digest.clone(),
    );
    let pushing = |e: oci_client::errors::OciDistributionError| {
        anyhow::anyhow!("pushing the signature of {target}: {e}")
    };
    client
        .push_blob(&reference, &layer.data, &layer.sha256_digest())
        .await
        .map_err(pushing)?;
    client
        .push_blob(&reference, &config.data, &manifest.config.digest)
        .await
        .map_err(pushing)?;
    client
        .push_manifest_raw(&by_digest, body.clone(), OCI_IMAGE_MEDIA_TYPE.parse()?)
        .await
        .map_err(pushing)?;
    // The referrers tag schema: add the signature to the index at `sha256-<subject>`.
    let index_ref = Reference::with_tag(
        reference.registry().to_string(),
        reference.repository().to_string(),
        subject_digest.replace(':', "-"),
    );
    let mut index = match client
        .pull_manifest_raw(&index_ref, &auth, &[OCI_IMAGE_INDEX_MEDIA_TYPE])
        .await
    {
        Ok((raw, _)) => {
            serde_json::from_slice::<OciImageIndex>(&raw).unwrap_or_else(|_| empty_index())
        }
        Err(_) => empty_index(),
    };
    index.manifests.retain(|m| m.digest != signature_digest);
    index.manifests.push(ImageIndexEntry {
        media_type: OCI_IMAGE_MEDIA_TYPE.to_string(),
        digest: signature_digest.clone(),
        size: body.len() as i64,
        platform: None,
        annotations: None,
    });
    client
        .push_manifest(&index_ref, &OciManifest::ImageIndex(index))
        .await
        .map_err(|e| anyhow::anyhow!("pushing the referrers index of {target}: {e}"))?;
    Ok(signature_digest)
}

fn empty_index() -> OciImageIndex {
    OciImageIndex {
        schema_version: 2,
        media_type: Some(OCI_IMAGE_INDEX_MEDIA_TYPE.to_string()),
        manifests: Vec::new(),
        artifact_type: None,
        annotations: None,
    }
}

/// The signatures (JSON documents) stored as referrers of the plugin manifest at `source`,
/// with that manifest's digest. Bounded: at most [`MAX_SIGNATURES`] of at most 64 KiB each,
/// all within `limits.timeout`.
pub async fn pull_signatures(
    name: &str,
    source: &str,
    allow_insecure_http: bool,
    limits: &DownloadLimits,
) -> anyhow::Result<Vec<Vec<u8>>> {
    let reference = parse(name, source)?;
    let auth = registry_auth(reference.resolve_registry())?;
    let client = client(allow_insecure_http, limits);
    let work = async {
        let (_, subject) = pull_plugin_manifest(name, source, &client, &reference, &auth).await?;
        let repo = |tag_or_digest: Result<String, String>| match tag_or_digest {
            Ok(tag) => Reference::with_tag(
                reference.registry().to_string(),
                reference.repository().to_string(),
                tag,
            ),
            Err(digest) => Reference::with_digest(
                reference.registry().to_string(),
                reference.repository().to_string(),
                digest,
            ),
        };
        // The referrers API where the registry has it, else the tag schema.
        let listed = match client
            .pull_referrers(&repo(Err(subject.clone())), Some(SIGNATURE_MEDIA_TYPE))
            .await
        {
            Ok(index) => index.manifests,
            Err(_) => match client
                .pull_manifest_raw(
                    &repo(Ok(subject.replace(':', "-"))),
                    &auth,
                    &[OCI_IMAGE_INDEX_MEDIA_TYPE],
                )
                .await
            {
                Ok((raw, _)) => serde_json::from_slice::<OciImageIndex>(&raw)
                    .map(|i| i.manifests)
                    .unwrap_or_default(),
                Err(_) => Vec::new(),
            },
        };
        let mut signatures = Vec::new();
        for entry in listed.iter().take(MAX_SIGNATURES) {
            let by_digest = repo(Err(entry.digest.clone()));
            let Ok((raw, _)) = client
                .pull_manifest_raw(&by_digest, &auth, &[OCI_IMAGE_MEDIA_TYPE])
                .await
            else {
                continue;
            };
            if format!("sha256:{}", hex::encode(Sha256::digest(&raw))) != entry.digest {
                continue;
            }
            let Ok(manifest) = serde_json::from_slice::<OciImageManifest>(&raw) else {
                continue;
            };
            let refers_here = manifest
                .subject
                .as_ref()
                .is_some_and(|s| s.digest == subject);
            let is_signature = manifest.artifact_type.as_deref() == Some(SIGNATURE_MEDIA_TYPE);
            match manifest.layers.as_slice() {
                [layer]
                    if refers_here && is_signature && layer.media_type == SIGNATURE_MEDIA_TYPE =>
                {
                    if let Ok(bytes) = read_blob(
                        name,
                        source,
                        &client,
                        &by_digest,
                        layer,
                        MAX_SIGNATURE_BYTES,
                    )
                    .await
                    {
                        signatures.push(bytes);
                    }
                }
                _ => continue,
            }
        }
        Ok(signatures)
    };
    within(name, source, limits, work).await
}
