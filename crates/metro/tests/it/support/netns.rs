//! Network namespaces for the agent tests: creation and cleanup (a Drop guard), veth pairs,
//! running a closure or a command inside a namespace, TCP echo traffic, and a userspace
//! delay line (this kernel has no netem).
//!
//! Everything here needs root: a test that uses it starts with [`needs_root`], which skips
//! it for another user. As root, a failure to set up is a panic that says what failed: a
//! test that cannot build its namespaces must fail, not skip.
//! Only the namespaces created here carry traffic.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Whether a test that needs root (network namespaces, podman, tcpreplay, raw capture) can
/// run: skips with a line saying so for other users, panics instead under .ci/run
/// ([`metro_testkit::root::needs_root`]).
/// Use: `if !netns::needs_root("the agent between namespaces") { return; }`.
pub use metro_testkit::root::needs_root;

/// Run `ip ARGS`, panicking with its stderr on failure.
pub fn ip(args: &[&str]) {
    let out = Command::new("ip")
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run `ip` (install iproute2): {e}"));
    if !out.status.success() {
        // SAFETY: geteuid takes no arguments and cannot fail.
        let root = unsafe { libc::geteuid() } == 0;
        panic!(
            "`ip {}` failed ({}): {}{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr),
            if !root {
                " -- the agent tests need root (CI runs as root)"
            } else {
                ""
            }
        );
    }
}

/// A network namespace, deleted (with its /etc/netns directory) on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    /// A fresh namespace with `lo` up. `tag` keeps names readable and unique per test.
    pub fn new(tag: &str) -> Netns {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let name = format!("mt-{tag}-{}-{n}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        ns
    }

    /// `ip -n NAME ARGS`.
    pub fn ip(&self, args: &[&str]) {
        let mut v = vec!["-n", self.name.as_str()];
        v.extend_from_slice(args);
        ip(&v);
    }

    /// A command run inside the namespace (`ip netns exec`, which also bind-mounts
    /// /etc/netns/NAME/* over /etc).
    pub fn command(&self, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name, program]);
        c
    }

    /// Run `f` on a thread that joined this namespace (sockets it creates stay in it).
    pub fn enter<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            join_netns(&path);
            f()
        })
        .join()
        .expect("thread in namespace panicked")
    }

    /// Spawn a long-running thread inside this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::spawn(move || {
            join_netns(&path);
            f()
        })
    }

    /// `sleep SECS` inside the namespace, returned once it runs there (`ip netns exec` has
    /// joined the namespace and exec'd it in place: the same pid): a process for container
    /// discovery to find the namespace by.
    pub fn sleeper(&self, secs: u32) -> std::process::Child {
        let child = self
            .command("sleep")
            .arg(secs.to_string())
            .spawn()
            .expect("spawn sleep in the namespace");
        let comm = format!("/proc/{}/comm", child.id());
        let end = Instant::now() + Duration::from_secs(10);
        while std::fs::read_to_string(&comm).ok().as_deref() != Some("sleep\n") {
            assert!(
                Instant::now() < end,
                "`ip netns exec {} sleep` never ran",
                self.name
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        child
    }

    /// Turns IPv4 forwarding on in the namespace (it routes between its interfaces).
    pub fn forward_ipv4(&self) {
        let st = self
            .command("sysctl")
            .args(["-qw", "net.ipv4.ip_forward=1"])
            .status()
            .expect("run sysctl (Debian package `procps`)");
        assert!(st.success(), "enabling forwarding in {}", self.name);
    }

    /// `tcpreplay -q ARGS` inside the namespace (Debian package `tcpreplay`), which must
    /// succeed: it returns once every frame is sent.
    pub fn tcpreplay(&self, args: &[&str]) {
        let out = self
            .command("tcpreplay")
            .arg("-q")
            .args(args)
            .output()
            .expect("run tcpreplay (Debian package `tcpreplay`)");
        assert!(
            out.status.success(),
            "tcpreplay {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Write /etc/netns/NAME/FILE (seen as /etc/FILE by `command`). Rewrites in place, so
    /// that a running process's bind mount sees the change.
    pub fn write_etc(&self, file: &str, content: &str) {
        let dir = format!("/etc/netns/{}", self.name);
        std::fs::create_dir_all(&dir).expect("create /etc/netns dir");
        let path = format!("{dir}/{file}");
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(&path)
            .expect("open /etc/netns file");
        f.write_all(content.as_bytes())
            .expect("write /etc/netns file");
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(format!("/etc/netns/{}", self.name));
    }
}

fn join_netns(path: &str) {
    let f = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid namespace fd; it affects only the calling thread.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

/// A veth pair: `a_if` in `a` with `a_addr` (CIDR), `b_if` in `b` with `b_addr`. `None`
/// addresses leave that end without one (a bridge end).
pub fn veth(
    a: &Netns,
    a_if: &str,
    a_addr: Option<&str>,
    b: &Netns,
    b_if: &str,
    b_addr: Option<&str>,
) {
    ip(&[
        "link", "add", a_if, "netns", &a.name, "type", "veth", "peer", "name", b_if, "netns",
        &b.name,
    ]);
    for (ns, ifname, addr) in [(a, a_if, a_addr), (b, b_if, b_addr)] {
        if let Some(addr) = addr {
            if addr.contains(':') {
                ns.ip(&["addr", "add", addr, "dev", ifname, "nodad"]);
            } else {
                ns.ip(&["addr", "add", addr, "dev", ifname]);
            }
        }
        ns.ip(&["link", "set", ifname, "up"]);
    }
}

/// Two namespaces joined by one veth: client `c` (10.200.N.1, fd00:200:N::1) and server `s`
/// (10.200.N.2, fd00:200:N::2), interface `veth0` on both sides.
pub struct Pair {
    pub c: Netns,
    pub s: Netns,
    pub n: u8,
}

impl Pair {
    pub fn new(tag: &str, n: u8) -> Pair {
        let c = Netns::new(&format!("{tag}c"));
        let s = Netns::new(&format!("{tag}s"));
        let (ca, sa) = (format!("10.200.{n}.1/24"), format!("10.200.{n}.2/24"));
        veth(&c, "veth0", Some(&ca), &s, "veth0", Some(&sa));
        c.ip(&[
            "addr",
            "add",
            &format!("fd00:200:{n}::1/64"),
            "dev",
            "veth0",
            "nodad",
        ]);
        s.ip(&[
            "addr",
            "add",
            &format!("fd00:200:{n}::2/64"),
            "dev",
            "veth0",
            "nodad",
        ]);
        Pair { c, s, n }
    }
    pub fn client_ip(&self) -> String {
        format!("10.200.{}.1", self.n)
    }
    pub fn server_ip(&self) -> String {
        format!("10.200.{}.2", self.n)
    }
}

/// client — mid — server, with a userspace delay line in `mid` adding `one_way` per
/// direction. Client 10.200.N.1/24 on `veth0`, server 10.200.N.2/24 on `veth0`; `mid` has
/// no addresses.
pub struct Delayed {
    pub c: Netns,
    pub m: Netns,
    pub s: Netns,
    pub n: u8,
    bridge: Option<Bridge>,
}

impl Delayed {
    pub fn new(tag: &str, n: u8, one_way: Duration) -> Delayed {
        let c = Netns::new(&format!("{tag}c"));
        let m = Netns::new(&format!("{tag}m"));
        let s = Netns::new(&format!("{tag}s"));
        veth(
            &c,
            "veth0",
            Some(&format!("10.200.{n}.1/24")),
            &m,
            "mc",
            None,
        );
        veth(
            &s,
            "veth0",
            Some(&format!("10.200.{n}.2/24")),
            &m,
            "ms",
            None,
        );
        let bridge = Bridge::start(&m, "mc", "ms", one_way, Arc::default());
        Delayed {
            c,
            m,
            s,
            n,
            bridge: Some(bridge),
        }
    }
    pub fn client_ip(&self) -> String {
        format!("10.200.{}.1", self.n)
    }
    pub fn server_ip(&self) -> String {
        format!("10.200.{}.2", self.n)
    }

    /// Hold every frame from the server (`from_server`) or from the client `extra` longer
    /// than `one_way`, from now on (frames stay in order: one queue per direction). Zero
    /// goes back to `one_way`.
    pub fn set_extra_delay(&self, from_server: bool, extra: Duration) {
        if let Some(b) = &self.bridge {
            b.extra[usize::from(from_server)].store(extra.as_nanos() as u64, Ordering::Relaxed);
        }
    }

    /// Reorder one frame: the next frame from the server (`from_server`) or from the client
    /// of at least `min_len` bytes is held `extra` longer than the others, which pass it.
    pub fn hold_next(&self, from_server: bool, min_len: usize, extra: Duration) {
        if let Some(b) = &self.bridge {
            b.hold.lock().unwrap()[usize::from(from_server)] = Some((min_len, extra));
        }
    }
}

impl Drop for Delayed {
    fn drop(&mut self) {
        if let Some(b) = self.bridge.take() {
            b.stop();
        }
    }
}

// --- the delay line -----------------------------------------------------------------------

const ETH_P_ALL: u16 = 0x0003;
const PACKET_VNET_HDR: libc::c_int = 15;
const PACKET_OUTGOING: u8 = 4;
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;

/// A packet socket bound to one interface, with virtio-net headers so that partial
/// checksums and GSO survive the trip through user space.
struct PacketSock {
    fd: libc::c_int,
}

impl PacketSock {
    fn open(ifname: &str) -> PacketSock {
        // SAFETY: plain socket calls on a fresh descriptor owned by the returned value.
        unsafe {
            let fd = libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_NONBLOCK,
                i32::from(ETH_P_ALL.to_be()),
            );
            assert!(
                fd >= 0,
                "AF_PACKET socket: {}",
                std::io::Error::last_os_error()
            );
            let one: libc::c_int = 1;
            let r = libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                PACKET_VNET_HDR,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            );
            assert_eq!(r, 0, "PACKET_VNET_HDR: {}", std::io::Error::last_os_error());
            // Frames sent out of this interface (ours, or a flood that a test injects with
            // tcpreplay) must not queue on the socket: at tens of thousands a second they
            // would fill its buffer whenever this thread waits for a core, and the real
            // frames behind them would be dropped (seen as retransmissions under load).
            let r = libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                PACKET_IGNORE_OUTGOING,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            );
            assert_eq!(
                r,
                0,
                "PACKET_IGNORE_OUTGOING: {}",
                std::io::Error::last_os_error()
            );
            let rcvbuf: libc::c_int = 8 << 20;
            let r = libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUFFORCE,
                &rcvbuf as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as u32,
            );
            assert_eq!(r, 0, "SO_RCVBUFFORCE: {}", std::io::Error::last_os_error());
            let name = std::ffi::CString::new(ifname).unwrap();
            let index = libc::if_nametoindex(name.as_ptr());
            assert!(index != 0, "no interface {ifname}");
            let mut sll: libc::sockaddr_ll = std::mem::zeroed();
            sll.sll_family = libc::AF_PACKET as u16;
            sll.sll_protocol = ETH_P_ALL.to_be();
            sll.sll_ifindex = index as i32;
            let r = libc::bind(
                fd,
                &sll as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            );
            assert_eq!(r, 0, "bind {ifname}: {}", std::io::Error::last_os_error());
            PacketSock { fd }
        }
    }

    /// One received frame (with its virtio-net header), skipping our own transmissions.
    fn recv(&self, buf: &mut [u8]) -> Option<usize> {
        loop {
            // SAFETY: buf and sll are valid for the lengths given.
            unsafe {
                let mut sll: libc::sockaddr_ll = std::mem::zeroed();
                let mut len = std::mem::size_of::<libc::sockaddr_ll>() as u32;
                let n = libc::recvfrom(
                    self.fd,
                    buf.as_mut_ptr() as *mut libc::c_void,
                    buf.len(),
                    libc::MSG_DONTWAIT,
                    &mut sll as *mut _ as *mut libc::sockaddr,
                    &mut len,
                );
                if n <= 0 {
                    return None;
                }
                if sll.sll_pkttype == PACKET_OUTGOING {
                    continue;
                }
                return Some(n as usize);
            }
        }
    }

    fn send(&self, frame: &[u8]) {
        // SAFETY: frame is valid for its length; the socket is bound to its interface.
        unsafe {
            libc::send(
                self.fd,
                frame.as_ptr() as *const libc::c_void,
                frame.len(),
                libc::MSG_DONTWAIT,
            );
        }
    }
}

impl Drop for PacketSock {
    fn drop(&mut self) {
        // SAFETY: closing the descriptor this value owns.
        unsafe {
            libc::close(self.fd);
        }
    }
}

/// A frame to hold out of order, by direction: (minimum length, extra delay). Taken by the
/// first frame that qualifies.
type Hold = Arc<Mutex<[Option<(usize, Duration)>; 2]>>;

struct Bridge {
    stop: Arc<AtomicBool>,
    /// Nanoseconds added to `delay` for frames read from `if1` and from `if2`.
    extra: Arc<[AtomicU64; 2]>,
    hold: Hold,
    thread: JoinHandle<()>,
}

impl Bridge {
    /// Forward every frame between `if1` and `if2` in `ns`, each `delay` late (plus `extra`
    /// of its direction).
    fn start(
        ns: &Netns,
        if1: &str,
        if2: &str,
        delay: Duration,
        extra: Arc<[AtomicU64; 2]>,
    ) -> Bridge {
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let ex = extra.clone();
        let hold: Hold = Arc::default();
        let ho = hold.clone();
        let (if1, if2) = (if1.to_string(), if2.to_string());
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread = ns.spawn(move || {
            let socks = [PacketSock::open(&if1), PacketSock::open(&if2)];
            ready_tx.send(()).unwrap();
            let mut queues: [VecDeque<(Instant, Vec<u8>)>; 2] = [VecDeque::new(), VecDeque::new()];
            // One frame per direction held out of the queue (`hold`), with its due time.
            let mut held: [Option<(Instant, Vec<u8>)>; 2] = [None, None];
            let mut buf = vec![0u8; 70_000];
            while !st.load(Ordering::Relaxed) {
                // Wait for a frame or the next due time (at most 5 ms, to see `stop`).
                let now = Instant::now();
                let mut wait = Duration::from_millis(5);
                for q in &queues {
                    if let Some((due, _)) = q.front() {
                        wait = wait.min(due.saturating_duration_since(now));
                    }
                }
                for (due, _) in held.iter().flatten() {
                    wait = wait.min(due.saturating_duration_since(now));
                }
                let mut fds = [
                    libc::pollfd {
                        fd: socks[0].fd,
                        events: libc::POLLIN,
                        revents: 0,
                    },
                    libc::pollfd {
                        fd: socks[1].fd,
                        events: libc::POLLIN,
                        revents: 0,
                    },
                ];
                let ts = libc::timespec {
                    tv_sec: wait.as_secs() as libc::time_t,
                    tv_nsec: wait.subsec_nanos() as libc::c_long,
                };
                // SAFETY: fds and ts are valid for the call.
                unsafe {
                    libc::ppoll(fds.as_mut_ptr(), 2, &ts, std::ptr::null());
                }
                let now = Instant::now();
                for (i, s) in socks.iter().enumerate() {
                    let late = delay + Duration::from_nanos(ex[i].load(Ordering::Relaxed));
                    while let Some(n) = s.recv(&mut buf) {
                        let mut hold = ho.lock().unwrap();
                        if let Some((min_len, more)) = hold[i]
                            && n >= min_len
                        {
                            hold[i] = None;
                            held[i] = Some((now + late + more, buf[..n].to_vec()));
                            continue;
                        }
                        queues[i].push_back((now + late, buf[..n].to_vec()));
                    }
                }
                let now = Instant::now();
                for i in 0..2 {
                    while queues[i].front().is_some_and(|(due, _)| *due <= now) {
                        let (_, f) = queues[i].pop_front().unwrap();
                        socks[1 - i].send(&f);
                    }
                    if held[i].as_ref().is_some_and(|(due, _)| *due <= now) {
                        let (_, f) = held[i].take().unwrap();
                        socks[1 - i].send(&f);
                    }
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(5))
            .expect("delay line did not start");
        Bridge {
            stop,
            extra,
            hold,
            thread,
        }
    }

    fn stop(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

// --- traffic ------------------------------------------------------------------------------

/// An echo server in a namespace: every connection gets its bytes back.
pub struct EchoServer {
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl EchoServer {
    pub fn start(ns: &Netns, bind: &str) -> EchoServer {
        let bind = bind.to_string();
        let listener = ns.enter(move || TcpListener::bind(&bind).expect("bind echo server"));
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        std::thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut c, _)) => {
                        let st = st.clone();
                        std::thread::spawn(move || {
                            c.set_nonblocking(false).ok();
                            c.set_nodelay(true).ok();
                            c.set_read_timeout(Some(Duration::from_millis(200))).ok();
                            let mut buf = [0u8; 65536];
                            while !st.load(Ordering::Relaxed) {
                                match c.read(&mut buf) {
                                    Ok(0) => break,
                                    Ok(n) => {
                                        if c.write_all(&buf[..n]).is_err() {
                                            break;
                                        }
                                    }
                                    Err(e)
                                        if matches!(
                                            e.kind(),
                                            std::io::ErrorKind::WouldBlock
                                                | std::io::ErrorKind::TimedOut
                                        ) => {}
                                    Err(_) => break,
                                }
                            }
                        });
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        EchoServer { addr, stop }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A client sending `size`-byte requests to an echo server every `gap`, over a new
/// connection every `per_conn` requests, recording each request's round trip as seen by
/// the application.
pub struct Client {
    stop: Arc<AtomicBool>,
    pub rtts: Arc<Mutex<Vec<Duration>>>,
    pub requests: Arc<AtomicU32>,
    thread: Option<JoinHandle<()>>,
}

impl Client {
    pub fn start(ns: &Netns, to: SocketAddr, size: usize, gap: Duration, per_conn: u32) -> Client {
        let stop = Arc::new(AtomicBool::new(false));
        let rtts = Arc::new(Mutex::new(Vec::new()));
        let requests = Arc::new(AtomicU32::new(0));
        let (st, r, q) = (stop.clone(), rtts.clone(), requests.clone());
        let thread = ns.spawn(move || {
            let msg = vec![b'x'; size];
            let mut buf = vec![0u8; size];
            'conns: while !st.load(Ordering::Relaxed) {
                let mut c = match TcpStream::connect_timeout(&to, Duration::from_secs(2)) {
                    Ok(c) => c,
                    Err(_) => {
                        std::thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                };
                c.set_nodelay(true).ok();
                c.set_read_timeout(Some(Duration::from_secs(2))).ok();
                for _ in 0..per_conn {
                    if st.load(Ordering::Relaxed) {
                        break 'conns;
                    }
                    let t = Instant::now();
                    if c.write_all(&msg).is_err() || c.read_exact(&mut buf).is_err() {
                        continue 'conns;
                    }
                    r.lock().unwrap().push(t.elapsed());
                    q.fetch_add(1, Ordering::Relaxed);
                    std::thread::sleep(gap);
                }
            }
        });
        Client {
            stop,
            rtts,
            requests,
            thread: Some(thread),
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }

    /// Median application round trip so far, in ms.
    pub fn median_ms(&self) -> f64 {
        let mut v: Vec<f64> = self
            .rtts
            .lock()
            .unwrap()
            .iter()
            .map(|d| d.as_secs_f64() * 1e3)
            .collect();
        assert!(!v.is_empty(), "the client completed no request");
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.stop();
    }
}

/// dumpcap capturing one interface of a namespace into a file (see [`Netns::dumpcap`]).
/// Its standard error stays open while it runs: dumpcap writes there until it exits.
pub struct Dumpcap(Child, std::process::ChildStderr);

impl Dumpcap {
    /// Stop the capture with SIGINT (dumpcap then writes out what it holds) and wait for it.
    pub fn stop(self) {}
}

/// Stopped when dropped too, so that a test that fails midway leaves no dumpcap running.
impl Drop for Dumpcap {
    fn drop(&mut self) {
        // SAFETY: signalling the dumpcap this value started, by its pid; it has not been
        // waited for, so the pid is still its own.
        unsafe {
            libc::kill(self.0.id() as i32, libc::SIGINT);
        }
        let _ = self.0.wait();
    }
}

impl Netns {
    /// Start dumpcap on `iface` of this namespace, writing to `pcap` with capture filter
    /// `filter`, and return once it says it is capturing (so no frame sent after is missed).
    pub fn dumpcap(&self, iface: &str, filter: &str, pcap: &std::path::Path) -> Dumpcap {
        let mut child = self
            .command("dumpcap")
            .args(["-q", "-i", iface, "-f", filter, "-w"])
            .arg(pcap)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("dumpcap");
        let mut err = child.stderr.take().unwrap();
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !String::from_utf8_lossy(&seen).contains("Capturing on") {
            assert_eq!(err.read(&mut byte).unwrap(), 1, "dumpcap stopped");
            seen.push(byte[0]);
        }
        Dumpcap(child, err)
    }
}
