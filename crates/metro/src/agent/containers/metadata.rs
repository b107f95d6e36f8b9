//! The names a namespace's tags carry, read from what the runtimes and the kubelet leave on
//! disk under the host root: containers/storage's `containers.json` (podman, CRI-O),
//! Docker's `config.v2.json`, the OCI `config.json` annotations (containerd and CRI-O write
//! the pod name and namespace there), and the kubelet's log links
//! `/var/log/containers/<pod>_<ns>_<container>-<id>.log` and pod directories
//! `/var/log/pods/<ns>_<pod>_<uid>`. Every file read is bounded. Also the choice of which
//! container and pod a namespace is tagged with ([`attribute`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use super::Namespace;
use super::cgroup::{is_hex_id, uuid_like};

/// Names the runtimes and the kubelet left on disk.
#[derive(Default, Debug)]
pub struct Metadata {
    /// container ID -> name.
    pub names: HashMap<String, String>,
    /// container ID -> (pod name, namespace).
    pub pods_by_container: HashMap<String, (String, String)>,
    /// pod UID -> (pod name, namespace).
    pub pods_by_uid: HashMap<String, (String, String)>,
    /// container ID -> the pod's workload tags (`kube_app_name`, `kube_app`, and the owner:
    /// `kube_deployment`, `kube_stateful_set`, `kube_daemon_set` or `kube_job`), from the
    /// pod's labels where the runtime records them (CRI-O's `io.kubernetes.cri-o.Labels`).
    pub workloads: HashMap<String, Vec<String>>,
}

/// The workload tags of a pod from its labels: the `app.kubernetes.io/name` and `app` labels,
/// and the owning workload from the labels its controller sets on every pod it makes: a
/// Deployment's ReplicaSet `pod-template-hash` (its pods are `<deployment>-<hash>-<5>`), a
/// StatefulSet's `statefulset.kubernetes.io/pod-name` with `apps.kubernetes.io/pod-index`
/// (`<set>-<index>`), a DaemonSet's `pod-template-generation` (`<set>-<5>`), a Job's
/// `batch.kubernetes.io/job-name` (or the older `job-name`). The name is split only where a
/// label says how; otherwise no owner tag.
pub fn workload_tags(
    pod: &str,
    labels: &serde_json::Map<String, serde_json::Value>,
) -> Vec<String> {
    let get = |k: &str| labels.get(k).and_then(|v| v.as_str());
    let mut t = Vec::new();
    if let Some(v) = get("app.kubernetes.io/name") {
        t.push(format!("kube_app_name:{v}"));
    }
    if let Some(v) = get("app") {
        t.push(format!("kube_app:{v}"));
    }
    let owner = if let Some(job) = get("batch.kubernetes.io/job-name").or(get("job-name")) {
        Some(("kube_job", job.to_string()))
    } else if let Some(h) = get("pod-template-hash") {
        pod.rsplit_once(&format!("-{h}-"))
            .map(|(d, _)| ("kube_deployment", d.to_string()))
    } else if get("statefulset.kubernetes.io/pod-name") == Some(pod) {
        get("apps.kubernetes.io/pod-index")
            .and_then(|i| pod.strip_suffix(&format!("-{i}")))
            .map(|s| ("kube_stateful_set", s.to_string()))
    } else if get("pod-template-generation").is_some() && get("controller-revision-hash").is_some()
    {
        // generateName `<set>-` and five random characters.
        pod.rsplit_once('-')
            .filter(|(_, r)| r.len() == 5)
            .map(|(d, _)| ("kube_daemon_set", d.to_string()))
    } else {
        None
    };
    if let Some((k, v)) = owner {
        t.push(format!("{k}:{v}"));
    }
    t
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
        // Its pod is still known; its name is not a container's.
        let kind = get(&[
            "io.kubernetes.cri.container-type",
            "io.kubernetes.cri-o.ContainerType",
        ]);
        let sandbox = kind.as_deref() == Some("sandbox") || cname.as_deref() == Some("POD");
        // CRI-O records the pod's labels on its sandbox (and the container's own on each
        // container), as a JSON object in a string.
        if let (Some(pod), Some(labels)) = (&pod, get(&["io.kubernetes.cri-o.Labels"]))
            && let Ok(serde_json::Value::Object(l)) = serde_json::from_str(&labels)
        {
            let w = workload_tags(pod, &l);
            if !w.is_empty() {
                self.workloads.insert(id.to_string(), w);
            }
        }
        if let (Some(pod), Some(ns)) = (pod, ns) {
            self.pods_by_container.insert(id.to_string(), (pod, ns));
        }
        if let Some(c) = cname
            && !sandbox
        {
            self.names.insert(id.to_string(), c);
        }
    }
}

/// Fill a namespace's container and pod from its container IDs and the metadata. A pod's
/// namespace holds several containers (and the sandbox): the container tags are set only
/// when one named container (or, with no names known, one container) is in it.
pub(super) fn attribute(ns: &mut Namespace, ids: &[String], meta: &Metadata) {
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
    // The pod's labels are on its sandbox, one of the namespace's containers.
    if let Some(w) = ids.iter().find_map(|i| meta.workloads.get(i)) {
        ns.workload_tags = w.clone();
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ID, tmp};
    use super::*;

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
        // As a pair's remote end: the same, each key prefixed dst_.
        assert_eq!(
            ns.dst_tags,
            vec![
                format!("dst_container_id:{fourth}"),
                "dst_container_name:cart".to_string(),
                "dst_pod_name:cart-5c".to_string(),
                "dst_kube_namespace:shop".to_string(),
                "dst_netns:cni-1234".to_string(),
            ]
        );
        // A namespace of no container or pod (the host's, a bare `ip netns`): no dst tags.
        let mut bare = Namespace {
            netns_name: Some("lab".into()),
            ..Namespace::default()
        };
        bare.finish();
        assert_eq!(bare.tags, vec!["netns:lab".to_string()]);
        assert!(bare.dst_tags.is_empty());
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

    /// A CRI-O node's files as CRI-O writes them: the pod's sandbox under
    /// /run/containers/storage/overlay-containers/<id>/userdata/config.json with the pod's
    /// labels in `io.kubernetes.cri-o.Labels` (a JSON object in a string), its app container
    /// with the container's own labels only.
    #[test]
    fn workload_tags_from_a_cri_o_sandbox() {
        let root = tmp("crio");
        let (sandbox, app) = ("5a".repeat(32), "6b".repeat(32));
        let write = |id: &str, annotations: serde_json::Value| {
            let d = root.join(format!(
                "run/containers/storage/overlay-containers/{id}/userdata"
            ));
            std::fs::create_dir_all(&d).unwrap();
            let spec = serde_json::json!({ "ociVersion": "1.0.2", "annotations": annotations });
            std::fs::write(d.join("config.json"), spec.to_string()).unwrap();
        };
        let pod = "cart-5c7d9f8b4-x2k9p";
        let pod_labels = serde_json::json!({
            "app": "cart",
            "app.kubernetes.io/name": "shop-cart",
            "pod-template-hash": "5c7d9f8b4",
            "io.kubernetes.pod.name": pod,
            "io.kubernetes.pod.namespace": "shop",
            "io.kubernetes.pod.uid": "0a1b2c3d-1111-2222-3333-444455556666",
        });
        write(
            &sandbox,
            serde_json::json!({
                "io.kubernetes.cri-o.ContainerType": "sandbox",
                "io.kubernetes.container.name": "POD",
                "io.kubernetes.pod.name": pod,
                "io.kubernetes.pod.namespace": "shop",
                "io.kubernetes.cri-o.Labels": pod_labels.to_string(),
            }),
        );
        let container_labels = serde_json::json!({
            "io.kubernetes.container.name": "cart",
            "io.kubernetes.pod.name": pod,
            "io.kubernetes.pod.namespace": "shop",
        });
        write(
            &app,
            serde_json::json!({
                "io.kubernetes.cri-o.ContainerType": "container",
                "io.kubernetes.container.name": "cart",
                "io.kubernetes.pod.name": pod,
                "io.kubernetes.pod.namespace": "shop",
                "io.kubernetes.cri-o.Labels": container_labels.to_string(),
            }),
        );
        let ids: HashSet<String> = [sandbox.clone(), app.clone()].into_iter().collect();
        let m = Metadata::read(&root, &ids);
        let mut ns = Namespace::default();
        attribute(&mut ns, &[sandbox.clone(), app.clone()], &m);
        ns.finish();
        assert_eq!(ns.container_name.as_deref(), Some("cart"));
        assert_eq!(
            ns.workload_tags,
            [
                "kube_app_name:shop-cart",
                "kube_app:cart",
                "kube_deployment:cart"
            ]
        );
        assert_eq!(ns.dst_workload_tags[2], "dst_kube_deployment:cart");
        // Not among the pair tags every instance sends (kube_labels is opt-in).
        assert!(!ns.tags.iter().any(|t| t.starts_with("kube_app")));
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn owners_only_where_a_label_says_how_to_split_the_name() {
        let l = |v: serde_json::Value| v.as_object().unwrap().clone();
        let ss = l(serde_json::json!({
            "controller-revision-hash": "db-7c9d",
            "statefulset.kubernetes.io/pod-name": "db-main-2",
            "apps.kubernetes.io/pod-index": "2",
        }));
        assert_eq!(
            workload_tags("db-main-2", &ss),
            ["kube_stateful_set:db-main"]
        );
        let ds = l(serde_json::json!({
            "controller-revision-hash": "6d5f",
            "pod-template-generation": "3",
            "app": "node-exporter",
        }));
        assert_eq!(
            workload_tags("node-exporter-x7k2q", &ds),
            ["kube_app:node-exporter", "kube_daemon_set:node-exporter"]
        );
        let job = l(serde_json::json!({ "batch.kubernetes.io/job-name": "backup-29001" }));
        assert_eq!(
            workload_tags("backup-29001-abcde", &job),
            ["kube_job:backup-29001"]
        );
        // A hash that is not in the name: no owner guessed.
        let odd = l(serde_json::json!({ "pod-template-hash": "zzz" }));
        assert!(workload_tags("cart-5c7d9f8b4-x2k9p", &odd).is_empty());
        // No controller label: a bare pod, no owner from its name's shape.
        assert!(workload_tags("cart-5c7d9f8b4-x2k9p", &serde_json::Map::new()).is_empty());
    }
}
