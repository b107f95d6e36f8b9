//! One instance's capture thread: packets from libpcap (or a capture file) through
//! `metro_core`'s decoder and engine into the [`Interval`] the thread owns, handed to the
//! flusher when it asks (no lock per sample).
//!
//! The loop never blocks longer than the read timeout, checks the stop flag and the watch
//! list's generation between packets (re-installing the kernel filter when a host name moved),
//! answers the flusher's request for the interval at least every 64 packets or read timeout,
//! ticks the engine on packet time (wall time while idle), and reopens a capture that failed
//! (interface down or gone) with exponential backoff from 1 s to 30 s.
//!
//! A file instance runs on packet time only: it flushes every `flush_interval` of packet
//! time, as fast as it reads, and hands its reports to the flusher through a channel.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::SyncSender;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use metro_core::config::EngineConfig;
use metro_core::driver::{Driver, TICK};
use metro_core::proto::ProtoCounters;
use metro_core::sample::Sample;
use metro_core::sample::{NO_TAG, Observer};

use super::config::DutyCycle;
use super::containers::{self, Attribution};
use super::dedupe::Dedupe;
use super::filter;
use super::flush::Msg;
use super::live::{self, Live, LiveOptions, Next};
use super::report::{InstanceShared, Interval};
use super::resolve::interface_addresses;
use super::samples::SampleBuf;
use super::watch::{LocalSet, WatchList};

const BACKOFF_MIN: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// go-metro's duty cycle on packet time: windows of `duration`, `interval` apart, the
/// first opening at the instance's first packet (`origin`, shared by the engine threads of
/// an in-kernel capture, so that they all measure in the same windows).
struct Duty {
    cycle: DutyCycle,
    window: Option<(i64, i64)>,
}

impl Duty {
    fn admit(&mut self, ts: i64, origin: &AtomicI64) -> bool {
        let dur = self.cycle.duration.as_nanos() as i64;
        let gap = self.cycle.interval.as_nanos() as i64;
        let (start, end) = *self.window.get_or_insert_with(|| {
            // The first packet of the instance sets the origin; a later thread finds it.
            let o =
                match origin.compare_exchange(i64::MIN, ts, Ordering::Relaxed, Ordering::Relaxed) {
                    Ok(_) => ts,
                    Err(first) => first,
                };
            (o, o + dur)
        });
        if ts < start {
            return false;
        }
        if ts < end {
            return true;
        }
        // Past the window: the next one starts `gap` after it ended; skip whole periods.
        let period = dur + gap;
        let mut s = end + gap;
        if ts >= s + period {
            s += (ts - s) / period * period;
        }
        self.window = Some((s, s + dur));
        ts >= s && ts < s + dur
    }
}

/// How a NAT copy's two rewritten addresses rank (agent::dedupe keeps the higher one's
/// sighting): a container's namespace (2) over an unknown address (1) over the host's own (0).
fn nat_rank<'a>(
    locals: &'a LocalSet,
    attr: Option<&'a Attribution>,
) -> impl Fn(std::net::IpAddr) -> u8 + 'a {
    move |ip| match attr.and_then(|a| a.namespace(ip).map(|n| (a, n))) {
        Some((a, n)) => u8::from(n.inode != a.own_netns) * 2,
        None => u8::from(!locals.contains(ip)),
    }
}

/// Who owns an address, as a thread of an instance sees it: the instance's local addresses
/// and, while container attribution is on, the namespaces' (both shared, generation-stamped
/// state: any thread holds its own view and picks up a new version between batches). Ranks
/// a NAT copy's sightings ([`nat_rank`]) and classifies samples ([`Obs`]).
struct Owners {
    locals: (u64, Arc<LocalSet>),
    /// The container attribution, when on for this instance.
    attr: Option<(u64, Arc<Attribution>)>,
}

impl Owners {
    fn new(shared: &InstanceShared) -> Owners {
        Owners {
            locals: shared.locals.get(),
            attr: None,
        }
    }

    /// Pick up a new set of local addresses or container attribution (a generation compare
    /// each).
    #[inline]
    fn refresh(&mut self, shared: &InstanceShared) {
        if shared.locals.generation() != self.locals.0 {
            self.locals = shared.locals.get();
        }
        if !shared.container_tags.load(Ordering::Relaxed) {
            self.attr = None;
            return;
        }
        let g = containers::global();
        if self.attr.as_ref().is_none_or(|a| a.0 != g.generation()) {
            self.attr = Some(g.get());
        }
    }

    fn attr(&self) -> Option<&Attribution> {
        self.attr.as_ref().map(|a| &*a.1)
    }

    /// [`nat_rank`] on this view.
    #[inline]
    fn rank(&self) -> impl Fn(std::net::IpAddr) -> u8 + '_ {
        nat_rank(&self.locals.1, self.attr())
    }
}

/// The copy check of an `any` instance (agent::dedupe) run apart from its engines: in the
/// reader of an in-kernel capture with `threads: N` (agent::ebpf), on every record before it
/// is sharded by connection. A NAT copy has other addresses or ports than its first
/// sighting, so it hashes to another shard, whose engine never saw that sighting: checked
/// there, it would be kept and its connection counted twice. The engines' processors then
/// check nothing ([`Processor::without_copy_check`]); the copies dropped here are counted
/// as received (the engines count what reaches them) and published by kind, as a
/// [`Processor`] publishes its own, so that `metro.packets.copies` and
/// `metro.packets.received` are those of one engine.
pub struct CopyCheck {
    shared: Arc<InstanceShared>,
    dedupe: Dedupe,
    owners: Owners,
    /// Copies dropped since the last [`CopyCheck::publish`]: packets received.
    received: u64,
    /// Plain and NAT copies as last published.
    published: [u64; 2],
}

impl CopyCheck {
    /// The check of an instance on `any`; None for one interface (no copies to recognise).
    pub fn new(shared: Arc<InstanceShared>) -> Option<CopyCheck> {
        (shared.iface == "any").then(|| CopyCheck {
            owners: Owners::new(&shared),
            shared,
            dedupe: Dedupe::new(),
            received: 0,
            published: [0; 2],
        })
    }

    /// Between batches: the counts published, a new ranking picked up.
    pub fn refresh(&mut self) {
        self.publish();
        self.owners.refresh(&self.shared);
    }

    /// Whether a segment the in-kernel capture decoded, seen on `ifindex` at `ts`, is a
    /// copy (dropped: counted here); as [`Processor::segment`] checks it.
    #[inline]
    pub fn segment(&mut self, ts: i64, seg: &metro_core::Segment, ifindex: u32) -> bool {
        let copy = self
            .dedupe
            .is_copy_segment(seg, ifindex, ts, self.owners.rank());
        self.received += u64::from(copy);
        copy
    }

    /// Whether a frame of link type `linktype` is a copy (dropped: counted here); as
    /// [`Processor::packet`] checks it.
    #[inline]
    pub fn frame(&mut self, linktype: u32, ts: i64, data: &[u8]) -> bool {
        let copy = self
            .dedupe
            .is_copy_ranked(linktype, ts, data, self.owners.rank());
        self.received += u64::from(copy);
        copy
    }

    /// Adds the copies dropped since the last call to the instance's counters.
    pub fn publish(&mut self) {
        let c = &self.shared.cumulative;
        if self.received != 0 {
            c.packets_received
                .fetch_add(std::mem::take(&mut self.received), Ordering::Relaxed);
        }
        let d = &self.dedupe;
        let now = [d.copies - d.nat_copies, d.nat_copies];
        for ((n, was), a) in now
            .iter()
            .zip(&mut self.published)
            .zip([&c.packets_copies_plain, &c.packets_copies_nat])
        {
            if *n != *was {
                a.fetch_add(n - *was, Ordering::Relaxed);
                *was = *n;
            }
        }
    }
}

/// What a raw frame of the in-kernel capture is to the engine ([`Processor::raw_frame`]).
pub enum RawKind<'a> {
    /// A TCP segment, one of whose ends is watched, and its captured payload (for DNS over
    /// TCP).
    Segment(metro_core::Segment, &'a [u8]),
    /// A watched UDP datagram or ICMP message: the libpcap path's way, as a frame.
    Datagram,
    /// Nothing watched: counted as filtered.
    Unwatched,
    /// A frame metro-core does not decode: a decode error.
    Undecodable,
}

impl RawKind<'_> {
    /// `data` of link type `linktype`, against the watch list (the program could not look).
    pub fn classify<'a>(linktype: u32, data: &'a [u8], watch: &WatchList) -> RawKind<'a> {
        let mut seg = metro_core::Segment::EMPTY;
        match metro_core::Segment::decode_into(linktype, data, &mut seg) {
            Ok(payload) if watch.contains(seg.src) || watch.contains(seg.dst) => {
                RawKind::Segment(seg, payload)
            }
            // A UDP or ICMP frame (QUIC, DNS, ICMP echo: the program hands over the watched
            // ones when the instance's `protocols` name them) takes the libpcap path's way.
            Err(metro_core::wire::DecodeError::NotTcp)
                if filter::watched_datagram(linktype, data, watch) =>
            {
                RawKind::Datagram
            }
            Ok(_) | Err(metro_core::wire::DecodeError::NotTcp) => RawKind::Unwatched,
            Err(_) => RawKind::Undecodable,
        }
    }
}

/// The engine's observer: folds samples and retransmissions into the interval the capture
/// thread owns (no lock).
struct Obs<'a> {
    interval: &'a mut Interval,
    /// `--samples`: this thread's buffer of JSON lines.
    samples: Option<&'a mut SampleBuf>,
    locals: &'a LocalSet,
    watch: &'a WatchList,
    /// Namespace classification when container attribution is on.
    attr: Option<&'a Attribution>,
    /// (local, remote) socket -> the local socket's cgroup, from the in-kernel capture.
    cgroups: &'a foldhash::HashMap<(SocketAddr, SocketAddr), u64>,
}

impl Observer for Obs<'_> {
    fn sample(&mut self, s: &Sample) {
        let mut tag = NO_TAG;
        self.sample_tagged(s, &mut tag);
    }
    fn sample_tagged(&mut self, s: &Sample, tag: &mut u32) {
        if let Some(b) = &mut self.samples {
            b.push(s);
        }
        // By namespace when container attribution is on (agent::containers).
        let internal = self
            .attr
            .and_then(|a| a.internal(s.responder.ip(), s.peer.ip()));
        self.interval
            .add_sample_classified(s, internal, self.locals, self.watch, tag);
        // Empty but for an in-kernel capture with container attribution: no hashing of the
        // two sockets for every sample of every other instance.
        if !self.cgroups.is_empty()
            && let Some(&c) = self.cgroups.get(&(s.peer, s.responder))
        {
            self.interval.note_cgroup(s.peer.ip(), s.responder.ip(), c);
        }
    }
    fn retransmit(
        &mut self,
        sender: std::net::SocketAddr,
        receiver: std::net::SocketAddr,
        _ts: i64,
    ) {
        self.interval
            .add_retransmit(sender.ip(), receiver.ip(), self.locals, self.watch);
    }
}

/// The per-packet work shared by live and file capture.
pub struct Processor {
    shared: Arc<InstanceShared>,
    /// The engine and its clock: packet time, and the wall clock while idle.
    driver: Driver,
    watch: (u64, Arc<WatchList>),
    /// The local addresses and container attribution.
    owners: Owners,
    frame: u64,
    duty: Option<Duty>,
    decode_errors: u64,
    /// `interface: any`: copies of a packet on other interfaces are dropped (unless a
    /// [`CopyCheck`] ahead of this processor drops them).
    dedupe: Option<Dedupe>,
    /// The interval being filled; handed to the flusher on request.
    interval: Interval,
    /// The last flush request answered.
    flushes_seen: u64,
    /// `--samples`: lines waiting for the writer thread.
    samples: Option<SampleBuf>,
    /// The in-kernel capture's egress records with container attribution on: (local,
    /// remote) socket -> the sending socket's cgroup, at most [`MAX_FLOW_CGROUPS`] (then
    /// started over).
    cgroups: foldhash::HashMap<(SocketAddr, SocketAddr), u64>,
    /// Packets received and not yet added to the instance's counter: added once a batch
    /// ([`Processor::refresh`]) and before an interval is handed over, not per packet (an
    /// atomic add on a line the flusher reads).
    received: u64,
    /// The counters as last published ([`Processor::publish`]).
    published: [u64; 5],
    /// The QUIC, DNS and ICMP counters as last published.
    published_proto: ProtoCounters,
}

/// Connections whose local socket's cgroup a [`Processor`] remembers.
const MAX_FLOW_CGROUPS: usize = 65_536;

/// The observer of a [`Processor`]'s driver: its fields borrowed one by one, beside the
/// driver's own borrow (a method would borrow the whole processor).
macro_rules! obs {
    ($p:expr) => {
        Obs {
            interval: &mut $p.interval,
            samples: $p.samples.as_mut(),
            locals: &$p.owners.locals.1,
            watch: &$p.watch.1,
            attr: $p.owners.attr(),
            cgroups: &$p.cgroups,
        }
    };
}

impl Processor {
    pub fn new(
        shared: Arc<InstanceShared>,
        engine: EngineConfig,
        duty: Option<DutyCycle>,
    ) -> Processor {
        let watch = shared.watch.get();
        let owners = Owners::new(&shared);
        let dedupe = (shared.iface == "any").then(Dedupe::new);
        let opts = shared.opts.clone();
        let samples = SampleBuf::new(&shared.iface);
        Processor {
            shared,
            driver: Driver::live(engine),
            watch,
            owners,
            frame: 0,
            duty: duty.map(|cycle| Duty {
                cycle,
                window: None,
            }),
            decode_errors: 0,
            dedupe,
            samples,
            interval: Interval::new(opts),
            flushes_seen: 0,
            cgroups: Default::default(),
            received: 0,
            published: [0; 5],
            published_proto: ProtoCounters::default(),
        }
    }

    /// This processor without its copy check: a [`CopyCheck`] drops the copies before the
    /// packets reach it.
    pub fn without_copy_check(mut self) -> Processor {
        self.dedupe = None;
        self
    }

    /// Between batches: [`Processor::refresh`], and the interval handed over if the flusher
    /// asked for it since the last time.
    #[inline]
    pub fn serve_flush(&mut self) {
        self.refresh();
        let asked = self.shared.flush_requests.load(Ordering::Acquire);
        if asked != self.flushes_seen {
            self.flushes_seen = asked;
            self.hand_over();
        }
    }

    /// Send the interval to the flusher and start an empty one. If the flusher is so far
    /// behind that the channel is full, keep filling this one (nothing is lost: it goes
    /// with the next request).
    pub fn hand_over(&mut self) {
        let iv = self.take_interval();
        if let Err(std::sync::mpsc::TrySendError::Full(iv)) = self.shared.handoff.try_send(iv) {
            self.interval = iv;
        }
    }

    /// The interval so far, leaving an empty one (file instances report it themselves).
    pub fn take_interval(&mut self) -> Interval {
        self.publish_received();
        if let Some(b) = &mut self.samples {
            b.hand_over();
        }
        let fresh = self.interval.fresh();
        std::mem::replace(&mut self.interval, fresh)
    }

    /// What the capture loops do once a batch of packets (every few dozen, and whenever the
    /// capture waits), not per packet: the packets received published, and a new watch
    /// list, set of local addresses or container attribution picked up.
    #[inline]
    pub fn refresh(&mut self) {
        self.publish_received();
        self.owners.refresh(&self.shared);
        self.refresh_watch();
    }

    /// Adds the packets received since the last call to the instance's counter.
    #[inline]
    fn publish_received(&mut self) {
        if self.received != 0 {
            self.shared
                .cumulative
                .packets_received
                .fetch_add(std::mem::take(&mut self.received), Ordering::Relaxed);
        }
    }

    /// Whether the watch list changed since this processor last looked (and pick it up).
    pub fn refresh_watch(&mut self) -> bool {
        if self.shared.watch.generation() != self.watch.0 {
            self.watch = self.shared.watch.get();
            return true;
        }
        false
    }

    pub fn watch(&self) -> &WatchList {
        &self.watch.1
    }

    /// The generation of the watch list this processor uses.
    pub fn watch_generation(&self) -> u64 {
        self.watch.0
    }

    /// One raw captured frame of link type `linktype` (a DLT, as libpcap gives it), captured
    /// at `ts` (ns since the epoch): counted, left out if it is a copy on `any` or outside
    /// the duty cycle, then decoded and handed to the driver: a TCP segment (with its
    /// payload, for DNS over TCP) to the TCP engine, a UDP datagram or ICMP message to the
    /// QUIC, DNS and ICMP tracker; samples into this instance's interval. The one entry
    /// point of every path that has a frame's bytes: libpcap, capture files, and the eBPF
    /// capture's raw UDP and ICMP frames (its TCP segments, decoded in the kernel, come
    /// through [`Processor::segment`], and those it hands over whole, with a payload that may
    /// be DNS or behind headers it does not walk, through [`Processor::raw_frame`]).
    #[inline]
    pub fn packet(&mut self, linktype: u32, ts: i64, data: &[u8]) {
        if !self.admit(ts, |d, rank| d.is_copy_ranked(linktype, ts, data, rank)) {
            return;
        }
        self.frame(linktype, ts, data);
    }

    /// [`Processor::packet`] after admission: the frame decoded and driven.
    #[inline]
    fn frame(&mut self, linktype: u32, ts: i64, data: &[u8]) {
        let mut obs = obs!(self);
        let ticked = match self.driver.frame(self.frame, ts, linktype, data, &mut obs) {
            Ok(ticked) => ticked,
            Err((e, ticked)) => {
                if e != metro_core::wire::DecodeError::NotTcp {
                    self.decode_errors += 1;
                }
                ticked
            }
        };
        if ticked {
            self.ticked();
        }
    }

    /// A segment the in-kernel capture decoded ([`super::ebpf`]): what [`Processor::packet`]
    /// does after decoding, with copies on `any` recognised by the segment's content and
    /// the interface it crossed.
    #[inline]
    pub fn segment(&mut self, ts: i64, seg: &metro_core::Segment, ifindex: u32) {
        self.segment_with(ts, seg, &[], ifindex);
    }

    /// [`Processor::segment`] with the segment's captured payload (a raw frame's: DNS over
    /// TCP); a record has none.
    #[inline]
    fn segment_with(&mut self, ts: i64, seg: &metro_core::Segment, payload: &[u8], ifindex: u32) {
        if self.admit(ts, |d, rank| d.is_copy_segment(seg, ifindex, ts, rank))
            && self.drive(ts, seg, payload)
        {
            self.ticked();
        }
    }

    /// A frame the in-kernel capture handed over whole ([`super::ebpf::record::RawFrame`]:
    /// a tunnel, a header chain or a malformed header the program does not decode, or a
    /// segment that may carry DNS, up to its first 256 bytes), left from a socket of cgroup
    /// `cgroup` (0: arriving, or unknown): decoded here as libpcap's copies are, kept when
    /// either end of its innermost IP header is watched (the program could not look:
    /// counted as filtered otherwise), then what [`Processor::segment`] does, with the
    /// payload to the tracker (DNS over TCP) as on the libpcap path. One metro-core does
    /// not decode either is counted as a decode error, as on the libpcap path.
    pub fn raw_frame(&mut self, linktype: u32, ts: i64, data: &[u8], ifindex: u32, cgroup: u64) {
        match RawKind::classify(linktype, data, &self.watch.1) {
            RawKind::Segment(seg, payload) => {
                if cgroup != 0 {
                    self.egress_cgroup(&seg, cgroup);
                }
                self.segment_with(ts, &seg, payload, ifindex);
            }
            RawKind::Datagram => self.packet(linktype, ts, data),
            RawKind::Unwatched => {
                self.shared
                    .cumulative
                    .packets_filtered
                    .fetch_add(1, Ordering::Relaxed);
            }
            RawKind::Undecodable => {
                self.frame += 1;
                self.received += 1;
                self.decode_errors += 1;
                if self.driver.advance(ts) {
                    self.ticked();
                }
            }
        }
    }

    /// An egress segment of the in-kernel capture left from a socket of cgroup `cgroup`
    /// (not 0): remembered for its connection while container attribution is on, so that
    /// its pair is attributed to that container (agent::containers::tag_pairs).
    #[inline]
    pub fn egress_cgroup(&mut self, seg: &metro_core::Segment, cgroup: u64) {
        if self.owners.attr.is_none() {
            return;
        }
        let key = (
            SocketAddr::new(seg.src, seg.sport),
            SocketAddr::new(seg.dst, seg.dport),
        );
        if self.cgroups.get(&key) != Some(&cgroup) {
            if self.cgroups.len() >= MAX_FLOW_CGROUPS {
                self.cgroups.clear();
            }
            self.cgroups.insert(key, cgroup);
        }
    }

    /// What every captured packet passes before decoding: counted, and dropped (false) when
    /// `is_copy` says it is a copy on `any` or the duty cycle is off. Of a NAT copy's two
    /// sightings, the one with the container's address is kept (agent::dedupe): `is_copy`
    /// gets the ranking ([`nat_rank`]). The shared sets are picked up by the capture loop
    /// between batches ([`Processor::refresh`]).
    #[inline]
    fn admit(
        &mut self,
        ts: i64,
        is_copy: impl FnOnce(&mut Dedupe, &dyn Fn(std::net::IpAddr) -> u8) -> bool,
    ) -> bool {
        self.frame += 1;
        self.received += 1;
        if let Some(d) = &mut self.dedupe
            && is_copy(d, &self.owners.rank())
        {
            return false;
        }
        self.duty
            .as_mut()
            .is_none_or(|d| d.admit(ts, &self.shared.duty_origin))
    }

    /// A segment and its captured payload (empty for a record) to the driver with this
    /// instance's observer; whether expiry ran.
    #[inline]
    fn drive(&mut self, ts: i64, seg: &metro_core::Segment, payload: &[u8]) -> bool {
        let mut obs = obs!(self);
        self.driver
            .segment_payload(self.frame, ts, seg, payload, &mut obs)
    }

    /// Time reaches `now` (the wall clock, while no packet comes): expiry runs if a tick's
    /// worth of time passed since the last run.
    pub fn tick(&mut self, now: i64) {
        if self.driver.advance(now) {
            self.ticked();
        }
    }

    /// After expiry: the counters published, the sample lines handed to the writer.
    fn ticked(&mut self) {
        self.publish();
        if let Some(b) = &mut self.samples {
            b.hand_over();
        }
    }

    /// Adds what changed since the last call to the instance's counters: several
    /// processors (an in-kernel capture's `threads`) publish into one set, each its share
    /// (the flow gauge moves both ways: wrapping deltas sum to the total).
    pub fn publish(&mut self) {
        self.publish_received();
        let c = &self.shared.cumulative;
        let counters = self.driver.tcp().counters();
        let (plain, nat) = self
            .dedupe
            .as_ref()
            .map_or((0, 0), |d| (d.copies - d.nat_copies, d.nat_copies));
        let now = [
            plain,
            nat,
            self.driver.tcp().active_flows() as u64,
            counters.flows_evicted_full,
            counters.flows_shed_unconfirmed,
        ];
        let to = [
            &c.packets_copies_plain,
            &c.packets_copies_nat,
            &c.flows_active,
            &c.flows_evicted,
            &c.flows_shed,
        ];
        for ((n, was), a) in now.iter().zip(&mut self.published).zip(to) {
            if *n != *was {
                a.fetch_add(n.wrapping_sub(*was), Ordering::Relaxed);
                *was = *n;
            }
        }
        let now = self.driver.proto().counters();
        if *now != self.published_proto {
            c.proto
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .add(&now.since(&self.published_proto));
            self.published_proto.clone_from(now);
        }
    }
}

/// What a capture thread needs besides its processor.
pub struct Worker {
    pub shared: Arc<InstanceShared>,
    pub engine: EngineConfig,
    pub duty: Option<DutyCycle>,
    pub base_filter: String,
    pub stop: Arc<AtomicBool>,
}

/// Sleep up to `d`, returning early (true) if `stop` is set; flush requests are answered
/// meanwhile.
fn sleep_or_stop(d: Duration, stop: &AtomicBool, proc: &mut Processor) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if stop.load(Ordering::Relaxed) {
            return true;
        }
        proc.serve_flush();
        std::thread::sleep((end - Instant::now()).min(Duration::from_millis(100)));
    }
    stop.load(Ordering::Relaxed)
}

/// Live capture until `stop`. `first` is the handle opened at start (None if the interface
/// was down then).
pub fn run_live(w: Worker, opts: LiveOptions, mut first: Option<Live>) {
    let iface = opts.iface.clone();
    let mut proc = Processor::new(w.shared.clone(), w.engine.clone(), w.duty);
    let mut backoff = BACKOFF_MIN;
    let mut last_error = String::new();
    // Kernel drops of the handles closed so far (each handle counts from zero).
    let mut dropped_before = 0u64;
    // Packets dropped in user space by the handles closed so far (each counts from zero).
    let mut filtered_before = 0u64;
    'outer: while !w.stop.load(Ordering::Relaxed) {
        let mut live = match first.take() {
            Some(l) => l,
            None => match live::open(&opts) {
                Ok(l) => {
                    tracing::info!("{iface}: capture open");
                    last_error.clear();
                    l
                }
                Err(e) => {
                    let msg = e.to_string();
                    if msg != last_error {
                        tracing::warn!(
                            "{iface}: {msg}; retrying (every {}s at most)",
                            BACKOFF_MAX.as_secs()
                        );
                        last_error = msg;
                    } else {
                        tracing::debug!("{iface}: still failing: {e}");
                    }
                    if sleep_or_stop(backoff, &w.stop, &mut proc) {
                        break;
                    }
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    continue;
                }
            },
        };
        backoff = BACKOFF_MIN;
        // The interface may have come back with other addresses.
        if let Ok(set) = interface_addresses(Some(&iface)) {
            let set = LocalSet::from(set);
            if *w.shared.locals.get().1 != set {
                w.shared.locals.set(set);
            }
        }
        proc.refresh();
        let mut filter_gen = proc.watch_generation();
        live.apply_watch(&w.base_filter, proc.watch());
        let linktype = live.linktype();
        let mut last_stats = Instant::now();
        let mut dropped_now = 0u64;
        // Packets since the clock was last read: reading it per packet cost ~6% of the
        // capture thread (perf, scripts/live-bench.sh --perf).
        let mut since_clock = 0u32;
        loop {
            if w.stop.load(Ordering::Relaxed) {
                break 'outer;
            }
            if w.shared.watch.generation() != filter_gen {
                proc.refresh_watch();
                filter_gen = proc.watch_generation();
                live.apply_watch(&w.base_filter, proc.watch());
            }
            match live.next_packet() {
                Ok(Next::Packet { ts, data }) => {
                    proc.packet(linktype, ts, data);
                    since_clock += 1;
                    if since_clock < STATS_CHECK_PACKETS {
                        continue;
                    }
                }
                // Like a packet: the clock is read once every STATS_CHECK_PACKETS, not per
                // frame (a flood outside the watch list is all filtered frames); the tick
                // keeps flows expiring while nothing else arrives.
                Ok(Next::Filtered) => {
                    since_clock += 1;
                    if since_clock < STATS_CHECK_PACKETS {
                        continue;
                    }
                    proc.tick(wall_ns());
                }
                Ok(Next::Timeout) => proc.tick(wall_ns()),
                Err(e) => {
                    tracing::warn!("{iface}: capture stopped: {e}; reopening");
                    last_error.clear();
                    dropped_before += dropped_now;
                    filtered_before += live.filtered();
                    // Give a flapping interface a moment before the first reopen.
                    if sleep_or_stop(BACKOFF_MIN, &w.stop, &mut proc) {
                        break 'outer;
                    }
                    continue 'outer;
                }
            }
            since_clock = 0;
            proc.serve_flush();
            if last_stats.elapsed() >= Duration::from_secs(1) {
                last_stats = Instant::now();
                w.shared
                    .cumulative
                    .packets_filtered
                    .store(filtered_before + live.filtered(), Ordering::Relaxed);
                if let Some((_, dropped)) = live.stats() {
                    dropped_now = dropped;
                    w.shared
                        .cumulative
                        .packets_dropped
                        .store(dropped_before + dropped, Ordering::Relaxed);
                }
            }
        }
    }
    proc.tick(wall_ns());
    proc.publish();
    // The last interval: the flusher collects it once this thread has ended.
    proc.hand_over();
}

/// The capture loop reads the clock (for the once-a-second drop statistics) after this many
/// packets, or when the read times out (at least every [`crate::agent::live::READ_TIMEOUT_MS`]
/// when idle).
const STATS_CHECK_PACKETS: u32 = 64;

/// A capture file on packet time: flushes every `flush_interval` of packet time into `tx`,
/// then a final report at the end. Returns when the file ends, fails, or `stop` is set.
pub fn run_file(
    w: Worker,
    mut reader: crate::pcap::CaptureReader,
    name: String,
    flush_interval: Duration,
    tx: SyncSender<Msg>,
) {
    let mut proc = Processor::new(w.shared.clone(), w.engine.clone(), w.duty);
    let every = flush_interval.as_nanos() as i64;
    let mut next_flush: Option<i64> = None;
    let mut filters = filter::FileFilters::new(&name);
    let mut watch_gen = 0u64;
    let mut last_ts = 0i64;
    loop {
        if w.stop.load(Ordering::Relaxed) {
            break;
        }
        let rec = match reader.next_record() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e) => {
                tracing::error!("{name}: {e}");
                break;
            }
        };
        if rec.linktype == crate::pcap::NOT_A_PACKET {
            continue;
        }
        let ts = rec.ts;
        last_ts = ts;
        let nf = *next_flush.get_or_insert(ts + every);
        if ts >= nf {
            let _ = tx.send(Msg::Report(w.shared.take_report(proc.take_interval())));
            let mut n = nf + every;
            if ts >= n {
                n += (ts - n) / every * every + every;
            }
            next_flush = Some(n);
        }
        // The same kernel filter as live capture, run in user space.
        proc.refresh();
        if proc.watch_generation() != watch_gen {
            watch_gen = proc.watch_generation();
            filters.clear();
        }
        if !filters.admit(&w.base_filter, proc.watch(), rec.linktype, rec.data) {
            w.shared
                .cumulative
                .packets_filtered
                .store(filters.filtered(), Ordering::Relaxed);
            continue;
        }
        proc.packet(rec.linktype, ts, rec.data);
    }
    proc.tick(last_ts + TICK);
    proc.publish();
    let _ = tx.send(Msg::Report(w.shared.take_report(proc.take_interval())));
}

#[cfg(test)]
mod tests {
    use super::*;
    use metro_core::Segment;
    use metro_core::seq::SeqNum;
    use metro_core::wire::TcpFlags;
    use std::net::IpAddr;

    const NS: i64 = 1_000_000_000;

    /// One sighting of a segment: when, on which interface.
    type Sighting = (i64, u32, Segment);

    /// `conns` connections from a container (10.88.0.2) to a server, masqueraded behind the
    /// host's 192.0.2.1 with a port rewrite, as an `any` capture on the host sees them:
    /// out, the container's veth (5) then the uplink (2); in, the uplink then the veth. Each
    /// connection: SYN, SYN/ACK, ACK, 100 bytes of data and its ACK.
    fn masqueraded(conns: u16) -> Vec<Sighting> {
        let (ctr, host, srv): (IpAddr, IpAddr, IpAddr) = (
            "10.88.0.2".parse().unwrap(),
            "192.0.2.1".parse().unwrap(),
            "198.51.100.7".parse().unwrap(),
        );
        let (veth, uplink) = (5, 2);
        let mut v = Vec::new();
        for c in 0..conns {
            let t0 = i64::from(c) * 10_000_000;
            let (inner, outer) = (40_000 + c, 61_000 + c);
            let (cs, ss) = (1_000_000 * u32::from(c), 7_000_000 + u32::from(c));
            let syn = TcpFlags::SYN;
            let ack = TcpFlags::ACK;
            // (time, from the container, flags, seq, ack, payload)
            let packets = [
                (0, true, syn, cs, 0, 0),
                (2_000_000, false, syn | ack, ss, cs + 1, 0),
                (2_100_000, true, ack, cs + 1, ss + 1, 0),
                (2_200_000, true, ack | TcpFlags::PSH, cs + 1, ss + 1, 100),
                (4_200_000, false, ack, ss + 1, cs + 101, 0),
            ];
            for (i, (dt, out, flags, seq, ackn, len)) in packets.into_iter().enumerate() {
                let seg = |local: IpAddr, port: u16| {
                    let (a, b) = ((local, port), (srv, 443));
                    let ((src, sport), (dst, dport)) = if out { (a, b) } else { (b, a) };
                    Segment {
                        src,
                        dst,
                        ip_id: c * 16 + i as u16,
                        sport,
                        dport,
                        flags: TcpFlags(flags),
                        seq: SeqNum::new(seq),
                        ack: SeqNum::new(ackn),
                        payload_len: len,
                        ..Segment::EMPTY
                    }
                };
                let (first, second) = if out {
                    ((veth, seg(ctr, inner)), (uplink, seg(host, outer)))
                } else {
                    ((uplink, seg(host, outer)), (veth, seg(ctr, inner)))
                };
                v.push((t0 + dt, first.0, first.1));
                v.push((t0 + dt + 10_000, second.0, second.1));
            }
        }
        v
    }

    fn any_instance() -> Arc<InstanceShared> {
        let everything = WatchList::new(vec![crate::agent::config::Cidr {
            addr: "0.0.0.0".parse().unwrap(),
            prefix: 0,
        }]);
        let host: IpAddr = "192.0.2.1".parse().unwrap();
        let locals = LocalSet::from(std::collections::HashSet::from([host]));
        Arc::new(InstanceShared::new(
            "any".into(),
            vec![],
            everything,
            locals,
        ))
    }

    /// What an instance reports of `procs`' intervals: samples by (local, remote), packets
    /// received, plain and NAT copies.
    fn outcome(
        sh: &InstanceShared,
        procs: &mut [Processor],
    ) -> (Vec<(IpAddr, String, u64)>, u64, u64, u64) {
        let mut iv = Interval::default();
        for p in procs {
            p.publish();
            iv.merge(p.take_interval());
        }
        let (pairs, _, _) = iv.into_pairs();
        let mut by_pair: Vec<_> = pairs
            .iter()
            .map(|p| (p.src, p.dst.to_string(), p.stats.count()))
            .collect();
        by_pair.sort();
        let c = &sh.cumulative;
        let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        (
            by_pair,
            load(&c.packets_received),
            load(&c.packets_copies_plain),
            load(&c.packets_copies_nat),
        )
    }

    /// An in-kernel capture with `threads: 2` on `any` behind a masquerade: with the copy
    /// check ahead of the shards ([`CopyCheck`], as agent::ebpf's reader runs it), the same
    /// samples, packets received and copies as one processor checking its own; with each
    /// shard checking its own (before), the NAT copies that hash to the other shard than
    /// their first sighting are kept, and counted again under the host's address.
    #[test]
    fn a_copy_check_ahead_of_the_shards_counts_as_one_engine() {
        let sightings = masqueraded(16);
        let shards = |s: &Segment| s.shard(2);
        // The test means something only if some connection's two forms part ways.
        let split = sightings
            .chunks(2)
            .filter(|p| shards(&p[0].2) != shards(&p[1].2))
            .count();
        assert!(split > 0, "no sighting's copy in the other shard");

        let one = any_instance();
        let mut p1 = [Processor::new(one.clone(), EngineConfig::default(), None)];
        for (ts, ifi, seg) in &sightings {
            p1[0].refresh();
            p1[0].segment(*ts, seg, *ifi);
        }
        let want = outcome(&one, &mut p1);
        let ctr: IpAddr = "10.88.0.2".parse().unwrap();
        // Each connection once, under the container's address: the server's two samples
        // (the handshake's and the data's) and the container's one (SYN/ACK to ACK); every
        // packet's NAT copy dropped (the SYN's taught the translation before the first
        // inbound packet came).
        let srv: IpAddr = "198.51.100.7".parse().unwrap();
        assert_eq!(
            want.0,
            [(ctr, srv.to_string(), 32), (srv, ctr.to_string(), 16)],
            "one engine: {want:?}"
        );
        assert_eq!((want.1, want.2, want.3), (160, 0, 16 * 5));

        let two = any_instance();
        let mut check = CopyCheck::new(two.clone()).unwrap();
        let mut p2: Vec<Processor> = (0..2)
            .map(|_| {
                Processor::new(two.clone(), EngineConfig::default(), None).without_copy_check()
            })
            .collect();
        for (ts, ifi, seg) in &sightings {
            check.refresh();
            if !check.segment(*ts, seg, *ifi) {
                p2[shards(seg)].segment(*ts, seg, *ifi);
            }
        }
        check.publish();
        assert_eq!(outcome(&two, &mut p2), want);

        // Before: each shard's own check misses the copies of the other shard's sightings.
        let before = any_instance();
        let mut p3: Vec<Processor> = (0..2)
            .map(|_| Processor::new(before.clone(), EngineConfig::default(), None))
            .collect();
        for (ts, ifi, seg) in &sightings {
            p3[shards(seg)].segment(*ts, seg, *ifi);
        }
        let got = outcome(&before, &mut p3);
        eprintln!("one engine: {want:?}; two shards checking their own: {got:?}");
        assert!(got.3 < want.3, "{got:?}");
        let host = "192.0.2.1".parse::<IpAddr>().unwrap();
        assert!(got.0.iter().any(|(local, ..)| *local == host), "{got:?}");
    }

    /// What the reader of a sharded in-kernel capture and the engine both read of a raw
    /// frame: a TCP segment with a watched end (the segment metro-core decodes), a UDP
    /// datagram with a watched end, either with no watched end, or no frame metro-core
    /// decodes.
    #[test]
    fn raw_frames_are_classified_as_the_engine_takes_them() {
        use metro_core::wire::linktype::ETHERNET;
        use metro_testkit::frame::TcpFrame;
        let watch = WatchList::new(vec![crate::agent::config::Cidr {
            addr: "10.9.0.0".parse().unwrap(),
            prefix: 16,
        }]);
        let tcp = |dst: [u8; 4]| {
            TcpFrame::v4([10, 0, 0, 1], 40000, dst, 80)
                .seq(7)
                .payload(metro_testkit::frame::Payload::Bytes(b"hello"))
                .to_vec()
        };
        let watched = tcp([10, 9, 0, 2]);
        match RawKind::classify(ETHERNET, &watched, &watch) {
            RawKind::Segment(seg, payload) => {
                assert_eq!(seg, Segment::decode(ETHERNET, &watched).unwrap());
                assert_eq!(payload, b"hello", "the captured payload, for DNS over TCP");
            }
            _ => panic!("a watched TCP segment"),
        }
        assert!(matches!(
            RawKind::classify(ETHERNET, &tcp([10, 8, 0, 2]), &watch),
            RawKind::Unwatched
        ));
        // Ethernet, IPv4 (UDP), UDP 5353 -> 53 with 4 bytes of payload.
        let udp = |dst: [u8; 4]| {
            let mut f = vec![0u8; 12];
            f.extend([0x08, 0x00, 0x45, 0, 0, 32, 0, 1, 0x40, 0, 64, 17, 0, 0]);
            f.extend([10, 0, 0, 1]);
            f.extend(dst);
            f.extend([0x14, 0xe9, 0, 53, 0, 12, 0, 0, 1, 2, 3, 4]);
            f
        };
        assert!(matches!(
            RawKind::classify(ETHERNET, &udp([10, 9, 0, 2]), &watch),
            RawKind::Datagram
        ));
        assert!(matches!(
            RawKind::classify(ETHERNET, &udp([10, 8, 0, 2]), &watch),
            RawKind::Unwatched
        ));
        // An IPv4 header cut short.
        assert!(matches!(
            RawKind::classify(ETHERNET, &watched[..24], &watch),
            RawKind::Undecodable
        ));
    }

    #[test]
    fn duty_cycle_windows() {
        let mut d = Duty {
            cycle: DutyCycle {
                duration: Duration::from_secs(2),
                interval: Duration::from_secs(3),
            },
            window: None,
        };
        let origin = AtomicI64::new(i64::MIN);
        let s = |x: f64| (x * 1e9) as i64 + 100 * NS;
        let got: Vec<bool> = [0.0, 1.9, 2.0, 4.9, 5.0, 6.9, 7.0, 10.5, 26.0, 29.0]
            .iter()
            .map(|&t| d.admit(s(t), &origin))
            .collect();
        // Windows: [0, 2), [5, 7), [10, 12), ..., [25, 27), [30, 32).
        assert_eq!(
            got,
            [
                true, true, false, false, true, true, false, true, true, false
            ]
        );
        // Another engine thread of the same instance whose first packet comes at 6.5 s
        // measures in the same windows: [5, 7), [10, 12).
        let mut other = Duty {
            cycle: d.cycle,
            window: None,
        };
        let got: Vec<bool> = [6.5, 7.5, 10.5, 12.5]
            .iter()
            .map(|&t| other.admit(s(t), &origin))
            .collect();
        assert_eq!(got, [true, false, true, false]);
    }
}
