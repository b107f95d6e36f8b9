//! Pending openers (segments awaiting an ACK, TSvals awaiting an echo) as FIFO queues whose
//! nodes live in one shared pool. A connection costs nothing until it has something in
//! flight, and a node freed by one connection is reused by the next: after warm-up the hot
//! path allocates nothing.

use std::marker::PhantomData;

use crate::Nanos;
use crate::sample::Kind;
use crate::seq::{SeqSpace, Serial, Space, TsVal};

/// No node.
pub const NIL: u32 = u32::MAX;

/// One pending opener: the sequence number (segment end; `S` = [`SeqSpace`]) or TSval (`S` =
/// [`crate::seq::TsClock`]) that will close it, when and in which frame it was seen, and
/// whether it was a SYN or SYN/ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pending<S: Space = SeqSpace> {
    pub key: Serial<S>,
    pub handshake: bool,
    /// Its answer cannot be timed (data sent twice, or reordered before it).
    pub ambiguous: bool,
    pub ts: Nanos,
    pub frame: u64,
    /// The TSval the frame carried (0: none), to tell which copy an ACK's TSecr answers.
    pub tsval: TsVal,
    /// A fingerprint of the frame (see `conn::fingerprint`), to recognise a second capture of it.
    pub fp: u32,
}

impl<S: Space> Pending<S> {
    /// When and in which frame the opener was seen: all a sample needs of it.
    #[inline]
    pub fn seen(&self) -> (Nanos, u64) {
        (self.ts, self.frame)
    }

    /// The kind of sample its answer makes: a SYN's or SYN/ACK's is the handshake's.
    #[inline]
    pub fn kind(&self) -> Kind {
        if self.handshake {
            Kind::Handshake
        } else {
            Kind::Seq
        }
    }
}

/// A stored [`Pending`], packed into 32 bytes: the two flags live in the top bits of the
/// frame number (no capture has 2^62 frames). Key and TSval are stored raw: the queue that
/// owns the node knows which space its key is in.
#[derive(Clone, Copy)]
struct Node {
    ts: Nanos,
    frame: u64,
    key: u32,
    next: u32,
    tsval: u32,
    fp: u32,
}

const HANDSHAKE: u64 = 1 << 63;
const AMBIGUOUS: u64 = 1 << 62;

impl Node {
    #[inline]
    fn new<S: Space>(p: Pending<S>, next: u32) -> Node {
        Node {
            ts: p.ts,
            frame: (p.frame & !(HANDSHAKE | AMBIGUOUS))
                | if p.handshake { HANDSHAKE } else { 0 }
                | if p.ambiguous { AMBIGUOUS } else { 0 },
            key: p.key.get(),
            next,
            tsval: p.tsval.get(),
            fp: p.fp,
        }
    }

    #[inline]
    fn item<S: Space>(&self) -> Pending<S> {
        Pending {
            key: Serial::new(self.key),
            handshake: self.frame & HANDSHAKE != 0,
            ambiguous: self.frame & AMBIGUOUS != 0,
            ts: self.ts,
            frame: self.frame & !(HANDSHAKE | AMBIGUOUS),
            tsval: TsVal::new(self.tsval),
            fp: self.fp,
        }
    }

    #[inline]
    fn key<S: Space>(&self) -> Serial<S> {
        Serial::new(self.key)
    }
}

/// The shared node store.
#[derive(Default)]
pub struct Pool {
    nodes: Vec<Node>,
    free: u32,
    in_use: usize,
}

impl Pool {
    pub fn new() -> Pool {
        Pool {
            nodes: Vec::new(),
            free: NIL,
            in_use: 0,
        }
    }

    /// Nodes currently holding a pending opener.
    pub fn in_use(&self) -> usize {
        self.in_use
    }

    /// Nodes allocated in all (in use or free).
    pub fn allocated(&self) -> usize {
        self.nodes.len()
    }

    /// Store one item outside any queue, with a word of its own (`aux`); `take` returns both
    /// and frees the node.
    #[inline]
    pub fn put(&mut self, item: Pending, aux: u32) -> u32 {
        let i = self.alloc(item);
        // A node outside a queue has no successor: its link word is free for `aux`.
        self.nodes[i as usize].next = aux;
        i
    }

    /// The item and word stored by `put` under `i`, without freeing the node.
    #[inline]
    pub fn peek(&self, i: u32) -> (Pending, u32) {
        let n = &self.nodes[i as usize];
        (n.item(), n.next)
    }

    /// The item and word stored by `put` under `i`; the node is freed.
    #[inline]
    pub fn take(&mut self, i: u32) -> (Pending, u32) {
        let got = self.peek(i);
        self.release(i);
        got
    }

    #[inline]
    fn alloc<S: Space>(&mut self, item: Pending<S>) -> u32 {
        self.in_use += 1;
        if self.free != NIL {
            let i = self.free;
            self.free = self.nodes[i as usize].next;
            self.nodes[i as usize] = Node::new(item, NIL);
            i
        } else {
            self.nodes.push(Node::new(item, NIL));
            (self.nodes.len() - 1) as u32
        }
    }

    #[inline]
    fn release(&mut self, i: u32) {
        self.in_use -= 1;
        self.nodes[i as usize].next = self.free;
        self.free = i;
    }
}

/// A FIFO of pending openers, oldest first. Keys (in space `S`) are pushed in increasing
/// (serial) order.
#[derive(Clone, Copy, Debug)]
pub struct Queue<S: Space = SeqSpace> {
    head: u32,
    tail: u32,
    len: u32,
    space: PhantomData<S>,
}

impl<S: Space> Default for Queue<S> {
    fn default() -> Self {
        Queue::new()
    }
}

impl<S: Space> Queue<S> {
    pub const fn new() -> Queue<S> {
        Queue {
            head: NIL,
            tail: NIL,
            len: 0,
            space: PhantomData,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.len as usize
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    #[inline]
    pub fn front(&self, pool: &Pool) -> Option<Pending<S>> {
        if self.head == NIL {
            None
        } else {
            Some(pool.nodes[self.head as usize].item())
        }
    }

    /// The time of the oldest entry.
    #[inline]
    pub fn front_ts(&self, pool: &Pool) -> Option<Nanos> {
        (self.head != NIL).then(|| pool.nodes[self.head as usize].ts)
    }

    #[inline]
    pub fn back(&self, pool: &Pool) -> Option<Pending<S>> {
        if self.tail == NIL {
            None
        } else {
            Some(pool.nodes[self.tail as usize].item())
        }
    }

    /// The first entry with this key and fingerprint (a linear scan: for the rare segments
    /// that start below the highest byte sent).
    pub fn find(&self, pool: &Pool, key: Serial<S>, fp: u32) -> Option<Pending<S>> {
        let mut i = self.head;
        while i != NIL {
            let n = &pool.nodes[i as usize];
            if n.key() == key && n.fp == fp {
                return Some(n.item());
            }
            i = n.next;
        }
        None
    }

    /// Whether some entry satisfies `f` (a linear scan: for rare paths).
    pub fn any(&self, pool: &Pool, mut f: impl FnMut(Pending<S>) -> bool) -> bool {
        let mut i = self.head;
        while i != NIL {
            let n = &pool.nodes[i as usize];
            if f(n.item()) {
                return true;
            }
            i = n.next;
        }
        false
    }

    /// Whether an entry has this key; if so, whether it is already ambiguous.
    pub fn ambiguous_at(&self, pool: &Pool, key: Serial<S>) -> Option<bool> {
        let mut i = self.head;
        while i != NIL {
            let n = &pool.nodes[i as usize];
            if n.key() == key {
                return Some(n.frame & AMBIGUOUS != 0);
            }
            i = n.next;
        }
        None
    }

    /// Whether an entry ends exactly at `end` and none ending in (`after`, `end`] is
    /// ambiguous: those bytes were sent once, by segments this queue still holds.
    pub fn sent_once(&self, pool: &Pool, after: Serial<S>, end: Serial<S>) -> bool {
        let mut found = false;
        let mut i = self.head;
        while i != NIL {
            let n = &pool.nodes[i as usize];
            let key = n.key::<S>();
            if key.gt(after) && key.le(end) {
                if n.frame & AMBIGUOUS != 0 {
                    return false;
                }
                found |= key == end;
            }
            i = n.next;
        }
        found
    }

    /// Move the oldest entry to the back of `to` (no allocation); false if there was none.
    #[inline]
    pub fn move_front_to(&mut self, pool: &mut Pool, to: &mut Queue<S>) -> bool {
        if self.head == NIL {
            return false;
        }
        let i = self.head;
        let node = &mut pool.nodes[i as usize];
        self.head = node.next;
        node.next = NIL;
        if self.head == NIL {
            self.tail = NIL;
        }
        self.len -= 1;
        to.link_back(pool, i);
        true
    }

    // Always inlined: left to itself the compiler calls it for the TSval queue, a call per
    // recorded TSval (callgrind: 1.2M of 224M instructions on scripts/profile.sh's capture).
    #[inline(always)]
    pub fn push_back(&mut self, pool: &mut Pool, item: Pending<S>) {
        let i = pool.alloc(item);
        self.link_back(pool, i);
    }

    /// Link node `i` (whose `next` is `NIL`) after the last entry.
    #[inline]
    fn link_back(&mut self, pool: &mut Pool, i: u32) {
        if self.tail == NIL {
            self.head = i;
        } else {
            pool.nodes[self.tail as usize].next = i;
        }
        self.tail = i;
        self.len += 1;
    }

    #[inline]
    pub fn pop_front(&mut self, pool: &mut Pool) -> Option<Pending<S>> {
        if self.head == NIL {
            return None;
        }
        let i = self.head;
        let node = pool.nodes[i as usize];
        self.head = node.next;
        if self.head == NIL {
            self.tail = NIL;
        }
        self.len -= 1;
        pool.release(i);
        Some(node.item())
    }

    /// Mark every entry whose key is beyond `after` (serial order), or every entry if
    /// `after` is `None`, as ambiguous. True if none of them was ambiguous before.
    pub fn mark_ambiguous(&self, pool: &mut Pool, after: Option<Serial<S>>) -> bool {
        let mut clean = true;
        let mut i = self.head;
        while i != NIL {
            let node = &mut pool.nodes[i as usize];
            if after.is_none_or(|a| node.key::<S>().gt(a)) {
                clean &= node.frame & AMBIGUOUS == 0;
                node.frame |= AMBIGUOUS;
            }
            i = node.next;
        }
        clean
    }

    /// Return every node to the pool.
    pub fn clear(&mut self, pool: &mut Pool) {
        while self.pop_front(pool).is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seq::SeqNum;

    fn s(n: u32) -> SeqNum {
        SeqNum::new(n)
    }

    fn p(key: u32) -> Pending {
        Pending {
            key: s(key),
            handshake: key.is_multiple_of(2),
            ambiguous: false,
            ts: key as i64,
            frame: key as u64,
            tsval: TsVal::new(key ^ 7),
            fp: key,
        }
    }

    #[test]
    fn fifo_and_reuse() {
        let mut pool = Pool::new();
        let mut a = Queue::new();
        let mut b = Queue::new();
        for k in 1..=3 {
            a.push_back(&mut pool, p(k));
            b.push_back(&mut pool, p(10 + k));
        }
        assert_eq!(a.len(), 3);
        assert_eq!(a.pop_front(&mut pool).map(|x| x.key.get()), Some(1));
        assert_eq!(b.front(&pool).map(|x| x.key.get()), Some(11));
        assert_eq!(a.back(&pool), Some(p(3)), "every field comes back");
        a.clear(&mut pool);
        assert!(a.is_empty());
        assert_eq!(pool.in_use(), 3);
        let before = pool.allocated();
        for k in 0..3 {
            a.push_back(&mut pool, p(k));
        }
        assert_eq!(pool.allocated(), before, "freed nodes are reused");
        assert_eq!(b.pop_front(&mut pool).map(|x| x.key.get()), Some(11));
        assert_eq!(b.pop_front(&mut pool).map(|x| x.key.get()), Some(12));
        assert_eq!(b.pop_front(&mut pool).map(|x| x.key.get()), Some(13));
        assert_eq!(b.pop_front(&mut pool), None);
    }

    #[test]
    fn marks_entries_beyond_a_point_across_wrap() {
        let mut pool = Pool::new();
        let mut q = Queue::new();
        for k in [0xffff_fff0u32, 0xffff_fffa, 5, 20] {
            q.push_back(&mut pool, p(k));
        }
        q.mark_ambiguous(&mut pool, Some(s(0xffff_fffa)));
        let got: Vec<bool> = std::iter::from_fn(|| q.pop_front(&mut pool))
            .map(|e| e.ambiguous)
            .collect();
        assert_eq!(got, vec![false, false, true, true]);
    }

    #[test]
    fn acknowledged_entries_move_without_allocating_and_are_found_again() {
        let mut pool = Pool::new();
        let (mut segs, mut done) = (Queue::new(), Queue::new());
        for k in [10u32, 20, 30] {
            segs.push_back(&mut pool, p(k));
        }
        let before = pool.allocated();
        assert!(segs.move_front_to(&mut pool, &mut done));
        assert!(segs.move_front_to(&mut pool, &mut done));
        assert_eq!(done.front_ts(&pool), Some(10));
        assert_eq!((segs.len(), done.len(), pool.allocated()), (1, 2, before));
        assert_eq!(done.find(&pool, s(20), 20), Some(p(20)));
        assert_eq!(
            done.find(&pool, s(20), 21),
            None,
            "the fingerprint must match too"
        );
        assert_eq!(segs.find(&pool, s(30), 30), Some(p(30)));
        // Both queues stay whole: the moved node no longer links to the rest of `segs`.
        let keys: Vec<u32> = std::iter::from_fn(|| done.pop_front(&mut pool))
            .map(|e| e.key.get())
            .collect();
        assert_eq!(keys, vec![10, 20]);
        assert_eq!(segs.pop_front(&mut pool), Some(p(30)));
        assert_eq!(pool.in_use(), 0);
    }

    #[test]
    fn sent_once_needs_the_end_and_no_ambiguous_entry_in_the_range() {
        let mut pool = Pool::new();
        let mut q = Queue::new();
        for k in [100u32, 200, 300] {
            q.push_back(&mut pool, p(k));
        }
        assert!(q.sent_once(&pool, s(100), s(200)));
        assert!(q.sent_once(&pool, s(0), s(300)));
        assert!(!q.sent_once(&pool, s(100), s(250)), "no entry ends at 250");
        assert!(
            q.mark_ambiguous(&mut pool, Some(s(250))),
            "none was ambiguous before"
        );
        assert!(!q.sent_once(&pool, s(0), s(300)));
        assert!(q.sent_once(&pool, s(0), s(200)));
        assert!(
            !q.mark_ambiguous(&mut pool, Some(s(150))),
            "300 already was"
        );
    }
}
