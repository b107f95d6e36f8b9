//! The engine's limits ([`EngineConfig`]) and what it counts ([`Counters`]): plain data,
//! shared by the engine (which owns both) and the matcher in [`crate::rtt::conn`] (which reads
//! the one and bumps the other). A leaf: it uses only the `Nanos` alias and the `KindSet`
//! bitmask of [`crate::sample`], so `rtt::conn` can be built and tested without the engine.

use crate::Nanos;
use crate::sample::KindSet;

/// Limits and timeouts. Every table is bounded; what falls out is counted.
#[derive(Clone, Debug)]
pub struct EngineConfig {
    /// Connections tracked at once. A new one beyond this sheds the oldest unconfirmed entry
    /// (half-open or one-sided); confirmed connections (a real two-way exchange) hold at
    /// most 3/4 of the table and are evicted, stalest first, only by each other. See
    /// [`crate::flow`].
    pub max_flows: usize,
    /// Entries of the handshake cache (16 bytes each, allocated when the flow table first
    /// sheds a connection whose SYN or SYN/ACK awaits its ACK; 0: none): such a segment is
    /// kept there, so the ACK one round trip later is still timed. Rounded up to a power of
    /// two; the default, 2^21, is 32 MiB and holds about 1.5 s of a 1M SYN/s flood. See
    /// [`crate::flow::handshakes`].
    pub handshake_cache: usize,
    /// Segments awaiting an ACK, per direction of a connection.
    pub max_pending_segments: usize,
    /// TSvals awaiting an echo, per direction of a connection.
    pub max_pending_tsvals: usize,
    /// Acknowledged segments kept per direction of a connection, the newest, each for at
    /// most `duplicate_window_wide`, so that a copy captured after its ACK is still
    /// recognised (docs/accuracy.md). An idle connection holds them until its next ACK:
    /// this bounds what a table of idle connections holds (and so the memory and cache
    /// footprint of the pool), beyond which a late copy counts as a retransmission.
    pub max_recent_segments: usize,
    /// A connection with no packet for this long is forgotten.
    pub idle_timeout: Nanos,
    /// A connection this long after its FIN is forgotten.
    pub closed_timeout: Nanos,
    /// A connection this long after it closed in both directions, or was reset, is forgotten
    /// (only stray retransmissions can follow; keeps the table from filling with finished
    /// connections). At most `closed_timeout`.
    pub done_timeout: Nanos,
    /// A recorded TSval older than this is dropped unmatched (pping: at most 10 s).
    pub tsval_max_age: Nanos,
    /// Two copies of one frame (same direction, IP ID, seq, length, ACK, flags and
    /// timestamps) within this interval are a duplicate capture, not a retransmission, whatever
    /// the evidence (a twentieth of it when the IP ID is 0). See docs/accuracy.md.
    pub duplicate_window: Nanos,
    /// Two such copies up to this far apart are still a duplicate capture when the evidence is
    /// strong (mirror ports and taps deliver copies 10-15 ms apart): the sender's IP IDs vary
    /// (and `trust_ip_id`), so a retransmission would carry a new one; or the sender's TSval
    /// clock had already moved past the copy's TSval, so it cannot be a new transmission; or
    /// the copy is a SYN or SYN/ACK, first retransmitted after 1 s. Keep it well below the
    /// 200 ms minimum retransmission timeout.
    pub duplicate_window_wide: Nanos,
    /// Use the IP ID as evidence that two identical frames are one frame captured twice.
    /// Turn off where a middlebox rewrites IP IDs (then only TSvals and the narrow window
    /// decide).
    pub trust_ip_id: bool,
    /// A sample longer than this is implausible (TCP's retransmission timer never waits
    /// longer than 120 s; damaged captures have timestamps years apart): dropped, counted.
    pub max_rtt: Nanos,
    /// Which kinds of sample to produce.
    pub kinds: KindSet,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            max_flows: 1 << 20,
            handshake_cache: 1 << 21,
            max_pending_segments: 1024,
            max_pending_tsvals: 256,
            max_recent_segments: 8,
            idle_timeout: 300 * 1_000_000_000,
            closed_timeout: 60 * 1_000_000_000,
            done_timeout: 5 * 1_000_000_000,
            tsval_max_age: 10 * 1_000_000_000,
            duplicate_window: 2_000_000,
            duplicate_window_wide: 100_000_000,
            trust_ip_id: true,
            max_rtt: 120 * 1_000_000_000,
            kinds: KindSet::ALL,
        }
    }
}

/// What showed a copy captured beyond the narrow window to be the same frame: the index of
/// [`Counters::duplicates_wide`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CopyEvidence {
    /// The sender gives every packet its own IP ID.
    IpId = 0,
    /// The sender's TSval clock had already moved past the copy's TSval.
    TsVal = 1,
    /// A SYN or SYN/ACK, first retransmitted only after 1 s.
    Handshake = 2,
}

/// What tied a sample over a retransmitted segment to one transmission: the index of
/// [`Counters::disambiguated`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TimedBy {
    /// The ACK echoes the retransmission's TSval.
    TsecrRetransmission = 0,
    /// The ACK echoes the original's TSval.
    TsecrOriginal = 1,
    /// A DSACK reports the retransmission as a duplicate.
    Dsack = 2,
    /// The ACK stops inside the retransmitted range.
    AckInside = 3,
    /// A DSACK answers a retransmission of bytes already acknowledged.
    DsackRetransmission = 4,
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
    // Accuracy past Karn (docs/accuracy.md), grouped here.
    /// Of `duplicates`, copies beyond the narrow window recognised by strong evidence, by
    /// evidence ([`CopyEvidence`]): [IP ID, TSval, SYN or SYN/ACK (retransmitted only after
    /// 1 s)].
    pub duplicates_wide: [u64; 3],
    /// Samples over a retransmitted segment that the evidence tied to one transmission, by
    /// evidence ([`TimedBy`]): [the ACK echoes the retransmission's TSval, the ACK echoes the original's
    /// TSval, a DSACK reports the retransmission as a duplicate, the ACK stops inside the
    /// retransmitted range, a DSACK answers a retransmission of bytes already acknowledged].
    /// Included in `samples`.
    pub disambiguated: [u64; 5],
    /// Closing packet stamped at or before its opener: no sample.
    pub non_positive: u64,
    /// Samples longer than `max_rtt`: dropped.
    pub implausible: u64,
    pub flows_created: u64,
    /// Connections that showed a real two-way exchange (and became protected from floods).
    pub flows_confirmed: u64,
    /// Flows removed to make room, of both kinds below (the sum).
    pub flows_evicted_full: u64,
    /// Of those, unconfirmed entries (half-open or one-sided) shed for a new entry.
    pub flows_shed_unconfirmed: u64,
    /// Of those, confirmed connections evicted because confirmed ones filled their share.
    pub flows_evicted_confirmed: u64,
    pub flows_expired_idle: u64,
    pub flows_expired_closed: u64,
    /// SYNs and SYN/ACKs awaiting their ACK when their connection was shed, kept in the
    /// handshake cache.
    pub handshakes_cached: u64,
    /// Of those, the ones put back into a new connection by the packet that answered them
    /// (or sent them again): the answer is then timed (or counted ambiguous) as if the
    /// connection had never been shed.
    pub handshakes_resumed: u64,
    /// Cached ones displaced by newer ones before their ACK came.
    pub handshakes_overwritten: u64,
    /// Pending segments dropped because a direction's list was full.
    pub segments_evicted: u64,
    /// Pending TSvals dropped because a direction's list was full.
    pub tsvals_evicted: u64,
    /// Pending TSvals that aged out unmatched.
    pub tsvals_expired: u64,
}

impl Counters {
    /// Add another engine's counters (several files, or several shards of one file).
    pub fn add(&mut self, c: &Counters) {
        self.packets += c.packets;
        for (a, b) in self.samples.iter_mut().zip(c.samples) {
            *a += b;
        }
        self.ambiguous += c.ambiguous;
        self.retransmits += c.retransmits;
        self.duplicates += c.duplicates;
        for (a, b) in self.duplicates_wide.iter_mut().zip(c.duplicates_wide) {
            *a += b;
        }
        for (a, b) in self.disambiguated.iter_mut().zip(c.disambiguated) {
            *a += b;
        }
        self.non_positive += c.non_positive;
        self.implausible += c.implausible;
        self.flows_created += c.flows_created;
        self.flows_confirmed += c.flows_confirmed;
        self.flows_evicted_full += c.flows_evicted_full;
        self.flows_shed_unconfirmed += c.flows_shed_unconfirmed;
        self.flows_evicted_confirmed += c.flows_evicted_confirmed;
        self.flows_expired_idle += c.flows_expired_idle;
        self.flows_expired_closed += c.flows_expired_closed;
        self.handshakes_cached += c.handshakes_cached;
        self.handshakes_resumed += c.handshakes_resumed;
        self.handshakes_overwritten += c.handshakes_overwritten;
        self.segments_evicted += c.segments_evicted;
        self.tsvals_evicted += c.tsvals_evicted;
        self.tsvals_expired += c.tsvals_expired;
    }
}
