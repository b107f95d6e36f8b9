//! What the test groups share: running `metro run` and reading what it sends ([`agent`]),
//! network namespaces and the delay line ([`netns`]), hand-made frames ([`frames`]), the
//! shared corpus ([`corpus`]), a pod laid out as the kubelet does ([`pod`]), and the guards
//! that keep heavy and timing-sensitive tests apart ([`heavy`], [`timed`]).

pub mod agent;
pub mod corpus;
pub mod dns;
pub mod frames;
pub mod netns;
pub mod pod;
pub mod quic;

use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};

/// All the groups share one process and run in parallel (one test a core): tests of
/// different groups now meet, where before each group was a binary of its own and the
/// binaries ran one after the other. Two guards keep the ones that must not meet apart.
static LOAD: RwLock<()> = RwLock::new(());

/// Held by a test that loads the machine (podman containers, a tcpreplay flood, several
/// agents, Prometheus, analyzing the whole corpus): it may run beside light tests and
/// other heavy ones, never beside a [`timed`] one.
/// Use: `let _load = support::heavy();` (after the `needs_root` check).
pub fn heavy() -> RwLockReadGuard<'static, ()> {
    // A test that failed holding a guard poisons the lock; it reports its own failure.
    LOAD.read().unwrap_or_else(|e| e.into_inner())
}

/// Held by a test that asserts on time to the millisecond across the delay line or on a
/// deadline (p50 bounds, queueing, SIGTERM and HTTP deadlines): it runs beside light tests
/// only, neither beside a [`heavy`] one nor another timed one. A test that is both holds
/// this one.
/// Use: `let _load = support::timed();` (after the `needs_root` check).
pub fn timed() -> RwLockWriteGuard<'static, ()> {
    LOAD.write().unwrap_or_else(|e| e.into_inner())
}
