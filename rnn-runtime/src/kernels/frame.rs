//! The portable loops every kernel table compiles: the shapes of the elementwise work of a layer
//! ([`Tile`] and [`Operand`] for tile operations, [`Lanes`] and [`Pass`] for fused passes), and
//! the loops over them ([`binary_tile_portable`], [`clip_tile`], [`run_rows`] over [`Block`]s).
//!
//! Nothing here dispatches or uses `unsafe`: what differs from one table to another (the number
//! of lanes of a block, the [`Activations`]) is a type parameter, and the architecture modules
//! instantiate these loops inside their `#[target_feature]` functions, where LLVM vectorises them
//! for that instruction set. The entry points generated code calls, which go through the table
//! chosen for this CPU, are in `fused.rs`, above the kernels.

use std::marker::PhantomData;

use crate::ops::{specialise_binary, Binary, Unary};

/// One operand of a tile operation of `rows` rows by `width` columns.
#[derive(Debug, Clone, Copy)]
pub enum Operand<'a> {
    /// Row `i` is `data[i * stride..][..width]`; stride 0 repeats one row
    /// (a parameter vector) for every row.
    Rows {
        /// The first row, and what follows it.
        data: &'a [f32],
        /// Elements from one row to the next.
        stride: usize,
    },
    /// One value per row, for every column (a one-element vector): row
    /// `i`'s value is `data[i * stride]`.
    PerRow {
        /// The first row's value, and what follows it.
        data: &'a [f32],
        /// Elements from one row to the next.
        stride: usize,
    },
    /// One value for every element.
    Value(f32),
}

/// An operand's values for row `i` of a tile of `width` columns.
#[derive(Clone, Copy)]
pub(crate) enum Row<'a> {
    Slice(&'a [f32]),
    Value(f32),
}

impl<'a> Operand<'a> {
    #[inline(always)]
    pub(crate) fn row(self, i: usize, width: usize) -> Row<'a> {
        match self {
            Operand::Rows { data, stride } => Row::Slice(&data[i * stride..i * stride + width]),
            Operand::PerRow { data, stride } => Row::Value(data[i * stride]),
            Operand::Value(value) => Row::Value(value),
        }
    }
}

/// The rows of a tile's output: row `i` is `out[i * stride..][..width]`.
#[inline(always)]
pub(crate) fn out_row(out: &mut [f32], stride: usize, i: usize, width: usize) -> &mut [f32] {
    &mut out[i * stride..i * stride + width]
}

/// The shape of a tile: `rows` rows of `width` columns, output row `i` at
/// `out[i * out_stride..][..width]`.
#[derive(Debug, Clone, Copy)]
pub struct Tile {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub width: usize,
    /// Elements from one output row to the next.
    pub out_stride: usize,
}

/// `out = op(a, b)` elementwise over a tile, in portable code: inlined into each instruction
/// set's `#[target_feature]` function by the kernel tables.
#[inline(always)]
pub(crate) fn binary_tile_portable(
    tile: Tile,
    out: &mut [f32],
    a: Operand<'_>,
    b: Operand<'_>,
    op: Binary,
) {
    specialise_binary!(op, |f| zip2(tile, out, a, b, f));
}

/// `out = min(max(a, lo), hi)` elementwise over a tile.
pub fn clip_tile(tile: Tile, out: &mut [f32], a: Operand<'_>, lo: Operand<'_>, hi: Operand<'_>) {
    let width = tile.width;
    let at = |row: Row<'_>, j: usize| match row {
        Row::Slice(values) => values[j],
        Row::Value(value) => value,
    };
    for i in 0..tile.rows {
        let (a, lo, hi) = (a.row(i, width), lo.row(i, width), hi.row(i, width));
        for (j, value) in out_row(out, tile.out_stride, i, width)
            .iter_mut()
            .enumerate()
        {
            *value = at(a, j).max(at(lo, j)).min(at(hi, j));
        }
    }
}

/// The loop of a binary operation, specialised for each operand shape so
/// that every variant is a straight vectorisable loop.
#[inline(always)]
fn zip2(tile: Tile, out: &mut [f32], a: Operand<'_>, b: Operand<'_>, f: impl Fn(f32, f32) -> f32) {
    let width = tile.width;
    for i in 0..tile.rows {
        let out = out_row(out, tile.out_stride, i, width);
        match (a.row(i, width), b.row(i, width)) {
            (Row::Slice(a), Row::Slice(b)) => {
                for ((o, a), b) in out.iter_mut().zip(a).zip(b) {
                    *o = f(*a, *b);
                }
            }
            (Row::Slice(a), Row::Value(b)) => {
                for (o, a) in out.iter_mut().zip(a) {
                    *o = f(*a, b);
                }
            }
            (Row::Value(a), Row::Slice(b)) => {
                for (o, b) in out.iter_mut().zip(b) {
                    *o = f(a, *b);
                }
            }
            (Row::Value(a), Row::Value(b)) => out.fill(f(a, b)),
        }
    }
}

/// The values a fused pass computes with: a block of consecutive elements
/// of one row, as many as [`Lanes::LANES`]. Implemented by the runtime for
/// each kernel table, so that one pass written by generated code (a
/// [`Pass`]) runs on this CPU's vectors with the table's activations, and
/// gives the same results as the table's tile operations.
pub trait Lanes: Copy {
    /// Elements per block.
    const LANES: usize;
    /// The first [`LANES`](Self::LANES) elements of `data`.
    fn load(data: &[f32]) -> Self;
    /// `value` in every lane.
    fn splat(value: f32) -> Self;
    /// Writes the block into the first [`LANES`](Self::LANES) elements of `out`.
    fn store(self, out: &mut [f32]);
    /// `op(self)` lane by lane.
    fn unary(self, op: Unary) -> Self;
    /// `op(self, other)` lane by lane.
    fn binary(self, other: Self, op: Binary) -> Self;
    /// `min(max(self, lo), hi)` lane by lane.
    fn clip(self, lo: Self, hi: Self) -> Self;
}

/// The elementwise work of a fused pass, written by generated code as one
/// function of a block of lanes: every operation of the pass on the block
/// in registers, reading and writing only the buffers that live beyond
/// the pass.
pub trait Pass {
    /// Computes columns `col..col + V::LANES` of row `row`.
    fn lanes<V: Lanes>(&mut self, row: usize, col: usize);
}

/// The loop of `run_pass` (in `fused.rs`): each row in blocks of `W` lanes (two vectors,
/// so that two independent chains of each operation interleave: a pass is
/// long chains of dependent operations, sigmoid's and tanh's polynomials
/// and divisions, which one vector's worth of work leaves waiting on
/// latency), then of `V` (one vector), then one element at a time (`T`).
/// Inlined into each table's `#[target_feature]` function.
#[inline(always)]
pub(crate) fn run_rows<P: Pass, W: Lanes, V: Lanes, T: Lanes>(
    pass: &mut P,
    rows: usize,
    columns: std::ops::Range<usize>,
) {
    const { assert!(T::LANES == 1, "the last columns go one at a time") };
    let end = columns.end;
    for row in 0..rows {
        let mut col = columns.start;
        while col + W::LANES <= end {
            pass.lanes::<W>(row, col);
            col += W::LANES;
        }
        while col + V::LANES <= end {
            pass.lanes::<V>(row, col);
            col += V::LANES;
        }
        while col < end {
            pass.lanes::<T>(row, col);
            col += T::LANES;
        }
    }
}

/// How a table computes the activations of a block.
pub(crate) trait Activations: Copy {
    fn sigmoid(x: f32) -> f32;
    fn tanh(x: f32) -> f32;
    fn exp(x: f32) -> f32;
}

/// A block of `N` lanes with activations `A`: each operation is a loop
/// over the lanes, which LLVM turns into vector instructions of the
/// `#[target_feature]` function the pass is inlined into.
#[derive(Clone, Copy)]
pub(crate) struct Block<const N: usize, A>([f32; N], PhantomData<A>);

impl<const N: usize, A: Activations> Block<N, A> {
    #[inline(always)]
    fn map(self, f: impl Fn(f32) -> f32) -> Self {
        let mut out = self.0;
        for lane in &mut out {
            *lane = f(*lane);
        }
        Block(out, PhantomData)
    }

    #[inline(always)]
    fn zip(self, other: Self, f: impl Fn(f32, f32) -> f32) -> Self {
        let mut out = self.0;
        for (lane, b) in out.iter_mut().zip(other.0) {
            *lane = f(*lane, b);
        }
        Block(out, PhantomData)
    }
}

impl<const N: usize, A: Activations> Lanes for Block<N, A> {
    const LANES: usize = N;

    #[inline(always)]
    fn load(data: &[f32]) -> Self {
        let mut out = [0.0; N];
        out.copy_from_slice(&data[..N]);
        Block(out, PhantomData)
    }

    #[inline(always)]
    fn splat(value: f32) -> Self {
        Block([value; N], PhantomData)
    }

    #[inline(always)]
    fn store(self, out: &mut [f32]) {
        out[..N].copy_from_slice(&self.0);
    }

    /// The same functions as `unary_tile` (in `fused.rs`) with the same table.
    #[inline(always)]
    fn unary(self, op: Unary) -> Self {
        match op {
            Unary::Sigmoid => self.map(A::sigmoid),
            Unary::Tanh => self.map(A::tanh),
            Unary::Exp => self.map(A::exp),
            Unary::Relu => self.map(|a| Unary::Relu.apply(a)),
            Unary::Neg => self.map(|a| Unary::Neg.apply(a)),
            Unary::Log => self.map(|a| Unary::Log.apply(a)),
            Unary::Abs => self.map(|a| Unary::Abs.apply(a)),
            Unary::Sign => self.map(|a| Unary::Sign.apply(a)),
            Unary::Sqrt => self.map(|a| Unary::Sqrt.apply(a)),
            Unary::Softplus => self.map(|a| Unary::Softplus.apply(a)),
        }
    }

    /// The same functions as the binary tile operation ([`binary_tile_portable`]).
    #[inline(always)]
    fn binary(self, other: Self, op: Binary) -> Self {
        specialise_binary!(op, |f| self.zip(other, f))
    }

    /// The same function as [`clip_tile`].
    #[inline(always)]
    fn clip(self, lo: Self, hi: Self) -> Self {
        self.zip(lo, f32::max).zip(hi, f32::min)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const fn tile(rows: usize, width: usize, out_stride: usize) -> Tile {
        Tile {
            rows,
            width,
            out_stride,
        }
    }

    #[test]
    fn clip_tiles_bound_each_element() {
        let mut out = [0.0; 4];
        clip_tile(
            tile(2, 2, 2),
            &mut out,
            Operand::Rows {
                data: &[-5.0, -0.5, 0.5, 5.0],
                stride: 2,
            },
            Operand::Value(-1.0),
            Operand::PerRow {
                data: &[1.0, 0.25],
                stride: 1,
            },
        );
        assert_eq!(out, [-1.0, -0.5, 0.25, 0.25]);
    }
}
