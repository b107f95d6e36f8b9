//! The `/metrics` endpoint (`prometheus_listen`): [`agent::http`](crate::agent::http) serving a handler that answers
//! `GET /metrics` with [`Prom`]'s exposition in the format the scraper prefers
//! ([`Format::negotiate`]): protobuf (with native histograms), OpenMetrics, or the classic
//! text format.

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

/// The exposition formats `/metrics` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Prometheus text 0.0.4 (no `Accept`, `text/plain`, `*/*`).
    Text,
    OpenMetrics,
    /// Length-delimited `io.prometheus.client.MetricFamily` messages, with native
    /// histograms.
    Protobuf,
}

impl Format {
    const PROTOBUF: &str = "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited";

    /// The format an `Accept` header prefers: the highest `q` among the ones served, the
    /// first listed on a tie; text when none is.
    pub fn negotiate(accept: Option<&str>) -> Format {
        let mut best = (Format::Text, 0.0f64);
        for item in accept.unwrap_or("").split(',') {
            let mut parts = item.split(';').map(|p| p.trim().to_ascii_lowercase());
            let media = parts.next().unwrap_or_default();
            let (mut q, mut proto, mut delimited) = (1.0, false, false);
            for p in parts {
                let (k, v) = p.split_once('=').unwrap_or((&p, ""));
                let v = v.trim().trim_matches('"');
                match k.trim() {
                    "q" => q = v.parse().unwrap_or(0.0),
                    "proto" => proto = v == "io.prometheus.client.metricfamily",
                    "encoding" => delimited = v == "delimited",
                    _ => {}
                }
            }
            let f = match media.as_str() {
                "application/vnd.google.protobuf" if proto && delimited => Format::Protobuf,
                "application/openmetrics-text" => Format::OpenMetrics,
                "text/plain" | "*/*" | "text/*" => Format::Text,
                _ => continue,
            };
            if q > best.1 {
                best = (f, q);
            }
        }
        best.0
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Protobuf => Self::PROTOBUF,
        }
    }
}

impl PromServer {
    /// Bind `addr` and serve `prom` until stopped.
    pub fn start(addr: SocketAddr, prom: Arc<Prom>) -> io::Result<PromServer> {
        // The last render of each format.
        let mut memo: [Option<(Instant, Arc<Vec<u8>>)>; 3] = [None, None, None];
        let handler = move |r: &http::Request| match r.path.as_str() {
            "/metrics" => {
                let f = Format::negotiate(r.header("accept"));
                let now = Instant::now();
                let m = &mut memo[f as usize];
                let body = match m {
                    Some((t, b)) if now.duration_since(*t) < RENDER_REUSE => b.clone(),
                    _ => {
                        let b = match f {
                            Format::Text => prom.render_text().into_bytes(),
                            Format::OpenMetrics => prom.render().into_bytes(),
                            Format::Protobuf => prom.render_protobuf(),
                        };
                        m.insert((now, Arc::new(b))).1.clone()
                    }
                };
                http::Response::ok(f.content_type(), body)
            }
            "/" => http::Response::text(200, "metro: metrics at /metrics\n"),
            _ => http::Response::not_found(),
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

    #[test]
    fn negotiation_follows_the_scraper_s_preference() {
        // Prometheus 2.42's two Accept headers, with and without native histograms.
        let with = "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=delimited,application/openmetrics-text;version=1.0.0;q=0.8,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        let without = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert_eq!(Format::negotiate(Some(with)), Format::Protobuf);
        assert_eq!(Format::negotiate(Some(without)), Format::OpenMetrics);
        assert_eq!(Format::negotiate(None), Format::Text);
        assert_eq!(Format::negotiate(Some("*/*")), Format::Text);
        // Protobuf only as delimited MetricFamily messages, and not over a higher q.
        assert_eq!(
            Format::negotiate(Some(
                "application/vnd.google.protobuf;proto=io.prometheus.client.MetricFamily;encoding=text"
            )),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some(
                "application/vnd.google.protobuf; proto=io.prometheus.client.MetricFamily; encoding=delimited; q=0.4, text/plain;q=0.9"
            )),
            Format::Text
        );
        assert_eq!(
            Format::negotiate(Some(
                "text/plain;q=0.2, application/vnd.google.protobuf; proto=\"io.prometheus.client.MetricFamily\"; encoding=delimited"
            )),
            Format::Protobuf
        );
    }
}
