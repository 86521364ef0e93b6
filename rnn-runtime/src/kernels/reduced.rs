//! Weight matrices in reduced precision, for products whose speed is the bytes of weights read
//! per step (a streaming LSTM reads all of `W_hh` at every step): bfloat16, and int8 with one
//! scale per output row. Inputs, outputs and accumulation stay `f32`.
//!
//! # Layout
//!
//! As a [`PackedMatrix`](super::PackedMatrix): panels of `NR` consecutive rows of `w` (output
//! columns of the product), each panel k-major, the last one padded with zeros; only the element
//! type differs: the top 16 bits of an `f32` (bfloat16), or an `i8` with the row's scale beside.
//!
//! # Rounding
//!
//! - bfloat16: each weight rounded to the nearest bfloat16, ties to even ([`bf16_bits`]);
//!   relative error at most `2⁻⁸` per weight (8 significant bits).
//! - int8: symmetric, one scale per row: `s = max|w_row| / 127`, `q = round(w / s)`, so
//!   `|w − q·s| ≤ s/2`.
//!
//! # Summation order
//!
//! Each output element is one chain over the inner dimension from zero,
//! `acc = mul_add(x[kk], w[kk], acc)` with the weight widened to `f32` exactly, then (int8)
//! `acc · s`, then added to the start (`out`'s own value, or a bias row) if there is one. Against the exact product of `x` with the
//! *rounded* weights the error is at most `γ · Σ|x·w|` with `γ` as for `f32` weights
//! (`gemm.rs`), plus one rounding of `acc · s` and one of the final add. A row of the product
//! depends on nothing but the same row of `x`.

use ndarray::{Array2, ArrayView2, ArrayViewMut2};

use super::gemm::{Columns, MulAdd, Start};

/// A reduced precision for weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Precision {
    /// bfloat16: `f32`'s exponent, 8 bits of significand.
    Bf16,
    /// Symmetric 8-bit integers, one `f32` scale per output row.
    Int8,
}

impl Precision {
    /// Its name as the language and benchmarks write it: `bf16`, `int8`.
    pub fn name(self) -> &'static str {
        match self {
            Precision::Bf16 => "bf16",
            Precision::Int8 => "int8",
        }
    }

    /// Bytes of one weight.
    pub fn bytes(self) -> usize {
        match self {
            Precision::Bf16 => 2,
            Precision::Int8 => 1,
        }
    }
}

/// The bfloat16 nearest `value` (ties to even), as its 16 bits: infinities stay infinite, a NaN
/// stays a (quiet) NaN, a finite value past bfloat16's largest rounds to infinity as `f32` does.
pub fn bf16_bits(value: f32) -> u16 {
    let bits = value.to_bits();
    if value.is_nan() {
        return ((bits >> 16) as u16) | 0x0040;
    }
    let rounding = 0x7fff + ((bits >> 16) & 1);
    (bits.wrapping_add(rounding) >> 16) as u16
}

/// The `f32` a bfloat16 stands for (exact).
#[inline(always)]
pub fn bf16_value(bits: u16) -> f32 {
    f32::from_bits(u32::from(bits) << 16)
}

/// A reduced-precision product kernel: `out = start + x · wᵀ` on the columns `columns` keeps,
/// the rows of `x` and `out` contiguous and the shapes checked by the caller.
pub(super) type ReducedKernel =
    fn(ArrayView2<'_, f32>, &ReducedMatrix, ArrayViewMut2<'_, f32>, Start<'_>, Columns);

/// The reduced-precision product of one kernel table.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReducedGemm {
    /// The name of the table.
    pub(super) name: &'static str,
    /// Rows of `w` per panel.
    pub(super) panel_width: usize,
    pub(super) kernel: ReducedKernel,
}

/// The weights, panel by panel.
#[derive(Clone)]
enum Storage {
    Bf16(Vec<u16>),
    Int8 {
        weights: Vec<i8>,
        /// One per row of `w`, padded with zeros to whole panels.
        scales: Vec<f32>,
    },
}

/// A weight matrix `w: [m, k]` rounded to a reduced [`Precision`] and packed for
/// [`gemm_reduced`](super::gemm_reduced), which computes `out (+)= x · wᵀ` in `f32`.
#[derive(Clone)]
pub struct ReducedMatrix {
    rows: usize,
    cols: usize,
    storage: Storage,
    gemm: &'static ReducedGemm,
}

impl ReducedMatrix {
    /// Rounds and packs `w` for a given table; `None` for int8 when a weight is not finite
    /// (no scale represents it).
    pub(super) fn for_gemm(
        w: ArrayView2<'_, f32>,
        precision: Precision,
        gemm: &'static ReducedGemm,
    ) -> Option<ReducedMatrix> {
        let (rows, cols) = w.dim();
        let width = gemm.panel_width;
        let len = rows.div_ceil(width) * cols * width;
        let at =
            |row: usize, inner: usize| (row / width) * cols * width + inner * width + row % width;
        let storage = match precision {
            Precision::Bf16 => {
                let mut packed = vec![0u16; len];
                for ((row, inner), &weight) in w.indexed_iter() {
                    packed[at(row, inner)] = bf16_bits(weight);
                }
                Storage::Bf16(packed)
            }
            Precision::Int8 => {
                if w.iter().any(|weight| !weight.is_finite()) {
                    return None;
                }
                let mut weights = vec![0i8; len];
                let mut scales = vec![0.0f32; rows.div_ceil(width) * width];
                for (row, values) in w.outer_iter().enumerate() {
                    let largest = values.iter().fold(0.0f32, |m, v| m.max(v.abs()));
                    let scale = largest / 127.0;
                    scales[row] = scale;
                    if scale == 0.0 {
                        continue;
                    }
                    for (inner, &weight) in values.iter().enumerate() {
                        let q = (weight / scale).round().clamp(-127.0, 127.0);
                        weights[at(row, inner)] = q as i8;
                    }
                }
                Storage::Int8 { weights, scales }
            }
        };
        Some(ReducedMatrix {
            rows,
            cols,
            storage,
            gemm,
        })
    }

    /// `m`: rows of the original matrix, columns of the product.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `k`: columns of the original matrix, the inner dimension of the product.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Its precision.
    pub fn precision(&self) -> Precision {
        match self.storage {
            Storage::Bf16(_) => Precision::Bf16,
            Storage::Int8 { .. } => Precision::Int8,
        }
    }

    /// Bytes of weights (and scales) a product reads: what bounds a product by memory.
    pub fn bytes(&self) -> usize {
        match &self.storage {
            Storage::Bf16(weights) => 2 * weights.len(),
            Storage::Int8 { weights, scales } => weights.len() + 4 * scales.len(),
        }
    }

    /// The rounded weights as `f32`, `[m, k]`: what the product multiplies by, exactly.
    pub fn dequantized(&self) -> Array2<f32> {
        let width = self.gemm.panel_width;
        let cols = self.cols;
        let at =
            |row: usize, inner: usize| (row / width) * cols * width + inner * width + row % width;
        Array2::from_shape_fn((self.rows, self.cols), |(row, inner)| match &self.storage {
            Storage::Bf16(weights) => bf16_value(weights[at(row, inner)]),
            Storage::Int8 { weights, scales } => f32::from(weights[at(row, inner)]) * scales[row],
        })
    }

    pub(super) fn gemm(&self) -> &'static ReducedGemm {
        self.gemm
    }
}

impl std::fmt::Debug for ReducedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReducedMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("precision", &self.precision())
            .field("kernels", &self.gemm.name)
            .finish_non_exhaustive()
    }
}

/// `out = start + x · wᵀ` over the panels of `NR` rows of `w` that `columns` keeps, in tiles of
/// [`ROWS`] rows of `x`: see the module docs for the order. Inlined into each table's (`#[target_feature]`) function, where
/// LLVM vectorises the widening of the weights with the multiply-adds.
#[inline(always)]
pub(super) fn gemm_reduced_rows<const NR: usize, A: MulAdd>(
    x: ArrayView2<'_, f32>,
    w: &ReducedMatrix,
    mut out: ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    columns: Columns,
) {
    let (n, k) = x.dim();
    let m = w.rows;
    debug_assert_eq!(w.gemm.panel_width, NR);
    debug_assert_eq!((out.nrows(), out.ncols(), w.cols), (n, m, k));
    for panel in 0..m.div_ceil(NR) {
        if !columns.keeps(panel * NR) {
            continue;
        }
        let mut row = 0;
        while row + ROWS <= n {
            panel_rows::<ROWS, NR, A>(x, w, &mut out, start, panel, row);
            row += ROWS;
        }
        match n - row {
            0 => {}
            1 => panel_rows::<1, NR, A>(x, w, &mut out, start, panel, row),
            2 => panel_rows::<2, NR, A>(x, w, &mut out, start, panel, row),
            3 => panel_rows::<3, NR, A>(x, w, &mut out, start, panel, row),
            _ => unreachable!("fewer than {ROWS} rows are left"),
        }
    }
}

/// Rows of `x` per tile: each weight, once widened, serves this many rows.
const ROWS: usize = 4;

/// Rows `row..row + R` of the product over one panel.
#[inline(always)]
fn panel_rows<const R: usize, const NR: usize, A: MulAdd>(
    x: ArrayView2<'_, f32>,
    w: &ReducedMatrix,
    out: &mut ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    panel: usize,
    row: usize,
) {
    let (k, m) = (w.cols, w.rows);
    let columns = panel * NR..((panel + 1) * NR).min(m);
    let span = panel * k * NR..(panel + 1) * k * NR;
    let mut x_rows: [&[f32]; R] = [&[]; R];
    for (r, x_row) in x_rows.iter_mut().enumerate() {
        let slice = x
            .index_axis_move(ndarray::Axis(0), row + r)
            .to_slice()
            .expect("rows of x are contiguous");
        *x_row = &slice[..k];
    }
    let acc = match &w.storage {
        Storage::Bf16(weights) => dot_panel::<R, NR, A, u16>(&x_rows, &weights[span], bf16_value),
        Storage::Int8 { weights, scales } => {
            let mut acc = dot_panel::<R, NR, A, i8>(&x_rows, &weights[span], f32::from);
            let scales: &[f32; NR] = scales[panel * NR..panel * NR + NR]
                .try_into()
                .expect("scales padded to whole panels");
            for acc_row in &mut acc {
                for (value, scale) in acc_row.iter_mut().zip(scales) {
                    *value *= scale;
                }
            }
            acc
        }
    };
    for (r, acc_row) in acc.iter().enumerate() {
        let mut out_row = out.row_mut(row + r);
        let out_row = out_row.as_slice_mut().expect("rows of out are contiguous");
        let targets = out_row[columns.clone()].iter_mut().zip(acc_row);
        match start {
            Start::Zero => targets.for_each(|(target, &value)| *target = value),
            Start::Out => targets.for_each(|(target, &value)| *target += value),
            Start::Row(bias) => targets
                .zip(&bias[columns.clone()])
                .for_each(|((target, &value), &bias)| *target = bias + value),
        }
    }
}

/// The `R · NR` chains of one panel for `R` rows of inputs, each weight widened once.
#[inline(always)]
fn dot_panel<const R: usize, const NR: usize, A: MulAdd, W: Copy>(
    x_rows: &[&[f32]; R],
    weights: &[W],
    widen: impl Fn(W) -> f32,
) -> [[f32; NR]; R] {
    let k = x_rows.first().map_or(0, |row| row.len());
    let weights = &weights[..k * NR];
    let mut acc = [[0.0f32; NR]; R];
    for kk in 0..k {
        let step: &[W; NR] = weights[kk * NR..kk * NR + NR]
            .try_into()
            .expect("a panel holds NR weights per step");
        let mut widened = [0.0f32; NR];
        for (value, &weight) in widened.iter_mut().zip(step) {
            *value = widen(weight);
        }
        for (acc_row, x_row) in acc.iter_mut().zip(x_rows) {
            let input = x_row[kk];
            for (value, &weight) in acc_row.iter_mut().zip(&widened) {
                *value = A::mul_add(input, weight, *value);
            }
        }
    }
    acc
}
