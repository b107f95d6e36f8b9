//! The streaming capture reader: pcap (µs/ns, both byte orders, "modified"/Kuznetzov,
//! the old 2.0–2.3 and DG/UX headers), pcapng (sections, interfaces, EPB/SPB/obsolete PB)
//! and Sun snoop, plain or gzip-compressed (detected by content). Other formats
//! (ERF, EtherPeek, Network Monitor, zstd/xz/bzip2/lz4 files, ...) are recognised and
//! named in the error.
//!
//! The reader owns one reusable buffer (1 MiB, grown only for a record larger than that
//! and never beyond [`MAX_RECORD`] plus a little), reads the source in large chunks and
//! hands out records as slices of that buffer: no per-record allocation or system call.
//!
//! Record numbering follows tshark's `frame.number`: every record counts, in file order.
//! In pcapng that means EPB, SPB and the obsolete Packet Block, and also custom blocks and
//! systemd journal export blocks, which Wireshark presents as frames; those come out with
//! linktype [`NOT_A_PACKET`] so that the n-th record is tshark's frame n.
//!
//! Where the file is damaged or cut short, the records before the damage are returned
//! first; the next call returns the error, and every call after that returns `Ok(None)`.

use std::fmt;
use std::fs::File;
use std::io::{self, Cursor, Read};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::MultiGzDecoder;

/// Records larger than this are treated as damage, whatever the file's snaplen says.
pub const MAX_RECORD: u32 = 256 << 20;
/// Wireshark's limit for ordinary link types. A record larger than both this and the
/// file's snaplen is damage; one that is only larger than the snaplen is accepted, as
/// tshark does (tcptrace's `http.dmp` says snaplen 1024 and holds 1514-byte frames).
const STANDARD_MAX_SNAPLEN: u32 = 262_144;
/// Linktype of records that are not packets (pcapng custom and systemd journal blocks).
/// They exist so that record numbers match tshark's frame numbers; skip them.
pub const NOT_A_PACKET: u32 = u32::MAX;

/// Interfaces one pcapng section may describe. Each costs a few bytes of state for the
/// rest of the section, and an interface description block is 20 bytes that compress to
/// almost nothing: without a limit a small gzip'd file makes the reader hold gigabytes.
/// Real captures describe a handful (a host's interfaces, a few hundred on a router).
pub const MAX_INTERFACES: usize = 1 << 16;
/// Record times must lie within this many nanoseconds of 1970 (about 146 years: 1824 to
/// 2116): then the difference of any two fits in an `i64` and no RTT can come from
/// arithmetic that wrapped. pcap and snoop headers cannot exceed it (32-bit seconds); a
/// pcapng time stamp with its resolution and offset can.
pub const MAX_ABS_TS: i64 = 1 << 62;

const DEFAULT_BUFFER: usize = 1 << 20;
/// Largest buffer: the largest record plus its headers, rounded up.
const MAX_BUFFER: usize = MAX_RECORD as usize + (1 << 16);

/// One captured frame (or, with linktype [`NOT_A_PACKET`], one non-packet record).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// LINKTYPE_* value (<https://www.tcpdump.org/linktypes.html>), or [`NOT_A_PACKET`].
    pub linktype: u32,
    /// Nanoseconds since the Unix epoch. Records without a time stamp (pcapng SPB, custom
    /// blocks) carry the previous record's time (0 before the first).
    /// Always within [`MAX_ABS_TS`] of 0: the difference of two never overflows.
    pub ts: i64,
    /// Bytes captured (`data.len()`).
    pub caplen: u32,
    /// Length of the packet on the wire (may be less than `caplen` in damaged files).
    pub orig_len: u32,
    /// pcapng interface id; 0 for pcap and snoop.
    pub interface: u32,
    pub data: &'a [u8],
}

/// The container format of the (decompressed) stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Classic pcap. `modified` is Alexey Kuznetzov's variant with 24-byte record headers.
    Pcap {
        nanos: bool,
        big_endian: bool,
        modified: bool,
    },
    /// pcapng; byte order is per section.
    PcapNg,
    /// Sun snoop version 2 (RFC 1761), Ethernet only.
    Snoop,
    /// EtherPeek classic (versions 5 and 6), Ethernet only.
    EtherPeek,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Format::Pcap {
                nanos,
                big_endian,
                modified,
            } => write!(
                f,
                "{}pcap ({}, {})",
                if modified { "modified " } else { "" },
                if nanos { "ns" } else { "µs" },
                if big_endian {
                    "big-endian"
                } else {
                    "little-endian"
                }
            ),
            Format::PcapNg => f.write_str("pcapng"),
            Format::Snoop => f.write_str("snoop"),
            Format::EtherPeek => f.write_str("EtherPeek"),
        }
    }
}

/// Why a capture could not be read (further). Messages name the byte offset in the
/// (decompressed) stream; the caller adds the file name.
#[derive(Debug)]
pub enum ReadError {
    /// The source failed (or the gzip stream is corrupt).
    Io { offset: u64, source: io::Error },
    /// No capture format recognised; `what` describes the first bytes.
    NotACapture { what: String },
    /// A capture format metro recognises but does not read.
    UnsupportedFormat { name: &'static str },
    /// The file ends inside a header or record that starts at `offset`.
    Truncated { offset: u64, what: String },
    /// A header or record at `offset` is inconsistent.
    Damaged { offset: u64, what: String },
}

impl fmt::Display for ReadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReadError::Io { offset, source } => {
                write!(f, "read error at byte offset {offset}: {source}")
            }
            ReadError::NotACapture { what } => write!(f, "not a pcap or pcapng file ({what})"),
            ReadError::UnsupportedFormat { name } => match compression_tool(name) {
                Some(tool) => write!(
                    f,
                    "{name} file: metro reads pcap and pcapng, plain or gzip-compressed; decompress it with `{tool}`"
                ),
                None => write!(
                    f,
                    "{name} capture: metro reads pcap and pcapng; convert it with `editcap -F pcap IN OUT`"
                ),
            },
            ReadError::Truncated { offset, what } => {
                write!(f, "cut short at byte offset {offset}: {what}")
            }
            ReadError::Damaged { offset, what } => {
                write!(f, "damaged at byte offset {offset}: {what}")
            }
        }
    }
}

impl std::error::Error for ReadError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ReadError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

fn compression_tool(name: &str) -> Option<&'static str> {
    match name {
        "zstd-compressed" => Some("zstd -d"),
        "xz-compressed" => Some("xz -d"),
        "bzip2-compressed" => Some("bzip2 -d"),
        "lz4-compressed" => Some("lz4 -d"),
        _ => None,
    }
}

/// Counts bytes read from the underlying source, for [`CaptureReader::compressed_bytes_read`].
struct Counting<R> {
    inner: R,
    count: Arc<AtomicU64>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.fetch_add(n as u64, Ordering::Relaxed);
        Ok(n)
    }
}

/// The reusable input buffer: `buf[start..end]` holds bytes not yet consumed; `base` is
/// the stream offset of `buf[0]`.
struct Input {
    src: Box<dyn Read + Send>,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    base: u64,
    eof: bool,
}

impl Input {
    #[inline]
    fn avail(&self) -> usize {
        self.end - self.start
    }

    #[inline]
    fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    #[inline]
    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Makes at least `n` bytes available. Ok(false) if the stream ends first (what there
    /// is stays available). `n` must not exceed [`MAX_BUFFER`].
    fn fill(&mut self, n: usize) -> io::Result<bool> {
        if self.avail() >= n {
            return Ok(true);
        }
        if self.start + n > self.buf.len() {
            // Move the unconsumed tail to the front.
            self.buf.copy_within(self.start..self.end, 0);
            self.base += self.start as u64;
            self.end -= self.start;
            self.start = 0;
            // Give back what one huge record took, once it is consumed.
            if self.buf.len() > DEFAULT_BUFFER && n <= DEFAULT_BUFFER && self.end <= DEFAULT_BUFFER
            {
                self.buf.truncate(DEFAULT_BUFFER);
                self.buf.shrink_to_fit();
            }
        }
        while self.avail() < n {
            if self.eof {
                return Ok(false);
            }
            if self.end == self.buf.len() {
                // Grow by doubling as data arrives, not to `n` at once: a damaged length
                // near the end of a file must not cost hundreds of MiB.
                let target = n.next_power_of_two().min(MAX_BUFFER).max(n);
                let grown = (self.buf.len() * 2).min(target);
                self.buf.resize(grown, 0);
            }
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(k) => self.end += k,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(true)
    }
}

/// Per-format state.
enum State {
    Pcap(PcapState),
    PcapNg(NgState),
    Snoop,
    /// Seconds since 1970 of the file's base time (record times are milliseconds after it).
    EtherPeek(i64),
}

struct PcapState {
    big_endian: bool,
    nanos: bool,
    hdr_len: usize,
    linktype: u32,
    snaplen: u32,
    swap: LengthsSwapped,
}

/// Versions before 2.3 wrote caplen and len the other way round (libpcap's handling).
#[derive(Clone, Copy, PartialEq, Eq)]
enum LengthsSwapped {
    No,
    Yes,
    /// Version 2.3: swapped if caplen > len.
    Maybe,
}

struct NgState {
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
enum TsConv {
    Mul(u64),
    Div(u64),
    /// Units of 2^-n seconds.
    Pow2(u32),
}

impl TsConv {
    fn from_tsresol(r: u8) -> Option<TsConv> {
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
    fn nanos(self, units: u64) -> i128 {
        let u = i128::from(units as i64);
        match self {
            TsConv::Mul(m) => u * i128::from(m),
            TsConv::Div(d) => u.div_euclid(i128::from(d)),
            // |u| < 2^63, so |u * 10^9| < 2^93: no overflow in i128.
            TsConv::Pow2(e) => (u * 1_000_000_000) >> e.min(127),
        }
    }
}

const NG_SHB: u32 = 0x0a0d_0d0a;
const NG_IDB: u32 = 1;
const NG_PB: u32 = 2;
const NG_SPB: u32 = 3;
const NG_EPB: u32 = 6;
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

#[inline]
fn rd16(b: &[u8], at: usize, be: bool) -> u16 {
    let v: [u8; 2] = b[at..at + 2].try_into().expect("2 bytes");
    if be {
        u16::from_be_bytes(v)
    } else {
        u16::from_le_bytes(v)
    }
}

#[inline]
fn rd32(b: &[u8], at: usize, be: bool) -> u32 {
    let v: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
    if be {
        u32::from_be_bytes(v)
    } else {
        u32::from_le_bytes(v)
    }
}

#[inline]
fn rd64(b: &[u8], at: usize, be: bool) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    if be {
        u64::from_be_bytes(v)
    } else {
        u64::from_le_bytes(v)
    }
}

/// What the caller knows about the source besides its bytes.
#[derive(Clone, Copy, Default)]
struct Hints {
    name_says_erf: bool,
    file_size: Option<u64>,
    gzipped: bool,
}

/// A streaming reader over a pcap, pcapng or snoop capture, plain or gzip-compressed.
pub struct CaptureReader {
    input: Input,
    state: State,
    format: Format,
    gzipped: bool,
    raw_count: Arc<AtomicU64>,
    /// Time of the last record, for records without one.
    last_ts: i64,
    records: u64,
    done: bool,
}

/// Where the current record's data lies in the buffer, and its metadata.
struct Found {
    linktype: u32,
    ts: i64,
    orig_len: u32,
    interface: u32,
    data_at: usize,
    data_len: usize,
}

impl CaptureReader {
    /// Opens a capture file; gzip is detected by content (1f 8b), not by name.
    pub fn open(path: &Path) -> Result<CaptureReader, ReadError> {
        let file = File::open(path).map_err(|source| ReadError::Io { offset: 0, source })?;
        let file_size = file
            .metadata()
            .ok()
            .filter(|m| m.is_file())
            .map(|m| m.len());
        let name_says_erf = path
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("erf"));
        Self::with_hints(
            Box::new(file),
            Hints {
                name_says_erf,
                file_size,
                gzipped: false,
            },
        )
    }

    /// Reads a capture from any byte stream (stdin, a socket, a test vector).
    pub fn from_reader(r: Box<dyn Read + Send>) -> Result<CaptureReader, ReadError> {
        Self::with_hints(r, Hints::default())
    }

    fn with_hints(src: Box<dyn Read + Send>, mut hints: Hints) -> Result<CaptureReader, ReadError> {
        let raw_count = Arc::new(AtomicU64::new(0));
        let src: Box<dyn Read + Send> = Box::new(Counting {
            inner: src,
            count: raw_count.clone(),
        });
        let mut input = Input {
            src,
            buf: vec![0; DEFAULT_BUFFER],
            start: 0,
            end: 0,
            base: 0,
            eof: false,
        };
        let io_err = |source| ReadError::Io { offset: 0, source };
        input.fill(4).map_err(io_err)?;
        let mut gzipped = false;
        if input.bytes().starts_with(&[0x1f, 0x8b]) {
            // Re-read what is buffered through the decompressor, then the rest of the source.
            let prefix = input.bytes().to_vec();
            let rest = std::mem::replace(&mut input.src, Box::new(io::empty()));
            let chained = Cursor::new(prefix).chain(rest);
            input.src = Box::new(MultiGzDecoder::new(chained));
            input.start = 0;
            input.end = 0;
            input.eof = false;
            gzipped = true;
            hints.file_size = None;
            hints.gzipped = true;
            input.fill(4).map_err(io_err)?;
        }
        let (state, format) = detect(&mut input, hints)?;
        Ok(CaptureReader {
            input,
            state,
            format,
            gzipped,
            raw_count,
            last_ts: 0,
            records: 0,
            done: false,
        })
    }

    pub fn format(&self) -> Format {
        self.format
    }

    /// True if the file is gzip-compressed (offsets are then in the decompressed stream).
    pub fn gzipped(&self) -> bool {
        self.gzipped
    }

    /// Byte offset of the next record (or block) in the decompressed stream.
    pub fn offset(&self) -> u64 {
        self.input.offset()
    }

    /// Bytes read from the underlying file so far (compressed size for gzip), for progress.
    pub fn compressed_bytes_read(&self) -> u64 {
        self.raw_count.load(Ordering::Relaxed)
    }

    /// Records returned so far: the last one is tshark's frame number `records()`.
    pub fn records(&self) -> u64 {
        self.records
    }

    /// The next record, `Ok(None)` at a clean end of file. After an error, always `Ok(None)`.
    #[inline]
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, ReadError> {
        // The common case first, inlined into the caller's loop: a pcap record lying whole
        // in the buffer.
        let found = match &self.state {
            State::Pcap(st) if !self.done => pcap_take(&mut self.input, st),
            _ => None,
        };
        let found = match found {
            Some(f) => f,
            None => match self.next_found_slow()? {
                Some(f) => f,
                None => return Ok(None),
            },
        };
        self.records += 1;
        self.last_ts = found.ts;
        Ok(Some(Record {
            linktype: found.linktype,
            ts: found.ts,
            caplen: found.data_len as u32,
            orig_len: found.orig_len,
            interface: found.interface,
            data: &self.input.buf[found.data_at..found.data_at + found.data_len],
        }))
    }

    /// Every other case: other formats, a refill, the end of the file, damage.
    #[inline(never)]
    fn next_found_slow(&mut self) -> Result<Option<Found>, ReadError> {
        if self.done {
            return Ok(None);
        }
        let found = match &mut self.state {
            State::Pcap(st) => next_pcap(&mut self.input, st),
            State::PcapNg(st) => next_pcapng(&mut self.input, st, self.last_ts),
            State::Snoop => next_snoop(&mut self.input),
            State::EtherPeek(base) => next_peek(&mut self.input, *base),
        };
        match found {
            Ok(Some(f)) => Ok(Some(f)),
            Ok(None) => {
                self.done = true;
                Ok(None)
            }
            Err(e) => {
                self.done = true;
                Err(self.annotate(e))
            }
        }
    }

    /// Says that offsets are in the decompressed data when the file is gzipped.
    fn annotate(&self, e: ReadError) -> ReadError {
        if !self.gzipped {
            return e;
        }
        const NOTE: &str = " (offsets count decompressed bytes)";
        match e {
            ReadError::Truncated { offset, what } => ReadError::Truncated {
                offset,
                what: what + NOTE,
            },
            ReadError::Damaged { offset, what } => ReadError::Damaged {
                offset,
                what: what + NOTE,
            },
            other => other,
        }
    }
}

fn io_at(input: &Input) -> impl FnOnce(io::Error) -> ReadError + '_ {
    move |source| ReadError::Io {
        offset: input.offset(),
        source,
    }
}

/// Makes `n` bytes available or says that the file ends inside `what`.
fn need(input: &mut Input, n: usize, what: impl FnOnce() -> String) -> Result<(), ReadError> {
    let ok = input.fill(n).map_err(|source| ReadError::Io {
        offset: input.offset(),
        source,
    })?;
    if ok {
        Ok(())
    } else {
        let have = input.avail();
        Err(ReadError::Truncated {
            offset: input.offset(),
            what: format!("{} needs {n} bytes, the file ends after {have}", what()),
        })
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

/// Recognises the format from the first bytes and consumes the file header.
fn detect(input: &mut Input, hints: Hints) -> Result<(State, Format), ReadError> {
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
            return pcap_header(input, big_endian, nanos, modified);
        }
        if le == NG_SHB {
            let mut st = NgState {
                big_endian: false,
                interfaces: Vec::new(),
            };
            // Read the first section header now, so that a bad one fails `open`.
            ng_block(input, &mut st, 0)?;
            return Ok((State::PcapNg(st), Format::PcapNg));
        }
    }
    if head.starts_with(b"snoop\0\0\0") {
        return snoop_header(input);
    }
    if let Some(found) = peek_header(input, hints) {
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

fn pcap_header(
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
    let hdr_len = if modified { 24 } else { 16 };
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

/// The captured length check shared by all formats.
fn check_caplen(caplen: u32, snaplen: u32, offset: u64, what: &str) -> Result<(), ReadError> {
    if caplen > MAX_RECORD {
        return Err(ReadError::Damaged {
            offset,
            what: format!(
                "the {what} claims {caplen} captured bytes, more than any real packet (limit 256 MiB)"
            ),
        });
    }
    if caplen > STANDARD_MAX_SNAPLEN && snaplen != 0 && caplen > snaplen {
        return Err(ReadError::Damaged {
            offset,
            what: format!(
                "the {what} claims {caplen} captured bytes, more than the snapshot length ({snaplen}) \
                 and than any ordinary packet"
            ),
        });
    }
    Ok(())
}

/// A pcap record header's captured and original lengths.
#[inline]
fn pcap_lengths(h: &[u8], st: &PcapState) -> (u32, u32) {
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
fn pcap_ts(h: &[u8], st: &PcapState) -> i64 {
    let secs = rd32(h, 0, st.big_endian);
    let frac = rd32(h, 4, st.big_endian);
    let sub = if st.nanos {
        i64::from(frac)
    } else {
        i64::from(frac) * 1000
    };
    i64::from(secs) * 1_000_000_000 + sub
}

/// The common case, without a call that may refill the buffer or fail: the next record
/// lies whole in the buffer with an ordinary length (what [`check_caplen`] accepts).
#[inline]
fn pcap_take(input: &mut Input, st: &PcapState) -> Option<Found> {
    let hl = st.hdr_len;
    let avail = input.bytes();
    let h = avail.get(..hl)?;
    let (caplen, orig_len) = pcap_lengths(h, st);
    let total = hl + caplen as usize;
    if caplen > STANDARD_MAX_SNAPLEN || avail.len() < total {
        return None;
    }
    let ts = pcap_ts(h, st);
    Some(pcap_consume(input, st, ts, caplen, orig_len))
}

/// Consumes the record at the start of the buffer (its header, then `caplen` bytes, all
/// available) and says where its data lies.
#[inline]
fn pcap_consume(input: &mut Input, st: &PcapState, ts: i64, caplen: u32, orig_len: u32) -> Found {
    let data_at = input.start + st.hdr_len;
    input.start = data_at + caplen as usize;
    Found {
        linktype: st.linktype,
        ts,
        orig_len,
        interface: 0,
        data_at,
        data_len: caplen as usize,
    }
}

/// The next pcap record the careful way: refilling the buffer as needed, naming damage and
/// truncation ([`CaptureReader::next_record`] tries [`pcap_take`] first).
fn next_pcap(input: &mut Input, st: &PcapState) -> Result<Option<Found>, ReadError> {
    let hl = st.hdr_len;
    if input.avail() < hl && !input.fill(hl).map_err(io_at(input))? {
        if input.avail() == 0 {
            return Ok(None);
        }
        let have = input.avail();
        return Err(ReadError::Truncated {
            offset: input.offset(),
            what: format!("the record header needs {hl} bytes, the file ends after {have}"),
        });
    }
    let h = &input.buf[input.start..input.start + hl];
    let ts = pcap_ts(h, st);
    let (caplen, orig_len) = pcap_lengths(h, st);
    check_caplen(caplen, st.snaplen, input.offset(), "record header")?;
    let total = hl + caplen as usize;
    if input.avail() < total && !input.fill(total).map_err(io_at(input))? {
        let have = input.avail();
        return Err(ReadError::Truncated {
            offset: input.offset(),
            what: format!(
                "the record has {caplen} captured bytes after its {hl}-byte header, the file ends after {}",
                have.saturating_sub(hl)
            ),
        });
    }
    Ok(Some(pcap_consume(input, st, ts, caplen, orig_len)))
}

/// Seconds between 1904-01-01 (the Mac epoch EtherPeek uses) and 1970-01-01.
const MAC_EPOCH_OFFSET: i64 = 2_082_844_800;

/// EtherPeek classic, versions 5 and 6 (Wireshark's peekclassic): a 2-byte master header
/// (version, status), a 48-byte big-endian secondary header (file length, packet count,
/// base time in seconds since 1904, ..., media type 0 = Ethernet), then records.
fn peek_header(input: &mut Input, hints: Hints) -> Option<Result<(State, Format), ReadError>> {
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
fn next_peek(input: &mut Input, base_secs: i64) -> Result<Option<Found>, ReadError> {
    const HDR: usize = 26;
    if input.avail() < HDR && !input.fill(HDR).map_err(io_at(input))? {
        if input.avail() == 0 {
            return Ok(None);
        }
        let have = input.avail();
        return Err(ReadError::Truncated {
            offset: input.offset(),
            what: format!("the record header needs {HDR} bytes, the file ends after {have}"),
        });
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

fn snoop_header(input: &mut Input) -> Result<(State, Format), ReadError> {
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

fn next_snoop(input: &mut Input) -> Result<Option<Found>, ReadError> {
    if input.avail() < 24 && !input.fill(24).map_err(io_at(input))? {
        if input.avail() == 0 {
            return Ok(None);
        }
        let have = input.avail();
        return Err(ReadError::Truncated {
            offset: input.offset(),
            what: format!("the record header needs 24 bytes, the file ends after {have}"),
        });
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

fn next_pcapng(
    input: &mut Input,
    st: &mut NgState,
    last_ts: i64,
) -> Result<Option<Found>, ReadError> {
    loop {
        match ng_block(input, st, last_ts)? {
            Step::End => return Ok(None),
            Step::Record(found) => return Ok(Some(found)),
            Step::Other => {}
        }
    }
}

/// What one pcapng block yielded.
enum Step {
    End,
    Record(Found),
    /// A block that is not a record (section, interface, statistics, unknown, ...).
    Other,
}

/// Reads one pcapng block.
fn ng_block(input: &mut Input, st: &mut NgState, last_ts: i64) -> Result<Step, ReadError> {
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

#[cfg(test)]
mod tests {
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
}
