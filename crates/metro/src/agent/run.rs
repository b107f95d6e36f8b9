//! The agent's runtime: one capture thread per instance, a resolver thread, a flusher thread
//! that owns the sinks, and the main thread waiting for signals.
//!
//! ```text
//!  capture (per instance) --lock per sample--> Interval <--swap-- flusher --> DogStatsD
//!  file instance --------------Msg::Report (packet time)-------> flusher --> Prometheus
//!  resolver --(generation-stamped WatchList / LocalSet)--> capture threads
//! ```
//!
//! The flusher swaps each live instance's interval out every `flush_interval` and sends
//! outside any lock. SIGTERM/SIGINT stop the captures, flush once more and return; SIGHUP
//! loads the configuration again and, only if it is valid and its captures open, replaces
//! the running runtime (which flushes on its way out).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, SyncSender};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use metro_core::engine::EngineConfig;

use super::capture::{self, Worker};
use super::config::{self, Config, Source};
use super::live::{self, LiveOptions};
use super::log;
use super::prom::{Prom, PromServer};
use super::report::{InstanceReport, InstanceShared};
use super::resolve::{self, LocalSet, WatchList, Watched};
use super::statsd::{StatsdSink, encode_report};

/// What the flusher receives.
pub enum Msg {
    /// A report made elsewhere (a file instance on packet time).
    Report(InstanceReport),
    /// Flush every live instance one last time and end.
    Stop,
}

/// Options that come from the command line rather than the file.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--log PATH`: log to this file (implies `log_to_file`).
    pub log: Option<PathBuf>,
    /// `--filter` / go-metro's `-f`: the base capture filter.
    pub filter: Option<String>,
}

fn ns(d: Duration) -> i64 {
    d.as_nanos().min(i64::MAX as u128) as i64
}

/// A running set of instances.
pub struct Runtime {
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<()>>,
    files_running: Arc<AtomicUsize>,
    has_live: bool,
    resolver: Option<JoinHandle<()>>,
    flusher: Option<JoinHandle<()>>,
    tx: SyncSender<Msg>,
    /// The instances' shared state (for tests and diagnostics).
    pub shared: Vec<Arc<InstanceShared>>,
}

enum Prepared {
    Live(LiveOptions, Option<live::Live>),
    File(crate::pcap::CaptureReader, PathBuf),
}

impl Runtime {
    /// Resolve, check and open every instance, then start the threads. Fails (starting
    /// nothing) if an instance cannot run: missing interface, missing capability, unreadable
    /// capture file, or a watch list of local addresses only.
    pub fn start(cfg: &Config, base_filter: &str, prom: Arc<Prom>) -> anyhow::Result<Runtime> {
        let mut prepared = Vec::with_capacity(cfg.instances.len());
        let mut cache = HashMap::new();
        for (i, inst) in cfg.instances.iter().enumerate() {
            let name = format!("instances[{i}] ({})", inst.interface);
            let mut watch = WatchList::new(inst.ips.clone());
            for w in resolve::resolve_all(&mut watch, &inst.hosts, &mut cache) {
                tracing::warn!(
                    "{name}: {w}; retrying every {}s",
                    cfg.dns_refresh.as_secs_f64()
                );
            }
            let locals = match inst.source {
                Source::Live => {
                    resolve::interface_addresses(Some(&inst.interface)).unwrap_or_default()
                }
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
            let src = match &inst.source {
                Source::Live => {
                    let opts = LiveOptions {
                        iface: inst.interface.clone(),
                        snaplen: cfg.snaplen,
                        buffer_size: cfg.buffer_size,
                    };
                    match live::open(&opts) {
                        Ok(l) => Prepared::Live(opts, Some(l)),
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
            let shared = Arc::new(InstanceShared::new(
                inst.interface.clone(),
                inst.tags.clone(),
                watch,
                LocalSet::from(locals),
            ));
            // Container attribution (agent::containers): live captures only, unless off.
            if inst.container_tags && matches!(inst.source, Source::Live) {
                super::containers::ensure_refresher();
                shared.container_tags.store(true, Ordering::Relaxed);
            }
            prepared.push((inst, shared, src));
        }

        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = mpsc::sync_channel::<Msg>(64);
        let files_running = Arc::new(AtomicUsize::new(0));
        let mut workers = Vec::new();
        let mut live_shared = Vec::new();
        let mut watched = Vec::new();
        let mut all_shared = Vec::new();
        for (inst, shared, src) in prepared {
            let engine = EngineConfig {
                max_flows: inst.max_flows,
                idle_timeout: ns(cfg.idle_ttl),
                closed_timeout: ns(cfg.exp_ttl),
                ..EngineConfig::default()
            };
            let worker = Worker {
                shared: shared.clone(),
                engine,
                duty: inst.sample,
                base_filter: base_filter.to_string(),
                stop: stop.clone(),
            };
            all_shared.push(shared.clone());
            watched.push(Watched {
                shared: shared.clone(),
                hosts: inst.hosts.clone(),
                local_iface: matches!(inst.source, Source::Live).then(|| inst.interface.clone()),
            });
            let thread_name = format!("metro-cap-{}", inst.interface);
            let h = match src {
                Prepared::Live(opts, first) => {
                    live_shared.push(shared.clone());
                    std::thread::Builder::new()
                        .name(thread_name)
                        .spawn(move || capture::run_live(worker, opts, first))?
                }
                Prepared::File(reader, path) => {
                    let tx = tx.clone();
                    let fr = files_running.clone();
                    fr.fetch_add(1, Ordering::SeqCst);
                    let every = cfg.flush_interval;
                    std::thread::Builder::new()
                        .name(thread_name)
                        .spawn(move || {
                            let name = path.display().to_string();
                            tracing::info!("{name}: reading on packet time");
                            capture::run_file(worker, reader, name.clone(), every, tx);
                            tracing::info!("{name}: done");
                            fr.fetch_sub(1, Ordering::SeqCst);
                        })?
                }
            };
            workers.push(h);
        }
        let has_live = !live_shared.is_empty();

        let sink = StatsdSink::new(cfg.statsd.clone(), cfg.dns_refresh);
        let every = cfg.flush_interval;
        let flusher = std::thread::Builder::new()
            .name("metro-flush".into())
            .spawn(move || run_flusher(rx, live_shared, sink, prom, every))?;
        let rstop = stop.clone();
        let refresh = cfg.dns_refresh;
        let resolver = std::thread::Builder::new()
            .name("metro-resolve".into())
            .spawn(move || resolve::run_resolver(watched, refresh, rstop))?;

        Ok(Runtime {
            stop,
            workers,
            files_running,
            has_live,
            resolver: Some(resolver),
            flusher: Some(flusher),
            tx,
            shared: all_shared,
        })
    }

    /// True when every instance was a file and all of them ended.
    pub fn finished(&self) -> bool {
        !self.has_live && self.files_running.load(Ordering::SeqCst) == 0
    }

    /// Stop the captures, flush one last time, join every thread.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let _ = self.tx.send(Msg::Stop);
        if let Some(f) = self.flusher.take() {
            let _ = f.join();
        }
        if let Some(r) = self.resolver.take() {
            let _ = r.join();
        }
    }
}

fn run_flusher(
    rx: Receiver<Msg>,
    live: Vec<Arc<InstanceShared>>,
    mut sink: StatsdSink,
    prom: Arc<Prom>,
    every: Duration,
) {
    // Send errors are reported with the instance's next interval.
    let mut pending_errors: HashMap<String, u64> = HashMap::new();
    let mut emit = |r: InstanceReport| {
        let errs = pending_errors.remove(&r.iface).unwrap_or(0);
        let datagrams = encode_report(&r, errs, sink.max_datagram());
        let failed = sink.send(&datagrams);
        if failed > 0 {
            *pending_errors.entry(r.iface.clone()).or_default() += failed;
        }
        prom.observe(&r, failed);
    };
    let mut next = Instant::now() + every;
    loop {
        match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(Msg::Report(r)) => emit(r),
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                for s in &live {
                    emit(s.take_report());
                }
                break;
            }
            Err(RecvTimeoutError::Timeout) => {
                for s in &live {
                    emit(s.take_report());
                }
                next += every;
                let now = Instant::now();
                if next <= now {
                    next = now + every;
                }
            }
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
    match addr {
        None => Ok(None),
        Some(a) => Ok(Some(PromServer::start(a, prom.clone()).with_context(
            || format!("prometheus_listen: cannot listen on {a}"),
        )?)),
    }
}

/// Run the agent until SIGTERM/SIGINT (or until every file instance ended).
pub fn run_agent(path: &Path, o: Overrides) -> anyhow::Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let loaded = config::load(path).map_err(|e| anyhow!("{e}"))?;
    let mut cfg = loaded.config;
    apply_logging(&cfg, &o);
    for w in &loaded.warnings {
        tracing::warn!("{w}");
    }
    let base = o
        .filter
        .clone()
        .unwrap_or_else(|| config::DEFAULT_BASE_FILTER.to_string());
    // Signals first, so that one arriving during start-up is not lost.
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP])
        .context("installing signal handlers")?;
    let prom = Arc::new(Prom::new());
    let mut server = start_prom(cfg.prometheus_listen, &prom)?;
    let mut rt = Runtime::start(&cfg, &base, prom.clone())?;
    tracing::info!(
        "metro {} running {} instance(s); DogStatsD to {}; flush every {}s",
        env!("CARGO_PKG_VERSION"),
        cfg.instances.len(),
        cfg.statsd,
        cfg.flush_interval.as_secs_f64()
    );
    loop {
        for sig in signals.pending() {
            if sig == SIGHUP {
                tracing::info!("SIGHUP: reloading {}", path.display());
                match config::load(path) {
                    Err(e) => {
                        tracing::error!("reload failed, keeping the running configuration: {e}")
                    }
                    Ok(l) => match Runtime::start(&l.config, &base, prom.clone()) {
                        Err(e) => tracing::error!(
                            "reload failed, keeping the running configuration: {e:#}"
                        ),
                        Ok(new_rt) => {
                            std::mem::replace(&mut rt, new_rt).stop();
                            apply_logging(&l.config, &o);
                            for w in &l.warnings {
                                tracing::warn!("{w}");
                            }
                            if l.config.prometheus_listen != cfg.prometheus_listen {
                                if let Some(mut s) = server.take() {
                                    s.stop();
                                }
                                server = start_prom(l.config.prometheus_listen, &prom)
                                    .unwrap_or_else(|e| {
                                        tracing::error!("{e:#}");
                                        None
                                    });
                            }
                            cfg = l.config;
                            tracing::info!(
                                "configuration reloaded: {} instance(s)",
                                cfg.instances.len()
                            );
                        }
                    },
                }
            } else {
                tracing::info!(
                    "{}: flushing and exiting",
                    if sig == SIGTERM { "SIGTERM" } else { "SIGINT" }
                );
                rt.stop();
                if let Some(mut s) = server.take() {
                    s.stop();
                }
                return Ok(());
            }
        }
        if rt.finished() {
            tracing::info!("every capture file ended: exiting");
            rt.stop();
            if let Some(mut s) = server.take() {
                s.stop();
            }
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
