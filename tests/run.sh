#!/usr/bin/env bash
# The whole test suite, from a fresh clone on a fresh Debian machine:
#   bash tests/run.sh
# Installs what the tests need (Debian packages when run as root; npm packages for the
# JavaScript plugin), builds every plugin from source, proves the plugins embedded in the
# binary match those sources, then runs every test. Set CI=true to make any missing
# component a failure (CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

# Build caches live outside the clone so a second run on the same machine is incremental.
cache="${DAX_BUILD_CACHE:-$HOME/.cache/dax-build}"
export DAX_BUILD_CACHE="$cache"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$cache/target}"
mkdir -p "$CARGO_TARGET_DIR"

step() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }

step "system packages"
need=()
for pkg in rustc-web cargo-web rust-web-src lld-19 wasi-libc prometheus docker-registry; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
command -v python3 >/dev/null || need+=(python3)
# Python venvs (componentize-py for Python plugins, moto for the AWS tests) need ensurepip,
# which Debian ships in python3-venv.
python3 -c 'import ensurepip' 2>/dev/null || need+=(python3-venv)
command -v npm >/dev/null || need+=(nodejs npm)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q "${need[@]}" >/dev/null
  else
    echo "missing Debian packages: ${need[*]} — run: sudo apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi
echo "ok"

step "plugin authoring toolchains (componentize-py from PyPI into \$DAX_BUILD_CACHE)"
# The version `dax plugin build` pins (COMPONENTIZE_PY_VERSION in host/src/authoring/build.rs);
# JavaScript projects install componentize-js from npm with their own lockfile.
cpy_version=$(sed -n 's/^pub const COMPONENTIZE_PY_VERSION: &str = "\(.*\)";/\1/p' host/src/authoring/build.rs)
if ! "$cache/componentize-py/bin/componentize-py" --version 2>/dev/null | grep -q "$cpy_version"; then
  python3 -m venv "$cache/componentize-py"
  "$cache/componentize-py/bin/pip" install --quiet "componentize-py==$cpy_version"
fi
"$cache/componentize-py/bin/componentize-py" --version

step "formatting (the workspace and every plugin workspace)"
cargo fmt --all -- --check
for ws in plugins examples/plugins tests/plugins; do
  (cd "$ws" && cargo fmt --all -- --check) || { echo "rustfmt: run cargo fmt --all in $ws"; exit 1; }
done

step "lints (clippy -D warnings: the workspace and every plugin package)"
cargo clippy --workspace --all-targets --quiet -- -D warnings
# One package per cargo invocation: the SDK allows one plugin role per build.
for ws in plugins examples/plugins tests/plugins; do
  for pkg in $(cd "$ws" && cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(" ".join(p["name"] for p in json.load(sys.stdin)["packages"]))'); do
    (cd "$ws" && cargo clippy --quiet -p "$pkg" --all-targets -- -D warnings) || { echo "clippy: $ws/$pkg has warnings"; exit 1; }
  done
done
echo ok

step "build dax"
cargo build -p dax --quiet

step "build every plugin from source (Rust + JavaScript)"
"$CARGO_TARGET_DIR/debug/dax" plugin build --all

step "embedded plugins match the current sources"
"$CARGO_TARGET_DIR/debug/dax" plugin build --all --check

step "plugin crates' own unit and property tests"
# Only first-party plugins carry native unit tests; example and test plugins are
# exercised as components through the host.
for ws in plugins; do
  [ -f "$ws/Cargo.toml" ] || continue
  # One package per cargo invocation: the SDK allows one plugin role per build.
  for pkg in $(cd "$ws" && cargo metadata --no-deps --format-version 1 | python3 -c 'import json,sys; print(" ".join(p["name"] for p in json.load(sys.stdin)["packages"]))'); do
    if out=$(cd "$ws" && cargo test --quiet -p "$pkg" 2>&1); then
      echo "$ws/$pkg: $(echo "$out" | grep -E '^test result' | awk '{p+=$4; f+=$6} END {printf "%d passed, %d failed", p, f}')"
    else
      echo "$out" | tail -n 60; echo "unit tests of $ws/$pkg failed"; exit 1
    fi
  done
done

step "Kubernetes test control plane (tests/k8s; built once into \$DAX_BUILD_CACHE/k8s)"
# Minutes from a cold Go cache, seconds once cached; tests/kube_*.rs start it from there.
if ! { bash tests/k8s/build.sh && bash tests/k8s/crds.sh; }; then
  [ "${CI:-}" = true ] && exit 1
  echo "not built: the Kubernetes tests will be skipped"
fi

step "AWS API emulator (moto[server] from PyPI into \$DAX_BUILD_CACHE/venv-moto)"
# tests/aws_*.rs start moto_server from this venv on loopback ports.
moto_venv="$cache/venv-moto"
if [ ! -x "$moto_venv/bin/moto_server" ]; then
  if ! { python3 -m venv "$moto_venv" && "$moto_venv/bin/pip" install -q 'moto[server]>=5.2,<6'; }; then
    [ "${CI:-}" = true ] && exit 1
    echo "not installed: the AWS tests will be skipped"
  fi
fi
"$moto_venv/bin/python" -c 'import moto; print("moto", moto.__version__)' || true

step "host and integration tests"
cargo test --workspace --no-fail-fast --quiet 2>&1 | tee "$CARGO_TARGET_DIR/test-output.txt" | grep -vE "^\s*$" | tail -n 200
status=${PIPESTATUS[0]}
passed=$(grep -Eo "[0-9]+ passed" "$CARGO_TARGET_DIR/test-output.txt" | awk '{s+=$1} END {print s+0}')
failed=$(grep -Eo "[0-9]+ failed" "$CARGO_TARGET_DIR/test-output.txt" | awk '{s+=$1} END {print s+0}')
echo
echo "$passed passed, $failed failed"
exit "$status"
