//! pcapng: sections (each with its byte order), interface descriptions (link type, snaplen,
//! time stamp resolution and offset), enhanced, simple and obsolete packet blocks, and the
//! custom and systemd journal blocks that count as frames without being packets.

use super::input::{Input, MAX_BUFFER, io_at, need, rd16, rd32, rd64, word};
use super::{
    Format, Found, MAX_ABS_TS, MAX_INTERFACES, NOT_A_PACKET, ReadError, State, check_caplen,
};

pub(super) struct NgState {
    big_endian: bool,
    interfaces: Vec<NgInterface>,
}

#[derive(Clone, Copy)]
struct NgInterface {
    linktype: u32,
    snaplen: u32,
    conv: TsConv,
    offset_ns: i64,
}

/// Timestamp units to nanoseconds.
#[derive(Clone, Copy)]
pub(super) enum TsConv {
    Mul(u64),
    Div(u64),
    /// Units of 2^-n seconds.
    Pow2(u32),
}

impl TsConv {
    pub(super) fn from_tsresol(r: u8) -> Option<TsConv> {
        let e = u32::from(r & 0x7f);
        if r & 0x80 != 0 {
            Some(TsConv::Pow2(e))
        } else if e <= 9 {
            Some(TsConv::Mul(10u64.pow(9 - e)))
        } else if e <= 19 {
            Some(TsConv::Div(10u64.pow(e - 9)))
        } else {
            None
        }
    }

    /// `units` in nanoseconds, exactly. The 64-bit time stamp is read as signed (times
    /// before 1970 occur in real files, e.g. PcapPlusPlus's pcapng-example; tshark prints
    /// them as unsigned); fractions of a nanosecond are dropped (rounding down).
    #[inline]
    pub(super) fn nanos(self, units: u64) -> i128 {
        let u = i128::from(units as i64);
        match self {
            TsConv::Mul(m) => u * i128::from(m),
            TsConv::Div(d) => u.div_euclid(i128::from(d)),
            // |u| < 2^63, so |u * 10^9| < 2^93: no overflow in i128.
            TsConv::Pow2(e) => (u * 1_000_000_000) >> e.min(127),
        }
    }
}

pub(super) const NG_SHB: u32 = 0x0a0d_0d0a;
pub(super) const NG_IDB: u32 = 1;
const NG_PB: u32 = 2;
const NG_SPB: u32 = 3;
pub(super) const NG_EPB: u32 = 6;
const NG_JOURNAL: u32 = 9;
const NG_CUSTOM: u32 = 0x0000_0bad;
const NG_CUSTOM_NOCOPY: u32 = 0x4000_0bad;
const NG_BOM: u32 = 0x1a2b_3c4d;

fn block_name(t: u32) -> &'static str {
    match t {
        NG_SHB => "section header block",
        NG_IDB => "interface description block",
        NG_PB => "packet block",
        NG_SPB => "simple packet block",
        4 => "name resolution block",
        5 => "interface statistics block",
        NG_EPB => "enhanced packet block",
        NG_JOURNAL => "systemd journal export block",
        10 => "decryption secrets block",
        NG_CUSTOM | NG_CUSTOM_NOCOPY => "custom block",
        _ => "block",
    }
}

/// Walks the options from `at` to `end` (exclusive) of a block in `b`, calling `f(code,
/// value)` for each; stops at opt_endofopt. An option running past the end is damage.
fn options(
    b: &[u8],
    mut at: usize,
    end: usize,
    be: bool,
    block_offset: u64,
    block_type: u32,
    mut f: impl FnMut(u16, &[u8]) -> Result<(), ReadError>,
) -> Result<(), ReadError> {
    while at + 4 <= end {
        let code = rd16(b, at, be);
        let len = usize::from(rd16(b, at + 2, be));
        if code == 0 {
            break;
        }
        if at + 4 + len > end {
            return Err(ReadError::Damaged {
                offset: block_offset + at as u64,
                what: format!(
                    "an option (code {code}) of the {} at byte offset {block_offset} claims {len} bytes, \
                     but only {} bytes are left in the block",
                    block_name(block_type),
                    end - at - 4
                ),
            });
        }
        f(code, &b[at + 4..at + 4 + len])?;
        at += 4 + ((len + 3) & !3);
    }
    Ok(())
}

/// Reads the first section header block (the magic already matched): a bad one fails
/// [`CaptureReader::open`](super::CaptureReader::open).
pub(super) fn header(input: &mut Input) -> Result<(State, Format), ReadError> {
    let mut st = NgState {
        big_endian: false,
        interfaces: Vec::new(),
    };
    block(input, &mut st, 0)?;
    Ok((State::PcapNg(st), Format::PcapNg))
}

/// The next record, reading the blocks before it that are not records.
pub(super) fn next(
    input: &mut Input,
    st: &mut NgState,
    last_ts: i64,
) -> Result<Option<Found>, ReadError> {
    loop {
        match block(input, st, last_ts)? {
            Step::End => return Ok(None),
            Step::Record(found) => return Ok(Some(found)),
            Step::Other => {}
        }
    }
}

/// The reader's shortcut for pcapng: an enhanced packet block lying whole in the buffer
/// whose reading cannot fail (its lengths consistent, its interface described, an ordinary
/// captured length, a time stamp in a resolution of 10^-n s that fits), read with no
/// `Result`; exactly what [`block`] returns for it. `None` for anything else, which the
/// general path then decides.
#[inline(always)]
pub(super) fn whole_epb(input: &mut Input, st: &NgState) -> Option<Found> {
    // The byte order decided once, not at each of the block's fields.
    if st.big_endian {
        whole_epb_in::<true>(input, st)
    } else {
        whole_epb_in::<false>(input, st)
    }
}

#[inline(always)]
fn whole_epb_in<const BIG_ENDIAN: bool>(input: &mut Input, st: &NgState) -> Option<Found> {
    let s = input.start;
    let b = input.buf.get(s..input.end)?;
    let (h, _) = b.split_first_chunk::<28>()?;
    let be = BIG_ENDIAN;
    let rd = |at: usize| word::<BIG_ENDIAN>(h, at);
    let blen = rd(4) as usize;
    if rd(0) != NG_EPB || blen < 32 || !blen.is_multiple_of(4) {
        return None;
    }
    let (_, trailer) = b.get(..blen)?.split_last_chunk::<4>()?;
    let trailer = if be {
        u32::from_be_bytes(*trailer)
    } else {
        u32::from_le_bytes(*trailer)
    };
    let caplen = rd(20);
    if trailer as usize != blen
        || caplen > super::STANDARD_MAX_SNAPLEN
        || caplen as usize > blen - 32
    {
        return None;
    }
    let iface_id = rd(8);
    let iface = st.interfaces.get(iface_id as usize)?;
    let TsConv::Mul(m) = iface.conv else {
        return None;
    };
    let units = (u64::from(rd(12)) << 32) | u64::from(rd(16));
    let ts = (units as i64)
        .checked_mul(i64::try_from(m).ok()?)?
        .checked_add(iface.offset_ns)
        .filter(|ns| ns.unsigned_abs() <= MAX_ABS_TS as u64)?;
    input.start = s + blen;
    Some(Found {
        linktype: iface.linktype,
        ts,
        orig_len: rd(24),
        interface: iface_id,
        data_at: s + 28,
        data_len: caplen as usize,
    })
}

/// What one pcapng block yielded.
enum Step {
    End,
    Record(Found),
    /// A block that is not a record (section, interface, statistics, unknown, ...).
    Other,
}

/// Reads one pcapng block.
fn block(input: &mut Input, st: &mut NgState, last_ts: i64) -> Result<Step, ReadError> {
    if input.avail() < 12 && !input.fill(12).map_err(io_at(input))? {
        match input.avail() {
            0 => return Ok(Step::End),
            have => {
                return Err(ReadError::Truncated {
                    offset: input.offset(),
                    what: format!(
                        "a block header needs at least 12 bytes, the file ends after {have}"
                    ),
                });
            }
        }
    }
    let off = input.offset();
    let b = input.bytes();
    // The SHB type is a palindrome; its byte-order magic sets the order of the section.
    let mut be = st.big_endian;
    let btype = rd32(b, 0, be);
    if btype == NG_SHB {
        be = match rd32(b, 8, false) {
            NG_BOM => false,
            m if m.swap_bytes() == NG_BOM => true,
            m => {
                return Err(ReadError::Damaged {
                    offset: off + 8,
                    what: format!(
                        "the section header block has byte-order magic {m:08x}, not 1a2b3c4d in either order"
                    ),
                });
            }
        };
    }
    let blen = rd32(b, 4, be);
    let name = block_name(btype);
    if blen < 12 || !blen.is_multiple_of(4) {
        return Err(ReadError::Damaged {
            offset: off,
            what: format!(
                "the {name} (type {btype:#x}) has total length {blen}, not a multiple of 4 of at least 12"
            ),
        });
    }
    if blen as usize > MAX_BUFFER {
        return Err(ReadError::Damaged {
            offset: off,
            what: format!(
                "the {name} (type {btype:#x}) claims {blen} bytes, more than any real block (limit 256 MiB)"
            ),
        });
    }
    let blen = blen as usize;
    need(input, blen, || {
        format!("the {blen}-byte {name} (type {btype:#x})")
    })?;
    let s = input.start;
    let b = &input.buf[s..s + blen];
    let trailer = rd32(b, blen - 4, be);
    let body_end = blen - 4;
    let too_short = |min: usize| ReadError::Damaged {
        offset: off,
        what: format!("the {name} is {blen} bytes long, too short for its {min}-byte fixed part"),
    };
    let mut found = None;
    match btype {
        NG_SHB => {
            if blen < 28 {
                return Err(too_short(28));
            }
            let (major, minor) = (rd16(b, 12, be), rd16(b, 14, be));
            if !(major == 1 && (minor == 0 || minor == 2)) {
                return Err(ReadError::Damaged {
                    offset: off + 12,
                    what: format!(
                        "the pcapng section header says version {major}.{minor}; pcapng files are version 1.0"
                    ),
                });
            }
            options(b, 24, body_end, be, off, btype, |_, _| Ok(()))?;
            st.big_endian = be;
            st.interfaces.clear();
        }
        NG_IDB => {
            if blen < 20 {
                return Err(too_short(20));
            }
            let mut iface = NgInterface {
                linktype: u32::from(rd16(b, 8, be)),
                snaplen: rd32(b, 12, be),
                conv: TsConv::Mul(1000),
                offset_ns: 0,
            };
            options(b, 16, body_end, be, off, btype, |code, v| {
                match (code, v.len()) {
                    (9, 1) => {
                        iface.conv = TsConv::from_tsresol(v[0]).ok_or_else(|| ReadError::Damaged {
                            offset: off,
                            what: format!("the interface description's if_tsresol 10^-{} is finer than any clock", v[0]),
                        })?;
                    }
                    (14, 8) => {
                        let secs = rd64(v, 0, be) as i64;
                        iface.offset_ns = secs
                            .checked_mul(1_000_000_000)
                            .filter(|ns| ns.abs() <= MAX_ABS_TS)
                            .ok_or_else(|| ReadError::Damaged {
                                offset: off,
                                what: format!(
                                    "the interface description's if_tsoffset of {secs} s is more than 146 years"
                                ),
                            })?;
                    }
                    _ => {}
                }
                Ok(())
            })?;
            if st.interfaces.len() >= MAX_INTERFACES {
                return Err(ReadError::Damaged {
                    offset: off,
                    what: format!(
                        "the section already describes {MAX_INTERFACES} interfaces, more than any real capture \
                         (limit {MAX_INTERFACES} per section)"
                    ),
                });
            }
            st.interfaces.push(iface);
        }
        NG_EPB | NG_PB => {
            if blen < 32 {
                return Err(too_short(32));
            }
            let (iface_id, ts_at) = if btype == NG_EPB {
                (rd32(b, 8, be), 12)
            } else {
                (u32::from(rd16(b, 8, be)), 12)
            };
            let units = (u64::from(rd32(b, ts_at, be)) << 32) | u64::from(rd32(b, ts_at + 4, be));
            let caplen = rd32(b, 20, be);
            let orig_len = rd32(b, 24, be);
            let iface = interface(st, iface_id, off, name)?;
            check_caplen(caplen, iface.snaplen, off, name)?;
            if caplen as usize > blen - 32 {
                return Err(ReadError::Damaged {
                    offset: off,
                    what: format!(
                        "the {blen}-byte {name} claims {caplen} captured bytes, more than it holds"
                    ),
                });
            }
            let ns = iface.conv.nanos(units) + i128::from(iface.offset_ns);
            if ns.abs() > i128::from(MAX_ABS_TS) {
                return Err(ReadError::Damaged {
                    offset: off + ts_at as u64,
                    what: format!(
                        "the {name}'s time stamp ({} units, interface {iface_id}) is not a time \
                         between the years 1824 and 2116",
                        units as i64
                    ),
                });
            }
            let ts = ns as i64;
            found = Some(Found {
                linktype: iface.linktype,
                ts,
                orig_len,
                interface: iface_id,
                data_at: s + 28,
                data_len: caplen as usize,
            });
        }
        NG_SPB => {
            if blen < 16 {
                return Err(too_short(16));
            }
            let orig_len = rd32(b, 8, be);
            let iface = interface(st, 0, off, name)?;
            let mut caplen = (orig_len as usize).min(blen - 16);
            if iface.snaplen != 0 {
                caplen = caplen.min(iface.snaplen as usize);
            }
            found = Some(Found {
                linktype: iface.linktype,
                ts: last_ts,
                orig_len,
                interface: 0,
                data_at: s + 12,
                data_len: caplen,
            });
        }
        NG_CUSTOM | NG_CUSTOM_NOCOPY | NG_JOURNAL => {
            // A custom block's data follows its 4-byte Private Enterprise Number (as in tshark).
            let skip = if btype == NG_JOURNAL { 0 } else { 4 };
            if blen < 12 + skip {
                return Err(too_short(12 + skip));
            }
            let len = blen - 12 - skip;
            found = Some(Found {
                linktype: NOT_A_PACKET,
                ts: last_ts,
                orig_len: len as u32,
                interface: 0,
                data_at: s + 8 + skip,
                data_len: len,
            });
        }
        _ => {}
    }
    if trailer as usize != blen {
        return Err(ReadError::Damaged {
            offset: off,
            what: format!(
                "the {name} says it is {blen} bytes long at its start but {trailer} at its end"
            ),
        });
    }
    input.start += blen;
    Ok(found.map_or(Step::Other, Step::Record))
}

fn interface(st: &NgState, id: u32, off: u64, name: &str) -> Result<NgInterface, ReadError> {
    st.interfaces
        .get(id as usize)
        .copied()
        .ok_or_else(|| ReadError::Damaged {
            offset: off,
            what: format!(
                "the {name} refers to interface {id}, but its section describes {} interface(s)",
                st.interfaces.len()
            ),
        })
}
