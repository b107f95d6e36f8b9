//! The connection table: one entry per TCP connection (both directions share it, told apart
//! by a direction bit from the canonical key), bounded, with expiry on packet time.
//!
//! Entries live in a slab (`Vec`) indexed by `u32`; a hash map from the canonical key to the
//! slot is the one lookup per packet, and a hit only stamps the slot's `last_seen`: no list
//! is relinked per packet (an LRU list costs two more cache misses a packet at 100k flows).
//! Expiry sweeps a slice of the slab on every `expire` call, so the whole table is visited
//! every [`SWEEP_SLICES`] calls (one a second of packet time from the engine); eviction when
//! full picks the stalest of a few candidates, closed connections first (Redis-style
//! sampled LRU).

use std::hash::{BuildHasher, BuildHasherDefault, Hash};
use std::net::IpAddr;

use hashbrown::HashTable;
use rustc_hash::FxHasher;

use crate::Nanos;

type FxBuild = BuildHasherDefault<FxHasher>;

/// The sweep visits the whole slab once every this many `expire` calls.
pub const SWEEP_SLICES: usize = 16;
/// Candidates examined to choose a victim when the table is full.
const EVICTION_CANDIDATES: usize = 8;

/// A connection's canonical key: the (address, port) endpoint that sorts lower comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowKey {
    // Addresses as pairs of u64 (not u128, whose 16-byte alignment would pad the key).
    lo_addr: [u64; 2],
    hi_addr: [u64; 2],
    lo_port: u16,
    hi_port: u16,
}

impl Hash for FlowKey {
    /// Five words (the derived hash adds a length word per address array).
    #[inline]
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        state.write_u64(self.lo_addr[0]);
        state.write_u64(self.lo_addr[1]);
        state.write_u64(self.hi_addr[0]);
        state.write_u64(self.hi_addr[1]);
        state.write_u32(u32::from(self.lo_port) << 16 | u32::from(self.hi_port));
    }
}

/// Which way a packet travels relative to its flow's canonical key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dir {
    /// From the lower endpoint to the higher one.
    Up = 0,
    /// From the higher endpoint to the lower one.
    Down = 1,
}

impl Dir {
    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }
    #[inline]
    pub fn reverse(self) -> Dir {
        match self {
            Dir::Up => Dir::Down,
            Dir::Down => Dir::Up,
        }
    }
}

/// An address as one integer. IPv4 is kept distinct from IPv4-mapped IPv6 by a prefix no
/// IPv6 unicast address uses (ffff:ffff::/32 is multicast space).
#[inline]
fn addr_bits(a: IpAddr) -> u128 {
    match a {
        IpAddr::V4(v4) => (0xffff_ffffu128 << 96) | u128::from(u32::from(v4)),
        IpAddr::V6(v6) => u128::from(v6),
    }
}

#[inline]
fn split(a: u128) -> [u64; 2] {
    [(a >> 64) as u64, a as u64]
}

impl FlowKey {
    /// The canonical key of a packet from `src:sport` to `dst:dport`, and the packet's
    /// direction within it.
    #[inline]
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> (FlowKey, Dir) {
        let s = addr_bits(src);
        let d = addr_bits(dst);
        let (s, d, up) = (split(s), split(d), s < d || (s == d && sport <= dport));
        if up {
            (
                FlowKey {
                    lo_addr: s,
                    hi_addr: d,
                    lo_port: sport,
                    hi_port: dport,
                },
                Dir::Up,
            )
        } else {
            (
                FlowKey {
                    lo_addr: d,
                    hi_addr: s,
                    lo_port: dport,
                    hi_port: sport,
                },
                Dir::Down,
            )
        }
    }
}

/// Why an entry left the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Removal {
    /// The table was full and this was the stalest of the candidates examined.
    Full,
    /// No packet for the idle timeout.
    Idle,
    /// The closed timeout passed after FIN or RST.
    Closed,
}

struct Slot<T> {
    key: FlowKey,
    last_seen: Nanos,
    live: bool,
    closed: bool,
    /// Closed in both directions (or reset): only stray retransmissions can follow.
    done: bool,
    value: T,
}

/// A bounded table of connections, each holding a `T`.
pub struct FlowTable<T> {
    /// Slot indexes, hashed by their slot's key: 4 bytes a bucket, so the probe stays in
    /// cache; the key itself is compared in the slot, which the packet needs anyway.
    map: HashTable<u32>,
    hasher: FxBuild,
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    cap: usize,
    sweep_cursor: usize,
    evict_cursor: usize,
    idle_timeout: Nanos,
    closed_timeout: Nanos,
    done_timeout: Nanos,
}

impl<T> FlowTable<T> {
    pub fn new(cap: usize) -> FlowTable<T> {
        let cap = cap.max(1);
        FlowTable {
            map: HashTable::new(),
            hasher: FxBuild::default(),
            slots: Vec::new(),
            free: Vec::new(),
            cap,
            sweep_cursor: 0,
            evict_cursor: 0,
            idle_timeout: Nanos::MAX,
            closed_timeout: Nanos::MAX,
            done_timeout: Nanos::MAX,
        }
    }

    /// Timeouts applied when a packet finds its entry (the sweep applies them too): idle,
    /// after a FIN or RST (`closed`), and after both directions closed or a reset (`done`,
    /// at most `closed`).
    pub fn set_timeouts(&mut self, idle: Nanos, closed: Nanos, done: Nanos) {
        self.idle_timeout = idle;
        self.closed_timeout = closed;
        self.done_timeout = done.min(closed);
    }

    /// Why an entry last seen `age` ago has expired, if it has.
    #[inline]
    fn expiry(&self, s: &Slot<T>, age: Nanos, idle: Nanos, closed: Nanos) -> Option<Removal> {
        if s.closed && (age >= closed || (s.done && age >= self.done_timeout)) {
            Some(Removal::Closed)
        } else if age >= idle {
            Some(Removal::Idle)
        } else {
            None
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    #[inline]
    pub fn get(&self, idx: u32) -> &T {
        &self.slots[idx as usize].value
    }

    #[inline]
    pub fn get_mut(&mut self, idx: u32) -> &mut T {
        &mut self.slots[idx as usize].value
    }

    #[inline]
    pub fn is_closed(&self, idx: u32) -> bool {
        self.slots[idx as usize].closed
    }

    /// Find the entry for `key` and mark it seen at `now`, or create it with `make()`,
    /// evicting a stale entry through `evicted` if the table is full. Returns the slot and
    /// whether it is new.
    #[inline]
    pub fn touch_or_insert(
        &mut self,
        key: FlowKey,
        now: Nanos,
        make: impl FnOnce() -> T,
        mut evicted: impl FnMut(&mut T, Removal),
    ) -> (u32, bool) {
        let hash = self.hasher.hash_one(key);
        let slots = &self.slots;
        if let Some(&idx) = self.map.find(hash, |&i| slots[i as usize].key == key) {
            let s = &self.slots[idx as usize];
            let age = now.saturating_sub(s.last_seen);
            let Some(why) = self.expiry(s, age, self.idle_timeout, self.closed_timeout) else {
                self.slots[idx as usize].last_seen = now;
                return (idx, false);
            };
            // Past its timeout: gone, whether or not the sweep got to it yet.
            self.remove(idx, |v| evicted(v, why));
        }
        if self.map.len() >= self.cap {
            let victim = self.pick_victim();
            self.remove(victim, |v| evicted(v, Removal::Full));
        }
        let slot = Slot {
            key,
            last_seen: now,
            live: true,
            closed: false,
            done: false,
            value: make(),
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.map
            .insert_unique(hash, idx, |&i| hasher.hash_one(slots[i as usize].key));
        (idx, true)
    }

    /// The stalest of the next few live slots, closed ones first.
    fn pick_victim(&mut self) -> u32 {
        let n = self.slots.len();
        let mut best: Option<(bool, Nanos, u32)> = None;
        let mut seen = 0;
        let mut steps = 0;
        while seen < EVICTION_CANDIDATES && steps < n {
            let i = self.evict_cursor % n;
            self.evict_cursor = (i + 1) % n;
            steps += 1;
            let s = &self.slots[i];
            if !s.live {
                continue;
            }
            seen += 1;
            // Sort key: open after closed, then older first.
            let cand = (!s.closed, s.last_seen, i as u32);
            if best.is_none_or(|b| (cand.0, cand.1) < (b.0, b.1)) {
                best = Some(cand);
            }
        }
        best.map(|b| b.2).expect("a full table has a live slot")
    }

    /// Mark an entry closed (after FIN or RST): it expires on the closed timeout.
    pub fn mark_closed(&mut self, idx: u32) {
        self.slots[idx as usize].closed = true;
    }

    /// Mark an entry finished (both directions closed, or reset): it expires on the shorter
    /// done timeout.
    pub fn mark_done(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        s.closed = true;
        s.done = true;
    }

    /// Mark an entry open again (a new connection reused its ports).
    pub fn mark_open(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        s.closed = false;
        s.done = false;
    }

    /// Remove, from the next slice of the slab, entries past their timeout (see
    /// [`FlowTable::set_timeouts`]) as of `now`. Called once a second, every entry is looked at
    /// every [`SWEEP_SLICES`] seconds.
    pub fn expire(&mut self, now: Nanos, mut removed: impl FnMut(&mut T, Removal)) {
        let (idle, closed) = (self.idle_timeout, self.closed_timeout);
        let n = self.slots.len();
        if n == 0 {
            return;
        }
        let budget = n.div_ceil(SWEEP_SLICES).max(1024).min(n);
        for _ in 0..budget {
            let i = self.sweep_cursor % n;
            self.sweep_cursor = (i + 1) % n;
            let s = &self.slots[i];
            if !s.live {
                continue;
            }
            let age = now.saturating_sub(s.last_seen);
            let Some(why) = self.expiry(s, age, idle, closed) else {
                continue;
            };
            self.remove(i as u32, |v| removed(v, why));
        }
    }

    /// Remove every entry (e.g. at the end of a file).
    pub fn drain(&mut self, mut removed: impl FnMut(&mut T)) {
        for i in 0..self.slots.len() {
            if self.slots[i].live {
                self.remove(i as u32, &mut removed);
            }
        }
    }

    /// Free a slot; `removed` sees the value before the slot is reused.
    fn remove(&mut self, idx: u32, removed: impl FnOnce(&mut T)) {
        let s = &mut self.slots[idx as usize];
        s.live = false;
        let hash = self.hasher.hash_one(s.key);
        removed(&mut s.value);
        if let Ok(entry) = self.map.find_entry(hash, |&i| i == idx) {
            entry.remove();
        }
        self.free.push(idx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    fn key(port: u16) -> FlowKey {
        FlowKey::new(
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            port,
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
            80,
        )
        .0
    }

    #[test]
    fn both_directions_share_a_key() {
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let (k1, d1) = FlowKey::new(a, 1234, b, 80);
        let (k2, d2) = FlowKey::new(b, 80, a, 1234);
        assert_eq!(k1, k2);
        assert_ne!(d1, d2);
        // Same address both ends: the port decides.
        let (k3, d3) = FlowKey::new(a, 80, a, 1234);
        let (k4, d4) = FlowKey::new(a, 1234, a, 80);
        assert_eq!(k3, k4);
        assert_ne!(d3, d4);
        // IPv4 and its IPv4-mapped IPv6 form are different endpoints.
        let m = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_ne!(FlowKey::new(a, 1, b, 2).0, FlowKey::new(m, 1, b, 2).0);
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(FlowKey::new(v6, 1, a, 2).0, FlowKey::new(a, 2, v6, 1).0);
    }

    #[test]
    fn full_table_evicts_closed_then_stalest() {
        let mut t: FlowTable<u16> = FlowTable::new(4);
        let mut gone = Vec::new();
        for p in 0..4u16 {
            t.touch_or_insert(key(p), i64::from(p) * 10, || p, |_, _| unreachable!());
        }
        t.touch_or_insert(key(0), 100, || 0, |_, _| unreachable!());
        let (i2, _) = t.touch_or_insert(key(2), 101, || 2, |_, _| unreachable!());
        t.mark_closed(i2);
        // Full: the closed one goes first, then the stalest open one (1, seen at 10).
        t.touch_or_insert(key(10), 200, || 10, |v, why| gone.push((*v, why)));
        t.touch_or_insert(key(11), 201, || 11, |v, why| gone.push((*v, why)));
        assert_eq!(gone, vec![(2, Removal::Full), (1, Removal::Full)]);
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn a_packet_after_the_timeout_finds_a_fresh_entry() {
        let mut t: FlowTable<u16> = FlowTable::new(100);
        t.set_timeouts(100, 60, 60);
        let mut gone = Vec::new();
        let (a, new) = t.touch_or_insert(key(1), 0, || 1, |v, why| gone.push((*v, why)));
        assert!(new);
        // Within the timeout: the same entry.
        let (b, new) = t.touch_or_insert(key(1), 99, || 2, |v, why| gone.push((*v, why)));
        assert_eq!((a, new), (b, false));
        // Idle for the timeout: expired on touch, whether or not a sweep ran.
        let (_, new) = t.touch_or_insert(key(1), 199, || 3, |v, why| gone.push((*v, why)));
        assert!(new);
        assert_eq!(gone, vec![(1, Removal::Idle)]);
        let (c, _) = t.touch_or_insert(key(1), 200, || 4, |_, _| unreachable!());
        assert_eq!(*t.get(c), 3);
        t.mark_closed(c);
        let (_, new) = t.touch_or_insert(key(1), 260, || 5, |v, why| gone.push((*v, why)));
        assert!(new);
        assert_eq!(gone[1], (3, Removal::Closed));
        // Done (both sides closed): the shorter timeout.
        t.set_timeouts(100, 60, 5);
        let (d, _) = t.touch_or_insert(key(2), 300, || 6, |_, _| unreachable!());
        t.mark_done(d);
        let (d2, new) = t.touch_or_insert(key(2), 304, || 7, |_, _| unreachable!());
        assert_eq!((d2, new), (d, false));
        let (_, new) = t.touch_or_insert(key(2), 309, || 8, |v, why| gone.push((*v, why)));
        assert!(new);
        assert_eq!(gone[2], (6, Removal::Closed));
    }

    #[test]
    fn sweep_expires_idle_and_closed_entries() {
        let mut t: FlowTable<u16> = FlowTable::new(100);
        t.set_timeouts(100, 60, 60);
        for p in 0..10u16 {
            let (i, _) = t.touch_or_insert(key(p), 0, || p, |_, _| unreachable!());
            if p < 3 {
                t.mark_closed(i);
            }
        }
        t.touch_or_insert(key(9), 50, || 9, |_, _| unreachable!());
        let mut gone = Vec::new();
        // At 60: closed ones (closed timeout 60) go; open ones (idle 100) stay.
        t.expire(60, |v, why| gone.push((*v, why)));
        gone.sort_by_key(|g| g.0);
        assert_eq!(
            gone,
            vec![
                (0, Removal::Closed),
                (1, Removal::Closed),
                (2, Removal::Closed)
            ]
        );
        gone.clear();
        t.expire(120, |v, why| gone.push((*v, why)));
        assert_eq!(gone.len(), 6, "{gone:?}");
        assert!(gone.iter().all(|g| g.1 == Removal::Idle && g.0 != 9));
        assert_eq!(t.len(), 1);
        let mut drained = Vec::new();
        t.drain(|v| drained.push(*v));
        assert_eq!(drained, vec![9]);
        assert!(t.is_empty());
    }
}
