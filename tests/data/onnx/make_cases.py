"""Writes the ONNX files `tests/onnx_import.rs` imports, with their inputs and
expected outputs, so that the tests need no Python.

* `node/test_*`: ONNX's own backend node tests of LSTM, GRU and RNN,
  regenerated from the case definitions the `onnx` wheel ships
  (`onnx.backend.test.case.node.{lstm,gru,rnn}`; older wheels shipped the
  folders themselves under `onnx/backend/test/data/node/`). Each folder is
  laid out as ONNX's: `model.onnx`, `test_data_set_0/input_k.pb` and
  `output_k.pb`, TensorProtos named as the graph's inputs and outputs. In
  these tests `W`, `R` and `B` are graph inputs fed from the test data.
* `built/*`: single nodes built with `onnx.helper`, random weights as
  initializers (the node tests' weights are mostly constant, which would hide
  a gate-order mistake), every variant the importer reads: lengths, initial
  states, peepholes, both layouts, reverse and bidirectional,
  linear_before_reset both ways, RNN with Relu. Expected outputs are ONNX
  Runtime's, checked against `onnx.reference` where neither lengths nor clip
  are given (the reference ignores both); for layout = 1, which ONNX Runtime refuses,
  they are `onnx.reference`'s, without lengths. No length is 0: ONNX Runtime returns Y_h = 0 for an empty sequence
  where the importer's networks (like PyTorch and TensorFlow) return
  initial_h.
* `export/torch_*`: PyTorch modules exported with `torch.onnx.export`
  (TorchScript exporter, opset 17), their weights as initializers;
  `export/dynamo_*` with the default exporter since PyTorch 2.9
  (`dynamo=True`, opset 18), its weights in `model.onnx.data`; the
  expected outputs are PyTorch's own (not ONNX Runtime's), and ONNX Runtime's
  are checked against them here.

* `keras/*`: Keras models converted by tf2onnx, written by
  `make_keras_cases.py` (another virtual environment: TensorFlow and PyTorch
  do not share one well).

Each case's `model.rnn` is what `rnnc import` writes for it (this script
runs it last), the text the tests generate code from.

Rerun (from the repository root):

    python3 -m venv /work/import-venv
    /work/import-venv/bin/pip install onnx==1.23.2 onnxruntime torch onnxscript numpy
    /work/import-venv/bin/python tests/data/onnx/make_cases.py
"""

import os
import shutil
import zlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import numpy_helper
from onnx.backend.test.case.node import collect_testcases

HERE = os.path.dirname(os.path.abspath(__file__))


def write_case(folder, model, inputs, outputs, saved=False):
    """Writes a case; `saved` when `model.onnx` (and its external data) is already there."""
    if os.path.exists(folder) and not saved:
        shutil.rmtree(folder)
    data = os.path.join(folder, "test_data_set_0")
    if os.path.exists(data):
        shutil.rmtree(data)
    os.makedirs(data)
    if not saved:
        onnx.save_model(model, os.path.join(folder, "model.onnx"))
    graph_inputs = [i.name for i in model.graph.input
                    if i.name not in {t.name for t in model.graph.initializer}]
    for k, (name, array) in enumerate(zip(graph_inputs, inputs)):
        with open(os.path.join(data, f"input_{k}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(np.asarray(array), name).SerializeToString())
    for k, (out, array) in enumerate(zip(model.graph.output, outputs)):
        with open(os.path.join(data, f"output_{k}.pb"), "wb") as f:
            f.write(numpy_helper.from_array(np.asarray(array), out.name).SerializeToString())


def node_tests():
    names = []
    for case in collect_testcases(None):
        if case.kind != "node" or not any(k in case.name for k in ("lstm", "gru", "rnn")):
            continue
        (inputs, outputs), = case.data_sets
        write_case(os.path.join(HERE, "node", case.name), case.model, inputs, outputs)
        names.append(case.name)
    return names


def torch_case(name, module, x, states, batch_first):
    import torch

    module.eval()
    with torch.no_grad():
        expected = module(x, states)
    y, hidden = expected
    hidden = hidden if isinstance(hidden, tuple) else (hidden,)
    state_names = ["h0", "c0"][: len(hidden)]
    out_names = ["y", "h_n", "c_n"][: 1 + len(hidden)]
    path = os.path.join(HERE, "export", name + ".onnx")
    os.makedirs(os.path.dirname(path), exist_ok=True)
    axes_x = {0: "batch", 1: "time"} if batch_first else {0: "time", 1: "batch"}
    dynamic = {"x": axes_x, "y": dict(axes_x)}
    for s in state_names + out_names[1:]:
        dynamic[s] = {1: "batch"}
    torch.onnx.export(module, (x, states), path, input_names=["x"] + state_names,
                      output_names=out_names, opset_version=17, dynamic_axes=dynamic,
                      dynamo=False)
    model = onnx.load(path)
    os.remove(path)
    inputs = [x.numpy()] + [s.numpy() for s in hidden_inputs(states)]
    outputs = [y.numpy()] + [h.numpy() for h in hidden]
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    ort_out = sess.run(None, {n: a for n, a in zip(["x"] + state_names, inputs)})
    for a, b in zip(ort_out, outputs):
        assert np.abs(a - b).max() < 1e-5, (name, np.abs(a - b).max())
    write_case(os.path.join(HERE, "export", name), model, inputs, outputs)
    print(name, [n.op_type for n in model.graph.node])


def ort_case(name, op, I, H, T, B, direction="forward", layout=0, lengths=None,
             initial=False, peepholes=False, linear_before_reset=None, activations=None,
             clip=None):
    from onnx import TensorProto, helper
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    D = 2 if direction == "bidirectional" else 1
    G = {"LSTM": 4, "GRU": 3, "RNN": 1}[op]
    f = lambda *shape: rng.uniform(-0.6, 0.6, shape).astype(np.float32)
    inits = [numpy_helper.from_array(f(D, G * H, I), "W"),
             numpy_helper.from_array(f(D, G * H, H), "R"),
             numpy_helper.from_array(f(D, 2 * G * H), "B")]
    node_inputs = ["X", "W", "R", "B", "", "", ""]
    x_shape = [B, T, I] if layout else [T, B, I]
    state_shape = [B, D, H] if layout else [D, B, H]
    gin = [helper.make_tensor_value_info("X", TensorProto.FLOAT, x_shape)]
    feed = {"X": f(*x_shape)}
    if lengths is not None:
        node_inputs[4] = "sequence_lens"
        gin.append(helper.make_tensor_value_info("sequence_lens", TensorProto.INT32, [B]))
        feed["sequence_lens"] = np.array(lengths, dtype=np.int32)
    if initial:
        node_inputs[5] = "initial_h"
        gin.append(helper.make_tensor_value_info("initial_h", TensorProto.FLOAT, state_shape))
        feed["initial_h"] = f(*state_shape)
        if op == "LSTM":
            node_inputs[6] = "initial_c"
            gin.append(helper.make_tensor_value_info("initial_c", TensorProto.FLOAT, state_shape))
            feed["initial_c"] = f(*state_shape)
    if peepholes:
        node_inputs.append("P")
        inits.append(numpy_helper.from_array(f(D, 3 * H), "P"))
    while node_inputs and node_inputs[-1] == "":
        node_inputs.pop()
    outs = ["Y", "Y_h"] + (["Y_c"] if op == "LSTM" else [])
    attrs = dict(hidden_size=H, direction=direction)
    if layout:
        attrs["layout"] = 1
    if linear_before_reset is not None:
        attrs["linear_before_reset"] = linear_before_reset
    if activations:
        attrs["activations"] = activations
    if clip is not None:
        attrs["clip"] = clip
    node = helper.make_node(op, node_inputs, outs, name=name, **attrs)
    y_shape = [B, T, D, H] if layout else [T, D, B, H]
    gout = [helper.make_tensor_value_info("Y", TensorProto.FLOAT, y_shape)]
    gout += [helper.make_tensor_value_info(o, TensorProto.FLOAT, state_shape) for o in outs[1:]]
    graph = helper.make_graph([node], name, gin, gout, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    model.ir_version = 10
    onnx.checker.check_model(model)
    from onnx.reference import ReferenceEvaluator
    try:
        reference = ReferenceEvaluator(model).run(None, feed)
    except RuntimeError as error:  # the reference has no Relu for RNN
        print(name, "onnx.reference cannot run it:", error)
        reference = None
    if layout:
        # ONNX Runtime refuses layout = 1; the reference reads it (and ignores lengths).
        assert lengths is None
        outputs = reference
    else:
        sess = ort.InferenceSession(model.SerializeToString(),
                                    providers=["CPUExecutionProvider"])
        outputs = sess.run(None, feed)
        # The reference ignores clip, as it ignores lengths.
        if lengths is None and clip is None and reference is not None:
            diff = max(float(np.abs(a - b).max()) for a, b in zip(reference, outputs))
            assert diff < 1e-5, (name, diff)
    write_case(os.path.join(HERE, "built", name), model, list(feed.values()), outputs)


def dynamo_case(name, module, x, states, dynamic):
    """`torch.onnx.export(..., dynamo=True)`, PyTorch's default exporter, which keeps the
    weights in `model.onnx.data` beside the model; with `dynamic`, time and batch are
    symbolic and its reshapes compute their shapes from the tensors'."""
    import torch
    from torch.export import Dim

    module.eval()
    with torch.no_grad():
        y, hidden = module(x, states)
    hidden = hidden if isinstance(hidden, tuple) else (hidden,)
    folder = os.path.join(HERE, "export", name)
    if os.path.exists(folder):
        shutil.rmtree(folder)
    os.makedirs(folder)
    names = ["x", "h0", "c0"][: 1 + len(hidden)]
    shapes = None
    if dynamic:
        T, B = Dim("T"), Dim("B")
        state_shapes = tuple({1: B} for _ in hidden)
        shapes = ({0: T, 1: B}, state_shapes if isinstance(states, tuple) else state_shapes[0])
    torch.onnx.export(module, (x, states), os.path.join(folder, "model.onnx"),
                      input_names=names, output_names=["y", "h_n", "c_n"][: 1 + len(hidden)],
                      opset_version=18, dynamo=True, dynamic_shapes=shapes, external_data=True)
    inputs = [x.numpy()] + [s.numpy() for s in hidden_inputs(states)]
    outputs = [y.numpy()] + [h.numpy() for h in hidden]
    sess = ort.InferenceSession(os.path.join(folder, "model.onnx"),
                                providers=["CPUExecutionProvider"])
    for a, b in zip(sess.run(None, dict(zip(names, inputs))), outputs):
        assert np.abs(a - b).max() < 1e-5, (name, np.abs(a - b).max())
    model = onnx.load(os.path.join(folder, "model.onnx"), load_external_data=False)
    write_case(folder, model, inputs, outputs, saved=True)
    print(name, [n.op_type for n in model.graph.node])


def hidden_inputs(states):
    return states if isinstance(states, tuple) else (states,)


def import_all():
    """Writes each case's model.rnn with `rnnc import`, named after its folder."""
    import glob
    import subprocess
    root = os.path.join(HERE, "..", "..", "..")
    subprocess.run(["cargo", "build", "--release", "-q", "-p", "rnn-dsl", "--bin", "rnnc"],
                   check=True, cwd=root)
    for folder in sorted(glob.glob(os.path.join(HERE, "*", "*", ""))):
        if os.path.basename(os.path.dirname(os.path.dirname(folder))) == "refused":
            continue
        case = os.path.basename(os.path.dirname(folder))
        name = "".join(word.capitalize() for word in case.split("_"))
        rnn = os.path.join(folder, "model.rnn")
        subprocess.run([os.path.join(root, "target", "release", "rnnc"), "import", os.path.join(folder, "model.onnx"),
                        "-o", rnn, "--name", name, "-w", os.path.join(folder, "w.safetensors"),
                        "-t", *sorted(glob.glob(os.path.join(folder, "test_data_set_0", "input_*.pb")))],
                       check=True, stdout=subprocess.DEVNULL)
        os.remove(os.path.join(folder, "w.safetensors"))


def main():
    import torch

    print("node tests:", node_tests())
    ort_case("lstm_bidir_peepholes_lengths", "LSTM", I=3, H=4, T=5, B=3,
             direction="bidirectional", lengths=[5, 3, 1], initial=True, peepholes=True)
    ort_case("lstm_reverse_batch_major", "LSTM", I=4, H=3, T=6, B=2, direction="reverse",
             layout=1, initial=True)
    ort_case("lstm_peepholes_reverse", "LSTM", I=3, H=4, T=5, B=2, direction="reverse",
             initial=True, peepholes=True)
    ort_case("gru_reset_before_reverse", "GRU", I=3, H=5, T=5, B=3, direction="reverse",
             lengths=[2, 5, 4], initial=True, linear_before_reset=0)
    ort_case("gru_reset_after_bidir_batch_major", "GRU", I=2, H=4, T=4, B=2,
             direction="bidirectional", layout=1, initial=True, linear_before_reset=1)
    ort_case("rnn_relu_bidir_lengths", "RNN", I=3, H=4, T=5, B=3, direction="bidirectional",
             lengths=[1, 5, 3], activations=["Relu", "Relu"])
    torch.manual_seed(0)
    I, H, T, B = 3, 4, 5, 2
    lstm = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, I)
    states = (torch.randn(4, B, H), torch.randn(4, B, H))
    torch_case("torch_lstm_bidir_2layers", lstm, x, states, batch_first=False)
    gru = torch.nn.GRU(I, H, num_layers=2, bidirectional=True, batch_first=True)
    x = torch.randn(B, T, I)
    torch_case("torch_gru_bidir_2layers_batch_first", gru, x, torch.randn(4, B, H), batch_first=True)
    rnn = torch.nn.RNN(I, H, num_layers=2, nonlinearity="relu")
    x = torch.randn(T, B, I)
    torch_case("torch_rnn_relu_2layers", rnn, x, torch.randn(2, B, H), batch_first=False)

    class Tagger(torch.nn.Module):
        """A bidirectional LSTM with a linear head at every step."""

        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(I, H, bidirectional=True, batch_first=True)
            self.head = torch.nn.Linear(2 * H, 6)

        def forward(self, x, states):
            y, states = self.lstm(x, states)
            return self.head(y), states

    x = torch.randn(B, T, I)
    states = (torch.randn(2, B, H), torch.randn(2, B, H))
    torch_case("torch_tagger_lstm_linear", Tagger(), x, states, batch_first=True)

    x = torch.randn(T, B, I)
    states = (torch.randn(4, B, H), torch.randn(4, B, H))
    dynamo_case("dynamo_lstm_bidir_2layers", lstm, x, states, dynamic=True)
    gru = torch.nn.GRU(I, H, num_layers=2)
    dynamo_case("dynamo_gru_2layers_static", gru, x, torch.randn(2, B, H), dynamic=False)
    # ONNX's clip (of the gates' pre-activations), where it bites: weights of 0.6 give
    # pre-activations beyond 0.5.
    ort_case("lstm_clip_lengths", "LSTM", I=3, H=4, T=5, B=3, lengths=[5, 2, 4],
             initial=True, clip=0.5)
    ort_case("lstm_clip_peepholes_bidir", "LSTM", I=3, H=4, T=5, B=2,
             direction="bidirectional", initial=True, peepholes=True, clip=0.5)
    ort_case("gru_clip_reset_before", "GRU", I=3, H=4, T=5, B=2, initial=True,
             linear_before_reset=0, clip=0.4)
    ort_case("gru_clip_reset_after_reverse", "GRU", I=3, H=4, T=5, B=2, direction="reverse",
             lengths=[3, 5], initial=True, linear_before_reset=1, clip=0.4)
    ort_case("rnn_clip", "RNN", I=3, H=4, T=5, B=2, initial=True, clip=0.3)
    import_all()


if __name__ == "__main__":
    main()
