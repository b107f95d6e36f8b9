//! The agent's runtime: one capture thread per instance, a resolver thread, a flusher thread
//! that owns the sinks, and the main thread waiting for signals.
//!
//! ```text
//!  capture (per instance, owns its Interval) --hand-over channel--> flusher --> DogStatsD
//!  file instance --------------Msg::Report (packet time)-----------> flusher --> Prometheus
//!  resolver --(generation-stamped WatchList / LocalSet)--> capture threads
//! ```
//!
//! The flusher and the [`Msg`]s it receives live in [`super::flush`]: this module starts it,
//! and on a reload hands it the new set of instances and, if they changed, the new sinks.
//!
//! Signals only set flags (installed before anything else, so that none is lost or kills
//! the process during start-up); the main thread polls them. SIGTERM/SIGINT at any moment
//! exit 0: during start-up at once, once running after stopping the captures and flushing
//! one last time. SIGHUP loads the configuration again once the signals stop arriving (a
//! burst is one reload) and, only if it is valid and every new capture opens, applies it:
//! an instance whose capture (interface or file, snaplen, buffer, engine settings, duty
//! cycle) is unchanged keeps its thread, its libpcap handle and its flows, and takes the
//! new tags and watch list (its thread re-installs the kernel filter); the others are
//! stopped (flushing their last interval) or started.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use metro_core::config::EngineConfig;

use super::capture::{self, Worker};
use super::config::{
    self, CaptureMode, Cidr, Config, DutyCycle, Instance, Protocols, Source, StatsdTarget,
};
use super::ebpf;
use super::filter;
use super::fleet::IntervalOpts;
use super::flush::{self, Msg};
use super::live::{self, LiveOptions};
use super::log;
use super::report::InstanceShared;
use super::resolve::{self, Watched};
use super::sinks::otlp::OtlpSink;
use super::sinks::prom::Prom;
use super::sinks::prom::http::PromServer;
use super::sinks::statsd::StatsdSink;
use super::watch::{LocalSet, WatchList};

/// Options that come from the command line rather than the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--log PATH`: log to this file (implies `log_to_file`).
    pub log: Option<PathBuf>,
    /// `--filter` / go-metro's `-f`: the base capture filter.
    pub filter: Option<String>,
    /// `--samples PATH|-`: every sample as a JSON line.
    pub samples: Option<PathBuf>,
}

fn ns(d: Duration) -> i64 {
    d.as_nanos().min(i64::MAX as u128) as i64
}

/// Everything an instance's capture depends on. A reload that changes none of it keeps the
/// running capture (thread, libpcap handle, flows); tags are not part of it.
#[derive(Clone, Debug, PartialEq)]
struct CaptureKey {
    interface: String,
    source: Source,
    ips: Vec<Cidr>,
    hosts: Vec<String>,
    sample: Option<DutyCycle>,
    max_flows: usize,
    trust_ip_id: bool,
    capture: CaptureMode,
    protocols: Protocols,
    threads: usize,
    snaplen: u32,
    buffer_size: u64,
    idle_ttl: Duration,
    exp_ttl: Duration,
    /// Grouping, series budget and what the fleet outputs need kept per series.
    opts: IntervalOpts,
}

impl CaptureKey {
    /// The same capture with another watch list: the running capture can take the new list
    /// (its thread re-installs the kernel filter) and keep its flows.
    fn same_but_watch(&self, other: &CaptureKey) -> bool {
        CaptureKey {
            ips: other.ips.clone(),
            hosts: other.hosts.clone(),
            ..self.clone()
        } == *other
    }

    fn of(cfg: &Config, inst: &Instance) -> CaptureKey {
        CaptureKey {
            interface: inst.interface.clone(),
            source: inst.source.clone(),
            ips: inst.ips.clone(),
            hosts: inst.hosts.clone(),
            sample: inst.sample,
            max_flows: inst.max_flows,
            trust_ip_id: inst.trust_ip_id,
            capture: inst.capture,
            protocols: inst.protocols,
            threads: inst.threads,
            snaplen: cfg.snaplen,
            buffer_size: cfg.buffer_size,
            idle_ttl: cfg.idle_ttl,
            exp_ttl: cfg.exp_ttl,
            opts: IntervalOpts::of(cfg, inst),
        }
    }
}

/// One running instance.
struct Running {
    key: CaptureKey,
    shared: Arc<InstanceShared>,
    stop: Arc<AtomicBool>,
    thread: JoinHandle<()>,
    live: bool,
}

enum Prepared {
    Live(LiveOptions, Option<live::Live>),
    /// The in-kernel capture, loaded and attached (agent::ebpf).
    Ebpf(Box<ebpf::Kernel>),
    File(crate::pcap::CaptureReader, PathBuf),
}

/// What a reload did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Instances whose capture kept running (their tags and watch list may have changed).
    pub kept: usize,
    /// Of those, the ones that took a new watch list (and re-installed their filter).
    pub rewatched: usize,
    pub started: usize,
    pub stopped: usize,
}

impl std::fmt::Display for Applied {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} capture(s) kept ({} with a new watch list), {} started, {} stopped",
            self.kept, self.rewatched, self.started, self.stopped
        )
    }
}

/// A running set of instances, with the flusher and the resolver.
pub struct Runtime {
    running: Vec<Running>,
    resolver: Option<(JoinHandle<()>, Arc<AtomicBool>)>,
    flusher: Option<JoinHandle<()>>,
    tx: SyncSender<Msg>,
    base_filter: String,
    statsd: StatsdTarget,
    flush_interval: Duration,
    dns_refresh: Duration,
    otlp_endpoint: Option<String>,
}

type DnsCache = HashMap<String, Result<Vec<std::net::IpAddr>, String>>;

/// An instance's watch list, resolved and checked, with its local addresses.
fn watch_list(
    cfg: &Config,
    i: usize,
    inst: &Instance,
    cache: &mut DnsCache,
) -> anyhow::Result<(WatchList, std::collections::HashSet<std::net::IpAddr>)> {
    let name = format!("instances[{i}] ({})", inst.interface);
    let mut watch = WatchList::new(inst.ips.clone());
    for w in resolve::resolve_all(&mut watch, &inst.hosts, cache) {
        tracing::warn!(
            "{name}: {w}; retrying every {}s",
            cfg.dns_refresh.as_secs_f64()
        );
    }
    let locals = match inst.source {
        Source::Live => resolve::interface_addresses(Some(&inst.interface)).unwrap_or_default(),
        Source::File(_) => Default::default(),
    };
    let blocks = watch.blocks();
    if !blocks.is_empty()
        && blocks
            .iter()
            .all(|b| b.is_host() && locals.contains(&b.addr))
    {
        let list: Vec<String> = blocks.iter().map(|b| b.to_string()).collect();
        bail!(
            "{name}: every watched address ({}) is an address of `{}` itself: metro measures \
             the round trip to remote hosts, so `ips` and `hosts` must name the other ends",
            list.join(", "),
            inst.interface
        );
    }
    if watch.is_empty() {
        tracing::warn!("{name}: nothing to watch until a host name resolves");
    }
    Ok((watch, locals))
}

/// `capture: auto|ebpf`: the in-kernel program, loaded and attached, or None for libpcap
/// (`pcap`; `auto` where the kernel or the capabilities refuse it, or a base filter other
/// than `tcp` needs libpcap's compiler). The choice is logged.
fn open_in_kernel(
    name: &str,
    inst: &Instance,
    base_filter: &str,
) -> anyhow::Result<Option<ebpf::Kernel>> {
    let plain_tcp = matches!(base_filter.trim(), "" | "tcp");
    match inst.capture {
        CaptureMode::Pcap => {
            tracing::info!("{name}: capture with libpcap (capture: pcap)");
            Ok(None)
        }
        CaptureMode::Ebpf if !plain_tcp => bail!(
            "{name}: capture: ebpf reads TCP segments only and cannot apply the capture filter \
             `{base_filter}`; use capture: pcap (or auto) for this filter"
        ),
        CaptureMode::Auto if !plain_tcp => {
            tracing::info!(
                "{name}: capture with libpcap: the capture filter `{base_filter}` needs it"
            );
            Ok(None)
        }
        mode => match ebpf::Kernel::open(&inst.interface, ebpf::RING_BYTES) {
            Ok(mut k) => {
                // Watched UDP, ICMP and ICMPv6 frames to user space only when the instance's
                // `protocols` name QUIC, DNS or ICMP: a TCP-only instance pays nothing for them.
                let p = inst.protocols;
                let other_protocols =
                    p.has(Protocols::QUIC) || p.has(Protocols::DNS) || p.has(Protocols::ICMP);
                k.set_other_protocols(other_protocols)
                    .map_err(|e| anyhow!("{name}: {e}"))?;
                k.set_tcp(p.has(Protocols::TCP))
                    .map_err(|e| anyhow!("{name}: {e}"))?;
                // DNS over TCP needs the payload, which a record does not carry: segments
                // that may hold a DNS message come whole.
                k.set_dns_tcp(p.has(Protocols::DNS))
                    .map_err(|e| anyhow!("{name}: {e}"))?;
                tracing::info!(
                    "{name}: capture in the kernel (eBPF) on {}",
                    k.interfaces().join(", ")
                );
                Ok(Some(k))
            }
            Err(e) if mode == CaptureMode::Ebpf => Err(anyhow!("{name}: {e}")),
            Err(e) => {
                tracing::info!("{name}: capture with libpcap: {e}");
                Ok(None)
            }
        },
    }
}

/// Resolve, check and open one instance (nothing runs yet).
fn prepare(
    cfg: &Config,
    i: usize,
    inst: &Instance,
    base_filter: &str,
    cache: &mut DnsCache,
) -> anyhow::Result<(Arc<InstanceShared>, Prepared)> {
    let name = format!("instances[{i}] ({})", inst.interface);
    let (watch, locals) = watch_list(cfg, i, inst, cache)?;
    let src = match &inst.source {
        Source::Live if let Some(k) = open_in_kernel(&name, inst, base_filter)? => {
            Prepared::Ebpf(Box::new(k))
        }
        Source::Live => {
            let opts = LiveOptions {
                iface: inst.interface.clone(),
                snaplen: cfg.snaplen,
                buffer_size: cfg.buffer_size,
            };
            match live::open(&opts) {
                Ok(l) => {
                    // `--filter` was checked on Ethernet at start; some expressions compile
                    // only on some links (e.g. `vlan` on `any`): refuse them here, not in the
                    // capture thread, where they would leave it capturing nothing.
                    filter::check_base_on(l.linktype(), base_filter)
                        .map_err(|e| anyhow!("{name}: {e}"))?;
                    Prepared::Live(opts, Some(l))
                }
                Err(e) if e.is_transient() => {
                    tracing::warn!("{name}: {e}; retrying until it comes up");
                    Prepared::Live(opts, None)
                }
                Err(e) => return Err(anyhow!("{name}: {e}")),
            }
        }
        Source::File(p) => {
            let r = crate::pcap::CaptureReader::open(p)
                .map_err(|e| anyhow!("{name}: {}: {e}", p.display()))?;
            Prepared::File(r, p.clone())
        }
    };
    let shared = Arc::new(
        InstanceShared::new(
            inst.interface.clone(),
            inst.tags.clone(),
            watch,
            LocalSet::from(locals),
        )
        .with_opts(IntervalOpts::of(cfg, inst)),
    );
    set_container_tags(&shared, inst);
    Ok((shared, src))
}

/// Container attribution (agent::containers): live captures only, unless
/// `container_tags: false`. Applied in place on a reload.
fn set_container_tags(shared: &InstanceShared, inst: &Instance) {
    let on = inst.container_tags && matches!(inst.source, Source::Live);
    if on {
        super::containers::ensure_refresher();
    }
    shared.container_tags.store(on, Ordering::Relaxed);
    shared
        .kube_labels
        .store(on && inst.kube_labels, Ordering::Relaxed);
}

impl Runtime {
    /// Start the flusher, then resolve, check and open every instance and start their
    /// threads. Fails (leaving nothing running) if an instance cannot run: missing
    /// interface, missing capability, unreadable capture file, or a watch list of local
    /// addresses only.
    pub fn start(cfg: &Config, base_filter: &str, prom: Arc<Prom>) -> anyhow::Result<Runtime> {
        let (tx, rx) = mpsc::sync_channel::<Msg>(64);
        let sink = StatsdSink::new(cfg.statsd.clone(), cfg.dns_refresh);
        let every = cfg.flush_interval;
        let otlp = cfg
            .fleet
            .otlp_endpoint
            .as_deref()
            .map(|e| OtlpSink::new(e, cfg.dns_refresh));
        let flusher = std::thread::Builder::new()
            .name("metro-flush".into())
            .spawn(move || flush::run_flusher(rx, sink, otlp, prom, every))?;
        let mut rt = Runtime {
            running: Vec::new(),
            resolver: None,
            flusher: Some(flusher),
            tx,
            base_filter: base_filter.to_string(),
            statsd: cfg.statsd.clone(),
            flush_interval: cfg.flush_interval,
            dns_refresh: cfg.dns_refresh,
            otlp_endpoint: cfg.fleet.otlp_endpoint.clone(),
        };
        match rt.apply(cfg) {
            Ok(_) => Ok(rt),
            Err(e) => {
                rt.stop();
                Err(e)
            }
        }
    }

    /// Make the running instances those of `cfg`. Every new capture is opened before
    /// anything changes: on an error nothing does. An instance whose [`CaptureKey`] is
    /// unchanged keeps running and takes its new tags.
    pub fn apply(&mut self, cfg: &Config) -> anyhow::Result<Applied> {
        enum Plan {
            Keep(usize, Vec<String>),
            Rewatch(usize, Vec<String>, Box<(CaptureKey, WatchList)>),
            New(Box<(CaptureKey, Arc<InstanceShared>, Prepared)>),
        }
        let mut claimed = vec![false; self.running.len()];
        let mut plan = Vec::with_capacity(cfg.instances.len());
        let mut cache = HashMap::new();
        for (i, inst) in cfg.instances.iter().enumerate() {
            let key = CaptureKey::of(cfg, inst);
            let same = (0..self.running.len()).find(|&j| !claimed[j] && self.running[j].key == key);
            if let Some(j) = same {
                claimed[j] = true;
                plan.push(Plan::Keep(j, inst.tags.clone()));
                continue;
            }
            let similar = (0..self.running.len())
                .find(|&j| !claimed[j] && self.running[j].key.same_but_watch(&key));
            if let Some(j) = similar {
                let (watch, _) = watch_list(cfg, i, inst, &mut cache)?;
                claimed[j] = true;
                plan.push(Plan::Rewatch(j, inst.tags.clone(), Box::new((key, watch))));
                continue;
            }
            let (shared, src) = prepare(cfg, i, inst, &self.base_filter, &mut cache)?;
            plan.push(Plan::New(Box::new((key, shared, src))));
        }

        // Commit: nothing below fails the reload.
        let mut applied = Applied::default();
        let mut old: Vec<Option<Running>> = Vec::with_capacity(self.running.len());
        let mut removed = Vec::new();
        for (r, keep) in self.running.drain(..).zip(&claimed) {
            if *keep {
                old.push(Some(r));
            } else {
                r.stop.store(true, Ordering::SeqCst);
                removed.push(r);
                old.push(None);
            }
        }
        for r in removed {
            let _ = r.thread.join();
            applied.stopped += 1;
        }
        for (p, inst) in plan.into_iter().zip(&cfg.instances) {
            match p {
                Plan::Keep(j, tags) => {
                    let r = old[j].take().expect("claimed once");
                    *r.shared.tags.lock().unwrap_or_else(|e| e.into_inner()) = tags;
                    set_container_tags(&r.shared, inst);
                    self.running.push(r);
                    applied.kept += 1;
                }
                Plan::Rewatch(j, tags, new) => {
                    let (key, watch) = *new;
                    let mut r = old[j].take().expect("claimed once");
                    *r.shared.tags.lock().unwrap_or_else(|e| e.into_inner()) = tags;
                    set_container_tags(&r.shared, inst);
                    // The capture thread sees the new generation between packets.
                    r.shared.watch.set(watch);
                    r.key = key;
                    self.running.push(r);
                    applied.kept += 1;
                    applied.rewatched += 1;
                }
                Plan::New(new) => match self.spawn(cfg, inst, *new) {
                    Ok(r) => {
                        self.running.push(r);
                        applied.started += 1;
                    }
                    Err(e) => tracing::error!("{}: cannot start its thread: {e}", inst.interface),
                },
            }
        }
        let live: Vec<Arc<InstanceShared>> = self
            .running
            .iter()
            .filter(|r| r.live)
            .map(|r| r.shared.clone())
            .collect();
        // The flusher flushes the stopped instances (already joined) one last time.
        let _ = self.tx.send(Msg::Live(live));
        if cfg.statsd != self.statsd || cfg.flush_interval != self.flush_interval {
            self.statsd = cfg.statsd.clone();
            self.flush_interval = cfg.flush_interval;
            let sink = StatsdSink::new(cfg.statsd.clone(), cfg.dns_refresh);
            let _ = self.tx.send(Msg::Sink(sink, cfg.flush_interval));
        }
        if cfg.fleet.otlp_endpoint != self.otlp_endpoint {
            self.otlp_endpoint = cfg.fleet.otlp_endpoint.clone();
            let otlp = cfg
                .fleet
                .otlp_endpoint
                .as_deref()
                .map(|e| OtlpSink::new(e, cfg.dns_refresh));
            let _ = self.tx.send(Msg::Otlp(otlp));
        }
        if applied.started > 0
            || applied.stopped > 0
            || applied.rewatched > 0
            || cfg.dns_refresh != self.dns_refresh
            || self.resolver.is_none()
        {
            self.dns_refresh = cfg.dns_refresh;
            self.restart_resolver(cfg);
        }
        Ok(applied)
    }

    fn spawn(
        &self,
        cfg: &Config,
        inst: &Instance,
        (key, shared, src): (CaptureKey, Arc<InstanceShared>, Prepared),
    ) -> std::io::Result<Running> {
        let stop = Arc::new(AtomicBool::new(false));
        let engine = EngineConfig {
            max_flows: inst.max_flows,
            trust_ip_id: inst.trust_ip_id,
            idle_timeout: ns(cfg.idle_ttl),
            closed_timeout: ns(cfg.exp_ttl),
            kinds: inst.protocols.kinds(),
            ..EngineConfig::default()
        };
        let worker = Worker {
            shared: shared.clone(),
            engine,
            duty: inst.sample,
            // The default `tcp` widened to the instance's protocols (agent::filter).
            base_filter: filter::instance_base(&self.base_filter, inst.protocols),
            stop: stop.clone(),
        };
        let thread_name = format!("metro-cap-{}", inst.interface);
        let threads = inst.threads;
        if threads > 1 && !matches!(src, Prepared::Ebpf(_)) {
            tracing::warn!(
                "{}: threads: {threads} applies to the in-kernel capture only; this instance \
                 runs one engine",
                inst.interface
            );
        }
        shared.cumulative.capture_ebpf.store(
            u64::from(matches!(src, Prepared::Ebpf(_))),
            Ordering::Relaxed,
        );
        let (thread, live) = match src {
            Prepared::Ebpf(k) => (
                std::thread::Builder::new()
                    .name(thread_name)
                    .spawn(move || ebpf::run(worker, *k, threads))?,
                true,
            ),
            Prepared::Live(opts, first) => (
                std::thread::Builder::new()
                    .name(thread_name)
                    .spawn(move || capture::run_live(worker, opts, first))?,
                true,
            ),
            Prepared::File(reader, path) => {
                let tx = self.tx.clone();
                let every = cfg.flush_interval;
                (
                    std::thread::Builder::new()
                        .name(thread_name)
                        .spawn(move || {
                            let name = path.display().to_string();
                            tracing::info!("{name}: reading on packet time");
                            capture::run_file(worker, reader, name.clone(), every, tx);
                            tracing::info!("{name}: done");
                        })?,
                    false,
                )
            }
        };
        Ok(Running {
            key,
            shared,
            stop,
            thread,
            live,
        })
    }

    fn stop_resolver(&mut self) {
        if let Some((h, stop)) = self.resolver.take() {
            stop.store(true, Ordering::SeqCst);
            let _ = h.join();
        }
    }

    fn restart_resolver(&mut self, cfg: &Config) {
        self.stop_resolver();
        let watched: Vec<Watched> = self
            .running
            .iter()
            .map(|r| Watched {
                shared: r.shared.clone(),
                hosts: r.key.hosts.clone(),
                local_iface: r.live.then(|| r.key.interface.clone()),
            })
            .collect();
        let stop = Arc::new(AtomicBool::new(false));
        let rstop = stop.clone();
        let refresh = cfg.dns_refresh;
        match std::thread::Builder::new()
            .name("metro-resolve".into())
            .spawn(move || resolve::run_resolver(watched, refresh, rstop))
        {
            Ok(h) => self.resolver = Some((h, stop)),
            Err(e) => tracing::error!("cannot start the resolver thread: {e}"),
        }
    }

    /// The instances' shared state, in configuration order (for tests and diagnostics).
    pub fn shared(&self) -> Vec<Arc<InstanceShared>> {
        self.running.iter().map(|r| r.shared.clone()).collect()
    }

    /// True when every instance was a file and all of them ended.
    pub fn finished(&self) -> bool {
        self.running
            .iter()
            .all(|r| !r.live && r.thread.is_finished())
    }

    /// Stop the captures, flush one last time, join every thread.
    pub fn stop(mut self) {
        for r in &self.running {
            r.stop.store(true, Ordering::SeqCst);
        }
        for r in self.running.drain(..) {
            let _ = r.thread.join();
        }
        self.stop_resolver();
        let _ = self.tx.send(Msg::Stop);
        if let Some(f) = self.flusher.take() {
            let _ = f.join();
        }
    }
}

/// Set up logging from the configuration and the command line.
fn apply_logging(cfg: &Config, o: &Overrides) {
    let file = match (&o.log, cfg.log_to_file) {
        (Some(p), _) => Some(p.as_path()),
        (None, true) => Some(cfg.log_file.as_path()),
        (None, false) => None,
    };
    if let Err(e) = log::configure(cfg.log_level, file) {
        tracing::error!(
            "cannot open log file {}: {e}; logging to stderr",
            file.map(Path::display)
                .map(|d| d.to_string())
                .unwrap_or_default()
        );
    }
}

fn start_prom(
    addr: Option<std::net::SocketAddr>,
    prom: &Arc<Prom>,
) -> anyhow::Result<Option<PromServer>> {
    let Some(a) = addr else {
        prom.set_exposed(false);
        return Ok(None);
    };
    // Exposed before the server answers: a listener after none starts from an empty
    // registry (a restarted exporter), one after another (A -> B) goes on counting.
    prom.set_exposed(true);
    match PromServer::start(a, prom.clone()) {
        Ok(server) => Ok(Some(server)),
        Err(e) => {
            // Not exposed unless a server starts (a failed start on a reload leaves none).
            prom.set_exposed(false);
            Err(e).with_context(|| format!("prometheus_listen: cannot listen on {a}"))
        }
    }
}

/// How often the main thread looks at the signal flags.
const SIGNAL_POLL: Duration = Duration::from_millis(20);
/// A reload waits until no SIGHUP arrived for this long (a burst is one reload)...
const RELOAD_QUIET: Duration = Duration::from_millis(200);
/// ...but no longer than this after the first one (a steady stream still reloads).
const RELOAD_MAX_DELAY: Duration = Duration::from_secs(2);

fn signal_name(sig: usize) -> &'static str {
    if sig == signal_hook::consts::SIGINT as usize {
        "SIGINT"
    } else {
        "SIGTERM"
    }
}

/// Load the configuration on another thread, so that SIGTERM/SIGINT is obeyed while a huge
/// file is parsed. None: a stop signal arrived first (the loading thread is abandoned).
fn load_unless_stopped(
    path: &Path,
    term: &AtomicUsize,
) -> Option<Result<config::Loaded, config::ConfigError>> {
    let p = path.to_path_buf();
    let h = std::thread::Builder::new()
        .name("metro-load".into())
        .spawn(move || config::load(&p));
    let h = match h {
        Ok(h) => h,
        Err(_) => return Some(config::load(path)),
    };
    while !h.is_finished() {
        if term.load(Ordering::SeqCst) != 0 {
            return None;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    Some(h.join().unwrap_or_else(|_| {
        Err(config::ConfigError::file(
            &path.display().to_string(),
            "the configuration loader panicked",
        ))
    }))
}

/// Run the agent until SIGTERM/SIGINT (or until every file instance ended).
pub fn run_agent(path: &Path, o: Overrides) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // Signals first: from here on none kills the process or is lost. The handlers only set
    // flags; the main thread acts on them.
    let term = Arc::new(AtomicUsize::new(0));
    let hup = Arc::new(AtomicBool::new(false));
    for sig in [SIGTERM, SIGINT] {
        signal_hook::flag::register_usize(sig, term.clone(), sig as usize)
            .context("installing signal handlers")?;
    }
    signal_hook::flag::register(SIGHUP, hup.clone()).context("installing signal handlers")?;
    let stopped_early = |what: &str| {
        tracing::info!(
            "{} during {what}: exiting",
            signal_name(term.load(Ordering::SeqCst))
        );
        Ok(())
    };

    let Some(loaded) = load_unless_stopped(path, &term) else {
        return stopped_early("start-up");
    };
    let loaded = loaded.map_err(|e| anyhow!("{e}"))?;
    let mut cfg = loaded.config;
    apply_logging(&cfg, &o);
    if let Some(p) = &o.samples {
        super::samples::start(p)
            .with_context(|| format!("--samples: cannot write {}", p.display()))?;
    }
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    if term.load(Ordering::SeqCst) != 0 {
        return stopped_early("start-up");
    }
    let base = o
        .filter
        .clone()
        .unwrap_or_else(|| config::DEFAULT_BASE_FILTER.to_string());
    let prom = Arc::new(Prom::new());
    prom.set_max_series(cfg.fleet.max_series);
    let mut server = start_prom(cfg.prometheus_listen, &prom)?;
    let mut rt = Runtime::start(&cfg, &base, prom.clone())?;
    tracing::info!(
        "metro {} running {} instance(s); DogStatsD to {}; flush every {}s",
        env!("CARGO_PKG_VERSION"),
        cfg.instances.len(),
        cfg.statsd,
        cfg.flush_interval.as_secs_f64()
    );
    // SIGHUPs not acted on yet: when the first and the last arrived.
    let mut hups: Option<(Instant, Instant)> = None;
    loop {
        let sig = term.load(Ordering::SeqCst);
        if sig != 0 {
            tracing::info!("{}: flushing and exiting", signal_name(sig));
            rt.stop();
            if let Some(mut s) = server.take() {
                s.stop();
            }
            super::samples::finish(Duration::from_secs(2));
            return Ok(());
        }
        let now = Instant::now();
        if hup.swap(false, Ordering::SeqCst) {
            hups = Some((hups.map_or(now, |(first, _)| first), now));
        }
        if let Some((first, last)) = hups
            && (now - last >= RELOAD_QUIET || now - first >= RELOAD_MAX_DELAY)
        {
            hups = None;
            tracing::info!("SIGHUP: reloading {}", path.display());
            match load_unless_stopped(path, &term) {
                // A stop signal: obeyed at the top of the loop.
                None => continue,
                Some(Err(e)) => {
                    tracing::error!("reload failed, keeping the running configuration: {e}")
                }
                Some(Ok(l)) => match rt.apply(&l.config) {
                    Err(e) => {
                        tracing::error!("reload failed, keeping the running configuration: {e:#}")
                    }
                    Ok(applied) => {
                        apply_logging(&l.config, &o);
                        prom.set_max_series(l.config.fleet.max_series);
                        for w in &l.warnings {
                            tracing::warn!("{w}");
                        }
                        if l.config.prometheus_listen != cfg.prometheus_listen {
                            if let Some(mut s) = server.take() {
                                s.stop();
                            }
                            server =
                                start_prom(l.config.prometheus_listen, &prom).unwrap_or_else(|e| {
                                    tracing::error!("{e:#}");
                                    None
                                });
                        }
                        cfg = l.config;
                        tracing::info!(
                            "configuration reloaded: {} instance(s); {applied}",
                            cfg.instances.len()
                        );
                    }
                },
            }
        }
        if rt.finished() {
            tracing::info!("every capture file ended: exiting");
            rt.stop();
            if let Some(mut s) = server.take() {
                s.stop();
            }
            super::samples::finish(Duration::from_secs(2));
            return Ok(());
        }
        std::thread::sleep(SIGNAL_POLL);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::StatsdTarget;
    use crate::agent::report::{InstanceCounters, InstanceReport, PairReport};
    use crate::agent::sinks::Sinks;
    use metro_core::aggregate::Stats;
    use std::io::{Read, Write};
    use std::net::{TcpStream, UdpSocket};

    /// An interval with `n` RTT samples of 40 ms to one pair and `10 * n` packets.
    fn interval(n: u64) -> InstanceReport {
        let mut stats = Stats::new();
        for _ in 0..n {
            stats.add(40.0);
        }
        InstanceReport {
            iface: "eth0".into(),
            tags: vec![],
            pairs: vec![PairReport {
                src: "10.0.0.1".parse().unwrap(),
                protocol: 0,
                dst: "10.0.0.2".into(),
                stats,
                retransmits: n,
                fine: None,
                extra_tags: vec![],
                baseline_ms: None,
            }],
            counters: InstanceCounters {
                packets_received: 10 * n,
                ..Default::default()
            },
        }
    }

    /// A scrape of `/metrics` (the classic text format). A server renders at most once in
    /// a while (it serves the same render to scrapes close together): one scrape a server
    /// after its reports.
    fn scrape(server: &PromServer) -> String {
        let mut c = TcpStream::connect(server.addr).unwrap();
        write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\nAccept: */*\r\n\r\n").unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        assert!(s.starts_with("HTTP/1.1 200 OK\r\n"), "{s}");
        s
    }

    /// The value of each line of `text` starting with `series`, in order.
    fn values(text: &str, series: &str) -> Vec<f64> {
        text.lines()
            .filter_map(|l| l.strip_prefix(series))
            .map(|v| v.trim().parse().unwrap())
            .collect()
    }

    const SAMPLES: &str =
        "metro_tcp_rtt_samples_total{src=\"10.0.0.1\",dst=\"10.0.0.2\",iface=\"eth0\"}";
    const LAST: &str =
        "metro_tcp_rtt_last_seconds{src=\"10.0.0.1\",dst=\"10.0.0.2\",iface=\"eth0\"}";
    const PACKETS: &str = "metro_packets_received_total{iface=\"eth0\"}";

    /// Reloads A -> none -> B: B serves what came after it, as a restarted exporter would
    /// (Prometheus sees a counter restart from zero, not a total missing the reports of
    /// the time without a listener); A -> B (a listener all along) keeps counting.
    #[test]
    fn a_listener_added_by_a_reload_starts_from_an_empty_registry() {
        // DogStatsD to a socket of ours, read by nobody.
        let statsd = UdpSocket::bind("127.0.0.1:0").unwrap();
        let prom = Arc::new(Prom::new());
        let target = StatsdTarget::Udp {
            host: "127.0.0.1".into(),
            port: statsd.local_addr().unwrap().port(),
        };
        let mut sinks = Sinks::new(
            StatsdSink::new(target, Duration::from_secs(60)),
            prom.clone(),
            None,
        );
        let any = Some("127.0.0.1:0".parse().unwrap());

        let mut a = start_prom(any, &prom).unwrap().unwrap();
        sinks.emit(interval(3));
        sinks.emit(interval(2));
        let t = scrape(&a);
        assert_eq!(values(&t, SAMPLES), [5.0], "{t}");
        assert_eq!(values(&t, PACKETS), [50.0], "{t}");
        assert_eq!(values(&t, LAST), [0.04], "{t}");

        // A -> B: exposed throughout, the totals go on.
        a.stop();
        let mut b = start_prom(any, &prom).unwrap().unwrap();
        sinks.emit(interval(1));
        let t = scrape(&b);
        assert_eq!(values(&t, SAMPLES), [6.0], "{t}");
        assert_eq!(values(&t, PACKETS), [60.0], "{t}");

        // B -> none: reports go on unseen.
        b.stop();
        assert!(start_prom(None, &prom).unwrap().is_none());
        sinks.emit(interval(4));

        // none -> C: nothing from before C, not even the gauges of B's last interval...
        let mut c = start_prom(any, &prom).unwrap().unwrap();
        let t = scrape(&c);
        assert!(
            t.contains("# TYPE metro_tcp_rtt_samples_total counter"),
            "{t}"
        );
        assert_eq!(values(&t, SAMPLES), [] as [f64; 0], "{t}");
        assert_eq!(values(&t, PACKETS), [] as [f64; 0], "{t}");
        assert_eq!(values(&t, LAST), [] as [f64; 0], "{t}");
        // ...and the totals count from C on (C -> D: exposed throughout).
        c.stop();
        let mut d = start_prom(any, &prom).unwrap().unwrap();
        sinks.emit(interval(7));
        let t = scrape(&d);
        assert_eq!(values(&t, SAMPLES), [7.0], "{t}");
        assert_eq!(values(&t, PACKETS), [70.0], "{t}");
        assert_eq!(values(&t, LAST), [0.04], "{t}");
        d.stop();
    }
}
