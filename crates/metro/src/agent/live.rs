//! Live capture with libpcap: one handle per instance, not promiscuous, the configured
//! snaplen and kernel buffer, immediate delivery, nanosecond time stamps. The handle is
//! non-blocking and metro polls its descriptor itself with a 100 ms timeout: libpcap's own
//! read timeout does not return on Linux in immediate mode when no packet arrives, and the
//! capture thread must notice a stop request or a new filter promptly without spinning.
//!
//! Opening errors are classified so that the operator reads what to do: a missing
//! interface lists the ones that exist, a missing capability names the exact `setcap`
//! command, an interface that is down is retried by the caller.

use std::fmt;
use std::path::PathBuf;

use pcap::{Active, Capture, Device, Precision};

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
    cap: Capture<Active>,
    fd: std::os::fd::RawFd,
    linktype: u32,
    /// Time stamps are in ns (else µs).
    nanos: bool,
    /// Consecutive polls that reported an error condition without libpcap reporting one.
    error_polls: u32,
}

unsafe extern "C" {
    fn pcap_get_tstamp_precision(p: *mut libc::c_void) -> libc::c_int;
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
    let cap = cap
        .setnonblock()
        .map_err(|e| classify(&opts.iface, e.to_string()))?;
    let linktype = cap.get_datalink().0 as u32;
    // SAFETY: the handle is valid for the life of `cap`; the call only reads a field.
    let nanos = unsafe { pcap_get_tstamp_precision(cap.as_ptr().cast()) } == 1;
    let fd = std::os::fd::AsRawFd::as_raw_fd(&cap);
    Ok(Live {
        cap,
        fd,
        linktype,
        nanos,
        error_polls: 0,
    })
}

/// One packet from [`Live::next_packet`].
pub enum Next<'a> {
    Packet {
        ts: i64,
        data: &'a [u8],
    },
    /// The read timeout passed without a packet.
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

    /// Compile and install a filter.
    pub fn set_filter(&mut self, f: &str) -> Result<(), String> {
        self.cap.filter(f, true).map_err(|e| e.to_string())
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
