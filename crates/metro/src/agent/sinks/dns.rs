//! A sink's receiver address, resolved with a deadline: the system resolver
//! (`getaddrinfo`) has no timeout of its own, and a black-holed name holds the caller for
//! its retries (about 6 s for OTLP, found in issue 22). A lookup runs on a thread of its
//! own; the caller waits for it at most its deadline and otherwise carries on with the
//! last address known (or an error), and picks the answer up on a later call. At most one
//! lookup per [`Lookup`] is in flight, so a resolver that never answers holds one thread,
//! not one per flush.

use std::io;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// How a name becomes addresses: the system resolver, or a test's stand-in.
pub type Resolver = fn(&str, u16) -> io::Result<Vec<SocketAddr>>;

fn system(host: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
    Ok((host, port).to_socket_addrs()?.collect())
}

/// One `host:port`, resolved again every `refresh`.
pub struct Lookup {
    host: String,
    port: u16,
    refresh: Duration,
    resolver: Resolver,
    /// The last answer and when it came.
    known: Option<(SocketAddr, Instant)>,
    pending: Option<Receiver<io::Result<Vec<SocketAddr>>>>,
}

impl Lookup {
    pub fn new(host: &str, port: u16, refresh: Duration) -> Lookup {
        Lookup::with_resolver(host, port, refresh, system)
    }

    pub fn with_resolver(host: &str, port: u16, refresh: Duration, resolver: Resolver) -> Lookup {
        Lookup {
            host: host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
            port,
            refresh,
            resolver,
            known: None,
            pending: None,
        }
    }

    /// The address, waiting at most `wait` for a lookup: an address literal at once; a
    /// name's last answer while it is fresh; else a new lookup's answer if it comes within
    /// `wait`, or the last answer (stale), or an error naming the timeout.
    pub fn resolve(&mut self, wait: Duration) -> io::Result<SocketAddr> {
        if let Ok(ip) = self.host.parse::<std::net::IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        if let Some((a, at)) = self.known
            && at.elapsed() < self.refresh
        {
            return Ok(a);
        }
        let rx = self.pending.get_or_insert_with(|| {
            let (tx, rx) = mpsc::sync_channel(1);
            let (host, port, resolver) = (self.host.clone(), self.port, self.resolver);
            let spawned = std::thread::Builder::new()
                .name("metro-sink-dns".into())
                .spawn(move || {
                    let _ = tx.send(resolver(&host, port));
                });
            if let Err(e) = spawned {
                let (tx, rx) = mpsc::sync_channel(1);
                let _ = tx.send(Err(e));
                return rx;
            }
            rx
        });
        let answer = match rx.recv_timeout(wait) {
            Ok(r) => r,
            Err(RecvTimeoutError::Timeout) => {
                return match self.known {
                    Some((a, _)) => Ok(a),
                    None => Err(io::Error::new(
                        io::ErrorKind::TimedOut,
                        format!("resolving {} takes longer than {wait:?}", self.host),
                    )),
                };
            }
            Err(RecvTimeoutError::Disconnected) => Err(io::Error::other("resolver thread died")),
        };
        self.pending = None;
        match answer.and_then(|v| {
            v.into_iter()
                .next()
                .ok_or_else(|| io::Error::other(format!("{} has no address", self.host)))
        }) {
            Ok(a) => {
                self.known = Some((a, Instant::now()));
                Ok(a)
            }
            // A failed lookup keeps the last good address if there is one.
            Err(e) => self.known.map(|(a, _)| a).ok_or(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hangs(_: &str, _: u16) -> io::Result<Vec<SocketAddr>> {
        std::thread::sleep(Duration::from_secs(3));
        Ok(vec!["192.0.2.1:1".parse().unwrap()])
    }

    fn answers(_: &str, port: u16) -> io::Result<Vec<SocketAddr>> {
        Ok(vec![SocketAddr::new("192.0.2.7".parse().unwrap(), port)])
    }

    #[test]
    fn a_resolver_that_hangs_costs_the_caller_its_deadline_only() {
        let mut l = Lookup::with_resolver("slow.example", 4318, Duration::from_secs(60), hangs);
        let t = Instant::now();
        let e = l.resolve(Duration::from_millis(100)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::TimedOut);
        // A second call waits on the same lookup, starting none.
        assert!(l.resolve(Duration::from_millis(100)).is_err());
        assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
        // The answer, when it comes, is picked up.
        let a = l.resolve(Duration::from_secs(10)).unwrap();
        assert_eq!(a, "192.0.2.1:1".parse().unwrap());
    }

    #[test]
    fn literals_skip_the_resolver_and_names_are_cached() {
        let mut l = Lookup::with_resolver("[::1]", 8125, Duration::from_secs(60), hangs);
        let t = Instant::now();
        assert_eq!(
            l.resolve(Duration::ZERO).unwrap(),
            "[::1]:8125".parse().unwrap()
        );
        assert!(t.elapsed() < Duration::from_millis(50));
        let mut l = Lookup::with_resolver("db.example", 53, Duration::from_secs(60), answers);
        let a = l.resolve(Duration::from_secs(5)).unwrap();
        assert_eq!(a, "192.0.2.7:53".parse().unwrap());
        assert!(l.pending.is_none());
        assert_eq!(l.resolve(Duration::ZERO).unwrap(), a);
    }
}
