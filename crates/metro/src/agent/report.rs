//! Per-interval aggregation: samples and retransmissions folded per (local address, remote
//! host) pair, and the [`InstanceReport`] a flush hands to the sinks.
//!
//! The capture thread adds to an [`Interval`] under a short-lived lock (one update per
//! sample, found through the connection's tag; a hash lookup only for a connection's first
//! sample in an interval); a flush swaps the whole interval out and builds the report outside the lock,
//! so no sink ever holds it. Pairs with no new sample are not reported (go-metro re-sent
//! stale values forever).

use std::collections::HashMap;

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use metro_core::aggregate::{Numbering, Stats};
use metro_core::engine::NO_TAG;
use metro_core::rtt::Sample;

use super::resolve::{LocalSet, Shared, WatchList};

/// Pairs kept per interval; a new pair beyond this is dropped and counted.
pub const MAX_PAIRS: usize = 65_536;

/// One (local address, remote host) pair over an interval.
#[derive(Clone, Debug)]
pub struct PairReport {
    /// The local end.
    pub src: IpAddr,
    /// The remote end's tag value: the configured host name, else the address.
    pub dst: Arc<str>,
    pub stats: Stats,
    pub retransmits: u64,
    /// The container and pod that own `src` (`container_id:…`, …), attached when the report
    /// is built ([`super::containers`]); empty when unknown or off.
    pub container_tags: Vec<String>,
}

/// Self-metrics of one instance over an interval (deltas), plus the active flow gauge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct InstanceCounters {
    pub packets_received: u64,
    /// Kernel drops (libpcap's `ps_drop` + `ps_ifdrop`).
    pub packets_dropped: u64,
    pub flows_active: u64,
    /// Flows evicted because the table was full.
    pub flows_evicted: u64,
    /// Network samples reported, by kind index (seq, handshake, ts).
    pub samples: [u64; 3],
    /// Samples answered by this host: counted, not reported as RTT.
    pub samples_internal: u64,
    /// Copies of a packet seen on another interface of `any`, dropped ([`super::dedupe`]).
    pub packets_copies: u64,
    /// Container attribution's counts, when it is on for this instance.
    pub containers: Option<super::containers::Counters>,
}

/// What one instance sends for one interval.
#[derive(Clone, Debug)]
pub struct InstanceReport {
    pub iface: String,
    pub tags: Vec<String>,
    pub pairs: Vec<PairReport>,
    pub counters: InstanceCounters,
}

struct PairAcc {
    dst: Arc<str>,
    stats: Stats,
    retransmits: u64,
}

/// Accumulates one interval. Keyed by addresses (no allocation per sample); the `dst` tag is
/// fixed when the pair first appears in the interval. Pairs live in a vector with a small
/// index beside it, so that a connection can keep its pair's position (the engine's
/// per-connection tag) and find it without hashing on its next sample.
#[derive(Default)]
pub struct Interval {
    /// (local, remote) -> position in `pairs`.
    numbers: Numbering<(IpAddr, IpAddr)>,
    pairs: Vec<PairAcc>,
    samples: [u64; 3],
    samples_internal: u64,
    /// Samples whose responder is neither local nor watched (e.g. traffic seen on `any`
    /// between two other hosts): dropped.
    pub samples_unwatched: u64,
    pub pairs_dropped: u64,
}

impl Interval {
    /// The pair (local, remote), found first where `tag` says (a position from an earlier
    /// interval, or another pair's, is checked and corrected).
    fn pair(
        &mut self,
        local: IpAddr,
        remote: IpAddr,
        dst: impl FnOnce() -> Arc<str>,
        tag: &mut u32,
    ) -> Option<&mut PairAcc> {
        let key = (local, remote);
        let i = match self.numbers.find(key, tag) {
            Some(i) => i,
            None if self.pairs.len() >= MAX_PAIRS => {
                self.pairs_dropped += 1;
                return None;
            }
            None => {
                self.pairs.push(PairAcc {
                    dst: dst(),
                    stats: Stats::new(),
                    retransmits: 0,
                });
                self.numbers.add(key, tag)
            }
        };
        Some(&mut self.pairs[i as usize])
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
    /// [`Observer::sample_tagged`]: metro_core::engine::Observer::sample_tagged
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
        if let Some(p) = self.pair(local, resp, || watch.tag(resp), tag) {
            p.stats.add(s.rtt_ms());
            self.samples[kind] += 1;
        }
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
        let mut no_tag = NO_TAG;
        if let Some(p) = self.pair(local, remote, || watch.tag(remote), &mut no_tag) {
            p.retransmits += 1;
        }
    }

    /// Pairs with at least one sample, merged by (src, dst tag): two addresses of one host
    /// name are one series.
    pub fn into_pairs(self) -> (Vec<PairReport>, [u64; 3], u64) {
        let mut out: Vec<PairReport> = Vec::new();
        let mut index: HashMap<(IpAddr, Arc<str>), usize> = HashMap::new();
        let mut entries: Vec<((IpAddr, IpAddr), PairAcc)> = self
            .numbers
            .keys()
            .iter()
            .copied()
            .zip(self.pairs)
            .collect();
        // Deterministic order: by local address, then tag.
        entries.sort_by(|a, b| (a.0.0, &a.1.dst, a.0.1).cmp(&(b.0.0, &b.1.dst, b.0.1)));
        for ((local, _), acc) in entries {
            if acc.stats.is_empty() {
                continue;
            }
            match index.get(&(local, acc.dst.clone())) {
                Some(&i) => {
                    out[i].stats.merge(&acc.stats);
                    out[i].retransmits += acc.retransmits;
                }
                None => {
                    index.insert((local, acc.dst.clone()), out.len());
                    out.push(PairReport {
                        src: local,
                        dst: acc.dst,
                        stats: acc.stats,
                        retransmits: acc.retransmits,
                        container_tags: Vec::new(),
                    });
                }
            }
        }
        (out, self.samples, self.samples_internal)
    }
}

/// Cumulative counters a capture thread publishes without locking; a flush reports deltas.
#[derive(Default)]
pub struct Cumulative {
    pub packets_received: AtomicU64,
    pub packets_dropped: AtomicU64,
    pub flows_active: AtomicU64,
    pub flows_evicted: AtomicU64,
    pub packets_copies: AtomicU64,
}

/// The copies dropped since the last call (a delta, like the other packet counters).
fn c_copies(c: &Cumulative, last: &AtomicU64) -> u64 {
    let now = c.packets_copies.load(Ordering::Relaxed);
    now.saturating_sub(last.swap(now, Ordering::Relaxed))
}

/// State one instance shares between its capture thread, the resolver and the flusher.
pub struct InstanceShared {
    pub iface: String,
    pub tags: Vec<String>,
    pub interval: Mutex<Interval>,
    pub cumulative: Cumulative,
    pub watch: Shared<WatchList>,
    pub locals: Shared<LocalSet>,
    /// Deltas are computed against these (flusher only).
    last: Mutex<(u64, u64, u64)>,
    /// Cumulative sample totals (for the Prometheus counters and tests).
    pub samples_total: [AtomicU64; 3],
    pub samples_internal_total: AtomicU64,
    /// Attach container tags to pairs ([`super::containers`]); set by the runtime.
    pub container_tags: std::sync::atomic::AtomicBool,
    /// Copies dropped, at the last report (flusher only).
    last_copies: AtomicU64,
}

impl InstanceShared {
    pub fn new(
        iface: String,
        tags: Vec<String>,
        watch: WatchList,
        locals: LocalSet,
    ) -> InstanceShared {
        InstanceShared {
            iface,
            tags,
            interval: Mutex::new(Interval::default()),
            cumulative: Cumulative::default(),
            watch: Shared::new(watch),
            locals: Shared::new(locals),
            last: Mutex::new((0, 0, 0)),
            samples_total: Default::default(),
            samples_internal_total: AtomicU64::new(0),
            container_tags: std::sync::atomic::AtomicBool::new(false),
            last_copies: AtomicU64::new(0),
        }
    }

    /// Swap the interval out and build its report. The interval lock is held only for the
    /// swap.
    pub fn take_report(&self) -> InstanceReport {
        let iv = std::mem::take(&mut *self.interval.lock().unwrap_or_else(|e| e.into_inner()));
        if iv.pairs_dropped > 0 {
            tracing::warn!(
                "{}: {} new (local, remote) pairs dropped this interval: more than {MAX_PAIRS}",
                self.iface,
                iv.pairs_dropped
            );
        }
        let (mut pairs, samples, internal) = iv.into_pairs();
        let containers = self
            .container_tags
            .load(Ordering::Relaxed)
            .then(|| super::containers::tag_pairs(&mut pairs));
        let copies = c_copies(&self.cumulative, &self.last_copies);
        for (t, n) in self.samples_total.iter().zip(samples) {
            t.fetch_add(n, Ordering::Relaxed);
        }
        self.samples_internal_total
            .fetch_add(internal, Ordering::Relaxed);
        let c = &self.cumulative;
        let recv = c.packets_received.load(Ordering::Relaxed);
        let drop = c.packets_dropped.load(Ordering::Relaxed);
        let evict = c.flows_evicted.load(Ordering::Relaxed);
        let mut last = self.last.lock().unwrap_or_else(|e| e.into_inner());
        let counters = InstanceCounters {
            packets_received: recv.saturating_sub(last.0),
            packets_dropped: drop.saturating_sub(last.1),
            flows_active: c.flows_active.load(Ordering::Relaxed),
            flows_evicted: evict.saturating_sub(last.2),
            samples,
            samples_internal: internal,
            packets_copies: copies,
            containers,
        };
        *last = (recv, drop, evict);
        InstanceReport {
            iface: self.iface.clone(),
            tags: self.tags.clone(),
            pairs,
            counters,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::Cidr;
    use metro_core::rtt::Kind;
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
        assert_eq!(samples, [3, 1, 1]);
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
    fn take_report_resets_and_reports_deltas() {
        let sh = InstanceShared::new("eth0".into(), vec!["a:b".into()], watch(), locals());
        {
            let w = sh.watch.get().1;
            let l = sh.locals.get().1;
            let mut iv = sh.interval.lock().unwrap();
            iv.add_sample(
                &sample(Kind::Seq, "10.0.0.2:80", "10.0.0.1:5000", 10.0),
                &l,
                &w,
            );
        }
        sh.cumulative.packets_received.store(100, Ordering::Relaxed);
        let r = sh.take_report();
        assert_eq!(r.pairs.len(), 1);
        assert_eq!(r.counters.packets_received, 100);
        assert_eq!(r.counters.samples, [1, 0, 0]);
        sh.cumulative.packets_received.store(150, Ordering::Relaxed);
        let r = sh.take_report();
        assert!(r.pairs.is_empty());
        assert_eq!(r.counters.packets_received, 50);
        assert_eq!(r.counters.samples, [0, 0, 0]);
        assert_eq!(sh.samples_total[0].load(Ordering::Relaxed), 1);
    }
}
