//! Folding samples into statistics: count, min, max, mean, last, go-metro's jitter (mean
//! absolute difference of consecutive samples) and quantiles from a DDSketch (1% relative
//! error, mergeable). Values are milliseconds as `f64`. [`Numbering`] finds where an observer
//! aggregates a sample's key.

use std::collections::HashMap;
use std::hash::Hash;

use foldhash::fast::RandomState;

mod sketch;
use sketch::Sketch;

/// Relative accuracy of the quantile sketch.
pub const RELATIVE_ERROR: f64 = 0.01;

/// Statistics over a stream of RTT values in milliseconds.
#[derive(Clone)]
pub struct Stats {
    count: u64,
    sum: f64,
    min: f64,
    max: f64,
    last: f64,
    jitter_sum: f64,
    sketch: Sketch,
}

impl Default for Stats {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for Stats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stats")
            .field("count", &self.count)
            .field("min", &self.min)
            .field("max", &self.max)
            .field("mean", &self.mean())
            .finish()
    }
}

impl Stats {
    pub fn new() -> Stats {
        Stats {
            count: 0,
            sum: 0.0,
            min: f64::INFINITY,
            max: f64::NEG_INFINITY,
            last: 0.0,
            jitter_sum: 0.0,
            sketch: Sketch::new(),
        }
    }

    /// Add one sample (milliseconds). Inlined into the observers' per-sample paths.
    #[inline(always)]
    pub fn add(&mut self, ms: f64) {
        if self.count > 0 {
            self.jitter_sum += (ms - self.last).abs();
        }
        self.count += 1;
        self.sum += ms;
        // Compares rather than `f64::min`/`max`, which also handle a NaN: the same result
        // (a NaN compares false and leaves both as they were), fewer instructions a sample.
        if ms < self.min {
            self.min = ms;
        }
        if ms > self.max {
            self.max = ms;
        }
        self.last = ms;
        self.sketch.add(ms);
    }

    pub fn count(&self) -> u64 {
        self.count
    }
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
    pub fn min(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.min }
    }
    pub fn max(&self) -> f64 {
        if self.count == 0 { 0.0 } else { self.max }
    }
    pub fn mean(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
    /// The most recent sample.
    pub fn last(&self) -> f64 {
        self.last
    }
    /// go-metro's jitter: the mean absolute difference between consecutive samples
    /// (0 with fewer than two samples).
    pub fn jitter(&self) -> f64 {
        if self.count < 2 {
            0.0
        } else {
            self.jitter_sum / (self.count - 1) as f64
        }
    }
    /// Quantile `q` in [0, 1] within 1% relative error, clamped to [min, max].
    pub fn quantile(&self, q: f64) -> f64 {
        if self.count == 0 {
            return 0.0;
        }
        match self.sketch.quantile(q, self.min, self.max) {
            Some(v) => v.clamp(self.min, self.max),
            None => 0.0,
        }
    }

    /// [`Self::quantile`] for each of `qs` (the same answers, with less work than one call
    /// for each).
    pub fn quantiles<const N: usize>(&self, qs: [f64; N]) -> [f64; N] {
        if self.count == 0 {
            return [0.0; N];
        }
        self.sketch
            .quantiles(qs, self.min, self.max)
            .map(|v| v.map_or(0.0, |v| v.clamp(self.min, self.max)))
    }

    /// Fold another set of statistics into this one. Count, sum, min, max and quantiles
    /// merge exactly; jitter sums add (the one boundary between the two streams is lost);
    /// `last` becomes `other`'s if it has any sample.
    pub fn merge(&mut self, other: &Stats) {
        if other.count == 0 {
            return;
        }
        self.count += other.count;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.jitter_sum += other.jitter_sum;
        self.last = other.last;
        self.sketch.merge(&other.sketch);
    }
}

/// Keys numbered 0, 1, 2, ... in the order they are first seen, for an observer that keeps
/// what it aggregates per key in a vector: the number is found through the tag the engine
/// keeps per connection ([`crate::sample::Observer::sample_tagged`]), checked against the
/// key, and the hash index is consulted only when the tag does not name the key (a
/// connection's first sample, or a tag from another numbering).
#[derive(Debug)]
pub struct Numbering<K> {
    /// Keyed by a per-process random seed: addresses chosen by whoever sends the packets
    /// cannot be aimed at one probe sequence (FxHash, before, also spread IPv6 addresses
    /// that differ only in their last bytes over few buckets).
    index: HashMap<K, u32, RandomState>,
    keys: Vec<K>,
}

impl<K> Default for Numbering<K> {
    fn default() -> Self {
        Numbering {
            index: HashMap::default(),
            keys: Vec::new(),
        }
    }
}

impl<K: Copy + Eq + Hash> Numbering<K> {
    /// Keys numbered so far.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, by number.
    pub fn keys(&self) -> &[K] {
        &self.keys
    }

    /// The number of `key` if it has one, found first where `tag` says; `tag` is set to it.
    #[inline]
    pub fn find(&mut self, key: K, tag: &mut u32) -> Option<u32> {
        if self.keys.get(*tag as usize) == Some(&key) {
            return Some(*tag);
        }
        self.look_up(key, tag)
    }

    /// [`Self::find`] through the index: a connection's first sample, or a stale tag.
    #[cold]
    #[inline(never)]
    fn look_up(&self, key: K, tag: &mut u32) -> Option<u32> {
        let n = *self.index.get(&key)?;
        *tag = n;
        Some(n)
    }

    /// The next number, for a key [`Self::find`] did not find; `tag` is set to it.
    pub fn add(&mut self, key: K, tag: &mut u32) -> u32 {
        let n = self.keys.len() as u32;
        self.index.insert(key, n);
        self.keys.push(key);
        *tag = n;
        n
    }

    /// The number of `key`, given one if it has none (then `true`); `tag` is set to it.
    #[inline]
    pub fn number(&mut self, key: K, tag: &mut u32) -> (u32, bool) {
        match self.find(key, tag) {
            Some(n) => (n, false),
            None => (self.add(key, tag), true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::NO_TAG;

    #[test]
    fn numbering_trusts_a_tag_only_when_it_names_the_key() {
        let mut n = Numbering::default();
        let (mut ta, mut tb) = (NO_TAG, NO_TAG);
        assert_eq!(n.number('a', &mut ta), (0, true));
        assert_eq!(n.number('b', &mut tb), (1, true));
        assert_eq!((ta, tb), (0, 1));
        assert_eq!(n.number('a', &mut ta), (0, false));
        // Another key's number, or one beyond the end: corrected through the index.
        let mut wrong = tb;
        assert_eq!(n.find('a', &mut wrong), Some(0));
        assert_eq!(wrong, 0);
        let mut beyond = 7;
        assert_eq!(n.find('b', &mut beyond), Some(1));
        assert_eq!(beyond, 1);
        // A key never numbered: not found, tag untouched.
        let mut t = 1;
        assert_eq!(n.find('c', &mut t), None);
        assert_eq!(t, 1);
        assert_eq!(n.keys(), &['a', 'b']);
        assert_eq!(n.len(), 2);
    }

    #[test]
    fn basic_stats() {
        let mut s = Stats::new();
        for v in [10.0, 12.0, 11.0, 15.0] {
            s.add(v);
        }
        assert_eq!(s.count(), 4);
        assert_eq!(s.min(), 10.0);
        assert_eq!(s.max(), 15.0);
        assert!((s.mean() - 12.0).abs() < 1e-12);
        // |12-10| + |11-12| + |15-11| = 7 over 3 differences
        assert!((s.jitter() - 7.0 / 3.0).abs() < 1e-12);
        assert_eq!(s.last(), 15.0);
    }

    #[test]
    fn quantiles_within_one_percent() {
        let mut s = Stats::new();
        for i in 1..=10_000 {
            s.add(i as f64 / 100.0);
        }
        for (q, exact) in [(0.5, 50.0), (0.9, 90.0), (0.99, 99.0)] {
            let got = s.quantile(q);
            assert!(
                (got - exact).abs() / exact <= 0.0101,
                "q{q}: {got} vs {exact}"
            );
        }
    }

    #[test]
    fn merge_matches_single_stream_counts() {
        let mut a = Stats::new();
        let mut b = Stats::new();
        let mut all = Stats::new();
        for i in 0..100 {
            let v = 1.0 + i as f64;
            if i % 2 == 0 {
                a.add(v)
            } else {
                b.add(v)
            }
            all.add(v);
        }
        a.merge(&b);
        assert_eq!(a.count(), all.count());
        assert_eq!(a.min(), all.min());
        assert_eq!(a.max(), all.max());
        assert!((a.mean() - all.mean()).abs() < 1e-9);
        assert!((a.quantile(0.5) - all.quantile(0.5)).abs() / all.quantile(0.5) < 0.02);
    }
}
