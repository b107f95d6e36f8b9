//! Prometheus exposition: the same reports the DogStatsD sink sends, as a registry of
//! prometheus-client metrics served on `GET /metrics` by the responder in [`http`]
//! (`prometheus_listen`, off by default).
//!
//! RTT statistics are gauges in seconds (`metro_tcp_rtt_{last,avg,jitter,min,max,p50,p90,p99}_seconds`)
//! that exist only for pairs with samples in the last interval; counts are cumulative
//! counters (`metro_tcp_rtt_samples_total`, `metro_tcp_retransmits_total`, `metro_samples_total`,
//! ...). A pair's counters are dropped after an hour without samples, so the series set
//! stays bounded.
//!
//! The fleet histogram `metro_tcp_rtt_seconds` (cumulative buckets, `_sum`, `_count`) is
//! labelled `src`, `dst`, `iface` and the instance's `key:value` tags, so that
//! `histogram_quantile(0.99, sum by (le) (rate(metro_tcp_rtt_seconds_bucket[5m])))` is a
//! quantile over every host scraped.

mod hist;
pub mod http;
mod text;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

use super::SendErrors;
use crate::agent::report::InstanceReport;
use hist::CumHist;
use text::openmetrics_to_text;
use text::{esc, tag_labels};

type Labels = Vec<(String, String)>;
type GaugeF = Gauge<f64, AtomicU64>;

/// A pair's counters go after this long without samples.
const PAIR_TTL: Duration = Duration::from_secs(3600);

const STATS: [&str; 8] = ["last", "avg", "jitter", "min", "max", "p50", "p90", "p99"];

/// The metrics, updated by the flusher after each report.
pub struct Prom {
    registry: Registry,
    rtt: [Family<Labels, GaugeF>; 8],
    rtt_samples: Family<Labels, Counter>,
    retransmits: Family<Labels, Counter>,
    packets_received: Family<Labels, Counter>,
    packets_dropped: Family<Labels, Counter>,
    flows_active: Family<Labels, Gauge>,
    flows_evicted: Family<Labels, Counter>,
    flows_shed: Family<Labels, Counter>,
    packets_filtered: Family<Labels, Counter>,
    samples: Family<Labels, Counter>,
    samples_internal: Family<Labels, Counter>,
    pairs_dropped: Family<Labels, Counter>,
    send_errors: Family<Labels, Counter>,
    otlp_send_errors: Family<Labels, Counter>,
    series_overflow: Family<Labels, Counter>,
    distribution_dropped: Family<Labels, Counter>,
    packets_copies: Family<Labels, Counter>,
    containers_namespaces: Family<Labels, Gauge>,
    containers_skipped: Family<Labels, Gauge>,
    containers_pairs_unattributed: Family<Labels, Counter>,
    histogram: Family<Labels, CumHist>,
    state: Mutex<PromState>,
}

#[derive(Default)]
struct PromState {
    /// Pair label sets with gauges now, per iface.
    gauged: HashMap<String, Vec<Labels>>,
    /// Last time each pair had samples.
    seen: HashMap<Labels, Instant>,
    /// Last time each histogram series had samples.
    seen_hist: HashMap<Labels, Instant>,
}

impl Default for Prom {
    fn default() -> Self {
        Self::new()
    }
}

impl Prom {
    pub fn new() -> Prom {
        let mut registry = Registry::default();
        let rtt: [Family<Labels, GaugeF>; 8] = Default::default();
        for (name, fam) in STATS.iter().zip(rtt.iter()) {
            registry.register(
                format!("metro_tcp_rtt_{name}_seconds"),
                format!(
                    "TCP round-trip time to a watched remote host over the last interval: {name}"
                ),
                fam.clone(),
            );
        }
        let p = Prom {
            rtt,
            rtt_samples: Family::default(),
            retransmits: Family::default(),
            packets_received: Family::default(),
            packets_dropped: Family::default(),
            flows_active: Family::default(),
            flows_evicted: Family::default(),
            flows_shed: Family::default(),
            packets_filtered: Family::default(),
            samples: Family::default(),
            samples_internal: Family::default(),
            pairs_dropped: Family::default(),
            send_errors: Family::default(),
            otlp_send_errors: Family::default(),
            series_overflow: Family::default(),
            distribution_dropped: Family::default(),
            packets_copies: Family::default(),
            containers_namespaces: Family::default(),
            containers_skipped: Family::default(),
            containers_pairs_unattributed: Family::default(),
            histogram: Family::default(),
            state: Mutex::new(PromState::default()),
            registry,
        };
        let mut p = p;
        let r = &mut p.registry;
        r.register(
            "metro_tcp_rtt_samples",
            "RTT samples answered by a watched remote host",
            p.rtt_samples.clone(),
        );
        r.register(
            "metro_tcp_retransmits",
            "TCP retransmissions between a local address and a watched remote host",
            p.retransmits.clone(),
        );
        r.register(
            "metro_packets_received",
            "Packets delivered by the capture",
            p.packets_received.clone(),
        );
        r.register(
            "metro_packets_dropped",
            "Packets dropped by the kernel or the interface (libpcap's counters)",
            p.packets_dropped.clone(),
        );
        r.register(
            "metro_flows_active",
            "TCP connections tracked",
            p.flows_active.clone(),
        );
        r.register(
            "metro_flows_evicted",
            "Connections evicted because the flow table was full",
            p.flows_evicted.clone(),
        );
        r.register(
            "metro_flows_shed",
            "Of the evicted connections, unconfirmed ones (half-open or one-sided) shed to make room",
            p.flows_shed.clone(),
        );
        r.register(
            "metro_packets_filtered",
            "Packets outside the watch list dropped in user space (kernel filter wider than the list)",
            p.packets_filtered.clone(),
        );
        r.register(
            "metro_samples",
            "Network RTT samples, by kind",
            p.samples.clone(),
        );
        r.register(
            "metro_samples_internal",
            "Samples answered by this host (not reported as RTT)",
            p.samples_internal.clone(),
        );
        r.register(
            "metro_pairs_dropped",
            "Samples (kind=sample) and retransmissions (kind=retransmit) that found no room in \
             an interval's (local, remote) pair tables",
            p.pairs_dropped.clone(),
        );
        r.register(
            "metro_statsd_send_errors",
            "DogStatsD datagrams that could not be sent",
            p.send_errors.clone(),
        );
        r.register(
            "metro_otlp_send_errors",
            "OTLP pushes that failed",
            p.otlp_send_errors.clone(),
        );
        r.register(
            "metro_series_overflow",
            "Samples reported under dst=\"other\" because max_series series had samples",
            p.series_overflow.clone(),
        );
        r.register(
            "metro_distribution_dropped",
            "Distribution values not kept: more than 2^20 in one interval",
            p.distribution_dropped.clone(),
        );
        r.register(
            "metro_packets_copies",
            "Copies of a packet seen on another interface (capture on `any`), dropped",
            p.packets_copies.clone(),
        );
        r.register(
            "metro_containers_namespaces",
            "Network namespaces on this host, with a container or pod (state=attributed) or \
             without (state=unattributed)",
            p.containers_namespaces.clone(),
        );
        r.register(
            "metro_containers_skipped",
            "Processes and namespaces not read at the last refresh (limits, permissions)",
            p.containers_skipped.clone(),
        );
        r.register(
            "metro_containers_pairs_unattributed",
            "Pairs whose local address no namespace on this host owns",
            p.containers_pairs_unattributed.clone(),
        );
        r.register(
            "metro_tcp_rtt_seconds",
            "TCP round-trip time to a watched remote host (histogram; sum over hosts and read \
             with histogram_quantile)",
            p.histogram.clone(),
        );
        p
    }

    /// Fold one instance's report in.
    pub fn observe(&self, r: &InstanceReport, send_errors: SendErrors) {
        let iface = esc(&r.iface);
        // Every series carries the instance's tags, as its DogStatsD tags and OTLP
        // attributes do: `iface`, the tags, then a breakdown (`kind`, `state`).
        let tag_l = tag_labels(&r.tags);
        let mut il: Labels = vec![("iface".into(), iface.clone())];
        il.extend(tag_l.iter().cloned());
        let c = &r.counters;
        self.packets_received
            .get_or_create(&il)
            .inc_by(c.packets_received);
        self.packets_dropped
            .get_or_create(&il)
            .inc_by(c.packets_dropped);
        self.flows_active
            .get_or_create(&il)
            .set(c.flows_active as i64);
        self.flows_evicted
            .get_or_create(&il)
            .inc_by(c.flows_evicted);
        self.flows_shed.get_or_create(&il).inc_by(c.flows_shed);
        self.packets_filtered
            .get_or_create(&il)
            .inc_by(c.packets_filtered);
        for (k, n) in metro_core::rtt::Kind::ALL.iter().zip(c.samples) {
            let mut l = il.clone();
            l.push(("kind".into(), k.name().into()));
            self.samples.get_or_create(&l).inc_by(n);
        }
        self.samples_internal
            .get_or_create(&il)
            .inc_by(c.samples_internal);
        for (k, n) in [
            ("sample", c.pairs_dropped.samples),
            ("retransmit", c.pairs_dropped.retransmits),
        ] {
            let mut l = il.clone();
            l.push(("kind".into(), k.into()));
            self.pairs_dropped.get_or_create(&l).inc_by(n);
        }
        self.send_errors
            .get_or_create(&il)
            .inc_by(send_errors.statsd);
        if let Some(n) = send_errors.otlp {
            self.otlp_send_errors.get_or_create(&il).inc_by(n);
        }
        self.series_overflow
            .get_or_create(&il)
            .inc_by(c.series_overflow);
        self.packets_copies
            .get_or_create(&il)
            .inc_by(c.packets_copies);
        if r.has_distributions() {
            self.distribution_dropped
                .get_or_create(&il)
                .inc_by(c.distribution_dropped);
        }
        if let Some(ct) = &c.containers {
            for (state, n) in [
                ("attributed", ct.namespaces_attributed),
                ("unattributed", ct.namespaces_unattributed),
            ] {
                let mut l = il.clone();
                l.push(("state".into(), state.into()));
                self.containers_namespaces.get_or_create(&l).set(n as i64);
            }
            self.containers_skipped
                .get_or_create(&il)
                .set(ct.skipped as i64);
            self.containers_pairs_unattributed
                .get_or_create(&il)
                .inc_by(ct.pairs_unattributed);
        }

        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut fresh = Vec::with_capacity(r.pairs.len());
        for p in &r.pairs {
            let mut l: Labels = vec![
                ("src".into(), p.src.to_string()),
                ("dst".into(), esc(&p.dst)),
                ("iface".into(), iface.clone()),
            ];
            l.extend(tag_l.iter().cloned());
            // The pair's own tags (container and pod of `src`, agent::containers): labels
            // of its gauges and counters too, one series per local address either way.
            for t in tag_labels(&p.extra_tags) {
                if !l.iter().any(|(n, _)| *n == t.0) {
                    l.push(t);
                }
            }
            let s = &p.stats;
            let v = p.rtt_ms();
            for (fam, ms) in self.rtt.iter().zip(v) {
                fam.get_or_create(&l).set(ms / 1000.0);
            }
            self.rtt_samples.get_or_create(&l).inc_by(s.count());
            self.retransmits.get_or_create(&l).inc_by(p.retransmits);
            if let Some(f) = p.fine.as_deref().filter(|f| f.bounds_ms.is_some()) {
                self.histogram.get_or_create(&l).add(f);
                st.seen_hist.insert(l.clone(), now);
            }
            st.seen.insert(l.clone(), now);
            fresh.push(l);
        }
        // Gauges of pairs without new samples go (no stale values).
        let old = st
            .gauged
            .insert(r.iface.clone(), fresh.clone())
            .unwrap_or_default();
        // A set: an interval has up to 65,536 pairs, and a scan of `fresh` per old pair would
        // cost billions of comparisons a flush.
        let fresh: HashSet<&Labels> = fresh.iter().collect();
        for l in old {
            if !fresh.contains(&l) {
                for fam in &self.rtt {
                    fam.remove(&l);
                }
            }
        }
        let expired: Vec<Labels> = st
            .seen
            .iter()
            .filter(|(_, t)| now.duration_since(**t) > PAIR_TTL)
            .map(|(l, _)| l.clone())
            .collect();
        for l in expired {
            st.seen.remove(&l);
            self.rtt_samples.remove(&l);
            self.retransmits.remove(&l);
        }
        let expired: Vec<Labels> = st
            .seen_hist
            .iter()
            .filter(|(_, t)| now.duration_since(**t) > PAIR_TTL)
            .map(|(l, _)| l.clone())
            .collect();
        for l in expired {
            st.seen_hist.remove(&l);
            self.histogram.remove(&l);
        }
    }

    /// The exposition in the OpenMetrics text format.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = encode(&mut s, &self.registry);
        s
    }

    /// The exposition in the classic Prometheus text format (0.0.4), for scrapers and tools
    /// that do not ask for OpenMetrics (`promtool check metrics`).
    pub fn render_text(&self) -> String {
        openmetrics_to_text(&self.render())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::report::{InstanceCounters, PairReport};
    use metro_core::aggregate::Stats;
    use std::sync::Arc;

    pub(super) fn report(with_pair: bool) -> InstanceReport {
        let mut s = Stats::new();
        s.add(40.0);
        s.add(42.0);
        InstanceReport {
            iface: "eth0".into(),
            tags: vec![],
            pairs: if with_pair {
                vec![PairReport {
                    src: "10.0.0.1".parse().unwrap(),
                    dst: "db \"main\"".into(),
                    stats: s,
                    retransmits: 1,
                    fine: None,
                    extra_tags: vec![],
                }]
            } else {
                vec![]
            },
            counters: InstanceCounters {
                packets_received: 10,
                packets_copies: 6,
                samples: [2, 0, 0],
                pairs_dropped: crate::agent::report::PairsDropped {
                    samples: 0,
                    retransmits: 4,
                },
                ..Default::default()
            },
        }
    }

    #[test]
    fn exposition_and_stale_gauges() {
        let p = Arc::new(Prom::new());
        p.observe(
            &report(true),
            SendErrors {
                statsd: 3,
                otlp: Some(2),
            },
        );
        let t = p.render();
        assert!(t.contains("metro_tcp_rtt_last_seconds{src=\"10.0.0.1\",dst=\"db \\\"main\\\"\",iface=\"eth0\"} 0.042"), "{t}");
        assert!(t.contains("metro_tcp_rtt_samples_total{src=\"10.0.0.1\",dst=\"db \\\"main\\\"\",iface=\"eth0\"} 2"), "{t}");
        assert!(
            t.contains("metro_pairs_dropped_total{iface=\"eth0\",kind=\"retransmit\"} 4"),
            "{t}"
        );
        assert!(
            t.contains("metro_statsd_send_errors_total{iface=\"eth0\"} 3"),
            "{t}"
        );
        assert!(
            t.contains("metro_otlp_send_errors_total{iface=\"eth0\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("metro_samples_total{iface=\"eth0\",kind=\"seq\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("metro_packets_copies_total{iface=\"eth0\"} 6"),
            "{t}"
        );
        // No distributions configured, none refused: no series.
        assert!(
            !t.lines()
                .any(|l| l.starts_with("metro_distribution_dropped")),
            "{t}"
        );
        // No attribution ran: no container series (their HELP and TYPE lines only).
        assert!(
            !t.lines().any(|l| l.starts_with("metro_containers_")),
            "{t}"
        );
        p.observe(&report(false), SendErrors::default());
        let t = p.render();
        assert!(!t.contains("metro_tcp_rtt_last_seconds{"), "{t}");
        // Counters stay.
        assert!(
            t.contains("metro_tcp_rtt_samples_total{src=\"10.0.0.1\""),
            "{t}"
        );
        assert!(
            t.contains("metro_packets_received_total{iface=\"eth0\"} 20"),
            "{t}"
        );
    }

    #[test]
    fn instance_tags_label_every_series() {
        let p = Prom::new();
        let mut r = report(true);
        r.tags = vec!["env:prod".into(), "kind:x".into(), "bare".into()];
        p.observe(&r, SendErrors::default());
        let t = p.render();
        let pair = "{src=\"10.0.0.1\",dst=\"db \\\"main\\\"\",iface=\"eth0\",env=\"prod\"}";
        for name in [
            "metro_tcp_rtt_last_seconds",
            "metro_tcp_rtt_p99_seconds",
            "metro_tcp_rtt_samples_total",
            "metro_tcp_retransmits_total",
        ] {
            assert!(
                t.contains(&format!("{name}{pair} ")),
                "{name}{pair} in\n{t}"
            );
        }
        // `kind:x` would clash with the breakdown label, a bare tag is no label.
        assert!(
            t.contains("metro_samples_total{iface=\"eth0\",env=\"prod\",kind=\"seq\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("metro_packets_received_total{iface=\"eth0\",env=\"prod\"} 10"),
            "{t}"
        );
    }

    #[test]
    fn container_tags_are_labels() {
        let p = Arc::new(Prom::new());
        let mut r = report(true);
        r.pairs[0].extra_tags = vec![
            "container_id:ab12".into(),
            "container_name:checkout\"api".into(),
            "netns:cni-1".into(),
        ];
        p.observe(&r, SendErrors::default());
        let t = p.render();
        assert!(
            t.contains("metro_tcp_rtt_p50_seconds{src=\"10.0.0.1\",dst=\"db \\\"main\\\"\",iface=\"eth0\",container_id=\"ab12\",container_name=\"checkout\\\"api\",netns=\"cni-1\"}"),
            "{t}"
        );
    }

    #[test]
    fn container_attribution_counts() {
        let p = Prom::new();
        let mut r = report(false);
        r.counters.containers = Some(crate::agent::containers::Counters {
            namespaces_attributed: 3,
            namespaces_unattributed: 2,
            skipped: 1,
            pairs_unattributed: 4,
        });
        r.counters.distribution_dropped = 5;
        p.observe(&r, SendErrors::default());
        p.observe(&r, SendErrors::default());
        let t = p.render();
        for line in [
            "metro_containers_namespaces{iface=\"eth0\",state=\"attributed\"} 3",
            "metro_containers_namespaces{iface=\"eth0\",state=\"unattributed\"} 2",
            "metro_containers_skipped{iface=\"eth0\"} 1",
            // Two intervals of 5 values refused.
            "metro_distribution_dropped_total{iface=\"eth0\"} 10",
            // A counter: two intervals of 4.
            "metro_containers_pairs_unattributed_total{iface=\"eth0\"} 8",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} in\n{t}");
        }
    }
}
