//! metro-core: the RTT engine. Bytes and packet timestamps go in; RTT samples and
//! per-responder snapshots come out. No I/O, no clock, no libpcap: the live agent and the
//! file analyzer share every line of logic here.
//!
//! Pipeline: [`wire::decode`] turns one captured frame into a borrowed [`wire::Packet`],
//! [`Segment::from`] keeps what the engine reads of it (a small owned [`Segment`];
//! [`Segment::decode`] does both, the common frame shape straight into the Segment);
//! [`engine::Engine::process`] looks up the connection in the [`flow`] table, runs the
//! [`rtt`] matchers and emits [`sample::Sample`]s; [`aggregate`] folds samples into sketches.

#![forbid(unsafe_code)]

pub mod aggregate;
pub mod config;
pub mod driver;
pub mod engine;
pub mod flow;
pub mod proto;
pub mod rtt;
pub mod sample;
pub mod segment;
pub mod seq;
pub mod wire;

pub use segment::Segment;

/// Packet time: nanoseconds since the Unix epoch, from the capture's timestamp.
pub type Nanos = i64;
