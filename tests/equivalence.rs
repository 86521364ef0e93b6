//! Equivalence: the interpreter and generated code in every unroll mode
//! (static, dynamic, `dynamic by 2`, buckets) agree, over random cells
//! (made at build time from a seed, see `support/random_models.rs`) and
//! built-in ones, random batch sizes, lengths (0, 1, T and between),
//! initial states, contexts and weights.

use ndarray::{Array1, Array3, ArrayD};
use proptest::prelude::*;
use rnn_dsl::{interp, weights, SourceFile};
use rnn_runtime::init::SplitMix64;
use rnn_runtime::{Model, RnnError, TensorMap, Train};

include!("support/random_models.rs");

/// One generated model.
#[derive(Debug)]
pub struct EquivalenceEntry {
    model: &'static str,
    mode: &'static str,
    build: fn(&TensorMap) -> Result<Box<dyn Model>, RnnError>,
    /// The same model as [`Train`] (every equivalence model has training code).
    train: fn(&TensorMap) -> Result<Box<dyn Train>, RnnError>,
}

include!(concat!(env!("OUT_DIR"), "/equivalence_models.rs"));

/// One network of a valid model in `data/ok`, generated as written.
#[derive(Debug)]
pub struct OkEntry {
    file: &'static str,
    network: &'static str,
    text: &'static str,
    build: fn(&TensorMap) -> Result<Box<dyn Model>, RnnError>,
    train: fn(&TensorMap) -> Result<Box<dyn Train>, RnnError>,
}

include!(concat!(env!("OUT_DIR"), "/ok_models.rs"));

/// The largest difference allowed between any two implementations.
const TOLERANCE: f32 = 1e-6;

/// Outputs and gradients are checked against the interpreter's in `f64`: the exact values of the
/// same `f32` weights and inputs to within `f64` rounding. Generated code computes in another
/// order than the interpreter (a weight's gradient as one large product after the loop against a
/// sum step by step; fused passes; products in tiles), so it agrees to `f32` rounding, not to the
/// bit. How large `f32` rounding gets depends on the model (a normalisation with a small epsilon
/// amplifies it), so the allowance is measured, not guessed: the interpreter's own `f32` error
/// against `f64`, times [`ROUNDING`], plus `abs + rel * max |exact|` over each tensor.
const ROUNDING: f32 = 4.0;
/// Gradients' `abs` and `rel`: a gradient sums many products.
const GRAD_ABS: f32 = 1e-5;
const GRAD_REL: f32 = 1e-5;

/// Exact (`f64`) values and, per tensor, the error allowed against them.
struct Reference {
    exact: interp::Tensors<f64>,
    allowance: std::collections::BTreeMap<String, f32>,
}

impl Reference {
    /// The allowance of each tensor of `exact` from the interpreter's `f32` values `single`.
    fn new(single: &TensorMap, exact: interp::Tensors<f64>, abs: f32, rel: f32) -> Reference {
        let mut allowance = std::collections::BTreeMap::new();
        for (name, exact) in &exact {
            let single = single
                .f32(name)
                .expect("the interpreter gives the same names in f32");
            let (mut scale, mut rounding) = (0.0f64, 0.0f64);
            for (s, e) in single.iter().zip(exact.iter()) {
                scale = scale.max(e.abs());
                rounding = rounding.max((f64::from(*s) - e).abs());
            }
            let allowed = f64::from(abs) + f64::from(rel) * scale + f64::from(ROUNDING) * rounding;
            allowance.insert(name.clone(), allowed as f32);
        }
        Reference { exact, allowance }
    }

    /// The largest error of `actual` against the exact values relative to the allowance
    /// (above 1 fails), and the tensor it is in.
    fn error(&self, actual: &TensorMap) -> Result<(f32, String), String> {
        let mut worst = (0.0f32, String::new());
        for (name, expected) in &self.exact {
            let actual = actual
                .f32(name)
                .map_err(|error| format!("generated code gave no `{name}`: {error}"))?;
            if actual.shape() != expected.shape() {
                return Err(format!(
                    "`{name}`: shape {:?}, expected {:?}",
                    actual.shape(),
                    expected.shape()
                ));
            }
            let allowed = f64::from(self.allowance[name]);
            for (a, e) in actual.iter().zip(expected.iter()) {
                let ratio = ((f64::from(*a) - e).abs() / allowed) as f32;
                if ratio.is_nan() || ratio > worst.0 {
                    worst = (
                        if ratio.is_nan() { f32::INFINITY } else { ratio },
                        name.to_owned(),
                    );
                }
            }
        }
        Ok(worst)
    }
}

/// The reference for the outputs of `network`.
fn output_reference(
    network: &rnn_dsl::ir::Network,
    weights: &TensorMap,
    inputs: &TensorMap,
) -> Result<Reference, RnnError> {
    let single = interp::run(network, weights, inputs)?;
    let exact = interp::run_in::<f64>(network, &interp::widen(weights), &interp::widen(inputs))?;
    Ok(Reference::new(&single, exact, TOLERANCE, 0.0))
}

/// The reference for the gradients of `network`.
fn grad_reference(
    network: &rnn_dsl::ir::Network,
    weights: &TensorMap,
    inputs: &TensorMap,
    seeds: &TensorMap,
) -> Result<Reference, RnnError> {
    let single = interp::gradients(network, weights, inputs, seeds)?;
    let exact = interp::gradients_in::<f64>(
        network,
        &interp::widen(weights),
        &interp::widen(inputs),
        &interp::widen(seeds),
    )?;
    Ok(Reference::new(&single, exact, GRAD_ABS, GRAD_REL))
}

/// Random seeds for the loss's gradients with respect to `outputs` (every float output).
fn random_seeds(outputs: &TensorMap, seed: u64) -> TensorMap {
    let mut rng = SplitMix64::new(seed);
    let mut seeds = TensorMap::new();
    for (name, tensor) in outputs.iter() {
        if let rnn_runtime::Tensor::F32(array) = tensor {
            seeds.insert_f32(name, array.mapv(|_| rng.uniform(-1.0, 1.0)));
        }
    }
    seeds
}

fn max_abs_diff(a: &ArrayD<f32>, b: &ArrayD<f32>) -> f32 {
    assert_eq!(a.shape(), b.shape(), "shapes differ");
    a.iter()
        .zip(b.iter())
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Random inputs for `network`: `x`, contexts, `seq_len`, maybe initial
/// states.
fn random_inputs(
    network: &rnn_dsl::ir::Network,
    batch: usize,
    steps: usize,
    lengths: &[usize],
    with_state: bool,
    seed: u64,
) -> TensorMap {
    let mut rng = SplitMix64::new(seed);
    let mut inputs = TensorMap::new();
    for input in &network.inputs {
        let shape = if input.per_step {
            vec![batch, steps, input.size]
        } else {
            vec![batch, input.size]
        };
        inputs.insert_f32(
            input.name.clone(),
            ArrayD::from_shape_simple_fn(shape, || rng.uniform(-1.0, 1.0)),
        );
    }
    let lengths: Vec<i64> = lengths.iter().map(|len| *len as i64).collect();
    inputs.insert_i64("seq_len", Array1::from(lengths).into_dyn());
    if with_state {
        let mut rows_by_name: Vec<(String, usize, usize)> = Vec::new();
        for layer in &network.layers {
            let rows = network
                .layers
                .iter()
                .filter(|other| other.name == layer.name)
                .count()
                * layer.directions;
            for state in &layer.states {
                let name = rnn_dsl::names::initial_state(&layer.prefix, &state.name);
                if !rows_by_name
                    .iter()
                    .any(|(existing, _, _)| *existing == name)
                {
                    rows_by_name.push((name, rows, state.size));
                }
            }
        }
        for (name, rows, size) in rows_by_name {
            let state =
                Array3::from_shape_simple_fn((rows, batch, size), || rng.uniform(-1.0, 1.0));
            inputs.insert_f32(name, state.into_dyn());
        }
    }
    inputs
}

fn lengths_strategy(steps: usize) -> impl Strategy<Value = Vec<usize>> {
    let one = prop_oneof![Just(0usize), Just(1usize), Just(steps), 0..=steps];
    proptest::collection::vec(one, 1..=4)
}

fn check_model(
    model: &RandomModel,
    lengths: &[usize],
    with_state: bool,
    seed: u64,
) -> Result<(), TestCaseError> {
    let text = model.text.replace("MODE", "dynamic");
    let compiled = rnn_dsl::compile(SourceFile::new("random.rnn", text))
        .map_err(|error| TestCaseError::fail(error.to_string()))?;
    let network = compiled
        .network(Some(&model.name))
        .map_err(TestCaseError::fail)?;
    let weights = weights::random(network, seed);
    let inputs = random_inputs(
        network,
        lengths.len(),
        model.steps,
        lengths,
        with_state,
        seed ^ 0xABCD,
    );
    let expected = interp::run(network, &weights, &inputs)
        .map_err(|error| TestCaseError::fail(error.to_string()))?;
    let expected_outputs = output_reference(network, &weights, &inputs)
        .map_err(|error| TestCaseError::fail(error.to_string()))?;
    let seeds = random_seeds(&expected, seed ^ 0x5EED5);
    let expected_grads = grad_reference(network, &weights, &inputs, &seeds)
        .map_err(|error| TestCaseError::fail(error.to_string()))?;
    let mut first_grads: Option<TensorMap> = None;
    let entries = equivalence_registry();
    let mine: Vec<&EquivalenceEntry> = entries
        .iter()
        .filter(|entry| entry.model == model.name)
        .collect();
    prop_assert_eq!(mine.len(), 4, "every mode of {} is generated", model.name);
    for entry in mine {
        let generated =
            (entry.build)(&weights).map_err(|error| TestCaseError::fail(error.to_string()))?;
        let outputs = generated.run(&inputs).map_err(|error| {
            TestCaseError::fail(format!("{} [{}]: {error}", model.name, entry.mode))
        })?;
        let (ratio, name) = expected_outputs
            .error(&outputs)
            .map_err(TestCaseError::fail)?;
        prop_assert!(
            ratio <= 1.0,
            "{} [{}] `{}` differs from the exact output by {:.2}× the allowance (lengths {:?})\n{}",
            model.name,
            entry.mode,
            name,
            ratio,
            lengths,
            model.text
        );
        // Gradients: against the interpreter, and every mode against the first.
        let trained =
            (entry.train)(&weights).map_err(|error| TestCaseError::fail(error.to_string()))?;
        let grads = trained.run_gradients(&inputs, &seeds).map_err(|error| {
            TestCaseError::fail(format!(
                "{} [{}] gradients: {error}",
                model.name, entry.mode
            ))
        })?;
        let (ratio, tensor) = expected_grads.error(&grads).map_err(TestCaseError::fail)?;
        prop_assert!(
            ratio <= 1.0,
            "{} [{}] gradient `{}` differs from the exact gradient by {:.2}× the allowance (lengths {:?})\n{}",
            model.name,
            entry.mode,
            tensor,
            ratio,
            lengths,
            model.text
        );
        match &first_grads {
            None => first_grads = Some(grads),
            Some(first) => {
                for (name, tensor) in first.iter() {
                    let rnn_runtime::Tensor::F32(first) = tensor else {
                        continue;
                    };
                    let diff = max_abs_diff(&grads.f32(name).expect("same names"), first);
                    prop_assert!(
                        diff <= TOLERANCE,
                        "{} [{}] gradient `{}` differs between modes by {:e}",
                        model.name,
                        entry.mode,
                        name,
                        diff
                    );
                }
            }
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn interpreter_and_every_unroll_mode_agree(
        model_idx in 0usize..20,
        lengths in lengths_strategy(6),
        with_state in any::<bool>(),
        seed in any::<u64>(),
    ) {
        let models = equivalence_models();
        let model = &models[model_idx % models.len()];
        let lengths: Vec<usize> = lengths.into_iter().map(|len| len.min(model.steps)).collect();
        check_model(model, &lengths, with_state, seed)?;
    }
}

/// Every model, once, with lengths covering 0, 1 and T.
#[test]
fn every_model_agrees_on_edge_lengths() {
    for model in equivalence_models() {
        let lengths = [model.steps, 0, 1, model.steps - 1];
        check_model(&model, &lengths, true, 7).unwrap_or_else(|error| panic!("{error}"));
    }
}

#[test]
fn streaming_steps_equal_forward_bit_for_bit() {
    use gruafter_dynamic::GruAfter;
    let model = GruAfter::random(3);
    let (batch, steps) = (3, 7);
    let mut rng = SplitMix64::new(9);
    let x = Array3::from_shape_simple_fn((batch, steps, 2), || rng.uniform(-1.0, 1.0));
    let whole = model.forward(x.view(), None, None).expect("forward runs");
    let mut state = model.initial_state(batch);
    for t in 0..steps {
        let y_t = model
            .step(&mut state, x.slice(ndarray::s![.., t, ..]))
            .expect("step runs");
        assert_eq!(
            y_t,
            whole.y.slice(ndarray::s![.., t, ..]),
            "step {t} differs from forward"
        );
    }
    assert_eq!(state, whole.into_state(), "final states differ");
}

#[test]
fn generated_models_are_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<bilstm2_static5::BiLstm2>();
    assert_send_sync::<gruafter_dynamic::GruAfter>();
    assert_send_sync::<gruafter_dynamic::GruAfterState>();
}

#[test]
fn bucket_past_the_largest_is_a_typed_error() {
    use gruafter_buckets::GruAfter;
    let model = GruAfter::random(1);
    let x = Array3::<f32>::zeros((2, 9, 2));
    let error = model.forward(x.view(), Some(&[9, 3]), None).unwrap_err();
    assert!(matches!(error, RnnError::InvalidValue { .. }), "{error}");
    assert!(error.to_string().contains("largest bucket is 5"), "{error}");
    // Within the largest bucket it runs, whatever T is.
    let output = model
        .forward(x.view(), Some(&[5, 3]), None)
        .expect("fits a bucket");
    assert_eq!(output.y.shape(), &[2, 9, 3]);
}

#[test]
fn bad_run_time_shapes_are_typed_errors() {
    use bilstm2_dynamic::BiLstm2;
    let model = BiLstm2::random(1);
    let x = Array3::<f32>::zeros((2, 4, 5));
    let error = model.forward(x.view(), None, None).unwrap_err();
    assert_eq!(
        error.to_string(),
        "tensor `x`: expected shape [2, 4, 3], found [2, 4, 5]"
    );
    let x = Array3::<f32>::zeros((2, 4, 3));
    let error = model.forward(x.view(), Some(&[4, 5]), None).unwrap_err();
    assert!(error.to_string().contains("length 5 at index 1"), "{error}");
    let error = model.forward(x.view(), Some(&[4]), None).unwrap_err();
    assert!(matches!(error, RnnError::ShapeMismatch { .. }), "{error}");
    let mut state = model.initial_state(2);
    state.h = Array3::zeros((4, 2, 5));
    let error = model.forward(x.view(), None, Some(&state)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "tensor `h0`: expected shape [4, 2, 4], found [4, 2, 5]"
    );
}

/// Every valid model of `data/ok` is compiled (by the build script) and
/// runs, agreeing with the interpreter.
#[test]
fn every_valid_model_compiles_and_agrees_with_the_interpreter() {
    let entries = ok_registry();
    assert!(entries.len() >= 8, "only {} networks", entries.len());
    for entry in entries {
        let compiled =
            rnn_dsl::compile(SourceFile::new(entry.file, entry.text)).expect("valid model");
        let network = compiled
            .network(Some(entry.network))
            .expect("network exists");
        let steps = match network.unroll {
            rnn_dsl::check::UnrollMode::Static(steps) => steps,
            _ => 6,
        };
        let lengths: Vec<usize> = [steps, 0, 1, steps / 2].to_vec();
        let weights = weights::random(network, 11);
        let mut inputs = random_inputs(network, lengths.len(), steps, &lengths, true, 12);
        if network.step_input().is_none() {
            inputs.insert_i64("steps", ndarray::arr1(&[steps as i64]).into_dyn());
        }
        let expected = interp::run(network, &weights, &inputs).expect("interpreter runs");
        let model = (entry.build)(&weights).expect("weights load");
        let outputs = model
            .run(&inputs)
            .unwrap_or_else(|error| panic!("{} {}: {error}", entry.file, entry.network));
        let (ratio, name) = output_reference(network, &weights, &inputs)
            .expect("interpreter runs")
            .error(&outputs)
            .unwrap_or_else(|error| panic!("{} {}: {error}", entry.file, entry.network));
        assert!(
            ratio <= 1.0,
            "{} {} `{name}` differs from the exact output by {ratio:.2}× the allowance",
            entry.file,
            entry.network
        );
        let seeds = random_seeds(&expected, 13);
        let expected_grads =
            grad_reference(network, &weights, &inputs, &seeds).expect("interpreter runs");
        let grads = (entry.train)(&weights)
            .expect("weights load")
            .run_gradients(&inputs, &seeds)
            .unwrap_or_else(|error| panic!("{} {} gradients: {error}", entry.file, entry.network));
        let (ratio, tensor) = expected_grads
            .error(&grads)
            .unwrap_or_else(|error| panic!("{} {}: {error}", entry.file, entry.network));
        assert!(
            ratio <= 1.0,
            "{} {} gradient `{tensor}` differs from the exact gradient by {ratio:.2}× the allowance",
            entry.file,
            entry.network
        );
    }
}

/// Networks whose input projections take several chunks per call (see the
/// file's comments).
const CHUNKED: &str = include_str!("data/chunked.rnn");

rnn_macros::rnn!(file = "data/chunked.rnn");

/// Networks whose elementwise passes run in each of the generated forms
/// (see the file's comments).
const PASSES: &str = include_str!("data/passes.rnn");

mod passes {
    rnn_macros::rnn!(file = "data/passes.rnn");
}

/// Builds a generated model from weights, as a trait object.
type Build = fn(&TensorMap) -> Result<Box<dyn Model>, RnnError>;

/// Runs each network of `source` generated (`builds`) and interpreted on 24
/// sequences of up to `steps` steps and compares every output, for three
/// sets of lengths: lengths ending inside and at the edges of chunks of
/// steps, every sequence full, and every sequence 3 steps short of `steps`
/// (with equal lengths a backward direction reads its input in place).
fn agree_with_the_interpreter(file: &str, source: &str, steps: usize, builds: &[(&str, Build)]) {
    let compiled = rnn_dsl::compile(SourceFile::new(file, source)).expect("valid model");
    let batch = 24;
    let length_sets = [
        (0..batch).map(|b| (b * 37) % (steps + 1)).collect(),
        vec![steps; batch],
        vec![steps - 3; batch],
    ];
    for lengths in &length_sets {
        for (name, build) in builds {
            let network = compiled.network(Some(name)).expect("network exists");
            let weights = weights::random(network, 5);
            let inputs = random_inputs(network, batch, steps, lengths, true, 6);
            let expected = interp::run(network, &weights, &inputs).expect("interpreter runs");
            let outputs = build(&weights)
                .expect("weights load")
                .run(&inputs)
                .expect("generated code runs");
            for (tensor_name, tensor) in expected.iter() {
                let rnn_runtime::Tensor::F32(expected) = tensor else {
                    continue;
                };
                let diff = max_abs_diff(&outputs.f32(tensor_name).expect("same outputs"), expected);
                assert!(
                    diff <= 1e-5,
                    "{name} `{tensor_name}` differs by {diff:e} (lengths {lengths:?})"
                );
            }
        }
    }
}

#[test]
fn input_projections_computed_in_chunks_agree_with_the_interpreter() {
    agree_with_the_interpreter(
        "chunked.rnn",
        CHUNKED,
        40,
        &[
            ("ChunkedMixed", |w| {
                Ok(Box::new(ChunkedMixed::from_weights(w)?))
            }),
            ("ChunkedLstm", |w| {
                Ok(Box::new(ChunkedLstm::from_weights(w)?))
            }),
            ("ChunkedGru", |w| Ok(Box::new(ChunkedGru::from_weights(w)?))),
            ("ChunkedUser", |w| {
                Ok(Box::new(ChunkedUser::from_weights(w)?))
            }),
            ("ChunkedBiBy3", |w| {
                Ok(Box::new(ChunkedBiBy3::from_weights(w)?))
            }),
            ("ChunkedBiStatic", |w| {
                Ok(Box::new(ChunkedBiStatic::from_weights(w)?))
            }),
        ],
    );
}

#[test]
fn fused_passes_in_lanes_and_in_tiles_agree_with_the_interpreter() {
    agree_with_the_interpreter(
        "passes.rnn",
        PASSES,
        40,
        &[
            ("ScalarGate", |w| {
                Ok(Box::new(passes::ScalarGate::from_weights(w)?))
            }),
            ("FirstColumn", |w| {
                Ok(Box::new(passes::FirstColumn::from_weights(w)?))
            }),
            ("OddWidth", |w| {
                Ok(Box::new(passes::OddWidth::from_weights(w)?))
            }),
            ("OddGru", |w| Ok(Box::new(passes::OddGru::from_weights(w)?))),
        ],
    );
    // Past 64 steps a static step is one closure called per step.
    agree_with_the_interpreter(
        "passes.rnn",
        PASSES,
        70,
        &[("LongStatic", |w| {
            Ok(Box::new(passes::LongStatic::from_weights(w)?))
        })],
    );
}
