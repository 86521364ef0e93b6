//! Reduced-precision weights (`precision bf16;`, `precision int8;`) on every
//! conformance case: generated code against the interpreter rounding the
//! same weights the same way (the kernel's error), the error the rounding
//! itself makes against the same model in `f32` (the bound the README
//! states), and gradients, which stay `f32`, against the fixtures.

use std::path::Path;

use ndarray::{ArrayD, Axis};
use rnn_dsl::{interp, SourceFile};
use rnn_runtime::{Model, RnnError, TensorMap, Train};

include!("support/fixtures.rs");
include!("support/compare.rs");

/// Builds a generated model from weights.
type Constructor = fn(&TensorMap) -> Result<Box<dyn Model>, RnnError>;

/// Builds a generated model with training code from weights.
type TrainConstructor = fn(&TensorMap) -> Result<Box<dyn Train>, RnnError>;

/// One conformance case generated in a reduced precision: the text with and
/// without its `precision` statement.
#[derive(Debug)]
pub struct PrecisionEntry {
    case: &'static str,
    network: &'static str,
    mode: &'static str,
    precision: &'static str,
    text: &'static str,
    f32_text: &'static str,
    build: Constructor,
    train: Option<TrainConstructor>,
}

include!(concat!(env!("OUT_DIR"), "/precision_models.rs"));

/// The largest error of a network's outputs in each precision against the
/// same network in `f32`, relative to the largest output's magnitude, over
/// the conformance cases: the bound README.md states. bfloat16 keeps 8
/// significant bits of each weight (relative error ≤ 2⁻⁸ ≈ 3.9e-3); int8
/// keeps 1/127 of each row's largest weight (≤ 3.9e-3 of it); a recurrence
/// carries the error of each step's product into the next.
const BOUNDS: [(&str, f32); 2] = [("bf16", 1e-2), ("int8", 2e-2)];

/// A case's fixture tensors and the inputs of a run.
fn case_inputs(dir: &Path, case: &serde_json::Value) -> Result<(TensorMap, TensorMap), String> {
    let file = dir.join(case["file"].as_str().ok_or("case has no `file`")?);
    let tensors = TensorMap::load(&file).map_err(|error| error.to_string())?;
    let mut inputs = TensorMap::new();
    if case["kind"] == "ista" {
        let steps = case["K"].as_u64().ok_or("ista case has no `K`")? as i64;
        let measurement = tensors
            .f32("y")
            .or_else(|_| tensors.f32("Y"))
            .map_err(|error| error.to_string())?;
        let measurement = if measurement.ndim() == 1 {
            measurement.insert_axis(Axis(0))
        } else {
            measurement
        };
        inputs.insert_f32("y", measurement);
        inputs.insert_i64("steps", ndarray::arr1(&[steps]).into_dyn());
        return Ok((tensors, inputs));
    }
    for name in ["x", "seq_len", "h0", "c0"] {
        match tensors.get(name) {
            Some(rnn_runtime::Tensor::F32(array)) => inputs.insert_f32(name, array.clone()),
            Some(rnn_runtime::Tensor::I64(array)) => inputs.insert_i64(name, array.clone()),
            _ => {}
        }
    }
    Ok((tensors, inputs))
}

/// The interpreter's outputs for network `name` of a model text.
fn interpret(
    (text, name): (&str, &str),
    weights: &TensorMap,
    inputs: &TensorMap,
) -> Result<TensorMap, String> {
    let compiled = rnn_dsl::compile(SourceFile::new("case.rnn", text.to_owned()))
        .map_err(|error| error.to_string())?;
    let network = compiled
        .model
        .networks
        .iter()
        .find(|network| network.name == name)
        .ok_or_else(|| format!("no network `{name}`"))?;
    interp::run(network, weights, inputs).map_err(|error| error.to_string())
}

fn output(outputs: &TensorMap, name: &str) -> Result<ArrayD<f32>, String> {
    outputs
        .f32(name)
        .map_err(|error| format!("output `{name}`: {error}"))
}

/// One entry: generated code against the interpreter in the same precision
/// within the case's tolerance; returns the largest error against `f32` and
/// the largest output magnitude.
fn check_entry(
    dir: &Path,
    case: &serde_json::Value,
    entry: &PrecisionEntry,
) -> Result<(f32, f32), String> {
    let (tensors, inputs) = case_inputs(dir, case)?;
    let model = (entry.build)(&tensors).map_err(|error| error.to_string())?;
    let generated = model.run(&inputs).map_err(|error| error.to_string())?;
    let rounded = interpret((entry.text, entry.network), &tensors, &inputs)?;
    let full = interpret((entry.f32_text, entry.network), &tensors, &inputs)?;
    let tolerance = tolerance(case);
    let (mut error, mut scale) = (0.0f32, 0.0f32);
    let mut compared = 0;
    for name in full.names() {
        let (actual, same, exact) = (
            output(&generated, name)?,
            output(&rounded, name)?,
            output(&full, name)?,
        );
        if let (_, Some(failure)) = compare(name, &actual, &same, tolerance) {
            return Err(format!(
                "against the interpreter in {}: {failure}",
                entry.precision
            ));
        }
        for (a, e) in actual.iter().zip(&exact) {
            error = error.max((a - e).abs());
            scale = scale.max(e.abs());
        }
        compared += 1;
    }
    if compared == 0 {
        return Err("the network has no output".to_owned());
    }
    Ok((error, scale))
}

#[test]
fn reduced_precision_matches_the_interpreter_and_stays_within_its_bound() {
    let dir = fixture_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    let cases = read_manifest(&dir);
    let entries = precision_registry();
    let mut failures = Vec::new();
    let mut worst = BOUNDS.map(|(precision, _)| (precision, 0.0f32));
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("<unnamed>");
        let case_entries: Vec<&PrecisionEntry> =
            entries.iter().filter(|entry| entry.case == name).collect();
        if case_entries.is_empty() {
            failures.push(format!("{name}: no reduced-precision model was generated"));
        }
        for entry in case_entries {
            let label = format!("{name} [{} {}]", entry.mode, entry.precision);
            match check_entry(&dir, case, entry) {
                Ok((error, scale)) => {
                    let relative = error / scale.max(f32::MIN_POSITIVE);
                    println!("{label:<44} max abs error against f32 {error:.3e} (of outputs up to {scale:.3}: {relative:.3e})");
                    let (_, bound) = BOUNDS
                        .iter()
                        .find(|(precision, _)| *precision == entry.precision)
                        .expect("a bound for every precision");
                    if relative > *bound {
                        failures.push(format!("{label}: error {relative:.3e} of the largest output, past the bound {bound:.1e}"));
                    }
                    for (precision, largest) in &mut worst {
                        if *precision == entry.precision {
                            *largest = largest.max(relative);
                        }
                    }
                }
                Err(reason) => failures.push(format!("{label}: {reason}")),
            }
        }
    }
    for (precision, largest) in worst {
        println!(
            "{precision}: largest error against f32, relative to the largest output: {largest:.3e}"
        );
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Training stays `f32` in a network whose inference runs in reduced
/// precision: every gradient case's `grad_*` tensors within `grad_tolerance`.
#[test]
fn gradients_stay_f32_in_reduced_precision() {
    let dir = fixture_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    let cases: Vec<serde_json::Value> = read_manifest(&dir)
        .into_iter()
        .filter(|case| case["has_gradients"].as_bool() == Some(true))
        .collect();
    assert!(!cases.is_empty(), "manifest lists no gradient case");
    let entries = precision_registry();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("<unnamed>");
        for entry in entries.iter().filter(|entry| entry.case == name) {
            let label = format!("{name} [{} {}]", entry.mode, entry.precision);
            let result = (|| -> Result<f32, String> {
                let build = entry.train.ok_or("no training code was generated")?;
                let (tensors, inputs) = case_inputs(&dir, case)?;
                let model = build(&tensors).map_err(|error| error.to_string())?;
                let mut seeds = TensorMap::new();
                for (seed, output) in [("gy", "y"), ("gh", "h_n"), ("gc", "c_n")] {
                    if let Some(rnn_runtime::Tensor::F32(array)) = tensors.get(seed) {
                        seeds.insert_f32(output, array.clone());
                    }
                }
                let outputs = model
                    .run_gradients(&inputs, &seeds)
                    .map_err(|error| error.to_string())?;
                let tolerance = tolerance_named(case, "grad_tolerance");
                let mut worst = 0.0f32;
                for name in tensors.names().filter(|name| name.starts_with("grad_")) {
                    let expected = tensors.f32(name).map_err(|error| error.to_string())?;
                    let actual = output(&outputs, name)?;
                    match compare(name, &actual, &expected, tolerance) {
                        (error, None) => worst = worst.max(error),
                        (_, Some(failure)) => return Err(failure),
                    }
                }
                Ok(worst)
            })();
            match result {
                Ok(worst) => println!("{label:<44} max grad error {worst:.3e}"),
                Err(reason) => failures.push(format!("{label}: {reason}")),
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// int8 has no scale for a weight that is not finite: building the model is
/// a typed error naming the tensor, where bfloat16 (like `f32`) keeps it.
#[test]
fn int8_refuses_weights_that_are_not_finite() {
    let dir = fixture_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    let cases = read_manifest(&dir);
    let entries = precision_registry();
    let case = cases
        .iter()
        .find(|case| case["kind"] == "rnn" && case["num_layers"].as_u64().unwrap_or(1) == 1)
        .expect("a one-layer rnn case");
    let name = case["name"].as_str().expect("named");
    let (mut tensors, _) = case_inputs(&dir, case).expect("case loads");
    let mut weight = tensors.f32("weight_hh_l0").expect("weight_hh_l0");
    weight[[0, 1]] = f32::NAN;
    tensors.insert_f32("weight_hh_l0", weight);
    for entry in entries.iter().filter(|entry| entry.case == name) {
        match ((entry.build)(&tensors), entry.precision) {
            (Err(RnnError::InvalidValue { tensor, reason }), "int8") => {
                assert_eq!(tensor, "weight_hh_l0", "{reason}");
                assert!(reason.contains("NaN"), "{reason}");
            }
            (Ok(_), "bf16") => {}
            (Err(error), precision) => panic!("{name} [{precision}]: {error}"),
            (Ok(_), precision) => panic!("{name} [{precision}]: a NaN weight was accepted"),
        }
    }
}

// W1 and W2 of `shared/WORKLOADS.md` in each precision, for the error on the
// workloads' shapes (one stream of 1,000 steps; a batch of 64 of lengths
// 10 to 100).
rnn_macros::rnn! {
    network W1F32 { input x: [64]; layer l = lstm(hidden = 128); unroll dynamic; }
    network W1Bf16 { input x: [64]; layer l = lstm(hidden = 128); unroll dynamic; precision bf16; }
    network W1Int8 { input x: [64]; layer l = lstm(hidden = 128); unroll dynamic; precision int8; }
    network W2F32 { input x: [128]; layer l = lstm(hidden = 256); unroll dynamic; }
    network W2Bf16 { input x: [128]; layer l = lstm(hidden = 256); unroll dynamic; precision bf16; }
    network W2Int8 { input x: [128]; layer l = lstm(hidden = 256); unroll dynamic; precision int8; }
}

/// The largest difference of any output from `reference`'s, relative to the
/// largest output.
fn relative_error(outputs: &TensorMap, reference: &TensorMap) -> f32 {
    let (mut error, mut scale) = (0.0f32, 0.0f32);
    for name in reference.names() {
        let (found, wanted) = (
            outputs.f32(name).expect("same outputs"),
            reference.f32(name).expect("an output"),
        );
        for (a, e) in found.iter().zip(&wanted) {
            error = error.max((a - e).abs());
            scale = scale.max(e.abs());
        }
    }
    error / scale
}

/// The workloads' shapes with PyTorch's initialisation (the same weights in
/// every precision: `random(seed)` draws them from the weight list, which the
/// precision does not change): each precision within its bound of `f32`.
#[test]
fn workloads_in_reduced_precision_stay_within_the_bound() {
    use rnn_runtime::init::SplitMix64;
    let mut rng = SplitMix64::new(5);
    let mut inputs = |batch: usize, steps: usize, width: usize, shortest: usize| {
        let x =
            ndarray::Array3::from_shape_simple_fn((batch, steps, width), || rng.uniform(-1.0, 1.0));
        let lengths: Vec<i64> = (0..batch)
            .map(|b| (shortest + (b * 37) % (steps - shortest + 1)) as i64)
            .collect();
        let mut map = TensorMap::new();
        map.insert_f32("x", x.into_dyn());
        map.insert_i64("seq_len", ndarray::Array1::from(lengths).into_dyn());
        map
    };
    let w1 = inputs(1, 1000, 64, 1000);
    let w2 = inputs(64, 100, 128, 10);
    // A workload, its inputs, and its network in f32, bf16 and int8.
    type Run<'a> = (&'static str, &'a TensorMap, [Box<dyn Model>; 3]);
    let runs: [Run<'_>; 2] = [
        (
            "W1",
            &w1,
            [
                Box::new(W1F32::random(0)),
                Box::new(W1Bf16::random(0)),
                Box::new(W1Int8::random(0)),
            ],
        ),
        (
            "W2",
            &w2,
            [
                Box::new(W2F32::random(0)),
                Box::new(W2Bf16::random(0)),
                Box::new(W2Int8::random(0)),
            ],
        ),
    ];
    for (workload, inputs, [full, bf16, int8]) in runs {
        let reference = full.run(inputs).expect("f32 runs");
        for ((precision, bound), model) in BOUNDS.iter().zip([bf16, int8]) {
            let error = relative_error(&model.run(inputs).expect("runs"), &reference);
            println!("{workload} {precision}: largest error against f32 {error:.3e} of the largest output");
            assert!(
                error <= *bound,
                "{workload} {precision}: {error:.3e} past the bound {bound:.1e}"
            );
        }
    }
}
