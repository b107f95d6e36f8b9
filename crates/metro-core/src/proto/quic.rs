//! QUIC (RFC 9000 v1, RFC 9369 v2, IETF drafts 17-34) on any UDP port, from the headers
//! only: packet numbers and payloads are encrypted and never read.
//!
//! A connection starts with a client Initial (long header, a known version, a destination
//! connection ID of 8 to 20 bytes, in a datagram of at least 1200 bytes as RFC 9000 §14.1
//! requires) and is confirmed by the server's first answer: a long-header packet back to
//! the client's address whose destination connection ID is the client's source connection
//! ID (or a Version Negotiation or Retry). It is then followed by its addresses and ports.
//!
//! Samples:
//! - `quic_handshake`: the client's first Initial to the server's first answer (the
//!   server's side of the capture point), and the server's first datagram holding a
//!   Handshake packet to the client's next datagram (the client's side);
//! - `quic_spin`: the latency spin bit of short-header packets (RFC 9000 §17.4): the client
//!   inverts what it last saw, the server reflects it, so the bit flips once per round trip
//!   in each direction and the time between two flips (edges) of one direction is one RTT
//!   seen from the capture point. An edge-to-edge period is kept only if exactly one edge
//!   of the other direction falls inside it (the reflection; a greased bit, a side that
//!   does not spin or a reordered packet breaks that), if it is at least a quarter of the
//!   handshake's RTT (the two handshake samples together: a plausibility floor), and if the
//!   connection was never silent for `quic_spin_max_silence` within it (an idle period
//!   measures the application). Connections that never spin (a constant bit) or never spin
//!   validly (a greased bit) are counted, never sampled.

use std::collections::VecDeque;
use std::net::SocketAddr;

use rustc_hash::FxHashMap;

use super::{Cx, ProtoConfig, ProtoCounters};
use crate::Nanos;
use crate::sample::{Kind, Observer};

/// The smallest datagram a client's Initial may travel in (RFC 9000 §14.1).
pub const MIN_INITIAL_DATAGRAM: usize = 1200;

/// Long-header packet types, whatever the version's numbering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LongType {
    Initial,
    ZeroRtt,
    Handshake,
    Retry,
    /// Version 0: Version Negotiation.
    VersionNegotiation,
}

/// One packet's header as far as it is readable without keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Header<'a> {
    Long {
        ty: LongType,
        version: u32,
        dcid: &'a [u8],
        scid: &'a [u8],
        /// The bytes this packet takes in its datagram (coalesced packets follow).
        len: usize,
    },
    /// A short (1-RTT) header: the spin bit is all that can be read.
    Short { spin: bool },
}

/// Versions read: v1, v2, v2's draft number and the IETF drafts 17 to 34 (v1's layout).
pub fn known_version(v: u32) -> bool {
    matches!(v, 1 | 0x6b33_43cf | 0x709a_50c4 | 0xff00_0011..=0xff00_0022)
}

fn long_type(version: u32, bits: u8) -> LongType {
    let v2 = matches!(version, 0x6b33_43cf | 0x709a_50c4);
    match (v2, bits) {
        (false, 0) | (true, 1) => LongType::Initial,
        (false, 1) | (true, 2) => LongType::ZeroRtt,
        (false, 2) | (true, 3) => LongType::Handshake,
        _ => LongType::Retry,
    }
}

/// A variable-length integer (RFC 9000 §16) at the start of `b`: (value, its length).
fn varint(b: &[u8]) -> Option<(u64, usize)> {
    let first = *b.first()?;
    let n = 1usize << (first >> 6);
    let bytes = b.get(..n)?;
    let mut v = u64::from(first & 0x3f);
    for &x in &bytes[1..] {
        v = (v << 8) | u64::from(x);
    }
    Some((v, n))
}

/// The header of the packet at the start of `b`. The fixed bit is not required: a peer
/// that offered `grease_quic_bit` (RFC 9287) may receive packets without it (aioquic's
/// server clears it on the v2 capture). So a short header is any byte with the form bit
/// clear: the caller decides from the connection whether it is QUIC.
pub fn header(b: &[u8]) -> Option<Header<'_>> {
    let first = *b.first()?;
    if first & 0x80 == 0 {
        return Some(Header::Short {
            spin: first & 0x20 != 0,
        });
    }
    let version = u32::from_be_bytes(b.get(1..5)?.try_into().ok()?);
    let dlen = usize::from(*b.get(5)?);
    let dcid = b.get(6..6 + dlen)?;
    let slen = usize::from(*b.get(6 + dlen)?);
    let scid = b.get(7 + dlen..7 + dlen + slen)?;
    let mut at = 7 + dlen + slen;
    if version == 0 {
        return Some(Header::Long {
            ty: LongType::VersionNegotiation,
            version,
            dcid,
            scid,
            len: b.len(),
        });
    }
    if !known_version(version) || dlen > 20 || slen > 20 {
        return None;
    }
    let ty = long_type(version, (first >> 4) & 3);
    let len = match ty {
        LongType::Retry => b.len(),
        _ => {
            if ty == LongType::Initial {
                let (tlen, n) = varint(b.get(at..)?)?;
                at = at
                    .checked_add(n)?
                    .checked_add(usize::try_from(tlen).ok()?)?;
            }
            let (plen, n) = varint(b.get(at..)?)?;
            // The packet number (1-4 bytes) and at least the 16-byte header-protection
            // sample's worth of payload lie inside the length.
            if plen < 20 {
                return None;
            }
            let end = at
                .checked_add(n)?
                .checked_add(usize::try_from(plen).ok()?)?;
            // A packet cut by the snaplen still says where it ends (the walk stops there).
            end
        }
    };
    Some(Header::Long {
        ty,
        version,
        dcid,
        scid,
        len,
    })
}

/// One direction of a connection's spin bit.
#[derive(Clone, Copy, Debug, Default)]
struct Spin {
    /// The bit of the last short-header packet.
    value: Option<bool>,
    /// The last edge: time and frame.
    edge: Option<(Nanos, u64)>,
    edges: u32,
    /// Edges of the other direction since this direction's last edge.
    other_edges: u32,
    /// The longest silence of the connection since this direction's last edge.
    silence: Nanos,
}

#[derive(Clone, Debug)]
struct Conn {
    /// The client's first Initial: time and frame.
    initial: (Nanos, u64),
    scid: [u8; 20],
    scid_len: u8,
    answered: bool,
    /// The server's first datagram holding a Handshake packet, until the client answers it.
    server_handshake: Option<(Nanos, u64)>,
    handshake_done: bool,
    /// The two handshake samples (server's side, client's side), 0 until measured.
    hs: [Nanos; 2],
    last: Nanos,
    /// [client to server, server to client].
    spin: [Spin; 2],
    samples: u32,
}

/// (client, server).
type Key = (SocketAddr, SocketAddr);

pub(crate) struct Quic {
    conns: FxHashMap<Key, Conn>,
    /// Unanswered connections by creation, for shedding the oldest (stale entries skipped).
    unanswered: VecDeque<(Key, Nanos)>,
    answered: usize,
    cap: usize,
}

impl Quic {
    pub fn new(cap: usize) -> Quic {
        Quic {
            conns: FxHashMap::default(),
            unanswered: VecDeque::new(),
            answered: 0,
            cap: cap.max(4),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn datagram(
        &mut self,
        cx: &mut Cx<'_>,
        frame: u64,
        ts: Nanos,
        src: SocketAddr,
        dst: SocketAddr,
        d: &[u8],
        wire_len: usize,
        obs: &mut dyn Observer,
    ) {
        let Some(first) = header(d) else {
            return;
        };
        // Which connection, and which side sent this.
        let (key, from_client) = if self.conns.contains_key(&(src, dst)) {
            ((src, dst), true)
        } else if self.conns.contains_key(&(dst, src)) {
            ((dst, src), false)
        } else {
            if let Header::Long {
                ty: LongType::Initial,
                dcid,
                scid,
                ..
            } = first
                && dcid.len() >= 8
                // The datagram's size on the wire: a live capture keeps its first bytes only.
                && wire_len.max(d.len()) >= MIN_INITIAL_DATAGRAM
                // A client's first Initial sets the fixed bit (RFC 9287 §3.1).
                && d[0] & 0x40 != 0
            {
                self.open((src, dst), ts, frame, scid, cx.counters);
            }
            return;
        };
        let max_silence = cx.cfg.quic_spin_max_silence;
        let cap = self.cap;
        let Some(c) = self.conns.get_mut(&key) else {
            return;
        };
        let silence = ts - c.last;
        c.last = ts;
        for s in &mut c.spin {
            s.silence = s.silence.max(silence);
        }
        if !c.answered {
            if from_client {
                return;
            }
            let answer = match first {
                Header::Long {
                    ty: LongType::VersionNegotiation | LongType::Retry,
                    dcid,
                    ..
                } => dcid == &c.scid[..usize::from(c.scid_len)],
                Header::Long { dcid, .. } => dcid == &c.scid[..usize::from(c.scid_len)],
                Header::Short { .. } => false,
            };
            if !answer {
                return;
            }
            if self.answered >= cap / 4 * 3 {
                cx.counters.quic_full += 1;
                return;
            }
            c.answered = true;
            self.answered += 1;
            cx.counters.quic_connections += 1;
            if cx.emit(obs, Kind::QuicHandshake, c.initial, frame, ts, src, dst) {
                c.hs[0] = ts - c.initial.0;
            }
        } else if from_client
            && !c.handshake_done
            && let Some(open) = c.server_handshake
        {
            c.handshake_done = true;
            if cx.emit(obs, Kind::QuicHandshake, open, frame, ts, src, dst) {
                c.hs[1] = ts - open.0;
            }
        }
        // Walk the datagram's coalesced packets.
        let mut at = 0;
        let mut hdr = Some(first);
        while let Some(h) = hdr {
            match h {
                Header::Long { ty, len, .. } => {
                    if ty == LongType::Handshake
                        && !from_client
                        && c.server_handshake.is_none()
                        && !c.handshake_done
                    {
                        c.server_handshake = Some((ts, frame));
                    }
                    if matches!(ty, LongType::Retry | LongType::VersionNegotiation) {
                        break;
                    }
                    at += len;
                    hdr = d.get(at..).and_then(header);
                }
                Header::Short { spin } => {
                    spin_packet(
                        cx,
                        c,
                        from_client,
                        spin,
                        frame,
                        ts,
                        src,
                        dst,
                        max_silence,
                        obs,
                    );
                    break;
                }
            }
        }
    }

    fn open(&mut self, key: Key, ts: Nanos, frame: u64, scid: &[u8], c: &mut ProtoCounters) {
        if self.conns.len() >= self.cap {
            // Shed the oldest unanswered entry; answered ones hold at most 3/4 of the table.
            while let Some((k, t)) = self.unanswered.pop_front() {
                if self
                    .conns
                    .get(&k)
                    .is_some_and(|e| !e.answered && e.initial.0 == t)
                {
                    self.conns.remove(&k);
                    c.quic_shed += 1;
                    break;
                }
            }
            if self.conns.len() >= self.cap {
                c.quic_full += 1;
                return;
            }
        }
        if self.unanswered.len() >= 2 * self.cap {
            let conns = &self.conns;
            self.unanswered.retain(|(k, t)| {
                conns
                    .get(k)
                    .is_some_and(|e| !e.answered && e.initial.0 == *t)
            });
        }
        let mut id = [0u8; 20];
        id[..scid.len()].copy_from_slice(scid);
        self.conns.insert(
            key,
            Conn {
                initial: (ts, frame),
                scid: id,
                scid_len: scid.len() as u8,
                answered: false,
                server_handshake: None,
                handshake_done: false,
                hs: [0; 2],
                last: ts,
                spin: [Spin::default(); 2],
                samples: 0,
            },
        );
        self.unanswered.push_back((key, ts));
        c.quic_initials += 1;
    }

    pub fn expire(&mut self, now: Nanos, cfg: &ProtoConfig, c: &mut ProtoCounters) {
        let answered = &mut self.answered;
        self.conns.retain(|_, conn| {
            let idle = now.saturating_sub(conn.last);
            let keep = if conn.answered {
                idle < cfg.quic_idle_timeout
            } else {
                idle < cfg.quic_initial_timeout
            };
            if !keep {
                close(conn, c);
                *answered -= usize::from(conn.answered);
            }
            keep
        });
        let conns = &self.conns;
        self.unanswered.retain(|(k, t)| {
            conns
                .get(k)
                .is_some_and(|e| !e.answered && e.initial.0 == *t)
        });
    }

    pub fn drain(&mut self, c: &mut ProtoCounters) {
        for conn in self.conns.values() {
            close(conn, c);
        }
        self.conns.clear();
        self.unanswered.clear();
        self.answered = 0;
    }
}

/// Count a connection that is forgotten: unanswered, or how its spin bit behaved.
fn close(conn: &Conn, c: &mut ProtoCounters) {
    if !conn.answered {
        c.quic_unanswered += 1;
    } else if conn.samples > 0 {
        c.quic_spinning += 1;
    } else if conn.spin.iter().any(|s| s.value.is_some()) {
        if conn.spin.iter().all(|s| s.edges == 0) {
            c.quic_spin_constant += 1;
        } else {
            c.quic_spin_invalid += 1;
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn spin_packet(
    cx: &mut Cx<'_>,
    c: &mut Conn,
    from_client: bool,
    spin: bool,
    frame: u64,
    ts: Nanos,
    src: SocketAddr,
    dst: SocketAddr,
    max_silence: Nanos,
    obs: &mut dyn Observer,
) {
    let d = usize::from(!from_client);
    // A quarter of the handshake's round trip: the handshake carries both endpoints'
    // crypto (aioquic under load on the test machine: up to 2.7 times the network's round
    // trip), so it bounds the RTT from above; a quarter of it is still far above what a
    // greased bit or a reordered packet gives.
    let floor = (c.hs[0] + c.hs[1]) / 4;
    let [a, b] = &mut c.spin;
    let (me, other) = if d == 0 { (a, b) } else { (b, a) };
    let edge = me.value.is_some_and(|v| v != spin);
    me.value = Some(spin);
    if !edge {
        return;
    }
    me.edges += 1;
    other.other_edges += 1;
    if let Some(open) = me.edge {
        let period = ts - open.0;
        let rejected = &mut cx.counters.quic_spin_rejected;
        if me.other_edges != 1 {
            rejected[0] += 1;
        } else if period < floor {
            rejected[1] += 1;
        } else if me.silence >= max_silence {
            rejected[2] += 1;
        } else if cx.emit(obs, Kind::QuicSpin, open, frame, ts, src, dst) {
            c.samples += 1;
        }
    }
    me.edge = Some((ts, frame));
    me.other_edges = 0;
    me.silence = 0;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::{KindSet, Sample};

    const CID_C: [u8; 8] = [0xc1; 8];
    const CID_S: [u8; 8] = [0x5e; 8];
    const ODCID: [u8; 8] = [0xdd; 8];

    /// A v1 long-header packet of `ty` bits with a payload of `plen` bytes.
    fn long(bits: u8, version: u32, dcid: &[u8], scid: &[u8], plen: usize) -> Vec<u8> {
        let mut p = vec![0xc0 | (bits << 4)];
        p.extend_from_slice(&version.to_be_bytes());
        p.push(dcid.len() as u8);
        p.extend_from_slice(dcid);
        p.push(scid.len() as u8);
        p.extend_from_slice(scid);
        if bits == 0 && version == 1 || bits == 1 && version == 0x6b33_43cf {
            p.push(0); // no token
        }
        p.extend_from_slice(&[0x40 | (plen >> 8) as u8, plen as u8]);
        p.resize(p.len() + plen, 0xaa);
        p
    }

    fn short(spin: bool, dcid: &[u8]) -> Vec<u8> {
        let mut p = vec![0x40 | if spin { 0x20 } else { 0 }];
        p.extend_from_slice(dcid);
        p.resize(p.len() + 40, 0xbb);
        p
    }

    #[test]
    fn headers_of_each_version_and_coalesced_packets() {
        let i = long(0, 1, &ODCID, &CID_C, 1200);
        let Some(Header::Long {
            ty,
            dcid,
            scid,
            len,
            ..
        }) = header(&i)
        else {
            panic!()
        };
        assert_eq!(
            (ty, dcid, scid, len),
            (LongType::Initial, &ODCID[..], &CID_C[..], i.len())
        );
        // v2 numbers its types differently: bits 1 is Initial, 3 Handshake.
        let v2 = long(3, 0x6b33_43cf, &CID_C, &CID_S, 50);
        assert!(matches!(
            header(&v2),
            Some(Header::Long {
                ty: LongType::Handshake,
                ..
            })
        ));
        let d23 = long(2, 0xff00_0017, &CID_C, &CID_S, 50);
        assert!(matches!(
            header(&d23),
            Some(Header::Long {
                ty: LongType::Handshake,
                ..
            })
        ));
        // Unknown version, missing fixed bit, CID over 20 bytes, truncated: not QUIC.
        assert!(header(&long(0, 0x1234_5678, &ODCID, &CID_C, 50)).is_none());

        assert!(header(&long(2, 1, &[0; 21], &CID_S, 50)).is_none());
        for n in 0..16 {
            assert!(header(&i[..n]).is_none(), "{n}");
        }
        assert_eq!(
            header(&short(true, &CID_S)),
            Some(Header::Short { spin: true })
        );
        assert_eq!(header(&[0x00, 1, 2]), Some(Header::Short { spin: false }));
        // Version Negotiation.
        let vn = long(0, 0, &CID_C, &CID_S, 20);
        assert!(matches!(
            header(&vn),
            Some(Header::Long {
                ty: LongType::VersionNegotiation,
                ..
            })
        ));
        assert_eq!(varint(&[0x25]), Some((37, 1)));
        assert_eq!(varint(&[0x7b, 0xbd]), Some((15293, 2)));
        assert_eq!(varint(&[0x9d, 0x7f, 0x3e, 0x7d]), Some((494_878_333, 4)));
        assert_eq!(varint(&[0xc2, 0, 0]), None);
    }

    struct Run {
        quic: Quic,
        cfg: ProtoConfig,
        counters: ProtoCounters,
        out: Vec<Sample>,
        frame: u64,
    }

    const C: &str = "10.0.0.1:50000";
    const S: &str = "10.0.0.2:443";

    impl Run {
        fn new() -> Run {
            Run {
                quic: Quic::new(64),
                cfg: ProtoConfig::default(),
                counters: ProtoCounters::default(),
                out: Vec::new(),
                frame: 0,
            }
        }
        fn send(&mut self, ms: f64, from_client: bool, d: &[u8]) {
            self.frame += 1;
            let (c, s) = (C.parse().unwrap(), S.parse().unwrap());
            let (src, dst) = if from_client { (c, s) } else { (s, c) };
            let mut cx = Cx {
                cfg: &self.cfg,
                counters: &mut self.counters,
                kinds: KindSet::ALL,
            };
            let out = &mut self.out;
            let mut obs = |x: &Sample| out.push(*x);
            let ts = (ms * 1e6) as Nanos;
            self.quic
                .datagram(&mut cx, self.frame, ts, src, dst, d, d.len(), &mut obs);
        }
        fn handshake(&mut self) {
            self.send(0.0, true, &long(0, 1, &ODCID, &CID_C, 1200));
            let answer = [
                long(0, 1, &CID_C, &CID_S, 100),
                long(2, 1, &CID_C, &CID_S, 400),
            ]
            .concat();
            self.send(40.0, false, &answer);
            self.send(41.0, true, &long(2, 1, &CID_S, &CID_C, 60));
        }
        fn kinds(&self, k: Kind) -> Vec<(u64, u64, f64)> {
            self.out
                .iter()
                .filter(|s| s.kind == k)
                .map(|s| (s.open_frame, s.frame, s.rtt_ms()))
                .collect()
        }
    }

    #[test]
    fn handshake_samples_on_both_sides() {
        let mut r = Run::new();
        r.handshake();
        assert_eq!(r.kinds(Kind::QuicHandshake), [(1, 2, 40.0), (2, 3, 1.0)]);
        assert_eq!(r.out[0].responder.to_string(), S);
        assert_eq!(r.out[1].responder.to_string(), C);
    }

    #[test]
    fn an_initial_too_small_or_an_answer_to_another_cid_is_no_connection() {
        let mut r = Run::new();
        r.send(0.0, true, &long(0, 1, &ODCID, &CID_C, 500));
        r.send(10.0, false, &long(0, 1, &CID_C, &CID_S, 100));
        // Without the fixed bit, a client's first Initial opens nothing.
        let mut nofix = long(0, 1, &ODCID, &CID_C, 1200);
        nofix[0] &= !0x40;
        r.send(15.0, true, &nofix);
        r.send(16.0, false, &long(0, 1, &CID_C, &CID_S, 100));
        r.send(20.0, true, &long(0, 1, &ODCID, &CID_C, 1200));
        r.send(30.0, false, &long(0, 1, &CID_S, &CID_S, 100));
        assert!(r.out.is_empty());
        assert_eq!(
            (r.counters.quic_initials, r.counters.quic_connections),
            (1, 0)
        );
    }

    /// The client inverts, the server reflects: every 50 ms, each direction flips once.
    #[test]
    fn a_spinning_bit_gives_one_sample_per_round_trip() {
        let mut r = Run::new();
        r.handshake();
        let mut t = 50.0;
        let mut v = false;
        for _ in 0..6 {
            v = !v;
            r.send(t, true, &short(v, &CID_S));
            r.send(t + 5.0, true, &short(v, &CID_S));
            r.send(t + 25.0, false, &short(v, &CID_C));
            t += 50.0;
        }
        let spin = r.kinds(Kind::QuicSpin);
        // The first edge of each direction has no period before it.
        assert_eq!(spin.len(), 4 + 4, "{spin:?}");
        assert!(spin.iter().all(|s| (s.2 - 50.0).abs() < 1e-9), "{spin:?}");
        r.quic.drain(&mut r.counters);
        assert_eq!(r.counters.quic_spinning, 1);
    }

    #[test]
    fn greased_and_constant_bits_give_no_sample() {
        let mut r = Run::new();
        r.handshake();
        // The client greases (a pattern with edges every packet or two), the server sends 0.
        let grease = [
            true, false, false, true, true, false, true, false, true, true, false,
        ];
        for (i, g) in grease.iter().enumerate() {
            let t = 50.0 + 30.0 * i as f64;
            r.send(t, true, &short(*g, &CID_S));
            r.send(t + 10.0, false, &short(false, &CID_C));
        }
        assert!(r.kinds(Kind::QuicSpin).is_empty());
        assert!(r.counters.quic_spin_rejected[0] > 0);
        r.quic.drain(&mut r.counters);
        assert_eq!(r.counters.quic_spin_invalid, 1);

        let mut r = Run::new();
        r.handshake();
        for i in 0..10 {
            r.send(
                50.0 + 10.0 * f64::from(i),
                i % 2 == 0,
                &short(false, &CID_S),
            );
        }
        r.quic.drain(&mut r.counters);
        assert_eq!(r.counters.quic_spin_constant, 1);
    }

    #[test]
    fn periods_below_the_floor_or_across_a_silence_are_rejected() {
        let mut r = Run::new();
        r.handshake();
        // Edges 8 ms apart against a 41 ms handshake: under the floor (a direction's first
        // packet is no edge: 3 edges, 2 periods each way).
        let mut t = 50.0;
        let mut v = false;
        for _ in 0..4 {
            v = !v;
            r.send(t, true, &short(v, &CID_S));
            r.send(t + 4.0, false, &short(v, &CID_C));
            t += 8.0;
        }
        assert!(r.kinds(Kind::QuicSpin).is_empty());
        assert_eq!(r.counters.quic_spin_rejected[1], 4);
        // Periods of 300 ms made of a 250 ms silence.
        for _ in 0..3 {
            v = !v;
            t += 250.0;
            r.send(t, true, &short(v, &CID_S));
            r.send(t + 50.0, false, &short(v, &CID_C));
            t += 50.0;
        }
        assert!(r.kinds(Kind::QuicSpin).is_empty());
        assert!(r.counters.quic_spin_rejected[2] >= 4);
    }

    #[test]
    fn an_initial_cut_by_the_capture_counts_by_its_size_on_the_wire() {
        let cfg = ProtoConfig::default();
        let mut counters = ProtoCounters::default();
        let mut q = Quic::new(16);
        let d = long(0, 1, &ODCID, &CID_C, 1200);
        let cut = &d[..200];
        let mut obs = |_: &Sample| {};
        let mut open = |q: &mut Quic, c: &mut ProtoCounters, port: u16, len: usize| {
            let mut cx = Cx {
                cfg: &cfg,
                counters: c,
                kinds: KindSet::ALL,
            };
            let src = SocketAddr::new(std::net::Ipv4Addr::new(10, 0, 0, 1).into(), port);
            q.datagram(&mut cx, 1, 0, src, S.parse().unwrap(), cut, len, &mut obs);
        };
        // 200 bytes captured of a datagram of 1,200 (a live capture's snaplen): an Initial.
        open(&mut q, &mut counters, 1000, d.len());
        assert_eq!(counters.quic_initials, 1);
        // 200 bytes that were the whole datagram: too short for a client's Initial.
        open(&mut q, &mut counters, 1001, cut.len());
        assert_eq!(counters.quic_initials, 1);
    }

    #[test]
    fn a_flood_of_initials_never_evicts_an_answered_connection() {
        let mut r = Run::new();
        r.handshake();
        let cfg = ProtoConfig::default();
        for i in 0..1000u32 {
            let mut cx = Cx {
                cfg: &cfg,
                counters: &mut r.counters,
                kinds: KindSet::ALL,
            };
            let src = SocketAddr::new(std::net::Ipv4Addr::from(0x0a01_0000 + i).into(), 1234);
            let mut obs = |_: &Sample| {};
            let d = long(0, 1, &ODCID, &CID_C, 1200);
            r.quic.datagram(
                &mut cx,
                10 + u64::from(i),
                50_000_000,
                src,
                S.parse().unwrap(),
                &d,
                d.len(),
                &mut obs,
            );
        }
        assert!(r.quic.conns.len() <= 64);
        assert!(r.counters.quic_shed >= 1000 - 64);
        assert!(
            r.quic
                .conns
                .contains_key(&(C.parse().unwrap(), S.parse().unwrap()))
        );
        assert!(r.quic.unanswered.len() <= 2 * 64 + 1);
    }
}
