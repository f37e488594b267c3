//! Embeds the first-party plugin components found in `host/builtin/*.wasm` into the `dax`
//! binary, so `cargo run` works without any wasm toolchain. `dax plugin build --all --embed`
//! refreshes those files from the sources under `plugins/`.

use sha2::{Digest, Sha256};
use std::fmt::Write as _;
use std::path::Path;

fn main() {
    // The manifest dir at run time: `env!` would bake in the path this script was compiled
    // at, and cargo reuses a compiled build script for a checkout at another path.
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap();
    let dir = Path::new(&manifest_dir).join("builtin");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.retain(|p| p.extension().is_some_and(|e| e == "wasm"));
    entries.sort();
    if entries.is_empty() {
        println!(
            "cargo:warning=no embedded plugins: {} holds no *.wasm (run `dax plugin build --all --embed`)",
            dir.display()
        );
    }
    // The sha256 is computed here, from the file `include_bytes!` embeds, so loading a builtin
    // never hashes it (the binary vouches for its own bytes).
    let mut code = String::from("/// (name, sha256 hex, component bytes) of every embedded plugin.\npub static BUILTIN_PLUGINS: &[(&str, &str, &[u8])] = &[\n");
    for path in &entries {
        println!("cargo:rerun-if-changed={}", path.display());
        let name = path.file_stem().unwrap().to_string_lossy();
        let digest: String = Sha256::digest(std::fs::read(path).unwrap())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        writeln!(
            code,
            "    ({name:?}, {digest:?}, include_bytes!({:?})),",
            path.display().to_string()
        )
        .unwrap();
    }
    code.push_str("];\n");
    let out = Path::new(&std::env::var("OUT_DIR").unwrap()).join("builtin_plugins.rs");
    std::fs::write(out, code).unwrap();
}
