//! The OTLP sink (`otlp_endpoint: http://HOST:PORT`): each instance's interval report pushed
//! as OTLP/HTTP protobuf metrics (`POST /v1/metrics`) at every flush.
//!
//! What [`catalog`] describes: per (src, dst) series `metro.tcp.rtt`, an exponential
//! histogram of RTT in seconds (OpenTelemetry's mergeable form, scale [`EXP_SCALE`], delta
//! temporality), and the counters `metro.tcp.rtt.samples` and `metro.tcp.retransmits`; per
//! instance the self-metrics ([`catalog::SELF`]) as delta sums, the levels as gauges.
//! Attributes: `src`, `dst`, `iface`, the
//! instance's tags (`key:value` as key = value, a bare tag as tag = ""). Resource:
//! `service.name` = metro, `service.version`, `host.name`.
//!
//! The encoder ([`encode`]) is pure; the message types are the official schema's
//! (opentelemetry-proto, prost). The transport is one HTTP/1.1 request per report from a
//! sender thread of the sink's own, under connect and whole-push deadlines, with its name
//! resolved under a deadline too ([`super::dns`]): a slow, silent or unresolvable
//! collector delays only its own pushes, never the other sinks, the capture or shutdown.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, InstrumentationScope, KeyValue, any_value};
use opentelemetry_proto::tonic::metrics::v1::{
    AggregationTemporality, ExponentialHistogram, ExponentialHistogramDataPoint, Gauge, Metric,
    NumberDataPoint, ResourceMetrics, ScopeMetrics, Sum, exponential_histogram_data_point, metric,
    number_data_point,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use prost::Message;

use super::SendErrors;
use super::catalog::{self, Kind, Label};
use super::dns::Lookup;
use crate::agent::fleet::{EXP_SCALE, EXP_ZERO_THRESHOLD};
use crate::agent::report::InstanceReport;

fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_string(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_string())),
        }),
        ..Default::default()
    }
}

/// A label as an attribute (a bare tag: an empty value).
fn attr(l: &Label) -> KeyValue {
    kv(l.key, l.value())
}

fn attrs(ls: &[Label]) -> Vec<KeyValue> {
    ls.iter().map(attr).collect()
}

fn sum_metric(name: &str, desc: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        description: desc.into(),
        unit: unit.into(),
        data: Some(metric::Data::Sum(Sum {
            data_points: points,
            aggregation_temporality: AggregationTemporality::Delta as i32,
            is_monotonic: true,
        })),
        ..Default::default()
    }
}

fn gauge_metric(name: &str, desc: &str, unit: &str, points: Vec<NumberDataPoint>) -> Metric {
    Metric {
        name: name.into(),
        description: desc.into(),
        unit: unit.into(),
        data: Some(metric::Data::Gauge(Gauge {
            data_points: points,
        })),
        ..Default::default()
    }
}

fn point(attrs: Vec<KeyValue>, start: u64, now: u64, v: u64) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attrs,
        start_time_unix_nano: start,
        time_unix_nano: now,
        value: Some(number_data_point::Value::AsInt(v as i64)),
        ..Default::default()
    }
}

/// The resource every push carries.
pub fn resource(host: &str) -> Resource {
    Resource {
        attributes: vec![
            kv("service.name", "metro"),
            kv("service.version", env!("CARGO_PKG_VERSION")),
            kv("host.name", host),
        ],
        ..Default::default()
    }
}

/// One instance's interval as an OTLP export request: what [`catalog`] describes, per
/// pair the family's exponential histogram, sample count, counters and gauges, then the
/// self-metrics. `start`/`now` (ns since the epoch) bound the interval (delta temporality);
/// `errs` are the sinks' send errors since the instance's previous report.
pub fn encode(
    r: &InstanceReport,
    host: &str,
    start: u64,
    now: u64,
    errs: SendErrors,
) -> ExportMetricsServiceRequest {
    let mut metrics = Vec::new();
    for (fi, family) in catalog::FAMILIES.iter().enumerate() {
        let mut hist = Vec::new();
        let mut samples = Vec::new();
        let mut counters: Vec<Vec<NumberDataPoint>> =
            family.counters.iter().map(|_| vec![]).collect();
        let mut gauges: Vec<Vec<NumberDataPoint>> = family.gauges.iter().map(|_| vec![]).collect();
        for p in catalog::pairs_of(r, fi) {
            let attrs = attrs(&catalog::pair_labels(r, p));
            if let Some(e) = p.fine.as_ref().and_then(|f| f.exp.as_ref()) {
                hist.push(ExponentialHistogramDataPoint {
                    attributes: attrs.clone(),
                    start_time_unix_nano: start,
                    time_unix_nano: now,
                    count: e.count,
                    sum: Some(e.sum),
                    scale: EXP_SCALE,
                    zero_count: e.zero_count,
                    zero_threshold: EXP_ZERO_THRESHOLD,
                    positive: Some({
                        let (offset, counts) = e.trimmed();
                        exponential_histogram_data_point::Buckets {
                            offset,
                            bucket_counts: counts.to_vec(),
                        }
                    }),
                    min: (e.count > 0).then_some(e.min),
                    max: (e.count > 0).then_some(e.max),
                    ..Default::default()
                });
            }
            samples.push(point(attrs.clone(), start, now, p.stats.count()));
            for (c, points) in family.counters.iter().zip(&mut counters) {
                points.push(point(attrs.clone(), start, now, (c.value)(p)));
            }
            for (g, points) in family.gauges.iter().zip(&mut gauges) {
                if let Some(ms) = g.of(p) {
                    // A level: no start time.
                    points.push(NumberDataPoint {
                        attributes: attrs.clone(),
                        time_unix_nano: now,
                        value: Some(number_data_point::Value::AsDouble(ms / 1000.0)),
                        ..Default::default()
                    });
                }
            }
        }
        if !hist.is_empty() {
            metrics.push(Metric {
                name: family.otlp.into(),
                description: family.help.into(),
                unit: "s".into(),
                data: Some(metric::Data::ExponentialHistogram(ExponentialHistogram {
                    data_points: hist,
                    aggregation_temporality: AggregationTemporality::Delta as i32,
                })),
                ..Default::default()
            });
        }
        if !samples.is_empty() {
            let names = family.names();
            metrics.push(sum_metric(
                &names.otlp_samples,
                family.samples_help,
                "{sample}",
                samples,
            ));
            for (c, points) in family.counters.iter().zip(counters) {
                metrics.push(sum_metric(c.names.otlp, c.help, c.unit, points));
            }
        }
        for (g, points) in family.gauges.iter().zip(gauges) {
            if !points.is_empty() {
                metrics.push(gauge_metric(g.names.otlp, g.help, "s", points));
            }
        }
    }
    let input = catalog::Input {
        report: r,
        errors: errs,
    };
    let mut base = catalog::instance_labels(r);
    for m in &catalog::SELF {
        let mut points = Vec::new();
        for (by, v) in (m.points)(&input) {
            base.extend(m.by.map(|k| catalog::breakdown(k, by)));
            let a = attrs(&base);
            base.truncate(1 + r.tags.len());
            points.push(match m.kind {
                Kind::Counter => point(a, start, now, v),
                // A level: no start time.
                Kind::Gauge => point(a, 0, now, v),
            });
        }
        if points.is_empty() {
            continue;
        }
        metrics.push(match m.kind {
            Kind::Counter => sum_metric(m.name, m.help, m.unit, points),
            Kind::Gauge => gauge_metric(m.name, m.help, m.unit, points),
        });
    }
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(resource(host)),
            scope_metrics: vec![ScopeMetrics {
                scope: Some(InstrumentationScope {
                    name: "metro".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    ..Default::default()
                }),
                metrics,
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

/// This host's name (the kernel's), for `host.name`.
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// A whole push (resolve, connect, send, read the status) ends by this: a receiver that
/// trickles its answer costs this, not a read timeout per byte.
const PUSH_DEADLINE: Duration = Duration::from_secs(5);
/// Connecting alone ends by this (a black-holed address).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Socket reads and writes wait at most this at a time, so that a push notices the end of
/// its deadline or the agent's shutdown.
const SLICE: Duration = Duration::from_millis(200);
/// Pushes waiting for the sender thread; past this a report is dropped (a failed push).
const QUEUE: usize = 16;
/// What the last pushes may take once the agent stops.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// What the flusher and the sender thread share.
#[derive(Default)]
struct Shared {
    /// Failed (or dropped) pushes per instance, not yet reported.
    failures: Mutex<HashMap<String, u64>>,
    /// Once the agent stops: when the last pushes must be done.
    stop_by: Mutex<Option<Instant>>,
}

impl Shared {
    fn fail(&self, iface: &str) {
        let mut f = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        *f.entry(iface.to_string()).or_default() += 1;
    }

    fn stop_by(&self) -> Option<Instant> {
        *self.stop_by.lock().unwrap_or_else(|e| e.into_inner())
    }
}

struct Push {
    iface: String,
    body: Vec<u8>,
}

/// Pushes reports to one OTLP/HTTP endpoint from a thread of its own: the flusher encodes
/// and queues ([`send`](Self::send) never blocks), the sender thread pushes under
/// deadlines, so a slow, silent or unresolvable receiver delays only itself. Failures come
/// back to the flusher through [`take_failures`](Self::take_failures).
pub struct OtlpSink {
    endpoint: String,
    host: String,
    /// End of the last interval pushed, per interface (the next one's start).
    last: HashMap<String, u64>,
    started: u64,
    tx: Option<SyncSender<Push>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl OtlpSink {
    /// `endpoint` is `http://HOST:PORT[/PREFIX]` (checked by the configuration); names are
    /// resolved again every `dns_refresh`.
    pub fn new(endpoint: &str, dns_refresh: Duration) -> OtlpSink {
        let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
        let (authority, prefix) = match rest.split_once('/') {
            Some((a, p)) => (a, format!("/{}", p.trim_end_matches('/'))),
            None => (rest, String::new()),
        };
        let target = Target {
            authority: authority.to_string(),
            path: format!("{prefix}/v1/metrics"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().unwrap_or(4318)),
            None => (authority, 80),
        };
        let lookup = Lookup::new(host, port, dns_refresh);
        let endpoint = target.endpoint();
        let shared = Arc::new(Shared::default());
        let (tx, rx) = mpsc::sync_channel::<Push>(QUEUE);
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name("metro-otlp".into())
            .spawn(move || sender(rx, target, lookup, &sh))
            .map_err(|e| tracing::error!("otlp: cannot start the sender thread: {e}"))
            .ok();
        OtlpSink {
            endpoint,
            host: host_name(),
            last: HashMap::new(),
            started: now_ns(),
            tx: thread.is_some().then_some(tx),
            shared,
            thread,
        }
    }

    pub fn endpoint(&self) -> String {
        self.endpoint.clone()
    }

    /// Encode one report with the send errors counted before it and queue it; never
    /// blocks. A report the queue has no room for is a failed push.
    pub fn send(&mut self, r: &InstanceReport, errs: SendErrors) {
        let now = now_ns();
        let start = self
            .last
            .insert(r.iface.clone(), now)
            .unwrap_or(self.started);
        let body = encode(r, &self.host, start, now, errs).encode_to_vec();
        let push = Push {
            iface: r.iface.clone(),
            body,
        };
        let queued = match &self.tx {
            Some(tx) => match tx.try_send(push) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) => {
                    tracing::debug!("otlp: {QUEUE} pushes waiting: one dropped");
                    false
                }
                Err(TrySendError::Disconnected(_)) => false,
            },
            None => false,
        };
        if !queued {
            self.shared.fail(&r.iface);
        }
    }

    /// Pushes for `iface` that failed or were dropped since the previous call.
    pub fn take_failures(&self, iface: &str) -> u64 {
        let mut f = self
            .shared
            .failures
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        f.remove(iface).unwrap_or(0)
    }

    /// Push what is queued within [`SHUTDOWN_GRACE`], then end the sender thread.
    pub fn close(&mut self) {
        *self
            .shared
            .stop_by
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(Instant::now() + SHUTDOWN_GRACE);
        self.tx = None;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for OtlpSink {
    fn drop(&mut self) {
        self.close();
    }
}

/// Where pushes go.
struct Target {
    /// `HOST:PORT`, the `Host` header.
    authority: String,
    path: String,
}

impl Target {
    fn endpoint(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }
}

/// The sender thread: one push at a time, each within [`PUSH_DEADLINE`] (and, once the
/// agent stops, within its grace); a failure is logged once per streak and counted.
fn sender(rx: Receiver<Push>, target: Target, mut lookup: Lookup, shared: &Shared) {
    let mut failing = false;
    while let Ok(push) = rx.recv() {
        let mut deadline = Instant::now() + PUSH_DEADLINE;
        let result = post(&target, &mut lookup, &push.body, || {
            if let Some(s) = shared.stop_by() {
                deadline = deadline.min(s);
            }
            deadline.checked_duration_since(Instant::now())
        });
        match result {
            Ok(()) => {
                if failing {
                    tracing::info!("otlp: {} accepts metrics again", target.endpoint());
                }
                failing = false;
            }
            Err(e) => {
                shared.fail(&push.iface);
                if !failing {
                    tracing::warn!("otlp: cannot push to {}: {e}", target.endpoint());
                }
                failing = true;
            }
        }
    }
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::TimedOut,
        format!("{what}: past the push deadline"),
    )
}

/// One push; `left` says how long the push may still take (`None`: its deadline passed).
fn post(
    t: &Target,
    lookup: &mut Lookup,
    body: &[u8],
    mut left: impl FnMut() -> Option<Duration>,
) -> io::Result<()> {
    // In slices too: a lookup that hangs is waited for until the deadline or shutdown.
    let addr = loop {
        let wait = left().ok_or_else(|| timed_out("resolving"))?.min(SLICE);
        match lookup.resolve(wait) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            r => break r?,
        }
    };
    let wait = left()
        .ok_or_else(|| timed_out("connecting"))?
        .min(CONNECT_TIMEOUT);
    let mut c = TcpStream::connect_timeout(&addr, wait)?;
    let head = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: metro/{}\r\n\r\n",
        t.path,
        t.authority,
        body.len(),
        env!("CARGO_PKG_VERSION")
    );
    for part in [head.as_bytes(), body] {
        let mut off = 0;
        while off < part.len() {
            let slice = left().ok_or_else(|| timed_out("sending"))?.min(SLICE);
            c.set_write_timeout(Some(slice.max(Duration::from_millis(1))))?;
            match c.write(&part[off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => off += n,
                Err(e) if is_wait(&e) => {}
                Err(e) => return Err(e),
            }
        }
    }
    // The status line is all that matters; read at most a little.
    let mut buf = [0u8; 512];
    let mut n = 0;
    while n < 12 {
        let slice = left()
            .ok_or_else(|| timed_out("reading the answer"))?
            .min(SLICE);
        c.set_read_timeout(Some(slice.max(Duration::from_millis(1))))?;
        match c.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if is_wait(&e) => {}
            Err(e) => return Err(e),
        }
    }
    let status = std::str::from_utf8(&buf[..n])
        .ok()
        .and_then(|s| s.split(' ').nth(1))
        .and_then(|s| s.get(..3))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| io::Error::other("no HTTP status in the answer"))?;
    if (200..300).contains(&status) {
        Ok(())
    } else {
        Err(io::Error::other(format!("HTTP status {status}")))
    }
}

fn is_wait(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut | io::ErrorKind::Interrupted
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::fleet::{Fine, IntervalOpts};
    use crate::agent::report::{InstanceCounters, PairReport};
    use metro_core::aggregate::Stats;
    use opentelemetry_proto::tonic::metrics::v1::metric::Data;

    #[test]
    fn encodes_the_exponential_histogram_and_counters_and_decodes_back() {
        let o = IntervalOpts {
            exponential: true,
            ..IntervalOpts::default()
        };
        let mut f = Fine::new(&o);
        let mut s = Stats::new();
        let mut room = 0;
        for ms in [10.0, 10.5, 40.0, 0.0] {
            s.add(ms);
            f.add(ms, &o, &mut room);
        }
        let r = InstanceReport {
            iface: "eth0".into(),
            tags: vec!["env:prod".into(), "canary".into()],
            pairs: vec![PairReport {
                src: "10.0.0.1".parse().unwrap(),
                protocol: 0,
                dst: "db".into(),
                stats: s,
                retransmits: 2,
                fine: Some(Box::new(f)),
                extra_tags: vec!["container:web".into()],
                baseline_ms: None,
            }],
            counters: InstanceCounters {
                samples: [4, 0, 0, 0, 0, 0, 0],
                series_overflow: 3,
                ..Default::default()
            },
        };
        let bytes = encode(&r, "h1", 100, 200, SendErrors::default()).encode_to_vec();
        let back = ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap();
        let rm = &back.resource_metrics[0];
        let res: Vec<(String, String)> = rm
            .resource
            .as_ref()
            .unwrap()
            .attributes
            .iter()
            .map(|k| match &k.value.as_ref().unwrap().value {
                Some(any_value::Value::StringValue(v)) => (k.key.clone(), v.clone()),
                _ => panic!(),
            })
            .collect();
        assert!(res.contains(&("host.name".into(), "h1".into())));
        let ms = &rm.scope_metrics[0].metrics;
        let h = ms.iter().find(|m| m.name == "metro.tcp.rtt").unwrap();
        assert_eq!(h.unit, "s");
        let Some(Data::ExponentialHistogram(eh)) = &h.data else {
            panic!()
        };
        let dp = &eh.data_points[0];
        assert_eq!((dp.count, dp.zero_count, dp.scale), (4, 1, EXP_SCALE));
        assert!((dp.sum.unwrap() - 0.0605).abs() < 1e-12);
        let b = dp.positive.as_ref().unwrap();
        assert_eq!(b.bucket_counts.iter().sum::<u64>(), 3);
        // 40 ms lies in the last bucket.
        let top = b.offset + b.bucket_counts.len() as i32 - 1;
        let base = 2f64.powf(2f64.powi(-EXP_SCALE));
        assert!(base.powi(top) < 0.040 && 0.040 <= base.powi(top + 1) * (1.0 + 1e-12));
        let keys: Vec<&str> = dp.attributes.iter().map(|k| k.key.as_str()).collect();
        assert_eq!(keys, ["src", "dst", "iface", "env", "canary", "container"]);
        let ov = ms
            .iter()
            .find(|m| m.name == "metro.series.overflow")
            .unwrap();
        let Some(Data::Sum(s)) = &ov.data else {
            panic!()
        };
        assert_eq!(
            s.data_points[0].value,
            Some(number_data_point::Value::AsInt(3))
        );
        assert_eq!(s.data_points[0].start_time_unix_nano, 100);
    }

    /// The value and attributes of each point of `name`, of either kind.
    fn points(ms: &[Metric], name: &str) -> Vec<(Vec<String>, i64)> {
        let m = ms
            .iter()
            .find(|m| m.name == name)
            .unwrap_or_else(|| panic!("{name}"));
        let dps = match &m.data {
            Some(Data::Sum(s)) => &s.data_points,
            Some(Data::Gauge(g)) => &g.data_points,
            other => panic!("{name}: {other:?}"),
        };
        dps.iter()
            .map(|dp| {
                let attrs = dp
                    .attributes
                    .iter()
                    .map(|k| match &k.value.as_ref().unwrap().value {
                        Some(any_value::Value::StringValue(v)) => format!("{}={v}", k.key),
                        _ => panic!(),
                    })
                    .collect();
                let Some(number_data_point::Value::AsInt(v)) = dp.value else {
                    panic!()
                };
                (attrs, v)
            })
            .collect()
    }

    #[test]
    fn self_metrics_match_the_other_sinks() {
        let mut r = InstanceReport {
            iface: "any".into(),
            tags: vec![],
            pairs: vec![],
            counters: InstanceCounters {
                flows_active: 7,
                flows_evicted: 10,
                flows_shed: 8,
                packets_copies: crate::agent::report::Copies { plain: 4, nat: 7 },
                samples_internal: 5,
                ..Default::default()
            },
        };
        let decode = |r: &InstanceReport| {
            let errs = SendErrors {
                statsd: 6,
                otlp: Some(2),
            };
            let bytes = encode(r, "h1", 100, 200, errs).encode_to_vec();
            let back = ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap();
            back.resource_metrics[0].scope_metrics[0].metrics.clone()
        };
        let ms = decode(&r);
        let iface = vec!["iface=any".to_string()];
        assert_eq!(points(&ms, "metro.flows.active"), [(iface.clone(), 7)]);
        // The eviction total and, of it, the unconfirmed shed: as DogStatsD and Prometheus.
        assert_eq!(points(&ms, "metro.flows.evicted"), [(iface.clone(), 10)]);
        assert_eq!(points(&ms, "metro.flows.shed"), [(iface.clone(), 8)]);
        // By kind, the sum what was one series before the breakdown.
        let kind = |k: &str| vec!["iface=any".to_string(), format!("kind={k}")];
        assert_eq!(
            points(&ms, "metro.packets.copies"),
            [(kind("plain"), 4), (kind("nat"), 7)]
        );
        assert_eq!(points(&ms, "metro.samples.internal"), [(iface.clone(), 5)]);
        // Both sinks' delivery failures, as DogStatsD and Prometheus export them.
        assert_eq!(
            points(&ms, "metro.statsd.send_errors"),
            [(iface.clone(), 6)]
        );
        assert_eq!(points(&ms, "metro.otlp.send_errors"), [(iface.clone(), 2)]);
        // Container metrics only when attribution runs, distribution ones with values.
        assert!(!ms.iter().any(|m| m.name.starts_with("metro.containers.")));
        assert!(!ms.iter().any(|m| m.name == "metro.distribution.dropped"));
        r.counters.containers = Some(crate::agent::containers::Counters {
            namespaces_attributed: 3,
            namespaces_unattributed: 2,
            skipped: 1,
            pairs_unattributed: 4,
        });
        r.counters.distribution_dropped = 9;
        let ms = decode(&r);
        assert_eq!(
            points(&ms, "metro.distribution.dropped"),
            [(iface.clone(), 9)]
        );
        let with = |kv: &str| vec!["iface=any".to_string(), kv.to_string()];
        assert_eq!(
            points(&ms, "metro.containers.namespaces"),
            [
                (with("state=attributed"), 3),
                (with("state=unattributed"), 2)
            ]
        );
        assert_eq!(
            points(&ms, "metro.containers.skipped"),
            [(iface.clone(), 1)]
        );
        assert_eq!(
            points(&ms, "metro.containers.pairs_unattributed"),
            [(iface, 4)]
        );
    }

    /// A receiver that accepts and answers one byte every `every` (never, for a long one).
    fn trickler(every: Duration) -> (std::net::SocketAddr, Arc<std::sync::atomic::AtomicBool>) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            l.set_nonblocking(true).unwrap();
            let mut conns = Vec::new();
            while !st.load(std::sync::atomic::Ordering::Relaxed) {
                if let Ok((c, _)) = l.accept() {
                    conns.push(c);
                }
                for c in &mut conns {
                    let _ = c.write(b"H");
                }
                std::thread::sleep(every.min(Duration::from_millis(50)));
                if every > Duration::from_millis(50) {
                    std::thread::sleep(every - Duration::from_millis(50));
                }
            }
        });
        (addr, stop)
    }

    fn small_report() -> InstanceReport {
        InstanceReport {
            iface: "eth0".into(),
            tags: vec![],
            pairs: vec![],
            counters: InstanceCounters::default(),
        }
    }

    #[test]
    fn a_trickling_receiver_costs_a_push_its_deadline_not_a_timeout_per_byte() {
        let (addr, stop) = trickler(Duration::from_millis(100));
        let t = Target {
            authority: addr.to_string(),
            path: "/v1/metrics".into(),
        };
        let mut lookup = Lookup::new("127.0.0.1", addr.port(), Duration::from_secs(60));
        let start = Instant::now();
        let deadline = start + Duration::from_millis(600);
        let e = post(&t, &mut lookup, b"x", || {
            deadline.checked_duration_since(Instant::now())
        })
        .unwrap_err();
        let took = start.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        // Bytes kept coming every 100 ms, each resetting a per-read timeout: only the
        // push's deadline ends it.
        assert_eq!(e.kind(), io::ErrorKind::TimedOut, "{e}");
        assert!(took >= Duration::from_millis(600), "{took:?}");
        assert!(took < Duration::from_millis(1200), "{took:?}");
    }

    #[test]
    fn send_never_waits_and_close_ends_within_the_grace() {
        // Accepts, never answers.
        let (addr, stop) = trickler(Duration::from_secs(3600));
        let mut sink = OtlpSink::new(&format!("http://{addr}"), Duration::from_secs(60));
        let t = Instant::now();
        for _ in 0..3 {
            sink.send(&small_report(), SendErrors::default());
        }
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
        assert_eq!(sink.take_failures("eth0"), 0);
        let t = Instant::now();
        sink.close();
        let took = t.elapsed();
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        assert!(
            took < SHUTDOWN_GRACE + Duration::from_millis(500),
            "{took:?}"
        );
        // The push under way and the two queued failed, counted for their instance.
        assert_eq!(sink.take_failures("eth0"), 3);
        // A full queue drops and counts; send still never waits.
        let mut sink = OtlpSink::new("http://127.0.0.1:9", Duration::from_secs(60));
        sink.tx = None;
        sink.send(&small_report(), SendErrors::default());
        assert_eq!(sink.take_failures("eth0"), 1);
    }
}
