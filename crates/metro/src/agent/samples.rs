//! `metro run --samples PATH|-`: every RTT sample the capture threads see, as the JSON lines
//! `metro analyze --samples` writes (without `file` and the frame numbers, with `iface`),
//! for debugging and for piping into other tools.
//!
//! It must never slow capture down: each capture thread appends lines to its own buffer and
//! hands full buffers (and whatever it has at each tick) to one writer thread over a bounded
//! channel without waiting. When the reader is slower than the traffic the channel fills
//! and the capture thread drops the buffer instead, counting its lines ([`lost`]); the agent
//! logs the count.

use std::fs::File;
use std::io::{self, Write};
use std::path::Path;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, SyncSender, TrySendError};

use metro_core::sample::Sample;

/// Buffers in flight between the capture threads and the writer.
const SLOTS: usize = 64;
/// A capture thread hands its buffer over once it holds this much.
const BUF_BYTES: usize = 64 * 1024;

struct Out {
    tx: SyncSender<Vec<u8>>,
    lost: AtomicU64,
    written: AtomicU64,
    /// Buffers sent and not yet written.
    pending: AtomicU64,
}

static OUT: OnceLock<Out> = OnceLock::new();

/// Start the writer thread on `path` (`-`: standard output). Once per process.
pub fn start(path: &Path) -> io::Result<()> {
    let mut w: Box<dyn Write + Send> = if path.as_os_str() == "-" {
        Box::new(io::stdout())
    } else {
        Box::new(File::create(path)?)
    };
    let (tx, rx) = mpsc::sync_channel::<Vec<u8>>(SLOTS);
    if OUT
        .set(Out {
            tx,
            lost: AtomicU64::new(0),
            written: AtomicU64::new(0),
            pending: AtomicU64::new(0),
        })
        .is_err()
    {
        return Err(io::Error::other("--samples started twice"));
    }
    std::thread::Builder::new()
        .name("metro-samples".into())
        .spawn(move || {
            for buf in rx {
                let lines = buf.iter().filter(|&&b| b == b'\n').count() as u64;
                // A reader that went away (a closed pipe) loses the rest, counted.
                let ok = w.write_all(&buf).and_then(|_| w.flush()).is_ok();
                if let Some(o) = OUT.get() {
                    let n = if ok { &o.written } else { &o.lost };
                    n.fetch_add(lines, Ordering::Relaxed);
                    o.pending.fetch_sub(1, Ordering::Release);
                }
            }
        })?;
    Ok(())
}

/// At exit: wait up to `wait` for the writer to write what it was handed, then log the
/// totals (a reader that never drains loses what is left).
pub fn finish(wait: std::time::Duration) {
    let Some(o) = OUT.get() else { return };
    let end = std::time::Instant::now() + wait;
    while o.pending.load(Ordering::Acquire) > 0 && std::time::Instant::now() < end {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    tracing::info!("--samples: {} lines written, {} lost", written(), lost());
}

/// Whether `--samples` is on.
pub fn enabled() -> bool {
    OUT.get().is_some()
}

/// Lines dropped so far because the reader was too slow (or gone).
pub fn lost() -> u64 {
    OUT.get().map_or(0, |o| o.lost.load(Ordering::Relaxed))
}

/// Lines written so far.
pub fn written() -> u64 {
    OUT.get().map_or(0, |o| o.written.load(Ordering::Relaxed))
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
        let full = std::mem::replace(&mut self.buf, Vec::with_capacity(BUF_BYTES));
        o.pending.fetch_add(1, Ordering::AcqRel);
        match o.tx.try_send(full) {
            Ok(()) => {}
            Err(TrySendError::Full(mut b) | TrySendError::Disconnected(mut b)) => {
                o.pending.fetch_sub(1, Ordering::AcqRel);
                o.lost.fetch_add(self.lines, Ordering::Relaxed);
                // Keep the allocation.
                b.clear();
                self.buf = b;
            }
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
