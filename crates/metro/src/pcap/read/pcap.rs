//! Classic pcap: µs and ns time stamps, both byte orders, Kuznetzov's "modified" 24-byte
//! record headers, the old 2.0–2.3 headers (lengths swapped) and DG/UX 543.0, AIX's 2.2
//! ifType link types.

use super::input::{Input, io_at, need, rd16, rd32, record_header};
use super::{Format, Found, ReadError, STANDARD_MAX_SNAPLEN, State, check_caplen};

/// What the file header says, for every record.
pub(super) struct PcapState {
    big_endian: bool,
    nanos: bool,
    hdr_len: usize,
    linktype: u32,
    snaplen: u32,
    swap: LengthsSwapped,
}

/// The record header of a plain pcap file.
pub(super) const PLAIN_HEADER: usize = 16;

/// What the reader's shortcut needs of a plain pcap file (16-byte record headers, lengths
/// in their 2.4 order): see `CaptureReader::whole_pcap_record`.
pub(super) struct Plain {
    pub(super) big_endian: bool,
    /// Nanoseconds in one unit of the header's fraction (1000 for µs, 1 for ns).
    pub(super) frac_ns: i64,
    pub(super) linktype: u32,
}

impl PcapState {
    /// The shortcut's view of a plain file; `None` for modified headers and the old
    /// versions with swapped lengths, which keep to the general path.
    pub(super) fn plain(&self) -> Option<Plain> {
        (self.hdr_len == PLAIN_HEADER && self.swap == LengthsSwapped::No).then_some(Plain {
            big_endian: self.big_endian,
            frac_ns: if self.nanos { 1 } else { 1000 },
            linktype: self.linktype,
        })
    }
}

/// Versions before 2.3 wrote caplen and len the other way round (libpcap's handling).
#[derive(Clone, Copy, PartialEq, Eq)]
enum LengthsSwapped {
    No,
    Yes,
    /// Version 2.3: swapped if caplen > len.
    Maybe,
}

/// Reads the 24-byte file header (the magic already matched) and consumes it.
pub(super) fn header(
    input: &mut Input,
    big_endian: bool,
    mut nanos: bool,
    modified: bool,
) -> Result<(State, Format), ReadError> {
    need(input, 24, || "the pcap file header".into())?;
    let h = input.bytes();
    let major = rd16(h, 4, big_endian);
    let minor = rd16(h, 6, big_endian);
    let snaplen = rd32(h, 16, big_endian);
    let raw_linktype = rd32(h, 20, big_endian);
    let swap = match (major, minor) {
        (2, 0..=2) | (543, 0) => LengthsSwapped::Yes,
        (2, 3) => LengthsSwapped::Maybe,
        (2, 4) => LengthsSwapped::No,
        _ => {
            return Err(ReadError::Damaged {
                offset: 4,
                what: format!(
                    "the pcap file header says version {major}.{minor}; pcap files are version 2.4 \
                     (2.0 to 2.4 and DG/UX 543.0 are read)"
                ),
            });
        }
    };
    // The upper bits carry an FCS length and reserved bits; the link type is the low 16.
    let mut linktype = raw_linktype & 0xffff;
    if (major, minor) == (2, 2) {
        // AIX's tcpdump wrote RFC 1573 ifType values and nanosecond times (as Wireshark reads them).
        let aix = match linktype {
            6 => Some(1),
            9 => Some(6),
            15 => Some(10),
            24 => Some(0),
            _ => None,
        };
        if let Some(lt) = aix {
            linktype = lt;
            nanos = true;
        }
    }
    input.start += 24;
    let hdr_len = if modified { 24 } else { PLAIN_HEADER };
    let st = PcapState {
        big_endian,
        nanos,
        hdr_len,
        linktype,
        snaplen,
        swap,
    };
    Ok((
        State::Pcap(st),
        Format::Pcap {
            nanos,
            big_endian,
            modified,
        },
    ))
}

/// A pcap record header's captured and original lengths.
#[inline]
fn lengths(h: &[u8], st: &PcapState) -> (u32, u32) {
    let be = st.big_endian;
    let caplen = rd32(h, 8, be);
    let orig_len = rd32(h, 12, be);
    if st.swap == LengthsSwapped::Yes || (st.swap == LengthsSwapped::Maybe && caplen > orig_len) {
        (orig_len, caplen)
    } else {
        (caplen, orig_len)
    }
}

/// A pcap record header's time stamp in nanoseconds.
#[inline]
fn time_stamp(h: &[u8], st: &PcapState) -> i64 {
    let secs = rd32(h, 0, st.big_endian);
    let frac = rd32(h, 4, st.big_endian);
    let sub = if st.nanos {
        i64::from(frac)
    } else {
        i64::from(frac) * 1000
    };
    i64::from(secs) * 1_000_000_000 + sub
}

/// The next pcap record. One path for every record: the common case (an ordinary length,
/// the record whole in the buffer) only reads the header; a long record is checked and a
/// record that runs past the buffer refilled, out of line.
#[inline]
pub(super) fn next(input: &mut Input, st: &PcapState) -> Result<Option<Found>, ReadError> {
    let hl = st.hdr_len;
    if input.avail() < hl && !record_header(input, hl)? {
        return Ok(None);
    }
    let h = &input.bytes()[..hl];
    let (caplen, orig_len) = lengths(h, st);
    let ts = time_stamp(h, st);
    if caplen > STANDARD_MAX_SNAPLEN || input.avail() < hl + caplen as usize {
        check_caplen(caplen, st.snaplen, input.offset(), "record header")?;
        refill_record(input, hl, caplen)?;
    }
    let data_at = input.start + hl;
    input.start = data_at + caplen as usize;
    Ok(Some(Found {
        linktype: st.linktype,
        ts,
        orig_len,
        interface: 0,
        data_at,
        data_len: caplen as usize,
    }))
}

/// Makes the whole record (its `hl`-byte header and `caplen` bytes) available, or says
/// that the file ends inside it.
#[cold]
#[inline(never)]
fn refill_record(input: &mut Input, hl: usize, caplen: u32) -> Result<(), ReadError> {
    if input.fill(hl + caplen as usize).map_err(io_at(input))? {
        return Ok(());
    }
    let have = input.avail();
    Err(ReadError::Truncated {
        offset: input.offset(),
        what: format!(
            "the record has {caplen} captured bytes after its {hl}-byte header, the file ends after {}",
            have.saturating_sub(hl)
        ),
    })
}
