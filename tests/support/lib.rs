//! Shared helpers for the integration tests: real plugins built from this repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

pub mod k8s;
pub mod moto;

/// The repository root (parent of `tests/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Whether we run under CI, where a missing component is a failure, never a skip.
pub fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|v| v == "true" || v == "1")
}

/// Build every plugin of the repository once per test process (cargo keeps it incremental)
/// and return `package name -> component path`. Panics with the build output on failure:
/// tests that need plugins must not silently skip.
pub fn built_plugins() -> &'static BTreeMap<String, PathBuf> {
    static BUILT: OnceLock<BTreeMap<String, PathBuf>> = OnceLock::new();
    BUILT.get_or_init(|| {
        let _guard = build_lock();
        let mut options = dax::authoring::build::BuildOptions::for_repo(repo_root());
        // JS plugins are slow to build; tests that need them ask with `js_plugin()`.
        options.javascript = false;
        // Narrow the build while iterating, e.g. DAX_TEST_PLUGIN_WORKSPACES=tests/plugins.
        if let Ok(list) = std::env::var("DAX_TEST_PLUGIN_WORKSPACES") {
            options.workspaces = list.split(',').map(str::to_string).collect();
        }
        let built = dax::authoring::build::build_all(&options, &mut |line| {
            eprintln!("[plugin build] {line}")
        })
        .unwrap_or_else(|e| panic!("building the test plugins failed: {e:#}"));
        built.into_iter().map(|p| (p.name, p.path)).collect()
    })
}

/// Path of one built plugin component by package name.
pub fn plugin_path(name: &str) -> PathBuf {
    built_plugins()
        .get(name)
        .unwrap_or_else(|| {
            panic!(
                "no plugin package `{name}` was built; known: {:?}",
                built_plugins().keys()
            )
        })
        .clone()
}

/// Build (once) and return the JavaScript example plugin `name` under examples/plugins/.
pub fn js_plugin(name: &str) -> PathBuf {
    static BUILT: OnceLock<std::sync::Mutex<BTreeMap<String, PathBuf>>> = OnceLock::new();
    let map = BUILT.get_or_init(Default::default);
    let mut map = map.lock().unwrap();
    if let Some(p) = map.get(name) {
        return p.clone();
    }
    let _guard = build_lock();
    let mut options = dax::authoring::build::BuildOptions::for_repo(repo_root());
    options.only = vec![name.to_string()];
    let built =
        dax::authoring::build::build_all(&options, &mut |line| eprintln!("[plugin build] {line}"))
            .unwrap_or_else(|e| panic!("building the JS plugin {name} failed: {e:#}"));
    let path = built
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("JS plugin {name} was not built (is npm installed?)"))
        .path;
    map.insert(name.to_string(), path.clone());
    path
}

/// An instant metric query with `text` over a one-minute window.
pub fn query(text: &str) -> dax::contract::MetricQuery {
    dax::contract::MetricQuery {
        text: text.into(),
        kind: dax::contract::QueryKind::Instant,
        window_ms: 60_000,
        step_ms: 0,
        vars: vec![],
    }
}

/// The `dax` binary of this checkout, built once per test process into the same target
/// directory as the tests (for tests that run the CLI as a user would).
pub fn dax_bin() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            // tests run from target/<profile>/deps; the binary is in target/<profile>.
            let exe = std::env::current_exe().unwrap();
            let dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
            let mut build = std::process::Command::new(env!("CARGO"));
            build
                .args(["build", "-p", "dax", "--bin", "dax"])
                // Tests run under `--release` or `--profile bench` look for it in release/.
                .args(dir.ends_with("release").then_some("--release"))
                .current_dir(repo_root())
                .env("CARGO_TARGET_DIR", dir.parent().unwrap());
            // cargo gives this test process the variables it gives the test's package
            // (CARGO_PKG_NAME, CARGO_MANIFEST_DIR, OUT_DIR, ...). ring's build script
            // reruns when they change, so without this the build here and the one in
            // tests/run.sh each recompile ring, rustls, kube, reqwest and dax (minutes).
            for (name, _) in std::env::vars_os() {
                let name = name.to_string_lossy();
                if name.starts_with("CARGO_PKG_")
                    || name.starts_with("CARGO_MANIFEST_")
                    || matches!(
                        &*name,
                        "CARGO_CRATE_NAME"
                            | "CARGO_BIN_NAME"
                            | "CARGO_PRIMARY_PACKAGE"
                            | "CARGO_TARGET_TMPDIR"
                            | "CARGO_RUSTC_CURRENT_DIR"
                            | "OUT_DIR"
                    )
                {
                    build.env_remove(&*name);
                }
            }
            let status = build.status().unwrap();
            assert!(status.success(), "building the dax binary failed");
            let bin = dir.join("dax");
            assert!(bin.exists(), "no dax binary at {}", bin.display());
            bin
        })
        .clone()
}

/// Serialise plugin builds across test processes running at the same time.
fn build_lock() -> std::fs::File {
    let dir = repo_root().join("target");
    std::fs::create_dir_all(&dir).unwrap();
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(".plugin-build.lock"))
        .unwrap();
    file.lock().unwrap();
    file
}

/// A plugin spec for a local component with default (deny-all) grants and limits.
pub fn spec(path: &Path) -> dax::plugin::PluginSpec {
    dax::plugin::PluginSpec {
        source: path.display().to_string(),
        sha256: None,
        allow_insecure_http: false,
        config: toml::Value::Table(Default::default()),
        grants: Default::default(),
        limits: Default::default(),
    }
}

/// A plugin host with its compile cache in a fresh temporary directory.
pub fn fresh_host() -> (dax::plugin::PluginHost, tempfile::TempDir) {
    let cache = tempfile::tempdir().unwrap();
    let host = dax::plugin::PluginHost::new(dax::plugin::HostOptions {
        cache_dir: cache.path().to_path_buf(),
        pooling: true,
        ..Default::default()
    })
    .expect("creating the plugin host");
    (host, cache)
}

/// The demo app (`examples/demo-app/app.py`); panics unless it and `python3` are there.
pub fn demo_app() -> PathBuf {
    let p = repo_root().join("examples/demo-app/app.py");
    assert!(p.exists(), "demo app missing at {}", p.display());
    let ok = std::process::Command::new("python3")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "python3 is required for the local target tests (apt-get install python3)"
    );
    p
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The Prometheus server of the Debian package `prometheus`.
pub const PROMETHEUS: &str = "/usr/bin/prometheus";

/// A real Prometheus child process on a loopback port, with its config, data and log in a
/// temporary directory; killed (by pid) when dropped.
pub struct Prometheus {
    child: std::process::Child,
    pub port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Start Prometheus scraping `http://127.0.0.1:{target_port}/metrics` every second.
    /// Without [`PROMETHEUS`], `None` (and a printed SKIP line) locally; a panic under CI.
    pub fn start(target_port: u16) -> Option<Prometheus> {
        if !Path::new(PROMETHEUS).exists() {
            assert!(
                !in_ci(),
                "{PROMETHEUS} is missing: install the Debian package `prometheus` (.ci/run does)"
            );
            eprintln!("SKIP: {PROMETHEUS} not installed (apt-get install prometheus)");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: dax-proxy\n    static_configs:\n      - targets: ['127.0.0.1:{target_port}']\n"
            ),
        )
        .unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = std::process::Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting prometheus");
        Some(Prometheus { child, port, dir })
    }

    /// `http://127.0.0.1:PORT`.
    pub fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What Prometheus wrote to stderr so far (for failure messages).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Wait until Prometheus is ready and has tried its first scrape (`up` has a sample):
    /// it hands static targets to its scrape loop only after its discovery manager's update
    /// period (about 5s after start), well after `/-/ready`. Panics with the log after `limit`.
    pub fn wait_ready(&self, limit: std::time::Duration) {
        let t0 = std::time::Instant::now();
        let scraping = || {
            http_get(self.port, "/-/ready").is_some_and(|(s, _)| s == 200)
                && self
                    .query("up")
                    .as_array()
                    .is_some_and(|series| !series.is_empty())
        };
        while !scraping() {
            assert!(
                t0.elapsed() < limit,
                "Prometheus on {} not scraping within {limit:?}; its log:\n{}",
                self.address(),
                self.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }

    /// An instant PromQL query straight through the HTTP API: the `data.result` array.
    pub fn query(&self, promql: &str) -> serde_json::Value {
        let encoded: String = promql
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = http_get(self.port, &format!("/api/v1/query?query={encoded}"))
            .unwrap_or_else(|| panic!("Prometheus on {} is unreachable", self.address()));
        assert_eq!(status, 200, "query `{promql}`: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        v["data"]["result"].clone()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP/1.0 GET on 127.0.0.1:`port`: `(status, body)`, `None` when unreachable.
fn http_get(port: u16, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(5);
    let mut sock = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    sock.set_read_timeout(Some(timeout)).ok()?;
    write!(
        sock,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n"
    )
    .ok()?;
    let mut raw = String::new();
    sock.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}
