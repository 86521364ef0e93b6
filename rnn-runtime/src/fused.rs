//! Elementwise work of a step, one row at a time.
//!
//! Generated code runs the elementwise operations of a step as one pass
//! over the running sequences: for each row, every operation in turn on
//! that row's values, so the intermediate values of a row stay in the L1
//! cache (most live in one small scratch row each) instead of each
//! operation sweeping a `[batch, width]` buffer. The functions here work on
//! slices; the operation is a value, so each loop is compiled once, here,
//! not once per call site.

use ndarray::{ArrayRef1, ArrayRef2};

use crate::__private::{Binary, Unary};
use crate::kernels;

/// One operand of a row operation.
#[derive(Debug, Clone, Copy)]
pub enum Operand<'a> {
    /// One value per element of the output. A row of length 1 stands for
    /// every element (a one-element vector broadcasts).
    Row(&'a [f32]),
    /// One value for every element.
    Value(f32),
}

impl Operand<'_> {
    /// The operand for an output of `len` elements, with a one-element row
    /// turned into a value.
    #[inline]
    fn broadcast(self, len: usize) -> Self {
        match self {
            Operand::Row(row) if row.len() == 1 && len != 1 => Operand::Value(row[0]),
            other => other,
        }
    }
}

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

/// `out = op(a)` elementwise.
pub fn unary_row(out: &mut [f32], a: Operand<'_>, op: Unary) {
    let len = out.len();
    match a.broadcast(len) {
        Operand::Row(a) => out.copy_from_slice(&a[..len]),
        Operand::Value(a) => out.fill(a),
    }
    match op {
        Unary::Sigmoid => kernels::sigmoid_slice(out),
        Unary::Tanh => kernels::tanh_slice(out),
        Unary::Exp => kernels::exp_slice(out),
        Unary::Relu => kernels::relu_slice(out),
        Unary::Neg => in_place(out, |a| -a),
        Unary::Log => in_place(out, f32::ln),
        Unary::Abs => in_place(out, f32::abs),
        Unary::Sign => in_place(out, crate::__private::sign),
        Unary::Sqrt => in_place(out, f32::sqrt),
        Unary::Softplus => in_place(out, crate::__private::softplus),
    }
}

#[inline(always)]
fn in_place(out: &mut [f32], f: impl Fn(f32) -> f32) {
    for value in out {
        *value = f(*value);
    }
}

/// `out = op(a, b)` elementwise.
pub fn binary_row(out: &mut [f32], a: Operand<'_>, b: Operand<'_>, op: Binary) {
    match op {
        Binary::Add => zip2(out, a, b, |a, b| a + b),
        Binary::Sub => zip2(out, a, b, |a, b| a - b),
        Binary::Mul => zip2(out, a, b, |a, b| a * b),
        Binary::Div => zip2(out, a, b, |a, b| a / b),
        Binary::Min => zip2(out, a, b, f32::min),
        Binary::Max => zip2(out, a, b, f32::max),
        Binary::SoftThreshold => zip2(out, a, b, kernels::soft_threshold),
    }
}

/// `out = min(max(a, lo), hi)` elementwise.
pub fn clip_row(out: &mut [f32], a: Operand<'_>, lo: Operand<'_>, hi: Operand<'_>) {
    let len = out.len();
    let (a, lo, hi) = (a.broadcast(len), lo.broadcast(len), hi.broadcast(len));
    let at = |operand: Operand<'_>, j: usize| match operand {
        Operand::Row(row) => row[j],
        Operand::Value(value) => value,
    };
    for (j, value) in out.iter_mut().enumerate() {
        *value = at(a, j).max(at(lo, j)).min(at(hi, j));
    }
}

/// The loop of a binary operation, specialised for each operand shape so
/// that every variant is a straight vectorisable loop.
#[inline(always)]
fn zip2(out: &mut [f32], a: Operand<'_>, b: Operand<'_>, f: impl Fn(f32, f32) -> f32) {
    let len = out.len();
    match (a.broadcast(len), b.broadcast(len)) {
        (Operand::Row(a), Operand::Row(b)) => {
            let (a, b) = (&a[..len], &b[..len]);
            for j in 0..len {
                out[j] = f(a[j], b[j]);
            }
        }
        (Operand::Row(a), Operand::Value(b)) => {
            for (o, a) in out.iter_mut().zip(&a[..len]) {
                *o = f(*a, b);
            }
        }
        (Operand::Value(a), Operand::Row(b)) => {
            for (o, b) in out.iter_mut().zip(&b[..len]) {
                *o = f(a, *b);
            }
        }
        (Operand::Value(a), Operand::Value(b)) => out.fill(f(a, b)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_rows_broadcast_values_and_one_element_rows() {
        let mut out = [0.0; 3];
        binary_row(
            &mut out,
            Operand::Row(&[1.0, 2.0, 3.0]),
            Operand::Row(&[10.0]),
            Binary::Sub,
        );
        assert_eq!(out, [-9.0, -8.0, -7.0]);
        binary_row(
            &mut out,
            Operand::Value(2.0),
            Operand::Row(&[1.0, 4.0, 8.0]),
            Binary::Div,
        );
        assert_eq!(out, [2.0, 0.5, 0.25]);
    }

    #[test]
    fn unary_rows_match_the_scalar_functions() {
        let input = [-3.0f32, -0.5, 0.0, 0.25, 4.0];
        for (op, reference) in [
            (Unary::Neg, (|a: f32| -a) as fn(f32) -> f32),
            (Unary::Abs, f32::abs),
            (Unary::Relu, |a: f32| a.max(0.0)),
            (Unary::Sigmoid, |a: f32| 1.0 / (1.0 + (-a).exp())),
            (Unary::Tanh, f32::tanh),
        ] {
            let mut out = [0.0; 5];
            unary_row(&mut out, Operand::Row(&input), op);
            for (got, a) in out.iter().zip(input) {
                assert!((got - reference(a)).abs() <= 2e-7, "{op:?}({a}) = {got}");
            }
        }
    }

    #[test]
    fn clip_rows_bound_each_element() {
        let mut out = [0.0; 4];
        clip_row(
            &mut out,
            Operand::Row(&[-5.0, -0.5, 0.5, 5.0]),
            Operand::Value(-1.0),
            Operand::Row(&[1.0, 1.0, 0.25, 2.0]),
        );
        assert_eq!(out, [-1.0, -0.5, 0.25, 2.0]);
    }
}
