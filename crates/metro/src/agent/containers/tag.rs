//! Tagging a report's pairs from the current [`Attribution`](super::Attribution): the
//! report hands over each pair's local address, remote end and tags to fill, and gets back the
//! [`Counters`] it reports as self-metrics. A local address no namespace owns asks the
//! refresher for a walk soon.

use std::net::IpAddr;

use super::{global, refresh};

/// What container attribution saw, reported with each interval (self-metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Namespaces found with a container or pod, and without one (the host's own, and
    /// namespaces no runtime claims).
    pub namespaces_attributed: u64,
    pub namespaces_unattributed: u64,
    /// Processes, namespaces and addresses not read at the last refresh: over the limits,
    /// or unreadable (no permission).
    pub skipped: u64,
    /// Pairs of this interval whose local address no namespace on this host owns.
    pub pairs_unattributed: u64,
}

/// Attach each pair's container tags from [`global`] (at report time: one lookup per pair
/// and interval, none per packet), and count what could not be attributed. Each pair is its
/// local address, its remote end's tag value (an address, or a configured host name) and the
/// tags to fill, so that this module need not know the report's types. When the remote end
/// is a container or pod of this host too, its tags follow, each key prefixed `dst_`. With
/// `workloads` (`kube_labels: true`), each end's pod workload tags follow its own. A pair
/// whose connections the in-kernel capture saw leaving one container's cgroup (its cgroup
/// ID, else None) takes that container's tags instead of its local address's namespace's:
/// the container exactly, where several share the namespace (a pod, `--network
/// container:X`, host-network containers).
pub fn tag_pairs<'a>(
    pairs: impl IntoIterator<Item = (IpAddr, &'a str, Option<u64>, &'a mut Vec<String>)>,
    workloads: bool,
) -> Counters {
    let a = global().get().1;
    let s = &a.stats;
    let mut c = Counters {
        namespaces_attributed: s.namespaces_attributed,
        namespaces_unattributed: s.namespaces - s.namespaces_attributed,
        skipped: s.pids_skipped
            + s.pids_unreadable
            + s.namespaces_skipped
            + s.addresses_skipped
            + s.workloads_skipped,
        pairs_unattributed: 0,
    };
    for (src, dst, cgroup, tags) in pairs {
        match cgroup
            .and_then(|c| a.cgroup(c))
            .or_else(|| a.namespace(src))
        {
            Some(ns) => {
                tags.extend(ns.tags.iter().cloned());
                if workloads {
                    tags.extend(ns.workload_tags.iter().cloned());
                }
            }
            None => c.pairs_unattributed += 1,
        }
        if let Ok(ip) = dst.parse::<IpAddr>()
            && let Some(ns) = a.namespace(ip)
        {
            tags.extend(ns.dst_tags.iter().cloned());
            if workloads {
                tags.extend(ns.dst_workload_tags.iter().cloned());
            }
        }
    }
    if c.pairs_unattributed > 0 {
        // Perhaps a container that started since the last walk: look again soon.
        refresh::ask_soon();
    }
    c
}
