//! What is local and what is watched, kept current off the capture path.
//!
//! [`WatchList`] (in watch.rs): the configured `ips` (addresses and CIDR blocks, any number,
//! kept as a `NetSet`: one binary search per lookup) plus the current addresses of the
//! configured `hosts`, each remembered with its host name for the `dst` tag. [`LocalSet`]:
//! the addresses of the captured interface (or of the host, for `any`).
//! Both are published through a [`Shared`](super::watch::Shared): the capture thread compares a generation number
//! per packet (one relaxed atomic load) and fetches the new value only when it changed.
//!
//! The resolver thread re-resolves `hosts` every `dns_refresh` and re-reads local addresses
//! every [`LOCAL_REFRESH`]. A name that fails to resolve keeps its previous addresses and is
//! a warning, never an exit.

use std::collections::{HashMap, HashSet};
use std::ffi::CStr;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, ToSocketAddrs};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::report::InstanceShared;
use super::watch::{LocalSet, WatchList};

/// How often local addresses are re-read.
pub const LOCAL_REFRESH: Duration = Duration::from_secs(10);

/// Resolve a host name (or an address literal) to its addresses, via the system resolver
/// (`/etc/hosts`, then DNS, as nsswitch says).
pub fn resolve_host(host: &str) -> io::Result<Vec<IpAddr>> {
    let mut v: Vec<IpAddr> = (host, 0u16).to_socket_addrs()?.map(|a| a.ip()).collect();
    v.sort();
    v.dedup();
    if v.is_empty() {
        return Err(io::Error::other("no addresses"));
    }
    Ok(v)
}

/// Resolve every host of an instance into `w`. Failures are returned as warnings; a name
/// that fails keeps the addresses it had.
pub fn resolve_all(
    w: &mut WatchList,
    hosts: &[String],
    cache: &mut HashMap<String, Result<Vec<IpAddr>, String>>,
) -> Vec<String> {
    let mut warnings = Vec::new();
    for h in hosts {
        let r = cache
            .entry(h.clone())
            .or_insert_with(|| resolve_host(h).map_err(|e| e.to_string()))
            .clone();
        match r {
            Ok(addrs) => w.set_resolved(h, &addrs),
            Err(e) => warnings.push(format!("cannot resolve `{h}`: {e}")),
        }
    }
    warnings
}

/// The addresses of interface `iface`, or of every interface for `any`/`None`.
pub fn interface_addresses(iface: Option<&str>) -> io::Result<HashSet<IpAddr>> {
    let mut out = HashSet::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list we free below with freeifaddrs; every
    // pointer is checked for null before use and the list is not used after the free.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return Err(io::Error::last_os_error());
        }
        let mut p = head;
        while !p.is_null() {
            let ifa = &*p;
            p = ifa.ifa_next;
            if ifa.ifa_addr.is_null() || ifa.ifa_name.is_null() {
                continue;
            }
            if let Some(want) = iface.filter(|n| *n != "any")
                && CStr::from_ptr(ifa.ifa_name).to_bytes() != want.as_bytes()
            {
                continue;
            }
            match i32::from((*ifa.ifa_addr).sa_family) {
                libc::AF_INET => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in);
                    out.insert(IpAddr::V4(Ipv4Addr::from(u32::from_be(sa.sin_addr.s_addr))));
                }
                libc::AF_INET6 => {
                    let sa = &*(ifa.ifa_addr as *const libc::sockaddr_in6);
                    out.insert(IpAddr::V6(Ipv6Addr::from(sa.sin6_addr.s6_addr)));
                }
                _ => {}
            }
        }
        libc::freeifaddrs(head);
    }
    Ok(out)
}

/// Names of this network namespace's interfaces (every one, with or without addresses).
pub fn interface_names() -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: as in `interface_addresses`.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return out;
        }
        let mut p = head;
        while !p.is_null() {
            let ifa = &*p;
            p = ifa.ifa_next;
            if ifa.ifa_name.is_null() {
                continue;
            }
            let n = CStr::from_ptr(ifa.ifa_name).to_string_lossy().into_owned();
            if !out.contains(&n) {
                out.push(n);
            }
        }
        libc::freeifaddrs(head);
    }
    out
}

/// What the resolver keeps per instance.
pub struct Watched {
    pub shared: Arc<InstanceShared>,
    pub hosts: Vec<String>,
    /// `None` for file instances (nothing on this host is theirs).
    pub local_iface: Option<String>,
}

/// The resolver thread's loop: returns when `stop` is set (checked every 100 ms).
pub fn run_resolver(items: Vec<Watched>, dns_refresh: Duration, stop: Arc<AtomicBool>) {
    let start = Instant::now();
    let mut next_dns = start + dns_refresh;
    let mut next_local = start + LOCAL_REFRESH;
    // Names whose failure was already logged: log again only once they recover.
    let mut failing: HashSet<String> = HashSet::new();
    while !stop.load(Ordering::Relaxed) {
        std::thread::sleep(Duration::from_millis(100));
        let now = Instant::now();
        if now >= next_local {
            next_local = now + LOCAL_REFRESH;
            for it in &items {
                let Some(iface) = &it.local_iface else {
                    continue;
                };
                match interface_addresses(Some(iface)) {
                    Ok(set) => {
                        let set = LocalSet::from(set);
                        if *it.shared.locals.get().1 != set {
                            tracing::info!(
                                "{iface}: local addresses now {:?}",
                                sorted(set.iter().copied())
                            );
                            it.shared.locals.set(set);
                        }
                    }
                    Err(e) => tracing::debug!("{iface}: cannot read local addresses: {e}"),
                }
            }
        }
        if now >= next_dns {
            next_dns = now + dns_refresh;
            let mut cache = HashMap::new();
            for it in &items {
                if it.hosts.is_empty() {
                    continue;
                }
                let old = it.shared.watch.get().1;
                let mut w = (*old).clone();
                for h in &it.hosts {
                    let r = cache
                        .entry(h.clone())
                        .or_insert_with(|| resolve_host(h).map_err(|e| e.to_string()))
                        .clone();
                    match r {
                        Ok(addrs) => {
                            if failing.remove(h) {
                                tracing::info!("`{h}` resolves again");
                            }
                            w.set_resolved(h, &addrs);
                        }
                        Err(e) => {
                            if failing.insert(h.clone()) {
                                tracing::warn!(
                                    "cannot resolve `{h}`: {e}; keeping its previous addresses"
                                );
                            }
                        }
                    }
                }
                if w != *old {
                    for h in &it.hosts {
                        let (a, b) = (old.resolved(h).unwrap_or(&[]), w.resolved(h).unwrap_or(&[]));
                        if a != b {
                            tracing::info!(
                                "{}: `{h}` now resolves to {b:?} (was {a:?})",
                                it.shared.iface
                            );
                        }
                    }
                    it.shared.watch.set(w);
                }
            }
        }
    }
}

fn sorted(it: impl Iterator<Item = IpAddr>) -> Vec<IpAddr> {
    let mut v: Vec<IpAddr> = it.collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::config::Cidr;
    use crate::agent::watch::Shared;

    #[test]
    fn watch_list_tags_and_blocks() {
        let mut w = WatchList::new(vec![Cidr::parse("10.1.0.0/16").unwrap().0]);
        w.set_resolved("a.example", &["10.0.0.2".parse().unwrap()]);
        assert!(w.contains("10.0.0.2".parse().unwrap()));
        assert!(w.contains("10.1.9.9".parse().unwrap()));
        assert!(!w.contains("10.2.0.1".parse().unwrap()));
        assert_eq!(&*w.tag("10.0.0.2".parse().unwrap()), "a.example");
        assert_eq!(&*w.tag("10.1.9.9".parse().unwrap()), "10.1.9.9");
        let blocks: Vec<String> = w.blocks().iter().map(|b| b.to_string()).collect();
        assert_eq!(blocks, ["10.0.0.2", "10.1.0.0/16"]);
        // A resolved address inside a configured block adds nothing.
        w.set_resolved("b.example", &["10.1.2.3".parse().unwrap()]);
        assert_eq!(w.blocks().len(), 2);
        assert_eq!(&*w.tag("10.1.2.3".parse().unwrap()), "b.example");
        // The address moves: the old one is no longer watched.
        let before = w.clone();
        w.set_resolved("a.example", &["10.0.0.3".parse().unwrap()]);
        assert_ne!(w, before);
        assert!(!w.contains("10.0.0.2".parse().unwrap()));
        assert_eq!(&*w.tag("10.0.0.3".parse().unwrap()), "a.example");
    }

    #[test]
    fn shared_generations() {
        let s = Shared::new(1u32);
        let (g, v) = s.get();
        assert_eq!(*v, 1);
        s.set(2);
        assert_ne!(s.generation(), g);
        assert_eq!(*s.get().1, 2);
    }

    #[test]
    fn loopback_is_local() {
        let all = interface_addresses(None).unwrap();
        assert!(all.contains(&"127.0.0.1".parse().unwrap()), "{all:?}");
        let lo = interface_addresses(Some("lo")).unwrap();
        assert!(lo.contains(&"127.0.0.1".parse().unwrap()));
        assert!(interface_addresses(Some("no-such-if0")).unwrap().is_empty());
    }

    #[test]
    fn resolves_literals_and_localhost() {
        assert_eq!(
            resolve_host("10.0.0.1").unwrap(),
            vec!["10.0.0.1".parse::<IpAddr>().unwrap()]
        );
        assert!(
            resolve_host("localhost")
                .unwrap()
                .iter()
                .any(|a| a.is_loopback())
        );
    }
}
