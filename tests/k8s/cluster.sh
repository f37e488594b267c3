#!/usr/bin/env bash
# A real Kubernetes control plane on 127.0.0.1 for tests, from the binaries tests/k8s/build.sh
# caches: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, and kwok simulating one
# Node (pods become Running and Ready without a container runtime). Gateway API and Istio CRDs
# installed (crds.sh fetches the Istio ones).
#
#   tests/k8s/cluster.sh start DIR [OWNER_PID]   prints kubeconfig=, server=, kubectl= lines
#   tests/k8s/cluster.sh stop DIR
#   tests/k8s/cluster.sh destroy DIR             stop, then delete DIR
#
# DIR holds the PKI, etcd's data, logs/, pids/ and kubeconfig (admin, client certificate). With
# OWNER_PID, a watchdog destroys the cluster when that process exits, however it exits. Every port
# is a free one on 127.0.0.1, so several clusters can run at once. Exit status 3: not built.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"
bin="$K8S_CACHE/bin"

say() { printf 'k8s cluster: %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# Processes are found again through DIR/pids/NAME.pid. SIGKILL: the cluster's state is thrown
# away, and a graceful API server shutdown waits on an etcd that is going away too.
stop() {
  local dir=$1 pids=() pid file
  for file in "$dir"/pids/*.pid; do
    [ -f "$file" ] || continue
    pid=$(cat "$file")
    rm -f "$file"
    # The watchdog runs this very function: it must not kill itself half way.
    [ "$pid" = "$$" ] && continue
    kill -9 "$pid" 2>/dev/null && pids+=("$pid")
  done
  for _ in $(seq 100); do
    local alive=()
    for pid in ${pids[@]+"${pids[@]}"}; do running "$pid" && alive+=("$pid"); done
    [ ${#alive[@]} -eq 0 ] && return 0
    pids=("${alive[@]}")
    sleep 0.1
  done
  say "still running 10 s after SIGKILL: ${pids[*]}"
  return 1
}

# Alive and not a zombie (a zombie has exited; only its parent has not reaped it yet).
running() { [ -r "/proc/$1/stat" ] && ! grep -q '^[0-9]* ([^)]*) Z' "/proc/$1/stat" 2>/dev/null; }

# launch NAME ARGS...: runs ARGS in the background, detached from our stdout (a caller that
# reads our output to its end must not wait for the cluster), logging to DIR/logs/NAME.log.
launch() {
  local name=$1; shift
  "$@" </dev/null >"$dir/logs/$name.log" 2>&1 &
  echo $! >"$dir/pids/$name.pid"
}

# until SECONDS WHAT CMD...: retries CMD every 0.1 s; on timeout, names WHAT and the logs.
until_ok() {
  local limit=$1 what=$2; shift 2
  local deadline=$((SECONDS + limit))
  until "$@" >/dev/null 2>&1; do
    if [ $SECONDS -ge $deadline ]; then
      say "$what did not happen within $limit s; logs in $dir/logs:"
      tail -n 5 "$dir"/logs/*.log >&2 || true
      exit 1
    fi
    for file in "$dir"/pids/*.pid; do
      running "$(cat "$file")" || { say "$(basename "$file" .pid) exited:"; tail -n 20 "$dir/logs/$(basename "$file" .pid).log" >&2; exit 1; }
    done
    sleep 0.1
  done
}

pki() {
  local p=$dir/pki
  mkdir -p "$p"
  # key NAME: an EC P-256 key (fast to make; every component accepts it).
  key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$p/$1.key" 2>/dev/null; }
  # cert NAME CA SUBJECT EXTENSIONS
  cert() {
    key "$1"
    openssl req -new -key "$p/$1.key" -subj "$3" -out "$p/$1.csr" 2>/dev/null
    openssl x509 -req -in "$p/$1.csr" -CA "$p/$2.crt" -CAkey "$p/$2.key" -CAcreateserial -days 30 \
      -out "$p/$1.crt" -extfile <(printf '%b' "$4") 2>/dev/null
  }
  for ca in ca front-proxy-ca; do
    key "$ca"
    openssl req -x509 -new -key "$p/$ca.key" -subj "/CN=dax-test-$ca" -days 30 -out "$p/$ca.crt" 2>/dev/null
  done
  cert apiserver ca "/CN=kube-apiserver" \
    "subjectAltName=IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\nextendedKeyUsage=serverAuth\nkeyUsage=digitalSignature,keyEncipherment"
  cert admin ca "/O=system:masters/CN=dax-test-admin" "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment"
  cert front-proxy-client front-proxy-ca "/CN=front-proxy-client" "extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment"
  # Service-account tokens are signed with RSA, as kubeadm does.
  openssl genrsa -out "$p/sa.key" 2048 2>/dev/null
  openssl rsa -in "$p/sa.key" -pubout -out "$p/sa.pub" 2>/dev/null
}

kubeconfig() {
  local p=$dir/pki
  # Certificates embedded: the file alone is enough for kubectl and kube-rs.
  cat >"$dir/kubeconfig" <<YAML
apiVersion: v1
kind: Config
clusters:
- name: dax-test
  cluster:
    server: https://127.0.0.1:$api_port
    certificate-authority-data: $(base64 -w0 "$p/ca.crt")
users:
- name: dax-test-admin
  user:
    client-certificate-data: $(base64 -w0 "$p/admin.crt")
    client-key-data: $(base64 -w0 "$p/admin.key")
contexts:
- name: dax-test
  context: {cluster: dax-test, user: dax-test-admin, namespace: default}
current-context: dax-test
YAML
}

# Every CRD Established (one `get`: `kubectl wait --all` waits on them one by one, in one timeout).
crds_established() {
  local states
  states=$("${k[@]}" get crd -o 'jsonpath={range .items[*]}{.status.conditions[?(@.type=="Established")].status}{"\n"}{end}') || return 1
  [ -n "$states" ] && ! grep -qv '^True$' <<<"$states"
}

start() {
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok; do
    [ -x "$bin/$b" ] || { say "$bin/$b is missing: build the control plane first with tests/k8s/build.sh"; exit 3; }
  done
  [ -s "$ISTIO_CRDS/istio.yaml" ] || { say "the Istio CRDs are missing: fetch them with tests/k8s/crds.sh"; exit 3; }
  [ ! -e "$dir/kubeconfig" ] || die "$dir already holds a cluster; stop it (tests/k8s/cluster.sh stop $dir) or use another directory"
  mkdir -p "$dir/logs" "$dir/pids"
  # Whatever fails from here on, leave nothing running.
  trap 'status=$?; [ $status -eq 0 ] || stop "$dir"; exit $status' EXIT
  local t0=$EPOCHREALTIME
  # Free ports from the kernel, held until all are chosen so they differ.
  local ports
  ports=$(python3 -c 'import socket
s=[socket.socket() for _ in range(6)]
[x.bind(("127.0.0.1",0)) for x in s]
print(" ".join(str(x.getsockname()[1]) for x in s))')
  read -r etcd_port peer_port api_port kcm_port sched_port kwok_port <<<"$ports"
  local p=$dir/pki kc=$dir/kubeconfig
  pki
  kubeconfig

  launch etcd "$bin/etcd" --name=dax-test --data-dir="$dir/etcd" --log-level=warn \
    --listen-client-urls="http://127.0.0.1:$etcd_port" --advertise-client-urls="http://127.0.0.1:$etcd_port" \
    --listen-peer-urls="http://127.0.0.1:$peer_port" --initial-advertise-peer-urls="http://127.0.0.1:$peer_port" \
    --initial-cluster="dax-test=http://127.0.0.1:$peer_port" --unsafe-no-fsync=true
  # 10.0.0.0/24 exists only as data in etcd: nothing ever connects to it.
  launch kube-apiserver "$bin/kube-apiserver" --etcd-servers="http://127.0.0.1:$etcd_port" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$api_port" --cert-dir="$p" \
    --tls-cert-file="$p/apiserver.crt" --tls-private-key-file="$p/apiserver.key" --client-ca-file="$p/ca.crt" \
    --requestheader-client-ca-file="$p/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$p/front-proxy-client.crt" --proxy-client-key-file="$p/front-proxy-client.key" \
    --endpoint-reconciler-type=none --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-account-key-file="$p/sa.pub" --service-account-signing-key-file="$p/sa.key" \
    --service-cluster-ip-range=10.0.0.0/24 --authorization-mode=Node,RBAC --allow-privileged=true \
    --enable-priority-and-fairness=false --profiling=false
  local k=("$bin/kubectl" --kubeconfig="$kc")
  until_ok 60 "the API server's /readyz" "${k[@]}" get --raw=/readyz
  local ready_at=$EPOCHREALTIME
  # Only once the API server is ready: the controller-manager exits at once when it cannot read
  # the extension-apiserver-authentication ConfigMap (seen on a loaded machine).
  launch kube-controller-manager "$bin/kube-controller-manager" --kubeconfig="$kc" \
    --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port="$kcm_port" --leader-elect=false --profiling=false \
    --service-account-private-key-file="$p/sa.key" --root-ca-file="$p/ca.crt" \
    --cluster-signing-cert-file="$p/ca.crt" --cluster-signing-key-file="$p/ca.key" \
    --node-monitor-grace-period=5m
  launch kube-scheduler "$bin/kube-scheduler" --kubeconfig="$kc" \
    --authentication-kubeconfig="$kc" --authorization-kubeconfig="$kc" \
    --bind-address=127.0.0.1 --secure-port="$sched_port" --leader-elect=false --profiling=false

  # kwok plays the kubelet of every Node annotated kwok.x-k8s.io/node=fake. Its heartbeat is
  # the Node's status every 20-45 s, no Lease (see build.sh); the controller-manager's grace
  # period above is generous so a loaded machine never marks the node not ready.
  launch kwok "$bin/kwok" --kubeconfig="$kc" --config="$K8S_CACHE/stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --cidr=10.0.0.1/24 --node-ip=10.0.0.1 --server-address="127.0.0.1:$kwok_port" \
    --node-lease-duration-seconds=0
  # Server-side, as the tests apply everything (mixing with client-side apply conflicts).
  "${k[@]}" apply --server-side --force-conflicts -f "$K8S_CACHE/crds/" >/dev/null
  "${k[@]}" apply --server-side --force-conflicts -f "$ISTIO_CRDS/istio.yaml" >/dev/null
  "${k[@]}" apply --server-side -f - >/dev/null <<'YAML'
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-0
  annotations: {kwok.x-k8s.io/node: fake}
  labels: {kubernetes.io/hostname: kwok-node-0, kubernetes.io/os: linux, kubernetes.io/arch: amd64, type: kwok}
status:
  capacity: {cpu: "32", memory: 256Gi, pods: "110"}
  allocatable: {cpu: "32", memory: 256Gi, pods: "110"}
YAML
  until_ok 60 "Node kwok-node-0 Ready" "${k[@]}" wait --for=condition=Ready node/kwok-node-0 --timeout=2s
  until_ok 60 "the Gateway API and Istio CRDs Established" crds_established
  # Pods are refused until the namespace's default ServiceAccount exists.
  until_ok 60 "ServiceAccount default/default" "${k[@]}" get serviceaccount default

  if [ -n "${owner:-}" ]; then
    # Destroys the cluster when the owner exits, even by SIGKILL (a test binary's statics never drop).
    # Detached from our stdout and from the owner's process group, so neither waits on it.
    setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; exec bash "$2" destroy "$3"' \
      watchdog "$owner" "$here/cluster.sh" "$dir" </dev/null >"$dir/logs/watchdog.log" 2>&1 &
    echo $! >"$dir/pids/watchdog.pid"
  fi
  trap - EXIT
  say "$(awk -v a="$t0" -v r="$ready_at" -v e="$EPOCHREALTIME" 'BEGIN {printf "API ready after %.1f s, node and CRDs ready after %.1f s", r-a, e-a}')"
  echo "kubeconfig=$kc"
  echo "server=https://127.0.0.1:$api_port"
  echo "kubectl=$bin/kubectl"
}

[ $# -ge 2 ] || die "usage: $0 start DIR [OWNER_PID] | stop DIR | destroy DIR"
[ "$1" != start ] || mkdir -p "$2"
[ -d "$2" ] || die "$2: no such directory"
dir=$(cd "$2" && pwd)
case $1 in
  start) owner=${3:-}; start ;;
  stop) stop "$dir" ;;
  destroy) stop "$dir"; rm -rf "$dir" ;;
  *) die "usage: $0 start DIR [OWNER_PID] | stop DIR | destroy DIR" ;;
esac
