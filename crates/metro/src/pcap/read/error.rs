//! Why a capture could not be read: [`ReadError`], with messages that name the byte offset
//! (the caller adds the file name) and, for formats metro recognises but does not read, the
//! tool that converts them.

use std::fmt;
use std::io;

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
