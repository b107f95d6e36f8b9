//! metro-core's side of the decoder test vectors: the frames themselves come from
//! `metro_testkit::vectors` (a dev-dependency; it builds bytes only, so no metro-core type
//! crosses between the two copies of this crate a test build links); [`check`] asserts
//! that a decoded [`Packet`] is their segment.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

pub use metro_testkit::vectors::*;

use super::Packet;

/// Asserts `p` is the sample segment ([`tcp`]) inside the inner IPv4 or IPv6 header.
#[track_caller]
pub fn check(p: &Packet<'_>, v6: bool, depth: u8) {
    if v6 {
        assert_eq!(p.src, IpAddr::V6(Ipv6Addr::from(V6_SRC)));
        assert_eq!(p.dst, IpAddr::V6(Ipv6Addr::from(V6_DST)));
        assert_eq!(p.ip_id, 0);
    } else {
        assert_eq!(p.src, IpAddr::V4(Ipv4Addr::from(V4_SRC)));
        assert_eq!(p.dst, IpAddr::V4(Ipv4Addr::from(V4_DST)));
        assert_eq!(p.ip_id, 0x1c46);
    }
    assert_eq!(p.tcp.sport, 40000);
    assert_eq!(p.tcp.dport, 80);
    assert_eq!(p.tcp.seq, 0x01020304);
    assert_eq!(p.tcp.ack, 0x05060708);
    assert_eq!(p.tcp.header_len, 32);
    assert_eq!(p.tcp.options.timestamp, Some((0x11223344, 0x55667788)));
    assert!(!p.tcp.options.malformed);
    assert_eq!(p.payload_len, 5);
    assert_eq!(p.payload, PAYLOAD);
    assert_eq!(p.tunnel_depth, depth);
}
