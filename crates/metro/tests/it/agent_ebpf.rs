//! The in-kernel capture (agent::ebpf) against libpcap on the same frames: the kernel's
//! verifier loads the program (CI runs this as root), it is attached to a veth in a network
//! namespace, frames are replayed into the veth with tcpreplay, and libpcap captures the
//! same interface at the same time. The records the program writes must be exactly the
//! Segments metro-core decodes from libpcap's copies, in the same order; what the program
//! does not decode must show in its counters.

use crate::support;
use crate::support::agent;
use crate::support::corpus;
use crate::support::frames;
use crate::support::netns;

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use agent::{Agent, METRO, TempDir, sum, udp_statsd};
use corpus::corpus_files;
use metro::agent::config::Cidr;
use metro::agent::ebpf::{Kernel, RING_BYTES};
use metro::agent::watch::WatchList;
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
    // Ring slots are sized by the snaplen: 2 KiB ones hold every corpus frame (at most 1514
    // bytes) and let 64 MiB queue all of them; longer frames take longer slots.
    let snaplen = frames
        .iter()
        .map(|f| f.len() as i32)
        .max()
        .unwrap_or(0)
        .max(2048);
    let h = cap.spawn(move || {
        let mut k = Kernel::open("veth0", RING_BYTES).unwrap_or_else(|e| panic!("{e}"));
        k.apply_watch(&everything()).unwrap();
        let mut pc = pcap::Capture::from_device("veth0")
            .unwrap()
            .immediate_mode(true)
            .buffer_size(64 << 20)
            .snaplen(snaplen)
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
    snd.tcpreplay(&["--pps", "20000", "-i", "veth0", file.to_str().unwrap()]);
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
    let _load = support::heavy();
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
    let _load = support::heavy();
    let (cap, snd) = pair("ebv");
    check_replay(&cap, &snd, &vectors_and_mutations(), "vectors", 100);
}

/// The same frames as paged skbs: padded with zeros (after the IP datagram: a trailer both
/// decoders ignore) to over a page, which the kernel's packet socket sends with only the
/// Ethernet header in the skb's linear area and the rest in a page. The program reads what
/// is not linear with bpf_skb_load_bytes instead of in place: the records are the same.
#[test]
fn records_equal_libpcap_decode_on_paged_frames() {
    if !netns::needs_root("loading a BPF program and replaying into a veth") {
        return;
    }
    let _load = support::heavy();
    let (cap, snd) = pair("ebp");
    cap.ip(&["link", "set", "veth0", "mtu", "9000"]);
    snd.ip(&["link", "set", "veth0", "mtu", "9000"]);
    let frames: Vec<Vec<u8>> = vectors_and_mutations()
        .into_iter()
        .map(|mut f| {
            f.resize(f.len().max(4200), 0);
            f
        })
        .collect();
    check_replay(&cap, &snd, &frames, "paged", 100);
}

/// Frames whose skb's linear area ends inside the headers or the TCP options: a packet
/// socket with PACKET_VNET_HDR takes the linear length from the virtio-net header
/// (`hdr_len`), so each of four option layouts (timestamps; SACK then timestamps; the
/// reverse; MSS, timestamps, window scale and SACK) goes out with 14 to 200 bytes linear,
/// the rest (4,200 bytes of payload and whatever headers did not fit) in a page. The
/// program reads the headers in place up to the linear end and by bpf_skb_load_bytes past
/// it: each record must equal metro-core's decode of the whole frame.
#[test]
fn records_equal_the_decode_whatever_part_of_the_headers_is_linear() {
    if !netns::needs_root("loading a BPF program and a packet socket in namespaces") {
        return;
    }
    let _load = support::heavy();
    let (cap, snd) = pair("ebs");
    for ns in [&cap, &snd] {
        ns.ip(&["link", "set", "veth0", "mtu", "9000"]);
    }
    let ts: &[u8] = &[1, 1, 8, 10, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
    let sack: &[u8] = &[1, 1, 5, 10, 0xde, 0xad, 0xbe, 0xef, 0xfe, 0xed, 0xfa, 0xce];
    let mss_ws: &[u8] = &[2, 4, 5, 0xb4, 1, 3, 3, 7];
    let layouts: Vec<Vec<u8>> = vec![
        ts.to_vec(),
        [sack, ts].concat(),
        [ts, sack].concat(),
        [&mss_ws[..4], ts, &mss_ws[4..], sack].concat(),
    ];
    let mut frames = Vec::new();
    for (i, opts) in layouts.iter().enumerate() {
        let mut tcp = Vec::new();
        tcp.extend(40000u16.to_be_bytes());
        tcp.extend((443 + i as u16).to_be_bytes());
        tcp.extend(0x0102_0304u32.to_be_bytes());
        tcp.extend(0xa0b0_c0d0u32.to_be_bytes());
        tcp.extend([(((20 + opts.len()) / 4) << 4) as u8, 0x18, 2, 0, 0, 0, 0, 0]);
        tcp.extend(opts);
        tcp.resize(tcp.len() + 4200, b'z');
        let ip = metro_testkit::vectors::ip4([10, 220, 0, 2], [10, 220, 0, 1], 6, &tcp);
        frames.push(metro_testkit::vectors::eth(0x0800, &ip));
    }
    let linear: [u16; 14] = [14, 30, 40, 54, 56, 58, 60, 62, 66, 70, 74, 78, 90, 200];
    let sent: Vec<Vec<u8>> = frames
        .iter()
        .flat_map(|f| linear.iter().map(move |_| f.clone()))
        .collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let h = cap.spawn(move || {
        let mut k = Kernel::open("veth0", RING_BYTES).unwrap_or_else(|e| panic!("{e}"));
        k.apply_watch(&everything()).unwrap();
        ready_tx.send(()).unwrap();
        let mut records = Vec::new();
        let (mut finished, mut last) = (false, Instant::now());
        while !(finished && last.elapsed() > Duration::from_millis(500)) {
            while let Some(r) = k.next_record() {
                if r.segment.sport == 40000 {
                    records.push(r.segment);
                }
                last = Instant::now();
            }
            finished |= done_rx.try_recv().is_ok();
            k.wait(10);
        }
        records
    });
    ready_rx.recv().unwrap();
    let to_send = frames.clone();
    snd.enter(move || {
        // SAFETY: a packet socket (the descriptor checked, owned by the File below, which
        // closes it); setsockopt reads one int; the sockaddr_ll is zeroed, then its family,
        // protocol and interface set before bind reads it.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        assert!(
            fd >= 0,
            "packet socket: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` is open and owned by nothing else.
        let sock = unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        let on: libc::c_int = 1;
        // SAFETY: as above.
        let rc = unsafe {
            let rc = libc::setsockopt(
                fd,
                libc::SOL_PACKET,
                libc::PACKET_VNET_HDR,
                (&on as *const libc::c_int).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            );
            let mut sa: libc::sockaddr_ll = std::mem::zeroed();
            sa.sll_family = libc::AF_PACKET as u16;
            sa.sll_ifindex = libc::if_nametoindex(c"veth0".as_ptr()) as i32;
            rc | libc::bind(
                fd,
                (&sa as *const libc::sockaddr_ll).cast(),
                size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        assert_eq!(
            rc,
            0,
            "PACKET_VNET_HDR, bind: {}",
            std::io::Error::last_os_error()
        );
        for f in &to_send {
            for hl in linear {
                // virtio_net_hdr: no checksum or segmentation offload, `hdr_len` linear bytes.
                let mut b = vec![0u8, 0];
                b.extend(hl.to_le_bytes());
                b.extend([0u8; 6]);
                b.extend(f);
                // SAFETY: `b` is valid for its length for the duration of the call.
                let n = unsafe { libc::send(fd, b.as_ptr().cast(), b.len(), 0) };
                assert_eq!(
                    n,
                    b.len() as isize,
                    "send: {}",
                    std::io::Error::last_os_error()
                );
            }
        }
        drop(sock);
    });
    done_tx.send(()).unwrap();
    let records = h.join().unwrap();
    let want: Vec<Segment> = sent
        .iter()
        .map(|f| Segment::decode(linktype::ETHERNET, f).unwrap())
        .collect();
    assert_eq!(records.len(), want.len());
    for (i, (r, w)) in records.iter().zip(&want).enumerate() {
        assert_eq!(r, w, "frame {i}: {} bytes linear", linear[i % linear.len()]);
    }
    // The timestamps of every layout, as written, whatever was linear.
    let ts = |r: &Segment| r.timestamp.map(|(v, e)| (v.get(), e.get()));
    assert!(
        records
            .iter()
            .all(|r| ts(r) == Some((0x1122_3344, 0x5566_7788))),
        "{records:?}"
    );
}

/// The decoder's Ethernet test vectors and 40 mutations of each (deterministic).
fn vectors_and_mutations() -> Vec<Vec<u8>> {
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
    frames
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
    let _load = support::heavy();
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

// ---- `metro run` with `capture: ebpf` beside `capture: pcap` ----

/// TCP only: the in-kernel program hands over TCP segments (libpcap would add the other
/// protocols' samples).
fn agent_config(capture: &str) -> String {
    agent_config_to(capture, 9)
}

/// [`agent_config`] sending DogStatsD to 127.0.0.1:`port`.
fn agent_config_to(capture: &str, port: u16) -> String {
    format!(
        "init_config:\n  flush_interval: 1\n  statsd_ip: 127.0.0.1\n  statsd_port: {port}\ninstances:\n  - interface: veth0\n    ips: ['0.0.0.0/0', '::/0']\n    capture: {capture}\n    protocols: [tcp]\n"
    )
}

/// A sample line's (kind, src, sport, dst, dport).
type SampleKey = (String, String, u64, String, u64);

/// A sample line's key and RTT in ms.
type SampleLine = (SampleKey, f64);

/// The sample lines of `--samples`: their keys and RTTs.
fn sample_lines(path: &Path) -> Vec<SampleLine> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            let s = |k: &str| v[k].as_str().unwrap().to_string();
            let n = |k: &str| v[k].as_u64().unwrap();
            (
                (s("kind"), s("src"), n("sport"), s("dst"), n("dport")),
                v["rtt_ms"].as_f64().unwrap(),
            )
        })
        .collect()
}

/// Two agents in `cap`, the first capturing in the kernel (`ebpf`), the second with libpcap
/// (`pcap`), each configured by `config(mode)` and writing `--samples`; returned once each
/// has set its capture filter.
fn both_ways(cap: &Netns, dir: &TempDir, config: impl Fn(&str) -> String) -> Vec<(Agent, PathBuf)> {
    ["ebpf", "pcap"]
        .into_iter()
        .map(|mode| {
            let cfg = dir.write(&format!("{mode}.yaml"), &config(mode));
            let out = dir.path(&format!("{mode}.samples"));
            let mut a = Agent::run_samples(cap, &cfg, &out, &dir.path(&format!("{mode}.stderr")));
            a.wait_log("capture filter", Duration::from_secs(30));
            (a, out)
        })
        .collect()
}

/// Stops [`both_ways`]'s agents; their sample lines, the kernel's and libpcap's.
fn stop_both(agents: &mut [(Agent, PathBuf)]) -> (Vec<SampleLine>, Vec<SampleLine>) {
    let mut got = agents.iter_mut().map(|(a, out)| {
        a.terminate(Duration::from_secs(20));
        sample_lines(out)
    });
    let k = got.next().unwrap();
    (k, got.next().unwrap())
}

/// Two agents on one interface, one capturing in the kernel and one with libpcap, on the
/// same tcpreplay of `pcap`: the same samples, in the same order, with RTTs within 0.5 ms
/// (each path reads its own clock as the frame arrives).
fn same_samples_both_ways(tag: &str, pcap: &Path, pps: &str, min_samples: usize) {
    same_samples_with(tag, pcap, pps, min_samples, &[], |_, _| {});
}

/// [`same_samples_both_ways`] with `pcap_args` added to the libpcap agent's command line and
/// `setup` run on the two namespaces first; returns the DogStatsD metrics of the agent
/// capturing in the kernel.
fn same_samples_with(
    tag: &str,
    pcap: &Path,
    pps: &str,
    min_samples: usize,
    pcap_args: &[&str],
    setup: impl Fn(&Netns, &Netns),
) -> Vec<agent::Metric> {
    let (cap, snd) = pair(tag);
    setup(&cap, &snd);
    let mut statsd = udp_statsd(&cap);
    let dir = TempDir::new(tag);
    let mut agents = Vec::new();
    for mode in ["ebpf", "pcap"] {
        let port = if mode == "ebpf" { 8125 } else { 9 };
        let cfg = dir.write(&format!("{mode}.yaml"), &agent_config_to(mode, port));
        let out = dir.path(&format!("{mode}.samples"));
        let mut args = vec![
            "run",
            "--config",
            cfg.to_str().unwrap(),
            "--samples",
            out.to_str().unwrap(),
        ];
        if mode == "pcap" {
            args.extend(pcap_args);
        }
        let mut a = Agent::start(&cap, &args, &dir.path(&format!("{mode}.stderr")));
        a.wait_log(
            if mode == "ebpf" {
                "capture in the kernel (eBPF) on veth0"
            } else {
                "capture filter"
            },
            Duration::from_secs(30),
        );
        agents.push((a, out));
    }
    snd.tcpreplay(&["--pps", pps, "-i", "veth0", pcap.to_str().unwrap()]);
    std::thread::sleep(Duration::from_secs(2));
    let (k, p) = &stop_both(&mut agents);
    eprintln!(
        "{tag}: {} samples in the kernel, {} with libpcap",
        k.len(),
        p.len()
    );
    assert!(p.len() >= min_samples, "{} samples with libpcap", p.len());
    assert_eq!(k.len(), p.len(), "sample counts differ");
    // The same samples (kind and ends, in order). Their times come from two hooks, the tc
    // program's and the packet tap's, which a loaded machine can hold apart for a moment:
    // each pair agrees within 5 ms, and the typical one (the median) within 0.1 ms.
    let mut diffs = Vec::with_capacity(k.len());
    for (i, (a, b)) in k.iter().zip(p).enumerate() {
        assert_eq!(a.0, b.0, "sample {i}");
        let d = (a.1 - b.1).abs();
        assert!(
            d < 5.0,
            "sample {i}: {} ms in the kernel, {} ms with libpcap",
            a.1,
            b.1
        );
        diffs.push(d);
    }
    diffs.sort_by(f64::total_cmp);
    let median = diffs.get(diffs.len() / 2).copied().unwrap_or(0.0);
    assert!(median < 0.1, "median difference {median} ms");
    statsd.finish()
}

/// A generated capture (IPv4 and IPv6, VLAN tags, timestamps, SACK, loss) replayed.
#[test]
fn samples_in_the_kernel_equal_libpcaps_on_a_generated_replay() {
    if !netns::needs_root("agents capturing on a veth in a namespace") {
        return;
    }
    let _load = support::timed();
    let dir = TempDir::new("ebgen");
    let file = dir.path("gen.pcap");
    let st = std::process::Command::new(METRO)
        .args([
            "generate",
            "-n",
            "20000",
            "-c",
            "200",
            "--servers",
            "20",
            "--snaplen",
            "0",
            "-o",
        ])
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.success());
    same_samples_both_ways("ebgn", &file, "10000", 2_000);
}

/// A libpcap filter that lets IP-in-IP and GRE tunnels through with TCP: what the in-kernel
/// capture follows by handing the tunnels to user space whole (libpcap's `tcp` drops them).
/// (`protochain`: behind IPv6 extension headers, AH among them, too).
const TUNNELS_TOO: &str = "tcp or ip proto 4 or ip proto 41 or ip proto 47 or ip6 protochain 4 or \
                           ip6 protochain 41 or ip6 protochain 47";

/// Corpus captures replayed: real stacks' options and shapes, tunnels among them.
#[test]
fn samples_in_the_kernel_equal_libpcaps_on_corpus_replay() {
    if !netns::needs_root("agents capturing on a veth in a namespace") {
        return;
    }
    let _load = support::timed();
    let dir = TempDir::new("ebcor");
    let file = dir.path("corpus.pcap");
    // MPLS and PPPoE frames, which the kernel path decodes in user space but no libpcap
    // filter metro builds lets through beside plain TCP, are left out of this comparison
    // (tunnelled_frames_go_to_user_space_whole_and_give_libpcaps_samples covers their way).
    let frames: Vec<Vec<u8>> = corpus_frames(20_000)
        .into_iter()
        .filter(|f| {
            let mut at = 12;
            while matches!(f.get(at..at + 2), Some([0x81, 0x00]) | Some([0x88, 0xa8])) {
                at += 4;
            }
            !matches!(
                f.get(at..at + 2),
                Some([0x88, 0x47]) | Some([0x88, 0x48]) | Some([0x88, 0x64])
            )
        })
        .collect();
    write_pcap(&file, &frames);
    same_samples_with(
        "ebcr",
        &file,
        "10000",
        500,
        &["--filter", TUNNELS_TOO],
        |_, _| {},
    );
}

/// Without CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN the kernel refuses the program:
/// `capture: auto` says so and captures with libpcap (samples flow, the gauge says 0);
/// `capture: ebpf` refuses to start and says why.
#[test]
fn a_kernel_that_refuses_the_program_falls_back_to_libpcap() {
    if !netns::needs_root("dropping capabilities and capturing in a namespace") {
        return;
    }
    let (cap, snd) = pair("ebf");
    let dir = TempDir::new("ebf");
    let drop_caps = "--drop=cap_bpf,cap_perfmon,cap_sys_admin";
    let spawn = |mode: &str| {
        let cfg = dir.write(
            &format!("{mode}.yaml"),
            &agent_config(mode).replace("statsd_port: 9", "statsd_port: 8125"),
        );
        let err = std::fs::File::create(dir.path(&format!("{mode}.stderr"))).unwrap();
        cap.command("capsh")
            .args([drop_caps, "--", "-c", "exec \"$0\" \"$@\""])
            .args([METRO, "run", "--config", cfg.to_str().unwrap()])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(err)
            .spawn()
            .expect("run capsh (Debian package libcap2-bin)")
    };
    let log = |mode: &str| std::fs::read_to_string(dir.path(&format!("{mode}.stderr"))).unwrap();

    // capture: ebpf cannot run: exit non-zero, naming what is missing.
    let st = spawn("ebpf").wait().unwrap();
    assert!(!st.success(), "{}", log("ebpf"));
    assert!(log("ebpf").contains("CAP_BPF"), "{}", log("ebpf"));

    // capture: auto falls back, and measures.
    let rx = cap.enter(|| {
        let s = std::net::UdpSocket::bind("127.0.0.1:8125").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        s
    });
    let mut child = spawn("auto");
    let end = Instant::now() + Duration::from_secs(30);
    while !log("auto").contains("capture filter") {
        assert!(Instant::now() < end, "{}", log("auto"));
        assert!(child.try_wait().unwrap().is_none(), "{}", log("auto"));
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        log("auto").contains("capture with libpcap: the kernel refused"),
        "{}",
        log("auto")
    );
    let dirp = TempDir::new("ebfg");
    let file = dirp.path("gen.pcap");
    let st = std::process::Command::new(METRO)
        .args([
            "generate",
            "-n",
            "5000",
            "-c",
            "50",
            "--servers",
            "5",
            "--snaplen",
            "0",
            "-o",
        ])
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.success());
    snd.tcpreplay(&["--pps", "5000", "-i", "veth0", file.to_str().unwrap()]);
    let mut text = String::new();
    let end = Instant::now() + Duration::from_secs(10);
    let mut buf = [0u8; 65536];
    while Instant::now() < end
        && !(text.contains("metro.capture.ebpf:0|g") && text.contains("system.net.tcp.rtt.samples"))
    {
        if let Ok(n) = rx.recv(&mut buf) {
            text.push_str(&String::from_utf8_lossy(&buf[..n]));
            text.push('\n');
        }
    }
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    assert!(child.wait().unwrap().success(), "{}", log("auto"));
    assert!(text.contains("metro.capture.ebpf:0|g"), "{text}");
    assert!(text.contains("system.net.tcp.rtt.samples"), "{text}");
}

// ---- The watch list in the kernel's LPM tries ----

/// `n` watched hosts, none adjacent (the tries hold them one by one): 10.64.0.0/10 at every
/// other address, plus `extra`.
fn big_list(n: usize, extra: &str) -> String {
    let mut s = String::with_capacity(n * 18);
    s.push_str("['");
    s.push_str(extra);
    s.push('\'');
    for i in 0..n - 1 {
        let a = 0x0a40_0000u32 + 2 * i as u32;
        s.push_str(&format!(", '{}'", std::net::Ipv4Addr::from(a)));
    }
    s.push(']');
    s
}

/// A conversation between `client` and `server` (10 ms round trip, 20 requests) as a pcap.
fn conversation_pcap(
    dir: &TempDir,
    name: &str,
    client: [u8; 4],
    server: [u8; 4],
) -> std::path::PathBuf {
    let mut fr = frames::conversation(
        client,
        server,
        [2, 0, 0, 0, 0, 1],
        [2, 0, 0, 0, 0, 2],
        1_700_000_000_000_000_000,
        10.0,
        20,
        20.0,
        None,
    );
    let path = dir.path(name);
    frames::write_pcap(&path, &mut fr);
    path
}

fn replay_file(snd: &Netns, pcap: &Path) {
    snd.tcpreplay(&["-i", "veth0", pcap.to_str().unwrap()]);
}

/// Samples per responder in the `--samples` file so far.
fn responders(path: &Path) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for ((_, src, ..), _) in sample_lines(path) {
        *m.entry(src).or_insert(0) += 1;
    }
    m
}

/// 100,000 watched hosts in the tries, then a reload (SIGHUP) that swaps which of two
/// servers is among them: the thread keeps running, the tries change in place, and only
/// the watched server's samples come out, before and after.
#[test]
fn a_100k_watch_list_in_the_kernel_and_a_reload_that_changes_it() {
    if !netns::needs_root("an agent capturing on a veth in a namespace") {
        return;
    }
    let _load = support::heavy();
    let (cap, snd) = pair("ebw");
    let dir = TempDir::new("ebw");
    let (a, b) = ([10, 213, 0, 2], [10, 213, 0, 4]);
    let conv_a = conversation_pcap(&dir, "a.pcap", [10, 213, 0, 1], a);
    let conv_b = conversation_pcap(&dir, "b.pcap", [10, 213, 0, 3], b);
    let cfg_text = |watched: &str| {
        format!(
            "init_config:\n  flush_interval: 1\n  statsd_ip: 127.0.0.1\n  statsd_port: 9\ninstances:\n  - interface: veth0\n    ips: {}\n    capture: ebpf\n",
            big_list(100_000, watched)
        )
    };
    let cfg = dir.write("metro.yaml", &cfg_text("10.213.0.2"));
    let out = dir.path("samples");
    let mut ag = Agent::run_samples(&cap, &cfg, &out, &dir.path("stderr"));
    ag.wait_log("tcp and 100000 watched blocks", Duration::from_secs(60));
    replay_file(&snd, &conv_a);
    replay_file(&snd, &conv_b);
    std::thread::sleep(Duration::from_secs(2));
    let before = responders(&out);
    assert!(
        before.get("10.213.0.2").copied().unwrap_or(0) >= 15,
        "{before:?}\n{}",
        ag.log()
    );
    assert_eq!(before.get("10.213.0.4"), None, "{before:?}");

    // Swap the two servers in the list and reload.
    dir.write("metro.yaml", &cfg_text("10.213.0.4"));
    ag.signal(libc::SIGHUP);
    let end = Instant::now() + Duration::from_secs(60);
    while ag.log().matches("tcp and 100000 watched blocks").count() < 2 {
        assert!(Instant::now() < end && ag.alive(), "{}", ag.log());
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        ag.log()
            .contains("1 capture(s) kept (1 with a new watch list)"),
        "{}",
        ag.log()
    );
    replay_file(&snd, &conv_a);
    replay_file(&snd, &conv_b);
    std::thread::sleep(Duration::from_secs(2));
    ag.terminate(Duration::from_secs(20));
    let after = responders(&out);
    // Only B's samples were added.
    assert_eq!(
        after.get("10.213.0.2"),
        before.get("10.213.0.2"),
        "{after:?}"
    );
    assert!(
        after.get("10.213.0.4").copied().unwrap_or(0) >= 15,
        "{after:?}"
    );
}

// ---- `any`: interfaces that appear after start ----

/// On `interface: any` the program follows the namespace's interfaces: a veth created
/// after start is attached within a couple of seconds (logged), and a conversation replayed
/// into it is measured, with the same samples as a libpcap agent on `any` beside it.
#[test]
fn any_follows_an_interface_created_after_start() {
    if !netns::needs_root("agents capturing in a namespace") {
        return;
    }
    let _load = support::timed();
    let cap = Netns::new("ebac");
    let snd = Netns::new("ebas");
    let dir = TempDir::new("eba");
    let mut agents = both_ways(&cap, &dir, |mode| {
        format!(
            "init_config:\n  flush_interval: 1\n  statsd_ip: 127.0.0.1\n  statsd_port: 9\ninstances:\n  - interface: any\n    ips: ['10.214.0.2']\n    capture: {mode}\n"
        )
    });
    assert!(
        agents[0]
            .0
            .log()
            .contains("capture in the kernel (eBPF) on lo")
            && !agents[0].0.log().contains("late0"),
        "{}",
        agents[0].0.log()
    );
    // The interface appears.
    veth(&cap, "late0", None, &snd, "veth0", None);
    agents[0]
        .0
        .wait_log("in-kernel capture on late0", Duration::from_secs(10));
    let conv = conversation_pcap(&dir, "late.pcap", [10, 214, 0, 1], [10, 214, 0, 2]);
    replay_file(&snd, &conv);
    std::thread::sleep(Duration::from_secs(2));
    let (k, p) = &stop_both(&mut agents);
    let from_server = k
        .iter()
        .filter(|((_, src, ..), _)| src == "10.214.0.2")
        .count();
    assert!(from_server >= 15, "{} samples: {k:?}", k.len());
    assert_eq!(k.len(), p.len(), "in the kernel {k:?}\nlibpcap {p:?}");
    for (i, (a, b)) in k.iter().zip(p).enumerate() {
        assert_eq!(a.0, b.0, "sample {i}");
        assert!((a.1 - b.1).abs() < 0.5, "sample {i}: {} vs {} ms", a.1, b.1);
    }
}

/// `frame` (Ethernet; VLAN tags dropped) carried in a tunnel from 192.0.2.1 to 192.0.2.2:
/// IPv4 in IP-in-IP, IPv6 in GRE. None for a frame that is neither.
fn tunnelled(frame: &[u8]) -> Option<Vec<u8>> {
    let mut at = 12;
    while matches!(
        frame.get(at..at + 2),
        Some([0x81, 0x00]) | Some([0x88, 0xa8])
    ) {
        at += 4;
    }
    let (proto, gre): (u8, &[u8]) = match frame.get(at..at + 2)? {
        [0x08, 0x00] => (4, &[]),
        [0x86, 0xdd] => (47, &[0, 0, 0x86, 0xdd]),
        _ => return None,
    };
    let inner = &frame[at + 2..];
    let total = 20 + gre.len() + inner.len();
    let mut f = frame[..12].to_vec();
    f.extend([0x08, 0x00]);
    f.extend([
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        0,
        0x40,
        0,
        64,
        proto,
        0,
        0,
        192,
        0,
        2,
        1,
        192,
        0,
        2,
        2,
    ]);
    f.extend(gre);
    f.extend(inner);
    Some(f)
}

/// Tunnelled TCP (IP-in-IP and GRE), which the program does not decode: it hands the frames
/// over whole, user space decodes them as libpcap's copies are decoded, and the samples are
/// those of a libpcap agent whose filter lets the tunnels through (with the default `tcp`
/// filter libpcap drops them in the kernel). Each frame is counted once as a raw frame,
/// reason `unparsed`.
#[test]
fn tunnelled_frames_go_to_user_space_whole_and_give_libpcaps_samples() {
    if !netns::needs_root("agents capturing on a veth in a namespace") {
        return;
    }
    let dir = TempDir::new("ebtun");
    let file = dir.path("gen.pcap");
    let st = std::process::Command::new(METRO)
        .args([
            "generate",
            "-n",
            "6000",
            "-c",
            "60",
            "--servers",
            "6",
            "--snaplen",
            "0",
            "-o",
        ])
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.success());
    let mut frames = Vec::new();
    let mut r = metro::pcap::CaptureReader::open(&file).unwrap();
    while let Ok(Some(rec)) = r.next_record() {
        if rec.linktype == linktype::ETHERNET
            && let Some(f) = tunnelled(rec.data)
        {
            frames.push(f);
        }
    }
    // The generator's IPv4 and IPv6 both made it in.
    assert!(frames.iter().any(|f| f[23] == 4) && frames.iter().any(|f| f[23] == 47));
    let tunnels = dir.path("tunnels.pcap");
    write_pcap(&tunnels, &frames);
    let metrics = same_samples_with(
        "ebtn",
        &tunnels,
        "5000",
        500,
        &["--filter", "tcp or ip proto 4 or ip proto 47"],
        |cap, snd| {
            // Room for the outer header on full-sized frames.
            cap.ip(&["link", "set", "veth0", "mtu", "1600"]);
            snd.ip(&["link", "set", "veth0", "mtu", "1600"]);
        },
    );
    let raw = |reason: &str| {
        sum(&metrics, "metro.packets.raw", |m| {
            m.tag("reason") == Some(reason)
        })
    };
    assert_eq!(raw("unparsed"), frames.len() as f64, "raw frames");
    assert_eq!(raw("malformed") + raw("udp") + raw("icmp"), 0.0);
    assert_eq!(sum(&metrics, "metro.packets.dropped", |_| true), 0.0);
}

/// Watched UDP and ICMP frames reach user space whole only while user space asks for them
/// (a config map flag, switched on a loaded program), and unwatched ones never.
#[test]
fn udp_and_icmp_frames_are_raw_records_only_when_switched_on() {
    if !netns::needs_root("loading a BPF program on a veth in a namespace") {
        return;
    }
    let (cap, snd) = pair("ebu");
    cap.ip(&["addr", "add", "10.212.0.1/24", "dev", "veth0"]);
    snd.ip(&["addr", "add", "10.212.0.2/24", "dev", "veth0"]);
    snd.ip(&["addr", "add", "10.212.0.3/24", "dev", "veth0"]);
    let (udp, icmp, tcp_before) = cap.enter(move || {
        use metro::agent::ebpf::Item;
        use metro::agent::ebpf::record::RawReason;
        let mut k = Kernel::open("veth0", RING_BYTES).unwrap_or_else(|e| panic!("{e}"));
        let only: IpAddr = "10.212.0.2".parse().unwrap();
        k.apply_watch(&WatchList::new(vec![Cidr::host(only)]))
            .unwrap();
        let sock = std::net::UdpSocket::bind("10.212.0.1:0").unwrap();
        // Neighbour discovery first, so that the counted frames are the datagrams'.
        let ping = |to: &str| {
            let st = std::process::Command::new("ping")
                .args(["-c", "1", "-W", "2", to])
                .output()
                .expect("ping");
            assert!(st.status.success(), "ping {to}");
        };
        ping("10.212.0.2");
        ping("10.212.0.3");
        let mut udp = Vec::new();
        let mut icmp = Vec::new();
        let mut tcp = 0;
        for on in [false, true, false] {
            k.set_other_protocols(on).unwrap();
            for to in ["10.212.0.2:5353", "10.212.0.3:5353"] {
                sock.send_to(b"metro", to).unwrap();
            }
            ping("10.212.0.2");
            ping("10.212.0.3");
            std::thread::sleep(Duration::from_millis(100));
            let (mut u, mut i) = (0, 0);
            while let Some(()) = k.next_item(|item| match item {
                Item::Raw(f) => {
                    // Ethernet, IPv4: the addresses at 26 and 30.
                    let addr =
                        |at: usize| IpAddr::from(<[u8; 4]>::try_from(&f.data[at..at + 4]).unwrap());
                    assert!(
                        addr(26) == only || addr(30) == only,
                        "an unwatched frame: {f:?}"
                    );
                    assert_eq!(f.len as usize, f.data.len());
                    match f.reason {
                        RawReason::Udp => u += 1,
                        RawReason::Icmp => i += 1,
                        r => panic!("{r:?}: {f:?}"),
                    }
                }
                Item::Segment(_) => tcp += 1,
            }) {}
            udp.push(u);
            icmp.push(i);
        }
        (udp, icmp, tcp)
    });
    // Switched on: the datagram to the watched host (its ICMP port-unreachable answer is
    // ICMP) and the echo request and reply; nothing while off.
    assert_eq!(udp, [0, 1, 0]);
    assert_eq!(icmp, [0, 3, 0]);
    assert_eq!(tcp_before, 0);
}

/// An instance whose `protocols` leave TCP out gets no TCP record: the program skips the
/// segments (a config map flag, switched on a loaded program) as libpcap's `udp` or `icmp`
/// filter does; switched back on, they come again.
#[test]
fn tcp_segments_are_records_only_while_tcp_is_on() {
    if !netns::needs_root("loading a BPF program on a veth in a namespace") {
        return;
    }
    let (cap, snd) = pair("ebt");
    cap.ip(&["addr", "add", "10.213.0.1/24", "dev", "veth0"]);
    snd.ip(&["addr", "add", "10.213.0.2/24", "dev", "veth0"]);
    let per_round = cap.enter(move || {
        let mut k = Kernel::open("veth0", RING_BYTES).unwrap_or_else(|e| panic!("{e}"));
        let peer: IpAddr = "10.213.0.2".parse().unwrap();
        k.apply_watch(&WatchList::new(vec![Cidr::host(peer)]))
            .unwrap();
        let mut per_round = Vec::new();
        for on in [true, false, true] {
            k.set_tcp(on).unwrap();
            // A closed port: the SYN leaves, the RST comes back.
            for _ in 0..3 {
                let to = std::net::SocketAddr::new(peer, 9);
                let r = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2));
                assert!(r.is_err(), "nothing listens on {to}");
            }
            std::thread::sleep(Duration::from_millis(100));
            let mut n = 0;
            while let Some(()) = k.next_item(|item| match item {
                metro::agent::ebpf::Item::Segment(r) => {
                    assert!(r.segment.src == peer || r.segment.dst == peer, "{r:?}");
                    n += 1;
                }
                metro::agent::ebpf::Item::Raw(f) => panic!("a raw frame: {f:?}"),
            }) {}
            per_round.push(n);
        }
        per_round
    });
    // Three SYNs out and three RSTs back while on; nothing while off.
    assert_eq!(per_round, [6, 0, 6]);
    drop(snd);
}

/// DNS over TCP: with the DNS bit on, a watched TCP segment whose payload starts as a DNS
/// message does (its length, then a header with QDCOUNT 1 and the opcode QUERY: the check
/// of metro-core's `Tracker::may_be_dns`) comes whole, as a raw frame whose decode gives the
/// segment and the message, and no record; a payload of another shape (an UPDATE, plain
/// text) comes as a record. With TCP switched off the DNS-shaped segments still come, and
/// nothing else. Real sockets: each payload written to an echo server in the other
/// namespace and its echo read back before the next, so each is one segment each way.
#[test]
fn tcp_segments_that_may_carry_dns_are_raw_frames_only_while_dns_is_on() {
    if !netns::needs_root("loading a BPF program on a veth in a namespace") {
        return;
    }
    let (cap, snd) = pair("ebd");
    cap.ip(&["addr", "add", "10.214.0.1/24", "dev", "veth0"]);
    snd.ip(&["addr", "add", "10.214.0.2/24", "dev", "veth0"]);
    let echo = netns::EchoServer::start(&snd, "10.214.0.2:5300");
    let to = echo.addr;
    // A query for "metro.test" A IN, after its length.
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0];
    query.extend_from_slice(b"\x05metro\x04test\x00\x00\x01\x00\x01");
    let framed = |m: &[u8]| [&(m.len() as u16).to_be_bytes()[..], m].concat();
    let dns = framed(&query);
    let mut update = query.clone();
    update[2] = 0x28;
    let update = framed(&update);
    let text = b"GET / HTTP/1.1\r\nHost: metro.test\r\n\r\n".to_vec();
    let dns_sent = dns.clone();
    let rounds = cap.enter(move || {
        use metro::agent::ebpf::Item;
        use metro::agent::ebpf::record::RawReason;
        let mut k = Kernel::open("veth0", RING_BYTES).unwrap_or_else(|e| panic!("{e}"));
        k.apply_watch(&WatchList::new(vec![Cidr::host(to.ip())]))
            .unwrap();
        let mut rounds = Vec::new();
        for (dns_on, tcp_on) in [(false, true), (true, true), (true, false), (false, true)] {
            k.set_dns_tcp(dns_on).unwrap();
            k.set_tcp(tcp_on).unwrap();
            let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(2)).unwrap();
            c.set_nodelay(true).unwrap();
            c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            for payload in [&dns_sent, &update, &text] {
                c.write_all(payload).unwrap();
                let mut back = vec![0u8; payload.len()];
                c.read_exact(&mut back).unwrap();
                assert_eq!(&back, payload);
            }
            drop(c);
            std::thread::sleep(Duration::from_millis(100));
            // (raw DNS frames, records with a payload, records without)
            let (mut raw, mut with, mut without) = (0, 0, 0);
            while let Some(()) = k.next_item(|item| match item {
                Item::Raw(f) => {
                    assert_eq!(f.reason, RawReason::Dns, "{f:?}");
                    let mut seg = Segment::EMPTY;
                    let payload = Segment::decode_into(f.linktype(), f.data, &mut seg)
                        .unwrap_or_else(|e| panic!("{e:?}: {f:?}"));
                    assert_eq!(payload, &dns_sent[..], "{f:?}");
                    assert_eq!(seg.payload_len as usize, dns_sent.len());
                    assert!(seg.src == to.ip() || seg.dst == to.ip());
                    raw += 1;
                }
                Item::Segment(r) if r.segment.payload_len > 0 => with += 1,
                Item::Segment(_) => without += 1,
            }) {}
            rounds.push((raw, with, without > 0));
        }
        rounds
    });
    // The query out and its echo back come whole while DNS is on; the UPDATE and the text
    // (and, while DNS is off, the query too) as records, with the handshake and the ACKs,
    // while TCP is on.
    assert_eq!(
        rounds,
        [(0, 6, true), (2, 4, true), (2, 0, false), (0, 6, true)]
    );
    drop(echo);
}

/// A DNS-shaped segment goes whole only when its first 256 bytes (all a raw frame carries)
/// decode to the segment its record would be: not when the IP header's length is 0 (a
/// segmentation-offload super-packet: the record's length is the packet's, the cut frame's
/// would be 256 bytes) nor behind headers too long for the check to lie within the cut
/// (IPv6 destination options of 240 bytes). Those stay records, with the length and options
/// metro-core reads from the whole frame; the same payload behind plain headers comes whole.
#[test]
fn dns_shaped_segments_whose_cut_frame_would_decode_otherwise_stay_records() {
    if !netns::needs_root("loading a BPF program on a veth and tcpreplay in namespaces") {
        return;
    }
    let (cap, snd) = pair("ebc");
    let query: &[u8] = &[
        0, 29, 0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 5, b'm', b'e', b't', b'r', b'o', 4,
        b't', b'e', b's', b't', 0, 0, 1, 0, 1, 0,
    ];
    // TCP from port 40000 to `dport`, 20-byte header, ACK+PSH, then the query.
    let tcp = |dport: u16| {
        let mut t = vec![0x9c, 0x40];
        t.extend(dport.to_be_bytes());
        t.extend([0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend(query);
        t
    };
    use metro_testkit::vectors::{eth, ip4, ip6};
    let plain = eth(0x0800, &ip4([10, 217, 0, 2], [10, 217, 0, 1], 6, &tcp(53)));
    let mut no_length = eth(0x0800, &ip4([10, 217, 0, 2], [10, 217, 0, 1], 6, &tcp(54)));
    no_length[16..18].copy_from_slice(&[0, 0]);
    // Destination options: next header TCP, 240 bytes (29 + 1 units of 8), one PadN option.
    let mut opts = vec![6, 29, 1, 236];
    opts.resize(240, 0);
    opts.extend(tcp(55));
    let src6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
    let dst6 = [0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
    let long = eth(0x86dd, &ip6(src6, dst6, 60, &opts));
    let frames = vec![plain.clone(), no_length.clone(), long.clone()];
    let dir = TempDir::new("ebcut");
    let file = dir.path("cut.pcap");
    write_pcap(&file, &frames);
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let h = cap.spawn(move || {
        use metro::agent::ebpf::Item;
        let mut k = Kernel::open("veth0", RING_BYTES).unwrap_or_else(|e| panic!("{e}"));
        k.apply_watch(&everything()).unwrap();
        k.set_dns_tcp(true).unwrap();
        ready_tx.send(()).unwrap();
        // (destination port, whole?, the segment)
        let mut seen = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut finished = false;
        while Instant::now() < deadline && !(finished && seen.len() >= 3) {
            while let Some(()) = k.next_item(|item| match item {
                Item::Raw(f) => {
                    let seg = Segment::decode(f.linktype(), f.data).unwrap();
                    seen.push((seg.dport, true, seg));
                }
                Item::Segment(r) => seen.push((r.segment.dport, false, r.segment)),
            }) {}
            finished |= done_rx.try_recv().is_ok();
            k.wait(10);
        }
        seen
    });
    ready_rx.recv().unwrap();
    snd.tcpreplay(&["-i", "veth0", file.to_str().unwrap()]);
    done_tx.send(()).unwrap();
    let mut seen = h.join().unwrap();
    seen.retain(|s| (53..=55).contains(&s.0));
    seen.sort_by_key(|s| s.0);
    let whole: Vec<(u16, bool)> = seen.iter().map(|s| (s.0, s.1)).collect();
    assert_eq!(whole, [(53, true), (54, false), (55, false)], "{seen:?}");
    // Each equals metro-core's decode of the whole frame (the unsized one's length taken
    // from the frame, as the program takes it from the packet).
    for (s, f) in seen.iter().zip([&plain, &no_length, &long]) {
        assert_eq!(
            s.2,
            Segment::decode(linktype::ETHERNET, f).unwrap(),
            "port {}",
            s.0
        );
    }
    assert_eq!(seen[1].2.payload_len as usize, query.len());
}

/// An interface without a link-layer header (tun; WireGuard and IP tunnels alike): its
/// frames start at the IP header, which the program knows from the interface (an entry in
/// its `l3_interfaces` map, looked up only once such an interface is attached). TCP
/// segments written into a tun device from user space arrive on it: each gives a record
/// equal to metro-core's decode of the same bytes as raw IP.
#[test]
fn segments_on_an_interface_without_a_link_layer_are_records() {
    if !netns::needs_root("a tun device and a BPF program in a namespace") {
        return;
    }
    let ns = Netns::new("ebl3");
    ns.ip(&["tuntap", "add", "mode", "tun", "dev", "tun0"]);
    ns.ip(&["addr", "add", "10.216.0.1/24", "dev", "tun0"]);
    ns.ip(&["link", "set", "tun0", "up"]);
    let (sent, got) = ns.enter(move || {
        use std::os::fd::FromRawFd;
        let peer: IpAddr = "10.216.0.2".parse().unwrap();
        let mut k = Kernel::open("tun0", RING_BYTES).unwrap_or_else(|e| panic!("{e}"));
        k.apply_watch(&WatchList::new(vec![Cidr::host(peer)]))
            .unwrap();
        // SAFETY: a NUL-terminated path; the returned descriptor is checked, then owned by
        // the File below, which closes it.
        let fd = unsafe { libc::open(c"/dev/net/tun".as_ptr(), libc::O_RDWR) };
        assert!(
            fd >= 0,
            "open /dev/net/tun: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: `fd` is open and owned by nothing else.
        let mut tun = unsafe { std::fs::File::from_raw_fd(fd) };
        // SAFETY: an all-zero ifreq is valid; its name and flags are set before the ioctl,
        // which reads it (TUNSETIFF attaches this descriptor to the device of that name).
        let rc = unsafe {
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (d, s) in ifr.ifr_name.iter_mut().zip(b"tun0") {
                *d = *s as libc::c_char;
            }
            ifr.ifr_ifru.ifru_flags = (libc::IFF_TUN | libc::IFF_NO_PI) as libc::c_short;
            libc::ioctl(fd, libc::TUNSETIFF, &ifr)
        };
        assert_eq!(rc, 0, "TUNSETIFF: {}", std::io::Error::last_os_error());
        // SYNs from the peer to three closed ports, with the timestamp option (the ingress
        // frames; the host's RSTs leave by tun0, egress records).
        let mut sent = Vec::new();
        for port in [9u16, 10, 11] {
            let pkt =
                metro_testkit::frame::TcpFrame::v4([10, 216, 0, 2], 40000, [10, 216, 0, 1], port)
                    .seq(1000 + u32::from(port))
                    .flags(metro_testkit::frame::flags::SYN)
                    .timestamps(77_000 + u32::from(port), 0)
                    .raw_ip()
                    .to_vec();
            tun.write_all(&pkt).unwrap();
            sent.push(Segment::decode(linktype::RAW, &pkt).unwrap());
        }
        std::thread::sleep(Duration::from_millis(200));
        let mut got = Vec::new();
        while let Some(r) = k.next_record() {
            got.push(r);
        }
        (sent, got)
    });
    let ingress: Vec<Segment> = got
        .iter()
        .filter(|r| !r.egress)
        .map(|r| r.segment)
        .collect();
    assert_eq!(
        ingress, sent,
        "ingress records against the decode of the bytes written"
    );
    // The kernel's answers: a RST to each SYN, to the peer's port.
    let egress: Vec<(u16, bool)> = got
        .iter()
        .filter(|r| r.egress)
        .map(|r| {
            (
                r.segment.sport,
                r.segment.flags.rst() && r.segment.dport == 40000,
            )
        })
        .collect();
    assert_eq!(egress, [(9, true), (10, true), (11, true)], "{got:?}");
}

/// A consumer that stops (SIGSTOP) while 150,000 segments arrive overruns the 8 MiB ring
/// buffer (about 87,000 records): the records the program could not write are counted in
/// `metro.packets.dropped`, exactly: with the segments delivered, they make up every frame
/// of the program's shape that libpcap saw on the interface meanwhile.
#[test]
fn ring_buffer_overruns_are_counted_as_kernel_drops() {
    if !netns::needs_root("an agent capturing on a veth in a namespace") {
        return;
    }
    let dir = TempDir::new("ebdrop");
    let file = dir.path("gen.pcap");
    let st = std::process::Command::new(METRO)
        .args([
            "generate",
            "-n",
            "150000",
            "-c",
            "500",
            "--servers",
            "20",
            "-o",
        ])
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.success());
    let (cap, snd) = pair("ebdr");
    let mut statsd = udp_statsd(&cap);
    let cfg = dir.write("ebpf.yaml", &agent_config_to("ebpf", 8125));
    let mut a = Agent::start(
        &cap,
        &["run", "--config", cfg.to_str().unwrap()],
        &dir.path("ebpf.stderr"),
    );
    a.wait_log(
        "capture in the kernel (eBPF) on veth0",
        Duration::from_secs(30),
    );
    // libpcap beside it: what reached the interface.
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let counter = cap.spawn(move || {
        let mut pc = pcap::Capture::from_device("veth0")
            .unwrap()
            .immediate_mode(true)
            .buffer_size(128 << 20)
            .snaplen(256)
            .timeout(10)
            .open()
            .unwrap()
            .setnonblock()
            .unwrap();
        ready_tx.send(()).unwrap();
        let (mut n, mut last, mut finished) = (0u64, Instant::now(), false);
        loop {
            let mut got = false;
            while let Ok(p) = pc.next_packet() {
                n += u64::from(program_shape(p.data));
                got = true;
            }
            if got {
                last = Instant::now();
            }
            finished |= done_rx.try_recv().is_ok();
            if finished && last.elapsed() > Duration::from_secs(1) {
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        let stats = pc.stats().unwrap();
        (n, stats.dropped + stats.if_dropped)
    });
    ready_rx.recv().unwrap();
    a.signal(libc::SIGSTOP);
    let out = snd
        .command("tcpreplay")
        .args([
            "-q",
            "--pps",
            "100000",
            "-i",
            "veth0",
            file.to_str().unwrap(),
        ])
        .output()
        .expect("run tcpreplay (Debian package `tcpreplay`)");
    assert!(out.status.success());
    done_tx.send(()).unwrap();
    let (seen, pcap_dropped) = counter.join().unwrap();
    a.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(2));
    a.signal(libc::SIGTERM);
    assert!(a.wait(Duration::from_secs(20)).success(), "{}", a.log());
    let metrics = statsd.finish();
    let received = sum(&metrics, "metro.packets.received", |_| true);
    let dropped = sum(&metrics, "metro.packets.dropped", |_| true);
    eprintln!("{seen} frames on the interface: {received} delivered, {dropped} dropped");
    assert_eq!(pcap_dropped, 0, "libpcap's own count is incomplete");
    assert!(seen > 100_000, "{seen} frames reached the interface");
    assert!(dropped > 10_000.0, "{dropped} dropped");
    assert_eq!(received + dropped, seen as f64);
    assert!(
        a.log().contains("the ring buffer overflowed"),
        "{}",
        a.log()
    );
}

// ---- containers by cgroup ----

/// `podman` with the flags these machines need (hybrid cgroups: crun refuses them).
fn podman(args: &[&str]) -> String {
    let out = std::process::Command::new("podman")
        .args(["--runtime", "runc", "--cgroup-manager=cgroupfs"])
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run podman ({e}): install podman, runc"));
    assert!(
        out.status.success(),
        "`podman {}`: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A busybox image (no registry) and the containers run from it, removed on drop.
struct Pod {
    image: String,
    containers: Vec<String>,
}

impl Drop for Pod {
    fn drop(&mut self) {
        for c in self.containers.iter().rev() {
            let _ = std::process::Command::new("podman")
                .args(["--runtime", "runc", "--cgroup-manager=cgroupfs"])
                .args(["rm", "-f", "-t", "0", c])
                .output();
        }
        let _ = std::process::Command::new("podman")
            .args(["rmi", "-f", &self.image])
            .output();
    }
}

/// Two containers in one network namespace (the second joins the first's with `--network
/// container:`), the agent's too (as host-network containers share the host's), each
/// talking to its own server: the /proc walk cannot tell them apart (the namespace is the
/// agent's own, and holds two containers), so libpcap's pairs carry no container; in the
/// kernel, each egress segment names its socket's cgroup, and each pair is tagged with the
/// container that opened its connections.
#[test]
fn containers_sharing_a_namespace_are_told_apart_by_cgroup() {
    if !netns::needs_root("podman containers and an agent capturing in the kernel") {
        return;
    }
    let dir = TempDir::new("ebcg");
    let (h, s) = pair("ebk");
    h.ip(&["addr", "add", "10.214.0.1/24", "dev", "veth0"]);
    s.ip(&["addr", "add", "10.214.0.2/24", "dev", "veth0"]);
    s.ip(&["addr", "add", "10.214.0.3/24", "dev", "veth0"]);
    // One echo server per address: read once, answer, close.
    for addr in ["10.214.0.2:7000", "10.214.0.3:7000"] {
        let l = s.enter(move || TcpListener::bind(addr).unwrap());
        std::thread::spawn(move || {
            for c in l.incoming() {
                let Ok(mut c) = c else { continue };
                let mut b = [0u8; 64];
                if let Ok(n) = c.read(&mut b) {
                    let _ = c.write_all(&b[..n]);
                }
            }
        });
    }
    // The image: busybox alone.
    let root = dir.path("rootfs");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    let bb = ["/bin/busybox", "/usr/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox missing: install busybox-static (.ci/run does)");
    std::fs::copy(bb, root.join("bin/busybox")).unwrap();
    for a in ["sh", "sleep", "nc", "seq", "timeout", "echo", "test", "["] {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(a)).unwrap();
    }
    let tar = dir.path("rootfs.tar");
    let st = std::process::Command::new("tar")
        .args([
            "-C",
            root.to_str().unwrap(),
            "-cf",
            tar.to_str().unwrap(),
            ".",
        ])
        .status()
        .unwrap();
    assert!(st.success());
    let mut pod = Pod {
        image: format!("localhost/metro-ebpf-cgroup:{}", std::process::id()),
        containers: Vec::new(),
    };
    podman(&["import", tar.to_str().unwrap(), &pod.image]);
    let sig = dir.path("sig");
    std::fs::create_dir_all(&sig).unwrap();
    let vol = format!("{}:/sig", sig.display());
    let names = [
        format!("metro-cg-a-{}", std::process::id()),
        format!("metro-cg-b-{}", std::process::id()),
    ];
    let nets = [
        format!("ns:/run/netns/{}", h.name),
        format!("container:{}", names[0]),
    ];
    for (i, server) in ["10.214.0.2", "10.214.0.3"].iter().enumerate() {
        let script = format!(
            "while [ ! -e /sig/go ]; do sleep 0.1; done; for i in $(seq 1 6); do echo hello | \
             timeout 3 nc {server} 7000 >/dev/null; sleep 0.3; done; echo done; sleep 600"
        );
        pod.containers.push(names[i].clone());
        podman(&[
            "run",
            "-d",
            "--name",
            &names[i],
            "--network",
            &nets[i],
            "-v",
            &vol,
            "--ulimit",
            "nofile=1024:1024",
            "--ulimit",
            "nproc=1024:1024",
            &pod.image,
            "/bin/sh",
            "-c",
            &script,
        ]);
    }
    // Two agents in the namespace: in the kernel (DogStatsD on 8125), libpcap (8126).
    let statsd = [
        udp_statsd(&h),
        agent::Statsd::udp(h.enter(|| std::net::UdpSocket::bind("127.0.0.1:8126").unwrap())),
    ];
    let mut agents = Vec::new();
    for (mode, port) in [("ebpf", 8125), ("pcap", 8126)] {
        let cfg = dir.write(
            &format!("{mode}.yaml"),
            &format!(
                "init_config:\n  flush_interval: 1\n  statsd_ip: 127.0.0.1\n  statsd_port: {port}\ninstances:\n  - interface: veth0\n    ips: ['10.214.0.0/24']\n    capture: {mode}\n"
            ),
        );
        // `nsenter --net`, not `ip netns exec`: it keeps the host's /sys, so its cgroups.
        let mut c = std::process::Command::new("nsenter");
        c.arg(format!("--net=/run/netns/{}", h.name)).args([
            METRO,
            "run",
            "--config",
            cfg.to_str().unwrap(),
        ]);
        let mut a = Agent::spawn(c, &dir.path(&format!("{mode}.stderr")));
        a.wait_log("capture", Duration::from_secs(30));
        agents.push(a);
    }
    std::thread::sleep(Duration::from_secs(2));
    std::fs::write(sig.join("go"), "").unwrap();
    let name_of = |m: &[agent::Metric], dst: &str| -> Vec<Option<String>> {
        let mut v: Vec<Option<String>> = m
            .iter()
            .filter(|x| x.name == "system.net.tcp.rtt.p50" && x.tag("dst") == Some(dst))
            .map(|x| x.tag("container_name").map(str::to_string))
            .collect();
        v.sort();
        v.dedup();
        v
    };
    let all = statsd[0].wait_for(
        &mut agents[0],
        Duration::from_secs(60),
        "tagged pairs",
        |m| !name_of(m, "10.214.0.2").is_empty() && !name_of(m, "10.214.0.3").is_empty(),
    );
    for n in &names {
        let end = Instant::now() + Duration::from_secs(30);
        while !podman(&["logs", n]).contains("done") {
            assert!(Instant::now() < end, "container {n} did not finish");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    std::thread::sleep(Duration::from_secs(2));
    let kernel = statsd[0].all();
    let pcap = statsd[1].all();
    assert!(kernel.len() >= all.len());
    eprintln!(
        "in the kernel: .2 {:?}, .3 {:?}; libpcap: .2 {:?}, .3 {:?}",
        name_of(&kernel, "10.214.0.2"),
        name_of(&kernel, "10.214.0.3"),
        name_of(&pcap, "10.214.0.2"),
        name_of(&pcap, "10.214.0.3")
    );
    // Each pair names its own container, in every flush.
    assert_eq!(name_of(&kernel, "10.214.0.2"), [Some(names[0].clone())]);
    assert_eq!(name_of(&kernel, "10.214.0.3"), [Some(names[1].clone())]);
    // libpcap: the same pairs, no container (the namespace is shared).
    assert_eq!(name_of(&pcap, "10.214.0.2"), [None]);
    assert_eq!(name_of(&pcap, "10.214.0.3"), [None]);
    for a in &mut agents {
        a.signal(libc::SIGTERM);
        assert!(a.wait(Duration::from_secs(20)).success(), "{}", a.log());
    }
}

/// `threads: 2` (two engines, connections sharded between them) beside `threads: 1` on the
/// same replay of a generated capture: the same samples (kinds and ends, as a multiset: the
/// engines write their lines in their own order), each within 5 ms of its twin and the
/// typical one (the median) within 0.1 ms.
#[test]
fn two_engine_threads_give_the_samples_of_one() {
    if !netns::needs_root("agents capturing on a veth in a namespace") {
        return;
    }
    let dir = TempDir::new("ebthr");
    let file = dir.path("gen.pcap");
    let st = std::process::Command::new(METRO)
        .args([
            "generate",
            "-n",
            "30000",
            "-c",
            "300",
            "--servers",
            "30",
            "--snaplen",
            "0",
            "-o",
        ])
        .arg(&file)
        .status()
        .unwrap();
    assert!(st.success());
    let (cap, snd) = pair("ebth");
    let mut agents = Vec::new();
    for threads in [1, 2] {
        let cfg = dir.write(
            &format!("t{threads}.yaml"),
            &format!("{}    threads: {threads}\n", agent_config("ebpf")),
        );
        let out = dir.path(&format!("t{threads}.samples"));
        let mut a = Agent::start(
            &cap,
            &[
                "run",
                "--config",
                cfg.to_str().unwrap(),
                "--samples",
                out.to_str().unwrap(),
            ],
            &dir.path(&format!("t{threads}.stderr")),
        );
        a.wait_log(
            "capture in the kernel (eBPF) on veth0",
            Duration::from_secs(30),
        );
        agents.push((a, out));
    }
    let out = snd
        .command("tcpreplay")
        .args([
            "-q",
            "--pps",
            "10000",
            "-i",
            "veth0",
            file.to_str().unwrap(),
        ])
        .output()
        .expect("run tcpreplay (Debian package `tcpreplay`)");
    assert!(out.status.success());
    std::thread::sleep(Duration::from_secs(2));
    let mut got = Vec::new();
    for (a, out) in &mut agents {
        a.signal(libc::SIGTERM);
        assert!(a.wait(Duration::from_secs(20)).success(), "{}", a.log());
        let mut v = sample_lines(out);
        v.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)));
        got.push(v);
    }
    let (one, two) = (&got[0], &got[1]);
    eprintln!(
        "{} samples with one engine, {} with two",
        one.len(),
        two.len()
    );
    assert!(one.len() >= 3_000, "{} samples", one.len());
    let keys = |v: &[(SampleKey, f64)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    assert_eq!(keys(one), keys(two), "the samples differ");
    let mut diffs: Vec<f64> = one
        .iter()
        .zip(two)
        .map(|(a, b)| (a.1 - b.1).abs())
        .collect();
    diffs.sort_by(f64::total_cmp);
    assert!(
        diffs.last().copied().unwrap_or(0.0) < 5.0,
        "{:?}",
        diffs.last()
    );
    assert!(
        diffs[diffs.len() / 2] < 0.1,
        "median {}",
        diffs[diffs.len() / 2]
    );
}

/// `threads: 2` beside `threads: 1` on `interface: any` of a host that masquerades a
/// container's connections (a namespace routing another's 10.218.0.0/24 out of `up0` under
/// its own 10.219.0.1, nftables): each packet is seen inside and after the NAT, with other
/// addresses and ports, which may hash to the other engine than the inside sighting. The
/// same samples, none under the host's outer address, and the same copies by kind
/// (`metro.packets.copies`), NAT copies among them.
#[test]
fn two_engine_threads_recognise_nat_copies_as_one_does() {
    if !netns::needs_root("agents capturing `any` in a namespace that NATs another's traffic") {
        return;
    }
    let _load = support::heavy();
    const CONNS: usize = 24;
    let host = Netns::new("ebnh");
    let ctr = Netns::new("ebnc");
    let srv = Netns::new("ebns");
    veth(
        &host,
        "ctr0",
        Some("10.218.0.1/24"),
        &ctr,
        "eth0",
        Some("10.218.0.2/24"),
    );
    veth(
        &host,
        "up0",
        Some("10.219.0.1/24"),
        &srv,
        "eth0",
        Some("10.219.0.2/24"),
    );
    ctr.ip(&["route", "add", "default", "via", "10.218.0.1"]);
    host.forward_ipv4();
    let dir = TempDir::new("ebn");
    let rules = dir.write(
        "nat.nft",
        "table ip metro_nat {\n  chain post {\n    type nat hook postrouting priority srcnat; policy accept;\n    ip saddr 10.218.0.0/24 oifname \"up0\" masquerade\n  }\n}\n",
    );
    let out = host
        .command("nft")
        .arg("-f")
        .arg(&rules)
        .output()
        .expect("run nft (Debian package `nftables`)");
    assert!(
        out.status.success(),
        "nft: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let _echo = netns::EchoServer::start(&srv, "10.219.0.2:7000");
    let statsd = [
        udp_statsd(&host),
        agent::Statsd::udp(host.enter(|| std::net::UdpSocket::bind("127.0.0.1:8126").unwrap())),
    ];
    let mut agents = Vec::new();
    for (threads, port) in [(1, 8125), (2, 8126)] {
        let cfg = dir.write(
            &format!("t{threads}.yaml"),
            &format!(
                "init_config:\n  flush_interval: 1\n  statsd_ip: 127.0.0.1\n  statsd_port: {port}\ninstances:\n  - interface: any\n    ips: ['10.219.0.2']\n    capture: ebpf\n    protocols: [tcp]\n    threads: {threads}\n"
            ),
        );
        let out = dir.path(&format!("t{threads}.samples"));
        let mut a = Agent::run_samples(&host, &cfg, &out, &dir.path(&format!("t{threads}.stderr")));
        a.wait_log("capture filter", Duration::from_secs(30));
        agents.push((a, out));
    }
    // The container's connections: three exchanges each, one connection after the other.
    let to: SocketAddr = "10.219.0.2:7000".parse().unwrap();
    let ports: Vec<u16> = ctr.enter(move || {
        (0..CONNS)
            .map(|_| {
                let mut c = TcpStream::connect_timeout(&to, Duration::from_secs(5))
                    .expect("the container to the server, through the NAT");
                c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                c.set_nodelay(true).unwrap();
                for _ in 0..3 {
                    c.write_all(b"hello\n").unwrap();
                    let mut b = [0u8; 6];
                    c.read_exact(&mut b).expect("the echo, through the NAT");
                    std::thread::sleep(Duration::from_millis(20));
                }
                let port = c.local_addr().unwrap().port();
                drop(c);
                std::thread::sleep(Duration::from_millis(30));
                port
            })
            .collect()
    });
    assert_eq!(ports.len(), CONNS);
    std::thread::sleep(Duration::from_secs(2));
    let mut got = Vec::new();
    for ((a, out), mut s) in agents.iter_mut().zip(statsd) {
        a.terminate(Duration::from_secs(20));
        let mut v = sample_lines(out);
        v.sort_by(|x, y| x.0.cmp(&y.0).then(x.1.total_cmp(&y.1)));
        let m = s.finish();
        let copies =
            |kind: &str| sum(&m, "metro.packets.copies", |x| x.tag("kind") == Some(kind)) as u64;
        got.push((v, copies("plain"), copies("nat")));
    }
    let (one, two) = (&got[0], &got[1]);
    eprintln!(
        "one engine: {} samples, copies {} plain {} nat; two: {} samples, copies {} plain {} nat",
        one.0.len(),
        one.1,
        one.2,
        two.0.len(),
        two.1,
        two.2
    );
    let keys = |v: &[(SampleKey, f64)]| v.iter().map(|x| x.0.clone()).collect::<Vec<_>>();
    for (threads, (v, ..)) in [(1, one), (2, two)] {
        // Only the container's connections, under its own address: every sample has it at
        // one end, never the host's outer address.
        let under_host: Vec<&SampleLine> = v
            .iter()
            .filter(|((_, src, _, dst, _), _)| src == "10.219.0.1" || dst == "10.219.0.1")
            .collect();
        assert!(
            under_host.is_empty(),
            "threads: {threads}: {} samples under the host's address, the first {:?}",
            under_host.len(),
            &under_host[..under_host.len().min(4)]
        );
        let inner = v
            .iter()
            .filter(|((_, src, _, dst, _), _)| src == "10.218.0.2" || dst == "10.218.0.2")
            .count();
        assert_eq!(inner, v.len(), "threads: {threads}");
    }
    // Each connection gives samples (the handshake's at least).
    assert!(one.0.len() >= 2 * CONNS, "{} samples", one.0.len());
    assert_eq!(keys(&one.0), keys(&two.0), "the samples differ");
    // Each packet of each connection was seen twice, once in each form: a NAT copy.
    assert!(one.2 >= (CONNS * 10) as u64, "{} NAT copies", one.2);
    assert_eq!((one.1, one.2), (two.1, two.2), "copies (plain, nat)");
}
