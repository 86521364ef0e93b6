// Shared by `conformance.rs` and `codegen.rs` (included with `include!`):
// a case's tolerance, the comparison of one tensor with its expected value,
// and the outputs of an ISTA case in the fixture's layout.

/// A case's `tolerance`: (absolute, relative).
pub fn tolerance(case: &serde_json::Value) -> (f32, f32) {
    tolerance_named(case, "tolerance")
}

/// A case's tolerance under `key` (`tolerance`, `grad_tolerance`): (absolute, relative).
#[allow(dead_code)] // not every includer compares gradients
pub fn tolerance_named(case: &serde_json::Value, key: &str) -> (f32, f32) {
    let tol = &case[key];
    (
        tol["abs"].as_f64().unwrap_or_else(|| panic!("{key}.abs")) as f32,
        tol["rel"].as_f64().unwrap_or_else(|| panic!("{key}.rel")) as f32,
    )
}

/// Compares `actual` with `expected`; returns the max abs error and the
/// first element outside `abs + rel * |expected|`.
pub fn compare(
    name: &str,
    actual: &ndarray::ArrayD<f32>,
    expected: &ndarray::ArrayD<f32>,
    (abs, rel): (f32, f32),
) -> (f32, Option<String>) {
    use ndarray::Dimension;
    if actual.shape() != expected.shape() {
        return (
            f32::INFINITY,
            Some(format!(
                "`{name}`: shape {:?}, expected {:?}",
                actual.shape(),
                expected.shape()
            )),
        );
    }
    let mut worst = 0.0f32;
    let mut failure = None;
    for ((idx, a), e) in actual.indexed_iter().zip(expected.iter()) {
        let error = (a - e).abs();
        let within = error <= abs + rel * e.abs();
        if !within && failure.is_none() {
            failure = Some(format!(
                "`{name}`{:?}: got {a}, expected {e} (error {error:e})",
                idx.slice()
            ));
        }
        worst = worst.max(if error.is_nan() { f32::INFINITY } else { error });
    }
    (worst, failure)
}

/// An ISTA run's iterates `y` and final state `x_n`, shaped as the fixture
/// stores them: without the batch axis for the single measurement `y`.
pub fn ista_outputs(
    outputs: &rnn_runtime::TensorMap,
    measurement: &str,
) -> Result<(ndarray::ArrayD<f32>, ndarray::ArrayD<f32>), String> {
    use ndarray::Axis;
    let mut sequence = outputs.f32("y").map_err(|error| error.to_string())?;
    let mut last = outputs
        .f32("x_n")
        .map_err(|error| error.to_string())?
        .index_axis(Axis(0), 0)
        .to_owned();
    if measurement == "y" {
        sequence = sequence.index_axis(Axis(0), 0).to_owned();
        last = last.index_axis(Axis(0), 0).to_owned();
    }
    Ok((sequence, last))
}
