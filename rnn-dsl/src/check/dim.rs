//! Symbolic sizes: polynomials over a cell's size names with rational
//! coefficients, so that `[4*H]` split in four chunks is `[H]` and `[H]`
//! against `[I]` is a mismatch before any size is known.

use std::collections::BTreeMap;
use std::fmt;

/// A size name of one cell, by index into the cell's size list.
pub type SymId = u32;

/// An exact fraction, always normalised (positive denominator, lowest terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ratio {
    num: i128,
    den: i128,
}

impl Ratio {
    /// The whole number `value`.
    pub fn int(value: i128) -> Ratio {
        Ratio { num: value, den: 1 }
    }

    /// `num / den` in lowest terms; `None` for a zero denominator or a
    /// value that does not fit.
    fn new(num: i128, den: i128) -> Option<Ratio> {
        if den == 0 {
            return None;
        }
        let gcd = i128::try_from(gcd(num.unsigned_abs(), den.unsigned_abs()).max(1)).ok()?;
        let sign = if den < 0 { -1 } else { 1 };
        Some(Ratio {
            num: num.checked_div(gcd)?.checked_mul(sign)?,
            den: den.checked_div(gcd)?.checked_mul(sign)?,
        })
    }

    /// The value if it is a whole number.
    pub fn as_int(self) -> Option<i128> {
        (self.den == 1).then_some(self.num)
    }

    fn is_zero(self) -> bool {
        self.num == 0
    }

    fn add(self, other: Ratio) -> Option<Ratio> {
        Ratio::new(
            self.num
                .checked_mul(other.den)?
                .checked_add(other.num.checked_mul(self.den)?)?,
            self.den.checked_mul(other.den)?,
        )
    }

    fn mul(self, other: Ratio) -> Option<Ratio> {
        Ratio::new(
            self.num.checked_mul(other.num)?,
            self.den.checked_mul(other.den)?,
        )
    }

    fn recip(self) -> Option<Ratio> {
        Ratio::new(self.den, self.num)
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

impl fmt::Display for Ratio {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.den == 1 {
            write!(f, "{}", self.num)
        } else {
            write!(f, "{}/{}", self.num, self.den)
        }
    }
}

/// A polynomial in size names: monomial (sorted names, empty for the
/// constant term) to non-zero coefficient.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct SymDim {
    terms: BTreeMap<Vec<SymId>, Ratio>,
}

/// Why size arithmetic failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DimError {
    /// Dividing by something that is not a plain number.
    DivideBySize,
    /// Dividing by zero.
    DivideByZero,
    /// Numbers too large to represent.
    Overflow,
    /// More than [`MAX_TERMS`] terms: `(H + I + G)*(H + I + G)*...`
    /// would take time and memory that grow without bound.
    TooComplex,
}

/// The most terms a size polynomial may have. Real sizes have one or two
/// (`4*H`, `2*H + 1`); the bound keeps every operation on sizes cheap.
pub const MAX_TERMS: usize = 64;

impl SymDim {
    /// A whole number.
    pub fn int(value: i128) -> SymDim {
        let mut terms = BTreeMap::new();
        if value != 0 {
            terms.insert(Vec::new(), Ratio::int(value));
        }
        SymDim { terms }
    }

    /// A size name.
    pub fn sym(id: SymId) -> SymDim {
        let mut terms = BTreeMap::new();
        terms.insert(vec![id], Ratio::int(1));
        SymDim { terms }
    }

    /// The value if it is a plain number.
    pub fn as_const(&self) -> Option<Ratio> {
        match self.terms.len() {
            0 => Some(Ratio::int(0)),
            1 => self.terms.get(&Vec::new()).copied(),
            _ => None,
        }
    }

    /// `self + other`.
    pub fn add(&self, other: &SymDim) -> Result<SymDim, DimError> {
        let mut terms = self.terms.clone();
        for (mono, coef) in &other.terms {
            let entry = terms.entry(mono.clone()).or_insert(Ratio::int(0));
            *entry = entry.add(*coef).ok_or(DimError::Overflow)?;
            if entry.is_zero() {
                terms.remove(mono);
            }
        }
        SymDim { terms }.bounded()
    }

    /// `self - other`.
    pub fn sub(&self, other: &SymDim) -> Result<SymDim, DimError> {
        self.add(&other.scale(Ratio::int(-1))?)
    }

    /// `self * other`.
    pub fn mul(&self, other: &SymDim) -> Result<SymDim, DimError> {
        if self.terms.len() * other.terms.len() > MAX_TERMS * MAX_TERMS {
            return Err(DimError::TooComplex);
        }
        let mut terms: BTreeMap<Vec<SymId>, Ratio> = BTreeMap::new();
        for (mono_a, coef_a) in &self.terms {
            for (mono_b, coef_b) in &other.terms {
                if mono_a.len() + mono_b.len() > MAX_TERMS {
                    return Err(DimError::TooComplex);
                }
                let mut mono = mono_a.clone();
                mono.extend(mono_b);
                mono.sort_unstable();
                let coef = coef_a.mul(*coef_b).ok_or(DimError::Overflow)?;
                let entry = terms.entry(mono).or_insert(Ratio::int(0));
                *entry = entry.add(coef).ok_or(DimError::Overflow)?;
            }
        }
        terms.retain(|_, coef| !coef.is_zero());
        SymDim { terms }.bounded()
    }

    /// Refuses polynomials with more than [`MAX_TERMS`] terms.
    fn bounded(self) -> Result<SymDim, DimError> {
        if self.terms.len() > MAX_TERMS {
            Err(DimError::TooComplex)
        } else {
            Ok(self)
        }
    }

    /// `self / other`, where `other` must be a plain non-zero number.
    pub fn div(&self, other: &SymDim) -> Result<SymDim, DimError> {
        let divisor = other.as_const().ok_or(DimError::DivideBySize)?;
        if divisor.is_zero() {
            return Err(DimError::DivideByZero);
        }
        self.scale(divisor.recip().ok_or(DimError::Overflow)?)
    }

    fn scale(&self, factor: Ratio) -> Result<SymDim, DimError> {
        let mut terms = BTreeMap::new();
        for (mono, coef) in &self.terms {
            let scaled = coef.mul(factor).ok_or(DimError::Overflow)?;
            if !scaled.is_zero() {
                terms.insert(mono.clone(), scaled);
            }
        }
        Ok(SymDim { terms })
    }

    /// The size names it mentions.
    pub fn symbols(&self) -> impl Iterator<Item = SymId> + '_ {
        self.terms.keys().flatten().copied()
    }

    /// Evaluates with every size known; `None` if a size is unbound or the
    /// arithmetic overflows.
    pub fn eval(&self, values: &[Option<i128>]) -> Option<Ratio> {
        let mut total = Ratio::int(0);
        for (mono, coef) in &self.terms {
            let mut term = *coef;
            for sym in mono {
                term = term.mul(Ratio::int((*values.get(*sym as usize)?)?))?;
            }
            total = total.add(term)?;
        }
        Some(total)
    }

    /// Solves `self = target` for the one unbound size it mentions, when it
    /// mentions it linearly. Returns that size's id and value.
    pub fn solve(&self, values: &[Option<i128>], target: i128) -> Option<(SymId, Ratio)> {
        let unknowns: Vec<SymId> = {
            let mut list: Vec<SymId> = self
                .symbols()
                .filter(|sym| values.get(*sym as usize).copied().flatten().is_none())
                .collect();
            list.sort_unstable();
            list.dedup();
            list
        };
        let [unknown] = unknowns[..] else {
            return None;
        };
        let mut known = Ratio::int(0);
        let mut coefficient = Ratio::int(0);
        for (mono, coef) in &self.terms {
            let count = mono.iter().filter(|sym| **sym == unknown).count();
            let mut term = *coef;
            for sym in mono.iter().filter(|sym| **sym != unknown) {
                term = term.mul(Ratio::int((*values.get(*sym as usize)?)?))?;
            }
            match count {
                0 => known = known.add(term)?,
                1 => coefficient = coefficient.add(term)?,
                _ => return None,
            }
        }
        if coefficient.is_zero() {
            return None;
        }
        let rest = Ratio::int(target).add(known.mul(Ratio::int(-1))?)?;
        Some((unknown, rest.mul(coefficient.recip()?)?))
    }

    /// Writes the polynomial with the given size names.
    pub fn display<'a>(&'a self, names: &'a [String]) -> impl fmt::Display + 'a {
        DimDisplay { dim: self, names }
    }
}

/// The absolute value of a [`Ratio`], which always fits in `u128`.
#[derive(PartialEq, Eq)]
struct Magnitude(u128, u128);

impl fmt::Display for Magnitude {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.1 == 1 {
            write!(f, "{}", self.0)
        } else {
            write!(f, "{}/{}", self.0, self.1)
        }
    }
}

struct DimDisplay<'a> {
    dim: &'a SymDim,
    names: &'a [String],
}

impl fmt::Display for DimDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.dim.terms.is_empty() {
            return write!(f, "0");
        }
        // Highest-degree terms first, the constant last: `4*H + 1`.
        let mut terms: Vec<_> = self.dim.terms.iter().collect();
        terms.sort_by(|(a, _), (b, _)| b.len().cmp(&a.len()).then(a.cmp(b)));
        for (idx, (mono, coef)) in terms.into_iter().enumerate() {
            let negative = coef.num < 0;
            let magnitude = Magnitude(coef.num.unsigned_abs(), coef.den.unsigned_abs());
            if idx == 0 {
                if negative {
                    write!(f, "-")?;
                }
            } else {
                write!(f, " {} ", if negative { "-" } else { "+" })?;
            }
            let names: Vec<&str> = mono
                .iter()
                .map(|sym| self.names.get(*sym as usize).map_or("?", String::as_str))
                .collect();
            if mono.is_empty() {
                write!(f, "{magnitude}")?;
            } else {
                if magnitude != Magnitude(1, 1) {
                    write!(f, "{magnitude}*")?;
                }
                write!(f, "{}", names.join("*"))?;
            }
        }
        Ok(())
    }
}

impl fmt::Debug for SymDim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<String> = (0..16).map(|idx| format!("s{idx}")).collect();
        let text = self.display(&names).to_string();
        write!(f, "{text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunking_four_h_gives_h() {
        let h = SymDim::sym(0);
        let four_h = SymDim::int(4).mul(&h).unwrap();
        assert_eq!(four_h.div(&SymDim::int(4)).unwrap(), h);
        assert_ne!(h, SymDim::sym(1));
    }

    #[test]
    fn solve_linear_sizes() {
        // 4*H + 2 = 42 → H = 10
        let dim = SymDim::int(4)
            .mul(&SymDim::sym(0))
            .unwrap()
            .add(&SymDim::int(2))
            .unwrap();
        assert_eq!(dim.solve(&[None], 42), Some((0, Ratio::int(10))));
        // H*I = 12 with I = 3 → H = 4
        let dim = SymDim::sym(0).mul(&SymDim::sym(1)).unwrap();
        assert_eq!(dim.solve(&[None, Some(3)], 12), Some((0, Ratio::int(4))));
        assert_eq!(dim.solve(&[None, None], 12), None);
    }

    #[test]
    fn display_reads_naturally() {
        let names = vec!["H".to_owned(), "I".to_owned()];
        let dim = SymDim::int(4)
            .mul(&SymDim::sym(0))
            .unwrap()
            .add(&SymDim::int(1))
            .unwrap();
        assert_eq!(dim.display(&names).to_string(), "4*H + 1");
        let dim = SymDim::sym(0).sub(&SymDim::sym(1)).unwrap();
        assert_eq!(dim.display(&names).to_string(), "H - I");
    }

    #[test]
    fn huge_products_are_refused_quickly() {
        let sum = SymDim::sym(0)
            .add(&SymDim::sym(1))
            .unwrap()
            .add(&SymDim::sym(2))
            .unwrap();
        let mut product = sum.clone();
        let mut outcome = Ok(());
        for _ in 0..100 {
            match product.mul(&sum) {
                Ok(next) => product = next,
                Err(error) => {
                    outcome = Err(error);
                    break;
                }
            }
        }
        assert_eq!(outcome, Err(DimError::TooComplex));
    }

    #[test]
    fn divide_by_size_is_refused() {
        assert_eq!(
            SymDim::sym(0).div(&SymDim::sym(1)),
            Err(DimError::DivideBySize)
        );
        assert_eq!(
            SymDim::sym(0).div(&SymDim::int(0)),
            Err(DimError::DivideByZero)
        );
    }
}
