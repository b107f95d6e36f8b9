//! Test vectors for the decoder: a fixed TCP segment ([`TCP_TS`] + [`PAYLOAD`]) glued into
//! IP, UDP, Ethernet and tunnel headers, and [`samples`], valid frames (one or more per
//! LINKTYPE and tunnel kind) for metro-core's no-panic and mutation tests. The IP and
//! Ethernet headers come from the same code as [`TcpFrame`](crate::frame::TcpFrame)'s;
//! the rest are literal bytes, written from the RFCs, not from the decoder.

use std::net::{Ipv4Addr, Ipv6Addr};

use metro_core::wire::linktype as lt;

use crate::frame::{Ip, Link};

/// A 32-byte TCP header: 40000 -> 80, seq 0x01020304, ack 0x05060708, PSH|ACK, window 0x7210,
/// options NOP NOP TS(0x11223344, 0x55667788).
pub const TCP_TS: [u8; 32] = [
    0x9c, 0x40, 0x00, 0x50, // ports
    0x01, 0x02, 0x03, 0x04, // seq
    0x05, 0x06, 0x07, 0x08, // ack
    0x80, 0x18, 0x72, 0x10, // data offset 8, PSH|ACK, window
    0x00, 0x00, 0x00, 0x00, // checksum, urgent pointer
    0x01, 0x01, 0x08, 0x0a, // NOP NOP TS
    0x11, 0x22, 0x33, 0x44, // TSval
    0x55, 0x66, 0x77, 0x88, // TSecr
];
pub const PAYLOAD: &[u8] = b"hello";

pub const V4_SRC: [u8; 4] = [10, 0, 0, 1];
pub const V4_DST: [u8; 4] = [10, 0, 0, 2];
pub const OUTER4_SRC: [u8; 4] = [192, 0, 2, 1];
pub const OUTER4_DST: [u8; 4] = [192, 0, 2, 2];
pub const V6_SRC: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
pub const V6_DST: [u8; 16] = [0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
pub const OUTER6_SRC: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1,
];
pub const OUTER6_DST: [u8; 16] = [
    0x20, 0x01, 0x0d, 0xb8, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2,
];

pub fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}

/// The TCP segment every sample carries: [`TCP_TS`] + [`PAYLOAD`].
pub fn tcp() -> Vec<u8> {
    cat(&[&TCP_TS, PAYLOAD])
}

/// `header` (written by `write`) followed by `payload`.
fn around(header_len: usize, payload: &[u8], write: impl FnOnce(&mut [u8])) -> Vec<u8> {
    let mut v = vec![0; header_len];
    write(&mut v);
    v.extend_from_slice(payload);
    v
}

/// An IPv4 header (IHL 5, id 0x1c46, DF, TTL 64, checksum left zero: the decoder does not
/// check it) with the right total length.
pub fn ip4(src: [u8; 4], dst: [u8; 4], proto: u8, payload: &[u8]) -> Vec<u8> {
    let ip = Ip::V4 {
        src: Ipv4Addr::from(src),
        dst: Ipv4Addr::from(dst),
        id: 0x1c46,
        ttl: 64,
        tos: 0,
        dont_fragment: true,
    };
    around(20, payload, |h| ip.write_header(h, proto, payload.len()))
}

pub fn ipv4(proto: u8, payload: &[u8]) -> Vec<u8> {
    ip4(V4_SRC, V4_DST, proto, payload)
}

pub fn outer4(proto: u8, payload: &[u8]) -> Vec<u8> {
    ip4(OUTER4_SRC, OUTER4_DST, proto, payload)
}

/// An IPv6 header (hop limit 64, no flow label) with the right payload length.
pub fn ip6(src: [u8; 16], dst: [u8; 16], nh: u8, payload: &[u8]) -> Vec<u8> {
    let ip = Ip::V6 {
        src: Ipv6Addr::from(src),
        dst: Ipv6Addr::from(dst),
        hop_limit: 64,
        traffic_class: 0,
        flow_label: 0,
    };
    around(40, payload, |h| ip.write_header(h, nh, payload.len()))
}

pub fn ipv6(nh: u8, payload: &[u8]) -> Vec<u8> {
    ip6(V6_SRC, V6_DST, nh, payload)
}

pub fn outer6(nh: u8, payload: &[u8]) -> Vec<u8> {
    ip6(OUTER6_SRC, OUTER6_DST, nh, payload)
}

/// An Ethernet II header (00:11:22:33:44:55 <- 66:77:88:99:aa:bb).
pub fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
    let link = Link::Ethernet {
        dst: [0x00, 0x11, 0x22, 0x33, 0x44, 0x55],
        src: [0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb],
        vlans: &[],
    };
    around(14, payload, |h| link.write_header(h, ethertype))
}

/// A UDP header with the right length (checksum 0).
pub fn udp(sport: u16, dport: u16, payload: &[u8]) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&sport.to_be_bytes());
    v.extend_from_slice(&dport.to_be_bytes());
    v.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
    v.extend_from_slice(&[0, 0]);
    v.extend_from_slice(payload);
    v
}

/// Ethernet + inner IPv4 + [`tcp`]: what most tunnels carry.
pub fn eth_v4_tcp() -> Vec<u8> {
    eth(0x0800, &ipv4(6, &tcp()))
}

/// Valid frames, each of which decodes to the sample segment: one or more per supported
/// LINKTYPE and per tunnel kind. Seeds for the mutation test.
pub fn samples() -> Vec<(u32, Vec<u8>)> {
    let t4 = ipv4(6, &tcp());
    let t6 = ipv6(6, &tcp());
    let e4 = eth_v4_tcp();
    let wifi_hdr: [u8; 24] = [
        0x08, 0x01, 0x00, 0x00, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 1, 2, 3, 4, 5, 6, 0x10, 0x00,
    ];
    let snap4: [u8; 8] = [0xaa, 0xaa, 0x03, 0, 0, 0, 0x08, 0x00];
    let wifi = cat(&[&wifi_hdr, &snap4, &t4]);
    vec![
        (lt::ETHERNET, e4.clone()),
        (lt::ETHERNET, eth(0x86dd, &t6)),
        (
            lt::ETHERNET,
            eth(0x8100, &cat(&[&[0x00, 0x64, 0x08, 0x00], &t4])),
        ),
        (
            lt::ETHERNET,
            eth(
                0x88a8,
                &cat(&[&[0x00, 0x0a, 0x81, 0x00, 0x00, 0x14, 0x86, 0xdd], &t6]),
            ),
        ),
        (
            lt::ETHERNET,
            eth(0x8847, &cat(&[&[0x00, 0x01, 0x01, 0x40], &t4])),
        ),
        (
            lt::ETHERNET,
            eth(
                0x8847,
                &cat(&[&[0x00, 0x01, 0x01, 0x40], &[0, 0, 0, 0], &e4]),
            ),
        ),
        (
            lt::ETHERNET,
            eth(
                0x8864,
                &cat(&[
                    &[0x11, 0x00, 0x00, 0x01],
                    &((t4.len() + 2) as u16).to_be_bytes(),
                    &[0x00, 0x21],
                    &t4,
                ]),
            ),
        ),
        (lt::ETHERNET, eth(0x0800, &outer4(4, &t4))),
        (lt::ETHERNET, eth(0x0800, &outer4(41, &t6))),
        (lt::ETHERNET, eth(0x86dd, &outer6(4, &t4))),
        (
            lt::ETHERNET,
            eth(
                0x86dd,
                &ipv6(
                    0,
                    &cat(&[
                        &[60, 0, 1, 4, 0xc2, 0, 0, 0],
                        &[6, 0, 0, 0, 0, 0, 0, 0],
                        &tcp(),
                    ]),
                ),
            ),
        ),
        (
            lt::ETHERNET,
            eth(
                0x0800,
                &outer4(47, &cat(&[&[0xb0, 0x00, 0x08, 0x00], &[0; 12], &t4])),
            ),
        ),
        (
            lt::ETHERNET,
            eth(
                0x0800,
                &outer4(47, &cat(&[&[0x20, 0x00, 0x65, 0x58], &[0; 4], &e4])),
            ),
        ),
        (
            lt::ETHERNET,
            eth(
                0x0800,
                &outer4(
                    47,
                    &cat(&[
                        &[0x10, 0x00, 0x88, 0xbe],
                        &[0; 4],
                        &[0x10, 0, 0, 0, 0, 0, 0, 0],
                        &e4,
                    ]),
                ),
            ),
        ),
        (
            lt::ETHERNET,
            eth(
                0x0800,
                &outer4(
                    47,
                    &cat(&[
                        &[0x10, 0x00, 0x22, 0xeb],
                        &[0; 4],
                        &[0x20, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                        &[0; 8],
                        &e4,
                    ]),
                ),
            ),
        ),
        (
            lt::ETHERNET,
            eth(
                0x0800,
                &outer4(
                    47,
                    &cat(&[&[0x00, 0x00, 0x82, 0x00], &wifi_hdr, &snap4, &t4]),
                ),
            ),
        ),
        (
            lt::ETHERNET,
            eth(
                0x0800,
                &outer4(
                    47,
                    &cat(&[
                        &[0x30, 0x81, 0x88, 0x0b],
                        &[0; 12],
                        &[0xff, 0x03, 0x00, 0x21],
                        &t4,
                    ]),
                ),
            ),
        ),
        (
            lt::ETHERNET,
            eth(
                0x0800,
                &outer4(
                    17,
                    &udp(50000, 4789, &cat(&[&[0x08, 0, 0, 0, 0, 0, 1, 0], &e4])),
                ),
            ),
        ),
        (
            lt::ETHERNET,
            eth(
                0x0800,
                &outer4(
                    17,
                    &udp(50000, 4790, &cat(&[&[0x0c, 0, 0, 0x01, 0, 0, 1, 0], &t4])),
                ),
            ),
        ),
        (
            lt::ETHERNET,
            eth(
                0x0800,
                &outer4(
                    17,
                    &udp(
                        50000,
                        6081,
                        &cat(&[&[0x01, 0, 0x65, 0x58, 0, 0, 1, 0], &[0, 1, 2, 0], &e4]),
                    ),
                ),
            ),
        ),
        (
            lt::ETHERNET,
            eth(
                0x0800,
                &outer4(
                    17,
                    &udp(
                        2152,
                        2152,
                        &cat(&[
                            &[0x34, 0xff],
                            &((t4.len() + 8) as u16).to_be_bytes(),
                            &[0, 0, 0, 1],
                            &[0, 1, 0, 0x85],
                            &[1, 0, 0, 0],
                            &t4,
                        ]),
                    ),
                ),
            ),
        ),
        (
            lt::ETHERNET,
            eth(
                0x0800,
                &outer4(
                    17,
                    &udp(40000, 3544, &cat(&[&[0, 0, 0, 0, 0, 0, 0, 0], &t6])),
                ),
            ),
        ),
        (
            lt::ETHERNET,
            eth(
                0x0800,
                &outer4(
                    17,
                    &udp(
                        40000,
                        5072,
                        &cat(&[&[0x41, 0x52, 0x11, 41, 0, 0, 0, 0], &[0; 16], &[0; 20], &t6]),
                    ),
                ),
            ),
        ),
        (
            lt::ETHERNET,
            eth(
                0x0800,
                &outer4(
                    17,
                    &udp(
                        1701,
                        1701,
                        &cat(&[
                            &[0x40, 0x02],
                            &[0, 0, 0, 1, 0, 2],
                            &[0xff, 0x03, 0x00, 0x57],
                            &t6,
                        ]),
                    ),
                ),
            ),
        ),
        (lt::NULL, cat(&[&[2, 0, 0, 0], &t4])),
        (lt::NULL, cat(&[&[0, 0, 0, 30], &t6])),
        (lt::LOOP, cat(&[&[0, 0, 0, 24], &t6])),
        (lt::RAW, t4.clone()),
        (lt::RAW_12, t6.clone()),
        (lt::RAW_14, t4.clone()),
        (lt::IPV4, t4.clone()),
        (lt::IPV6, t6.clone()),
        (
            lt::LINUX_SLL,
            cat(&[
                &[
                    0, 0, 0, 1, 0, 6, 0, 0x11, 0x22, 0x33, 0x44, 0x55, 0, 0, 0x08, 0x00,
                ],
                &t4,
            ]),
        ),
        (
            lt::LINUX_SLL2,
            cat(&[
                &[
                    0x86, 0xdd, 0, 0, 0, 0, 0, 2, 0, 1, 0, 6, 0, 0x11, 0x22, 0x33, 0x44, 0x55, 0, 0,
                ],
                &t6,
            ]),
        ),
        (lt::PPP, cat(&[&[0xff, 0x03, 0x00, 0x21], &t4])),
        (lt::PPP_HDLC, cat(&[&[0xff, 0x03, 0x00, 0x57], &t6])),
        (lt::C_HDLC, cat(&[&[0x0f, 0x00, 0x08, 0x00], &t4])),
        (
            lt::PPP_ETHER,
            cat(&[
                &[0x11, 0x00, 0x00, 0x01],
                &((t4.len() + 2) as u16).to_be_bytes(),
                &[0x00, 0x21],
                &t4,
            ]),
        ),
        (
            lt::NFLOG,
            cat(&[
                &[2, 0, 0, 0],
                &[8, 0, 1, 0, 0x08, 0x00, 3, 0],
                &((t4.len() + 4) as u16).to_le_bytes(),
                &[9, 0],
                &t4,
            ]),
        ),
        (lt::IEEE802_11, wifi.clone()),
        (
            lt::IEEE802_11_RADIOTAP,
            cat(&[&[0, 0, 8, 0, 0, 0, 0, 0], &wifi]),
        ),
        (lt::PPI, cat(&[&[0, 0, 8, 0, 105, 0, 0, 0], &wifi])),
        (
            lt::FDDI,
            cat(&[&[0x50, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12], &snap4, &t4]),
        ),
        (lt::IPOIB, cat(&[&[0; 40], &[0x08, 0x00, 0, 0], &t4])),
        (
            lt::ARCNET_LINUX,
            cat(&[&[0x01, 0x02, 0, 0, 0xd4, 0, 0, 1], &t4]),
        ),
        (
            lt::JUNIPER_ETHER,
            cat(&[b"MGC", &[0x80, 0x00, 0x02, 0xaa, 0xbb], &e4]),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The headers, byte for byte as RFC 791, RFC 8200 and Ethernet II lay them out.
    #[test]
    fn headers_are_the_literal_bytes() {
        assert_eq!(
            ip4([1, 2, 3, 4], [5, 6, 7, 8], 17, b"xy"),
            [
                0x45, 0x00, 0x00, 22, 0x1c, 0x46, 0x40, 0x00, 0x40, 17, 0, 0, 1, 2, 3, 4, 5, 6, 7,
                8, b'x', b'y'
            ]
        );
        let mut v6 = vec![0x60, 0, 0, 0, 0, 3, 58, 0x40];
        v6.extend_from_slice(&V6_SRC);
        v6.extend_from_slice(&V6_DST);
        v6.extend_from_slice(b"abc");
        assert_eq!(ip6(V6_SRC, V6_DST, 58, b"abc"), v6);
        assert_eq!(
            eth(0x86dd, b"z"),
            [
                0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0x86, 0xdd,
                b'z'
            ]
        );
        assert_eq!(udp(53, 1000, b"q"), [0, 53, 0x03, 0xe8, 0, 9, 0, 0, b'q']);
    }
}
