//! Real DNS and ICMP endpoints for tests across the delay line (tests/it/support/netns.rs):
//! dnsmasq answering a local zone (`metro.test`, nothing forwarded) in a namespace, dig and
//! ping run from another, their own timings read from their output.

#![allow(dead_code)]

use std::process::{Child, Command, Stdio};

use super::netns::Netns;

/// A child process killed (and reaped) on drop.
pub struct Kill(pub Child);

impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Run `c` to its end; panics naming `what` unless it succeeds. Its standard output.
pub fn run(mut c: Command, what: &str) -> String {
    let out = c.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(out.status.success(), "{what}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// dnsmasq in `ns`, on `addr` port 53, authoritative for `metro.test` (every name in it is
/// 192.0.2.7) and for `nx.test` (no names: NXDOMAIN); nothing is forwarded; in the
/// foreground.
pub fn dnsmasq(ns: &Netns, addr: &str) -> Kill {
    let mut dns = ns.command("dnsmasq");
    dns.args([
        "--keep-in-foreground",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--user=root",
        "--bind-interfaces",
        &format!("--listen-address={addr}"),
        "--port=53",
        "--address=/metro.test/192.0.2.7",
        "--local=/metro.test/",
        "--local=/nx.test/",
        "--pid-file",
    ])
    .stdout(Stdio::null())
    .stderr(Stdio::null());
    Kill(dns.spawn().expect("dnsmasq"))
}

/// `dig @server name` from `ns` (over TCP with `tcp`): its status (`NOERROR`, `NXDOMAIN`)
/// and its `Query time` in ms.
pub fn dig(ns: &Netns, server: &str, name: &str, tcp: bool) -> (String, f64) {
    let mut dig = ns.command("dig");
    dig.args([&format!("@{server}"), "+tries=1", "+time=3", name]);
    if tcp {
        dig.arg("+tcp");
    }
    let out = run(dig, "dig");
    let status = out
        .lines()
        .find_map(|l| l.split_once("status: ")?.1.split(',').next())
        .unwrap_or_else(|| panic!("no status: {out}"))
        .to_string();
    let t = out
        .lines()
        .find_map(|l| l.strip_prefix(";; Query time: "))
        .and_then(|l| l.strip_suffix(" msec"))
        .unwrap_or_else(|| panic!("no query time: {out}"));
    (status, t.parse().unwrap())
}

/// `ping -c n` from `ns` to `to`, 0.2 s apart: each reply's `time=` in ms.
pub fn ping(ns: &Netns, to: &str, n: u32) -> Vec<f64> {
    let mut ping = ns.command("ping");
    ping.args(["-c", &n.to_string(), "-i", "0.2", "-W", "5", to]);
    let out = run(ping, "ping");
    let ms: Vec<f64> = out
        .lines()
        .filter_map(|l| l.split_once(" time=")?.1.strip_suffix(" ms")?.parse().ok())
        .collect();
    assert_eq!(ms.len(), n as usize, "{out}");
    ms
}
