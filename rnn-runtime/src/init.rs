//! Deterministic random initialisation.
//!
//! PyTorch initialises every RNN, LSTM and GRU parameter from
//! `U(-1/√H, 1/√H)`, H the hidden size. [`uniform`] does the same from a
//! seed, with a small self-contained generator (SplitMix64), so that the
//! same seed gives the same weights on every platform and in every
//! version of unroll.

use ndarray::ArrayD;

/// SplitMix64: a tiny, well-tested 64-bit generator (Steele, Lea and
/// Flood, 2014). Not for cryptography.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    /// A generator started from `seed`.
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64 { state: seed }
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A float uniform in `[0, 1)`, from the top 24 bits.
    pub fn next_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
    }

    /// A float uniform in `[low, high)`.
    pub fn uniform(&mut self, low: f32, high: f32) -> f32 {
        low + (high - low) * self.next_f32()
    }
}

/// An array of `shape` drawn from `U(-bound, bound)`.
pub fn uniform(rng: &mut SplitMix64, shape: &[usize], bound: f32) -> ArrayD<f32> {
    ArrayD::from_shape_simple_fn(shape.to_vec(), || rng.uniform(-bound, bound))
}

/// PyTorch's bound for hidden size `hidden`: `1/√hidden`.
pub fn pytorch_bound(hidden: usize) -> f32 {
    1.0 / (hidden.max(1) as f32).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_numbers_and_in_range() {
        let a = uniform(&mut SplitMix64::new(7), &[3, 4], 0.5);
        let b = uniform(&mut SplitMix64::new(7), &[3, 4], 0.5);
        assert_eq!(a, b);
        assert!(a.iter().all(|v| (-0.5..0.5).contains(v)));
        let c = uniform(&mut SplitMix64::new(8), &[3, 4], 0.5);
        assert_ne!(a, c);
    }

    #[test]
    fn uniform_mean_and_spread_are_plausible() {
        let mut rng = SplitMix64::new(1);
        let values: Vec<f32> = (0..100_000).map(|_| rng.next_f32()).collect();
        let mean = values.iter().sum::<f32>() / values.len() as f32;
        assert!((mean - 0.5).abs() < 0.01, "mean {mean}");
        let below_tenth = values.iter().filter(|v| **v < 0.1).count() as f32 / values.len() as f32;
        assert!((below_tenth - 0.1).abs() < 0.01, "{below_tenth}");
    }

    #[test]
    fn splitmix_matches_reference_sequence() {
        // First outputs of SplitMix64 seeded with 0, from the reference C
        // implementation (prng.di.unimi.it/splitmix64.c).
        let mut rng = SplitMix64::new(0);
        assert_eq!(rng.next_u64(), 0xE220_A839_7B1D_CDAF);
        assert_eq!(rng.next_u64(), 0x6E78_9E6A_A1B9_65F4);
    }
}
