//! The agent's configuration: a go-metro.yaml (every key go-metro read, with the defaults it
//! lacked) plus metro's own keys, parsed with serde-saphyr and validated into [`Config`].
//!
//! Parsing is two-layered, as in ripgrep's flags: [`RawFile`] mirrors the YAML (every key
//! optional, locations kept where a later check may need them), and [`Config::from_raw`]
//! turns it into the high-level form the agent runs on, collecting warnings (unknown keys,
//! odd values) and failing with errors that name the file, line and column or the key path.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use serde_saphyr::{Location, Spanned};

use super::fleet::{DEFAULT_BUCKETS, DEFAULT_MAX_SERIES, GroupBy};
use super::report::MAX_PAIRS;

/// The smallest snaplen metro accepts: Ethernet + VLAN + IPv6 + a TCP header with options.
pub const MIN_SNAPLEN: u32 = 96;
pub const DEFAULT_SNAPLEN: u32 = 256;
pub const DEFAULT_IDLE_TTL: f64 = 300.0;
pub const DEFAULT_EXP_TTL: f64 = 60.0;
pub const DEFAULT_STATSD_IP: &str = "127.0.0.1";
pub const DEFAULT_STATSD_PORT: u16 = 8125;
pub const DEFAULT_FLUSH_INTERVAL: f64 = 10.0;
pub const DEFAULT_DNS_REFRESH: f64 = 60.0;
pub const DEFAULT_LOG_FILE: &str = "/var/log/metro/metro.log";
/// Kernel capture buffer per instance (libpcap's own default is 2 MiB).
pub const DEFAULT_BUFFER_SIZE: u64 = 16 << 20;
/// Connections tracked per instance. A connection's state is at most a few KiB, so this
/// bounds one instance's flow memory to a few hundred MiB in the worst case.
pub const DEFAULT_MAX_FLOWS: u64 = 100_000;
pub const DEFAULT_SAMPLE_DURATION: f64 = 10.0;
pub const DEFAULT_SAMPLE_INTERVAL: f64 = 50.0;
/// The go-metro base capture filter (`-f`).
pub const DEFAULT_BASE_FILTER: &str = "tcp";
/// The `interface` value that replays the instance's `pcap` file instead of capturing.
pub const FILE_INTERFACE: &str = "file";
/// The longest duration any key takes (about 31 years): keeps nanosecond arithmetic far
/// from overflow.
pub const MAX_SECONDS: f64 = 1e9;
/// Floors: below them a value is a typo or an attack, not a setting. A report every 0.1 s
/// (`flush_interval`); connections idle for at least 1 s (`idle_ttl`); names re-resolved at
/// most every second (`dns_refresh`); duty-cycle windows of at least 0.1 s.
pub const MIN_FLUSH_INTERVAL: f64 = 0.1;
pub const MIN_IDLE_TTL: f64 = 1.0;
pub const MIN_DNS_REFRESH: f64 = 1.0;
pub const MIN_SAMPLE_WINDOW: f64 = 0.1;

// ---------------------------------------------------------------------------------------
// Raw form: what the YAML says.
// ---------------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
pub struct RawFile {
    pub init_config: Option<RawInit>,
    pub instances: Option<Vec<Spanned<RawInstance>>>,
    /// go-metro before v0.6 called the instance list `config`.
    pub config: Option<Vec<Spanned<RawInstance>>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawInit {
    pub snaplen: Option<Spanned<i64>>,
    pub idle_ttl: Option<Spanned<f64>>,
    pub exp_ttl: Option<Spanned<f64>>,
    pub expired_ttl: Option<Spanned<f64>>,
    pub statsd_ip: Option<Spanned<String>>,
    pub statsd_port: Option<u16>,
    pub statsd_socket: Option<String>,
    pub log_to_file: Option<bool>,
    pub log_level: Option<Spanned<String>>,
    pub log_file: Option<String>,
    pub flush_interval: Option<Spanned<f64>>,
    pub dns_refresh: Option<Spanned<f64>>,
    pub buffer_size: Option<Spanned<u64>>,
    pub max_flows: Option<Spanned<u64>>,
    pub prometheus_listen: Option<Spanned<String>>,
    pub distributions: Option<bool>,
    pub distribution_sample_rate: Option<Spanned<f64>>,
    pub histogram_buckets: Option<Spanned<Vec<f64>>>,
    pub max_series: Option<Spanned<u64>>,
    pub otlp_endpoint: Option<Spanned<String>>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawInstance {
    pub interface: Option<Spanned<String>>,
    pub tags: Option<Vec<String>>,
    pub ips: Option<Vec<Spanned<String>>>,
    pub hosts: Option<Vec<Spanned<String>>>,
    pub sample: Option<bool>,
    pub sample_duration: Option<Spanned<f64>>,
    pub sample_interval: Option<Spanned<f64>>,
    pub pcap: Option<Spanned<String>>,
    pub max_flows: Option<Spanned<u64>>,
    pub container_tags: Option<bool>,
    pub group_by: Option<Spanned<String>>,
    pub subnet_v4_prefix: Option<Spanned<u64>>,
    pub subnet_v6_prefix: Option<Spanned<u64>>,
    pub trust_ip_id: Option<bool>,
}

const INIT_KEYS: &[&str] = &[
    "snaplen",
    "idle_ttl",
    "exp_ttl",
    "expired_ttl",
    "statsd_ip",
    "statsd_port",
    "statsd_socket",
    "log_to_file",
    "log_level",
    "log_file",
    "flush_interval",
    "dns_refresh",
    "buffer_size",
    "max_flows",
    "prometheus_listen",
    "distributions",
    "distribution_sample_rate",
    "histogram_buckets",
    "max_series",
    "otlp_endpoint",
];
const INSTANCE_KEYS: &[&str] = &[
    "interface",
    "tags",
    "ips",
    "hosts",
    "sample",
    "sample_duration",
    "sample_interval",
    "pcap",
    "max_flows",
    "container_tags",
    "group_by",
    "subnet_v4_prefix",
    "subnet_v6_prefix",
    "trust_ip_id",
];
const TOP_KEYS: &[&str] = &["init_config", "instances", "config"];

// ---------------------------------------------------------------------------------------
// Validated form: what the agent runs.
// ---------------------------------------------------------------------------------------

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

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u32::MAX << (32 - u32::from(prefix))
            };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 {
                0
            } else {
                u128::MAX << (128 - u32::from(prefix))
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
    /// [`super::containers`]); on unless `container_tags: false`.
    pub container_tags: bool,
    /// How remote addresses are grouped into series.
    pub group_by: GroupBy,
    /// Use IP IDs to tell a frame captured twice from a retransmission (false where a
    /// middlebox rewrites them). Default true.
    pub trust_ip_id: bool,
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
    pub buffer_size: u64,
    pub prometheus_listen: Option<SocketAddr>,
    /// The fleet outputs (distributions, histograms, OTLP) and the series budget.
    pub fleet: FleetConfig,
    pub instances: Vec<Instance>,
}

/// A configuration error: where, and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file (or `<string>`).
    pub origin: String,
    /// 1-based line and column, when known.
    pub position: Option<(u64, u64)>,
    /// The key path (`instances[0].ips[2]`), when known.
    pub key: Option<String>,
    pub message: String,
    /// A rendering of the offending lines, when the YAML parser provides one.
    pub snippet: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some((l, c)) = self.position {
            write!(f, ":{l}:{c}")?;
        }
        write!(f, ": ")?;
        if let Some(k) = &self.key {
            write!(f, "{k}: ")?;
        }
        write!(f, "{}", self.message)?;
        if let Some(s) = &self.snippet {
            write!(f, "\n{s}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// A parsed configuration and the warnings found on the way.
#[derive(Clone, Debug)]
pub struct Loaded {
    pub config: Config,
    pub warnings: Vec<String>,
}

fn pos(loc: Location) -> Option<(u64, u64)> {
    if loc.line() == 0 {
        None
    } else {
        Some((loc.line(), loc.column()))
    }
}

fn at(loc: Location) -> String {
    match pos(loc) {
        Some((l, c)) => format!(" (line {l}, column {c})"),
        None => String::new(),
    }
}

/// The largest configuration file metro reads (a million watch-list entries take about
/// 25 MB of YAML).
pub const MAX_CONFIG_BYTES: u64 = 256 << 20;
/// The most YAML nodes (scalars, lists, maps) a configuration may hold: about two million
/// watch-list entries. serde-saphyr's default (250,000) would refuse lists of 250,000; a
/// bound stays, so that memory does too (`check-config` of two million entries peaks near
/// 400 MB).
pub const MAX_YAML_NODES: usize = 2_000_000;

/// serde-saphyr's options: its defaults, with room for long watch lists.
fn yaml_options() -> serde_saphyr::Options {
    serde_saphyr::options! {
        budget: serde_saphyr::budget! {
            max_nodes: MAX_YAML_NODES,
            max_events: 2 * MAX_YAML_NODES,
            max_total_scalar_bytes: MAX_CONFIG_BYTES as usize,
        },
    }
}

/// Read and parse a configuration file. A missing or unreadable file, or one larger than
/// [`MAX_CONFIG_BYTES`], is an error.
pub fn load(path: &Path) -> Result<Loaded, ConfigError> {
    use std::io::Read;
    let origin = path.display().to_string();
    let fail = |message: String| ConfigError {
        origin: origin.clone(),
        position: None,
        key: None,
        message,
        snippet: None,
    };
    let file = std::fs::File::open(path)
        .map_err(|e| fail(format!("cannot read the configuration file: {e}")))?;
    // Read one byte past the limit (a pipe or /dev/zero has no size to check first).
    let mut bytes = Vec::new();
    file.take(MAX_CONFIG_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| fail(format!("cannot read the configuration file: {e}")))?;
    if bytes.len() as u64 > MAX_CONFIG_BYTES {
        return Err(fail(format!(
            "the configuration file is larger than {} MiB",
            MAX_CONFIG_BYTES >> 20
        )));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        fail(format!(
            "cannot read the configuration file: not UTF-8 text (byte offset {})",
            e.utf8_error().valid_up_to()
        ))
    })?;
    parse(&text, &origin)
}

/// Parse configuration text; `origin` names it in errors and warnings.
pub fn parse(text: &str, origin: &str) -> Result<Loaded, ConfigError> {
    let raw: Option<RawFile> = serde_saphyr::from_str_with_options(text, yaml_options())
        .map_err(|e| yaml_error(&e, origin, text))?;
    let Some(raw) = raw else {
        return Err(ConfigError {
            origin: origin.to_string(),
            position: None,
            key: None,
            message: "the configuration is empty: expected `init_config` and `instances`"
                .to_string(),
            snippet: None,
        });
    };
    let mut warnings = Vec::new();
    unknown_keys(text, origin, &mut warnings);
    let config = Config::from_raw(raw, origin, &mut warnings)?;
    Ok(Loaded { config, warnings })
}

fn yaml_error(e: &serde_saphyr::Error, origin: &str, text: &str) -> ConfigError {
    let plain = serde_saphyr::render_options! { snippets: serde_saphyr::SnippetMode::Off };
    let mut message = e.without_snippet().render_with_options(plain);
    let position = e.location().and_then(pos);
    // The plain rendering ends with its own " at line L column C"; the position is already
    // in front of the message.
    if let Some(i) = message.rfind(" at line ") {
        message.truncate(i);
    }
    let message = match message.as_str() {
        "invalid i64" | "invalid u64" | "invalid i32" | "invalid u32" | "invalid usize" => {
            "expected a whole number".to_string()
        }
        "invalid u16" => "expected a whole number from 0 to 65535".to_string(),
        "invalid f64" => "expected a number".to_string(),
        "expected sequence start" => "expected a list (`- item` lines or `[a, b]`)".to_string(),
        "expected mapping start" => "expected `key: value` entries".to_string(),
        m if m.starts_with("budget breached") => format!(
            "the configuration is too large: metro reads at most {MAX_YAML_NODES} YAML nodes \
             (list entries, keys and values) ({m})"
        ),
        _ => message,
    };
    let full = e.render_with_options(serde_saphyr::render_options! { source_name: Some(origin) });
    // Keep only the picture of the offending lines; the first line repeats the message.
    let snippet = full
        .split_once('\n')
        .map(|(_, rest)| rest.to_string())
        .filter(|s| !s.trim().is_empty());
    ConfigError {
        origin: origin.to_string(),
        position,
        key: position.and_then(|(l, c)| key_at(text, l, c)),
        message,
        snippet,
    }
}

/// The key path of the value at `line:col`, found by walking the document's keys: the last
/// key that starts on that line before the column. `None` when the document does not parse
/// as plain YAML.
fn key_at(text: &str, line: u64, col: u64) -> Option<String> {
    fn walk(n: &Node, path: &str, line: u64, col: u64, best: &mut Option<String>) {
        match n {
            Node::Map(m) => {
                for (k, v) in m {
                    let p = if path.is_empty() {
                        k.value.clone()
                    } else {
                        format!("{path}.{}", k.value)
                    };
                    if k.referenced.line() == line && k.referenced.column() < col {
                        *best = Some(p.clone());
                    }
                    walk(v, &p, line, col, best);
                }
            }
            Node::Seq(items) => {
                for (i, v) in items.iter().enumerate() {
                    walk(v, &format!("{path}[{i}]"), line, col, best);
                }
            }
            Node::Other => {}
        }
    }
    let node = serde_saphyr::from_str_with_options::<Node>(text, yaml_options()).ok()?;
    let mut best = None;
    walk(&node, "", line, col, &mut best);
    best
}

// --- unknown keys ------------------------------------------------------------------------

/// A YAML node as far as key checking needs it.
enum Node {
    Map(Vec<(Spanned<String>, Node)>),
    Seq(Vec<Node>),
    Other,
}

impl<'de> Deserialize<'de> for Node {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Node;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("any YAML node")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut m: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(k) = m.next_key::<Spanned<String>>()? {
                    v.push((k, m.next_value::<Node>()?));
                }
                Ok(Node::Map(v))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut s: A) -> Result<Node, A::Error> {
                let mut v = Vec::new();
                while let Some(n) = s.next_element::<Node>()? {
                    v.push(n);
                }
                Ok(Node::Seq(v))
            }
            fn visit_bool<E>(self, _: bool) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_i64<E>(self, _: i64) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_u64<E>(self, _: u64) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_i128<E>(self, _: i128) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_u128<E>(self, _: u128) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_f64<E>(self, _: f64) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_str<E>(self, _: &str) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_unit<E>(self) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_none<E>(self) -> Result<Node, E> {
                Ok(Node::Other)
            }
            fn visit_some<D: serde::Deserializer<'de>>(self, d: D) -> Result<Node, D::Error> {
                Node::deserialize(d)
            }
        }
        d.deserialize_any(V)
    }
}

/// Warn about every key metro does not know, naming its path and position.
fn unknown_keys(text: &str, origin: &str, warnings: &mut Vec<String>) {
    // The typed parse already succeeded; a document this scan cannot walk (e.g. a key that
    // is not a string) only loses the warnings.
    let Ok(Node::Map(top)) = serde_saphyr::from_str_with_options::<Node>(text, yaml_options())
    else {
        return;
    };
    let mut warn = |path: String, key: &Spanned<String>| {
        warnings.push(format!(
            "{origin}{}: unknown key `{path}` (ignored)",
            pos(key.referenced)
                .map(|(l, c)| format!(":{l}:{c}"))
                .unwrap_or_default()
        ));
    };
    for (k, v) in &top {
        let name = k.value.as_str();
        if !TOP_KEYS.contains(&name) {
            warn(name.to_string(), k);
            continue;
        }
        match (name, v) {
            ("init_config", Node::Map(m)) => {
                for (k2, _) in m {
                    if !INIT_KEYS.contains(&k2.value.as_str()) {
                        warn(format!("init_config.{}", k2.value), k2);
                    }
                }
            }
            ("instances" | "config", Node::Seq(items)) => {
                for (i, item) in items.iter().enumerate() {
                    if let Node::Map(m) = item {
                        for (k2, _) in m {
                            if !INSTANCE_KEYS.contains(&k2.value.as_str()) {
                                warn(format!("{name}[{i}].{}", k2.value), k2);
                            }
                        }
                    }
                }
            }
            _ => {}
        }
    }
}

// --- validation ---------------------------------------------------------------------------

struct Ctx<'a> {
    origin: &'a str,
}

impl Ctx<'_> {
    fn err(
        &self,
        key: impl Into<String>,
        loc: Option<Location>,
        msg: impl Into<String>,
    ) -> ConfigError {
        ConfigError {
            origin: self.origin.to_string(),
            position: loc.and_then(pos),
            key: Some(key.into()),
            message: msg.into(),
            snippet: None,
        }
    }

    /// A duration in seconds: finite, at least `min` (0 also when `allow_zero`), at most
    /// [`MAX_SECONDS`].
    fn seconds(
        &self,
        key: &str,
        v: Option<&Spanned<f64>>,
        default: f64,
        min: f64,
        allow_zero: bool,
    ) -> Result<Duration, ConfigError> {
        let Some(v) = v else {
            return Ok(Duration::from_secs_f64(default));
        };
        let x = v.value;
        let ok = x.is_finite() && (x >= min || allow_zero && x == 0.0) && x <= MAX_SECONDS;
        if !ok {
            let zero = if allow_zero { " (or 0)" } else { "" };
            return Err(self.err(
                key,
                Some(v.referenced),
                format!(
                    "expected a number of seconds from {min} to {MAX_SECONDS}{zero}, found {x}"
                ),
            ));
        }
        Ok(Duration::from_secs_f64(x))
    }
}

impl Config {
    /// Validate the raw form. Warnings are appended to `warnings`.
    pub fn from_raw(
        raw: RawFile,
        origin: &str,
        warnings: &mut Vec<String>,
    ) -> Result<Config, ConfigError> {
        let cx = Ctx { origin };
        let init = raw.init_config.unwrap_or_default();

        let snaplen = match &init.snaplen {
            None => DEFAULT_SNAPLEN,
            Some(s) => {
                if s.value < i64::from(MIN_SNAPLEN) || s.value > 262_144 {
                    return Err(cx.err(
                        "init_config.snaplen",
                        Some(s.referenced),
                        format!(
                            "{} is out of range: metro needs at least {MIN_SNAPLEN} bytes \
                             (Ethernet, VLAN, IPv6 and a TCP header with options) and at most 262144",
                            s.value
                        ),
                    ));
                }
                s.value as u32
            }
        };
        let idle_ttl = cx.seconds(
            "init_config.idle_ttl",
            init.idle_ttl.as_ref(),
            DEFAULT_IDLE_TTL,
            MIN_IDLE_TTL,
            false,
        )?;
        let exp_ttl = match (&init.exp_ttl, &init.expired_ttl) {
            (Some(a), Some(b)) => {
                if a.value != b.value {
                    warnings.push(format!(
                        "{origin}: both `init_config.exp_ttl` ({}) and `init_config.expired_ttl` ({}) are set; using exp_ttl",
                        a.value, b.value
                    ));
                }
                cx.seconds("init_config.exp_ttl", Some(a), DEFAULT_EXP_TTL, 0.0, true)?
            }
            (Some(a), None) => {
                cx.seconds("init_config.exp_ttl", Some(a), DEFAULT_EXP_TTL, 0.0, true)?
            }
            (None, Some(b)) => cx.seconds(
                "init_config.expired_ttl",
                Some(b),
                DEFAULT_EXP_TTL,
                0.0,
                true,
            )?,
            (None, None) => Duration::from_secs_f64(DEFAULT_EXP_TTL),
        };

        let statsd = match &init.statsd_socket {
            Some(p) if !p.trim().is_empty() => {
                if init.statsd_ip.is_some() || init.statsd_port.is_some() {
                    warnings.push(format!(
                        "{origin}: `init_config.statsd_socket` is set: `statsd_ip`/`statsd_port` are ignored"
                    ));
                }
                StatsdTarget::Unix(PathBuf::from(p.trim()))
            }
            _ => {
                let host = match &init.statsd_ip {
                    None => DEFAULT_STATSD_IP.to_string(),
                    Some(h) => {
                        let v = h.value.trim();
                        let v = v
                            .strip_prefix('[')
                            .and_then(|v| v.strip_suffix(']'))
                            .unwrap_or(v);
                        if v.is_empty() || v.contains(char::is_whitespace) || v.contains('/') {
                            return Err(cx.err(
                                "init_config.statsd_ip",
                                Some(h.referenced),
                                format!(
                                    "expected an IP address or a host name, found `{}`",
                                    h.value
                                ),
                            ));
                        }
                        v.to_string()
                    }
                };
                let port = init.statsd_port.unwrap_or(DEFAULT_STATSD_PORT);
                if port == 0 {
                    return Err(cx.err(
                        "init_config.statsd_port",
                        None,
                        "the port must be 1 to 65535",
                    ));
                }
                StatsdTarget::Udp { host, port }
            }
        };

        let log_level = match &init.log_level {
            None => LogLevel::Info,
            Some(l) => LogLevel::parse(&l.value).ok_or_else(|| {
                cx.err(
                    "init_config.log_level",
                    Some(l.referenced),
                    format!(
                        "unknown log level `{}`: expected trace, debug, info, warn (warning), \
                         error (err) or critical (crit)",
                        l.value
                    ),
                )
            })?,
        };
        let log_file = PathBuf::from(
            init.log_file
                .as_deref()
                .filter(|s| !s.trim().is_empty())
                .unwrap_or(DEFAULT_LOG_FILE),
        );
        let flush_interval = cx.seconds(
            "init_config.flush_interval",
            init.flush_interval.as_ref(),
            DEFAULT_FLUSH_INTERVAL,
            MIN_FLUSH_INTERVAL,
            false,
        )?;
        let dns_refresh = cx.seconds(
            "init_config.dns_refresh",
            init.dns_refresh.as_ref(),
            DEFAULT_DNS_REFRESH,
            MIN_DNS_REFRESH,
            false,
        )?;
        let buffer_size = match &init.buffer_size {
            None => DEFAULT_BUFFER_SIZE,
            Some(b) if b.value >= 65_536 && b.value <= (1 << 31) => b.value,
            Some(b) => {
                return Err(cx.err(
                    "init_config.buffer_size",
                    Some(b.referenced),
                    format!(
                        "{} bytes is out of range: expected 65536 to 2147483648",
                        b.value
                    ),
                ));
            }
        };
        let default_max_flows = match &init.max_flows {
            None => DEFAULT_MAX_FLOWS,
            Some(m) => check_max_flows(&cx, "init_config.max_flows", m)?,
        };
        let prometheus_listen = match &init.prometheus_listen {
            None => None,
            Some(s) if s.value.trim().is_empty() || s.value.trim() == "off" => None,
            Some(s) => Some(s.value.trim().parse::<SocketAddr>().map_err(|_| {
                cx.err(
                    "init_config.prometheus_listen",
                    Some(s.referenced),
                    format!(
                        "expected ADDRESS:PORT such as 127.0.0.1:9464, found `{}`",
                        s.value
                    ),
                )
            })?),
        };

        let fleet = fleet_config(&cx, &init)?;

        let (list_key, list) = match (raw.instances, raw.config) {
            (Some(i), Some(_)) => {
                warnings.push(format!(
                    "{origin}: both `instances` and go-metro's older `config` list are present; using `instances`"
                ));
                ("instances", i)
            }
            (Some(i), None) => ("instances", i),
            (None, Some(c)) => ("config", c),
            (None, None) => {
                return Err(ConfigError {
                    origin: origin.to_string(),
                    position: None,
                    key: Some("instances".into()),
                    message: "no instances: expected a list of `- interface: ...` entries".into(),
                    snippet: None,
                });
            }
        };
        if list.is_empty() {
            return Err(cx.err(
                list_key,
                None,
                "the list is empty: metro needs at least one instance",
            ));
        }
        let mut instances = Vec::with_capacity(list.len());
        for (i, inst) in list.into_iter().enumerate() {
            let key = format!("{list_key}[{i}]");
            instances.push(instance(&cx, &key, inst, default_max_flows, warnings)?);
        }

        Ok(Config {
            snaplen,
            idle_ttl,
            exp_ttl,
            statsd,
            log_to_file: init.log_to_file.unwrap_or(false),
            log_level,
            log_file,
            flush_interval,
            dns_refresh,
            buffer_size,
            prometheus_listen,
            fleet,
            instances,
        })
    }
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

fn fleet_config(cx: &Ctx, init: &RawInit) -> Result<FleetConfig, ConfigError> {
    let mut f = FleetConfig::default();
    let rate = match &init.distribution_sample_rate {
        None => 1.0,
        Some(r) if r.value > 0.0 && r.value <= 1.0 => r.value,
        Some(r) => {
            return Err(cx.err(
                "init_config.distribution_sample_rate",
                Some(r.referenced),
                format!(
                    "{} is out of range: expected a fraction of samples above 0 and at most 1",
                    r.value
                ),
            ));
        }
    };
    if init.distributions == Some(true) {
        f.distribution_rate = Some(rate);
    }
    if let Some(b) = &init.histogram_buckets {
        let v = &b.value;
        let bad = if v.is_empty() || v.len() > 200 {
            Some(format!(
                "expected 1 to 200 bucket upper bounds in seconds, found {}",
                v.len()
            ))
        } else if let Some(x) = v.iter().find(|x| !x.is_finite() || **x <= 0.0) {
            Some(format!("{x} is not a positive number of seconds"))
        } else {
            v.windows(2)
                .find(|w| w[0] >= w[1])
                .map(|w| format!("bounds must increase: {} is followed by {}", w[0], w[1]))
        };
        if let Some(m) = bad {
            return Err(cx.err("init_config.histogram_buckets", Some(b.referenced), m));
        }
        f.buckets = v.clone();
    }
    if let Some(m) = &init.max_series {
        if m.value == 0 || m.value > MAX_PAIRS as u64 {
            return Err(cx.err(
                "init_config.max_series",
                Some(m.referenced),
                format!("{} is out of range: expected 1 to {MAX_PAIRS}", m.value),
            ));
        }
        f.max_series = m.value as usize;
    }
    if let Some(e) = &init.otlp_endpoint {
        let t = e.value.trim();
        if !(t.is_empty() || t == "off") {
            let ok = t
                .strip_prefix("http://")
                .and_then(|rest| rest.split('/').next())
                .is_some_and(|hp| {
                    hp.rsplit_once(':')
                        .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
                });
            if !ok {
                return Err(cx.err(
                    "init_config.otlp_endpoint",
                    Some(e.referenced),
                    format!(
                        "expected http://HOST:PORT such as http://127.0.0.1:4318 (OTLP/HTTP; https is not supported), found `{}`",
                        e.value
                    ),
                ));
            }
            f.otlp_endpoint = Some(t.trim_end_matches('/').to_string());
        }
    }
    Ok(f)
}

fn check_max_flows(cx: &Ctx, key: &str, m: &Spanned<u64>) -> Result<u64, ConfigError> {
    if m.value == 0 || m.value > 100_000_000 {
        return Err(cx.err(
            key,
            Some(m.referenced),
            format!("{} is out of range: expected 1 to 100000000", m.value),
        ));
    }
    Ok(m.value)
}

fn instance(
    cx: &Ctx,
    key: &str,
    inst: Spanned<RawInstance>,
    default_max_flows: u64,
    warnings: &mut Vec<String>,
) -> Result<Instance, ConfigError> {
    let here = inst.referenced;
    let inst = inst.value;
    let interface = match &inst.interface {
        Some(s) if !s.value.trim().is_empty() => s.value.trim().to_string(),
        _ => {
            return Err(cx.err(
                format!("{key}.interface"),
                Some(
                    inst.interface
                        .as_ref()
                        .map(|s| s.referenced)
                        .unwrap_or(here),
                ),
                "missing: expected a device name such as eth0, `any`, or `file` (with `pcap`)",
            ));
        }
    };
    let source = if interface == FILE_INTERFACE {
        match &inst.pcap {
            Some(p) if !p.value.trim().is_empty() => Source::File(PathBuf::from(p.value.trim())),
            _ => {
                return Err(cx.err(
                    format!("{key}.pcap"),
                    Some(here),
                    "missing: `interface: file` replays a capture file, name it with `pcap: PATH`",
                ));
            }
        }
    } else {
        if let Some(p) = &inst.pcap {
            warnings.push(format!(
                "{}{}: `{key}.pcap` is ignored unless `interface: file`",
                cx.origin,
                at(p.referenced)
            ));
        }
        Source::Live
    };

    let mut tags = Vec::new();
    for t in inst.tags.unwrap_or_default() {
        let t = t.trim().to_string();
        if t.is_empty() {
            continue;
        }
        tags.push(t);
    }

    let mut ips = Vec::new();
    // Duplicates dropped in O(1) each: lists of a million entries are allowed.
    let mut seen = std::collections::HashSet::new();
    for (j, s) in inst.ips.iter().flatten().enumerate() {
        match Cidr::parse(&s.value) {
            Ok((c, host_bits)) => {
                if host_bits {
                    warnings.push(format!(
                        "{}{}: `{key}.ips[{j}]`: `{}` has host bits set; watching {c}",
                        cx.origin,
                        at(s.referenced),
                        s.value
                    ));
                }
                if seen.insert(c) {
                    ips.push(c);
                }
            }
            Err(why) => {
                return Err(cx.err(
                    format!("{key}.ips[{j}]"),
                    Some(s.referenced),
                    format!(
                        "{why}: expected an IPv4 or IPv6 address or a CIDR block such as 10.0.0.0/8"
                    ),
                ));
            }
        }
    }
    let mut hosts = Vec::new();
    let mut seen_hosts = std::collections::HashSet::new();
    for (j, h) in inst.hosts.iter().flatten().enumerate() {
        let v = h.value.trim();
        if v.is_empty() || v.contains(char::is_whitespace) || v.contains('/') {
            return Err(cx.err(
                format!("{key}.hosts[{j}]"),
                Some(h.referenced),
                format!("expected a host name, found `{}`", h.value),
            ));
        }
        // An address under `hosts` works (it resolves to itself) but belongs under `ips`.
        if seen_hosts.insert(v) {
            hosts.push(v.to_string());
        }
    }
    if ips.is_empty() && hosts.is_empty() {
        return Err(cx.err(
            key,
            Some(here),
            "neither `ips` nor `hosts` is set: metro times only traffic to the remote hosts \
             you list (watching everything would cost every packet on the interface)",
        ));
    }

    let sample = if inst.sample.unwrap_or(false) {
        let duration = cx.seconds(
            &format!("{key}.sample_duration"),
            inst.sample_duration.as_ref(),
            DEFAULT_SAMPLE_DURATION,
            MIN_SAMPLE_WINDOW,
            false,
        )?;
        let interval = cx.seconds(
            &format!("{key}.sample_interval"),
            inst.sample_interval.as_ref(),
            DEFAULT_SAMPLE_INTERVAL,
            MIN_SAMPLE_WINDOW,
            true,
        )?;
        if interval.is_zero() {
            None
        } else {
            Some(DutyCycle { duration, interval })
        }
    } else {
        if inst.sample_duration.is_some() || inst.sample_interval.is_some() {
            warnings.push(format!(
                "{}{}: `{key}.sample_duration`/`sample_interval` have no effect without `sample: true`",
                cx.origin,
                at(here)
            ));
        }
        None
    };
    let max_flows = match &inst.max_flows {
        None => default_max_flows,
        Some(m) => check_max_flows(cx, &format!("{key}.max_flows"), m)?,
    };
    let prefix = |name: &str, v: &Option<Spanned<u64>>, default: u8, max: u8| match v {
        None => Ok(default),
        Some(p) if p.value <= u64::from(max) => Ok(p.value as u8),
        Some(p) => Err(cx.err(
            format!("{key}.{name}"),
            Some(p.referenced),
            format!("{} is out of range: expected 0 to {max}", p.value),
        )),
    };
    let v4 = prefix("subnet_v4_prefix", &inst.subnet_v4_prefix, 24, 32)?;
    let v6 = prefix("subnet_v6_prefix", &inst.subnet_v6_prefix, 48, 128)?;
    let group_by = match inst
        .group_by
        .as_ref()
        .map(|g| (g.value.trim(), g.referenced))
    {
        None | Some(("host", _)) => GroupBy::Host,
        Some(("subnet", _)) => GroupBy::Subnet { v4, v6 },
        Some(("block", _)) => GroupBy::Block,
        Some((other, at)) => {
            return Err(cx.err(
                format!("{key}.group_by"),
                Some(at),
                format!("expected host, subnet or block, found `{other}`"),
            ));
        }
    };

    Ok(Instance {
        interface,
        source,
        tags,
        ips,
        hosts,
        sample,
        max_flows: max_flows as usize,
        container_tags: inst.container_tags.unwrap_or(true),
        group_by,
        trust_ip_id: inst.trust_ip_id.unwrap_or(true),
    })
}

// --- rendering (check-config) -------------------------------------------------------------

fn secs(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s.fract() == 0.0 {
        format!("{}", s as u64)
    } else {
        format!("{s}")
    }
}

fn yaml_str(s: &str) -> String {
    // Quote everything that is not obviously a plain scalar.
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-/:@".contains(c))
        && !s.starts_with(['-', ':', '@'])
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "null" | "on" | "off" | "~"
        )
        && s.parse::<f64>().is_err();
    if plain {
        s.to_string()
    } else {
        format!("{s:?}")
    }
}

impl Config {
    /// The effective configuration as YAML that metro itself accepts, defaults filled in.
    pub fn to_yaml(&self) -> String {
        use std::fmt::Write;
        let mut o = String::new();
        let _ = writeln!(o, "init_config:");
        let _ = writeln!(o, "  snaplen: {}", self.snaplen);
        let _ = writeln!(o, "  idle_ttl: {}", secs(self.idle_ttl));
        let _ = writeln!(o, "  exp_ttl: {}", secs(self.exp_ttl));
        match &self.statsd {
            StatsdTarget::Udp { host, port } => {
                let _ = writeln!(o, "  statsd_ip: {}", yaml_str(host));
                let _ = writeln!(o, "  statsd_port: {port}");
            }
            StatsdTarget::Unix(p) => {
                let _ = writeln!(o, "  statsd_socket: {}", yaml_str(&p.display().to_string()));
            }
        }
        let _ = writeln!(o, "  flush_interval: {}", secs(self.flush_interval));
        let _ = writeln!(o, "  dns_refresh: {}", secs(self.dns_refresh));
        let _ = writeln!(o, "  log_to_file: {}", self.log_to_file);
        let _ = writeln!(
            o,
            "  log_file: {}",
            yaml_str(&self.log_file.display().to_string())
        );
        let _ = writeln!(o, "  log_level: {}", self.log_level.name());
        let _ = writeln!(o, "  buffer_size: {}", self.buffer_size);
        match self.prometheus_listen {
            Some(a) => {
                let _ = writeln!(o, "  prometheus_listen: {}", yaml_str(&a.to_string()));
            }
            None => {
                let _ = writeln!(o, "  prometheus_listen: off");
            }
        }
        match self.fleet.distribution_rate {
            Some(r) => {
                let _ = writeln!(o, "  distributions: true");
                let _ = writeln!(o, "  distribution_sample_rate: {r}");
            }
            None => {
                let _ = writeln!(o, "  distributions: false");
            }
        }
        let b: Vec<String> = self.fleet.buckets.iter().map(|b| b.to_string()).collect();
        let _ = writeln!(o, "  histogram_buckets: [{}]", b.join(", "));
        let _ = writeln!(o, "  max_series: {}", self.fleet.max_series);
        match &self.fleet.otlp_endpoint {
            Some(e) => {
                let _ = writeln!(o, "  otlp_endpoint: {}", yaml_str(e));
            }
            None => {
                let _ = writeln!(o, "  otlp_endpoint: off");
            }
        }
        let _ = writeln!(o, "instances:");
        for i in &self.instances {
            let _ = writeln!(o, "  - interface: {}", yaml_str(&i.interface));
            if let Source::File(p) = &i.source {
                let _ = writeln!(o, "    pcap: {}", yaml_str(&p.display().to_string()));
            }
            let list = |v: Vec<String>| {
                if v.is_empty() {
                    "[]".to_string()
                } else {
                    format!("[{}]", v.join(", "))
                }
            };
            let _ = writeln!(
                o,
                "    tags: {}",
                list(i.tags.iter().map(|t| yaml_str(t)).collect())
            );
            let _ = writeln!(
                o,
                "    ips: {}",
                list(i.ips.iter().map(|c| yaml_str(&c.to_string())).collect())
            );
            let _ = writeln!(
                o,
                "    hosts: {}",
                list(i.hosts.iter().map(|h| yaml_str(h)).collect())
            );
            match i.sample {
                Some(d) => {
                    let _ = writeln!(o, "    sample: true");
                    let _ = writeln!(o, "    sample_duration: {}", secs(d.duration));
                    let _ = writeln!(o, "    sample_interval: {}", secs(d.interval));
                }
                None => {
                    let _ = writeln!(o, "    sample: false");
                }
            }
            let _ = writeln!(o, "    max_flows: {}", i.max_flows);
            let _ = writeln!(o, "    container_tags: {}", i.container_tags);
            let _ = writeln!(o, "    group_by: {}", i.group_by.name());
            if let GroupBy::Subnet { v4, v6 } = i.group_by {
                let _ = writeln!(o, "    subnet_v4_prefix: {v4}");
                let _ = writeln!(o, "    subnet_v6_prefix: {v6}");
            }
            let _ = writeln!(o, "    trust_ip_id: {}", i.trust_ip_id);
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example from go-metro's documentation (shared/docs/go-metro.md), unchanged but for
    /// the interface.
    pub const GO_METRO_DOC_EXAMPLE: &str = "\
init_config:
  snaplen: 512          # capture length handed to libpcap (docs: >= 104)
  idle_ttl: 300         # seconds without packets before a flow is forgotten
  exp_ttl: 60           # seconds a flow lingers after FIN (the code read `expired_ttl`)
  statsd_ip: 127.0.0.1
  statsd_port: 8125
  log_to_file: true     # true: rotated file /var/log/datadog/go-metro.log; false: stdout
  log_level: info       # trace | debug | info | warn | error/err | critical/crit
instances:              # one sniffer per entry
  - interface: veth0
    tags: [env:prod]    # added to every metric, plus iface:<interface>
    ips: [45.33.125.153]         # remote addresses to watch
    hosts: [app.datadoghq.com]   # names, resolved to addresses
";

    fn ok(text: &str) -> Loaded {
        match parse(text, "test.yaml") {
            Ok(l) => l,
            Err(e) => panic!("unexpected error: {e}"),
        }
    }

    fn err(text: &str) -> ConfigError {
        match parse(text, "test.yaml") {
            Ok(l) => panic!("expected an error, got {:?}", l.config),
            Err(e) => e,
        }
    }

    #[test]
    fn go_metro_doc_example() {
        let l = ok(GO_METRO_DOC_EXAMPLE);
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        let c = l.config;
        assert_eq!(c.snaplen, 512);
        assert_eq!(c.idle_ttl, Duration::from_secs(300));
        assert_eq!(c.exp_ttl, Duration::from_secs(60));
        assert_eq!(
            c.statsd,
            StatsdTarget::Udp {
                host: "127.0.0.1".into(),
                port: 8125
            }
        );
        assert!(c.log_to_file);
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.flush_interval, Duration::from_secs(10));
        assert_eq!(c.dns_refresh, Duration::from_secs(60));
        assert_eq!(c.instances.len(), 1);
        let i = &c.instances[0];
        assert_eq!(i.interface, "veth0");
        assert_eq!(i.source, Source::Live);
        assert_eq!(i.tags, vec!["env:prod".to_string()]);
        assert_eq!(i.ips, vec![Cidr::host("45.33.125.153".parse().unwrap())]);
        assert_eq!(i.hosts, vec!["app.datadoghq.com".to_string()]);
        assert_eq!(i.sample, None);
        assert_eq!(i.max_flows, DEFAULT_MAX_FLOWS as usize);
    }

    #[test]
    fn go_metro_repository_example_with_config_list() {
        // go-metro.yaml.example in go-metro's repository: 4-space indents, `config:` list,
        // `warning` level.
        let l = ok("\
init_config:
    snaplen: 512
    idle_ttl: 300
    exp_ttl: 60
    statsd_ip: 127.0.0.1
    statsd_port: 8125
    log_to_file: true
    log_level: warning

config:
- interface: eth0
  tags:
    - foo:bar
  ips:
    - 192.168.0.1
  hosts:
    - somehost.somedomain.to
");
        assert!(l.warnings.is_empty(), "{:?}", l.warnings);
        assert_eq!(l.config.log_level, LogLevel::Warn);
        assert_eq!(l.config.instances[0].tags, vec!["foo:bar".to_string()]);
    }

    #[test]
    fn defaults() {
        let c = ok("instances:\n  - interface: eth0\n    ips: [10.0.0.1]\n").config;
        assert_eq!(c.snaplen, DEFAULT_SNAPLEN);
        assert_eq!(c.idle_ttl, Duration::from_secs(300));
        assert_eq!(c.exp_ttl, Duration::from_secs(60));
        assert_eq!(
            c.statsd,
            StatsdTarget::Udp {
                host: "127.0.0.1".into(),
                port: 8125
            }
        );
        assert!(!c.log_to_file);
        assert_eq!(c.log_file, PathBuf::from(DEFAULT_LOG_FILE));
        assert_eq!(c.log_level, LogLevel::Info);
        assert_eq!(c.buffer_size, DEFAULT_BUFFER_SIZE);
        assert_eq!(c.prometheus_listen, None);
    }

    #[test]
    fn expired_ttl_is_read_too() {
        let c = ok("init_config:\n  expired_ttl: 7\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n").config;
        assert_eq!(c.exp_ttl, Duration::from_secs(7));
        let l = ok(
            "init_config:\n  expired_ttl: 7\n  exp_ttl: 9\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n",
        );
        assert_eq!(l.config.exp_ttl, Duration::from_secs(9));
        assert_eq!(l.warnings.len(), 1);
    }

    #[test]
    fn every_log_level_spelling() {
        for (s, want) in [
            ("trace", LogLevel::Trace),
            ("debug", LogLevel::Debug),
            ("info", LogLevel::Info),
            ("warn", LogLevel::Warn),
            ("warning", LogLevel::Warn),
            ("WARNING", LogLevel::Warn),
            ("error", LogLevel::Error),
            ("err", LogLevel::Error),
            ("critical", LogLevel::Critical),
            ("crit", LogLevel::Critical),
        ] {
            let c = ok(&format!(
                "init_config:\n  log_level: {s}\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n"
            ))
            .config;
            assert_eq!(c.log_level, want, "{s}");
        }
        let e = err(
            "init_config:\n  log_level: loud\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n",
        );
        assert_eq!(e.position, Some((2, 14)));
        assert!(e.to_string().contains("unknown log level `loud`"), "{e}");
    }

    #[test]
    fn unknown_keys_warn_with_path_and_position() {
        let l = ok("\
init_config:
  snaplen: 256
  colour: blue
instances:
  - interface: eth0
    ips: [10.0.0.1]
    hostz: [a.example]
extra: 1
");
        assert_eq!(l.warnings.len(), 3, "{:?}", l.warnings);
        assert!(
            l.warnings[0].contains("test.yaml:3:3: unknown key `init_config.colour`"),
            "{:?}",
            l.warnings
        );
        assert!(
            l.warnings[1].contains("test.yaml:7:5: unknown key `instances[0].hostz`"),
            "{:?}",
            l.warnings
        );
        assert!(
            l.warnings[2].contains("unknown key `extra`"),
            "{:?}",
            l.warnings
        );
    }

    #[test]
    fn yaml_errors_have_line_and_column() {
        // A type error: snaplen is not a number.
        let e = err(
            "init_config:\n  snaplen: lots\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n",
        );
        assert_eq!(e.position, Some((2, 12)), "{e}");
        assert_eq!(e.key.as_deref(), Some("init_config.snaplen"), "{e}");
        assert!(
            e.to_string()
                .starts_with("test.yaml:2:12: init_config.snaplen: expected a whole number"),
            "{e}"
        );
        // A syntax error: an unclosed flow sequence.
        let e = err("instances:\n  - interface: eth0\n    ips: [10.0.0.1\n");
        assert!(e.position.is_some(), "{e}");
        assert!(e.to_string().starts_with("test.yaml:"), "{e}");
        // A port out of range.
        let e = err(
            "init_config:\n  statsd_port: 70000\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n",
        );
        assert_eq!(e.position.map(|p| p.0), Some(2), "{e}");
        assert_eq!(e.key.as_deref(), Some("init_config.statsd_port"), "{e}");
        // A list where a map was expected.
        let e = err("instances:\n  - interface: eth0\n    ips: [10.0.0.1]\n    tags: {a: b}\n");
        assert_eq!(e.key.as_deref(), Some("instances[0].tags"), "{e}");
    }

    #[test]
    fn ips_accept_v4_v6_and_cidr() {
        let c = ok("instances:\n  - interface: eth0\n    ips: [10.0.0.1, '2001:db8::1', 10.1.0.0/16, '2001:db8:1::/48']\n").config;
        let ips: Vec<String> = c.instances[0].ips.iter().map(|c| c.to_string()).collect();
        assert_eq!(
            ips,
            ["10.0.0.1", "2001:db8::1", "10.1.0.0/16", "2001:db8:1::/48"]
        );
        // Unquoted IPv6 in block style parses as a string too.
        let c = ok(
            "instances:\n  - interface: eth0\n    ips:\n      - 2001:db8::1\n      - fd00::/8\n",
        )
        .config;
        assert_eq!(c.instances[0].ips.len(), 2);
    }

    #[test]
    fn bad_ip_names_the_entry() {
        let e = err(
            "instances:\n  - interface: eth0\n    ips:\n      - 10.0.0.1\n      - 10.0.0.300\n",
        );
        assert_eq!(e.key.as_deref(), Some("instances[0].ips[1]"));
        assert_eq!(e.position, Some((5, 9)));
        assert!(
            e.message
                .contains("`10.0.0.300` is not an IPv4 or IPv6 address"),
            "{e}"
        );
        let e = err("instances:\n  - interface: eth0\n    ips: [10.0.0.0/33]\n");
        assert!(e.message.contains("prefix length must be 0 to 32"), "{e}");
    }

    #[test]
    fn host_bits_are_cleared_with_a_warning() {
        let l = ok("instances:\n  - interface: eth0\n    ips: [10.0.0.5/24]\n");
        assert_eq!(l.config.instances[0].ips[0].to_string(), "10.0.0.0/24");
        assert_eq!(l.warnings.len(), 1);
    }

    #[test]
    fn instance_needs_a_watch_list() {
        let e = err("instances:\n  - interface: eth0\n    tags: [a:b]\n");
        assert_eq!(e.key.as_deref(), Some("instances[0]"));
        assert!(e.message.contains("neither `ips` nor `hosts`"), "{e}");
    }

    #[test]
    fn file_interface_needs_pcap() {
        let e = err("instances:\n  - interface: file\n    ips: [10.0.0.1]\n");
        assert_eq!(e.key.as_deref(), Some("instances[0].pcap"));
        let c = ok("instances:\n  - interface: file\n    pcap: /tmp/x.pcap\n    ips: [10.0.0.1]\n")
            .config;
        assert_eq!(c.instances[0].source, Source::File("/tmp/x.pcap".into()));
    }

    #[test]
    fn snaplen_floor() {
        let e = err(
            "init_config:\n  snaplen: 64\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n",
        );
        assert_eq!(e.key.as_deref(), Some("init_config.snaplen"));
        assert!(e.message.contains("at least 96"), "{e}");
    }

    #[test]
    fn statsd_socket_and_hostname() {
        let c = ok("init_config:\n  statsd_socket: /var/run/datadog/dsd.socket\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n").config;
        assert_eq!(
            c.statsd,
            StatsdTarget::Unix("/var/run/datadog/dsd.socket".into())
        );
        let c = ok("init_config:\n  statsd_ip: dogstatsd.local\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n").config;
        assert_eq!(
            c.statsd,
            StatsdTarget::Udp {
                host: "dogstatsd.local".into(),
                port: 8125
            }
        );
    }

    #[test]
    fn sampling_and_max_flows() {
        let c = ok("init_config:\n  max_flows: 500\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n    sample: true\n    sample_duration: 5\n    sample_interval: 20\n  - interface: eth1\n    ips: [10.0.0.1]\n    max_flows: 7\n    trust_ip_id: false\n").config;
        assert_eq!(
            c.instances[0].sample,
            Some(DutyCycle {
                duration: Duration::from_secs(5),
                interval: Duration::from_secs(20)
            })
        );
        assert_eq!(c.instances[0].max_flows, 500);
        assert_eq!(c.instances[1].max_flows, 7);
        assert!(c.instances[0].trust_ip_id, "trusted unless told otherwise");
        assert!(!c.instances[1].trust_ip_id);
    }

    #[test]
    fn container_tags_default_on_and_can_be_turned_off() {
        let c = ok("instances:\n  - interface: any\n    ips: [10.0.0.1]\n  - interface: eth1\n    ips: [10.0.0.1]\n    container_tags: false\n").config;
        assert!(c.instances[0].container_tags);
        assert!(!c.instances[1].container_tags);
        assert!(c.to_yaml().contains("    container_tags: false\n"));
    }

    #[test]
    fn durations_have_floors_and_ceilings() {
        let with = |key: &str, v: &str| {
            let (section, indent) = if key.starts_with("sample") {
                ("", "    ")
            } else {
                ("init_config:\n", "  ")
            };
            let inst = if key.starts_with("sample") {
                format!("    sample: true\n{indent}{key}: {v}\n")
            } else {
                String::new()
            };
            let init = if section.is_empty() {
                String::new()
            } else {
                format!("{section}{indent}{key}: {v}\n")
            };
            parse(
                &format!("{init}instances:\n  - interface: eth0\n    ips: [10.0.0.1]\n{inst}"),
                "test.yaml",
            )
        };
        for (key, bad) in [
            ("flush_interval", "1e-10"),
            ("flush_interval", "0"),
            ("flush_interval", "0.05"),
            ("flush_interval", ".nan"),
            ("flush_interval", "-1"),
            ("flush_interval", ".inf"),
            ("flush_interval", "1e300"),
            ("dns_refresh", "0.5"),
            ("idle_ttl", "0.001"),
            ("exp_ttl", "-0.1"),
            ("sample_duration", "1e-9"),
            ("sample_interval", "0.001"),
        ] {
            let e = with(key, bad).expect_err(&format!("{key}: {bad} accepted"));
            assert!(
                e.key.as_deref().is_some_and(|k| k.ends_with(key)),
                "{key}: {bad}: {e}"
            );
            assert!(
                e.message.contains("expected a number of seconds from"),
                "{e}"
            );
        }
        for (key, good) in [
            ("flush_interval", "0.1"),
            ("flush_interval", "1e9"),
            ("dns_refresh", "1"),
            ("idle_ttl", "1"),
            ("exp_ttl", "0"),
            ("sample_duration", "0.1"),
            ("sample_interval", "0"),
        ] {
            if let Err(e) = with(key, good) {
                panic!("{key}: {good} refused: {e}");
            }
        }
    }

    #[test]
    fn large_lists_with_duplicates_load_quickly() {
        // 40,000 entries, half of them repeats: deduplicated, order kept.
        let mut y = String::from("instances:\n  - interface: eth0\n    ips:\n");
        for i in 0..20_000u32 {
            let a = format!("      - 10.{}.{}.{}\n", i >> 16, (i >> 8) & 255, i & 255);
            y.push_str(&a);
            y.push_str(&a);
        }
        let c = ok(&y).config;
        assert_eq!(c.instances[0].ips.len(), 20_000);
        assert_eq!(c.instances[0].ips[19_999].to_string(), "10.0.78.31");
    }

    #[test]
    fn zero_idle_ttl_is_refused() {
        let e = err(
            "init_config:\n  idle_ttl: 0\ninstances:\n  - interface: eth0\n    ips: [10.0.0.1]\n",
        );
        assert_eq!(e.key.as_deref(), Some("init_config.idle_ttl"));
    }

    #[test]
    fn empty_and_missing() {
        assert!(parse("", "x").is_err());
        assert!(parse("init_config:\n", "x").is_err());
        let e = load(Path::new("/nonexistent/metro.yaml")).unwrap_err();
        assert!(
            e.to_string().contains("cannot read the configuration file"),
            "{e}"
        );
    }

    #[test]
    fn effective_yaml_round_trips() {
        let l = ok(GO_METRO_DOC_EXAMPLE);
        let y = l.config.to_yaml();
        let again = ok(&y);
        assert!(again.warnings.is_empty(), "{:?}\n{y}", again.warnings);
        assert_eq!(again.config, l.config, "{y}");
        let c = ok("init_config:\n  statsd_socket: /run/dsd.sock\n  prometheus_listen: '[::1]:9464'\n  flush_interval: 0.5\ninstances:\n  - interface: file\n    pcap: /x y.pcap\n    ips: ['2001:db8::/32']\n    sample: true\n").config;
        let y = c.to_yaml();
        assert_eq!(ok(&y).config, c, "{y}");
    }

    #[test]
    fn cidr_contains() {
        let (c, _) = Cidr::parse("10.1.0.0/16").unwrap();
        assert!(c.contains("10.1.2.3".parse().unwrap()));
        assert!(!c.contains("10.2.0.1".parse().unwrap()));
        assert!(!c.contains("::1".parse().unwrap()));
        let (c, _) = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(c.contains("1.2.3.4".parse().unwrap()));
        let (c, _) = Cidr::parse("2001:db8::/32").unwrap();
        assert!(c.contains("2001:db8:ffff::1".parse().unwrap()));
    }

    #[test]
    fn fleet_keys_parse_and_bad_values_name_the_key() {
        let base = "instances:\n  - interface: eth0\n    ips: [10.0.0.0/8]\n";
        let c = ok(base).config;
        assert_eq!(c.fleet, FleetConfig::default());
        assert_eq!(c.instances[0].group_by, GroupBy::Host);
        let c = ok(&format!(
            "init_config:\n  distributions: true\n  distribution_sample_rate: 0.25\n  histogram_buckets: [0.001, 0.01, 0.1]\n  max_series: 50\n  otlp_endpoint: http://collector:4318/\n{base}    group_by: subnet\n    subnet_v4_prefix: 16\n"
        ))
        .config;
        assert_eq!(c.fleet.distribution_rate, Some(0.25));
        assert_eq!(c.fleet.buckets, vec![0.001, 0.01, 0.1]);
        assert_eq!(c.fleet.max_series, 50);
        assert_eq!(
            c.fleet.otlp_endpoint.as_deref(),
            Some("http://collector:4318")
        );
        assert_eq!(c.instances[0].group_by, GroupBy::Subnet { v4: 16, v6: 48 });
        // A rate without distributions: still off.
        let c = ok(&format!(
            "init_config:\n  distribution_sample_rate: 0.5\n{base}"
        ))
        .config;
        assert_eq!(c.fleet.distribution_rate, None);
        for (init, inst, key, says) in [
            (
                "  histogram_buckets: [0.1, 0.01]\n",
                "",
                "init_config.histogram_buckets",
                "must increase",
            ),
            (
                "  histogram_buckets: []\n",
                "",
                "init_config.histogram_buckets",
                "1 to 200",
            ),
            (
                "  histogram_buckets: [0, 1]\n",
                "",
                "init_config.histogram_buckets",
                "positive",
            ),
            (
                "  max_series: 0\n",
                "",
                "init_config.max_series",
                "1 to 65536",
            ),
            (
                "  max_series: 70000\n",
                "",
                "init_config.max_series",
                "1 to 65536",
            ),
            (
                "  distribution_sample_rate: 0\n",
                "",
                "init_config.distribution_sample_rate",
                "above 0",
            ),
            (
                "  distribution_sample_rate: 1.5\n",
                "",
                "init_config.distribution_sample_rate",
                "at most 1",
            ),
            (
                "  otlp_endpoint: https://x:4318\n",
                "",
                "init_config.otlp_endpoint",
                "https is not supported",
            ),
            (
                "  otlp_endpoint: http://x\n",
                "",
                "init_config.otlp_endpoint",
                "http://HOST:PORT",
            ),
            (
                "",
                "    group_by: cidr\n",
                "instances[0].group_by",
                "host, subnet or block",
            ),
            (
                "",
                "    subnet_v4_prefix: 33\n",
                "instances[0].subnet_v4_prefix",
                "0 to 32",
            ),
            (
                "",
                "    subnet_v6_prefix: 129\n",
                "instances[0].subnet_v6_prefix",
                "0 to 128",
            ),
        ] {
            let e = err(&format!("init_config:\n{init}{base}{inst}"));
            assert_eq!(e.key.as_deref(), Some(key), "{e}");
            assert!(e.message.contains(says), "{e}");
            assert!(e.position.is_some(), "{e}");
        }
    }
}
