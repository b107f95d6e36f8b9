//! The handshake cache: a SYN or SYN/ACK still awaiting its ACK when a flood shed its
//! connection from the flow table, in 16 bytes instead of a table entry, so that the ACK,
//! arriving one round trip later, is still timed (SYN cookies make the same trade).
//!
//! Under `R` new one-sided flows a second the flow table keeps an unconfirmed entry for
//! `U / R` seconds (see [`crate::flow`]): about 10 ms with 10,000 entries at 1M SYN/s, less
//! than one round trip to a distant client. The handshake sample needs only the segment's
//! expected ACK number, time and frame; this cache keeps those for every shed entry, in a
//! fixed array of `capacity` entries (16 bytes each, allocated when the first entry is
//! cached), two 16-entry buckets per key, the oldest of the 32 replaced when both are full:
//! close to first in, first out, so an entry survives until about 75% of the capacity was
//! cached after it (2^21 entries: about 1.5 s of a 1M SYN/s flood; 99% of them 1.6 s).
//!
//! A hit is verified: the bucket (from a SipHash of the canonical key, the sender's
//! direction and whether the segment was a SYN or a SYN/ACK), a 14-bit tag of the same hash
//! and the exact 32-bit ACK number (the sender's random ISN + 1) must all match, and the
//! entry is taken (used once). A SYN or SYN/ACK sent again after its connection was shed
//! takes the cached copy too, and its answer is ambiguous (Karn), as in the flow table.
//! Times and frames are stored as offsets from the cache's base (2^44 ns, about 4.9 hours,
//! and 2^36 frames); an entry outside that range rebases the cache, dropping what it held
//! (counted as overwritten).

use std::hash::Hasher;

use super::{Dir, FlowKey};
use crate::Nanos;
use crate::seq::SeqNum;

/// Entries per bucket: a key's two buckets are 2 x 16 x 16 bytes, eight cache lines. With 16
/// candidates, 99% of the entries survive until 80% of the capacity was cached after them
/// (8: 65%).
const WAYS: usize = 16;
/// `Entry::tag`: set in every used entry.
const USED: u16 = 0x8000;
const TS_BITS: u32 = 44;
const FRAME_BITS: u32 = 35;
/// `Entry::frame_hi`: the segment's answer is ambiguous (it was sent more than once).
const AMBIGUOUS: u16 = 0x8000;
/// How far before the first entry cached a later one may be (out-of-order capture times).
const TS_SLACK: Nanos = 1 << 40;

/// Which handshake segment an entry holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opener {
    /// A SYN (the first of its connection's).
    Syn = 0,
    /// A SYN/ACK, or a SYN sent after the other side's.
    SynAck = 1,
}

/// One cached handshake segment: the ACK number that answers it, a tag (`USED`, 14 bits of
/// its key's hash and the [`Opener`] in the lowest bit; 0: the slot is empty), and its time
/// and frame as offsets from the cache's base.
#[derive(Clone, Copy, Default)]
struct Entry {
    ack: u32,
    tag: u16,
    /// Bits 20..35 of the frame offset, and [`AMBIGUOUS`].
    frame_hi: u16,
    /// Time offset (44 bits) above the frame offset's low 20 bits.
    packed: u64,
}

impl Entry {
    fn new(tag: u16, ack: SeqNum, ts_off: u64, frame_off: u64, ambiguous: bool) -> Entry {
        debug_assert!(ts_off < 1 << TS_BITS && frame_off < 1 << FRAME_BITS);
        Entry {
            ack: ack.get(),
            tag,
            frame_hi: (frame_off >> 20) as u16 | if ambiguous { AMBIGUOUS } else { 0 },
            packed: ts_off << 20 | (frame_off & 0xf_ffff),
        }
    }

    fn ts_off(&self) -> u64 {
        self.packed >> 20
    }

    fn frame_off(&self) -> u64 {
        u64::from(self.frame_hi & !AMBIGUOUS) << 20 | (self.packed & 0xf_ffff)
    }

    fn ambiguous(&self) -> bool {
        self.frame_hi & AMBIGUOUS != 0
    }
}

/// A fixed-size cache of handshake segments awaiting their ACK, keyed by connection and
/// sending direction. See the module documentation.
pub struct HandshakeCache {
    entries: Vec<Entry>,
    /// Entries at most (a power of two, at least two buckets), or 0: disabled.
    capacity: usize,
    /// Entries held, by [`Opener`].
    live: [usize; 2],
    base_ts: Nanos,
    base_frame: u64,
}

impl HandshakeCache {
    /// A cache of `capacity` entries (rounded up to a power of two, at least 16; 0 disables
    /// it). Nothing is allocated until the first [`HandshakeCache::insert`].
    pub fn new(capacity: usize) -> HandshakeCache {
        HandshakeCache {
            entries: Vec::new(),
            capacity: if capacity == 0 {
                0
            } else {
                capacity.max(2 * WAYS).next_power_of_two()
            },
            live: [0; 2],
            base_ts: 0,
            base_frame: 0,
        }
    }

    /// Bytes the cache holds once used: 16 an entry.
    pub fn bytes(capacity: usize) -> usize {
        HandshakeCache::new(capacity).capacity * std::mem::size_of::<Entry>()
    }

    /// False for a cache of capacity 0, which holds nothing.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Nothing cached: lookups cannot hit (one compare on the hot path).
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.live == [0; 2]
    }

    /// Whether a segment of this kind is cached.
    #[inline]
    pub fn holds(&self, kind: Opener) -> bool {
        self.live[kind as usize] > 0
    }

    fn len(&self) -> usize {
        self.live[0] + self.live[1]
    }

    /// The two buckets' first entries and the tag of (`key`, `dir`, `kind`).
    fn place(&self, key: &FlowKey, dir: Dir, kind: Opener) -> (usize, usize, u16) {
        // SipHash with fixed keys: a well-mixed 64 bits (FxHash's are not, for a tag), the
        // same on every run (a replay must give the same answer).
        // Every bit of the key in one fixed encoding, not the flow table's `Hash` (which
        // takes a shorter form for IPv4 to save the table's keyed hash a multiply): which
        // entries share buckets, and so which survive a flood, stays the same whatever form
        // the table's hash takes.
        let mut h = std::hash::DefaultHasher::new();
        key.hash_every_bit(&mut h);
        h.write_u8(dir as u8 | (kind as u8) << 1);
        let h = h.finish();
        let buckets = self.capacity / WAYS;
        let b1 = (h as usize) & (buckets - 1);
        let b2 = ((h >> 24) as usize) & (buckets - 1);
        let tag = USED | ((h >> 50) as u16) << 1 | kind as u16;
        (b1 * WAYS, b2 * WAYS, tag)
    }

    /// Forget everything (e.g. between unrelated capture files), keeping the allocation.
    pub fn clear(&mut self) {
        if !self.is_empty() {
            self.entries.fill(Entry::default());
            self.live = [0; 2];
        }
    }

    /// Cache the handshake segment (`kind`) that `dir` of `key` sent at `ts` in `frame`,
    /// answered by an ACK of `ack`, and whether that answer is `ambiguous`. Returns how many entries it displaced (one, the oldest of
    /// its 32 candidate slots, when they are all full; all of them when it rebased the cache).
    pub fn insert(
        &mut self,
        key: &FlowKey,
        dir: Dir,
        kind: Opener,
        ack: SeqNum,
        (ts, frame): (Nanos, u64),
        ambiguous: bool,
    ) -> u64 {
        if self.capacity == 0 {
            return 0;
        }
        if self.entries.is_empty() {
            self.entries = vec![Entry::default(); self.capacity];
        }
        let in_range = |c: &HandshakeCache| {
            ts.checked_sub(c.base_ts)
                .is_some_and(|d| d >= 0 && (d as u64) < 1 << TS_BITS)
                && frame >= c.base_frame
                && frame - c.base_frame < 1 << FRAME_BITS
        };
        let mut dropped = 0;
        if self.is_empty() || !in_range(self) {
            // The cache's first entry, or one too far from its base: start again from here.
            dropped = self.len() as u64;
            self.clear();
            self.base_ts = ts.saturating_sub(TS_SLACK);
            self.base_frame = frame;
        }
        let (b1, b2, tag) = self.place(key, dir, kind);
        let new = Entry::new(
            tag,
            ack,
            (ts - self.base_ts) as u64,
            frame - self.base_frame,
            ambiguous,
        );
        // An entry that a lookup could not tell from this one gives way to it; else an
        // empty slot is taken; else the oldest is replaced.
        let mut victim = b1;
        for i in (b1..b1 + WAYS).chain(b2..b2 + WAYS) {
            let e = &self.entries[i];
            if e.tag == tag && e.ack == new.ack {
                self.entries[i] = new;
                return dropped + 1;
            }
            let v = &self.entries[victim];
            if v.tag != 0 && (e.tag == 0 || e.frame_off() < v.frame_off()) {
                victim = i;
            }
        }
        let old = self.entries[victim].tag;
        if old == 0 {
            self.live[kind as usize] += 1;
        } else {
            self.live[usize::from(old & 1)] -= 1;
            self.live[kind as usize] += 1;
            dropped += 1;
        }
        self.entries[victim] = new;
        dropped
    }

    /// Take the entry of the handshake segment (`kind`) that `dir` of `key` sent and `ack`
    /// acknowledges: its time and frame, and whether its answer is ambiguous.
    pub fn take(
        &mut self,
        key: &FlowKey,
        dir: Dir,
        kind: Opener,
        ack: SeqNum,
    ) -> Option<((Nanos, u64), bool)> {
        if !self.holds(kind) {
            return None;
        }
        let (b1, b2, tag) = self.place(key, dir, kind);
        for i in (b1..b1 + WAYS).chain(b2..b2 + WAYS) {
            let e = self.entries[i];
            if e.tag == tag && e.ack == ack.get() {
                self.entries[i] = Entry::default();
                self.live[kind as usize] -= 1;
                let open = (
                    self.base_ts + e.ts_off() as Nanos,
                    self.base_frame + e.frame_off(),
                );
                return Some((open, e.ambiguous()));
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{IpAddr, Ipv4Addr};

    fn key(n: u32) -> FlowKey {
        FlowKey::new(
            IpAddr::V4(Ipv4Addr::from(n)),
            1000 + (n % 50_000) as u16,
            IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)),
            443,
        )
        .0
    }

    const SA: Opener = Opener::SynAck;

    fn ack(n: u32) -> SeqNum {
        SeqNum::new(n)
    }

    #[test]
    fn an_entry_is_found_once_by_its_key_direction_kind_and_ack() {
        let mut c = HandshakeCache::new(1024);
        assert!(c.is_empty());
        let t = 1_700_000_000_123_456_789;
        assert_eq!(
            c.insert(&key(1), Dir::Down, SA, ack(5001), (t, 17), false),
            0
        );
        assert!(!c.is_empty() && c.holds(SA) && !c.holds(Opener::Syn));
        // Another ACK number, the other direction or kind, another connection: no.
        assert_eq!(c.take(&key(1), Dir::Down, SA, ack(5002)), None);
        assert_eq!(c.take(&key(1), Dir::Up, SA, ack(5001)), None);
        assert_eq!(c.take(&key(1), Dir::Down, Opener::Syn, ack(5001)), None);
        assert_eq!(c.take(&key(2), Dir::Down, SA, ack(5001)), None);
        let hit = Some(((t, 17), false));
        assert_eq!(c.take(&key(1), Dir::Down, SA, ack(5001)), hit);
        assert_eq!(c.take(&key(1), Dir::Down, SA, ack(5001)), None);
        assert!(c.is_empty());
        // Times before the first entry (within the slack) and far after it, large frames,
        // the ambiguity flag.
        let f = 1u64 << 40;
        let mut dropped = c.insert(&key(3), Dir::Up, SA, ack(1), (t, f), false);
        dropped += c.insert(
            &key(4),
            Dir::Up,
            SA,
            ack(2),
            (t - 1_000_000_000, f + 5),
            true,
        );
        let later = t + 3 * 3600 * 1_000_000_000;
        let far = f + (1 << 34) + 3;
        dropped += c.insert(&key(5), Dir::Up, Opener::Syn, ack(3), (later, far), false);
        assert_eq!(
            c.take(&key(4), Dir::Up, SA, ack(2)),
            Some(((t - 1_000_000_000, f + 5), true))
        );
        assert_eq!(
            c.take(&key(5), Dir::Up, Opener::Syn, ack(3)),
            Some(((later, far), false))
        );
        assert_eq!(dropped, 0);
        // Beyond the range: the cache starts again, dropping what it held.
        let beyond = (t + (1 << 44), 1);
        assert_eq!(c.insert(&key(6), Dir::Up, SA, ack(4), beyond, false), 1);
        assert_eq!(c.take(&key(3), Dir::Up, SA, ack(1)), None);
        assert_eq!(c.take(&key(6), Dir::Up, SA, ack(4)), Some((beyond, false)));
    }

    #[test]
    fn it_keeps_nearly_its_capacity_in_arrival_order() {
        // 2^16 entries, 3 x 2^16 inserted: of the 2,000 cached before the newest 60% of the
        // capacity, all are still there; of those before the newest 75%, 99%; the oldest went
        // first (first in, first out among a key's 32 candidate slots).
        let cap = 1u32 << 16;
        let mut c = HandshakeCache::new(cap as usize);
        let n = 3 * cap;
        let mut overwritten = 0;
        for i in 0..n {
            let open = (i64::from(i), u64::from(i));
            overwritten += c.insert(&key(i), Dir::Down, SA, ack(i), open, false);
        }
        // Nearly full: an insert displaces an entry only when its 32 candidate slots are.
        assert!(c.len() > cap as usize * 99 / 100, "{}", c.len());
        assert_eq!(overwritten + c.len() as u64, u64::from(n));
        let kept = |c: &mut HandshakeCache, from: u32, to: u32| {
            (from..to)
                .filter(|&i| c.take(&key(i), Dir::Down, SA, ack(i)).is_some())
                .count()
        };
        let before = |pct: u32| n - cap * pct / 100 - 2_000;
        assert_eq!(kept(&mut c, before(60), before(60) + 2_000), 2_000);
        assert!(kept(&mut c, before(75), before(75) + 2_000) >= 1_980);
        assert!(kept(&mut c, before(100), before(100) + 2_000) < 1_000);
        assert_eq!(kept(&mut c, 0, 2_000), 0);
    }

    #[test]
    fn a_disabled_cache_holds_nothing() {
        let mut c = HandshakeCache::new(0);
        assert!(!c.enabled());
        c.insert(&key(1), Dir::Down, SA, ack(1), (0, 1), false);
        assert!(c.is_empty());
        assert_eq!(c.take(&key(1), Dir::Down, SA, ack(1)), None);
        assert_eq!(HandshakeCache::bytes(1 << 21), 32 << 20);
    }
}
