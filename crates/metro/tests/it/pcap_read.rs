//! The capture reader against the writer (round trips), hand-built pcapng sections,
//! gzip, every truncation of small files, random damage, and the shared corpus with
//! tshark's frame counts.

use std::io::{self, Cursor, Read, Write};
use std::path::{Path, PathBuf};

use metro::pcap::{CaptureReader, Format, NOT_A_PACKET, ReadError};
use metro_testkit::frame::{Payload, TcpFrame};
use metro_testkit::pcap::{Interface, PcapNgWriter, PcapOptions, PcapWriter};

const CORPUS: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared/corpus");

/// An owned copy of a record, to compare whole files.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Rec {
    linktype: u32,
    ts: i64,
    orig_len: u32,
    interface: u32,
    data: Vec<u8>,
}

fn reader(bytes: &[u8]) -> Result<CaptureReader, ReadError> {
    CaptureReader::from_reader(Box::new(Cursor::new(bytes.to_vec())))
}

/// Reads every record; returns them and the error that stopped the reader, if any.
fn read_all(r: &mut CaptureReader) -> (Vec<Rec>, Option<ReadError>) {
    let mut out = Vec::new();
    loop {
        match r.next_record() {
            Ok(Some(rec)) => {
                assert_eq!(rec.caplen as usize, rec.data.len());
                out.push(Rec {
                    linktype: rec.linktype,
                    ts: rec.ts,
                    orig_len: rec.orig_len,
                    interface: rec.interface,
                    data: rec.data.to_vec(),
                });
            }
            Ok(None) => return (out, None),
            Err(e) => {
                assert!(
                    r.next_record().unwrap().is_none(),
                    "reader is done after an error"
                );
                return (out, Some(e));
            }
        }
    }
}

fn read_bytes(bytes: &[u8]) -> (Vec<Rec>, Option<ReadError>) {
    match reader(bytes) {
        Ok(mut r) => read_all(&mut r),
        Err(e) => (Vec::new(), Some(e)),
    }
}

/// A few frames of different shapes with varied timestamps (including before 1970).
fn sample_frames() -> Vec<(i64, Vec<u8>)> {
    let blocks = [(100, 200)];
    vec![
        (
            1_700_000_000_123_456_789,
            TcpFrame::v4([10, 0, 0, 1], 1000, [10, 0, 0, 2], 80)
                .mss(1460)
                .to_vec(),
        ),
        (
            1_700_000_000_123_457_000,
            TcpFrame::v4([10, 0, 0, 2], 80, [10, 0, 0, 1], 1000)
                .sack(&blocks)
                .to_vec(),
        ),
        (
            1_700_000_001_000_000_999,
            TcpFrame::v6(
                [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1],
                5,
                [0; 16],
                6,
            )
            .payload(Payload::Pattern {
                len: 1000,
                start: 3,
            })
            .to_vec(),
        ),
        (
            0,
            TcpFrame::v4([1, 1, 1, 1], 1, [2, 2, 2, 2], 2)
                .raw_ip()
                .to_vec(),
        ),
        (5, vec![]),
    ]
}

fn write_pcap(opts: PcapOptions, frames: &[(i64, Vec<u8>)]) -> Vec<u8> {
    let mut w = PcapWriter::new(Vec::new(), opts).unwrap();
    for (ts, data) in frames {
        w.write_packet(*ts, data, data.len() as u32 + 4).unwrap();
    }
    w.into_inner().unwrap()
}

#[test]
fn pcap_round_trip_all_resolutions_and_byte_orders() {
    let frames = sample_frames();
    for nanos in [false, true] {
        for big_endian in [false, true] {
            let opts = PcapOptions {
                linktype: 1,
                snaplen: 65535,
                nanos,
                big_endian,
            };
            let bytes = write_pcap(opts, &frames);
            let mut r = reader(&bytes).unwrap();
            assert_eq!(
                r.format(),
                Format::Pcap {
                    nanos,
                    big_endian,
                    modified: false
                }
            );
            assert_eq!(r.offset(), 24);
            let (recs, err) = read_all(&mut r);
            assert!(err.is_none(), "{err:?}");
            assert_eq!(recs.len(), frames.len());
            assert_eq!(r.records(), frames.len() as u64);
            assert_eq!(r.offset(), bytes.len() as u64);
            assert_eq!(r.compressed_bytes_read(), bytes.len() as u64);
            for (rec, (ts, data)) in recs.iter().zip(&frames) {
                let want_ts = if nanos {
                    *ts
                } else {
                    ts.div_euclid(1000) * 1000
                };
                assert_eq!(rec.ts, want_ts);
                assert_eq!(&rec.data, data);
                assert_eq!(rec.orig_len, data.len() as u32 + 4);
                assert_eq!((rec.linktype, rec.interface), (1, 0));
            }
        }
    }
}

#[test]
fn pcap_writer_snaplen_cut_reads_back() {
    let frames = sample_frames();
    let bytes = write_pcap(
        PcapOptions {
            linktype: 1,
            snaplen: 60,
            nanos: false,
            big_endian: false,
        },
        &frames,
    );
    let (recs, err) = read_bytes(&bytes);
    assert!(err.is_none());
    assert_eq!(recs[2].data.len(), 60);
    assert_eq!(recs[2].orig_len, frames[2].1.len() as u32 + 4);
}

#[test]
fn modified_pcap_by_hand() {
    // Kuznetzov's format, big-endian: 24-byte record headers (ifindex, protocol, type, pad).
    let mut f = Vec::new();
    f.extend_from_slice(&[0xa1, 0xb2, 0xcd, 0x34, 0, 2, 0, 4]);
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&65535u32.to_be_bytes());
    f.extend_from_slice(&1u32.to_be_bytes());
    for i in 0..3u8 {
        f.extend_from_slice(&(100 + u32::from(i)).to_be_bytes());
        f.extend_from_slice(&7u32.to_be_bytes());
        f.extend_from_slice(&3u32.to_be_bytes());
        f.extend_from_slice(&60u32.to_be_bytes());
        f.extend_from_slice(&[0, 0, 0, 2, 0x08, 0x00, 0, 0]);
        f.extend_from_slice(&[i, i, i]);
    }
    let mut r = reader(&f).unwrap();
    assert_eq!(
        r.format(),
        Format::Pcap {
            nanos: false,
            big_endian: true,
            modified: true
        }
    );
    let (recs, err) = read_all(&mut r);
    assert!(err.is_none());
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[2].ts, 102_000_007_000);
    assert_eq!(recs[2].data, vec![2, 2, 2]);
    assert_eq!(recs[2].orig_len, 60);
}

#[test]
fn pcap_header_errors() {
    let mut bad_version = write_pcap(PcapOptions::default(), &[]);
    bad_version[4] = 1;
    let e = reader(&bad_version).err().unwrap();
    assert!(matches!(e, ReadError::Damaged { offset: 4, .. }));
    assert!(e.to_string().contains("version 1.4"), "{e}");

    // The link type's upper bits (FCS length, reserved) are masked off.
    let mut upper = write_pcap(
        PcapOptions {
            linktype: 101,
            ..PcapOptions::default()
        },
        &sample_frames(),
    );
    upper[20..24].copy_from_slice(&0x3030_0065u32.to_le_bytes());
    let (recs, err) = read_bytes(&upper);
    assert!(err.is_none());
    assert!(recs.iter().all(|r| r.linktype == 101));
}

#[test]
fn pcap_damaged_caplen_keeps_earlier_records() {
    let frames = sample_frames();
    let mut bytes = write_pcap(PcapOptions::default(), &frames);
    // Third record: the header after two records.
    let third = 24 + 16 + frames[0].1.len() + 16 + frames[1].1.len();
    bytes[third + 8..third + 12].copy_from_slice(&4_325_376u32.to_le_bytes());
    let (recs, err) = read_bytes(&bytes);
    assert_eq!(recs.len(), 2);
    let err = err.unwrap();
    assert!(
        matches!(err, ReadError::Damaged { offset, .. } if offset == third as u64),
        "{err}"
    );
    assert!(err.to_string().contains("4325376 captured bytes"), "{err}");

    bytes[third + 8..third + 12].copy_from_slice(&3_925_868_813u32.to_le_bytes());
    let (recs, err) = read_bytes(&bytes);
    assert_eq!(recs.len(), 2);
    assert!(err.unwrap().to_string().contains("limit 256 MiB"));
}

#[test]
fn caplen_over_snaplen_is_accepted_like_tshark() {
    // tcptrace's http.dmp: snaplen 1024, frames of 1514 bytes.
    let frames = vec![(1, vec![7u8; 1514])];
    let mut bytes = write_pcap(PcapOptions::default(), &frames);
    bytes[16..20].copy_from_slice(&1024u32.to_le_bytes());
    let (recs, err) = read_bytes(&bytes);
    assert!(err.is_none());
    assert_eq!(recs[0].data.len(), 1514);
}

#[test]
fn record_larger_than_the_buffer() {
    let big = vec![0x5a; 3 << 20];
    let frames = vec![(1, vec![1; 10]), (2, big.clone()), (3, vec![3; 10])];
    let bytes = write_pcap(
        PcapOptions {
            snaplen: 8 << 20,
            ..PcapOptions::default()
        },
        &frames,
    );
    let (recs, err) = read_bytes(&bytes);
    assert!(err.is_none());
    assert_eq!(recs.len(), 3);
    assert_eq!(recs[1].data, big);
    assert_eq!(recs[2].data, vec![3; 10]);
}

/// Hands out at most one byte per read call.
struct Trickle(Cursor<Vec<u8>>);
impl Read for Trickle {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = buf.len().min(1);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn one_byte_reads() {
    let frames = sample_frames();
    let bytes = write_pcap(PcapOptions::default(), &frames);
    let mut r = CaptureReader::from_reader(Box::new(Trickle(Cursor::new(bytes.clone())))).unwrap();
    let (recs, err) = read_all(&mut r);
    assert!(err.is_none());
    assert_eq!(recs.len(), frames.len());
}

/// A pcapng file with two sections (little- then big-endian), interfaces of different
/// link types and resolutions, an offset, every packet block type, and blocks to skip.
fn two_section_pcapng() -> (Vec<u8>, Vec<Rec>) {
    let mut want = Vec::new();
    let mut w = PcapNgWriter::new(Vec::new(), false).unwrap();
    let eth = w.add_interface(Interface::new(1, 0)).unwrap(); // µs by default
    let raw = w.add_interface(Interface::new(101, 0).tsresol(9)).unwrap();
    let f1 = TcpFrame::v4([10, 0, 0, 1], 1, [10, 0, 0, 2], 2).to_vec();
    let f2 = TcpFrame::v4([10, 0, 0, 1], 1, [10, 0, 0, 2], 2)
        .raw_ip()
        .to_vec();
    w.write_packet(eth, 1_600_000_000_000_001_999, &f1, f1.len() as u32)
        .unwrap();
    want.push(Rec {
        linktype: 1,
        ts: 1_600_000_000_000_001_000,
        orig_len: f1.len() as u32,
        interface: 0,
        data: f1.clone(),
    });
    // A name resolution block and an unknown block: skipped.
    w.write_block(4, &[0, 0, 0, 0]).unwrap();
    w.write_block(0x1234, &[1, 2, 3]).unwrap();
    w.write_packet(raw, 1_600_000_000_000_001_999, &f2, 1500)
        .unwrap();
    want.push(Rec {
        linktype: 101,
        ts: 1_600_000_000_000_001_999,
        orig_len: 1500,
        interface: 1,
        data: f2.clone(),
    });
    // A simple packet block: interface 0, no time stamp (the previous record's is kept).
    w.write_simple_packet(&f1, f1.len() as u32).unwrap();
    want.push(Rec {
        linktype: 1,
        ts: 1_600_000_000_000_001_999,
        orig_len: f1.len() as u32,
        interface: 0,
        data: f1.clone(),
    });
    // A custom block counts as a frame in tshark; its data follows the enterprise number.
    w.write_block(0xbad, &[0, 0, 0x7e, 0xd9, 9, 9, 9, 9])
        .unwrap();
    want.push(Rec {
        linktype: NOT_A_PACKET,
        ts: 1_600_000_000_000_001_999,
        orig_len: 4,
        interface: 0,
        data: vec![9, 9, 9, 9],
    });
    // Second section, big-endian: a 1/1024 s interface with a 100 s offset, snaplen 40.
    w.section(true).unwrap();
    let bin = w
        .add_interface(Interface::new(1, 40).tsresol(0x8a).tsoffset(100))
        .unwrap();
    w.write_packet(bin, 1_000_500_000_000, &f1, f1.len() as u32)
        .unwrap();
    want.push(Rec {
        linktype: 1,
        ts: 1_000_500_000_000,
        orig_len: f1.len() as u32,
        interface: 0,
        data: f1[..40].to_vec(),
    });
    // Simple packet block cut to the snaplen.
    w.write_simple_packet(&f1, f1.len() as u32).unwrap();
    want.push(Rec {
        linktype: 1,
        ts: 1_000_500_000_000,
        orig_len: f1.len() as u32,
        interface: 0,
        data: f1[..40].to_vec(),
    });
    // Obsolete packet block (type 2): u16 interface, u16 drops, then as EPB.
    let mut pb = Vec::new();
    pb.extend_from_slice(&0u16.to_be_bytes());
    pb.extend_from_slice(&0u16.to_be_bytes());
    let units: u64 = (101 << 10) + 512; // 101.5 s in 1/1024 s, minus the 100 s offset
    pb.extend_from_slice(&((units >> 32) as u32).to_be_bytes());
    pb.extend_from_slice(&(units as u32).to_be_bytes());
    pb.extend_from_slice(&3u32.to_be_bytes());
    pb.extend_from_slice(&70u32.to_be_bytes());
    pb.extend_from_slice(&[4, 5, 6]);
    w.write_block(2, &pb).unwrap();
    want.push(Rec {
        linktype: 1,
        ts: 201_500_000_000,
        orig_len: 70,
        interface: 0,
        data: vec![4, 5, 6],
    });
    (w.into_inner().unwrap(), want)
}

#[test]
fn pcapng_two_sections_two_interfaces() {
    let (bytes, want) = two_section_pcapng();
    let mut r = reader(&bytes).unwrap();
    assert_eq!(r.format(), Format::PcapNg);
    let (recs, err) = read_all(&mut r);
    assert!(err.is_none(), "{err:?}");
    assert_eq!(recs, want);
    assert_eq!(r.offset(), bytes.len() as u64);
}

#[test]
fn pcapng_damage() {
    let (bytes, _) = two_section_pcapng();
    // First EPB starts after SHB (28) and two IDBs (20 and 32 bytes).
    let epb = 28 + 20 + 32;
    assert_eq!(&bytes[epb..epb + 4], &6u32.to_le_bytes());

    let mut wrong_trailer = bytes.clone();
    let len = u32::from_le_bytes(bytes[epb + 4..epb + 8].try_into().unwrap()) as usize;
    wrong_trailer[epb + len - 4] ^= 0x40;
    let (recs, err) = read_bytes(&wrong_trailer);
    assert!(recs.is_empty());
    let err = err.unwrap();
    assert!(
        matches!(err, ReadError::Damaged { offset, .. } if offset == epb as u64),
        "{err}"
    );
    assert!(err.to_string().contains("at its start but"), "{err}");

    let mut bad_iface = bytes.clone();
    bad_iface[epb + 8] = 7;
    let err = read_bytes(&bad_iface).1.unwrap();
    assert!(
        err.to_string()
            .contains("interface 7, but its section describes 2"),
        "{err}"
    );

    let mut odd_len = bytes.clone();
    odd_len[epb + 4] += 1;
    let err = read_bytes(&odd_len).1.unwrap();
    assert!(err.to_string().contains("not a multiple of 4"), "{err}");

    let mut too_much = bytes.clone();
    too_much[epb + 20..epb + 24].copy_from_slice(&1000u32.to_le_bytes());
    let err = read_bytes(&too_much).1.unwrap();
    assert!(err.to_string().contains("more than it holds"), "{err}");

    let mut version = bytes.clone();
    version[12] = 2;
    let err = read_bytes(&version).1.unwrap();
    assert!(err.to_string().contains("version 2.0"), "{err}");
}

#[test]
fn gzip_single_and_multi_member() {
    use flate2::{Compression, write::GzEncoder};
    let frames = sample_frames();
    let plain = write_pcap(PcapOptions::default(), &frames);
    let gz = |part: &[u8]| {
        let mut e = GzEncoder::new(Vec::new(), Compression::fast());
        e.write_all(part).unwrap();
        e.finish().unwrap()
    };
    let one = gz(&plain);
    let mut two = gz(&plain[..100]);
    two.extend_from_slice(&gz(&plain[100..]));
    for bytes in [one, two] {
        let mut r = reader(&bytes).unwrap();
        assert!(r.gzipped());
        let (recs, err) = read_all(&mut r);
        assert!(err.is_none());
        assert_eq!(recs, read_bytes(&plain).0);
        assert_eq!(r.offset(), plain.len() as u64);
        assert_eq!(r.compressed_bytes_read(), bytes.len() as u64);
    }
    // Not a capture inside: the message says the bytes are decompressed ones.
    let e = reader(&gz(b"hello, world")).err().unwrap();
    assert_eq!(
        e.to_string(),
        "not a pcap or pcapng file (first bytes after gzip decompression: 68 65 6c 6c 6f 2c 20 77 6f 72 6c 64)"
    );
    // A gzip file cut short: the records before the cut, then an error.
    let one = gz(&plain);
    let (recs, err) = read_bytes(&one[..one.len() - 30]);
    assert!(err.is_some());
    assert!(recs.len() < frames.len());
}

/// Cuts `bytes` at every length and checks: no panic; a cut at a record boundary is a
/// clean end; any other cut returns every complete record, then Truncated at the offset
/// of the cut record (or a header error before the first record).
fn check_every_truncation(bytes: &[u8], boundaries: &[usize]) {
    let full = read_bytes(bytes).0;
    assert_eq!(full.len() + 1, boundaries.len());
    for cut in 0..bytes.len() {
        let part = &bytes[..cut];
        let mut r = match reader(part) {
            Ok(r) => r,
            Err(e) => {
                assert!(cut < boundaries[0], "cut {cut}: header error {e}");
                continue;
            }
        };
        let (recs, err) = read_all(&mut r);
        let complete = boundaries[1..].iter().filter(|&&b| b <= cut).count();
        assert_eq!(recs.len(), complete.min(full.len()), "cut {cut}");
        assert_eq!(recs[..], full[..recs.len()], "cut {cut}");
        if boundaries.contains(&cut) {
            assert!(err.is_none(), "cut {cut} on a boundary: {err:?}");
        } else {
            let at = boundaries
                .iter()
                .copied()
                .filter(|&b| b <= cut)
                .max()
                .unwrap();
            match err {
                Some(ReadError::Truncated { offset, .. }) => {
                    assert_eq!(offset, at as u64, "cut {cut}")
                }
                other => panic!("cut {cut}: {other:?}"),
            }
        }
    }
}

#[test]
fn pcap_truncated_at_each_byte() {
    let frames = sample_frames();
    let bytes = write_pcap(PcapOptions::default(), &frames);
    let mut boundaries = vec![24];
    for (_, d) in &frames {
        boundaries.push(boundaries.last().unwrap() + 16 + d.len());
    }
    check_every_truncation(&bytes, &boundaries);
}

#[test]
fn pcapng_truncated_at_each_byte() {
    let (bytes, _) = two_section_pcapng();
    // Walk the blocks: every block start, and the ends of the blocks that are records.
    let (mut block_starts, mut record_ends) = (Vec::new(), Vec::new());
    let (mut at, mut be) = (0usize, false);
    while at < bytes.len() {
        if bytes[at..at + 4] == [0x0a, 0x0d, 0x0d, 0x0a] {
            be = bytes[at + 8] == 0x1a;
        }
        let rd = |o: usize| {
            let v: [u8; 4] = bytes[o..o + 4].try_into().unwrap();
            if be {
                u32::from_be_bytes(v)
            } else {
                u32::from_le_bytes(v)
            }
        };
        let (t, len) = (rd(at), rd(at + 4) as usize);
        block_starts.push(at);
        if matches!(t, 2 | 3 | 6 | 0xbad) {
            record_ends.push(at + len);
        }
        at += len;
    }
    let full = read_bytes(&bytes).0;
    assert_eq!(full.len(), record_ends.len());
    for cut in 0..bytes.len() {
        let part = &bytes[..cut];
        let (recs, err) = read_bytes(part);
        assert_eq!(recs[..], full[..recs.len()], "cut {cut}");
        let complete = record_ends.iter().filter(|&&e| e <= cut).count();
        assert_eq!(recs.len(), complete, "cut {cut}");
        // The cut lies in the last block that starts before it (or at a boundary).
        let block = block_starts
            .iter()
            .copied()
            .filter(|&b| b <= cut)
            .max()
            .unwrap();
        match err {
            None => assert!(
                block == cut && cut > 0,
                "cut {cut}: clean end inside a block"
            ),
            Some(ReadError::NotACapture { .. }) => assert!(cut < 4, "cut {cut}"),
            Some(ReadError::Truncated { offset, .. }) => {
                assert_ne!(block, cut, "cut {cut} on a block boundary");
                assert_eq!(offset, block as u64, "cut {cut}");
            }
            Some(e) => panic!("cut {cut}: {e}"),
        }
    }
}

#[test]
fn corpus_files_truncated_at_each_byte() {
    // pcap big-endian, modified pcap, pcapng with three sections in both byte orders, snoop.
    for (name, limit) in [
        ("tcptrace__tcp.dmp", usize::MAX),
        ("pcap-parser__modified-format.pcap", usize::MAX),
        ("pcapng-test-generator__le-test202.pcapng", usize::MAX),
        ("tcptrace__all.snoop", 2000),
    ] {
        let bytes = std::fs::read(Path::new(CORPUS).join(name)).unwrap();
        let bytes = &bytes[..bytes.len().min(limit)];
        // Where each record ends, from the reader's own offset.
        let mut r = reader(bytes).unwrap();
        let mut ends = Vec::new();
        let mut full = Vec::new();
        while let Ok(Some(rec)) = r.next_record() {
            full.push(rec.data.to_vec());
            ends.push(r.offset() as usize);
        }
        for cut in 0..bytes.len() {
            let (recs, err) = read_bytes(&bytes[..cut]);
            let complete = ends.iter().filter(|&&e| e <= cut).count();
            assert_eq!(recs.len(), complete, "{name} cut {cut}");
            for (a, b) in recs.iter().zip(&full) {
                assert_eq!(&a.data, b, "{name} cut {cut}");
            }
            if let Some(ReadError::Truncated { offset, .. }) = err {
                let last_end = ends
                    .iter()
                    .copied()
                    .filter(|&e| e <= cut)
                    .max()
                    .unwrap_or(0);
                assert!(
                    offset as usize >= last_end && offset as usize <= cut,
                    "{name} cut {cut}"
                );
            }
        }
    }
}

/// A small deterministic generator, so damage tests are reproducible.
struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

#[test]
fn random_damage_never_panics() {
    let (ng, _) = two_section_pcapng();
    let pcap = write_pcap(PcapOptions::default(), &sample_frames());
    let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
    for base in [ng, pcap] {
        for _ in 0..3000 {
            let mut b = base.clone();
            for _ in 0..1 + rng.next() % 4 {
                let i = (rng.next() as usize) % b.len();
                b[i] = rng.next() as u8;
            }
            if let Ok(mut r) = reader(&b) {
                let _ = read_all(&mut r);
            }
        }
    }
}

struct ManifestRow {
    file: String,
    packets: u64,
    tshark_error: bool,
}

fn manifest() -> Vec<ManifestRow> {
    let text =
        std::fs::read_to_string(Path::new(CORPUS).join("manifest.tsv")).expect("corpus manifest");
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().unwrap().split('\t').collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    let (file, packets, features) = (col("file"), col("packets"), col("features"));
    lines
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            ManifestRow {
                file: f[file].to_string(),
                packets: f[packets].parse().unwrap(),
                tshark_error: f[features].split_whitespace().any(|w| w == "tshark-error"),
            }
        })
        .collect()
}

fn read_file(path: &Path) -> (u64, Result<(), ReadError>) {
    let mut r = match CaptureReader::open(path) {
        Ok(r) => r,
        Err(e) => return (0, Err(e)),
    };
    let mut n = 0;
    loop {
        match r.next_record() {
            Ok(Some(rec)) => {
                assert_eq!(rec.caplen as usize, rec.data.len());
                n += 1;
            }
            Ok(None) => return (n, Ok(())),
            Err(e) => return (n, Err(e)),
        }
    }
}

#[test]
fn corpus_matches_tshark_frame_counts() {
    let rows = manifest();
    assert!(rows.len() > 100);
    let mut failures = Vec::new();
    for row in &rows {
        let path: PathBuf = Path::new(CORPUS).join(&row.file);
        let (n, res) = read_file(&path);
        match &res {
            Ok(()) => eprintln!("{:60} {n:6} records", row.file),
            Err(e) => eprintln!("{:60} {n:6} records, then: {e}", row.file),
        }
        if !row.tshark_error {
            let unsupported = matches!(res, Err(ReadError::UnsupportedFormat { .. }));
            if !unsupported && (res.is_err() || n != row.packets) {
                failures.push(format!(
                    "{}: {n} records (tshark {}), {res:?}",
                    row.file, row.packets
                ));
            }
        } else if n != row.packets && row.packets > 0 {
            // tshark stopped with an error; we should have returned the same records first.
            failures.push(format!(
                "{}: {n} records before the error (tshark {})",
                row.file, row.packets
            ));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

fn corpus_error(name: &str) -> ReadError {
    let (_, res) = read_file(&Path::new(CORPUS).join(name));
    res.expect_err(name)
}

#[test]
fn corpus_errors_say_what_is_wrong() {
    let e = corpus_error("libpcap__pcap-invalid-version-1.pcap");
    assert_eq!(
        e.to_string(),
        "damaged at byte offset 4: the pcap file header says version 1.4; pcap files are version 2.4 \
         (2.0 to 2.4 and DG/UX 543.0 are read)"
    );
    let e = corpus_error("libpcap__pcapng-invalid-vers-1.pcapng");
    assert!(
        e.to_string().contains("section header says version 0.1"),
        "{e}"
    );
    let e = corpus_error("libpcap__shb-option-too-long.pcapng");
    assert!(matches!(e, ReadError::Damaged { offset: 24, .. }), "{e}");
    assert!(
        e.to_string()
            .contains("claims 12336 bytes, but only 20 bytes are left"),
        "{e}"
    );
    let e = corpus_error("suricata-verify__10.7.29.101_49898-178.63.41.150_25.pcap");
    assert!(matches!(e, ReadError::Damaged { offset: 3695, .. }), "{e}");
    let e = corpus_error("suricata-verify__http-mime-truncated__input.pcap");
    assert!(matches!(e, ReadError::Truncated { .. }), "{e}");
    let e = corpus_error("tcptrace__eth.erf");
    assert!(
        e.to_string()
            .starts_with("ERF (Endace) capture: metro reads pcap and pcapng"),
        "{e}"
    );
}

#[test]
fn etherpeek_classic_is_read() {
    // tshark 4.0 on tcptrace__reno.epeek: 1000 frames; the first three are stamped
    // 869040884.000 with frame/captured lengths 70/70, 530/100, 530/100; the last is stamped
    // 869040892.000000000 (`tshark -T fields -e frame.time_epoch -e frame.len -e frame.cap_len`).
    let mut r = CaptureReader::open(&Path::new(CORPUS).join("tcptrace__reno.epeek")).unwrap();
    assert_eq!(r.format(), metro::pcap::Format::EtherPeek);
    let mut n = 0u64;
    let mut last_ts = 0;
    let expect = [(70u32, 70u32), (530, 100), (530, 100)];
    while let Some(rec) = r.next_record().unwrap() {
        if let Some(&(len, cap)) = expect.get(n as usize) {
            assert_eq!((rec.orig_len, rec.caplen), (len, cap));
            assert_eq!(rec.ts, 869_040_884_000_000_000);
            assert_eq!(rec.linktype, 1);
        }
        last_ts = rec.ts;
        n += 1;
    }
    assert_eq!(n, 1000);
    assert_eq!(last_ts, 869_040_892_000_000_000);
}

#[test]
fn corpus_formats_and_first_records() {
    let open = |name: &str| CaptureReader::open(&Path::new(CORPUS).join(name)).unwrap();
    let mut r = open("tcptrace__pcap_v2.2.dmp");
    let rec = r.next_record().unwrap().unwrap();
    assert_eq!((rec.caplen, rec.orig_len, rec.linktype), (68, 82, 1));
    assert_eq!(rec.ts, 0x3301_0e15 * 1_000_000_000 + 0x000c_7e4a * 1000);

    let mut r = open("zeek__tls-fragmented-handshake.pcap.gz");
    assert!(r.gzipped());
    assert_eq!(
        r.format(),
        Format::Pcap {
            nanos: false,
            big_endian: false,
            modified: false
        }
    );
    while r.next_record().unwrap().is_some() {}
    let size = std::fs::metadata(Path::new(CORPUS).join("zeek__tls-fragmented-handshake.pcap.gz"))
        .unwrap()
        .len();
    assert_eq!(r.compressed_bytes_read(), size);

    let mut r = open("tcptrace__all.snoop");
    assert_eq!(r.format(), Format::Snoop);
    let rec = r.next_record().unwrap().unwrap();
    assert_eq!((rec.caplen, rec.orig_len, rec.linktype), (54, 62, 1));
    assert_eq!(rec.ts, 0x2d7d_37ab * 1_000_000_000 + 0x000e_e0bf * 1000);

    let mut r = open("pcap-parser__modified-format.pcap");
    assert_eq!(
        r.format(),
        Format::Pcap {
            nanos: false,
            big_endian: false,
            modified: true
        }
    );
    let rec = r.next_record().unwrap().unwrap();
    assert_eq!((rec.caplen, rec.linktype), (98, 1));

    let mut r = open("PcapPlusPlus__nanosecs_big_endian.pcap");
    assert_eq!(
        r.format(),
        Format::Pcap {
            nanos: true,
            big_endian: true,
            modified: false
        }
    );
    assert!(r.next_record().unwrap().is_some());

    // Interfaces with different link types in one pcapng file.
    let mut r = open("PcapPlusPlus__many_interfaces-1.pcapng");
    let mut seen = std::collections::BTreeSet::new();
    while let Some(rec) = r.next_record().unwrap() {
        seen.insert((rec.interface, rec.linktype));
    }
    assert!(
        seen.contains(&(10, 0)) && seen.contains(&(0, 1)),
        "{seen:?}"
    );
}

/// Frame count, captured and original length sums and time stamps of every corpus file,
/// against tshark's (tests/data/pcap/tshark-frames.tsv, generated once with tshark 4.0.17).
#[test]
fn corpus_matches_tshark_lengths_and_times() {
    let reference = include_str!("../data/pcap/tshark-frames.tsv");
    let mut checked = 0;
    let mut failures = Vec::new();
    for line in reference.lines().filter(|l| !l.starts_with('#')).skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        let (file, frames, caplen_sum, len_sum) = (f[0], f[1], f[2], f[3]);
        let mut r = match CaptureReader::open(&Path::new(CORPUS).join(file)) {
            Ok(r) => r,
            Err(e) => {
                if frames != "0" {
                    failures.push(format!("{file}: {e}"));
                }
                continue;
            }
        };
        let (mut n, mut caps, mut lens, mut first, mut last, mut sum) =
            (0u64, 0u64, 0u64, None, 0i64, 0i128);
        while let Ok(Some(rec)) = r.next_record() {
            n += 1;
            caps += u64::from(rec.caplen);
            lens += u64::from(rec.orig_len);
            first.get_or_insert(rec.ts);
            last = rec.ts;
            sum += i128::from(rec.ts);
        }
        let mut got = vec![n.to_string(), caps.to_string(), lens.to_string()];
        let mut want = vec![frames, caplen_sum, len_sum];
        if f[4] != "-" {
            got.extend([
                first.unwrap().to_string(),
                last.to_string(),
                sum.to_string(),
            ]);
            want.extend([f[4], f[5], f[6]]);
        }
        if got != want {
            failures.push(format!("{file}: metro {got:?}, tshark {want:?}"));
        }
        checked += 1;
    }
    assert!(checked > 140, "{checked}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
