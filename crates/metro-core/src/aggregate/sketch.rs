//! The quantile sketch: DDSketch (Masson, Rim and Lee, VLDB 2019) with a logarithmic
//! mapping at 1% relative accuracy and a collapsing-lowest dense store of at most 2048 bins,
//! the same buckets and answers as the `sketches-ddsketch` crate with `Config::new(0.01,
//! 2048, 1e-6)` (which metro used before, and which the tests below compare against), at a
//! fraction of the cost per sample. The bucket index of a value from 2^-20 to 2^44 (1 ns to
//! centuries in milliseconds) is read from a table of cells ([`cell_key`]), one for each
//! exponent and top 6 mantissa bits: a cell spans less than one bucket, so it holds at most
//! one boundary, stored as the first float above it, and one integer compare decides. Each
//! cell is filled on first use from the crate's own `floor(ln(v) / ln(gamma))` (the floats
//! at both ends of the cell and a search for the boundary between them), so every value
//! lands in exactly the bucket the crate gives it. Values outside the table take the
//! float's exponent bits, a table of 256 logarithms and a short series, and fall back to
//! `ln` only within 1e-6 of a bucket boundary, where the two computations' rounding could
//! disagree.
//!
//! Bucket `k` holds the values in (gamma^k, gamma^(k+1)] and answers gamma^k * 2 gamma /
//! (gamma + 1), within 1% of any of them. When the buckets in use would span more than 2048
//! indices, the lowest ones fold into the lowest kept (`max - 2047`): the crate's rule,
//! which gives the same store whatever the order of adds and merges.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// Relative accuracy (alpha).
const ALPHA: f64 = super::RELATIVE_ERROR;
/// Most bins a store keeps.
const MAX_BINS: i32 = 2048;
/// Values within this of zero (either sign) are counted as zero.
const MIN_VALUE: f64 = 1e-6;

/// gamma = (1 + alpha) / (1 - alpha), and its logarithm, computed as the crate computes them.
fn gamma() -> f64 {
    (1.0 + ALPHA) / (1.0 - ALPHA)
}

/// The mapping's constants and the logarithm table, computed once.
struct Mapping {
    gamma_ln: f64,
    /// 1 / ln(gamma).
    inv_gamma_ln: f64,
    /// gamma^k * this is bucket k's value.
    value_factor: f64,
    /// For the mantissa's top 8 bits `i` (m in [1 + i/256, 1 + (i+1)/256)): `recip[i]`, a
    /// float near 1 / (1 + (i + 0.5) / 256), and `ln_recip[i]` = -ln(recip[i]), so that
    /// ln(m) = ln(m * recip[i]) + ln_recip[i] with m * recip[i] within 2^-9 of 1.
    recip: [f64; 256],
    ln_recip: [f64; 256],
}

fn mapping() -> &'static Mapping {
    static MAPPING: OnceLock<Mapping> = OnceLock::new();
    MAPPING.get_or_init(|| {
        let gamma = gamma();
        let gamma_ln = gamma.ln();
        let mut recip = [0.0; 256];
        let mut ln_recip = [0.0; 256];
        for i in 0..256 {
            recip[i] = 1.0 / (1.0 + (i as f64 + 0.5) / 256.0);
            ln_recip[i] = -recip[i].ln();
        }
        Mapping {
            gamma_ln,
            inv_gamma_ln: 1.0 / gamma_ln,
            value_factor: 2.0 * gamma / (1.0 + gamma),
            recip,
            ln_recip,
        }
    })
}

/// Bucket fractions closer than this to an integer are decided by the exact computation.
/// The fast path's error is below 1e-11 in these units (ln error under 1e-13 from the
/// series, the table and the sum, divided by ln(gamma) = 0.02), and so is the error of the
/// crate's `ln(v) / ln(gamma)` (one rounding of `ln`, one of the division, each below
/// 1e-11 at indices up to 40,000): outside this margin both floors are the same integer.
const MARGIN: f64 = 1e-6;

/// Mantissa bits below a cell's: the part of a float a cell's boundary is compared on.
const CELL_LOW_BITS: u32 = 46;
/// Exponents (unbiased) the cells cover: 2^-20 < 1e-6 (the smallest value the sketch
/// buckets) up to 2^44.
const CELL_MIN_EXP: i64 = -20;
const CELL_EXPONENTS: usize = 64;
/// Cells: 64 per exponent (the top 6 mantissa bits), 512 bytes each.
const CELLS: usize = CELL_EXPONENTS << 6;
/// `bits >> CELL_LOW_BITS` of the first cell's first float (sign clear).
const FIRST_CELL: u64 = ((1023 + CELL_MIN_EXP) as u64) << 6;
/// The low field of a cell: the low bits of the first float in the cell whose bucket is the
/// next one, or `NO_BOUNDARY`; above it, the cell's lowest bucket plus `KEY_BIAS`.
const LOW_MASK: u64 = (1 << CELL_LOW_BITS) - 1;
const NO_BOUNDARY: u64 = 1 << CELL_LOW_BITS;
const BOUNDARY_BITS: u32 = CELL_LOW_BITS + 1;
const KEY_BIAS: i64 = 1 << 15;

/// The cells, 0 until first used (a filled cell is never 0: its key field is positive).
/// Atomics so that threads fill them without a lock; each writes the same value.
static CELL_TABLE: [AtomicU64; CELLS] = [const { AtomicU64::new(0) }; CELLS];

/// The bucket index of `v` > 0: `floor(ln(v) / ln(gamma))` as the crate computes it
/// (`as i32`, saturating).
#[inline(always)]
pub fn key(v: f64) -> i32 {
    let bits = v.to_bits();
    // Negative values and NaNs have the sign bit set: far beyond the table.
    let cell = (bits >> CELL_LOW_BITS).wrapping_sub(FIRST_CELL) as usize;
    if cell < CELLS {
        let c = CELL_TABLE[cell].load(Ordering::Relaxed);
        if c != 0 {
            let lowest = ((c >> BOUNDARY_BITS) as i64 - KEY_BIAS) as i32;
            return lowest + i32::from(bits & LOW_MASK >= c & ((1 << BOUNDARY_BITS) - 1));
        }
        return fill_cell(v, cell);
    }
    series_key(v)
}

/// The bucket index of `v` from the cell table: its cell filled first if it was not.
/// `None` outside the table. (The same answers as [`key`]; for tests.)
#[cfg(test)]
fn cell_key(v: f64) -> Option<i32> {
    let cell = (v.to_bits() >> CELL_LOW_BITS).wrapping_sub(FIRST_CELL) as usize;
    (cell < CELLS).then(|| key(v))
}

/// Fills cell `cell` (which holds `v`) from the crate's computation and returns `v`'s bucket.
#[cold]
#[inline(never)]
fn fill_cell(v: f64, cell: usize) -> i32 {
    let m = mapping();
    let first = (FIRST_CELL + cell as u64) << CELL_LOW_BITS;
    let last = first | LOW_MASK;
    let at = |bits: u64| exact_key(f64::from_bits(bits), m);
    let (lo, hi) = (at(first), at(last));
    let boundary = if hi == lo {
        Some(NO_BOUNDARY)
    } else if hi == lo + 1 {
        // The first float of the cell in bucket `hi` (the crate's buckets rise with the
        // value): a search between a bracket around gamma^hi, or the whole cell.
        let guess = (f64::from(hi) * m.gamma_ln)
            .exp()
            .to_bits()
            .clamp(first, last);
        let (mut below, mut above) = (guess.saturating_sub(64).max(first), (guess + 64).min(last));
        if at(below) >= hi || at(above) < hi {
            (below, above) = (first, last);
        }
        if at(below) >= hi {
            // The cell's first float is already in `hi`: impossible when `lo` < `hi`.
            None
        } else {
            // at(below) < hi <= at(above)
            while above - below > 1 {
                let mid = below + (above - below) / 2;
                if at(mid) >= hi {
                    above = mid;
                } else {
                    below = mid;
                }
            }
            Some(above & LOW_MASK)
        }
    } else {
        // A cell spans less than one bucket (ln(1 + 1/64) < ln(gamma)): never.
        None
    };
    if let Some(boundary) = boundary {
        let entry = ((i64::from(lo) + KEY_BIAS) as u64) << BOUNDARY_BITS | boundary;
        CELL_TABLE[cell].store(entry, Ordering::Relaxed);
    }
    exact_key(v, m)
}

/// [`key`] without the cell table: the exponent bits, a table of 256 logarithms and a short
/// series, `ln` itself near a boundary.
fn series_key(v: f64) -> i32 {
    let m = mapping();
    let bits = v.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    // Normal, finite and positive (the sign bit is clear); everything else takes ln.
    if bits >> 63 == 0 && exp != 0 && exp != 0x7ff {
        let top = ((bits >> 44) & 0xff) as usize;
        let mant = f64::from_bits((bits & ((1 << 52) - 1)) | (1023 << 52));
        let r = mant * m.recip[top] - 1.0;
        // ln(1 + r) for |r| < 2^-9: the series to r^5 (error under r^6 / 6 < 3e-17).
        let ln1p = r * (1.0 - r * (0.5 - r * (1.0 / 3.0 - r * (0.25 - r * 0.2))));
        let ln = f64::from(exp - 1023) * std::f64::consts::LN_2 + m.ln_recip[top] + ln1p;
        let t = ln * m.inv_gamma_ln;
        // |t| < 36,000 for a normal float: its floor by truncation, without a call to `floor`
        // (no SSE4.1 `roundsd` in the baseline x86-64 target).
        let whole = t as i32;
        let floor = whole - i32::from(f64::from(whole) > t);
        let frac = t - f64::from(floor);
        if frac > MARGIN && frac < 1.0 - MARGIN {
            return floor;
        }
    }
    exact_key(v, m)
}

/// The crate's own computation, for the values the fast path leaves.
#[cold]
#[inline(never)]
fn exact_key(v: f64, m: &Mapping) -> i32 {
    (v.ln() / m.gamma_ln).floor() as i32
}

/// Bucket `k`'s value, within 1% of every value in it.
fn value(k: i32) -> f64 {
    let m = mapping();
    (f64::from(k) * m.gamma_ln).exp() * m.value_factor
}

/// Values a store keeps as their raw keys before it makes its window of counts.
const RAW_MAX: usize = 128;

/// Counts by bucket index. A store starts by keeping each value's index (`raw`, at most
/// [`RAW_MAX`]): most responders and connections give few samples, over a range of indices
/// that would make a window of counts grow three or four times (each a new zeroed window and a
/// copy). Beyond that, a window of counts over the indices in use, sized from the raw ones.
/// Both answer as the same counts: the range in use spans at most [`MAX_BINS`] indices, lower
/// ones counting as the lowest kept (for `raw`, applied when read). The range in use is not
/// kept up to date on each add, only read when the window must change.
#[derive(Clone, Debug, Default)]
struct Store {
    /// `bins[i]` counts index `offset + i`; zero outside the range in use. Empty while the
    /// store keeps raw indices.
    bins: Vec<u64>,
    offset: i32,
    count: u64,
    /// The index of each value added, in no order, while `bins` is empty.
    raw: Vec<i32>,
}

impl Store {
    #[inline]
    fn add(&mut self, key: i32) {
        // Inside the window: it spans at most MAX_BINS indices, so the range in use, widened
        // to `key`, still does and nothing folds (bins exist only once a count is in them).
        if let Some(bin) = self
            .bins
            .get_mut((i64::from(key) - i64::from(self.offset)) as usize)
        {
            *bin += 1;
            self.count += 1;
        } else if self.raw.len() < self.raw.capacity().min(RAW_MAX) && self.is_raw() {
            // Room already reserved for a raw index.
            self.raw.push(key);
            self.count += 1;
        } else {
            self.add_outside(key);
        }
    }

    /// Whether the store keeps raw indices (no window yet).
    #[inline]
    fn is_raw(&self) -> bool {
        self.bins.is_empty()
    }

    /// The lowest index a raw index counts as: the highest minus 2047.
    fn raw_floor(&self) -> i32 {
        let hi = self.raw.iter().copied().max().unwrap_or(0);
        hi.saturating_sub(MAX_BINS - 1)
    }

    /// The lowest and highest index with a count (`count` > 0).
    fn range(&self) -> (i32, i32) {
        if self.is_raw() {
            let lo = self.raw.iter().copied().min().unwrap_or(0);
            let hi = self.raw.iter().copied().max().unwrap_or(0);
            return (lo.max(hi.saturating_sub(MAX_BINS - 1)), hi);
        }
        let first = self.bins.iter().position(|&c| c != 0).unwrap_or(0);
        let last = self.bins.iter().rposition(|&c| c != 0).unwrap_or(0);
        (self.offset + first as i32, self.offset + last as i32)
    }

    /// An index outside the window (or no window yet): kept raw if there is room, else
    /// the window is made or widened first.
    #[cold]
    #[inline(never)]
    fn add_outside(&mut self, key: i32) {
        if self.is_raw() {
            if self.raw.len() < RAW_MAX {
                // Room for 16, then twice as many each time (at most RAW_MAX): few
                // reallocations, little memory for a connection's few samples.
                let more = self.raw.len().max(16).min(RAW_MAX - self.raw.len());
                self.raw.reserve_exact(more);
                self.raw.push(key);
                self.count += 1;
                return;
            }
            self.make_window();
            if let Some(bin) = self
                .bins
                .get_mut((i64::from(key) - i64::from(self.offset)) as usize)
            {
                *bin += 1;
                self.count += 1;
                return;
            }
        }
        let (min_key, max_key) = self.range();
        let lo = self.widen(min_key.min(key), max_key.max(key));
        self.bins[(key.max(lo) - self.offset) as usize] += 1;
        self.count += 1;
    }

    /// Replace the raw indices by a window of counts around them.
    fn make_window(&mut self) {
        let raw = std::mem::take(&mut self.raw);
        if raw.is_empty() {
            return;
        }
        let (lo, hi) = (
            raw.iter().copied().min().unwrap_or(0),
            raw.iter().copied().max().unwrap_or(0),
        );
        let lo = lo.max(hi.saturating_sub(MAX_BINS - 1));
        let count = std::mem::take(&mut self.count);
        self.relayout(lo, hi);
        self.count = count;
        for k in raw {
            self.bins[(k.max(lo) - self.offset) as usize] += 1;
        }
    }

    /// Make `lo..=hi` the range in use (it covers the one in use now), folding the counts of
    /// indices below `hi - 2047` (and `lo` itself, if lower) into `hi - 2047`; returns the
    /// range's new lowest index. The store has a window.
    fn widen(&mut self, lo: i32, hi: i32) -> i32 {
        let lo = lo.max(hi.saturating_sub(MAX_BINS - 1));
        let folds = self.count > 0 && lo > self.range().0;
        let end = i64::from(self.offset) + self.bins.len() as i64;
        if folds || lo < self.offset || i64::from(hi) >= end {
            self.relayout(lo, hi);
        }
        lo
    }

    /// A new window around `lo..=hi`, with room to grow both ways (at least 16 bins, a
    /// factor of 1.17 each way around a first value, half the range in use again around
    /// a first window, then twice the bins each time it grows, as a `Vec` does); counts
    /// below `lo` move to `lo`.
    fn relayout(&mut self, lo: i32, hi: i32) {
        let len = (i64::from(hi) - i64::from(lo) + 1) as usize;
        let want = (len + len / 2)
            .max(2 * self.bins.len())
            .max(16)
            .min(MAX_BINS as usize)
            .max(len);
        let start = (i64::from(lo) - ((want - len) / 2) as i64)
            .min(i64::from(i32::MAX) - want as i64 + 1) as i32;
        let mut bins = vec![0u64; want];
        if self.count > 0 {
            for (i, &c) in self.bins.iter().enumerate() {
                if c != 0 {
                    let k = (i64::from(self.offset) + i as i64).max(i64::from(lo));
                    bins[(k - i64::from(start)) as usize] += c;
                }
            }
        }
        self.bins = bins;
        self.offset = start;
    }

    /// The index holding the `rank`-th smallest value (0-based; `rank` < `count`).
    fn key_at_rank(&self, rank: u64) -> i32 {
        if self.is_raw() {
            let mut keys = [0i32; RAW_MAX];
            let keys = &mut keys[..self.raw.len()];
            keys.copy_from_slice(&self.raw);
            let i = (rank as usize).min(keys.len().saturating_sub(1));
            let (_, &mut k, _) = keys.select_nth_unstable(i);
            // Raising the lowest to the floor keeps the order: the rank-th raised index.
            return k.max(self.raw_floor());
        }
        let mut n = 0;
        for (i, &c) in self.bins.iter().enumerate() {
            n += c;
            if n > rank {
                return self.offset + i as i32;
            }
        }
        self.range().1
    }

    fn merge(&mut self, other: &Store) {
        if other.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = other.clone();
            return;
        }
        if self.is_raw() && other.is_raw() && self.raw.len() + other.raw.len() <= RAW_MAX {
            // Exactly the room needed: `extend_from_slice` alone may double the capacity
            // past RAW_MAX.
            self.raw.reserve_exact(other.raw.len());
            self.raw.extend_from_slice(&other.raw);
            self.count += other.count;
            return;
        }
        if self.is_raw() {
            self.make_window();
        }
        if other.is_raw() {
            for &k in &other.raw {
                self.add(k);
            }
            return;
        }
        let ((a_lo, a_hi), (b_lo, b_hi)) = (self.range(), other.range());
        let lo = self.widen(a_lo.min(b_lo), a_hi.max(b_hi));
        for (i, &c) in other.bins.iter().enumerate() {
            if c != 0 {
                let k = (other.offset + i as i32).max(lo);
                self.bins[(k - self.offset) as usize] += c;
            }
        }
        self.count += other.count;
    }
}

/// A mergeable quantile sketch of values of either sign (see the module's text).
#[derive(Clone, Debug, Default)]
pub struct Sketch {
    positive: Store,
    /// Values below `-MIN_VALUE`, by the index of their magnitude.
    negative: Store,
    zero: u64,
}

impl Sketch {
    pub fn new() -> Sketch {
        Sketch::default()
    }

    #[inline]
    pub fn add(&mut self, v: f64) {
        if v > MIN_VALUE {
            self.positive.add(key(v));
        } else {
            self.add_not_positive(v);
        }
    }

    /// A value at or below `MIN_VALUE` (never an RTT): out of line, so that the positive
    /// path's [`key`] is inlined once.
    #[cold]
    #[inline(never)]
    fn add_not_positive(&mut self, v: f64) {
        if v < -MIN_VALUE {
            self.negative.add(key(-v));
        } else {
            self.zero += 1;
        }
    }

    pub fn count(&self) -> u64 {
        self.positive.count + self.zero + self.negative.count
    }

    /// The value at quantile `q` in [0, 1] (`min` and `max` are the smallest and largest
    /// value added, which answer 0 and 1); None if the sketch is empty or `q` is outside.
    pub fn quantile(&self, q: f64, min: f64, max: f64) -> Option<f64> {
        self.quantile_by(q, min, max, |rank| self.positive.key_at_rank(rank))
    }

    /// [`Self::quantile`] for each of `qs`: a store of raw indices sorted once for all.
    pub fn quantiles<const N: usize>(&self, qs: [f64; N], min: f64, max: f64) -> [Option<f64>; N] {
        let store = &self.positive;
        if !store.is_raw() || store.raw.len() < 2 || N < 2 {
            return qs.map(|q| self.quantile(q, min, max));
        }
        let mut keys = [0i32; RAW_MAX];
        let keys = &mut keys[..store.raw.len()];
        keys.copy_from_slice(&store.raw);
        keys.sort_unstable();
        let floor = store.raw_floor();
        // The rank-th smallest raw index, raised to the floor: Store::key_at_rank's answer.
        let at = |rank: u64| keys[(rank as usize).min(keys.len() - 1)].max(floor);
        qs.map(|q| self.quantile_by(q, min, max, at))
    }

    /// [`Self::quantile`], with the positive store's index at a rank from `positive_at`.
    fn quantile_by(
        &self,
        q: f64,
        min: f64,
        max: f64,
        positive_at: impl Fn(u64) -> i32,
    ) -> Option<f64> {
        if !(0.0..=1.0).contains(&q) || self.count() == 0 {
            return None;
        }
        if q == 0.0 {
            return Some(min);
        }
        if q == 1.0 {
            return Some(max);
        }
        let rank = (q * (self.count() as f64 - 1.0)) as u64;
        let neg = self.negative.count;
        Some(if rank < neg {
            -value(self.negative.key_at_rank(neg - rank - 1))
        } else if rank < self.zero + neg {
            0.0
        } else {
            value(positive_at(rank - self.zero - neg))
        })
    }

    /// Fold `other` in: the same sketch as if its values had been added here.
    pub fn merge(&mut self, other: &Sketch) {
        self.positive.merge(&other.positive);
        self.negative.merge(&other.negative);
        self.zero += other.zero;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metro_testkit::generator::Rng;
    use sketches_ddsketch::{Config, DDSketch};

    /// The crate's sketch as metro configured it before: the reference.
    fn reference() -> DDSketch {
        DDSketch::new(Config::new(ALPHA, MAX_BINS as u32, MIN_VALUE))
    }

    fn reference_key(v: f64) -> i32 {
        Config::new(ALPHA, MAX_BINS as u32, MIN_VALUE).key(v)
    }

    /// A uniform float in [0, 1).
    fn unit(rng: &mut Rng) -> f64 {
        (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    #[test]
    fn gamma_is_the_crates() {
        assert_eq!(reference().quantile(0.5).unwrap(), None);
        let c = Config::new(ALPHA, MAX_BINS as u32, MIN_VALUE);
        assert_eq!(c.gamma, gamma());
        // Bucket values from the same formula: equal to the last bit.
        for k in [-690, -1, 0, 1, 7, 345, 1000, 2500] {
            assert_eq!(c.value(k), value(k), "bucket {k}");
        }
    }

    #[test]
    fn keys_match_ln_over_a_dense_sweep() {
        // Every 2^-20 of a factor over 1 ns to 11 days in milliseconds (1e-6 to 1e9 ms)...
        let (lo, hi) = (1e-6f64.ln(), 1e9f64.ln());
        let steps = 20_000_000u64;
        let mut fast_path = 0u64;
        for i in 0..=steps {
            let v = (lo + (hi - lo) * i as f64 / steps as f64).exp();
            assert_eq!(key(v), reference_key(v), "{v:e}");
            let t = v.ln() / mapping().gamma_ln;
            fast_path += u64::from((t - t.floor()) > MARGIN && (t - t.floor()) < 1.0 - MARGIN);
        }
        // ...almost all of them without `ln` (the margin is 2e-6 of each bucket).
        assert!(fast_path as f64 > 0.9999 * steps as f64, "{fast_path}");
    }

    #[test]
    fn keys_match_ln_at_every_bucket_boundary() {
        // The floats nearest each boundary gamma^k, where a rounding could tip the index.
        let m = mapping();
        for k in -700..40_000 {
            let b = (f64::from(k) * m.gamma_ln).exp();
            let mut lo = b;
            let mut hi = b;
            for _ in 0..64 {
                assert_eq!(key(lo), reference_key(lo), "{lo:e} (bucket {k})");
                assert_eq!(key(hi), reference_key(hi), "{hi:e} (bucket {k})");
                lo = lo.next_down();
                hi = hi.next_up();
            }
        }
    }

    #[test]
    fn every_cell_matches_the_crate_at_its_ends_and_its_boundary() {
        let m = mapping();
        let mut boundaries = 0;
        for (cell, entry) in CELL_TABLE.iter().enumerate() {
            let first = (FIRST_CELL + cell as u64) << CELL_LOW_BITS;
            let last = first | LOW_MASK;
            for bits in [first, first + 1, last - 1, last] {
                let v = f64::from_bits(bits);
                assert_eq!(cell_key(v), Some(reference_key(v)), "{v:e} (cell {cell})");
            }
            let entry = entry.load(Ordering::Relaxed);
            assert_ne!(entry, 0, "cell {cell} left to ln");
            let boundary = entry & ((1 << BOUNDARY_BITS) - 1);
            if boundary != NO_BOUNDARY {
                boundaries += 1;
                // The floats around the stored boundary: the bucket changes exactly there.
                let b = f64::from_bits(first | boundary);
                let k = reference_key(b);
                assert_eq!(reference_key(b.next_down()), k - 1, "{b:e} (cell {cell})");
                for v in [b.next_down().next_down(), b.next_down(), b, b.next_up()] {
                    assert_eq!(key(v), reference_key(v), "{v:e} (cell {cell})");
                }
                // And it is the crate's bucket boundary gamma^k, to within a few floats.
                let exact = (f64::from(k) * m.gamma_ln).exp();
                assert!((b / exact - 1.0).abs() < 1e-13, "{b:e} vs {exact:e}");
            }
        }
        // One boundary per bucket: ln(2) / ln(gamma) = 34.66 a factor of 2.
        let expected = CELL_EXPONENTS as f64 * 2f64.ln() / m.gamma_ln;
        assert!(
            (f64::from(boundaries) - expected).abs() < 1.0,
            "{boundaries}"
        );
        // Outside the table: none.
        assert_eq!(cell_key(1e-7), None);
        assert_eq!(cell_key(2f64.powi(45)), None);
        assert_eq!(cell_key(-1.0), None);
    }

    #[test]
    fn the_series_matches_ln_over_a_dense_sweep() {
        // The path for values outside the cell table, over the table's range too.
        let (lo, hi) = (1e-9f64.ln(), 1e15f64.ln());
        for i in 0..=2_000_000u64 {
            let v = (lo + (hi - lo) * i as f64 / 2_000_000.0).exp();
            assert_eq!(series_key(v), reference_key(v), "{v:e}");
        }
        for v in [1e-300, 1e-7, 3e13, 1e20, 1e300] {
            assert_eq!(series_key(v), reference_key(v), "{v:e}");
            assert_eq!(key(v), reference_key(v), "{v:e}");
        }
    }

    #[test]
    fn keys_match_ln_for_any_float() {
        let mut rng = Rng::new(24);
        for _ in 0..2_000_000 {
            // Any positive bit pattern: normal, subnormal, infinite, NaN.
            let v = f64::from_bits(rng.next_u64() >> 1);
            if v > 0.0 {
                assert_eq!(key(v), reference_key(v), "{v:e}");
            }
        }
        for v in [
            f64::MIN_POSITIVE,
            5e-324,
            f64::MAX,
            f64::INFINITY,
            1.0,
            2.0,
            0.5,
        ] {
            assert_eq!(key(v), reference_key(v), "{v:e}");
        }
    }

    #[test]
    fn every_value_is_within_one_percent_of_its_bucket() {
        let mut rng = Rng::new(7);
        for _ in 0..1_000_000 {
            let v = (unit(&mut rng) * 40.0 - 13.0).exp();
            let answer = value(key(v));
            assert!(
                (answer - v).abs() <= ALPHA * v * (1.0 + 1e-12),
                "{v:e} -> {answer:e}"
            );
        }
    }

    /// `n` values from one of several shapes: RTT-like, spanning more than the 2048 buckets
    /// (which folds the lowest), of both signs and zero, or few distinct values.
    fn stream(rng: &mut Rng, shape: u64, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| match shape {
                0 => (unit(rng) * 6.0 - 2.0).exp(),
                1 => (unit(rng) * 120.0 - 13.0).exp(),
                2 => {
                    let x = (unit(rng) * 20.0 - 10.0).exp();
                    match rng.next_u64() % 5 {
                        0 => -x,
                        1 => 0.0,
                        2 => 1e-7,
                        _ => x,
                    }
                }
                3 => f64::from((rng.next_u64() % 4) as u32) * 1.5 + 0.25,
                _ => {
                    // Rising over the stream: the range widens as it goes.
                    let i = unit(rng);
                    (i * 100.0 - 13.0).exp()
                }
            })
            .collect()
    }

    const QS: [f64; 12] = [
        0.0, 0.001, 0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99, 0.999, 1.0,
    ];

    fn assert_same(ours: &Sketch, theirs: &DDSketch, values: &[f64], what: &str) {
        let min = values.iter().copied().fold(f64::INFINITY, f64::min);
        let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        assert_eq!(ours.count(), theirs.count() as u64, "{what}");
        for q in QS {
            let want = theirs.quantile(q).unwrap();
            assert_eq!(ours.quantile(q, min, max), want, "{what}, q {q}");
        }
        assert_eq!(ours.quantile(1.5, min, max), None);
    }

    #[test]
    fn quantiles_match_the_crate_for_added_and_merged_streams() {
        added_and_merged(Rng::new(19), 200, 3000);
    }

    /// Stores that keep raw indices (up to RAW_MAX values), that make their window on the
    /// way, and merges between the two, over ranges wider than MAX_BINS (shape 1).
    #[test]
    fn quantiles_match_the_crate_for_few_values() {
        added_and_merged(Rng::new(23), 600, 3 * RAW_MAX as u64);
    }

    /// `rounds` streams of 1 to `max_n` values: the quantiles of the sketch they make, and
    /// of the sketches of their parts merged in a random order, are the crate's.
    fn added_and_merged(mut rng: Rng, rounds: u64, max_n: u64) {
        for round in 0..rounds {
            let shape = round % 5;
            let n = 1 + (rng.next_u64() % max_n) as usize;
            let values = stream(&mut rng, shape, n);
            let what = format!("round {round}, shape {shape}, {n} values");
            let (mut ours, mut theirs) = (Sketch::new(), reference());
            for &v in &values {
                ours.add(v);
                theirs.add(v);
            }
            assert_same(&ours, &theirs, &values, &what);

            // The same values in parts, merged in a random order, both ways.
            let parts = 1 + (rng.next_u64() % 6) as usize;
            let mut chunks: Vec<(Sketch, DDSketch)> =
                (0..parts).map(|_| (Sketch::new(), reference())).collect();
            for &v in &values {
                let c = &mut chunks[(rng.next_u64() % parts as u64) as usize];
                c.0.add(v);
                c.1.add(v);
            }
            let (mut ours, mut theirs) = (Sketch::new(), reference());
            while !chunks.is_empty() {
                let (o, t) = chunks.swap_remove((rng.next_u64() % chunks.len() as u64) as usize);
                ours.merge(&o);
                theirs.merge(&t).unwrap();
                // Values added after a merge, as a live interval does.
                let extra = stream(&mut rng, shape, 3);
                for &v in &extra {
                    ours.add(v);
                    theirs.add(v);
                }
            }
            assert_eq!(ours.count(), theirs.count() as u64, "{what}, merged");
            let qs = [0.5, 0.9, 0.99, 0.001];
            assert_eq!(
                ours.quantiles(qs, 0.0, 0.0),
                qs.map(|q| ours.quantile(q, 0.0, 0.0)),
                "{what}, merged, all at once"
            );
            for q in &QS[1..QS.len() - 1] {
                assert_eq!(
                    ours.quantile(*q, 0.0, 0.0),
                    theirs.quantile(*q).unwrap(),
                    "{what}, merged, q {q}"
                );
            }
        }
    }
}
