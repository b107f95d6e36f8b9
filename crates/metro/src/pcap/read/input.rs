//! The byte source under every format: one reusable buffer filled in large chunks from the
//! file (through a gzip decoder when the content starts with the gzip magic), a count of
//! the raw bytes read for progress, and the helpers the format parsers share to make bytes
//! available, name truncation and read fixed-width fields; and what the caller knows of the
//! source besides its bytes (`Hints`).

use std::io::{self, Cursor, Read};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use flate2::read::MultiGzDecoder;

use super::{MAX_RECORD, ReadError};

pub(super) const DEFAULT_BUFFER: usize = 1 << 20;
/// Largest buffer: the largest record plus its headers, rounded up.
pub(super) const MAX_BUFFER: usize = MAX_RECORD as usize + (1 << 16);

/// Counts bytes read from the underlying source, for [`super::CaptureReader::compressed_bytes_read`].
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
pub(super) struct Input {
    src: Box<dyn Read + Send>,
    pub(super) buf: Vec<u8>,
    pub(super) start: usize,
    pub(super) end: usize,
    base: u64,
    eof: bool,
}

impl Input {
    /// Wraps `src`, counting the raw bytes read into `raw_count`; if the content starts
    /// with the gzip magic (1f 8b), reads it through a decompressor instead. Says whether
    /// it did. At least 4 bytes are then buffered unless the stream is shorter.
    pub(super) fn open(
        src: Box<dyn Read + Send>,
        raw_count: Arc<AtomicU64>,
    ) -> Result<(Input, bool), ReadError> {
        let src: Box<dyn Read + Send> = Box::new(Counting {
            inner: src,
            count: raw_count,
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
        if !input.bytes().starts_with(&[0x1f, 0x8b]) {
            return Ok((input, false));
        }
        // Re-read what is buffered through the decompressor, then the rest of the source.
        let prefix = input.bytes().to_vec();
        let rest = std::mem::replace(&mut input.src, Box::new(io::empty()));
        let chained = Cursor::new(prefix).chain(rest);
        input.src = Box::new(MultiGzDecoder::new(chained));
        input.start = 0;
        input.end = 0;
        input.eof = false;
        input.fill(4).map_err(io_err)?;
        Ok((input, true))
    }

    #[inline]
    pub(super) fn avail(&self) -> usize {
        self.end - self.start
    }

    #[inline]
    pub(super) fn offset(&self) -> u64 {
        self.base + self.start as u64
    }

    #[inline]
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    /// Makes at least `n` bytes available. Ok(false) if the stream ends first (what there
    /// is stays available). `n` must not exceed [`MAX_BUFFER`].
    pub(super) fn fill(&mut self, n: usize) -> io::Result<bool> {
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

/// The error for a failed read at the current offset.
pub(super) fn io_at(input: &Input) -> impl FnOnce(io::Error) -> ReadError + '_ {
    move |source| ReadError::Io {
        offset: input.offset(),
        source,
    }
}

/// Makes `n` bytes available or says that the file ends inside `what`.
pub(super) fn need(
    input: &mut Input,
    n: usize,
    what: impl FnOnce() -> String,
) -> Result<(), ReadError> {
    let ok = input.fill(n).map_err(io_at(input))?;
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

/// Makes a `len`-byte record header available: `Ok(false)` at a clean end of the file (no
/// byte left), truncation if the file ends inside the header.
pub(super) fn record_header(input: &mut Input, len: usize) -> Result<bool, ReadError> {
    if input.avail() >= len || input.fill(len).map_err(io_at(input))? {
        return Ok(true);
    }
    if input.avail() == 0 {
        return Ok(false);
    }
    let have = input.avail();
    Err(ReadError::Truncated {
        offset: input.offset(),
        what: format!("the record header needs {len} bytes, the file ends after {have}"),
    })
}

/// A 16-bit field at `at`, big-endian if `be`.
#[inline]
pub(super) fn rd16(b: &[u8], at: usize, be: bool) -> u16 {
    let v: [u8; 2] = b[at..at + 2].try_into().expect("2 bytes");
    if be {
        u16::from_be_bytes(v)
    } else {
        u16::from_le_bytes(v)
    }
}

/// A 32-bit field at `at` of a record header, the byte order fixed at compile time (the
/// shortcuts' reads: one instantiation per order, no branch per field).
#[inline(always)]
pub(super) fn word<const BIG_ENDIAN: bool>(h: &[u8], at: usize) -> u32 {
    let v = [h[at], h[at + 1], h[at + 2], h[at + 3]];
    if BIG_ENDIAN {
        u32::from_be_bytes(v)
    } else {
        u32::from_le_bytes(v)
    }
}

/// A 32-bit field at `at`, big-endian if `be`.
#[inline]
pub(super) fn rd32(b: &[u8], at: usize, be: bool) -> u32 {
    let v: [u8; 4] = b[at..at + 4].try_into().expect("4 bytes");
    if be {
        u32::from_be_bytes(v)
    } else {
        u32::from_le_bytes(v)
    }
}

/// A 64-bit field at `at`, big-endian if `be`.
#[inline]
pub(super) fn rd64(b: &[u8], at: usize, be: bool) -> u64 {
    let v: [u8; 8] = b[at..at + 8].try_into().expect("8 bytes");
    if be {
        u64::from_be_bytes(v)
    } else {
        u64::from_le_bytes(v)
    }
}

/// What the caller knows about the source besides its bytes.
#[derive(Clone, Copy, Default)]
pub(super) struct Hints {
    pub(super) name_says_erf: bool,
    pub(super) file_size: Option<u64>,
    pub(super) gzipped: bool,
}
