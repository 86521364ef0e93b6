//! Gradients: the interpreter's backward pass (each layer's backward step,
//! `ir::differentiate`) against central finite differences of its own
//! forward pass in float64, on random user cells (those of
//! `equivalence.rs`) and on every built-in cell with every flag, over
//! lengths 0, 1, T and between, with initial states and contexts, one and
//! two directions, one and two layers.
//!
//! The loss is `Σ y ⊙ gy + Σ_s Σ s_n ⊙ gs` with random seeds, so every
//! output and final state takes part; every element of every weight, input,
//! context and initial state is perturbed.

use std::collections::BTreeMap;

use ndarray::ArrayD;
use rnn_dsl::interp::{self, Tensors};
use rnn_dsl::{names, weights, SourceFile};
use rnn_runtime::init::SplitMix64;

include!("support/random_models.rs");

/// The step of the central differences.
const EPS: f64 = 1e-6;

/// `|analytic - numeric| <= ABS + REL * |numeric|`: the central difference's own error at
/// `EPS` in float64 is about 1e-10.
const ABS: f64 = 1e-7;
const REL: f64 = 1e-6;

fn random_f64(rng: &mut SplitMix64, shape: &[usize]) -> ArrayD<f64> {
    ArrayD::from_shape_simple_fn(shape.to_vec(), || f64::from(rng.uniform(-1.0, 1.0)))
}

/// Weights, inputs (with `seq_len` and initial states) and seeds for `network`, in float64.
fn problem(
    network: &rnn_dsl::ir::Network,
    steps: usize,
    lengths: &[usize],
    seed: u64,
) -> (Tensors<f64>, Tensors<f64>, Tensors<f64>) {
    let weights: Tensors<f64> = weights::random(network, seed)
        .iter()
        .map(|(name, tensor)| match tensor {
            rnn_runtime::Tensor::F32(array) => (name.to_owned(), array.mapv(f64::from)),
            other => panic!("weight `{name}` is {}", other.dtype()),
        })
        .collect();
    let mut rng = SplitMix64::new(seed ^ 0x5EED);
    let batch = lengths.len();
    let mut inputs = Tensors::new();
    for input in &network.inputs {
        let shape = if input.per_step {
            vec![batch, steps, input.size]
        } else {
            vec![batch, input.size]
        };
        inputs.insert(input.name.clone(), random_f64(&mut rng, &shape));
    }
    inputs.insert(
        names::SEQ_LEN.to_owned(),
        ArrayD::from_shape_vec(vec![batch], lengths.iter().map(|len| *len as f64).collect())
            .expect("one per sequence"),
    );
    let mut seeds = Tensors::new();
    seeds.insert(
        names::OUTPUT.to_owned(),
        random_f64(&mut rng, &[batch, steps, network.output_size()]),
    );
    for layer in &network.layers {
        let rows = network
            .layers
            .iter()
            .filter(|other| other.name == layer.name)
            .count()
            * layer.directions;
        for state in &layer.states {
            let initial = names::initial_state(&layer.prefix, &state.name);
            if let std::collections::btree_map::Entry::Vacant(slot) = inputs.entry(initial) {
                slot.insert(random_f64(&mut rng, &[rows, batch, state.size]));
                seeds.insert(
                    names::final_state(&layer.prefix, &state.name),
                    random_f64(&mut rng, &[rows, batch, state.size]),
                );
            }
        }
    }
    (weights, inputs, seeds)
}

fn loss(
    network: &rnn_dsl::ir::Network,
    weights: &Tensors<f64>,
    inputs: &Tensors<f64>,
    seeds: &Tensors<f64>,
) -> f64 {
    let outputs = interp::run_in::<f64>(network, weights, inputs).expect("forward runs");
    seeds
        .iter()
        .map(|(name, seed)| {
            let value = &outputs[name];
            value
                .iter()
                .zip(seed.iter())
                .map(|(v, s)| v * s)
                .sum::<f64>()
        })
        .sum()
}

/// The largest error of the analytic gradients against central differences, and the first
/// element out of tolerance.
fn check_gradients(
    network: &rnn_dsl::ir::Network,
    steps: usize,
    lengths: &[usize],
    seed: u64,
) -> (f64, Option<String>) {
    let (weights, inputs, seeds) = problem(network, steps, lengths, seed);
    check_problem(network, &weights, &inputs, &seeds)
}

/// [`check_gradients`] on given weights, inputs and seeds.
fn check_problem(
    network: &rnn_dsl::ir::Network,
    weights: &Tensors<f64>,
    inputs: &Tensors<f64>,
    seeds: &Tensors<f64>,
) -> (f64, Option<String>) {
    let (weights, inputs, seeds) = (weights.clone(), inputs.clone(), seeds.clone());
    let analytic =
        interp::gradients_in::<f64>(network, &weights, &inputs, &seeds).expect("backward runs");
    let mut worst = 0.0f64;
    let mut failure = None;
    let mut check = |name: &str, numeric: f64| {
        let value = analytic[&names::gradient(name.split('@').next().unwrap_or(name))]
            .as_slice_memory_order()
            .expect("contiguous")[name
            .split('@')
            .nth(1)
            .and_then(|idx| idx.parse::<usize>().ok())
            .unwrap_or(0)];
        let error = (value - numeric).abs();
        worst = worst.max(error);
        if error > ABS + REL * numeric.abs() && failure.is_none() {
            failure = Some(format!("{name}: analytic {value}, numeric {numeric}"));
        }
    };
    // Weights, then every float input but the lengths.
    for (is_weight, map) in [(true, &weights), (false, &inputs)] {
        for (name, array) in map.iter() {
            if name == names::SEQ_LEN {
                continue;
            }
            for idx in 0..array.len() {
                let at = |delta: f64| {
                    let mut changed: BTreeMap<String, ArrayD<f64>> = map.clone();
                    changed
                        .get_mut(name)
                        .expect("present")
                        .as_slice_memory_order_mut()
                        .expect("contiguous")[idx] += delta;
                    if is_weight {
                        loss(network, &changed, &inputs, &seeds)
                    } else {
                        loss(network, &weights, &changed, &seeds)
                    }
                };
                let numeric = (at(EPS) - at(-EPS)) / (2.0 * EPS);
                check(&format!("{name}@{idx}"), numeric);
            }
        }
    }
    (worst, failure)
}

/// Each model with dynamic unrolling, checked on `lengths` (T, 0, 1 and between).
fn check_models(models: &[RandomModel]) {
    let mut failures = Vec::new();
    for model in models {
        let text = model.text.replace("MODE", "dynamic");
        let compiled = rnn_dsl::compile(SourceFile::new("model.rnn", text))
            .unwrap_or_else(|error| panic!("{} compiles: {error}", model.name));
        let network = compiled.network(Some(&model.name)).expect("network");
        let steps = model.steps;
        for lengths in [vec![steps, 0, 1, steps / 2 + 1], vec![steps; 2]] {
            let (worst, failure) = check_gradients(network, steps, &lengths, 7);
            println!(
                "{:<16} lengths {lengths:?}: max |analytic - numeric| {worst:.2e}",
                model.name
            );
            if let Some(failure) = failure {
                failures.push(format!("{} lengths {lengths:?}: {failure}", model.name));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "gradients disagree with finite differences:\n{}",
        failures.join("\n")
    );
}

#[test]
fn random_cells_match_finite_differences() {
    let models: Vec<RandomModel> = (0..8).map(|index| random_model(0x5EED, index)).collect();
    check_models(&models);
}

#[test]
fn builtin_cells_with_every_flag_match_finite_differences() {
    let model = |name: &str, layer: &str| RandomModel {
        name: name.to_owned(),
        text: format!("network {name} {{ input x: [3]; {layer} unroll MODE; }}"),
        steps: 4,
    };
    let mut models = builtin_models();
    models.extend([
        model("Lstm", "layer l = lstm(hidden = 3);"),
        model(
            "LstmPeep",
            "layer l = lstm(hidden = 2, peepholes, layers = 2);",
        ),
        model(
            "LstmClip",
            "layer l = lstm(hidden = 3, cell_clip = 0.1, bidirectional);",
        ),
        model("Gru", "layer l = gru(hidden = 3, layers = 2);"),
        model(
            "GruBefore",
            "layer l = gru(hidden = 2, reset_after = false);",
        ),
        model(
            "Tanh",
            "layer l = rnn_tanh(hidden = 3, bidirectional, layers = 2);",
        ),
        model("Relu", "layer l = rnn_relu(hidden = 3);"),
    ]);
    check_models(&models);
}

/// ISTA as the example writes it (a context, a transposed matrix, `[1]` parameters broadcast
/// over vectors, `soft_threshold`), unrolled statically, shorter sequences included.
#[test]
fn ista_matches_finite_differences() {
    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../examples/models/ista.rnn"
    ))
    .expect("the ISTA example");
    let cell = &text[..text.find("network").expect("the example has a network")];
    let model = format!("{cell}\nnetwork Lista {{ context y: [4]; layer solver = ista(N = 6); unroll static 5; }}\n");
    let compiled = rnn_dsl::compile(SourceFile::new("ista.rnn", model)).expect("compiles");
    let network = compiled.network(Some("Lista")).expect("network");
    let (_, mut inputs, seeds) = problem(network, 5, &[5, 3, 0], 11);
    let mut rng = SplitMix64::new(99);
    let mut weights = Tensors::new();
    for param in &network.layers[0].params {
        let name = network.layers[0]
            .bare_weight_name(param)
            .expect("a one-layer user cell");
        let value = match param.name.as_str() {
            "L" => ArrayD::from_elem(vec![1], 3.0),
            "lam" => ArrayD::from_elem(vec![1], 0.2),
            _ => random_f64(&mut rng, &param.shape),
        };
        weights.insert(name, value);
    }
    inputs.insert(
        "y".to_owned(),
        random_f64(&mut rng, &[3, 4]).mapv(|v| 2.0 * v),
    );
    let (worst, failure) = check_problem(network, &weights, &inputs, &seeds);
    println!("ista: max |analytic - numeric| {worst:.2e}");
    assert!(failure.is_none(), "{failure:?}");
}

/// A padded step's input gradient is exactly zero, and a sequence of length 0 gets its
/// final-state seed as its initial-state gradient.
#[test]
fn padded_steps_pass_nothing_and_empty_sequences_pass_the_state_seed() {
    let text =
        "network N { input x: [3]; layer l = lstm(hidden = 4, bidirectional); unroll dynamic; }";
    let compiled = rnn_dsl::compile(SourceFile::new("n.rnn", text)).expect("compiles");
    let network = compiled.network(None).expect("network");
    let lengths = [5, 0, 2];
    let (weights, inputs, seeds) = problem(network, 5, &lengths, 3);
    let grads = interp::gradients_in::<f64>(network, &weights, &inputs, &seeds).expect("runs");
    let dx = &grads["grad_x"];
    for (b, len) in lengths.iter().enumerate() {
        for t in *len..5 {
            for i in 0..3 {
                assert_eq!(dx[[b, t, i]], 0.0, "grad_x[{b}, {t}, {i}] at a padded step");
            }
        }
    }
    for state in ["h", "c"] {
        let initial = &grads[&format!("grad_{state}0")];
        let seed = &seeds[&format!("{state}_n")];
        for row in 0..2 {
            for unit in 0..4 {
                assert_eq!(
                    initial[[row, 1, unit]],
                    seed[[row, 1, unit]],
                    "{state}0[{row}, 1, {unit}]"
                );
            }
        }
    }
}

/// Per-step parameters: copy t of each takes step t's gradient alone. LISTA-CP (a context, a
/// transposed per-step matrix, per-step thresholds, more copies than steps) and a stacked cell
/// with a per-step input matrix and a per-step `[1]` bias, before a head.
#[test]
fn per_step_parameters_match_finite_differences() {
    let lista = "cell lista_cp(y: [M]) -> x: [N] { param A: [M, N]; param W: [M, N] per step; param theta: [N] per step; x = soft_threshold(x + W^T @ (y - A @ x), theta); }
        network ListaCp { context y: [3]; layer solver = lista_cp(N = 4, steps = 5); unroll static 4; }";
    let compiled = rnn_dsl::compile(SourceFile::new("lista.rnn", lista)).expect("compiles");
    let network = compiled.network(None).expect("network");
    let (worst, failure) = check_gradients(network, 4, &[4, 2, 0, 1], 13);
    println!("ListaCp: max |analytic - numeric| {worst:.2e}");
    assert!(failure.is_none(), "{failure:?}");
    check_models(&[RandomModel {
        name: "Untied".to_owned(),
        text: "cell untied(x: [I]) -> h: [H] { param W: [H, I] per step; param U: [H, H]; param b: [1] per step; h = tanh(W @ x + U @ h + b); }
            network Untied { input x: [3]; layer l = untied(hidden = 3, layers = 2, steps = 4); layer head = linear(out = 2); unroll MODE; }"
            .to_owned(),
        steps: 4,
    }]);
}
