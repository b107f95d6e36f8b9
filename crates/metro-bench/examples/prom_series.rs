//! The Prometheus exposition under many clients (issue 22 item 2):
//! `prom_series CLIENTS PER_INTERVAL BUDGET [hist]` feeds `Prom::observe` interval reports
//! of PER_INTERVAL new remote hosts (one sample each, histograms with `hist`) until CLIENTS
//! hosts were seen, under a series budget (`max_series`; 0: none, the behaviour before the
//! lifetime bound), then renders `/metrics` once. Prints the named pair series held, the
//! registry's RSS growth, the RSS growth after the scrape and the exposition's size.
use std::sync::Arc;

use metro::agent::config::DEFAULT_BUCKETS;
use metro::agent::fleet::{Fine, IntervalOpts};
use metro::agent::report::{InstanceCounters, InstanceReport, PairReport};
use metro::agent::sinks::SendErrors;
use metro::agent::sinks::prom::Prom;
use metro_core::aggregate::Stats;

fn rss_kb() -> u64 {
    let s = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    s.split(' ')
        .nth(1)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 4
}

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize, d: usize| a.get(i).map_or(d, |s| s.parse().expect("a number"));
    let (clients, per, budget) = (arg(1, 120_000), arg(2, 10_000), arg(3, 10_000));
    let hist = a.get(4).is_some_and(|s| s == "hist");
    let o = IntervalOpts {
        buckets_ms: hist.then(|| Arc::from(DEFAULT_BUCKETS.map(|b| b * 1000.0).to_vec())),
        ..IntervalOpts::default()
    };
    let report = |first: usize| {
        let pairs = (first..(first + per).min(clients))
            .map(|n| {
                let (mut s, mut f, mut room) = (Stats::new(), Fine::new(&o), usize::MAX);
                s.add(12.0);
                f.add(12.0, &o, &mut room);
                PairReport {
                    src: "10.0.0.1".parse().unwrap(),
                    protocol: 0,
                    dst: format!("100.{}.{}.{}", n >> 16 & 255, n >> 8 & 255, n & 255).into(),
                    stats: s,
                    retransmits: 0,
                    fine: hist.then(|| Box::new(f)),
                    extra_tags: vec![],
                    baseline_ms: None,
                }
            })
            .collect();
        InstanceReport {
            iface: "eth0".into(),
            tags: vec!["env:prod".into()],
            pairs,
            counters: InstanceCounters::default(),
        }
    };
    let p = Prom::new();
    p.set_max_series(if budget == 0 { usize::MAX } else { budget });
    // One report built and dropped first: the heap it leaves is what each later report
    // reuses, so that the growth measured is the registry's, not the input's.
    drop(report(0));
    let before = rss_kb();
    for first in (0..clients).step_by(per) {
        p.observe(&report(first), SendErrors::default());
    }
    let held = rss_kb() - before;
    let text = p.render_text();
    let scraped = rss_kb() - before;
    let named = text
        .lines()
        .filter(|l| l.starts_with("metro_tcp_rtt_samples_total{") && !l.contains("dst=\"other\""))
        .count();
    println!(
        "clients {clients} per interval {per} budget {budget} hist {hist}: {named} named series, \
         registry +{} MB RSS, after a scrape +{} MB, /metrics {:.1} MB",
        held / 1024,
        scraped / 1024,
        text.len() as f64 / 1e6
    );
}
