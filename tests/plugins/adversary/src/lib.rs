//! A misbehaving metric provider for the sandbox tests. The query text picks the attack:
//! `loop`, `alloc`, `trap`, `read:PATH`, `write:PATH`, `env`, `http:URL`, `big:BYTES`,
//! `sleep:MS`, `bigerr:BYTES`, `flood:LINES`, `forge`, `symlink:TARGET>LINK`,
//! `fill:PATH:BYTES`, `ok` (behaves).
//!
//! `describe` attacks when the file `/attack/describe` exists (grant a directory at
//! `/attack`): `sleep`, `huge:BYTES`, `forge`. `validate-config` attacks by its config:
//! `{"attack": "problems:COUNT"}`, `{"attack": "problem-bytes:BYTES"}`, `{"attack": "sleep"}`.
use dax_sdk::metric_provider::*;
use std::io::Write;

struct Adversary;

const FORGED: &str = "\n2026-01-01T00:00:00.000000Z  INFO dax: deployment promoted";

impl PluginGuest for Adversary {
    fn describe() -> PluginInfo {
        let attack = std::fs::read_to_string("/attack/describe").unwrap_or_default();
        let attack = attack.trim();
        let mut description = "Tries to escape its sandbox".to_string();
        if attack == "sleep" {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        } else if let Some(n) = attack.strip_prefix("huge:") {
            description = "d".repeat(n.parse().unwrap_or(0));
        } else if attack == "forge" {
            println!("{FORGED}");
        }
        info(
            "adversary",
            "0.1.0",
            PluginRole::MetricProvider,
            &description,
            "{}",
        )
    }
    fn validate_config(config: String) -> Vec<ConfigProblem> {
        let attack = config
            .split("\"attack\":\"")
            .nth(1)
            .and_then(|rest| rest.split('"').next())
            .unwrap_or("");
        if let Some(n) = attack.strip_prefix("problems:") {
            let n: usize = n.parse().unwrap_or(0);
            return (0..n)
                .map(|_| ConfigProblem {
                    field: String::new(),
                    message: String::new(),
                })
                .collect();
        }
        if let Some(n) = attack.strip_prefix("problem-bytes:") {
            let n: usize = n.parse().unwrap_or(0);
            return vec![ConfigProblem {
                field: "x".into(),
                message: "m".repeat(n),
            }];
        }
        if attack == "sleep" {
            std::thread::sleep(std::time::Duration::from_secs(3600));
        }
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
            return Ok(Answer::NoData(format!(
                "env has {} vars: {}",
                vars.len(),
                vars.join(",")
            )));
        }
        if let Some(url) = text.strip_prefix("http:") {
            return match dax_sdk::http::get(url, &[]) {
                Ok(r) => Ok(Answer::NoData(format!(
                    "status {} body {}",
                    r.status,
                    r.text()
                ))),
                Err(e) => Err(PluginError::Unavailable(e)),
            };
        }
        if let Some(ms) = text.strip_prefix("sleep:") {
            std::thread::sleep(std::time::Duration::from_millis(ms.parse().unwrap_or(0)));
            return Ok(Answer::Value(2.0));
        }
        if let Some(n) = text.strip_prefix("bigerr:") {
            return Err(PluginError::Unavailable("e".repeat(n.parse().unwrap_or(0))));
        }
        if let Some(n) = text.strip_prefix("flood:") {
            let mut out = std::io::stdout().lock();
            for i in 0..n.parse::<usize>().unwrap_or(0) {
                let _ = writeln!(out, "flood line {i}");
            }
            return Ok(Answer::Value(3.0));
        }
        if text == "forge" {
            println!("{FORGED}");
            println!("\x1b[2Jscreen cleared");
            eprintln!("{FORGED}");
            dax_sdk::metric_provider::log::warn(FORGED);
            return Ok(Answer::Value(4.0));
        }
        if let Some(spec) = text.strip_prefix("symlink:") {
            // `symlink:TARGET>NAME` creates NAME -> TARGET in the directory granted at `/out`.
            let (target, link) = spec.split_once('>').unwrap_or((spec, "link"));
            let (out, _) = wasi::filesystem::preopens::get_directories()
                .into_iter()
                .find(|(_, path)| path == "/out")
                .ok_or_else(|| PluginError::Unavailable("no /out granted".into()))?;
            return out
                .symlink_at(target, link)
                .map(|_| Answer::Value(5.0))
                .map_err(|e| {
                    PluginError::Unavailable(format!("symlink {link} -> {target}: {e:?}"))
                });
        }
        if let Some(spec) = text.strip_prefix("fill:") {
            let (path, n) = spec.rsplit_once(':').unwrap_or((spec, "0"));
            let n: usize = n.parse().unwrap_or(0);
            let mut file = std::fs::File::create(path)
                .map_err(|e| PluginError::Unavailable(format!("create {path}: {e}")))?;
            let chunk = vec![b'z'; 1 << 20];
            let mut written = 0;
            while written < n {
                let len = chunk.len().min(n - written);
                file.write_all(&chunk[..len])
                    .map_err(|e| PluginError::Unavailable(format!("write {path}: {e}")))?;
                let _ = file.flush();
                written += len;
            }
            return Ok(Answer::Value(written as f64));
        }
        if let Some(n) = text.strip_prefix("big:") {
            let n: usize = n.parse().unwrap_or(0);
            return Ok(Answer::NoData("x".repeat(n)));
        }
        Err(PluginError::InvalidInput(format!(
            "unknown attack `{text}`"
        )))
    }
}

dax_sdk::export_metric_provider!(Adversary);
