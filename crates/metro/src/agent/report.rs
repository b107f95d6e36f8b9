//! Per-interval aggregation: samples and retransmissions folded per (local address, remote
//! host) pair, and the [`InstanceReport`] a flush hands to the sinks.
//!
//! The capture thread owns the [`Interval`] it fills, without any lock (one update per
//! sample, found through the connection's tag; a hash lookup only for a connection's first
//! sample in an interval). At a flush tick the flusher raises the instance's request
//! counter; the capture thread, between packets, swaps in an empty interval and sends the
//! full one over the instance's channel; the flusher builds the report from it. Pairs with
//! no new sample are not reported (go-metro re-sent stale values forever).
//!
//! Only a sample takes one of the interval's [`MAX_PAIRS`] slots: a retransmission on a pair
//! without a slot waits in a separate bounded table and joins its pair when the pair's first
//! sample arrives. One-sided traffic (forged or not) from any number of addresses therefore
//! never pushes a host with samples out of the report; whatever finds no room is counted
//! (`metro.pairs.dropped`).

use std::net::IpAddr;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use metro_core::aggregate::{Numbering, Stats};
use metro_core::proto::ProtoCounters;
use metro_core::sample::Sample;
use metro_core::sample::{Kind, NO_TAG};

pub use super::config::MAX_PAIRS;
use super::fleet::{Exemplar, Fine, Group, IntervalOpts, MAX_VALUES, OTHER};
use super::watch::{LocalSet, Shared, WatchList};

/// Intervals a capture thread can hand over before the flusher collects them.
const HANDOFF_SLOTS: usize = 8;
/// Pairs with retransmissions but no sample (yet) kept per interval; a retransmission on a
/// new such pair beyond this is dropped and counted.
pub const MAX_PENDING_PAIRS: usize = 65_536;

/// One (local address, remote host) pair over an interval.
#[derive(Clone, Debug)]
pub struct PairReport {
    /// The local end.
    pub src: IpAddr,
    /// The protocol of its samples: its position in `metro_core::sample::PROTOCOLS` (tcp,
    /// quic, dns, icmp), which names its family (`sinks::catalog::FAMILIES`).
    pub protocol: u8,
    /// The remote end's tag value: the configured host name, else the address.
    pub dst: Arc<str>,
    pub stats: Stats,
    pub retransmits: u64,
    /// Histogram buckets, exponential histogram and distribution values, when a fleet
    /// output asks for them.
    pub fine: Option<Box<Fine>>,
    /// Tags of this pair beyond src/dst/iface and the instance's (`key:value`), added at
    /// report time (e.g. by a container lookup); sinks send them after the instance tags.
    pub extra_tags: Vec<String>,
    /// The least RTT (ms) of the pair over the baseline window, this interval included
    /// ([`Baselines`]); set at report time.
    pub baseline_ms: Option<f64>,
}

impl PairReport {
    /// The eight RTT statistics (ms) every sink sends per pair, in this order: last, avg,
    /// jitter, min, max, p50, p90, p99 (that of `sinks::catalog::STATS`: DogStatsD's `system.net.tcp.rtt*` and Prometheus'
    /// `metro_tcp_rtt_*_seconds` families).
    pub fn rtt_ms(&self) -> [f64; 8] {
        stats_ms(&self.stats)
    }
}

/// The eight statistics of [`PairReport::rtt_ms`], of any statistics (a merge of pairs').
pub fn stats_ms(s: &Stats) -> [f64; 8] {
    [
        s.last(),
        s.mean(),
        s.jitter(),
        s.min(),
        s.max(),
        s.quantile(0.5),
        s.quantile(0.9),
        s.quantile(0.99),
    ]
}

/// Why the in-kernel capture handed frames over whole, in the order of
/// [`InstanceCounters::packets_raw`] (agent::ebpf::record::RawReason).
pub const RAW_REASONS: [&str; 5] = ["unparsed", "malformed", "udp", "icmp", "dns"];

/// Self-metrics of one instance over an interval (deltas), plus the active flow gauge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceCounters {
    pub packets_received: u64,
    /// Kernel drops (libpcap's `ps_drop` + `ps_ifdrop`).
    pub packets_dropped: u64,
    pub flows_active: u64,
    /// Flows evicted because the table was full (both kinds below).
    pub flows_evicted: u64,
    /// Of those, unconfirmed flows (half-open or one-sided: a flood's) shed to make room.
    pub flows_shed: u64,
    /// Packets the kernel filter passed but the watch list did not (matched in user space
    /// when the list is wider than the kernel filter can hold).
    pub packets_filtered: u64,
    /// Network samples reported, by kind index (`Kind::ALL`'s order).
    pub samples: [u64; Kind::COUNT],
    /// Samples answered by this host: counted, not reported as RTT.
    pub samples_internal: u64,
    /// Copies of a packet seen on another interface of `any`, dropped ([`super::dedupe`]).
    pub packets_copies: Copies,
    /// Gauge: 1 when the instance captures in the kernel ([`super::ebpf`]), 0 with libpcap.
    pub capture_ebpf: u64,
    /// Frames the in-kernel capture handed over whole, by reason
    /// ([`super::ebpf::record::RawReason`] index).
    pub packets_raw: [u64; RAW_REASONS.len()],
    /// Container attribution's counts, when it is on for this instance.
    pub containers: Option<super::containers::Counters>,
    /// Samples and retransmissions that found no room in the interval's pair tables.
    pub pairs_dropped: PairsDropped,
    /// Samples that went to `dst:other` because `max_series` series had samples.
    pub series_overflow: u64,
    /// Distribution values not kept: more than [`MAX_VALUES`] in the interval.
    pub distribution_dropped: u64,
    /// The QUIC, DNS and ICMP tracker's counts over the interval ([`ProtoDeltas`]; boxed:
    /// a report travels in a message beside small ones).
    pub proto: Box<ProtoDeltas>,
}

/// What the QUIC, DNS and ICMP tracker counted over an interval.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtoDeltas {
    /// DNS responses matched to their query, by RCODE.
    pub dns_rcodes: [u64; 16],
    /// DNS queries without a response after the timeout.
    pub dns_timeouts: u64,
    /// Entries not kept because a table was full, by protocol (quic, dns, icmp): Initials
    /// shed or not followed, queries and echo requests evicted.
    pub dropped: [u64; 3],
    /// Answers that matched nothing pending, by protocol (dns, icmp).
    pub unmatched: [u64; 2],
}

impl ProtoDeltas {
    /// The counts between two of the tracker's cumulative snapshots (which only grow:
    /// [`ProtoCounters::since`]), the ones the sinks report.
    fn between(was: &ProtoCounters, now: &ProtoCounters) -> ProtoDeltas {
        let d = now.since(was);
        ProtoDeltas {
            dns_rcodes: d.dns_rcodes,
            dns_timeouts: d.dns_timeouts,
            dropped: [d.quic_shed + d.quic_full, d.dns_evicted, d.icmp_evicted],
            unmatched: [d.dns_unmatched, d.icmp_unmatched],
        }
    }
}

/// What the interval's pair tables had no room for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairsDropped {
    /// Samples of a new pair while [`MAX_PAIRS`] pairs had samples.
    pub samples: u64,
    /// Retransmissions on a new pair without samples while [`MAX_PENDING_PAIRS`] such pairs
    /// were waiting.
    pub retransmits: u64,
}

impl PairsDropped {
    pub fn total(&self) -> u64 {
        self.samples + self.retransmits
    }
}

/// The copies an `any` capture dropped, by kind ([`super::dedupe::Dedupe`]'s counts).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Copies {
    /// Routed or bridged copies: the same addresses and ports on another interface.
    pub plain: u64,
    /// NAT'd copies: one end's address or port rewritten.
    pub nat: u64,
}

impl Copies {
    pub fn total(&self) -> u64 {
        self.plain + self.nat
    }
}

/// What one instance sends for one interval.
#[derive(Clone, Debug)]
pub struct InstanceReport {
    pub iface: String,
    pub tags: Vec<String>,
    pub pairs: Vec<PairReport>,
    pub counters: InstanceCounters,
}

impl InstanceReport {
    /// Whether the report speaks of distribution values: a pair kept some
    /// (`distributions: true`), or some were refused. Every sink then exports
    /// `metro.distribution.dropped`.
    pub fn has_distributions(&self) -> bool {
        self.counters.distribution_dropped > 0
            || self
                .pairs
                .iter()
                .any(|p| p.fine.as_ref().is_some_and(|f| f.rate.is_some()))
    }
}

/// An interval's pair: (local address, remote group, protocol index).
type PairKey = (IpAddr, IpAddr, u8);

/// Where a sample's pair is: a named series, or the local address's `dst:other`.
enum Slot {
    Pair(usize),
    Other(usize),
}

struct PairAcc {
    dst: Arc<str>,
    stats: Stats,
    retransmits: u64,
    fine: Option<Box<Fine>>,
}

impl PairAcc {
    fn new(dst: Arc<str>, retransmits: u64, opts: &IntervalOpts) -> PairAcc {
        PairAcc {
            dst,
            stats: Stats::new(),
            retransmits,
            fine: opts.fine().then(|| Box::new(Fine::new(opts))),
        }
    }

    fn merge(&mut self, o: &PairAcc) {
        self.stats.merge(&o.stats);
        self.retransmits += o.retransmits;
        match (&mut self.fine, &o.fine) {
            (Some(a), Some(b)) => a.merge(b),
            (None, Some(b)) => self.fine = Some(b.clone()),
            _ => {}
        }
    }
}

/// Accumulates one interval. Keyed by (local address, remote group) where the group is the
/// remote address, its subnet or its `ips` entry ([`IntervalOpts::group`]; no allocation
/// per sample); the `dst` tag is fixed when the pair first appears in the interval. Pairs live in a vector with a small
/// index beside it, so that a connection can keep its pair's position (the engine's
/// per-connection tag) and find it without hashing on its next sample.
pub struct Interval {
    /// What to keep per pair and how to group (shared by every interval of the instance).
    opts: Arc<IntervalOpts>,
    /// Distribution values the interval can still keep.
    values_room: usize,
    /// Per (local address, protocol): the `dst:other` pair past `max_series`.
    other: Vec<((IpAddr, u8), PairAcc)>,
    /// (local, remote group, protocol) -> position in `pairs`.
    numbers: Numbering<PairKey>,
    pairs: Vec<PairAcc>,
    samples: [u64; Kind::COUNT],
    samples_internal: u64,
    /// Retransmissions on pairs that have no sample (no slot) yet this interval.
    pending: foldhash::HashMap<(IpAddr, IpAddr), u64>,
    /// Samples whose responder is neither local nor watched (e.g. traffic seen on `any`
    /// between two other hosts): dropped.
    pub samples_unwatched: u64,
    pub pairs_dropped: PairsDropped,
    /// Samples that went to `dst:other` (past `max_series`).
    pub series_overflow: u64,
    /// Distribution values refused (past [`MAX_VALUES`]).
    pub distribution_dropped: u64,
    /// (local, remote) address -> the cgroup (v2) ID of the local sockets of its samples'
    /// connections ([`MIXED_CGROUPS`] when they differ), from the in-kernel capture's egress
    /// records; at most [`MAX_PAIRS`].
    cgroups: foldhash::HashMap<(IpAddr, IpAddr), u64>,
    /// Remote address -> its `dst` tag when no host name names it (the address as text),
    /// kept from one interval to the next ([`Self::fresh`]): a pair new to an interval
    /// formats its address once per capture, not once per interval. At most [`MAX_PAIRS`]
    /// (then started over).
    addr_tags: foldhash::HashMap<IpAddr, Arc<str>>,
}

/// [`Interval`]'s cgroup of a pair whose connections left from more than one cgroup.
const MIXED_CGROUPS: u64 = u64::MAX;

impl Default for Interval {
    fn default() -> Self {
        Interval::new(Arc::default())
    }
}

impl Interval {
    pub fn new(opts: Arc<IntervalOpts>) -> Interval {
        Interval {
            opts,
            values_room: MAX_VALUES,
            other: Vec::new(),
            numbers: Numbering::default(),
            pairs: Vec::new(),
            samples: [0; Kind::COUNT],
            samples_internal: 0,
            pending: Default::default(),
            cgroups: Default::default(),
            addr_tags: Default::default(),
            samples_unwatched: 0,
            pairs_dropped: PairsDropped::default(),
            series_overflow: 0,
            distribution_dropped: 0,
        }
    }

    /// An empty interval with the same options (what the capture thread fills next); it
    /// takes over this one's formatted addresses.
    pub fn fresh(&mut self) -> Interval {
        let mut next = Interval::new(self.opts.clone());
        next.addr_tags = std::mem::take(&mut self.addr_tags);
        next
    }

    /// The `dst` tag of watched address `remote`: its configured host name, else the
    /// address (formatted once, [`Self::addr_tags`]).
    fn dst_tag(&mut self, remote: IpAddr, watch: &WatchList) -> Arc<str> {
        if let Some(name) = watch.name(remote) {
            return name.clone();
        }
        if let Some(t) = self.addr_tags.get(&remote) {
            return t.clone();
        }
        if self.addr_tags.len() >= MAX_PAIRS {
            self.addr_tags.clear();
        }
        let t: Arc<str> = Arc::from(remote.to_string().as_str());
        self.addr_tags.insert(remote, t.clone());
        t
    }

    /// The `dst:other` pair of `local` (and a protocol).
    fn other_pair(&mut self, local: (IpAddr, u8)) -> &mut PairAcc {
        let i = self.other_index(local);
        &mut self.other[i].1
    }

    /// Where [`Self::other_pair`] is in `other` (made if missing).
    fn other_index(&mut self, local: (IpAddr, u8)) -> usize {
        match self.other.iter().position(|(l, _)| *l == local) {
            Some(i) => i,
            None => {
                self.other
                    .push((local, PairAcc::new(Arc::from(OTHER), 0, &self.opts)));
                self.other.len() - 1
            }
        }
    }

    /// The pair (local, remote group) for a sample, found first where `tag` says (a
    /// position from an earlier interval, or another pair's, is checked and corrected);
    /// created (with the retransmissions that waited for it) if there is room; past
    /// `max_series`, the local address's `dst:other` pair.
    fn pair(
        &mut self,
        local: IpAddr,
        remote: IpAddr,
        protocol: u8,
        watch: &WatchList,
        tag: &mut u32,
    ) -> Option<Slot> {
        let (group, how) = self.opts.group(remote);
        let key = (local, group, protocol);
        let i = match self.numbers.find(key, tag) {
            Some(i) => i,
            None if self.pairs.len() >= self.opts.max_series.min(MAX_PAIRS) => {
                if self.opts.max_series <= MAX_PAIRS {
                    self.series_overflow += 1;
                    return Some(Slot::Other(self.other_index((local, protocol))));
                }
                self.pairs_dropped.samples += 1;
                return None;
            }
            None => {
                // Retransmissions are TCP's.
                let retransmits = if self.pending.is_empty() || protocol != 0 {
                    0
                } else {
                    self.pending.remove(&(local, group)).unwrap_or(0)
                };
                let dst = match how {
                    Group::Host => self.dst_tag(remote, watch),
                    Group::Net(p) => Arc::from(format!("{group}/{p}").as_str()),
                };
                self.pairs.push(PairAcc::new(dst, retransmits, &self.opts));
                self.numbers.add(key, tag)
            }
        };
        Some(Slot::Pair(i as usize))
    }

    /// The connection of a sample between `local` and `remote` left from the local socket's
    /// cgroup `cgroup` (agent::ebpf): the pair is attributed to that container at report time
    /// (agent::containers::tag_pairs), unless its connections come from several.
    pub fn note_cgroup(&mut self, local: IpAddr, remote: IpAddr, cgroup: u64) {
        if let Some(c) = self.cgroups.get_mut(&(local, remote)) {
            if *c != cgroup {
                *c = MIXED_CGROUPS;
            }
        } else if self.cgroups.len() < MAX_PAIRS {
            self.cgroups.insert((local, remote), cgroup);
        }
    }

    /// Pairs with samples this interval.
    pub fn pairs_len(&self) -> usize {
        self.pairs.len()
    }

    /// Fold another interval of the same instance in (a hand-over that arrived late, or
    /// another engine thread's): its pairs join this one's within the same `max_series`
    /// as [`Self::pair`] keeps (past it, into the local address's `dst:other`).
    pub fn merge(&mut self, other: Interval) {
        let keys = other.numbers.keys().to_vec();
        for (key, acc) in keys.into_iter().zip(other.pairs) {
            let mut tag = NO_TAG;
            match self.numbers.find(key, &mut tag) {
                Some(i) => self.pairs[i as usize].merge(&acc),
                None if self.pairs.len() >= self.opts.max_series.min(MAX_PAIRS) => {
                    if self.opts.max_series <= MAX_PAIRS {
                        self.series_overflow += acc.stats.count();
                        self.other_pair((key.0, key.2)).merge(&acc);
                    } else {
                        self.pairs_dropped.samples += acc.stats.count();
                    }
                }
                None => {
                    self.pairs.push(acc);
                    self.numbers.add(key, &mut tag);
                }
            }
        }
        for (key, n) in other.pending {
            let mut tag = NO_TAG;
            if let Some(i) = self.numbers.find((key.0, key.1, 0), &mut tag) {
                self.pairs[i as usize].retransmits += n;
            } else if let Some(m) = self.pending.get_mut(&key) {
                *m += n;
            } else if self.pending.len() < MAX_PENDING_PAIRS {
                self.pending.insert(key, n);
            } else {
                self.pairs_dropped.retransmits += n;
            }
        }
        for (a, b) in self.samples.iter_mut().zip(other.samples) {
            *a += b;
        }
        for ((l, r), c) in other.cgroups {
            self.note_cgroup(l, r, c);
        }
        self.samples_internal += other.samples_internal;
        self.samples_unwatched += other.samples_unwatched;
        self.pairs_dropped.samples += other.pairs_dropped.samples;
        self.pairs_dropped.retransmits += other.pairs_dropped.retransmits;
        for (local, acc) in other.other {
            self.other_pair(local).merge(&acc);
        }
        self.series_overflow += other.series_overflow;
        self.distribution_dropped += other.distribution_dropped;
    }

    /// Fold one sample in. A sample answered by a local address is internal; one answered by
    /// a watched remote address is network RTT for the pair (closing packet's destination,
    /// responder).
    pub fn add_sample(&mut self, s: &Sample, locals: &LocalSet, watch: &WatchList) {
        let mut tag = NO_TAG;
        self.add_sample_tagged(s, locals, watch, &mut tag);
    }

    /// [`Self::add_sample`], with the connection's tag (see [`Observer::sample_tagged`])
    /// remembering the pair's position.
    ///
    /// [`Observer::sample_tagged`]: metro_core::sample::Observer::sample_tagged
    pub fn add_sample_tagged(
        &mut self,
        s: &Sample,
        locals: &LocalSet,
        watch: &WatchList,
        tag: &mut u32,
    ) {
        self.add_sample_classified(s, None, locals, watch, tag);
    }

    /// [`Self::add_sample_tagged`] with the namespace classification when known
    /// ([`super::containers::Attribution::internal`]): `Some(true)` is internal, `Some(false)`
    /// network RTT between namespaces even when the responder is one of this host's
    /// addresses; `None` falls back to the host's addresses.
    pub fn add_sample_classified(
        &mut self,
        s: &Sample,
        internal: Option<bool>,
        locals: &LocalSet,
        watch: &WatchList,
        tag: &mut u32,
    ) {
        let resp = s.responder.ip();
        if internal.unwrap_or_else(|| locals.contains(resp)) {
            self.samples_internal += 1;
            return;
        }
        if !watch.contains(resp) {
            self.samples_unwatched += 1;
            return;
        }
        let local = s.peer.ip();
        let kind = s.kind.index();
        let protocol = s.kind.protocol_index();
        let ms = s.rtt_ms();
        let ex = Exemplar {
            secs: ms / 1000.0,
            ts: s.ts,
            src: s.peer,
            dst: s.responder,
        };
        let p = match self.pair(local, resp, protocol, watch, tag) {
            Some(Slot::Pair(i)) => &mut self.pairs[i],
            Some(Slot::Other(i)) => &mut self.other[i].1,
            None => return,
        };
        p.stats.add(ms);
        if let Some(f) = &mut p.fine
            && f.add_exemplar(ms, ex, &self.opts, &mut self.values_room)
        {
            self.distribution_dropped += 1;
        }
        self.samples[kind] += 1;
    }

    /// Count a retransmission on the pair it belongs to (whichever end is the watched remote).
    pub fn add_retransmit(
        &mut self,
        sender: IpAddr,
        receiver: IpAddr,
        locals: &LocalSet,
        watch: &WatchList,
    ) {
        let (local, remote) = if watch.contains(receiver) && !locals.contains(receiver) {
            (sender, receiver)
        } else if watch.contains(sender) && !locals.contains(sender) {
            (receiver, sender)
        } else {
            return;
        };
        let key = (local, self.opts.group(remote).0);
        let mut no_tag = NO_TAG;
        if let Some(i) = self.numbers.find((key.0, key.1, 0), &mut no_tag) {
            self.pairs[i as usize].retransmits += 1;
            return;
        }
        // No sample yet: no slot. Wait (bounded) for the pair's first sample.
        let room = self.pending.len() < MAX_PENDING_PAIRS;
        match self.pending.get_mut(&key) {
            Some(n) => *n += 1,
            None if room => {
                self.pending.insert(key, 1);
            }
            None => self.pairs_dropped.retransmits += 1,
        }
    }

    /// Pairs with at least one sample, merged by (src, dst tag): two addresses of one host
    /// name are one series.
    pub fn into_pairs(self) -> (Vec<PairReport>, [u64; Kind::COUNT], u64) {
        // Retransmissions on pairs that never had a sample are not reported (no RTT to
        // report them with), as before.
        let mut out: Vec<PairReport> = Vec::new();
        let mut index: foldhash::HashMap<(IpAddr, Arc<str>, u8), usize> = Default::default();
        let mut entries: Vec<(PairKey, PairAcc)> = self
            .numbers
            .keys()
            .iter()
            .copied()
            .zip(self.pairs)
            .collect();
        // Deterministic order: by protocol, local address, then tag.
        entries
            .sort_by(|a, b| (a.0.2, a.0.0, &a.1.dst, a.0.1).cmp(&(b.0.2, b.0.0, &b.1.dst, b.0.1)));
        let mut other = self.other;
        other.sort_by_key(|((l, p), _)| (*p, *l));
        let others = other.into_iter().map(|((l, p), acc)| ((l, l, p), acc));
        for ((local, _, protocol), acc) in entries.into_iter().chain(others) {
            if acc.stats.is_empty() {
                continue;
            }
            match index.get(&(local, acc.dst.clone(), protocol)) {
                Some(&i) => {
                    let o = &mut out[i];
                    o.stats.merge(&acc.stats);
                    o.retransmits += acc.retransmits;
                    match (&mut o.fine, acc.fine) {
                        (Some(a), Some(b)) => a.merge(&b),
                        (None, b) => o.fine = b,
                        _ => {}
                    }
                }
                None => {
                    index.insert((local, acc.dst.clone(), protocol), out.len());
                    out.push(PairReport {
                        src: local,
                        protocol,
                        dst: acc.dst,
                        stats: acc.stats,
                        retransmits: acc.retransmits,
                        fine: acc.fine,
                        extra_tags: Vec::new(),
                        baseline_ms: None,
                    });
                }
            }
        }
        (out, self.samples, self.samples_internal)
    }
}

/// Slots of a pair's baseline ring: the window in this many parts, each the least RTT of
/// the intervals reported in it.
pub const BASELINE_SLOTS: usize = 10;
/// Pairs whose baseline is kept; a new pair past it (once the pairs quiet for a whole window
/// are gone) gets its interval's least RTT as its baseline, without history.
pub const MAX_BASELINE_PAIRS: usize = MAX_PAIRS;

/// Each pair's least RTT over a sliding window (`baseline_window`), in bounded memory: a
/// ring of [`BASELINE_SLOTS`] minima, each over a tenth of the window, so the baseline is
/// the least RTT of the last 9 to 10 tenths of the window and this interval. About 200
/// bytes a pair, at most [`MAX_BASELINE_PAIRS`] pairs (about 16 MB).
pub struct Baselines {
    window: Duration,
    /// (src, dst tag, protocol) -> per slot: (slot number, least RTT ms); slot number = time
    /// since start / (window / slots). By protocol: an echo answered by a nearer middlebox,
    /// or a resolver's cache, is no baseline for TCP's round trips to the same host.
    pairs: foldhash::HashMap<(IpAddr, Arc<str>, u8), Ring>,
}

/// A pair's baseline slots: (slot number, least RTT ms), `u64::MAX` when never filled.
type Ring = [(u64, f64); BASELINE_SLOTS];

impl Baselines {
    pub fn new(window: Duration) -> Baselines {
        Baselines {
            window,
            pairs: Default::default(),
        }
    }

    /// Pairs kept.
    pub fn len(&self) -> usize {
        self.pairs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pairs.is_empty()
    }

    /// Fold the pairs' least RTTs of an interval reported at `now` (time since a fixed
    /// start) in, and set each pair's [`PairReport::baseline_ms`].
    pub fn update(&mut self, pairs: &mut [PairReport], now: Duration) {
        let slot_ns = (self.window.as_nanos() / BASELINE_SLOTS as u128).max(1);
        let slot = (now.as_nanos() / slot_ns) as u64;
        // A slot is in the window when it is one of the last BASELINE_SLOTS (u64::MAX: never
        // filled).
        let live = |n: u64| {
            n.checked_add(BASELINE_SLOTS as u64)
                .is_some_and(|e| e > slot)
        };
        if pairs
            .iter()
            .any(|p| !self.pairs.contains_key(&(p.src, p.dst.clone(), p.protocol)))
            && self.pairs.len() >= MAX_BASELINE_PAIRS
        {
            self.pairs
                .retain(|_, ring| ring.iter().any(|&(n, _)| live(n)));
        }
        for p in pairs {
            if p.stats.is_empty() {
                continue;
            }
            let min = p.stats.min();
            let key = (p.src, p.dst.clone(), p.protocol);
            if !self.pairs.contains_key(&key) && self.pairs.len() >= MAX_BASELINE_PAIRS {
                p.baseline_ms = Some(min);
                continue;
            }
            let ring = self
                .pairs
                .entry(key)
                .or_insert([(u64::MAX, f64::INFINITY); BASELINE_SLOTS]);
            let at = &mut ring[(slot % BASELINE_SLOTS as u64) as usize];
            if at.0 != slot {
                *at = (slot, min);
            } else {
                at.1 = at.1.min(min);
            }
            p.baseline_ms = ring
                .iter()
                .filter(|&&(n, _)| live(n))
                .map(|&(_, m)| m)
                .reduce(f64::min);
        }
    }
}

/// Cumulative counters a capture thread publishes without locking; a flush reports deltas.
#[derive(Default)]
pub struct Cumulative {
    pub packets_received: AtomicU64,
    pub packets_dropped: AtomicU64,
    pub flows_active: AtomicU64,
    pub flows_evicted: AtomicU64,
    pub flows_shed: AtomicU64,
    pub packets_filtered: AtomicU64,
    /// Plain copies dropped (routed or bridged) and NAT'd ones: two counts that each only
    /// grow, so that each interval's deltas are exact whatever a report reads between the
    /// two stores.
    pub packets_copies_plain: AtomicU64,
    pub packets_copies_nat: AtomicU64,
    /// 1 while the instance captures in the kernel (agent::ebpf), 0 with libpcap.
    pub capture_ebpf: AtomicU64,
    /// The QUIC, DNS and ICMP tracker's counters, as of its last expiry (published once a
    /// tick, not per packet).
    pub proto: Mutex<ProtoCounters>,
    /// Raw frames from the in-kernel capture, by reason (agent::ebpf::record::RawReason).
    pub packets_raw: [AtomicU64; RAW_REASONS.len()],
}

/// The cumulative counters a report turns into deltas, read at one moment.
#[derive(Clone, Default)]
struct Totals {
    proto: ProtoCounters,
    received: u64,
    dropped: u64,
    evicted: u64,
    shed: u64,
    filtered: u64,
    copies_plain: u64,
    copies_nat: u64,
    raw: [u64; RAW_REASONS.len()],
}

impl Cumulative {
    /// Publish an `any` capture's copy counts, by kind.
    pub fn publish_copies(&self, d: &super::dedupe::Dedupe) {
        self.packets_copies_plain
            .store(d.copies - d.nat_copies, Ordering::Relaxed);
        self.packets_copies_nat
            .store(d.nat_copies, Ordering::Relaxed);
    }

    fn totals(&self) -> Totals {
        let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Totals {
            received: load(&self.packets_received),
            dropped: load(&self.packets_dropped),
            evicted: load(&self.flows_evicted),
            shed: load(&self.flows_shed),
            filtered: load(&self.packets_filtered),
            copies_plain: load(&self.packets_copies_plain),
            copies_nat: load(&self.packets_copies_nat),
            proto: self.proto.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            raw: std::array::from_fn(|i| load(&self.packets_raw[i])),
        }
    }
}

/// State one instance shares between its capture thread, the resolver and the flusher.
pub struct InstanceShared {
    pub iface: String,
    /// The instance's tags: replaced in place by a reload that keeps the capture.
    pub tags: Mutex<Vec<String>>,
    /// Raised by the flusher: the capture thread hands its interval over when this moves.
    pub flush_requests: AtomicU64,
    /// The capture thread's end of the hand-over channel.
    pub handoff: SyncSender<Interval>,
    /// The flusher's end.
    handoff_rx: Mutex<Receiver<Interval>>,
    pub cumulative: Cumulative,
    pub watch: Shared<WatchList>,
    pub locals: Shared<LocalSet>,
    /// Deltas are computed against these (flusher only).
    last: Mutex<Totals>,
    /// Cumulative sample totals (for the Prometheus counters and tests).
    pub samples_total: [AtomicU64; Kind::COUNT],
    pub samples_internal_total: AtomicU64,
    /// Attach container tags to pairs ([`super::containers`]); set by the runtime.
    pub container_tags: std::sync::atomic::AtomicBool,
    /// Also the pods' workload tags (`kube_labels: true`); set by the runtime.
    pub kube_labels: std::sync::atomic::AtomicBool,
    /// What the instance's intervals keep and how they group.
    pub opts: Arc<IntervalOpts>,
    /// Each pair's least RTT over the baseline window (flusher only), and the start its
    /// slots count from.
    baselines: Mutex<Baselines>,
    started: std::time::Instant,
    /// Engine threads handing over intervals ([`Self::set_engines`]).
    engines: AtomicUsize,
    /// The time of the instance's first packet, where the duty cycle's windows start
    /// (`i64::MIN` until then): one origin for all its engine threads.
    pub duty_origin: AtomicI64,
}

impl InstanceShared {
    pub fn new(
        iface: String,
        tags: Vec<String>,
        watch: WatchList,
        locals: LocalSet,
    ) -> InstanceShared {
        // Room for a few late hand-overs of every engine thread (`threads`); a capture
        // thread never blocks on it (try_send).
        let (handoff, handoff_rx) =
            mpsc::sync_channel(HANDOFF_SLOTS + super::config::MAX_THREADS as usize);
        InstanceShared {
            iface,
            tags: Mutex::new(tags),
            flush_requests: AtomicU64::new(0),
            handoff,
            handoff_rx: Mutex::new(handoff_rx),
            cumulative: Cumulative::default(),
            watch: Shared::new(watch),
            locals: Shared::new(locals),
            last: Mutex::new(Totals::default()),
            samples_total: Default::default(),
            samples_internal_total: AtomicU64::new(0),
            container_tags: std::sync::atomic::AtomicBool::new(false),
            kube_labels: std::sync::atomic::AtomicBool::new(false),
            opts: Arc::default(),
            baselines: Mutex::new(Baselines::new(IntervalOpts::default().baseline_window)),
            started: std::time::Instant::now(),
            engines: AtomicUsize::new(1),
            duty_origin: AtomicI64::new(i64::MIN),
        }
    }

    /// The same, with these interval options (before the capture thread starts).
    pub fn with_opts(mut self, opts: IntervalOpts) -> InstanceShared {
        self.baselines = Mutex::new(Baselines::new(opts.baseline_window));
        self.opts = Arc::new(opts);
        self
    }

    /// Ask the capture thread for its interval (see [`Self::collect`]).
    pub fn request_flush(&self) {
        self.flush_requests.fetch_add(1, Ordering::Release);
    }

    /// Every interval the capture threads handed over, merged: waits up to `wait` for one
    /// from each engine thread ([`Self::set_engines`]; zero: take what is there). An empty
    /// interval if none came; a late one is reported with the next flush.
    pub fn collect(&self, wait: Duration) -> Interval {
        let rx = self.handoff_rx.lock().unwrap_or_else(|e| e.into_inner());
        let deadline = std::time::Instant::now() + wait;
        let mut iv: Option<Interval> = None;
        for _ in 0..self.engines.load(Ordering::Relaxed).max(1) {
            match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
                Ok(more) => match &mut iv {
                    Some(iv) => iv.merge(more),
                    None => iv = Some(more),
                },
                Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
            }
        }
        let mut iv = match iv {
            Some(iv) => iv,
            None => return Interval::default(),
        };
        while let Ok(more) = rx.try_recv() {
            iv.merge(more);
        }
        iv
    }

    /// How many engine threads hand over an interval at each flush (`threads` of an
    /// in-kernel capture; 1 otherwise): [`Self::collect`] waits for as many.
    pub fn set_engines(&self, n: usize) {
        self.engines.store(n, Ordering::Relaxed);
    }

    /// The report of what the capture thread handed over ([`Self::collect`], waiting up to
    /// `wait`), with the counters' deltas since the last report.
    pub fn report(&self, wait: Duration) -> InstanceReport {
        self.take_report(self.collect(wait))
    }

    /// Build the report of `iv`, this instance's interval, with the counters' deltas since
    /// the last report.
    pub fn take_report(&self, mut iv: Interval) -> InstanceReport {
        let dropped = iv.pairs_dropped;
        if dropped.samples > 0 {
            tracing::warn!(
                "{}: {} samples of new (local, remote) pairs dropped this interval: more than \
                 {MAX_PAIRS} pairs had samples",
                self.iface,
                dropped.samples
            );
        }
        if dropped.retransmits > 0 {
            tracing::debug!(
                "{}: {} retransmissions on pairs without samples dropped this interval: more \
                 than {MAX_PENDING_PAIRS} such pairs",
                self.iface,
                dropped.retransmits
            );
        }
        if iv.series_overflow > 0 {
            tracing::debug!(
                "{}: {} samples went to dst:other this interval: more than {} series",
                self.iface,
                iv.series_overflow,
                iv.opts.max_series
            );
        }
        let (series_overflow, distribution_dropped) = (iv.series_overflow, iv.distribution_dropped);
        let cgroups = std::mem::take(&mut iv.cgroups);
        let (mut pairs, samples, internal) = iv.into_pairs();
        self.baselines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .update(&mut pairs, self.started.elapsed());
        // Container and pod tags from each pair's local address (agent::containers).
        let containers = self.container_tags.load(Ordering::Relaxed).then(|| {
            super::containers::tag_pairs(
                pairs.iter_mut().map(|p| {
                    // A remote end named by a configured host is a group: no one connection.
                    let cgroup = p
                        .dst
                        .parse::<IpAddr>()
                        .ok()
                        .and_then(|r| cgroups.get(&(p.src, r)).copied())
                        .filter(|&c| c != MIXED_CGROUPS);
                    (p.src, &*p.dst, cgroup, &mut p.extra_tags)
                }),
                self.kube_labels.load(Ordering::Relaxed),
            )
        });
        for (t, n) in self.samples_total.iter().zip(samples) {
            t.fetch_add(n, Ordering::Relaxed);
        }
        self.samples_internal_total
            .fetch_add(internal, Ordering::Relaxed);
        let now = self.cumulative.totals();
        let was = std::mem::replace(
            &mut *self.last.lock().unwrap_or_else(|e| e.into_inner()),
            now.clone(),
        );
        let counters = InstanceCounters {
            packets_received: now.received.saturating_sub(was.received),
            packets_dropped: now.dropped.saturating_sub(was.dropped),
            flows_active: self.cumulative.flows_active.load(Ordering::Relaxed),
            flows_evicted: now.evicted.saturating_sub(was.evicted),
            flows_shed: now.shed.saturating_sub(was.shed),
            packets_filtered: now.filtered.saturating_sub(was.filtered),
            samples,
            samples_internal: internal,
            packets_copies: Copies {
                plain: now.copies_plain.saturating_sub(was.copies_plain),
                nat: now.copies_nat.saturating_sub(was.copies_nat),
            },
            capture_ebpf: self.cumulative.capture_ebpf.load(Ordering::Relaxed),
            packets_raw: std::array::from_fn(|i| now.raw[i].saturating_sub(was.raw[i])),
            containers,
            pairs_dropped: dropped,
            series_overflow,
            distribution_dropped,
            proto: Box::new(ProtoDeltas::between(&was.proto, &now.proto)),
        };
        InstanceReport {
            iface: self.iface.clone(),
            tags: self.tags.lock().unwrap_or_else(|e| e.into_inner()).clone(),
            pairs,
            counters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::Cidr;
    use metro_core::sample::Kind;
    use std::collections::HashSet;
    use std::net::SocketAddr;

    fn sample(kind: Kind, responder: &str, peer: &str, rtt_ms: f64) -> Sample {
        Sample {
            kind,
            frame: 2,
            open_frame: 1,
            ts: 1_000_000_000,
            rtt: (rtt_ms * 1e6) as i64,
            responder: responder.parse::<SocketAddr>().unwrap(),
            peer: peer.parse::<SocketAddr>().unwrap(),
            flow_id: 1,
        }
    }

    fn watch() -> WatchList {
        let mut w = WatchList::new(vec![
            Cidr::parse("10.9.0.0/16").unwrap().0,
            Cidr::host("10.0.0.2".parse().unwrap()),
        ]);
        w.set_resolved(
            "db.example",
            &["10.0.0.3".parse().unwrap(), "10.0.0.4".parse().unwrap()],
        );
        w
    }

    fn locals() -> LocalSet {
        LocalSet::from(HashSet::from(["10.0.0.1".parse().unwrap()]))
    }

    #[test]
    fn a_connection_tag_finds_its_pair_and_a_stale_one_is_corrected() {
        let (w, l) = (watch(), locals());
        let mut iv = Interval::default();
        let (mut ta, mut tb) = (NO_TAG, NO_TAG);
        let a = |ms| sample(Kind::Seq, "10.0.0.2:80", "10.0.0.1:40000", ms);
        let b = |ms| sample(Kind::Seq, "10.9.1.1:443", "10.0.0.1:40001", ms);
        iv.add_sample_tagged(&a(1.0), &l, &w, &mut ta);
        iv.add_sample_tagged(&b(5.0), &l, &w, &mut tb);
        assert_eq!((ta, tb), (0, 1));
        iv.add_sample_tagged(&a(2.0), &l, &w, &mut ta);
        // Another pair's position (a reused connection, another engine): corrected.
        let mut wrong = ta;
        iv.add_sample_tagged(&b(7.0), &l, &w, &mut wrong);
        assert_eq!(wrong, tb);
        let (pairs, _, _) = iv.into_pairs();
        let counts: Vec<(String, u64)> = pairs
            .iter()
            .map(|p| (p.dst.to_string(), p.stats.count()))
            .collect();
        assert_eq!(
            counts,
            vec![("10.0.0.2".to_string(), 2), ("10.9.1.1".to_string(), 2)]
        );
        // The next interval starts empty: last interval's position is looked up again.
        let mut iv = Interval::default();
        let mut stale = tb;
        iv.add_sample_tagged(&a(3.0), &l, &w, &mut stale);
        assert_eq!(stale, 0);
        let (pairs, _, _) = iv.into_pairs();
        assert_eq!(pairs.len(), 1);
        assert_eq!(&*pairs[0].dst, "10.0.0.2");
    }

    #[test]
    fn each_protocol_is_its_own_pair_and_retransmissions_stay_tcp() {
        let (w, l) = (watch(), locals());
        let mut iv = Interval::default();
        // One remote host answering TCP, DNS (both its kinds' samples) and ICMP, and QUIC.
        iv.add_retransmit(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            &l,
            &w,
        );
        for (kind, ms) in [
            (Kind::Dns, 3.0),
            (Kind::Seq, 10.0),
            (Kind::Icmp, 1.0),
            (Kind::Dns, 5.0),
            (Kind::QuicHandshake, 20.0),
            (Kind::QuicSpin, 22.0),
            (Kind::Ts, 12.0),
        ] {
            iv.add_sample(&sample(kind, "10.0.0.2:53", "10.0.0.1:40000", ms), &l, &w);
        }
        let (pairs, samples, _) = iv.into_pairs();
        let got: Vec<(u8, u64, f64, u64)> = pairs
            .iter()
            .map(|p| (p.protocol, p.stats.count(), p.stats.max(), p.retransmits))
            .collect();
        // tcp, quic, dns, icmp: in that order, each with its own samples; the
        // retransmission on TCP's pair only.
        assert_eq!(
            got,
            [
                (0, 2, 12.0, 1),
                (1, 2, 22.0, 0),
                (2, 2, 5.0, 0),
                (3, 1, 1.0, 0)
            ]
        );
        assert_eq!(samples, [1, 0, 1, 1, 1, 2, 1]);
    }

    #[test]
    fn classifies_and_groups() {
        let (w, l) = (watch(), locals());
        let mut iv = Interval::default();
        iv.add_sample(
            &sample(Kind::Seq, "10.0.0.2:80", "10.0.0.1:5000", 10.0),
            &l,
            &w,
        );
        iv.add_sample(
            &sample(Kind::Ts, "10.0.0.2:80", "10.0.0.1:5001", 12.0),
            &l,
            &w,
        );
        // Answered by this host: internal.
        iv.add_sample(
            &sample(Kind::Seq, "10.0.0.1:5000", "10.0.0.2:80", 0.1),
            &l,
            &w,
        );
        // Two addresses of one host name: one series.
        iv.add_sample(
            &sample(Kind::Seq, "10.0.0.3:5432", "10.0.0.1:6000", 1.0),
            &l,
            &w,
        );
        iv.add_sample(
            &sample(Kind::Handshake, "10.0.0.4:5432", "10.0.0.1:6001", 3.0),
            &l,
            &w,
        );
        // A CIDR match is tagged with the address.
        iv.add_sample(
            &sample(Kind::Seq, "10.9.3.4:443", "10.0.0.1:7000", 20.0),
            &l,
            &w,
        );
        // Unwatched responder.
        iv.add_sample(
            &sample(Kind::Seq, "192.0.2.1:443", "10.0.0.1:7000", 20.0),
            &l,
            &w,
        );
        iv.add_retransmit(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            &l,
            &w,
        );
        iv.add_retransmit(
            "10.0.0.2".parse().unwrap(),
            "10.0.0.1".parse().unwrap(),
            &l,
            &w,
        );
        // A retransmission on a pair with no sample: not reported.
        iv.add_retransmit(
            "10.0.0.1".parse().unwrap(),
            "10.9.9.9".parse().unwrap(),
            &l,
            &w,
        );
        assert_eq!(iv.samples_unwatched, 1);
        let (pairs, samples, internal) = iv.into_pairs();
        assert_eq!(samples, [3, 1, 1, 0, 0, 0, 0]);
        assert_eq!(internal, 1);
        let got: Vec<(String, String, u64, u64)> = pairs
            .iter()
            .map(|p| {
                (
                    p.src.to_string(),
                    p.dst.to_string(),
                    p.stats.count(),
                    p.retransmits,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("10.0.0.1".into(), "10.0.0.2".into(), 2, 2),
                ("10.0.0.1".into(), "10.9.3.4".into(), 1, 0),
                ("10.0.0.1".into(), "db.example".into(), 2, 0),
            ]
        );
        assert_eq!(pairs[0].stats.last(), 12.0);
        assert_eq!(pairs[2].stats.min(), 1.0);
        assert_eq!(pairs[2].stats.max(), 3.0);
    }

    #[test]
    fn one_sided_retransmissions_take_no_slot_and_real_hosts_win() {
        // Watch 10.0.0.0/8; this host is 192.168.0.1.
        let w = WatchList::new(vec![Cidr::parse("10.0.0.0/8").unwrap().0]);
        let l = LocalSet::from(HashSet::from(["192.168.0.1".parse().unwrap()]));
        let me: IpAddr = "192.168.0.1".parse().unwrap();
        let forged = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a10_0000 + i));
        let mut iv = Interval::default();
        // A real host retransmits before its first sample: the count waits for the sample.
        iv.add_retransmit(me, "10.0.0.2".parse().unwrap(), &l, &w);
        // 70,000 forged remotes, each with two retransmissions and no sample.
        for i in 0..70_000 {
            iv.add_retransmit(forged(i), me, &l, &w);
            iv.add_retransmit(me, forged(i), &l, &w);
        }
        assert_eq!(iv.pairs_len(), 0, "retransmissions alone took slots");
        let over = 70_000 - (MAX_PENDING_PAIRS as u64 - 1);
        assert_eq!(iv.pairs_dropped.retransmits, 2 * over);
        iv.add_sample(
            &sample(Kind::Seq, "10.0.0.2:80", "192.168.0.1:5000", 10.0),
            &l,
            &w,
        );
        iv.add_sample(
            &sample(Kind::Seq, "10.0.0.3:80", "192.168.0.1:5001", 20.0),
            &l,
            &w,
        );
        assert_eq!(iv.pairs_dropped.samples, 0);
        let (pairs, samples, _) = iv.into_pairs();
        assert_eq!(samples, [2, 0, 0, 0, 0, 0, 0]);
        let got: Vec<(String, u64, u64)> = pairs
            .iter()
            .map(|p| (p.dst.to_string(), p.stats.count(), p.retransmits))
            .collect();
        assert_eq!(got, [("10.0.0.2".into(), 1, 1), ("10.0.0.3".into(), 1, 0)]);

        // A full table of pairs with samples: a new pair's samples are dropped and counted,
        // the pairs already there keep theirs.
        let mut iv = Interval::default();
        for i in 0..MAX_PAIRS as u32 {
            let s = Sample {
                responder: std::net::SocketAddr::new(forged(i), 80),
                ..sample(Kind::Seq, "10.0.0.1:80", "192.168.0.1:5000", 1.0)
            };
            iv.add_sample(&s, &l, &w);
        }
        iv.add_sample(
            &sample(Kind::Seq, "10.0.0.2:80", "192.168.0.1:5000", 10.0),
            &l,
            &w,
        );
        iv.add_sample(
            &sample(Kind::Seq, "10.0.0.2:80", "192.168.0.1:5000", 10.0),
            &l,
            &w,
        );
        let first = Sample {
            responder: std::net::SocketAddr::new(forged(0), 80),
            ..sample(Kind::Seq, "10.0.0.1:80", "192.168.0.1:5000", 3.0)
        };
        iv.add_sample(&first, &l, &w);
        assert_eq!(iv.pairs_dropped.samples, 2);
        let (pairs, _, _) = iv.into_pairs();
        assert_eq!(pairs.len(), MAX_PAIRS);
        let p0 = pairs.iter().find(|p| &*p.dst == "10.16.0.0").unwrap();
        assert_eq!(p0.stats.count(), 2);
    }

    /// Several engine threads (an in-kernel capture's `threads`) hand over an interval each:
    /// a flush waits for all of them, not only the first, and reports them together.
    #[test]
    fn a_flush_waits_for_every_engine_threads_interval() {
        let sh = Arc::new(InstanceShared::new(
            "eth0".into(),
            vec![],
            watch(),
            locals(),
        ));
        sh.set_engines(3);
        let (w, l) = (sh.watch.get().1, sh.locals.get().1);
        let send = {
            let sh = sh.clone();
            std::thread::spawn(move || {
                for (i, responder) in ["10.0.0.2:80", "10.9.1.1:80", "10.9.2.2:80"]
                    .into_iter()
                    .enumerate()
                {
                    std::thread::sleep(Duration::from_millis(50 * i as u64));
                    let mut iv = Interval::default();
                    iv.add_sample(&sample(Kind::Seq, responder, "10.0.0.1:5000", 10.0), &l, &w);
                    sh.handoff.send(iv).unwrap();
                }
            })
        };
        let iv = sh.collect(Duration::from_secs(10));
        send.join().unwrap();
        assert_eq!(iv.pairs_len(), 3);
    }

    /// Merging another thread's interval keeps `max_series`: past it, its pairs' samples go
    /// to `dst:other` and count as overflow, as a sample of a new pair does.
    #[test]
    fn merged_intervals_keep_max_series() {
        let (w, l) = (watch(), locals());
        let opts = Arc::new(IntervalOpts {
            max_series: 1,
            ..IntervalOpts::default()
        });
        let mut a = Interval::new(opts.clone());
        a.add_sample(
            &sample(Kind::Seq, "10.0.0.2:80", "10.0.0.1:5000", 10.0),
            &l,
            &w,
        );
        let mut b = Interval::new(opts);
        b.add_sample(
            &sample(Kind::Seq, "10.9.1.1:80", "10.0.0.1:5001", 20.0),
            &l,
            &w,
        );
        b.add_sample(
            &sample(Kind::Seq, "10.9.1.1:80", "10.0.0.1:5001", 21.0),
            &l,
            &w,
        );
        a.merge(b);
        assert_eq!(a.pairs_len(), 1);
        assert_eq!(a.series_overflow, 2);
        let (pairs, _, _) = a.into_pairs();
        let other = pairs.iter().find(|p| &*p.dst == OTHER).unwrap();
        assert_eq!(other.stats.count(), 2);
    }

    #[test]
    fn take_report_resets_and_reports_deltas() {
        let sh = InstanceShared::new("eth0".into(), vec!["a:b".into()], watch(), locals());
        let w = sh.watch.get().1;
        let l = sh.locals.get().1;
        let mut iv = Interval::default();
        iv.add_sample(
            &sample(Kind::Seq, "10.0.0.2:80", "10.0.0.1:5000", 10.0),
            &l,
            &w,
        );
        // Handed over in two parts (the second late): merged into one report.
        let mut late = Interval::default();
        late.add_sample(
            &sample(Kind::Seq, "10.0.0.2:80", "10.0.0.1:5001", 30.0),
            &l,
            &w,
        );
        late.add_retransmit(
            "10.0.0.1".parse().unwrap(),
            "10.0.0.2".parse().unwrap(),
            &l,
            &w,
        );
        assert_eq!(sh.collect(Duration::ZERO).pairs_len(), 0);
        sh.handoff.try_send(iv).unwrap();
        sh.handoff.try_send(late).unwrap();
        sh.cumulative.packets_received.store(100, Ordering::Relaxed);
        let r = sh.take_report(sh.collect(Duration::from_secs(1)));
        assert_eq!(r.pairs[0].stats.count(), 2);
        assert_eq!(r.pairs[0].stats.max(), 30.0);
        assert_eq!(r.pairs[0].retransmits, 1);
        assert_eq!(r.pairs.len(), 1);
        assert_eq!(r.counters.packets_received, 100);
        assert_eq!(r.counters.samples, [2, 0, 0, 0, 0, 0, 0]);
        sh.cumulative.packets_received.store(150, Ordering::Relaxed);
        let r = sh.take_report(sh.collect(Duration::ZERO));
        assert!(r.pairs.is_empty());
        assert_eq!(r.counters.packets_received, 50);
        assert_eq!(r.counters.samples, [0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(sh.samples_total[0].load(Ordering::Relaxed), 2);
    }

    fn pair_with(dst: &str, rtts: &[f64]) -> PairReport {
        let mut stats = Stats::new();
        for &ms in rtts {
            stats.add(ms);
        }
        PairReport {
            src: "10.0.0.1".parse().unwrap(),
            protocol: 0,
            dst: dst.into(),
            stats,
            retransmits: 0,
            fine: None,
            extra_tags: vec![],
            baseline_ms: None,
        }
    }

    /// A 100 s window in ten 10 s slots: the baseline is the least RTT of the slots still
    /// in the window, this interval's included; the queueing delay the p50 above it.
    #[test]
    fn baseline_is_the_least_rtt_over_the_window() {
        use crate::agent::sinks::catalog::TCP_RTT;
        let mut b = Baselines::new(Duration::from_secs(100));
        let mut at = |t: u64, rtts: &[f64]| {
            let mut ps = vec![pair_with("db", rtts)];
            b.update(&mut ps, Duration::from_secs(t));
            let p = ps.pop().unwrap();
            let q = TCP_RTT.gauges[1].of(&p);
            (p.baseline_ms, q)
        };
        assert_eq!(at(0, &[20.0, 30.0]).0, Some(20.0));
        assert_eq!(at(5, &[12.0]).0, Some(12.0));
        // Slot 0 (12 ms) still in the window at 50 s and 99 s: the p50 of 30, 31, 33 ms
        // queues about 19 ms above it.
        let (base, q) = at(50, &[30.0, 31.0, 33.0]);
        assert_eq!(base, Some(12.0));
        let q = q.unwrap();
        assert!((q - 19.0).abs() < 0.4, "{q}");
        assert_eq!(at(99, &[40.0]).0, Some(12.0));
        // At 101 s slot 0 has left: slot 5's 30 ms and this interval's 35 ms remain.
        assert_eq!(at(101, &[35.0]).0, Some(30.0));
        // Never negative: a p50 below the baseline (a sketch's rounding) queues nothing.
        let p = PairReport {
            baseline_ms: Some(10.0),
            ..pair_with("db", &[10.0])
        };
        assert!(TCP_RTT.gauges[1].of(&p).unwrap() >= 0.0);
        // Without a baseline, no queueing delay.
        assert_eq!(TCP_RTT.gauges[1].of(&pair_with("db", &[1.0])), None);
    }

    /// A host's baseline is its protocol's own: a fast echo (a middlebox answering ping) or
    /// DNS answer from the same address does not lower TCP's baseline.
    #[test]
    fn baselines_are_kept_per_protocol() {
        let mut b = Baselines::new(Duration::from_secs(100));
        let icmp = PairReport {
            protocol: 3,
            ..pair_with("db", &[2.0])
        };
        let mut ps = vec![pair_with("db", &[20.0, 25.0]), icmp];
        b.update(&mut ps, Duration::from_secs(0));
        assert_eq!(
            (ps[0].baseline_ms, ps[1].baseline_ms),
            (Some(20.0), Some(2.0))
        );
        let mut ps = vec![pair_with("db", &[30.0])];
        b.update(&mut ps, Duration::from_secs(10));
        assert_eq!(ps[0].baseline_ms, Some(20.0));
    }

    /// Bounded: at most MAX_BASELINE_PAIRS pairs; past it a new pair's baseline is its own
    /// interval's least RTT; once a window has passed, quiet pairs go and new ones are kept.
    #[test]
    fn baselines_are_bounded() {
        let mut b = Baselines::new(Duration::from_secs(10));
        let mut ps: Vec<PairReport> = (0..MAX_BASELINE_PAIRS)
            .map(|i| pair_with(&format!("h{i}"), &[5.0]))
            .collect();
        b.update(&mut ps, Duration::ZERO);
        assert_eq!(b.len(), MAX_BASELINE_PAIRS);
        let mut new = vec![pair_with("late", &[7.0])];
        b.update(&mut new, Duration::from_secs(1));
        assert_eq!(new[0].baseline_ms, Some(7.0));
        assert_eq!(b.len(), MAX_BASELINE_PAIRS);
        // 12 s later every old pair is out of its window: they go, the new pair stays.
        let mut new = vec![pair_with("later", &[8.0])];
        b.update(&mut new, Duration::from_secs(12));
        assert_eq!(b.len(), 1);
        let mut again = vec![pair_with("later", &[9.0])];
        b.update(&mut again, Duration::from_secs(13));
        assert_eq!(again[0].baseline_ms, Some(8.0));
    }
}
