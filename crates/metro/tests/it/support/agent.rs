//! Running `metro run` in a test and reading what it sends: the process (inside a
//! namespace, stderr kept in a file), DogStatsD receivers on UDP and Unix datagram sockets,
//! and an independent parser of the DogStatsD line format.

#![allow(dead_code)]

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::netns::Netns;

static DIRS: AtomicU32 = AtomicU32::new(0);

/// A scratch directory, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let n = DIRS.fetch_add(1, Ordering::SeqCst);
        let p = std::env::temp_dir().join(format!("metro-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }
    pub fn path(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
    pub fn write(&self, name: &str, content: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

impl std::ops::Deref for TempDir {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The `metro` binary under test (Cargo builds it for the integration tests).
pub const METRO: &str = env!("CARGO_BIN_EXE_metro");

/// `metro ARGS` run to completion (outside any namespace).
pub fn metro(args: &[&str]) -> std::process::Output {
    Command::new(METRO)
        .args(args)
        .output()
        .expect("running metro")
}

/// A `metro ARGS` command (outside any namespace).
pub fn metro_command(args: &[&str]) -> Command {
    let mut c = Command::new(METRO);
    c.args(args);
    c.stdin(Stdio::null());
    c
}

/// A `metro` command line run to completion (outside any namespace): status, stdout, stderr.
pub fn metro_output(args: &[&str]) -> (ExitStatus, String, String) {
    output(metro_command(args))
}

/// Run a command to completion: status, stdout, stderr.
pub fn output(mut c: Command) -> (ExitStatus, String, String) {
    let out = c.output().expect("run metro");
    (
        out.status,
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A running `metro`.
pub struct Agent {
    child: Option<Child>,
    pub stderr_path: PathBuf,
}

impl Agent {
    /// Start `metro ARGS` inside `ns` (via `ip netns exec`), stderr to `stderr_path`.
    pub fn start(ns: &Netns, args: &[&str], stderr_path: &Path) -> Agent {
        Agent::start_env(ns, args, stderr_path, &[])
    }

    /// `metro run --config CONFIG` inside `ns`, stderr to `dir`'s `stderr`.
    pub fn run_config(ns: &Netns, config: &Path, dir: &TempDir) -> Agent {
        let config = config.to_str().unwrap();
        Agent::start(ns, &["run", "--config", config], &dir.path("stderr"))
    }

    /// `metro run --config CONFIG --samples SAMPLES` inside `ns`, stderr to `stderr_path`.
    pub fn run_samples(ns: &Netns, config: &Path, samples: &Path, stderr_path: &Path) -> Agent {
        let (config, samples) = (config.to_str().unwrap(), samples.to_str().unwrap());
        let args = ["run", "--config", config, "--samples", samples];
        Agent::start(ns, &args, stderr_path)
    }

    /// [`Agent::start`] with extra environment variables.
    pub fn start_env(
        ns: &Netns,
        args: &[&str],
        stderr_path: &Path,
        vars: &[(&str, &str)],
    ) -> Agent {
        let mut c = ns.command(METRO);
        c.envs(vars.iter().copied());
        c.args(args);
        let err = std::fs::File::create(stderr_path).unwrap();
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        let child = c.spawn().expect("spawn metro");
        Agent {
            child: Some(child),
            stderr_path: stderr_path.to_path_buf(),
        }
    }

    /// Start `c` (a metro command line, however wrapped), stderr to `stderr_path`.
    pub fn spawn(mut c: Command, stderr_path: &Path) -> Agent {
        let err = std::fs::File::create(stderr_path).unwrap();
        c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(err);
        let child = c.spawn().expect("spawn metro");
        Agent {
            child: Some(child),
            stderr_path: stderr_path.to_path_buf(),
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child.
        unsafe {
            libc::kill(self.pid(), sig);
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGTERM; it must exit 0 within `timeout` (a failure shows its log).
    pub fn terminate(&mut self, timeout: Duration) {
        self.signal(libc::SIGTERM);
        let st = self.wait(timeout);
        assert!(st.success(), "{st}\n{}", self.log());
    }

    /// Whether it is still running.
    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().unwrap().try_wait(), Ok(None))
    }

    /// Wait for it to exit, at most `timeout`.
    pub fn wait(&mut self, timeout: Duration) -> ExitStatus {
        let end = Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.as_mut().unwrap().try_wait().unwrap() {
                return s;
            }
            if Instant::now() > end {
                panic!(
                    "metro did not exit within {timeout:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Poll the log until it contains `needle`.
    pub fn wait_log(&mut self, needle: &str, timeout: Duration) {
        let end = Instant::now() + timeout;
        while !self.log().contains(needle) {
            if Instant::now() > end {
                panic!("metro's log never said {needle:?}; log:\n{}", self.log());
            }
            if !self.alive() {
                panic!(
                    "metro exited before saying {needle:?}; log:\n{}",
                    self.log()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if matches!(c.try_wait(), Ok(None)) {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

// --- DogStatsD ------------------------------------------------------------------------------

/// One metric line, parsed independently of metro's own encoder.
#[derive(Clone, Debug, PartialEq)]
pub struct Metric {
    pub name: String,
    pub value: f64,
    pub ty: String,
    pub tags: Vec<String>,
    /// The line's sample rate (`|@rate`, else 1).
    pub rate: f64,
    /// When the datagram arrived.
    pub at: Instant,
}

impl Metric {
    pub fn tag(&self, key: &str) -> Option<&str> {
        let prefix = format!("{key}:");
        self.tags
            .iter()
            .find_map(|t| t.strip_prefix(prefix.as_str()))
    }
}

/// Parse one datagram: `name:value|type[|@rate][|#tags]` lines joined by `\n`; a
/// distribution (`d`) may carry several values (`name:v1:v2:...|d`), one [`Metric`] each.
pub fn parse(datagram: &str, at: Instant) -> Vec<Metric> {
    datagram
        .split('\n')
        .flat_map(|line| {
            let mut parts = line.split('|');
            let nv = parts.next().unwrap();
            let colon = nv
                .find(':')
                .unwrap_or_else(|| panic!("no value in {line:?}"));
            let (name, values) = (&nv[..colon], &nv[colon + 1..]);
            let values: Vec<f64> = values
                .split(':')
                .map(|v| {
                    v.parse()
                        .unwrap_or_else(|_| panic!("bad value in {line:?}"))
                })
                .collect();
            let ty = parts
                .next()
                .unwrap_or_else(|| panic!("no type in {line:?}"))
                .to_string();
            assert!(
                ty == "g" || ty == "c" || ty == "d",
                "unexpected type in {line:?}"
            );
            assert!(values.len() == 1 || ty == "d", "several values in {line:?}");
            let mut tags = Vec::new();
            let mut rate = 1.0;
            for p in parts {
                if let Some(r) = p.strip_prefix('@') {
                    rate = r
                        .parse()
                        .unwrap_or_else(|_| panic!("bad sample rate in {line:?}"));
                    assert!(ty == "d" && rate > 0.0 && rate <= 1.0, "{line:?}");
                    continue;
                }
                let t = p
                    .strip_prefix('#')
                    .unwrap_or_else(|| panic!("unexpected field in {line:?}"));
                tags.extend(t.split(',').map(String::from));
            }
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '_'),
                "{line:?}"
            );
            values
                .into_iter()
                .map(|value| Metric {
                    name: name.to_string(),
                    value,
                    ty: ty.clone(),
                    tags: tags.clone(),
                    rate,
                    at,
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

enum Sock {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

/// A DogStatsD receiver collecting every metric, with the largest datagram seen.
pub struct Statsd {
    pub metrics: Arc<Mutex<Vec<Metric>>>,
    /// Largest datagram (bytes) and most metric lines in one datagram.
    pub max_datagram: Arc<Mutex<usize>>,
    pub max_lines: Arc<Mutex<usize>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Statsd {
    pub fn udp(s: UdpSocket) -> Statsd {
        Self::start(Sock::Udp(s))
    }
    pub fn unix(s: UnixDatagram) -> Statsd {
        Self::start(Sock::Unix(s))
    }

    fn start(s: Sock) -> Statsd {
        let metrics = Arc::new(Mutex::new(Vec::new()));
        let max_datagram = Arc::new(Mutex::new(0));
        let max_lines = Arc::new(Mutex::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (m, mx, ml, st) = (
            metrics.clone(),
            max_datagram.clone(),
            max_lines.clone(),
            stop.clone(),
        );
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 65536];
            match &s {
                Sock::Udp(u) => u.set_read_timeout(Some(Duration::from_millis(50))).unwrap(),
                Sock::Unix(u) => u.set_read_timeout(Some(Duration::from_millis(50))).unwrap(),
            }
            let take = |n: usize, buf: &[u8]| {
                let text = std::str::from_utf8(&buf[..n]).expect("datagram is not UTF-8");
                let parsed = parse(text, Instant::now());
                let mut g = mx.lock().unwrap();
                *g = (*g).max(n);
                let mut l = ml.lock().unwrap();
                *l = (*l).max(parsed.len());
                m.lock().unwrap().extend(parsed);
            };
            while !st.load(Ordering::Relaxed) {
                let r = match &s {
                    Sock::Udp(u) => u.recv(&mut buf),
                    Sock::Unix(u) => u.recv(&mut buf),
                };
                if let Ok(n) = r {
                    take(n, &buf);
                }
            }
            // Stopped: what is already queued is still read, up to an empty queue (a
            // datagram sent before the stop is never lost to it).
            match &s {
                Sock::Udp(u) => u.set_nonblocking(true).unwrap(),
                Sock::Unix(u) => u.set_nonblocking(true).unwrap(),
            }
            while let Ok(n) = match &s {
                Sock::Udp(u) => u.recv(&mut buf),
                Sock::Unix(u) => u.recv(&mut buf),
            } {
                take(n, &buf);
            }
        });
        Statsd {
            metrics,
            max_datagram,
            max_lines,
            stop,
            thread: Some(thread),
        }
    }

    pub fn all(&self) -> Vec<Metric> {
        self.metrics.lock().unwrap().clone()
    }

    /// Everything received, once every datagram already sent has been read: for after the
    /// agent exited (its last flush is queued on the socket by then). Stops the receiver.
    pub fn finish(&mut self) -> Vec<Metric> {
        self.stop();
        self.all()
    }

    /// Poll until `pred` holds over everything received, at most `timeout`: whether it
    /// came to hold (the caller asserts what it needs, with its own message).
    pub fn wait_until(&self, timeout: Duration, pred: impl Fn(&[Metric]) -> bool) -> bool {
        let end = Instant::now() + timeout;
        loop {
            if pred(&self.all()) {
                return true;
            }
            if Instant::now() > end {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits (at most 10 s) until `agent` has sent a flush of an interval that began after
    /// `since`: a datagram received more than one `flush_interval` after it. Everything the
    /// agent captured before `since` is then in what this receiver holds.
    pub fn wait_flush_after(&self, agent: &mut Agent, since: Instant, flush_interval: Duration) {
        self.wait_for(
            agent,
            Duration::from_secs(10),
            "a flush after the traffic",
            |m| m.iter().any(|x| x.at > since + flush_interval),
        );
    }

    /// Poll until `pred` holds over everything received; panics (with what was received
    /// and the agent's log) after `timeout`.
    pub fn wait_for(
        &self,
        agent: &mut Agent,
        timeout: Duration,
        what: &str,
        pred: impl Fn(&[Metric]) -> bool,
    ) -> Vec<Metric> {
        let end = Instant::now() + timeout;
        loop {
            let all = self.all();
            if pred(&all) {
                return all;
            }
            if Instant::now() > end || !agent.alive() {
                let names: std::collections::BTreeSet<String> = all
                    .iter()
                    .map(|m| format!("{} {:?}", m.name, m.tags))
                    .collect();
                panic!(
                    "timed out waiting for {what} ({} metrics received: {:#?})\nmetro's log:\n{}",
                    all.len(),
                    names,
                    agent.log()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Statsd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The sum of the values of the metrics named `name` that `pred` keeps.
pub fn sum(all: &[Metric], name: &str, pred: impl Fn(&Metric) -> bool) -> f64 {
    all.iter()
        .filter(|m| m.name == name && pred(m))
        .map(|m| m.value)
        .sum()
}

/// `init_config` lines for DogStatsD on UDP 127.0.0.1:8125 (in the agent's namespace).
pub const UDP_STATSD: &str = "  statsd_ip: 127.0.0.1\n  statsd_port: 8125\n";

/// A YAML flow list of single-quoted strings: `['a', 'b']`.
pub fn yaml_list(v: &[&str]) -> String {
    let quoted: Vec<String> = v.iter().map(|s| format!("'{s}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// A DogStatsD receiver on UDP 127.0.0.1:8125 inside `ns` (where [`UDP_STATSD`] points).
pub fn udp_statsd(ns: &Netns) -> Statsd {
    Statsd::udp(ns.enter(|| UdpSocket::bind("127.0.0.1:8125").unwrap()))
}

/// Metrics named `name`.
pub fn named<'a>(all: &'a [Metric], name: &str) -> Vec<&'a Metric> {
    all.iter().filter(|m| m.name == name).collect()
}

/// HTTP GET from the calling thread's namespace: (status, body), a chunked body decoded
/// (Prometheus' API answers large bodies chunked); None if the server does not answer.
pub fn http_status(addr: std::net::SocketAddr, path: &str) -> Option<(u16, String)> {
    use std::io::{Read, Write};
    let mut c = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).ok()?;
    c.set_read_timeout(Some(Duration::from_secs(10))).ok();
    write!(
        c,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut s = Vec::new();
    c.read_to_end(&mut s).ok()?;
    let s = String::from_utf8_lossy(&s).into_owned();
    let (head, body) = s.split_once("\r\n\r\n")?;
    let code = head.split(' ').nth(1)?.parse().ok()?;
    if !head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked")
    {
        return Some((code, body.to_string()));
    }
    let (mut out, mut rest) = (String::new(), body);
    while let Some((len, tail)) = rest.split_once("\r\n") {
        let n = usize::from_str_radix(len.trim(), 16).ok()?;
        if n == 0 {
            break;
        }
        out.push_str(tail.get(..n)?);
        rest = tail.get(n + 2..)?;
    }
    Some((code, out))
}

/// HTTP GET on a plain TCP connection; returns the body. `ns` joins the namespace first.
pub fn http_get(ns: &Netns, addr: &str, path: &str) -> String {
    let (addr, path) = (addr.to_string(), path.to_string());
    ns.enter(move || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(&addr).expect("connect to the metrics endpoint");
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: metro\r\nAccept: */*\r\n\r\n"
        )
        .unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        let (head, body) = s.split_once("\r\n\r\n").expect("HTTP response");
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        body.to_string()
    })
}

/// `promtool check metrics` on an exposition `body` (Debian package `prometheus`), which
/// must pass; the file is written in `dir`.
pub fn promtool_check_metrics(dir: &TempDir, body: &str) {
    let file = dir.write("metrics.txt", body);
    let out = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(&file).unwrap())
        .output()
        .expect("run promtool (Debian package `prometheus`)");
    assert!(
        out.status.success(),
        "promtool check metrics failed: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
