//! The shape most frames have, decoded straight: Ethernet II (at most one 802.1Q tag), IPv4
//! without options and not fragmented, or IPv6 with TCP as its first next header, then TCP.
//! Anything else, or anything this path would have to reject, returns `None` and goes
//! through the general decoder, which gives the same result for these frames (the wire
//! tests compare the two on every frame they build, mutate or draw at random).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::Packet;
use super::ip::proto;
use super::link::ethertype;
use super::tcp;

/// Byte offsets in the headers this path reads (smoltcp's `mod field`).
mod field {
    use std::ops::Range;

    /// Ethernet II: destination and source MAC, then the EtherType.
    pub const ETH_TYPE: usize = 12;
    pub const ETH_LEN: usize = 14;
    /// An 802.1Q tag: priority and VLAN id, then the inner EtherType.
    pub const VLAN_TYPE: usize = 2;
    pub const VLAN_LEN: usize = 4;

    /// IPv4: version and header length (one byte).
    pub const V4_VER_IHL: usize = 0;
    pub const V4_TOTAL_LEN: usize = 2;
    pub const V4_ID: usize = 4;
    /// Flags and fragment offset.
    pub const V4_FRAG: usize = 6;
    pub const V4_PROTO: usize = 9;
    pub const V4_SRC: Range<usize> = 12..16;
    pub const V4_DST: Range<usize> = 16..20;
    /// The header without options.
    pub const V4_LEN: usize = 20;

    /// IPv6: version (the first byte's high nibble).
    pub const V6_VER: usize = 0;
    pub const V6_PAYLOAD_LEN: usize = 4;
    pub const V6_NEXT_HEADER: usize = 6;
    pub const V6_SRC: Range<usize> = 8..24;
    pub const V6_DST: Range<usize> = 24..40;
    /// The fixed header.
    pub const V6_LEN: usize = 40;
}

/// IPv4 version 4 with a 5-word header (no options).
const V4_NO_OPTIONS: u8 = 0x45;
/// The fragment offset and the More Fragments flag (DF may be set).
const V4_FRAGMENT_BITS: u16 = 0x3FFF;

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// The network layer of a frame of the common shape: what the TCP parse needs besides
/// the segment's bytes.
#[derive(Clone, Copy, Debug)]
pub struct CommonNet<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 identification; 0 for IPv6.
    pub ip_id: u16,
    /// What was captured of the IP payload, cut at the IP length.
    pub segment: &'a [u8],
    /// The IP payload length the IP header declares.
    pub ip_payload_len: u32,
}

/// An Ethernet frame, if it has the common shape.
#[inline(always)]
pub(super) fn ethernet(frame: &[u8]) -> Option<Packet<'_>> {
    let net = ethernet_net(frame)?;
    let seg = tcp::parse(net.segment, net.ip_payload_len).ok()?;
    Some(Packet {
        src: net.src,
        dst: net.dst,
        ip_id: net.ip_id,
        tcp: seg.header,
        payload_len: seg.payload_len,
        payload: seg.payload,
        tunnel_depth: 0,
        first_fragment: false,
    })
}

/// The network layer of an Ethernet frame, if it has the common shape (up to TCP).
#[inline(always)]
pub(super) fn ethernet_net(frame: &[u8]) -> Option<CommonNet<'_>> {
    let (eth, mut rest) = frame.split_first_chunk::<{ field::ETH_LEN }>()?;
    let mut t = be16(eth, field::ETH_TYPE);
    if t == ethertype::VLAN {
        let (tag, r) = rest.split_first_chunk::<{ field::VLAN_LEN }>()?;
        t = be16(tag, field::VLAN_TYPE);
        rest = r;
    }
    match t {
        ethertype::IPV4 => ipv4(rest),
        ethertype::IPV6 => ipv6(rest),
        _ => None,
    }
}

#[inline(always)]
fn ipv4(b: &[u8]) -> Option<CommonNet<'_>> {
    let h = b.first_chunk::<{ field::V4_LEN }>()?;
    // Version 4 without options; not a fragment (DF may be set); TCP.
    if h[field::V4_VER_IHL] != V4_NO_OPTIONS
        || be16(h, field::V4_FRAG) & V4_FRAGMENT_BITS != 0
        || h[field::V4_PROTO] != proto::TCP
    {
        return None;
    }
    // 0 (segmentation offload) and impossible lengths are the general path's business.
    let total = usize::from(be16(h, field::V4_TOTAL_LEN));
    if total < field::V4_LEN {
        return None;
    }
    let segment = b.get(field::V4_LEN..total.min(b.len()))?;
    let src: [u8; 4] = h[field::V4_SRC].try_into().ok()?;
    let dst: [u8; 4] = h[field::V4_DST].try_into().ok()?;
    Some(CommonNet {
        src: IpAddr::V4(Ipv4Addr::from(src)),
        dst: IpAddr::V4(Ipv4Addr::from(dst)),
        ip_id: be16(h, field::V4_ID),
        segment,
        ip_payload_len: (total - field::V4_LEN) as u32,
    })
}

#[inline(always)]
fn ipv6(b: &[u8]) -> Option<CommonNet<'_>> {
    let (h, rest) = b.split_first_chunk::<{ field::V6_LEN }>()?;
    // Version 6, TCP right after the fixed header, a payload length (0 is a jumbogram or
    // segmentation offload: the general path's business).
    if h[field::V6_VER] >> 4 != 6 || h[field::V6_NEXT_HEADER] != proto::TCP {
        return None;
    }
    let plen = usize::from(be16(h, field::V6_PAYLOAD_LEN));
    if plen == 0 {
        return None;
    }
    let segment = rest.get(..plen.min(rest.len()))?;
    let src: [u8; 16] = h[field::V6_SRC].try_into().ok()?;
    let dst: [u8; 16] = h[field::V6_DST].try_into().ok()?;
    Some(CommonNet {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        ip_id: 0,
        segment,
        ip_payload_len: plen as u32,
    })
}
