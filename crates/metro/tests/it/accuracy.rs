//! Samples that Karn's and Dart's rules alone would drop, recovered when the capture proves
//! which transmission an ACK answers (docs/accuracy.md). Hand-built captures with
//! hand-computed answers, run through the whole pipeline (pcap writer, reader, decoder,
//! engine, JSON sample lines); frame numbers are 1-based, as tshark counts them. Each rule has
//! its negative cases: an ACK that could answer either copy is never timed.

use crate::support::netns;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
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

// --- (b) Reordered before the capture point: not timed yet.

#[test]
fn an_ack_released_by_a_late_segment_is_not_timed_from_the_segment_captured_before_it() {
    // tcpflow__jpegs.cap frames 18-22, as seen at the client (there the first segment's
    // last part comes as an IP fragment; here it is one whole segment): the server's IP IDs (5, 7, 6)
    // prove the middle segment was sent before the FIN segment captured ahead of it, so it
    // is a late original, not a retransmission. The client's ACK of everything comes 67 us
    // after the late segment: its arrival released the ACK. Timing it from the FIN segment
    // (tshark: 23.48 ms there) would add the time that segment waited for the hole to fill;
    // the ACK is counted, not timed (docs/accuracy.md, "Reordering").
    let mut cap = Cap::default();
    cap.push(0, raw(Cl, 0, 1000, 0, SYN, 0));
    cap.push(30_000, raw(Sv, 1, 5000, 1001, SYN | ACK, 0));
    cap.push(31_000, raw(Cl, 0, 1001, 5001, ACK, 0));
    cap.push(100_000, raw(Sv, 5, 5001, 1001, ACK, 1460)); // 4
    cap.push(100_790, raw(Sv, 7, 7680, 1001, ACK | PSH | FIN, 5)); // 5
    cap.push(100_829, raw(Cl, 0, 1001, 6461, ACK, 0)); // 6: acks frame 4 (internal)
    cap.push(124_203, raw(Sv, 6, 6461, 1001, ACK | PSH, 1219)); // 7: the late one
    cap.push(124_270, raw(Cl, 0, 1001, 7686, ACK, 0)); // 8: acks everything
    let (got, by, ambiguous) = run(&cap);
    let client = "10.0.0.1:40000".to_string();
    let want = vec![
        s(2, 1, "handshake", 30_000.0),
        (3, 2, "handshake".into(), client.clone(), 1000.0),
        (6, 4, "seq".into(), client, 829.0),
    ];
    assert_eq!(got, want);
    assert_eq!((by, ambiguous), ([0; 5], 1));
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
    let mut dumpcap =
        d.c.command("dumpcap")
            .args(["-q", "-i", "veth0", "-f", "tcp", "-w"])
            .arg(&pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
    // dumpcap says "Capturing on" once it listens.
    let mut err = dumpcap.stderr.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("Capturing on") {
        assert_eq!(err.read(&mut byte).unwrap(), 1, "dumpcap stopped");
        seen.push(byte[0]);
    }
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
        std::thread::sleep(Duration::from_millis(2));
    }
    std::thread::sleep(Duration::from_millis(100));
    d.set_extra_delay(true, Duration::ZERO);
    std::thread::sleep(Duration::from_millis(1500));
    drop(c);
    assert_eq!(srv.join().unwrap(), 3500);
    std::thread::sleep(Duration::from_millis(300));
    // SAFETY: signalling the dumpcap this test started, by its pid.
    unsafe {
        libc::kill(dumpcap.id() as i32, libc::SIGINT);
    }
    dumpcap.wait().unwrap();

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
