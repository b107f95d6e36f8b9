//! The driver: decoded frames and the time they were captured go in, engine work comes out.
//! The core owns its time, as smoltcp's `Interface::poll(timestamp)` does: a caller hands
//! over each decoded frame with its capture time (or, when nothing arrives, the time now),
//! and the driver decides when expiry runs, on one schedule for every caller ([`Clock`]:
//! at the first time it sees, then once per [`TICK`] of that time).
//!
//! A decoded frame is a TCP [`Segment`] (to the TCP [`Engine`], its payload also to the
//! [`Tracker`] for DNS over TCP) or a frame that is not TCP (its UDP datagram or ICMP message
//! to the [`Tracker`]: QUIC, DNS, ICMP). Both engines run on the one clock, and a tick
//! expires both: a replay's TCP segments move it, a live capture's every frame (and the
//! wall clock while idle). `metro analyze` (one thread), `metro plot` and the
//! live agent all hand their frames here; [`Driver::frame`] decodes a raw frame and
//! dispatches it.

use crate::Nanos;
use crate::Segment;
use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::proto::{self, ProtoConfig, Tracker};
use crate::sample::Observer;
use crate::wire::DecodeError;

/// How often expiry runs, in the time the driver is given (packet time, or the wall clock
/// of an idle live capture).
pub const TICK: Nanos = 1_000_000_000;

/// When expiry is due: at the first time seen, then at the first time at least [`TICK`]
/// after the last run. A parallel replay's reader keeps one for all its shards.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    next: Nanos,
}

impl Default for Clock {
    fn default() -> Clock {
        Clock { next: Nanos::MIN }
    }
}

impl Clock {
    /// Whether expiry is due at `now` (and if so, the next run is a tick later).
    #[inline]
    pub fn due(&mut self, now: Nanos) -> bool {
        if now >= self.next {
            self.next = now.saturating_add(TICK);
            true
        } else {
            false
        }
    }
}

/// The engines and their clock. Not thread-safe; one per packet source (a shard of a
/// parallel replay uses its [`Engine`] directly, with the reader's clock).
pub struct Driver {
    tcp: Engine,
    proto: Tracker,
    clock: Clock,
    /// The tracker's expiry runs on this clock ([`Driver::live`]); otherwise (a replay) on
    /// the tracker's own, from the times of the frames it is given, as a parallel replay's
    /// reader runs its tracker: one output for any number of threads.
    proto_on_clock: bool,
}

impl Driver {
    /// The TCP engine with `cfg`, the QUIC, DNS and ICMP tracker with its default limits,
    /// both tracking the kinds `cfg` asks for.
    pub fn new(cfg: EngineConfig) -> Driver {
        Driver::with_proto(cfg, ProtoConfig::default())
    }

    /// [`Driver::new`] with the tracker's limits.
    pub fn with_proto(cfg: EngineConfig, proto: ProtoConfig) -> Driver {
        let kinds = cfg.kinds;
        Driver {
            tcp: Engine::new(cfg),
            proto: Tracker::new(proto, kinds),
            clock: Clock::default(),
            proto_on_clock: false,
        }
    }

    /// A live capture's driver: the tracker's expiry runs on the driver's clock with the TCP
    /// engine's, which [`Driver::advance`] moves on the wall clock while nothing arrives, so
    /// that a query never answered is counted as a timeout on time, not at the next datagram.
    pub fn live(cfg: EngineConfig) -> Driver {
        let kinds = cfg.kinds;
        Driver {
            tcp: Engine::new(cfg),
            proto: Tracker::new(ProtoConfig::default(), kinds).on_driver_clock(),
            clock: Clock::default(),
            proto_on_clock: true,
        }
    }

    /// One raw captured frame of link type `linktype`, record number `frame` (1-based),
    /// captured at `ts` (the live path: every frame moves the clock): decoded, then a TCP
    /// segment to [`Driver::segment_payload`], any other frame to [`Driver::datagram`]. `Err` is why no TCP segment came out of it
    /// (`DecodeError::NotTcp` for a frame the tracker was handed); time advanced either way.
    /// `Ok` and `Err` carry whether expiry ran.
    #[inline]
    pub fn frame<O: Observer>(
        &mut self,
        frame: u64,
        ts: Nanos,
        linktype: u32,
        data: &[u8],
        out: &mut O,
    ) -> Result<bool, (DecodeError, bool)> {
        // Straight to the Segment: moving the decoded packet out of a result costs a memcpy.
        match proto::decode_tcp(linktype, data) {
            Ok((ref seg, payload)) => Ok(self.segment_payload(frame, ts, seg, payload, out)),
            Err(DecodeError::NotTcp) => {
                let ticked = self.advance(ts);
                self.datagram(frame, ts, linktype, data, out);
                Err((DecodeError::NotTcp, ticked))
            }
            Err(e) => Err((e, self.advance(ts))),
        }
    }

    /// A decoded TCP segment with its captured payload: [`Driver::segment`], then the
    /// payload to the tracker when it may hold a DNS message (one length check for most
    /// segments). Returns whether expiry ran.
    #[inline]
    pub fn segment_payload<O: Observer>(
        &mut self,
        frame: u64,
        ts: Nanos,
        seg: &Segment,
        payload: &[u8],
        out: &mut O,
    ) -> bool {
        let ticked = self.segment(frame, ts, seg, out);
        self.proto.segment_payload(frame, ts, seg, payload, out);
        ticked
    }

    /// A frame that is not TCP (the TCP decoder said [`DecodeError::NotTcp`]), its link type
    /// and bytes: its UDP datagram or ICMP message, if any, to the tracker. The driver's
    /// clock does not move: a replay's TCP time is its TCP segments' (`metro analyze`'s TCP
    /// expiry, and so its counts, are those of every earlier release), and a replay's tracker
    /// expires on its own clock from the times it is given; a live capture moves the driver's
    /// clock with [`Driver::advance`] ([`Driver::frame`] does), which expires both.
    #[cold]
    pub fn datagram<O: Observer>(
        &mut self,
        frame: u64,
        ts: Nanos,
        linktype: u32,
        data: &[u8],
        out: &mut O,
    ) {
        self.proto.frame(frame, ts, linktype, data, out);
    }

    /// One decoded TCP segment (without its payload: DNS over TCP is not looked for),
    /// record number `frame` (1-based) captured at `ts`: expiry first when due, then the
    /// segment to the engine. Returns whether expiry ran.
    #[inline]
    pub fn segment<O: Observer>(
        &mut self,
        frame: u64,
        ts: Nanos,
        seg: &Segment,
        out: &mut O,
    ) -> bool {
        let ticked = self.advance(ts);
        self.tcp.process(frame, ts, seg, out);
        ticked
    }

    /// Time reaches `now` without a decoded frame (a live capture: a frame it cannot
    /// decode, or the wall clock while idle): expiry runs when due. Returns whether it ran.
    #[inline]
    pub fn advance(&mut self, now: Nanos) -> bool {
        let due = self.clock.due(now);
        if due {
            self.tcp.tick(now);
            if self.proto_on_clock {
                self.proto.tick(now);
            }
        }
        due
    }

    /// The end of a capture at `now`: the engine's books closed ([`Engine::close_books`]:
    /// flows past their timeout at the last tick) and the tracker's ([`Tracker::finish`]:
    /// timeouts, pending entries, QUIC connections classified).
    pub fn finish(&mut self, now: Nanos) {
        self.tcp.close_books();
        self.proto.finish(now);
    }

    /// The TCP engine (its counters, its table's size).
    pub fn tcp(&self) -> &Engine {
        &self.tcp
    }

    /// The QUIC, DNS and ICMP tracker (its counters).
    pub fn proto(&self) -> &Tracker {
        &self.proto
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expiry_runs_at_the_first_time_then_once_a_tick() {
        let mut c = Clock::default();
        let s = 1_000_000_000;
        let runs: Vec<bool> = [5 * s, 5 * s + 1, 6 * s - 1, 6 * s, 6 * s, 9 * s + 7, 10 * s]
            .iter()
            .map(|&t| c.due(t))
            .collect();
        assert_eq!(runs, [true, false, false, true, false, true, false]);
        // Time going back (a capture's records out of order) waits for the schedule.
        assert!(!c.due(2 * s));
        assert!(c.due(10 * s + 7));
        // The far end of time does not overflow.
        assert!(c.due(Nanos::MAX));
        assert!(c.due(Nanos::MAX));
    }
}
