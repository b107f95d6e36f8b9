//! Counting each packet once on `interface: any`. On a container host a packet crosses the
//! container's host-side veth, the bridge (when routed by the host) and the uplink, and a
//! capture on `any` sees every crossing. The engine recognises a late copy of a segment by
//! its IP ID or TSval (metro_core::rtt), but only after decoding and tracking it, and not
//! where that evidence is missing (`trust_ip_id: false`, no timestamps): dropping the copies
//! here first saves that work for two packets in three and does not depend on it.
//!
//! metro captures `any` as Linux cooked v2 (SLL2), whose header carries the interface
//! index, and recognises a copy by its content: the same IP packet (every header field but
//! the TTL / hop limit and the IPv4 header checksum, which routing changes, and the TCP
//! checksum, which offload may leave partial on one interface) seen on ANOTHER interface
//! within [`WINDOW_NS`] of the first sighting. The first sighting is kept; the copies are
//! dropped and counted. The same packet twice on one interface is not a copy (a real
//! duplicate or retransmission is the engine's business). A copy whose addresses were
//! rewritten (NAT on the uplink) is a different packet to this test: see the README.
//!
//! Memory is fixed: a direct-mapped table of [`SLOTS`] recent packets.

use metro_core::wire::linktype::LINUX_SLL2;

/// How long after the first sighting a copy on another interface is recognised. Copies of
/// one packet are a few microseconds apart (one softirq); a retransmission carries a new
/// IPv4 ID or TCP timestamp and comes an RTO later.
pub const WINDOW_NS: i64 = 50_000_000;
/// Recent packets remembered (a power of two).
pub const SLOTS: usize = 4096;
/// Bytes of the IP packet hashed (headers and the start of the payload).
const HASHED: usize = 128;

#[derive(Clone, Copy, Default)]
struct Slot {
    key: u64,
    ifindex: u32,
    ts: i64,
}

/// Recognises copies of one packet across interfaces.
pub struct Dedupe {
    slots: Box<[Slot]>,
    /// Copies dropped so far.
    pub copies: u64,
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

/// The content key of an IP packet, without the fields a hop changes. None when it is not
/// IP.
pub fn key(ip: &[u8]) -> Option<u64> {
    let n = ip.len().min(HASHED);
    // A copy of the hashed bytes with the changing fields zeroed, hashed a word at a time.
    let mut b = [0u8; HASHED];
    b[..n].copy_from_slice(&ip[..n]);
    match b[0] >> 4 {
        4 if n >= 20 => {
            let ihl = usize::from(b[0] & 0x0f) * 4;
            b[8] = 0; // TTL
            b[10] = 0; // header checksum
            b[11] = 0;
            if b[9] == 6 && ihl >= 20 && ihl + 18 <= n {
                b[ihl + 16] = 0; // TCP checksum
                b[ihl + 17] = 0;
            }
        }
        6 if n >= 40 => {
            b[7] = 0; // hop limit
            // The TCP checksum, right after the fixed header (extension headers are hashed
            // whole, checksum included).
            if b[6] == 6 && n >= 58 {
                b[56] = 0;
                b[57] = 0;
            }
        }
        _ => return None,
    }
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for w in b[..n.div_ceil(8) * 8].chunks_exact(8) {
        h = mix(h, u64::from_le_bytes(w.try_into().unwrap_or_default()));
    }
    Some(mix(h, ip.len() as u64))
}

/// The content key of a segment the in-kernel capture decoded (agent::ebpf): every field
/// the engine reads, none that a hop changes (the record has no TTL or checksum).
pub fn segment_key(s: &metro_core::Segment) -> u64 {
    let addr = |a: std::net::IpAddr| match a {
        std::net::IpAddr::V4(v) => u128::from(u32::from(v)),
        std::net::IpAddr::V6(v) => u128::from(v),
    };
    let mut h: u64 = 0x9e37_79b9_7f4a_7c15;
    for a in [addr(s.src), addr(s.dst)] {
        h = mix(h, a as u64);
        h = mix(h, (a >> 64) as u64);
    }
    let (tsval, tsecr) = s.timestamp.map_or((0, 0), |(v, e)| (v.get(), e.get()));
    h = mix(
        h,
        u64::from(s.sport) << 48
            | u64::from(s.dport) << 32
            | u64::from(s.ip_id) << 16
            | u64::from(s.flags.0),
    );
    h = mix(h, u64::from(s.seq.get()) << 32 | u64::from(s.ack.get()));
    h = mix(
        h,
        u64::from(s.payload_len) << 32 | u64::from(s.timestamp.is_some()),
    );
    mix(h, u64::from(tsval) << 32 | u64::from(tsecr))
}

impl Dedupe {
    pub fn new() -> Dedupe {
        Dedupe {
            slots: vec![Slot::default(); SLOTS].into_boxed_slice(),
            copies: 0,
        }
    }

    /// Whether this frame is a copy of one seen on another interface (drop it). Only SLL2
    /// frames carry the interface; any other link type is never a copy.
    #[inline]
    pub fn is_copy(&mut self, linktype: u32, ts: i64, frame: &[u8]) -> bool {
        if linktype != LINUX_SLL2 || frame.len() < 21 {
            return false;
        }
        let proto = u16::from_be_bytes([frame[0], frame[1]]);
        if proto != 0x0800 && proto != 0x86dd {
            return false;
        }
        let ifindex = u32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
        let Some(k) = key(&frame[20..]) else {
            return false;
        };
        self.is_copy_key(k, ifindex, ts)
    }

    /// Whether a packet of content key `k` (from [`key`] or [`segment_key`]) seen on
    /// `ifindex` at `ts` is a copy of one seen on another interface (drop it).
    #[inline]
    pub fn is_copy_key(&mut self, k: u64, ifindex: u32, ts: i64) -> bool {
        let slot = &mut self.slots[(k as usize) & (SLOTS - 1)];
        // Either side of the first sighting: packets handled on different CPUs reach the
        // reader in an order their times may contradict by microseconds (the in-kernel
        // capture's ring buffer is ordered by when each record was reserved, after its time
        // was read).
        if slot.key == k
            && slot.ifindex != ifindex
            && (-WINDOW_NS..=WINDOW_NS).contains(&(ts - slot.ts))
        {
            self.copies += 1;
            return true;
        }
        *slot = Slot {
            key: k,
            ifindex,
            ts,
        };
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(ttl: u8, id: u16, seq: u32, tcp_csum: u16) -> Vec<u8> {
        let mut p = vec![
            0x45,
            0,
            0,
            44,
            (id >> 8) as u8,
            id as u8,
            0x40,
            0,
            ttl,
            6,
            0xab,
            0xcd,
            10,
            0,
            0,
            2,
            10,
            9,
            0,
            2,
        ];
        let mut tcp = vec![0u8; 24];
        tcp[0..2].copy_from_slice(&40000u16.to_be_bytes());
        tcp[2..4].copy_from_slice(&80u16.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[12] = 0x50;
        tcp[13] = 0x18;
        tcp[16..18].copy_from_slice(&tcp_csum.to_be_bytes());
        p.extend(tcp);
        // A different IP header checksum for another TTL, as routing would write.
        p[10] = ttl.wrapping_mul(3);
        p
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
        let p = ipv4(64, 7, 1000, 0x1111);
        // The container's veth, then the bridge, then the uplink after routing (TTL - 1,
        // new IP checksum, a TCP checksum filled in).
        assert!(!d.is_copy(lt, 1_000, &sll2(5, &p)));
        assert!(d.is_copy(lt, 1_010, &sll2(3, &p)));
        assert!(d.is_copy(lt, 1_020, &sll2(2, &ipv4(63, 7, 1000, 0x2222))));
        assert_eq!(d.copies, 2);
        // The same packet again on the first interface: not a copy (a real duplicate).
        assert!(!d.is_copy(lt, 2_000, &sll2(5, &p)));
        // Another packet (new IP ID, as a retransmission has): not a copy.
        assert!(!d.is_copy(lt, 3_000, &sll2(3, &ipv4(64, 8, 1000, 0x1111))));
        // Another sequence number: not a copy.
        assert!(!d.is_copy(lt, 3_100, &sll2(2, &ipv4(64, 9, 2000, 0x1111))));
        // Beyond the window: not a copy.
        let q = ipv4(64, 10, 3000, 0);
        assert!(!d.is_copy(lt, 10_000, &sll2(5, &q)));
        assert!(!d.is_copy(lt, 10_000 + WINDOW_NS + 1, &sll2(3, &q)));
        // Not SLL2 (no interface index): never a copy.
        assert!(!d.is_copy(1, 4_000, &p));
        assert!(!d.is_copy(1, 4_001, &p));
        assert_eq!(d.copies, 2);
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
}
