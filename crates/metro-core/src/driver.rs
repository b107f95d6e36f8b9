//! The driver: decoded frames and the time they were captured go in, engine work comes out.
//! The core owns its time, as smoltcp's `Interface::poll(timestamp)` does: a caller hands
//! over each decoded frame with its capture time (or, when nothing arrives, the time now),
//! and the driver decides when expiry runs, on one schedule for every caller ([`Clock`]:
//! at the first time it sees, then once per [`TICK`] of that time).
//!
//! Today a decoded frame is a TCP [`Segment`] and goes to the TCP [`Engine`]; an engine for
//! other protocols sits beside it here, dispatched by the frame's kind, on the same clock.

use crate::Nanos;
use crate::Segment;
use crate::config::EngineConfig;
use crate::engine::Engine;
use crate::sample::Observer;

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
    clock: Clock,
}

impl Driver {
    pub fn new(cfg: EngineConfig) -> Driver {
        Driver {
            tcp: Engine::new(cfg),
            clock: Clock::default(),
        }
    }

    /// One decoded TCP segment, record number `frame` (1-based) captured at `ts`: expiry
    /// first when due, then the segment to the engine. Returns whether expiry ran.
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
        }
        due
    }

    /// The TCP engine (its counters, its table's size).
    pub fn tcp(&self) -> &Engine {
        &self.tcp
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
