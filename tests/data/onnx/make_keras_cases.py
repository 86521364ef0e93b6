"""Writes `keras/*`: Keras 2 (tf_keras) models converted to ONNX by tf2onnx,
with Keras's own outputs as the expected ones (ONNX Runtime's are checked
against them here), laid out as `make_cases.py`'s cases.

tf2onnx turns a Keras LSTM, and a GRU with reset_after=True, into one ONNX
node plus glue: the input
transposed to time-major, zero initial states built with Shape, Gather,
Cast, Slice, Concat and Expand, a Bidirectional layer's two directions
sliced out of Y and concatenated along the features, Y_h squeezed. A GRU with reset_after=False, a SimpleRNN and a layer after
Masking it leaves as a Loop over the cell's equations, and go_backwards
reverses the input with ReverseSequence; those go to `refused/`, which the
importer must refuse.

tf2onnx's files differ from run to run (names, order); the tests read the
committed ones, and a rerun rewrites each case's model.rnn to match.

Rerun (from the repository root):

    python3 -m venv /work/tf-venv
    /work/tf-venv/bin/pip install tensorflow-cpu==2.21.0 tf_keras==2.21.0 tf2onnx==1.17.0 \\
        onnx==1.23.2 onnxruntime numpy
    /work/tf-venv/bin/python tests/data/onnx/make_keras_cases.py
"""

import os

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
os.environ["TF_USE_LEGACY_KERAS"] = "1"

import numpy as np
import onnxruntime as ort
import tensorflow as tf
import tf2onnx
import tf_keras as keras

from make_cases import HERE, import_all, write_case


def keras_case(name, build, I, T=6, B=3, folder="keras"):
    np.random.seed(len(name))
    tf.random.set_seed(len(name))
    inp = keras.Input(shape=(None, I), name="x")
    outputs = build(inp)
    model = keras.Model(inp, outputs)
    # Biases are zeros when built: draw them so that a bias mistake shows.
    for weight in model.weights:
        weight.assign(np.random.uniform(-0.5, 0.5, weight.shape).astype(np.float32))
    x = np.random.uniform(-1, 1, (B, T, I)).astype(np.float32)
    expected = model(x)
    expected = [np.asarray(e) for e in (expected if isinstance(expected, list) else [expected])]
    spec = (tf.TensorSpec((None, None, I), tf.float32, name="x"),)
    onnx_model, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    sess = ort.InferenceSession(onnx_model.SerializeToString(),
                                providers=["CPUExecutionProvider"])
    for a, b in zip(sess.run(None, {"x": x}), expected):
        assert a.shape == b.shape and np.abs(a - b).max() < 1e-5, (name, np.abs(a - b).max())
    write_case(os.path.join(HERE, folder, name), onnx_model, [x], expected)
    print(name, [n.op_type for n in onnx_model.graph.node])


def main():
    keras_case("keras_bidirectional_lstm_then_gru", lambda x: keras.layers.GRU(
        5, return_sequences=True, reset_after=True)(keras.layers.Bidirectional(
            keras.layers.LSTM(4, return_sequences=True))(x)), I=3)
    keras_case("keras_stacked_lstm", lambda x: keras.layers.LSTM(4, return_sequences=True)(
        keras.layers.LSTM(4, return_sequences=True)(x)), I=2)
    # tf2onnx 1.17 leaves these as a Loop of the cell's equations: the importer refuses them
    # (tests/onnx_import.rs checks the message).
    keras_case("keras_gru_reset_before", lambda x: keras.layers.GRU(
        4, return_sequences=True, reset_after=False)(x), I=2, folder="refused")
    keras_case("keras_simple_rnn", lambda x: keras.layers.SimpleRNN(
        3, return_sequences=True)(x), I=2, folder="refused")
    keras_case("keras_lstm_masking", lambda x: keras.layers.LSTM(4, return_sequences=True)(
        keras.layers.Masking(0.0)(x)), I=3, folder="refused")
    # go_backwards: the input reversed in time (ReverseSequence), the outputs left reversed.
    keras_case("keras_lstm_go_backwards", lambda x: keras.layers.LSTM(
        4, return_sequences=True, go_backwards=True)(x), I=3, folder="refused")

    def lstm_states(x):
        y, h, c = keras.layers.LSTM(4, return_sequences=True, return_state=True)(x)
        return [y, h, c]
    keras_case("keras_lstm_return_state", lstm_states, I=3)
    keras_case("keras_tagger_bidirectional_gru_dense", lambda x: keras.layers.Dense(5)(
        keras.layers.Bidirectional(keras.layers.GRU(4, return_sequences=True))(x)), I=3)
    import_all()


if __name__ == "__main__":
    main()
