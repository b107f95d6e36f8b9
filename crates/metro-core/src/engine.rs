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
    /// Connections tracked at once. A new one beyond this sheds the oldest unconfirmed entry
    /// (half-open or one-sided); confirmed connections (a real two-way exchange) hold at
    /// most 3/4 of the table and are evicted, stalest first, only by each other. See
    /// [`crate::flow`].
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
    /// Connections that showed a real two-way exchange (and became protected from floods).
    pub flows_confirmed: u64,
    /// Flows removed to make room, of both kinds below (the sum).
    pub flows_evicted_full: u64,
    /// Of those, unconfirmed entries (half-open or one-sided) shed for a new entry.
    pub flows_shed_unconfirmed: u64,
    /// Of those, confirmed connections evicted because confirmed ones filled their share.
    pub flows_evicted_confirmed: u64,
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
            Removal::Shed => {
                self.flows_evicted_full += 1;
                self.flows_shed_unconfirmed += 1;
            }
            Removal::Full => {
                self.flows_evicted_full += 1;
                self.flows_evicted_confirmed += 1;
            }
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
        self.flows_confirmed += c.flows_confirmed;
        self.flows_evicted_full += c.flows_evicted_full;
        self.flows_shed_unconfirmed += c.flows_shed_unconfirmed;
        self.flows_evicted_confirmed += c.flows_evicted_confirmed;
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
        if !self.flows.is_confirmed(idx) && self.flows.get(idx).confirmed() {
            let pool = &mut self.pool;
            let counters = &mut self.counters;
            self.flows.confirm(idx, |old, why| {
                old.release(pool);
                counters.count_removal(why);
            });
            self.counters.flows_confirmed += 1;
        }
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

    /// Of those, confirmed ones (see [`crate::flow`]).
    pub fn confirmed_flows(&self) -> usize {
        self.flows.confirmed_len()
    }

    /// Pending openers (segments and TSvals) held across all connections.
    pub fn pending(&self) -> usize {
        self.pool.in_use()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{TcpFlags, TcpHeader};
    use std::net::{IpAddr, Ipv4Addr};

    const SYN: u16 = TcpFlags::SYN;
    const ACK: u16 = TcpFlags::ACK;
    const RST: u16 = TcpFlags::RST;

    /// Client `c` (port 40000) and the server 10.0.0.1:443; `up` is client to server.
    fn pkt(c: u32, up: bool, flags: u16, seq: u32, ack: u32, len: u32) -> Packet<'static> {
        let (cl, sv) = (
            IpAddr::V4(Ipv4Addr::from(c)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        );
        let (src, dst, sport, dport) = if up {
            (cl, sv, 40000, 443)
        } else {
            (sv, cl, 443, 40000)
        };
        Packet {
            src,
            dst,
            ip_id: 1,
            tcp: TcpHeader {
                sport,
                dport,
                seq,
                ack,
                flags: TcpFlags(flags),
                ..TcpHeader::default()
            },
            payload_len: len,
            payload: &[],
            tunnel_depth: 0,
            first_fragment: false,
        }
    }

    /// Runs `pkts` (1 µs apart) through a fresh engine; its confirmed connections.
    fn confirmed_after(pkts: &[Packet<'static>]) -> u64 {
        let mut e = Engine::new(EngineConfig::default());
        for (i, p) in pkts.iter().enumerate() {
            e.process(i as u64 + 1, i as i64 * 1000, p, &mut |_: &Sample| {});
        }
        assert_eq!(e.counters().flows_confirmed, e.confirmed_flows() as u64);
        e.counters().flows_confirmed
    }

    #[test]
    fn only_a_real_exchange_confirms_a_connection() {
        let c = 0x0b00_0001;
        // A spoofed SYN answered by the server (SYN/ACK, or RST): not confirmed, though the
        // answer acknowledges the SYN and even makes a handshake sample.
        let syn = pkt(c, true, SYN, 1000, 0, 0);
        let synack = pkt(c, false, SYN | ACK, 5000, 1001, 0);
        assert_eq!(confirmed_after(&[syn, synack]), 0);
        assert_eq!(
            confirmed_after(&[syn, pkt(c, false, RST | ACK, 0, 1001, 0)]),
            0
        );
        // Blind ACKs from the spoofed source, guessing the server's ISN: not confirmed.
        let blind = pkt(c, true, ACK, 1001, 77_777, 0);
        assert_eq!(confirmed_after(&[syn, synack, blind]), 0);
        let blind_data = pkt(c, true, ACK, 1001, 4000, 100);
        assert_eq!(confirmed_after(&[syn, synack, blind_data]), 0);
        // The handshake's final ACK (acknowledging the server's ISN): confirmed.
        let last = pkt(c, true, ACK, 1001, 5001, 0);
        assert_eq!(confirmed_after(&[syn, synack, last]), 1);
        // Without a handshake in the capture: data acknowledged by the other side.
        let data = pkt(c, true, ACK, 7000, 9000, 100);
        assert_eq!(confirmed_after(&[data]), 0);
        assert_eq!(
            confirmed_after(&[data, pkt(c, false, ACK, 9000, 7100, 0)]),
            1
        );
        // ... but not an ACK beyond anything sent.
        assert_eq!(
            confirmed_after(&[data, pkt(c, false, ACK, 9000, 7200, 0)]),
            0
        );
    }

    #[test]
    fn a_syn_flood_sheds_only_unconfirmed_entries() {
        // 20 established connections in a table of 100, then 10,000 spoofed SYNs (each
        // answered): every established connection stays, and goes on being timed.
        let mut e = Engine::new(EngineConfig {
            max_flows: 100,
            ..EngineConfig::default()
        });
        let mut samples = Vec::new();
        let mut frame = 0;
        let mut t = 0;
        let mut run = |e: &mut Engine, p: Packet<'static>, samples: &mut Vec<Sample>| {
            frame += 1;
            t += 1000;
            e.process(frame, t, &p, &mut |s: &Sample| samples.push(*s));
        };
        for c in 0..20 {
            run(&mut e, pkt(c, true, SYN, 1000, 0, 0), &mut samples);
            run(
                &mut e,
                pkt(c, false, SYN | ACK, 5000, 1001, 0),
                &mut samples,
            );
            run(&mut e, pkt(c, true, ACK, 1001, 5001, 0), &mut samples);
        }
        assert_eq!(e.confirmed_flows(), 20);
        for n in 0..10_000 {
            let c = 0x0b00_0000 + n;
            run(&mut e, pkt(c, true, SYN, n, 0, 0), &mut samples);
            run(
                &mut e,
                pkt(c, false, SYN | ACK, 5000, n + 1, 0),
                &mut samples,
            );
        }
        assert_eq!(e.confirmed_flows(), 20);
        assert_eq!(e.active_flows(), 100);
        assert_eq!(e.counters().flows_shed_unconfirmed, 10_000 - 80);
        assert_eq!(e.counters().flows_evicted_confirmed, 0);
        samples.clear();
        for c in 0..20 {
            run(&mut e, pkt(c, true, ACK, 1001, 5001, 100), &mut samples);
            run(&mut e, pkt(c, false, ACK, 5001, 1101, 0), &mut samples);
        }
        assert_eq!(samples.len(), 20, "each connection's data is timed");
    }
}
