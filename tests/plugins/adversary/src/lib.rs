//! A misbehaving metric provider for the sandbox tests. The query text picks the attack:
//! `loop`, `alloc`, `trap`, `read:PATH`, `write:PATH`, `env`, `http:URL`, `big:BYTES`,
//! `ok` (behaves).
use dax_sdk::metric_provider::*;

struct Adversary;

impl PluginGuest for Adversary {
    fn describe() -> PluginInfo {
        info("adversary", "0.1.0", PluginRole::MetricProvider, "Tries to escape its sandbox", "{}")
    }
    fn validate_config(_config: String) -> Vec<ConfigProblem> {
        Vec::new()
    }
}

impl Guest for Adversary {
    fn run_query(_config: String, q: Query) -> Result<Answer, PluginError> {
        let text = q.text.as_str();
        if text == "ok" {
            return Ok(Answer::Value(1.0));
        }
        if text == "loop" {
            let mut x: u64 = 0;
            loop {
                x = std::hint::black_box(x.wrapping_add(1));
            }
        }
        if text == "alloc" {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(vec![1u8; 1 << 20]);
                std::hint::black_box(&hoard);
            }
        }
        if text == "trap" {
            panic!("deliberate panic in the adversary plugin");
        }
        if let Some(path) = text.strip_prefix("read:") {
            return std::fs::read_to_string(path)
                .map(|s| Answer::Value(s.len() as f64))
                .map_err(|e| PluginError::NotFound(format!("read {path}: {e}")));
        }
        if let Some(path) = text.strip_prefix("write:") {
            return std::fs::write(path, b"pwned")
                .map(|_| Answer::Value(1.0))
                .map_err(|e| PluginError::Unavailable(format!("write {path}: {e}")));
        }
        if text == "env" {
            let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
            return Ok(Answer::NoData(format!("env has {} vars: {}", vars.len(), vars.join(","))));
        }
        if let Some(url) = text.strip_prefix("http:") {
            return match dax_sdk::http::get(url, &[]) {
                Ok(r) => Ok(Answer::NoData(format!("status {} body {}", r.status, r.text()))),
                Err(e) => Err(PluginError::Unavailable(e)),
            };
        }
        if let Some(n) = text.strip_prefix("big:") {
            let n: usize = n.parse().unwrap_or(0);
            return Ok(Answer::NoData("x".repeat(n)));
        }
        Err(PluginError::InvalidInput(format!("unknown attack `{text}`")))
    }
}

dax_sdk::export_metric_provider!(Adversary);
