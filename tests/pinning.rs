//! Nothing runs that was not pinned: the compile cache runs only entries its key vouches for,
//! a URL source must pin its digest, use https unless the operator opts in, and stay within
//! size and time bounds; and `dax plugin build` that builds nothing fails.

use dax::contract::MetricAnswer;
use dax::plugin::cache::CompileCache;
use dax::plugin::source::{resolve_for_load, resolve_source_within, DownloadLimits};
use dax::plugin::{CompileSource, HostOptions, PluginHost, PluginSpec};
use dax_tests::dax_bin;
use dax_tests::query;
use dax_tests::{plugin_path, spec};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

fn host_with_cache(dir: &Path) -> PluginHost {
    PluginHost::new(HostOptions {
        cache_dir: dir.to_path_buf(),
        pooling: true,
        ..Default::default()
    })
    .unwrap()
}

async fn answer(plugin: &dax::plugin::LoadedPlugin, text: &str) -> MetricAnswer {
    plugin
        .metric_provider(serde_json::json!({}))
        .await
        .unwrap()
        .run_query(&query(text))
        .await
        .unwrap()
}

// ---------------------------------------------------------------- compile cache

/// The attack of the issue: a valid entry of plugin X (here `hello-metrics`) put in place of
/// plugin Y's entry (`adversary`), with a matching digest file as the old cache trusted.
/// Loading Y must run Y — recompiled from its pinned `.wasm` — and repair the entry.
#[tokio::test]
async fn a_swapped_cache_entry_is_never_executed() {
    let dir = tempfile::tempdir().unwrap();
    let x = std::fs::read(plugin_path("hello-metrics")).unwrap();
    let y = std::fs::read(plugin_path("adversary")).unwrap();
    let (x_digest, y_digest) = (sha256_hex(&x), sha256_hex(&y));
    let here = Path::new(".");
    let host = host_with_cache(dir.path());
    let (_, source) = host
        .load_bytes("x", &spec(Path::new("x.wasm")), here, &x, "x")
        .await
        .unwrap();
    assert_eq!(source, CompileSource::Compiled);
    let (_, source) = host
        .load_bytes("y", &spec(Path::new("y.wasm")), here, &y, "y")
        .await
        .unwrap();
    assert_eq!(source, CompileSource::Compiled);

    let cache = CompileCache::new(dir.path(), host.engine()).unwrap();
    assert_eq!(cache.disabled_reason(), None);
    let (x_entry, y_entry) = (cache.entry_path(&x_digest), cache.entry_path(&y_digest));
    let x_bytes = std::fs::read(&x_entry).unwrap();
    std::fs::copy(&x_entry, &y_entry).unwrap();
    std::fs::write(y_entry.with_extension("cwasm.sha256"), sha256_hex(&x_bytes)).unwrap();

    // A new process sees the swapped entry.
    let host = host_with_cache(dir.path());
    let (plugin, source) = host
        .load_bytes("y", &spec(Path::new("y.wasm")), here, &y, "y")
        .await
        .unwrap();
    assert_eq!(
        source,
        CompileSource::Compiled,
        "the swapped entry must not be loaded"
    );
    assert_eq!(plugin.info().name, "adversary");
    // `hello-metrics` answers "no data" to `ok`; the adversary answers 1.
    assert_eq!(answer(&plugin, "ok").await, MetricAnswer::Value(1.0));

    // The entry was rewritten with Y's own compiled code, which the next process trusts.
    assert_ne!(std::fs::read(&y_entry).unwrap(), x_bytes);
    assert!(!y_entry.with_extension("cwasm.sha256").exists());
    let host = host_with_cache(dir.path());
    let (plugin, source) = host
        .load_bytes("y", &spec(Path::new("y.wasm")), here, &y, "y")
        .await
        .unwrap();
    assert_eq!(source, CompileSource::Cache);
    assert_eq!(answer(&plugin, "ok").await, MetricAnswer::Value(1.0));
    // X's own entry was never touched and still serves X.
    let (plugin, source) = host
        .load_bytes("x", &spec(Path::new("x.wasm")), here, &x, "x")
        .await
        .unwrap();
    assert_eq!(source, CompileSource::Cache);
    assert_eq!(answer(&plugin, "value:3").await, MetricAnswer::Value(3.0));
}

/// A cache with its key in a private temporary directory; returns (cache root, key path).
fn private_key() -> (tempfile::TempDir, PathBuf) {
    let keys = tempfile::tempdir().unwrap();
    let key = keys.path().join("dax").join("cache.key");
    (keys, key)
}

/// A host (for its engine), the `hello-metrics` component and its digest, an empty cache
/// root, and a key path outside it.
struct CacheCase {
    host: PluginHost,
    _host_cache: tempfile::TempDir,
    wasm: Vec<u8>,
    digest: String,
    root: tempfile::TempDir,
    _keys: tempfile::TempDir,
    key: PathBuf,
}

impl CacheCase {
    fn new() -> Self {
        let (host, _host_cache) = dax_tests::fresh_host();
        let wasm = std::fs::read(plugin_path("hello-metrics")).unwrap();
        let (_keys, key) = private_key();
        CacheCase {
            host,
            _host_cache,
            digest: sha256_hex(&wasm),
            wasm,
            root: tempfile::tempdir().unwrap(),
            _keys,
            key,
        }
    }
}

#[tokio::test]
async fn a_damaged_entry_or_a_lost_key_recompiles() {
    let case = CacheCase::new();
    let engine = case.host.engine();
    let root = &case.root;
    let (wasm, digest, key) = (case.wasm.clone(), case.digest.clone(), case.key.clone());

    let cache = CompileCache::with_key_file(root.path(), Some(&key), engine);
    assert_eq!(cache.disabled_reason(), None);
    // The key is created private, outside the cache directory.
    let meta = std::fs::metadata(&key).unwrap();
    assert_eq!(meta.len(), 32);
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(!key.starts_with(root.path()));

    let source = |cache: &CompileCache| cache.get_or_compile(engine, &digest, &wasm).unwrap().1;
    assert_eq!(source(&cache), CompileSource::Compiled);
    assert_eq!(source(&cache), CompileSource::Cache);
    let entry = cache.entry_path(&digest);
    let good = std::fs::read(&entry).unwrap();

    let mut flipped = good.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    // An entry is `artifact | tag (32 bytes) | trailer (10 bytes)`: flip inside each part.
    let flip_at = |at: usize| {
        let mut bytes = good.clone();
        bytes[at] ^= 1;
        bytes
    };
    let damaged: Vec<(&str, Vec<u8>)> = vec![
        ("truncated to half", good[..good.len() / 2].to_vec()),
        ("truncated inside the header", good[..5].to_vec()),
        ("empty", Vec::new()),
        ("one bit of the trailer flipped", flipped),
        ("one bit of the artifact flipped", flip_at(good.len() / 2)),
        ("one bit of the tag flipped", flip_at(good.len() - 10 - 1)),
        ("garbage of the same length", vec![0x5a; good.len()]),
        ("the header and garbage", {
            let mut g = b"DAXCWASM1\n".to_vec();
            g.extend(std::iter::repeat_n(7u8, 4096));
            g
        }),
    ];
    for (what, bytes) in damaged {
        std::fs::write(&entry, &bytes).unwrap();
        assert_eq!(source(&cache), CompileSource::Compiled, "entry {what}");
        assert_eq!(
            std::fs::read(&entry).unwrap(),
            good,
            "entry {what} rewritten"
        );
        assert_eq!(source(&cache), CompileSource::Cache, "entry {what}");
    }

    // A link to an endless device is never opened (it would never finish reading).
    std::fs::remove_file(&entry).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &entry).unwrap();
    assert_eq!(source(&cache), CompileSource::Compiled);
    assert!(std::fs::symlink_metadata(&entry).unwrap().is_file());

    // A lost key (a fresh CI machine restoring an old cache): a new key, entries recompile.
    std::fs::remove_file(&key).unwrap();
    let cache = CompileCache::with_key_file(root.path(), Some(&key), engine);
    assert_eq!(cache.disabled_reason(), None);
    assert_eq!(source(&cache), CompileSource::Compiled);
    assert_eq!(source(&cache), CompileSource::Cache);
    // Another machine's key (or anyone's guess) does not verify this machine's entries.
    let (_other_keys, other_key) = private_key();
    let other = CompileCache::with_key_file(root.path(), Some(&other_key), engine);
    assert_eq!(source(&other), CompileSource::Compiled);
}

/// The stamp that spares a later run re-hashing an entry vouches for one unchanged file only:
/// an entry changed in place (even with its size and mtime kept), a different file renamed
/// over it, or a stamp not made with this machine's key, and every byte is hashed again.
#[tokio::test]
async fn a_stamp_never_vouches_for_a_changed_or_different_entry() {
    use std::io::{Seek, SeekFrom, Write};
    let case = CacheCase::new();
    let engine = case.host.engine();
    let root = &case.root;
    let (wasm, digest, key) = (case.wasm.clone(), case.digest.clone(), case.key.clone());
    let cache = CompileCache::with_key_file(root.path(), Some(&key), engine);
    let source = |cache: &CompileCache| cache.get_or_compile(engine, &digest, &wasm).unwrap().1;
    let (entry, stamp) = (cache.entry_path(&digest), cache.stamp_path(&digest));
    let settle =
        || std::thread::sleep(dax::plugin::cache::STAMP_AFTER + Duration::from_millis(100));
    // An entry younger than STAMP_AFTER is hashed and not stamped; once settled, it is.
    assert_eq!(source(&cache), CompileSource::Compiled);
    assert_eq!(source(&cache), CompileSource::Cache);
    assert!(!stamp.exists(), "a new entry was stamped");
    settle();
    assert_eq!(source(&cache), CompileSource::Cache);
    assert!(
        stamp.exists(),
        "a settled entry that verified was not stamped"
    );
    assert_eq!(source(&cache), CompileSource::Cache);
    let good = std::fs::read(&entry).unwrap();

    // Changed in place, same inode, same size, mtime put back: its ctime moved, so it is
    // hashed, refused and recompiled (the stamp of the replaced entry goes with it).
    let mtime = std::fs::metadata(&entry).unwrap().modified().unwrap();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(&entry)
        .unwrap();
    file.seek(SeekFrom::Start(good.len() as u64 / 2)).unwrap();
    file.write_all(&[good[good.len() / 2] ^ 1]).unwrap();
    file.set_modified(mtime).unwrap();
    drop(file);
    assert_eq!(
        source(&cache),
        CompileSource::Compiled,
        "entry changed in place"
    );
    assert_eq!(std::fs::read(&entry).unwrap(), good);
    assert!(!stamp.exists(), "the stamp of a replaced entry was kept");

    // A different file renamed over a stamped entry (a restored cache keeps names, not inodes).
    settle();
    assert_eq!(source(&cache), CompileSource::Cache);
    let kept_stamp = std::fs::read(&stamp).unwrap();
    let mut other = good.clone();
    other[good.len() / 3] ^= 1;
    let planted = root.path().join("planted");
    std::fs::write(&planted, &other).unwrap();
    std::fs::File::options()
        .write(true)
        .open(&planted)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    std::fs::rename(&planted, &entry).unwrap();
    std::fs::write(&stamp, &kept_stamp).unwrap();
    assert_eq!(
        source(&cache),
        CompileSource::Compiled,
        "different file, old stamp"
    );

    // A stamp not made with this key: the entry is hashed (and here refused).
    settle();
    std::fs::write(&entry, &other).unwrap();
    std::fs::write(&stamp, [0x42u8; 32]).unwrap();
    settle();
    assert_eq!(source(&cache), CompileSource::Compiled, "forged stamp");
}

/// A source file's stamp spares a later load reading and hashing the `.wasm`, for that one
/// unchanged file only: a file changed in place (size and mtime kept), a different file with
/// the old stamp copied to its name, a forged stamp, or a change between the check and the
/// compile, and the bytes are hashed again, so the pin still decides.
#[tokio::test]
async fn a_source_stamp_never_lets_a_changed_file_pass_its_pin() {
    use std::io::{Seek, SeekFrom, Write};
    let case = CacheCase::new();
    let cache = CompileCache::with_key_file(case.root.path(), Some(&case.key), case.host.engine());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugin.wasm");
    let good = case.wasm.clone();
    std::fs::write(&file, &good).unwrap();
    let mut pinned = spec(&file);
    pinned.sha256 = Some(case.digest.clone());
    let resolve = || async {
        resolve_for_load("p", &pinned, dir.path(), &cache)
            .await
            .unwrap()
    };
    let stamp_of = |path: &Path| cache.source_stamp_path(&std::fs::metadata(path).unwrap());
    let settle =
        || std::thread::sleep(dax::plugin::cache::STAMP_AFTER + Duration::from_millis(100));

    // A file changed under STAMP_AFTER ago is read and not stamped; once settled, it is, and
    // the next load neither reads nor hashes it.
    let wasm = resolve().await;
    assert!(!wasm.vouched_by_stamp());
    assert!(!stamp_of(&file).exists(), "a fresh file was stamped");
    settle();
    assert!(!resolve().await.vouched_by_stamp());
    assert!(stamp_of(&file).exists(), "a settled file was not stamped");
    let wasm = resolve().await;
    assert!(wasm.vouched_by_stamp());
    assert_eq!(wasm.digest, case.digest);
    // Unread until it must be compiled; then read, hashed again, and the same bytes.
    assert_eq!(wasm.into_bytes().unwrap().as_ref(), good.as_slice());

    // Changed in place, same inode and size, mtime put back: its ctime moved.
    let mut other = good.clone();
    let at = good.len() / 2;
    other[at] ^= 1;
    let change_in_place = |bytes: &[u8]| {
        let mtime = std::fs::metadata(&file).unwrap().modified().unwrap();
        let mut f = std::fs::OpenOptions::new().write(true).open(&file).unwrap();
        f.seek(SeekFrom::Start(at as u64)).unwrap();
        f.write_all(&bytes[at..at + 1]).unwrap();
        f.set_modified(mtime).unwrap();
    };
    change_in_place(&other);
    let wasm = resolve().await;
    assert!(
        !wasm.vouched_by_stamp(),
        "a file changed in place was vouched for"
    );
    assert_eq!(wasm.digest, sha256_hex(&other));
    // Through the host: the pin refuses it, whatever stamps the cache holds.
    let host = host_with_cache(case.root.path());
    let err = host
        .load("p", &pinned, dir.path())
        .await
        .err()
        .expect("pin must refuse");
    assert_eq!(err.field, "sha256", "{err:?}");

    // A different file (a new inode) with the good file's stamp copied to its name.
    change_in_place(&good);
    settle();
    assert!(!resolve().await.vouched_by_stamp());
    assert!(resolve().await.vouched_by_stamp());
    let kept = std::fs::read(stamp_of(&file)).unwrap();
    let planted = dir.path().join("planted");
    std::fs::write(&planted, &other).unwrap();
    std::fs::rename(&planted, &file).unwrap();
    std::fs::write(stamp_of(&file), &kept).unwrap();
    settle();
    let wasm = resolve().await;
    assert!(!wasm.vouched_by_stamp(), "another file's stamp vouched");
    assert_eq!(wasm.digest, sha256_hex(&other));

    // A stamp not made with this key, naming the pinned digest.
    let mut forged = case.digest.clone().into_bytes();
    forged.extend_from_slice(&[0x42; 32]);
    std::fs::write(stamp_of(&file), &forged).unwrap();
    let wasm = resolve().await;
    assert!(!wasm.vouched_by_stamp(), "a forged stamp vouched");
    assert_eq!(wasm.digest, sha256_hex(&other));

    // Vouched for, then changed before it is compiled: reading it finds out.
    std::fs::write(&file, &good).unwrap();
    settle();
    resolve().await;
    let wasm = resolve().await;
    assert!(wasm.vouched_by_stamp());
    change_in_place(&other);
    let err = wasm.into_bytes().unwrap_err().to_string();
    assert!(err.contains("changed while it was being loaded"), "{err}");
}

#[tokio::test]
async fn a_cache_others_can_write_is_not_used() {
    let (host, _host_cache) = dax_tests::fresh_host();
    let engine = host.engine();
    let wasm = std::fs::read(plugin_path("hello-metrics")).unwrap();
    let digest = sha256_hex(&wasm);
    let (_keys, key) = private_key();

    let root = tempfile::tempdir().unwrap();
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let cache = CompileCache::with_key_file(root.path(), Some(&key), engine);
    let why = cache.disabled_reason().expect("cache must be off");
    assert!(
        why.contains("is writable by group or others (mode 0777)")
            && why.contains(&format!("chmod go-w {}", root.path().display())),
        "{why}"
    );
    // Still works, compiled in memory every time, nothing written to the directory.
    for _ in 0..2 {
        let (_, source) = cache.get_or_compile(engine, &digest, &wasm).unwrap();
        assert_eq!(source, CompileSource::Compiled);
    }
    assert!(!cache.entry_path(&digest).exists());

    // A key others can read is no key.
    let private_root = tempfile::tempdir().unwrap();
    let cache = CompileCache::with_key_file(private_root.path(), Some(&key), engine);
    assert_eq!(cache.disabled_reason(), None);
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    let cache = CompileCache::with_key_file(private_root.path(), Some(&key), engine);
    let why = cache.disabled_reason().expect("cache must be off");
    assert!(
        why.contains("cache key file") && why.contains("accessible to group or others (mode 0644)"),
        "{why}"
    );

    // A directory owned by someone else (only root can arrange that).
    if euid() == 0 {
        let foreign = tempfile::tempdir().unwrap();
        std::os::unix::fs::chown(foreign.path(), Some(65534), None).unwrap();
        let cache = CompileCache::with_key_file(foreign.path(), Some(&key), engine);
        let why = cache.disabled_reason().expect("cache must be off");
        assert!(why.contains("is owned by uid 65534"), "{why}");
    }

    // What the operator sees: a warning naming the directory and the fix, and a plugin
    // that still loads.
    // (`DAX_CACHE_DIR` holds the cache in its `components` folder.)
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let shared = tempfile::tempdir().unwrap();
    let components = shared.path().join("components");
    std::fs::create_dir(&components).unwrap();
    std::fs::set_permissions(&components, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = Command::new(dax_bin())
        .args(["plugin", "inspect"])
        .arg(plugin_path("hello-metrics"))
        .env("DAX_CACHE_DIR", shared.path())
        .env("DAX_CACHE_KEY_FILE", &key)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("compile cache off, plugins are compiled in memory")
            && stderr.contains(&format!(
                "the cache directory {} is writable by group or others (mode 0777)",
                components.display()
            )),
        "{stderr}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("hello-metrics"));
}

fn euid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // A file this process creates is owned by its effective uid.
    let probe = tempfile::NamedTempFile::new().unwrap();
    probe.as_file().metadata().unwrap().uid()
}

// ---------------------------------------------------------------- URL sources

/// What the test server answers.
#[derive(Clone)]
enum Reply {
    Body(Arc<Vec<u8>>),
    /// Bytes forever, no length.
    Endless,
    /// Headers promising a body, a few bytes, then silence.
    Stall,
}

/// A real HTTP/1.1 server on 127.0.0.1 that counts connections and body bytes sent.
struct Server {
    addr: std::net::SocketAddr,
    connections: Arc<AtomicUsize>,
    sent: Arc<AtomicU64>,
}

async fn serve(reply: Reply) -> Server {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let sent = Arc::new(AtomicU64::new(0));
    let (c, s) = (connections.clone(), sent.clone());
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let (reply, sent) = (reply.clone(), s.clone());
            tokio::spawn(async move {
                let mut request = Vec::new();
                let mut buf = [0u8; 4096];
                while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                    match stream.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => request.extend_from_slice(&buf[..n]),
                    }
                }
                match reply {
                    Reply::Body(body) => {
                        let head = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        );
                        let _ = stream.write_all(head.as_bytes()).await;
                        let _ = stream.write_all(&body).await;
                        sent.fetch_add(body.len() as u64, Ordering::SeqCst);
                    }
                    Reply::Endless => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                            .await;
                        let chunk = vec![0u8; 64 * 1024];
                        while stream.write_all(&chunk).await.is_ok() {
                            sent.fetch_add(chunk.len() as u64, Ordering::SeqCst);
                        }
                    }
                    Reply::Stall => {
                        let _ = stream
                            .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n\0asm")
                            .await;
                        tokio::time::sleep(Duration::from_secs(120)).await;
                    }
                }
            });
        }
    });
    Server {
        addr,
        connections,
        sent,
    }
}

fn url_spec(url: &str, sha256: Option<&str>, allow_insecure_http: bool) -> PluginSpec {
    let mut s = spec(Path::new("unused.wasm"));
    s.source = url.to_string();
    s.sha256 = sha256.map(String::from);
    s.allow_insecure_http = allow_insecure_http;
    s
}

/// A deployment file whose `[plugins.remote]` table is `remote`.
fn deployment_with(remote: &str) -> String {
    format!(
        r#"[deployment]
app = "demo"
version = "v2"
[target]
plugin = "local"
[strategy]
plugin = "remote"
[plugins.local]
source = "builtin:local"
[plugins.remote]
{remote}
"#
    )
}

#[tokio::test]
async fn a_url_source_must_pin_its_digest() {
    let server = serve(Reply::Endless).await;
    let url = format!("https://{}/plugin.wasm", server.addr);
    let (host, _cache) = dax_tests::fresh_host();
    let err = host
        .load("remote", &url_spec(&url, None, false), Path::new("."))
        .await
        .err()
        .expect("an unpinned URL must be refused");
    let err = format!("{err:#}");
    assert!(
        err.contains(&format!(
            "plugin `remote` is downloaded from `{url}` but pins no `sha256`"
        )) && err.contains("sha256 = "),
        "{err}"
    );
    assert_eq!(
        server.connections.load(Ordering::SeqCst),
        0,
        "nothing is fetched"
    );

    // `dax validate` says so before fetching anything, at the field to add.
    let problems = dax::config::parse(
        &deployment_with(&format!("source = \"{url}\"")),
        "d.toml",
        Path::new("."),
    )
    .expect_err("problems");
    let p = problems
        .iter()
        .find(|p| p.field == "plugins.remote.sha256")
        .unwrap_or_else(|| panic!("{problems:#?}"));
    assert_eq!(p.line, 10, "located at [plugins.remote]: {p}");
    assert!(p.help.contains("sha256sum"), "{p}");
    // A malformed pin is found the same way.
    let problems = dax::config::parse(
        &deployment_with(&format!("source = \"{url}\"\nsha256 = \"abc\"")),
        "d.toml",
        Path::new("."),
    )
    .expect_err("problems");
    assert!(
        problems
            .iter()
            .any(|p| p.field == "plugins.remote.sha256"
                && p.message.contains("is not a sha256 digest")),
        "{problems:#?}"
    );
}

#[tokio::test]
async fn plain_http_needs_the_operators_opt_in() {
    let wasm = std::fs::read(plugin_path("hello-metrics")).unwrap();
    let digest = sha256_hex(&wasm);
    let server = serve(Reply::Body(Arc::new(wasm))).await;
    let url = format!("http://{}/plugin.wasm", server.addr);
    let (host, _cache) = dax_tests::fresh_host();
    let err = host
        .load(
            "remote",
            &url_spec(&url, Some(&digest), false),
            Path::new("."),
        )
        .await
        .err()
        .expect("plain http must be refused");
    let err = format!("{err:#}");
    assert!(
        err.contains(&format!("plugin `remote`: `{url}` is plain http://"))
            && err.contains("allow_insecure_http = true"),
        "{err}"
    );
    assert_eq!(server.connections.load(Ordering::SeqCst), 0);
    let problems = dax::config::parse(
        &deployment_with(&format!("source = \"{url}\"\nsha256 = \"{digest}\"")),
        "d.toml",
        Path::new("."),
    )
    .expect_err("problems");
    assert!(
        problems
            .iter()
            .any(|p| p.field == "plugins.remote.source" && p.line == 11),
        "{problems:#?}"
    );
    // With the opt-in in the file, validation passes this table.
    let ok = deployment_with(&format!(
        "source = \"{url}\"\nsha256 = \"{digest}\"\nallow_insecure_http = true"
    ));
    if let Err(problems) = dax::config::parse(&ok, "d.toml", Path::new(".")) {
        assert!(
            !problems
                .iter()
                .any(|p| p.field.starts_with("plugins.remote")),
            "{problems:#?}"
        );
    }
}

#[tokio::test]
async fn a_pinned_download_runs_and_a_wrong_digest_is_refused() {
    let wasm = std::fs::read(plugin_path("hello-metrics")).unwrap();
    let digest = sha256_hex(&wasm);
    let server = serve(Reply::Body(Arc::new(wasm))).await;
    let url = format!("http://{}/hello.wasm", server.addr);
    let (host, _cache) = dax_tests::fresh_host();
    let plugin = host
        .load(
            "remote",
            &url_spec(&url, Some(&digest), true),
            Path::new("."),
        )
        .await
        .unwrap();
    assert_eq!(plugin.origin(), url);
    assert_eq!(answer(&plugin, "value:4").await, MetricAnswer::Value(4.0));

    let other = sha256_hex(&std::fs::read(plugin_path("adversary")).unwrap());
    let err = host
        .load(
            "remote",
            &url_spec(&url, Some(&other), true),
            Path::new("."),
        )
        .await
        .err()
        .expect("a wrong digest must be refused");
    let err = format!("{err:#}");
    assert!(
        err.contains("plugin `remote`") && err.contains(&digest) && err.contains(&other),
        "{err}"
    );
}

#[tokio::test]
async fn an_endless_download_stops_at_the_size_bound() {
    let server = serve(Reply::Endless).await;
    let url = format!("http://{}/endless.wasm", server.addr);
    let (host, _cache) = dax_tests::fresh_host();
    let pin = "0".repeat(64);
    // The default bound, through the loader every deployment uses.
    let err = host
        .load("remote", &url_spec(&url, Some(&pin), true), Path::new("."))
        .await
        .err()
        .expect("an endless download must stop");
    let err = format!("{err:#}");
    assert!(
        err.contains(&format!(
            "plugin `remote`: downloading {url} stopped: the component is larger than the 64 MiB limit for plugin downloads"
        )),
        "{err}"
    );
    // The server could only push what the bound plus the socket buffers hold.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let sent = server.sent.load(Ordering::SeqCst);
    assert!(sent < (64 + 32) << 20, "server sent {sent} bytes");

    // A tighter bound stops sooner.
    let limits = DownloadLimits {
        max_bytes: 1 << 20,
        timeout: Duration::from_secs(30),
    };
    let err = resolve_source_within(
        "remote",
        &url_spec(&url, Some(&pin), true),
        Path::new("."),
        &limits,
    )
    .await
    .expect_err("must stop");
    assert!(format!("{err:#}").contains("larger than the 1 MiB limit"));

    // The host keeps working: a healthy pinned plugin loads and answers right after.
    let good = host
        .load("good", &spec(&plugin_path("hello-metrics")), Path::new("."))
        .await
        .unwrap();
    assert_eq!(answer(&good, "value:2").await, MetricAnswer::Value(2.0));
}

#[tokio::test]
async fn a_stalled_download_stops_at_the_time_bound() {
    let server = serve(Reply::Stall).await;
    let url = format!("http://{}/stalled.wasm", server.addr);
    let limits = DownloadLimits {
        max_bytes: 64 << 20,
        timeout: Duration::from_millis(500),
    };
    let started = Instant::now();
    let err = resolve_source_within(
        "remote",
        &url_spec(&url, Some(&"0".repeat(64)), true),
        Path::new("."),
        &limits,
    )
    .await
    .expect_err("a stalled download must stop");
    let err = format!("{err:#}");
    assert!(
        err.contains(&format!(
            "plugin `remote`: downloading {url} did not finish within 500ms, the time limit for plugin downloads"
        )),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(server.connections.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------- dax plugin build

/// `dax cache show` / `dax cache prune` on a real cache: what this dax compiled stays (and
/// still loads), another engine's directory goes, a file dax did not write stays.
#[test]
fn dax_cache_prune_removes_other_engines_and_keeps_this_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (cache, key) = (dir.path().join("cache"), dir.path().join("cache.key"));
    let dax = |args: &[&str]| -> serde_json::Value {
        let out = Command::new(dax_bin())
            .args(args)
            .env("DAX_CACHE_DIR", &cache)
            .env("DAX_CACHE_KEY_FILE", &key)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "dax {args:?}: {stderr}");
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    };
    let plugin = plugin_path("hello-metrics");
    let inspect = ["plugin", "inspect", plugin.to_str().unwrap()];
    dax(&inspect);
    let components = cache.join("components");
    let old = components.join("wasmtime-0.0.1-0000000000000000");
    std::fs::create_dir_all(old.join("sources")).unwrap();
    std::fs::write(
        old.join(format!("{}.cwasm", "ab".repeat(32))),
        vec![0u8; 4096],
    )
    .unwrap();
    std::fs::write(old.join("sources/803-1f"), b"stamp").unwrap();
    std::fs::write(old.join("notes.txt"), b"not dax's").unwrap();

    let show = dax(&["--output", "json", "cache", "show"]);
    let engines = show["engines"].as_array().unwrap();
    assert_eq!(engines.len(), 2, "{show:#}");
    let current: Vec<_> = engines.iter().filter(|e| e["current"] == true).collect();
    assert_eq!(current.len(), 1, "{show:#}");
    assert_eq!(
        current[0]["entries"], 1,
        "the plugin inspect compiled: {show:#}"
    );

    let pruned = dax(&["--output", "json", "cache", "prune"]);
    assert_eq!(pruned["other_engines"]["entries"], 1, "{pruned:#}");
    assert_eq!(pruned["other_engines"]["entry_bytes"], 4096, "{pruned:#}");
    assert_eq!(pruned["other_engines"]["stamps"], 1, "{pruned:#}");
    assert_eq!(pruned["kept_entries"], 1, "{pruned:#}");
    assert_eq!(pruned["unused"]["entries"], 0, "used today: {pruned:#}");
    assert!(!old.join("sources").exists());
    assert!(
        old.join("notes.txt").exists(),
        "a file dax did not write was removed"
    );

    // What this dax compiled is still there and still loads from the cache.
    let show = dax(&["--output", "json", "cache", "show"]);
    assert_eq!(show["engines"].as_array().unwrap().len(), 2, "{show:#}");
    dax(&inspect);
}

fn plugin_build(args: &[&str]) -> (i32, String) {
    let out = Command::new(dax_bin())
        .args(["plugin", "build", "--all"])
        .args(args)
        .current_dir(dax_tests::repo_root())
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_plugin_build_that_builds_nothing_fails() {
    let (code, stderr) = plugin_build(&["--no-js", "-p", "no-such-plugin"]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "no plugin package named `no-such-plugin` in plugins/, examples/plugins/, tests/plugins/; the plugins there are:"
        ) && stderr.contains("hello-metrics")
            && stderr.contains("adversary")
            && stderr.contains("JavaScript plugins: js-metrics"),
        "{stderr}"
    );

    let (code, stderr) = plugin_build(&["--no-js", "-p", "js-metrics"]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(
            "`js-metrics` is a JavaScript plugin, and JavaScript plugins are not built here"
        ),
        "{stderr}"
    );

    let elsewhere = tempfile::tempdir().unwrap();
    let (code, stderr) = plugin_build(&["--repo", elsewhere.path().to_str().unwrap()]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains(&format!(
            "`{}` is not a dax repository (it has no wit/ and plugins/ folders): looked for plugins/Cargo.toml, examples/plugins/Cargo.toml, tests/plugins/Cargo.toml",
            elsewhere.path().display()
        )),
        "{stderr}"
    );

    std::fs::create_dir(elsewhere.path().join("wit")).unwrap();
    std::fs::create_dir(elsewhere.path().join("plugins")).unwrap();
    let (code, stderr) = plugin_build(&["--repo", elsewhere.path().to_str().unwrap()]);
    assert_ne!(code, 0, "{stderr}");
    assert!(
        stderr.contains("is a dax repository, but it has no plugin workspace"),
        "{stderr}"
    );

    let missing = elsewhere.path().join("missing");
    let (code, stderr) = plugin_build(&["--repo", missing.to_str().unwrap()]);
    assert_ne!(code, 0, "{stderr}");
    assert!(stderr.contains("is not a directory"), "{stderr}");
}
