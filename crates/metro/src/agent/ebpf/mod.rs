//! In-kernel capture: metro's tc program (crates/metro/bpf/capture.bpf.c, compiled by
//! build.rs and embedded here) decodes each TCP segment of the watched hosts where the
//! kernel meets it and hands user space a 96-byte record through a BPF ring buffer, instead
//! of a copy of the frame through libpcap's ring. User space reads the records into the
//! engine's [`Segment`]s ([`record`]); everything after that is the libpcap path's.
//!
//! A [`Kernel`] is one loaded program with its maps (per instance): the ring buffer, the
//! watch list as two LPM tries (IPv4, IPv6) changed in place when the list changes (no
//! program rebuilt, any length), per-CPU counters of what the program saw and did not
//! decode, and the set of interfaces it is attached to (ingress and egress through TCX on
//! kernels from 6.6, clsact before; loopback on ingress only, where every packet passes
//! twice). On `any` it attaches to every interface of the namespace and follows those that
//! appear ([`Kernel::follow_interfaces`]).
//!
//! Frames the program does not decode (tunnels, MPLS, PPPoE, deep header chains, malformed
//! headers) come as raw-frame records ([`record::RawFrame`]: the frame's first 256 bytes);
//! [`run`] decodes them with metro-core's decoder and feeds them to the same processing as
//! the records ([`Processor::raw_frame`]), counted by reason in `metro.packets.raw`. Watched
//! UDP, ICMP and ICMPv6 frames come the same way when [`Kernel::set_other_protocols`] turns
//! them on, and TCP segments whose payload may be a DNS message (DNS over TCP: records carry
//! no payload) when [`Kernel::set_dns_tcp`] does.
//!
//! With `threads: N` ([`run`]), this thread only reads the ring buffer and hands each record
//! to one of N engine threads by its connection (both directions to one), each with its
//! own [`Processor`]; the flusher merges their intervals. On `any` it drops the copies
//! itself first ([`CopyCheck`]): a NAT copy's addresses would send it to another engine than
//! its first sighting.
//!
//! Loading needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN), attaching CAP_NET_ADMIN: an
//! [`OpenError`] says which step failed so that `capture: auto` falls back to libpcap.

pub mod record;

use std::collections::{HashMap, HashSet};
use std::net::IpAddr;
use std::os::fd::AsRawFd;

use aya::maps::lpm_trie::{Key, LpmTrie};
use aya::maps::{Array, HashMap as BpfHashMap, MapData, PerCpuArray, RingBuf};
use aya::programs::ProgramError;
use aya::programs::tc::{self, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::capture::{CopyCheck, Processor, RawKind, Worker};
use super::config::Cidr;
use super::live::READ_TIMEOUT_MS;
use super::watch::WatchList;
use record::{RawFrame, Record};

/// The compiled program (build.rs: clang -target bpf).
static OBJECT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/capture.bpf.o"));

/// How long the reader waits between drains while records flow (the program wakes it sooner,
/// each CPU once it has written its share of a batch: [`wake_bytes`]). The records carry
/// their own times: the wait delays only when a sample is counted, never its value.
const BATCH_WAIT_MS: i32 = 10;

/// The longest one drain of the ring buffer runs before the reading thread does its other
/// work (a new watch list into the kernel's tries, the kernel's drop counters, interfaces
/// that came or went, partial batches to quiet shards): under a flood the ring may never
/// empty, and a drain that waited for it to would put all of that off for as long.
const DRAIN_MAX: Duration = Duration::from_millis(100);

/// Default ring buffer: 8 MiB, about 87,000 records (a power of two, as the kernel needs).
pub const RING_BYTES: u32 = 8 << 20;

/// The program's counters (the `C_*` indexes of capture.bpf.c), summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// Records written to the ring buffer.
    pub records: u64,
    /// Records lost because the ring buffer was full: kernel drops.
    pub ring_full: u64,
    /// Frames the program does not decode: MPLS, PPPoE, tunnels, a third VLAN tag, more
    /// IPv6 extension headers than the decoder follows.
    pub unparsed: u64,
    /// Truncated or impossible IP/TCP headers.
    pub malformed: u64,
    /// Later fragments of TCP datagrams (no TCP header to read).
    pub fragments: u64,
    /// TCP segments neither of whose addresses is watched.
    pub not_watched: u64,
    /// Raw-frame records written: frames handed over whole ([`RawFrame`]).
    pub raw: u64,
}

/// The counters user space reads (the map holds one slot more: C_WAKE_BYTES, the program's
/// own per-CPU tally of bytes written since it last woke the reader).
const N_COUNTERS: u32 = 7;

/// `config` bit: watched UDP, ICMP and ICMPv6 frames go to user space as raw frames.
const CFG_OTHER_PROTOCOLS: u32 = 1;
/// `config` bit: no TCP segment records (an instance whose protocols leave TCP out: its
/// engine would only count them; DNS over TCP comes by [`CFG_DNS_TCP`] all the same).
const CFG_NO_TCP: u32 = 2;
/// `config` slot: the bytes a CPU writes between two wakeups of the reader ([`wake_bytes`]).
const CFG_WAKE_SLOT: u32 = 1;

/// The bytes each CPU writes into the ring between two wakeups of the reader: 128 KiB (about
/// 1,400 records), fewer where many CPUs share the ring, so that what can wait unannounced
/// (each CPU just short of its share) stays a quarter of the ring; at least 4 KiB.
pub fn wake_bytes(ring_bytes: u32, cpus: usize) -> u32 {
    let share = u64::from(ring_bytes) / (4 * cpus.max(1) as u64);
    share.clamp(4 << 10, 128 << 10) as u32
}

/// `config` bit: `l3_interfaces` has an entry (the program skips its lookup otherwise).
const CFG_L3_PRESENT: u32 = 8;
/// `config` bit: watched TCP segments whose payload may be a DNS message (the check of
/// `Tracker::may_be_dns`) go to user space as raw frames, for DNS over TCP.
const CFG_DNS_TCP: u32 = 4;

/// One ring-buffer entry.
pub enum Item<'a> {
    /// A TCP segment the program decoded.
    Segment(Record),
    /// A frame handed over whole.
    Raw(RawFrame<'a>),
}

/// Why the program could not be put to work.
#[derive(Debug)]
pub enum OpenError {
    /// The kernel refused to load it (no CAP_BPF/CAP_PERFMON, or the verifier said no).
    Load(String),
    /// It could not be attached to an interface (no CAP_NET_ADMIN, no such interface).
    Attach { iface: String, detail: String },
}

impl std::fmt::Display for OpenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenError::Load(d) => write!(
                f,
                "the kernel refused metro's eBPF program ({d}); loading it needs CAP_BPF and \
                 CAP_PERFMON (or root)"
            ),
            OpenError::Attach { iface, detail } => write!(
                f,
                "cannot attach metro's eBPF program to `{iface}` ({detail}); attaching needs \
                 CAP_NET_ADMIN"
            ),
        }
    }
}

impl std::error::Error for OpenError {}

/// An error with its sources, and the end of the verifier's log when it has one.
fn describe(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(x) = src {
        s.push_str(": ");
        s.push_str(&x.to_string());
        src = x.source();
    }
    s
}

fn describe_program(e: &ProgramError) -> String {
    if let ProgramError::LoadError {
        io_error,
        verifier_log,
    } = e
    {
        let log = verifier_log.to_string();
        let tail: Vec<&str> = log.lines().rev().take(6).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        return format!("{io_error}; verifier: {}", tail.join(" / "));
    }
    describe(e)
}

/// An interface the program runs on.
struct Attached {
    name: String,
    /// Frames start at the IP header: the interface has an entry in `l3_interfaces`, removed
    /// when the interface goes (the map holds 4,096).
    l3: bool,
}

/// One loaded program, its maps and its attachments.
pub struct Kernel {
    /// Declared before `bpf`: the maps it holds are dropped first.
    ring: RingBuf<MapData>,
    watch4: LpmTrie<MapData, [u8; 4], u8>,
    watch6: LpmTrie<MapData, [u8; 16], u8>,
    counters: PerCpuArray<MapData, u64>,
    l3: BpfHashMap<MapData, u32, u8>,
    config: Array<MapData, u32>,
    /// What `config` holds (CFG_*).
    config_word: u32,
    /// The blocks in the tries now.
    installed: HashSet<Cidr>,
    /// What `iface` named: one interface, or every one (`any`).
    iface: String,
    attached: HashMap<u32, Attached>,
    /// Owns the programs and their links (dropping it detaches them).
    bpf: Ebpf,
}

/// The interfaces of the calling thread's network namespace: (index, name, ARPHRD link
/// type), from getifaddrs (netlink; /sys/class/net would show the namespace sysfs was
/// mounted in instead): an interface's AF_PACKET entry gives both, and one without a
/// hardware address (tun, WireGuard: getifaddrs gives it no AF_PACKET entry, only its name)
/// is asked for them ([`link_of`]).
fn interfaces() -> Vec<(u32, String, u32)> {
    let mut v = Vec::new();
    let mut bare = Vec::new();
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: getifaddrs fills `head` with a list it allocated, which is only read here and
    // freed once by freeifaddrs below; each entry's name is a NUL-terminated string and an
    // AF_PACKET entry's address is a sockaddr_ll (netdevice(7)), both valid until the free.
    unsafe {
        if libc::getifaddrs(&mut head) != 0 {
            return v;
        }
        let mut p = head;
        while !p.is_null() {
            let ifa = &*p;
            p = ifa.ifa_next;
            if ifa.ifa_name.is_null() {
                continue;
            }
            let name = std::ffi::CStr::from_ptr(ifa.ifa_name).to_owned();
            if ifa.ifa_addr.is_null() {
                bare.push(name);
                continue;
            }
            if i32::from((*ifa.ifa_addr).sa_family) != libc::AF_PACKET {
                continue;
            }
            let ll = &*(ifa.ifa_addr as *const libc::sockaddr_ll);
            let name = name.to_string_lossy().into_owned();
            v.push((ll.sll_ifindex as u32, name, u32::from(ll.sll_hatype)));
        }
        libc::freeifaddrs(head);
    }
    v.extend(bare.iter().filter_map(|n| link_of(n)));
    v.sort();
    v.dedup_by_key(|e| e.0);
    v
}

/// The index and ARPHRD link type of the interface `name` (`if_nametoindex`, then the
/// SIOCGIFHWADDR ioctl, whose address family is the link type: ARPHRD_NONE for tun and
/// WireGuard), None if it went meanwhile.
fn link_of(name: &std::ffi::CStr) -> Option<(u32, String, u32)> {
    // SAFETY: `name` is NUL-terminated.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    let bytes = name.to_bytes();
    if index == 0 || bytes.len() >= libc::IFNAMSIZ {
        return None;
    }
    // SAFETY: a datagram socket for the ioctl, closed below; an all-zero ifreq is valid, its
    // name (shorter than IFNAMSIZ, so NUL-terminated by the zeroes) is set before the call,
    // which writes its hardware address, read only after a successful return.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return None;
        }
        let mut ifr: libc::ifreq = std::mem::zeroed();
        for (d, s) in ifr.ifr_name.iter_mut().zip(bytes) {
            *d = *s as libc::c_char;
        }
        let rc = libc::ioctl(fd, libc::SIOCGIFHWADDR, &mut ifr);
        libc::close(fd);
        (rc == 0).then(|| {
            (
                index,
                name.to_string_lossy().into_owned(),
                u32::from(ifr.ifr_ifru.ifru_hwaddr.sa_family),
            )
        })
    }
}

/// ARPHRD_ETHER and ARPHRD_LOOPBACK: frames with an Ethernet header. Everything else the
/// program is attached to (tun, WireGuard, IP tunnels) starts at the IP header.
const ARPHRD_ETHER: u32 = 1;
const ARPHRD_LOOPBACK: u32 = 772;

impl Kernel {
    /// Loads the program (the verifier checks it here), creates its maps with a ring buffer
    /// of `ring_bytes` (a power of two of at least a page), and attaches it to `iface`
    /// (`any`: every interface now, see [`Kernel::follow_interfaces`]). Nothing is watched
    /// until [`Kernel::apply_watch`].
    pub fn open(iface: &str, ring_bytes: u32) -> Result<Kernel, OpenError> {
        let mut bpf = EbpfLoader::new()
            .map_max_entries("records", ring_bytes)
            .load(OBJECT)
            .map_err(|e| OpenError::Load(describe(&e)))?;
        for name in ["metro_ingress", "metro_egress"] {
            let p: &mut SchedClassifier = bpf
                .program_mut(name)
                .ok_or_else(|| OpenError::Load(format!("no program {name} in the object")))?
                .try_into()
                .map_err(|e: ProgramError| OpenError::Load(describe(&e)))?;
            p.load()
                .map_err(|e| OpenError::Load(describe_program(&e)))?;
        }
        let take = |bpf: &mut Ebpf, name: &str| {
            bpf.take_map(name)
                .ok_or_else(|| OpenError::Load(format!("no map {name} in the object")))
        };
        let map_err = |e: aya::maps::MapError| OpenError::Load(describe(&e));
        let ring = RingBuf::try_from(take(&mut bpf, "records")?).map_err(map_err)?;
        let watch4 = LpmTrie::try_from(take(&mut bpf, "watch4")?).map_err(map_err)?;
        let watch6 = LpmTrie::try_from(take(&mut bpf, "watch6")?).map_err(map_err)?;
        let counters = PerCpuArray::try_from(take(&mut bpf, "counters")?).map_err(map_err)?;
        let l3 = BpfHashMap::try_from(take(&mut bpf, "l3_interfaces")?).map_err(map_err)?;
        let mut config = Array::try_from(take(&mut bpf, "config")?).map_err(map_err)?;
        // Each CPU wakes the reader once per this many bytes it writes (see wake_bytes).
        let cpus = aya::util::nr_cpus().map_or(1, |n| n.max(1));
        config
            .set(CFG_WAKE_SLOT, wake_bytes(ring_bytes, cpus), 0)
            .map_err(map_err)?;
        let mut k = Kernel {
            ring,
            watch4,
            watch6,
            counters,
            l3,
            config,
            config_word: 0,
            installed: HashSet::new(),
            iface: iface.to_string(),
            attached: HashMap::new(),
            bpf,
        };
        if iface == "any" {
            k.follow_interfaces();
            if k.attached.is_empty() {
                return Err(OpenError::Attach {
                    iface: iface.to_string(),
                    detail: "no interface took the program".to_string(),
                });
            }
        } else {
            let found = interfaces().into_iter().find(|(_, n, _)| n == iface);
            let Some((index, name, kind)) = found else {
                return Err(OpenError::Attach {
                    iface: iface.to_string(),
                    detail: "no such interface".to_string(),
                });
            };
            k.attach(index, &name, kind)?;
        }
        Ok(k)
    }

    /// Attaches to one interface (both directions; loopback on ingress only).
    fn attach(&mut self, index: u32, name: &str, kind: u32) -> Result<(), OpenError> {
        let l3 = kind != ARPHRD_ETHER && kind != ARPHRD_LOOPBACK;
        let attached = self.attach_programs(index, name, kind, l3);
        if attached.is_err() && l3 {
            // Not attached: its entry would only take room.
            let _ = self.l3.remove(&index);
        }
        attached
    }

    fn attach_programs(
        &mut self,
        index: u32,
        name: &str,
        kind: u32,
        l3: bool,
    ) -> Result<(), OpenError> {
        let err = |detail: String| OpenError::Attach {
            iface: name.to_string(),
            detail,
        };
        if l3 {
            self.l3.insert(index, 1, 0).map_err(|e| err(describe(&e)))?;
            self.set_config(CFG_L3_PRESENT, true).map_err(err)?;
        }
        // Before 6.6 the program goes on the clsact qdisc (TCX needs none); one that is
        // there already is fine.
        let tcx = aya::util::KernelVersion::current()
            .is_ok_and(|v| v >= aya::util::KernelVersion::new(6, 6, 0));
        if !tcx
            && let Err(e) = tc::qdisc_add_clsact(name)
            && !matches!(&e, tc::TcError::IoError(io) if io.kind() == std::io::ErrorKind::AlreadyExists)
        {
            return Err(err(describe(&e)));
        }
        let mut directions = vec![("metro_ingress", TcAttachType::Ingress)];
        if kind != ARPHRD_LOOPBACK {
            directions.push(("metro_egress", TcAttachType::Egress));
        }
        for (prog, dir) in directions {
            let p: &mut SchedClassifier = self
                .bpf
                .program_mut(prog)
                .and_then(|p| p.try_into().ok())
                .ok_or_else(|| err(format!("no program {prog}")))?;
            p.attach(name, dir).map_err(|e| err(describe(&e)))?;
        }
        self.attached.insert(
            index,
            Attached {
                name: name.to_string(),
                l3,
            },
        );
        Ok(())
    }

    /// Attaches to the interfaces that appeared since the last call (on `any`, every one; else
    /// the named one, come back after it went) and forgets those that went (the kernel
    /// detached the program with the device). Returns the names of the new ones.
    pub fn follow_interfaces(&mut self) -> Vec<String> {
        let mut now = interfaces();
        if self.iface != "any" {
            now.retain(|(_, n, _)| *n == self.iface);
        }
        let present: HashSet<u32> = now.iter().map(|(i, _, _)| *i).collect();
        let l3 = &mut self.l3;
        self.attached.retain(|i, a| {
            let here = present.contains(i);
            if !here && a.l3 {
                let _ = l3.remove(i);
            }
            here
        });
        let mut new = Vec::new();
        for (index, name, kind) in now {
            if self.attached.contains_key(&index) {
                continue;
            }
            match self.attach(index, &name, kind) {
                Ok(()) => new.push(name),
                // A device that went between the listing and the attach, or one that
                // takes no tc program.
                Err(e) => tracing::debug!("{}: {e}", self.iface),
            }
        }
        new
    }

    /// The interfaces the program is attached to, by name.
    pub fn interfaces(&self) -> Vec<String> {
        let mut v: Vec<String> = self.attached.values().map(|a| a.name.clone()).collect();
        v.sort();
        v
    }

    /// Makes the tries hold `watch`'s blocks (configured and resolved): inserts the new
    /// blocks, then removes the old ones, in place; a segment in both lists is never
    /// missed. Returns the number of blocks watched.
    pub fn apply_watch(&mut self, watch: &WatchList) -> Result<usize, String> {
        let want: HashSet<Cidr> = watch.blocks().into_iter().collect();
        for c in want.difference(&self.installed) {
            let r = match c.addr {
                IpAddr::V4(a) => {
                    self.watch4
                        .insert(&Key::new(u32::from(c.prefix), a.octets()), 1, 0)
                }
                IpAddr::V6(a) => {
                    self.watch6
                        .insert(&Key::new(u32::from(c.prefix), a.octets()), 1, 0)
                }
            };
            r.map_err(|e| {
                format!(
                    "watch list: cannot add {}/{}: {}",
                    c.addr,
                    c.prefix,
                    describe(&e)
                )
            })?;
        }
        for c in self.installed.difference(&want) {
            let r = match c.addr {
                IpAddr::V4(a) => self
                    .watch4
                    .remove(&Key::new(u32::from(c.prefix), a.octets())),
                IpAddr::V6(a) => self
                    .watch6
                    .remove(&Key::new(u32::from(c.prefix), a.octets())),
            };
            r.map_err(|e| {
                format!(
                    "watch list: cannot remove {}/{}: {}",
                    c.addr,
                    c.prefix,
                    describe(&e)
                )
            })?;
        }
        let n = want.len();
        self.installed = want;
        Ok(n)
    }

    /// Waits up to `timeout_ms` for records; true when some are ready.
    pub fn wait(&self, timeout_ms: i32) -> bool {
        let mut p = libc::pollfd {
            fd: self.ring.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one valid pollfd for the duration of the call, and the count says
        // one; the descriptor belongs to `self.ring`, open for as long as `self`.
        let n = unsafe { libc::poll(&mut p, 1, timeout_ms) };
        n > 0
    }

    /// Whether the program hands watched UDP, ICMP and ICMPv6 frames to user space as raw
    /// frames (off when the program is loaded: a TCP-only instance pays nothing for them).
    pub fn set_other_protocols(&mut self, on: bool) -> Result<(), String> {
        self.set_config(CFG_OTHER_PROTOCOLS, on)
    }

    /// Whether the program writes TCP segment records (on when the program is loaded); off
    /// for an instance whose `protocols` leave TCP out, as libpcap's filter then passes no
    /// TCP either: its segments cost neither the ring buffer nor the engine.
    pub fn set_tcp(&mut self, on: bool) -> Result<(), String> {
        self.set_config(CFG_NO_TCP, !on)
    }

    /// Whether the program hands watched TCP segments that may carry a DNS message to user
    /// space as raw frames (DNS over TCP: the tracker needs the payload); off when the
    /// program is loaded, on for an instance whose `protocols` name DNS.
    pub fn set_dns_tcp(&mut self, on: bool) -> Result<(), String> {
        self.set_config(CFG_DNS_TCP, on)
    }

    /// Switches `bit` of the program's config word; no write when it already is as asked
    /// (each tun or WireGuard interface attached asks for CFG_L3_PRESENT again).
    fn set_config(&mut self, bit: u32, on: bool) -> Result<(), String> {
        let word = if on {
            self.config_word | bit
        } else {
            self.config_word & !bit
        };
        if word == self.config_word {
            return Ok(());
        }
        self.config
            .set(0, word, 0)
            .map_err(|e| format!("cannot configure metro's eBPF program: {}", describe(&e)))?;
        self.config_word = word;
        Ok(())
    }

    /// The next entry of the ring buffer, if one is ready, given to `f` (a raw frame borrows
    /// the ring buffer's memory until `f` returns).
    #[inline]
    pub fn next_item<T>(&mut self, f: impl FnOnce(Item<'_>) -> T) -> Option<T> {
        loop {
            let item = self.ring.next()?;
            if let Some(raw) = RawFrame::parse(&item) {
                return Some(f(Item::Raw(raw)));
            }
            if let Some(r) = Record::parse(&item) {
                return Some(f(Item::Segment(r)));
            }
        }
    }

    /// The next TCP segment record, if one is ready (raw frames before it are skipped).
    #[inline]
    pub fn next_record(&mut self) -> Option<Record> {
        loop {
            if let Some(r) = self.next_item(|i| match i {
                Item::Segment(r) => Some(r),
                Item::Raw(_) => None,
            })? {
                return Some(r);
            }
        }
    }

    /// The program's counters, summed over CPUs.
    pub fn counters(&self) -> Counters {
        let mut v = [0u64; N_COUNTERS as usize];
        for (i, slot) in v.iter_mut().enumerate() {
            if let Ok(per_cpu) = self.counters.get(&(i as u32), 0) {
                *slot = per_cpu.iter().sum();
            }
        }
        Counters {
            records: v[0],
            ring_full: v[1],
            unparsed: v[2],
            malformed: v[3],
            fragments: v[4],
            not_watched: v[5],
            raw: v[6],
        }
    }
}

/// The capture thread of an instance whose packets the kernel decodes: records from the
/// ring buffer into the [`Processor`] (the same engine, interval and hand-over as libpcap's
/// loop), the watch list written into the tries when its generation moves, and once a
/// second the program's counters published (ring-buffer overruns as kernel drops), the
/// clock offset read again and the interfaces followed.
pub fn run(w: Worker, k: Kernel, threads: usize) {
    if threads > 1 {
        run_sharded(w, k, threads)
    } else {
        run_one(w, k)
    }
}

/// One engine: the records straight into the [`Processor`] on this thread.
fn run_one(w: Worker, mut k: Kernel) {
    let iface = w.shared.iface.clone();
    let mut proc = Processor::new(w.shared.clone(), w.engine.clone(), w.duty);
    proc.refresh();
    let mut watch_gen = proc.watch_generation();
    install(&iface, &mut k, proc.watch());
    let mut offset = realtime_offset();
    let mut last_second = Instant::now();
    let mut every_second = EverySecond::new();
    while !w.stop.load(Ordering::Relaxed) {
        if w.shared.watch.generation() != watch_gen {
            proc.refresh_watch();
            watch_gen = proc.watch_generation();
            install(&iface, &mut k, proc.watch());
        }
        proc.refresh();
        let mut n = 0u32;
        let mut got = false;
        let drain = Instant::now();
        while k
            .next_item(|item| match item {
                Item::Segment(r) => feed(&mut proc, r.mono_ns as i64 + offset, &r),
                Item::Raw(f) => {
                    w.shared.cumulative.packets_raw[f.reason.index()]
                        .fetch_add(1, Ordering::Relaxed);
                    proc.raw_frame(
                        f.linktype(),
                        f.mono_ns as i64 + offset,
                        f.data,
                        f.ifindex,
                        f.cgroup,
                    );
                }
            })
            .is_some()
        {
            got = true;
            n += 1;
            // Answer the flusher and the stop flag in a flood too.
            if n == 1024 {
                proc.serve_flush();
                if w.stop.load(Ordering::Relaxed) || drain.elapsed() >= DRAIN_MAX {
                    break;
                }
                n = 0;
            }
        }
        proc.serve_flush();
        if last_second.elapsed() >= Duration::from_secs(1) {
            last_second = Instant::now();
            offset = realtime_offset();
            every_second.run(&iface, &mut k, &w);
            proc.tick(realtime_offset() + monotonic_ns());
        }
        // The program wakes this thread only when a batch is waiting: while records flow,
        // look again after BATCH_WAIT_MS; idle, after the usual read timeout.
        k.wait(if got { BATCH_WAIT_MS } else { READ_TIMEOUT_MS });
    }
    let now = realtime_offset() + monotonic_ns();
    proc.tick(now);
    proc.publish();
    // The last interval: the flusher collects it once this thread has ended.
    proc.hand_over();
}

/// A segment record, captured at `ts` (ns since the epoch), into `proc`: the sending
/// socket's cgroup noted first (egress records carry it), then the segment.
#[inline]
fn feed(proc: &mut Processor, ts: i64, r: &Record) {
    if r.cgroup != 0 {
        proc.egress_cgroup(&r.segment, r.cgroup);
    }
    proc.segment(ts, &r.segment, r.ifindex);
}

/// The ring reader's chores once a second, on either path ([`run_one`], [`run_sharded`]): the
/// program's overruns published as kernel drops (and logged when they grow), the frames it
/// left aside logged once a minute when their number grew, new interfaces followed.
struct EverySecond {
    lost_reported: u64,
    aside_reported: (u64, Instant),
}

impl EverySecond {
    fn new() -> EverySecond {
        EverySecond {
            lost_reported: 0,
            aside_reported: (0, Instant::now()),
        }
    }

    fn run(&mut self, iface: &str, k: &mut Kernel, w: &Worker) {
        let c = k.counters();
        w.shared
            .cumulative
            .packets_dropped
            .store(c.ring_full, Ordering::Relaxed);
        if c.ring_full > self.lost_reported {
            tracing::warn!(
                "{iface}: the ring buffer overflowed: {} records lost so far",
                c.ring_full
            );
            self.lost_reported = c.ring_full;
        }
        let aside = c.unparsed + c.malformed + c.fragments;
        if aside != self.aside_reported.0
            && self.aside_reported.1.elapsed() >= Duration::from_secs(60)
        {
            tracing::info!(
                "{iface}: in the kernel, {aside} frames not decoded so far ({} MPLS, PPPoE, \
                 tunnels or deep headers and {} malformed, decoded in user space; {} later \
                 fragments)",
                c.unparsed,
                c.malformed,
                c.fragments
            );
            self.aside_reported = (aside, Instant::now());
        }
        for name in k.follow_interfaces() {
            tracing::info!("{iface}: in-kernel capture on {name}");
        }
    }
}

/// What the reader hands an engine thread.
enum Work {
    Segment {
        ts: i64,
        record: Record,
    },
    Raw {
        ts: i64,
        linktype: u32,
        ifindex: u32,
        cgroup: u64,
        data: Vec<u8>,
    },
}

/// Items per hand-over from the reader to an engine thread.
const BATCH: usize = 256;

/// Batches waiting per engine thread before the reader waits for it (then the ring buffer
/// fills, and what it cannot hold is counted as kernel drops).
const QUEUED_BATCHES: usize = 64;

/// `threads: N`: this thread reads the ring buffer and hands each record, by connection, to
/// one of N engine threads, each with its own [`Processor`] (engine, flow table, interval;
/// the flusher merges the intervals they hand over). The reader keeps the watch list in the
/// tries, publishes the program's counters and follows the interfaces, as [`run_one`]. On
/// `any` it also drops the copies first ([`CopyCheck`]), before sharding: a NAT copy's other
/// addresses would take it to another shard than its first sighting.
fn run_sharded(w: Worker, mut k: Kernel, n: usize) {
    let iface = w.shared.iface.clone();
    w.shared.set_engines(n);
    let (mut watch_gen, mut watch) = w.shared.watch.get();
    install(&iface, &mut k, &watch);
    let mut copies = CopyCheck::new(w.shared.clone());
    let mut offset = realtime_offset();
    let mut last_second = Instant::now();
    let mut every_second = EverySecond::new();
    std::thread::scope(|scope| {
        let mut txs = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Work>>(QUEUED_BATCHES);
            txs.push(tx);
            let proc =
                Processor::new(w.shared.clone(), w.engine.clone(), w.duty).without_copy_check();
            let spawned = std::thread::Builder::new()
                .name(format!("metro-eng-{i}"))
                .spawn_scoped(scope, move || engine_thread(rx, proc));
            if let Err(e) = spawned {
                tracing::error!("{iface}: cannot start engine thread {i}: {e}");
                return;
            }
        }
        let mut batches: Vec<Vec<Work>> = (0..n).map(|_| Vec::with_capacity(BATCH)).collect();
        let send = |i: usize, batches: &mut Vec<Vec<Work>>| {
            let b = std::mem::replace(&mut batches[i], Vec::with_capacity(BATCH));
            // An engine thread ends only when this one drops its sender.
            let _ = txs[i].send(b);
        };
        while !w.stop.load(Ordering::Relaxed) {
            if w.shared.watch.generation() != watch_gen {
                (watch_gen, watch) = w.shared.watch.get();
                install(&iface, &mut k, &watch);
            }
            if let Some(c) = &mut copies {
                c.refresh();
            }
            let mut got = 0u32;
            let drain = Instant::now();
            while let Some(item) = k.next_item(|item| match item {
                Item::Segment(record) => {
                    let ts = record.mono_ns as i64 + offset;
                    if copies
                        .as_mut()
                        .is_some_and(|c| c.segment(ts, &record.segment, record.ifindex))
                    {
                        return None;
                    }
                    Some((record.segment.shard(n), Work::Segment { ts, record }))
                }
                Item::Raw(f) => {
                    w.shared.cumulative.packets_raw[f.reason.index()]
                        .fetch_add(1, Ordering::Relaxed);
                    let (ts, linktype) = (f.mono_ns as i64 + offset, f.linktype());
                    // Checked as the engine's Processor::raw_frame will take it; what counts
                    // only as filtered or a decode error goes to the first shard.
                    let (copy, i) = match RawKind::classify(linktype, f.data, &watch) {
                        RawKind::Segment(seg, _) => (
                            copies
                                .as_mut()
                                .is_some_and(|c| c.segment(ts, &seg, f.ifindex)),
                            seg.shard(n),
                        ),
                        RawKind::Datagram => (
                            copies
                                .as_mut()
                                .is_some_and(|c| c.frame(linktype, ts, f.data)),
                            0,
                        ),
                        RawKind::Unwatched | RawKind::Undecodable => (false, 0),
                    };
                    (!copy).then(|| {
                        (
                            i,
                            Work::Raw {
                                ts,
                                linktype,
                                ifindex: f.ifindex,
                                cgroup: f.cgroup,
                                data: f.data.to_vec(),
                            },
                        )
                    })
                }
            }) {
                got += 1;
                if let Some((i, work)) = item {
                    batches[i].push(work);
                    if batches[i].len() == BATCH {
                        send(i, &mut batches);
                    }
                }
                if got.is_multiple_of(4096)
                    && (w.stop.load(Ordering::Relaxed) || drain.elapsed() >= DRAIN_MAX)
                {
                    break;
                }
            }
            for i in 0..n {
                if !batches[i].is_empty() {
                    send(i, &mut batches);
                }
            }
            if last_second.elapsed() >= Duration::from_secs(1) {
                last_second = Instant::now();
                offset = realtime_offset();
                every_second.run(&iface, &mut k, &w);
            }
            k.wait(if got > 0 {
                BATCH_WAIT_MS
            } else {
                READ_TIMEOUT_MS
            });
        }
        if let Some(c) = &mut copies {
            c.publish();
        }
        // Dropping the senders ends the engine threads, each after its last interval.
        drop(txs);
    });
}

/// One engine thread of [`run_sharded`]: its shard's records into its [`Processor`],
/// answering the flusher between batches and ticking once a second (on the wall clock while
/// idle), until the reader hangs up.
fn engine_thread(rx: std::sync::mpsc::Receiver<Vec<Work>>, mut proc: Processor) {
    use std::sync::mpsc::RecvTimeoutError;
    let wait = Duration::from_millis(READ_TIMEOUT_MS as u64);
    let mut last_tick = Instant::now();
    loop {
        match rx.recv_timeout(wait) {
            Ok(batch) => {
                proc.refresh();
                for work in batch {
                    match work {
                        Work::Segment { ts, record } => feed(&mut proc, ts, &record),
                        Work::Raw {
                            ts,
                            linktype,
                            ifindex,
                            cgroup,
                            data,
                        } => proc.raw_frame(linktype, ts, &data, ifindex, cgroup),
                    }
                }
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => break,
        }
        proc.serve_flush();
        if last_tick.elapsed() >= Duration::from_secs(1) {
            last_tick = Instant::now();
            proc.tick(realtime_offset() + monotonic_ns());
        }
    }
    proc.tick(realtime_offset() + monotonic_ns());
    proc.publish();
    proc.hand_over();
}

/// Writes the watch list into the tries and says so (the line libpcap's path writes for its
/// filter, `capture filter: ...`).
fn install(iface: &str, k: &mut Kernel, watch: &WatchList) {
    match k.apply_watch(watch) {
        // The blocks in libpcap's words when they are few.
        Ok(n) if n <= 16 => {
            let list: Vec<String> = watch
                .blocks()
                .iter()
                .map(super::filter::primitive)
                .collect();
            tracing::info!(
                "{iface}: capture filter: in the kernel, tcp and ({})",
                if list.is_empty() {
                    "nothing".to_string()
                } else {
                    list.join(" or ")
                }
            )
        }
        Ok(n) => {
            tracing::info!("{iface}: capture filter: in the kernel, tcp and {n} watched blocks")
        }
        Err(e) => tracing::error!("{iface}: {e}"),
    }
}

/// Raises every permitted capability into the effective set of the calling thread (and of
/// the threads it starts afterwards). The package gives /usr/bin/metro its capabilities as
/// permitted only (`setcap cap_net_raw,cap_net_admin,cap_bpf,cap_perfmon+p`): with the
/// effective bit, the kernel refuses to exec a binary at all when one of them is missing
/// from the bounding set (a container granted NET_RAW alone), whereas metro can run with
/// what it gets: libpcap needs CAP_NET_RAW, the in-kernel capture the other three. Called
/// once, first thing in `metro run`.
pub fn raise_capabilities() {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    // _LINUX_CAPABILITY_VERSION_3: two Data words (64 capabilities).
    let mut h = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut d = [Data::default(); 2];
    // SAFETY: capget reads the header and writes two Data structs (version 3) into `d`,
    // which holds two; both outlive the call.
    if unsafe { libc::syscall(libc::SYS_capget, &mut h, d.as_mut_ptr()) } != 0 {
        return;
    }
    if d.iter().all(|x| x.effective == x.permitted) {
        return;
    }
    for x in &mut d {
        x.effective = x.permitted;
    }
    // SAFETY: capset reads the header and two Data structs, valid for the call. Raising the
    // effective set within the permitted one never needs privilege; a refusal (a seccomp
    // filter) leaves the sets as they were, and capture then says what is missing.
    unsafe { libc::syscall(libc::SYS_capset, &mut h, d.as_ptr()) };
}

fn clock_ns(clock: libc::clockid_t) -> i64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `t` is a valid timespec for the call to fill; both clocks metro reads always
    // exist.
    unsafe { libc::clock_gettime(clock, &mut t) };
    t.tv_sec * 1_000_000_000 + t.tv_nsec
}

fn monotonic_ns() -> i64 {
    clock_ns(libc::CLOCK_MONOTONIC)
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, in nanoseconds: added to a record's time to give
/// the wall time the engine and the reports use (read again every second, so that a
/// clock step is followed).
pub fn realtime_offset() -> i64 {
    clock_ns(libc::CLOCK_REALTIME) - monotonic_ns()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 128 KiB a CPU where the ring is roomy; fewer on many CPUs, so that every CPU just
    /// short of its share still leaves three quarters of the ring free; never under 4 KiB.
    #[test]
    fn each_cpus_share_before_a_wakeup_keeps_the_ring_three_quarters_free() {
        assert_eq!(wake_bytes(RING_BYTES, 1), 128 << 10);
        assert_eq!(wake_bytes(RING_BYTES, 2), 128 << 10);
        assert_eq!(wake_bytes(RING_BYTES, 16), 128 << 10);
        assert_eq!(wake_bytes(RING_BYTES, 64), 32 << 10);
        assert_eq!(wake_bytes(RING_BYTES, 4096), 4 << 10);
        assert_eq!(wake_bytes(RING_BYTES, 0), 128 << 10);
        for cpus in [1, 3, 17, 60, 96, 255, 512] {
            let w = wake_bytes(RING_BYTES, cpus);
            assert!(
                u64::from(w) * cpus as u64 <= u64::from(RING_BYTES) / 4,
                "{cpus} CPUs: {w}"
            );
        }
    }
}
