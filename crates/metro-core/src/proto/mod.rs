//! Round trips beyond TCP: QUIC ([`quic`]), DNS over UDP and TCP ([`dns`]) and ICMP/ICMPv6
//! echo ([`icmp`]), matched passively from datagrams ([`crate::wire::Datagram`]) and TCP
//! payloads. [`Tracker`] owns one bounded table per protocol, its limits ([`ProtoConfig`])
//! and what it counts ([`ProtoCounters`]); samples go to the same [`Observer`] as TCP's,
//! with their own [`Kind`]s. No I/O, no clock: time is the packet's, expiry runs in
//! [`Tracker::tick`], and [`Tracker::finish`] closes the books at the end of a capture.
//!
//! A caller hands over only what the TCP decoder did not take (a frame that is not TCP) and,
//! for DNS over TCP, a TCP segment's payload: the TCP path pays one length check per
//! segment.

pub mod dns;
pub mod icmp;
pub mod quic;

use std::collections::VecDeque;
use std::hash::Hash;
use std::net::{IpAddr, SocketAddr};

use rustc_hash::FxHashMap;

use crate::Nanos;
use crate::sample::{Kind, KindSet, Observer};
use crate::segment::Segment;
use crate::wire::{self, Datagram, DecodeError, L4};

/// [`Segment::decode`] that also gives the segment's captured payload (for DNS over TCP):
/// the same result for every frame, the common shape straight from the fast decoder.
#[inline(always)]
pub fn decode_tcp(linktype: u32, frame: &[u8]) -> Result<(Segment, &[u8]), DecodeError> {
    let mut seg = Segment::EMPTY;
    let payload = Segment::decode_into(linktype, frame, &mut seg)?;
    Ok((seg, payload))
}

/// [`decode_tcp`] into a caller's `Segment` ([`Segment::decode_into`]): `Ok(payload)`, or
/// the error with `out` holding nothing of use. A replay loop keeps one `Segment` and
/// decodes every frame into it.
#[inline(always)]
pub fn decode_tcp_into<'a>(
    linktype: u32,
    frame: &'a [u8],
    out: &mut Segment,
) -> Result<&'a [u8], DecodeError> {
    Segment::decode_into(linktype, frame, out)
}

/// Limits of the non-TCP matchers. Every table is bounded; what falls out is counted.
#[derive(Clone, Debug)]
pub struct ProtoConfig {
    /// DNS queries awaiting their response. Beyond it the oldest is dropped (counted).
    pub max_dns_pending: usize,
    /// A DNS query unanswered this long is a timeout. Long, because a late answer is still
    /// a measurement: resolvers answer SERVFAIL after 10 s or more (the corpus has 11 s),
    /// and a client gives up well before 30 s.
    pub dns_timeout: Nanos,
    /// ICMP echo requests awaiting their reply.
    pub max_icmp_pending: usize,
    /// An echo request unanswered this long is a timeout (ping waits 10 s).
    pub icmp_timeout: Nanos,
    /// QUIC connections tracked at once: a client Initial opens one, unconfirmed until the
    /// server answers; beyond the bound the oldest unconfirmed one is shed, and answered
    /// ones hold at most 3/4 of the table (a flood of Initials never evicts them).
    pub max_quic_connections: usize,
    /// A client Initial the server has not answered after this long is forgotten.
    pub quic_initial_timeout: Nanos,
    /// An answered QUIC connection with no packet for this long is forgotten.
    pub quic_idle_timeout: Nanos,
    /// A spin period during which the connection was silent (no packet either way) for
    /// this long measures the application's pause, not the network: rejected.
    pub quic_spin_max_silence: Nanos,
    /// Samples longer than this are dropped as implausible.
    pub max_rtt: Nanos,
}

impl Default for ProtoConfig {
    fn default() -> Self {
        ProtoConfig {
            max_dns_pending: 1 << 16,
            dns_timeout: 30 * 1_000_000_000,
            max_icmp_pending: 1 << 16,
            icmp_timeout: 10 * 1_000_000_000,
            max_quic_connections: 1 << 16,
            quic_initial_timeout: 10 * 1_000_000_000,
            quic_idle_timeout: 60 * 1_000_000_000,
            quic_spin_max_silence: 200_000_000,
            max_rtt: 120 * 1_000_000_000,
        }
    }
}

/// What the non-TCP matchers saw, matched, dropped and rejected. Monotonic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProtoCounters {
    /// UDP datagrams and ICMP messages looked at.
    pub datagrams: u64,
    /// Samples emitted, by kind index (only the non-TCP kinds are counted here).
    pub samples: [u64; Kind::COUNT],
    /// Answer stamped at or before its question (damaged or merged capture): no sample.
    pub non_positive: u64,
    /// Samples longer than `max_rtt`: dropped.
    pub implausible: u64,

    /// DNS responses matched to their query, by RCODE (4 bits of the header).
    pub dns_rcodes: [u64; 16],
    /// DNS queries unanswered after `dns_timeout`.
    pub dns_timeouts: u64,
    /// DNS queries still unanswered when the capture ended (younger than the timeout).
    pub dns_pending_at_end: u64,
    /// DNS-shaped responses that matched no pending query (not counted as DNS).
    pub dns_unmatched: u64,
    /// The same query again while the first was pending: timed from the first.
    pub dns_repeated: u64,
    /// Pending queries dropped because the table was full.
    pub dns_evicted: u64,

    /// Echo requests unanswered after `icmp_timeout`.
    pub icmp_timeouts: u64,
    pub icmp_pending_at_end: u64,
    /// Echo replies that matched no pending request.
    pub icmp_unmatched: u64,
    pub icmp_repeated: u64,
    pub icmp_evicted: u64,

    /// Client Initials that opened a connection entry.
    pub quic_initials: u64,
    /// Connections the server answered.
    pub quic_connections: u64,
    /// Client Initials never answered (timed out or unanswered at the end).
    pub quic_unanswered: u64,
    /// Unanswered entries shed to make room for a new Initial.
    pub quic_shed: u64,
    /// Answers not followed because answered connections held their share of the table.
    pub quic_full: u64,
    /// Answered connections whose spin bit gave samples.
    pub quic_spinning: u64,
    /// Answered connections with short-header packets whose spin bit never changed
    /// (spin disabled: a constant 0 or 1).
    pub quic_spin_constant: u64,
    /// Answered connections whose spin bit changed but never as a spinning bit does
    /// (greased per packet, or one side only): no sample.
    pub quic_spin_invalid: u64,
    /// Spin edges rejected, by reason: [the period held no edge or several edges of the
    /// other direction (greasing, reordering, a side that does not reflect), shorter than
    /// a quarter of the handshake's RTT, a silence of `quic_spin_max_silence` within the period].
    pub quic_spin_rejected: [u64; 3],
}

impl ProtoCounters {
    /// Add another tracker's counters (several files).
    pub fn add(&mut self, c: &ProtoCounters) {
        self.each_with(c, |x, y| *x += y);
    }

    /// What changed since `earlier` (the same tracker's counters at an earlier moment): the
    /// share one of several trackers adds to a total they publish together.
    pub fn since(&self, earlier: &ProtoCounters) -> ProtoCounters {
        let mut d = self.clone();
        d.each_with(earlier, |x, y| *x = x.wrapping_sub(y));
        d
    }

    /// `f` on each counter of `self` with the same counter of `c`.
    fn each_with(&mut self, c: &ProtoCounters, f: impl Fn(&mut u64, u64)) {
        fn all<const N: usize>(a: &mut [u64; N], b: &[u64; N], f: &impl Fn(&mut u64, u64)) {
            for (x, y) in a.iter_mut().zip(b) {
                f(x, *y);
            }
        }
        f(&mut self.datagrams, c.datagrams);
        all(&mut self.samples, &c.samples, &f);
        f(&mut self.non_positive, c.non_positive);
        f(&mut self.implausible, c.implausible);
        all(&mut self.dns_rcodes, &c.dns_rcodes, &f);
        f(&mut self.dns_timeouts, c.dns_timeouts);
        f(&mut self.dns_pending_at_end, c.dns_pending_at_end);
        f(&mut self.dns_unmatched, c.dns_unmatched);
        f(&mut self.dns_repeated, c.dns_repeated);
        f(&mut self.dns_evicted, c.dns_evicted);
        f(&mut self.icmp_timeouts, c.icmp_timeouts);
        f(&mut self.icmp_pending_at_end, c.icmp_pending_at_end);
        f(&mut self.icmp_unmatched, c.icmp_unmatched);
        f(&mut self.icmp_repeated, c.icmp_repeated);
        f(&mut self.icmp_evicted, c.icmp_evicted);
        f(&mut self.quic_initials, c.quic_initials);
        f(&mut self.quic_connections, c.quic_connections);
        f(&mut self.quic_unanswered, c.quic_unanswered);
        f(&mut self.quic_shed, c.quic_shed);
        f(&mut self.quic_full, c.quic_full);
        f(&mut self.quic_spinning, c.quic_spinning);
        f(&mut self.quic_spin_constant, c.quic_spin_constant);
        f(&mut self.quic_spin_invalid, c.quic_spin_invalid);
        all(&mut self.quic_spin_rejected, &c.quic_spin_rejected, &f);
    }
}

/// The name of a DNS RCODE (RFC 6895's registry, the first sixteen).
pub fn rcode_name(rcode: u8) -> &'static str {
    match rcode {
        0 => "NOERROR",
        1 => "FORMERR",
        2 => "SERVFAIL",
        3 => "NXDOMAIN",
        4 => "NOTIMP",
        5 => "REFUSED",
        6 => "YXDOMAIN",
        7 => "YXRRSET",
        8 => "NXRRSET",
        9 => "NOTAUTH",
        10 => "NOTZONE",
        11 => "DSOTYPENI",
        _ => "RESERVED",
    }
}

/// The QUIC, DNS and ICMP matchers behind one entry point.
pub struct Tracker {
    cfg: ProtoConfig,
    kinds: KindSet,
    dns: dns::Dns,
    icmp: icmp::Icmp,
    quic: quic::Quic,
    counters: ProtoCounters,
    /// When expiry runs next (every second of packet time, as the engine's), for a
    /// tracker on its own clock; one a [`crate::driver::Driver`] owns runs on the driver's
    /// ([`Tracker::on_driver_clock`]).
    next_tick: Nanos,
    own_clock: bool,
}

/// What every matcher needs to report a sample.
pub(crate) struct Cx<'a> {
    pub cfg: &'a ProtoConfig,
    pub counters: &'a mut ProtoCounters,
    pub kinds: KindSet,
}

impl Cx<'_> {
    /// Report a sample of `kind`, from `open` to (`frame`, `ts`), answered by `responder`.
    #[allow(clippy::too_many_arguments)]
    pub fn emit(
        &mut self,
        obs: &mut dyn Observer,
        kind: Kind,
        open: (Nanos, u64),
        frame: u64,
        ts: Nanos,
        responder: SocketAddr,
        peer: SocketAddr,
    ) -> bool {
        if !self.kinds.contains(kind) {
            return false;
        }
        let rtt = ts - open.0;
        if rtt <= 0 {
            self.counters.non_positive += 1;
            return false;
        }
        if rtt > self.cfg.max_rtt {
            self.counters.implausible += 1;
            return false;
        }
        self.counters.samples[kind.index()] += 1;
        obs.sample(&crate::sample::Sample {
            kind,
            frame,
            open_frame: open.1,
            ts,
            rtt,
            responder,
            peer,
            flow_id: 0,
        });
        true
    }
}

impl Tracker {
    /// Only the `kinds` asked for are tracked (a protocol none of whose kinds is asked for
    /// costs nothing).
    pub fn new(cfg: ProtoConfig, kinds: KindSet) -> Tracker {
        Tracker {
            dns: dns::Dns::new(cfg.max_dns_pending),
            icmp: icmp::Icmp::new(cfg.max_icmp_pending),
            quic: quic::Quic::new(cfg.max_quic_connections),
            cfg,
            kinds,
            counters: ProtoCounters::default(),
            next_tick: Nanos::MIN,
            own_clock: true,
        }
    }

    /// A tracker whose expiry the caller runs ([`Tracker::tick`], the driver's clock), not
    /// one of its own every second of the packet time it is handed.
    pub(crate) fn on_driver_clock(mut self) -> Tracker {
        self.own_clock = false;
        self
    }

    /// Whether any non-TCP kind is asked for.
    pub fn enabled(&self) -> bool {
        [Kind::QuicHandshake, Kind::QuicSpin, Kind::Dns, Kind::Icmp]
            .iter()
            .any(|k| self.kinds.contains(*k))
    }

    /// Whether DNS over TCP is asked for (the caller then hands over TCP payloads).
    #[inline]
    pub fn wants_tcp(&self) -> bool {
        self.kinds.contains(Kind::Dns)
    }

    pub fn counters(&self) -> &ProtoCounters {
        &self.counters
    }

    fn cx(&mut self) -> (Cx<'_>, &mut dns::Dns, &mut icmp::Icmp, &mut quic::Quic) {
        (
            Cx {
                cfg: &self.cfg,
                counters: &mut self.counters,
                kinds: self.kinds,
            },
            &mut self.dns,
            &mut self.icmp,
            &mut self.quic,
        )
    }

    /// One UDP datagram or ICMP message (frame number `frame`, time `ts`).
    pub fn datagram(&mut self, frame: u64, ts: Nanos, d: &Datagram<'_>, obs: &mut dyn Observer) {
        let kinds = self.kinds;
        self.counters.datagrams += 1;
        self.maybe_tick(ts);
        let (mut cx, dns, icmp, quic) = self.cx();
        match d.l4 {
            L4::Udp {
                sport,
                dport,
                payload,
                len,
            } => {
                let src = SocketAddr::new(d.src, sport);
                let dst = SocketAddr::new(d.dst, dport);
                if kinds.contains(Kind::Dns)
                    && dns.message(&mut cx, frame, ts, src, dst, payload, obs)
                {
                    return;
                }
                if kinds.contains(Kind::QuicHandshake) || kinds.contains(Kind::QuicSpin) {
                    quic.datagram(&mut cx, frame, ts, src, dst, payload, len, obs);
                }
            }
            L4::Icmp(m) | L4::Icmpv6(m) if kinds.contains(Kind::Icmp) => {
                icmp.message(&mut cx, frame, ts, d.src, d.dst, m, obs);
            }
            _ => {}
        }
    }

    /// Whether a TCP payload may start a DNS message (RFC 7766's two-byte length, at least
    /// a minimal message, a header with one question): a few comparisons, so the TCP path
    /// can skip [`Tracker::tcp_payload`] and what it takes to call it.
    #[inline(always)]
    pub fn may_be_dns(&self, payload: &[u8]) -> bool {
        match *payload {
            // Length, ID, flags, QDCOUNT 1.
            [l0, l1, _, _, f0, _, 0, 1, ..] => {
                usize::from(u16::from_be_bytes([l0, l1])) >= dns::MIN_MESSAGE
                    && payload.len() >= 2 + dns::MIN_MESSAGE
                    // Opcode QUERY.
                    && f0 & 0x78 == 0
                    && self.kinds.contains(Kind::Dns)
            }
            _ => false,
        }
    }

    /// A TCP segment and its captured payload (DNS over TCP): to [`Tracker::tcp_payload`]
    /// when the payload may hold a DNS message, one length check for most segments.
    #[inline]
    pub fn segment_payload(
        &mut self,
        frame: u64,
        ts: Nanos,
        seg: &Segment,
        payload: &[u8],
        obs: &mut dyn Observer,
    ) {
        // Before building any address: most segments cannot hold a DNS message.
        if !self.may_be_dns(payload) {
            return;
        }
        self.tcp_payload(
            frame,
            ts,
            SocketAddr::new(seg.src, seg.sport),
            SocketAddr::new(seg.dst, seg.dport),
            payload,
            obs,
        );
    }

    /// A frame the TCP decoder says is not TCP, its link type and bytes: its UDP datagram or
    /// ICMP message, if any, to [`Tracker::datagram`].
    #[cold]
    pub fn frame(
        &mut self,
        frame: u64,
        ts: Nanos,
        linktype: u32,
        data: &[u8],
        obs: &mut dyn Observer,
    ) {
        if !self.enabled() {
            return;
        }
        if let Some(d) = wire::decode_datagram(linktype, data) {
            self.datagram(frame, ts, &d, obs);
        }
    }

    /// The payload of one TCP segment, for DNS over TCP (RFC 7766: each message after a
    /// two-byte length). Segments without payload cost one comparison.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn tcp_payload(
        &mut self,
        frame: u64,
        ts: Nanos,
        src: SocketAddr,
        dst: SocketAddr,
        payload: &[u8],
        obs: &mut dyn Observer,
    ) {
        if payload.len() < 2 + dns::MIN_MESSAGE || !self.kinds.contains(Kind::Dns) {
            return;
        }
        self.maybe_tick(ts);
        let (mut cx, dns, _, _) = self.cx();
        dns.tcp(&mut cx, frame, ts, src, dst, payload, obs);
    }

    #[inline]
    fn maybe_tick(&mut self, ts: Nanos) {
        if self.own_clock && ts >= self.next_tick {
            self.tick(ts);
            self.next_tick = ts.saturating_add(1_000_000_000);
        }
    }

    /// Expiry on packet time: timeouts counted, old entries forgotten (run by the tracker
    /// itself every second of packet time, unless a driver owns it and runs it).
    pub fn tick(&mut self, now: Nanos) {
        let (cx, dns, icmp, quic) = self.cx();
        let (cfg, c) = (cx.cfg, cx.counters);
        dns.expire(now, cfg, c);
        icmp.expire(now, cfg, c);
        quic.expire(now, cfg, c);
    }

    /// The end of the capture at `now`: entries past their timeout count as timeouts, the
    /// others as pending at the end; QUIC connections are classified (spinning or not).
    pub fn finish(&mut self, now: Nanos) {
        self.tick(now);
        let (cx, dns, icmp, quic) = self.cx();
        let c = cx.counters;
        c.dns_pending_at_end += dns.drain();
        c.icmp_pending_at_end += icmp.drain();
        quic.drain(c);
    }
}

/// A bounded table of things awaiting an answer, oldest dropped first, each with the time
/// and frame it was seen at and a word of its own (`V`). No allocation once grown to the
/// bound.
pub(crate) struct Pending<K, V> {
    map: FxHashMap<K, (Nanos, u64, V)>,
    /// Insertion order, for dropping the oldest and for expiry; entries answered since are
    /// skipped when reached (and compacted away when they double the bound).
    order: VecDeque<(K, Nanos)>,
    cap: usize,
}

/// What [`Pending::insert`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Inserted {
    New,
    /// The key was already pending: the first is kept.
    Repeated,
    /// New, and the oldest entry was dropped to make room.
    Evicted,
}

impl<K: Copy + Eq + Hash, V: Copy> Pending<K, V> {
    pub fn new(cap: usize) -> Self {
        Pending {
            map: FxHashMap::default(),
            order: VecDeque::new(),
            cap: cap.max(1),
        }
    }

    pub fn insert(&mut self, key: K, ts: Nanos, frame: u64, v: V) -> Inserted {
        if self.map.contains_key(&key) {
            return Inserted::Repeated;
        }
        let mut evicted = false;
        while self.map.len() >= self.cap {
            let Some((k, t)) = self.order.pop_front() else {
                break;
            };
            if self.map.get(&k).is_some_and(|e| e.0 == t) {
                self.map.remove(&k);
                evicted = true;
            }
        }
        if self.order.len() >= 2 * self.cap {
            let map = &self.map;
            self.order
                .retain(|(k, t)| map.get(k).is_some_and(|e| e.0 == *t));
        }
        self.map.insert(key, (ts, frame, v));
        self.order.push_back((key, ts));
        if evicted {
            Inserted::Evicted
        } else {
            Inserted::New
        }
    }

    /// The pending entry for `key`, removed if `take` says so.
    pub fn take_if(&mut self, key: &K, take: impl FnOnce(&V) -> bool) -> Option<(Nanos, u64, V)> {
        let e = *self.map.get(key)?;
        if !take(&e.2) {
            return None;
        }
        self.map.remove(key);
        Some(e)
    }

    /// Removes the entries older than `timeout` at `now`; returns how many.
    pub fn expire(&mut self, now: Nanos, timeout: Nanos) -> u64 {
        let mut n = 0;
        while let Some(&(k, t)) = self.order.front() {
            if now.saturating_sub(t) < timeout {
                break;
            }
            self.order.pop_front();
            if self.map.get(&k).is_some_and(|e| e.0 == t) {
                self.map.remove(&k);
                n += 1;
            }
        }
        n
    }

    /// Empties the table; returns how many were pending.
    pub fn drain(&mut self) -> u64 {
        let n = self.map.len() as u64;
        self.map.clear();
        self.order.clear();
        n
    }
}

/// Whether `ip` is a multicast or broadcast destination (answers come from elsewhere).
pub(crate) fn is_group(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_multicast() || a.is_broadcast(),
        IpAddr::V6(a) => a.is_multicast(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::Sample;
    use std::net::Ipv4Addr;

    /// Floods of forged DNS responses, ICMP echo requests and replies, and QUIC-looking
    /// Initials from random sources, interleaved with one real exchange of each: the real
    /// ones keep their samples, the tables stay within their bounds, the floods are counted.
    #[test]
    fn real_traffic_keeps_its_samples_under_floods() {
        let cfg = ProtoConfig {
            max_dns_pending: 64,
            max_icmp_pending: 64,
            max_quic_connections: 64,
            ..ProtoConfig::default()
        };
        let mut t = Tracker::new(cfg, KindSet::ALL);
        let mut out: Vec<Sample> = Vec::new();
        let client: IpAddr = Ipv4Addr::new(10, 0, 0, 1).into();
        let server: IpAddr = Ipv4Addr::new(10, 0, 0, 53).into();
        #[rustfmt::skip]
        let query: [u8; 29] = [
            0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
            7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 0, 1, 0, 1,
        ];
        let mut response = query;
        response[2] = 0x81;
        response[3] = 0x80;
        let mut initial = vec![
            0xc0, 0, 0, 0, 1, 8, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0x44, 0xb0,
        ];
        initial.resize(1250, 0);
        fn udp(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, payload: &[u8]) -> Datagram<'_> {
            Datagram {
                src,
                dst,
                l4: L4::Udp {
                    sport,
                    dport,
                    payload,
                    len: payload.len(),
                },
            }
        }
        fn send(t: &mut Tracker, out: &mut Vec<Sample>, ts: Nanos, d: Datagram<'_>) {
            let frame = out.len() as u64 + 1;
            let mut obs = |s: &Sample| out.push(*s);
            t.datagram(frame, ts, &d, &mut obs);
        }
        send(
            &mut t,
            &mut out,
            1_000,
            udp(client, 40000, server, 53, &query),
        );
        for i in 0..10_000u32 {
            let forged: IpAddr = Ipv4Addr::from(0x6440_0000 + i).into();
            let ts = 2_000 + Nanos::from(i);
            if i == 10_000 - 40 {
                // The real echo request, answered before 64 forged requests follow it: the
                // flood cycles the table oldest first, so a request survives as long as
                // fewer than the bound arrive before its reply (65,536 by default: 655,360
                // forged requests a second against a 100 ms round trip).
                send(
                    &mut t,
                    &mut out,
                    ts,
                    Datagram {
                        src: client,
                        dst: server,
                        l4: L4::Icmp(&[8, 0, 0, 0, 0, 9, 0, 1]),
                    },
                );
            }
            let mut r = response;
            r[..2].copy_from_slice(&(i as u16).to_be_bytes());
            send(&mut t, &mut out, ts, udp(server, 53, client, 40000, &r));
            send(
                &mut t,
                &mut out,
                ts,
                Datagram {
                    src: forged,
                    dst: server,
                    l4: L4::Icmp(&[8, 0, 0, 0, 0, 1, 0, 1]),
                },
            );
            send(
                &mut t,
                &mut out,
                ts,
                Datagram {
                    src: forged,
                    dst: client,
                    l4: L4::Icmp(&[0, 0, 0, 0, 0, 9, 0, 1]),
                },
            );
            send(
                &mut t,
                &mut out,
                ts,
                udp(forged, 443, server, 443, &initial),
            );
        }
        send(
            &mut t,
            &mut out,
            50_000,
            udp(server, 53, client, 40000, &response),
        );
        send(
            &mut t,
            &mut out,
            50_100,
            Datagram {
                src: server,
                dst: client,
                l4: L4::Icmp(&[0, 0, 0, 0, 0, 9, 0, 1]),
            },
        );
        let got: Vec<(Kind, Nanos)> = out.iter().map(|s| (s.kind, s.rtt)).collect();
        // The forged DNS response with ID 0x1234 matched the real query first (same
        // addresses, ports, ID and question): a forger who knows all four can answer; the
        // real response then counts as unmatched. Any other ID matches nothing.
        assert_eq!(
            got,
            [
                (Kind::Dns, 0x1234 + 2_000 - 1_000),
                (Kind::Icmp, 50_100 - 11_960)
            ]
        );
        let c = t.counters();
        assert_eq!(c.dns_unmatched, 10_000);
        // Each forged reply matches nothing (another source than the real target); the
        // forged requests fill and cycle the table.
        assert!(c.icmp_unmatched >= 10_000);
        assert!(c.icmp_evicted >= 10_000 - 64);
        assert!(c.quic_shed >= 10_000 - 64);
        assert!(t.dns.pending.map.len() <= 64 && t.icmp.pending.map.len() <= 64);
        assert!(t.icmp.pending.order.len() <= 2 * 64 + 1);
    }

    #[test]
    fn may_be_dns_lets_queries_through_and_little_else() {
        let t = Tracker::new(ProtoConfig::default(), KindSet::ALL);
        #[rustfmt::skip]
        let framed: [u8; 19] = [
            0, 17, 0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1,
        ];
        assert!(t.may_be_dns(&framed));
        assert!(!t.may_be_dns(&framed[..18]), "shorter than a message");
        assert!(!t.may_be_dns(&[0; 60]), "zeros");
        let mut update = framed;
        update[4] = 0x28;
        assert!(!t.may_be_dns(&update), "opcode UPDATE");
        let tcp_only = Tracker::new(ProtoConfig::default(), KindSet(0b111));
        assert!(!tcp_only.may_be_dns(&framed), "dns not asked for");
    }

    #[test]
    fn pending_is_bounded_keeps_the_first_and_expires_in_order() {
        let mut p: Pending<u32, u8> = Pending::new(2);
        assert_eq!(p.insert(1, 10, 1, 0), Inserted::New);
        assert_eq!(p.insert(1, 11, 2, 0), Inserted::Repeated);
        assert_eq!(p.insert(2, 12, 3, 0), Inserted::New);
        assert_eq!(p.insert(3, 13, 4, 0), Inserted::Evicted);
        assert_eq!(p.map.len(), 2);
        assert!(p.take_if(&1, |_| true).is_none(), "the oldest was dropped");
        assert!(p.take_if(&2, |_| false).is_none());
        assert_eq!(p.take_if(&2, |_| true), Some((12, 3, 0)));
        // Answered entries are skipped by expiry; 3 (at 13) times out at 23.
        assert_eq!(p.expire(22, 10), 0);
        assert_eq!(p.expire(23, 10), 1);
        assert_eq!(p.map.len(), 0);
        // The order list stays bounded however many are answered.
        for i in 0..1000 {
            p.insert(i, 100 + i as Nanos, 0, 0);
            p.take_if(&i, |_| true);
        }
        assert!(p.order.len() <= 2 * 2 + 1, "{}", p.order.len());
    }
}
