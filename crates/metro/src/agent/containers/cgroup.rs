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
    }
}
