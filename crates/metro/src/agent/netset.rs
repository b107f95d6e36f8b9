//! Sets of IP addresses given as addresses and CIDR blocks, sized for watch lists of any
//! length: what the capture path asks per packet and what the kernel filter is made from.
//!
//! A [`NetSet`] keeps each family as sorted, disjoint, non-adjacent inclusive ranges
//! (`u32` for IPv4, `u128` for IPv6): duplicates, overlaps and nesting disappear when it is
//! built, a lookup is one binary search (O(log n)), and memory is 8 or 32 bytes per range.
//! Ranges rather than a prefix trie because they also give the two things the kernel filter
//! needs: the minimal list of CIDR blocks covering exactly the set ([`NetSet::cidrs`]), and a
//! short list of wider blocks covering it ([`NetSet::covering`]) when the exact list is too
//! long for a BPF program. (`ipnet`'s aggregation or a trie crate such as `prefix-trie` would
//! give the first, not the second; the whole structure is a hundred lines.)

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::config::Cidr;

/// One address family's ranges, generic over the address width.
trait Word: Copy + Ord + Eq + std::fmt::Debug {
    const BITS: u32;
    fn to_u128(self) -> u128;
}

impl Word for u32 {
    const BITS: u32 = 32;
    fn to_u128(self) -> u128 {
        u128::from(self)
    }
}

impl Word for u128 {
    const BITS: u32 = 128;
    fn to_u128(self) -> u128 {
        self
    }
}

/// The last address of the block `start/len` (width `bits`), as u128.
fn block_end(start: u128, len: u32, bits: u32) -> u128 {
    let host = bits - len;
    if host == 0 {
        start
    } else if host == 128 {
        u128::MAX
    } else {
        start | ((1u128 << host) - 1)
    }
}

/// Prefix mask of `len` bits in a word of `bits`.
fn prefix_mask(len: u32, bits: u32) -> u128 {
    let all = if bits == 128 {
        u128::MAX
    } else {
        (1u128 << bits) - 1
    };
    if len == 0 {
        0
    } else if len >= bits {
        all
    } else {
        all & !(all >> len)
    }
}

/// Sort and merge ranges that overlap or touch.
fn normalise<W: Word>(mut v: Vec<(W, W)>) -> Vec<(W, W)> {
    v.sort_unstable();
    let mut out: Vec<(W, W)> = Vec::with_capacity(v.len());
    for (s, e) in v {
        if let Some(last) = out.last_mut() {
            let le = last.1.to_u128();
            // Touching (`le + 1 == s`) merges too; `le` may be the family's last address.
            if le == u128::MAX || s.to_u128() <= le + 1 {
                if e > last.1 {
                    last.1 = e;
                }
                continue;
            }
        }
        out.push((s, e));
    }
    out.shrink_to_fit();
    out
}

fn contains<W: Word>(v: &[(W, W)], x: W) -> bool {
    // The first range starting after x; the one before it is the only candidate.
    let i = v.partition_point(|r| r.0 <= x);
    i > 0 && v[i - 1].1 >= x
}

/// The minimal CIDR blocks covering `[s, e]` exactly, as (start, prefix length).
fn range_cidrs(s: u128, e: u128, bits: u32, out: &mut Vec<(u128, u32)>) {
    let mut s = s;
    loop {
        // The largest aligned block at `s` that ends at or before `e`.
        let mut host = s.trailing_zeros().min(bits);
        while host > 0 && block_end(s, bits - host, bits) > e {
            host -= 1;
        }
        let end = block_end(s, bits - host, bits);
        out.push((s, bits - host));
        if end >= e {
            return;
        }
        s = end + 1;
    }
}

fn cidrs_of<W: Word>(v: &[(W, W)]) -> Vec<(u128, u32)> {
    let mut out = Vec::with_capacity(v.len());
    for &(s, e) in v {
        range_cidrs(s.to_u128(), e.to_u128(), W::BITS, &mut out);
    }
    out
}

/// The blocks of `exact` (sorted, disjoint) widened to at most `len` bits of prefix, without
/// the ones a previous wider block already covers.
fn truncated(exact: &[(u128, u32)], len: u32, bits: u32) -> Vec<(u128, u32)> {
    let mut out: Vec<(u128, u32)> = Vec::new();
    for &(s, l) in exact {
        let l = l.min(len);
        let s = s & prefix_mask(l, bits);
        if let Some(&(ps, pl)) = out.last() {
            // Aligned blocks nest or are disjoint; sorted input never yields one that
            // contains the previous without being equal to it.
            if s & prefix_mask(pl, bits) == ps {
                continue;
            }
        }
        out.push((s, l));
    }
    out
}

/// At most `budget` (>= 1) blocks covering every block of `exact`: the longest prefix length
/// whose widened blocks fit the budget (found by bisection: fewer bits never means more
/// blocks), then neighbours merged.
fn covering(exact: &[(u128, u32)], budget: usize, bits: u32) -> Vec<(u128, u32)> {
    if exact.len() <= budget {
        return exact.to_vec();
    }
    let (mut lo, mut hi) = (0u32, bits);
    // Invariant: truncated(lo) fits; truncated(hi) does not (hi = bits does not: checked
    // above).
    while hi - lo > 1 {
        let mid = (lo + hi) / 2;
        if truncated(exact, mid, bits).len() <= budget {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let wide = truncated(exact, lo, bits);
    // Sibling blocks merge into their parent: the exact cover of the widened set.
    let ranges: Vec<(u128, u128)> = wide
        .iter()
        .map(|&(s, l)| (s, block_end(s, l, bits)))
        .collect();
    let mut out = Vec::new();
    for (s, e) in normalise(ranges) {
        range_cidrs(s, e, bits, &mut out);
    }
    out
}

/// A set of IPv4 and IPv6 addresses.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NetSet {
    v4: Vec<(u32, u32)>,
    v6: Vec<(u128, u128)>,
}

impl NetSet {
    pub fn new(blocks: impl IntoIterator<Item = Cidr>) -> NetSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for c in blocks {
            let len = u32::from(c.prefix);
            match c.addr {
                IpAddr::V4(a) => {
                    let s = u128::from(u32::from(a)) & prefix_mask(len, 32);
                    v4.push((s as u32, block_end(s, len, 32) as u32));
                }
                IpAddr::V6(a) => {
                    let s = u128::from(a) & prefix_mask(len, 128);
                    v6.push((s, block_end(s, len, 128)));
                }
            }
        }
        NetSet {
            v4: normalise(v4),
            v6: normalise(v6),
        }
    }

    /// This set plus `more`.
    pub fn with(&self, more: impl IntoIterator<Item = Cidr>) -> NetSet {
        let extra = NetSet::new(more);
        if extra.is_empty() {
            return self.clone();
        }
        let mut v4 = self.v4.clone();
        v4.extend_from_slice(&extra.v4);
        let mut v6 = self.v6.clone();
        v6.extend_from_slice(&extra.v6);
        NetSet {
            v4: normalise(v4),
            v6: normalise(v6),
        }
    }

    #[inline]
    pub fn contains(&self, ip: IpAddr) -> bool {
        match ip {
            IpAddr::V4(a) => contains(&self.v4, u32::from(a)),
            IpAddr::V6(a) => contains(&self.v6, u128::from(a)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// Disjoint ranges kept (IPv4, IPv6).
    pub fn ranges(&self) -> (usize, usize) {
        (self.v4.len(), self.v6.len())
    }

    /// The fewest CIDR blocks covering exactly this set, IPv4 first, in address order.
    pub fn cidrs(&self) -> Vec<Cidr> {
        let mut out = to_cidrs(cidrs_of(&self.v4), 32);
        out.extend(to_cidrs(cidrs_of(&self.v6), 128));
        out
    }

    /// At most `budget` CIDR blocks (at least one per family present) covering this set,
    /// and whether they cover it exactly. Within budget, the blocks are [`NetSet::cidrs`];
    /// beyond it, each family's blocks are widened to the longest common prefix length that
    /// fits its share of the budget.
    pub fn covering(&self, budget: usize) -> (Vec<Cidr>, bool) {
        let e4 = cidrs_of(&self.v4);
        let e6 = cidrs_of(&self.v6);
        let (n4, n6) = (e4.len(), e6.len());
        if n4 + n6 <= budget {
            let mut out = to_cidrs(e4, 32);
            out.extend(to_cidrs(e6, 128));
            return (out, true);
        }
        // Shares: a family that needs less than half leaves the rest to the other.
        let half = (budget / 2).max(1);
        let (b4, b6) = match (n4, n6) {
            (0, _) => (0, budget.max(1)),
            (_, 0) => (budget.max(1), 0),
            _ if n4 <= half => (n4, budget.saturating_sub(n4).max(1)),
            _ if n6 <= half => (budget.saturating_sub(n6).max(1), n6),
            _ => (half, budget.saturating_sub(half).max(1)),
        };
        let c4 = if n4 > 0 {
            covering(&e4, b4, 32)
        } else {
            Vec::new()
        };
        let c6 = if n6 > 0 {
            covering(&e6, b6, 128)
        } else {
            Vec::new()
        };
        let mut out = to_cidrs(c4, 32);
        out.extend(to_cidrs(c6, 128));
        (out, false)
    }
}

fn to_cidrs(v: Vec<(u128, u32)>, bits: u32) -> Vec<Cidr> {
    v.into_iter()
        .map(|(s, l)| Cidr {
            addr: if bits == 32 {
                IpAddr::V4(Ipv4Addr::from(s as u32))
            } else {
                IpAddr::V6(Ipv6Addr::from(s))
            },
            prefix: l as u8,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        Cidr::parse(s).unwrap().0
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn strs(v: &[Cidr]) -> Vec<String> {
        v.iter().map(|c| c.to_string()).collect()
    }

    #[test]
    fn duplicates_overlaps_and_neighbours_merge() {
        let s = NetSet::new([
            c("10.0.0.0/24"),
            c("10.0.0.7"),
            c("10.0.0.0/24"),
            c("10.0.1.0/24"),
            c("10.0.0.0/23"),
            c("10.0.3.0/24"),
            c("2001:db8::1"),
            c("2001:db8::/127"),
            c("2001:db8::2"),
        ]);
        assert_eq!(s.ranges(), (2, 1));
        assert_eq!(
            strs(&s.cidrs()),
            [
                "10.0.0.0/23",
                "10.0.3.0/24",
                "2001:db8::/127",
                "2001:db8::2"
            ]
        );
        for (a, want) in [
            ("10.0.0.0", true),
            ("10.0.1.255", true),
            ("10.0.2.0", false),
            ("10.0.3.9", true),
            ("10.0.4.0", false),
            ("9.255.255.255", false),
            ("2001:db8::", true),
            ("2001:db8::2", true),
            ("2001:db8::3", false),
            ("::", false),
        ] {
            assert_eq!(s.contains(ip(a)), want, "{a}");
        }
    }

    #[test]
    fn whole_families_and_edges() {
        let s = NetSet::new([c("0.0.0.0/0"), c("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")]);
        assert!(s.contains(ip("0.0.0.0")) && s.contains(ip("255.255.255.255")));
        assert!(s.contains(ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")));
        assert!(!s.contains(ip("::1")));
        assert_eq!(
            strs(&s.cidrs()),
            ["0.0.0.0/0", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff"]
        );
        let s = NetSet::new([c("::/0"), c("255.255.255.255"), c("255.255.255.254")]);
        assert_eq!(strs(&s.cidrs()), ["255.255.255.254/31", "::/0"]);
        assert!(NetSet::new([]).is_empty());
        assert!(!NetSet::new([]).contains(ip("1.2.3.4")));
    }

    #[test]
    fn cidrs_of_a_ragged_range() {
        // 10.0.0.1 .. 10.0.0.6 as addresses: 10.0.0.1, .2/31, .4/31, .6.
        let s = NetSet::new((1..=6).map(|i| c(&format!("10.0.0.{i}"))));
        assert_eq!(
            strs(&s.cidrs()),
            ["10.0.0.1", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6"]
        );
    }

    /// Compares `contains` with a plain scan of the blocks over many addresses.
    #[test]
    fn agrees_with_a_linear_scan() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut blocks = Vec::new();
        for _ in 0..400 {
            let r = next();
            // Addresses clustered in 10.0.0.0/16 so that blocks overlap and touch.
            let a = Ipv4Addr::from(0x0A00_0000 | (r as u32 & 0xFFFF));
            let len = 24 + (r >> 32) as u8 % 9;
            blocks.push(Cidr::parse(&format!("{a}/{len}")).unwrap().0);
            let a6 = Ipv6Addr::from(0x2001_0db8u128 << 96 | u128::from(r as u16));
            let len6 = 120 + (r >> 40) as u8 % 9;
            blocks.push(Cidr::parse(&format!("{a6}/{len6}")).unwrap().0);
        }
        let set = NetSet::new(blocks.clone());
        assert!(set.cidrs().len() > 40, "{}", set.cidrs().len());
        let exact = NetSet::new(set.cidrs());
        assert_eq!(exact, set, "cidrs() must describe the same set");
        for budget in [1, 2, 7, 40] {
            let (cover, is_exact) = set.covering(budget);
            assert_eq!(is_exact, cover == set.cidrs(), "{budget}");
            let wide = NetSet::new(cover.clone());
            assert!(cover.len() <= budget.max(2), "{budget}: {}", cover.len());
            for b in &blocks {
                assert!(wide.contains(b.addr), "{budget}: {b} not covered");
            }
        }
        for _ in 0..20_000 {
            let r = next();
            let a = IpAddr::V4(Ipv4Addr::from(0x0A00_0000 | (r as u32 & 0x1FFFF)));
            assert_eq!(set.contains(a), blocks.iter().any(|b| b.contains(a)), "{a}");
            let a6 = IpAddr::V6(Ipv6Addr::from(
                0x2001_0db8u128 << 96 | u128::from(r as u32 & 0x1FFFF),
            ));
            assert_eq!(
                set.contains(a6),
                blocks.iter().any(|b| b.contains(a6)),
                "{a6}"
            );
        }
    }

    #[test]
    fn covering_widens_to_a_common_prefix() {
        // 1,000 /32s in 10.1.0.0/16 and 1,000 in 10.2.0.0/16: two /16s cover them.
        let s = NetSet::new((0..1000u32).flat_map(|i| {
            [
                c(&format!("10.1.{}.{}", i / 200, i % 200)),
                c(&format!("10.2.{}.{}", i / 200, 2 * (i % 100))),
            ]
        }));
        let (cov, exact) = s.covering(2);
        assert!(!exact);
        // The third octets run 0 to 4: /21 is the longest prefix with one block per /16
        // (/22 splits 10.1.0.0/22 from 10.1.4.0/22).
        assert_eq!(strs(&cov), ["10.1.0.0/21", "10.2.0.0/21"]);
        let (cov, _) = s.covering(10);
        assert!(cov.len() <= 10, "{cov:?}");
        let (cov, exact) = s.covering(100_000);
        assert!(exact);
        assert_eq!(cov, s.cidrs());
        // Both families: each keeps at least one block.
        let s = NetSet::new((0..300u32).flat_map(|i| {
            [
                c(&format!("10.9.{}.{}", i / 100, i % 100)),
                c(&format!("fd00::{i:x}:1")),
            ]
        }));
        let (cov, _) = s.covering(4);
        assert!(cov.iter().any(|c| c.addr.is_ipv4()) && cov.iter().any(|c| c.addr.is_ipv6()));
        assert!(cov.len() <= 4, "{cov:?}");
    }
}
