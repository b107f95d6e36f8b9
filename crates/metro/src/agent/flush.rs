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

use std::sync::Arc;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::report::{InstanceReport, InstanceShared};
use super::sinks::Sinks;
use super::sinks::otlp::OtlpSink;
use super::sinks::prom::Prom;
use super::sinks::statsd::StatsdSink;

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
    let mut sinks = Sinks::new(statsd, prom, otlp);
    let mut next = Instant::now() + every;
    loop {
        match rx.recv_timeout(next.saturating_duration_since(Instant::now())) {
            Ok(Msg::Report(r)) => sinks.emit(r),
            Ok(Msg::Live(new)) => {
                for s in &live {
                    if !new.iter().any(|n| Arc::ptr_eq(n, s)) {
                        // Its thread has ended: its last interval is waiting.
                        sinks.emit(s.report(Duration::ZERO));
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
            Ok(Msg::Otlp(o)) => {
                // The old sink's last pushes (up to its shutdown grace) go on without the
                // flusher.
                if let Some(old) = std::mem::replace(&mut sinks.otlp, o) {
                    let _ = std::thread::Builder::new()
                        .name("metro-otlp-close".into())
                        .spawn(move || drop(old));
                }
            }
            Ok(Msg::Stop) | Err(RecvTimeoutError::Disconnected) => {
                // The capture threads have ended: their last intervals are waiting.
                for s in &live {
                    sinks.emit(s.report(Duration::ZERO));
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
                    sinks.emit(s.report(deadline.saturating_duration_since(Instant::now())));
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
