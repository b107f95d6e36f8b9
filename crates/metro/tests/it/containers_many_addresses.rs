//! Container attribution against a namespace with thousands of addresses, as any
//! user can make one (`unshare -rn`, then `ip addr add` in a loop): one refresh maps at most
//! `Limits::addresses_per_namespace` of them and counts the rest as skipped (exported in
//! `metro.containers.skipped`), and its work is linear in the addresses listed (a set, not a
//! list searched per address: the figures are in the `containers_cost` example).

use crate::support;
use crate::support::netns;

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};

use metro::agent::containers::{Limits, Roots, discover};
use netns::Netns;

/// Addresses given to the namespace (the hostile report had 93k; the kernel's own `addr add`
/// slows down with each address on a device, so the test stops at 12k).
const N: u32 = 12_000;

#[test]
fn a_namespace_with_thousands_of_addresses_is_capped_and_counted() {
    if !netns::needs_root("a namespace with 12,000 addresses") {
        return;
    }
    let _load = support::heavy();
    let ns = Netns::new("many");
    let addr = |i: u32| Ipv4Addr::from(0xac1d_0000 + i); // 172.29.0.0/16 and up
    let mut batch = String::new();
    for i in 0..N {
        batch.push_str(&format!("addr add {}/32 dev lo\n", addr(i)));
    }
    let mut ip = Command::new("ip")
        .args(["-n", &ns.name, "-batch", "-"])
        .stdin(Stdio::piped())
        .spawn()
        .expect("run ip -batch");
    ip.stdin
        .take()
        .unwrap()
        .write_all(batch.as_bytes())
        .unwrap();
    assert!(ip.wait().unwrap().success(), "ip -batch addr add");
    // A process in the namespace for discovery to find it by.
    let mut sleeper = ns.sleeper(60);

    let limits = Limits::default();
    let a = discover(&Roots::default(), limits);
    let mapped = (0..N)
        .filter(|&i| a.namespace(IpAddr::V4(addr(i))).is_some())
        .count();
    let missing: Vec<u32> = (0..1024)
        .filter(|&i| a.namespace(IpAddr::V4(addr(i))).is_none())
        .collect();
    assert_eq!(
        mapped, limits.addresses_per_namespace,
        "{missing:?} {:?}",
        a.stats,
    );
    // This namespace's skipped addresses, and perhaps some of other namespaces on the machine.
    assert!(
        a.stats.addresses_skipped >= u64::from(N) - limits.addresses_per_namespace as u64,
        "{} addresses counted as skipped",
        a.stats.addresses_skipped
    );
    // The whole /16 listed once in `Local:` each: nothing counted twice.
    let b = discover(
        &Roots::default(),
        Limits {
            addresses_per_namespace: 10,
            ..limits
        },
    );
    let _ = sleeper.kill();
    let _ = sleeper.wait();
    assert!(b.stats.addresses_skipped >= u64::from(N) - 10);
}
