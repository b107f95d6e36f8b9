//! One refresh: the walk that builds an [`Attribution`] within [`Limits`]. It lists the
//! processes, groups them by network namespace (a few per namespace), reads each
//! namespace's container IDs from their cgroups and its addresses from one of them, looks
//! the names up once for all the IDs found, and maps every address to the one namespace
//! that has it (an address two namespaces have is left out), counting in [`Stats`] what it
//! could not or would not read.

use std::collections::{BTreeMap, HashSet};
use std::net::IpAddr;
use std::sync::Arc;

use super::metadata::{Metadata, attribute};
use super::{Attribution, Limits, Namespace, Roots, Stats, cgroup, procfs};

/// One refresh: walk the processes, read each namespace's addresses and container.
pub fn discover(roots: &Roots, limits: Limits) -> Attribution {
    let mut stats = Stats::default();
    let own_netns = procfs::ns_inode(&roots.proc.join("self/ns/net")).unwrap_or(0);
    // Namespace inode -> processes in it (a few, for addresses and cgroups).
    let mut by_ns: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    let mut skipped_ns: HashSet<u64> = HashSet::new();
    // Each container's cgroup (v2) ID with its network namespace, container ID and pod UID,
    // at most one per namespace limit's worth: the in-kernel capture names the sending
    // socket's cgroup, which tells apart containers that share a network namespace.
    // Where the agent's own mounts have the hierarchy, else through the host's init
    // (`/proc/1/root`, which needs the ptrace read check): a container may not mount it,
    // and `ip netns exec` mounts a sysfs of its own without it.
    let mounted = |pid: &str, via_root: bool| {
        std::fs::read_to_string(roots.proc.join(pid).join("mountinfo"))
            .ok()
            .and_then(|t| cgroup::v2_mount(&t))
            .map(|m| match via_root {
                true => roots
                    .proc
                    .join(pid)
                    .join("root")
                    .join(m.strip_prefix("/").unwrap_or(&m)),
                false => m,
            })
            .filter(|p| p.is_dir())
    };
    let v2 = mounted("self", false).or_else(|| mounted("1", true));
    let mut cgroups: BTreeMap<u64, (u64, String, Option<String>)> = BTreeMap::new();
    for pid in procfs::pids(&roots.proc) {
        if stats.pids_scanned as usize >= limits.max_pids {
            stats.pids_skipped += 1;
            continue;
        }
        stats.pids_scanned += 1;
        match procfs::ns_inode(&roots.proc.join(format!("{pid}/ns/net"))) {
            Ok(ino) => {
                if let Some(v2) = &v2
                    && cgroups.len() < limits.max_namespaces
                    && let Some((cg, id, pod)) = cgroup::v2_of_pid(&roots.proc, v2, pid)
                {
                    cgroups.entry(cg).or_insert((ino, id, pod));
                }
                let known = by_ns.len();
                match by_ns.get_mut(&ino) {
                    Some(v) => {
                        if v.len() < limits.cgroups_per_namespace {
                            v.push(pid)
                        }
                    }
                    None if known >= limits.max_namespaces => {
                        skipped_ns.insert(ino);
                    }
                    None => {
                        by_ns.insert(ino, vec![pid]);
                    }
                }
            }
            Err(_) => stats.pids_unreadable += 1,
        }
    }
    stats.namespaces_skipped = skipped_ns.len() as u64;
    let mut names = procfs::netns_names(&roots.netns_dir, limits.max_namespaces);
    // In a container the host's `ip netns` bind mounts are under the host's root (a
    // recursive mount of its /).
    let host_netns = roots.host.join("run/netns");
    if host_netns != roots.netns_dir {
        for (ino, name) in procfs::netns_names(&host_netns, limits.max_namespaces) {
            names.entry(ino).or_insert(name);
        }
    }
    // A namespace before its containers' tags: its name where `ip netns` gave it one (never
    // the agent's own: the host's), and its pod.
    let untagged = |ino: u64, pod| Namespace {
        inode: ino,
        netns_name: (ino != own_netns)
            .then(|| names.get(&ino).cloned())
            .flatten(),
        pod_uid: pod,
        ..Namespace::default()
    };
    // Containers per namespace, from the cgroups.
    let mut found: Vec<(Namespace, Vec<String>, Vec<IpAddr>)> = Vec::new();
    let mut all_ids: HashSet<String> = HashSet::new();
    for (&ino, pids) in &by_ns {
        let mut ids: Vec<String> = Vec::new();
        let mut pod = None;
        // A process outside every container (the host's init, a host-network container's
        // neighbours): the namespace is shared with the host, not a container's.
        let mut outside = false;
        for pid in pids {
            let Some((id, p)) = cgroup::of_pid(&roots.proc, *pid) else {
                continue;
            };
            match id {
                Some(id) if !ids.contains(&id) => ids.push(id),
                Some(_) => {}
                None => outside = true,
            }
            pod = pod.or(p);
        }
        // The agent's own namespace is the host's: never tagged.
        if outside || ino == own_netns {
            ids.clear();
            pod = None;
        }
        // The addresses from the first of its processes that can still be read, at most
        // `addresses_per_namespace` (the rest counted: an unprivileged user can give a
        // namespace of its own any number of addresses).
        let addrs = match pids
            .iter()
            .find_map(|&pid| procfs::addresses(&roots.proc, pid, limits.addresses_per_namespace))
        {
            Some(a) => {
                stats.addresses_skipped += a.skipped;
                a.list
            }
            None => Vec::new(),
        };
        all_ids.extend(ids.iter().cloned());
        found.push((untagged(ino, pod), ids, addrs));
    }
    stats.namespaces = found.len() as u64;
    all_ids.extend(cgroups.values().map(|c| c.1.clone()));
    let meta = Metadata::read(&roots.host, &all_ids);
    let by_cgroup: foldhash::HashMap<u64, Arc<Namespace>> = cgroups
        .into_iter()
        .map(|(cg, (ino, id, pod))| {
            let mut ns = untagged(ino, pod);
            attribute(&mut ns, std::slice::from_ref(&id), &meta);
            ns.finish();
            (cg, Arc::new(ns))
        })
        .collect();
    let mut by_addr: foldhash::HashMap<IpAddr, Arc<Namespace>> = Default::default();
    let mut ambiguous: HashSet<IpAddr> = HashSet::new();
    let mut workload_sets: HashSet<Vec<String>> = HashSet::new();
    for (mut ns, ids, addrs) in found {
        attribute(&mut ns, &ids, &meta);
        if !ns.workload_tags.is_empty()
            && !workload_sets.contains(&ns.workload_tags)
            && workload_sets.len() >= limits.workload_tag_sets
        {
            ns.workload_tags.clear();
            stats.workloads_skipped += 1;
        } else if !ns.workload_tags.is_empty() {
            workload_sets.insert(ns.workload_tags.clone());
        }
        if ns.container_id.is_some() || ns.pod_uid.is_some() {
            stats.namespaces_attributed += 1;
        }
        ns.finish();
        let ns = Arc::new(ns);
        for a in addrs {
            if ambiguous.contains(&a) {
                continue;
            }
            match by_addr.get(&a) {
                Some(o) if o.inode != ns.inode => {
                    by_addr.remove(&a);
                    ambiguous.insert(a);
                }
                Some(_) => {}
                None => {
                    by_addr.insert(a, ns.clone());
                }
            }
        }
    }
    stats.addresses_ambiguous = ambiguous.len() as u64;
    Attribution {
        own_netns,
        by_addr,
        by_cgroup,
        stats,
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::super::tests::{ID, tmp};
    use super::*;

    /// A fake /proc: processes in namespaces (symlinks `net:[N]`), cgroups and addresses.
    fn fake_proc(root: &Path, pid: u32, ns: u64, cgroup: &str, v4: &[&str]) {
        let d = root.join(pid.to_string());
        std::fs::create_dir_all(d.join("ns")).unwrap();
        std::fs::create_dir_all(d.join("net")).unwrap();
        std::os::unix::fs::symlink(format!("net:[{ns}]"), d.join("ns/net")).unwrap();
        std::fs::write(d.join("cgroup"), format!("0::{cgroup}\n")).unwrap();
        let mut fib = String::from("Local:\n");
        for a in v4 {
            fib.push_str(&format!("  |-- {a}\n     /32 host LOCAL\n"));
        }
        std::fs::write(d.join("net/fib_trie"), fib).unwrap();
        std::fs::write(d.join("net/if_inet6"), "").unwrap();
    }

    #[test]
    fn discovery_over_a_fake_proc() {
        let root = tmp("proc");
        let proc_ = root.join("proc");
        std::fs::create_dir_all(proc_.join("self/ns")).unwrap();
        std::os::unix::fs::symlink("net:[1]", proc_.join("self/ns/net")).unwrap();
        let other = "aa".repeat(32);
        // The agent's namespace (1): host processes and a host-network container.
        fake_proc(&proc_, 1, 1, "/init.scope", &["10.0.0.1", "127.0.0.1"]);
        fake_proc(&proc_, 2, 1, &format!("/libpod_parent/libpod-{other}"), &[]);
        // A container's namespace (2), two processes of it.
        fake_proc(
            &proc_,
            10,
            2,
            &format!("/libpod_parent/libpod-{ID}"),
            &["10.88.0.2"],
        );
        fake_proc(&proc_, 11, 2, &format!("/libpod_parent/libpod-{ID}"), &[]);
        // A namespace shared by a container and a process outside containers (3).
        fake_proc(&proc_, 20, 3, &format!("/docker/{other}"), &["10.88.0.3"]);
        fake_proc(&proc_, 21, 3, "/user.slice", &[]);
        // Two namespaces claiming one address (4, 5): left out.
        fake_proc(&proc_, 30, 4, "/", &["10.88.0.9"]);
        fake_proc(&proc_, 31, 5, "/", &["10.88.0.9"]);
        let host = root.join("host");
        let s = host.join("var/lib/containers/storage/overlay-containers");
        std::fs::create_dir_all(&s).unwrap();
        std::fs::write(
            s.join("containers.json"),
            format!(r#"[{{"id":"{ID}","names":["web"]}}]"#),
        )
        .unwrap();
        let roots = Roots {
            proc: proc_.clone(),
            host,
            netns_dir: root.join("netns"),
        };
        let a = discover(&roots, Limits::default());
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(a.own_netns, 1);
        assert_eq!(
            a.tags(ip("10.88.0.2")),
            [
                format!("container_id:{ID}"),
                "container_name:web".to_string()
            ]
        );
        assert!(
            a.tags(ip("10.0.0.1")).is_empty(),
            "the host is not a container"
        );
        assert_eq!(a.namespace(ip("10.0.0.1")).unwrap().inode, 1);
        assert!(a.tags(ip("10.88.0.3")).is_empty(), "shared with the host");
        assert!(a.namespace(ip("127.0.0.1")).is_none());
        assert!(a.namespace(ip("10.88.0.9")).is_none());
        assert_eq!(a.stats.addresses_ambiguous, 1);
        assert_eq!(a.stats.namespaces, 5);
        assert_eq!(a.stats.namespaces_attributed, 1);
        assert_eq!(a.stats.pids_scanned, 8);
        // Limits: processes and namespaces beyond them are counted, not read.
        let l = Limits {
            max_pids: 5,
            max_namespaces: 2,
            ..Limits::default()
        };
        let b = discover(&roots, l);
        assert_eq!(b.stats.pids_scanned, 5);
        assert_eq!(b.stats.pids_skipped, 3);
        assert_eq!(b.stats.namespaces, 2);
        assert_eq!(b.stats.namespaces_skipped, 1);
        // Workload tags (CRI-O's record of the pod's labels) within the budget of distinct
        // sets, and beyond it left out and counted.
        let ud = roots.host.join(format!(
            "run/containers/storage/overlay-containers/{ID}/userdata"
        ));
        std::fs::create_dir_all(&ud).unwrap();
        let labels = serde_json::json!({ "app": "web", "pod-template-hash": "7d9f" });
        let spec = serde_json::json!({ "annotations": {
            "io.kubernetes.pod.name": "web-7d9f-abcde",
            "io.kubernetes.pod.namespace": "shop",
            "io.kubernetes.cri-o.Labels": labels.to_string(),
        }});
        std::fs::write(ud.join("config.json"), spec.to_string()).unwrap();
        let w = discover(&roots, Limits::default());
        let ns = w.namespace(ip("10.88.0.2")).unwrap();
        assert_eq!(ns.workload_tags, ["kube_app:web", "kube_deployment:web"]);
        assert_eq!(w.stats.workloads_skipped, 0);
        let none = Limits {
            workload_tag_sets: 0,
            ..Limits::default()
        };
        let w = discover(&roots, none);
        assert!(
            w.namespace(ip("10.88.0.2"))
                .unwrap()
                .workload_tags
                .is_empty()
        );
        assert_eq!(w.stats.workloads_skipped, 1);
        // Addresses beyond the per-namespace cap: the first kept, the rest counted once
        // each (the `Local:` table lists each once; `Main:` may repeat it).
        let many: Vec<String> = (0..10).map(|i| format!("10.77.0.{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        fake_proc(&proc_, 40, 6, "/", &refs);
        let fib = proc_.join("40/net/fib_trie");
        let local = std::fs::read_to_string(&fib).unwrap();
        let main = local.replacen("Local:", "Main:", 1);
        std::fs::write(&fib, format!("{main}{local}")).unwrap();
        let l = Limits {
            addresses_per_namespace: 4,
            ..Limits::default()
        };
        let c = discover(&roots, l);
        assert_eq!(c.stats.addresses_skipped, 6);
        assert!(c.namespace(ip("10.77.0.3")).is_some());
        assert!(c.namespace(ip("10.77.0.4")).is_none());
        // Loopback takes no room under the cap.
        assert_eq!(
            discover(&roots, Limits::default()).stats.addresses_skipped,
            0
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    /// The live discovery on this machine finds this process's own namespace and its
    /// addresses (every process can read its own links).
    #[test]
    fn discovers_its_own_namespace() {
        let a = discover(&Roots::default(), Limits::default());
        assert!(a.own_netns != 0);
        assert!(a.stats.pids_scanned >= 1);
        assert!(a.stats.namespaces >= 1);
        let l = Limits {
            max_pids: 1,
            ..Limits::default()
        };
        let b = discover(&Roots::default(), l);
        assert_eq!(b.stats.pids_scanned, 1);
        // This test binary and its parent at least: the rest is counted, not read.
        assert!(b.stats.pids_skipped >= 1);
    }
}
