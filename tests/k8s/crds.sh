#!/usr/bin/env bash
# Fetch the third-party CRDs the test cluster installs beside the Gateway API ones: Istio's
# (VirtualService, DestinationRule, ...), from the istio.io/api Go module, so the Kubernetes
# target's Istio router runs against the real schemas. Cached outside the clone; seconds.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
. "$here/versions.sh"
say() { printf 'k8s crds: %s\n' "$*" >&2; }
if [ -s "$ISTIO_CRDS/istio.yaml" ]; then
  say "up to date in $ISTIO_CRDS"
  exit 0
fi
src=$(GOFLAGS= GOTOOLCHAIN=local go mod download -json "istio.io/api@$ISTIO_API_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
[ -s "$src/kubernetes/customresourcedefinitions.gen.yaml" ] || { say "istio.io/api@$ISTIO_API_VERSION has no kubernetes/customresourcedefinitions.gen.yaml"; exit 1; }
mkdir -p "$ISTIO_CRDS"
cp "$src/kubernetes/customresourcedefinitions.gen.yaml" "$ISTIO_CRDS/istio.yaml.tmp"
chmod u+w "$ISTIO_CRDS/istio.yaml.tmp"
mv "$ISTIO_CRDS/istio.yaml.tmp" "$ISTIO_CRDS/istio.yaml"
say "Istio $ISTIO_API_VERSION CRDs in $ISTIO_CRDS"
