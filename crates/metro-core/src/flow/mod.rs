//! The connection table: one entry per TCP connection (both directions share it, told apart
//! by a direction bit from the canonical key), bounded, with expiry on packet time.
//!
//! Entries live in a slab (`Vec`) indexed by `u32`; a hash map from the canonical key to the
//! slot is the one lookup per packet. Two intrusive LRU lists (open and closed connections)
//! make expiry and eviction O(what is removed): the tail of each list is always its oldest.

use std::hash::{BuildHasherDefault, Hash};
use std::net::IpAddr;

use rustc_hash::FxHasher;

use crate::Nanos;

type FxMap<K, V> = std::collections::HashMap<K, V, BuildHasherDefault<FxHasher>>;

const NIL: u32 = u32::MAX;

/// A connection's canonical key: the (address, port) endpoint that sorts lower comes first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    lo_addr: [u8; 16],
    hi_addr: [u8; 16],
    lo_port: u16,
    hi_port: u16,
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

#[inline]
fn addr_bytes(a: IpAddr) -> [u8; 16] {
    match a {
        // IPv4 is kept distinct from IPv4-mapped IPv6 by a marker byte pattern that no
        // IPv6 unicast address uses (ff..ff prefix would be multicast).
        IpAddr::V4(v4) => {
            let o = v4.octets();
            [
                0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0, o[0], o[1], o[2], o[3],
            ]
        }
        IpAddr::V6(v6) => v6.octets(),
    }
}

impl FlowKey {
    /// The canonical key of a packet from `src:sport` to `dst:dport`, and the packet's
    /// direction within it.
    #[inline]
    pub fn new(src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> (FlowKey, Dir) {
        let s = addr_bytes(src);
        let d = addr_bytes(dst);
        if (s, sport) <= (d, dport) {
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
    /// The table was full and this was the least recently seen entry.
    Full,
    /// No packet for the idle timeout.
    Idle,
    /// The closed timeout passed after FIN or RST.
    Closed,
}

struct Slot<T> {
    key: FlowKey,
    prev: u32,
    next: u32,
    last_seen: Nanos,
    closed: bool,
    value: T,
}

#[derive(Clone, Copy)]
struct List {
    head: u32,
    tail: u32,
}

impl List {
    const EMPTY: List = List {
        head: NIL,
        tail: NIL,
    };
}

/// A bounded table of connections, each holding a `T`.
pub struct FlowTable<T> {
    map: FxMap<FlowKey, u32>,
    slots: Vec<Slot<T>>,
    free: Vec<u32>,
    open: List,
    closed: List,
    cap: usize,
}

impl<T> FlowTable<T> {
    pub fn new(cap: usize) -> FlowTable<T> {
        let cap = cap.max(1);
        FlowTable {
            map: FxMap::default(),
            slots: Vec::new(),
            free: Vec::new(),
            open: List::EMPTY,
            closed: List::EMPTY,
            cap,
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

    /// Find the entry for `key` and mark it seen at `now` (most recently used), or create
    /// it with `make()` — evicting the least recently seen entry through `evicted` if the
    /// table is full. Returns the slot and whether it is new.
    #[inline]
    pub fn touch_or_insert(
        &mut self,
        key: FlowKey,
        now: Nanos,
        make: impl FnOnce() -> T,
        mut evicted: impl FnMut(&mut T, Removal),
    ) -> (u32, bool) {
        if let Some(&idx) = self.map.get(&key) {
            let closed = self.slots[idx as usize].closed;
            self.unlink(idx, closed);
            self.slots[idx as usize].last_seen = now;
            self.push_front(idx, closed);
            return (idx, false);
        }
        if self.map.len() >= self.cap {
            let victim = if self.closed.tail != NIL {
                self.closed.tail
            } else {
                self.open.tail
            };
            self.remove(victim, |v| evicted(v, Removal::Full));
        }
        let slot = Slot {
            key,
            prev: NIL,
            next: NIL,
            last_seen: now,
            closed: false,
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
        self.map.insert(key, idx);
        self.push_front(idx, false);
        (idx, true)
    }

    /// Move an entry to the closed list (after FIN or RST): it expires on the closed timeout.
    pub fn mark_closed(&mut self, idx: u32) {
        if !self.slots[idx as usize].closed {
            self.unlink(idx, false);
            self.slots[idx as usize].closed = true;
            self.push_front(idx, true);
        }
    }

    /// Move an entry back to the open list (a new connection reused its ports).
    pub fn mark_open(&mut self, idx: u32) {
        if self.slots[idx as usize].closed {
            self.unlink(idx, true);
            self.slots[idx as usize].closed = false;
            self.push_front(idx, false);
        }
    }

    /// Remove entries idle for `idle` and closed entries unseen for `closed`, as of `now`.
    pub fn expire(
        &mut self,
        now: Nanos,
        idle: Nanos,
        closed: Nanos,
        mut removed: impl FnMut(&mut T, Removal),
    ) {
        for (is_closed, timeout, why) in [
            (true, closed, Removal::Closed),
            (false, idle, Removal::Idle),
        ] {
            loop {
                let tail = if is_closed {
                    self.closed.tail
                } else {
                    self.open.tail
                };
                if tail == NIL || now.saturating_sub(self.slots[tail as usize].last_seen) < timeout
                {
                    break;
                }
                self.remove(tail, |v| removed(v, why));
            }
        }
    }

    /// Remove every entry (e.g. at the end of a file).
    pub fn drain(&mut self, mut removed: impl FnMut(&mut T)) {
        for closed in [false, true] {
            loop {
                let tail = self.list(closed).tail;
                if tail == NIL {
                    break;
                }
                self.remove(tail, |v| removed(v));
            }
        }
    }

    /// Unlink and free a slot; `removed` sees the value before the slot is reused.
    fn remove(&mut self, idx: u32, removed: impl FnOnce(&mut T)) {
        let closed = self.slots[idx as usize].closed;
        self.unlink(idx, closed);
        let key = self.slots[idx as usize].key;
        self.map.remove(&key);
        removed(&mut self.slots[idx as usize].value);
        self.free.push(idx);
    }

    #[inline]
    fn list(&mut self, closed: bool) -> &mut List {
        if closed {
            &mut self.closed
        } else {
            &mut self.open
        }
    }

    #[inline]
    fn unlink(&mut self, idx: u32, closed: bool) {
        let (prev, next) = {
            let s = &self.slots[idx as usize];
            (s.prev, s.next)
        };
        if prev != NIL {
            self.slots[prev as usize].next = next;
        } else {
            self.list(closed).head = next;
        }
        if next != NIL {
            self.slots[next as usize].prev = prev;
        } else {
            self.list(closed).tail = prev;
        }
        let s = &mut self.slots[idx as usize];
        s.prev = NIL;
        s.next = NIL;
    }

    #[inline]
    fn push_front(&mut self, idx: u32, closed: bool) {
        let head = self.list(closed).head;
        {
            let s = &mut self.slots[idx as usize];
            s.prev = NIL;
            s.next = head;
        }
        if head != NIL {
            self.slots[head as usize].prev = idx;
        } else {
            self.list(closed).tail = idx;
        }
        self.list(closed).head = idx;
    }
}
