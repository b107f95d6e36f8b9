//! IPv4 and IPv6 headers, and the walk down through nested IP headers to the innermost TCP.
//!
//! Owns: IPv4 (options, fragments, TSO total length 0), IPv6 extension headers (hop-by-hop
//! with the jumbo payload option, routing, fragment, destination options, AH, mobility,
//! HIP, shim6) and the choice of what an IP payload is: TCP (done), IP-in-IP (4in4, 6in4,
//! 4in6, 6in6), MPLS-in-IP, EtherIP, or GRE and UDP tunnels (handed to `tunnel.rs`).
//! Each enclosing IP header adds one to [`Packet::tunnel_depth`]; more than
//! [`MAX_IP_HEADERS`] nested IP headers is [`DecodeError::TooDeep`].

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::link::{self, Net, Network, Next};
use super::{DecodeError, Layer, Packet, tcp, tunnel};

/// The most IP headers one frame may nest (outermost included).
pub const MAX_IP_HEADERS: u8 = 8;

/// IP protocol numbers metro follows.
pub mod proto {
    pub const HOPOPT: u8 = 0;
    pub const IPIP: u8 = 4;
    pub const TCP: u8 = 6;
    pub const UDP: u8 = 17;
    pub const IPV6: u8 = 41;
    pub const ROUTING: u8 = 43;
    pub const FRAGMENT: u8 = 44;
    pub const GRE: u8 = 47;
    pub const ESP: u8 = 50;
    pub const AH: u8 = 51;
    pub const NONE: u8 = 59;
    pub const DSTOPTS: u8 = 60;
    pub const ETHERIP: u8 = 97;
    pub const IPCOMP: u8 = 108;
    pub const MOBILITY: u8 = 135;
    pub const MPLS_IN_IP: u8 = 137;
    pub const HIP: u8 = 139;
    pub const SHIM6: u8 = 140;
    pub const ETHERNET: u8 = 143;
}

/// Upper bound on IPv6 extension headers in one packet.
const MAX_EXT_HEADERS: usize = 16;

/// What the TCP parser (or a tunnel) needs from one IP header.
#[derive(Clone, Copy, Debug)]
pub(super) struct Ip<'a> {
    pub(super) src: IpAddr,
    pub(super) dst: IpAddr,
    pub(super) ip_id: u16,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub(super) proto: u8,
    /// A fragment other than the first: no upper-layer header here.
    pub(super) later_fragment: bool,
    /// The first fragment of several: the upper-layer header may not be all here.
    pub(super) first_fragment: bool,
    /// Upper-layer bytes captured, cut at the length the header declares (so Ethernet
    /// padding and trailers are not payload).
    pub(super) payload: &'a [u8],
    /// Upper-layer length the header declares.
    pub(super) payload_len: u32,
}

/// Decodes an IP packet whose version is told by its version nibble; `depth` is how many IP
/// headers enclose it.
pub fn decode_ip(ip: &[u8], depth: u8) -> Result<Packet<'_>, DecodeError> {
    decode_net(link::guess_ip(ip)?, depth)
}

/// Decodes the IP packet found under the link layers, following tunnels to the innermost
/// TCP; `depth` is how many IP headers enclose it.
#[inline]
pub fn decode_net(mut l3: Network<'_>, mut depth: u8) -> Result<Packet<'_>, DecodeError> {
    // Whether this IP header or an enclosing one is the first fragment of several.
    let mut in_first_fragment = false;
    loop {
        let ip = match l3.net {
            Net::Ipv4 => ipv4(l3.bytes, l3.exact)?,
            Net::Ipv6 => ipv6(l3.bytes, l3.exact)?,
        };
        in_first_fragment |= ip.first_fragment;
        if ip.proto == proto::TCP && !ip.later_fragment {
            let seg = match tcp::parse(ip.payload, ip.payload_len) {
                Ok(seg) => seg,
                // A first fragment too short for the whole TCP header.
                Err(_) if in_first_fragment => return Err(DecodeError::Fragment),
                Err(e) => return Err(e),
            };
            return Ok(Packet {
                src: ip.src,
                dst: ip.dst,
                ip_id: ip.ip_id,
                tcp: seg.header,
                payload_len: seg.payload_len,
                payload: seg.payload,
                tunnel_depth: depth,
                first_fragment: in_first_fragment,
            });
        }
        let next = match ip.proto {
            proto::TCP | proto::IPIP | proto::IPV6 | proto::GRE | proto::UDP
                if ip.later_fragment =>
            {
                return Err(DecodeError::Fragment);
            }
            _ if ip.later_fragment => return Err(DecodeError::NotTcp),
            proto::IPIP => Next::Ip(Net::Ipv4, ip.payload),
            proto::IPV6 => Next::Ip(Net::Ipv6, ip.payload),
            proto::GRE => tunnel::gre(ip.payload)?,
            proto::UDP => tunnel::udp(ip.payload)?,
            proto::MPLS_IN_IP => Next::Mpls(ip.payload),
            proto::ETHERNET => Next::Ethernet(ip.payload),
            proto::ETHERIP => match *ip.payload {
                // RFC 3378: version 3 in the high nibble, then an Ethernet frame.
                [v, _, ref rest @ ..] if v >> 4 == 3 => Next::Ethernet(rest),
                [_, _, ..] => return Err(DecodeError::NotTcp),
                _ => return Err(DecodeError::Truncated(Layer::Tunnel)),
            },
            _ => return Err(DecodeError::NotTcp),
        };
        if depth.saturating_add(1) >= MAX_IP_HEADERS {
            return Err(DecodeError::TooDeep);
        }
        l3 = link::resolve(next)?;
        depth += 1;
    }
}

/// `exact`: see [`Network::exact`].
#[inline]
pub(super) fn ipv4(b: &[u8], exact: bool) -> Result<Ip<'_>, DecodeError> {
    let (h, _) = b
        .split_first_chunk::<20>()
        .ok_or(DecodeError::Truncated(Layer::Ipv4))?;
    if h[0] >> 4 != 4 {
        return Err(DecodeError::Malformed(Layer::Ipv4));
    }
    let hl = usize::from(h[0] & 0x0F) * 4;
    if hl < 20 {
        return Err(DecodeError::Malformed(Layer::Ipv4));
    }
    if b.len() < hl {
        return Err(DecodeError::Truncated(Layer::Ipv4));
    }
    let total = match usize::from(u16::from_be_bytes([h[2], h[3]])) {
        // Segmentation offload (TSO/GSO, IPv4 BIG TCP): the length was left for the NIC.
        0 => b.len(),
        n if exact => n.min(b.len()),
        n => n,
    };
    if total < hl {
        return Err(DecodeError::Malformed(Layer::Ipv4));
    }
    // hl <= total and hl <= b.len(), so the range is never reversed.
    let payload = b.get(hl..total.min(b.len())).unwrap_or_default();
    let frag = u16::from_be_bytes([h[6], h[7]]);
    Ok(Ip {
        src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
        dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
        ip_id: u16::from_be_bytes([h[4], h[5]]),
        proto: h[9],
        later_fragment: frag & 0x1FFF != 0,
        first_fragment: frag & 0x3FFF == 0x2000,
        payload,
        payload_len: u32::try_from(total - hl).unwrap_or(u32::MAX),
    })
}

/// `exact`: see [`Network::exact`].
#[inline]
pub(super) fn ipv6(b: &[u8], exact: bool) -> Result<Ip<'_>, DecodeError> {
    const TRUNC: DecodeError = DecodeError::Truncated(Layer::Ipv6);
    let (h, rest) = b.split_first_chunk::<8>().ok_or(TRUNC)?;
    let (src, rest) = rest.split_first_chunk::<16>().ok_or(TRUNC)?;
    let (dst, rest) = rest.split_first_chunk::<16>().ok_or(TRUNC)?;
    if h[0] >> 4 != 6 {
        return Err(DecodeError::Malformed(Layer::Ipv6));
    }
    let plen = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let mut nh = h[6];
    let mut off = 0;
    let mut jumbo = None;
    let mut frag = Frag::None;
    if nh != proto::TCP {
        (nh, off, jumbo, frag) = ext_headers(nh, rest, plen == 0)?;
    }
    let declared = match (plen, jumbo) {
        (0, Some(j)) => j as usize,
        // Payload length 0 without a jumbo option: GSO; trust the capture.
        (0, None) => rest.len(),
        (n, _) if exact => n.min(rest.len()),
        (n, _) => n,
    };
    if off > declared {
        return Err(DecodeError::Malformed(Layer::Ipv6));
    }
    let payload = rest.get(off..declared.min(rest.len())).unwrap_or_default();
    Ok(Ip {
        src: IpAddr::V6(Ipv6Addr::from(*src)),
        dst: IpAddr::V6(Ipv6Addr::from(*dst)),
        ip_id: 0,
        proto: nh,
        later_fragment: frag == Frag::Later,
        first_fragment: frag == Frag::First,
        payload,
        payload_len: u32::try_from(declared - off).unwrap_or(u32::MAX),
    })
}

/// Where an IPv6 packet stands in fragmentation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Frag {
    /// No fragment header, or an atomic fragment (offset 0, M = 0).
    None,
    First,
    Later,
}

/// Walks IPv6 extension headers starting with `nh` at the start of `b`. Returns the
/// upper-layer protocol, the bytes the extension headers take, the jumbo payload length
/// (if `want_jumbo` and a hop-by-hop header carries one) and the fragment state.
fn ext_headers(
    mut nh: u8,
    b: &[u8],
    want_jumbo: bool,
) -> Result<(u8, usize, Option<u32>, Frag), DecodeError> {
    const TRUNC: DecodeError = DecodeError::Truncated(Layer::Ipv6);
    let mut off = 0usize;
    let mut jumbo = None;
    let mut frag = Frag::None;
    for _ in 0..MAX_EXT_HEADERS {
        let len = match nh {
            proto::HOPOPT
            | proto::ROUTING
            | proto::DSTOPTS
            | proto::MOBILITY
            | proto::HIP
            | proto::SHIM6 => (usize::from(*b.get(off + 1).ok_or(TRUNC)?) + 1) * 8,
            proto::AH => (usize::from(*b.get(off + 1).ok_or(TRUNC)?) + 2) * 4,
            proto::FRAGMENT => 8,
            _ => return Ok((nh, off, jumbo, frag)),
        };
        let ext = b.get(off..off + len).ok_or(TRUNC)?;
        let [next, _, x2, x3, ..] = *ext else {
            return Err(TRUNC);
        };
        match nh {
            proto::HOPOPT if want_jumbo => jumbo = ext.get(2..).and_then(jumbo_option),
            proto::FRAGMENT => {
                let word = u16::from_be_bytes([x2, x3]);
                if word >> 3 != 0 {
                    // What follows is data, not headers.
                    return Ok((next, off + len, jumbo, Frag::Later));
                }
                // The first fragment, or an atomic one (offset 0, M = 0): read on.
                if word & 1 != 0 {
                    frag = Frag::First;
                }
            }
            _ => {}
        }
        nh = next;
        off += len;
    }
    Err(DecodeError::Malformed(Layer::Ipv6))
}

/// The RFC 2675 jumbo payload length among hop-by-hop options.
fn jumbo_option(mut opts: &[u8]) -> Option<u32> {
    const PAD1: u8 = 0;
    const JUMBO: u8 = 0xC2;
    loop {
        match *opts {
            [PAD1, ref rest @ ..] => opts = rest,
            [JUMBO, 4, a, b, c, d, ..] => return Some(u32::from_be_bytes([a, b, c, d])),
            [_, len, ref rest @ ..] => opts = rest.get(usize::from(len)..)?,
            _ => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{cat, check, eth, ip4, ipv4, ipv6, outer4, outer6, tcp};
    use super::super::{DecodeError, Layer, decode, linktype as lt};
    use super::*;

    fn raw(f: &[u8]) -> Result<Packet<'_>, DecodeError> {
        decode(lt::RAW, f)
    }

    #[test]
    fn ipv4_with_options() {
        let mut f = ipv4(6, &tcp());
        // IHL 6: one 4-byte option (NOP NOP NOP EOL) after the fixed header.
        f[0] = 0x46;
        f[3] += 4;
        f.splice(20..20, [1, 1, 1, 0]);
        check(&raw(&f).unwrap(), false, 0);
    }

    #[test]
    fn ipv4_bad_headers() {
        let t = ipv4(6, &tcp());
        assert_eq!(
            raw(&t[..19]).unwrap_err(),
            DecodeError::Truncated(Layer::Ipv4)
        );
        let mut f = t.clone();
        f[0] = 0x44; // IHL 4
        assert_eq!(raw(&f).unwrap_err(), DecodeError::Malformed(Layer::Ipv4));
        let mut f = t.clone();
        f[0] = 0x4f; // IHL 15: 60 bytes, more than captured
        assert_eq!(
            raw(&f[..40]).unwrap_err(),
            DecodeError::Truncated(Layer::Ipv4)
        );
        let mut f = t.clone();
        f[2..4].copy_from_slice(&19u16.to_be_bytes()); // total length below the header
        assert_eq!(raw(&f).unwrap_err(), DecodeError::Malformed(Layer::Ipv4));
        assert_eq!(
            DecodeError::Malformed(Layer::Ipv4).reason(),
            "malformed_ipv4"
        );
    }

    #[test]
    fn ipv4_fragments() {
        let t = ipv4(6, &tcp());
        // A later fragment: offset 185 (1480 bytes).
        let mut f = t.clone();
        f[6..8].copy_from_slice(&0x00b9u16.to_be_bytes());
        assert_eq!(raw(&f).unwrap_err(), DecodeError::Fragment);
        // ... of ICMP: not TCP, whatever the fragment.
        f[9] = 1;
        assert_eq!(raw(&f).unwrap_err(), DecodeError::NotTcp);
        // The first fragment (MF set, offset 0) has the TCP header, marked as such.
        let mut f = t.clone();
        f[6] = 0x20;
        let p = raw(&f).unwrap();
        check(&p, false, 0);
        assert!(p.first_fragment);
        assert!(!raw(&t).unwrap().first_fragment);
        // A first fragment too short for the TCP header.
        let mut f = ipv4(6, &tcp()[..8]);
        f[6] = 0x20;
        assert_eq!(raw(&f).unwrap_err(), DecodeError::Fragment);
    }

    #[test]
    fn ipv4_tso_total_length_zero() {
        let mut f = ipv4(6, &cat(&[&tcp(), &[0x55; 3000]]));
        f[2..4].copy_from_slice(&[0, 0]);
        let p = raw(&f).unwrap();
        assert_eq!(p.payload_len, 3005);
        assert_eq!(p.payload.len(), 3005);
    }

    #[test]
    fn ipv4_snaplen_cut_keeps_declared_length() {
        let f = ipv4(6, &cat(&[&tcp(), &[0x55; 1000]]));
        let p = raw(&f[..68]).unwrap();
        assert_eq!(p.payload_len, 1005);
        assert_eq!(
            p.payload,
            b"hello"[..]
                .iter()
                .chain(&[0x55; 11])
                .copied()
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn ipv6_extension_headers() {
        // Hop-by-hop (PadN), routing (type 0, no segments left), atomic fragment (offset 0,
        // M = 0), destination options, then TCP.
        #[rustfmt::skip]
        let ext: [u8; 32] = [
            43, 0, 1, 4, 0, 0, 0, 0, // hop-by-hop -> routing
            44, 0, 0, 0, 0, 0, 0, 0, // routing -> fragment
            60, 0, 0, 0, 0x12, 0x34, 0x56, 0x78, // fragment -> destination options
            6, 0, 1, 4, 0, 0, 0, 0, // destination options -> TCP
        ];
        let f = ipv6(0, &cat(&[&ext, &tcp()]));
        check(&raw(&f).unwrap(), true, 0);
        // AH: length field 4 -> (4 + 2) * 4 = 24 bytes.
        let ah = cat(&[&[6, 4, 0, 0], &[0; 20]]);
        check(&raw(&ipv6(51, &cat(&[&ah, &tcp()]))).unwrap(), true, 0);
        // Mobility header then TCP (unusual, but a chain is a chain).
        check(
            &raw(&ipv6(135, &cat(&[&[6, 0, 0, 0, 0, 0, 0, 0], &tcp()]))).unwrap(),
            true,
            0,
        );
        // ESP: encrypted.
        assert_eq!(raw(&ipv6(50, &[0; 40])).unwrap_err(), DecodeError::NotTcp);
        // An extension header past the end of the capture.
        let f = ipv6(0, &[6, 2, 0, 0, 0, 0, 0, 0]);
        assert_eq!(raw(&f).unwrap_err(), DecodeError::Truncated(Layer::Ipv6));
        // Extension headers longer than the payload length says.
        let mut f = ipv6(60, &cat(&[&[6, 0, 0, 0, 0, 0, 0, 0], &tcp()]));
        f[4..6].copy_from_slice(&4u16.to_be_bytes());
        assert_eq!(raw(&f).unwrap_err(), DecodeError::Malformed(Layer::Ipv6));
        // A chain of more headers than metro walks.
        let chain: Vec<u8> = [60, 0, 0, 0, 0, 0, 0, 0].repeat(20);
        assert_eq!(
            raw(&ipv6(60, &chain)).unwrap_err(),
            DecodeError::Malformed(Layer::Ipv6)
        );
        assert_eq!(
            raw(&ipv6(6, &tcp())[..39]).unwrap_err(),
            DecodeError::Truncated(Layer::Ipv6)
        );
    }

    #[test]
    fn ipv6_fragments() {
        // First fragment: offset 0, M = 1.
        let f = ipv6(44, &cat(&[&[6, 0, 0x00, 0x01, 0, 0, 0, 1], &tcp()]));
        check(&raw(&f).unwrap(), true, 0);
        // Later fragment: offset 1448/8.
        let off = ((1448u16 / 8) << 3).to_be_bytes();
        let f = ipv6(
            44,
            &cat(&[&[6, 0, off[0], off[1], 0, 0, 0, 1], &[0x55; 40]]),
        );
        assert_eq!(raw(&f).unwrap_err(), DecodeError::Fragment);
        let f = ipv6(
            44,
            &cat(&[&[58, 0, off[0], off[1], 0, 0, 0, 1], &[0x55; 40]]),
        );
        assert_eq!(raw(&f).unwrap_err(), DecodeError::NotTcp);
    }

    #[test]
    fn ipv6_jumbo_and_zero_payload_length() {
        // BIG TCP: payload length 0, hop-by-hop with a jumbo option (RFC 2675).
        let seg = cat(&[&tcp(), &[0x55; 70000]]);
        let jumbo = ((8 + seg.len()) as u32).to_be_bytes();
        let hbh = cat(&[&[6, 0, 0xc2, 4], &jumbo]);
        let mut f = ipv6(0, &cat(&[&hbh, &seg]));
        f[4..6].copy_from_slice(&[0, 0]);
        let p = raw(&f).unwrap();
        assert_eq!(p.payload_len, 70005);
        assert_eq!(p.payload.len(), 70005);
        // Cut by the snaplen, the jumbo length still counts.
        let p = raw(&f[..40 + 8 + 32 + 100]).unwrap();
        assert_eq!(p.payload_len, 70005);
        assert_eq!(p.payload.len(), 100);
        // Payload length 0 and no jumbo option (GSO): the captured length.
        let mut f = ipv6(6, &tcp());
        f[4..6].copy_from_slice(&[0, 0]);
        check(&raw(&f).unwrap(), true, 0);
    }

    #[test]
    fn ip_in_ip_all_four() {
        let t4 = ipv4(6, &tcp());
        let t6 = ipv6(6, &tcp());
        check(&raw(&outer4(4, &t4)).unwrap(), false, 1);
        check(&raw(&outer4(41, &t6)).unwrap(), true, 1);
        check(&raw(&outer6(4, &t4)).unwrap(), false, 1);
        check(&raw(&outer6(41, &t6)).unwrap(), true, 1);
        // Through Ethernet, and with an inner fragment.
        check(
            &decode(lt::ETHERNET, &eth(0x0800, &outer4(41, &t6))).unwrap(),
            true,
            1,
        );
        let mut inner = t4.clone();
        inner[6..8].copy_from_slice(&[0x00, 0x10]);
        assert_eq!(raw(&outer4(4, &inner)).unwrap_err(), DecodeError::Fragment);
        // The outer header is a later fragment: no inner header to read.
        let mut f = outer4(4, &t4);
        f[6..8].copy_from_slice(&[0x00, 0x10]);
        assert_eq!(raw(&f).unwrap_err(), DecodeError::Fragment);
        // Inner packet that is not IP.
        assert_eq!(
            raw(&outer4(4, &[0x55; 40])).unwrap_err(),
            DecodeError::Malformed(Layer::Ipv4)
        );
    }

    #[test]
    fn nesting_depth_is_bounded() {
        let mut f = ipv4(6, &tcp());
        for depth in 1..MAX_IP_HEADERS {
            f = ip4([192, 0, 2, depth], [192, 0, 2, 100], 4, &f);
            check(&raw(&f).unwrap(), false, depth);
        }
        f = outer4(4, &f);
        assert_eq!(raw(&f).unwrap_err(), DecodeError::TooDeep);
        assert_eq!(DecodeError::TooDeep.reason(), "tunnel_too_deep");
        // decode_ip with an outlandish starting depth must not overflow.
        assert_eq!(
            decode_ip(&outer4(4, &ipv4(6, &tcp())), u8::MAX).unwrap_err(),
            DecodeError::TooDeep
        );
        assert_eq!(decode_ip(&ipv4(6, &tcp()), 3).unwrap().tunnel_depth, 3);
    }

    #[test]
    fn other_protocols_are_not_tcp() {
        assert_eq!(
            raw(&ipv4(1, &[8, 0, 0, 0, 0, 0, 0, 0])).unwrap_err(),
            DecodeError::NotTcp
        );
        assert_eq!(
            raw(&ipv6(58, &[128, 0, 0, 0, 0, 0, 0, 0])).unwrap_err(),
            DecodeError::NotTcp
        );
        assert_eq!(
            raw(&ipv4(108, &[6, 0, 0, 2, 1, 2, 3, 4])).unwrap_err(),
            DecodeError::NotTcp
        );
        assert_eq!(raw(&ipv6(59, &[])).unwrap_err(), DecodeError::NotTcp);
    }

    #[test]
    fn mpls_ethernet_and_etherip_in_ip() {
        let f = outer4(137, &cat(&[&[0x00, 0x01, 0x01, 0x40], &ipv4(6, &tcp())]));
        check(&raw(&f).unwrap(), false, 1);
        let e = eth(0x0800, &ipv4(6, &tcp()));
        check(&raw(&outer6(143, &e)).unwrap(), false, 1);
        check(
            &raw(&outer4(97, &cat(&[&[0x30, 0x00], &e]))).unwrap(),
            false,
            1,
        );
        assert_eq!(
            raw(&outer4(97, &cat(&[&[0x40, 0x00], &e]))).unwrap_err(),
            DecodeError::NotTcp
        );
    }
}
