//! Weights in Keras, TensorFlow 1 and ONNX layouts, converted by
//! `rnn_runtime::layout`, against those frameworks' own outputs. The cases of
//! `data/layouts/` are written by `data/layouts/make_reference.py` (Keras 3,
//! `tf.compat.v1.nn.dynamic_rnn`, ONNX Runtime), each with its weights as
//! the framework stores them, its inputs and the framework's outputs in this
//! project's convention; `cases.json` gives each case's network text.

use std::path::{Path, PathBuf};

use rnn_dsl::{interp, weights, SourceFile};
use rnn_runtime::layout::{self, Layout};
use rnn_runtime::{Model, Tensor, TensorMap};

include!("support/compare.rs");

rnn_macros::rnn! {
    network KerasBidirectionalLstm { input x: [3]; layer l = lstm(hidden = 4, bidirectional); unroll dynamic; }
    network KerasStackedGru { input x: [5]; layer l = gru(hidden = 4, layers = 2); unroll static 5; }
    network Tf1PeepholeLstm { input x: [4]; layer l = lstm(hidden = 5, peepholes, cell_clip = 0.5); unroll dynamic by 3; }
    network OnnxBidirLstm { input x: [3]; layer l = lstm(hidden = 5, peepholes, bidirectional); unroll dynamic; }
    network OnnxRnnReverse { input x: [3]; layer l = rnn_tanh(hidden = 4, reverse); unroll static 5; }
}

/// As the conformance cases: `|actual - expected| <= 1e-5 + 1e-4 |expected|`.
const TOLERANCE: (f32, f32) = (1e-5, 1e-4);

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/layouts")
}

fn cases() -> Vec<serde_json::Value> {
    let path = data_dir().join("cases.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|error| panic!("{}: {error}", path.display()));
    serde_json::from_str(&text).expect("cases.json is a JSON list")
}

fn load(case: &serde_json::Value) -> TensorMap {
    let path = data_dir().join(case["file"].as_str().expect("file"));
    TensorMap::load(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

fn layout_of(case: &serde_json::Value) -> Layout {
    match case["layout"].as_str().expect("layout") {
        "tensorflow1" => Layout::TensorFlow1 {
            forget_bias: case["forget_bias"].as_f64().unwrap_or(0.0) as f32,
        },
        name => Layout::parse(name).unwrap_or_else(|| panic!("unknown layout {name}")),
    }
}

/// A case's inputs: `x`, `seq_len`, and the initial states it has.
fn inputs(tensors: &TensorMap) -> TensorMap {
    let mut inputs = TensorMap::new();
    for name in ["x", "h0", "c0"] {
        if let Ok(array) = tensors.f32(name) {
            inputs.insert_f32(name, array);
        }
    }
    let Some(Tensor::I64(lengths)) = tensors.get("seq_len") else {
        panic!("`seq_len` is int64");
    };
    inputs.insert_i64("seq_len", lengths.clone());
    inputs
}

/// The outputs the case has, compared; the worst error and the failures.
fn compare_outputs(label: &str, tensors: &TensorMap, actual: &TensorMap) -> (f32, Vec<String>) {
    let mut worst = 0.0f32;
    let mut failures = Vec::new();
    for name in ["y", "h_n", "c_n"]
        .into_iter()
        .filter(|name| tensors.contains(name))
    {
        let expected = tensors.f32(name).expect("float32");
        let (error, failure) = match actual.f32(name) {
            Ok(actual) => compare(name, &actual, &expected, TOLERANCE),
            Err(error) => (f32::INFINITY, Some(format!("no `{name}`: {error}"))),
        };
        worst = worst.max(error);
        failures.extend(failure.map(|failure| format!("{label}: {failure}")));
    }
    (worst, failures)
}

#[test]
fn converted_weights_give_the_frameworks_outputs() {
    let mut failures = Vec::new();
    let cases = cases();
    assert!(
        cases.len() >= 14,
        "data/layouts/cases.json lists {} cases",
        cases.len()
    );
    println!("{:<28} {:<12} {:>10}", "case", "layout", "max error");
    for case in &cases {
        let name = case["name"].as_str().expect("name");
        let tensors = load(case);
        let text = case["model"].as_str().expect("model");
        let compiled = rnn_dsl::compile(SourceFile::new("case.rnn", text)).expect("compiles");
        let network = compiled.network(None).expect("one network");
        let layers = weights::recurrent_layers(network);
        let converted = layout::to_pytorch(&tensors, &layers, layout_of(case))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let outputs = interp::run(network, &converted, &inputs(&tensors))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let (error, case_failures) = compare_outputs(name, &tensors, &outputs);
        println!(
            "{name:<28} {:<12} {error:>10.3e}",
            case["layout"].as_str().unwrap()
        );
        failures.extend(case_failures);
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// Generated models read another layout through `from_weights_in`, in
/// four unroll modes.
#[test]
fn generated_models_load_other_layouts() {
    type Build = fn(&TensorMap, Layout) -> Result<Box<dyn Model>, rnn_runtime::RnnError>;
    let generated: [(&str, Build); 5] = [
        ("keras_bidirectional_lstm", |w, l| {
            Ok(Box::new(KerasBidirectionalLstm::from_weights_in(w, l)?))
        }),
        ("keras_stacked_gru", |w, l| {
            Ok(Box::new(KerasStackedGru::from_weights_in(w, l)?))
        }),
        ("tf1_lstm_peephole_clip", |w, l| {
            Ok(Box::new(Tf1PeepholeLstm::from_weights_in(w, l)?))
        }),
        ("onnx_lstm_bidir_peepholes", |w, l| {
            Ok(Box::new(OnnxBidirLstm::from_weights_in(w, l)?))
        }),
        ("onnx_rnn_reverse", |w, l| {
            Ok(Box::new(OnnxRnnReverse::from_weights_in(w, l)?))
        }),
    ];
    let cases = cases();
    let mut failures = Vec::new();
    for (name, build) in generated {
        let case = cases
            .iter()
            .find(|case| case["name"] == name)
            .unwrap_or_else(|| panic!("case {name}"));
        let tensors = load(case);
        let model =
            build(&tensors, layout_of(case)).unwrap_or_else(|error| panic!("{name}: {error}"));
        let outputs = model.run(&inputs(&tensors)).expect("runs");
        let (error, case_failures) = compare_outputs(name, &tensors, &outputs);
        println!("{name:<28} generated {error:>10.3e}");
        failures.extend(case_failures);
        // Read as PyTorch's, the same file is refused with the tensor named.
        let error = match build(&tensors, Layout::PyTorch) {
            Ok(_) => panic!("{name}: loaded as PyTorch's layout"),
            Err(error) => error.to_string(),
        };
        assert!(error.contains("weight_ih_l0"), "{name}: {error}");
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The file says one thing, the network another: refused, naming the tensor.
#[test]
fn a_layout_the_network_cannot_honour_is_refused() {
    let cases = cases();
    let case = |name: &str| {
        cases
            .iter()
            .find(|case| case["name"] == name)
            .expect("case")
    };
    // Keras GRU with reset_after=True loaded into a reset-before GRU.
    let keras = load(case("keras_gru_reset_after"));
    let text = "network N { input x: [5]; layer l = gru(hidden = 4, reset_after = false); unroll dynamic; }";
    let compiled = rnn_dsl::compile(SourceFile::new("n.rnn", text)).unwrap();
    let layers = weights::recurrent_layers(compiled.network(None).unwrap());
    let error = layout::to_pytorch(&keras, &layers, Layout::Keras)
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("tensor `bias_l0`") && error.contains("reset_after"),
        "{error}"
    );
    // TensorFlow 1 peepholes into an LSTM without them.
    let tf1 = load(case("tf1_lstm_peephole_clip"));
    let text = "network N { input x: [4]; layer l = lstm(hidden = 5); unroll dynamic; }";
    let compiled = rnn_dsl::compile(SourceFile::new("n.rnn", text)).unwrap();
    let layers = weights::recurrent_layers(compiled.network(None).unwrap());
    let error = layout::to_pytorch(&tf1, &layers, Layout::TensorFlow1 { forget_bias: 1.0 })
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("w_i_diag_l0") && error.contains("peepholes"),
        "{error}"
    );
}
