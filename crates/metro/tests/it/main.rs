//! metro's integration tests: one test binary (`cargo test -p metro --test it`), one module
//! a file, the helpers they share in `support/`. One binary links metro's test support once
//! and runs every group in one process, in parallel (as ripgrep's `tests/` does).
//!
//! Run one group: `cargo test -p metro --test it agent_fleet::` (a module name is the
//! file's name); one test: `cargo test -p metro --test it agent_fleet::two_agents`.
//!
//! A new file `tests/it/NAME.rs`: add `mod NAME;` below, and in it
//! `use crate::support::{agent, netns};` for the helpers it needs.

mod support;

mod accuracy;
mod agent_cli;
mod agent_containers;
mod agent_ebpf;
mod agent_fleet;
mod agent_hostile;
mod agent_http;
mod agent_netns;
mod agent_proto;
mod agent_samples;
mod agent_watchlist;
mod analyze_cli;
mod containers_many_addresses;
mod corpus;
mod engine_tags;
mod gen_capture;
mod layers;
mod operate;
mod parallel;
mod pcap_read;
mod plot;
mod proto;
mod proto_netns;
mod scenarios;
mod ts_method;
mod under_attack;
