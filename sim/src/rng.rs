//! The simulator's own random number generator: xoshiro256++ seeded by SplitMix64.
//!
//! Written here rather than taken from `rand` so that a seed gives the same numbers for as
//! long as this file is unchanged, whatever version of a dependency is resolved: the
//! promise "same seed, same numbers" is the simulator's, not a library's.

/// Mixes a 64-bit value into a well-spread one (SplitMix64's output function).
pub fn mix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Derives an independent seed for stream `index` of `seed` (a run, a branch).
pub fn derive_seed(seed: u64, index: u64) -> u64 {
    mix64(mix64(seed) ^ mix64(index.wrapping_mul(0xD1B5_4A32_D192_ED03)))
}

/// xoshiro256++: fast, 256 bits of state, good statistical quality for simulation.
#[derive(Clone, Debug)]
pub struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// A generator whose whole stream is fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            mix64(x)
        };
        let s = [next(), next(), next(), next()];
        Rng { s }
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let result = self.s[0].wrapping_add(self.s[3]).rotate_left(23).wrapping_add(self.s[0]);
        let t = self.s[1] << 17;
        self.s[2] ^= self.s[0];
        self.s[3] ^= self.s[1];
        self.s[1] ^= self.s[2];
        self.s[0] ^= self.s[3];
        self.s[2] ^= t;
        self.s[3] = self.s[3].rotate_left(45);
        result
    }

    /// Uniform in [0, 1), 53 bits.
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in (0, 1]: safe under `ln`.
    pub fn uniform_open0(&mut self) -> f64 {
        1.0 - self.uniform()
    }

    /// Exponential with mean 1.
    pub fn exp1(&mut self) -> f64 {
        -self.uniform_open0().ln()
    }

    /// Exponential with the given rate (events per second); infinite when the rate is 0.
    pub fn exp_rate(&mut self, rate: f64) -> f64 {
        if rate > 0.0 { self.exp1() / rate } else { f64::INFINITY }
    }

    /// Uniform integer in 0..n (n > 0); Lemire's multiply-shift, bias below n / 2^64.
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_stream_and_different_seeds_differ() {
        let a: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(42);
                move |_| r.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..8)
            .map({
                let mut r = Rng::new(42);
                move |_| r.next_u64()
            })
            .collect();
        let c = Rng::new(43).next_u64();
        assert_eq!(a, b);
        assert_ne!(a[0], c);
    }

    #[test]
    fn exponential_mean_is_close_to_one_over_rate() {
        let mut r = Rng::new(7);
        let n = 200_000;
        let mean: f64 = (0..n).map(|_| r.exp_rate(4.0)).sum::<f64>() / n as f64;
        // Standard error 0.25 / sqrt(2e5) = 5.6e-4; 5 sigma.
        assert!((mean - 0.25).abs() < 0.003, "{mean}");
    }

    #[test]
    fn below_stays_in_range() {
        let mut r = Rng::new(1);
        assert!((0..10_000).all(|_| r.below(7) < 7));
    }
}
