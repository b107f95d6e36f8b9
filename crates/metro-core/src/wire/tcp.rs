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

/// A TCP segment's parts, its lengths checked: what [`parse`] reads its fields and options
/// from, and what a caller that wants only a few of them (`Segment::decode_into`) reads.
#[derive(Clone, Copy, Debug)]
pub struct Split<'a> {
    /// The fixed header.
    pub fixed: &'a [u8; 20],
    /// The data offset in bytes (20 to 60).
    pub header_len: u8,
    /// The options area, or what the snaplen left of it (then `options_cut`).
    pub options: &'a [u8],
    pub options_cut: bool,
    /// The payload length the IP header declares.
    pub payload_len: u32,
    /// The captured part of the payload (empty when the options were cut).
    pub payload: &'a [u8],
}

impl Split<'_> {
    #[inline(always)]
    pub fn sport(&self) -> u16 {
        u16::from_be_bytes([self.fixed[0], self.fixed[1]])
    }
    #[inline(always)]
    pub fn dport(&self) -> u16 {
        u16::from_be_bytes([self.fixed[2], self.fixed[3]])
    }
    #[inline(always)]
    pub fn seq(&self) -> u32 {
        let h = self.fixed;
        u32::from_be_bytes([h[4], h[5], h[6], h[7]])
    }
    #[inline(always)]
    pub fn ack(&self) -> u32 {
        let h = self.fixed;
        u32::from_be_bytes([h[8], h[9], h[10], h[11]])
    }
    #[inline(always)]
    pub fn flags(&self) -> TcpFlags {
        TcpFlags(u16::from_be_bytes([self.fixed[12], self.fixed[13]]) & 0x01FF)
    }
    #[inline(always)]
    pub fn window(&self) -> u16 {
        u16::from_be_bytes([self.fixed[14], self.fixed[15]])
    }
}

/// Checks a TCP segment's lengths and cuts it into its parts. `segment` is what was
/// captured of the IP payload (cut at the IP length); `ip_payload_len` is the IP payload
/// length the IP header declares.
#[inline(always)]
pub fn split(segment: &[u8], ip_payload_len: u32) -> Result<Split<'_>, DecodeError> {
    if ip_payload_len < 20 {
        return Err(DecodeError::Malformed(Layer::Tcp));
    }
    let (fixed, rest) = segment
        .split_first_chunk::<20>()
        .ok_or(DecodeError::Truncated(Layer::Tcp))?;
    let header_len = (fixed[12] >> 4) * 4;
    if header_len < 20 {
        return Err(DecodeError::Malformed(Layer::Tcp));
    }
    let payload_len = ip_payload_len
        .checked_sub(u32::from(header_len))
        .ok_or(DecodeError::Malformed(Layer::Tcp))?;
    let (options, payload, options_cut) = match rest.split_at_checked(usize::from(header_len - 20))
    {
        Some((options, payload)) => {
            let payload = payload
                .get(..payload.len().min(payload_len as usize))
                .unwrap_or(payload);
            (options, payload, false)
        }
        // Options cut by the snaplen: keep those that fit.
        None => (rest, &[][..], true),
    };
    Ok(Split {
        fixed,
        header_len,
        options,
        options_cut,
        payload_len,
        payload,
    })
}

/// The TCP fixed header's length.
pub(crate) const FIXED_LEN: usize = 20;

/// [`split`] for the fast path, from the fixed header and what follows it (captured and
/// cut at the IP length), when the header and its options were all captured and the IP
/// length holds them: `None` when not (data offset below 5, options cut, IP length too
/// short), which [`split`] would report or mark (`options_cut`). `ip_payload_len` is the IP
/// payload length the IP header declares; `after` holds at most its bytes past the fixed
/// header, so the payload needs no cut.
#[inline(always)]
pub(crate) fn split_whole<'a>(
    fixed: &'a [u8; FIXED_LEN],
    after: &'a [u8],
    ip_payload_len: usize,
) -> Option<Split<'a>> {
    let header_len = (fixed[12] >> 4) * 4;
    let options_len = usize::from(header_len).checked_sub(FIXED_LEN)?;
    let payload_len = ip_payload_len.checked_sub(usize::from(header_len))?;
    let (options, payload) = after.split_at_checked(options_len)?;
    debug_assert!(payload.len() <= payload_len);
    Some(Split {
        fixed,
        header_len,
        options,
        options_cut: false,
        payload_len: payload_len as u32,
        payload,
    })
}

/// Parses a TCP segment. `segment` is what was captured of the IP payload (cut at the IP
/// length); `ip_payload_len` is the IP payload length the IP header declares.
// Always inlined: in the fast path the header is then built in place of the caller's
// segment rather than returned through memory and copied (a tenth of a packet's cost).
#[inline(always)]
pub fn parse(segment: &[u8], ip_payload_len: u32) -> Result<Parsed<'_>, DecodeError> {
    let s = split(segment, ip_payload_len)?;
    let options = if s.options_cut {
        let mut o = TcpOptions::parse_each(s.options);
        o.malformed = true;
        o
    } else if s.options.is_empty() {
        TcpOptions::default()
    } else {
        TcpOptions::parse(s.options)
    };
    Ok(Parsed {
        header: TcpHeader {
            sport: s.sport(),
            dport: s.dport(),
            seq: s.seq(),
            ack: s.ack(),
            flags: s.flags(),
            window: s.window(),
            header_len: s.header_len,
            options,
        },
        payload_len: s.payload_len,
        payload: s.payload,
    })
}

/// What the engine reads of an options area: the timestamp (TSval, TSecr) and the first
/// SACK block (left, right), each if present.
pub type EngineOptions = (Option<(u32, u32)>, Option<(u32, u32)>);

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

    /// The timestamp (TSval, TSecr) of an options area that is NOP NOP TS and nothing else
    /// (what most segments carry: Linux, BSD), its four leading bytes compared as one word;
    /// `None` for any other area.
    #[inline(always)]
    pub(crate) fn nop_nop_timestamp(opts: &[u8]) -> Option<(u32, u32)> {
        let (head, &[a, b, c, d, e, f, g, h]) = opts.split_first_chunk::<4>()? else {
            return None;
        };
        (u32::from_ne_bytes(*head) == u32::from_ne_bytes([NOP, NOP, TIMESTAMP, 10])).then(|| {
            (
                u32::from_be_bytes([a, b, c, d]),
                u32::from_be_bytes([e, f, g, h]),
            )
        })
    }

    /// What the engine reads of an options area (`Segment`): the timestamp and the first
    /// SACK block, if any: the fields of [`TcpOptions::parse`]'s result, `timestamp` and
    /// (`sack[0]` if `sack_count > 0`). Always inlined: its caller, `Segment`'s reader of
    /// the areas that are neither empty nor NOP NOP TS, is out of line (one call, not two).
    #[inline(always)]
    pub fn timestamp_and_first_sack(opts: &[u8]) -> EngineOptions {
        if opts.is_empty() {
            return (None, None);
        }
        if let Some(ts) = Self::nop_nop_timestamp(opts) {
            return (Some(ts), None);
        }
        Self::timestamp_and_first_sack_each(opts)
    }

    /// [`Self::timestamp_and_first_sack`]'s other areas: a SYN's or one SACK block's
    /// layouts straight, anything else through [`Self::parse_loop`].
    #[inline(always)]
    fn timestamp_and_first_sack_each(opts: &[u8]) -> EngineOptions {
        let be32 = |b: [u8; 4]| u32::from_be_bytes(b);
        match *opts {
            // NOP NOP TS NOP NOP SACK with one block (Linux), and the block alone.
            [
                NOP,
                NOP,
                TIMESTAMP,
                10,
                a,
                b,
                c,
                d,
                e,
                f,
                g,
                h,
                NOP,
                NOP,
                SACK,
                10,
                l0,
                l1,
                l2,
                l3,
                r0,
                r1,
                r2,
                r3,
            ] => (
                Some((be32([a, b, c, d]), be32([e, f, g, h]))),
                Some((be32([l0, l1, l2, l3]), be32([r0, r1, r2, r3]))),
            ),
            [NOP, NOP, SACK, 10, l0, l1, l2, l3, r0, r1, r2, r3] => {
                (None, Some((be32([l0, l1, l2, l3]), be32([r0, r1, r2, r3]))))
            }
            _ => {
                if let Some(o) = Self::syn_shape(opts) {
                    return (o.timestamp, None);
                }
                let o = Self::parse_loop(opts);
                (o.timestamp, (o.sack_count > 0).then_some(o.sack[0]))
            }
        }
    }

    /// The general case (out of line: the common shape inlines `parse`): the options of a
    /// Linux or BSD SYN straight, anything else option by option.
    #[inline(never)]
    pub(crate) fn parse_each(opts: &[u8]) -> TcpOptions {
        Self::syn_shape(opts).unwrap_or_else(|| Self::parse_loop(opts))
    }

    /// The option layouts of the SYNs most stacks send (MSS, SACK-permitted, timestamp,
    /// window scale: Linux with and without timestamps, and the BSDs' and Windows'
    /// NOP-padded order), read straight: what [`Self::parse_loop`] gives for them (tested).
    #[inline(always)]
    fn syn_shape(opts: &[u8]) -> Option<TcpOptions> {
        let be32 = |b: &[u8; 4]| u32::from_be_bytes(*b);
        let (mss, ts, sack_permitted, ws) = match *opts {
            // Linux: MSS, SACK-permitted, TS, NOP, WS.
            [
                MSS,
                4,
                m0,
                m1,
                SACK_PERMITTED,
                2,
                TIMESTAMP,
                10,
                a,
                b,
                c,
                d,
                e,
                f,
                g,
                h,
                NOP,
                WS,
                3,
                w,
            ] => ([m0, m1], Some(([a, b, c, d], [e, f, g, h])), true, w),
            // Linux without SACK: MSS, NOP, NOP, TS, NOP, WS.
            [
                MSS,
                4,
                m0,
                m1,
                NOP,
                NOP,
                TIMESTAMP,
                10,
                a,
                b,
                c,
                d,
                e,
                f,
                g,
                h,
                NOP,
                WS,
                3,
                w,
            ] => ([m0, m1], Some(([a, b, c, d], [e, f, g, h])), false, w),
            // Linux without timestamps: MSS, NOP, NOP, SACK-permitted, NOP, WS.
            [MSS, 4, m0, m1, NOP, NOP, SACK_PERMITTED, 2, NOP, WS, 3, w] => {
                ([m0, m1], None, true, w)
            }
            // Windows: MSS, NOP, WS, NOP, NOP, SACK-permitted.
            [MSS, 4, m0, m1, NOP, WS, 3, w, NOP, NOP, SACK_PERMITTED, 2] => {
                ([m0, m1], None, true, w)
            }
            // Neither SACK nor timestamps: MSS, NOP, WS.
            [MSS, 4, m0, m1, NOP, WS, 3, w] => ([m0, m1], None, false, w),
            _ => return None,
        };
        Some(TcpOptions {
            mss: Some(u16::from_be_bytes(mss)),
            wscale: Some(ws),
            sack_permitted,
            timestamp: ts.map(|(v, e)| (be32(&v), be32(&e))),
            ..TcpOptions::default()
        })
    }

    /// Option by option.
    fn parse_loop(mut opts: &[u8]) -> TcpOptions {
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

    /// xorshift: deterministic pseudo-random bytes.
    fn rng() -> impl FnMut() -> u8 {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        }
    }

    /// The option areas the shortcuts read straight: NOP NOP TS, the SYN layouts, NOP NOP
    /// TS NOP NOP SACK(1) and NOP NOP SACK(1); their variable bytes are `0xEE`.
    const SHAPES: [&[u8]; 8] = [
        &[
            NOP, NOP, TIMESTAMP, 10, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE,
        ],
        &[
            MSS,
            4,
            0xEE,
            0xEE,
            SACK_PERMITTED,
            2,
            TIMESTAMP,
            10,
            0xEE,
            0xEE,
            0xEE,
            0xEE,
            0xEE,
            0xEE,
            0xEE,
            0xEE,
            NOP,
            WS,
            3,
            0xEE,
        ],
        &[
            MSS, 4, 0xEE, 0xEE, NOP, NOP, TIMESTAMP, 10, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE,
            0xEE, NOP, WS, 3, 0xEE,
        ],
        &[
            MSS,
            4,
            0xEE,
            0xEE,
            NOP,
            NOP,
            SACK_PERMITTED,
            2,
            NOP,
            WS,
            3,
            0xEE,
        ],
        &[
            MSS,
            4,
            0xEE,
            0xEE,
            NOP,
            WS,
            3,
            0xEE,
            NOP,
            NOP,
            SACK_PERMITTED,
            2,
        ],
        &[MSS, 4, 0xEE, 0xEE, NOP, WS, 3, 0xEE],
        &[
            NOP, NOP, TIMESTAMP, 10, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, NOP, NOP,
            SACK, 10, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE,
        ],
        &[
            NOP, NOP, SACK, 10, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE, 0xEE,
        ],
    ];

    /// Every way of reading an options area agrees with the option-by-option loop:
    /// `parse`, `parse_each` (the SYN layouts) and the engine's view
    /// (`timestamp_and_first_sack`).
    fn assert_agrees(opts: &[u8]) {
        let want = TcpOptions::parse_loop(opts);
        assert_eq!(TcpOptions::parse(opts), want, "{opts:02x?}");
        assert_eq!(TcpOptions::parse_each(opts), want, "{opts:02x?}");
        assert_eq!(
            TcpOptions::timestamp_and_first_sack(opts),
            (
                want.timestamp,
                (want.sack_count > 0).then_some(want.sack[0])
            ),
            "{opts:02x?}"
        );
    }

    /// The shortcuts give what the option-by-option parse gives, on their shapes and on
    /// every near miss (each byte changed in turn, areas cut or lengthened).
    #[test]
    fn shortcuts_agree_with_the_general_parse() {
        let mut next = rng();
        for shape in SHAPES {
            let mut straight = 0;
            for _ in 0..500 {
                let opts: Vec<u8> = shape
                    .iter()
                    .map(|&b| if b == 0xEE { next() } else { b })
                    .collect();
                assert_agrees(&opts);
                let o = TcpOptions::parse_loop(&opts);
                assert!(!o.malformed, "{opts:02x?}");
                straight +=
                    usize::from(o.timestamp.is_some() || o.mss.is_some() || o.sack_count > 0);
                for i in 0..opts.len() {
                    let mut near = opts.clone();
                    near[i] = next();
                    assert_agrees(&near);
                    for b in [
                        EOL,
                        NOP,
                        MSS,
                        WS,
                        SACK_PERMITTED,
                        SACK,
                        TIMESTAMP,
                        0,
                        1,
                        2,
                        10,
                        0xff,
                    ] {
                        near[i] = b;
                        assert_agrees(&near);
                    }
                }
                for len in 0..opts.len() + 8 {
                    let mut v = opts.clone();
                    v.resize(len, NOP);
                    assert_agrees(&v);
                    v.truncate(len.min(opts.len()));
                    v.resize(len, EOL);
                    assert_agrees(&v);
                }
            }
            assert_eq!(straight, 500);
        }
        // And random areas.
        for _ in 0..20_000 {
            let len = usize::from(next() % 41);
            let opts: Vec<u8> = (0..len).map(|_| next() % 12).collect();
            assert_agrees(&opts);
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
