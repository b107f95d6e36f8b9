//! A two-level timing wheel at microsecond resolution: the generator's event queue.
//!
//! A binary heap of a few hundred thousand pending events spends most of its time in cache
//! misses; this wheel makes scheduling and popping O(1) amortised. Events are popped in time
//! order and, within one microsecond, in the order they were scheduled (FIFO), so the order is
//! a pure function of the schedule calls: deterministic by construction.
//!
//! Level 0 holds the current window of 4096 µs, one slot per µs, with an occupancy bitmap.
//! Level 1 holds the next 4095 windows, one bucket each, cascaded into level 0 when the
//! window reaches them. Anything further out (more than ~16.7 s) waits in an overflow heap.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

const BITS: u32 = 12;
const SLOTS: usize = 1 << BITS;
const MASK: u64 = SLOTS as u64 - 1;

/// Something with a time in µs.
pub trait Timed {
    fn time_us(&self) -> u64;
}

pub struct Wheel<T> {
    /// Start of the level-0 window (a multiple of `SLOTS`).
    base: u64,
    /// The µs being drained.
    now: u64,
    /// Next index to pop in the slot of `now`.
    cur: usize,
    l0: Vec<Vec<T>>,
    bits: [u64; SLOTS / 64],
    l1: Vec<Vec<T>>,
    /// Keyed by (time, sequence) so that equal times stay FIFO.
    overflow: BinaryHeap<Reverse<(u64, u64, Slot<T>)>>,
    overflow_seq: u64,
    len: usize,
}

/// Wraps a payload so that the overflow heap orders by key only.
struct Slot<T>(T);
impl<T> PartialEq for Slot<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}
impl<T> Eq for Slot<T> {}
impl<T> PartialOrd for Slot<T> {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Slot<T> {
    fn cmp(&self, _: &Self) -> std::cmp::Ordering {
        std::cmp::Ordering::Equal
    }
}

impl<T: Timed> Wheel<T> {
    pub fn new() -> Wheel<T> {
        Wheel {
            base: 0,
            now: 0,
            cur: 0,
            l0: (0..SLOTS).map(|_| Vec::new()).collect(),
            bits: [0; SLOTS / 64],
            l1: (0..SLOTS).map(|_| Vec::new()).collect(),
            overflow: BinaryHeap::new(),
            overflow_seq: 0,
            len: 0,
        }
    }

    /// Schedules `ev`. Its time must not be before the last popped event's.
    pub fn push(&mut self, ev: T) {
        let t = ev.time_us();
        debug_assert!(
            t >= self.now,
            "event at {t} scheduled in the past (now {})",
            self.now
        );
        let t = t.max(self.now);
        self.len += 1;
        if t < self.base + SLOTS as u64 {
            let s = (t & MASK) as usize;
            self.l0[s].push(ev);
            self.bits[s / 64] |= 1 << (s % 64);
        } else if (t >> BITS) - (self.base >> BITS) < SLOTS as u64 {
            self.l1[((t >> BITS) & MASK) as usize].push(ev);
        } else {
            self.overflow_seq += 1;
            self.overflow
                .push(Reverse((t, self.overflow_seq, Slot(ev))));
        }
    }

    /// The earliest event (FIFO among equal times).
    pub fn pop(&mut self) -> Option<T>
    where
        T: Copy,
    {
        loop {
            let s = (self.now & MASK) as usize;
            if let Some(&ev) = self.l0[s].get(self.cur) {
                self.cur += 1;
                self.len -= 1;
                return Some(ev);
            }
            if self.cur > 0 {
                self.l0[s].clear();
                self.bits[s / 64] &= !(1 << (s % 64));
                self.cur = 0;
            }
            if let Some(next) = self.next_occupied(s) {
                self.now = self.base + next as u64;
                continue;
            }
            if self.len == 0 {
                return None;
            }
            self.advance();
        }
    }

    /// The first occupied level-0 slot at or after `from`.
    fn next_occupied(&self, from: usize) -> Option<usize> {
        let mut w = from / 64;
        let mut word = self.bits[w] & (!0u64 << (from % 64));
        loop {
            if word != 0 {
                return Some(w * 64 + word.trailing_zeros() as usize);
            }
            w += 1;
            if w == self.bits.len() {
                return None;
            }
            word = self.bits[w];
        }
    }

    /// Moves to the next level-0 window: cascade its level-1 bucket, refill level 1 from the
    /// overflow heap.
    fn advance(&mut self) {
        self.base += SLOTS as u64;
        self.now = self.base;
        self.cur = 0;
        let b = ((self.base >> BITS) & MASK) as usize;
        let mut bucket = std::mem::take(&mut self.l1[b]);
        for ev in bucket.drain(..) {
            let s = (ev.time_us() & MASK) as usize;
            self.l0[s].push(ev);
            self.bits[s / 64] |= 1 << (s % 64);
        }
        self.l1[b] = bucket;
        while let Some(Reverse((t, _, _))) = self.overflow.peek() {
            if (t >> BITS) - (self.base >> BITS) >= SLOTS as u64 {
                break;
            }
            let Some(Reverse((_, _, Slot(ev)))) = self.overflow.pop() else {
                break;
            };
            self.len -= 1;
            self.push(ev);
        }
    }
}

impl<T: Timed> Default for Wheel<T> {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generator::rng::Rng;

    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    struct E(u64, u64);
    impl Timed for E {
        fn time_us(&self) -> u64 {
            self.0
        }
    }

    /// Against a reference: a stable sort by time of everything scheduled, interleaving pushes
    /// and pops as the generator does (never into the past), with times spanning all levels.
    #[test]
    fn pops_in_time_then_fifo_order() {
        let mut r = Rng::new(42);
        let mut w = Wheel::new();
        let mut pending: Vec<E> = Vec::new();
        let mut seq = 0;
        let mut now = 0;
        let mut popped = 0;
        for round in 0..20_000 {
            for _ in 0..r.range(0, 2) {
                let dt = match r.below(4) {
                    0 => 0,
                    1 => r.below(5_000),
                    2 => r.below(20_000_000),
                    _ => r.below(100_000_000),
                };
                seq += 1;
                let e = E(now + dt, seq);
                w.push(e);
                pending.push(e);
            }
            if round % 4 != 0 {
                let got = w.pop();
                // Reference: the earliest time, and among those the first scheduled.
                let want = pending.iter().copied().min_by_key(|e| (e.0, e.1));
                assert_eq!(got, want);
                if let Some(e) = got {
                    pending.retain(|p| *p != e);
                    now = e.0;
                    popped += 1;
                }
            }
        }
        while let Some(e) = w.pop() {
            let want = pending.iter().copied().min_by_key(|e| (e.0, e.1)).unwrap();
            assert_eq!(e, want);
            pending.retain(|p| *p != e);
        }
        assert!(pending.is_empty() && w.len == 0 && popped > 10_000);
    }
}
