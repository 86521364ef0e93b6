//! Generated code against the conformance fixtures and the interpreter:
//! every case, in static (N = the case's length), dynamic, `dynamic by 3`
//! and (for short cases) bucketed modes.

use std::path::Path;

use ndarray::{ArrayD, Axis};
use rnn_runtime::{Model, RnnError, TensorMap, Train};

include!("support/fixtures.rs");
include!("support/compare.rs");

/// Builds a generated model from weights.
type Constructor = fn(&TensorMap) -> Result<Box<dyn Model>, RnnError>;

/// Builds a generated model with training code from weights.
type TrainConstructor = fn(&TensorMap) -> Result<Box<dyn Train>, RnnError>;

/// One generated model: its case, mode and constructor (or why none), and
/// for a gradient case the constructor of the same model as [`Train`].
#[derive(Debug)]
pub struct Entry {
    case: &'static str,
    mode: &'static str,
    build: Result<Constructor, &'static str>,
    train: Option<TrainConstructor>,
}

include!(concat!(env!("OUT_DIR"), "/conformance_models.rs"));

/// The worst error of `actual` against `expected`, or the first element
/// outside the tolerance.
fn within(
    name: &str,
    actual: &ArrayD<f32>,
    expected: &ArrayD<f32>,
    tolerance: (f32, f32),
) -> Result<f32, String> {
    match compare(name, actual, expected, tolerance) {
        (worst, None) => Ok(worst),
        (_, Some(failure)) => Err(failure),
    }
}

fn copy(from: &TensorMap, name: &str, to: &mut TensorMap) {
    match from.get(name) {
        Some(rnn_runtime::Tensor::F32(array)) => to.insert_f32(name, array.clone()),
        Some(rnn_runtime::Tensor::I64(array)) => to.insert_i64(name, array.clone()),
        _ => {}
    }
}

/// Runs one entry on its case; returns the worst error or why it failed.
fn check_entry(dir: &Path, case: &serde_json::Value, entry: &Entry) -> Result<f32, String> {
    let build = entry.build.map_err(str::to_owned)?;
    let file = dir.join(case["file"].as_str().ok_or("case has no `file`")?);
    let tensors = TensorMap::load(&file).map_err(|error| error.to_string())?;
    let model = build(&tensors).map_err(|error| error.to_string())?;
    let tolerance = tolerance(case);
    let mut worst = 0.0f32;
    if case["kind"] == "ista" {
        let steps = case["K"].as_u64().ok_or("ista case has no `K`")? as i64;
        for (measurement, iterates, last) in [("Y", "XS", "X_K"), ("y", "xs", "x_K")] {
            let Ok(value) = tensors.f32(measurement) else {
                continue;
            };
            let value = if value.ndim() == 1 {
                value.insert_axis(Axis(0))
            } else {
                value
            };
            let mut inputs = TensorMap::new();
            inputs.insert_f32("y", value);
            inputs.insert_i64("steps", ndarray::arr1(&[steps]).into_dyn());
            let outputs = model.run(&inputs).map_err(|error| error.to_string())?;
            let (sequence, last_state) = ista_outputs(&outputs, measurement)?;
            let expected_iterates = tensors.f32(iterates).map_err(|error| error.to_string())?;
            let expected_last = tensors.f32(last).map_err(|error| error.to_string())?;
            worst = worst.max(within(iterates, &sequence, &expected_iterates, tolerance)?);
            worst = worst.max(within(last, &last_state, &expected_last, tolerance)?);
        }
        return Ok(worst);
    }
    let mut inputs = TensorMap::new();
    for name in ["x", "seq_len", "h0", "c0"] {
        copy(&tensors, name, &mut inputs);
    }
    let outputs = model.run(&inputs).map_err(|error| error.to_string())?;
    for name in ["y", "h_n", "c_n"] {
        if let Ok(expected) = tensors.f32(name) {
            let actual = outputs
                .f32(name)
                .map_err(|error| format!("no output `{name}`: {error}"))?;
            worst = worst.max(within(name, &actual, &expected, tolerance)?);
        }
    }
    Ok(worst)
}

#[test]
fn conformance_generated_code_every_mode() {
    let dir = fixture_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    let cases = read_manifest(&dir);
    let entries = registry();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("<unnamed>");
        let case_entries: Vec<&Entry> = entries.iter().filter(|entry| entry.case == name).collect();
        if case_entries.is_empty() {
            failures.push(format!(
                "{name}: no generated model (rebuild the test crate after changing the manifest)"
            ));
        }
        for entry in case_entries {
            match check_entry(&dir, case, entry) {
                Ok(worst) => println!("{name:<26} {:<26} max abs error {worst:.3e}", entry.mode),
                Err(reason) => failures.push(format!("{name} [{}]: {reason}", entry.mode)),
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

/// A gradient case through generated code: every `grad_*` tensor within the case's
/// `grad_tolerance`, the seeds `gy`, `gh`, `gc` being the gradients of `y`, `h_n`, `c_n`.
fn check_gradient_entry(
    dir: &Path,
    case: &serde_json::Value,
    entry: &Entry,
) -> Result<f32, String> {
    let build = entry.train.ok_or("no training code was generated")?;
    let file = dir.join(case["file"].as_str().ok_or("case has no `file`")?);
    let tensors = TensorMap::load(&file).map_err(|error| error.to_string())?;
    let model = build(&tensors).map_err(|error| error.to_string())?;
    let mut inputs = TensorMap::new();
    for name in ["x", "seq_len", "h0", "c0"] {
        copy(&tensors, name, &mut inputs);
    }
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
    let mut compared = 0;
    for name in tensors.names().filter(|name| name.starts_with("grad_")) {
        let expected = tensors.f32(name).map_err(|error| error.to_string())?;
        let actual = outputs
            .f32(name)
            .map_err(|error| format!("generated code gave no `{name}`: {error}"))?;
        worst = worst.max(within(name, &actual, &expected, tolerance)?);
        compared += 1;
    }
    if compared == 0 {
        return Err("gradient case has no `grad_*` tensor".to_owned());
    }
    Ok(worst)
}

/// Every gradient case through generated code in every mode; the output names each case,
/// mode and the largest gradient error.
#[test]
fn conformance_gradients_generated_code_every_mode() {
    let dir = fixture_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    let cases: Vec<serde_json::Value> = read_manifest(&dir)
        .into_iter()
        .filter(|case| case["has_gradients"].as_bool() == Some(true))
        .collect();
    assert!(!cases.is_empty(), "manifest lists no gradient case");
    let entries = registry();
    let mut failures = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("<unnamed>");
        let case_entries: Vec<&Entry> = entries.iter().filter(|entry| entry.case == name).collect();
        if case_entries.is_empty() {
            failures.push(format!("{name}: no generated model"));
        }
        for entry in case_entries {
            match check_gradient_entry(&dir, case, entry) {
                Ok(worst) => println!("{name:<26} {:<26} max grad error {worst:.3e}", entry.mode),
                Err(reason) => failures.push(format!("{name} [{}]: {reason}", entry.mode)),
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
