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

#[inline]
fn be16(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

/// An Ethernet frame, if it has the common shape.
#[inline(always)]
pub(super) fn ethernet(frame: &[u8]) -> Option<Packet<'_>> {
    let (eth, mut rest) = frame.split_first_chunk::<14>()?;
    let mut t = be16(eth, 12);
    if t == ethertype::VLAN {
        let (tag, r) = rest.split_first_chunk::<4>()?;
        t = be16(tag, 2);
        rest = r;
    }
    match t {
        ethertype::IPV4 => ipv4(rest),
        ethertype::IPV6 => ipv6(rest),
        _ => None,
    }
}

#[inline(always)]
fn ipv4(b: &[u8]) -> Option<Packet<'_>> {
    let h = b.first_chunk::<20>()?;
    // Version 4 without options; not a fragment (DF may be set); TCP.
    if h[0] != 0x45 || be16(h, 6) & 0x3FFF != 0 || h[9] != proto::TCP {
        return None;
    }
    // 0 (segmentation offload) and impossible lengths are the general path's business.
    let total = usize::from(be16(h, 2));
    if total < 20 {
        return None;
    }
    let payload = b.get(20..total.min(b.len()))?;
    let seg = tcp::parse(payload, (total - 20) as u32).ok()?;
    Some(Packet {
        src: IpAddr::V4(Ipv4Addr::new(h[12], h[13], h[14], h[15])),
        dst: IpAddr::V4(Ipv4Addr::new(h[16], h[17], h[18], h[19])),
        ip_id: be16(h, 4),
        tcp: seg.header,
        payload_len: seg.payload_len,
        payload: seg.payload,
        tunnel_depth: 0,
        first_fragment: false,
    })
}

#[inline(always)]
fn ipv6(b: &[u8]) -> Option<Packet<'_>> {
    let (h, rest) = b.split_first_chunk::<40>()?;
    // Version 6, TCP right after the fixed header, a payload length (0 is a jumbogram or
    // segmentation offload: the general path's business).
    if h[0] >> 4 != 6 || h[6] != proto::TCP {
        return None;
    }
    let plen = usize::from(be16(h, 4));
    if plen == 0 {
        return None;
    }
    let payload = rest.get(..plen.min(rest.len()))?;
    let seg = tcp::parse(payload, plen as u32).ok()?;
    let src: [u8; 16] = h[8..24].try_into().ok()?;
    let dst: [u8; 16] = h[24..40].try_into().ok()?;
    Some(Packet {
        src: IpAddr::V6(Ipv6Addr::from(src)),
        dst: IpAddr::V6(Ipv6Addr::from(dst)),
        ip_id: 0,
        tcp: seg.header,
        payload_len: seg.payload_len,
        payload: seg.payload,
        tunnel_depth: 0,
        first_fragment: false,
    })
}
