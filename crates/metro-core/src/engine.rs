//! The engine: `process(frame, ts, packet)` per decoded TCP segment, `tick(ts)` for expiry.
//! Owns the flow table and the counters; everything else is in [`crate::rtt`].

use std::net::SocketAddr;

use crate::Nanos;
use crate::rtt::{KindSet, Sample};
use crate::wire::Packet;

/// What the engine tells its caller, besides counters.
pub trait Observer {
    /// A new RTT sample.
    fn sample(&mut self, s: &Sample);
    /// `sender` retransmitted data to `receiver` (a segment starting below the highest byte
    /// already sent, that was not a duplicate capture of the same frame).
    fn retransmit(&mut self, _sender: SocketAddr, _receiver: SocketAddr, _ts: Nanos) {}
}

impl<F: FnMut(&Sample)> Observer for F {
    fn sample(&mut self, s: &Sample) {
        self(s)
    }
}

/// Limits and timeouts. Every table is bounded; what falls out is counted.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Connections tracked at once; a new one beyond this evicts the least recently seen.
    pub max_flows: usize,
    /// Segments awaiting an ACK, per direction of a connection.
    pub max_pending_segments: usize,
    /// TSvals awaiting an echo, per direction of a connection.
    pub max_pending_tsvals: usize,
    /// A connection with no packet for this long is forgotten.
    pub idle_timeout: Nanos,
    /// A connection this long after its FIN or RST is forgotten.
    pub closed_timeout: Nanos,
    /// A recorded TSval older than this is dropped unmatched (pping: at most 10 s).
    pub tsval_max_age: Nanos,
    /// Two copies of one frame (same direction, IP ID, seq and length) within this interval
    /// are a duplicate capture, not a retransmission.
    pub duplicate_window: Nanos,
    /// Which kinds of sample to produce.
    pub kinds: KindSet,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_flows: 1 << 20,
            max_pending_segments: 256,
            max_pending_tsvals: 64,
            idle_timeout: 300 * 1_000_000_000,
            closed_timeout: 60 * 1_000_000_000,
            tsval_max_age: 10 * 1_000_000_000,
            duplicate_window: 2_000_000,
            kinds: KindSet::ALL,
        }
    }
}

/// Counters of everything the engine saw, dropped or evicted. Monotonic.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// TCP segments processed.
    pub packets: u64,
    /// Samples emitted, by kind index (seq, handshake, ts).
    pub samples: [u64; 3],
    /// Would-be samples dropped because the acknowledged range was retransmitted or reordered.
    pub ambiguous: u64,
    /// Retransmissions seen (segment starting below the highest byte sent).
    pub retransmits: u64,
    /// Frames captured twice and skipped.
    pub duplicates: u64,
    /// Closing packet stamped at or before its opener: no sample.
    pub non_positive: u64,
    pub flows_created: u64,
    /// Flows evicted because the table was full.
    pub flows_evicted_full: u64,
    pub flows_expired_idle: u64,
    pub flows_expired_closed: u64,
    /// Pending segments dropped because a direction's list was full.
    pub segments_evicted: u64,
    /// Pending TSvals dropped because a direction's list was full.
    pub tsvals_evicted: u64,
    /// Pending TSvals that aged out unmatched.
    pub tsvals_expired: u64,
}

/// The RTT engine. Not thread-safe; one per packet source (or per shard).
pub struct Engine {
    cfg: EngineConfig,
    counters: Counters,
}

impl Engine {
    pub fn new(cfg: EngineConfig) -> Engine {
        Engine {
            cfg,
            counters: Counters::default(),
        }
    }

    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// Process one TCP segment captured at `ts` as record number `frame` (1-based).
    pub fn process<O: Observer>(&mut self, frame: u64, ts: Nanos, pkt: &Packet<'_>, out: &mut O) {
        let _ = (frame, ts, pkt, out);
        self.counters.packets += 1;
    }

    /// Expire idle and closed flows and old TSvals as of packet time `now`.
    pub fn tick(&mut self, now: Nanos) {
        let _ = now;
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Connections currently tracked.
    pub fn active_flows(&self) -> usize {
        0
    }
}
