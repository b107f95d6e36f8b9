//! The kernel capture filter built from an instance's watch list, with bounded cost.
//!
//! `(BASE and (host A or net B/24 or host 2001:db8::1)) or (vlan and BASE and (...))`:
//! the base filter (go-metro's `-f`, default `tcp`) restricted to the watched addresses and
//! blocks, once for untagged frames and once behind one 802.1Q tag. The `vlan` half is left
//! out on links without VLAN tags (`any`, tun, ...), where libpcap would refuse it.
//!
//! libpcap's compiler and optimizer take time and memory that grow much faster than the
//! expression (3,000 `port N` terms: 10 minutes and 14 GB; a few thousand `host` terms
//! overflow a thread's stack), and the kernel takes classic BPF programs of at most
//! [`BPF_MAXINSNS`] instructions (beyond that libpcap silently filters in user space). So:
//! the base filter is refused past [`MAX_FILTER_LEN`] bytes and checked once at start
//! ([`check_base`], with a time limit); the watch list reaches the kernel as at most
//! [`WATCH_TERMS`] blocks ([`plan`]): the exact blocks when they fit, else wider blocks
//! covering them ([`NetSet::covering`]), fewer and fewer until the compiled program fits
//! the kernel, and at worst the base filter alone. When the kernel filter is wider than the
//! watch list, the packets it lets through are matched in user space ([`watched`]) before
//! the engine, and counted. Every compilation runs on a thread with a large stack.

use std::time::Duration;

use pcap::{BpfProgram, Capture, Linktype};

use super::config::{Cidr, Protocols};
use super::netset::NetSet;
use super::watch::WatchList;

/// A filter that matches no packet (an instance whose names do not resolve yet).
pub const MATCH_NOTHING: &str = "less 1";

/// The kernel's limit on a classic BPF program (`BPF_MAXINSNS` in linux/bpf_common.h).
pub const BPF_MAXINSNS: usize = 4096;

/// The longest base filter (`--filter`, go-metro's `-f`) metro compiles. At this size the
/// slowest expressions measured (`portrange` terms) compile in about a second together with
/// the watch list; libpcap's cost grows much faster than the length beyond it.
pub const MAX_FILTER_LEN: usize = 1024;

/// The most watched blocks listed in a kernel filter. 64 blocks compile to about 1,000
/// instructions (IPv4, with the VLAN half) in a few milliseconds, and the kernel runs them
/// per packet; a longer list is covered by wider blocks and finished in user space.
pub const WATCH_TERMS: usize = 64;

/// Stack for a thread running libpcap's compiler (it recurses over the expression).
const COMPILE_STACK: usize = 64 << 20;

/// How long [`check_base`] waits for libpcap before giving up on the expression.
pub const COMPILE_TIMEOUT: Duration = Duration::from_secs(10);

/// One primitive per block: `host A` or `net A/N` (`ip` / `ip6` for a whole family).
pub fn primitive(c: &Cidr) -> String {
    if c.prefix == 0 {
        if c.addr.is_ipv4() { "ip" } else { "ip6" }.to_string()
    } else if c.is_host() {
        format!("host {}", c.addr)
    } else {
        format!("net {}/{}", c.addr, c.prefix)
    }
}

fn base_or_tcp(base: &str) -> &str {
    let base = base.trim();
    if base.is_empty() { "tcp" } else { base }
}

/// An instance's base filter: the default `tcp` (or none) widened only as far as its
/// `protocols` need (`tcp` for TCP and DNS over TCP, `udp` for QUIC and DNS, `icmp or
/// icmp6` for ICMP echo); a `--filter` of the user's own is theirs, taken as given.
pub fn instance_base(base: &str, protocols: Protocols) -> String {
    let base = base.trim();
    if !base.is_empty() && base != super::config::DEFAULT_BASE_FILTER {
        return base.to_string();
    }
    let mut parts = Vec::new();
    if protocols.has(Protocols::TCP) || protocols.has(Protocols::DNS) {
        parts.push("tcp");
    }
    if protocols.has(Protocols::QUIC) || protocols.has(Protocols::DNS) {
        parts.push("udp");
    }
    if protocols.has(Protocols::ICMP) {
        parts.push("icmp or icmp6");
    }
    parts.join(" or ")
}

/// The filter for `blocks` on a base filter, with or without the VLAN half.
pub fn build(base: &str, blocks: &[Cidr], vlan: bool) -> String {
    if blocks.is_empty() {
        return MATCH_NOTHING.to_string();
    }
    let hosts = blocks
        .iter()
        .map(primitive)
        .collect::<Vec<_>>()
        .join(" or ");
    let base = base_or_tcp(base);
    if vlan {
        format!("(({base}) and ({hosts})) or (vlan and ({base}) and ({hosts}))")
    } else {
        format!("({base}) and ({hosts})")
    }
}

/// The base filter alone, with or without the VLAN half.
pub fn build_base(base: &str, vlan: bool) -> String {
    let base = base_or_tcp(base);
    if vlan {
        format!("({base}) or (vlan and ({base}))")
    } else {
        format!("({base})")
    }
}

/// Run `f` on a thread with a stack large enough for libpcap's compiler, and wait for it.
pub fn on_compile_stack<T: Send>(f: impl FnOnce() -> T + Send) -> Result<T, String> {
    std::thread::scope(|s| {
        let h = std::thread::Builder::new()
            .name("metro-bpf".into())
            .stack_size(COMPILE_STACK)
            .spawn_scoped(s, f)
            .map_err(|e| format!("cannot start a thread to compile the filter: {e}"))?;
        h.join()
            .map_err(|_| "the filter compiler panicked".to_string())
    })
}

/// Check the base filter: not longer than [`MAX_FILTER_LEN`], compiles (on an Ethernet
/// link, with and without the VLAN half) within [`COMPILE_TIMEOUT`], and fits the kernel on
/// its own. The error carries libpcap's message. Returns the instructions of the base alone.
///
/// On a time-out the compiling thread is left behind: the caller is expected to exit.
pub fn check_base(base: &str) -> Result<usize, String> {
    if base.len() > MAX_FILTER_LEN {
        return Err(format!(
            "the filter is {} bytes long; metro compiles at most {MAX_FILTER_LEN} (libpcap's \
             compile time and memory grow much faster than the expression)",
            base.len()
        ));
    }
    if base.contains('\0') {
        return Err("the filter contains a NUL byte".to_string());
    }
    let (tx, rx) = std::sync::mpsc::channel();
    let base_owned = base.to_string();
    std::thread::Builder::new()
        .name("metro-bpf".into())
        .stack_size(COMPILE_STACK)
        .spawn(move || {
            let r = (|| {
                let dead = Capture::dead(Linktype::ETHERNET).map_err(|e| e.to_string())?;
                let plain = dead
                    .compile(&build_base(&base_owned, false), true)
                    .map_err(|e| e.to_string())?;
                dead.compile(&build_base(&base_owned, true), true)
                    .map_err(|e| e.to_string())?;
                Ok::<usize, String>(plain.get_instructions().len())
            })();
            let _ = tx.send(r);
        })
        .map_err(|e| format!("cannot start a thread to compile the filter: {e}"))?;
    let n = match rx.recv_timeout(COMPILE_TIMEOUT) {
        Ok(r) => r.map_err(|e| format!("libpcap refuses the filter `{base}`: {e}"))?,
        Err(_) => {
            return Err(format!(
                "libpcap did not finish compiling the filter within {}s: simplify it",
                COMPILE_TIMEOUT.as_secs()
            ));
        }
    };
    if n > BPF_MAXINSNS {
        return Err(format!(
            "the filter compiles to {n} BPF instructions; the kernel takes at most {BPF_MAXINSNS}"
        ));
    }
    Ok(n)
}

/// Check that the base filter compiles on `linktype` (a live handle's link: an expression
/// may compile on Ethernet and not on another link). The error carries libpcap's message.
pub fn check_base_on(linktype: u32, base: &str) -> Result<(), String> {
    on_compile_stack(|| {
        let dead = Capture::dead(Linktype(linktype as i32)).map_err(|e| e.to_string())?;
        dead.compile(&build_base(base, false), true)
            .map(|_| ())
            .map_err(|e| {
                format!("libpcap refuses the filter `{base}` on this interface's link type {linktype}: {e}")
            })
    })?
}

/// A compiled kernel filter for a watch list.
pub struct Plan {
    /// The expression compiled.
    pub expr: String,
    pub program: BpfProgram,
    /// Whether the filter lists the watched blocks exactly; if not, it is wider and packets
    /// must also pass [`watched`].
    pub exact: bool,
    /// Watched blocks (after merging duplicates and overlaps).
    pub blocks: usize,
    /// Blocks the filter lists.
    pub terms: usize,
    /// libpcap's message when the VLAN form was refused and the plain form used.
    pub vlan_refused: Option<String>,
}

impl Plan {
    pub fn instructions(&self) -> usize {
        self.program.get_instructions().len()
    }

    /// A one-line description for the log: the filter, its size, and what user space does.
    pub fn describe(&self) -> String {
        let mut s = format!("{} ({} BPF instructions", self.expr, self.instructions());
        if !self.exact {
            if self.terms == 0 {
                s.push_str(&format!(
                    "; the {} watched blocks are too many for the kernel filter: every packet \
                     the base filter passes is matched against them in user space",
                    self.blocks
                ));
            } else {
                let (n, verb) = if self.terms == 1 {
                    ("1 wider block".to_string(), "covers")
                } else {
                    (format!("{} wider blocks", self.terms), "cover")
                };
                s.push_str(&format!(
                    "; {n} {verb} the {} watched ones: packets outside them are dropped in \
                     user space",
                    self.blocks
                ));
            }
        }
        s.push(')');
        s
    }
}

/// The kernel filter for `set` on `base`: the exact blocks when they fit, else fewer and
/// wider ones, until the program compiled by `compile` fits [`BPF_MAXINSNS`]; at worst the
/// base filter alone. A VLAN form libpcap refuses falls back to the plain form. Fails only
/// when the base filter itself does not compile or does not fit.
pub fn plan(
    compile: &mut dyn FnMut(&str) -> Result<BpfProgram, String>,
    base: &str,
    set: &NetSet,
    vlan: bool,
) -> Result<Plan, String> {
    plan_within(compile, base, set, vlan, BPF_MAXINSNS)
}

/// [`plan`] with another instruction limit (a kernel that refused a larger program; tests).
pub fn plan_within(
    compile: &mut dyn FnMut(&str) -> Result<BpfProgram, String>,
    base: &str,
    set: &NetSet,
    vlan: bool,
    limit: usize,
) -> Result<Plan, String> {
    if set.is_empty() {
        return Ok(Plan {
            expr: MATCH_NOTHING.to_string(),
            program: compile(MATCH_NOTHING)?,
            exact: true,
            blocks: 0,
            terms: 0,
            vlan_refused: None,
        });
    }
    let blocks = set.cidrs().len();
    let mut vlan = vlan;
    let mut vlan_refused = None;
    let mut budget = WATCH_TERMS;
    loop {
        let (cover, exact) = if budget == 0 {
            (Vec::new(), false)
        } else {
            set.covering(budget)
        };
        let expr = if cover.is_empty() {
            build_base(base, vlan)
        } else {
            build(base, &cover, vlan)
        };
        match compile(&expr) {
            Ok(program) if program.get_instructions().len() <= limit => {
                return Ok(Plan {
                    expr,
                    program,
                    exact,
                    blocks,
                    terms: cover.len(),
                    vlan_refused,
                });
            }
            Ok(program) if budget == 0 => {
                return Err(format!(
                    "the filter `{}` alone compiles to {} BPF instructions; the kernel takes at \
                     most {limit}",
                    base_or_tcp(base),
                    program.get_instructions().len()
                ));
            }
            Ok(_) => budget /= 2,
            Err(e) if vlan => {
                vlan = false;
                vlan_refused = Some(e);
            }
            Err(e) => return Err(format!("libpcap refuses `{expr}`: {e}")),
        }
    }
}

/// [`plan`] on a dead handle of `linktype` (file instances, `check-config`).
pub fn plan_dead(linktype: u32, base: &str, set: &NetSet) -> Result<Plan, String> {
    on_compile_stack(|| {
        let dead = Capture::dead(Linktype(linktype as i32)).map_err(|e| e.to_string())?;
        let vlan = linktype == metro_core::wire::linktype::ETHERNET;
        plan(
            &mut |e| dead.compile(e, true).map_err(|e| e.to_string()),
            base,
            set,
            vlan,
        )
    })?
}

/// Whether a frame the kernel filter let through belongs to the watch list (either end of
/// the innermost IP header watched): a TCP segment, or a UDP datagram or ICMP message (QUIC,
/// DNS, ICMP echo). Frames metro cannot decode pass: the engine counts them.
#[inline]
pub fn watched(linktype: u32, frame: &[u8], watch: &WatchList) -> bool {
    match metro_core::Segment::decode(linktype, frame) {
        Ok(s) => watch.contains(s.src) || watch.contains(s.dst),
        Err(metro_core::wire::DecodeError::NotTcp) => watched_datagram(linktype, frame, watch),
        Err(_) => true,
    }
}

/// [`watched`] for a frame that is not TCP.
#[cold]
pub fn watched_datagram(linktype: u32, frame: &[u8], watch: &WatchList) -> bool {
    match metro_core::wire::decode_datagram(linktype, frame) {
        Some(d) => watch.contains(d.src) || watch.contains(d.dst),
        None => true,
    }
}

/// A capture file's equivalent of the kernel filter: per link type, the program
/// [`plan_dead`] builds (run with libpcap's offline filter), then the user-space match when
/// that program is wider than the watch list. Counts the frames the match drops and logs the
/// total when dropped (the end of the file).
pub struct FileFilters {
    name: String,
    by_linktype: Vec<(u32, Option<BpfProgram>, Option<WatchList>)>,
    filtered: u64,
}

impl FileFilters {
    pub fn new(name: &str) -> FileFilters {
        FileFilters {
            name: name.to_string(),
            by_linktype: Vec::new(),
            filtered: 0,
        }
    }

    /// Forget the programs (the watch list changed).
    pub fn clear(&mut self) {
        self.by_linktype.clear();
    }

    /// Whether the frame passes the filter for `watch` on `base`.
    pub fn admit(&mut self, base: &str, watch: &WatchList, linktype: u32, frame: &[u8]) -> bool {
        let i = match self.by_linktype.iter().position(|e| e.0 == linktype) {
            Some(i) => i,
            None => {
                let entry = match plan_dead(linktype, base, &watch.set()) {
                    Ok(p) => {
                        tracing::info!(
                            "{}: capture filter for link type {linktype}: {}",
                            self.name,
                            p.describe()
                        );
                        let gate = (!p.exact).then(|| watch.clone());
                        (linktype, Some(p.program), gate)
                    }
                    Err(e) => {
                        // Not silent, and not blind: the watch list still applies.
                        tracing::error!(
                            "{}: link type {linktype}: {e}; matching the watch list only",
                            self.name
                        );
                        (linktype, None, Some(watch.clone()))
                    }
                };
                self.by_linktype.push(entry);
                self.by_linktype.len() - 1
            }
        };
        let (_, prog, gate) = &self.by_linktype[i];
        if let Some(p) = prog
            && !p.filter(frame)
        {
            return false;
        }
        if let Some(w) = gate
            && !watched(linktype, frame, w)
        {
            self.filtered += 1;
            return false;
        }
        true
    }
}

impl FileFilters {
    /// Packets dropped so far as outside the watch list.
    pub fn filtered(&self) -> u64 {
        self.filtered
    }
}

impl Drop for FileFilters {
    fn drop(&mut self) {
        if self.filtered > 0 {
            tracing::info!(
                "{}: {} packets outside the watch list dropped in user space",
                self.name,
                self.filtered
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        Cidr::parse(s).unwrap().0
    }

    #[test]
    fn shapes() {
        let blocks = [
            c("10.0.0.1"),
            c("10.1.0.0/24"),
            c("2001:db8::1"),
            c("fd00::/8"),
        ];
        assert_eq!(
            build("tcp", &blocks, false),
            "(tcp) and (host 10.0.0.1 or net 10.1.0.0/24 or host 2001:db8::1 or net fd00::/8)"
        );
        assert_eq!(
            build("tcp", &blocks[..2], true),
            "((tcp) and (host 10.0.0.1 or net 10.1.0.0/24)) or \
             (vlan and (tcp) and (host 10.0.0.1 or net 10.1.0.0/24))"
        );
        assert_eq!(build("tcp port 443", &[], true), MATCH_NOTHING);
        assert_eq!(
            build("", &[c("0.0.0.0/0"), c("::/0")], false),
            "(tcp) and (ip or ip6)"
        );
        assert_eq!(build_base("tcp", true), "(tcp) or (vlan and (tcp))");
    }

    #[test]
    fn libpcap_compiles_them() {
        let blocks = [
            c("10.0.0.1"),
            c("10.1.0.0/24"),
            c("2001:db8::1"),
            c("fd00::/8"),
            c("0.0.0.0/0"),
        ];
        let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        for f in [
            build("tcp", &blocks, true),
            build("tcp and not port 22", &blocks, true),
            build("tcp", &blocks, false),
            MATCH_NOTHING.to_string(),
        ] {
            let p = dead
                .compile(&f, true)
                .unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(!p.get_instructions().is_empty());
        }
        let sll = pcap::Capture::dead(pcap::Linktype::LINUX_SLL).unwrap();
        sll.compile(&build("tcp", &blocks, false), true).unwrap();
    }

    #[test]
    fn small_lists_are_exact() {
        let set = NetSet::new([c("10.0.0.1"), c("10.0.0.1"), c("10.1.0.0/24")]);
        let p = plan_dead(1, "tcp", &set).unwrap();
        assert!(p.exact);
        assert_eq!(p.terms, 2);
        assert_eq!(
            p.expr,
            "((tcp) and (host 10.0.0.1 or net 10.1.0.0/24)) or \
             (vlan and (tcp) and (host 10.0.0.1 or net 10.1.0.0/24))"
        );
        assert!(
            p.describe().contains("BPF instructions)"),
            "{}",
            p.describe()
        );
    }

    /// 100,000 IPv4 /32s and 20,000 IPv6 /128s: a filter the kernel takes, covering them all.
    #[test]
    fn huge_lists_are_covered_within_the_kernel_limit() {
        let mut blocks: Vec<Cidr> = (0..100_000u32)
            .map(|i| Cidr::host(std::net::Ipv4Addr::from(0x0A00_0000 + i * 37).into()))
            .collect();
        blocks.extend((0..20_000u128).map(|i| {
            Cidr::host(std::net::Ipv6Addr::from((0x2001_0db8u128 << 96) + i * 1_000_003).into())
        }));
        let set = NetSet::new(blocks.clone());
        for lt in [1u32, 113] {
            let p = plan_dead(lt, "tcp", &set).unwrap();
            assert!(!p.exact);
            assert!(p.terms >= 1 && p.terms <= WATCH_TERMS + 1, "{}", p.terms);
            assert!(p.instructions() <= BPF_MAXINSNS);
            assert_eq!(p.blocks, 120_000);
            assert!(
                p.describe().contains("dropped in user space"),
                "{}",
                p.describe()
            );
            // Every watched address passes the kernel filter (a TCP SYN to it on Ethernet).
            if lt == 1 {
                for b in blocks.iter().step_by(997) {
                    let f = syn_frame(b.addr);
                    assert!(p.program.filter(&f), "{b} does not pass {}", p.expr);
                }
            }
        }
    }

    /// An Ethernet frame carrying a TCP SYN from 192.0.2.1 (or fd00::1) to `dst`.
    fn syn_frame(dst: std::net::IpAddr) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        let tcp = [
            0x30, 0x39, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
        ];
        match dst {
            std::net::IpAddr::V4(d) => {
                f.extend_from_slice(&[0x08, 0x00]);
                f.extend_from_slice(&[0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0, 192, 0, 2, 1]);
                f.extend_from_slice(&d.octets());
            }
            std::net::IpAddr::V6(d) => {
                f.extend_from_slice(&[0x86, 0xdd]);
                f.extend_from_slice(&[0x60, 0, 0, 0, 0, 20, 6, 64]);
                f.extend_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
                f.extend_from_slice(&d.octets());
            }
        }
        f.extend_from_slice(&tcp);
        f
    }

    #[test]
    fn user_space_match_on_decoded_addresses() {
        let w = WatchList::new(vec![c("10.0.0.0/8"), c("2001:db8::/32")]);
        let a = syn_frame("10.9.9.9".parse().unwrap());
        let b = syn_frame("11.0.0.1".parse().unwrap());
        let d = syn_frame("2001:db8::5".parse().unwrap());
        let e = syn_frame("2001:db9::5".parse().unwrap());
        assert!(watched(1, &a, &w));
        assert!(!watched(1, &b, &w));
        assert!(watched(1, &d, &w));
        assert!(!watched(1, &e, &w));
        // Not decodable: passes (the engine counts it).
        assert!(watched(1, &a[..20], &w));
        // UDP (DNS, QUIC) and ICMP by their addresses too: the same frames as UDP and ICMP.
        for (proto, l4) in [
            (17u8, vec![0, 53, 0x9c, 0x40, 0, 8, 0, 0]),
            (1, vec![8, 0, 0, 0]),
        ] {
            for (frame, want) in [(&a, true), (&b, false)] {
                let mut f = frame[..34].to_vec();
                f[23] = proto;
                f[16..18].copy_from_slice(&(20 + l4.len() as u16).to_be_bytes());
                f.extend_from_slice(&l4);
                assert_eq!(watched(1, &f, &w), want, "protocol {proto}");
            }
        }
    }

    #[test]
    fn the_base_widens_only_as_far_as_the_protocols_need() {
        let p = |names: &[&str]| {
            let mut p = Protocols(0);
            for n in names {
                p.0 |= 1 << Protocols::parse_one(n).unwrap();
            }
            p
        };
        assert_eq!(instance_base("tcp", p(&["tcp"])), "tcp");
        assert_eq!(instance_base("", p(&["tcp"])), "tcp");
        assert_eq!(
            instance_base("tcp", Protocols::ALL),
            "tcp or udp or icmp or icmp6"
        );
        assert_eq!(instance_base(" tcp ", p(&["quic"])), "udp");
        // DNS over UDP and over TCP.
        assert_eq!(instance_base("tcp", p(&["dns"])), "tcp or udp");
        assert_eq!(instance_base("tcp", p(&["icmp"])), "icmp or icmp6");
        assert_eq!(
            instance_base("tcp", p(&["tcp", "icmp"])),
            "tcp or icmp or icmp6"
        );
        // The user's own filter is theirs.
        assert_eq!(
            instance_base("tcp and not port 22", Protocols::ALL),
            "tcp and not port 22"
        );
        // Each compiles, with the watch list and the VLAN half, and passes what it should:
        // a UDP datagram passes `udp`, not `tcp`; an ICMP echo passes only the ICMP base.
        let blocks = [Cidr::host("10.0.0.1".parse().unwrap())];
        let dead = Capture::dead(Linktype(1)).unwrap();
        for base in [
            "tcp",
            "udp",
            "tcp or udp",
            "icmp or icmp6",
            "tcp or udp or icmp or icmp6",
        ] {
            let expr = build(base, &blocks, true);
            let prog = dead.compile(&expr, true).unwrap();
            let eth_ip = |proto: u8| {
                let mut f = vec![0u8; 12];
                f.extend_from_slice(&[0x08, 0x00]);
                f.extend_from_slice(&[0x45, 0, 0, 48, 0, 0, 0x40, 0, 64, proto, 0, 0]);
                f.extend_from_slice(&[10, 0, 0, 2, 10, 0, 0, 1]);
                f.extend_from_slice(&[0u8; 28]);
                f
            };
            let passes = |proto: u8| prog.filter(&eth_ip(proto));
            assert_eq!(passes(6), base.contains("tcp"), "{base}: tcp");
            assert_eq!(passes(17), base.contains("udp"), "{base}: udp");
            assert_eq!(passes(1), base.contains("icmp"), "{base}: icmp");
        }
    }

    #[test]
    fn base_filter_checks() {
        assert!(check_base("tcp and not port 22").unwrap() > 0);
        let e = check_base("tcp and nonsense here").unwrap_err();
        assert!(
            e.contains("libpcap refuses the filter `tcp and nonsense here`"),
            "{e}"
        );
        assert!(e.contains("syntax error") || e.contains("unknown"), "{e}");
        let long = (1..=400)
            .map(|p| format!("port {p}"))
            .collect::<Vec<_>>()
            .join(" or ");
        let e = check_base(&long).unwrap_err();
        assert!(e.contains("at most 1024"), "{e}");
        // 100 `port` terms fit the length but compile to more than the kernel takes
        // unoptimised; optimised they fit.
        let ports = (1..=90)
            .map(|p| format!("port {p}"))
            .collect::<Vec<_>>()
            .join(" or ");
        assert!(ports.len() <= MAX_FILTER_LEN);
        assert!(check_base(&ports).unwrap() <= BPF_MAXINSNS);
        assert!(check_base("tcp\0").is_err());
    }

    #[test]
    fn shrinks_the_list_until_the_program_fits_then_fails_on_the_base() {
        let set = NetSet::new((0..50u32).map(|i| c(&format!("10.0.{i}.1"))));
        let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        let sizes = |limit: usize| {
            let mut calls = Vec::new();
            let r = plan_within(
                &mut |e| {
                    calls.push(e.matches(" or ").count());
                    dead.compile(e, true).map_err(|e| e.to_string())
                },
                "tcp",
                &set,
                true,
                limit,
            );
            (r, calls)
        };
        // Roomy: the 50 exact blocks, one compilation.
        let (r, calls) = sizes(BPF_MAXINSNS);
        assert!(r.unwrap().exact);
        assert_eq!(calls.len(), 1);
        // Tight: fewer, wider blocks, each attempt smaller than the last.
        let (r, calls) = sizes(120);
        let p = r.unwrap();
        assert!(
            !p.exact && p.terms < 50 && p.instructions() <= 120,
            "{}",
            p.describe()
        );
        assert!(calls.windows(2).all(|w| w[1] < w[0]), "{calls:?}");
        // Impossible: the base filter alone is too big; the error says so.
        let (r, _) = sizes(3);
        let Err(e) = r else { panic!("accepted") };
        assert!(e.contains("the filter `tcp` alone compiles to"), "{e}");
    }

    #[test]
    fn a_refused_vlan_form_falls_back_to_the_plain_one() {
        // LINUX_SLL has no VLAN tags in the frame: libpcap refuses `vlan`.
        let set = NetSet::new([c("10.0.0.1")]);
        let sll = pcap::Capture::dead(pcap::Linktype::LINUX_SLL).unwrap();
        let p = plan(
            &mut |e| sll.compile(e, true).map_err(|e| e.to_string()),
            "tcp",
            &set,
            true,
        )
        .unwrap();
        assert_eq!(p.expr, "(tcp) and (host 10.0.0.1)");
        assert!(p.vlan_refused.is_some());
        // A base filter libpcap refuses is an error carrying libpcap's reason.
        let Err(e) = plan(
            &mut |e| sll.compile(e, true).map_err(|e| e.to_string()),
            "tcp and (",
            &set,
            false,
        ) else {
            panic!("accepted")
        };
        assert!(
            e.contains("libpcap refuses") && e.contains("syntax error"),
            "{e}"
        );
    }
}
