//! TCP header and options (RFC 9293, RFC 7323, RFC 2018).
//!
//! Owns the fixed header (including the AE/NS bit), the data offset, the options metro
//! uses (MSS, window scale, SACK-permitted, SACK blocks, timestamps) and the payload length.
//! A header whose fixed 20 bytes were captured is kept even if its options were cut by the
//! snaplen; option parsing stops at the first malformed option (length below 2, past the
//! end, or wrong for a known kind) and keeps what it had read, setting
//! [`TcpOptions::malformed`].

use super::{DecodeError, Layer, TcpHeader};

/// TCP flag bits as on the wire (low byte: FIN..CWR; bit 8: AE/NS).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpFlags(pub u16);

impl TcpFlags {
    pub const FIN: u16 = 0x001;
    pub const SYN: u16 = 0x002;
    pub const RST: u16 = 0x004;
    pub const PSH: u16 = 0x008;
    pub const ACK: u16 = 0x010;
    pub const URG: u16 = 0x020;
    pub const ECE: u16 = 0x040;
    pub const CWR: u16 = 0x080;
    pub const AE: u16 = 0x100;

    #[inline]
    pub fn has(self, bit: u16) -> bool {
        self.0 & bit != 0
    }
    #[inline]
    pub fn syn(self) -> bool {
        self.has(Self::SYN)
    }
    #[inline]
    pub fn fin(self) -> bool {
        self.has(Self::FIN)
    }
    #[inline]
    pub fn rst(self) -> bool {
        self.has(Self::RST)
    }
    #[inline]
    pub fn ack(self) -> bool {
        self.has(Self::ACK)
    }
}

/// The options metro reads. Unknown options are skipped; parsing stops at the first
/// malformed one and keeps what was read before it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TcpOptions {
    pub mss: Option<u16>,
    pub wscale: Option<u8>,
    pub sack_permitted: bool,
    /// (TSval, TSecr)
    pub timestamp: Option<(u32, u32)>,
    /// Up to 4 SACK blocks (left, right); `sack_count` says how many are valid.
    pub sack: [(u32, u32); 4],
    pub sack_count: u8,
    /// True if option parsing stopped at a malformed option.
    pub malformed: bool,
}

/// A parsed TCP segment: the header, the payload length the IP header declares, and the
/// captured part of the payload.
#[derive(Clone, Copy, Debug)]
pub struct Segment<'a> {
    pub header: TcpHeader,
    pub payload_len: u32,
    pub payload: &'a [u8],
}

/// Parses a TCP segment. `segment` is what was captured of the IP payload (cut at the IP
/// length); `ip_payload_len` is the IP payload length the IP header declares.
#[inline]
pub fn parse(segment: &[u8], ip_payload_len: u32) -> Result<Segment<'_>, DecodeError> {
    if ip_payload_len < 20 {
        return Err(DecodeError::Malformed(Layer::Tcp));
    }
    let (h, rest) = segment
        .split_first_chunk::<20>()
        .ok_or(DecodeError::Truncated(Layer::Tcp))?;
    let header_len = (h[12] >> 4) * 4;
    if header_len < 20 {
        return Err(DecodeError::Malformed(Layer::Tcp));
    }
    let payload_len = ip_payload_len
        .checked_sub(u32::from(header_len))
        .ok_or(DecodeError::Malformed(Layer::Tcp))?;
    let opt_len = usize::from(header_len - 20);
    let (options, payload) = match (rest.get(..opt_len), rest.get(opt_len..)) {
        (Some([]), Some(payload)) => (TcpOptions::default(), payload),
        (Some(opts), Some(payload)) => (TcpOptions::parse(opts), payload),
        // Options cut by the snaplen: keep those that fit.
        _ => {
            let mut o = TcpOptions::parse(rest);
            o.malformed = true;
            (o, &[][..])
        }
    };
    let payload = payload
        .get(..payload.len().min(payload_len as usize))
        .unwrap_or(payload);
    Ok(Segment {
        header: TcpHeader {
            sport: u16::from_be_bytes([h[0], h[1]]),
            dport: u16::from_be_bytes([h[2], h[3]]),
            seq: u32::from_be_bytes([h[4], h[5], h[6], h[7]]),
            ack: u32::from_be_bytes([h[8], h[9], h[10], h[11]]),
            flags: TcpFlags(u16::from_be_bytes([h[12], h[13]]) & 0x01FF),
            window: u16::from_be_bytes([h[14], h[15]]),
            header_len,
            options,
        },
        payload_len,
        payload,
    })
}

impl TcpOptions {
    /// Parses the options area of a TCP header (the bytes between the fixed header and the
    /// data offset).
    #[inline]
    pub fn parse(mut opts: &[u8]) -> TcpOptions {
        const EOL: u8 = 0;
        const NOP: u8 = 1;
        const MSS: u8 = 2;
        const WS: u8 = 3;
        const SACK_PERMITTED: u8 = 4;
        const SACK: u8 = 5;
        const TIMESTAMP: u8 = 8;
        let mut o = TcpOptions::default();
        loop {
            let (kind, body, rest) = match *opts {
                [] | [EOL, ..] => break,
                [NOP, ref rest @ ..] => {
                    opts = rest;
                    continue;
                }
                [kind, len, ref rest @ ..] => {
                    let body_len = usize::from(len).wrapping_sub(2);
                    match (rest.get(..body_len), rest.get(body_len..)) {
                        (Some(body), Some(after)) if len >= 2 => (kind, body, after),
                        _ => {
                            o.malformed = true;
                            break;
                        }
                    }
                }
                [_] => {
                    o.malformed = true;
                    break;
                }
            };
            match (kind, body) {
                (MSS, &[a, b]) => o.mss = Some(u16::from_be_bytes([a, b])),
                (WS, &[shift]) => o.wscale = Some(shift),
                (SACK_PERMITTED, []) => o.sack_permitted = true,
                (TIMESTAMP, &[a, b, c, d, e, f, g, h]) => {
                    o.timestamp = Some((
                        u32::from_be_bytes([a, b, c, d]),
                        u32::from_be_bytes([e, f, g, h]),
                    ));
                }
                (SACK, blocks) if !blocks.is_empty() && blocks.len() % 8 == 0 => {
                    let mut n = 0;
                    for (slot, block) in o.sack.iter_mut().zip(blocks.chunks_exact(8)) {
                        if let &[a, b, c, d, e, f, g, h] = block {
                            *slot = (
                                u32::from_be_bytes([a, b, c, d]),
                                u32::from_be_bytes([e, f, g, h]),
                            );
                            n += 1;
                        }
                    }
                    o.sack_count = n;
                }
                // A known option with the wrong length (go-metro crashed on a short
                // timestamp option): stop, keep what was read.
                (MSS | WS | SACK_PERMITTED | TIMESTAMP | SACK, _) => {
                    o.malformed = true;
                    break;
                }
                _ => {}
            }
            opts = rest;
        }
        o
    }
}
