//! Telling formats apart: the magic numbers (and, for EtherPeek, the plausibility) of the
//! first bytes choose the parser, which consumes its file header; formats metro does not
//! read are named from their magic numbers or, for ERF, from its record headers.

use super::input::{Hints, Input};
use super::{Format, ReadError, State, pcap, pcapng, peek, snoop};

/// Recognises the format from the first bytes and consumes the file header.
pub(super) fn detect(input: &mut Input, hints: Hints) -> Result<(State, Format), ReadError> {
    if input.avail() == 0 {
        return Err(ReadError::NotACapture {
            what: if hints.gzipped {
                "the gzip stream decompresses to nothing".into()
            } else {
                "the file is empty".into()
            },
        });
    }
    let head = input.bytes();
    if head.len() >= 4 {
        let le = u32::from_le_bytes([head[0], head[1], head[2], head[3]]);
        let be = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        for (magic, big_endian) in [(le, false), (be, true)] {
            let (nanos, modified) = match magic {
                0xa1b2_c3d4 => (false, false),
                0xa1b2_3c4d => (true, false),
                0xa1b2_cd34 => (false, true),
                _ => continue,
            };
            return pcap::header(input, big_endian, nanos, modified);
        }
        if le == pcapng::NG_SHB {
            return pcapng::header(input);
        }
    }
    if head.starts_with(b"snoop\0\0\0") {
        return snoop::header(input);
    }
    if let Some(found) = peek::header(input, hints) {
        return found;
    }
    // Not a format we read: look at more bytes to name it.
    let _ = input.fill(4096);
    let head = input.bytes();
    if let Some(name) = recognise_other(head, hints) {
        return Err(ReadError::UnsupportedFormat { name });
    }
    let shown = &head[..head.len().min(16)];
    let after_gzip = if hints.gzipped {
        " after gzip decompression"
    } else {
        ""
    };
    let what = if head.len() < 4 {
        format!(
            "the file is only {} bytes long{after_gzip}: {}",
            head.len(),
            hex(shown)
        )
    } else {
        format!("first bytes{after_gzip}: {}", hex(shown))
    };
    Err(ReadError::NotACapture { what })
}

/// Names formats metro does not read, from their magic numbers or, for ERF, which has
/// none, from the plausibility of the first record headers.
fn recognise_other(b: &[u8], hints: Hints) -> Option<&'static str> {
    let magics: &[(&[u8], &'static str)] = &[
        (b"\x7fver", "EtherPeek/AiroPeek tagged (.pkt)"),
        (b"GMBU", "Microsoft Network Monitor 2"),
        (b"RTSS", "Microsoft Network Monitor 1"),
        (b"iptrace ", "AIX iptrace"),
        (b"TRSNIFF data    \x1a", "Sniffer (DOS)"),
        (b"XCP\0", "NetXRay / Sniffer for Windows"),
        (b"\x28\xb5\x2f\xfd", "zstd-compressed"),
        (b"\xfd7zXZ\0", "xz-compressed"),
        (b"BZh", "bzip2-compressed"),
        (b"\x04\x22\x4d\x18", "lz4-compressed"),
    ];
    for (magic, name) in magics {
        if b.starts_with(magic) {
            return Some(name);
        }
    }
    // EtherPeek/AiroPeek V5-7: a 2-byte master header (version, status 0), then a
    // big-endian file length.
    if b.len() >= 128 && (5..=7).contains(&b[0]) && b[1] == 0 {
        let file_len = u64::from(u32::from_be_bytes([b[2], b[3], b[4], b[5]]));
        if hints
            .file_size
            .map_or(file_len >= 128, |size| size == file_len)
        {
            return Some("EtherPeek/AiroPeek");
        }
    }
    if hints.name_says_erf || erf_plausible(b) {
        return Some("ERF (Endace)");
    }
    None
}

/// ERF records have a 16-byte header: 8-byte little-endian time stamp, type, flags,
/// big-endian record length and wire length. Call it ERF if the first record is sane and
/// the second (if present) is too, with a time stamp within a day of the first.
fn erf_plausible(b: &[u8]) -> bool {
    let rec = |at: usize| -> Option<(usize, u32)> {
        let h = b.get(at..at + 16)?;
        let ty = h[8] & 0x7f;
        let rlen = usize::from(u16::from_be_bytes([h[10], h[11]]));
        let secs = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        ((1..=48).contains(&ty) && rlen >= 16 + 4).then_some((rlen, secs))
    };
    let Some((rlen, secs)) = rec(0) else {
        return false;
    };
    if b.len() == rlen {
        return true;
    }
    match rec(rlen) {
        Some((_, secs2)) => secs.abs_diff(secs2) < 86_400,
        None => false,
    }
}

fn hex(bytes: &[u8]) -> String {
    let mut s = String::new();
    for (i, b) in bytes.iter().enumerate() {
        if i > 0 {
            s.push(' ');
        }
        s.push_str(&format!("{b:02x}"));
    }
    s
}
