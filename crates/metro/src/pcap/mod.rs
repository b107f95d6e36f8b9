//! Capture files: a streaming reader for pcap, pcapng, snoop and EtherPeek (gzip detected
//! by content) that hands out borrowed records from one reusable buffer. The writers the
//! generator and the tests use are in `metro-testkit`.

pub mod read;

pub use read::{CaptureReader, Format, MAX_RECORD, NOT_A_PACKET, ReadError, Record};
