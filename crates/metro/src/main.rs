//! The `metro` command: thin. Parses arguments, dispatches, maps errors to exit codes.

use std::io;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use metro::analyze::AnalyzeArgs;

/// Passive TCP round-trip-time monitor.
///
/// metro times each packet a host sends against the TCP acknowledgement (or timestamp
/// echo) that answers it, and reports RTT per remote host. It never sends a probe.
#[derive(Parser, Debug)]
#[command(name = "metro", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure RTT in pcap/pcapng capture files (offline; the same engine as `run`).
    Analyze(AnalyzeArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Analyze(args) => metro::analyze::run(args),
    };
    match result {
        Ok(code) => ExitCode::from(code as u8),
        Err(e) => {
            // A closed pipe (`metro analyze --samples - f | head`) is not an error.
            if let Some(ioe) = e.downcast_ref::<io::Error>()
                && ioe.kind() == io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            eprintln!("metro: {e:#}");
            ExitCode::from(1)
        }
    }
}
