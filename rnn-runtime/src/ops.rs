//! The elementwise operations of the language and its reductions, and the one scalar definition
//! of each.
//!
//! This is the bottom layer of the runtime: it imports nothing from the rest of the crate, and
//! everything that evaluates an operation (the kernel tables, the tile and pass loops, the
//! elementwise helpers of generated code) names it by a [`Unary`] or [`Binary`] value from here.
//! [`Unary::apply`] and [`Binary::apply`] are the scalar definitions: the portable loops
//! evaluate them, and the vectorised kernels (the slice kernels and approximations of the
//! `kernels` module) are measured against them.
//!
//! Non-finite inputs follow IEEE semantics: NaN stays NaN, infinities saturate.

/// Elementwise functions of one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unary {
    /// `-a`
    Neg,
    /// logistic sigmoid
    Sigmoid,
    /// hyperbolic tangent
    Tanh,
    /// `max(a, 0)`
    Relu,
    /// `e^a`
    Exp,
    /// natural logarithm
    Log,
    /// `|a|`
    Abs,
    /// -1, 0 or 1
    Sign,
    /// square root
    Sqrt,
    /// `log(1 + e^a)`
    Softplus,
}

impl Unary {
    /// Every operation, in declaration order.
    pub const ALL: &'static [Unary] = &[
        Unary::Neg,
        Unary::Sigmoid,
        Unary::Tanh,
        Unary::Relu,
        Unary::Exp,
        Unary::Log,
        Unary::Abs,
        Unary::Sign,
        Unary::Sqrt,
        Unary::Softplus,
    ];

    /// The variant's identifier, `"Sigmoid"` for [`Unary::Sigmoid`]: the code generator writes
    /// `Unary::` followed by it.
    pub const fn name(self) -> &'static str {
        match self {
            Unary::Neg => "Neg",
            Unary::Sigmoid => "Sigmoid",
            Unary::Tanh => "Tanh",
            Unary::Relu => "Relu",
            Unary::Exp => "Exp",
            Unary::Log => "Log",
            Unary::Abs => "Abs",
            Unary::Sign => "Sign",
            Unary::Sqrt => "Sqrt",
            Unary::Softplus => "Softplus",
        }
    }

    /// `op(a)`: the scalar definition of the operation.
    ///
    /// Inlined always, so that a call on a constant operation (see `specialise_unary!`) is the
    /// bare function inside a loop.
    #[inline(always)]
    pub fn apply(self, a: f32) -> f32 {
        match self {
            Unary::Neg => -a,
            Unary::Sigmoid => sigmoid(a),
            Unary::Tanh => tanh(a),
            Unary::Relu => relu(a),
            Unary::Exp => a.exp(),
            Unary::Log => a.ln(),
            Unary::Abs => a.abs(),
            Unary::Sign => sign(a),
            Unary::Sqrt => a.sqrt(),
            Unary::Softplus => softplus(a),
        }
    }
}

/// Elementwise functions of two values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Binary {
    /// `a + b`
    Add,
    /// `a - b`
    Sub,
    /// `a * b`
    Mul,
    /// `a / b`
    Div,
    /// smaller of two
    Min,
    /// larger of two
    Max,
    /// `sign(a) * max(|a| - b, 0)`
    SoftThreshold,
}

impl Binary {
    /// Every operation, in declaration order.
    pub const ALL: &'static [Binary] = &[
        Binary::Add,
        Binary::Sub,
        Binary::Mul,
        Binary::Div,
        Binary::Min,
        Binary::Max,
        Binary::SoftThreshold,
    ];

    /// The variant's identifier, `"SoftThreshold"` for [`Binary::SoftThreshold`]: the code
    /// generator writes `Binary::` followed by it.
    pub const fn name(self) -> &'static str {
        match self {
            Binary::Add => "Add",
            Binary::Sub => "Sub",
            Binary::Mul => "Mul",
            Binary::Div => "Div",
            Binary::Min => "Min",
            Binary::Max => "Max",
            Binary::SoftThreshold => "SoftThreshold",
        }
    }

    /// `op(a, b)`: the scalar definition of the operation. Each is one correctly rounded
    /// operation (or exact), so every implementation gives the same bits.
    ///
    /// Inlined always, as [`Unary::apply`].
    #[inline(always)]
    pub fn apply(self, a: f32, b: f32) -> f32 {
        match self {
            Binary::Add => a + b,
            Binary::Sub => a - b,
            Binary::Mul => a * b,
            Binary::Div => a / b,
            Binary::Min => a.min(b),
            Binary::Max => a.max(b),
            Binary::SoftThreshold => soft_threshold(a, b),
        }
    }
}

/// Reductions of a vector to one value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reduction {
    /// The sum of the elements.
    Sum,
    /// The largest element.
    Max,
}

impl Reduction {
    /// Every reduction, in declaration order.
    pub const ALL: &'static [Reduction] = &[Reduction::Sum, Reduction::Max];

    /// The variant's identifier, `"Max"` for [`Reduction::Max`]: the code generator writes
    /// `Reduction::` followed by it.
    pub const fn name(self) -> &'static str {
        match self {
            Reduction::Sum => "Sum",
            Reduction::Max => "Max",
        }
    }

    /// `op(values)`: the scalar definition, one element after another from the first, so that
    /// every implementation gives the same bits. The sum of no element is 0, their largest
    /// −∞; a NaN element makes the result NaN.
    pub fn apply(self, values: impl IntoIterator<Item = f32>) -> f32 {
        match self {
            Reduction::Sum => values.into_iter().fold(0.0, |sum, value| sum + value),
            Reduction::Max => values.into_iter().fold(f32::NEG_INFINITY, |max, value| {
                if value.is_nan() || max.is_nan() {
                    f32::NAN
                } else {
                    max.max(value)
                }
            }),
        }
    }
}

/// `$body` with `$f` bound to a closure evaluating the operation `$op` holds
/// ([`Unary::apply`]), the operation written as a constant in each arm: the match runs once,
/// outside whatever loop `$body` is, and each operation's loop is compiled with the operation
/// inlined instead of matching on it for every element.
macro_rules! specialise_unary {
    ($op:expr, |$f:ident| $body:expr) => {
        $crate::ops::specialise_unary!(@arms $op, $f, $body;
            Neg Sigmoid Tanh Relu Exp Log Abs Sign Sqrt Softplus)
    };
    (@arms $op:expr, $f:ident, $body:expr; $($variant:ident)*) => {{
        use $crate::ops::Unary;
        match $op {
            $(Unary::$variant => {
                let $f = |a: f32| Unary::$variant.apply(a);
                $body
            })*
        }
    }};
}
pub(crate) use specialise_unary;

/// [`specialise_unary`] for a [`Binary`] operation: `$f` is a closure of two values.
macro_rules! specialise_binary {
    ($op:expr, |$f:ident| $body:expr) => {
        $crate::ops::specialise_binary!(@arms $op, $f, $body;
            Add Sub Mul Div Min Max SoftThreshold)
    };
    (@arms $op:expr, $f:ident, $body:expr; $($variant:ident)*) => {{
        use $crate::ops::Binary;
        match $op {
            $(Binary::$variant => {
                let $f = |a: f32, b: f32| Binary::$variant.apply(a, b);
                $body
            })*
        }
    }};
}
pub(crate) use specialise_binary;

/// The logistic sigmoid, σ(x) = 1 / (1 + e^(−x)).
///
/// Evaluated as `1 / (1 + e^(−x))` for x ≥ 0 and as `e^x / (1 + e^x)` for x < 0, so `exp` only
/// ever sees a non-positive argument and cannot overflow: σ(1e30) = 1 and σ(−1e30) = 0 exactly,
/// with no intermediate infinity or NaN.
/// NaN gives NaN.
pub fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let exp_x = x.exp();
        exp_x / (1.0 + exp_x)
    }
}

/// The hyperbolic tangent, as computed by the standard library (finite for every finite input,
/// ±1 beyond about ±9).
pub fn tanh(x: f32) -> f32 {
    x.tanh()
}

/// The rectifier, max(x, 0).
///
/// NaN gives NaN (unlike `f32::max`, which would hide it as 0).
pub fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// Soft thresholding (the proximal operator of θ‖·‖₁), sign(v) · max(|v| − θ, 0).
///
/// Values within θ of zero become 0; the others move θ towards zero.
/// NaN in `v` or `theta` gives NaN.
pub fn soft_threshold(v: f32, theta: f32) -> f32 {
    let shrunk = v.abs() - theta;
    // Written so that a NaN fails the comparison and propagates, where `max` would hide it.
    if shrunk <= 0.0 {
        0.0
    } else {
        shrunk.copysign(v)
    }
}

/// `sign(a)`: -1, 0 or 1.
pub fn sign(a: f32) -> f32 {
    if a > 0.0 {
        1.0
    } else if a < 0.0 {
        -1.0
    } else {
        0.0
    }
}

/// `log(1 + e^a)`, without overflow for large `a`.
pub fn softplus(a: f32) -> f32 {
    if a > 20.0 {
        a
    } else {
        a.exp().ln_1p()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Inputs spanning every regime of the activations: zero, tiny, ordinary, where `exp`
    /// would overflow (above ~88.7), and far beyond.
    const EDGE_INPUTS: [f32; 18] = [
        0.0, -0.0, 1e-30, -1e-30, 1e-8, 0.5, -0.5, 1.0, -1.0, 9.0, -9.0, 20.0, -20.0, 88.8, -88.8,
        200.0, 1e30, -1e30,
    ];

    fn sigmoid_f64(x: f64) -> f64 {
        1.0 / (1.0 + (-x).exp())
    }

    #[test]
    fn sigmoid_matches_f64_formula_at_edges() {
        for x in EDGE_INPUTS {
            let value = sigmoid(x);
            assert!(value.is_finite(), "sigmoid({x}) = {value}");
            let expected = sigmoid_f64(f64::from(x));
            assert!(
                (f64::from(value) - expected).abs() <= 1e-6,
                "sigmoid({x}) = {value}, expected {expected}"
            );
        }
        assert_eq!(sigmoid(1e30), 1.0);
        assert_eq!(sigmoid(-1e30), 0.0);
        assert_eq!(sigmoid(f32::INFINITY), 1.0);
        assert_eq!(sigmoid(f32::NEG_INFINITY), 0.0);
        assert!(sigmoid(f32::NAN).is_nan());
    }

    #[test]
    fn tanh_matches_f64_formula_at_edges() {
        for x in EDGE_INPUTS {
            let value = tanh(x);
            assert!(value.is_finite(), "tanh({x}) = {value}");
            let expected = f64::from(x).tanh();
            assert!(
                (f64::from(value) - expected).abs() <= 1e-6,
                "tanh({x}) = {value}, expected {expected}"
            );
        }
        assert_eq!(tanh(1e30), 1.0);
        assert_eq!(tanh(-1e30), -1.0);
        assert!(tanh(f32::NAN).is_nan());
    }

    #[test]
    fn relu_clamps_negatives_and_keeps_nan() {
        assert_eq!(relu(2.5), 2.5);
        assert_eq!(relu(-2.5), 0.0);
        assert_eq!(relu(0.0), 0.0);
        assert_eq!(relu(-1e30), 0.0);
        assert_eq!(relu(f32::INFINITY), f32::INFINITY);
        assert!(relu(f32::NAN).is_nan());
    }

    #[test]
    fn soft_threshold_shrinks_towards_zero() {
        assert_eq!(soft_threshold(3.0, 1.0), 2.0);
        assert_eq!(soft_threshold(-3.0, 1.0), -2.0);
        assert_eq!(soft_threshold(0.5, 1.0), 0.0);
        assert_eq!(soft_threshold(-0.5, 1.0), 0.0);
        assert_eq!(soft_threshold(1.0, 1.0), 0.0);
        assert_eq!(soft_threshold(-1.0, 1.0), 0.0);
        assert_eq!(soft_threshold(0.0, 0.0), 0.0);
        assert_eq!(soft_threshold(0.25, 0.0), 0.25);
        assert_eq!(soft_threshold(-0.25, 0.0), -0.25);
        assert_eq!(soft_threshold(f32::INFINITY, 1.0), f32::INFINITY);
        assert!(soft_threshold(f32::NAN, 1.0).is_nan());
        assert!(soft_threshold(1.0, f32::NAN).is_nan());
    }

    #[test]
    fn sign_and_softplus_at_edges() {
        assert_eq!(sign(2.0), 1.0);
        assert_eq!(sign(-0.5), -1.0);
        assert_eq!(sign(0.0), 0.0);
        assert_eq!(sign(-0.0), 0.0);
        assert_eq!(softplus(100.0), 100.0);
        assert!((softplus(0.0) - std::f32::consts::LN_2).abs() <= 1e-7);
        assert_eq!(softplus(-200.0), 0.0);
    }

    #[test]
    fn names_are_the_variant_identifiers() {
        for op in Unary::ALL {
            assert_eq!(op.name(), format!("{op:?}"));
        }
        for op in Binary::ALL {
            assert_eq!(op.name(), format!("{op:?}"));
        }
        assert_eq!(Unary::ALL.len(), 10);
        assert_eq!(Binary::ALL.len(), 7);
    }

    #[test]
    fn apply_is_the_scalar_function_and_specialising_agrees() {
        let inputs = [-3.0f32, -0.5, -0.0, 0.0, 0.25, 4.0, 30.0, f32::NAN];
        for &op in Unary::ALL {
            let reference: fn(f32) -> f32 = match op {
                Unary::Neg => |a| -a,
                Unary::Sigmoid => sigmoid,
                Unary::Tanh => tanh,
                Unary::Relu => relu,
                Unary::Exp => f32::exp,
                Unary::Log => f32::ln,
                Unary::Abs => f32::abs,
                Unary::Sign => sign,
                Unary::Sqrt => f32::sqrt,
                Unary::Softplus => softplus,
            };
            for a in inputs {
                let specialised = specialise_unary!(op, |f| f(a));
                assert_eq!(op.apply(a).to_bits(), reference(a).to_bits(), "{op:?}({a})");
                assert_eq!(specialised.to_bits(), reference(a).to_bits(), "{op:?}({a})");
            }
        }
        for &op in Binary::ALL {
            let reference: fn(f32, f32) -> f32 = match op {
                Binary::Add => |a, b| a + b,
                Binary::Sub => |a, b| a - b,
                Binary::Mul => |a, b| a * b,
                Binary::Div => |a, b| a / b,
                Binary::Min => f32::min,
                Binary::Max => f32::max,
                Binary::SoftThreshold => soft_threshold,
            };
            for (a, b) in inputs.iter().zip(inputs.iter().rev()) {
                let (a, b) = (*a, *b);
                let specialised = specialise_binary!(op, |f| f(a, b));
                let expected = reference(a, b).to_bits();
                assert_eq!(op.apply(a, b).to_bits(), expected, "{op:?}({a}, {b})");
                assert_eq!(specialised.to_bits(), expected, "{op:?}({a}, {b})");
            }
        }
    }

    proptest! {
        #[test]
        fn sigmoid_and_tanh_match_f64_formulas(x in -100.0f32..100.0) {
            let expected_sigmoid = sigmoid_f64(f64::from(x));
            prop_assert!((f64::from(sigmoid(x)) - expected_sigmoid).abs() <= 1e-6);
            let expected_tanh = f64::from(x).tanh();
            prop_assert!((f64::from(tanh(x)) - expected_tanh).abs() <= 1e-6);
        }

        #[test]
        fn soft_threshold_matches_definition(v in -10.0f32..10.0, theta in 0.0f32..5.0) {
            let expected = v.signum() * (v.abs() - theta).max(0.0);
            prop_assert_eq!(soft_threshold(v, theta), expected);
        }
    }
}
