//! The Kubernetes test control plane itself (tests/k8s/): it starts, runs a Deployment to
//! Available through the scheduler and kwok's simulated node, serves the Gateway API, and
//! stopping it leaves no process behind.
//!
//! Skipped locally when tests/k8s/build.sh has not run; a failure under `CI=true`.

use dax_tests::k8s::{process_alive, Cluster};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One cluster at a time: each is a full control plane, and the machine is shared.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: smoke
  namespace: default
spec:
  replicas: 3
  selector:
    matchLabels: {app: smoke}
  template:
    metadata:
      labels: {app: smoke}
    spec:
      containers:
      - name: app
        # Never pulled: kwok only pretends to run it.
        image: registry.invalid/smoke:v1
"#;

/// An HTTPRoute splitting traffic by weight, as the Kubernetes target plugin will write them.
const ROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: smoke
  namespace: default
spec:
  parentRefs:
  - name: gateway
  rules:
  - backendRefs:
    - {name: smoke-primary, port: 80, weight: 90}
    - {name: smoke-canary, port: 80, weight: 10}
"#;

/// An Istio VirtualService splitting by weight between DestinationRule subsets' hosts.
const VIRTUAL_SERVICE: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: smoke
  namespace: default
spec:
  hosts: [smoke]
  http:
  - route:
    - {destination: {host: smoke-primary}, weight: 90}
    - {destination: {host: smoke-canary}, weight: 10}
"#;

#[test]
fn control_plane_runs_a_deployment_serves_gateway_api_and_stops_clean() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let t0 = Instant::now();
    let Some(cluster) = Cluster::start() else {
        return;
    };
    eprintln!("cluster started in {:.1?}", t0.elapsed());
    assert!(
        cluster.server.starts_with("https://127.0.0.1:"),
        "{}",
        cluster.server
    );
    let kubeconfig = std::fs::read_to_string(&cluster.kubeconfig).unwrap();
    assert!(kubeconfig.contains(&cluster.server), "{kubeconfig}");

    // A Deployment goes through the controller-manager, the scheduler and kwok's node.
    let t1 = Instant::now();
    cluster.apply(DEPLOYMENT);
    cluster.kubectl(&[
        "wait",
        "--for=condition=Available",
        "deployment/smoke",
        "--timeout=60s",
    ]);
    let ready = cluster.kubectl(&[
        "get",
        "deployment/smoke",
        "-o=jsonpath={.status.readyReplicas}/{.status.availableReplicas}",
    ]);
    assert_eq!(ready, "3/3", "{}", cluster.logs());
    eprintln!("3-replica Deployment Available in {:.1?}", t1.elapsed());
    let nodes = cluster.kubectl(&[
        "get",
        "pods",
        "-l=app=smoke",
        "-o=jsonpath={.items[*].spec.nodeName}",
    ]);
    assert_eq!(nodes, "kwok-node-0 kwok-node-0 kwok-node-0");

    // The Gateway API's HTTPRoute is served at v1 and keeps what is written to it.
    let group = cluster.kubectl(&["get", "--raw=/apis/gateway.networking.k8s.io/v1"]);
    assert!(group.contains(r#""kind":"HTTPRoute""#), "{group}");
    cluster.apply(ROUTE);
    let weights = cluster.kubectl(&[
        "get",
        "httproute/smoke",
        "-o=jsonpath={.spec.rules[0].backendRefs[*].weight}",
    ]);
    assert_eq!(weights, "90 10");

    // Istio's VirtualService (and its schema) is served too, for the Istio router.
    cluster.apply(VIRTUAL_SERVICE);
    let weights = cluster.kubectl(&[
        "get",
        "virtualservice/smoke",
        "-o=jsonpath={.spec.http[0].route[*].weight}",
    ]);
    assert_eq!(weights, "90 10");

    // Stopping ends every process it started (control plane, kwok, watchdog).
    let pids = cluster.pids();
    assert_eq!(
        pids.len(),
        6,
        "etcd, 3 control-plane parts, kwok, watchdog: {pids:?}"
    );
    assert!(pids.iter().all(|&pid| process_alive(pid)), "{pids:?}");
    drop(cluster);
    let left: Vec<u32> = pids.into_iter().filter(|&pid| process_alive(pid)).collect();
    assert!(left.is_empty(), "still running after stop: {left:?}");
}

/// The watchdog stops a cluster whose owner died without dropping it (a test binary's statics
/// never drop; a SIGKILLed test never runs Drop).
#[test]
fn watchdog_stops_the_cluster_when_its_owner_exits() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    // A stand-in owner we can kill; killed on every path, so a failed assertion below still
    // lets the watchdog clean up.
    struct Owner(std::process::Child);
    impl Owner {
        fn exit(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    impl Drop for Owner {
        fn drop(&mut self) {
            self.exit();
        }
    }
    let mut owner = Owner(
        std::process::Command::new("sleep")
            .arg("600")
            .spawn()
            .unwrap(),
    );
    let out = std::process::Command::new("bash")
        .arg(dax_tests::repo_root().join("tests/k8s/cluster.sh"))
        .arg("start")
        .arg(dir.path())
        .arg(owner.0.id().to_string())
        .output()
        .unwrap();
    if out.status.code() == Some(3) {
        assert!(
            !dax_tests::in_ci(),
            "control plane not built: run tests/k8s/build.sh"
        );
        eprintln!("SKIP: Kubernetes control plane not built (run tests/k8s/build.sh)");
        return;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pids: Vec<u32> = std::fs::read_dir(dir.path().join("pids"))
        .unwrap()
        .map(|e| {
            std::fs::read_to_string(e.unwrap().path())
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(pids.len(), 6, "{pids:?}");

    owner.exit();
    let deadline = Instant::now() + Duration::from_secs(20);
    while pids.iter().any(|&pid| process_alive(pid)) {
        assert!(
            Instant::now() < deadline,
            "still running 20 s after the owner died: {:?}",
            pids.iter()
                .filter(|&&p| process_alive(p))
                .collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        !dir.path().exists(),
        "the watchdog deletes the cluster's directory"
    );
}

/// `Cluster::shared` starts one cluster per test process and hands out the same one.
#[test]
fn shared_cluster_is_started_once() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let Some(first) = Cluster::shared() else {
        return;
    };
    let second = Cluster::shared().expect("started once, shared afterwards");
    assert!(std::ptr::eq(first, second));
    assert_eq!(second.kubectl(&["get", "--raw=/readyz"]), "ok");
}
