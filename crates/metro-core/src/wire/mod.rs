//! Decoding one captured frame into a borrowed view of its innermost TCP segment.
//!
//! Owns: link layers, VLAN/MPLS/PPPoE, IPv4/IPv6 (extension headers), tunnels (IP-in-IP,
//! GRE/ERSPAN, VXLAN, Geneve, GTP-U, Teredo, AYIYA, L2TP), TCP header and options. Never
//! allocates, never panics: every read is bounds-checked and a malformed option ends option
//! parsing while keeping the header.
//!
//! Files: `link.rs` (everything before the IP header, per LINKTYPE), `ip.rs` (IPv4/IPv6 and
//! the loop down through nested IP headers), `tunnel.rs` (GRE/ERSPAN and the UDP tunnels:
//! VXLAN, Geneve, GTP-U, Teredo, AYIYA, L2TPv2), `tcp.rs` (TCP header and options).
//! The innermost TCP wins; [`Packet::tunnel_depth`] counts the IP headers around it.

pub mod datagram;
pub(crate) mod fast;
pub mod ip;
pub mod link;
pub mod tcp;
pub mod tunnel;

#[cfg(test)]
mod testutil;

use std::net::IpAddr;

pub use datagram::{Datagram, L4, decode_datagram};
pub use tcp::{TcpFlags, TcpOptions};

/// LINKTYPE_* values metro decodes (see <https://www.tcpdump.org/linktypes.html>).
pub mod linktype {
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    pub const PPP: u32 = 9;
    pub const RAW_12: u32 = 12;
    pub const RAW_14: u32 = 14;
    pub const PPP_HDLC: u32 = 50;
    pub const PPP_ETHER: u32 = 51;
    pub const RAW: u32 = 101;
    pub const C_HDLC: u32 = 104;
    pub const LOOP: u32 = 108;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
    pub const NFLOG: u32 = 239;
    pub const FDDI: u32 = 10;
    pub const IEEE802_11: u32 = 105;
    pub const IEEE802_11_RADIOTAP: u32 = 127;
    pub const ARCNET_LINUX: u32 = 129;
    pub const JUNIPER_ETHER: u32 = 178;
    pub const PPI: u32 = 192;
    pub const IPOIB: u32 = 242;

    /// Every LINKTYPE [`decode`](super::decode) accepts.
    pub const SUPPORTED: &[u32] = &[
        NULL,
        ETHERNET,
        PPP,
        FDDI,
        RAW_12,
        RAW_14,
        PPP_HDLC,
        PPP_ETHER,
        RAW,
        C_HDLC,
        IEEE802_11,
        LOOP,
        LINUX_SLL,
        IEEE802_11_RADIOTAP,
        ARCNET_LINUX,
        JUNIPER_ETHER,
        PPI,
        IPV4,
        IPV6,
        NFLOG,
        IPOIB,
        LINUX_SLL2,
    ];

    /// Whether [`decode`](super::decode) knows this LINKTYPE.
    pub fn is_supported(linktype: u32) -> bool {
        SUPPORTED.contains(&linktype)
    }

    /// The LINKTYPE's name without the `LINKTYPE_` prefix, for logs and summaries.
    pub fn name(linktype: u32) -> Option<&'static str> {
        Some(match linktype {
            NULL => "NULL",
            ETHERNET => "ETHERNET",
            PPP => "PPP",
            FDDI => "FDDI",
            RAW_12 | RAW_14 | RAW => "RAW",
            PPP_HDLC => "PPP_HDLC",
            PPP_ETHER => "PPP_ETHER",
            C_HDLC => "C_HDLC",
            IEEE802_11 => "IEEE802_11",
            LOOP => "LOOP",
            LINUX_SLL => "LINUX_SLL",
            IEEE802_11_RADIOTAP => "IEEE802_11_RADIOTAP",
            ARCNET_LINUX => "ARCNET_LINUX",
            JUNIPER_ETHER => "JUNIPER_ETHER",
            PPI => "PPI",
            IPV4 => "IPV4",
            IPV6 => "IPV6",
            NFLOG => "NFLOG",
            IPOIB => "IPOIB",
            LINUX_SLL2 => "LINUX_SLL2",
            _ => return None,
        })
    }
}

/// One decoded TCP segment: the innermost IP header's addresses and the TCP header.
/// Everything is `Copy`; `payload` borrows the frame.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 identification; 0 for IPv6 (used only to recognise frames captured twice).
    pub ip_id: u16,
    pub tcp: TcpHeader,
    /// TCP payload length from the IP header's length fields (not the captured length), so a
    /// segment cut by the snaplen still counts in full. An IPv4 total length of 0 (TSO) falls
    /// back to the captured length.
    pub payload_len: u32,
    /// The captured part of the payload (may be shorter than `payload_len`).
    pub payload: &'a [u8],
    /// How many IP headers enclosed the innermost one (0 = not tunnelled).
    pub tunnel_depth: u8,
    /// The segment (or a tunnel around it) is the first fragment of a fragmented IP
    /// datagram. Its receiver gets it only with the last fragment, which carries no TCP
    /// header of its own, so the engine uses it to track state but times nothing by it.
    pub first_fragment: bool,
}

/// A TCP header with its options parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpHeader {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    pub header_len: u8,
    pub options: TcpOptions,
}

/// Why a frame yielded no TCP segment. Each reason is its own counter in summaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// A header ran past the captured bytes.
    Truncated(Layer),
    /// A link type metro does not decode.
    UnsupportedLinkType(u32),
    /// The frame carries something other than IP (ARP, LLDP, ...).
    NotIp,
    /// IP, but not TCP at the innermost layer (UDP that is not a tunnel, ICMP, ...).
    NotTcp,
    /// An IP fragment other than the first (no TCP header here), or a first fragment too
    /// short to hold the TCP header.
    Fragment,
    /// A header field holds an impossible value (IHL < 5, TCP data offset < 5, ...).
    Malformed(Layer),
    /// Tunnels nested deeper than metro follows.
    TooDeep,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    Link,
    Vlan,
    Mpls,
    Pppoe,
    Ipv4,
    Ipv6,
    Gre,
    Udp,
    Tunnel,
    Tcp,
}

impl DecodeError {
    /// A short stable name for counters and summaries, e.g. `truncated_tcp`.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated(l) => match l {
                Layer::Link => "truncated_link",
                Layer::Vlan => "truncated_vlan",
                Layer::Mpls => "truncated_mpls",
                Layer::Pppoe => "truncated_pppoe",
                Layer::Ipv4 => "truncated_ipv4",
                Layer::Ipv6 => "truncated_ipv6",
                Layer::Gre => "truncated_gre",
                Layer::Udp => "truncated_udp",
                Layer::Tunnel => "truncated_tunnel",
                Layer::Tcp => "truncated_tcp",
            },
            DecodeError::UnsupportedLinkType(_) => "unsupported_linktype",
            DecodeError::NotIp => "not_ip",
            DecodeError::NotTcp => "not_tcp",
            DecodeError::Fragment => "ip_fragment",
            DecodeError::Malformed(l) => match l {
                Layer::Ipv4 => "malformed_ipv4",
                Layer::Ipv6 => "malformed_ipv6",
                Layer::Tcp => "malformed_tcp",
                _ => "malformed_other",
            },
            DecodeError::TooDeep => "tunnel_too_deep",
        }
    }
}

/// Decode one frame of the given LINKTYPE into its innermost TCP segment.
///
/// Tunnels are followed down to the innermost IP header (see [`Packet::tunnel_depth`]);
/// the first layer that cannot be read decides the error.
#[inline]
pub fn decode(linktype: u32, frame: &[u8]) -> Result<Packet<'_>, DecodeError> {
    if let Some(p) = decode_common(linktype, frame) {
        return Ok(p);
    }
    decode_general(linktype, frame)
}

/// [`decode`]'s shortcut alone: the common Ethernet / IPv4-or-IPv6 / TCP shape decoded
/// straight, `None` for anything else (which [`decode_general`] then decides). Exposed so a
/// caller that keeps only a few fields (`Segment::decode`) builds them from the packet in
/// place instead of moving the whole packet through a `Result` first.
#[inline(always)]
pub fn decode_common(linktype: u32, frame: &[u8]) -> Option<Packet<'_>> {
    if linktype == linktype::ETHERNET {
        fast::ethernet(frame)
    } else {
        None
    }
}

/// [`decode`] without its shortcut for the common Ethernet / IPv4-or-IPv6 / TCP shape: the
/// same result for every frame (the tests compare the two), only slower for that shape.
pub fn decode_general(linktype: u32, frame: &[u8]) -> Result<Packet<'_>, DecodeError> {
    ip::decode_net(link::strip(linktype, frame)?, 0)
}

#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};

    use super::testutil::{check, samples};
    use super::*;

    /// Ethernet, IPv4, TCP with NOP NOP TS and NOP NOP SACK(1 block), AE|PSH|ACK, 8 bytes
    /// of payload: every field checked.
    #[test]
    fn ethernet_ipv4_tcp_every_field() {
        #[rustfmt::skip]
        let frame: [u8; 86] = [
            // Ethernet
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0x08, 0x00,
            // IPv4: IHL 5, total length 72, id 0x1c46, DF, TTL 64, TCP
            0x45, 0x00, 0x00, 0x48, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0x00, 0x00,
            0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8, 0x00, 0x02,
            // TCP: 50000 -> 443, seq, ack, data offset 11 + AE, PSH|ACK, window 512
            0xc3, 0x50, 0x01, 0xbb, 0x8b, 0xad, 0xf0, 0x0d, 0xde, 0xad, 0xbe, 0xef,
            0xb1, 0x18, 0x02, 0x00, 0x12, 0x34, 0x00, 0x00,
            // NOP NOP TS(123456, 12345)
            0x01, 0x01, 0x08, 0x0a, 0x00, 0x01, 0xe2, 0x40, 0x00, 0x00, 0x30, 0x39,
            // NOP NOP SACK(0x8badf500..0x8badfa00)
            0x01, 0x01, 0x05, 0x0a, 0x8b, 0xad, 0xf5, 0x00, 0x8b, 0xad, 0xfa, 0x00,
            // payload
            b'G', b'E', b'T', b' ', b'/', b' ', b'H', b'T',
        ];
        let p = decode(linktype::ETHERNET, &frame).unwrap();
        assert_eq!(p.src, IpAddr::V4(Ipv4Addr::new(192, 168, 0, 1)));
        assert_eq!(p.dst, IpAddr::V4(Ipv4Addr::new(192, 168, 0, 2)));
        assert_eq!(p.ip_id, 0x1c46);
        assert_eq!(p.tunnel_depth, 0);
        assert_eq!(p.payload_len, 8);
        assert_eq!(p.payload, b"GET / HT");
        let t = p.tcp;
        assert_eq!(t.sport, 50000);
        assert_eq!(t.dport, 443);
        assert_eq!(t.seq, 0x8badf00d);
        assert_eq!(t.ack, 0xdeadbeef);
        assert_eq!(t.header_len, 44);
        assert_eq!(t.window, 512);
        assert_eq!(
            t.flags,
            TcpFlags(TcpFlags::AE | TcpFlags::PSH | TcpFlags::ACK)
        );
        assert!(t.flags.ack() && !t.flags.syn() && !t.flags.fin() && !t.flags.rst());
        let mut sack = [(0, 0); 4];
        sack[0] = (0x8badf500, 0x8badfa00);
        assert_eq!(
            t.options,
            TcpOptions {
                mss: None,
                wscale: None,
                sack_permitted: false,
                timestamp: Some((123456, 12345)),
                sack,
                sack_count: 1,
                malformed: false,
            }
        );
    }

    #[test]
    fn ethernet_padding_is_not_payload() {
        #[rustfmt::skip]
        let frame: [u8; 60] = [
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0x08, 0x00,
            0x45, 0x00, 0x00, 0x28, 0x00, 0x01, 0x00, 0x00, 0x40, 0x06, 0x00, 0x00,
            0x0a, 0x00, 0x00, 0x01, 0x0a, 0x00, 0x00, 0x02,
            0x9c, 0x40, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 2, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0,
            // 6 bytes of Ethernet padding
            0, 0, 0, 0, 0, 0,
        ];
        let p = decode(linktype::ETHERNET, &frame).unwrap();
        assert_eq!(p.payload_len, 0);
        assert!(p.payload.is_empty());
        assert_eq!(p.tcp.header_len, 20);
        assert_eq!(p.tcp.options, TcpOptions::default());
    }

    #[test]
    fn unsupported_linktype() {
        assert_eq!(
            decode(147, &[0; 64]).unwrap_err(),
            DecodeError::UnsupportedLinkType(147)
        );
        assert!(!linktype::is_supported(147));
        assert_eq!(
            DecodeError::UnsupportedLinkType(147).reason(),
            "unsupported_linktype"
        );
    }

    #[test]
    fn every_supported_linktype_has_a_valid_sample() {
        let samples = samples();
        for &lt in linktype::SUPPORTED {
            assert!(linktype::name(lt).is_some(), "{lt}");
            assert!(samples.iter().any(|(l, _)| *l == lt), "no sample for {lt}");
        }
        for (i, (lt, frame)) in samples.iter().enumerate() {
            let p = decode(*lt, frame).unwrap_or_else(|e| panic!("sample {i} ({lt}): {e:?}"));
            assert_eq!(p.tcp.sport, 40000, "sample {i}");
            assert_eq!(p.payload, testutil::PAYLOAD, "sample {i}");
        }
        // Spot-check the tunnel depth bookkeeping on two of them.
        check(&decode(samples[7].0, &samples[7].1).unwrap(), false, 1);
        check(&decode(samples[8].0, &samples[8].1).unwrap(), true, 1);
    }

    /// xorshift64*: deterministic, dependency-free pseudo-random bytes.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
    }

    /// `decode` and `decode_general` agree: the same packet (the same payload slice of the
    /// frame) or the same error.
    fn assert_same_as_general(lt: u32, frame: &[u8]) {
        let (a, b) = (decode(lt, frame), decode_general(lt, frame));
        assert_eq!(
            format!("{a:?}"),
            format!("{b:?}"),
            "linktype {lt}: {frame:02x?}"
        );
        if let (Ok(a), Ok(b)) = (a, b) {
            assert_eq!(a.payload.as_ptr_range(), b.payload.as_ptr_range());
        }
    }

    /// Whatever decode returns, it must hold together (and agree with the general path).
    fn decode_and_check(lt: u32, frame: &[u8]) {
        assert_same_as_general(lt, frame);
        if let Ok(p) = decode(lt, frame) {
            assert!(p.payload.len() <= p.payload_len as usize);
            assert!(p.tcp.header_len >= 20 && p.tcp.header_len <= 60);
            assert!(p.tcp.options.sack_count <= 4);
            assert!(p.tunnel_depth < ip::MAX_IP_HEADERS);
            assert_eq!(p.tcp.flags.0 & !0x1ff, 0);
            // The payload is a part of the frame.
            let f = frame.as_ptr_range();
            let q = p.payload.as_ptr_range();
            assert!(p.payload.is_empty() || (f.start <= q.start && q.end <= f.end));
        }
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut buf = [0u8; 256];
        let linktypes: Vec<u32> = linktype::SUPPORTED
            .iter()
            .copied()
            .chain([2, 147, 9999])
            .collect();
        for _ in 0..20_000 {
            let len = match rng.below(4) {
                0 => rng.below(16),
                1 => rng.below(64),
                _ => rng.below(buf.len()),
            };
            for b in &mut buf[..len] {
                *b = rng.next() as u8;
            }
            for &lt in &linktypes {
                decode_and_check(lt, &buf[..len]);
            }
        }
    }

    /// The shortcut is taken for the common shapes (and agrees with the general path on
    /// them, as on everything `decode_and_check` sees).
    #[test]
    fn the_common_shapes_take_the_shortcut() {
        let mut taken = 0;
        for (lt, frame) in samples() {
            assert_same_as_general(lt, &frame);
            if lt == linktype::ETHERNET && fast::ethernet(&frame).is_some() {
                taken += 1;
            }
        }
        assert!(taken >= 2, "{taken} sample frames took the shortcut");
        let v4 = testutil::eth_v4_tcp();
        assert!(fast::ethernet(&v4).is_some());
    }

    #[test]
    fn mutated_frames_never_panic() {
        let samples = samples();
        let mut rng = Rng(0x2545_f491_4f6c_dd1d);
        let mut frame = Vec::with_capacity(512);
        for _ in 0..300_000 {
            let (lt, base) = &samples[rng.below(samples.len())];
            frame.clear();
            frame.extend_from_slice(base);
            for _ in 0..1 + rng.below(4) {
                let at = rng.below(frame.len().max(1));
                match rng.below(8) {
                    0 => frame.truncate(at),
                    1 if at < frame.len() => {
                        frame.remove(at);
                    }
                    2 => frame.insert(at.min(frame.len()), rng.next() as u8),
                    3 if at < frame.len() => frame[at] = 0,
                    4 if at < frame.len() => frame[at] = 0xff,
                    5 if at < frame.len() => frame[at] ^= 1 << rng.below(8),
                    _ if at < frame.len() => frame[at] = rng.next() as u8,
                    _ => {}
                }
            }
            decode_and_check(*lt, &frame);
            if rng.below(16) == 0 {
                let other = linktype::SUPPORTED[rng.below(linktype::SUPPORTED.len())];
                decode_and_check(other, &frame);
            }
        }
    }
}
