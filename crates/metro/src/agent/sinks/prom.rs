//! Prometheus exposition: the same reports the DogStatsD sink sends, as a registry of
//! prometheus-client metrics served on `GET /metrics` by a minimal std::net responder
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

use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::{EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
use prometheus_client::registry::Registry;

use crate::agent::fleet::Fine;
use crate::agent::report::InstanceReport;

type Labels = Vec<(String, String)>;
type GaugeF = Gauge<f64, AtomicU64>;

/// A pair's counters go after this long without samples.
const PAIR_TTL: Duration = Duration::from_secs(3600);

/// Escape a label value for the text format (prometheus-client writes values verbatim).
fn esc(v: &str) -> String {
    let mut o = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => o.push_str("\\\\"),
            '"' => o.push_str("\\\""),
            '\n' => o.push_str("\\n"),
            c => o.push(c),
        }
    }
    o
}

/// A cumulative histogram whose buckets are set by the first interval folded in (the
/// configured `histogram_buckets`); an interval with other bounds (a reload changed them)
/// starts it again, which Prometheus reads as a counter reset.
#[derive(Clone, Debug, Default)]
pub struct CumHist(Arc<Mutex<HistState>>);

#[derive(Debug, Default)]
struct HistState {
    /// Upper bounds, seconds.
    bounds: Vec<f64>,
    /// Per bucket (not cumulative), plus +Inf.
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl CumHist {
    /// Add one interval's bucket counts.
    pub fn add(&self, f: &Fine) {
        let Some(b) = &f.bounds_ms else { return };
        let mut st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let secs: Vec<f64> = b.iter().map(|ms| ms / 1000.0).collect();
        if st.bounds != secs || st.counts.len() != f.buckets.len() {
            *st = HistState {
                bounds: secs,
                counts: vec![0; f.buckets.len()],
                sum: 0.0,
                count: 0,
            };
        }
        for (a, n) in st.counts.iter_mut().zip(&f.buckets) {
            *a += n;
        }
        st.sum += f.bucket_sum;
        st.count += f.buckets.iter().sum::<u64>();
    }
}

impl TypedMetric for CumHist {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for CumHist {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let st = self.0.lock().unwrap_or_else(|e| e.into_inner());
        // prometheus-client accumulates the counts and writes f64::MAX as +Inf.
        let buckets: Vec<(f64, u64)> = st
            .bounds
            .iter()
            .copied()
            .chain([f64::MAX])
            .zip(st.counts.iter().copied())
            .collect();
        encoder.encode_histogram::<NoLabelSet>(st.sum, st.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// The instance tags that are `key:value` with a usable key, as Prometheus labels (the key's
/// other characters become `_`); keys that would clash with metro's labels, repeat, or are
/// reserved (`__`) are left out.
pub fn tag_labels(tags: &[String]) -> Labels {
    let mut out: Labels = Vec::new();
    for t in tags {
        let Some((k, v)) = t.split_once(':') else {
            continue;
        };
        let mut name: String = k
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        if name.is_empty() || v.is_empty() {
            continue;
        }
        if name.starts_with(|c: char| c.is_ascii_digit()) {
            name.insert(0, '_');
        }
        if name.starts_with("__")
            || ["src", "dst", "iface", "le"].contains(&name.as_str())
            || out.iter().any(|(n, _)| *n == name)
        {
            continue;
        }
        out.push((name, esc(v)));
    }
    out
}

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
    capture_ebpf: Family<Labels, Gauge>,
    flows_evicted: Family<Labels, Counter>,
    flows_shed: Family<Labels, Counter>,
    packets_filtered: Family<Labels, Counter>,
    samples: Family<Labels, Counter>,
    samples_internal: Family<Labels, Counter>,
    pairs_dropped: Family<Labels, Counter>,
    send_errors: Family<Labels, Counter>,
    series_overflow: Family<Labels, Counter>,
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
            capture_ebpf: Family::default(),
            flows_evicted: Family::default(),
            flows_shed: Family::default(),
            packets_filtered: Family::default(),
            samples: Family::default(),
            samples_internal: Family::default(),
            pairs_dropped: Family::default(),
            send_errors: Family::default(),
            series_overflow: Family::default(),
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
            "metro_capture_ebpf",
            "1 when the instance captures in the kernel (eBPF), 0 with libpcap",
            p.capture_ebpf.clone(),
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
            "metro_series_overflow",
            "Samples reported under dst=\"other\" because max_series series had samples",
            p.series_overflow.clone(),
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
    pub fn observe(&self, r: &InstanceReport, send_errors: u64) {
        let iface = esc(&r.iface);
        let il: Labels = vec![("iface".into(), iface.clone())];
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
        self.capture_ebpf
            .get_or_create(&il)
            .set(c.capture_ebpf as i64);
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
        self.send_errors.get_or_create(&il).inc_by(send_errors);
        self.series_overflow
            .get_or_create(&il)
            .inc_by(c.series_overflow);
        self.packets_copies
            .get_or_create(&il)
            .inc_by(c.packets_copies);
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
        let tag_l = tag_labels(&r.tags);

        let now = Instant::now();
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let mut fresh = Vec::with_capacity(r.pairs.len());
        for p in &r.pairs {
            let mut l: Labels = vec![
                ("src".into(), p.src.to_string()),
                ("dst".into(), esc(&p.dst)),
                ("iface".into(), iface.clone()),
            ];
            // The pair's own tags (container and pod of `src`, agent::containers): labels
            // of its gauges and counters too, one series per local address either way.
            l.extend(tag_labels(&p.extra_tags));
            let s = &p.stats;
            let v = p.rtt_ms();
            for (fam, ms) in self.rtt.iter().zip(v) {
                fam.get_or_create(&l).set(ms / 1000.0);
            }
            self.rtt_samples.get_or_create(&l).inc_by(s.count());
            self.retransmits.get_or_create(&l).inc_by(p.retransmits);
            if let Some(f) = p.fine.as_deref().filter(|f| f.bounds_ms.is_some()) {
                let mut hl = l.clone();
                hl.extend(
                    tag_l
                        .iter()
                        .filter(|(k, _)| !l.iter().any(|(n, _)| n == k))
                        .cloned(),
                );
                self.histogram.get_or_create(&hl).add(f);
                st.seen_hist.insert(hl, now);
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

/// OpenMetrics text to Prometheus text 0.0.4: counter families are named with their
/// `_total` suffix in `# HELP`/`# TYPE`, and `# UNIT`/`# EOF` lines go.
pub fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let meta = ["# HELP ", "# TYPE "].into_iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        match meta {
            Some(m) => out.push_str(m.trim_end()),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// The HTTP responder thread; dropped or [`stop`](Self::stop)ped, it ends.
pub struct PromServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl PromServer {
    /// Bind `addr` and serve `prom` until stopped.
    pub fn start(addr: SocketAddr, prom: Arc<Prom>) -> io::Result<PromServer> {
        let listener = TcpListener::bind(addr)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name("metro-prom".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if st.load(Ordering::Relaxed) {
                        break;
                    }
                    if let Ok(c) = conn
                        && let Err(e) = serve(c, &prom)
                    {
                        tracing::debug!("prometheus: {e}");
                    }
                }
            })?;
        tracing::info!("prometheus metrics on http://{addr}/metrics");
        Ok(PromServer {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the blocking accept.
        let mut wake = self.addr;
        if wake.ip().is_unspecified() {
            wake.set_ip(if wake.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let _ = TcpStream::connect_timeout(&wake, Duration::from_secs(1));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for PromServer {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

fn serve(mut c: TcpStream, prom: &Prom) -> io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(2)))?;
    c.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && !buf.windows(2).any(|w| w == b"\n\n") {
        let n = c.read(&mut chunk)?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 8192 {
            break;
        }
    }
    let head = String::from_utf8_lossy(&buf);
    let mut parts = head.lines().next().unwrap_or("").split_whitespace();
    let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    let path = path.split('?').next().unwrap_or("");
    let openmetrics = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("accept:") && l.contains("application/openmetrics-text")
    });
    let (status, ctype, body) = match (method, path) {
        ("GET" | "HEAD", "/metrics") if openmetrics => (
            "200 OK",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            prom.render(),
        ),
        ("GET" | "HEAD", "/metrics") => (
            "200 OK",
            "text/plain; version=0.0.4; charset=utf-8",
            prom.render_text(),
        ),
        ("GET" | "HEAD", "/") => (
            "200 OK",
            "text/plain; charset=utf-8",
            "metro: metrics at /metrics\n".to_string(),
        ),
        ("GET" | "HEAD", _) => (
            "404 Not Found",
            "text/plain; charset=utf-8",
            "not found\n".to_string(),
        ),
        _ => (
            "405 Method Not Allowed",
            "text/plain; charset=utf-8",
            "only GET\n".to_string(),
        ),
    };
    let mut out = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    if method != "HEAD" {
        out.push_str(&body);
    }
    c.write_all(out.as_bytes())?;
    c.flush()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::report::{InstanceCounters, PairReport};
    use metro_core::aggregate::Stats;

    fn report(with_pair: bool) -> InstanceReport {
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

    fn get(addr: SocketAddr, path: &str, accept: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n"
        )
        .unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn exposition_and_stale_gauges() {
        let p = Arc::new(Prom::new());
        p.observe(&report(true), 3);
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
            t.contains("metro_samples_total{iface=\"eth0\",kind=\"seq\"} 2"),
            "{t}"
        );
        assert!(
            t.contains("metro_packets_copies_total{iface=\"eth0\"} 6"),
            "{t}"
        );
        // No attribution ran: no container series (their HELP and TYPE lines only).
        assert!(
            !t.lines().any(|l| l.starts_with("metro_containers_")),
            "{t}"
        );
        p.observe(&report(false), 0);
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
    fn container_tags_are_labels() {
        let p = Arc::new(Prom::new());
        let mut r = report(true);
        r.pairs[0].extra_tags = vec![
            "container_id:ab12".into(),
            "container_name:checkout\"api".into(),
            "netns:cni-1".into(),
        ];
        p.observe(&r, 0);
        let t = p.render();
        assert!(
            t.contains("metro_tcp_rtt_p50_seconds{src=\"10.0.0.1\",dst=\"db \\\"main\\\"\",iface=\"eth0\",container_id=\"ab12\",container_name=\"checkout\\\"api\",netns=\"cni-1\"}"),
            "{t}"
        );
    }

    #[test]
    fn http_responder() {
        let p = Arc::new(Prom::new());
        p.observe(&report(true), 0);
        let mut srv = PromServer::start("127.0.0.1:0".parse().unwrap(), p).unwrap();
        let r = get(
            srv.addr,
            "/metrics",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("metro_tcp_rtt_p50_seconds"), "{r}");
        assert!(r.contains("# TYPE metro_samples counter"), "{r}");
        assert!(r.trim_end().ends_with("# EOF"), "{r}");
        let r = get(srv.addr, "/metrics", "*/*");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
        assert!(r.contains("# TYPE metro_samples_total counter"), "{r}");
        assert!(
            r.contains("# HELP metro_samples_total Network RTT samples, by kind."),
            "{r}"
        );
        assert!(!r.contains("# EOF"), "{r}");
        assert!(get(srv.addr, "/nope", "*/*").starts_with("HTTP/1.1 404"));
        srv.stop();
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
        p.observe(&r, 0);
        p.observe(&r, 0);
        let t = p.render();
        for line in [
            "metro_containers_namespaces{iface=\"eth0\",state=\"attributed\"} 3",
            "metro_containers_namespaces{iface=\"eth0\",state=\"unattributed\"} 2",
            "metro_containers_skipped{iface=\"eth0\"} 1",
            // A counter: two intervals of 4.
            "metro_containers_pairs_unattributed_total{iface=\"eth0\"} 8",
        ] {
            assert!(t.lines().any(|l| l == line), "{line} in\n{t}");
        }
    }
}
