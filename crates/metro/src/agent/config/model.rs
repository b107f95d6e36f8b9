//! The validated configuration: the types the agent runs on (`Config`, its `Instance`s, the
//! watch-list `Cidr`s, the DogStatsD target, duty cycles, log levels, fleet outputs). Plain
//! data with the few methods that interpret a value (`Cidr::contains`, `LogLevel::parse`);
//! nothing here knows YAML.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use super::limits::{DEFAULT_BUCKETS, DEFAULT_MAX_SERIES};

/// Where DogStatsD datagrams go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StatsdTarget {
    /// UDP to a literal IP or a host name (resolved when the sink connects).
    Udp { host: String, port: u16 },
    /// A Unix datagram socket (the Agent 6/7 default `/var/run/datadog/dsd.socket`).
    Unix(PathBuf),
}

impl fmt::Display for StatsdTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StatsdTarget::Udp { host, port } => {
                if host.contains(':') {
                    write!(f, "udp://[{host}]:{port}")
                } else {
                    write!(f, "udp://{host}:{port}")
                }
            }
            StatsdTarget::Unix(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

/// Log verbosity; go-metro's spellings all map here (`critical` logs errors only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
    Critical,
}

impl LogLevel {
    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s.trim().to_ascii_lowercase().as_str() {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" | "warning" => LogLevel::Warn,
            "error" | "err" => LogLevel::Error,
            "critical" | "crit" => LogLevel::Critical,
            _ => return None,
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
            LogLevel::Critical => "critical",
        }
    }
}

/// An address or a CIDR block to watch. Host bits are always clear.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    pub fn host(addr: IpAddr) -> Cidr {
        let prefix = if addr.is_ipv4() { 32 } else { 128 };
        Cidr { addr, prefix }
    }

    /// Parse `A`, `A/N` (IPv4 or IPv6). Returns the block and whether host bits were set
    /// (and cleared).
    pub fn parse(s: &str) -> Result<(Cidr, bool), String> {
        let s = s.trim();
        let (a, p) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = a
            .parse()
            .map_err(|_| format!("`{a}` is not an IPv4 or IPv6 address"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match p {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max => n,
                _ => return Err(format!("`/{p}`: the prefix length must be 0 to {max}")),
            },
        };
        let masked = mask(addr, prefix);
        Ok((
            Cidr {
                addr: masked,
                prefix,
            },
            masked != addr,
        ))
    }

    pub fn is_host(&self) -> bool {
        self.prefix == if self.addr.is_ipv4() { 32 } else { 128 }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr, ip) {
            (IpAddr::V4(_), IpAddr::V4(_)) | (IpAddr::V6(_), IpAddr::V6(_)) => {
                mask(ip, self.prefix) == self.addr
            }
            _ => false,
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_host() {
            write!(f, "{}", self.addr)
        } else {
            write!(f, "{}/{}", self.addr, self.prefix)
        }
    }
}

/// `addr` with all but its first `prefix` bits cleared (a prefix past the address's
/// length keeps it whole).
pub fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix.min(32)))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix.min(128)))
            };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// go-metro's duty cycle: process packets for `duration`, then skip them for `interval`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DutyCycle {
    pub duration: Duration,
    pub interval: Duration,
}

/// Where an instance's packets come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    /// libpcap on a device (or `any`).
    Live,
    /// `interface: file`: a capture file, read as fast as possible on packet time.
    File(PathBuf),
}

/// One sniffer.
#[derive(Clone, Debug, PartialEq)]
pub struct Instance {
    /// The device name (`any` for all), or `file`.
    pub interface: String,
    pub source: Source,
    /// Added to every metric after `src`, `dst` and `iface`.
    pub tags: Vec<String>,
    pub ips: Vec<Cidr>,
    pub hosts: Vec<String>,
    pub sample: Option<DutyCycle>,
    pub max_flows: usize,
    /// Tag pairs with the container and pod that own the local address (see
    /// [`crate::agent::containers`]); on unless `container_tags: false`.
    pub container_tags: bool,
    /// With `container_tags`, also each pod's workload tags from its labels where the node's
    /// files record them (`kube_app_name`, `kube_app`, `kube_deployment`, ...); off unless
    /// `kube_labels: true`.
    pub kube_labels: bool,
    /// How remote addresses are grouped into series.
    pub group_by: GroupBy,
    /// Use IP IDs to tell a frame captured twice from a retransmission (false where a
    /// middlebox rewrites them). Default true.
    pub trust_ip_id: bool,
    /// How a live instance captures (`capture`): in the kernel, with libpcap, or the first
    /// that works.
    pub capture: CaptureMode,
    /// The protocols whose round trips the instance measures (`protocols`; all four by
    /// default).
    pub protocols: Protocols,
    /// `threads`: engines consuming an in-kernel capture, each given the connections of one
    /// shard of the flow space (default 1: one engine, one flow table, as libpcap's path).
    pub threads: usize,
}

/// `protocols`: which of TCP, QUIC, DNS and ICMP an instance measures, a bit per protocol
/// in `metro_core::sample::PROTOCOLS`' order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protocols(pub u8);

impl Default for Protocols {
    fn default() -> Protocols {
        Protocols::ALL
    }
}

impl Protocols {
    pub const ALL: Protocols = Protocols(0b1111);
    pub const TCP: u8 = 0;
    pub const QUIC: u8 = 1;
    pub const DNS: u8 = 2;
    pub const ICMP: u8 = 3;

    /// The protocol named `s` (`tcp`, `quic`, `dns`, `icmp`): its bit position.
    pub fn parse_one(s: &str) -> Option<u8> {
        metro_core::sample::PROTOCOLS
            .iter()
            .position(|p| *p == s)
            .map(|i| i as u8)
    }

    pub fn has(self, p: u8) -> bool {
        self.0 & (1 << p) != 0
    }

    /// The engine's kinds: those of the protocols measured.
    pub fn kinds(self) -> metro_core::sample::KindSet {
        let mut k = metro_core::sample::KindSet::NONE;
        for kind in metro_core::sample::Kind::ALL {
            if self.has(kind.protocol_index()) {
                k = k.with(kind);
            }
        }
        k
    }

    /// The names, in order (`tcp, dns`).
    pub fn names(self) -> Vec<&'static str> {
        (0..4u8)
            .filter(|&p| self.has(p))
            .map(|p| metro_core::sample::PROTOCOLS[usize::from(p)])
            .collect()
    }
}

/// The most `threads` an instance takes.
pub const MAX_THREADS: u64 = 64;

/// `capture`: where a live instance's packets are decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum CaptureMode {
    /// The in-kernel program where the kernel and the capabilities allow it (and the base
    /// filter is the default `tcp`), libpcap otherwise.
    #[default]
    Auto,
    /// The in-kernel program ([`crate::agent::ebpf`]); the instance fails to start without it.
    Ebpf,
    /// libpcap, as go-metro.
    Pcap,
}

impl CaptureMode {
    pub fn name(self) -> &'static str {
        match self {
            CaptureMode::Auto => "auto",
            CaptureMode::Ebpf => "ebpf",
            CaptureMode::Pcap => "pcap",
        }
    }
}

/// The agent's validated configuration.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub snaplen: u32,
    pub idle_ttl: Duration,
    pub exp_ttl: Duration,
    pub statsd: StatsdTarget,
    pub log_to_file: bool,
    pub log_level: LogLevel,
    pub log_file: PathBuf,
    pub flush_interval: Duration,
    pub dns_refresh: Duration,
    /// Each pair's baseline is its least RTT over this window.
    pub baseline_window: Duration,
    pub buffer_size: u64,
    pub prometheus_listen: Option<SocketAddr>,
    /// The fleet outputs (distributions, histograms, OTLP) and the series budget.
    pub fleet: FleetConfig,
    pub instances: Vec<Instance>,
}

/// `init_config`'s fleet keys.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetConfig {
    /// DogStatsD distributions at this sample rate (`distributions: true`), else off.
    pub distribution_rate: Option<f64>,
    /// Prometheus histogram bucket upper bounds, seconds, increasing.
    pub buckets: Vec<f64>,
    pub max_series: usize,
    /// OTLP/HTTP endpoint (`http://HOST:PORT`; metrics go to `/v1/metrics`).
    pub otlp_endpoint: Option<String>,
}

impl Default for FleetConfig {
    fn default() -> Self {
        FleetConfig {
            distribution_rate: None,
            buckets: DEFAULT_BUCKETS.to_vec(),
            max_series: DEFAULT_MAX_SERIES,
            otlp_endpoint: None,
        }
    }
}

/// How remote addresses are grouped into series (`group_by`).
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub enum GroupBy {
    /// One series per remote host: its configured host name, else its address (go-metro).
    #[default]
    Host,
    /// One series per remote subnet: the address masked to these prefix lengths.
    Subnet { v4: u8, v6: u8 },
    /// One series per `ips` entry that matched (the most specific one); resolved host names
    /// outside every entry stay one series per host.
    Block,
}

impl GroupBy {
    pub fn name(&self) -> &'static str {
        match self {
            GroupBy::Host => "host",
            GroupBy::Subnet { .. } => "subnet",
            GroupBy::Block => "block",
        }
    }
}
