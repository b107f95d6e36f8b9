//! Pending openers (segments awaiting an ACK, TSvals awaiting an echo) as FIFO queues whose
//! nodes live in one shared pool. A connection costs nothing until it has something in
//! flight, and a node freed by one connection is reused by the next: after warm-up the hot
//! path allocates nothing.

use std::marker::PhantomData;

use crate::Nanos;
use crate::sample::Kind;
use crate::seq::{SeqNum, SeqSpace, Serial, Space, TsVal};

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
pub struct Node {
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
    pub fn key<S: Space>(&self) -> Serial<S> {
        Serial::new(self.key)
    }

    /// When and in which frame the opener was seen (see [`Pending::seen`]).
    #[inline]
    pub fn seen(&self) -> (Nanos, u64) {
        (self.ts, self.frame & !(HANDSHAKE | AMBIGUOUS))
    }

    /// The whole opener.
    #[inline]
    pub fn pending<S: Space>(&self) -> Pending<S> {
        self.item()
    }
}

/// An acknowledged segment kept for late copies (an entry of a [`Ring`]): a [`Node`] without
/// its link, packed to 4-byte alignment (28 bytes, not 32): a ring of them is one
/// connection's, read and written in order, so it spans as few cache lines as can be. The
/// 8-byte fields are read and written whole (x86 and ARM load them unaligned at no cost), so
/// a node moves here field for field.
#[derive(Clone, Copy, Default)]
#[repr(C, packed(4))]
struct Kept {
    ts: Nanos,
    /// The frame number, with the node's flags in its top bits.
    frame: u64,
    key: u32,
    tsval: u32,
    fp: u32,
}

impl Kept {
    #[inline(always)]
    fn of(n: &Node) -> Kept {
        Kept {
            ts: n.ts,
            frame: n.frame,
            key: n.key,
            tsval: n.tsval,
            fp: n.fp,
        }
    }

    #[inline]
    fn new(p: Pending) -> Kept {
        Kept::of(&Node::new(p, NIL))
    }

    #[inline]
    fn ts(&self) -> Nanos {
        self.ts
    }

    #[inline]
    fn item(&self) -> Pending {
        Node {
            ts: self.ts,
            frame: self.frame,
            key: self.key,
            next: NIL,
            tsval: self.tsval,
            fp: self.fp,
        }
        .item()
    }

    #[inline]
    fn key(&self) -> SeqNum {
        Serial::new(self.key)
    }

    #[inline]
    fn ambiguous(&self) -> bool {
        self.frame & AMBIGUOUS != 0
    }
}

/// Blocks of `cap` [`Kept`] entries, for [`Ring`]s of one size.
#[derive(Default)]
struct Blocks {
    cap: usize,
    kept: Vec<Kept>,
    /// Blocks free for reuse (last freed first: likely still in cache).
    free: Vec<u32>,
}

impl Blocks {
    fn alloc(&mut self) -> u32 {
        self.free.pop().unwrap_or_else(|| {
            let b = self.kept.len() / self.cap;
            // Two rings a connection: far fewer blocks than this.
            assert!(b < 1 << CLASS_SHIFT, "ring blocks exhausted");
            self.kept
                .resize(self.kept.len() + self.cap, Kept::default());
            b as u32
        })
    }
}

/// Sizes of ring blocks: a ring starts in the smallest and moves to the next when full, up
/// to the largest ([`Pool::with_recent`]): a direction with one or two segments
/// acknowledged at a time (request and response) holds a small block, not the largest.
const RING_CLASSES: usize = 3;
/// A ring's size class is kept in the top bits of its block number.
const CLASS_SHIFT: u32 = 30;

/// The shared node store, and the store of [`Ring`]s' blocks.
#[derive(Default)]
pub struct Pool {
    nodes: Vec<Node>,
    free: u32,
    in_use: usize,
    rings: [Blocks; RING_CLASSES],
}

impl Pool {
    /// A pool whose rings keep up to 8 acknowledged segments (the default
    /// `max_recent_segments`).
    pub fn new() -> Pool {
        Pool::with_recent(8)
    }

    /// A pool whose rings hold the `max_recent` newest acknowledged segments a direction
    /// keeps ([`crate::config::EngineConfig::max_recent_segments`]), and the one or two
    /// retransmissions retired beside them before the next ACK trims them (see
    /// [`Ring::push_back`]).
    pub fn with_recent(max_recent: usize) -> Pool {
        let top = (max_recent + 2).min(usize::from(u16::MAX));
        let caps = [2.min(top), 4.min(top), top];
        Pool {
            nodes: Vec::new(),
            free: NIL,
            in_use: 0,
            rings: caps.map(|cap| Blocks {
                cap,
                ..Blocks::default()
            }),
        }
    }

    /// Ring blocks allocated in all (in use or free), by size class.
    pub fn rings_allocated(&self) -> [usize; RING_CLASSES] {
        self.rings.each_ref().map(|r| r.kept.len() / r.cap)
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

    /// Take the oldest entry if its key is at or before `upto` (serial order): the node as
    /// stored, which [`Ring::push_keeping`] takes as it is and [`Node::pending`] unpacks
    /// only when needed.
    #[inline(always)]
    pub fn pop_front_upto(&mut self, pool: &mut Pool, upto: Serial<S>) -> Option<Node> {
        if self.head == NIL {
            return None;
        }
        let i = self.head;
        let node = pool.nodes[i as usize];
        if !node.key::<S>().le(upto) {
            return None;
        }
        self.head = node.next;
        if self.head == NIL {
            self.tail = NIL;
        }
        self.len -= 1;
        pool.release(i);
        Some(node)
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

/// The acknowledged segments a direction keeps for late copies, oldest first, in one block
/// of the pool (allocated with the first, freed with the last): a FIFO like [`Queue`], whose
/// entries lie side by side instead of linked across the pool, so that an ACK's move of a
/// segment here and the trim of the oldest touch one or two cache lines of the
/// connection's own block.
#[derive(Clone, Copy, Debug)]
pub struct Ring {
    /// The block (its size class in the top two bits, then its number among that class's
    /// blocks), or `NIL`.
    block: u32,
    head: u16,
    len: u16,
}

impl Default for Ring {
    fn default() -> Self {
        Ring::new()
    }
}

impl Ring {
    pub const fn new() -> Ring {
        Ring {
            block: NIL,
            head: 0,
            len: 0,
        }
    }

    #[inline]
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The size class and block number (valid unless `block` is `NIL`).
    #[inline]
    fn class(&self) -> (usize, usize) {
        (
            (self.block >> CLASS_SHIFT) as usize,
            (self.block & ((1 << CLASS_SHIFT) - 1)) as usize,
        )
    }

    /// The `i`th entry (0: the oldest).
    #[inline]
    fn get<'p>(&self, pool: &'p Pool, i: usize) -> &'p Kept {
        let (class, block) = self.class();
        let blocks = &pool.rings[class];
        &blocks.kept[block * blocks.cap + wrap(usize::from(self.head) + i, blocks.cap)]
    }

    #[inline]
    fn get_mut<'p>(&self, pool: &'p mut Pool, i: usize) -> &'p mut Kept {
        let (class, block) = self.class();
        let blocks = &mut pool.rings[class];
        &mut blocks.kept[block * blocks.cap + wrap(usize::from(self.head) + i, blocks.cap)]
    }

    #[inline]
    fn entries<'p>(&self, pool: &'p Pool) -> impl Iterator<Item = &'p Kept> + use<'p> {
        let ring = *self;
        (0..self.len()).map(move |i| ring.get(pool, i))
    }

    /// The time of the oldest entry.
    #[inline]
    pub fn front_ts(&self, pool: &Pool) -> Option<Nanos> {
        (self.len > 0).then(|| self.get(pool, 0).ts())
    }

    /// Append an entry. A ring holds `max_recent` + 2: what an ACK leaves (`max_recent`) and
    /// the retransmission it may retire, with one more retired by a DSACK before the next
    /// ACK trims it. Beyond that (retransmissions each answered by a DSACK that does not
    /// move the ACK), the oldest entry makes room: a direction keeps a bounded number.
    #[inline(always)]
    pub fn push_back(&mut self, pool: &mut Pool, item: Pending) {
        self.push_kept(pool, Kept::new(item));
    }

    #[inline(always)]
    fn push_kept(&mut self, pool: &mut Pool, item: Kept) {
        if self.block != NIL {
            let (class, block) = self.class();
            let blocks = &mut pool.rings[class];
            let cap = blocks.cap;
            if self.len() < cap {
                blocks.kept[block * cap + wrap(usize::from(self.head) + self.len(), cap)] = item;
                self.len += 1;
                pool.in_use += 1;
                return;
            }
        }
        self.push_slow(pool, item);
    }

    /// [`Ring::push_back`] to a ring without a block, or a full one.
    #[cold]
    #[inline(never)]
    fn push_slow(&mut self, pool: &mut Pool, item: Kept) {
        if self.block == NIL {
            self.block = pool.rings[0].alloc();
            self.head = 0;
        } else {
            let (class, block) = self.class();
            let cap = pool.rings[class].cap;
            if self.len() == cap {
                // Few segments kept make classes of one size ([`Pool::with_recent`]): only a
                // larger block makes room; at the largest, the oldest entry does.
                match (class + 1..RING_CLASSES).find(|&c| pool.rings[c].cap > cap) {
                    Some(to) => self.grow(pool, class, block, to),
                    None => self.pop_front(pool),
                }
            }
        }
        let len = self.len();
        *self.get_mut(pool, len) = item;
        self.len += 1;
        pool.in_use += 1;
    }

    /// Append an entry, then drop the oldest if more than `max` are kept: what an ACK does
    /// with each segment it acknowledges. In place: the oldest entry's room is the new one's
    /// once the ring holds `max`.
    #[inline(always)]
    pub fn push_keeping(&mut self, pool: &mut Pool, item: &Node, max: usize) {
        if self.len() >= max {
            if self.len == 0 {
                // Kept and dropped at once (`max` 0).
                return;
            }
            let (class, _) = self.class();
            self.head = wrap(usize::from(self.head) + 1, pool.rings[class].cap) as u16;
            self.len -= 1;
            pool.in_use -= 1;
        }
        self.push_kept(pool, Kept::of(item));
    }

    /// Move the entries (oldest first) of a full ring to a block of a larger size class
    /// (`into`, above `class`).
    #[cold]
    #[inline(never)]
    fn grow(&mut self, pool: &mut Pool, class: usize, block: usize, into: usize) {
        debug_assert!(into > class && pool.rings[into].cap > pool.rings[class].cap);
        let to = pool.rings[into].alloc();
        let cap = pool.rings[class].cap;
        let (small, big) = pool.rings.split_at_mut(class + 1);
        let (from, into_blocks) = (&mut small[class], &mut big[into - class - 1]);
        // Full: the oldest entries from `head` to the block's end, then the rest.
        let src = &from.kept[block * cap..(block + 1) * cap];
        let dst = &mut into_blocks.kept[to as usize * into_blocks.cap..][..cap];
        let head = usize::from(self.head);
        dst[..cap - head].copy_from_slice(&src[head..]);
        dst[cap - head..].copy_from_slice(&src[..head]);
        from.free.push(block as u32);
        self.block = ((into as u32) << CLASS_SHIFT) | to;
        self.head = 0;
    }

    /// Drop the oldest entry; the block goes back to the pool with the last.
    #[inline]
    pub fn pop_front(&mut self, pool: &mut Pool) {
        if self.len == 0 {
            return;
        }
        self.len -= 1;
        pool.in_use -= 1;
        let (class, block) = self.class();
        if self.len == 0 {
            pool.rings[class].free.push(block as u32);
            self.block = NIL;
            self.head = 0;
        } else {
            self.head += 1;
            if usize::from(self.head) == pool.rings[class].cap {
                self.head = 0;
            }
        }
    }

    /// The first entry with this key and fingerprint.
    pub fn find(&self, pool: &Pool, key: SeqNum, fp: u32) -> Option<Pending> {
        self.entries(pool)
            .find(|k| k.key() == key && k.fp == fp)
            .map(Kept::item)
    }

    /// Whether some entry satisfies `f` (a linear scan: for rare paths).
    pub fn any(&self, pool: &Pool, mut f: impl FnMut(Pending) -> bool) -> bool {
        self.entries(pool).any(|k| f(k.item()))
    }

    /// Whether an entry ends exactly at `end` and none ending in (`after`, `end`] is
    /// ambiguous: those bytes were sent once, by segments this ring still holds.
    pub fn sent_once(&self, pool: &Pool, after: SeqNum, end: SeqNum) -> bool {
        let mut found = false;
        for k in self.entries(pool) {
            let key = k.key();
            if key.gt(after) && key.le(end) {
                if k.ambiguous() {
                    return false;
                }
                found |= key == end;
            }
        }
        found
    }

    /// Mark every entry whose key is beyond `after` (serial order) as ambiguous.
    pub fn mark_ambiguous(&self, pool: &mut Pool, after: SeqNum) {
        for i in 0..self.len() {
            let k = self.get_mut(pool, i);
            if k.key().gt(after) {
                k.frame |= AMBIGUOUS;
            }
        }
    }

    /// Give the block back to the pool.
    pub fn clear(&mut self, pool: &mut Pool) {
        if self.block != NIL {
            let (class, block) = self.class();
            pool.in_use -= self.len();
            pool.rings[class].free.push(block as u32);
        }
        *self = Ring::new();
    }
}

/// `i` (below twice `cap`) within a ring of `cap`.
#[inline(always)]
fn wrap(i: usize, cap: usize) -> usize {
    if i >= cap { i - cap } else { i }
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
    fn a_ring_keeps_order_through_its_growth_and_wrap_and_drops_the_oldest_when_full() {
        // Classes of 2, 4 and 6 entries (4 recent + 2).
        let mut pool = Pool::with_recent(4);
        let mut r = Ring::new();
        let keys = |r: &Ring, pool: &Pool| -> Vec<u32> { r.entries(pool).map(|k| k.key).collect() };
        r.push_back(&mut pool, p(10));
        r.pop_front(&mut pool);
        assert!(r.is_empty());
        assert_eq!(pool.in_use(), 0);
        // Wrapped inside the first block (head at 1), then grown twice.
        for k in [20, 30, 40, 50, 60, 70] {
            r.push_back(&mut pool, p(k));
            if k == 20 {
                r.push_back(&mut pool, p(25));
                r.pop_front(&mut pool);
            }
        }
        assert_eq!(keys(&r, &pool), vec![25, 30, 40, 50, 60, 70]);
        assert_eq!(pool.rings_allocated(), [1, 1, 1]);
        assert_eq!(r.front_ts(&pool), Some(25));
        assert_eq!(
            r.find(&pool, s(40), 40),
            Some(p(40)),
            "every field comes back"
        );
        assert_eq!(
            r.find(&pool, s(40), 41),
            None,
            "the fingerprint must match too"
        );
        // Full at the largest size: the oldest makes room.
        r.push_back(&mut pool, p(80));
        assert_eq!(keys(&r, &pool), vec![30, 40, 50, 60, 70, 80]);
        assert_eq!(pool.in_use(), 6);
        // A second ring reuses the freed small blocks; clearing frees the big one.
        let mut other = Ring::new();
        for k in 0..3 {
            other.push_back(&mut pool, p(k));
        }
        assert_eq!(pool.rings_allocated(), [1, 1, 1]);
        r.clear(&mut pool);
        assert_eq!(pool.in_use(), 3);
        for k in 0..6 {
            r.push_back(&mut pool, p(100 + k));
        }
        // The small block `other` gave up when it grew, a new middle one (`other` holds
        // the first), the big block `r` gave back.
        assert_eq!(pool.rings_allocated(), [1, 2, 1], "freed blocks are reused");
        assert_eq!(keys(&other, &pool), vec![0, 1, 2]);
        assert!(other.any(&pool, |e| e.key == s(2) && e.tsval == TsVal::new(2 ^ 7)));
        assert!(!other.any(&pool, |e| e.key == s(3)));
    }

    #[test]
    fn mark_ambiguous_marks_the_entries_beyond_and_says_if_none_was() {
        let mut pool = Pool::new();
        let mut q = Queue::new();
        for k in [100u32, 200, 300] {
            q.push_back(&mut pool, p(k));
        }
        assert!(
            q.mark_ambiguous(&mut pool, Some(s(250))),
            "none was ambiguous before"
        );
        assert!(
            !q.mark_ambiguous(&mut pool, Some(s(150))),
            "300 already was"
        );
        let flags: Vec<(u32, bool)> = std::iter::from_fn(|| q.pop_front(&mut pool))
            .map(|e| (e.key.get(), e.ambiguous))
            .collect();
        assert_eq!(flags, vec![(100, false), (200, true), (300, true)]);
    }

    #[test]
    fn push_keeping_is_push_then_drop_the_oldest_beyond_max() {
        // Against the rule on an unbounded FIFO (what the acknowledged segments were kept in
        // before): the same keys after each push, for every `max` from 0 to beyond the ring,
        // starting with more than `max` kept.
        for max in 0..8 {
            let mut pool = Pool::with_recent(max);
            let mut ring = Ring::new();
            let mut fifo = std::collections::VecDeque::new();
            for k in 0..2 {
                ring.push_back(&mut pool, p(k));
                fifo.push_back(k);
            }
            for k in 2..20 {
                ring.push_keeping(&mut pool, &Node::new(p(k), NIL), max);
                fifo.push_back(k);
                if fifo.len() > max {
                    fifo.pop_front();
                }
                let keys: Vec<u32> = ring.entries(&pool).map(|e| e.key).collect();
                assert_eq!(keys, Vec::from(fifo.clone()), "max {max}, after {k}");
                assert_eq!(pool.in_use(), fifo.len());
            }
        }
    }

    #[test]
    fn pushes_past_the_largest_ring_drop_the_oldest_whatever_max_recent() {
        // With few segments kept the size classes share caps ([2, 2, 2] for 0, [2, 3, 3] for
        // 1, [2, 4, 4] for 2): a full ring must not "grow" into a block of the same size.
        // Retransmissions retired by DSACKs that do not move the ACK (`push_back` alone), on
        // two rings sharing the pool, against an unbounded FIFO trimmed to the rule's bound
        // (`max` + 2).
        for max in 0..=3 {
            let bound = max + 2;
            let mut pool = Pool::with_recent(max);
            let mut rings = [Ring::new(), Ring::new()];
            let mut fifos = [
                std::collections::VecDeque::new(),
                std::collections::VecDeque::new(),
            ];
            for k in 0..(4 * bound as u32 + 3) {
                for (r, (ring, fifo)) in rings.iter_mut().zip(&mut fifos).enumerate() {
                    let key = k * 2 + r as u32;
                    ring.push_back(&mut pool, p(key));
                    fifo.push_back(key);
                    if fifo.len() > bound {
                        fifo.pop_front();
                    }
                }
                for (r, (ring, fifo)) in rings.iter().zip(&fifos).enumerate() {
                    let keys: Vec<u32> = ring.entries(&pool).map(|e| e.key).collect();
                    assert_eq!(
                        keys,
                        Vec::from(fifo.clone()),
                        "max {max}, ring {r}, after {k}"
                    );
                }
                assert_eq!(pool.in_use(), fifos[0].len() + fifos[1].len());
            }
            // A full ring then still takes an ACK's push in place of its oldest.
            for (r, (ring, fifo)) in rings.iter_mut().zip(&mut fifos).enumerate() {
                ring.push_keeping(&mut pool, &Node::new(p(1000 + r as u32), NIL), max);
                fifo.pop_front();
                fifo.push_back(1000 + r as u32);
                let keys: Vec<u32> = ring.entries(&pool).map(|e| e.key).collect();
                assert_eq!(
                    keys,
                    Vec::from(fifo.clone()),
                    "max {max}, ring {r}, after the ACK"
                );
            }
        }
    }

    #[test]
    fn a_ring_tells_bytes_sent_once() {
        let mut pool = Pool::new();
        let mut r = Ring::new();
        for k in [100u32, 200, 300] {
            r.push_back(&mut pool, p(k));
        }
        assert!(r.sent_once(&pool, s(100), s(200)));
        assert!(r.sent_once(&pool, s(0), s(300)));
        assert!(!r.sent_once(&pool, s(100), s(250)), "no entry ends at 250");
        r.mark_ambiguous(&mut pool, s(250));
        assert!(!r.sent_once(&pool, s(0), s(300)));
        assert!(r.sent_once(&pool, s(0), s(200)));
        let flags: Vec<bool> = r.entries(&pool).map(Kept::ambiguous).collect();
        assert_eq!(flags, vec![false, false, true]);
    }

    #[test]
    fn pop_front_upto_takes_the_entries_an_ack_covers_across_the_wrap() {
        let mut pool = Pool::new();
        let mut q: Queue = Queue::new();
        assert!(q.pop_front_upto(&mut pool, s(0)).is_none(), "empty");
        assert!(q.pop_front_upto(&mut pool, s(u32::MAX)).is_none(), "empty");
        assert_eq!(pool.in_use(), 0);
        // Segments ending at 0xffff_fff0, 0xffff_fffa, 5 (across 2^32) and 20.
        for k in [0xffff_fff0u32, 0xffff_fffa, 5, 20] {
            q.push_back(&mut pool, p(k));
        }
        let upto = |q: &mut Queue, pool: &mut Pool, ack: u32| -> Vec<Pending> {
            std::iter::from_fn(|| q.pop_front_upto(pool, s(ack)).map(|n| n.pending())).collect()
        };
        // An ACK before the first segment's end takes nothing.
        assert_eq!(upto(&mut q, &mut pool, 0xffff_ffe0), vec![]);
        // ACK 2 (past the wrap) covers both segments ending before 2^32; the segment ending
        // at 5 holds it (an ACK inside a segment), and stays.
        assert_eq!(
            upto(&mut q, &mut pool, 2),
            vec![p(0xffff_fff0), p(0xffff_fffa)],
            "every field comes back"
        );
        assert_eq!(q.len(), 2);
        assert_eq!(q.front(&pool), Some(p(5)));
        assert_eq!(pool.in_use(), 2);
        // The exact end of a segment takes it, not the next.
        assert_eq!(upto(&mut q, &mut pool, 5), vec![p(5)]);
        assert_eq!(q.front(&pool), Some(p(20)));
        // Past all: the queue empties and gives its nodes back.
        assert_eq!(upto(&mut q, &mut pool, 1000), vec![p(20)]);
        assert!(q.is_empty());
        assert_eq!(q.back(&pool), None);
        assert_eq!(pool.in_use(), 0);
        // Its tail was reset too: the next push is the front.
        q.push_back(&mut pool, p(30));
        assert_eq!(q.front(&pool), Some(p(30)));
        assert_eq!(q.back(&pool), Some(p(30)));
    }

    #[test]
    fn pop_front_upto_is_front_le_then_pop_front() {
        // Against the general path (look at the front, `le`, `pop_front`), for ACKs at and
        // around every segment end, the wrap included; keys spaced unevenly.
        let ends: Vec<u32> = (0..12u32)
            .map(|i| 0xffff_ffc0u32.wrapping_add(i * i * 3 + i))
            .collect();
        let mut acks: Vec<u32> = ends
            .iter()
            .flat_map(|&e| [e.wrapping_sub(1), e, e.wrapping_add(1)])
            .collect();
        acks.extend([0xffff_ff00, 0, 2, u32::MAX]);
        for &start in &acks {
            let mut pool = Pool::new();
            let (mut fast, mut slow): (Queue, Queue) = (Queue::new(), Queue::new());
            for &e in &ends {
                fast.push_back(&mut pool, p(e));
                slow.push_back(&mut pool, p(e));
            }
            // A first ACK, then each of the others above it (ACKs only move forward).
            for &ack in std::iter::once(&start).chain(acks.iter().filter(|&&a| s(a).gt(s(start)))) {
                let got: Vec<Pending> = std::iter::from_fn(|| {
                    fast.pop_front_upto(&mut pool, s(ack)).map(|n| n.pending())
                })
                .collect();
                let mut want = Vec::new();
                while slow.front(&pool).is_some_and(|f| f.key.le(s(ack))) {
                    want.push(slow.pop_front(&mut pool).unwrap());
                }
                assert_eq!(got, want, "ACK {ack:#x} after {start:#x}");
                assert_eq!(fast.len(), slow.len());
                assert_eq!(fast.front(&pool), slow.front(&pool));
            }
        }
    }

    #[test]
    fn a_kept_segment_keeps_every_field() {
        // Through the path an ACK takes (queue, `pop_front_upto`, the node as stored,
        // `push_keeping`) and back (`find`, `entries`): fields at their extremes.
        let items: Vec<Pending> = (0..12u32)
            .map(|i| Pending {
                key: s(0xffff_fffe_u32.wrapping_add(i * 1000)),
                handshake: i & 1 != 0,
                ambiguous: i & 2 != 0,
                ts: (1i64 << 41) + i64::from(i) * 1_000_003 + 7,
                frame: (1u64 << 61) + (1u64 << 33) + u64::from(i),
                tsval: TsVal::new(match i % 3 {
                    0 => 0,
                    1 => u32::MAX,
                    _ => 0x8000_0001 ^ i,
                }),
                fp: 0xdead_beef ^ i.wrapping_mul(0x9e37_79b9),
            })
            .collect();
        // Every combination of the two flags is there, with both extreme TSvals.
        for (h, a) in [(false, false), (false, true), (true, false), (true, true)] {
            assert!(items.iter().any(|p| p.handshake == h && p.ambiguous == a));
        }
        for max in [0usize, 1, 2, 3, 8] {
            let mut pool = Pool::with_recent(max);
            let mut q: Queue = Queue::new();
            let mut ring = Ring::new();
            let mut fifo = std::collections::VecDeque::new();
            for (n, item) in items.iter().enumerate() {
                q.push_back(&mut pool, *item);
                let node = q.pop_front_upto(&mut pool, item.key).expect("covered");
                assert_eq!(node.pending::<SeqSpace>(), *item, "max {max}, item {n}");
                assert_eq!(node.seen(), (item.ts, item.frame));
                assert_eq!(node.key::<SeqSpace>(), item.key);
                ring.push_keeping(&mut pool, &node, max);
                fifo.push_back(*item);
                if fifo.len() > max {
                    fifo.pop_front();
                }
                let kept: Vec<Pending> = ring.entries(&pool).map(Kept::item).collect();
                assert_eq!(kept, Vec::from(fifo.clone()), "max {max}, after item {n}");
                for k in &fifo {
                    assert_eq!(ring.find(&pool, k.key, k.fp), Some(*k), "max {max}");
                    assert_eq!(ring.find(&pool, k.key, !k.fp), None, "max {max}");
                }
                if max == 0 {
                    assert_eq!(ring.find(&pool, item.key, item.fp), None);
                }
                assert_eq!(ring.front_ts(&pool), fifo.front().map(|f| f.ts));
            }
        }
    }

    #[test]
    fn a_ring_grows_from_any_head_into_fresh_and_reused_blocks() {
        // Every boundary (2, 4, max + 2 entries) reached with the head at every place in the
        // full block, into new blocks (first round) and into blocks freed by the rings of
        // the round before (no more blocks allocated), against a bounded FIFO.
        for max in [1usize, 2, 3, 4, 8] {
            let top = max + 2;
            let mut pool = Pool::with_recent(max);
            let mut allocated = None;
            for round in 0..3u32 {
                let mut rings = Vec::new();
                for offset in 0..top as u32 {
                    let mut r = Ring::new();
                    let mut model = std::collections::VecDeque::new();
                    let key = |k: u32| round * 1000 + offset * 100 + k;
                    let check = |r: &Ring, pool: &Pool, model: &std::collections::VecDeque<u32>| {
                        let keys: Vec<u32> = r.entries(pool).map(|k| k.key).collect();
                        assert_eq!(keys, Vec::from(model.clone()), "max {max}, offset {offset}");
                        assert_eq!(r.front_ts(pool), model.front().map(|&k| i64::from(k)));
                    };
                    // One entry, then `offset` pushed and popped: the head moves.
                    r.push_back(&mut pool, p(key(0)));
                    model.push_back(key(0));
                    for k in 1..=offset {
                        r.push_back(&mut pool, p(key(k)));
                        r.pop_front(&mut pool);
                        model.push_back(key(k));
                        model.pop_front();
                        check(&r, &pool, &model);
                    }
                    // Then through every size and past the largest (the oldest drops).
                    for k in offset + 1..offset + 1 + 2 * top as u32 {
                        r.push_back(&mut pool, p(key(k)));
                        model.push_back(key(k));
                        if model.len() > top {
                            model.pop_front();
                        }
                        check(&r, &pool, &model);
                        let found = r.find(&pool, s(key(k)), key(k));
                        assert_eq!(found, Some(p(key(k))), "every field comes back");
                    }
                    rings.push(r);
                }
                let in_use: usize = rings.iter().map(Ring::len).sum();
                assert_eq!(pool.in_use(), in_use);
                match allocated {
                    None => allocated = Some(pool.rings_allocated()),
                    Some(a) => assert_eq!(pool.rings_allocated(), a, "max {max}: blocks reused"),
                }
                for r in &mut rings {
                    r.clear(&mut pool);
                }
                assert_eq!(pool.in_use(), 0);
            }
        }
    }
}
