//! The engine: `process(frame, ts, segment)` per decoded TCP segment, `tick(ts)` for expiry.
//! Owns the flow table and the counters; the matching rules are in [`crate::rtt`], the limits
//! and counter fields in [`crate::config`].

use crate::Nanos;
use crate::Segment;
use crate::config::{Counters, EngineConfig};
use crate::flow::handshakes::{HandshakeCache, Opener};
use crate::flow::{Dir, FlowKey, FlowTable, Removal};
use crate::rtt::conn::{Conn, Ctx};
use crate::rtt::queue::Pool;
use crate::sample::Observer;

/// Count a flow leaving the table, by reason.
fn count_removal(counters: &mut Counters, why: Removal) {
    match why {
        Removal::Idle => counters.flows_expired_idle += 1,
        Removal::Closed => counters.flows_expired_closed += 1,
        Removal::Shed => {
            counters.flows_evicted_full += 1;
            counters.flows_shed_unconfirmed += 1;
        }
        Removal::Full => {
            counters.flows_evicted_full += 1;
            counters.flows_evicted_confirmed += 1;
        }
    }
}

/// Keep what a connection shed for room still awaits of its handshake: the SYN or SYN/ACK
/// whose ACK would make a handshake sample, in the handshake cache. Out of line: a flood's
/// path, not the common one.
#[cold]
#[inline(never)]
fn cache_handshakes(
    cache: &mut HandshakeCache,
    counters: &mut Counters,
    key: &FlowKey,
    conn: &Conn,
    pool: &Pool,
) {
    for dir in [Dir::Up, Dir::Down] {
        if let Some((ack, open, ambiguous)) = conn.handshake_awaiting_ack(dir.index(), pool) {
            // A SYN/ACK (or a SYN after the other side's) versus a connection's first SYN.
            let kind = if conn.dirs[dir.reverse().index()].syn_seen() {
                Opener::SynAck
            } else {
                Opener::Syn
            };
            counters.handshakes_overwritten += cache.insert(key, dir, kind, ack, open, ambiguous);
            counters.handshakes_cached += 1;
        }
    }
}

/// The RTT engine. Not thread-safe; one per packet source (or per shard).
pub struct Engine {
    cfg: EngineConfig,
    counters: Counters,
    flows: FlowTable<Conn>,
    pool: Pool,
    /// Handshake segments of connections shed before their ACK came.
    handshakes: HandshakeCache,
    next_id: u64,
    /// The packet time of the last [`Engine::tick`].
    last_tick: Option<Nanos>,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        let mut flows = FlowTable::new(cfg.max_flows);
        flows.set_timeouts(cfg.idle_timeout, cfg.closed_timeout, cfg.done_timeout);
        Engine {
            flows,
            handshakes: HandshakeCache::new(cfg.handshake_cache),
            pool: Pool::with_recent(cfg.max_recent_segments),
            cfg,
            counters: Counters::default(),
            next_id: 1,
            last_tick: None,
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Process one TCP segment captured at `ts` as record number `frame` (1-based).
    #[inline]
    pub fn process<O: Observer>(&mut self, frame: u64, ts: Nanos, seg: &Segment, out: &mut O) {
        self.counters.packets += 1;
        let (key, dir) = FlowKey::new(seg.src, seg.sport, seg.dst, seg.dport);
        let next_id = &mut self.next_id;
        let pool = &mut self.pool;
        let counters = &mut self.counters;
        let handshakes = &mut self.handshakes;
        let (idx, new) = self.flows.touch_or_insert(
            key,
            ts,
            || {
                let c = Conn::new(*next_id);
                *next_id += 1;
                c
            },
            |key, old, why| {
                if why == Removal::Shed && handshakes.enabled() {
                    cache_handshakes(handshakes, counters, key, old, pool);
                }
                old.release(pool);
                count_removal(counters, why);
            },
        );
        if new {
            self.counters.flows_created += 1;
            out.flow_started(self.flows.get(idx).id, frame);
            if !self.handshakes.is_empty() {
                self.resume_handshakes(idx, dir, seg);
            }
        } else if seg.flags.syn() && !seg.flags.ack() {
            // A SYN on known ports: the same connection's SYN again, or a new connection
            // reusing the ports (after a close, or after a start we never saw).
            let conn = self.flows.get(idx);
            if self.flows.is_closed(idx) || conn.syn_starts_new(dir.index(), seg.seq) {
                let id = self.next_id;
                self.next_id += 1;
                let conn = self.flows.get_mut(idx);
                conn.release(&mut self.pool);
                *conn = Conn::new(id);
                self.flows.mark_open(idx);
                self.counters.flows_created += 1;
                out.flow_started(id, frame);
            }
        }
        let mut cx = Ctx {
            pool: &mut self.pool,
            cfg: &self.cfg,
            counters: &mut self.counters,
            out,
        };
        // The slot is looked up once; the table's own calls below are each a no-op on most
        // packets, and are skipped then.
        let (conn, state) = self.flows.entry_mut(idx);
        conn.process(dir.index(), frame, ts, seg, &mut cx);
        let confirm = !state.confirmed && conn.confirmed();
        let done = seg.flags.rst() || conn.fin_both_ways();
        if confirm {
            let pool = &mut self.pool;
            let counters = &mut self.counters;
            self.flows.confirm(idx, |old, why| {
                old.release(pool);
                count_removal(counters, why);
            });
            self.counters.flows_confirmed += 1;
        }
        if done {
            if !state.done {
                self.flows.mark_done(idx);
            }
        } else if seg.flags.fin() && !state.closed {
            self.flows.mark_closed(idx);
        }
    }

    /// A new entry (`idx`) while the handshake cache holds something: this packet may
    /// acknowledge the other side's SYN or SYN/ACK of a connection shed meanwhile, or send
    /// its own SYN or SYN/ACK again. Either is put back into the new connection, whose
    /// rules then time the answer or count it ambiguous. Out of line: a flood's path, not
    /// the common one.
    #[cold]
    #[inline(never)]
    fn resume_handshakes(&mut self, idx: u32, dir: Dir, seg: &Segment) {
        let (key, _) = FlowKey::new(seg.src, seg.sport, seg.dst, seg.dport);
        let hs = &mut self.handshakes;
        let conn = self.flows.get_mut(idx);
        if seg.flags.ack() {
            let back = dir.reverse();
            let found = hs
                .take(&key, back, Opener::SynAck, seg.ack)
                .or_else(|| hs.take(&key, back, Opener::Syn, seg.ack));
            if let Some((open, ambiguous)) = found {
                conn.resume_handshake(back.index(), seg.ack, open, ambiguous, &mut self.pool);
                self.counters.handshakes_resumed += 1;
            }
        }
        if seg.flags.syn() {
            let kind = if seg.flags.ack() {
                Opener::SynAck
            } else {
                Opener::Syn
            };
            let end = seg.seq.wrapping_add(1);
            if let Some((open, ambiguous)) = hs.take(&key, dir, kind, end) {
                conn.resume_handshake(dir.index(), end, open, ambiguous, &mut self.pool);
                self.counters.handshakes_resumed += 1;
            }
        }
    }

    /// Expire idle and closed flows as of packet time `now`.
    pub fn tick(&mut self, now: Nanos) {
        self.last_tick = Some(now);
        let pool = &mut self.pool;
        let counters = &mut self.counters;
        self.flows.expire(now, |c, why| {
            c.release(pool);
            count_removal(counters, why);
        });
    }

    /// The end of a capture: every flow already past its timeout at the last tick is expired
    /// and counted, as a sweep of the whole table at that tick would. The sweep proper looks
    /// at a slice of the table a tick, so which of them it had reached depended on the
    /// table's size and layout, and `analyze --threads N` (one table a shard) counted other
    /// numbers than one thread. A flow past its timeout stays past it until a packet of its
    /// own (which expires it on the spot, in every layout): the count is the same however
    /// the flows were laid out, as long as packet times do not go backwards (a packet stamped
    /// before the tick that swept its flow in one layout continues it in another) and no
    /// flow was evicted for room (each shard's table holds its share of `max_flows`).
    pub fn close_books(&mut self) {
        let Some(now) = self.last_tick else {
            return;
        };
        let pool = &mut self.pool;
        let counters = &mut self.counters;
        self.flows.expire_all(now, |c, why| {
            c.release(pool);
            count_removal(counters, why);
        });
    }

    /// Forget every flow (e.g. between two unrelated capture files).
    pub fn reset_flows(&mut self) {
        let pool = &mut self.pool;
        self.flows.drain(|c| c.release(pool));
        self.handshakes.clear();
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
    use crate::sample::Sample;
    use crate::seq::SeqNum;
    use crate::wire::TcpFlags;
    use std::net::{IpAddr, Ipv4Addr};

    const SYN: u16 = TcpFlags::SYN;
    const ACK: u16 = TcpFlags::ACK;
    const RST: u16 = TcpFlags::RST;

    /// Client `c` (port 40000) and the server 10.0.0.1:443; `up` is client to server.
    fn pkt(c: u32, up: bool, flags: u16, seq: u32, ack: u32, len: u32) -> Segment {
        let (cl, sv) = (
            IpAddr::V4(Ipv4Addr::from(c)),
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
        );
        let (src, dst, sport, dport) = if up {
            (cl, sv, 40000, 443)
        } else {
            (sv, cl, 443, 40000)
        };
        Segment {
            src,
            dst,
            ip_id: 1,
            sport,
            dport,
            flags: TcpFlags(flags),
            seq: SeqNum::new(seq),
            ack: SeqNum::new(ack),
            payload_len: len,
            timestamp: None,
            dsack: None,
            first_fragment: false,
        }
    }

    /// Runs `pkts` (1 µs apart) through a fresh engine; its confirmed connections.
    fn confirmed_after(pkts: &[Segment]) -> u64 {
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

    /// Records what the engine reports: flows started, and each sample's flow id and frame.
    #[derive(Default)]
    struct Starts {
        started: Vec<(u64, u64)>,
        samples: Vec<(u64, u64)>,
    }

    impl Observer for Starts {
        fn sample(&mut self, s: &Sample) {
            self.samples.push((s.flow_id, s.frame));
        }
        fn flow_started(&mut self, id: u64, frame: u64) {
            self.started.push((id, frame));
        }
    }

    #[test]
    fn the_observer_hears_of_each_new_flow_before_its_samples() {
        let mut e = Engine::new(EngineConfig::default());
        let mut obs = Starts::default();
        let (a, b) = (0x0b00_0001, 0x0b00_0002);
        let pkts = [
            pkt(a, true, SYN, 1000, 0, 0),           // 1: new key, flow 1
            pkt(a, false, SYN | ACK, 5000, 1001, 0), // 2: sample of flow 1
            pkt(b, true, SYN, 3000, 0, 0),           // 3: new key, flow 2
            pkt(a, true, SYN, 1000, 0, 0),           // 4: the same SYN again: no new flow
            pkt(a, true, ACK, 1001, 5001, 0),        // 5: sample of flow 1
            pkt(a, true, SYN, 9000, 0, 0),           // 6: a new ISN on the same ports: flow 3
            pkt(a, false, SYN | ACK, 7000, 9001, 0), // 7: sample of flow 3
        ];
        for (i, p) in pkts.iter().enumerate() {
            let frame = i as u64 + 1;
            e.process(frame, i as i64 * 1000, p, &mut obs);
            // The announcement comes first: every sample's flow is already known.
            for &(id, _) in &obs.samples {
                assert!(obs.started.iter().any(|&(s, _)| s == id), "{id}");
            }
        }
        assert_eq!(obs.started, [(1, 1), (2, 3), (3, 6)]);
        assert_eq!(e.counters().flows_created, 3);
        assert_eq!(obs.samples, [(1, 2), (1, 5), (3, 7)]);
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
        let mut run = |e: &mut Engine, p: Segment, samples: &mut Vec<Sample>| {
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

    /// A far client's handshake: SYN and SYN/ACK, then `flood` spoofed SYNs (each answered)
    /// in a table of 100, then the client's final ACK (acknowledging `ack`), after a copy of
    /// the SYN/ACK if `resend`. The samples of the client (frame, open frame, RTT) and the
    /// counters.
    fn far_client(
        cache: usize,
        flood: u32,
        resend: bool,
        ack: u32,
    ) -> (Vec<(u64, u64, i64)>, Counters) {
        let mut e = Engine::new(EngineConfig {
            max_flows: 100,
            handshake_cache: cache,
            ..EngineConfig::default()
        });
        let c = 0xc612_0001;
        let mut samples = Vec::new();
        let mut frame = 0;
        let mut run = |e: &mut Engine, t: i64, p: Segment| {
            frame += 1;
            e.process(frame, t, &p, &mut |s: &Sample| {
                if s.responder.ip() == IpAddr::V4(Ipv4Addr::from(c)) {
                    samples.push((s.frame, s.open_frame, s.rtt));
                }
            });
        };
        run(&mut e, 1_000, pkt(c, true, SYN, 1000, 0, 0));
        run(&mut e, 31_000, pkt(c, false, SYN | ACK, 5000, 1001, 0));
        for n in 0..flood {
            let t = 40_000 + i64::from(n) * 1_000;
            run(&mut e, t, pkt(0x0b00_0000 + n, true, SYN, n, 0, 0));
            run(
                &mut e,
                t + 500,
                pkt(0x0b00_0000 + n, false, SYN | ACK, 7, n + 1, 0),
            );
        }
        if resend {
            run(&mut e, 1_031_000, pkt(c, false, SYN | ACK, 5000, 1001, 0));
        }
        run(&mut e, 1_500_031_000, pkt(c, true, ACK, 1001, ack, 0));
        (samples, e.counters().clone())
    }

    #[test]
    fn a_shed_handshake_is_timed_from_the_cache() {
        // The client's ACK 1.5 s after the SYN/ACK, its entry long shed: timed from the
        // cache, from the SYN/ACK's frame (2) and time, exactly.
        let (samples, c) = far_client(1 << 12, 1_000, false, 5001);
        assert_eq!(samples, [(2003, 2, 1_500_000_000)]);
        assert_eq!(c.flows_shed_unconfirmed, 1_002 - 100);
        assert_eq!(c.handshakes_cached, c.flows_shed_unconfirmed);
        assert_eq!(c.handshakes_resumed, 1);
        assert_eq!(c.samples[1], 1 + 1_000 + 1);
        // Without the cache, or with one too small to hold 1,000 SYN/ACKs: lost.
        let (samples, c) = far_client(0, 1_000, false, 5001);
        assert_eq!((samples.len(), c.handshakes_cached), (0, 0));
        let (samples, c) = far_client(64, 1_000, false, 5001);
        assert_eq!(samples.len(), 0);
        assert_eq!(c.handshakes_overwritten, c.handshakes_cached - 64);
        // An ACK of anything else is not the SYN/ACK's answer.
        let (samples, c) = far_client(1 << 12, 1_000, false, 5002);
        assert_eq!((samples.len(), c.handshakes_resumed), (0, 0));
        // The SYN/ACK sent again after its entry was shed: the ACK may answer either copy.
        let (samples, c) = far_client(1 << 12, 1_000, true, 5001);
        assert_eq!(samples.len(), 0);
        // (The copy takes the cached original back: a retransmission, as without a flood.)
        assert_eq!(
            (c.handshakes_resumed, c.ambiguous, c.retransmits),
            (1, 1, 1)
        );
        // A table that never sheds: the cache is never used (nor allocated).
        let (samples, c) = far_client(1 << 12, 10, false, 5001);
        assert_eq!(samples, [(23, 2, 1_500_000_000)]);
        assert_eq!(c.handshakes_cached, 0);
    }
}
