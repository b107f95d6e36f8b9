//! The innermost UDP datagram or ICMP/ICMPv6 message of a frame that holds no TCP segment:
//! the input of the QUIC, DNS and ICMP matchers ([`crate::proto`]).
//!
//! Only called for frames [`super::decode`] found not to be TCP (so the TCP path pays
//! nothing for it): the same link layers and the same walk down through IP-in-IP, GRE and
//! the UDP tunnels, ending at a UDP header that is not a tunnel, or at ICMP. Fragments other
//! than the first carry no upper-layer header; a first fragment is refused too (its
//! datagram is incomplete, and its answer would be timed from the last fragment).

use std::net::IpAddr;

use super::ip::{self, MAX_IP_HEADERS, proto};
use super::link::{self, Net, Next};
use super::{DecodeError, tunnel};

/// ICMP for IPv4 (RFC 792).
pub const ICMP: u8 = 1;
/// ICMPv6 (RFC 4443).
pub const ICMPV6: u8 = 58;

/// A UDP datagram or an ICMP message, borrowed from the frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Datagram<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4<'a>,
}

/// The upper layer of a [`Datagram`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum L4<'a> {
    /// The payload is cut at the UDP length (when it is plausible) and at the capture.
    Udp {
        sport: u16,
        dport: u16,
        payload: &'a [u8],
        /// The payload's length on the wire, from the UDP header (the captured length when
        /// the header's is implausible): more than `payload.len()` when the capture cut
        /// the datagram (a live capture's snaplen).
        len: usize,
    },
    /// The whole ICMP message, from its type byte.
    Icmp(&'a [u8]),
    /// The whole ICMPv6 message, from its type byte.
    Icmpv6(&'a [u8]),
}

/// The innermost UDP datagram or ICMP message of `frame`, or `None` (TCP, another protocol,
/// a fragment, or something that cannot be read).
pub fn decode_datagram(linktype: u32, frame: &[u8]) -> Option<Datagram<'_>> {
    let mut l3 = link::strip(linktype, frame).ok()?;
    let mut depth = 0u8;
    loop {
        let ip = match l3.net {
            Net::Ipv4 => ip::ipv4(l3.bytes, l3.exact).ok()?,
            Net::Ipv6 => ip::ipv6(l3.bytes, l3.exact).ok()?,
        };
        if ip.later_fragment || ip.first_fragment {
            return None;
        }
        let next = match ip.proto {
            ICMP if matches!(ip.src, IpAddr::V4(_)) => {
                return Some(Datagram {
                    src: ip.src,
                    dst: ip.dst,
                    l4: L4::Icmp(ip.payload),
                });
            }
            ICMPV6 if matches!(ip.src, IpAddr::V6(_)) => {
                return Some(Datagram {
                    src: ip.src,
                    dst: ip.dst,
                    l4: L4::Icmpv6(ip.payload),
                });
            }
            proto::UDP => match tunnel::udp(ip.payload) {
                Ok(next) => next,
                // Not a tunnel (or a tunnel port carrying something else): the datagram.
                Err(DecodeError::NotTcp | DecodeError::Truncated(_)) => {
                    return udp(ip.src, ip.dst, ip.payload);
                }
                Err(_) => return None,
            },
            proto::IPIP => Next::Ip(Net::Ipv4, ip.payload),
            proto::IPV6 => Next::Ip(Net::Ipv6, ip.payload),
            proto::GRE => tunnel::gre(ip.payload).ok()?,
            proto::MPLS_IN_IP => Next::Mpls(ip.payload),
            proto::ETHERNET => Next::Ethernet(ip.payload),
            _ => return None,
        };
        if depth.saturating_add(1) >= MAX_IP_HEADERS {
            return None;
        }
        l3 = link::resolve(next).ok()?;
        depth += 1;
    }
}

fn udp(src: IpAddr, dst: IpAddr, b: &[u8]) -> Option<Datagram<'_>> {
    let (h, rest) = b.split_first_chunk::<8>()?;
    let ulen = usize::from(u16::from_be_bytes([h[4], h[5]]));
    let (payload, len) = match ulen.checked_sub(8) {
        Some(n) => (rest.get(..n).unwrap_or(rest), n),
        None => (rest, rest.len()),
    };
    Some(Datagram {
        src,
        dst,
        l4: L4::Udp {
            sport: u16::from_be_bytes([h[0], h[1]]),
            dport: u16::from_be_bytes([h[2], h[3]]),
            payload,
            len,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::linktype;
    use std::net::Ipv4Addr;

    fn eth_ipv4(proto: u8, l4: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&[0x08, 0x00]);
        let total = (20 + l4.len()) as u16;
        f.extend_from_slice(&[
            0x45,
            0,
            (total >> 8) as u8,
            total as u8,
            0,
            1,
            0,
            0,
            64,
            proto,
        ]);
        f.extend_from_slice(&[0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(l4);
        f
    }

    #[test]
    fn udp_payload_is_cut_at_the_udp_length() {
        // 53 -> 40000, length 12: 4 bytes of payload, then 2 of Ethernet padding.
        let f = eth_ipv4(17, &[0, 53, 0x9c, 0x40, 0, 12, 0, 0, 1, 2, 3, 4]);
        let mut padded = f.clone();
        padded.extend_from_slice(&[0xee, 0xee]);
        let d = decode_datagram(linktype::ETHERNET, &padded).unwrap();
        assert_eq!(d.src, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(
            d.l4,
            L4::Udp {
                sport: 53,
                dport: 40000,
                payload: &[1, 2, 3, 4],
                len: 4,
            }
        );
    }

    #[test]
    fn icmp_tcp_truncated_and_fragments() {
        let f = eth_ipv4(1, &[8, 0, 0, 0, 0, 7, 0, 1]);
        assert_eq!(
            decode_datagram(linktype::ETHERNET, &f).unwrap().l4,
            L4::Icmp(&[8, 0, 0, 0, 0, 7, 0, 1])
        );
        // TCP is not a datagram.
        assert!(decode_datagram(linktype::ETHERNET, &eth_ipv4(6, &[0; 20])).is_none());
        // A UDP header cut short.
        assert!(decode_datagram(linktype::ETHERNET, &eth_ipv4(17, &[0, 53, 0])).is_none());
        // A later fragment.
        let mut frag = eth_ipv4(17, &[0, 53, 0x9c, 0x40, 0, 12, 0, 0, 1, 2, 3, 4]);
        frag[14 + 6] = 0x00;
        frag[14 + 7] = 0x10;
        assert!(decode_datagram(linktype::ETHERNET, &frag).is_none());
        // ICMPv6's number inside IPv4 is not ICMP.
        assert!(decode_datagram(linktype::ETHERNET, &eth_ipv4(58, &[128, 0, 0, 0])).is_none());
    }

    #[test]
    fn random_bytes_never_panic() {
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut buf = [0u8; 128];
        for _ in 0..20_000 {
            for b in buf.iter_mut() {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *b = x as u8;
            }
            buf[12] = 0x08;
            buf[13] = 0x00;
            buf[14] = 0x45;
            let len = (x % 128) as usize;
            let _ = decode_datagram(linktype::ETHERNET, &buf[..len]);
            let _ = decode_datagram(linktype::RAW, &buf[14..len.max(14)]);
        }
    }
}
