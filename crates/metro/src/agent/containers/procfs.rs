//! What the kernel shows under /proc about network namespaces: the processes, the inode
//! that names each one's namespace (`ns/net`), a namespace's addresses (`net/fib_trie` for
//! IPv4, `net/if_inet6` for IPv6), the `ip netns` names bound in `/run/netns`, and the
//! interface names whose change starts a refresh. Plain file reads and text parsing only;
//! which processes to read, and what the results mean, is `discover`'s.

use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::Path;

/// The processes listed in `proc_root`, in pid order (as /proc lists them; sorted for any
/// other root): the limits then keep the same, oldest, processes from one refresh to the
/// next.
pub(super) fn pids(proc_root: &Path) -> Vec<u32> {
    let mut pids: Vec<u32> = std::fs::read_dir(proc_root)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    pids
}

/// The inode of a `net:[N]` link.
pub(super) fn ns_inode(link: &Path) -> std::io::Result<u64> {
    let t = std::fs::read_link(link)?;
    let s = t.to_string_lossy();
    s.strip_prefix("net:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("unexpected link {s}")))
}

/// Addresses every namespace has (loopback, link-local, unspecified): they name no one
/// namespace and are never mapped.
fn skip_addr(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(a) => a.is_loopback() || a.is_link_local() || a.is_unspecified(),
        IpAddr::V6(a) => {
            a.is_loopback() || a.is_unspecified() || (a.segments()[0] & 0xffc0) == 0xfe80
        }
    }
}

/// IPv4 addresses of the namespace: `/32 host LOCAL` leaves of `/proc/<pid>/net/fib_trie`
/// (the address is the `|--` line above).
pub fn parse_fib_trie(text: &str) -> Vec<Ipv4Addr> {
    let mut a = Addresses::new(usize::MAX);
    a.fib_trie(text.lines().map(str::to_string));
    a.list
        .into_iter()
        .filter_map(|a| match a {
            IpAddr::V4(v4) => Some(v4),
            IpAddr::V6(_) => None,
        })
        .collect()
}

/// Global-scope IPv6 addresses of `/proc/<pid>/net/if_inet6` (32 hex digits, index,
/// prefix length, scope, flags, name).
pub fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    let mut a = Addresses::new(usize::MAX);
    a.if_inet6(text.lines().map(str::to_string));
    a.list
        .into_iter()
        .filter_map(|a| match a {
            IpAddr::V6(v6) => Some(v6),
            IpAddr::V4(_) => None,
        })
        .collect()
}

/// A namespace's addresses as they are parsed: each kept once (a set, so that the work is
/// linear in the addresses listed), at most `cap` of them; the distinct addresses beyond
/// the cap are counted in `skipped`, not kept.
pub(super) struct Addresses {
    pub list: Vec<IpAddr>,
    seen: HashSet<IpAddr>,
    cap: usize,
    pub skipped: u64,
    /// Whether loopback and link-local addresses are kept (the parsers' callers see all).
    unmapped_too: bool,
}

impl Addresses {
    pub fn new(cap: usize) -> Addresses {
        Addresses {
            list: Vec::new(),
            seen: HashSet::new(),
            cap,
            skipped: 0,
            unmapped_too: true,
        }
    }

    /// Keep `a` unless it is already kept or the cap is reached (then count it when
    /// `count_skipped`: the caller knows whether this listing names each address once).
    fn add(&mut self, a: IpAddr, count_skipped: bool) {
        if (!self.unmapped_too && skip_addr(a)) || self.seen.contains(&a) {
            return;
        }
        if self.list.len() < self.cap {
            self.seen.insert(a);
            self.list.push(a);
        } else if count_skipped {
            self.skipped += 1;
        }
    }

    /// The `/32 host LOCAL` leaves of `fib_trie`, over lines as they are read (a router's
    /// namespace lists its whole routing table there, which is never held in memory). The
    /// `Main:` table repeats some of the `Local:` table's leaves: addresses beyond the cap
    /// are counted in the `Local:` table only, which lists each local address once.
    fn fib_trie(&mut self, lines: impl Iterator<Item = String>) {
        let mut last: Option<Ipv4Addr> = None;
        let mut local_table = false;
        for line in lines {
            if !line.starts_with(' ') {
                // A table's header (`Main:`, `Local:`).
                local_table = line.starts_with("Local:");
                last = None;
                continue;
            }
            let t = line.trim_start();
            if let Some(a) = t.strip_prefix("|-- ") {
                last = a.trim().parse().ok();
            } else if t.starts_with("/32 host LOCAL")
                && let Some(a) = last
            {
                self.add(IpAddr::V4(a), local_table);
            }
        }
    }

    /// The global-scope addresses of `if_inet6`.
    fn if_inet6(&mut self, lines: impl Iterator<Item = String>) {
        for line in lines {
            let mut f = line.split_whitespace();
            let (Some(hex), Some(_), Some(_), Some(scope)) =
                (f.next(), f.next(), f.next(), f.next())
            else {
                continue;
            };
            if scope != "00" || hex.len() != 32 {
                continue;
            }
            if let Ok(v) = u128::from_str_radix(hex, 16) {
                self.add(IpAddr::V6(Ipv6Addr::from(v)), true);
            }
        }
    }
}

/// The addresses of the namespace `pid` is in (but those [`skip_addr`] leaves out), at most
/// `cap` (the rest counted in [`Addresses::skipped`]), or `None` when its `fib_trie` cannot
/// be opened (the process is gone, or unreadable). Linear in the addresses listed.
pub(super) fn addresses(proc_root: &Path, pid: u32, cap: usize) -> Option<Addresses> {
    let base = proc_root.join(format!("{pid}/net"));
    let fib = std::fs::File::open(base.join("fib_trie")).ok()?;
    let mut a = Addresses::new(cap);
    // Loopback and link-local: never mapped, so never taking room under the cap.
    a.unmapped_too = false;
    let lines = std::io::BufReader::new(fib).lines().map_while(Result::ok);
    a.fib_trie(lines);
    if let Ok(v6) = std::fs::File::open(base.join("if_inet6")) {
        a.if_inet6(std::io::BufReader::new(v6).lines().map_while(Result::ok));
    }
    Some(a)
}

/// The `ip netns` names: namespace inode -> the name of its bind mount in `dir`, at most
/// `max` entries read.
pub(super) fn netns_names(dir: &Path, max: usize) -> HashMap<u64, String> {
    use std::os::unix::fs::MetadataExt;
    let mut names: HashMap<u64, String> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten().take(max) {
            if let (Ok(m), Some(n)) = (std::fs::metadata(e.path()), e.file_name().to_str()) {
                names.insert(m.ino(), n.to_string());
            }
        }
    }
    names
}

/// The names of this namespace's interfaces (a new one, e.g. a container's veth, triggers
/// a refresh).
pub(super) fn interface_names(proc_root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(proc_root.join("net/dev"))
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|s| s.trim().to_string()))
        .collect();
    v.sort();
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fib_trie_and_if_inet6() {
        let fib = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 10.88.0.0/16 2 0 2\n        |-- 10.88.0.0\n           /16 link UNICAST\n        |-- 10.88.0.5\n           /32 host LOCAL\n        |-- 10.88.255.255\n           /32 link BROADCAST\nLocal:\n  +-- 10.88.0.0/16 2 0 2\n        |-- 10.88.0.5\n           /32 host LOCAL\n     |-- 127.0.0.1\n        /32 host LOCAL\n";
        assert_eq!(
            parse_fib_trie(fib),
            vec![
                "10.88.0.5".parse::<Ipv4Addr>().unwrap(),
                "127.0.0.1".parse().unwrap()
            ]
        );
        let v6 = "fd002000000100000000000000000002 02 40 00 80     eth0\nfe80000000000000f8d1e2fffe2ab1c3 02 40 20 80     eth0\n00000000000000000000000000000001 01 80 10 80       lo\n";
        assert_eq!(
            parse_if_inet6(v6),
            vec!["fd00:2000:1::2".parse::<Ipv6Addr>().unwrap()]
        );
    }
}
