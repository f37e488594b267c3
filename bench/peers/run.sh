#!/usr/bin/env bash
# Plugin calls side by side: dax's plugin-host bench, bare wasmtime (inside that bench),
# Extism and hashicorp/go-plugin (net/rpc and gRPC), all in this one invocation on this
# machine, printed as one table with each peer's ratio to dax.
#
#   bench/peers/run.sh            # full run (a few minutes, most of it dax's cold JS compile)
#   bench/peers/run.sh --quick    # fewer calls for the peers
#
# Needs: cargo (Rust 1.95+), go (1.26+, modules from the Go module proxy), python3 (the table).
# The peers are built outside dax's workspace and cached in ${DAX_BUILD_CACHE:-~/.cache/dax-build}
# (override the Extism target dir with DAX_PEERS_TARGET_DIR); raw results stay in a temp dir
# whose path is printed at the end.
set -euo pipefail

quick=()
for arg in "$@"; do
  case "$arg" in
    --quick) quick=(--quick) ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown argument '$arg' (try --quick or --help)" >&2; exit 2 ;;
  esac
done

die() { echo "run.sh: $*" >&2; exit 1; }
command -v cargo >/dev/null || die "cargo not found: install Rust (rustup, stable 1.95 or newer); dax and the Extism peer are Rust"
command -v go >/dev/null || die "go not found: install Go 1.26 or newer — the go-plugin peer is a Go program"
command -v python3 >/dev/null || die "python3 not found: it prints the table (Debian: apt-get install python3)"

peers="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$peers/../.." && pwd)"
cache="${DAX_BUILD_CACHE:-$HOME/.cache/dax-build}"
extism_target="${DAX_PEERS_TARGET_DIR:-$cache/peers-target}"
go_bin="$cache/peers-go"
out="$(mktemp -d "${TMPDIR:-/tmp}/dax-peers.XXXXXX")"
mkdir -p "$go_bin"

echo "== building the peers (cached in $cache)" >&2
(cd "$peers/go-plugin" && go build -o "$go_bin/metric-plugin" ./plugin && go build -o "$go_bin/goplugin-bench" ./bench) \
  || die "building bench/peers/go-plugin failed (its modules come from the Go module proxy: check GOPROXY)"
(cd "$peers/extism" && CARGO_TARGET_DIR="$extism_target" cargo build --release --locked --quiet) \
  || die "building bench/peers/extism failed"

echo "== dax: cargo bench -p dax-tests --bench plugin_host" >&2
# The bench needs only hello-metrics (examples/plugins) and js-metrics (built on its own).
# It exits non-zero when a measurement misses its target, after writing its JSON: the peers
# still run, and this script ends with that failure.
dax_status=0
(cd "$root" && DAX_BENCH_JSON="$out/dax.json" \
  DAX_TEST_PLUGIN_WORKSPACES="${DAX_TEST_PLUGIN_WORKSPACES:-examples/plugins}" \
  cargo bench -p dax-tests --bench plugin_host) 2>&1 | tee "$out/dax.txt" >&2 || dax_status=$?
[ -s "$out/dax.json" ] || die "dax's plugin_host bench failed (its output is above)"

echo "== Extism" >&2
"$extism_target/release/extism-peer-bench" "${quick[@]}" | tee "$out/extism.json" >&2
echo "== hashicorp/go-plugin" >&2
"$go_bin/goplugin-bench" -plugin "$go_bin/metric-plugin" "${quick[@]/--quick/-quick}" | tee "$out/goplugin.json" >&2

python3 "$peers/table.py" "$out"
echo "raw results: $out" >&2
[ "$dax_status" = 0 ] || die "dax missed a target of its plugin_host bench (NO in its table above)"
