//! Counting each packet once on `interface: any`. On a container host a packet crosses the
//! container's host-side veth, the bridge (when routed by the host) and the uplink, and a
//! capture on `any` sees every crossing; where the host NATs (podman's and Docker's
//! masquerade towards the outside, `-p` and NodePort publishing, Kubernetes services), the
//! crossings after the NAT carry other addresses and ports. The engine recognises a late
//! copy of a segment by its IP ID or TSval (metro_core::rtt), but only after decoding and
//! tracking it, only within one connection, and not where that evidence is missing: dropping
//! the copies here first saves that work and does not depend on it.
//!
//! metro captures `any` as Linux cooked v2 (SLL2), whose header carries the interface
//! index. A sighting is a copy of an earlier one when, seen on ANOTHER interface within
//! [`WINDOW_NS`] ([`NAT_WINDOW_NS`] for a NAT copy), it has the same content: every byte of the first [`HASHED`] of the IP
//! packet and its length, but for the fields a hop or a NAT rewrites: the TTL / hop limit,
//! the IPv4 header checksum, the TCP checksum, and the addresses and ports, which are
//! compared on their own:
//! - the same addresses and ports: a plain copy (routing, bridging); the first sighting is
//!   kept.
//! - a TCP segment whose addresses or ports differ at exactly ONE end (the source: SNAT,
//!   masquerade, a DNAT'd connection's replies; or the destination: DNAT, a masqueraded
//!   connection's replies), in the same IP version: a NAT copy. What identifies it is what
//!   a NAT leaves alone: the sequence and acknowledgement numbers, flags, window, options
//!   (TSval/TSecr), the IPv4 ID, length and the payload's first bytes. Two real connections
//!   never share them: each picks its own initial sequence number (and timestamp offset),
//!   so equal payloads sent at the same moment still differ in 64 bits of seq/ack. Of the
//!   two sightings the one whose rewritten address is the inner one is kept: a container's
//!   address (`rank` 2) over an address no namespace here owns (1) over one of the host's
//!   own (0), as the caller ranks them; a tie keeps the first, as a plain copy.
//!
//! Outbound (from the container) the inner sighting comes first and the rewritten copy is
//! simply dropped. Inbound the rewritten one comes first: so each NAT copy found teaches
//! the translation (the outer addresses and ports, per direction, in a fixed table of
//! [`MAPS`]): a later packet on the outer tuple in the inbound direction is dropped on
//! sight, and its inner copy, when it comes, confirms it. A translation is forgotten when
//! an inner copy fails to come within [`NAT_WINDOW_NS`] of a drop, when a packet on the outer
//! tuple in the outbound direction comes with no inner sighting before it (the host itself
//! now uses those addresses and ports), or after [`MAP_IDLE_NS`] without a confirmed copy.
//! The only rewritten sighting that reaches the engine is thus the first inbound packet of
//! a connection NAT'd on its way in (the SYN to a published port): its outer connection
//! sees that one SYN and never gives a sample.
//!
//! The same packet twice on one interface is not a copy (a real duplicate or retransmission
//! is the engine's business). Memory is fixed: [`SLOTS`] recent packets and [`MAPS`]
//! translations, allocated once; nothing is allocated per packet.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::ops::Range;

use metro_core::wire::linktype::LINUX_SLL2;

/// How long after the first sighting a copy on another interface is recognised. Copies of
/// one packet are a few microseconds apart (one softirq); a retransmission carries a new
/// IPv4 ID or TCP timestamp and comes an RTO later.
pub const WINDOW_NS: i64 = 50_000_000;
/// The same for a NAT copy, and for the inner copy of an outer sighting dropped on sight:
/// after the NAT a packet may wait for the next hop's link-layer address (ARP or neighbour
/// discovery, retried every second), as a connection's first packets to a new server do. A
/// retransmission is never taken for one: it keeps its addresses and ports.
pub const NAT_WINDOW_NS: i64 = 3_000_000_000;
/// How long a learned translation lasts without a confirmed copy.
pub const MAP_IDLE_NS: i64 = 60_000_000_000;
/// Recent packets remembered (a power of two).
pub const SLOTS: usize = 4096;
/// Translations remembered (a power of two).
pub const MAPS: usize = 4096;
/// Bytes of the IP packet whose content is compared (headers and the start of the payload).
pub const HASHED: usize = 128;

/// Byte offsets of the Linux cooked v2 header.
mod sll2 {
    use super::Range;
    pub const PROTOCOL: Range<usize> = 0..2;
    pub const IFINDEX: Range<usize> = 4..8;
    pub const LEN: usize = 20;
}

/// Byte offsets of the IPv4 header.
mod ipv4 {
    use super::Range;
    pub const VER_IHL: usize = 0;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: Range<usize> = 10..12;
    pub const SRC: Range<usize> = 12..16;
    pub const DST: Range<usize> = 16..20;
    pub const MIN_LEN: usize = 20;
}

/// Byte offsets of the IPv6 header.
mod ipv6 {
    use super::Range;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: Range<usize> = 8..24;
    pub const DST: Range<usize> = 24..40;
    pub const LEN: usize = 40;
}

/// Byte offsets of the TCP header.
mod tcp {
    use super::Range;
    pub const SRC_PORT: Range<usize> = 0..2;
    pub const DST_PORT: Range<usize> = 2..4;
    pub const CHECKSUM: Range<usize> = 16..18;
    pub const MIN_LEN: usize = 20;
    pub const PROTOCOL: u8 = 6;
}

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;

/// A sighting's addresses and ports (IPv4 addresses in the first 4 bytes).
#[derive(Clone, Copy, Default, PartialEq, Eq, Debug)]
struct Tuple {
    src: [u8; 16],
    dst: [u8; 16],
    sport: u16,
    dport: u16,
    v6: bool,
    /// A TCP segment (only those are matched across a NAT).
    tcp: bool,
}

impl Tuple {
    fn reversed(&self) -> Tuple {
        Tuple {
            src: self.dst,
            dst: self.src,
            sport: self.dport,
            dport: self.sport,
            ..*self
        }
    }

    fn addr(&self, b: &[u8; 16]) -> IpAddr {
        if self.v6 {
            IpAddr::V6(Ipv6Addr::from(*b))
        } else {
            IpAddr::V4(Ipv4Addr::new(b[0], b[1], b[2], b[3]))
        }
    }

    fn hash(&self) -> u64 {
        let w =
            |b: &[u8; 16], i: usize| u64::from_le_bytes(b[i..i + 8].try_into().unwrap_or_default());
        let mut h = mix(0x243f_6a88_85a3_08d3, w(&self.src, 0));
        h = mix(h, w(&self.src, 8));
        h = mix(h, w(&self.dst, 0));
        h = mix(h, w(&self.dst, 8));
        mix(
            h,
            u64::from(self.sport) << 16 | u64::from(self.dport) | u64::from(self.v6) << 32,
        )
    }
}

#[derive(Clone, Copy, Default)]
struct Slot {
    key: u64,
    ifindex: u32,
    ts: i64,
    tuple: Tuple,
    /// An outer sighting dropped ahead of its inner copy (a learned translation).
    dropped_outer: bool,
}

/// A learned translation, in one direction: packets with `tuple` are the outer sightings of
/// a NAT'd connection.
#[derive(Clone, Copy, Default)]
struct Map {
    tuple: Tuple,
    used: bool,
    /// The outer sighting comes first in this direction (inbound, towards the inner
    /// address): dropped on sight. Otherwise (outbound) it comes after its inner copy.
    outer_first: bool,
    /// The last confirmed copy.
    last_ok: i64,
    /// Outer sightings dropped whose inner copy has not come yet, and the first one's time.
    unconfirmed: u32,
    since: i64,
}

/// Recognises copies of one packet across interfaces, NAT'd or not.
pub struct Dedupe {
    slots: Box<[Slot]>,
    maps: Box<[Map]>,
    /// Translations in `maps` (none: the per-packet look-up is skipped).
    learned: usize,
    /// Copies dropped so far (plain and NAT'd).
    pub copies: u64,
    /// Of those, NAT'd copies.
    pub nat_copies: u64,
    /// Outer sightings that reached the engine before their inner copy showed the NAT (a
    /// connection's first inbound packet through a DNAT).
    pub nat_outer_kept: u64,
    /// Translations forgotten because an inner copy did not come.
    pub nat_unconfirmed: u64,
}

impl Default for Dedupe {
    fn default() -> Dedupe {
        Dedupe::new()
    }
}

#[inline]
fn mix(h: u64, v: u64) -> u64 {
    (h.rotate_left(5) ^ v).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
}

/// The content key of an IP packet, without the fields a hop or a NAT changes, and its
/// addresses and ports. None when it is not IP.
fn parse(ip: &[u8]) -> Option<(u64, Tuple)> {
    let n = ip.len().min(HASHED);
    // A copy of the compared bytes with the changing fields zeroed, hashed a word at a time.
    let mut b = [0u8; HASHED];
    b[..n].copy_from_slice(&ip[..n]);
    let mut t = Tuple::default();
    let l4 = match b[0] >> 4 {
        4 if n >= ipv4::MIN_LEN => {
            let ihl = usize::from(b[ipv4::VER_IHL] & 0x0f) * 4;
            b[ipv4::TTL] = 0;
            b[ipv4::CHECKSUM].fill(0);
            t.src[..4].copy_from_slice(&b[ipv4::SRC]);
            t.dst[..4].copy_from_slice(&b[ipv4::DST]);
            b[ipv4::SRC].fill(0);
            b[ipv4::DST].fill(0);
            (b[ipv4::PROTOCOL] == tcp::PROTOCOL && ihl >= ipv4::MIN_LEN).then_some(ihl)
        }
        6 if n >= ipv6::LEN => {
            t.v6 = true;
            b[ipv6::HOP_LIMIT] = 0;
            t.src.copy_from_slice(&b[ipv6::SRC]);
            t.dst.copy_from_slice(&b[ipv6::DST]);
            b[ipv6::SRC].fill(0);
            b[ipv6::DST].fill(0);
            // TCP right after the fixed header (behind extension headers the packet is
            // compared whole, checksum and ports included, and never matched across a NAT).
            (b[ipv6::NEXT_HEADER] == tcp::PROTOCOL).then_some(ipv6::LEN)
        }
        _ => return None,
    };
    if let Some(off) = l4
        && off + tcp::MIN_LEN <= n
    {
        let h = &mut b[off..];
        t.tcp = true;
        t.sport = u16::from_be_bytes([h[tcp::SRC_PORT.start], h[tcp::SRC_PORT.start + 1]]);
        t.dport = u16::from_be_bytes([h[tcp::DST_PORT.start], h[tcp::DST_PORT.start + 1]]);
        h[tcp::SRC_PORT].fill(0);
        h[tcp::DST_PORT].fill(0);
        h[tcp::CHECKSUM].fill(0);
    }
    let mut k: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(t.v6);
    for w in b[..n.div_ceil(8) * 8].chunks_exact(8) {
        k = mix(k, u64::from_le_bytes(w.try_into().unwrap_or_default()));
    }
    Some((mix(k, ip.len() as u64), t))
}

/// The content key of an IP packet, without the fields a hop or a NAT changes (the TTL or
/// hop limit, the checksums, the addresses and TCP ports). None when it is not IP.
pub fn key(ip: &[u8]) -> Option<u64> {
    parse(ip).map(|(k, _)| k)
}

/// What a sighting is, next to an earlier one of the same content.
enum Relation {
    /// The same addresses and ports.
    Same,
    /// A NAT rewrote one end: the rewritten address of the earlier and of this sighting.
    Nat(IpAddr, IpAddr),
    /// Not a copy (different ends, or not TCP).
    Other,
}

fn relation(was: &Tuple, now: &Tuple) -> Relation {
    if was == now {
        return Relation::Same;
    }
    if !(was.tcp && now.tcp) || was.v6 != now.v6 {
        return Relation::Other;
    }
    let src_same = was.src == now.src && was.sport == now.sport;
    let dst_same = was.dst == now.dst && was.dport == now.dport;
    match (src_same, dst_same) {
        (true, false) => Relation::Nat(was.addr(&was.dst), now.addr(&now.dst)),
        (false, true) => Relation::Nat(was.addr(&was.src), now.addr(&now.src)),
        _ => Relation::Other,
    }
}

/// The content key of a segment the in-kernel capture decoded (agent::ebpf): every field
/// of the record that neither a hop nor a NAT changes (the record has no TTL or checksum;
/// its addresses and ports are the [`segment_tuple`], compared apart, as [`parse`] does).
/// The sequence and acknowledgement numbers, IP ID, flags, length and TCP timestamps.
pub fn segment_key(s: &metro_core::Segment) -> u64 {
    let (tsval, tsecr) = s.timestamp.map_or((0, 0), |(v, e)| (v.get(), e.get()));
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15 ^ u64::from(s.src.is_ipv6());
    h = mix(
        h,
        u64::from(s.ip_id) << 16 | u64::from(s.flags.0) | u64::from(s.first_fragment) << 40,
    );
    h = mix(h, u64::from(s.seq.get()) << 32 | u64::from(s.ack.get()));
    h = mix(
        h,
        u64::from(s.payload_len) << 32 | u64::from(s.timestamp.is_some()),
    );
    if let Some((l, r)) = s.dsack {
        h = mix(h, u64::from(l.get()) << 32 | u64::from(r.get()));
    }
    mix(h, u64::from(tsval) << 32 | u64::from(tsecr))
}

/// A segment's ends, as [`parse`] reads them from a frame.
fn segment_tuple(s: &metro_core::Segment) -> Tuple {
    let mut t = Tuple {
        sport: s.sport,
        dport: s.dport,
        tcp: true,
        ..Tuple::default()
    };
    for (ip, out) in [(s.src, &mut t.src), (s.dst, &mut t.dst)] {
        match ip {
            IpAddr::V4(v) => out[..4].copy_from_slice(&v.octets()),
            IpAddr::V6(v) => {
                t.v6 = true;
                out.copy_from_slice(&v.octets());
            }
        }
    }
    t
}

impl Dedupe {
    pub fn new() -> Dedupe {
        Dedupe {
            slots: vec![Slot::default(); SLOTS].into_boxed_slice(),
            maps: vec![Map::default(); MAPS].into_boxed_slice(),
            learned: 0,
            copies: 0,
            nat_copies: 0,
            nat_outer_kept: 0,
            nat_unconfirmed: 0,
        }
    }

    /// [`Self::is_copy_ranked`] with every address ranked alike: NAT copies are recognised,
    /// and the first sighting of one is kept.
    #[inline]
    pub fn is_copy(&mut self, linktype: u32, ts: i64, frame: &[u8]) -> bool {
        self.is_copy_ranked(linktype, ts, frame, |_| 1)
    }

    /// Whether this frame is a copy of one seen on another interface (drop it). Only SLL2
    /// frames carry the interface; any other link type is never a copy. `rank` orders the
    /// two rewritten addresses of a NAT copy: the higher one's sighting is kept (2: a
    /// container's, 1: unknown, 0: the host's own); it is called only for NAT copies.
    #[inline]
    pub fn is_copy_ranked(
        &mut self,
        linktype: u32,
        ts: i64,
        frame: &[u8],
        rank: impl Fn(IpAddr) -> u8,
    ) -> bool {
        if linktype != LINUX_SLL2 || frame.len() < sll2::LEN + 1 {
            return false;
        }
        let proto =
            u16::from_be_bytes([frame[sll2::PROTOCOL.start], frame[sll2::PROTOCOL.start + 1]]);
        if proto != ETHERTYPE_IPV4 && proto != ETHERTYPE_IPV6 {
            return false;
        }
        let i = sll2::IFINDEX.start;
        let ifindex = u32::from_be_bytes([frame[i], frame[i + 1], frame[i + 2], frame[i + 3]]);
        let Some((k, tuple)) = parse(&frame[sll2::LEN..]) else {
            return false;
        };
        self.check(k, tuple, ifindex, ts, rank)
    }

    /// [`Self::is_copy_ranked`] for a segment the in-kernel capture decoded, seen on
    /// `ifindex`: its content key from [`segment_key`], its ends from the segment.
    #[inline]
    pub fn is_copy_segment(
        &mut self,
        seg: &metro_core::Segment,
        ifindex: u32,
        ts: i64,
        rank: impl Fn(IpAddr) -> u8,
    ) -> bool {
        self.check(segment_key(seg), segment_tuple(seg), ifindex, ts, rank)
    }

    /// The copy check of a sighting of content `k` with ends `tuple`.
    #[inline]
    fn check(
        &mut self,
        k: u64,
        tuple: Tuple,
        ifindex: u32,
        ts: i64,
        rank: impl Fn(IpAddr) -> u8,
    ) -> bool {
        let slot_i = (k as usize) & (SLOTS - 1);
        let s = &self.slots[slot_i];
        // Either side of the first sighting: packets handled on different CPUs reach the
        // in-kernel capture's reader in an order their times may contradict by microseconds
        // (its ring buffer is ordered by when each record was reserved, after its time was
        // read).
        if s.key == k && s.ifindex != ifindex && (-WINDOW_NS..=NAT_WINDOW_NS).contains(&(ts - s.ts))
        {
            let (age, dropped_outer) = (ts - s.ts, s.dropped_outer);
            match relation(&s.tuple, &tuple) {
                Relation::Same if age.abs() <= WINDOW_NS => {
                    self.copies += 1;
                    return true;
                }
                Relation::Nat(was, now) => {
                    let prev = s.tuple;
                    if dropped_outer {
                        // The inner copy of an outer sighting dropped on sight: kept.
                        self.confirm(&prev, ts);
                        self.remember(slot_i, k, ifindex, ts, tuple, false);
                        return false;
                    }
                    let (r_was, r_now) = (rank(was), rank(now));
                    if r_now <= r_was {
                        // This one is the rewritten (or an equal) sighting: dropped.
                        self.copies += 1;
                        self.nat_copies += 1;
                        if r_now < r_was {
                            self.learn(tuple.reversed(), ts);
                        }
                        return true;
                    }
                    // The earlier sighting was the rewritten one, and went to the engine.
                    self.nat_outer_kept += 1;
                    self.learn(prev, ts);
                    self.remember(slot_i, k, ifindex, ts, tuple, false);
                    return false;
                }
                Relation::Same | Relation::Other => {}
            }
        }
        if tuple.tcp && self.learned > 0 && self.outer_on_sight(&tuple, ts) {
            self.remember(slot_i, k, ifindex, ts, tuple, true);
            self.copies += 1;
            self.nat_copies += 1;
            return true;
        }
        self.remember(slot_i, k, ifindex, ts, tuple, false);
        false
    }

    /// Note a sighting in its slot (written in place).
    #[inline]
    fn remember(&mut self, i: usize, key: u64, ifindex: u32, ts: i64, tuple: Tuple, dropped: bool) {
        let s = &mut self.slots[i];
        s.key = key;
        s.ifindex = ifindex;
        s.ts = ts;
        s.tuple = tuple;
        s.dropped_outer = dropped;
    }

    fn map_index(t: &Tuple) -> usize {
        (t.hash() as usize) & (MAPS - 1)
    }

    /// Remember a translation: `inbound` is the outer tuple in the direction where the
    /// outer sighting comes first; its reverse, where it comes second.
    fn learn(&mut self, inbound: Tuple, ts: i64) {
        for (t, outer_first) in [(inbound, true), (inbound.reversed(), false)] {
            let m = &mut self.maps[Self::map_index(&t)];
            if !(m.used && m.tuple == t) {
                if !m.used {
                    self.learned += 1;
                }
                *m = Map {
                    tuple: t,
                    used: true,
                    outer_first,
                    ..Map::default()
                };
            }
            m.last_ok = ts;
        }
    }

    fn forget(&mut self, t: &Tuple) {
        for t in [*t, t.reversed()] {
            let m = &mut self.maps[Self::map_index(&t)];
            if m.used && m.tuple == t {
                m.used = false;
                self.learned -= 1;
            }
        }
    }

    /// An inner copy came for an outer sighting dropped on sight.
    fn confirm(&mut self, outer: &Tuple, ts: i64) {
        let m = &mut self.maps[Self::map_index(outer)];
        if m.used && m.tuple == *outer {
            m.unconfirmed = m.unconfirmed.saturating_sub(1);
            m.last_ok = ts;
        }
    }

    /// Whether a packet with no earlier sighting is the outer sighting of a learned
    /// translation that comes first (drop it now; its inner copy follows). A packet on a
    /// translation's outer tuple in the other direction, with no inner sighting before it,
    /// ends the translation: the host itself uses those addresses and ports now.
    fn outer_on_sight(&mut self, t: &Tuple, ts: i64) -> bool {
        let m = &mut self.maps[Self::map_index(t)];
        if !(m.used && m.tuple == *t) {
            return false;
        }
        let stale = ts - m.last_ok > MAP_IDLE_NS;
        let unanswered = m.unconfirmed > 0 && ts - m.since > NAT_WINDOW_NS;
        if !m.outer_first || stale || unanswered {
            if unanswered {
                self.nat_unconfirmed += 1;
            }
            self.forget(t);
            return false;
        }
        if m.unconfirmed == 0 {
            m.since = ts;
        }
        m.unconfirmed += 1;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A TCP/IPv4 packet from `src` to `dst` (address, port) with this IP ID and sequence.
    fn tcp4(src: ([u8; 4], u16), dst: ([u8; 4], u16), ttl: u8, id: u16, seq: u32) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 44];
        p.extend(id.to_be_bytes());
        p.extend([0x40, 0, ttl, 6]);
        // A different IP header checksum for another TTL, as routing would write.
        p.extend([ttl.wrapping_mul(3), 0xcd]);
        p.extend(src.0);
        p.extend(dst.0);
        let mut tcp = vec![0u8; 24];
        tcp[0..2].copy_from_slice(&src.1.to_be_bytes());
        tcp[2..4].copy_from_slice(&dst.1.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = 0x18;
        tcp[16..18].copy_from_slice(&(seq as u16 ^ u16::from(ttl)).to_be_bytes());
        p.extend(tcp);
        p
    }

    fn ipv4(ttl: u8, id: u16, seq: u32) -> Vec<u8> {
        tcp4(([10, 0, 0, 2], 40000), ([10, 9, 0, 2], 80), ttl, id, seq)
    }

    fn sll2(ifindex: u32, ip: &[u8]) -> Vec<u8> {
        let proto: u16 = if ip[0] >> 4 == 6 { 0x86dd } else { 0x0800 };
        let mut f = Vec::new();
        f.extend(proto.to_be_bytes());
        f.extend([0, 0]);
        f.extend(ifindex.to_be_bytes());
        f.extend([0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
        f.extend(ip);
        f
    }

    #[test]
    fn copies_on_other_interfaces_are_dropped_once_each() {
        let mut d = Dedupe::new();
        let lt = LINUX_SLL2;
        let p = ipv4(64, 7, 1000);
        // The container's veth, then the bridge, then the uplink after routing (TTL - 1,
        // new IP checksum, a TCP checksum filled in).
        assert!(!d.is_copy(lt, 1_000, &sll2(5, &p)));
        assert!(d.is_copy(lt, 1_010, &sll2(3, &p)));
        assert!(d.is_copy(lt, 1_020, &sll2(2, &ipv4(63, 7, 1000))));
        assert_eq!(d.copies, 2);
        // The same packet again on the first interface: not a copy (a real duplicate).
        assert!(!d.is_copy(lt, 2_000, &sll2(5, &p)));
        // Another packet (new IP ID, as a retransmission has): not a copy.
        assert!(!d.is_copy(lt, 3_000, &sll2(3, &ipv4(64, 8, 1000))));
        // Another sequence number: not a copy.
        assert!(!d.is_copy(lt, 3_100, &sll2(2, &ipv4(64, 9, 2000))));
        // Beyond the window: not a copy.
        let q = ipv4(64, 10, 3000);
        assert!(!d.is_copy(lt, 10_000, &sll2(5, &q)));
        assert!(!d.is_copy(lt, 10_000 + WINDOW_NS + 1, &sll2(3, &q)));
        // Not SLL2 (no interface index): never a copy.
        assert!(!d.is_copy(1, 4_000, &p));
        assert!(!d.is_copy(1, 4_001, &p));
        assert_eq!(d.copies, 2);
        assert_eq!(d.nat_copies, 0);
    }

    #[test]
    fn ipv6_copies_ignore_the_hop_limit() {
        let mut p = vec![0x60, 0, 0, 0, 0, 24, 6, 64];
        p.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        p.extend([0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        p.extend([0u8; 24]);
        let mut routed = p.clone();
        routed[7] = 63;
        routed[40 + 16] = 0xff; // TCP checksum
        let mut other = p.clone();
        other[40 + 4] = 1; // sequence number
        let mut d = Dedupe::new();
        assert!(!d.is_copy(LINUX_SLL2, 0, &sll2(4, &p)));
        assert!(d.is_copy(LINUX_SLL2, 5, &sll2(2, &routed)));
        assert!(!d.is_copy(LINUX_SLL2, 6, &sll2(2, &other)));
        assert_eq!(key(&p), key(&routed));
        assert_ne!(key(&p), key(&other));
    }

    const CTR: [u8; 4] = [10, 88, 0, 2];
    const CTR2: [u8; 4] = [10, 88, 0, 3];
    const HOST: [u8; 4] = [192, 0, 2, 1];
    const SRV: [u8; 4] = [198, 51, 100, 7];

    /// The container's address ranks above the host's, as the agent ranks them.
    fn rank(ip: IpAddr) -> u8 {
        match ip {
            IpAddr::V4(a) if a.octets() == HOST => 0,
            IpAddr::V4(a) if a.octets()[..2] == [10, 88] => 2,
            IpAddr::V6(a) if a.segments()[0] == 0xfd88 => 2,
            IpAddr::V6(a) if a.segments()[0] == 0x2001 => 0,
            _ => 1,
        }
    }

    /// Masquerade with a port rewrite: out, the container's sighting first then the
    /// uplink's; in, the uplink's first (dropped on sight once the NAT is known) then the
    /// container's. Every packet once, each under the container's addresses.
    #[test]
    fn masquerade_both_ways_keeps_the_containers_sighting() {
        let mut d = Dedupe::new();
        let lt = LINUX_SLL2;
        let (veth, uplink) = (5, 2);
        let inner = (CTR, 40000);
        let outer = (HOST, 61000);
        let srv = (SRV, 443);
        type Kept = Vec<(u32, Vec<u8>, Vec<u8>)>;
        let mut kept: Kept = Vec::new();
        let see = |d: &mut Dedupe, kept: &mut Kept, ts: i64, ifi: u32, p: Vec<u8>| {
            if !d.is_copy_ranked(lt, ts, &sll2(ifi, &p), rank) {
                kept.push((ifi, p[12..16].to_vec(), p[16..20].to_vec()));
            }
        };
        for i in 0..20u32 {
            let ts = i64::from(i) * 1_000_000;
            // Out: SYN, data...
            see(
                &mut d,
                &mut kept,
                ts,
                veth,
                tcp4(inner, srv, 64, 100 + i as u16, 5000 + i),
            );
            see(
                &mut d,
                &mut kept,
                ts + 10,
                uplink,
                tcp4(outer, srv, 63, 100 + i as u16, 5000 + i),
            );
            // In: the reply, rewritten sighting first.
            let s = 9000 + i;
            see(
                &mut d,
                &mut kept,
                ts + 500,
                uplink,
                tcp4(srv, outer, 60, 7 + i as u16, s),
            );
            see(
                &mut d,
                &mut kept,
                ts + 510,
                veth,
                tcp4(srv, inner, 59, 7 + i as u16, s),
            );
        }
        assert_eq!(kept.len(), 40, "{kept:?}");
        assert!(
            kept.iter().all(|(ifi, ..)| *ifi == veth),
            "every kept sighting is the container's: {kept:?}"
        );
        assert_eq!(d.copies, 40);
        assert_eq!(d.nat_copies, 40);
        assert_eq!(d.nat_outer_kept, 0);
        // The host then uses the outer addresses and ports itself (the NAT's entry gone):
        // its first packet out ends the translation; its replies are kept.
        see(
            &mut d,
            &mut kept,
            10 * WINDOW_NS,
            uplink,
            tcp4(outer, srv, 64, 1, 77),
        );
        see(
            &mut d,
            &mut kept,
            10 * WINDOW_NS + 500,
            uplink,
            tcp4(srv, outer, 60, 2, 78),
        );
        assert_eq!(kept.len(), 42);
        assert_eq!(kept[41].0, uplink);
    }

    /// The first packet of a connection to a new server waits after the NAT for the next
    /// hop's address (ARP): its rewritten sighting comes 200 ms after the container's and is
    /// still its copy; a plain copy that late is not (a real duplicate, the engine's).
    #[test]
    fn a_nat_copy_delayed_by_address_resolution_is_still_a_copy() {
        let mut d = Dedupe::new();
        let srv = (SRV, 443);
        let syn = |src, ttl| tcp4(src, srv, ttl, 0, 777);
        assert!(!d.is_copy_ranked(LINUX_SLL2, 0, &sll2(5, &syn((CTR, 40000), 64)), rank));
        assert!(d.is_copy_ranked(
            LINUX_SLL2,
            200_000_000,
            &sll2(2, &syn((HOST, 61000), 63)),
            rank
        ));
        assert!(!d.is_copy_ranked(
            LINUX_SLL2,
            300_000_000,
            &sll2(3, &syn((CTR, 40000), 64)),
            rank
        ));
        assert_eq!((d.copies, d.nat_copies), (1, 1));
    }

    /// A published port (DNAT) over IPv6: the SYN's outer sighting comes first and reaches
    /// the engine (the NAT is not known yet); from then on only the container's sightings.
    #[test]
    fn dnat_over_ipv6_keeps_the_inner_sightings_after_the_first() {
        fn tcp6(src: (u16, u16), dst: (u16, u16), seq: u32) -> Vec<u8> {
            let mut p = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
            let a = |x: u16| {
                let mut b = [0u8; 16];
                b[..2].copy_from_slice(&x.to_be_bytes());
                b[15] = 9;
                b
            };
            p.extend(a(src.0));
            p.extend(a(dst.0));
            let mut tcp = vec![0u8; 20];
            tcp[0..2].copy_from_slice(&src.1.to_be_bytes());
            tcp[2..4].copy_from_slice(&dst.1.to_be_bytes());
            tcp[4..8].copy_from_slice(&seq.to_be_bytes());
            tcp[12] = 0x50;
            p.extend(tcp);
            p
        }
        let client = (0x3fff, 50000); // neither the host's nor a container's
        let published = (0x2001, 8080); // the host's address and port
        let ctr = (0xfd88, 80); // the container's
        let (uplink, veth) = (2, 6);
        let mut d = Dedupe::new();
        let drop = |d: &mut Dedupe, ts: i64, ifi: u32, p: Vec<u8>| {
            d.is_copy_ranked(LINUX_SLL2, ts, &sll2(ifi, &p), rank)
        };
        // SYN: outer first, kept (unknown yet); its inner copy kept too.
        assert!(!drop(&mut d, 0, uplink, tcp6(client, published, 1)));
        assert!(!drop(&mut d, 10, veth, tcp6(client, ctr, 1)));
        // SYN/ACK: inner first, outer dropped.
        assert!(!drop(&mut d, 100, veth, tcp6(ctr, client, 500)));
        assert!(drop(&mut d, 110, uplink, tcp6(published, client, 500)));
        // ACK and data: outer first, dropped on sight; inner kept.
        for s in 2..10 {
            let ts = i64::from(s) * 1000;
            assert!(drop(&mut d, ts, uplink, tcp6(client, published, s)));
            assert!(!drop(&mut d, ts + 10, veth, tcp6(client, ctr, s)));
        }
        assert_eq!(d.nat_outer_kept, 1);
        assert_eq!(d.nat_copies, 9);
        // An outer sighting whose inner copy never comes: that one is lost, and the
        // translation forgotten at the next one past the window.
        assert!(drop(&mut d, 100_000, uplink, tcp6(client, published, 50)));
        assert!(!drop(
            &mut d,
            100_000 + 2 * NAT_WINDOW_NS,
            uplink,
            tcp6(client, published, 51)
        ));
        assert_eq!(d.nat_unconfirmed, 1);
    }

    /// A NAT copy counted here reaches a report, and every sink through the catalog, as
    /// `kind:nat`; a routed copy as `kind:plain`; the two add up to the total, per interval.
    #[test]
    fn a_nat_copy_is_reported_as_kind_nat() {
        use crate::agent::report::{Copies, InstanceShared};
        use crate::agent::sinks::catalog::{Input, SELF};
        use std::time::Duration;
        let sh = InstanceShared::new("any".into(), vec![], Default::default(), Default::default());
        let mut d = Dedupe::new();
        let lt = LINUX_SLL2;
        let (veth, bridge, uplink) = (5, 3, 2);
        let out = |src, id| tcp4(src, (SRV, 443), 64, id, 5000);
        let report = |d: &Dedupe| {
            sh.cumulative.publish_copies(d);
            sh.take_report(sh.collect(Duration::ZERO))
        };
        // The container's packet on its veth, routed over the bridge, masqueraded out.
        assert!(!d.is_copy_ranked(lt, 0, &sll2(veth, &out((CTR, 40000), 1)), rank));
        assert!(d.is_copy_ranked(lt, 10, &sll2(bridge, &out((CTR, 40000), 1)), rank));
        assert!(d.is_copy_ranked(lt, 20, &sll2(uplink, &out((HOST, 61000), 1)), rank));
        let r = report(&d);
        assert_eq!(r.counters.packets_copies, Copies { plain: 1, nat: 1 });
        // Deltas: the next interval has two more NAT copies and nothing else.
        for (i, id) in [(1, 2), (2, 3)] {
            let ts = i * 1_000_000;
            assert!(!d.is_copy_ranked(lt, ts, &sll2(veth, &out((CTR, 40000), id)), rank));
            assert!(d.is_copy_ranked(lt, ts + 10, &sll2(uplink, &out((HOST, 61000), id)), rank));
        }
        let r = report(&d);
        assert_eq!(r.counters.packets_copies, Copies { plain: 0, nat: 2 });
        assert_eq!(d.copies, 4);
        let m = SELF
            .iter()
            .find(|m| m.name == "metro.packets.copies")
            .unwrap();
        assert_eq!(m.by, Some("kind"));
        let input = Input {
            report: &r,
            errors: Default::default(),
        };
        assert_eq!((m.points)(&input), [("plain", 0), ("nat", 2)]);
    }

    /// What identifies a copy: two real connections of two containers to one server, with
    /// equal payloads at the same moment, differ in their sequence numbers (and IP IDs):
    /// never merged, though one end (the server's) is the same. Only all of seq, ack, IP ID,
    /// flags, window, options and payload equal with one end rewritten makes a NAT copy.
    #[test]
    fn two_real_connections_with_equal_payloads_are_never_merged() {
        let mut d = Dedupe::new();
        let srv = (SRV, 80);
        let a = tcp4((CTR, 40000), srv, 64, 300, 123_456);
        let b = tcp4((CTR2, 40000), srv, 64, 300, 987_654);
        assert!(!d.is_copy_ranked(LINUX_SLL2, 0, &sll2(5, &a), rank));
        assert!(!d.is_copy_ranked(LINUX_SLL2, 1, &sll2(6, &b), rank));
        // The same sequence number but another IP ID: not merged either.
        let c = tcp4((CTR2, 40001), srv, 64, 301, 123_456);
        assert!(!d.is_copy_ranked(LINUX_SLL2, 2, &sll2(6, &c), rank));
        // Both ends different (another server): never a NAT copy, even with equal content.
        let mut d2 = Dedupe::new();
        let e = tcp4((CTR2, 40000), (SRV, 81), 64, 300, 123_456);
        assert!(!d2.is_copy_ranked(LINUX_SLL2, 0, &sll2(5, &a), rank));
        assert!(!d2.is_copy_ranked(LINUX_SLL2, 3, &sll2(6, &e), rank));
        assert_eq!(d.copies + d2.copies, 0);
        // Equal in everything a NAT keeps, one end rewritten: a copy.
        let f = tcp4((HOST, 61000), srv, 63, 300, 123_456);
        assert!(d.is_copy_ranked(LINUX_SLL2, 4, &sll2(2, &f), rank));
        assert_eq!(d.nat_copies, 1);
    }
}
