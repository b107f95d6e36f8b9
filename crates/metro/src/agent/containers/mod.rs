//! Container attribution: which network namespace on this host owns an address, and which
//! container (and Kubernetes pod) owns that namespace. The agent runs once on the host; a
//! sample's local address is looked up here when a report is built, so that a pair is
//! tagged `container_id`, `container_name`, `pod_name`, `kube_namespace` and `netns`
//! (each only when known), and, when its remote address is a container's or pod's of this
//! host too, the same of the remote end prefixed `dst_` (`dst_container_name`, ...).
//!
//! Discovery reads files only (no `setns`, no runtime API, no credentials):
//! - `/proc/<pid>/ns/net` (its inode names the namespace) for every process, at most
//!   [`Limits::max_pids`] per refresh; the rest are counted, not read;
//! - the namespace's addresses from one of its processes' `/proc/<pid>/net/fib_trie` (IPv4
//!   `host LOCAL` entries) and `/proc/<pid>/net/if_inet6` (global-scope IPv6);
//! - the container from the cgroup paths in `/proc/<pid>/cgroup` (Docker `docker-<id>` or
//!   `/docker/<id>`, containerd `cri-containerd-<id>`, CRI-O `crio-<id>`, podman
//!   `libpod-<id>`, kubelet cgroupfs `/kubepods/<qos>/pod<uid>/<id>`), and the pod UID from
//!   a `kubepods` slice;
//! - names from the runtimes' local state under the host root: containers/storage's
//!   `containers.json` (podman, CRI-O), Docker's `config.v2.json`, the OCI `config.json`
//!   annotations (containerd and CRI-O write the pod name and namespace there), and the
//!   kubelet's log links `/var/log/containers/<pod>_<ns>_<container>-<id>.log` and
//!   `/var/log/pods/<ns>_<pod>_<uid>`;
//! - `ip netns` names from the bind mounts in `/run/netns`.
//!
//! Reading another process's `ns/net` link needs the ptrace read check (root, or
//! CAP_SYS_PTRACE); a process that cannot be read is counted in
//! [`Stats::pids_unreadable`] and its namespace stays unknown (no tags: the pair is
//! reported as before). Loopback and link-local addresses exist in every namespace and are
//! never mapped; an address found in two namespaces is left out and counted.
//!
//! One file per concern, one way through: `procfs` reads the kernel's view (namespace
//! links, addresses, interface names), `cgroup` turns cgroup paths into container IDs and
//! pod UIDs, `metadata` finds names in the runtimes' and the kubelet's files, `discover`
//! walks the processes within [`Limits`] and builds an [`Attribution`] from those three,
//! `refresh` keeps [`global`] current on its own thread, and `tag` attaches the tags to a
//! report's pairs. This file holds the types they share and the process-wide snapshot.

mod cgroup;
mod discover;
mod metadata;
mod procfs;
mod refresh;
mod tag;

use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use super::watch::Shared;

pub use cgroup::{parse_cgroup_file, parse_cgroup_path};
pub use discover::discover;
pub use metadata::Metadata;
pub use procfs::{parse_fib_trie, parse_if_inet6};
pub use refresh::{REFRESH, ensure_refresher, start_refresher};
pub use tag::{Counters, tag_pairs};

/// How much one refresh may read.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Processes whose namespace link is read per refresh.
    pub max_pids: usize,
    /// Namespaces whose addresses and container are read per refresh.
    pub max_namespaces: usize,
    /// Processes of one namespace whose cgroup is read (a pod has several containers).
    pub cgroups_per_namespace: usize,
    /// Distinct workload tag sets (`kube_labels`) kept per refresh: pods' labels are the
    /// users', so their values are bounded; the namespaces beyond are counted in
    /// [`Stats::workloads_skipped`] and sent without them.
    pub workload_tag_sets: usize,
    /// Addresses of one namespace mapped; the rest are counted in
    /// [`Stats::addresses_skipped`] (a container has a few; anyone may give a namespace of
    /// their own thousands, `unshare -rn` then `ip addr add`).
    pub addresses_per_namespace: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_pids: 32_768,
            max_namespaces: 4_096,
            cgroups_per_namespace: 16,
            addresses_per_namespace: 1024,
            workload_tag_sets: 1024,
        }
    }
}

/// Where discovery reads. `proc` is the host's /proc (the agent must share the host's pid
/// namespace); `host` prefixes the runtimes' state directories (`/` on the host, the
/// mount point of the host's root when metro runs in a container: `METRO_HOST_ROOT`).
#[derive(Clone, Debug)]
pub struct Roots {
    pub proc: PathBuf,
    pub host: PathBuf,
    pub netns_dir: PathBuf,
}

impl Default for Roots {
    fn default() -> Roots {
        let host = std::env::var_os("METRO_HOST_ROOT")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        Roots {
            proc: PathBuf::from("/proc"),
            netns_dir: PathBuf::from("/run/netns"),
            host,
        }
    }
}

/// What one refresh read and what it could not.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    pub pids_scanned: u64,
    /// Processes beyond [`Limits::max_pids`], not read.
    pub pids_skipped: u64,
    /// Processes whose namespace link could not be read (permission, or gone).
    pub pids_unreadable: u64,
    pub namespaces: u64,
    /// Namespaces beyond [`Limits::max_namespaces`], not read.
    pub namespaces_skipped: u64,
    /// Namespaces with a container (or pod) found.
    pub namespaces_attributed: u64,
    /// Addresses found in more than one namespace, left out.
    pub addresses_ambiguous: u64,
    /// Addresses beyond [`Limits::addresses_per_namespace`], not mapped.
    pub addresses_skipped: u64,
    /// Namespaces whose workload tags were left out: beyond [`Limits::workload_tag_sets`].
    pub workloads_skipped: u64,
}

/// One namespace as attributed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Namespace {
    pub inode: u64,
    pub netns_name: Option<String>,
    pub container_id: Option<String>,
    pub container_name: Option<String>,
    pub pod_uid: Option<String>,
    pub pod_name: Option<String>,
    pub kube_namespace: Option<String>,
    /// The tags, in a fixed order, each only when known.
    pub tags: Vec<String>,
    /// The same for a pair whose remote end is this namespace: each key prefixed `dst_`
    /// (none for a namespace without a container or pod: the host's own is no one's).
    pub dst_tags: Vec<String>,
    /// The pod's workload tags (`kube_app_name`, `kube_app`, `kube_deployment`, ...), sent
    /// only by instances with `kube_labels: true` ([`metadata::workload_tags`]), and the
    /// same prefixed `dst_`.
    pub workload_tags: Vec<String>,
    pub dst_workload_tags: Vec<String>,
}

impl Namespace {
    fn finish(&mut self) {
        let mut t = Vec::new();
        let pairs = [
            ("container_id", &self.container_id),
            ("container_name", &self.container_name),
            ("pod_name", &self.pod_name),
            ("kube_namespace", &self.kube_namespace),
            ("netns", &self.netns_name),
        ];
        for (k, v) in pairs {
            if let Some(v) = v {
                t.push(format!("{k}:{v}"));
            }
        }
        self.dst_workload_tags = self
            .workload_tags
            .iter()
            .map(|x| format!("dst_{x}"))
            .collect();
        let owned = self.container_id.is_some() || self.pod_name.is_some();
        self.dst_tags = if owned {
            t.iter().map(|x| format!("dst_{x}")).collect()
        } else {
            Vec::new()
        };
        self.tags = t;
    }
}

/// The address map one refresh built.
#[derive(Clone, Debug, Default)]
pub struct Attribution {
    /// The namespace the agent itself runs in (the capture's).
    pub own_netns: u64,
    by_addr: foldhash::HashMap<IpAddr, Arc<Namespace>>,
    /// Containers by the ID of their cgroup (v2), each as a [`Namespace`] of its own (its
    /// network namespace's inode, its own ID and names): what the in-kernel capture's
    /// egress records name (agent::ebpf), one container even where several share a network
    /// namespace.
    by_cgroup: foldhash::HashMap<u64, Arc<Namespace>>,
    pub stats: Stats,
}

impl Attribution {
    /// The namespace that owns `ip`, when one (and only one) does.
    pub fn namespace(&self, ip: IpAddr) -> Option<&Arc<Namespace>> {
        self.by_addr.get(&ip)
    }

    /// The container whose cgroup (v2) has this ID, when one does.
    pub fn cgroup(&self, id: u64) -> Option<&Arc<Namespace>> {
        self.by_cgroup.get(&id)
    }

    /// The tags for a pair whose local end is `ip` (empty when nothing is known).
    pub fn tags(&self, ip: IpAddr) -> &[String] {
        self.by_addr.get(&ip).map_or(&[], |n| &n.tags)
    }

    /// Whether a sample answered by `responder` for `peer` was answered on this host in the
    /// peer's own namespace (internal), rather than across namespaces or the network.
    /// `None` when the responder's namespace is unknown (the caller falls back to the
    /// host's addresses).
    pub fn internal(&self, responder: IpAddr, peer: IpAddr) -> Option<bool> {
        let r = self.by_addr.get(&responder)?;
        Some(match self.by_addr.get(&peer) {
            // Both on this host: internal only within one namespace.
            Some(p) => p.inode == r.inode,
            // The peer is elsewhere: the responder answered on this host.
            None => true,
        })
    }

    /// Number of containers known by cgroup.
    pub fn cgroups_len(&self) -> usize {
        self.by_cgroup.len()
    }

    /// Number of addresses mapped.
    pub fn len(&self) -> usize {
        self.by_addr.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_addr.is_empty()
    }
}

/// The process-wide attribution, refreshed by [`start_refresher`]; empty until then.
pub fn global() -> &'static Shared<Attribution> {
    static G: OnceLock<Shared<Attribution>> = OnceLock::new();
    G.get_or_init(|| Shared::new(Attribution::default()))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A container ID as the runtimes write it (64 hex digits), for the tests of every
    /// piece.
    pub(super) const ID: &str = "11f9678d71d9f13cfc4d6ae208b4564dbd030266e230a07bacfa14446508df17";

    /// A fresh scratch directory for one test.
    pub(super) fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("metro-ct-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn internal_is_by_namespace() {
        let ns = |inode| {
            Arc::new(Namespace {
                inode,
                ..Namespace::default()
            })
        };
        let (host, a, b) = (ns(1), ns(2), ns(3));
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let mut at = Attribution::default();
        at.by_addr.insert(ip("10.0.0.1"), host.clone());
        at.by_addr.insert(ip("10.88.0.2"), a.clone());
        at.by_addr.insert(ip("fd00::2"), a);
        at.by_addr.insert(ip("10.88.0.3"), b);
        // Container to container on this host: network RTT between them.
        assert_eq!(at.internal(ip("10.88.0.3"), ip("10.88.0.2")), Some(false));
        // Container to the host's own stack: also across namespaces.
        assert_eq!(at.internal(ip("10.0.0.1"), ip("10.88.0.2")), Some(false));
        // Within one namespace (two addresses of one container): internal.
        assert_eq!(at.internal(ip("fd00::2"), ip("10.88.0.2")), Some(true));
        // A container answering a remote client: internal (its own response time).
        assert_eq!(at.internal(ip("10.88.0.2"), ip("192.0.2.9")), Some(true));
        // A remote responder: unknown here.
        assert_eq!(at.internal(ip("192.0.2.9"), ip("10.88.0.2")), None);
    }
}
