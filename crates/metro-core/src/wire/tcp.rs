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

/// A parsed TCP segment (the parser's result; the engine's input is [`crate::Segment`]): the
/// header, the payload length the IP header declares, and the
/// captured part of the payload.
#[derive(Clone, Copy, Debug)]
pub struct Parsed<'a> {
    pub header: TcpHeader,
    pub payload_len: u32,
    pub payload: &'a [u8],
}

/// Parses a TCP segment. `segment` is what was captured of the IP payload (cut at the IP
/// length); `ip_payload_len` is the IP payload length the IP header declares.
// Always inlined: in the fast path the header is then built in place of the caller's
// segment rather than returned through memory and copied (a tenth of a packet's cost).
#[inline(always)]
pub fn parse(segment: &[u8], ip_payload_len: u32) -> Result<Parsed<'_>, DecodeError> {
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
            let mut o = TcpOptions::parse_each(rest);
            o.malformed = true;
            (o, &[][..])
        }
    };
    let payload = payload
        .get(..payload.len().min(payload_len as usize))
        .unwrap_or(payload);
    Ok(Parsed {
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

// TCP option kinds.
const EOL: u8 = 0;
const NOP: u8 = 1;
const MSS: u8 = 2;
const WS: u8 = 3;
const SACK_PERMITTED: u8 = 4;
const SACK: u8 = 5;
const TIMESTAMP: u8 = 8;

impl TcpOptions {
    /// Parses the options area of a TCP header (the bytes between the fixed header and the
    /// data offset).
    // Always inlined: the shortcut then writes the caller's header in place (called, with
    // its result returned through memory, it cost 22 instructions a packet).
    #[inline(always)]
    pub fn parse(opts: &[u8]) -> TcpOptions {
        // What most segments carry (Linux, BSD): NOP NOP TS, and nothing else.
        if let &[NOP, NOP, TIMESTAMP, 10, a, b, c, d, e, f, g, h] = opts {
            return TcpOptions {
                timestamp: Some((
                    u32::from_be_bytes([a, b, c, d]),
                    u32::from_be_bytes([e, f, g, h]),
                )),
                ..TcpOptions::default()
            };
        }
        Self::parse_each(opts)
    }

    /// The general case: option by option (out of line: the common shape inlines `parse`).
    #[inline(never)]
    fn parse_each(mut opts: &[u8]) -> TcpOptions {
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The NOP NOP TS shortcut gives what the option-by-option parse gives, on that shape and
    /// on every near miss (each byte of the 12 changed in turn, shorter and longer areas).
    #[test]
    fn timestamp_shortcut_agrees_with_the_general_parse() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        };
        for _ in 0..2000 {
            let mut opts = [NOP, NOP, TIMESTAMP, 10, 0, 0, 0, 0, 0, 0, 0, 0];
            for b in &mut opts[4..] {
                *b = next();
            }
            let fast = TcpOptions::parse(&opts);
            assert_eq!(fast, TcpOptions::parse_each(&opts), "{opts:02x?}");
            assert!(fast.timestamp.is_some());
            for i in 0..12 {
                let mut near = opts;
                near[i] = next();
                assert_eq!(
                    TcpOptions::parse(&near),
                    TcpOptions::parse_each(&near),
                    "{near:02x?}"
                );
            }
            for len in [0, 4, 11, 13, 16] {
                let mut v = opts.to_vec();
                v.resize(len, NOP);
                assert_eq!(
                    TcpOptions::parse(&v),
                    TcpOptions::parse_each(&v),
                    "{v:02x?}"
                );
            }
        }
    }

    /// A 20-byte header: 443 -> 50000, seq 1, ack 2, data offset `off`, SYN|ACK, window 65535.
    fn header(off: u8) -> Vec<u8> {
        vec![
            0x01,
            0xbb,
            0xc3,
            0x50,
            0,
            0,
            0,
            1,
            0,
            0,
            0,
            2,
            off << 4,
            0x12,
            0xff,
            0xff,
            0,
            0,
            0,
            0,
        ]
    }

    fn with_options(opts: &[u8], payload: &[u8]) -> Vec<u8> {
        assert_eq!(opts.len() % 4, 0);
        let mut v = header(5 + (opts.len() / 4) as u8);
        v.extend_from_slice(opts);
        v.extend_from_slice(payload);
        v
    }

    fn parse_all(seg: &[u8]) -> Result<Parsed<'_>, DecodeError> {
        parse(seg, seg.len() as u32)
    }

    #[test]
    fn syn_options() {
        // MSS 1460, SACK-permitted, TS, NOP, WS 7: a Linux SYN.
        #[rustfmt::skip]
        let opts = [
            0x02, 0x04, 0x05, 0xb4,
            0x04, 0x02, 0x08, 0x0a, 0x00, 0x00, 0x00, 0x64, 0x00, 0x00, 0x00, 0x00,
            0x01, 0x03, 0x03, 0x07,
        ];
        let seg = with_options(&opts, &[]);
        let s = parse_all(&seg).unwrap();
        let h = s.header;
        assert_eq!(
            (h.sport, h.dport, h.seq, h.ack, h.window),
            (443, 50000, 1, 2, 0xffff)
        );
        assert_eq!(h.flags, TcpFlags(TcpFlags::SYN | TcpFlags::ACK));
        assert_eq!(h.header_len, 40);
        assert_eq!(h.options.mss, Some(1460));
        assert!(h.options.sack_permitted);
        assert_eq!(h.options.timestamp, Some((100, 0)));
        assert_eq!(h.options.wscale, Some(7));
        assert!(!h.options.malformed);
        assert_eq!(s.payload_len, 0);
    }

    #[test]
    fn sack_blocks() {
        let mut opts = vec![0x01, 0x01, 0x05, 2 + 8 * 4];
        for i in 0..4u32 {
            opts.extend_from_slice(&(1000 * i).to_be_bytes());
            opts.extend_from_slice(&(1000 * i + 500).to_be_bytes());
        }
        let seg = with_options(&opts, &[]);
        let o = parse_all(&seg).unwrap().header.options;
        assert_eq!(o.sack_count, 4);
        assert_eq!(o.sack, [(0, 500), (1000, 1500), (2000, 2500), (3000, 3500)]);
        // Two blocks, then timestamps.
        #[rustfmt::skip]
        let opts = [
            0x01, 0x01, 0x05, 0x12, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0, 4,
            0x01, 0x01, 0x08, 0x0a, 0, 0, 0, 5, 0, 0, 0, 6,
        ];
        let o = TcpOptions::parse(&opts);
        assert_eq!(o.sack_count, 2);
        assert_eq!(&o.sack[..2], &[(1, 2), (3, 4)]);
        assert_eq!(o.timestamp, Some((5, 6)));
        assert!(!o.malformed);
        // A SACK length that is not 2 + 8n.
        let o = TcpOptions::parse(&[0x05, 0x06, 0, 0, 0, 1, 0, 0]);
        assert!(o.malformed);
        assert_eq!(o.sack_count, 0);
    }

    #[test]
    fn short_timestamp_option_is_malformed_and_keeps_earlier_options() {
        // go-metro crashed on this: TS with length 6.
        let o = TcpOptions::parse(&[0x02, 0x04, 0x05, 0xb4, 0x08, 0x06, 0, 0, 0, 1, 0, 0]);
        assert_eq!(o.mss, Some(1460));
        assert_eq!(o.timestamp, None);
        assert!(o.malformed);
        // TS with a length past the end of the options.
        let o = TcpOptions::parse(&[0x01, 0x01, 0x08, 0x0a, 0, 0, 0, 1]);
        assert_eq!(o.timestamp, None);
        assert!(o.malformed);
        // Through the header: the segment is kept.
        let seg = with_options(&[0x03, 0x03, 0x07, 0x08, 0x06, 0, 0, 0, 1, 0, 0, 0], b"x");
        let s = parse_all(&seg).unwrap();
        assert_eq!(s.header.options.wscale, Some(7));
        assert!(s.header.options.malformed);
        assert_eq!(s.payload, b"x");
    }

    #[test]
    fn malformed_lengths() {
        // Length 0 and 1 would loop forever if trusted.
        for len in [0u8, 1] {
            let o = TcpOptions::parse(&[0x02, 0x04, 0x05, 0xb4, 0x1e, len, 0, 0]);
            assert_eq!(o.mss, Some(1460));
            assert!(o.malformed, "len {len}");
        }
        // Known kinds with the wrong length.
        assert!(TcpOptions::parse(&[0x02, 0x03, 0x05, 0x00]).malformed);
        assert!(TcpOptions::parse(&[0x03, 0x04, 0x07, 0x00]).malformed);
        assert!(TcpOptions::parse(&[0x04, 0x03, 0x00, 0x00]).malformed);
        // A kind byte with no length byte.
        assert!(TcpOptions::parse(&[0x01, 0x01, 0x01, 0x1e]).malformed);
    }

    #[test]
    fn eol_unknown_and_nop() {
        // Unknown option 30 (MPTCP) with length 4 is skipped; EOL ends parsing even if
        // garbage follows.
        let o = TcpOptions::parse(&[
            0x1e, 0x04, 0xaa, 0xbb, 0x01, 0x03, 0x03, 0x02, 0x00, 0x08, 0x02, 0x00,
        ]);
        assert_eq!(o.wscale, Some(2));
        assert_eq!(o.timestamp, None);
        assert!(!o.malformed);
        assert_eq!(TcpOptions::parse(&[1, 1, 1, 1]), TcpOptions::default());
        assert_eq!(TcpOptions::parse(&[]), TcpOptions::default());
    }

    #[test]
    fn ae_flag_and_reserved_bits() {
        let mut seg = header(5);
        seg[12] = 0x5f; // data offset 5, three reserved bits, AE
        seg[13] = 0xff; // CWR ECE URG ACK PSH RST SYN FIN
        let h = parse_all(&seg).unwrap().header;
        assert_eq!(h.flags.0, 0x1ff);
        assert!(h.flags.has(TcpFlags::AE) && h.flags.has(TcpFlags::CWR) && h.flags.fin());
    }

    #[test]
    fn data_offset_and_lengths() {
        // Data offset below 5.
        assert_eq!(
            parse_all(&header(4)).unwrap_err(),
            DecodeError::Malformed(Layer::Tcp)
        );
        // Fewer than 20 bytes captured.
        assert_eq!(
            parse(&header(5)[..19], 100).unwrap_err(),
            DecodeError::Truncated(Layer::Tcp)
        );
        // The IP payload length is shorter than the TCP header.
        assert_eq!(
            parse(&header(5), 19).unwrap_err(),
            DecodeError::Malformed(Layer::Tcp)
        );
        let seg = with_options(&[1, 1, 1, 1], &[]);
        assert_eq!(
            parse(&seg, 22).unwrap_err(),
            DecodeError::Malformed(Layer::Tcp)
        );
        // Payload length from the IP header, payload bytes from the capture.
        let seg = with_options(&[], b"abcdef");
        let s = parse(&seg, 1000).unwrap();
        assert_eq!(s.payload_len, 980);
        assert_eq!(s.payload, b"abcdef");
        let s = parse(&seg, 23).unwrap();
        assert_eq!(s.payload_len, 3);
        assert_eq!(s.payload, b"abc");
    }

    #[test]
    fn options_cut_by_snaplen_keep_the_header() {
        // Header says 32 bytes (NOP NOP TS), only 26 were captured.
        let seg = with_options(&[0x01, 0x01, 0x08, 0x0a, 0, 0, 0, 1, 0, 0, 0, 2], b"data");
        let s = parse(&seg[..26], 36).unwrap();
        assert_eq!(s.header.header_len, 32);
        assert_eq!(s.header.options.timestamp, None);
        assert!(s.header.options.malformed);
        assert_eq!(s.payload_len, 4);
        assert!(s.payload.is_empty());
        // MSS fits, the rest is cut.
        let seg = with_options(
            &[
                0x02, 0x04, 0x05, 0xb4, 0x01, 0x01, 0x08, 0x0a, 0, 0, 0, 1, 0, 0, 0, 2,
            ],
            &[],
        );
        let s = parse(&seg[..24], 36).unwrap();
        assert_eq!(s.header.options.mss, Some(1460));
        assert!(s.header.options.malformed);
    }
}
