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
//!
//! One file per concern: `input` (the buffer, gzip sniffing, field readers, truncation),
//! `detect` (which format), one parser per format (`pcap`, `pcapng`, `snoop`, `peek` for
//! EtherPeek classic), `error` ([`ReadError`]). This file holds the record type and the
//! reader that drives them: `next_record`, inlined, cuts a plain pcap file's records and
//! pcapng's enhanced packet blocks lying whole in the buffer itself, and hands every other
//! record to the general path.

use std::fmt;
use std::fs::File;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

mod detect;
mod error;
mod input;
mod pcap;
mod pcapng;
mod peek;
mod snoop;
#[cfg(test)]
mod tests;

pub use error::ReadError;

use input::{Hints, Input};

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

/// The captured length check shared by all formats.
pub(super) fn check_caplen(
    caplen: u32,
    snaplen: u32,
    offset: u64,
    what: &str,
) -> Result<(), ReadError> {
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

/// Per-format state.
enum State {
    Pcap(pcap::PcapState),
    PcapNg(pcapng::NgState),
    Snoop,
    /// Seconds since 1970 of the file's base time (record times are milliseconds after it).
    EtherPeek(i64),
}

/// A streaming reader over a pcap, pcapng or snoop capture, plain or gzip-compressed.
pub struct CaptureReader {
    input: Input,
    state: State,
    format: Format,
    gzipped: bool,
    raw_count: Arc<AtomicU64>,
    /// Set for a plain pcap file until its end or error: [`Self::whole_pcap_record`]'s
    /// shortcut is taken.
    plain_pcap: Option<pcap::Plain>,
    /// Set for pcapng until its end or error: [`Self::whole_epb`]'s shortcut is taken.
    ng_shortcut: bool,
    /// Time of the last record, for records without one (pcapng's; the pcap shortcut,
    /// whose records all have one, leaves it).
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
        let (mut input, gzipped) = Input::open(src, raw_count.clone())?;
        if gzipped {
            hints.file_size = None;
            hints.gzipped = true;
        }
        let (state, format) = detect::detect(&mut input, hints)?;
        let plain_pcap = match &state {
            State::Pcap(st) => st.plain(),
            _ => None,
        };
        let ng_shortcut = matches!(state, State::PcapNg(_));
        Ok(CaptureReader {
            input,
            plain_pcap,
            ng_shortcut,
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
    // Always inlined: a classic pcap record lying whole in the buffer (nearly every record
    // of nearly every capture) is then cut in the caller's loop with one bounds check and
    // one header read; everything else goes out of line.
    #[inline(always)]
    pub fn next_record(&mut self) -> Result<Option<Record<'_>>, ReadError> {
        let found = match self.whole_pcap_record() {
            Some(found) => found,
            None => match self.whole_epb() {
                Some(found) => {
                    self.last_ts = found.ts;
                    found
                }
                None => match self.next_slow() {
                    Ok(Some(found)) => found,
                    Ok(None) => return Ok(None),
                    Err(e) => return Err(e),
                },
            },
        };
        self.records += 1;
        Ok(Some(Record {
            linktype: found.linktype,
            ts: found.ts,
            caplen: found.data_len as u32,
            orig_len: found.orig_len,
            interface: found.interface,
            data: &self.input.buf[found.data_at..found.data_at + found.data_len],
        }))
    }

    /// The shortcut: a record of a plain pcap file (16-byte headers, lengths in their
    /// 2.4 order) whose header and data are whole in the buffer and whose length is
    /// ordinary. Exactly what [`pcap::next`] returns for such a record, without its
    /// checks (none of them can fail here) or its `Result`; `None` for anything else
    /// (and after the end or an error), which the general path then decides.
    #[inline(always)]
    fn whole_pcap_record(&mut self) -> Option<Found> {
        // The byte order decided once, not at each of the header's fields.
        if self.plain_pcap.as_ref()?.big_endian {
            self.whole_pcap_record_in::<true>()
        } else {
            self.whole_pcap_record_in::<false>()
        }
    }

    #[inline(always)]
    fn whole_pcap_record_in<const BIG_ENDIAN: bool>(&mut self) -> Option<Found> {
        let plain = self.plain_pcap.as_ref()?;
        let input = &mut self.input;
        let (h, data) = input
            .buf
            .get(input.start..input.end)?
            .split_first_chunk::<{ pcap::PLAIN_HEADER }>()?;
        let rd = |at: usize| input::word::<BIG_ENDIAN>(h, at);
        let caplen = rd(8);
        if caplen > STANDARD_MAX_SNAPLEN || data.len() < caplen as usize {
            return None;
        }
        let ts = i64::from(rd(0)) * 1_000_000_000 + i64::from(rd(4)) * plain.frac_ns;
        let data_at = input.start + pcap::PLAIN_HEADER;
        input.start = data_at + caplen as usize;
        Some(Found {
            linktype: plain.linktype,
            ts,
            orig_len: rd(12),
            interface: 0,
            data_at,
            data_len: caplen as usize,
        })
    }

    /// pcapng's shortcut ([`pcapng::whole_epb`]), until the end or an error.
    #[inline(always)]
    fn whole_epb(&mut self) -> Option<Found> {
        match &self.state {
            State::PcapNg(st) if self.ng_shortcut => pcapng::whole_epb(&mut self.input, st),
            _ => None,
        }
    }

    /// Every record the shortcut does not take: the general parser of each format, the
    /// end, the error (annotated; the reading then ends).
    #[inline(never)]
    fn next_slow(&mut self) -> Result<Option<Found>, ReadError> {
        match self.next_other() {
            Ok(Some(found)) => {
                self.last_ts = found.ts;
                Ok(Some(found))
            }
            Ok(None) => {
                self.done = true;
                self.plain_pcap = None;
                self.ng_shortcut = false;
                Ok(None)
            }
            Err(e) => Err(self.fail(e)),
        }
    }

    /// The general path of every format, and every call after the end or an error.
    #[inline]
    fn next_other(&mut self) -> Result<Option<Found>, ReadError> {
        if self.done {
            return Ok(None);
        }
        match &mut self.state {
            State::Pcap(st) => pcap::next(&mut self.input, st),
            State::PcapNg(st) => pcapng::next(&mut self.input, st, self.last_ts),
            State::Snoop => snoop::next(&mut self.input),
            State::EtherPeek(base) => peek::next(&mut self.input, *base),
        }
    }

    /// Ends the reading with `e`, annotated.
    #[cold]
    fn fail(&mut self, e: ReadError) -> ReadError {
        self.done = true;
        self.plain_pcap = None;
        self.ng_shortcut = false;
        self.annotate(e)
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
