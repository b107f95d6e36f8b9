//! Per-connection RTT state and the matching rules, one direction at a time.
//!
//! `seq` and `handshake`: a direction records each segment that extends the highest byte
//! sent (`right`) as pending under its end sequence number; an ACK from the other side that
//! moves the cumulative acknowledgement forward pops every pending segment it covers and
//! closes a sample from the one ending exactly at the ACK (Wireshark's `ack_rtt`).
//! Ambiguity follows Karn and Dart: a segment that starts below `right` (retransmission or
//! reordering) makes every pending segment ending beyond its start ambiguous (their bytes
//! went twice, or their cumulative ACK may be caused by it); an ACK that lands on an
//! ambiguous segment is counted, not timed. A gap (a segment starting beyond `right`, e.g. capture
//! loss) keeps the segments before it: their ACKs are still unambiguous.
//!
//! `ts`: pping's rules. A packet that occupies sequence space records its TSval the first
//! time it is seen and only if it is newer (serial) than the last recorded one; a packet in
//! the other direction whose TSecr equals a recorded TSval closes a sample; older entries are
//! dropped on the way, entries expire after `tsval_max_age`. Pure ACKs never open.

use std::net::SocketAddr;

use super::queue::{NIL, Pending, Pool, Queue};
use super::{Kind, Sample};
use crate::Nanos;
use crate::engine::{Counters, EngineConfig, NO_TAG, Observer};
use crate::seq::{gt, le, lt};
use crate::wire::Packet;

const INIT: u8 = 1;
const SYN_SEEN: u8 = 2;
const ACKED: u8 = 4;
/// This direction has sent a FIN.
const FIN_SEEN: u8 = 8;
const TS_SEEN: u8 = 16;
const LAST: u8 = 32;
/// A keep-alive awaits its answer (its time and frame are in the pool node `ka`).
const KA: u8 = 64;
/// The keep-alive was sent again before an answer: the answer is ambiguous.
const KA_AGAIN: u8 = 128;

/// What one direction of a connection has sent, and what the other side acknowledged of it.
#[derive(Clone, Copy, Debug)]
pub struct DirState {
    flags: u8,
    /// ISN, valid with SYN_SEEN.
    isn: u32,
    /// One past the highest sequence number sent.
    right: u32,
    /// Highest cumulative ACK received for this direction's data (valid with ACKED).
    acked: u32,
    segs: Queue,
    /// Newest TSval recorded (valid with TS_SEEN).
    ts_last: u32,
    tsvals: Queue,
    ka: u32,
    // The previous frame in this direction, to recognise a frame captured twice: its time,
    // sequence number, and a fingerprint of its IP ID, ACK, length and flags.
    last_ts: Nanos,
    last_seq: u32,
    last_fp: u32,
}

impl Default for DirState {
    fn default() -> Self {
        DirState {
            flags: 0,
            isn: 0,
            right: 0,
            acked: 0,
            segs: Queue::new(),
            ts_last: 0,
            tsvals: Queue::new(),
            ka: NIL,
            last_ts: 0,
            last_seq: 0,
            last_fp: 0,
        }
    }
}

/// A fingerprint of the fields that, with the sequence number, tell a frame captured twice.
#[inline]
fn fingerprint(ip_id: u16, ack: u32, len: u32, flags: u16) -> u32 {
    let x = (u64::from(ip_id) << 48 | u64::from(flags) << 32 | u64::from(ack))
        ^ u64::from(len).rotate_left(17);
    let h = x.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (h >> 32) as u32
}

impl DirState {
    #[inline]
    fn has(&self, f: u8) -> bool {
        self.flags & f != 0
    }

    fn release(&mut self, pool: &mut Pool) {
        self.segs.clear(pool);
        self.tsvals.clear(pool);
        self.drop_keepalive(pool);
    }

    fn drop_keepalive(&mut self, pool: &mut Pool) {
        if self.ka != NIL {
            pool.take(self.ka);
            self.ka = NIL;
        }
        self.flags &= !(KA | KA_AGAIN);
    }

    /// True if this direction has sent a SYN.
    pub fn syn_seen(&self) -> bool {
        self.has(SYN_SEEN)
    }

    pub fn isn(&self) -> Option<u32> {
        self.has(SYN_SEEN).then_some(self.isn)
    }

    /// True once this direction has sent anything that occupies sequence space.
    pub fn initialised(&self) -> bool {
        self.has(INIT)
    }
}

/// Per-connection state: one [`DirState`] per direction, indexed by [`crate::flow::Dir`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Conn {
    pub id: u64,
    pub dirs: [DirState; 2],
    /// The observer's tags, by the responder's direction (see [`Observer::sample_tagged`]).
    tags: [u32; 2],
}

/// Everything the matcher needs besides the connection: shared pool, limits, counters and
/// where samples go.
pub struct Ctx<'a, O: Observer> {
    pub pool: &'a mut Pool,
    pub cfg: &'a EngineConfig,
    pub counters: &'a mut Counters,
    pub out: &'a mut O,
}

impl Conn {
    pub fn new(id: u64) -> Conn {
        Conn {
            id,
            dirs: [DirState::default(); 2],
            tags: [NO_TAG; 2],
        }
    }

    /// Return all pending nodes to the pool.
    pub fn release(&mut self, pool: &mut Pool) {
        for d in &mut self.dirs {
            d.release(pool);
        }
    }

    /// Both directions have sent a FIN.
    pub fn fin_both_ways(&self) -> bool {
        self.dirs[0].has(FIN_SEEN) && self.dirs[1].has(FIN_SEEN)
    }

    /// Whether the connection has shown a real two-way exchange, which a flood from spoofed
    /// sources cannot fake: both sides' SYNs acknowledged (the handshake's final ACK), or
    /// something one side sent beyond a bare SYN (data, FIN, or anything of a connection
    /// seen without its SYN) acknowledged by the other, with an ACK within what it sent. A
    /// SYN answered by a SYN/ACK or RST alone is not enough: a server answers any SYN.
    pub fn confirmed(&self) -> bool {
        // Acknowledged within what the direction sent: past its ISN, at most its highest byte.
        let valid = |d: &DirState| {
            d.has(ACKED) && le(d.acked, d.right) && (!d.has(SYN_SEEN) || gt(d.acked, d.isn))
        };
        let beyond_syn =
            |d: &DirState| valid(d) && !(d.has(SYN_SEEN) && d.acked == d.isn.wrapping_add(1));
        let [a, b] = &self.dirs;
        (a.has(SYN_SEEN) && b.has(SYN_SEEN) && valid(a) && valid(b))
            || beyond_syn(a)
            || beyond_syn(b)
    }

    /// Whether a SYN (without ACK) from direction `d` starts a new connection on these ports
    /// rather than continuing (or retransmitting the SYN of) this one.
    pub fn syn_starts_new(&self, d: usize, seq: u32) -> bool {
        let s = &self.dirs[d];
        (s.has(SYN_SEEN) && s.isn != seq) || (s.has(INIT) && !s.has(SYN_SEEN))
    }

    /// Process one segment travelling in direction `d` (0 or 1).
    #[inline]
    pub fn process<O: Observer>(
        &mut self,
        d: usize,
        frame: u64,
        ts: Nanos,
        pkt: &Packet<'_>,
        cx: &mut Ctx<'_, O>,
    ) {
        let tcp = &pkt.tcp;
        let len = pkt.payload_len;
        let [a, b] = &mut self.dirs;
        let tag = &mut self.tags[d];
        let (snd, rcv) = if d == 0 { (a, b) } else { (b, a) };

        let flags = tcp.flags;
        let occupies = !flags.rst() && (len > 0 || flags.syn() || flags.fin());

        // A frame captured twice (span ports, capture hardware): skip the copy entirely so
        // it does not look like a retransmission. Without an IP ID to compare (IPv6, or a
        // stack that sends ID 0) only a much shorter interval counts. Only segments that
        // occupy sequence space matter: a second copy of a pure ACK changes nothing, and
        // back-to-back duplicate ACKs are legitimately alike.
        let fp = fingerprint(pkt.ip_id, tcp.ack, len, tcp.flags.0);
        if occupies && snd.has(LAST) && snd.last_seq == tcp.seq && snd.last_fp == fp {
            let dt = ts - snd.last_ts;
            let window = if pkt.ip_id != 0 {
                cx.cfg.duplicate_window
            } else {
                cx.cfg.duplicate_window / 20
            };
            if (0..=window).contains(&dt) {
                cx.counters.duplicates += 1;
                return;
            }
        }
        snd.flags |= LAST;
        snd.last_ts = ts;
        snd.last_seq = tcp.seq;
        snd.last_fp = fp;

        // Built only when needed (most packets emit nothing).
        let responder = || SocketAddr::new(pkt.src, tcp.sport);
        let peer = || SocketAddr::new(pkt.dst, tcp.dport);
        let id = self.id;
        // A first fragment reaches the receiver only with the last fragment, which the
        // capture shows without a TCP header: its time is not the segment's time.
        let timed = !pkt.first_fragment;
        let mut emit = |cx: &mut Ctx<'_, O>, kind: Kind, open: Pending| {
            if !timed {
                cx.counters.ambiguous += 1;
                return;
            }
            let rtt = ts - open.ts;
            if rtt <= 0 {
                cx.counters.non_positive += 1;
                return;
            }
            if rtt > cx.cfg.max_rtt {
                cx.counters.implausible += 1;
                return;
            }
            cx.counters.samples[kind.index()] += 1;
            if cx.cfg.kinds.contains(kind) {
                cx.out.sample_tagged(
                    &Sample {
                        kind,
                        frame,
                        open_frame: open.frame,
                        ts,
                        rtt,
                        responder: responder(),
                        peer: peer(),
                        flow_id: id,
                    },
                    tag,
                );
            }
        };

        // --- ACK: close a seq/handshake sample on the other direction's data.
        if flags.ack() && rcv.has(INIT) {
            let ack = tcp.ack;
            if !rcv.has(ACKED) || gt(ack, rcv.acked) {
                rcv.flags |= ACKED;
                rcv.acked = ack;
                rcv.drop_keepalive(cx.pool);
                while let Some(front) = rcv.segs.front(cx.pool) {
                    if !le(front.key, ack) {
                        break;
                    }
                    rcv.segs.pop_front(cx.pool);
                    if front.key == ack {
                        if front.ambiguous {
                            cx.counters.ambiguous += 1;
                        } else {
                            let kind = if front.handshake {
                                Kind::Handshake
                            } else {
                                Kind::Seq
                            };
                            emit(cx, kind, front);
                        }
                    }
                }
            } else if rcv.has(KA) && ack == rcv.right {
                // The answer to a keep-alive: its one old byte ends at `right`.
                let again = rcv.has(KA_AGAIN);
                rcv.flags &= !(KA | KA_AGAIN);
                let open = cx.pool.take(rcv.ka);
                rcv.ka = NIL;
                if again {
                    cx.counters.ambiguous += 1;
                } else {
                    emit(cx, Kind::Seq, open);
                }
            }
        }

        if flags.fin() && !flags.rst() {
            snd.flags |= FIN_SEEN;
        }

        // --- Sequence space: record what this direction sends.
        if occupies {
            let start = tcp.seq;
            let end = start
                .wrapping_add(len)
                .wrapping_add(flags.syn() as u32)
                .wrapping_add(flags.fin() as u32);
            let mut record = true;
            if flags.syn() {
                if snd.has(SYN_SEEN) && start == snd.isn {
                    // A retransmitted SYN or SYN/ACK: the handshake sample is ambiguous.
                    record = false;
                    Self::retransmitted(snd, start, responder(), peer(), ts, cx);
                } else {
                    if !flags.ack() && rcv.has(SYN_SEEN) {
                        // A SYN captured after the other side's SYN (reordered capture, or
                        // simultaneous open): what that side sent cannot be timed reliably.
                        rcv.segs.mark_ambiguous(cx.pool, None);
                    }
                    snd.segs.clear(cx.pool);
                    snd.drop_keepalive(cx.pool);
                    snd.flags = (snd.flags | INIT | SYN_SEEN) & !ACKED;
                    snd.isn = start;
                    snd.right = end;
                }
            } else if !snd.has(INIT) {
                snd.flags |= INIT;
                snd.right = end;
            } else if !lt(start, snd.right) {
                // In order, or after a gap: extend.
                snd.right = end;
                snd.drop_keepalive(cx.pool);
            } else if len <= 1
                && !flags.fin()
                && start == snd.right.wrapping_sub(1)
                && snd.has(ACKED)
                && snd.acked == snd.right
            {
                // A keep-alive: one old byte re-sent with everything acknowledged. Its
                // answer (an ACK of `right`) is timed from it, unless it was sent twice.
                record = false;
                if snd.has(KA) {
                    snd.flags |= KA_AGAIN;
                } else {
                    snd.flags |= KA;
                    snd.ka = cx.pool.put(Pending {
                        key: snd.right,
                        handshake: false,
                        ambiguous: false,
                        ts,
                        frame,
                    });
                }
            } else {
                // Retransmission or reordering: nothing in flight can be timed.
                Self::retransmitted(snd, start, responder(), peer(), ts, cx);
                record = gt(end, snd.right);
                if record {
                    snd.right = end;
                }
            }
            if record && timed {
                if snd.segs.len() >= cx.cfg.max_pending_segments {
                    snd.segs.pop_front(cx.pool);
                    cx.counters.segments_evicted += 1;
                }
                snd.segs.push_back(
                    cx.pool,
                    Pending {
                        key: end,
                        handshake: flags.syn(),
                        ambiguous: false,
                        ts,
                        frame,
                    },
                );
            }
        }

        // --- Timestamp echo.
        if cx.cfg.kinds.contains(Kind::Ts)
            && let Some((tsval, tsecr)) = tcp.options.timestamp
        {
            if flags.ack() && tsecr != 0 {
                while let Some(front) = rcv.tsvals.front(cx.pool) {
                    if !le(front.key, tsecr) {
                        break;
                    }
                    rcv.tsvals.pop_front(cx.pool);
                    if front.key == tsecr {
                        emit(cx, Kind::Ts, front);
                    }
                }
            }
            if occupies && timed && tsval != 0 && (!snd.has(TS_SEEN) || gt(tsval, snd.ts_last)) {
                while let Some(front) = snd.tsvals.front(cx.pool) {
                    if ts - front.ts <= cx.cfg.tsval_max_age {
                        break;
                    }
                    snd.tsvals.pop_front(cx.pool);
                    cx.counters.tsvals_expired += 1;
                }
                if snd.tsvals.len() >= cx.cfg.max_pending_tsvals {
                    snd.tsvals.pop_front(cx.pool);
                    cx.counters.tsvals_evicted += 1;
                }
                snd.flags |= TS_SEEN;
                snd.ts_last = tsval;
                snd.tsvals.push_back(
                    cx.pool,
                    Pending {
                        key: tsval,
                        handshake: false,
                        ambiguous: false,
                        ts,
                        frame,
                    },
                );
            }
        }
    }

    /// A segment starting at `start`, below the highest byte sent: a retransmission or a
    /// reordering. Every pending segment ending beyond `start` is ambiguous: its bytes were
    /// sent twice, or its cumulative ACK may be caused by this segment's arrival (Karn; Dart's
    /// collapse). Segments ending at or before `start` keep their timing: this segment cannot
    /// complete an ACK at or below its own start.
    fn retransmitted<O: Observer>(
        snd: &mut DirState,
        start: u32,
        sender: SocketAddr,
        receiver: SocketAddr,
        ts: Nanos,
        cx: &mut Ctx<'_, O>,
    ) {
        snd.segs.mark_ambiguous(cx.pool, Some(start));
        cx.counters.retransmits += 1;
        cx.out.retransmit(sender, receiver, ts);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_connection_state_stays_small() {
        // 1M connections must fit in 300 MB with the table's own overhead.
        assert!(
            std::mem::size_of::<Conn>() <= 144,
            "{}",
            std::mem::size_of::<Conn>()
        );
    }
}
