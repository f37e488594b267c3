//! Distribution and trust end to end, through the `dax` binary and a real OCI registry
//! (Debian's `docker-registry`, the CNCF Distribution registry, on a loopback port with its
//! storage in a temporary directory): push, pull, deploy by tag and by digest, tampered and
//! wrongly pinned plugins refused, and the `[trust]` signature policy.

use dax_tests::{dax_bin, free_port, plugin_path};
use sha2::Digest as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The registry binary of the Debian package `docker-registry`.
const REGISTRY: &str = "/usr/bin/docker-registry";

/// A registry child process; killed (by pid) when dropped.
struct Registry {
    child: std::process::Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Registry {
    /// Start a registry, or `None` (with a SKIP line) when it is not installed — a panic
    /// under CI, where tests/run.sh installs it.
    fn start() -> Option<Registry> {
        if !Path::new(REGISTRY).exists() {
            assert!(
                !dax_tests::in_ci(),
                "{REGISTRY} is missing: apt-get install -y docker-registry (tests/run.sh does)"
            );
            eprintln!("SKIP: {REGISTRY} missing (apt-get install -y docker-registry)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
            dir.path().join("storage").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(REGISTRY)
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        let registry = Registry { child, port, dir };
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "registry did not listen on {port}: {}",
                std::fs::read_to_string(registry.dir.path().join("registry.log"))
                    .unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(registry)
    }

    fn reference(&self, repo_and_tag: &str) -> String {
        format!("oci://127.0.0.1:{}/{repo_and_tag}", self.port)
    }

    /// The file the registry stores a blob in.
    fn blob_file(&self, digest_hex: &str) -> PathBuf {
        self.dir
            .path()
            .join("storage/docker/registry/v2/blobs/sha256")
            .join(&digest_hex[..2])
            .join(digest_hex)
            .join("data")
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Run `dax ARGS` in `dir`; returns (exit code, stdout + stderr).
fn dax(dir: &Path, args: &[&str]) -> (i32, String) {
    let out: Output = Command::new(dax_bin())
        .args(args)
        .current_dir(dir)
        .env(
            "DAX_CACHE_DIR",
            dax_tests::repo_root().join("target/test-component-cache"),
        )
        // No operator credentials leak into the test, and none are needed.
        .env("DOCKER_CONFIG", dir.join("no-docker-config"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn ok(dir: &Path, args: &[&str]) -> String {
    let (code, text) = dax(dir, args);
    assert_eq!(code, 0, "dax {args:?} failed:\n{text}");
    text
}

/// Push `plugin` (a test/example plugin name) to `repo_and_tag`; returns (sha256 of the
/// .wasm, manifest digest).
fn push(dir: &Path, registry: &Registry, plugin: &str, repo_and_tag: &str) -> (String, String) {
    let file = plugin_path(plugin);
    let text = ok(
        dir,
        &[
            "--output",
            "json",
            "plugin",
            "push",
            file.to_str().unwrap(),
            &registry.reference(repo_and_tag),
            "--allow-insecure-http",
        ],
    );
    let v: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(
        v["sha256"].as_str().unwrap(),
        sha256_hex(&std::fs::read(&file).unwrap())
    );
    (
        v["sha256"].as_str().unwrap().to_string(),
        v["manifest"].as_str().unwrap().to_string(),
    )
}

/// A deployment of the `files` test target with the builtin canary strategy, whose one
/// check is answered by the `metrics` plugin declared by `metrics_table` (the body of
/// `[plugins.metrics]`), plus `extra` top-level TOML.
fn write_deployment(dir: &Path, metrics_table: &str, extra: &str) -> PathBuf {
    std::fs::create_dir_all(dir.join("target-state")).unwrap();
    let text = format!(
        r#"[deployment]
app = "shop"
version = "v2"
artifact = "shop:v2"

[target]
plugin = "files"
[target.workload]
replicas = 1

[strategy]
plugin = "canary"
[strategy.params]
interval = "100ms"
threshold = 2
maxWeight = 20
stepWeight = 10

[[checks]]
name = "success-rate"
provider = "metrics"
query = "value:100"
min = 99

{extra}

[plugins.files]
source = "{file_target}"
[plugins.files.config]
stable_version = "v1"
[plugins.files.grants]
dirs = [{{ host = "target-state", guest = "/state", writable = true }}]

[plugins.canary]
source = "builtin:canary"

[plugins.metrics]
{metrics_table}
"#,
        file_target = plugin_path("file-target").display(),
    );
    let path = dir.join("deploy.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn oci_table(source: &str, sha256: &str) -> String {
    format!("source = \"{source}\"\nsha256 = \"{sha256}\"\nallow_insecure_http = true\n")
}

fn deploy(dir: &Path, id: &str) -> (i32, String) {
    dax(
        dir,
        &[
            "deploy",
            "deploy.toml",
            "--id",
            id,
            "--no-progress",
            "--state-dir",
            dir.join("state").to_str().unwrap(),
        ],
    )
}

#[test]
fn push_then_deploy_by_tag_and_by_digest_and_pull_back() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (sha256, manifest) = push(dir, &registry, "hello-metrics", "dax/hello-metrics:1");
    assert!(manifest.starts_with("sha256:"), "{manifest}");

    // By tag.
    write_deployment(
        dir,
        &oci_table(&registry.reference("dax/hello-metrics:1"), &sha256),
        "",
    );
    let (code, text) = deploy(dir, "by-tag");
    assert_eq!(code, 0, "deploy by tag:\n{text}");
    // By digest (the manifest's), in a second deployment right after.
    let by_digest = registry.reference(&format!("dax/hello-metrics@{manifest}"));
    write_deployment(dir, &oci_table(&by_digest, &sha256), "");
    let (code, text) = deploy(dir, "by-digest");
    assert_eq!(code, 0, "deploy by digest:\n{text}");

    // Pull it back: the same bytes, and the pin printed.
    let out = dir.join("pulled.wasm");
    let text = ok(
        dir,
        &[
            "plugin",
            "pull",
            &by_digest,
            "-o",
            out.to_str().unwrap(),
            "--sha256",
            &sha256,
            "--allow-insecure-http",
        ],
    );
    assert!(text.contains(&format!("sha256 = \"{sha256}\"")), "{text}");
    assert_eq!(sha256_hex(&std::fs::read(&out).unwrap()), sha256);

    // An oci:// source without a pin is refused by `dax validate`, naming the field.
    write_deployment(
        dir,
        &format!(
            "source = \"{}\"\nallow_insecure_http = true\n",
            registry.reference("dax/hello-metrics:1")
        ),
        "",
    );
    let (code, text) = dax(dir, &["validate", "deploy.toml"]);
    assert_ne!(code, 0);
    assert!(text.contains("plugins.metrics.sha256"), "{text}");
    assert!(text.contains("pins no `sha256`"), "{text}");
}

#[test]
fn tampered_bytes_wrong_pin_and_wrong_digest_are_refused() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    let (sha256, manifest) = push(dir, &registry, "hello-metrics", "dax/metrics:1");

    // The tag now points at other bytes (a different plugin pushed over it): the pin
    // catches it and the refusal names both digests.
    let (other_sha256, _) = push(dir, &registry, "adversary", "dax/metrics:1");
    write_deployment(
        dir,
        &oci_table(&registry.reference("dax/metrics:1"), &sha256),
        "",
    );
    let (code, text) = deploy(dir, "swapped");
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "is {other_sha256}, but [plugins.metrics] pins {sha256}"
        )),
        "{text}"
    );

    // A manifest digest the registry does not have.
    let missing = format!("sha256:{}", "0".repeat(64));
    write_deployment(
        dir,
        &oci_table(
            &registry.reference(&format!("dax/metrics@{missing}")),
            &sha256,
        ),
        "",
    );
    let (code, text) = dax(dir, &["validate", "deploy.toml"]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("plugins.metrics.source"), "{text}");
    assert!(text.contains(&format!("dax/metrics@{missing}")), "{text}");

    // The stored blob itself altered (as a compromised registry would): the digest check
    // of the layer refuses it, by digest reference too.
    let blob = registry.blob_file(&sha256);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, &bytes).unwrap();
    write_deployment(
        dir,
        &oci_table(
            &registry.reference(&format!("dax/metrics@{manifest}")),
            &sha256,
        ),
        "",
    );
    let (code, text) = dax(dir, &["validate", "deploy.toml"]);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains(&format!(
            "Invalid digest. Expected sha256:{sha256}, got sha256:"
        )),
        "{text}"
    );

    // Plain http without the opt-in: refused (dax speaks https to the registry).
    write_deployment(
        dir,
        &format!(
            "source = \"{}\"\nsha256 = \"{other_sha256}\"\n",
            registry.reference("dax/metrics:1")
        ),
        "",
    );
    let (code, text) = dax(dir, &["validate", "deploy.toml"]);
    assert_ne!(code, 0, "{text}");

    // The host kept working: the plugin now at the tag loads with its own pin.
    write_deployment(
        dir,
        &oci_table(&registry.reference("dax/metrics:1"), &other_sha256),
        "",
    );
    let (code, text) = dax(dir, &["validate", "deploy.toml"]);
    assert_eq!(code, 0, "{text}");
}

#[test]
fn the_trust_policy_refuses_unsigned_and_wrongly_signed_plugins() {
    let Some(registry) = Registry::start() else {
        return;
    };
    let work = tempfile::tempdir().unwrap();
    let dir = work.path();
    std::fs::create_dir_all(dir.join("keys")).unwrap();
    // `--output json` says where the keys went and which public key it is.
    let made = ok(
        dir,
        &["--output", "json", "plugin", "keygen", "keys/vendor"],
    );
    let made: serde_json::Value = serde_json::from_str(made.trim()).unwrap();
    assert_eq!(made["secret_key_file"], "keys/vendor.key", "{made}");
    assert_eq!(made["public_key_file"], "keys/vendor.pub", "{made}");
    assert!(
        made["fingerprint"]
            .as_str()
            .is_some_and(|k| k.starts_with("ed25519:")),
        "{made}"
    );
    ok(dir, &["plugin", "keygen", "keys/other"]);
    let trust = "[trust]\nrequire_signature = true\nkeys = [\"keys/vendor.pub\"]\n";
    let (sha256, _) = push(dir, &registry, "hello-metrics", "dax/signed:1");
    let source = registry.reference("dax/signed:1");
    write_deployment(dir, &oci_table(&source, &sha256), trust);

    // Unsigned: refused, naming the plugin, its source and what to do. `files` (a local
    // file, unsigned) is refused too; `canary` is builtin and needs no signature.
    let (code, text) = dax(dir, &["validate", "deploy.toml"]);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains(&format!("plugin `metrics` (source `{source}`, sha256 {sha256}) is refused: [trust] require_signature = true needs a valid signature by one of [keys/vendor.pub], and it is unsigned")),
        "{text}"
    );
    assert!(text.contains("dax plugin sign"), "{text}");
    assert!(text.contains("plugin `files`"), "{text}");
    assert!(!text.contains("plugin `canary`"), "{text}");

    // Signed by a key not listed: refused.
    let file_target = plugin_path("file-target");
    let local_target = dir.join("file-target.wasm");
    std::fs::copy(&file_target, &local_target).unwrap();
    ok(
        dir,
        &[
            "plugin",
            "sign",
            &source,
            "--key",
            "keys/other.key",
            "--allow-insecure-http",
        ],
    );
    let signed = ok(
        dir,
        &[
            "--output",
            "json",
            "plugin",
            "sign",
            "file-target.wasm",
            "--key",
            "keys/vendor.key",
        ],
    );
    let signed: serde_json::Value = serde_json::from_str(signed.trim()).unwrap();
    assert_eq!(
        signed["sha256"].as_str(),
        Some(sha256_hex(&std::fs::read(&local_target).unwrap()).as_str()),
        "{signed}"
    );
    assert_eq!(signed["signature"], "file-target.wasm.sig", "{signed}");
    let text = std::fs::read_to_string(dir.join("deploy.toml"))
        .unwrap()
        .replace(&file_target.display().to_string(), "file-target.wasm");
    std::fs::write(dir.join("deploy.toml"), text).unwrap();
    let (code, text) = dax(dir, &["validate", "deploy.toml"]);
    assert_ne!(code, 0, "{text}");
    assert!(
        text.contains("signed only by keys not trusted here: ed25519:"),
        "{text}"
    );
    assert!(
        !text.contains("plugin `files`"),
        "the signed file is accepted:\n{text}"
    );
    let (code, text) = dax(
        dir,
        &[
            "plugin",
            "verify",
            &source,
            "--key",
            "keys/vendor.pub",
            "--allow-insecure-http",
        ],
    );
    assert_eq!(code, 1, "{text}");

    // Signed by the listed key: accepted, and a real deployment runs.
    ok(
        dir,
        &[
            "plugin",
            "sign",
            &source,
            "--key",
            "keys/vendor.key",
            "--allow-insecure-http",
        ],
    );
    let text = ok(
        dir,
        &[
            "plugin",
            "verify",
            &source,
            "--key",
            "keys/vendor.pub",
            "--allow-insecure-http",
        ],
    );
    assert!(
        text.contains("signed by keys/vendor.pub (ed25519:"),
        "{text}"
    );
    let text = ok(
        dir,
        &[
            "plugin",
            "inspect",
            &source,
            "--sha256",
            &sha256,
            "--allow-insecure-http",
            "--key",
            "keys/vendor.pub",
        ],
    );
    assert!(
        text.contains("signature    signed by keys/vendor.pub"),
        "{text}"
    );
    let (code, text) = deploy(dir, "signed");
    assert_eq!(code, 0, "{text}");

    // A tampered sidecar signature for the local file: refused again.
    let sig = dir.join("file-target.wasm.sig");
    let tampered = std::fs::read_to_string(&sig)
        .unwrap()
        .replace("\"signature\":\"", "\"signature\":\"AAAA");
    std::fs::write(&sig, tampered).unwrap();
    let (code, text) = dax(dir, &["validate", "deploy.toml"]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("plugin `files`"), "{text}");
    assert!(text.contains("signature(s) that do not verify"), "{text}");

    // A key file that is not one: `dax validate` names the field.
    std::fs::write(dir.join("keys/broken.pub"), "not a key\n").unwrap();
    let text = std::fs::read_to_string(dir.join("deploy.toml"))
        .unwrap()
        .replace("keys/vendor.pub", "keys/broken.pub");
    std::fs::write(dir.join("deploy.toml"), text).unwrap();
    let (code, text) = dax(dir, &["validate", "deploy.toml"]);
    assert_ne!(code, 0, "{text}");
    assert!(text.contains("trust.keys[0]"), "{text}");
}
