//! Fleet outputs end to end: two `metro run` agents on two links with known delays, one real
//! Prometheus scraping both (its PromQL quantile over the summed histogram against the
//! pooled truth), the DogStatsD distribution values of both, and `group_by`/`max_series`
//! over traffic to 300 addresses.
//!
//! These tests need root (each skips for another user, saying so) and the Debian
//! `prometheus` package; as root they fail, never skip, when they cannot run. Each test uses its own namespaces and 10.200.N.0/24.

use crate::support;
use crate::support::agent;
use crate::support::netns;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use agent::{Agent, Metric, Statsd, TempDir, http_get, http_status, named, promtool_check_metrics};
use netns::{Client, Delayed, EchoServer, Netns, Pair};

const S: Duration = Duration::from_secs(1);

/// The default histogram buckets (seconds), as the README documents them.
const BUCKETS: [f64; 25] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04,
    0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// The bucket a value (seconds) falls in: the first upper bound at or above it.
fn bucket(v: f64) -> usize {
    BUCKETS.partition_point(|&b| b < v)
}

/// Quantile `q` of `v` (sorted), nearest rank.
fn quantile(v: &[f64], q: f64) -> f64 {
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// Forward TCP connections from a loopback port of the test's namespace to `target` inside
/// `ns` (the agents listen on their namespace's loopback; Prometheus runs outside).
struct Proxy {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Proxy {
    fn start(ns: &Netns, target: &str) -> Proxy {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let st = stop.clone();
        let target = target.to_string();
        // The accepting thread lives in `ns`: the upstream connections it opens are there,
        // the listener it was handed stays where it was made.
        ns.spawn(move || {
            while !st.load(Ordering::Relaxed) {
                let Ok((down, _)) = l.accept() else {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                };
                down.set_nonblocking(false).ok();
                let Ok(up) = TcpStream::connect(&target) else {
                    continue;
                };
                let (mut d2, mut u2) = (down.try_clone().unwrap(), up.try_clone().unwrap());
                let (mut d, mut u) = (down, up);
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut d2, &mut u2);
                    let _ = u2.shutdown(std::net::Shutdown::Write);
                });
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut u, &mut d);
                    let _ = d.shutdown(std::net::Shutdown::Write);
                });
            }
        });
        Proxy { addr, stop }
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// A real Prometheus (Debian's package) on a loopback port with a temp config and storage.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
}

impl Prometheus {
    /// `name` names its files in `dir`; `flags` go on its command line
    /// (`--enable-feature=...`); `rules`, a rule file of the repository, is evaluated every
    /// second.
    fn start(
        dir: &TempDir,
        name: &str,
        targets: &[SocketAddr],
        flags: &[&str],
        rules: Option<&str>,
    ) -> Prometheus {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let t: Vec<String> = targets.iter().map(|a| format!("'{a}'")).collect();
        let cfg = dir.write(
            &format!("{name}.yml"),
            &format!(
                "global:\n  scrape_interval: 1s\n  scrape_timeout: 900ms\n  evaluation_interval: 1s\n{}scrape_configs:\n  - job_name: metro\n    static_configs:\n      - targets: [{}]\n",
                rules.map_or(String::new(), |r| format!(
                    "rule_files: ['{}/../../{r}']\n",
                    env!("CARGO_MANIFEST_DIR")
                )),
                t.join(", ")
            ),
        );
        let log_path = dir.path(&format!("{name}.log"));
        let log = std::fs::File::create(&log_path).unwrap();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", cfg.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path(&format!("{name}-tsdb")).display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .args(flags)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("run prometheus (Debian package `prometheus`)");
        let p = Prometheus { child, addr };
        let end = Instant::now() + 30 * S;
        while http_status(p.addr, "/-/ready").is_none_or(|(code, _)| code != 200) {
            assert!(
                Instant::now() < end,
                "prometheus not ready: {}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    /// `/api/v1/query_exemplars` over the last ten minutes: per series, its labels and
    /// its exemplars' (labels, value).
    fn exemplars(&self, promql: &str) -> Vec<(serde_json::Value, Vec<(serde_json::Value, f64)>)> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let path = format!(
            "/api/v1/query_exemplars?query={}&start={}&end={}",
            promql
                .replace('{', "%7B")
                .replace('}', "%7D")
                .replace('"', "%22"),
            now - 600,
            now + 60
        );
        let (code, body) = http_status(self.addr, &path).expect("query_exemplars");
        assert_eq!(code, 200, "{promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{body}");
        v["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| {
                let exs = s["exemplars"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|e| {
                        (
                            e["labels"].clone(),
                            e["value"].as_str().unwrap().parse().unwrap(),
                        )
                    })
                    .collect();
                (s["seriesLabels"].clone(), exs)
            })
            .collect()
    }

    /// An instant query's single value (`None`: empty result or NaN).
    fn query(&self, promql: &str) -> Option<f64> {
        let mut enc = String::new();
        for b in promql.bytes() {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                enc.push(b as char);
            } else {
                enc.push_str(&format!("%{b:02X}"));
            }
        }
        let (code, body) = http_status(self.addr, &format!("/api/v1/query?query={enc}"))?;
        assert_eq!(code, 200, "{promql}: {body}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "success", "{body}");
        let r = v["data"]["result"].as_array()?;
        assert!(r.len() <= 1, "{promql}: more than one series: {body}");
        let s = r.first()?["value"][1].as_str()?;
        s.parse::<f64>().ok().filter(|x| x.is_finite())
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn config(statsd_port: u16, prom: &str, ips: &str, more_init: &str, more_inst: &str) -> String {
    format!(
        "init_config:\n  flush_interval: 1\n  statsd_ip: 127.0.0.1\n  statsd_port: {statsd_port}\n  prometheus_listen: {prom}\n{more_init}instances:\n  - interface: veth0\n    tags: ['env:fleet', 'role:web']\n    ips: [{ips}]\n{more_inst}"
    )
}

#[test]
fn two_agents_merge_into_fleet_quantiles_in_prometheus_and_dogstatsd() {
    if !netns::needs_root("two agents in network namespaces") {
        return;
    }
    let _load = support::timed();
    // Link A: 10 ms round trip, three times the requests of link B: 40 ms.
    let a = Delayed::new("fla", 31, Duration::from_millis(5));
    let b = Delayed::new("flb", 32, Duration::from_millis(20));
    let dir = TempDir::new("fleet");
    let mut agents = Vec::new();
    let mut receivers = Vec::new();
    let mut proxies = Vec::new();
    let mut servers = Vec::new();
    for (d, n) in [(&a, 31), (&b, 32)] {
        servers.push(EchoServer::start(&d.s, &format!("10.200.{n}.2:7000")));
        let rx = d.c.enter(|| UdpSocket::bind("127.0.0.1:8125").unwrap());
        receivers.push(Statsd::udp(rx));
        let cfg = dir.write(
            &format!("metro{n}.yaml"),
            &config(
                8125,
                "127.0.0.1:9464",
                &format!("'10.200.{n}.2'"),
                "  distributions: true\n",
                "",
            ),
        );
        let mut ag = Agent::start(
            &d.c,
            &["run", "--config", cfg.to_str().unwrap()],
            &dir.path(&format!("stderr{n}")),
        );
        ag.wait_log("capture filter", 20 * S);
        agents.push(ag);
        proxies.push(Proxy::start(&d.c, "127.0.0.1:9464"));
    }
    let targets = [proxies[0].addr, proxies[1].addr];
    let prom = Prometheus::start(
        &dir,
        "prometheus",
        &targets,
        &["--enable-feature=exemplar-storage"],
        None,
    );
    // A second one scraping the same agents asks for protobuf and keeps native histograms.
    let native = Prometheus::start(
        &dir,
        "native",
        &targets,
        &["--enable-feature=native-histograms,exemplar-storage"],
        Some("deploy/prometheus/metro.native.rules.yml"),
    );
    // 5 ms between requests: 15 ms a cycle on A, 45 ms on B (3:1), one connection each.
    let mut ca = Client::start(
        &a.c,
        servers[0].addr,
        200,
        Duration::from_millis(5),
        100_000,
    );
    let mut cb = Client::start(
        &b.c,
        servers[1].addr,
        200,
        Duration::from_millis(5),
        100_000,
    );
    // About 25 s of traffic: until link B (the slower) made 550 exchanges.
    let end = Instant::now() + 120 * S;
    while cb.requests.load(Ordering::Relaxed) < 550 {
        assert!(
            Instant::now() < end,
            "link B is too slow: {:?}",
            cb.requests
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    ca.stop();
    cb.stop();
    // The agents' last samples are out: each sent a flush of an interval that began after
    // the clients stopped.
    let stopped = Instant::now();
    for (rx, ag) in receivers.iter().zip(agents.iter_mut()) {
        rx.wait_flush_after(ag, stopped, S);
    }
    // And Prometheus has scraped those final counters: its sum is the agents' own.
    let on_agents = || -> f64 {
        [&a, &b]
            .iter()
            .map(|d| {
                http_get(&d.c, "127.0.0.1:9464", "/metrics")
                    .lines()
                    .filter(|l| l.starts_with("metro_tcp_rtt_samples_total{"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>()
            })
            .sum()
    };
    let final_samples = on_agents();
    let end = Instant::now() + 15 * S;
    while prom.query("sum(metro_tcp_rtt_samples_total)") != Some(final_samples) {
        assert!(
            Instant::now() < end,
            "Prometheus never scraped the final counters: {:?}, the agents {final_samples}",
            prom.query("sum(metro_tcp_rtt_samples_total)")
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The pooled truth: every request's application round trip on both links.
    let mut truth: Vec<f64> = ca
        .rtts
        .lock()
        .unwrap()
        .iter()
        .chain(cb.rtts.lock().unwrap().iter())
        .map(|d| d.as_secs_f64())
        .collect();
    truth.sort_by(f64::total_cmp);
    let (na, nb) = (ca.rtts.lock().unwrap().len(), cb.rtts.lock().unwrap().len());
    assert!(na > 2 * nb, "link A {na} requests, link B {nb}");
    let (t50, t90) = (quantile(&truth, 0.5), quantile(&truth, 0.9));
    eprintln!(
        "truth: p50 {t50:.5} s p90 {t90:.5} s over {} requests",
        truth.len()
    );
    assert!((0.0095..0.015).contains(&t50) && (0.039..0.05).contains(&t90));

    // Prometheus: the quantile of the summed histogram (everything since the agents
    // started; every series is a counter from zero) is within one bucket of the truth.
    let series = prom
        .query("count(count by (src, iface, env, role) (metro_tcp_rtt_seconds_bucket))")
        .expect("no histogram series scraped");
    assert_eq!(series, 2.0, "one histogram series per agent");
    for (q, t) in [(0.5, t50), (0.9, t90)] {
        let promql = format!(
            "histogram_quantile({q}, sum by (le) (increase(metro_tcp_rtt_seconds_bucket[1m])))"
        );
        let got = prom
            .query(&promql)
            .unwrap_or_else(|| panic!("{promql}: no value"));
        eprintln!("PromQL p{}: {got:.5} s (truth {t:.5} s)", q * 100.0);
        assert!(
            bucket(got).abs_diff(bucket(t)) <= 1,
            "PromQL {promql} = {got} s, pooled truth {t} s: more than one bucket apart"
        );
    }
    // The histogram's count is the agents' sample count.
    let count = prom.query("sum(metro_tcp_rtt_seconds_count)").unwrap();
    let samples = prom.query("sum(metro_tcp_rtt_samples_total)").unwrap();
    assert_eq!(count, samples);
    // The native histogram (schema 4, 16 buckets an octave): the pooled quantiles within
    // 10% of the truth; that Prometheus holds no classic bucket series (it took the native
    // one, which it can tell only from the nonzero zero threshold), and the native count is
    // the agents' sample count.
    assert_eq!(
        native.query("count(metro_tcp_rtt_seconds_bucket)"),
        None,
        "the native-histogram Prometheus ingested classic buckets"
    );
    for (q, t) in [(0.5, t50), (0.9, t90)] {
        let promql = format!("histogram_quantile({q}, sum(increase(metro_tcp_rtt_seconds[1m])))");
        let got = native
            .query(&promql)
            .unwrap_or_else(|| panic!("{promql}: no value"));
        eprintln!(
            "PromQL native p{}: {got:.5} s (truth {t:.5} s, {:+.1}%)",
            q * 100.0,
            (got / t - 1.0) * 100.0
        );
        assert!(
            (got / t - 1.0).abs() <= 0.10,
            "PromQL {promql} = {got} s, pooled truth {t} s: more than 10% apart"
        );
    }
    let native_count = native
        .query("histogram_count(sum(metro_tcp_rtt_seconds))")
        .expect("no native histogram");
    let native_samples = native.query("sum(metro_tcp_rtt_samples_total)").unwrap();
    assert_eq!(native_count, native_samples);

    // Exemplars: each classic bucket series' exemplars name a connection of its agent's
    // link (client address, server address and port 7000, a port on each side) whose value
    // lies in that bucket; the native histograms carry them too (2.42 reads them from the
    // classic buckets of the protobuf message).
    let classic = prom.exemplars("metro_tcp_rtt_seconds_bucket");
    let mut n = 0;
    for (series, exs) in &classic {
        let le: f64 = match series["le"].as_str().unwrap() {
            "+Inf" => f64::INFINITY,
            x => x.parse().unwrap(),
        };
        let below = BUCKETS
            .iter()
            .copied()
            .filter(|&b| b < le)
            .fold(0.0, f64::max);
        let net = series["src"]
            .as_str()
            .unwrap()
            .rsplit_once('.')
            .unwrap()
            .0
            .to_string();
        for (l, v) in exs {
            assert_eq!(l["dst"].as_str(), series["dst"].as_str(), "{l} on {series}");
            assert_eq!(l["src"].as_str(), series["src"].as_str(), "{l} on {series}");
            assert!(l["dst"].as_str().unwrap().starts_with(&net));
            assert_eq!(l["dport"], "7000", "{l}");
            let sport: u16 = l["sport"].as_str().unwrap().parse().unwrap();
            assert!(sport >= 1024, "{l}");
            assert!(
                below < *v && *v <= le,
                "exemplar {v} s in bucket le={le}: {l}"
            );
            n += 1;
        }
    }
    let native_ex: usize = native
        .exemplars("metro_tcp_rtt_seconds")
        .iter()
        .map(|(_, e)| e.len())
        .sum();
    eprintln!(
        "exemplars: {n} on {} classic bucket series, {native_ex} on the native histograms",
        classic.len()
    );
    // Each agent's slow buckets name its connections: at least one bucket series with
    // exemplars per agent (how many buckets its RTTs spread over depends on the machine).
    let exemplar_agents: std::collections::BTreeSet<&str> = classic
        .iter()
        .map(|(series, _)| series["instance"].as_str().unwrap())
        .collect();
    assert!(n >= 4 && exemplar_agents.len() == 2, "{classic:?}");
    assert!(native_ex >= 2);

    // What the fleet could do before: average the agents' p50 gauges. Wrong by buckets.
    let all: Vec<Vec<Metric>> = receivers.iter().map(Statsd::all).collect();
    let last_p50 = |m: &[Metric]| {
        named(m, "system.net.tcp.rtt.p50")
            .last()
            .expect("a p50 gauge")
            .value
            / 1000.0
    };
    let naive = (last_p50(&all[0]) + last_p50(&all[1])) / 2.0;
    eprintln!("mean of the agents' p50 gauges: {naive:.5} s");
    assert!(
        bucket(naive).abs_diff(bucket(t50)) > 1,
        "averaging p50 gauges ({naive} s) happened to match the truth ({t50} s)"
    );

    // DogStatsD: the distribution values of both agents, pooled, give the same quantiles;
    // one value per sample (rate 1), with the pair's tags.
    let mut values = Vec::new();
    for m in &all {
        let d = named(m, "system.net.tcp.rtt.distribution");
        let n: f64 = named(m, "system.net.tcp.rtt.samples")
            .iter()
            .map(|m| m.value)
            .sum();
        assert_eq!(d.len() as f64, n, "one distribution value per sample");
        for v in &d {
            assert_eq!((v.ty.as_str(), v.rate), ("d", 1.0));
            assert_eq!(v.tag("env"), Some("fleet"));
            assert!(v.tag("dst").is_some() && v.tag("src").is_some());
        }
        values.extend(d.iter().map(|m| m.value / 1000.0));
    }
    values.sort_by(f64::total_cmp);
    for (q, t) in [(0.5, t50), (0.9, t90)] {
        let got = quantile(&values, q);
        eprintln!("DogStatsD p{}: {got:.5} s (truth {t:.5} s)", q * 100.0);
        assert!(
            (got - t).abs() <= 0.002,
            "distribution p{} {got} s vs pooled truth {t} s",
            q * 100.0
        );
    }

    // deploy/prometheus/metro.native.rules.yml: each link's recorded p90 within 10% of the
    // exact p90 of the same samples (its agent's distribution values, one per sample; a
    // link's client round trips are not its samples: the delayed ACKs of a 10 ms link are
    // in its tail), and the recorded quantiles per node.
    for (m, n) in all.iter().zip([31, 32]) {
        let mut v: Vec<f64> = named(m, "system.net.tcp.rtt.distribution")
            .iter()
            .map(|m| m.value / 1000.0)
            .collect();
        v.sort_by(f64::total_cmp);
        let t = quantile(&v, 0.9);
        let promql = format!("dst:metro_tcp_rtt_seconds:p90_5m{{dst=\"10.200.{n}.2\"}}");
        let got = native
            .query(&promql)
            .unwrap_or_else(|| panic!("{promql}: no value"));
        eprintln!(
            "recorded native p90 to 10.200.{n}.2: {got:.5} s (its {} samples' p90 {t:.5} s, {:+.1}%)",
            v.len(),
            (got / t - 1.0) * 100.0
        );
        assert!(
            (got / t - 1.0).abs() <= 0.10,
            "{promql} = {got}, samples' p90 {t}"
        );
    }
    let nodes = native.query("count(instance:metro_tcp_rtt_seconds:p99_5m)");
    assert_eq!(nodes, Some(2.0));

    // The baseline: each agent's least RTT over the window, at least its link's round
    // trip (10 ms, 40 ms) and at most the least round trip its client measured (which adds
    // the echo server and the client's own stack); the queueing delay above it is the p50
    // less the baseline, small on a link without queues. Prometheus has the same.
    let rtts = [
        ca.rtts.lock().unwrap().clone(),
        cb.rtts.lock().unwrap().clone(),
    ];
    for ((m, link), (rtt, n)) in all
        .iter()
        .zip([0.010, 0.040])
        .zip(rtts.iter().zip([31, 32]))
    {
        let client_min = rtt.iter().min().unwrap().as_secs_f64();
        let base = named(m, "system.net.tcp.rtt.baseline")
            .last()
            .expect("a baseline gauge")
            .value
            / 1000.0;
        let queueing = named(m, "system.net.tcp.queueing_delay")
            .last()
            .expect("a queueing delay gauge")
            .value
            / 1000.0;
        let p50 = last_p50(m);
        eprintln!(
            "link {link} s: baseline {base:.5} s (client's least {client_min:.5} s), p50 {p50:.5} s, queueing {queueing:.5} s"
        );
        assert!(
            base >= link * 0.99 && base <= client_min,
            "baseline {base} s: link {link} s, client's least round trip {client_min} s"
        );
        assert!((0.0..=0.002).contains(&queueing), "{queueing}");
        assert!(
            (p50 - base - queueing).abs() < 0.0002,
            "{p50} {base} {queueing}"
        );
        // The gauges went stale with the traffic: their last values.
        let promql =
            format!("last_over_time(metro_tcp_rtt_baseline_seconds{{dst=\"10.200.{n}.2\"}}[1m])");
        let pb = prom.query(&promql).unwrap_or_else(|| panic!("{promql}"));
        assert!(pb >= link * 0.99 && pb <= client_min, "{promql} = {pb}");
        let q = prom
            .query(&format!(
                "last_over_time(metro_tcp_queueing_delay_seconds{{dst=\"10.200.{n}.2\"}}[1m])"
            ))
            .unwrap();
        assert!((0.0..=0.002).contains(&q), "{q}");
    }

    // The exposition with histograms passes promtool, labels as documented.
    let body = http_get(&a.c, "127.0.0.1:9464", "/metrics");
    promtool_check_metrics(&dir, &body);
    let labels = [
        "src=\"10.200.31.1\"",
        "dst=\"10.200.31.2\"",
        "iface=\"veth0\"",
        "env=\"fleet\"",
        "role=\"web\"",
        "le=\"0.015\"",
    ];
    assert!(
        body.lines()
            .any(|l| l.starts_with("metro_tcp_rtt_seconds_bucket{")
                && labels.iter().all(|x| l.contains(x))),
        "{body}"
    );
    for ag in &mut agents {
        assert!(ag.alive(), "{}", ag.log());
    }
}

/// Traffic from the client to `n` addresses in each of `nets` (`10.210.K.0/24`), one
/// connection and three requests per address, repeated until `stop`.
fn many_addresses(
    p: &Pair,
    nets: u8,
    n: u8,
    stop: Arc<AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    for k in 0..nets {
        for i in 1..=n {
            p.s.ip(&["addr", "add", &format!("10.210.{k}.{i}/32"), "dev", "veth0"]);
        }
    }
    p.c.ip(&["route", "add", "10.210.0.0/16", "dev", "veth0"]);
    p.c.spawn(move || {
        let mut done = 0u64;
        let mut buf = [0u8; 100];
        while !stop.load(Ordering::Relaxed) {
            for k in 0..nets {
                for i in 1..=n {
                    let to: SocketAddr = format!("10.210.{k}.{i}:7000").parse().unwrap();
                    let Ok(mut c) = TcpStream::connect_timeout(&to, S) else {
                        continue;
                    };
                    c.set_nodelay(true).ok();
                    c.set_read_timeout(Some(S)).ok();
                    for _ in 0..3 {
                        if c.write_all(&[b'x'; 100]).is_err() || c.read_exact(&mut buf).is_err() {
                            break;
                        }
                        done += 1;
                    }
                }
            }
        }
        done
    })
}

#[test]
fn group_by_subnet_yields_one_series_per_subnet_and_max_series_overflow_is_counted() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let _load = support::heavy();
    let p = Pair::new("flg", 33);
    let dir = TempDir::new("flgroup");
    let _srv = EchoServer::start(&p.s, "0.0.0.0:7000");
    let sub_rx = Statsd::udp(p.c.enter(|| UdpSocket::bind("127.0.0.1:8125").unwrap()));
    let cap_rx = Statsd::udp(p.c.enter(|| UdpSocket::bind("127.0.0.1:8126").unwrap()));
    let sub_cfg = dir.write(
        "subnet.yaml",
        &config(
            8125,
            "127.0.0.1:9464",
            "'10.210.0.0/16'",
            "",
            "    group_by: subnet\n",
        ),
    );
    let cap_cfg = dir.write(
        "capped.yaml",
        &config(
            8126,
            "127.0.0.1:9465",
            "'10.210.0.0/16'",
            "  max_series: 50\n",
            "",
        ),
    );
    let mut sub = Agent::start(
        &p.c,
        &["run", "--config", sub_cfg.to_str().unwrap()],
        &dir.path("stderr-subnet"),
    );
    let mut cap = Agent::start(
        &p.c,
        &["run", "--config", cap_cfg.to_str().unwrap()],
        &dir.path("stderr-capped"),
    );
    sub.wait_log("capture filter", 20 * S);
    cap.wait_log("capture filter", 20 * S);
    let stop = Arc::new(AtomicBool::new(false));
    let traffic = many_addresses(&p, 3, 100, stop.clone());
    // Wait for flushes that saw every address.
    let all = sub_rx.wait_for(&mut sub, 60 * S, "three flushes with samples", |m| {
        named(m, "system.net.tcp.rtt.samples").len() >= 9
    });
    cap_rx.wait_for(&mut cap, 30 * S, "an overflow", |m| {
        named(m, "metro.series.overflow")
            .iter()
            .any(|o| o.value > 0.0)
    });
    stop.store(true, Ordering::Relaxed);
    let requests = traffic.join().unwrap();
    assert!(requests >= 900, "{requests} requests");
    let capped_body = http_get(&p.c, "127.0.0.1:9465", "/metrics");
    // The capped agent's last flush (SIGTERM flushes) arrives whole before it is read.
    cap.terminate(20 * S);
    let mut cap_rx = cap_rx;
    cap_rx.finish();

    // group_by: subnet: exactly the three /24s, for every per-pair metric.
    let want: BTreeSet<String> = (0..3).map(|k| format!("10.210.{k}.0/24")).collect();
    for name in [
        "system.net.tcp.rtt",
        "system.net.tcp.rtt.p99",
        "system.net.tcp.rtt.samples",
        "system.net.tcp.retransmits",
    ] {
        let dsts: BTreeSet<String> = named(&all, name)
            .iter()
            .map(|m| m.tag("dst").unwrap().to_string())
            .collect();
        assert_eq!(dsts, want, "{name}");
    }
    let body = http_get(&p.c, "127.0.0.1:9464", "/metrics");
    promtool_check_metrics(&dir, &body);
    let hist_dsts: BTreeSet<&str> = body
        .lines()
        .filter(|l| l.starts_with("metro_tcp_rtt_seconds_count{"))
        .filter_map(|l| l.split("dst=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(
        hist_dsts,
        want.iter().map(String::as_str).collect::<BTreeSet<_>>()
    );

    // max_series: 50 with one series per host: at most 50 named series and `dst:other` per
    // flush, the overflow counted, and the samples under `other` are exactly the overflow.
    let capped = cap_rx.all();
    // A flush ends with its metro.statsd.send_errors line.
    let mut flushes: Vec<BTreeSet<String>> = vec![BTreeSet::new()];
    for m in &capped {
        if m.name == "system.net.tcp.rtt.samples" {
            let cur = flushes.last_mut().unwrap();
            assert!(
                cur.insert(m.tag("dst").unwrap().to_string()),
                "a series twice in one flush"
            );
        } else if m.name == "metro.statsd.send_errors" {
            flushes.push(BTreeSet::new());
        }
    }
    assert!(flushes.iter().any(|s| s.contains("other")), "{flushes:?}");
    for s in &flushes {
        assert!(s.len() <= 51, "{} series in one flush", s.len());
    }
    assert!(
        flushes.iter().any(|s| s.len() == 51),
        "no flush used the whole budget"
    );
    let other: f64 = named(&capped, "system.net.tcp.rtt.samples")
        .iter()
        .filter(|m| m.tag("dst") == Some("other"))
        .map(|m| m.value)
        .sum();
    let overflow: f64 = named(&capped, "metro.series.overflow")
        .iter()
        .map(|m| m.value)
        .sum();
    assert!(overflow > 0.0);
    assert_eq!(other, overflow);
    let line = capped_body
        .lines()
        .find(|l| l.starts_with("metro_series_overflow_total{"))
        .unwrap_or_else(|| panic!("{capped_body}"));
    let exported: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(exported > 0.0, "{line}");
    // The exposition keeps the budget over its lifetime, not per interval only: 300 hosts
    // took turns at the 50 named series of each flush, and the exposition still holds 50
    // named series; what it refused is under dst="other", counted as overflow.
    let prom_samples: Vec<(&str, f64)> = capped_body
        .lines()
        .filter(|l| l.starts_with("metro_tcp_rtt_samples_total{"))
        .map(|l| {
            let dst = l.split("dst=\"").nth(1).unwrap().split('"').next().unwrap();
            (dst, l.rsplit(' ').next().unwrap().parse().unwrap())
        })
        .collect();
    let named_hosts: BTreeSet<&str> = capped
        .iter()
        .filter(|m| m.name == "system.net.tcp.rtt.samples")
        .filter_map(|m| m.tag("dst"))
        .filter(|d| *d != "other")
        .collect();
    let prom_named = prom_samples.iter().filter(|(d, _)| *d != "other").count();
    eprintln!(
        "max_series 50: {} hosts named in DogStatsD flushes, {prom_named} named series in the exposition",
        named_hosts.len()
    );
    assert!(
        named_hosts.len() > 50,
        "the test's traffic never exceeded the budget"
    );
    assert_eq!(prom_named, 50, "{capped_body}");
    let prom_other: f64 = prom_samples
        .iter()
        .filter(|(d, _)| *d == "other")
        .map(|x| x.1)
        .sum();
    assert_eq!(prom_other, exported, "{capped_body}");
    for family in [
        "metro_tcp_rtt_seconds_count{",
        "metro_tcp_retransmits_total{",
    ] {
        let n = capped_body
            .lines()
            .filter(|l| l.starts_with(family))
            .count();
        assert!(n <= 51, "{n} series of {family}");
    }
    assert!(sub.alive());
}

/// The Python that has PyPI's opentelemetry-proto (`.ci/run` makes a venv and sets
/// `METRO_PYTHON`), or None and the test is skipped, saying so (a failure under .ci/run).
fn otlp_python() -> Option<String> {
    let py = std::env::var("METRO_PYTHON").unwrap_or_else(|_| "python3".into());
    let ok = Command::new(&py)
        .args([
            "-c",
            "import opentelemetry.proto.collector.metrics.v1.metrics_service_pb2",
        ])
        .status()
        .is_ok_and(|s| s.success());
    metro_testkit::root::needs(
        ok,
        &format!("{py} cannot import opentelemetry.proto"),
        "`pip install opentelemetry-proto==1.45.2`, or set METRO_PYTHON to a Python that can; \
         .ci/run does",
    )
    .then_some(py)
}

#[test]
fn otlp_receiver_decodes_exponential_histograms_whose_counts_and_sums_match() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let _load = support::heavy();
    let Some(py) = otlp_python() else {
        return;
    };
    let d = Delayed::new("flo", 34, Duration::from_millis(5));
    let dir = TempDir::new("flotlp");
    let srv = EchoServer::start(&d.s, "10.200.34.2:7000");
    let rx = Statsd::udp(d.c.enter(|| UdpSocket::bind("127.0.0.1:8125").unwrap()));
    let out = dir.path("otlp.jsonl");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/it/support/otlp_receiver.py"
    );
    let mut receiver =
        d.c.command(&py)
            .args([script, "127.0.0.1:4318", out.to_str().unwrap()])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the OTLP receiver");
    let mut ready = [0u8; 6];
    receiver
        .stdout
        .as_mut()
        .unwrap()
        .read_exact(&mut ready)
        .expect("the OTLP receiver did not start");
    assert_eq!(&ready, b"ready\n");
    let cfg = dir.write(
        "metro.yaml",
        &config(
            8125,
            "off",
            "'10.200.34.2'",
            "  distributions: true\n  otlp_endpoint: http://127.0.0.1:4318\n",
            "",
        ),
    );
    let mut ag = Agent::run_config(&d.c, &cfg, &dir);
    ag.wait_log("capture filter", 20 * S);
    let mut client = Client::start(&d.c, srv.addr, 200, Duration::from_millis(2), 50);
    rx.wait_for(&mut ag, 30 * S, "three flushes with samples", |m| {
        named(m, "system.net.tcp.rtt.samples").len() >= 3
    });
    client.stop();
    ag.terminate(20 * S);
    // The receiver writes each push before it answers it, and the agent waits for the
    // answer to its last push before it exits: everything is in `out` by now.
    let _ = receiver.kill();
    let _ = receiver.wait();

    let mut rx = rx;
    let all = rx.finish();
    let sent: f64 = named(&all, "system.net.tcp.rtt.samples")
        .iter()
        .map(|m| m.value)
        .sum();
    let values: Vec<f64> = named(&all, "system.net.tcp.rtt.distribution")
        .iter()
        .map(|m| m.value / 1000.0)
        .collect();
    assert_eq!(values.len() as f64, sent);
    let text = std::fs::read_to_string(&out).expect("the receiver got nothing");
    let (mut count, mut sum, mut pushes, mut samples_sum) = (0u64, 0.0, 0, 0i64);
    // Every self-metric of the catalog (but the container ones: attribution is off) in
    // every push, as in DogStatsD.
    let catalog: Vec<&str> = metro::agent::sinks::catalog::SELF
        .iter()
        .map(|m| m.name)
        .filter(|n| !n.starts_with("metro.containers."))
        // Responses by rcode: points only for the rcodes seen (no DNS here).
        .filter(|n| *n != "system.net.dns.responses")
        .collect();
    for name in &catalog {
        assert!(!named(&all, name).is_empty(), "{name} not in DogStatsD");
    }
    for line in text.lines() {
        let rec: serde_json::Value = serde_json::from_str(line).unwrap();
        pushes += 1;
        let names: BTreeSet<&str> = rec["metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["name"].as_str().unwrap())
            .collect();
        // metro.distribution.dropped goes with distribution values, as in DogStatsD: a push
        // of an interval without samples (the last, after the client stopped) has none.
        let has_pairs = names.contains("metro.tcp.rtt");
        for name in &catalog {
            assert!(
                names.contains(name) || (*name == "metro.distribution.dropped" && !has_pairs),
                "{name} not in an OTLP push: {names:?}"
            );
        }
        let res = &rec["resource"][0];
        assert_eq!(res["service.name"], "metro");
        assert_eq!(res["service.version"], env!("CARGO_PKG_VERSION"));
        assert!(!res["host.name"].as_str().unwrap().is_empty());
        for m in rec["metrics"].as_array().unwrap() {
            match m["name"].as_str().unwrap() {
                "metro.tcp.rtt" => {
                    assert_eq!(m["type"], "exponential_histogram");
                    assert_eq!(m["unit"], "s");
                    assert_eq!(m["temporality"], 1, "delta");
                    for p in m["points"].as_array().unwrap() {
                        let a = &p["attributes"];
                        assert_eq!(
                            (&a["src"], &a["dst"], &a["iface"], &a["env"]),
                            (
                                &serde_json::json!("10.200.34.1"),
                                &serde_json::json!("10.200.34.2"),
                                &serde_json::json!("veth0"),
                                &serde_json::json!("fleet")
                            )
                        );
                        let n = p["count"].as_u64().unwrap();
                        let buckets: u64 = p["bucket_counts"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|b| b.as_u64().unwrap())
                            .sum();
                        assert_eq!(buckets + p["zero_count"].as_u64().unwrap(), n);
                        // The values lie in the buckets' range.
                        let scale = p["scale"].as_i64().unwrap() as i32;
                        let base = 2f64.powf(2f64.powi(-scale));
                        let lo = base.powi(p["offset"].as_i64().unwrap() as i32);
                        let hi = base.powi(
                            p["offset"].as_i64().unwrap() as i32
                                + p["bucket_counts"].as_array().unwrap().len() as i32,
                        );
                        let (min, max) = (p["min"].as_f64().unwrap(), p["max"].as_f64().unwrap());
                        assert!(lo < min && max <= hi * (1.0 + 1e-9), "{p}");
                        count += n;
                        sum += p["sum"].as_f64().unwrap();
                    }
                }
                "metro.tcp.rtt.samples" => {
                    for p in m["points"].as_array().unwrap() {
                        samples_sum += p["value"].as_i64().unwrap();
                    }
                }
                _ => {}
            }
        }
    }
    let want_sum: f64 = values.iter().sum();
    eprintln!(
        "{pushes} pushes: count {count} (DogStatsD {sent}), sum {sum:.6} s (distribution values {want_sum:.6} s)"
    );
    assert!(pushes >= 3);
    assert_eq!(count as f64, sent, "histogram counts vs samples sent");
    assert_eq!(samples_sum as f64, sent);
    // DogStatsD values are rounded to the microsecond (ms with three decimals).
    assert!(
        (sum - want_sum).abs() <= values.len() as f64 * 1e-6,
        "OTLP sum {sum} s vs DogStatsD values {want_sum} s"
    );
}

#[test]
fn samples_out_writes_every_sample_and_a_reader_that_never_reads_costs_none() {
    if !netns::needs_root("two agents in network namespaces") {
        return;
    }
    let _load = support::heavy();
    let p = Pair::new("fls", 35);
    let dir = TempDir::new("flsamples");
    let srv = EchoServer::start(&p.s, "10.200.35.2:7000");
    let rx = Statsd::udp(p.c.enter(|| UdpSocket::bind("127.0.0.1:8125").unwrap()));
    let stuck_rx = Statsd::udp(p.c.enter(|| UdpSocket::bind("127.0.0.1:8126").unwrap()));
    let out = dir.path("samples.jsonl");
    // A FIFO opened for reading and never read: its 64 KiB fill, then every write blocks.
    let fifo = dir.path("stuck.fifo");
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: plain libc calls on a path we own; the fd is closed at the end.
    let fd = unsafe {
        assert_eq!(libc::mkfifo(c.as_ptr(), 0o600), 0);
        libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK)
    };
    assert!(fd >= 0);
    let cfg = dir.write("metro.yaml", &config(8125, "off", "'10.200.35.2'", "", ""));
    let stuck_cfg = dir.write("stuck.yaml", &config(8126, "off", "'10.200.35.2'", "", ""));
    let mut ag = Agent::run_samples(&p.c, &cfg, &out, &dir.path("stderr"));
    let mut stuck = Agent::run_samples(&p.c, &stuck_cfg, &fifo, &dir.path("stderr-stuck"));
    ag.wait_log("capture filter", 20 * S);
    stuck.wait_log("capture filter", 20 * S);
    // Fast traffic: thousands of samples a second, far more than 64 KiB of lines.
    let mut client = Client::start(&p.c, srv.addr, 100, Duration::ZERO, 1000);
    stuck.wait_log("lines lost so far", 30 * S);
    // Traffic goes on while the stuck reader loses lines: until 3000 samples are reported.
    rx.wait_for(&mut ag, 30 * S, "3000 samples", |m| {
        named(m, "system.net.tcp.rtt.samples")
            .iter()
            .map(|x| x.value)
            .sum::<f64>()
            >= 3000.0
    });
    client.stop();
    // Both read everything captured before they stop: each sent a flush of an interval
    // that began after the client stopped.
    let stopped = Instant::now();
    for (r, a) in [(&rx, &mut ag), (&stuck_rx, &mut stuck)] {
        r.wait_flush_after(a, stopped, S);
    }
    for a in [&mut ag, &mut stuck] {
        a.terminate(20 * S);
    }
    // SAFETY: closing the fd opened above.
    unsafe { libc::close(fd) };
    let (mut rx, mut stuck_rx) = (rx, stuck_rx);
    rx.finish();
    stuck_rx.finish();

    let sent: f64 = named(&rx.all(), "system.net.tcp.rtt.samples")
        .iter()
        .map(|m| m.value)
        .sum();
    let text = std::fs::read_to_string(&out).unwrap();
    let mut from_server = 0;
    for line in text.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert_eq!(v["iface"], "veth0");
        assert!(v.get("file").is_none() && v.get("frame").is_none());
        assert!(["seq", "handshake", "ts"].contains(&v["kind"].as_str().unwrap()));
        assert!(v["rtt_ms"].as_f64().unwrap() >= 0.0);
        if v["src"] == "10.200.35.2" {
            assert_eq!(v["dst"], "10.200.35.1");
            from_server += 1;
        }
    }
    eprintln!(
        "{} lines, {from_server} answered by the server; DogStatsD {sent}",
        text.lines().count()
    );
    assert!(sent > 1000.0, "{sent} samples");
    // Every sample the agent reported is a line (and answered by the watched server).
    assert_eq!(from_server as f64, sent);
    assert!(ag.log().contains(", 0 lost"), "{}", ag.log());

    // The agent whose reader never reads lost lines, said so, and measured every sample
    // all the same: its counts equal the other agent's, on the same traffic.
    let stuck_sent: f64 = named(&stuck_rx.all(), "system.net.tcp.rtt.samples")
        .iter()
        .map(|m| m.value)
        .sum();
    let count =
        |rx: &Statsd, name: &str| -> f64 { named(&rx.all(), name).iter().map(|m| m.value).sum() };
    eprintln!(
        "received {} / {}, dropped {} / {}",
        count(&rx, "metro.packets.received"),
        count(&stuck_rx, "metro.packets.received"),
        count(&rx, "metro.packets.dropped"),
        count(&stuck_rx, "metro.packets.dropped")
    );
    assert_eq!(stuck_sent, sent, "{}", stuck.log());
    let dropped: f64 = named(&stuck_rx.all(), "metro.packets.dropped")
        .iter()
        .map(|m| m.value)
        .sum();
    assert_eq!(dropped, 0.0);
}

/// Issue 22 item 3: an OTLP receiver that accepts and answers one byte every 2.9 s, beside
/// a healthy DogStatsD receiver. DogStatsD gets every flush on time (each second, not two
/// in 20 s), the slow pushes are counted as failures, and SIGTERM exits within a few
/// seconds, the last flush reaching DogStatsD.
#[test]
fn a_slow_otlp_receiver_delays_only_itself() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let _load = support::heavy();
    let p = Pair::new("flslow", 37);
    let dir = TempDir::new("flslow");
    let listener = p.c.enter(|| TcpListener::bind("127.0.0.1:4318").unwrap());
    listener.set_nonblocking(true).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let st = stop.clone();
    let trickler = std::thread::spawn(move || {
        let answer = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n";
        let mut conns: Vec<(TcpStream, usize)> = Vec::new();
        let mut accepted = 0;
        let mut next = Instant::now();
        while !st.load(Ordering::Relaxed) {
            while let Ok((c, _)) = listener.accept() {
                accepted += 1;
                conns.push((c, 0));
            }
            if Instant::now() >= next {
                for (c, sent) in &mut conns {
                    if *sent < answer.len() && c.write_all(&answer[*sent..*sent + 1]).is_ok() {
                        *sent += 1;
                    }
                }
                next += Duration::from_millis(2900);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        accepted
    });
    let rx = flushes_on_time_beside(&p, &dir, "10.200.37.2", "http://127.0.0.1:4318");
    stop.store(true, Ordering::Relaxed);
    let accepted = trickler.join().unwrap();
    assert!(accepted >= 2, "{accepted} pushes reached the receiver");
    drop(rx);
}

/// Issue 22 item 3: an OTLP endpoint whose name no resolver answers (the namespace's
/// resolv.conf names a nameserver that reads queries and never replies; glibc would wait
/// 3 s twice): DogStatsD's flushes stay a second apart and SIGTERM exits within a few
/// seconds.
#[test]
fn a_black_holed_otlp_name_delays_only_its_pushes() {
    if !netns::needs_root("the agent in network namespaces") {
        return;
    }
    let _load = support::heavy();
    let p = Pair::new("fldns", 38);
    let dir = TempDir::new("fldns");
    p.c.write_etc("hosts", "127.0.0.1 localhost\n");
    p.c.write_etc(
        "resolv.conf",
        "nameserver 127.0.0.1\noptions timeout:3 attempts:2\n",
    );
    // The black hole: queries arrive and are never answered.
    let hole = p.c.enter(|| UdpSocket::bind("127.0.0.1:53").unwrap());
    let rx = flushes_on_time_beside(
        &p,
        &dir,
        "10.200.38.2",
        "http://collector.blackhole.test:4318",
    );
    hole.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    assert!(
        hole.recv(&mut buf).is_ok(),
        "no DNS query reached the black hole"
    );
    drop(rx);
}

/// With an OTLP receiver at `endpoint` that does not answer in time, DogStatsD (on
/// 127.0.0.1:8125 in `p.c`) gets a flush every second, the failed pushes are counted, and
/// SIGTERM exits within a few seconds, the last flush reaching DogStatsD.
fn flushes_on_time_beside(p: &Pair, dir: &TempDir, server: &str, endpoint: &str) -> Statsd {
    let srv = EchoServer::start(&p.s, &format!("{server}:7000"));
    let rx = Statsd::udp(p.c.enter(|| UdpSocket::bind("127.0.0.1:8125").unwrap()));
    let cfg = dir.write(
        "metro.yaml",
        &config(
            8125,
            "off",
            &format!("'{server}'"),
            &format!("  otlp_endpoint: {endpoint}\n"),
            "",
        ),
    );
    let mut ag = Agent::run_config(&p.c, &cfg, dir);
    ag.wait_log("capture filter", 20 * S);
    let mut client = Client::start(&p.c, srv.addr, 200, Duration::from_millis(10), 50);
    // A flush ends with its metro.statsd.send_errors line.
    let flushes = |m: &[Metric]| named(m, "metro.statsd.send_errors").len();
    let all = rx.wait_for(&mut ag, 40 * S, "15 flushes", |m| {
        flushes(m) >= 15
            && named(m, "metro.otlp.send_errors")
                .iter()
                .any(|e| e.value > 0.0)
    });
    let times: Vec<Instant> = named(&all, "metro.statsd.send_errors")
        .iter()
        .map(|m| m.at)
        .collect();
    let longest = times
        .windows(2)
        .map(|w| w[1].duration_since(w[0]))
        .max()
        .unwrap();
    let span = times.last().unwrap().duration_since(times[0]);
    eprintln!(
        "{} DogStatsD flushes in {span:?} (longest gap {longest:?}) beside {endpoint}",
        times.len()
    );
    // flush_interval: 1 s. Before each sink had its own schedule, a push held every flush
    // for as long as the receiver trickled or the name took to fail.
    assert!(longest < Duration::from_millis(1600), "gap of {longest:?}");
    let failed: f64 = named(&all, "metro.otlp.send_errors")
        .iter()
        .map(|m| m.value)
        .sum();
    assert!(failed >= 1.0);

    client.stop();
    let before = flushes(&rx.all());
    let t = Instant::now();
    ag.terminate(20 * S);
    let exit = t.elapsed();
    eprintln!("SIGTERM to exit: {exit:?}");
    assert!(exit < 4 * S, "SIGTERM took {exit:?}");
    // The last flush reached the healthy receiver (the agent has exited: its datagrams are
    // in the receiver's socket or already read).
    let end = Instant::now() + 5 * S;
    let mut last = rx.all();
    while flushes(&last) <= before && Instant::now() < end {
        std::thread::sleep(Duration::from_millis(50));
        last = rx.all();
    }
    assert!(
        named(&last, "metro.statsd.send_errors")
            .iter()
            .any(|m| m.at >= t),
        "no flush after SIGTERM"
    );
    rx
}
