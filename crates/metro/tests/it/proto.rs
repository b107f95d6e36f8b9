//! QUIC, DNS and ICMP on real captures (the shared corpora, SOURCES.md): metro's `dns` and
//! `icmp` samples equal tshark's `dns.time` and `icmp.resptime`/`icmpv6.resptime`, frame by
//! frame, to the microsecond, on every capture of both corpora (tshark's values are stored
//! in tests/data/tshark_proto.tsv by scripts/tshark-proto-expectations.sh); the QUIC
//! captures give spin samples where the bit spins (draft-23, v2), none where it is greased
//! (Firefox to Google), and a handshake sample for every connection whose server answers.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use metro::analyze::{Report, analyze_files_threads};
use metro_core::config::EngineConfig;
use serde_json::Value;

use crate::support;
use crate::support::corpus::{SampleLine, sample_lines, tshark_rows};

const SHARED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../../shared");

fn shared(dir: &str, name: &str) -> PathBuf {
    Path::new(SHARED).join(dir).join(name)
}

/// (frame, open_frame, kind, rtt in seconds) of every sample, and the report.
fn analyze(path: &Path, threads: usize) -> (Vec<SampleLine>, Report) {
    let mut out: Vec<u8> = Vec::new();
    let report = analyze_files_threads(
        &[path.to_path_buf()],
        &EngineConfig::default(),
        true,
        Some(&mut out),
        false,
        threads,
    )
    .unwrap();
    (sample_lines(&out), report)
}

/// file -> kind -> frame -> seconds.
fn tshark() -> HashMap<String, HashMap<String, BTreeMap<u64, f64>>> {
    let mut m: HashMap<String, HashMap<String, BTreeMap<u64, f64>>> = HashMap::new();
    let text = include_str!("../data/tshark_proto.tsv");
    for row in tshark_rows(text) {
        let [file, kind, frame, secs] = row[..] else {
            panic!("bad row {row:?}");
        };
        m.entry(file.to_string())
            .or_default()
            .entry(kind.to_string())
            .or_default()
            .insert(frame.parse().unwrap(), secs.parse().unwrap());
    }
    m
}

/// Responses tshark times and metro does not, and why: tshark pairs a DNS response with a
/// query by transaction ID alone; metro also requires the same question.
const TSHARK_LENIENT: &[(&str, &str, u64, &str)] = &[(
    "tcpreplay__test__test.pcap",
    "dns",
    50,
    "query (frame 27) for e872.h.akamaiedge.net, response for e872.g.akamaiedge.net",
)];

#[test]
fn dns_and_icmp_samples_equal_tsharks_on_every_capture() {
    let _load = support::heavy();
    let reference = tshark();
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in ["corpus", "corpus-proto"] {
        for e in std::fs::read_dir(Path::new(SHARED).join(dir)).unwrap() {
            let p = e.unwrap().path();
            if !matches!(p.extension().and_then(|e| e.to_str()), Some("md" | "tsv")) {
                files.push(p);
            }
        }
    }
    files.sort();
    let (mut compared, mut with_samples) = (0, 0);
    for path in &files {
        let name = path.file_name().unwrap().to_str().unwrap();
        let (samples, _) = analyze(path, 1);
        for kind in ["dns", "icmp"] {
            let ours: BTreeMap<u64, f64> = samples
                .iter()
                .filter(|s| s.2 == kind)
                .map(|s| (s.0, s.3))
                .collect();
            let mut theirs = reference
                .get(name)
                .and_then(|k| k.get(kind))
                .cloned()
                .unwrap_or_default();
            for (f, k, frame, why) in TSHARK_LENIENT {
                if *f == name && *k == kind {
                    assert!(theirs.remove(frame).is_some(), "{name} {frame}: {why}");
                }
            }
            assert_eq!(
                ours.keys().collect::<Vec<_>>(),
                theirs.keys().collect::<Vec<_>>(),
                "{name}: {kind} frames differ from tshark's"
            );
            for (frame, rtt) in &ours {
                let t = theirs[frame];
                assert!(
                    (rtt - t).abs() < 1e-6,
                    "{name} frame {frame}: {kind} {rtt} s, tshark {t} s"
                );
                compared += 1;
            }
            with_samples += usize::from(!ours.is_empty());
        }
    }
    // The corpora's DNS and ICMP (SOURCES.md): hundreds of samples over tens of files.
    assert!(
        compared >= 650 && with_samples >= 25,
        "{compared} samples in {with_samples}"
    );
}

#[test]
fn more_threads_give_the_same_samples_and_rows() {
    for (dir, name) in [
        (
            "corpus-proto",
            "suricata-verify__dns-tcp-multirequest-buffer.pcap",
        ),
        ("corpus-proto", "nDPI__quic-v2.pcapng"),
        ("corpus", "PcapPlusPlus__many-protocols.pcap"),
        ("corpus", "zeek__erspan.pcap"),
    ] {
        let p = shared(dir, name);
        let (one, r1) = analyze(&p, 1);
        let (three, r3) = analyze(&p, 3);
        assert_eq!(one, three, "{name}");
        assert!(
            one.iter()
                .any(|s| s.2 != "seq" && s.2 != "ts" && s.2 != "handshake")
        );
        assert_eq!(r1.responders.len(), r3.responders.len(), "{name}");
        assert_eq!(r1.flows.len(), r3.flows.len(), "{name}");
        assert_eq!(r1.summary.proto, r3.summary.proto, "{name}");
    }
}

fn quic(name: &str) -> (Vec<(u64, u64, String, f64)>, Report) {
    let (s, r) = analyze(&shared("corpus-proto", name), 1);
    (
        s.into_iter().filter(|s| s.2.starts_with("quic")).collect(),
        r,
    )
}

fn ms(samples: &[(u64, u64, String, f64)], kind: &str) -> Vec<(u64, u64, f64)> {
    samples
        .iter()
        .filter(|s| s.2 == kind)
        .map(|s| (s.1, s.0, (s.3 * 1e6).round() / 1e3))
        .collect()
}

/// Draft-23, one connection: the client inverts, the server reflects. The server's edges
/// (frames 7 and 20) give one period of 35.640 ms against the 36.755 ms handshake
/// (SOURCES.md, counted with tshark's quic.spin_bit); the client has one edge only.
#[test]
fn quic_draft_23_spins() {
    let (s, r) = quic("nDPI__quic-23.pcap");
    assert_eq!(ms(&s, "quic_spin"), [(7, 20, 35.64)]);
    // The client's first Initial to the server's Initial+Handshake; that to the client's
    // next datagram.
    assert_eq!(ms(&s, "quic_handshake"), [(1, 2, 36.755), (2, 4, 1.69)]);
    let p = &r.summary.proto;
    assert_eq!((p.quic_connections, p.quic_spinning), (1, 1));
}

/// v2 on loopback: the periods are set by the application's pauses (SOURCES.md: 250, 251
/// and 35 ms), each holding exactly one edge of the other direction.
#[test]
fn quic_v2_spins() {
    let (s, r) = quic("nDPI__quic-v2.pcapng");
    assert_eq!(
        ms(&s, "quic_spin"),
        [(13, 17, 251.047), (14, 18, 250.254), (17, 19, 34.9)]
    );
    assert_eq!(ms(&s, "quic_handshake"), [(1, 2, 1.772), (2, 4, 0.293)]);
    assert_eq!(r.summary.proto.quic_spinning, 1);
}

/// Firefox greases the bit per packet (45 client edges), Google's server sends 0: tshark's
/// edge timing would give 44 false samples (SOURCES.md); metro gives none and counts the
/// connection as not spinning validly. Its handshake is sampled (63.1 ms, SOURCES.md).
#[test]
fn quic_greased_spin_bit_gives_no_sample() {
    let (s, r) = quic("zeek__quic_win11_firefox_google.pcap");
    assert!(ms(&s, "quic_spin").is_empty());
    let hs = ms(&s, "quic_handshake");
    assert_eq!(hs.len(), 2, "{hs:?}");
    assert!((hs[0].2 - 63.093).abs() < 0.001, "{hs:?}");
    let p = &r.summary.proto;
    assert_eq!((p.quic_connections, p.quic_spinning), (1, 0));
    assert_eq!((p.quic_spin_invalid, p.quic_spin_constant), (1, 0));
    assert_eq!(p.quic_spin_rejected[0], 44);
}

/// A handshake sample (the server's side) for every connection whose server answers.
#[test]
fn every_answered_connection_has_a_handshake_sample() {
    for name in [
        "nDPI__quic-23.pcap",
        "nDPI__quic-v2.pcapng",
        "zeek__quic_win11_firefox_google.pcap",
    ] {
        let (s, r) = quic(name);
        let server_side = s
            .iter()
            .filter(|x| x.2 == "quic_handshake" && x.1 < x.0)
            .count();
        assert!(
            server_side >= r.summary.proto.quic_connections as usize,
            "{name}"
        );
        assert!(r.summary.proto.quic_connections >= 1, "{name}");
    }
}

fn metro(args: &[&str]) -> (String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_metro"))
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "{args:?}: {out:?}");
    (
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

/// The command line: a table per protocol, JSON with the protocol of each responder and the
/// DNS/ICMP/QUIC counters, the summary's lines, `--kinds` choosing among the new kinds, and
/// `metro plot` drawing DNS samples.
#[test]
fn analyze_and_plot_show_the_new_kinds() {
    let dns = shared("corpus-proto", "PcapPlusPlus__DnsPackets.pcap");
    let dns = dns.to_str().unwrap();
    let tcp_dns = shared(
        "corpus-proto",
        "suricata-verify__dns-tcp-multirequest-buffer.pcap",
    );
    let (table, summary) = metro(&["analyze", tcp_dns.to_str().unwrap()]);
    assert!(table.starts_with("RTT by responder"), "{table}");
    assert!(
        table.contains("\nDNS response time by server (ms)\n"),
        "{table}"
    );
    assert!(table.contains("10.16.1.1       20"), "{table}");
    assert!(
        summary.contains("  dns: 20 responses (NXDOMAIN 20); timeouts 0"),
        "{summary}"
    );

    let (json, _) = metro(&["analyze", "--format", "json", dns]);
    let v: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["responders"][0]["protocol"], "dns");
    assert_eq!(v["responders"][0]["kinds"]["dns"], 212);
    let p = &v["summary"]["proto"];
    assert_eq!(p["samples"]["dns"], 212);
    assert_eq!(p["dns"]["responses_by_rcode"]["NOERROR"], 210);
    assert_eq!(p["dns"]["responses_by_rcode"]["NXDOMAIN"], 2);

    let (only, _) = metro(&["analyze", "--kinds", "icmp", "--samples", "-", "-q", dns]);
    assert!(only.is_empty(), "{only}");
    let (lines, _) = metro(&["analyze", "--kinds", "dns", "--samples", "-", "-q", dns]);
    assert_eq!(lines.lines().count(), 212);

    let dir = std::env::temp_dir().join(format!("metro-proto-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let svg = dir.join("dns.svg");
    metro(&["plot", "-o", svg.to_str().unwrap(), dns]);
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.contains("212 samples from 1 responder"), "plot text");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An ICMP echo message (`typ` 8 request, 0 reply), identifier `id`, sequence `seq`.
fn echo(typ: u8, id: u16, seq: u16) -> Vec<u8> {
    let mut p = vec![typ, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&seq.to_be_bytes());
    p.extend_from_slice(&[0x5a; 8]);
    p
}

/// A replay's tracker expires on the times of the frames it is given, whatever the number
/// of threads: in a capture without TCP (nothing else moves time), an echo reply 15 s after
/// its request (the timeout is 10 s) is not a sample with one thread or two, and the one
/// answered in 5 ms is.
#[test]
fn an_answer_after_the_timeout_is_no_sample_without_tcp_on_any_number_of_threads() {
    use metro_testkit::pcap::{PcapOptions, PcapWriter};
    use metro_testkit::vectors::{eth, ip4};
    let (a, b) = ([10, 0, 0, 1], [10, 0, 0, 2]);
    let s = 1_000_000_000i64;
    let frames = [
        (s, eth(0x0800, &ip4(a, b, 1, &echo(8, 7, 1)))),
        (s + 5_000_000, eth(0x0800, &ip4(b, a, 1, &echo(0, 7, 1)))),
        (2 * s, eth(0x0800, &ip4(a, b, 1, &echo(8, 7, 2)))),
        (17 * s, eth(0x0800, &ip4(b, a, 1, &echo(0, 7, 2)))),
    ];
    let dir = support::agent::TempDir::new("proto-late");
    let path = dir.path("late.pcap");
    let mut w = PcapWriter::new(
        std::fs::File::create(&path).unwrap(),
        PcapOptions::default(),
    )
    .unwrap();
    for (ts, f) in &frames {
        w.write_packet(*ts, f, f.len() as u32).unwrap();
    }
    drop(w);
    for threads in [1, 2] {
        let (samples, _) = analyze(&path, threads);
        let icmp: Vec<_> = samples.iter().filter(|x| x.2 == "icmp").collect();
        assert_eq!(icmp.len(), 1, "threads {threads}: {samples:?}");
        assert_eq!((icmp[0].0, icmp[0].1), (2, 1), "threads {threads}");
        assert!(
            (icmp[0].3 - 0.005).abs() < 1e-9,
            "threads {threads}: {:?}",
            icmp[0]
        );
    }
}
