//! The generator's random numbers: SplitMix64 and integer-only distributions, so that the
//! same seed gives the same bytes on every platform (no floating point after setup).

/// SplitMix64 (Steele, Lea, Flood 2014): one 64-bit state word, passes BigCrush, and any
/// seed (including 0) is fine.
#[derive(Clone, Debug, Default)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    /// A generator for sub-stream `stream` of `seed`, independent of how many numbers other
    /// streams drew (each connection gets its own, so its behaviour depends only on the seed
    /// and its serial number).
    pub fn stream(seed: u64, stream: u64) -> Rng {
        Rng(mix(seed ^ mix(stream.wrapping_add(0x5851_f42d_4c95_7f2d))))
    }

    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        mix(self.0)
    }

    #[inline]
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// Uniform in `0..n` (Lemire's multiply-shift; the bias is below 2^-32 for our `n`).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// Uniform in `lo..=hi`.
    #[inline]
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        debug_assert!(lo <= hi);
        lo + self.below(hi - lo + 1)
    }

    #[inline]
    pub fn chance(&mut self, p: Prob) -> bool {
        u64::from(self.next_u32()) < p.0
    }

    /// A value from a piecewise-uniform distribution: pick a class by weight, then a value
    /// uniform within it. Classes spanning decades approximate the long tails of real RTTs
    /// and sizes without floating point.
    pub fn pick(&mut self, classes: &[Class]) -> u64 {
        let total: u64 = classes.iter().map(|c| u64::from(c.weight)).sum();
        let mut r = self.below(total);
        for c in classes {
            let w = u64::from(c.weight);
            if r < w {
                return self.range(c.lo, c.hi);
            }
            r -= w;
        }
        let last = classes[classes.len() - 1];
        self.range(last.lo, last.hi)
    }
}

/// SplitMix64's output function (a good 64-bit finaliser).
#[inline]
pub fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// A probability as a fraction of 2^32, converted once from `f64` at setup.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Prob(u64);

impl Prob {
    pub const NEVER: Prob = Prob(0);
    pub const ALWAYS: Prob = Prob(1 << 32);

    /// `p` clamped to [0, 1]; NaN is 0. Multiplying by a power of two is exact, so the
    /// conversion is the same everywhere.
    pub fn new(p: f64) -> Prob {
        if p.is_nan() || p <= 0.0 {
            Prob::NEVER
        } else if p >= 1.0 {
            Prob::ALWAYS
        } else {
            Prob((p * 4_294_967_296.0) as u64)
        }
    }
}

/// One class of [`Rng::pick`]: `weight` parts in the total, values uniform in `lo..=hi`.
#[derive(Clone, Copy, Debug)]
pub struct Class {
    pub weight: u32,
    pub lo: u64,
    pub hi: u64,
}

pub const fn class(weight: u32, lo: u64, hi: u64) -> Class {
    Class { weight, lo, hi }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 0 (from the reference implementation).
        let mut r = Rng::new(0);
        assert_eq!(r.next_u64(), 0xe220_a839_7b1d_cdaf);
        assert_eq!(r.next_u64(), 0x6e78_9e6a_a1b9_65f4);
    }

    #[test]
    fn ranges_and_probabilities() {
        let mut r = Rng::new(7);
        let mut hits = 0;
        for _ in 0..100_000 {
            let v = r.range(10, 20);
            assert!((10..=20).contains(&v));
            if r.chance(Prob::new(0.25)) {
                hits += 1;
            }
        }
        assert!((23_000..27_000).contains(&hits), "{hits}");
        assert!(!r.chance(Prob::NEVER));
        assert!(r.chance(Prob::ALWAYS));
        let classes = [class(1, 0, 0), class(3, 100, 100)];
        let n = (0..10_000).filter(|_| r.pick(&classes) == 100).count();
        assert!((7_000..8_000).contains(&n), "{n}");
    }
}
