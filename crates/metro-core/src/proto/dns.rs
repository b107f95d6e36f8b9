//! DNS over UDP and TCP on any port: a query to its response.
//!
//! A message is read as a query only when its header and question are well formed (one
//! question, QR 0, opcode QUERY, no answers or authority records, RCODE 0, a name of labels
//! inside the message, a class that exists); as a response only when it matches a pending
//! query: the same addresses and ports (reversed), the same ID and the same question (name
//! bytes, type and class). So other traffic that happens to look like a query only costs a
//! table entry until it times out; nothing becomes a sample unless both sides look like DNS
//! and agree. The first of repeated queries is kept (tshark's `dns.time` counts from it).

use std::net::SocketAddr;

use super::{Cx, Inserted, Pending, is_group};
use crate::Nanos;
use crate::sample::{Kind, Observer};

/// The smallest message with a question: the 12-byte header, the root name, type and class.
pub const MIN_MESSAGE: usize = 12 + 1 + 4;

/// A DNS header and question, read from the start of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    pub rcode: u8,
    /// A hash of the question (name bytes as sent, type, class).
    pub question: u64,
}

/// The header and question of `m`, when they are well formed. Never panics.
pub fn parse(m: &[u8]) -> Option<Message> {
    let (h, rest) = m.split_first_chunk::<12>()?;
    let be = |i: usize| u16::from_be_bytes([h[i], h[i + 1]]);
    let flags = be(2);
    let response = flags & 0x8000 != 0;
    let opcode = (flags >> 11) & 0xf;
    let rcode = (flags & 0xf) as u8;
    // Z (bit 6) must be zero (RFC 1035; the AD and CD bits beside it are DNSSEC's).
    if opcode != 0 || flags & 0x0040 != 0 || be(4) != 1 {
        return None;
    }
    if !response && (rcode != 0 || be(6) != 0 || be(8) != 0 || be(10) > 2) {
        return None;
    }
    // The name: labels of 1 to 63 bytes, at most 255 bytes in all, ending with the root.
    // A compression pointer cannot appear in the first question (nothing precedes it).
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    let mut mix = |b: u8| hash = (hash ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
    let mut i = 0;
    loop {
        let len = usize::from(*rest.get(i)?);
        if len == 0 {
            break;
        }
        if len > 63 || i + 1 + len > 254 {
            return None;
        }
        for &b in rest.get(i..i + 1 + len)? {
            mix(b);
        }
        i += 1 + len;
    }
    let tail = rest.get(i + 1..i + 5)?;
    let (qtype, qclass) = (
        u16::from_be_bytes([tail[0], tail[1]]),
        // mDNS's top bit asks for a unicast response.
        u16::from_be_bytes([tail[2], tail[3]]) & 0x7fff,
    );
    if qtype == 0 || !matches!(qclass, 1 | 3 | 4 | 254 | 255) {
        return None;
    }
    for &b in tail {
        mix(b);
    }
    mix(0);
    Some(Message {
        id: be(0),
        response,
        rcode,
        question: hash,
    })
}

/// (client, server, ID): a query awaiting its response.
type Key = (SocketAddr, SocketAddr, u16);

pub(crate) struct Dns {
    pub(super) pending: Pending<Key, u64>,
}

impl Dns {
    pub fn new(cap: usize) -> Dns {
        Dns {
            pending: Pending::new(cap),
        }
    }

    /// One UDP payload; true when it was DNS (a query taken or a response matched), so no
    /// other matcher needs to look at it.
    #[allow(clippy::too_many_arguments)]
    pub fn message(
        &mut self,
        cx: &mut Cx<'_>,
        frame: u64,
        ts: Nanos,
        src: SocketAddr,
        dst: SocketAddr,
        m: &[u8],
        obs: &mut dyn Observer,
    ) -> bool {
        let Some(msg) = parse(m) else {
            return false;
        };
        if msg.response {
            let key = (dst, src, msg.id);
            match self.pending.take_if(&key, |q| *q == msg.question) {
                Some((qts, qframe, _)) => {
                    cx.counters.dns_rcodes[usize::from(msg.rcode)] += 1;
                    cx.emit(obs, Kind::Dns, (qts, qframe), frame, ts, src, dst);
                    true
                }
                None => {
                    cx.counters.dns_unmatched += 1;
                    false
                }
            }
        } else {
            if is_group(dst.ip()) {
                // Multicast DNS and broadcasts: answered from other addresses.
                return false;
            }
            match self
                .pending
                .insert((src, dst, msg.id), ts, frame, msg.question)
            {
                Inserted::New => {}
                Inserted::Repeated => cx.counters.dns_repeated += 1,
                Inserted::Evicted => cx.counters.dns_evicted += 1,
            }
            true
        }
    }

    /// One TCP segment's payload: the messages that start in it, each after its two-byte
    /// length (a message cut by the segment's end is read as far as its question).
    #[allow(clippy::too_many_arguments)]
    pub fn tcp(
        &mut self,
        cx: &mut Cx<'_>,
        frame: u64,
        ts: Nanos,
        src: SocketAddr,
        dst: SocketAddr,
        mut p: &[u8],
        obs: &mut dyn Observer,
    ) {
        while let [a, b, ref rest @ ..] = *p {
            let len = usize::from(u16::from_be_bytes([a, b]));
            if len < MIN_MESSAGE || rest.len() < MIN_MESSAGE {
                return;
            }
            let m = rest.get(..len).unwrap_or(rest);
            if !self.message(cx, frame, ts, src, dst, m, obs) {
                return;
            }
            p = rest.get(len..).unwrap_or_default();
        }
    }

    pub fn expire(&mut self, now: Nanos, cfg: &super::ProtoConfig, c: &mut super::ProtoCounters) {
        c.dns_timeouts += self.pending.expire(now, cfg.dns_timeout);
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

    /// example.com A IN, ID 0x1234, RD.
    #[rustfmt::skip]
    const QUERY: [u8; 29] = [
        0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0,
        7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0,
        0, 1, 0, 1,
    ];

    fn response(rcode: u8) -> Vec<u8> {
        let mut r = QUERY.to_vec();
        r[2] = 0x81;
        r[3] = 0x80 | rcode;
        r
    }

    #[test]
    fn parses_queries_and_responses() {
        let q = parse(&QUERY).unwrap();
        assert_eq!((q.id, q.response, q.rcode), (0x1234, false, 0));
        let r = parse(&response(3)).unwrap();
        assert_eq!((r.id, r.response, r.rcode), (0x1234, true, 3));
        assert_eq!(q.question, r.question);
        let mut other = QUERY;
        other[13] = b'X';
        assert_ne!(parse(&other).unwrap().question, q.question);
    }

    #[test]
    fn refuses_what_is_not_a_query() {
        // Truncated anywhere.
        for n in 0..QUERY.len() {
            assert!(parse(&QUERY[..n]).is_none(), "{n}");
        }
        let bad = |at: usize, v: u8| {
            let mut m = QUERY;
            m[at] = v;
            parse(&m)
        };
        assert!(bad(5, 2).is_none(), "two questions");
        assert!(bad(7, 1).is_none(), "a query with an answer");
        assert!(bad(2, 0x29).is_none(), "opcode 5 (UPDATE)");
        assert!(bad(3, 0x40).is_none(), "Z bit");
        assert!(bad(12, 64).is_none(), "label over 63");
        assert!(bad(12, 0xc0).is_none(), "a pointer in the first question");
        assert!(bad(28, 9).is_none(), "class 9");
        assert!(bad(26, 0).is_none() || bad(25, 0).is_none(), "type 0");
        // A name running past the message.
        assert!(parse(&[&QUERY[..12], &[5, b'a']].concat()).is_none());
    }

    fn run(msgs: &[(Nanos, bool, Vec<u8>)]) -> (Vec<Sample>, ProtoCounters) {
        let cfg = ProtoConfig::default();
        let mut counters = ProtoCounters::default();
        let mut dns = Dns::new(4);
        let mut out = Vec::new();
        let c: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let s: SocketAddr = "10.0.0.53:5353".parse().unwrap();
        for (i, (ts, from_client, m)) in msgs.iter().enumerate() {
            let mut cx = Cx {
                cfg: &cfg,
                counters: &mut counters,
                kinds: KindSet::ALL,
            };
            let (src, dst) = if *from_client { (c, s) } else { (s, c) };
            let mut obs = |x: &Sample| out.push(*x);
            dns.message(&mut cx, i as u64 + 1, *ts, src, dst, m, &mut obs);
        }
        (out, counters)
    }

    #[test]
    fn a_response_matching_the_query_is_a_sample() {
        let (s, c) = run(&[
            (1_000, true, QUERY.to_vec()),
            (1_500, true, QUERY.to_vec()),
            (9_000, false, response(3)),
            (9_500, false, response(3)),
        ]);
        assert_eq!(s.len(), 1);
        assert_eq!((s[0].frame, s[0].open_frame, s[0].rtt), (3, 1, 8_000));
        assert_eq!(s[0].responder.to_string(), "10.0.0.53:5353");
        assert_eq!(s[0].kind, Kind::Dns);
        assert_eq!(c.dns_rcodes[3], 1);
        assert_eq!((c.dns_repeated, c.dns_unmatched), (1, 1));
    }

    #[test]
    fn a_response_to_another_question_or_id_is_not() {
        let mut other_id = response(0);
        other_id[1] = 0x35;
        let mut other_q = response(0);
        other_q[13] = b'X';
        let (s, c) = run(&[
            (1_000, true, QUERY.to_vec()),
            (2_000, false, other_id),
            (3_000, false, other_q),
        ]);
        assert!(s.is_empty());
        assert_eq!(c.dns_unmatched, 2);
    }

    #[test]
    fn tcp_messages_after_their_length() {
        let cfg = ProtoConfig::default();
        let mut counters = ProtoCounters::default();
        let mut dns = Dns::new(16);
        let c: SocketAddr = "10.0.0.1:40000".parse().unwrap();
        let s: SocketAddr = "10.0.0.53:53".parse().unwrap();
        let framed = |m: &[u8]| [&(m.len() as u16).to_be_bytes()[..], m].concat();
        let mut q2 = QUERY;
        q2[1] = 0x35;
        let mut r2 = response(0);
        r2[1] = 0x35;
        let queries = [framed(&QUERY), framed(&q2)].concat();
        let responses = [framed(&response(0)), framed(&r2)].concat();
        let mut out = Vec::new();
        let mut obs = |x: &Sample| out.push(*x);
        let mut cx = Cx {
            cfg: &cfg,
            counters: &mut counters,
            kinds: KindSet::ALL,
        };
        dns.tcp(&mut cx, 1, 100, c, s, &queries, &mut obs);
        // A segment ending inside the second response: that one is read from the next.
        dns.tcp(&mut cx, 2, 350, s, c, &responses[..40], &mut obs);
        dns.tcp(&mut cx, 3, 400, s, c, &responses[31..], &mut obs);
        assert_eq!(out.len(), 2);
        assert_eq!((out[0].frame, out[0].rtt), (2, 250));
        assert_eq!((out[1].frame, out[1].rtt), (3, 300));
    }

    #[test]
    fn unanswered_queries_time_out_and_the_table_is_bounded() {
        let cfg = ProtoConfig::default();
        let mut counters = ProtoCounters::default();
        let mut dns = Dns::new(4);
        let mut obs = |_: &Sample| {};
        for i in 0..10u16 {
            let mut q = QUERY;
            q[..2].copy_from_slice(&i.to_be_bytes());
            let mut cx = Cx {
                cfg: &cfg,
                counters: &mut counters,
                kinds: KindSet::ALL,
            };
            let c: SocketAddr = "10.0.0.1:40000".parse().unwrap();
            let s: SocketAddr = "10.0.0.53:53".parse().unwrap();
            dns.message(&mut cx, 1, i64::from(i), c, s, &q, &mut obs);
        }
        assert_eq!(counters.dns_evicted, 6);
        dns.expire(cfg.dns_timeout + 7, &cfg, &mut counters);
        assert_eq!(counters.dns_timeouts, 2);
        assert_eq!(dns.drain(), 2);
    }
}
