//! `metro-gen`: the capture generator as a standalone binary, with the same options as
//! `metro generate` (for scripts that run before the subcommand exists, or without it).

use clap::Parser;
use metro::generate::{GenArgs, generate};

/// Write a deterministic synthetic TCP capture (pcap).
#[derive(Parser)]
#[command(name = "metro-gen", version)]
struct Cli {
    #[command(flatten)]
    args: GenArgs,
}

fn main() -> anyhow::Result<()> {
    generate(&Cli::parse().args)
}
