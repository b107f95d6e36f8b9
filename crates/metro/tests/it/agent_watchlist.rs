//! Huge watch lists end to end: `metro run` with 100,000 and 300,000 `ips` entries (IPv4 and
//! IPv6 addresses, CIDR blocks, duplicates and overlaps) measures the watched peer, keeps
//! the unwatched one out of the engine (the kernel filter covers the list with wider blocks;
//! the rest is matched, dropped and counted in user space), stays under 300 MB, and survives
//! SIGHUP to a larger list. A capture file with such a list gives the same result and the
//! exact count of frames dropped in user space.
//!
//! The namespace test needs root: it skips for another user, saying so, and fails under
//! .ci/run (METRO_TESTS_REQUIRE_ROOT) without it. It
//! uses 10.200.40.0/24 (see tests/it/agent_netns.rs for the other tests' subnets).

use crate::support;
use crate::support::agent;
use crate::support::frames;
use crate::support::netns;

use std::net::{IpAddr, UdpSocket};
use std::time::{Duration, Instant};

use agent::{Agent, Metric, TempDir, metro_output, named, parse, udp_statsd};
use metro::agent::config::Cidr;
use metro::agent::filter::WATCH_TERMS;
use metro::agent::netset::NetSet;
use netns::{Client, Delayed, EchoServer};

const S: Duration = Duration::from_secs(1);

/// `n` watch-list entries, `include` among them (at the middle), none equal to `avoid`:
/// IPv4 addresses spread over 10.201.0.0/14, IPv6 addresses in fd00:201::/32, /24 blocks in
/// 10.210.0.0/16 each followed by an address inside it, and exact repeats.
fn big_list(n: usize, include: &str, avoid: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::with_capacity(n);
    for i in 0..n {
        let j = i as u32 * 3;
        let e = match i % 10 {
            0..=5 => format!("10.{}.{}.{}", 201 + (j >> 16 & 3), (j >> 8) & 255, j & 255),
            6 | 7 => format!("fd00:201:{:x}:{:x}::1", i >> 16, i & 0xffff),
            8 => format!("10.210.{}.0/24", (i / 10) & 255),
            _ if i % 20 == 9 => format!("10.210.{}.77", (i / 10) & 255),
            _ => v[i - 1].clone(),
        };
        v.push(e);
    }
    v[n / 2] = include.to_string();
    assert!(!v.iter().any(|e| e == avoid));
    v
}

fn yaml_list(list: &[String]) -> String {
    let mut s = String::with_capacity(list.len() * 24);
    for e in list {
        s.push_str("      - '");
        s.push_str(e);
        s.push_str("'\n");
    }
    s
}

/// The set the kernel filter would cover (with the most blocks it may list): it must
/// contain `ip` (so the user-space match is what keeps it out) and not be exact.
fn assert_covered_not_exact(list: &[String], ip: &str) {
    let set = NetSet::new(list.iter().map(|e| Cidr::parse(e).unwrap().0));
    let ip: IpAddr = ip.parse().unwrap();
    assert!(!set.contains(ip));
    let (cover, exact) = set.covering(WATCH_TERMS);
    assert!(!exact);
    assert!(
        NetSet::new(cover).contains(ip),
        "{ip} is outside the kernel filter's blocks: the test would not exercise the user-space match"
    );
}

/// Peak resident memory of a process, in MiB (VmHWM).
fn peak_rss_mib(pid: i32) -> f64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: f64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in /proc/{pid}/status"));
    kb / 1024.0
}

/// libpcap's path (`capture: pcap`): its covering filter and user-space match are what
/// these tests measure (the in-kernel path holds any list exactly: tests/it/agent_ebpf.rs).
fn config(list: &[String], tag: &str) -> String {
    format!(
        "init_config:\n  flush_interval: 1\n  statsd_ip: 127.0.0.1\n  statsd_port: 8125\n  exp_ttl: 0\n\
         instances:\n  - interface: veth0\n    capture: pcap\n    tags: ['{tag}']\n    ips:\n{}",
        yaml_list(list)
    )
}

fn has_p50_for(all: &[Metric], dst: &str) -> bool {
    all.iter()
        .any(|m| m.name == "system.net.tcp.rtt.p50" && m.tag("dst") == Some(dst))
}

#[test]
fn hundred_thousand_entries_measure_the_peer_in_bounded_memory_and_survive_sighup_to_more() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let _load = support::heavy();
    const LIMIT_MIB: f64 = 300.0;
    let one_way = Duration::from_millis(10);
    let d = Delayed::new("wl", 40, one_way);
    // A second, unwatched server next to the watched one: inside the kernel filter's blocks.
    d.s.ip(&["addr", "add", "10.200.40.3/24", "dev", "veth0"]);
    let dir = TempDir::new("wl");
    let srv = EchoServer::start(&d.s, "10.200.40.2:7000");
    let other = EchoServer::start(&d.s, "10.200.40.3:7000");
    let statsd = udp_statsd(&d.c);
    let list = big_list(100_000, "10.200.40.2", "10.200.40.3");
    assert_covered_not_exact(&list, "10.200.40.3");
    let cfg = dir.write("metro.yaml", &config(&list, "gen:1"));

    let t0 = Instant::now();
    let mut agent = Agent::run_config(&d.c, &cfg, &dir);
    agent.wait_log("capture filter", 60 * S);
    let to_filter = t0.elapsed();
    // `ip netns exec` has exec'd the agent by now: the memory read below is metro's.
    let comm = std::fs::read_to_string(format!("/proc/{}/comm", agent.pid())).unwrap();
    assert_ne!(comm.trim(), "ip", "the pid is not the agent's");
    let log = agent.log();
    assert!(
        log.contains("wider blocks cover the") && log.contains("BPF instructions"),
        "{log}"
    );
    let mut watched = Client::start(&d.c, srv.addr, 200, Duration::from_millis(5), 25);
    let mut unwatched = Client::start(&d.c, other.addr, 200, Duration::from_millis(5), 25);
    let all = statsd.wait_for(&mut agent, 30 * S, "RTT for the watched peer", |m| {
        has_p50_for(m, "10.200.40.2")
    });
    let to_rtt = t0.elapsed();
    let floor = 2.0 * one_way.as_secs_f64() * 1e3;
    for m in named(&all, "system.net.tcp.rtt.p50") {
        assert_eq!(m.tag("dst"), Some("10.200.40.2"), "{m:?}");
        assert!(
            m.value >= floor * 0.99 && m.value <= floor + 10.0,
            "p50 {} ms for a {floor} ms round trip",
            m.value
        );
    }
    agent.wait_log(
        "packets outside the watch list are dropped in user space",
        10 * S,
    );
    let rss_100k = peak_rss_mib(agent.pid());
    assert!(
        rss_100k < LIMIT_MIB,
        "peak RSS {rss_100k:.0} MiB with 100,000 entries"
    );

    // SIGHUP to a list three times as long (more YAML nodes than serde-saphyr's default
    // budget of 250,000): the agent keeps running and applies it.
    let list = big_list(300_000, "10.200.40.2", "10.200.40.3");
    std::fs::write(&cfg, config(&list, "gen:2")).unwrap();
    let hup = Instant::now();
    agent.signal(libc::SIGHUP);
    let all = statsd.wait_for(&mut agent, 60 * S, "samples with the reloaded list", |m| {
        m.iter()
            .any(|x| x.name == "system.net.tcp.rtt.samples" && x.tag("gen") == Some("2"))
    });
    let to_reload = hup.elapsed();
    assert!(agent.alive());
    assert!(
        !all.iter().any(|m| m.tag("dst") == Some("10.200.40.3")),
        "the unwatched server was reported"
    );
    let rss_300k = peak_rss_mib(agent.pid());
    assert!(
        rss_300k < LIMIT_MIB,
        "peak RSS {rss_300k:.0} MiB after reloading 300,000 entries"
    );
    watched.stop();
    unwatched.stop();
    eprintln!(
        "100,000 entries: capture filter after {to_filter:.1?}, first RTT after {to_rtt:.1?}, \
         peak RSS {rss_100k:.0} MiB; SIGHUP to 300,000: samples after {to_reload:.1?}, peak \
         RSS {rss_300k:.0} MiB"
    );
    agent.terminate(20 * S);
}

#[test]
fn capture_file_with_a_huge_list_times_the_watched_server_and_counts_the_rest() {
    let dir = TempDir::new("wlfile");
    let mut fr = frames::conversation(
        [10, 9, 0, 1],
        [10, 9, 0, 2],
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
        1_700_000_000_000_000_000,
        25.0,
        40,
        200.0,
        None,
    );
    let other = frames::conversation(
        [10, 9, 0, 1],
        [10, 9, 0, 3],
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 3],
        1_700_000_000_000_000_000 + 1_000_000,
        7.0,
        30,
        200.0,
        None,
    );
    let unwatched_frames = other.len();
    fr.extend(other);
    fr.sort_by_key(|f| f.ts);
    let pcap = dir.path("in.pcap");
    frames::write_pcap(&pcap, &mut fr);
    let mut list = big_list(50_000, "10.9.0.2", "10.9.0.3");
    // Neighbours of the watched server, so that the wide blocks hold the other one too.
    list.extend((4..200).map(|i| format!("10.9.{}.{}", i % 7, i)));
    assert_covered_not_exact(&list, "10.9.0.3");
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = rx.local_addr().unwrap().port();
    let cfg = dir.write(
        "metro.yaml",
        &format!(
            "init_config:\n  statsd_port: {port}\n  flush_interval: 10\ninstances:\n  - interface: file\n    pcap: {}\n    ips:\n{}",
            pcap.display(),
            yaml_list(&list)
        ),
    );
    let (st, _, err) = metro_output(&["run", "--config", cfg.to_str().unwrap()]);
    assert!(st.success(), "{err}");
    assert!(
        err.contains("capture filter for link type 1:") && err.contains("wider blocks cover"),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{unwatched_frames} packets outside the watch list dropped in user space"
        )),
        "expected {unwatched_frames} frames dropped:\n{err}"
    );
    let mut all: Vec<Metric> = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = rx.recv(&mut buf) {
        all.extend(parse(
            std::str::from_utf8(&buf[..n]).unwrap(),
            Instant::now(),
        ));
    }
    let p50s = named(&all, "system.net.tcp.rtt.p50");
    assert!(!p50s.is_empty(), "{err}");
    for m in p50s {
        assert_eq!(m.tag("dst"), Some("10.9.0.2"), "{m:?}");
        assert!((m.value - 25.0).abs() <= 0.25, "{m:?}");
    }
    // The same count reaches the metrics.
    let filtered: f64 = named(&all, "metro.packets.filtered")
        .iter()
        .map(|m| m.value)
        .sum();
    assert_eq!(filtered, unwatched_frames as f64, "{err}");
}
