//! metro's benchmark suite in one command:
//!
//! ```text
//! cargo bench -p metro-bench --bench throughput            # 10M packets, 100k connections
//! cargo bench -p metro-bench --bench throughput -- --quick # 1M packets, 10k connections
//! ```
//!
//! Generates (or reuses, under target/bench-data) the capture, measures in one run the floor
//! (read the file and touch every record), metro's reader, reader + decode, the engine alone,
//! reader + decode + engine, `analyze` through the library, and the `metro analyze` binary
//! on one core and on all cores; then the peak RSS of `metro analyze` for a million
//! concurrent connections and for 10M vs 50M packets of the same mix. Prints a table and
//! writes it as Markdown to target/bench-data/results.md.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use metro_bench::{
    Measure, RunOut, analyze_library, cores, cpu_model, decode, engine_alone, ensure_capture,
    floor, measure, pipeline, reader, run_child, runner_main_if_requested, target_dir,
};
use metro_testkit::generator::GenConfig;

struct Opts {
    quick: bool,
    seed: u64,
    packets: u64,
    connections: u32,
    repeat: usize,
    memory: bool,
    throughput: bool,
    data: PathBuf,
    metro: PathBuf,
}

fn parse() -> anyhow::Result<Opts> {
    let mut o = Opts {
        quick: false,
        seed: 1,
        packets: 10_000_000,
        connections: 100_000,
        repeat: 3,
        memory: true,
        throughput: true,
        data: target_dir().join("bench-data"),
        metro: target_dir().join("release/metro"),
    };
    let mut args = std::env::args().skip(1);
    let mut packets = None;
    let mut connections = None;
    while let Some(a) = args.next() {
        let mut val = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match a.as_str() {
            "--bench" => {} // cargo bench passes it
            "--quick" => o.quick = true,
            "--seed" => o.seed = val("--seed")?.parse()?,
            "--packets" => packets = Some(val("--packets")?.parse()?),
            "--connections" => connections = Some(val("--connections")?.parse()?),
            "--repeat" => o.repeat = val("--repeat")?.parse()?,
            "--no-memory" => o.memory = false,
            "--memory-only" => o.throughput = false,
            "--data" => o.data = val("--data")?.into(),
            "--metro" => o.metro = val("--metro")?.into(),
            "-h" | "--help" => {
                println!(
                    "usage: cargo bench -p metro-bench --bench throughput -- [--quick] [--seed N] \
                     [--packets N] [--connections N] [--repeat N] [--no-memory] [--memory-only] [--data DIR] [--metro BIN]"
                );
                std::process::exit(0);
            }
            other if other.starts_with('-') => bail!("unknown option {other}"),
            _ => {} // a cargo bench name filter: ignored
        }
    }
    if o.quick {
        o.packets = 1_000_000;
        o.connections = 10_000;
        o.repeat = o.repeat.min(2);
    }
    o.packets = packets.unwrap_or(o.packets);
    o.connections = connections.unwrap_or(o.connections);
    Ok(o)
}

/// Builds the release binary unless it is already up to date; cargo decides.
fn build_metro(o: &Opts) -> anyhow::Result<()> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "metro",
            "--bin",
            "metro",
        ])
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.."))
        .status()
        .context("running cargo build")?;
    if !status.success() || !o.metro.exists() {
        bail!(
            "could not build {} (cargo build --release -p metro)",
            o.metro.display()
        );
    }
    Ok(())
}

/// `metro analyze --quiet FILE`, pinned to core 0 with `taskset` if `one_core`.
fn analyze_argv(o: &Opts, file: &Path, one_core: bool) -> Vec<OsString> {
    let mut v: Vec<OsString> = Vec::new();
    if one_core {
        v.extend(["taskset".into(), "-c".into(), "0".into()]);
    }
    v.extend([
        o.metro.clone().into_os_string(),
        "analyze".into(),
        "--quiet".into(),
        file.into(),
    ]);
    v
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn main() -> anyhow::Result<()> {
    runner_main_if_requested();
    let o = parse()?;
    let started = Instant::now();
    let cfg = GenConfig {
        seed: o.seed,
        packets: o.packets,
        connections: o.connections,
        ..GenConfig::default()
    };
    let file = ensure_capture(&cfg, &o.data)?;
    let size = std::fs::metadata(&file)?.len();
    if let Err(e) = build_metro(&o) {
        eprintln!(
            "warning: {e:#}; the binary rows use {} as it is",
            o.metro.display()
        );
    }
    let have_bin = o.metro.exists();
    let have_taskset = Command::new("taskset").arg("--version").output().is_ok();

    let mut md = String::new();
    let head = format!(
        "{} packets, {} concurrent connections (seed {}), {:.0} MB pcap; {} x {}",
        o.packets,
        o.connections,
        o.seed,
        size as f64 / 1e6,
        cores(),
        cpu_model()
    );
    println!("{head}");
    writeln!(md, "{head}\n")?;

    if o.throughput {
        // Warm the page cache, then measure.
        floor(&file)?;
        let r = o.repeat;
        let mut rows: Vec<Measure> = vec![
            measure("floor: read(2) + touch each record", r, || floor(&file))?,
            measure("metro reader (CaptureReader)", r, || reader(&file))?,
            measure("reader + decode", r, || decode(&file))?,
            measure("engine alone (pre-decoded)", r, || engine_alone(&file))?,
            measure("reader + decode + engine", r, || pipeline(&file))?,
            measure("analyze (library, with aggregation)", r, || {
                analyze_library(&file)
            })?,
        ];
        if have_bin {
            if have_taskset {
                rows.push(measure("`metro analyze` binary, 1 core", r, || {
                    run_child(&analyze_argv(&o, &file, true), o.packets, None)
                })?);
            }
            rows.push(measure(
                &format!("`metro analyze` binary, {} cores", cores()),
                r,
                || run_child(&analyze_argv(&o, &file, false), o.packets, None),
            )?);
        }
        let floor_ns = rows[0].ns_per_packet();
        let line = format!(
            "| {:<38} | {:>8} | {:>8} | {:>9} | {:>7} | {:>9} | {:>8} |",
            "stage", "best s", "ns/pkt", "Mpkt/s", "x floor", "ns/sample", "RSS MiB"
        );
        println!("{line}");
        writeln!(md, "{line}\n|{}|", ["---"; 7].join("|"))?;
        for m in &rows {
            let per_sample = if m.samples > 0 {
                format!("{:.1}", m.best.as_secs_f64() * 1e9 / m.samples as f64)
            } else {
                "-".into()
            };
            let rss = m
                .max_rss_kib
                .map_or("-".into(), |k| format!("{:.0}", mib(k)));
            let line = format!(
                "| {:<38} | {:>8.3} | {:>8.1} | {:>9.2} | {:>7.2} | {:>9} | {:>8} |",
                m.name,
                m.best.as_secs_f64(),
                m.ns_per_packet(),
                m.mpps(),
                m.ns_per_packet() / floor_ns,
                per_sample,
                rss
            );
            println!("{line}");
            writeln!(md, "{line}")?;
        }
        let samples = rows.iter().map(|m| m.samples).max().unwrap_or(0);
        let note = format!(
            "\nsamples: {samples}; best of {r} runs (medians within {:.0}% of best); 1 core = `taskset -c 0`.",
            rows.iter()
                .map(|m| (m.median.as_secs_f64() / m.best.as_secs_f64() - 1.0) * 100.0)
                .fold(0.0, f64::max)
        );
        println!("{note}");
        writeln!(md, "{note}")?;
        let one = rows.iter().find(|m| m.name.contains("1 core"));
        let all = rows.iter().find(|m| m.name.contains("cores"));
        if let (Some(one), Some(all)) = (one, all) {
            let line = format!(
                "all cores vs 1 core: {:.2}x; CPU per million packets: {:.3} s (1 core), {:.3} s (all)",
                one.best.as_secs_f64() / all.best.as_secs_f64(),
                one.cpu.unwrap_or_default().as_secs_f64() * 1e6 / one.packets as f64,
                all.cpu.unwrap_or_default().as_secs_f64() * 1e6 / all.packets as f64
            );
            println!("{line}");
            writeln!(md, "{line}")?;
        }
    }
    if o.memory && have_bin {
        println!("\npeak RSS of `metro analyze` (one run each):");
        writeln!(
            md,
            "\n| capture | packets | connections | peak RSS MiB | s |\n|---|---|---|---|---|"
        )?;
        // A million connections, all opened (handshake) within the first second and kept
        // open: about 28 packets each before the last one has made its first exchange.
        let (conns_1m, packets_1m) = if o.quick {
            (100_000, 3_000_000)
        } else {
            (1_000_000, 30_000_000)
        };
        let big = 5;
        let cases = [
            (
                "1M concurrent, no churn",
                GenConfig {
                    packets: packets_1m,
                    connections: conns_1m,
                    churn: false,
                    midstream: 0.0,
                    ..cfg.clone()
                },
            ),
            ("main mix", cfg.clone()),
            (
                "main mix, 5x longer",
                GenConfig {
                    packets: o.packets * big,
                    ..cfg.clone()
                },
            ),
            (
                "main mix, no churn",
                GenConfig {
                    churn: false,
                    ..cfg.clone()
                },
            ),
            (
                "main mix, no churn, 5x longer",
                GenConfig {
                    packets: o.packets * big,
                    churn: false,
                    ..cfg.clone()
                },
            ),
        ];
        for (name, c) in cases {
            let f = ensure_capture(&c, &o.data)?;
            // Not quiet: the closing summary (on stderr, kept in a file) says how many
            // connections metro saw.
            let log = o.data.join("last-analyze-stderr.txt");
            let argv = [
                o.metro.clone().into_os_string(),
                "analyze".into(),
                f.clone().into_os_string(),
            ];
            let m = measure(name, 1, || run_child(&argv, c.packets, Some(&log)))?;
            let seen = std::fs::read_to_string(&log)
                .ok()
                .and_then(|t| {
                    let l = t.lines().find(|l| l.starts_with("summary:"))?;
                    let w: Vec<&str> = l.split_whitespace().collect();
                    let i = w.iter().position(|x| x.starts_with("connections"))?;
                    Some(w[i - 1].to_string())
                })
                .unwrap_or_else(|| "?".into());
            let line = format!(
                "| {name} | {} | {} | {seen} | {:.0} | {:.1} |",
                c.packets,
                c.connections,
                mib(m.max_rss_kib.unwrap_or(0)),
                m.best.as_secs_f64()
            );
            println!("{line}");
            writeln!(md, "{line}")?;
        }
    } else if !have_bin {
        println!("(no {}: binary and memory rows skipped)", o.metro.display());
    }
    let out = o.data.join("results.md");
    std::fs::write(&out, &md)?;
    println!(
        "\n(written to {}; {:.0} s in all)",
        out.display(),
        started.elapsed().as_secs_f64()
    );
    let _ = RunOut::default();
    Ok(())
}
