"""Reference data for the weight-layout converter (Keras / TF1 / ONNX -> PyTorch).

Every case runs a tiny recurrent network in a real framework (Keras 3,
TensorFlow 1 `tf.compat.v1.nn.rnn_cell` cells, ONNX Runtime) and stores

* inputs and outputs in OUR convention (see ../shared/conformance/README.md):
  `x` [B, T, I], `seq_len` [B] int64, `h0` (and `c0`) [L*D, B, H],
  `y` [B, T, D*H] (exactly 0 at t >= seq_len[b]), `h_n` (and `c_n`) [L*D, B, H];
* the weights in the FRAMEWORK's native layout and gate order, with the
  names documented in `keras_case`, `tf1_case` and `onnx_case` below.

Each case is cross-checked against an independent numpy float64
implementation of the README's PyTorch-layout equations, fed with weights
converted by `to_pytorch_*` below (the conversion recipe the Rust converter
implements). The script asserts max |framework - numpy| < 1e-5.

Rerun (from the repository root):

    python3 -m venv /work/layouts-venv
    /work/layouts-venv/bin/pip install tensorflow-cpu==2.21.0 tf_keras==2.21.0 \
        keras==3.15.1 onnx==1.23.2 onnxruntime==1.32.0 safetensors==0.8.0 numpy==2.4.6
    /work/layouts-venv/bin/python tests/data/layouts/make_reference.py

Outputs: tests/data/layouts/<case>.safetensors and tests/data/layouts/cases.json.
Safetensors metadata: one key, `fixture`, the JSON string {"case": ..., "generator": ...},
as in the conformance fixtures (one key keeps the files byte-reproducible: safetensors
writes metadata keys in hash order).

Conversion recipe to PyTorch layout (blocks are H rows each; "reorder" permutes
the gate blocks; PyTorch orders: LSTM i,f,g,o; GRU r,z,n; RNN one block):

* Keras (per layer k, per direction R):
  weight_ih = kernel.T, weight_hh = recurrent_kernel.T, both reordered;
  LSTM i,f,c,o -> identity; GRU z,r,h -> blocks [1, 0, 2]; SimpleRNN none.
  bias [G*H] (LSTM, SimpleRNN, GRU reset_after=False) -> bias_ih (reordered),
  bias_hh = 0. GRU reset_after=True bias [2, 3H] -> bias_ih = bias[0],
  bias_hh = bias[1] (both reordered). reset_after=False uses the
  "reset before the recurrent product" GRU (our `reset_after = false`).
* TF1 (rows 0..I of a kernel multiply x, rows I..I+H multiply h):
  LSTMCell kernel [I+H, 4H] order i,j,f,o: weight_ih = kernel[:I].T,
  weight_hh = kernel[I:].T, reorder blocks [0, 2, 1, 3] (i,f,j,o);
  bias_ih = bias reordered, plus forget_bias added to the f block;
  bias_hh = 0; weight_peephole = stack(w_i_diag, w_f_diag, w_o_diag) [3, H].
  cell_clip -> our cell_clip.
  GRUCell: gates (r, u) with u = z, already r,z order:
  weight_ih = concat(gates_kernel[:I].T, candidate_kernel[:I].T),
  weight_hh = concat(gates_kernel[I:].T, candidate_kernel[I:].T),
  bias_ih = concat(gates_bias, candidate_bias), bias_hh = 0; reset_after=false.
  BasicRNNCell: weight_ih = kernel[:I].T, weight_hh = kernel[I:].T,
  bias_ih = bias, bias_hh = 0.
* ONNX (direction d = 0 forward, 1 reverse, both in one node per layer):
  weight_ih = W[d], weight_hh = R[d] (already [G*H, in]) reordered;
  bias_ih = B[d][:G*H], bias_hh = B[d][G*H:] (reordered);
  LSTM i,o,f,c -> blocks [0, 2, 3, 1]; P[d] i,o,f -> weight_peephole rows
  [P_i, P_f, P_o] = blocks [0, 2, 1]; GRU z,r,h -> blocks [1, 0, 2];
  linear_before_reset=1 -> reset_after=true, 0 -> reset_after=false.
"""

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ["TF_USE_LEGACY_KERAS"] = "1"  # tf.compat.v1.nn.rnn_cell comes from tf_keras

import numpy as np
import tensorflow as tf
import keras  # Keras 3 (the `keras` package), independent of tf.keras
import tf_keras
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from safetensors.numpy import save_file

OUT_DIR = os.path.dirname(os.path.abspath(__file__))
TOL = 1e-5
B = 3
RNG = np.random.default_rng(20240611)

# --------------------------------------------------------------------------
# Random data


def rw(*shape):
    """Random weights: multiples of 2^-10 in [-0.5, 0.5]."""
    return (np.round(RNG.uniform(-0.5, 0.5, size=shape) * 1024) / 1024).astype(np.float32)


def rx(*shape):
    """Random inputs: multiples of 2^-10 in [-1, 1]."""
    return (np.round(RNG.uniform(-1.0, 1.0, size=shape) * 1024) / 1024).astype(np.float32)


def mask_of(seq_len, T):
    return np.arange(T)[None, :] < seq_len[:, None]  # [B, T] bool


def zero_padded(y, seq_len):
    """Set y[b, t] = 0 for t >= seq_len[b]; returns (y, max |removed value|)."""
    m = mask_of(seq_len, y.shape[1])
    removed = float(np.abs(y[~m]).max()) if (~m).any() else 0.0
    y = y.copy()
    y[~m] = 0.0
    return y, removed


# --------------------------------------------------------------------------
# Numpy float64 reference of the README equations (PyTorch layout)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def ref_step(cell, p, x, h, c, reset_after, clip):
    """One step for one sequence. p: PyTorch-layout params of one layer/direction (float64)."""
    gi = p["weight_ih"] @ x + p["bias_ih"]
    gh = p["weight_hh"] @ h + p["bias_hh"]
    H = h.shape[0]
    if cell == "rnn_tanh":
        return np.tanh(gi + gh), None
    if cell == "lstm":
        g = gi + gh
        i, f, gg, o = g[:H], g[H:2 * H], g[2 * H:3 * H], g[3 * H:]
        pp = p.get("weight_peephole")
        if pp is not None:
            i = i + pp[0] * c
            f = f + pp[1] * c
        c2 = sigmoid(f) * c + sigmoid(i) * np.tanh(gg)
        if clip is not None:
            c2 = np.clip(c2, -clip, clip)
        if pp is not None:
            o = o + pp[2] * c2
        return sigmoid(o) * np.tanh(c2), c2
    if cell == "gru":
        r = sigmoid(gi[:H] + gh[:H])
        z = sigmoid(gi[H:2 * H] + gh[H:2 * H])
        if reset_after:
            n = np.tanh(gi[2 * H:] + r * gh[2 * H:])
        else:
            n = np.tanh(gi[2 * H:] + p["weight_hh"][2 * H:] @ (r * h) + p["bias_hh"][2 * H:])
        return (1 - z) * n + z * h, None
    raise ValueError(cell)


def ref_run(cell, params, x, seq_len, h0, c0, L, D, reset_after=True, clip=None,
            reverse_only=False):
    """Whole network. params: {"weight_ih_l0": ..., ...} PyTorch names.
    reverse_only: D = 1 but the single direction runs backward (ONNX direction=reverse)."""
    x = x.astype(np.float64)
    Bn, T, _ = x.shape
    H = h0.shape[2]
    hn = np.zeros(h0.shape)
    cn = np.zeros(h0.shape)
    inp = x
    for k in range(L):
        outs = []
        for d in range(D):
            suf = "_reverse" if d == 1 else ""
            p = {n: params.get(f"{n}_l{k}{suf}") for n in
                 ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "weight_peephole"]}
            p = {n: (None if v is None else v.astype(np.float64)) for n, v in p.items()}
            backward = d == 1 or reverse_only
            y = np.zeros((Bn, T, H))
            row = k * D + d
            for b in range(Bn):
                h = h0[row, b].astype(np.float64)
                c = c0[row, b].astype(np.float64) if c0 is not None else None
                steps = range(seq_len[b] - 1, -1, -1) if backward else range(seq_len[b])
                for t in steps:
                    h, c = ref_step(cell, p, inp[b, t], h, c, reset_after, clip)
                    y[b, t] = h
                hn[row, b] = h
                if c is not None:
                    cn[row, b] = c
            outs.append(y)
        inp = np.concatenate(outs, axis=2)
    return inp, hn, (cn if cell == "lstm" else None)


def max_diff(a, b):
    return float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max())


# --------------------------------------------------------------------------
# Conversion to PyTorch layout


def reorder(w, order, H):
    """Permute the H-sized gate blocks along axis 0."""
    return np.concatenate([w[j * H:(j + 1) * H] for j in order], axis=0)


KERAS_ORDER = {"lstm": [0, 1, 2, 3], "gru": [1, 0, 2], "rnn_tanh": [0]}
ONNX_ORDER = {"lstm": [0, 2, 3, 1], "gru": [1, 0, 2], "rnn_tanh": [0]}


def to_pytorch_keras(w, cell, L, D, H):
    out = {}
    o = KERAS_ORDER[cell]
    for k in range(L):
        for d in range(D):
            s = f"_l{k}" + ("_reverse" if d else "")
            out["weight_ih" + s] = reorder(w["kernel" + s].T, o, H)
            out["weight_hh" + s] = reorder(w["recurrent_kernel" + s].T, o, H)
            b = w["bias" + s]
            if b.ndim == 2:  # GRU reset_after=True: [input bias; recurrent bias]
                out["bias_ih" + s] = reorder(b[0], o, H)
                out["bias_hh" + s] = reorder(b[1], o, H)
            else:
                out["bias_ih" + s] = reorder(b, o, H)
                out["bias_hh" + s] = np.zeros_like(out["bias_ih" + s])
    return out


def to_pytorch_tf1(w, cell, L, D, H, forget_bias=0.0):
    out = {}
    for k in range(L):
        for d in range(D):
            s = f"_l{k}" + ("_reverse" if d else "")
            if cell == "gru":
                gk, ck = w["gates_kernel" + s], w["candidate_kernel" + s]
                I = gk.shape[0] - H
                out["weight_ih" + s] = np.concatenate([gk[:I].T, ck[:I].T], axis=0)
                out["weight_hh" + s] = np.concatenate([gk[I:].T, ck[I:].T], axis=0)
                out["bias_ih" + s] = np.concatenate([w["gates_bias" + s], w["candidate_bias" + s]])
            else:
                kern = w["kernel" + s]
                I = kern.shape[0] - H
                o = [0, 2, 1, 3] if cell == "lstm" else [0]
                out["weight_ih" + s] = reorder(kern[:I].T, o, H)
                out["weight_hh" + s] = reorder(kern[I:].T, o, H)
                bias = reorder(w["bias" + s], o, H).copy()
                if cell == "lstm":
                    bias[H:2 * H] += np.float32(forget_bias)
                    if "w_i_diag" + s in w:
                        out["weight_peephole" + s] = np.stack(
                            [w["w_i_diag" + s], w["w_f_diag" + s], w["w_o_diag" + s]])
                out["bias_ih" + s] = bias
            out["bias_hh" + s] = np.zeros_like(out["bias_ih" + s])
    return out


def to_pytorch_onnx(w, cell, L, D, H):
    out = {}
    o = ONNX_ORDER[cell]
    G = len(o)
    for k in range(L):
        for d in range(D):
            s = f"_l{k}" + ("_reverse" if d else "")
            out["weight_ih" + s] = reorder(w[f"W_l{k}"][d], o, H)
            out["weight_hh" + s] = reorder(w[f"R_l{k}"][d], o, H)
            out["bias_ih" + s] = reorder(w[f"B_l{k}"][d][:G * H], o, H)
            out["bias_hh" + s] = reorder(w[f"B_l{k}"][d][G * H:], o, H)
            if f"P_l{k}" in w:
                out["weight_peephole" + s] = reorder(w[f"P_l{k}"][d], [0, 2, 1], H).reshape(3, H)
    return out


# --------------------------------------------------------------------------
# Saving


CASES = []


def save_case(name, layout, model, generator, tensors, weights, diff, forget_bias=None, note=None):
    assert diff < TOL, f"{name}: framework vs numpy differ by {diff}"
    all_t = {}
    for n, v in list(tensors.items()) + list(weights.items()):
        if v is None:
            continue
        assert n not in all_t, n
        all_t[n] = np.ascontiguousarray(v, dtype=np.int64 if n == "seq_len" else np.float32)
    fname = f"{name}.safetensors"
    meta = {"case": name, "generator": generator}
    save_file(all_t, os.path.join(OUT_DIR, fname),
              metadata={"fixture": json.dumps(meta)})
    os.chmod(os.path.join(OUT_DIR, fname), 0o644)
    entry = {"name": name, "file": fname, "layout": layout, "forget_bias": forget_bias,
             "model": model, "generator": generator, "max_abs_diff_numpy": diff}
    if note:
        entry["note"] = note
    CASES.append(entry)
    print(f"{name:28s} max|framework - numpy| = {diff:.3g}")


def compare(y, hn, cn, ry, rhn, rcn):
    d = max(max_diff(y, ry), max_diff(hn, rhn))
    if cn is not None:
        d = max(d, max_diff(cn, rcn))
    return d


def model_text(net, I, layer):
    return f"network {net} {{ input x: [{I}]; layer l = {layer}; unroll dynamic; }}"


# --------------------------------------------------------------------------
# Keras 3


KERAS_GEN = f"keras {keras.__version__} (tensorflow {tf.__version__} backend)"


def keras_case(name, cell, I, H, T, seq_len, bidirectional=False, layers=1,
               reset_after=True, layer_text=None, net="Net"):
    """Keras weights per layer k / direction R: kernel_l{k}{R} [in, G*H],
    recurrent_kernel_l{k}{R} [H, G*H], bias_l{k}{R} [G*H] or [2, 3H] (GRU reset_after=True);
    gate orders LSTM i,f,c,o; GRU z,r,h."""
    L, D = layers, (2 if bidirectional else 1)
    G = {"lstm": 4, "gru": 3, "rnn_tanh": 1}[cell]
    seq_len = np.array(seq_len, dtype=np.int64)
    x = rx(B, T, I)
    h0 = rw(L * D, B, H)
    c0 = rw(L * D, B, H) if cell == "lstm" else None
    mask = tf.constant(mask_of(seq_len, T))

    def make(**kw):
        if cell == "lstm":
            return keras.layers.LSTM(H, return_sequences=True, return_state=True, **kw)
        if cell == "gru":
            return keras.layers.GRU(H, return_sequences=True, return_state=True,
                                    reset_after=reset_after, **kw)
        return keras.layers.SimpleRNN(H, return_sequences=True, return_state=True, **kw)

    def init_state(row):
        s = [tf.constant(h0[row])]
        if cell == "lstm":
            s.append(tf.constant(c0[row]))
        return s

    weights = {}
    hns, cns = [], []
    inp = tf.constant(x)
    for k in range(L):
        in_size = I if k == 0 else D * H
        layer = keras.layers.Bidirectional(make(), merge_mode="concat") if bidirectional else make()
        layer.build((B, T, in_size))
        vals = []
        for d in range(D):
            s = f"_l{k}" + ("_reverse" if d else "")
            bias_shape = (2, G * H) if (cell == "gru" and reset_after) else (G * H,)
            weights["kernel" + s] = rw(in_size, G * H)
            weights["recurrent_kernel" + s] = rw(H, G * H)
            weights["bias" + s] = rw(*bias_shape)
            vals += [weights["kernel" + s], weights["recurrent_kernel" + s], weights["bias" + s]]
        layer.set_weights(vals)
        # read back verbatim what Keras holds
        got = layer.get_weights()
        for d in range(D):
            s = f"_l{k}" + ("_reverse" if d else "")
            for j, n in enumerate(["kernel", "recurrent_kernel", "bias"]):
                assert np.array_equal(got[3 * d + j], weights[n + s])
        init = sum((init_state(k * D + d) for d in range(D)), [])
        res = layer(inp, mask=mask, initial_state=init)
        inp = res[0]
        states = [np.asarray(v) for v in res[1:]]
        per = 2 if cell == "lstm" else 1
        for d in range(D):
            hns.append(states[per * d])
            if cell == "lstm":
                cns.append(states[per * d + 1])
    y_raw = np.asarray(inp)
    y, removed = zero_padded(y_raw, seq_len)
    hn = np.stack(hns)
    cn = np.stack(cns) if cell == "lstm" else None

    pt = to_pytorch_keras(weights, cell, L, D, H)
    ry, rhn, rcn = ref_run(cell, pt, x, seq_len, h0, c0, L, D, reset_after=reset_after)
    diff = compare(y, hn, cn, ry, rhn, rcn)
    # what did Keras put at padded steps?
    m = ~mask_of(seq_len, T)
    carried = None
    if m.any():
        carried = float(np.abs(y_raw[m]).max())
    if bidirectional:
        # Bidirectional(return_sequences=True) sets zero_output_for_mask on both halves; its
        # backward half reverses the whole padded sequence and skips the (now leading) masked
        # steps, so it runs over the valid part only, from seq_len-1 down to 0 (as our README).
        assert carried in (None, 0.0)
        note = ("Keras Bidirectional already returns 0 at padded steps; its backward half "
                "(go_backwards over the padded sequence, masked steps skipped) matches the "
                "README's valid-part-only backward semantics (numpy cross-check).")
    else:
        # A plain masked Keras RNN layer (zero_output_for_mask=False) repeats the last valid
        # output at padded steps (0 for a length-0 sequence, whose state stays the initial one).
        note = (f"Keras repeats the last valid output at padded steps (max |y| there = "
                f"{carried:.3g}); stored y has them set to 0. h_n/c_n are Keras's states.")
    cls = {"lstm": "LSTM", "gru": f"GRU(reset_after={reset_after})", "rnn_tanh": "SimpleRNN(tanh)"}[cell]
    api = f"keras.layers.{cls}(return_sequences=True, return_state=True)"
    if bidirectional:
        api = f"keras.layers.Bidirectional({api}, merge_mode='concat')"
    if L > 1:
        api = f"{L} stacked {api}"
    gen = f"{KERAS_GEN} {api}, called with mask= (from seq_len) and initial_state=; " \
          "y set to 0 at padded steps t >= seq_len"
    tensors = {"x": x, "seq_len": seq_len, "h0": h0, "c0": c0, "y": y, "h_n": hn, "c_n": cn}
    save_case(name, "keras", model_text(net, I, layer_text), gen, tensors, weights, diff, note=note)


# --------------------------------------------------------------------------
# TensorFlow 1 cells (tf.compat.v1.nn.rnn_cell from tf_keras, dynamic_rnn in a Graph/Session)


def tf1_case(name, cell, I, H, T, seq_len, layers=1, peepholes=False, cell_clip=None,
             forget_bias=1.0, layer_text=None, net="Net"):
    """TF1 weights per layer k: LSTMCell kernel_l{k} [I+H, 4H] (i,j,f,o), bias_l{k} [4H]
    (without forget_bias), w_{i,f,o}_diag_l{k} [H]; GRUCell gates_kernel_l{k} [I+H, 2H] (r,u),
    gates_bias_l{k} [2H], candidate_kernel_l{k} [I+H, H], candidate_bias_l{k} [H];
    BasicRNNCell kernel_l{k} [I+H, H], bias_l{k} [H]."""
    L = layers
    seq_len = np.array(seq_len, dtype=np.int64)
    x = rx(B, T, I)
    h0 = rw(L, B, H)
    c0 = rw(L, B, H) if cell == "lstm" else None
    rc = tf.compat.v1.nn.rnn_cell
    weights = {}
    var_names = {}
    g = tf.Graph()
    with g.as_default():
        def mk():
            if cell == "lstm":
                return rc.LSTMCell(H, use_peepholes=peepholes, cell_clip=cell_clip,
                                   forget_bias=forget_bias)
            if cell == "gru":
                return rc.GRUCell(H)
            return rc.BasicRNNCell(H)

        def st(k):
            if cell == "lstm":
                return rc.LSTMStateTuple(tf.constant(c0[k]), tf.constant(h0[k]))
            return tf.constant(h0[k])

        if L == 1:
            the_cell, init = mk(), st(0)
        else:
            the_cell = rc.MultiRNNCell([mk() for _ in range(L)])
            init = tuple(st(k) for k in range(L))
        xp = tf.constant(x)
        outputs, final = tf.compat.v1.nn.dynamic_rnn(
            the_cell, xp, sequence_length=tf.constant(seq_len.astype(np.int32)),
            initial_state=init, dtype=tf.float32)
        tvars = tf.compat.v1.trainable_variables()
        with tf.compat.v1.Session(graph=g) as sess:
            for v in tvars:
                # e.g. rnn/lstm_cell/kernel:0, rnn/multi_rnn_cell/cell_1/lstm_cell/bias:0,
                # rnn/gru_cell/gates/kernel:0, rnn/basic_rnn_cell/kernel:0
                vn = v.name.split(":")[0]
                parts = vn.split("/")
                k = 0
                for p_ in parts:
                    if p_.startswith("cell_"):
                        k = int(p_[5:])
                leaf = parts[-1]
                if cell == "gru":
                    leaf = parts[-2] + "_" + leaf  # gates_kernel, candidate_bias, ...
                key = f"{leaf}_l{k}"
                val = rw(*v.shape.as_list())
                v.load(val, sess)
                weights[key] = val
                var_names[key] = vn
            out, fin = sess.run([outputs, final])
            # the variables hold exactly what is stored
            for v, got in zip(tvars, sess.run(tvars)):
                key = next(k for k, n in var_names.items() if n == v.name.split(":")[0])
                assert np.array_equal(got, weights[key]), key
    y_raw = np.asarray(out)
    y, removed = zero_padded(y_raw, seq_len)
    assert removed == 0.0, "dynamic_rnn should already zero padded outputs"
    fin_layers = [fin] if L == 1 else list(fin)
    if cell == "lstm":
        hn = np.stack([f.h for f in fin_layers])
        cn = np.stack([f.c for f in fin_layers])
    else:
        hn = np.stack(fin_layers)
        cn = None
    pt = to_pytorch_tf1(weights, cell, L, 1, H, forget_bias=forget_bias if cell == "lstm" else 0.0)
    ry, rhn, rcn = ref_run(cell, pt, x, seq_len, h0, c0, L, 1, reset_after=False, clip=cell_clip)
    diff = compare(y, hn, cn, ry, rhn, rcn)
    cname = {"lstm": f"LSTMCell(H, use_peepholes={peepholes}, cell_clip={cell_clip}, "
                     f"forget_bias={forget_bias})",
             "gru": "GRUCell(H)", "rnn_tanh": "BasicRNNCell(H)"}[cell]
    if L > 1:
        cname = f"MultiRNNCell([{cname}] * {L})"
    gen = (f"tensorflow {tf.__version__} (tf_keras {tf_keras.__version__}) graph mode "
           f"tf.compat.v1.nn.dynamic_rnn(sequence_length=...) + tf.compat.v1.nn.rnn_cell.{cname}")
    note = "TF1 variable names: " + ", ".join(f"{k} <- {v}" for k, v in sorted(var_names.items()))
    tensors = {"x": x, "seq_len": seq_len, "h0": h0, "c0": c0, "y": y, "h_n": hn, "c_n": cn}
    save_case(name, "tensorflow1", model_text(net, I, layer_text), gen, tensors, weights, diff,
              forget_bias=(forget_bias if cell == "lstm" else None), note=note)


# --------------------------------------------------------------------------
# ONNX (built with onnx.helper, run with onnxruntime)


ORT_ZERO_LEN_NOTE = (
    "No zero-length sequence here: onnxruntime returns Y_h = 0 (and Y_c = 0) for a sequence with "
    "sequence_lens = 0 instead of initial_h/initial_c (checked for LSTM, GRU and RNN, all "
    "directions), which differs from our convention; length 1 is used instead. Padded steps of "
    "Y are already 0 in onnxruntime's output.")


def onnx_case(name, cell, I, H, T, seq_len, direction="forward", peepholes=False,
              linear_before_reset=0, layer_text=None, net="Net", note=None):
    """ONNX weights (one node, layer 0): W_l0 [D, G*H, I], R_l0 [D, G*H, H], B_l0 [D, 2*G*H]
    (Wb then Rb), P_l0 [D, 3H] (i,o,f); gate orders LSTM i,o,f,c; GRU z,r,h."""
    D = 2 if direction == "bidirectional" else 1
    G = {"lstm": 4, "gru": 3, "rnn_tanh": 1}[cell]
    seq_len = np.array(seq_len, dtype=np.int64)
    x = rx(B, T, I)
    h0 = rw(D, B, H)
    c0 = rw(D, B, H) if cell == "lstm" else None
    weights = {"W_l0": rw(D, G * H, I), "R_l0": rw(D, G * H, H), "B_l0": rw(D, 2 * G * H)}
    if peepholes:
        weights["P_l0"] = rw(D, 3 * H)

    op = {"lstm": "LSTM", "gru": "GRU", "rnn_tanh": "RNN"}[cell]
    ins = ["X", "W", "R", "B", "sequence_lens", "initial_h"]
    if cell == "lstm":
        ins += ["initial_c"] + (["P"] if peepholes else [])
    outs = ["Y", "Y_h"] + (["Y_c"] if cell == "lstm" else [])
    attrs = {"hidden_size": H, "direction": direction}
    if cell == "gru":
        attrs["linear_before_reset"] = linear_before_reset
    if cell == "rnn_tanh":
        attrs["activations"] = ["Tanh"]
    node = helper.make_node(op, ins, outs, **attrs)
    inits = [numpy_helper.from_array(weights["W_l0"], "W"),
             numpy_helper.from_array(weights["R_l0"], "R"),
             numpy_helper.from_array(weights["B_l0"], "B")]
    if peepholes:
        inits.append(numpy_helper.from_array(weights["P_l0"], "P"))
    f32 = TensorProto.FLOAT
    gin = [helper.make_tensor_value_info("X", f32, [T, B, I]),
           helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]),
           helper.make_tensor_value_info("initial_h", f32, [D, B, H])]
    if cell == "lstm":
        gin.append(helper.make_tensor_value_info("initial_c", f32, [D, B, H]))
    gout = [helper.make_tensor_value_info("Y", f32, [T, D, B, H]),
            helper.make_tensor_value_info("Y_h", f32, [D, B, H])]
    if cell == "lstm":
        gout.append(helper.make_tensor_value_info("Y_c", f32, [D, B, H]))
    graph = helper.make_graph([node], name, gin, gout, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    onnx.checker.check_model(model)
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {"X": np.ascontiguousarray(x.transpose(1, 0, 2)),
            "sequence_lens": seq_len.astype(np.int32), "initial_h": h0}
    if cell == "lstm":
        feed["initial_c"] = c0
    res = sess.run(None, feed)
    Y = res[0]  # [T, D, B, H]
    y_raw = Y.transpose(2, 0, 1, 3).reshape(B, T, D * H)
    y, removed = zero_padded(y_raw, seq_len)
    hn = res[1]
    cn = res[2] if cell == "lstm" else None

    pt = to_pytorch_onnx(weights, cell, 1, D, H)
    ry, rhn, rcn = ref_run(cell, pt, x, seq_len, h0, c0, 1, D,
                           reset_after=bool(linear_before_reset),
                           reverse_only=(direction == "reverse"))
    diff = compare(y, hn, cn, ry, rhn, rcn)
    gen = (f"onnxruntime {ort.__version__} CPUExecutionProvider, onnx {onnx.__version__} "
           f"opset 17 {op}(direction={direction}"
           + (f", linear_before_reset={linear_before_reset}" if cell == "gru" else "")
           + (", activations=[Tanh]" if cell == "rnn_tanh" else "")
           + (", with P" if peepholes else "")
           + ") with sequence_lens (int32) and initial_h" + ("/initial_c" if cell == "lstm" else "")
           + "; X/Y time-major converted to batch-major")
    if removed > 0:
        gen += "; y set to 0 at padded steps"
    tensors = {"x": x, "seq_len": seq_len, "h0": h0, "c0": c0, "y": y, "h_n": hn, "c_n": cn}
    note = ((note + " ") if note else "") + ORT_ZERO_LEN_NOTE
    save_case(name, "onnx", model_text(net, I, layer_text), gen, tensors, weights, diff, note=note)


# --------------------------------------------------------------------------


def main():
    keras_case("keras_lstm", "lstm", I=4, H=5, T=5, seq_len=[5, 2, 0],
               layer_text="lstm(hidden = 5)", net="KerasLstm")
    keras_case("keras_gru_reset_after", "gru", I=5, H=4, T=6, seq_len=[6, 1, 3],
               reset_after=True, layer_text="gru(hidden = 4)", net="KerasGru")
    keras_case("keras_gru_reset_before", "gru", I=3, H=5, T=5, seq_len=[2, 5, 0],
               reset_after=False, layer_text="gru(hidden = 5, reset_after = false)",
               net="KerasGruResetBefore")
    keras_case("keras_simple_rnn", "rnn_tanh", I=4, H=6, T=5, seq_len=[5, 3, 1],
               layer_text="rnn_tanh(hidden = 6)", net="KerasSimpleRnn")
    keras_case("keras_bidirectional_lstm", "lstm", I=3, H=4, T=6, seq_len=[6, 3, 1],
               bidirectional=True, layer_text="lstm(hidden = 4, bidirectional)",
               net="KerasBidirectionalLstm")
    keras_case("keras_stacked_gru", "gru", I=5, H=4, T=5, seq_len=[4, 5, 1], layers=2,
               reset_after=True, layer_text="gru(hidden = 4, layers = 2)", net="KerasStackedGru")

    tf1_case("tf1_lstm_peephole_clip", "lstm", I=4, H=5, T=6, seq_len=[6, 3, 0],
             peepholes=True, cell_clip=0.5, forget_bias=1.0,
             layer_text="lstm(hidden = 5, peepholes, cell_clip = 0.5)", net="Tf1PeepholeLstm")
    tf1_case("tf1_gru", "gru", I=5, H=4, T=5, seq_len=[5, 1, 3],
             layer_text="gru(hidden = 4, reset_after = false)", net="Tf1Gru")
    tf1_case("tf1_basic_rnn", "rnn_tanh", I=3, H=6, T=5, seq_len=[2, 5, 4],
             layer_text="rnn_tanh(hidden = 6)", net="Tf1BasicRnn")
    tf1_case("tf1_multi_lstm", "lstm", I=4, H=3, T=5, seq_len=[5, 2, 1], layers=2,
             forget_bias=1.0, layer_text="lstm(hidden = 3, layers = 2)", net="Tf1MultiLstm")

    onnx_case("onnx_lstm_bidir_peepholes", "lstm", I=3, H=5, T=6, seq_len=[6, 4, 1],
              direction="bidirectional", peepholes=True,
              layer_text="lstm(hidden = 5, peepholes, bidirectional)", net="OnnxBidirLstm")
    onnx_case("onnx_gru_lbr0", "gru", I=4, H=5, T=5, seq_len=[5, 2, 1], linear_before_reset=0,
              layer_text="gru(hidden = 5, reset_after = false)", net="OnnxGruLbr0")
    onnx_case("onnx_gru_lbr1", "gru", I=5, H=3, T=6, seq_len=[3, 6, 1], linear_before_reset=1,
              layer_text="gru(hidden = 3)", net="OnnxGruLbr1")
    onnx_case("onnx_rnn_reverse", "rnn_tanh", I=3, H=4, T=5, seq_len=[5, 2, 1],
              direction="reverse", layer_text="rnn_tanh(hidden = 4, reverse)",
              net="OnnxRnnReverse",
              note="A reverse layer: one direction (d = 0, no _reverse suffix, "
                   "h0/h_n row 0) running backward over each sequence's valid part, "
                   "t = seq_len-1 down to 0; y is [B, T, H].")

    with open(os.path.join(OUT_DIR, "cases.json"), "w") as f:
        json.dump(CASES, f, indent=2)
        f.write("\n")
    print(f"wrote {len(CASES)} cases to {OUT_DIR}")


if __name__ == "__main__":
    main()
