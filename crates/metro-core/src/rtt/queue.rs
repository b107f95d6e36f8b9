//! Pending openers (segments awaiting an ACK, TSvals awaiting an echo) as FIFO queues whose
//! nodes live in one shared pool. A connection costs nothing until it has something in
//! flight, and a node freed by one connection is reused by the next: after warm-up the hot
//! path allocates nothing.

use crate::Nanos;

/// No node.
pub const NIL: u32 = u32::MAX;

/// One pending opener: the sequence number (segment end) or TSval that will close it, when
/// and in which frame it was seen, and whether it was a SYN or SYN/ACK.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pending {
    pub key: u32,
    pub handshake: bool,
    /// Its answer cannot be timed (data sent twice, or reordered before it).
    pub ambiguous: bool,
    pub ts: Nanos,
    pub frame: u64,
}

#[derive(Clone, Copy)]
struct Node {
    item: Pending,
    next: u32,
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

    /// Store one item outside any queue; `take` returns it and frees the node.
    #[inline]
    pub fn put(&mut self, item: Pending) -> u32 {
        self.alloc(item)
    }

    /// The item stored by `put` under `i`; the node is freed.
    #[inline]
    pub fn take(&mut self, i: u32) -> Pending {
        let item = self.nodes[i as usize].item;
        self.release(i);
        item
    }

    #[inline]
    fn alloc(&mut self, item: Pending) -> u32 {
        self.in_use += 1;
        if self.free != NIL {
            let i = self.free;
            self.free = self.nodes[i as usize].next;
            self.nodes[i as usize] = Node { item, next: NIL };
            i
        } else {
            self.nodes.push(Node { item, next: NIL });
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

/// A FIFO of pending openers, oldest first. Keys are pushed in increasing (serial) order.
#[derive(Clone, Copy, Debug)]
pub struct Queue {
    head: u32,
    tail: u32,
    len: u32,
}

impl Default for Queue {
    fn default() -> Self {
        Queue::new()
    }
}

impl Queue {
    pub const fn new() -> Queue {
        Queue {
            head: NIL,
            tail: NIL,
            len: 0,
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
    pub fn front(&self, pool: &Pool) -> Option<Pending> {
        if self.head == NIL {
            None
        } else {
            Some(pool.nodes[self.head as usize].item)
        }
    }

    #[inline]
    pub fn back_mut<'p>(&self, pool: &'p mut Pool) -> Option<&'p mut Pending> {
        if self.tail == NIL {
            None
        } else {
            Some(&mut pool.nodes[self.tail as usize].item)
        }
    }

    #[inline]
    pub fn push_back(&mut self, pool: &mut Pool, item: Pending) {
        let i = pool.alloc(item);
        if self.tail == NIL {
            self.head = i;
        } else {
            pool.nodes[self.tail as usize].next = i;
        }
        self.tail = i;
        self.len += 1;
    }

    #[inline]
    pub fn pop_front(&mut self, pool: &mut Pool) -> Option<Pending> {
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
        Some(node.item)
    }

    /// Mark every entry whose key is beyond `after` (serial order), or every entry if
    /// `after` is `None`, as ambiguous.
    pub fn mark_ambiguous(&self, pool: &mut Pool, after: Option<u32>) {
        let mut i = self.head;
        while i != NIL {
            let node = &mut pool.nodes[i as usize];
            if after.is_none_or(|a| crate::seq::gt(node.item.key, a)) {
                node.item.ambiguous = true;
            }
            i = node.next;
        }
    }

    /// Return every node to the pool.
    pub fn clear(&mut self, pool: &mut Pool) {
        while self.pop_front(pool).is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(key: u32) -> Pending {
        Pending {
            key,
            handshake: false,
            ambiguous: false,
            ts: key as i64,
            frame: key as u64,
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
        assert_eq!(a.pop_front(&mut pool).map(|x| x.key), Some(1));
        assert_eq!(b.front(&pool).map(|x| x.key), Some(11));
        assert_eq!(a.back_mut(&mut pool).map(|x| x.key), Some(3));
        a.clear(&mut pool);
        assert!(a.is_empty());
        assert_eq!(pool.in_use(), 3);
        let before = pool.allocated();
        for k in 0..3 {
            a.push_back(&mut pool, p(k));
        }
        assert_eq!(pool.allocated(), before, "freed nodes are reused");
        assert_eq!(b.pop_front(&mut pool).map(|x| x.key), Some(11));
        assert_eq!(b.pop_front(&mut pool).map(|x| x.key), Some(12));
        assert_eq!(b.pop_front(&mut pool).map(|x| x.key), Some(13));
        assert_eq!(b.pop_front(&mut pool), None);
    }

    #[test]
    fn marks_entries_beyond_a_point_across_wrap() {
        let mut pool = Pool::new();
        let mut q = Queue::new();
        for k in [0xffff_fff0u32, 0xffff_fffa, 5, 20] {
            q.push_back(&mut pool, p(k));
        }
        q.mark_ambiguous(&mut pool, Some(0xffff_fffa));
        let got: Vec<bool> = std::iter::from_fn(|| q.pop_front(&mut pool))
            .map(|e| e.ambiguous)
            .collect();
        assert_eq!(got, vec![false, false, true, true]);
    }
}
