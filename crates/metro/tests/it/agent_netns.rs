//! `metro run` end to end, in network namespaces joined by veth pairs: real TCP traffic,
//! real libpcap capture, real DogStatsD receivers (UDP and Unix datagram sockets) and a
//! Prometheus scrape checked by promtool.
//!
//! These tests need root: for another user each skips, saying so (`netns::needs_root`);
//! as root (CI) they fail, never skip, when they cannot build their namespaces. Each test uses its own namespaces and 10.200.N.0/24 subnet; the
//! namespaces are deleted when the test ends, pass or fail.

use crate::support;
use crate::support::agent;
use crate::support::frames;
use crate::support::netns;

use std::collections::BTreeSet;
use std::os::unix::net::UnixDatagram;
use std::time::{Duration, Instant};

use agent::{
    Agent, Metric, Statsd, TempDir, UDP_STATSD, http_get, named, sum, udp_statsd, yaml_list,
};
use netns::{Client, Delayed, EchoServer, Netns, Pair};

const S: Duration = Duration::from_secs(1);

const RTT_GAUGES: [&str; 10] = [
    "system.net.tcp.rtt",
    "system.net.tcp.rtt.avg",
    "system.net.tcp.rtt.jitter",
    "system.net.tcp.rtt.min",
    "system.net.tcp.rtt.max",
    "system.net.tcp.rtt.p50",
    "system.net.tcp.rtt.p90",
    "system.net.tcp.rtt.p99",
    "system.net.tcp.rtt.baseline",
    "system.net.tcp.queueing_delay",
];
const RTT_COUNTS: [&str; 2] = ["system.net.tcp.rtt.samples", "system.net.tcp.retransmits"];
const SELF_METRICS: [(&str, &str); 17] = [
    ("metro.packets.received", "c"),
    ("metro.packets.dropped", "c"),
    ("metro.packets.filtered", "c"),
    ("metro.flows.active", "g"),
    ("metro.flows.evicted", "c"),
    ("metro.flows.shed", "c"),
    ("metro.samples", "c"),
    ("metro.samples.internal", "c"),
    ("metro.pairs.dropped", "c"),
    ("metro.series.overflow", "c"),
    ("metro.statsd.send_errors", "c"),
    ("metro.packets.copies", "c"),
    ("metro.capture.ebpf", "g"),
    ("metro.packets.raw", "c"),
    ("metro.containers.namespaces", "g"),
    ("metro.containers.skipped", "g"),
    ("metro.containers.pairs_unattributed", "c"),
];

fn is_rtt(m: &Metric) -> bool {
    m.name.starts_with("system.net.tcp.")
}

fn has_rtt_for(all: &[Metric], dst: &str) -> bool {
    all.iter()
        .any(|m| m.name == "system.net.tcp.rtt.p50" && m.tag("dst") == Some(dst))
}

/// Check one flush's worth of RTT metrics for `dst`: all ten, right types, tags in order,
/// values consistent.
fn check_pair(all: &[Metric], src: &str, dst: &str, extra_tags: &[&str], max_ms: f64) {
    check_pair_on(all, "veth0", src, dst, extra_tags, max_ms)
}

fn check_pair_on(
    all: &[Metric],
    iface: &str,
    src: &str,
    dst: &str,
    extra_tags: &[&str],
    max_ms: f64,
) {
    let mut want_tags = vec![
        format!("src:{src}"),
        format!("dst:{dst}"),
        format!("iface:{iface}"),
    ];
    want_tags.extend(extra_tags.iter().map(|t| t.to_string()));
    let of = |name: &str| -> Vec<&Metric> {
        all.iter()
            .filter(|m| m.name == name && m.tag("dst") == Some(dst))
            .collect()
    };
    for name in RTT_GAUGES.iter().chain(RTT_COUNTS.iter()) {
        let ms = of(name);
        assert!(!ms.is_empty(), "{name} for {dst} missing");
        for m in &ms {
            assert_eq!(m.tags, want_tags, "{m:?}");
            let ty = if RTT_COUNTS.contains(name) { "c" } else { "g" };
            assert_eq!(m.ty, ty, "{m:?}");
        }
    }
    // Every flush carries the twelve metrics of the pair together: compare within flushes.
    let p50s = of("system.net.tcp.rtt.p50");
    for (i, p50) in p50s.iter().enumerate() {
        let get = |name: &str| of(name)[i].value;
        let (min, max, avg, last) = (
            get("system.net.tcp.rtt.min"),
            get("system.net.tcp.rtt.max"),
            get("system.net.tcp.rtt.avg"),
            get("system.net.tcp.rtt"),
        );
        let (p90, p99) = (get("system.net.tcp.rtt.p90"), get("system.net.tcp.rtt.p99"));
        assert!(min > 0.0 && min <= max, "min {min} max {max}");
        assert!(max < max_ms, "max {max} ms for {dst}");
        for v in [avg, last, p50.value, p90, p99] {
            assert!(
                v >= min * 0.99 && v <= max * 1.01,
                "{v} outside [{min}, {max}]"
            );
        }
        assert!(p50.value <= p90 * 1.0001 && p90 <= p99 * 1.0001);
        // The baseline is the least RTT of the window, this interval's included; the
        // queueing delay the p50 above it.
        let (base, queueing) = (
            get("system.net.tcp.rtt.baseline"),
            get("system.net.tcp.queueing_delay"),
        );
        assert!(
            base > 0.0 && base <= min * 1.0001,
            "baseline {base}, min {min}"
        );
        assert!(
            (p50.value - base - queueing).abs() <= 1e-5 + p50.value * 1e-4,
            "p50 {} baseline {base} queueing {queueing}",
            p50.value
        );
        // Jitter is a mean absolute difference between consecutive samples: within the
        // spread of the samples.
        let jitter = get("system.net.tcp.rtt.jitter");
        assert!(
            jitter >= 0.0 && jitter <= (max - min) * 1.0001,
            "jitter {jitter} outside [0, max {max} - min {min}]"
        );
        // Counts are whole numbers; a veth loses nothing, so retransmissions stay rare.
        let (samples, retransmits) = (
            get("system.net.tcp.rtt.samples"),
            get("system.net.tcp.retransmits"),
        );
        assert!(
            samples >= 1.0 && samples.fract() == 0.0,
            "samples {samples}"
        );
        assert!(
            retransmits.fract() == 0.0 && retransmits <= samples,
            "{retransmits} retransmissions for {samples} samples on a lossless link"
        );
    }
}

fn check_self_metrics(all: &[Metric], tags: &[&str]) {
    check_self_metrics_on(all, "veth0", tags)
}

fn check_self_metrics_on(all: &[Metric], iface: &str, tags: &[&str]) {
    let mut want = vec![format!("iface:{iface}")];
    want.extend(tags.iter().map(|t| t.to_string()));
    for (name, ty) in SELF_METRICS {
        let ms = named(all, name);
        assert!(!ms.is_empty(), "{name} missing");
        for m in ms {
            assert_eq!(m.ty, ty, "{m:?}");
            assert_eq!(&m.tags[..want.len()], &want[..], "{m:?}");
            if name == "metro.samples" {
                assert!(
                    matches!(m.tag("kind"), Some("seq" | "handshake" | "ts")),
                    "{m:?}"
                );
            }
            if name == "metro.pairs.dropped" {
                assert!(
                    matches!(m.tag("kind"), Some("sample" | "retransmit")),
                    "{m:?}"
                );
                // A handful of pairs: nothing may be dropped.
                assert_eq!(m.value, 0.0, "{m:?}");
            }
        }
    }
    assert!(sum(all, "metro.packets.received", |_| true) > 0.0);
    assert!(sum(all, "metro.samples", |m| m.tag("kind") == Some("seq")) > 0.0);
    let known: BTreeSet<&str> = RTT_GAUGES
        .iter()
        .chain(RTT_COUNTS.iter())
        .copied()
        .chain(SELF_METRICS.iter().map(|(n, _)| *n))
        // The QUIC, DNS and ICMP tracker's counts (tests/agent_proto.rs checks their values).
        .chain([
            "system.net.dns.timeouts",
            "system.net.dns.responses",
            "metro.proto.dropped",
            "metro.proto.unmatched",
        ])
        .collect();
    for m in all {
        assert!(known.contains(m.name.as_str()), "unexpected metric {m:?}");
    }
}

fn config(
    flush: &str,
    statsd: &str,
    ips: &[&str],
    hosts: &[&str],
    tags: &[&str],
    more: &str,
) -> String {
    config_on("veth0", flush, statsd, ips, hosts, tags, more)
}

fn config_on(
    iface: &str,
    flush: &str,
    statsd: &str,
    ips: &[&str],
    hosts: &[&str],
    tags: &[&str],
    more: &str,
) -> String {
    format!(
        "init_config:\n  flush_interval: {flush}\n{statsd}{more}instances:\n  - interface: {iface}\n    tags: {}\n    ips: {}\n    hosts: {}\n",
        yaml_list(tags),
        yaml_list(ips),
        yaml_list(hosts)
    )
}

#[test]
fn udp_metrics_names_types_tags_values_ipv4_ipv6_and_no_stale_pairs() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let p = Pair::new("udp", 11);
    let dir = TempDir::new("udp");
    let srv4 = EchoServer::start(&p.s, "10.200.11.2:7000");
    let srv6 = EchoServer::start(&p.s, "[fd00:200:11::2]:7000");
    let statsd = udp_statsd(&p.c);
    let tags = ["env:test", "team:net"];
    let cfg = dir.write(
        "metro.yaml",
        &config(
            "1",
            UDP_STATSD,
            &["10.200.11.2", "fd00:200:11::2"],
            &[],
            &tags,
            "",
        ),
    );
    let mut agent = Agent::run_config(&p.c, &cfg, &dir);
    agent.wait_log("capture filter", 20 * S);
    let mut c4 = Client::start(&p.c, srv4.addr, 200, Duration::from_millis(10), 50);
    let mut c6 = Client::start(&p.c, srv6.addr, 200, Duration::from_millis(10), 50);
    let all = statsd.wait_for(&mut agent, 30 * S, "RTT metrics for both servers", |m| {
        has_rtt_for(m, "10.200.11.2") && has_rtt_for(m, "fd00:200:11::2")
    });
    check_pair(&all, "10.200.11.1", "10.200.11.2", &tags, 100.0);
    check_pair(&all, "fd00:200:11::1", "fd00:200:11::2", &tags, 100.0);
    check_self_metrics(&all, &tags);
    // The client's own ACKs are answered by this host: internal, counted, never a pair.
    assert!(
        !all.iter()
            .any(|m| is_rtt(m) && m.tag("dst") == Some("10.200.11.1"))
    );
    assert!(*statsd.max_datagram.lock().unwrap() <= 1432);

    // No traffic, no RTT metrics: a pair with no new sample sends nothing.
    c4.stop();
    c6.stop();
    let stopped = Instant::now();
    let all = statsd.wait_for(
        &mut agent,
        15 * S,
        "three flushes after the traffic stopped",
        |m| {
            m.iter()
                .filter(|x| x.name == "metro.packets.received" && x.at > stopped + 3 * S)
                .count()
                >= 1
        },
    );
    let late: Vec<&Metric> = all
        .iter()
        .filter(|m| is_rtt(m) && m.at > stopped + 2 * S)
        .collect();
    assert!(
        late.is_empty(),
        "stale RTT metrics after the traffic stopped: {late:?}"
    );
    assert!(agent.alive());
}

#[test]
fn unix_socket_statsd_prometheus_exposition_and_interface_any() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let p = Pair::new("unix", 12);
    let dir = TempDir::new("unix");
    let sock_path = dir.path("dsd.socket");
    let rx = UnixDatagram::bind(&sock_path).unwrap();
    let statsd = Statsd::unix(rx);
    let srv = EchoServer::start(&p.s, "10.200.12.2:7000");
    let cfg = dir.write(
        "metro.yaml",
        &config_on(
            "any",
            "1",
            &format!("  statsd_socket: {}\n", sock_path.display()),
            &["10.200.12.0/24"],
            &[],
            &["env:unix"],
            "  prometheus_listen: 127.0.0.1:9464\n",
        ),
    );
    let mut agent = Agent::run_config(&p.c, &cfg, &dir);
    agent.wait_log("capture filter", 20 * S);
    assert!(
        agent.log().contains("net 10.200.12.0/24"),
        "{}",
        agent.log()
    );
    let _client = Client::start(&p.c, srv.addr, 500, Duration::from_millis(10), 1000);
    let all = statsd.wait_for(
        &mut agent,
        30 * S,
        "RTT metrics over the Unix socket",
        |m| has_rtt_for(m, "10.200.12.2"),
    );
    check_pair_on(
        &all,
        "any",
        "10.200.12.1",
        "10.200.12.2",
        &["env:unix"],
        100.0,
    );
    check_self_metrics_on(&all, "any", &["env:unix"]);
    // Batched: a whole flush (ten RTT metrics and the self-metrics) in one datagram, under
    // the Unix limit.
    let max = *statsd.max_datagram.lock().unwrap();
    assert!(max <= 8192, "largest datagram {max} bytes");
    assert!(*statsd.max_lines.lock().unwrap() >= 10 + SELF_METRICS.len());

    let body = http_get(&p.c, "127.0.0.1:9464", "/metrics");
    agent::promtool_check_metrics(&dir, &body);
    assert!(
        body.contains(
            "metro_tcp_rtt_p50_seconds{src=\"10.200.12.1\",dst=\"10.200.12.2\",iface=\"any\",env=\"unix\"}"
        ),
        "{body}"
    );
    let samples_line = body
        .lines()
        .find(|l| l.starts_with("metro_samples_total{iface=\"any\",env=\"unix\",kind=\"seq\"}"))
        .unwrap_or_else(|| panic!("{body}"));
    let n: f64 = samples_line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(n > 0.0, "{samples_line}");
}

#[test]
fn known_delay_p50_within_2ms_of_true_rtt() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let _load = support::timed();
    let one_way = Duration::from_millis(20);
    let d = Delayed::new("dly", 13, one_way);
    let dir = TempDir::new("dly");
    let srv = EchoServer::start(&d.s, "10.200.13.2:7000");
    let statsd = udp_statsd(&d.c);
    let cfg = dir.write(
        "metro.yaml",
        &config("2", UDP_STATSD, &["10.200.13.2"], &[], &[], ""),
    );
    let mut agent = Agent::run_config(&d.c, &cfg, &dir);
    agent.wait_log("capture filter", 20 * S);
    let mut client = Client::start(&d.c, srv.addr, 200, Duration::from_millis(5), 25);
    // Two full flushes of traffic.
    let all = statsd.wait_for(&mut agent, 40 * S, "two flushes with RTT samples", |m| {
        named(m, "system.net.tcp.rtt.p50").len() >= 2
    });
    client.stop();
    let app_p50 = client.median_ms();
    let p50s: Vec<f64> = named(&all, "system.net.tcp.rtt.p50")
        .iter()
        .map(|m| m.value)
        .collect();
    let samples = sum(&all, "system.net.tcp.rtt.samples", |_| true);
    assert!(samples >= 50.0, "only {samples} samples");
    let floor = 2.0 * one_way.as_secs_f64() * 1e3;
    eprintln!("metro p50s {p50s:?} ms; application median {app_p50:.3} ms; {samples} samples");
    for p50 in &p50s {
        assert!(
            *p50 >= floor * 0.99,
            "p50 {p50} ms is below the delay added ({floor} ms)"
        );
        assert!(
            (p50 - app_p50).abs() <= 2.0,
            "metro's p50 {p50} ms vs the application's median round trip {app_p50} ms (p50s {p50s:?})"
        );
    }
}

#[test]
fn go_metro_doc_example_runs_unchanged_with_legacy_flags() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    // The example from go-metro's documentation, only the interface changed. Its host name
    // resolves, inside the namespace, to the test server (/etc/netns/NAME/hosts); its
    // public address is never contacted (metro sends nothing but DogStatsD to 127.0.0.1).
    let yaml = include_str!("../data/go-metro-doc-example.yaml");
    let p = Pair::new("doc", 14);
    p.c.write_etc(
        "hosts",
        "127.0.0.1 localhost\n10.200.14.2 app.datadoghq.com\n",
    );
    p.c.write_etc("resolv.conf", "nameserver 127.0.0.1\n");
    let dir = TempDir::new("doc");
    let cfg = dir.write("go-metro.yaml", yaml);
    let log = dir.path("go-metro.log");
    let srv = EchoServer::start(&p.s, "10.200.14.2:443");
    let statsd = udp_statsd(&p.c);
    let cfg_flag = format!("-cfg={}", cfg.display());
    let log_flag = format!("-log={}", log.display());
    let mut agent = Agent::start(&p.c, &[&cfg_flag, &log_flag], &dir.path("stderr"));
    // log_to_file: the log goes to the -log file, not stderr.
    let end = Instant::now() + 20 * S;
    while !std::fs::read_to_string(&log)
        .unwrap_or_default()
        .contains("capture filter")
    {
        assert!(
            Instant::now() < end && agent.alive(),
            "no capture; stderr:\n{}\nlog:\n{}",
            agent.log(),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let logtext = std::fs::read_to_string(&log).unwrap();
    assert!(
        logtext.contains("host 45.33.125.153") && logtext.contains("host 10.200.14.2"),
        "{logtext}"
    );
    let _client = Client::start(&p.c, srv.addr, 300, Duration::from_millis(20), 100);
    // Default flush interval: 10 s.
    let all = statsd.wait_for(
        &mut agent,
        40 * S,
        "RTT metrics for app.datadoghq.com",
        |m| has_rtt_for(m, "app.datadoghq.com"),
    );
    check_pair(
        &all,
        "10.200.14.1",
        "app.datadoghq.com",
        &["env:prod"],
        100.0,
    );
    agent.signal(libc::SIGTERM);
    assert!(agent.wait(10 * S).success());
}

#[test]
fn host_name_whose_address_changes_is_followed() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let p = Pair::new("dns", 15);
    p.s.ip(&["addr", "add", "10.200.15.3/24", "dev", "veth0"]);
    p.c.write_etc("hosts", "127.0.0.1 localhost\n10.200.15.2 db.test\n");
    p.c.write_etc("resolv.conf", "nameserver 127.0.0.1\n");
    let dir = TempDir::new("dns");
    let old = EchoServer::start(&p.s, "10.200.15.2:5432");
    let new = EchoServer::start(&p.s, "10.200.15.3:5432");
    let statsd = udp_statsd(&p.c);
    let cfg = dir.write(
        "metro.yaml",
        &config(
            "1",
            UDP_STATSD,
            &[],
            &["db.test"],
            &[],
            "  dns_refresh: 1\n",
        ),
    );
    let mut agent = Agent::run_config(&p.c, &cfg, &dir);
    agent.wait_log("host 10.200.15.2", 20 * S);
    // Phase 1: traffic to the old address is measured as db.test.
    let mut c_old = Client::start(&p.c, old.addr, 200, Duration::from_millis(10), 1000);
    statsd.wait_for(&mut agent, 30 * S, "db.test on its first address", |m| {
        has_rtt_for(m, "db.test")
    });
    c_old.stop();
    // Phase 2: the name moves; only the new address carries traffic.
    p.c.write_etc("hosts", "127.0.0.1 localhost\n10.200.15.3 db.test\n");
    agent.wait_log("host 10.200.15.3", 20 * S);
    assert!(
        agent
            .log()
            .contains("`db.test` now resolves to [10.200.15.3]"),
        "{}",
        agent.log()
    );
    let moved = Instant::now();
    let _c_new = Client::start(&p.c, new.addr, 200, Duration::from_millis(10), 1000);
    let all = statsd.wait_for(&mut agent, 30 * S, "db.test on its new address", |m| {
        m.iter().any(|x| {
            x.name == "system.net.tcp.rtt.samples"
                && x.tag("dst") == Some("db.test")
                && x.at > moved + 2 * S
        })
    });
    // The metrics follow the name: still dst:db.test, never the bare new address.
    assert!(
        !all.iter()
            .any(|m| is_rtt(m) && m.tag("dst") == Some("10.200.15.3"))
    );
    assert!(agent.alive());
}

#[test]
fn sighup_with_broken_config_keeps_measuring_and_good_reload_applies() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let p = Pair::new("hup", 16);
    let dir = TempDir::new("hup");
    let srv = EchoServer::start(&p.s, "10.200.16.2:7000");
    let statsd = udp_statsd(&p.c);
    let good = config("1", UDP_STATSD, &["10.200.16.2"], &[], &["gen:1"], "");
    let cfg = dir.write("metro.yaml", &good);
    let mut agent = Agent::run_config(&p.c, &cfg, &dir);
    agent.wait_log("capture filter", 20 * S);
    let _client = Client::start(&p.c, srv.addr, 200, Duration::from_millis(10), 1000);
    statsd.wait_for(&mut agent, 30 * S, "first samples", |m| {
        has_rtt_for(m, "10.200.16.2")
    });

    // A broken file: logged, the running configuration kept.
    std::fs::write(&cfg, "init_config:\n  snaplen: [oops\ninstances: 3\n").unwrap();
    agent.signal(libc::SIGHUP);
    agent.wait_log("reload failed, keeping the running configuration", 10 * S);
    let hup = Instant::now();
    statsd.wait_for(&mut agent, 15 * S, "samples after the broken reload", |m| {
        m.iter().any(|x| {
            x.name == "system.net.tcp.rtt.samples"
                && x.at > hup + 2 * S
                && x.tag("gen") == Some("1")
        })
    });
    assert!(agent.alive());

    // A good one: applied (new tags).
    std::fs::write(&cfg, good.replace("gen:1", "gen:2")).unwrap();
    agent.signal(libc::SIGHUP);
    agent.wait_log("configuration reloaded", 10 * S);
    statsd.wait_for(&mut agent, 15 * S, "samples with the reloaded tags", |m| {
        m.iter()
            .any(|x| x.name == "system.net.tcp.rtt.samples" && x.tag("gen") == Some("2"))
    });
    agent.signal(libc::SIGTERM);
    assert!(agent.wait(10 * S).success());
}

#[test]
fn sigterm_flushes_then_exits_zero() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let p = Pair::new("term", 17);
    let dir = TempDir::new("term");
    let srv = EchoServer::start(&p.s, "10.200.17.2:7000");
    let statsd = udp_statsd(&p.c);
    // A flush interval far longer than the test: only the final flush can send anything.
    let cfg = dir.write(
        "metro.yaml",
        &config("600", UDP_STATSD, &["10.200.17.2"], &[], &[], ""),
    );
    let mut agent = Agent::run_config(&p.c, &cfg, &dir);
    agent.wait_log("capture filter", 20 * S);
    let mut client = Client::start(&p.c, srv.addr, 200, Duration::from_millis(10), 1000);
    while client.requests.load(std::sync::atomic::Ordering::Relaxed) < 30 {
        std::thread::sleep(Duration::from_millis(20));
    }
    client.stop();
    let requests = client.requests.load(std::sync::atomic::Ordering::Relaxed);
    let term = Instant::now();
    agent.signal(libc::SIGTERM);
    let status = agent.wait(10 * S);
    assert!(
        status.success(),
        "exit status {status}; log:\n{}",
        agent.log()
    );
    let mut statsd = statsd;
    let all = statsd.finish();
    assert!(
        has_rtt_for(&all, "10.200.17.2"),
        "no RTT for 10.200.17.2 in the final flush: {all:?}"
    );
    // Nothing was sent before the final flush, which SIGTERM caused.
    assert!(
        all.iter().all(|m| m.at > term),
        "sent before SIGTERM: {:?}",
        all.iter().find(|m| m.at <= term)
    );
    let n = sum(&all, "system.net.tcp.rtt.samples", |_| true);
    assert!(
        n >= f64::from(requests),
        "{n} samples for {requests} request/response exchanges"
    );
}

#[test]
fn dead_statsd_receiver_costs_no_samples() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let p = Pair::new("dead", 18);
    let dir = TempDir::new("dead");
    let srv = EchoServer::start(&p.s, "10.200.18.2:7000");
    let mut statsd = udp_statsd(&p.c);
    let cfg = dir.write(
        "metro.yaml",
        &config(
            "1",
            UDP_STATSD,
            &["10.200.18.2"],
            &[],
            &[],
            "  prometheus_listen: 127.0.0.1:9464\n",
        ),
    );
    let mut agent = Agent::run_config(&p.c, &cfg, &dir);
    agent.wait_log("capture filter", 20 * S);
    let client = Client::start(&p.c, srv.addr, 200, Duration::from_millis(10), 1000);
    statsd.wait_for(&mut agent, 30 * S, "samples", |m| {
        has_rtt_for(m, "10.200.18.2")
    });
    let prom_samples = || -> f64 {
        let body = http_get(&p.c, "127.0.0.1:9464", "/metrics");
        body.lines()
            .find(|l| l.starts_with("metro_samples_total{iface=\"veth0\",kind=\"seq\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };

    // The receiver goes away: the port is closed (ICMP unreachable on every send).
    statsd.stop();
    drop(statsd);
    let before = prom_samples();
    // Down long enough that sends failed (counted) and the client went on exchanging.
    let prom_send_errors = || -> f64 {
        http_get(&p.c, "127.0.0.1:9464", "/metrics")
            .lines()
            .find(|l| l.starts_with("metro_statsd_send_errors_total{"))
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let down_from = client.requests.load(std::sync::atomic::Ordering::Relaxed);
    let end = Instant::now() + 15 * S;
    while prom_send_errors() == 0.0
        || client.requests.load(std::sync::atomic::Ordering::Relaxed) < down_from + 100
    {
        assert!(
            Instant::now() < end && agent.alive(),
            "no send error counted while the receiver was down; log:\n{}",
            agent.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // Every exchange made while the receiver was down was still measured: the cumulative
    // count catches up with the client's (each exchange yields one seq sample).
    let requests = f64::from(client.requests.load(std::sync::atomic::Ordering::Relaxed));
    let end = Instant::now() + 10 * S;
    let mut counted = prom_samples();
    while counted < requests * 0.95 {
        assert!(
            Instant::now() < end,
            "{counted} seq samples counted for {requests} exchanges"
        );
        std::thread::sleep(Duration::from_millis(200));
        counted = prom_samples();
    }
    assert!(counted > before);
    assert!(agent.alive());

    // It comes back: metrics flow again, and the send errors were counted.
    let statsd = udp_statsd(&p.c);
    statsd.wait_for(
        &mut agent,
        15 * S,
        "metrics after the receiver came back",
        |m| {
            m.iter()
                .any(|x| x.name == "metro.samples" && x.tag("kind") == Some("seq") && x.value > 0.0)
                && m.iter()
                    .any(|x| x.name == "metro.statsd.send_errors" && x.value > 0.0)
        },
    );
    drop(client);
    assert!(
        agent.log().contains("statsd udp://127.0.0.1:8125"),
        "{}",
        agent.log()
    );
}

/// CPU time (user + system) of a process, in seconds.
fn cpu_seconds(pid: i32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf reads a constant of the system; any name is allowed.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    ticks / per_second as f64
}

#[test]
fn interface_down_and_up_again_resumes_without_spinning() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let p = Pair::new("flap", 19);
    let dir = TempDir::new("flap");
    let srv = EchoServer::start(&p.s, "10.200.19.2:7000");
    let statsd = udp_statsd(&p.c);
    let cfg = dir.write(
        "metro.yaml",
        // libpcap's reopening (the in-kernel program stays attached to an interface that
        // is down: tests/it/agent_ebpf.rs).
        &(config("1", UDP_STATSD, &["10.200.19.2"], &[], &[], "") + "    capture: pcap\n"),
    );
    let mut agent = Agent::run_config(&p.c, &cfg, &dir);
    agent.wait_log("capture filter", 20 * S);
    let _client = Client::start(&p.c, srv.addr, 200, Duration::from_millis(10), 20);
    statsd.wait_for(&mut agent, 30 * S, "samples", |m| {
        has_rtt_for(m, "10.200.19.2")
    });

    // Down, then up again: capture carries on (libpcap may or may not report the down).
    p.c.ip(&["link", "set", "veth0", "down"]);
    let cpu0 = cpu_seconds(agent.pid());
    std::thread::sleep(2 * S);
    let cpu = cpu_seconds(agent.pid()) - cpu0;
    assert!(
        cpu < 0.5,
        "{cpu} s of CPU in 2 s while the interface was down: a busy loop"
    );
    p.c.ip(&["link", "set", "veth0", "up"]);
    let up = Instant::now();
    statsd.wait_for(
        &mut agent,
        40 * S,
        "samples after the interface came up",
        |m| {
            m.iter()
                .any(|x| x.name == "system.net.tcp.rtt.samples" && x.at > up + S)
        },
    );

    // Gone: the veth is deleted (both ends), so the capture fails and reopening fails.
    p.c.ip(&["link", "del", "veth0"]);
    agent.wait_log("capture stopped", 10 * S);
    let cpu0 = cpu_seconds(agent.pid());
    std::thread::sleep(4 * S);
    let cpu = cpu_seconds(agent.pid()) - cpu0;
    assert!(
        cpu < 0.5,
        "{cpu} s of CPU in 4 s while the interface was gone: a busy loop"
    );
    assert!(agent.alive());
    assert!(
        agent.log().contains("no interface named `veth0`"),
        "{}",
        agent.log()
    );

    // Back: same names and addresses; capture resumes on its own.
    netns::veth(
        &p.c,
        "veth0",
        Some("10.200.19.1/24"),
        &p.s,
        "veth0",
        Some("10.200.19.2/24"),
    );
    let srv2 = EchoServer::start(&p.s, "10.200.19.2:7001");
    let back = Instant::now();
    let _client2 = Client::start(&p.c, srv2.addr, 200, Duration::from_millis(10), 20);
    statsd.wait_for(
        &mut agent,
        40 * S,
        "samples after the interface came back",
        |m| {
            m.iter()
                .any(|x| x.name == "system.net.tcp.rtt.samples" && x.at > back + S)
        },
    );
    drop(srv);
    eprintln!("{}", agent.log());
}

#[test]
fn vlan_tagged_frames_replayed_with_tcpreplay() {
    if !netns::needs_root("the agent in network namespaces with tcpreplay") {
        return;
    }
    let _load = support::timed();
    let p = Pair::new("vlan", 20);
    let dir = TempDir::new("vlan");
    let statsd = udp_statsd(&p.c);
    // A remote pair on VLAN 100 the client namespace overhears: 10.200.20.7 talks to
    // 10.200.20.9 with a 10 ms round trip.
    let mut fr = frames::conversation(
        [10, 200, 20, 7],
        [10, 200, 20, 9],
        [2, 0, 0, 0, 0, 7],
        [2, 0, 0, 0, 0, 9],
        1_700_000_000_000_000_000,
        10.0,
        40,
        20.0,
        Some(100),
    );
    let pcap = dir.path("vlan.pcap");
    frames::write_pcap(&pcap, &mut fr);
    // libpcap's filter with its VLAN half (the in-kernel path reads tags itself:
    // tests/it/agent_ebpf.rs).
    let cfg = dir.write(
        "metro.yaml",
        &(config("1", UDP_STATSD, &["10.200.20.9"], &[], &[], "") + "    capture: pcap\n"),
    );
    let mut agent = Agent::run_config(&p.c, &cfg, &dir);
    agent.wait_log("capture filter", 20 * S);
    assert!(
        agent
            .log()
            .contains("(vlan and (tcp or udp or icmp or icmp6) and (host 10.200.20.9))"),
        "{}",
        agent.log()
    );
    p.s.tcpreplay(&["-i", "veth0", pcap.to_str().unwrap()]);
    let all = statsd.wait_for(&mut agent, 20 * S, "samples from the VLAN frames", |m| {
        sum(m, "system.net.tcp.rtt.samples", |x| {
            x.tag("dst") == Some("10.200.20.9")
        }) >= 35.0
    });
    let p50 = named(&all, "system.net.tcp.rtt.p50")
        .iter()
        .map(|m| m.value)
        .fold(0.0f64, f64::max);
    assert!(
        (p50 - 10.0).abs() < 4.0,
        "p50 {p50} ms for a replayed 10 ms round trip"
    );
    assert!(
        named(&all, "system.net.tcp.rtt")
            .iter()
            .all(|m| m.tag("src") == Some("10.200.20.7"))
    );
}

#[test]
fn netns_helpers_clean_up() {
    if !netns::needs_root("network namespaces") {
        return;
    }
    let name;
    {
        let ns = Netns::new("gc");
        name = ns.name.clone();
        ns.write_etc("hosts", "127.0.0.1 localhost\n");
        assert!(std::path::Path::new(&format!("/run/netns/{name}")).exists());
    }
    assert!(!std::path::Path::new(&format!("/run/netns/{name}")).exists());
    assert!(!std::path::Path::new(&format!("/etc/netns/{name}")).exists());
}
