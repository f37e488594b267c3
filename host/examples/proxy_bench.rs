//! The local proxy side by side with nginx: throughput, p50/p99 and CPU per request of the
//! `local` target's proxy and of nginx in front of the SAME backends, measured with `wrk` in
//! one run (interleaved rounds), printed as tables with the ratios dax/nginx.
//!
//!     cargo run --release -p dax --example proxy_bench -- [--duration 5s] [--rounds 5]
//!         [--connections 32] [--threads 2] [--nginx-workers 1,2]
//!         [--backend native|python] [--no-nginx] [--pace-ms N] [--mirror-percent 10]
//!         [--wrk-cpus N]
//!
//! `--pace-ms N` compares latency at (nearly) the same load instead of at each proxy's
//! saturation: every wrk connection waits N ms between requests (wrk's Lua `delay()`), so the
//! offered load is about connections × 1000 / (N + latency) requests per second for every
//! path, below what either proxy can serve. `--mirror-percent N` sets the mirrored share for
//! both proxies (0: no mirroring). `--wrk-cpus N` gives wrk the last N cores to itself and
//! runs everything it measures (this process with the proxy's event loops, the backends,
//! nginx) on the others, as a load generator on a machine of its own would: without it, wrk
//! competes with the proxy for the same cores, so a proxy that serves more requests also
//! leaves itself less CPU, and the tail measures that contention as much as the proxy.
//!
//! What each proxy runs (the same routing work, so the comparison is fair):
//! - dax: the `local` target's proxy in this process, candidate weight 10% (9:1), one header
//!   match (`x-canary: always` goes to the candidate), mirroring 10% of the stable traffic to
//!   the candidate, per-version statistics, hop-by-hop headers stripped, 30 s upstream timeout;
//!   its connections on the proxy's event loops, one single-threaded runtime per core.
//! - nginx (Debian `nginx-light` or `nginx`): `upstream` with `weight=9` / `weight=1` and
//!   `keepalive 64`, a `map` on `$http_x_canary` choosing the candidate upstream, `mirror` to an
//!   internal location that forwards 10% of requests (`split_clients` on `$request_id`) to the
//!   candidate, `X-Forwarded-For`, access log off, HTTP/1.1 keepalive to the backends; once with
//!   1 worker process and once with 2.
//!
//! Backends: `native` (default) is this binary re-executed as a minimal hyper server, so the
//! app is not the bottleneck and the proxies' own overhead shows; `python` is the demo app
//! (`examples/demo-app/app.py`). Both versions run as `local` target processes, exactly as in a
//! deployment. CPU per request is the proxy process's (all nginx processes') utime+stime from
//! /proc divided by the requests wrk completed. The native backend counts what it serves, so
//! the table also shows the share of requests that reached the candidate (live + mirrored
//! copies, about 19% with the defaults): both proxies are checked to do the same work. Needs `wrk` and `nginx` on PATH. All traffic
//! stays on 127.0.0.1. Unless `--wrk-cpus` splits them, wrk, the proxies and the backends
//! share the cores: compare ratios within one run.

use dax::contract::{MatchSource, RequestMatch, StringMatch, Target, TrafficSplit, Workload};
use dax::local::LocalTarget;
use nix::sched::{sched_setaffinity, CpuSet};
use nix::unistd::Pid;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The allocator of the `dax` binary, so the proxy is measured as it ships.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Clone)]
struct Opts {
    duration: String,
    rounds: u32,
    connections: u32,
    threads: u32,
    nginx_workers: Vec<u32>,
    backend: String,
    /// Each wrk connection waits this long between requests (None: as fast as it can).
    pace_ms: Option<u32>,
    /// Share of the stable traffic both proxies mirror to the candidate.
    mirror_percent: u8,
    /// Cores kept for wrk alone (0: wrk shares every core with what it measures).
    wrk_cpus: usize,
}

fn parse_opts() -> anyhow::Result<Opts> {
    let mut o = Opts {
        duration: "5s".into(),
        rounds: 5,
        connections: 32,
        threads: 2,
        nginx_workers: vec![1, 2],
        backend: "native".into(),
        pace_ms: None,
        mirror_percent: 10,
        wrk_cpus: 0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || {
            args.next()
                .ok_or_else(|| anyhow::anyhow!("{a} needs a value"))
        };
        match a.as_str() {
            "--duration" => o.duration = val()?,
            "--rounds" => o.rounds = val()?.parse()?,
            "--connections" => o.connections = val()?.parse()?,
            "--threads" => o.threads = val()?.parse()?,
            "--nginx-workers" => {
                o.nginx_workers = val()?
                    .split(',')
                    .map(|w| w.trim().parse())
                    .collect::<Result<_, _>>()?
            }
            "--no-nginx" => o.nginx_workers.clear(),
            "--backend" => o.backend = val()?,
            "--pace-ms" => o.pace_ms = Some(val()?.parse()?),
            "--mirror-percent" => {
                o.mirror_percent = val()?.parse()?;
                anyhow::ensure!(o.mirror_percent <= 100, "--mirror-percent is at most 100");
            }
            "--wrk-cpus" => o.wrk_cpus = val()?.parse()?,
            other => anyhow::bail!(
                "unknown option `{other}`: use --duration, --rounds, --connections, --threads, \
                 --nginx-workers 1,2, --no-nginx, --backend native|python, --pace-ms N, \
                 --mirror-percent N, --wrk-cpus N"
            ),
        }
    }
    Ok(o)
}

/// Path on which the native backend answers how many requests it has served.
const SERVED_PATH: &str = "/__served";

/// `proxy_bench serve-backend PORT VERSION`: the native backend (a tiny hyper server).
async fn serve_backend(port: u16, version: String) -> anyhow::Result<()> {
    use http_body_util::Full;
    use hyper::body::Bytes;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SERVED: AtomicU64 = AtomicU64::new(0);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    let body = Bytes::from(format!("{{\"version\": \"{version}\"}}"));
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        let body = body.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: hyper::Request<_>| {
                let body = if req.uri().path() == SERVED_PATH {
                    Bytes::from(SERVED.load(Ordering::Relaxed).to_string())
                } else {
                    SERVED.fetch_add(1, Ordering::Relaxed);
                    body.clone()
                };
                async move { Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(body))) }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
        });
    }
}

#[derive(Clone)]
struct WrkResult {
    p50_ms: f64,
    p99_ms: f64,
    rps: f64,
    requests: u64,
    /// CPU of the proxy process(es) per completed request, in µs (None for `direct`).
    cpu_us: Option<f64>,
    /// The user-space part of `cpu_us` (the rest is the kernel's: sockets, epoll, scheduling).
    user_us: Option<f64>,
    /// Requests the candidate backend served per completed request (None: not counted).
    to_candidate: Option<f64>,
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

/// Which cores wrk runs on, and which everything else (see `--wrk-cpus`).
struct CpuSplit {
    wrk: CpuSet,
    measured: CpuSet,
}

/// The last `wrk_cpus` of this process's cores for wrk, the rest for what it measures.
fn split_cpus(wrk_cpus: usize) -> anyhow::Result<CpuSplit> {
    let mine = nix::sched::sched_getaffinity(Pid::from_raw(0))?;
    let cores: Vec<usize> = (0..CpuSet::count())
        .filter(|&c| mine.is_set(c).unwrap_or(false))
        .collect();
    anyhow::ensure!(
        wrk_cpus < cores.len(),
        "--wrk-cpus {wrk_cpus} leaves no core for the proxies: this process may use {} cores",
        cores.len()
    );
    let (measured_cores, wrk_cores) = cores.split_at(cores.len() - wrk_cpus);
    let set_of = |cores: &[usize]| -> nix::Result<CpuSet> {
        let mut set = CpuSet::new();
        for &c in cores {
            set.set(c)?;
        }
        Ok(set)
    };
    Ok(CpuSplit {
        wrk: set_of(wrk_cores)?,
        measured: set_of(measured_cores)?,
    })
}

/// The cores `--wrk-cpus` split, when it did (set once, before anything is measured).
static CPU_SPLIT: std::sync::OnceLock<CpuSplit> = std::sync::OnceLock::new();

/// Run `f` (which starts wrk) on wrk's cores: a child inherits the affinity of the thread that
/// starts it, so this thread moves there for the start and comes back after.
fn on_wrk_cpus<T>(f: impl FnOnce() -> T) -> anyhow::Result<T> {
    let Some(split) = CPU_SPLIT.get() else {
        return Ok(f());
    };
    sched_setaffinity(Pid::from_raw(0), &split.wrk)?;
    let out = f();
    sched_setaffinity(Pid::from_raw(0), &split.measured)?;
    Ok(out)
}

fn run_wrk(
    threads: u32,
    connections: u32,
    duration: &str,
    url: &str,
    pace_ms: Option<u32>,
) -> anyhow::Result<WrkResult> {
    let mut wrk = std::process::Command::new("wrk");
    wrk.args([
        "-t",
        &threads.to_string(),
        "-c",
        &connections.to_string(),
        "-d",
        duration,
        "--latency",
        url,
    ]);
    let script = pace_ms.map(|ms| {
        let path = std::env::temp_dir().join(format!("dax-proxy-bench-pace-{ms}.lua"));
        std::fs::write(&path, format!("function delay()\n  return {ms}\nend\n")).map(|()| path)
    });
    if let Some(script) = script {
        wrk.arg("-s").arg(script?);
    }
    let out = on_wrk_cpus(|| wrk.output())?.map_err(|e| {
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
    // "123456 requests in 5.00s, 12.34MB read"
    let requests = text
        .lines()
        .find(|l| l.contains(" requests in "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .ok_or_else(missing)?;
    Ok(WrkResult {
        p50_ms: field("50%").and_then(|v| to_ms(&v)).ok_or_else(missing)?,
        p99_ms: field("99%").and_then(|v| to_ms(&v)).ok_or_else(missing)?,
        rps: field("Requests/sec:")
            .and_then(|v| v.parse().ok())
            .ok_or_else(missing)?,
        requests,
        cpu_us: None,
        user_us: None,
        to_candidate: None,
        errors,
    })
}

/// CPU time in clock ticks, split into user space and kernel.
#[derive(Clone, Copy, Default)]
struct Ticks {
    user: u64,
    system: u64,
}

/// utime and stime of `pid` (/proc/PID/stat fields 14 and 15).
fn cpu_ticks(pid: u32) -> Ticks {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return Ticks::default();
    };
    // The command name (field 2) may hold spaces; the fields after it are plain.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let f: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state), so field 14 is index 11.
    let field = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    Ticks {
        user: field(11),
        system: field(12),
    }
}

/// Clock ticks per second of /proc/PID/stat: USER_HZ, 100 on every Linux ABI.
const TICKS_PER_SEC: f64 = 100.0;

/// The processes whose CPU counts as "the proxy" for one path.
#[derive(Clone)]
enum Cpu {
    None,
    Pids(Vec<u32>),
}

impl Cpu {
    fn ticks(&self) -> Ticks {
        let pids: &[u32] = match self {
            Cpu::None => &[],
            Cpu::Pids(pids) => pids,
        };
        pids.iter()
            .map(|&p| cpu_ticks(p))
            .fold(Ticks::default(), |a, b| Ticks {
                user: a.user + b.user,
                system: a.system + b.system,
            })
    }
}

/// How many requests the native backend on `port` has served (None for another backend).
fn served(port: u16) -> Option<u64> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(stream, "GET {SERVED_PATH} HTTP/1.0\r\n\r\n").ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    answer.rsplit("\r\n\r\n").next()?.trim().parse().ok()
}

/// One measured run of wrk against `url`, with the proxy's CPU per request and the share of
/// requests that reached the candidate backend on port `candidate`.
fn measure(o: &Opts, url: &str, cpu: &Cpu, candidate: u16) -> anyhow::Result<WrkResult> {
    let (before, served_before) = (cpu.ticks(), served(candidate));
    let mut r = run_wrk(o.threads, o.connections, &o.duration, url, o.pace_ms)?;
    let after = cpu.ticks();
    if let Cpu::Pids(_) = cpu {
        let per_request =
            |ticks: u64| ticks as f64 / TICKS_PER_SEC * 1e6 / r.requests.max(1) as f64;
        let user = after.user - before.user;
        r.cpu_us = Some(per_request(user + after.system - before.system));
        r.user_us = Some(per_request(user));
    }
    if let (Some(a), Some(b)) = (served_before, served(candidate)) {
        r.to_candidate = Some(b.saturating_sub(a) as f64 / r.requests.max(1) as f64);
    }
    Ok(r)
}

/// One nginx master (with its workers) in front of the two backends.
struct Nginx {
    child: std::process::Child,
    port: u16,
    workers: u32,
    dir: PathBuf,
}

impl Nginx {
    fn start(
        workers: u32,
        stable: u16,
        candidate: u16,
        mirror_percent: u8,
        base: &Path,
    ) -> anyhow::Result<Nginx> {
        let nginx = which("nginx").ok_or_else(|| {
            anyhow::anyhow!(
                "nginx is not installed: `apt-get install nginx-light` (Debian; or `nginx`), \
                 or pass --no-nginx to measure only the dax proxy"
            )
        })?;
        let port = free_port()?;
        let dir = base.join(format!("nginx-{workers}w"));
        std::fs::create_dir_all(&dir)?;
        let d = dir.display();
        // Mirror `mirror_percent`% of requests to the candidate (nginx has no 0% split).
        let (split, mirror, mirror_location) = if mirror_percent > 0 {
            (
                format!(
                    r#"    split_clients "${{request_id}}" $mirror_this {{
        {mirror_percent}% 1;
        *   0;
    }}
"#
                ),
                "mirror /_mirror;",
                r#"        location = /_mirror {
            internal;
            if ($mirror_this = 0) { return 204; }
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_pass http://candidate$request_uri;
        }
"#,
            )
        } else {
            (String::new(), "", "")
        };
        let conf = format!(
            r#"worker_processes {workers};
daemon off;
master_process on;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    upstream weighted {{
        server 127.0.0.1:{stable} weight=9;
        server 127.0.0.1:{candidate} weight=1;
        keepalive 64;
    }}
    upstream candidate {{
        server 127.0.0.1:{candidate};
        keepalive 64;
    }}
    # The header match: `x-canary: always` goes to the candidate.
    map $http_x_canary $route {{
        always  candidate;
        default weighted;
    }}
{split}    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            {mirror}
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header X-Forwarded-For $remote_addr;
            proxy_pass http://$route;
        }}
{mirror_location}    }}
}}
"#
        );
        let conf_path = dir.join("nginx.conf");
        std::fs::write(&conf_path, conf)?;
        let child = std::process::Command::new(nginx)
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&conf_path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::inherit())
            .spawn()?;
        let n = Nginx {
            child,
            port,
            workers,
            dir,
        };
        // Ready when it answers.
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
                && n.worker_pids().len() == workers as usize
            {
                return Ok(n);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        anyhow::bail!("nginx did not start: see {}/error.log", n.dir.display())
    }

    fn worker_pids(&self) -> Vec<u32> {
        let pid = self.child.id();
        std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
            .unwrap_or_default()
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    fn cpu(&self) -> Cpu {
        let mut pids = self.worker_pids();
        pids.push(self.child.id());
        Cpu::Pids(pids)
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGQUIT: graceful stop of master and workers.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGQUIT,
        );
        let _ = self.child.wait();
    }
}

fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    if v.is_empty() {
        return f64::NAN;
    }
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("serve-backend") {
        let port = args.get(2).and_then(|p| p.parse().ok()).unwrap_or(8081);
        let version = args.get(3).cloned().unwrap_or_else(|| "v1".into());
        return tokio::runtime::Runtime::new()?.block_on(serve_backend(port, version));
    }
    let o = parse_opts()?;
    if o.wrk_cpus > 0 {
        let split = split_cpus(o.wrk_cpus)?;
        // Before any thread starts: the runtime's workers, the proxy's event loops, the
        // backends and nginx all inherit this affinity.
        sched_setaffinity(Pid::from_raw(0), &split.measured)?;
        let _ = CPU_SPLIT.set(split);
    }
    // The target and the proxy's accept loop run on this runtime's workers (the connections on
    // the proxy's own event loops); the bench drives wrk from the main thread (blocking), which
    // is none of them.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async { run(o).await })
}

async fn run(o: Opts) -> anyhow::Result<()> {
    let exe = std::env::current_exe()?;
    let demo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/demo-app/app.py");
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
        Path::new("."),
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
    target
        .set_traffic(
            "bench",
            &TrafficSplit {
                candidate_weight: 10,
                matches: vec![RequestMatch {
                    source: MatchSource::Header,
                    name: "x-canary".into(),
                    value: StringMatch::Exact("always".into()),
                }],
                mirror_percent: o.mirror_percent,
            },
        )
        .await?;
    let backends = target.backends().await;
    let port_of = |slot| {
        backends
            .iter()
            .find(|b| b.slot == slot)
            .map(|b| b.port)
            .ok_or_else(|| anyhow::anyhow!("no {slot:?} backend"))
    };
    let (stable, candidate) = (
        port_of(dax::contract::Slot::Stable)?,
        port_of(dax::contract::Slot::Candidate)?,
    );

    let tmp = tempfile::tempdir()?;
    let mut nginxes = Vec::new();
    for &w in &o.nginx_workers {
        nginxes.push(Nginx::start(
            w,
            stable,
            candidate,
            o.mirror_percent,
            tmp.path(),
        )?);
    }

    let mut paths: Vec<(String, String, Cpu)> = vec![
        (
            "direct".into(),
            format!("http://127.0.0.1:{stable}/"),
            Cpu::None,
        ),
        (
            "dax".into(),
            format!("http://{}/", target.proxy_addr()),
            Cpu::Pids(vec![std::process::id()]),
        ),
    ];
    for n in &nginxes {
        paths.push((
            format!("nginx-{}w", n.workers),
            format!("http://127.0.0.1:{}/", n.port),
            n.cpu(),
        ));
    }

    // wrk runs block this (non-worker) thread; the proxy keeps running on the workers.
    let results = measure_all(&o, &paths, candidate)?;
    print_report(&o, &paths, &results);

    drop(nginxes);
    target.finalize("bench").await?;
    Ok(())
}

struct Results {
    /// rounds[r][p]: round r, path p.
    rounds: Vec<Vec<WrkResult>>,
    /// One connection (`wrk -t1 -c1`), per path.
    single: Vec<WrkResult>,
}

fn measure_all(
    o: &Opts,
    paths: &[(String, String, Cpu)],
    candidate: u16,
) -> anyhow::Result<Results> {
    // Warm every path (connection pools, page cache) before measuring.
    for (_, url, _) in paths {
        run_wrk(o.threads, o.connections, "1s", url, o.pace_ms)?;
    }
    let mut rounds = Vec::new();
    for r in 0..o.rounds {
        let mut row = Vec::new();
        for (name, url, cpu) in paths {
            std::thread::sleep(Duration::from_millis(300));
            let res = measure(o, url, cpu, candidate)?;
            eprintln!(
                "round {} {name:<9} {:>9.0} req/s  p50 {:.3} ms  p99 {:.3} ms  cpu {} µs/req (user {})  to candidate {} {}",
                r + 1,
                res.rps,
                res.p50_ms,
                res.p99_ms,
                res.cpu_us.map_or("-".into(), |c| format!("{c:.1}")),
                res.user_us.map_or("-".into(), |c| format!("{c:.1}")),
                res.to_candidate.map_or("-".into(), |c| format!("{:.1}%", c * 100.0)),
                res.errors
            );
            row.push(res);
        }
        rounds.push(row);
    }
    let mut single = Vec::new();
    for (_, url, cpu) in paths {
        std::thread::sleep(Duration::from_millis(300));
        let one = Opts {
            threads: 1,
            connections: 1,
            pace_ms: None,
            ..o.clone()
        };
        single.push(measure(&one, url, cpu, candidate)?);
    }
    Ok(Results { rounds, single })
}

fn print_report(o: &Opts, paths: &[(String, String, Cpu)], res: &Results) {
    println!(
        "\nlocal proxy vs nginx: backend={}, mirror {}%, wrk -t{} -c{} -d{}, {} interleaved rounds, {}, dax proxy on one event loop per core",
        o.backend,
        o.mirror_percent,
        o.threads,
        o.connections,
        o.duration,
        o.rounds,
        // After `--wrk-cpus` this process sees only the cores of what is measured.
        match (std::thread::available_parallelism().map_or(0, |n| n.get()), o.wrk_cpus) {
            (n, 0) => format!("{n} cores shared by wrk and what it measures"),
            (n, w) => format!("{n} cores for the proxies and backends, {w} for wrk alone"),
        },
    );
    if let Some(ms) = o.pace_ms {
        println!("paced: every connection waits {ms} ms between requests (wrk `delay()`)");
    }
    println!(
        "| path | req/s (median) | req/s (min–max) | p50 ms | p99 ms | CPU µs/req | of it user | to candidate |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|");
    let col = |p: usize, f: &dyn Fn(&WrkResult) -> f64| -> Vec<f64> {
        res.rounds.iter().map(|row| f(&row[p])).collect()
    };
    let mut med = Vec::new();
    for (p, (name, _, _)) in paths.iter().enumerate() {
        let rps = col(p, &|r| r.rps);
        let (lo, hi) = rps
            .iter()
            .fold((f64::MAX, 0f64), |(lo, hi), &v| (lo.min(v), hi.max(v)));
        let m = (
            median(rps.clone()),
            median(col(p, &|r| r.p50_ms)),
            median(col(p, &|r| r.p99_ms)),
            median(col(p, &|r| r.cpu_us.unwrap_or(f64::NAN))),
        );
        let micros = |v: f64| {
            if v.is_nan() {
                "–".to_string()
            } else {
                format!("{v:.1}")
            }
        };
        let cpu = micros(m.3);
        let user = micros(median(col(p, &|r| r.user_us.unwrap_or(f64::NAN))));
        let share = median(col(p, &|r| r.to_candidate.unwrap_or(f64::NAN)));
        let share = if share.is_nan() {
            "–".to_string()
        } else {
            format!("{:.1}%", share * 100.0)
        };
        println!(
            "| {name} | {:.0} | {lo:.0}–{hi:.0} | {:.3} | {:.3} | {cpu} | {user} | {share} |",
            m.0, m.1, m.2
        );
        med.push(m);
    }
    if let Some(dax) = paths.iter().position(|(n, _, _)| n == "dax") {
        let d = med[dax];
        for (p, (name, _, _)) in paths.iter().enumerate() {
            if !name.starts_with("nginx") {
                continue;
            }
            let n = med[p];
            // Issue 14's target: at least nginx's throughput, p99 no worse than nginx's.
            let met = d.0 >= n.0 && d.2 <= n.2;
            println!(
                "dax / {name}: throughput {:.2}×, p50 {:.2}×, p99 {:.2}×, CPU/request {:.2}× (target ≥ 1× and p99 ≤ 1×: {})",
                d.0 / n.0,
                d.1 / n.1,
                d.2 / n.2,
                d.3 / n.3,
                if met { "met" } else { "NOT met" }
            );
        }
    }
    println!("\none connection (wrk -t1 -c1 -d{}):", o.duration);
    println!("| path | p50 ms | p99 ms | added p50 µs | CPU µs/req |");
    println!("|---|---:|---:|---:|---:|");
    let direct = res.single[0].p50_ms;
    for (p, (name, _, _)) in paths.iter().enumerate() {
        let r = &res.single[p];
        println!(
            "| {name} | {:.3} | {:.3} | {:.0} | {} |",
            r.p50_ms,
            r.p99_ms,
            (r.p50_ms - direct) * 1000.0,
            r.cpu_us.map_or("–".into(), |c| format!("{c:.1}"))
        );
    }
    for row in &res.rounds {
        for (p, r) in row.iter().enumerate() {
            if !r.errors.is_empty() {
                println!("{}: {}", paths[p].0, r.errors);
            }
        }
    }
}
