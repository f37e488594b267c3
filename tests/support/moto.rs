//! A real AWS API emulator for the `aws` capability and the ECS plugin: `moto_server` (PyPI
//! `moto[server]`, installed by tests/run.sh into `$DAX_BUILD_CACHE/venv-moto`) on a free
//! loopback port, one per test, killed (by pid) when dropped. Tests set AWS objects up and
//! read them back with boto3 from the same venv, so every assertion comes from the API.

use crate::in_ci;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

/// The access key every test profile uses while moto's authentication is off.
pub const KEY_ID: &str = "testing";
pub const REGION: &str = "us-east-1";

pub struct Moto {
    child: Child,
    pub port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// The venv tests/run.sh creates.
pub fn venv() -> PathBuf {
    let cache = std::env::var_os("DAX_BUILD_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|| dirs_home().join(".cache/dax-build"));
    cache.join("venv-moto")
}

fn dirs_home() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"))
}

impl Moto {
    /// Start `moto_server`. Without the venv, `None` (and a SKIP line) locally; a panic under CI.
    pub fn start() -> Option<Moto> {
        Self::start_with_env(&[])
    }

    /// Start `moto_server` with extra environment, e.g. `MOTO_ECS_SERVICE_RUNNING` (the
    /// running count moto gives every ECS service it creates).
    pub fn start_with_env(env: &[(&str, &str)]) -> Option<Moto> {
        let server = venv().join("bin/moto_server");
        if !server.exists() {
            assert!(
                !in_ci(),
                "{} is missing: tests/run.sh installs moto[server] into that venv",
                server.display()
            );
            eprintln!(
                "SKIP: {} missing (python3 -m venv {v} && {v}/bin/pip install 'moto[server]')",
                server.display(),
                v = venv().display()
            );
            return None;
        }
        host_credentials();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("moto.log");
        // Port 0: the server binds a port nobody else holds and prints it. A port picked here
        // and passed in could be taken by another test's server before this one binds it,
        // and the readiness probe would then reach that other server.
        let child = Command::new(&server)
            .args(["-H", "127.0.0.1", "-p", "0"])
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting moto_server");
        let mut moto = Moto {
            child,
            port: 0,
            log,
            _dir: dir,
        };
        let t0 = Instant::now();
        moto.port = loop {
            if let Some(port) = listening_port(&moto.log()) {
                break port;
            }
            if let Ok(Some(status)) = moto.child.try_wait() {
                panic!(
                    "moto_server exited ({status}) before listening:\n{}",
                    moto.log()
                );
            }
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "moto_server did not listen within 30s:\n{}",
                moto.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        while std::net::TcpStream::connect(("127.0.0.1", moto.port)).is_err() {
            assert!(
                t0.elapsed() < Duration::from_secs(30),
                "moto_server did not accept connections within 30s:\n{}",
                moto.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Some(moto)
    }

    /// `http://127.0.0.1:PORT`: what grants.aws.endpoint points at.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Run a Python snippet with boto3 against this server and parse what it prints last as
    /// JSON. In scope: `client(service)` (region us-east-1, the test key), `json`, `ENDPOINT`.
    pub fn boto(&self, script: &str) -> serde_json::Value {
        let prelude = format!(
            "import boto3, json, urllib.request\nENDPOINT = '{}'\n\
             def client(service, key='{KEY_ID}', secret='{KEY_ID}'):\n    \
             return boto3.client(service, endpoint_url=ENDPOINT, region_name='{REGION}', aws_access_key_id=key, aws_secret_access_key=secret)\n",
            self.endpoint()
        );
        let out = Command::new(venv().join("bin/python"))
            .args(["-c", &format!("{prelude}{script}")])
            .env_remove("AWS_PROFILE")
            .output()
            .expect("running the venv's python");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "boto3 script failed: {}\n{}\nscript:\n{script}",
            String::from_utf8_lossy(&out.stderr),
            stdout
        );
        let last = stdout.lines().last().unwrap_or("null");
        serde_json::from_str(last).unwrap_or_else(|e| panic!("`{last}` is not JSON: {e}"))
    }
}

/// The port of werkzeug's start-up line `* Running on http://127.0.0.1:PORT`.
fn listening_port(log: &str) -> Option<u16> {
    let rest =
        &log[log.find("Running on http://127.0.0.1:")? + "Running on http://127.0.0.1:".len()..];
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok().filter(|&port| port != 0)
}

impl Drop for Moto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The host's AWS credentials in tests come from a shared credentials file with profile
/// `moto` (set once per test process; grants pick a profile). Instance metadata is off so no
/// test probes 169.254.169.254.
pub fn host_credentials() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let dir = std::env::temp_dir().join(format!("dax-aws-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("credentials");
        write_profiles(&file, &[("moto", KEY_ID, KEY_ID)]);
        std::fs::write(dir.join("config"), "").unwrap();
        // Set once, before any test of this process loads an AWS grant.
        {
            std::env::set_var("AWS_SHARED_CREDENTIALS_FILE", &file);
            std::env::set_var("AWS_CONFIG_FILE", dir.join("config"));
            std::env::set_var("AWS_EC2_METADATA_DISABLED", "true");
            std::env::remove_var("AWS_ACCESS_KEY_ID");
            std::env::remove_var("AWS_SECRET_ACCESS_KEY");
            std::env::remove_var("AWS_SESSION_TOKEN");
            std::env::remove_var("AWS_PROFILE");
            std::env::remove_var("AWS_REGION");
            std::env::remove_var("AWS_DEFAULT_REGION");
        }
    });
}

/// Add profiles to the test credentials file (atomically: readers see the old or new file).
pub fn add_profiles(profiles: &[(&str, &str, &str)]) {
    host_credentials();
    let file = PathBuf::from(std::env::var_os("AWS_SHARED_CREDENTIALS_FILE").unwrap());
    let mut all = vec![("moto", KEY_ID, KEY_ID)];
    all.extend_from_slice(profiles);
    write_profiles(&file, &all);
}

fn write_profiles(file: &std::path::Path, profiles: &[(&str, &str, &str)]) {
    let text: String = profiles
        .iter()
        .map(|(name, id, secret)| {
            format!("[{name}]\naws_access_key_id = {id}\naws_secret_access_key = {secret}\n")
        })
        .collect();
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, file).unwrap();
}
