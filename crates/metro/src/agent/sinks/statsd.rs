//! DogStatsD: a pure encoder (one [`Report`](super::report::InstanceReport) in, datagrams
//! under a size limit out), its inverse [`parse_datagram`] for tests, and [`StatsdSink`],
//! which sends datagrams over UDP or a Unix datagram socket without ever blocking.
//!
//! The wire format is `name:value|type|#tag1,tag2` with lines joined by `\n` into datagrams
//! of at most [`UDP_MAX`] bytes on UDP (one Ethernet frame) and [`UNIX_MAX`] on a Unix socket
//! (the Agent's default buffer). Tag values cannot contain `,`, `|`, `#` or a newline; such
//! characters are replaced by `_`.

use std::fmt::Write as _;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use super::SendErrors;
use super::catalog::{self, Kind, Label};
use super::dns::Lookup;
use crate::agent::config::StatsdTarget;
use crate::agent::report::InstanceReport;

/// Largest UDP datagram: 1500 (Ethernet MTU) - 20 (IPv4) - 8 (UDP) - 40 of headroom for
/// IPv6 and tunnels: the value the Datadog clients use.
pub const UDP_MAX: usize = 1432;
/// Largest datagram on a Unix socket (the Agent reads 8 KiB at a time).
pub const UNIX_MAX: usize = 8192;
/// What a flush waits for the receiver's name to resolve; a slower lookup goes on in the
/// background and the flush uses the last address (or counts its datagrams as errors).
const DNS_WAIT: Duration = Duration::from_millis(250);

/// The DogStatsD metric types metro sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Type {
    Gauge,
    Count,
}

impl Type {
    fn code(self) -> &'static str {
        match self {
            Type::Gauge => "g",
            Type::Count => "c",
        }
    }
}

/// Replace the characters that would break the line format.
pub fn sanitize_tag(t: &str) -> std::borrow::Cow<'_, str> {
    // By bytes: every such character is ASCII, and no byte of a multi-byte UTF-8 sequence
    // is (the same answer as a search by `char`, for a fraction of the instructions).
    if t.bytes()
        .any(|b| matches!(b, b',' | b'|' | b'#' | b'\n' | b'\r' | b' '))
    {
        t.chars()
            .map(|c| if ",|#\n\r ".contains(c) { '_' } else { c })
            .collect::<String>()
            .into()
    } else {
        t.into()
    }
}

/// Append one metric line (no trailing newline).
pub fn encode_line(out: &mut String, name: &str, value: f64, ty: Type, tags: &[&str]) {
    encode_line_with(out, name, value, ty, "");
    tag_suffix(out, tags);
}

/// The end of a line with `tags`: `|#tag1,tag2`, sanitized (empty without tags). A pair's
/// dozen lines share it, so it is built once per pair ([`Batcher::push_tagged`]).
pub fn tag_suffix(out: &mut String, tags: &[&str]) {
    if !tags.is_empty() {
        out.push_str("|#");
        for (i, t) in tags.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&sanitize_tag(t));
        }
    }
}

/// [`encode_line`] with the tags already encoded by [`tag_suffix`].
fn encode_line_with(out: &mut String, name: &str, value: f64, ty: Type, suffix: &str) {
    out.push_str(name);
    out.push(':');
    format_value(out, value);
    out.push('|');
    out.push_str(ty.code());
    out.push_str(suffix);
}

/// A distribution value (ms) to the microsecond, without float formatting (the hot part of
/// a flush with `distributions: true`): `10.25`, `3`, `0.001`.
fn format_ms(out: &mut String, ms: f32) {
    if !ms.is_finite() || ms < 0.0 {
        out.push('0');
        return;
    }
    let us = (f64::from(ms) * 1000.0).round() as u64;
    let (int, frac) = (us / 1000, us % 1000);
    let _ = write!(out, "{int}");
    if frac != 0 {
        let digits = [frac / 100, frac / 10 % 10, frac % 10];
        let keep = if frac % 100 == 0 {
            1
        } else if frac % 10 == 0 {
            2
        } else {
            3
        };
        out.push('.');
        for d in &digits[..keep] {
            out.push(char::from(b'0' + *d as u8));
        }
    }
}

/// A value as DogStatsD reads it: an integer when whole, else up to six decimals.
fn format_value(out: &mut String, value: f64) {
    if value.is_finite() {
        if value.fract() == 0.0 && value.abs() < 1e15 {
            let _ = write!(out, "{}", value as i64);
        } else if let Some(micros) = micros_exact(value) {
            push_micros(out, micros);
        } else {
            // Microsecond resolution is all an RTT in ms needs; trim trailing zeros.
            let _ = write!(out, "{value:.6}");
            while out.ends_with('0') {
                out.pop();
            }
            if out.ends_with('.') {
                out.pop();
            }
        }
    } else {
        out.push('0');
    }
}

/// `value` > 0 (below 2^32) in millionths, rounded as `format!("{value:.6}")` rounds: the
/// exact binary value to the nearest millionth, a tie to the even one. The float is
/// `m * 2^-shift` exactly, so `m * 10^6` (below 2^73) shifted right is the exact quotient,
/// and its remainder decides the rounding: no float formatting (a few hundred instructions
/// a value, a dozen values a pair and flush). None for what `format!` must do (negative,
/// subnormal, large).
fn micros_exact(value: f64) -> Option<u64> {
    let bits = value.to_bits();
    let exp = ((bits >> 52) & 0x7ff) as i32;
    if bits >> 63 != 0 || exp == 0 || value >= 4_294_967_296.0 {
        return None;
    }
    let m = u128::from((bits & ((1 << 52) - 1)) | (1 << 52));
    // value = m * 2^(exp - 1075); below 2^32 with a 53-bit m, the shift is at least 21.
    let shift = (1075 - exp) as u32;
    if shift >= 127 {
        return Some(0);
    }
    let n = m * 1_000_000;
    let (q, r) = (n >> shift, n & ((1u128 << shift) - 1));
    let half = 1u128 << (shift - 1);
    let up = r > half || (r == half && q & 1 == 1);
    Some(q as u64 + u64::from(up))
}

/// `micros` millionths as `{:.6}` writes them with the trailing zeros (and a bare point)
/// trimmed: `12.5`, `0.000001`, `3`.
fn push_micros(out: &mut String, micros: u64) {
    let (int, frac) = (micros / 1_000_000, micros % 1_000_000);
    let _ = write!(out, "{int}");
    if frac != 0 {
        let mut digits = [0u8; 6];
        let mut f = frac;
        for d in digits.iter_mut().rev() {
            *d = b'0' + (f % 10) as u8;
            f /= 10;
        }
        // Trailing zeros trimmed: `frac` is not 0, so some digit is not.
        let mut keep = 6;
        while digits[keep - 1] == b'0' {
            keep -= 1;
        }
        out.push('.');
        for &d in &digits[..keep] {
            out.push(char::from(d));
        }
    }
}

/// Packs lines into datagrams of at most `max` bytes. A single line longer than `max` is
/// sent alone (the receiver may truncate it; metro's lines are far shorter).
pub struct Batcher {
    max: usize,
    cur: String,
    line: String,
    done: Vec<Vec<u8>>,
}

impl Batcher {
    pub fn new(max: usize) -> Batcher {
        Batcher {
            max,
            cur: String::with_capacity(max),
            line: String::new(),
            done: Vec::new(),
        }
    }

    pub fn push(&mut self, name: &str, value: f64, ty: Type, tags: &[&str]) {
        self.line.clear();
        encode_line(&mut self.line, name, value, ty, tags);
        self.push_encoded();
    }

    /// [`Self::push`] with the tags encoded once by [`tag_suffix`] for several lines.
    pub fn push_tagged(&mut self, name: &str, value: f64, ty: Type, suffix: &str) {
        self.line.clear();
        encode_line_with(&mut self.line, name, value, ty, suffix);
        self.push_encoded();
    }

    /// Push many values of one distribution with DogStatsD's multi-value form
    /// (`name:v1:v2:...|d|@rate|#tags`), as few lines as fit in the datagram limit.
    pub fn push_values(&mut self, name: &str, values: &[f32], rate: Option<f64>, tags: &[&str]) {
        let mut suffix = String::from("|d");
        if let Some(r) = rate.filter(|r| *r < 1.0) {
            let _ = write!(suffix, "|@{r}");
        }
        tag_suffix(&mut suffix, tags);
        let mut v = String::new();
        let mut rest = values;
        while !rest.is_empty() {
            self.line.clear();
            self.line.push_str(name);
            let mut n = 0;
            for &x in rest {
                v.clear();
                format_ms(&mut v, x);
                // At least one value per line, however long the tags.
                if n > 0 && self.line.len() + 1 + v.len() + suffix.len() > self.max {
                    break;
                }
                self.line.push(':');
                self.line.push_str(&v);
                n += 1;
            }
            self.line.push_str(&suffix);
            self.push_encoded();
            rest = &rest[n..];
        }
    }

    /// Add `self.line` to the current datagram, or start the next one.
    fn push_encoded(&mut self) {
        let need = if self.cur.is_empty() {
            self.line.len()
        } else {
            self.cur.len() + 1 + self.line.len()
        };
        if need > self.max && !self.cur.is_empty() {
            self.done.push(std::mem::take(&mut self.cur).into_bytes());
            self.cur.reserve(self.max);
        }
        if !self.cur.is_empty() {
            self.cur.push('\n');
        }
        self.cur.push_str(&self.line);
    }

    pub fn finish(mut self) -> Vec<Vec<u8>> {
        if !self.cur.is_empty() {
            self.done.push(self.cur.into_bytes());
        }
        self.done
    }
}

/// A label as a DogStatsD tag: `key:value`, or the bare tag (sanitized by the line encoder).
fn tag(l: &Label) -> String {
    match &l.value {
        Some(v) => format!("{}:{v}", l.key),
        None => l.key.to_string(),
    }
}

/// Encode one instance's interval into datagrams of at most `max` bytes: what
/// [`catalog`] describes, as DogStatsD lines.
///
/// Per pair with samples, in its protocol's family ([`catalog::family_of`]: TCP's
/// `system.net.tcp.rtt`, QUIC's `system.net.quic.rtt`, DNS's `system.net.dns.response_time`,
/// ICMP's `system.net.icmp.rtt`): the family's eight RTT gauges (`system.net.tcp.rtt`, `.avg`, ...),
/// its sample count (`system.net.tcp.rtt.samples`), counters
/// (`system.net.tcp.retransmits`) and gauges (`system.net.tcp.rtt.baseline`,
/// `system.net.tcp.queueing_delay`), and with `distributions` every value
/// (`system.net.tcp.rtt.distribution`), tagged `src`, `dst`, `iface`, the instance's tags,
/// the pair's own. Then the self-metrics ([`catalog::SELF`]), tagged `iface`, the
/// instance's tags and a breakdown (`kind:seq`).
pub fn encode_report(r: &InstanceReport, send_errors: SendErrors, max: usize) -> Vec<Vec<u8>> {
    let mut b = Batcher::new(max);
    // A pair's tags, sanitized once for its dozen lines.
    let mut suffix = String::new();
    for p in &r.pairs {
        let family = catalog::family_of(p);
        let names = family.names();
        let owned: Vec<String> = catalog::pair_labels(r, p).iter().map(tag).collect();
        let tags: Vec<&str> = owned.iter().map(String::as_str).collect();
        suffix.clear();
        tag_suffix(&mut suffix, &tags);
        for (name, v) in names.statsd_stats.iter().zip(p.rtt_ms()) {
            b.push_tagged(name, v, Type::Gauge, &suffix);
        }
        let n = p.stats.count() as f64;
        b.push_tagged(&names.statsd_samples, n, Type::Count, &suffix);
        for c in family.counters {
            b.push_tagged(c.names.statsd, (c.value)(p) as f64, Type::Count, &suffix);
        }
        for g in family.gauges {
            if let Some(v) = g.of(p) {
                b.push_tagged(g.names.statsd, v, Type::Gauge, &suffix);
            }
        }
        if let Some(f) = p.fine.as_deref().filter(|f| !f.values.is_empty()) {
            b.push_values(&names.statsd_distribution, &f.values, f.rate, &tags);
        }
    }

    let owned: Vec<String> = catalog::instance_labels(r).iter().map(tag).collect();
    let tags: Vec<&str> = owned.iter().map(String::as_str).collect();
    let input = catalog::Input {
        report: r,
        errors: send_errors,
    };
    for m in &catalog::SELF {
        let ty = match m.kind {
            Kind::Counter => Type::Count,
            Kind::Gauge => Type::Gauge,
        };
        for (by, v) in (m.points)(&input) {
            let extra = m.by.map(|k| tag(&catalog::breakdown(k, by)));
            let mut t = tags.clone();
            t.extend(extra.as_deref());
            b.push(m.name, v as f64, ty, &t);
        }
    }
    b.finish()
}

/// One parsed metric line.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub ty: String,
    /// The line's sample rate (`|@rate`, else 1).
    pub rate: f64,
    pub tags: Vec<String>,
}

impl Metric {
    /// The value of tag `key` (`key:value`), if present.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.tags
            .iter()
            .find_map(|t| t.strip_prefix(key).and_then(|rest| rest.strip_prefix(':')))
    }
}

/// Parse a DogStatsD datagram (the inverse of the encoder; strict about the format).
pub fn parse_datagram(d: &str) -> Result<Vec<Metric>, String> {
    let mut out = Vec::new();
    for line in d.split('\n') {
        if line.is_empty() {
            return Err(format!("empty line in {d:?}"));
        }
        let (name, rest) = line
            .split_once(':')
            .ok_or_else(|| format!("no `:` in {line:?}"))?;
        if name.is_empty() {
            return Err(format!("empty name in {line:?}"));
        }
        let mut fields = rest.split('|');
        // Several values (`v1:v2:...`) are one metric each (DogStatsD's multi-value form).
        let values = fields
            .next()
            .unwrap_or("")
            .split(':')
            .map(|v| v.parse::<f64>())
            .collect::<Result<Vec<f64>, _>>()
            .map_err(|e| format!("bad value in {line:?}: {e}"))?;
        let ty = fields
            .next()
            .filter(|t| ["g", "c", "ms", "h", "s", "d"].contains(t))
            .ok_or_else(|| format!("bad type in {line:?}"))?
            .to_string();
        if values.len() > 1 && !["h", "d", "ms"].contains(&ty.as_str()) {
            return Err(format!("several values for a {ty} in {line:?}"));
        }
        let mut tags = Vec::new();
        let mut rate = 1.0;
        for f in fields {
            if let Some(t) = f.strip_prefix('#') {
                tags.extend(t.split(',').map(str::to_string));
            } else if let Some(r) = f.strip_prefix('@') {
                rate = r
                    .parse::<f64>()
                    .ok()
                    .filter(|r| *r > 0.0 && *r <= 1.0)
                    .ok_or_else(|| format!("bad sample rate in {line:?}"))?;
            } else {
                return Err(format!("unexpected field {f:?} in {line:?}"));
            }
        }
        for value in values {
            out.push(Metric {
                name: name.to_string(),
                value,
                ty: ty.clone(),
                tags: tags.clone(),
                rate,
            });
        }
    }
    Ok(out)
}

// --- the sink -----------------------------------------------------------------------------

enum Conn {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

/// Sends datagrams to DogStatsD. Every socket is non-blocking: a receiver that is slow,
/// down or missing costs a counted error, never a wait. Errors are logged at most once a
/// minute, with the number suppressed in between.
pub struct StatsdSink {
    target: StatsdTarget,
    conn: Option<Conn>,
    /// The UDP receiver's name, resolved with a deadline.
    lookup: Option<Lookup>,
    /// When the current connection was made (UDP targets given by name are re-resolved
    /// every `refresh`).
    connected_at: Instant,
    refresh: Duration,
    last_log: Option<Instant>,
    suppressed: u64,
    /// Errors since the last call to [`take_errors`](Self::take_errors).
    errors: u64,
    /// Errors since start.
    pub errors_total: u64,
}

impl StatsdSink {
    pub fn new(target: StatsdTarget, refresh: Duration) -> StatsdSink {
        StatsdSink {
            target,
            conn: None,
            lookup: None,
            connected_at: Instant::now(),
            refresh,
            last_log: None,
            suppressed: 0,
            errors: 0,
            errors_total: 0,
        }
    }

    pub fn target(&self) -> &StatsdTarget {
        &self.target
    }

    /// The largest datagram for this target.
    pub fn max_datagram(&self) -> usize {
        match self.target {
            StatsdTarget::Udp { .. } => UDP_MAX,
            StatsdTarget::Unix(_) => UNIX_MAX,
        }
    }

    /// Errors counted since the previous call.
    pub fn take_errors(&mut self) -> u64 {
        std::mem::take(&mut self.errors)
    }

    fn connect(&mut self) -> io::Result<Conn> {
        match &self.target {
            StatsdTarget::Udp { host, port } => {
                let (host, port, refresh) = (host.as_str(), *port, self.refresh);
                let lookup = self
                    .lookup
                    .get_or_insert_with(|| Lookup::new(host, port, refresh));
                let addr: SocketAddr = lookup.resolve(DNS_WAIT)?;
                let bind: SocketAddr = if addr.is_ipv4() {
                    "0.0.0.0:0".parse().expect("literal")
                } else {
                    "[::]:0".parse().expect("literal")
                };
                let s = UdpSocket::bind(bind)?;
                s.connect(addr)?;
                s.set_nonblocking(true)?;
                Ok(Conn::Udp(s))
            }
            StatsdTarget::Unix(path) => {
                let s = UnixDatagram::unbound()?;
                s.connect(path)?;
                s.set_nonblocking(true)?;
                Ok(Conn::Unix(s))
            }
        }
    }

    fn error(&mut self, n: u64, what: &str, e: &io::Error) {
        self.errors += n;
        self.errors_total += n;
        let now = Instant::now();
        match self.last_log {
            Some(t) if now.duration_since(t) < Duration::from_secs(60) => self.suppressed += n,
            _ => {
                if self.suppressed > 0 {
                    tracing::warn!(
                        "statsd {}: {what}: {e} ({} more errors since the last message)",
                        self.target,
                        self.suppressed
                    );
                } else {
                    tracing::warn!("statsd {}: {what}: {e}", self.target);
                }
                self.suppressed = 0;
                self.last_log = Some(now);
            }
        }
    }

    /// Send datagrams; returns how many failed (each is also counted).
    pub fn send(&mut self, datagrams: &[Vec<u8>]) -> u64 {
        if datagrams.is_empty() {
            return 0;
        }
        let stale = matches!(&self.target, StatsdTarget::Udp { host, .. } if host.parse::<std::net::IpAddr>().is_err())
            && self.connected_at.elapsed() >= self.refresh;
        if self.conn.is_none() || stale {
            match self.connect() {
                Ok(c) => {
                    self.conn = Some(c);
                    self.connected_at = Instant::now();
                }
                Err(e) => {
                    let n = datagrams.len() as u64;
                    self.error(n, "cannot connect", &e);
                    return n;
                }
            }
        }
        let mut failed = 0;
        let mut first_err = None;
        for d in datagrams {
            let r = match self.conn.as_ref().expect("connected above") {
                Conn::Udp(s) => s.send(d),
                Conn::Unix(s) => s.send(d),
            };
            if let Err(e) = r {
                failed += 1;
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
        if let Some(e) = first_err {
            // A Unix socket whose receiver went away stays broken: reconnect next time.
            if matches!(self.conn, Some(Conn::Unix(_)))
                && matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::NotConnected
                        | io::ErrorKind::NotFound
                        | io::ErrorKind::BrokenPipe
                )
            {
                self.conn = None;
            }
            self.error(failed, "send failed", &e);
        }
        failed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::report::{InstanceCounters, InstanceReport, PairReport};
    use metro_core::aggregate::Stats;

    /// The tags of [`report`]'s first pair, in the order they are sent.
    const PAIR_TAGS: [&str; 5] = [
        "src:10.0.0.1",
        "dst:app.example.com",
        "iface:eth0",
        "env:prod",
        "team:net_ops",
    ];

    fn report() -> InstanceReport {
        let mut s = Stats::new();
        for v in [40.1, 40.3, 39.9, 41.0] {
            s.add(v);
        }
        let mut s2 = Stats::new();
        s2.add(0.125);
        InstanceReport {
            iface: "eth0".into(),
            tags: vec!["env:prod".into(), "team:net,ops".into()],
            pairs: vec![
                PairReport {
                    src: "10.0.0.1".parse().unwrap(),
                    protocol: 0,
                    dst: "app.example.com".into(),
                    stats: s,
                    retransmits: 3,
                    fine: None,
                    extra_tags: vec![],
                    baseline_ms: None,
                },
                PairReport {
                    src: "2001:db8::1".parse().unwrap(),
                    protocol: 0,
                    dst: "2001:db8::2".into(),
                    stats: s2,
                    retransmits: 0,
                    fine: None,
                    extra_tags: vec![],
                    baseline_ms: None,
                },
            ],
            counters: InstanceCounters {
                packets_received: 1234,
                packets_dropped: 5,
                flows_active: 7,
                flows_evicted: 0,
                samples: [4, 0, 1, 0, 0, 0, 0],
                samples_internal: 9,
                pairs_dropped: crate::agent::report::PairsDropped {
                    samples: 6,
                    retransmits: 11,
                },
                ..Default::default()
            },
        }
    }

    /// The shortcut of [`format_value`] writes what `format!("{v:.6}")` with the zeros
    /// trimmed writes, for values of every magnitude, ties to the even millionth (k / 2^7
    /// has seven decimals ending in 5) and their neighbours.
    #[test]
    fn values_as_std_formats_them() {
        fn std_way(v: f64) -> String {
            let mut s = format!("{v:.6}");
            while s.ends_with('0') {
                s.pop();
            }
            if s.ends_with('.') {
                s.pop();
            }
            s
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut values = vec![
            0.0078125,
            0.0234375,
            1.0000005,
            0.0000005,
            0.0000015,
            4e-7,
            1e-300,
            0.1,
            0.7,
            40.25,
            599.999999999,
            4_294_967_295.5,
        ];
        for k in 0..20_000u64 {
            let tie = k as f64 / 128.0;
            values.extend([tie, f64::from_bits(tie.to_bits() + 1)]);
            if tie > 0.0 {
                values.push(f64::from_bits(tie.to_bits() - 1));
            }
        }
        for _ in 0..400_000 {
            let r = next();
            // A magnitude from 1e-9 to 1e9, then any mantissa.
            let e = (r >> 58) as i32 - 30;
            let v = f64::from_bits((r & ((1 << 52) - 1)) | (1023 << 52)) * 2f64.powi(e);
            values.push(v);
        }
        for v in values {
            let mut got = String::new();
            format_value(&mut got, v);
            let want = if v.fract() == 0.0 {
                format!("{}", v as i64)
            } else {
                std_way(v)
            };
            assert_eq!(got, want, "{v:e}");
        }
    }

    #[test]
    fn sanitizing_keeps_multibyte_characters() {
        assert_eq!(sanitize_tag("dst:é,ü x|#\n\r€"), "dst:é_ü_x____€");
        assert!(matches!(
            sanitize_tag("dst:héllo"),
            std::borrow::Cow::Borrowed("dst:héllo")
        ));
    }

    #[test]
    fn line_format() {
        let mut s = String::new();
        encode_line(&mut s, "a.b", 40.25, Type::Gauge, &["src:1.2.3.4", "x:y|z"]);
        assert_eq!(s, "a.b:40.25|g|#src:1.2.3.4,x:y_z");
        s.clear();
        encode_line(&mut s, "a.b", 3.0, Type::Count, &[]);
        assert_eq!(s, "a.b:3|c");
        s.clear();
        encode_line(&mut s, "a", 0.0000004, Type::Gauge, &[]);
        assert_eq!(s, "a:0|g");
        s.clear();
        encode_line(&mut s, "a", f64::NAN, Type::Gauge, &[]);
        assert_eq!(s, "a:0|g");
    }

    #[test]
    fn report_round_trips_through_the_parser() {
        let r = report();
        let ds = encode_report(
            &r,
            SendErrors {
                statsd: 2,
                otlp: Some(5),
            },
            UDP_MAX,
        );
        let mut all = Vec::new();
        for d in &ds {
            assert!(d.len() <= UDP_MAX, "datagram of {} bytes", d.len());
            all.extend(parse_datagram(std::str::from_utf8(d).unwrap()).unwrap());
        }
        // 2 pairs x 10 metrics + 6 instance counters + 3 kinds + internal + 2 pairs dropped
        // + series overflow + two send_errors + copies by kind (plain, nat) + the capture
        // gauge + DNS timeouts + proto tables' drops (quic, dns, icmp) and unmatched answers
        // (dns, icmp) + raw frames by reason (5).
        assert_eq!(
            all.len(),
            2 * 10 + 6 + 3 + 1 + 2 + 1 + 2 + 2 + 1 + 1 + 3 + 2 + 5
        );
        let find = |name: &str, dst: &str| {
            all.iter()
                .find(|m| m.name == name && m.tag("dst") == Some(dst))
                .unwrap_or_else(|| panic!("{name} {dst} missing"))
        };
        let m = find("system.net.tcp.rtt", "app.example.com");
        assert_eq!(m.ty, "g");
        assert_eq!(m.value, 41.0);
        assert_eq!(m.tags, PAIR_TAGS);
        assert!((find("system.net.tcp.rtt.avg", "app.example.com").value - 40.325).abs() < 1e-6);
        assert!(
            (find("system.net.tcp.rtt.jitter", "app.example.com").value - (0.2 + 0.4 + 1.1) / 3.0)
                .abs()
                < 1e-6
        );
        assert_eq!(
            find("system.net.tcp.rtt.min", "app.example.com").value,
            39.9
        );
        assert_eq!(
            find("system.net.tcp.rtt.max", "app.example.com").value,
            41.0
        );
        let p50 = find("system.net.tcp.rtt.p50", "app.example.com").value;
        assert!((p50 - 40.1).abs() / 40.1 < 0.011, "{p50}");
        let n = find("system.net.tcp.rtt.samples", "app.example.com");
        assert_eq!((n.ty.as_str(), n.value), ("c", 4.0));
        assert_eq!(
            find("system.net.tcp.retransmits", "app.example.com").value,
            3.0
        );
        let v6 = find("system.net.tcp.rtt", "2001:db8::2");
        assert_eq!(v6.tag("src"), Some("2001:db8::1"));
        assert_eq!(v6.value, 0.125);

        let selfm: Vec<_> = all
            .iter()
            .filter(|m| m.name.starts_with("metro."))
            .collect();
        for m in &selfm {
            assert_eq!(m.tag("iface"), Some("eth0"), "{m:?}");
            assert_eq!(m.tags[0], "iface:eth0");
        }
        let get = |name: &str| selfm.iter().find(|m| m.name == name).unwrap();
        assert_eq!(get("metro.packets.received").value, 1234.0);
        assert_eq!(get("metro.packets.dropped").value, 5.0);
        assert_eq!(get("metro.flows.active").ty, "g");
        assert_eq!(get("metro.capture.ebpf").ty, "g");
        assert_eq!(get("metro.statsd.send_errors").value, 2.0);
        assert_eq!(get("metro.otlp.send_errors").value, 5.0);
        assert_eq!(all.last().unwrap().name, "metro.statsd.send_errors");
        let seq = selfm
            .iter()
            .find(|m| m.name == "metro.samples" && m.tag("kind") == Some("seq"))
            .unwrap();
        assert_eq!(seq.value, 4.0);
        let dropped = |kind: &str| {
            let m = selfm
                .iter()
                .find(|m| m.name == "metro.pairs.dropped" && m.tag("kind") == Some(kind))
                .unwrap_or_else(|| panic!("metro.pairs.dropped kind:{kind} missing"));
            assert_eq!(m.ty, "c");
            m.value
        };
        assert_eq!((dropped("sample"), dropped("retransmit")), (6.0, 11.0));
    }

    #[test]
    fn batches_respect_the_limit() {
        let mut r = report();
        let p = r.pairs[0].clone();
        for i in 0..200 {
            let mut q = p.clone();
            q.dst = format!("host{i}.example.com").into();
            r.pairs.push(q);
        }
        for max in [UDP_MAX, UNIX_MAX, 300] {
            let ds = encode_report(&r, SendErrors::default(), max);
            let mut n = 0;
            // Greedy packing: the next datagram's first line would not have fit.
            for w in ds.windows(2) {
                let first = w[1].split(|&b| b == b'\n').next().unwrap().len();
                assert!(w[0].len() + 1 + first > max);
            }
            for d in &ds {
                assert!(d.len() <= max);
                assert!(!d.ends_with(b"\n") && !d.starts_with(b"\n"));
                n += parse_datagram(std::str::from_utf8(d).unwrap())
                    .unwrap()
                    .len();
            }
            assert_eq!(n, 202 * 10 + 6 + 3 + 1 + 2 + 1 + 1 + 2 + 1 + 1 + 3 + 2 + 5);
        }
    }

    #[test]
    fn distributions_pack_every_value_within_the_limit() {
        use crate::agent::fleet::{Fine, IntervalOpts};
        let mut r = report();
        let o = IntervalOpts {
            distribution_rate: Some(0.5),
            ..IntervalOpts::default()
        };
        let mut f = Fine::new(&o);
        let mut room = usize::MAX;
        // 5,000 samples at rate 1/2: 2,500 values, 0.001 ms apart.
        let want: Vec<f64> = (0..5000).map(|i| 10.0 + i as f64 * 0.001).collect();
        for v in &want {
            f.add(*v, &o, &mut room);
        }
        assert_eq!(f.values.len(), 2500);
        r.pairs[0].fine = Some(Box::new(f.clone()));
        r.pairs[0].extra_tags = vec!["container:web".into()];
        for max in [UDP_MAX, UNIX_MAX, 300] {
            let ds = encode_report(&r, SendErrors::default(), max);
            let mut got = Vec::new();
            let mut lines = 0;
            for d in &ds {
                assert!(d.len() <= max, "{} > {max}", d.len());
                let text = std::str::from_utf8(d).unwrap();
                lines += text
                    .lines()
                    .filter(|l| l.starts_with("system.net.tcp.rtt.distribution"))
                    .count();
                for m in parse_datagram(text).unwrap() {
                    if m.name == "system.net.tcp.rtt.distribution" {
                        assert_eq!(m.ty, "d");
                        assert_eq!(m.rate, 0.5);
                        assert_eq!(m.tags, [&PAIR_TAGS[..], &["container:web"]].concat());
                        got.push(m.value);
                    }
                }
            }
            // Every kept value, in order, to the microsecond; many per line.
            assert_eq!(got.len(), 2500);
            for (g, v) in got.iter().zip(&f.values) {
                assert!((g - f64::from(*v)).abs() < 1e-3, "{g} vs {v}");
            }
            assert!(
                lines < 2500 / 10,
                "{lines} lines for 2500 values at {max} bytes"
            );
            let all: Vec<Metric> = ds
                .iter()
                .flat_map(|d| parse_datagram(std::str::from_utf8(d).unwrap()).unwrap())
                .collect();
            assert!(all.iter().any(|m| m.name == "metro.distribution.dropped"));
        }
    }

    #[test]
    fn distribution_values_to_the_microsecond() {
        for (v, want) in [
            (10.25f32, "10.25"),
            (3.0, "3"),
            (0.001, "0.001"),
            (0.0004, "0"),
            (40.1, "40.1"),
            (1234.5678, "1234.568"),
            (-1.0, "0"),
        ] {
            let mut s = String::new();
            format_ms(&mut s, v);
            assert_eq!(s, want, "{v}");
        }
    }

    #[test]
    fn parser_rejects_garbage() {
        assert!(parse_datagram("a:1|g\n\nb:2|c").is_err());
        assert!(parse_datagram("a1|g").is_err());
        assert!(parse_datagram("a:x|g").is_err());
        assert!(parse_datagram("a:1|q").is_err());
        assert!(parse_datagram("a:1|g|x").is_err());
    }

    #[test]
    fn udp_sink_sends_and_counts_errors() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let port = rx.local_addr().unwrap().port();
        let mut sink = StatsdSink::new(
            StatsdTarget::Udp {
                host: "localhost".into(),
                port,
            },
            Duration::from_secs(60),
        );
        assert_eq!(sink.send(&[b"a:1|c".to_vec()]), 0);
        let mut buf = [0u8; 2048];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"a:1|c");
        drop(rx);
        // The port is closed now: ICMP port unreachable makes a later send fail. Never blocks.
        let t = Instant::now();
        let mut failed = 0;
        for _ in 0..20 {
            failed += sink.send(&[b"a:1|c".to_vec()]);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(failed > 0);
        assert!(t.elapsed() < Duration::from_secs(2));
        assert_eq!(sink.take_errors(), failed);
        assert_eq!(sink.take_errors(), 0);
    }

    #[test]
    fn unix_sink_missing_socket_then_present() {
        let dir = std::env::temp_dir().join(format!("metro-statsd-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&dir);
        let path = dir.join("dsd.sock");
        let _ = std::fs::remove_file(&path);
        let mut sink = StatsdSink::new(StatsdTarget::Unix(path.clone()), Duration::from_secs(60));
        assert_eq!(sink.send(&[b"a:1|c".to_vec(), b"b:1|c".to_vec()]), 2);
        let rx = UnixDatagram::bind(&path).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(sink.send(&[b"a:1|c".to_vec()]), 0);
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"a:1|c");
        drop(rx);
        let _ = std::fs::remove_file(&path);
        assert_eq!(sink.send(&[b"a:1|c".to_vec()]), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
