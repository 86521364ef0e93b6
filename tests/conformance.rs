//! Conformance: every case of the golden fixtures (TensorFlow, PyTorch,
//! ONNX Runtime, numpy) runs through the reference interpreter and must
//! match within the case's tolerance.
//!
//! The fixtures are read from `../shared/conformance` next to the
//! repository, or from the folder named by `UNROLL_CONFORMANCE`. The test
//! reads the manifest, so every case listed there is tested; a case of a
//! kind or variant unroll cannot express fails with a message, never skips.

use std::path::Path;

use ndarray::{ArrayD, IxDyn};
use rnn_dsl::{interp, SourceFile};
use rnn_runtime::TensorMap;
use serde_json::Value;

include!("support/fixtures.rs");
include!("support/compare.rs");

/// Compared tensors: (name, actual, expected).
type Pairs = Vec<(String, ArrayD<f32>, ArrayD<f32>)>;

/// One case's outcome: the worst error over its compared tensors.
struct Outcome {
    name: String,
    max_abs_error: f32,
    tolerance: (f32, f32),
    failure: Option<String>,
}

/// A case's fixture tensors and the inputs of a run (`x`, `seq_len`, `h0`, `c0`) among them.
fn rnn_case_tensors(dir: &Path, case: &Value) -> Result<(TensorMap, TensorMap), String> {
    let file = dir.join(case["file"].as_str().ok_or("case has no `file`")?);
    let tensors = TensorMap::load(&file).map_err(|error| error.to_string())?;
    let mut inputs = TensorMap::new();
    for name in ["x", "seq_len", "h0", "c0"] {
        if let Some(tensor) = tensors.get(name) {
            match tensor {
                rnn_runtime::Tensor::F32(array) => inputs.insert_f32(name, array.clone()),
                rnn_runtime::Tensor::I64(array) => inputs.insert_i64(name, array.clone()),
                other => {
                    return Err(format!(
                        "input `{name}` has unsupported dtype {}",
                        other.dtype()
                    ))
                }
            }
        }
    }
    Ok((tensors, inputs))
}

fn run_rnn_case(dir: &Path, case: &Value) -> Result<Pairs, String> {
    let text = rnn_model_text(case, "Case", "dynamic")?;
    let compiled =
        rnn_dsl::compile(SourceFile::new("case.rnn", text)).map_err(|error| error.to_string())?;
    let network = compiled.network(None)?;
    let (tensors, inputs) = rnn_case_tensors(dir, case)?;
    let outputs = interp::run(network, &tensors, &inputs).map_err(|error| error.to_string())?;
    let mut pairs = Vec::new();
    for name in ["y", "h_n", "c_n"] {
        if tensors.contains(name) {
            let expected = tensors.f32(name).map_err(|error| error.to_string())?;
            let actual = outputs
                .f32(name)
                .map_err(|error| format!("interpreter gave no `{name}`: {error}"))?;
            pairs.push((name.to_owned(), actual, expected));
        }
    }
    Ok(pairs)
}

fn run_ista_case(dir: &Path, case: &Value) -> Result<Pairs, String> {
    let steps = case["K"].as_u64().ok_or("ista case has no `K`")?;
    // The cell is the repository's own `.rnn` file; the case fixes the sizes.
    let cell_file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/models/ista.rnn");
    let cell_text = std::fs::read_to_string(&cell_file)
        .map_err(|error| format!("{}: {error}", cell_file.display()))?;
    let text = ista_model_text(case, &cell_text, "IstaCase", &format!("static {steps}"))?;
    let compiled = rnn_dsl::compile(SourceFile::new("ista_case.rnn", text))
        .map_err(|error| error.to_string())?;
    let network = compiled.network(Some("IstaCase"))?;
    let file = dir.join(case["file"].as_str().ok_or("case has no `file`")?);
    let tensors = TensorMap::load(&file).map_err(|error| error.to_string())?;
    let mut pairs = Vec::new();
    // A single measurement `y` [M] (a batch of one), then the batch `Y` [B, M].
    for (measurement, iterates, last) in [("y", "xs", "x_K"), ("Y", "XS", "X_K")] {
        if !tensors.contains(measurement) {
            continue;
        }
        let mut inputs = TensorMap::new();
        inputs.insert_f32(
            "y",
            tensors
                .f32(measurement)
                .map_err(|error| error.to_string())?,
        );
        let outputs = interp::run(network, &tensors, &inputs).map_err(|error| error.to_string())?;
        let (sequence, final_state) = ista_outputs(&outputs, measurement)?;
        let expected_iterates = tensors.f32(iterates).map_err(|error| error.to_string())?;
        let expected_last = tensors.f32(last).map_err(|error| error.to_string())?;
        pairs.push((
            format!("{iterates} (from {measurement})"),
            sequence,
            expected_iterates,
        ));
        pairs.push((
            format!("{last} (from {measurement})"),
            final_state.into_dimensionality::<IxDyn>().expect("dyn"),
            expected_last,
        ));
    }
    if pairs.is_empty() {
        return Err("ista case has neither `y` nor `Y`".to_owned());
    }
    Ok(pairs)
}

/// A gradient case through the interpreter: every `grad_*` tensor of the fixture, with the
/// seeds `gy`, `gh`, `gc` as the gradients of `y`, `h_n`, `c_n`.
fn run_gradient_case(dir: &Path, case: &Value) -> Result<Pairs, String> {
    let text = rnn_model_text(case, "Case", "dynamic")?;
    let compiled =
        rnn_dsl::compile(SourceFile::new("case.rnn", text)).map_err(|error| error.to_string())?;
    let network = compiled.network(None)?;
    let (tensors, inputs) = rnn_case_tensors(dir, case)?;
    let mut seeds = TensorMap::new();
    for (seed, output) in [("gy", "y"), ("gh", "h_n"), ("gc", "c_n")] {
        if tensors.contains(seed) {
            seeds.insert_f32(
                output,
                tensors.f32(seed).map_err(|error| error.to_string())?,
            );
        }
    }
    let outputs =
        interp::gradients(network, &tensors, &inputs, &seeds).map_err(|error| error.to_string())?;
    let mut pairs = Vec::new();
    for name in tensors.names().filter(|name| name.starts_with("grad_")) {
        let expected = tensors.f32(name).map_err(|error| error.to_string())?;
        let actual = outputs
            .f32(name)
            .map_err(|error| format!("interpreter gave no `{name}`: {error}"))?;
        pairs.push((name.to_owned(), actual, expected));
    }
    if pairs.is_empty() {
        return Err("gradient case has no `grad_*` tensor".to_owned());
    }
    Ok(pairs)
}

/// Every gradient case (`has_gradients`) through the interpreter, each `grad_*` tensor within
/// the case's `grad_tolerance`.
#[test]
fn conformance_gradients_interpreter() {
    let dir = fixture_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    let cases: Vec<Value> = read_manifest(&dir)
        .into_iter()
        .filter(|case| case["has_gradients"].as_bool() == Some(true))
        .collect();
    assert!(!cases.is_empty(), "manifest lists no gradient case");
    let mut failures = Vec::new();
    println!(
        "{:<28} {:>18} {:>10} {:>10}",
        "case", "max grad error", "abs tol", "rel tol"
    );
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("<unnamed>");
        let tol = tolerance_named(case, "grad_tolerance");
        let (worst, failure) = match run_gradient_case(&dir, case) {
            Ok(pairs) => {
                let mut worst = 0.0f32;
                let mut failure = None;
                for (tensor, actual, expected) in &pairs {
                    let (error, bad) = compare(tensor, actual, expected, tol);
                    worst = worst.max(error);
                    failure = failure.or(bad);
                }
                (worst, failure)
            }
            Err(message) => (f32::INFINITY, Some(message)),
        };
        println!(
            "{name:<28} {worst:>18.3e} {:>10.0e} {:>10.0e} {}",
            tol.0,
            tol.1,
            if failure.is_some() { "FAIL" } else { "ok" }
        );
        if let Some(failure) = failure {
            failures.push(format!("{name}: {failure}"));
        }
    }
    assert!(
        failures.is_empty(),
        "gradient cases failed:\n{}",
        failures.join("\n")
    );
}

#[test]
fn conformance_forward_interpreter() {
    let dir = fixture_dir(Path::new(env!("CARGO_MANIFEST_DIR")));
    let cases = read_manifest(&dir);
    assert!(!cases.is_empty(), "manifest lists no cases");
    let mut outcomes = Vec::new();
    for case in &cases {
        let name = case["name"].as_str().unwrap_or("<unnamed>").to_owned();
        let tol = tolerance(case);
        let result = match case["kind"].as_str() {
            Some("rnn") => run_rnn_case(&dir, case),
            Some("ista") => run_ista_case(&dir, case),
            other => Err(format!("unknown case kind {other:?}")),
        };
        let outcome = match result {
            Ok(pairs) => {
                let mut worst = 0.0f32;
                let mut failure = None;
                for (tensor, actual, expected) in &pairs {
                    let (error, bad) = compare(tensor, actual, expected, tol);
                    worst = worst.max(error);
                    failure = failure.or(bad);
                }
                Outcome {
                    name,
                    max_abs_error: worst,
                    tolerance: tol,
                    failure,
                }
            }
            Err(message) => Outcome {
                name,
                max_abs_error: f32::INFINITY,
                tolerance: tol,
                failure: Some(message),
            },
        };
        outcomes.push(outcome);
    }
    println!(
        "{:<28} {:>14} {:>10} {:>10}",
        "case", "max abs error", "abs tol", "rel tol"
    );
    for outcome in &outcomes {
        println!(
            "{:<28} {:>14.3e} {:>10.0e} {:>10.0e} {}",
            outcome.name,
            outcome.max_abs_error,
            outcome.tolerance.0,
            outcome.tolerance.1,
            if outcome.failure.is_some() {
                "FAIL"
            } else {
                "ok"
            }
        );
    }
    let failures: Vec<String> = outcomes
        .iter()
        .filter_map(|outcome| {
            outcome
                .failure
                .as_ref()
                .map(|failure| format!("{}: {failure}", outcome.name))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        outcomes.len(),
        failures.join("\n")
    );
}
