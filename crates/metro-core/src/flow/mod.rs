//! The connection table: one entry per TCP connection (both directions share it, told apart
//! by a direction bit from the canonical key), bounded, with expiry on packet time, and
//! flood-resistant.
//!
//! Entries live in a slab (`Vec`) indexed by `u32`; a hash map from the canonical key to the
//! slot is the one lookup per packet, and a hit only stamps the slot's `last_seen`: no list
//! is relinked per packet (an LRU list costs two more cache misses a packet at 100k flows).
//! Expiry sweeps a slice of the slab on every `expire` call, so the whole table is visited
//! every [`SWEEP_SLICES`] calls (one a second of packet time from the engine).
//!
//! Two classes of entry. A new entry is *unconfirmed*; the engine [`FlowTable::confirm`]s it
//! once the connection shows a real two-way exchange (see `Conn::confirmed`: something one
//! side sent beyond a bare SYN was acknowledged, or both sides' SYNs were). A spoofed SYN
//! flood never gets there: its sources never see the answers they would have to acknowledge.
//! When the table is full a new entry sheds the oldest unconfirmed one (a FIFO in creation
//! order, closed or reset ones moved to its front): under `R` new one-sided flows a second,
//! an unconfirmed entry survives `U / R` seconds, `U` being the entries not confirmed. So a
//! new real connection is kept, and later confirmed, if its first exchange completes within
//! that time, and a flood cannot evict a confirmed connection at all. Confirmed entries may
//! fill the table less its reserve of 1/[`UNCONFIRMED_RESERVE_DIV`] for unconfirmed ones;
//! beyond that, confirming one evicts the stalest of a few sampled confirmed ones, closed
//! first (Redis-style sampled LRU). What leaves the table is reported with its [`Removal`]
//! reason.

use std::hash::{BuildHasher, Hash, Hasher};
use std::net::IpAddr;

use foldhash::SharedSeed;
use foldhash::fast::FoldHasher;
use hashbrown::HashTable;

use crate::Nanos;

pub mod handshakes;

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
    /// Two IPv4 addresses and the ports fit one 128-bit word (one folded multiply of the
    /// keyed hash, not three); otherwise both addresses and the ports (the derived hash adds
    /// a length word per address array). Either way every bit of the key goes in unchanged
    /// (no fold that chosen keys could collide in whatever the seed), and the two shapes
    /// never meet: keys of different shapes are never equal.
    #[inline]
    fn hash<H: Hasher>(&self, state: &mut H) {
        let ports = u32::from(self.lo_port) << 16 | u32::from(self.hi_port);
        // The IPv4 shape: both high halves V4_HIGH and both low halves 32-bit. An IPv6 key in
        // ffff:ffff::/64 can match the high halves with 64-bit low halves, whose top bits the
        // one word would drop (keys colliding whatever the seed): it takes the general path.
        if self.lo_addr[0] == V4_HIGH
            && self.hi_addr[0] == V4_HIGH
            && (self.lo_addr[1] | self.hi_addr[1]) >> 32 == 0
        {
            let addrs = self.lo_addr[1] << 32 | self.hi_addr[1];
            state.write_u128(u128::from(addrs) << 64 | u128::from(ports));
        } else {
            self.hash_every_bit(state);
        }
    }
}

impl FlowKey {
    /// Both addresses and the ports, whatever the addresses' family: the general form of
    /// [`Hash`] for this key, and the handshake cache's fixed encoding.
    #[inline]
    fn hash_every_bit<H: Hasher>(&self, state: &mut H) {
        let wide = |a: [u64; 2]| u128::from(a[0]) << 64 | u128::from(a[1]);
        state.write_u128(wide(self.lo_addr));
        state.write_u128(wide(self.hi_addr));
        state.write_u32(u32::from(self.lo_port) << 16 | u32::from(self.hi_port));
    }
}

/// The high half of an IPv4 address's key word (see [`addr_bits`]); its low half is the
/// address.
const V4_HIGH: u64 = 0xffff_ffff_0000_0000;

/// The table's keyed hash. A capture's addresses and ports are chosen by whoever sends the
/// packets: with a hash anyone can compute (FxHash, as before), a flood of chosen keys can
/// be aimed at one probe sequence so that every lookup walks it. foldhash's folded
/// multiplies take a secret seed per table, here from the operating system's randomness
/// (std's `RandomState` keys), so the keys cannot be aimed without it; foldhash claims
/// minimal DoS resistance only (SipHash would be the strong choice, at several times the
/// cost a packet). The output never depends on the seed: nothing iterates the map.
struct KeyedHash {
    per_table: u64,
    shared: SharedSeed,
}

impl KeyedHash {
    fn new() -> KeyedHash {
        let os = std::hash::RandomState::new();
        KeyedHash {
            per_table: os.hash_one(0u8),
            shared: SharedSeed::from_u64(os.hash_one(1u8)),
        }
    }

    #[inline]
    fn hash(&self, key: &FlowKey) -> u64 {
        let mut h = FoldHasher::with_seed(self.per_table, &self.shared);
        key.hash(&mut h);
        h.finish()
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
        if let (IpAddr::V4(s), IpAddr::V4(d)) = (src, dst) {
            // IPv4: address and port as one integer each, one comparison (the same order as
            // below: both addresses share the high bits `addr_bits` gives IPv4).
            let s = u64::from(u32::from(s));
            let d = u64::from(u32::from(d));
            let (lo, hi, dir) = if (s << 16 | u64::from(sport)) <= (d << 16 | u64::from(dport)) {
                ((s, sport), (d, dport), Dir::Up)
            } else {
                ((d, dport), (s, sport), Dir::Down)
            };
            return (
                FlowKey {
                    lo_addr: [V4_HIGH, lo.0],
                    hi_addr: [V4_HIGH, hi.0],
                    lo_port: lo.1,
                    hi_port: hi.1,
                },
                dir,
            );
        }
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
    /// The table was full and this unconfirmed entry (half-open or one-sided) was the oldest,
    /// closed ones first: shed to make room for a new one.
    Shed,
    /// A confirmed connection, the stalest (closed ones first) of the candidates examined:
    /// evicted because confirmed connections filled their share of the table (or the whole
    /// table, which only a table of one or two entries allows).
    Full,
    /// No packet for the idle timeout.
    Idle,
    /// The closed timeout passed after FIN or RST.
    Closed,
}

/// No slot (the end of the unconfirmed FIFO).
const NIL: u32 = u32::MAX;

/// At least this fraction (1/N) of the table is kept for unconfirmed entries: confirmed
/// connections may hold the rest. A new connection is unconfirmed until its first exchange
/// completes, so this reserve is what lets new connections be timed at all once the table
/// is full of established ones, however fast one-sided flows arrive.
pub const UNCONFIRMED_RESERVE_DIV: usize = 4;

/// A table entry: its key, state and value, on whole cache lines (64-byte aligned) so that a
/// packet touches as few of them as the slot's size allows (three for a connection: the
/// key and flags, then the two directions). The unconfirmed FIFO's links, which no packet
/// of a known connection needs, live apart in [`FlowTable::links`].
#[repr(align(64))]
struct Slot<T> {
    key: FlowKey,
    last_seen: Nanos,
    live: bool,
    closed: bool,
    /// Closed in both directions (or reset): only stray retransmissions can follow.
    done: bool,
    /// The connection has shown a two-way exchange; otherwise the slot is on the unconfirmed
    /// FIFO.
    confirmed: bool,
    value: T,
}

/// Slots in chunks of [`CHUNK`] that never move: a slab that grows by a chunk, not by
/// reallocating (and copying) the whole table, which would hold the old and new tables at
/// once (the 64-byte alignment rules out the allocator's in-place growth).
struct Slab<T> {
    chunks: Vec<Vec<Slot<T>>>,
    len: usize,
}

/// Slots a chunk holds (a power of two; 192 KiB of connections).
const CHUNK: usize = 1024;

impl<T> Slab<T> {
    fn new() -> Slab<T> {
        Slab {
            chunks: Vec::new(),
            len: 0,
        }
    }

    #[inline]
    fn len(&self) -> usize {
        self.len
    }

    fn push(&mut self, slot: Slot<T>) {
        if self.len.is_multiple_of(CHUNK) {
            self.chunks.push(Vec::with_capacity(CHUNK));
        }
        self.chunks[self.len / CHUNK].push(slot);
        self.len += 1;
    }
}

impl<T> std::ops::Index<usize> for Slab<T> {
    type Output = Slot<T>;
    #[inline]
    fn index(&self, i: usize) -> &Slot<T> {
        &self.chunks[i / CHUNK][i % CHUNK]
    }
}

impl<T> std::ops::IndexMut<usize> for Slab<T> {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut Slot<T> {
        &mut self.chunks[i / CHUNK][i % CHUNK]
    }
}

/// Why an entry last seen `age` ago has expired, if it has, under the idle, closed and done
/// timeouts (see [`FlowTable::set_timeouts`]).
#[inline]
fn expiry<T>(s: &Slot<T>, age: Nanos, idle: Nanos, closed: Nanos, done: Nanos) -> Option<Removal> {
    if s.closed && (age >= closed || (s.done && age >= done)) {
        Some(Removal::Closed)
    } else if age >= idle {
        Some(Removal::Idle)
    } else {
        None
    }
}

/// What the table knows of an entry besides its value (see [`FlowTable::entry_mut`]).
#[derive(Clone, Copy, Debug)]
pub struct EntryState {
    /// Marked closed (FIN or RST seen), see [`FlowTable::mark_closed`].
    pub closed: bool,
    /// Marked done (both directions closed, or reset), see [`FlowTable::mark_done`].
    pub done: bool,
    /// Confirmed, see [`FlowTable::confirm`].
    pub confirmed: bool,
}

/// A slot's links in the unconfirmed FIFO ([`NIL`] at its ends, and for confirmed slots).
#[derive(Clone, Copy)]
struct Links {
    prev: u32,
    next: u32,
}

/// A bounded table of connections, each holding a `T`.
pub struct FlowTable<T> {
    /// Slot indexes, hashed by their slot's key: 4 bytes a bucket, so the probe stays in
    /// cache; the key itself is compared in the slot, which the packet needs anyway.
    map: HashTable<u32>,
    hasher: KeyedHash,
    slots: Slab<T>,
    /// The unconfirmed FIFO's links, by slot.
    links: Vec<Links>,
    free: Vec<u32>,
    cap: usize,
    /// Confirmed entries allowed at once (`cap` less the unconfirmed reserve).
    max_confirmed: usize,
    confirmed: usize,
    /// The unconfirmed FIFO: oldest (or most recently closed) at `head`, newest at `tail`.
    head: u32,
    tail: u32,
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
            hasher: KeyedHash::new(),
            slots: Slab::new(),
            links: Vec::new(),
            free: Vec::new(),
            cap,
            max_confirmed: (cap - cap.div_ceil(UNCONFIRMED_RESERVE_DIV)).max(1),
            confirmed: 0,
            head: NIL,
            tail: NIL,
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

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }

    /// Bytes a table entry takes in the slab (whole cache lines).
    pub const fn slot_bytes() -> usize {
        std::mem::size_of::<Slot<T>>()
    }

    /// Confirmed entries allowed at once: the capacity less the unconfirmed reserve.
    pub fn max_confirmed(&self) -> usize {
        self.max_confirmed
    }

    /// Confirmed entries held.
    pub fn confirmed_len(&self) -> usize {
        self.confirmed
    }

    #[inline]
    pub fn get(&self, idx: u32) -> &T {
        &self.slots[idx as usize].value
    }

    #[inline]
    pub fn get_mut(&mut self, idx: u32) -> &mut T {
        &mut self.slots[idx as usize].value
    }

    /// The entry's value and state, from one lookup of its slot: what a packet needs of
    /// its entry once [`FlowTable::touch_or_insert`] found it.
    #[inline]
    pub fn entry_mut(&mut self, idx: u32) -> (&mut T, EntryState) {
        let s = &mut self.slots[idx as usize];
        let state = EntryState {
            closed: s.closed,
            done: s.done,
            confirmed: s.confirmed,
        };
        (&mut s.value, state)
    }

    #[inline]
    pub fn is_closed(&self, idx: u32) -> bool {
        self.slots[idx as usize].closed
    }

    #[inline]
    pub fn is_confirmed(&self, idx: u32) -> bool {
        self.slots[idx as usize].confirmed
    }

    /// Find the entry for `key` and mark it seen at `now`, or create it (unconfirmed) with
    /// `make()`, shedding the oldest unconfirmed entry through `evicted` (with its key) if the
    /// table is full (the stalest confirmed one only if there is no unconfirmed entry at all).
    /// Returns the slot and whether it is new.
    #[inline]
    pub fn touch_or_insert(
        &mut self,
        key: FlowKey,
        now: Nanos,
        make: impl FnOnce() -> T,
        mut evicted: impl FnMut(&FlowKey, &mut T, Removal),
    ) -> (u32, bool) {
        let hash = self.hasher.hash(&key);
        let slots = &self.slots;
        if let Some(&idx) = self.map.find(hash, |&i| slots[i as usize].key == key) {
            let (idle, closed, done) = (self.idle_timeout, self.closed_timeout, self.done_timeout);
            let s = &mut self.slots[idx as usize];
            let age = now.saturating_sub(s.last_seen);
            let Some(why) = expiry(s, age, idle, closed, done) else {
                s.last_seen = now;
                return (idx, false);
            };
            // Past its timeout: gone, whether or not the sweep got to it yet.
            self.remove(idx, |k, v| evicted(k, v, why));
        }
        if self.map.len() >= self.cap {
            // Confirmed entries never exceed `max_confirmed` < `cap` (for `cap` > 1), so a
            // full table has an unconfirmed entry to shed.
            let (victim, why) = if self.head != NIL {
                (self.head, Removal::Shed)
            } else {
                (self.pick_confirmed_victim(), Removal::Full)
            };
            self.remove(victim, |k, v| evicted(k, v, why));
        }
        let slot = Slot {
            key,
            last_seen: now,
            live: true,
            closed: false,
            done: false,
            confirmed: false,
            value: make(),
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                self.links.push(Links {
                    prev: NIL,
                    next: NIL,
                });
                (self.slots.len() - 1) as u32
            }
        };
        self.push_back(idx);
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.map
            .insert_unique(hash, idx, |&i| hasher.hash(&slots[i as usize].key));
        (idx, true)
    }

    /// Mark an unconfirmed entry confirmed: it leaves the unconfirmed FIFO and is evicted
    /// from now on only by idle or closed expiry, or (stalest first) when confirmed entries
    /// fill their share of the table; such a victim goes through `evicted`.
    pub fn confirm(&mut self, idx: u32, evicted: impl FnOnce(&mut T, Removal)) {
        if self.slots[idx as usize].confirmed {
            return;
        }
        if self.confirmed >= self.max_confirmed {
            let victim = self.pick_confirmed_victim();
            self.remove(victim, |_, v| evicted(v, Removal::Full));
        }
        self.unlink(idx);
        self.slots[idx as usize].confirmed = true;
        self.confirmed += 1;
    }

    /// The stalest of the next few live confirmed slots, closed ones first (sampled LRU:
    /// no list is relinked per packet).
    fn pick_confirmed_victim(&mut self) -> u32 {
        let n = self.slots.len();
        let mut best: Option<(bool, Nanos, u32)> = None;
        let mut seen = 0;
        let mut steps = 0;
        while seen < EVICTION_CANDIDATES && steps < n {
            let i = self.evict_cursor % n;
            self.evict_cursor = (i + 1) % n;
            steps += 1;
            let s = &self.slots[i];
            if !s.live || !s.confirmed {
                continue;
            }
            seen += 1;
            // Sort key: open after closed, then older first.
            let cand = (!s.closed, s.last_seen, i as u32);
            if best.is_none_or(|b| (cand.0, cand.1) < (b.0, b.1)) {
                best = Some(cand);
            }
        }
        best.map(|b| b.2)
            .expect("a table at its confirmed limit has a confirmed slot")
    }

    /// Mark an entry closed (after FIN or RST): it expires on the closed timeout, and if
    /// unconfirmed it is the next to be shed.
    pub fn mark_closed(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        if !s.closed {
            s.closed = true;
            if !s.confirmed {
                self.unlink(idx);
                self.push_front(idx);
            }
        }
    }

    /// Mark an entry finished (both directions closed, or reset): it expires on the shorter
    /// done timeout, and if unconfirmed it is the next to be shed.
    pub fn mark_done(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        if !s.done {
            s.closed = true;
            s.done = true;
            if !s.confirmed {
                self.unlink(idx);
                self.push_front(idx);
            }
        }
    }

    /// Mark an entry open again: a new connection reused its ports, so it is unconfirmed
    /// (the newest) until its own exchange completes.
    pub fn mark_open(&mut self, idx: u32) {
        let s = &mut self.slots[idx as usize];
        s.closed = false;
        s.done = false;
        if s.confirmed {
            s.confirmed = false;
            self.confirmed -= 1;
        } else {
            self.unlink(idx);
        }
        self.push_back(idx);
    }

    /// Remove, from the next slice of the slab, entries past their timeout (see
    /// [`FlowTable::set_timeouts`]) as of `now`. Called once a second, every entry is looked at
    /// every [`SWEEP_SLICES`] seconds.
    pub fn expire(&mut self, now: Nanos, removed: impl FnMut(&mut T, Removal)) {
        let n = self.slots.len();
        self.sweep(now, n.div_ceil(SWEEP_SLICES).max(1024).min(n), removed);
    }

    /// Remove every entry past its timeout as of `now`, the whole table at once: the end of
    /// a capture, where the sweep's slices (whose order depends on the table's size) would
    /// otherwise leave some of them uncounted.
    pub fn expire_all(&mut self, now: Nanos, removed: impl FnMut(&mut T, Removal)) {
        self.sweep(now, self.slots.len(), removed);
    }

    /// Look at the next `budget` slots from the sweep's cursor (at most the slab: each once)
    /// and remove the entries past their timeout as of `now`. Out of line: once a second of
    /// packet time, kept out of the per-packet path it would be inlined into.
    #[inline(never)]
    fn sweep(&mut self, now: Nanos, budget: usize, mut removed: impl FnMut(&mut T, Removal)) {
        let (idle, closed, done) = (self.idle_timeout, self.closed_timeout, self.done_timeout);
        let n = self.slots.len();
        for _ in 0..budget.min(n) {
            let i = self.sweep_cursor % n;
            self.sweep_cursor = (i + 1) % n;
            let s = &self.slots[i];
            if !s.live {
                continue;
            }
            let age = now.saturating_sub(s.last_seen);
            if let Some(why) = expiry(s, age, idle, closed, done) {
                self.remove(i as u32, |_, v| removed(v, why));
            }
        }
    }

    /// Remove every entry (e.g. at the end of a file).
    pub fn drain(&mut self, mut removed: impl FnMut(&mut T)) {
        for i in 0..self.slots.len() {
            if self.slots[i].live {
                self.remove(i as u32, |_, v| removed(v));
            }
        }
    }

    /// Free a slot; `removed` sees the value before the slot is reused.
    fn remove(&mut self, idx: u32, removed: impl FnOnce(&FlowKey, &mut T)) {
        if self.slots[idx as usize].confirmed {
            self.confirmed -= 1;
        } else {
            self.unlink(idx);
        }
        let s = &mut self.slots[idx as usize];
        s.live = false;
        s.confirmed = false;
        let hash = self.hasher.hash(&s.key);
        removed(&s.key, &mut s.value);
        if let Ok(entry) = self.map.find_entry(hash, |&i| i == idx) {
            entry.remove();
        }
        self.free.push(idx);
    }

    /// Take an unconfirmed slot off the FIFO.
    fn unlink(&mut self, idx: u32) {
        let Links { prev, next } = self.links[idx as usize];
        if prev == NIL {
            self.head = next;
        } else {
            self.links[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.links[next as usize].prev = prev;
        }
        self.links[idx as usize] = Links {
            prev: NIL,
            next: NIL,
        };
    }

    /// Put a slot at the newest end of the unconfirmed FIFO (the last to be shed).
    fn push_back(&mut self, idx: u32) {
        let tail = self.tail;
        self.links[idx as usize] = Links {
            prev: tail,
            next: NIL,
        };
        if tail == NIL {
            self.head = idx;
        } else {
            self.links[tail as usize].next = idx;
        }
        self.tail = idx;
    }

    /// Put a slot at the oldest end of the unconfirmed FIFO (the next to be shed).
    fn push_front(&mut self, idx: u32) {
        let head = self.head;
        self.links[idx as usize] = Links {
            prev: NIL,
            next: head,
        };
        if head == NIL {
            self.tail = idx;
        } else {
            self.links[head as usize].prev = idx;
        }
        self.head = idx;
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
    fn each_table_hashes_with_its_own_secret_seed() {
        // Two tables (as two processes) place the same keys differently: no one can aim a
        // flood of keys at one probe sequence without the seed (one equal pair by chance:
        // about 2^-62).
        let (one, other) = (KeyedHash::new(), KeyedHash::new());
        let same = (1..=5).filter(|&p| one.hash(&key(p)) == other.hash(&key(p)));
        assert_eq!(same.count(), 0);
        // A table agrees with itself, and tells the keys apart.
        assert_eq!(one.hash(&key(1)), one.hash(&key(1)));
        assert_ne!(one.hash(&key(1)), one.hash(&key(2)));
    }

    #[test]
    fn keys_in_the_ipv4_shapes_high_halves_hash_every_bit() {
        // IPv6 addresses in ffff:ffff::/64 share IPv4 keys' high half; those that differ only
        // in the top 32 bits of the low half must not hash alike (the one-word IPv4 hash
        // would drop those bits for any seed).
        let h = KeyedHash::new();
        let peer = IpAddr::V6("ffff:ffff::ffff:ffff:ffff:ffff".parse().unwrap());
        let hashes: std::collections::HashSet<u64> = (1..=64u64)
            .map(|i| {
                let a = IpAddr::V6(Ipv6Addr::from(
                    (0xffff_ffffu128 << 96) | u128::from(i) << 32,
                ));
                h.hash(&FlowKey::new(a, 1000, peer, 80).0)
            })
            .collect();
        assert_eq!(hashes.len(), 64);
        // The same for the other end's top bits, the first end fixed.
        let a = IpAddr::V6("ffff:ffff::1".parse().unwrap());
        let hashes: std::collections::HashSet<u64> = (1..=64u64)
            .map(|i| {
                let b = IpAddr::V6(Ipv6Addr::from(
                    (0xffff_ffffu128 << 96) | u128::from(i) << 40 | 7,
                ));
                h.hash(&FlowKey::new(a, 1000, b, 80).0)
            })
            .collect();
        assert_eq!(hashes.len(), 64);
        // IPv4 keys still tell every address and port apart.
        let v4 = |x: u8, p: u16| {
            h.hash(
                &FlowKey::new(
                    IpAddr::V4(Ipv4Addr::new(10, 0, 0, x)),
                    p,
                    IpAddr::V4(Ipv4Addr::new(10, 0, 1, 1)),
                    80,
                )
                .0,
            )
        };
        let hashes: std::collections::HashSet<u64> = (1..=16u8)
            .flat_map(|x| (1..=16u16).map(move |p| (x, p)))
            .map(|(x, p)| v4(x, p))
            .collect();
        assert_eq!(hashes.len(), 256);
    }

    #[test]
    fn both_directions_share_a_key() {
        let a = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1));
        let b = IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2));
        let (k1, d1) = FlowKey::new(a, 1234, b, 80);
        let (k2, d2) = FlowKey::new(b, 80, a, 1234);
        assert_eq!(k1, k2);
        // The lower address is the key's first endpoint, whatever its port.
        assert_eq!((d1, d2), (Dir::Up, Dir::Down));
        // Same address both ends: the port decides.
        let (k3, d3) = FlowKey::new(a, 80, a, 1234);
        let (k4, d4) = FlowKey::new(a, 1234, a, 80);
        assert_eq!(k3, k4);
        assert_eq!((d3, d4), (Dir::Up, Dir::Down));
        // IPv4 keys (built on their own path) hold the same words as the general form.
        assert_eq!(k1.lo_addr, split(addr_bits(a)));
        assert_eq!(k1.hi_addr, split(addr_bits(b)));
        assert_eq!((k1.lo_port, k1.hi_port), (1234, 80));
        // IPv4 and its IPv4-mapped IPv6 form are different endpoints.
        let m = IpAddr::V6(Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert_ne!(FlowKey::new(a, 1, b, 2).0, FlowKey::new(m, 1, b, 2).0);
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(FlowKey::new(v6, 1, a, 2).0, FlowKey::new(a, 2, v6, 1).0);
    }

    #[test]
    fn ipv4_keys_are_the_general_forms_keys() {
        // The general path takes IPv4 pairs only through `FlowKey::new`'s own IPv4 path, so
        // the expected key is built here from its rule: each address as `split(addr_bits)`,
        // the endpoint with the lower (address bits, port) first, `Up` if that is the source
        // (equal endpoints included).
        let general = |s: IpAddr, sp: u16, d: IpAddr, dp: u16| -> (FlowKey, Dir) {
            let (sb, db) = (addr_bits(s), addr_bits(d));
            let key = |a: u128, ap: u16, b: u128, bp: u16| FlowKey {
                lo_addr: split(a),
                hi_addr: split(b),
                lo_port: ap,
                hi_port: bp,
            };
            if (sb, sp) <= (db, dp) {
                (key(sb, sp, db, dp), Dir::Up)
            } else {
                (key(db, dp, sb, sp), Dir::Down)
            }
        };
        // A few random addresses beside the edges (splitmix64, fixed seed).
        let mut x = 0x243f_6a88_85a3_08d3u64;
        let mut random = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            (z ^ (z >> 31)) as u32
        };
        let mut addrs = vec![0u32, 1, 0x7fff_ffff, 0x8000_0000, u32::MAX];
        addrs.extend((0..3).map(|_| random()));
        // Two that differ only in the lowest bit, and only in the highest.
        let r = random();
        addrs.extend([r | 1, r & !1, r | 1 << 31, r & !(1 << 31)]);
        addrs.sort_unstable();
        addrs.dedup();
        let ports = [0u16, 1, 80, 0x8000, 65535];
        let (mut up, mut down, mut equal) = (0, 0, 0);
        for &s in &addrs {
            for &d in &addrs {
                for &sp in &ports {
                    for &dp in &ports {
                        let (sa, da) = (IpAddr::V4(s.into()), IpAddr::V4(d.into()));
                        let got = FlowKey::new(sa, sp, da, dp);
                        let want = general(sa, sp, da, dp);
                        assert_eq!(got, want, "{sa}:{sp} -> {da}:{dp}");
                        // Field by field too (the derived `==` compares the same words).
                        assert_eq!(
                            (got.0.lo_addr, got.0.hi_addr, got.0.lo_port, got.0.hi_port),
                            (
                                want.0.lo_addr,
                                want.0.hi_addr,
                                want.0.lo_port,
                                want.0.hi_port
                            )
                        );
                        // The other direction: the same key, the other way.
                        let back = FlowKey::new(da, dp, sa, sp);
                        if (s, sp) == (d, dp) {
                            equal += 1;
                            assert_eq!(back, got, "equal endpoints: {sa}:{sp}");
                        } else {
                            assert_eq!(back, (got.0, got.1.reverse()), "{sa}:{sp} <- {da}:{dp}");
                        }
                        match got.1 {
                            Dir::Up => up += 1,
                            Dir::Down => down += 1,
                        }
                    }
                }
            }
        }
        // Both directions and equal endpoints were exercised.
        assert!(up > 0 && down > 0);
        assert_eq!(equal, addrs.len() * ports.len());
    }

    #[test]
    fn full_table_sheds_closed_then_oldest_unconfirmed() {
        let mut t: FlowTable<u16> = FlowTable::new(4);
        let mut gone = Vec::new();
        for p in 0..4u16 {
            t.touch_or_insert(key(p), i64::from(p) * 10, || p, |_, _, _| unreachable!());
        }
        t.touch_or_insert(key(0), 100, || 0, |_, _, _| unreachable!());
        let (i2, _) = t.touch_or_insert(key(2), 101, || 2, |_, _, _| unreachable!());
        t.mark_closed(i2);
        // Full: the closed one goes first, then the oldest created (0, although seen since:
        // first in, first out, so every entry gets the same time to confirm).
        t.touch_or_insert(key(10), 200, || 10, |_, v, why| gone.push((*v, why)));
        t.touch_or_insert(key(11), 201, || 11, |_, v, why| gone.push((*v, why)));
        assert_eq!(gone, vec![(2, Removal::Shed), (0, Removal::Shed)]);
        assert_eq!(t.len(), 4);
    }

    #[test]
    fn unconfirmed_entries_never_evict_confirmed_ones() {
        let mut t: FlowTable<u32> = FlowTable::new(100);
        assert_eq!(t.max_confirmed(), 75);
        // 50 confirmed connections, then a flood of 10,000 one-sided entries.
        for p in 0..50u16 {
            let (i, _) = t.touch_or_insert(key(p), 0, || u32::from(p), |_, _, _| unreachable!());
            t.confirm(i, |_, _| unreachable!());
        }
        let mut shed = 0;
        for n in 0..10_000u32 {
            let k = FlowKey::new(
                IpAddr::V4(Ipv4Addr::from(0x0b00_0000 + n)),
                1024,
                IpAddr::V4(Ipv4Addr::new(10, 0, 0, 2)),
                80,
            )
            .0;
            t.touch_or_insert(
                k,
                1 + i64::from(n),
                || 1000 + n,
                |_, v, why| {
                    assert_eq!(why, Removal::Shed);
                    assert!(*v >= 1000, "a confirmed entry was evicted");
                    shed += 1;
                },
            );
        }
        assert_eq!(shed, 10_000 - 50);
        assert_eq!((t.len(), t.confirmed_len()), (100, 50));
        // The 50 newest flood entries are the ones left (first in, first out).
        let mut left = Vec::new();
        t.drain(|v| left.push(*v));
        left.sort_unstable();
        let want: Vec<u32> = (0..50).chain(1000 + 9950..1000 + 10_000).collect();
        assert_eq!(left, want);
    }

    #[test]
    fn confirmed_entries_fill_their_share_then_evict_each_other() {
        let mut t: FlowTable<u16> = FlowTable::new(8);
        assert_eq!(t.max_confirmed(), 6);
        let mut gone = Vec::new();
        for p in 0..7u16 {
            let (i, _) = t.touch_or_insert(key(p), i64::from(p), || p, |_, _, _| unreachable!());
            t.confirm(i, |v, why| gone.push((*v, why)));
        }
        // The seventh confirmation evicted the stalest confirmed entry.
        assert_eq!(gone, vec![(0, Removal::Full)]);
        assert_eq!((t.len(), t.confirmed_len()), (6, 6));
        // A full table of unconfirmed + confirmed: new entries shed unconfirmed ones only.
        for p in 100..110u16 {
            t.touch_or_insert(key(p), 50, || p, |_, v, why| gone.push((*v, why)));
        }
        assert!(gone[1..].iter().all(|g| g.1 == Removal::Shed && g.0 >= 100));
        assert_eq!((t.len(), t.confirmed_len()), (8, 6));
        // A reused connection is unconfirmed again (and the newest).
        let (i, new) = t.touch_or_insert(key(3), 60, || 0, |_, _, _| unreachable!());
        assert!(!new && t.is_confirmed(i));
        t.mark_open(i);
        assert_eq!(t.confirmed_len(), 5);
        assert!(!t.is_confirmed(i));
        gone.clear();
        t.touch_or_insert(key(200), 70, || 200, |_, v, why| gone.push((*v, why)));
        t.touch_or_insert(key(201), 70, || 201, |_, v, why| gone.push((*v, why)));
        assert_eq!(gone, vec![(108, Removal::Shed), (109, Removal::Shed)]);
        // A table of one: the lone confirmed entry gives way.
        let mut one: FlowTable<u16> = FlowTable::new(1);
        let (i, _) = one.touch_or_insert(key(1), 0, || 1, |_, _, _| unreachable!());
        one.confirm(i, |_, _| unreachable!());
        let mut g = Vec::new();
        one.touch_or_insert(key(2), 1, || 2, |_, v, why| g.push((*v, why)));
        assert_eq!(g, vec![(1, Removal::Full)]);
    }

    #[test]
    fn a_packet_after_the_timeout_finds_a_fresh_entry() {
        let mut t: FlowTable<u16> = FlowTable::new(100);
        t.set_timeouts(100, 60, 60);
        let mut gone = Vec::new();
        let (a, new) = t.touch_or_insert(key(1), 0, || 1, |_, v, why| gone.push((*v, why)));
        assert!(new);
        // Within the timeout: the same entry.
        let (b, new) = t.touch_or_insert(key(1), 99, || 2, |_, v, why| gone.push((*v, why)));
        assert_eq!((a, new), (b, false));
        // Idle for the timeout: expired on touch, whether or not a sweep ran.
        let (_, new) = t.touch_or_insert(key(1), 199, || 3, |_, v, why| gone.push((*v, why)));
        assert!(new);
        assert_eq!(gone, vec![(1, Removal::Idle)]);
        let (c, _) = t.touch_or_insert(key(1), 200, || 4, |_, _, _| unreachable!());
        assert_eq!(*t.get(c), 3);
        t.mark_closed(c);
        let (_, new) = t.touch_or_insert(key(1), 260, || 5, |_, v, why| gone.push((*v, why)));
        assert!(new);
        assert_eq!(gone[1], (3, Removal::Closed));
        // Done (both sides closed): the shorter timeout.
        t.set_timeouts(100, 60, 5);
        let (d, _) = t.touch_or_insert(key(2), 300, || 6, |_, _, _| unreachable!());
        t.mark_done(d);
        let (d2, new) = t.touch_or_insert(key(2), 304, || 7, |_, _, _| unreachable!());
        assert_eq!((d2, new), (d, false));
        let (_, new) = t.touch_or_insert(key(2), 309, || 8, |_, v, why| gone.push((*v, why)));
        assert!(new);
        assert_eq!(gone[2], (6, Removal::Closed));
    }

    #[test]
    fn sweep_expires_idle_and_closed_entries() {
        let mut t: FlowTable<u16> = FlowTable::new(100);
        t.set_timeouts(100, 60, 60);
        for p in 0..10u16 {
            let (i, _) = t.touch_or_insert(key(p), 0, || p, |_, _, _| unreachable!());
            if p < 3 {
                t.mark_closed(i);
            }
        }
        t.touch_or_insert(key(9), 50, || 9, |_, _, _| unreachable!());
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

    #[test]
    fn expire_all_takes_the_whole_table_past_its_timeouts_at_once() {
        // More entries than one sweep slice (at least 1024): the sweep at 150 reaches only
        // some of them, expire_all every one past its timeout, whatever the sweep reached.
        let mut t: FlowTable<u16> = FlowTable::new(5000);
        t.set_timeouts(100, 60, 60);
        for p in 0..3000u16 {
            let (i, _) = t.touch_or_insert(key(p), 0, || p, |_, _, _| unreachable!());
            if p % 3 == 0 {
                t.mark_closed(i);
            }
        }
        // Open ones seen again at 90: not idle at 150 (idle timeout 100).
        for p in (0..3000u16).filter(|p| p % 5 == 0 && p % 3 != 0) {
            t.touch_or_insert(key(p), 90, || p, |_, _, _| unreachable!());
        }
        let mut swept = Vec::new();
        t.expire(150, |v, why| swept.push((*v, why)));
        assert!(!swept.is_empty() && swept.len() < 1500, "{}", swept.len());
        let mut rest = Vec::new();
        t.expire_all(150, |v, why| rest.push((*v, why)));
        let mut gone: Vec<(u16, Removal)> = swept.into_iter().chain(rest).collect();
        gone.sort_by_key(|g| g.0);
        let want: Vec<(u16, Removal)> = (0..3000u16)
            .filter(|p| p % 3 == 0 || p % 5 != 0)
            .map(|p| {
                (
                    p,
                    if p % 3 == 0 {
                        Removal::Closed
                    } else {
                        Removal::Idle
                    },
                )
            })
            .collect();
        assert_eq!(gone, want);
        assert_eq!(t.len(), 400);
        // Nothing left past its timeout: a second call removes nothing.
        t.expire_all(150, |_, _| panic!("removed twice"));
    }
}
