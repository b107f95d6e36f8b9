//! The `/metrics` endpoint (`agent::http` serving `sinks::prom`) against hostile clients made
//! here on loopback: slowloris clients, floods of idle connections past the cap, oversized
//! and never-ending request heads. Through all of it a plain scrape with a one-second
//! deadline (`curl -m 1`) must succeed every time: the DaemonSet's liveness probe scrapes it.

use crate::support;

use std::io::{ErrorKind, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::fd::FromRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use metro::agent::http::{Limits, Response, Server};
use metro::agent::sinks::prom::Prom;
use metro::agent::sinks::prom::http::PromServer;

/// The whole scrape: connect, request, the complete response.
const SCRAPE_DEADLINE: Duration = Duration::from_secs(1);

fn server() -> PromServer {
    raise_fd_limit();
    PromServer::start("127.0.0.1:0".parse().unwrap(), Arc::new(Prom::new())).unwrap()
}

/// Hundreds of client sockets plus the server's: lift the soft descriptor limit to the hard one.
fn raise_fd_limit() {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: a valid rlimit to fill, then to set.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
        }
    }
}

/// One scrape within [`SCRAPE_DEADLINE`], checked whole: status, Content-Length against the
/// body, and the exposition's families. Err: what went wrong.
fn scrape(addr: SocketAddr) -> Result<Duration, String> {
    let t0 = Instant::now();
    let c =
        TcpStream::connect_timeout(&addr, SCRAPE_DEADLINE).map_err(|e| format!("connect: {e}"))?;
    finish_scrape(c, t0)
}

/// The rest of a scrape on connection `c`, begun at `t0`: the request, the whole answer, checked.
fn finish_scrape(mut c: TcpStream, t0: Instant) -> Result<Duration, String> {
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: probe\r\nUser-Agent: kube-probe/1.30\r\nAccept: */*\r\n\r\n")
        .map_err(|e| format!("write: {e}"))?;
    let mut got = Vec::new();
    let mut chunk = [0u8; 65536];
    loop {
        let left = SCRAPE_DEADLINE
            .checked_sub(t0.elapsed())
            .ok_or_else(|| format!("deadline passed with {} bytes", got.len()))?;
        c.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match c.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(format!("read after {} bytes: {e}", got.len())),
        }
    }
    let text = String::from_utf8(got).map_err(|e| e.to_string())?;
    let (head, body) = text.split_once("\r\n\r\n").ok_or("no head")?;
    if !head.starts_with("HTTP/1.1 200 OK\r\n") {
        return Err(format!("status: {head}"));
    }
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("Content-Length: "))
        .and_then(|v| v.parse().ok())
        .ok_or("no Content-Length")?;
    if len != body.len() || !body.contains("# TYPE metro_samples_total counter") {
        return Err(format!("body of {} bytes, {len} announced", body.len()));
    }
    Ok(t0.elapsed())
}

/// Scrape every `every` until `stop`; every failure is kept.
fn scrape_loop(
    addr: SocketAddr,
    every: Duration,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<(u32, Vec<String>, Duration)> {
    std::thread::spawn(move || {
        let (mut ok, mut failed, mut worst) = (0, Vec::new(), Duration::ZERO);
        while !stop.load(Ordering::Relaxed) {
            match scrape(addr) {
                Ok(d) => {
                    ok += 1;
                    worst = worst.max(d);
                }
                Err(e) => failed.push(e),
            }
            std::thread::sleep(every);
        }
        (ok, failed, worst)
    })
}

/// Wait until the server closes `c` (EOF or reset), at most `limit`. The time it took.
fn closed_within(c: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let t0 = Instant::now();
    let mut b = [0u8; 4096];
    loop {
        let left = limit.checked_sub(t0.elapsed())?;
        c.set_read_timeout(Some(left.max(Duration::from_millis(1))))
            .unwrap();
        match c.read(&mut b) {
            Ok(0) => return Some(t0.elapsed()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                if t0.elapsed() >= limit {
                    return None;
                }
            }
            Err(_) => return Some(t0.elapsed()),
        }
    }
}

#[test]
fn scrapes_succeed_through_slowloris_clients() {
    let _load = support::timed();
    let srv = server();
    let addr = srv.addr;
    let stop = Arc::new(AtomicBool::new(false));
    // 50 clients, each re-connecting whenever cut, sending a request head one byte every
    // 1.5 s: each connection must be cut at the request deadline, long before its head is done.
    let cuts = Arc::new(std::sync::Mutex::new(Vec::new()));
    let mut lorises = Vec::new();
    for _ in 0..50 {
        let (stop, cuts) = (stop.clone(), cuts.clone());
        lorises.push(std::thread::spawn(move || {
            let head = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Pad: aaaaaaaaaaaaaaaa\r\n\r\n";
            while !stop.load(Ordering::Relaxed) {
                let Ok(mut c) = TcpStream::connect(addr) else {
                    continue;
                };
                let t0 = Instant::now();
                for (i, b) in head.iter().enumerate() {
                    assert!(
                        i < 10,
                        "a slowloris connection still open after {:?}",
                        t0.elapsed()
                    );
                    if c.write_all(&[*b]).is_err() {
                        break;
                    }
                    // Waiting for the next byte's time: closed meanwhile?
                    if closed_within(&mut c, Duration::from_millis(1500)).is_some() {
                        cuts.lock().unwrap().push(t0.elapsed());
                        break;
                    }
                    if stop.load(Ordering::Relaxed) {
                        return;
                    }
                }
            }
        }));
    }
    let scraper = scrape_loop(addr, Duration::from_millis(100), stop.clone());
    std::thread::sleep(Duration::from_secs(8));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, worst) = scraper.join().unwrap();
    for l in lorises {
        l.join().unwrap();
    }
    let cuts = cuts.lock().unwrap();
    let last = cuts.iter().max().copied().unwrap_or_default();
    eprintln!(
        "{ok} scrapes, worst {worst:?}; {} slowloris connections cut, the last after {last:?}",
        cuts.len()
    );
    assert!(failed.is_empty(), "failed scrapes: {failed:?}");
    assert!(ok >= 30, "only {ok} scrapes in 8 s");
    // Each of the 50 was cut at least once in 8 s, each at the 2 s deadline (not before, and
    // after it only by the loop's scheduling).
    let deadline = Limits::default().request_timeout;
    assert!(cuts.len() >= 50, "{}", cuts.len());
    for d in cuts.iter() {
        assert!(
            *d >= deadline - Duration::from_millis(100) && *d < deadline + Duration::from_secs(1),
            "cut after {d:?}"
        );
    }
}

#[test]
fn scrapes_succeed_through_a_flood_of_idle_connections() {
    let _load = support::timed();
    let srv = server();
    let addr = srv.addr;
    let Limits {
        max_connections: cap,
        max_per_peer: per,
        ..
    } = Limits::default();
    let stop = Arc::new(AtomicBool::new(false));
    // Idle connections opened without pause and held (never a byte sent) from 8 addresses
    // other than the scraper's, 3x the cap at a time: each address passes its own cap and
    // together they pass the server's, so both evictions run all the time. The oldest are
    // let go once 3x the cap are held, which keeps the flood going for the whole run.
    let sources: Vec<Ipv4Addr> = (0..8).map(|k| Ipv4Addr::new(127, 0, 0, 2 + k)).collect();
    assert!(sources.len() * per > cap);
    let opened = Arc::new(AtomicU64::new(0));
    let flood = {
        let (stop, opened) = (stop.clone(), opened.clone());
        std::thread::spawn(move || {
            let mut held = std::collections::VecDeque::new();
            let mut next = sources.iter().cycle();
            while !stop.load(Ordering::Relaxed) {
                if let Ok(c) = try_connect_from(*next.next().unwrap(), addr) {
                    held.push_back(c);
                    opened.fetch_add(1, Ordering::Relaxed);
                }
                if held.len() > 3 * cap {
                    held.pop_front();
                }
            }
            held.len()
        })
    };
    // The flood first, so that every scrape meets a full table.
    let t0 = Instant::now();
    while opened.load(Ordering::Relaxed) < 2 * cap as u64 {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the flood opened only {} connections in 30 s",
            opened.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // The scraper on 127.0.0.1, one connection at a time: never the address holding the
    // most, so never pushed out, however long it takes to send its head.
    let scraper = scrape_loop(addr, Duration::from_millis(50), stop.clone());
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    let (ok, failed, worst) = scraper.join().unwrap();
    let held = flood.join().unwrap();
    eprintln!(
        "{ok} scrapes, worst {worst:?}; {} idle connections opened, {held} held at the end",
        opened.load(Ordering::Relaxed)
    );
    assert!(failed.is_empty(), "failed scrapes: {failed:?}");
    assert!(ok >= 20, "only {ok} scrapes in 5 s");
    assert!(held > 500, "{held}");
}

/// A scraper connected but slow to send its head (descheduled between connect and write)
/// while a flood from other addresses opens more than the cap: never the one closed (its
/// address holds one connection, the flood's 32 or more), it gets its answer when its head
/// comes. Closing the oldest of all, as the server did before, closed it at the flood's
/// 256th connection.
#[test]
fn a_scraper_slow_to_send_its_head_outlives_a_flood_from_other_addresses() {
    let _load = support::timed();
    let srv = server();
    let Limits {
        max_connections: cap,
        max_per_peer: per,
        ..
    } = Limits::default();
    let src = |k: usize| Ipv4Addr::new(127, 0, 0, 2 + (k % 8) as u8);
    assert!(
        cap / 8 < per,
        "the flood must stay under the per-address cap"
    );
    // The cap filled from 8 addresses.
    let mut held: Vec<TcpStream> = (0..cap).map(|k| connect_from(src(k), srv.addr)).collect();
    std::thread::sleep(Duration::from_millis(300));
    let scraper = TcpStream::connect(srv.addr).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    held.extend((0..cap + 44).map(|k| connect_from(src(k), srv.addr)));
    std::thread::sleep(Duration::from_millis(300));
    // The flood's first connections are gone (the cap held), the scraper is not.
    assert!(
        closed_within(&mut held[0], Duration::from_millis(500)).is_some(),
        "the cap did not hold"
    );
    finish_scrape(scraper, Instant::now()).expect("the slow scraper's answer");
}

/// A connection from `src` (a loopback address: any of 127/8 is this host's) to `to`.
fn connect_from(src: Ipv4Addr, to: SocketAddr) -> TcpStream {
    try_connect_from(src, to).unwrap_or_else(|e| panic!("connect from {src}: {e}"))
}

fn try_connect_from(src: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let SocketAddr::V4(to) = to else {
        panic!("IPv4 only")
    };
    let sin = |ip: Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
    // SAFETY: a socket we create and hand at once to TcpStream, which owns and closes it,
    // then bind and connect with valid sockaddr_in values.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let s = TcpStream::from_raw_fd(fd);
        let from = sin(src, 0);
        if libc::bind(fd, (&raw const from).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let dst = sin(*to.ip(), to.port());
        if libc::connect(fd, (&raw const dst).cast(), len) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(s)
    }
}

/// Whether the server still holds `c` open (nothing to read, no EOF).
fn still_open(c: &mut TcpStream) -> bool {
    c.set_nonblocking(true).unwrap();
    let mut b = [0u8; 1];
    let r = c.read(&mut b);
    c.set_nonblocking(false).unwrap();
    matches!(&r, Err(e) if e.kind() == ErrorKind::WouldBlock)
}

#[test]
fn idle_connections_past_the_cap_are_closed_from_the_heaviest_address_oldest_first() {
    let _load = support::timed();
    let srv = server();
    let Limits {
        max_connections: cap,
        max_per_peer: per,
        ..
    } = Limits::default();
    assert_eq!(
        (cap, per),
        (256, 64),
        "the victims below are worked out for these"
    );
    // The cap filled from 4 addresses, 64 each.
    let mut first: Vec<Vec<TcpStream>> = (0..4)
        .map(|k| {
            let ip = Ipv4Addr::new(127, 0, 0, 2 + k);
            (0..per).map(|_| connect_from(ip, srv.addr)).collect()
        })
        .collect();
    // Let the server accept them all before the next ones.
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let more: Vec<TcpStream> = (0..50)
        .map(|_| connect_from(Ipv4Addr::new(127, 0, 0, 100), srv.addr))
        .collect();
    scrape(srv.addr).expect("a scrape at the cap");
    // Each newcomer (50 from 127.0.0.100 with at most 50, then the scrape from 127.0.0.1)
    // closed the oldest connection of the addresses holding the most, the first in accept
    // order among ties: the four took turns, 12 rounds of four (52 left each), then .2 and .3
    // for the last two of 127.0.0.100, then .4 (one of the two with 52) for the scrape. All
    // well before the 2 s request deadline; the rest are open.
    let lost = [13, 13, 13, 12];
    for (k, conns) in first.iter_mut().enumerate() {
        for (i, c) in conns.iter_mut().enumerate() {
            if i < lost[k] {
                let d = closed_within(c, Duration::from_millis(1500))
                    .unwrap_or_else(|| panic!("127.0.0.{}: old connection {i} still open", k + 2));
                assert!(t0.elapsed() < Duration::from_millis(1500), "{d:?}");
            } else {
                assert!(still_open(c), "127.0.0.{}: connection {i} closed", k + 2);
            }
        }
    }
    // And at the deadline they go too.
    let mut last = more.into_iter().last().unwrap();
    assert!(closed_within(&mut last, Duration::from_secs(3)).is_some());
}

/// One address at its own cap pushes out only its own connections.
#[test]
fn one_address_only_ever_pushes_out_its_own_connections() {
    let srv = server();
    let per = Limits::default().max_per_peer;
    let mut others: Vec<TcpStream> = (0..10)
        .map(|_| connect_from(Ipv4Addr::new(127, 0, 0, 2), srv.addr))
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut flood: Vec<TcpStream> = (0..per + 30)
        .map(|_| connect_from(Ipv4Addr::new(127, 0, 0, 3), srv.addr))
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for (i, c) in flood.iter_mut().enumerate() {
        assert_eq!(still_open(c), i >= 30, "flood connection {i}");
    }
    for c in others.iter_mut() {
        assert!(still_open(c));
    }
    scrape(srv.addr).expect("a scrape");
}

#[test]
fn oversized_heads_are_refused() {
    let srv = server();
    let max = Limits::default().max_head_bytes;
    // A head one byte past the bound (all of it read, so that the close is a FIN, not a
    // reset that could overtake the answer): 431 and closed.
    let mut c = TcpStream::connect(srv.addr).unwrap();
    let start = "GET /metrics HTTP/1.1\r\nX-Pad: ";
    let pad = "a".repeat(max + 1 - start.len());
    write!(c, "{start}{pad}").unwrap();
    let mut s = String::new();
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    // The server may close before reading all we sent (a reset): what came first counts.
    let _ = c.read_to_string(&mut s);
    assert!(
        s.starts_with("HTTP/1.1 431 Request Header Fields Too Large\r\n"),
        "{s}"
    );
    // A head that never ends, streamed as fast as it goes: refused after the bound, not
    // read forever.
    let mut c = TcpStream::connect(srv.addr).unwrap();
    c.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
    let junk = vec![b'x'; 1 << 16];
    let mut sent = 0usize;
    c.write_all(b"GET /metrics HTTP/1.1\r\nX-Pad: ").unwrap();
    let err = loop {
        match c.write(&junk) {
            Ok(n) => sent += n,
            Err(e) => break e,
        }
        assert!(sent < 64 << 20, "64 MiB of head accepted");
    };
    eprintln!("head cut after {sent} bytes sent: {err}");
    scrape(srv.addr).expect("a scrape after the oversized heads");
}

#[test]
fn a_request_that_never_ends_is_cut_at_the_deadline() {
    let _load = support::timed();
    let srv = server();
    let deadline = Limits::default().request_timeout;
    // A head without its blank line, then silence.
    let mut c = TcpStream::connect(srv.addr).unwrap();
    c.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let d = closed_within(&mut c, 3 * deadline).expect("still open at 3x the deadline");
    eprintln!("cut after {d:?}");
    assert!(d >= deadline - Duration::from_millis(100), "{d:?}");
    // Nothing at all, not even a byte.
    let mut c = TcpStream::connect(srv.addr).unwrap();
    let d = closed_within(&mut c, 3 * deadline).expect("still open at 3x the deadline");
    assert!(d >= deadline - Duration::from_millis(100), "{d:?}");
    scrape(srv.addr).expect("a scrape");
}

#[test]
fn methods_paths_and_bad_requests() {
    let srv = server();
    let ask = |req: &[u8]| {
        let mut c = TcpStream::connect(srv.addr).unwrap();
        c.write_all(req).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    };
    let r = ask(b"HEAD /metrics HTTP/1.1\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\n"),
        "{r}"
    );
    let r = ask(b"POST /metrics HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
    assert!(
        r.starts_with("HTTP/1.1 405 ") && r.contains("Allow: GET, HEAD\r\n"),
        "{r}"
    );
    assert!(ask(b"GET /nope HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 404 "));
    assert!(
        ask(b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n").starts_with("HTTP/1.1 400 ")
    );
    let r = ask(b"GET /metrics HTTP/1.0\nAccept: application/openmetrics-text; version=1.0.0\n\n");
    assert!(
        r.contains("Content-Type: application/openmetrics-text"),
        "{r}"
    );
    assert!(r.trim_end().ends_with("# EOF"), "{r}");
}

/// Clients that ask for a large body and never read it hold their slot only until the
/// response deadline, and while they fill every slot a newcomer pushes out the oldest of
/// them instead of waiting or being refused.
#[test]
fn readers_that_never_read_are_cut_and_pushed_out() {
    let _load = support::timed();
    raise_fd_limit();
    let limits = Limits {
        max_connections: 4,
        response_timeout: Duration::from_secs(1),
        ..Limits::default()
    };
    // 64 MiB: far more than the kernel buffers a connection.
    let body = Arc::new(vec![b'x'; 64 << 20]);
    let mut srv = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        "test-http",
        limits,
        move |_| Response::ok("application/octet-stream", body.clone()),
    )
    .unwrap();
    let addr = srv.addr();
    let t0 = Instant::now();
    let mut stuck: Vec<TcpStream> = (0..4)
        .map(|_| {
            let mut c = TcpStream::connect(addr).unwrap();
            c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    // Every slot is answering: a reader that reads gets all of it at once.
    let mut c = TcpStream::connect(addr).unwrap();
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut all = Vec::new();
    c.read_to_end(&mut all).unwrap();
    assert!(all.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let head = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    assert_eq!(all.len() - head, 64 << 20);
    assert!(all[head..].iter().all(|&b| b == b'x'));
    // The four were cut (the oldest for the newcomer, the others at the response deadline):
    // read after it, what the kernel buffered ends in EOF or a reset well before 64 MiB.
    std::thread::sleep(Duration::from_millis(1500).saturating_sub(t0.elapsed()));
    for c in stuck.iter_mut() {
        let mut n = 0usize;
        let mut b = vec![0u8; 1 << 20];
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        while let Ok(k) = c.read(&mut b) {
            if k == 0 {
                break;
            }
            n += k;
        }
        assert!(n < 64 << 20, "{n} bytes");
    }
    srv.stop();
}

/// A handler that panics costs its request a 500, not the endpoint.
#[test]
fn a_panicking_handler_answers_500_and_the_server_goes_on() {
    let mut srv = Server::start(
        "127.0.0.1:0".parse().unwrap(),
        "test-http-panic",
        Limits::default(),
        |r| {
            assert!(r.path != "/boom", "the handler's own bug");
            Response::text(200, "fine\n")
        },
    )
    .unwrap();
    let ask = |path: &str| {
        let mut c = TcpStream::connect(srv.addr()).unwrap();
        write!(c, "GET {path} HTTP/1.1\r\n\r\n").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    };
    assert!(ask("/boom").starts_with("HTTP/1.1 500 Internal Server Error\r\n"));
    let r = ask("/");
    assert!(
        r.starts_with("HTTP/1.1 200 OK\r\n") && r.ends_with("\r\n\r\nfine\n"),
        "{r}"
    );
    srv.stop();
}
