//! The shared corpus (148 real captures) against metro: every file runs to the end or stops
//! with a clear message, never a panic or a hang; and metro's seq/handshake samples agree
//! with tshark 4.0's `tcp.analysis.ack_rtt`, frame by frame, within 1 us.
//!
//! tshark's values are stored in tests/data/tshark_ack_rtt.tsv (made by
//! scripts/tshark-expectations.sh), so this test does not need tshark.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use crate::support;
use crate::support::corpus as corpus_support;
use corpus_support::{SampleLine, corpus_files, sample_lines, tshark_rows};

use metro_core::config::EngineConfig;

struct Outcome {
    records: u64,
    error: Option<String>,
    samples: Vec<SampleLine>,
}

/// Analyze one file on a thread, so a panic is caught and a hang is detected.
fn analyze(path: &Path) -> Outcome {
    let (tx, rx) = mpsc::channel();
    let p = path.to_path_buf();
    let handle = std::thread::spawn(move || {
        let mut out: Vec<u8> = Vec::new();
        let report = metro::analyze::analyze_files(
            std::slice::from_ref(&p),
            &EngineConfig::default(),
            false,
            Some(&mut out),
            false,
        )
        .unwrap();
        let samples = sample_lines(&out);
        let f = &report.files[0];
        let _ = tx.send(Outcome {
            records: f.records,
            error: f.error.clone(),
            samples,
        });
    });
    // A hang detector, not a speed target: the largest file takes well under a second.
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(o) => {
            handle.join().unwrap();
            o
        }
        Err(_) => {
            if handle.is_finished() {
                match handle.join() {
                    Err(e) => panic!("{}: panicked: {e:?}", path.display()),
                    Ok(()) => unreachable!(),
                }
            }
            panic!("{}: no result after 120 s (hang?)", path.display())
        }
    }
}

/// Files that are damaged or in a format metro does not read, and what the message must say.
const EXPECTED_ERRORS: &[(&str, &str)] = &[
    ("libpcap__pcap-invalid-version-1.pcap", "version"),
    ("libpcap__pcapng-invalid-vers-1.pcapng", "version"),
    ("libpcap__shb-option-too-long.pcapng", "option"),
    ("suricata-verify__http-mime-truncated__input.pcap", "byte"),
    ("suricata-verify__tls_DER-incomplete-header.pcap", "byte"),
    (
        "suricata-verify__10.7.29.101_49898-178.63.41.150_25.pcap",
        "byte",
    ),
    ("nDPI__fuzz-2021-10-13.pcap", "byte"),
    ("tcptrace__eth.erf", "ERF"),
];

#[test]
fn every_corpus_file_runs_without_panic_or_hang() {
    let _load = support::heavy();
    let mut unexpected = Vec::new();
    for path in corpus_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let o = analyze(&path);
        let expected = EXPECTED_ERRORS.iter().find(|(n, _)| *n == name);
        match (&o.error, expected) {
            (None, None) => {}
            (Some(msg), Some((_, needle))) => {
                assert!(
                    msg.contains(needle),
                    "{name}: message {msg:?} should mention {needle:?}"
                );
            }
            (Some(msg), None) => unexpected.push(format!("{name}: unexpected error: {msg}")),
            (None, Some(_)) => unexpected.push(format!(
                "{name}: expected an error, read {} records cleanly",
                o.records
            )),
        }
    }
    assert!(unexpected.is_empty(), "{}", unexpected.join("\n"));
}

/// tshark's ack_rtt per file: frame -> seconds.
fn tshark_reference() -> HashMap<String, BTreeMap<u64, f64>> {
    let text = include_str!("../data/tshark_ack_rtt.tsv");
    let mut m: HashMap<String, BTreeMap<u64, f64>> = HashMap::new();
    for row in tshark_rows(text) {
        let [f, frame, v] = row[..] else {
            panic!("bad row {row:?}");
        };
        m.entry(f.to_string())
            .or_default()
            .insert(frame.parse().unwrap(), v.parse().unwrap());
    }
    m
}

/// How tshark is misled on a file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Misled {
    /// Records were cut by the snaplen, and tshark takes the TCP payload length from the
    /// captured bytes instead of the IP total length ("IPv4 total length exceeds packet
    /// length"): its segment ends fall short, so the ACKs that complete the real segments get
    /// no ack_rtt. metro may report samples on frames where tshark has none, but only when
    /// the segment they were timed from was cut (checked per sample).
    CutSegments,
    /// A SYN whose TCP options were cut by the snaplen: tshark stops dissecting it and never
    /// records it. metro keeps the header (the options that fit). Checked per sample: the
    /// opener's options must be incomplete.
    CutOptions,
    /// Sub-second timestamp fields out of range (>= 1e9 ns): tshark wraps them into negative
    /// times, metro reads them as written; the two RTTs cannot agree.
    InvalidTimestamps,
}

/// Files where tshark itself is misled, and why. Every other file must agree exactly.
const TSHARK_MISLED: &[(&str, Misled)] = &[
    ("tcptrace__fast_reuse.dmp", Misled::CutSegments),
    ("tcptrace__6syns.dmp", Misled::CutSegments),
    ("tcptrace__long_rtt.dmp", Misled::CutSegments),
    ("zeek__reassembly.pcap", Misled::CutSegments),
    ("tcptrace__all.snoop", Misled::CutOptions),
    (
        "tcpdump__timestamp_invalid_nano.pcap",
        Misled::InvalidTimestamps,
    ),
];

/// Per frame of a file: was the TCP payload cut short, were the TCP options incomplete.
fn cut_frames(path: &Path) -> Vec<(bool, bool)> {
    let mut out = vec![(false, false)];
    let mut r = metro::pcap::CaptureReader::open(path).unwrap();
    while let Ok(Some(rec)) = r.next_record() {
        out.push(match metro_core::wire::decode(rec.linktype, rec.data) {
            Ok(p) => (
                (p.payload.len() as u32) < p.payload_len,
                p.tcp.options.malformed,
            ),
            Err(_) => (false, false),
        });
    }
    out
}

/// Single samples where tshark is wrong or has none, with metro's answer and why
/// (docs/accuracy.md): (file, closing frame, metro's opening frame, metro's RTT in seconds,
/// reason).
const TSHARK_WRONG: &[(&str, u64, u64, f64, &str)] = &[
    (
        "tcptrace__first_seg_ooo.dmp",
        6,
        5,
        0.574646,
        "frame 5 re-sends frame 3's bytes and first delivers the bytes before them (never \
         received: the ACKs stop at the start); ACK 6 echoes frame 5's TSval (2625, frame 3 \
         carried 2621), so it answers frame 5: 0.575 s, as the handshake's 0.574 s. tshark \
         times it from frame 3 (2.841 s).",
    ),
    (
        "zeek__pppoe-over-qinq.pcap",
        14,
        13,
        0.005815,
        "frame 13 re-sends bytes already acknowledged; frame 14 is the duplicate ACK whose \
         DSACK block is exactly frame 13's range: the receiver's immediate answer to it. tshark \
         times only ACKs equal to a segment's end (14 acknowledges more): no value.",
    ),
    (
        "nDPI__opera-vpn.pcapng",
        594,
        396,
        0.02629,
        "frame 396 re-sends 64 bytes already acknowledged; frame 594's DSACK block is exactly \
         them. tshark has no value (the ACK number is past the re-sent range).",
    ),
    (
        "nDPI__forticlient.pcap",
        87,
        84,
        0.05868,
        "frame 84 re-sends 6 bytes already acknowledged; frame 87's DSACK block is exactly them \
         (58.7 ms, as this path's other samples: 67.9 ms). tshark has no value (the ACK number \
         is past the re-sent range).",
    ),
    (
        "tcpflow__jpegs.cap",
        22,
        21,
        0.000067,
        "frame 21 fills the gap before frame 19 (the FIN segment). Its IP ID, 0xf6c6, is one \
         below frame 19's and above the server's data frame before it (the SYN/ACK), from a \
         sender counting up (0xf6c3, 0xf6c4 on its ACKs, 0xf6c5 on frame 18's fragment): sent \
         once, before frame 19, and overtaken. The client, which held frame 19 for 23 ms, \
         acknowledges everything 67 us after frame 21 arrives: frame 22 answers frame 21. \
         tshark times it from frame 19 (23.48 ms), adding the time frame 19 waited for the hole.",
    ),
];

const TOLERANCE: f64 = 1.0e-6 + 1e-9;

#[test]
fn seq_and_handshake_samples_agree_with_tshark() {
    let _load = support::heavy();
    let reference = tshark_reference();
    let mut total_ref = 0usize;
    let mut total_agree = 0usize;
    let mut problems = Vec::new();
    let mut per_file = Vec::new();
    let mut wrong_seen = 0usize;
    for path in corpus_files() {
        let name = path.file_name().unwrap().to_string_lossy().to_string();
        let empty = BTreeMap::new();
        let refs = reference.get(&name).unwrap_or(&empty);
        let o = analyze(&path);
        let misled = TSHARK_MISLED
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, m)| *m);
        let cut = if misled.is_some() {
            cut_frames(&path)
        } else {
            Vec::new()
        };
        let mut agree = 0usize;
        let mut excused = 0usize;
        for (frame, open, kind, rtt) in o
            .samples
            .iter()
            .filter(|s| matches!(s.2.as_str(), "seq" | "handshake"))
        {
            if let Some(w) = TSHARK_WRONG.iter().find(|w| w.0 == name && w.1 == *frame) {
                assert!(
                    w.2 == *open && (w.3 - rtt).abs() <= TOLERANCE,
                    "{name} frame {frame}: metro now {open} {rtt:.9} s, expected {} {} s ({})",
                    w.2,
                    w.3,
                    w.4
                );
                if let Some(t) = refs.get(frame) {
                    assert!(
                        (t - rtt).abs() > TOLERANCE,
                        "{name} frame {frame} now agrees"
                    );
                }
                wrong_seen += 1;
                continue;
            }
            let excuse = match misled {
                Some(Misled::CutSegments) => cut[*open as usize].0,
                Some(Misled::CutOptions) => cut[*open as usize].1,
                Some(Misled::InvalidTimestamps) => true,
                None => false,
            };
            match refs.get(frame) {
                Some(t) if (t - rtt).abs() <= TOLERANCE => agree += 1,
                Some(_) | None if excuse => excused += 1,
                Some(t) => problems.push(format!(
                    "{name} frame {frame} ({kind}): metro {rtt:.9} s, tshark {t:.9} s"
                )),
                None => problems.push(format!(
                    "{name} frame {frame} ({kind}): metro {rtt:.9} s, tshark has no ack_rtt"
                )),
            }
        }
        if misled.is_some() {
            assert!(
                excused > 0,
                "{name} is listed as misleading tshark but nothing differs"
            );
        }
        total_ref += refs.len();
        total_agree += agree;
        per_file.push(format!("{name}: tshark {} metro-agree {agree}", refs.len()));
    }
    assert!(
        problems.is_empty(),
        "{} samples disagree with tshark:\n{}",
        problems.len(),
        problems
            .iter()
            .take(60)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert_eq!(
        wrong_seen,
        TSHARK_WRONG.len(),
        "every listed difference is still produced"
    );
    let coverage = total_agree as f64 / total_ref as f64;
    eprintln!("coverage of tshark's samples: {total_agree}/{total_ref} = {coverage:.4}");
    assert!(
        coverage >= 0.95,
        "metro covers {total_agree} of tshark's {total_ref} samples ({coverage:.4} < 0.95)\n{}",
        per_file.join("\n")
    );
}

/// `wire::decode`'s shortcut for the common Ethernet / IP / TCP shape gives what the general
/// decoder gives, on every record of every corpus file (and the shortcut is taken often).
#[test]
fn the_decoder_shortcut_agrees_with_the_general_path_on_every_record() {
    let _load = support::heavy();
    use metro::pcap::CaptureReader;
    use metro_core::wire::{decode, decode_general};
    let (mut records, mut ethernet_tcp) = (0u64, 0u64);
    for path in corpus_files() {
        let Ok(mut r) = CaptureReader::open(&path) else {
            continue;
        };
        while let Ok(Some(rec)) = r.next_record() {
            records += 1;
            let (a, b) = (
                decode(rec.linktype, rec.data),
                decode_general(rec.linktype, rec.data),
            );
            assert_eq!(
                format!("{a:?}"),
                format!("{b:?}"),
                "{} record {}",
                path.display(),
                r.records()
            );
            if let (Ok(a), Ok(b)) = (a, b) {
                assert_eq!(a.payload.as_ptr_range(), b.payload.as_ptr_range());
                ethernet_tcp += u64::from(rec.linktype == 1);
            }
        }
    }
    assert!(records > 70_000, "{records} records");
    assert!(
        ethernet_tcp > 50_000,
        "{ethernet_tcp} Ethernet records decoded"
    );
}
