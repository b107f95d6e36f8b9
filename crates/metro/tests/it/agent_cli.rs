//! `metro run` and `metro check-config` from the command line: configuration errors,
//! go-metro's flags, a missing interface, a missing capability, and an `interface: file`
//! instance reporting on packet time to a real UDP socket on loopback.

use crate::support::agent;
use crate::support::frames;
#[allow(unused)]
use crate::support::netns;

use std::net::UdpSocket;
use std::os::unix::process::CommandExt;
use std::time::{Duration, Instant};

use agent::{Metric, TempDir, metro_command, metro_output, named, output, parse};

#[test]
fn check_config_prints_effective_config_and_warnings() {
    let dir = TempDir::new("cc");
    let cfg = dir.write(
        "metro.yaml",
        "init_config:\n  expired_ttl: 30\n  log_level: crit\n  colour: blue\ninstances:\n  - interface: lo\n    ips: [10.1.0.0/16, '2001:db8::1']\n    hosts: [localhost]\n    tags: [env:test]\n",
    );
    let (st, out, err) = metro_output(&["check-config", cfg.to_str().unwrap()]);
    assert!(st.success(), "{st}\n{out}\n{err}");
    let out = out[out.find("init_config:").expect("no configuration printed")..].to_string();
    for want in [
        "snaplen: 256",
        "idle_ttl: 300",
        "exp_ttl: 30",
        "statsd_ip: 127.0.0.1",
        "statsd_port: 8125",
        "flush_interval: 10",
        "dns_refresh: 60",
        "log_level: critical",
        "log_to_file: false",
        "interface: lo",
        "ips: [10.1.0.0/16, 2001:db8::1]",
        "hosts: [localhost]",
        "tags: [env:test]",
    ] {
        assert!(out.contains(want), "missing {want:?} in:\n{out}");
    }
    assert!(
        err.contains("metro.yaml:4:3: unknown key `init_config.colour`"),
        "{err}"
    );
    // The printed configuration is itself valid.
    let again = dir.write("again.yaml", &out);
    let (st, out2, _) = metro_output(&["check-config", again.to_str().unwrap()]);
    assert!(st.success());
    assert_eq!(out, out2[out2.find("init_config:").unwrap()..]);
}

#[test]
fn config_errors_name_file_line_column_and_exit_nonzero() {
    let dir = TempDir::new("ccerr");
    let cfg = dir.write(
        "metro.yaml",
        "init_config:\n  snaplen: lots\ninstances:\n  - interface: lo\n    ips: [10.0.0.1]\n",
    );
    let path = cfg.to_str().unwrap();
    for args in [vec!["check-config", path], vec!["run", "--config", path]] {
        let (st, _, err) = metro_output(&args);
        assert!(!st.success());
        assert!(
            err.contains(&format!(
                "{path}:2:12: init_config.snaplen: expected a whole number"
            )),
            "{err}"
        );
    }
    let cfg = dir.write(
        "bad-ip.yaml",
        "instances:\n  - interface: lo\n    ips:\n      - 10.0.0.300\n",
    );
    let (st, _, err) = metro_output(&["check-config", cfg.to_str().unwrap()]);
    assert!(!st.success());
    assert!(
        err.contains(":4:9: instances[0].ips[0]: `10.0.0.300` is not an IPv4 or IPv6 address"),
        "{err}"
    );
    let cfg = dir.write("no-watch.yaml", "instances:\n  - interface: lo\n");
    let (st, _, err) = metro_output(&["check-config", cfg.to_str().unwrap()]);
    assert!(!st.success());
    assert!(err.contains("neither `ips` nor `hosts`"), "{err}");
    // A missing file is an error (go-metro slept 5 s and exited 0).
    let t = Instant::now();
    let (st, _, err) = metro_output(&["-cfg=/nonexistent/go-metro.yaml"]);
    assert!(!st.success());
    assert!(
        err.contains("/nonexistent/go-metro.yaml") && err.contains("cannot read"),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(3));
}

#[test]
fn only_local_addresses_is_an_error_that_says_why() {
    let dir = TempDir::new("local");
    let cfg = dir.write(
        "metro.yaml",
        "instances:\n  - interface: lo\n    ips: [127.0.0.1]\n",
    );
    let (st, _, err) = metro_output(&["run", "--config", cfg.to_str().unwrap()]);
    assert!(!st.success());
    assert!(
        err.contains("every watched address (127.0.0.1) is an address of `lo` itself"),
        "{err}"
    );
}

#[test]
fn missing_interface_lists_the_existing_ones() {
    let dir = TempDir::new("noif");
    let cfg = dir.write(
        "metro.yaml",
        "instances:\n  - interface: nosuch0\n    ips: [10.0.0.1]\n",
    );
    let (st, _, err) = metro_output(&[&format!("-cfg={}", cfg.display())]);
    assert!(!st.success());
    assert!(
        err.contains("no interface named `nosuch0`; the interfaces that exist are:"),
        "{err}"
    );
    assert!(err.contains("lo"), "{err}");
}

#[test]
fn without_cap_net_raw_the_error_names_setcap() {
    let dir = TempDir::new("nocap");
    let cfg = dir.write(
        "metro.yaml",
        // libpcap's error: the in-kernel capture needs no CAP_NET_RAW.
        "instances:\n  - interface: lo\n    ips: [10.0.0.1]\n    capture: pcap\n",
    );
    let mut c = metro_command(&["run", "--config", cfg.to_str().unwrap()]);
    // Another user has no CAP_NET_RAW to begin with; root gives it up.
    // SAFETY: geteuid takes no arguments and cannot fail.
    let root = unsafe { libc::geteuid() } == 0;
    // SAFETY: prctl in the child between fork and exec; no allocation.
    unsafe {
        c.pre_exec(move || {
            if !root {
                return Ok(());
            }
            // CAP_NET_RAW leaves the bounding set: after exec even root does not have it.
            if libc::prctl(libc::PR_CAPBSET_DROP, 13, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (st, _, err) = output(c);
    assert!(!st.success(), "{err}");
    assert!(
        err.contains("needs the CAP_NET_RAW capability: run `sudo setcap cap_net_raw+ep /"),
        "{err}"
    );
}

#[test]
fn file_instance_reports_on_packet_time_and_exits() {
    let dir = TempDir::new("file");
    // 70 exchanges every 0.5 s of packet time (35 s) with a 25 ms round trip, read in far
    // less than that: flushes follow packet time.
    let mut fr = frames::conversation(
        [10, 9, 0, 1],
        [10, 9, 0, 2],
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
        1_700_000_000_000_000_000,
        25.0,
        70,
        500.0,
        Some(42),
    );
    let pcap = dir.path("conv.pcap");
    frames::write_pcap(&pcap, &mut fr);
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = rx.local_addr().unwrap().port();
    let cfg = dir.write(
        "metro.yaml",
        &format!(
            "init_config:\n  statsd_port: {port}\n  flush_interval: 10\ninstances:\n  - interface: file\n    pcap: {}\n    ips: [10.9.0.2]\n    tags: [src_file:yes]\n",
            pcap.display()
        ),
    );
    let t = Instant::now();
    let (st, _, err) = metro_output(&["run", "--config", cfg.to_str().unwrap()]);
    assert!(st.success(), "{err}");
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "took {:?}: not as fast as it reads",
        t.elapsed()
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
    // Packet-time flushes at +10, +20, +30 s and a final one: four intervals with samples.
    assert_eq!(p50s.len(), 4, "{all:#?}\n{err}");
    for m in &p50s {
        assert!((m.value - 25.0).abs() <= 0.25, "{m:?}");
        assert_eq!(
            m.tags,
            ["src:10.9.0.1", "dst:10.9.0.2", "iface:file", "src_file:yes"],
            "{m:?}"
        );
    }
    let n: f64 = named(&all, "system.net.tcp.rtt.samples")
        .iter()
        .map(|m| m.value)
        .sum();
    assert!((70.0..=73.0).contains(&n), "{n} samples");
    assert_eq!(named(&all, "metro.packets.received").len(), 4);
}

/// Run a file instance with `extra` instance keys over `frames`; returns every metric sent.
fn run_file(tag: &str, frames: &mut [frames::Frame], ips: &str, extra: &str) -> Vec<Metric> {
    let dir = TempDir::new(tag);
    let pcap = dir.path("in.pcap");
    frames::write_pcap(&pcap, frames);
    let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
    rx.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let port = rx.local_addr().unwrap().port();
    let cfg = dir.write(
        "metro.yaml",
        &format!(
            "init_config:\n  statsd_port: {port}\n  flush_interval: 10\ninstances:\n  - interface: file\n    pcap: {}\n    ips: [{ips}]\n{extra}",
            pcap.display()
        ),
    );
    let (st, _, err) = metro_output(&["run", "--config", cfg.to_str().unwrap()]);
    assert!(st.success(), "{err}");
    let mut all: Vec<Metric> = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = rx.recv(&mut buf) {
        all.extend(parse(
            std::str::from_utf8(&buf[..n]).unwrap(),
            Instant::now(),
        ));
    }
    all
}

#[test]
fn max_flows_holds_and_evictions_are_counted() {
    // 20 connections at once (20 clients, one server), 5 allowed.
    let mut fr = Vec::new();
    for k in 0..20u8 {
        fr.extend(frames::conversation(
            [10, 9, 1, 10 + k],
            [10, 9, 1, 2],
            [2, 0, 0, 0, 1, k],
            [2, 0, 0, 0, 0, 2],
            1_700_000_000_000_000_000 + i64::from(k) * 10_000_000,
            5.0,
            30,
            100.0,
            None,
        ));
    }
    let all = run_file("maxflows", &mut fr, "10.9.1.2", "    max_flows: 5\n");
    let active = named(&all, "metro.flows.active");
    assert!(!active.is_empty());
    assert!(active.iter().all(|m| m.value <= 5.0), "{active:?}");
    let evicted: f64 = named(&all, "metro.flows.evicted")
        .iter()
        .map(|m| m.value)
        .sum();
    assert!(evicted >= 15.0, "{evicted} evictions");
}

#[test]
fn sample_duty_cycle_skips_the_off_periods() {
    // The 35 s conversation of the test above, sampled 5 s on, 5 s off: about 40 of its
    // 72 samples fall in the four windows.
    let mut fr = frames::conversation(
        [10, 9, 0, 1],
        [10, 9, 0, 2],
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
        1_700_000_000_000_000_000,
        25.0,
        70,
        500.0,
        None,
    );
    let all = run_file(
        "duty",
        &mut fr,
        "10.9.0.2",
        "    sample: true\n    sample_duration: 5\n    sample_interval: 5\n",
    );
    let n: f64 = named(&all, "system.net.tcp.rtt.samples")
        .iter()
        .map(|m| m.value)
        .sum();
    assert!((35.0..=45.0).contains(&n), "{n} samples");
}

#[test]
fn deploy_examples_are_valid() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy");
    for name in ["go-metro.yaml", "metro.yaml"] {
        let l = metro::agent::config::load(&deploy.join(name)).unwrap_or_else(|e| panic!("{e}"));
        assert!(l.warnings.is_empty(), "{name}: {:?}", l.warnings);
    }
    let unit = std::fs::read_to_string(deploy.join("metro.service")).unwrap();
    assert!(unit.contains("AmbientCapabilities=CAP_NET_RAW"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
}

#[test]
fn bad_long_and_oversized_filters_fail_at_start_with_libpcap_message() {
    let dir = TempDir::new("filt");
    let cfg = dir.write(
        "metro.yaml",
        "instances:\n  - interface: lo\n    ips: [10.0.0.1]\n",
    );
    let path = cfg.to_str().unwrap();
    // A syntax error: libpcap's message, before anything starts (no capture is opened).
    for args in [
        vec!["run", "--config", path, "--filter", "tcp and ("],
        vec!["-cfg", path, "-f", "tcp and ("],
        vec!["check-config", path, "--filter", "tcp and ("],
    ] {
        let (st, out, err) = metro_output(&args);
        assert!(!st.success(), "{args:?}: {out}{err}");
        assert!(
            err.contains("--filter: libpcap refuses the filter `tcp and (`")
                && err.contains("syntax error"),
            "{args:?}: {err}"
        );
    }
    // 3,000 `port N` terms (the expression that kept libpcap busy for minutes): refused by
    // its length, at once.
    let long = (1..=3000)
        .map(|p| format!("port {p}"))
        .collect::<Vec<_>>()
        .join(" or ");
    let t = Instant::now();
    let (st, _, err) = metro_output(&["run", "--config", path, "--filter", &long]);
    assert!(!st.success());
    assert!(
        err.contains(&format!(
            "the filter is {} bytes long; metro compiles at most 1024",
            long.len()
        )),
        "{err}"
    );
    assert!(t.elapsed() < Duration::from_secs(30), "{:?}", t.elapsed());
}

#[test]
fn a_filter_valid_on_ethernet_but_not_on_any_fails_at_start_naming_the_link() {
    if !netns::needs_root("opening a capture on `any`") {
        return;
    }
    let dir = TempDir::new("filtany");
    // Valid on Ethernet, refused on `any` (Linux cooked capture): an error at start that
    // names the link, not a capture thread left capturing nothing.
    let any = dir.write(
        "any.yaml",
        "instances:\n  - interface: any\n    ips: [10.0.0.1]\n",
    );
    let (st, out, err) = metro_output(&[
        "run",
        "--config",
        any.to_str().unwrap(),
        "--filter",
        "ether dst 01:02:03:04:05:06",
    ]);
    assert!(!st.success(), "{out}{err}");
    assert!(
        err.contains("instances[0] (any): libpcap refuses the filter `ether dst 01:02:03:04:05:06` on this interface's link type")
            && err.contains("ethernet addresses supported only on"),
        "{err}"
    );
}

#[test]
fn check_config_compiles_each_capture_filter_and_reads_each_pcap() {
    let dir = TempDir::new("ccfilt");
    // 5,000 entries: too many for the kernel filter, covered by wider blocks.
    let mut ips = String::new();
    for i in 0..5000u32 {
        ips.push_str(&format!(
            "      - 10.{}.{}.{}\n",
            20 + i / 1000,
            (i / 10) % 100,
            i % 250
        ));
    }
    let cfg = dir.write(
        "metro.yaml",
        &format!(
            "instances:\n  - interface: lo\n    ips:\n{ips}  - interface: lo\n    ips: [10.0.0.1]\n    protocols: [tcp]\n"
        ),
    );
    let (st, _, err) = metro_output(&["check-config", cfg.to_str().unwrap()]);
    assert!(st.success(), "{err}");
    assert!(
        // The default protocols (all four) widen the default base; TCP alone keeps `tcp`.
        err.contains("instances[0] (lo): capture filter: ((tcp or udp or icmp or icmp6) and (net ")
            && err.contains("wider blocks cover the")
            && err.contains("dropped in user space"),
        "{err}"
    );
    assert!(
        err.contains(
            "instances[1] (lo): capture filter: ((tcp) and (host 10.0.0.1)) or (vlan and (tcp) and (host 10.0.0.1))"
        ),
        "{err}"
    );
    // With --filter: the same, on that base.
    let (st, _, err) = metro_output(&[
        "check-config",
        cfg.to_str().unwrap(),
        "--filter",
        "tcp and not port 22",
    ]);
    assert!(st.success(), "{err}");
    assert!(
        err.contains("((tcp and not port 22) and (host 10.0.0.1))"),
        "{err}"
    );

    // A `pcap:` that is a directory, or not a capture: errors naming the key.
    let not_pcap = dir.write("notes.txt", "hello, not a capture\n");
    for (p, want) in [
        (dir.0.to_str().unwrap().to_string(), "is a directory"),
        (not_pcap.to_str().unwrap().to_string(), "cannot read"),
    ] {
        let cfg = dir.write(
            "file.yaml",
            &format!("instances:\n  - interface: file\n    pcap: {p}\n    ips: [10.0.0.1]\n"),
        );
        let (st, _, err) = metro_output(&["check-config", cfg.to_str().unwrap()]);
        assert!(!st.success(), "{p}: {err}");
        assert!(
            err.contains("error: instances[0] (file): pcap: ") && err.contains(want),
            "{err}"
        );
    }
}

#[test]
fn durations_below_their_floor_are_refused_naming_the_key() {
    let dir = TempDir::new("floor");
    for (v, line) in [("1e-10", 2), ("0", 2), (".nan", 2), ("-5", 2), ("1e12", 2)] {
        let cfg = dir.write(
            "metro.yaml",
            &format!(
                "init_config:\n  flush_interval: {v}\ninstances:\n  - interface: lo\n    ips: [10.0.0.1]\n"
            ),
        );
        let path = cfg.to_str().unwrap();
        for args in [vec!["check-config", path], vec!["run", "--config", path]] {
            let (st, _, err) = metro_output(&args);
            assert!(!st.success(), "{v}: {err}");
            assert!(
                err.contains(&format!("{path}:{line}:19: init_config.flush_interval: expected a number of seconds from 0.1 to 1000000000")),
                "{v}: {err}"
            );
        }
    }
}
