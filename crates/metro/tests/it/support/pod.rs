//! A Kubernetes pod as the kubelet (systemd cgroup driver) and containerd lay it out, with
//! no Kubernetes: its network namespace behind a routed host, its process in a containerd
//! scope of a kubepods slice, and the kubelet's log directories under a host root of the
//! test's own (what `METRO_HOST_ROOT` points the agent at). Root only.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::atomic::{AtomicU32, Ordering};

use super::netns::{Netns, veth};

/// The pod's name, its Kubernetes namespace and its one container, as the kubelet's log
/// links name them.
pub const POD: &str = "checkout-api-7d9f";
pub const KUBE_NAMESPACE: &str = "shop";
pub const CONTAINER: &str = "api";

static PODS: AtomicU32 = AtomicU32::new(0);

/// A pod: dropped, its process is killed and its cgroups and namespace removed.
pub struct Pod {
    /// Held for its drop; declared first: its process is killed before the namespace goes.
    _cgroup: Cgroup,
    /// The pod's network namespace: `eth0`, 10.202.N.2/24, default route via the host.
    pub ns: Netns,
    /// 10.202.N.2, the pod's address.
    pub ip: String,
    /// 10.202.N.1, the host's end of the pod's veth (`vpod`).
    pub host_ip: String,
    /// The pod's container's ID (unique to this process and pod).
    pub cid: String,
}

impl Pod {
    /// A pod behind `host` (which forwards), on 10.202.`n`.0/24; `server`, a namespace on
    /// the host's uplink 10.200.`n`.0/24 (a [`super::netns::Delayed`]'s `s`), routes back
    /// to it through the host at 10.200.`n`.1. Its log directories go under `root`.
    pub fn new(tag: &str, n: u8, host: &Netns, server: &Netns, root: &Path) -> Pod {
        let ns = Netns::new(tag);
        let (ip, host_ip) = (format!("10.202.{n}.2"), format!("10.202.{n}.1"));
        veth(
            &ns,
            "eth0",
            Some(&format!("{ip}/24")),
            host,
            "vpod",
            Some(&format!("{host_ip}/24")),
        );
        ns.ip(&["route", "add", "default", "via", &host_ip]);
        host.forward_ipv4();
        server.ip(&[
            "route",
            "add",
            &format!("10.202.{n}.0/24"),
            "via",
            &format!("10.200.{n}.1"),
        ]);

        // Names unique to this process and pod: the cgroups are the machine's.
        let k =
            u128::from(std::process::id()) << 16 | u128::from(PODS.fetch_add(1, Ordering::SeqCst));
        let uid = format!("5f0c1d2e-3a4b-4c5d-8e9f-{:012x}", k & 0xffff_ffff_ffff);
        let cid = format!("{:064x}", k * 7919);
        let base = ["/sys/fs/cgroup/pids", "/sys/fs/cgroup"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.join("cgroup.procs").exists())
            .expect("no writable cgroup hierarchy");
        let mut cgroup = Cgroup {
            dirs: Vec::new(),
            child: None,
        };
        let mut path = base;
        for part in [
            "kubepods.slice".to_string(),
            "kubepods-besteffort.slice".to_string(),
            format!("kubepods-besteffort-pod{}.slice", uid.replace('-', "_")),
            format!("cri-containerd-{cid}.scope"),
        ] {
            path = path.join(part);
            if !path.exists() {
                std::fs::create_dir(&path)
                    .unwrap_or_else(|e| panic!("create cgroup {}: {e}", path.display()));
                cgroup.dirs.push(path.clone());
            }
        }
        let child = ns.sleeper(600);
        let pid = child.id();
        cgroup.child = Some(child);
        std::fs::write(path.join("cgroup.procs"), pid.to_string())
            .unwrap_or_else(|e| panic!("move {pid} into {}: {e}", path.display()));
        let in_cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        assert!(in_cgroup.contains(&cid), "{in_cgroup}");

        std::fs::create_dir_all(root.join(format!(
            "var/log/pods/{KUBE_NAMESPACE}_{POD}_{uid}/{CONTAINER}"
        )))
        .unwrap();
        std::fs::create_dir_all(root.join("var/log/containers")).unwrap();
        std::fs::write(
            root.join(format!(
                "var/log/containers/{POD}_{KUBE_NAMESPACE}_{CONTAINER}-{cid}.log"
            )),
            "",
        )
        .unwrap();
        Pod {
            _cgroup: cgroup,
            ns,
            ip,
            host_ip,
            cid,
        }
    }
}

/// A cgroup directory tree, removed on drop after its process is killed.
struct Cgroup {
    dirs: Vec<PathBuf>,
    child: Option<Child>,
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        for d in self.dirs.iter().rev() {
            let _ = std::fs::remove_dir(d);
        }
    }
}
