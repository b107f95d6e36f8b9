//! The `metro` binary's library: the capture reader, the `analyze` command, the `generate`
//! command and the `run` agent. The engine itself lives in `metro-core`; the generator,
//! frame builder and pcap writers in `metro-testkit`.

pub mod agent;
pub mod analyze;
pub mod docs;
pub mod generate;
pub mod pcap;
pub mod plot;
pub mod replay;
