//! metro's test tooling, kept out of the agent's library: the frame builder ([`frame`]),
//! the capture writers ([`pcap`]), the deterministic traffic generator ([`generator`])
//! behind `metro generate`, the decoder's test vectors ([`vectors`]) and how a test that
//! needs root skips for other users ([`root`]). Tests,
//! benchmarks and the `metro generate` command use it; `metro analyze` and `metro run` do
//! not.

#![forbid(unsafe_code)]

pub mod frame;
pub mod generator;
pub mod pcap;
pub mod root;
pub mod vectors;
