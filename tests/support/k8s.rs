//! A real Kubernetes control plane for tests: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and kwok (one simulated Node that makes pods Running and Ready) on loopback
//! ports, with the Gateway API CRDs installed. `tests/k8s/build.sh` builds the binaries once
//! into a cache outside the clone (`tests/run.sh` does); `tests/k8s/cluster.sh` starts them.
//!
//! Without the binaries a test is skipped locally (with a printed notice) and fails under
//! `CI=true`: see [`Cluster::start`].

use crate::{in_ci, repo_root};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

/// What `cluster.sh start` exits with when the binaries are not built.
const NOT_BUILT: i32 = 3;

/// A running control plane. Dropping it stops every process it started and deletes its
/// directory (PKI, etcd data, logs).
pub struct Cluster {
    /// Holds `kubeconfig`, `pki/`, `etcd/`, `logs/NAME.log` and `pids/NAME.pid`.
    dir: PathBuf,
    /// Admin kubeconfig (client certificate of `system:masters`, certificates embedded).
    pub kubeconfig: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub server: String,
    /// kubectl at the server's version, from the same build.
    pub kubectl: PathBuf,
    /// Whether dropping stops it (the shared cluster is left to the script's watchdog).
    owned: bool,
}

impl Cluster {
    /// Start a cluster owned by the caller, stopped when dropped. `None` (and a SKIP line) when
    /// the control plane is not built; a panic under `CI=true`, or when it fails to start.
    pub fn start() -> Option<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("dax-k8s-")
            .tempdir()
            .expect("creating the cluster's directory");
        // Deleted here when the start is skipped or panics; afterwards by stop or the watchdog.
        let cluster = Self::start_in(dir.path())?;
        let _ = dir.keep();
        Some(cluster)
    }

    /// One cluster for the whole test process, started on first use. Statics are never
    /// dropped: the script's watchdog stops it and deletes its directory when this process
    /// exits. Tests sharing it must use their own namespaces.
    pub fn shared() -> Option<&'static Cluster> {
        static SHARED: OnceLock<Option<Cluster>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                Cluster::start().map(|mut cluster| {
                    cluster.owned = false;
                    cluster
                })
            })
            .as_ref()
    }

    fn start_in(dir: &Path) -> Option<Cluster> {
        let out = Command::new("bash")
            .arg(script())
            .arg("start")
            .arg(dir)
            // The watchdog stops the cluster when this process exits, even without Drop.
            .arg(std::process::id().to_string())
            .stdin(Stdio::null())
            .output()
            .expect("running tests/k8s/cluster.sh");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.code() == Some(NOT_BUILT) {
            assert!(
                !in_ci(),
                "the Kubernetes test control plane is not built: run tests/k8s/build.sh \
                 (tests/run.sh does).\n{stderr}"
            );
            eprintln!("SKIP: Kubernetes control plane not built (run tests/k8s/build.sh)");
            return None;
        }
        assert!(
            out.status.success(),
            "tests/k8s/cluster.sh start {} failed ({}):\n{stderr}",
            dir.display(),
            out.status
        );
        eprint!("{stderr}");
        let stdout = String::from_utf8_lossy(&out.stdout);
        let field = |key: &str| {
            stdout
                .lines()
                .find_map(|line| line.strip_prefix(key)?.strip_prefix('='))
                .unwrap_or_else(|| panic!("cluster.sh printed no `{key}=` line:\n{stdout}"))
                .to_string()
        };
        Some(Cluster {
            dir: dir.to_path_buf(),
            kubeconfig: field("kubeconfig").into(),
            server: field("server"),
            kubectl: field("kubectl").into(),
            owned: true,
        })
    }

    /// Run kubectl against this cluster with `stdin`; the raw output, whatever the status.
    pub fn kubectl_output(&self, args: &[&str], stdin: &str) -> Output {
        use std::io::Write;
        let mut child = Command::new(&self.kubectl)
            .arg(format!("--kubeconfig={}", self.kubeconfig.display()))
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running kubectl");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    }

    /// Run kubectl; its stdout. Panics with stderr (and the control plane's log tails) when
    /// it fails.
    pub fn kubectl(&self, args: &[&str]) -> String {
        self.kubectl_ok(args, "")
    }

    /// Server-side apply of `manifest` (YAML or JSON, several documents allowed) with the
    /// field manager `dax-tests`; kubectl's output.
    pub fn apply(&self, manifest: &str) -> String {
        self.kubectl_ok(
            &[
                "apply",
                "--server-side",
                "--field-manager=dax-tests",
                "-f",
                "-",
            ],
            manifest,
        )
    }

    fn kubectl_ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.kubectl_output(args, stdin);
        assert!(
            out.status.success(),
            "kubectl {} failed: {}\n{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr),
            self.logs()
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// Process ids of everything the cluster runs (control plane, kwok, watchdog).
    pub fn pids(&self) -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir(self.dir.join("pids")) else {
            return Vec::new();
        };
        entries
            .filter_map(|e| {
                std::fs::read_to_string(e.ok()?.path())
                    .ok()?
                    .trim()
                    .parse()
                    .ok()
            })
            .collect()
    }

    /// The last lines of every component's log, for failure messages.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(self.dir.join("logs")) else {
            return out;
        };
        for entry in entries.flatten() {
            let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            out.push_str(&format!("--- {}\n", entry.file_name().to_string_lossy()));
            for line in &lines[lines.len().saturating_sub(10)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    /// Stop every process and delete the directory; what Drop does for an owned cluster.
    pub fn stop(&mut self) {
        if !self.dir.exists() {
            return;
        }
        let out = Command::new("bash")
            .arg(script())
            .arg("destroy")
            .arg(&self.dir)
            .stdin(Stdio::null())
            .output();
        if let Ok(out) = out {
            if !out.status.success() {
                eprintln!(
                    "cluster.sh destroy: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if self.owned {
            self.stop();
        }
    }
}

/// Whether `pid` is a live process (a zombie has exited: only its parent has not reaped it).
pub fn process_alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the command name, which is in parentheses and may hold spaces.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| !rest.trim_start().starts_with('Z'))
    })
}

fn script() -> PathBuf {
    repo_root().join("tests/k8s/cluster.sh")
}
