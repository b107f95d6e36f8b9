//! The kernel capture filter built from an instance's watch list.
//!
//! `(BASE and (host A or net B/24 or host 2001:db8::1)) or (vlan and BASE and (...))`:
//! the base filter (go-metro's `-f`, default `tcp`) restricted to the watched addresses and
//! blocks, once for untagged frames and once behind one 802.1Q tag. The `vlan` half is left
//! out on links without VLAN tags (`any`, tun, ...), where libpcap would refuse it.

use super::config::Cidr;

/// A filter that matches no packet (an instance whose names do not resolve yet).
pub const MATCH_NOTHING: &str = "less 1";

/// One primitive per block: `host A` or `net A/N`.
pub fn primitive(c: &Cidr) -> String {
    if c.is_host() {
        format!("host {}", c.addr)
    } else {
        format!("net {}/{}", c.addr, c.prefix)
    }
}

/// The filter for `blocks` on a base filter, with or without the VLAN half.
pub fn build(base: &str, blocks: &[Cidr], vlan: bool) -> String {
    if blocks.is_empty() {
        return MATCH_NOTHING.to_string();
    }
    let hosts = blocks
        .iter()
        .map(primitive)
        .collect::<Vec<_>>()
        .join(" or ");
    let base = base.trim();
    let base = if base.is_empty() { "tcp" } else { base };
    if vlan {
        format!("(({base}) and ({hosts})) or (vlan and ({base}) and ({hosts}))")
    } else {
        format!("({base}) and ({hosts})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(s: &str) -> Cidr {
        Cidr::parse(s).unwrap().0
    }

    #[test]
    fn shapes() {
        let blocks = [
            c("10.0.0.1"),
            c("10.1.0.0/24"),
            c("2001:db8::1"),
            c("fd00::/8"),
        ];
        assert_eq!(
            build("tcp", &blocks, false),
            "(tcp) and (host 10.0.0.1 or net 10.1.0.0/24 or host 2001:db8::1 or net fd00::/8)"
        );
        assert_eq!(
            build("tcp", &blocks[..2], true),
            "((tcp) and (host 10.0.0.1 or net 10.1.0.0/24)) or \
             (vlan and (tcp) and (host 10.0.0.1 or net 10.1.0.0/24))"
        );
        assert_eq!(build("tcp port 443", &[], true), MATCH_NOTHING);
    }

    #[test]
    fn libpcap_compiles_them() {
        let blocks = [
            c("10.0.0.1"),
            c("10.1.0.0/24"),
            c("2001:db8::1"),
            c("fd00::/8"),
        ];
        let dead = pcap::Capture::dead(pcap::Linktype::ETHERNET).unwrap();
        for f in [
            build("tcp", &blocks, true),
            build("tcp and not port 22", &blocks, true),
            build("tcp", &blocks, false),
            MATCH_NOTHING.to_string(),
        ] {
            let p = dead
                .compile(&f, true)
                .unwrap_or_else(|e| panic!("{f}: {e}"));
            assert!(!p.get_instructions().is_empty());
        }
        let sll = pcap::Capture::dead(pcap::Linktype::LINUX_SLL).unwrap();
        sll.compile(&build("tcp", &blocks, false), true).unwrap();
    }
}
