# Versions of the Kubernetes test control plane and where its build is cached; sourced by
# build.sh and cluster.sh. k8s.io/kubernetes and etcd are also pinned in wrapper/go.mod.
K8S_VERSION=v1.36.3
ETCD_VERSION=v3.6.8
KWOK_VERSION=v0.8.0
GATEWAY_API_VERSION=v1.6.3
# Istio's CRDs (VirtualService, DestinationRule, ...) from the istio.io/api module; fetched by
# crds.sh apart from the binaries, so changing it never rebuilds the control plane.
ISTIO_API_VERSION=v1.32.0
# Outside the clone, keyed by version, so every clone and CI run on the machine shares one build.
K8S_CACHE="${DAX_K8S_CACHE:-${DAX_BUILD_CACHE:-$HOME/.cache/dax-build}/k8s/$K8S_VERSION}"
ISTIO_CRDS="${DAX_BUILD_CACHE:-$HOME/.cache/dax-build}/k8s-crds/istio-$ISTIO_API_VERSION"
