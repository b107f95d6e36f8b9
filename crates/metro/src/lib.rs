//! The `metro` binary's library: capture files, frame building, the `analyze` command,
//! the capture generator and the `run` agent. The engine itself lives in `metro-core`.

pub mod agent;
pub mod analyze;
pub mod build;
pub mod docs;
pub mod r#gen;
pub mod pcap;
pub mod plot;
