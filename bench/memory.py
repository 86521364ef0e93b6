#!/usr/bin/env python3
"""Memory of a training call on W5 (and W5v): unroll against PyTorch.

Usage: memory.py [--workloads W5,W5v] [--calls 20] [--threads 1]
                 [--unroll target/release/memory_unroll]

Prints two Markdown tables (bench/memory.sh installs, builds and runs this):

1. What is kept for the backward, per valid (sequence, step).
   unroll: the tape, as the generated `W5DynamicTape::bytes()` counts it
   (rnn-bench's `memory_unroll` prints it). PyTorch: the tensors autograd
   saves for the backward, seen through
   `torch.autograd.graph.saved_tensors_hooks` during one training call of
   bench/peers.py (its model and its call: `pytorch_module`,
   `pytorch_train_calls`), counted once per storage (a saved view keeps its
   whole storage alive); the parameters and the caller's `x`, which autograd
   references but does not copy, are listed apart and not counted. Each
   storage is named after the backward node that saved it (found by walking
   the graph before backward).

2. Peak resident memory (VmHWM, /proc/self/status) of a fresh process that
   sets up (reads the data file, builds the model, keeps `x`) and then makes
   0, 1 or N training calls, each a separate process, so that
   "N calls - setup only" is what the calls add; and the resident memory at
   the end split into anonymous (data) and file-backed (code of the shared
   libraries: how much of it is mapped depends on the page cache, so it
   varies between runs) parts. One unmeasured process of each system runs
   first, to warm the page cache. For unroll the table also gives the heap's
   peak during the calls, counted by `memory_unroll`'s allocator (bytes
   allocated and not yet freed, above the setup's).

Each measurement runs in its own subprocess; PyTorch's with the thread caps
of peers.py (`worker_env`) and `torch.set_num_threads`. unroll's training
code runs on one thread whatever the setting.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import pytorch_module, pytorch_train_calls, worker_env  # noqa: E402
from specs import REPO_ROOT, WORKLOADS, Workload, data_path  # noqa: E402

UNROLL_MODES = ("dynamic", "static")


def status_kib(field: str) -> int:
    """A line of /proc/self/status in KiB (VmRSS: resident now, VmHWM: peak)."""
    with open("/proc/self/status") as f:
        for ln in f:
            if ln.startswith(field + ":"):
                return int(ln.split()[1])
    raise KeyError(field)


# ----------------------------------------------------------------------------
# The PyTorch worker (a subprocess per measurement)


def pytorch_setup(w: Workload, threads: int):
    """Threads, the data file, the model and `x`, as bench/peers.py sets them
    up. Returns (torch, model, x, the file's tensors)."""
    import torch
    from safetensors.numpy import load_file

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    t = load_file(data_path(w.name))
    m = pytorch_module(w, t)
    x = torch.from_numpy(t["x"].copy())
    x.requires_grad_(True)
    return torch, m, x, t


def pytorch_call(w: Workload, variant: str, m, x, t, before_backward=None):
    """The training call of `variant`, as bench/peers.py times it."""
    calls = {label: fn for label, fn, _ in pytorch_train_calls(w, m, x, t, before_backward)}
    return calls[variant]


def worker_rss(w: Workload, variant: str, threads: int, calls: int) -> dict:
    torch, m, x, t = pytorch_setup(w, threads)
    fn = pytorch_call(w, variant, m, x, t)
    del t  # a training process keeps the model and x, not the file's tensors
    setup_rss, setup_peak = status_kib("VmRSS"), status_kib("VmHWM")
    loss = None
    for _ in range(calls):
        loss = fn().item()
    return {"setup_rss_kib": setup_rss, "setup_peak_kib": setup_peak,
            "peak_rss_kib": status_kib("VmHWM"), "anon_kib": status_kib("RssAnon"),
            "file_kib": status_kib("RssFile"), "loss": loss,
            "version": torch.__version__.split("+")[0]}


def worker_saved(w: Workload, variant: str, threads: int) -> dict:
    """The storages autograd saves in one training call, after a warm-up call."""
    torch, m, x, t = pytorch_setup(w, threads)
    names: dict[int, list[str]] = {}

    def name_storages(loss):
        # Walk the graph: each node's `_saved_*` attributes, by storage.
        seen, todo = set(), [loss.grad_fn]
        while todo:
            node = todo.pop()
            if node is None or node in seen:
                continue
            seen.add(node)
            for attr in dir(node):
                if not attr.startswith("_saved_"):
                    continue
                value = getattr(node, attr)
                tensors = value if isinstance(value, (list, tuple)) else [value]
                for i, v in enumerate(tensors):
                    if isinstance(v, torch.Tensor):
                        label = f"{type(node).__name__}.{attr[len('_saved_'):]}"
                        label += f"[{i}]" if len(tensors) > 1 else ""
                        shape = f"{list(v.shape)} {str(v.dtype).removeprefix('torch.')}"
                        names.setdefault(v.untyped_storage().data_ptr(), []).append((label, shape))
            todo.extend(next_fn for next_fn, _ in node.next_functions)

    fn = pytorch_call(w, variant, m, x, t, before_backward=name_storages)
    fn()  # warm-up: oneDNN primitives and caches, as in the timed runs
    names.clear()
    saved: dict[int, int] = {}  # storage pointer -> bytes

    def pack(tensor):
        storage = tensor.untyped_storage()
        saved[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        loss = fn().item()
    params = {p.untyped_storage().data_ptr() for p in m.parameters()}
    caller = params | {x.untyped_storage().data_ptr()}
    referenced = [what for what, ptrs in (("the parameters", params), ("x", {x.untyped_storage().data_ptr()}))
                  if ptrs & saved.keys()]
    # Storages saved the same way (the same nodes and attributes: the native
    # LSTM's per-step values, say) are one row, with their count.
    groups: dict[tuple, dict] = {}
    for ptr, nbytes in saved.items():
        named = names.get(ptr, [("(not named by the graph walk)", "")])
        key = (ptr in caller, "; ".join(sorted({label for label, _ in named})))
        row = groups.setdefault(key, {"bytes": 0, "storages": 0, "referenced": key[0],
                                      "what": key[1], "shape": named[0][1]})
        row["bytes"] += nbytes
        row["storages"] += 1
    rows = sorted(groups.values(), key=lambda r: (r["referenced"], -r["bytes"]))
    return {"storages": rows, "referenced": " and ".join(referenced) or "nothing",
            "loss": loss, "version": torch.__version__.split("+")[0]}


# ----------------------------------------------------------------------------
# The driver


def run_json(cmd: list[str], env=None) -> dict:
    out = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, check=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def pytorch_variants(w: Workload) -> list[str]:
    return ["padded", "packed"] if w.varlen else [""]


def pytorch_worker(args, w: Workload, variant: str, threads: int, extra: list[str]) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--workloads", w.name,
           "--variant", variant, "--threads", str(threads)] + extra
    return run_json(cmd, env=worker_env("pytorch", threads))


def unroll_run(args, w: Workload, mode: str, threads: int, calls: int) -> dict:
    return run_json([args.unroll, "--workload", w.name, "--mode", mode,
                     "--threads", str(threads), "--calls", str(calls)])


def mib(kib: int) -> str:
    return f"{kib / 1024:.1f}"


def main() -> int:
    default_unroll = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(REPO_ROOT, "target")),
                                  "release", "memory_unroll")
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--workloads", default="W5,W5v")
    ap.add_argument("--calls", type=int, default=20, help="N, the training calls of the last column")
    ap.add_argument("--threads", default="1", help="comma-separated thread counts")
    ap.add_argument("--unroll", default=default_unroll, help="rnn-bench's memory_unroll binary")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--variant", default="", help=argparse.SUPPRESS)
    ap.add_argument("--saved", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    wls = [WORKLOADS[n] for n in args.workloads.split(",")]
    threads_list = [int(s) for s in args.threads.split(",")]
    if args.worker:
        w, threads = wls[0], threads_list[0]
        out = worker_saved(w, args.variant, threads) if args.saved else \
            worker_rss(w, args.variant, threads, args.calls)
        print(json.dumps(out))
        return 0

    from safetensors.numpy import load_file

    saved_rows, detail_rows, rss_rows = [], [], []

    def rss_row(w: Workload, system: str, threads: int, runs: dict, heap: str) -> list:
        setup, last = runs[0], runs[args.calls]
        return ([w.name, system, threads] + [mib(runs[c]["peak_rss_kib"]) for c in (0, 1, args.calls)] +
                [mib(last["peak_rss_kib"] - setup["peak_rss_kib"]),
                 f"{mib(setup['anon_kib'])} → {mib(last['anon_kib'])}",
                 f"{mib(setup['file_kib'])} → {mib(last['file_kib'])}", heap])
    for w in wls:
        valid = sum(w.lengths())
        expected_loss = float(load_file(data_path(w.name, ".expected.safetensors"))["loss"][0])

        # A check that every process computed the same call, not of accuracy: the
        # float32 loss sums 204,800 squares (unroll's harness in order: 6e-5 off).
        def check_loss(system: str, loss) -> None:
            if loss is not None and abs(loss - expected_loss) > 1e-4 * abs(expected_loss):
                print(f"[memory] {w.name} {system}: loss {loss} is not the reference's "
                      f"{expected_loss}", file=sys.stderr)

        for threads in threads_list:
            # unroll's training code runs on one thread whatever the setting.
            for mode in UNROLL_MODES if threads == threads_list[0] else ():
                system = f"unroll {mode}"
                print(f"[memory] {w.name} {system} {threads}t", file=sys.stderr)
                unroll_run(args, w, mode, threads, 1)  # warm-up, not measured
                runs = {calls: unroll_run(args, w, mode, threads, calls) for calls in (0, 1, args.calls)}
                check_loss(system, runs[args.calls]["loss"])
                tape = runs[1]["tape_bytes"]
                saved_rows.append([w.name, system, f"{tape:,}", f"{tape / valid:,.0f}", f"{tape / valid:,.0f}",
                                   f"the tape (`W5{mode.capitalize()}Tape::bytes()`)"])
                rss_rows.append(rss_row(w, system, threads, runs,
                                        f"{runs[args.calls]['call_heap_peak_bytes'] / 2**20:.1f}"))
            for variant in pytorch_variants(w):
                label = f" {variant}" if variant else ""
                print(f"[memory] {w.name} pytorch{label} {threads}t", file=sys.stderr)
                pytorch_worker(args, w, variant, threads, ["--calls", "1"])  # warm-up, not measured
                runs = {calls: pytorch_worker(args, w, variant, threads, ["--calls", str(calls)])
                        for calls in (0, 1, args.calls)}
                system = f"PyTorch {runs[0]['version']}{label}"
                check_loss(system, runs[args.calls]["loss"])
                rss_rows.append(rss_row(w, system, threads, runs, "–"))
                if threads != threads_list[0]:
                    continue
                saved = pytorch_worker(args, w, variant, threads, ["--saved"])
                check_loss(system, saved["loss"])
                # Padded runs all T steps of every sequence; packed, the valid ones.
                computed = valid if variant == "packed" else w.batch * w.steps
                own = sum(r["bytes"] for r in saved["storages"] if not r["referenced"])
                ref = sum(r["bytes"] for r in saved["storages"] if r["referenced"])
                saved_rows.append([w.name, system, f"{own:,}", f"{own / valid:,.0f}", f"{own / computed:,.0f}",
                                   f"tensors saved by autograd, each storage once; {saved['referenced']} "
                                   f"({ref:,} B) referenced, not counted"])
                for r in saved["storages"]:
                    shape = r["shape"] + (", …" if r["storages"] > 1 else "")
                    detail_rows.append([w.name, system, f"{r['bytes']:,}", r["storages"],
                                        "referenced" if r["referenced"] else f"{r['bytes'] / valid:,.1f}",
                                        f"{r['what']} ({shape})"])

    def table(header: list[str], rows: list[list]) -> None:
        print("| " + " | ".join(header) + " |")
        print("| " + " | ".join("---" for _ in header) + " |")
        for r in rows:
            print("| " + " | ".join(str(c) for c in r) + " |")
        print()

    print("Kept for the backward by one training call (bytes):\n")
    table(["workload", "system", "bytes", "per valid (sequence, step)", "per computed (sequence, step)",
           "what"], saved_rows)
    print("PyTorch's saved storages, by the backward nodes that saved them:\n")
    table(["workload", "system", "bytes", "storages", "per valid (seq, step)", "saved as (shape)"],
          detail_rows)
    print(f"Peak resident memory (VmHWM, MiB) of a process that sets up and makes 0, 1 or "
          f"N = {args.calls} training calls (each its own process); resident at the end, anonymous "
          f"and file-backed, of the setup-only process → the {args.calls}-call one:\n")
    table(["workload", "system", "threads", "setup only", "1 call", f"{args.calls} calls",
           f"{args.calls} calls − setup only", "anonymous at the end", "file-backed at the end",
           "heap peak of the calls − setup (unroll's count)"], rss_rows)
    if len(threads_list) > 1:
        print("unroll's training code runs on one thread whatever the setting: measured at "
              f"{threads_list[0]} only.\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
