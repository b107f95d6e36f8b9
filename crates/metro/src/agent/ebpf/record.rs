//! The record the in-kernel program writes per TCP segment (`struct record` in
//! crates/metro/bpf/capture.bpf.c) and its reading into the engine's [`Segment`]: plain
//! bytes in, no `unsafe` (the ring buffer hands over a byte slice; each field is read at its
//! offset). The DSACK rule (the first SACK block at or below the ACK) is applied here, as
//! `Segment::from` applies it, so the kernel only copies the block.
//!
//! Beside it, the raw-frame record (`struct raw`, [`RawFrame`]): a frame the program hands
//! over whole (its first 256 bytes) because it does not decode it, or because it is a UDP or
//! ICMP frame user space asked for. The two are told apart by their size.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use metro_core::Segment;
use metro_core::seq::{SeqNum, TsVal};
use metro_core::wire::TcpFlags;

/// The bytes of a record up to its last field (the kernel pads it to 96).
pub const RECORD_LEN: usize = 92;

const BIT_IPV6: u32 = 1;
const BIT_TIMESTAMP: u32 = 2;
const BIT_SACK: u32 = 4;
const BIT_FIRST_FRAGMENT: u32 = 8;
const BIT_EGRESS: u32 = 16;

/// Field offsets in `struct record`.
mod field {
    pub const TS: usize = 0;
    pub const CGROUP: usize = 8;
    pub const SRC: usize = 16;
    pub const DST: usize = 32;
    pub const IFINDEX: usize = 48;
    pub const SEQ: usize = 52;
    pub const ACK: usize = 56;
    pub const PAYLOAD_LEN: usize = 60;
    pub const TSVAL: usize = 64;
    pub const TSECR: usize = 68;
    pub const SACK_LEFT: usize = 72;
    pub const SACK_RIGHT: usize = 76;
    pub const SPORT: usize = 80;
    pub const DPORT: usize = 82;
    pub const IP_ID: usize = 84;
    pub const FLAGS: usize = 86;
    pub const BITS: usize = 88;
}

/// One record, read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    /// CLOCK_MONOTONIC nanoseconds when the program ran.
    pub mono_ns: u64,
    /// The interface the segment crossed.
    pub ifindex: u32,
    /// Whether it was leaving the interface.
    pub egress: bool,
    /// On egress, the cgroup (v2) id of the sending socket; 0 otherwise.
    pub cgroup: u64,
    pub segment: Segment,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(w)
}

fn addr(b: &[u8], at: usize, v6: bool) -> IpAddr {
    if v6 {
        let mut a = [0u8; 16];
        a.copy_from_slice(&b[at..at + 16]);
        IpAddr::V6(Ipv6Addr::from(a))
    } else {
        IpAddr::V4(Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3]))
    }
}

impl Record {
    /// Reads a record; None when `b` is shorter than one or is a raw-frame record.
    pub fn parse(b: &[u8]) -> Option<Record> {
        if b.len() < RECORD_LEN || b.len() == RAW_RECORD_LEN {
            return None;
        }
        // One length the compiler sees: no bounds check per field.
        let b: &[u8; RECORD_LEN] = b[..RECORD_LEN].try_into().ok()?;
        let bits = u32_at(b, field::BITS);
        let v6 = bits & BIT_IPV6 != 0;
        let ack = SeqNum::new(u32_at(b, field::ACK));
        let sack = (
            SeqNum::new(u32_at(b, field::SACK_LEFT)),
            SeqNum::new(u32_at(b, field::SACK_RIGHT)),
        );
        let segment = Segment {
            src: addr(b, field::SRC, v6),
            dst: addr(b, field::DST, v6),
            ip_id: u16_at(b, field::IP_ID),
            sport: u16_at(b, field::SPORT),
            dport: u16_at(b, field::DPORT),
            flags: TcpFlags(u16_at(b, field::FLAGS)),
            seq: SeqNum::new(u32_at(b, field::SEQ)),
            ack,
            payload_len: u32_at(b, field::PAYLOAD_LEN),
            timestamp: (bits & BIT_TIMESTAMP != 0).then(|| {
                (
                    TsVal::new(u32_at(b, field::TSVAL)),
                    TsVal::new(u32_at(b, field::TSECR)),
                )
            }),
            dsack: (bits & BIT_SACK != 0 && sack.1.le(ack)).then_some(sack),
            first_fragment: bits & BIT_FIRST_FRAGMENT != 0,
        };
        Some(Record {
            mono_ns: u64_at(b, field::TS),
            ifindex: u32_at(b, field::IFINDEX),
            egress: bits & BIT_EGRESS != 0,
            cgroup: u64_at(b, field::CGROUP),
            segment,
        })
    }
}

/// The size of a raw-frame record (`struct raw`): what tells it from a [`Record`].
pub const RAW_RECORD_LEN: usize = 288;

/// The bytes of a frame a raw-frame record carries at most (`RAW_BYTES`).
pub const RAW_BYTES: usize = 256;

/// Why the program handed a frame over whole (`R_*` in capture.bpf.c).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RawReason {
    /// A link layer, tunnel or header chain the program does not walk (MPLS, PPPoE, a
    /// third VLAN tag, IP-in-IP, GRE, more IPv6 extension headers than it follows).
    Unparsed,
    /// IP or TCP headers the program found truncated or impossible.
    Malformed,
    /// A watched UDP datagram (when user space asked for them).
    Udp,
    /// A watched ICMP or ICMPv6 message (when user space asked for them).
    Icmp,
    /// A watched TCP segment whose payload may be a DNS message (DNS over TCP, when user
    /// space asked for them): the tracker needs its payload.
    Dns,
}

impl RawReason {
    /// Every reason, in the order of the counters' index ([`RawReason::index`]).
    pub const ALL: [RawReason; 5] = [
        RawReason::Unparsed,
        RawReason::Malformed,
        RawReason::Udp,
        RawReason::Icmp,
        RawReason::Dns,
    ];

    fn from_code(c: u16) -> Option<RawReason> {
        match c {
            1 => Some(RawReason::Unparsed),
            2 => Some(RawReason::Malformed),
            3 => Some(RawReason::Udp),
            4 => Some(RawReason::Icmp),
            5 => Some(RawReason::Dns),
            _ => None,
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }

    /// The metric tag value (`metro.packets.raw`, `reason:`).
    pub fn name(self) -> &'static str {
        crate::agent::report::RAW_REASONS[self.index()]
    }
}

/// A frame handed over whole: its first bytes, for metro-core's decoder.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawFrame<'a> {
    pub mono_ns: u64,
    pub ifindex: u32,
    pub egress: bool,
    pub cgroup: u64,
    /// The frame's length on the wire (more than `data` holds when it was cut).
    pub len: u32,
    pub reason: RawReason,
    /// The frame starts at the IP header (tun, WireGuard, IP tunnels): no link layer.
    pub l3: bool,
    pub data: &'a [u8],
}

mod raw_field {
    pub const TS: usize = 0;
    pub const CGROUP: usize = 8;
    pub const IFINDEX: usize = 16;
    pub const LEN: usize = 20;
    pub const CAPLEN: usize = 24;
    pub const REASON: usize = 28;
    pub const BITS: usize = 30;
    pub const DATA: usize = 32;
}

const RAW_EGRESS: u16 = 1;
const RAW_L3: u16 = 2;

impl<'a> RawFrame<'a> {
    /// Reads a raw-frame record; None unless `b` is one (its size) with a known reason.
    pub fn parse(b: &'a [u8]) -> Option<RawFrame<'a>> {
        if b.len() != RAW_RECORD_LEN {
            return None;
        }
        let bits = u16_at(b, raw_field::BITS);
        let caplen = (u32_at(b, raw_field::CAPLEN) as usize).min(RAW_BYTES);
        Some(RawFrame {
            mono_ns: u64_at(b, raw_field::TS),
            ifindex: u32_at(b, raw_field::IFINDEX),
            egress: bits & RAW_EGRESS != 0,
            cgroup: u64_at(b, raw_field::CGROUP),
            len: u32_at(b, raw_field::LEN),
            reason: RawReason::from_code(u16_at(b, raw_field::REASON))?,
            l3: bits & RAW_L3 != 0,
            data: &b[raw_field::DATA..raw_field::DATA + caplen],
        })
    }

    /// The link type metro-core decodes `data` as: Ethernet, or raw IP.
    pub fn linktype(&self) -> u32 {
        if self.l3 {
            metro_core::wire::linktype::RAW
        } else {
            metro_core::wire::linktype::ETHERNET
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the program lays it out, field by field (host order, addresses as on
    /// the wire).
    fn bytes(v6: bool, sack: Option<(u32, u32)>, ts: Option<(u32, u32)>) -> Vec<u8> {
        let mut b = vec![0u8; 96];
        b[0..8].copy_from_slice(&123_456_789u64.to_ne_bytes());
        b[8..16].copy_from_slice(&77u64.to_ne_bytes());
        if v6 {
            b[16..32].copy_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
            b[32..48].copy_from_slice(&"2001:db8::2".parse::<Ipv6Addr>().unwrap().octets());
        } else {
            b[16..20].copy_from_slice(&[10, 0, 0, 1]);
            b[32..36].copy_from_slice(&[10, 0, 0, 2]);
        }
        b[48..52].copy_from_slice(&3u32.to_ne_bytes());
        b[52..56].copy_from_slice(&1000u32.to_ne_bytes());
        b[56..60].copy_from_slice(&2000u32.to_ne_bytes());
        b[60..64].copy_from_slice(&1448u32.to_ne_bytes());
        let mut bits = u32::from(v6) | BIT_EGRESS;
        if let Some((v, e)) = ts {
            b[64..68].copy_from_slice(&v.to_ne_bytes());
            b[68..72].copy_from_slice(&e.to_ne_bytes());
            bits |= BIT_TIMESTAMP;
        }
        if let Some((l, r)) = sack {
            b[72..76].copy_from_slice(&l.to_ne_bytes());
            b[76..80].copy_from_slice(&r.to_ne_bytes());
            bits |= BIT_SACK;
        }
        b[80..82].copy_from_slice(&443u16.to_ne_bytes());
        b[82..84].copy_from_slice(&40000u16.to_ne_bytes());
        b[84..86].copy_from_slice(&7u16.to_ne_bytes());
        b[86..88].copy_from_slice(&0x118u16.to_ne_bytes());
        b[88..92].copy_from_slice(&bits.to_ne_bytes());
        b
    }

    #[test]
    fn reads_every_field() {
        let r = Record::parse(&bytes(false, None, Some((5, 6)))).unwrap();
        assert_eq!(r.mono_ns, 123_456_789);
        assert_eq!((r.ifindex, r.egress, r.cgroup), (3, true, 77));
        let s = r.segment;
        assert_eq!(s.src, "10.0.0.1".parse::<IpAddr>().unwrap());
        assert_eq!(s.dst, "10.0.0.2".parse::<IpAddr>().unwrap());
        assert_eq!((s.sport, s.dport, s.ip_id), (443, 40000, 7));
        assert_eq!(
            s.flags,
            TcpFlags(TcpFlags::ACK | TcpFlags::PSH | TcpFlags::AE)
        );
        assert_eq!(
            (s.seq.get(), s.ack.get(), s.payload_len),
            (1000, 2000, 1448)
        );
        assert_eq!(s.timestamp, Some((TsVal::new(5), TsVal::new(6))));
        assert_eq!((s.dsack, s.first_fragment), (None, false));
        let r = Record::parse(&bytes(true, None, None)).unwrap();
        assert_eq!(r.segment.dst, "2001:db8::2".parse::<IpAddr>().unwrap());
        assert_eq!(r.segment.timestamp, None);
    }

    #[test]
    fn a_sack_block_is_a_dsack_only_at_or_below_the_ack() {
        let dsack = |l, r| {
            Record::parse(&bytes(false, Some((l, r)), None))
                .unwrap()
                .segment
                .dsack
        };
        assert_eq!(
            dsack(1500, 2000),
            Some((SeqNum::new(1500), SeqNum::new(2000)))
        );
        assert_eq!(dsack(3000, 4000), None);
    }

    #[test]
    fn reads_a_raw_frame_record() {
        let mut b = vec![0u8; RAW_RECORD_LEN];
        b[0..8].copy_from_slice(&5u64.to_ne_bytes());
        b[8..16].copy_from_slice(&9u64.to_ne_bytes());
        b[16..20].copy_from_slice(&4u32.to_ne_bytes());
        b[20..24].copy_from_slice(&1514u32.to_ne_bytes());
        b[24..28].copy_from_slice(&256u32.to_ne_bytes());
        b[28..30].copy_from_slice(&1u16.to_ne_bytes());
        b[30..32].copy_from_slice(&RAW_EGRESS.to_ne_bytes());
        b[32] = 0xaa;
        b[287] = 0xbb;
        let r = RawFrame::parse(&b).unwrap();
        assert_eq!((r.mono_ns, r.cgroup, r.ifindex, r.len), (5, 9, 4, 1514));
        assert_eq!(
            (r.reason, r.egress, r.l3),
            (RawReason::Unparsed, true, false)
        );
        assert_eq!(r.data.len(), 256);
        assert_eq!((r.data[0], r.data[255]), (0xaa, 0xbb));
        assert_eq!(r.linktype(), metro_core::wire::linktype::ETHERNET);
        // A short copy, an IP-level frame, UDP.
        b[24..28].copy_from_slice(&60u32.to_ne_bytes());
        b[28..30].copy_from_slice(&3u16.to_ne_bytes());
        b[30..32].copy_from_slice(&RAW_L3.to_ne_bytes());
        let r = RawFrame::parse(&b).unwrap();
        assert_eq!((r.data.len(), r.reason, r.l3), (60, RawReason::Udp, true));
        assert_eq!(r.linktype(), metro_core::wire::linktype::RAW);
        // A caplen past the buffer is held to it; an unknown reason or another size refused.
        b[24..28].copy_from_slice(&4000u32.to_ne_bytes());
        assert_eq!(RawFrame::parse(&b).unwrap().data.len(), RAW_BYTES);
        b[28..30].copy_from_slice(&9u16.to_ne_bytes());
        assert_eq!(RawFrame::parse(&b), None);
        assert_eq!(RawFrame::parse(&b[..96]), None);
    }

    #[test]
    fn short_input_is_refused() {
        assert_eq!(Record::parse(&[0u8; RECORD_LEN - 1]), None);
    }
}
