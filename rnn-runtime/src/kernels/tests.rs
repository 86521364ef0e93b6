//! The shared kernel suite: every test runs against every implementation this CPU can run (the
//! generic table always; on x86-64 the AVX2 and AVX-512 tables when detected), and compares with
//! the scalar reference or with exact `f64` evaluations within documented tolerances.
//!
//! An implementation the CPU lacks is skipped with a notice on stderr; naming it in the
//! environment variable `UNROLL_REQUIRE_KERNELS` (comma-separated, e.g. `avx2,avx512`) turns the
//! skip into a failure, for CI machines known to have the features. Run the whole runtime suite
//! once more with `UNROLL_KERNELS=generic` to exercise the public entry points on the generic
//! table as well.

use ndarray::{s, Array2, ArrayView2};
use proptest::collection::vec;
use proptest::prelude::*;

use super::gemm::{PackedMatrix, Start};
use super::types::{Kernels, MapKernel, SliceKernel};
use super::{
    approx, available, gemm_packed, gemm_packed_add, gemm_packed_columns, gemm_packed_onto_row,
    gemm_packed_onto_row_columns, gemm_packed_split, select, table, Columns, GENERIC,
};
use crate::init::SplitMix64;

mod tiles;

/// The largest absolute difference allowed between a table's sigmoid, tanh or relu and the scalar
/// reference. Their outputs are in [-1, 1], so this is about 8 units in the last place near 1;
/// the documented bounds of the approximations (`approx.rs`) are well inside it.
const MAX_ABS_ERROR: f32 = 1e-6;

/// The largest relative difference allowed between a table's `exp` and `f32::exp` (about 8 units
/// in the last place), on results above [`EXP_ABS_FLOOR`].
const EXP_MAX_REL_ERROR: f32 = 1e-6;

/// Below this, `exp` results are compared absolutely (subnormal results have fewer significant
/// bits, so a relative comparison would be meaningless there).
const EXP_ABS_FLOOR: f32 = f32::MIN_POSITIVE;

/// Inputs that stress every regime: signed zeros, subnormals, where `exp` overflows, infinities
/// and NaN.
const EDGE_INPUTS: [f32; 23] = [
    0.0,
    -0.0,
    f32::MIN_POSITIVE,
    -f32::MIN_POSITIVE,
    1e-40,
    -1e-40,
    0.5,
    -0.5,
    0.625,
    -0.625,
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
    -f32::NAN,
];

/// Every implementation this CPU runs, generic first.
///
/// Prints a skip notice for each implementation of this architecture that the CPU cannot run,
/// and fails if `UNROLL_REQUIRE_KERNELS` names one that is not available.
fn implementations() -> Vec<&'static Kernels> {
    let (found, missing) = available();
    let required = std::env::var("UNROLL_REQUIRE_KERNELS").unwrap_or_default();
    for name in required
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
    {
        assert!(
            found.iter().any(|kernels| kernels.name == name),
            "UNROLL_REQUIRE_KERNELS names `{name}`, which this CPU or architecture cannot run \
             (available: {:?})",
            found.iter().map(|kernels| kernels.name).collect::<Vec<_>>()
        );
    }
    for name in missing {
        eprintln!("skipping the `{name}` kernels: this CPU lacks the features");
    }
    found
}

// ---------------------------------------------------------------------------------------------
// Activations

type Activation = (&'static str, fn(&Kernels) -> SliceKernel, fn(f32) -> f32);

const ACTIVATIONS: [Activation; 4] = [
    (
        "sigmoid",
        |kernels| kernels.sigmoid_f32,
        crate::ops::sigmoid,
    ),
    ("tanh", |kernels| kernels.tanh_f32, crate::ops::tanh),
    ("relu", |kernels| kernels.relu_f32, crate::ops::relu),
    ("exp", |kernels| kernels.exp_f32, f32::exp),
];

#[test]
fn activations_into_another_slice_equal_the_in_place_ones() {
    let mut rng = SplitMix64::new(31);
    let input: Vec<f32> = (0..1000).map(|_| rng.uniform(-30.0, 30.0)).collect();
    type InPlace = fn(&Kernels) -> SliceKernel;
    type Into = fn(&Kernels) -> MapKernel;
    let pairs: [(&str, InPlace, Into); 3] = [
        (
            "sigmoid",
            |kernels| kernels.sigmoid_f32,
            |kernels| kernels.sigmoid_into,
        ),
        (
            "tanh",
            |kernels| kernels.tanh_f32,
            |kernels| kernels.tanh_into,
        ),
        ("exp", |kernels| kernels.exp_f32, |kernels| kernels.exp_into),
    ];
    for kernels in implementations() {
        for (name, in_place, into) in pairs {
            let mut expected = input.clone();
            in_place(kernels)(&mut expected);
            let mut output = vec![f32::NAN; input.len()];
            into(kernels)(&input, &mut output);
            let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&output), bits(&expected), "{} {name}", kernels.name);
        }
    }
}

/// Whether `output` agrees with the scalar reference `expected` of `activation`.
fn agrees(activation: &str, output: f32, expected: f32) -> bool {
    if expected.is_nan() {
        return output.is_nan();
    }
    // Equality first, so that matching infinities count as agreement.
    if output == expected {
        return true;
    }
    let difference = (output - expected).abs();
    if activation == "exp" {
        difference <= EXP_MAX_REL_ERROR * expected.abs() || difference <= EXP_ABS_FLOOR
    } else {
        difference <= MAX_ABS_ERROR
    }
}

/// Runs each activation kernel of each implementation on `inputs` and compares every output with
/// the scalar reference.
fn check_activations(inputs: &[f32]) -> std::result::Result<(), String> {
    for kernels in implementations() {
        for (activation, kernel_of, reference) in ACTIVATIONS {
            let mut outputs = inputs.to_vec();
            kernel_of(kernels)(&mut outputs);
            for (idx, (&input, &output)) in inputs.iter().zip(&outputs).enumerate() {
                let expected = reference(input);
                if !agrees(activation, output, expected) {
                    return Err(format!(
                        "{activation} ({}) at index {idx} of {}: f({input}) = {output}, \
                         reference {expected}",
                        kernels.name,
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
fn activations_saturate_exactly_and_keep_nan() {
    for kernels in implementations() {
        let apply = |kernel: SliceKernel, x: f32| {
            let mut values = [x];
            kernel(&mut values);
            values[0]
        };
        let name = kernels.name;
        assert_eq!(apply(kernels.sigmoid_f32, f32::INFINITY), 1.0, "{name}");
        assert_eq!(apply(kernels.sigmoid_f32, f32::NEG_INFINITY), 0.0, "{name}");
        assert_eq!(apply(kernels.sigmoid_f32, 1e30), 1.0, "{name}");
        assert_eq!(apply(kernels.sigmoid_f32, -1e30), 0.0, "{name}");
        assert_eq!(apply(kernels.sigmoid_f32, 0.0), 0.5, "{name}");
        assert_eq!(apply(kernels.tanh_f32, f32::INFINITY), 1.0, "{name}");
        assert_eq!(apply(kernels.tanh_f32, f32::NEG_INFINITY), -1.0, "{name}");
        assert_eq!(apply(kernels.tanh_f32, 20.0), 1.0, "{name}");
        assert_eq!(apply(kernels.tanh_f32, -20.0), -1.0, "{name}");
        assert_eq!(
            apply(kernels.tanh_f32, 0.0).to_bits(),
            0.0f32.to_bits(),
            "{name}"
        );
        assert_eq!(
            apply(kernels.tanh_f32, -0.0).to_bits(),
            (-0.0f32).to_bits(),
            "{name}"
        );
        assert_eq!(apply(kernels.tanh_f32, 1e-30), 1e-30, "{name}");
        assert_eq!(apply(kernels.exp_f32, 0.0), 1.0, "{name}");
        assert_eq!(
            apply(kernels.exp_f32, f32::INFINITY),
            f32::INFINITY,
            "{name}"
        );
        assert_eq!(apply(kernels.exp_f32, 89.0), f32::INFINITY, "{name}");
        assert_eq!(apply(kernels.exp_f32, f32::NEG_INFINITY), 0.0, "{name}");
        assert_eq!(apply(kernels.exp_f32, -104.0), 0.0, "{name}");
        assert!(
            apply(kernels.exp_f32, -100.0) > 0.0,
            "{name}: subnormal result"
        );
        for kernel in [
            kernels.sigmoid_f32,
            kernels.tanh_f32,
            kernels.exp_f32,
            kernels.relu_f32,
        ] {
            assert!(apply(kernel, f32::NAN).is_nan(), "{name}");
            assert!(apply(kernel, -f32::NAN).is_nan(), "{name}");
        }
    }
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
    let wiring: [(SliceKernel, SliceKernel); 4] = [
        (super::sigmoid_slice, selected.sigmoid_f32),
        (super::tanh_slice, selected.tanh_f32),
        (super::exp_slice, selected.exp_f32),
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

/// The spacing of `f32` values around `value` (one unit in the last place), as `f64`.
fn ulp(value: f64) -> f64 {
    let magnitude = value.abs();
    if magnitude < f64::from(f32::MIN_POSITIVE) {
        return 2f64.powi(-149);
    }
    2f64.powi(magnitude.log2().floor() as i32 - 23)
}

/// The worst errors of one kernel over `inputs` against an exact `f64` function: absolute, and in
/// units in the last place of the exact result.
fn worst_errors(kernel: SliceKernel, exact: fn(f64) -> f64, inputs: &[f32]) -> (f64, f64, f32) {
    let mut outputs = inputs.to_vec();
    kernel(&mut outputs);
    let (mut worst_abs, mut worst_ulp, mut worst_at) = (0.0f64, 0.0f64, 0.0f32);
    for (&input, &output) in inputs.iter().zip(&outputs) {
        let expected = exact(f64::from(input));
        // Results beyond f32 range round to infinity; compare against the rounded value.
        let expected_f32 = expected as f32;
        if expected_f32.is_infinite() {
            assert_eq!(output, expected_f32, "f({input})");
            continue;
        }
        let error = (f64::from(output) - expected).abs();
        let in_ulp = error / ulp(expected);
        worst_abs = worst_abs.max(error);
        if in_ulp > worst_ulp {
            worst_ulp = in_ulp;
            worst_at = input;
        }
    }
    (worst_abs, worst_ulp, worst_at)
}

/// Every 4099th bit pattern that is an `f32` between `low` and `high` (about half a million values
/// for the ranges used here, every binade of both signs sampled densely), plus the ends.
fn dense_sample(low: f32, high: f32) -> Vec<f32> {
    let mut values: Vec<f32> = (0..=u32::MAX / 4099)
        .map(|idx| f32::from_bits(idx * 4099))
        .filter(|value| (low..=high).contains(value))
        .collect();
    values.extend([low, high]);
    values
}

/// Error bounds of one table's `exp`, sigmoid and `tanh` against exact values.
struct Bounds {
    exp_ulp: f64,
    sigmoid_ulp: f64,
    sigmoid_abs: f64,
    tanh_ulp: f64,
    tanh_abs: f64,
}

/// The bounds `approx.rs` documents for its approximations (the vectorised tables).
const APPROXIMATION_BOUNDS: Bounds = Bounds {
    exp_ulp: approx::EXP_MAX_ULP as f64,
    sigmoid_ulp: approx::SIGMOID_MAX_ULP as f64,
    sigmoid_abs: approx::SIGMOID_MAX_ABS_ERROR,
    tanh_ulp: approx::TANH_MAX_ULP as f64,
    tanh_abs: approx::TANH_MAX_ABS_ERROR,
};

/// Bounds for the generic table, which evaluates the textbook formulas with the standard
/// library's `exp` and `tanh`: an exhaustive run measured 0.50 ulp for `exp`, 2.40 ulp and
/// 8.9e-8 for sigmoid, 2.19 ulp and 1.04e-7 for `tanh`.
const LIBRARY_BOUNDS: Bounds = Bounds {
    exp_ulp: 1.0,
    sigmoid_ulp: 3.0,
    sigmoid_abs: 1e-7,
    tanh_ulp: 2.5,
    tanh_abs: 1.2e-7,
};

#[test]
fn activations_within_documented_bounds_of_exact_values() {
    let exp_inputs = dense_sample(-104.0, 89.0);
    let wide_inputs = dense_sample(-120.0, 120.0);
    let sigmoid_exact = |x: f64| 1.0 / (1.0 + (-x).exp());
    for kernels in implementations() {
        let bounds = if std::ptr::eq(kernels, &GENERIC) {
            &LIBRARY_BOUNDS
        } else {
            &APPROXIMATION_BOUNDS
        };
        let name = kernels.name;
        let (_, exp_ulp, exp_at) = worst_errors(kernels.exp_f32, f64::exp, &exp_inputs);
        let (sigmoid_abs, sigmoid_ulp, sigmoid_at) =
            worst_errors(kernels.sigmoid_f32, sigmoid_exact, &wide_inputs);
        let (tanh_abs, tanh_ulp, tanh_at) = worst_errors(kernels.tanh_f32, f64::tanh, &wide_inputs);
        eprintln!(
            "{name}: exp {exp_ulp:.2} ulp (at {exp_at}); sigmoid {sigmoid_abs:.3e} abs, \
             {sigmoid_ulp:.2} ulp (at {sigmoid_at}); tanh {tanh_abs:.3e} abs, {tanh_ulp:.2} ulp \
             (at {tanh_at})"
        );
        assert!(exp_ulp <= bounds.exp_ulp, "{name}: exp {exp_ulp} ulp");
        assert!(
            sigmoid_abs <= bounds.sigmoid_abs,
            "{name}: sigmoid {sigmoid_abs}"
        );
        assert!(
            sigmoid_ulp <= bounds.sigmoid_ulp,
            "{name}: sigmoid {sigmoid_ulp} ulp"
        );
        assert!(tanh_abs <= bounds.tanh_abs, "{name}: tanh {tanh_abs}");
        assert!(tanh_ulp <= bounds.tanh_ulp, "{name}: tanh {tanh_ulp} ulp");
    }
}

/// The worst errors over every `f32` in `[low, high]` (`low ≤ 0 ≤ high`), chunk by chunk.
fn exhaustive_errors(
    kernel: SliceKernel,
    exact: fn(f64) -> f64,
    (low, high): (f32, f32),
) -> (f64, f64, f32) {
    let (mut worst_abs, mut worst_ulp, mut worst_at) = (0.0f64, 0.0f64, 0.0f32);
    let mut chunk = Vec::with_capacity(1 << 16);
    for (sign, top) in [(0u32, high.to_bits()), (0x8000_0000, (-low).to_bits())] {
        let mut bits = 0u32;
        while bits <= top {
            chunk.clear();
            let end = (bits + (1 << 16)).min(top + 1);
            chunk.extend((bits..end).map(|b| f32::from_bits(b | sign)));
            let (abs, in_ulp, at) = worst_errors(kernel, exact, &chunk);
            worst_abs = worst_abs.max(abs);
            if in_ulp > worst_ulp {
                (worst_ulp, worst_at) = (in_ulp, at);
            }
            bits = end;
        }
    }
    (worst_abs, worst_ulp, worst_at)
}

/// Measures the documented error columns of `approx.rs` on every `f32` of each function's range
/// (minutes; run with `cargo test --release -p rnn-runtime --lib -- --ignored --nocapture`).
#[test]
#[ignore = "exhaustive: minutes in release mode"]
fn activations_exhaustive_errors() {
    let sigmoid_exact = |x: f64| 1.0 / (1.0 + (-x).exp());
    for kernels in implementations() {
        let (_, exp_ulp, exp_at) = exhaustive_errors(kernels.exp_f32, f64::exp, (-104.0, 89.0));
        let (sigmoid_abs, sigmoid_ulp, sigmoid_at) =
            exhaustive_errors(kernels.sigmoid_f32, sigmoid_exact, (-200.0, 200.0));
        let (tanh_abs, tanh_ulp, tanh_at) =
            exhaustive_errors(kernels.tanh_f32, f64::tanh, (-20.0, 20.0));
        eprintln!(
            "{}: exp {exp_ulp:.3} ulp (at {exp_at}); sigmoid {sigmoid_abs:.3e} \
             abs, {sigmoid_ulp:.3} ulp (at {sigmoid_at}); tanh {tanh_abs:.3e} abs, {tanh_ulp:.3} \
             ulp (at {tanh_at})",
            kernels.name
        );
    }
}

proptest! {
    #[test]
    fn activations_on_random_inputs(inputs in vec(-120.0f32..120.0, 0..100)) {
        check_activations(&inputs).map_err(TestCaseError::fail)?;
    }
}

// ---------------------------------------------------------------------------------------------
// Packed matrix products

/// A `[rows, cols]` matrix of uniform values in [-1, 1) from `seed`.
fn random_matrix(rows: usize, cols: usize, seed: u64) -> Array2<f32> {
    let mut rng = SplitMix64::new(seed);
    Array2::from_shape_simple_fn((rows, cols), || rng.uniform(-1.0, 1.0))
}

/// `init + x · wᵀ` in `f64`, and the sum of the magnitudes of its terms, for the error bound.
fn reference_product(
    x: ArrayView2<'_, f32>,
    w: ArrayView2<'_, f32>,
    init: Option<ArrayView2<'_, f32>>,
) -> (Array2<f64>, Array2<f64>) {
    let (n, m) = (x.nrows(), w.nrows());
    let mut product = Array2::zeros((n, m));
    let mut magnitude = Array2::zeros((n, m));
    let k = x.ncols();
    let x = x.as_standard_layout();
    let w = w.as_standard_layout();
    let x = x.as_slice().expect("standard layout");
    let w = w.as_slice().expect("standard layout");
    for row in 0..n {
        for col in 0..m {
            let start = init.map_or(0.0, |init| f64::from(init[[row, col]]));
            let (mut sum, mut abs) = (start, start.abs());
            for inner in 0..k {
                let term = f64::from(x[row * k + inner]) * f64::from(w[col * k + inner]);
                sum += term;
                abs += term.abs();
            }
            product[[row, col]] = sum;
            magnitude[[row, col]] = abs;
        }
    }
    (product, magnitude)
}

/// The documented error bound of one output element of [`gemm_packed`]: a chain of `k`
/// multiply-adds with at most two roundings each (u = 2⁻²⁴) is within `2k·u/(1 − 2k·u)` of the
/// sum of the magnitudes of its terms and starting value; `(k + 1)·2⁻²³` covers it for every `k`
/// used here.
fn gemm_tolerance(k: usize, magnitude: f64) -> f64 {
    (k as f64 + 1.0) * 2f64.powi(-23) * magnitude
}

/// Runs `gemm_packed` with `w` packed for `kernels`, on a copy of `init`.
fn product_with(
    kernels: &'static Kernels,
    x: ArrayView2<'_, f32>,
    w: ArrayView2<'_, f32>,
    init: &Array2<f32>,
    accumulate: bool,
) -> Array2<f32> {
    let packed = PackedMatrix::for_gemm(w, &kernels.gemm);
    let mut out = init.clone();
    gemm_packed(x, &packed, out.view_mut(), accumulate);
    out
}

/// A sum over two parts of the inner dimension (a batch's two halves, in a
/// weight's gradient): `gemm_packed_split` gives the bits of the two
/// products formed apart from zero and added, and `gemm_packed_add` those
/// of adding a product formed from zero to `out`; on every table, with tail
/// tiles, partial panels and parts of one index or none.
#[test]
fn split_and_added_products_give_the_bits_of_the_parts_formed_apart() {
    let mut seed = 700;
    for kernels in implementations() {
        let width = kernels.gemm.panel_width;
        for n in [1, 5, 64] {
            for m in [1, width + 3, 250] {
                for (k, split) in [(2, 1), (64, 32), (64, 0), (64, 64), (257, 100)] {
                    seed += 1;
                    let x = random_matrix(n, k, seed);
                    let w = random_matrix(m, k, seed + 1000);
                    let unset = Array2::from_elem((n, m), f32::NAN);
                    let (before, after) = (s![.., ..split], s![.., split..]);
                    let first =
                        product_with(kernels, x.slice(before), w.slice(before), &unset, false);
                    let second =
                        product_with(kernels, x.slice(after), w.slice(after), &unset, false);
                    let expected = &first + &second;
                    let bits = |a: &Array2<f32>| a.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
                    let label = format!("{}: n {n}, m {m}, k {k}, split {split}", kernels.name);

                    let packed = PackedMatrix::for_gemm(w.view(), &kernels.gemm);
                    let mut out = unset.clone();
                    gemm_packed_split(x.view(), &packed, out.view_mut(), split);
                    assert_eq!(bits(&out), bits(&expected), "split, {label}");

                    let packed = PackedMatrix::for_gemm(w.slice(after), &kernels.gemm);
                    let mut out = first.clone();
                    gemm_packed_add(x.slice(after), &packed, out.view_mut());
                    assert_eq!(bits(&out), bits(&expected), "added, {label}");
                }
            }
        }
    }
}

#[test]
fn packing_by_panels_gives_the_element_by_element_packing() {
    let mut seed = 500;
    for kernels in implementations() {
        let width = kernels.gemm.panel_width;
        // No full panel, full panels only, and full panels with a partial one.
        for rows in [1, width - 1, width, 2 * width, 3 * width + 58, 250] {
            for cols in [1, 7, 500] {
                seed += 1;
                let w = random_matrix(rows, cols, seed);
                let by_panels =
                    PackedMatrix::for_gemm_by(w.view(), &kernels.gemm, kernels.transpose);
                let reference = PackedMatrix::for_gemm(w.view(), &kernels.gemm);
                let same = by_panels
                    .panels()
                    .iter()
                    .zip(reference.panels())
                    .all(|(a, b)| a.to_bits() == b.to_bits());
                assert!(
                    same && by_panels.panels().len() == reference.panels().len(),
                    "{}: {rows} x {cols}",
                    kernels.name
                );
                // A transposed view (other strides) packs element by element.
                let by_panels = PackedMatrix::for_gemm_by(w.t(), &kernels.gemm, kernels.transpose);
                let reference = PackedMatrix::for_gemm(w.t(), &kernels.gemm);
                assert_eq!(
                    by_panels.panels(),
                    reference.panels(),
                    "{}: transposed",
                    kernels.name
                );
            }
        }
    }
}

/// Every element of a product is the module's one chain of multiply-adds over the inner index,
/// from zero or from `out`, whatever the table writes its tile in (portable Rust or
/// intrinsics): fused on the `fma` tables, a multiply then an add on the generic one. Shapes
/// cover full tiles, every tail height, a last partial panel and paired panels.
#[test]
fn gemm_elements_are_one_sequential_chain_each() {
    let mut seed = 900;
    for n in [1, 2, 3, 4, 5, 6, 7, 13] {
        for (k, m) in [(1, 16), (37, 40), (130, 100)] {
            seed += 3;
            let x = random_matrix(n, k, seed);
            let w = random_matrix(m, k, seed + 1);
            let init = random_matrix(n, m, seed + 2);
            for &kernels in &implementations() {
                let fused = kernels.name != "generic";
                for accumulate in [false, true] {
                    let out = product_with(kernels, x.view(), w.view(), &init, accumulate);
                    for ((row, col), &value) in out.indexed_iter() {
                        let mut chain = if accumulate { init[(row, col)] } else { 0.0 };
                        for inner in 0..k {
                            let (a, b) = (x[(row, inner)], w[(col, inner)]);
                            chain = if fused {
                                a.mul_add(b, chain)
                            } else {
                                a * b + chain
                            };
                        }
                        assert_eq!(
                            value.to_bits(),
                            chain.to_bits(),
                            "{} n={n} k={k} m={m} accumulate={accumulate} at ({row}, {col})",
                            kernels.name
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn gemm_matches_f64_reference_on_tail_shapes() {
    let implementations = implementations();
    let mut seed = 0;
    for n in [0, 1, 7, 64] {
        for k in [1, 3, 128, 257] {
            for m in [1, 5, 512, 1024] {
                seed += 3;
                let x = random_matrix(n, k, seed);
                let w = random_matrix(m, k, seed + 1);
                let init = random_matrix(n, m, seed + 2);
                for accumulate in [false, true] {
                    let start = accumulate.then(|| init.view());
                    let (expected, magnitude) = reference_product(x.view(), w.view(), start);
                    for &kernels in &implementations {
                        let out = product_with(kernels, x.view(), w.view(), &init, accumulate);
                        for ((idx, &value), &reference) in out.indexed_iter().zip(&expected) {
                            let error = (f64::from(value) - reference).abs();
                            assert!(
                                error <= gemm_tolerance(k, magnitude[idx]),
                                "{} n={n} k={k} m={m} accumulate={accumulate} at {idx:?}: \
                                 {value} vs {reference}",
                                kernels.name
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_split_product_computes_its_columns_exactly_and_leaves_the_others() {
    let mut seed = 500;
    // (period, lo, hi): halves of W1's gates (128 units), of W2's (256), a
    // middle block, and a last partial panel (m = 320 + 40).
    let splits = [
        (128, 0, 64),
        (128, 64, 128),
        (256, 128, 256),
        (256, 64, 192),
        (320, 0, 320),
    ];
    for &(period, lo, hi) in &splits {
        let columns = Columns::periodic(period, lo, hi).expect("aligned");
        for n in [1, 2, 5, 13] {
            for m in [period * 4, period * 4 + 40] {
                seed += 3;
                let k = 96;
                let x = random_matrix(n, k, seed);
                let w = random_matrix(m, k, seed + 1);
                let init = random_matrix(n, m, seed + 2);
                let bias = random_matrix(1, m, seed + 3);
                let bias = bias.as_slice().expect("contiguous");
                for &kernels in &implementations() {
                    let packed = PackedMatrix::for_gemm(w.view(), &kernels.gemm);
                    for start in 0..3 {
                        let (mut whole, mut part) = (init.clone(), init.clone());
                        // On the last run `out`'s columns are strided (copied around the kernel).
                        let mut wide = Array2::<f32>::zeros((n, 2 * m));
                        wide.slice_mut(s![.., ..;2]).assign(&init);
                        match start {
                            0 | 1 => {
                                gemm_packed(x.view(), &packed, whole.view_mut(), start == 1);
                                gemm_packed_columns(
                                    x.view(),
                                    &packed,
                                    part.view_mut(),
                                    start == 1,
                                    columns,
                                );
                            }
                            _ => {
                                gemm_packed_onto_row(x.view(), &packed, whole.view_mut(), bias);
                                gemm_packed_onto_row_columns(
                                    x.view(),
                                    &packed,
                                    wide.slice_mut(s![.., ..;2]),
                                    bias,
                                    columns,
                                );
                                part = wide.slice(s![.., ..;2]).to_owned();
                            }
                        }
                        for ((row, col), &value) in part.indexed_iter() {
                            let expected = if (lo..hi).contains(&(col % period)) {
                                whole[(row, col)]
                            } else {
                                init[(row, col)]
                            };
                            assert_eq!(
                                value.to_bits(),
                                expected.to_bits(),
                                "{} split {period}/{lo}..{hi} n={n} m={m} start={start} at ({row}, {col})",
                                kernels.name
                            );
                        }
                    }
                }
            }
        }
    }
    assert_eq!(Columns::periodic(128, 0, 32), None, "not a whole panel");
    assert_eq!(Columns::periodic(128, 64, 64), None, "empty");
    assert_eq!(Columns::periodic(128, 64, 192), None, "past the period");
}

/// The reduced-precision product's split and bias forms: each computed element bit-identical
/// to the whole product's (a bias row as if written into `out` first), the other columns left.
#[test]
fn a_reduced_product_splits_by_columns_and_starts_from_a_row() {
    use super::reduced::ReducedMatrix;
    use super::{
        gemm_reduced, gemm_reduced_columns, gemm_reduced_onto_row, gemm_reduced_onto_row_columns,
        Precision,
    };
    let mut seed = 700;
    for &(period, lo, hi) in &[(128, 0, 64), (128, 64, 128), (256, 64, 192)] {
        let columns = Columns::periodic(period, lo, hi).expect("aligned");
        for n in [1, 3, 6] {
            for m in [period * 4, period * 4 + 40] {
                seed += 4;
                let k = 72;
                let x = random_matrix(n, k, seed);
                let w = random_matrix(m, k, seed + 1);
                let init = random_matrix(n, m, seed + 2);
                let bias = random_matrix(1, m, seed + 3);
                let bias = bias.as_slice().expect("contiguous");
                for &kernels in &implementations() {
                    for precision in [Precision::Bf16, Precision::Int8] {
                        let w = ReducedMatrix::for_gemm(w.view(), precision, &kernels.reduced)
                            .expect("finite");
                        for start in 0..3 {
                            let (mut whole, mut part) = (init.clone(), init.clone());
                            match start {
                                0 | 1 => {
                                    gemm_reduced(x.view(), &w, whole.view_mut(), start == 1);
                                    gemm_reduced_columns(
                                        x.view(),
                                        &w,
                                        part.view_mut(),
                                        start == 1,
                                        columns,
                                    );
                                }
                                _ => {
                                    let mut filled = init.clone();
                                    filled.rows_mut().into_iter().for_each(|mut row| {
                                        row.assign(&ndarray::aview1(bias));
                                    });
                                    gemm_reduced(x.view(), &w, filled.view_mut(), true);
                                    gemm_reduced_onto_row(x.view(), &w, whole.view_mut(), bias);
                                    assert_eq!(whole, filled, "{} onto a row", kernels.name);
                                    gemm_reduced_onto_row_columns(
                                        x.view(),
                                        &w,
                                        part.view_mut(),
                                        bias,
                                        columns,
                                    );
                                }
                            }
                            for ((row, col), &value) in part.indexed_iter() {
                                let expected = if (lo..hi).contains(&(col % period)) {
                                    whole[(row, col)]
                                } else {
                                    init[(row, col)]
                                };
                                assert_eq!(
                                    value.to_bits(),
                                    expected.to_bits(),
                                    "{} {} split {period}/{lo}..{hi} n={n} m={m} start={start} \
                                     at ({row}, {col})",
                                    kernels.name,
                                    precision.name()
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn gemm_with_empty_dimensions() {
    for kernels in implementations() {
        // k = 0: the product is zero, so `out` becomes 0 or stays as it was.
        let x = Array2::<f32>::zeros((3, 0));
        let w = Array2::<f32>::zeros((5, 0));
        let init = random_matrix(3, 5, 1);
        assert_eq!(
            product_with(kernels, x.view(), w.view(), &init, false),
            Array2::<f32>::zeros((3, 5))
        );
        assert_eq!(product_with(kernels, x.view(), w.view(), &init, true), init);
        // m = 0 and n = 0: nothing to compute.
        let x = random_matrix(3, 4, 2);
        let w = Array2::<f32>::zeros((0, 4));
        let init = Array2::<f32>::zeros((3, 0));
        assert_eq!(
            product_with(kernels, x.view(), w.view(), &init, false).dim(),
            (3, 0)
        );
        let x = Array2::<f32>::zeros((0, 4));
        let w = random_matrix(6, 4, 3);
        let init = Array2::<f32>::zeros((0, 6));
        assert_eq!(
            product_with(kernels, x.view(), w.view(), &init, true).dim(),
            (0, 6)
        );
    }
}

#[test]
fn gemm_overwrites_nan_unless_accumulating() {
    for kernels in implementations() {
        let x = random_matrix(7, 9, 4);
        let w = random_matrix(70, 9, 5);
        let nan = Array2::from_elem((7, 70), f32::NAN);
        let overwritten = product_with(kernels, x.view(), w.view(), &nan, false);
        assert!(
            overwritten.iter().all(|value| value.is_finite()),
            "{}",
            kernels.name
        );
        let zeros = Array2::zeros((7, 70));
        let from_zero = product_with(kernels, x.view(), w.view(), &zeros, false);
        assert_eq!(
            overwritten.map(|v| v.to_bits()),
            from_zero.map(|v| v.to_bits())
        );
        let accumulated = product_with(kernels, x.view(), w.view(), &nan, true);
        assert!(
            accumulated.iter().all(|value| value.is_nan()),
            "{}",
            kernels.name
        );
    }
}

#[test]
fn gemm_onto_a_row_equals_filling_the_row_then_accumulating() {
    // Tail shapes: a lone row, a partial tile, a partial last panel.
    for (n, k, m) in [(1, 5, 3), (7, 64, 100), (13, 33, 1030)] {
        let x = random_matrix(n, k, 21);
        let w = random_matrix(m, k, 22);
        let row = random_matrix(1, m, 23)
            .into_shape_with_order(m)
            .expect("one row");
        let filled = Array2::from_shape_fn((n, m), |(_, c)| row[c]);
        for kernels in implementations() {
            let expected = product_with(kernels, x.view(), w.view(), &filled, true);
            let packed = PackedMatrix::for_gemm(w.view(), &kernels.gemm);
            let mut out = Array2::from_elem((n, m), f32::NAN);
            gemm_packed_onto_row(
                x.view(),
                &packed,
                out.view_mut(),
                row.as_slice().expect("contiguous"),
            );
            assert_eq!(
                out.map(|v| v.to_bits()),
                expected.map(|v| v.to_bits()),
                "{} n={n} k={k} m={m}",
                kernels.name
            );
        }
    }
}

#[test]
fn gemm_accepts_strided_views_with_identical_results() {
    let (n, k, m) = (9, 37, 83);
    let x = random_matrix(n, k, 6);
    let w = random_matrix(m, k, 7);
    let init = random_matrix(n, m, 8);
    for kernels in implementations() {
        let packed = PackedMatrix::for_gemm(w.view(), &kernels.gemm);
        for accumulate in [false, true] {
            let expected = product_with(kernels, x.view(), w.view(), &init, accumulate);
            let bits = expected.map(|v| v.to_bits());

            // Rows of bigger arrays: row strides above the column counts.
            let mut x_big = random_matrix(n + 5, k + 11, 9);
            x_big.slice_mut(s![2..2 + n, 3..3 + k]).assign(&x);
            let mut out_big = random_matrix(n + 4, m + 7, 10);
            out_big.slice_mut(s![1..1 + n, 5..5 + m]).assign(&init);
            gemm_packed(
                x_big.slice(s![2..2 + n, 3..3 + k]),
                &packed,
                out_big.slice_mut(s![1..1 + n, 5..5 + m]),
                accumulate,
            );
            let got = out_big.slice(s![1..1 + n, 5..5 + m]).map(|v| v.to_bits());
            assert_eq!(
                got, bits,
                "{} row-strided, accumulate={accumulate}",
                kernels.name
            );

            // Non-contiguous rows: every other column of `x`, and a transposed `out`.
            let mut x_spread = Array2::zeros((n, 2 * k));
            x_spread.slice_mut(s![.., ..;2]).assign(&x);
            let mut out_t = init.t().to_owned();
            gemm_packed(
                x_spread.slice(s![.., ..;2]),
                &packed,
                out_t.view_mut().reversed_axes(),
                accumulate,
            );
            let got = out_t.t().map(|v| v.to_bits());
            assert_eq!(
                got, bits,
                "{} non-contiguous, accumulate={accumulate}",
                kernels.name
            );
        }
    }
}

proptest! {
    /// Row `r` of the product depends only on row `r` of `x` (and of `out`): computed alone,
    /// inside the whole batch or inside any sub-batch, it has the same bits.
    #[test]
    fn gemm_rows_are_independent_of_the_batch(
        n in 1usize..20,
        k in 0usize..40,
        m in 1usize..150,
        seed: u64,
        accumulate: bool,
        cut in (0usize..20, 0usize..20),
    ) {
        let x = random_matrix(n, k, seed);
        let w = random_matrix(m, k, seed.wrapping_add(1));
        let init = random_matrix(n, m, seed.wrapping_add(2));
        // A sub-batch `from..to`, at least one row long.
        let from = cut.0 % n;
        let to = from + 1 + cut.1 % (n - from);
        for kernels in implementations() {
            let packed = PackedMatrix::for_gemm(w.view(), &kernels.gemm);
            let mut batch = init.clone();
            gemm_packed(x.view(), &packed, batch.view_mut(), accumulate);
            for row in 0..n {
                let mut alone = init.slice(s![row..row + 1, ..]).to_owned();
                gemm_packed(x.slice(s![row..row + 1, ..]), &packed, alone.view_mut(), accumulate);
                prop_assert_eq!(
                    alone.row(0).map(|v| v.to_bits()),
                    batch.row(row).map(|v| v.to_bits()),
                    "{} row {} of {}", kernels.name, row, n
                );
            }
            let mut part = init.slice(s![from..to, ..]).to_owned();
            gemm_packed(x.slice(s![from..to, ..]), &packed, part.view_mut(), accumulate);
            prop_assert_eq!(
                part.map(|v| v.to_bits()),
                batch.slice(s![from..to, ..]).map(|v| v.to_bits()),
                "{} rows {}..{} of {}", kernels.name, from, to, n
            );
        }
    }
}

#[test]
fn packed_matrix_accessors_clone_and_threads() {
    fn assert_traits<T: Clone + std::fmt::Debug + Send + Sync + 'static>() {}
    assert_traits::<PackedMatrix>();
    let w = random_matrix(70, 13, 11);
    let x = random_matrix(5, 13, 12);
    let init = Array2::zeros((5, 70));
    for kernels in implementations() {
        let packed = PackedMatrix::for_gemm(w.view(), &kernels.gemm);
        assert_eq!((packed.rows(), packed.cols()), (70, 13));
        let debug = format!("{packed:?}");
        assert!(debug.contains(kernels.name), "{debug}");
        let copy = packed.clone();
        drop(packed);
        let from_copy = {
            let mut out = init.clone();
            gemm_packed(x.view(), &copy, out.view_mut(), false);
            out
        };
        let fresh = product_with(kernels, x.view(), w.view(), &init, false);
        assert_eq!(from_copy.map(|v| v.to_bits()), fresh.map(|v| v.to_bits()));
        // Packing reads any strides: a transposed copy packs to the same products.
        let w_t = w.t().to_owned();
        let from_strided = {
            let packed = PackedMatrix::for_gemm(w_t.t(), &kernels.gemm);
            let mut out = init.clone();
            gemm_packed(x.view(), &packed, out.view_mut(), false);
            out
        };
        assert_eq!(
            from_strided.map(|v| v.to_bits()),
            fresh.map(|v| v.to_bits())
        );
    }
}

#[test]
fn public_packing_uses_the_selected_table() {
    let packed = PackedMatrix::new(random_matrix(3, 2, 13).view());
    assert!(std::ptr::eq(packed.gemm(), &table().gemm));
}

#[test]
#[should_panic(expected = "gemm_packed")]
fn gemm_rejects_mismatched_shapes() {
    let packed = PackedMatrix::new(random_matrix(4, 3, 14).view());
    let x = random_matrix(2, 5, 15);
    let mut out = Array2::zeros((2, 4));
    gemm_packed(x.view(), &packed, out.view_mut(), false);
}

#[test]
fn environment_variable_selects_the_table() {
    let (found, missing) = available();
    let best = *found.last().expect("generic is always available");
    assert!(std::ptr::eq(select(None), best));
    assert!(std::ptr::eq(select(Some("")), best));
    assert!(std::ptr::eq(select(Some("auto")), best));
    assert!(std::ptr::eq(select(Some("no-such-table")), best));
    assert!(std::ptr::eq(select(Some("generic")), &GENERIC));
    assert!(std::ptr::eq(select(Some(" generic ")), &GENERIC));
    for &kernels in &found {
        assert!(std::ptr::eq(select(Some(kernels.name)), kernels));
        assert_eq!(
            kernels.gemm.name, kernels.name,
            "a table's product names it"
        );
    }
    for name in missing {
        assert!(std::ptr::eq(select(Some(name)), &GENERIC));
    }
}

// ---------------------------------------------------------------------------------------------
// Reduced-precision weights

#[test]
fn bf16_rounds_to_nearest_even() {
    use super::{bf16_bits, bf16_value};
    // Exact values stay; halfway cases go to the even neighbour; the rest to the nearest.
    for value in [
        0.0f32,
        -0.0,
        1.0,
        -2.5,
        0.15625,
        f32::INFINITY,
        f32::NEG_INFINITY,
    ] {
        assert_eq!(
            bf16_value(bf16_bits(value)).to_bits(),
            value.to_bits(),
            "{value}"
        );
    }
    let one = 1.0f32.to_bits();
    let halfway_even = f32::from_bits(one | 0x8000); // 1 + 2⁻⁸: between 1 and 1 + 2⁻⁷
    assert_eq!(bf16_value(bf16_bits(halfway_even)), 1.0);
    let halfway_odd = f32::from_bits((one + 0x1_0000) | 0x8000); // rounds up, to even
    assert_eq!(
        bf16_value(bf16_bits(halfway_odd)),
        f32::from_bits(one + 0x2_0000)
    );
    let above = f32::from_bits(one | 0x8001);
    assert_eq!(bf16_value(bf16_bits(above)), f32::from_bits(one + 0x1_0000));
    assert!(bf16_value(bf16_bits(f32::NAN)).is_nan());
    assert_eq!(bf16_value(bf16_bits(f32::MAX)), f32::INFINITY);
    // Relative error at most 2⁻⁸ (bfloat16 keeps 8 significant bits) on a sweep of normal values.
    let mut rng = SplitMix64::new(5);
    for _ in 0..10_000 {
        let value = rng.uniform(-1.0, 1.0) * 10f32.powi((rng.next_u64() % 20) as i32 - 10);
        let rounded = bf16_value(bf16_bits(value));
        assert!(
            (rounded - value).abs() <= value.abs() * 2f32.powi(-8),
            "{value} -> {rounded}"
        );
    }
}

/// Every table's reduced-precision product against an `f64` product of the same rounded weights
/// (so the kernel's error is measured apart from the rounding of the weights), within the
/// documented bound; and the rounding itself within its bound.
#[test]
fn reduced_products_match_f64_on_the_rounded_weights() {
    use super::reduced::ReducedMatrix;
    use super::Precision;
    for kernels in implementations() {
        for (m, k, n) in [
            (1, 1, 1),
            (7, 5, 3),
            (64, 33, 1),
            (130, 70, 4),
            (200, 128, 2),
        ] {
            let w = random_matrix(m, k, (m * 31 + k) as u64);
            let x = random_matrix(n, k, (n * 17 + k) as u64);
            for precision in [Precision::Bf16, Precision::Int8] {
                let label = format!("{} {} [{m}, {k}] n = {n}", kernels.name, precision.name());
                let packed =
                    ReducedMatrix::for_gemm(w.view(), precision, &kernels.reduced).expect("finite");
                let rounded = packed.dequantized();
                // The rounding of the weights.
                for (row, (original, kept)) in w.outer_iter().zip(rounded.outer_iter()).enumerate()
                {
                    let largest = original.iter().fold(0.0f32, |a, v| a.max(v.abs()));
                    for (&o, &r) in original.iter().zip(&kept) {
                        let bound = match precision {
                            Precision::Bf16 => o.abs() * 2f32.powi(-8),
                            Precision::Int8 => largest / 127.0 / 2.0 * (1.0 + 1e-6),
                        };
                        assert!((o - r).abs() <= bound, "{label}: row {row}: {o} -> {r}");
                    }
                }
                // The product, from zero and accumulating.
                let gamma =
                    2.0 * k as f64 * f64::from(f32::EPSILON) / 2.0 + 4.0 * f64::from(f32::EPSILON);
                for accumulate in [false, true] {
                    let start = random_matrix(n, m, 99);
                    let mut out = if accumulate {
                        start.clone()
                    } else {
                        Array2::from_elem((n, m), f32::NAN)
                    };
                    let start_from = if accumulate { Start::Out } else { Start::Zero };
                    (kernels.reduced.kernel)(
                        x.view(),
                        &packed,
                        out.view_mut(),
                        start_from,
                        Columns::ALL,
                    );
                    for r in 0..n {
                        for c in 0..m {
                            let terms = (0..k)
                                .map(|kk| f64::from(x[[r, kk]]) * f64::from(rounded[[c, kk]]));
                            let exact: f64 = terms.clone().sum::<f64>()
                                + if accumulate {
                                    f64::from(start[[r, c]])
                                } else {
                                    0.0
                                };
                            let size: f64 = terms.map(f64::abs).sum::<f64>()
                                + if accumulate {
                                    f64::from(start[[r, c]]).abs()
                                } else {
                                    0.0
                                };
                            // bfloat16 widens exactly, so the documented chain is known
                            // bit for bit: from zero, fused on the `fma` tables, then added.
                            if precision == Precision::Bf16 {
                                let fused = kernels.name != "generic";
                                let mut chain = 0.0f32;
                                for kk in 0..k {
                                    let (a, b) = (x[[r, kk]], rounded[[c, kk]]);
                                    chain = if fused {
                                        a.mul_add(b, chain)
                                    } else {
                                        a * b + chain
                                    };
                                }
                                if accumulate {
                                    chain += start[[r, c]];
                                }
                                assert_eq!(
                                    out[[r, c]].to_bits(),
                                    chain.to_bits(),
                                    "{label} accumulate {accumulate}: [{r}, {c}] is not the chain"
                                );
                            }
                            let error = (f64::from(out[[r, c]]) - exact).abs();
                            assert!(
                                error <= gamma * size + 1e-30,
                                "{label} accumulate {accumulate}: [{r}, {c}] {} vs {exact} (error {error:.3e}, bound {:.3e})",
                                out[[r, c]],
                                gamma * size
                            );
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn int8_refuses_weights_that_are_not_finite() {
    use super::{Precision, ReducedMatrix};
    let mut w = Array2::<f32>::zeros((3, 4));
    w[[1, 2]] = f32::INFINITY;
    assert!(ReducedMatrix::new(w.view(), Precision::Int8).is_none());
    assert!(ReducedMatrix::new(w.view(), Precision::Bf16).is_some());
}

/// The public entry point: any strides, the selected table.
#[test]
fn gemm_reduced_accepts_any_strides() {
    use super::{gemm_reduced, Precision, ReducedMatrix};
    let w = random_matrix(40, 24, 3);
    let x = random_matrix(6, 24, 4);
    for precision in [Precision::Bf16, Precision::Int8] {
        let packed = ReducedMatrix::new(w.view(), precision).expect("finite");
        let mut standard = Array2::<f32>::zeros((6, 40));
        gemm_reduced(x.view(), &packed, standard.view_mut(), false);
        let x_columns = x.t().as_standard_layout().into_owned();
        let mut out_columns = Array2::<f32>::zeros((40, 6));
        gemm_reduced(
            x_columns.t(),
            &packed,
            out_columns.view_mut().reversed_axes(),
            false,
        );
        assert_eq!(out_columns.t(), standard);
        let expected = x.dot(&packed.dequantized().t());
        for (a, b) in standard.iter().zip(&expected) {
            assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
        }
    }
}

/// Every table's transpose against ndarray's transposed view, copied and
/// accumulated, for shapes of whole 8 × 8 blocks, of edges alone and of both.
#[test]
fn every_table_transposes_as_the_transposed_view() {
    for kernels in implementations() {
        for (rows, cols) in [
            (1, 1),
            (3, 40),
            (8, 8),
            (16, 24),
            (37, 17),
            (100, 64),
            (7, 9),
        ] {
            let a = random_matrix(rows, cols, (rows * 100 + cols) as u64);
            let start = random_matrix(cols, rows, 7);
            let flat = |m: &Array2<f32>| m.as_standard_layout().iter().copied().collect::<Vec<_>>();
            let mut out = flat(&start);
            (kernels.transpose)(&flat(&a), rows, cols, &mut out, false);
            assert_eq!(
                out,
                flat(&a.t().to_owned()),
                "{} {rows}x{cols}",
                kernels.name
            );
            let mut sum = flat(&start);
            (kernels.transpose)(&flat(&a), rows, cols, &mut sum, true);
            let expected = &start + &a.t();
            assert_eq!(
                sum,
                flat(&expected),
                "{} {rows}x{cols} accumulated",
                kernels.name
            );
        }
    }
}
