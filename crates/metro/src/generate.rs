//! `metro generate`: the command's options and its output files. The generator itself (the
//! traffic model, the hostile captures, the frame builder and the pcap writer) lives in the
//! `metro-testkit` crate, which tests and benchmarks use too.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::path::PathBuf;

use anyhow::Context;
use metro_testkit::generator::{
    ConnTruth, GenConfig, flood, write_capture, write_capture_with_truth,
};

/// `metro generate`: write a synthetic capture.
#[derive(clap::Args, Clone, Debug)]
pub struct GenArgs {
    /// Output pcap file ("-" for standard output, which must not be a terminal).
    #[arg(short, long, default_value = "-")]
    pub output: PathBuf,
    /// Seed: the same seed and options give the same bytes.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Packets to write.
    #[arg(
        conflicts_with = "attack",
        short = 'n',
        long,
        default_value_t = 1_000_000
    )]
    pub packets: u64,
    /// Concurrent connections.
    #[arg(conflicts_with = "attack", short, long, default_value_t = 10_000)]
    pub connections: u32,
    /// Distinct servers.
    #[arg(conflicts_with = "attack", long, default_value_t = 1_000)]
    pub servers: u32,
    /// Fraction of connections over IPv6.
    #[arg(conflicts_with = "attack", long, default_value_t = 0.3)]
    pub ipv6: f64,
    /// Fraction of connections VLAN-tagged.
    #[arg(conflicts_with = "attack", long, default_value_t = 0.2)]
    pub vlan: f64,
    /// Fraction of connections with TCP timestamps.
    #[arg(conflicts_with = "attack", long, default_value_t = 0.7)]
    pub timestamps: f64,
    /// Fraction of connections with SACK.
    #[arg(conflicts_with = "attack", long, default_value_t = 0.9)]
    pub sack: f64,
    /// Probability that a data segment is lost.
    #[arg(conflicts_with = "attack", long, default_value_t = 0.005)]
    pub loss: f64,
    /// Fraction of bulk-transfer connections.
    #[arg(conflicts_with = "attack", long, default_value_t = 0.002)]
    pub bulk: f64,
    /// Fraction of connections captured at the client.
    #[arg(conflicts_with = "attack", long, default_value_t = 0.2)]
    pub client_side: f64,
    /// Fraction of the others captured mid-path.
    #[arg(conflicts_with = "attack", long, default_value_t = 0.1)]
    pub midpath: f64,
    /// Fraction of initial connections already open when the capture starts.
    #[arg(conflicts_with = "attack", long, default_value_t = 0.5)]
    pub midstream: f64,
    /// Bytes captured per frame (0: whole frames).
    #[arg(conflicts_with = "attack", long, default_value_t = 128)]
    pub snaplen: u32,
    /// Nanosecond-resolution pcap.
    #[arg(conflicts_with = "attack", long)]
    pub nanos: bool,
    /// Keep every connection open for the whole capture (no closes, no new connections).
    #[arg(conflicts_with = "attack", long)]
    pub no_churn: bool,
    /// Write each connection's true RTTs as CSV to this file.
    #[arg(conflicts_with = "attack", long)]
    pub truth: Option<PathBuf>,
    /// Print a summary to standard error.
    #[arg(short, long)]
    pub verbose: bool,
    /// Write a hostile capture instead (README, "Under attack"): `syn-flood` (--syn-rate
    /// spoofed SYNs a second for --flood-secs, each answered, among --real-connections real
    /// ones), `syn-flood-clean` (the same real connections alone, packet for packet), or
    /// `interface-bomb` (a pcapng file of --interfaces interface description blocks).
    #[arg(long, value_enum, value_name = "KIND")]
    pub attack: Option<Attack>,
    /// Spoofed SYNs per second (`--attack syn-flood`).
    #[arg(
        requires = "attack",
        long,
        default_value_t = 1_000_000,
        value_name = "N"
    )]
    pub syn_rate: u64,
    /// Seconds the flood lasts (`--attack syn-flood`).
    #[arg(requires = "attack", long, default_value_t = 1.0, value_name = "S")]
    pub flood_secs: f64,
    /// Real connections among the flood (`--attack syn-flood[-clean]`).
    #[arg(requires = "attack", long, default_value_t = 300, value_name = "N")]
    pub real_connections: u32,
    /// Largest round-trip time of a real client, µs (drawn uniformly from
    /// --real-rtt-min-us up to it).
    #[arg(requires = "attack", long, default_value_t = 5_000, value_name = "US")]
    pub real_rtt_max_us: u64,
    /// Smallest round-trip time of a real client, µs (at most --real-rtt-max-us).
    #[arg(requires = "attack", long, default_value_t = 200, value_name = "US")]
    pub real_rtt_min_us: u64,
    /// Real connections start within this many seconds of the first packet (default: the
    /// flood's first half).
    #[arg(requires = "attack", long, value_name = "S")]
    pub real_starts_secs: Option<f64>,
    /// Draw spoofed sources from this IPv4 block (e.g. 100.64.0.0/10) rather than anywhere.
    #[arg(requires = "attack", long, value_name = "NET", value_parser = parse_net)]
    pub spoof_net: Option<(std::net::Ipv4Addr, u8)>,
    /// Interface description blocks (`--attack interface-bomb`).
    #[arg(
        requires = "attack",
        long,
        default_value_t = 30_000_000,
        value_name = "N"
    )]
    pub interfaces: u64,
}

fn parse_net(s: &str) -> Result<(std::net::Ipv4Addr, u8), String> {
    let (a, len) = s.split_once('/').unwrap_or((s, "32"));
    match (a.parse(), len.parse::<u8>()) {
        (Ok(a), Ok(len)) if len <= 32 => Ok((a, len)),
        _ => Err(format!("`{s}` is not an IPv4 block such as 100.64.0.0/10")),
    }
}

/// The hostile captures `metro generate --attack` writes.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Attack {
    SynFlood,
    SynFloodClean,
    InterfaceBomb,
}

impl GenArgs {
    /// The flood capture's configuration (`--attack syn-flood[-clean]`).
    pub fn flood_config(&self) -> flood::FloodConfig {
        flood::FloodConfig {
            seed: self.seed,
            syn_rate: self.syn_rate,
            duration_ns: (self.flood_secs.max(0.0) * 1e9) as u64,
            real: self.real_connections,
            rtt_us: (
                self.real_rtt_min_us.min(self.real_rtt_max_us),
                self.real_rtt_max_us,
            ),
            real_starts_ns: self.real_starts_secs.map(|s| (s.max(0.0) * 1e9) as u64),
            flood: self.attack == Some(Attack::SynFlood),
            spoof_net: self.spoof_net,
            ..flood::FloodConfig::default()
        }
    }
}

impl GenArgs {
    pub fn config(&self) -> GenConfig {
        GenConfig {
            seed: self.seed,
            packets: self.packets,
            connections: self.connections,
            servers: self.servers,
            ipv6: self.ipv6,
            vlan: self.vlan,
            timestamps: self.timestamps,
            sack: self.sack,
            loss: self.loss,
            bulk: self.bulk,
            client_side: self.client_side,
            midpath: self.midpath,
            midstream: self.midstream,
            snaplen: self.snaplen,
            nanos: self.nanos,
            churn: !self.no_churn,
            ..GenConfig::default()
        }
    }
}

/// Runs `metro generate`.
pub fn generate(args: &GenArgs) -> anyhow::Result<()> {
    let cfg = args.config();
    let started = std::time::Instant::now();
    let out: Box<dyn Write> = if args.output.as_os_str() == "-" {
        // Binary on a terminal is garbage on the screen and can leave the terminal in a
        // strange state (as gzip, refuse).
        if io::stdout().is_terminal() {
            anyhow::bail!(
                "refusing to write a binary capture to a terminal: name a file with \
                 `-o FILE.pcap`, redirect (`> FILE.pcap`) or pipe it (`| metro analyze -`)"
            );
        }
        Box::new(io::stdout().lock())
    } else {
        let f = File::create(&args.output)
            .with_context(|| format!("creating {}", args.output.display()))?;
        Box::new(f)
    };
    let out = BufWriter::with_capacity(1 << 20, out);
    match args.attack {
        Some(Attack::InterfaceBomb) => {
            return flood::write_interface_bomb(out, args.interfaces)
                .context("writing the capture");
        }
        Some(Attack::SynFlood | Attack::SynFloodClean) => {
            let s = flood::write_flood(&args.flood_config(), out).context("writing the capture")?;
            if args.verbose {
                eprintln!(
                    "{} packets: {} spoofed SYNs (each answered), {} real connections ({} packets, \
                     RTT up to {} µs)",
                    s.packets,
                    s.flood_syns,
                    s.real_connections,
                    s.real_packets,
                    s.max_real_rtt_ns / 1000
                );
            }
            return Ok(());
        }
        None => {}
    }
    let summary = match &args.truth {
        None => write_capture(&cfg, out),
        Some(path) => {
            let f = File::create(path).with_context(|| format!("creating {}", path.display()))?;
            let mut t = BufWriter::new(f);
            writeln!(t, "{}", ConnTruth::CSV_HEADER)?;
            let mut err = Ok(());
            let s = write_capture_with_truth(&cfg, out, &mut |c| {
                if err.is_ok() {
                    err = writeln!(t, "{}", c.csv_line());
                }
            });
            err.context("writing the truth file")?;
            t.flush().context("writing the truth file")?;
            s
        }
    }
    .context("writing the capture")?;
    if args.verbose {
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{} packets, {} connections ({} lost, {} retransmitted), {:.3} s of traffic, \
             generated in {:.2} s ({:.2} M packets/s)",
            summary.packets,
            summary.connections,
            summary.lost,
            summary.retransmits,
            summary.duration_ns as f64 / 1e9,
            secs,
            summary.packets as f64 / secs / 1e6
        );
    }
    Ok(())
}
