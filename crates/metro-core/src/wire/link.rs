//! Link layers: everything between the start of a captured frame and its IP header.
//!
//! Owns the per-LINKTYPE headers (Ethernet, Linux cooked SLL/SLL2, BSD NULL/LOOP, raw IP,
//! PPP and its HDLC framings, PPPoE, NFLOG, 802.11 with radiotap or PPI, FDDI, IPoIB, ARCnet,
//! Juniper) and the layer-2 encapsulations that can follow them or a tunnel: VLAN tags
//! (802.1Q, 802.1ad, 0x9100/0x9200), 802.1ah backbone tags, MPLS label stacks with
//! Ethernet pseudowires, PPPoE sessions, 802.2 LLC/SNAP and 802.11 data frames.
//!
//! Parsing is a small state machine ([`Next`]) driven by [`resolve`], so a GRE or VXLAN
//! tunnel in `tunnel.rs` can re-enter it at any layer. The number of steps is bounded, so no
//! input can make it loop (MPLS pseudowire inside MPLS pseudowire ...). The common case —
//! Ethernet carrying IPv4 or IPv6 — never enters the state machine.

use super::{DecodeError, Layer, linktype as lt};

/// The network layer found under the link layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Net {
    Ipv4,
    Ipv6,
}

/// The IP packet under the link layers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Network<'a> {
    pub net: Net,
    /// From the IP header to the end of what was captured (or of what a length field allows).
    pub bytes: &'a [u8],
    /// `bytes` ends where a link-layer length field (PPPoE's) says the packet ends, before
    /// the end of the capture: an IP length that claims more is wrong, not cut by the snaplen.
    pub exact: bool,
}

/// EtherType values metro follows (IEEE registry; PPP/GRE-only values included).
pub mod ethertype {
    pub const IPV4: u16 = 0x0800;
    pub const IPV6: u16 = 0x86DD;
    pub const VLAN: u16 = 0x8100;
    pub const QINQ: u16 = 0x88A8;
    pub const QINQ_9100: u16 = 0x9100;
    pub const QINQ_9200: u16 = 0x9200;
    pub const PBB: u16 = 0x88E7;
    pub const MPLS_UC: u16 = 0x8847;
    pub const MPLS_MC: u16 = 0x8848;
    pub const PPPOE_SESSION: u16 = 0x8864;
    /// Transparent Ethernet bridging: an Ethernet frame follows (GRE, Geneve, SLL on GRE).
    pub const TEB: u16 = 0x6558;
    /// PPP (PPTP's enhanced GRE).
    pub const PPP: u16 = 0x880B;
    /// Largest value that is an 802.3 length rather than an EtherType.
    pub const MAX_8023_LEN: u16 = 1500;
}

/// PPP protocol numbers (RFC 1661 registry).
mod ppp_proto {
    pub const IPV4: u16 = 0x0021;
    pub const IPV6: u16 = 0x0057;
    pub const BRIDGED_ETHERNET: u16 = 0x0031;
    pub const MPLS_UC: u16 = 0x0281;
    pub const MPLS_MC: u16 = 0x0283;
}

/// Upper bound on link-level steps per frame (or per tunnel level).
const MAX_STEPS: usize = 32;
/// Upper bound on MPLS labels in one stack.
const MAX_MPLS_LABELS: usize = 16;

/// Where the link-layer state machine goes next, with the bytes that start there.
#[derive(Clone, Copy, Debug)]
pub(super) enum Next<'a> {
    /// An Ethernet II / 802.3 header.
    Ethernet(&'a [u8]),
    /// The payload of a frame of this EtherType (a value up to 1500 means 802.2 LLC).
    EtherType(u16, &'a [u8]),
    /// An 802.2 LLC header (SNAP or the IP SAP).
    Llc(&'a [u8]),
    /// A PPP frame, with or without the FF 03 address/control bytes; `true` if it ends
    /// where a length field says (see [`Network::exact`]).
    Ppp(&'a [u8], bool),
    /// A Cisco HDLC frame.
    Chdlc(&'a [u8]),
    /// An MPLS label stack.
    Mpls(&'a [u8]),
    /// An 802.11 frame; `true` if radiotap says the header is padded to 4 bytes.
    Wifi(&'a [u8], bool),
    /// An IP header of either version: decide by the version nibble.
    Guess(&'a [u8]),
    /// Done: an IP header.
    Ip(Net, &'a [u8]),
    /// Done: an IP header, in bytes that end where a length field says.
    IpExact(Net, &'a [u8]),
}

/// Strips the link layers of a frame of the given LINKTYPE and returns its IP packet.
#[inline]
pub fn strip(linktype: u32, frame: &[u8]) -> Result<Network<'_>, DecodeError> {
    if linktype == lt::ETHERNET {
        // Straight-line common case: untagged Ethernet II carrying IP.
        let Some((hdr, rest)) = frame.split_first_chunk::<14>() else {
            return Err(DecodeError::Truncated(Layer::Link));
        };
        return match u16::from_be_bytes([hdr[12], hdr[13]]) {
            ethertype::IPV4 => Ok(Network::captured(Net::Ipv4, rest)),
            ethertype::IPV6 => Ok(Network::captured(Net::Ipv6, rest)),
            t => resolve(Next::EtherType(t, rest)),
        };
    }
    resolve(first(linktype, frame, false)?)
}

/// Decides the IP version of `ip` by its version nibble.
#[inline]
pub fn guess_ip(ip: &[u8]) -> Result<Network<'_>, DecodeError> {
    match guess(ip)? {
        Next::Ip(net, b) => Ok(Network::captured(net, b)),
        _ => Err(DecodeError::NotIp),
    }
}

impl<'a> Network<'a> {
    #[inline]
    fn captured(net: Net, bytes: &'a [u8]) -> Self {
        Network {
            net,
            bytes,
            exact: false,
        }
    }
}

/// Runs the link-level state machine from `next` to an IP header.
pub(super) fn resolve(mut next: Next<'_>) -> Result<Network<'_>, DecodeError> {
    for _ in 0..MAX_STEPS {
        next = match next {
            Next::Ip(net, bytes) => return Ok(Network::captured(net, bytes)),
            Next::IpExact(net, bytes) => {
                return Ok(Network {
                    net,
                    bytes,
                    exact: true,
                });
            }
            Next::Ethernet(b) => ethernet(b)?,
            Next::EtherType(t, b) => by_ethertype(t, b)?,
            Next::Llc(b) => llc(b)?,
            Next::Ppp(b, exact) => ppp(b, exact)?,
            Next::Chdlc(b) => chdlc(b)?,
            Next::Mpls(b) => mpls(b)?,
            Next::Wifi(b, pad) => wifi(b, pad)?,
            Next::Guess(b) => guess(b)?,
        };
    }
    Err(DecodeError::TooDeep)
}

/// The first header of a LINKTYPE. `in_ppi` forbids PPI inside PPI.
fn first(linktype: u32, frame: &[u8], in_ppi: bool) -> Result<Next<'_>, DecodeError> {
    Ok(match linktype {
        lt::ETHERNET => Next::Ethernet(frame),
        lt::RAW | lt::RAW_12 | lt::RAW_14 => Next::Guess(frame),
        lt::IPV4 => Next::Ip(Net::Ipv4, frame),
        lt::IPV6 => Next::Ip(Net::Ipv6, frame),
        lt::NULL | lt::LOOP => null(frame)?,
        lt::LINUX_SLL => sll(frame)?,
        lt::LINUX_SLL2 => sll2(frame)?,
        lt::PPP => Next::Ppp(frame, false),
        // NetBSD writes Cisco HDLC frames under LINKTYPE_PPP_HDLC too.
        lt::PPP_HDLC => match frame.first() {
            Some(0x0F | 0x8F) => Next::Chdlc(frame),
            _ => Next::Ppp(frame, false),
        },
        lt::C_HDLC => Next::Chdlc(frame),
        lt::PPP_ETHER => pppoe(frame)?,
        lt::NFLOG => nflog(frame)?,
        lt::IEEE802_11 => Next::Wifi(frame, false),
        lt::IEEE802_11_RADIOTAP => radiotap(frame)?,
        lt::PPI if !in_ppi => ppi(frame)?,
        lt::FDDI => fddi(frame)?,
        lt::IPOIB => ipoib(frame)?,
        lt::ARCNET_LINUX => arcnet(frame)?,
        lt::JUNIPER_ETHER => juniper(frame)?,
        _ => return Err(DecodeError::UnsupportedLinkType(linktype)),
    })
}

const TRUNC_LINK: DecodeError = DecodeError::Truncated(Layer::Link);

#[inline]
fn ethernet(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    let (h, rest) = b.split_first_chunk::<14>().ok_or(TRUNC_LINK)?;
    Ok(Next::EtherType(u16::from_be_bytes([h[12], h[13]]), rest))
}

fn by_ethertype(t: u16, b: &[u8]) -> Result<Next<'_>, DecodeError> {
    use ethertype as et;
    Ok(match t {
        et::IPV4 => Next::Ip(Net::Ipv4, b),
        et::IPV6 => Next::Ip(Net::Ipv6, b),
        et::VLAN | et::QINQ | et::QINQ_9100 | et::QINQ_9200 => {
            // TCI (2) + the inner EtherType (2).
            let (tag, rest) = b
                .split_first_chunk::<4>()
                .ok_or(DecodeError::Truncated(Layer::Vlan))?;
            Next::EtherType(u16::from_be_bytes([tag[2], tag[3]]), rest)
        }
        et::PBB => {
            // 802.1ah I-TAG (4), customer DA and SA (12), then the customer EtherType.
            let (tag, rest) = b
                .split_first_chunk::<18>()
                .ok_or(DecodeError::Truncated(Layer::Vlan))?;
            Next::EtherType(u16::from_be_bytes([tag[16], tag[17]]), rest)
        }
        et::MPLS_UC | et::MPLS_MC => Next::Mpls(b),
        et::PPPOE_SESSION => pppoe(b)?,
        et::TEB => Next::Ethernet(b),
        et::PPP => Next::Ppp(b, false),
        0..=et::MAX_8023_LEN => Next::Llc(b),
        _ => return Err(DecodeError::NotIp),
    })
}

/// 802.2 LLC: SNAP carries an EtherType; SAP 0x06 is IPv4 directly (RFC 948).
fn llc(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    match b {
        [0xAA, 0xAA, 0x03, _, _, _, t0, t1, rest @ ..] => {
            Ok(Next::EtherType(u16::from_be_bytes([*t0, *t1]), rest))
        }
        [0xAA, 0xAA, 0x03, ..] => Err(TRUNC_LINK),
        [0x06, 0x06, 0x03, rest @ ..] => Ok(Next::Ip(Net::Ipv4, rest)),
        [_, _, _, ..] => Err(DecodeError::NotIp),
        _ => Err(TRUNC_LINK),
    }
}

/// A PPP frame: optional FF 03, then a 1-byte (compressed) or 2-byte protocol.
fn ppp(b: &[u8], exact: bool) -> Result<Next<'_>, DecodeError> {
    let b = match b {
        [0xFF, 0x03, rest @ ..] => rest,
        _ => b,
    };
    let (proto, rest) = match b {
        // Protocol-field compression: an odd first byte is the whole protocol.
        [p, rest @ ..] if p & 1 == 1 => (u16::from(*p), rest),
        [p0, p1, rest @ ..] => (u16::from_be_bytes([*p0, *p1]), rest),
        _ => return Err(TRUNC_LINK),
    };
    Ok(match proto {
        ppp_proto::IPV4 if exact => Next::IpExact(Net::Ipv4, rest),
        ppp_proto::IPV6 if exact => Next::IpExact(Net::Ipv6, rest),
        ppp_proto::IPV4 => Next::Ip(Net::Ipv4, rest),
        ppp_proto::IPV6 => Next::Ip(Net::Ipv6, rest),
        ppp_proto::MPLS_UC | ppp_proto::MPLS_MC => Next::Mpls(rest),
        // RFC 3518: 2 bytes of flags and pad, then the Ethernet frame.
        ppp_proto::BRIDGED_ETHERNET => Next::Ethernet(rest.get(2..).ok_or(TRUNC_LINK)?),
        _ => return Err(DecodeError::NotIp),
    })
}

/// Cisco HDLC: address, control, EtherType.
fn chdlc(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    match b {
        [_addr, _ctrl, p0, p1, rest @ ..] => Ok(Next::EtherType(u16::from_be_bytes([*p0, *p1]), rest)),
        _ => Err(TRUNC_LINK),
    }
}

/// A PPPoE session header (RFC 2516): ver/type 0x11, code 0 (session data), id, length.
/// The length (of the PPP frame) bounds the IP packet when the frame holds all of it: some
/// access concentrators pad the IP packet without fixing its total length.
fn pppoe(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    match *b {
        [0x11, 0x00, _, _, l0, l1, ref rest @ ..] => {
            let len = usize::from(u16::from_be_bytes([l0, l1]));
            Ok(match rest.get(..len) {
                Some(ppp) => Next::Ppp(ppp, true),
                None => Next::Ppp(rest, false),
            })
        }
        [_, _, _, _, _, _, ..] => Err(DecodeError::NotIp),
        _ => Err(DecodeError::Truncated(Layer::Pppoe)),
    }
}

/// Pops MPLS labels down to the bottom of the stack, then guesses what it carries:
/// IPv4/IPv6 by the version nibble, or a pseudowire control word (first nibble 0)
/// followed by an Ethernet frame.
fn mpls(mut b: &[u8]) -> Result<Next<'_>, DecodeError> {
    for _ in 0..MAX_MPLS_LABELS {
        let (label, rest) = b
            .split_first_chunk::<4>()
            .ok_or(DecodeError::Truncated(Layer::Mpls))?;
        b = rest;
        if label[2] & 0x01 == 0 {
            continue;
        }
        return match b.first().map(|v| v >> 4) {
            Some(4) => Ok(Next::Ip(Net::Ipv4, b)),
            Some(6) => Ok(Next::Ip(Net::Ipv6, b)),
            Some(0) => Ok(Next::Ethernet(
                b.get(4..).ok_or(DecodeError::Truncated(Layer::Mpls))?,
            )),
            Some(_) => Err(DecodeError::NotIp),
            None => Err(DecodeError::Truncated(Layer::Mpls)),
        };
    }
    Err(DecodeError::TooDeep)
}

/// An 802.11 data frame up to its LLC header. Management, control, null-data and
/// protected (encrypted) frames carry no readable IP.
fn wifi(b: &[u8], pad: bool) -> Result<Next<'_>, DecodeError> {
    let [fc0, fc1, ..] = *b else {
        return Err(TRUNC_LINK);
    };
    if fc0 & 0x0F != 0x08 {
        // Protocol version 0, type 2 (data) only.
        return Err(DecodeError::NotIp);
    }
    let subtype = fc0 >> 4;
    if subtype & 0x04 != 0 || fc1 & 0x40 != 0 {
        return Err(DecodeError::NotIp);
    }
    let mut hl = 24;
    if fc1 & 0x03 == 0x03 {
        hl += 6; // ToDS and FromDS: a fourth address.
    }
    let mut amsdu = false;
    if subtype & 0x08 != 0 {
        let qos = *b.get(hl).ok_or(TRUNC_LINK)?;
        amsdu = qos & 0x80 != 0;
        hl += 2;
        if fc1 & 0x80 != 0 {
            hl += 4; // +HTC: HT control field.
        }
    }
    let hdr = b.get(..hl).ok_or(TRUNC_LINK)?;
    if hdr.get(22).is_some_and(|sc| sc & 0x0F != 0) {
        return Err(DecodeError::Fragment);
    }
    if pad {
        hl = (hl + 3) & !3;
    }
    if amsdu {
        hl += 14; // The first A-MSDU subframe header: DA, SA, length.
    }
    Ok(Next::Llc(b.get(hl..).ok_or(TRUNC_LINK)?))
}

/// Radiotap: a little-endian length at 2..4, then the 802.11 frame. The flags field (if
/// present) says whether the 802.11 header is padded to a 4-byte boundary.
fn radiotap(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    let [version, _, l0, l1, p0, p1, p2, p3, ..] = *b else {
        return Err(TRUNC_LINK);
    };
    if version != 0 {
        return Err(DecodeError::NotIp);
    }
    let len = usize::from(u16::from_le_bytes([l0, l1]));
    let hdr = b.get(..len).ok_or(TRUNC_LINK)?;
    let present = u32::from_le_bytes([p0, p1, p2, p3]);
    let mut pad = false;
    if present & 0x2 != 0 {
        // Skip any extended presence bitmaps; fields start after the last one.
        let mut off = 8;
        let mut word = present;
        while word & 0x8000_0000 != 0 {
            let Some(&[w0, w1, w2, w3]) = hdr.get(off..off + 4) else {
                return Err(TRUNC_LINK);
            };
            word = u32::from_le_bytes([w0, w1, w2, w3]);
            off += 4;
        }
        if present & 0x1 != 0 {
            off = ((off + 7) & !7) + 8; // TSFT: 8 bytes, 8-aligned.
        }
        pad = hdr.get(off).is_some_and(|flags| flags & 0x20 != 0);
    }
    Ok(Next::Wifi(b.get(len..).ok_or(TRUNC_LINK)?, pad))
}

/// PPI: a little-endian header length at 2..4 and the LINKTYPE of what follows at 4..8.
fn ppi(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    let [_, _, l0, l1, d0, d1, d2, d3, ..] = *b else {
        return Err(TRUNC_LINK);
    };
    let len = usize::from(u16::from_le_bytes([l0, l1]));
    if len < 8 {
        return Err(DecodeError::NotIp);
    }
    let dlt = u32::from_le_bytes([d0, d1, d2, d3]);
    first(dlt, b.get(len..).ok_or(TRUNC_LINK)?, true)
}

/// BSD loopback: a 4-byte address family in the capturing host's byte order (NULL) or
/// network order (LOOP; OpenBSD). Either order is accepted for both.
fn null(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    let (fam, rest) = b.split_first_chunk::<4>().ok_or(TRUNC_LINK)?;
    let family = if fam[0] == 0 && fam[1] == 0 {
        u32::from_be_bytes(*fam)
    } else {
        u32::from_le_bytes(*fam)
    };
    match family {
        2 => Ok(Next::Ip(Net::Ipv4, rest)),
        // AF_INET6 on NetBSD/OpenBSD, FreeBSD, Darwin.
        24 | 28 | 30 => Ok(Next::Ip(Net::Ipv6, rest)),
        _ => Err(DecodeError::NotIp),
    }
}

/// Linux cooked capture v1: type, ARPHRD, address length, 8-byte address, protocol.
fn sll(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    let (h, rest) = b.split_first_chunk::<16>().ok_or(TRUNC_LINK)?;
    cooked(
        u16::from_be_bytes([h[2], h[3]]),
        u16::from_be_bytes([h[14], h[15]]),
        rest,
    )
}

/// Linux cooked capture v2: protocol, reserved, ifindex, ARPHRD, type, address length,
/// 8-byte address.
fn sll2(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    let (h, rest) = b.split_first_chunk::<20>().ok_or(TRUNC_LINK)?;
    cooked(
        u16::from_be_bytes([h[8], h[9]]),
        u16::from_be_bytes([h[0], h[1]]),
        rest,
    )
}

fn cooked(arphrd: u16, proto: u16, rest: &[u8]) -> Result<Next<'_>, DecodeError> {
    const ARPHRD_NETLINK: u16 = 824;
    const ETH_P_802_2: u16 = 0x0004;
    if arphrd == ARPHRD_NETLINK {
        return Err(DecodeError::NotIp);
    }
    match proto {
        ETH_P_802_2 => Ok(Next::Llc(rest)),
        // Other Linux ETH_P_* values below 0x0600 (802.3 raw, CAN, ...) carry no IP.
        0..0x0600 => Err(DecodeError::NotIp),
        // For ARPHRD_IPGRE the protocol is GRE's, which is an EtherType too.
        _ => Ok(Next::EtherType(proto, rest)),
    }
}

/// NFLOG: family, version, resource id, then netlink TLVs (length and type in the
/// capturing host's byte order, values padded to 4 bytes). TLV type 9 is the packet.
fn nflog(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    const NFULA_PAYLOAD: u16 = 9;
    const AF_INET: u8 = 2;
    const AF_INET6: u8 = 10;
    let [family, _version, _, _, ref tlvs @ ..] = *b else {
        return Err(TRUNC_LINK);
    };
    // The byte order is the one in which the first TLV's length fits.
    let little = match *tlvs {
        [l0, l1, ..] => {
            let len = usize::from(u16::from_le_bytes([l0, l1]));
            (4..=tlvs.len()).contains(&len)
        }
        _ => return Err(TRUNC_LINK),
    };
    let mut tlvs = tlvs;
    // Every TLV is at least 4 bytes long, so this ends.
    while let [l0, l1, t0, t1, ..] = *tlvs {
        let (len, ty) = if little {
            (u16::from_le_bytes([l0, l1]), u16::from_le_bytes([t0, t1]))
        } else {
            (u16::from_be_bytes([l0, l1]), u16::from_be_bytes([t0, t1]))
        };
        let len = usize::from(len);
        if len < 4 {
            return Err(TRUNC_LINK);
        }
        // Mask NLA_F_NESTED and NLA_F_NET_BYTEORDER.
        if ty & 0x3FFF == NFULA_PAYLOAD {
            // The payload may be cut by the snaplen.
            let value = tlvs.get(4..len.min(tlvs.len())).unwrap_or_default();
            return Ok(match family {
                AF_INET => Next::Ip(Net::Ipv4, value),
                AF_INET6 => Next::Ip(Net::Ipv6, value),
                _ => Next::Guess(value),
            });
        }
        tlvs = tlvs.get((len + 3) & !3..).unwrap_or_default();
    }
    Err(DecodeError::NotIp)
}

/// FDDI: frame control and two 6-byte addresses, then 802.2 LLC.
fn fddi(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    Ok(Next::Llc(b.get(13..).ok_or(TRUNC_LINK)?))
}

/// IP over InfiniBand as Linux captures it: a 20-byte source and a 20-byte destination
/// hardware address, then the RFC 4391 header (EtherType and 2 reserved bytes).
fn ipoib(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    let (h, rest) = b.split_first_chunk::<44>().ok_or(TRUNC_LINK)?;
    Ok(Next::EtherType(u16::from_be_bytes([h[40], h[41]]), rest))
}

/// Linux ARCnet: source, destination, 2-byte offset, protocol ID. RFC 1201 protocols
/// (IPv4 0xD4, IPv6 0xC4 per RFC 2497) add a split flag and a sequence number, and an
/// "exception" packet (split flag 0xFF) repeats that header after 3 filler bytes; RFC 1051
/// IPv4 (0xF0) has neither.
fn arcnet(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    let [_src, _dst, _, _, proto, ref rest @ ..] = *b else {
        return Err(TRUNC_LINK);
    };
    let net = match proto {
        0xF0 => return Ok(Next::Ip(Net::Ipv4, rest)),
        0xD4 => Net::Ipv4,
        0xC4 => Net::Ipv6,
        _ => return Err(DecodeError::NotIp),
    };
    let (split, rest) = match *rest {
        [0xFF, _, _, _, split, _, _, ref rest @ ..] => (split, rest),
        [0xFF, ..] => return Err(TRUNC_LINK),
        [split, _, _, ref rest @ ..] => (split, rest),
        _ => return Err(TRUNC_LINK),
    };
    // A split packet's first fragment has an odd split flag; later ones, even.
    if split != 0 && split & 1 == 0 {
        return Err(DecodeError::Fragment);
    }
    Ok(Next::Ip(net, rest))
}

/// Juniper's "MGC" pseudo-header: magic, flags, optional TLV extensions, then Ethernet —
/// or, if the no-L2 flag is set, a 4-byte cookie and IP.
fn juniper(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    const FLAG_NO_L2: u8 = 0x02;
    const FLAG_EXT: u8 = 0x80;
    let [m0, m1, m2, flags, ref rest @ ..] = *b else {
        return Err(TRUNC_LINK);
    };
    if [m0, m1, m2] != *b"MGC" {
        return Err(DecodeError::NotIp);
    }
    let rest = if flags & FLAG_EXT != 0 {
        let [e0, e1, ref ext @ ..] = *rest else {
            return Err(TRUNC_LINK);
        };
        ext.get(usize::from(u16::from_be_bytes([e0, e1]))..)
            .ok_or(TRUNC_LINK)?
    } else {
        rest
    };
    if flags & FLAG_NO_L2 != 0 {
        Ok(Next::Guess(rest.get(4..).ok_or(TRUNC_LINK)?))
    } else {
        Ok(Next::Ethernet(rest))
    }
}

fn guess(b: &[u8]) -> Result<Next<'_>, DecodeError> {
    match b.first().map(|v| v >> 4) {
        Some(4) => Ok(Next::Ip(Net::Ipv4, b)),
        Some(6) => Ok(Next::Ip(Net::Ipv6, b)),
        Some(_) => Err(DecodeError::NotIp),
        None => Err(TRUNC_LINK),
    }
}
