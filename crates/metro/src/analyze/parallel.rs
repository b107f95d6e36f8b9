//! `metro analyze --threads N` (N > 1): one file over several cores, with the output of the
//! one-thread path.
//!
//! ```text
//!  reader thread                      shard threads (N)                 calling thread
//!  next_record + Segment::decode ──►  Engine (own flow table)  ──►  merge by frame ──► Collector
//!  shard = hash(both endpoints)      samples of the epoch            (sample lines, stats)
//! ```
//!
//! The reader decodes each record and appends what the engine reads of it (its frame number,
//! time and [`Segment`]) to the batch of the shard its two endpoints hash to (a symmetric
//! hash, so a connection's packets all go to one shard, in capture order). Every epoch
//! ([`epoch_len`] packets) the reader sends each shard its batch, empty or not, so batch `k`
//! of every shard covers the same frames: the calling thread takes batch `k`'s samples from
//! every shard, merges them by frame number (a frame's samples all come from one shard, in
//! the engine's emission order) and feeds them to the same `Collector` as the one-thread
//! path: whole samples when it writes sample lines, per-connection rows or the picture
//! (`--plot`, `--report`: then also each epoch's retransmissions, merged by frame),
//! otherwise 24-byte ones (frame, RTT, kind, the shard's number for the responder, whose
//! address the shard announces once; beyond `--max-responders` numbers, the address itself,
//! in the batch). The calling thread maps a shard's number to its report at the number's
//! first sample, in the merged order, so the responders with rows of their own are the
//! one-thread run's. Expiry ticks are decided by the reader with the one-thread rule (the
//! driver's `Clock`, on the global packet stream) and delivered to every shard at the same
//! place in its stream, so each shard ticks at the same packet times as the single engine.
//! Undecodable records, the unsupported-link-type messages and the damage message come
//! from the reader, as in the one-thread loop.
//!
//! Flow ids: each shard's engine numbers its connections 1, 2, ... A connection gets an id
//! when a packet creates it (at most one per packet), so the one-thread id is the rank of the
//! creating frame among all creating frames. Only per-connection rows use the id; with them,
//! each shard records the frame that created each of its ids (the engine reports it,
//! [`Observer::flow_started`]), samples carry that frame as their id meanwhile (same order, same grouping), and at the end of the file the rows are
//! renumbered to the rank.
//!
//! Same output, and its limits: a shard's engine sees exactly its connections' packets and
//! the same ticks, so it computes what the single engine computes for them, as long as the
//! single engine's choices do not depend on the other connections. Two do, in the flow
//! table: making room when the table (or its confirmed share) is full, and the expiry
//! sweep, which visits a slice of the slab per tick once the table has more than 1024 slots
//! (a connection past its idle or closed timeout is removed when the sweep reaches it, and
//! a packet arriving before that continues it). Each shard's table is `max_flows / N`
//! ([`shard_max_flows`]): if the single engine would make room, a shard does too, so the
//! samples are the same whenever the N-thread run's summary counts no flow removed for room
//! (`evicted: flows (table full)` 0), unless a connection sends again (other than a SYN after
//! a close) between its timeout and the sweep reaching it: more than 300 s idle, or 60 s
//! after FIN/RST, in a table of more than 1024 connections. The corpus's captures, which do
//! expire connections, have small tables and come out identical.
//!
//! Memory is bounded and does not depend on the capture: [`IN_FLIGHT`] batches queued per
//! shard and direction, each of at most [`batch_cap`] packets, buffers recycled.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::path::Path;
use std::sync::mpsc::{self, Receiver, Sender, SyncSender};
use std::thread;

use metro_core::aggregate::Numbering;
use metro_core::config::{Counters, EngineConfig};
use metro_core::driver::Clock;
use metro_core::engine::Engine;
use metro_core::proto::{ProtoConfig, ProtoCounters, Tracker};
use metro_core::sample::{Found, NO_TAG, Observer};
use metro_core::sample::{Kind, Sample};
use metro_core::wire::DecodeError;
use metro_core::{Nanos, Segment};

use super::{
    Collector, FileReport, OTHER, ResponderKey, Skipped, Summary, describe_read_error, progress,
};
use crate::pcap::CaptureReader;
use crate::replay::{Frames, replay};

/// Packets per shard and epoch, on average: large enough that handing a batch over costs
/// little (1024 made the 2-core run slower).
const SHARD_BATCH: usize = 4096;
/// Batches queued per shard, each way. Queues absorb the moments one shard has more work
/// than the other, or a thread is descheduled: 4 left a core idle more often (2-core run on
/// the 10M-packet bench capture 5-10% slower); 16 was no faster than 8 and holds 15 MB more
/// (a batch of 4096 packets is about 0.6 MB).
const IN_FLIGHT: usize = 8;

/// Packets per epoch (all shards together).
fn epoch_len(shards: usize) -> usize {
    (SHARD_BATCH * shards).min(1 << 15)
}

/// Packets a shard's batch holds at most: a quarter over its share of an epoch. An epoch
/// ends early when one batch is full (a connection much busier than the rest), so buffers
/// never grow and memory does not depend on the capture.
fn batch_cap(shards: usize) -> usize {
    epoch_len(shards).div_ceil(shards) * 5 / 4 + 16
}

/// Connections each shard's engine may track: its share of `max_flows`, rounded down (at
/// least 1), so all shards together never hold more than `max_flows` and the memory bound
/// does not depend on `--threads`. Rounding down also keeps each kind of limit no looser
/// than the single engine's (the shards' confirmed shares sum to at most its share): if the
/// single engine would have to make room, some shard makes room too, at that packet. So an
/// N-thread run that removed no connection for room computed what one thread computes.
fn shard_max_flows(max_flows: usize, shards: usize) -> usize {
    (max_flows / shards.max(1)).max(1)
}

/// One epoch's packets for one shard: frame number, time and the engine's input of each, 96
/// bytes an entry of which the `Segment` is 80 (the reader's core writes every byte and a
/// shard's core reads it); and the ticks to run before `items[pos]`.
struct InBatch {
    items: Vec<(u64, Nanos, Segment)>,
    ticks: Vec<(usize, Nanos)>,
}

/// What a shard's engine emitted during one epoch, in emission order.
#[derive(Default)]
struct OutBatch {
    /// Whole samples, when the collector wants them (sample lines, per-connection rows).
    samples: Vec<Sample>,
    /// Each whole sample's responder as the shard numbers them (see [`ShardObserver::responders`]).
    responders: Vec<u32>,
    /// Otherwise just what the per-responder statistics need: 24 bytes instead of 116
    /// written by the shard and read by the merging thread.
    compact: Vec<Compact>,
    /// Responders the shard numbered during this batch, with their addresses.
    new_responders: Vec<(u32, ResponderKey)>,
    /// Responders of compact samples the shard did not number (beyond the cap): such a
    /// sample's `responder` is [`INLINE`] plus the position here.
    inline: Vec<ResponderKey>,
    /// Retransmissions (frame, time), when the collector wants them (the picture).
    retransmits: Vec<(u64, Nanos)>,
}

/// A sample as the per-responder statistics see it.
#[derive(Clone, Copy)]
struct Compact {
    frame: u64,
    rtt: Nanos,
    /// The shard's number of the responder.
    responder: u32,
    kind: Kind,
}

impl OutBatch {
    fn with_capacity(cap: usize, whole: bool) -> OutBatch {
        let (whole_cap, compact_cap) = if whole { (cap, 0) } else { (0, cap) };
        OutBatch {
            samples: Vec::with_capacity(whole_cap),
            responders: Vec::with_capacity(whole_cap),
            compact: Vec::with_capacity(compact_cap),
            new_responders: Vec::new(),
            inline: Vec::new(),
            retransmits: Vec::new(),
        }
    }

    /// Empty, and no larger than twice `cap` (a burst of samples, more than one a packet
    /// over a whole batch, may have grown it).
    fn reset(&mut self, cap: usize) {
        self.samples.clear();
        self.responders.clear();
        self.compact.clear();
        self.new_responders.clear();
        self.inline.clear();
        self.retransmits.clear();
        if self.samples.capacity() > 2 * cap {
            self.samples.shrink_to(cap);
            self.responders.shrink_to(cap);
        }
        if self.compact.capacity() > 2 * cap {
            self.compact.shrink_to(cap);
        }
    }

    /// The frame of the `i`th sample, whichever form they take.
    #[inline]
    fn frame(&self, i: usize) -> Option<u64> {
        match self.samples.get(i) {
            Some(s) => Some(s.frame),
            None => self.compact.get(i).map(|c| c.frame),
        }
    }
}

/// What the reader thread found in the file.
#[derive(Default)]
struct ReaderEnd {
    frames: u64,
    error: Option<String>,
    undecodable: BTreeMap<&'static str, u64>,
    unsupported_linktypes: BTreeMap<u32, u64>,
    non_packets: u64,
    /// QUIC, DNS and ICMP (the reader's tracker).
    proto: ProtoCounters,
}

/// What a shard hands back at the end of the file.
struct ShardEnd {
    counters: Counters,
    /// The frame that created each of the shard's flow ids (id 1 first), if tracked.
    created: Vec<u64>,
}

/// Analyze one file with `threads` (> 1) shard engines. Same contract and same results as
/// the one-thread `analyze_one`.
pub(super) fn analyze_one(
    path: &Path,
    cfg: &EngineConfig,
    threads: usize,
    collector: &mut Collector<'_, '_>,
    summary: &mut Summary,
    progress: bool,
) -> FileReport {
    let reader = match super::open_capture(path) {
        Ok(r) => r,
        Err(e) => {
            return FileReport {
                path: path.to_path_buf(),
                records: 0,
                error: Some(e),
                opened: false,
            };
        }
    };
    let total = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let bar = progress::Bar::new(progress, &collector.file_name, total);
    let n = threads.max(1);
    let wants = Wants {
        flow_ids: collector.flows.is_some(),
        whole: collector.wants_whole_samples(),
        retransmits: collector.wants_retransmits(),
        max_responders: collector.responders.cap,
    };

    let (reader_end, shard_ends) = thread::scope(|scope| {
        let mut to_shard = Vec::with_capacity(n);
        let mut in_free = Vec::with_capacity(n);
        let mut from_shard = Vec::with_capacity(n);
        let mut out_free = Vec::with_capacity(n);
        let mut shard_handles = Vec::with_capacity(n);
        for _ in 0..n {
            let (in_tx, in_rx) = mpsc::sync_channel::<InBatch>(IN_FLIGHT);
            let (in_back_tx, in_back_rx) = mpsc::channel::<InBatch>();
            let (out_tx, out_rx) = mpsc::sync_channel::<OutBatch>(IN_FLIGHT);
            let (out_back_tx, out_back_rx) = mpsc::channel::<OutBatch>();
            to_shard.push(in_tx);
            in_free.push(in_back_rx);
            from_shard.push(out_rx);
            out_free.push(out_back_tx);
            let cfg = EngineConfig {
                max_flows: shard_max_flows(cfg.max_flows, n),
                // Each shard sees its share of a flood: its share of the handshake cache.
                handshake_cache: cfg.handshake_cache.div_ceil(n),
                ..cfg.clone()
            };
            shard_handles.push(
                thread::Builder::new()
                    .name("metro-shard".into())
                    .spawn_scoped(scope, move || {
                        run_shard(cfg, wants, in_rx, in_back_tx, out_tx, out_back_rx)
                    })
                    .expect("spawning a shard thread"),
            );
        }
        // The reader's own matchers (QUIC, DNS, ICMP) send their samples as one more shard.
        let (proto_tx, proto_rx) = mpsc::sync_channel::<OutBatch>(IN_FLIGHT);
        let (proto_back_tx, proto_back_rx) = mpsc::channel::<OutBatch>();
        from_shard.push(proto_rx);
        out_free.push(proto_back_tx);
        let tracker = Tracker::new(ProtoConfig::default(), cfg.kinds);
        let proto_out = (tracker, proto_tx, proto_back_rx);
        let reader_handle = thread::Builder::new()
            .name("metro-reader".into())
            .spawn_scoped(scope, move || {
                read_and_dispatch(path, reader, bar, to_shard, in_free, proto_out, wants)
            })
            .expect("spawning the reader thread");

        merge_into(collector, &from_shard, &out_free);
        // Whatever happened, let the other threads see closed channels, then join them.
        drop(from_shard);
        drop(out_free);
        let reader_end = reader_handle
            .join()
            .unwrap_or_else(|p| std::panic::resume_unwind(p));
        let shard_ends: Vec<ShardEnd> = shard_handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|p| std::panic::resume_unwind(p)))
            .collect();
        (reader_end, shard_ends)
    });

    summary.records += reader_end.frames;
    summary.non_packets += reader_end.non_packets;
    for (reason, count) in reader_end.undecodable {
        *summary.undecodable.entry(reason).or_insert(0) += count;
    }
    for (lt, count) in reader_end.unsupported_linktypes {
        *summary.unsupported_linktypes.entry(lt).or_insert(0) += count;
    }
    summary.proto.add(&reader_end.proto);
    for s in &shard_ends {
        summary.tcp_packets += s.counters.packets;
        summary.engine.add(&s.counters);
    }
    if wants.flow_ids {
        renumber_flows(collector, &shard_ends);
    }
    FileReport {
        path: path.to_path_buf(),
        records: reader_end.frames,
        error: reader_end.error,
        opened: true,
    }
}

/// The reader thread: records to decoded packets to per-shard batches, one epoch at a time.
fn read_and_dispatch(
    path: &Path,
    mut reader: CaptureReader,
    bar: progress::Bar,
    to_shard: Vec<SyncSender<InBatch>>,
    in_free: Vec<Receiver<InBatch>>,
    (proto, proto_tx, proto_free): (Tracker, SyncSender<OutBatch>, Receiver<OutBatch>),
    wants: Wants,
) -> ReaderEnd {
    let n = to_shard.len();
    let cap = batch_cap(n);
    let mut end = ReaderEnd::default();
    let mut dispatch = Dispatch {
        batches: in_free.iter().map(|f| fresh(f, cap)).collect(),
        to_shard,
        in_free,
        epoch: epoch_len(n),
        cap,
        epoch_left: epoch_len(n),
        stopped: false,
        clock: Clock::default(),
        skipped: Skipped {
            undecodable: &mut end.undecodable,
            unsupported: &mut end.unsupported_linktypes,
            seen: Vec::new(),
            bar,
            path,
        },
        proto,
        proto_out: OutBatch::with_capacity(16, wants.whole),
        proto_numbers: Numbering::default(),
        proto_tx,
        proto_free,
        wants,
    };
    let done = replay(&mut reader, &mut dispatch);
    dispatch.proto.finish(done.last_ts);
    // The last, partial epoch (unless a shard is gone: the merger stopped).
    if !dispatch.stopped
        && (dispatch.epoch_left < dispatch.epoch
            || dispatch.batches.iter().any(|b| !b.ticks.is_empty())
            || dispatch.proto_out.frame(0).is_some())
    {
        dispatch.flush();
    }
    dispatch.skipped.bar.clear();
    end.proto = dispatch.proto.counters().clone();
    end.frames = done.records;
    end.non_packets = done.non_packets;
    end.error = done.error.as_ref().map(describe_read_error);
    end
}

/// A batch buffer handed back by its shard, or a new one.
fn fresh(free: &Receiver<InBatch>, cap: usize) -> InBatch {
    free.try_recv().unwrap_or_else(|_| InBatch {
        items: Vec::with_capacity(cap),
        ticks: Vec::new(),
    })
}

/// The reader's end of a replay: each decoded packet to its shard's batch, expiry decided
/// on the whole stream (the one-thread driver's clock) and delivered to every shard; QUIC,
/// DNS and ICMP to the reader's own tracker, whose samples go out as one more shard's.
struct Dispatch<'a, 'c> {
    batches: Vec<InBatch>,
    to_shard: Vec<SyncSender<InBatch>>,
    in_free: Vec<Receiver<InBatch>>,
    epoch: usize,
    cap: usize,
    /// Packets until the epoch ends (counted down: one decrement and test a packet).
    epoch_left: usize,
    /// A flush found a shard gone.
    stopped: bool,
    clock: Clock,
    skipped: Skipped<'a, 'c>,
    proto: Tracker,
    /// The tracker's samples of this epoch, numbered as a shard numbers its own.
    proto_out: OutBatch,
    proto_numbers: Numbering<ResponderKey>,
    proto_tx: SyncSender<OutBatch>,
    proto_free: Receiver<OutBatch>,
    wants: Wants,
}

impl Dispatch<'_, '_> {
    /// The tracker's observer: into `proto_out`, as a shard's.
    #[inline]
    fn proto_sink<'b>(
        out: &'b mut OutBatch,
        numbers: &'b mut Numbering<ResponderKey>,
        wants: Wants,
    ) -> ShardObserver<'b> {
        ShardObserver {
            out,
            responders: numbers,
            whole: wants.whole,
            created: None,
            retransmits: false,
            frame: 0,
            max_responders: wants.max_responders,
        }
    }

    /// Sends every shard its batch; false once a shard is gone (the merger stopped).
    fn flush(&mut self) -> bool {
        for (s, tx) in self.to_shard.iter().enumerate() {
            let next = fresh(&self.in_free[s], self.cap);
            let b = std::mem::replace(&mut self.batches[s], next);
            if tx.send(b).is_err() {
                self.stopped = true;
                return false;
            }
        }
        let mut next = self
            .proto_free
            .try_recv()
            .unwrap_or_else(|_| OutBatch::with_capacity(16, self.wants.whole));
        next.reset(16);
        if self
            .proto_tx
            .send(std::mem::replace(&mut self.proto_out, next))
            .is_err()
        {
            self.stopped = true;
            return false;
        }
        true
    }
}

impl Frames for Dispatch<'_, '_> {
    #[inline]
    fn segment(&mut self, frame: u64, ts: Nanos, seg: &Segment, payload: &[u8]) -> ControlFlow<()> {
        // DNS over TCP, in this epoch's tracker batch as the segment is in its shard's.
        if self.proto.may_be_dns(payload) {
            let mut sink =
                Self::proto_sink(&mut self.proto_out, &mut self.proto_numbers, self.wants);
            self.proto
                .segment_payload(frame, ts, seg, payload, &mut sink);
        }
        if self.clock.due(ts) {
            for b in self.batches.iter_mut() {
                b.ticks.push((b.items.len(), ts));
            }
        }
        let n = self.batches.len();
        let batch = &mut self.batches[seg.shard(n)].items;
        batch.push((frame, ts, *seg));
        self.epoch_left -= 1;
        if self.epoch_left == 0 || batch.len() == self.cap {
            self.epoch_left = self.epoch;
            if !self.flush() {
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    }

    fn not_tcp(&mut self, frame: u64, ts: Nanos, linktype: u32, data: &[u8]) {
        let mut sink = Self::proto_sink(&mut self.proto_out, &mut self.proto_numbers, self.wants);
        self.proto.frame(frame, ts, linktype, data, &mut sink);
    }

    fn undecodable(&mut self, e: DecodeError) {
        self.skipped.count(e);
    }

    fn progress(&mut self, reader: &CaptureReader) {
        self.skipped.bar.update(reader.compressed_bytes_read());
    }
}

/// Marks a compact sample's responder as a position in its batch's `inline` addresses.
const INLINE: u32 = 1 << 31;

/// The endpoints of a retransmission handed to the collector (which keeps only its time).
const NOWHERE: SocketAddr = SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), 0);

/// Collects what the engine emits into a batch.
struct ShardObserver<'a> {
    out: &'a mut OutBatch,
    /// The shard's own numbering of responder addresses (a shard numbers its responders
    /// without asking the calling thread, which maps each number to its report once).
    responders: &'a mut Numbering<ResponderKey>,
    /// Whole samples, or compact ones.
    whole: bool,
    /// When per-connection rows need flow ids: the frame that created each of the shard's
    /// ids (id 1 first). Whole samples carry that frame as their id.
    created: Option<&'a mut Vec<u64>>,
    /// Whether retransmissions are kept (with the frame being processed).
    retransmits: bool,
    frame: u64,
    /// Responders numbered at most (the collector's cap); any more are [`OTHER`].
    max_responders: usize,
}

impl ShardObserver<'_> {
    /// The shard's number of a responder: numbered up to the collector's cap; beyond,
    /// [`OTHER`], and the sample carries its address (whole ones always do; compact ones
    /// in `inline`): a shard cannot know which responders the collector tracks, the first
    /// `cap` of all shards.
    #[inline]
    fn number(&mut self, ip: ResponderKey, tag: &mut u32) -> u32 {
        match self.responders.find(ip, tag) {
            Some(n) => n,
            None if self.responders.len() < self.max_responders => {
                let n = self.responders.add(ip, tag);
                self.out.new_responders.push((n, ip));
                n
            }
            None => OTHER,
        }
    }

    /// A compact sample of responder number `n` (its address inline beyond the cap).
    #[inline]
    fn push_compact(&mut self, n: u32, ip: ResponderKey, frame: u64, rtt: Nanos, kind: Kind) {
        let out = &mut *self.out;
        let responder = if n == OTHER {
            out.inline.push(ip);
            INLINE | (out.inline.len() - 1) as u32
        } else {
            n
        };
        out.compact.push(Compact {
            frame,
            rtt,
            responder,
            kind,
        });
    }
}

impl Observer for ShardObserver<'_> {
    #[inline]
    fn sample(&mut self, s: &Sample) {
        let mut tag = NO_TAG;
        self.sample_tagged(s, &mut tag);
    }

    #[inline]
    fn sample_tagged(&mut self, s: &Sample, tag: &mut u32) {
        let ip = (s.responder.ip(), s.kind.protocol_index());
        let n = self.number(ip, tag);
        let out = &mut *self.out;
        if self.whole {
            let mut s = *s;
            if let Some(created) = &self.created {
                s.flow_id = *usize::try_from(s.flow_id - 1)
                    .ok()
                    .and_then(|i| created.get(i))
                    .expect("the engine reports each flow before its samples");
            }
            out.samples.push(s);
            out.responders.push(n);
        } else {
            self.push_compact(n, ip, s.frame, s.rtt, s.kind);
        }
    }

    /// The TCP engine's samples: a compact one straight from what the engine found, without
    /// making the whole sample (its two socket addresses) first.
    #[inline]
    fn found(&mut self, f: Found<'_>, tag: &mut u32) {
        if self.whole {
            self.sample_tagged(&f.sample(), tag);
            return;
        }
        let ip = (*f.responder, f.kind.protocol_index());
        let n = self.number(ip, tag);
        self.push_compact(n, ip, f.frame, f.rtt, f.kind);
    }

    fn retransmit(&mut self, _sender: SocketAddr, _receiver: SocketAddr, ts: Nanos) {
        if self.retransmits {
            self.out.retransmits.push((self.frame, ts));
        }
    }

    #[inline]
    fn flow_started(&mut self, id: u64, frame: u64) {
        if let Some(created) = &mut self.created {
            debug_assert_eq!(id, created.len() as u64 + 1, "ids are numbered in order");
            created.push(frame);
        }
    }
}

/// What a shard keeps of what its engine emits, besides the per-responder statistics.
#[derive(Clone, Copy)]
struct Wants {
    /// The frame that created each flow id (per-connection rows).
    flow_ids: bool,
    /// Whole samples (sample lines, per-connection rows, the picture).
    whole: bool,
    /// Retransmissions (the picture).
    retransmits: bool,
    /// The collector's cap on responders.
    max_responders: usize,
}

/// A shard thread: its own engine over its connections' packets, one batch at a time.
fn run_shard(
    cfg: EngineConfig,
    wants: Wants,
    rx: Receiver<InBatch>,
    in_back: Sender<InBatch>,
    tx: SyncSender<OutBatch>,
    out_free: Receiver<OutBatch>,
) -> ShardEnd {
    let mut engine = Engine::new(cfg);
    let mut created: Vec<u64> = Vec::new();
    let mut responders = Numbering::default();
    while let Ok(mut batch) = rx.recv() {
        let cap = batch.items.capacity();
        let mut out = out_free
            .try_recv()
            .unwrap_or_else(|_| OutBatch::with_capacity(cap, wants.whole));
        out.reset(cap);
        // The ticks to run before item `next_tick` (`usize::MAX` when none is left).
        let mut ticks = batch.ticks.iter();
        let mut pending = ticks.next();
        let mut next_tick = pending.map_or(usize::MAX, |t| t.0);
        let mut sink = ShardObserver {
            out: &mut out,
            responders: &mut responders,
            whole: wants.whole,
            created: wants.flow_ids.then_some(&mut created),
            retransmits: wants.retransmits,
            frame: 0,
            max_responders: wants.max_responders,
        };
        for (i, (frame, ts, seg)) in batch.items.iter().enumerate() {
            if i == next_tick {
                while let Some(&(_, ts)) = pending.filter(|t| t.0 == i) {
                    engine.tick(ts);
                    pending = ticks.next();
                }
                next_tick = pending.map_or(usize::MAX, |t| t.0);
            }
            sink.frame = *frame;
            engine.process(*frame, *ts, seg, &mut sink);
        }
        // Ticks after the batch's last packet (the reader ticks before a packet, so these
        // are at `items.len()`).
        while let Some(&(_, ts)) = pending {
            engine.tick(ts);
            pending = ticks.next();
        }
        batch.items.clear();
        batch.ticks.clear();
        let _ = in_back.send(batch);
        if tx.send(out).is_err() {
            break;
        }
    }
    // As one thread's driver does at the end (the same ticks reach every shard).
    engine.close_books();
    ShardEnd {
        counters: engine.counters().clone(),
        created,
    }
}

/// The calling thread: each epoch's samples from every shard, merged by frame, into the
/// collector. Returns when the shards are done (or one is gone).
fn merge_into(
    collector: &mut Collector<'_, '_>,
    from_shard: &[Receiver<OutBatch>],
    out_free: &[Sender<OutBatch>],
) {
    let n = from_shard.len();
    let mut outs: Vec<OutBatch> = (0..n).map(|_| OutBatch::default()).collect();
    let mut pos = vec![0usize; n];
    // Per shard, by the shard's responder number: where the collector aggregates it (its
    // tag, for whole samples; its exact position, for compact ones).
    let mut tags: Vec<Vec<u32>> = vec![Vec::new(); n];
    let mut retransmits: Vec<(u64, Nanos)> = Vec::new();
    // Per shard, by the shard's responder number: the address.
    let mut addrs: Vec<Vec<ResponderKey>> = vec![Vec::new(); n];
    'epochs: loop {
        for s in 0..n {
            match from_shard[s].recv() {
                Ok(b) => outs[s] = b,
                // All shards get the same number of batches: the first closed channel ends
                // the file (a panicked shard is re-raised when it is joined).
                Err(_) => break 'epochs,
            }
            pos[s] = 0;
            // Numbers announced now are mapped to the collector's report at their first
            // sample, in the merged order, so that the first `max_responders` responders
            // get their own rows as in the one-thread run.
            for &(r, ip) in &outs[s].new_responders {
                debug_assert_eq!(r as usize, addrs[s].len(), "numbered in order");
                addrs[s].push(ip);
                tags[s].push(NO_TAG);
            }
        }
        loop {
            // The shard with the lowest next frame, and the lowest next frame of the others.
            let mut best = usize::MAX;
            let mut best_frame = u64::MAX;
            let mut second = u64::MAX;
            for s in 0..n {
                if let Some(f) = outs[s].frame(pos[s]) {
                    if f < best_frame {
                        second = best_frame;
                        best_frame = f;
                        best = s;
                    } else if f < second {
                        second = f;
                    }
                }
            }
            if best == usize::MAX {
                break;
            }
            // A frame's samples come from one shard, except a TCP segment carrying DNS: its
            // TCP samples (lower shard) first, then the reader's, as one thread emits them.
            let out = &outs[best];
            let from = pos[best];
            let shard_tags = &mut tags[best];
            if out.samples.is_empty() {
                // One pass: each sample of the run aggregated as it is found to belong.
                let mut len = 0;
                for c in &out.compact[from..] {
                    if c.frame >= second && c.frame != best_frame {
                        break;
                    }
                    len += 1;
                    let at = if c.responder & INLINE != 0 {
                        collector.responder_index(out.inline[(c.responder & !INLINE) as usize])
                    } else {
                        let t = &mut shard_tags[c.responder as usize];
                        if *t == NO_TAG {
                            *t = collector.responder_index(addrs[best][c.responder as usize]);
                        }
                        *t
                    };
                    collector.aggregate_at(at, c.kind, c.rtt);
                }
                pos[best] += len;
            } else {
                let run = &out.samples[from..];
                let len = run
                    .iter()
                    .take_while(|x| x.frame < second || x.frame == best_frame)
                    .count();
                for (x, &r) in run[..len].iter().zip(&out.responders[from..]) {
                    let mut beyond = NO_TAG;
                    let tag = shard_tags.get_mut(r as usize).unwrap_or(&mut beyond);
                    collector.sample_tagged(x, tag);
                }
                pos[best] += len;
            }
        }
        if collector.wants_retransmits() {
            // In frame order, as one engine reports them (a frame's all come from one shard,
            // in order: the sort is stable). The picture bins them apart from the samples.
            retransmits.clear();
            for b in &outs {
                retransmits.extend_from_slice(&b.retransmits);
            }
            retransmits.sort_by_key(|r| r.0);
            for &(_, ts) in &retransmits {
                collector.retransmit(NOWHERE, NOWHERE, ts);
            }
        }
        for (s, b) in outs.iter_mut().enumerate() {
            let _ = out_free[s].send(std::mem::take(b));
        }
    }
}

/// Gives this file's per-connection rows the one-thread flow ids: the rank of the creating
/// frame among every shard's creating frames (rows carry the creating frame until now).
fn renumber_flows(collector: &mut Collector<'_, '_>, shard_ends: &[ShardEnd]) {
    let Some(flows) = collector.flows.as_mut() else {
        return;
    };
    let mut frames: Vec<u64> = shard_ends
        .iter()
        .flat_map(|s| s.created.iter().copied())
        .collect();
    frames.sort_unstable();
    let file = collector.file_idx;
    let rows: Vec<_> = flows.extract_if(|k, _| k.0 == file).collect();
    for ((f, created_at, responder), mut row) in rows {
        if created_at == 0 {
            // Not a TCP connection (QUIC, DNS, ICMP samples carry 0).
            flows.insert((f, 0, responder), row);
            continue;
        }
        let id = frames
            .binary_search(&created_at)
            .map(|i| i as u64 + 1)
            .expect("a sample's flow was created in this file");
        row.flow_id = id;
        flows.insert((f, id, responder), row);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use metro_core::wire;

    #[test]
    fn a_batch_entry_is_smaller_than_a_packet_with_its_frame_and_time() {
        let entry = std::mem::size_of::<(u64, Nanos, Segment)>();
        let whole = 16 + std::mem::size_of::<wire::Packet<'static>>();
        eprintln!("batch entry {entry} bytes, Packet + frame + time {whole} bytes");
        assert!(entry <= 96, "{entry}");
        assert!(entry * 3 <= whole * 2, "{entry} vs {whole}");
    }

    /// Both directions of a connection go to one shard, and connections spread evenly:
    /// clients of a few servers on one port (the usual shape), IPv4 and IPv6.
    #[test]
    fn shards_agree_on_both_directions_and_balance() {
        let pkt = |src: IpAddr, sport: u16, dst: IpAddr, dport: u16| Segment {
            src,
            dst,
            ip_id: 0,
            sport,
            dport,
            flags: wire::TcpFlags::default(),
            seq: metro_core::seq::SeqNum::ZERO,
            ack: metro_core::seq::SeqNum::ZERO,
            payload_len: 0,
            timestamp: None,
            dsack: None,
            first_fragment: false,
        };
        for shards in [2usize, 3, 4, 7] {
            let mut counts = vec![0u32; shards];
            let mut n = 0;
            for server in 0..4u32 {
                for client in 0..2500u32 {
                    let (s, c): (IpAddr, IpAddr) = if client % 3 == 0 {
                        (
                            std::net::Ipv6Addr::from(0xfd00_u128 << 112 | u128::from(server))
                                .into(),
                            std::net::Ipv6Addr::from(0xfd00_0001_u128 << 96 | u128::from(client))
                                .into(),
                        )
                    } else {
                        (
                            std::net::Ipv4Addr::from(0x0a00_0000 + server).into(),
                            std::net::Ipv4Addr::from(0xac10_0000 + client / 7).into(),
                        )
                    };
                    let port = 32768 + (client * 13 % 28000) as u16;
                    let up = pkt(c, port, s, 443).shard(shards);
                    let down = pkt(s, 443, c, port).shard(shards);
                    assert_eq!(up, down);
                    counts[up] += 1;
                    n += 1;
                }
            }
            let even = n as f64 / shards as f64;
            for &k in &counts {
                assert!(
                    (f64::from(k) - even).abs() < even * 0.1,
                    "{shards} shards: {counts:?}"
                );
            }
        }
    }
}
