//! EtherPeek classic (versions 5 and 6, Ethernet only): a big-endian file header with a
//! base time in seconds since 1904, then records timed in milliseconds after it.

use super::input::{Hints, Input, need, rd16, rd32, record_header};
use super::{Format, Found, ReadError, State};

/// Seconds between 1904-01-01 (the Mac epoch EtherPeek uses) and 1970-01-01.
const MAC_EPOCH_OFFSET: i64 = 2_082_844_800;

/// EtherPeek classic, versions 5 and 6 (Wireshark's peekclassic): a 2-byte master header
/// (version, status), a 48-byte big-endian secondary header (file length, packet count,
/// base time in seconds since 1904, ..., media type 0 = Ethernet), then records.
pub(super) fn header(
    input: &mut Input,
    hints: Hints,
) -> Option<Result<(State, Format), ReadError>> {
    let _ = input.fill(50);
    let h = input.bytes();
    if h.len() < 50 || !(5..=6).contains(&h[0]) || h[1] != 0 {
        return None;
    }
    let file_len = u64::from(rd32(h, 2, true));
    if hints.file_size.is_some_and(|size| size != file_len) || file_len < 50 {
        return None;
    }
    let time_date = i64::from(rd32(h, 10, true));
    let media_type = rd32(h, 26, true);
    if media_type != 0 {
        return Some(Err(ReadError::UnsupportedFormat {
            name: "EtherPeek (not Ethernet)",
        }));
    }
    input.start += 50;
    Some(Ok((
        State::EtherPeek(time_date - MAC_EPOCH_OFFSET),
        Format::EtherPeek,
    )))
}

/// An EtherPeek V5/V6 record: 26-byte big-endian header (length, slice length (0: whole
/// packet), flags, status, time in ms after the file's base time, ...), the captured bytes,
/// and a pad byte after an odd-length slice.
pub(super) fn next(input: &mut Input, base_secs: i64) -> Result<Option<Found>, ReadError> {
    const HDR: usize = 26;
    if !record_header(input, HDR)? {
        return Ok(None);
    }
    let h = &input.buf[input.start..input.start + HDR];
    let orig_len = u32::from(rd16(h, 0, true));
    let slice = u32::from(rd16(h, 2, true));
    let caplen = if slice == 0 { orig_len } else { slice };
    let ms = i64::from(rd32(h, 6, true));
    let rec_len = HDR + caplen as usize + (caplen as usize & 1);
    need(input, rec_len, || format!("the {rec_len}-byte record"))?;
    let data_at = input.start + HDR;
    input.start += rec_len;
    Ok(Some(Found {
        linktype: 1,
        ts: base_secs * 1_000_000_000 + ms * 1_000_000,
        orig_len,
        interface: 0,
        data_at,
        data_len: caplen as usize,
    }))
}
