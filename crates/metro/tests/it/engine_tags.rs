//! The per-connection observer tag (`Observer::sample_tagged`): one word per responder
//! direction of a connection, starting at `NO_TAG`, kept between that direction's samples,
//! separate for the other direction and for other connections, and reset when a new
//! connection reuses the ports.

use std::net::{Ipv4Addr, SocketAddr};

use metro_core::Segment;
use metro_core::config::EngineConfig;
use metro_core::engine::Engine;
use metro_core::sample::Sample;
use metro_core::sample::{NO_TAG, Observer};
use metro_core::wire::{self, linktype};
use metro_testkit::frame::{TcpFrame, flags::*};

const C: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const S: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

/// Records the tag each sample arrives with, then gives the responder a fresh number.
#[derive(Default)]
struct Tagger {
    seen: Vec<(u64, SocketAddr, u32)>,
    next: u32,
}

impl Observer for Tagger {
    fn sample(&mut self, _: &Sample) {
        panic!("the engine passes the connection's tag");
    }
    fn sample_tagged(&mut self, s: &Sample, tag: &mut u32) {
        self.seen.push((s.frame, s.responder, *tag));
        if *tag == NO_TAG {
            *tag = self.next;
            self.next += 1;
        }
    }
}

/// (time ms, from client?, client port, seq, ack, flags, payload length)
type Pkt = (i64, bool, u16, u32, u32, u16, usize);

fn run(pkts: &[Pkt]) -> Vec<(u64, SocketAddr, u32)> {
    let mut engine = Engine::new(EngineConfig::default());
    let mut obs = Tagger::default();
    for (i, &(t, from_client, cport, seq, ack, flags, len)) in pkts.iter().enumerate() {
        let f = if from_client {
            TcpFrame::v4(C, cport, S, 80)
        } else {
            TcpFrame::v4(S, 80, C, cport)
        };
        let bytes = f
            .ip_id(i as u16 + 1)
            .seq(seq)
            .ack(ack)
            .flags(flags)
            .payload_len(len)
            .to_vec();
        let p = wire::decode(linktype::ETHERNET, &bytes).expect("decodes");
        engine.process(i as u64 + 1, t * 1_000_000, &Segment::from(&p), &mut obs);
    }
    obs.seen
}

#[test]
fn tags_live_per_connection_and_direction() {
    let server = SocketAddr::new(S.into(), 80);
    let client = SocketAddr::new(C.into(), 1000);
    // The same server address on another connection: tags are per connection, not per address.
    let other = SocketAddr::new(S.into(), 80);
    let seen = run(&[
        (0, true, 1000, 100, 0, SYN, 0),
        (10, false, 1000, 500, 101, SYN | ACK, 0), // 2: handshake, server answers
        (20, true, 1000, 101, 501, ACK, 0),        // 3: handshake, client answers
        (30, true, 1000, 101, 501, ACK, 10),
        (40, false, 1000, 501, 111, ACK, 0), // 5: seq, server again
        (50, false, 1000, 501, 111, ACK, 20),
        (60, true, 1000, 111, 521, ACK, 0), // 7: seq, client again
        // A second connection from another client port: its own tags.
        (70, true, 2000, 900, 0, SYN, 0),
        (80, false, 2000, 300, 901, SYN | ACK, 0), // 9
        // The first connection goes on: its tags are still there.
        (90, true, 1000, 111, 521, ACK, 5),
        (100, false, 1000, 521, 116, ACK, 0), // 11
        // It is reset, and a new connection reuses the ports: fresh tags.
        (110, true, 1000, 116, 521, RST, 0),
        (120, true, 1000, 7000, 0, SYN, 0),
        (130, false, 1000, 8000, 7001, SYN | ACK, 0), // 14
    ]);
    assert_eq!(
        seen,
        vec![
            (2, server, NO_TAG),
            (3, client, NO_TAG),
            (5, server, 0),
            (7, client, 1),
            (9, other, NO_TAG),
            (11, server, 0),
            (14, server, NO_TAG),
        ]
    );
}
