//! The capture generator: determinism, packet counts, well-formed frames, and ground truth
//! checked against tshark (an independent oracle) and against metro's own engine.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Command;

use metro_testkit::generator::{ConnTruth, GenConfig, write_capture, write_capture_with_truth};

fn small(seed: u64) -> GenConfig {
    GenConfig {
        seed,
        packets: 20_000,
        connections: 300,
        servers: 20,
        ..GenConfig::default()
    }
}

fn generate(cfg: &GenConfig) -> Vec<u8> {
    let mut out = Vec::new();
    let s = write_capture(cfg, &mut out).unwrap();
    assert_eq!(s.packets, cfg.packets);
    out
}

/// (ts_ns, captured bytes, orig_len) of every record of a little-endian pcap.
fn records(pcap: &[u8]) -> Vec<(i64, &[u8], u32)> {
    let le32 = |b: &[u8], at: usize| u32::from_le_bytes(b[at..at + 4].try_into().unwrap());
    let magic = le32(pcap, 0);
    let nanos = match magic {
        0xa1b2_c3d4 => false,
        0xa1b2_3c4d => true,
        m => panic!("not a little-endian pcap: {m:#x}"),
    };
    assert_eq!(le32(pcap, 20), 1, "Ethernet");
    let mut at = 24;
    let mut out = Vec::new();
    while at < pcap.len() {
        let secs = i64::from(le32(pcap, at));
        let frac = i64::from(le32(pcap, at + 4));
        let caplen = le32(pcap, at + 8) as usize;
        let orig = le32(pcap, at + 12);
        let ts = secs * 1_000_000_000 + if nanos { frac } else { frac * 1000 };
        out.push((ts, &pcap[at + 16..at + 16 + caplen], orig));
        at += 16 + caplen;
    }
    out
}

#[test]
fn gen_same_seed_same_bytes() {
    let a = generate(&small(7));
    let b = generate(&small(7));
    assert!(a == b, "two runs with seed 7 differ");
    let c = generate(&small(8));
    assert!(a != c, "seeds 7 and 8 give the same capture");
}

#[test]
fn gen_packet_count_time_order_and_mix() {
    for packets in [1, 2, 999, 20_000] {
        let cfg = GenConfig {
            packets,
            ..small(3)
        };
        let pcap = generate(&cfg);
        assert_eq!(records(&pcap).len() as u64, packets);
    }
    let pcap = generate(&small(3));
    let recs = records(&pcap);
    let (mut v6, mut vlan, mut ts_opt, mut syn, mut fin, mut rst) = (0, 0, 0, 0, 0, 0);
    let mut last = i64::MIN;
    for (ts, data, orig) in &recs {
        assert!(*ts >= last, "records out of time order");
        last = *ts;
        assert!(data.len() <= 128 && data.len() as u32 <= *orig);
        let mut at = 12;
        if data[12..14] == [0x81, 0x00] {
            vlan += 1;
            at += 4;
        }
        let ethertype = u16::from_be_bytes([data[at], data[at + 1]]);
        let ip = at + 2;
        let tcp = match ethertype {
            0x0800 => ip + usize::from(data[ip] & 0x0f) * 4,
            0x86dd => {
                v6 += 1;
                ip + 40
            }
            e => panic!("ethertype {e:#x}"),
        };
        let off = usize::from(data[tcp + 12] >> 4) * 4;
        assert!(data.len() >= tcp + off, "snaplen cut a header");
        let flags = data[tcp + 13];
        syn += usize::from(flags & 0x02 != 0);
        fin += usize::from(flags & 0x01 != 0);
        rst += usize::from(flags & 0x04 != 0);
        if data[tcp + 20..tcp + off].windows(2).any(|w| w == [8, 10]) {
            ts_opt += 1;
        }
    }
    let n = recs.len();
    assert!(v6 > n / 10 && v6 < n / 2, "IPv6 share {v6}/{n}");
    assert!(vlan > n / 20 && vlan < n / 2, "VLAN share {vlan}/{n}");
    assert!(ts_opt > n / 3 && ts_opt < n, "timestamp share {ts_opt}/{n}");
    assert!(
        syn > 100 && fin > 10 && rst < fin,
        "syn {syn} fin {fin} rst {rst}"
    );
}

#[test]
fn gen_concurrency_and_losses() {
    let cfg = GenConfig {
        packets: 200_000,
        connections: 5_000,
        ..GenConfig::default()
    };
    let mut truths = 0u64;
    let s = write_capture_with_truth(&cfg, std::io::sink(), &mut |_| truths += 1).unwrap();
    assert_eq!(s.packets, 200_000);
    assert!(s.connections >= 5_000 && truths == s.connections);
    assert!(s.lost > 0 && s.retransmits > 0, "{s:?}");
}

fn truth_of(cfg: &GenConfig) -> (Vec<u8>, Vec<ConnTruth>) {
    let mut pcap = Vec::new();
    let mut truth = Vec::new();
    write_capture_with_truth(cfg, &mut pcap, &mut |t| truth.push(t.clone())).unwrap();
    (pcap, truth)
}

/// Truth by connection: responder -> (peer -> rtt). A responder is a server seen from many
/// clients, or a client.
fn rtt_index(truth: &[ConnTruth]) -> HashMap<(SocketAddr, SocketAddr), u64> {
    let mut m = HashMap::new();
    for t in truth {
        m.insert((t.client, t.server), t.client_rtt_ns);
        m.insert((t.server, t.client), t.server_rtt_ns);
    }
    m
}

/// tshark's `tcp.analysis.ack_rtt` is an independent measurement: every value must be at least
/// the responder's true RTT, and for most connections the smallest equals it.
#[test]
fn gen_truth_agrees_with_tshark() {
    assert!(
        Command::new("tshark").arg("--version").output().is_ok(),
        "tshark is needed by this test (.ci/run installs it: apt-get install tshark)"
    );
    let cfg = GenConfig {
        packets: 20_000,
        connections: 200,
        servers: 10,
        ..GenConfig::default()
    };
    let (pcap, truth) = truth_of(&cfg);
    let dir = std::env::temp_dir().join(format!("metro-gen-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("t.pcap");
    std::fs::write(&file, &pcap).unwrap();
    let out = Command::new("tshark")
        .args(["-n", "-r"])
        .arg(&file)
        .args([
            "-Y",
            "tcp.analysis.ack_rtt",
            "-T",
            "fields",
            "-E",
            "separator=,",
        ])
        .args(["-e", "ip.src", "-e", "ipv6.src", "-e", "tcp.srcport"])
        .args([
            "-e",
            "ip.dst",
            "-e",
            "ipv6.dst",
            "-e",
            "tcp.dstport",
            "-e",
            "tcp.analysis.ack_rtt",
        ])
        .output()
        .unwrap();
    std::fs::remove_dir_all(&dir).ok();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index = rtt_index(&truth);
    let mut min: HashMap<(SocketAddr, SocketAddr), (u64, u32)> = HashMap::new();
    let mut n = 0;
    for line in String::from_utf8(out.stdout).unwrap().lines() {
        let f: Vec<&str> = line.split(',').collect();
        let src_ip = if f[0].is_empty() { f[1] } else { f[0] };
        let dst_ip = if f[3].is_empty() { f[4] } else { f[3] };
        let src = SocketAddr::new(src_ip.parse().unwrap(), f[2].parse().unwrap());
        let dst = SocketAddr::new(dst_ip.parse().unwrap(), f[5].parse().unwrap());
        let rtt_ns = (f[6].parse::<f64>().unwrap() * 1e9).round() as u64;
        let want = index[&(src, dst)];
        assert!(
            rtt_ns + 1_000 >= want,
            "{src} -> {dst}: tshark {rtt_ns} ns < true {want} ns"
        );
        let m = min.entry((src, dst)).or_insert((u64::MAX, 0));
        *m = (m.0.min(rtt_ns), m.1 + 1);
        n += 1;
    }
    assert!(n > 2_000, "only {n} tshark samples");
    // With a few samples, one is usually an immediate ACK (every second segment) on a path
    // without jitter: its value is the true RTT.
    let busy: Vec<_> = min.iter().filter(|(_, v)| v.1 >= 8).collect();
    let exact = busy
        .iter()
        .filter(|(k, v)| v.0.abs_diff(index[*k]) <= 1_000)
        .count();
    assert!(
        exact * 10 >= busy.len() * 9,
        "min equals truth for only {exact} of {} directions",
        busy.len()
    );
}

/// metro's own samples against the truth: the same bounds as tshark's, for every kind.
#[test]
fn gen_truth_agrees_with_metro_engine() {
    use metro_core::config::EngineConfig;
    use metro_core::engine::Engine;
    use metro_core::sample::Sample;

    let cfg = GenConfig {
        packets: 50_000,
        connections: 300,
        servers: 10,
        ..GenConfig::default()
    };
    let (pcap, truth) = truth_of(&cfg);
    let index = rtt_index(&truth);
    let mut engine = Engine::new(EngineConfig::default());
    let mut samples: Vec<Sample> = Vec::new();
    let mut decoded = 0;
    for (frame, (ts, data, _)) in records(&pcap).into_iter().enumerate() {
        if let Ok(pkt) = metro_core::wire::decode(1, data) {
            decoded += 1;
            engine.process(
                frame as u64 + 1,
                ts,
                &metro_core::Segment::from(&pkt),
                &mut |s: &metro_core::sample::Sample| samples.push(*s),
            );
        }
    }
    assert_eq!(decoded, cfg.packets);
    assert!(samples.len() > 5_000, "only {} samples", samples.len());
    let mut min: HashMap<(SocketAddr, SocketAddr), (u64, u32)> = HashMap::new();
    for s in &samples {
        let want = index[&(s.responder, s.peer)];
        assert!(s.rtt as u64 >= want, "{s:?}: below the true {want} ns");
        let m = min.entry((s.responder, s.peer)).or_insert((u64::MAX, 0));
        *m = (m.0.min(s.rtt as u64), m.1 + 1);
    }
    let busy: Vec<_> = min.iter().filter(|(_, v)| v.1 >= 8).collect();
    let exact = busy.iter().filter(|(k, v)| v.0 == index[*k]).count();
    assert!(
        exact * 10 >= busy.len() * 9,
        "min equals truth for only {exact} of {} directions",
        busy.len()
    );
}
