//! The two number types the interpreter computes in: `f32`, as generated
//! code does, and `f64`, for gradient checks by finite differences.

use ndarray::{Array2, ArrayView2, LinalgScalar};
use rnn_runtime::kernels;

use crate::ops::{Binary, Reduction, Unary};

/// A number type the interpreter evaluates the IR in.
pub trait Float:
    LinalgScalar + std::ops::AddAssign + PartialOrd + std::fmt::Debug + Send + Sync
{
    /// The value of an `f32` (exact for both types).
    fn from_f32(value: f32) -> Self;
    /// The value as `f64` (exact for both types).
    fn to_f64(self) -> f64;
    /// `op(a)`.
    fn unary(op: Unary, a: Self) -> Self;
    /// `op(a, b)`.
    fn binary(op: Binary, a: Self, b: Self) -> Self;
    /// `min(max(a, lo), hi)`.
    fn clip(a: Self, lo: Self, hi: Self) -> Self;
    /// `x · wᵀ`.
    fn matmul_bt(x: ArrayView2<'_, Self>, w: ArrayView2<'_, Self>) -> Array2<Self>;
    /// `op(values)`, element after element from the first, as
    /// [`Reduction::apply`].
    fn reduce(op: Reduction, values: impl Iterator<Item = Self>) -> Self;
}

impl Float for f32 {
    fn reduce(op: Reduction, values: impl Iterator<Item = f32>) -> f32 {
        op.apply(values)
    }

    fn from_f32(value: f32) -> f32 {
        value
    }

    fn to_f64(self) -> f64 {
        f64::from(self)
    }

    /// The runtime's own definition: what generated code computes.
    fn unary(op: Unary, a: f32) -> f32 {
        op.apply(a)
    }

    fn binary(op: Binary, a: f32, b: f32) -> f32 {
        op.apply(a, b)
    }

    fn clip(a: f32, lo: f32, hi: f32) -> f32 {
        a.max(lo).min(hi)
    }

    /// The runtime's kernel, as the forward interpreter always used.
    fn matmul_bt(x: ArrayView2<'_, f32>, w: ArrayView2<'_, f32>) -> Array2<f32> {
        let mut out = Array2::zeros((x.nrows(), w.nrows()));
        kernels::matmul_bt(x, w, out.view_mut(), false);
        out
    }
}

impl Float for f64 {
    fn reduce(op: Reduction, values: impl Iterator<Item = f64>) -> f64 {
        match op {
            Reduction::Sum => values.fold(0.0, |sum, value| sum + value),
            Reduction::Max => values.fold(f64::NEG_INFINITY, |max, value| {
                if value.is_nan() || max.is_nan() {
                    f64::NAN
                } else {
                    max.max(value)
                }
            }),
        }
    }

    fn from_f32(value: f32) -> f64 {
        f64::from(value)
    }

    fn to_f64(self) -> f64 {
        self
    }

    /// The runtime's definitions (`rnn_runtime::ops`), in `f64`.
    fn unary(op: Unary, a: f64) -> f64 {
        match op {
            Unary::Neg => -a,
            Unary::Sigmoid => {
                if a >= 0.0 {
                    1.0 / (1.0 + (-a).exp())
                } else {
                    let exp = a.exp();
                    exp / (1.0 + exp)
                }
            }
            Unary::Tanh => a.tanh(),
            Unary::Relu => {
                if a < 0.0 {
                    0.0
                } else {
                    a
                }
            }
            Unary::Exp => a.exp(),
            Unary::Log => a.ln(),
            Unary::Abs => a.abs(),
            Unary::Sign => {
                if a > 0.0 {
                    1.0
                } else if a < 0.0 {
                    -1.0
                } else {
                    0.0
                }
            }
            Unary::Sqrt => a.sqrt(),
            Unary::Softplus => {
                if a > 40.0 {
                    a
                } else {
                    a.exp().ln_1p()
                }
            }
        }
    }

    fn binary(op: Binary, a: f64, b: f64) -> f64 {
        match op {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Min => a.min(b),
            Binary::Max => a.max(b),
            Binary::SoftThreshold => {
                let shrunk = a.abs() - b;
                if shrunk <= 0.0 {
                    0.0
                } else {
                    shrunk.copysign(a)
                }
            }
        }
    }

    fn clip(a: f64, lo: f64, hi: f64) -> f64 {
        a.max(lo).min(hi)
    }

    fn matmul_bt(x: ArrayView2<'_, f64>, w: ArrayView2<'_, f64>) -> Array2<f64> {
        x.dot(&w.t())
    }
}
