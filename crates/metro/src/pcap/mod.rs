//! Capture files: a streaming reader for pcap, pcapng and snoop (gzip detected by content)
//! that hands out borrowed records from one reusable buffer, and pcap/pcapng writers for
//! the generator and for tests.

pub mod read;
pub mod write;

pub use read::{CaptureReader, Format, MAX_RECORD, NOT_A_PACKET, ReadError, Record};
pub use write::{Interface, PcapNgWriter, PcapOptions, PcapWriter};
