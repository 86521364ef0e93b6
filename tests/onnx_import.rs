//! `rnnc import` against ONNX's own backend node tests of LSTM, GRU and RNN
//! and against models exported by PyTorch's `torch.onnx.export` (both
//! exporters: TorchScript, and dynamo with its weights in an external file): each
//! `model.onnx` is imported, then run through the interpreter and through
//! the code generated from the imported `.rnn` text, and the outputs are
//! compared with the expected ones the case holds (ONNX's reference
//! implementation for node tests, PyTorch's own outputs for exports, ONNX
//! Runtime's for the nodes built with random weights in `built/`, Keras's
//! own for Keras models converted by tf2onnx in `keras/`).
//! `data/onnx/make_cases.py` and `make_keras_cases.py` write the cases; the `.rnn` files beside them
//! are `rnnc import`'s output, and `imported_text_is_committed` keeps them so.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rnn_dsl::import::{self, proto, proto::Values, Imported};
use rnn_dsl::{interp, SourceFile};
use rnn_runtime::{Model, RnnError, TensorMap};

include!("support/compare.rs");

rnn_macros::rnn!(file = "data/onnx/node/test_gru_batchwise/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_gru_bidirectional/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_gru_defaults/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_gru_reverse/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_gru_seq_length/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_gru_with_initial_bias/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_lstm_batchwise/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_lstm_bidirectional/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_lstm_defaults/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_lstm_reverse/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_lstm_with_initial_bias/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_lstm_with_peepholes/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_rnn_seq_length/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_simple_rnn_batchwise/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_simple_rnn_bidirectional/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_simple_rnn_defaults/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_simple_rnn_reverse/model.rnn");
rnn_macros::rnn!(file = "data/onnx/node/test_simple_rnn_with_initial_bias/model.rnn");
rnn_macros::rnn!(file = "data/onnx/built/gru_clip_reset_after_reverse/model.rnn");
rnn_macros::rnn!(file = "data/onnx/built/gru_clip_reset_before/model.rnn");
rnn_macros::rnn!(file = "data/onnx/built/gru_reset_after_bidir_batch_major/model.rnn");
rnn_macros::rnn!(file = "data/onnx/built/gru_reset_before_reverse/model.rnn");
rnn_macros::rnn!(file = "data/onnx/built/lstm_bidir_peepholes_lengths/model.rnn");
rnn_macros::rnn!(file = "data/onnx/built/lstm_clip_lengths/model.rnn");
rnn_macros::rnn!(file = "data/onnx/built/lstm_clip_peepholes_bidir/model.rnn");
rnn_macros::rnn!(file = "data/onnx/built/lstm_peepholes_reverse/model.rnn");
rnn_macros::rnn!(file = "data/onnx/built/lstm_reverse_batch_major/model.rnn");
rnn_macros::rnn!(file = "data/onnx/built/rnn_clip/model.rnn");
rnn_macros::rnn!(file = "data/onnx/built/rnn_relu_bidir_lengths/model.rnn");
rnn_macros::rnn!(file = "data/onnx/export/dynamo_gru_2layers_static/model.rnn");
rnn_macros::rnn!(file = "data/onnx/export/dynamo_lstm_bidir_2layers/model.rnn");
rnn_macros::rnn!(file = "data/onnx/export/torch_gru_bidir_2layers_batch_first/model.rnn");
rnn_macros::rnn!(file = "data/onnx/export/torch_lstm_bidir_2layers/model.rnn");
rnn_macros::rnn!(file = "data/onnx/export/torch_rnn_relu_2layers/model.rnn");
rnn_macros::rnn!(file = "data/onnx/export/torch_tagger_lstm_linear/model.rnn");
rnn_macros::rnn!(file = "data/onnx/keras/keras_bidirectional_lstm_then_gru/model.rnn");
rnn_macros::rnn!(file = "data/onnx/keras/keras_lstm_return_state/model.rnn");
rnn_macros::rnn!(file = "data/onnx/keras/keras_stacked_lstm/model.rnn");
rnn_macros::rnn!(file = "data/onnx/keras/keras_tagger_bidirectional_gru_dense/model.rnn");

/// The conformance README's tolerance: `|actual - expected| <= 1e-5 + 1e-4 |expected|`.
const TOLERANCE: (f32, f32) = (1e-5, 1e-4);

type Build = fn(&TensorMap) -> Result<Box<dyn Model>, RnnError>;

/// Every case, with its generated model.
const CASES: &[(&str, Build)] = &[
    ("node/test_gru_batchwise", |w| {
        Ok(Box::new(TestGruBatchwise::from_weights(w)?))
    }),
    ("node/test_gru_bidirectional", |w| {
        Ok(Box::new(TestGruBidirectional::from_weights(w)?))
    }),
    ("node/test_gru_defaults", |w| {
        Ok(Box::new(TestGruDefaults::from_weights(w)?))
    }),
    ("node/test_gru_reverse", |w| {
        Ok(Box::new(TestGruReverse::from_weights(w)?))
    }),
    ("node/test_gru_seq_length", |w| {
        Ok(Box::new(TestGruSeqLength::from_weights(w)?))
    }),
    ("node/test_gru_with_initial_bias", |w| {
        Ok(Box::new(TestGruWithInitialBias::from_weights(w)?))
    }),
    ("node/test_lstm_batchwise", |w| {
        Ok(Box::new(TestLstmBatchwise::from_weights(w)?))
    }),
    ("node/test_lstm_bidirectional", |w| {
        Ok(Box::new(TestLstmBidirectional::from_weights(w)?))
    }),
    ("node/test_lstm_defaults", |w| {
        Ok(Box::new(TestLstmDefaults::from_weights(w)?))
    }),
    ("node/test_lstm_reverse", |w| {
        Ok(Box::new(TestLstmReverse::from_weights(w)?))
    }),
    ("node/test_lstm_with_initial_bias", |w| {
        Ok(Box::new(TestLstmWithInitialBias::from_weights(w)?))
    }),
    ("node/test_lstm_with_peepholes", |w| {
        Ok(Box::new(TestLstmWithPeepholes::from_weights(w)?))
    }),
    ("node/test_rnn_seq_length", |w| {
        Ok(Box::new(TestRnnSeqLength::from_weights(w)?))
    }),
    ("node/test_simple_rnn_batchwise", |w| {
        Ok(Box::new(TestSimpleRnnBatchwise::from_weights(w)?))
    }),
    ("node/test_simple_rnn_bidirectional", |w| {
        Ok(Box::new(TestSimpleRnnBidirectional::from_weights(w)?))
    }),
    ("node/test_simple_rnn_defaults", |w| {
        Ok(Box::new(TestSimpleRnnDefaults::from_weights(w)?))
    }),
    ("node/test_simple_rnn_reverse", |w| {
        Ok(Box::new(TestSimpleRnnReverse::from_weights(w)?))
    }),
    ("node/test_simple_rnn_with_initial_bias", |w| {
        Ok(Box::new(TestSimpleRnnWithInitialBias::from_weights(w)?))
    }),
    ("built/gru_clip_reset_after_reverse", |w| {
        Ok(Box::new(GruClipResetAfterReverse::from_weights(w)?))
    }),
    ("built/gru_clip_reset_before", |w| {
        Ok(Box::new(GruClipResetBefore::from_weights(w)?))
    }),
    ("built/gru_reset_after_bidir_batch_major", |w| {
        Ok(Box::new(GruResetAfterBidirBatchMajor::from_weights(w)?))
    }),
    ("built/gru_reset_before_reverse", |w| {
        Ok(Box::new(GruResetBeforeReverse::from_weights(w)?))
    }),
    ("built/lstm_bidir_peepholes_lengths", |w| {
        Ok(Box::new(LstmBidirPeepholesLengths::from_weights(w)?))
    }),
    ("built/lstm_clip_lengths", |w| {
        Ok(Box::new(LstmClipLengths::from_weights(w)?))
    }),
    ("built/lstm_clip_peepholes_bidir", |w| {
        Ok(Box::new(LstmClipPeepholesBidir::from_weights(w)?))
    }),
    ("built/lstm_peepholes_reverse", |w| {
        Ok(Box::new(LstmPeepholesReverse::from_weights(w)?))
    }),
    ("built/lstm_reverse_batch_major", |w| {
        Ok(Box::new(LstmReverseBatchMajor::from_weights(w)?))
    }),
    ("built/rnn_clip", |w| {
        Ok(Box::new(RnnClip::from_weights(w)?))
    }),
    ("built/rnn_relu_bidir_lengths", |w| {
        Ok(Box::new(RnnReluBidirLengths::from_weights(w)?))
    }),
    ("export/dynamo_gru_2layers_static", |w| {
        Ok(Box::new(DynamoGru2layersStatic::from_weights(w)?))
    }),
    ("export/dynamo_lstm_bidir_2layers", |w| {
        Ok(Box::new(DynamoLstmBidir2layers::from_weights(w)?))
    }),
    ("export/torch_gru_bidir_2layers_batch_first", |w| {
        Ok(Box::new(TorchGruBidir2layersBatchFirst::from_weights(w)?))
    }),
    ("export/torch_lstm_bidir_2layers", |w| {
        Ok(Box::new(TorchLstmBidir2layers::from_weights(w)?))
    }),
    ("export/torch_rnn_relu_2layers", |w| {
        Ok(Box::new(TorchRnnRelu2layers::from_weights(w)?))
    }),
    ("export/torch_tagger_lstm_linear", |w| {
        Ok(Box::new(TorchTaggerLstmLinear::from_weights(w)?))
    }),
    ("keras/keras_bidirectional_lstm_then_gru", |w| {
        Ok(Box::new(KerasBidirectionalLstmThenGru::from_weights(w)?))
    }),
    ("keras/keras_lstm_return_state", |w| {
        Ok(Box::new(KerasLstmReturnState::from_weights(w)?))
    }),
    ("keras/keras_stacked_lstm", |w| {
        Ok(Box::new(KerasStackedLstm::from_weights(w)?))
    }),
    ("keras/keras_tagger_bidirectional_gru_dense", |w| {
        Ok(Box::new(KerasTaggerBidirectionalGruDense::from_weights(w)?))
    }),
];

fn case_dir(case: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/onnx")
        .join(case)
}

/// A case's files: the model, its inputs and its expected outputs by name.
struct Case {
    dir: PathBuf,
    model: Vec<u8>,
    inputs: BTreeMap<String, Values>,
    outputs: BTreeMap<String, Values>,
    text: String,
}

fn read_case(case: &str) -> Case {
    let dir = case_dir(case);
    let read = |path: PathBuf| {
        std::fs::read(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
    };
    let mut inputs = BTreeMap::new();
    let mut outputs = BTreeMap::new();
    let data = dir.join("test_data_set_0");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&data)
        .unwrap_or_else(|error| panic!("{}: {error}", data.display()))
        .map(|entry| entry.expect("entry").path())
        .collect();
    files.sort();
    for path in files {
        let tensor = proto::tensor(&read(path.clone())).expect("a TensorProto");
        let values = tensor.values().expect("values");
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        if file.starts_with("input_") {
            inputs.insert(tensor.name, values);
        } else {
            outputs.insert(tensor.name, values);
        }
    }
    let text = String::from_utf8(read(dir.join("model.rnn"))).expect("UTF-8");
    Case {
        model: read(dir.join("model.onnx")),
        dir,
        inputs,
        outputs,
        text,
    }
}

/// The network's name in the committed text.
fn network_name(text: &str) -> &str {
    let rest = &text[text.find("network ").expect("a network") + "network ".len()..];
    rest.split_whitespace().next().expect("a name")
}

fn import_case(case: &Case) -> Imported {
    // PyTorch's dynamo exporter keeps weights in `model.onnx.data`, read from the case's folder.
    import::onnx_in(
        &case.model,
        &case.inputs,
        network_name(&case.text),
        &case.dir,
    )
    .unwrap_or_else(|error| panic!("{error}"))
}

/// The network's inputs from the case's ONNX inputs.
fn network_inputs(imported: &Imported, case: &Case) -> TensorMap {
    let mut inputs = TensorMap::new();
    for binding in &imported.inputs {
        match &case.inputs[&binding.onnx] {
            Values::F32(array) => inputs.insert_f32(
                binding.tensor.clone(),
                binding.to_network(array.clone()).expect("fits"),
            ),
            Values::I64(array) => inputs.insert_i64(
                binding.tensor.clone(),
                binding.to_network(array.clone()).expect("fits"),
            ),
        }
    }
    inputs
}

/// The outputs compared with the expected ONNX outputs: the worst error and the failures.
fn compare_outputs(
    label: &str,
    imported: &Imported,
    case: &Case,
    actual: &TensorMap,
) -> (f32, Vec<String>) {
    let mut worst = 0.0f32;
    let mut failures = Vec::new();
    assert_eq!(
        imported.outputs.len(),
        case.outputs.len(),
        "{label}: every expected output is bound"
    );
    for binding in &imported.outputs {
        let Values::F32(expected) = &case.outputs[&binding.onnx] else {
            panic!("{label}: {} is float", binding.onnx);
        };
        let ours = actual
            .f32(&binding.tensor)
            .unwrap_or_else(|error| panic!("{label}: {error}"));
        let (error, failure) = match binding.to_onnx(ours) {
            Ok(ours) => compare(&binding.onnx, &ours, expected, TOLERANCE),
            Err(message) => (f32::INFINITY, Some(message)),
        };
        worst = worst.max(error);
        failures.extend(failure.map(|failure| format!("{label}: {failure}")));
    }
    (worst, failures)
}

#[test]
fn imported_models_match_onnx_and_pytorch() {
    let mut failures = Vec::new();
    println!("{:<48} {:>12} {:>12}", "case", "interpreter", "generated");
    for (name, build) in CASES {
        let case = read_case(name);
        let imported = import_case(&case);
        let inputs = network_inputs(&imported, &case);
        let compiled = rnn_dsl::compile(SourceFile::new("imported.rnn", imported.text.as_str()))
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let network = compiled.network(None).expect("one network");
        let interpreted = interp::run(network, &imported.weights, &inputs)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let (interp_error, interp_failures) = compare_outputs(
            &format!("{name} (interpreter)"),
            &imported,
            &case,
            &interpreted,
        );
        let model = build(&imported.weights).unwrap_or_else(|error| panic!("{name}: {error}"));
        let generated = model
            .run(&inputs)
            .unwrap_or_else(|error| panic!("{name}: {error}"));
        let (generated_error, generated_failures) =
            compare_outputs(&format!("{name} (generated)"), &imported, &case, &generated);
        println!("{name:<48} {interp_error:>12.3e} {generated_error:>12.3e}");
        failures.extend(interp_failures);
        failures.extend(generated_failures);
    }
    assert!(CASES.len() >= 39, "{} cases", CASES.len());
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The `.rnn` files the generated models come from are what `rnnc import`
/// writes today.
#[test]
fn imported_text_is_committed() {
    for (name, _) in CASES {
        let case = read_case(name);
        assert_eq!(
            import_case(&case).text,
            case.text,
            "{name}: rerun `rnnc import` (see data/onnx/make_cases.py)"
        );
    }
}

/// A case's model, decoded, for changing into one the importer refuses.
fn decoded(case: &str) -> proto::ModelProto {
    proto::model(&read_case(case).model).expect("decodes")
}

/// The importer's error on `model`, which it must refuse.
fn refusal(model: &proto::ModelProto) -> String {
    use prost::Message;
    match import::onnx(&model.encode_to_vec(), &BTreeMap::new(), "M") {
        Ok(imported) => panic!("imported:\n{}", imported.text),
        Err(error) => error.to_string(),
    }
}

fn with_attribute(case: &str, attribute: proto::AttributeProto) -> proto::ModelProto {
    let mut model = decoded(case);
    let graph = model.graph.as_mut().expect("graph");
    graph.node[0].attribute.push(attribute);
    model
}

fn float_attribute(name: &str, value: f32) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.into(),
        f: value,
        r#type: 1,
        ..Default::default()
    }
}

fn int_attribute(name: &str, value: i64) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.into(),
        i: value,
        r#type: 2,
        ..Default::default()
    }
}

fn strings_attribute(name: &str, values: &[&str]) -> proto::AttributeProto {
    proto::AttributeProto {
        name: name.into(),
        strings: values
            .iter()
            .map(|value| value.as_bytes().to_vec())
            .collect(),
        r#type: 8,
        ..Default::default()
    }
}

/// Every attribute the built-in cells cannot honour exactly is refused,
/// naming the node, the attribute and its value.
#[test]
fn attributes_the_cells_cannot_honour_are_refused() {
    let lstm = "built/lstm_bidir_peepholes_lengths";
    let node = "LSTM node \"lstm_bidir_peepholes_lengths\"";
    let cases = [
        (float_attribute("clip", -1.0), "attribute `clip` = -1"),
        (
            int_attribute("input_forget", 1),
            "attribute `input_forget` = 1",
        ),
        (
            strings_attribute(
                "activations",
                &["Sigmoid", "Tanh", "Relu", "Sigmoid", "Tanh", "Tanh"],
            ),
            "attribute `activations` = [\"Sigmoid\", \"Tanh\", \"Relu\"",
        ),
        (
            proto::AttributeProto {
                name: "activation_alpha".into(),
                floats: vec![0.5],
                r#type: 6,
                ..Default::default()
            },
            "attribute `activation_alpha` = [0.5]",
        ),
        (int_attribute("layout", 2), "attribute `layout` = 2"),
        (int_attribute("shape_hint", 1), "attribute `shape_hint` = 1"),
    ];
    for (attribute, expected) in cases {
        let error = refusal(&with_attribute(lstm, attribute));
        assert!(
            error.starts_with(node) && error.contains(expected),
            "{error}"
        );
    }
    // The direction replaced by one that does not exist.
    let mut model = decoded(lstm);
    let graph = model.graph.as_mut().unwrap();
    for attribute in &mut graph.node[0].attribute {
        if attribute.name == "direction" {
            attribute.s = b"sideways".to_vec();
        }
    }
    let error = refusal(&model);
    assert!(error.contains("`direction` = \"sideways\""), "{error}");
}

/// An operator around the recurrence that is not layout glue is refused by
/// name; so is an opset the importer does not know, and a weight that is
/// an input without a value.
#[test]
fn graphs_the_importer_cannot_follow_are_refused() {
    // An operator after the LSTM that is neither glue nor a linear head.
    let after_y = |op_type: &str, inputs: &[&str]| {
        let mut model = decoded("built/lstm_peepholes_reverse");
        let graph = model.graph.as_mut().unwrap();
        graph.node.push(proto::NodeProto {
            input: inputs.iter().map(|name| name.to_string()).collect(),
            output: vec!["Z".into()],
            name: "after".into(),
            op_type: op_type.into(),
            ..Default::default()
        });
        refusal(&model)
    };
    let error = after_y("Softmax", &["Y"]);
    assert!(
        error.starts_with("Softmax node \"after\"") && error.contains("does not import Softmax"),
        "{error}"
    );
    // A MatMul that is not a head: by a value computed at run time.
    let error = after_y("MatMul", &["Y", "Y"]);
    assert!(
        error.starts_with("MatMul node \"after\"") && error.contains("not a constant matrix"),
        "{error}"
    );
    // The LSTM's sequence wanted as an output beside the head on it.
    let mut model = decoded("export/torch_tagger_lstm_linear");
    let graph = model.graph.as_mut().unwrap();
    let y = graph
        .node
        .iter()
        .find(|node| node.op_type == "LSTM")
        .unwrap()
        .output[0]
        .clone();
    graph.output.push(proto::ValueInfoProto {
        name: y,
        r#type: None,
    });
    let error = refusal(&model);
    assert!(
        error.contains("the network's one output is the head's"),
        "{error}"
    );
    // An opset before the recurrent operators' version 7, and one after the newest known.
    for version in [5, 99] {
        let mut model = decoded("built/lstm_peepholes_reverse");
        model.opset_import[0].version = version;
        let error = refusal(&model);
        assert!(error.contains(&format!("opset {version}")), "{error}");
    }
    // The node tests' W fed as an input, but no value given for it.
    let case = read_case("node/test_lstm_defaults");
    let error = import::onnx(&case.model, &BTreeMap::new(), "M")
        .unwrap_err()
        .to_string();
    assert!(
        error.contains("W `W`") && error.contains("--tensor"),
        "{error}"
    );
    // A second recurrent node reading the graph's input, not the first's output.
    let mut model = decoded("built/lstm_peepholes_reverse");
    let graph = model.graph.as_mut().unwrap();
    let mut second = graph.node[0].clone();
    second.name = "second".into();
    second.output = vec!["Y2".into()];
    graph.node.push(second);
    let error = refusal(&model);
    assert!(error.starts_with("LSTM node \"second\""), "{error}");
    // A name that cannot name a network.
    let case = read_case("built/lstm_peepholes_reverse");
    let error = import::onnx(&case.model, &BTreeMap::new(), "2fast")
        .unwrap_err()
        .to_string();
    assert!(error.contains("`2fast` cannot name a network"), "{error}");
}

/// Files that are not ONNX, or are cut short, are errors, never panics.
#[test]
fn broken_files_are_errors() {
    let model = read_case("export/torch_lstm_bidir_2layers").model;
    let none = BTreeMap::new();
    for cut in [1, 7, model.len() / 3, model.len() / 2, model.len() - 1] {
        assert!(
            import::onnx(&model[..cut], &none, "M").is_err(),
            "cut at {cut}"
        );
    }
    let error = import::onnx(b"network N { }", &none, "M")
        .unwrap_err()
        .to_string();
    assert!(error.starts_with("not an ONNX model"), "{error}");
    let error = import::onnx(b"", &none, "M").unwrap_err().to_string();
    assert!(error.contains("no graph"), "{error}");
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(300))]

    /// Bytes of a real model changed at random never make the importer
    /// panic; whatever it imports compiles.
    #[test]
    fn corrupted_models_never_panic(
        edits in proptest::collection::vec((0usize..1_000_000, proptest::prelude::any::<u8>()), 1..6)
    ) {
        let mut model = read_case("export/torch_gru_bidir_2layers_batch_first").model;
        for (at, byte) in edits {
            let at = at % model.len();
            model[at] = byte;
        }
        if let Ok(imported) = import::onnx(&model, &BTreeMap::new(), "M") {
            rnn_dsl::compile(SourceFile::new("m.rnn", imported.text.as_str())).expect("compiles");
        }
    }
}

/// Keras layers that tf2onnx writes as a `Loop` over the cell's equations,
/// or on an input reversed in time (`go_backwards`), are refused with the
/// node named and what to do instead.
#[test]
fn recurrences_written_as_loops_are_refused() {
    for case in [
        "refused/keras_gru_reset_before",
        "refused/keras_simple_rnn",
        "refused/keras_lstm_masking",
    ] {
        let model = std::fs::read(case_dir(case).join("model.onnx")).expect("model");
        let error = import::onnx(&model, &BTreeMap::new(), "M")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("Loop node") && error.contains("rnnc convert --from keras"),
            "{case}: {error}"
        );
    }
    let model = std::fs::read(case_dir("refused/keras_lstm_go_backwards").join("model.onnx"))
        .expect("model");
    let error = import::onnx(&model, &BTreeMap::new(), "M")
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with("ReverseSequence node") && error.contains("reversed order"),
        "{error}"
    );
}

/// A model whose weights are in an external file is read with the file's
/// directory, and refused without it.
#[test]
fn external_data_needs_the_models_directory() {
    let case = read_case("export/dynamo_lstm_bidir_2layers");
    let error = import::onnx(&case.model, &BTreeMap::new(), "M")
        .unwrap_err()
        .to_string();
    assert!(error.contains("external file"), "{error}");
    // A location outside the model's directory is refused, as ONNX's checker refuses it.
    let mut model = decoded("export/dynamo_lstm_bidir_2layers");
    for tensor in &mut model.graph.as_mut().unwrap().initializer {
        for entry in &mut tensor.external_data {
            if entry.key == "location" {
                entry.value = "../../../../Cargo.toml".into();
            }
        }
    }
    use prost::Message;
    let error = import::onnx_in(&model.encode_to_vec(), &BTreeMap::new(), "M", &case.dir)
        .unwrap_err()
        .to_string();
    assert!(error.contains("not a file beside the model"), "{error}");
}

/// Graphs built to reach the corners of the importer (found by review):
/// each is an error naming the problem, never a panic or a model that
/// differs from the graph.
mod corners {
    use super::*;
    use prost::Message;
    use proto::{
        AttributeProto, Dimension, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
        TensorProto, TensorShapeProto, TensorTypeProto, TypeProto, ValueInfoProto,
    };

    fn attribute(name: &str, r#type: i32) -> AttributeProto {
        AttributeProto {
            name: name.into(),
            r#type,
            ..Default::default()
        }
    }

    fn ints(name: &str, values: &[i64]) -> AttributeProto {
        AttributeProto {
            ints: values.to_vec(),
            ..attribute(name, 7)
        }
    }

    fn int(name: &str, value: i64) -> AttributeProto {
        AttributeProto {
            i: value,
            ..attribute(name, 2)
        }
    }

    fn text(name: &str, value: &str) -> AttributeProto {
        AttributeProto {
            s: value.as_bytes().to_vec(),
            ..attribute(name, 3)
        }
    }

    fn node(
        op: &str,
        inputs: &[&str],
        outputs: &[&str],
        attributes: Vec<AttributeProto>,
    ) -> NodeProto {
        NodeProto {
            input: inputs.iter().map(|name| name.to_string()).collect(),
            output: outputs.iter().map(|name| name.to_string()).collect(),
            name: format!("{op}_{}", outputs[0]),
            op_type: op.into(),
            attribute: attributes,
            domain: String::new(),
        }
    }

    fn floats(name: &str, dims: &[i64]) -> TensorProto {
        let count: i64 = dims.iter().product();
        TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: 1,
            float_data: (0..count).map(|k| (k as f32 * 0.37).sin() * 0.3).collect(),
            ..Default::default()
        }
    }

    fn numbers(name: &str, values: &[i64]) -> TensorProto {
        TensorProto {
            name: name.into(),
            dims: vec![values.len() as i64],
            data_type: 7,
            int64_data: values.to_vec(),
            ..Default::default()
        }
    }

    fn input(name: &str, dims: &[Option<i64>]) -> ValueInfoProto {
        let dim = dims
            .iter()
            .map(|&size| Dimension {
                dim_value: size,
                dim_param: size.is_none().then(|| "n".to_string()),
            })
            .collect();
        ValueInfoProto {
            name: name.into(),
            r#type: Some(TypeProto {
                tensor_type: Some(TensorTypeProto {
                    elem_type: 1,
                    shape: Some(TensorShapeProto { dim }),
                }),
            }),
        }
    }

    fn model(
        nodes: Vec<NodeProto>,
        initializer: Vec<TensorProto>,
        inputs: Vec<ValueInfoProto>,
        outputs: &[&str],
    ) -> Vec<u8> {
        ModelProto {
            ir_version: 8,
            graph: Some(GraphProto {
                node: nodes,
                name: "g".into(),
                initializer,
                input: inputs,
                output: outputs
                    .iter()
                    .map(|name| ValueInfoProto {
                        name: name.to_string(),
                        r#type: None,
                    })
                    .collect(),
            }),
            opset_import: vec![OperatorSetIdProto {
                domain: String::new(),
                version: 13,
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }

    /// A bidirectional LSTM (I = 3, H = 4) on `X`, then `extra`.
    fn bidirectional(
        extra: Vec<NodeProto>,
        constants: Vec<TensorProto>,
        outputs: &[&str],
    ) -> Vec<u8> {
        let mut nodes = vec![node(
            "LSTM",
            &["X", "W", "R", "B"],
            &["Y", "Y_h", "Y_c"],
            vec![text("direction", "bidirectional"), int("hidden_size", 4)],
        )];
        nodes.extend(extra);
        let mut initializer = vec![
            floats("W", &[2, 16, 3]),
            floats("R", &[2, 16, 4]),
            floats("B", &[2, 32]),
        ];
        initializer.extend(constants);
        model(
            nodes,
            initializer,
            vec![input("X", &[None, None, Some(3)])],
            outputs,
        )
    }

    fn refused(bytes: &[u8]) -> String {
        match import::onnx(bytes, &BTreeMap::new(), "M") {
            Ok(imported) => panic!("imported:\n{}", imported.text),
            Err(error) => error.to_string(),
        }
    }

    #[test]
    fn slices_and_concats_off_the_direction_axis() {
        let merged = || {
            vec![
                node(
                    "Transpose",
                    &["Y"],
                    &["Yt"],
                    vec![ints("perm", &[0, 2, 1, 3])],
                ),
                node("Reshape", &["Yt", "shape"], &["Yr"], vec![]),
            ]
        };
        // A Slice with its axes left out (ONNX's default [0]) or out of range.
        for axes in [None, Some(-9)] {
            let mut extra = merged();
            let mut inputs = vec!["Yr", "start", "end"];
            let mut constants = vec![
                numbers("shape", &[0, 0, -1]),
                numbers("start", &[0]),
                numbers("end", &[1]),
            ];
            if let Some(axis) = axes {
                inputs.push("axes");
                constants.push(numbers("axes", &[axis]));
            }
            extra.push(node("Slice", &inputs, &["Z"], vec![]));
            let error = refused(&bidirectional(extra, constants, &["Z"]));
            assert!(
                error.contains("one direction of a bidirectional output"),
                "{error}"
            );
        }
        // The two directions joined along an axis that does not exist.
        let extra = vec![
            node("Slice", &["Y", "zero", "one", "one"], &["Y0"], vec![]),
            node("Slice", &["Y", "one", "two", "one"], &["Y1"], vec![]),
            node("Concat", &["Y0", "Y1"], &["Z"], vec![int("axis", -9)]),
        ];
        let constants = vec![
            numbers("zero", &[0]),
            numbers("one", &[1]),
            numbers("two", &[2]),
        ];
        let error = refused(&bidirectional(extra, constants, &["Z"]));
        assert!(error.contains("joined along the features"), "{error}");
        // One direction alone as the output.
        let extra = vec![node("Slice", &["Y", "zero", "one", "one"], &["Y0"], vec![])];
        let constants = vec![numbers("zero", &[0]), numbers("one", &[1])];
        let error = refused(&bidirectional(extra, constants, &["Y0"]));
        assert!(error.contains("direction 0 alone"), "{error}");
    }

    #[test]
    fn sizes_that_overflow_are_refused() {
        // W and R of no elements, R claiming H = 2^62.
        let empty = |name: &str, dims: &[i64]| TensorProto {
            name: name.into(),
            dims: dims.to_vec(),
            data_type: 1,
            ..Default::default()
        };
        let bytes = model(
            vec![node("LSTM", &["X", "W", "R"], &["Y"], vec![])],
            vec![empty("W", &[1, 0, 3]), empty("R", &[1, 0, 1 << 62])],
            vec![input("X", &[None, None, Some(3)])],
            &["Y"],
        );
        let error = refused(&bytes);
        assert!(error.contains("H and I from 1 to"), "{error}");
        // A static time size of 2^62 and a reshape by a size past it.
        let bytes = model(
            vec![
                node("LSTM", &["X", "W", "R"], &["Y"], vec![]),
                node("Reshape", &["Y", "shape"], &["Z"], vec![]),
            ],
            vec![
                floats("W", &[1, 16, 3]),
                floats("R", &[1, 16, 4]),
                numbers("shape", &[(1 << 62) + 1, -1]),
            ],
            vec![input("X", &[Some(1 << 62), Some(8), Some(3)])],
            &["Z"],
        );
        let error = refused(&bytes);
        assert!(error.starts_with("Reshape node"), "{error}");
    }

    #[test]
    fn attributes_heads_and_names_the_text_could_not_hold() {
        // The direction given twice.
        let bytes = model(
            vec![node(
                "LSTM",
                &["X", "W", "R"],
                &["Y"],
                vec![
                    text("direction", "reverse"),
                    text("direction", "bidirectional"),
                ],
            )],
            vec![floats("W", &[2, 16, 3]), floats("R", &[2, 16, 4])],
            vec![input("X", &[None, None, Some(3)])],
            &["Y"],
        );
        let error = refused(&bytes);
        assert!(error.contains("`direction` is given twice"), "{error}");
        // A head of no outputs, and a head on a sequence with lengths.
        let lstm = |lengths: bool| {
            let inputs: &[&str] = if lengths {
                &["X", "W", "R", "", "L"]
            } else {
                &["X", "W", "R"]
            };
            node("LSTM", inputs, &["Y"], vec![])
        };
        let head = |out: i64, lengths: bool| {
            let mut inputs = vec![input("X", &[None, None, Some(3)])];
            if lengths {
                inputs.push(input("L", &[None]));
            }
            model(
                vec![
                    lstm(lengths),
                    node("Squeeze", &["Y", "one"], &["Ys"], vec![]),
                    node("MatMul", &["Ys", "K"], &["Z0"], vec![]),
                    node("Add", &["Z0", "bias"], &["Z"], vec![]),
                ],
                vec![
                    floats("W", &[1, 16, 3]),
                    floats("R", &[1, 16, 4]),
                    numbers("one", &[1]),
                    floats("K", &[4, out]),
                    floats("bias", &[out]),
                ],
                inputs,
                &["Z"],
            )
        };
        let error = refused(&head(0, false));
        assert!(error.starts_with("MatMul node"), "{error}");
        let error = refused(&head(2, true));
        assert!(error.contains("past each sequence's end"), "{error}");
        assert!(import::onnx(&head(2, false), &BTreeMap::new(), "M").is_ok());
        // Keywords cannot name the network.
        for name in ["network", "cell", "inf", "layer"] {
            let error = import::onnx(&head(2, false), &BTreeMap::new(), name)
                .unwrap_err()
                .to_string();
            assert!(error.contains("cannot name a network"), "{name}: {error}");
        }
    }

    #[test]
    fn a_binding_reads_arrays_in_any_memory_order() {
        let imported = import::onnx(
            &model(
                vec![node("LSTM", &["X", "W", "R"], &["Y"], vec![])],
                vec![floats("W", &[1, 16, 3]), floats("R", &[1, 16, 4])],
                vec![input("X", &[None, None, Some(3)])],
                &["Y"],
            ),
            &BTreeMap::new(),
            "M",
        )
        .expect("imports");
        // X [T = 2, B = 5, I = 3] in column-major order.
        let x = ndarray::Array3::<f32>::from_shape_fn((3, 5, 2), |(i, b, t)| {
            (100 * t + 10 * b + i) as f32
        })
        .reversed_axes()
        .into_dyn();
        let ours = imported.inputs[0].to_network(x.clone()).expect("fits");
        assert_eq!(ours.shape(), &[5, 2, 3]);
        assert_eq!(ours[[4, 1, 2]], x[[1, 4, 2]]);
    }
}
