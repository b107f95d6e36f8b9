//! Sun snoop version 2 (RFC 1761), Ethernet only: big-endian, 16-byte file header, 24-byte
//! record headers that give each record's padded length.

use super::input::{Input, need, rd32, record_header};
use super::{Format, Found, MAX_RECORD, ReadError, State, check_caplen};

/// Reads the 16-byte file header (the magic already matched) and consumes it.
pub(super) fn header(input: &mut Input) -> Result<(State, Format), ReadError> {
    need(input, 16, || "the snoop file header".into())?;
    let h = input.bytes();
    let version = rd32(h, 8, true);
    let datalink = rd32(h, 12, true);
    if !(2..=4).contains(&version) {
        return Err(ReadError::Damaged {
            offset: 8,
            what: format!(
                "the snoop file header says version {version}; snoop files are version 2"
            ),
        });
    }
    if datalink != 0 && datalink != 4 {
        return Err(ReadError::UnsupportedFormat {
            name: "snoop (not Ethernet)",
        });
    }
    input.start += 16;
    Ok((State::Snoop, Format::Snoop))
}

/// The next record: its 24-byte header, the captured bytes and padding to `rec_len`.
pub(super) fn next(input: &mut Input) -> Result<Option<Found>, ReadError> {
    if !record_header(input, 24)? {
        return Ok(None);
    }
    let h = &input.buf[input.start..input.start + 24];
    let orig_len = rd32(h, 0, true);
    let caplen = rd32(h, 4, true);
    let rec_len = rd32(h, 8, true);
    let secs = rd32(h, 16, true);
    let usecs = rd32(h, 20, true);
    check_caplen(caplen, 0, input.offset(), "record header")?;
    if u64::from(rec_len) < 24 + u64::from(caplen) || rec_len > MAX_RECORD {
        return Err(ReadError::Damaged {
            offset: input.offset(),
            what: format!(
                "the record length {rec_len} cannot hold a 24-byte header and {caplen} captured bytes"
            ),
        });
    }
    need(input, rec_len as usize, || {
        format!("the {rec_len}-byte record")
    })?;
    let data_at = input.start + 24;
    input.start += rec_len as usize;
    let ts = i64::from(secs) * 1_000_000_000 + i64::from(usecs) * 1000;
    Ok(Some(Found {
        linktype: 1,
        ts,
        orig_len,
        interface: 0,
        data_at,
        data_len: caplen as usize,
    }))
}
