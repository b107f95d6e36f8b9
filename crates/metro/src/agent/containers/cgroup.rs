//! Which container (and Kubernetes pod) a process belongs to, from the paths in its
//! `/proc/<pid>/cgroup`: each runtime names its cgroups its own way (Docker `docker-<id>`
//! or `/docker/<id>`, containerd `cri-containerd-<id>`, CRI-O `crio-<id>`, podman
//! `libpod-<id>`, kubelet cgroupfs `/kubepods/<qos>/pod<uid>/<id>`), and a `kubepods`
//! slice carries the pod UID. Text in, IDs out; also the shapes of a container ID and a
//! pod UID, which `metadata` checks file names against.

use std::path::Path;

/// A container ID as the runtimes name their cgroups and files: 64 hex digits.
pub(super) fn is_hex_id(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// A pod UID: a UUID in its 8-4-4-4-12 hex form.
pub(super) fn uuid_like(s: &str) -> bool {
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

/// The container ID and pod UID of process `pid`, from its cgroup file under `proc_root`;
/// `None` when the file cannot be read (the process is gone).
pub(super) fn of_pid(proc_root: &Path, pid: u32) -> Option<(Option<String>, Option<String>)> {
    let text = std::fs::read_to_string(proc_root.join(format!("{pid}/cgroup"))).ok()?;
    Some(parse_cgroup_file(&text))
}

/// Where the cgroup v2 hierarchy is mounted, from `mountinfo` (a `/proc/<pid>/mountinfo`
/// file's text): `/sys/fs/cgroup` on a unified host, `/sys/fs/cgroup/unified` on a hybrid
/// one; None without one.
pub fn v2_mount(mountinfo: &str) -> Option<std::path::PathBuf> {
    mountinfo.lines().find_map(|l| {
        // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER
        let (left, right) = l.split_once(" - ")?;
        (right.split(' ').next()? == "cgroup2").then(|| left.split(' ').nth(4).map(Into::into))?
    })
}

/// The container ID, pod UID and cgroup v2 path (the `0::` line) of a `/proc/<pid>/cgroup`
/// file, when the v2 path names a container.
pub fn v2_container(text: &str) -> Option<(String, Option<String>, &str)> {
    let path = text.lines().find_map(|l| l.strip_prefix("0::"))?;
    let (id, pod) = parse_cgroup_path(path);
    Some((id?, pod, path))
}

/// The cgroup (v2) ID of process `pid`'s container, with the container ID and pod UID: the
/// inode of its directory under `v2` (what `bpf_skb_cgroup_id` reports for its sockets).
pub(super) fn v2_of_pid(
    proc_root: &Path,
    v2: &Path,
    pid: u32,
) -> Option<(u64, String, Option<String>)> {
    use std::os::unix::fs::MetadataExt;
    let text = std::fs::read_to_string(proc_root.join(format!("{pid}/cgroup"))).ok()?;
    let (id, pod, path) = v2_container(&text)?;
    let ino = std::fs::metadata(v2.join(path.trim_start_matches('/')))
        .ok()?
        .ino();
    Some((ino, id, pod))
}

#[cfg(test)]
mod tests {
    use super::super::tests::ID;
    use super::*;

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
        // The v2 line alone decides the cgroup the kernel's socket records name.
        assert_eq!(v2_container(&file), None);
        let file = format!("4:memory:/x\n0::/libpod_parent/libpod-{ID}\n");
        let (id, pod, path) = v2_container(&file).unwrap();
        assert_eq!(
            (id.as_str(), pod, path),
            (ID, None, &*format!("/libpod_parent/libpod-{ID}"))
        );
    }

    #[test]
    fn the_v2_mount_from_mountinfo() {
        let hybrid = "35 25 0:30 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                      36 35 0:31 / /sys/fs/cgroup/unified rw,nosuid shared:10 - cgroup2 cgroup2 rw,nsdelegate\n\
                      37 35 0:32 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(v2_mount(hybrid), Some("/sys/fs/cgroup/unified".into()));
        let unified = "30 23 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw\n";
        assert_eq!(v2_mount(unified), Some("/sys/fs/cgroup".into()));
        assert_eq!(
            v2_mount("37 35 0:32 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n"),
            None
        );
    }
}
