//! The type of a dispatch table: one implementation of every dispatched kernel, and the kinds of
//! kernel it holds. The tables themselves are the statics of `generic` (in the parent module)
//! and of the architecture modules; the parent chooses one per process.

use super::frame::{Operand, Tile};
use super::gemm::Gemm;
use super::reduced::ReducedGemm;
use crate::ops::Binary;

/// An elementwise kernel that rewrites a slice in place.
pub(super) type SliceKernel = fn(&mut [f32]);

/// An elementwise kernel from one slice into another of the same length.
pub(super) type MapKernel = fn(&[f32], &mut [f32]);

/// A binary elementwise operation over a tile (see [`frame`](super::frame)).
pub(super) type BinaryTileKernel = fn(Tile, &mut [f32], Operand<'_>, Operand<'_>, Binary);

/// `out = aᵀ` (or `out += aᵀ`) for a row-major `a` of `rows × cols` and a row-major `out` of
/// `cols × rows`.
pub(super) type TransposeKernel = fn(&[f32], usize, usize, &mut [f32], bool);

/// One implementation of every dispatched kernel.
#[derive(Debug, Clone, Copy)]
pub(super) struct Kernels {
    /// What `UNROLL_KERNELS` calls it, and what tests print.
    pub(super) name: &'static str,
    /// The packed product, and the panel width of the matrices it expects.
    pub(super) gemm: Gemm,
    /// The product by weights in reduced precision.
    pub(super) reduced: ReducedGemm,
    pub(super) sigmoid_f32: SliceKernel,
    pub(super) tanh_f32: SliceKernel,
    pub(super) exp_f32: SliceKernel,
    pub(super) relu_f32: SliceKernel,
    pub(super) sigmoid_into: MapKernel,
    pub(super) tanh_into: MapKernel,
    pub(super) exp_into: MapKernel,
    pub(super) binary_tile: BinaryTileKernel,
    pub(super) transpose: TransposeKernel,
    /// The blocks fused passes run in (`run_pass`).
    pub(super) lanes: LaneSet,
}

/// The blocks of lanes a table runs fused passes in: a generic function
/// cannot sit in a table, so the table names its instantiation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum LaneSet {
    /// Blocks of 8 and 4 lanes with the library's activations, compiled for the baseline.
    Generic,
    /// Blocks of 16 and 8 lanes (two `ymm`, one) with the approximations, AVX2 + FMA.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// Blocks of 32 and 16 lanes (two `zmm`, one) with the approximations, AVX-512F.
    #[cfg(target_arch = "x86_64")]
    Avx512,
}
