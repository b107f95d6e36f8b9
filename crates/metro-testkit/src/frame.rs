//! Frame builder: Ethernet (with any number of VLAN tags) or raw-IP frames carrying
//! IPv4/IPv6 and a TCP segment with options, for tests and for the capture generator (`metro generate`).
//!
//! A [`TcpFrame`] describes one frame; [`TcpFrame::write`] appends its bytes to a
//! caller-provided `Vec<u8>` without allocating anything else, so a generator can build
//! millions of frames into one reused buffer. The IPv4 header checksum is always correct;
//! the TCP checksum is correct unless [`TcpFrame::tcp_checksum`] is turned off (then it is
//! zero, as on a capture taken before checksum offload).
//!
//! ```
//! use metro_testkit::frame::{TcpFrame, flags};
//! let mut buf = Vec::new();
//! TcpFrame::v4([10, 0, 0, 1], 40000, [10, 0, 0, 2], 443)
//!     .seq(1000)
//!     .flags(flags::SYN)
//!     .mss(1460)
//!     .sack_permitted()
//!     .timestamps(1, 0)
//!     .wscale(7)
//!     .write(&mut buf);
//! assert_eq!(buf.len(), 14 + 20 + 20 + 20);
//! ```

use std::net::{Ipv4Addr, Ipv6Addr};

/// TCP flag bits as on the wire (bit 8 is AE, formerly NS): metro-core's
/// [`TcpFlags`](metro_core::wire::TcpFlags) values (one definition of the wire format),
/// under short names for building frames (`flags::SYN | flags::ACK`).
pub mod flags {
    use metro_core::wire::TcpFlags;
    pub const FIN: u16 = TcpFlags::FIN;
    pub const SYN: u16 = TcpFlags::SYN;
    pub const RST: u16 = TcpFlags::RST;
    pub const PSH: u16 = TcpFlags::PSH;
    pub const ACK: u16 = TcpFlags::ACK;
    pub const URG: u16 = TcpFlags::URG;
    pub const ECE: u16 = TcpFlags::ECE;
    pub const CWR: u16 = TcpFlags::CWR;
    pub const AE: u16 = TcpFlags::AE;
}

/// Link types of the frames this builder produces (LINKTYPE_* values).
pub const LINKTYPE_ETHERNET: u32 = 1;
/// LINKTYPE_RAW: the frame starts with the IP header.
pub const LINKTYPE_RAW: u32 = 101;

const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPPROTO_TCP: u8 = 6;
/// Room for TCP options: the data offset field counts at most 15 words.
const MAX_OPTIONS: usize = 40;

/// One 802.1Q / 802.1ad tag.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VlanTag {
    /// 0x8100 (802.1Q) or 0x88a8 (802.1ad service tag), or anything else a test wants.
    pub tpid: u16,
    /// Priority (3 bits), DEI (1 bit), VLAN id (12 bits).
    pub tci: u16,
}

impl VlanTag {
    /// An 802.1Q tag with priority 0.
    #[inline]
    pub const fn dot1q(vid: u16) -> VlanTag {
        VlanTag {
            tpid: 0x8100,
            tci: vid & 0x0fff,
        }
    }
    /// An 802.1ad service (outer) tag with priority 0.
    #[inline]
    pub const fn dot1ad(vid: u16) -> VlanTag {
        VlanTag {
            tpid: 0x88a8,
            tci: vid & 0x0fff,
        }
    }
}

/// The link header in front of the IP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Link<'a> {
    /// Ethernet II; the tags are written outermost first.
    Ethernet {
        dst: [u8; 6],
        src: [u8; 6],
        vlans: &'a [VlanTag],
    },
    /// No link header (LINKTYPE_RAW).
    Raw,
}

impl Link<'_> {
    /// The LINKTYPE_* value to put in a capture file holding these frames.
    #[inline]
    pub fn linktype(&self) -> u32 {
        match self {
            Link::Ethernet { .. } => LINKTYPE_ETHERNET,
            Link::Raw => LINKTYPE_RAW,
        }
    }

    /// Bytes of the link header.
    #[inline]
    pub fn len(&self) -> usize {
        match self {
            Link::Ethernet { vlans, .. } => 14 + 4 * vlans.len(),
            Link::Raw => 0,
        }
    }

    /// True for [`Link::Raw`], which has no header.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes the link header into `out[..self.len()]`, ending with `ethertype`.
    #[inline]
    pub fn write_header(&self, out: &mut [u8], ethertype: u16) {
        if let Link::Ethernet { dst, src, vlans } = *self {
            out[0..6].copy_from_slice(&dst);
            out[6..12].copy_from_slice(&src);
            let mut at = 12;
            for tag in vlans {
                out[at..at + 2].copy_from_slice(&tag.tpid.to_be_bytes());
                out[at + 2..at + 4].copy_from_slice(&tag.tci.to_be_bytes());
                at += 4;
            }
            out[at..at + 2].copy_from_slice(&ethertype.to_be_bytes());
        }
    }
}

/// Default MAC addresses: locally administered, easy to spot in a hex dump.
pub const DEFAULT_SRC_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x01];
pub const DEFAULT_DST_MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x02];

/// The IP header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ip {
    V4 {
        src: Ipv4Addr,
        dst: Ipv4Addr,
        /// Identification field.
        id: u16,
        ttl: u8,
        /// DSCP and ECN bits.
        tos: u8,
        dont_fragment: bool,
    },
    V6 {
        src: Ipv6Addr,
        dst: Ipv6Addr,
        hop_limit: u8,
        traffic_class: u8,
        /// Low 20 bits are used.
        flow_label: u32,
    },
}

impl Ip {
    /// Bytes of the header (no IPv4 options, no IPv6 extension headers).
    #[inline]
    pub fn header_len(&self) -> usize {
        match self {
            Ip::V4 { .. } => 20,
            Ip::V6 { .. } => 40,
        }
    }

    /// The EtherType announcing this header.
    #[inline]
    pub fn ethertype(&self) -> u16 {
        match self {
            Ip::V4 { .. } => ETHERTYPE_IPV4,
            Ip::V6 { .. } => ETHERTYPE_IPV6,
        }
    }

    /// Writes the header into `out[..self.header_len()]` (zero-filled by the caller) for
    /// `payload_len` bytes of `protocol` after it. A length that does not fit 16 bits is
    /// written as 0. The IPv4 header checksum is left zero: see [`ipv4_checksum`].
    #[inline]
    pub fn write_header(&self, out: &mut [u8], protocol: u8, payload_len: usize) {
        match *self {
            Ip::V4 {
                src,
                dst,
                id,
                ttl,
                tos,
                dont_fragment,
            } => {
                let total_len = u16::try_from(20 + payload_len).unwrap_or(0);
                out[0] = 0x45;
                out[1] = tos;
                out[2..4].copy_from_slice(&total_len.to_be_bytes());
                out[4..6].copy_from_slice(&id.to_be_bytes());
                out[6] = if dont_fragment { 0x40 } else { 0 };
                out[8] = ttl;
                out[9] = protocol;
                out[12..16].copy_from_slice(&src.octets());
                out[16..20].copy_from_slice(&dst.octets());
            }
            Ip::V6 {
                src,
                dst,
                hop_limit,
                traffic_class,
                flow_label,
            } => {
                let word =
                    (6u32 << 28) | (u32::from(traffic_class) << 20) | (flow_label & 0xf_ffff);
                out[0..4].copy_from_slice(&word.to_be_bytes());
                let payload_len = u16::try_from(payload_len).unwrap_or(0);
                out[4..6].copy_from_slice(&payload_len.to_be_bytes());
                out[6] = protocol;
                out[7] = hop_limit;
                out[8..24].copy_from_slice(&src.octets());
                out[24..40].copy_from_slice(&dst.octets());
            }
        }
    }
}

/// Fills in the checksum of a 20-byte IPv4 header whose checksum field is zero.
#[inline]
pub fn ipv4_checksum(header: &mut [u8]) {
    let sum = fold(sum_bytes(&header[..20], 0));
    header[10..12].copy_from_slice(&(!sum).to_be_bytes());
}

/// TCP options, written in the order Linux uses (MSS, SACK-permitted, timestamps, window
/// scale, SACK blocks), NOP-aligned like a real stack, padded with EOL to a multiple of 4.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOpts<'a> {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    /// (TSval, TSecr)
    pub timestamps: Option<(u32, u32)>,
    /// SACK blocks (left edge, right edge). Blocks that do not fit in the 40 option bytes
    /// are dropped, as a TCP stack does (3 fit with timestamps, 4 without).
    pub sack: &'a [(u32, u32)],
    /// Bytes appended verbatim after the other options (for odd or malformed options).
    pub raw: &'a [u8],
}

impl TcpOpts<'_> {
    /// (length of the options area including padding, number of SACK blocks written)
    fn layout(&self) -> (usize, usize) {
        let mut n = 0;
        if self.mss.is_some() {
            n += 4;
        }
        match (self.sack_permitted, self.timestamps.is_some()) {
            (true, true) => n += 12,
            (false, true) => n += 12,
            (true, false) => n += 4,
            (false, false) => {}
        }
        if self.wscale.is_some() {
            n += 4;
        }
        let mut blocks = 0;
        if !self.sack.is_empty() {
            let room = MAX_OPTIONS.saturating_sub(n + self.raw.len() + 4);
            blocks = self.sack.len().min(room / 8);
            if blocks > 0 {
                n += 4 + 8 * blocks;
            }
        }
        n += self.raw.len();
        ((n + 3) & !3, blocks)
    }

    /// Writes the options into `out`, which is exactly `layout().0` bytes and zeroed.
    fn encode(&self, out: &mut [u8], blocks: usize) {
        let mut i = 0;
        let mut put = |bytes: &[u8]| {
            out[i..i + bytes.len()].copy_from_slice(bytes);
            i += bytes.len();
        };
        if let Some(mss) = self.mss {
            let m = mss.to_be_bytes();
            put(&[2, 4, m[0], m[1]]);
        }
        if let Some((val, ecr)) = self.timestamps {
            if self.sack_permitted {
                put(&[4, 2, 8, 10]);
            } else {
                put(&[1, 1, 8, 10]);
            }
            put(&val.to_be_bytes());
            put(&ecr.to_be_bytes());
        } else if self.sack_permitted {
            put(&[1, 1, 4, 2]);
        }
        if let Some(ws) = self.wscale {
            put(&[1, 3, 3, ws]);
        }
        if blocks > 0 {
            put(&[1, 1, 5, 2 + 8 * blocks as u8]);
            for &(left, right) in &self.sack[..blocks] {
                put(&left.to_be_bytes());
                put(&right.to_be_bytes());
            }
        }
        put(self.raw);
        // The rest is already zero: EOL padding.
    }
}

/// What fills the TCP payload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Payload<'a> {
    /// `n` zero bytes (cheapest: no bytes to copy and nothing to add to the checksum).
    Zeros(usize),
    /// `len` bytes counting up from `start`, wrapping at 256.
    Pattern { len: usize, start: u8 },
    /// These bytes.
    Bytes(&'a [u8]),
}

impl Payload<'_> {
    #[inline]
    pub fn len(&self) -> usize {
        match *self {
            Payload::Zeros(n) => n,
            Payload::Pattern { len, .. } => len,
            Payload::Bytes(b) => b.len(),
        }
    }
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One frame to build: link header, IP header, TCP header with options, payload.
///
/// Fields are public; the methods of the same name are by-value setters for chaining.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpFrame<'a> {
    pub link: Link<'a>,
    pub ip: Ip,
    pub src_port: u16,
    pub dst_port: u16,
    pub seq: u32,
    pub ack: u32,
    /// See [`flags`].
    pub flags: u16,
    pub window: u16,
    pub urgent: u16,
    pub options: TcpOpts<'a>,
    pub payload: Payload<'a>,
    /// Compute the TCP checksum (true) or leave it zero (false).
    pub tcp_checksum: bool,
}

impl<'a> TcpFrame<'a> {
    #[inline]
    fn new(ip: Ip, src_port: u16, dst_port: u16) -> TcpFrame<'a> {
        TcpFrame {
            link: Link::Ethernet {
                dst: DEFAULT_DST_MAC,
                src: DEFAULT_SRC_MAC,
                vlans: &[],
            },
            ip,
            src_port,
            dst_port,
            seq: 0,
            ack: 0,
            flags: flags::ACK,
            window: 65535,
            urgent: 0,
            options: TcpOpts::default(),
            payload: Payload::Zeros(0),
            tcp_checksum: true,
        }
    }

    /// An Ethernet + IPv4 + TCP frame with ACK set, TTL 64, DF, IP id 0, window 65535.
    #[inline]
    pub fn v4(
        src: impl Into<Ipv4Addr>,
        src_port: u16,
        dst: impl Into<Ipv4Addr>,
        dst_port: u16,
    ) -> TcpFrame<'a> {
        let ip = Ip::V4 {
            src: src.into(),
            dst: dst.into(),
            id: 0,
            ttl: 64,
            tos: 0,
            dont_fragment: true,
        };
        TcpFrame::new(ip, src_port, dst_port)
    }

    /// An Ethernet + IPv6 + TCP frame with ACK set, hop limit 64, window 65535.
    #[inline]
    pub fn v6(
        src: impl Into<Ipv6Addr>,
        src_port: u16,
        dst: impl Into<Ipv6Addr>,
        dst_port: u16,
    ) -> TcpFrame<'a> {
        let ip = Ip::V6 {
            src: src.into(),
            dst: dst.into(),
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
        };
        TcpFrame::new(ip, src_port, dst_port)
    }

    #[inline]
    pub fn seq(mut self, seq: u32) -> Self {
        self.seq = seq;
        self
    }
    #[inline]
    pub fn ack(mut self, ack: u32) -> Self {
        self.ack = ack;
        self
    }
    /// Replaces all flags (see [`flags`]).
    #[inline]
    pub fn flags(mut self, flags: u16) -> Self {
        self.flags = flags;
        self
    }
    #[inline]
    pub fn window(mut self, window: u16) -> Self {
        self.window = window;
        self
    }
    #[inline]
    pub fn mss(mut self, mss: u16) -> Self {
        self.options.mss = Some(mss);
        self
    }
    #[inline]
    pub fn wscale(mut self, shift: u8) -> Self {
        self.options.wscale = Some(shift);
        self
    }
    #[inline]
    pub fn sack_permitted(mut self) -> Self {
        self.options.sack_permitted = true;
        self
    }
    #[inline]
    pub fn timestamps(mut self, tsval: u32, tsecr: u32) -> Self {
        self.options.timestamps = Some((tsval, tsecr));
        self
    }
    #[inline]
    pub fn sack(mut self, blocks: &'a [(u32, u32)]) -> Self {
        self.options.sack = blocks;
        self
    }
    #[inline]
    pub fn raw_options(mut self, raw: &'a [u8]) -> Self {
        self.options.raw = raw;
        self
    }
    #[inline]
    pub fn payload(mut self, payload: Payload<'a>) -> Self {
        self.payload = payload;
        self
    }
    /// `len` zero bytes of payload.
    #[inline]
    pub fn payload_len(mut self, len: usize) -> Self {
        self.payload = Payload::Zeros(len);
        self
    }
    /// Sets the IPv4 identification field (ignored for IPv6).
    #[inline]
    pub fn ip_id(mut self, new_id: u16) -> Self {
        if let Ip::V4 { id, .. } = &mut self.ip {
            *id = new_id;
        }
        self
    }
    /// Sets the IPv4 TTL or the IPv6 hop limit.
    #[inline]
    pub fn ttl(mut self, new_ttl: u8) -> Self {
        match &mut self.ip {
            Ip::V4 { ttl, .. } => *ttl = new_ttl,
            Ip::V6 { hop_limit, .. } => *hop_limit = new_ttl,
        }
        self
    }
    /// Ethernet with these addresses and VLAN tags (outermost first).
    #[inline]
    pub fn ethernet(mut self, src: [u8; 6], dst: [u8; 6], vlans: &'a [VlanTag]) -> Self {
        self.link = Link::Ethernet { dst, src, vlans };
        self
    }
    /// Keeps the Ethernet addresses, sets the VLAN tags (outermost first).
    #[inline]
    pub fn vlans(mut self, tags: &'a [VlanTag]) -> Self {
        match &mut self.link {
            Link::Ethernet { vlans, .. } => *vlans = tags,
            Link::Raw => {
                self.link = Link::Ethernet {
                    dst: DEFAULT_DST_MAC,
                    src: DEFAULT_SRC_MAC,
                    vlans: tags,
                }
            }
        }
        self
    }
    /// No link header: the frame starts with the IP header (LINKTYPE_RAW).
    #[inline]
    pub fn raw_ip(mut self) -> Self {
        self.link = Link::Raw;
        self
    }
    #[inline]
    pub fn tcp_checksum(mut self, compute: bool) -> Self {
        self.tcp_checksum = compute;
        self
    }

    /// Total frame length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.link.len() + self.ip.header_len() + 20 + self.options.layout().0 + self.payload.len()
    }

    /// Never true: a frame has at least IP and TCP headers.
    #[inline]
    pub fn is_empty(&self) -> bool {
        false
    }

    /// The TCP header length (20 + options), as in the data offset field.
    #[inline]
    pub fn tcp_header_len(&self) -> usize {
        20 + self.options.layout().0
    }

    /// Appends the frame to `out` and returns its length. Allocates only if `out` must grow.
    ///
    /// An IP length that does not fit 16 bits (a "BIG TCP" segment) is written as 0, as
    /// Linux does for IPv4; no IPv6 jumbo option is added.
    ///
    /// # Panics
    /// If `options.raw` leaves the options longer than 40 bytes.
    pub fn write(&self, out: &mut Vec<u8>) -> usize {
        let (opt_len, blocks) = self.options.layout();
        assert!(
            opt_len <= MAX_OPTIONS,
            "TCP options are {opt_len} bytes, more than 40"
        );
        let link_len = self.link.len();
        let ip_len = self.ip.header_len();
        let tcp_len = 20 + opt_len;
        let seg_len = tcp_len + self.payload.len();
        let total = link_len + ip_len + seg_len;

        let start = out.len();
        // Zero-filled: padding, reserved bits and a `Zeros` payload need no further writes.
        out.resize(start + total, 0);
        let frame = &mut out[start..];

        self.link.write_header(frame, self.ip.ethertype());
        let (ip, rest) = frame[link_len..].split_at_mut(ip_len);
        self.ip.write_header(ip, IPPROTO_TCP, seg_len);
        let pseudo_sum = match self.ip {
            Ip::V4 { .. } => {
                ipv4_checksum(ip);
                sum_bytes(&ip[12..20], u64::from(IPPROTO_TCP) + seg_len as u64)
            }
            Ip::V6 { .. } => sum_bytes(&ip[8..40], u64::from(IPPROTO_TCP) + seg_len as u64),
        };

        // TCP.
        let (tcp, payload) = rest.split_at_mut(tcp_len);
        tcp[0..2].copy_from_slice(&self.src_port.to_be_bytes());
        tcp[2..4].copy_from_slice(&self.dst_port.to_be_bytes());
        tcp[4..8].copy_from_slice(&self.seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&self.ack.to_be_bytes());
        tcp[12] = ((tcp_len / 4) as u8) << 4 | ((self.flags >> 8) & 1) as u8;
        tcp[13] = self.flags as u8;
        tcp[14..16].copy_from_slice(&self.window.to_be_bytes());
        tcp[18..20].copy_from_slice(&self.urgent.to_be_bytes());
        self.options.encode(&mut tcp[20..], blocks);

        match self.payload {
            Payload::Zeros(_) => {}
            Payload::Pattern { start, .. } => {
                for (i, b) in payload.iter_mut().enumerate() {
                    *b = start.wrapping_add(i as u8);
                }
            }
            Payload::Bytes(bytes) => payload.copy_from_slice(bytes),
        }

        if self.tcp_checksum {
            let mut sum = sum_bytes(tcp, pseudo_sum);
            if !matches!(self.payload, Payload::Zeros(_)) {
                // The TCP header is a multiple of 4 bytes, so the payload starts word-aligned.
                sum = sum_bytes(payload, sum);
            }
            tcp[16..18].copy_from_slice(&(!fold(sum)).to_be_bytes());
        }
        total
    }

    /// The frame as a new vector (convenient in tests; generators should use [`write`](Self::write)).
    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        self.write(&mut v);
        v
    }
}

/// Adds `data` (as big-endian 16-bit words, odd tail padded with zero) to a one's-complement
/// running sum. Works on 32-bit words into a 64-bit accumulator, which RFC 1071 allows.
fn sum_bytes(data: &[u8], mut sum: u64) -> u64 {
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        sum += u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]]));
    }
    let rest = chunks.remainder();
    let mut tail = [0u8; 4];
    tail[..rest.len()].copy_from_slice(rest);
    sum + u64::from(u32::from_be_bytes(tail))
}

/// Folds a running sum to 16 bits with end-around carry.
fn fold(mut sum: u64) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn be16(b: &[u8], at: usize) -> u16 {
        u16::from_be_bytes([b[at], b[at + 1]])
    }
    fn be32(b: &[u8], at: usize) -> u32 {
        u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
    }
    /// Independent reference: a plain 16-bit word sum (RFC 1071 section 4.1).
    fn checksum16(data: &[u8]) -> u16 {
        let mut sum: u32 = 0;
        let mut i = 0;
        while i + 1 < data.len() {
            sum += u32::from(be16(data, i));
            i += 2;
        }
        if i < data.len() {
            sum += u32::from(data[i]) << 8;
        }
        while sum > 0xffff {
            sum = (sum & 0xffff) + (sum >> 16);
        }
        !(sum as u16)
    }

    #[test]
    fn ipv4_syn_with_all_options() {
        let f = TcpFrame::v4([192, 168, 1, 10], 40000, [10, 0, 0, 2], 443)
            .seq(0x1122_3344)
            .ack(0)
            .flags(flags::SYN)
            .window(64240)
            .mss(1460)
            .sack_permitted()
            .timestamps(0xaabb_ccdd, 0)
            .wscale(7)
            .ip_id(0x1234);
        let b = f.to_vec();
        assert_eq!(b.len(), 14 + 20 + 40);
        assert_eq!(b.len(), f.len());
        // Ethernet
        assert_eq!(&b[0..6], &DEFAULT_DST_MAC);
        assert_eq!(&b[6..12], &DEFAULT_SRC_MAC);
        assert_eq!(be16(&b, 12), 0x0800);
        // IPv4
        let ip = &b[14..34];
        assert_eq!(ip[0], 0x45);
        assert_eq!(ip[1], 0);
        assert_eq!(be16(ip, 2), 60);
        assert_eq!(be16(ip, 4), 0x1234);
        assert_eq!(be16(ip, 6), 0x4000);
        assert_eq!(ip[8], 64);
        assert_eq!(ip[9], 6);
        assert_eq!(&ip[12..16], &[192, 168, 1, 10]);
        assert_eq!(&ip[16..20], &[10, 0, 0, 2]);
        assert_eq!(checksum16(ip), 0, "IPv4 header checksum verifies");
        let mut zeroed = ip.to_vec();
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(be16(ip, 10), checksum16(&zeroed));
        // TCP
        let tcp = &b[34..];
        assert_eq!(be16(tcp, 0), 40000);
        assert_eq!(be16(tcp, 2), 443);
        assert_eq!(be32(tcp, 4), 0x1122_3344);
        assert_eq!(be32(tcp, 8), 0);
        assert_eq!(tcp[12], 0xa0, "data offset 10 words");
        assert_eq!(tcp[13], 0x02);
        assert_eq!(be16(tcp, 14), 64240);
        assert_eq!(be16(tcp, 18), 0);
        // Linux SYN layout: MSS, SACK-permitted + TS, NOP + WS.
        assert_eq!(
            &tcp[20..40],
            &[
                2, 4, 0x05, 0xb4, 4, 2, 8, 10, 0xaa, 0xbb, 0xcc, 0xdd, 0, 0, 0, 0, 1, 3, 3, 7
            ]
        );
        // TCP checksum over the pseudo-header and segment.
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&[192, 168, 1, 10, 10, 0, 0, 2, 0, 6]);
        pseudo.extend_from_slice(&(tcp.len() as u16).to_be_bytes());
        pseudo.extend_from_slice(tcp);
        assert_eq!(checksum16(&pseudo), 0, "TCP checksum verifies");
    }

    #[test]
    fn ipv6_qinq_with_sack_and_pattern_payload() {
        let tags = [VlanTag::dot1ad(100), VlanTag::dot1q(200)];
        let blocks = [(1000, 2000), (3000, 4000), (5000, 6000), (7000, 8000)];
        let src: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let dst: Ipv6Addr = "2001:db8::2".parse().unwrap();
        let f = TcpFrame::v6(src, 80, dst, 50000)
            .vlans(&tags)
            .seq(7)
            .ack(9)
            .flags(flags::ACK | flags::PSH | flags::AE)
            .timestamps(5, 6)
            .sack(&blocks)
            .payload(Payload::Pattern { len: 5, start: 254 });
        let b = f.to_vec();
        // 3 SACK blocks fit next to timestamps (12 + 4 + 24 = 40); the 4th is dropped.
        assert_eq!(b.len(), 22 + 40 + 60 + 5);
        assert_eq!(be16(&b, 12), 0x88a8);
        assert_eq!(be16(&b, 14), 100);
        assert_eq!(be16(&b, 16), 0x8100);
        assert_eq!(be16(&b, 18), 200);
        assert_eq!(be16(&b, 20), 0x86dd);
        let ip = &b[22..62];
        assert_eq!(be32(ip, 0), 0x6000_0000);
        assert_eq!(be16(ip, 4), 65);
        assert_eq!(ip[6], 6);
        assert_eq!(ip[7], 64);
        assert_eq!(&ip[8..24], &src.octets());
        assert_eq!(&ip[24..40], &dst.octets());
        let tcp = &b[62..];
        assert_eq!(tcp[12], 0xf1, "15 words, AE bit");
        assert_eq!(tcp[13], 0x18);
        assert_eq!(&tcp[20..32], &[1, 1, 8, 10, 0, 0, 0, 5, 0, 0, 0, 6]);
        assert_eq!(&tcp[32..36], &[1, 1, 5, 26]);
        assert_eq!(be32(tcp, 36), 1000);
        assert_eq!(be32(tcp, 40), 2000);
        assert_eq!(be32(tcp, 52), 5000);
        assert_eq!(be32(tcp, 56), 6000);
        assert_eq!(&tcp[60..], &[254, 255, 0, 1, 2]);
        let mut pseudo = Vec::new();
        pseudo.extend_from_slice(&src.octets());
        pseudo.extend_from_slice(&dst.octets());
        pseudo.extend_from_slice(&(tcp.len() as u32).to_be_bytes());
        pseudo.extend_from_slice(&[0, 0, 0, 6]);
        pseudo.extend_from_slice(tcp);
        assert_eq!(
            checksum16(&pseudo),
            0,
            "odd-length segment checksum verifies"
        );
    }

    #[test]
    fn raw_ip_appends_and_optional_checksum() {
        let mut buf = vec![0xee; 3];
        let f = TcpFrame::v4([1, 2, 3, 4], 1, [5, 6, 7, 8], 2)
            .raw_ip()
            .payload(Payload::Bytes(b"hi"))
            .tcp_checksum(false);
        assert_eq!(f.link.linktype(), LINKTYPE_RAW);
        let n = f.write(&mut buf);
        assert_eq!(n, 42);
        assert_eq!(&buf[..3], &[0xee; 3], "existing bytes untouched");
        let b = &buf[3..];
        assert_eq!(b[0], 0x45);
        assert_eq!(be16(b, 2), 42);
        assert_eq!(b[33], 0x10, "default flags: ACK");
        assert_eq!(be16(b, 36), 0, "checksum left zero");
        assert_eq!(&b[40..], b"hi");
    }

    #[test]
    fn options_alone_are_nop_aligned() {
        let f = TcpFrame::v4([1, 1, 1, 1], 1, [2, 2, 2, 2], 2)
            .sack_permitted()
            .wscale(2)
            .raw_options(&[0xfe, 2]);
        let b = f.to_vec();
        assert_eq!(&b[54..], &[1, 1, 4, 2, 1, 3, 3, 2, 0xfe, 2, 0, 0]);
        assert_eq!(f.tcp_header_len(), 32);
    }

    #[test]
    fn big_segment_writes_zero_length() {
        let f = TcpFrame::v4([1, 1, 1, 1], 1, [2, 2, 2, 2], 2).payload_len(70_000);
        let b = f.to_vec();
        assert_eq!(be16(&b, 16), 0);
        assert_eq!(b.len(), 14 + 40 + 70_000);
    }

    #[test]
    #[should_panic(expected = "more than 40")]
    fn too_many_raw_options_panics() {
        TcpFrame::v4([1, 1, 1, 1], 1, [2, 2, 2, 2], 2)
            .raw_options(&[1; 41])
            .to_vec();
    }
}
