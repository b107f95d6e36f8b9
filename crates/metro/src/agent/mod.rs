//! `metro run`: the long-running agent that replaces go-metro.
pub mod config;
