//! Container attribution: which network namespace on this host owns an address, and which
//! container (and Kubernetes pod) owns that namespace. The agent runs once on the host; a
//! sample's local address is looked up here when a report is built, so that a pair is
//! tagged `container_id`, `container_name`, `pod_name`, `kube_namespace` and `netns`
//! (each only when known).
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

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::watch::Shared;

/// How much one refresh may read.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Processes whose namespace link is read per refresh.
    pub max_pids: usize,
    /// Namespaces whose addresses and container are read per refresh.
    pub max_namespaces: usize,
    /// Processes of one namespace whose cgroup is read (a pod has several containers).
    pub cgroups_per_namespace: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_pids: 32_768,
            max_namespaces: 4_096,
            cgroups_per_namespace: 16,
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
        Roots {
            proc: PathBuf::from("/proc"),
            host: std::env::var_os("METRO_HOST_ROOT")
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from("/")),
            netns_dir: PathBuf::from("/run/netns"),
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
        self.tags = t;
    }
}

/// The address map one refresh built.
#[derive(Clone, Debug, Default)]
pub struct Attribution {
    /// The namespace the agent itself runs in (the capture's).
    pub own_netns: u64,
    by_addr: HashMap<IpAddr, Arc<Namespace>>,
    pub stats: Stats,
}

impl Attribution {
    /// The namespace that owns `ip`, when one (and only one) does.
    pub fn namespace(&self, ip: IpAddr) -> Option<&Arc<Namespace>> {
        self.by_addr.get(&ip)
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

/// What container attribution saw, reported with each interval (self-metrics).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Namespaces found with a container or pod, and without one (the host's own, and
    /// namespaces no runtime claims).
    pub namespaces_attributed: u64,
    pub namespaces_unattributed: u64,
    /// Processes and namespaces not read at the last refresh: over the limits, or
    /// unreadable (no permission).
    pub skipped: u64,
    /// Pairs of this interval whose local address no namespace on this host owns.
    pub pairs_unattributed: u64,
}

/// Attach each pair's container tags from [`global`] (at report time: one lookup per pair
/// and interval, none per packet), and count what could not be attributed. Each pair is its
/// local address and the tags to fill, so that this module need not know the report's types.
pub fn tag_pairs<'a>(pairs: impl IntoIterator<Item = (IpAddr, &'a mut Vec<String>)>) -> Counters {
    let a = global().get().1;
    let s = &a.stats;
    let mut c = Counters {
        namespaces_attributed: s.namespaces_attributed,
        namespaces_unattributed: s.namespaces - s.namespaces_attributed,
        skipped: s.pids_skipped + s.pids_unreadable + s.namespaces_skipped,
        pairs_unattributed: 0,
    };
    for (src, tags) in pairs {
        match a.namespace(src) {
            Some(ns) => *tags = ns.tags.clone(),
            None => c.pairs_unattributed += 1,
        }
    }
    if c.pairs_unattributed > 0 {
        // Perhaps a container that started since the last walk: look again soon.
        REFRESH_WANTED.store(true, Ordering::Relaxed);
    }
    c
}

/// Set when a report met a local address no namespace owns; the refresher honours it at
/// most every [`WANTED_SPACING`].
static REFRESH_WANTED: AtomicBool = AtomicBool::new(false);
/// The least time between refreshes asked for by reports.
const WANTED_SPACING: Duration = Duration::from_secs(5);
/// After an interface appears, one more walk this much later: the container's process
/// usually joins its namespace after its veth was set up.
const FOLLOW_UP: Duration = Duration::from_secs(2);

/// Start the process-wide refresher once (every [`REFRESH`], and when an interface
/// appears); later calls do nothing. It runs until the process exits.
pub fn ensure_refresher() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let _ = start_refresher(REFRESH, Arc::new(AtomicBool::new(false)));
    });
}

/// How often the namespaces are walked when no interface changed.
pub const REFRESH: Duration = Duration::from_secs(10);

/// The inode of a `net:[N]` link.
fn ns_inode(link: &Path) -> std::io::Result<u64> {
    let t = std::fs::read_link(link)?;
    let s = t.to_string_lossy();
    s.strip_prefix("net:[")
        .and_then(|r| r.strip_suffix(']'))
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| std::io::Error::other(format!("unexpected link {s}")))
}

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
    parse_fib_trie_lines(text.lines().map(str::to_string))
}

/// [`parse_fib_trie`] over lines as they are read: a router's namespace lists its whole
/// routing table there, which is never held in memory.
fn parse_fib_trie_lines(lines: impl Iterator<Item = String>) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in lines {
        let t = line.trim_start();
        if let Some(a) = t.strip_prefix("|-- ") {
            last = a.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL")
            && let Some(a) = last
            && !out.contains(&a)
        {
            out.push(a);
        }
    }
    out
}

/// Global-scope IPv6 addresses of `/proc/<pid>/net/if_inet6` (32 hex digits, index,
/// prefix length, scope, flags, name).
pub fn parse_if_inet6(text: &str) -> Vec<Ipv6Addr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        let (Some(hex), Some(_), Some(_), Some(scope)) = (f.next(), f.next(), f.next(), f.next())
        else {
            continue;
        };
        if scope != "00" || hex.len() != 32 {
            continue;
        }
        if let Ok(v) = u128::from_str_radix(hex, 16) {
            let a = Ipv6Addr::from(v);
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    out
}

fn is_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn uuid_like(s: &str) -> bool {
    s.len() == 36
        && s.bytes().enumerate().all(|(i, b)| {
            matches!(i, 8 | 13 | 18 | 23) == (b == b'-') && (b == b'-' || b.is_ascii_hexdigit())
        })
}

/// The container ID and pod UID a cgroup path names (the last matching components).
pub fn parse_cgroup_path(path: &str) -> (Option<String>, Option<String>) {
    let mut id = None;
    let mut pod = None;
    let mut in_kubepods = false;
    for comp in path.split('/') {
        if comp.starts_with("kubepods") {
            in_kubepods = true;
        }
        let c = comp
            .strip_suffix(".scope")
            .or_else(|| comp.strip_suffix(".slice"))
            .unwrap_or(comp);
        // The runtime monitors (conmon) sit in their own cgroups: not the container.
        if c.contains("-conmon-") {
            continue;
        }
        let bare = [
            "docker-",
            "cri-containerd-",
            "crio-",
            "libpod-",
            "containerd-",
        ]
        .iter()
        .find_map(|p| c.strip_prefix(p))
        .unwrap_or(c);
        if is_hex_id(bare) {
            id = Some(bare.to_ascii_lowercase());
            continue;
        }
        if in_kubepods {
            // systemd: kubepods-burstable-pod<uid with _>.slice; cgroupfs: pod<uid>.
            let tail = c
                .rsplit_once("-pod")
                .map(|x| x.1)
                .or_else(|| c.strip_prefix("pod"));
            if let Some(t) = tail {
                let u = t.replace('_', "-");
                if uuid_like(&u) {
                    pod = Some(u);
                }
            }
        }
    }
    (id, pod)
}

/// Every (container ID, pod UID) found in a `/proc/<pid>/cgroup` file (one line per
/// hierarchy: the hybrid layout repeats the path).
pub fn parse_cgroup_file(text: &str) -> (Option<String>, Option<String>) {
    let mut id = None;
    let mut pod = None;
    for line in text.lines() {
        let Some(path) = line.splitn(3, ':').nth(2) else {
            continue;
        };
        let (i, p) = parse_cgroup_path(path);
        id = id.or(i);
        pod = pod.or(p);
    }
    (id, pod)
}

/// Names the runtimes and the kubelet left on disk.
#[derive(Default, Debug)]
pub struct Metadata {
    /// container ID -> name.
    pub names: HashMap<String, String>,
    /// container ID -> (pod name, namespace).
    pub pods_by_container: HashMap<String, (String, String)>,
    /// pod UID -> (pod name, namespace).
    pub pods_by_uid: HashMap<String, (String, String)>,
}

/// Bounded JSON read: runtime state files are small; a huge one is not read.
fn read_small(path: &Path) -> Option<String> {
    const MAX: u64 = 16 << 20;
    let m = std::fs::metadata(path).ok()?;
    // Only regular files: a FIFO planted there would block the refresher forever.
    if !m.is_file() {
        return None;
    }
    if m.len() > MAX {
        tracing::debug!("{}: larger than {MAX} bytes, not read", path.display());
        return None;
    }
    std::fs::read_to_string(path).ok()
}

impl Metadata {
    /// Read the names under `host` for the containers in `ids` (and every kubelet log link).
    pub fn read(host: &Path, ids: &HashSet<String>) -> Metadata {
        let mut m = Metadata::default();
        // containers/storage (podman as root, CRI-O): a list with names per ID.
        for dir in [
            "var/lib/containers/storage/overlay-containers",
            "run/containers/storage/overlay-containers",
        ] {
            let d = host.join(dir);
            if let Some(text) = read_small(&d.join("containers.json"))
                && let Ok(serde_json::Value::Array(list)) = serde_json::from_str(&text)
            {
                for c in list {
                    let (Some(id), Some(name)) = (
                        c.get("id").and_then(|v| v.as_str()),
                        c.get("names")
                            .and_then(|v| v.as_array())
                            .and_then(|a| a.first())
                            .and_then(|v| v.as_str()),
                    ) else {
                        continue;
                    };
                    if ids.contains(id) {
                        m.names.insert(id.to_string(), name.to_string());
                    }
                }
            }
            for id in ids {
                m.oci_annotations(&d.join(id).join("userdata/config.json"), id);
            }
        }
        for id in ids {
            // containerd's CRI plugin: the OCI bundle of each task.
            m.oci_annotations(
                &host.join(format!(
                    "run/containerd/io.containerd.runtime.v2.task/k8s.io/{id}/config.json"
                )),
                id,
            );
            // Docker.
            if let Some(text) =
                read_small(&host.join(format!("var/lib/docker/containers/{id}/config.v2.json")))
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
                && let Some(n) = v.get("Name").and_then(|n| n.as_str())
            {
                m.names
                    .entry(id.clone())
                    .or_insert_with(|| n.trim_start_matches('/').to_string());
            }
        }
        // The kubelet's log links: <pod>_<namespace>_<container>-<id>.log.
        if let Ok(rd) = std::fs::read_dir(host.join("var/log/containers")) {
            for e in rd.flatten().take(65_536) {
                let f = e.file_name();
                let Some(stem) = f.to_str().and_then(|s| s.strip_suffix(".log")) else {
                    continue;
                };
                let Some((rest, id)) = stem.rsplit_once('-') else {
                    continue;
                };
                if !is_hex_id(id) || !ids.contains(id) {
                    continue;
                }
                let mut p = rest.splitn(3, '_');
                if let (Some(pod), Some(ns), Some(cname)) = (p.next(), p.next(), p.next()) {
                    m.names.insert(id.to_string(), cname.to_string());
                    m.pods_by_container
                        .insert(id.to_string(), (pod.to_string(), ns.to_string()));
                }
            }
        }
        // The kubelet's pod log directories: <namespace>_<pod>_<uid>.
        if let Ok(rd) = std::fs::read_dir(host.join("var/log/pods")) {
            for e in rd.flatten().take(65_536) {
                let f = e.file_name();
                let Some(s) = f.to_str() else { continue };
                let mut p = s.splitn(3, '_');
                if let (Some(ns), Some(pod), Some(uid)) = (p.next(), p.next(), p.next())
                    && uuid_like(uid)
                {
                    m.pods_by_uid
                        .insert(uid.to_string(), (pod.to_string(), ns.to_string()));
                }
            }
        }
        m
    }

    /// Kubernetes names from an OCI spec's annotations (CRI-O and containerd's CRI both
    /// write them; the keys differ).
    fn oci_annotations(&mut self, path: &Path, id: &str) {
        let Some(text) = read_small(path) else { return };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
            return;
        };
        let Some(a) = v.get("annotations") else {
            return;
        };
        let get = |keys: &[&str]| {
            keys.iter()
                .find_map(|k| a.get(*k).and_then(|x| x.as_str()))
                .map(str::to_string)
        };
        let pod = get(&["io.kubernetes.pod.name", "io.kubernetes.cri.sandbox-name"]);
        let ns = get(&[
            "io.kubernetes.pod.namespace",
            "io.kubernetes.cri.sandbox-namespace",
        ]);
        let cname = get(&[
            "io.kubernetes.container.name",
            "io.kubernetes.cri.container-name",
        ]);
        // The pod's sandbox (pause) is no container of the user's: containerd marks it
        // `container-type: sandbox`, CRI-O `ContainerType: sandbox` (and names it POD).
        let kind = get(&[
            "io.kubernetes.cri.container-type",
            "io.kubernetes.cri-o.ContainerType",
        ]);
        if kind.as_deref() == Some("sandbox") || cname.as_deref() == Some("POD") {
            if let (Some(pod), Some(ns)) = (pod, ns) {
                self.pods_by_container.insert(id.to_string(), (pod, ns));
            }
            return;
        }
        if let (Some(pod), Some(ns)) = (pod, ns) {
            self.pods_by_container.insert(id.to_string(), (pod, ns));
        }
        if let Some(c) = cname {
            self.names.insert(id.to_string(), c);
        }
    }
}

/// One refresh: walk the processes, read each namespace's addresses and container.
pub fn discover(roots: &Roots, limits: Limits) -> Attribution {
    let mut stats = Stats::default();
    let own_netns = ns_inode(&roots.proc.join("self/ns/net")).unwrap_or(0);
    // Namespace inode -> processes in it (a few, for addresses and cgroups).
    let mut by_ns: BTreeMap<u64, Vec<u32>> = BTreeMap::new();
    // In pid order (as /proc lists them; sorted for any other root): the limits keep the
    // same, oldest, processes from one refresh to the next.
    let mut pids: Vec<u32> = std::fs::read_dir(&roots.proc)
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    pids.sort_unstable();
    let mut skipped_ns: HashSet<u64> = HashSet::new();
    for pid in pids {
        if stats.pids_scanned as usize >= limits.max_pids {
            stats.pids_skipped += 1;
            continue;
        }
        stats.pids_scanned += 1;
        match ns_inode(&roots.proc.join(format!("{pid}/ns/net"))) {
            Ok(ino) => {
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
    // ip netns names.
    let mut names: HashMap<u64, String> = HashMap::new();
    if let Ok(rd) = std::fs::read_dir(&roots.netns_dir) {
        use std::os::unix::fs::MetadataExt;
        for e in rd.flatten().take(limits.max_namespaces) {
            if let (Ok(m), Some(n)) = (std::fs::metadata(e.path()), e.file_name().to_str()) {
                names.insert(m.ino(), n.to_string());
            }
        }
    }
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
            let Ok(text) = std::fs::read_to_string(roots.proc.join(format!("{pid}/cgroup"))) else {
                continue;
            };
            let (id, p) = parse_cgroup_file(&text);
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
        let mut addrs: Vec<IpAddr> = Vec::new();
        for pid in pids {
            let base = roots.proc.join(format!("{pid}/net"));
            let (Ok(fib), v6) = (
                std::fs::File::open(base.join("fib_trie")),
                std::fs::read_to_string(base.join("if_inet6")).unwrap_or_default(),
            ) else {
                continue;
            };
            use std::io::BufRead;
            let lines = std::io::BufReader::new(fib).lines().map_while(Result::ok);
            addrs.extend(parse_fib_trie_lines(lines).into_iter().map(IpAddr::V4));
            addrs.extend(parse_if_inet6(&v6).into_iter().map(IpAddr::V6));
            break;
        }
        addrs.retain(|a| !skip_addr(*a));
        all_ids.extend(ids.iter().cloned());
        let ns = Namespace {
            inode: ino,
            netns_name: (ino != own_netns)
                .then(|| names.get(&ino).cloned())
                .flatten(),
            pod_uid: pod,
            ..Namespace::default()
        };
        found.push((ns, ids, addrs));
    }
    stats.namespaces = found.len() as u64;
    let meta = Metadata::read(&roots.host, &all_ids);
    let mut by_addr: HashMap<IpAddr, Arc<Namespace>> = HashMap::new();
    let mut ambiguous: HashSet<IpAddr> = HashSet::new();
    for (mut ns, ids, addrs) in found {
        attribute(&mut ns, &ids, &meta);
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
        stats,
    }
}

/// Fill a namespace's container and pod from its container IDs and the metadata. A pod's
/// namespace holds several containers (and the sandbox): the container tags are set only
/// when one named container (or, with no names known, one container) is in it.
fn attribute(ns: &mut Namespace, ids: &[String], meta: &Metadata) {
    let named: Vec<&String> = ids.iter().filter(|i| meta.names.contains_key(*i)).collect();
    let pick = match (named.len(), ids.len()) {
        (1, _) => Some(named[0]),
        (0, 1) => Some(&ids[0]),
        _ => None,
    };
    if let Some(id) = pick {
        ns.container_id = Some(id.clone());
        ns.container_name = meta.names.get(id).cloned();
    }
    let pod = ids
        .iter()
        .find_map(|i| meta.pods_by_container.get(i))
        .or_else(|| ns.pod_uid.as_ref().and_then(|u| meta.pods_by_uid.get(u)));
    if let Some((p, n)) = pod {
        ns.pod_name = Some(p.clone());
        ns.kube_namespace = Some(n.clone());
    }
}

/// The names of this namespace's interfaces (a new one, e.g. a container's veth, triggers
/// a refresh).
fn interface_names(proc_root: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_to_string(proc_root.join("net/dev"))
        .unwrap_or_default()
        .lines()
        .skip(2)
        .filter_map(|l| l.split(':').next().map(|s| s.trim().to_string()))
        .collect();
    v.sort();
    v
}

/// Refresh [`global`] every `every`, and within a second of an interface appearing or
/// going, until `stop`. The first refresh runs before this returns.
pub fn start_refresher(every: Duration, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let roots = Roots::default();
    let mut said_once = false;
    let mut refresh = move |roots: &Roots| {
        let a = discover(roots, Limits::default());
        let s = &a.stats;
        if !said_once {
            // Once: what the operator needs to know whether attribution can work here (in a
            // pod without the host's pid namespace only the pod's processes are visible).
            tracing::info!(
                "containers: {} processes visible, {} namespaces, {} with a container or pod",
                s.pids_scanned + s.pids_skipped,
                s.namespaces,
                s.namespaces_attributed
            );
        }
        if !said_once && s.pids_unreadable > s.pids_scanned / 2 {
            tracing::warn!(
                "containers: {} of {} processes' network namespaces are unreadable: container \
                 and pod tags need CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (or root); RTT is \
                 reported untagged meanwhile",
                s.pids_unreadable,
                s.pids_scanned
            );
        }
        said_once = true;
        if s.pids_skipped + s.namespaces_skipped > 0 {
            tracing::debug!(
                "containers: over the limits, {} processes and {} namespaces not read",
                s.pids_skipped,
                s.namespaces_skipped
            );
        }
        tracing::debug!(
            "containers: {} addresses in {} namespaces ({} attributed); {} processes read, {} \
             unreadable, {} and {} namespaces over the limits, {} ambiguous addresses",
            a.len(),
            s.namespaces,
            s.namespaces_attributed,
            s.pids_scanned,
            s.pids_unreadable,
            s.pids_skipped,
            s.namespaces_skipped,
            s.addresses_ambiguous
        );
        global().set(a);
    };
    refresh(&roots);
    std::thread::Builder::new()
        .name("containers".into())
        .spawn(move || {
            let mut refresh = refresh;
            let mut last = Instant::now();
            let mut ifaces = interface_names(&roots.proc);
            let mut follow_up: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let now_ifaces = interface_names(&roots.proc);
                let changed = now_ifaces != ifaces;
                let wanted = last.elapsed() >= WANTED_SPACING
                    && REFRESH_WANTED.swap(false, Ordering::Relaxed);
                let due = follow_up.is_some_and(|t| Instant::now() >= t);
                if last.elapsed() >= every || changed || wanted || due {
                    ifaces = now_ifaces;
                    refresh(&roots);
                    last = Instant::now();
                    follow_up = changed.then(|| last + FOLLOW_UP);
                }
            }
        })
        .expect("spawn containers thread")
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "11f9678d71d9f13cfc4d6ae208b4564dbd030266e230a07bacfa14446508df17";

    #[test]
    fn cgroup_paths_of_each_runtime() {
        let cases = [
            (format!("/libpod_parent/libpod-{ID}"), Some(ID), None),
            (format!("/machine.slice/libpod-{ID}.scope"), Some(ID), None),
            (
                format!("/machine.slice/libpod-conmon-{ID}.scope"),
                None,
                None,
            ),
            (format!("/system.slice/docker-{ID}.scope"), Some(ID), None),
            (format!("/docker/{ID}"), Some(ID), None),
            (
                format!(
                    "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod0a1b2c3d_1111_2222_3333_444455556666.slice/cri-containerd-{ID}.scope"
                ),
                Some(ID),
                Some("0a1b2c3d-1111-2222-3333-444455556666"),
            ),
            (
                format!("/kubepods/besteffort/pod0a1b2c3d-1111-2222-3333-444455556666/{ID}"),
                Some(ID),
                Some("0a1b2c3d-1111-2222-3333-444455556666"),
            ),
            (
                format!(
                    "/kubepods.slice/kubepods-pod0a1b2c3d_1111_2222_3333_444455556666.slice/crio-{ID}.scope"
                ),
                Some(ID),
                Some("0a1b2c3d-1111-2222-3333-444455556666"),
            ),
            (
                "/user.slice/user-0.slice/session-1.scope".to_string(),
                None,
                None,
            ),
            // A pod-like name outside kubepods is not a pod.
            (
                "/podcast/pod0a1b2c3d-1111-2222-3333-444455556666".to_string(),
                None,
                None,
            ),
        ];
        for (path, id, pod) in cases {
            let (i, p) = parse_cgroup_path(&path);
            assert_eq!(i.as_deref(), id, "{path}");
            assert_eq!(p.as_deref(), pod, "{path}");
        }
        let file = format!("9:name=systemd:/libpod_parent/libpod-{ID}\n8:pids:/\n0::/\n");
        assert_eq!(parse_cgroup_file(&file).0.as_deref(), Some(ID));
    }

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

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("metro-ct-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn metadata_from_podman_docker_cri_and_kubelet() {
        let root = tmp("meta");
        let other = "aa".repeat(32);
        let third = "bb".repeat(32);
        let fourth = "cc".repeat(32);
        let s = root.join("var/lib/containers/storage/overlay-containers");
        std::fs::create_dir_all(&s).unwrap();
        std::fs::write(
            s.join("containers.json"),
            format!(r#"[{{"id":"{ID}","names":["checkout-api"],"image":"x"}},{{"id":"{}","names":["unrelated"]}}]"#, "dd".repeat(32)),
        )
        .unwrap();
        let d = root.join(format!("var/lib/docker/containers/{other}"));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("config.v2.json"), r#"{"Name":"/payments-db"}"#).unwrap();
        let c = root.join(format!(
            "run/containerd/io.containerd.runtime.v2.task/k8s.io/{third}"
        ));
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(
            c.join("config.json"),
            r#"{"annotations":{"io.kubernetes.cri.container-name":"web","io.kubernetes.cri.sandbox-name":"web-7d9f","io.kubernetes.cri.sandbox-namespace":"shop"}}"#,
        )
        .unwrap();
        std::fs::create_dir_all(root.join("var/log/containers")).unwrap();
        std::fs::write(
            root.join(format!("var/log/containers/cart-5c_shop_cart-{fourth}.log")),
            "",
        )
        .unwrap();
        std::fs::create_dir_all(
            root.join("var/log/pods/kube-system_dns-1_0a1b2c3d-1111-2222-3333-444455556666"),
        )
        .unwrap();
        let ids: HashSet<String> = [ID.to_string(), other.clone(), third.clone(), fourth.clone()]
            .into_iter()
            .collect();
        let m = Metadata::read(&root, &ids);
        assert_eq!(m.names.get(ID).map(String::as_str), Some("checkout-api"));
        assert_eq!(m.names.get(&other).map(String::as_str), Some("payments-db"));
        assert_eq!(m.names.get(&third).map(String::as_str), Some("web"));
        assert_eq!(m.names.get(&fourth).map(String::as_str), Some("cart"));
        assert_eq!(m.names.len(), 4, "a container not running here is not read");
        // A CRI-O sandbox: its pod, but no container name.
        let sandbox = "ee".repeat(32);
        let sb = root.join(format!(
            "run/containers/storage/overlay-containers/{sandbox}/userdata"
        ));
        std::fs::create_dir_all(&sb).unwrap();
        std::fs::write(
            sb.join("config.json"),
            r#"{"annotations":{"io.kubernetes.container.name":"POD","io.kubernetes.cri-o.ContainerType":"sandbox","io.kubernetes.pod.name":"web-7d9f","io.kubernetes.pod.namespace":"shop"}}"#,
        )
        .unwrap();
        let m2 = Metadata::read(&root, &[sandbox.clone()].into_iter().collect());
        assert!(m2.names.is_empty());
        assert_eq!(
            m2.pods_by_container.get(&sandbox),
            Some(&("web-7d9f".to_string(), "shop".to_string()))
        );
        assert_eq!(
            m.pods_by_container.get(&third),
            Some(&("web-7d9f".to_string(), "shop".to_string()))
        );
        assert_eq!(
            m.pods_by_container.get(&fourth),
            Some(&("cart-5c".to_string(), "shop".to_string()))
        );
        assert_eq!(
            m.pods_by_uid.get("0a1b2c3d-1111-2222-3333-444455556666"),
            Some(&("dns-1".to_string(), "kube-system".to_string()))
        );
        // A pod namespace with the sandbox and one named container: the named one.
        let mut ns = Namespace {
            pod_uid: Some("0a1b2c3d-1111-2222-3333-444455556666".into()),
            netns_name: Some("cni-1234".into()),
            ..Namespace::default()
        };
        attribute(&mut ns, &["ee".repeat(32), fourth.clone()], &m);
        ns.finish();
        assert_eq!(
            ns.tags,
            vec![
                format!("container_id:{fourth}"),
                "container_name:cart".to_string(),
                "pod_name:cart-5c".to_string(),
                "kube_namespace:shop".to_string(),
                "netns:cni-1234".to_string(),
            ]
        );
        // Two named containers in one namespace: pod tags only.
        let mut ns = Namespace {
            pod_uid: Some("0a1b2c3d-1111-2222-3333-444455556666".into()),
            ..Namespace::default()
        };
        attribute(&mut ns, &[ID.to_string(), other.clone()], &m);
        ns.finish();
        assert_eq!(
            ns.tags,
            vec![
                "pod_name:dns-1".to_string(),
                "kube_namespace:kube-system".to_string()
            ]
        );
        std::fs::remove_dir_all(&root).unwrap();
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
            cgroups_per_namespace: 16,
        };
        let b = discover(&roots, l);
        assert_eq!(b.stats.pids_scanned, 5);
        assert_eq!(b.stats.pids_skipped, 3);
        assert_eq!(b.stats.namespaces, 2);
        assert_eq!(b.stats.namespaces_skipped, 1);
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
