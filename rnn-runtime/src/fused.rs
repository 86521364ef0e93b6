//! Elementwise work of a layer: one pass over the rows of a phase (the
//! running sequences at a step, or the valid steps of a chunk ahead of the
//! loop, or the sequences once per call).
//!
//! Generated code runs a run of elementwise operations as one pass. Most
//! passes (every node one width) are a [`Pass`]: a function of one
//! block of columns of one row, written by generated code with the
//! [`Lanes`] operations, which [`run_pass`] runs in blocks of this CPU's
//! vectors inside the kernel table's `#[target_feature]` function, so every
//! intermediate value lives in registers and the pass is one call.
//!
//! Passes that do not fit blocks of columns (nodes of different widths, a
//! part of a value computed in the same pass, a column or an offset range
//! of a state that the pass updates in place) run in tiles of a few rows
//! instead: for each tile, every operation in turn
//! on that tile ([`binary_tile`], [`unary_tile`], [`clip_tile`],
//! [`reduce_tile`]), with the
//! intermediate values in small scratch tiles that stay in the L1 cache.
//! Those functions work on strided slices; the operation is a value, so
//! each loop is compiled once, not once per call site.
//!
//! This module holds the entry points, which go through the kernel table
//! chosen for this CPU; the types and portable loops they share with the
//! tables are in `kernels/frame.rs`, below the kernels, and re-exported
//! here.

use ndarray::{ArrayRef1, ArrayRef2};

use crate::kernels;
pub use crate::kernels::frame::{clip_tile, Lanes, Operand, Pass, Tile};
use crate::kernels::frame::{out_row, Row};
use crate::ops::{Binary, Reduction, Unary};

/// All elements of a matrix with standard (row-major, contiguous) layout.
///
/// # Panics
///
/// If the layout is not standard: generated code only passes buffers it
/// allocated itself, which always are.
#[inline]
pub fn rows(matrix: &ArrayRef2<f32>) -> &[f32] {
    matrix
        .as_slice()
        .expect("generated code passes standard-layout buffers")
}

/// All elements of a matrix with standard layout, mutably (see [`rows`]).
#[inline]
pub fn rows_mut(matrix: &mut ArrayRef2<f32>) -> &mut [f32] {
    matrix
        .as_slice_mut()
        .expect("generated code passes standard-layout buffers")
}

/// The elements of a contiguous vector (see [`rows`]).
#[inline]
pub fn vector(vector: &ArrayRef1<f32>) -> &[f32] {
    vector
        .as_slice()
        .expect("generated code passes contiguous vectors")
}

/// A kernel from one slice into another.
type MapInto = fn(&[f32], &mut [f32]);

/// `out = op(a)` elementwise over a tile.
pub fn unary_tile(tile: Tile, out: &mut [f32], a: Operand<'_>, op: Unary) {
    let Tile {
        rows,
        width,
        out_stride,
    } = tile;
    let into: Option<MapInto> = match op {
        Unary::Sigmoid => Some(kernels::sigmoid_into),
        Unary::Tanh => Some(kernels::tanh_into),
        Unary::Exp => Some(kernels::exp_into),
        _ => None,
    };
    if let (Some(into), Operand::Rows { data, stride }) = (into, a) {
        // The vectorised kernels read the operand's rows and write the
        // tile's, once over both when both are contiguous.
        if stride == width && out_stride == width {
            into(&data[..rows * width], &mut out[..rows * width]);
        } else {
            for i in 0..rows {
                into(
                    &data[i * stride..i * stride + width],
                    out_row(out, out_stride, i, width),
                );
            }
        }
        return;
    }
    for i in 0..rows {
        let row = out_row(out, out_stride, i, width);
        match a.row(i, width) {
            Row::Slice(a) => row.copy_from_slice(a),
            Row::Value(a) => row.fill(a),
        }
    }
    // The vectorised kernels run once over a contiguous tile.
    let kernel: fn(&mut [f32]) = match op {
        Unary::Sigmoid => kernels::sigmoid_slice,
        Unary::Tanh => kernels::tanh_slice,
        Unary::Exp => kernels::exp_slice,
        Unary::Relu => kernels::relu_slice,
        Unary::Neg => |values| in_place(values, |a| Unary::Neg.apply(a)),
        Unary::Log => |values| in_place(values, |a| Unary::Log.apply(a)),
        Unary::Abs => |values| in_place(values, |a| Unary::Abs.apply(a)),
        Unary::Sign => |values| in_place(values, |a| Unary::Sign.apply(a)),
        Unary::Sqrt => |values| in_place(values, |a| Unary::Sqrt.apply(a)),
        Unary::Softplus => |values| in_place(values, |a| Unary::Softplus.apply(a)),
    };
    if out_stride == width {
        kernel(&mut out[..rows * width]);
    } else {
        for i in 0..rows {
            kernel(out_row(out, out_stride, i, width));
        }
    }
}

#[inline(always)]
fn in_place(out: &mut [f32], f: impl Fn(f32) -> f32) {
    for value in out {
        *value = f(*value);
    }
}

/// `out = op(a, b)` elementwise over a tile, with the vector instructions
/// of this CPU.
pub fn binary_tile(tile: Tile, out: &mut [f32], a: Operand<'_>, b: Operand<'_>, op: Binary) {
    kernels::binary_tile(tile, out, a, b, op);
}

/// `out[i] = op(row i of a)` over a tile: each of `tile.rows` rows of
/// `tile.width` elements reduced to one value, written at
/// `out[i * tile.out_stride]` ([`Reduction::apply`]). A reduction reads the
/// whole row, so a pass holding one runs in tiles, never in lanes.
pub fn reduce_tile(tile: Tile, out: &mut [f32], a: Operand<'_>, op: Reduction) {
    let Tile {
        rows,
        width,
        out_stride,
    } = tile;
    for i in 0..rows {
        out[i * out_stride] = match a {
            Operand::Rows { data, stride } => {
                op.apply(data[i * stride..i * stride + width].iter().copied())
            }
            Operand::PerRow { data, stride } => {
                op.apply(std::iter::repeat_n(data[i * stride], width))
            }
            Operand::Value(value) => op.apply(std::iter::repeat_n(value, width)),
        };
    }
}

/// Runs `pass` over `rows` rows of `width` columns, in blocks of two and one
/// of this CPU's vectors (the last columns of each row one at a time).
pub fn run_pass<P: Pass>(pass: &mut P, rows: usize, width: usize) {
    kernels::run_pass(pass, rows, 0..width);
}

/// [`run_pass`] over columns `columns` of each row only (one side of a
/// column split, see [`crate::split`]).
pub fn run_pass_columns<P: Pass>(pass: &mut P, rows: usize, columns: std::ops::Range<usize>) {
    kernels::run_pass(pass, rows, columns);
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
    fn binary_tiles_read_strided_rows_repeated_rows_and_values() {
        // Two rows of 3 out of a [2, 5] buffer (columns 1..4), minus a
        // parameter row repeated (stride 0), into a [2, 3] tile.
        let buffer = [0.0, 1.0, 2.0, 3.0, 0.0, 0.0, 4.0, 5.0, 6.0, 0.0];
        let mut out = [0.0; 6];
        binary_tile(
            tile(2, 3, 3),
            &mut out,
            Operand::Rows {
                data: &buffer[1..],
                stride: 5,
            },
            Operand::Rows {
                data: &[1.0, 1.0, 2.0],
                stride: 0,
            },
            Binary::Sub,
        );
        assert_eq!(out, [0.0, 1.0, 1.0, 3.0, 4.0, 4.0]);
        binary_tile(
            tile(2, 3, 3),
            &mut out,
            Operand::Value(2.0),
            Operand::PerRow {
                data: &[1.0, 9.0, 4.0],
                stride: 2,
            },
            Binary::Div,
        );
        assert_eq!(out, [2.0, 2.0, 2.0, 0.5, 0.5, 0.5]);
    }

    #[test]
    fn unary_tiles_match_the_scalar_functions_contiguous_or_strided() {
        let input = [-3.0f32, -0.5, 0.0, 0.25, 4.0, 1.5];
        for (op, reference) in [
            (Unary::Neg, (|a: f32| -a) as fn(f32) -> f32),
            (Unary::Abs, f32::abs),
            (Unary::Relu, |a: f32| a.max(0.0)),
            (Unary::Sigmoid, |a: f32| 1.0 / (1.0 + (-a).exp())),
            (Unary::Tanh, f32::tanh),
        ] {
            for out_stride in [3, 4] {
                let mut out = [f32::NAN; 8];
                let rows = Operand::Rows {
                    data: &input,
                    stride: 3,
                };
                unary_tile(tile(2, 3, out_stride), &mut out, rows, op);
                for i in 0..2 {
                    for j in 0..3 {
                        let (got, a) = (out[i * out_stride + j], input[i * 3 + j]);
                        assert!((got - reference(a)).abs() <= 2e-7, "{op:?}({a}) = {got}");
                    }
                }
            }
        }
    }

    #[test]
    fn reduce_tiles_read_whole_rows_and_write_one_value_each() {
        let input = [1.0f32, -2.0, 4.0, 0.5, 8.0, -1.0];
        let rows = Operand::Rows {
            data: &input,
            stride: 3,
        };
        let mut out = [f32::NAN; 4];
        reduce_tile(tile(2, 3, 2), &mut out, rows, Reduction::Sum);
        assert_eq!([out[0], out[2]], [3.0, 7.5]);
        reduce_tile(tile(2, 3, 1), &mut out, rows, Reduction::Max);
        assert_eq!(out[..2], [4.0, 8.0]);
        let per_row = Operand::PerRow {
            data: &input,
            stride: 3,
        };
        reduce_tile(tile(2, 3, 1), &mut out, per_row, Reduction::Sum);
        assert_eq!(out[..2], [3.0, 1.5]);
        // A NaN anywhere in a row is the row's maximum, as its sum.
        let with_nan = [1.0f32, f32::NAN, 4.0];
        let nan_row = Operand::Rows {
            data: &with_nan,
            stride: 3,
        };
        reduce_tile(tile(1, 3, 1), &mut out, nan_row, Reduction::Max);
        assert!(out[0].is_nan());
        assert_eq!(Reduction::Max.apply([]), f32::NEG_INFINITY);
        assert_eq!(Reduction::Sum.apply([]), 0.0);
    }
}
