//! `metro run` under hostile traffic and hostile operators, end to end in network
//! namespaces: forged one-sided retransmissions from tens of thousands of watched addresses
//! next to real connections, SIGTERM at any moment of start-up, bursts of SIGHUP, and
//! reloads to a configuration that cannot run.
//!
//! Like agent_netns.rs these tests need root (each skips for another user, saying so) and,
//! as root, fail, never skip, when they cannot build their namespaces. Each test uses its own namespaces and 10.200.N.0/24.

use crate::support;
use crate::support::agent;
use crate::support::frames;
use crate::support::netns;

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use agent::{Agent, Metric, TempDir, UDP_STATSD, named, sum, udp_statsd, yaml_list};
use netns::{Client, Delayed, EchoServer, Pair};

const S: Duration = Duration::from_secs(1);

fn config(iface: &str, flush: &str, ips: &[&str], tags: &[&str], more: &str) -> String {
    format!(
        "init_config:\n  flush_interval: {flush}\n{UDP_STATSD}{more}instances:\n  - interface: {iface}\n    tags: {}\n    ips: {}\n",
        yaml_list(tags),
        yaml_list(ips),
    )
}

fn count_lines(log: &str, needle: &str) -> usize {
    log.lines().filter(|l| l.contains(needle)).count()
}

/// The thread ids of `pid`'s threads named `name`.
fn threads_named(pid: i32, name: &str) -> Vec<u32> {
    let mut v: Vec<u32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|e| {
            let e = e.ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            (comm.trim() == name).then(|| e.file_name().to_str()?.parse().ok())?
        })
        .collect();
    v.sort();
    v
}

/// Whether `pid` catches SIGTERM yet (bit 15 of SigCgt in /proc/PID/status).
fn catches_sigterm(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|bits| bits & (1 << (libc::SIGTERM - 1)) != 0)
}

#[test]
fn forged_one_sided_retransmissions_from_80000_watched_addresses_leave_real_hosts_reported() {
    if !netns::needs_root("the agent in network namespaces with tcpreplay") {
        return;
    }
    let _load = support::heavy();
    // Real connections through a 5 ms + 5 ms delay line; the whole 10.0.0.0/8 is watched.
    let d = Delayed::new("flood", 21, Duration::from_millis(5));
    let dir = TempDir::new("flood");
    d.s.ip(&["addr", "add", "10.200.21.3/24", "dev", "veth0"]);
    let srv = EchoServer::start(&d.s, "10.200.21.2:7000");
    let srv2 = EchoServer::start(&d.s, "10.200.21.3:7000");
    let statsd = udp_statsd(&d.c);
    let cfg = dir.write(
        "metro.yaml",
        &config(
            "veth0",
            "2",
            &["10.0.0.0/8"],
            &[],
            "  buffer_size: 67108864\n",
        ),
    );
    // One data segment from each of 80,000 forged addresses in 10.16.0.0/12 to the client,
    // never answered. Replayed in a loop, every copy after the first is a retransmission on
    // a (local, remote) pair that never has a sample.
    const FORGED: u32 = 80_000;
    let mut fr: Vec<frames::Frame> = (0..FORGED)
        .map(|i| {
            let src = Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 16, 0, 1)) + i);
            frames::Frame {
                ts: 1_700_000_000_000_000_000 + i64::from(i) * 10_000,
                data: metro_testkit::frame::TcpFrame::v4(
                    src,
                    80,
                    Ipv4Addr::new(10, 200, 21, 1),
                    40000,
                )
                .ethernet([2, 0, 0, 0, 0, 0x16], [2, 0, 0, 0, 0, 0x21], &[])
                .seq(1000)
                .ack(1)
                .flags(metro_testkit::frame::flags::ACK | metro_testkit::frame::flags::PSH)
                .payload_len(100)
                .to_vec(),
            }
        })
        .collect();
    let pcap = dir.path("forged.pcap");
    frames::write_pcap(&pcap, &mut fr);

    let mut agent = Agent::run_config(&d.c, &cfg, &dir);
    agent.wait_log("capture filter", 20 * S);
    let mut client = Client::start(&d.c, srv.addr, 200, Duration::from_millis(10), 1000);
    statsd.wait_for(&mut agent, 30 * S, "the real pair's first metrics", |m| {
        m.iter()
            .any(|x| x.name == "system.net.tcp.rtt.p50" && x.tag("dst") == Some("10.200.21.2"))
    });
    // A second real host, with a new connection every 300 ms: its pair needs a fresh slot
    // in each interval, after the flood has had time to fill the table.
    let mut sparse = Client::start(&d.c, srv2.addr, 200, Duration::from_millis(300), 1);
    // Injected on the delay line's side of the client's link: straight to the client.
    d.m.tcpreplay(&[
        "--pps=60000",
        "--loop=5",
        "-i",
        "mc",
        pcap.to_str().unwrap(),
    ]);
    sparse.stop();
    let sparse_requests = sparse.requests.load(std::sync::atomic::Ordering::Relaxed);
    // The real pair goes on being measured after the flood: a whole interval (2 s) that
    // began after it carries its metrics.
    let flood_end = Instant::now();
    statsd.wait_for(&mut agent, 15 * S, "the real pair after the flood", |m| {
        m.iter().any(|x| {
            x.name == "system.net.tcp.rtt.p50"
                && x.tag("dst") == Some("10.200.21.2")
                && x.at > flood_end + 2 * S
        })
    });
    client.stop();
    let requests = client.requests.load(std::sync::atomic::Ordering::Relaxed);
    let sparse_handshakes = f64::from(sparse_requests);
    let measured = |m: &[Metric]| {
        let seq = sum(m, "metro.samples", |x| x.tag("kind") == Some("seq"));
        let hs = sum(m, "metro.samples", |x| x.tag("kind") == Some("handshake"));
        seq >= f64::from(requests + sparse_requests) && hs > sparse_handshakes
    };
    // Until every exchange is counted (asserted below, with the figures), at most 10 s.
    statsd.wait_until(10 * S, measured);
    agent.signal(libc::SIGTERM);
    let status = agent.wait(20 * S);
    assert!(status.success(), "{status}; log:\n{}", agent.log());
    let mut statsd = statsd;
    let all = statsd.finish();

    let dropped = |kind: &str| sum(&all, "metro.pairs.dropped", |m| m.tag("kind") == Some(kind));
    let kernel_drops = sum(&all, "metro.packets.dropped", |_| true);
    let received = sum(&all, "metro.packets.received", |_| true);
    let real = sum(&all, "system.net.tcp.rtt.samples", |m| {
        m.tag("dst") == Some("10.200.21.2")
    });
    eprintln!(
        "{received} packets received, {kernel_drops} dropped by the kernel; pairs dropped: \
         {} samples, {} retransmissions; {real} samples of the real pair for {requests} \
         exchanges",
        dropped("sample"),
        dropped("retransmit")
    );
    // The flood was seen, and more than the side table holds was counted as dropped.
    assert!(received >= f64::from(FORGED), "{received} packets received");
    assert!(
        dropped("retransmit") > 0.0,
        "no retransmission counted as dropped"
    );
    // No sample found its table full: the forged pairs took no slot.
    assert_eq!(dropped("sample"), 0.0);
    // Every real exchange was measured, flood or not: each yields one seq sample, and each
    // of the sparse client's connections one handshake sample (the long connection one).
    let seq = sum(&all, "metro.samples", |m| m.tag("kind") == Some("seq"));
    let handshakes = sum(&all, "metro.samples", |m| {
        m.tag("kind") == Some("handshake")
    });
    eprintln!(
        "{seq} seq samples for {} exchanges; {handshakes} handshake samples for {sparse_requests} \
         connections of the sparse client",
        requests + sparse_requests
    );
    assert!(
        sparse_requests >= 10,
        "only {sparse_requests} sparse exchanges"
    );
    assert!(
        seq >= f64::from(requests + sparse_requests),
        "{seq} seq samples for {} exchanges ({kernel_drops} kernel drops)",
        requests + sparse_requests
    );
    assert!(
        handshakes > f64::from(sparse_requests),
        "{handshakes} handshake samples for {sparse_requests} + 1 connections"
    );
    // Only the real pairs have samples: every sample counted is one of theirs.
    let sparse_real = sum(&all, "system.net.tcp.rtt.samples", |m| {
        m.tag("dst") == Some("10.200.21.3")
    });
    let network = sum(&all, "metro.samples", |_| true);
    assert_eq!(real + sparse_real, network);
    // The flushes that counted dropped retransmissions carried the real pair too.
    let flood_flushes: Vec<&Metric> = all
        .iter()
        .filter(|m| {
            m.name == "metro.pairs.dropped" && m.tag("kind") == Some("retransmit") && m.value > 0.0
        })
        .collect();
    for f in &flood_flushes {
        assert!(
            all.iter().any(|m| m.name == "system.net.tcp.rtt.p50"
                && m.tag("dst") == Some("10.200.21.2")
                && m.at.max(f.at) - m.at.min(f.at) < Duration::from_millis(500)),
            "a flush during the flood has no metrics for the real pair"
        );
    }
    // The real pair's RTT is the delay line's.
    for m in named(&all, "system.net.tcp.rtt.p50") {
        assert!(
            matches!(m.tag("dst"), Some("10.200.21.2" | "10.200.21.3")),
            "{m:?}"
        );
        assert!(
            (9.9..30.0).contains(&m.value),
            "p50 {} ms for a 10 ms round trip",
            m.value
        );
    }
}

#[test]
fn sigterm_at_any_moment_of_start_up_exits_zero() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let _load = support::timed();
    let p = Pair::new("early", 22);
    let dir = TempDir::new("early");
    let small = dir.write(
        "small.yaml",
        &config("veth0", "1", &["10.200.22.2"], &[], ""),
    );
    // As soon as the process can catch it, then a little later each time: during argument
    // parsing, the configuration, the capture's opening, the first moments of running.
    for delay_ms in [0u64, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233] {
        let mut agent = Agent::start(
            &p.c,
            &["run", "--config", small.to_str().unwrap()],
            &dir.path(&format!("stderr-{delay_ms}")),
        );
        let end = Instant::now() + 10 * S;
        while !catches_sigterm(agent.pid()) {
            assert!(
                Instant::now() < end && agent.alive(),
                "metro never caught SIGTERM; log:\n{}",
                agent.log()
            );
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        agent.signal(libc::SIGTERM);
        let status = agent.wait(10 * S);
        assert!(
            status.success(),
            "SIGTERM {delay_ms} ms after the handler was installed: {status}; log:\n{}",
            agent.log()
        );
    }

    // A huge watch list takes a while to read: SIGTERM meanwhile is obeyed at once.
    let ips: Vec<String> = (0..80_000u32)
        .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 16, 0, 1)) + i).to_string())
        .collect();
    let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
    let huge = dir.write("huge.yaml", &config("veth0", "1", &ips, &[], ""));
    let mut agent = Agent::start(
        &p.c,
        &["run", "--config", huge.to_str().unwrap()],
        &dir.path("stderr-huge"),
    );
    // The signal lands while the configuration loads: the agent loads it on a thread of its
    // own (`metro-load`), and SIGTERM goes as soon as that thread exists (loading this
    // file takes seconds: `metro check-config` on it, 17 to 20 s in a debug build).
    let end = Instant::now() + 10 * S;
    while threads_named(agent.pid(), "metro-load").is_empty() {
        assert!(
            Instant::now() < end && agent.alive(),
            "metro never started loading its configuration; log:\n{}",
            agent.log()
        );
        std::thread::yield_now();
    }
    let sent = Instant::now();
    agent.signal(libc::SIGTERM);
    let status = agent.wait(10 * S);
    let took = sent.elapsed();
    assert!(status.success(), "{status}; log:\n{}", agent.log());
    eprintln!("exited {took:?} after SIGTERM");
    // Obeyed at once, not after the loading it interrupted: nothing that follows loading
    // (opening the capture, running) happened. (Logging is configured by the file being
    // loaded: until then the agent says nothing.)
    let log = agent.log();
    assert!(
        !log.contains("capture filter") && !log.contains("instance(s); DogStatsD"),
        "{log}"
    );
    assert!(took < 2 * S, "SIGTERM while loading took {took:?}");
}

#[test]
fn sighup_burst_keeps_capture_and_flows_and_a_new_watch_list_keeps_them_too() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let _load = support::heavy();
    let d = Delayed::new("burst", 23, Duration::from_millis(10));
    let dir = TempDir::new("burst");
    let srv = EchoServer::start(&d.s, "10.200.23.2:7000");
    let statsd = udp_statsd(&d.c);
    let good = config("veth0", "1", &["10.200.23.2"], &["gen:1"], "");
    let cfg = dir.write("metro.yaml", &good);
    let mut agent = Agent::run_config(&d.c, &cfg, &dir);
    agent.wait_log("capture filter", 20 * S);
    let cap_threads = threads_named(agent.pid(), "metro-cap-veth0");
    assert_eq!(cap_threads.len(), 1, "{cap_threads:?}");
    // One long connection: a request in flight across a reload is lost if its flow is.
    let mut client = Client::start(&d.c, srv.addr, 200, Duration::from_millis(5), 100_000);
    statsd.wait_for(&mut agent, 30 * S, "first samples", |m| {
        m.iter()
            .any(|x| x.name == "system.net.tcp.rtt.samples" && x.tag("gen") == Some("1"))
    });

    // 200 SIGHUPs 20 ms apart; halfway, only the tags change.
    for i in 0..200 {
        if i == 100 {
            std::fs::write(&cfg, good.replace("gen:1", "gen:2")).unwrap();
        }
        agent.signal(libc::SIGHUP);
        std::thread::sleep(Duration::from_millis(20));
    }
    let burst_end = Instant::now();
    statsd.wait_for(&mut agent, 15 * S, "samples with the new tags", |m| {
        m.iter().any(|x| {
            x.name == "system.net.tcp.rtt.samples" && x.tag("gen") == Some("2") && x.at > burst_end
        })
    });
    // The burst's last reload has begun (the new tags are out) and ended: every reload
    // begun has logged its result.
    let end = Instant::now() + 10 * S;
    while count_lines(&agent.log(), "SIGHUP: reloading")
        != count_lines(&agent.log(), "configuration reloaded")
    {
        assert!(
            Instant::now() < end && agent.alive(),
            "a reload never ended; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let log = agent.log();
    let reloads = count_lines(&log, "SIGHUP: reloading");
    assert!(
        (1..=10).contains(&reloads),
        "{reloads} reloads for a burst of 200 SIGHUPs; log:\n{log}"
    );
    assert_eq!(
        count_lines(
            &log,
            "configuration reloaded: 1 instance(s); 1 capture(s) kept (0 with a new watch \
             list), 0 started, 0 stopped"
        ),
        reloads,
        "{log}"
    );
    assert_eq!(count_lines(&log, "capture filter"), 1, "{log}");

    // One more address to watch: the same capture takes the new list (a new kernel filter)
    // and keeps its flows.
    std::fs::write(
        &cfg,
        good.replace("gen:1", "gen:2")
            .replace("['10.200.23.2']", "['10.200.23.2', '10.200.23.9']"),
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    agent.wait_log("(1 with a new watch list), 0 started, 0 stopped", 10 * S);
    agent.wait_log("host 10.200.23.9", 10 * S);
    assert_eq!(
        count_lines(&agent.log(), "capture filter"),
        2,
        "{}",
        agent.log()
    );
    let rewatched = Instant::now();
    statsd.wait_for(
        &mut agent,
        15 * S,
        "samples after the new watch list",
        |m| {
            m.iter().any(|x| {
                x.name == "system.net.tcp.rtt.samples"
                    && x.tag("gen") == Some("2")
                    && x.at > rewatched + S
            })
        },
    );
    client.stop();
    let requests = client.requests.load(std::sync::atomic::Ordering::Relaxed);
    // Until every exchange is counted (asserted below, with the figures), at most 10 s.
    statsd.wait_until(10 * S, |m| {
        sum(m, "metro.samples", |x| x.tag("kind") == Some("seq")) >= f64::from(requests)
    });
    // Same capture thread all along.
    assert_eq!(threads_named(agent.pid(), "metro-cap-veth0"), cap_threads);
    agent.signal(libc::SIGTERM);
    let status = agent.wait(10 * S);
    assert!(status.success(), "{status}; log:\n{}", agent.log());
    let mut statsd = statsd;
    let all = statsd.finish();
    // Each request/response exchange yields exactly one seq sample (the request, answered
    // by the response); timestamps add ts samples beside it.
    let seq = sum(&all, "metro.samples", |m| m.tag("kind") == Some("seq"));
    let kernel_drops = sum(&all, "metro.packets.dropped", |_| true);
    let received = sum(&all, "metro.packets.received", |_| true);
    eprintln!(
        "{seq} seq samples for {requests} exchanges across {reloads} reloads; {received} \
         packets, {kernel_drops} kernel drops"
    );
    assert_eq!(kernel_drops, 0.0);
    // None lost to the reloads: a flow forgotten mid-exchange loses that exchange's sample.
    assert!(
        seq >= f64::from(requests),
        "{seq} seq samples for {requests} exchanges"
    );
    // Every exchange is at least a request and a response.
    assert!(
        received >= 2.0 * f64::from(requests),
        "{received} packets received for {requests} exchanges"
    );
}

#[test]
fn reload_to_a_configuration_that_cannot_run_keeps_the_running_agent() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let p = Pair::new("badrl", 24);
    let dir = TempDir::new("badrl");
    let srv = EchoServer::start(&p.s, "10.200.24.2:7000");
    let statsd = udp_statsd(&p.c);
    let good = config("veth0", "1", &["10.200.24.2"], &["gen:1"], "");
    let cfg = dir.write("metro.yaml", &good);
    let mut agent = Agent::run_config(&p.c, &cfg, &dir);
    agent.wait_log("capture filter", 20 * S);
    let _client = Client::start(&p.c, srv.addr, 200, Duration::from_millis(10), 1000);
    statsd.wait_for(&mut agent, 30 * S, "first samples", |m| {
        m.iter()
            .any(|x| x.name == "system.net.tcp.rtt.samples" && x.tag("gen") == Some("1"))
    });

    let cases = [
        // A capture that cannot open: an interface this namespace does not have.
        (
            config("nosuch0", "1", &["10.200.24.2"], &["gen:2"], ""),
            "no interface named `nosuch0`",
        ),
        // A capture file that does not exist.
        (
            config("file", "1", &["10.200.24.2"], &["gen:3"], "")
                .replace("    tags:", "    pcap: /nonexistent/metro.pcap\n    tags:"),
            "/nonexistent/metro.pcap",
        ),
        // One bad address at the end of a long list: the key is named.
        (
            {
                let ips: Vec<String> = (0..5_000u32)
                    .map(|i| Ipv4Addr::from(u32::from(Ipv4Addr::new(10, 16, 0, 1)) + i).to_string())
                    .chain(std::iter::once("10.16.300.1".to_string()))
                    .collect();
                let ips: Vec<&str> = ips.iter().map(String::as_str).collect();
                config("veth0", "1", &ips, &["gen:4"], "")
            },
            "ips[5000]",
        ),
    ];
    for (i, (bad, why)) in cases.iter().enumerate() {
        std::fs::write(&cfg, bad).unwrap();
        agent.signal(libc::SIGHUP);
        let end = Instant::now() + 20 * S;
        while count_lines(
            &agent.log(),
            "reload failed, keeping the running configuration",
        ) <= i
        {
            assert!(
                Instant::now() < end && agent.alive(),
                "reload {i} did not fail as expected; log:\n{}",
                agent.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let log = agent.log();
        let line = log
            .lines()
            .filter(|l| l.contains("reload failed"))
            .nth(i)
            .unwrap();
        assert!(line.contains(why), "{line:?} does not say {why:?}");
        let after = Instant::now();
        statsd.wait_for(
            &mut agent,
            15 * S,
            "samples with the running configuration",
            |m| {
                m.iter().any(|x| {
                    x.name == "system.net.tcp.rtt.samples"
                        && x.tag("gen") == Some("1")
                        && x.at > after + S
                })
            },
        );
    }
    assert_eq!(
        count_lines(&agent.log(), "capture filter"),
        1,
        "{}",
        agent.log()
    );
    assert!(
        !statsd
            .all()
            .iter()
            .any(|m| m.tag("gen").is_some_and(|g| g != "1")),
        "a failed reload's tags were applied"
    );
    agent.signal(libc::SIGTERM);
    assert!(agent.wait(10 * S).success());
}
