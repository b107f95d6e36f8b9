//! QUIC, DNS and ICMP latency in `metro run`, with real implementations across the delay
//! line (tests/support/netns.rs): dnsmasq answering a local zone in the server's namespace,
//! queried with dig over UDP and TCP (a name that exists, one that does not: NXDOMAIN), a
//! query to a port that reads and never answers (a timeout), and ping; the agent captures on
//! the client's interface and sends DogStatsD and a Prometheus exposition. The clients' own
//! timings are the independent measure (dig's `Query time` bounds metro's from above,
//! ping's `time=` within 2 ms), the delay line's round trip the floor.

#[path = "support/agent.rs"]
mod agent;
#[path = "support/dns.rs"]
mod dns;
#[path = "support/netns.rs"]
mod netns;

use std::time::Duration;

use agent::{Agent, TempDir, UDP_STATSD, http_get, named, sum, udp_statsd};
use netns::Delayed;

const S: Duration = Duration::from_secs(1);

#[test]
fn dns_and_icmp_latency_reach_dogstatsd_and_prometheus() {
    if !netns::needs_root("namespaces, dnsmasq and a capture") {
        return;
    }
    let one_way = Duration::from_millis(20);
    let d = Delayed::new("apr", 61, one_way);
    let (client, server) = (d.client_ip(), d.server_ip());
    let _dnsmasq = dns::dnsmasq(&d.s, &server);
    // A UDP port that reads and never answers: a query to it times out.
    let addr = format!("{server}:5354");
    let _silent = d.s.enter(move || std::net::UdpSocket::bind(addr).unwrap());
    // Resolve the server's address first (ARP across the delay line is not DNS's time).
    dns::ping(&d.c, &server, 1);

    let dir = TempDir::new("agent-proto");
    let statsd = udp_statsd(&d.c);
    let cfg = dir.write(
        "metro.yaml",
        &format!(
            "init_config:\n  flush_interval: 1\n{UDP_STATSD}  prometheus_listen: 127.0.0.1:9464\n\
             instances:\n  - interface: veth0\n    ips: [{server}]\n    capture: pcap\n"
        ),
    );
    // libpcap: the in-kernel capture hands over TCP segments only (its raw frames for the
    // other protocols come through the same Processor::packet).
    let mut agent = Agent::run_config(&d.c, &cfg, &dir);
    agent.wait_log("capture filter", 20 * S);
    let log = agent.log();
    assert!(log.contains("tcp or udp or icmp or icmp6"), "{log}");

    let mut dig_ms = Vec::new();
    for tcp in [false, true] {
        for (name, status) in [("a.metro.test", "NOERROR"), ("gone.nx.test", "NXDOMAIN")] {
            let (got, ms) = dns::dig(&d.c, &server, name, tcp);
            assert_eq!(got, status, "{name}");
            dig_ms.push(ms);
        }
    }
    let mut lost = d.c.command("dig");
    lost.args([
        &format!("@{server}"),
        "-p",
        "5354",
        "+tries=1",
        "+time=1",
        "x.metro.test",
    ]);
    let out = lost.output().unwrap();
    assert!(!out.status.success(), "the silent port answered: {out:?}");
    let ping_ms = dns::ping(&d.c, &server, 5);

    let pair = |m: &agent::Metric| {
        m.tag("dst") == Some(server.as_str())
            && m.tag("src") == Some(client.as_str())
            && m.tag("iface") == Some("veth0")
    };
    // The timeout is counted 30 s after its query, at the next expiry.
    let all = statsd.wait_for(&mut agent, 60 * S, "DNS, ICMP and the timeout", |all| {
        sum(all, "system.net.dns.response_time.samples", pair) >= 4.0
            && sum(all, "system.net.icmp.rtt.samples", pair) >= 5.0
            && sum(all, "system.net.dns.timeouts", |_| true) >= 1.0
    });
    let floor = 2.0 * one_way.as_secs_f64() * 1e3;
    let values = |name: &str| -> Vec<f64> {
        named(&all, name)
            .into_iter()
            .filter(|m| pair(m))
            .map(|m| m.value)
            .collect()
    };
    let (dns_min, dns_max) = (
        values("system.net.dns.response_time.min"),
        values("system.net.dns.response_time.max"),
    );
    let (icmp_min, icmp_max) = (
        values("system.net.icmp.rtt.min"),
        values("system.net.icmp.rtt.max"),
    );
    let lo = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    eprintln!(
        "metro dns {:.3}..{:.3} ms, dig {dig_ms:?}; metro icmp {:.3}..{:.3} ms, ping {ping_ms:?}",
        lo(&dns_min),
        hi(&dns_max),
        lo(&icmp_min),
        hi(&icmp_max)
    );
    // Exactly the four answered queries and the five echoes, nothing else.
    assert_eq!(
        sum(&all, "system.net.dns.response_time.samples", |_| true),
        4.0
    );
    assert_eq!(sum(&all, "system.net.icmp.rtt.samples", |_| true), 5.0);
    assert_eq!(sum(&all, "system.net.quic.rtt.samples", |_| true), 0.0);
    assert!(
        lo(&dns_min) >= floor,
        "DNS below the delay line's {floor} ms"
    );
    assert!(
        hi(&dns_max) <= hi(&dig_ms) + 2.0,
        "DNS {} ms above dig's slowest {} ms",
        hi(&dns_max),
        hi(&dig_ms)
    );
    assert!(
        lo(&icmp_min) >= floor,
        "ICMP below the delay line's {floor} ms"
    );
    assert!(
        (lo(&icmp_min) - lo(&ping_ms)).abs() < 2.0,
        "ICMP fastest vs ping"
    );
    assert!(
        (hi(&icmp_max) - hi(&ping_ms)).abs() < 2.0,
        "ICMP slowest vs ping"
    );
    // Responses by rcode, the timeout, and the sample kinds.
    let rcode = |r: &str| {
        sum(&all, "system.net.dns.responses", |m| {
            m.tag("rcode") == Some(r) && m.tag("iface") == Some("veth0")
        })
    };
    assert_eq!((rcode("NOERROR"), rcode("NXDOMAIN")), (2.0, 2.0));
    assert_eq!(sum(&all, "system.net.dns.timeouts", |_| true), 1.0);
    let kind = |k: &str| sum(&all, "metro.samples", |m| m.tag("kind") == Some(k));
    assert_eq!((kind("dns"), kind("icmp")), (4.0, 5.0));

    // The Prometheus exposition: the histograms and the counters, with the same labels.
    let body = http_get(&d.c, "127.0.0.1:9464", "/metrics");
    let labels = format!("src=\"{client}\",dst=\"{server}\",iface=\"veth0\"");
    for want in [
        format!("metro_dns_response_seconds_count{{{labels}}} 4"),
        format!("metro_icmp_rtt_seconds_count{{{labels}}} 5"),
        format!("metro_dns_response_samples_total{{{labels}}} 4"),
        "metro_dns_responses_total{iface=\"veth0\",rcode=\"NXDOMAIN\"} 2".to_string(),
        "metro_dns_timeouts_total{iface=\"veth0\"} 1".to_string(),
    ] {
        assert!(body.contains(&want), "{want} not in\n{body}");
    }
    agent.signal(libc::SIGTERM);
    assert!(agent.wait(20 * S).success(), "{}", agent.log());
}
