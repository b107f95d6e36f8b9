//! What container attribution costs, printed as figures (run as root for the real walk):
//! `cargo run --release -p metro --example containers_cost`.
//!
//! - One discovery refresh (`agent::containers::discover`) against a bare listing of the
//!   same processes' namespace links, measured in the same run.
//! - The copy test of `interface: any` (`agent::dedupe`) per packet against decoding the
//!   same frame (`metro_core::wire::decode`, which every packet pays anyway): routed copies
//!   (three sightings of each packet), and a masqueraded connection (each packet out seen
//!   on the container's veth then NAT'd on the uplink, each packet in NAT'd on the uplink
//!   then on the veth), with the agent's ranking of addresses.

use std::hint::black_box;
use std::time::Instant;

use metro::agent::containers::{Limits, Roots, discover};
use metro::agent::dedupe::Dedupe;
use metro_core::wire::linktype::LINUX_SLL2;

fn bare_walk() -> usize {
    let mut n = 0;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if e.file_name()
            .to_str()
            .is_some_and(|s| s.parse::<u32>().is_ok())
            && std::fs::read_link(e.path().join("ns/net")).is_ok()
        {
            n += 1;
        }
    }
    n
}

fn frame(i: u32, ifindex: u32) -> Vec<u8> {
    nat_frame(i, ifindex, [10, 0, 0, 2], 40000, [10, 9, 0, 2], 80)
}

/// A TCP/IPv4 frame on `ifindex` from `src`:`sport` to `dst`:`dport`, content numbered `i`.
fn nat_frame(i: u32, ifindex: u32, src: [u8; 4], sport: u16, dst: [u8; 4], dport: u16) -> Vec<u8> {
    let mut f = vec![0x08, 0x00, 0, 0];
    f.extend(ifindex.to_be_bytes());
    f.extend([0, 1, 0, 6, 2, 0, 0, 0, 0, 1, 0, 0]);
    let mut ip = vec![
        0x45,
        0,
        0,
        52,
        (i >> 8) as u8,
        i as u8,
        0x40,
        0,
        64,
        6,
        0,
        0,
    ];
    ip.extend(src);
    ip.extend(dst);
    let mut tcp = vec![0u8; 32];
    tcp[0..2].copy_from_slice(&sport.to_be_bytes());
    tcp[2..4].copy_from_slice(&dport.to_be_bytes());
    tcp[4..8].copy_from_slice(&i.to_be_bytes());
    tcp[12] = 0x80;
    tcp[13] = 0x10;
    ip.extend(tcp);
    f.extend(ip);
    f
}

fn main() {
    const ROUNDS: u32 = 20;
    let t = Instant::now();
    let mut procs = 0;
    for _ in 0..ROUNDS {
        procs = black_box(bare_walk());
    }
    let bare = t.elapsed().as_secs_f64() / f64::from(ROUNDS);
    let t = Instant::now();
    let mut a = None;
    for _ in 0..ROUNDS {
        a = Some(black_box(discover(&Roots::default(), Limits::default())));
    }
    let full = t.elapsed().as_secs_f64() / f64::from(ROUNDS);
    let a = a.unwrap();
    println!(
        "discovery: {procs} processes, {} namespaces ({} attributed), {} addresses: \
         {:.2} ms per refresh, {:.1} x a bare walk of the namespace links ({:.2} ms)",
        a.stats.namespaces,
        a.stats.namespaces_attributed,
        a.len(),
        full * 1e3,
        full / bare,
        bare * 1e3
    );

    // Three sightings per packet (veth, bridge, uplink), as on a container host.
    let frames: Vec<Vec<u8>> = (0..100_000u32)
        .flat_map(|i| [frame(i, 5), frame(i, 3), frame(i, 2)])
        .collect();
    let t = Instant::now();
    let mut ok = 0usize;
    for f in &frames {
        ok += usize::from(metro_core::wire::decode(LINUX_SLL2, black_box(f)).is_ok());
    }
    let decode = t.elapsed().as_secs_f64();
    let mut d = Dedupe::new();
    let t = Instant::now();
    for (i, f) in frames.iter().enumerate() {
        black_box(d.is_copy(LINUX_SLL2, i as i64 * 1000, black_box(f)));
    }
    let dedupe = t.elapsed().as_secs_f64();
    let n = frames.len() as f64;
    println!(
        "dedupe: {} frames, {} copies found: {:.1} ns per frame, {:.2} x decoding it ({:.1} ns; {ok} decoded)",
        frames.len(),
        d.copies,
        dedupe / n * 1e9,
        dedupe / decode,
        decode / n * 1e9
    );

    // Masquerade: out veth (inner) then uplink (outer); in uplink (outer) then veth (inner).
    let (ctr, host, srv) = ([10, 88, 0, 2], [192, 0, 2, 1], [198, 51, 100, 7]);
    let nat: Vec<Vec<u8>> = (0..75_000u32)
        .flat_map(|i| {
            let j = i + 1_000_000;
            [
                nat_frame(i, 5, ctr, 40000, srv, 443),
                nat_frame(i, 2, host, 61000, srv, 443),
                nat_frame(j, 2, srv, 443, host, 61000),
                nat_frame(j, 5, srv, 443, ctr, 40000),
            ]
        })
        .collect();
    let rank = |ip: std::net::IpAddr| match ip {
        std::net::IpAddr::V4(a) if a.octets() == host => 0,
        std::net::IpAddr::V4(a) if a.octets() == ctr => 2,
        _ => 1,
    };
    let mut d = Dedupe::new();
    let t = Instant::now();
    for (i, f) in nat.iter().enumerate() {
        black_box(d.is_copy_ranked(LINUX_SLL2, i as i64 * 1000, black_box(f), rank));
    }
    let nat_t = t.elapsed().as_secs_f64();
    let n = nat.len() as f64;
    println!(
        "dedupe, masqueraded: {} frames, {} NAT copies found: {:.1} ns per frame, {:.2} x decoding a frame",
        nat.len(),
        d.nat_copies,
        nat_t / n * 1e9,
        (nat_t / n) / (decode / frames.len() as f64),
    );
}
