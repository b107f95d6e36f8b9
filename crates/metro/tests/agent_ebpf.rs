//! The in-kernel capture (agent::ebpf) against libpcap on the same frames: the kernel's
//! verifier loads the program (CI runs this as root), it is attached to a veth in a network
//! namespace, frames are replayed into the veth with tcpreplay, and libpcap captures the
//! same interface at the same time. The records the program writes must be exactly the
//! Segments metro-core decodes from libpcap's copies, in the same order; what the program
//! does not decode must show in its counters.

#[path = "support/corpus.rs"]
mod corpus;
#[path = "support/netns.rs"]
mod netns;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use corpus::corpus_files;
use metro::agent::config::Cidr;
use metro::agent::ebpf::{Kernel, RING_BYTES};
use metro::agent::resolve::WatchList;
use metro_core::Segment;
use metro_core::wire::{self, linktype};
use metro_testkit::pcap::PcapWriter;
use netns::{Netns, veth};

fn everything() -> WatchList {
    WatchList::new(vec![
        Cidr {
            addr: "0.0.0.0".parse().unwrap(),
            prefix: 0,
        },
        Cidr {
            addr: "::".parse().unwrap(),
            prefix: 0,
        },
    ])
}

/// The shape the program reads: Ethernet, at most two VLAN tags, then IPv4 or IPv6 whose
/// (first upper-layer) protocol is TCP, not a later fragment: what `tcp` lets through
/// libpcap, less the link layers the program leaves to the counters.
fn program_shape(frame: &[u8]) -> bool {
    let Ok(p) = wire::decode(linktype::ETHERNET, frame) else {
        return false;
    };
    if p.tunnel_depth != 0 {
        return false;
    }
    let mut at = 12;
    for _ in 0..3 {
        match frame.get(at..at + 2) {
            Some([0x81, 0x00]) | Some([0x88, 0xa8]) => at += 4,
            Some([0x08, 0x00]) | Some([0x86, 0xdd]) => return true,
            _ => return false,
        }
    }
    false
}

/// Ethernet frames of the corpus that fit the veth (at most 1514 bytes), up to `max`.
fn corpus_frames(max: usize) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for path in corpus_files() {
        let Ok(mut r) = metro::pcap::CaptureReader::open(&path) else {
            continue;
        };
        while let Ok(Some(rec)) = r.next_record() {
            let data: &[u8] = rec.data;
            if rec.linktype == linktype::ETHERNET && (14..=1514).contains(&data.len()) {
                out.push(data.to_vec());
                if out.len() >= max {
                    return out;
                }
            }
        }
    }
    out
}

fn write_pcap(path: &Path, frames: &[Vec<u8>]) {
    let f = std::fs::File::create(path).unwrap();
    let mut w = PcapWriter::micros(std::io::BufWriter::new(f), linktype::ETHERNET, 65535).unwrap();
    for (i, fr) in frames.iter().enumerate() {
        w.write_packet(
            1_700_000_000_000_000_000 + i as i64 * 1000,
            fr,
            fr.len() as u32,
        )
        .unwrap();
    }
    w.flush().unwrap();
}

/// What the kernel program and libpcap saw of one replay on `veth0` of `cap`.
struct Seen {
    records: Vec<Segment>,
    pcap: Vec<Vec<u8>>,
    counters: metro::agent::ebpf::Counters,
}

/// Replays `frames` from `snd` into the veth whose other end, `veth0` in `cap`, both
/// captures watch, and collects both until neither has had anything for a second.
fn replay(cap: &Netns, snd: &Netns, frames: &[Vec<u8>], tag: &str) -> Seen {
    let dir = std::env::temp_dir().join(format!("metro-ebpf-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("replay.pcap");
    write_pcap(&file, frames);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let h = cap.spawn(move || {
        let mut k = Kernel::open("veth0", RING_BYTES).unwrap_or_else(|e| panic!("{e}"));
        k.apply_watch(&everything()).unwrap();
        let mut pc = pcap::Capture::from_device("veth0")
            .unwrap()
            .immediate_mode(true)
            .buffer_size(64 << 20)
            .snaplen(65535)
            .timeout(10)
            .open()
            .unwrap()
            .setnonblock()
            .unwrap();
        ready_tx.send(()).unwrap();
        let mut records = Vec::new();
        let mut frames = Vec::new();
        let mut last = Instant::now();
        let mut finished = false;
        loop {
            let mut got = false;
            while let Some(r) = k.next_record() {
                records.push(r.segment);
                got = true;
            }
            while let Ok(p) = pc.next_packet() {
                frames.push(p.data.to_vec());
                got = true;
            }
            if got {
                last = Instant::now();
            }
            finished |= done_rx.try_recv().is_ok();
            if finished && last.elapsed() > Duration::from_secs(1) {
                break;
            }
            k.wait(10);
        }
        let counters = k.counters();
        Seen {
            records,
            pcap: frames,
            counters,
        }
    });
    ready_rx.recv().unwrap();
    let out = snd
        .command("tcpreplay")
        .args([
            "-q",
            "--pps",
            "20000",
            "-i",
            "veth0",
            file.to_str().unwrap(),
        ])
        .output()
        .expect("run tcpreplay (Debian package `tcpreplay`)");
    assert!(
        out.status.success(),
        "tcpreplay: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    done_tx.send(()).unwrap();
    let seen = h.join().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    seen
}

fn pair(tag: &str) -> (Netns, Netns) {
    let cap = Netns::new(&format!("{tag}c"));
    let snd = Netns::new(&format!("{tag}s"));
    veth(&cap, "veth0", None, &snd, "veth0", None);
    (cap, snd)
}

/// The records equal metro-core's decode of libpcap's copies, frame for frame, and the
/// frames the program does not read as TCP are in its counters when they are TCP-ish.
fn check_replay(cap: &Netns, snd: &Netns, frames: &[Vec<u8>], tag: &str, min_tcp: usize) {
    let seen = replay(cap, snd, frames, tag);
    // libpcap saw every frame tcpreplay sent (and the link's own IPv6 neighbour discovery).
    assert!(
        seen.pcap.len() >= frames.len(),
        "libpcap missed frames: {} of {}",
        seen.pcap.len(),
        frames.len()
    );
    let want: Vec<Segment> = seen
        .pcap
        .iter()
        .filter(|f| program_shape(f))
        .map(|f| Segment::decode(linktype::ETHERNET, f).unwrap())
        .collect();
    assert!(want.len() >= min_tcp, "{} TCP frames", want.len());
    for (i, (got, want)) in seen.records.iter().zip(&want).enumerate() {
        assert_eq!(got, want, "record {i}");
    }
    assert_eq!(seen.records.len(), want.len(), "{:?}", seen.counters);
    assert_eq!(seen.counters.records, want.len() as u64);
    assert_eq!(seen.counters.ring_full, 0);
    assert_eq!(seen.counters.not_watched, 0);
    // Frames metro-core decodes that the program leaves aside (MPLS, PPPoE, tunnels) are
    // counted, not lost.
    let aside = seen
        .pcap
        .iter()
        .filter(|f| !program_shape(f) && Segment::decode(linktype::ETHERNET, f).is_ok())
        .count() as u64;
    assert!(
        seen.counters.unparsed + seen.counters.malformed >= aside.min(1),
        "{aside} decodable frames aside, counters {:?}",
        seen.counters
    );
    eprintln!(
        "{tag}: {} frames, {} records, {aside} decodable elsewhere, {:?}",
        frames.len(),
        seen.records.len(),
        seen.counters
    );
}

/// Corpus frames (every Ethernet capture, up to 20,000 frames): the program's records are
/// libpcap's frames decoded by metro-core, frame for frame.
#[test]
fn records_equal_libpcap_decode_on_corpus_frames() {
    if !netns::needs_root("loading a BPF program and replaying into a veth") {
        return;
    }
    let (cap, snd) = pair("ebc");
    let frames = corpus_frames(20_000);
    assert!(frames.len() > 5_000, "{} corpus frames", frames.len());
    check_replay(&cap, &snd, &frames, "corpus", 3_000);
}

/// The decoder's test vectors on Ethernet (VLAN, QinQ, IPv6 extension headers, MPLS, PPPoE,
/// every tunnel) and 40 mutations of each (bytes overwritten at random, truncations): the
/// program reads exactly what metro-core reads as plain Ethernet/IP/TCP, and nothing else.
#[test]
fn records_equal_libpcap_decode_on_decoder_vectors_and_mutations() {
    if !netns::needs_root("loading a BPF program and replaying into a veth") {
        return;
    }
    let (cap, snd) = pair("ebv");
    // xorshift64*: deterministic pseudo-random bytes.
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    let mut next = move || {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_f491_4f6c_dd1d)
    };
    let mut frames = Vec::new();
    for (lt, base) in metro_testkit::vectors::samples() {
        if lt != linktype::ETHERNET {
            continue;
        }
        frames.push(base.clone());
        for _ in 0..40 {
            let mut f = base.clone();
            for _ in 0..1 + next() % 3 {
                let at = 12 + next() as usize % (f.len() - 12);
                match next() % 4 {
                    0 => f.truncate(at.max(14)),
                    _ => f[at] = next() as u8,
                }
            }
            frames.push(f);
        }
    }
    check_replay(&cap, &snd, &frames, "vectors", 100);
}

/// The current cgroup (v2) of this process: its directory's inode is the id
/// bpf_skb_cgroup_id reports.
fn own_cgroup_id() -> u64 {
    use std::os::unix::fs::MetadataExt;
    let s = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let path = s
        .lines()
        .find_map(|l| l.strip_prefix("0::"))
        .expect("a cgroup v2 line in /proc/self/cgroup");
    std::fs::metadata(format!("/sys/fs/cgroup{path}"))
        .unwrap()
        .ino()
}

/// Real sockets across the veth: ingress and egress records, egress ones naming the
/// sending socket's cgroup, and a watch list that lets only one peer through.
#[test]
fn egress_records_carry_the_sockets_cgroup_and_the_watch_list_filters() {
    if !netns::needs_root("loading a BPF program on a veth in a namespace") {
        return;
    }
    let (cap, snd) = pair("ebg");
    cap.ip(&["addr", "add", "10.211.0.1/24", "dev", "veth0"]);
    snd.ip(&["addr", "add", "10.211.0.2/24", "dev", "veth0"]);
    snd.ip(&["addr", "add", "10.211.0.3/24", "dev", "veth0"]);
    let server = snd.spawn(|| {
        let l = TcpListener::bind("0.0.0.0:7777").unwrap();
        for _ in 0..2 {
            let (mut s, _) = l.accept().unwrap();
            let mut b = [0u8; 100];
            s.read_exact(&mut b).unwrap();
            s.write_all(&b).unwrap();
        }
    });
    let cgroup = own_cgroup_id();
    let records = cap.enter(move || {
        let mut k = Kernel::open("veth0", RING_BYTES).unwrap_or_else(|e| panic!("{e}"));
        let only: IpAddr = "10.211.0.2".parse().unwrap();
        assert_eq!(
            k.apply_watch(&WatchList::new(vec![Cidr::host(only)]))
                .unwrap(),
            1
        );
        for to in ["10.211.0.2:7777", "10.211.0.3:7777"] {
            let to: SocketAddr = to.parse().unwrap();
            let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).unwrap();
            s.write_all(&[7u8; 100]).unwrap();
            let mut b = [0u8; 100];
            s.read_exact(&mut b).unwrap();
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut v = Vec::new();
        while let Some(r) = k.next_record() {
            v.push(r);
        }
        (v, k.counters())
    });
    server.join().unwrap();
    let (records, counters) = records;
    let watched: IpAddr = "10.211.0.2".parse().unwrap();
    assert!(
        records
            .iter()
            .all(|r| r.segment.src == watched || r.segment.dst == watched),
        "a record outside the watch list"
    );
    let out: Vec<_> = records.iter().filter(|r| r.egress).collect();
    let inn: Vec<_> = records.iter().filter(|r| !r.egress).collect();
    // SYN, ACK, data, ACK of the reply, FIN... each way.
    assert!(
        out.len() >= 3 && inn.len() >= 3,
        "{} out, {} in",
        out.len(),
        inn.len()
    );
    assert!(
        out.iter().all(|r| r.cgroup == cgroup),
        "cgroup {cgroup}: {out:?}"
    );
    assert!(inn.iter().all(|r| r.cgroup == 0));
    assert!(
        out.iter()
            .any(|r| r.segment.payload_len == 100 && r.segment.dport == 7777)
    );
    assert!(
        inn.iter()
            .any(|r| r.segment.payload_len == 100 && r.segment.sport == 7777)
    );
    // The other connection's segments were counted, not written.
    assert!(counters.not_watched >= 6, "{counters:?}");
    assert_eq!(counters.records, records.len() as u64);
}
