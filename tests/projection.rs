//! The projected LSTM against PyTorch: `lstm(hidden = H, proj_size = P)`
//! is `nn.LSTM(I, H, proj_size = P)`. The cases of `data/lstm_proj/`
//! (written by `data/lstm_proj/make_reference.py`: weights by PyTorch's
//! names, variable lengths, initial states, a fixed loss and its
//! gradients) run through the interpreter and through generated code in
//! two unroll modes, forward and backward.

use std::path::Path;

use ndarray::ArrayD;
use rnn_dsl::{interp, weights, SourceFile};
use rnn_runtime::{RnnError, Tensor, TensorMap, Train};

include!("support/compare.rs");

rnn_macros::rnn! {
    gradients = true;
    network OneLayerDynamic { input x: [4]; layer l = lstm(hidden = 6, proj_size = 3); unroll dynamic; }
    network OneLayerStatic { input x: [4]; layer l = lstm(hidden = 6, proj_size = 3); unroll static 6; }
    network BiTwoDynamic { input x: [3]; layer l = lstm(hidden = 5, proj_size = 2, layers = 2, bidirectional); unroll dynamic; }
    network BiTwoStatic { input x: [3]; layer l = lstm(hidden = 5, proj_size = 2, layers = 2, bidirectional); unroll static 6; }
}

/// Float32 against PyTorch's float64: `|actual - expected| <= ABS + REL * |expected|`.
const TOLERANCE: (f32, f32) = (1e-5, 1e-5);

/// Builds a generated model from a case's tensors.
type Build = fn(&TensorMap) -> Result<Box<dyn Train>, RnnError>;

/// One reference case: its file, the network text the interpreter runs,
/// and the same network generated in each mode.
struct Case {
    file: &'static str,
    text: &'static str,
    generated: [(&'static str, Build); 2],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            file: "one_layer",
            text: "network N { input x: [4]; layer l = lstm(hidden = 6, proj_size = 3); unroll dynamic; }",
            generated: [
                ("dynamic", |weights| Ok(Box::new(OneLayerDynamic::from_weights(weights)?))),
                ("static 6", |weights| Ok(Box::new(OneLayerStatic::from_weights(weights)?))),
            ],
        },
        Case {
            file: "bidirectional_two_layers",
            text: "network N { input x: [3]; layer l = lstm(hidden = 5, proj_size = 2, layers = 2, bidirectional); unroll dynamic; }",
            generated: [
                ("dynamic", |weights| Ok(Box::new(BiTwoDynamic::from_weights(weights)?))),
                ("static 6", |weights| Ok(Box::new(BiTwoStatic::from_weights(weights)?))),
            ],
        },
    ]
}

fn load(file: &str) -> TensorMap {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data/lstm_proj")
        .join(format!("{file}.safetensors"));
    TensorMap::load(&path).unwrap_or_else(|error| panic!("{}: {error}", path.display()))
}

/// The run's inputs and the loss's seeds, named as a model takes them.
fn inputs_and_seeds(tensors: &TensorMap) -> (TensorMap, TensorMap) {
    let mut inputs = TensorMap::new();
    for name in ["x", "h0", "c0"] {
        inputs.insert_f32(name, tensors.f32(name).expect("an input"));
    }
    let Some(Tensor::I64(lengths)) = tensors.get("seq_len") else {
        panic!("`seq_len` is int64");
    };
    inputs.insert_i64("seq_len", lengths.clone());
    let mut seeds = TensorMap::new();
    for (seed, output) in [("gy", "y"), ("gh", "h_n"), ("gc", "c_n")] {
        seeds.insert_f32(output, tensors.f32(seed).expect("a seed"));
    }
    (inputs, seeds)
}

/// Every output and every `grad_*` tensor of the case, compared with what
/// `actual` holds; returns the worst error and the failures.
fn compare_all(
    label: &str,
    tensors: &TensorMap,
    actual: &TensorMap,
    names: &[&str],
) -> (f32, Vec<String>) {
    let mut worst = 0.0f32;
    let mut failures = Vec::new();
    for name in names {
        let expected: ArrayD<f32> = tensors.f32(name).expect("a reference tensor");
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
fn projected_lstm_matches_pytorch() {
    let mut failures = Vec::new();
    println!(
        "{:<26} {:<12} {:>14} {:>14}",
        "case", "run", "max error y…", "max error grad"
    );
    for case in cases() {
        let tensors = load(case.file);
        let (inputs, seeds) = inputs_and_seeds(&tensors);
        let outputs = ["y", "h_n", "c_n"];
        let grads: Vec<&str> = tensors
            .names()
            .filter(|name| name.starts_with("grad_"))
            .collect();
        // Every weight of the network has its reference gradient, and only those.
        let compiled = rnn_dsl::compile(SourceFile::new("case.rnn", case.text)).expect("compiles");
        let network = compiled.network(None).expect("one network");
        let specs = weights::specs(network);
        assert_eq!(grads.len(), specs.len() + 3, "{}: {grads:?}", case.file);
        for spec in &specs {
            let expected = tensors.f32(&spec.name).expect("PyTorch names every weight");
            assert_eq!(expected.shape(), &spec.shape[..], "{}", spec.name);
        }

        let forward = interp::run(network, &tensors, &inputs).expect("the interpreter runs");
        let backward = interp::gradients(network, &tensors, &inputs, &seeds)
            .expect("the interpreter differentiates");
        let (forward_error, forward_failures) =
            compare_all("interpreter", &tensors, &forward, &outputs);
        let (grad_error, grad_failures) = compare_all("interpreter", &tensors, &backward, &grads);
        println!(
            "{:<26} {:<12} {forward_error:>14.3e} {grad_error:>14.3e}",
            case.file, "interpreter"
        );
        failures.extend(forward_failures);
        failures.extend(grad_failures);

        for (mode, build) in case.generated {
            let model = build(&tensors).expect("loads PyTorch's state_dict");
            let label = format!("generated, {mode}");
            let forward = model.run(&inputs).expect("runs");
            let backward = model
                .run_gradients(&inputs, &seeds)
                .expect("differentiates");
            let (forward_error, forward_failures) =
                compare_all(&label, &tensors, &forward, &outputs);
            let (grad_error, grad_failures) = compare_all(&label, &tensors, &backward, &grads);
            println!(
                "{:<26} {:<12} {forward_error:>14.3e} {grad_error:>14.3e}",
                case.file, mode
            );
            failures.extend(forward_failures);
            failures.extend(grad_failures);
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// PyTorch initialises every parameter of `nn.LSTM(proj_size = P)`,
/// `weight_hr` too, from `U(-1/√H, 1/√H)` with H the hidden size.
#[test]
fn random_weights_use_the_hidden_size() {
    let model = OneLayerDynamic::random(5);
    let params = model.params();
    let bound = 1.0 / 6f32.sqrt();
    for (name, tensor) in &params {
        let largest = tensor.iter().fold(0.0f32, |acc, v| acc.max(v.abs()));
        assert!(largest <= bound, "`{name}`: {largest} > 1/√6");
    }
    assert!(params.iter().any(|(name, _)| *name == "weight_hr_l0"));
}

/// The states keep PyTorch's shapes: `h` [L·D, B, P], `c` [L·D, B, H], and
/// the output `[B, T, P·D]`.
#[test]
fn states_and_output_have_pytorch_shapes() {
    let model = BiTwoDynamic::random(1);
    let x = ndarray::Array3::<f32>::zeros((3, 4, 3));
    let output = model
        .forward(x.view(), Some(&[4, 2, 1]), None)
        .expect("runs");
    assert_eq!(output.y.shape(), &[3, 4, 4]);
    assert_eq!(output.h_n.shape(), &[4, 3, 2]);
    assert_eq!(output.c_n.shape(), &[4, 3, 5]);
    let state = model.initial_state(3);
    assert_eq!(state.h.shape(), &[4, 3, 2]);
    assert_eq!(state.c.shape(), &[4, 3, 5]);
}
