//! The refresher thread that keeps [`global`] current: a [`discover`] walk every
//! [`REFRESH`], soon after an interface appears or goes (a container starting or stopping),
//! and when a report asks for one ([`ask_soon`]) because it met a local address no
//! namespace owns. It also says once, in the log, whether attribution can work here.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use super::discover::discover;
use super::procfs::interface_names;
use super::{Limits, Roots, global};

/// Set when a report met a local address no namespace owns; the refresher honours it at
/// most every [`WANTED_SPACING`].
static REFRESH_WANTED: AtomicBool = AtomicBool::new(false);
/// The least time between refreshes asked for by reports.
const WANTED_SPACING: Duration = Duration::from_secs(5);
/// After an interface appears, one more walk this much later: the container's process
/// usually joins its namespace after its veth was set up.
const FOLLOW_UP: Duration = Duration::from_secs(2);

/// Start the process-wide refresher once (every [`REFRESH`], and when an interface
/// appears); later calls do nothing. It runs until the process exits.
pub fn ensure_refresher() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let _ = start_refresher(REFRESH, Arc::new(AtomicBool::new(false)));
    });
}

/// How often the namespaces are walked when no interface changed.
pub const REFRESH: Duration = Duration::from_secs(10);

/// Ask for a refresh soon (at most every [`WANTED_SPACING`]): a report met a local address
/// that no namespace owned at the last walk.
pub(super) fn ask_soon() {
    REFRESH_WANTED.store(true, Ordering::Relaxed);
}

/// Refresh [`global`] every `every`, and within a second of an interface appearing or
/// going, until `stop`. The first refresh runs before this returns.
pub fn start_refresher(every: Duration, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<()> {
    let roots = Roots::default();
    let mut said_once = false;
    let mut refresh = move |roots: &Roots| {
        let a = discover(roots, Limits::default());
        let s = &a.stats;
        if !said_once {
            // Once: what the operator needs to know whether attribution can work here (in a
            // pod without the host's pid namespace only the pod's processes are visible).
            tracing::info!(
                "containers: {} processes visible, {} namespaces, {} with a container or pod, \
                 {} container cgroups",
                s.pids_scanned + s.pids_skipped,
                s.namespaces,
                s.namespaces_attributed,
                a.cgroups_len()
            );
        }
        if !said_once && s.pids_unreadable > s.pids_scanned / 2 {
            tracing::warn!(
                "containers: {} of {} processes' network namespaces are unreadable: container \
                 and pod tags need CAP_SYS_PTRACE and CAP_DAC_READ_SEARCH (or root); RTT is \
                 reported untagged meanwhile",
                s.pids_unreadable,
                s.pids_scanned
            );
        }
        said_once = true;
        if s.pids_skipped + s.namespaces_skipped + s.addresses_skipped > 0 {
            tracing::debug!(
                "containers: over the limits, {} processes, {} namespaces and {} addresses \
                 not read",
                s.pids_skipped,
                s.namespaces_skipped,
                s.addresses_skipped
            );
        }
        tracing::debug!(
            "containers: {} addresses in {} namespaces ({} attributed); {} processes read, {} \
             unreadable, {} and {} namespaces over the limits, {} ambiguous addresses",
            a.len(),
            s.namespaces,
            s.namespaces_attributed,
            s.pids_scanned,
            s.pids_unreadable,
            s.pids_skipped,
            s.namespaces_skipped,
            s.addresses_ambiguous
        );
        global().set(a);
    };
    refresh(&roots);
    std::thread::Builder::new()
        .name("containers".into())
        .spawn(move || {
            let mut refresh = refresh;
            let mut last = Instant::now();
            let mut ifaces = interface_names(&roots.proc);
            let mut follow_up: Option<Instant> = None;
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(250));
                let now_ifaces = interface_names(&roots.proc);
                let changed = now_ifaces != ifaces;
                let wanted = last.elapsed() >= WANTED_SPACING
                    && REFRESH_WANTED.swap(false, Ordering::Relaxed);
                let due = follow_up.is_some_and(|t| Instant::now() >= t);
                if last.elapsed() >= every || changed || wanted || due {
                    ifaces = now_ifaces;
                    refresh(&roots);
                    last = Instant::now();
                    follow_up = changed.then(|| last + FOLLOW_UP);
                }
            }
        })
        .expect("spawn containers thread")
}
