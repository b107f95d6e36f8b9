//! Generator throughput: `gen_speed PACKETS CONNECTIONS [sink]` (sink: no file).
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let packets: u64 = a.get(1).map_or(1_000_000, |s| s.parse().unwrap());
    let conns: u32 = a.get(2).map_or(10_000, |s| s.parse().unwrap());
    let cfg = metro_testkit::generator::GenConfig {
        packets,
        connections: conns,
        ..Default::default()
    };
    let t = std::time::Instant::now();
    let s = if a.get(3).is_some_and(|s| s == "sink") {
        metro_testkit::generator::write_capture(&cfg, std::io::sink()).unwrap()
    } else {
        let f = std::fs::File::create("/tmp/gen_speed.pcap").unwrap();
        metro_testkit::generator::write_capture(&cfg, std::io::BufWriter::with_capacity(1 << 20, f))
            .unwrap()
    };
    let e = t.elapsed().as_secs_f64();
    eprintln!("{s:?} {:.2} s {:.2} Mpps", e, s.packets as f64 / e / 1e6);
}
