"""Prints the peers table from one run.sh run: python3 table.py RESULTS_DIR.

RESULTS_DIR holds dax.json (written by dax's plugin_host bench when DAX_BENCH_JSON is set),
dax.txt (that bench's printed table), extism.json and goplugin.json (one JSON line each).
"""

import json
import re
import sys
from pathlib import Path

DAX_KEYS = [
    "dax_warm_call_us",
    "bare_wasmtime_async_call_us",
    "bare_wasmtime_sync_call_us",
    "native_call_us",
    "instantiate_us",
    "cold_load_rust_ms",
    "cached_load_rust_ms",
    "cold_load_js_ms",
    "cached_load_js_ms",
    "start_up_rust_ms",
]


def load_json(path: Path) -> dict:
    """One JSON object: the whole file (dax's bench pretty-prints it), else its last line."""
    try:
        text = path.read_text().strip()
    except OSError:
        return {}
    for candidate in (text, text.splitlines()[-1] if text else ""):
        try:
            return json.loads(candidate)
        except json.JSONDecodeError:
            continue
    return {}


def dax_from_text(text: str) -> dict:
    """A bench without DAX_BENCH_JSON support still prints these two rows."""
    found = {}
    rows = {
        "dax_warm_call_us": r"warm call, Wasm plugin.*?([\d.]+) (µs|ms)",
        "native_call_us": r"same logic, native Rust trait call\s+([\d.]+) (µs|ms)",
        "instantiate_us": r"instantiate from InstancePre, Rust plugin\s+([\d.]+) (µs|ms)",
    }
    for key, pattern in rows.items():
        m = re.search(pattern, text)
        if m:
            found[key] = float(m.group(1)) * (1000.0 if m.group(2) == "ms" else 1.0)
    return found


def fmt_us(v):
    if v is None:
        return "missing"
    if v >= 1000:
        return f"{v / 1000:.2f} ms"
    if v >= 10:
        return f"{v:.1f} µs"
    return f"{v:.2f} µs"


def ratio(v, base):
    if v is None or base is None or base == 0:
        return ""
    r = v / base
    return f"{r:.2f}×" if r < 10 else f"{r:,.0f}×"


def main() -> int:
    out = Path(sys.argv[1])
    dax = load_json(out / "dax.json")
    missing = [k for k in DAX_KEYS if k not in dax]
    from_text = {}
    if missing:
        text = (out / "dax.txt").read_text() if (out / "dax.txt").exists() else ""
        from_text = {k: v for k, v in dax_from_text(text).items() if k in missing}
        dax.update(from_text)
    ext = load_json(out / "extism.json")
    go = load_json(out / "goplugin.json")

    call = dax.get("dax_warm_call_us")
    inst = dax.get("instantiate_us")

    def ms_to_us(v):
        return None if v is None else v * 1000.0

    start = ms_to_us(dax.get("start_up_rust_ms"))

    rows = [
        ("Warm call (one small method, host → plugin → host)", None, None, None),
        ("dax, MetricProvider::run_query, full path (mean)", call, call, ""),
        ("bare wasmtime, same component, async + pooling + epoch + limiter (mean)",
         dax.get("bare_wasmtime_async_call_us"), call, ""),
        ("bare wasmtime, same component, sync call (mean)",
         dax.get("bare_wasmtime_sync_call_us"), call, ""),
        ("native Rust trait call, same logic (mean)", dax.get("native_call_us"), call, ""),
        (f"Extism {ext.get('extism', '?')}, trivial plugin (mean)",
         ext.get("warm_call_mean_us"), call, f"p50 {fmt_us(ext.get('warm_call_p50_us'))}"),
        (f"go-plugin {go.get('go_plugin', '?')} net/rpc (p50)",
         go.get("netrpc_warm_call_p50_us"), call,
         f"mean {fmt_us(go.get('netrpc_warm_call_mean_us'))}"),
        (f"go-plugin {go.get('go_plugin', '?')} gRPC (p50)",
         go.get("grpc_warm_call_p50_us"), call,
         f"mean {fmt_us(go.get('grpc_warm_call_mean_us'))}"),
        ("Getting a ready plugin instance", None, None, None),
        ("dax, instantiate from InstancePre", inst, inst, ""),
        ("Extism, Plugin::new_from_compiled", ext.get("instantiate_us"), inst, ""),
        # go-plugin has no instance short of a process: it compares with what a dax process
        # pays before its first call, not with an instantiation in a running host.
        ("A plugin ready in a process that has none yet", None, None, None),
        ("dax, new plugin host + load from compile cache (median)", start, start, ""),
        ("go-plugin process start + handshake + dispense, net/rpc (p50)",
         ms_to_us(go.get("netrpc_process_start_p50_ms")), start, ""),
        ("go-plugin process start + handshake + dispense, gRPC (p50)",
         ms_to_us(go.get("grpc_process_start_p50_ms")), start, ""),
    ]
    width = max(len(r[0]) for r in rows) + 2
    print()
    print(f"{'path':<{width}} {'time':>10} {'÷ dax':>8}  note")
    for label, value, base, note in rows:
        if value is None and base is None and note is None:
            print(f"-- {label}")
            continue
        print(f"  {label:<{width - 2}} {fmt_us(value):>10} {ratio(value, base):>8}  {note}")

    bare = dax.get("bare_wasmtime_async_call_us")
    # The bench's paired ratio (median of alternating rounds) when it wrote one.
    paired = dax.get("warm_call_ratio")
    if paired or (call and bare):
        r = paired or call / bare
        verdict = "met" if r <= 1.2 else "NOT met"
        print(f"\ndax warm call / bare wasmtime async = {r:.2f}× (target ≤ 1.2×: {verdict})")
    for target in dax.get("targets_missed") or []:
        print(f"dax missed a target: {target}")
    if missing:
        still = [k for k in missing if k not in from_text]
        print(f"\nnote: the dax bench wrote no {', '.join(missing)} to DAX_BENCH_JSON"
              " (this dax predates JSON output from benches/plugin_host.rs).")
        if from_text:
            print(f"      read from its printed table instead: {', '.join(from_text)}")
        if still:
            print(f"      missing from the table above: {', '.join(still)}")
    for name, data in (("Extism", ext), ("go-plugin", go)):
        if not data:
            print(f"note: no {name} results (see its output above)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
