//! The deterministic capture generator (`metro generate`): given a seed, writes a pcap of
//! realistic TCP traffic for benchmarks and end-to-end tests, and optionally the true RTT of
//! every connection.
//!
//! Owns the traffic model ([`sim`]) and its random numbers ([`rng`]); frames are built by
//! [`crate::frame`] and written by [`crate::pcap::PcapWriter`]. The `metro generate`
//! command (its options and file handling) lives in the `metro` crate. The output is a pure function
//! of [`GenConfig`]: the same seed gives the same bytes on every run and platform (integer
//! arithmetic only after setup, no hash-map iteration, one ordered event queue).
//!
//! ```
//! use metro_testkit::generator::{GenConfig, write_capture};
//! let cfg = GenConfig { packets: 1000, connections: 50, ..GenConfig::default() };
//! let mut pcap = Vec::new();
//! let summary = write_capture(&cfg, &mut pcap).unwrap();
//! assert_eq!(summary.packets, 1000);
//! ```

pub mod flood;
mod rng;
mod sim;
mod wheel;

use std::io::{self, Write};
use std::net::SocketAddr;

pub use rng::{Prob, Rng};

/// Everything that determines a generated capture.
#[derive(Clone, Debug, PartialEq)]
pub struct GenConfig {
    pub seed: u64,
    /// Packets to write; the capture stops mid-conversation when this many are written.
    pub packets: u64,
    /// Concurrent connections: each slot starts a new connection when its last one closes.
    pub connections: u32,
    /// Distinct server addresses (each with one port); responders aggregate across clients.
    pub servers: u32,
    /// Fraction of connections over IPv6.
    pub ipv6: f64,
    /// Fraction of connections whose frames carry an 802.1Q tag.
    pub vlan: f64,
    /// Fraction of connections negotiating RFC 7323 timestamps.
    pub timestamps: f64,
    /// Fraction of connections negotiating SACK.
    pub sack: f64,
    /// Probability that a data segment (or SYN) is lost; one loss at a time per sender.
    pub loss: f64,
    /// Fraction of connections that move 1-20 MB in one direction instead of request/response.
    pub bulk: f64,
    /// Fraction of connections captured at the client (the rest at the server or mid-path).
    pub client_side: f64,
    /// Fraction of the remaining connections captured mid-path (both ends remote).
    pub midpath: f64,
    /// Fraction of the connections open at the start of the capture whose handshake was
    /// before it.
    pub midstream: f64,
    /// Bytes captured per frame (0: whole frames). The default keeps every header and cuts
    /// payloads, like `tcpdump -s 128`, so 50M-packet files stay a few GB.
    pub snaplen: u32,
    /// Nanosecond pcap instead of microseconds (all generated times are whole µs anyway).
    pub nanos: bool,
    /// Time of the first event, ns since the Unix epoch.
    pub start_ns: i64,
    /// Initial connections start uniformly over this many µs.
    pub ramp_us: u64,
    /// Connections close after their last transaction and slots start new ones. Without
    /// churn every connection stays open for the whole capture (steady-state benchmarks).
    pub churn: bool,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            seed: 1,
            packets: 1_000_000,
            connections: 10_000,
            servers: 1_000,
            ipv6: 0.3,
            vlan: 0.2,
            timestamps: 0.7,
            sack: 0.9,
            loss: 0.005,
            bulk: 0.002,
            client_side: 0.2,
            midpath: 0.1,
            midstream: 0.5,
            snaplen: 128,
            nanos: false,
            start_ns: 1_700_000_000_000_000_000,
            ramp_us: 1_000_000,
            churn: true,
        }
    }
}

impl GenConfig {
    fn snaplen_or_max(&self) -> u32 {
        if self.snaplen == 0 {
            262_144
        } else {
            self.snaplen
        }
    }

    /// A short stable name of everything that changes the bytes, for caching generated files.
    pub fn cache_key(&self) -> String {
        format!(
            "s{}-p{}-c{}-sv{}-v6{}-vl{}-ts{}-sk{}-l{}-b{}-cs{}-mp{}-ms{}-sn{}-ns{}-t{}-r{}-ch{}-g{}",
            self.seed,
            self.packets,
            self.connections,
            self.servers,
            self.ipv6,
            self.vlan,
            self.timestamps,
            self.sack,
            self.loss,
            self.bulk,
            self.client_side,
            self.midpath,
            self.midstream,
            self.snaplen,
            u8::from(self.nanos),
            self.start_ns,
            self.ramp_us,
            u8::from(self.churn),
            GENERATOR_VERSION,
        )
    }
}

/// Bumped whenever the model changes the bytes for a given configuration (cache keys).
pub const GENERATOR_VERSION: u32 = 2;

/// What a run produced.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenSummary {
    pub packets: u64,
    /// Frame bytes before the snaplen cut.
    pub bytes: u64,
    /// Connections started (concurrent ones plus those that replaced closed ones).
    pub connections: u64,
    /// Segments lost (data and SYNs).
    pub lost: u64,
    pub retransmits: u64,
    /// Time from the first event to the last packet.
    pub duration_ns: u64,
}

/// The ground truth of one connection: the round-trip time from the capture point to each
/// end. Every sample metro reports with the client (server) as responder is at least
/// `client_rtt_ns` (`server_rtt_ns`), and the smallest is usually exactly that.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConnTruth {
    pub serial: u64,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub client_rtt_ns: u64,
    pub server_rtt_ns: u64,
    /// "server", "client" or "midpath".
    pub captured_at: &'static str,
    /// The capture holds the handshake (false: the connection was open when it started).
    pub handshake: bool,
}

impl ConnTruth {
    pub const CSV_HEADER: &'static str =
        "serial,client,server,client_rtt_ns,server_rtt_ns,captured_at,handshake";

    pub fn csv_line(&self) -> String {
        format!(
            "{},{},{},{},{},{},{}",
            self.serial,
            self.client,
            self.server,
            self.client_rtt_ns,
            self.server_rtt_ns,
            self.captured_at,
            u8::from(self.handshake)
        )
    }
}

/// Writes a pcap (Ethernet link type) of `cfg.packets` packets to `out`. Buffer `out`
/// yourself (a `BufWriter` or a `Vec`).
pub fn write_capture<W: Write>(cfg: &GenConfig, out: W) -> io::Result<GenSummary> {
    sim::run(cfg, out, None)
}

/// Like [`write_capture`], calling `truth` once per connection as it starts.
pub fn write_capture_with_truth<W: Write>(
    cfg: &GenConfig,
    out: W,
    truth: &mut dyn FnMut(&ConnTruth),
) -> io::Result<GenSummary> {
    sim::run(cfg, out, Some(truth))
}
