//! Hand-built captures with hand-computed answers, run through the whole pipeline: pcap
//! writer -> reader -> decoder -> engine -> JSON sample lines. Each scenario states the
//! samples an expert would accept (frame numbers are 1-based, as tshark counts them).

use std::net::Ipv4Addr;
use std::path::PathBuf;

use metro_core::config::EngineConfig;
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

    /// Add a frame built by hand (its own IP ID, options) at `t_us` microseconds.
    fn push(&mut self, t_us: i64, f: TcpFrame<'_>) {
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

// --- Accuracy past Karn (docs/accuracy.md): copies, disambiguated retransmissions.

/// A frame from `from` with everything given by hand.
fn raw(from: Side, ip_id: u16, seq: u32, ack: u32, flags: u16, len: usize) -> TcpFrame<'static> {
    let (src, sp, dst, dp) = match from {
        Side::Client => (C, CP, S, SP),
        Side::Server => (S, SP, C, CP),
    };
    TcpFrame::v4(Ipv4Addr::from(src), sp, Ipv4Addr::from(dst), dp)
        .ip_id(ip_id)
        .seq(seq)
        .ack(ack)
        .flags(flags)
        .payload_len(len)
}

/// A mirror port delivering every frame twice, the copy 12 ms late, interleaved with the ACK
/// that answers the original.
fn interleaved_copies() -> Cap {
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Cl, 1001, 5001, ACK, 100); // 4: A
    cap.pkt(104_000, Cl, 1101, 5001, ACK, 100); // 5: B
    cap.pkt(108_000, Sv, 5001, 1101, ACK, 0); // 6: acks A: 8 ms
    cap.copy_of(4, 112_000); // 7: A again, 12 ms later, B still in flight
    cap.pkt(112_500, Sv, 5001, 1201, ACK, 0); // 8: acks B: 8.5 ms
    cap.copy_of(5, 116_000); // 9: B again
    cap.copy_of(6, 120_000); // 10: the ACKs again
    cap.copy_of(8, 124_500); // 11
    cap
}

#[test]
fn interleaved_copy_12ms_apart_is_a_duplicate_when_ip_ids_vary() {
    let cap = interleaved_copies();
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(
        &got[2..],
        &[s(6, 4, "seq", SRV, 8_000.0), s(8, 5, "seq", SRV, 8_500.0)]
    );
    let e = &report.summary.engine;
    assert_eq!((e.duplicates, e.duplicates_wide), (2, [2, 0, 0]));
    assert_eq!((e.retransmits, e.ambiguous), (0, 0));
}

#[test]
fn distrusting_the_ip_id_makes_the_late_copy_a_retransmission() {
    // A middlebox may rewrite IP IDs: without them and without timestamps a copy 12 ms late
    // cannot be told from a retransmission, so B's ACK is ambiguous.
    let cap = interleaved_copies();
    let cfg = EngineConfig {
        trust_ip_id: false,
        ..EngineConfig::default()
    };
    let (got, report) = run_frames(&cap.frames, &cfg);
    assert_eq!(&got[2..], &[s(6, 4, "seq", SRV, 8_000.0)]);
    let e = &report.summary.engine;
    assert_eq!((e.duplicates, e.retransmits, e.ambiguous), (0, 2, 1));
}

#[test]
fn constant_ip_id_identical_frame_30ms_later_is_a_retransmission() {
    // A hand-made capture: every frame of the client carries IP ID 0x4242, no timestamps.
    // Two identical frames 30 ms apart are then a retransmission, not a copy.
    let mut cap = Cap::new();
    cap.push(0, raw(Cl, 0x4242, 1000, 0, SYN, 0)); // 1
    cap.push(30_000, raw(Sv, 7, 5000, 1001, SYN | ACK, 0)); // 2
    cap.push(31_000, raw(Cl, 0x4242, 1001, 5001, ACK, 0)); // 3
    cap.push(100_000, raw(Cl, 0x4242, 1001, 5001, ACK, 100)); // 4: A
    cap.push(101_000, raw(Cl, 0x4242, 1101, 5001, ACK, 100)); // 5: B
    cap.push(131_000, raw(Cl, 0x4242, 1101, 5001, ACK, 100)); // 6: B, byte for byte
    cap.push(140_000, raw(Sv, 8, 5001, 1101, ACK, 0)); // 7: acks A: 40 ms
    cap.push(161_000, raw(Sv, 9, 5001, 1201, ACK, 0)); // 8: B or its retransmission?
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(&got[2..], &[s(7, 4, "seq", SRV, 40_000.0)]);
    let e = &report.summary.engine;
    assert_eq!((e.duplicates, e.retransmits, e.ambiguous), (0, 1, 1));
}

#[test]
fn retransmission_with_a_new_ip_id_is_never_a_duplicate() {
    // Same as a copy in every field but the IP ID, 12 ms later: a fast retransmission.
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Cl, 1001, 5001, ACK, 100); // 4: A
    cap.pkt(101_000, Cl, 1101, 5001, ACK, 100); // 5: B
    cap.pkt(113_000, Cl, 1101, 5001, ACK, 100); // 6: B again, its own IP ID
    cap.pkt(131_000, Sv, 5001, 1201, ACK, 0); // 7: ambiguous
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(&got[2..], &[]);
    let e = &report.summary.engine;
    assert_eq!((e.duplicates, e.retransmits, e.ambiguous), (0, 1, 1));
}

/// Handshake with timestamps (client clock starts at 1000, server at 9000); IP ID 0 on every
/// client frame, so only TSvals can tell a copy.
fn ts_handshake(cap: &mut Cap) {
    cap.push(0, raw(Cl, 0, 1000, 0, SYN, 0).timestamps(1000, 0)); // 1
    cap.push(
        30_000,
        raw(Sv, 0, 5000, 1001, SYN | ACK, 0).timestamps(9000, 1000),
    ); // 2
    cap.push(
        31_000,
        raw(Cl, 0, 1001, 5001, ACK, 0).timestamps(1031, 9000),
    ); // 3
}

#[test]
fn late_copy_is_a_duplicate_when_the_senders_tsval_clock_moved_on() {
    let mut cap = Cap::new();
    ts_handshake(&mut cap);
    cap.push(
        100_000,
        raw(Cl, 0, 1001, 5001, ACK, 100).timestamps(1100, 9000),
    ); // 4: A
    cap.push(
        104_000,
        raw(Cl, 0, 1101, 5001, ACK, 100).timestamps(1104, 9000),
    ); // 5: B
    cap.copy_of(4, 112_000); // 6: A again: TSval 1100, but the clock showed 1104 already
    cap.push(
        132_000,
        raw(Sv, 0, 5001, 1201, ACK, 0).timestamps(9132, 1100),
    ); // 7: 28 ms
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    let seq: Vec<_> = got.iter().filter(|x| x.kind != "ts").cloned().collect();
    assert_eq!(&seq[2..], &[s(7, 5, "seq", SRV, 28_000.0)]);
    let e = &report.summary.engine;
    assert_eq!((e.duplicates, e.duplicates_wide), (1, [0, 1, 0]));
    assert_eq!(e.retransmits, 0);
}

#[test]
fn identical_frame_with_the_newest_tsval_and_no_ip_id_is_a_retransmission() {
    // The copy's TSval is still the newest: a retransmission in the same clock tick would
    // look the same. Beyond the narrow window, that is a retransmission.
    let mut cap = Cap::new();
    ts_handshake(&mut cap);
    cap.push(
        100_000,
        raw(Cl, 0, 1001, 5001, ACK, 100).timestamps(1100, 9000),
    ); // 4
    cap.copy_of(4, 101_000); // 5: 1 ms later, ID 0: beyond a twentieth of 2 ms
    cap.push(
        131_000,
        raw(Sv, 0, 5001, 1101, ACK, 0).timestamps(9131, 1100),
    ); // 6
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    let seq: Vec<_> = got.iter().filter(|x| x.kind != "ts").cloned().collect();
    assert_eq!(&seq[2..], &[]);
    let e = &report.summary.engine;
    assert_eq!((e.duplicates, e.retransmits, e.ambiguous), (0, 1, 1));
}

/// Client data A [1001, 1101) sent at 100 ms with TSval 1100, re-sent at 400 ms (TSval
/// 1400, a new IP ID) after a timeout.
fn timeout_with_ts(cap: &mut Cap) {
    ts_handshake(cap);
    cap.push(
        100_000,
        raw(Cl, 1, 1001, 5001, ACK, 100).timestamps(1100, 9000),
    ); // 4
    cap.push(
        400_000,
        raw(Cl, 2, 1001, 5001, ACK, 100).timestamps(1400, 9000),
    ); // 5
}

#[test]
fn ack_echoing_the_retransmissions_tsval_times_the_retransmission() {
    let mut cap = Cap::new();
    timeout_with_ts(&mut cap);
    cap.push(
        430_000,
        raw(Sv, 0, 5001, 1101, ACK, 0).timestamps(9430, 1400),
    ); // 6
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    let seq: Vec<_> = got.iter().filter(|x| x.kind != "ts").cloned().collect();
    assert_eq!(&seq[2..], &[s(6, 5, "seq", SRV, 30_000.0)]);
    let e = &report.summary.engine;
    assert_eq!((e.disambiguated, e.ambiguous), ([1, 0, 0, 0, 0], 0));
}

#[test]
fn ack_echoing_the_originals_tsval_times_the_original() {
    // A spurious timeout: the original's ACK was only slow (320 ms).
    let mut cap = Cap::new();
    timeout_with_ts(&mut cap);
    cap.push(
        420_000,
        raw(Sv, 0, 5001, 1101, ACK, 0).timestamps(9420, 1100),
    ); // 6
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    let seq: Vec<_> = got.iter().filter(|x| x.kind != "ts").cloned().collect();
    assert_eq!(&seq[2..], &[s(6, 4, "seq", SRV, 320_000.0)]);
    let e = &report.summary.engine;
    assert_eq!((e.disambiguated, e.ambiguous), ([0, 1, 0, 0, 0], 0));
}

#[test]
fn ack_echoing_neither_tsval_stays_ambiguous() {
    let mut cap = Cap::new();
    timeout_with_ts(&mut cap);
    cap.push(
        420_000,
        raw(Sv, 0, 5001, 1101, ACK, 0).timestamps(9420, 1031),
    ); // 6
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    let seq: Vec<_> = got.iter().filter(|x| x.kind != "ts").cloned().collect();
    assert_eq!(&seq[2..], &[]);
    let e = &report.summary.engine;
    assert_eq!((e.disambiguated, e.ambiguous), ([0; 5], 1));
}

#[test]
fn dsack_marks_the_retransmission_spurious_and_times_the_original() {
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Cl, 1001, 5001, ACK, 100); // 4: A
    cap.pkt(101_000, Cl, 1101, 5001, ACK, 100); // 5: B
    cap.pkt(130_000, Sv, 5001, 1101, ACK, 0); // 6: acks A: 30 ms
    cap.pkt(250_000, Cl, 1101, 5001, ACK, 100); // 7: B re-sent (timeout)
    // 8: acks B and reports [1101, 1201) received twice: B itself got there.
    cap.push(
        280_000,
        raw(Sv, 99, 5001, 1201, ACK, 0).sack(&[(1101, 1201)]),
    );
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(
        &got[2..],
        &[
            s(6, 4, "seq", SRV, 30_000.0),
            s(8, 5, "seq", SRV, 179_000.0)
        ]
    );
    let e = &report.summary.engine;
    assert_eq!(
        (e.disambiguated, e.ambiguous, e.retransmits),
        ([0, 0, 1, 0, 0], 0, 1)
    );
}

#[test]
fn sack_that_is_not_a_dsack_resolves_nothing() {
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Cl, 1001, 5001, ACK, 100); // 4: A
    cap.pkt(101_000, Cl, 1101, 5001, ACK, 100); // 5: B
    cap.pkt(102_000, Cl, 1201, 5001, ACK, 100); // 6: C
    cap.pkt(250_000, Cl, 1101, 5001, ACK, 100); // 7: B re-sent
    // 8: acks B; its SACK block lies above the ACK (C held out of order): not a DSACK.
    cap.push(
        280_000,
        raw(Sv, 99, 5001, 1201, ACK, 0).sack(&[(1201, 1301)]),
    );
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(&got[2..], &[]);
    assert_eq!(report.summary.engine.disambiguated, [0; 5]);
}

#[test]
fn ack_stopping_inside_a_retransmission_times_the_original() {
    // Frame 6 re-sends A and B as one segment; an ACK of A's end (inside it) could not have
    // been caused by it (it would acknowledge 1201): it answers A. B's ACK stays ambiguous.
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Cl, 1001, 5001, ACK, 100); // 4: A
    cap.pkt(101_000, Cl, 1101, 5001, ACK, 100); // 5: B
    cap.pkt(300_000, Cl, 1001, 5001, ACK, 200); // 6: A+B re-sent
    cap.pkt(310_000, Sv, 5001, 1101, ACK, 0); // 7: 210 ms from A
    cap.pkt(330_000, Sv, 5001, 1201, ACK, 0); // 8: B or frame 6?
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(&got[2..], &[s(7, 4, "seq", SRV, 210_000.0)]);
    let e = &report.summary.engine;
    assert_eq!((e.disambiguated, e.ambiguous), ([0, 0, 0, 1, 0], 1));
}

#[test]
fn syn_ack_copy_2_5ms_later_is_a_duplicate_on_its_first_frame() {
    // tcptrace's pcap_v2.2.dmp: the server's every frame is captured twice, 2.56 ms apart;
    // the first copy is the SYN/ACK, before any IP ID could be seen to vary. A SYN/ACK is
    // re-sent only after a second (or a retransmitted SYN): this is a copy.
    let mut cap = Cap::new();
    cap.push(0, raw(Cl, 0x439b, 1000, 0, SYN, 0)); // 1
    cap.push(1_556, raw(Sv, 0x19cf, 5000, 1001, SYN | ACK, 0)); // 2
    cap.copy_of(2, 4_119); // 3
    cap.push(39_508, raw(Cl, 0x439e, 1001, 5001, ACK, 0)); // 4
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(
        got,
        vec![
            s(2, 1, "handshake", SRV, 1_556.0),
            s(4, 2, "handshake", CLI, 37_952.0)
        ]
    );
    let e = &report.summary.engine;
    assert_eq!((e.duplicates, e.duplicates_wide), (1, [0, 0, 1]));
    assert_eq!(e.retransmits, 0);
}

#[test]
fn syn_ack_sent_again_a_second_later_is_a_retransmission() {
    let mut cap = Cap::new();
    cap.push(0, raw(Cl, 0x439b, 1000, 0, SYN, 0)); // 1
    cap.push(1_556, raw(Sv, 0x19cf, 5000, 1001, SYN | ACK, 0)); // 2
    cap.copy_of(2, 1_001_556); // 3: byte for byte, 1 s later: the timer fired
    cap.push(1_030_000, raw(Cl, 0x439e, 1001, 5001, ACK, 0)); // 4: answers 2 or 3
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(got, vec![s(2, 1, "handshake", SRV, 1_556.0)]);
    let e = &report.summary.engine;
    assert_eq!((e.duplicates, e.retransmits, e.ambiguous), (0, 1, 1));
}

#[test]
fn dsack_answering_a_retransmission_of_acknowledged_bytes_times_it() {
    // suricata-verify's ftp-ippair-leak capture: data acknowledged, sent again (a new IP ID),
    // answered at once by a duplicate ACK whose DSACK block is exactly the re-sent range.
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Sv, 5001, 1001, ACK | PSH, 20); // 4
    cap.pkt(100_008, Cl, 1001, 5021, ACK, 0); // 5: 8 us
    cap.pkt(100_016, Sv, 5001, 1001, ACK | PSH, 20); // 6: sent again
    cap.push(
        100_023,
        raw(Cl, 77, 1001, 5021, ACK, 0).sack(&[(5001, 5021)]),
    ); // 7: 7 us from frame 6
    cap.push(
        100_030,
        raw(Cl, 78, 1001, 5021, ACK, 0).sack(&[(5001, 5021)]),
    ); // 8: the same report again: nothing more
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(
        &got[2..],
        &[s(5, 4, "seq", CLI, 8.0), s(7, 6, "seq", CLI, 7.0)]
    );
    let e = &report.summary.engine;
    assert_eq!((e.disambiguated, e.retransmits), ([0, 0, 0, 0, 1], 1));
}

#[test]
fn dsack_after_a_third_copy_times_nothing() {
    // The same bytes re-sent twice after their ACK: a DSACK no longer says which copy.
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Sv, 5001, 1001, ACK | PSH, 20); // 4
    cap.pkt(100_008, Cl, 1001, 5021, ACK, 0); // 5
    cap.pkt(100_016, Sv, 5001, 1001, ACK | PSH, 20); // 6
    cap.pkt(100_020, Sv, 5001, 1001, ACK | PSH, 20); // 7
    cap.push(
        100_023,
        raw(Cl, 77, 1001, 5021, ACK, 0).sack(&[(5001, 5021)]),
    ); // 8
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(&got[2..], &[s(5, 4, "seq", CLI, 8.0)]);
    assert_eq!(report.summary.engine.disambiguated, [0; 5]);
}

#[test]
fn segment_filling_a_hole_is_timed_by_the_ack_echoing_its_tsval() {
    // nDPI's ultrasurf capture: the bytes [1001, 1101) never passed the capture point; the
    // client sends B and C, then [1001, 1101) (a retransmission of the lost first copy, a
    // new IP ID and the newest TSval). The server's ACK of 1101 echoes that TSval: it
    // answers the hole's filler. B and C stay ambiguous (its arrival may have caused their
    // ACK).
    let mut cap = Cap::new();
    ts_handshake(&mut cap);
    cap.push(
        100_000,
        raw(Cl, 1, 1101, 5001, ACK, 100).timestamps(1100, 9000),
    ); // 4: B
    cap.push(
        101_000,
        raw(Cl, 2, 1201, 5001, ACK, 100).timestamps(1101, 9000),
    ); // 5: C
    cap.push(
        300_000,
        raw(Cl, 3, 1001, 5001, ACK, 100).timestamps(1300, 9000),
    ); // 6: hole
    cap.push(
        330_000,
        raw(Sv, 0, 5001, 1101, ACK, 0).timestamps(9330, 1300),
    ); // 7: 30 ms
    cap.push(
        331_000,
        raw(Sv, 0, 5001, 1301, ACK, 0).timestamps(9331, 1300),
    ); // 8: B, C?
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    let seq: Vec<_> = got.iter().filter(|x| x.kind != "ts").cloned().collect();
    assert_eq!(&seq[2..], &[s(7, 6, "seq", SRV, 30_000.0)]);
    let e = &report.summary.engine;
    assert_eq!((e.disambiguated, e.ambiguous), ([1, 0, 0, 0, 0], 1));
}

#[test]
fn segment_filling_a_hole_without_its_tsval_echoed_is_not_timed() {
    let mut cap = Cap::new();
    ts_handshake(&mut cap);
    cap.push(
        100_000,
        raw(Cl, 1, 1101, 5001, ACK, 100).timestamps(1100, 9000),
    ); // 4: B
    cap.push(
        300_000,
        raw(Cl, 3, 1001, 5001, ACK, 100).timestamps(1300, 9000),
    ); // 5: hole
    cap.push(
        330_000,
        raw(Sv, 0, 5001, 1101, ACK, 0).timestamps(9330, 1031),
    ); // 6
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    let seq: Vec<_> = got.iter().filter(|x| x.kind != "ts").cloned().collect();
    assert_eq!(&seq[2..], &[]);
    assert_eq!(report.summary.engine.disambiguated, [0; 5]);
}

#[test]
fn dsack_after_copies_sent_on_both_sides_of_the_ack_times_nothing() {
    // B re-sent while pending (frame 5) and again after its ACK (frame 7): the DSACK may
    // report either late copy.
    let mut cap = Cap::new();
    handshake(&mut cap, 1000, 5000);
    cap.pkt(100_000, Sv, 5001, 1001, ACK | PSH, 20); // 4
    cap.pkt(100_005, Sv, 5001, 1001, ACK | PSH, 20); // 5: re-sent before the ACK
    cap.pkt(100_008, Cl, 1001, 5021, ACK, 0); // 6: ambiguous
    cap.pkt(100_016, Sv, 5001, 1001, ACK | PSH, 20); // 7: a third copy
    cap.push(
        100_023,
        raw(Cl, 77, 1001, 5021, ACK, 0).sack(&[(5001, 5021)]),
    ); // 8: reports frame 5 or frame 7
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    assert_eq!(&got[2..], &[]);
    assert_eq!(report.summary.engine.disambiguated, [0; 5]);
}

#[test]
fn copy_of_a_retransmission_after_its_ack_is_still_a_copy() {
    // suricata-verify's http-range-multiflows (loopback, IP ID 0): a FIN sent again, its
    // copy, the ACK, then one more copy 16 us after the first.
    let mut cap = Cap::new();
    cap.push(0, raw(Cl, 0, 1000, 0, SYN, 0)); // 1
    cap.push(10, raw(Sv, 0, 5000, 1001, SYN | ACK, 0)); // 2
    cap.push(20, raw(Cl, 0, 1001, 5001, ACK, 0)); // 3
    cap.push(100, raw(Cl, 0, 1001, 5001, ACK | FIN, 0)); // 4
    cap.push(113, raw(Sv, 0, 5001, 1001, ACK | FIN, 0)); // 5
    cap.push(127, raw(Cl, 0, 1001, 5002, ACK | FIN, 0)); // 6: FIN again (a new ACK)
    cap.copy_of(6, 137); // 7: its copy
    cap.push(141, raw(Sv, 0, 5002, 1002, ACK, 0)); // 8: acks it
    cap.copy_of(6, 143); // 9: one more copy, after the ACK
    let (_, report) = run_frames(&cap.frames, &EngineConfig::default());
    let e = &report.summary.engine;
    assert_eq!(
        (e.duplicates, e.retransmits),
        (2, 1),
        "frames 7 and 9 are copies of 6"
    );
}

#[test]
fn echo_already_sent_before_the_retransmission_names_nothing() {
    // suricata-verify's syn_retransmit_with_ts: two retransmissions in one clock tick. The
    // first is answered (its TSval echoed); the second carries the same TSval, which the
    // receiver was already echoing: the next ACK's echo does not name it.
    let mut cap = Cap::new();
    ts_handshake(&mut cap);
    cap.push(
        100_000,
        raw(Cl, 1, 1001, 5001, ACK, 100).timestamps(1100, 9000),
    ); // 4: A
    cap.push(
        100_001,
        raw(Cl, 2, 1101, 5001, ACK, 100).timestamps(1100, 9000),
    ); // 5: B
    cap.push(
        300_000,
        raw(Cl, 3, 1001, 5001, ACK, 100).timestamps(1300, 9000),
    ); // 6: A again
    cap.push(
        330_000,
        raw(Sv, 0, 5001, 1101, ACK, 0).timestamps(9330, 1300),
    ); // 7: 30 ms
    cap.push(
        330_001,
        raw(Cl, 4, 1101, 5001, ACK, 100).timestamps(1300, 9330),
    ); // 8: B again
    cap.push(
        330_002,
        raw(Sv, 0, 5001, 1201, ACK, 0).timestamps(9330, 1300),
    ); // 9: B or 8?
    let (got, report) = run_frames(&cap.frames, &EngineConfig::default());
    let seq: Vec<_> = got.iter().filter(|x| x.kind != "ts").cloned().collect();
    assert_eq!(&seq[2..], &[s(7, 6, "seq", SRV, 30_000.0)]);
    let e = &report.summary.engine;
    assert_eq!((e.disambiguated, e.ambiguous), ([1, 0, 0, 0, 0], 1));
}

#[test]
fn copies_on_loopback_with_one_tsval_for_everything_are_still_copies() {
    // Loopback within one clock tick: every frame carries the same TSval and TSecr, so the
    // receiver already echoes the re-sent FIN's TSval. Its copies must still be copies.
    let mut cap = Cap::new();
    let t = |f: TcpFrame<'static>| f.timestamps(7, 7);
    cap.push(0, t(raw(Cl, 0, 1000, 0, SYN, 0))); // 1
    cap.push(10, t(raw(Sv, 0, 5000, 1001, SYN | ACK, 0))); // 2
    cap.push(20, t(raw(Cl, 0, 1001, 5001, ACK, 0))); // 3
    cap.push(100, t(raw(Cl, 0, 1001, 5001, ACK | FIN, 0))); // 4
    cap.push(113, t(raw(Sv, 0, 5001, 1001, ACK | FIN, 0))); // 5
    cap.push(127, t(raw(Cl, 0, 1001, 5002, ACK | FIN, 0))); // 6: FIN again
    cap.copy_of(6, 137); // 7
    cap.push(141, t(raw(Sv, 0, 5002, 1002, ACK, 0))); // 8
    cap.copy_of(6, 143); // 9
    let (_, report) = run_frames(&cap.frames, &EngineConfig::default());
    let e = &report.summary.engine;
    assert_eq!((e.duplicates, e.retransmits), (2, 1));
}
