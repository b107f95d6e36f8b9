//! Fleet outputs: what an interval keeps per series beyond go-metro's statistics, so that a
//! central engine can merge hosts (Prometheus histogram buckets, DogStatsD distribution
//! values, an OpenTelemetry exponential histogram), and how remote addresses are grouped
//! into series (`group_by`) under a series budget (`max_series`).
//!
//! [`IntervalOpts`] is fixed per instance (part of what a reload compares); the capture
//! thread fills one [`Fine`] per series with it, without any lock. Everything here is
//! bounded: the histogram bucket vectors by their configuration, the exponential histogram
//! by the range of `f64` RTTs it can index, the distribution values by [`MAX_VALUES`] per
//! interval.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use super::config::{Cidr, Config, DEFAULT_BASELINE_WINDOW, GroupBy, Instance, mask};

/// Distribution values kept per instance and interval; past it, values are counted in
/// `metro.distribution.dropped` (the statistics and histograms still take them).
pub const MAX_VALUES: usize = 1 << 20;

/// The exponential histogram's scale: 2^4 = 16 buckets per doubling, each within 2.2% of
/// its values (OpenTelemetry's base = 2^(2^-scale)).
pub const EXP_SCALE: i32 = 4;

/// `dst` of the series that takes samples past `max_series`.
pub const OTHER: &str = "other";

/// The `ips` entries by prefix length, longest first, for `group_by: block`: finding the
/// most specific entry is one hash lookup per distinct prefix length.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Blocks {
    v4: Vec<(u8, HashSet<IpAddr>)>,
    v6: Vec<(u8, HashSet<IpAddr>)>,
}

impl Blocks {
    pub fn new(cidrs: &[Cidr]) -> Blocks {
        let mut b = Blocks::default();
        for c in cidrs {
            let list = if c.addr.is_ipv4() {
                &mut b.v4
            } else {
                &mut b.v6
            };
            match list.iter_mut().find(|(p, _)| *p == c.prefix) {
                Some((_, s)) => {
                    s.insert(mask(c.addr, c.prefix));
                }
                None => list.push((c.prefix, HashSet::from([mask(c.addr, c.prefix)]))),
            }
        }
        b.v4.sort_by_key(|e| std::cmp::Reverse(e.0));
        b.v6.sort_by_key(|e| std::cmp::Reverse(e.0));
        b
    }

    /// The most specific entry holding `ip`: (network address, prefix).
    pub fn find(&self, ip: IpAddr) -> Option<(IpAddr, u8)> {
        let list = if ip.is_ipv4() { &self.v4 } else { &self.v6 };
        list.iter().find_map(|(p, s)| {
            let net = mask(ip, *p);
            s.contains(&net).then_some((net, *p))
        })
    }
}

/// What an instance's intervals keep and how they group (fixed for the capture's life: a
/// reload that changes it restarts the capture).
#[derive(Clone, Debug, PartialEq)]
pub struct IntervalOpts {
    pub group_by: GroupBy,
    /// The `ips` entries, for `group_by: block`.
    pub blocks: Arc<Blocks>,
    /// (local, group) series per interval; past it, samples go to `dst:other`.
    pub max_series: usize,
    /// Prometheus histogram bucket upper bounds in milliseconds (`None`: no histogram).
    pub buckets_ms: Option<Arc<[f64]>>,
    /// Keep sample values for DogStatsD distributions, at this sample rate (`None`: off).
    pub distribution_rate: Option<f64>,
    /// Keep an exponential histogram (OTLP, and Prometheus native histograms).
    pub exponential: bool,
    /// Each pair's baseline is its least RTT over this window (`baseline_window`).
    pub baseline_window: std::time::Duration,
}

impl Default for IntervalOpts {
    /// go-metro's behaviour: one series per host, nothing beyond the statistics, no series
    /// budget below the interval's hard pair limit.
    fn default() -> Self {
        IntervalOpts {
            group_by: GroupBy::Host,
            blocks: Arc::default(),
            max_series: usize::MAX,
            buckets_ms: None,
            distribution_rate: None,
            exponential: false,
            baseline_window: std::time::Duration::from_secs_f64(DEFAULT_BASELINE_WINDOW),
        }
    }
}

impl IntervalOpts {
    /// What `inst` keeps under `cfg`: histogram buckets with `prometheus_listen`, values with
    /// `distributions`, an exponential histogram with `otlp_endpoint` or `prometheus_listen`
    /// (the native histogram a protobuf scrape gets).
    pub fn of(cfg: &Config, inst: &Instance) -> IntervalOpts {
        let f = &cfg.fleet;
        IntervalOpts {
            group_by: inst.group_by.clone(),
            blocks: Arc::new(if inst.group_by == GroupBy::Block {
                Blocks::new(&inst.ips)
            } else {
                Blocks::default()
            }),
            max_series: f.max_series,
            buckets_ms: cfg
                .prometheus_listen
                .map(|_| f.buckets.iter().map(|b| b * 1000.0).collect()),
            distribution_rate: f.distribution_rate,
            exponential: f.otlp_endpoint.is_some() || cfg.prometheus_listen.is_some(),
            baseline_window: cfg.baseline_window,
        }
    }

    /// Whether a series keeps a [`Fine`] at all.
    pub fn fine(&self) -> bool {
        self.buckets_ms.is_some() || self.distribution_rate.is_some() || self.exponential
    }

    /// The series key's remote part and its `dst` tag for a watched remote address (the tag
    /// built only when a series is created).
    #[inline]
    pub fn group(&self, remote: IpAddr) -> (IpAddr, Group) {
        match &self.group_by {
            GroupBy::Host => (remote, Group::Host),
            GroupBy::Subnet { v4, v6 } => {
                let p = if remote.is_ipv4() { *v4 } else { *v6 };
                (mask(remote, p), Group::Net(p))
            }
            GroupBy::Block => match self.blocks.find(remote) {
                Some((net, p)) => (net, Group::Net(p)),
                None => (remote, Group::Host),
            },
        }
    }
}

/// How a series' `dst` tag is written.
#[derive(Clone, Copy, Debug)]
pub enum Group {
    /// The watch list's tag for the address (host name or address).
    Host,
    /// The key is a network of this prefix length: `10.1.2.0/24`.
    Net(u8),
}

/// An exponential histogram of positive values (OpenTelemetry's form at [`EXP_SCALE`]):
/// bucket `i` holds values in (base^i, base^(i+1)], base = 2^(2^-scale). Dense between the
/// lowest and highest index seen; values at or below 1 ns go to the zero bucket. Bounded:
/// an `f64` in seconds above 1 ns spans at most ~1,100 doublings, and RTTs far fewer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ExpHist {
    pub offset: i32,
    pub counts: Vec<u64>,
    pub zero_count: u64,
    pub count: u64,
    pub sum: f64,
    pub min: f64,
    pub max: f64,
}

/// Empty buckets kept each side of a series' first value (one octave).
const EXP_SLACK: i32 = 1 << EXP_SCALE;

/// Values at or below this (seconds) count as zero.
pub const EXP_ZERO_THRESHOLD: f64 = 1e-9;

impl ExpHist {
    /// The bucket index of `v` (> 0) at [`EXP_SCALE`].
    pub fn index(v: f64) -> i32 {
        let scale_factor = (1u32 << EXP_SCALE) as f64;
        // ceil(log2(v) * 2^scale) - 1: exact powers of the base fall in the lower bucket,
        // as the specification's upper-inclusive buckets want.
        (v.log2() * scale_factor).ceil() as i32 - 1
    }

    /// Lower and upper bound of bucket `i`.
    pub fn bounds(i: i32) -> (f64, f64) {
        let base = 2f64.powf(2f64.powi(-EXP_SCALE));
        (base.powi(i), base.powi(i + 1))
    }

    pub fn add(&mut self, secs: f64) {
        if self.count == 0 {
            self.min = secs;
            self.max = secs;
        } else {
            self.min = self.min.min(secs);
            self.max = self.max.max(secs);
        }
        self.count += 1;
        self.sum += secs;
        if secs <= EXP_ZERO_THRESHOLD || !secs.is_finite() {
            self.zero_count += 1;
            return;
        }
        self.add_at(Self::index(secs), 1);
    }

    fn add_at(&mut self, i: i32, n: u64) {
        // The dense range grows with slack (an octave each side at first, then doubling), so
        // that a series' spread of RTTs settles after a few moves instead of shifting the
        // vector at every new low; [`Self::trimmed`] drops the empty ends.
        if self.counts.is_empty() {
            self.offset = i - EXP_SLACK;
            self.counts = vec![0; 2 * EXP_SLACK as usize + 1];
        }
        if i < self.offset {
            let grow = ((self.offset - i) as usize).max(self.counts.len());
            self.counts.splice(0..0, std::iter::repeat_n(0, grow));
            self.offset -= grow as i32;
        }
        let at = (i - self.offset) as usize;
        if at >= self.counts.len() {
            let len = (at + 1).max(2 * self.counts.len());
            self.counts.resize(len, 0);
        }
        self.counts[at] += n;
    }

    /// The buckets from the first to the last non-empty one: (offset, counts).
    pub fn trimmed(&self) -> (i32, &[u64]) {
        let Some(first) = self.counts.iter().position(|&c| c > 0) else {
            return (0, &[]);
        };
        let last = self.counts.iter().rposition(|&c| c > 0).unwrap_or(first);
        (self.offset + first as i32, &self.counts[first..=last])
    }

    pub fn merge(&mut self, o: &ExpHist) {
        if o.count == 0 {
            return;
        }
        if self.count == 0 {
            *self = o.clone();
            return;
        }
        self.min = self.min.min(o.min);
        self.max = self.max.max(o.max);
        self.count += o.count;
        self.sum += o.sum;
        self.zero_count += o.zero_count;
        for (k, &n) in o.counts.iter().enumerate() {
            if n > 0 {
                self.add_at(o.offset + k as i32, n);
            }
        }
    }
}

/// What one series keeps beyond [`metro_core::aggregate::Stats`] over an interval.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Fine {
    /// The histogram's bucket upper bounds (ms), when one is kept.
    pub bounds_ms: Option<Arc<[f64]>>,
    /// Per-bucket (not cumulative) counts over `buckets_ms`, plus the +Inf bucket; the sum
    /// in seconds.
    pub buckets: Vec<u64>,
    pub bucket_sum: f64,
    pub exp: Option<ExpHist>,
    /// Sample values (ms) kept for distributions, one per sampled sample.
    pub values: Vec<f32>,
    /// The distribution sample rate, when values are kept.
    pub rate: Option<f64>,
    /// Samples offered to the distribution sampler (for its deterministic choice).
    pub offered: u64,
    /// With histogram buckets: the interval's latest sample and its slowest, as exemplars
    /// (two slots overwritten in place: no allocation per sample).
    pub latest: Option<Exemplar>,
    pub slowest: Option<Exemplar>,
}

/// A sample behind a histogram bucket, naming its connection: an operator goes from a slow
/// bucket to the connection (Prometheus exemplars).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Exemplar {
    pub secs: f64,
    /// The closing packet's time, ns since the epoch.
    pub ts: i64,
    /// The local end (the pair's `src`) and the responder.
    pub src: SocketAddr,
    pub dst: SocketAddr,
}

impl Fine {
    pub fn new(o: &IntervalOpts) -> Fine {
        Fine {
            bounds_ms: o.buckets_ms.clone(),
            buckets: o
                .buckets_ms
                .as_ref()
                .map(|b| vec![0; b.len() + 1])
                .unwrap_or_default(),
            bucket_sum: 0.0,
            exp: o.exponential.then(ExpHist::default),
            values: Vec::new(),
            rate: o.distribution_rate,
            offered: 0,
            latest: None,
            slowest: None,
        }
    }

    /// [`Self::add`], and the sample as the latest exemplar (and the slowest when it is).
    #[inline]
    pub fn add_exemplar(
        &mut self,
        ms: f64,
        ex: Exemplar,
        o: &IntervalOpts,
        values_room: &mut usize,
    ) -> bool {
        if o.buckets_ms.is_some() {
            if self.slowest.is_none_or(|s| ex.secs >= s.secs) {
                self.slowest = Some(ex);
            }
            self.latest = Some(ex);
        }
        self.add(ms, o, values_room)
    }

    /// Fold one sample in; `values_room` is how many more distribution values the interval
    /// can keep (decremented when one is kept). Returns whether a value was refused for
    /// lack of room.
    #[inline]
    pub fn add(&mut self, ms: f64, o: &IntervalOpts, values_room: &mut usize) -> bool {
        if let Some(b) = &o.buckets_ms {
            // Upper-inclusive buckets: the first bound >= ms.
            let i = b.partition_point(|&ub| ub < ms);
            self.buckets[i] += 1;
            self.bucket_sum += ms / 1000.0;
        }
        if let Some(e) = &mut self.exp {
            e.add(ms / 1000.0);
        }
        if let Some(rate) = o.distribution_rate {
            let n = self.offered;
            self.offered += 1;
            // Deterministic sampling: keep the sample whenever the running total of `rate`
            // crosses an integer, so exactly floor(n * rate) of n samples are kept, evenly.
            let keep = rate >= 1.0 || ((n + 1) as f64 * rate).floor() > (n as f64 * rate).floor();
            if keep {
                if *values_room == 0 {
                    return true;
                }
                *values_room -= 1;
                self.values.push(ms as f32);
            }
        }
        false
    }

    pub fn merge(&mut self, o: &Fine) {
        if self.buckets.len() == o.buckets.len() {
            for (a, b) in self.buckets.iter_mut().zip(&o.buckets) {
                *a += b;
            }
            self.bucket_sum += o.bucket_sum;
        }
        if let (Some(a), Some(b)) = (&mut self.exp, &o.exp) {
            a.merge(b);
        }
        self.values.extend_from_slice(&o.values);
        self.offered += o.offered;
        // `o` is the later one (a late hand-over, or a pair's other address).
        if o.latest.is_some() {
            self.latest = o.latest;
        }
        if let Some(b) = o.slowest
            && self.slowest.is_none_or(|a| b.secs >= a.secs)
        {
            self.slowest = Some(b);
        }
    }

    /// Approximate heap bytes (for the memory-per-series figure).
    pub fn heap_bytes(&self) -> usize {
        self.buckets.capacity() * 8
            + self.values.capacity() * 4
            + self.exp.as_ref().map_or(0, |e| e.counts.capacity() * 8)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_blocks() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(mask(ip("10.1.2.3"), 24), ip("10.1.2.0"));
        assert_eq!(mask(ip("10.1.2.3"), 0), ip("0.0.0.0"));
        assert_eq!(mask(ip("10.1.2.3"), 32), ip("10.1.2.3"));
        assert_eq!(mask(ip("2001:db8:1:2::5"), 48), ip("2001:db8:1::"));
        let cidrs: Vec<Cidr> = ["10.0.0.0/8", "10.1.0.0/16", "2001:db8::/32"]
            .iter()
            .map(|s| Cidr::parse(s).unwrap().0)
            .collect();
        let b = Blocks::new(&cidrs);
        assert_eq!(b.find(ip("10.1.9.9")), Some((ip("10.1.0.0"), 16)));
        assert_eq!(b.find(ip("10.2.9.9")), Some((ip("10.0.0.0"), 8)));
        assert_eq!(b.find(ip("11.0.0.1")), None);
        assert_eq!(b.find(ip("2001:db8:5::1")), Some((ip("2001:db8::"), 32)));
    }

    #[test]
    fn exponential_buckets_hold_their_values() {
        // Every value lies in (lower, upper] of its bucket; powers of two fall in the lower
        // bucket (upper-inclusive).
        for v in [1e-6, 0.00123, 0.01, 0.04, 1.0, 2.0, 37.5] {
            let i = ExpHist::index(v);
            let (lo, hi) = ExpHist::bounds(i);
            assert!(
                lo < v * (1.0 + 1e-12) && v <= hi * (1.0 + 1e-12),
                "{v}: ({lo}, {hi}]"
            );
        }
        assert_eq!(ExpHist::index(1.0), -1);
        assert_eq!(ExpHist::index(2.0), 15);
        let mut a = ExpHist::default();
        a.add(0.010);
        a.add(0.040);
        a.add(0.0);
        let mut b = ExpHist::default();
        b.add(0.001);
        a.merge(&b);
        assert_eq!(a.count, 4);
        assert_eq!(a.zero_count, 1);
        assert_eq!(a.counts.iter().sum::<u64>(), 3);
        let (offset, counts) = a.trimmed();
        assert_eq!(offset, ExpHist::index(0.001));
        assert_eq!(offset + counts.len() as i32 - 1, ExpHist::index(0.040));
        assert_eq!((counts[0], counts[counts.len() - 1]), (1, 1));
        // Far apart values (1 µs, 100 s) in both orders: every count where it belongs.
        for vals in [[1e-6, 100.0, 0.5], [100.0, 1e-6, 0.5]] {
            let mut h = ExpHist::default();
            for v in vals {
                h.add(v);
            }
            let (off, c) = h.trimmed();
            assert_eq!(off, ExpHist::index(1e-6));
            assert_eq!(off + c.len() as i32 - 1, ExpHist::index(100.0));
            assert_eq!(c[(ExpHist::index(0.5) - off) as usize], 1);
            assert_eq!(c.iter().sum::<u64>(), 3);
        }
        assert!((a.sum - 0.051).abs() < 1e-12);
        assert_eq!((a.min, a.max), (0.0, 0.040));
    }

    #[test]
    fn fine_counts_buckets_and_samples_deterministically() {
        let o = IntervalOpts {
            buckets_ms: Some(Arc::from(&[1.0, 10.0, 100.0][..])),
            distribution_rate: Some(0.25),
            ..IntervalOpts::default()
        };
        let mut f = Fine::new(&o);
        let mut room = 3;
        let mut refused = 0;
        for ms in [
            0.5, 1.0, 1.5, 10.0, 50.0, 500.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0,
        ] {
            refused += f.add(ms, &o, &mut room) as u32;
        }
        assert_eq!(f.buckets, vec![2, 10, 1, 1]);
        // 14 samples at 1/4: the 4th, 8th and 12th are kept, the 3 that fit.
        assert_eq!(f.values, vec![10.0, 3.0, 7.0]);
        assert_eq!(refused, 0);
        assert_eq!(room, 0);
        for ms in [1.0, 1.0, 1.0, 1.0] {
            refused += f.add(ms, &o, &mut room) as u32;
        }
        assert_eq!(refused, 1);
    }
}
