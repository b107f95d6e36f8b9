//! The metric catalog: one sink-neutral description of everything `metro run` exports, which
//! every sink only encodes (in the manner of Vector's `internal_events`: named events with
//! bounded labels, each sink deciding only its wire form).
//!
//! - [`SELF`]: the self-metrics of an instance, one [`Metric`] each: its name (DogStatsD and
//!   OTLP; Prometheus' is [`Metric::prom`]), kind, unit, help, the key of its breakdown label
//!   if any, and the function that reads its points from a report. A metric a report does
//!   not speak of (containers without attribution, distribution values without
//!   `distributions`) has no points and no sink sends it.
//! - [`RttFamily`]: a per-pair round-trip-time family, e.g. [`TCP_RTT`]: the eight
//!   statistics as gauges (`system.net.tcp.rtt`, `.avg`, ... in DogStatsD,
//!   `metro_tcp_rtt_{stat}_seconds` in Prometheus), the sample count, the distribution of
//!   values (DogStatsD), the histogram (Prometheus cumulative, OTLP exponential), and the
//!   family's per-pair counters ([`PairMetric`], e.g. retransmissions) and gauges
//!   ([`PairGauge`]: the baseline and the queueing delay above it). Each protocol has its
//!   family ([`FAMILIES`]: TCP, QUIC, DNS, ICMP), named by its three base names; every
//!   sink encodes each as it does TCP's, a pair in its protocol's ([`family_of`]).
//! - [`Label`]: the labels of a point, parsed once: `src`, `dst`, `iface`, the instance's
//!   tags, the pair's own tags, a breakdown. Each sink escapes them for its format only.
//!
//! Adding a counter the report already carries is one [`Metric`] in [`SELF`] (ARCHITECTURE.md,
//! "Adding a metric"); `sinks/tests.rs` decodes every sink's output and finds every entry in
//! each.

use std::borrow::Cow;
use std::sync::OnceLock;

use metro_core::aggregate::Stats;

use super::SendErrors;
use crate::agent::report::{InstanceCounters, InstanceReport, PairReport};

/// How a value is aggregated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// A count over the interval: DogStatsD `c`, a Prometheus counter (cumulative), an OTLP
    /// monotonic sum (delta).
    Counter,
    /// A level at the end of the interval: DogStatsD `g`, Prometheus and OTLP gauges.
    Gauge,
}

/// What a metric's points are read from: the report and the sinks' send errors counted
/// before it.
pub struct Input<'a> {
    pub report: &'a InstanceReport,
    pub errors: SendErrors,
}

impl Input<'_> {
    fn c(&self) -> &InstanceCounters {
        &self.report.counters
    }
}

/// The points of one metric in one report: (breakdown value, value), the breakdown value
/// empty when the metric has none. Empty: the report does not speak of the metric.
pub type Points = Vec<(&'static str, u64)>;

/// One self-metric.
pub struct Metric {
    /// The DogStatsD and OTLP name, `metro.<noun>.<what>`.
    pub name: &'static str,
    /// The Prometheus family name (a counter's samples end in `_total`).
    pub prom: &'static str,
    pub kind: Kind,
    /// The OTLP unit (UCUM annotation: `{packet}`).
    pub unit: &'static str,
    /// Prometheus `# HELP` and the OTLP description.
    pub help: &'static str,
    /// The key of the breakdown label (`kind`, `state`), after the instance's tags.
    pub by: Option<&'static str>,
    pub points: fn(&Input) -> Points,
}

impl Metric {
    const fn new(
        name: &'static str,
        prom: &'static str,
        kind: Kind,
        unit: &'static str,
        help: &'static str,
        points: fn(&Input) -> Points,
    ) -> Metric {
        Metric {
            name,
            prom,
            kind,
            unit,
            help,
            by: None,
            points,
        }
    }

    const fn by(self, key: &'static str) -> Metric {
        Metric {
            by: Some(key),
            ..self
        }
    }
}

fn one(v: u64) -> Points {
    vec![("", v)]
}

use Kind::{Counter, Gauge};

/// Samples reported under `dst:other` past the series budget: the interval's (every sink),
/// and in Prometheus also those the exposition folded to stay within the budget over its
/// lifetime.
pub const SERIES_OVERFLOW: &str = "metro.series.overflow";

/// Every self-metric, in the order DogStatsD sends them (go-metro's receivers see the same
/// lines as before the catalog); `metro.statsd.send_errors` last: a flush ends with it.
pub static SELF: [Metric; 23] = [
    Metric::new(
        "metro.packets.received",
        "metro_packets_received",
        Counter,
        "{packet}",
        "Packets delivered by the capture",
        |i| one(i.c().packets_received),
    ),
    Metric::new(
        "metro.packets.dropped",
        "metro_packets_dropped",
        Counter,
        "{packet}",
        "Packets dropped by the kernel or the interface (libpcap's counters)",
        |i| one(i.c().packets_dropped),
    ),
    Metric::new(
        "metro.flows.active",
        "metro_flows_active",
        Gauge,
        "{connection}",
        "TCP connections tracked",
        |i| one(i.c().flows_active),
    ),
    Metric::new(
        "metro.flows.evicted",
        "metro_flows_evicted",
        Counter,
        "{flow}",
        "Connections evicted because the flow table was full",
        |i| one(i.c().flows_evicted),
    ),
    Metric::new(
        "metro.flows.shed",
        "metro_flows_shed",
        Counter,
        "{flow}",
        "Of the evicted connections, unconfirmed ones (half-open or one-sided) shed to make room",
        |i| one(i.c().flows_shed),
    ),
    Metric::new(
        "metro.packets.filtered",
        "metro_packets_filtered",
        Counter,
        "{packet}",
        "Packets outside the watch list dropped in user space (kernel filter wider than the list)",
        |i| one(i.c().packets_filtered),
    ),
    Metric::new(
        "metro.samples",
        "metro_samples",
        Counter,
        "{sample}",
        "Network RTT samples, by kind",
        // TCP's kinds always, the others' once they have samples.
        |i| {
            metro_core::sample::Kind::ALL
                .iter()
                .zip(i.c().samples)
                .filter(|(k, n)| k.protocol_index() == 0 || *n > 0)
                .map(|(k, n)| (k.name(), n))
                .collect()
        },
    )
    .by("kind"),
    Metric::new(
        "metro.packets.copies",
        "metro_packets_copies",
        Counter,
        "{packet}",
        "Copies of a packet seen on another interface (capture on `any`), dropped, by kind \
         (plain: routed or bridged, same addresses; nat: one end rewritten by a NAT)",
        |i| {
            let c = &i.c().packets_copies;
            vec![("plain", c.plain), ("nat", c.nat)]
        },
    )
    .by("kind"),
    Metric::new(
        "metro.capture.ebpf",
        "metro_capture_ebpf",
        Gauge,
        "{capture}",
        "1 when the instance captures in the kernel (eBPF), 0 with libpcap",
        |i| one(i.c().capture_ebpf),
    ),
    Metric::new(
        "metro.packets.raw",
        "metro_packets_raw",
        Counter,
        "{packet}",
        "Frames the in-kernel capture handed to user space whole, by reason (unparsed: a \
         tunnel, link layer or header chain it does not walk; malformed; udp; icmp; dns: TCP \
         segments whose payload may be a DNS message)",
        |i| {
            crate::agent::report::RAW_REASONS
                .iter()
                .zip(i.c().packets_raw)
                .map(|(r, n)| (*r, n))
                .collect()
        },
    )
    .by("reason"),
    Metric::new(
        "metro.containers.namespaces",
        "metro_containers_namespaces",
        Gauge,
        "{namespace}",
        "Network namespaces on this host, with a container or pod (state=attributed) or \
         without (state=unattributed)",
        |i| match &i.c().containers {
            Some(ct) => vec![
                ("attributed", ct.namespaces_attributed),
                ("unattributed", ct.namespaces_unattributed),
            ],
            None => vec![],
        },
    )
    .by("state"),
    Metric::new(
        "metro.containers.skipped",
        "metro_containers_skipped",
        Gauge,
        "{object}",
        "Processes and namespaces not read at the last refresh (limits, permissions)",
        |i| i.c().containers.iter().map(|ct| ("", ct.skipped)).collect(),
    ),
    Metric::new(
        "metro.containers.pairs_unattributed",
        "metro_containers_pairs_unattributed",
        Counter,
        "{pair}",
        "Pairs whose local address no namespace on this host owns",
        |i| {
            i.c()
                .containers
                .iter()
                .map(|ct| ("", ct.pairs_unattributed))
                .collect()
        },
    ),
    Metric::new(
        "metro.samples.internal",
        "metro_samples_internal",
        Counter,
        "{sample}",
        "Samples answered by this host or within one namespace (not reported as RTT)",
        |i| one(i.c().samples_internal),
    ),
    Metric::new(
        "metro.pairs.dropped",
        "metro_pairs_dropped",
        Counter,
        "{event}",
        "Samples (kind=sample) and retransmissions (kind=retransmit) that found no room in \
         an interval's (local, remote) pair tables",
        |i| {
            let d = &i.c().pairs_dropped;
            vec![("sample", d.samples), ("retransmit", d.retransmits)]
        },
    )
    .by("kind"),
    Metric::new(
        SERIES_OVERFLOW,
        "metro_series_overflow",
        Counter,
        "{sample}",
        "Samples reported under dst=\"other\" because max_series series had samples",
        |i| one(i.c().series_overflow),
    ),
    Metric::new(
        "metro.distribution.dropped",
        "metro_distribution_dropped",
        Counter,
        "{sample}",
        "Distribution values not kept: more than 2^20 in one interval",
        |i| match i.report.has_distributions() {
            true => one(i.c().distribution_dropped),
            false => vec![],
        },
    ),
    Metric::new(
        "system.net.dns.responses",
        "metro_dns_responses",
        Counter,
        "{response}",
        "DNS responses matched to their query, by response code (rcode: NOERROR, NXDOMAIN, \
         SERVFAIL, ...)",
        |i| {
            let rc = &i.c().proto.dns_rcodes;
            let mut v: Points = (0..12u8)
                .filter(|&c| rc[usize::from(c)] > 0)
                .map(|c| (metro_core::proto::rcode_name(c), rc[usize::from(c)]))
                .collect();
            let reserved: u64 = rc[12..].iter().sum();
            if reserved > 0 {
                v.push((metro_core::proto::rcode_name(12), reserved));
            }
            v
        },
    )
    .by("rcode"),
    Metric::new(
        "system.net.dns.timeouts",
        "metro_dns_timeouts",
        Counter,
        "{query}",
        "DNS queries without a response within 30 s",
        |i| one(i.c().proto.dns_timeouts),
    ),
    Metric::new(
        "metro.proto.dropped",
        "metro_proto_dropped",
        Counter,
        "{entry}",
        "QUIC connections, DNS queries and ICMP echo requests not followed because their \
         protocol's table was full, by protocol (the oldest unanswered ones go first; \
         answered QUIC connections are kept)",
        |i| {
            let d = &i.c().proto.dropped;
            vec![("quic", d[0]), ("dns", d[1]), ("icmp", d[2])]
        },
    )
    .by("protocol"),
    Metric::new(
        "metro.proto.unmatched",
        "metro_proto_unmatched",
        Counter,
        "{packet}",
        "DNS responses and ICMP echo replies that matched no pending query or request, by \
         protocol (not measured)",
        |i| {
            let u = &i.c().proto.unmatched;
            vec![("dns", u[0]), ("icmp", u[1])]
        },
    )
    .by("protocol"),
    Metric::new(
        "metro.otlp.send_errors",
        "metro_otlp_send_errors",
        Counter,
        "{request}",
        "OTLP pushes that failed",
        |i| i.errors.otlp.map(one).unwrap_or_default(),
    ),
    Metric::new(
        "metro.statsd.send_errors",
        "metro_statsd_send_errors",
        Counter,
        "{datagram}",
        "DogStatsD datagrams that could not be sent",
        |i| one(i.errors.statsd),
    ),
];

/// The three names of a per-pair metric: DogStatsD's, Prometheus' and OTLP's.
pub struct Names {
    /// DogStatsD name (`system.net.tcp.retransmits`; a gauge's in milliseconds).
    pub statsd: &'static str,
    /// Prometheus family name (`metro_tcp_retransmits`; a gauge's in seconds).
    pub prom: &'static str,
    /// OTLP name (`metro.tcp.retransmits`; a gauge's in seconds).
    pub otlp: &'static str,
}

/// A per-pair counter of an RTT family (TCP's retransmissions).
pub struct PairMetric {
    pub names: Names,
    pub unit: &'static str,
    pub help: &'static str,
    pub value: fn(&PairReport) -> u64,
}

/// A per-pair gauge of an RTT family beyond the eight statistics (TCP's baseline and
/// queueing delay): milliseconds in DogStatsD, seconds in Prometheus and OTLP. A pair
/// without a value (no baseline yet) has no point.
pub struct PairGauge {
    /// `system.net.tcp.rtt.baseline` (ms), `metro_tcp_rtt_baseline_seconds`,
    /// `metro.tcp.rtt.baseline` (s).
    pub names: Names,
    pub help: &'static str,
    /// Milliseconds, from a series' interval statistics and its baseline
    /// ([`PairReport::baseline_ms`]); for a series several pairs fold into, their merged
    /// statistics and the least baseline.
    pub value: fn(&Stats, Option<f64>) -> Option<f64>,
}

impl PairGauge {
    /// The value (ms) of one pair.
    pub fn of(&self, p: &PairReport) -> Option<f64> {
        (self.value)(&p.stats, p.baseline_ms)
    }
}

/// The eight statistics of a pair's interval, in the order [`PairReport::rtt_ms`] gives
/// them: the DogStatsD suffix (the last sample is the bare name, go-metro's) and the
/// Prometheus word (`metro_tcp_rtt_{word}_seconds`).
pub const STATS: [(&str, &str); 8] = [
    ("", "last"),
    (".avg", "avg"),
    (".jitter", "jitter"),
    (".min", "min"),
    (".max", "max"),
    (".p50", "p50"),
    (".p90", "p90"),
    (".p99", "p99"),
];

/// A round-trip-time family: what every sink sends per (local, remote) pair. Its names are
/// derived from three bases (see [`RttNames`]), so a protocol is one `static`.
pub struct RttFamily {
    /// DogStatsD base: `system.net.tcp.rtt`.
    pub statsd: &'static str,
    /// Prometheus base: `metro_tcp_rtt`.
    pub prom: &'static str,
    /// OTLP histogram name: `metro.tcp.rtt`.
    pub otlp: &'static str,
    /// What the values are: "TCP round-trip time to a watched remote host".
    pub help: &'static str,
    /// What a sample is, for the count's help: "RTT samples answered by a watched remote host".
    pub samples_help: &'static str,
    pub counters: &'static [PairMetric],
    /// Per-pair gauges beyond the statistics.
    pub gauges: &'static [PairGauge],
    names: OnceLock<RttNames>,
}

/// The names an [`RttFamily`] sends, built once.
pub struct RttNames {
    /// DogStatsD gauges: `{statsd}`, `{statsd}.avg`, ... `{statsd}.p99` ([`STATS`]).
    pub statsd_stats: [String; 8],
    /// DogStatsD count: `{statsd}.samples`.
    pub statsd_samples: String,
    /// DogStatsD distribution: `{statsd}.distribution`.
    pub statsd_distribution: String,
    /// Prometheus gauges: `{prom}_{word}_seconds`.
    pub prom_stats: [String; 8],
    /// Prometheus counter: `{prom}_samples` (`_total` on the wire).
    pub prom_samples: String,
    /// Prometheus histogram: `{prom}_seconds`.
    pub prom_histogram: String,
    /// OTLP sum: `{otlp}.samples`.
    pub otlp_samples: String,
}

impl RttFamily {
    pub const fn new(
        statsd: &'static str,
        prom: &'static str,
        otlp: &'static str,
        help: &'static str,
        samples_help: &'static str,
        counters: &'static [PairMetric],
    ) -> RttFamily {
        RttFamily {
            statsd,
            prom,
            otlp,
            help,
            samples_help,
            counters,
            gauges: &[],
            names: OnceLock::new(),
        }
    }

    /// [`RttFamily::new`] with per-pair gauges.
    pub const fn with_gauges(
        statsd: &'static str,
        prom: &'static str,
        otlp: &'static str,
        help: &'static str,
        samples_help: &'static str,
        counters: &'static [PairMetric],
        gauges: &'static [PairGauge],
    ) -> RttFamily {
        RttFamily {
            statsd,
            prom,
            otlp,
            help,
            samples_help,
            counters,
            gauges,
            names: OnceLock::new(),
        }
    }

    pub fn names(&self) -> &RttNames {
        self.names.get_or_init(|| RttNames {
            statsd_stats: STATS.map(|(suffix, _)| format!("{}{suffix}", self.statsd)),
            statsd_samples: format!("{}.samples", self.statsd),
            statsd_distribution: format!("{}.distribution", self.statsd),
            prom_stats: STATS.map(|(_, word)| format!("{}_{word}_seconds", self.prom)),
            prom_samples: format!("{}_samples", self.prom),
            prom_histogram: format!("{}_seconds", self.prom),
            otlp_samples: format!("{}.samples", self.otlp),
        })
    }
}

/// TCP: go-metro's `system.net.tcp.rtt*` and `system.net.tcp.retransmits`.
pub static TCP_RTT: RttFamily = RttFamily::with_gauges(
    "system.net.tcp.rtt",
    "metro_tcp_rtt",
    "metro.tcp.rtt",
    "TCP round-trip time to a watched remote host",
    "RTT samples answered by a watched remote host",
    &[PairMetric {
        names: Names {
            statsd: "system.net.tcp.retransmits",
            prom: "metro_tcp_retransmits",
            otlp: "metro.tcp.retransmits",
        },
        unit: "{packet}",
        help: "TCP retransmissions between a local address and a watched remote host",
        value: |p| p.retransmits,
    }],
    &[
        PairGauge {
            names: Names {
                statsd: "system.net.tcp.rtt.baseline",
                prom: "metro_tcp_rtt_baseline_seconds",
                otlp: "metro.tcp.rtt.baseline",
            },
            help: "Least TCP round-trip time to a watched remote host over the baseline window (`baseline_window`): the path's propagation delay",
            value: |_, baseline| baseline,
        },
        PairGauge {
            names: Names {
                statsd: "system.net.tcp.queueing_delay",
                prom: "metro_tcp_queueing_delay_seconds",
                otlp: "metro.tcp.queueing_delay",
            },
            help: "TCP round-trip time's median over the last interval above its baseline: the delay queues add",
            value: |s, baseline| Some((s.quantile(0.5) - baseline?).max(0.0)),
        },
    ],
);

/// QUIC: the handshake's and the spin bit's round trips to a watched remote host.
pub static QUIC_RTT: RttFamily = RttFamily::new(
    "system.net.quic.rtt",
    "metro_quic_rtt",
    "metro.quic.rtt",
    "QUIC round-trip time to a watched remote host (handshake and spin bit)",
    "QUIC RTT samples answered by a watched remote host",
    &[],
);

/// DNS: a query to its response, per server.
pub static DNS_RESPONSE: RttFamily = RttFamily::new(
    "system.net.dns.response_time",
    "metro_dns_response",
    "metro.dns.response_time",
    "DNS response time of a watched server (query to matching response)",
    "DNS responses of a watched server matched to their query",
    &[],
);

/// ICMP and ICMPv6 echo: a request to its reply.
pub static ICMP_RTT: RttFamily = RttFamily::new(
    "system.net.icmp.rtt",
    "metro_icmp_rtt",
    "metro.icmp.rtt",
    "ICMP echo round-trip time to a watched remote host",
    "ICMP echo replies of a watched remote host matched to their request",
    &[],
);

/// Every RTT family, by protocol: position `i` is `metro_core::sample::PROTOCOLS[i]`'s
/// (a pair's [`PairReport::protocol`]). Every sink sends each family's pairs in this order.
pub static FAMILIES: [&RttFamily; 4] = [&TCP_RTT, &QUIC_RTT, &DNS_RESPONSE, &ICMP_RTT];

/// The family of a pair (by its protocol).
pub fn family_of(p: &PairReport) -> &'static RttFamily {
    FAMILIES[usize::from(p.protocol)]
}

/// A report's pairs of one family (by position in [`FAMILIES`]).
pub fn pairs_of(r: &InstanceReport, family: usize) -> impl Iterator<Item = &PairReport> {
    r.pairs
        .iter()
        .filter(move |p| usize::from(p.protocol) == family)
}

/// One label of a point, sink-neutral: a key and, unless it came from a bare tag, a value.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Label<'a> {
    pub key: &'a str,
    pub value: Option<Cow<'a, str>>,
    /// From a configured or attributed tag (`key:value`), not one of metro's own keys: a
    /// sink whose format cannot repeat a key leaves out such a label when its key is taken.
    pub tag: bool,
}

impl<'a> Label<'a> {
    fn own(key: &'static str, value: impl Into<Cow<'a, str>>) -> Label<'a> {
        Label {
            key,
            value: Some(value.into()),
            tag: false,
        }
    }

    /// A tag: `key:value` splits at the first colon; a bare tag is a key without value.
    pub fn tag(t: &'a str) -> Label<'a> {
        match t.split_once(':') {
            Some((k, v)) => Label {
                key: k,
                value: Some(v.into()),
                tag: true,
            },
            None => Label {
                key: t,
                value: None,
                tag: true,
            },
        }
    }

    pub fn value(&self) -> &str {
        self.value.as_deref().unwrap_or("")
    }
}

/// The keys metro's own labels use, which a tag cannot take where keys are unique.
pub fn reserved_keys() -> impl Iterator<Item = &'static str> {
    ["src", "dst", "iface"]
        .into_iter()
        .chain(SELF.iter().filter_map(|m| m.by))
}

/// An instance's labels: `iface`, then its tags.
pub fn instance_labels(r: &InstanceReport) -> Vec<Label<'_>> {
    let mut l = Vec::with_capacity(1 + r.tags.len());
    l.push(Label::own("iface", r.iface.as_str()));
    l.extend(r.tags.iter().map(|t| Label::tag(t)));
    l
}

/// A pair's labels: `src`, `dst`, `iface`, the instance's tags, the pair's own tags
/// (containers).
pub fn pair_labels<'a>(r: &'a InstanceReport, p: &'a PairReport) -> Vec<Label<'a>> {
    let mut l = Vec::with_capacity(3 + r.tags.len() + p.extra_tags.len());
    l.push(Label::own("src", p.src.to_string()));
    l.push(Label::own("dst", &*p.dst));
    l.push(Label::own("iface", r.iface.as_str()));
    l.extend(r.tags.iter().map(|t| Label::tag(t)));
    l.extend(p.extra_tags.iter().map(|t| Label::tag(t)));
    l
}

/// A breakdown label (`kind:seq`).
pub fn breakdown<'a>(key: &'static str, value: &'static str) -> Label<'a> {
    Label::own(key, value)
}
