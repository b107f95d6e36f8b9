//! The traffic simulation behind the generator: a discrete-event model of many TCP
//! connections as seen from one capture point.
//!
//! Every connection has two endpoints, each at a fixed round-trip time from the capture
//! point (a few tens of µs for the host that captures, a drawn network RTT for the remote
//! one). A packet seen at the capture point at `t` makes its receiver react at `t + rtt` in
//! capture-point time, so the model never needs one-way delays and the true RTT of every
//! sample is known. Endpoints run a small TCP: handshake, request/response or bulk messages,
//! slow start up to a per-connection window cap, pacing at a per-connection bottleneck rate,
//! delayed ACKs (every second segment or 40 ms), one loss at a time recovered by fast
//! retransmit (three duplicate ACKs, with SACK when negotiated) or RTO, RFC 7323 timestamps
//! with the TS.Recent rule, FIN or RST close. A closed connection's slot starts a new one,
//! so the number of concurrent connections stays as asked.
//!
//! One timing wheel orders all pending events by (time, insertion order): the output is a
//! pure function of the configuration. All random durations are whole microseconds, so a
//! microsecond pcap holds the exact times and the ground truth is exact.

use std::io::{self, Write};
use std::net::{Ipv4Addr, Ipv6Addr};

use metro_core::seq::{SeqNum, TsVal};

use super::rng::{Class, Prob, Rng, class, mix};
use super::wheel::{Timed, Wheel};
use super::{ConnTruth, GenConfig, GenSummary};
use crate::frame::{TcpFrame, VlanTag, flags};
use crate::pcap::PcapWriter;

const US: u64 = 1_000;
const MS: u64 = 1_000_000;
const SEC: u64 = 1_000_000_000;

const CLIENT: usize = 0;
const SERVER: usize = 1;

/// Delayed-ACK timer (Linux's minimum; the usual value once the connection is past quickack).
const DELACK: u64 = 40 * MS;
/// Initial SYN retransmission timeout.
const SYN_RTO: u64 = SEC;
const MIN_RTO: u64 = 200 * MS;

// Distributions, all in µs or bytes. Piecewise uniform: (weight, lo, hi).
/// Round trip from the capture point to a remote host.
const REMOTE_RTT_US: &[Class] = &[
    class(150, 200, 2_000),
    class(250, 2_000, 10_000),
    class(350, 10_000, 60_000),
    class(200, 60_000, 200_000),
    class(50, 200_000, 600_000),
];
/// Round trip from the capture point into the capturing host's own stack.
const LOCAL_RTT_US: &[Class] = &[class(1, 20, 300)];
/// Server time from the end of a request to the first byte of its response.
const APP_DELAY_US: &[Class] = &[
    class(600, 20, 500),
    class(300, 500, 5_000),
    class(100, 5_000, 60_000),
];
/// Client time between a response and the next request.
/// Mean about 5 s: most keep-alive connections are idle most of the time, so a busy server's
/// 100k connections make a few hundred thousand packets per second, not tens of millions.
const THINK_US: &[Class] = &[
    class(200, 1_000, 100_000),
    class(400, 100_000, 2_000_000),
    class(400, 2_000_000, 20_000_000),
];
const REQUEST_BYTES: &[Class] = &[
    class(700, 50, 600),
    class(250, 600, 3_000),
    class(50, 3_000, 30_000),
];
/// Mean about 20 KB (web objects, API responses, the odd download).
const RESPONSE_BYTES: &[Class] = &[
    class(600, 100, 2_000),
    class(300, 2_000, 20_000),
    class(95, 20_000, 200_000),
    class(5, 200_000, 2_000_000),
];
const BULK_BYTES: &[Class] = &[class(1, 1_000_000, 20_000_000)];
/// Transactions on one request/response connection (keep-alive, RPC channels).
const TXNS: &[Class] = &[class(300, 1, 3), class(400, 3, 30), class(300, 30, 300)];
/// Time to put one full-size segment on the wire at the connection's bottleneck.
const GAP_PER_MSS_US: &[Class] = &[
    class(300, 2, 12),
    class(400, 12, 120),
    class(300, 120, 1_200),
];
/// Server ports and their weights; a server index always maps to the same port.
const SERVER_PORTS: &[(u32, u16)] = &[
    (50, 443),
    (15, 80),
    (10, 8080),
    (10, 5432),
    (10, 6379),
    (5, 22),
];

const LOCAL_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0x01];
const ROUTER_MAC: [u8; 6] = [0x02, 0x00, 0x5e, 0x10, 0x00, 0xfe];

/// Client addresses: each address carries this many ports before the next address is used.
const PORTS_PER_CLIENT: u64 = 50_000;

/// Probabilities converted once from the configuration.
struct Params {
    ipv6: Prob,
    vlan: Prob,
    timestamps: Prob,
    sack: Prob,
    loss: Prob,
    bulk: Prob,
    client_side: Prob,
    midpath: Prob,
    midstream: Prob,
    rst: Prob,
    half: Prob,
    no_jitter: Prob,
    tunnel_mss: Prob,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventKind {
    /// Start one of the connections open from the beginning in this slot.
    Start,
    /// Start the slot's next connection (the previous one closed).
    Restart,
    /// A segment reaches endpoint `ep` (in capture-point time: its reaction is seen now).
    Deliver,
    /// Pacer: `ep` may send its next data segment.
    Send,
    /// `ep`'s application starts a message.
    AppSend,
    /// `ep`'s delayed-ACK timer (valid if the event's `token` is the current one).
    DelAck,
    /// `ep`'s retransmission timer.
    Rto,
    /// `ep` closes the connection.
    Close,
}

/// One pending event, at `time_us` µs after the start.
#[derive(Clone, Copy, Debug)]
struct Ev {
    time_us: u64,
    slot: u32,
    epoch: u16,
    kind: EventKind,
    ep: u8,
    flags: u16,
    seq: SeqNum,
    end: SeqNum,
    ack: SeqNum,
    tsval: TsVal,
    /// Which delayed-ACK timer a `DelAck` event belongs to.
    token: u32,
}

impl Ev {
    fn time(&self) -> u64 {
        self.time_us * US
    }
}

impl Timed for Ev {
    fn time_us(&self) -> u64 {
        self.time_us
    }
}

/// One endpoint's TCP state: its sequence space and header fields here, the mechanisms
/// that change them (congestion control, the one loss at a time, the receiver's
/// out-of-order range, delayed ACKs, pacing) in parts of their own.
#[derive(Clone, Debug, Default)]
struct Ep {
    iss: SeqNum,
    snd_una: SeqNum,
    snd_nxt: SeqNum,
    /// End of the message being sent; equal to `snd_nxt` once it is all sent.
    msg_end: SeqNum,
    rcv_nxt: SeqNum,
    last_ack_sent: SeqNum,
    /// This endpoint's timestamp clock at the start of the capture (it ticks every ms).
    ts_base: TsVal,
    ts_recent: TsVal,
    /// Round trip between the capture point and this endpoint, ns (a whole number of µs).
    rtt: u64,
    /// Latest time a segment was scheduled to reach this endpoint: no reordering.
    last_arrival: u64,
    window: u16,
    ip_id: u16,
    ttl: u8,
    /// A message is being sent whose completion the peer has not yet noticed.
    msg_open: bool,
    fin_sent: bool,
    /// On the capturing host (its losses happen after the capture point).
    local: bool,
    cc: Congestion,
    loss: Loss,
    ooo: OutOfOrder,
    delack: DelayedAck,
    pacer: Pacer,
}

/// Congestion window, in segments.
#[derive(Clone, Debug, Default)]
struct Congestion {
    cwnd: u32,
    ssthresh: u32,
    /// Ceiling of `cwnd` (drawn per connection: the receive window, in effect).
    max_cwnd: u32,
    /// Segments acknowledged towards the next increase in congestion avoidance.
    acc: u32,
    dupacks: u8,
}

/// The one segment of this sender lost at a time.
#[derive(Clone, Debug, Default)]
struct Loss {
    seq: SeqNum,
    len: u32,
    /// A segment is lost and not yet retransmitted.
    pending: bool,
}

/// The receiver's single out-of-order range (data above `rcv_nxt`).
#[derive(Clone, Debug, Default)]
struct OutOfOrder {
    start: SeqNum,
    end: SeqNum,
    held: bool,
}

/// The delayed-ACK timer.
#[derive(Clone, Debug, Default)]
struct DelayedAck {
    /// Identifies the armed timer, so that a stale one does nothing.
    token: u32,
    armed: bool,
    /// Segments received and not yet acknowledged.
    unacked: u8,
}

/// Spacing of data segments.
#[derive(Clone, Debug, Default)]
struct Pacer {
    next_send: u64,
    /// Time between two full segments.
    gap: u64,
    armed: bool,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Idle,
    SynSent,
    Established,
    Closed,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Bulk {
    #[default]
    None,
    Download,
    Upload,
}

/// One connection slot.
#[derive(Clone, Debug, Default)]
struct ConnSlot {
    ep: [Ep; 2],
    rng: Rng,
    serial: u64,
    slot: u32,
    epoch: u16,
    phase: Phase,
    bulk: Bulk,
    v6: bool,
    ts: bool,
    sack: bool,
    /// VLAN id, 0 = untagged.
    vlan: u16,
    server: u32,
    client_port: u16,
    server_port: u16,
    /// Payload bytes per full segment (MSS less the timestamp option).
    mss: u32,
    /// MSS option value announced in SYNs.
    mss_opt: u16,
    txn_left: u32,
}

/// One segment to transmit.
#[derive(Clone, Copy, Default)]
struct Tx {
    seq: SeqNum,
    /// Payload bytes.
    len: u32,
    flags: u16,
    /// Deliver to the peer (false: lost).
    deliver: bool,
    /// One SACK block to send (if the connection negotiated SACK).
    sack: Option<(SeqNum, SeqNum)>,
}

struct Out<W: Write> {
    pcap: PcapWriter<W>,
    buf: Vec<u8>,
    written: u64,
    target: u64,
    start_ns: i64,
    bytes: u64,
}

struct Sim<'t, W: Write> {
    seed: u64,
    servers: u64,
    churn: bool,
    params: Params,
    queue: Wheel<Ev>,
    serial: u64,
    out: Out<W>,
    truth: Option<&'t mut dyn FnMut(&ConnTruth)>,
    sum: GenSummary,
    last_time: u64,
}

/// Runs the simulation until `cfg.packets` packets are written.
pub(super) fn run<W: Write>(
    cfg: &GenConfig,
    out: W,
    truth: Option<&mut dyn FnMut(&ConnTruth)>,
) -> io::Result<GenSummary> {
    let pcap = if cfg.nanos {
        PcapWriter::nanos(out, crate::frame::LINKTYPE_ETHERNET, cfg.snaplen_or_max())?
    } else {
        PcapWriter::micros(out, crate::frame::LINKTYPE_ETHERNET, cfg.snaplen_or_max())?
    };
    let params = Params {
        ipv6: Prob::new(cfg.ipv6),
        vlan: Prob::new(cfg.vlan),
        timestamps: Prob::new(cfg.timestamps),
        sack: Prob::new(cfg.sack),
        loss: Prob::new(cfg.loss),
        bulk: Prob::new(cfg.bulk),
        client_side: Prob::new(cfg.client_side),
        midpath: Prob::new(cfg.midpath),
        midstream: Prob::new(cfg.midstream),
        rst: Prob::new(0.05),
        half: Prob::new(0.5),
        no_jitter: Prob::new(0.75),
        tunnel_mss: Prob::new(0.1),
    };
    let slots = cfg.connections.max(1) as usize;
    let mut ctx = Sim {
        seed: cfg.seed,
        servers: u64::from(cfg.servers.max(1)),
        churn: cfg.churn,
        params,
        queue: Wheel::new(),
        serial: 0,
        out: Out {
            pcap,
            buf: Vec::with_capacity(2048),
            written: 0,
            target: cfg.packets,
            start_ns: cfg.start_ns,
            bytes: 0,
        },
        truth,
        sum: GenSummary::default(),
        last_time: 0,
    };
    let mut conns: Vec<ConnSlot> = Vec::with_capacity(slots);
    // Initial connections appear over the ramp, in slot order; start times are drawn from
    // a stream of their own so that they do not depend on anything else.
    let mut ramp_rng = Rng::stream(cfg.seed, u64::MAX);
    let ramp_us = cfg.ramp_us.max(1);
    for slot in 0..slots {
        conns.push(ConnSlot {
            slot: slot as u32,
            ..ConnSlot::default()
        });
        let at = ramp_rng.below(ramp_us) * US;
        ctx.schedule_simple(&conns[slot], at, EventKind::Start, 0);
    }
    while ctx.out.written < ctx.out.target {
        let Some(ev) = ctx.queue.pop() else { break };
        let conn = &mut conns[ev.slot as usize];
        if conn.epoch != ev.epoch {
            continue;
        }
        let now = ev.time();
        ctx.last_time = now;
        ctx.handle(conn, &ev, now)?;
    }
    ctx.out.pcap.flush()?;
    let mut sum = ctx.sum;
    sum.packets = ctx.out.written;
    sum.bytes = ctx.out.bytes;
    sum.duration_ns = ctx.last_time;
    Ok(sum)
}

/// The segment fields an event carries.
#[derive(Clone, Copy, Default)]
struct Seg {
    flags: u16,
    seq: SeqNum,
    end: SeqNum,
    ack: SeqNum,
    tsval: TsVal,
}

impl<W: Write> Sim<'_, W> {
    fn schedule(&mut self, conn: &ConnSlot, at: u64, kind: EventKind, ep: usize, seg: Seg) {
        self.schedule_event(conn, at, kind, ep, seg, 0);
    }

    fn schedule_event(
        &mut self,
        conn: &ConnSlot,
        at: u64,
        kind: EventKind,
        ep: usize,
        seg: Seg,
        token: u32,
    ) {
        debug_assert!(at.is_multiple_of(US));
        self.queue.push(Ev {
            time_us: at / US,
            slot: conn.slot,
            epoch: conn.epoch,
            kind,
            ep: ep as u8,
            flags: seg.flags,
            seq: seg.seq,
            end: seg.end,
            ack: seg.ack,
            tsval: seg.tsval,
            token,
        });
    }

    fn schedule_simple(&mut self, conn: &ConnSlot, at: u64, kind: EventKind, ep: usize) {
        self.schedule(conn, at, kind, ep, Seg::default());
    }

    fn handle(&mut self, conn: &mut ConnSlot, ev: &Ev, now: u64) -> io::Result<()> {
        let side = ev.ep as usize;
        match ev.kind {
            EventKind::Start => self.start(conn, now, true),
            EventKind::Restart => self.start(conn, now, false),
            EventKind::Deliver => {
                let seg = Seg {
                    flags: ev.flags,
                    seq: ev.seq,
                    end: ev.end,
                    ack: ev.ack,
                    tsval: ev.tsval,
                };
                self.deliver(conn, side, now, seg)
            }
            EventKind::Send => self.send(conn, side, now),
            EventKind::AppSend => {
                self.app_send(conn, side, now);
                Ok(())
            }
            EventKind::DelAck => {
                if conn.ep[side].delack.armed && conn.ep[side].delack.token == ev.token {
                    self.emit_ack(conn, side, now, None)?;
                }
                Ok(())
            }
            EventKind::Rto => self.rto(conn, side, now),
            EventKind::Close => self.close(conn, side, now),
        }
    }

    /// (Re)initialises the slot with a new connection and sends its SYN (or, for some of the
    /// connections present when the capture starts, its first request: the capture began
    /// after their handshake).
    fn start(&mut self, conn: &mut ConnSlot, now: u64, initial: bool) -> io::Result<()> {
        let serial = self.serial;
        self.serial += 1;
        self.sum.connections += 1;
        let mut rng = Rng::stream(self.seed, serial);
        let params = &self.params;
        let v6 = rng.chance(params.ipv6);
        let ts = rng.chance(params.timestamps);
        let sack = rng.chance(params.sack);
        let vlan = if rng.chance(params.vlan) {
            100 + rng.below(8) as u16
        } else {
            0
        };
        let server = rng.below(self.servers) as u32;
        let client_local = rng.chance(params.client_side);
        let midpath = !client_local && rng.chance(params.midpath);
        let server_local = !client_local && !midpath;
        let bulk = if rng.chance(params.bulk) {
            if rng.chance(params.half) {
                Bulk::Download
            } else {
                Bulk::Upload
            }
        } else {
            Bulk::None
        };
        let txn_left = if bulk == Bulk::None {
            rng.pick(TXNS) as u32
        } else {
            rng.range(1, 3) as u32
        };
        let txn_left = if self.churn { txn_left } else { u32::MAX };
        let mut mss_opt: u16 = if v6 { 1440 } else { 1460 };
        if rng.chance(params.tunnel_mss) {
            mss_opt -= 80;
        }
        let mss = u32::from(mss_opt) - if ts { 12 } else { 0 };
        let midstream = initial && rng.chance(params.midstream);

        let gap = rng.pick(GAP_PER_MSS_US) * US;
        let max_cwnd = rng.range(10, 40) as u32;
        let rtt_client = if client_local {
            rng.pick(LOCAL_RTT_US)
        } else {
            rng.pick(REMOTE_RTT_US)
        } * US;
        let rtt_server = if server_local {
            rng.pick(LOCAL_RTT_US) * US
        } else {
            // A remote server is always at the same distance: its samples aggregate sensibly.
            Rng::stream(self.seed ^ 0x5e5e_5e5e, u64::from(server)).pick(REMOTE_RTT_US) * US
        };
        let ep = |local: bool, rtt: u64, rng: &mut Rng| {
            let iss = SeqNum::new(rng.next_u32());
            let windows_like = !ts;
            let ttl = match (local, windows_like) {
                (true, false) => 64,
                (true, true) => 128,
                (false, false) => 64 - rng.range(3, 20) as u8,
                (false, true) => 128 - rng.range(3, 20) as u8,
            };
            Ep {
                iss,
                snd_una: iss,
                snd_nxt: iss,
                msg_end: iss,
                ts_base: TsVal::new(rng.next_u32()),
                cc: Congestion {
                    cwnd: 10,
                    ssthresh: max_cwnd,
                    max_cwnd,
                    ..Congestion::default()
                },
                rtt,
                pacer: Pacer {
                    gap,
                    ..Pacer::default()
                },
                window: rng.range(500, 3000) as u16,
                ip_id: rng.next_u32() as u16,
                ttl,
                local,
                ..Ep::default()
            }
        };
        let client = ep(client_local, rtt_client, &mut rng);
        let srv = ep(server_local, rtt_server, &mut rng);
        let port = server_port(server);
        *conn = ConnSlot {
            ep: [client, srv],
            rng,
            serial,
            slot: conn.slot,
            epoch: conn.epoch.wrapping_add(1),
            phase: Phase::SynSent,
            bulk,
            v6,
            ts,
            sack,
            vlan,
            server,
            client_port: (10_000 + serial % PORTS_PER_CLIENT) as u16,
            server_port: port,
            mss,
            mss_opt,
            txn_left,
        };
        if let Some(report) = self.truth.as_mut() {
            let (client, server) = conn.addrs();
            report(&ConnTruth {
                serial,
                client: std::net::SocketAddr::new(client, conn.client_port),
                server: std::net::SocketAddr::new(server, conn.server_port),
                client_rtt_ns: rtt_client,
                server_rtt_ns: rtt_server,
                captured_at: if client_local {
                    "client"
                } else if midpath {
                    "midpath"
                } else {
                    "server"
                },
                handshake: !midstream,
            });
        }
        if midstream {
            conn.phase = Phase::Established;
            for side in [CLIENT, SERVER] {
                let peer_iss = conn.ep[1 - side].iss;
                let peer_ts = conn.ep[1 - side].ts_base;
                let host = &mut conn.ep[side];
                host.snd_una = host.iss + 1;
                host.snd_nxt = host.snd_una;
                host.msg_end = host.snd_una;
                host.rcv_nxt = peer_iss + 1;
                host.last_ack_sent = host.rcv_nxt;
                host.ts_recent = peer_ts;
            }
            // Caught mid-life, it is probably idle: its first request comes after a think time.
            let at = now + conn.rng.pick(THINK_US) * US;
            self.schedule_simple(conn, at, EventKind::AppSend, CLIENT);
            return Ok(());
        }
        self.send_syn(conn, now)
    }

    fn send_syn(&mut self, conn: &mut ConnSlot, now: u64) -> io::Result<()> {
        let lose = conn.rng.chance(self.params.loss);
        let iss = conn.ep[CLIENT].iss;
        conn.ep[CLIENT].snd_nxt = iss + 1;
        self.emit(
            conn,
            CLIENT,
            now,
            Tx {
                seq: iss,
                len: 0,
                flags: flags::SYN,
                deliver: !lose,
                sack: None,
            },
        )?;
        if lose {
            self.sum.lost += 1;
            self.schedule_simple(conn, now + SYN_RTO, EventKind::Rto, CLIENT);
        }
        Ok(())
    }

    /// Writes one segment from endpoint `side` (unless it was lost before the capture point) and
    /// schedules its arrival at the peer (unless lost).
    fn emit(&mut self, conn: &mut ConnSlot, side: usize, now: u64, host: Tx) -> io::Result<()> {
        let (seq_no, len, fl) = (host.seq, host.len, host.flags);
        let syn = fl & flags::SYN != 0;
        let has_ack = fl & flags::ACK != 0;
        let tsval = conn.ep[side].ts_base + (now / MS) as u32;
        let (ack, tsecr) = {
            let host = &mut conn.ep[side];
            host.ip_id = host.ip_id.wrapping_add(1);
            if has_ack {
                host.last_ack_sent = host.rcv_nxt;
                host.delack.unacked = 0;
                host.delack.armed = false;
                (host.rcv_nxt, host.ts_recent)
            } else {
                (SeqNum::ZERO, TsVal::ZERO)
            }
        };
        let visible = host.deliver || conn.ep[side].local;
        if visible && self.out.written < self.out.target {
            self.write_frame(
                conn, side, now, seq_no, ack, len, fl, tsval, tsecr, host.sack,
            )?;
        }
        if host.deliver {
            let end = seq_no + (len + u32::from(syn) + u32::from(fl & flags::FIN != 0));
            let peer = 1 - side;
            let rtt = conn.ep[peer].rtt;
            let jitter = if conn.rng.chance(self.params.no_jitter) {
                0
            } else {
                conn.rng.below(rtt / US / 8 + 1) * US
            };
            let at = (now + rtt + jitter).max(conn.ep[peer].last_arrival);
            conn.ep[peer].last_arrival = at;
            self.schedule(
                conn,
                at,
                EventKind::Deliver,
                peer,
                Seg {
                    flags: fl,
                    seq: seq_no,
                    end,
                    ack,
                    tsval,
                },
            );
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn write_frame(
        &mut self,
        conn: &ConnSlot,
        side: usize,
        now: u64,
        seq_no: SeqNum,
        ack: SeqNum,
        len: u32,
        fl: u16,
        tsval: TsVal,
        tsecr: TsVal,
        sack: Option<(SeqNum, SeqNum)>,
    ) -> io::Result<()> {
        let host = &conn.ep[side];
        let (client, server) = conn.addrs();
        let (src, sport, dst, dport) = if side == CLIENT {
            (client, conn.client_port, server, conn.server_port)
        } else {
            (server, conn.server_port, client, conn.client_port)
        };
        let tags = [VlanTag::dot1q(conn.vlan)];
        let vlans: &[VlanTag] = if conn.vlan != 0 { &tags } else { &[] };
        let (smac, dmac) = if host.local {
            (LOCAL_MAC, ROUTER_MAC)
        } else {
            (ROUTER_MAC, LOCAL_MAC)
        };
        let mut frame = match (src, dst) {
            (std::net::IpAddr::V4(src_ip), std::net::IpAddr::V4(dst_ip)) => {
                TcpFrame::v4(src_ip, sport, dst_ip, dport).ip_id(host.ip_id)
            }
            (std::net::IpAddr::V6(src_ip), std::net::IpAddr::V6(dst_ip)) => {
                TcpFrame::v6(src_ip, sport, dst_ip, dport)
            }
            _ => unreachable!("both endpoints share src_ip family"),
        };
        frame = frame
            .ethernet(smac, dmac, vlans)
            .seq(seq_no.get())
            .ack(ack.get())
            .flags(fl)
            .window(if fl & flags::SYN != 0 {
                64240
            } else {
                host.window
            })
            .ttl(host.ttl)
            .payload_len(len as usize);
        if conn.ts {
            let tsecr = if fl == flags::SYN { 0 } else { tsecr.get() };
            frame = frame.timestamps(tsval.get(), tsecr);
        }
        if fl & flags::SYN != 0 {
            frame = frame.mss(conn.mss_opt).wscale(7);
            if conn.sack {
                frame = frame.sack_permitted();
            }
        }
        let blocks;
        if let (Some((left, right)), true) = (sack, conn.sack) {
            blocks = [(left.get(), right.get())];
            frame = frame.sack(&blocks);
        }
        self.out.buf.clear();
        let len = frame.write(&mut self.out.buf);
        self.out
            .pcap
            .write_packet(self.out.start_ns + now as i64, &self.out.buf, len as u32)?;
        self.out.written += 1;
        self.out.bytes += len as u64;
        Ok(())
    }

    fn emit_ack(
        &mut self,
        conn: &mut ConnSlot,
        side: usize,
        now: u64,
        sack: Option<(SeqNum, SeqNum)>,
    ) -> io::Result<()> {
        let seq_no = conn.ep[side].snd_nxt;
        self.emit(
            conn,
            side,
            now,
            Tx {
                seq: seq_no,
                len: 0,
                flags: flags::ACK,
                deliver: true,
                sack,
            },
        )
    }

    /// A segment from the peer reaches endpoint `side`.
    fn deliver(&mut self, conn: &mut ConnSlot, side: usize, now: u64, seg: Seg) -> io::Result<()> {
        if conn.phase == Phase::Closed || seg.flags & flags::RST != 0 {
            return Ok(());
        }
        if seg.flags & flags::SYN != 0 {
            if seg.flags & flags::ACK == 0 {
                // Server: answer the SYN.
                let host = &mut conn.ep[side];
                host.rcv_nxt = seg.end;
                host.ts_recent = seg.tsval;
                let iss = host.iss;
                host.snd_nxt = iss + 1;
                return self.emit(
                    conn,
                    side,
                    now,
                    Tx {
                        seq: iss,
                        len: 0,
                        flags: flags::SYN | flags::ACK,
                        deliver: true,
                        sack: None,
                    },
                );
            }
            if conn.phase != Phase::SynSent {
                return Ok(());
            }
            let host = &mut conn.ep[side];
            host.rcv_nxt = seg.end;
            host.ts_recent = seg.tsval;
            host.snd_una = seg.ack;
            host.msg_end = host.snd_nxt;
            conn.phase = Phase::Established;
            self.emit_ack(conn, side, now, None)?;
            let at = now + conn.rng.range(0, 200) * US;
            self.schedule_simple(conn, at, EventKind::AppSend, CLIENT);
            return Ok(());
        }
        let data = seg.end != seg.seq;
        if seg.flags & flags::ACK != 0 {
            self.on_ack(conn, side, now, seg.ack, !data)?;
        }
        if data {
            self.on_data(conn, side, now, seg)?;
        }
        Ok(())
    }

    fn on_ack(
        &mut self,
        conn: &mut ConnSlot,
        side: usize,
        now: u64,
        ack: SeqNum,
        pure: bool,
    ) -> io::Result<()> {
        let mss = conn.mss;
        let host = &mut conn.ep[side];
        if ack.gt(host.snd_una) && ack.le(host.snd_nxt) {
            let segs = ack.wrapping_diff(host.snd_una).div_ceil(mss);
            host.snd_una = ack;
            host.cc.dupacks = 0;
            if host.cc.cwnd < host.cc.ssthresh {
                host.cc.cwnd = (host.cc.cwnd + segs).min(host.cc.max_cwnd);
            } else {
                host.cc.acc += segs;
                if host.cc.acc >= host.cc.cwnd {
                    host.cc.acc = 0;
                    host.cc.cwnd = (host.cc.cwnd + 1).min(host.cc.max_cwnd);
                }
            }
        } else if pure && ack == host.snd_una && host.snd_nxt != host.snd_una {
            host.cc.dupacks = host.cc.dupacks.saturating_add(1);
            if host.cc.dupacks == 3 && host.loss.pending && host.loss.seq == host.snd_una {
                host.cc.ssthresh = (host.cc.cwnd / 2).max(2);
                host.cc.cwnd = host.cc.ssthresh;
                self.retransmit(conn, side, now)?;
            }
        }
        self.kick(conn, side, now);
        Ok(())
    }

    fn on_data(&mut self, conn: &mut ConnSlot, side: usize, now: u64, seg: Seg) -> io::Result<()> {
        let fin = seg.flags & flags::FIN != 0;
        let peer = 1 - side;
        let host = &mut conn.ep[side];
        if seg.seq == host.rcv_nxt {
            if seg.seq.le(host.last_ack_sent) {
                // RFC 7323: TS.Recent comes from the oldest segment not yet acknowledged.
                host.ts_recent = seg.tsval;
            }
            host.rcv_nxt = seg.end;
            let mut at_once = false;
            if host.ooo.held && host.rcv_nxt.ge(host.ooo.start) {
                if host.ooo.end.gt(host.rcv_nxt) {
                    host.rcv_nxt = host.ooo.end;
                }
                host.ooo.held = false;
                at_once = true;
            }
            host.delack.unacked = host.delack.unacked.saturating_add(1);
            if fin {
                return self.on_fin(conn, side, now);
            }
            let rcv_nxt = host.rcv_nxt;
            if conn.ep[peer].msg_open && conn.ep[peer].msg_end == rcv_nxt {
                conn.ep[peer].msg_open = false;
                self.on_message(conn, side, now);
            }
            let host = &mut conn.ep[side];
            if at_once || host.delack.unacked >= 2 {
                self.emit_ack(conn, side, now, None)?;
            } else if !host.delack.armed {
                host.delack.armed = true;
                host.delack.token = host.delack.token.wrapping_add(1);
                let token = host.delack.token;
                self.schedule_event(
                    conn,
                    now + DELACK,
                    EventKind::DelAck,
                    side,
                    Seg::default(),
                    token,
                );
            }
        } else if seg.seq.gt(host.rcv_nxt) {
            if !host.ooo.held {
                host.ooo.held = true;
                host.ooo.start = seg.seq;
                host.ooo.end = seg.end;
            } else if seg.end.gt(host.ooo.end) {
                host.ooo.end = seg.end;
            }
            let block = (host.ooo.start, host.ooo.end);
            self.emit_ack(conn, side, now, Some(block))?;
        } else {
            self.emit_ack(conn, side, now, None)?;
        }
        Ok(())
    }

    /// Endpoint `side` has received a whole message from its peer.
    fn on_message(&mut self, conn: &mut ConnSlot, side: usize, now: u64) {
        if side == SERVER {
            let at = now + conn.rng.pick(APP_DELAY_US) * US;
            self.schedule_simple(conn, at, EventKind::AppSend, SERVER);
        } else if conn.txn_left > 1 {
            conn.txn_left -= 1;
            let at = now + conn.rng.pick(THINK_US) * US;
            self.schedule_simple(conn, at, EventKind::AppSend, CLIENT);
        } else {
            conn.txn_left = 0;
            let at = now + conn.rng.range(0, 2_000) * US;
            self.schedule_simple(conn, at, EventKind::Close, CLIENT);
        }
    }

    fn on_fin(&mut self, conn: &mut ConnSlot, side: usize, now: u64) -> io::Result<()> {
        if !conn.ep[side].fin_sent {
            let host = &mut conn.ep[side];
            host.fin_sent = true;
            let seq_no = host.snd_nxt;
            host.snd_nxt = seq_no + 1;
            return self.emit(
                conn,
                side,
                now,
                Tx {
                    seq: seq_no,
                    len: 0,
                    flags: flags::FIN | flags::ACK,
                    deliver: true,
                    sack: None,
                },
            );
        }
        self.emit_ack(conn, side, now, None)?;
        self.finish(conn, now);
        Ok(())
    }

    /// The connection is over: the slot starts a new one a little later.
    fn finish(&mut self, conn: &mut ConnSlot, now: u64) {
        conn.phase = Phase::Closed;
        let at = now + conn.rng.range(1_000, 100_000) * US;
        self.schedule_simple(conn, at, EventKind::Restart, 0);
    }

    fn app_send(&mut self, conn: &mut ConnSlot, side: usize, now: u64) {
        if conn.phase != Phase::Established {
            return;
        }
        let size = match (side, conn.bulk) {
            (CLIENT, Bulk::Upload) | (SERVER, Bulk::Download) => conn.rng.pick(BULK_BYTES),
            (CLIENT, _) | (SERVER, Bulk::Upload) => conn.rng.pick(REQUEST_BYTES),
            _ => conn.rng.pick(RESPONSE_BYTES),
        };
        let host = &mut conn.ep[side];
        host.msg_end = host.snd_nxt + size as u32;
        host.msg_open = true;
        self.kick(conn, side, now);
    }

    /// Arms the pacer if `side` has new data and the window allows a segment.
    fn kick(&mut self, conn: &mut ConnSlot, side: usize, now: u64) {
        let mss = conn.mss;
        let host = &mut conn.ep[side];
        if host.pacer.armed || !host.can_send(mss) {
            return;
        }
        host.pacer.armed = true;
        let at = now.max(host.pacer.next_send);
        self.schedule_simple(conn, at, EventKind::Send, side);
    }

    fn send(&mut self, conn: &mut ConnSlot, side: usize, now: u64) -> io::Result<()> {
        let mss = conn.mss;
        let host = &mut conn.ep[side];
        host.pacer.armed = false;
        if conn.phase != Phase::Established || !host.can_send(mss) {
            return Ok(());
        }
        let remaining = host.msg_end.wrapping_diff(host.snd_nxt);
        let len = remaining.min(mss);
        let last = len == remaining;
        let seq_no = host.snd_nxt;
        let lose = !host.loss.pending && conn.rng.chance(self.params.loss);
        let host = &mut conn.ep[side];
        host.snd_nxt = seq_no + len;
        host.pacer.next_send = now
            + (host.pacer.gap * u64::from(len) / u64::from(mss))
                .div_ceil(US)
                .max(1)
                * US;
        let fl = flags::ACK | if last { flags::PSH } else { 0 };
        if lose {
            host.loss.pending = true;
            host.loss.seq = seq_no;
            host.loss.len = len;
            let rto = (2 * (conn.ep[0].rtt + conn.ep[1].rtt)).max(MIN_RTO) + 10 * MS;
            self.sum.lost += 1;
            self.schedule_simple(conn, now + rto, EventKind::Rto, side);
        }
        self.emit(
            conn,
            side,
            now,
            Tx {
                seq: seq_no,
                len,
                flags: fl,
                deliver: !lose,
                sack: None,
            },
        )?;
        if !last {
            self.kick(conn, side, now);
        }
        Ok(())
    }

    fn retransmit(&mut self, conn: &mut ConnSlot, side: usize, now: u64) -> io::Result<()> {
        let host = &mut conn.ep[side];
        host.loss.pending = false;
        let (seq_no, len) = (host.loss.seq, host.loss.len);
        let fl = flags::ACK
            | if seq_no + len == host.msg_end {
                flags::PSH
            } else {
                0
            };
        self.sum.retransmits += 1;
        self.emit(
            conn,
            side,
            now,
            Tx {
                seq: seq_no,
                len,
                flags: fl,
                deliver: true,
                sack: None,
            },
        )
    }

    fn rto(&mut self, conn: &mut ConnSlot, side: usize, now: u64) -> io::Result<()> {
        if conn.phase == Phase::SynSent && side == CLIENT {
            self.sum.retransmits += 1;
            let iss = conn.ep[CLIENT].iss;
            return self.emit(
                conn,
                CLIENT,
                now,
                Tx {
                    seq: iss,
                    len: 0,
                    flags: flags::SYN,
                    deliver: true,
                    sack: None,
                },
            );
        }
        let host = &mut conn.ep[side];
        if conn.phase == Phase::Established && host.loss.pending && host.snd_una.le(host.loss.seq) {
            host.cc.ssthresh = (host.cc.cwnd / 2).max(2);
            host.cc.cwnd = 2;
            self.retransmit(conn, side, now)?;
        }
        Ok(())
    }

    fn close(&mut self, conn: &mut ConnSlot, side: usize, now: u64) -> io::Result<()> {
        if conn.phase != Phase::Established {
            return Ok(());
        }
        let seq_no = conn.ep[side].snd_nxt;
        if conn.rng.chance(self.params.rst) {
            self.emit(
                conn,
                side,
                now,
                Tx {
                    seq: seq_no,
                    len: 0,
                    flags: flags::RST | flags::ACK,
                    deliver: false,
                    sack: None,
                },
            )?;
            self.finish(conn, now);
            return Ok(());
        }
        let host = &mut conn.ep[side];
        host.fin_sent = true;
        host.snd_nxt = seq_no + 1;
        host.msg_end = host.snd_nxt;
        self.emit(
            conn,
            side,
            now,
            Tx {
                seq: seq_no,
                len: 0,
                flags: flags::FIN | flags::ACK,
                deliver: true,
                sack: None,
            },
        )
    }
}

impl Ep {
    /// New data waits and the congestion window has room for the next segment.
    fn can_send(&self, mss: u32) -> bool {
        // Not ahead: all sent, or (a server between its SYN/ACK and its first message) behind.
        if self.msg_end.le(self.snd_nxt) {
            return false;
        }
        let remaining = self.msg_end.wrapping_diff(self.snd_nxt);
        let in_flight = self.snd_nxt.wrapping_diff(self.snd_una);
        in_flight + remaining.min(mss) <= self.cc.cwnd * mss
    }
}

impl ConnSlot {
    /// (client, server) addresses: clients walk through 10.0.0.0/8 (fd00:0:0:c::/64),
    /// servers through 172.16.0.0/12 (fd00:0:0:5::/64).
    fn addrs(&self) -> (std::net::IpAddr, std::net::IpAddr) {
        // +1: skip the all-zero host part.
        let ci = (self.serial / PORTS_PER_CLIENT) as u32 + 1;
        let si = self.server + 1;
        if self.v6 {
            let client = Ipv6Addr::from((0xfd00_0000_0000_000c_u128 << 64) | u128::from(ci));
            let server = Ipv6Addr::from((0xfd00_0000_0000_0005_u128 << 64) | u128::from(si));
            (client.into(), server.into())
        } else {
            let client = Ipv4Addr::from(0x0a00_0000 | (ci & 0x00ff_ffff));
            let server = Ipv4Addr::from(0xac10_0000 | (si & 0x000f_ffff));
            (client.into(), server.into())
        }
    }
}

/// Maps a server index to its port, by weight, the same for every run.
fn server_port(server: u32) -> u16 {
    let total: u64 = SERVER_PORTS
        .iter()
        .map(|&(weight, _)| u64::from(weight))
        .sum();
    let mut pick = mix(u64::from(server) ^ 0x706f_7274) % total;
    for &(weight, port) in SERVER_PORTS {
        if pick < u64::from(weight) {
            return port;
        }
        pick -= u64::from(weight);
    }
    443
}
