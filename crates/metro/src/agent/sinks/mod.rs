//! The outputs of `metro run`, one module per sink in the manner of Vector's `sinks/`: each
//! has a pure encoder from an interval report ([`crate::agent::report::InstanceReport`]) to
//! its wire form, tested by decoding its own output (our DogStatsD parser, promtool and a
//! real Prometheus, the official OTLP schema), and the transport that sends it:
//! [`statsd`] (DogStatsD over UDP or a Unix socket, distributions), [`prom`] (the
//! `/metrics` exposition and its HTTP responder, the cumulative histogram), [`otlp`]
//! (OTLP/HTTP protobuf push, the exponential histogram). [`Sinks`] is the set the flusher
//! ([`crate::agent::flush`]) hands every report to. Sinks see reports only: nothing here
//! knows the capture.

pub mod otlp;
pub mod prom;
pub mod statsd;

use std::collections::HashMap;
use std::sync::Arc;

use crate::agent::report::InstanceReport;
use otlp::OtlpSink;
use prom::Prom;
use statsd::{StatsdSink, encode_report};

/// The flusher's outputs: every interval report goes to each sink in turn (DogStatsD,
/// Prometheus, OTLP), each encoding it its own way from the same statistics, histogram
/// buckets and values.
pub struct Sinks {
    pub statsd: StatsdSink,
    pub prom: Arc<Prom>,
    pub otlp: Option<OtlpSink>,
    /// DogStatsD send errors, reported with the instance's next interval.
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
