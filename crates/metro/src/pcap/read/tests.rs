//! Unit tests of the reader's internals: time stamp conversion, pcapng limits, buffer
//! growth and shrinking, format recognition. The file-level behaviour is in
//! `tests/it/pcap_read.rs`.

use std::io::Cursor;

use super::input::DEFAULT_BUFFER;
use super::pcapng::{NG_EPB, NG_IDB, NG_SHB, TsConv};
use super::*;

fn reader(bytes: &[u8]) -> Result<CaptureReader, ReadError> {
    CaptureReader::from_reader(Box::new(Cursor::new(bytes.to_vec())))
}

#[test]
fn tsresol_conversions() {
    assert_eq!(
        TsConv::from_tsresol(6).unwrap().nanos(1_500_000),
        1_500_000_000
    );
    assert_eq!(TsConv::from_tsresol(9).unwrap().nanos(7), 7);
    assert_eq!(TsConv::from_tsresol(12).unwrap().nanos(7_000), 7);
    assert_eq!(
        TsConv::from_tsresol(0x8a).unwrap().nanos(1536),
        1_500_000_000
    );
    // Signed, and exact (no wrapping): what does not fit is for the caller to refuse.
    let us = TsConv::from_tsresol(6).unwrap();
    assert_eq!(us.nanos(u64::MAX), -1000);
    assert_eq!(us.nanos(1 << 62), (1i128 << 62) * 1000);
    assert_eq!(TsConv::from_tsresol(10).unwrap().nanos(u64::MAX), -1);
    assert_eq!(
        TsConv::from_tsresol(0x80).unwrap().nanos(u64::MAX),
        -1_000_000_000
    );
    assert!(TsConv::from_tsresol(20).is_none());
}

/// A little-endian pcapng block of `btype` around `body`.
fn ng(btype: u32, body: &[u8]) -> Vec<u8> {
    let len = (12 + body.len()) as u32;
    let mut b = btype.to_le_bytes().to_vec();
    b.extend_from_slice(&len.to_le_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(&len.to_le_bytes());
    b
}

fn shb() -> Vec<u8> {
    let mut body = 0x1a2b_3c4du32.to_le_bytes().to_vec();
    body.extend_from_slice(&[1, 0, 0, 0]);
    body.extend_from_slice(&u64::MAX.to_le_bytes());
    ng(NG_SHB, &body)
}

/// An Ethernet interface with these options (code, value), each padded to 4 bytes.
fn idb(opts: &[(u16, &[u8])]) -> Vec<u8> {
    let mut body = vec![1, 0, 0, 0, 0, 0, 0, 0];
    for (code, v) in opts {
        body.extend_from_slice(&code.to_le_bytes());
        body.extend_from_slice(&(v.len() as u16).to_le_bytes());
        body.extend_from_slice(v);
        body.resize(body.len().next_multiple_of(4), 0);
    }
    if !opts.is_empty() {
        body.extend_from_slice(&[0; 4]);
    }
    ng(NG_IDB, &body)
}

fn epb(iface: u32, units: u64) -> Vec<u8> {
    let mut body = iface.to_le_bytes().to_vec();
    body.extend_from_slice(&((units >> 32) as u32).to_le_bytes());
    body.extend_from_slice(&(units as u32).to_le_bytes());
    body.extend_from_slice(&[4, 0, 0, 0, 4, 0, 0, 0, 1, 2, 3, 4]);
    ng(NG_EPB, &body)
}

#[test]
fn pcapng_interfaces_are_capped_with_the_offset() {
    let mut f = shb();
    let one = idb(&[]);
    for _ in 0..MAX_INTERFACES {
        f.extend_from_slice(&one);
    }
    f.extend_from_slice(&epb(MAX_INTERFACES as u32 - 1, 5));
    let mut r = reader(&f).unwrap();
    assert_eq!(r.next_record().unwrap().unwrap().interface, 65535);
    // One more interface: damage, at the block that would exceed the limit.
    let at = f.len() - epb(0, 0).len();
    f.truncate(at);
    f.extend_from_slice(&one);
    let mut r = reader(&f).unwrap();
    let e = r.next_record().unwrap_err();
    assert!(
        matches!(e, ReadError::Damaged { offset, .. } if offset == at as u64),
        "{e}"
    );
    assert!(e.to_string().contains("65536 interfaces"), "{e}");
    // A new section starts with none.
    let mut f2 = f[..at].to_vec();
    f2.extend_from_slice(&shb());
    f2.extend_from_slice(&one);
    f2.extend_from_slice(&epb(0, 7));
    assert_eq!(
        reader(&f2).unwrap().next_record().unwrap().unwrap().ts,
        7000
    );
}

#[test]
fn pcapng_time_stamps_never_wrap() {
    let read = |iface: Vec<u8>, units: u64| {
        let mut f = shb();
        f.extend_from_slice(&iface);
        let at = f.len();
        f.extend_from_slice(&epb(0, units));
        let mut r = reader(&f).unwrap();
        (r.next_record().map(|rec| rec.map(|x| x.ts)), at)
    };
    // Microseconds (the default): 2^62 µs would wrap in nanoseconds; -1 µs is a time.
    assert_eq!(read(idb(&[]), u64::MAX).0.unwrap(), Some(-1000));
    let (ts, at) = read(idb(&[]), 1 << 62);
    let e = ts.unwrap_err();
    assert!(
        matches!(e, ReadError::Damaged { offset, .. } if offset == at as u64 + 12),
        "{e}"
    );
    assert!(
        e.to_string().contains("between the years 1824 and 2116"),
        "{e}"
    );
    // Nanoseconds: fits in a u64, not within 146 years of 1970.
    let ns = idb(&[(9, &[9])]);
    assert!(read(ns.clone(), 1 << 63).0.is_err());
    assert_eq!(read(ns.clone(), 1 << 62).0.unwrap(), Some(1 << 62));
    // An offset that would carry the time past the limit, or that overflows by itself.
    let off = |secs: i64| idb(&[(9, &[9]), (14, &secs.to_le_bytes())]);
    assert_eq!(read(off(-1), 5_000_000_000).0.unwrap(), Some(4_000_000_000));
    assert!(read(off(4_000_000_000), 1 << 62).0.is_err());
    let (big, _) = read(off(i64::MAX / 1000), 0);
    assert!(big.unwrap_err().to_string().contains("if_tsoffset"));
}

#[test]
fn empty_and_tiny_inputs() {
    let e = reader(b"").err().unwrap();
    assert_eq!(
        e.to_string(),
        "not a pcap or pcapng file (the file is empty)"
    );
    let e = reader(b"\x01\x02").err().unwrap();
    assert_eq!(
        e.to_string(),
        "not a pcap or pcapng file (the file is only 2 bytes long: 01 02)"
    );
    let e = reader(&[0xd4, 0xc3, 0xb2, 0xa1, 2, 0]).err().unwrap();
    assert!(matches!(e, ReadError::Truncated { offset: 0, .. }), "{e}");
}

#[test]
fn recognises_other_formats() {
    let e = reader(b"\x28\xb5\x2f\xfd0000").err().unwrap();
    assert_eq!(
        e.to_string(),
        "zstd-compressed file: metro reads pcap and pcapng, plain or gzip-compressed; decompress it with `zstd -d`"
    );
    let e = reader(b"GMBU\0\0\0\0").err().unwrap();
    assert!(
        e.to_string()
            .starts_with("Microsoft Network Monitor 2 capture: metro reads pcap and pcapng")
    );
}

fn pcap_le(snaplen: u32, records: &[(u32, usize)]) -> Vec<u8> {
    let mut f = vec![0xd4, 0xc3, 0xb2, 0xa1, 2, 0, 4, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    f.extend_from_slice(&snaplen.to_le_bytes());
    f.extend_from_slice(&1u32.to_le_bytes());
    for &(caplen, have) in records {
        f.extend_from_slice(&[0; 8]);
        f.extend_from_slice(&caplen.to_le_bytes());
        f.extend_from_slice(&caplen.to_le_bytes());
        f.resize(f.len() + have, 0xab);
    }
    f
}

#[test]
fn buffer_grows_for_a_big_record_and_shrinks_after() {
    let mut records = vec![(3 << 20, 3 << 20)];
    records.resize(3000, (3000, 3000));
    let f = pcap_le(0, &records);
    let mut r = reader(&f).unwrap();
    assert_eq!(r.next_record().unwrap().unwrap().caplen, 3 << 20);
    assert!(r.input.buf.len() >= 3 << 20);
    for _ in 1..3000 {
        assert_eq!(r.next_record().unwrap().unwrap().caplen, 3000);
    }
    assert!(r.next_record().unwrap().is_none());
    assert_eq!(r.input.buf.len(), DEFAULT_BUFFER);
}

#[test]
fn a_lying_length_costs_no_more_than_the_data() {
    // 200 MiB claimed (snaplen 0 = unlimited), 3 MiB present.
    let f = pcap_le(0, &[(200 << 20, 3 << 20)]);
    let mut r = reader(&f).unwrap();
    let e = r.next_record().unwrap_err();
    assert!(matches!(e, ReadError::Truncated { offset: 24, .. }), "{e}");
    assert!(r.input.buf.len() <= 8 << 20, "{}", r.input.buf.len());
}

#[test]
fn pcap_record_header_lengths_swapped_before_2_3() {
    // Version 2.2, big-endian: caplen and len written the other way round.
    let mut f = vec![
        0xa1, 0xb2, 0xc3, 0xd4, 0, 2, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 1,
    ];
    f.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 9, 0, 0, 0, 4, 1, 2, 3, 4]);
    let mut r = reader(&f).unwrap();
    let rec = r.next_record().unwrap().unwrap();
    assert_eq!((rec.caplen, rec.orig_len, rec.ts), (4, 9, 1_000_002_000));
    assert_eq!(rec.data, &[1, 2, 3, 4]);
    assert!(r.next_record().unwrap().is_none());
}

/// A reader of `bytes`, whole or trickled `step` bytes a read, with the inline shortcuts
/// (plain pcap records, pcapng enhanced packet blocks) on or off: off, every record takes
/// the general path.
fn open_with(
    bytes: &[u8],
    step: Option<usize>,
    shortcut: bool,
) -> Result<CaptureReader, ReadError> {
    let r = match step {
        None => reader(bytes),
        Some(step) => CaptureReader::from_reader(Box::new(Trickle {
            data: bytes.to_vec(),
            at: 0,
            step,
            next: step,
        })),
    };
    r.map(|mut r| {
        if !shortcut {
            r.plain_pcap = None;
            r.ng_shortcut = false;
        }
        r
    })
}

/// A source that hands out at most `step` bytes a read (then `step + 1`, cycling up to
/// `3 * step`): records then lie cut at the buffer's end at every offset.
struct Trickle {
    data: Vec<u8>,
    at: usize,
    step: usize,
    next: usize,
}

impl std::io::Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.next.min(buf.len()).min(self.data.len() - self.at);
        buf[..n].copy_from_slice(&self.data[self.at..self.at + n]);
        self.at += n;
        self.next = if self.next >= 3 * self.step {
            self.step
        } else {
            self.next + 1
        };
        Ok(n)
    }
}

/// Everything a reader returns until two calls after its end or error: each record's
/// fields and bytes, the record count and offset after it, errors as text.
fn read_all(mut r: CaptureReader) -> Vec<String> {
    let mut out = Vec::new();
    let mut ends = 0;
    while ends < 3 {
        let step = match r.next_record() {
            Ok(Some(rec)) => format!("{rec:?}"),
            Ok(None) => {
                ends += 1;
                "end".to_string()
            }
            Err(e) => format!("error {e}"),
        };
        out.push(format!(
            "{step} records {} offset {}",
            r.records(),
            r.offset()
        ));
    }
    out
}

/// A classic pcap file: `magic` in the order `be` says, version `major.minor`, linktype 1,
/// and these records (captured length, original length; the bytes are a counter).
fn pcap_file(be: bool, magic: u32, version: (u16, u16), records: &[(u32, u32)]) -> Vec<u8> {
    let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let w16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let modified = magic == 0xa1b2_cd34;
    let mut f = w32(magic).to_vec();
    f.extend_from_slice(&w16(version.0));
    f.extend_from_slice(&w16(version.1));
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&w32(65535));
    f.extend_from_slice(&w32(1));
    let mut byte = 0u8;
    for (i, &(caplen, orig)) in records.iter().enumerate() {
        f.extend_from_slice(&w32(1_700_000_000 + i as u32));
        f.extend_from_slice(&w32(999_999 - i as u32));
        f.extend_from_slice(&w32(caplen));
        f.extend_from_slice(&w32(orig));
        if modified {
            f.extend_from_slice(&[0; 8]);
        }
        for _ in 0..caplen.min(1 << 20) {
            f.push(byte);
            byte = byte.wrapping_add(1);
        }
    }
    f
}

/// The reader's pcap shortcut returns what the general path returns, record for record
/// (fields, bytes, count, offset, errors, the end), on plain files of both byte orders and
/// both resolutions and on those it leaves alone (modified headers, 2.3's lengths), read
/// whole, cut at every byte, trickled a few bytes a read, with damaged lengths.
#[test]
fn pcap_shortcut_agrees_with_the_general_path() {
    const MAGIC_US: u32 = 0xa1b2_c3d4;
    const MAGIC_NS: u32 = 0xa1b2_3c4d;
    const MAGIC_MODIFIED: u32 = 0xa1b2_cd34;
    let records = [
        (60, 60),
        (0, 0),
        (1, 1500),
        (74, 74),
        (1514, 1514),
        (54, 40),
        (66, 66),
        (3, 3),
    ];
    let both = |bytes: &[u8], step: Option<usize>| {
        let open = |shortcut: bool| open_with(bytes, step, shortcut);
        match (open(true), open(false)) {
            (Ok(a), Ok(b)) => {
                let plain = a.plain_pcap.is_some();
                assert_eq!(read_all(a), read_all(b), "{step:?} {bytes:02x?}");
                plain
            }
            (Err(a), Err(b)) => {
                assert_eq!(a.to_string(), b.to_string());
                false
            }
            (a, b) => panic!("{:?} vs {:?}", a.is_ok(), b.is_ok()),
        }
    };
    let mut plain_files = 0;
    for (be, magic, version) in [
        (false, MAGIC_US, (2, 4)),
        (true, MAGIC_US, (2, 4)),
        (false, MAGIC_NS, (2, 4)),
        (true, MAGIC_NS, (2, 4)),
        (false, MAGIC_MODIFIED, (2, 4)),
        (false, MAGIC_US, (2, 3)),
        (true, MAGIC_US, (2, 2)),
    ] {
        let file = pcap_file(be, magic, version, &records);
        plain_files += usize::from(both(&file, None));
        for cut in 0..file.len() {
            both(&file[..cut], None);
        }
        for step in [1, 5, 16, 17, 100] {
            both(&file, Some(step));
        }
        // Damaged lengths: beyond any packet, beyond the snaplen and the ordinary
        // limit, and a large one that is fine (snaplen 65535 but within 262144).
        for bad in [u32::MAX, MAX_RECORD + 1, 300_000, 70_000] {
            let mut r = records.to_vec();
            r[3] = (bad, bad);
            let file = pcap_file(be, magic, version, &r);
            both(&file, None);
            both(&file[..file.len() - 1], None);
            both(&file, Some(7));
        }
    }
    assert_eq!(plain_files, 4);
    // Many records: some lie across the end of the 1 MiB buffer.
    let many: Vec<(u32, u32)> = (0..40_000).map(|i| (40 + i % 97, 1500)).collect();
    let file = pcap_file(false, MAGIC_US, (2, 4), &many);
    assert!(file.len() > 3 * DEFAULT_BUFFER);
    assert!(both(&file, None));
    both(&file[..file.len() - 30], None);
    both(&file, Some(4096));
}

/// A pcapng block in either byte order (`trailer` overrides the closing length).
fn ng_block(be: bool, btype: u32, body: &[u8], trailer: Option<u32>) -> Vec<u8> {
    let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let len = (12 + body.len()) as u32;
    let mut b = w32(btype).to_vec();
    b.extend_from_slice(&w32(len));
    b.extend_from_slice(body);
    b.extend_from_slice(&w32(trailer.unwrap_or(len)));
    b
}

/// A pcapng section in byte order `be`: its interfaces (each with these options: code,
/// value) and then `blocks` (type, body; written in the section's order).
fn ng_section(
    be: bool,
    ifaces: &[&[(u16, &[u8])]],
    epbs: &[(u32, u64, u32, u32, usize)],
) -> Vec<u8> {
    let w32 = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let w16 = |v: u16| if be { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut f = Vec::new();
    let mut shb = w32(0x1a2b_3c4d).to_vec();
    shb.extend_from_slice(&w16(1));
    shb.extend_from_slice(&w16(0));
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    f.extend(ng_block(be, NG_SHB, &shb, None));
    for opts in ifaces {
        let mut body = w16(1).to_vec();
        body.extend_from_slice(&[0, 0]);
        body.extend_from_slice(&w32(0));
        for (code, v) in *opts {
            body.extend_from_slice(&w16(*code));
            body.extend_from_slice(&w16(v.len() as u16));
            body.extend_from_slice(v);
            body.resize(body.len().next_multiple_of(4), 0);
        }
        if !opts.is_empty() {
            body.extend_from_slice(&[0; 4]);
        }
        f.extend(ng_block(be, NG_IDB, &body, None));
    }
    let mut byte = 0u8;
    for &(iface, units, caplen, orig, pad_or_opts) in epbs {
        let mut body = w32(iface).to_vec();
        body.extend_from_slice(&w32((units >> 32) as u32));
        body.extend_from_slice(&w32(units as u32));
        body.extend_from_slice(&w32(caplen));
        body.extend_from_slice(&w32(orig));
        for _ in 0..caplen.min(4096) {
            body.push(byte);
            byte = byte.wrapping_add(1);
        }
        body.resize(body.len().next_multiple_of(4), 0);
        // 1: an option (epb_flags); 2: a wrong trailer; 3: a simple packet block after.
        match pad_or_opts {
            1 => {
                body.extend_from_slice(&w16(2));
                body.extend_from_slice(&w16(4));
                body.extend_from_slice(&w32(1));
                body.extend_from_slice(&[0; 4]);
                f.extend(ng_block(be, NG_EPB, &body, None));
            }
            2 => f.extend(ng_block(be, NG_EPB, &body, Some(4))),
            3 => {
                f.extend(ng_block(be, NG_EPB, &body, None));
                let mut spb = w32(5).to_vec();
                spb.extend_from_slice(&[9, 9, 9, 9, 9, 0, 0, 0]);
                f.extend(ng_block(be, 3, &spb, None));
            }
            _ => f.extend(ng_block(be, NG_EPB, &body, None)),
        }
    }
    f
}

/// pcapng's shortcut returns what the general path returns, record for record, on sections
/// of both byte orders, interfaces of every time stamp resolution and offset, blocks with
/// options, wrong trailers, unknown interfaces, time stamps out of range, simple packet
/// blocks after enhanced ones (their time is the last record's), cut at every byte and
/// trickled.
#[test]
fn pcapng_shortcut_agrees_with_the_general_path() {
    let both = |bytes: &[u8], step: Option<usize>| {
        let open = |shortcut: bool| open_with(bytes, step, shortcut);
        match (open(true), open(false)) {
            (Ok(a), Ok(b)) => assert_eq!(read_all(a), read_all(b), "{step:?} {bytes:02x?}"),
            (Err(a), Err(b)) => assert_eq!(a.to_string(), b.to_string()),
            (a, b) => panic!("{:?} vs {:?}", a.is_ok(), b.is_ok()),
        }
    };
    let epbs = [
        (0, 1_700_000_000_000_000, 60, 60, 0),
        (1, 1_700_000_000_000_000_123, 61, 1500, 0),
        (2, 1 << 40, 62, 62, 0),
        (3, 1 << 50, 63, 63, 0),
        (4, 5, 0, 0, 0),
        (5, 5, 7, 7, 0),
        (5, 1 << 62, 7, 7, 0),
        (0, u64::MAX, 10, 10, 0),
        (1, 1 << 63, 10, 10, 0),
        (0, 77, 64, 64, 1),
        (0, 78, 64, 64, 3),
        (0, 79, 300_000, 300_000, 0),
        (0, 80, 66, 66, 2),
        (9, 81, 66, 66, 0),
    ];
    let mut n = 0;
    for be in [false, true] {
        let w64 = |v: u64| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        // A second's offset, and 4e9 s (126 years: most times then fall out of range).
        let (offset, far) = (w64(1), w64(4_000_000_000));
        let ifaces: [&[(u16, &[u8])]; 6] = [
            &[],
            &[(9, &[9])],
            &[(9, &[0x8a])],
            &[(9, &[12])],
            &[(14, &offset)],
            &[(14, &far)],
        ];
        // Each block in turn after two good ones, so that the damaged ones end the file.
        for i in 0..epbs.len() {
            let picked = [epbs[0], epbs[1], epbs[i], epbs[3]];
            let file = ng_section(be, &ifaces, &picked);
            both(&file, None);
            both(&file, Some(13));
            n += 1;
        }
        let good: Vec<_> = epbs[..6].iter().chain(&epbs[9..11]).copied().collect();
        let other: [&[(u16, &[u8])]; 2] = [&[], &[(9, &[9])]];
        let file = cat(&[
            &ng_section(be, &ifaces, &good),
            &ng_section(!be, &other, &good[..2]),
        ]);
        for cut in 0..file.len() {
            both(&file[..cut], None);
        }
        for step in [1, 3, 64] {
            both(&file, Some(step));
        }
        // A file read to its end without damage.
        let mut r = reader(&file).unwrap();
        let mut records = 0;
        while r.next_record().unwrap().is_some() {
            records += 1;
        }
        // The section's blocks, the simple packet block, the second section's two.
        assert_eq!(records, good.len() + 1 + 2);
    }
    assert_eq!(n, 2 * epbs.len());
}

fn cat(parts: &[&[u8]]) -> Vec<u8> {
    parts.concat()
}
