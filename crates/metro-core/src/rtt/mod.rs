//! The three matchers that produce RTT samples: `seq` (data acknowledged, with
//! Dart's ambiguity ranges), `handshake` (SYN and SYN/ACK acknowledged) and `ts` (RFC 7323
//! timestamp echo, pping's rules). What they report (`Sample`, `Observer`) is defined in
//! [`crate::sample`].

pub mod conn;
pub mod queue;
