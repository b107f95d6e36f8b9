//! ICMP (RFC 792) and ICMPv6 (RFC 4443) echo: a request to its reply, matched by the two
//! addresses, the identifier and the sequence number. The first of repeated requests is
//! kept (tshark's `icmp.resptime` counts from it); a reply that matches no request counts
//! as unmatched (a flood of replies costs nothing but the counter).

use std::net::{IpAddr, SocketAddr};

use super::{Cx, Inserted, Pending, is_group};
use crate::Nanos;
use crate::sample::{Kind, Observer};

/// (requester, target, identifier, sequence).
type Key = (IpAddr, IpAddr, u16, u16);

pub(crate) struct Icmp {
    pub(super) pending: Pending<Key, ()>,
}

/// An echo message: (is a reply, identifier, sequence), or `None`.
pub fn echo(v6: bool, m: &[u8]) -> Option<(bool, u16, u16)> {
    let [t, code, _, _, i0, i1, s0, s1, ..] = *m else {
        return None;
    };
    let reply = match (v6, t) {
        (false, 8) | (true, 128) => false,
        (false, 0) | (true, 129) => true,
        _ => return None,
    };
    (code == 0).then_some((
        reply,
        u16::from_be_bytes([i0, i1]),
        u16::from_be_bytes([s0, s1]),
    ))
}

impl Icmp {
    pub fn new(cap: usize) -> Icmp {
        Icmp {
            pending: Pending::new(cap),
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub fn message(
        &mut self,
        cx: &mut Cx<'_>,
        frame: u64,
        ts: Nanos,
        src: IpAddr,
        dst: IpAddr,
        m: &[u8],
        obs: &mut dyn Observer,
    ) {
        let Some((reply, id, seq)) = echo(src.is_ipv6(), m) else {
            return;
        };
        if reply {
            match self.pending.take_if(&(dst, src, id, seq), |_| true) {
                Some((rts, rframe, ())) => {
                    cx.emit(
                        obs,
                        Kind::Icmp,
                        (rts, rframe),
                        frame,
                        ts,
                        SocketAddr::new(src, 0),
                        SocketAddr::new(dst, 0),
                    );
                }
                None => cx.counters.icmp_unmatched += 1,
            }
        } else if !is_group(dst) {
            match self.pending.insert((src, dst, id, seq), ts, frame, ()) {
                Inserted::New => {}
                Inserted::Repeated => cx.counters.icmp_repeated += 1,
                Inserted::Evicted => cx.counters.icmp_evicted += 1,
            }
        }
    }

    pub fn expire(&mut self, now: Nanos, cfg: &super::ProtoConfig, c: &mut super::ProtoCounters) {
        c.icmp_timeouts += self.pending.expire(now, cfg.icmp_timeout);
    }

    pub fn drain(&mut self) -> u64 {
        self.pending.drain()
    }
}

#[cfg(test)]
mod tests {
    use super::super::{ProtoConfig, ProtoCounters};
    use super::*;
    use crate::sample::{KindSet, Sample};

    #[test]
    fn echo_types_by_family() {
        assert_eq!(
            echo(false, &[8, 0, 0xab, 0xcd, 0, 7, 1, 2]),
            Some((false, 7, 258))
        );
        assert_eq!(
            echo(false, &[0, 0, 0, 0, 0, 7, 1, 2, 9, 9]),
            Some((true, 7, 258))
        );
        assert_eq!(echo(true, &[128, 0, 0, 0, 0, 7, 0, 1]), Some((false, 7, 1)));
        assert_eq!(echo(true, &[129, 0, 0, 0, 0, 7, 0, 1]), Some((true, 7, 1)));
        // ICMPv4 numbers in ICMPv6 and back, another code, a unreachable, truncated.
        assert_eq!(echo(true, &[8, 0, 0, 0, 0, 7, 0, 1]), None);
        assert_eq!(echo(false, &[129, 0, 0, 0, 0, 7, 0, 1]), None);
        assert_eq!(echo(false, &[8, 1, 0, 0, 0, 7, 0, 1]), None);
        assert_eq!(echo(false, &[3, 3, 0, 0, 0, 0, 0, 0]), None);
        assert_eq!(echo(false, &[8, 0, 0, 0, 0, 7, 0]), None);
    }

    #[test]
    fn reply_to_request_by_addresses_id_and_sequence() {
        let cfg = ProtoConfig::default();
        let mut counters = ProtoCounters::default();
        let mut icmp = Icmp::new(8);
        let mut out = Vec::new();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        let c: IpAddr = "192.0.2.3".parse().unwrap();
        let msgs: [(Nanos, IpAddr, IpAddr, [u8; 8]); 6] = [
            (100, a, b, [8, 0, 0, 0, 0, 1, 0, 1]),
            (150, a, b, [8, 0, 0, 0, 0, 1, 0, 2]),
            (300, c, a, [0, 0, 0, 0, 0, 1, 0, 1]), // wrong responder
            (400, b, a, [0, 0, 0, 0, 0, 1, 0, 2]),
            (500, b, a, [0, 0, 0, 0, 0, 1, 0, 1]),
            (600, b, a, [0, 0, 0, 0, 0, 1, 0, 1]), // duplicate reply
        ];
        for (i, (ts, s, d, m)) in msgs.iter().enumerate() {
            let mut cx = Cx {
                cfg: &cfg,
                counters: &mut counters,
                kinds: KindSet::ALL,
            };
            let mut obs = |x: &Sample| out.push(*x);
            icmp.message(&mut cx, i as u64 + 1, *ts, *s, *d, m, &mut obs);
        }
        let got: Vec<_> = out.iter().map(|s| (s.frame, s.open_frame, s.rtt)).collect();
        assert_eq!(got, [(4, 2, 250), (5, 1, 400)]);
        assert_eq!(out[0].responder.ip(), b);
        assert_eq!(counters.icmp_unmatched, 2);
    }
}
