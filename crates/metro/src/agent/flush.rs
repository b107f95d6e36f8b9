//! The flusher: the one thread that owns the sinks (DogStatsD, Prometheus, OTLP), and the
//! [`Msg`]s it receives. Every `flush_interval` it asks each live instance for its interval
//! (a counter the capture thread reads between packets: no lock per sample), collects what
//! the capture threads hand over, and sends each report to every sink. File instances on
//! packet time send their reports here themselves ([`Msg::Report`]). It lives as long as
//! the agent: a reload ([`super::run`]) hands it the new set of instances and, if they
//! changed, the new DogStatsD target, flush interval and OTLP sink.
//!
//! It depends on the sinks and the reports only, never on the capture or the runtime that
//! feed it, so that both can name [`Msg`] without naming each other.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::otlp::OtlpSink;
use super::prom::Prom;
use super::report::{InstanceReport, InstanceShared};
use super::statsd::{StatsdSink, encode_report};

/// What the flusher receives.
pub enum Msg {
    /// A report made elsewhere (a file instance on packet time).
    Report(InstanceReport),
    /// The live instances from now on; one no longer among them is flushed one last time.
    Live(Vec<Arc<InstanceShared>>),
    /// A new DogStatsD sink and flush interval (a reload changed them).
    Sink(StatsdSink, Duration),
    /// A new OTLP sink, or none (a reload changed `otlp_endpoint`).
    Otlp(Option<OtlpSink>),
    /// Flush every live instance one last time and end.
    Stop,
}

/// The flusher's outputs: every interval report goes to each sink in turn (DogStatsD,
/// Prometheus, OTLP), each encoding it its own way from the same statistics, histogram
/// buckets and values.
struct Sinks {
    statsd: StatsdSink,
    prom: Arc<Prom>,
    otlp: Option<OtlpSink>,
    /// DogStatsD send errors, reported with the instance's next interval.
    pending_errors: HashMap<String, u64>,
    /// `--samples` lines lost, as last logged.
    samples_lost: u64,
}

impl Sinks {
    fn emit(&mut self, r: InstanceReport) {
        let errs = self.pending_errors.remove(&r.iface).unwrap_or(0);
        let datagrams = encode_report(&r, errs, self.statsd.max_datagram());
        let failed = self.statsd.send(&datagrams);
        if failed > 0 {
            *self.pending_errors.entry(r.iface.clone()).or_default() += failed;
        }
        self.prom.observe(&r, failed);
        if let Some(o) = &mut self.otlp {
            o.send(&r);
        }
        let lost = super::samples::lost();
        if lost > self.samples_lost {
            tracing::warn!(
                "--samples: {} lines lost so far: the reader is slower than the traffic",
                lost
            );
            self.samples_lost = lost;
        }
    }
}

/// How long a flush waits for the capture threads' intervals.
const HANDOVER_WAIT: Duration = Duration::from_millis(500);

/// The flusher thread: every `every` it asks each live instance for its interval and sends
/// the reports to the sinks; between flushes it takes reports, new instance sets and new
/// sinks from `rx`. Returns after [`Msg::Stop`] (or when every sender is gone), having
/// flushed each live instance one last time.
pub fn run_flusher(
    rx: Receiver<Msg>,
    statsd: StatsdSink,
    otlp: Option<OtlpSink>,
    prom: Arc<Prom>,
    mut every: Duration,
) {
    let mut live: Vec<Arc<InstanceShared>> = Vec::new();
    let mut sinks = Sinks {
        statsd,
        prom,
        otlp,
        pending_errors: HashMap::new(),
        samples_lost: 0,
    };
    let mut next = Instant::now() + every;
    loop {
        match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(Msg::Report(r)) => sinks.emit(r),
            Ok(Msg::Live(new)) => {
                for s in &live {
                    if !new.iter().any(|n| Arc::ptr_eq(n, s)) {
                        // Its thread has ended: its last interval is waiting.
                        let iv = s.collect(Duration::ZERO);
                        sinks.emit(s.take_report(iv));
                    }
                }
                live = new;
            }
            Ok(Msg::Sink(s, e)) => {
                sinks.statsd = s;
                if e != every {
                    every = e;
                    next = Instant::now() + every;
                }
            }
            Ok(Msg::Otlp(o)) => sinks.otlp = o,
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                // The capture threads have ended: their last intervals are waiting.
                for s in &live {
                    let iv = s.collect(Duration::ZERO);
                    sinks.emit(s.take_report(iv));
                }
                break;
            }
            Err(RecvTimeoutError::Timeout) => {
                for s in &live {
                    s.request_flush();
                }
                // A capture thread answers between packets, or within its read timeout when
                // idle; one that does not (busy reopening) is reported empty this time.
                let deadline = Instant::now() + HANDOVER_WAIT;
                for s in &live {
                    let iv = s.collect(deadline.saturating_duration_since(Instant::now()));
                    sinks.emit(s.take_report(iv));
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
