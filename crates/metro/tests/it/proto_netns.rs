//! DNS and ICMP with real implementations across the delay line (tests/it/support/netns.rs):
//! dnsmasq (Debian) answering a local zone in the server's namespace, queried with dig over
//! UDP and TCP, and ping, from the client's namespace through a userspace delay line of a
//! known one-way delay. dumpcap captures on the client's interface; `metro analyze` on that
//! capture must time every echo within 2 ms of what ping measured (its `time=`, from a
//! kernel receive timestamp), every DNS answer as tshark does on the same capture (to the
//! microsecond) and no later than dig's own `Query time`, and nothing below the delay
//! line's round trip.
//! (The userspace delay line on a loaded machine adds its own jitter, up to tens of ms: the
//! clients' own timings are the independent measure, the known delay the floor.)

use crate::support;
use crate::support::netns;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use netns::Delayed;
use serde_json::Value;

struct Kill(Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// dumpcap capturing on the client's `veth0` into `pcap` (with a capture filter, or none),
/// after a ping has resolved the server's address (otherwise the first exchange waits for
/// ARP across the delay line, which the client counts and the capture point does not see).
struct Dumpcap(Kill);

impl Dumpcap {
    fn start(
        ns: &netns::Netns,
        server: &str,
        filter: Option<&str>,
        pcap: &std::path::Path,
    ) -> Dumpcap {
        let mut warm = ns.command("ping");
        warm.args(["-c", "1", "-W", "5", server]);
        run(warm, "ping (ARP)");
        let mut cap = ns.command("dumpcap");
        cap.args(["-q", "-i", "veth0"]);
        if let Some(f) = filter {
            cap.args(["-f", f]);
        }
        cap.arg("-w")
            .arg(pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let cap = Kill(cap.spawn().expect("dumpcap"));
        // Wait until dumpcap has written its file header.
        let t0 = Instant::now();
        while std::fs::metadata(pcap).map(|m| m.len()).unwrap_or(0) == 0 {
            assert!(
                t0.elapsed() < Duration::from_secs(20),
                "dumpcap did not start"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(500));
        Dumpcap(cap)
    }

    /// Stops it (SIGINT: it closes the file whole).
    fn stop(mut self) {
        std::thread::sleep(Duration::from_millis(300));
        let _ = Command::new("kill")
            .arg("-INT")
            .arg(self.0.0.id().to_string())
            .status();
        let _ = self.0.0.wait();
    }
}

#[test]
fn dig_over_udp_and_tcp_and_ping_across_the_delay_line() {
    if !netns::needs_root("namespaces, dnsmasq and a capture") {
        return;
    }
    let _load = support::timed();
    let one_way = Duration::from_millis(20);
    let d = Delayed::new("prt", 60, one_way);
    let dir = std::env::temp_dir().join(format!("metro-proto-netns-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("c.pcapng");

    // dnsmasq: an authoritative local zone, nothing forwarded, in the foreground.
    let mut dns = d.s.command("dnsmasq");
    dns.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--user=root",
        "--bind-interfaces",
        "--listen-address=10.200.60.2",
        "--port=53",
        "--address=/metro.test/192.0.2.7",
        "--local=/metro.test/",
        "--pid-file",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    let _dns = Kill(dns.spawn().expect("dnsmasq"));

    let cap = Dumpcap::start(&d.c, "10.200.60.2", None, &pcap);

    let mut dig_ms: Vec<f64> = Vec::new();
    for tcp in [false, true] {
        for name in ["a.metro.test", "b.metro.test", "nothing.metro.test"] {
            let mut dig = d.c.command("dig");
            dig.args(["@10.200.60.2", "+tries=1", "+time=3", name]);
            if tcp {
                dig.arg("+tcp");
            }
            let out = run(dig, "dig");
            assert!(
                out.contains("status: NOERROR") || out.contains("status: NXDOMAIN"),
                "{out}"
            );
            let t = out
                .lines()
                .find_map(|l| l.strip_prefix(";; Query time: "))
                .and_then(|l| l.strip_suffix(" msec"))
                .unwrap_or_else(|| panic!("no query time: {out}"));
            dig_ms.push(t.parse().unwrap());
        }
    }
    let mut ping = d.c.command("ping");
    ping.args(["-c", "5", "-i", "0.2", "10.200.60.2"]);
    let ping_out = run(ping, "ping");
    let ping_ms: Vec<f64> = ping_out
        .lines()
        .filter_map(|l| l.split_once(" time=")?.1.strip_suffix(" ms")?.parse().ok())
        .collect();
    assert_eq!(ping_ms.len(), 5, "{ping_out}");
    cap.stop();

    let out = Command::new(env!("CARGO_BIN_EXE_metro"))
        .args(["analyze", "--kinds", "dns,icmp", "--samples", "-", "-q"])
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let floor = 2.0 * one_way.as_secs_f64() * 1e3;
    let lines = String::from_utf8(out.stdout).unwrap();
    let (mut dns, mut tcp_dns, mut icmp) = (Vec::new(), 0, Vec::new());
    for l in lines.lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        let ms = v["rtt_ms"].as_f64().unwrap();
        assert!(ms >= floor, "{l}: below the delay line's {floor} ms");
        assert_eq!(v["src"], "10.200.60.2", "{l}");
        match v["kind"].as_str().unwrap() {
            "dns" => {
                tcp_dns += usize::from(is_tcp(&pcap, v["frame"].as_u64().unwrap()));
                dns.push(ms);
            }
            "icmp" => icmp.push(ms),
            k => panic!("{k}"),
        }
    }
    eprintln!(
        "metro dns {dns:?} ms, dig {dig_ms:?} ms; metro icmp {icmp:?} ms, ping {ping_ms:?} ms"
    );
    assert_eq!((dns.len(), tcp_dns, icmp.len()), (6, 3, 5), "{lines}");
    // dig's `Query time` is whole milliseconds of user-space clock around its own send and
    // receive (a TCP query's includes its connect; a loaded machine adds scheduling, up to
    // tens of ms here): it bounds metro's from above only. The exact reference for the
    // same capture is tshark's dns.time, which metro must equal to the microsecond.
    // dig reads the kernel's coarse clock (its times here are multiples of one tick, 1/HZ:
    // 4 ms at HZ=250), so its difference can fall up to a tick short of the true time.
    let tick = coarse_clock_tick_ms();
    for (m, c) in dns.iter().zip(&dig_ms) {
        assert!(
            *m < c + tick + 1.0,
            "dns: metro {m} ms, dig {c} ms (clock tick {tick} ms)"
        );
    }
    let tshark = Command::new("tshark")
        .arg("-r")
        .arg(&pcap)
        .args(["-Y", "dns.time", "-T", "fields", "-e", "dns.time"])
        .output()
        .unwrap();
    let theirs: Vec<f64> = String::from_utf8_lossy(&tshark.stdout)
        .lines()
        .map(|l| l.parse::<f64>().unwrap() * 1e3)
        .collect();
    assert_eq!(theirs.len(), dns.len(), "tshark: {theirs:?}");
    for (m, t) in dns.iter().zip(&theirs) {
        assert!((m - t).abs() < 1e-3, "dns: metro {m} ms, tshark {t} ms");
    }
    for (m, c) in icmp.iter().zip(&ping_ms) {
        assert!((m - c).abs() < 2.0, "icmp: metro {m} ms, ping {c} ms");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Whether frame `n` of the capture is TCP (tshark says which transport the response used).
fn is_tcp(pcap: &std::path::Path, n: u64) -> bool {
    let out = Command::new("tshark")
        .arg("-r")
        .arg(pcap)
        .args([
            "-Y",
            &format!("frame.number == {n}"),
            "-T",
            "fields",
            "-e",
            "tcp.srcport",
        ])
        .output()
        .unwrap();
    !String::from_utf8_lossy(&out.stdout).trim().is_empty()
}

/// aioquic's server and client (PyPI, pinned in .ci/run's venv; `METRO_PYTHON`) across the
/// delay line: the handshake sample is at least the line's round trip and no more than the
/// client's whole connect; the spin samples' median is within a few ms of the client's own
/// median exchange time (send to echo: the network's round trip plus both endpoints'
/// processing, which the spin bit also carries).
#[test]
fn aioquic_spin_and_handshake_across_the_delay_line() {
    if !netns::needs_root("namespaces, aioquic and a capture") {
        return;
    }
    let _load = support::timed();
    let py = std::env::var("METRO_PYTHON").unwrap_or_else(|_| "python3".into());
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/it/support/quic_echo.py");
    let check = Command::new(&py).args(["-c", "import aioquic"]).status();
    assert!(
        check.is_ok_and(|s| s.success()),
        "{py} cannot import aioquic: `pip install aioquic==1.2.0` (or set METRO_PYTHON to a \
         Python that can; .ci/run does)"
    );
    let one_way = Duration::from_millis(20);
    let d = Delayed::new("prq", 61, one_way);
    let dir = std::env::temp_dir().join(format!("metro-proto-quic-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let pcap = dir.join("c.pcapng");

    let mut srv = d.s.command(&py);
    srv.args([script, "server", "10.200.61.2", "4433"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut srv = Kill(srv.spawn().expect("aioquic server"));
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(srv.0.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line.trim(), "listening");

    let cap = Dumpcap::start(&d.c, "10.200.61.2", Some("udp"), &pcap);

    let mut cli = d.c.command(&py);
    cli.args([script, "client", "10.200.61.2", "4433", "60", "0"]);
    let out = run(cli, "aioquic client");
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    let connect_ms = v["connect"].as_f64().unwrap() * 1e3;
    let mut app: Vec<f64> = v["rtts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() * 1e3)
        .collect();
    cap.stop();

    let out = Command::new(env!("CARGO_BIN_EXE_metro"))
        .args([
            "analyze",
            "--kinds",
            "quic_handshake,quic_spin",
            "--samples",
            "-",
            "-q",
        ])
        .arg(&pcap)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let (mut hs, mut spin) = (Vec::new(), Vec::new());
    for l in String::from_utf8(out.stdout).unwrap().lines() {
        let v: Value = serde_json::from_str(l).unwrap();
        let ms = v["rtt_ms"].as_f64().unwrap();
        match v["kind"].as_str().unwrap() {
            "quic_handshake" => hs.push((v["src"].as_str().unwrap().to_string(), ms)),
            "quic_spin" => spin.push(ms),
            k => panic!("{k}"),
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let floor = 2.0 * one_way.as_secs_f64() * 1e3;
    eprintln!(
        "handshake {hs:?}; spin {} samples, median {:.3} ms; client: connect {connect_ms:.3} ms, \
         exchange median {:.3} ms",
        spin.len(),
        median(&mut spin.clone()),
        median(&mut app.clone())
    );
    // The server's side: the client's first Initial to the server's answer.
    let server_side = hs
        .iter()
        .find(|h| h.0 == "10.200.61.2")
        .expect("server's handshake");
    assert!(
        server_side.1 >= floor && server_side.1 <= connect_ms,
        "{hs:?}"
    );
    assert!(spin.len() >= 10, "{spin:?}");
    assert!(spin.iter().all(|s| *s >= floor), "{spin:?}");
    let (s, a) = (median(&mut spin), median(&mut app));
    assert!(
        (s - a).abs() < 5.0,
        "spin median {s} ms, the client's {a} ms"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The resolution of CLOCK_REALTIME_COARSE in ms (one kernel tick), which dig's query times
/// are taken with.
fn coarse_clock_tick_ms() -> f64 {
    let mut res = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_getres writes one timespec to the valid, exclusively borrowed `res`.
    let rc = unsafe { libc::clock_getres(libc::CLOCK_REALTIME_COARSE, &mut res) };
    assert_eq!(rc, 0, "clock_getres(CLOCK_REALTIME_COARSE)");
    res.tv_sec as f64 * 1e3 + res.tv_nsec as f64 / 1e6
}
