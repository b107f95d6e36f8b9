//! Raw to validated: every key checked against its bounds (`limits`), defaults filled in,
//! the go-metro spellings reconciled (`exp_ttl`/`expired_ttl`, `instances`/`config`),
//! watch lists parsed and deduplicated. Errors name the key path and its line; odd but
//! usable values become warnings.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde_saphyr::{Location, Spanned};

use super::error::{ConfigError, at};
use super::limits::*;
use super::model::{
    CaptureMode, Cidr, Config, DutyCycle, FleetConfig, GroupBy, Instance, LogLevel, Protocols,
    Source, StatsdTarget,
};
use super::raw::{RawFile, RawInit, RawInstance};

struct Reporter<'a> {
    origin: &'a str,
}

impl Reporter<'_> {
    fn err(
        &self,
        key: impl Into<String>,
        loc: Option<Location>,
        msg: impl Into<String>,
    ) -> ConfigError {
        ConfigError::key(self.origin, key, loc, msg)
    }

    /// A duration in seconds: finite, at least `min` (0 also when `allow_zero`), at most
    /// [`MAX_SECONDS`].
    fn seconds(
        &self,
        key: &str,
        v: Option<&Spanned<f64>>,
        bounds: Seconds,
    ) -> Result<Duration, ConfigError> {
        let Seconds {
            default,
            min,
            allow_zero,
        } = bounds;
        let Some(v) = v else {
            return Ok(Duration::from_secs_f64(default));
        };
        let x = v.value;
        let ok = x.is_finite() && (x >= min || allow_zero && x == 0.0) && x <= MAX_SECONDS;
        if !ok {
            let zero = if allow_zero && min > 0.0 {
                " (or 0)"
            } else {
                ""
            };
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
        let cx = Reporter { origin };
        let init = raw.init_config.unwrap_or_default();

        let snaplen = match &init.snaplen {
            None => DEFAULT_SNAPLEN,
            Some(s) => {
                if s.value < i64::from(MIN_SNAPLEN) || s.value > i64::from(MAX_SNAPLEN) {
                    return Err(cx.err(
                        "init_config.snaplen",
                        Some(s.referenced),
                        format!(
                            "{} is out of range: metro needs at least {MIN_SNAPLEN} bytes \
                             (Ethernet, VLAN, IPv6 and a TCP header with options) and at most {MAX_SNAPLEN}",
                            s.value
                        ),
                    ));
                }
                s.value as u32
            }
        };
        let idle_ttl = cx.seconds("init_config.idle_ttl", init.idle_ttl.as_ref(), IDLE_TTL)?;
        let exp_ttl = match (&init.exp_ttl, &init.expired_ttl) {
            (Some(a), Some(b)) => {
                if a.value != b.value {
                    warnings.push(format!(
                        "{origin}: both `init_config.exp_ttl` ({}) and `init_config.expired_ttl` ({}) are set; using exp_ttl",
                        a.value, b.value
                    ));
                }
                cx.seconds("init_config.exp_ttl", Some(a), EXP_TTL)?
            }
            (Some(a), None) => cx.seconds("init_config.exp_ttl", Some(a), EXP_TTL)?,
            (None, Some(b)) => cx.seconds("init_config.expired_ttl", Some(b), EXP_TTL)?,
            (None, None) => Duration::from_secs_f64(EXP_TTL.default),
        };

        let statsd = match &init.statsd_socket {
            Some(p) if !p.value.trim().is_empty() => {
                let path = p.value.trim();
                if path.len() > MAX_UNIX_SOCKET_PATH {
                    return Err(cx.err(
                        "init_config.statsd_socket",
                        Some(p.referenced),
                        format!(
                            "the path is {} bytes, longer than a Unix socket address holds \
                             ({MAX_UNIX_SOCKET_PATH}): every send would fail",
                            path.len()
                        ),
                    ));
                }
                if init.statsd_ip.is_some() || init.statsd_port.is_some() {
                    warnings.push(format!(
                        "{origin}: `init_config.statsd_socket` is set: `statsd_ip`/`statsd_port` are ignored"
                    ));
                }
                StatsdTarget::Unix(PathBuf::from(path))
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
                        let why = match v.parse::<IpAddr>() {
                            Ok(IpAddr::V4(a)) if a.is_broadcast() => Some(
                                "the broadcast address: the kernel refuses every send to it \
                                 (EACCES)"
                                    .to_string(),
                            ),
                            Ok(_) => None,
                            Err(_) => host_name_problem(v),
                        };
                        if let Some(why) = why {
                            return Err(cx.err(
                                "init_config.statsd_ip",
                                Some(h.referenced),
                                format!("`{}`: {why}", h.value),
                            ));
                        }
                        v.to_string()
                    }
                };
                let port = init
                    .statsd_port
                    .as_ref()
                    .map_or(DEFAULT_STATSD_PORT, |p| p.value);
                if port == 0 {
                    return Err(cx.err(
                        "init_config.statsd_port",
                        init.statsd_port.as_ref().map(|p| p.referenced),
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
            FLUSH_INTERVAL,
        )?;
        let dns_refresh = cx.seconds(
            "init_config.dns_refresh",
            init.dns_refresh.as_ref(),
            DNS_REFRESH,
        )?;
        let baseline_window = cx.seconds(
            "init_config.baseline_window",
            init.baseline_window.as_ref(),
            BASELINE_WINDOW,
        )?;
        let buffer_size = match &init.buffer_size {
            None => DEFAULT_BUFFER_SIZE,
            Some(b) if b.value < u64::from(snaplen) + BUFFER_SLACK => {
                return Err(cx.err(
                    "init_config.buffer_size",
                    Some(b.referenced),
                    format!(
                        "{} bytes cannot hold one packet of snaplen {snaplen} bytes with \
                         libpcap's header: expected at least {}",
                        b.value,
                        u64::from(snaplen) + BUFFER_SLACK
                    ),
                ));
            }
            Some(b) if (MIN_BUFFER_SIZE..=MAX_BUFFER_SIZE).contains(&b.value) => b.value,
            Some(b) => {
                return Err(cx.err(
                    "init_config.buffer_size",
                    Some(b.referenced),
                    format!(
                        "{} bytes is out of range: expected {MIN_BUFFER_SIZE} to {MAX_BUFFER_SIZE}",
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
            Some(s) => {
                let key = "init_config.prometheus_listen";
                let a = s.value.trim().parse::<SocketAddr>().map_err(|_| {
                    cx.err(
                        key,
                        Some(s.referenced),
                        format!(
                            "expected ADDRESS:PORT such as 127.0.0.1:9464, found `{}`",
                            s.value
                        ),
                    )
                })?;
                if a.port() == 0 {
                    return Err(cx.err(
                        key,
                        Some(s.referenced),
                        "port 0 would listen on a port chosen at random, where no scraper \
                         looks: expected 1 to 65535",
                    ));
                }
                if let Some(why) = not_local(a.ip()) {
                    return Err(cx.err(key, Some(s.referenced), why));
                }
                Some(a)
            }
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
                return Err(cx.err(
                    "instances",
                    None,
                    "no instances: expected a list of `- interface: ...` entries",
                ));
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
            baseline_window,
            buffer_size,
            prometheus_listen,
            fleet,
            instances,
        })
    }
}

fn fleet_config(cx: &Reporter, init: &RawInit) -> Result<FleetConfig, ConfigError> {
    let mut f = FleetConfig::default();
    let rate = match &init.distribution_sample_rate {
        None => 1.0,
        Some(r) if r.value > 0.0 && r.value < MIN_DISTRIBUTION_RATE => {
            return Err(cx.err(
                "init_config.distribution_sample_rate",
                Some(r.referenced),
                format!(
                    "{:e} is below {MIN_DISTRIBUTION_RATE:e}: a series would send a value \
                     only after {:.0e} samples in one interval, in practice never",
                    r.value,
                    1.0 / r.value
                ),
            ));
        }
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
        let bad = if v.is_empty() || v.len() > MAX_HISTOGRAM_BUCKETS {
            Some(format!(
                "expected 1 to {MAX_HISTOGRAM_BUCKETS} bucket upper bounds in seconds, found {}",
                v.len()
            ))
        } else if let Some(x) = v.iter().find(|x| !x.is_finite() || **x <= 0.0) {
            Some(format!("{x} is not a positive number of seconds"))
        } else if let Some(x) = v
            .iter()
            .find(|x| **x < MIN_BUCKET_SECONDS || **x > MAX_SECONDS)
        {
            Some(format!(
                "{x} s is outside {MIN_BUCKET_SECONDS} s (the capture clock's resolution: no RTT \
                 is below it) to {MAX_SECONDS} s"
            ))
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
            if let Some(why) = otlp_endpoint_problem(t) {
                return Err(cx.err(
                    "init_config.otlp_endpoint",
                    Some(e.referenced),
                    format!(
                        "expected http://HOST:PORT such as http://127.0.0.1:4318 (OTLP/HTTP; https is not supported), found `{}`: {why}",
                        e.value
                    ),
                ));
            }
            f.otlp_endpoint = Some(t.trim_end_matches('/').to_string());
        }
    }
    Ok(f)
}

/// Why `run` could not listen on `ip`, if it could not: the address must be this host's
/// (the unspecified address, loopback, an interface's). Asked of the kernel the way `run`
/// asks it, by binding: a UDP socket on `ip` and port 0, closed at once.
fn not_local(ip: IpAddr) -> Option<String> {
    match std::net::UdpSocket::bind((ip, 0)) {
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => Some(format!(
            "{ip} is not an address of this host: expected 0.0.0.0 or [::] (every \
             interface), a loopback address, or one of this host's interface addresses"
        )),
        // Local; or the kernel cannot say (no IPv6, ...): `run` will say if its bind fails.
        _ => None,
    }
}

/// Why no TCP connection can have its remote end in `c`, if none can: a watch-list entry
/// that would never match a packet.
fn no_tcp_peer(c: &Cidr) -> Option<&'static str> {
    match c.addr {
        IpAddr::V4(a) if a.is_multicast() && c.prefix >= 4 => {
            Some("a multicast block: TCP never has a multicast peer")
        }
        IpAddr::V6(a) if a.is_multicast() && c.prefix >= 8 => {
            Some("a multicast block: TCP never has a multicast peer")
        }
        IpAddr::V4(a) if a.is_broadcast() => {
            Some("the broadcast address: TCP never has it as a peer")
        }
        a if a.is_unspecified() && c.is_host() => Some(
            "the unspecified address is never a peer (to watch every address: 0.0.0.0/0 or ::/0)",
        ),
        _ => None,
    }
}

/// Why `v` is not a host name a resolver can look up (RFC 1123 labels: ASCII letters,
/// digits, `-`, and `_` as some records use; at most 63 bytes a label, 253 in all).
fn host_name_problem(v: &str) -> Option<String> {
    if v.contains(':') {
        return Some(
            "a host name has no `:` (a port goes in its own key; an IPv6 address must be a \
             valid one)"
                .into(),
        );
    }
    let name = v.strip_suffix('.').unwrap_or(v);
    if name.len() > 253 {
        return Some(format!(
            "{} bytes is longer than a host name can be (253)",
            name.len()
        ));
    }
    for label in name.split('.') {
        if label.is_empty() {
            return Some("a host name has no empty label (`..`, or a leading `.`)".into());
        }
        if label.len() > 63 {
            return Some(format!(
                "the label `{label}` is {} bytes, more than a host name's 63",
                label.len()
            ));
        }
        if let Some(c) = label
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_'))
        {
            return Some(format!(
                "`{c}` cannot be in a host name (ASCII letters, digits, `-` and `_`; an \
                 internationalised name in its xn-- form)"
            ));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Some(format!("the label `{label}` begins or ends with `-`"));
        }
    }
    None
}

/// Why `t` is not an endpoint the OTLP sink can push to (`http://HOST:PORT[/PREFIX]`).
fn otlp_endpoint_problem(t: &str) -> Option<String> {
    if t.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Some("it holds whitespace or a control character".into());
    }
    let Some(rest) = t.strip_prefix("http://") else {
        return Some("the scheme must be http://".into());
    };
    let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
    if authority.contains('@') {
        return Some(
            "credentials (`user:password@`) are not supported: metro sends no Authorization \
             header, every push would be refused"
                .into(),
        );
    }
    if path.contains(['?', '#']) {
        return Some(
            "a query or fragment is not supported: metro appends /v1/metrics to the path".into(),
        );
    }
    let Some((host, port)) = authority.rsplit_once(':') else {
        return Some("the port is missing".into());
    };
    match port.parse::<u16>() {
        Ok(0) | Err(_) => return Some(format!("`{port}` is not a port from 1 to 65535")),
        Ok(_) => {}
    }
    if let Some(v6) = host.strip_prefix('[') {
        return match v6.strip_suffix(']').map(str::parse::<std::net::Ipv6Addr>) {
            Some(Ok(_)) => None,
            _ => Some(format!("`{host}` is not an IPv6 address in brackets")),
        };
    }
    if host.is_empty() {
        return Some("the host is missing".into());
    }
    if host.parse::<std::net::Ipv4Addr>().is_ok() {
        return None;
    }
    host_name_problem(host)
}

fn check_max_flows(cx: &Reporter, key: &str, m: &Spanned<u64>) -> Result<u64, ConfigError> {
    if m.value == 0 || m.value > MAX_FLOWS {
        return Err(cx.err(
            key,
            Some(m.referenced),
            format!("{} is out of range: expected 1 to {MAX_FLOWS}", m.value),
        ));
    }
    Ok(m.value)
}

fn instance(
    cx: &Reporter,
    key: &str,
    inst: Spanned<RawInstance>,
    default_max_flows: u64,
    warnings: &mut Vec<String>,
) -> Result<Instance, ConfigError> {
    let here = inst.referenced;
    let inst = inst.value;
    let interface = match &inst.interface {
        Some(s) if !s.value.trim().is_empty() => {
            let v = s.value.trim();
            if v.len() > MAX_INTERFACE_NAME || v.contains(|c: char| c.is_whitespace() || c == '/') {
                return Err(cx.err(
                    format!("{key}.interface"),
                    Some(s.referenced),
                    format!(
                        "`{v}` cannot be an interface name (at most {MAX_INTERFACE_NAME} bytes, \
                         no whitespace or `/`)"
                    ),
                ));
            }
            v.to_string()
        }
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
                if let Some(why) = no_tcp_peer(&c) {
                    return Err(cx.err(
                        format!("{key}.ips[{j}]"),
                        Some(s.referenced),
                        format!("`{}`: {why}", s.value),
                    ));
                }
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
        // An address resolves to itself; anything else must be a name a resolver takes.
        if v.parse::<IpAddr>().is_err()
            && let Some(why) = host_name_problem(v)
        {
            return Err(cx.err(
                format!("{key}.hosts[{j}]"),
                Some(h.referenced),
                format!("`{}`: {why}", h.value),
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
        let window = |name: &str, v: &Option<Spanned<f64>>, bounds| {
            cx.seconds(&format!("{key}.{name}"), v.as_ref(), bounds)
        };
        let duration = window("sample_duration", &inst.sample_duration, SAMPLE_DURATION)?;
        let interval = window("sample_interval", &inst.sample_interval, SAMPLE_INTERVAL)?;
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

    let capture = match inst
        .capture
        .as_ref()
        .map(|c| (c.value.trim(), c.referenced))
    {
        None | Some(("auto", _)) => CaptureMode::Auto,
        Some(("ebpf", _)) => CaptureMode::Ebpf,
        Some(("pcap", _)) => CaptureMode::Pcap,
        Some((other, at)) => {
            return Err(cx.err(
                format!("{key}.capture"),
                Some(at),
                format!("expected auto, ebpf or pcap, found `{other}`"),
            ));
        }
    };

    let protocols = match &inst.protocols {
        None => Protocols::ALL,
        Some(list) => {
            let mut p = Protocols(0);
            for (j, name) in list.iter().enumerate() {
                let v = name.value.trim();
                let Some(bit) = Protocols::parse_one(v) else {
                    return Err(cx.err(
                        format!("{key}.protocols[{j}]"),
                        Some(name.referenced),
                        format!("expected tcp, quic, dns or icmp, found `{v}`"),
                    ));
                };
                if p.has(bit) {
                    return Err(cx.err(
                        format!("{key}.protocols[{j}]"),
                        Some(name.referenced),
                        format!("`{v}` is listed twice"),
                    ));
                }
                p.0 |= 1 << bit;
            }
            if p.0 == 0 {
                return Err(cx.err(
                    format!("{key}.protocols"),
                    None,
                    "empty: list at least one of tcp, quic, dns, icmp (or leave the key out \
                     for all four)"
                        .to_string(),
                ));
            }
            p
        }
    };

    let threads = match &inst.threads {
        None => 1,
        Some(t) if (1..=super::model::MAX_THREADS).contains(&t.value) => t.value as usize,
        Some(t) => {
            return Err(cx.err(
                format!("{key}.threads"),
                Some(t.referenced),
                format!(
                    "{} is out of range: expected 1 to {}",
                    t.value,
                    super::model::MAX_THREADS
                ),
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
        kube_labels: inst.kube_labels.unwrap_or(false),
        group_by,
        trust_ip_id: inst.trust_ip_id.unwrap_or(true),
        capture,
        protocols,
        threads,
    })
}
