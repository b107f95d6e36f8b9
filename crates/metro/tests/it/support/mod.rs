//! What the test groups share: running `metro run` and reading what it sends ([`agent`]),
//! network namespaces and the delay line ([`netns`]), hand-made frames ([`frames`]), the
//! shared corpus ([`corpus`]), a pod laid out as the kubelet does ([`pod`]).

pub mod agent;
pub mod corpus;
pub mod frames;
pub mod netns;
pub mod pod;
