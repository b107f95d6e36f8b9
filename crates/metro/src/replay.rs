//! The replay loop, written once: a capture's records numbered as tshark numbers its frames,
//! records that are not packets (pcapng custom and journal blocks) skipped, each packet
//! decoded and handed to a [`Frames`]. `metro analyze` (one thread: to a [`Driver`]; several:
//! to the reader that shards them), `metro plot` and the bench replay through it; the live
//! agent hands its packets to the same [`Driver`] (`agent::capture`), which owns the time.

use std::ops::ControlFlow;

use metro_core::driver::Driver;
use metro_core::sample::Observer;
use metro_core::wire::DecodeError;
use metro_core::{Nanos, Segment};

use crate::pcap::{CaptureReader, NOT_A_PACKET, ReadError};

/// Where a replay's frames go.
pub trait Frames {
    /// A decoded TCP segment, record number `frame` (1-based) captured at `ts`. `Break`
    /// ends the replay.
    fn segment(&mut self, frame: u64, ts: Nanos, seg: &Segment) -> ControlFlow<()>;

    /// A packet that decoded to nothing an engine takes.
    fn undecodable(&mut self, _e: DecodeError) {}

    /// Called every 65,536 records, with the reader (how far it got, for a progress bar).
    fn progress(&mut self, _reader: &CaptureReader) {}
}

/// What a replay found besides its frames.
#[derive(Debug, Default)]
pub struct Replayed {
    /// Records read: the last one's tshark frame number.
    pub records: u64,
    /// Of those, records that are not packets.
    pub non_packets: u64,
    /// The damage that ended the capture early, if any (the records before it were
    /// replayed).
    pub error: Option<ReadError>,
}

/// Replays `reader` to its end (or its damage, or until `to` says stop) into `to`.
#[inline]
pub fn replay(reader: &mut CaptureReader, to: &mut impl Frames) -> Replayed {
    let mut done = Replayed::default();
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
        // Straight to the Segment: moving the decoded packet out of a result costs a memcpy.
        match Segment::decode(rec.linktype, rec.data) {
            Ok(ref seg) => {
                if to.segment(frame, rec.ts, seg).is_break() {
                    break;
                }
            }
            Err(e) => to.undecodable(e),
        }
        if frame & 0xffff == 0 {
            to.progress(reader);
        }
    }
    done
}

/// Frames into a driver, its samples to an observer: the one-thread replay. The driver is
/// held here, not borrowed, so that the replay loop reaches the engine's state without
/// loading a pointer first (borrowed, callgrind counted more instructions per packet).
pub struct ToDriver<'a, O> {
    pub driver: Driver,
    pub out: &'a mut O,
}

impl<O: Observer> Frames for ToDriver<'_, O> {
    #[inline]
    fn segment(&mut self, frame: u64, ts: Nanos, seg: &Segment) -> ControlFlow<()> {
        self.driver.segment(frame, ts, seg, self.out);
        ControlFlow::Continue(())
    }
}
