//! [`Segment`]: the engine's input, the few fields of a decoded TCP packet that
//! [`crate::engine`], [`crate::flow`] and [`crate::rtt`] read, and nothing else (no payload
//! bytes, no options but the timestamp and a DSACK block, no tunnel). Every caller builds one
//! from a [`Packet`] with `Segment::from(&packet)`; `metro analyze --threads N` hands
//! Segments from the reader's core to the shards', so it is kept small.

use std::net::IpAddr;

use crate::seq::{SeqNum, TsVal};
use crate::wire::{Packet, TcpFlags};

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

    #[test]
    fn stays_small() {
        // The reader's core writes every byte of it and a shard's core reads it.
        let size = std::mem::size_of::<Segment>();
        eprintln!("Segment {size} bytes");
        assert!(size <= 80, "{size}");
    }
}
