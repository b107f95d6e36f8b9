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
//! (opentelemetry-proto, prost). The transport is one blocking HTTP/1.1 request per report
//! from the flusher thread, with short timeouts: a dead collector costs the flusher at most
//! those, never the capture.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

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
use crate::agent::fleet::{EXP_SCALE, EXP_ZERO_THRESHOLD};
use crate::agent::report::InstanceReport;

/// Connect, write and read timeouts of one push.
const TIMEOUT: Duration = Duration::from_secs(3);

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
    let family = catalog::family_of(r);
    let mut hist = Vec::new();
    let mut samples = Vec::new();
    let mut counters: Vec<Vec<NumberDataPoint>> = family.counters.iter().map(|_| vec![]).collect();
    let mut gauges: Vec<Vec<NumberDataPoint>> = family.gauges.iter().map(|_| vec![]).collect();
    for p in &r.pairs {
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
    let mut metrics = Vec::new();
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
            metrics.push(sum_metric(c.otlp, c.help, c.unit, points));
        }
    }
    for (g, points) in family.gauges.iter().zip(gauges) {
        if !points.is_empty() {
            metrics.push(gauge_metric(g.otlp, g.help, "s", points));
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

/// Pushes reports to one OTLP/HTTP endpoint.
pub struct OtlpSink {
    /// `HOST:PORT`.
    authority: String,
    path: String,
    host: String,
    /// End of the last interval pushed, per interface (the next one's start).
    last: HashMap<String, u64>,
    started: u64,
    /// Whether the last push failed (to log a streak once); failures are counted by the
    /// caller ([`super::Sinks`]) and exported as `metro.otlp.send_errors`.
    failing: bool,
}

impl OtlpSink {
    /// `endpoint` is `http://HOST:PORT[/PREFIX]` (checked by the configuration).
    pub fn new(endpoint: &str) -> OtlpSink {
        let rest = endpoint.strip_prefix("http://").unwrap_or(endpoint);
        let (authority, prefix) = match rest.split_once('/') {
            Some((a, p)) => (a, format!("/{}", p.trim_end_matches('/'))),
            None => (rest, String::new()),
        };
        OtlpSink {
            authority: authority.to_string(),
            path: format!("{prefix}/v1/metrics"),
            host: host_name(),
            last: HashMap::new(),
            started: now_ns(),
            failing: false,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}{}", self.authority, self.path)
    }

    /// Push one report with the send errors counted before it; a failure is logged (once
    /// per streak) and counted. Returns whether the push was accepted.
    pub fn send(&mut self, r: &InstanceReport, errs: SendErrors) -> bool {
        let now = now_ns();
        let start = self
            .last
            .insert(r.iface.clone(), now)
            .unwrap_or(self.started);
        let body = encode(r, &self.host, start, now, errs).encode_to_vec();
        match self.post(&body) {
            Ok(()) => {
                if self.failing {
                    tracing::info!("otlp: {} accepts metrics again", self.endpoint());
                }
                self.failing = false;
                true
            }
            Err(e) => {
                if !self.failing {
                    tracing::warn!("otlp: cannot push to {}: {e}", self.endpoint());
                }
                self.failing = true;
                false
            }
        }
    }

    fn post(&self, body: &[u8]) -> io::Result<()> {
        let addr = self
            .authority
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other("no address"))?;
        let mut c = TcpStream::connect_timeout(&addr, TIMEOUT)?;
        c.set_read_timeout(Some(TIMEOUT))?;
        c.set_write_timeout(Some(TIMEOUT))?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/x-protobuf\r\nContent-Length: {}\r\nConnection: close\r\nUser-Agent: metro/{}\r\n\r\n",
            self.path,
            self.authority,
            body.len(),
            env!("CARGO_PKG_VERSION")
        );
        c.write_all(head.as_bytes())?;
        c.write_all(body)?;
        // The status line is all that matters; read at most a little.
        let mut buf = [0u8; 512];
        let mut n = 0;
        while n < 12 {
            let k = c.read(&mut buf[n..])?;
            if k == 0 {
                break;
            }
            n += k;
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
                dst: "db".into(),
                stats: s,
                retransmits: 2,
                fine: Some(Box::new(f)),
                extra_tags: vec!["container:web".into()],
                baseline_ms: None,
            }],
            counters: InstanceCounters {
                samples: [4, 0, 0],
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
                packets_copies: 11,
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
        assert_eq!(points(&ms, "metro.packets.copies"), [(iface.clone(), 11)]);
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
}
