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
struct Ip<'a> {
    src: IpAddr,
    dst: IpAddr,
    ip_id: u16,
    /// The upper-layer protocol (after IPv6 extension headers).
    proto: u8,
    /// A fragment other than the first: no upper-layer header here.
    later_fragment: bool,
    /// The first fragment of several: the upper-layer header may not be all here.
    first_fragment: bool,
    /// Upper-layer bytes captured, cut at the length the header declares (so Ethernet
    /// padding and trailers are not payload).
    payload: &'a [u8],
    /// Upper-layer length the header declares.
    payload_len: u32,
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
    loop {
        let ip = match l3.net {
            Net::Ipv4 => ipv4(l3.bytes, l3.exact)?,
            Net::Ipv6 => ipv6(l3.bytes, l3.exact)?,
        };
        if ip.proto == proto::TCP && !ip.later_fragment {
            let seg = match tcp::parse(ip.payload, ip.payload_len) {
                Ok(seg) => seg,
                // A first fragment too short for the whole TCP header.
                Err(_) if ip.first_fragment => return Err(DecodeError::Fragment),
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
fn ipv4(b: &[u8], exact: bool) -> Result<Ip<'_>, DecodeError> {
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
fn ipv6(b: &[u8], exact: bool) -> Result<Ip<'_>, DecodeError> {
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
