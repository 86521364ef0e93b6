#!/usr/bin/env python3
"""Time the Python peers (ONNX Runtime, PyTorch, TensorFlow, JAX) on W1-W5v.

Usage: peers.py [--systems onnxruntime,pytorch,tensorflow,jax] [--threads 1,2]
                [--workloads W1,...,W5v] [--reps 7]

Each (system, thread count) runs in its own subprocess (`--worker`), since
several frameworks fix their thread pools when they start. Every measurement
is one JSON line on stdout:

  {"workload", "system", "threads", "median_ms", "min_ms", "max_ms", "gflops",
   "reps", "inner", "cpu_util", "max_abs_diff", "note"?}

median/min/max are milliseconds per call (one batch, or one forward+backward
for W5/W5v) over `reps` repetitions after a warm-up; a repetition of a very
short call times `inner` back-to-back calls and divides. `cpu_util` is process
CPU time over wall time while timing (~1 for one busy thread): a check that the
thread setting took. `max_abs_diff` compares the peer's output with the numpy
reference of workloads.py (W5/W5v: the gradients of every parameter and of x,
each relative to the largest entry of its reference gradient, and the loss's
relative difference).

W5/W5v train loss = sum over valid (b, t) of sum_j y^2 / (sum(seq_len) * H)
(specs.Workload.loss_count), i.e. mean(y^2) for W5. W5v: PyTorch padded
(nn.LSTM over all T steps, loss masked) and packed (pack_padded_sequence),
JAX (masked lax.scan that carries the state), TensorFlow (Keras mask, loss
masked); each is one line.

A system that fails to import gives {"system": ..., "threads": ..., "error": ...}
and the run goes on.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from specs import REPO_ROOT, WORKLOADS, Workload, data_path  # noqa: E402

SYSTEMS = ["onnxruntime", "pytorch", "tensorflow", "jax"]
LOG_DIR = os.path.join(REPO_ROOT, "target", "bench-logs")
WORKER_TIMEOUT_S = 900
# A repetition should last at least this long, so that timer resolution and
# call overhead jitter do not dominate very short calls (W3).
MIN_REP_S = 0.05


def emit(obj: dict) -> None:
    print(json.dumps(obj), flush=True)


# ----------------------------------------------------------------------------
# Measurement


def measure(fn, reps: int) -> dict:
    """Warm up, then time `reps` repetitions of fn; times in ms per call."""
    fn()  # first call: compilation, allocation, caches
    t0 = time.perf_counter()
    fn()
    single = time.perf_counter() - t0
    inner = max(1, math.ceil(MIN_REP_S / max(single, 1e-9))) if single < MIN_REP_S else 1
    for _ in range(min(inner, 50)):  # a little more warm-up for short calls
        fn()
    times = []
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    wall0 = time.perf_counter()
    for _ in range(reps):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        times.append((time.perf_counter() - t0) / inner * 1e3)
    wall = time.perf_counter() - wall0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return {
        "median_ms": statistics.median(times),
        "min_ms": min(times),
        "max_ms": max(times),
        "reps": reps,
        "inner": inner,
        "cpu_util": round(cpu / wall, 2),
    }


def line(w: Workload, system: str, threads: int, stats: dict, diff: float | None, **extra) -> dict:
    out = {
        "workload": w.name,
        "system": system,
        "threads": threads,
        "median_ms": round(stats["median_ms"], 6),
        "min_ms": round(stats["min_ms"], 6),
        "max_ms": round(stats["max_ms"], 6),
        "gflops": round(w.useful_flops() / (stats["median_ms"] * 1e-3) / 1e9, 3),
        "reps": stats["reps"],
        "inner": stats["inner"],
        "cpu_util": stats["cpu_util"],
        # 1-minute load average of the machine at the end of the measurement:
        # other processes on a 2-core machine distort 2-thread figures most.
        "loadavg": round(os.getloadavg()[0], 2),
    }
    if diff is not None:
        out["max_abs_diff"] = float(f"{diff:.3g}")
    out.update(extra)
    return out


def load(w: Workload):
    from safetensors.numpy import load_file

    return load_file(data_path(w.name)), load_file(data_path(w.name, ".expected.safetensors"))


def fwd_diff(w: Workload, exp: dict, y, h_n=None, valid_only: bool = False) -> float:
    """Max abs diff of y (and h_n) to the reference.

    valid_only: for runs that ignore lengths (padded), compare y only inside
    each sequence's length and h_n only for full-length sequences.
    """
    import numpy as np

    y = np.asarray(y, dtype=np.float64)
    lens = np.asarray(w.lengths())
    if valid_only:
        mask = np.arange(w.steps)[None, :] < lens[:, None]
        d = float(np.abs((y - exp["y"])[mask]).max())
    else:
        d = float(np.abs(y - exp["y"]).max())
    if h_n is not None:
        full = lens == w.steps if valid_only else np.ones_like(lens, dtype=bool)
        if full.any():
            d = max(d, float(np.abs((np.asarray(h_n) - exp["h_n"])[:, full]).max()))
    return d


def grad_diff(exp: dict, loss, grads: dict) -> float:
    """Largest gradient difference relative to the largest gradient entry of
    the same tensor, and the relative loss difference (W5, W5v).

    grads maps PyTorch parameter names and "x" to the peer's gradients; every
    gradient of the reference must be there.
    """
    import numpy as np

    missing = sorted(k[len("grad."):] for k in exp if k.startswith("grad.") and k[len("grad."):] not in grads)
    if missing:
        raise KeyError(f"no gradient for {', '.join(missing)}")
    d = abs(float(loss) - float(exp["loss"][0])) / abs(float(exp["loss"][0]))
    for k, g in grads.items():
        e = exp["grad." + k]
        d = max(d, float(np.abs(np.asarray(g) - e).max() / np.abs(e).max()))
    return d


# ----------------------------------------------------------------------------
# ONNX Runtime


def bench_onnxruntime(threads: int):
    import onnxruntime as ort

    name = f"onnxruntime {ort.__version__}"

    def run(w: Workload, reps: int):
        if w.train:
            return  # inference runtime: no W5, W5v
        t, exp = load(w)
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        sess = ort.InferenceSession(data_path(w.name, ".onnx"), so,
                                    providers=["CPUExecutionProvider"])
        feeds = {"x": t["x"]}
        if w.varlen:
            feeds["seq_len"] = t["seq_len"]

        def fn():
            return sess.run(None, feeds)

        y, h_n = fn()
        yield line(w, name, threads, measure(fn, reps), fwd_diff(w, exp, y, h_n),
                   **({"note": "sequence_lens"} if w.varlen else {}))
        # unroll's reduced-precision weights are measured against ONNX
        # Runtime's own: its dynamic quantization of the same model (LSTM
        # becomes DynamicQuantizeLSTM, int8 weights with per-tensor scales).
        if w.name in ("W1", "W2"):
            from onnxruntime.quantization import QuantType, quantize_dynamic

            quantized = str(data_path(w.name, ".int8.onnx"))
            if not os.path.exists(quantized):
                quantize_dynamic(str(data_path(w.name, ".onnx")), quantized, weight_type=QuantType.QInt8)
            sess_int8 = ort.InferenceSession(quantized, so, providers=["CPUExecutionProvider"])

            def fn_int8():
                return sess_int8.run(None, feeds)

            y, h_n = fn_int8()
            yield line(w, f"{name} int8", threads, measure(fn_int8, reps), fwd_diff(w, exp, y, h_n),
                       note="quantize_dynamic(weight_type=QInt8)" + ("; sequence_lens" if w.varlen else ""))

    return run


# ----------------------------------------------------------------------------
# PyTorch


def pytorch_module(w: Workload, t: dict):
    """The workload's torch.nn.LSTM/GRU (batch-first) with the weights of `t`."""
    import torch

    cls = torch.nn.LSTM if w.cell == "lstm" else torch.nn.GRU
    m = cls(w.input_size, w.hidden, num_layers=w.layers, bidirectional=w.bidirectional,
            batch_first=True)
    m.load_state_dict({k: torch.from_numpy(t[k].copy()) for k in w.param_names()})
    return m


def pytorch_train_calls(w: Workload, m, x, t: dict, before_backward=None) -> list:
    """W5/W5v: the training call of each variant, as (label, fn, note).

    fn() clears the gradients, runs forward and the loss, calls backward and
    returns the loss: sum over valid steps of y^2 / loss_count() (mean(y^2)
    for W5); gradients of every parameter and of `x` (which must require
    them), as unroll's backward returns them. W5 has one variant (label "");
    W5v two, "padded" and "packed". memory.py uses them too, with
    `before_backward(loss)` called between the loss and backward.
    """
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    params = list(m.parameters())
    count = float(w.loss_count())

    def train(forward):
        def fn():
            for p in params:
                p.grad = None
            x.grad = None
            y = forward()
            loss = (y * y).sum() / count
            if before_backward is not None:
                before_backward(loss)
            loss.backward()
            return loss

        return fn

    if not w.varlen:
        return [("", train(lambda: m(x)[0]), "autograd")]

    # W5v, padded: nn.LSTM runs all T steps on every sequence and the loss is
    # masked to the valid steps. The state past a length is not the
    # reference's, but nothing reads it: y at a valid step depends on earlier
    # steps only, so the gradients are the reference's.
    lens = torch.from_numpy(t["seq_len"].copy())
    mask = (torch.arange(w.steps)[None, :] < lens[:, None]).to(x.dtype)[:, :, None]

    def padded():
        return m(x)[0] * mask

    # Packed: pack_padded_sequence around the call (in the time); the padded
    # positions of the unpacked y are zeros.
    def packed():
        p = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
        out, _ = m(p)
        return pad_packed_sequence(out, batch_first=True, total_length=w.steps)[0]

    return [
        ("padded", train(padded), "autograd, all T steps, loss masked to valid steps"),
        ("packed", train(packed), "autograd, pack_padded_sequence(enforce_sorted=False)"),
    ]


def bench_pytorch(threads: int):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)
    ver = torch.__version__.split("+")[0]

    def h_of(state, w):
        return state[0] if w.cell == "lstm" else state

    def run(w: Workload, reps: int):
        t, exp = load(w)
        m = pytorch_module(w, t)
        x = torch.from_numpy(t["x"].copy())
        if w.train:
            x.requires_grad_(True)

            def grads_of(loss):
                grads = {k: m.get_parameter(k).grad.numpy() for k in w.param_names()}
                grads["x"] = x.grad.numpy()
                return grad_diff(exp, loss.item(), grads)

            for label, fn, note in pytorch_train_calls(w, m, x, t):
                diff = grads_of(fn())
                system = f"pytorch {ver} {label}" if label else f"pytorch {ver}"
                yield line(w, system, threads, measure(fn, reps), diff,
                           note=f"{note}; diff relative to max |grad|")
            return

        m.eval()
        if not w.varlen:
            def fn():
                with torch.inference_mode():
                    return m(x)

            y, st = fn()
            yield line(w, f"pytorch {ver}", threads, measure(fn, reps), fwd_diff(w, exp, y, h_of(st, w)))
            return

        # W2: padded (all T steps on every sequence, no masking) and packed
        # (pack_padded_sequence around the call, counted in the time).
        lens = torch.from_numpy(t["seq_len"].copy())

        def padded():
            with torch.inference_mode():
                return m(x)

        def packed():
            with torch.inference_mode():
                p = pack_padded_sequence(x, lens, batch_first=True, enforce_sorted=False)
                out, st = m(p)
                y, _ = pad_packed_sequence(out, batch_first=True, total_length=w.steps)
                return y, st

        variants = {}
        y, st = padded()
        variants["padded"] = (measure(padded, reps), fwd_diff(w, exp, y, h_of(st, w), valid_only=True))
        y, st = packed()
        variants["packed"] = (measure(packed, reps), fwd_diff(w, exp, y, h_of(st, w)))
        best = min(variants, key=lambda k: variants[k][0]["median_ms"])
        other = "packed" if best == "padded" else "padded"
        note = f"better of padded/packed; {other}: median {variants[other][0]['median_ms']:.3f} ms"
        if best == "padded":
            note += "; padded ignores lengths (diff checked on valid steps only)"
        yield line(w, f"pytorch {ver} {best}", threads, variants[best][0], variants[best][1], note=note)

    return run


# ----------------------------------------------------------------------------
# TensorFlow (Keras layers inside tf.function)


def bench_tensorflow(threads: int):
    import numpy as np
    import tensorflow as tf

    # Must happen before TensorFlow runs any op.
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    keras = tf.keras
    name = f"tensorflow {tf.__version__} keras"

    def perm(w, a, axis=0):
        """PyTorch gate blocks -> Keras: LSTM i,f,g,o is Keras i,f,c,o already;
        GRU r,z,n -> Keras z,r,h."""
        if w.cell == "lstm":
            return a
        r, z, n = np.split(a, 3, axis=axis)
        return np.concatenate([z, r, n], axis=axis)

    def keras_weights(w, t, l, sfx):
        wi, wh = t[f"weight_ih_l{l}{sfx}"], t[f"weight_hh_l{l}{sfx}"]
        bi, bh = t[f"bias_ih_l{l}{sfx}"], t[f"bias_hh_l{l}{sfx}"]
        if w.cell == "lstm":
            return [wi.T, wh.T, bi + bh]
        return [perm(w, wi).T, perm(w, wh).T, np.stack([perm(w, bi), perm(w, bh)])]

    def rnn_layer(w):
        if w.cell == "lstm":
            return keras.layers.LSTM(w.hidden, return_sequences=True, return_state=True)
        return keras.layers.GRU(w.hidden, return_sequences=True, return_state=True,
                                reset_after=True)

    def run(w: Workload, reps: int):
        t, exp = load(w)
        x = tf.constant(t["x"])
        layers = []
        inp_dim = w.input_size
        for l in range(w.layers):
            lay = keras.layers.Bidirectional(rnn_layer(w)) if w.bidirectional else rnn_layer(w)
            lay.build((w.batch, w.steps, inp_dim))
            ws = []
            for sfx in ["", "_reverse"][: w.directions]:
                ws += keras_weights(w, t, l, sfx)
            lay.set_weights(ws)
            layers.append(lay)
            inp_dim = w.hidden * w.directions
        mask = tf.sequence_mask(t["seq_len"], w.steps) if w.varlen else None

        def forward(x):
            out = x
            hs = []
            for lay in layers:
                res = lay(out, mask=mask)
                out = res[0]
                # LSTM: [y, h, c]; GRU: [y, h]; Bidirectional: fwd states then bwd.
                per_dir = 3 if w.cell == "lstm" else 2
                hs += [res[1]] if not w.bidirectional else [res[1], res[per_dir]]
            return out, tf.stack(hs)

        if w.train:
            lay = layers[0]
            count = float(w.loss_count())
            # W5v: Keras's mask carries the state through padded steps, but its
            # outputs there repeat the last valid one: the loss is masked.
            valid = tf.cast(mask, x.dtype)[:, :, None] if w.varlen else None

            @tf.function
            def step(x):
                with tf.GradientTape() as tape:
                    tape.watch(x)
                    y, _ = forward(x)
                    sq = y * y if valid is None else y * y * valid
                    loss = tf.reduce_sum(sq) / count
                return loss, tape.gradient(loss, lay.trainable_variables + [x])

            def fn():
                loss, g = step(x)
                return loss.numpy(), [v.numpy() for v in g]

            loss, g = fn()
            # Keras [kernel, recurrent_kernel, bias] -> PyTorch names; the single
            # Keras bias gets the gradient that each PyTorch bias has.
            grads = {"weight_ih_l0": g[0].T, "weight_hh_l0": g[1].T, "bias_ih_l0": g[2], "bias_hh_l0": g[2],
                     "x": g[3]}
            note = "GradientTape in tf.function"
            if w.varlen:
                note += "; mask=tf.sequence_mask(seq_len), loss masked to valid steps"
            yield line(w, name, threads, measure(fn, reps), grad_diff(exp, loss, grads),
                       note=note + "; diff relative to max |grad|")
            return

        run = tf.function(forward)

        def fn():
            y, h = run(x)
            return y.numpy(), h.numpy()

        y, h = fn()
        extra = {}
        if w.varlen:
            # Keras repeats the last output past a length instead of zeros: the
            # outputs are compared on valid steps, the final states in full.
            extra["note"] = "mask=tf.sequence_mask(seq_len); outputs past a length repeat the last one"
            diff = max(fwd_diff(w, exp, y, valid_only=True), float(np.abs(h - exp["h_n"]).max()))
        else:
            diff = fwd_diff(w, exp, y, h)
        yield line(w, name, threads, measure(fn, reps), diff, **extra)

    return run


# ----------------------------------------------------------------------------
# JAX (lax.scan over a hand-written cell; the input projection is hoisted
# out of the loop as one matmul, as every serious implementation does)


def bench_jax(threads: int):
    # XLA's flags (set in worker_env) stop Eigen's multi-threading, but XLA
    # still runs independent operations concurrently on a pool sized by the
    # visible CPUs (about 1.6 cores busy at "1 thread"). Restrict the process
    # to `threads` CPUs before XLA starts, so that the figure means what it says.
    cpus = sorted(os.sched_getaffinity(0))
    pinned = threads < len(cpus)
    if pinned:
        os.sched_setaffinity(0, cpus[:threads])
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax import lax

    jax.config.update("jax_platforms", "cpu")
    ver = jax.__version__
    pin_note = f"; pinned to {threads} CPU(s)" if pinned else ""

    def direction(w, p, x, lens, reverse, unroll):
        """x [B, T, I] -> y [B, T, H], final h. Masked only when lengths vary."""
        bsz, steps, _ = x.shape
        w_ih, w_hh, b_ih, b_hh = p
        if reverse:
            # Walk each sequence's valid part backwards: position lens-1-t.
            t_idx = jnp.arange(steps)[None, :]
            idx = jnp.where(t_idx < lens[:, None], lens[:, None] - 1 - t_idx, t_idx)
            x = jnp.take_along_axis(x, idx[:, :, None], axis=1)
        xp = jnp.einsum("bti,gi->tbg", x, w_ih) + b_ih  # hoisted: [T, B, G*H]
        w_hhT = w_hh.T
        hid = w_hh.shape[1]
        mask = (jnp.arange(steps)[:, None] < lens[None, :])[:, :, None]  # [T, B, 1]

        def lstm_step(carry, inp):
            h, c = carry
            xt, m = inp
            i, f, g, o = jnp.split(xt + h @ w_hhT + b_hh, 4, axis=-1)
            c2 = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
            h2 = jax.nn.sigmoid(o) * jnp.tanh(c2)
            if w.varlen:
                return (jnp.where(m, h2, h), jnp.where(m, c2, c)), jnp.where(m, h2, 0.0)
            return (h2, c2), h2

        def gru_step(carry, inp):
            (h,) = carry
            xt, m = inp
            xr, xz, xn = jnp.split(xt, 3, axis=-1)
            hr, hz, hn = jnp.split(h @ w_hhT + b_hh, 3, axis=-1)
            r = jax.nn.sigmoid(xr + hr)
            z = jax.nn.sigmoid(xz + hz)
            h2 = (1.0 - z) * jnp.tanh(xn + r * hn) + z * h
            if w.varlen:
                return (jnp.where(m, h2, h),), jnp.where(m, h2, 0.0)
            return (h2,), h2

        zeros = jnp.zeros((bsz, hid), x.dtype)
        init = (zeros, zeros) if w.cell == "lstm" else (zeros,)
        step = lstm_step if w.cell == "lstm" else gru_step
        carry, ys = lax.scan(step, init, (xp, mask), unroll=unroll)
        y = jnp.transpose(ys, (1, 0, 2))
        if reverse:
            y = jnp.take_along_axis(y, idx[:, :, None], axis=1)
            if w.varlen:
                y = jnp.where(jnp.transpose(mask, (1, 0, 2)), y, 0.0)
        return y, carry[0]

    def network(w, params, x, lens, unroll):
        hs = []
        for l in range(w.layers):
            outs = []
            for d in range(w.directions):
                y, h = direction(w, params[l][d], x, lens, d == 1, unroll)
                outs.append(y)
                hs.append(h)
            x = jnp.concatenate(outs, axis=-1) if len(outs) > 1 else outs[0]
        return x, jnp.stack(hs)

    def run(w: Workload, reps: int):
        t, exp = load(w)
        params = [
            [tuple(jnp.asarray(t[f"{k}_l{l}{sfx}"]) for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
             for sfx in ["", "_reverse"][: w.directions]]
            for l in range(w.layers)
        ]
        x = jnp.asarray(t["x"])
        lens = jnp.asarray(t["seq_len"].astype(np.int32))
        variants = [("lax.scan", 1)] + ([("unrolled", True)] if w.name == "W3" else [])
        for label, unroll in variants:
            if w.train:
                count = float(w.loss_count())

                def loss_fn(params, x, unroll=unroll):
                    # W5v: the scan's mask carries the state through padded
                    # steps and zeroes their outputs, so the sum is over valid steps.
                    y, _ = network(w, params, x, lens, unroll)
                    return jnp.sum(y * y) / count

                vg = jax.jit(jax.value_and_grad(loss_fn, argnums=(0, 1)))

                def fn():
                    return jax.block_until_ready(vg(params, x))

                loss, (g_params, g_x) = fn()
                names = ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
                grads = dict(zip(names, (np.asarray(a) for a in g_params[0][0])))
                grads["x"] = np.asarray(g_x)
                note = "jit(value_and_grad)" + ("; masked scan over all T steps" if w.varlen else "")
                yield line(w, f"jax {ver} {label}", threads, measure(fn, reps),
                           grad_diff(exp, float(loss), grads),
                           note=note + "; diff relative to max |grad|" + pin_note)
                continue
            run = jax.jit(lambda params, x, unroll=unroll: network(w, params, x, lens, unroll))

            def fn():
                return jax.block_until_ready(run(params, x))

            y, h = fn()
            note = ("masked scan over all T steps" if w.varlen else "") + pin_note
            yield line(w, f"jax {ver} {label}", threads, measure(fn, reps), fwd_diff(w, exp, y, h),
                       **({"note": note.lstrip("; ")} if note else {}))

    return run


BENCHES = {
    "onnxruntime": bench_onnxruntime,
    "pytorch": bench_pytorch,
    "tensorflow": bench_tensorflow,
    "jax": bench_jax,
}


# ----------------------------------------------------------------------------
# Orchestration


def worker_env(system: str, threads: int) -> dict:
    """Environment for one (system, threads) worker: thread caps for the
    OpenMP/BLAS pools every framework may use, and the framework's own knobs
    that are read only at start-up."""
    env = dict(os.environ)
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        env[var] = str(threads)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if system == "jax":
        # Eigen's own multi-threading off at 1 thread. (The often-quoted
        # "intra_op_parallelism_threads=N" is not an XLA flag: XLA rejects
        # "--intra_op_parallelism_threads" as unknown and silently skips the
        # dash-less token after another flag.) bench_jax also pins the process
        # to `threads` CPUs, which is what actually bounds it.
        eigen = "false" if threads == 1 else "true"
        env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + f" --xla_cpu_multi_thread_eigen={eigen}").strip()
    return env


def run_worker(system: str, threads: int, args, script: str = os.path.abspath(__file__)) -> None:
    """Run one worker subprocess of `script` (this one, or lista.py for W6);
    pass its JSON lines through."""
    os.makedirs(LOG_DIR, exist_ok=True)
    stem = os.path.splitext(os.path.basename(script))[0]
    log_path = os.path.join(LOG_DIR, f"{stem}-{system}-{threads}t.log")
    cmd = [sys.executable, script, "--worker", system, "--threads", str(threads),
           "--reps", str(args.reps)]
    if hasattr(args, "workloads"):
        cmd += ["--workloads", args.workloads]
    t0 = time.time()
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(cmd, env=worker_env(system, threads), stdout=subprocess.PIPE,
                                  stderr=log, text=True, timeout=WORKER_TIMEOUT_S)
            out, rc = proc.stdout, proc.returncode
        except subprocess.TimeoutExpired as e:
            out = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
            rc = f"timeout after {WORKER_TIMEOUT_S}s"
    n = 0
    for ln in out.splitlines():
        try:
            obj = json.loads(ln)
        except json.JSONDecodeError:
            continue
        emit(obj)
        n += 1
    if rc != 0:
        with open(log_path) as f:
            tail = f.read().strip().splitlines()[-3:]
        emit({"system": system, "threads": threads,
              "error": f"worker exit {rc}: {' | '.join(tail)} (log: {log_path})"})
    print(f"[{stem}] {system} {threads}t: {n} lines in {time.time() - t0:.0f}s", file=sys.stderr)


def worker(system: str, threads: int, wls: list[Workload], reps: int) -> int:
    """Set the system up once (imports, thread settings), then run each
    workload; a failure is reported for that workload and the rest go on."""
    try:
        run = BENCHES[system](threads)
    except ImportError as e:
        emit({"system": system, "threads": threads, "error": f"import failed: {e}"})
        return 0
    for w in wls:
        try:
            for obj in run(w, reps):
                emit(obj)
        except Exception as e:  # noqa: BLE001 - any failure becomes an error line
            emit({"workload": w.name, "system": system, "threads": threads,
                  "error": f"{type(e).__name__}: {e}"})
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--systems", default=",".join(SYSTEMS))
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--workloads", default=",".join(WORKLOADS))
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--worker", choices=SYSTEMS, help=argparse.SUPPRESS)
    args = ap.parse_args()
    wls = [WORKLOADS[n] for n in args.workloads.split(",")]
    if args.worker:
        return worker(args.worker, int(args.threads), wls, max(5, args.reps))
    try:  # which BLAS kernel numpy will use (see the env notes on OPENBLAS_CORETYPE)
        import numpy  # noqa: F401 - loads the BLAS that threadpoolctl inspects
        import threadpoolctl

        for info in threadpoolctl.threadpool_info():
            if info.get("internal_api") == "openblas":
                print(f"[peers] numpy openblas {info.get('version')} architecture "
                      f"{info.get('architecture')}", file=sys.stderr)
    except ImportError:
        pass
    for system in args.systems.split(","):
        for threads in (int(s) for s in args.threads.split(",")):
            run_worker(system, threads, args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
