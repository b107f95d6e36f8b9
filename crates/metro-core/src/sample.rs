//! What the engine reports: [`Sample`] and its [`Kind`], the [`Observer`] that hears of
//! samples, retransmissions and new connections, and [`NO_TAG`]. A leaf module: the
//! matchers in [`crate::rtt`], the limits in [`crate::config`] and the engine all use it,
//! and it uses none of them.

use std::net::{IpAddr, SocketAddr};

use crate::Nanos;

/// The kind of a sample (see shared/docs/rtt-methods.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Seq,
    Handshake,
    Ts,
    /// QUIC: the client's first Initial to the server's first answer, or the server's first
    /// Handshake packet to the client's next datagram ([`crate::proto::quic`]).
    QuicHandshake,
    /// QUIC: the time between two spin-bit edges of one direction ([`crate::proto::quic`]).
    QuicSpin,
    /// DNS: a query to its response ([`crate::proto::dns`]).
    Dns,
    /// ICMP or ICMPv6 echo: a request to its reply ([`crate::proto::icmp`]).
    Icmp,
}

impl Kind {
    /// How many kinds there are (the length of per-kind arrays).
    pub const COUNT: usize = 7;
    pub const ALL: [Kind; Kind::COUNT] = [
        Kind::Seq,
        Kind::Handshake,
        Kind::Ts,
        Kind::QuicHandshake,
        Kind::QuicSpin,
        Kind::Dns,
        Kind::Icmp,
    ];
    /// The kinds the TCP engine produces.
    pub const TCP: [Kind; 3] = [Kind::Seq, Kind::Handshake, Kind::Ts];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Seq => "seq",
            Kind::Handshake => "handshake",
            Kind::Ts => "ts",
            Kind::QuicHandshake => "quic_handshake",
            Kind::QuicSpin => "quic_spin",
            Kind::Dns => "dns",
            Kind::Icmp => "icmp",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        match s {
            "seq" => Some(Kind::Seq),
            "handshake" => Some(Kind::Handshake),
            "ts" => Some(Kind::Ts),
            "quic_handshake" => Some(Kind::QuicHandshake),
            "quic_spin" => Some(Kind::QuicSpin),
            "dns" => Some(Kind::Dns),
            "icmp" => Some(Kind::Icmp),
            _ => None,
        }
    }

    #[inline]
    pub fn index(self) -> usize {
        self as usize
    }

    /// The protocol the kind measures: `tcp`, `quic`, `dns` or `icmp`.
    pub fn protocol(self) -> &'static str {
        PROTOCOLS[usize::from(self.protocol_index())]
    }

    /// The protocol's position in [`PROTOCOLS`].
    #[inline]
    pub fn protocol_index(self) -> u8 {
        match self {
            Kind::Seq | Kind::Handshake | Kind::Ts => 0,
            Kind::QuicHandshake | Kind::QuicSpin => 1,
            Kind::Dns => 2,
            Kind::Icmp => 3,
        }
    }
}

/// The protocols samples come from, as [`Kind::protocol_index`] numbers them.
pub const PROTOCOLS: [&str; 4] = ["tcp", "quic", "dns", "icmp"];

/// A set of kinds, as a bitmask.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KindSet(pub u8);

impl KindSet {
    pub const ALL: KindSet = KindSet(0b111_1111);
    pub const NONE: KindSet = KindSet(0);

    #[inline]
    pub fn contains(self, k: Kind) -> bool {
        self.0 & (1 << k.index()) != 0
    }
    pub fn with(self, k: Kind) -> KindSet {
        KindSet(self.0 | (1 << k.index()))
    }
}

impl Default for KindSet {
    fn default() -> Self {
        KindSet::ALL
    }
}

/// A comma-separated list of kind names (`seq,handshake,ts`), as the command line takes it.
impl std::str::FromStr for KindSet {
    type Err = String;

    fn from_str(s: &str) -> Result<KindSet, String> {
        let mut set = KindSet::NONE;
        for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            match Kind::parse(part) {
                Some(k) => set = set.with(k),
                None => {
                    return Err(format!(
                        "unknown kind `{part}`: expected a comma-separated list of seq, handshake, ts, quic_handshake, quic_spin, dns, icmp"
                    ));
                }
            }
        }
        if set == KindSet::NONE {
            return Err(
                "no kind given: use seq, handshake, ts, quic_handshake, quic_spin, dns and/or icmp"
                    .into(),
            );
        }
        Ok(set)
    }
}

/// One RTT sample: the time between `open_frame` passing the capture point towards the
/// responder and `frame` (the responder's answer) passing back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sample {
    pub kind: Kind,
    /// 1-based index of the closing packet (its source is the responder).
    pub frame: u64,
    /// 1-based index of the packet the sample was timed from.
    pub open_frame: u64,
    /// Time of the closing packet.
    pub ts: Nanos,
    /// The round-trip time, always > 0.
    pub rtt: Nanos,
    /// Source address and port of the closing packet.
    pub responder: SocketAddr,
    /// The other endpoint.
    pub peer: SocketAddr,
    /// The engine's id of the connection (stable for the life of the flow entry).
    pub flow_id: u64,
}

impl Sample {
    pub fn rtt_ms(&self) -> f64 {
        self.rtt as f64 / 1e6
    }
}

/// A sample as the TCP engine finds it, before its endpoints are made into [`SocketAddr`]s:
/// what [`Observer::found`] receives, cheap to build for each sample. An observer that
/// needs only the responder's address, the kind and the RTT (the usual aggregation) reads
/// them here; [`Self::sample`] makes the whole [`Sample`].
#[derive(Clone, Copy, Debug)]
pub struct Found<'a> {
    pub kind: Kind,
    /// The round-trip time, always > 0.
    pub rtt: Nanos,
    /// Time of the closing packet.
    pub ts: Nanos,
    /// 1-based index of the closing packet.
    pub frame: u64,
    /// 1-based index of the packet the sample was timed from.
    pub open_frame: u64,
    /// The engine's id of the connection.
    pub flow_id: u64,
    /// Source address of the closing packet (the responder) and its port.
    pub responder: &'a IpAddr,
    pub responder_port: u16,
    /// The other endpoint.
    pub peer: &'a IpAddr,
    pub peer_port: u16,
}

impl Found<'_> {
    /// The whole sample.
    #[inline]
    pub fn sample(&self) -> Sample {
        Sample {
            kind: self.kind,
            frame: self.frame,
            open_frame: self.open_frame,
            ts: self.ts,
            rtt: self.rtt,
            responder: SocketAddr::new(*self.responder, self.responder_port),
            peer: SocketAddr::new(*self.peer, self.peer_port),
            flow_id: self.flow_id,
        }
    }
}

/// The initial value of the tag passed to [`Observer::sample_tagged`].
pub const NO_TAG: u32 = u32::MAX;

/// What the engine tells its caller, besides counters.
pub trait Observer {
    /// A new RTT sample.
    fn sample(&mut self, s: &Sample);
    /// A new RTT sample, with a word of storage that lives in the connection, one per
    /// responder (direction): the observer may keep where it aggregates this responder there
    /// (for example an index) and find it without a lookup on the next sample. It starts as
    /// [`NO_TAG`] and is only a hint: an observer must check what it finds (a connection may
    /// be shared between observers, e.g. across files). The default ignores it.
    #[inline]
    fn sample_tagged(&mut self, s: &Sample, _tag: &mut u32) {
        self.sample(s)
    }
    /// A new RTT sample from the TCP engine, as it finds it (see [`Found`]), with the tag of
    /// [`Self::sample_tagged`]. The default makes the whole sample and passes it there; an
    /// observer that aggregates without the endpoints' ports overrides it to skip that.
    #[inline]
    fn found(&mut self, f: Found<'_>, tag: &mut u32) {
        self.sample_tagged(&f.sample(), tag)
    }
    /// `sender` retransmitted data to `receiver` (a segment starting below the highest byte
    /// already sent, that was not a duplicate capture of the same frame).
    fn retransmit(&mut self, _sender: SocketAddr, _receiver: SocketAddr, _ts: Nanos) {}
    /// The engine started tracking a connection with id `id` (the `flow_id` of its samples)
    /// at record number `frame`: a packet with a new address and port pair, or a SYN that
    /// starts a new connection on ports already tracked. At most one per packet, before that
    /// packet's samples; ids increase by one from 1 in the order of these calls.
    fn flow_started(&mut self, _id: u64, _frame: u64) {}
}

impl<F: FnMut(&Sample)> Observer for F {
    fn sample(&mut self, s: &Sample) {
        self(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_lists_parse_and_name_what_is_wrong() {
        assert_eq!("seq".parse::<KindSet>(), Ok(KindSet::NONE.with(Kind::Seq)));
        assert_eq!(" ts , handshake,".parse::<KindSet>(), Ok(KindSet(0b110)));
        assert_eq!("seq,handshake,ts".parse::<KindSet>(), Ok(KindSet(0b111)));
        assert_eq!(
            "seq,handshake,ts,quic_handshake,quic_spin,dns,icmp".parse::<KindSet>(),
            Ok(KindSet::ALL)
        );
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()), Some(k));
        }
        let e = "seq,rtt".parse::<KindSet>().unwrap_err();
        assert!(e.contains("unknown kind `rtt`"), "{e}");
        let e = " , ".parse::<KindSet>().unwrap_err();
        assert!(e.contains("no kind given"), "{e}");
    }
}
