//! [`Segment`]: the engine's input, the few fields of a decoded TCP packet that
//! [`crate::engine`], [`crate::flow`] and [`crate::rtt`] read, and nothing else (no payload
//! bytes, no options but the timestamp and a DSACK block, no tunnel). A caller builds one
//! from a [`Packet`] with `Segment::from(&packet)`, or straight from a frame with
//! [`Segment::decode`] when it needs nothing else of the packet; `metro analyze --threads N` hands
//! Segments from the reader's core to the shards', so it is kept small.

use std::net::IpAddr;

use crate::seq::{SeqNum, TsVal};
use crate::wire::{self, DecodeError, Packet, TcpFlags};

/// One TCP segment as the engine sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Segment {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 identification; 0 for IPv6 (tells a frame captured twice from a retransmission).
    pub ip_id: u16,
    pub sport: u16,
    pub dport: u16,
    pub flags: TcpFlags,
    pub seq: SeqNum,
    pub ack: SeqNum,
    /// Payload length from the IP header (see [`Packet::payload_len`]).
    pub payload_len: u32,
    /// The timestamp option: (TSval, TSecr).
    pub timestamp: Option<(TsVal, TsVal)>,
    /// The first SACK block when it is a DSACK (RFC 2883: its right edge at or below the
    /// cumulative ACK): the only SACK information the engine reads (docs/accuracy.md).
    pub dsack: Option<(SeqNum, SeqNum)>,
    /// The first fragment of a fragmented datagram: tracked, never timed (see
    /// [`Packet::first_fragment`]).
    pub first_fragment: bool,
}

impl Segment {
    /// The shard of a segment among `shards` (`analyze --threads`, the in-kernel capture's
    /// `threads`): a hash of its two endpoints that both directions agree on (the sum of each
    /// endpoint's mix), cheaper than hashing the canonical key, which the shard's engine does
    /// anyway. Unrelated to that table's (keyed) hash, so a shard's connections spread over
    /// its buckets as all connections would.
    #[inline]
    pub fn shard(&self, shards: usize) -> usize {
        #[inline]
        fn endpoint(ip: IpAddr, port: u16) -> u64 {
            let folded = match ip {
                IpAddr::V4(a) => u64::from(u32::from(a)),
                IpAddr::V6(a) => {
                    let b = u128::from(a);
                    (b >> 64) as u64 ^ (b as u64).rotate_left(32)
                }
            };
            let x = (folded ^ u64::from(port) << 48).wrapping_mul(0x9e37_79b9_7f4a_7c15);
            (x ^ x >> 29).wrapping_mul(0xbf58_476d_1ce4_e5b9)
        }
        let h = endpoint(self.src, self.sport).wrapping_add(endpoint(self.dst, self.dport));
        ((u64::from((h >> 32) as u32) * shards as u64) >> 32) as usize
    }

    /// The segment of one captured frame: `Segment::from(&wire::decode(linktype, frame)?)`,
    /// the same result for every frame (tested), but the common shape's fields go straight
    /// from the decoder into the Segment: moving the whole decoded [`Packet`] through a
    /// `Result` first cost about forty instructions a packet, and so does a call (always
    /// inlined: a caller decodes in its loop). For callers that need nothing
    /// else of the packet (its payload, its tunnel depth).
    #[inline(always)]
    pub fn decode(linktype: u32, frame: &[u8]) -> Result<Segment, DecodeError> {
        if let Some(ref p) = wire::decode_common(linktype, frame) {
            return Ok(Segment::from(p));
        }
        wire::decode_general(linktype, frame).map(|p| Segment::from(&p))
    }
}

impl From<&Packet<'_>> for Segment {
    #[inline]
    fn from(p: &Packet<'_>) -> Segment {
        let tcp = &p.tcp;
        let ack = SeqNum::new(tcp.ack);
        let (left, right) = tcp.options.sack[0];
        let first = (SeqNum::new(left), SeqNum::new(right));
        Segment {
            src: p.src,
            dst: p.dst,
            ip_id: p.ip_id,
            sport: tcp.sport,
            dport: tcp.dport,
            flags: tcp.flags,
            seq: SeqNum::new(tcp.seq),
            ack,
            payload_len: p.payload_len,
            timestamp: tcp
                .options
                .timestamp
                .map(|(val, ecr)| (TsVal::new(val), TsVal::new(ecr))),
            dsack: (tcp.options.sack_count > 0 && first.1.le(ack)).then_some(first),
            first_fragment: p.first_fragment,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{TcpHeader, TcpOptions};
    use std::net::Ipv4Addr;

    fn packet(ack: u32, sack: &[(u32, u32)]) -> Packet<'static> {
        let mut blocks = [(0, 0); 4];
        blocks[..sack.len()].copy_from_slice(sack);
        Packet {
            src: Ipv4Addr::new(10, 0, 0, 1).into(),
            dst: Ipv4Addr::new(10, 0, 0, 2).into(),
            ip_id: 7,
            tcp: TcpHeader {
                sport: 443,
                dport: 40000,
                seq: 100,
                ack,
                flags: TcpFlags(TcpFlags::ACK),
                options: TcpOptions {
                    timestamp: Some((5, 6)),
                    sack: blocks,
                    sack_count: sack.len() as u8,
                    ..TcpOptions::default()
                },
                ..TcpHeader::default()
            },
            payload_len: 10,
            payload: &[],
            tunnel_depth: 2,
            first_fragment: true,
        }
    }

    #[test]
    fn keeps_what_the_engine_reads() {
        let s = Segment::from(&packet(2000, &[]));
        assert_eq!(
            s,
            Segment {
                src: Ipv4Addr::new(10, 0, 0, 1).into(),
                dst: Ipv4Addr::new(10, 0, 0, 2).into(),
                ip_id: 7,
                sport: 443,
                dport: 40000,
                flags: TcpFlags(TcpFlags::ACK),
                seq: SeqNum::new(100),
                ack: SeqNum::new(2000),
                payload_len: 10,
                timestamp: Some((TsVal::new(5), TsVal::new(6))),
                dsack: None,
                first_fragment: true,
            }
        );
    }

    #[test]
    fn only_a_first_block_at_or_below_the_ack_is_a_dsack() {
        let dsack = |ack, sack: &[(u32, u32)]| {
            Segment::from(&packet(ack, sack))
                .dsack
                .map(|(l, r)| (l.get(), r.get()))
        };
        assert_eq!(dsack(2000, &[(1000, 1500)]), Some((1000, 1500)));
        assert_eq!(
            dsack(2000, &[(1000, 2000), (3000, 4000)]),
            Some((1000, 2000))
        );
        // An ordinary SACK block, above the ACK (the second block is never a DSACK).
        assert_eq!(dsack(2000, &[(3000, 4000), (1000, 1500)]), None);
        // Across the wrap of the sequence space.
        assert_eq!(dsack(10, &[(0xffff_ff00, 5)]), Some((0xffff_ff00, 5)));
        assert_eq!(dsack(0xffff_fff0, &[(0xffff_fff8, 8)]), None);
    }

    /// `Segment::decode` is `Segment::from` of the general decoder's packet (or its error)
    /// on every frame: the decoder's sample frames, mutations of them, random bytes, under
    /// every link type.
    #[test]
    fn decode_is_from_of_the_general_decoder() {
        fn same(lt: u32, frame: &[u8]) -> bool {
            let want = wire::decode_general(lt, frame).map(|p| Segment::from(&p));
            assert_eq!(
                Segment::decode(lt, frame),
                want,
                "linktype {lt}: {frame:02x?}"
            );
            want.is_ok()
        }
        // xorshift64*: deterministic pseudo-random bytes.
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        let mut next = move || {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        };
        let samples = metro_testkit::vectors::samples();
        let mut decoded = 0;
        for (lt, frame) in &samples {
            decoded += usize::from(same(*lt, frame));
        }
        assert!(
            decoded >= samples.len() / 2,
            "{decoded} of {}",
            samples.len()
        );
        let common = metro_testkit::vectors::eth_v4_tcp();
        assert!(wire::decode_common(wire::linktype::ETHERNET, &common).is_some());
        assert!(same(wire::linktype::ETHERNET, &common));
        let mut frame = Vec::new();
        for _ in 0..100_000 {
            let (lt, base) = &samples[next() as usize % samples.len()];
            frame.clear();
            frame.extend_from_slice(base);
            for _ in 0..1 + next() % 4 {
                if frame.is_empty() {
                    break;
                }
                let at = next() as usize % frame.len();
                match next() % 4 {
                    0 => frame.truncate(at),
                    1 => frame[at] ^= 1 << (next() % 8),
                    _ => frame[at] = next() as u8,
                }
            }
            same(*lt, &frame);
            let other =
                wire::linktype::SUPPORTED[next() as usize % wire::linktype::SUPPORTED.len()];
            same(other, &frame);
        }
        for _ in 0..20_000 {
            let len = next() as usize % 128;
            let bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            same(wire::linktype::ETHERNET, &bytes);
        }
    }

    #[test]
    fn stays_small() {
        // The reader's core writes every byte of it and a shard's core reads it.
        let size = std::mem::size_of::<Segment>();
        eprintln!("Segment {size} bytes");
        assert!(size <= 80, "{size}");
    }
}
