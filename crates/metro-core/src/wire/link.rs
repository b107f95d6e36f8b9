//! Link layers: everything between the start of a captured frame and its IP header.
//!
//! Owns the per-LINKTYPE headers (Ethernet, Linux cooked SLL/SLL2, BSD NULL/LOOP, raw IP,
//! PPP and its HDLC framings, PPPoE, NFLOG, 802.11 with radiotap or PPI, FDDI, IPoIB, ARCnet,
//! Juniper) and the layer-2 encapsulations that can follow them or a tunnel: VLAN tags
//! (802.1Q, 802.1ad, 0x9100/0x9200), 802.1ah backbone tags, MPLS label stacks with
//! Ethernet pseudowires, PPPoE sessions, 802.2 LLC/SNAP and 802.11 data frames.
//!
//! Parsing is a small state machine (`Next`) driven by `resolve`, so a GRE or VXLAN
//! tunnel in `tunnel.rs` can re-enter it at any layer. The number of steps is bounded, so no
//! input can make it loop (MPLS pseudowire inside MPLS pseudowire ...). The common case —
//! Ethernet, VLAN-tagged or not, carrying IPv4 or IPv6 — never enters the state machine.

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
/// Upper bound on VLAN tags in one stack.
const MAX_VLAN_TAGS: usize = 16;

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
        // Straight-line common case: Ethernet II, maybe VLAN-tagged, carrying IP.
        let Some((hdr, rest)) = frame.split_first_chunk::<14>() else {
            return Err(DecodeError::Truncated(Layer::Link));
        };
        let (t, rest) = untag(u16::from_be_bytes([hdr[12], hdr[13]]), rest)?;
        return match t {
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
            let (t, rest) = untag(t, b)?;
            Next::EtherType(t, rest)
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

/// Pops a stack of VLAN tags (TCI and the next EtherType, 4 bytes each) if `t` starts
/// one; returns the first EtherType that is not a tag and the bytes after it. Kept out of
/// the state machine: tagged traffic is common and each state-machine step costs more
/// than a tag.
#[inline]
fn untag(mut t: u16, mut b: &[u8]) -> Result<(u16, &[u8]), DecodeError> {
    use ethertype as et;
    let mut tags = 0;
    while matches!(t, et::VLAN | et::QINQ | et::QINQ_9100 | et::QINQ_9200) {
        if tags == MAX_VLAN_TAGS {
            return Err(DecodeError::TooDeep);
        }
        let (tag, rest) = b
            .split_first_chunk::<4>()
            .ok_or(DecodeError::Truncated(Layer::Vlan))?;
        t = u16::from_be_bytes([tag[2], tag[3]]);
        b = rest;
        tags += 1;
    }
    Ok((t, b))
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
        [_addr, _ctrl, p0, p1, rest @ ..] => {
            Ok(Next::EtherType(u16::from_be_bytes([*p0, *p1]), rest))
        }
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

#[cfg(test)]
mod tests {
    use super::super::testutil::{cat, check, eth, eth_v4_tcp, ipv4, ipv6, tcp};
    use super::super::{DecodeError, Layer, decode, linktype as lt};

    fn t4() -> Vec<u8> {
        ipv4(6, &tcp())
    }
    fn t6() -> Vec<u8> {
        ipv6(6, &tcp())
    }

    #[test]
    fn ethernet_ipv6() {
        check(&decode(lt::ETHERNET, &eth(0x86dd, &t6())).unwrap(), true, 0);
    }

    #[test]
    fn vlan_qinq_and_0x9100() {
        let f = eth(0x8100, &cat(&[&[0x20, 0x64, 0x08, 0x00], &t4()]));
        check(&decode(lt::ETHERNET, &f).unwrap(), false, 0);
        // 802.1ad S-tag, then a C-tag.
        let f = eth(
            0x88a8,
            &cat(&[&[0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x86, 0xdd], &t6()]),
        );
        check(&decode(lt::ETHERNET, &f).unwrap(), true, 0);
        let f = eth(
            0x9100,
            &cat(&[&[0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x08, 0x00], &t4()]),
        );
        check(&decode(lt::ETHERNET, &f).unwrap(), false, 0);
        // Three tags are fine; a stack deeper than the bound is not.
        let f = eth(
            0x88a8,
            &cat(&[&[0, 1, 0x88, 0xa8, 0, 2, 0x81, 0, 0, 3, 0x08, 0], &t4()]),
        );
        check(&decode(lt::ETHERNET, &f).unwrap(), false, 0);
        let tags: Vec<u8> = [0, 1, 0x81, 0].repeat(40);
        let f = eth(0x8100, &cat(&[&tags, &[0, 1, 0x08, 0x00], &t4()]));
        assert_eq!(decode(lt::ETHERNET, &f).unwrap_err(), DecodeError::TooDeep);
        // A tag cut short.
        assert_eq!(
            decode(lt::ETHERNET, &eth(0x8100, &[0, 1])).unwrap_err(),
            DecodeError::Truncated(Layer::Vlan)
        );
    }

    #[test]
    fn pbb_itag() {
        let f = eth(
            0x88e7,
            &cat(&[&[0, 0, 0, 1], &[1; 12], &[0x08, 0x00], &t4()]),
        );
        check(&decode(lt::ETHERNET, &f).unwrap(), false, 0);
    }

    #[test]
    fn ethernet_truncated_and_not_ip() {
        assert_eq!(
            decode(lt::ETHERNET, &[0; 13]).unwrap_err(),
            DecodeError::Truncated(Layer::Link)
        );
        assert_eq!(
            decode(lt::ETHERNET, &eth(0x0806, &[0; 28])).unwrap_err(),
            DecodeError::NotIp
        );
        // IPv4 EtherType but the frame ends there.
        assert_eq!(
            decode(lt::ETHERNET, &eth(0x0800, &[])).unwrap_err(),
            DecodeError::Truncated(Layer::Ipv4)
        );
    }

    #[test]
    fn llc_snap_in_8023_frame() {
        let payload = cat(&[&[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00], &t4()]);
        let f = eth(payload.len() as u16, &payload);
        check(&decode(lt::ETHERNET, &f).unwrap(), false, 0);
        // STP (DSAP 0x42) carries no IP.
        let f = eth(38, &[0x42, 0x42, 0x03, 0, 0, 0]);
        assert_eq!(decode(lt::ETHERNET, &f).unwrap_err(), DecodeError::NotIp);
        let f = eth(38, &[0xaa, 0xaa, 0x03, 0, 0]);
        assert_eq!(
            decode(lt::ETHERNET, &f).unwrap_err(),
            DecodeError::Truncated(Layer::Link)
        );
    }

    #[test]
    fn mpls() {
        // One label (bottom of stack), IPv4.
        let f = eth(0x8847, &cat(&[&[0x00, 0x01, 0x01, 0x40], &t4()]));
        check(&decode(lt::ETHERNET, &f).unwrap(), false, 0);
        // Two labels, IPv6.
        let f = eth(
            0x8847,
            &cat(&[&[0x00, 0x01, 0x00, 0x40, 0x00, 0x02, 0x01, 0x40], &t6()]),
        );
        check(&decode(lt::ETHERNET, &f).unwrap(), true, 0);
        // Ethernet pseudowire with a control word.
        let f = eth(
            0x8847,
            &cat(&[&[0x00, 0x01, 0x01, 0x40, 0, 0, 0, 0], &eth_v4_tcp()]),
        );
        check(&decode(lt::ETHERNET, &f).unwrap(), false, 0);
        // MPLS inside a VLAN.
        let f = eth(
            0x8100,
            &cat(&[&[0, 5, 0x88, 0x47], &[0x00, 0x01, 0x01, 0x40], &t4()]),
        );
        check(&decode(lt::ETHERNET, &f).unwrap(), false, 0);
        // No bottom of stack before the end.
        let f = eth(0x8847, &[0x00, 0x01, 0x00, 0x40, 0x00, 0x02]);
        assert_eq!(
            decode(lt::ETHERNET, &f).unwrap_err(),
            DecodeError::Truncated(Layer::Mpls)
        );
        let f = eth(0x8847, &[0x00, 0x01, 0x00, 0x40].repeat(20));
        assert_eq!(decode(lt::ETHERNET, &f).unwrap_err(), DecodeError::TooDeep);
        // Neither IP nor a control word.
        let f = eth(0x8847, &[0x00, 0x01, 0x01, 0x40, 0x90, 0, 0, 0]);
        assert_eq!(decode(lt::ETHERNET, &f).unwrap_err(), DecodeError::NotIp);
    }

    fn pppoe_session(payload: &[u8], ppp_proto: [u8; 2]) -> Vec<u8> {
        let len = (payload.len() + 2) as u16;
        cat(&[
            &[0x11, 0x00, 0x12, 0x34],
            &len.to_be_bytes(),
            &ppp_proto,
            payload,
        ])
    }

    #[test]
    fn pppoe() {
        let f = eth(0x8864, &pppoe_session(&t4(), [0x00, 0x21]));
        check(&decode(lt::ETHERNET, &f).unwrap(), false, 0);
        let f = eth(0x8864, &pppoe_session(&t6(), [0x00, 0x57]));
        check(&decode(lt::ETHERNET, &f).unwrap(), true, 0);
        // PPPoE over QinQ.
        let f = eth(
            0x88a8,
            &cat(&[
                &[0, 1, 0x81, 0, 0, 2, 0x88, 0x64],
                &pppoe_session(&t4(), [0x00, 0x21]),
            ]),
        );
        check(&decode(lt::ETHERNET, &f).unwrap(), false, 0);
        // LCP is not IP; discovery (code != 0) neither.
        let f = eth(0x8864, &pppoe_session(&[1, 1, 0, 4], [0xc0, 0x21]));
        assert_eq!(decode(lt::ETHERNET, &f).unwrap_err(), DecodeError::NotIp);
        let f = eth(0x8864, &[0x11, 0x09, 0, 0, 0, 0]);
        assert_eq!(decode(lt::ETHERNET, &f).unwrap_err(), DecodeError::NotIp);
        assert_eq!(
            decode(lt::ETHERNET, &eth(0x8864, &[0x11, 0x00, 0])).unwrap_err(),
            DecodeError::Truncated(Layer::Pppoe)
        );
        // LINKTYPE_PPP_ETHER: the PPPoE header is the first thing in the frame.
        let f = pppoe_session(&t4(), [0x00, 0x21]);
        check(&decode(lt::PPP_ETHER, &f).unwrap(), false, 0);
    }

    /// An IP total length that claims 6 bytes more than PPPoE carries (zeek's
    /// pppoe-over-qinq.pcap): the PPPoE length wins, the 6 bytes are padding.
    #[test]
    fn pppoe_length_bounds_a_padded_ip_packet() {
        let mut ack = tcp()[..20].to_vec(); // a pure ACK, no options
        ack[12] = 0x50;
        let mut ip = ipv4(6, &ack);
        ip[3] += 6; // total length 46
        let mut f = eth(0x8864, &pppoe_session(&ip, [0x00, 0x21]));
        f.extend_from_slice(&[0; 6]);
        let p = decode(lt::ETHERNET, &f).unwrap();
        assert_eq!(p.payload_len, 0);
        assert!(p.payload.is_empty());
        // If the capture ends inside the PPPoE payload, the IP length stands (snaplen).
        let f = eth(0x8864, &pppoe_session(&t4(), [0x00, 0x21]));
        let p = decode(lt::ETHERNET, &f[..f.len() - 3]).unwrap();
        assert_eq!(p.payload_len, 5);
        assert_eq!(p.payload, b"he");
    }

    #[test]
    fn linux_sll_and_sll2() {
        #[rustfmt::skip]
        let sll: [u8; 16] = [
            0x00, 0x00, // incoming, to us
            0x00, 0x01, // ARPHRD_ETHER
            0x00, 0x06, // address length
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x00, 0x00,
            0x08, 0x00, // IPv4
        ];
        check(
            &decode(lt::LINUX_SLL, &cat(&[&sll, &t4()])).unwrap(),
            false,
            0,
        );
        let mut sll6 = sll;
        sll6[14..].copy_from_slice(&[0x86, 0xdd]);
        check(
            &decode(lt::LINUX_SLL, &cat(&[&sll6, &t6()])).unwrap(),
            true,
            0,
        );
        // ETH_P_802_2: an LLC header follows.
        let mut llc = sll;
        llc[14..].copy_from_slice(&[0x00, 0x04]);
        let f = cat(&[&llc, &[0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00], &t4()]);
        check(&decode(lt::LINUX_SLL, &f).unwrap(), false, 0);
        // Netlink captures carry no IP.
        let mut nl = sll;
        nl[2..4].copy_from_slice(&824u16.to_be_bytes());
        assert_eq!(
            decode(lt::LINUX_SLL, &cat(&[&nl, &t4()])).unwrap_err(),
            DecodeError::NotIp
        );
        assert_eq!(
            decode(lt::LINUX_SLL, &sll[..15]).unwrap_err(),
            DecodeError::Truncated(Layer::Link)
        );

        #[rustfmt::skip]
        let sll2: [u8; 20] = [
            0x86, 0xdd, // IPv6
            0x00, 0x00, // reserved
            0x00, 0x00, 0x00, 0x02, // ifindex
            0x00, 0x01, // ARPHRD_ETHER
            0x04, // outgoing
            0x06, // address length
            0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x00, 0x00,
        ];
        check(
            &decode(lt::LINUX_SLL2, &cat(&[&sll2, &t6()])).unwrap(),
            true,
            0,
        );
        let mut sll2v4 = sll2;
        sll2v4[..2].copy_from_slice(&[0x08, 0x00]);
        check(
            &decode(lt::LINUX_SLL2, &cat(&[&sll2v4, &t4()])).unwrap(),
            false,
            0,
        );
        assert_eq!(
            decode(lt::LINUX_SLL2, &sll2[..19]).unwrap_err(),
            DecodeError::Truncated(Layer::Link)
        );
    }

    #[test]
    fn null_and_loop_both_byte_orders() {
        // Little-endian host (x86 BSD/macOS).
        check(
            &decode(lt::NULL, &cat(&[&[2, 0, 0, 0], &t4()])).unwrap(),
            false,
            0,
        );
        for fam in [24u8, 28, 30] {
            check(
                &decode(lt::NULL, &cat(&[&[fam, 0, 0, 0], &t6()])).unwrap(),
                true,
                0,
            );
            check(
                &decode(lt::NULL, &cat(&[&[0, 0, 0, fam], &t6()])).unwrap(),
                true,
                0,
            );
        }
        // Big-endian host.
        check(
            &decode(lt::NULL, &cat(&[&[0, 0, 0, 2], &t4()])).unwrap(),
            false,
            0,
        );
        // LOOP is network order, but accept either.
        check(
            &decode(lt::LOOP, &cat(&[&[0, 0, 0, 2], &t4()])).unwrap(),
            false,
            0,
        );
        check(
            &decode(lt::LOOP, &cat(&[&[0, 0, 0, 24], &t6()])).unwrap(),
            true,
            0,
        );
        check(
            &decode(lt::LOOP, &cat(&[&[2, 0, 0, 0], &t4()])).unwrap(),
            false,
            0,
        );
        // AF_APPLETALK, say.
        assert_eq!(
            decode(lt::NULL, &cat(&[&[16, 0, 0, 0], &t4()])).unwrap_err(),
            DecodeError::NotIp
        );
        assert_eq!(
            decode(lt::NULL, &[2, 0, 0]).unwrap_err(),
            DecodeError::Truncated(Layer::Link)
        );
    }

    #[test]
    fn raw_ip() {
        for l in [lt::RAW, lt::RAW_12, lt::RAW_14] {
            check(&decode(l, &t4()).unwrap(), false, 0);
            check(&decode(l, &t6()).unwrap(), true, 0);
            assert_eq!(decode(l, &[0x50; 40]).unwrap_err(), DecodeError::NotIp);
            assert_eq!(
                decode(l, &[]).unwrap_err(),
                DecodeError::Truncated(Layer::Link)
            );
        }
        check(&decode(lt::IPV4, &t4()).unwrap(), false, 0);
        check(&decode(lt::IPV6, &t6()).unwrap(), true, 0);
        // The LINKTYPE says which version; the header must agree.
        assert_eq!(
            decode(lt::IPV4, &t6()).unwrap_err(),
            DecodeError::Malformed(Layer::Ipv4)
        );
        assert_eq!(
            decode(lt::IPV6, &t4()).unwrap_err(),
            DecodeError::Malformed(Layer::Ipv6)
        );
    }

    #[test]
    fn ppp_framings() {
        check(
            &decode(lt::PPP, &cat(&[&[0xff, 0x03, 0x00, 0x21], &t4()])).unwrap(),
            false,
            0,
        );
        check(
            &decode(lt::PPP, &cat(&[&[0xff, 0x03, 0x00, 0x57], &t6()])).unwrap(),
            true,
            0,
        );
        // Without address/control, and with protocol-field compression.
        check(
            &decode(lt::PPP, &cat(&[&[0x00, 0x21], &t4()])).unwrap(),
            false,
            0,
        );
        check(&decode(lt::PPP, &cat(&[&[0x21], &t4()])).unwrap(), false, 0);
        // MPLS over PPP.
        let f = cat(&[&[0xff, 0x03, 0x02, 0x81], &[0x00, 0x01, 0x01, 0x40], &t4()]);
        check(&decode(lt::PPP, &f).unwrap(), false, 0);
        // LCP.
        assert_eq!(
            decode(lt::PPP, &[0xff, 0x03, 0xc0, 0x21, 1, 1, 0, 4]).unwrap_err(),
            DecodeError::NotIp
        );
        assert_eq!(
            decode(lt::PPP, &[0xff, 0x03]).unwrap_err(),
            DecodeError::Truncated(Layer::Link)
        );
        check(
            &decode(lt::PPP_HDLC, &cat(&[&[0xff, 0x03, 0x00, 0x21], &t4()])).unwrap(),
            false,
            0,
        );
        // Cisco HDLC, in its own LINKTYPE and in PPP_HDLC.
        check(
            &decode(lt::C_HDLC, &cat(&[&[0x0f, 0x00, 0x08, 0x00], &t4()])).unwrap(),
            false,
            0,
        );
        check(
            &decode(lt::C_HDLC, &cat(&[&[0x8f, 0x00, 0x86, 0xdd], &t6()])).unwrap(),
            true,
            0,
        );
        check(
            &decode(lt::PPP_HDLC, &cat(&[&[0x0f, 0x00, 0x08, 0x00], &t4()])).unwrap(),
            false,
            0,
        );
        // SLARP.
        assert_eq!(
            decode(lt::C_HDLC, &[0x8f, 0x00, 0x80, 0x35, 0, 0, 0, 0]).unwrap_err(),
            DecodeError::NotIp
        );
    }

    #[test]
    fn nflog_both_byte_orders() {
        let t = t4();
        let len = (t.len() + 4) as u16;
        // Little-endian TLVs: a 8-byte packet-header TLV, a 5-byte prefix TLV (padded to 8),
        // then the payload.
        let f = cat(&[
            &[2, 0, 0, 0],
            &[8, 0, 1, 0, 0x08, 0x00, 3, 0],
            &[5, 0, 10, 0, b'x', 0, 0, 0],
            &len.to_le_bytes(),
            &[9, 0],
            &t,
        ]);
        check(&decode(lt::NFLOG, &f).unwrap(), false, 0);
        let f = cat(&[
            &[10, 0, 0, 0],
            &[0, 8, 0, 1, 0x86, 0xdd, 3, 0],
            &((t6().len() + 4) as u16).to_be_bytes(),
            &[0, 9],
            &t6(),
        ]);
        check(&decode(lt::NFLOG, &f).unwrap(), true, 0);
        // No payload TLV.
        let f = [2, 0, 0, 0, 8, 0, 1, 0, 0x08, 0x00, 3, 0];
        assert_eq!(decode(lt::NFLOG, &f).unwrap_err(), DecodeError::NotIp);
        // A TLV length below 4.
        let f = [2, 0, 0, 0, 0, 0, 1, 0];
        assert_eq!(
            decode(lt::NFLOG, &f).unwrap_err(),
            DecodeError::Truncated(Layer::Link)
        );
    }

    #[rustfmt::skip]
    const WIFI_DATA: [u8; 24] = [
        0x08, 0x01, 0x00, 0x00, // data, ToDS; duration
        1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 1, 2, 3, 4, 5, 6, // addresses
        0x10, 0x00, // sequence control: fragment 0
    ];
    const SNAP_V4: [u8; 8] = [0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00];

    #[test]
    fn ieee802_11_radiotap_and_ppi() {
        let wifi = cat(&[&WIFI_DATA, &SNAP_V4, &t4()]);
        check(&decode(lt::IEEE802_11, &wifi).unwrap(), false, 0);
        // Radiotap with TSFT and flags (no padding).
        let rt = [
            0, 0, 18, 0, 0x03, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x00, 0x00,
        ];
        check(
            &decode(lt::IEEE802_11_RADIOTAP, &cat(&[&rt, &wifi])).unwrap(),
            false,
            0,
        );
        // QoS data (26-byte header) with the radiotap "data pad" flag: 2 bytes of padding.
        let mut qos = WIFI_DATA.to_vec();
        qos[0] = 0x88;
        qos.extend_from_slice(&[0x00, 0x00, 0xee, 0xee]);
        let rt = [0, 0, 9, 0, 0x02, 0, 0, 0, 0x20];
        let f = cat(&[&rt, &qos, &SNAP_V4, &t4()]);
        check(&decode(lt::IEEE802_11_RADIOTAP, &f).unwrap(), false, 0);
        // PPI carrying 802.11.
        let ppi = [0, 0, 8, 0, 105, 0, 0, 0];
        check(&decode(lt::PPI, &cat(&[&ppi, &wifi])).unwrap(), false, 0);
        // PPI inside PPI is refused.
        let f = cat(&[&[0, 0, 8, 0, 192, 0, 0, 0], &ppi, &wifi]);
        assert_eq!(
            decode(lt::PPI, &f).unwrap_err(),
            DecodeError::UnsupportedLinkType(192)
        );
        // Protected, null-data, management and fragmented frames.
        let mut prot = wifi.clone();
        prot[1] |= 0x40;
        assert_eq!(
            decode(lt::IEEE802_11, &prot).unwrap_err(),
            DecodeError::NotIp
        );
        let mut null = wifi.clone();
        null[0] = 0x48;
        assert_eq!(
            decode(lt::IEEE802_11, &null).unwrap_err(),
            DecodeError::NotIp
        );
        let mut beacon = wifi.clone();
        beacon[0] = 0x80;
        assert_eq!(
            decode(lt::IEEE802_11, &beacon).unwrap_err(),
            DecodeError::NotIp
        );
        let mut frag = wifi.clone();
        frag[22] = 0x11;
        assert_eq!(
            decode(lt::IEEE802_11, &frag).unwrap_err(),
            DecodeError::Fragment
        );
        assert_eq!(
            decode(lt::IEEE802_11_RADIOTAP, &[0, 0, 40, 0, 0, 0, 0, 0]).unwrap_err(),
            DecodeError::Truncated(Layer::Link)
        );
    }

    #[test]
    fn fddi_ipoib_arcnet_juniper() {
        let fddi = cat(&[
            &[0x50, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12],
            &SNAP_V4,
            &t4(),
        ]);
        check(&decode(lt::FDDI, &fddi).unwrap(), false, 0);

        let ipoib = cat(&[&[0; 40], &[0x08, 0x00, 0x00, 0x00], &t4()]);
        check(&decode(lt::IPOIB, &ipoib).unwrap(), false, 0);
        let arp = cat(&[&[0; 40], &[0x08, 0x06, 0x00, 0x00], &[0; 28]]);
        assert_eq!(decode(lt::IPOIB, &arp).unwrap_err(), DecodeError::NotIp);

        // RFC 1201 IPv4, unsplit; an exception packet; RFC 1051; a later fragment.
        check(
            &decode(
                lt::ARCNET_LINUX,
                &cat(&[&[0xbe, 0x50, 0xc0, 0x00, 0xd4, 0x00, 0x01, 0x6b], &t4()]),
            )
            .unwrap(),
            false,
            0,
        );
        let exc = [
            0xbe, 0x50, 0, 0, 0xd4, 0xff, 0xff, 0xff, 0xd4, 0x00, 0x00, 0x01,
        ];
        check(
            &decode(lt::ARCNET_LINUX, &cat(&[&exc, &t4()])).unwrap(),
            false,
            0,
        );
        check(
            &decode(lt::ARCNET_LINUX, &cat(&[&[0xbe, 0x50, 0, 0, 0xf0], &t4()])).unwrap(),
            false,
            0,
        );
        assert_eq!(
            decode(
                lt::ARCNET_LINUX,
                &cat(&[&[0xbe, 0x50, 0, 0, 0xd4, 0x02, 0, 1], &t4()])
            )
            .unwrap_err(),
            DecodeError::Fragment
        );

        // Juniper: magic, flags (extensions present), 16 bytes of extensions, Ethernet.
        let jun = cat(&[b"MGC", &[0x80, 0x00, 0x10], &[0; 16], &eth_v4_tcp()]);
        check(&decode(lt::JUNIPER_ETHER, &jun).unwrap(), false, 0);
        // No-L2 flag: a 4-byte cookie, then IP.
        let jun = cat(&[b"MGC", &[0x02], &[0, 0, 0, 2], &t4()]);
        check(&decode(lt::JUNIPER_ETHER, &jun).unwrap(), false, 0);
        assert_eq!(
            decode(
                lt::JUNIPER_ETHER,
                &cat(&[b"XYZ", &[0x80, 0, 0], &eth_v4_tcp()])
            )
            .unwrap_err(),
            DecodeError::NotIp
        );
    }
}

/// Real frames from the shared capture corpus, checked against what tshark decodes.
#[cfg(test)]
mod corpus_tests {
    use std::net::IpAddr;

    use super::super::{decode, linktype as lt};

    // Frames from /work/shared/corpus, cut after the TCP header; expected values from tshark 4.0.

    /// arkime__nflog.pcap frame 1
    #[test]
    fn corpus_nflog() {
        #[rustfmt::skip]
        let frame = [0x02, 0x00, 0x00, 0x28, 0x08, 0x00, 0x01, 0x00, 0x00, 0x00, 0x03, 0x16, 0x05, 0x00, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x02, 0x08, 0x00, 0x0b, 0x00, 0x00, 0x00, 0x06, 0x4c, 0x08, 0x00, 0x0e, 0x00, 0x00, 0x00, 0x04, 0x02, 0x40, 0x00, 0x09, 0x00, 0x45, 0x00, 0x00, 0x3c, 0xc8, 0xfe, 0x40, 0x00, 0x40, 0x06, 0xb6, 0xaa, 0x0a, 0x0a, 0x0a, 0x0a, 0x34, 0x2b, 0xe4, 0x9c, 0xd3, 0x30, 0x00, 0x50, 0xf1, 0xea, 0x5c, 0x7f, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0x39, 0x08, 0xfc, 0x4d, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0xa1, 0x2a, 0x94, 0x81, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07];
        let p = decode(lt::NFLOG, &frame).unwrap();
        assert_eq!(p.src, "10.10.10.10".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "52.43.228.156".parse::<IpAddr>().unwrap());
        assert_eq!((p.tcp.sport, p.tcp.dport), (54064, 80));
        assert_eq!((p.tcp.seq, p.tcp.ack), (4058668159, 0));
        assert_eq!(p.payload_len, 0);
        assert_eq!(p.tcp.header_len, 40);
        assert_eq!(p.tcp.options.timestamp, Some((2703922305, 0)));
        assert_eq!(p.tunnel_depth, 0);
    }

    /// tcpdump__ipoib.pcap frame 10
    #[test]
    fn corpus_ipoib() {
        #[rustfmt::skip]
        let frame = [0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x30, 0x49, 0x00, 0x05, 0x80, 0x00, 0x05, 0x50, 0xfe, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x10, 0xe0, 0x00, 0x66, 0x4a, 0xb4, 0x51, 0x08, 0x00, 0x00, 0x00, 0x45, 0x00, 0x00, 0x34, 0x00, 0x45, 0x40, 0x00, 0x40, 0x06, 0x49, 0x0c, 0xc0, 0xa8, 0x38, 0x0a, 0xc0, 0xa8, 0x38, 0x18, 0x85, 0x7a, 0x00, 0x16, 0x2f, 0x94, 0x10, 0xf7, 0xb5, 0xdb, 0x51, 0x7b, 0x80, 0x10, 0x81, 0xd0, 0xd4, 0x51, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x03, 0xb5, 0x21, 0x61, 0x00, 0x01, 0x3c, 0x9e];
        let p = decode(lt::IPOIB, &frame).unwrap();
        assert_eq!(p.src, "192.168.56.10".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "192.168.56.24".parse::<IpAddr>().unwrap());
        assert_eq!((p.tcp.sport, p.tcp.dport), (34170, 22));
        assert_eq!((p.tcp.seq, p.tcp.ack), (798232823, 3051049339));
        assert_eq!(p.payload_len, 0);
        assert_eq!(p.tcp.header_len, 32);
        assert_eq!(p.tcp.options.timestamp, Some((62202209, 81054)));
        assert_eq!(p.tunnel_depth, 0);
    }

    /// tcpdump__arcnet-rfc1201-arp-icmp-http.pcap frame 13
    #[test]
    fn corpus_arcnet() {
        #[rustfmt::skip]
        let frame = [0xbe, 0x50, 0xc0, 0x00, 0xd4, 0x00, 0x01, 0x6b, 0x45, 0x00, 0x00, 0x3c, 0x94, 0x2d, 0x40, 0x00, 0x40, 0x06, 0x95, 0xdb, 0x0a, 0x50, 0x83, 0x01, 0x92, 0xbe, 0xf0, 0xa3, 0x04, 0x03, 0x00, 0x50, 0x99, 0x05, 0x3d, 0x29, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0x07, 0x50, 0xb0, 0x59, 0x00, 0x00, 0x02, 0x04, 0x01, 0xd4, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x04, 0xa9, 0x04, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x00];
        let p = decode(lt::ARCNET_LINUX, &frame).unwrap();
        assert_eq!(p.src, "10.80.131.1".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "146.190.240.163".parse::<IpAddr>().unwrap());
        assert_eq!((p.tcp.sport, p.tcp.dport), (1027, 80));
        assert_eq!((p.tcp.seq, p.tcp.ack), (2567257385, 0));
        assert_eq!(p.payload_len, 0);
        assert_eq!(p.tcp.header_len, 40);
        assert_eq!(p.tcp.options.timestamp, Some((305412, 0)));
        assert_eq!(p.tunnel_depth, 0);
    }

    /// tcpdump__bgp-aigp.pcap frame 1
    #[test]
    fn corpus_juniper_ether() {
        #[rustfmt::skip]
        let frame = [0x4d, 0x47, 0x43, 0x80, 0x00, 0x10, 0x03, 0x01, 0x01, 0x06, 0x01, 0x0e, 0x01, 0x02, 0x8c, 0x00, 0x04, 0x04, 0x4c, 0x01, 0x00, 0x00, 0x00, 0x50, 0x56, 0x8b, 0x5e, 0x9f, 0x00, 0x50, 0x56, 0x8b, 0x6d, 0xde, 0x08, 0x00, 0x45, 0xc0, 0x00, 0xb6, 0x88, 0xf7, 0x00, 0x00, 0x40, 0x06, 0x70, 0x62, 0xac, 0x10, 0x14, 0x05, 0xac, 0x10, 0x14, 0x03, 0xe8, 0xef, 0x00, 0xb3, 0xe9, 0xe0, 0x2e, 0x03, 0xc7, 0x2f, 0x6b, 0x7d, 0x80, 0x18, 0x40, 0x00, 0xe1, 0x12, 0x00, 0x00, 0x01, 0x01, 0x08, 0x0a, 0x01, 0xf3, 0x7b, 0x46, 0x01, 0xf2, 0xe5, 0x77, 0xff, 0xff, 0xff, 0xff];
        let p = decode(lt::JUNIPER_ETHER, &frame).unwrap();
        assert_eq!(p.src, "172.16.20.5".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "172.16.20.3".parse::<IpAddr>().unwrap());
        assert_eq!((p.tcp.sport, p.tcp.dport), (59631, 179));
        assert_eq!((p.tcp.seq, p.tcp.ack), (3923783171, 3341773693));
        assert_eq!(p.payload_len, 130);
        assert_eq!(p.tcp.header_len, 32);
        assert_eq!(p.tcp.options.timestamp, Some((32734022, 32695671)));
    }

    /// arkime__80211http.pcap frame 1
    #[test]
    fn corpus_radiotap() {
        #[rustfmt::skip]
        let frame = [0x00, 0x00, 0x24, 0x00, 0x2f, 0x40, 0x00, 0xa0, 0x20, 0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x28, 0xeb, 0x68, 0x28, 0x00, 0x00, 0x00, 0x00, 0x10, 0x16, 0x9e, 0x09, 0xa0, 0x00, 0xba, 0x00, 0x00, 0x00, 0xba, 0x00, 0x08, 0x01, 0x02, 0x01, 0x88, 0x25, 0x93, 0x40, 0x6b, 0x6f, 0xf8, 0xa9, 0xd0, 0x1e, 0x90, 0xa3, 0x88, 0x25, 0x93, 0x40, 0x6b, 0x6f, 0x20, 0xb7, 0xaa, 0xaa, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x45, 0x00, 0x00, 0x3c, 0xf9, 0x31, 0x40, 0x00, 0x40, 0x06, 0x61, 0x30, 0xac, 0x05, 0x05, 0x71, 0x0e, 0x11, 0x20, 0xd3, 0xc1, 0x09, 0x00, 0x50, 0x96, 0x74, 0x0d, 0xd6, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xff, 0xff, 0x0d, 0x1b, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0xff, 0xff, 0xf4, 0xe7, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x06, 0x38, 0xac, 0x82, 0xfa];
        let p = decode(lt::IEEE802_11_RADIOTAP, &frame).unwrap();
        assert_eq!(p.src, "172.5.5.113".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "14.17.32.211".parse::<IpAddr>().unwrap());
        assert_eq!((p.tcp.sport, p.tcp.dport), (49417, 80));
        assert_eq!((p.tcp.seq, p.tcp.ack), (2524188118, 0));
        assert_eq!(p.payload_len, 0);
        assert_eq!(p.tcp.header_len, 40);
        assert_eq!(p.tcp.options.timestamp, Some((4294964455, 0)));
        assert_eq!(p.tunnel_depth, 0);
    }

    /// libpcap__http_PPI.pcap frame 5
    #[test]
    fn corpus_ppi() {
        #[rustfmt::skip]
        let frame = [0x00, 0x00, 0x54, 0x00, 0x69, 0x00, 0x00, 0x00, 0x02, 0x00, 0x14, 0x00, 0xa7, 0x91, 0xcd, 0xf3, 0x00, 0x00, 0x00, 0x00, 0x01, 0x00, 0x58, 0x02, 0x76, 0x09, 0xc0, 0x00, 0x00, 0x00, 0xc7, 0xa0, 0x04, 0x00, 0x30, 0x00, 0x06, 0x00, 0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0f, 0x02, 0x27, 0x22, 0x20, 0x1d, 0xff, 0x23, 0x26, 0x20, 0xff, 0x8a, 0x09, 0xc0, 0x00, 0xc2, 0xa0, 0xc0, 0xa0, 0xbd, 0xa0, 0x80, 0x80, 0x18, 0x18, 0x27, 0x19, 0x19, 0x11, 0x24, 0x1c, 0x23, 0x21, 0x1a, 0x17, 0x00, 0x00, 0x00, 0x00, 0x88, 0x01, 0x2c, 0x00, 0x00, 0x14, 0xa5, 0xcd, 0x74, 0x7b, 0x00, 0x14, 0xa5, 0xcb, 0x6e, 0x1a, 0x00, 0x01, 0x02, 0x27, 0xf9, 0xb2, 0xb0, 0xed, 0x00, 0x00, 0xaa, 0xaa, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x45, 0x00, 0x00, 0x40, 0x8d, 0x07, 0x40, 0x00, 0x80, 0x06, 0xdf, 0xc2, 0xc0, 0xa8, 0x01, 0x84, 0x82, 0xc0, 0x49, 0x01, 0x0e, 0xf3, 0x00, 0x50, 0x34, 0xfb, 0x5c, 0xf8, 0x00, 0x00, 0x00, 0x00, 0xb0, 0x02, 0xff, 0xff, 0x06, 0xda, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x01, 0x03, 0x03, 0x03, 0x01, 0x01, 0x08, 0x0a, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01, 0x01, 0x04, 0x02, 0x2c, 0xba, 0x2c, 0xff];
        let p = decode(lt::PPI, &frame).unwrap();
        assert_eq!(p.src, "192.168.1.132".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "130.192.73.1".parse::<IpAddr>().unwrap());
        assert_eq!((p.tcp.sport, p.tcp.dport), (3827, 80));
        assert_eq!((p.tcp.seq, p.tcp.ack), (888888568, 0));
        assert_eq!(p.payload_len, 0);
        assert_eq!(p.tcp.header_len, 44);
        assert_eq!(p.tcp.options.timestamp, Some((0, 0)));
    }

    /// tcptrace__single_byte_rexmit.dmp frame 1
    #[test]
    fn corpus_fddi() {
        #[rustfmt::skip]
        let frame = [0x50, 0x00, 0x00, 0x0c, 0x7e, 0x59, 0xa0, 0x00, 0xe0, 0x34, 0x15, 0x60, 0x60, 0xaa, 0xaa, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x45, 0x00, 0x00, 0x2c, 0x0d, 0x25, 0x40, 0x00, 0xfb, 0x06, 0xa9, 0x44, 0x1e, 0xe5, 0x76, 0x43, 0x43, 0x52, 0x09, 0xfd, 0x91, 0x17, 0x00, 0x50, 0xda, 0x56, 0xfc, 0x08, 0x00, 0x00, 0x00, 0x00, 0x60, 0x02, 0x22, 0x38, 0x44, 0xc5, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4];
        let p = decode(lt::FDDI, &frame).unwrap();
        assert_eq!(p.src, "30.229.118.67".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "67.82.9.253".parse::<IpAddr>().unwrap());
        assert_eq!((p.tcp.sport, p.tcp.dport), (37143, 80));
        assert_eq!((p.tcp.seq, p.tcp.ack), (3663133704, 0));
        assert_eq!(p.payload_len, 0);
        assert_eq!(p.tcp.header_len, 24);
        assert_eq!(p.tcp.options.timestamp, None);
        assert_eq!(p.tunnel_depth, 0);
    }

    /// suricata-verify__hdlc-http_1tx.pcap frame 1
    #[test]
    fn corpus_c_hdlc() {
        #[rustfmt::skip]
        let frame = [0x0f, 0x00, 0x08, 0x00, 0x45, 0x00, 0x00, 0x30, 0x15, 0x5a, 0x40, 0x00, 0x80, 0x06, 0x6c, 0xd0, 0xc0, 0xa8, 0x02, 0x07, 0x41, 0x37, 0x74, 0xb7, 0x13, 0x4a, 0x00, 0x50, 0x9c, 0x34, 0x09, 0x6c, 0x00, 0x00, 0x00, 0x00, 0x70, 0x02, 0x40, 0x00, 0x11, 0x47, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x01, 0x01, 0x04, 0x02];
        let p = decode(lt::C_HDLC, &frame).unwrap();
        assert_eq!(p.src, "192.168.2.7".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "65.55.116.183".parse::<IpAddr>().unwrap());
        assert_eq!((p.tcp.sport, p.tcp.dport), (4938, 80));
        assert_eq!((p.tcp.seq, p.tcp.ack), (2620655980, 0));
        assert_eq!(p.payload_len, 0);
        assert_eq!(p.tcp.header_len, 28);
        assert_eq!(p.tcp.options.timestamp, None);
    }

    /// suricata-verify__decode-sll2-01__input.pcap frame 1
    #[test]
    fn corpus_sll2() {
        #[rustfmt::skip]
        let frame = [0x08, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x00, 0x01, 0x04, 0x06, 0xaa, 0x76, 0x30, 0x71, 0xb0, 0xe7, 0x00, 0x00, 0x45, 0x00, 0x00, 0x3c, 0x45, 0xa9, 0x40, 0x00, 0x40, 0x06, 0x70, 0xb0, 0xc0, 0xa8, 0x01, 0xfd, 0xc0, 0xa8, 0x01, 0x15, 0xdc, 0x9e, 0x00, 0x50, 0x8b, 0x0b, 0x43, 0x93, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0xfa, 0xf0, 0xd7, 0x0c, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04, 0x02, 0x08, 0x0a, 0xc5, 0xbe, 0x80, 0x53, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07];
        let p = decode(lt::LINUX_SLL2, &frame).unwrap();
        assert_eq!(p.src, "192.168.1.253".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "192.168.1.21".parse::<IpAddr>().unwrap());
        assert_eq!((p.tcp.sport, p.tcp.dport), (56478, 80));
        assert_eq!((p.tcp.seq, p.tcp.ack), (2332771219, 0));
        assert_eq!(p.payload_len, 0);
        assert_eq!(p.tcp.header_len, 40);
        assert_eq!(p.tcp.options.timestamp, Some((3317596243, 0)));
    }

    /// zeek__gre-aruba.pcap frame 1
    #[test]
    fn corpus_gre_aruba() {
        #[rustfmt::skip]
        let frame = [0x00, 0x11, 0xdc, 0x00, 0x00, 0x01, 0xf0, 0x5c, 0x19, 0xcf, 0xc8, 0xd6, 0x81, 0x00, 0x01, 0x2c, 0x08, 0x00, 0x45, 0x00, 0x00, 0x62, 0x4b, 0x03, 0x00, 0x00, 0xff, 0x2f, 0x2f, 0x84, 0x0a, 0x03, 0x22, 0xab, 0x0a, 0x21, 0x0a, 0x17, 0x00, 0x00, 0x82, 0x00, 0x88, 0x01, 0x00, 0x00, 0xf0, 0x5c, 0x19, 0x7c, 0x8d, 0x70, 0x5c, 0x5f, 0x67, 0x02, 0x2e, 0x7a, 0x00, 0x11, 0xdc, 0x00, 0x00, 0x01, 0x80, 0x7d, 0x00, 0x00, 0xaa, 0xaa, 0x03, 0x00, 0x00, 0x00, 0x08, 0x00, 0x45, 0x00, 0x00, 0x28, 0x6e, 0xa8, 0x40, 0x00, 0x80, 0x06, 0xb7, 0xe2, 0x0a, 0x25, 0x24, 0x5c, 0xcd, 0xb9, 0xd8, 0x0a, 0xe6, 0x5d, 0x00, 0x50, 0x05, 0xe6, 0xe9, 0x1b, 0xd4, 0x48, 0x5b, 0x00, 0x50, 0x11, 0x40, 0x96, 0x95, 0xff, 0x00, 0x00];
        let p = decode(lt::ETHERNET, &frame).unwrap();
        assert_eq!(p.src, "10.37.36.92".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "205.185.216.10".parse::<IpAddr>().unwrap());
        assert_eq!((p.tcp.sport, p.tcp.dport), (58973, 80));
        assert_eq!((p.tcp.seq, p.tcp.ack), (99019035, 3561511680));
        assert_eq!(p.payload_len, 0);
        assert_eq!(p.tcp.header_len, 20);
        assert_eq!(p.tcp.options.timestamp, None);
        assert_eq!(p.tunnel_depth, 1);
    }

    /// zeek__gtp2_different_udp_port.pcap frame 1
    #[test]
    fn corpus_gtp_u() {
        #[rustfmt::skip]
        let frame = [0x00, 0x00, 0x0c, 0x07, 0xac, 0xe8, 0x88, 0xe0, 0xf3, 0xc8, 0xbf, 0xf0, 0x08, 0x00, 0x45, 0x00, 0x00, 0x58, 0xa5, 0xe2, 0x00, 0x00, 0x3f, 0x11, 0x77, 0x75, 0xa7, 0x37, 0x69, 0xf4, 0xcf, 0xe9, 0x7d, 0x28, 0x17, 0x12, 0x08, 0x68, 0x00, 0x44, 0x35, 0xae, 0x30, 0xff, 0x00, 0x34, 0x9e, 0x40, 0xba, 0x4f, 0x45, 0x00, 0x00, 0x34, 0x35, 0x31, 0x40, 0x00, 0x80, 0x06, 0x87, 0xf6, 0x0a, 0x83, 0x11, 0xaa, 0xad, 0xc7, 0x73, 0xa8, 0xca, 0x5b, 0x00, 0x50, 0xe8, 0xef, 0x28, 0x1f, 0x00, 0x00, 0x00, 0x00, 0x80, 0x02, 0x20, 0x00, 0x35, 0xbf, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x01, 0x03, 0x03, 0x02, 0x01, 0x01, 0x04, 0x02];
        let p = decode(lt::ETHERNET, &frame).unwrap();
        assert_eq!(p.src, "10.131.17.170".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "173.199.115.168".parse::<IpAddr>().unwrap());
        assert_eq!((p.tcp.sport, p.tcp.dport), (51803, 80));
        assert_eq!((p.tcp.seq, p.tcp.ack), (3907987487, 0));
        assert_eq!(p.payload_len, 0);
        assert_eq!(p.tcp.header_len, 32);
        assert_eq!(p.tcp.options.timestamp, None);
        assert_eq!(p.tunnel_depth, 1);
    }

    /// zeek__ayiya3.pcap frame 12
    #[test]
    fn corpus_ayiya() {
        #[rustfmt::skip]
        let frame = [0x00, 0x06, 0x25, 0x59, 0xa2, 0x20, 0x00, 0x17, 0xf2, 0x4c, 0x7a, 0x35, 0x08, 0x00, 0x45, 0x00, 0x00, 0x9c, 0x45, 0x57, 0x00, 0x00, 0x40, 0x11, 0x36, 0xc8, 0xc0, 0xa8, 0x03, 0x65, 0xd8, 0x0e, 0x62, 0x16, 0xd2, 0x63, 0x13, 0xd0, 0x00, 0x88, 0xa2, 0x0e, 0x41, 0x52, 0x11, 0x29, 0x4a, 0xf6, 0x4c, 0x05, 0x20, 0x01, 0x49, 0x78, 0x00, 0x0f, 0x00, 0x4c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x72, 0xda, 0x85, 0xee, 0x36, 0x65, 0x32, 0x8a, 0x9e, 0x17, 0xc1, 0xf4, 0xef, 0xb6, 0xbb, 0xf0, 0x34, 0x21, 0x1d, 0x54, 0x60, 0x00, 0x00, 0x00, 0x00, 0x2c, 0x06, 0x40, 0x20, 0x01, 0x49, 0x78, 0x00, 0x0f, 0x00, 0x4c, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x02, 0x20, 0x01, 0x48, 0x60, 0xb0, 0x02, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x68, 0xd0, 0x86, 0x00, 0x50, 0x5b, 0x2a, 0xbe, 0x49, 0x00, 0x00, 0x00, 0x00, 0xb0, 0x02, 0xff, 0xff, 0x6e, 0x53, 0x00, 0x00, 0x02, 0x04, 0x04, 0xc4, 0x01, 0x03, 0x03, 0x01, 0x01, 0x01, 0x08, 0x0a, 0x3a, 0xa0, 0x22, 0x11, 0x00, 0x00, 0x00, 0x00, 0x04, 0x02, 0x00, 0x00];
        let p = decode(lt::ETHERNET, &frame).unwrap();
        assert_eq!(p.src, "2001:4978:f:4c::2".parse::<IpAddr>().unwrap());
        assert_eq!(p.dst, "2001:4860:b002::68".parse::<IpAddr>().unwrap());
        assert_eq!((p.tcp.sport, p.tcp.dport), (53382, 80));
        assert_eq!((p.tcp.seq, p.tcp.ack), (1529527881, 0));
        assert_eq!(p.payload_len, 0);
        assert_eq!(p.tcp.header_len, 44);
        assert_eq!(p.tcp.options.timestamp, Some((983573009, 0)));
        assert_eq!(p.tunnel_depth, 1);
    }

    /// dpkt__nb6-http.pcap frame 53
    #[test]
    fn corpus_pppoe_l2tp() {
        #[rustfmt::skip]
        let frame = [0x00, 0x17, 0x33, 0x61, 0x00, 0x00, 0xe0, 0xa1, 0xd7, 0x18, 0xc2, 0x73, 0x88, 0x64, 0x11, 0x00, 0x3b, 0x1a, 0x00, 0x78, 0x00, 0x21, 0x45, 0x00, 0x00, 0x76, 0x5b, 0x5d, 0x00, 0x00, 0x40, 0x11, 0x5e, 0xe0, 0x5f, 0x88, 0xf2, 0x63, 0x6d, 0x06, 0x01, 0x48, 0x06, 0xa5, 0x06, 0xa5, 0x00, 0x62, 0x00, 0x00, 0x00, 0x02, 0x05, 0xf7, 0x20, 0x6a, 0xff, 0x03, 0x00, 0x57, 0x60, 0x00, 0x00, 0x00, 0x00, 0x28, 0x06, 0x3f, 0x2a, 0x00, 0x5e, 0x80, 0x01, 0x01, 0x21, 0x2d, 0x05, 0x04, 0x07, 0xb1, 0x25, 0x72, 0xdb, 0x22, 0x26, 0x06, 0xf2, 0x00, 0x00, 0x00, 0x00, 0x07, 0x0b, 0xad, 0xf0, 0x0d, 0xd0, 0x0d, 0x00, 0x01, 0x90, 0xaa, 0x00, 0x50, 0x14, 0x96, 0x47, 0x9e, 0x00, 0x00, 0x00, 0x00, 0xa0, 0x02, 0x6c, 0xd4, 0x1e, 0x9c, 0x00, 0x00, 0x02, 0x04, 0x05, 0x71, 0x04, 0x02, 0x08, 0x0a, 0x00, 0x06, 0x33, 0xce, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07];
        let p = decode(lt::ETHERNET, &frame).unwrap();
        assert_eq!(
            p.src,
            "2a00:5e80:101:212d:504:7b1:2572:db22"
                .parse::<IpAddr>()
                .unwrap()
        );
        assert_eq!(
            p.dst,
            "2606:f200:0:7:bad:f00d:d00d:1".parse::<IpAddr>().unwrap()
        );
        assert_eq!((p.tcp.sport, p.tcp.dport), (37034, 80));
        assert_eq!((p.tcp.seq, p.tcp.ack), (345393054, 0));
        assert_eq!(p.payload_len, 0);
        assert_eq!(p.tcp.header_len, 40);
        assert_eq!(p.tcp.options.timestamp, Some((406478, 0)));
        assert_eq!(p.tunnel_depth, 1);
    }
}
