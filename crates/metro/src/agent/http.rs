//! The agent's HTTP endpoint (`prometheus_listen`): a small HTTP/1.1 server on std sockets
//! and one poll(2) loop, generic over a handler (`sinks::prom` supplies `/metrics`).
//!
//! It is built for a port open to the network (the DaemonSet listens on `0.0.0.0:9464` and
//! its liveness probe scrapes it), so no client can hold it:
//! - every connection is non-blocking and served by the one loop: a slow client costs a slot,
//!   never the others' time;
//! - a connection has [`Limits::request_timeout`] from its accept to send a whole request
//!   head, then [`Limits::response_timeout`] to take the response; past either it is closed;
//! - a request head over [`Limits::max_head_bytes`] is answered 431 and closed;
//! - at most [`Limits::max_connections`] are open, at most [`Limits::max_per_peer`] from one
//!   address. One more closes a connection of the address holding the most (of its own
//!   address when that is at its own cap): the oldest still sending its request, else the
//!   oldest still taking its answer. So a flood only ever pushes out connections of addresses
//!   holding as many as the flood's heaviest: a scraper on its own address (one connection at
//!   a time) is never pushed out by a flood holding two or more connections from any of its
//!   addresses, whatever the timing. Two cases still depend on the scraper's head arriving
//!   soon after its connect (a real scraper sends it at once): a scraper sharing the flood's
//!   address (the flood's next `max_per_peer` connections reach it), and a flood spread one
//!   connection per address over `max_connections` addresses or more (every address then
//!   holds the most, and the oldest of all goes: its next `max_connections` reach it).
//!
//! One request per connection (`Connection: close`), GET and HEAD only: all a scraper needs.
//! The handler runs on the loop; it should be quick or memoise (the Prometheus plug reuses a
//! render for a second, so a flood of requests costs one render a second).
//!
//! Memory: per connection a head buffer of at most `max_head_bytes` + 1 bytes; bodies are the
//! handler's, shared by reference count.
//!
//! Why not a crate: tiny_http serves each connection from a thread pool with blocking reads
//! and has no deadline for a whole request, hyper/axum need an async runtime, and the loop
//! below is ~450 lines whose every bound is visible and tested.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// What one client may cost the server.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Open connections at most (each is one file descriptor and a head buffer).
    pub max_connections: usize,
    /// Open connections from one address at most.
    pub max_per_peer: usize,
    /// From accept to the end of the request head.
    pub request_timeout: Duration,
    /// From the end of the request head to the last byte of the response handed to the kernel.
    pub response_timeout: Duration,
    /// The request line and headers, at most.
    pub max_head_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 256,
            max_per_peer: 64,
            request_timeout: Duration::from_secs(2),
            // Prometheus's default scrape_timeout.
            response_timeout: Duration::from_secs(10),
            max_head_bytes: 8192,
        }
    }
}

/// A request head.
#[derive(Debug)]
pub struct Request {
    pub method: String,
    /// The target without its query.
    pub path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    /// The first header named `name` (any case), trimmed.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Parse a head (up to and including its blank line). None: not HTTP.
    fn parse(head: &[u8]) -> Option<Request> {
        let text = std::str::from_utf8(head).ok()?;
        let mut lines = text.lines();
        let mut first = lines.next()?.split(' ');
        let (method, target, version) = (first.next()?, first.next()?, first.next()?);
        if first.next().is_some()
            || method.is_empty()
            || !method.bytes().all(|b| b.is_ascii_uppercase())
            || !version.starts_with("HTTP/1.")
        {
            return None;
        }
        let mut headers = Vec::new();
        for l in lines.take_while(|l| !l.is_empty()) {
            let (n, v) = l.split_once(':')?;
            if n.is_empty() || n.contains(char::is_whitespace) {
                return None;
            }
            headers.push((n.to_string(), v.trim().to_string()));
        }
        Some(Request {
            method: method.to_string(),
            path: target.split('?').next().unwrap_or("").to_string(),
            headers,
        })
    }
}

/// A response: a status, a content type and a body (shared, so that one render can answer
/// many clients).
#[derive(Clone, Debug)]
pub struct Response {
    pub status: u16,
    pub content_type: &'static str,
    pub body: Arc<Vec<u8>>,
}

impl Response {
    pub fn ok(content_type: &'static str, body: Arc<Vec<u8>>) -> Response {
        Response {
            status: 200,
            content_type,
            body,
        }
    }

    pub fn text(status: u16, body: &str) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: Arc::new(body.as_bytes().to_vec()),
        }
    }

    pub fn not_found() -> Response {
        Response::text(404, "not found\n")
    }
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        404 => "Not Found",
        405 => "Method Not Allowed",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "",
    }
}

/// The server thread; stopped or dropped, it closes every connection and ends.
pub struct Server {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

/// Connections the kernel may queue for accept.
const LISTEN_BACKLOG: libc::c_int = 4096;
/// How often the loop looks at the stop flag when nothing happens.
const IDLE_WAKE: Duration = Duration::from_millis(100);
/// How long the listener is left alone after accept failed for lack of descriptors.
const EMFILE_PAUSE: Duration = Duration::from_millis(50);

impl Server {
    /// Bind `addr` and serve `handler` on a thread named `name` until stopped.
    pub fn start<H>(addr: SocketAddr, name: &str, limits: Limits, handler: H) -> io::Result<Server>
    where
        H: FnMut(&Request) -> Response + Send + 'static,
    {
        let listener = TcpListener::bind(addr)?;
        // std listens with a backlog of 128: a burst of connections while the loop is off
        // the CPU fills it, and the kernel then drops SYNs, a scrape's among them (retried
        // after 1 s, the kubelet probe's whole timeout). Listening again raises it (the
        // kernel caps it at net.core.somaxconn).
        // SAFETY: listen(2) on the listener's own descriptor.
        if unsafe { libc::listen(listener.as_raw_fd(), LISTEN_BACKLOG) } != 0 {
            return Err(io::Error::last_os_error());
        }
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || Loop::new(listener, limits, handler).run(&st))?;
        Ok(Server {
            addr,
            stop,
            thread: Some(thread),
        })
    }

    /// The bound address (the port chosen when 0 was asked).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

enum State {
    /// Reading the request head.
    Head(Vec<u8>),
    /// Writing the response: the status line and headers, then the body from `off`.
    Reply {
        head: Vec<u8>,
        body: Option<Arc<Vec<u8>>>,
        off: usize,
    },
}

struct Conn {
    peer: std::net::IpAddr,
    stream: TcpStream,
    state: State,
    deadline: Instant,
}

/// What the loop cut, logged at most once a minute.
#[derive(Default)]
struct Cut {
    deadline: u64,
    evicted: u64,
    too_large: u64,
    since_log: Option<Instant>,
}

struct Loop<H> {
    listener: TcpListener,
    limits: Limits,
    handler: H,
    conns: Vec<Conn>,
    listen_paused_until: Option<Instant>,
    cut: Cut,
    /// Open connections by address, counted when the cap is reached (see `count_peers`).
    peer_count: HashMap<std::net::IpAddr, usize>,
}

enum Step {
    Keep,
    Close,
}

impl<H: FnMut(&Request) -> Response> Loop<H> {
    fn new(listener: TcpListener, limits: Limits, handler: H) -> Self {
        Loop {
            listener,
            limits,
            handler,
            conns: Vec::new(),
            listen_paused_until: None,
            cut: Cut::default(),
            peer_count: HashMap::new(),
        }
    }

    fn run(&mut self, stop: &AtomicBool) {
        let mut fds: Vec<libc::pollfd> = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            let before = self.conns.len();
            self.conns.retain(|c| c.deadline > now);
            self.cut.deadline += (before - self.conns.len()) as u64;
            self.log_cuts(now);
            if self.listen_paused_until.is_some_and(|t| t <= now) {
                self.listen_paused_until = None;
            }

            let wait = self
                .conns
                .iter()
                .map(|c| c.deadline.saturating_duration_since(now))
                .chain(
                    self.listen_paused_until
                        .map(|t| t.saturating_duration_since(now)),
                )
                .fold(IDLE_WAKE, Duration::min);
            fds.clear();
            fds.push(libc::pollfd {
                fd: self.listener.as_raw_fd(),
                events: if self.listen_paused_until.is_some() {
                    0
                } else {
                    libc::POLLIN
                },
                revents: 0,
            });
            for c in &self.conns {
                fds.push(libc::pollfd {
                    fd: c.stream.as_raw_fd(),
                    events: match c.state {
                        State::Head(_) => libc::POLLIN,
                        State::Reply { .. } => libc::POLLOUT,
                    },
                    revents: 0,
                });
            }
            // Round up: a deadline 0.4 ms away must not become a busy loop of 0 ms waits.
            let ms = wait.as_micros().div_ceil(1000) as libc::c_int;
            // SAFETY: `fds` is a valid array of `fds.len()` pollfds that outlives the call.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
            if n <= 0 {
                continue;
            }
            // Connections first (in accept order), then new ones: a scraper whose request has
            // arrived is answered before a burst of accepts could push it out.
            let now = Instant::now();
            let mut i = 0;
            let mut k = 1;
            while i < self.conns.len() {
                let rev = fds[k].revents;
                k += 1;
                if rev == 0 {
                    i += 1;
                    continue;
                }
                match self.progress(i, now) {
                    Step::Keep => i += 1,
                    Step::Close => {
                        self.conns.remove(i);
                    }
                }
            }
            if fds[0].revents != 0 {
                self.accept(now);
            }
        }
    }

    /// Accept pending connections, at most half the smaller cap a round: a newcomer then
    /// sees the next round's reads before that round's accepts can push it out, and a
    /// scraper's request (sent as soon as it connects) is read before it becomes the oldest.
    fn accept(&mut self, now: Instant) {
        let batch = self
            .limits
            .max_connections
            .min(self.limits.max_per_peer)
            .div_ceil(2);
        for _ in 0..batch {
            match self.listener.accept() {
                Ok((s, peer)) => {
                    if s.set_nonblocking(true).is_err() {
                        continue;
                    }
                    let _ = s.set_nodelay(true);
                    let ip = peer.ip();
                    let same = self.conns.iter().filter(|c| c.peer == ip).count();
                    let victim = if same >= self.limits.max_per_peer {
                        self.oldest(|c| c.peer == ip)
                    } else if self.conns.len() >= self.limits.max_connections {
                        let most = self.count_peers();
                        let count = &self.peer_count;
                        self.oldest(|c| count.get(&c.peer) == Some(&most))
                    } else {
                        None
                    };
                    if let Some(i) = victim {
                        self.conns.remove(i);
                        self.cut.evicted += 1;
                    }
                    self.conns.push(Conn {
                        peer: ip,
                        stream: s,
                        state: State::Head(Vec::new()),
                        deadline: now + self.limits.request_timeout,
                    });
                    // Its request may be here already.
                    if let Step::Close = self.progress(self.conns.len() - 1, now) {
                        self.conns.pop();
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e)
                    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
                        || e.kind() == io::ErrorKind::OutOfMemory =>
                {
                    // The listener stays readable: leave it a moment rather than spin.
                    tracing::debug!("http: accept: {e}");
                    self.listen_paused_until = Some(now + EMFILE_PAUSE);
                    return;
                }
                // A connection reset before accept, and the like: the next one.
                Err(e) => tracing::debug!("http: accept: {e}"),
            }
        }
    }

    /// Count the open connections by address into `peer_count` (reused: no allocation once
    /// it has seen the cap); the most any address holds.
    fn count_peers(&mut self) -> usize {
        self.peer_count.clear();
        let mut most = 0;
        for c in &self.conns {
            let n = self.peer_count.entry(c.peer).or_default();
            *n += 1;
            most = most.max(*n);
        }
        most
    }

    /// The connection to close for a newcomer among those `pick` selects: the oldest still
    /// sending its request, else the oldest taking its answer (connections are in accept
    /// order).
    fn oldest(&self, pick: impl Fn(&Conn) -> bool) -> Option<usize> {
        let sending = |c: &Conn| matches!(c.state, State::Head(_));
        self.conns
            .iter()
            .position(|c| sending(c) && pick(c))
            .or_else(|| self.conns.iter().position(&pick))
    }

    /// Read or write what connection `i` is ready for.
    fn progress(&mut self, i: usize, now: Instant) -> Step {
        let max = self.limits.max_head_bytes;
        let c = &mut self.conns[i];
        if let State::Head(buf) = &mut c.state {
            let mut chunk = [0u8; 4096];
            let end = loop {
                // One byte past the bound is enough to know it is exceeded.
                let room = (max + 1 - buf.len()).min(chunk.len());
                match c.stream.read(&mut chunk[..room]) {
                    Ok(0) => return Step::Close,
                    Ok(n) => {
                        let from = buf.len().saturating_sub(3);
                        buf.extend_from_slice(&chunk[..n]);
                        if let Some(e) = head_end(&buf[from..]) {
                            break Some(from + e);
                        }
                        if buf.len() > max {
                            break None;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Keep,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(_) => return Step::Close,
                }
            };
            let (resp, head_only) = match end {
                None => {
                    self.cut.too_large += 1;
                    (Response::text(431, "request head too large\n"), false)
                }
                Some(e) => match Request::parse(&buf[..e]) {
                    None => (Response::text(400, "bad request\n"), false),
                    Some(r) if r.method == "GET" || r.method == "HEAD" => {
                        // A handler that panics answers 500; the endpoint stays up.
                        let h = &mut self.handler;
                        let resp = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| h(&r)))
                            .unwrap_or_else(|_| Response::text(500, "internal error\n"));
                        (resp, r.method == "HEAD")
                    }
                    Some(_) => (Response::text(405, "only GET and HEAD\n"), false),
                },
            };
            let allow = if resp.status == 405 {
                "Allow: GET, HEAD\r\n"
            } else {
                ""
            };
            let head = format!(
                "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\n{allow}Connection: close\r\n\r\n",
                resp.status,
                reason(resp.status),
                resp.content_type,
                resp.body.len()
            );
            c.state = State::Reply {
                head: head.into_bytes(),
                body: (!head_only).then_some(resp.body),
                off: 0,
            };
            c.deadline = now + self.limits.response_timeout;
        }
        let State::Reply { head, body, off } = &mut c.state else {
            return Step::Keep;
        };
        loop {
            let hl = head.len();
            let rest: &[u8] = if *off < hl {
                &head[*off..]
            } else {
                match body {
                    Some(b) if *off - hl < b.len() => &b[*off - hl..],
                    _ => {
                        // All handed to the kernel: close our side, it delivers the rest.
                        let _ = c.stream.shutdown(std::net::Shutdown::Write);
                        return Step::Close;
                    }
                }
            };
            match c.stream.write(rest) {
                Ok(0) => return Step::Close,
                Ok(n) => *off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Keep,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Step::Close,
            }
        }
    }

    fn log_cuts(&mut self, now: Instant) {
        let c = &mut self.cut;
        if c.deadline + c.evicted + c.too_large == 0 {
            return;
        }
        if c.since_log
            .is_some_and(|t| now - t < Duration::from_secs(60))
        {
            return;
        }
        tracing::warn!(
            "http: closed {} connection(s) past their deadline, {} for a newer one at the \
             cap of {} ({} from one address), {} with a request head over {} bytes",
            c.deadline,
            c.evicted,
            self.limits.max_connections,
            self.limits.max_per_peer,
            c.too_large,
            self.limits.max_head_bytes
        );
        *c = Cut {
            since_log: Some(now),
            ..Cut::default()
        };
    }
}

/// Where a request head ends (after its blank line), if it does within `b`.
fn head_end(b: &[u8]) -> Option<usize> {
    (0..b.len()).find_map(|i| {
        if b[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if b[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heads() {
        let r =
            Request::parse(b"GET /metrics?x=1 HTTP/1.1\r\nHost: a\r\nAccept:  text/plain \r\n\r\n")
                .unwrap();
        assert_eq!((r.method.as_str(), r.path.as_str()), ("GET", "/metrics"));
        assert_eq!(r.header("accept"), Some("text/plain"));
        assert_eq!(r.header("x"), None);
        for bad in [
            &b"GET /metrics\r\n\r\n"[..],
            b"GET  /metrics HTTP/1.1\r\n\r\n",
            b"get / HTTP/1.1\r\n\r\n",
            b"GET / HTTP/2\r\n\r\n",
            b"GET / HTTP/1.1\r\nno colon\r\n\r\n",
            b"GET / HTTP/1.1\r\nA b: c\r\n\r\n",
            b"GET / HTTP/1.1\r\n\xff: c\r\n\r\n",
        ] {
            assert!(
                Request::parse(bad).is_none(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        assert_eq!(head_end(b"GET / HTTP/1.1\r\n\r\nrest"), Some(18));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: a\r\n"), None);
    }
}
