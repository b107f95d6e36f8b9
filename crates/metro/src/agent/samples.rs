//! `metro run --samples PATH|-`: every RTT sample the capture threads see, as the JSON lines
//! `metro analyze --samples` writes (without `file` and the frame numbers, with `iface`),
//! for debugging and for piping into other tools.
//!
//! It must never slow capture down: each capture thread appends lines to its own buffer and
//! hands full buffers (and whatever it has at each tick) to one writer thread over a bounded
//! channel without waiting. When the reader is slower than the traffic the channel fills
//! and the capture thread drops the buffer instead, counting its lines ([`lost`]); the agent
//! logs the count.
//!
//! Nothing here can hold start-up: PATH is opened non-blocking, so a FIFO without a reader
//! does not wait in open(2); the writer thread waits for a reader instead (retrying every
//! [`REOPEN_EVERY`]) and counts the lines meanwhile as lost, as it does when a reader goes
//! away. A write error (ENOSPC...) is logged with the path and its errno's name, the lines
//! it cost are counted, and a regular file is cut back to its last whole line, so that the
//! lines counted as written are exactly the lines in the file.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::os::fd::AsFd;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use metro_core::sample::Sample;

/// Buffers in flight between the capture threads and the writer.
const SLOTS: usize = 64;
/// A capture thread hands its buffer over once it holds this much.
const BUF_BYTES: usize = 64 * 1024;
/// How often the writer tries a FIFO again while it has no reader.
pub const REOPEN_EVERY: Duration = Duration::from_millis(200);

/// The writer's end: the channel and what became of every line.
pub struct Out {
    tx: SyncSender<Vec<u8>>,
    /// `PATH` or `standard output`, for messages.
    name: String,
    /// Dropped by a capture thread: the writer was behind.
    lost_slow: AtomicU64,
    /// Dropped by the writer: no reader on the FIFO (yet, or any more).
    lost_no_reader: AtomicU64,
    /// Not written: a write error.
    lost_error: AtomicU64,
    written: AtomicU64,
    /// Buffers sent and not yet written.
    pending: AtomicU64,
    /// The last write error, as logged.
    last_error: Mutex<Option<String>>,
}

static OUT: OnceLock<Arc<Out>> = OnceLock::new();

/// Start the writer thread on `path` (`-`: standard output). Once per process.
pub fn start(path: &Path) -> io::Result<()> {
    let out = Out::start(path)?;
    OUT.set(out)
        .map_err(|_| io::Error::other("--samples started twice"))
}

/// At exit: wait up to `wait` for the writer to write what it was handed, then log the
/// totals (a reader that never drains loses what is left).
pub fn finish(wait: Duration) {
    if let Some(o) = OUT.get() {
        tracing::info!("{}", o.finish(wait));
    }
}

/// The errno's symbolic name, for the common write errors (the message says the rest).
fn errno_name(e: &io::Error) -> Option<&'static str> {
    Some(match e.raw_os_error()? {
        libc::ENOSPC => "ENOSPC",
        libc::EDQUOT => "EDQUOT",
        libc::EFBIG => "EFBIG",
        libc::EIO => "EIO",
        libc::EPIPE => "EPIPE",
        libc::EROFS => "EROFS",
        libc::EBADF => "EBADF",
        libc::EINVAL => "EINVAL",
        libc::EACCES => "EACCES",
        libc::EPERM => "EPERM",
        libc::ENXIO => "ENXIO",
        libc::EAGAIN => "EAGAIN",
        _ => return None,
    })
}

fn describe(e: &io::Error) -> String {
    match errno_name(e) {
        Some(n) => format!("{e} ({n})"),
        None => e.to_string(),
    }
}

fn newlines(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count() as u64
}

/// Open `path` for writing without waiting: Ok(None) is a FIFO with no reader yet.
fn open_nonblocking(path: &Path) -> io::Result<Option<File>> {
    let r = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path);
    match r {
        Ok(f) => {
            // Writes may block, in the writer thread only: a FIFO's reader sets the pace.
            let fd = std::os::fd::AsRawFd::as_raw_fd(&f);
            // SAFETY: fcntl on a descriptor we own.
            unsafe {
                let fl = libc::fcntl(fd, libc::F_GETFL);
                if fl < 0 || libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(Some(f))
        }
        Err(e)
            if e.raw_os_error() == Some(libc::ENXIO)
                && std::fs::metadata(path).is_ok_and(|m| m.file_type().is_fifo()) =>
        {
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

/// The writer thread's side.
struct Writer {
    path: Option<PathBuf>,
    /// None: a FIFO waiting for a reader.
    file: Option<File>,
    /// A regular file: a partial line can be cut back.
    regular: bool,
    /// A FIFO: reopened when its reader goes.
    fifo: bool,
    /// Bytes in the (regular) file.
    pos: u64,
    /// The errno of the error being logged, so that a run of the same error logs once.
    failing: Option<i32>,
}

impl Out {
    /// Open `path` (without waiting) and start a writer thread on it.
    pub fn start(path: &Path) -> io::Result<Arc<Out>> {
        let (name, w) = if path.as_os_str() == "-" {
            let fd = io::stdout().as_fd().try_clone_to_owned()?;
            let w = Writer {
                path: None,
                file: Some(File::from(fd)),
                regular: false,
                fifo: false,
                pos: 0,
                failing: None,
            };
            ("standard output".to_string(), w)
        } else {
            let file = open_nonblocking(path)?;
            let meta = std::fs::metadata(path)?;
            let name = path.display().to_string();
            if file.is_none() {
                tracing::warn!(
                    "--samples: {name} is a FIFO with no reader yet: capturing meanwhile, the \
                     lines count as lost until a reader opens it"
                );
            }
            let w = Writer {
                path: Some(path.to_path_buf()),
                file,
                regular: meta.is_file(),
                fifo: meta.file_type().is_fifo(),
                pos: 0,
                failing: None,
            };
            (name, w)
        };
        let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(SLOTS);
        let out = Arc::new(Out {
            tx,
            name,
            lost_slow: AtomicU64::new(0),
            lost_no_reader: AtomicU64::new(0),
            lost_error: AtomicU64::new(0),
            written: AtomicU64::new(0),
            pending: AtomicU64::new(0),
            last_error: Mutex::new(None),
        });
        let o = out.clone();
        std::thread::Builder::new()
            .name("metro-samples".into())
            .spawn(move || w.run(&o, rx))?;
        Ok(out)
    }

    /// Hand a buffer of `lines` lines to the writer, or count them lost if it is behind.
    /// Err gives the buffer back (emptied) to be reused.
    pub fn hand(&self, buf: Vec<u8>, lines: u64) -> Result<(), Vec<u8>> {
        self.pending.fetch_add(1, Ordering::AcqRel);
        match self.tx.try_send(buf) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(mut b) | TrySendError::Disconnected(mut b)) => {
                self.pending.fetch_sub(1, Ordering::AcqRel);
                self.lost_slow.fetch_add(lines, Ordering::Relaxed);
                b.clear();
                Err(b)
            }
        }
    }

    /// Wait up to `wait` for what was handed over, then the totals in one sentence.
    pub fn finish(&self, wait: Duration) -> String {
        let end = Instant::now() + wait;
        while self.pending.load(Ordering::Acquire) > 0 && Instant::now() < end {
            std::thread::sleep(Duration::from_millis(10));
        }
        let (slow, none, err) = (
            self.lost_slow.load(Ordering::Relaxed),
            self.lost_no_reader.load(Ordering::Relaxed),
            self.lost_error.load(Ordering::Relaxed),
        );
        // Handed over and not written by now: the reader never took them.
        let stuck = self.pending.load(Ordering::Acquire);
        let mut s = format!(
            "--samples: {} lines written to {}, {} lost",
            self.written(),
            self.name,
            slow + none + err
        );
        let mut why = Vec::new();
        if slow > 0 {
            why.push(format!(
                "{slow} while the reader was slower than the traffic"
            ));
        }
        if none > 0 {
            why.push(format!("{none} while the FIFO had no reader"));
        }
        if err > 0 {
            let last = self.last_error.lock().unwrap_or_else(|e| e.into_inner());
            why.push(format!(
                "{err} not written: {}",
                last.as_deref().unwrap_or("write error")
            ));
        }
        if !why.is_empty() {
            s.push_str(&format!(" ({})", why.join("; ")));
        }
        if stuck > 0 {
            s.push_str(&format!(
                "; {stuck} buffer(s) of lines still waiting for the reader at exit"
            ));
        }
        s
    }

    /// Lines written so far (exactly the lines in a regular file).
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Lines lost for any reason.
    pub fn lost_total(&self) -> u64 {
        self.lost_slow.load(Ordering::Relaxed)
            + self.lost_no_reader.load(Ordering::Relaxed)
            + self.lost_error.load(Ordering::Relaxed)
    }
}

impl Writer {
    fn run(mut self, o: &Out, rx: Receiver<Vec<u8>>) {
        loop {
            let buf = match rx.recv_timeout(REOPEN_EVERY) {
                Ok(b) => b,
                Err(RecvTimeoutError::Timeout) => {
                    self.reopen(o);
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => return,
            };
            self.write(o, &buf);
            o.pending.fetch_sub(1, Ordering::Release);
        }
    }

    /// A FIFO without a reader: try again.
    fn reopen(&mut self, o: &Out) {
        let (None, Some(p)) = (&self.file, &self.path) else {
            return;
        };
        match open_nonblocking(p) {
            Ok(Some(f)) => {
                tracing::info!(
                    "--samples: {} has a reader: writing ({} lines lost while it had none)",
                    o.name,
                    o.lost_no_reader.load(Ordering::Relaxed)
                );
                self.file = Some(f);
            }
            Ok(None) => {}
            Err(e) => {
                // Removed or replaced meanwhile: keep trying, say why once.
                self.fail(o, &e, "cannot open");
            }
        }
    }

    fn write(&mut self, o: &Out, buf: &[u8]) {
        let lines = newlines(buf);
        if self.file.is_none() {
            self.reopen(o);
        }
        let Some(f) = &mut self.file else {
            o.lost_no_reader.fetch_add(lines, Ordering::Relaxed);
            return;
        };
        let mut off = 0;
        let err = loop {
            if off == buf.len() {
                break None;
            }
            match f.write(&buf[off..]) {
                Ok(0) => break Some(io::Error::from(io::ErrorKind::WriteZero)),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => break Some(e),
            }
        };
        let Some(e) = err else {
            self.pos += off as u64;
            o.written.fetch_add(lines, Ordering::Relaxed);
            if self.failing.take().is_some() {
                tracing::info!("--samples: writing {} again", o.name);
            }
            return;
        };
        // Whole lines only: a regular file is cut back to the end of the last one.
        let mut done = &buf[..off];
        if self.regular && !done.ends_with(b"\n") {
            let whole = done.iter().rposition(|&c| c == b'\n').map_or(0, |i| i + 1);
            let keep = self.pos + whole as u64;
            if f.set_len(keep)
                .and_then(|_| f.seek(SeekFrom::Start(keep)))
                .is_ok()
            {
                done = &buf[..whole];
            }
        }
        self.pos += done.len() as u64;
        let wrote = newlines(done);
        o.written.fetch_add(wrote, Ordering::Relaxed);
        if self.fifo && e.raw_os_error() == Some(libc::EPIPE) {
            o.lost_no_reader.fetch_add(lines - wrote, Ordering::Relaxed);
            tracing::warn!(
                "--samples: the reader of {} went away: waiting for another, the lines count \
                 as lost meanwhile",
                o.name
            );
            self.file = None;
            return;
        }
        o.lost_error.fetch_add(lines - wrote, Ordering::Relaxed);
        self.fail(o, &e, "cannot write");
    }

    /// Log an error once per run of the same errno; keep it for the summary.
    fn fail(&mut self, o: &Out, e: &io::Error, what: &str) {
        let msg = format!("{what} {}: {}", o.name, describe(e));
        let code = e.raw_os_error().unwrap_or(-1);
        if self.failing != Some(code) {
            self.failing = Some(code);
            tracing::error!(
                "--samples: {msg}; lines are lost until it succeeds again ({} written so far)",
                o.written()
            );
        }
        *o.last_error.lock().unwrap_or_else(|e| e.into_inner()) = Some(msg);
    }
}

/// Whether `--samples` is on.
pub fn enabled() -> bool {
    OUT.get().is_some()
}

/// Lines dropped so far because the reader was slower than the traffic (the writer was
/// behind); lines lost to a missing reader or a write error are counted apart, and logged
/// where they happen.
pub fn lost() -> u64 {
    OUT.get().map_or(0, |o| o.lost_slow.load(Ordering::Relaxed))
}

/// Lines written so far.
pub fn written() -> u64 {
    OUT.get().map_or(0, |o| o.written())
}

/// One capture thread's buffer of lines.
pub struct SampleBuf {
    /// `{"iface":"NAME",` with the name JSON-escaped.
    head: Vec<u8>,
    buf: Vec<u8>,
    lines: u64,
}

impl SampleBuf {
    /// A buffer for interface `iface`, if `--samples` is on.
    pub fn new(iface: &str) -> Option<SampleBuf> {
        enabled().then(|| {
            let mut head = b"{\"iface\":".to_vec();
            let _ = serde_json::to_writer(&mut head, iface);
            head.push(b',');
            SampleBuf {
                head,
                buf: Vec::with_capacity(BUF_BYTES),
                lines: 0,
            }
        })
    }

    /// Append one sample's line; hand the buffer over when full.
    pub fn push(&mut self, s: &Sample) {
        self.buf.extend_from_slice(&self.head);
        line_tail(&mut self.buf, s);
        self.lines += 1;
        if self.buf.len() >= BUF_BYTES {
            self.hand_over();
        }
    }

    /// Hand what is buffered to the writer, or drop it (counted) if the writer is behind.
    pub fn hand_over(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let Some(o) = OUT.get() else { return };
        let full = std::mem::take(&mut self.buf);
        match o.hand(full, self.lines) {
            Ok(()) => self.buf = Vec::with_capacity(BUF_BYTES),
            // Keep the allocation.
            Err(b) => self.buf = b,
        }
        self.lines = 0;
    }
}

/// The fields after `iface`: analyze's line without `file`, `frame` and `open_frame`.
pub use crate::analyze::sample_line_tail as line_tail;

#[cfg(test)]
mod tests {
    use super::*;
    use metro_core::sample::Kind;

    #[test]
    fn a_line_is_analyze_s_json_with_the_interface() {
        let s = Sample {
            kind: Kind::Handshake,
            frame: 9,
            open_frame: 7,
            ts: 1_700_000_000_123_456_789,
            rtt: 10_250_000,
            responder: "10.0.0.2:443".parse().unwrap(),
            peer: "[2001:db8::1]:5000".parse().unwrap(),
            flow_id: 1,
        };
        let mut b = b"{\"iface\":\"eth\\\"0\",".to_vec();
        line_tail(&mut b, &s);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["iface"], "eth\"0");
        // Nanoseconds, as analyze writes them.
        let text = String::from_utf8(b.clone()).unwrap();
        assert!(text.contains("\"ts\":1700000000.123456789,"), "{text}");
        assert_eq!(v["kind"], "handshake");
        assert_eq!((&v["src"], &v["sport"]), (&"10.0.0.2".into(), &443.into()));
        assert_eq!(
            (&v["dst"], &v["dport"]),
            (&"2001:db8::1".into(), &5000.into())
        );
        assert_eq!(v["rtt_ms"].as_f64().unwrap(), 10.25);
        assert!(v.get("file").is_none() && v.get("frame").is_none());
        assert!(b.ends_with(b"}\n"));
    }
}
