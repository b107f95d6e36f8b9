//! Live capture with libpcap: one handle per instance, not promiscuous, the configured
//! snaplen and kernel buffer, immediate delivery, nanosecond time stamps. The handle is
//! non-blocking and metro polls its descriptor itself with a 100 ms timeout: libpcap's own
//! read timeout does not return on Linux in immediate mode when no packet arrives, and the
//! capture thread must notice a stop request or a new filter promptly without spinning.
//!
//! Opening errors are classified so that the operator reads what to do: a missing
//! interface lists the ones that exist, a missing capability names the exact `setcap`
//! command, an interface that is down is retried by the caller.
//!
//! The kernel filter ([`Live::apply_watch`]) is compiled on a thread with a large stack
//! against this handle (libpcap generates link-specific code, e.g. the kernel's VLAN
//! metadata on Linux), installed, and read back from the socket: when the kernel refused it
//! (libpcap then silently filters every packet in user space), a smaller program is tried.
//! When the filter is wider than the watch list, [`Live::next_packet`] drops the packets
//! outside the list before they reach the engine, and counts them.

use std::fmt;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use pcap::{Active, BpfProgram, Capture, Device, Precision};

use super::filter;
use super::watch::WatchList;

/// Read timeout: the longest a capture thread waits before it checks for work.
pub const READ_TIMEOUT_MS: i32 = 100;

/// Why a capture could not be opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpenError {
    /// No such interface; `available` lists the interfaces that exist.
    NoDevice {
        iface: String,
        available: Vec<String>,
    },
    /// The process lacks CAP_NET_RAW.
    Permission {
        iface: String,
        detail: String,
        exe: PathBuf,
    },
    /// The interface exists but is down.
    Down { iface: String, detail: String },
    /// Anything else libpcap reported.
    Other { iface: String, detail: String },
}

impl OpenError {
    /// Errors worth retrying later (the interface may come back); the others need the
    /// operator.
    pub fn is_transient(&self) -> bool {
        matches!(self, OpenError::Down { .. })
    }
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::NoDevice { iface, available } => write!(
                f,
                "no interface named `{iface}`; the interfaces that exist are: {}",
                if available.is_empty() {
                    "(none found)".to_string()
                } else {
                    available.join(", ")
                }
            ),
            OpenError::Permission { iface, detail, exe } => write!(
                f,
                "cannot capture on `{iface}`: {detail}. Capturing packets needs the CAP_NET_RAW \
                 capability: run `sudo setcap cap_net_raw+ep {}` (or start metro with the systemd \
                 unit deploy/metro.service, which grants only that capability)",
                exe.display()
            ),
            OpenError::Down { iface, detail } => write!(f, "interface `{iface}` is down: {detail}"),
            OpenError::Other { iface, detail } => {
                write!(f, "cannot capture on `{iface}`: {detail}")
            }
        }
    }
}

impl std::error::Error for OpenError {}

/// Names of the interfaces libpcap can open (including `any`).
pub fn device_names() -> Vec<String> {
    match Device::list() {
        Ok(list) => list.into_iter().map(|d| d.name).collect(),
        Err(_) => Vec::new(),
    }
}

/// The interfaces worth naming to an operator: this namespace's network interfaces, then
/// `any` (libpcap also lists pseudo-devices such as `nflog` or `dbus-system`).
pub fn interface_list() -> Vec<String> {
    let mut v = super::resolve::interface_names();
    v.push("any".to_string());
    v
}

/// Whether this process holds CAP_NET_RAW in its effective set (from /proc/self/status).
pub fn has_cap_net_raw() -> bool {
    const CAP_NET_RAW: u32 = 13;
    let Ok(s) = std::fs::read_to_string("/proc/self/status") else {
        return true;
    };
    s.lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_none_or(|bits| bits & (1 << CAP_NET_RAW) != 0)
}

fn exe_path() -> PathBuf {
    std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .unwrap_or_else(|_| PathBuf::from("/usr/local/bin/metro"))
}

fn classify(iface: &str, detail: String) -> OpenError {
    let lower = detail.to_ascii_lowercase();
    if iface != "any" {
        let available = device_names();
        if !available.is_empty() && !available.iter().any(|n| n == iface) {
            return OpenError::NoDevice {
                iface: iface.to_string(),
                available: interface_list(),
            };
        }
    }
    if lower.contains("permission") || lower.contains("not permitted") || !has_cap_net_raw() {
        return OpenError::Permission {
            iface: iface.to_string(),
            detail,
            exe: exe_path(),
        };
    }
    if lower.contains("not up") || lower.contains("went down") || lower.contains("network is down")
    {
        return OpenError::Down {
            iface: iface.to_string(),
            detail,
        };
    }
    if lower.contains("no such device") || lower.contains("disappeared") {
        return OpenError::NoDevice {
            iface: iface.to_string(),
            available: interface_list(),
        };
    }
    OpenError::Other {
        iface: iface.to_string(),
        detail,
    }
}

/// Capture options of one instance.
#[derive(Clone, Debug)]
pub struct LiveOptions {
    pub iface: String,
    pub snaplen: u32,
    pub buffer_size: u64,
}

/// An open live capture.
pub struct Live {
    iface: String,
    cap: Capture<Active>,
    fd: std::os::fd::RawFd,
    linktype: u32,
    /// Time stamps are in ns (else µs).
    nanos: bool,
    /// Consecutive polls that reported an error condition without libpcap reporting one.
    error_polls: u32,
    /// Set when the kernel filter is wider than the watch list: packets are matched
    /// against this in user space.
    gate: Option<WatchList>,
    /// Packets the user-space match dropped.
    dropped: Dropped,
}

/// Packets the user-space match dropped since the handle opened, and when the count was
/// last logged (with the count then).
struct Dropped {
    n: u64,
    logged: (u64, Instant),
}

impl Dropped {
    /// Count one; log the first, then the count every [`FILTERED_LOG_EVERY`] (looking at
    /// the clock every 64 drops).
    fn count(&mut self, iface: &str) {
        self.n += 1;
        if self.n == 1 {
            tracing::info!(
                "{iface}: packets outside the watch list are dropped in user space (the kernel \
                 filter is wider); their count is logged every {}s",
                FILTERED_LOG_EVERY.as_secs()
            );
            self.logged = (0, Instant::now());
        } else if self.n.is_multiple_of(64) && self.logged.1.elapsed() >= FILTERED_LOG_EVERY {
            tracing::info!(
                "{iface}: {} packets outside the watch list dropped in user space in the last \
                 {}s ({} since the capture opened)",
                self.n - self.logged.0,
                self.logged.1.elapsed().as_secs(),
                self.n
            );
            self.logged = (self.n, Instant::now());
        }
    }
}

/// How often the count of packets dropped in user space is logged (when it grew).
const FILTERED_LOG_EVERY: Duration = Duration::from_secs(60);

unsafe extern "C" {
    fn pcap_get_tstamp_precision(p: *mut libc::c_void) -> libc::c_int;
    fn pcap_setfilter(p: *mut libc::c_void, fp: *mut libc::c_void) -> libc::c_int;
    fn pcap_geterr(p: *mut libc::c_void) -> *const libc::c_char;
}

/// Open a capture on `opts.iface`.
pub fn open(opts: &LiveOptions) -> Result<Live, OpenError> {
    if opts.iface != "any" {
        let available = device_names();
        if !available.is_empty() && !available.iter().any(|n| n == &opts.iface) {
            return Err(OpenError::NoDevice {
                iface: opts.iface.clone(),
                available: interface_list(),
            });
        }
    }
    let inactive = Capture::from_device(opts.iface.as_str())
        .map_err(|e| classify(&opts.iface, e.to_string()))?;
    let cap = inactive
        .promisc(false)
        .snaplen(opts.snaplen as i32)
        .buffer_size(opts.buffer_size.min(i32::MAX as u64) as i32)
        // Not immediate mode: the kernel hands packets over a block at a time (or after the
        // 100 ms timeout), instead of waking metro for every packet. Measured with
        // scripts/live-bench.sh: 4x less CPU per packet, still no drops. Packet times come
        // from the kernel's arrival stamps, so RTTs are unaffected.
        .timeout(READ_TIMEOUT_MS)
        .precision(Precision::Nano)
        .open()
        .map_err(|e| classify(&opts.iface, e.to_string()))?;
    let mut cap = cap
        .setnonblock()
        .map_err(|e| classify(&opts.iface, e.to_string()))?;
    // `any` as cooked v2: its header carries the interface index, which tells a packet's
    // copies on other interfaces apart (agent::dedupe). Older libpcaps keep SLL (no
    // recognition of copies; logged).
    if opts.iface == "any"
        && let Err(e) = cap.set_datalink(pcap::Linktype(
            metro_core::wire::linktype::LINUX_SLL2 as i32,
        ))
    {
        tracing::warn!(
            "any: cannot capture as LINUX_SLL2 ({e}): copies of a packet seen on several \
             interfaces are not recognised and may be counted more than once"
        );
    }
    let linktype = cap.get_datalink().0 as u32;
    // SAFETY: the handle is valid for the life of `cap`; the call only reads a field.
    let nanos = unsafe { pcap_get_tstamp_precision(cap.as_ptr().cast()) } == 1;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&cap);
    Ok(Live {
        iface: opts.iface.clone(),
        cap,
        fd,
        linktype,
        nanos,
        error_polls: 0,
        gate: None,
        dropped: Dropped {
            n: 0,
            logged: (0, Instant::now()),
        },
    })
}

/// One packet from [`Live::next_packet`].
pub enum Next<'a> {
    Packet {
        ts: i64,
        data: &'a [u8],
    },
    /// A packet outside the watch list, dropped (counted in [`Live::filtered`]).
    Filtered,
    /// No packet within the read timeout.
    Timeout,
}

impl Live {
    pub fn linktype(&self) -> u32 {
        self.linktype
    }

    /// Whether a `vlan` filter makes sense on this link (Ethernet).
    pub fn has_vlans(&self) -> bool {
        self.linktype == metro_core::wire::linktype::ETHERNET
    }

    /// Compile and install the kernel filter for `watch` on the base filter `base`
    /// ([`filter::plan`]), and match in user space when it is wider than the list. Logs what
    /// was installed (`capture filter: ...`). Never fails: a filter that cannot be built is
    /// an error in the log and the handle then captures nothing until the list changes.
    pub fn apply_watch(&mut self, base: &str, watch: &WatchList) {
        let iface = self.iface.clone();
        let iface = iface.as_str();
        let set = watch.set();
        let vlan = self.has_vlans();
        let mut limit = filter::BPF_MAXINSNS;
        // The last program the kernel refused (installed: libpcap runs it in user space).
        let mut refused: Option<filter::Plan> = None;
        loop {
            let cap = &mut self.cap;
            let set = &set;
            let planned = filter::on_compile_stack(move || {
                filter::plan_within(
                    &mut |e| cap.compile(e, true).map_err(|e| e.to_string()),
                    base,
                    set,
                    vlan,
                    limit,
                )
            })
            .and_then(|r| r);
            let plan = match planned {
                Ok(p) => p,
                Err(e) => {
                    if let Some(p) = refused.take() {
                        // Nothing smaller can be built: the refused program stays.
                        tracing::error!(
                            "{iface}: the kernel refused the capture filter {} ({} BPF \
                             instructions) and no smaller one can be built ({e}): libpcap \
                             filters every packet in user space",
                            p.expr,
                            p.instructions()
                        );
                        self.installed(iface, &p, watch);
                        return;
                    }
                    tracing::error!(
                        "{iface}: no capture filter can be built: {e}; capturing nothing until \
                         the watch list changes"
                    );
                    self.gate = None;
                    if let Ok(p) = self.cap.compile(filter::MATCH_NOTHING, true) {
                        let _ = self.install(&p);
                    }
                    return;
                }
            };
            if let Err(e) = self.install(&plan.program) {
                tracing::error!(
                    "{iface}: libpcap cannot install the capture filter {}: {e}; capturing \
                     nothing until the watch list changes",
                    plan.expr
                );
                self.gate = None;
                return;
            }
            let n = plan.instructions();
            match self.kernel_filter_len() {
                Some(k) if k as usize != n && plan.terms > 0 => {
                    // The kernel refused it (its socket-filter memory, net.core.optmem_max,
                    // can be below BPF_MAXINSNS): libpcap would filter every packet in user
                    // space. Try a smaller program.
                    tracing::warn!(
                        "{iface}: the kernel refused a capture filter of {n} BPF instructions; \
                         trying fewer watched blocks"
                    );
                    limit = n / 2;
                    refused = Some(plan);
                    continue;
                }
                Some(k) if k as usize != n => tracing::error!(
                    "{iface}: the kernel refused the capture filter {} ({n} BPF instructions): \
                     libpcap filters every packet in user space",
                    plan.expr
                ),
                _ => {}
            }
            self.installed(iface, &plan, watch);
            return;
        }
    }

    /// Log the filter now installed, and match in user space if it is wider than the list.
    fn installed(&mut self, iface: &str, plan: &filter::Plan, watch: &WatchList) {
        if let Some(e) = &plan.vlan_refused {
            tracing::warn!(
                "{iface}: the VLAN form of the filter was refused ({e}); untagged frames only"
            );
        }
        tracing::info!("{iface}: capture filter: {}", plan.describe());
        self.gate = (!plan.exact).then(|| watch.clone());
    }

    /// Install a compiled program on this handle.
    fn install(&mut self, p: &BpfProgram) -> Result<(), String> {
        let h = self.cap.as_ptr().cast::<libc::c_void>();
        // SAFETY: `BpfProgram` is a transparent `struct bpf_program`; pcap_setfilter copies
        // it and does not keep the pointer. The handle is valid for the life of `self.cap`.
        let r = unsafe { pcap_setfilter(h, (p as *const BpfProgram).cast_mut().cast()) };
        if r == 0 {
            return Ok(());
        }
        // SAFETY: pcap_geterr returns the handle's NUL-terminated error buffer.
        Err(unsafe { std::ffi::CStr::from_ptr(pcap_geterr(h)) }
            .to_string_lossy()
            .into_owned())
    }

    /// Instructions of the filter attached to the capture socket (0 when none), read back
    /// from the kernel (`SO_GET_FILTER`); `None` when the socket cannot tell.
    pub fn kernel_filter_len(&self) -> Option<u32> {
        let mut len: libc::socklen_t = 0;
        // SAFETY: with a zero length the kernel writes only `len` (the filter's instruction
        // count); no buffer is read or written.
        let r = unsafe {
            libc::getsockopt(
                self.fd,
                libc::SOL_SOCKET,
                libc::SO_GET_FILTER,
                std::ptr::null_mut(),
                &mut len,
            )
        };
        (r == 0).then_some(len)
    }

    /// Whether packets are matched against the watch list in user space (the kernel filter
    /// is wider than the list).
    pub fn matches_in_user_space(&self) -> bool {
        self.gate.is_some()
    }

    /// Packets dropped in user space as outside the watch list, since the handle opened.
    pub fn filtered(&self) -> u64 {
        self.dropped.n
    }

    /// The next packet, or a timeout (none within the read timeout), or the error that
    /// ended the capture (the interface went down or disappeared).
    // `timeval` fields are i64 on 64-bit Linux, narrower elsewhere.
    #[allow(clippy::useless_conversion)]
    pub fn next_packet(&mut self) -> Result<Next<'_>, String> {
        let nanos = self.nanos;
        match self.cap.next_packet() {
            Ok(p) => {
                self.error_polls = 0;
                if let Some(w) = &self.gate
                    && !filter::watched(self.linktype, p.data, w)
                {
                    self.dropped.count(&self.iface);
                    return Ok(Next::Filtered);
                }
                let tv = p.header.ts;
                let sub = if nanos {
                    i64::from(tv.tv_usec)
                } else {
                    i64::from(tv.tv_usec) * 1000
                };
                Ok(Next::Packet {
                    ts: i64::from(tv.tv_sec) * 1_000_000_000 + sub,
                    data: p.data,
                })
            }
            Err(pcap::Error::TimeoutExpired) => {
                // Nothing buffered: wait for the descriptor (the next call reads).
                let mut p = libc::pollfd {
                    fd: self.fd,
                    events: libc::POLLIN,
                    revents: 0,
                };
                // SAFETY: one valid pollfd.
                let r = unsafe { libc::poll(&mut p, 1, READ_TIMEOUT_MS) };
                if r > 0 && p.revents & (libc::POLLERR | libc::POLLHUP | libc::POLLNVAL) != 0 {
                    // libpcap reports such conditions on the next read; if it keeps not
                    // doing so, give up on this handle rather than spin.
                    self.error_polls += 1;
                    if self.error_polls > 50 {
                        return Err(format!(
                            "capture descriptor reports an error (poll revents {:#x})",
                            p.revents
                        ));
                    }
                }
                Ok(Next::Timeout)
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// libpcap's counters since this handle opened: (received, dropped by the kernel or
    /// the interface).
    pub fn stats(&mut self) -> Option<(u64, u64)> {
        self.cap.stats().ok().map(|s| {
            (
                u64::from(s.received),
                u64::from(s.dropped) + u64::from(s.if_dropped),
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_interface_lists_the_others() {
        let e = open(&LiveOptions {
            iface: "nosuchif0".into(),
            snaplen: 256,
            buffer_size: 1 << 20,
        })
        .err()
        .unwrap();
        let OpenError::NoDevice { available, .. } = &e else {
            panic!("{e}")
        };
        assert!(available.iter().any(|n| n == "lo"), "{available:?}");
        let msg = e.to_string();
        assert!(
            msg.contains("no interface named `nosuchif0`") && msg.contains("lo"),
            "{msg}"
        );
    }

    /// Needs CAP_NET_RAW (root; CI runs as root): a small list is installed exactly and the kernel
    /// holds the very program; a huge one is covered, fits the kernel, and turns on the
    /// user-space match.
    #[test]
    fn filters_reach_the_kernel_within_its_limit() {
        use super::super::config::Cidr;
        if !metro_testkit::root::needs_root("opening a live capture on lo and any") {
            return;
        }
        let mut l = open(&LiveOptions {
            iface: "lo".into(),
            snaplen: 256,
            buffer_size: 1 << 20,
        })
        .unwrap_or_else(|e| panic!("this test needs CAP_NET_RAW: {e}"));
        let small = WatchList::new(vec![Cidr::parse("10.0.0.1").unwrap().0]);
        l.apply_watch("tcp", &small);
        assert!(!l.matches_in_user_space());
        let exact = l
            .cap
            .compile(&filter::build("tcp", &small.blocks(), true), true);
        let n = exact.unwrap().get_instructions().len() as u32;
        assert_eq!(l.kernel_filter_len(), Some(n));
        let huge = WatchList::new(
            (0..200_000u32)
                .map(|i| Cidr::host(std::net::Ipv4Addr::from(0x0A00_0000 + i * 7).into()))
                .collect(),
        );
        l.apply_watch("tcp", &huge);
        assert!(l.matches_in_user_space());
        let k = l.kernel_filter_len().unwrap();
        assert!(k > 0 && k as usize <= filter::BPF_MAXINSNS, "{k}");
        // `any` (Linux cooked capture, no VLAN form): the kernel holds the program too.
        let mut any = open(&LiveOptions {
            iface: "any".into(),
            snaplen: 256,
            buffer_size: 1 << 20,
        })
        .unwrap();
        any.apply_watch("tcp and not port 22", &small);
        let plain = any.cap.compile(
            &filter::build("tcp and not port 22", &small.blocks(), false),
            true,
        );
        let n = plain.unwrap().get_instructions().len() as u32;
        assert_eq!(any.kernel_filter_len(), Some(n));
        assert!(!any.matches_in_user_space());
    }

    #[test]
    fn permission_message_names_setcap() {
        let e = OpenError::Permission {
            iface: "eth0".into(),
            detail: "socket: Operation not permitted".into(),
            exe: "/usr/bin/metro".into(),
        };
        assert!(
            e.to_string()
                .contains("`sudo setcap cap_net_raw+ep /usr/bin/metro`"),
            "{e}"
        );
    }
}
