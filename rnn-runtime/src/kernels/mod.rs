//! CPU kernels on `f32`: activations, soft thresholding and matrix products.
//!
//! Five kinds of entry point:
//!
//! - scalar functions ([`sigmoid`], [`tanh`], [`relu`], [`soft_threshold`]): the reference
//!   formulas, always the portable implementation (defined in [`crate::ops`], re-exported here);
//! - in-place slice kernels ([`sigmoid_slice`], [`tanh_slice`], [`exp_slice`], [`relu_slice`]):
//!   dispatched through a table of implementations chosen once per process, on first use;
//! - products with a prepacked weight matrix ([`PackedMatrix`], [`gemm_packed`]): dispatched the
//!   same way, for the weights a model multiplies by at every step; and with weights rounded to
//!   bfloat16 or int8 ([`ReducedMatrix`], [`gemm_reduced`], `reduced.rs`), `f32` otherwise;
//! - general matrix products ([`matmul_bt`], [`matmul`]) on ndarray views, computed by ndarray's
//!   `general_mat_mul`, whose `matrixmultiply` backend does its own CPU feature detection.
//! - a transpose ([`transpose_slice`]), copying or accumulating, dispatched through the table:
//!   the weight-gradient products transpose their operands at every training call.
//!
//! # Implementations
//!
//! - `generic` (`generic.rs`): portable and always compiled. Activations are the scalar
//!   reference formulas; the packed product is the blocked loop nest of `gemm.rs` with separate
//!   multiplies and adds, vectorised by LLVM for the baseline instruction set.
//! - `avx2` and `avx512` (`x86_64.rs`): the same loop nest with fused multiply-adds and larger
//!   register tiles, and the vectorisable approximations of `approx.rs` for `exp`, sigmoid and
//!   `tanh` (error bounds there, a few units in the last place).
//!
//! The table starts as the generic one; on x86-64 the best table the CPU supports (AVX-512F,
//! else AVX2 + FMA) replaces it after runtime detection. The environment variable
//! `UNROLL_KERNELS` overrides the choice when the process first uses a kernel: `generic` forces
//! the portable table, `avx2` or `avx512` asks for that table (the generic one if the CPU lacks
//! it), anything else (or unset) means the best available.
//!
//! Results within one table are deterministic and, for [`gemm_packed`], independent of the
//! number of rows: a row of the product is bit-identical whether computed alone or in a batch.
//! Different tables round differently (fused or separate multiply-adds, approximated or library
//! activations); all agree with the scalar reference within the tolerances that the shared test
//! suite (`kernels/tests.rs`) documents.
//!
//! # Files
//!
//! Bottom to top, each importing only from those before it: `gemm.rs` (the packed layout and the
//! blocked loop nest), `reduced.rs` (weights in bfloat16 and int8, in the same layout), `approx.rs` (the vectorisable activations), `frame.rs` (the tile and pass
//! loops, shared with `fused.rs` above), `generic.rs`, `types.rs` (the type of a table),
//! `x86_64.rs`, and this module, which chooses the table and holds the dispatched entry points.
//! The scalar definitions they all build on are in [`crate::ops`], below the kernels.

mod approx;
pub(crate) mod frame;
mod gemm;
mod generic;
mod reduced;
#[cfg(test)]
mod tests;
mod types;
#[cfg(target_arch = "x86_64")]
mod x86_64;

use std::ops::Range;
use std::sync::OnceLock;

use ndarray::{Array2, ArrayView2, ArrayViewMut2, CowArray};

pub use crate::ops::{relu, sigmoid, soft_threshold, tanh};
use frame::{binary_tile_portable, run_rows, Block, Operand, Pass, Tile};
pub use gemm::{Columns, PackedMatrix};
use gemm::{Gemm, Start};
use generic::Library;
pub use generic::{matmul, matmul_bt};
use reduced::ReducedGemm;
pub use reduced::{bf16_bits, bf16_value, Precision, ReducedMatrix};
use types::{Kernels, LaneSet};

/// Applies [`sigmoid`] to every element, in place.
///
/// With a vectorised table the result is within a few units in the last place of the reference
/// (at most about 1.2·10⁻⁷ absolute); see the module documentation.
pub fn sigmoid_slice(values: &mut [f32]) {
    (table().sigmoid_f32)(values);
}

/// Applies [`tanh`] to every element, in place (within about 1.2·10⁻⁷ with a vectorised table).
pub fn tanh_slice(values: &mut [f32]) {
    (table().tanh_f32)(values);
}

/// Applies `e^x` to every element, in place (within a few units in the last place with a
/// vectorised table; +∞ above about 88.7, subnormals then 0 below about −87.3).
pub fn exp_slice(values: &mut [f32]) {
    (table().exp_f32)(values);
}

/// `out = op(a, b)` over a tile, vectorised for this CPU (the results are
/// the same on every table: each element is one correctly rounded
/// operation).
pub(crate) fn binary_tile(
    tile: Tile,
    out: &mut [f32],
    a: Operand<'_>,
    b: Operand<'_>,
    op: crate::ops::Binary,
) {
    (table().binary_tile)(tile, out, a, b, op);
}

/// `out = aᵀ`, or `out += aᵀ` when `accumulate`: `a` is `rows × cols` and `out` is
/// `cols × rows`, both row-major. Every element is one copy or one addition, so every table
/// gives the same bits.
///
/// # Panics
///
/// If a slice's length is not `rows · cols`.
pub fn transpose_slice(a: &[f32], rows: usize, cols: usize, out: &mut [f32], accumulate: bool) {
    assert_eq!(a.len(), rows * cols, "transpose: a is not {rows} x {cols}");
    assert_eq!(
        out.len(),
        rows * cols,
        "transpose: out is not {cols} x {rows}"
    );
    (table().transpose)(a, rows, cols, out, accumulate);
}

/// [`sigmoid_slice`] of `input` written into `output` (same length; the same results).
///
/// # Panics
///
/// If the lengths differ.
pub fn sigmoid_into(input: &[f32], output: &mut [f32]) {
    (table().sigmoid_into)(input, output);
}

/// [`tanh_slice`] of `input` written into `output` (same length; the same results).
///
/// # Panics
///
/// If the lengths differ.
pub fn tanh_into(input: &[f32], output: &mut [f32]) {
    (table().tanh_into)(input, output);
}

/// [`exp_slice`] of `input` written into `output` (same length; the same results).
///
/// # Panics
///
/// If the lengths differ.
pub fn exp_into(input: &[f32], output: &mut [f32]) {
    (table().exp_into)(input, output);
}

/// Applies [`relu`] to every element, in place.
pub fn relu_slice(values: &mut [f32]) {
    (table().relu_f32)(values);
}

/// Computes `out = x · wᵀ`, or `out += x · wᵀ` when `accumulate` is true, with `w` packed.
///
/// Shapes: `x` is `[n, k]`, `w` packs a `[m, k]` matrix, `out` is `[n, m]`; any `n`, including 0.
/// When `accumulate` is false the previous contents of `out` are ignored, even NaN.
///
/// Fast when the rows of `x` and of `out` are contiguous (column stride 1), whatever the row
/// stride, e.g. a range of rows of a bigger standard-layout array; other layouts are copied
/// first, with the same results.
///
/// Each output element is one chain of multiply-adds in the order of the inner dimension,
/// starting from `out` (when accumulating) or 0, so row `r` of `out` depends only on row `r` of
/// `x` (and of `out`): it is bit-identical whatever `n` and wherever the row sits in the batch.
/// Its error is at most `k·2⁻²³` times the sum of the magnitudes of the terms (and of the
/// starting value).
///
/// # Panics
///
/// If the shapes disagree, like [`matmul_bt`]: they are the caller's responsibility.
pub fn gemm_packed(
    x: ArrayView2<'_, f32>,
    w: &PackedMatrix,
    out: ArrayViewMut2<'_, f32>,
    accumulate: bool,
) {
    gemm_packed_columns(x, w, out, accumulate, Columns::ALL);
}

/// [`gemm_packed`] computing only the output columns `columns` selects; the others keep their
/// values. Each computed element is bit-identical to [`gemm_packed`]'s.
///
/// # Panics
///
/// If the shapes disagree (see [`gemm_packed`]).
pub fn gemm_packed_columns(
    x: ArrayView2<'_, f32>,
    w: &PackedMatrix,
    out: ArrayViewMut2<'_, f32>,
    accumulate: bool,
    columns: Columns,
) {
    let start = if accumulate { Start::Out } else { Start::Zero };
    gemm_packed_from(x, w, out, start, columns);
}

/// Computes `out = out + (x · wᵀ)` with `w` packed: the product formed from zero as
/// [`gemm_packed`] forms it without accumulating, then added to `out`, so that a sum over two
/// parts of a batch is the first part's plus the second's, as when each is formed apart.
///
/// # Panics
///
/// If the shapes disagree (see [`gemm_packed`]).
pub fn gemm_packed_add(x: ArrayView2<'_, f32>, w: &PackedMatrix, out: ArrayViewMut2<'_, f32>) {
    gemm_packed_from(x, w, out, Start::Add, Columns::ALL);
}

/// Computes `out = x[.., ..split] · w[.., ..split]ᵀ + x[.., split..] · w[.., split..]ᵀ` with `w`
/// packed: two products over the inner indices before and from `split`, each formed from zero
/// as [`gemm_packed`] forms it without accumulating, then added; the previous contents of `out`
/// are ignored. A sum over a batch whose rows (the inner index) make two parts is so the first
/// part's plus the second's, as when each is formed apart.
///
/// # Panics
///
/// If the shapes disagree (see [`gemm_packed`]).
pub fn gemm_packed_split(
    x: ArrayView2<'_, f32>,
    w: &PackedMatrix,
    out: ArrayViewMut2<'_, f32>,
    split: usize,
) {
    gemm_packed_from(x, w, out, Start::Split(split), Columns::ALL);
}

/// Computes `out = row + x · wᵀ` for every row of `out`, with `w` packed: [`gemm_packed`]
/// accumulating onto `row` (a bias) without writing it into `out` first, bit-identical to
/// filling every row of `out` with `row` and then calling [`gemm_packed`] with `accumulate`.
///
/// # Panics
///
/// If the shapes disagree (see [`gemm_packed`]), or `row` is not `w.rows()` long.
pub fn gemm_packed_onto_row(
    x: ArrayView2<'_, f32>,
    w: &PackedMatrix,
    out: ArrayViewMut2<'_, f32>,
    row: &[f32],
) {
    gemm_packed_onto_row_columns(x, w, out, row, Columns::ALL);
}

/// [`gemm_packed_onto_row`] computing only the output columns `columns` selects; the others
/// keep their values.
///
/// # Panics
///
/// As [`gemm_packed_onto_row`].
pub fn gemm_packed_onto_row_columns(
    x: ArrayView2<'_, f32>,
    w: &PackedMatrix,
    out: ArrayViewMut2<'_, f32>,
    row: &[f32],
    columns: Columns,
) {
    assert_eq!(
        row.len(),
        w.rows(),
        "gemm_packed_onto_row: a row of {} for packed w [{}, {}]",
        row.len(),
        w.rows(),
        w.cols()
    );
    gemm_packed_from(x, w, out, Start::Row(row), columns);
}

impl PackedMatrix {
    /// Packs `w: [m, k]` for the kernels selected for this process.
    ///
    /// Any strides are accepted; packing reads `w` once.
    pub fn new(w: ArrayView2<'_, f32>) -> PackedMatrix {
        let table = table();
        PackedMatrix::for_gemm_by(w, &table.gemm, table.transpose)
    }

    /// Packs `gᵀ` for `g: [k, m]`, reading `g` row by row, into `buffer`
    /// (reused; [`into_buffer`](Self::into_buffer) gives it back).
    pub fn transposed_in(g: ArrayView2<'_, f32>, buffer: Vec<f32>) -> PackedMatrix {
        PackedMatrix::transposed_for_gemm(g, buffer, &table().gemm)
    }

    /// The floats [`transposed_in`](Self::transposed_in) needs for `g: [k, m]`.
    pub fn transposed_floats(k: usize, m: usize) -> usize {
        PackedMatrix::floats(m, k, &table().gemm)
    }
}

impl ReducedMatrix {
    /// Rounds `w: [m, k]` to `precision` and packs it for the kernels selected for this
    /// process; `None` for [`Precision::Int8`] when a weight is not finite.
    pub fn new(w: ArrayView2<'_, f32>, precision: Precision) -> Option<ReducedMatrix> {
        ReducedMatrix::for_gemm(w, precision, &table().reduced)
    }
}

/// Computes `out = x · wᵀ`, or `out += x · wᵀ` when `accumulate` is true, with `w` in reduced
/// precision ([`ReducedMatrix`]); inputs, accumulation and outputs in `f32`.
///
/// Shapes as [`gemm_packed`]'s; rows of `x` and `out` that are not contiguous are copied. A
/// row of `out` depends only on the same row of `x` (and of `out`).
///
/// # Panics
///
/// If the shapes disagree, as [`gemm_packed`].
pub fn gemm_reduced(
    x: ArrayView2<'_, f32>,
    w: &ReducedMatrix,
    out: ArrayViewMut2<'_, f32>,
    accumulate: bool,
) {
    gemm_reduced_columns(x, w, out, accumulate, Columns::ALL);
}

/// [`gemm_reduced`] computing only the output columns `columns` selects; the others keep their
/// values. Each computed element is bit-identical to [`gemm_reduced`]'s.
///
/// # Panics
///
/// As [`gemm_reduced`].
pub fn gemm_reduced_columns(
    x: ArrayView2<'_, f32>,
    w: &ReducedMatrix,
    out: ArrayViewMut2<'_, f32>,
    accumulate: bool,
    columns: Columns,
) {
    let start = if accumulate { Start::Out } else { Start::Zero };
    gemm_reduced_from(x, w, out, start, columns);
}

/// Computes `out = row + x · wᵀ` for every row of `out`, with `w` in reduced precision: a bias
/// added to each product, bit-identical to filling every row of `out` with `row` and then
/// calling [`gemm_reduced`] with `accumulate`.
///
/// # Panics
///
/// As [`gemm_reduced`], or if `row` is not `w.rows()` long.
pub fn gemm_reduced_onto_row(
    x: ArrayView2<'_, f32>,
    w: &ReducedMatrix,
    out: ArrayViewMut2<'_, f32>,
    row: &[f32],
) {
    gemm_reduced_onto_row_columns(x, w, out, row, Columns::ALL);
}

/// [`gemm_reduced_onto_row`] computing only the output columns `columns` selects.
///
/// # Panics
///
/// As [`gemm_reduced_onto_row`].
pub fn gemm_reduced_onto_row_columns(
    x: ArrayView2<'_, f32>,
    w: &ReducedMatrix,
    out: ArrayViewMut2<'_, f32>,
    row: &[f32],
    columns: Columns,
) {
    assert_eq!(
        row.len(),
        w.rows(),
        "gemm_reduced_onto_row: a row of {} for w [{}, {}]",
        row.len(),
        w.rows(),
        w.cols()
    );
    gemm_reduced_from(x, w, out, Start::Row(row), columns);
}

/// [`gemm_reduced`] with any starting values.
fn gemm_reduced_from(
    x: ArrayView2<'_, f32>,
    w: &ReducedMatrix,
    out: ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    columns: Columns,
) {
    assert!(
        x.ncols() == w.cols() && out.dim() == (x.nrows(), w.rows()),
        "gemm_reduced: x {:?} times w [{}, {}] transposed does not fit out {:?}",
        x.shape(),
        w.rows(),
        w.cols(),
        out.shape()
    );
    let kernel = w.gemm().kernel;
    on_contiguous_rows(x, out, start, columns, |x, out| {
        kernel(x, w, out, start, columns)
    });
}

/// [`gemm_packed`] with any starting values.
fn gemm_packed_from(
    x: ArrayView2<'_, f32>,
    w: &PackedMatrix,
    out: ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    columns: Columns,
) {
    assert!(
        x.ncols() == w.cols() && out.dim() == (x.nrows(), w.rows()),
        "gemm_packed: x {:?} times packed w [{}, {}] transposed does not fit out {:?}",
        x.shape(),
        w.rows(),
        w.cols(),
        out.shape()
    );
    let gemm = w.gemm().kernel;
    on_contiguous_rows(x, out, start, columns, |x, out| {
        gemm(x, w, out, start, columns)
    });
}

/// Runs a product kernel, which wants the rows of `x` and `out` contiguous (any row stride), on
/// copies of those whose rows are not, and copies the result back into `out`.
fn on_contiguous_rows(
    x: ArrayView2<'_, f32>,
    mut out: ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    columns: Columns,
    kernel: impl FnOnce(ArrayView2<'_, f32>, ArrayViewMut2<'_, f32>),
) {
    let x = if rows_are_contiguous(x.view()) {
        CowArray::from(x)
    } else {
        x.as_standard_layout()
    };
    if rows_are_contiguous(out.view()) {
        kernel(x.view(), out);
    } else {
        let mut contiguous = match start {
            Start::Out | Start::Add => out.as_standard_layout().into_owned(),
            Start::Split(_) if columns == Columns::ALL => Array2::zeros(out.raw_dim()),
            Start::Zero | Start::Row(_) if columns == Columns::ALL => Array2::zeros(out.raw_dim()),
            // The columns not computed keep their values.
            Start::Zero | Start::Row(_) | Start::Split(_) => out.as_standard_layout().into_owned(),
        };
        kernel(x.view(), contiguous.view_mut());
        out.assign(&contiguous);
    }
}

/// Whether every row of `view` is a contiguous slice (column stride 1; the row stride is free).
/// Empty views and single columns qualify whatever their strides.
fn rows_are_contiguous(view: ArrayView2<'_, f32>) -> bool {
    view.is_empty() || view.ncols() == 1 || view.strides()[1] == 1
}

/// Runs a fused pass over `rows` rows, columns `columns` of each, with this
/// table's blocks of lanes (see [`frame::run_rows`]).
pub(crate) fn run_pass<P: Pass>(pass: &mut P, rows: usize, columns: Range<usize>) {
    run_pass_on(table(), pass, rows, columns);
}

/// [`run_pass`] with the blocks of `kernels`.
fn run_pass_on<P: Pass>(kernels: &Kernels, pass: &mut P, rows: usize, columns: Range<usize>) {
    match kernels.lanes {
        LaneSet::Generic => run_rows::<P, Block<8, Library>, Block<4, Library>, Block<1, Library>>(
            pass, rows, columns,
        ),
        #[cfg(target_arch = "x86_64")]
        LaneSet::Avx2 => x86_64::pass_avx2(pass, rows, columns),
        #[cfg(target_arch = "x86_64")]
        LaneSet::Avx512 => x86_64::pass_avx512(pass, rows, columns),
    }
}

/// The portable implementations: the starting point of every table.
static GENERIC: Kernels = Kernels {
    name: "generic",
    gemm: Gemm {
        name: "generic",
        panel_width: generic::GENERIC_PANEL,
        kernel: generic::gemm_generic,
    },
    reduced: ReducedGemm {
        name: "generic",
        panel_width: generic::GENERIC_PANEL,
        kernel: generic::gemm_reduced_generic,
    },
    sigmoid_f32: generic::sigmoid_f32_generic,
    tanh_f32: generic::tanh_f32_generic,
    exp_f32: generic::exp_f32_generic,
    relu_f32: generic::relu_f32_generic,
    sigmoid_into: generic::sigmoid_into_generic,
    tanh_into: generic::tanh_into_generic,
    exp_into: generic::exp_into_generic,
    binary_tile: binary_tile_portable,
    transpose: generic::transpose_generic,
    lanes: LaneSet::Generic,
};

/// The environment variable that overrides the choice of table.
const KERNELS_ENV: &str = "UNROLL_KERNELS";

/// The table in use, chosen on first call and fixed for the rest of the process.
fn table() -> &'static Kernels {
    static TABLE: OnceLock<&'static Kernels> = OnceLock::new();
    TABLE.get_or_init(|| select(std::env::var(KERNELS_ENV).ok().as_deref()))
}

/// Every table this CPU can run, generic first, best last; with the names of the tables this
/// architecture has but the CPU cannot run.
fn available() -> (Vec<&'static Kernels>, Vec<&'static str>) {
    let mut found = vec![&GENERIC];
    let mut missing = Vec::new();
    #[cfg(target_arch = "x86_64")]
    for (name, kernels) in [("avx2", x86_64::avx2()), ("avx512", x86_64::avx512())] {
        match kernels {
            Some(kernels) => found.push(kernels),
            None => missing.push(name),
        }
    }
    (found, missing)
}

/// Builds the table for this CPU: the one `request` names if the CPU runs it (`generic` always),
/// otherwise the best available (the last of [`available`]).
fn select(request: Option<&str>) -> &'static Kernels {
    let (found, missing) = available();
    let best = found.last().copied().unwrap_or(&GENERIC);
    match request.map(str::trim) {
        None | Some("" | "auto") => best,
        Some(name) if missing.contains(&name) => &GENERIC,
        Some(name) => found
            .iter()
            .copied()
            .find(|kernels| kernels.name == name)
            .unwrap_or(best),
    }
}
