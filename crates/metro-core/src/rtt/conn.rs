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
//! loss) keeps the segments before it: their ACKs are still unambiguous. A segment that fills
//! a gap and whose IP ID proves it was sent once, before the segment beyond the gap (a late
//! original, [`Conn::late_original`]), times the first ACK that covers it.
//!
//! `ts`: pping's rules. A packet that occupies sequence space records its TSval the first
//! time it is seen and only if it is newer (serial) than the last recorded one; a packet in
//! the other direction whose TSecr equals a recorded TSval closes a sample; older entries are
//! dropped on the way, entries expire after `tsval_max_age`. Pure ACKs never open.

use std::net::SocketAddr;

use super::queue::{NIL, Pending, Pool, Queue, Ring};
use crate::Nanos;
use crate::Segment;
use crate::config::{CopyEvidence, Counters, EngineConfig, TimedBy};
use crate::sample::{Found, Kind, NO_TAG, Observer};
use crate::seq::{SeqNum, SeqSpace, TsClock, TsVal};

// `DirState::flags`: what this direction has shown, and what its `slot` holds.
/// This direction has sent something that occupies sequence space: `right` is valid.
const SEQ_KNOWN: u8 = 1;
/// This direction has sent a SYN: `isn` is valid.
const SYN_SEEN: u8 = 2;
/// The other side has acknowledged some of this direction's data: `acked` is valid.
const ACK_KNOWN: u8 = 4;
/// This direction has sent a FIN.
const FIN_SEEN: u8 = 8;
/// This direction has sent a TSval: `ts_last` is valid.
const TSVAL_SEEN: u8 = 16;
/// The slot holds the last retransmission (its start in the node's word), see [`HeldRetx`].
const RETX_HELD: u8 = 32;
/// A keep-alive awaits its answer (its time and frame are in the slot).
const KEEPALIVE_PENDING: u8 = 64;
/// The keep-alive was sent again before an answer: the answer is ambiguous.
const KEEPALIVE_RESENT: u8 = 128;

// `DirState::ip_id_flags`: what the sender's IP IDs say about copies versus retransmissions.
/// `last_ip_id` holds the IP ID of an earlier frame.
const IP_ID_SEEN: u8 = 1;
/// Two frames of this direction carried different (non-zero) IP IDs: the sender gives each
/// packet its own, so a retransmission would carry a new one.
const IP_ID_VARIES: u8 = 2;
// `DirState::ip_id_flags` also holds, for want of room in `flags` (a connection must stay
// within 144 bytes):
/// The retransmission in the slot started at or below the highest ACK seen when it was sent
/// (the receiver's echo takes its TSval on arrival). Set with RETX_HELD, and kept without it
/// once the retransmission is answered, for the ACKs of the segments behind it (see
/// [`Conn::sent_before_rx`]).
const RETX_AT_LEFT_EDGE: u8 = 4;
/// A data frame's IP ID went back from the previous one by more than [`LATE_ID_WINDOW`]
/// (serial order): the sender's IDs do not count up per packet (random IDs, say), so an
/// older ID proves nothing. Sticky.
const IP_ID_ERRATIC: u8 = 8;
/// The retransmission in the slot (RETX_HELD) is a late original: sent once, before the
/// segment captured ahead of it, as its IP ID proves ([`Conn::late_original`]).
const RETX_LATE_ORIGINAL: u8 = 16;
/// The slot holds the newest gap in what this direction sent, see [`Conn::note_gap`]: its
/// end (the key), its start (the node's word), and the frame, time, TSval and IP ID (in
/// `fp`) of the segment captured beyond it.
const GAP_HELD: u8 = 32;
/// How far back (IP IDs, serial order) a late original may be from the segment captured
/// beyond the gap it fills, and the largest step back between two data frames of a sender
/// whose IDs count up: a bounded window, so that a wrapped 16-bit counter (or a random ID)
/// is not taken for an older one.
const LATE_ID_WINDOW: u16 = 16;

/// What one direction of a connection has sent, and what the other side acknowledged of it.
#[derive(Clone, Copy, Debug)]
pub struct DirState {
    /// `SEQ_KNOWN`, `SYN_SEEN`, ... (the constants above).
    flags: u8,
    /// `IP_ID_SEEN`, `IP_ID_VARIES`, ...
    ip_id_flags: u8,
    /// IP ID of the last frame of this direction that was not a copy (valid with IP_ID_SEEN).
    last_ip_id: u16,
    /// ISN, valid with SYN_SEEN.
    isn: SeqNum,
    /// One past the highest sequence number sent.
    right: SeqNum,
    /// Highest cumulative ACK received for this direction's data (valid with ACK_KNOWN).
    acked: SeqNum,
    segs: Queue,
    /// Segments acknowledged within the last `duplicate_window_wide`, the newest
    /// `max_recent_segments`: a late copy of one of them (a mirror port's second copy, after
    /// the ACK) must still be recognised.
    done: Ring,
    /// Newest TSval recorded (valid with TSVAL_SEEN).
    ts_last: TsVal,
    /// The last TSecr the other side sent (an echo of this direction's TSvals; 0: none).
    echoed: TsVal,
    tsvals: Queue<TsClock>,
    /// Pool node of the keep-alive awaiting its answer (KEEPALIVE_PENDING), or of the last
    /// retransmission (RETX_HELD), or NIL.
    slot: u32,
}

impl Default for DirState {
    fn default() -> Self {
        DirState {
            flags: 0,
            ip_id_flags: 0,
            last_ip_id: 0,
            isn: SeqNum::ZERO,
            right: SeqNum::ZERO,
            acked: SeqNum::ZERO,
            segs: Queue::new(),
            done: Ring::new(),
            ts_last: TsVal::ZERO,
            echoed: TsVal::ZERO,
            tsvals: Queue::new(),
            slot: NIL,
        }
    }
}

/// A fingerprint of the fields that, with the segment's end, tell a frame captured twice:
/// a copy repeats every one of them, a retransmission differs in the IP ID (on every common
/// stack) or the TSval (once the sender's clock has ticked).
#[inline]
pub fn fingerprint(
    ip_id: u16,
    ack: SeqNum,
    len: u32,
    flags: u16,
    tsval: TsVal,
    tsecr: TsVal,
) -> u32 {
    let mixed = (u64::from(ip_id) << 48 | u64::from(flags) << 32 | u64::from(ack.get()))
        ^ (u64::from(tsval.get()) << 32 | u64::from(tsecr.get())).rotate_left(23)
        ^ u64::from(len).rotate_left(17);
    let hash = mixed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    (hash >> 32) as u32
}

/// The last retransmission of a direction, kept until the ACK that covers it: which copy
/// the ACKs answer may still be told (docs/accuracy.md).
#[derive(Clone, Copy)]
struct HeldRetx {
    /// The retransmission (key: its end; ts, frame, tsval).
    seg: Pending,
    start: SeqNum,
}

/// One segment as the steps of [`Conn::process`] see it: the segment, when and in which
/// frame it was captured, its connection's id, and what follows from its header.
struct Arrival<'s> {
    seg: &'s Segment,
    frame: u64,
    ts: Nanos,
    /// The connection's id, for the samples it closes.
    id: u64,
    /// It occupies sequence space (data, SYN or FIN, and not a RST): only such a segment is
    /// recorded, compared with recorded ones, or opens a ts sample.
    occupies: bool,
    start: SeqNum,
    /// One past its last sequence number (SYN and FIN count one each).
    end: SeqNum,
    tsval: TsVal,
    tsecr: TsVal,
    /// Its [`fingerprint`] if it occupies sequence space (0 otherwise).
    fp: u32,
    /// Not a first fragment: a first fragment reaches the receiver only with the last
    /// fragment, which the capture shows without a TCP header, so its time is not the
    /// segment's time.
    timed: bool,
}

impl<'s> Arrival<'s> {
    #[inline(always)]
    fn new(seg: &'s Segment, frame: u64, ts: Nanos, id: u64) -> Arrival<'s> {
        let len = seg.payload_len;
        let flags = seg.flags;
        let occupies = !flags.rst() && (len > 0 || flags.syn() || flags.fin());
        let start = seg.seq;
        let end = start
            .wrapping_add(len)
            .wrapping_add(flags.syn() as u32)
            .wrapping_add(flags.fin() as u32);
        let (tsval, tsecr) = seg.timestamp.unwrap_or((TsVal::ZERO, TsVal::ZERO));
        let fp = if occupies {
            fingerprint(seg.ip_id, seg.ack, len, flags.0, tsval, tsecr)
        } else {
            0
        };
        Arrival {
            seg,
            frame,
            ts,
            id,
            occupies,
            start,
            end,
            tsval,
            tsecr,
            fp,
            timed: !seg.first_fragment,
        }
    }

    /// Close a sample opened at `open` by this segment (see [`Conn::emit`]); true if it
    /// counted. A call, not a closure: a closure's captures were gathered on every packet,
    /// though most packets emit nothing.
    #[inline(always)]
    fn emit<O: Observer>(
        &self,
        cx: &mut Ctx<'_, O>,
        kind: Kind,
        open: (Nanos, u64),
        tag: &mut u32,
    ) -> bool {
        Conn::emit(cx, kind, open, self.seg, self.id, self.frame, self.ts, tag)
    }
}

impl DirState {
    #[inline]
    fn has(&self, flag: u8) -> bool {
        self.flags & flag != 0
    }

    fn release(&mut self, pool: &mut Pool) {
        self.segs.clear(pool);
        self.done.clear(pool);
        self.tsvals.clear(pool);
        self.drop_slot(pool);
    }

    /// Forget the keep-alive or retransmission in the slot.
    fn drop_slot(&mut self, pool: &mut Pool) {
        if self.slot != NIL {
            pool.take(self.slot);
            self.slot = NIL;
        }
        self.flags &= !(KEEPALIVE_PENDING | KEEPALIVE_RESENT | RETX_HELD);
        self.ip_id_flags &= !(RETX_AT_LEFT_EDGE | RETX_LATE_ORIGINAL | GAP_HELD);
    }

    /// Forget the retransmission in the slot, once answered, but keep it with the
    /// acknowledged segments (ambiguous: its bytes went twice) so a late copy of it is still
    /// recognised.
    fn retire_rx(&mut self, pool: &mut Pool, keep: bool) {
        if keep && self.has(RETX_HELD) {
            let (seg, _) = pool.take(self.slot);
            self.slot = NIL;
            self.flags &= !RETX_HELD;
            self.ip_id_flags &= !(RETX_AT_LEFT_EDGE | RETX_LATE_ORIGINAL);
            self.done.push_back(
                pool,
                Pending {
                    ambiguous: true,
                    ..seg
                },
            );
        } else {
            self.drop_slot(pool);
        }
    }

    #[inline(always)]
    fn drop_keepalive(&mut self, pool: &mut Pool) {
        if self.has(KEEPALIVE_PENDING) {
            self.drop_slot(pool);
        }
    }

    #[inline(always)]
    fn held_retx(&self, pool: &Pool) -> Option<HeldRetx> {
        self.has(RETX_HELD).then(|| {
            let (seg, start) = pool.peek(self.slot);
            HeldRetx {
                seg,
                start: SeqNum::new(start),
            }
        })
    }

    /// The recorded frame this one would be a copy of: same end, same fingerprint.
    fn original_of(&self, pool: &Pool, end: SeqNum, fp: u32) -> Option<Pending> {
        if let Some(found) = self.segs.find(pool, end, fp) {
            return Some(found);
        }
        if let Some(found) = self.done.find(pool, end, fp) {
            return Some(found);
        }
        if self.slot != NIL && self.ip_id_flags & GAP_HELD == 0 {
            let (found, _) = pool.peek(self.slot);
            if found.key == end && found.fp == fp {
                return Some(found);
            }
        }
        None
    }

    /// True if this direction has sent a SYN.
    pub fn syn_seen(&self) -> bool {
        self.has(SYN_SEEN)
    }

    pub fn isn(&self) -> Option<SeqNum> {
        self.has(SYN_SEEN).then_some(self.isn)
    }

    /// True once this direction has sent anything that occupies sequence space.
    pub fn initialised(&self) -> bool {
        self.has(SEQ_KNOWN)
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
        let valid = |side: &DirState| {
            side.has(ACK_KNOWN)
                && side.acked.le(side.right)
                && (!side.has(SYN_SEEN) || side.acked.gt(side.isn))
        };
        let beyond_syn = |side: &DirState| {
            valid(side) && !(side.has(SYN_SEEN) && side.acked == side.isn.wrapping_add(1))
        };
        let [one, other] = &self.dirs;
        (one.has(SYN_SEEN) && other.has(SYN_SEEN) && valid(one) && valid(other))
            || beyond_syn(one)
            || beyond_syn(other)
    }

    /// Whether a SYN (without ACK) from direction `dir` starts a new connection on these ports
    /// rather than continuing (or retransmitting the SYN of) this one.
    pub fn syn_starts_new(&self, dir: usize, seq: SeqNum) -> bool {
        let side = &self.dirs[dir];
        (side.has(SYN_SEEN) && side.isn != seq) || (side.has(SEQ_KNOWN) && !side.has(SYN_SEEN))
    }

    /// The SYN or SYN/ACK that direction `dir` sent and that still awaits its ACK: the ACK
    /// number that answers it, when and in which frame it was seen, and whether its answer
    /// is ambiguous (it was sent more than once). What the handshake cache keeps of a
    /// connection shed before the answer came.
    pub fn handshake_awaiting_ack(
        &self,
        dir: usize,
        pool: &Pool,
    ) -> Option<(SeqNum, (Nanos, u64), bool)> {
        let side = &self.dirs[dir];
        if !side.has(SYN_SEEN) || side.has(ACK_KNOWN) {
            return None;
        }
        let front = side.segs.front(pool)?;
        (front.handshake && front.key == side.isn.wrapping_add(1))
            .then(|| (front.key, front.seen(), front.ambiguous))
    }

    /// Put back, into this new connection, the SYN or SYN/ACK (ending at `end`, seen at
    /// `open`) that direction `dir` sent before the connection was shed, as if it had been
    /// recorded here: its ACK makes the handshake sample, and a copy sent again is a
    /// retransmission, all by the rules of [`Conn::process`].
    pub fn resume_handshake(
        &mut self,
        dir: usize,
        end: SeqNum,
        (ts, frame): (Nanos, u64),
        ambiguous: bool,
        pool: &mut Pool,
    ) {
        let side = &mut self.dirs[dir];
        if side.has(SEQ_KNOWN) {
            return;
        }
        side.flags |= SEQ_KNOWN | SYN_SEEN;
        side.isn = end.wrapping_sub(1);
        side.right = end;
        side.segs.push_back(
            pool,
            Pending {
                key: end,
                handshake: true,
                ambiguous,
                ts,
                frame,
                tsval: TsVal::ZERO,
                fp: 0,
            },
        );
    }

    /// Process one segment travelling in direction `dir` (0 or 1), in five steps: skip a
    /// frame captured twice ([`Conn::is_copy`]), close what the segment's ACK answers
    /// ([`Conn::on_ack`]), record what it sends ([`Conn::on_send`]), follow the sender's IP
    /// IDs, then match its timestamps ([`Conn::on_timestamps`]). The steps are inlined into this
    /// one function: the hot path stays one body, as fast as when it was written as one.
    #[inline]
    pub fn process<O: Observer>(
        &mut self,
        dir: usize,
        frame: u64,
        ts: Nanos,
        seg: &Segment,
        cx: &mut Ctx<'_, O>,
    ) {
        let [dir0, dir1] = &mut self.dirs;
        let tag = &mut self.tags[dir];
        // The sending direction (this segment's) and the receiving one (its ACK's).
        let (snd, rcv) = if dir == 0 { (dir0, dir1) } else { (dir1, dir0) };
        let a = Arrival::new(seg, frame, ts, self.id);

        if a.occupies && Self::is_copy(snd, &a, cx) {
            return;
        }
        if seg.flags.ack() && rcv.has(SEQ_KNOWN) {
            Self::on_ack(rcv, &a, tag, cx);
        }
        if seg.flags.fin() && !seg.flags.rst() {
            snd.flags |= FIN_SEEN;
        }
        if a.occupies {
            Self::on_send(snd, rcv, &a, cx);
            // Data segments are enough to see whether the sender numbers its packets (after
            // `on_send`, which compares this segment's ID with the ones before it).
            if seg.ip_id != 0 {
                if snd.ip_id_flags & IP_ID_SEEN != 0 && snd.last_ip_id != seg.ip_id {
                    // Back further than a reordering would go (more than LATE_ID_WINDOW, at
                    // most half the ID space): IDs that do not count up.
                    let back = snd.last_ip_id.wrapping_sub(seg.ip_id);
                    let erratic = back.wrapping_sub(LATE_ID_WINDOW + 1) < 0x8000 - LATE_ID_WINDOW;
                    snd.ip_id_flags |= IP_ID_VARIES | if erratic { IP_ID_ERRATIC } else { 0 };
                }
                snd.ip_id_flags |= IP_ID_SEEN;
                snd.last_ip_id = seg.ip_id;
            }
        }
        if a.tsecr != TsVal::ZERO {
            rcv.echoed = a.tsecr;
        }
        Self::on_timestamps(snd, rcv, &a, tag, cx);
    }

    /// A frame captured twice (span ports, taps, `any` captures): skip the copy entirely so
    /// it does not look like a retransmission. Only a segment below the highest byte sent
    /// can be one, and only if a recorded frame matches it field for field. Close copies are
    /// always duplicates (a twentieth of the window without an IP ID); distant ones only on
    /// evidence that a retransmission would differ (docs/accuracy.md). Pure ACKs never
    /// count (the caller asks only for segments that occupy sequence space): a second copy
    /// changes nothing, and duplicate ACKs are alike. True if `a` is a copy (counted).
    #[inline(always)]
    fn is_copy<O: Observer>(snd: &DirState, a: &Arrival<'_>, cx: &mut Ctx<'_, O>) -> bool {
        let seg = a.seg;
        if !(snd.has(SEQ_KNOWN) && a.start.lt(snd.right)) {
            return false;
        }
        let Some(orig) = snd.original_of(cx.pool, a.end, a.fp) else {
            return false;
        };
        let dt = a.ts - orig.ts;
        let narrow = if seg.ip_id != 0 {
            cx.cfg.duplicate_window
        } else {
            cx.cfg.duplicate_window / 20
        };
        // Evidence that a retransmission would not look like this: the sender gives every
        // packet its own IP ID; its TSval clock had already moved past the copy's TSval; or
        // it is a SYN or SYN/ACK, whose retransmission timer starts at 1 s (RFC 6298 2.1;
        // 3 s on older stacks), ten times the wide window.
        let evidence =
            if cx.cfg.trust_ip_id && seg.ip_id != 0 && snd.ip_id_flags & IP_ID_VARIES != 0 {
                Some(CopyEvidence::IpId)
            } else if a.tsval != TsVal::ZERO && snd.has(TSVAL_SEEN) && a.tsval.lt(snd.ts_last) {
                Some(CopyEvidence::TsVal)
            } else if seg.flags.syn() {
                Some(CopyEvidence::Handshake)
            } else {
                None
            };
        if dt >= 0 && dt <= narrow {
            cx.counters.duplicates += 1;
            return true;
        }
        if dt >= 0
            && dt <= cx.cfg.duplicate_window_wide
            && let Some(by) = evidence
        {
            cx.counters.duplicates += 1;
            cx.counters.duplicates_wide[by as usize] += 1;
            return true;
        }
        false
    }

    /// An ACK for what `rcv` (the other direction) sent: close a seq or handshake sample on
    /// the segment ending at it, or on the keep-alive it answers.
    #[inline(always)]
    fn on_ack<O: Observer>(
        rcv: &mut DirState,
        a: &Arrival<'_>,
        tag: &mut u32,
        cx: &mut Ctx<'_, O>,
    ) {
        let seg = a.seg;
        let ack = seg.ack;
        // A retransmission of bytes already acknowledged, answered by a DSACK reporting
        // exactly it (RFC 2883): the receiver acknowledges a duplicate at once, so this ACK
        // answers the retransmission.
        if let Some(held) = rcv.held_retx(cx.pool)
            && !held.seg.ambiguous
            && rcv.has(ACK_KNOWN)
            && held.seg.key.le(rcv.acked)
            && held.seg.key.le(ack)
            && seg.dsack == Some((held.start, held.seg.key))
        {
            rcv.retire_rx(cx.pool, cx.cfg.duplicate_window_wide > 0);
            if a.emit(cx, held.seg.kind(), held.seg.seen(), tag) {
                cx.counters.disambiguated[TimedBy::DsackRetransmission as usize] += 1;
            }
        }
        if !rcv.has(ACK_KNOWN) || ack.gt(rcv.acked) {
            let prev = rcv.has(ACK_KNOWN).then_some(rcv.acked);
            rcv.flags |= ACK_KNOWN;
            rcv.acked = ack;
            rcv.drop_keepalive(cx.pool);
            if rcv.ip_id_flags & GAP_HELD != 0 {
                Self::ack_past_gap(rcv, ack, cx.pool);
            }
            let rx = rcv.held_retx(cx.pool);
            let keep = cx.cfg.duplicate_window_wide > 0;
            if keep && !rcv.done.is_empty() {
                while let Some(old) = rcv.done.front_ts(cx.pool) {
                    if a.ts - old <= cx.cfg.duplicate_window_wide
                        && rcv.done.len() < cx.cfg.max_recent_segments
                    {
                        break;
                    }
                    rcv.done.pop_front(cx.pool);
                }
            }
            let mut landed = false;
            // Nodes move to the kept ring as stored; only the one the ACK lands on is
            // unpacked.
            while let Some(node) = rcv.segs.pop_front_upto(cx.pool, ack) {
                if keep {
                    rcv.done
                        .push_keeping(cx.pool, &node, cx.cfg.max_recent_segments);
                }
                if node.key::<SeqSpace>() == ack {
                    landed = true;
                    let front: Pending = node.pending();
                    let kind = front.kind();
                    if !front.ambiguous {
                        a.emit(cx, kind, front.seen(), tag);
                    } else if let Some(late) = Self::late_original_answered(rcv, rx, ack) {
                        a.emit(cx, kind, late.seen(), tag);
                    } else if let Some((open, by)) =
                        rx.and_then(|r| Self::disambiguate(front, r, prev, ack, seg))
                    {
                        if a.emit(cx, kind, open.seen(), tag) {
                            cx.counters.disambiguated[by as usize] += 1;
                        }
                    } else if Self::sent_before_rx(rcv, cx.pool, front, prev, seg) {
                        if a.emit(cx, kind, front.seen(), tag) {
                            cx.counters.disambiguated[TimedBy::TsecrOriginal as usize] += 1;
                        }
                    } else {
                        cx.counters.ambiguous += 1;
                    }
                }
            }
            if let Some(held) = rx
                && ack.ge(held.seg.key)
            {
                // A retransmission that filled a hole (its bytes' first copy was never
                // captured, or ended elsewhere): no segment ends at the ACK, but an ACK of
                // its end echoing its TSval answers it.
                if !landed && ack == held.seg.key {
                    if Self::late_original_answered(rcv, rx, ack).is_some() {
                        a.emit(cx, Kind::Seq, held.seg.seen(), tag);
                    } else if Self::answers_rx(held, prev, seg)
                        && a.emit(cx, Kind::Seq, held.seg.seen(), tag)
                    {
                        cx.counters.disambiguated[TimedBy::TsecrRetransmission as usize] += 1;
                    }
                }
                let at_left_edge = rcv.ip_id_flags & RETX_AT_LEFT_EDGE != 0;
                rcv.retire_rx(cx.pool, keep);
                if keep && at_left_edge {
                    Self::keep_echo_bound(rcv, cx.pool, held, ack);
                }
            }
        } else if rcv.has(KEEPALIVE_PENDING) && ack == rcv.right {
            // The answer to a keep-alive: its one old byte ends at `right`.
            let again = rcv.has(KEEPALIVE_RESENT);
            let (open, _) = cx.pool.peek(rcv.slot);
            rcv.drop_slot(cx.pool);
            if again {
                cx.counters.ambiguous += 1;
            } else {
                a.emit(cx, Kind::Seq, open.seen(), tag);
            }
        }
    }

    /// Sequence space: record what `snd` sends (a segment that occupies some), or tell a
    /// retransmission, a keep-alive or a new connection's SYN.
    #[inline(always)]
    fn on_send<O: Observer>(
        snd: &mut DirState,
        rcv: &mut DirState,
        a: &Arrival<'_>,
        cx: &mut Ctx<'_, O>,
    ) {
        let seg = a.seg;
        let flags = seg.flags;
        let (start, end) = (a.start, a.end);
        let this = Pending {
            key: end,
            handshake: flags.syn(),
            ambiguous: false,
            ts: a.ts,
            frame: a.frame,
            tsval: a.tsval,
            fp: a.fp,
        };
        let mut record = true;
        if flags.syn() {
            if snd.has(SYN_SEEN) && start == snd.isn {
                // A retransmitted SYN or SYN/ACK: the handshake sample is ambiguous.
                record = false;
                Self::retransmitted(snd, start, Some(this), seg, a.ts, cx);
            } else {
                if !flags.ack() && rcv.has(SYN_SEEN) {
                    // A SYN captured after the other side's SYN (reordered capture, or
                    // simultaneous open): what that side sent cannot be timed reliably.
                    rcv.segs.mark_ambiguous(cx.pool, None);
                    if rcv.has(RETX_HELD) || rcv.ip_id_flags & RETX_AT_LEFT_EDGE != 0 {
                        rcv.drop_slot(cx.pool);
                    }
                }
                snd.segs.clear(cx.pool);
                snd.done.clear(cx.pool);
                snd.drop_slot(cx.pool);
                snd.flags = (snd.flags | SEQ_KNOWN | SYN_SEEN) & !ACK_KNOWN;
                snd.isn = start;
                snd.right = end;
            }
        } else if !snd.has(SEQ_KNOWN) {
            snd.flags |= SEQ_KNOWN;
            snd.right = end;
        } else if !start.lt(snd.right) {
            // In order, or after a gap: extend.
            if start != snd.right {
                Self::note_gap(snd, start, seg.ip_id, (a.ts, a.frame, a.tsval), cx);
            }
            snd.right = end;
            snd.drop_keepalive(cx.pool);
        } else if seg.payload_len <= 1
            && !flags.fin()
            && start == snd.right.wrapping_sub(1)
            && snd.has(ACK_KNOWN)
            && snd.acked == snd.right
        {
            // A keep-alive: one old byte re-sent with everything acknowledged. Its answer
            // (an ACK of `right`) is timed from it, unless it was sent twice.
            record = false;
            if snd.has(KEEPALIVE_PENDING) {
                snd.flags |= KEEPALIVE_RESENT;
            } else {
                snd.drop_slot(cx.pool);
                snd.flags |= KEEPALIVE_PENDING;
                snd.slot = cx.pool.put(
                    Pending {
                        key: snd.right,
                        ..this
                    },
                    0,
                );
            }
        } else {
            // Retransmission or reordering: nothing in flight can be timed, unless the ACKs
            // tell which copy they answer (kept in the slot).
            let late = a.timed && Self::late_original(snd, (start, end), seg.ip_id, a.tsval, cx);
            Self::retransmitted(snd, start, Some(this), seg, a.ts, cx);
            if late {
                snd.ip_id_flags |= RETX_LATE_ORIGINAL;
            }
            record = end.gt(snd.right);
            if record {
                snd.right = end;
            }
        }
        if record && a.timed {
            if snd.segs.len() >= cx.cfg.max_pending_segments {
                snd.segs.pop_front(cx.pool);
                cx.counters.segments_evicted += 1;
            }
            snd.segs.push_back(cx.pool, this);
        }
    }

    /// Timestamp echo: close a ts sample on the TSval the segment's TSecr echoes, and record
    /// its own TSval if it is the sender's newest (without ts samples, only follow the
    /// sender's TSval clock, which is copy evidence).
    #[inline(always)]
    fn on_timestamps<O: Observer>(
        snd: &mut DirState,
        rcv: &mut DirState,
        a: &Arrival<'_>,
        tag: &mut u32,
        cx: &mut Ctx<'_, O>,
    ) {
        let (tsval, tsecr) = (a.tsval, a.tsecr);
        // Only a segment that occupies sequence space opens; one that is newer (serial) than
        // the last recorded.
        let opens = a.occupies
            && a.timed
            && tsval != TsVal::ZERO
            && (!snd.has(TSVAL_SEEN) || tsval.gt(snd.ts_last));
        if cx.cfg.kinds.contains(Kind::Ts) && a.seg.timestamp.is_some() {
            if a.seg.flags.ack() && tsecr != TsVal::ZERO {
                while let Some(front) = rcv.tsvals.pop_front_upto(cx.pool, tsecr) {
                    if front.key::<TsClock>() == tsecr {
                        a.emit(cx, Kind::Ts, front.seen(), tag);
                    }
                }
            }
            if opens {
                while let Some(front_ts) = snd.tsvals.front_ts(cx.pool) {
                    if a.ts - front_ts <= cx.cfg.tsval_max_age {
                        break;
                    }
                    snd.tsvals.pop_front(cx.pool);
                    cx.counters.tsvals_expired += 1;
                }
                if snd.tsvals.len() >= cx.cfg.max_pending_tsvals {
                    snd.tsvals.pop_front(cx.pool);
                    cx.counters.tsvals_evicted += 1;
                }
                snd.flags |= TSVAL_SEEN;
                snd.ts_last = tsval;
                snd.tsvals.push_back(
                    cx.pool,
                    Pending {
                        key: tsval,
                        handshake: false,
                        ambiguous: false,
                        ts: a.ts,
                        frame: a.frame,
                        tsval,
                        fp: 0,
                    },
                );
            }
        } else if opens {
            snd.flags |= TSVAL_SEEN;
            snd.ts_last = tsval;
        }
    }

    /// Close a sample opened at `open` by `seg` (captured at `ts` as record `frame`), unless
    /// it cannot be timed; true if it counted.
    #[allow(clippy::too_many_arguments)]
    fn emit<O: Observer>(
        cx: &mut Ctx<'_, O>,
        kind: Kind,
        (open_ts, open_frame): (Nanos, u64),
        seg: &Segment,
        id: u64,
        frame: u64,
        ts: Nanos,
        tag: &mut u32,
    ) -> bool {
        if seg.first_fragment {
            cx.counters.ambiguous += 1;
            return false;
        }
        let rtt = ts - open_ts;
        if rtt <= 0 {
            cx.counters.non_positive += 1;
            return false;
        }
        if rtt > cx.cfg.max_rtt {
            cx.counters.implausible += 1;
            return false;
        }
        cx.counters.samples[kind.index()] += 1;
        if cx.cfg.kinds.contains(kind) {
            cx.out.found(
                Found {
                    kind,
                    rtt,
                    ts,
                    frame,
                    open_frame,
                    flow_id: id,
                    responder: &seg.src,
                    responder_port: seg.sport,
                    peer: &seg.dst,
                    peer_port: seg.dport,
                },
                tag,
            );
        }
        true
    }

    /// The ACK `ack` lands on `node`, ambiguous because `rx` re-sent its bytes. Tell which
    /// transmission it answers, if the evidence allows (docs/accuracy.md), and by what.
    fn disambiguate(
        node: Pending,
        rx: HeldRetx,
        prev: Option<SeqNum>,
        ack: SeqNum,
        seg: &Segment,
    ) -> Option<(Pending, TimedBy)> {
        if rx.seg.ambiguous {
            // Its bytes went more than twice: only an echo of its own TSval names it.
            return (ack == rx.seg.key
                && node.tsval != rx.seg.tsval
                && Self::answers_rx(rx, prev, seg))
            .then_some((
                Pending {
                    ambiguous: false,
                    ..rx.seg
                },
                TimedBy::TsecrRetransmission,
            ));
        }
        if rx.start.lt(ack) && ack.lt(rx.seg.key) {
            // The ACK stops inside the retransmission: the receiver had every byte up to
            // `ack`, beyond the retransmission's start, so had the retransmission arrived it
            // would acknowledge at least its end. The original answered.
            return Some((node, TimedBy::AckInside));
        }
        if ack != rx.seg.key {
            return None;
        }
        // DSACK (RFC 2883): a first SACK block at or below the cumulative ACK reports bytes
        // received twice; covering the whole retransmission, it says the retransmission was
        // spurious: the bytes came from the original.
        if let Some((left, right)) = seg.dsack
            && right.le(ack)
            && left.lt(right)
            && left.le(rx.start)
            && right.ge(rx.seg.key)
        {
            return Some((node, TimedBy::Dsack));
        }
        // TSecr (RFC 7323): the receiver echoes the TSval of the segment that last moved its
        // left edge. With everything before the retransmission acknowledged, the
        // retransmission's arrival would set it to the retransmission's TSval.
        if node.tsval == TsVal::ZERO || !node.tsval.lt(rx.seg.tsval) {
            return None;
        }
        if Self::answers_rx(rx, prev, seg) {
            return Some((rx.seg, TimedBy::TsecrRetransmission));
        }
        let prev = prev?;
        let (_, tsecr) = seg.timestamp?;
        if !prev.lt(rx.start) && tsecr != TsVal::ZERO && tsecr == node.tsval {
            Some((node, TimedBy::TsecrOriginal))
        } else {
            None
        }
    }

    /// The ACK echoes the retransmission's TSval, and everything before the retransmission
    /// was acknowledged before it: the retransmission had arrived (it set the echoed value),
    /// so the ACK answers it.
    fn answers_rx(rx: HeldRetx, prev: Option<SeqNum>, seg: &Segment) -> bool {
        let Some((_, tsecr)) = seg.timestamp else {
            return false;
        };
        prev.is_some_and(|acked| !acked.lt(rx.start))
            && rx.seg.tsval != TsVal::ZERO
            && tsecr == rx.seg.tsval
    }

    /// The ACK of `seg` lands on `node`, ambiguous because the retransmission in the slot
    /// (held, or kept after its answer: RETX_AT_LEFT_EDGE) re-sent bytes before it. True if
    /// the ACK was sent before that retransmission reached the receiver, so it answers
    /// segments that were each sent once, and `node` times it (docs/accuracy.md, "Behind a
    /// retransmission"). The receiver echoes the TSval of the segment that last moved its left
    /// edge and never goes back (RFC 7323 4.3); the retransmission started at or below an ACK
    /// the receiver had sent, so its arrival set the echo to its TSval. An echo older than
    /// that TSval, equal to the TSval of a segment this ACK acknowledges for the first time,
    /// was therefore sent before it arrived. The retransmission must be the only other copy
    /// (`ambiguous` clear: nothing it collapsed had been sent twice) and end before the ACK.
    fn sent_before_rx(
        rcv: &mut DirState,
        pool: &mut Pool,
        node: Pending,
        prev: Option<SeqNum>,
        seg: &Segment,
    ) -> bool {
        if rcv.ip_id_flags & RETX_AT_LEFT_EDGE == 0 || rcv.slot == NIL {
            return false;
        }
        let (rx, _) = pool.peek(rcv.slot);
        let Some((_, tsecr)) = seg.timestamp else {
            return false;
        };
        let Some(prev) = prev else {
            return false;
        };
        if rx.ambiguous || rx.tsval == TsVal::ZERO || tsecr == TsVal::ZERO {
            return false;
        }
        if !tsecr.lt(rx.tsval) {
            // The echo has reached the retransmission: no later ACK can be older than it.
            if !rcv.has(RETX_HELD) {
                rcv.drop_slot(pool);
            }
            return false;
        }
        // Sent before the retransmission (it collapsed `node`), ending past it.
        if !node.key.gt(rx.key) || node.frame >= rx.frame {
            return false;
        }
        // The echo names a segment sent before the retransmission that this ACK acknowledges
        // first: `node`, or one acknowledged with it (moved aside a moment ago).
        node.tsval == tsecr
            || rcv.done.any(pool, |p| {
                p.key.gt(prev) && p.key.le(node.key) && p.frame < rx.frame && p.tsval == tsecr
            })
    }

    /// The retransmission `held`, sent from the left edge, was just answered by an ACK of
    /// `ack` and retired. If it was the only other copy and carried a TSval, and segments it
    /// collapsed are still in flight beyond the ACK, keep it in the slot (without RETX_HELD)
    /// so their ACKs can still be told to precede its arrival ([`Conn::sent_before_rx`]).
    /// It is also with the acknowledged segments, as before: a late copy finds either.
    fn keep_echo_bound(rcv: &mut DirState, pool: &mut Pool, held: HeldRetx, ack: SeqNum) {
        if rcv.slot != NIL
            || held.seg.ambiguous
            || held.seg.tsval == TsVal::ZERO
            || !ack.lt(rcv.right)
        {
            return;
        }
        rcv.slot = pool.put(held.seg, held.start.get());
        rcv.ip_id_flags |= RETX_AT_LEFT_EDGE;
    }

    /// True if the sender's IP IDs may prove an order (docs/accuracy.md, "Reordering"): the
    /// user trusts them, and this direction's data frames carry IDs that change and, so far,
    /// count up (no step back beyond [`LATE_ID_WINDOW`]).
    #[inline]
    fn ip_ids_count_up<O: Observer>(snd: &DirState, cx: &Ctx<'_, O>) -> bool {
        cx.cfg.trust_ip_id && snd.ip_id_flags & (IP_ID_VARIES | IP_ID_ERRATIC) == IP_ID_VARIES
    }

    /// A segment starting at `start`, beyond the highest byte sent, with IP ID `ip_id`, seen
    /// at (time, frame) with a TSval: the bytes before it never passed the capture point
    /// (yet). If the sender's IP IDs count up and the slot is free (or holds an older gap),
    /// remember the gap, and the segment's time, frame, TSval and IP ID with the ID of the
    /// data frame before it, so that a segment filling the gap later can be told from
    /// a retransmission ([`Conn::late_original`]). Nothing else reads the slot while
    /// GAP_HELD is set, anything that needs the slot drops it, and so does an ACK of the
    /// gap's end ([`Conn::ack_past_gap`]).
    #[cold]
    #[inline(never)]
    fn note_gap<O: Observer>(
        snd: &mut DirState,
        start: SeqNum,
        ip_id: u16,
        (ts, frame, tsval): (Nanos, u64, TsVal),
        cx: &mut Ctx<'_, O>,
    ) {
        // `last_ip_id` is still the one of the data frame before this segment: this one's ID
        // must count up from it (which makes the IDs vary, if they did not yet).
        snd.drop_keepalive(cx.pool);
        let step = ip_id.wrapping_sub(snd.last_ip_id);
        if !start.gt(snd.right)
            || ip_id == 0
            || snd.ip_id_flags & (IP_ID_SEEN | IP_ID_ERRATIC) != IP_ID_SEEN
            || !cx.cfg.trust_ip_id
            || !(1..0x8000).contains(&step)
            || (snd.slot != NIL && snd.ip_id_flags & GAP_HELD == 0)
        {
            return;
        }
        snd.drop_slot(cx.pool);
        snd.slot = cx.pool.put(
            Pending {
                key: start,
                handshake: false,
                ambiguous: true,
                ts,
                frame,
                tsval,
                fp: u32::from(snd.last_ip_id) << 16 | u32::from(ip_id),
            },
            snd.right.get(),
        );
        snd.ip_id_flags |= GAP_HELD;
    }

    /// The cumulative ACK moved to `ack` while a gap is held ([`Conn::note_gap`]): once it
    /// reaches the gap's end, the gap's bytes all reached the receiver (unseen), so no later
    /// segment can be their first copy. Forget the gap, so that a retransmission of them,
    /// even one whose IP ID (after the 16-bit counter wrapped) looks skipped, is never taken
    /// for a late original.
    #[cold]
    #[inline(never)]
    fn ack_past_gap(rcv: &mut DirState, ack: SeqNum, pool: &mut Pool) {
        let (beyond, _) = pool.peek(rcv.slot);
        if ack.ge(beyond.key) {
            rcv.drop_slot(pool);
        }
    }

    /// A segment (`start`, `end`) with IP ID `ip_id` and TSval `tsval` starts below the
    /// highest byte sent. True if it is a late original: it lies in the
    /// gap held in the slot (its bytes never passed the capture point before), it starts
    /// where the receiver waits (everything before it acknowledged, or captured: the gap's
    /// start) and none of its bytes were acknowledged yet, and its IP ID is older, by at most [`LATE_ID_WINDOW`], than the ID of the
    /// segment captured beyond the gap, from a sender whose IDs count up per packet. So it
    /// was sent once, before that segment, and overtaken on the way: a retransmission
    /// would carry a newer ID. Its TSval, if any, must not be newer than that segment's
    /// either. The first ACK that covers it was released by its arrival, and is timed from
    /// it (see [`Conn::late_original_answered`]). Not a copy: its ID must be one the
    /// sender skipped between its data frame before that segment and that segment (a copy
    /// repeats an ID already seen), and its bytes were never captured.
    #[cold]
    #[inline(never)]
    fn late_original<O: Observer>(
        snd: &DirState,
        (start, end): (SeqNum, SeqNum),
        ip_id: u16,
        tsval: TsVal,
        cx: &Ctx<'_, O>,
    ) -> bool {
        if snd.ip_id_flags & GAP_HELD == 0 || ip_id == 0 || !Self::ip_ids_count_up(snd, cx) {
            return false;
        }
        let (beyond, gap_start) = cx.pool.peek(snd.slot);
        let gap_start = SeqNum::new(gap_start);
        // Where the receiver waits, with none of the segment's bytes acknowledged (an ACK
        // beyond its start says they arrived before, unseen: this is not their first copy).
        let waits = if snd.has(ACK_KNOWN) {
            !snd.acked.gt(start) && (start == gap_start || start == snd.acked)
        } else {
            start == gap_start
        };
        // IDs: the segment beyond the gap's, and the one of the data frame before it.
        let (id_beyond, id_before) = (beyond.fp as u16, (beyond.fp >> 16) as u16);
        let older = id_beyond.wrapping_sub(ip_id);
        let skipped = id_beyond.wrapping_sub(id_before);
        waits
            && !start.lt(gap_start)
            && end.le(beyond.key)
            && (1..=LATE_ID_WINDOW).contains(&older)
            && older < skipped
            && skipped < 0x8000
            && (tsval == TsVal::ZERO || beyond.tsval == TsVal::ZERO || !tsval.gt(beyond.tsval))
    }

    /// The late original held in the slot (see [`Conn::late_original`]), if the ACK `ack`
    /// is the first to cover it: the segments captured before it beyond its start waited
    /// for it at the receiver, so an ACK that lands on one of them, or on its own end, was
    /// released by its arrival. Not if the slot's copy is ambiguous (its bytes, or those of
    /// a segment it made ambiguous, were sent more than once).
    #[inline(never)]
    fn late_original_answered(
        rcv: &DirState,
        rx: Option<HeldRetx>,
        ack: SeqNum,
    ) -> Option<Pending> {
        let rx = rx?;
        (rcv.ip_id_flags & RETX_LATE_ORIGINAL != 0 && !rx.seg.ambiguous && ack.ge(rx.seg.key))
            .then_some(rx.seg)
    }

    /// A segment starting at `start`, below the highest byte sent: a retransmission or a
    /// reordering. Every pending segment ending beyond `start` is ambiguous: its bytes were
    /// sent twice, or its cumulative ACK may be caused by this segment's arrival (Karn; Dart's
    /// collapse). Segments ending at or before `start` keep their timing: this segment cannot
    /// complete an ACK at or below its own start. If every segment it made ambiguous was
    /// sent only once before, it is kept (`seg`) so its ACKs may still be told apart.
    fn retransmitted<O: Observer>(
        snd: &mut DirState,
        start: SeqNum,
        seg: Option<Pending>,
        by: &Segment,
        ts: Nanos,
        cx: &mut Ctx<'_, O>,
    ) {
        let clean = snd.segs.mark_ambiguous(cx.pool, Some(start));
        // Bytes of the last retransmission sent yet again: a third copy, no longer told apart.
        let again = seg.is_some_and(|seg| {
            snd.held_retx(cx.pool)
                .is_some_and(|held| held.start.lt(seg.key) && start.lt(held.seg.key))
        });
        // Bytes already acknowledged, sent again: only their answer (a DSACK) can be timed,
        // and only if this is their second copy; mark them so a third is known.
        let spurious = seg.is_some_and(|seg| snd.has(ACK_KNOWN) && seg.key.le(snd.acked));
        let once = spurious && seg.is_some_and(|seg| snd.done.sent_once(cx.pool, start, seg.key));
        if spurious {
            snd.done.mark_ambiguous(cx.pool, start);
        }
        // A copy sent in the same clock tick as the last one carries its TSval: an echo no
        // longer tells them apart.
        // So does one whose TSval the receiver already echoes (another segment of that tick
        // moved its left edge).
        let twin = seg.is_some_and(|seg| {
            (seg.tsval != TsVal::ZERO && seg.tsval == snd.echoed)
                || snd
                    .held_retx(cx.pool)
                    .is_some_and(|held| held.seg.tsval == seg.tsval && held.start.lt(seg.key))
        });
        snd.drop_slot(cx.pool);
        if let Some(seg) = seg {
            // Kept even when its bytes went more than twice: an echo of its own TSval still
            // names it. Rules that time the original need it to be the only other copy
            // (`ambiguous` clear in the slot).
            let only = clean && !again && (!spurious || once);
            snd.flags |= RETX_HELD;
            // A twin's TSval is forgotten: no echo may name it (it is still recognised
            // by its fingerprint if captured twice).
            snd.slot = cx.pool.put(
                Pending {
                    ambiguous: !only,
                    tsval: if twin { TsVal::ZERO } else { seg.tsval },
                    ..seg
                },
                start.get(),
            );
            if snd.has(ACK_KNOWN) && start.le(snd.acked) {
                snd.ip_id_flags |= RETX_AT_LEFT_EDGE;
            }
        }
        cx.counters.retransmits += 1;
        cx.out.retransmit(
            SocketAddr::new(by.src, by.sport),
            SocketAddr::new(by.dst, by.dport),
            ts,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Sample;
    use crate::wire::{decode, linktype};
    use metro_testkit::frame::{TcpFrame, flags};

    const CLIENT: [u8; 4] = [10, 0, 0, 2];
    const SERVER: [u8; 4] = [10, 0, 0, 1];
    const CLIENT_PORT: u16 = 40000;
    const SERVER_PORT: u16 = 443;
    const US: Nanos = 1_000;

    /// One connection driven alone: the pool, limits and counters an engine would lend it,
    /// and the samples it reports. Frames are real bytes, decoded as a capture would be.
    struct Rig {
        conn: Conn,
        pool: Pool,
        cfg: EngineConfig,
        counters: Counters,
        samples: Vec<Sample>,
        frames: u64,
    }

    impl Rig {
        fn new() -> Rig {
            Rig {
                conn: Conn::new(7),
                pool: Pool::new(),
                cfg: EngineConfig::default(),
                counters: Counters::default(),
                samples: Vec::new(),
                frames: 0,
            }
        }

        /// A frame from the client (`up`) or the server; the builder's defaults otherwise.
        fn frame(up: bool) -> TcpFrame<'static> {
            if up {
                TcpFrame::v4(CLIENT, CLIENT_PORT, SERVER, SERVER_PORT)
            } else {
                TcpFrame::v4(SERVER, SERVER_PORT, CLIENT, CLIENT_PORT)
            }
        }

        /// Decodes `f` and feeds it to the connection as the next frame, captured at `ts`.
        /// Direction 0 is client to server.
        fn send(&mut self, ts: Nanos, f: TcpFrame<'_>) {
            let mut bytes = Vec::new();
            f.write(&mut bytes);
            let pkt = decode(linktype::ETHERNET, &bytes).expect("a well-formed frame");
            let dir = if pkt.tcp.sport == CLIENT_PORT { 0 } else { 1 };
            self.frames += 1;
            let samples = &mut self.samples;
            let mut out = |s: &Sample| samples.push(*s);
            let mut cx = Ctx {
                pool: &mut self.pool,
                cfg: &self.cfg,
                counters: &mut self.counters,
                out: &mut out,
            };
            self.conn
                .process(dir, self.frames, ts, &Segment::from(&pkt), &mut cx);
        }

        /// SYN (client ISN 1000) at 1 ms, SYN/ACK (server ISN 5000) at 1.5 ms, final ACK at
        /// 1.6 ms.
        fn handshake(&mut self) {
            self.send(
                1000 * US,
                Rig::frame(true).flags(flags::SYN).seq(1000).ack(0),
            );
            self.send(
                1500 * US,
                Rig::frame(false)
                    .flags(flags::SYN | flags::ACK)
                    .seq(5000)
                    .ack(1001),
            );
            self.send(1600 * US, Rig::frame(true).seq(1001).ack(5001));
        }
    }

    fn addr(ip: [u8; 4], port: u16) -> SocketAddr {
        SocketAddr::from((ip, port))
    }

    #[test]
    fn a_handshake_times_both_sides() {
        let mut rig = Rig::new();
        rig.handshake();
        // The SYN/ACK answers the SYN (the server's RTT), the final ACK answers the SYN/ACK
        // (the client's).
        let want = [
            Sample {
                kind: Kind::Handshake,
                frame: 2,
                open_frame: 1,
                ts: 1500 * US,
                rtt: 500 * US,
                responder: addr(SERVER, SERVER_PORT),
                peer: addr(CLIENT, CLIENT_PORT),
                flow_id: 7,
            },
            Sample {
                kind: Kind::Handshake,
                frame: 3,
                open_frame: 2,
                ts: 1600 * US,
                rtt: 100 * US,
                responder: addr(CLIENT, CLIENT_PORT),
                peer: addr(SERVER, SERVER_PORT),
                flow_id: 7,
            },
        ];
        assert_eq!(rig.samples, want);
        assert_eq!(rig.counters.samples, [0, 2, 0]);
        assert!(rig.conn.confirmed());
        assert_eq!(rig.conn.dirs[0].isn(), Some(SeqNum::new(1000)));
        assert_eq!(rig.conn.dirs[1].isn(), Some(SeqNum::new(5000)));
    }

    #[test]
    fn data_acknowledged_makes_a_seq_sample_from_the_segment_ending_at_the_ack() {
        let mut rig = Rig::new();
        rig.handshake();
        rig.samples.clear();
        // Two segments of 100 bytes; the server acknowledges the first, then both.
        rig.send(
            2000 * US,
            Rig::frame(true).seq(1001).ack(5001).payload_len(100),
        );
        rig.send(
            2100 * US,
            Rig::frame(true).seq(1101).ack(5001).payload_len(100),
        );
        rig.send(2300 * US, Rig::frame(false).seq(5001).ack(1101));
        rig.send(2450 * US, Rig::frame(false).seq(5001).ack(1201));
        let got: Vec<_> = rig
            .samples
            .iter()
            .map(|s| (s.kind, s.open_frame, s.frame, s.rtt, s.responder))
            .collect();
        let server = addr(SERVER, SERVER_PORT);
        assert_eq!(
            got,
            [
                (Kind::Seq, 4, 6, 300 * US, server),
                (Kind::Seq, 5, 7, 350 * US, server),
            ]
        );
        assert_eq!(rig.counters.samples, [2, 2, 0]);
        // Every acknowledged segment left the pending list (kept only as recent, for copies).
        assert!(rig.conn.dirs[0].segs.is_empty());
    }

    #[test]
    fn an_ack_of_retransmitted_data_is_counted_not_timed() {
        let mut rig = Rig::new();
        rig.handshake();
        rig.samples.clear();
        rig.send(
            2000 * US,
            Rig::frame(true).seq(1001).ack(5001).payload_len(100),
        );
        // Sent again 250 ms later (far beyond any duplicate-capture window): Karn.
        rig.send(
            252_000 * US,
            Rig::frame(true).seq(1001).ack(5001).payload_len(100),
        );
        rig.send(252_300 * US, Rig::frame(false).seq(5001).ack(1101));
        assert_eq!(rig.samples, []);
        assert_eq!(rig.counters.retransmits, 1);
        assert_eq!(rig.counters.duplicates, 0);
        assert_eq!(rig.counters.ambiguous, 1);
        assert_eq!(rig.counters.samples, [0, 2, 0]);
    }

    #[test]
    fn a_copy_captured_twice_is_skipped() {
        let mut rig = Rig::new();
        rig.handshake();
        rig.samples.clear();
        let data = Rig::frame(true).seq(1001).ack(5001).payload_len(100);
        rig.send(2000 * US, data);
        // The same frame 50 µs later: within the narrow window for IP ID 0 (2 ms / 20).
        rig.send(2050 * US, data);
        rig.send(2300 * US, Rig::frame(false).seq(5001).ack(1101));
        assert_eq!(rig.counters.duplicates, 1);
        assert_eq!(rig.counters.retransmits, 0);
        assert_eq!(rig.samples.len(), 1);
        assert_eq!(
            (rig.samples[0].open_frame, rig.samples[0].rtt),
            (4, 300 * US)
        );
    }

    #[test]
    fn acknowledged_segments_kept_for_late_copies_are_bounded() {
        let mut rig = Rig::new();
        rig.handshake();
        let max = rig.cfg.max_recent_segments;
        // 20 segments of 100 bytes, each with its own IP ID (the sender numbers its
        // packets: evidence for the wide window), then one ACK of them all.
        let seg = |i: u32| {
            Rig::frame(true)
                .seq(1001 + 100 * i)
                .ack(5001)
                .payload_len(100)
                .ip_id(100 + i as u16)
        };
        for i in 0..20 {
            rig.send((2000 + u64::from(i)) as Nanos * US, seg(i));
        }
        rig.send(3000 * US, Rig::frame(false).seq(5001).ack(3001));
        assert_eq!(rig.conn.dirs[0].done.len(), max);
        // 30 ms later (beyond the narrow window, inside the wide one): a copy of the newest
        // segment is recognised; a copy of the first, no longer kept, is a retransmission.
        rig.send(32_000 * US, seg(19));
        assert_eq!((rig.counters.duplicates, rig.counters.retransmits), (1, 0));
        rig.send(32_100 * US, seg(0));
        assert_eq!((rig.counters.duplicates, rig.counters.retransmits), (1, 1));
    }

    #[test]
    fn per_connection_state_stays_small() {
        // 1M connections must fit in 300 MB with the table's own overhead, and a connection's
        // table entry in three cache lines (its key and flags take 48 bytes): the lines a
        // packet touches.
        assert!(
            std::mem::size_of::<Conn>() <= 144,
            "{}",
            std::mem::size_of::<Conn>()
        );
        assert_eq!(crate::flow::FlowTable::<Conn>::slot_bytes(), 192);
    }
}
