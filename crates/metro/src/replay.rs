//! The replay loop, written once: a capture's records numbered as tshark numbers its frames,
//! records that are not packets (pcapng custom and journal blocks) skipped, each packet
//! decoded and handed to a [`Frames`]: a TCP segment with its payload (DNS over TCP), a frame
//! that is not TCP to the datagram path (QUIC, DNS, ICMP: [`proto::Tracker`]). `metro
//! analyze` (one thread: to a [`Driver`], which owns the tracker; several: to the reader
//! that shards them), `metro plot` and the bench replay through it; the live
//! agent hands its packets to the same [`Driver`] (`agent::capture`), which owns the time.

use std::ops::ControlFlow;

use metro_core::driver::Driver;
use metro_core::proto;
use metro_core::sample::Observer;
use metro_core::wire::DecodeError;
use metro_core::{Nanos, Segment};

use crate::pcap::{CaptureReader, NOT_A_PACKET, ReadError};

/// Where a replay's frames go.
pub trait Frames {
    /// A decoded TCP segment, record number `frame` (1-based) captured at `ts`, with its
    /// payload (empty for most). `Break` ends the replay.
    fn segment(&mut self, frame: u64, ts: Nanos, seg: &Segment, payload: &[u8]) -> ControlFlow<()>;

    /// A packet the TCP decoder says is not TCP ([`DecodeError::NotTcp`]), its link type and
    /// bytes: for the datagram path (UDP, ICMP). Called before [`Frames::undecodable`].
    fn not_tcp(&mut self, _frame: u64, _ts: Nanos, _linktype: u32, _data: &[u8]) {}

    /// A packet that decoded to nothing the TCP engine takes.
    fn undecodable(&mut self, _e: DecodeError) {}

    /// Called every 65,536 records, with the reader (how far it got, for a progress bar).
    fn progress(&mut self, _reader: &CaptureReader) {}
}

/// What a replay found besides its frames.
#[derive(Debug)]
pub struct Replayed {
    /// Records read: the last one's tshark frame number.
    pub records: u64,
    /// Of those, records that are not packets.
    pub non_packets: u64,
    /// The latest capture time of a packet (`Nanos::MIN` if none): where the datagram
    /// path's pending queries and requests end.
    pub last_ts: Nanos,
    /// The damage that ended the capture early, if any (the records before it were
    /// replayed).
    pub error: Option<ReadError>,
}

impl Default for Replayed {
    fn default() -> Replayed {
        Replayed {
            records: 0,
            non_packets: 0,
            last_ts: Nanos::MIN,
            error: None,
        }
    }
}

/// Replays `reader` to its end (or its damage, or until `to` says stop) into `to`.
#[inline]
pub fn replay(reader: &mut CaptureReader, to: &mut impl Frames) -> Replayed {
    let mut done = Replayed::default();
    // Every frame decodes into this one: no Segment moved out of a result.
    let mut seg = Segment::EMPTY;
    loop {
        let rec = match reader.next_record() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                done.error = Some(e);
                break;
            }
        };
        done.records += 1;
        let frame = done.records;
        if rec.linktype == NOT_A_PACKET {
            done.non_packets += 1;
            continue;
        }
        done.last_ts = done.last_ts.max(rec.ts);
        match proto::decode_tcp_into(rec.linktype, rec.data, &mut seg) {
            Ok(payload) => {
                if to.segment(frame, rec.ts, &seg, payload).is_break() {
                    break;
                }
            }
            Err(e) => {
                if e == DecodeError::NotTcp {
                    to.not_tcp(frame, rec.ts, rec.linktype, rec.data);
                }
                to.undecodable(e)
            }
        }
        if frame & 0xffff == 0 {
            to.progress(reader);
        }
    }
    done
}

/// Frames into a driver (TCP, and its tracker: QUIC, DNS, ICMP), their samples to an
/// observer: the one-thread replay. The driver is held here, not borrowed, so that the
/// replay loop reaches the engine's state without loading a pointer first (borrowed,
/// callgrind counted more instructions per packet).
pub struct ToDriver<'a, O> {
    pub driver: Driver,
    pub out: &'a mut O,
}

impl<O: Observer> Frames for ToDriver<'_, O> {
    #[inline]
    fn segment(&mut self, frame: u64, ts: Nanos, seg: &Segment, payload: &[u8]) -> ControlFlow<()> {
        self.driver
            .segment_payload(frame, ts, seg, payload, self.out);
        ControlFlow::Continue(())
    }

    fn not_tcp(&mut self, frame: u64, ts: Nanos, linktype: u32, data: &[u8]) {
        self.driver.datagram(frame, ts, linktype, data, self.out);
    }
}
