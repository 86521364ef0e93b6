//! The shared kernel suite: every implementation table runs the same checks against the scalar
//! reference functions.

use proptest::collection::vec;
use proptest::prelude::*;

use super::{generic, table, Kernels, SliceKernel, GENERIC};

/// The largest absolute difference allowed between a table kernel and the scalar reference.
/// Sigmoid and tanh have outputs in [-1, 1], so this is also about 8 units in the last place
/// near 1; the generic table meets it with zero error.
const MAX_ABS_ERROR: f32 = 1e-6;

/// Inputs that stress every regime: signed zeros, subnormals, where `exp` overflows, infinities
/// and NaN.
const EDGE_INPUTS: [f32; 19] = [
    0.0,
    -0.0,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    1e-40,
    0.5,
    -0.5,
    9.0,
    -9.0,
    88.8,
    -88.8,
    -103.9,
    1e30,
    -1e30,
    f32::MAX,
    f32::MIN,
    f32::INFINITY,
    f32::NEG_INFINITY,
    f32::NAN,
];

/// Every implementation on this machine, by name: the generic table and the selected one.
fn implementations() -> [(&'static str, &'static Kernels); 2] {
    [("generic", &GENERIC), ("selected", table())]
}

/// Runs each activation kernel of each implementation on `inputs` and compares every output with
/// the scalar reference.
fn check_activations(inputs: &[f32]) -> std::result::Result<(), String> {
    type Activation = (&'static str, fn(&Kernels) -> SliceKernel, fn(f32) -> f32);
    let activations: [Activation; 3] = [
        ("sigmoid", |kernels| kernels.sigmoid_f32, generic::sigmoid),
        ("tanh", |kernels| kernels.tanh_f32, generic::tanh),
        ("relu", |kernels| kernels.relu_f32, generic::relu),
    ];
    for (implementation, kernels) in implementations() {
        for (activation, kernel_of, reference) in activations {
            let mut outputs = inputs.to_vec();
            kernel_of(kernels)(&mut outputs);
            for (idx, (&input, &output)) in inputs.iter().zip(&outputs).enumerate() {
                let expected = reference(input);
                let agrees = if expected.is_nan() {
                    output.is_nan()
                } else {
                    // Equality first, so that matching infinities count as agreement.
                    output == expected || (output - expected).abs() <= MAX_ABS_ERROR
                };
                if !agrees {
                    return Err(format!(
                        "{activation} ({implementation}) at index {idx} of {}: \
                         f({input}) = {output}, reference {expected}",
                        inputs.len()
                    ));
                }
            }
        }
    }
    Ok(())
}

#[test]
fn activations_at_edge_values() {
    check_activations(&EDGE_INPUTS).unwrap();
}

#[test]
fn activations_at_every_tail_length() {
    // Lengths up to a few multiples of any plausible lane width, so that every remainder after
    // the vector loop is exercised.
    for len in 0..=67 {
        let inputs: Vec<f32> = (0..len).map(|idx| (idx as f32 - 30.0) * 0.37).collect();
        check_activations(&inputs).unwrap();
    }
}

#[test]
fn public_slice_functions_use_the_table() {
    let selected = table();
    let wiring: [(SliceKernel, SliceKernel); 3] = [
        (super::sigmoid_slice, selected.sigmoid_f32),
        (super::tanh_slice, selected.tanh_f32),
        (super::relu_slice, selected.relu_f32),
    ];
    for (public, kernel) in wiring {
        let mut values = EDGE_INPUTS;
        public(&mut values);
        let mut expected = EDGE_INPUTS;
        kernel(&mut expected);
        assert_eq!(values.map(f32::to_bits), expected.map(f32::to_bits));
    }
}

proptest! {
    #[test]
    fn activations_on_random_inputs(inputs in vec(-120.0f32..120.0, 0..100)) {
        check_activations(&inputs).map_err(TestCaseError::fail)?;
    }
}
