//! Weight matrices in reduced precision, for products whose speed is the bytes of weights read
//! per step (a streaming LSTM reads all of `W_hh` at every step): bfloat16, and int8 with one
//! scale per output row. Inputs, outputs and accumulation stay `f32`.
//!
//! # Layout
//!
//! Panels of `NR` consecutive rows of `w` (output columns of the product), as a
//! [`PackedMatrix`](super::PackedMatrix)'s, the last one padded with zeros.
//! - bfloat16: within a panel, one `u32` lane per row holds that row's weights of two
//!   consecutive inner indices, lanes of the same pair side by side (`panel[pair][row]`): a
//!   weight is widened to `f32` by a shift or a mask of its lane (a bfloat16 is the top half of
//!   an `f32`), which vector units do on every lane at once without a shuffle.
//! - int8: `panel[inner][row]` bytes, each row's scale beside; a weight is widened by sign
//!   extension and conversion.
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

    /// Weights per element of the packed layout: consecutive inner indices of one row.
    fn group(self) -> usize {
        match self {
            Precision::Bf16 => 2,
            Precision::Int8 => 1,
        }
    }
}

/// Where weight `(row, inner)` is: its lane in the packed weights and its bit offset there.
fn lane_of(width: usize, cols: usize, group: usize, row: usize, inner: usize) -> (usize, u32) {
    let groups = cols.div_ceil(group);
    let lane = (row / width) * groups * width + (inner / group) * width + row % width;
    (lane, (32 / group * (inner % group)) as u32)
}

/// Weight `index` (0 or 1) of a lane of two bfloat16, as `f32` (exact).
#[inline(always)]
fn bf16_lane(lane: u32, index: u32) -> f32 {
    f32::from_bits(if index == 0 {
        lane << 16
    } else {
        lane & 0xffff_0000
    })
}

/// An int8 weight as `f32` (exact).
#[inline(always)]
fn int8_value(weight: i8, _: u32) -> f32 {
    f32::from(weight)
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

/// The weights, panel by panel, in lanes of [`Precision::group`] weights.
#[derive(Clone)]
enum Storage {
    Bf16(Vec<u32>),
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
        let group = precision.group();
        let len = rows.div_ceil(width) * cols.div_ceil(group) * width;
        let at = |row: usize, inner: usize| lane_of(width, cols, group, row, inner);
        let storage = match precision {
            Precision::Bf16 => {
                let mut packed = vec![0u32; len];
                for ((row, inner), &weight) in w.indexed_iter() {
                    let (lane, shift) = at(row, inner);
                    packed[lane] |= u32::from(bf16_bits(weight)) << shift;
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
                        let q = (weight / scale).round().clamp(-127.0, 127.0) as i8;
                        weights[at(row, inner).0] = q;
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
            Storage::Bf16(weights) => 4 * weights.len(),
            Storage::Int8 { weights, scales } => weights.len() + 4 * scales.len(),
        }
    }

    /// The rounded weights as `f32`, `[m, k]`: what the product multiplies by, exactly.
    pub fn dequantized(&self) -> Array2<f32> {
        let (width, cols) = (self.gemm.panel_width, self.cols);
        let group = self.precision().group();
        Array2::from_shape_fn((self.rows, self.cols), |(row, inner)| {
            let (lane, shift) = lane_of(width, cols, group, row, inner);
            match &self.storage {
                Storage::Bf16(weights) => bf16_lane(weights[lane], shift / 16),
                Storage::Int8 { weights, scales } => f32::from(weights[lane]) * scales[row],
            }
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
/// [`ROWS`] rows of `x`: see the module docs for the order. Inlined into each table's
/// (`#[target_feature]`) function, where the table's [`ReducedDot`] runs the chains: the portable
/// one vectorised by LLVM, or the table's intrinsics.
///
/// Fewer than [`ROWS`] rows (one stream's step) make too few independent chains in one panel
/// to keep the multiply-add units busy, so those rows take two panels at a time: the same
/// chains, interleaved.
#[inline(always)]
pub(super) fn gemm_reduced_rows<const NR: usize, D: ReducedDot<NR>>(
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
    let panels = || (0..m.div_ceil(NR)).filter(|panel| columns.keeps(panel * NR));
    let full = n - n % ROWS;
    for panel in panels() {
        for row in (0..full).step_by(ROWS) {
            panel_rows::<ROWS, NR, D>(x, w, &mut out, start, [panel, panel], row);
        }
    }
    // The last rows, two panels at a time (a last odd panel is paired with itself and
    // stored once).
    let mut kept = panels();
    while let Some(first) = kept.next() {
        let pair = [first, kept.next().unwrap_or(first)];
        match n - full {
            0 => {}
            1 => panel_rows::<1, NR, D>(x, w, &mut out, start, pair, full),
            2 => panel_rows::<2, NR, D>(x, w, &mut out, start, pair, full),
            3 => panel_rows::<3, NR, D>(x, w, &mut out, start, pair, full),
            _ => unreachable!("fewer than {ROWS} rows are left"),
        }
    }
}

/// Rows of `x` per tile: each weight, once widened, serves this many rows.
const ROWS: usize = 4;

/// Rows `row..row + R` of the product over panels `pair` (computed side by side; the same
/// panel twice is computed and stored once).
#[inline(always)]
fn panel_rows<const R: usize, const NR: usize, D: ReducedDot<NR>>(
    x: ArrayView2<'_, f32>,
    w: &ReducedMatrix,
    out: &mut ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    pair: [usize; 2],
    row: usize,
) {
    let k = w.cols;
    let mut x_rows: [&[f32]; R] = [&[]; R];
    for (r, x_row) in x_rows.iter_mut().enumerate() {
        let slice = x
            .index_axis_move(ndarray::Axis(0), row + r)
            .to_slice()
            .expect("rows of x are contiguous");
        *x_row = &slice[..k];
    }
    let groups = k.div_ceil(w.precision().group());
    let span = |panel: usize| panel * groups * NR..(panel + 1) * groups * NR;
    let single = pair[0] == pair[1];
    let accs = match (&w.storage, single) {
        (Storage::Bf16(lanes), true) => {
            let [acc] = D::dot_bf16::<R, 1>(&x_rows, [&lanes[span(pair[0])]]);
            [acc, acc]
        }
        (Storage::Bf16(lanes), false) => {
            D::dot_bf16::<R, 2>(&x_rows, [&lanes[span(pair[0])], &lanes[span(pair[1])]])
        }
        (Storage::Int8 { weights, .. }, true) => {
            let [acc] = D::dot_int8::<R, 1>(&x_rows, [&weights[span(pair[0])]]);
            [acc, acc]
        }
        (Storage::Int8 { weights, .. }, false) => {
            D::dot_int8::<R, 2>(&x_rows, [&weights[span(pair[0])], &weights[span(pair[1])]])
        }
    };
    let stored = if single { 1 } else { 2 };
    for (&panel, mut acc) in pair.iter().zip(accs).take(stored) {
        if let Storage::Int8 { scales, .. } = &w.storage {
            let scales: &[f32; NR] = scales[panel * NR..panel * NR + NR]
                .try_into()
                .expect("scales padded to whole panels");
            for acc_row in &mut acc {
                for (value, scale) in acc_row.iter_mut().zip(scales) {
                    *value *= scale;
                }
            }
        }
        let columns = panel * NR..((panel + 1) * NR).min(w.rows);
        for (r, acc_row) in acc.iter().enumerate() {
            let mut out_row = out.row_mut(row + r);
            let out_row = out_row.as_slice_mut().expect("rows of out are contiguous");
            let targets = out_row[columns.clone()].iter_mut().zip(acc_row);
            match start {
                Start::Zero => targets.for_each(|(target, &value)| *target = value),
                Start::Split(_) => unreachable!("a split sum is formed on f32 weights only"),
                Start::Out | Start::Add => targets.for_each(|(target, &value)| *target += value),
                Start::Row(bias) => targets
                    .zip(&bias[columns.clone()])
                    .for_each(|((target, &value), &bias)| *target = bias + value),
            }
        }
    }
}

/// How a table computes the chains of a tile: `R` rows of inputs against `P` panels (each
/// `k.div_ceil(G)` groups of `NR` elements, see the module docs), for each inner index in order
/// `acc = mul_add(x, w, acc)` with the weight widened exactly; every implementation gives the
/// same chains (bit-identical with the same [`MulAdd`]).
pub(super) trait ReducedDot<const NR: usize> {
    /// Panels of bfloat16 pairs.
    fn dot_bf16<const R: usize, const P: usize>(
        x_rows: &[&[f32]; R],
        panels: [&[u32]; P],
    ) -> [[[f32; NR]; R]; P];

    /// Panels of int8 (the chains before the row's scale).
    fn dot_int8<const R: usize, const P: usize>(
        x_rows: &[&[f32]; R],
        panels: [&[i8]; P],
    ) -> [[[f32; NR]; R]; P];
}

/// The portable [`ReducedDot`], vectorised by LLVM for the table's target features.
pub(super) struct PortableDot<A>(std::marker::PhantomData<A>);

impl<const NR: usize, A: MulAdd> ReducedDot<NR> for PortableDot<A> {
    #[inline(always)]
    fn dot_bf16<const R: usize, const P: usize>(
        x_rows: &[&[f32]; R],
        panels: [&[u32]; P],
    ) -> [[[f32; NR]; R]; P] {
        dot_panels::<R, NR, 2, P, A, u32>(x_rows, panels, bf16_lane)
    }

    #[inline(always)]
    fn dot_int8<const R: usize, const P: usize>(
        x_rows: &[&[f32]; R],
        panels: [&[i8]; P],
    ) -> [[[f32; NR]; R]; P] {
        dot_panels::<R, NR, 1, P, A, i8>(x_rows, panels, int8_value)
    }
}

/// The `R · NR` chains of each of `P` panels for `R` rows of inputs, each lane of `G` weights
/// widened once (`widen(lane, g)` is its weight `g`): for each inner index in order,
/// `acc = mul_add(x, w, acc)`. Two panels side by side give one stream's step enough
/// independent chains to fill the multiply-add units.
#[inline(always)]
fn dot_panels<
    const R: usize,
    const NR: usize,
    const G: usize,
    const P: usize,
    A: MulAdd,
    W: Copy,
>(
    x_rows: &[&[f32]; R],
    panels: [&[W]; P],
    widen: impl Fn(W, u32) -> f32 + Copy,
) -> [[[f32; NR]; R]; P] {
    let k = x_rows.first().map_or(0, |row| row.len());
    let mut acc = [[[0.0f32; NR]; R]; P];
    let whole = k / G;
    let lanes_at = |p: usize, group: usize| -> &[W; NR] {
        panels[p][group * NR..group * NR + NR]
            .try_into()
            .expect("a panel holds NR lanes per group")
    };
    for group in 0..whole {
        for g in 0..G {
            let inner = group * G + g;
            for (p, acc) in acc.iter_mut().enumerate() {
                let lanes = lanes_at(p, group);
                let widened: [f32; NR] = std::array::from_fn(|j| widen(lanes[j], g as u32));
                for (acc_row, x_row) in acc.iter_mut().zip(x_rows) {
                    let input = x_row[inner];
                    for (value, &weight) in acc_row.iter_mut().zip(&widened) {
                        *value = A::mul_add(input, weight, *value);
                    }
                }
            }
        }
    }
    // A last group of fewer than G weights (the rest is padding, never multiplied).
    for inner in whole * G..k {
        for (p, acc) in acc.iter_mut().enumerate() {
            let lanes = lanes_at(p, whole);
            let g = (inner - whole * G) as u32;
            let widened: [f32; NR] = std::array::from_fn(|j| widen(lanes[j], g));
            for (acc_row, x_row) in acc.iter_mut().zip(x_rows) {
                let input = x_row[inner];
                for (value, &weight) in acc_row.iter_mut().zip(&widened) {
                    *value = A::mul_add(input, weight, *value);
                }
            }
        }
    }
    acc
}
