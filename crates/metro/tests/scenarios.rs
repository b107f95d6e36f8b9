//! Hand-built captures with hand-computed answers, run through the whole pipeline: pcap
//! writer -> reader -> decoder -> engine -> JSON sample lines. Each scenario states the
//! samples an expert would accept (frame numbers are 1-based, as tshark counts them).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use metro_core::engine::EngineConfig;
use metro_testkit::frame::{TcpFrame, flags::*};
use metro_testkit::pcap::PcapWriter;
use serde_json::Value;

const C: [u8; 4] = [10, 0, 0, 1];
const S: [u8; 4] = [10, 0, 0, 2];
const CP: u16 = 40000;
const SP: u16 = 80;

/// A capture under construction: frames with times in microseconds.
struct Cap {
    frames: Vec<(i64, Vec<u8>)>,
    next_id: u16,
}

#[derive(Clone, Copy)]
enum Side {
    Client,
    Server,
}

impl Cap {
    fn new() -> Cap {
        Cap {
            frames: Vec::new(),
            next_id: 1,
        }
    }

    fn frame(&mut self, from: Side) -> TcpFrame<'static> {
        let (src, sp, dst, dp) = match from {
            Side::Client => (C, CP, S, SP),
            Side::Server => (S, SP, C, CP),
        };
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        TcpFrame::v4(Ipv4Addr::from(src), sp, Ipv4Addr::from(dst), dp).ip_id(id)
    }

    /// Add a packet at `t_us` microseconds.
    fn pkt(&mut self, t_us: i64, from: Side, seq: u32, ack: u32, flags: u16, len: usize) {
        let f = self
            .frame(from)
            .seq(seq)
            .ack(ack)
            .flags(flags)
            .payload_len(len);
        self.frames.push((t_us * 1000, f.to_vec()));
    }

    /// Add a packet with the TCP timestamp option.
    #[allow(clippy::too_many_arguments)]
    fn pkt_ts(
        &mut self,
        t_us: i64,
        from: Side,
        seq: u32,
        ack: u32,
        flags: u16,
        len: usize,
        tsval: u32,
        tsecr: u32,
    ) {
        let f = self
            .frame(from)
            .seq(seq)
            .ack(ack)
            .flags(flags)
            .payload_len(len)
            .timestamps(tsval, tsecr);
        self.frames.push((t_us * 1000, f.to_vec()));
    }

    /// Repeat frame `n` (1-based) at another time, byte for byte.
    fn copy_of(&mut self, n: usize, t_us: i64) {
        let data = self.frames[n - 1].1.clone();
        self.frames.push((t_us * 1000, data));
    }

    fn run(&self) -> Vec<Sample> {
        run_frames(&self.frames, &EngineConfig::default()).0
    }
}

#[derive(Debug, Clone, PartialEq)]
struct Sample {
    frame: u64,
    open_frame: u64,
    kind: String,
    src: String,
    rtt_us: f64,
}

fn tmp_path(tag: &str) -> PathBuf {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    std::env::temp_dir().join(format!("metro-scn-{tag}-{}-{n}.pcap", std::process::id()))
}

fn run_frames(
    frames: &[(i64, Vec<u8>)],
    cfg: &EngineConfig,
) -> (Vec<Sample>, metro::analyze::Report) {
    let path = tmp_path("x");
    {
        let f = std::fs::File::create(&path).unwrap();
        let mut w = PcapWriter::nanos(f, 1, 65535).unwrap();
        for (ts, data) in frames {
            w.write_packet(*ts, data, data.len() as u32).unwrap();
        }
        w.flush().unwrap();
    }
    let mut out: Vec<u8> = Vec::new();
    let report = metro::analyze::analyze_files(
        std::slice::from_ref(&path),
        cfg,
        true,
        Some(&mut out),
        false,
    )
    .unwrap();
    std::fs::remove_file(&path).ok();
    assert!(
        report.files[0].error.is_none(),
        "{:?}",
        report.files[0].error
    );
    let samples = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            Sample {
                frame: v["frame"].as_u64().unwrap(),
                open_frame: v["open_frame"].as_u64().unwrap(),
                kind: v["kind"].as_str().unwrap().to_string(),
                src: format!("{}:{}", v["src"].as_str().unwrap(), v["sport"]),
                rtt_us: (v["rtt_ms"].as_f64().unwrap() * 1000.0 * 1000.0).round() / 1000.0,
            }
        })
        .collect();
    (samples, report)
}

fn s(frame: u64, open_frame: u64, kind: &str, src: &str, rtt_us: f64) -> Sample {
    Sample {
        frame,
        open_frame,
        kind: kind.to_string(),
        src: src.to_string(),
        rtt_us,
    }
}

const SRV: &str = "10.0.0.2:80";
const CLI: &str = "10.0.0.1:40000";
use Side::{Client as Cl, Server as Sv};

fn handshake(cap: &mut Cap, isn_c: u32, isn_s: u32) {
    cap.pkt(0, Cl, isn_c, 0, SYN, 0); // 1
    cap.pkt(30_000, Sv, isn_s, isn_c.wrapping_add(1), SYN | ACK, 0); // 2
    cap.pkt(
        31_000,
        Cl,
        isn_c.wrapping_add(1),
        isn_s.wrapping_add(1),
        ACK,
        0,
    ); // 3
}

#[test]
fn delayed_ack_covering_two_segments() {
    // The contract's own example: segments at 0.100 s and 0.110 s, one ACK at 0.150 s:
    // one sample of 40 ms, timed from the newest segment it completes.
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Cl, 1001, 5001, ACK | PSH, 100); // 4
    cap.pkt(110_000, Cl, 1101, 5001, ACK | PSH, 100); // 5
    cap.pkt(150_000, Sv, 5001, 1201, ACK, 0); // 6
    assert_eq!(
        cap.run(),
        vec![
            s(2, 1, "handshake", SRV, 30_000.0),
            s(3, 2, "handshake", CLI, 1_000.0),
            s(6, 5, "seq", SRV, 40_000.0),
        ]
    );
}

#[test]
fn syn_ack_captured_before_its_syn_is_not_timed() {
    // Reordered capture (zeek's handshake-reorder.pcap has this shape): the SYN/ACK is
    // stamped before the SYN it answers. The handshake cannot be timed; data after it can.
    let mut cap = Cap::new();
    cap.pkt(0, Sv, 5000, 1001, SYN | ACK, 0); // 1
    cap.pkt(260, Cl, 1000, 0, SYN, 0); // 2
    cap.pkt(294, Cl, 1001, 5001, ACK, 0); // 3: would time frame 1
    cap.pkt(443, Cl, 1001, 5001, ACK | PSH, 136); // 4
    cap.pkt(69_425, Sv, 5001, 1137, ACK, 0); // 5: 68.982 ms
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(got, vec![s(5, 4, "seq", SRV, 68_982.0)]);
    assert_eq!(report.summary.engine.ambiguous, 1);
}

#[test]
fn partial_ack_then_full_ack() {
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Cl, 1001, 5001, ACK, 1000); // 4: [1001, 2001)
    cap.pkt(120_000, Sv, 5001, 1501, ACK, 0); // 5: inside the segment: nothing
    cap.pkt(130_000, Sv, 5001, 2001, ACK, 0); // 6: completes it: 30 ms from frame 4
    let got = cap.run();
    assert_eq!(&got[2..], &[s(6, 4, "seq", SRV, 30_000.0)]);
}

#[test]
fn timeout_retransmission_is_ambiguous() {
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Cl, 1001, 5001, ACK, 100); // 4
    cap.pkt(400_000, Cl, 1001, 5001, ACK, 100); // 5: retransmission (RTO)
    cap.pkt(430_000, Sv, 5001, 1101, ACK, 0); // 6: answers 4 or 5? Karn: no sample
    cap.pkt(500_000, Cl, 1101, 5001, ACK, 100); // 7: new data
    cap.pkt(530_000, Sv, 5001, 1201, ACK, 0); // 8: 30 ms
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(&got[2..], &[s(8, 7, "seq", SRV, 30_000.0)]);
    assert_eq!(report.summary.engine.ambiguous, 1);
    assert_eq!(report.summary.engine.retransmits, 1);
}

#[test]
fn fast_retransmission_voids_everything_in_flight() {
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    for i in 0..4u32 {
        cap.pkt(
            100_000 + i as i64 * 1000,
            Cl,
            1001 + 100 * i,
            5001,
            ACK,
            100,
        ); // 4..7
    }
    for i in 0..3 {
        cap.pkt(131_000 + i * 1000, Sv, 5001, 1001, ACK, 0); // 8..10: dup ACKs (first lost)
    }
    cap.pkt(134_000, Cl, 1001, 5001, ACK, 100); // 11: fast retransmit
    cap.pkt(164_000, Sv, 5001, 1401, ACK, 0); // 12: cumulative ACK: ambiguous
    cap.pkt(200_000, Cl, 1401, 5001, ACK, 100); // 13
    cap.pkt(230_000, Sv, 5001, 1501, ACK, 0); // 14: 30 ms
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(&got[2..], &[s(14, 13, "seq", SRV, 30_000.0)]);
    assert_eq!(report.summary.engine.ambiguous, 1);
}

#[test]
fn reordering_is_ambiguous() {
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Cl, 1101, 5001, ACK, 100); // 4: second segment seen first (a gap)
    cap.pkt(101_000, Cl, 1001, 5001, ACK, 100); // 5: first segment late: reordering
    cap.pkt(131_000, Sv, 5001, 1201, ACK, 0); // 6: no sample
    cap.pkt(200_000, Cl, 1201, 5001, ACK, 100); // 7
    cap.pkt(225_000, Sv, 5001, 1301, ACK, 0); // 8: 25 ms
    let got = cap.run();
    assert_eq!(&got[2..], &[s(8, 7, "seq", SRV, 25_000.0)]);
}

#[test]
fn reordering_after_a_segment_keeps_it_timed() {
    // PcapPlusPlus many-protocols.pcap frames 2597-2600: data, then the FIN captured before
    // the last data segment. Only what lies beyond the late segment's start is ambiguous;
    // the ACK of the first segment cannot be caused by it and is timed.
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Sv, 5001, 1001, ACK, 1360); // 4: [5001, 6361)
    cap.pkt(100_700, Sv, 6457, 1001, ACK | FIN, 0); // 5: FIN [6457, 6458), seen early
    cap.pkt(100_701, Sv, 6361, 1001, ACK | PSH | FIN, 96); // 6: [6361, 6458) late
    cap.pkt(100_752, Cl, 1001, 6361, ACK, 0); // 7: acks frame 4: 0.752 ms
    cap.pkt(100_800, Cl, 1001, 6458, ACK, 0); // 8: acks 5 or 6: ambiguous
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(&got[2..], &[s(7, 4, "seq", CLI, 752.0)]);
    assert_eq!(report.summary.engine.ambiguous, 1);
}

#[test]
fn sack_recovery() {
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Cl, 1001, 5001, ACK, 100); // 4 (lost before the receiver)
    cap.pkt(101_000, Cl, 1101, 5001, ACK, 100); // 5
    cap.pkt(102_000, Cl, 1201, 5001, ACK, 100); // 6
    let blocks = [(1101u32, 1201u32)];
    let f = cap.frame(Sv).seq(5001).ack(1001).sack(&blocks).to_vec();
    cap.frames.push((131_000_000, f)); // 7: dup ACK with SACK 1101-1201
    let blocks2 = [(1101u32, 1301u32)];
    let f = cap.frame(Sv).seq(5001).ack(1001).sack(&blocks2).to_vec();
    cap.frames.push((132_000_000, f)); // 8: SACK 1101-1301
    cap.pkt(133_000, Cl, 1001, 5001, ACK, 100); // 9: retransmission of the hole
    cap.pkt(163_000, Sv, 5001, 1301, ACK, 0); // 10: ambiguous
    cap.pkt(170_000, Cl, 1301, 5001, ACK, 100); // 11
    cap.pkt(202_000, Sv, 5001, 1401, ACK, 0); // 12: 32 ms
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(&got[2..], &[s(12, 11, "seq", SRV, 32_000.0)]);
    assert_eq!(report.summary.engine.ambiguous, 1);
}

#[test]
fn sequence_wrap_past_2_pow_32() {
    let mut cap = Cap::new();
    let isn = 0xffff_ff00u32;
    handshake(&mut cap, isn, 7);
    let first = isn.wrapping_add(1);
    cap.pkt(100_000, Cl, first, 8, ACK, 200); // 4: [0xffffff01, 0xc9) crosses 2^32
    cap.pkt(110_000, Cl, first.wrapping_add(200), 8, ACK, 100); // 5: [0xc9, 0x12d)
    cap.pkt(140_000, Sv, 8, first.wrapping_add(200), ACK, 0); // 6: 40 ms from 4
    cap.pkt(145_000, Sv, 8, first.wrapping_add(300), ACK, 0); // 7: 35 ms from 5
    let got = cap.run();
    assert_eq!(
        &got[2..],
        &[s(6, 4, "seq", SRV, 40_000.0), s(7, 5, "seq", SRV, 35_000.0)]
    );
}

#[test]
fn tsval_wrap() {
    // Data one way with timestamps; TSvals cross 2^32. Each pure ACK echoing a data
    // packet's TSval closes a ts sample (responder: the server), across the wrap.
    let mut cap = Cap::new();
    let mut tsval = 0xffff_fffeu32;
    let mut seq = 1001u32;
    let mut frame = 0u64;
    let mut expect = Vec::new();
    for i in 0..5i64 {
        let t = 100_000 + i * 50_000;
        cap.pkt_ts(t, Cl, seq, 5001, ACK, 100, tsval, 777); // data
        frame += 1;
        let open = frame;
        seq = seq.wrapping_add(100);
        cap.pkt_ts(t + 20_000, Sv, 5001, seq, ACK, 0, 900 + i as u32, tsval); // its ACK
        frame += 1;
        expect.push(s(frame, open, "seq", SRV, 20_000.0));
        expect.push(s(frame, open, "ts", SRV, 20_000.0));
        tsval = tsval.wrapping_add(1);
    }
    // TSvals used: fffffffe, ffffffff, 0 (never recorded: TSval 0 is ignored), 1, 2.
    expect.retain(|x| !(x.kind == "ts" && x.open_frame == 5));
    let mut got = cap.run();
    got.sort_by(|a, b| (a.frame, &a.kind).cmp(&(b.frame, &b.kind)));
    assert_eq!(got, expect);
}

#[test]
fn simultaneous_open() {
    // Both sides send SYN; each then sends SYN/ACK with the same ISN, so each SYN's
    // sequence number goes out twice. Data after the handshake is timed both ways.
    let mut cap = Cap::new();
    cap.pkt(0, Cl, 1000, 0, SYN, 0); // 1
    cap.pkt(1_000, Sv, 5000, 0, SYN, 0); // 2
    cap.pkt(30_000, Cl, 1000, 5001, SYN | ACK, 0); // 3
    cap.pkt(31_000, Sv, 5000, 1001, SYN | ACK, 0); // 4
    cap.pkt(100_000, Cl, 1001, 5001, ACK, 100); // 5
    cap.pkt(130_000, Sv, 5001, 1101, ACK, 50); // 6: acks 5 (30 ms) and carries data
    cap.pkt(150_000, Cl, 1101, 5051, ACK, 0); // 7: acks 6 (20 ms)
    // Frame 3 answers the server's SYN before anything was sent twice: a real sample.
    // Frame 4 acknowledges the client's SYN, which frame 3 sent again: ambiguous.
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(
        got,
        vec![
            s(3, 2, "handshake", CLI, 29_000.0),
            s(6, 5, "seq", SRV, 30_000.0),
            s(7, 6, "seq", CLI, 20_000.0)
        ]
    );
    assert_eq!(report.summary.engine.flows_created, 1);
    assert_eq!(report.summary.engine.ambiguous, 1);
}

#[test]
fn rst_answers_data_and_ports_are_reused() {
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Cl, 1001, 5001, ACK, 100); // 4
    cap.pkt(130_000, Sv, 5001, 1101, RST | ACK, 0); // 5: 30 ms
    cap.pkt(2_000_000, Cl, 90_000, 0, SYN, 0); // 6: a new connection on the same ports
    cap.pkt(2_010_000, Sv, 70_000, 90_001, SYN | ACK, 0); // 7: 10 ms
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(
        &got[2..],
        &[
            s(5, 4, "seq", SRV, 30_000.0),
            s(7, 6, "handshake", SRV, 10_000.0)
        ]
    );
    assert_eq!(report.summary.engine.flows_created, 2);
}

#[test]
fn one_way_flow_gives_nothing() {
    let mut cap = Cap::new();
    for i in 0..20u32 {
        cap.pkt_ts(
            i as i64 * 1000,
            Cl,
            1001 + i * 100,
            5001,
            ACK,
            100,
            50 + i,
            9,
        );
    }
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(report.summary.tcp_packets, 20);
}

#[test]
fn syn_retransmission_drops_that_handshake_sample() {
    let mut cap = Cap::new();
    cap.pkt(0, Cl, 1000, 0, SYN, 0); // 1
    cap.pkt(1_000_000, Cl, 1000, 0, SYN, 0); // 2: SYN again after 1 s
    cap.pkt(1_030_000, Sv, 5000, 1001, SYN | ACK, 0); // 3: answers 1 or 2: ambiguous
    cap.pkt(1_031_000, Cl, 1001, 5001, ACK, 0); // 4: the SYN/ACK was sent once: 1 ms
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(got, vec![s(4, 3, "handshake", CLI, 1_000.0)]);
    assert_eq!(report.summary.engine.ambiguous, 1);
    assert_eq!(report.summary.engine.flows_created, 1);
}

#[test]
fn capture_starting_mid_flow() {
    let mut cap = Cap::new();
    cap.pkt(50_000, Sv, 5001, 7000, ACK, 0); // 1: ACK of data we never saw
    cap.pkt(100_000, Cl, 7000, 5001, ACK, 100); // 2
    cap.pkt(130_000, Sv, 5001, 7100, ACK, 0); // 3: 30 ms
    assert_eq!(cap.run(), vec![s(3, 2, "seq", SRV, 30_000.0)]);
}

#[test]
fn timestamps_both_directions_request_response() {
    let mut cap = Cap::new();
    cap.pkt_ts(0, Cl, 1000, 0, SYN, 0, 100, 0); // 1
    cap.pkt_ts(20_000, Sv, 5000, 1001, SYN | ACK, 0, 900, 100); // 2: hs + ts 20 ms
    cap.pkt_ts(21_000, Cl, 1001, 5001, ACK, 0, 101, 900); // 3: hs 1 ms (pure ACK opens no ts)
    cap.pkt_ts(50_000, Cl, 1001, 5001, ACK | PSH, 200, 130, 900); // 4: request
    cap.pkt_ts(75_000, Sv, 5001, 1201, ACK | PSH, 1000, 955, 130); // 5: response: seq+ts 25 ms
    cap.pkt_ts(76_000, Cl, 1201, 6001, ACK, 0, 156, 955); // 6: seq+ts 1 ms (client answers)
    let mut got = cap.run();
    got.sort_by(|a, b| (a.frame, &a.kind).cmp(&(b.frame, &b.kind)));
    assert_eq!(
        got,
        vec![
            s(2, 1, "handshake", SRV, 20_000.0),
            s(2, 1, "ts", SRV, 20_000.0),
            s(3, 2, "handshake", CLI, 1_000.0),
            s(3, 2, "ts", CLI, 1_000.0),
            s(5, 4, "seq", SRV, 25_000.0),
            s(5, 4, "ts", SRV, 25_000.0),
            s(6, 5, "seq", CLI, 1_000.0),
            s(6, 5, "ts", CLI, 1_000.0),
        ]
    );
}

#[test]
fn ts_echo_times_the_first_packet_carrying_the_tsval() {
    // Two data packets share TSval 500 (same clock tick); the ACK echoes 500: the ts sample
    // runs from the first, the seq sample from the newest segment the ACK completes.
    let mut cap = Cap::new();
    cap.pkt_ts(100_000, Cl, 1001, 5001, ACK, 100, 500, 9); // 1
    cap.pkt_ts(100_400, Cl, 1101, 5001, ACK, 100, 500, 9); // 2
    cap.pkt_ts(130_400, Sv, 5001, 1201, ACK, 0, 77, 500); // 3
    let mut got = cap.run();
    got.sort_by(|a, b| a.kind.cmp(&b.kind));
    assert_eq!(
        got,
        vec![s(3, 2, "seq", SRV, 30_000.0), s(3, 1, "ts", SRV, 30_400.0)]
    );
}

#[test]
fn frame_captured_twice_is_not_a_retransmission() {
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Cl, 1001, 5001, ACK, 100); // 4
    cap.copy_of(4, 100_010); // 5: the same frame again 10 us later (span port)
    cap.pkt(130_000, Sv, 5001, 1101, ACK, 0); // 6: 30 ms from frame 4
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(&got[2..], &[s(6, 4, "seq", SRV, 30_000.0)]);
    assert_eq!(report.summary.engine.duplicates, 1);
    assert_eq!(report.summary.engine.retransmits, 0);
}

#[test]
fn zero_interval_is_no_sample() {
    let mut cap = Cap::new();
    cap.pkt(100_000, Cl, 1001, 5001, ACK, 100); // 1
    cap.pkt(100_000, Sv, 5001, 1101, ACK, 0); // 2: same timestamp
    cap.pkt(90_000, Cl, 1101, 5001, ACK, 100); // 3
    cap.pkt(80_000, Sv, 5001, 1201, ACK, 0); // 4: earlier than its opener
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(report.summary.engine.non_positive, 2);
}

#[test]
fn implausible_interval_is_no_sample() {
    // A damaged capture (suricata-verify tls_DER-incomplete-header.pcap) stamps one frame
    // 21 years before its neighbours: no round trip lasts longer than TCP's 120 s timer.
    let mut cap = Cap::new();
    cap.pkt(0, Cl, 1001, 5001, ACK, 100); // 1
    cap.pkt(200_000_000, Sv, 5001, 1101, ACK, 0); // 2: 200 s later
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert!(got.is_empty(), "{got:?}");
    assert_eq!(report.summary.engine.implausible, 1);
}

#[test]
fn keepalive_is_timed_not_a_retransmission() {
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Cl, 1001, 5001, ACK, 100); // 4
    cap.pkt(130_000, Sv, 5001, 1101, ACK, 0); // 5: 30 ms
    cap.pkt(10_000_000, Cl, 1100, 5001, ACK, 1); // 6: keep-alive (one old byte)
    cap.pkt(10_030_000, Sv, 5001, 1101, ACK, 0); // 7: its answer (ACK of its end): 30 ms
    cap.pkt(10_100_000, Cl, 1101, 5001, ACK, 100); // 8
    cap.pkt(10_130_000, Sv, 5001, 1201, ACK, 0); // 9: 30 ms
    cap.pkt(20_000_000, Cl, 1200, 5001, ACK, 1); // 10: keep-alive
    cap.pkt(21_000_000, Cl, 1200, 5001, ACK, 1); // 11: again, unanswered
    cap.pkt(21_040_000, Sv, 5001, 1201, ACK, 0); // 12: answers 10 or 11: ambiguous
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(
        &got[2..],
        &[
            s(5, 4, "seq", SRV, 30_000.0),
            s(7, 6, "seq", SRV, 30_000.0),
            s(9, 8, "seq", SRV, 30_000.0)
        ]
    );
    assert_eq!(report.summary.engine.retransmits, 0);
    assert_eq!(report.summary.engine.ambiguous, 1);
}

#[test]
fn pending_segments_are_bounded_and_counted() {
    let cfg = EngineConfig {
        max_pending_segments: 4,
        ..EngineConfig::default()
    };
    let mut cap = Cap::new();
    for i in 0..10u32 {
        cap.pkt(i as i64 * 1000, Cl, 1001 + 100 * i, 5001, ACK, 100);
    }
    cap.pkt(50_000, Sv, 5001, 2001, ACK, 0); // acks the newest, still pending
    let (got, report) = run_frames(&cap.frames, &cfg);
    assert_eq!(got, vec![s(11, 10, "seq", SRV, 41_000.0)]);
    assert_eq!(report.summary.engine.segments_evicted, 6);
}

#[test]
fn flow_table_is_bounded_and_counted() {
    let cfg = EngineConfig {
        max_flows: 3,
        ..EngineConfig::default()
    };
    let mut frames = Vec::new();
    for i in 0..10u16 {
        let f = TcpFrame::v4(Ipv4Addr::from(C), 1000 + i, Ipv4Addr::from(S), 80)
            .seq(1)
            .payload_len(10)
            .ip_id(i);
        frames.push((i as i64 * 1_000_000, f.to_vec()));
    }
    let (_, report) = run_frames(&frames, &cfg);
    assert_eq!(report.summary.engine.flows_created, 10);
    assert_eq!(report.summary.engine.flows_evicted_full, 7);
}
