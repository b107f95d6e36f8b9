//! Samples that Karn's and Dart's rules alone would drop, recovered when the capture proves
//! which transmission an ACK answers (docs/accuracy.md). Hand-built captures with
//! hand-computed answers, run through the whole pipeline (pcap writer, reader, decoder,
//! engine, JSON sample lines); frame numbers are 1-based, as tshark counts them. Each rule has
//! its negative cases: an ACK that could answer either copy is never timed.

use crate::support::netns;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use metro_core::config::EngineConfig;
use metro_testkit::frame::{TcpFrame, flags::*};
use metro_testkit::pcap::PcapWriter;
use serde_json::Value;

const C: [u8; 4] = [10, 0, 0, 1];
const S: [u8; 4] = [10, 0, 0, 2];
const SRV: &str = "10.0.0.2:80";

#[derive(Clone, Copy)]
enum Side {
    Client,
    Server,
}
use Side::{Client as Cl, Server as Sv};

/// A frame from `from` with IP ID `ip_id`, sequence and ACK numbers, flags and a payload of
/// `len` bytes.
fn raw(from: Side, ip_id: u16, seq: u32, ack: u32, flags: u16, len: usize) -> TcpFrame<'static> {
    let (src, sp, dst, dp) = match from {
        Cl => (C, 40000, S, 80),
        Sv => (S, 80, C, 40000),
    };
    TcpFrame::v4(Ipv4Addr::from(src), sp, Ipv4Addr::from(dst), dp)
        .ip_id(ip_id)
        .seq(seq)
        .ack(ack)
        .flags(flags)
        .payload_len(len)
}

/// A capture under construction: (time in microseconds, frame bytes).
#[derive(Default)]
struct Cap(Vec<(i64, Vec<u8>)>);

impl Cap {
    fn push(&mut self, t_us: i64, f: TcpFrame<'_>) {
        self.0.push((t_us * 1000, f.to_vec()));
    }
}

/// One sample line: (frame, open_frame, kind, responder, rtt in microseconds).
type Sample = (u64, u64, String, String, f64);

fn s(frame: u64, open_frame: u64, kind: &str, rtt_us: f64) -> Sample {
    (frame, open_frame, kind.to_string(), SRV.to_string(), rtt_us)
}

/// Analyze the capture at `path`: seq and handshake samples, and the engine's counters of
/// retransmitted-but-timed ACKs (by evidence) and ambiguous ones.
fn analyze(path: &std::path::Path) -> (Vec<Sample>, [u64; 5], u64) {
    let mut out: Vec<u8> = Vec::new();
    let report = metro::analyze::analyze_files(
        &[path.to_path_buf()],
        &EngineConfig::default(),
        true,
        Some(&mut out),
        false,
    )
    .unwrap();
    assert!(report.files[0].error.is_none());
    let samples = String::from_utf8(out)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v["kind"] != "ts")
        .map(|v| {
            (
                v["frame"].as_u64().unwrap(),
                v["open_frame"].as_u64().unwrap(),
                v["kind"].as_str().unwrap().to_string(),
                format!("{}:{}", v["src"].as_str().unwrap(), v["sport"]),
                (v["rtt_ms"].as_f64().unwrap() * 1e6).round() / 1000.0,
            )
        })
        .collect();
    let e = &report.summary.engine;
    (samples, e.disambiguated, e.ambiguous)
}

/// Write the capture, analyze it, return the seq and handshake samples and the engine's
/// counters of retransmitted-but-timed ACKs (by evidence) and ambiguous ones.
fn run(cap: &Cap) -> (Vec<Sample>, [u64; 5], u64) {
    let n = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let path = std::env::temp_dir().join(format!("metro-accuracy-{}-{n}.pcap", std::process::id()));
    {
        let f = std::fs::File::create(&path).unwrap();
        let mut w = PcapWriter::nanos(f, 1, 65535).unwrap();
        for (ts, data) in &cap.0 {
            w.write_packet(*ts, data, data.len() as u32).unwrap();
        }
        w.flush().unwrap();
    }
    let got = analyze(&path);
    std::fs::remove_file(&path).ok();
    got
}

// --- (a) Behind a retransmission from the left edge.

/// Handshake with timestamps (frames 1-3: client ISN 1000, server ISN 5000), three segments
/// of 100 bytes sent once (frames 4-6, TSvals 1100-1102, IP IDs 1-3), then a retransmission
/// timeout: the first is sent again 300 ms later (frame 7, TSval 1400, IP ID 4). Before it,
/// the server acknowledged the SYN only: the retransmission starts at its left edge.
fn rto_of_the_first_segment(cap: &mut Cap) {
    cap.push(0, raw(Cl, 0, 1000, 0, SYN, 0).timestamps(1000, 0));
    cap.push(
        30_000,
        raw(Sv, 0, 5000, 1001, SYN | ACK, 0).timestamps(9000, 1000),
    );
    cap.push(
        31_000,
        raw(Cl, 0, 1001, 5001, ACK, 0).timestamps(1031, 9000),
    );
    for i in 0..3u32 {
        cap.push(
            100_000 + i64::from(i) * 1000,
            raw(Cl, 1 + i as u16, 1001 + 100 * i, 5001, ACK | PSH, 100).timestamps(1100 + i, 9000),
        );
    }
    cap.push(
        400_000,
        raw(Cl, 4, 1001, 5001, ACK | PSH, 100).timestamps(1400, 9000),
    );
}

fn handshake_samples() -> Vec<Sample> {
    vec![
        s(2, 1, "handshake", 30_000.0),
        (3, 2, "handshake".into(), "10.0.0.1:40000".into(), 1000.0),
    ]
}

#[test]
fn acks_of_segments_behind_a_spurious_rto_echoing_their_own_tsvals_are_timed() {
    // The server's ACKs were slow, not lost: each echoes the TSval of the original it
    // acknowledges (older than the retransmission's 1400), so each was sent before the
    // retransmission arrived and answers a segment sent once. tshark: 0.320 s on each.
    let mut cap = Cap::default();
    rto_of_the_first_segment(&mut cap);
    cap.push(
        420_000,
        raw(Sv, 0, 5001, 1101, ACK, 0).timestamps(9420, 1100),
    ); // 8
    cap.push(
        421_000,
        raw(Sv, 0, 5001, 1201, ACK, 0).timestamps(9421, 1101),
    ); // 9
    cap.push(
        422_000,
        raw(Sv, 0, 5001, 1301, ACK, 0).timestamps(9422, 1102),
    ); // 10
    // The retransmission arrives as a duplicate: a duplicate ACK echoing it, not timed.
    cap.push(
        431_000,
        raw(Sv, 0, 5001, 1301, ACK, 0).timestamps(9431, 1400),
    ); // 11
    let (got, by, ambiguous) = run(&cap);
    let mut want = handshake_samples();
    want.extend([
        s(8, 4, "seq", 320_000.0),
        s(9, 5, "seq", 320_000.0),
        s(10, 6, "seq", 320_000.0),
    ]);
    assert_eq!(got, want);
    // Frame 8 by the rule that was already there (it lands on the retransmission's end),
    // frames 9 and 10 by the new one; both count as timed by the original's TSecr.
    assert_eq!((by, ambiguous), ([0, 3, 0, 0, 0], 0));
}

#[test]
fn one_ack_of_everything_echoing_the_first_originals_tsval_is_timed_from_the_last() {
    // A delayed cumulative ACK of all three, sent before the retransmission arrived (it
    // echoes frame 4's TSval): timed from the newest segment it completes, frame 6.
    let mut cap = Cap::default();
    rto_of_the_first_segment(&mut cap);
    cap.push(
        420_000,
        raw(Sv, 0, 5001, 1301, ACK, 0).timestamps(9420, 1100),
    ); // 8
    let (got, by, ambiguous) = run(&cap);
    let mut want = handshake_samples();
    want.push(s(8, 6, "seq", 318_000.0));
    assert_eq!(got, want);
    assert_eq!((by, ambiguous), ([0, 1, 0, 0, 0], 0));
}

#[test]
fn an_ack_echoing_the_retransmission_is_not_timed() {
    // The first segment was lost: the retransmission filled the hole and released the
    // cumulative ACK of all three (it echoes 1400). Its time belongs to neither copy of the
    // segments behind it (Dart's collapse): no sample.
    let mut cap = Cap::default();
    rto_of_the_first_segment(&mut cap);
    cap.push(
        430_000,
        raw(Sv, 0, 5001, 1301, ACK, 0).timestamps(9430, 1400),
    ); // 8
    let (got, by, ambiguous) = run(&cap);
    assert_eq!(got, handshake_samples());
    assert_eq!((by, ambiguous), ([0; 5], 1));
}

#[test]
fn once_the_echo_reaches_the_retransmission_later_acks_are_not_timed() {
    // The first ACK answers the original (320 ms); the next echoes the retransmission: the
    // receiver had it when it acknowledged frame 5, which may have waited for it.
    let mut cap = Cap::default();
    rto_of_the_first_segment(&mut cap);
    cap.push(
        420_000,
        raw(Sv, 0, 5001, 1101, ACK, 0).timestamps(9420, 1100),
    ); // 8
    cap.push(
        431_000,
        raw(Sv, 0, 5001, 1201, ACK, 0).timestamps(9431, 1400),
    ); // 9
    cap.push(
        432_000,
        raw(Sv, 0, 5001, 1301, ACK, 0).timestamps(9432, 1102),
    ); // 10
    let (got, by, ambiguous) = run(&cap);
    let mut want = handshake_samples();
    want.push(s(8, 4, "seq", 320_000.0));
    assert_eq!(got, want);
    // Frame 10's echo (1102) cannot go back below 1400 on an RFC 7323 receiver: the bound
    // was dropped at frame 9, so it is not timed either.
    assert_eq!((by, ambiguous), ([0, 1, 0, 0, 0], 2));
}

#[test]
fn an_echo_naming_no_segment_the_ack_acknowledges_is_not_trusted() {
    // Frame 9 acknowledges frame 5 but echoes frame 4's TSval: older than the
    // retransmission, but it names nothing this ACK acknowledges for the first time.
    let mut cap = Cap::default();
    rto_of_the_first_segment(&mut cap);
    cap.push(
        420_000,
        raw(Sv, 0, 5001, 1101, ACK, 0).timestamps(9420, 1100),
    ); // 8
    cap.push(
        421_000,
        raw(Sv, 0, 5001, 1201, ACK, 0).timestamps(9421, 1100),
    ); // 9
    let (got, by, ambiguous) = run(&cap);
    let mut want = handshake_samples();
    want.push(s(8, 4, "seq", 320_000.0));
    assert_eq!(got, want);
    assert_eq!((by, ambiguous), ([0, 1, 0, 0, 0], 1));
}

#[test]
fn a_retransmission_in_the_same_clock_tick_tells_nothing() {
    // A fast retransmission 1 ms after the last segment carries its TSval (1102): an echo
    // of 1102 may come from either copy.
    let mut cap = Cap::default();
    rto_of_the_first_segment(&mut cap);
    cap.0.pop();
    cap.push(
        103_000,
        raw(Cl, 4, 1001, 5001, ACK | PSH, 100).timestamps(1102, 9000),
    ); // 7
    cap.push(
        130_000,
        raw(Sv, 0, 5001, 1301, ACK, 0).timestamps(9130, 1102),
    ); // 8
    let (got, by, ambiguous) = run(&cap);
    assert_eq!(got, handshake_samples());
    assert_eq!((by, ambiguous), ([0; 5], 1));
}

#[test]
fn a_retransmission_past_the_left_edge_bounds_nothing() {
    // The second segment is sent again, not the first: it starts beyond everything the
    // receiver had acknowledged, so its arrival need not move the echo (an out-of-order
    // segment does not), and an old echo no longer proves the ACK came before it.
    let mut cap = Cap::default();
    rto_of_the_first_segment(&mut cap);
    cap.0.pop();
    cap.push(
        400_000,
        raw(Cl, 4, 1101, 5001, ACK | PSH, 100).timestamps(1400, 9000),
    ); // 7
    cap.push(
        420_000,
        raw(Sv, 0, 5001, 1301, ACK, 0).timestamps(9420, 1100),
    ); // 8
    let (got, by, ambiguous) = run(&cap);
    assert_eq!(got, handshake_samples());
    assert_eq!((by, ambiguous), ([0; 5], 1));
}

#[test]
fn a_segment_sent_three_times_bounds_nothing() {
    // The first segment is sent a third time: the retransmission is no longer the only other
    // copy, and the rule is off for everything it collapsed.
    let mut cap = Cap::default();
    rto_of_the_first_segment(&mut cap);
    cap.push(
        1_000_000,
        raw(Cl, 5, 1001, 5001, ACK | PSH, 100).timestamps(2000, 9000),
    ); // 8
    cap.push(
        1_020_000,
        raw(Sv, 0, 5001, 1201, ACK, 0).timestamps(9420, 1101),
    ); // 9
    let (got, by, ambiguous) = run(&cap);
    assert_eq!(got, handshake_samples());
    assert_eq!((by, ambiguous), ([0; 5], 1));
}

#[test]
fn without_timestamps_nothing_behind_a_retransmission_is_timed() {
    let mut cap = Cap::default();
    cap.push(0, raw(Cl, 0, 1000, 0, SYN, 0));
    cap.push(30_000, raw(Sv, 0, 5000, 1001, SYN | ACK, 0));
    cap.push(31_000, raw(Cl, 0, 1001, 5001, ACK, 0));
    for i in 0..3u32 {
        cap.push(
            100_000 + i64::from(i) * 1000,
            raw(Cl, 1 + i as u16, 1001 + 100 * i, 5001, ACK | PSH, 100),
        );
    }
    cap.push(400_000, raw(Cl, 4, 1001, 5001, ACK | PSH, 100)); // 7
    cap.push(421_000, raw(Sv, 0, 5001, 1201, ACK, 0)); // 8
    let (got, by, ambiguous) = run(&cap);
    assert_eq!(got, handshake_samples());
    assert_eq!((by, ambiguous), ([0; 5], 1));
}

// --- (b) Reordered before the capture point: a late original proven by its IP ID.

/// tcpflow__jpegs.cap frames 18-22, as seen at the client (there the first segment's last
/// part comes as an IP fragment; here it is one whole segment). `ids` are the server's IP IDs
/// on the SYN/ACK, the first segment (frame 4), the FIN segment (frame 5, captured beyond a
/// gap) and the segment that fills the gap 23 ms later (frame 7). The client acknowledges
/// frame 4 at once (frame 6) and everything 67 us after frame 7 (frame 8). `frame` builds
/// each frame (IPv4 or IPv6).
fn late_segment_with(
    ids: [u16; 4],
    frame: fn(Side, u16, u32, u32, u16, usize) -> TcpFrame<'static>,
) -> Cap {
    let mut cap = Cap::default();
    cap.push(0, frame(Cl, 0, 1000, 0, SYN, 0));
    cap.push(30_000, frame(Sv, ids[0], 5000, 1001, SYN | ACK, 0));
    cap.push(31_000, frame(Cl, 0, 1001, 5001, ACK, 0));
    cap.push(100_000, frame(Sv, ids[1], 5001, 1001, ACK, 1460)); // 4
    cap.push(100_790, frame(Sv, ids[2], 7680, 1001, ACK | PSH | FIN, 5)); // 5
    cap.push(100_829, frame(Cl, 0, 1001, 6461, ACK, 0)); // 6: acks frame 4 (internal)
    cap.push(124_203, frame(Sv, ids[3], 6461, 1001, ACK | PSH, 1219)); // 7: the late one
    cap.push(124_270, frame(Cl, 0, 1001, 7686, ACK, 0)); // 8: acks everything
    cap
}

fn late_segment(ids: [u16; 4]) -> Cap {
    late_segment_with(ids, raw)
}

/// The samples every variant of [`late_segment`] gives: the handshake, and the client's
/// immediate ACK of frame 4 (829 us: the client's own stack).
fn before_the_late_segment() -> Vec<Sample> {
    let client = "10.0.0.1:40000".to_string();
    vec![
        s(2, 1, "handshake", 30_000.0),
        (3, 2, "handshake".into(), client.clone(), 1000.0),
        (6, 4, "seq".into(), client, 829.0),
    ]
}

/// Frame 8 timed from frame 7.
fn with_the_late_segment_timed() -> Vec<Sample> {
    let mut want = before_the_late_segment();
    want.push((8, 7, "seq".into(), "10.0.0.1:40000".into(), 67.0));
    want
}

#[test]
fn a_late_original_proven_by_its_ip_id_is_timed_from_its_own_arrival() {
    // The server's IP IDs count up (1, 5, 7) and frame 7's, 6, is one it skipped before
    // frame 5: frame 7 was sent before frame 5, once, and overtaken; its bytes were never
    // captured before (they lie in the gap frame 5 opened). The client held frame 5 until
    // frame 7 filled the gap, then acknowledged everything: frame 8 answers frame 7 (67 us).
    // tshark times it from frame 5 (23.48 ms there), which adds the time frame 5 waited for
    // the hole: that value must never come out.
    let (got, by, ambiguous) = run(&late_segment([1, 5, 7, 6]));
    assert_eq!(got, with_the_late_segment_timed());
    assert!(!got.iter().any(|x| x.0 == 8 && x.1 == 5), "{got:?}");
    assert_eq!((by, ambiguous), ([0; 5], 0));
}

#[test]
fn a_hole_filler_with_a_newer_ip_id_is_a_retransmission() {
    // Frame 7 carries 8, newer than frame 5's 7: sent after it, so a retransmission (its
    // first copy may have reached the client unseen). Karn: frame 8 is not timed.
    let (got, by, ambiguous) = run(&late_segment([1, 5, 7, 8]));
    assert_eq!(got, before_the_late_segment());
    assert_eq!((by, ambiguous), ([0; 5], 1));
}

#[test]
fn constant_zero_or_random_ip_ids_prove_nothing() {
    for ids in [
        // One ID for everything (no per-packet counter).
        [7, 7, 7, 7],
        // IP ID 0 (Linux with DF on some paths).
        [0, 0, 0, 0],
        // IDs that change but jumped back by 4700 before (random): 299 is one below 300
        // by chance, not by order.
        [1, 5000, 300, 299],
    ] {
        let (got, by, ambiguous) = run(&late_segment(ids));
        assert_eq!(got, before_the_late_segment(), "{ids:?}");
        assert_eq!((by, ambiguous), ([0; 5], 1), "{ids:?}");
    }
}

#[test]
fn ipv6_has_no_ip_id_and_proves_nothing() {
    fn v6(
        from: Side,
        _ip_id: u16,
        seq: u32,
        ack: u32,
        flags: u16,
        len: usize,
    ) -> TcpFrame<'static> {
        let (cl, sv) = (
            std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 1),
            std::net::Ipv6Addr::new(0xfd00, 0, 0, 0, 0, 0, 0, 2),
        );
        let (src, sp, dst, dp) = match from {
            Cl => (cl, 40000, sv, 80),
            Sv => (sv, 80, cl, 40000),
        };
        TcpFrame::v6(src, sp, dst, dp)
            .seq(seq)
            .ack(ack)
            .flags(flags)
            .payload_len(len)
    }
    // The same frames as the IPv4 case that is timed; IPv6 carries no ID to order them.
    let (got, by, ambiguous) = run(&late_segment_with([1, 5, 7, 6], v6));
    let frames: Vec<_> = got.iter().map(|x| (x.0, x.1, x.4)).collect();
    assert_eq!(
        frames,
        [(2, 1, 30_000.0), (3, 2, 1000.0), (6, 4, 829.0)],
        "{got:?}"
    );
    assert_eq!((by, ambiguous), ([0; 5], 1));
}

#[test]
fn ip_ids_are_ordered_across_the_16_bit_wrap_within_a_bounded_window() {
    // 0xfffd, then 0x0001 beyond the gap: 0xffff is two older, across the wrap, and was
    // skipped: a late original.
    let (got, _, ambiguous) = run(&late_segment([0xfff0, 0xfffd, 0x0001, 0xffff]));
    assert_eq!(got, with_the_late_segment_timed());
    assert_eq!(ambiguous, 0);
    // Older by 17 (more than a reordering's window of 16): nothing proven, even though the
    // ID lies between the two before it.
    let (got, _, ambiguous) = run(&late_segment([0xffd0, 0xffe0, 0x0001, 0xfff0]));
    assert_eq!(got, before_the_late_segment());
    assert_eq!(ambiguous, 1);
    // Older by 4, inside the window, but older than frame 4's ID too (0xfffe): not one the
    // sender skipped between frame 4 and frame 5, so not the bytes between them.
    let (got, _, ambiguous) = run(&late_segment([0xfff0, 0xfffe, 0x0001, 0xfffd]));
    assert_eq!(got, before_the_late_segment());
    assert_eq!(ambiguous, 1);
}

#[test]
fn a_newer_tsval_on_the_late_segment_contradicts_its_ip_id() {
    // The same frames with timestamps: frame 5 carries TSval 500. With frame 7 at 499 or 500
    // the clock agrees with the IP IDs; at 523 (23 ms later) frame 7 was sent after frame 5,
    // whatever its ID says: not timed. (The client's ACKs echo the server's last TSval in
    // order; the echo of frame 7 would not prove which copy arrived: it has none.)
    for (tsval, timed) in [(499, true), (500, true), (523, false)] {
        let ts = |f: TcpFrame<'static>, v: u32, e: u32| f.timestamps(v, e);
        let mut cap = Cap::default();
        cap.push(0, ts(raw(Cl, 0, 1000, 0, SYN, 0), 100, 0));
        cap.push(30_000, ts(raw(Sv, 1, 5000, 1001, SYN | ACK, 0), 400, 100));
        cap.push(31_000, ts(raw(Cl, 0, 1001, 5001, ACK, 0), 131, 400));
        cap.push(100_000, ts(raw(Sv, 5, 5001, 1001, ACK, 1460), 480, 131)); // 4
        cap.push(
            100_790,
            ts(raw(Sv, 7, 7680, 1001, ACK | PSH | FIN, 5), 500, 131),
        ); // 5
        cap.push(100_829, ts(raw(Cl, 0, 1001, 6461, ACK, 0), 201, 480)); // 6
        cap.push(
            124_203,
            ts(raw(Sv, 6, 6461, 1001, ACK | PSH, 1219), tsval, 131),
        ); // 7
        cap.push(124_270, ts(raw(Cl, 0, 1001, 7686, ACK, 0), 224, tsval)); // 8
        let (got, by, ambiguous) = run(&cap);
        let want = if timed {
            with_the_late_segment_timed()
        } else {
            before_the_late_segment()
        };
        assert_eq!(got, want, "TSval {tsval}");
        assert_eq!(
            (by, ambiguous),
            ([0; 5], u64::from(!timed)),
            "TSval {tsval}"
        );
    }
}

#[test]
fn an_ack_of_the_late_segment_alone_is_timed_from_it() {
    // Frame 7 fills only the first part of the gap (6461-7000); the client acknowledges
    // exactly its end: timed from it. The rest (frame 9, sent after frame 5: ID 8) is a
    // retransmission, and the ACK of everything after it is not timed.
    let mut cap = Cap::default();
    let base = late_segment([1, 5, 7, 6]);
    cap.0.extend_from_slice(&base.0[..6]);
    cap.push(124_203, raw(Sv, 6, 6461, 1001, ACK | PSH, 539)); // 7
    cap.push(124_270, raw(Cl, 0, 1001, 7000, ACK, 0)); // 8
    cap.push(330_000, raw(Sv, 8, 7000, 1001, ACK | PSH, 680)); // 9
    cap.push(330_050, raw(Cl, 0, 1001, 7686, ACK, 0)); // 10
    let (got, by, ambiguous) = run(&cap);
    assert_eq!(got, with_the_late_segment_timed());
    assert_eq!((by, ambiguous), ([0; 5], 1));
}

#[test]
fn a_repeated_ip_id_is_not_a_reordering() {
    // Frame 7 repeats frame 5's ID (7): a copy's ID, not an older one.
    let (got, _, ambiguous) = run(&late_segment([1, 5, 7, 7]));
    assert_eq!(got, before_the_late_segment());
    assert_eq!(ambiguous, 1);
    // Frame 7 repeats frame 4's ID (5): older than frame 5's, but already used; a per-packet
    // counter never gives it again.
    let (got, _, ambiguous) = run(&late_segment([1, 5, 7, 5]));
    assert_eq!(got, before_the_late_segment());
    assert_eq!(ambiguous, 1);
}

#[test]
fn an_ack_past_the_gap_forgets_it() {
    // The client acknowledges everything up to the end of frame 5 (frame 7): the gap's bytes
    // reached it unseen, and the gap is closed for good. The server's IDs then go on counting
    // up (steps of 21845, a busy host's shared counter) until they wrap around to 6 again:
    // frame 11, 65535 IDs after frame 5, re-sends the gap's bytes with the ID a late original
    // would have carried. It is a retransmission, long after the gap was acknowledged: the
    // ACK landing on frame 10 (frame 12) is ambiguous, never timed from frame 11.
    let mut cap = Cap::default();
    let base = late_segment([1, 5, 7, 6]);
    cap.0.extend_from_slice(&base.0[..4]);
    cap.push(100_790, raw(Sv, 7, 7680, 1001, ACK | PSH, 100)); // 5: beyond the gap
    cap.push(100_829, raw(Cl, 0, 1001, 6461, ACK, 0)); // 6
    cap.push(124_270, raw(Cl, 0, 1001, 7780, ACK, 0)); // 7: past the gap
    cap.push(200_000, raw(Sv, 21852, 7780, 1001, ACK | PSH, 100)); // 8
    cap.push(200_100, raw(Cl, 0, 1001, 7880, ACK, 0)); // 9
    cap.push(300_000, raw(Sv, 43697, 7880, 1001, ACK | PSH, 100)); // 10
    cap.push(300_500, raw(Sv, 6, 6461, 1001, ACK | PSH, 1219)); // 11: ID wrapped to 6
    cap.push(300_600, raw(Cl, 0, 1001, 7980, ACK, 0)); // 12
    let (got, by, ambiguous) = run(&cap);
    let client = "10.0.0.1:40000".to_string();
    let mut want = before_the_late_segment();
    want.push((7, 5, "seq".into(), client.clone(), 23_480.0));
    want.push((9, 8, "seq".into(), client, 100.0));
    assert_eq!(got, want);
    assert_eq!((by, ambiguous), ([0; 5], 1));
}

#[test]
fn a_late_looking_segment_over_acknowledged_bytes_is_a_retransmission() {
    // Frame 5 (ID 7) opens the gap 6461-7680, and the client acknowledges into or past it
    // (frame 7) before the segment filling it is captured: those bytes reached the client
    // unseen. The server sends new data C (frame 8, ID 8), then frame 9 re-sends the gap
    // with ID 6, the one it skipped before frame 5. Starting below the ACK, it is not the
    // first copy of its bytes whatever its ID: a retransmission, and the ACK landing on C
    // (frame 10) is ambiguous, never timed from frame 9. Starting at the ACK (7000, the
    // receiver's left edge), the same ID proves a late original: frame 10 was released by
    // its arrival (67 us).
    for (acked, late_start, timed) in [(7780, 6461, false), (7000, 6461, false), (7000, 7000, true)]
    {
        let mut cap = Cap::default();
        let base = late_segment([1, 5, 7, 6]);
        cap.0.extend_from_slice(&base.0[..4]);
        cap.push(100_790, raw(Sv, 7, 7680, 1001, ACK | PSH, 100)); // 5: beyond the gap
        cap.push(100_829, raw(Cl, 0, 1001, 6461, ACK, 0)); // 6
        cap.push(101_000, raw(Cl, 0, 1001, acked, ACK, 0)); // 7
        cap.push(110_000, raw(Sv, 8, 7780, 1001, ACK | PSH, 100)); // 8: C
        let len = 7680 - late_start as usize;
        cap.push(124_203, raw(Sv, 6, late_start, 1001, ACK | PSH, len)); // 9
        cap.push(124_270, raw(Cl, 0, 1001, 7880, ACK, 0)); // 10: lands on C
        let (got, by, ambiguous) = run(&cap);
        let client = "10.0.0.1:40000".to_string();
        let mut want = before_the_late_segment();
        if acked == 7780 {
            want.push((7, 5, "seq".into(), client.clone(), 210.0));
        }
        if timed {
            want.push((10, 9, "seq".into(), client, 67.0));
        }
        assert_eq!(got, want, "ACK {acked}, late segment at {late_start}");
        assert_eq!(
            (by, ambiguous),
            ([0; 5], u64::from(!timed)),
            "ACK {acked}, late segment at {late_start}"
        );
    }
}

// --- Real traffic: Linux TCP between namespaces.

#[test]
fn linux_spurious_timeout_behind_the_first_segment_is_timed_as_tshark_times_it() {
    if !netns::needs_root("namespaces and a capture of real TCP") {
        return;
    }
    // client -- delay line (5 ms each way) -- server. The client sends three segments of
    // 1000 bytes (too big for Linux to merge them into one retransmission) while the server's ACKs are held 600 ms more: its retransmission timer
    // (about 210 ms here) fires and re-sends the first segment; the ACKs then arrive, each
    // echoing the TSval of the original it acknowledges. Tail loss probes are off in the
    // client's namespace, so the timeout's retransmission is the only one.
    let d = netns::Delayed::new("acc", 61, Duration::from_millis(5));
    let sysctl =
        d.c.command("sysctl")
            .args(["-qw", "net.ipv4.tcp_early_retrans=0"])
            .status()
            .unwrap();
    assert!(sysctl.success());
    let dir = std::env::temp_dir().join(format!("metro-accuracy-rto-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("client.pcapng");
    let dumpcap = d.c.dumpcap("veth0", "tcp", &pcap);
    let server = format!("{}:8080", d.server_ip());
    let bind = server.clone();
    let srv = d.s.spawn(move || {
        let l = TcpListener::bind(&bind).unwrap();
        let (mut c, _) = l.accept().unwrap();
        let mut buf = [0u8; 4096];
        let mut total = 0;
        while let Ok(n) = c.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n;
        }
        total
    });
    std::thread::sleep(Duration::from_millis(200));
    let to = server.clone();
    let sent = d.c.enter(move || {
        let mut c = TcpStream::connect(&to).unwrap();
        c.set_nodelay(true).unwrap();
        // Let the handshake's RTT settle the timer (a few round trips of 10 ms).
        for _ in 0..5 {
            c.write_all(&[1u8; 100]).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        c
    });
    d.set_extra_delay(true, Duration::from_millis(600));
    let mut c = sent;
    for _ in 0..3 {
        c.write_all(&[2u8; 1000]).unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    std::thread::sleep(Duration::from_millis(100));
    d.set_extra_delay(true, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(1500));
    drop(c);
    assert_eq!(srv.join().unwrap(), 3500);
    std::thread::sleep(Duration::from_millis(300));
    dumpcap.stop();

    let (got, by, _) = analyze(&pcap);
    let tshark = Command::new("tshark")
        .args(["-r"])
        .arg(&pcap)
        .args([
            "-Y",
            "tcp.analysis.ack_rtt",
            "-T",
            "fields",
            "-e",
            "frame.number",
            "-e",
            "tcp.analysis.ack_rtt",
        ])
        .output()
        .unwrap();
    let reference: std::collections::BTreeMap<u64, f64> = String::from_utf8(tshark.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let (f, v) = l.split_once('\t')?;
            Some((f.parse().ok()?, v.parse().ok()?))
        })
        .collect();
    if let Some(keep) = std::env::var_os("METRO_ACCURACY_KEEP") {
        std::fs::copy(&pcap, keep).unwrap();
    }
    std::fs::remove_dir_all(&dir).ok();
    // Every sample metro gives is tshark's, to the microsecond.
    for (frame, _, kind, _, rtt_us) in &got {
        let t = reference.get(frame).copied();
        assert!(
            t.is_some_and(|t| (t * 1e6 - rtt_us).abs() <= 1.5),
            "frame {frame} ({kind}): metro {rtt_us} us, tshark {t:?} s\n{got:?}\n{reference:?}"
        );
    }
    // The three held ACKs are timed from their originals (about 610 ms): the first by the
    // ACK landing on the retransmission's end, the two behind it by the new rule.
    let slow: Vec<_> = got.iter().filter(|x| x.4 > 600_000.0).collect();
    assert_eq!(slow.len(), 3, "{got:?}");
    assert!(slow.iter().all(|x| x.4 < 700_000.0), "{slow:?}");
    assert_eq!(by[1], 3, "{by:?}");
}

#[test]
fn linux_segment_overtaken_before_the_capture_is_timed_from_its_own_arrival() {
    if !netns::needs_root("namespaces and a capture of real TCP") {
        return;
    }
    // client -- delay line (20 ms each way) -- server, captured at the client. The server
    // sends five messages of 100 bytes (its IP IDs, one per packet, show they count up),
    // then two segments of 1000 bytes 1 ms apart; the delay line holds the first 7 ms more,
    // so the second reaches the client first (a duplicate ACK) and the first fills the gap
    // a few ms later: the client acknowledges both at once. The ACK of both reaches the server
    // before RACK (whose reordering window is a quarter of the 40 ms round trip) would mark
    // the first lost, and tail loss probes are off in the server's namespace, so the held
    // segment is sent once: it must be timed from its own arrival, not from the segment
    // captured before it (tshark's value, a few ms more).
    let _timed = crate::support::timed();
    let d = netns::Delayed::new("reo", 62, Duration::from_millis(20));
    let ok =
        d.s.command("sysctl")
            .args(["-qw", "net.ipv4.tcp_early_retrans=0"])
            .status()
            .unwrap();
    assert!(ok.success());
    let dir = std::env::temp_dir().join(format!("metro-accuracy-reo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("client.pcapng");
    let dumpcap = d.c.dumpcap("veth0", "tcp", &pcap);
    let server = format!("{}:8080", d.server_ip());
    let bind = server.clone();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let srv = d.s.spawn(move || {
        let l = TcpListener::bind(&bind).unwrap();
        ready_tx.send(()).unwrap();
        let (mut c, _) = l.accept().unwrap();
        c.set_nodelay(true).unwrap();
        for _ in 0..5 {
            c.write_all(&[1u8; 100]).unwrap();
            std::thread::sleep(Duration::from_millis(30));
        }
        c.write_all(&[2u8; 1000]).unwrap();
        std::thread::sleep(Duration::from_millis(2));
        c.write_all(&[3u8; 1000]).unwrap();
        std::thread::sleep(Duration::from_millis(300));
    });
    ready_rx.recv_timeout(Duration::from_secs(5)).unwrap();
    // Only the first 1000-byte segment is long enough to be held (the 100-byte messages
    // and the ACKs pass).
    d.hold_next(true, 1000, Duration::from_millis(7));
    let to = server.clone();
    let got_bytes = d.c.enter(move || {
        let mut c = TcpStream::connect(&to).unwrap();
        let mut all = Vec::new();
        c.read_to_end(&mut all).unwrap();
        all.len()
    });
    srv.join().unwrap();
    assert_eq!(got_bytes, 2500);
    std::thread::sleep(Duration::from_millis(300));
    dumpcap.stop();

    // The frames, from tshark: number, time, source port, raw seq, length, raw ack, IP ID,
    // ack_rtt.
    let fields = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-T", "fields", "-E", "occurrence=f"])
        .args([
            "-e",
            "frame.number",
            "-e",
            "frame.time_epoch",
            "-e",
            "tcp.srcport",
        ])
        .args([
            "-e",
            "tcp.seq_raw",
            "-e",
            "tcp.len",
            "-e",
            "tcp.ack_raw",
            "-e",
            "ip.id",
        ])
        .args(["-e", "tcp.analysis.ack_rtt"])
        .output()
        .unwrap();
    if let Some(keep) = std::env::var_os("METRO_ACCURACY_KEEP") {
        std::fs::copy(&pcap, keep).unwrap();
    }
    let (got, _, _) = analyze(&pcap);
    std::fs::remove_dir_all(&dir).ok();
    struct F {
        n: u64,
        t: f64,
        sport: u16,
        seq: u32,
        len: u32,
        ack: u32,
        id: u16,
        ack_rtt: Option<f64>,
    }
    let frames: Vec<F> = String::from_utf8(fields.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: Vec<&str> = l.split('\t').collect();
            F {
                n: v[0].parse().unwrap(),
                t: v[1].parse().unwrap(),
                sport: v[2].parse().unwrap(),
                seq: v[3].parse().unwrap(),
                len: v[4].parse().unwrap(),
                ack: v[5].parse().unwrap_or(0),
                id: u16::from_str_radix(v[6].trim_start_matches("0x"), 16).unwrap(),
                ack_rtt: v.get(7).and_then(|x| x.parse().ok()),
            }
        })
        .collect();
    // The two 1000-byte segments in capture order: the second overtook the first.
    let big: Vec<&F> = frames
        .iter()
        .filter(|f| f.sport == 8080 && f.len == 1000)
        .collect();
    assert_eq!(big.len(), 2, "each sent once");
    let (beyond, late) = (big[0], big[1]);
    assert_eq!(
        late.seq.wrapping_add(1000),
        beyond.seq,
        "captured out of order"
    );
    assert_eq!(
        late.id.wrapping_add(1),
        beyond.id,
        "Linux numbers each packet"
    );
    // The client's ACK of both: the first ACK past the second segment.
    let end = beyond.seq.wrapping_add(1000);
    let answer = frames
        .iter()
        .find(|f| f.sport != 8080 && f.ack == end)
        .expect("the ACK of both");
    assert!(answer.n > late.n);
    let want_us = ((answer.t - late.t) * 1e6 * 1000.0).round() / 1000.0;
    let sample = got
        .iter()
        .find(|x| x.0 == answer.n)
        .expect("the ACK of both is timed");
    assert_eq!(sample.1, late.n, "{got:?}");
    assert!(
        (sample.4 - want_us).abs() <= 1.0,
        "metro {} us, capture {want_us} us",
        sample.4
    );
    // tshark times it from the segment captured first: more by exactly the time the late
    // one came after it.
    let tshark = answer.ack_rtt.expect("tshark times it");
    assert!(((answer.t - beyond.t) - tshark).abs() < 2e-6, "{tshark}");
    let more_us = (late.t - beyond.t) * 1e6;
    assert!(more_us > 0.0);
    assert!(
        (tshark * 1e6 - sample.4 - more_us).abs() <= 2.0,
        "tshark {tshark} s, metro {} us, late by {more_us} us",
        sample.4
    );
}
