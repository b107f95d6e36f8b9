//! Every catalog entry reaches every sink: one report that speaks of every metric is
//! encoded by the three sinks, each output decoded (our DogStatsD parser, promtool and
//! a parser of the text format, the official OTLP schema through prost), and each
//! entry's points found in each with its value and labels; nothing else is found.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use metro_core::aggregate::Stats;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;
use prost::Message;

use super::SendErrors;
use super::catalog::*;
use super::prom::Prom;
use super::{otlp, statsd};
use crate::agent::fleet::{Fine, IntervalOpts};
use crate::agent::report::{InstanceCounters, InstanceReport, PairReport, PairsDropped};

const ERRS: SendErrors = SendErrors {
    statsd: 17,
    otlp: Some(18),
};

/// A report in which every metric has points, each counter a distinct value.
fn full_report() -> InstanceReport {
    let o = IntervalOpts {
        buckets_ms: Some(Arc::from(vec![1.0, 10.0, 50.0, 100.0])),
        distribution_rate: Some(1.0),
        exponential: true,
        ..IntervalOpts::default()
    };
    let pair = |protocol: u8, src: &str, dst: &str, rtts: &[f64], retransmits, extra: &[&str]| {
        let mut s = Stats::new();
        let mut f = Fine::new(&o);
        let mut room = usize::MAX;
        for &ms in rtts {
            s.add(ms);
            f.add(ms, &o, &mut room);
        }
        PairReport {
            src: src.parse().unwrap(),
            protocol,
            dst: dst.into(),
            stats: s,
            retransmits,
            fine: Some(Box::new(f)),
            extra_tags: extra.iter().map(|t| t.to_string()).collect(),
            // Below the interval's least RTT, as after a faster interval.
            baseline_ms: Some(rtts[0] * 0.5),
        }
    };
    InstanceReport {
        iface: "eth0".into(),
        tags: vec!["env:prod".into(), "team:net ops".into(), "canary".into()],
        pairs: vec![
            pair(0, "10.0.0.1", "db", &[4.0, 12.5, 40.0], 3, &[]),
            // QUIC, DNS and ICMP: their families, without retransmissions.
            pair(1, "10.0.0.1", "db", &[20.0, 22.0], 0, &[]),
            pair(
                2,
                "10.0.0.1",
                "ns",
                &[1.5, 3.0, 70.0],
                0,
                &["container_name:web"],
            ),
            pair(3, "2001:db8::1", "2001:db8::2", &[0.75], 0, &[]),
            pair(
                0,
                "2001:db8::1",
                "2001:db8::2",
                &[0.25, 60.0],
                0,
                &["container_name:web"],
            ),
        ],
        counters: InstanceCounters {
            packets_received: 1,
            packets_dropped: 2,
            flows_active: 3,
            flows_evicted: 4,
            flows_shed: 5,
            packets_filtered: 6,
            samples: [7, 8, 9, 23, 24, 25, 26],
            samples_internal: 10,
            packets_copies: crate::agent::report::Copies { plain: 11, nat: 22 },
            capture_ebpf: 1,
            packets_raw: [31, 32, 33, 34, 35],
            containers: Some(crate::agent::containers::Counters {
                namespaces_attributed: 12,
                namespaces_unattributed: 13,
                skipped: 14,
                pairs_unattributed: 15,
            }),
            pairs_dropped: PairsDropped {
                samples: 19,
                retransmits: 20,
            },
            series_overflow: 21,
            distribution_dropped: 16,
            proto: Box::new(crate::agent::report::ProtoDeltas {
                dns_rcodes: [27, 0, 28, 29, 0, 0, 0, 0, 0, 0, 0, 0, 0, 30, 0, 0],
                dns_timeouts: 31,
                dropped: [32, 33, 34],
                unmatched: [35, 36],
            }),
        },
    }
}

/// A point as every sink's decoder gives it: labels as `key=value` (a bare tag `key`).
type Point = (String, BTreeSet<String>, f64);

fn want_labels(ls: &[Label]) -> BTreeSet<String> {
    ls.iter()
        .map(|l| match &l.value {
            Some(v) => format!("{}={v}", l.key),
            None => l.key.to_string(),
        })
        .collect()
}

/// What the catalog says one report becomes, per sink: (name, labels, value).
struct Want {
    statsd: Vec<Point>,
    prom: Vec<Point>,
    otlp: Vec<Point>,
}

fn want(r: &InstanceReport) -> Want {
    // Every family has a pair in the report, so every family's names are checked.
    for f in FAMILIES {
        assert!(
            r.pairs.iter().any(|p| std::ptr::eq(family_of(p), f)),
            "no {} pair in the full report",
            f.statsd
        );
    }
    let mut w = Want {
        statsd: vec![],
        prom: vec![],
        otlp: vec![],
    };
    for p in &r.pairs {
        let family = family_of(p);
        let names = family.names();
        let l = want_labels(&pair_labels(r, p));
        for ((s, pr), ms) in names
            .statsd_stats
            .iter()
            .zip(&names.prom_stats)
            .zip(p.rtt_ms())
        {
            w.statsd.push((s.clone(), l.clone(), ms));
            w.prom.push((pr.clone(), l.clone(), ms / 1000.0));
        }
        let n = p.stats.count() as f64;
        w.statsd.push((names.statsd_samples.clone(), l.clone(), n));
        w.prom
            .push((format!("{}_total", names.prom_samples), l.clone(), n));
        w.prom
            .push((format!("{}_count", names.prom_histogram), l.clone(), n));
        w.otlp.push((names.otlp_samples.clone(), l.clone(), n));
        w.otlp.push((family.otlp.to_string(), l.clone(), n));
        for c in family.counters {
            let v = (c.value)(p) as f64;
            w.statsd.push((c.names.statsd.into(), l.clone(), v));
            w.prom
                .push((format!("{}_total", c.names.prom), l.clone(), v));
            w.otlp.push((c.names.otlp.into(), l.clone(), v));
        }
        for g in family.gauges {
            let ms = g.of(p).expect("a baseline in the full report");
            w.statsd.push((g.names.statsd.into(), l.clone(), ms));
            w.prom.push((g.names.prom.into(), l.clone(), ms / 1000.0));
            w.otlp.push((g.names.otlp.into(), l.clone(), ms / 1000.0));
        }
        // The distribution: one point per value, counted here as their number.
        let values = p.fine.as_ref().unwrap().values.len() as f64;
        w.statsd
            .push((names.statsd_distribution.clone(), l.clone(), values));
    }
    let input = Input {
        report: r,
        errors: ERRS,
    };
    let base = instance_labels(r);
    for m in &SELF {
        let points = (m.points)(&input);
        assert!(
            !points.is_empty(),
            "{} has no points in the full report",
            m.name
        );
        for (by, v) in points {
            let mut ls = base.clone();
            ls.extend(m.by.map(|k| breakdown(k, by)));
            let l = want_labels(&ls);
            let v = v as f64;
            w.statsd.push((m.name.into(), l.clone(), v));
            let prom = match m.kind {
                Kind::Counter => format!("{}_total", m.prom),
                Kind::Gauge => m.prom.to_string(),
            };
            w.prom.push((prom, l.clone(), v));
            w.otlp.push((m.name.into(), l, v));
        }
    }
    w
}

fn sorted(mut v: Vec<Point>) -> Vec<Point> {
    v.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    v
}

fn close(got: &[Point], want: &[Point], sink: &str) {
    let (got, want) = (sorted(got.to_vec()), sorted(want.to_vec()));
    let names =
        |v: &[Point]| -> Vec<String> { v.iter().map(|p| format!("{} {:?}", p.0, p.1)).collect() };
    assert_eq!(names(&got), names(&want), "{sink}: the points differ");
    for (g, w) in got.iter().zip(&want) {
        let tol = 1e-9 + w.2.abs() * 0.011;
        assert!(
            (g.2 - w.2).abs() <= tol,
            "{sink}: {} {:?}: {} vs {}",
            g.0,
            g.1,
            g.2,
            w.2
        );
    }
}

#[test]
fn every_catalog_entry_reaches_every_sink() {
    let r = full_report();
    let w = want(&r);

    // DogStatsD: our strict parser. Tags come back sanitized (`team:net_ops`); a
    // distribution's values are counted.
    let mut got: BTreeMap<(String, BTreeSet<String>), f64> = BTreeMap::new();
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    for d in statsd::encode_report(&r, ERRS, statsd::UDP_MAX) {
        for m in statsd::parse_datagram(std::str::from_utf8(&d).unwrap()).unwrap() {
            let tags = m.tags.iter().map(|t| t.replacen(':', "=", 1)).collect();
            let v = if m.ty == "d" { 1.0 } else { m.value };
            *got.entry((m.name.clone(), tags)).or_default() += v;
            types.insert(m.name, m.ty);
        }
    }
    let got: Vec<Point> = got.into_iter().map(|((n, l), v)| (n, l, v)).collect();
    let want_statsd: Vec<Point> = w
        .statsd
        .iter()
        .map(|(n, l, v)| {
            let l = l.iter().map(|t| t.replace(' ', "_")).collect();
            (n.clone(), l, *v)
        })
        .collect();
    close(&got, &want_statsd, "DogStatsD");
    for m in &SELF {
        let ty = match m.kind {
            Kind::Counter => "c",
            Kind::Gauge => "g",
        };
        assert_eq!(types[m.name], ty, "{}", m.name);
    }

    // Prometheus: promtool checks the exposition; our parser reads the samples (the
    // bare tag is no label: the text format has none). Buckets and sums are checked
    // through _count.
    let prom = Prom::new();
    prom.observe(&r, ERRS);
    let text = prom.render_text();
    promtool_check(&text);
    let got: Vec<Point> = parse_text(&text)
        .into_iter()
        .filter(|(n, _, _)| !n.ends_with("_bucket") && !n.ends_with("_seconds_sum"))
        .collect();
    let want_prom: Vec<Point> = w
        .prom
        .iter()
        .map(|(n, l, v)| {
            let l = l.iter().filter(|t| t.contains('=')).cloned().collect();
            (n.clone(), l, *v)
        })
        .collect();
    close(&got, &want_prom, "Prometheus");

    // OTLP: the official schema. A bare tag is an attribute with an empty value; an
    // exponential histogram point is counted by its `count`.
    let bytes = otlp::encode(&r, "h", 1, 2, ERRS).encode_to_vec();
    let back = ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap();
    let mut got: Vec<Point> = Vec::new();
    let mut kinds: BTreeMap<String, &str> = BTreeMap::new();
    for m in &back.resource_metrics[0].scope_metrics[0].metrics {
        let label = |kvs: &[opentelemetry_proto::tonic::common::v1::KeyValue]| {
            kvs.iter()
                .map(|k| match &k.value.as_ref().unwrap().value {
                    Some(any_value::Value::StringValue(v)) if v.is_empty() => k.key.clone(),
                    Some(any_value::Value::StringValue(v)) => format!("{}={v}", k.key),
                    other => panic!("{other:?}"),
                })
                .collect::<BTreeSet<String>>()
        };
        let number = |dp: &number_data_point::Value| match dp {
            number_data_point::Value::AsInt(v) => *v as f64,
            number_data_point::Value::AsDouble(v) => *v,
        };
        match m.data.as_ref().unwrap() {
            Data::Sum(s) => {
                kinds.insert(m.name.clone(), "sum");
                for dp in &s.data_points {
                    let v = number(dp.value.as_ref().unwrap());
                    got.push((m.name.clone(), label(&dp.attributes), v));
                }
            }
            Data::Gauge(g) => {
                kinds.insert(m.name.clone(), "gauge");
                for dp in &g.data_points {
                    let v = number(dp.value.as_ref().unwrap());
                    got.push((m.name.clone(), label(&dp.attributes), v));
                }
            }
            Data::ExponentialHistogram(h) => {
                for dp in &h.data_points {
                    got.push((m.name.clone(), label(&dp.attributes), dp.count as f64));
                }
            }
            other => panic!("{}: {other:?}", m.name),
        }
    }
    close(&got, &w.otlp, "OTLP");
    for m in &SELF {
        let kind = match m.kind {
            Kind::Counter => "sum",
            Kind::Gauge => "gauge",
        };
        assert_eq!(kinds[m.name], kind, "{}", m.name);
    }
}

#[test]
fn a_metric_without_points_reaches_no_sink() {
    let mut r = full_report();
    r.counters.containers = None;
    r.counters.distribution_dropped = 0;
    for p in &mut r.pairs {
        p.fine = None;
    }
    let errs = SendErrors {
        statsd: 0,
        otlp: None,
    };
    let absent = [
        "metro.containers.namespaces",
        "metro.containers.skipped",
        "metro.containers.pairs_unattributed",
        "metro.distribution.dropped",
        "metro.otlp.send_errors",
    ];
    let input = Input {
        report: &r,
        errors: errs,
    };
    for m in &SELF {
        assert_eq!(
            (m.points)(&input).is_empty(),
            absent.contains(&m.name),
            "{}",
            m.name
        );
    }
    let text: String = statsd::encode_report(&r, errs, statsd::UNIX_MAX)
        .into_iter()
        .map(|d| String::from_utf8(d).unwrap() + "\n")
        .collect();
    let prom = Prom::new();
    prom.observe(&r, errs);
    let exposition = prom.render_text();
    let bytes = otlp::encode(&r, "h", 1, 2, errs).encode_to_vec();
    let back = ExportMetricsServiceRequest::decode(bytes.as_slice()).unwrap();
    let otlp_names: BTreeSet<&str> = back.resource_metrics[0].scope_metrics[0]
        .metrics
        .iter()
        .map(|m| m.name.as_str())
        .collect();
    for m in SELF.iter().filter(|m| absent.contains(&m.name)) {
        assert!(
            !text.contains(&format!("{}:", m.name)),
            "{}\n{text}",
            m.name
        );
        assert!(
            !exposition
                .lines()
                .any(|l| l.starts_with(m.prom) && !l.starts_with('#')),
            "{}\n{exposition}",
            m.prom
        );
        assert!(!otlp_names.contains(m.name), "{}", m.name);
    }
}

#[test]
fn names_follow_the_conventions() {
    let mut seen = BTreeSet::new();
    for m in &SELF {
        // metro's own, or a protocol's count beside its RTT family (`system.net.dns.*`,
        // `metro_dns_*` in Prometheus).
        match m.name.strip_prefix("system.net.") {
            Some(rest) => assert_eq!(m.prom, format!("metro_{}", rest.replace('.', "_"))),
            None => {
                assert!(m.name.starts_with("metro."), "{}", m.name);
                assert_eq!(m.prom, m.name.replace('.', "_"), "{}", m.name);
            }
        }
        assert!(seen.insert(m.name), "{} twice", m.name);
        assert!(
            m.unit.starts_with('{') && m.unit.ends_with('}'),
            "{}",
            m.unit
        );
    }
    let n = TCP_RTT.names();
    assert_eq!(
        n.statsd_stats,
        [
            "system.net.tcp.rtt",
            "system.net.tcp.rtt.avg",
            "system.net.tcp.rtt.jitter",
            "system.net.tcp.rtt.min",
            "system.net.tcp.rtt.max",
            "system.net.tcp.rtt.p50",
            "system.net.tcp.rtt.p90",
            "system.net.tcp.rtt.p99",
        ]
    );
    assert_eq!(n.statsd_samples, "system.net.tcp.rtt.samples");
    assert_eq!(n.statsd_distribution, "system.net.tcp.rtt.distribution");
    assert_eq!(n.prom_stats[0], "metro_tcp_rtt_last_seconds");
    assert_eq!(n.prom_stats[7], "metro_tcp_rtt_p99_seconds");
    assert_eq!(n.prom_histogram, "metro_tcp_rtt_seconds");
    // The other protocols' families: the names.
    let hist: Vec<&str> = FAMILIES
        .iter()
        .map(|f| f.names().prom_histogram.as_str())
        .collect();
    assert_eq!(
        hist,
        [
            "metro_tcp_rtt_seconds",
            "metro_quic_rtt_seconds",
            "metro_dns_response_seconds",
            "metro_icmp_rtt_seconds"
        ]
    );
    let dns = DNS_RESPONSE.names();
    assert_eq!(dns.statsd_stats[1], "system.net.dns.response_time.avg");
    assert_eq!(dns.statsd_samples, "system.net.dns.response_time.samples");
    assert_eq!(
        dns.statsd_distribution,
        "system.net.dns.response_time.distribution"
    );
    assert_eq!(QUIC_RTT.names().statsd_stats[7], "system.net.quic.rtt.p99");
    assert_eq!(ICMP_RTT.names().statsd_stats[5], "system.net.icmp.rtt.p50");
    assert_eq!(n.otlp_samples, "metro.tcp.rtt.samples");
    // A new protocol is one static: its names follow from its bases.
    static DNS: RttFamily = RttFamily::new(
        "system.net.dns.response_time",
        "metro_dns_response",
        "metro.dns.response_time",
        "DNS response time",
        "DNS responses matched to a query",
        &[],
    );
    assert_eq!(
        DNS.names().statsd_stats[5],
        "system.net.dns.response_time.p50"
    );
    assert_eq!(DNS.names().prom_histogram, "metro_dns_response_seconds");
}

fn promtool_check(text: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let spawned = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    // Without promtool the exposition is still read by `parse_text` below; CI (which sets
    // METRO_TESTS_REQUIRE_ROOT and installs it) always runs it.
    let mut child = match spawned {
        Ok(c) => c,
        Err(e) if std::env::var_os("METRO_TESTS_REQUIRE_ROOT").is_none() => {
            eprintln!("skipped: promtool check metrics ({e}; Debian package `prometheus`)");
            return;
        }
        Err(e) => panic!("run promtool (Debian package `prometheus`): {e}"),
    };
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{text}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The samples of a text-format exposition: name, `key=value` labels (unescaped), value.
fn parse_text(text: &str) -> Vec<Point> {
    let mut out = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (series, value) = line.rsplit_once(' ').unwrap();
        let value: f64 = value.parse().unwrap_or_else(|e| panic!("{line}: {e}"));
        let (name, mut rest) = match series.split_once('{') {
            Some((n, r)) => (n, r.strip_suffix('}').unwrap()),
            None => (series, ""),
        };
        let mut labels = BTreeSet::new();
        while !rest.is_empty() {
            let (k, r) = rest.split_once("=\"").unwrap();
            let mut v = String::new();
            let mut chars = r.char_indices();
            let end = loop {
                match chars.next().unwrap() {
                    (_, '\\') => match chars.next().unwrap().1 {
                        'n' => v.push('\n'),
                        c => v.push(c),
                    },
                    (i, '"') => break i,
                    (_, c) => v.push(c),
                }
            };
            labels.insert(format!("{k}={v}"));
            rest = r[end + 1..].trim_start_matches(',');
        }
        out.push((name.to_string(), labels, value));
    }
    out
}
