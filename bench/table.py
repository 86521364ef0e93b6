#!/usr/bin/env python3
"""Print benchmark JSON lines as one Markdown table.

Usage: table.py [FILE ...]   (reads stdin when no file is given)

Input lines come from peers.py, rust-peers and unroll's own bench binary, all
in one schema: {"workload", "system", "threads", "median_ms", "min_ms",
"max_ms", "gflops", ...}; lines with "error" are listed under the table; lines
that are not JSON are ignored. Times are shown in each workload's unit
(specs.py: ms/seq, seq/s, µs/batch, ms/batch, ms/fwd+bwd); for a throughput
unit, "min" and "max" are the lowest and highest throughput. GFLOP/s counts
useful work only (specs.Workload.useful_flops): 2·G·H·(I+H) per valid step of
each sequence, per layer and direction, three times that for the training
workloads W5 and W5v (so W5v's padded steps count nothing, whatever a peer
spends on them).

"× unroll" is the peer's median time over the best unroll median (any system
whose name starts with "unroll") of the same weight precision (a system named
with "bf16" or "int8", float32 otherwise), for the same workload and thread
count: above 1 the peer is slower. Where the fastest unroll row is of another
precision, the ratio to it follows in brackets with its precision (ONNX
Runtime float32 against unroll bf16). The fastest peer of each workload and
thread count is marked with ★.
"""

from __future__ import annotations

import json
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from specs import WORKLOADS  # noqa: E402

DIFF_LIMIT = 1e-3  # a larger difference to the reference is flagged


def read_lines(paths: list[str]) -> list[dict]:
    out = []
    streams = [open(p) for p in paths] if paths else [sys.stdin]
    for f in streams:
        for raw in f:
            raw = raw.strip()
            if not raw.startswith("{"):
                continue
            try:
                obj = json.loads(raw)
            except json.JSONDecodeError:
                continue
            if isinstance(obj, dict):
                out.append(obj)
    return out


def fmt(v: float) -> str:
    """Four significant digits, no exponent for the usual ranges."""
    if v != v:  # NaN
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.4g}"


def is_unroll(system: str) -> bool:
    return system.lower().startswith("unroll")


def precision(system: str) -> str:
    """The weights' precision a system's name states: bf16, int8, or f32."""
    name = system.lower()
    return next((p for p in ("bf16", "int8") if p in name), "f32")


def main() -> int:
    lines = read_lines(sys.argv[1:])
    results = [l for l in lines if "error" not in l and "median_ms" in l and "workload" in l]
    errors = [l for l in lines if "error" in l]

    def order(w: str) -> tuple:
        return (0, list(WORKLOADS).index(w)) if w in WORKLOADS else (1, w)

    groups: dict[tuple, list[dict]] = {}
    for r in results:
        groups.setdefault((r["workload"], int(r.get("threads", 1))), []).append(r)

    notes: list[str] = []
    loads = [float(r["loadavg"]) for r in results if isinstance(r.get("loadavg"), (int, float))]

    print("| workload | system | threads | median | min | max | unit | GFLOP/s | × unroll | cpu | max diff |")
    print("|---|---|---:|---:|---:|---:|---|---:|---:|---:|---:|")
    for key in sorted(groups, key=lambda k: (order(k[0]), k[1])):
        wname, threads = key
        rows = groups[key]
        w = WORKLOADS.get(wname)
        unroll_rows = [r for r in rows if is_unroll(r["system"])]
        unroll_best = min(unroll_rows, key=lambda r: r["median_ms"], default=None)
        unroll_by_precision: dict[str, float] = {}
        for r in unroll_rows:
            p = precision(r["system"])
            unroll_by_precision[p] = min(r["median_ms"], unroll_by_precision.get(p, float("inf")))
        peers = [r for r in rows if not is_unroll(r["system"])]
        best_peer = min(peers, key=lambda r: r["median_ms"]) if peers else None
        rows.sort(key=lambda r: (not is_unroll(r["system"]), r["median_ms"]))
        for r in rows:
            med, lo, hi = r["median_ms"], r.get("min_ms", float("nan")), r.get("max_ms", float("nan"))
            if w is not None:
                unit = w.unit
                vals = sorted([w.to_unit(lo), w.to_unit(hi)]) if lo == lo and hi == hi else [lo, hi]
                med_u, lo_u, hi_u = w.to_unit(med), vals[0], vals[1]
                gflops = r.get("gflops", w.useful_flops() / (med * 1e-3) / 1e9)
            else:
                unit, med_u, lo_u, hi_u = "ms/call", med, lo, hi
                gflops = r.get("gflops", float("nan"))
            name = r["system"]
            if r is best_peer:
                name = f"★ {name}"
            if r.get("note"):
                # Identical notes (the same caveat at 1 and 2 threads) share a number.
                text = f"{r['workload']} {r['system']}: {r['note']}"
                if text not in notes:
                    notes.append(text)
                name += f" [{notes.index(text) + 1}]"
            same = unroll_by_precision.get(precision(r["system"]))
            ratio = f"{med / same:.2f}" if same else "–"
            if unroll_best is not None and precision(unroll_best["system"]) != precision(r["system"]):
                best = unroll_best["median_ms"]
                ratio += f" ({med / best:.2f} vs {precision(unroll_best['system'])})"
            diff = r.get("max_abs_diff")
            diff_s = "–" if diff is None else f"{diff:.0e}" + (" ⚠" if diff > DIFF_LIMIT else "")
            cpu = r.get("cpu_util")
            cpu_s = "–" if cpu is None else f"{cpu:.2f}"
            print(f"| {wname} | {name} | {threads} | {fmt(med_u)} | {fmt(lo_u)} | {fmt(hi_u)} | {unit} "
                  f"| {fmt(gflops)} | {ratio} | {cpu_s} | {diff_s} |")

    print()
    print("× unroll: peer median time / best unroll median of the same weight precision at the same thread count "
          "(>1: peer slower); in brackets, against the fastest unroll row where it is of another precision. "
          "★: fastest peer. cpu: process CPU time / wall time while timing. "
          f"max diff: vs the numpy reference (⚠ above {DIFF_LIMIT:g}; W5, W5v: gradients of the parameters "
          "and x, each relative to its largest entry).")
    if loads:
        print(f"Machine 1-min load average during the measurements: {min(loads):.2f}–{max(loads):.2f} "
              "(on 2 cores, anything well above the benchmark's own threads means contention).")
    if notes:
        print()
        for i, n in enumerate(notes, 1):
            print(f"[{i}] {n}")
    if errors:
        print()
        print("Not measured:")
        for e in errors:
            where = " ".join(str(e[k]) for k in ("workload",) if k in e)
            thr = f" ({e['threads']}t)" if "threads" in e else ""
            print(f"- {e.get('system', '?')}{thr}{' ' + where if where else ''}: {e['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
