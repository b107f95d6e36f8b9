//! [`Segment`]: the engine's input, the few fields of a decoded TCP packet that
//! [`crate::engine`], [`crate::flow`] and [`crate::rtt`] read, and nothing else (no payload
//! bytes, no options but the timestamp and a DSACK block, no tunnel). A caller builds one
//! from a [`Packet`] with `Segment::from(&packet)`, or straight from a frame with
//! [`Segment::decode`] when it needs nothing else of the packet; `metro analyze --threads N` hands
//! Segments from the reader's core to the shards', so it is kept small.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::seq::{SeqNum, TsVal};
use crate::wire::tcp::Split;
use crate::wire::{self, DecodeError, Packet, TcpFlags, TcpOptions};

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
    /// A segment of nothing (all addresses unspecified, all numbers 0): a starting value
    /// for a slot that [`Segment::decode_into`] fills.
    pub const EMPTY: Segment = Segment {
        src: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        dst: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        ip_id: 0,
        sport: 0,
        dport: 0,
        flags: TcpFlags(0),
        seq: SeqNum::new(0),
        ack: SeqNum::new(0),
        payload_len: 0,
        timestamp: None,
        dsack: None,
        first_fragment: false,
    };

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
    /// from the decoder into the Segment ([`Segment::decode_into`]): moving the whole
    /// decoded [`Packet`] through a `Result` first cost about forty instructions a packet,
    /// and so does a call (always inlined: a caller decodes in its loop). For callers that
    /// need nothing else of the packet (its payload, its tunnel depth).
    #[inline(always)]
    pub fn decode(linktype: u32, frame: &[u8]) -> Result<Segment, DecodeError> {
        let mut seg = Segment::EMPTY;
        Segment::decode_into(linktype, frame, &mut seg)?;
        Ok(seg)
    }
}

impl Segment {
    /// What [`Segment::decode`] gives, written into `out`, with the segment's captured
    /// payload (for DNS over TCP): `Ok(payload)` with `out` the frame's segment (every field
    /// written, nothing left of what `out` held), or the error with `out` untouched (still
    /// the previous segment, which the caller must not take for this frame's; tested). The
    /// common shape's TCP header is read straight into `out`: no `Packet`, no options but
    /// the two the engine reads, nothing moved through a `Result` (always inlined: a caller
    /// decodes in its loop).
    #[inline(always)]
    pub fn decode_into<'a>(
        linktype: u32,
        frame: &'a [u8],
        out: &mut Segment,
    ) -> Result<&'a [u8], DecodeError> {
        if linktype == wire::linktype::ETHERNET
            && let Some(payload) = Self::common_into(frame, out)
        {
            return Ok(payload);
        }
        Self::decode_general_into(linktype, frame, out)
    }

    /// The common shape ([`wire::fast`]): Ethernet, IPv4 or IPv6, TCP with its options all
    /// captured; `None` (and `out` untouched) for any other frame. Each IP version writes
    /// its own addresses into `out`: one shared write had both versions' addresses merged
    /// through the stack first.
    #[inline(always)]
    fn common_into<'a>(frame: &'a [u8], out: &mut Segment) -> Option<&'a [u8]> {
        let (ethertype, ip) = wire::fast::ethernet_ip(frame)?;
        if ethertype == wire::link::ethertype::IPV4 {
            let (ip, tcp) = wire::fast::ipv4_tcp(ip)?;
            Some(out.fill(IpAddr::V4(ip.src), IpAddr::V4(ip.dst), ip.id, &tcp))
        } else if ethertype == wire::link::ethertype::IPV6 {
            let (src, dst, tcp) = wire::fast::ipv6_tcp(ip)?;
            let (src, dst) = (Ipv6Addr::from(*src), Ipv6Addr::from(*dst));
            Some(out.fill(IpAddr::V6(src), IpAddr::V6(dst), 0, &tcp))
        } else {
            None
        }
    }

    /// Writes a common-shape segment's fields (every one) and gives its payload. No options
    /// and NOP NOP TS (most segments) are read here, other option areas out of line.
    #[inline(always)]
    fn fill<'a>(&mut self, src: IpAddr, dst: IpAddr, ip_id: u16, tcp: &Split<'a>) -> &'a [u8] {
        *self = Segment {
            src,
            dst,
            ip_id,
            sport: tcp.sport(),
            dport: tcp.dport(),
            flags: tcp.flags(),
            seq: SeqNum::new(tcp.seq()),
            ack: SeqNum::new(tcp.ack()),
            payload_len: tcp.payload_len,
            timestamp: None,
            dsack: None,
            first_fragment: false,
        };
        if !tcp.options.is_empty() {
            if let Some((val, ecr)) = TcpOptions::nop_nop_timestamp(tcp.options) {
                self.timestamp = Some((TsVal::new(val), TsVal::new(ecr)));
            } else {
                self.other_options(tcp.options);
            }
        }
        tcp.payload
    }

    /// [`Segment::fill`]'s other option areas: the timestamp and DSACK of
    /// [`TcpOptions::timestamp_and_first_sack`] (its `ack` already written).
    #[inline(never)]
    fn other_options(&mut self, options: &[u8]) {
        let (timestamp, sack) = TcpOptions::timestamp_and_first_sack(options);
        self.timestamp = timestamp.map(|(val, ecr)| (TsVal::new(val), TsVal::new(ecr)));
        self.dsack = dsack(sack, self.ack);
    }

    /// [`Segment::decode_into`]'s other frames (out of line).
    #[inline(never)]
    fn decode_general_into<'a>(
        linktype: u32,
        frame: &'a [u8],
        out: &mut Segment,
    ) -> Result<&'a [u8], DecodeError> {
        let p = wire::decode_general(linktype, frame)?;
        *out = Segment::from(&p);
        Ok(p.payload)
    }
}

/// The first SACK block, when it is a DSACK (its right edge at or below the ACK).
#[inline(always)]
fn dsack(first: Option<(u32, u32)>, ack: SeqNum) -> Option<(SeqNum, SeqNum)> {
    let (left, right) = first?;
    let right = SeqNum::new(right);
    right.le(ack).then_some((SeqNum::new(left), right))
}

impl From<&Packet<'_>> for Segment {
    #[inline]
    fn from(p: &Packet<'_>) -> Segment {
        let tcp = &p.tcp;
        let ack = SeqNum::new(tcp.ack);
        let first = (tcp.options.sack_count > 0).then_some(tcp.options.sack[0]);
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
            dsack: dsack(first, ack),
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

    /// `decode_into` (and `decode`) against the general decoder on frames built to sit on
    /// the edges of the shortcut: Ethernet with and without VLAN tags, IPv4 with and without
    /// options, fragments, IPv6 with and without extension headers, TCP option areas of
    /// every layout the shortcuts read and odd ones, IP lengths short, long and zero, TCP
    /// data offsets below 5, QinQ (0x88a8 then 0x8100, and two 0x8100 tags); each cut at
    /// every byte. Same segment (or error), same payload slice of the frame; and decoding
    /// into a `Segment` that holds another frame's fields gives the same segment (an error
    /// leaves it as it was).
    #[test]
    fn decode_into_is_from_of_the_general_decoder_on_edge_frames() {
        use metro_testkit::vectors::{cat, eth, ip6, ipv4};
        let lt = wire::linktype::ETHERNET;
        let ts = [1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6];
        let sack = [1, 1, 5, 10, 0, 0, 0x03, 0xe8, 0, 0, 0x05, 0xdc];
        let option_areas: Vec<Vec<u8>> = vec![
            vec![],
            ts.to_vec(),
            cat(&[&ts, &sack]),
            sack.to_vec(),
            // A DSACK (right edge at or below the ACK, 2000) and an ordinary SACK.
            vec![1, 1, 5, 10, 0, 0, 0x03, 0xe8, 0, 0, 0x07, 0xd0],
            vec![
                1, 1, 5, 18, 0, 0, 0x13, 0x88, 0, 0, 0x17, 0x70, 0, 0, 0x03, 0xe8, 0, 0, 0x05, 0xdc,
            ],
            // SYNs.
            vec![
                2, 4, 5, 0xb4, 4, 2, 8, 10, 0, 0, 0, 9, 0, 0, 0, 0, 1, 3, 3, 7,
            ],
            vec![2, 4, 5, 0xb4, 1, 1, 4, 2, 1, 3, 3, 7],
            vec![2, 4, 5, 0xb4, 1, 3, 3, 8, 1, 1, 4, 2],
            vec![2, 4, 5, 0xb4, 1, 3, 3, 8],
            // Odd: TS after EOL, a short TS, an unknown option, SACK of a bad length,
            // TS first without NOPs, all NOPs.
            vec![0, 0, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0, 0, 0],
            vec![1, 1, 8, 6, 0, 0, 0, 5],
            vec![30, 4, 0, 0, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6, 1, 1],
            vec![1, 1, 5, 6, 0, 0, 0, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6, 0, 0],
            vec![8, 10, 0, 0, 0, 5, 0, 0, 0, 6, 1, 1],
            vec![1; 40],
        ];
        let tcp = |opts: &[u8], payload: &[u8]| {
            assert_eq!(opts.len() % 4, 0);
            let off = (5 + opts.len() / 4) as u8;
            let fixed = [
                0x9c,
                0x40,
                0x01,
                0xbb,
                0,
                0,
                0x0f,
                0xa0,
                0,
                0,
                0x07,
                0xd0,
                off << 4,
                0x18,
                0x72,
                0x10,
                0,
                0,
                0,
                0,
            ];
            cat(&[&fixed, opts, payload])
        };
        let v4_options = |seg: &[u8]| {
            // IHL 6 (a NOP NOP NOP EOL option word).
            let mut ip = ipv4(6, &cat(&[&[1, 1, 1, 0], seg]));
            ip[0] = 0x46;
            ip
        };
        let fragment = |seg: &[u8]| {
            let mut ip = ipv4(6, seg);
            ip[6] |= 0x20; // More Fragments
            ip
        };
        let src6 = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst6 = [0x20, 1, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        // Hop-by-hop options (8 bytes, PadN) before TCP.
        let v6_ext = |seg: &[u8]| ip6(src6, dst6, 0, &cat(&[&[6, 0, 1, 4, 0, 0, 0, 0], seg]));
        let v6 = |seg: &[u8]| ip6(src6, dst6, 6, seg);
        let v4 = |seg: &[u8]| ipv4(6, seg);
        type Net<'a> = &'a dyn Fn(&[u8]) -> Vec<u8>;
        let nets: [Net<'_>; 5] = [&v4, &v4_options, &fragment, &v6, &v6_ext];
        // A stack of tags (outer first), each `[TPID, TCI]`, then the inner EtherType.
        let tagged = |tpids: &[u16], ethertype: u16, payload: &[u8]| {
            let mut types: Vec<u16> = tpids[1..].to_vec();
            types.push(ethertype);
            let tags: Vec<u8> = types
                .iter()
                .flat_map(|t| cat(&[&[0, 5], &t.to_be_bytes()]))
                .collect();
            eth(tpids[0], &cat(&[&tags, payload]))
        };
        let framings: [&[u16]; 4] = [&[], &[0x8100], &[0x88a8, 0x8100], &[0x8100, 0x8100]];
        let frame_of = |tpids: &[u16], ethertype: u16, ip: &[u8]| {
            if tpids.is_empty() {
                eth(ethertype, ip)
            } else {
                tagged(tpids, ethertype, ip)
            }
        };
        // Segments of other frames, in the `Segment` a frame is then decoded into: IPv6
        // with the timestamp and a DSACK, a first fragment of IPv4 with an IP id.
        let prevs = {
            let dsack = [1, 1, 5, 10, 0, 0, 0x03, 0xe8, 0, 0, 0x07, 0xd0];
            let a =
                Segment::decode(lt, &eth(0x86dd, &v6(&tcp(&cat(&[&ts, &dsack]), b"x")))).unwrap();
            assert!(matches!(a.src, IpAddr::V6(_)));
            assert!(a.timestamp.is_some() && a.dsack.is_some(), "{a:?}");
            let mut frag = fragment(&tcp(&ts, b""));
            frag[4..6].copy_from_slice(&0x1234u16.to_be_bytes());
            let b = Segment::decode(lt, &eth(0x0800, &frag)).unwrap();
            assert!(b.first_fragment && b.ip_id == 0x1234, "{b:?}");
            [a, b]
        };
        // Whether the shortcut alone took the frame (then it gave the general decoder's
        // segment and payload, checked here too).
        let shortcut = |frame: &[u8]| -> bool {
            let mut out = Segment::EMPTY;
            let Some(payload) = Segment::common_into(frame, &mut out) else {
                assert_eq!(
                    out,
                    Segment::EMPTY,
                    "untouched when not taken: {frame:02x?}"
                );
                return false;
            };
            let p = wire::decode_general(lt, frame).expect("the shortcut took it");
            assert_eq!(out, Segment::from(&p), "{frame:02x?}");
            assert_eq!(payload.as_ptr_range(), p.payload.as_ptr_range());
            true
        };
        let check = |frame: &[u8]| -> Result<Segment, DecodeError> {
            shortcut(frame);
            let want = wire::decode_general(lt, frame);
            let mut out = Segment::EMPTY;
            let got = Segment::decode_into(lt, frame, &mut out);
            match (&want, got) {
                (Ok(p), Ok(payload)) => {
                    assert_eq!(out, Segment::from(p), "{frame:02x?}");
                    assert_eq!(
                        payload.as_ptr_range(),
                        p.payload.as_ptr_range(),
                        "{frame:02x?}"
                    );
                }
                (Err(w), Err(g)) => assert_eq!(*w, g, "{frame:02x?}"),
                _ => panic!("{frame:02x?}: general {want:?}, decode_into {got:?}"),
            }
            assert_eq!(
                Segment::decode(lt, frame),
                want.as_ref().map(Segment::from).map_err(|e| *e)
            );
            for prev in &prevs {
                let mut reused = *prev;
                let again = Segment::decode_into(lt, frame, &mut reused);
                match (got, again) {
                    (Ok(a), Ok(b)) => {
                        assert_eq!(reused, out, "into {prev:?}: {frame:02x?}");
                        assert_eq!(a.as_ptr_range(), b.as_ptr_range(), "{frame:02x?}");
                    }
                    (Err(a), Err(b)) => {
                        assert_eq!(a, b, "{frame:02x?}");
                        assert_eq!(reused, *prev, "an error leaves it as it was");
                    }
                    _ => panic!("{frame:02x?}: fresh {got:?}, into {prev:?}: {again:?}"),
                }
            }
            want.map(|p| Segment::from(&p))
        };
        let mut decoded = 0;
        let mut frames = 0;
        let mut doubly_tagged = 0;
        let mut short_offsets = 0;
        let mut took_shortcut = 0;
        for (o, opts) in option_areas.iter().enumerate() {
            for payload in [&b""[..], b"hello"] {
                let seg = tcp(opts, payload);
                // A data offset below 5 (byte 12 of the header: 0x40, 0x00), for the first
                // two option areas (none, the timestamp).
                let short: Vec<Vec<u8>> = if o < 2 {
                    [0x40u8, 0x00]
                        .iter()
                        .map(|&b| {
                            let mut s = seg.clone();
                            s[12] = b;
                            s
                        })
                        .collect()
                } else {
                    vec![]
                };
                for (k, seg) in std::iter::once(&seg).chain(&short).enumerate() {
                    for (n, net) in nets.iter().enumerate() {
                        let mut ip = net(seg);
                        let ethertype = if n >= 3 { 0x86dd } else { 0x0800 };
                        let len_at = if n >= 3 { 4 } else { 2 };
                        let len = u16::from_be_bytes([ip[len_at], ip[len_at + 1]]);
                        // The IP length as built, short by one and by a header, long, and 0.
                        for claim in [len, len - 1, len.saturating_sub(20), len + 7, 0] {
                            ip[len_at..len_at + 2].copy_from_slice(&claim.to_be_bytes());
                            for tpids in framings {
                                let frame = frame_of(tpids, ethertype, &ip);
                                let whole = check(&frame);
                                // The shapes the shortcut exists for take it: IPv4 without
                                // options and IPv6 without extension headers, not a
                                // fragment, untagged or one tag, an IP length that holds
                                // the TCP header (as built, longer than captured, or short
                                // by one byte of payload).
                                let holds_header = claim == len
                                    || claim == len + 7
                                    || (claim == len - 1 && !payload.is_empty());
                                let common = k == 0
                                    && (n == 0 || n == 3)
                                    && holds_header
                                    && tpids.len() <= 1;
                                assert_eq!(shortcut(&frame), common, "{frame:02x?}");
                                took_shortcut += usize::from(common);
                                for cut in 0..frame.len() {
                                    check(&frame[..cut]).ok();
                                }
                                if k > 0 {
                                    // Not a TCP header, whatever the rest.
                                    assert!(whole.is_err(), "{frame:02x?}: {whole:?}");
                                    short_offsets += 1;
                                    continue;
                                }
                                if tpids.len() == 2 && whole.is_ok() {
                                    doubly_tagged += 1;
                                }
                                decoded += usize::from(whole.is_ok());
                                frames += 1;
                            }
                        }
                    }
                }
            }
        }
        // Enough of the whole frames decode that the comparison means something.
        eprintln!(
            "{decoded} of {frames} whole frames decode ({doubly_tagged} with two tags); \
             {short_offsets} with short data offsets"
        );
        assert!(decoded > frames / 2, "{decoded} of {frames}");
        assert!(doubly_tagged > frames / 4, "{doubly_tagged} of {frames}");
        assert!(short_offsets > 0);
        // Each option area, with payload under three IP lengths and without under two,
        // under IPv4 and IPv6, with and without a tag.
        assert_eq!(took_shortcut, option_areas.len() * (3 + 2) * 2 * 2);
    }

    #[test]
    fn stays_small() {
        // The reader's core writes every byte of it and a shard's core reads it.
        let size = std::mem::size_of::<Segment>();
        eprintln!("Segment {size} bytes");
        assert!(size <= 80, "{size}");
    }
}
