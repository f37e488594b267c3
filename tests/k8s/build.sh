#!/usr/bin/env bash
# Builds the Kubernetes control plane the tests run against (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl from the Go module proxy; kwok to simulate a
# node; the Gateway API standard CRDs) into $K8S_CACHE (see versions.sh):
#   bin/  crds/  stages.yaml  stamp
# Does nothing when that is complete for the current sources. Needs Go (>= the go line of
# wrapper/go.mod) and network access to the module proxy. A cold build takes minutes and
# gigabytes of Go build cache; it runs at the lowest CPU priority so the machine stays usable.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"

say() { printf 'k8s build: %s\n' "$*"; }
# Kubernetes declares the newest Go as its minimum, newer than Debian's golang-go: the Go that
# this kind of machine ships (/usr/local/go) is the one to use.
need_go=$(sed -n 's/^go //p' "$here/wrapper/go.mod")
have_go=$(go env GOVERSION 2>/dev/null | sed 's/^go//') || true
if [ -z "$have_go" ] || [ "$(printf '%s\n%s\n' "$need_go" "$have_go" | sort -V | head -n 1)" != "$need_go" ]; then
  echo "k8s build: needs Go >= $need_go on PATH (found: ${have_go:-none}); Kubernetes $K8S_VERSION requires it" >&2
  exit 1
fi

# The stamp names every input: a changed version or wrapper source means a rebuild.
stamp="k8s=$K8S_VERSION etcd=$ETCD_VERSION kwok=$KWOK_VERSION gateway-api=$GATEWAY_API_VERSION sources=$(cat "$0" "$here"/wrapper/go.mod "$here"/wrapper/go.sum "$here"/wrapper/cmd/*/main.go | sha256sum | cut -c1-16)"
up_to_date() { [ "$(cat "$K8S_CACHE/stamp" 2>/dev/null)" = "$stamp" ]; }
up_to_date && { say "up to date in $K8S_CACHE"; exit 0; }
# One build at a time on the machine (several clones, CI); the second finds it done.
mkdir -p "$(dirname "$K8S_CACHE")"
exec 9>"$K8S_CACHE.lock"
flock 9
up_to_date && { say "up to date in $K8S_CACHE (built meanwhile)"; exit 0; }

# Gentle on a shared machine: lowest priority, two threads.
export GOTOOLCHAIN=local GOMAXPROCS="${GOMAXPROCS:-2}" GOFLAGS="-mod=readonly -buildvcs=false"
go_() { nice -n 19 go "$@"; }
# Packages built at once: both cores on a quiet machine (CI); DAX_K8S_BUILD_JOBS=1 shares the
# machine better with other builds (peak memory 2-2.8 GB either way).
jobs="${DAX_K8S_BUILD_JOBS:-2}"
# Build into a fresh directory and move it into place at the end: an interrupted build never
# looks complete.
work=$(mktemp -d "$K8S_CACHE.building.XXXXXX")
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/bin" "$work/crds"
start=$SECONDS

say "building etcd $ETCD_VERSION, kube-apiserver, kube-controller-manager, kube-scheduler and kubectl $K8S_VERSION (several minutes from a cold Go cache)"
minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
# The -X flags only set what `version` commands report.
ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$minor -X k8s.io/component-base/version.gitTreeState=clean"
(cd "$here/wrapper" && go_ build -p "$jobs" -trimpath -ldflags "$ldflags" -o "$work/bin/" ./cmd/...)
say "control plane built ($((SECONDS - start)) s)"

say "installing kwok $KWOK_VERSION"
GOBIN="$work/bin" GOFLAGS=-buildvcs=false go_ install -p "$jobs" -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
# Standalone kwok does nothing without Stage objects: join its default stages into one file.
kwok_src=$(GOFLAGS= go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
# The "fast" set kwok itself defaults to (no delays), with the status heartbeat rather than the
# Lease one: kwok v0.8.0 standalone never created the node's Lease here, and without a Lease
# or a fresh status the controller-manager marks the Node, and then its pods, not ready.
for stage in node/fast/node-initialize node/heartbeat/node-heartbeat \
  pod/fast/pod-ready pod/fast/pod-complete pod/fast/pod-delete; do
  file="$kwok_src/kustomize/stage/$stage.yaml"
  [ -f "$file" ] || { echo "k8s build: kwok $KWOK_VERSION has no $file" >&2; exit 1; }
  printf -- '---\n' >>"$work/stages.yaml"
  grep -v '^---$' "$file" >>"$work/stages.yaml"
done

say "fetching the Gateway API $GATEWAY_API_VERSION standard CRDs"
gw_src=$(GOFLAGS= go mod download -json "sigs.k8s.io/gateway-api@$GATEWAY_API_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
cp "$gw_src"/config/crd/standard/*.yaml "$work/crds/"
chmod -R u+w "$work"

echo "$stamp" >"$work/stamp"
rm -rf "$K8S_CACHE"
mv "$work" "$K8S_CACHE"
trap - EXIT
say "done in $((SECONDS - start)) s: $K8S_CACHE"
ls -l "$K8S_CACHE/bin"
