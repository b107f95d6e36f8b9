//! Serial-number arithmetic (RFC 1982) for 32-bit TCP sequence numbers and TSvals, which
//! wrap at 2^32 and must never be compared as plain integers.

/// `a < b` in serial arithmetic.
#[inline]
pub fn lt(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) < 0
}

/// `a <= b` in serial arithmetic.
#[inline]
pub fn le(a: u32, b: u32) -> bool {
    (a.wrapping_sub(b) as i32) <= 0
}

/// `a > b` in serial arithmetic.
#[inline]
pub fn gt(a: u32, b: u32) -> bool {
    lt(b, a)
}

/// `a >= b` in serial arithmetic.
#[inline]
pub fn ge(a: u32, b: u32) -> bool {
    le(b, a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps() {
        assert!(lt(0xffff_fff0, 0x10));
        assert!(gt(0x10, 0xffff_fff0));
        assert!(le(5, 5) && ge(5, 5));
        assert!(!lt(5, 5));
        assert!(lt(1, 2) && !lt(2, 1));
    }
}
