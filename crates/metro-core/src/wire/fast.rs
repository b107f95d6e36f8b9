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

/// An IPv4 header (its first [`field::V4_LEN`] bytes) of the common shape: version 4
/// without options, not a fragment (DF may be set), carrying TCP.
#[inline(always)]
fn v4_common(h: &[u8]) -> bool {
    h[field::V4_VER_IHL] == V4_NO_OPTIONS
        && be16(h, field::V4_FRAG) & V4_FRAGMENT_BITS == 0
        && h[field::V4_PROTO] == proto::TCP
}

/// An IPv6 fixed header of the common shape: version 6, TCP right after it.
#[inline(always)]
fn v6_common(h: &[u8]) -> bool {
    h[field::V6_VER] >> 4 == 6 && h[field::V6_NEXT_HEADER] == proto::TCP
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
    match ethernet_ip(frame)? {
        (ethertype::IPV4, rest) => ipv4(rest),
        (ethertype::IPV6, rest) => ipv6(rest),
        _ => None,
    }
}

/// An Ethernet II frame's EtherType and payload, past at most one 802.1Q tag (the tag's
/// inner EtherType).
#[inline(always)]
pub fn ethernet_ip(frame: &[u8]) -> Option<(u16, &[u8])> {
    let (eth, mut rest) = frame.split_first_chunk::<{ field::ETH_LEN }>()?;
    let mut t = be16(eth, field::ETH_TYPE);
    if t == ethertype::VLAN {
        let (tag, r) = rest.split_first_chunk::<{ field::VLAN_LEN }>()?;
        t = be16(tag, field::VLAN_TYPE);
        rest = r;
    }
    Some((t, rest))
}

/// What an IPv4 header of the common shape gives a `Segment` besides its TCP segment.
#[derive(Clone, Copy, Debug)]
pub struct V4Fields {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub id: u16,
}

/// An IPv4 datagram of the common shape (no options, not a fragment) carrying a TCP segment
/// whose header and options were all captured and fit in the IP length: the two fixed
/// headers' 40 bytes checked at once, then read at fixed offsets. `None` for anything else
/// (then the general path decides, and gives the same result for what this accepts).
#[inline(always)]
pub fn ipv4_tcp(b: &[u8]) -> Option<(V4Fields, tcp::Split<'_>)> {
    let (both, rest) = b.split_first_chunk::<{ field::V4_LEN + tcp::FIXED_LEN }>()?;
    let (h, fixed) = both.split_at(field::V4_LEN);
    if !v4_common(h) {
        return None;
    }
    let total = usize::from(be16(h, field::V4_TOTAL_LEN));
    // An IP length below both headers (0: segmentation offload) is the general path's.
    let after_fixed = total.checked_sub(field::V4_LEN + tcp::FIXED_LEN)?;
    let tcp = tcp::split_whole(
        fixed.try_into().ok()?,
        &rest[..after_fixed.min(rest.len())],
        total - field::V4_LEN,
    )?;
    let src: [u8; 4] = h[field::V4_SRC].try_into().ok()?;
    let dst: [u8; 4] = h[field::V4_DST].try_into().ok()?;
    let ip = V4Fields {
        src: Ipv4Addr::from(src),
        dst: Ipv4Addr::from(dst),
        id: be16(h, field::V4_ID),
    };
    Some((ip, tcp))
}

/// An IPv6 packet of the common shape (TCP the first next header, a payload length) whose
/// TCP header and options were all captured and fit in the payload length, as
/// [`ipv4_tcp`]: its source and destination (borrowed: copied once, into the caller's
/// segment) and the segment.
#[inline(always)]
pub fn ipv6_tcp(b: &[u8]) -> Option<(&[u8; 16], &[u8; 16], tcp::Split<'_>)> {
    let (both, rest) = b.split_first_chunk::<{ field::V6_LEN + tcp::FIXED_LEN }>()?;
    let (h, fixed) = both.split_at(field::V6_LEN);
    if !v6_common(h) {
        return None;
    }
    let plen = usize::from(be16(h, field::V6_PAYLOAD_LEN));
    // Below the TCP header (0: a jumbogram or segmentation offload): the general path's.
    let after_fixed = plen.checked_sub(tcp::FIXED_LEN)?;
    let tcp = tcp::split_whole(
        fixed.try_into().ok()?,
        &rest[..after_fixed.min(rest.len())],
        plen,
    )?;
    let src: &[u8; 16] = h[field::V6_SRC].try_into().ok()?;
    let dst: &[u8; 16] = h[field::V6_DST].try_into().ok()?;
    Some((src, dst, tcp))
}

#[inline(always)]
fn ipv4(b: &[u8]) -> Option<CommonNet<'_>> {
    let h = b.first_chunk::<{ field::V4_LEN }>()?;
    if !v4_common(h) {
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
    // A payload length too (0 is a jumbogram or segmentation offload: the general path's
    // business).
    if !v6_common(h) {
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
