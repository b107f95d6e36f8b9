//! Every key's default and bounds, in one place: what metro assumes when a key is absent
//! and what it refuses. `validate` applies them; the agent reads some directly
//! (`DEFAULT_BASE_FILTER`, `FILE_INTERFACE`).

/// The smallest snaplen metro accepts: Ethernet + VLAN + IPv6 + a TCP header with options.
pub const MIN_SNAPLEN: u32 = 96;
pub const DEFAULT_SNAPLEN: u32 = 256;
/// libpcap's own largest snaplen.
pub const MAX_SNAPLEN: u32 = 262_144;
pub const DEFAULT_IDLE_TTL: f64 = 300.0;
pub const DEFAULT_EXP_TTL: f64 = 60.0;
pub const DEFAULT_STATSD_IP: &str = "127.0.0.1";
pub const DEFAULT_STATSD_PORT: u16 = 8125;
pub const DEFAULT_FLUSH_INTERVAL: f64 = 10.0;
pub const DEFAULT_DNS_REFRESH: f64 = 60.0;
/// Each pair's baseline is its least RTT over this window (`baseline_window`, seconds).
pub const DEFAULT_BASELINE_WINDOW: f64 = 600.0;
pub const DEFAULT_LOG_FILE: &str = "/var/log/metro/metro.log";
/// Kernel capture buffer per instance (libpcap's own default is 2 MiB).
pub const DEFAULT_BUFFER_SIZE: u64 = 16 << 20;
pub const MIN_BUFFER_SIZE: u64 = 64 << 10;
pub const MAX_BUFFER_SIZE: u64 = 2 << 30;
/// Connections tracked per instance. A connection's state is at most a few KiB, so this
/// bounds one instance's flow memory to a few hundred MiB in the worst case.
pub const DEFAULT_MAX_FLOWS: u64 = 100_000;
pub const MAX_FLOWS: u64 = 100_000_000;
/// Prometheus histogram bucket bounds (`histogram_buckets`), at most.
pub const MAX_HISTOGRAM_BUCKETS: usize = 200;
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
/// A baseline over less than a second is the interval's minimum, not a baseline.
pub const MIN_BASELINE_WINDOW: f64 = 1.0;

/// The largest configuration file metro reads (a million watch-list entries take about
/// 25 MB of YAML).
pub const MAX_CONFIG_BYTES: u64 = 256 << 20;
/// The most YAML nodes (scalars, lists, maps) a configuration may hold: about two million
/// watch-list entries. serde-saphyr's default (250,000) would refuse lists of 250,000; a
/// bound stays, so that memory does too (`check-config` of two million entries peaks near
/// 400 MB).
pub const MAX_YAML_NODES: usize = 2_000_000;

/// A duration key's default and bounds, in seconds (at most [`MAX_SECONDS`]).
#[derive(Clone, Copy, Debug)]
pub struct Seconds {
    pub default: f64,
    pub min: f64,
    /// 0 is accepted too, below `min` (it turns the thing off).
    pub allow_zero: bool,
}

impl Seconds {
    const fn at_least(min: f64, default: f64) -> Seconds {
        Seconds {
            default,
            min,
            allow_zero: false,
        }
    }
    const fn or_zero(self) -> Seconds {
        Seconds {
            allow_zero: true,
            ..self
        }
    }
}

pub const IDLE_TTL: Seconds = Seconds::at_least(MIN_IDLE_TTL, DEFAULT_IDLE_TTL);
/// Any length, 0 included: a closed connection may be forgotten at once.
pub const EXP_TTL: Seconds = Seconds::at_least(0.0, DEFAULT_EXP_TTL).or_zero();
pub const FLUSH_INTERVAL: Seconds = Seconds::at_least(MIN_FLUSH_INTERVAL, DEFAULT_FLUSH_INTERVAL);
pub const DNS_REFRESH: Seconds = Seconds::at_least(MIN_DNS_REFRESH, DEFAULT_DNS_REFRESH);
pub const BASELINE_WINDOW: Seconds =
    Seconds::at_least(MIN_BASELINE_WINDOW, DEFAULT_BASELINE_WINDOW);
pub const SAMPLE_DURATION: Seconds = Seconds::at_least(MIN_SAMPLE_WINDOW, DEFAULT_SAMPLE_DURATION);
/// 0: no duty cycle (every packet processed).
pub const SAMPLE_INTERVAL: Seconds =
    Seconds::at_least(MIN_SAMPLE_WINDOW, DEFAULT_SAMPLE_INTERVAL).or_zero();

/// Prometheus histogram buckets (upper bounds, seconds) when `histogram_buckets` is not set:
/// 50 µs (a LAN) to 60 s (a stalled connection), dense from 1 ms to 100 ms where most
/// RTTs lie, so that a quantile is read within one bucket there.
pub const DEFAULT_BUCKETS: [f64; 25] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04,
    0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The smallest `distribution_sample_rate`: below one value in a million samples a series
/// sends nothing in an interval unless it has over a million samples in it (a rate such as
/// 1e-300 sends nothing ever, and its `|@rate` is 300 digits long).
pub const MIN_DISTRIBUTION_RATE: f64 = 1e-6;
/// Histogram bucket bounds, seconds: the capture clock's resolution (a bound below it is never
/// reached) to [`MAX_SECONDS`].
pub const MIN_BUCKET_SECONDS: f64 = 1e-9;
/// Interface names, at most (Linux's IFNAMSIZ less the terminating NUL).
pub const MAX_INTERFACE_NAME: usize = 15;
/// A Unix socket path, at most (`sun_path` less the terminating NUL): a longer one fails every
/// send.
pub const MAX_UNIX_SOCKET_PATH: usize = 107;
/// The kernel buffer must hold a packet of `snaplen` bytes and libpcap's per-packet header,
/// rounded to a page: `buffer_size` at least `snaplen` plus this.
pub const BUFFER_SLACK: u64 = 4096;

/// Series per interval when `max_series` is not set.
pub const DEFAULT_MAX_SERIES: usize = 10_000;

/// Pairs with samples kept per interval; a sample of a new pair beyond this is dropped and
/// counted.
pub const MAX_PAIRS: usize = 65_536;
