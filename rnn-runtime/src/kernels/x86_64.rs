//! x86-64 implementations: AVX2 with FMA, and AVX-512F.
//!
//! Both compile the portable kernels ([`gemm_rows`], [`approx`]) inside `#[target_feature]`
//! functions, where LLVM vectorises them for 256-bit (`ymm`, 16 registers) or 512-bit (`zmm`,
//! 32 registers) vectors and contracts every multiply-add into one FMA instruction. The loop nest
//! is the same; the register tile differs, sized to the register file, and the AVX2 tile's
//! chains are written in intrinsics ([`Avx2Chains`]: LLVM left the portable 16-lane tile on the
//! stack for `ymm`), the same chains in the same order:
//!
//! | table | tile (rows × columns) | accumulators | per inner step |
//! |-------|------|--------------|----------------|
//! | `avx2` | [`AVX2_TILE_ROWS`] × [`AVX2_PANEL`] | 12 `ymm` | 2 loads, 6 broadcasts, 12 FMAs |
//! | `avx512` | [`AVX512_TILE_ROWS`] × [`AVX512_PANEL`] | 24 `zmm` | 4 loads, 6 broadcasts, 24 FMAs |
//!
//! Twelve or more independent accumulators cover the FMA latency (4 cycles) times the FMA
//! throughput (two 256-bit or one 512-bit per cycle on Zen 4) with room to spare, and the loads
//! per FMA stay under the two loads per cycle the cores sustain. Each weight vector is loaded
//! once per step and used for every row of the tile. A lone row (`n = 1`) runs a 1 × 2·panel
//! tile: 8 `zmm` (or 4 `ymm`) chains, bound by streaming the weights from L2.
//!
//! Safety: every `#[target_feature]` function here is private and called only from its safe
//! wrapper, which checks the features with `is_x86_feature_detected!` (a cached atomic load) on
//! every call. The tables themselves are handed out only after the same detection, so the check
//! always passes; were it to fail, the wrapper would run the same portable code compiled without
//! the features, which gives bit-identical results (`f32::mul_add` is correctly rounded
//! everywhere, in software if need be), only slowly. The intrinsics tiles (`Avx2Chains`,
//! `Avx2Dot`, `Avx512Dot`) are safe trait methods that run their instructions unchecked: each is
//! instantiated only inside its table's `#[target_feature]` body, never in a wrapper's fallback,
//! and checks the features again in debug builds.

use std::ops::Range;

use ndarray::{ArrayView2, ArrayViewMut2};

use super::frame::{binary_tile_portable, run_rows, Activations, Block, Operand, Pass, Tile};
use super::gemm::{gemm_rows, Chains, Columns, Fused, Gemm, PackedMatrix, Portable, Start};
use super::reduced::{gemm_reduced_rows, PortableDot, ReducedDot, ReducedGemm, ReducedMatrix};
use super::types::{Kernels, LaneSet};
use super::{approx, generic};
use crate::ops::Binary;

/// Columns per panel (and per register tile) of the AVX2 table: two `ymm` vectors.
const AVX2_PANEL: usize = 16;
/// Rows per register tile of the AVX2 table.
const AVX2_TILE_ROWS: usize = 6;
/// Columns per panel (and per register tile) of the AVX-512 table: four `zmm` vectors.
const AVX512_PANEL: usize = 64;
/// Rows per register tile of the AVX-512 table.
const AVX512_TILE_ROWS: usize = 6;

/// The AVX2 + FMA table.
static AVX2: Kernels = Kernels {
    name: "avx2",
    gemm: Gemm {
        name: "avx2",
        panel_width: AVX2_PANEL,
        kernel: gemm_avx2,
    },
    reduced: ReducedGemm {
        name: "avx2",
        panel_width: AVX2_PANEL,
        kernel: gemm_reduced_avx2,
    },
    sigmoid_f32: sigmoid_avx2,
    tanh_f32: tanh_avx2,
    exp_f32: exp_avx2,
    sigmoid_into: sigmoid_into_avx2,
    tanh_into: tanh_into_avx2,
    exp_into: exp_into_avx2,
    relu_f32: generic::relu_f32_generic,
    binary_tile: binary_tile_avx2,
    transpose: transpose_avx,
    lanes: LaneSet::Avx2,
};

/// The AVX-512F table.
static AVX512: Kernels = Kernels {
    name: "avx512",
    gemm: Gemm {
        name: "avx512",
        panel_width: AVX512_PANEL,
        kernel: gemm_avx512,
    },
    reduced: ReducedGemm {
        name: "avx512",
        panel_width: AVX512_PANEL,
        kernel: gemm_reduced_avx512,
    },
    sigmoid_f32: sigmoid_avx512,
    tanh_f32: tanh_avx512,
    exp_f32: exp_avx512,
    sigmoid_into: sigmoid_into_avx512,
    tanh_into: tanh_into_avx512,
    exp_into: exp_into_avx512,
    relu_f32: generic::relu_f32_generic,
    binary_tile: binary_tile_avx512,
    transpose: transpose_avx,
    lanes: LaneSet::Avx512,
};

fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
}

fn has_avx512() -> bool {
    has_avx2() && is_x86_feature_detected!("avx512f")
}

/// The AVX2 + FMA table, if this CPU has both.
pub(super) fn avx2() -> Option<&'static Kernels> {
    has_avx2().then_some(&AVX2)
}

/// The AVX-512F table, if this CPU has AVX-512F (and AVX2 + FMA, which every such CPU has).
pub(super) fn avx512() -> Option<&'static Kernels> {
    has_avx512().then_some(&AVX512)
}

/// Declares, for one instruction set, `#[target_feature]` slice kernels (in place, and from one
/// slice into another) and their safe wrappers that check the features.
macro_rules! slice_kernel {
    ($wrapper:ident, $into:ident, $body:ident, $into_body:ident, $features:literal, $has:ident, $approx:path) => {
        fn $wrapper(values: &mut [f32]) {
            if $has() {
                // SAFETY: `$has()` has just detected every feature `$body` enables.
                unsafe { $body(values) }
            } else {
                values.iter_mut().for_each(|value| *value = $approx(*value));
            }
        }

        #[target_feature(enable = $features)]
        unsafe fn $body(values: &mut [f32]) {
            values.iter_mut().for_each(|value| *value = $approx(*value));
        }

        fn $into(input: &[f32], output: &mut [f32]) {
            if $has() {
                // SAFETY: `$has()` has just detected every feature `$into_body` enables.
                unsafe { $into_body(input, output) }
            } else {
                generic::map_into(input, output, $approx);
            }
        }

        #[target_feature(enable = $features)]
        unsafe fn $into_body(input: &[f32], output: &mut [f32]) {
            generic::map_into(input, output, $approx);
        }
    };
}

slice_kernel!(
    sigmoid_avx2,
    sigmoid_into_avx2,
    sigmoid_avx2_body,
    sigmoid_into_avx2_body,
    "avx2,fma",
    has_avx2,
    approx::sigmoid::<Fused>
);
slice_kernel!(
    tanh_avx2,
    tanh_into_avx2,
    tanh_avx2_body,
    tanh_into_avx2_body,
    "avx2,fma",
    has_avx2,
    approx::tanh::<Fused>
);
slice_kernel!(
    exp_avx2,
    exp_into_avx2,
    exp_avx2_body,
    exp_into_avx2_body,
    "avx2,fma",
    has_avx2,
    approx::exp::<Fused>
);
slice_kernel!(
    sigmoid_avx512,
    sigmoid_into_avx512,
    sigmoid_avx512_body,
    sigmoid_into_avx512_body,
    "avx512f,avx2,fma",
    has_avx512,
    approx::sigmoid::<Fused>
);
slice_kernel!(
    tanh_avx512,
    tanh_into_avx512,
    tanh_avx512_body,
    tanh_into_avx512_body,
    "avx512f,avx2,fma",
    has_avx512,
    approx::tanh::<Fused>
);
slice_kernel!(
    exp_avx512,
    exp_into_avx512,
    exp_avx512_body,
    exp_into_avx512_body,
    "avx512f,avx2,fma",
    has_avx512,
    approx::exp::<Fused>
);

/// Declares, for one instruction set, a `#[target_feature]` binary tile operation and its safe
/// wrapper that checks the features.
macro_rules! binary_tile_kernel {
    ($wrapper:ident, $body:ident, $features:literal, $has:ident) => {
        fn $wrapper(tile: Tile, out: &mut [f32], a: Operand<'_>, b: Operand<'_>, op: Binary) {
            if $has() {
                // SAFETY: `$has()` has just detected every feature `$body` enables.
                unsafe { $body(tile, out, a, b, op) }
            } else {
                binary_tile_portable(tile, out, a, b, op);
            }
        }

        #[target_feature(enable = $features)]
        unsafe fn $body(tile: Tile, out: &mut [f32], a: Operand<'_>, b: Operand<'_>, op: Binary) {
            binary_tile_portable(tile, out, a, b, op);
        }
    };
}

binary_tile_kernel!(
    binary_tile_avx2,
    binary_tile_avx2_body,
    "avx2,fma",
    has_avx2
);
binary_tile_kernel!(
    binary_tile_avx512,
    binary_tile_avx512_body,
    "avx512f,avx2,fma",
    has_avx512
);

/// The transpose of both tables: whole 8 × 8 blocks in `ymm` registers (eight loads, three
/// rounds of eight shuffles, eight stores, where the portable tiles load every element alone:
/// 3-4 times faster on W5's weight-gradient operands), the edges by the portable tiles. 256-bit
/// shuffles suffice for AVX-512 machines too: the transpose is bound by its loads and stores.
fn transpose_avx(a: &[f32], rows: usize, cols: usize, out: &mut [f32], accumulate: bool) {
    let (whole_rows, whole_cols) = (rows / 8 * 8, cols / 8 * 8);
    if has_avx2() && a.len() >= rows * cols && out.len() >= rows * cols {
        // SAFETY: `has_avx2()` has just detected AVX2, which includes the AVX the body enables;
        // the lengths are checked just above.
        unsafe { transpose_blocks_avx(a, rows, cols, out, accumulate) };
        generic::transpose_region(
            a,
            cols,
            out,
            rows,
            (0..whole_rows, whole_cols..cols),
            accumulate,
        );
        generic::transpose_region(a, cols, out, rows, (whole_rows..rows, 0..cols), accumulate);
    } else {
        generic::transpose_generic(a, rows, cols, out, accumulate);
    }
}

/// The whole 8 × 8 blocks of [`transpose_avx`].
///
/// # Safety
///
/// The CPU must have AVX, and `a` and `out` must hold at least `rows · cols` floats.
#[target_feature(enable = "avx")]
unsafe fn transpose_blocks_avx(
    a: &[f32],
    rows: usize,
    cols: usize,
    out: &mut [f32],
    accumulate: bool,
) {
    use std::arch::x86_64::{
        _mm256_add_ps, _mm256_loadu_ps, _mm256_permute2f128_ps, _mm256_shuffle_ps,
        _mm256_storeu_ps, _mm256_unpackhi_ps, _mm256_unpacklo_ps,
    };
    // SAFETY: the caller guarantees AVX. Rows r0..r0 + 8 and columns c0..c0 + 8 are inside
    // `a` (rows × cols), and columns r0..r0 + 8 of rows c0..c0 + 8 inside `out` (cols × rows),
    // both of which hold rows · cols floats by the caller's guarantee: every load and store
    // below is in bounds.
    unsafe {
        // A strip of eight columns of `a` at a time, top to bottom: the
        // eight rows of `out` it writes fill in order and stay in L1. Going
        // across a block of rows instead leaves hundreds of half-written
        // lines of `out`, which all fall in one cache set when `rows` is a
        // multiple of 1024 (W6's 64 × 16): 1.4 ns per float, against 0.07-0.15
        // for the strips at every shape a scratch benchmark tried.
        for c0 in (0..cols / 8 * 8).step_by(8) {
            for r0 in (0..rows / 8 * 8).step_by(8) {
                let from = a.as_ptr().add(r0 * cols + c0);
                let r: [_; 8] = std::array::from_fn(|i| _mm256_loadu_ps(from.add(i * cols)));
                // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves: row j of
                // the result is column j of the block.
                let t = [
                    _mm256_unpacklo_ps(r[0], r[1]),
                    _mm256_unpackhi_ps(r[0], r[1]),
                    _mm256_unpacklo_ps(r[2], r[3]),
                    _mm256_unpackhi_ps(r[2], r[3]),
                    _mm256_unpacklo_ps(r[4], r[5]),
                    _mm256_unpackhi_ps(r[4], r[5]),
                    _mm256_unpacklo_ps(r[6], r[7]),
                    _mm256_unpackhi_ps(r[6], r[7]),
                ];
                let u = [
                    _mm256_shuffle_ps::<0x44>(t[0], t[2]),
                    _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
                    _mm256_shuffle_ps::<0x44>(t[1], t[3]),
                    _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
                    _mm256_shuffle_ps::<0x44>(t[4], t[6]),
                    _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
                    _mm256_shuffle_ps::<0x44>(t[5], t[7]),
                    _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
                ];
                let columns = [
                    _mm256_permute2f128_ps::<0x20>(u[0], u[4]),
                    _mm256_permute2f128_ps::<0x20>(u[1], u[5]),
                    _mm256_permute2f128_ps::<0x20>(u[2], u[6]),
                    _mm256_permute2f128_ps::<0x20>(u[3], u[7]),
                    _mm256_permute2f128_ps::<0x31>(u[0], u[4]),
                    _mm256_permute2f128_ps::<0x31>(u[1], u[5]),
                    _mm256_permute2f128_ps::<0x31>(u[2], u[6]),
                    _mm256_permute2f128_ps::<0x31>(u[3], u[7]),
                ];
                let to = out.as_mut_ptr().add(c0 * rows + r0);
                for (j, column) in columns.into_iter().enumerate() {
                    let slot = to.add(j * rows);
                    let value = if accumulate {
                        _mm256_add_ps(_mm256_loadu_ps(slot), column)
                    } else {
                        column
                    };
                    _mm256_storeu_ps(slot, value);
                }
            }
        }
    }
}

/// `out = start + x · wᵀ` with the AVX2 tile; `w` packed for [`AVX2`].
fn gemm_avx2(
    x: ArrayView2<'_, f32>,
    w: &PackedMatrix,
    out: ArrayViewMut2<'_, f32>,
    acc: Start<'_>,
    columns: Columns,
) {
    if has_avx2() {
        // SAFETY: `has_avx2()` has just detected AVX2 and FMA, all `gemm_avx2_body` enables.
        unsafe { gemm_avx2_body(x, w, out, acc, columns) }
    } else {
        gemm_rows::<AVX2_TILE_ROWS, AVX2_PANEL, Portable<Fused>>(x, w, out, acc, columns);
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_avx2_body(
    x: ArrayView2<'_, f32>,
    w: &PackedMatrix,
    out: ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    columns: Columns,
) {
    gemm_rows::<AVX2_TILE_ROWS, AVX2_PANEL, Avx2Chains>(x, w, out, start, columns);
}

/// The AVX2 table's [`Chains`] in intrinsics: each step loads a panel's two `ymm` of weights
/// once, broadcasts each row's input (per panel) and runs one fused multiply-add per accumulator, the same
/// chains as [`Portable<Fused>`] (bit-identical). LLVM's vectorisation of the portable
/// microkernel for 256-bit vectors kept the 16-lane arrays on the stack (about a fifth of the
/// FMA peak on a Zen 3 core, against OpenBLAS's four fifths); written this way the tile's 12
/// accumulators stay in registers.
struct Avx2Chains;

impl Chains<AVX2_PANEL> for Avx2Chains {
    #[inline(always)]
    fn run<const R: usize, const P: usize>(
        k: usize,
        x_rows: &[&[f32]; R],
        weights: &[&[f32]; P],
        acc: [[[f32; AVX2_PANEL]; P]; R],
    ) -> [[[f32; AVX2_PANEL]; P]; R] {
        debug_assert!(
            has_avx2(),
            "the AVX2 chains run only after AVX2 and FMA are detected"
        );
        // SAFETY: only instantiated in `gemm_avx2_body`, which runs after `has_avx2()` detected
        // AVX2 and FMA, all `chains_avx2` needs.
        unsafe { chains_avx2::<R, P>(k, x_rows, weights, acc) }
    }
}

/// The chains of [`Avx2Chains`]: `R` rows by `P` panels of two `ymm` each.
///
/// Not a `#[target_feature]` function, which cannot be `#[inline(always)]`: with `#[inline]`
/// alone LLVM kept it a call of its own per tile (the reduced dots, smaller, it inlines), which
/// passed the tile's accumulators through memory both ways (a tenth of W4's time). Inlined into
/// `gemm_avx2_body`, its intrinsics compile with that function's features.
///
/// # Safety
///
/// The CPU has AVX2 and FMA.
#[inline(always)]
unsafe fn chains_avx2<const R: usize, const P: usize>(
    k: usize,
    x_rows: &[&[f32]; R],
    weights: &[&[f32]; P],
    acc: [[[f32; AVX2_PANEL]; P]; R],
) -> [[[f32; AVX2_PANEL]; P]; R] {
    use std::arch::x86_64::{
        __m256, _mm256_broadcast_ss, _mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps,
        _mm256_storeu_ps,
    };
    const Y: usize = AVX2_PANEL / 8;
    // Every access below is in bounds by these two checks, so the loop runs on raw pointers
    // (indexing kept a bounds check per row and step, and a general register per row).
    let inputs = row_pointers(x_rows, k);
    assert!(weights.iter().all(|panel| panel.len() >= k * AVX2_PANEL));
    let mut panels: [*const f32; P] = [std::ptr::null(); P];
    for (panel, weights) in panels.iter_mut().zip(weights) {
        *panel = weights.as_ptr();
    }
    let mut out = [[[0.0f32; AVX2_PANEL]; P]; R];
    // SAFETY: the CPU has AVX2 and FMA (the caller's contract). Loads and stores of `acc` and
    // `out` read or write 32 bytes of an `AVX2_PANEL`-float panel from `8 · y`; step `kk < k`
    // reads `AVX2_PANEL` weights from `kk · AVX2_PANEL` of a panel of at least
    // `k · AVX2_PANEL`, and input `kk` of a row of at least `k` (both asserted above).
    unsafe {
        let mut vectors: [[[__m256; Y]; P]; R] = [[[_mm256_setzero_ps(); Y]; P]; R];
        for (vectors_row, acc_row) in vectors.iter_mut().zip(&acc) {
            for (vectors_panel, acc_panel) in vectors_row.iter_mut().zip(acc_row) {
                for (y, vector) in vectors_panel.iter_mut().enumerate() {
                    *vector = _mm256_loadu_ps(acc_panel[8 * y..].as_ptr());
                }
            }
        }
        for kk in 0..k {
            for p in 0..P {
                let mut w = [_mm256_setzero_ps(); Y];
                for (y, vector) in w.iter_mut().enumerate() {
                    *vector = _mm256_loadu_ps(panels[p].add(kk * AVX2_PANEL + 8 * y));
                }
                for r in 0..R {
                    let input = _mm256_broadcast_ss(&*inputs[r].add(kk));
                    for y in 0..Y {
                        vectors[r][p][y] = _mm256_fmadd_ps(input, w[y], vectors[r][p][y]);
                    }
                }
            }
        }
        for (out_row, vectors_row) in out.iter_mut().zip(&vectors) {
            for (out_panel, vectors_panel) in out_row.iter_mut().zip(vectors_row) {
                for (y, vector) in vectors_panel.iter().enumerate() {
                    _mm256_storeu_ps(out_panel[8 * y..].as_mut_ptr(), *vector);
                }
            }
        }
    }
    out
}

/// `out = start + x · wᵀ` with the AVX-512 tile; `w` packed for [`AVX512`].
fn gemm_avx512(
    x: ArrayView2<'_, f32>,
    w: &PackedMatrix,
    out: ArrayViewMut2<'_, f32>,
    acc: Start<'_>,
    columns: Columns,
) {
    if has_avx512() {
        // SAFETY: `has_avx512()` has just detected AVX-512F, AVX2 and FMA, all
        // `gemm_avx512_body` enables.
        unsafe { gemm_avx512_body(x, w, out, acc, columns) }
    } else {
        gemm_rows::<AVX512_TILE_ROWS, AVX512_PANEL, Portable<Fused>>(x, w, out, acc, columns);
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gemm_avx512_body(
    x: ArrayView2<'_, f32>,
    w: &PackedMatrix,
    out: ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    columns: Columns,
) {
    gemm_rows::<AVX512_TILE_ROWS, AVX512_PANEL, Portable<Fused>>(x, w, out, start, columns);
}

/// `out = start + x · wᵀ` with `w` in reduced precision, packed for [`AVX2`].
fn gemm_reduced_avx2(
    x: ArrayView2<'_, f32>,
    w: &ReducedMatrix,
    out: ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    columns: Columns,
) {
    if has_avx2() {
        // SAFETY: `has_avx2()` has just detected AVX2 and FMA, all `gemm_reduced_avx2_body`
        // enables.
        unsafe { gemm_reduced_avx2_body(x, w, out, start, columns) }
    } else {
        gemm_reduced_rows::<AVX2_PANEL, PortableDot<Fused>>(x, w, out, start, columns);
    }
}

#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_reduced_avx2_body(
    x: ArrayView2<'_, f32>,
    w: &ReducedMatrix,
    out: ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    columns: Columns,
) {
    gemm_reduced_rows::<AVX2_PANEL, Avx2Dot>(x, w, out, start, columns);
}

/// [`ReducedDot`] in AVX2 instructions: the lanes widened by shifts and a mask (bfloat16) or
/// by sign extension and conversion (int8), then fused multiply-adds, the same chains as
/// [`PortableDot<Fused>`] (LLVM's vectorisation of those for `ymm` ran bfloat16 no faster than
/// `f32`, which reads twice the bytes).
struct Avx2Dot;

impl ReducedDot<AVX2_PANEL> for Avx2Dot {
    #[inline(always)]
    fn dot_bf16<const R: usize, const P: usize>(
        x_rows: &[&[f32]; R],
        panels: [&[u32]; P],
    ) -> [[[f32; AVX2_PANEL]; R]; P] {
        debug_assert!(
            has_avx2(),
            "the AVX2 chains run only after AVX2 and FMA are detected"
        );
        // SAFETY: only instantiated in `gemm_reduced_avx2_body`, which runs after
        // `has_avx2()` detected the features `dot_bf16_avx2` enables.
        unsafe { dot_bf16_avx2::<R, P>(x_rows, panels) }
    }

    #[inline(always)]
    fn dot_int8<const R: usize, const P: usize>(
        x_rows: &[&[f32]; R],
        panels: [&[i8]; P],
    ) -> [[[f32; AVX2_PANEL]; R]; P] {
        debug_assert!(
            has_avx2(),
            "the AVX2 chains run only after AVX2 and FMA are detected"
        );
        // SAFETY: as `dot_bf16`.
        unsafe { dot_int8_avx2::<R, P>(x_rows, panels) }
    }
}

/// `ymm` per AVX2 panel.
const AVX2_Y: usize = AVX2_PANEL / 8;

/// The accumulators of `P` panels for `R` rows, as arrays.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn store_avx2<const R: usize, const P: usize>(
    acc: &[[[std::arch::x86_64::__m256; AVX2_Y]; R]; P],
) -> [[[f32; AVX2_PANEL]; R]; P] {
    let mut out = [[[0.0f32; AVX2_PANEL]; R]; P];
    for (out, acc) in out.iter_mut().zip(acc) {
        for (out_row, acc_row) in out.iter_mut().zip(acc) {
            for (y, value) in acc_row.iter().enumerate() {
                // SAFETY: `out_row[8 * y..8 * y + 8]` is in bounds: 32 bytes, unaligned store.
                unsafe {
                    std::arch::x86_64::_mm256_storeu_ps(out_row[8 * y..].as_mut_ptr(), *value)
                };
            }
        }
    }
    out
}

/// Raw pointers to the starts of `x_rows`, after checking that each holds `k` inputs.
#[inline(always)]
fn row_pointers<const R: usize>(x_rows: &[&[f32]; R], k: usize) -> [*const f32; R] {
    assert!(x_rows.iter().all(|row| row.len() >= k));
    let mut pointers = [std::ptr::null(); R];
    for (pointer, row) in pointers.iter_mut().zip(x_rows) {
        *pointer = row.as_ptr();
    }
    pointers
}

/// The int8 chains of [`Avx2Dot`]: for each inner index, 8 bytes per `ymm` sign-extended and
/// converted, then fused multiply-adds.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn dot_int8_avx2<const R: usize, const P: usize>(
    x_rows: &[&[f32]; R],
    panels: [&[i8]; P],
) -> [[[f32; AVX2_PANEL]; R]; P] {
    use std::arch::x86_64::{
        __m128i, __m256, _mm256_broadcast_ss, _mm256_cvtepi32_ps, _mm256_cvtepi8_epi32,
        _mm256_fmadd_ps, _mm256_setzero_ps, _mm_loadl_epi64,
    };
    let k = x_rows.first().map_or(0, |row| row.len());
    let inputs = row_pointers(x_rows, k);
    assert!(panels.iter().all(|panel| panel.len() >= k * AVX2_PANEL));
    let mut acc: [[[__m256; AVX2_Y]; R]; P] = [[[_mm256_setzero_ps(); AVX2_Y]; R]; P];
    for inner in 0..k {
        for (acc, panel) in acc.iter_mut().zip(&panels) {
            let mut weights = [_mm256_setzero_ps(); AVX2_Y];
            for (y, vector) in weights.iter_mut().enumerate() {
                // SAFETY: `inner < k` and the panel holds `k · AVX2_PANEL` bytes (asserted
                // above): 8 bytes from `inner · AVX2_PANEL + 8 · y`, unaligned load.
                let bytes = unsafe {
                    _mm_loadl_epi64(
                        panel
                            .as_ptr()
                            .add(inner * AVX2_PANEL + 8 * y)
                            .cast::<__m128i>(),
                    )
                };
                *vector = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
            }
            for (acc_row, input) in acc.iter_mut().zip(&inputs) {
                // SAFETY: `inner < k` and each row holds `k` inputs (asserted above).
                let input = _mm256_broadcast_ss(unsafe { &*input.add(inner) });
                for y in 0..AVX2_Y {
                    acc_row[y] = _mm256_fmadd_ps(input, weights[y], acc_row[y]);
                }
            }
        }
    }
    store_avx2(&acc)
}

/// The bfloat16 chains of [`Avx2Dot`]: `P` panels of 16 lanes (2 `ymm`) of two weights each,
/// for `R` rows.
#[target_feature(enable = "avx2,fma")]
#[inline]
fn dot_bf16_avx2<const R: usize, const P: usize>(
    x_rows: &[&[f32]; R],
    panels: [&[u32]; P],
) -> [[[f32; AVX2_PANEL]; R]; P] {
    use std::arch::x86_64::{
        __m256, __m256i, _mm256_and_si256, _mm256_broadcast_ss, _mm256_castsi256_ps,
        _mm256_fmadd_ps, _mm256_loadu_si256, _mm256_set1_epi32, _mm256_setzero_ps,
        _mm256_setzero_si256, _mm256_slli_epi32,
    };
    let k = x_rows.first().map_or(0, |row| row.len());
    let inputs = row_pointers(x_rows, k);
    let pairs = k.div_ceil(2);
    assert!(panels.iter().all(|panel| panel.len() >= pairs * AVX2_PANEL));
    let mut acc: [[[__m256; AVX2_Y]; R]; P] = [[[_mm256_setzero_ps(); AVX2_Y]; R]; P];
    let high = _mm256_set1_epi32(0xffff_0000_u32 as i32);
    for pair in 0..pairs {
        let mut vectors = [[_mm256_setzero_si256(); AVX2_Y]; P];
        for (vectors, panel) in vectors.iter_mut().zip(&panels) {
            for (y, vector) in vectors.iter_mut().enumerate() {
                // SAFETY: `pair < pairs` and the panel holds `pairs · AVX2_PANEL` lanes
                // (asserted above): 32 bytes from lane `pair · AVX2_PANEL + 8 · y`.
                *vector = unsafe {
                    _mm256_loadu_si256(
                        panel
                            .as_ptr()
                            .add(pair * AVX2_PANEL + 8 * y)
                            .cast::<__m256i>(),
                    )
                };
            }
        }
        // The pair's first weight is the low half of each lane, its second the high half (a
        // last odd inner index has only the first).
        for g in 0..2.min(k - 2 * pair) {
            let mut row_inputs = [_mm256_setzero_ps(); R];
            for (row_input, input) in row_inputs.iter_mut().zip(&inputs) {
                // SAFETY: `2 · pair + g < k` and each row holds `k` inputs (asserted above).
                *row_input = _mm256_broadcast_ss(unsafe { &*input.add(2 * pair + g) });
            }
            for (acc, vectors) in acc.iter_mut().zip(&vectors) {
                for y in 0..AVX2_Y {
                    let weights = _mm256_castsi256_ps(if g == 0 {
                        _mm256_slli_epi32::<16>(vectors[y])
                    } else {
                        _mm256_and_si256(vectors[y], high)
                    });
                    for (acc_row, input) in acc.iter_mut().zip(&row_inputs) {
                        acc_row[y] = _mm256_fmadd_ps(*input, weights, acc_row[y]);
                    }
                }
            }
        }
    }
    store_avx2(&acc)
}

/// `out = start + x · wᵀ` with `w` in reduced precision, packed for [`AVX512`].
fn gemm_reduced_avx512(
    x: ArrayView2<'_, f32>,
    w: &ReducedMatrix,
    out: ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    columns: Columns,
) {
    if has_avx512() {
        // SAFETY: `has_avx512()` has just detected AVX-512F, AVX2 and FMA, all
        // `gemm_reduced_avx512_body` enables.
        unsafe { gemm_reduced_avx512_body(x, w, out, start, columns) }
    } else {
        gemm_reduced_rows::<AVX512_PANEL, PortableDot<Fused>>(x, w, out, start, columns);
    }
}

#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn gemm_reduced_avx512_body(
    x: ArrayView2<'_, f32>,
    w: &ReducedMatrix,
    out: ArrayViewMut2<'_, f32>,
    start: Start<'_>,
    columns: Columns,
) {
    gemm_reduced_rows::<AVX512_PANEL, Avx512Dot>(x, w, out, start, columns);
}

/// [`ReducedDot`] in AVX-512 instructions: the lanes widened by shifts and a mask (no
/// shuffle), then fused multiply-adds, the same chains as [`PortableDot<Fused>`].
struct Avx512Dot;

impl ReducedDot<AVX512_PANEL> for Avx512Dot {
    #[inline(always)]
    fn dot_bf16<const R: usize, const P: usize>(
        x_rows: &[&[f32]; R],
        panels: [&[u32]; P],
    ) -> [[[f32; AVX512_PANEL]; R]; P] {
        // SAFETY: only instantiated in `gemm_reduced_avx512_body`, which runs after
        // `has_avx512()` detected the features `dot_bf16_avx512` enables.
        unsafe { dot_bf16_avx512::<R, P>(x_rows, panels) }
    }

    #[inline(always)]
    fn dot_int8<const R: usize, const P: usize>(
        x_rows: &[&[f32]; R],
        panels: [&[i8]; P],
    ) -> [[[f32; AVX512_PANEL]; R]; P] {
        // SAFETY: as `dot_bf16`.
        unsafe { dot_int8_avx512::<R, P>(x_rows, panels) }
    }
}

/// The accumulators of `P` panels for `R` rows, as arrays.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn store_avx512<const R: usize, const P: usize>(
    acc: &[[[std::arch::x86_64::__m512; AVX512_PANEL / 16]; R]; P],
) -> [[[f32; AVX512_PANEL]; R]; P] {
    let mut out = [[[0.0f32; AVX512_PANEL]; R]; P];
    for (out, acc) in out.iter_mut().zip(acc) {
        for (out_row, acc_row) in out.iter_mut().zip(acc) {
            for (z, value) in acc_row.iter().enumerate() {
                // SAFETY: `out_row[16 * z..16 * z + 16]` is in bounds: 64 bytes, unaligned store.
                unsafe {
                    std::arch::x86_64::_mm512_storeu_ps(out_row[16 * z..].as_mut_ptr(), *value)
                };
            }
        }
    }
    out
}

/// The int8 chains of [`Avx512Dot`]: for each inner index, 16 bytes per `zmm` sign-extended and
/// converted, then fused multiply-adds.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn dot_int8_avx512<const R: usize, const P: usize>(
    x_rows: &[&[f32]; R],
    panels: [&[i8]; P],
) -> [[[f32; AVX512_PANEL]; R]; P] {
    use std::arch::x86_64::{
        __m128i, __m512, _mm512_cvtepi32_ps, _mm512_cvtepi8_epi32, _mm512_fmadd_ps, _mm512_set1_ps,
        _mm512_setzero_ps, _mm_loadu_si128,
    };
    const Z: usize = AVX512_PANEL / 16;
    let k = x_rows.first().map_or(0, |row| row.len());
    let mut acc: [[[__m512; Z]; R]; P] = [[[_mm512_setzero_ps(); Z]; R]; P];
    for inner in 0..k {
        let inputs: [__m512; R] = std::array::from_fn(|r| _mm512_set1_ps(x_rows[r][inner]));
        for (acc, panel) in acc.iter_mut().zip(panels) {
            let bytes: &[i8; AVX512_PANEL] = panel
                [inner * AVX512_PANEL..(inner + 1) * AVX512_PANEL]
                .try_into()
                .expect("a panel holds 64 weights per inner index");
            for z in 0..Z {
                // SAFETY: `bytes[16 * z..16 * z + 16]` is in bounds: 16 bytes, unaligned load.
                let packed = unsafe { _mm_loadu_si128(bytes[16 * z..].as_ptr().cast::<__m128i>()) };
                let weights = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(packed));
                for (acc_row, input) in acc.iter_mut().zip(&inputs) {
                    acc_row[z] = _mm512_fmadd_ps(*input, weights, acc_row[z]);
                }
            }
        }
    }
    store_avx512(&acc)
}

/// The bfloat16 chains of [`Avx512Dot`]: `P` panels of 64 lanes (4 `zmm`) of two weights each,
/// for `R` rows.
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
fn dot_bf16_avx512<const R: usize, const P: usize>(
    x_rows: &[&[f32]; R],
    panels: [&[u32]; P],
) -> [[[f32; AVX512_PANEL]; R]; P] {
    use std::arch::x86_64::{
        __m512, __m512i, _mm512_and_si512, _mm512_castsi512_ps, _mm512_fmadd_ps,
        _mm512_loadu_si512, _mm512_set1_epi32, _mm512_set1_ps, _mm512_setzero_ps,
        _mm512_slli_epi32,
    };
    const Z: usize = AVX512_PANEL / 16;
    let k = x_rows.first().map_or(0, |row| row.len());
    let mut acc: [[[__m512; Z]; R]; P] = [[[_mm512_setzero_ps(); Z]; R]; P];
    let high = _mm512_set1_epi32(0xffff_0000_u32 as i32);
    for pair in 0..k.div_ceil(2) {
        let vectors: [[__m512i; Z]; P] = panels.map(|panel| {
            let lanes: &[u32; AVX512_PANEL] = panel[pair * AVX512_PANEL..(pair + 1) * AVX512_PANEL]
                .try_into()
                .expect("a panel holds 64 lanes per pair");
            // SAFETY: `lanes[16 * z..16 * z + 16]` is in bounds: 64 bytes, unaligned load.
            std::array::from_fn(|z| unsafe {
                _mm512_loadu_si512(lanes[16 * z..].as_ptr().cast::<__m512i>())
            })
        });
        // The pair's first weight is the low half of each lane, its second the high half (a
        // last odd inner index has only the first).
        for g in 0..2.min(k - 2 * pair) {
            let inputs: [__m512; R] =
                std::array::from_fn(|r| _mm512_set1_ps(x_rows[r][2 * pair + g]));
            for (acc, vectors) in acc.iter_mut().zip(&vectors) {
                for z in 0..Z {
                    let weights = _mm512_castsi512_ps(if g == 0 {
                        _mm512_slli_epi32::<16>(vectors[z])
                    } else {
                        _mm512_and_si512(vectors[z], high)
                    });
                    for (acc_row, input) in acc.iter_mut().zip(&inputs) {
                        acc_row[z] = _mm512_fmadd_ps(*input, weights, acc_row[z]);
                    }
                }
            }
        }
    }
    store_avx512(&acc)
}

/// The approximations of `approx.rs` with fused multiply-adds: the activations of both tables.
#[derive(Debug, Clone, Copy)]
struct Approx;

impl Activations for Approx {
    #[inline(always)]
    fn sigmoid(x: f32) -> f32 {
        approx::sigmoid::<Fused>(x)
    }

    #[inline(always)]
    fn tanh(x: f32) -> f32 {
        approx::tanh::<Fused>(x)
    }

    #[inline(always)]
    fn exp(x: f32) -> f32 {
        approx::exp::<Fused>(x)
    }
}

/// Declares, for one instruction set, the `#[target_feature]` loop of a fused pass in blocks of
/// `$two` lanes (two vectors), then `$one`, then single lanes, and its safe wrapper that checks
/// the features.
macro_rules! pass_kernel {
    ($wrapper:ident, $body:ident, $features:literal, $has:ident, $two:literal, $one:literal) => {
        pub(super) fn $wrapper<P: Pass>(pass: &mut P, rows: usize, columns: Range<usize>) {
            if $has() {
                // SAFETY: `$has()` has just detected every feature `$body` enables.
                unsafe { $body(pass, rows, columns) }
            } else {
                // Never taken (the table exists only where the features do); one lane at a
                // time, the same results, and one copy of the pass fewer to compile.
                run_rows::<P, Block<1, Approx>, Block<1, Approx>, Block<1, Approx>>(
                    pass, rows, columns,
                );
            }
        }

        #[target_feature(enable = $features)]
        unsafe fn $body<P: Pass>(pass: &mut P, rows: usize, columns: Range<usize>) {
            run_rows::<P, Block<$two, Approx>, Block<$one, Approx>, Block<1, Approx>>(
                pass, rows, columns,
            );
        }
    };
}

// Blocks of two `ymm` (16 lanes), then one.
pass_kernel!(pass_avx2, pass_avx2_body, "avx2,fma", has_avx2, 16, 8);
// Blocks of two `zmm` (32 lanes), then one.
pass_kernel!(
    pass_avx512,
    pass_avx512_body,
    "avx512f,avx2,fma",
    has_avx512,
    32,
    16
);
