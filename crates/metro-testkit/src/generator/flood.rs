//! Hostile captures for the "under attack" tests and script: a SYN flood from spoofed random
//! sources with real connections among it (and the same real traffic alone, to compare), and
//! a pcapng file of nothing but interface description blocks.
//!
//! The flood capture is taken at the attacked server (10.0.0.1, port 443). Each spoofed SYN
//! comes from a random IPv4 address and port and is answered by the server's SYN/ACK
//! [`SERVER_DELAY_NS`] later (as a server with SYN cookies does); nothing answers the
//! SYN/ACK. Each real connection, from its own client address, is a handshake,
//! [`EXCHANGES`] requests and responses with the client thinking [`THINK_US`] between them,
//! and a close initiated by the client, with the client at a drawn round-trip time from the
//! capture point: [`SAMPLES_PER_CONNECTION`] samples, all exact (no loss, no retransmission). The
//! real packets are the same bytes at the same times with and without the flood, so their
//! samples can be compared frame for frame. Everything is a pure function of the
//! configuration.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::Ipv4Addr;

use metro_core::seq::SeqNum;

use super::rng::Rng;
use crate::frame::{LINKTYPE_ETHERNET, TcpFrame, flags};
use crate::pcap::PcapWriter;

/// The attacked server's address and port.
pub const SERVER: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
pub const SERVER_PORT: u16 = 443;
/// The server's time from a packet arriving to its answer leaving (its own stack).
pub const SERVER_DELAY_NS: u64 = 30_000;
/// Request/response exchanges of each real connection.
pub const EXCHANGES: u64 = 3;
/// The client's think time between a response and its next request, µs: an established
/// connection sits idle meanwhile (and a least-recently-seen table would evict it).
pub const THINK_US: (u64, u64) = (20_000, 200_000);
/// Samples each real connection yields: two handshake, two seq per exchange (request and
/// response acknowledged), two seq for the FINs.
pub const SAMPLES_PER_CONNECTION: u64 = 2 + 2 * EXCHANGES + 2;
/// Of those, answered by the client: the handshake's last, each response's ACK, its FIN's.
pub const CLIENT_SAMPLES_PER_CONNECTION: u64 = 1 + EXCHANGES + 1;

/// What a flood capture holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FloodConfig {
    pub seed: u64,
    /// Spoofed SYNs per second (each answered by a SYN/ACK).
    pub syn_rate: u64,
    /// How long the flood lasts, ns. Real connections start during it.
    pub duration_ns: u64,
    /// Real connections.
    pub real: u32,
    /// Round-trip time from the capture point to a real client, drawn uniformly in this
    /// range (µs).
    pub rtt_us: (u64, u64),
    /// Real connections start at times drawn uniformly over this long from the first packet,
    /// ns (None: the flood's first half, so most conversations end within it).
    pub real_starts_ns: Option<u64>,
    /// False: only the real connections (the same packets at the same times).
    pub flood: bool,
    /// Spoofed sources are drawn from this IPv4 block (address, prefix length) instead of
    /// the whole address space: an attacker who knows what the monitor watches.
    pub spoof_net: Option<(Ipv4Addr, u8)>,
    /// Time of the first packet, ns since the Unix epoch.
    pub start_ns: i64,
}

impl Default for FloodConfig {
    fn default() -> Self {
        FloodConfig {
            seed: 1,
            syn_rate: 1_000_000,
            duration_ns: 1_000_000_000,
            real: 300,
            rtt_us: (200, 5_000),
            real_starts_ns: None,
            flood: true,
            spoof_net: None,
            start_ns: 1_700_000_000_000_000_000,
        }
    }
}

/// What a flood capture holds, counted.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FloodSummary {
    pub packets: u64,
    pub flood_syns: u64,
    pub real_connections: u64,
    /// Packets of the real connections.
    pub real_packets: u64,
    /// The largest round-trip time drawn for a real client, ns.
    pub max_real_rtt_ns: u64,
}

/// Real connections at most: one client address each in 198.18.0.0/15.
pub const MAX_REAL: u32 = 1 << 17;

/// One real connection's client.
fn real_client(i: u32) -> Ipv4Addr {
    // 198.18.0.0/15 (benchmarking addresses): never drawn for the flood, see `flood_source`.
    Ipv4Addr::from(0xc612_0000 + i)
}

/// A random spoofed source (in `net` if given), never a real client or the server.
fn flood_source(rng: &mut Rng, net: Option<(Ipv4Addr, u8)>) -> (Ipv4Addr, u16) {
    let (base, keep) = match net {
        Some((a, len)) => {
            let mask = u32::MAX
                .checked_shl(32 - u32::from(len.min(32)))
                .unwrap_or(0);
            (u32::from(a) & mask, !mask)
        }
        None => (0, u32::MAX),
    };
    loop {
        let a = base | (rng.next_u32() & keep);
        if a >> 17 != 0xc612_0000 >> 17 && a != u32::from(SERVER) {
            return (Ipv4Addr::from(a), 1024 + rng.below(64_512) as u16);
        }
    }
}

/// The real connections' packets, sorted by time: (time, frame).
fn real_packets(cfg: &FloodConfig, summary: &mut FloodSummary) -> Vec<(i64, Vec<u8>)> {
    let mut out = Vec::new();
    for i in 0..cfg.real {
        let mut rng = Rng::stream(cfg.seed, u64::from(i) + (1 << 40));
        let client = real_client(i);
        let cport = 32_768 + rng.below(28_000) as u16;
        let rtt = rng.range(cfg.rtt_us.0, cfg.rtt_us.1) * 1_000;
        summary.max_real_rtt_ns = summary.max_real_rtt_ns.max(rtt);
        let d = SERVER_DELAY_NS;
        let starts = cfg.real_starts_ns.unwrap_or(cfg.duration_ns / 2);
        let t0 = cfg.start_ns + rng.below(starts.max(1)) as i64;
        let (c, s) = (SeqNum::new(rng.next_u32()), SeqNum::new(rng.next_u32()));
        // One segment of this conversation, client to server (`up`) or back (`down`).
        let segment = |up: bool, seq: SeqNum, ack: SeqNum, f: u16, len: u32| {
            let frame = if up {
                TcpFrame::v4(client, cport, SERVER, SERVER_PORT)
            } else {
                TcpFrame::v4(SERVER, SERVER_PORT, client, cport)
            };
            frame
                .seq(seq.get())
                .ack(ack.get())
                .flags(f)
                .payload_len(len as usize)
                .to_vec()
        };
        let up = |seq: SeqNum, ack: SeqNum, f: u16, len: u32| segment(true, seq, ack, f, len);
        let down = |seq: SeqNum, ack: SeqNum, f: u16, len: u32| segment(false, seq, ack, f, len);
        let (syn, ack, psh, fin) = (flags::SYN, flags::ACK, flags::PSH, flags::FIN);
        let mut t = t0;
        let mut at = |dt: u64, frame: Vec<u8>| {
            t += dt as i64;
            out.push((t, frame));
        };
        let (mut cs, mut ss) = (c + 1, s + 1);
        at(0, up(c, SeqNum::ZERO, syn, 0));
        at(d, down(s, cs, syn | ack, 0));
        at(rtt, up(cs, ss, ack, 0));
        for e in 0..EXCHANGES {
            let think = if e == 0 {
                10_000
            } else {
                rng.range(THINK_US.0, THINK_US.1) * 1_000
            };
            let (req, resp) = (rng.range(50, 1_000) as u32, rng.range(100, 1_400) as u32);
            at(think, up(cs, ss, psh | ack, req));
            cs = cs + req;
            at(d, down(ss, cs, psh | ack, resp));
            ss = ss + resp;
            at(rtt, up(cs, ss, ack, 0));
        }
        at(10_000, up(cs, ss, fin | ack, 0));
        at(d, down(ss, cs + 1, fin | ack, 0));
        at(rtt, up(cs + 1, ss + 1, ack, 0));
    }
    // Stable: a connection's own packets keep their order at equal times.
    out.sort_by_key(|p| p.0);
    summary.real_connections = u64::from(cfg.real);
    summary.real_packets = out.len() as u64;
    out
}

/// Writes the flood capture (nanosecond pcap, Ethernet) to `out`. Buffer `out` yourself.
pub fn write_flood<W: Write>(cfg: &FloodConfig, out: W) -> io::Result<FloodSummary> {
    if let Some((net, len)) = cfg.spoof_net {
        let a = u32::from(net);
        if (len >= 15 && a >> 17 == 0xc612_0000 >> 17) || (len == 32 && net == SERVER) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "--spoof-net {net}/{len} leaves no address for spoofed sources: it lies within \
                     the real clients' 198.18.0.0/15 or is the server {SERVER}"
                ),
            ));
        }
    }
    if cfg.real > MAX_REAL {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} real connections: at most {MAX_REAL} (one client address each in 198.18.0.0/15)",
                cfg.real
            ),
        ));
    }
    let mut summary = FloodSummary::default();
    let real = real_packets(cfg, &mut summary);
    let mut w = PcapWriter::nanos(out, LINKTYPE_ETHERNET, 262_144)?;
    let syns = if cfg.flood {
        u64::try_from(u128::from(cfg.syn_rate) * u128::from(cfg.duration_ns) / 1_000_000_000)
            .unwrap_or(u64::MAX)
    } else {
        0
    };
    let mut rng = Rng::stream(cfg.seed, 0);
    // The i-th spoofed SYN lands at a random point of its own 1/rate slot.
    let slot = 1_000_000_000 / cfg.syn_rate.max(1);
    let syn_time = |i: u64, rng: &mut Rng| {
        cfg.start_ns
            + (u128::from(i) * 1_000_000_000 / u128::from(cfg.syn_rate.max(1))) as i64
            + rng.below(slot.max(1)) as i64
    };
    let mut next_syn = (syns > 0).then(|| (0u64, syn_time(0, &mut rng)));
    // SYN/ACKs to send: (time, client, port, client ISN, server ISN), in time order.
    let mut answers: VecDeque<(i64, Ipv4Addr, u16, SeqNum, SeqNum)> = VecDeque::new();
    let mut real = real.into_iter().peekable();
    let mut buf = Vec::with_capacity(128);
    loop {
        let t_real = real.peek().map(|p| p.0);
        let t_syn = next_syn.map(|s| s.1);
        let t_ans = answers.front().map(|a| a.0);
        let Some(t) = [t_real, t_syn, t_ans].into_iter().flatten().min() else {
            break;
        };
        if t_real == Some(t) {
            let (ts, frame) = real.next().expect("peeked");
            w.write_packet(ts, &frame, frame.len() as u32)?;
        } else if t_ans == Some(t) {
            let (ts, src, port, isn, sisn) = answers.pop_front().expect("peeked");
            buf.clear();
            TcpFrame::v4(SERVER, SERVER_PORT, src, port)
                .seq(sisn.get())
                .ack((isn + 1).get())
                .flags(flags::SYN | flags::ACK)
                .mss(1460)
                .write(&mut buf);
            w.write_packet(ts, &buf, buf.len() as u32)?;
        } else {
            let (i, ts) = next_syn.expect("a SYN is due");
            let (src, port) = flood_source(&mut rng, cfg.spoof_net);
            let isn = SeqNum::new(rng.next_u32());
            buf.clear();
            TcpFrame::v4(src, port, SERVER, SERVER_PORT)
                .seq(isn.get())
                .flags(flags::SYN)
                .mss(1460)
                .write(&mut buf);
            w.write_packet(ts, &buf, buf.len() as u32)?;
            let sisn = SeqNum::new(rng.next_u32());
            answers.push_back((ts + SERVER_DELAY_NS as i64, src, port, isn, sisn));
            summary.flood_syns += 1;
            next_syn = (i + 1 < syns).then(|| (i + 1, syn_time(i + 1, &mut rng)));
        }
        summary.packets += 1;
    }
    w.flush()?;
    Ok(summary)
}

/// Writes a pcapng file of one section holding `interfaces` interface description blocks
/// and no packet (what a hostile file multiplies to exhaust a reader's memory).
pub fn write_interface_bomb<W: Write>(mut out: W, interfaces: u64) -> io::Result<()> {
    let mut shb = Vec::with_capacity(28);
    shb.extend_from_slice(&0x0a0d_0d0au32.to_le_bytes());
    shb.extend_from_slice(&28u32.to_le_bytes());
    shb.extend_from_slice(&0x1a2b_3c4du32.to_le_bytes());
    shb.extend_from_slice(&1u16.to_le_bytes());
    shb.extend_from_slice(&0u16.to_le_bytes());
    shb.extend_from_slice(&u64::MAX.to_le_bytes());
    shb.extend_from_slice(&28u32.to_le_bytes());
    out.write_all(&shb)?;
    let mut idb = Vec::with_capacity(20);
    idb.extend_from_slice(&1u32.to_le_bytes());
    idb.extend_from_slice(&20u32.to_le_bytes());
    idb.extend_from_slice(&1u16.to_le_bytes());
    idb.extend_from_slice(&0u16.to_le_bytes());
    idb.extend_from_slice(&0u32.to_le_bytes());
    idb.extend_from_slice(&20u32.to_le_bytes());
    for _ in 0..interfaces {
        out.write_all(&idb)?;
    }
    out.flush()
}
