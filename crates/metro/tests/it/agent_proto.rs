//! QUIC, DNS and ICMP latency in `metro run`, with real implementations across the delay
//! line (tests/it/support/netns.rs): dnsmasq answering a local zone in the server's namespace,
//! queried with dig over UDP and TCP (a name that exists, one that does not: NXDOMAIN), a
//! query to a port that reads and never answers (a timeout), and ping; the agent captures on
//! the client's interface and sends DogStatsD and a Prometheus exposition. The clients' own
//! timings are the independent measure (dig's `Query time` bounds metro's from above,
//! ping's `time=` within 2 ms), the delay line's round trip the floor. aioquic's server
//! and client give QUIC's handshake and spin samples; a flood of QUIC Initials, stray DNS
//! responses and echo requests leaves the real traffic measured.

use crate::support;
use crate::support::{agent, dns, frames, netns, quic};

use std::time::Duration;

use agent::{Agent, TempDir, UDP_STATSD, http_get, named, sum, udp_statsd};
use netns::Delayed;

const S: Duration = Duration::from_secs(1);

#[test]
fn dns_and_icmp_latency_reach_dogstatsd_and_prometheus() {
    dns_and_icmp("pcap");
}

/// The same through the in-kernel capture: its program hands the watched UDP and ICMP
/// frames over whole (raw-frame records) because `protocols` names DNS and ICMP, and the TCP
/// segments whose payload may be a DNS message (DNS over TCP: the program's records carry
/// no payload), each counted in `metro.packets.raw` by reason.
#[test]
fn dns_and_icmp_latency_from_the_in_kernel_capture() {
    dns_and_icmp("ebpf");
}

/// dnsmasq, dig (UDP and TCP), a silent DNS port and ping across the delay line, `metro run`
/// capturing with `capture`.
fn dns_and_icmp(capture: &str) {
    if !netns::needs_root("namespaces, dnsmasq and a capture") {
        return;
    }
    let _load = support::timed();
    // Two queries over UDP, two over TCP: four samples on either path.
    let dns_n = 4.0;
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
             instances:\n  - interface: veth0\n    ips: [{server}]\n    capture: {capture}\n"
        ),
    );
    let mut agent = Agent::run_config(&d.c, &cfg, &dir);
    if capture == "pcap" {
        agent.wait_log("capture filter", 20 * S);
        let log = agent.log();
        assert!(log.contains("tcp or udp or icmp or icmp6"), "{log}");
    } else {
        agent.wait_log("capture in the kernel (eBPF) on veth0", 20 * S);
    }

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
        sum(all, "system.net.dns.response_time.samples", pair) >= dns_n
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
    // Exactly the answered queries (four) and the five echoes, nothing else.
    assert_eq!(
        sum(&all, "system.net.dns.response_time.samples", |_| true),
        dns_n
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
    assert_eq!(
        (rcode("NOERROR"), rcode("NXDOMAIN")),
        (dns_n / 2.0, dns_n / 2.0)
    );
    assert_eq!(sum(&all, "system.net.dns.timeouts", |_| true), 1.0);
    let kind = |k: &str| sum(&all, "metro.samples", |m| m.tag("kind") == Some(k));
    assert_eq!((kind("dns"), kind("icmp")), (dns_n, 5.0));
    if capture == "ebpf" {
        // The two TCP queries and their two answers came whole (each a segment starting
        // with the message's length, as the libpcap path's samples need too), nothing else
        // of TCP: the handshakes and ACKs came as records.
        let raw = |r: &str| sum(&all, "metro.packets.raw", |m| m.tag("reason") == Some(r));
        assert_eq!(
            (raw("dns"), raw("unparsed"), raw("malformed")),
            (4.0, 0.0, 0.0)
        );
    }

    // The Prometheus exposition: the histograms and the counters, with the same labels.
    let body = http_get(&d.c, "127.0.0.1:9464", "/metrics");
    let labels = format!("src=\"{client}\",dst=\"{server}\",iface=\"veth0\"");
    for want in [
        format!("metro_dns_response_seconds_count{{{labels}}} {dns_n}"),
        format!("metro_icmp_rtt_seconds_count{{{labels}}} 5"),
        format!("metro_dns_response_samples_total{{{labels}}} {dns_n}"),
        format!(
            "metro_dns_responses_total{{iface=\"veth0\",rcode=\"NXDOMAIN\"}} {}",
            dns_n / 2.0
        ),
        "metro_dns_timeouts_total{iface=\"veth0\"} 1".to_string(),
    ] {
        assert!(body.contains(&want), "{want} not in\n{body}");
    }
    agent.signal(libc::SIGTERM);
    assert!(agent.wait(20 * S).success(), "{}", agent.log());
}

/// An Ethernet frame to `dst_mac` carrying IPv4 `src` -> `dst`, protocol `proto`.
fn eth_ip4(dst_mac: [u8; 6], src: [u8; 4], dst: [u8; 4], proto: u8, l4: &[u8]) -> Vec<u8> {
    let mut f = dst_mac.to_vec();
    f.extend_from_slice(&[0x02, 0, 0, 0, 0, 0xee, 0x08, 0x00]);
    f.extend_from_slice(&metro_testkit::vectors::ip4(src, dst, proto, l4));
    f
}

/// A QUIC v1 client Initial as a UDP payload of 1,200 bytes (what opens a connection entry):
/// long header, fixed bit, 8-byte connection IDs from `n`, the rest padding.
fn quic_initial(n: u32) -> Vec<u8> {
    let mut p = vec![0xc0, 0, 0, 0, 1, 8];
    p.extend_from_slice(&u64::from(n).to_be_bytes());
    p.push(8);
    p.extend_from_slice(&(u64::from(n) << 1).to_be_bytes());
    p.push(0); // no token
    let rest = 1200 - p.len() - 2;
    p.extend_from_slice(&(0x4000 | rest as u16).to_be_bytes());
    p.resize(1200, 0);
    p
}

/// A DNS response (NOERROR, no answer) for `x.metro.test` A with ID `id`.
fn dns_response(id: u16) -> Vec<u8> {
    let mut p = id.to_be_bytes().to_vec();
    p.extend_from_slice(&[0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0]);
    p.extend_from_slice(b"\x01x\x05metro\x04test\x00\x00\x01\x00\x01");
    p
}

/// An ICMP echo request (identifier `id`, sequence 1).
fn echo_request(id: u16) -> Vec<u8> {
    let mut p = vec![8, 0, 0, 0];
    p.extend_from_slice(&id.to_be_bytes());
    p.extend_from_slice(&[0, 1]);
    p.extend_from_slice(&[0x55; 16]);
    let sum = p.chunks(2).fold(0u32, |s, w| {
        s + u32::from(u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]))
    });
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = !((sum & 0xffff) + (sum >> 16)) as u16;
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

#[test]
fn floods_of_quic_initials_stray_dns_answers_and_echo_requests_leave_real_traffic_measured() {
    if !netns::needs_root("namespaces, dnsmasq, a capture and tcpreplay") {
        return;
    }
    let _load = support::heavy();
    let one_way = Duration::from_millis(10);
    let d = Delayed::new("apf", 62, one_way);
    let (client, server) = (d.client_ip(), d.server_ip());
    let _dnsmasq = dns::dnsmasq(&d.s, &server);
    dns::ping(&d.c, &server, 1);
    let mac = dns::run(
        {
            let mut c = d.c.command("cat");
            c.arg("/sys/class/net/veth0/address");
            c
        },
        "the client's MAC",
    );
    let mac: Vec<u8> = mac
        .trim()
        .split(':')
        .map(|h| u8::from_str_radix(h, 16).unwrap())
        .collect();
    let mac: [u8; 6] = mac.try_into().unwrap();
    let c4: [u8; 4] = client.parse::<std::net::Ipv4Addr>().unwrap().octets();
    let s4: [u8; 4] = server.parse::<std::net::Ipv4Addr>().unwrap().octets();

    // 70,000 QUIC Initials from as many forged sources (more than the 65,536 entries the
    // table holds), 5,000 DNS responses from the server that match no query, and 70,000
    // echo requests from forged sources: one frame each, all to the client.
    const N: u32 = 70_000;
    let forged = |i: u32| (u32::from(std::net::Ipv4Addr::new(10, 16, 0, 1)) + i).to_be_bytes();
    let mut fr: Vec<frames::Frame> = Vec::new();
    let t0 = 1_700_000_000_000_000_000i64;
    for i in 0..N {
        let udp = metro_testkit::vectors::udp((40000 + i % 20000) as u16, 443, &quic_initial(i));
        fr.push(frames::Frame {
            ts: t0 + i64::from(i) * 20_000,
            data: eth_ip4(mac, forged(i), c4, 17, &udp),
        });
        fr.push(frames::Frame {
            ts: t0 + i64::from(i) * 20_000 + 5_000,
            data: eth_ip4(mac, forged(i), c4, 1, &echo_request(i as u16)),
        });
        if i < 5_000 {
            let udp = metro_testkit::vectors::udp(53, 33000, &dns_response(i as u16));
            fr.push(frames::Frame {
                ts: t0 + i64::from(i) * 20_000 + 10_000,
                data: eth_ip4(mac, s4, c4, 17, &udp),
            });
        }
    }
    let dir = TempDir::new("agent-proto-flood");
    let pcap = dir.path("flood.pcap");
    frames::write_pcap(&pcap, &mut fr);

    let statsd = udp_statsd(&d.c);
    let cfg = dir.write(
        "metro.yaml",
        &format!(
            "init_config:\n  flush_interval: 1\n  buffer_size: 67108864\n{UDP_STATSD}\
             instances:\n  - interface: veth0\n    ips: [10.0.0.0/8]\n    capture: pcap\n"
        ),
    );
    // The forged sources are watched (10.16.0.0/12 in 10.0.0.0/8): the kernel filter lets
    // the flood through to the tracker, whose bounds are what is tested.
    let mut agent = Agent::run_config(&d.c, &cfg, &dir);
    agent.wait_log("capture filter", 20 * S);
    // Injected on the delay line's side of the client's link, while real queries and
    // echoes cross it.
    let mut replay = d.m.command("tcpreplay");
    replay.args(["-q", "--pps=50000", "-i", "mc", pcap.to_str().unwrap()]);
    let replay = replay.spawn().expect("tcpreplay");
    let mut replay = dns::Kill(replay);
    std::thread::sleep(Duration::from_millis(300));
    let mut dig_ms = Vec::new();
    for tcp in [false, true] {
        for name in ["a.metro.test", "b.metro.test"] {
            let (status, ms) = dns::dig(&d.c, &server, name, tcp);
            assert_eq!(status, "NOERROR");
            dig_ms.push(ms);
        }
    }
    let ping_ms = dns::ping(&d.c, &server, 5);
    let status = replay.0.wait().unwrap();
    assert!(status.success(), "tcpreplay: {status}");

    let pair = |m: &agent::Metric| {
        m.tag("dst") == Some(server.as_str()) && m.tag("src") == Some(client.as_str())
    };
    let proto = |all: &[agent::Metric], name: &str, p: &str| {
        sum(all, name, |m| m.tag("protocol") == Some(p))
    };
    // Until the real traffic and every kind of flood packet are counted, at most 30 s (the
    // counters are published at the capture thread's next tick); asserted below.
    statsd.wait_until(30 * S, |all| {
        sum(all, "system.net.dns.response_time.samples", pair) >= 4.0
            && sum(all, "system.net.icmp.rtt.samples", pair) >= 5.0
            && proto(all, "metro.proto.dropped", "quic") > 0.0
            && proto(all, "metro.proto.dropped", "icmp") > 0.0
            && proto(all, "metro.proto.unmatched", "dns") > 0.0
    });
    let all = statsd.all();
    let received = sum(&all, "metro.packets.received", |_| true);
    let kernel_drops = sum(&all, "metro.packets.dropped", |_| true);
    eprintln!(
        "{received} packets received, {kernel_drops} dropped by the kernel; dropped: quic {}, \
         icmp {}, dns {}; unmatched dns {}; dig {dig_ms:?}, ping {ping_ms:?}",
        proto(&all, "metro.proto.dropped", "quic"),
        proto(&all, "metro.proto.dropped", "icmp"),
        proto(&all, "metro.proto.dropped", "dns"),
        proto(&all, "metro.proto.unmatched", "dns"),
    );
    assert!(
        proto(&all, "metro.proto.dropped", "quic") > 0.0,
        "QUIC entries shed"
    );
    assert!(
        proto(&all, "metro.proto.dropped", "icmp") > 0.0,
        "echo requests evicted"
    );
    assert!(
        proto(&all, "metro.proto.unmatched", "dns") > 0.0,
        "stray responses"
    );
    // Every real query and echo measured, nothing else from the server.
    assert_eq!(sum(&all, "system.net.dns.response_time.samples", pair), 4.0);
    assert_eq!(sum(&all, "system.net.icmp.rtt.samples", pair), 5.0);
    let hi = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let max_of = |name: &str| {
        hi(&named(&all, name)
            .into_iter()
            .filter(|m| pair(m))
            .map(|m| m.value)
            .collect::<Vec<_>>())
    };
    assert!(max_of("system.net.dns.response_time.max") <= hi(&dig_ms) + 2.0);
    assert!((max_of("system.net.icmp.rtt.max") - hi(&ping_ms)).abs() < 2.0);
    // The forged Initials never answered: no QUIC sample; no DNS table entry was lost.
    assert_eq!(sum(&all, "system.net.quic.rtt.samples", |_| true), 0.0);
    assert_eq!(proto(&all, "metro.proto.dropped", "dns"), 0.0);
    agent.signal(libc::SIGTERM);
    assert!(agent.wait(20 * S).success(), "{}", agent.log());
}

/// aioquic's server and client across the delay line (20 ms each way), the agent on the
/// client's interface: `system.net.quic.rtt` carries the handshake and spin samples, none
/// below the line's round trip, their median within 5 ms of the client's own median
/// exchange time (send to echo: the network's round trip plus both endpoints' processing,
/// which the spin bit also carries).
#[test]
fn aioquic_round_trips_reach_dogstatsd() {
    if !netns::needs_root("namespaces, aioquic and a capture") {
        return;
    }
    let _load = support::timed();
    let py = quic::python();
    let one_way = Duration::from_millis(20);
    let d = Delayed::new("apq", 63, one_way);
    let (client, server) = (d.client_ip(), d.server_ip());
    let _srv = quic::server(&d.s, &py, &server, 4433);
    dns::ping(&d.c, &server, 1);
    let dir = TempDir::new("agent-proto-quic");
    let statsd = udp_statsd(&d.c);
    let cfg = dir.write(
        "metro.yaml",
        &format!(
            "init_config:\n  flush_interval: 1\n{UDP_STATSD}\
             instances:\n  - interface: veth0\n    ips: [{server}]\n    capture: pcap\n    \
             protocols: [quic]\n"
        ),
    );
    let mut agent = Agent::run_config(&d.c, &cfg, &dir);
    agent.wait_log("capture filter", 20 * S);
    let log = agent.log();
    assert!(
        log.contains("(udp) and (host"),
        "QUIC alone needs udp only: {log}"
    );
    let (connect_ms, mut app) = quic::client(&d.c, &py, &server, 4433, 60, 0.0);
    let pair = |m: &agent::Metric| {
        m.tag("dst") == Some(server.as_str()) && m.tag("src") == Some(client.as_str())
    };
    statsd.wait_until(10 * S, |all| {
        sum(all, "metro.samples", |m| {
            m.tag("kind") == Some("quic_handshake")
        }) >= 1.0
            && sum(all, "metro.samples", |m| m.tag("kind") == Some("quic_spin")) >= 10.0
    });
    agent.signal(libc::SIGTERM);
    assert!(agent.wait(20 * S).success(), "{}", agent.log());
    let mut statsd = statsd;
    let all = statsd.finish();
    let kind = |k: &str| sum(&all, "metro.samples", |m| m.tag("kind") == Some(k));
    let n = sum(&all, "system.net.quic.rtt.samples", pair);
    let floor = 2.0 * one_way.as_secs_f64() * 1e3;
    let values = |name: &str| -> Vec<f64> {
        named(&all, name)
            .into_iter()
            .filter(|m| pair(m))
            .map(|m| m.value)
            .collect()
    };
    // Per interval the median of its samples; their median, weighed by nothing: the
    // intervals are alike (one exchange after another).
    let mut p50 = values("system.net.quic.rtt.p50");
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let mins = values("system.net.quic.rtt.min");
    let lo = mins.iter().copied().fold(f64::INFINITY, f64::min);
    eprintln!(
        "quic: {n} samples ({} handshake, {} spin), least {lo:.3} ms, interval medians {p50:?}; \
         client: connect {connect_ms:.3} ms, exchange median {:.3} ms",
        kind("quic_handshake"),
        kind("quic_spin"),
        median(&mut app.clone())
    );
    assert!(kind("quic_handshake") >= 1.0 && kind("quic_spin") >= 10.0);
    assert_eq!(n, kind("quic_handshake") + kind("quic_spin"));
    // Nothing but QUIC measured (`protocols: [quic]`), and nothing below the line.
    assert_eq!(kind("seq") + kind("dns") + kind("icmp"), 0.0);
    assert!(
        lo >= floor,
        "a QUIC sample below the delay line's {floor} ms"
    );
    let (s, a) = (median(&mut p50), median(&mut app));
    assert!(
        (s - a).abs() < 5.0,
        "spin median {s} ms, the client's {a} ms"
    );
}
