#!/usr/bin/env python3
"""W6 (LISTA-CP, shared/WORKLOADS.md): its data and reference, and the peers.

Usage: lista.py --make-data
       lista.py [--systems pytorch,jax] [--threads 1,2] [--reps 7]

--make-data writes target/bench-data/W6.safetensors (`A` 250x500 with
N(0, 1/250) entries and unit-norm columns, `W` [16, 250, 500] and `theta`
[16, 1] as ISTA's step (W_k = A/L, theta_k = lambda/L, so the untrained network
is ISTA), `y` = A x* + noise at 40 dB for 64 Bernoulli(0.1)-Gaussian `x`) and
W6.expected.safetensors: the last iterate `x_K`, the loss
mean((x_K - x*)^2) over the batch and the coordinates, and its gradients
`grad.A`, `grad.W`, `grad.theta`, computed in float64 by numpy with the
backward pass written out below (independent of every system timed).

The peers are a PyTorch module and a JAX function of the same algebra
(x <- soft(x + W_k^T (y - A x), theta_k), x_0 = 0), timed as peers.py times
the other workloads, one subprocess per (system, threads): inference ("W6",
one batch) and forward + backward of the loss ("W6 train"). One JSON line per
measurement, in peers.py's schema.
"""

from __future__ import annotations

import argparse
import os
import sys

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from peers import emit, measure, run_worker  # noqa: E402
from specs import DATA_DIR  # noqa: E402

BATCH, STEPS, M, N = 64, 16, 250, 500
SEED = 1006
LAMBDA = 0.1
SYSTEMS = ["pytorch", "jax"]
# Two matrix-vector products of m*n per sample and step; training counts three forwards.
FLOPS = BATCH * STEPS * 2 * 2 * M * N


def make_data() -> None:
    import numpy as np
    from safetensors.numpy import save_file

    rng = np.random.default_rng(SEED)
    a = rng.normal(0.0, 1.0 / np.sqrt(M), (M, N))
    a /= np.linalg.norm(a, axis=0, keepdims=True)
    lipschitz = np.linalg.norm(a, 2) ** 2
    x = rng.normal(size=(BATCH, N)) * (rng.random((BATCH, N)) < 0.1)
    clean = x @ a.T
    noise = rng.normal(size=clean.shape)
    noise *= np.linalg.norm(clean) / np.linalg.norm(noise) * 10 ** (-40 / 20)
    y = clean + noise
    f32 = {
        "A": a.astype(np.float32),
        "W": np.repeat((a / lipschitz)[None], STEPS, axis=0).astype(np.float32),
        "theta": np.full((STEPS, 1), LAMBDA / lipschitz, np.float32),
        "y": y.astype(np.float32),
        "x": x.astype(np.float32),
    }
    os.makedirs(DATA_DIR, exist_ok=True)
    save_file(f32, os.path.join(DATA_DIR, "W6.safetensors"))
    save_file(reference({k: v.astype(np.float64) for k, v in f32.items()}),
              os.path.join(DATA_DIR, "W6.expected.safetensors"))
    print(f"[lista] wrote {DATA_DIR}/W6.safetensors and W6.expected.safetensors", file=sys.stderr)


def reference(t: dict) -> dict:
    """x_K, the loss and its gradients in float64, rows as samples:
    r = y - x A^T, u = x + r W_k, x' = sign(u) max(|u| - theta_k, 0)."""
    import numpy as np

    a, w, theta, y, target = t["A"], t["W"], t["theta"], t["y"], t["x"]
    xs, rs, us = [np.zeros((BATCH, N))], [], []
    for k in range(STEPS):
        r = y - xs[-1] @ a.T
        u = xs[-1] + r @ w[k]
        rs.append(r)
        us.append(u)
        xs.append(np.sign(u) * np.maximum(np.abs(u) - theta[k, 0], 0.0))
    diff = xs[-1] - target
    loss = np.mean(diff**2)
    g = 2.0 * diff / diff.size
    grad_a, grad_w, grad_theta = np.zeros_like(a), np.zeros_like(w), np.zeros_like(theta)
    for k in reversed(range(STEPS)):
        du = g * (np.abs(us[k]) > theta[k, 0])
        grad_theta[k, 0] = -np.sum(np.sign(us[k]) * du)
        grad_w[k] = rs[k].T @ du
        dr = du @ w[k].T
        grad_a -= dr.T @ xs[k]
        g = du - dr @ a
    out = {"x_K": xs[-1], "loss": np.array([loss]), "grad.A": grad_a, "grad.W": grad_w,
           "grad.theta": grad_theta}
    return {k: v.astype(np.float32) for k, v in out.items()}


def load():
    from safetensors.numpy import load_file

    return (load_file(os.path.join(DATA_DIR, "W6.safetensors")),
            load_file(os.path.join(DATA_DIR, "W6.expected.safetensors")))


def rel_diff(found, expected) -> float:
    import numpy as np

    return float(np.max(np.abs(found - expected)) / np.max(np.abs(expected)))


def line(name: str, system: str, threads: int, stats: dict, diff: float, note: str) -> dict:
    flops = FLOPS * (3 if name == "W6 train" else 1)
    return {"workload": name, "system": system, "threads": threads,
            "median_ms": round(stats["median_ms"], 6), "min_ms": round(stats["min_ms"], 6),
            "max_ms": round(stats["max_ms"], 6),
            "gflops": round(flops / (stats["median_ms"] * 1e-3) / 1e9, 3),
            "reps": stats["reps"], "inner": stats["inner"], "cpu_util": stats["cpu_util"],
            "loadavg": round(os.getloadavg()[0], 2), "max_abs_diff": float(f"{diff:.3g}"),
            "note": note}


def bench_pytorch(threads: int, reps: int):
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    t, exp = load()

    class ListaCp(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.A = torch.nn.Parameter(torch.from_numpy(t["A"]))
            self.W = torch.nn.Parameter(torch.from_numpy(t["W"]))
            self.theta = torch.nn.Parameter(torch.from_numpy(t["theta"]))

        def forward(self, y):
            x = torch.zeros(y.shape[0], N)
            for k in range(STEPS):
                u = x + (y - x @ self.A.T) @ self.W[k]
                x = torch.sign(u) * torch.relu(u.abs() - self.theta[k])
            return x

    model = ListaCp()
    y, target = torch.from_numpy(t["y"]), torch.from_numpy(t["x"])

    def infer():
        with torch.inference_mode():
            return model(y)

    def train():
        model.zero_grad(set_to_none=True)
        loss = torch.mean((model(y) - target) ** 2)
        loss.backward()
        return loss

    note = f"torch {torch.__version__.split('+')[0]}, eager nn.Module"
    yield line("W6", "pytorch", threads, measure(infer, reps), rel_diff(infer().numpy(), exp["x_K"]), note)
    train()
    diff = max(rel_diff(getattr(model, name).grad.numpy(), exp[f"grad.{name}"])
               for name in ("A", "W", "theta"))
    yield line("W6 train", "pytorch", threads, measure(train, reps), diff, note)


def bench_jax(threads: int, reps: int):
    cpus = sorted(os.sched_getaffinity(0))
    pinned = threads < len(cpus)
    if pinned:  # as peers.bench_jax: XLA's pool otherwise uses every visible CPU
        os.sched_setaffinity(0, cpus[:threads])
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    jax.config.update("jax_platforms", "cpu")
    t, exp = load()
    params = {name: jnp.asarray(t[name]) for name in ("A", "W", "theta")}
    y, target = jnp.asarray(t["y"]), jnp.asarray(t["x"])

    def forward(p, y):
        def step(x, wk_thetak):
            w_k, theta_k = wk_thetak
            u = x + (y - x @ p["A"].T) @ w_k
            return jnp.sign(u) * jnp.maximum(jnp.abs(u) - theta_k, 0.0), None

        x, _ = lax.scan(step, jnp.zeros((y.shape[0], N), jnp.float32), (p["W"], p["theta"]))
        return x

    infer = jax.jit(forward)
    grad = jax.jit(jax.value_and_grad(lambda p, y, x: jnp.mean((forward(p, y) - x) ** 2)))
    note = f"jax {jax.__version__}, jit of lax.scan" + (f"; pinned to {threads} CPU(s)" if pinned else "")
    yield line("W6", "jax", threads, measure(lambda: infer(params, y).block_until_ready(), reps),
               rel_diff(np.asarray(infer(params, y)), exp["x_K"]), note)
    _, grads = grad(params, y, target)
    diff = max(rel_diff(np.asarray(grads[name]), exp[f"grad.{name}"]) for name in grads)
    yield line("W6 train", "jax", threads,
               measure(lambda: jax.block_until_ready(grad(params, y, target)), reps), diff, note)


BENCHES = {"pytorch": bench_pytorch, "jax": bench_jax}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--make-data", action="store_true")
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_data:
        make_data()
        return 0
    if args.worker:
        try:
            for obj in BENCHES[args.worker](int(args.threads), max(5, args.reps)):
                emit(obj)
        except ImportError as e:
            emit({"system": args.worker, "threads": int(args.threads), "error": f"import failed: {e}"})
        return 0
    for system in args.systems.split(","):
        for threads in (int(s) for s in args.threads.split(",")):
            run_worker(system, threads, args, script=os.path.abspath(__file__))
    return 0


if __name__ == "__main__":
    sys.exit(main())
