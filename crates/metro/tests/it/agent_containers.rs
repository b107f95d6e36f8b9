//! `metro run` on a container host: per-container RTT attribution and counting each packet
//! once on `interface: any` (agent::containers, agent::dedupe).
//!
//! The "host" is a network namespace of the test's own (metro runs in it, capturing on
//! `any`): a bridge `br0` with the containers' veths, and an uplink `veth0` through a
//! userspace delay line to a server. The host routes between the two, so each packet is
//! seen three times (container veth, bridge, uplink). The containers are real podman
//! containers (runc, cgroupfs) from a tiny busybox image built here, joined to namespaces
//! created here; the Kubernetes test lays out namespaces and cgroups as the kubelet does.
//!
//! These tests need root (each skips for another user, saying so) and podman, runc and
//! busybox-static (CI installs them); as root they fail, never skip, when they cannot set up. Containers, the image, cgroups and namespaces are
//! removed when a test ends, pass or fail.

use crate::support;
use crate::support::agent;
use crate::support::netns;
use crate::support::pod::Pod;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use agent::{Agent, Metric, TempDir, named, sum, udp_statsd};
use netns::{Client, Delayed, Netns, veth};

const S: Duration = Duration::from_secs(1);

/// A TCP echo server that counts the connections it accepted.
struct CountingEcho {
    accepted: Arc<AtomicU32>,
    stop: Arc<AtomicBool>,
}

impl CountingEcho {
    fn start(ns: &Netns, bind: &str) -> CountingEcho {
        let bind = bind.to_string();
        let l = ns.enter(move || TcpListener::bind(&bind).expect("bind echo server"));
        l.set_nonblocking(true).unwrap();
        let accepted = Arc::new(AtomicU32::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (accepted.clone(), stop.clone());
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((mut c, _)) => {
                        a.fetch_add(1, Ordering::SeqCst);
                        std::thread::spawn(move || {
                            c.set_nonblocking(false).ok();
                            c.set_read_timeout(Some(3 * S)).ok();
                            let mut buf = [0u8; 4096];
                            while let Ok(n) = c.read(&mut buf) {
                                if n == 0 || c.write_all(&buf[..n]).is_err() {
                                    break;
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        CountingEcho { accepted, stop }
    }
}

impl Drop for CountingEcho {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

// --- podman ---------------------------------------------------------------------------------

/// `podman` with the flags these machines need (hybrid cgroups: crun refuses them).
fn podman(args: &[&str]) -> std::process::Output {
    let mut c = Command::new("podman");
    c.args(["--runtime", "runc", "--cgroup-manager=cgroupfs"]);
    c.args(args);
    c.output().unwrap_or_else(|e| {
        panic!("cannot run podman ({e}): install podman, runc and busybox-static (.ci/run does)")
    })
}

fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "`podman {}` failed ({}): {}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A local image holding busybox only (no registry is reachable), removed on drop with
/// every container made from it.
struct Image {
    name: String,
    containers: Vec<String>,
    /// The namespace podman ran the containers from (its default network's bridge and
    /// firewall rules are there: they are removed from there too), when not the test's.
    netns: Option<String>,
}

impl Image {
    fn build(dir: &TempDir) -> Image {
        let root = dir.path("rootfs");
        std::fs::create_dir_all(root.join("bin")).unwrap();
        let bb = ["/bin/busybox", "/usr/bin/busybox"]
            .into_iter()
            .find(|p| std::path::Path::new(p).exists())
            .expect("busybox missing: install busybox-static (.ci/run does)");
        std::fs::copy(bb, root.join("bin/busybox")).unwrap();
        for a in [
            "sh", "sleep", "nc", "seq", "timeout", "echo", "test", "[", "cat",
        ] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
        }
        // The containers' echo server: notes each connection in the shared /sig, then echoes.
        let echo = root.join("bin/echoconn");
        std::fs::write(&echo, "#!/bin/sh\necho x >> /sig/conns\nexec cat\n").unwrap();
        let mut perm = std::fs::metadata(&echo).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perm, 0o755);
        std::fs::set_permissions(&echo, perm).unwrap();
        let tar = dir.path("rootfs.tar");
        let st = Command::new("tar")
            .args([
                "-C",
                root.to_str().unwrap(),
                "-cf",
                tar.to_str().unwrap(),
                ".",
            ])
            .status()
            .unwrap();
        assert!(st.success(), "tar of the image root failed");
        let name = format!("localhost/metro-test-busybox:{}", std::process::id());
        podman_ok(&["import", tar.to_str().unwrap(), &name]);
        Image {
            name,
            containers: Vec::new(),
            netns: None,
        }
    }

    /// Run a container in the namespace `ns` (mounted at /run/netns), `/sig` bound to
    /// `sig`; returns the full ID podman reports.
    fn run(&mut self, name: &str, ns: &Netns, sig: &std::path::Path, script: &str) -> String {
        // Registered first: removed on drop even if `run` half-fails.
        self.containers.push(name.to_string());
        let net = format!("ns:/run/netns/{}", ns.name);
        let vol = format!("{}:/sig", sig.display());
        podman_ok(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            &net,
            "-v",
            &vol,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            &self.name,
            "/bin/sh",
            "-c",
            script,
        ])
    }
}

impl Drop for Image {
    fn drop(&mut self) {
        for c in &self.containers {
            match &self.netns {
                Some(ns) => {
                    let _ = Command::new("nsenter")
                        .arg(format!("--net=/run/netns/{ns}"))
                        .args(["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"])
                        .args(["rm", "-f", "-t", "0", c])
                        .output();
                }
                None => {
                    let _ = podman(&["rm", "-f", "-t", "0", c]);
                }
            }
        }
        let _ = podman(&["rmi", "-f", &self.name]);
    }
}

/// Podman containers behind a bridge on a routed host, talking to a server 2 x 10 ms away:
/// each container's pair is tagged with the ID and name podman reports and the namespace
/// name; every packet crosses three interfaces of `any` and still each handshake is counted
/// exactly once (one per connection the server accepted), with no retransmission.
#[test]
fn podman_containers_are_tagged_and_counted_once() {
    if !netns::needs_root("podman containers in network namespaces") {
        return;
    }
    let _load = support::heavy();
    const N: u8 = 21;
    const CONNS: u32 = 8;
    let one_way = Duration::from_millis(10);
    let d = Delayed::new("cth", N, one_way);
    let host = &d.c;
    let dir = TempDir::new("ctr");
    let sig = dir.path("sig");
    std::fs::create_dir_all(&sig).unwrap();
    // The host: a bridge for the containers, routing to the uplink.
    host.ip(&["link", "add", "br0", "type", "bridge"]);
    host.ip(&["addr", "add", &format!("10.201.{N}.1/24"), "dev", "br0"]);
    host.ip(&["link", "set", "br0", "up"]);
    host.forward_ipv4();
    d.s.ip(&[
        "route",
        "add",
        &format!("10.201.{N}.0/24"),
        "via",
        &format!("10.200.{N}.1"),
    ]);
    let server = format!("10.200.{N}.2");
    let srv = CountingEcho::start(&d.s, &format!("{server}:7000"));
    let mut image = Image::build(&dir);

    let statsd = udp_statsd(host);
    let cfg = dir.write(
        "metro.yaml",
        &format!(
            "init_config:\n  flush_interval: 1\n  statsd_ip: 127.0.0.1\n  statsd_port: 8125\ninstances:\n  - interface: any\n    ips: ['{server}', '10.201.{N}.0/24']\n"
        ),
    );
    // The containers wait for /sig/go: every connection happens while metro captures.
    // Each container serves echo on 7100 and, on /sig/go, opens CONNS connections to the
    // server behind the delay line and CONNS to the other container.
    let script = |peer: &str| {
        format!(
            "nc -ll -p 7100 -e /bin/echoconn & while [ ! -e /sig/go ]; do sleep 0.1; done; for i in $(seq 1 {CONNS}); do echo hello | timeout 3 nc {server} 7000 >/dev/null; echo hello | timeout 3 nc {peer} 7100 >/dev/null; sleep 0.3; done; echo done; sleep 600"
        )
    };
    let addr = |i: u8| format!("10.201.{N}.1{i}");
    let mut ids = Vec::new();
    let mut names = Vec::new();
    let mut nss = Vec::new();
    let mut add_container = |i: u8| {
        let ns = Netns::new(&format!("ctc{i}"));
        let hv = format!("vc{i}");
        veth(
            &ns,
            "eth0",
            Some(&format!("10.201.{N}.1{i}/24")),
            host,
            &hv,
            None,
        );
        host.ip(&["link", "set", &hv, "master", "br0"]);
        ns.ip(&["route", "add", "default", "via", &format!("10.201.{N}.1")]);
        let name = format!("metro-ct-{}-{i}", std::process::id());
        let id = image.run(&name, &ns, &sig, &script(&addr(3 - i)));
        assert_eq!(id.len(), 64, "podman's container ID: {id:?}");
        ids.push(id);
        names.push(name);
        nss.push(ns);
    };
    // One container before metro starts, one after (found by a later refresh).
    add_container(1);
    let samples_path = dir.path("samples.jsonl");
    let mut agent = Agent::run_samples(host, &cfg, &samples_path, &dir.path("stderr"));
    agent.wait_log("capture filter", 20 * S);
    add_container(2);
    std::fs::write(sig.join("go"), "").unwrap();
    // Both containers' pairs tagged, and every accepted connection's handshake counted.
    let want = 2 * CONNS;
    let c2c = || {
        std::fs::read_to_string(sig.join("conns"))
            .unwrap_or_default()
            .lines()
            .count() as u32
    };
    let all = statsd.wait_for(&mut agent, 60 * S, "both containers' tagged RTT", |m| {
        let tagged = (0..2).all(|i| {
            m.iter().any(|x| {
                x.name == "system.net.tcp.rtt.p50"
                    && x.tag("container_name") == Some(names[i].as_str())
            })
        });
        let hs = sum(m, "metro.samples", |x| x.tag("kind") == Some("handshake"));
        tagged && hs >= f64::from(want + 2 * CONNS)
    });
    // Every container finished its connections; one more flush must add nothing.
    for n in &names {
        let end = std::time::Instant::now() + 30 * S;
        loop {
            let logs = podman_ok(&["logs", n]);
            if logs.contains("done") {
                break;
            }
            assert!(
                std::time::Instant::now() < end,
                "container {n} did not finish: {logs}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    statsd.wait_flush_after(&mut agent, std::time::Instant::now(), S);
    let all = {
        let later = statsd.all();
        assert!(later.len() >= all.len());
        later
    };
    let accepted = srv.accepted.load(Ordering::SeqCst);
    assert_eq!(accepted, want, "the server accepted {accepted} connections");
    let between = c2c();
    assert_eq!(between, 2 * CONNS, "connections between the containers");
    // Every connection's handshake (SYN to SYN/ACK, answered by the server's port) is
    // exactly one sample: a copy counted twice would make two, one taken for a
    // retransmission none.
    agent.terminate(15 * S);
    let text = std::fs::read_to_string(&samples_path).unwrap();
    let handshakes = |port: u64| {
        text.lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .filter(|v| v["kind"] == "handshake" && v["sport"] == port)
            .count() as u32
    };
    assert_eq!(
        handshakes(7000),
        accepted,
        "handshakes answered by the server"
    );
    assert_eq!(
        handshakes(7100),
        between,
        "handshakes answered by a container"
    );
    let hs = sum(&all, "metro.samples", |x| {
        x.tag("kind") == Some("handshake")
    });
    assert!(
        hs >= f64::from(accepted + between),
        "{hs} handshake samples reported for {accepted} + {between} connections"
    );
    let copies = sum(&all, "metro.packets.copies", |_| true);
    let received = sum(&all, "metro.packets.received", |_| true);
    eprintln!("{received} packets received, {copies} copies dropped");
    // Three sightings per routed packet (veth, bridge, uplink), two per bridged one between
    // the containers (both veths): between a half and two thirds are copies.
    assert!(
        copies >= received * 0.5 && copies <= received * 0.67,
        "{copies} copies of {received} packets"
    );
    // Routed and bridged, no NAT: every copy is plain.
    let kind = |k: &'static str| {
        sum(&all, "metro.packets.copies", move |x| {
            x.tag("kind") == Some(k)
        })
    };
    assert_eq!(kind("nat"), 0.0);
    assert_eq!(kind("plain"), copies);
    assert_eq!(sum(&all, "system.net.tcp.retransmits", |_| true), 0.0);
    // Both containers' namespaces attributed; every pair's local address known.
    let attributed: Vec<f64> = named(&all, "metro.containers.namespaces")
        .into_iter()
        .filter(|m| m.tag("state") == Some("attributed"))
        .map(|m| m.value)
        .collect();
    assert!(
        attributed.last().is_some_and(|&n| n >= 2.0),
        "{attributed:?}"
    );
    // A pair is reported untagged exactly when its address was not attributed (the late
    // container's first flushes, perhaps).
    let untagged = named(&all, "system.net.tcp.rtt.p50")
        .iter()
        .filter(|m| m.tag("container_id").is_none())
        .count();
    assert_eq!(
        sum(&all, "metro.containers.pairs_unattributed", |_| true),
        untagged as f64
    );
    for i in 0..2 {
        let src = format!("10.201.{N}.1{}", i + 1);
        let want_tags = vec![
            format!("src:{src}"),
            format!("dst:{server}"),
            "iface:any".to_string(),
            format!("container_id:{}", ids[i]),
            format!("container_name:{}", names[i]),
            format!("netns:{}", nss[i].name),
        ];
        let p50s: Vec<&Metric> = named(&all, "system.net.tcp.rtt.p50")
            .into_iter()
            .filter(|m| {
                m.tag("container_name") == Some(names[i].as_str())
                    && m.tag("dst") == Some(server.as_str())
            })
            .collect();
        assert!(!p50s.is_empty());
        for m in &p50s {
            assert_eq!(m.tags, want_tags);
            assert!(
                m.value >= 20.0 * 0.99 && m.value < 40.0,
                "p50 {} ms for {src}: the delay line adds 20 ms",
                m.value
            );
        }
        // Every sample of this container's address went to its tagged series.
        let all_src = sum(&all, "system.net.tcp.rtt.samples", |m| {
            m.tag("src") == Some(src.as_str())
        });
        let tagged = sum(&all, "system.net.tcp.rtt.samples", |m| {
            m.tag("src") == Some(src.as_str()) && m.tag("container_id") == Some(ids[i].as_str())
        });
        assert!(all_src >= f64::from(CONNS), "{all_src} samples for {src}");
        if i == 0 {
            // Known from the start: every sample tagged.
            assert_eq!(all_src, tagged, "some samples of {src} untagged");
        }
        // Container to container on this host: RTT between them, tagged with the local
        // end's container, and no delay line on that path.
        let peer = addr(2 - i as u8);
        let c2c_p50: Vec<&Metric> = named(&all, "system.net.tcp.rtt.p50")
            .into_iter()
            .filter(|m| m.tag("src") == Some(src.as_str()) && m.tag("dst") == Some(peer.as_str()))
            .collect();
        assert!(
            !c2c_p50.is_empty(),
            "no RTT from {src} to the other container"
        );
        let j = 1 - i;
        assert!(
            c2c_p50
                .iter()
                .any(|m| m.tag("dst_container_name") == Some(names[j].as_str())),
            "no pair of {src} tagged with the remote container's name"
        );
        for m in c2c_p50 {
            if m.tag("container_id").is_some() && m.tag("dst_container_id").is_some() {
                // Both ends are containers of this host: the remote end's tags follow.
                let mut t = want_tags.clone();
                t[1] = format!("dst:{peer}");
                t.extend([
                    format!("dst_container_id:{}", ids[j]),
                    format!("dst_container_name:{}", names[j]),
                    format!("dst_netns:{}", nss[j].name),
                ]);
                assert_eq!(m.tags, t);
            }
            assert!(m.value < 15.0, "p50 {} ms between containers", m.value);
        }
    }
    drop(agent);
    drop(image);
    drop(nss);
}

// --- Kubernetes layout ------------------------------------------------------------------------

/// A pod's namespace and cgroups as the kubelet (systemd driver) and containerd lay them
/// out, and the kubelet's log directories under METRO_HOST_ROOT: the pair of the pod's
/// address is tagged with the container, pod and Kubernetes namespace.
///
/// Classification by namespace: the pod talking to the host's own stack is RTT between
/// them (reported, though the host's address is local), while the pod answering a client
/// off the host is the pod's own response time (internal, not reported).
#[test]
fn kubelet_layout_gives_pod_tags() {
    if !netns::needs_root("network namespaces laid out as a kubelet does") {
        return;
    }
    let _load = support::heavy();
    const N: u8 = 22;
    let one_way = Duration::from_millis(5);
    let d = Delayed::new("kuh", N, one_way);
    let host = &d.c;
    // The pod, its process in a containerd scope of a kubepods slice, the kubelet's log
    // directories under a host root of our own.
    let dir = TempDir::new("kube");
    let root = dir.path("host");
    let pod = Pod::new("kup", N, host, &d.s, &root);
    let (pod_ns, pod_ip, host_ip, cid) = (&pod.ns, &pod.ip, &pod.host_ip, &pod.cid);
    // IPv6 between the pod and the host's own stack (the pod's address from if_inet6).
    let (pod6, host6) = (format!("fd00:202:{N}::2"), format!("fd00:202:{N}::1"));
    pod_ns.ip(&["addr", "add", &format!("{pod6}/64"), "dev", "eth0", "nodad"]);
    host.ip(&[
        "addr",
        "add",
        &format!("{host6}/64"),
        "dev",
        "vpod",
        "nodad",
    ]);
    let server = format!("10.200.{N}.2");
    let srv = CountingEcho::start(&d.s, &format!("{server}:7000"));
    let host_srv = CountingEcho::start(host, &format!("{host_ip}:7001"));
    let pod_srv = CountingEcho::start(pod_ns, &format!("{pod_ip}:7002"));
    let host_srv6 = CountingEcho::start(host, &format!("[{host6}]:7003"));

    let statsd = udp_statsd(host);
    let cfg = dir.write(
        "metro.yaml",
        &format!(
            "init_config:\n  flush_interval: 1\n  statsd_ip: 127.0.0.1\n  statsd_port: 8125\ninstances:\n  - interface: any\n    ips: ['{server}', '{host_ip}', '{pod_ip}', '{host6}']\n"
        ),
    );
    let mut agent = Agent::start_env(
        host,
        &["run", "--config", cfg.to_str().unwrap()],
        &dir.path("stderr"),
        &[("METRO_HOST_ROOT", root.to_str().unwrap())],
    );
    agent.wait_log("capture filter", 20 * S);
    let to: SocketAddr = format!("{server}:7000").parse().unwrap();
    let mut client = Client::start(pod_ns, to, 100, Duration::from_millis(20), 5);
    let to_host: SocketAddr = format!("{host_ip}:7001").parse().unwrap();
    let mut client_host = Client::start(pod_ns, to_host, 100, Duration::from_millis(20), 5);
    let to_pod: SocketAddr = format!("{pod_ip}:7002").parse().unwrap();
    let mut client_remote = Client::start(&d.s, to_pod, 100, Duration::from_millis(20), 5);
    let to_host6: SocketAddr = format!("[{host6}]:7003").parse().unwrap();
    let mut client6 = Client::start(pod_ns, to_host6, 100, Duration::from_millis(20), 5);
    let src = pod_ip.clone();
    let p50_of = |m: &[Metric], src: &str, dst: &str| {
        m.iter()
            .filter(|x| {
                x.name == "system.net.tcp.rtt.p50"
                    && x.tag("src") == Some(src)
                    && x.tag("dst") == Some(dst)
            })
            .cloned()
            .collect::<Vec<Metric>>()
    };
    let all = statsd.wait_for(&mut agent, 40 * S, "the pod's tagged RTT", |m| {
        m.iter().any(|x| {
            x.name == "system.net.tcp.rtt.p50"
                && x.tag("pod_name") == Some("checkout-api-7d9f")
                && x.tag("dst") == Some(server.as_str())
        }) && !p50_of(m, pod_ip, host_ip).is_empty()
            && !p50_of(m, &pod6, &host6).is_empty()
            && client_remote.requests.load(Ordering::Relaxed) >= 20
    });
    client.stop();
    client_host.stop();
    client_remote.stop();
    client6.stop();
    for s in [&srv, &host_srv, &pod_srv, &host_srv6] {
        assert!(s.accepted.load(Ordering::SeqCst) >= 1);
    }
    // The pod to the host's own stack: reported, tagged with the pod.
    let to_host_stack = p50_of(&all, pod_ip, host_ip);
    assert!(
        to_host_stack
            .iter()
            .all(|m| m.tag("pod_name") == Some("checkout-api-7d9f"))
    );
    for m in p50_of(&all, &pod6, &host6) {
        assert_eq!(m.tag("container_id"), Some(cid.as_str()), "{m:?}");
        assert_eq!(m.tag("kube_namespace"), Some("shop"), "{m:?}");
    }
    // The pod answering the remote client: internal, never a pair of the client's.
    let remote = format!("10.200.{N}.2");
    assert!(
        p50_of(&all, &remote, pod_ip).is_empty(),
        "the pod's own response time reported as RTT"
    );
    assert!(sum(&all, "metro.samples.internal", |_| true) >= 20.0);
    let m = named(&all, "system.net.tcp.rtt.p50")
        .into_iter()
        .find(|x| x.tag("pod_name").is_some() && x.tag("dst") == Some(server.as_str()))
        .unwrap();
    assert_eq!(
        m.tags,
        vec![
            format!("src:{src}"),
            format!("dst:{server}"),
            "iface:any".to_string(),
            format!("container_id:{cid}"),
            "container_name:api".to_string(),
            "pod_name:checkout-api-7d9f".to_string(),
            "kube_namespace:shop".to_string(),
            format!("netns:{}", pod_ns.name),
        ]
    );
    assert!(m.value >= 10.0 * 0.99, "p50 {} ms", m.value);
    drop(agent);
    drop(pod);
}

// --- podman's own NAT -------------------------------------------------------------------------

/// `podman` run inside the namespace `ns` (`nsenter --net`, which, unlike `ip netns exec`,
/// keeps the host's /sys and so its cgroups): podman's default network (netavark) then
/// makes its bridge and its masquerade and port-forwarding rules in that namespace.
fn podman_in(ns: &Netns, args: &[&str]) -> String {
    let mut c = Command::new("nsenter");
    c.arg(format!("--net=/run/netns/{}", ns.name));
    c.args(["podman", "--runtime", "runc", "--cgroup-manager=cgroupfs"]);
    c.args(args);
    let out = c.output().expect("run nsenter podman");
    assert!(
        out.status.success(),
        "`podman {}` in {} failed ({}): {}",
        args.join(" "),
        ns.name,
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The lines of a `--samples` file.
fn sample_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .collect()
}

/// Podman's default network on a "host" namespace, captured on `any` there: its masquerade
/// towards a server 2 x 5 ms away and its port publishing (`-p`), with metro ranking each
/// NAT copy's sightings. Two containers fetch the same payload from the server at the same
/// moment, a host process fetches from it too, and a client outside fetches from a third
/// container's published port. Every connection gives exactly one handshake sample per
/// direction, under the container's own address (tagged) or, for the host process only,
/// under the host's; no sample under the host's address on a port the NAT chose. An
/// in-kernel capture with `threads: 2` beside it gives the same samples and copies.
#[test]
fn podman_nat_counted_once_under_the_containers_address() {
    if !netns::needs_root("podman's NAT in a namespace") {
        return;
    }
    let _load = support::heavy();
    const N: u8 = 23;
    const CONNS: u32 = 6;
    const HOST_CONNS: u32 = 3;
    const PUBLISHED_CONNS: u32 = 5;
    let d = Delayed::new("nat", N, Duration::from_millis(5));
    let host = &d.c;
    let (host_ip, server) = (d.client_ip(), d.server_ip());
    let srv = CountingEcho::start(&d.s, &format!("{server}:7000"));
    let dir = TempDir::new("nat");
    let sig = dir.path("sig");
    std::fs::create_dir_all(&sig).unwrap();
    let mut image = Image::build(&dir);
    image.netns = Some(host.name.clone());
    let vol = format!("{}:/sig", sig.display());
    let mut run = |name: &str, extra: &[&str], script: &str| -> String {
        image.containers.push(name.to_string());
        let mut args = vec![
            "run",
            "-d",
            "--name",
            name,
            "-v",
            &vol,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&[&image.name, "/bin/sh", "-c", script]);
        podman_in(host, &args)
    };
    let fetch = format!(
        "while [ ! -e /sig/go ]; do sleep 0.01; done; for i in $(seq 1 {CONNS}); do echo hello | timeout 3 nc {server} 7000 >/dev/null; sleep 0.3; done; echo done; sleep 600"
    );
    let pid = std::process::id();
    let names: Vec<String> = (1..=3).map(|i| format!("metro-nat-{pid}-{i}")).collect();
    let ids = [
        run(&names[0], &[], &fetch),
        run(&names[1], &[], &fetch),
        run(
            &names[2],
            &["-p", &format!("{host_ip}:8080:80")],
            "nc -ll -p 80 -e /bin/echoconn & sleep 600",
        ),
    ];
    let ip_of = |name: &str| {
        podman_in(
            host,
            &[
                "inspect",
                "-f",
                "{{.NetworkSettings.Networks.podman.IPAddress}}",
                name,
            ],
        )
    };
    let ctr_ips: Vec<String> = names.iter().map(|n| ip_of(n)).collect();
    assert!(
        ctr_ips.iter().all(|a| a.starts_with("10.88.")),
        "{ctr_ips:?}"
    );

    let mut statsd = udp_statsd(host);
    let samples_path = dir.path("samples.jsonl");
    let config = |port: u16, extra: &str| {
        format!(
            "init_config:\n  flush_interval: 1\n  statsd_ip: 127.0.0.1\n  statsd_port: {port}\ninstances:\n  - interface: any\n    ips: ['10.200.{N}.0/24', '10.88.0.0/16']\n{extra}"
        )
    };
    let cfg = dir.write("metro.yaml", &config(8125, ""));
    let mut agent = Agent::run_samples(host, &cfg, &samples_path, &dir.path("stderr"));
    agent.wait_log("capture filter", 20 * S);
    // Beside it, an in-kernel capture on two engine threads: its reader drops the copies
    // before it shards the records (a NAT copy's addresses would take it to another engine
    // than the sighting it copies).
    let mut statsd2 =
        agent::Statsd::udp(host.enter(|| std::net::UdpSocket::bind("127.0.0.1:8126").unwrap()));
    let samples2_path = dir.path("samples2.jsonl");
    let cfg2 = dir.write(
        "metro2.yaml",
        &config(8126, "    capture: ebpf\n    threads: 2\n"),
    );
    let mut agent2 = Agent::run_samples(host, &cfg2, &samples2_path, &dir.path("stderr2"));
    agent2.wait_log("capture filter", 20 * S);
    std::fs::write(sig.join("go"), "").unwrap();
    // The host's own process, and a client outside fetching from the published port.
    let to: SocketAddr = format!("{server}:7000").parse().unwrap();
    let host_ports: Vec<u16> = host.enter(move || {
        (0..HOST_CONNS)
            .map(|_| {
                let mut c = std::net::TcpStream::connect(to).expect("host to the server");
                let port = c.local_addr().unwrap().port();
                c.write_all(b"hello\n").unwrap();
                let mut b = [0u8; 6];
                c.read_exact(&mut b).unwrap();
                std::thread::sleep(Duration::from_millis(200));
                port
            })
            .collect()
    });
    let published: SocketAddr = format!("{host_ip}:8080").parse().unwrap();
    let outside_ports: Vec<u16> = d.s.enter(move || {
        (0..PUBLISHED_CONNS)
            .map(|_| {
                let mut c = std::net::TcpStream::connect(published).expect("to the published port");
                c.set_read_timeout(Some(5 * S)).unwrap();
                let port = c.local_addr().unwrap().port();
                c.write_all(b"hello\n").unwrap();
                let mut b = [0u8; 6];
                c.read_exact(&mut b)
                    .expect("echo through the published port");
                std::thread::sleep(Duration::from_millis(200));
                port
            })
            .collect()
    });
    for n in &names[..2] {
        let end = std::time::Instant::now() + 60 * S;
        while !podman_in(host, &["logs", n]).contains("done") {
            assert!(
                std::time::Instant::now() < end,
                "container {n} did not finish"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    statsd.wait_flush_after(&mut agent, std::time::Instant::now(), S);
    let all = statsd.all();
    agent.terminate(15 * S);
    agent2.terminate(15 * S);
    let lines = sample_lines(&std::fs::read_to_string(&samples_path).unwrap());
    let accepted = srv.accepted.load(Ordering::SeqCst);
    assert_eq!(
        accepted,
        2 * CONNS + HOST_CONNS,
        "connections the server accepted"
    );
    let hs = |pred: &dyn Fn(&serde_json::Value) -> bool| {
        lines
            .iter()
            .filter(|v| v["kind"] == "handshake" && pred(v))
            .count() as u32
    };
    // The server's SYN/ACK: one per connection, under the container's address for theirs
    // (the two at the same moment never merged), the host's for the host process's.
    for ip in &ctr_ips[..2] {
        assert_eq!(
            hs(&|v| v["sport"] == 7000 && v["dst"] == ip.as_str()),
            CONNS,
            "handshakes of {ip}"
        );
    }
    let under_host: Vec<&serde_json::Value> = lines
        .iter()
        .filter(|v| v["dst"] == host_ip.as_str() || v["src"] == host_ip.as_str())
        .collect();
    assert_eq!(
        hs(&|v| v["sport"] == 7000 && v["dst"] == host_ip.as_str()),
        HOST_CONNS,
        "the host process's ports {host_ports:?}; samples under the host's address: {under_host:#?}"
    );
    assert_eq!(hs(&|v| v["sport"] == 7000), accepted);
    // The published port: the container's SYN/ACK and the client's ACK, once each per
    // connection, under the container's address.
    let pub_ip = ctr_ips[2].as_str();
    assert_eq!(
        hs(&|v| v["src"] == pub_ip && v["sport"] == 80),
        PUBLISHED_CONNS
    );
    assert_eq!(
        hs(&|v| v["dst"] == pub_ip && v["dport"] == 80),
        PUBLISHED_CONNS
    );
    // Nothing under the host's address but the host process's own connections.
    for v in &lines {
        for (ip, port) in [("src", "sport"), ("dst", "dport")] {
            if v[ip] == host_ip.as_str() {
                let p = v[port].as_u64().unwrap() as u16;
                assert!(
                    host_ports.contains(&p),
                    "a sample under the host's address on port {p}, not the host process's: {v}"
                );
            }
        }
    }
    assert_eq!(outside_ports.len(), PUBLISHED_CONNS as usize);
    // Tagged with each container; the host's pair untagged.
    let p50 = named(&all, "system.net.tcp.rtt.p50");
    for (i, ip) in ctr_ips.iter().enumerate() {
        let tagged: Vec<&&Metric> = p50
            .iter()
            .filter(|m| m.tag("src") == Some(ip.as_str()))
            .collect();
        assert!(!tagged.is_empty(), "no pair of {ip}");
        for m in tagged {
            assert_eq!(m.tag("container_name"), Some(names[i].as_str()), "{m:?}");
            assert_eq!(m.tag("container_id"), Some(ids[i].as_str()), "{m:?}");
        }
    }
    assert!(p50.iter().any(|m| m.tag("src") == Some(host_ip.as_str())
        && m.tag("dst") == Some(server.as_str())
        && m.tag("container_id").is_none()));
    let copies = sum(&all, "metro.packets.copies", |_| true);
    assert!(copies > 0.0);
    // Masqueraded and port-forwarded connections: NAT copies, counted as such; the kinds
    // add up to the total.
    let kind = |k: &'static str| {
        sum(&all, "metro.packets.copies", move |x| {
            x.tag("kind") == Some(k)
        })
    };
    let (plain, nat) = (kind("plain"), kind("nat"));
    eprintln!("{copies} copies dropped: {plain} plain, {nat} NAT'd");
    assert!(nat > 0.0, "{copies} copies, none NAT'd");
    assert_eq!(plain + nat, copies);
    let retransmits: Vec<&Metric> = named(&all, "system.net.tcp.retransmits")
        .into_iter()
        .filter(|m| m.value > 0.0)
        .collect();
    assert!(retransmits.is_empty(), "{retransmits:#?}");
    // Two engine threads: the same samples (kinds and ends; the engines write their lines in
    // their own order) and the same copies of each kind, over the whole run.
    let keys = |lines: &[serde_json::Value]| {
        let mut k: Vec<String> = lines
            .iter()
            .map(|v| {
                format!(
                    "{} {}:{} {}:{}",
                    v["kind"], v["src"], v["sport"], v["dst"], v["dport"]
                )
            })
            .collect();
        k.sort();
        k
    };
    let lines2 = sample_lines(&std::fs::read_to_string(&samples2_path).unwrap());
    eprintln!(
        "{} samples with one engine, {} with two",
        lines.len(),
        lines2.len()
    );
    assert_eq!(keys(&lines2), keys(&lines), "threads: 2 against one engine");
    let (one, two) = (statsd.finish(), statsd2.finish());
    for k in ["plain", "nat"] {
        let copies = |m: &[Metric]| sum(m, "metro.packets.copies", |x| x.tag("kind") == Some(k));
        assert_eq!(
            copies(&two),
            copies(&one),
            "{k} copies with two engine threads"
        );
    }
    drop(agent);
    drop(image);
}

// --- the DaemonSet's settings ------------------------------------------------------------------

/// The pod of deploy/kubernetes/metro.yaml under podman, every setting read from the
/// manifest by scripts/lib/k8s-podman.py (as scripts/container-test.sh does with the real
/// image, which needs a Debian mirror to build): the host's pid namespace, uid 0 with the
/// manifest's three capabilities, no_new_privs, a read-only root, the host's / read-only at
/// /host with METRO_HOST_ROOT. The image here is this build's binary and the libraries it
/// links, nothing else. A workload container in a namespace of its own fetches from the
/// "host": its pair carries its container tags, and the host's pair towards it the `dst_`
/// ones.
#[test]
fn daemonset_settings_under_podman_give_tags() {
    if !netns::needs_root("podman with the DaemonSet's settings") {
        return;
    }
    let _load = support::heavy();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dir = TempDir::new("dset");
    // The stand-in image: the binary and what `ldd` says it loads.
    let rootfs = dir.path("metro-rootfs");
    let bin = env!("CARGO_BIN_EXE_metro");
    let ldd = Command::new("ldd").arg(bin).output().expect("run ldd");
    let mut files = vec![std::path::PathBuf::from(bin)];
    for l in String::from_utf8_lossy(&ldd.stdout).lines() {
        if let Some(p) = l.split_whitespace().find(|w| w.starts_with('/')) {
            files.push(p.into());
        }
    }
    for f in &files {
        let to = if f.as_os_str() == bin {
            rootfs.join("usr/bin/metro")
        } else {
            rootfs.join(f.strip_prefix("/").unwrap())
        };
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(f, &to).unwrap_or_else(|e| panic!("copy {}: {e}", f.display()));
    }
    let tar = dir.path("metro-rootfs.tar");
    let st = Command::new("tar")
        .args([
            "-C",
            rootfs.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let metro_image = format!("localhost/metro-test-standin:{}", std::process::id());
    podman_ok(&[
        "import",
        "--change",
        "ENTRYPOINT [\"/usr/bin/metro\"]",
        tar.to_str().unwrap(),
        &metro_image,
    ]);
    // Removed last (after the containers made from either image).
    struct Rmi(String);
    impl Drop for Rmi {
        fn drop(&mut self) {
            let _ = podman(&["rmi", "-f", &self.0]);
        }
    }
    let _rmi = Rmi(metro_image.clone());

    // The "host" and a workload's namespace, joined by a veth pair.
    let host = Netns::new("dsh");
    let work_ns = Netns::new("dsw");
    veth(
        &work_ns,
        "eth0",
        Some("10.234.0.2/24"),
        &host,
        "vwork",
        Some("10.234.0.1/24"),
    );
    let _srv = CountingEcho::start(&host, "10.234.0.1:7000");
    let statsd = udp_statsd(&host);
    let sig = dir.path("sig");
    std::fs::create_dir_all(&sig).unwrap();
    let mut image = Image::build(&dir);
    let work_name = format!("metro-ds-{}-work", std::process::id());
    let work_id = image.run(
        &work_name,
        &work_ns,
        &sig,
        "nc -ll -p 7100 -e /bin/echoconn & while true; do echo hello | timeout 2 nc 10.234.0.1 7000 >/dev/null; sleep 0.2; done",
    );

    // The pod's settings from the manifest; this test's configuration and receiver.
    let etc = dir.path("etc-metro");
    let dsd = dir.path("datadog");
    std::fs::create_dir_all(&etc).unwrap();
    std::fs::create_dir_all(&dsd).unwrap();
    std::fs::write(
        etc.join("metro.yaml"),
        "init_config:\n  flush_interval: 1\n  statsd_ip: 127.0.0.1\n  statsd_port: 8125\ninstances:\n  - interface: any\n    ips: [10.234.0.0/24]\n",
    )
    .unwrap();
    let out = Command::new("python3")
        .arg(root.join("scripts/lib/k8s-podman.py"))
        .arg(root.join("deploy/kubernetes/metro.yaml"))
        .arg(format!("/var/run/datadog/={}", dsd.display()))
        .arg(format!("configMap:metro-config={}", etc.display()))
        .output()
        .expect("run scripts/lib/k8s-podman.py (python3-yaml)");
    assert!(
        out.status.success(),
        "k8s-podman.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let sep = lines.iter().position(|l| *l == "--").expect("no `--`");
    let (opts, args) = (&lines[..sep], &lines[sep + 1..]);
    for want in [
        "--pid=host",
        "--network=host",
        "--env=METRO_HOST_ROOT=/host",
        "--volume=/:/host:ro,rslave",
        "--cap-drop=all",
    ] {
        assert!(
            opts.contains(&want),
            "the manifest's settings lack {want}: {opts:?}"
        );
    }
    let agent_name = format!("metro-ds-{}-agent", std::process::id());
    image.netns = Some(host.name.clone());
    image.containers.push(agent_name.clone());
    let mut run: Vec<&str> = vec![
        "run",
        "-d",
        "--name",
        &agent_name,
        "--ulimit",
        "nofile=1024:1024",
        "--ulimit",
        "nproc=1024:1024",
    ];
    run.extend_from_slice(opts);
    run.push(&metro_image);
    run.extend_from_slice(args);
    podman_in(&host, &run);
    let pid = podman_ok(&["inspect", "-f", "{{.State.Pid}}", &agent_name]);
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("CapEff:") && l.ends_with("000000c000083004")),
        "NET_RAW, NET_ADMIN, PERFMON, BPF, SYS_PTRACE, DAC_READ_SEARCH only: {status}"
    );
    // A client on the host to the workload's echo service: the host's pair to it.
    let mut client = Client::start(
        &host,
        "10.234.0.2:7100".parse().unwrap(),
        100,
        Duration::from_millis(50),
        5,
    );
    let end = std::time::Instant::now() + 60 * S;
    let (mut src_tagged, mut dst_tagged) = (false, false);
    while !(src_tagged && dst_tagged) {
        assert!(
            std::time::Instant::now() < end,
            "no tagged pairs within 60 s: {:#?}\n{}",
            named(&statsd.all(), "system.net.tcp.rtt.p50"),
            podman_ok(&["logs", &agent_name])
        );
        std::thread::sleep(Duration::from_millis(500));
        let all = statsd.all();
        src_tagged = all.iter().any(|m| {
            m.tag("src") == Some("10.234.0.2")
                && m.tag("container_name") == Some(work_name.as_str())
                && m.tag("container_id") == Some(work_id.as_str())
        });
        dst_tagged = all.iter().any(|m| {
            m.tag("src") == Some("10.234.0.1")
                && m.tag("dst") == Some("10.234.0.2")
                && m.tag("dst_container_name") == Some(work_name.as_str())
                && m.tag("container_name").is_none()
        });
    }
    client.stop();
    drop(image);
}
