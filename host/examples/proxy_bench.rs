//! The local proxy's cost: latency (p50/p99) and throughput through the proxy vs straight to
//! the app, measured with `wrk` in one run, printed as a table.
//!
//!     cargo run --release -p dax --example proxy_bench -- [--duration 10s] [--connections 32]
//!         [--threads 2] [--backend native|python]
//!
//! Backends: `native` (default) is this binary re-executed as a minimal hyper server, so the
//! app is not the bottleneck and the proxy's own overhead shows; `python` is the demo app
//! (`examples/demo-app/app.py`), the quickstart's real app. Each backend runs as a `local`
//! target stable version, exactly as in a deployment (the candidate gets 0% here, so the path
//! measured is the common one: route choice, forward, record stats). Needs `wrk` on PATH
//! (Debian package `wrk`). All traffic stays on 127.0.0.1. Run it on an otherwise idle machine:
//! wrk, the proxy and the app share the cores.

use dax::contract::{Target, Workload};
use dax::local::LocalTarget;
use std::time::Duration;

#[derive(Debug, Clone)]
struct Opts {
    duration: String,
    connections: u32,
    threads: u32,
    backend: String,
}

fn parse_opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        duration: "10s".into(),
        connections: 32,
        threads: 2,
        backend: "native".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--duration" => o.duration = val()?,
            "--connections" => o.connections = val()?.parse()?,
            "--threads" => o.threads = val()?.parse()?,
            "--backend" => o.backend = val()?,
            other => anyhow::bail!(
                "unknown option `{other}`: use --duration, --connections, --threads, --backend native|python"
            ),
        }
    }
    Ok(o)
}

/// `proxy_bench serve-backend PORT VERSION`: the native backend (a tiny hyper server).
async fn serve_backend(port: u16, version: String) -> anyhow::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let body = Bytes::from(format!("{{\"version\": \"{version}\"}}"));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |_req| {
                let body = body.clone();
                async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

struct WrkResult {
    p50_ms: f64,
    p99_ms: f64,
    rps: f64,
    errors: String,
}

fn to_ms(s: &str) -> Option<f64> {
    let s = s.trim();
    let (num, factor) = if let Some(n) = s.strip_suffix("us") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix("ms") {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1000.0)
    } else {
        (s, 1.0)
    };
    num.parse::<f64>().ok().map(|v| v * factor)
}

fn run_wrk(o: &Opts, url: &str) -> anyhow::Result<WrkResult> {
    let out = std::process::Command::new("wrk")
        .args([
            "-t",
            &o.threads.to_string(),
            "-c",
            &o.connections.to_string(),
            "-d",
            &o.duration,
            "--latency",
            url,
        ])
        .output()
        .map_err(|e| {
            anyhow::anyhow!("cannot run wrk ({e}): install it with `apt-get install wrk`")
        })?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        anyhow::bail!(
            "wrk failed: {}{}",
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let field = |prefix: &str| {
        text.lines()
            .map(str::trim)
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.split_whitespace().nth(1))
            .map(str::to_string)
    };
    let missing = || anyhow::anyhow!("unexpected wrk output:\n{text}");
    let errors = text
        .lines()
        .filter(|l| l.contains("Non-2xx") || l.contains("Socket errors"))
        .map(str::trim)
        .collect::<Vec<_>>()
        .join("; ");
    Ok(WrkResult {
        p50_ms: field("50%").and_then(|v| to_ms(&v)).ok_or_else(missing)?,
        p99_ms: field("99%").and_then(|v| to_ms(&v)).ok_or_else(missing)?,
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(missing)?,
        errors,
    })
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve-backend") {
        let port = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(8081);
        let version = args.get(3).cloned().unwrap_or_else(|| "v1".into());
        return serve_backend(port, version).await;
    }
    let o = parse_opts()?;
    let exe = std::env::current_exe()?;
    let demo = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo-app/app.py");
    let (command, stable_args, artifact) = match o.backend.as_str() {
        "native" => (
            exe.to_string_lossy().into_owned(),
            vec!["serve-backend".to_string(), "{port}".into(), "v1".into()],
            format!("{} serve-backend {{port}} v2", exe.display()),
        ),
        "python" => (
            "python3".to_string(),
            vec![
                demo.to_string_lossy().into_owned(),
                "--version".into(),
                "v1".into(),
                "--port".into(),
                "{port}".into(),
            ],
            format!("python3 {} --version v2 --port {{port}}", demo.display()),
        ),
        other => anyhow::bail!("unknown backend `{other}`: use native or python"),
    };
    // The native backend has no /healthz; any answer on / is ready.
    let readiness = if o.backend == "native" {
        "/"
    } else {
        "/healthz"
    };
    let target = LocalTarget::new(
        serde_json::json!({
            "listen": "127.0.0.1:0",
            "readiness_path": readiness,
            "stable": { "version": "v1", "command": command, "args": stable_args },
        }),
        std::path::Path::new("."),
    )
    .await?;
    target
        .deploy(&Workload {
            app: "bench".into(),
            version: "v2".into(),
            artifact,
            replicas: 1,
            spec: "{}".into(),
        })
        .await?;
    let stable = target
        .backends()
        .await
        .into_iter()
        .find(|b| b.slot == dax::contract::Slot::Stable)
        .ok_or_else(|| anyhow::anyhow!("no stable backend"))?;
    let direct = format!("http://127.0.0.1:{}/", stable.port);
    let proxied = format!("http://{}/", target.proxy_addr());

    // Warm both paths (connection pools, page cache) before measuring.
    let warm = Opts {
        duration: "1s".into(),
        ..o.clone()
    };
    run_wrk(&warm, &direct)?;
    run_wrk(&warm, &proxied)?;
    let d = run_wrk(&o, &direct)?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let p = run_wrk(&o, &proxied)?;

    println!(
        "\nlocal proxy benchmark: backend={}, wrk -t{} -c{} -d{}, {} cores",
        o.backend,
        o.threads,
        o.connections,
        o.duration,
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0)
    );
    println!("| path    | p50 (ms) | p99 (ms) | requests/s |");
    println!("|---------|---------:|---------:|-----------:|");
    for (name, r) in [("direct", &d), ("proxy", &p)] {
        println!(
            "| {name:<7} | {:>8.3} | {:>8.3} | {:>10.0} |",
            r.p50_ms, r.p99_ms, r.rps
        );
    }
    println!(
        "| added   | {:>+8.3} | {:>+8.3} | {:>+9.1}% |",
        p.p50_ms - d.p50_ms,
        p.p99_ms - d.p99_ms,
        100.0 * (p.rps - d.rps) / d.rps
    );
    for (name, r) in [("direct", &d), ("proxy", &p)] {
        if !r.errors.is_empty() {
            println!("{name}: {}", r.errors);
        }
    }
    target.finalize("bench").await?;
    Ok(())
}
