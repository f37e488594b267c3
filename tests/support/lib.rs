//! Shared helpers for the integration tests: real plugins built from this repository.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

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
        let mut options = dax::plugin::build::BuildOptions::for_repo(repo_root());
        // JS plugins are slow to build; tests that need them ask with `js_plugin()`.
        options.javascript = false;
        // Narrow the build while iterating, e.g. DAX_TEST_PLUGIN_WORKSPACES=tests/plugins.
        if let Ok(list) = std::env::var("DAX_TEST_PLUGIN_WORKSPACES") {
            options.workspaces = list.split(',').map(str::to_string).collect();
        }
        let built =
            dax::plugin::build::build_all(&options, &mut |line| eprintln!("[plugin build] {line}"))
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
    let mut options = dax::plugin::build::BuildOptions::for_repo(repo_root());
    options.only = vec![name.to_string()];
    let built =
        dax::plugin::build::build_all(&options, &mut |line| eprintln!("[plugin build] {line}"))
            .unwrap_or_else(|e| panic!("building the JS plugin {name} failed: {e:#}"));
    let path = built
        .into_iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("JS plugin {name} was not built (is npm installed?)"))
        .path;
    map.insert(name.to_string(), path.clone());
    path
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
    })
    .expect("creating the plugin host");
    (host, cache)
}
