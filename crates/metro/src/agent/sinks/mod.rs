//! The outputs of `metro run`, one module per sink in the manner of Vector's `sinks/`:
//! [`catalog`] describes, once and sink-neutrally, every metric an interval report
//! ([`crate::agent::report::InstanceReport`]) becomes (name, kind, unit, help, labels,
//! value); each sink only encodes that description into its wire form with a pure
//! function, tested by decoding its own output (our DogStatsD parser, promtool and a real
//! Prometheus, the official OTLP schema), and has the transport that sends it:
//! [`statsd`] (DogStatsD over UDP or a Unix socket, distributions), [`prom`] (the
//! `/metrics` exposition and its HTTP responder, the cumulative histogram), [`otlp`]
//! (OTLP/HTTP protobuf push, the exponential histogram). [`Sinks`] is the set the flusher
//! ([`crate::agent::flush`]) hands every report to. Sinks see reports only: nothing here
//! knows the capture.

pub mod catalog;
mod dns;
pub mod otlp;
pub mod prom;
pub mod statsd;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::sync::Arc;

use crate::agent::report::InstanceReport;
use otlp::OtlpSink;
use prom::Prom;
use statsd::{StatsdSink, encode_report};

/// What a sink could not deliver for one instance since that instance's previous report:
/// every sink exports both counts with the instance's next report
/// (`metro.statsd.send_errors`, `metro.otlp.send_errors`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendErrors {
    /// DogStatsD datagrams that could not be sent.
    pub statsd: u64,
    /// OTLP pushes that failed; `None` when no OTLP endpoint is configured.
    pub otlp: Option<u64>,
}

/// The flusher's outputs: every interval report goes to each sink in turn (DogStatsD,
/// Prometheus, OTLP), each encoding it its own way from the same statistics, histogram
/// buckets and values.
pub struct Sinks {
    pub statsd: StatsdSink,
    pub prom: Arc<Prom>,
    pub otlp: Option<OtlpSink>,
    /// DogStatsD send errors per instance (interface), reported with its next interval.
    pending_errors: HashMap<String, u64>,
    /// `--samples` lines lost, as last logged.
    samples_lost: u64,
}

impl Sinks {
    pub fn new(statsd: StatsdSink, prom: Arc<Prom>, otlp: Option<OtlpSink>) -> Sinks {
        Sinks {
            statsd,
            prom,
            otlp,
            pending_errors: HashMap::new(),
            samples_lost: 0,
        }
    }

    /// Send one interval report to every sink.
    pub fn emit(&mut self, r: InstanceReport) {
        let errs = SendErrors {
            statsd: self.pending_errors.remove(&r.iface).unwrap_or(0),
            otlp: self.otlp.as_ref().map(|o| o.take_failures(&r.iface)),
        };
        let datagrams = encode_report(&r, errs, self.statsd.max_datagram());
        let failed = self.statsd.send(&datagrams);
        if failed > 0 {
            *self.pending_errors.entry(r.iface.clone()).or_default() += failed;
        }
        if self.prom.exposed() {
            self.prom.observe(&r, errs);
        }
        // Queued for the OTLP sender thread: never waits for the receiver.
        if let Some(o) = &mut self.otlp {
            o.send(&r, errs);
        }
        let lost = crate::agent::samples::lost();
        if lost > self.samples_lost {
            tracing::warn!(
                "--samples: {} lines lost so far: the reader is slower than the traffic",
                lost
            );
            self.samples_lost = lost;
        }
    }
}
