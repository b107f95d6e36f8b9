//! Decoding one captured frame into a borrowed view of its innermost TCP segment.
//!
//! Owns: link layers, VLAN/MPLS/PPPoE, IPv4/IPv6 (extension headers), tunnels (IP-in-IP,
//! GRE, VXLAN, Geneve), TCP header and options. Never allocates, never panics: every read
//! is bounds-checked and a malformed option ends option parsing while keeping the header.
//!
//! Files: `link.rs` (everything before the IP header, per LINKTYPE), `ip.rs` (IPv4/IPv6 and
//! the loop down through nested IP headers), `tunnel.rs` (GRE/ERSPAN and the UDP tunnels:
//! VXLAN, Geneve, GTP-U, Teredo, AYIYA), `tcp.rs` (TCP header and options).

pub mod ip;
pub mod link;
pub mod tcp;
pub mod tunnel;

#[cfg(test)]
mod testutil;

use std::net::IpAddr;

pub use tcp::{TcpFlags, TcpOptions};

/// LINKTYPE_* values metro decodes (see <https://www.tcpdump.org/linktypes.html>).
pub mod linktype {
    pub const NULL: u32 = 0;
    pub const ETHERNET: u32 = 1;
    pub const PPP: u32 = 9;
    pub const RAW_12: u32 = 12;
    pub const RAW_14: u32 = 14;
    pub const PPP_HDLC: u32 = 50;
    pub const PPP_ETHER: u32 = 51;
    pub const RAW: u32 = 101;
    pub const C_HDLC: u32 = 104;
    pub const LOOP: u32 = 108;
    pub const LINUX_SLL: u32 = 113;
    pub const IPV4: u32 = 228;
    pub const IPV6: u32 = 229;
    pub const LINUX_SLL2: u32 = 276;
    pub const NFLOG: u32 = 239;
    pub const FDDI: u32 = 10;
    pub const IEEE802_11: u32 = 105;
    pub const IEEE802_11_RADIOTAP: u32 = 127;
    pub const ARCNET_LINUX: u32 = 129;
    pub const JUNIPER_ETHER: u32 = 178;
    pub const PPI: u32 = 192;
    pub const IPOIB: u32 = 242;

    /// Every LINKTYPE [`decode`](super::decode) accepts.
    pub const SUPPORTED: &[u32] = &[
        NULL,
        ETHERNET,
        PPP,
        FDDI,
        RAW_12,
        RAW_14,
        PPP_HDLC,
        PPP_ETHER,
        RAW,
        C_HDLC,
        IEEE802_11,
        LOOP,
        LINUX_SLL,
        IEEE802_11_RADIOTAP,
        ARCNET_LINUX,
        JUNIPER_ETHER,
        PPI,
        IPV4,
        IPV6,
        NFLOG,
        IPOIB,
        LINUX_SLL2,
    ];

    /// Whether [`decode`](super::decode) knows this LINKTYPE.
    pub fn is_supported(linktype: u32) -> bool {
        SUPPORTED.contains(&linktype)
    }

    /// The LINKTYPE's name without the `LINKTYPE_` prefix, for logs and summaries.
    pub fn name(linktype: u32) -> Option<&'static str> {
        Some(match linktype {
            NULL => "NULL",
            ETHERNET => "ETHERNET",
            PPP => "PPP",
            FDDI => "FDDI",
            RAW_12 | RAW_14 | RAW => "RAW",
            PPP_HDLC => "PPP_HDLC",
            PPP_ETHER => "PPP_ETHER",
            C_HDLC => "C_HDLC",
            IEEE802_11 => "IEEE802_11",
            LOOP => "LOOP",
            LINUX_SLL => "LINUX_SLL",
            IEEE802_11_RADIOTAP => "IEEE802_11_RADIOTAP",
            ARCNET_LINUX => "ARCNET_LINUX",
            JUNIPER_ETHER => "JUNIPER_ETHER",
            PPI => "PPI",
            IPV4 => "IPV4",
            IPV6 => "IPV6",
            NFLOG => "NFLOG",
            IPOIB => "IPOIB",
            LINUX_SLL2 => "LINUX_SLL2",
            _ => return None,
        })
    }
}

/// One decoded TCP segment: the innermost IP header's addresses and the TCP header.
/// Everything is `Copy`; `payload` borrows the frame.
#[derive(Clone, Copy, Debug)]
pub struct Packet<'a> {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// IPv4 identification; 0 for IPv6 (used only to recognise frames captured twice).
    pub ip_id: u16,
    pub tcp: TcpHeader,
    /// TCP payload length from the IP header's length fields (not the captured length), so a
    /// segment cut by the snaplen still counts in full. An IPv4 total length of 0 (TSO) falls
    /// back to the captured length.
    pub payload_len: u32,
    /// The captured part of the payload (may be shorter than `payload_len`).
    pub payload: &'a [u8],
    /// How many IP headers enclosed the innermost one (0 = not tunnelled).
    pub tunnel_depth: u8,
}

/// A TCP header with its options parsed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpHeader {
    pub sport: u16,
    pub dport: u16,
    pub seq: u32,
    pub ack: u32,
    pub flags: TcpFlags,
    pub window: u16,
    pub header_len: u8,
    pub options: TcpOptions,
}

/// Why a frame yielded no TCP segment. Each reason is its own counter in summaries.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DecodeError {
    /// A header ran past the captured bytes.
    Truncated(Layer),
    /// A link type metro does not decode.
    UnsupportedLinkType(u32),
    /// The frame carries something other than IP (ARP, LLDP, ...).
    NotIp,
    /// IP, but not TCP at the innermost layer (UDP that is not a tunnel, ICMP, ...).
    NotTcp,
    /// An IPv4/IPv6 fragment other than the first: no TCP header to read.
    Fragment,
    /// A header field holds an impossible value (IHL < 5, TCP data offset < 5, ...).
    Malformed(Layer),
    /// Tunnels nested deeper than metro follows.
    TooDeep,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Layer {
    Link,
    Vlan,
    Mpls,
    Pppoe,
    Ipv4,
    Ipv6,
    Gre,
    Udp,
    Tunnel,
    Tcp,
}

impl DecodeError {
    /// A short stable name for counters and summaries, e.g. `truncated_tcp`.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Truncated(l) => match l {
                Layer::Link => "truncated_link",
                Layer::Vlan => "truncated_vlan",
                Layer::Mpls => "truncated_mpls",
                Layer::Pppoe => "truncated_pppoe",
                Layer::Ipv4 => "truncated_ipv4",
                Layer::Ipv6 => "truncated_ipv6",
                Layer::Gre => "truncated_gre",
                Layer::Udp => "truncated_udp",
                Layer::Tunnel => "truncated_tunnel",
                Layer::Tcp => "truncated_tcp",
            },
            DecodeError::UnsupportedLinkType(_) => "unsupported_linktype",
            DecodeError::NotIp => "not_ip",
            DecodeError::NotTcp => "not_tcp",
            DecodeError::Fragment => "ip_fragment",
            DecodeError::Malformed(l) => match l {
                Layer::Ipv4 => "malformed_ipv4",
                Layer::Ipv6 => "malformed_ipv6",
                Layer::Tcp => "malformed_tcp",
                _ => "malformed_other",
            },
            DecodeError::TooDeep => "tunnel_too_deep",
        }
    }
}

/// Decode one frame of the given LINKTYPE into its innermost TCP segment.
///
/// Tunnels are followed down to the innermost IP header (see [`Packet::tunnel_depth`]);
/// the first layer that cannot be read decides the error.
#[inline]
pub fn decode(linktype: u32, frame: &[u8]) -> Result<Packet<'_>, DecodeError> {
    ip::decode_net(link::strip(linktype, frame)?, 0)
}
