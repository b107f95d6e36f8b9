//! Synthetic request/response conversations with known round-trip times, written as pcap
//! files (for `interface: file` and for tcpreplay).

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::path::Path;

use metro_testkit::frame::{TcpFrame, VlanTag, flags};
use metro_testkit::pcap::PcapWriter;

/// One frame and its time stamp.
pub struct Frame {
    pub ts: i64,
    pub data: Vec<u8>,
}

/// A TCP conversation `client:40000` -> `server:443`: handshake, then `requests` requests of
/// 100 bytes every `gap_ms`, each answered by 300 bytes `rtt_ms` later (the answer carries
/// the ACK), each answer acknowledged 0.05 ms later; FIN at the end. Optionally VLAN-tagged.
#[allow(clippy::too_many_arguments)]
pub fn conversation(
    client: [u8; 4],
    server: [u8; 4],
    client_mac: [u8; 6],
    server_mac: [u8; 6],
    start: i64,
    rtt_ms: f64,
    requests: u32,
    gap_ms: f64,
    vlan: Option<u16>,
) -> Vec<Frame> {
    let tags: Vec<VlanTag> = vlan.map(VlanTag::dot1q).into_iter().collect();
    let rtt = (rtt_ms * 1e6) as i64;
    let gap = (gap_ms * 1e6) as i64;
    let (c, s) = (Ipv4Addr::from(client), Ipv4Addr::from(server));
    let up = |seq: u32, ack: u32, fl: u16, len: usize| {
        TcpFrame::v4(c, 40000, s, 443)
            .ethernet(client_mac, server_mac, &tags)
            .seq(seq)
            .ack(ack)
            .flags(fl)
            .payload_len(len)
            .to_vec()
    };
    let down = |seq: u32, ack: u32, fl: u16, len: usize| {
        TcpFrame::v4(s, 443, c, 40000)
            .ethernet(server_mac, client_mac, &tags)
            .seq(seq)
            .ack(ack)
            .flags(fl)
            .payload_len(len)
            .to_vec()
    };
    let mut out = Vec::new();
    let (mut cs, mut ss) = (1000u32, 5000u32);
    let mut t = start;
    out.push(Frame {
        ts: t,
        data: up(cs, 0, flags::SYN, 0),
    });
    cs += 1;
    out.push(Frame {
        ts: t + rtt,
        data: down(ss, cs, flags::SYN | flags::ACK, 0),
    });
    ss += 1;
    out.push(Frame {
        ts: t + rtt + 50_000,
        data: up(cs, ss, flags::ACK, 0),
    });
    t += rtt + gap;
    for _ in 0..requests {
        out.push(Frame {
            ts: t,
            data: up(cs, ss, flags::ACK | flags::PSH, 100),
        });
        cs += 100;
        out.push(Frame {
            ts: t + rtt,
            data: down(ss, cs, flags::ACK | flags::PSH, 300),
        });
        ss += 300;
        out.push(Frame {
            ts: t + rtt + 50_000,
            data: up(cs, ss, flags::ACK, 0),
        });
        t += gap;
    }
    out.push(Frame {
        ts: t,
        data: up(cs, ss, flags::ACK | flags::FIN, 0),
    });
    cs += 1;
    out.push(Frame {
        ts: t + rtt,
        data: down(ss, cs, flags::ACK | flags::FIN, 0),
    });
    ss += 1;
    out.push(Frame {
        ts: t + rtt + 50_000,
        data: up(cs, ss, flags::ACK, 0),
    });
    out
}

/// Write frames (sorted by time) as a microsecond pcap.
pub fn write_pcap(path: &Path, frames: &mut [Frame]) {
    frames.sort_by_key(|f| f.ts);
    let file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
    let mut w = PcapWriter::micros(file, metro_testkit::frame::LINKTYPE_ETHERNET, 65535).unwrap();
    for f in frames.iter() {
        w.write_packet(f.ts, &f.data, f.data.len() as u32).unwrap();
    }
    w.into_inner().unwrap();
}
