//! Prometheus exposition: what [`super::catalog`] describes, as a registry of
//! prometheus-client metrics served on `GET /metrics` by the responder in [`http`]
//! (`prometheus_listen`, off by default). One concern per file: [`hist`] the cumulative
//! histogram, [`text`] labels and the text formats, [`http`] the responder, this file the
//! registry the flusher updates.
//!
//! RTT statistics are gauges in seconds (`metro_tcp_rtt_{last,avg,jitter,min,max,p50,p90,p99}_seconds`)
//! that exist only for pairs with samples in the last interval; counts are cumulative
//! counters (`metro_tcp_rtt_samples_total`, `metro_tcp_retransmits_total`, `metro_samples_total`,
//! ...). A pair's counters are dropped after an hour without samples; the exposition holds
//! at most `max_series` named pair series over its whole lifetime (not per interval only):
//! a pair new to it past that is folded into its local address's `dst="other"` series,
//! its samples counted in `metro_series_overflow_total`.
//!
//! The fleet histogram `metro_tcp_rtt_seconds` (cumulative buckets, `_sum`, `_count`) is
//! labelled like every pair series (`src`, `dst`, `iface`, the instance's `key:value` tags,
//! the pair's own), so that
//! `histogram_quantile(0.99, sum by (le) (rate(metro_tcp_rtt_seconds_bucket[5m])))` is a
//! quantile over every host scraped. A scraper that asks for protobuf (Prometheus with
//! `--enable-feature=native-histograms`) gets it also as a native histogram (schema
//! [`crate::agent::fleet::EXP_SCALE`]), read with
//! `histogram_quantile(0.99, sum(rate(metro_tcp_rtt_seconds[5m])))`.

mod hist;
pub mod http;
mod text;

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use prometheus_client::encoding::prometheus_protobuf;
use prometheus_client::encoding::prometheus_protobuf::prometheus_data_model as pb;
use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use prost::Message;

use super::SendErrors;
use super::catalog::{self, Kind, RttFamily};
use crate::agent::config::DEFAULT_MAX_SERIES;
use crate::agent::fleet::{Exemplar, OTHER};
use crate::agent::report::{InstanceReport, PairReport, stats_ms};
use hist::CumHist;
use text::{exemplar_labels, labels, openmetrics_to_text, with_exemplars};

type Labels = Vec<(String, String)>;
type GaugeF = Gauge<f64, AtomicU64>;

/// A pair's counters go after this long without samples.
const PAIR_TTL: Duration = Duration::from_secs(3600);

/// One self-metric's family, by kind.
enum SelfFamily {
    Counter(Family<Labels, Counter>),
    Gauge(Family<Labels, Gauge>),
}

/// A family described (`# HELP`, `# TYPE`) in the text formats even before it has a series,
/// as prometheus-client did before 0.24: a scrape before the first report shows what metro
/// exports. Protobuf leaves such families out ([`Prom::render_protobuf`]).
#[derive(Debug)]
struct Described<M>(M);

impl<M: EncodeMetric> EncodeMetric for Described<M> {
    fn encode(&self, encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        self.0.encode(encoder)
    }

    fn metric_type(&self) -> MetricType {
        self.0.metric_type()
    }

    fn is_empty(&self) -> bool {
        false
    }
}

/// The families of one [`RttFamily`].
struct RttFamilies {
    family: &'static RttFamily,
    stats: [Family<Labels, GaugeF>; 8],
    samples: Family<Labels, Counter>,
    /// One per [`RttFamily::counters`].
    counters: Vec<Family<Labels, Counter>>,
    /// One per [`RttFamily::gauges`].
    gauges: Vec<Family<Labels, GaugeF>>,
    histogram: Family<Labels, CumHist>,
}

impl RttFamilies {
    fn register(family: &'static RttFamily, r: &mut Registry) -> RttFamilies {
        let names = family.names();
        let f = RttFamilies {
            family,
            stats: Default::default(),
            samples: Family::default(),
            counters: family.counters.iter().map(|_| Family::default()).collect(),
            gauges: family.gauges.iter().map(|_| Family::default()).collect(),
            histogram: Family::default(),
        };
        for ((name, fam), (_, word)) in names.prom_stats.iter().zip(&f.stats).zip(catalog::STATS) {
            r.register(
                name,
                format!("{} over the last interval: {word}", family.help),
                Described(fam.clone()),
            );
        }
        r.register(
            &names.prom_samples,
            family.samples_help,
            Described(f.samples.clone()),
        );
        for (c, fam) in family.counters.iter().zip(&f.counters) {
            r.register(c.names.prom, c.help, Described(fam.clone()));
        }
        for (g, fam) in family.gauges.iter().zip(&f.gauges) {
            r.register(g.names.prom, g.help, Described(fam.clone()));
        }
        r.register(
            &names.prom_histogram,
            format!(
                "{} (histogram; sum over hosts and read with histogram_quantile)",
                family.help
            ),
            Described(f.histogram.clone()),
        );
        f
    }

    fn remove_gauges(&self, l: &Labels) {
        for fam in self.stats.iter().chain(&self.gauges) {
            fam.remove(l);
        }
    }

    fn remove_counters(&self, l: &Labels) {
        self.samples.remove(l);
        for fam in &self.counters {
            fam.remove(l);
        }
    }
}

/// The metrics, updated by the flusher after each report.
pub struct Prom {
    registry: Registry,
    /// One per [`catalog::SELF`] entry, in its order.
    own: Vec<SelfFamily>,
    /// One per [`catalog::FAMILIES`] entry, in its order.
    rtt: Vec<RttFamilies>,
    /// The named pair series the exposition holds at most ([`Prom::set_max_series`]).
    max_series: AtomicUsize,
    /// Whether a `/metrics` endpoint serves this ([`Prom::set_exposed`]).
    exposed: AtomicBool,
    state: Mutex<PromState>,
}

#[derive(Default)]
struct PromState {
    /// Pair series (family, label set) with gauges now, per iface.
    gauged: HashMap<String, Vec<Series>>,
    /// Every pair series the exposition holds (counters, histogram, gauges), by family
    /// (its position in [`catalog::FAMILIES`]) and labels: when it last had samples, and
    /// whether it is a named one (not `dst="other"`).
    seen: HashMap<Series, Seen>,
    /// Named series in `seen`: at most the budget.
    named: usize,
}

/// A pair series: its family's position in [`catalog::FAMILIES`], its labels.
type Series = (usize, Labels);

struct Seen {
    at: Instant,
    named: bool,
}

impl Default for Prom {
    fn default() -> Self {
        Self::new()
    }
}

impl Prom {
    pub fn new() -> Prom {
        let mut registry = Registry::default();
        let rtt = catalog::FAMILIES
            .iter()
            .map(|f| RttFamilies::register(f, &mut registry))
            .collect();
        let own = catalog::SELF
            .iter()
            .map(|m| match m.kind {
                Kind::Counter => {
                    let f = Family::<Labels, Counter>::default();
                    registry.register(m.prom, m.help, Described(f.clone()));
                    SelfFamily::Counter(f)
                }
                Kind::Gauge => {
                    let f = Family::<Labels, Gauge>::default();
                    registry.register(m.prom, m.help, Described(f.clone()));
                    SelfFamily::Gauge(f)
                }
            })
            .collect();
        Prom {
            registry,
            own,
            rtt,
            max_series: AtomicUsize::new(DEFAULT_MAX_SERIES),
            exposed: AtomicBool::new(false),
            state: Mutex::new(PromState::default()),
        }
    }

    /// Whether a `/metrics` endpoint serves these metrics: the flusher folds reports in only
    /// then (without `prometheus_listen` nobody reads them, and the fold is per pair per
    /// flush: a fifth of the agent's CPU on scripts/live-bench.sh). A listener added by a
    /// reload starts from that reload, as an exporter restarted would: turned on when off,
    /// the exposition is emptied first ([`Prom::reset`]), so that no total misses the
    /// reports of the time without a listener (Prometheus would not see that as a reset)
    /// and no gauge of a pair from before is served.
    pub fn set_exposed(&self, on: bool) {
        if on && !self.exposed() {
            self.reset();
        }
        self.exposed.store(on, Ordering::Relaxed);
    }

    /// Empty the exposition: every series gone, the series budget all free again.
    fn reset(&self) {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        for f in &self.rtt {
            for fam in f.stats.iter().chain(&f.gauges) {
                fam.clear();
            }
            f.samples.clear();
            for fam in &f.counters {
                fam.clear();
            }
            f.histogram.clear();
        }
        for f in &self.own {
            match f {
                SelfFamily::Counter(f) => f.clear(),
                SelfFamily::Gauge(f) => f.clear(),
            }
        }
        *st = PromState::default();
    }

    pub fn exposed(&self) -> bool {
        self.exposed.load(Ordering::Relaxed)
    }

    /// The pair series the exposition may hold over its lifetime (`max_series`): a pair
    /// new to it past the budget is folded into its local address's `dst="other"` series
    /// and its samples counted in `metro_series_overflow_total`.
    pub fn set_max_series(&self, n: usize) {
        self.max_series.store(n, Ordering::Relaxed);
    }

    /// Fold one instance's report in.
    pub fn observe(&self, r: &InstanceReport, send_errors: SendErrors) {
        // Held to the end: a scrape sees a report whole (the samples under `other` and the
        // overflow counted with them).
        let mut guard = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let folded = self.observe_pairs(r, &mut guard);
        let input = catalog::Input {
            report: r,
            errors: send_errors,
        };
        let mut base = catalog::instance_labels(r);
        for (m, fam) in catalog::SELF.iter().zip(&self.own) {
            for (by, mut v) in (m.points)(&input) {
                if m.name == catalog::SERIES_OVERFLOW {
                    v += folded;
                }
                base.extend(m.by.map(|k| catalog::breakdown(k, by)));
                let l = labels(&base);
                base.truncate(1 + r.tags.len());
                match fam {
                    SelfFamily::Counter(f) => {
                        f.get_or_create(&l).inc_by(v);
                    }
                    SelfFamily::Gauge(f) => {
                        f.get_or_create(&l).set(v as i64);
                    }
                }
            }
        }
    }

    /// The report's pairs into the RTT families, within the series budget; returns how
    /// many samples were folded into `dst="other"` for it.
    fn observe_pairs(&self, r: &InstanceReport, st: &mut PromState) -> u64 {
        let budget = self.max_series.load(Ordering::Relaxed);
        let now = Instant::now();
        // Series quiet for an hour go first, making room.
        let expired: Vec<Series> = st
            .seen
            .iter()
            .filter(|(_, s)| now.duration_since(s.at) > PAIR_TTL)
            .map(|(l, _)| l.clone())
            .collect();
        for k in expired {
            if st.seen.remove(&k).is_some_and(|s| s.named) {
                st.named -= 1;
            }
            let (fams, l) = (&self.rtt[k.0], &k.1);
            fams.remove_counters(l);
            fams.histogram.remove(l);
        }

        // Each pair's series: its own, or past the budget its local address's "other".
        let mut folded = 0;
        let mut series: HashMap<Series, Vec<&PairReport>> = HashMap::new();
        for p in &r.pairs {
            let fi = usize::from(p.protocol);
            let mut l = (fi, labels(&catalog::pair_labels(r, p)));
            let named = &*p.dst != OTHER;
            match st.seen.get_mut(&l) {
                Some(s) => s.at = now,
                None if named && st.named >= budget => {
                    for (k, v) in &mut l.1 {
                        if k == "dst" {
                            *v = OTHER.to_string();
                        }
                    }
                    folded += p.stats.count();
                    st.seen
                        .entry(l.clone())
                        .or_insert(Seen {
                            at: now,
                            named: false,
                        })
                        .at = now;
                }
                None => {
                    st.named += usize::from(named);
                    st.seen.insert(l.clone(), Seen { at: now, named });
                }
            }
            series.entry(l).or_default().push(p);
        }
        let mut fresh = Vec::with_capacity(series.len());
        for (k, ps) in series {
            let (fams, l) = (&self.rtt[k.0], &k.1);
            let merged;
            let stats = match ps.as_slice() {
                [p] => &p.stats,
                _ => {
                    let mut s = ps[0].stats.clone();
                    for p in &ps[1..] {
                        s.merge(&p.stats);
                    }
                    merged = s;
                    &merged
                }
            };
            for (fam, ms) in fams.stats.iter().zip(stats_ms(stats)) {
                fam.get_or_create(l).set(ms / 1000.0);
            }
            // A series several pairs fold into: the least of their baselines.
            let baseline = ps.iter().filter_map(|p| p.baseline_ms).reduce(f64::min);
            for (g, fam) in fams.family.gauges.iter().zip(&fams.gauges) {
                match (g.value)(stats, baseline) {
                    Some(ms) => {
                        fam.get_or_create(l).set(ms / 1000.0);
                    }
                    None => {
                        fam.remove(l);
                    }
                }
            }
            let count: u64 = ps.iter().map(|p| p.stats.count()).sum();
            fams.samples.get_or_create(l).inc_by(count);
            for (c, fam) in fams.family.counters.iter().zip(&fams.counters) {
                fam.get_or_create(l)
                    .inc_by(ps.iter().map(|p| (c.value)(p)).sum());
            }
            for p in &ps {
                if let Some(f) = p.fine.as_deref().filter(|f| f.bounds_ms.is_some()) {
                    fams.histogram.get_or_create(l).add(f);
                }
            }
            fresh.push(k);
        }
        // Gauges of pairs without new samples go (no stale values).
        let old = st
            .gauged
            .insert(r.iface.clone(), fresh.clone())
            .unwrap_or_default();
        // A set: an interval has up to 65,536 pairs, and a scan of `fresh` per old pair would
        // cost billions of comparisons a flush.
        let fresh: HashSet<&Series> = fresh.iter().collect();
        for k in old {
            if !fresh.contains(&k) {
                self.rtt[k.0].remove_gauges(&k.1);
            }
        }
        folded
    }

    /// Each histogram series' labels and bucket exemplars (those with any).
    /// Of family `fi` (its position in [`catalog::FAMILIES`]).
    fn exemplars(&self, st: &PromState, fi: usize) -> Vec<(Labels, Vec<Option<Exemplar>>)> {
        st.seen
            .keys()
            .filter(|k| k.0 == fi)
            .filter_map(|(_, l)| {
                let ex = self.rtt[fi].histogram.get(l)?.exemplars();
                ex.iter().any(Option::is_some).then(|| (l.clone(), ex))
            })
            .collect()
    }

    /// The exposition in the OpenMetrics text format, the histogram's buckets with their
    /// exemplars.
    pub fn render(&self) -> String {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = String::new();
        let _ = encode(&mut s, &self.registry);
        for (fi, fams) in self.rtt.iter().enumerate() {
            s = with_exemplars(
                &s,
                &fams.family.names().prom_histogram,
                &self.exemplars(&st, fi),
            );
        }
        s
    }

    /// The exposition in the classic Prometheus text format (0.0.4, which has no
    /// exemplars), for scrapers and tools that do not ask for OpenMetrics (`promtool check
    /// metrics`).
    pub fn render_text(&self) -> String {
        let _whole = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut s = String::new();
        let _ = encode(&mut s, &self.registry);
        openmetrics_to_text(&s)
    }

    /// The exposition as length-delimited `io.prometheus.client.MetricFamily` messages (the
    /// protobuf format a scraper with native histograms asks for): the histogram carries its
    /// native buckets beside the classic ones, and its exemplars on the classic buckets
    /// (where Prometheus 2.42 reads a native histogram's exemplars) and in the histogram's
    /// own list (where later versions look first).
    pub fn render_protobuf(&self) -> Vec<u8> {
        let st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        // Fails only when a metric fails to encode, which none of ours does.
        let Ok(mut families) = prometheus_protobuf::encode(&self.registry) else {
            return Vec::new();
        };
        for (fi, fams) in self.rtt.iter().enumerate() {
            let name = &fams.family.names().prom_histogram;
            let exemplars: HashMap<Labels, Vec<Option<Exemplar>>> =
                self.exemplars(&st, fi).into_iter().collect();
            for f in families.iter_mut().filter(|f| &f.name == name) {
                for m in &mut f.metric {
                    let l: Labels = m
                        .label
                        .iter()
                        .map(|p| (p.name.clone(), p.value.clone()))
                        .collect();
                    let (Some(h), Some(exs)) = (&mut m.histogram, exemplars.get(&l)) else {
                        continue;
                    };
                    for (b, ex) in h.bucket.iter_mut().zip(exs) {
                        let Some(ex) = ex else { continue };
                        let pb = pb::Exemplar {
                            label: exemplar_labels(ex)
                                .into_iter()
                                .map(|(name, value)| pb::LabelPair {
                                    name: name.to_string(),
                                    value,
                                })
                                .collect(),
                            value: ex.secs,
                            timestamp: Some(
                                (UNIX_EPOCH + Duration::from_nanos(ex.ts.max(0) as u64)).into(),
                            ),
                        };
                        h.exemplars.push(pb.clone());
                        b.exemplar = Some(pb);
                    }
                }
            }
        }
        let mut out = Vec::new();
        // A family without series is no message (the Go client sends none).
        for f in families.into_iter().filter(|f| !f.metric.is_empty()) {
            // Into a Vec: cannot run out of room.
            let _ = f.encode_length_delimited(&mut out);
        }
        out
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
                    protocol: 0,
                    dst: "db \"main\"".into(),
                    stats: s,
                    retransmits: 1,
                    fine: None,
                    extra_tags: vec![],
                    baseline_ms: None,
                }]
            } else {
                vec![]
            },
            counters: InstanceCounters {
                packets_received: 10,
                packets_copies: crate::agent::report::Copies { plain: 5, nat: 1 },
                samples: [2, 0, 0, 0, 0, 0, 0],
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
            t.contains("metro_packets_copies_total{iface=\"eth0\",kind=\"plain\"} 5"),
            "{t}"
        );
        assert!(
            t.contains("metro_packets_copies_total{iface=\"eth0\",kind=\"nat\"} 1"),
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

    /// 3,000 remote hosts, 100 new ones an interval, each with samples once, under a budget
    /// of 100: the exposition holds 100 named pair series (not 3,000), the rest folded into
    /// `dst="other"`, whose samples are the overflow counted; no sample is lost.
    #[test]
    fn the_series_budget_holds_over_the_exposition_s_lifetime() {
        let p = Prom::new();
        p.set_max_series(100);
        let mut fed = 0;
        for interval in 0..30 {
            let mut r = report(false);
            for i in 0..100 {
                let mut s = Stats::new();
                for k in 0..=(i % 3) {
                    s.add(10.0 + k as f64);
                }
                fed += s.count();
                r.pairs.push(PairReport {
                    src: "10.0.0.1".parse().unwrap(),
                    protocol: 0,
                    dst: format!("h{}", interval * 100 + i).into(),
                    stats: s,
                    retransmits: 1,
                    fine: None,
                    extra_tags: vec![],
                    baseline_ms: None,
                });
            }
            p.observe(&r, SendErrors::default());
        }
        let t = p.render_text();
        let samples: Vec<(String, f64)> = t
            .lines()
            .filter(|l| l.starts_with("metro_tcp_rtt_samples_total{"))
            .map(|l| {
                let dst = l.split("dst=\"").nth(1).unwrap().split('"').next().unwrap();
                (
                    dst.to_string(),
                    l.rsplit(' ').next().unwrap().parse().unwrap(),
                )
            })
            .collect();
        let named = samples.iter().filter(|(d, _)| d != "other").count();
        assert_eq!(named, 100, "{t}");
        assert_eq!(samples.len(), 101);
        let other: f64 = samples
            .iter()
            .filter(|(d, _)| d == "other")
            .map(|x| x.1)
            .sum();
        let total: f64 = samples.iter().map(|x| x.1).sum();
        assert_eq!(total, fed as f64);
        let overflow: f64 = t
            .lines()
            .find(|l| l.starts_with("metro_series_overflow_total{"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap();
        assert!(other > 0.0);
        assert_eq!(other, overflow);
        // Every RTT family and counter within the same series.
        for name in ["metro_tcp_retransmits_total{", "metro_tcp_rtt_p99_seconds{"] {
            let n = t.lines().filter(|l| l.starts_with(name)).count();
            assert!(n <= 101, "{n} {name}");
        }
        // A named series keeps its own labels once admitted.
        let mut r = report(false);
        let mut s = Stats::new();
        s.add(5.0);
        r.pairs.push(PairReport {
            src: "10.0.0.1".parse().unwrap(),
            protocol: 0,
            dst: "h0".into(),
            stats: s,
            retransmits: 0,
            fine: None,
            extra_tags: vec![],
            baseline_ms: None,
        });
        p.observe(&r, SendErrors::default());
        let t = p.render_text();
        assert!(
            t.contains(
                "metro_tcp_rtt_last_seconds{src=\"10.0.0.1\",dst=\"h0\",iface=\"eth0\"} 0.005"
            ),
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

    /// Two intervals of one pair with buckets and an exponential histogram: OpenMetrics
    /// carries each interval's latest and slowest sample as its bucket's exemplar, the
    /// classic text none; protobuf (decoded with the same official messages) the native
    /// buckets shifted by one from OpenTelemetry's, the zero threshold, and the exemplars.
    #[test]
    fn exemplars_and_native_buckets() {
        use crate::agent::fleet::{ExpHist, Fine, IntervalOpts};
        let o = IntervalOpts {
            buckets_ms: Some(Arc::from(&[10.0, 20.0, 50.0][..])),
            exponential: true,
            ..IntervalOpts::default()
        };
        let conn = |port: u16, ms: f64, ts: i64| Exemplar {
            secs: ms / 1000.0,
            ts,
            src: format!("10.0.0.1:{port}").parse().unwrap(),
            dst: "[2001:db8::ffff:ffff:ffff:ffff]:443".parse().unwrap(),
        };
        let p = Prom::new();
        let mut room = 100;
        for (k, samples) in [
            [(41000, 12.0), (41001, 45.0), (41002, 15.0)],
            [(41003, 9.0), (41004, 8.0), (41005, 60.0)],
        ]
        .iter()
        .enumerate()
        {
            let mut f = Fine::new(&o);
            for (i, &(port, ms)) in samples.iter().enumerate() {
                f.add_exemplar(
                    ms,
                    conn(
                        port,
                        ms,
                        1_700_000_000_000_000_000 + (k * 10 + i) as i64 * 1_000_000,
                    ),
                    &o,
                    &mut room,
                );
            }
            let mut r = report(true);
            r.pairs[0].stats = Stats::new();
            for &(_, ms) in samples {
                r.pairs[0].stats.add(ms);
            }
            r.pairs[0].fine = Some(Box::new(f));
            p.observe(&r, SendErrors::default());
        }
        let om = p.render();
        let ex_of = |le: &str| {
            om.lines()
                .find(|l| {
                    l.starts_with("metro_tcp_rtt_seconds_bucket{")
                        && l.contains(&format!("le=\"{le}\""))
                })
                .unwrap_or_else(|| panic!("le {le} in\n{om}"))
                .split_once(" # ")
                .map(|x| x.1.to_string())
        };
        // Interval 1: latest 15 ms (port 41002), slowest 45 ms (41001); interval 2: latest
        // 60 ms (41005), which is also its slowest; 9 ms (41003) neither.
        assert_eq!(ex_of("0.01"), None, "{om}");
        assert_eq!(
            ex_of("0.02").as_deref(),
            Some(
                "{src=\"10.0.0.1\",sport=\"41002\",dst=\"2001:db8::ffff:ffff:ffff:ffff\",dport=\"443\"} 0.015 1700000000.002000000"
            ),
            "{om}"
        );
        assert!(ex_of("0.05").unwrap().contains("sport=\"41001\""), "{om}");
        let inf = ex_of("+Inf").unwrap();
        assert!(
            inf.contains("sport=\"41005\"") && inf.ends_with("} 0.06 1700000000.012000000"),
            "{om}"
        );
        assert!(!p.render_text().contains(" # {"));
        // The longest label set (two IPv6 addresses, 5-digit ports) is within OpenMetrics'
        // 128 characters.
        let long = conn(65535, 1.0, 0);
        let long = Exemplar {
            src: "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
                .parse()
                .unwrap(),
            ..long
        };
        let n: usize = exemplar_labels(&Exemplar {
            dst: long.src,
            ..long
        })
        .iter()
        .map(|(k, v)| k.len() + v.chars().count())
        .sum();
        assert!(n <= 128, "{n}");

        let bytes = p.render_protobuf();
        let mut buf = bytes.as_slice();
        let mut hist = None;
        while !buf.is_empty() {
            let f = pb::MetricFamily::decode_length_delimited(&mut buf).unwrap();
            if f.name == "metro_tcp_rtt_seconds" {
                hist = f.metric.into_iter().next().and_then(|m| m.histogram);
            }
        }
        let h = hist.expect("the histogram family");
        assert_eq!(h.sample_count, 6);
        assert_eq!(h.schema, 4);
        assert!(h.zero_threshold > 0.0);
        // The native buckets hold the six samples, each where Prometheus looks for it.
        let base = 2f64.powf(1.0 / 16.0);
        let mut idx = 0;
        let mut count = 0i64;
        let mut deltas = h.positive_delta.iter();
        let mut native = Vec::new();
        for (k, sp) in h.positive_span.iter().enumerate() {
            idx = if k == 0 { sp.offset } else { idx + sp.offset };
            for _ in 0..sp.length {
                count += deltas.next().unwrap();
                if count > 0 {
                    native.push((idx, count));
                }
                idx += 1;
            }
        }
        let mut want: Vec<(i32, i64)> = Vec::new();
        for ms in [12.0, 45.0, 15.0, 9.0, 8.0, 60.0] {
            let i = ExpHist::index(ms / 1000.0) + 1;
            assert!(base.powi(i - 1) < ms / 1000.0 && ms / 1000.0 <= base.powi(i));
            match want.iter_mut().find(|w| w.0 == i) {
                Some(w) => w.1 += 1,
                None => want.push((i, 1)),
            }
        }
        want.sort();
        assert_eq!(native, want);
        let ports: Vec<String> = h
            .bucket
            .iter()
            .map(|b| {
                b.exemplar
                    .as_ref()
                    .map_or(String::new(), |e| e.label[1].value.clone())
            })
            .collect();
        assert_eq!(ports, ["", "41002", "41001", "41005"]);
        assert_eq!(h.exemplars.len(), 3);
        assert_eq!(h.exemplars[0].timestamp.unwrap().seconds, 1_700_000_000);
    }
}
