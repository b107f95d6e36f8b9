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

use metro_core::seq;

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
enum Kind {
    /// Start a connection in this slot.
    Start,
    /// A segment reaches endpoint `ep` (in capture-point time: its reaction is seen now).
    Deliver,
    /// Pacer: `ep` may send its next data segment.
    Send,
    /// `ep`'s application starts a message.
    AppSend,
    /// `ep`'s delayed-ACK timer (valid if `seq` is the current token).
    DelAck,
    /// `ep`'s retransmission timer.
    Rto,
    /// `ep` closes the connection.
    Close,
}

/// One pending event, at `t` µs after the start.
#[derive(Clone, Copy, Debug)]
struct Ev {
    t: u64,
    slot: u32,
    epoch: u16,
    kind: Kind,
    ep: u8,
    flags: u16,
    seq: u32,
    end: u32,
    ack: u32,
    tsval: u32,
}

impl Ev {
    fn time(&self) -> u64 {
        self.t * US
    }
}

impl Timed for Ev {
    fn time_us(&self) -> u64 {
        self.t
    }
}

/// One endpoint's TCP state.
#[derive(Clone, Debug, Default)]
struct Ep {
    iss: u32,
    snd_una: u32,
    snd_nxt: u32,
    /// End of the message being sent; equal to `snd_nxt` once it is all sent.
    msg_end: u32,
    rcv_nxt: u32,
    ooo_start: u32,
    ooo_end: u32,
    last_ack_sent: u32,
    ts_base: u32,
    ts_recent: u32,
    lost_seq: u32,
    lost_len: u32,
    delack_token: u32,
    cwnd: u32,
    ssthresh: u32,
    max_cwnd: u32,
    cwnd_acc: u32,
    /// Round trip between the capture point and this endpoint, ns (a whole number of µs).
    rtt: u64,
    /// Latest time a segment was scheduled to reach this endpoint: no reordering.
    last_arrival: u64,
    next_send: u64,
    gap: u64,
    window: u16,
    ip_id: u16,
    ttl: u8,
    unacked: u8,
    dupacks: u8,
    has_ooo: bool,
    lost: bool,
    delack_armed: bool,
    pacer_armed: bool,
    /// A message is being sent whose completion the peer has not yet noticed.
    msg_open: bool,
    fin_sent: bool,
    /// On the capturing host (its losses happen after the capture point).
    local: bool,
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
struct Conn {
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
    seq: u32,
    /// Payload bytes.
    len: u32,
    flags: u16,
    /// Deliver to the peer (false: lost).
    deliver: bool,
    /// One SACK block to send (if the connection negotiated SACK).
    sack: Option<(u32, u32)>,
}

struct Out<W: Write> {
    pcap: PcapWriter<W>,
    buf: Vec<u8>,
    written: u64,
    target: u64,
    start_ns: i64,
    bytes: u64,
}

struct Ctx<'t, W: Write> {
    seed: u64,
    servers: u64,
    churn: bool,
    p: Params,
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
    let p = Params {
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
    let n = cfg.connections.max(1) as usize;
    let mut ctx = Ctx {
        seed: cfg.seed,
        servers: u64::from(cfg.servers.max(1)),
        churn: cfg.churn,
        p,
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
    let mut conns: Vec<Conn> = Vec::with_capacity(n);
    // Initial connections appear over the ramp, in slot order; start times are drawn from
    // a stream of their own so that they do not depend on anything else.
    let mut ramp_rng = Rng::stream(cfg.seed, u64::MAX);
    let ramp_us = cfg.ramp_us.max(1);
    for slot in 0..n {
        conns.push(Conn {
            slot: slot as u32,
            ..Conn::default()
        });
        let t = ramp_rng.below(ramp_us) * US;
        ctx.schedule(&conns[slot], t, Kind::Start, 0, Seg::default());
    }
    while ctx.out.written < ctx.out.target {
        let Some(ev) = ctx.queue.pop() else { break };
        let c = &mut conns[ev.slot as usize];
        if c.epoch != ev.epoch {
            continue;
        }
        let now = ev.time();
        ctx.last_time = now;
        ctx.handle(c, &ev, now)?;
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
    seq: u32,
    end: u32,
    ack: u32,
    tsval: u32,
}

impl<W: Write> Ctx<'_, W> {
    fn schedule(&mut self, c: &Conn, t: u64, kind: Kind, ep: usize, s: Seg) {
        debug_assert!(t.is_multiple_of(US));
        self.queue.push(Ev {
            t: t / US,
            slot: c.slot,
            epoch: c.epoch,
            kind,
            ep: ep as u8,
            flags: s.flags,
            seq: s.seq,
            end: s.end,
            ack: s.ack,
            tsval: s.tsval,
        });
    }

    fn schedule_simple(&mut self, c: &Conn, t: u64, kind: Kind, ep: usize) {
        self.schedule(c, t, kind, ep, Seg::default());
    }

    fn handle(&mut self, c: &mut Conn, ev: &Ev, now: u64) -> io::Result<()> {
        let e = ev.ep as usize;
        match ev.kind {
            Kind::Start => self.start(c, now, ev.seq == 0),
            Kind::Deliver => {
                let s = Seg {
                    flags: ev.flags,
                    seq: ev.seq,
                    end: ev.end,
                    ack: ev.ack,
                    tsval: ev.tsval,
                };
                self.deliver(c, e, now, s)
            }
            Kind::Send => self.send(c, e, now),
            Kind::AppSend => {
                self.app_send(c, e, now);
                Ok(())
            }
            Kind::DelAck => {
                if c.ep[e].delack_armed && c.ep[e].delack_token == ev.seq {
                    self.emit_ack(c, e, now, None)?;
                }
                Ok(())
            }
            Kind::Rto => self.rto(c, e, now),
            Kind::Close => self.close(c, e, now),
        }
    }

    /// (Re)initialises the slot with a new connection and sends its SYN (or, for some of the
    /// connections present when the capture starts, its first request: the capture began
    /// after their handshake).
    fn start(&mut self, c: &mut Conn, now: u64, initial: bool) -> io::Result<()> {
        let serial = self.serial;
        self.serial += 1;
        self.sum.connections += 1;
        let mut r = Rng::stream(self.seed, serial);
        let p = &self.p;
        let v6 = r.chance(p.ipv6);
        let ts = r.chance(p.timestamps);
        let sack = r.chance(p.sack);
        let vlan = if r.chance(p.vlan) {
            100 + r.below(8) as u16
        } else {
            0
        };
        let server = r.below(self.servers) as u32;
        let client_local = r.chance(p.client_side);
        let midpath = !client_local && r.chance(p.midpath);
        let server_local = !client_local && !midpath;
        let bulk = if r.chance(p.bulk) {
            if r.chance(p.half) {
                Bulk::Download
            } else {
                Bulk::Upload
            }
        } else {
            Bulk::None
        };
        let txn_left = if bulk == Bulk::None {
            r.pick(TXNS) as u32
        } else {
            r.range(1, 3) as u32
        };
        let txn_left = if self.churn { txn_left } else { u32::MAX };
        let mut mss_opt: u16 = if v6 { 1440 } else { 1460 };
        if r.chance(p.tunnel_mss) {
            mss_opt -= 80;
        }
        let mss = u32::from(mss_opt) - if ts { 12 } else { 0 };
        let midstream = initial && r.chance(p.midstream);

        let gap = r.pick(GAP_PER_MSS_US) * US;
        let max_cwnd = r.range(10, 40) as u32;
        let rtt_client = if client_local {
            r.pick(LOCAL_RTT_US)
        } else {
            r.pick(REMOTE_RTT_US)
        } * US;
        let rtt_server = if server_local {
            r.pick(LOCAL_RTT_US) * US
        } else {
            // A remote server is always at the same distance: its samples aggregate sensibly.
            Rng::stream(self.seed ^ 0x5e5e_5e5e, u64::from(server)).pick(REMOTE_RTT_US) * US
        };
        let ep = |local: bool, rtt: u64, r: &mut Rng| {
            let iss = r.next_u32();
            let windows_like = !ts;
            let ttl = match (local, windows_like) {
                (true, false) => 64,
                (true, true) => 128,
                (false, false) => 64 - r.range(3, 20) as u8,
                (false, true) => 128 - r.range(3, 20) as u8,
            };
            Ep {
                iss,
                snd_una: iss,
                snd_nxt: iss,
                msg_end: iss,
                ts_base: r.next_u32(),
                cwnd: 10,
                ssthresh: max_cwnd,
                max_cwnd,
                rtt,
                gap,
                window: r.range(500, 3000) as u16,
                ip_id: r.next_u32() as u16,
                ttl,
                local,
                ..Ep::default()
            }
        };
        let client = ep(client_local, rtt_client, &mut r);
        let srv = ep(server_local, rtt_server, &mut r);
        let port = server_port(server);
        *c = Conn {
            ep: [client, srv],
            rng: r,
            serial,
            slot: c.slot,
            epoch: c.epoch.wrapping_add(1),
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
        if let Some(f) = self.truth.as_mut() {
            let (client, server) = c.addrs();
            f(&ConnTruth {
                serial,
                client: std::net::SocketAddr::new(client, c.client_port),
                server: std::net::SocketAddr::new(server, c.server_port),
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
            c.phase = Phase::Established;
            for e in [CLIENT, SERVER] {
                let peer_iss = c.ep[1 - e].iss;
                let peer_ts = c.ep[1 - e].ts_base;
                let x = &mut c.ep[e];
                x.snd_una = x.iss.wrapping_add(1);
                x.snd_nxt = x.snd_una;
                x.msg_end = x.snd_una;
                x.rcv_nxt = peer_iss.wrapping_add(1);
                x.last_ack_sent = x.rcv_nxt;
                x.ts_recent = peer_ts;
            }
            // Caught mid-life, it is probably idle: its first request comes after a think time.
            let t = now + c.rng.pick(THINK_US) * US;
            self.schedule_simple(c, t, Kind::AppSend, CLIENT);
            return Ok(());
        }
        self.send_syn(c, now)
    }

    fn send_syn(&mut self, c: &mut Conn, now: u64) -> io::Result<()> {
        let lose = c.rng.chance(self.p.loss);
        let iss = c.ep[CLIENT].iss;
        c.ep[CLIENT].snd_nxt = iss.wrapping_add(1);
        self.emit(
            c,
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
            self.schedule_simple(c, now + SYN_RTO, Kind::Rto, CLIENT);
        }
        Ok(())
    }

    /// Writes one segment from endpoint `e` (unless it was lost before the capture point) and
    /// schedules its arrival at the peer (unless lost).
    fn emit(&mut self, c: &mut Conn, e: usize, now: u64, x: Tx) -> io::Result<()> {
        let (seq_no, len, fl) = (x.seq, x.len, x.flags);
        let syn = fl & flags::SYN != 0;
        let has_ack = fl & flags::ACK != 0;
        let tsval = c.ep[e].ts_base.wrapping_add((now / MS) as u32);
        let (ack, tsecr) = {
            let s = &mut c.ep[e];
            s.ip_id = s.ip_id.wrapping_add(1);
            if has_ack {
                s.last_ack_sent = s.rcv_nxt;
                s.unacked = 0;
                s.delack_armed = false;
                (s.rcv_nxt, s.ts_recent)
            } else {
                (0, 0)
            }
        };
        let visible = x.deliver || c.ep[e].local;
        if visible && self.out.written < self.out.target {
            self.write_frame(c, e, now, seq_no, ack, len, fl, tsval, tsecr, x.sack)?;
        }
        if x.deliver {
            let end = seq_no.wrapping_add(len + u32::from(syn) + u32::from(fl & flags::FIN != 0));
            let peer = 1 - e;
            let rtt = c.ep[peer].rtt;
            let jitter = if c.rng.chance(self.p.no_jitter) {
                0
            } else {
                c.rng.below(rtt / US / 8 + 1) * US
            };
            let t = (now + rtt + jitter).max(c.ep[peer].last_arrival);
            c.ep[peer].last_arrival = t;
            self.schedule(
                c,
                t,
                Kind::Deliver,
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
        c: &Conn,
        e: usize,
        now: u64,
        seq_no: u32,
        ack: u32,
        len: u32,
        fl: u16,
        tsval: u32,
        tsecr: u32,
        sack: Option<(u32, u32)>,
    ) -> io::Result<()> {
        let s = &c.ep[e];
        let (client, server) = c.addrs();
        let (src, sport, dst, dport) = if e == CLIENT {
            (client, c.client_port, server, c.server_port)
        } else {
            (server, c.server_port, client, c.client_port)
        };
        let tags = [VlanTag::dot1q(c.vlan)];
        let vlans: &[VlanTag] = if c.vlan != 0 { &tags } else { &[] };
        let (smac, dmac) = if s.local {
            (LOCAL_MAC, ROUTER_MAC)
        } else {
            (ROUTER_MAC, LOCAL_MAC)
        };
        let mut f = match (src, dst) {
            (std::net::IpAddr::V4(a), std::net::IpAddr::V4(b)) => {
                TcpFrame::v4(a, sport, b, dport).ip_id(s.ip_id)
            }
            (std::net::IpAddr::V6(a), std::net::IpAddr::V6(b)) => TcpFrame::v6(a, sport, b, dport),
            _ => unreachable!("both endpoints share a family"),
        };
        f = f
            .ethernet(smac, dmac, vlans)
            .seq(seq_no)
            .ack(ack)
            .flags(fl)
            .window(if fl & flags::SYN != 0 {
                64240
            } else {
                s.window
            })
            .ttl(s.ttl)
            .payload_len(len as usize);
        if c.ts {
            f = f.timestamps(tsval, if fl == flags::SYN { 0 } else { tsecr });
        }
        if fl & flags::SYN != 0 {
            f = f.mss(c.mss_opt).wscale(7);
            if c.sack {
                f = f.sack_permitted();
            }
        }
        let blocks;
        if let (Some(b), true) = (sack, c.sack) {
            blocks = [b];
            f = f.sack(&blocks);
        }
        self.out.buf.clear();
        let n = f.write(&mut self.out.buf);
        self.out
            .pcap
            .write_packet(self.out.start_ns + now as i64, &self.out.buf, n as u32)?;
        self.out.written += 1;
        self.out.bytes += n as u64;
        Ok(())
    }

    fn emit_ack(
        &mut self,
        c: &mut Conn,
        e: usize,
        now: u64,
        sack: Option<(u32, u32)>,
    ) -> io::Result<()> {
        let seq_no = c.ep[e].snd_nxt;
        self.emit(
            c,
            e,
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

    /// A segment from the peer reaches endpoint `e`.
    fn deliver(&mut self, c: &mut Conn, e: usize, now: u64, s: Seg) -> io::Result<()> {
        if c.phase == Phase::Closed || s.flags & flags::RST != 0 {
            return Ok(());
        }
        if s.flags & flags::SYN != 0 {
            if s.flags & flags::ACK == 0 {
                // Server: answer the SYN.
                let x = &mut c.ep[e];
                x.rcv_nxt = s.end;
                x.ts_recent = s.tsval;
                let iss = x.iss;
                x.snd_nxt = iss.wrapping_add(1);
                return self.emit(
                    c,
                    e,
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
            if c.phase != Phase::SynSent {
                return Ok(());
            }
            let x = &mut c.ep[e];
            x.rcv_nxt = s.end;
            x.ts_recent = s.tsval;
            x.snd_una = s.ack;
            x.msg_end = x.snd_nxt;
            c.phase = Phase::Established;
            self.emit_ack(c, e, now, None)?;
            let t = now + c.rng.range(0, 200) * US;
            self.schedule_simple(c, t, Kind::AppSend, CLIENT);
            return Ok(());
        }
        let data = s.end != s.seq;
        if s.flags & flags::ACK != 0 {
            self.on_ack(c, e, now, s.ack, !data)?;
        }
        if data {
            self.on_data(c, e, now, s)?;
        }
        Ok(())
    }

    fn on_ack(&mut self, c: &mut Conn, e: usize, now: u64, ack: u32, pure: bool) -> io::Result<()> {
        let mss = c.mss;
        let x = &mut c.ep[e];
        if seq::gt(ack, x.snd_una) && seq::le(ack, x.snd_nxt) {
            let segs = (ack.wrapping_sub(x.snd_una)).div_ceil(mss);
            x.snd_una = ack;
            x.dupacks = 0;
            if x.cwnd < x.ssthresh {
                x.cwnd = (x.cwnd + segs).min(x.max_cwnd);
            } else {
                x.cwnd_acc += segs;
                if x.cwnd_acc >= x.cwnd {
                    x.cwnd_acc = 0;
                    x.cwnd = (x.cwnd + 1).min(x.max_cwnd);
                }
            }
        } else if pure && ack == x.snd_una && x.snd_nxt != x.snd_una {
            x.dupacks = x.dupacks.saturating_add(1);
            if x.dupacks == 3 && x.lost && x.lost_seq == x.snd_una {
                x.ssthresh = (x.cwnd / 2).max(2);
                x.cwnd = x.ssthresh;
                self.retransmit(c, e, now)?;
            }
        }
        self.kick(c, e, now);
        Ok(())
    }

    fn on_data(&mut self, c: &mut Conn, e: usize, now: u64, s: Seg) -> io::Result<()> {
        let fin = s.flags & flags::FIN != 0;
        let peer = 1 - e;
        let x = &mut c.ep[e];
        if s.seq == x.rcv_nxt {
            if seq::le(s.seq, x.last_ack_sent) {
                // RFC 7323: TS.Recent comes from the oldest segment not yet acknowledged.
                x.ts_recent = s.tsval;
            }
            x.rcv_nxt = s.end;
            let mut at_once = false;
            if x.has_ooo && seq::ge(x.rcv_nxt, x.ooo_start) {
                if seq::gt(x.ooo_end, x.rcv_nxt) {
                    x.rcv_nxt = x.ooo_end;
                }
                x.has_ooo = false;
                at_once = true;
            }
            x.unacked = x.unacked.saturating_add(1);
            if fin {
                return self.on_fin(c, e, now);
            }
            let rcv_nxt = x.rcv_nxt;
            if c.ep[peer].msg_open && c.ep[peer].msg_end == rcv_nxt {
                c.ep[peer].msg_open = false;
                self.on_message(c, e, now);
            }
            let x = &mut c.ep[e];
            if at_once || x.unacked >= 2 {
                self.emit_ack(c, e, now, None)?;
            } else if !x.delack_armed {
                x.delack_armed = true;
                x.delack_token = x.delack_token.wrapping_add(1);
                let token = x.delack_token;
                self.schedule(
                    c,
                    now + DELACK,
                    Kind::DelAck,
                    e,
                    Seg {
                        seq: token,
                        ..Seg::default()
                    },
                );
            }
        } else if seq::gt(s.seq, x.rcv_nxt) {
            if !x.has_ooo {
                x.has_ooo = true;
                x.ooo_start = s.seq;
                x.ooo_end = s.end;
            } else if seq::gt(s.end, x.ooo_end) {
                x.ooo_end = s.end;
            }
            let block = (x.ooo_start, x.ooo_end);
            self.emit_ack(c, e, now, Some(block))?;
        } else {
            self.emit_ack(c, e, now, None)?;
        }
        Ok(())
    }

    /// Endpoint `e` has received a whole message from its peer.
    fn on_message(&mut self, c: &mut Conn, e: usize, now: u64) {
        if e == SERVER {
            let t = now + c.rng.pick(APP_DELAY_US) * US;
            self.schedule_simple(c, t, Kind::AppSend, SERVER);
        } else if c.txn_left > 1 {
            c.txn_left -= 1;
            let t = now + c.rng.pick(THINK_US) * US;
            self.schedule_simple(c, t, Kind::AppSend, CLIENT);
        } else {
            c.txn_left = 0;
            let t = now + c.rng.range(0, 2_000) * US;
            self.schedule_simple(c, t, Kind::Close, CLIENT);
        }
    }

    fn on_fin(&mut self, c: &mut Conn, e: usize, now: u64) -> io::Result<()> {
        if !c.ep[e].fin_sent {
            let x = &mut c.ep[e];
            x.fin_sent = true;
            let seq_no = x.snd_nxt;
            x.snd_nxt = seq_no.wrapping_add(1);
            return self.emit(
                c,
                e,
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
        self.emit_ack(c, e, now, None)?;
        self.finish(c, now);
        Ok(())
    }

    /// The connection is over: the slot starts a new one a little later.
    fn finish(&mut self, c: &mut Conn, now: u64) {
        c.phase = Phase::Closed;
        let t = now + c.rng.range(1_000, 100_000) * US;
        self.schedule(
            c,
            t,
            Kind::Start,
            0,
            Seg {
                seq: 1,
                ..Seg::default()
            },
        );
    }

    fn app_send(&mut self, c: &mut Conn, e: usize, now: u64) {
        if c.phase != Phase::Established {
            return;
        }
        let size = match (e, c.bulk) {
            (CLIENT, Bulk::Upload) | (SERVER, Bulk::Download) => c.rng.pick(BULK_BYTES),
            (CLIENT, _) | (SERVER, Bulk::Upload) => c.rng.pick(REQUEST_BYTES),
            _ => c.rng.pick(RESPONSE_BYTES),
        };
        let x = &mut c.ep[e];
        x.msg_end = x.snd_nxt.wrapping_add(size as u32);
        x.msg_open = true;
        self.kick(c, e, now);
    }

    /// Arms the pacer if `e` has new data and the window allows a segment.
    fn kick(&mut self, c: &mut Conn, e: usize, now: u64) {
        let mss = c.mss;
        let x = &mut c.ep[e];
        if x.pacer_armed || !x.can_send(mss) {
            return;
        }
        x.pacer_armed = true;
        let t = now.max(x.next_send);
        self.schedule_simple(c, t, Kind::Send, e);
    }

    fn send(&mut self, c: &mut Conn, e: usize, now: u64) -> io::Result<()> {
        let mss = c.mss;
        let x = &mut c.ep[e];
        x.pacer_armed = false;
        if c.phase != Phase::Established || !x.can_send(mss) {
            return Ok(());
        }
        let remaining = x.msg_end.wrapping_sub(x.snd_nxt);
        let len = remaining.min(mss);
        let last = len == remaining;
        let seq_no = x.snd_nxt;
        let lose = !x.lost && c.rng.chance(self.p.loss);
        let x = &mut c.ep[e];
        x.snd_nxt = seq_no.wrapping_add(len);
        x.next_send = now
            + (x.gap * u64::from(len) / u64::from(mss))
                .div_ceil(US)
                .max(1)
                * US;
        let fl = flags::ACK | if last { flags::PSH } else { 0 };
        if lose {
            x.lost = true;
            x.lost_seq = seq_no;
            x.lost_len = len;
            let rto = (2 * (c.ep[0].rtt + c.ep[1].rtt)).max(MIN_RTO) + 10 * MS;
            self.sum.lost += 1;
            self.schedule_simple(c, now + rto, Kind::Rto, e);
        }
        self.emit(
            c,
            e,
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
            self.kick(c, e, now);
        }
        Ok(())
    }

    fn retransmit(&mut self, c: &mut Conn, e: usize, now: u64) -> io::Result<()> {
        let x = &mut c.ep[e];
        x.lost = false;
        let (seq_no, len) = (x.lost_seq, x.lost_len);
        let fl = flags::ACK
            | if seq_no.wrapping_add(len) == x.msg_end {
                flags::PSH
            } else {
                0
            };
        self.sum.retransmits += 1;
        self.emit(
            c,
            e,
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

    fn rto(&mut self, c: &mut Conn, e: usize, now: u64) -> io::Result<()> {
        if c.phase == Phase::SynSent && e == CLIENT {
            self.sum.retransmits += 1;
            let iss = c.ep[CLIENT].iss;
            return self.emit(
                c,
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
        let x = &mut c.ep[e];
        if c.phase == Phase::Established && x.lost && seq::le(x.snd_una, x.lost_seq) {
            x.ssthresh = (x.cwnd / 2).max(2);
            x.cwnd = 2;
            self.retransmit(c, e, now)?;
        }
        Ok(())
    }

    fn close(&mut self, c: &mut Conn, e: usize, now: u64) -> io::Result<()> {
        if c.phase != Phase::Established {
            return Ok(());
        }
        let seq_no = c.ep[e].snd_nxt;
        if c.rng.chance(self.p.rst) {
            self.emit(
                c,
                e,
                now,
                Tx {
                    seq: seq_no,
                    len: 0,
                    flags: flags::RST | flags::ACK,
                    deliver: false,
                    sack: None,
                },
            )?;
            self.finish(c, now);
            return Ok(());
        }
        let x = &mut c.ep[e];
        x.fin_sent = true;
        x.snd_nxt = seq_no.wrapping_add(1);
        x.msg_end = x.snd_nxt;
        self.emit(
            c,
            e,
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
        let remaining = self.msg_end.wrapping_sub(self.snd_nxt);
        if remaining == 0 || remaining > (1 << 31) {
            return false;
        }
        let in_flight = self.snd_nxt.wrapping_sub(self.snd_una);
        in_flight + remaining.min(mss) <= self.cwnd * mss
    }
}

impl Conn {
    /// (client, server) addresses: clients walk through 10.0.0.0/8 (fd00:0:0:c::/64),
    /// servers through 172.16.0.0/12 (fd00:0:0:5::/64).
    fn addrs(&self) -> (std::net::IpAddr, std::net::IpAddr) {
        // +1: skip the all-zero host part.
        let ci = (self.serial / PORTS_PER_CLIENT) as u32 + 1;
        let si = self.server + 1;
        if self.v6 {
            let c = Ipv6Addr::from((0xfd00_0000_0000_000c_u128 << 64) | u128::from(ci));
            let s = Ipv6Addr::from((0xfd00_0000_0000_0005_u128 << 64) | u128::from(si));
            (c.into(), s.into())
        } else {
            let c = Ipv4Addr::from(0x0a00_0000 | (ci & 0x00ff_ffff));
            let s = Ipv4Addr::from(0xac10_0000 | (si & 0x000f_ffff));
            (c.into(), s.into())
        }
    }
}

/// Maps a server index to its port, by weight, the same for every run.
fn server_port(server: u32) -> u16 {
    let total: u64 = SERVER_PORTS.iter().map(|&(w, _)| u64::from(w)).sum();
    let mut r = mix(u64::from(server) ^ 0x706f_7274) % total;
    for &(w, port) in SERVER_PORTS {
        if r < u64::from(w) {
            return port;
        }
        r -= u64::from(w);
    }
    443
}
