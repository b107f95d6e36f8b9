//! The engine: `process(frame, ts, packet)` per decoded TCP segment, `tick(ts)` for expiry.
//! Owns the flow table and the counters; everything else is in [`crate::rtt`].

use std::net::SocketAddr;

use crate::Nanos;
use crate::flow::{FlowKey, FlowTable, Removal};
use crate::rtt::conn::{Conn, Ctx};
use crate::rtt::queue::Pool;
use crate::rtt::{KindSet, Sample};
use crate::wire::Packet;

/// The initial value of the tag passed to [`Observer::sample_tagged`].
pub const NO_TAG: u32 = u32::MAX;

/// What the engine tells its caller, besides counters.
pub trait Observer {
    /// A new RTT sample.
    fn sample(&mut self, s: &Sample);
    /// A new RTT sample, with a word of storage that lives in the connection, one per
    /// responder (direction): the observer may keep where it aggregates this responder there
    /// (for example an index) and find it without a lookup on the next sample. It starts as
    /// [`NO_TAG`] and is only a hint: an observer must check what it finds (a connection may
    /// be shared between observers, e.g. across files). The default ignores it.
    #[inline]
    fn sample_tagged(&mut self, s: &Sample, _tag: &mut u32) {
        self.sample(s)
    }
    /// `sender` retransmitted data to `receiver` (a segment starting below the highest byte
    /// already sent, that was not a duplicate capture of the same frame).
    fn retransmit(&mut self, _sender: SocketAddr, _receiver: SocketAddr, _ts: Nanos) {}
}

impl<F: FnMut(&Sample)> Observer for F {
    fn sample(&mut self, s: &Sample) {
        self(s)
    }
}

/// Limits and timeouts. Every table is bounded; what falls out is counted.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Connections tracked at once; a new one beyond this evicts the least recently seen.
    pub max_flows: usize,
    /// Segments awaiting an ACK, per direction of a connection.
    pub max_pending_segments: usize,
    /// TSvals awaiting an echo, per direction of a connection.
    pub max_pending_tsvals: usize,
    /// A connection with no packet for this long is forgotten.
    pub idle_timeout: Nanos,
    /// A connection this long after its FIN is forgotten.
    pub closed_timeout: Nanos,
    /// A connection this long after it closed in both directions, or was reset, is forgotten
    /// (only stray retransmissions can follow; keeps the table from filling with finished
    /// connections). At most `closed_timeout`.
    pub done_timeout: Nanos,
    /// A recorded TSval older than this is dropped unmatched (pping: at most 10 s).
    pub tsval_max_age: Nanos,
    /// Two copies of one frame (same direction, IP ID, seq, length, ACK, flags and
    /// timestamps) within this interval are a duplicate capture, not a retransmission, whatever
    /// the evidence (a twentieth of it when the IP ID is 0). See docs/accuracy.md.
    pub duplicate_window: Nanos,
    /// Two such copies up to this far apart are still a duplicate capture when the evidence is
    /// strong (mirror ports and taps deliver copies 10-15 ms apart): the sender's IP IDs vary
    /// (and `trust_ip_id`), so a retransmission would carry a new one; or the sender's TSval
    /// clock had already moved past the copy's TSval, so it cannot be a new transmission; or
    /// the copy is a SYN or SYN/ACK, first retransmitted after 1 s. Keep it well below the
    /// 200 ms minimum retransmission timeout.
    pub duplicate_window_wide: Nanos,
    /// Use the IP ID as evidence that two identical frames are one frame captured twice.
    /// Turn off where a middlebox rewrites IP IDs (then only TSvals and the narrow window
    /// decide).
    pub trust_ip_id: bool,
    /// A sample longer than this is implausible (TCP's retransmission timer never waits
    /// longer than 120 s; damaged captures have timestamps years apart): dropped, counted.
    pub max_rtt: Nanos,
    /// Which kinds of sample to produce.
    pub kinds: KindSet,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_flows: 1 << 20,
            max_pending_segments: 1024,
            max_pending_tsvals: 256,
            idle_timeout: 300 * 1_000_000_000,
            closed_timeout: 60 * 1_000_000_000,
            done_timeout: 5 * 1_000_000_000,
            tsval_max_age: 10 * 1_000_000_000,
            duplicate_window: 2_000_000,
            duplicate_window_wide: 100_000_000,
            trust_ip_id: true,
            max_rtt: 120 * 1_000_000_000,
            kinds: KindSet::ALL,
        }
    }
}

/// Counters of everything the engine saw, dropped or evicted. Monotonic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// TCP segments processed.
    pub packets: u64,
    /// Samples emitted, by kind index (seq, handshake, ts).
    pub samples: [u64; 3],
    /// Would-be samples dropped because the acknowledged range was retransmitted or reordered.
    pub ambiguous: u64,
    /// Retransmissions seen (segment starting below the highest byte sent).
    pub retransmits: u64,
    /// Frames captured twice and skipped.
    pub duplicates: u64,
    // Accuracy past Karn (docs/accuracy.md), grouped here.
    /// Of `duplicates`, copies beyond the narrow window recognised by strong evidence, by
    /// evidence: [IP ID, TSval, SYN or SYN/ACK (retransmitted only after 1 s)].
    pub duplicates_wide: [u64; 3],
    /// Samples over a retransmitted segment that the evidence tied to one transmission, by
    /// evidence: [the ACK echoes the retransmission's TSval, the ACK echoes the original's
    /// TSval, a DSACK reports the retransmission as a duplicate, the ACK stops inside the
    /// retransmitted range, a DSACK answers a retransmission of bytes already acknowledged].
    /// Included in `samples`.
    pub disambiguated: [u64; 5],
    /// Closing packet stamped at or before its opener: no sample.
    pub non_positive: u64,
    /// Samples longer than `max_rtt`: dropped.
    pub implausible: u64,
    pub flows_created: u64,
    /// Flows evicted because the table was full.
    pub flows_evicted_full: u64,
    pub flows_expired_idle: u64,
    pub flows_expired_closed: u64,
    /// Pending segments dropped because a direction's list was full.
    pub segments_evicted: u64,
    /// Pending TSvals dropped because a direction's list was full.
    pub tsvals_evicted: u64,
    /// Pending TSvals that aged out unmatched.
    pub tsvals_expired: u64,
}

impl Counters {
    /// Count a flow leaving the table, by reason.
    fn count_removal(&mut self, why: Removal) {
        match why {
            Removal::Idle => self.flows_expired_idle += 1,
            Removal::Closed => self.flows_expired_closed += 1,
            Removal::Full => self.flows_evicted_full += 1,
        }
    }

    /// Add another engine's counters (several files, or several shards of one file).
    pub fn add(&mut self, c: &Counters) {
        self.packets += c.packets;
        for (a, b) in self.samples.iter_mut().zip(c.samples) {
            *a += b;
        }
        self.ambiguous += c.ambiguous;
        self.retransmits += c.retransmits;
        self.duplicates += c.duplicates;
        for (a, b) in self.duplicates_wide.iter_mut().zip(c.duplicates_wide) {
            *a += b;
        }
        for (a, b) in self.disambiguated.iter_mut().zip(c.disambiguated) {
            *a += b;
        }
        self.non_positive += c.non_positive;
        self.implausible += c.implausible;
        self.flows_created += c.flows_created;
        self.flows_evicted_full += c.flows_evicted_full;
        self.flows_expired_idle += c.flows_expired_idle;
        self.flows_expired_closed += c.flows_expired_closed;
        self.segments_evicted += c.segments_evicted;
        self.tsvals_evicted += c.tsvals_evicted;
        self.tsvals_expired += c.tsvals_expired;
    }
}

/// The RTT engine. Not thread-safe; one per packet source (or per shard).
pub struct Engine {
    cfg: EngineConfig,
    counters: Counters,
    flows: FlowTable<Conn>,
    pool: Pool,
    next_id: u64,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        let mut flows = FlowTable::new(cfg.max_flows);
        flows.set_timeouts(cfg.idle_timeout, cfg.closed_timeout, cfg.done_timeout);
        Engine {
            flows,
            cfg,
            counters: Counters::default(),
            pool: Pool::new(),
            next_id: 1,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Process one TCP segment captured at `ts` as record number `frame` (1-based).
    #[inline]
    pub fn process<O: Observer>(&mut self, frame: u64, ts: Nanos, pkt: &Packet<'_>, out: &mut O) {
        self.counters.packets += 1;
        let tcp = &pkt.tcp;
        let (key, dir) = FlowKey::new(pkt.src, tcp.sport, pkt.dst, tcp.dport);
        let next_id = &mut self.next_id;
        let pool = &mut self.pool;
        let counters = &mut self.counters;
        let (idx, new) = self.flows.touch_or_insert(
            key,
            ts,
            || {
                let c = Conn::new(*next_id);
                *next_id += 1;
                c
            },
            |old, why| {
                old.release(pool);
                counters.count_removal(why);
            },
        );
        if new {
            self.counters.flows_created += 1;
        } else if tcp.flags.syn() && !tcp.flags.ack() {
            // A SYN on known ports: the same connection's SYN again, or a new connection
            // reusing the ports (after a close, or after a start we never saw).
            let conn = self.flows.get(idx);
            if self.flows.is_closed(idx) || conn.syn_starts_new(dir.index(), tcp.seq) {
                let id = self.next_id;
                self.next_id += 1;
                let conn = self.flows.get_mut(idx);
                conn.release(&mut self.pool);
                *conn = Conn::new(id);
                self.flows.mark_open(idx);
                self.counters.flows_created += 1;
            }
        }
        let mut cx = Ctx {
            pool: &mut self.pool,
            cfg: &self.cfg,
            counters: &mut self.counters,
            out,
        };
        self.flows
            .get_mut(idx)
            .process(dir.index(), frame, ts, pkt, &mut cx);
        if tcp.flags.rst() || self.flows.get(idx).fin_both_ways() {
            self.flows.mark_done(idx);
        } else if tcp.flags.fin() {
            self.flows.mark_closed(idx);
        }
    }

    /// Expire idle and closed flows as of packet time `now`.
    pub fn tick(&mut self, now: Nanos) {
        let pool = &mut self.pool;
        let counters = &mut self.counters;
        self.flows.expire(now, |c, why| {
            c.release(pool);
            counters.count_removal(why);
        });
    }

    /// Forget every flow (e.g. between two unrelated capture files).
    pub fn reset_flows(&mut self) {
        let pool = &mut self.pool;
        self.flows.drain(|c| c.release(pool));
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Connections currently tracked.
    pub fn active_flows(&self) -> usize {
        self.flows.len()
    }

    /// Pending openers (segments and TSvals) held across all connections.
    pub fn pending(&self) -> usize {
        self.pool.in_use()
    }
}
