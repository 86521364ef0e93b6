//! Branch-free approximations of `exp`, the logistic sigmoid and `tanh`, for vector units.
//!
//! The generic table evaluates activations with the standard library (`f32::exp`, `f32::tanh`),
//! which LLVM cannot vectorise. The functions here use only operations that it can (multiply-add,
//! division, comparisons turned into selects, integer operations on the bits), so a loop over a
//! slice of them, compiled inside a `#[target_feature]` function, becomes vector code for that
//! instruction set. They are portable and safe; the architecture modules instantiate them with
//! [`Fused`](super::gemm::Fused) multiply-adds.
//!
//! Error bounds against `f64` evaluations of the exact functions, with fused multiply-adds. The
//! constants are the bounds the shared test suite checks (on a dense sample of half a million
//! inputs per function); the measured column is an exhaustive run over every `f32` in
//! [−104, 89] (`exp`), [−200, 200] (sigmoid) and [−20, 20] (`tanh`); outside those ranges the
//! results are exact (saturated or rounded to 0/∞).
//!
//! | function | bound (constant) | measured, every `f32` |
//! |----------|------------------|-----------------------|
//! | [`exp`] | [`EXP_MAX_ULP`] = 1.5 ulp, subnormal results included | 1.01 ulp |
//! | [`sigmoid`] | [`SIGMOID_MAX_ULP`] = 3 ulp, [`SIGMOID_MAX_ABS_ERROR`] = 1e-7 | 2.40 ulp, 8.9e-8 |
//! | [`tanh`] | [`TANH_MAX_ULP`] = 2.5 ulp, [`TANH_MAX_ABS_ERROR`] = 1e-7 | 2.42 ulp, 8.9e-8 |
//!
//! (ulp: the spacing of `f32` values at the exact result.) For comparison, the generic table,
//! with the standard library's `exp` and `tanh`, measures 0.50 ulp for `exp`, the same 2.40 ulp
//! for sigmoid, and 2.19 ulp (1.04e-7) for `tanh`.
//!
//! Special values: NaN gives NaN; `exp(+∞) = +∞`, `exp(−∞) = 0`; `sigmoid(±∞) = 1, 0`;
//! `tanh(±∞) = ±1`; `tanh` is odd (so `tanh(−0) = −0`).

use super::gemm::MulAdd;

/// Largest error of [`exp`], in units in the last place of the exact result (subnormal results
/// included, where the unit is the smallest subnormal).
#[cfg_attr(not(test), allow(dead_code))] // Checked by the test suite.
pub(super) const EXP_MAX_ULP: f32 = 1.5;

/// Largest absolute error of [`sigmoid`] (the outputs lie in [0, 1]).
#[cfg_attr(not(test), allow(dead_code))] // Checked by the test suite.
pub(super) const SIGMOID_MAX_ABS_ERROR: f64 = 1e-7;

/// Largest error of [`sigmoid`] relative to the result, in units in the last place.
#[cfg_attr(not(test), allow(dead_code))] // Checked by the test suite.
pub(super) const SIGMOID_MAX_ULP: f32 = 3.0;

/// Largest absolute error of [`tanh`] (the outputs lie in [−1, 1]).
#[cfg_attr(not(test), allow(dead_code))] // Checked by the test suite.
pub(super) const TANH_MAX_ABS_ERROR: f64 = 1e-7;

/// Largest error of [`tanh`] relative to the result, in units in the last place.
#[cfg_attr(not(test), allow(dead_code))] // Checked by the test suite.
pub(super) const TANH_MAX_ULP: f32 = 2.5;

/// Inputs of [`exp`] are clamped to `[EXP_MIN_INPUT, EXP_MAX_INPUT]`.
///
/// `e^−104 ≈ 6.8·10⁻⁴⁶` is below half the smallest subnormal, so every input below rounds to 0;
/// `e^89 ≈ 4.5·10³⁸` overflows, so every input above gives +∞. Both ends keep `n` (below) within
/// [−150, 129], where the two-factor scaling is exact.
const EXP_MIN_INPUT: f32 = -104.0;
/// See [`EXP_MIN_INPUT`].
const EXP_MAX_INPUT: f32 = 89.0;

/// log₂ e, to turn `x` into a count of halvings/doublings.
const LOG2_E: f32 = std::f32::consts::LOG2_E;

/// 1.5 · 2²³: adding it rounds any `|v| < 2²²` to an integer, found in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// ln 2 split in two (Cody and Waite): `LN2_HI` has 9 significant bits, so `n · LN2_HI` is
/// exact for `|n| < 2¹⁵`, and `LN2_HI + LN2_LO` is ln 2 within about 10⁻¹¹ (the Cephes constants).
const LN2_HI: f32 = 0.693_359_4;
/// See [`LN2_HI`].
const LN2_LO: f32 = -2.121_944_4e-4;

/// Minimax coefficients (Cephes `expf`) of `e^r ≈ 1 + r + r²·P(r)` on `|r| ≤ ln2 / 2`,
/// `P(r) = EXP_P[0]·r⁵ + … + EXP_P[5]` (the last one is 0.5000000120 rounded to `f32`).
const EXP_P: [f32; 6] = [
    1.987_569_2e-4,
    1.398_199_9e-3,
    8.333_452e-3,
    4.166_579_6e-2,
    1.666_666_5e-1,
    0.5,
];

/// Inputs of [`tanh`] are clamped to this magnitude: `tanh 20` is 1 in `f32` (as is everything
/// above about 9), and `e^40 ≈ 2.4·10¹⁷` keeps `2^n` a normal number.
const TANH_MAX_INPUT: f32 = 20.0;

/// `e^x`.
///
/// Formula: clamp `x` to [[`EXP_MIN_INPUT`], [`EXP_MAX_INPUT`]]; reduce it ([`reduce`]) to
/// `x = n·ln2 + r`, `e^r − 1 ≈ p`; `e^x = (1 + p) · 2^⌊n/2⌋ · 2^(n−⌊n/2⌋)`, each factor a
/// normal power of two built from its bits, so the only rounding into the subnormal range is the
/// last multiplication and overflow gives +∞. NaN propagates (both clamp comparisons fail).
#[inline(always)]
pub(super) fn exp<A: MulAdd>(x: f32) -> f32 {
    // Comparisons, not `max`/`min`, so that NaN passes through unchanged.
    let x = if x < EXP_MIN_INPUT { EXP_MIN_INPUT } else { x };
    let x = if x > EXP_MAX_INPUT { EXP_MAX_INPUT } else { x };
    let (n, p) = reduce::<A>(x);
    let poly = p + 1.0;
    let half = n >> 1;
    let scale_low = f32::from_bits((half.wrapping_add(127) << 23) as u32);
    let scale_high = f32::from_bits((n.wrapping_sub(half).wrapping_add(127) << 23) as u32);
    poly * scale_low * scale_high
}

/// `x = n·ln2 + r` with `n = round(x · log₂e)` and `r = x − n·ln2` (Cody–Waite, [`LN2_HI`],
/// [`LN2_LO`]), so `|r| ≤ ln2/2`; returns `n` and `p ≈ e^r − 1 = r + r²·P(r)` ([`EXP_P`]),
/// accurate relative to itself (no cancellation for small `r`). `x` within
/// [[`EXP_MIN_INPUT`], [`EXP_MAX_INPUT`]], or NaN (then `p` is NaN and `n` garbage).
#[inline(always)]
fn reduce<A: MulAdd>(x: f32) -> (i32, f32) {
    let shifted = A::mul_add(x, LOG2_E, ROUND_MAGIC);
    let n_float = shifted - ROUND_MAGIC;
    // Wrapping arithmetic: exact for every clamped input, and garbage (never a panic) for NaN,
    // whose result is NaN through `p` anyway.
    let n = (shifted.to_bits() as i32).wrapping_sub(ROUND_MAGIC.to_bits() as i32);
    let r = A::mul_add(n_float, -LN2_HI, x);
    let r = A::mul_add(n_float, -LN2_LO, r);
    let mut p = EXP_P[0];
    for &coefficient in &EXP_P[1..] {
        p = A::mul_add(p, r, coefficient);
    }
    (n, A::mul_add(p, r * r, r))
}

/// The logistic sigmoid, `1 / (1 + e^−x)`.
///
/// Formula: `e = exp(−|x|)` (so `e ∈ [0, 1]`, never overflowing); `σ(x) = 1 / (1 + e)` for
/// `x ≥ 0` and `e / (1 + e)` for `x < 0`, one division either way. Saturates to exactly 1 above
/// about 17 and decays through the subnormals to 0 below about −104. NaN gives NaN.
#[inline(always)]
pub(super) fn sigmoid<A: MulAdd>(x: f32) -> f32 {
    let e = exp::<A>(-x.abs());
    let numerator = if x < 0.0 { e } else { 1.0 };
    numerator / (1.0 + e)
}

/// The hyperbolic tangent.
///
/// Formula, on `a = |x|` clamped to [`TANH_MAX_INPUT`]: `m = e^(2a) − 1` as
/// `2^n·p + (2^n − 1)` in one fused multiply-add (from [`reduce`]); for `n = 0` that is `p`
/// itself, accurate relative to `m` down to the smallest inputs; for `n ≥ 1` the second term is
/// positive and `p ≥ e^(−ln2/2) − 1 ≈ −0.29`, so the sum is at least about 0.41 times `2^n`
/// and at most about one bit cancels (`n = 1` for `a` in about [0.17, 0.52)). The worst
/// measured error, 2.42 ulp, is at a small input (`a ≈ 0.0078`, `n = 0`).
/// Then `tanh a = m / (m + 2)`; the sign of `x` is copied onto the result (so
/// `tanh(−0) = −0`). One exponential-like evaluation and one division, with no second formula
/// for small inputs. NaN gives NaN.
#[inline(always)]
pub(super) fn tanh<A: MulAdd>(x: f32) -> f32 {
    let a = x.abs();
    // A comparison, not `min`, so that NaN passes through unchanged.
    let a = if a > TANH_MAX_INPUT {
        TANH_MAX_INPUT
    } else {
        a
    };
    let (n, p) = reduce::<A>(a + a);
    let scale = f32::from_bits((n.wrapping_add(127) << 23) as u32);
    let m = A::mul_add(scale, p, scale - 1.0);
    (m / (m + 2.0)).copysign(x)
}
