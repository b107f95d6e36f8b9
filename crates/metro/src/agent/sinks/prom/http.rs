//! The `/metrics` endpoint (`prometheus_listen`): [`agent::http`](crate::agent::http) serving a handler that answers
//! `GET /metrics` with [`Prom`]'s exposition, OpenMetrics when the scraper asks for it,
//! the classic text format otherwise.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Prom;
use crate::agent::http;

/// The `/metrics` endpoint: [`http::Server`](crate::agent::http) with this sink's handler.
pub struct PromServer {
    pub addr: SocketAddr,
    server: http::Server,
}

/// A render answers every request for this long: a flood of scrapes costs one render a
/// second, and the bodies in flight are at most one a second of the answer deadline.
const RENDER_REUSE: Duration = Duration::from_secs(1);

impl PromServer {
    /// Bind `addr` and serve `prom` until stopped.
    pub fn start(addr: SocketAddr, prom: Arc<Prom>) -> io::Result<PromServer> {
        // The last render of each format (OpenMetrics, text 0.0.4).
        let mut memo: [Option<(Instant, Arc<Vec<u8>>)>; 2] = [None, None];
        let handler = move |r: &http::Request| {
            let om = r.header("accept").is_some_and(|a| {
                a.to_ascii_lowercase()
                    .contains("application/openmetrics-text")
            });
            match r.path.as_str() {
                "/metrics" => {
                    let now = Instant::now();
                    let m = &mut memo[usize::from(om)];
                    let body = match m {
                        Some((t, b)) if now.duration_since(*t) < RENDER_REUSE => b.clone(),
                        _ => {
                            let s = if om {
                                prom.render()
                            } else {
                                prom.render_text()
                            };
                            m.insert((now, Arc::new(s.into_bytes()))).1.clone()
                        }
                    };
                    let ctype = if om {
                        "application/openmetrics-text; version=1.0.0; charset=utf-8"
                    } else {
                        "text/plain; version=0.0.4; charset=utf-8"
                    };
                    http::Response::ok(ctype, body)
                }
                "/" => http::Response::text(200, "metro: metrics at /metrics\n"),
                _ => http::Response::not_found(),
            }
        };
        let server = http::Server::start(addr, "metro-prom", http::Limits::default(), handler)?;
        let addr = server.addr();
        tracing::info!("prometheus metrics on http://{addr}/metrics");
        Ok(PromServer { addr, server })
    }

    pub fn stop(&mut self) {
        self.server.stop();
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::report;
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream;

    fn get(addr: SocketAddr, path: &str, accept: &str) -> String {
        let mut c = TcpStream::connect(addr).unwrap();
        write!(
            c,
            "GET {path} HTTP/1.1\r\nHost: x\r\nAccept: {accept}\r\n\r\n"
        )
        .unwrap();
        let mut s = String::new();
        c.read_to_string(&mut s).unwrap();
        s
    }

    #[test]
    fn http_responder() {
        let p = Arc::new(Prom::new());
        p.observe(&report(true), crate::agent::sinks::SendErrors::default());
        let mut srv = PromServer::start("127.0.0.1:0".parse().unwrap(), p).unwrap();
        let r = get(
            srv.addr,
            "/metrics",
            "application/openmetrics-text;version=1.0.0,text/plain;q=0.5",
        );
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("metro_tcp_rtt_p50_seconds"), "{r}");
        assert!(r.contains("# TYPE metro_samples counter"), "{r}");
        assert!(r.trim_end().ends_with("# EOF"), "{r}");
        let r = get(srv.addr, "/metrics", "*/*");
        assert!(r.contains("Content-Type: text/plain; version=0.0.4"), "{r}");
        assert!(r.contains("# TYPE metro_samples_total counter"), "{r}");
        assert!(
            r.contains("# HELP metro_samples_total Network RTT samples, by kind."),
            "{r}"
        );
        assert!(!r.contains("# EOF"), "{r}");
        assert!(get(srv.addr, "/nope", "*/*").starts_with("HTTP/1.1 404"));
        srv.stop();
    }
}
