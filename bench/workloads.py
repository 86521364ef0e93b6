#!/usr/bin/env python3
"""Deterministic data, reference outputs and ONNX models for workloads W1-W5v.

For each workload W this writes, under target/bench-data/:

  W.safetensors           weights under PyTorch state_dict names (uniform in
                          +-1/sqrt(H), as PyTorch initialises them), the input
                          `x` [B, T, I] float32 and `seq_len` [B] int64
  W.expected.safetensors  the numpy (float64) reference: `y` [B, T, D*H],
                          `h_n` [L*D, B, H] (and `c_n` for LSTMs); for the
                          training workloads W5 and W5v also `loss` [1],
                          `grad.<param>` for every parameter and `grad.x`
                          [B, T, I] (loss: the mean of y^2 over the valid
                          steps, see reference_train)
  W.onnx                  (W1-W4) the same network as ONNX LSTM/GRU nodes,
                          batch-major input `x` (+ `seq_len` for W2), outputs
                          `y` [B, T, D*H] and `h_n` [L*D, B, H]
  W2_padded.onnx          W2 without sequence_lens, for runtimes that cannot
                          take variable lengths (outputs past a length are
                          then not those of the reference)

With --check (run.sh always passes it) every ONNX model is run through ONNX
Runtime and compared with the numpy reference; a difference above 1e-4 is an
error, because a wrong export would make the whole comparison meaningless.
The training references (W5, W5v) are checked too: their loss against the
forward reference, their gradients against central finite differences.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

sys.dont_write_bytecode = True  # no __pycache__ next to the scripts
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from specs import DATA_DIR, WORKLOADS, Workload, data_path  # noqa: E402

TOLERANCE = 1e-4
# Float64 against float64 (central differences, step 1e-6): a correct
# gradient agrees to about 1e-8 relative.
TRAIN_TOLERANCE = 1e-6


# ----------------------------------------------------------------------------
# Data


def make_data(w: Workload) -> dict[str, np.ndarray]:
    """Weights (PyTorch names and layouts), inputs and lengths, from w.seed."""
    rng = np.random.default_rng(w.seed)
    k = 1.0 / np.sqrt(w.hidden)
    gh = w.gates * w.hidden
    tensors: dict[str, np.ndarray] = {}
    for name in w.param_names():
        layer = int(name.split("_l")[1].split("_")[0])
        if name.startswith("weight_ih"):
            shape = (gh, w.layer_input(layer))
        elif name.startswith("weight_hh"):
            shape = (gh, w.hidden)
        else:
            shape = (gh,)
        tensors[name] = rng.uniform(-k, k, size=shape).astype(np.float32)
    tensors["x"] = rng.standard_normal((w.batch, w.steps, w.input_size)).astype(np.float32)
    tensors["seq_len"] = np.asarray(w.lengths(), dtype=np.int64)
    return tensors


# ----------------------------------------------------------------------------
# numpy reference (float64), PyTorch semantics


def _sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def _run_direction(cell, x, lens, w_ih, w_hh, b_ih, b_hh, reverse):
    """One layer, one direction. x [B, T, I]; returns y [B, T, H], h, c.

    Steps t >= lens[b] give zero outputs and leave the state unchanged; the
    reverse direction walks each sequence's valid part backwards and writes
    its outputs back at their original positions.
    """
    bsz, steps, _ = x.shape
    hid = w_hh.shape[1]
    xp = x @ w_ih.T + b_ih  # input projection of every step at once [B, T, G*H]
    y = np.zeros((bsz, steps, hid))
    h = np.zeros((bsz, hid))
    c = np.zeros((bsz, hid))
    rows = np.arange(bsz)
    for t in range(int(lens.max(initial=0))):
        active = t < lens
        pos = np.where(active, (lens - 1 - t) if reverse else t, 0)
        xt = xp[rows, pos]
        hp = h @ w_hh.T + b_hh
        if cell == "lstm":
            g = xt + hp
            i, f, gg, o = np.split(g, 4, axis=1)
            c_new = _sigmoid(f) * c + _sigmoid(i) * np.tanh(gg)
            h_new = _sigmoid(o) * np.tanh(c_new)
            c = np.where(active[:, None], c_new, c)
        else:  # GRU, reset applied after the recurrent matmul (PyTorch)
            xr, xz, xn = np.split(xt, 3, axis=1)
            hr, hz, hn = np.split(hp, 3, axis=1)
            r = _sigmoid(xr + hr)
            z = _sigmoid(xz + hz)
            n = np.tanh(xn + r * hn)
            h_new = (1.0 - z) * n + z * h
        h = np.where(active[:, None], h_new, h)
        y[rows[active], pos[active]] = h_new[active]
    return y, h, c


def reference_forward(w: Workload, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """y [B, T, D*H], h_n [L*D, B, H], c_n (LSTM) in PyTorch's order."""
    inp = t["x"].astype(np.float64)
    lens = t["seq_len"]
    hs, cs = [], []
    for l in range(w.layers):
        outs = []
        for d, suffix in enumerate(["", "_reverse"][: w.directions]):
            p = {k: t[f"{k}_l{l}{suffix}"].astype(np.float64)
                 for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
            y, h, c = _run_direction(w.cell, inp, lens, p["weight_ih"], p["weight_hh"],
                                     p["bias_ih"], p["bias_hh"], reverse=d == 1)
            outs.append(y)
            hs.append(h)
            cs.append(c)
        inp = np.concatenate(outs, axis=2)
    out = {"y": inp, "h_n": np.stack(hs)}
    if w.cell == "lstm":
        out["c_n"] = np.stack(cs)
    return out


def reference_train(w: Workload, t: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The training loss and its gradients, by hand-written BPTT over the lengths.

    loss = (sum over valid (b, t) of sum_j y[b, t, j]^2) / (sum(seq_len) * H)
    (Workload.loss_count): the mean of y^2 over the valid steps; for W5, whose
    lengths are all full, that is mean(y^2). Returns `loss`, `grad.<param>`
    for every parameter and `grad.x` [B, T, I].

    As in the forward reference, a step t >= seq_len[b] leaves sequence b's
    state unchanged and outputs zero, so in the backward it passes the state
    adjoints through unchanged and contributes nothing to any gradient (its
    rows of `da` are zero, and so are those of `grad.x`).

    Only what W5 and W5v need: one layer, one direction, LSTM.
    """
    assert w.cell == "lstm" and w.layers == 1 and not w.bidirectional
    x = t["x"].astype(np.float64)
    lens = t["seq_len"]
    w_ih, w_hh = t["weight_ih_l0"].astype(np.float64), t["weight_hh_l0"].astype(np.float64)
    b = (t["bias_ih_l0"] + t["bias_hh_l0"]).astype(np.float64)
    bsz, steps, _ = x.shape
    hid = w_hh.shape[1]
    h = np.zeros((bsz, hid))
    c = np.zeros((bsz, hid))
    tape = []  # per step: h_prev, c_prev, i, f, g, o, tanh(c)
    ys = np.zeros((bsz, steps, hid))
    for s in range(steps):
        active = (s < lens)[:, None]
        a = x[:, s] @ w_ih.T + h @ w_hh.T + b
        ai, af, ag, ao = np.split(a, 4, axis=1)
        i, f, g, o = _sigmoid(ai), _sigmoid(af), np.tanh(ag), _sigmoid(ao)
        c_new = f * c + i * g
        tc = np.tanh(c_new)
        tape.append((h, c, i, f, g, o, tc))
        h_new = o * tc
        ys[:, s] = np.where(active, h_new, 0.0)
        h, c = np.where(active, h_new, h), np.where(active, c_new, c)
    count = w.loss_count()
    assert count == int(lens.sum()) * hid
    loss = np.sum(ys**2) / count  # padded outputs are zero: a sum over valid steps
    dy = 2.0 * ys / count
    gw_ih, gw_hh, gb = np.zeros_like(w_ih), np.zeros_like(w_hh), np.zeros_like(b)
    gx = np.zeros_like(x)
    dh_next = np.zeros((bsz, hid))  # adjoints of the state after step s
    dc_next = np.zeros((bsz, hid))
    for s in reversed(range(steps)):
        active = (s < lens)[:, None]
        h_prev, c_prev, i, f, g, o, tc = tape[s]
        dh = dy[:, s] + dh_next
        do = dh * tc
        dc = dh * o * (1.0 - tc**2) + dc_next
        da = np.concatenate(
            [dc * g * i * (1 - i), dc * c_prev * f * (1 - f), dc * i * (1 - g**2), do * o * (1 - o)],
            axis=1,
        )
        da = np.where(active, da, 0.0)  # a padded step computes nothing that is kept
        gw_ih += da.T @ x[:, s]
        gw_hh += da.T @ h_prev
        gb += da.sum(axis=0)
        gx[:, s] = da @ w_ih
        # Padded step: state after = state before, so the adjoints pass through.
        dh_next = np.where(active, da @ w_hh, dh)
        dc_next = np.where(active, dc * f, dc_next)
    return {
        "loss": np.array([loss]),
        "grad.weight_ih_l0": gw_ih,
        "grad.weight_hh_l0": gw_hh,
        "grad.bias_ih_l0": gb,
        "grad.bias_hh_l0": gb.copy(),
        "grad.x": gx,
    }


# ----------------------------------------------------------------------------
# ONNX export

# Row-block permutation from PyTorch's gate order to ONNX's:
# LSTM i,f,g,o -> i,o,f,c ; GRU r,z,n -> z,r,h.
ONNX_GATE_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2]}


def _to_onnx_gates(w: Workload, a: np.ndarray) -> np.ndarray:
    blocks = np.split(a, w.gates, axis=0)
    return np.concatenate([blocks[j] for j in ONNX_GATE_ORDER[w.cell]], axis=0)


def export_onnx(w: Workload, t: dict[str, np.ndarray], with_lens: bool):
    """The workload as an ONNX graph (opset 17) built with onnx.helper.

    x [B, T, I] -> Transpose -> [T, B, I] -> per layer: LSTM/GRU node
    (Y [T, D, B, H]) -> Transpose [T, B, D, H] -> Reshape [T, B, D*H] ->
    ... -> Transpose -> y [B, T, D*H]. h_n concatenates the nodes' Y_h
    ([D, B, H] each) into PyTorch's [L*D, B, H].
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    B, T, I, H, D = w.batch, w.steps, w.input_size, w.hidden, w.directions
    nodes, inits = [], []
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, T, I])]
    lens_name = ""
    if with_lens:
        inputs.append(helper.make_tensor_value_info("seq_len", TensorProto.INT64, [B]))
        nodes.append(helper.make_node("Cast", ["seq_len"], ["seq_len_i32"], to=TensorProto.INT32))
        lens_name = "seq_len_i32"
    nodes.append(helper.make_node("Transpose", ["x"], ["x_tm"], perm=[1, 0, 2]))
    cur = "x_tm"
    h_outs = []
    op = "LSTM" if w.cell == "lstm" else "GRU"
    for l in range(w.layers):
        sfx = ["", "_reverse"][:D]
        W = np.stack([_to_onnx_gates(w, t[f"weight_ih_l{l}{s}"]) for s in sfx])
        R = np.stack([_to_onnx_gates(w, t[f"weight_hh_l{l}{s}"]) for s in sfx])
        Bias = np.stack([
            np.concatenate([_to_onnx_gates(w, t[f"bias_ih_l{l}{s}"]),
                            _to_onnx_gates(w, t[f"bias_hh_l{l}{s}"])])
            for s in sfx
        ])
        for nm, arr in ((f"W{l}", W), (f"R{l}", R), (f"B{l}", Bias)):
            inits.append(numpy_helper.from_array(arr.astype(np.float32), nm))
        attrs = {"hidden_size": H, "direction": "bidirectional" if D == 2 else "forward"}
        if w.cell == "gru":
            attrs["linear_before_reset"] = 1  # PyTorch's GRU: reset after the matmul
        node_inputs = [cur, f"W{l}", f"R{l}", f"B{l}", lens_name]
        node_outputs = [f"Y{l}", f"Yh{l}"] + ([f"Yc{l}"] if w.cell == "lstm" else [])
        nodes.append(helper.make_node(op, node_inputs, node_outputs, name=f"{op.lower()}{l}", **attrs))
        h_outs.append(f"Yh{l}")
        # [T, D, B, H] -> [T, B, D, H] -> [T, B, D*H]: fwd and bwd concatenated per step.
        nodes.append(helper.make_node("Transpose", [f"Y{l}"], [f"Yt{l}"], perm=[0, 2, 1, 3]))
        inits.append(numpy_helper.from_array(np.array([T, B, D * H], dtype=np.int64), f"shape{l}"))
        nodes.append(helper.make_node("Reshape", [f"Yt{l}", f"shape{l}"], [f"out{l}"]))
        cur = f"out{l}"
    nodes.append(helper.make_node("Transpose", [cur], ["y"], perm=[1, 0, 2]))
    if len(h_outs) == 1:
        nodes.append(helper.make_node("Identity", h_outs, ["h_n"]))
    else:
        nodes.append(helper.make_node("Concat", h_outs, ["h_n"], axis=0))
    outputs = [
        helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, T, D * H]),
        helper.make_tensor_value_info("h_n", TensorProto.FLOAT, [w.layers * D, B, H]),
    ]
    graph = helper.make_graph(nodes, f"{w.name}_{op.lower()}", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="unroll-bench")
    model.ir_version = 8  # widely readable (ORT, tract)
    onnx.checker.check_model(model)
    return model


def check_onnx(path: str, w: Workload, t: dict[str, np.ndarray], ref: dict[str, np.ndarray],
               with_lens: bool) -> float:
    """Run the model in ONNX Runtime; return the max abs diff to the reference."""
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    feeds = {"x": t["x"]}
    if with_lens:
        feeds["seq_len"] = t["seq_len"]
    y, h_n = sess.run(["y", "h_n"], feeds)
    if with_lens:
        return max(float(np.abs(y - ref["y"]).max()), float(np.abs(h_n - ref["h_n"]).max()))
    # Padded model: only positions inside each length are comparable, and the
    # final state only for full-length sequences.
    mask = np.arange(w.steps)[None, :] < t["seq_len"][:, None]
    diff = float(np.abs((y - ref["y"])[mask]).max())
    full = t["seq_len"] == w.steps
    if full.any():
        diff = max(diff, float(np.abs((h_n - ref["h_n"])[:, full]).max()))
    return diff


def check_train(w: Workload, t: dict[str, np.ndarray], ref: dict[str, np.ndarray]) -> float:
    """Check the training reference against the forward reference, in float64.

    The loss of reference_train must equal sum(y^2) / loss_count() of
    reference_forward's y (a separate implementation of the same masked
    forward), and each gradient (every parameter and x) must match central
    finite differences of that loss along one direction. The direction is
    sign(grad) times random factors in [0.5, 1.5], so that the directional
    derivative sums magnitudes instead of cancelling to a few rounding errors,
    and any wrong entry moves it. Returns the largest relative difference.
    """
    def loss_of(tensors: dict[str, np.ndarray]) -> float:
        y = reference_forward(w, tensors)["y"]
        return float(np.sum(y**2) / w.loss_count())

    base = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in t.items()}
    worst = abs(loss_of(base) - float(ref["loss"][0])) / abs(float(ref["loss"][0]))
    rng = np.random.default_rng(w.seed + 1)
    eps = 1e-6
    for name in w.param_names() + ["x"]:
        v = np.sign(ref["grad." + name]) * rng.uniform(0.5, 1.5, size=base[name].shape)
        plus, minus = dict(base), dict(base)
        plus[name] = base[name] + eps * v
        minus[name] = base[name] - eps * v
        numeric = (loss_of(plus) - loss_of(minus)) / (2 * eps)
        analytic = float(np.sum(ref["grad." + name] * v))
        worst = max(worst, abs(numeric - analytic) / max(abs(analytic), 1e-12))
    return worst


# ----------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--check", action="store_true",
                    help="verify every ONNX model against the numpy reference (needs onnxruntime)")
    ap.add_argument("--workloads", default=",".join(WORKLOADS), help="comma-separated subset")
    args = ap.parse_args()

    from safetensors.numpy import save_file

    os.makedirs(DATA_DIR, exist_ok=True)
    failed = False
    for name in args.workloads.split(","):
        w = WORKLOADS[name]
        t = make_data(w)
        save_file(t, data_path(name), metadata={"workload": name, "seed": str(w.seed)})
        ref = reference_forward(w, t)
        if w.train:
            ref.update(reference_train(w, t))
        save_file({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in ref.items()},
                  data_path(name, ".expected.safetensors"))
        msg = f"{name}: {data_path(name)}"
        if w.train and args.check:
            diff = check_train(w, t, ref)
            ok = diff < TRAIN_TOLERANCE
            failed |= not ok
            msg += (f" (training reference vs forward reference and finite differences: "
                    f"max rel diff {diff:.2e} {'ok' if ok else 'FAIL'})")
        if not w.train:
            import onnx

            variants = [(name, w.varlen)] + ([(name + "_padded", False)] if w.varlen else [])
            for stem, with_lens in variants:
                path = data_path(stem, ".onnx")
                onnx.save(export_onnx(w, t, with_lens), path)
                msg += f", {os.path.basename(path)}"
                if args.check:
                    diff = check_onnx(path, w, t, ref, with_lens)
                    ok = diff < TOLERANCE
                    failed |= not ok
                    msg += f" (onnxruntime vs numpy: max|diff| {diff:.2e} {'ok' if ok else 'FAIL'})"
        print(msg, file=sys.stderr)
    if failed:
        print(f"check FAILED (ONNX tolerance {TOLERANCE}, training reference {TRAIN_TOLERANCE})",
              file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
