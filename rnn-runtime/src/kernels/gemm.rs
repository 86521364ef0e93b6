//! Packed weight matrices and the blocked product behind `gemm_packed` (in the parent module).
//!
//! This module is portable and free of `unsafe`: it holds the packed layout, the loop nest and the
//! register-blocked microkernel, all written as plain Rust on fixed-size arrays. Each
//! implementation instantiates [`gemm_rows`] with its own tile shape and [`Chains`]: the portable
//! microkernel with a [`MulAdd`] (fused or separate multiply-add), or the same chains in a table's
//! intrinsics; the architecture modules do so inside `#[target_feature]` functions, where LLVM
//! vectorises the portable microkernel (or compiles the intrinsics) for that instruction set.
//!
//! # Layout
//!
//! A [`PackedMatrix`] built from `w: [m, k]` stores `w` as `ceil(m / NR)` *panels* of `NR`
//! consecutive rows of `w` (output columns of the product), each panel k-major: element
//! `(kk, j)` of panel `p` is `w[p·NR + j, kk]`, at offset `(p·k + kk)·NR + j`. A panel is
//! therefore `k` contiguous vectors of `NR` weights, one per step of the inner product, and the
//! last panel is padded with zeros up to `NR` columns. The buffer starts on a 64-byte boundary, so
//! with `NR` a multiple of 16 every vector load of a weight row is aligned.
//!
//! # Summation order
//!
//! Every output element is one sequential chain over the inner dimension, whatever the tile,
//! block or batch size:
//!
//! ```text
//! acc = start (0, out[r, c], or row[c]; see Start)
//! for kk in 0..k { acc = mul_add(x[r, kk], w[c, kk], acc) }
//! out[r, c] = acc
//! ```
//!
//! where `mul_add` is a fused multiply-add or a multiply then an add, fixed per implementation
//! ([`MulAdd`]). Tiles only decide how many of these independent chains run side by side, so a
//! row of the output depends on nothing but the same row of `x`: the result for a row is
//! bit-identical whether it is computed alone (`n = 1`), anywhere inside a batch, or in a tail
//! tile. Error bound of one chain (`u = 2⁻²⁴`): `|error| ≤ γ · (|init| + Σ|x·w|)` with
//! `γ = k·u/(1 − k·u)` fused or `γ = 2k·u/(1 − 2k·u)` separate.

use ndarray::{ArrayView2, ArrayViewMut2};

/// What each output element's chain of multiply-adds starts from.
#[derive(Debug, Clone, Copy)]
pub enum Start<'a> {
    /// Zero: `out = x · wᵀ` (the previous contents of `out` are ignored, even NaN).
    Zero,
    /// The output's own value: `out += x · wᵀ`, one chain of multiply-adds from `out`.
    Out,
    /// The product formed from zero, then added: `out = out + (x · wᵀ)`, the bits of adding
    /// a [`Start::Zero`] product to `out` (a sum over a second part of a batch, onto the first
    /// part's).
    Add,
    /// Two products, over the inner indices before `split` and from it, each from zero, then
    /// added: `out = x[.., ..split] · w[.., ..split]ᵀ + x[.., split..] · w[.., split..]ᵀ`, the
    /// bits of the two formed apart and added (a sum over a batch whose two parts are its rows
    /// before and after `split`).
    Split(usize),
    /// One row for every output row: `out = row + x · wᵀ` (a bias), without a pass writing
    /// the row into `out` first. `row` holds `w.rows()` values.
    Row(&'a [f32]),
}

/// Which output columns a product computes: all of them, or one side of a column split, the
/// columns `lo..hi` of every block of `period` (e.g. the first half of each gate's units, for
/// two threads that each run half of every step; see the `split` module).
///
/// The split bounds are multiples of every table's panel width ([`Columns::ALIGN`]), so a panel
/// is either computed whole or skipped; the other columns of `out` are left as they were.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Columns {
    period: usize,
    lo: usize,
    hi: usize,
}

impl Columns {
    /// Every column.
    pub const ALL: Columns = Columns {
        period: 0,
        lo: 0,
        hi: 0,
    };

    /// What split bounds must be multiples of: the widest panel of any table.
    pub const ALIGN: usize = 64;

    /// The columns `lo..hi` of every block of `period`, or `None` unless all three are multiples
    /// of [`Columns::ALIGN`] with `lo < hi <= period`.
    pub fn periodic(period: usize, lo: usize, hi: usize) -> Option<Columns> {
        let aligned = [period, lo, hi]
            .iter()
            .all(|v| v.is_multiple_of(Columns::ALIGN));
        (aligned && lo < hi && hi <= period).then_some(Columns { period, lo, hi })
    }

    /// Whether the panel that starts at column `first` is computed.
    pub(super) fn keeps(self, first: usize) -> bool {
        self.period == 0 || (self.lo..self.hi).contains(&(first % self.period))
    }
}

/// How an implementation performs one step of an inner product, `a · b + c`.
pub(super) trait MulAdd {
    /// `a · b + c`, rounded once ([`Fused`]) or twice ([`Separate`]).
    fn mul_add(a: f32, b: f32, c: f32) -> f32;
}

/// Fused multiply-add, one rounding: only for code compiled with the `fma` target feature, where
/// [`f32::mul_add`] is a single instruction (elsewhere it is a slow library call).
#[derive(Debug, Clone, Copy)]
pub(super) struct Fused;

impl MulAdd for Fused {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a.mul_add(b, c)
    }
}

/// A multiply then an add, two roundings: available everywhere. Rust never contracts `a * b + c`
/// into a fused operation, so this stays two roundings even on FMA hardware.
#[derive(Debug, Clone, Copy)]
pub(super) struct Separate;

impl MulAdd for Separate {
    #[inline(always)]
    fn mul_add(a: f32, b: f32, c: f32) -> f32 {
        a * b + c
    }
}

/// How an implementation runs a register tile's chains over the inner dimension: `R · P · NR`
/// independent chains of multiply-adds, one step of each per inner index (the module docs'
/// summation order). [`Portable`] writes them as plain Rust for LLVM to vectorise; a table may
/// write them in intrinsics instead where LLVM's vectorisation falls short, with the same
/// chains, hence the same bits.
pub(super) trait Chains<const NR: usize> {
    /// `x_rows` are `R` rows of at least `k` inputs; `weights` are `P` panels of at least
    /// `k · NR` packed weights. Returns `acc` after `k` steps of each chain.
    fn run<const R: usize, const P: usize>(
        k: usize,
        x_rows: &[&[f32]; R],
        weights: &[&[f32]; P],
        acc: [[[f32; NR]; P]; R],
    ) -> [[[f32; NR]; P]; R];
}

/// [`Chains`] as plain Rust with the multiply-add `A` ([`microkernel`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Portable<A>(std::marker::PhantomData<A>);

impl<const NR: usize, A: MulAdd> Chains<NR> for Portable<A> {
    #[inline(always)]
    fn run<const R: usize, const P: usize>(
        k: usize,
        x_rows: &[&[f32]; R],
        weights: &[&[f32]; P],
        acc: [[[f32; NR]; P]; R],
    ) -> [[[f32; NR]; P]; R] {
        microkernel::<R, P, NR, A>(k, x_rows, weights, acc)
    }
}

/// Alignment of the packed buffer, in `f32`s (64 bytes: one cache line, one AVX-512 vector).
const ALIGN_FLOATS: usize = 16;

/// Bytes of `x` one row block may occupy, so that the block stays in the L2 cache while every
/// panel of weights sweeps over it (the per-core L2 is 512 KiB or more on current x86 cores).
const ROW_BLOCK_BYTES: usize = 256 * 1024;

/// Weights per vector in the microkernel's loop order: 16 (one 512-bit register), or the
/// largest power of two below that divides a panel of `panel_width` columns.
const fn vector_width(panel_width: usize) -> usize {
    let mut width = 16;
    while !panel_width.is_multiple_of(width) {
        width /= 2;
    }
    width
}

/// The largest register tile height any implementation uses (tail tiles have fewer rows).
pub(super) const MAX_TILE_ROWS: usize = 8;

/// `out = start + x · wᵀ` with `w` packed for the same implementation; the rows of `x` and `out`
/// are contiguous and the shapes agree (checked by `gemm_packed`).
pub(super) type GemmKernel =
    fn(ArrayView2<'_, f32>, &PackedMatrix, ArrayViewMut2<'_, f32>, Start<'_>, Columns);

/// The packed product of one kernel table: the layout it packs weights in and the kernel that
/// multiplies by them. A [`PackedMatrix`] keeps the one it was packed for.
#[derive(Debug, Clone, Copy)]
pub(super) struct Gemm {
    /// The name of the table, which a packed matrix's `Debug` shows.
    pub(super) name: &'static str,
    /// Columns per panel of the matrices [`kernel`](Self::kernel) expects.
    pub(super) panel_width: usize,
    pub(super) kernel: GemmKernel,
}

/// A weight matrix `w: [m, k]` (PyTorch layout: one row per output unit) packed once for
/// `gemm_packed`, which computes `out (+)= x · wᵀ`.
///
/// The layout (panels of output columns, k-major, zero-padded, 64-byte aligned) is chosen by the
/// kernel implementation selected for this process, and the matrix remembers that
/// implementation: every product with it uses the same kernel, hence the same rounding, whatever
/// the number of rows of `x`.
pub struct PackedMatrix {
    rows: usize,
    cols: usize,
    /// Offset of the first panel in `buffer`, which makes it 64-byte aligned.
    start: usize,
    /// `ceil(rows / panel_width) · cols · panel_width` weights from `start`, then slack.
    buffer: Vec<f32>,
    gemm: &'static Gemm,
}

impl PackedMatrix {
    /// Packs `w` for a given implementation (`new`, in the parent module, packs for the one
    /// selected for this process; the shared test suite packs for each of them).
    pub(super) fn for_gemm(w: ArrayView2<'_, f32>, gemm: &'static Gemm) -> PackedMatrix {
        let (rows, cols) = w.dim();
        let width = gemm.panel_width;
        let mut packed = PackedMatrix::zeroed(rows, cols, gemm);
        let data = packed.panels_mut();
        for (row, weights) in w.outer_iter().enumerate() {
            let (panel, lane) = (row / width, row % width);
            let base = panel * cols * width + lane;
            for (inner, &weight) in weights.iter().enumerate() {
                data[base + inner * width] = weight;
            }
        }
        packed
    }

    /// [`for_gemm`](Self::for_gemm) by whole panels, with `transpose` (a table's transpose
    /// kernel). A panel holds `width` rows of `w` transposed, `cols × width`; when `w`'s rows
    /// are contiguous, each full panel is one transpose of those rows, which reads and writes
    /// whole cache lines where the element-by-element packing writes one float per line (a
    /// 250 × 500 matrix: about 150 µs that way). The last, partial panel is transposed into a
    /// scratch and copied in runs of its rows; a `w` of other strides is packed element by
    /// element. Every float is copied, so the packing is the same either way.
    pub(super) fn for_gemm_by(
        w: ArrayView2<'_, f32>,
        gemm: &'static Gemm,
        transpose: fn(&[f32], usize, usize, &mut [f32], bool),
    ) -> PackedMatrix {
        let Some(values) = w.as_slice() else {
            return PackedMatrix::for_gemm(w, gemm);
        };
        let (rows, cols) = w.dim();
        let width = gemm.panel_width;
        let mut packed = PackedMatrix::zeroed(rows, cols, gemm);
        let data = packed.panels_mut();
        let block = cols * width;
        let full = rows / width;
        for panel in 0..full {
            let (from, to) = (panel * block, (panel + 1) * block);
            transpose(&values[from..to], width, cols, &mut data[from..to], false);
        }
        let rest = rows - full * width;
        if rest > 0 {
            let mut scratch = vec![0.0f32; rest * cols];
            transpose(&values[full * block..], rest, cols, &mut scratch, false);
            let panel = &mut data[full * block..(full + 1) * block];
            for (slot, run) in panel
                .chunks_exact_mut(width)
                .zip(scratch.chunks_exact(rest))
            {
                slot[..rest].copy_from_slice(run);
            }
        }
        packed
    }

    /// Packs `gᵀ` for `g: [k, m]` into `buffer` (reused, grown if short):
    /// a transpose read row by row, each row of `g` copied in runs of a
    /// panel's width, where [`for_gemm`](Self::for_gemm) on `g.t()` would
    /// gather columns. For products over many rows, `Σ_r g_rᵀ v_r`.
    pub(super) fn transposed_for_gemm(
        g: ArrayView2<'_, f32>,
        mut buffer: Vec<f32>,
        gemm: &'static Gemm,
    ) -> PackedMatrix {
        let (cols, rows) = g.dim();
        let width = gemm.panel_width;
        let len = rows.div_ceil(width) * cols * width;
        debug_assert_eq!(len + ALIGN_FLOATS, PackedMatrix::floats(rows, cols, gemm));
        // Every element is written below (the last panel's padding with
        // zeros), so a reused buffer's old values need no pass of zeros.
        buffer.resize(len + ALIGN_FLOATS, 0.0);
        let start = buffer.as_ptr().align_offset(ALIGN_FLOATS * 4);
        let start = if start < ALIGN_FLOATS { start } else { 0 };
        let mut packed = PackedMatrix {
            rows,
            cols,
            start,
            buffer,
            gemm,
        };
        let data = packed.panels_mut();
        let mut scratch = [0.0f32; 64];
        debug_assert!(width <= scratch.len());
        for (inner, row) in g.outer_iter().enumerate() {
            let contiguous = row.as_slice();
            for panel in 0..rows.div_ceil(width) {
                let (lo, hi) = (panel * width, ((panel + 1) * width).min(rows));
                let base = panel * cols * width + inner * width;
                let slot = &mut data[base..base + width];
                match contiguous {
                    Some(values) if hi - lo == width => slot.copy_from_slice(&values[lo..hi]),
                    _ => {
                        let run = &mut scratch[..width];
                        run.fill(0.0);
                        for (to, from) in run.iter_mut().zip(row.slice(ndarray::s![lo..hi])) {
                            *to = *from;
                        }
                        slot.copy_from_slice(run);
                    }
                }
            }
        }
        packed
    }

    /// The buffer's length for a `[rows, cols]` matrix, slack included.
    pub(super) fn floats(rows: usize, cols: usize, gemm: &Gemm) -> usize {
        rows.div_ceil(gemm.panel_width) * cols * gemm.panel_width + ALIGN_FLOATS
    }

    /// The packed weights' buffer, for reuse.
    pub fn into_buffer(self) -> Vec<f32> {
        self.buffer
    }

    /// A packed `[rows, cols]` matrix of zeros, aligned.
    fn zeroed(rows: usize, cols: usize, gemm: &'static Gemm) -> PackedMatrix {
        let len = rows.div_ceil(gemm.panel_width) * cols * gemm.panel_width;
        let buffer = vec![0.0f32; len + ALIGN_FLOATS];
        // `align_offset` may in principle decline (usize::MAX); unaligned data is still correct.
        let start = buffer.as_ptr().align_offset(ALIGN_FLOATS * 4);
        let start = if start < ALIGN_FLOATS { start } else { 0 };
        PackedMatrix {
            rows,
            cols,
            start,
            buffer,
            gemm,
        }
    }

    /// `m`: rows of the original matrix, columns of the product.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// `k`: columns of the original matrix, the inner dimension of the product.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The implementation this matrix was packed for.
    pub(super) fn gemm(&self) -> &'static Gemm {
        self.gemm
    }

    /// The panels, without the alignment slack.
    pub(super) fn panels(&self) -> &[f32] {
        let len = self.buffer.len() - ALIGN_FLOATS;
        &self.buffer[self.start..self.start + len]
    }

    fn panels_mut(&mut self) -> &mut [f32] {
        let len = self.buffer.len() - ALIGN_FLOATS;
        &mut self.buffer[self.start..self.start + len]
    }
}

impl Clone for PackedMatrix {
    /// A copy in a new buffer, aligned again (so not a plain `Vec` clone).
    fn clone(&self) -> PackedMatrix {
        let mut copy = PackedMatrix::zeroed(self.rows, self.cols, self.gemm);
        copy.panels_mut().copy_from_slice(self.panels());
        copy
    }
}

impl std::fmt::Debug for PackedMatrix {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PackedMatrix")
            .field("rows", &self.rows)
            .field("cols", &self.cols)
            .field("kernels", &self.gemm.name)
            .field("panel_width", &self.gemm.panel_width)
            .finish_non_exhaustive()
    }
}

/// `out (+)= x · wᵀ` with register tiles of `MR` rows by `NR` columns; see the module docs for
/// the layout and the summation order.
///
/// Preconditions (checked by the caller, `debug_assert!`ed here): `w` was packed with panels of
/// `NR` columns, `x` is `[n, w.cols()]` and `out` is `[n, w.rows()]`, and both have contiguous
/// rows (column stride 1, any row stride).
///
/// Loop nest: blocks of rows of `x` small enough to stay in L2 ([`ROW_BLOCK_BYTES`]), then
/// panels, then `MR`-row tiles, so the weights are read once per block and one panel is reused by
/// every tile of the block (from L1 while `k · NR · 4` bytes fit, e.g. `k ≤ 128` for `NR = 64`,
/// else from L2). The rows left over after the last full tile run in a shorter tile; when they
/// are few, over two panels at once, so that a lone row (`n = 1`, the matrix-vector case) still
/// keeps `2·NR` independent chains in flight.
#[inline(always)]
pub(super) fn gemm_rows<const MR: usize, const NR: usize, C: Chains<NR>>(
    x: ArrayView2<'_, f32>,
    w: &PackedMatrix,
    out: ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    columns: Columns,
) {
    // The sums of two parts get a loop nest of their own, so that the
    // others' tiles hold no code for them.
    match start {
        Start::Add | Start::Split(_) => gemm_rows_in::<MR, NR, C, true>(x, w, out, start, columns),
        _ => gemm_rows_in::<MR, NR, C, false>(x, w, out, start, columns),
    }
}

/// [`gemm_rows`] for starts of one kind: `PARTS` for [`Start::Add`] and [`Start::Split`].
#[inline(always)]
fn gemm_rows_in<const MR: usize, const NR: usize, C: Chains<NR>, const PARTS: bool>(
    x: ArrayView2<'_, f32>,
    w: &PackedMatrix,
    mut out: ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    columns: Columns,
) {
    let (n, k) = x.dim();
    let m = w.rows();
    const { assert!(MR >= 1 && MR <= MAX_TILE_ROWS) };
    debug_assert_eq!(w.gemm().panel_width, NR);
    debug_assert_eq!(w.cols(), k);
    debug_assert_eq!(out.dim(), (n, m));
    let panel_count = m.div_ceil(NR);
    if let Start::Row(row) = start {
        debug_assert_eq!(row.len(), m);
    }
    let operands = Operands {
        panels: w.panels(),
        k,
        m,
        start,
    };
    let block = (ROW_BLOCK_BYTES / (4 * k.max(1)) / MR * MR).max(MR);
    let mut block_start = 0;
    while block_start < n {
        let block_end = (block_start + block).min(n);
        let full_end = block_start + (block_end - block_start) / MR * MR;
        let tail = block_end - full_end;
        let mut panel = 0;
        while panel < panel_count {
            if !columns.keeps(panel * NR) {
                panel += 1;
                continue;
            }
            let pair = panel + 1 < panel_count && 2 * tail <= MR && columns.keeps((panel + 1) * NR);
            let panels_now = if pair { 2 } else { 1 };
            for one in panel..(panel + panels_now).min(panel_count) {
                let mut row = block_start;
                while row < full_end {
                    tile::<MR, 1, NR, C, PARTS>(&operands, x, &mut out, row, one);
                    row += MR;
                }
            }
            if tail > 0 {
                if pair {
                    tail_tile_pair::<NR, C, PARTS>(tail, &operands, x, &mut out, full_end, panel);
                } else {
                    tail_tile::<NR, C, PARTS>(tail, &operands, x, &mut out, full_end, panel);
                }
            }
            panel += panels_now;
        }
        block_start = block_end;
    }
}

/// What every tile of one product shares.
struct Operands<'a> {
    panels: &'a [f32],
    k: usize,
    m: usize,
    start: Start<'a>,
}

/// A tile of `rows < MAX_TILE_ROWS` rows over one panel: the row count becomes a constant.
#[inline(always)]
fn tail_tile<const NR: usize, C: Chains<NR>, const PARTS: bool>(
    rows: usize,
    operands: &Operands<'_>,
    x: ArrayView2<'_, f32>,
    out: &mut ArrayViewMut2<'_, f32>,
    row: usize,
    panel: usize,
) {
    match rows {
        1 => tile::<1, 1, NR, C, PARTS>(operands, x, out, row, panel),
        2 => tile::<2, 1, NR, C, PARTS>(operands, x, out, row, panel),
        3 => tile::<3, 1, NR, C, PARTS>(operands, x, out, row, panel),
        4 => tile::<4, 1, NR, C, PARTS>(operands, x, out, row, panel),
        5 => tile::<5, 1, NR, C, PARTS>(operands, x, out, row, panel),
        6 => tile::<6, 1, NR, C, PARTS>(operands, x, out, row, panel),
        7 => tile::<7, 1, NR, C, PARTS>(operands, x, out, row, panel),
        _ => unreachable!("tail tiles have fewer than {MAX_TILE_ROWS} rows"),
    }
}

/// A tile of `rows ≤ MAX_TILE_ROWS / 2` rows over two panels.
#[inline(always)]
fn tail_tile_pair<const NR: usize, C: Chains<NR>, const PARTS: bool>(
    rows: usize,
    operands: &Operands<'_>,
    x: ArrayView2<'_, f32>,
    out: &mut ArrayViewMut2<'_, f32>,
    row: usize,
    panel: usize,
) {
    match rows {
        1 => tile::<1, 2, NR, C, PARTS>(operands, x, out, row, panel),
        2 => tile::<2, 2, NR, C, PARTS>(operands, x, out, row, panel),
        3 => tile::<3, 2, NR, C, PARTS>(operands, x, out, row, panel),
        4 => tile::<4, 2, NR, C, PARTS>(operands, x, out, row, panel),
        _ => unreachable!("paired tail tiles have at most {} rows", MAX_TILE_ROWS / 2),
    }
}

/// One register tile: rows `row..row + R` of the output, columns of panels `panel..panel + P`.
///
/// Loads the starting values, runs the chains ([`Chains`]) over the whole inner dimension and
/// stores the valid columns (the zero padding of the last panel is computed and dropped).
#[inline(always)]
fn tile<const R: usize, const P: usize, const NR: usize, C: Chains<NR>, const PARTS: bool>(
    operands: &Operands<'_>,
    x: ArrayView2<'_, f32>,
    out: &mut ArrayViewMut2<'_, f32>,
    row: usize,
    panel: usize,
) {
    let Operands {
        panels,
        k,
        m,
        start,
    } = *operands;
    // Plain loops over constant ranges (no closures, no slices of dynamic
    // length into `acc`), so that LLVM keeps `acc` in vector registers from
    // its first load to its last store instead of building it on the stack.
    let mut x_rows: [&[f32]; R] = [&[]; R];
    for (r, x_row) in x_rows.iter_mut().enumerate() {
        let slice = x
            .index_axis_move(ndarray::Axis(0), row + r)
            .to_slice()
            .expect("rows of x are contiguous");
        *x_row = &slice[..k];
    }
    let mut weights: [&[f32]; P] = [&[]; P];
    for (p, panel_weights) in weights.iter_mut().enumerate() {
        let start = (panel + p) * k * NR;
        *panel_weights = &panels[start..start + k * NR];
    }
    // Columns of panel `p` of this tile that exist in `out` (all `NR` but in the last panel).
    let columns = |p: usize| {
        let first = (panel + p) * NR;
        first..(first + NR).min(m)
    };
    let mut acc = [[[0.0f32; NR]; P]; R];
    match start {
        Start::Zero | Start::Add | Start::Split(_) => {}
        Start::Out => {
            for (r, acc_row) in acc.iter_mut().enumerate() {
                let out_row = out.row(row + r);
                let out_row = out_row.to_slice().expect("rows of out are contiguous");
                for (p, acc_panel) in acc_row.iter_mut().enumerate() {
                    *acc_panel = load_panel::<NR>(&out_row[columns(p)]);
                }
            }
        }
        Start::Row(values) => {
            let mut panels_of_row = [[0.0f32; NR]; P];
            for (p, panel_values) in panels_of_row.iter_mut().enumerate() {
                *panel_values = load_panel::<NR>(&values[columns(p)]);
            }
            acc = [panels_of_row; R];
        }
    }
    // A split product stores its first part's sum and adds the second's
    // to it, as `Add` does: one tile of sums in registers at a time.
    let (acc, add) = match start {
        Start::Split(split) if PARTS && split < k => {
            let first = C::run::<R, P>(split, &x_rows, &weights, acc);
            for (r, acc_row) in first.iter().enumerate() {
                let out_row = out.row_mut(row + r);
                let out_row = out_row.into_slice().expect("rows of out are contiguous");
                for (p, acc_panel) in acc_row.iter().enumerate() {
                    store_panel::<NR>(*acc_panel, &mut out_row[columns(p)]);
                }
            }
            let x_rest: [&[f32]; R] = x_rows.map(|x_row| &x_row[split..]);
            let weights_rest: [&[f32]; P] = weights.map(|panel| &panel[split * NR..]);
            let second = C::run::<R, P>(k - split, &x_rest, &weights_rest, acc);
            (second, true)
        }
        Start::Add if PARTS => (C::run::<R, P>(k, &x_rows, &weights, acc), true),
        _ => (C::run::<R, P>(k, &x_rows, &weights, acc), false),
    };
    for (r, acc_row) in acc.iter().enumerate() {
        let out_row = out.row_mut(row + r);
        let out_row = out_row.into_slice().expect("rows of out are contiguous");
        for (p, acc_panel) in acc_row.iter().enumerate() {
            let mut values = *acc_panel;
            if PARTS && add {
                let before = load_panel::<NR>(&out_row[columns(p)]);
                for (value, before) in values.iter_mut().zip(before) {
                    *value += before;
                }
            }
            store_panel::<NR>(values, &mut out_row[columns(p)]);
        }
    }
}

/// The `NR` values of one panel's columns, zero past the end of `values`
/// (the last panel's padding). Returned by value: the caller's accumulators
/// are then written whole.
#[inline(always)]
fn load_panel<const NR: usize>(values: &[f32]) -> [f32; NR] {
    match <&[f32; NR]>::try_from(values) {
        Ok(full) => *full,
        Err(_) => {
            let mut padded = [0.0; NR];
            padded[..values.len()].copy_from_slice(values);
            padded
        }
    }
}

/// Stores the first `target.len()` (at most `NR`) of one panel's values.
#[inline(always)]
fn store_panel<const NR: usize>(values: [f32; NR], target: &mut [f32]) {
    match <&mut [f32; NR]>::try_from(&mut *target) {
        Ok(full) => *full = values,
        Err(_) => {
            let len = target.len();
            target.copy_from_slice(&values[..len]);
        }
    }
}

/// The register-blocked inner loop: `R · P · NR` independent chains, one step of each per `kk`.
///
/// `x_rows` are `R` rows of `k` inputs; `weights` are `P` panels of `k · NR` packed weights. Each
/// step broadcasts one input per row and loads one `NR`-wide weight vector per panel; with `NR` a
/// multiple of the vector width and `acc` small enough for the register file, LLVM keeps `acc` in
/// vector registers and emits `R · P · NR / lanes` vector multiply-adds per step.
#[inline(always)]
fn microkernel<const R: usize, const P: usize, const NR: usize, A: MulAdd>(
    k: usize,
    x_rows: &[&[f32]; R],
    weights: &[&[f32]; P],
    mut acc: [[[f32; NR]; P]; R],
) -> [[[f32; NR]; P]; R] {
    // Weights per vector: the order below loads one vector of weights and uses it for every row.
    let width = vector_width(NR);
    // Cut to exactly `k` steps here, so that LLVM sees every index below is in bounds.
    let mut x_rows: [&[f32]; R] = *x_rows;
    for x_row in &mut x_rows {
        *x_row = &x_row[..k];
    }
    let mut weights: [&[f32]; P] = *weights;
    for panel_weights in &mut weights {
        *panel_weights = &panel_weights[..k * NR];
    }
    for kk in 0..k {
        let mut inputs = [0.0f32; R];
        for (input, x_row) in inputs.iter_mut().zip(&x_rows) {
            *input = x_row[kk];
        }
        for p in 0..P {
            let w: &[f32; NR] = weights[p][kk * NR..kk * NR + NR]
                .try_into()
                .expect("a panel holds NR weights per step");
            for (chunk, vector) in w.chunks_exact(width).enumerate() {
                for r in 0..R {
                    for (lane, &weight) in vector.iter().enumerate() {
                        let j = chunk * width + lane;
                        acc[r][p][j] = A::mul_add(inputs[r], weight, acc[r][p][j]);
                    }
                }
            }
        }
    }
    acc
}
