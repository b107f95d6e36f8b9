//! The `metro` command: thin. Parses arguments, dispatches, maps errors to exit codes.

use std::io;
use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

use metro::analyze::AnalyzeArgs;

/// Passive TCP round-trip-time monitor.
///
/// metro times each packet a host sends against the TCP acknowledgement (or timestamp
/// echo) that answers it, and reports RTT per remote host. It never sends a probe.
#[derive(Parser, Debug)]
// The version line carries the git commit and build date (crates/metro/build.rs).
#[command(
    name = "metro",
    version = env!("METRO_VERSION_LINE"),
    propagate_version = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure RTT in pcap/pcapng capture files (offline; the same engine as `run`).
    Analyze(AnalyzeArgs),
    /// Capture live traffic and report RTT to DogStatsD, Prometheus and OTLP (a drop-in go-metro
    /// replacement; `metro -cfg=PATH` is accepted too).
    Run(metro::agent::RunArgs),
    /// Check a configuration: print it with defaults filled in, and every warning.
    CheckConfig(metro::agent::CheckConfigArgs),
    /// Write a deterministic synthetic capture (for benchmarks and tests).
    Generate(metro::generate::GenArgs),
    /// Draw RTT over time, the RTT CDF and retransmissions as an SVG or PNG picture.
    Plot(metro::plot::PlotArgs),
    /// Write man pages and shell completions into a directory (for packagers).
    #[command(hide = true)]
    GenerateDocs(metro::docs::DocsArgs),
}

fn main() -> ExitCode {
    // go-metro's service files run `go-metro -cfg=PATH -log=PATH`: translate its flags.
    let cli = Cli::parse_from(metro::agent::translate_legacy_args(
        std::env::args_os().collect(),
    ));
    let result = match &cli.command {
        Command::Analyze(args) => metro::analyze::run(args),
        Command::Run(args) => metro::agent::run(args.clone()).map(|()| 0),
        Command::CheckConfig(args) => metro::agent::check_config(args.clone()).map(|()| 0),
        Command::Generate(args) => metro::generate::generate(args).map(|()| 0),
        Command::Plot(args) => metro::plot::run(args),
        Command::GenerateDocs(args) => metro::docs::generate(Cli::command(), &args.dir).map(|()| 0),
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
