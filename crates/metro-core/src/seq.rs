//! Serial-number arithmetic (RFC 1982) for 32-bit TCP sequence numbers and TSvals, which
//! wrap at 2^32 and must never be compared as plain integers.
//!
//! The engine and the traffic generator in metro-testkit hold them as [`SeqNum`] and
//! [`TsVal`]: newtypes with equality but no `Ord`/`PartialOrd`, so `a < b` does not compile
//! and every order is a serial one ([`Serial::lt`] and its siblings). The two are distinct
//! types: a sequence number cannot be compared with, or stored as, a TSval. There is no
//! comparison over raw `u32`s: [`Serial::get`] hands the raw number only to code that writes
//! it to the wire, hashes it or packs it, never to one that orders it.

use std::fmt;
use std::hash::Hash;
use std::marker::PhantomData;
use std::ops::Add;

/// What a [`Serial`] numbers: a marker type, never a value.
pub trait Space: Copy + Eq + Hash + Default + fmt::Debug {
    /// The name `Debug` prints.
    const NAME: &'static str;
}

/// Marks TCP sequence numbers (and acknowledgement numbers, SACK edges).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SeqSpace;

/// Marks RFC 7323 timestamp values (TSval, TSecr).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct TsClock;

impl Space for SeqSpace {
    const NAME: &'static str = "SeqNum";
}

impl Space for TsClock {
    const NAME: &'static str = "TsVal";
}

/// A 32-bit number in serial arithmetic. Deliberately without `Ord`: `a.lt(b)` means `a` is
/// less than half the number space behind `b`, which is not an order (it is not transitive
/// across the whole space).
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Serial<S: Space>(u32, PhantomData<S>);

/// A TCP sequence number.
pub type SeqNum = Serial<SeqSpace>;
/// An RFC 7323 timestamp value (TSval or TSecr).
pub type TsVal = Serial<TsClock>;

impl<S: Space> Serial<S> {
    /// Zero (for a TSval: no timestamp, by the engine's convention).
    pub const ZERO: Self = Self::new(0);

    #[inline]
    pub const fn new(raw: u32) -> Self {
        Serial(raw, PhantomData)
    }

    /// The number as carried on the wire.
    #[inline]
    pub const fn get(self) -> u32 {
        self.0
    }

    /// `self - other`, signed: positive when `self` is ahead of `other` (by less than 2^31).
    #[inline]
    pub const fn diff(self, other: Self) -> i32 {
        self.0.wrapping_sub(other.0) as i32
    }

    /// How far `self` is ahead of `base`, modulo 2^32.
    #[inline]
    pub const fn wrapping_diff(self, base: Self) -> u32 {
        self.0.wrapping_sub(base.0)
    }

    #[inline]
    pub const fn wrapping_add(self, n: u32) -> Self {
        Self::new(self.0.wrapping_add(n))
    }

    #[inline]
    pub const fn wrapping_sub(self, n: u32) -> Self {
        Self::new(self.0.wrapping_sub(n))
    }

    /// `self < other` in serial arithmetic.
    #[inline]
    pub const fn lt(self, other: Self) -> bool {
        self.diff(other) < 0
    }

    /// `self <= other` in serial arithmetic.
    #[inline]
    pub const fn le(self, other: Self) -> bool {
        self.diff(other) <= 0
    }

    /// `self > other` in serial arithmetic.
    #[inline]
    pub const fn gt(self, other: Self) -> bool {
        other.lt(self)
    }

    /// `self >= other` in serial arithmetic.
    #[inline]
    pub const fn ge(self, other: Self) -> bool {
        other.le(self)
    }
}

/// Advances by `n`, wrapping (a segment's end is its start plus its length).
impl<S: Space> Add<u32> for Serial<S> {
    type Output = Self;
    #[inline]
    fn add(self, n: u32) -> Self {
        self.wrapping_add(n)
    }
}

impl<S: Space> From<u32> for Serial<S> {
    #[inline]
    fn from(raw: u32) -> Self {
        Self::new(raw)
    }
}

impl<S: Space> fmt::Debug for Serial<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}({})", S::NAME, self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(n: u32) -> SeqNum {
        SeqNum::new(n)
    }

    #[test]
    fn wraps() {
        assert!(s(0xffff_fff0).lt(s(0x10)));
        assert!(s(0x10).gt(s(0xffff_fff0)));
        assert!(s(5).le(s(5)) && s(5).ge(s(5)));
        assert!(!s(5).lt(s(5)));
        assert!(s(1).lt(s(2)) && !s(2).lt(s(1)));
    }

    #[test]
    fn serial_order_across_the_wrap() {
        let (old, new) = (s(0xffff_fff0), s(0x10));
        assert!(old.lt(new) && old.le(new) && !old.gt(new) && !old.ge(new));
        assert!(new.gt(old) && new.ge(old) && !new.lt(old) && !new.le(old));
        assert!(new.le(new) && new.ge(new) && !new.lt(new) && !new.gt(new));
        // Half the space away and one less: still ahead; exactly half: the sign bit decides.
        assert!(s(0).lt(s(0x7fff_ffff)));
        assert!(s(0x7fff_ffff).gt(s(0)));
        assert!(s(0x8000_0000).lt(s(0)) && s(0).lt(s(0x8000_0000)));
    }

    #[test]
    fn arithmetic_wraps() {
        assert_eq!(s(0xffff_fffe) + 5, s(3));
        assert_eq!(s(0xffff_fffe).wrapping_add(2), s(0));
        assert_eq!(s(3).wrapping_sub(5), s(0xffff_fffe));
        assert_eq!(s(3).diff(s(0xffff_fffe)), 5);
        assert_eq!(s(0xffff_fffe).diff(s(3)), -5);
        assert_eq!(s(3).wrapping_diff(s(0xffff_fffe)), 5);
        assert_eq!(s(0xffff_fffe).wrapping_diff(s(3)), u32::MAX - 4);
        assert_eq!((s(7) + 1).get(), 8);
    }

    #[test]
    fn sequence_numbers_and_tsvals_print_their_kind() {
        assert_eq!(format!("{:?}", s(42)), "SeqNum(42)");
        assert_eq!(format!("{:?}", TsVal::new(42)), "TsVal(42)");
        assert_eq!(TsVal::ZERO.get(), 0);
        assert_eq!(TsVal::from(9), TsVal::new(9));
    }

    #[test]
    fn no_larger_than_the_raw_number() {
        assert_eq!(std::mem::size_of::<SeqNum>(), 4);
        assert_eq!(std::mem::size_of::<Option<(TsVal, TsVal)>>(), 12);
    }
}
