//! Portable kernels: the reference every other implementation is measured against.
//!
//! Always compiled, free of `unsafe`: the activations are the scalar definitions of
//! [`crate::ops`], the textbook formulas evaluated with the standard library's `exp` and `tanh`,
//! so they are as accurate as `f32` allows (within a couple of units in the last place).
//! Non-finite inputs follow IEEE semantics: NaN stays NaN, infinities saturate.

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};

use super::frame::Activations;
use super::gemm::{gemm_rows, Columns, PackedMatrix, Portable, Separate, Start};
use super::reduced::{gemm_reduced_rows, PortableDot, ReducedMatrix};
use crate::ops::{relu, sigmoid, tanh};

/// Columns per panel of the generic table: two 128-bit vectors, the baseline width of x86-64
/// (SSE2) and aarch64 (NEON).
pub(super) const GENERIC_PANEL: usize = 8;

/// Rows per register tile of the generic table: 4 × 8 accumulators are 8 of the 16 vector
/// registers of baseline x86-64, leaving room for the weights, the broadcast input and the
/// products (no fused multiply-add there). Wider tiles spill and run slower.
const GENERIC_TILE_ROWS: usize = 4;

/// Computes `out = x · wᵀ`, or `out += x · wᵀ` when `accumulate` is true.
///
/// Shapes: `x` is `[B, K]`, `w` is `[N, K]` (one row per output unit, the PyTorch weight layout),
/// `out` is `[B, N]`.
/// Any strides are accepted.
/// When `accumulate` is false the previous contents of `out` are ignored, even NaN.
///
/// The product is ndarray's `general_mat_mul` (the `matrixmultiply` crate), whose summation order
/// and use of fused multiply-add depend on the CPU, so results may differ from a naive loop by
/// rounding.
///
/// Shapes are the caller's responsibility: they are checked by `debug_assert!`, and a mismatch
/// panics inside ndarray in every build.
pub fn matmul_bt(
    x: ArrayView2<'_, f32>,
    w: ArrayView2<'_, f32>,
    mut out: ArrayViewMut2<'_, f32>,
    accumulate: bool,
) {
    debug_assert_eq!(
        x.ncols(),
        w.ncols(),
        "matmul_bt: x is {:?} but w is {:?} (inner dimensions differ)",
        x.shape(),
        w.shape()
    );
    debug_assert_eq!(
        out.shape(),
        [x.nrows(), w.nrows()],
        "matmul_bt: out has the wrong shape for x {:?} times w {:?} transposed",
        x.shape(),
        w.shape()
    );
    general_mat_mul(1.0, &x, &w.t(), beta(accumulate), &mut out);
}

/// Computes `out = x · w`, or `out += x · w` when `accumulate` is true.
///
/// Shapes: `x` is `[B, K]`, `w` is `[K, N]`, `out` is `[B, N]`.
/// Otherwise as [`matmul_bt`].
pub fn matmul(
    x: ArrayView2<'_, f32>,
    w: ArrayView2<'_, f32>,
    mut out: ArrayViewMut2<'_, f32>,
    accumulate: bool,
) {
    debug_assert_eq!(
        x.ncols(),
        w.nrows(),
        "matmul: x is {:?} but w is {:?} (inner dimensions differ)",
        x.shape(),
        w.shape()
    );
    debug_assert_eq!(
        out.shape(),
        [x.nrows(), w.ncols()],
        "matmul: out has the wrong shape for x {:?} times w {:?}",
        x.shape(),
        w.shape()
    );
    general_mat_mul(1.0, &x, &w, beta(accumulate), &mut out);
}

/// The generic table's activations: the reference formulas and the
/// standard library, as its slice kernels.
#[derive(Debug, Clone, Copy)]
pub(super) struct Library;

impl Activations for Library {
    #[inline(always)]
    fn sigmoid(x: f32) -> f32 {
        sigmoid(x)
    }

    #[inline(always)]
    fn tanh(x: f32) -> f32 {
        tanh(x)
    }

    #[inline(always)]
    fn exp(x: f32) -> f32 {
        x.exp()
    }
}

/// The side of the square tiles the portable transpose works in: 16 rows of 16 floats on each
/// side are 32 cache lines, well inside L1.
const TRANSPOSE_TILE: usize = 16;

/// The portable transpose ([`TransposeKernel`](super::types::TransposeKernel)).
pub(super) fn transpose_generic(
    a: &[f32],
    rows: usize,
    cols: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    transpose_region(a, cols, out, rows, (0..rows, 0..cols), accumulate);
}

/// `out[c, r] = a[r, c]` (or `+=`) for the rows and columns of `a` in `region`; `a` has
/// `cols` columns and `out` has `rows` columns. In square tiles: element by element in `out`'s
/// order, each read of `a` would be another cache line.
pub(super) fn transpose_region(
    a: &[f32],
    cols: usize,
    out: &mut [f32],
    rows: usize,
    region: (std::ops::Range<usize>, std::ops::Range<usize>),
    accumulate: bool,
) {
    let (row_range, col_range) = region;
    for r0 in row_range.clone().step_by(TRANSPOSE_TILE) {
        let r1 = (r0 + TRANSPOSE_TILE).min(row_range.end);
        for c0 in col_range.clone().step_by(TRANSPOSE_TILE) {
            for c in c0..(c0 + TRANSPOSE_TILE).min(col_range.end) {
                // Row c of `out` takes column c of `a`: written in order, read from the tile.
                let column = a[r0 * cols + c..].iter().step_by(cols);
                let row = &mut out[c * rows + r0..c * rows + r1];
                if accumulate {
                    row.iter_mut().zip(column).for_each(|(o, v)| *o += v);
                } else {
                    row.iter_mut().zip(column).for_each(|(o, v)| *o = *v);
                }
            }
        }
    }
}

/// `output[i] = f(input[i])` (the slices have the same length).
#[inline(always)]
pub(super) fn map_into(input: &[f32], output: &mut [f32], f: impl Fn(f32) -> f32) {
    assert_eq!(input.len(), output.len(), "map_into: lengths differ");
    for (out, &value) in output.iter_mut().zip(input) {
        *out = f(value);
    }
}

/// [`sigmoid`] of every element of `input`, into `output`.
pub fn sigmoid_into_generic(input: &[f32], output: &mut [f32]) {
    map_into(input, output, sigmoid);
}

/// [`tanh`] of every element of `input`, into `output`.
pub fn tanh_into_generic(input: &[f32], output: &mut [f32]) {
    map_into(input, output, tanh);
}

/// `f32::exp` of every element of `input`, into `output`.
pub fn exp_into_generic(input: &[f32], output: &mut [f32]) {
    map_into(input, output, f32::exp);
}

/// Applies [`sigmoid`] to every element.
pub fn sigmoid_f32_generic(values: &mut [f32]) {
    values.iter_mut().for_each(|value| *value = sigmoid(*value));
}

/// Applies [`tanh`] to every element.
pub fn tanh_f32_generic(values: &mut [f32]) {
    values.iter_mut().for_each(|value| *value = tanh(*value));
}

/// Applies `f32::exp` to every element.
pub fn exp_f32_generic(values: &mut [f32]) {
    values.iter_mut().for_each(|value| *value = value.exp());
}

/// `out = start + x · wᵀ` with `w` packed for the generic table: the blocked loop nest of
/// [`gemm_rows`] with separate multiplies and adds (two roundings per step), which LLVM
/// vectorises for the baseline instruction set.
pub(super) fn gemm_generic(
    x: ArrayView2<'_, f32>,
    w: &PackedMatrix,
    out: ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    columns: Columns,
) {
    gemm_rows::<GENERIC_TILE_ROWS, GENERIC_PANEL, Portable<Separate>>(x, w, out, start, columns);
}

/// `out = start + x · wᵀ` with `w` in reduced precision, packed for the generic table: separate
/// multiplies and adds, vectorised by LLVM for the baseline instruction set.
pub(super) fn gemm_reduced_generic(
    x: ArrayView2<'_, f32>,
    w: &ReducedMatrix,
    out: ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    columns: Columns,
) {
    gemm_reduced_rows::<GENERIC_PANEL, PortableDot<Separate>>(x, w, out, start, columns);
}

/// Applies [`relu`] to every element.
pub fn relu_f32_generic(values: &mut [f32]) {
    values.iter_mut().for_each(|value| *value = relu(*value));
}

/// The `beta` of `general_mat_mul` (`out = alpha · a · b + beta · out`); a zero beta makes it
/// overwrite `out` without reading it.
fn beta(accumulate: bool) -> f32 {
    if accumulate {
        1.0
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use ndarray::{s, Array2};
    use proptest::collection::vec;
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn matmul_bt_matches_naive_loop((x, w, initial) in matmul_operands(false), accumulate: bool) {
            let mut out = initial.clone();
            matmul_bt(x.view(), w.view(), out.view_mut(), accumulate);
            let start = if accumulate { initial } else { Array2::zeros(out.raw_dim()) };
            assert_close(&out, &naive_matmul(x.view(), w.t(), start), x.view(), w.t());
        }

        #[test]
        fn matmul_matches_naive_loop((x, w, initial) in matmul_operands(true), accumulate: bool) {
            let mut out = initial.clone();
            matmul(x.view(), w.view(), out.view_mut(), accumulate);
            let start = if accumulate { initial } else { Array2::zeros(out.raw_dim()) };
            assert_close(&out, &naive_matmul(x.view(), w.view(), start), x.view(), w.view());
        }
    }

    #[test]
    fn matmul_bt_overwrites_nan_when_not_accumulating() {
        let x = Array2::from_shape_vec((2, 3), vec![1.0, 2.0, 3.0, -1.0, 0.5, 0.0]).unwrap();
        let w = Array2::from_shape_vec((2, 3), vec![1.0, 0.0, 1.0, 0.0, 2.0, 0.0]).unwrap();
        let mut out = Array2::from_elem((2, 2), f32::NAN);
        matmul_bt(x.view(), w.view(), out.view_mut(), false);
        assert_eq!(
            out,
            Array2::from_shape_vec((2, 2), vec![4.0, 4.0, -1.0, 1.0]).unwrap()
        );
    }

    #[test]
    fn matmul_bt_accepts_strided_views() {
        // Every other column of `x_wide` and a transposed `w_t` are both non-contiguous.
        let x_wide = Array2::from_shape_fn((3, 8), |(row, col)| (row * 8 + col) as f32 * 0.25);
        let w_t = Array2::from_shape_fn((4, 5), |(row, col)| row as f32 - col as f32 * 0.5);
        let x = x_wide.slice(s![.., ..;2]);
        let w = w_t.t();
        let mut out = Array2::zeros((3, 5));
        matmul_bt(x, w, out.view_mut(), false);
        let expected = naive_matmul(x, w.t(), Array2::zeros((3, 5)));
        assert_close(&out, &expected, x, w.t());
    }

    /// `(x, w, out)` for a random `[B, K] · [K, N]` product, with `w` stored `[K, N]` when
    /// `w_is_k_by_n` and `[N, K]` otherwise; empty dimensions included.
    fn matmul_operands(
        w_is_k_by_n: bool,
    ) -> impl Strategy<Value = (Array2<f32>, Array2<f32>, Array2<f32>)> {
        (0usize..6, 0usize..7, 0usize..6).prop_flat_map(move |(batch, inner, outer)| {
            let w_shape = if w_is_k_by_n {
                (inner, outer)
            } else {
                (outer, inner)
            };
            (
                matrix(batch, inner),
                matrix(w_shape.0, w_shape.1),
                matrix(batch, outer),
            )
        })
    }

    fn matrix(rows: usize, cols: usize) -> impl Strategy<Value = Array2<f32>> {
        vec(-4.0f32..4.0, rows * cols).prop_map(move |values| {
            Array2::from_shape_vec((rows, cols), values).expect("length is rows * cols")
        })
    }

    /// `start + x · w` with the sums in f64, as a triple loop.
    fn naive_matmul(
        x: ArrayView2<'_, f32>,
        w: ArrayView2<'_, f32>,
        start: Array2<f32>,
    ) -> Array2<f64> {
        let mut product = start.mapv(f64::from);
        for row in 0..x.nrows() {
            for col in 0..w.ncols() {
                for inner in 0..x.ncols() {
                    product[[row, col]] += f64::from(x[[row, inner]]) * f64::from(w[[inner, col]]);
                }
            }
        }
        product
    }

    /// Each entry within f32 rounding of the f64 product: a relative bound on the sum of the
    /// magnitudes of the terms, plus a little for the accumulated start value.
    fn assert_close(
        actual: &Array2<f32>,
        expected: &Array2<f64>,
        x: ArrayView2<'_, f32>,
        w: ArrayView2<'_, f32>,
    ) {
        assert_eq!(actual.shape(), expected.shape());
        let x_abs = x.mapv(f32::abs);
        let w_abs = w.mapv(f32::abs);
        let magnitudes = naive_matmul(x_abs.view(), w_abs.view(), Array2::zeros(actual.raw_dim()));
        for ((idx, &value), &reference) in actual.indexed_iter().zip(expected.iter()) {
            let bound = 1e-5 * (magnitudes[idx] + reference.abs()) + 1e-6;
            assert!(
                (f64::from(value) - reference).abs() <= bound,
                "entry {idx:?}: {value} vs {reference}"
            );
        }
    }
}
