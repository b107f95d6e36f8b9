//! metro's benchmark suite: generated captures (cached by configuration), the read floor,
//! each stage of the pipeline alone, `metro analyze` end to end, and peak memory of child
//! runs. The `throughput` bench (`cargo bench -p metro-bench`) drives it; the pieces are a
//! library so that tests can reuse them.
//!
//! Every stage reads the same file, which the floor has just pulled into the page cache, so
//! ratios to the floor measured in the same run stay meaningful as machines drift.

use std::ffi::OsString;
use std::fs::File;
use std::hint::black_box;
use std::io::{self, BufWriter, Read};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use metro::pcap::CaptureReader;
use metro::replay::{ToDriver, replay};
use metro_core::config::EngineConfig;
use metro_core::driver::Driver;
use metro_core::sample::Sample;
use metro_core::wire;
use metro_core::{Nanos, Segment};
use metro_testkit::generator::{GenConfig, write_capture};

/// The workspace's target directory (`CARGO_TARGET_DIR` or `<workspace>/target`).
pub fn target_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(d);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

/// Returns the path of the capture for `cfg` under `dir`, generating it first unless a file
/// for the same configuration (and generator version) is already there.
pub fn ensure_capture(cfg: &GenConfig, dir: &Path) -> anyhow::Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let path = dir.join(format!("{}.pcap", cfg.cache_key()));
    if path.exists() {
        return Ok(path);
    }
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let started = Instant::now();
    let f = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    let summary = write_capture(cfg, BufWriter::with_capacity(1 << 20, f)).context("generating")?;
    std::fs::rename(&tmp, &path)?;
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "generated {} ({} packets, {} connections, {:.1} s of traffic) in {:.1} s: {:.2} M packets/s",
        path.display(),
        summary.packets,
        summary.connections,
        summary.duration_ns as f64 / 1e9,
        secs,
        summary.packets as f64 / secs / 1e6
    );
    Ok(path)
}

/// One measured stage.
#[derive(Clone, Debug)]
pub struct Measure {
    pub name: String,
    /// Best of the repetitions (least disturbed by the other tenants of the machine).
    pub best: Duration,
    /// Median of the repetitions.
    pub median: Duration,
    pub packets: u64,
    /// RTT samples produced (0 where the stage makes none).
    pub samples: u64,
    /// Peak resident set of the child process, KiB (child runs only).
    pub max_rss_kib: Option<u64>,
    /// User + system CPU time of the child (child runs only), best run.
    pub cpu: Option<Duration>,
}

impl Measure {
    pub fn ns_per_packet(&self) -> f64 {
        self.best.as_secs_f64() * 1e9 / self.packets.max(1) as f64
    }
    pub fn mpps(&self) -> f64 {
        self.packets as f64 / self.best.as_secs_f64() / 1e6
    }
}

/// What one run of a stage returns: packets seen, samples produced, and for child
/// processes their peak RSS and CPU time.
#[derive(Clone, Copy, Debug, Default)]
pub struct RunOut {
    pub packets: u64,
    pub samples: u64,
    pub max_rss_kib: Option<u64>,
    pub cpu: Option<Duration>,
    /// Time to subtract (engine alone: only the engine's share is timed by the stage itself).
    pub timed: Option<Duration>,
}

/// Runs `f` `repeat` times and keeps the best and median wall times.
pub fn measure(
    name: &str,
    repeat: usize,
    mut f: impl FnMut() -> anyhow::Result<RunOut>,
) -> anyhow::Result<Measure> {
    let mut times = Vec::new();
    let mut last = RunOut::default();
    let mut best_cpu: Option<Duration> = None;
    let mut rss: Option<u64> = None;
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        let out = f()?;
        let wall = out.timed.unwrap_or_else(|| t.elapsed());
        times.push(wall);
        if let Some(c) = out.cpu {
            best_cpu = Some(best_cpu.map_or(c, |b| b.min(c)));
        }
        if let Some(r) = out.max_rss_kib {
            rss = Some(rss.map_or(r, |m| m.max(r)));
        }
        last = out;
    }
    times.sort();
    Ok(Measure {
        name: name.to_string(),
        best: times[0],
        median: times[times.len() / 2],
        packets: last.packets,
        samples: last.samples,
        max_rss_kib: rss,
        cpu: best_cpu,
    })
}

/// The floor: read the file with large `read(2)` calls and walk the pcap record headers,
/// touching each record (its length and first byte). Nothing metro does can be cheaper.
pub fn floor(path: &Path) -> anyhow::Result<RunOut> {
    let mut f = File::open(path)?;
    let mut buf = vec![0u8; 1 << 20];
    let (mut start, mut end) = (0usize, 0usize);
    let mut header_done = false;
    let mut packets = 0u64;
    let mut sum = 0u64;
    loop {
        // Compact and refill when fewer than a record header (or the record) remain.
        let avail = end - start;
        let need = if !header_done {
            24
        } else if avail >= 16 {
            16 + u32::from_le_bytes(buf[start + 8..start + 12].try_into().unwrap()) as usize
        } else {
            16
        };
        if avail < need {
            buf.copy_within(start..end, 0);
            end = avail;
            start = 0;
            if need > buf.len() {
                buf.resize(need, 0);
            }
            let n = f.read(&mut buf[end..])?;
            if n == 0 {
                break;
            }
            end += n;
            continue;
        }
        if !header_done {
            let magic = u32::from_le_bytes(buf[0..4].try_into().unwrap());
            if magic != 0xa1b2_c3d4 && magic != 0xa1b2_3c4d {
                bail!("{}: not a little-endian pcap", path.display());
            }
            header_done = true;
            start += 24;
            continue;
        }
        let caplen = need - 16;
        sum = sum.wrapping_add(caplen as u64 + u64::from(buf[start + 16]));
        packets += 1;
        start += need;
    }
    black_box(sum);
    Ok(RunOut {
        packets,
        ..RunOut::default()
    })
}

/// metro's own reader alone: every record, touching its header.
pub fn reader(path: &Path) -> anyhow::Result<RunOut> {
    let mut r = CaptureReader::open(path)?;
    let mut packets = 0u64;
    let mut sum = 0u64;
    while let Some(rec) = r.next_record()? {
        sum = sum.wrapping_add(
            u64::from(rec.caplen) + u64::from(rec.data.first().copied().unwrap_or(0)),
        );
        packets += 1;
    }
    black_box(sum);
    Ok(RunOut {
        packets,
        ..RunOut::default()
    })
}

/// Reader plus decode.
pub fn decode(path: &Path) -> anyhow::Result<RunOut> {
    let mut r = CaptureReader::open(path)?;
    let mut packets = 0u64;
    let mut sum = 0u64;
    while let Some(rec) = r.next_record()? {
        if let Ok(p) = wire::decode(rec.linktype, rec.data) {
            sum = sum.wrapping_add(u64::from(p.tcp.seq) ^ u64::from(p.payload_len));
        }
        packets += 1;
    }
    black_box(sum);
    Ok(RunOut {
        packets,
        ..RunOut::default()
    })
}

/// Reader, decode and engine (samples counted, not aggregated): `metro analyze`'s replay
/// loop, into a counter instead of the per-responder statistics.
pub fn pipeline(path: &Path) -> anyhow::Result<RunOut> {
    let mut r = CaptureReader::open(path)?;
    let mut samples = 0u64;
    let mut count = |_: &Sample| samples += 1;
    let done = replay(
        &mut r,
        &mut ToDriver {
            // As `metro analyze` replays: QUIC, DNS and ICMP beside TCP (the driver's).
            driver: Driver::new(EngineConfig::default()),
            out: &mut count,
        },
    );
    if let Some(e) = done.error {
        return Err(e.into());
    }
    Ok(RunOut {
        packets: done.records,
        samples,
        ..RunOut::default()
    })
}

/// A chunk of records copied out of the reader, so that packets can be decoded ahead and the
/// engine timed alone.
struct Chunk {
    data: Vec<u8>,
    recs: Vec<(Nanos, u32, usize, usize)>,
}

/// The engine alone: records are read and decoded a chunk at a time outside the timed
/// region; only `Engine::process` (and `tick`) over the decoded chunk is timed.
pub fn engine_alone(path: &Path) -> anyhow::Result<RunOut> {
    const CHUNK: usize = 1 << 18;
    let mut r = CaptureReader::open(path)?;
    let mut driver = Driver::new(EngineConfig::default());
    let mut samples = 0u64;
    let mut frame = 0u64;
    let mut timed = Duration::ZERO;
    let mut chunk = Chunk {
        data: Vec::with_capacity(CHUNK * 128),
        recs: Vec::with_capacity(CHUNK),
    };
    let mut decoded: Vec<(u64, Nanos, Segment)> = Vec::with_capacity(CHUNK);
    loop {
        chunk.data.clear();
        chunk.recs.clear();
        while chunk.recs.len() < CHUNK {
            let Some(rec) = r.next_record()? else { break };
            let at = chunk.data.len();
            chunk.data.extend_from_slice(rec.data);
            chunk.recs.push((rec.ts, rec.linktype, at, rec.data.len()));
        }
        if chunk.recs.is_empty() {
            break;
        }
        decoded.clear();
        for &(ts, lt, at, len) in &chunk.recs {
            frame += 1;
            if let Ok(seg) = Segment::decode(lt, &chunk.data[at..at + len]) {
                decoded.push((frame, ts, seg));
            }
        }
        let t = Instant::now();
        let mut count = |_: &Sample| samples += 1;
        for (f, ts, seg) in &decoded {
            driver.segment(*f, *ts, seg, &mut count);
        }
        timed += t.elapsed();
    }
    Ok(RunOut {
        packets: frame,
        samples,
        timed: Some(timed),
        ..RunOut::default()
    })
}

/// `metro analyze` through the library (aggregation included, no rendering, no process).
pub fn analyze_library(path: &Path) -> anyhow::Result<RunOut> {
    let report = metro::analyze::analyze_files(
        &[path.to_path_buf()],
        &EngineConfig::default(),
        false,
        None,
        false,
    )?;
    let samples = report.responders.iter().map(|r| r.stats.count()).sum();
    let packets = report.files.iter().map(|f| f.records).sum();
    Ok(RunOut {
        packets,
        samples,
        ..RunOut::default()
    })
}

/// Set in the environment of a runner: see [`runner_main_if_requested`].
const RUNNER_ENV: &str = "METRO_BENCH_RUNNER";

/// Runs `argv` (standard output to /dev/null, standard error to `stderr` or inherited) and
/// returns its wall time, peak RSS and CPU time.
///
/// Linux charges a child's peak RSS with the peak of the process it was forked from (exec
/// records the old address space's high-water mark in the shared `signal->maxrss`), so a
/// child of this big benchmark process would report our own peak. The command is therefore
/// started by a runner: this same executable re-executed small (see
/// [`runner_main_if_requested`]), which forks the command and reports its `wait4` figures.
pub fn run_child(argv: &[OsString], packets: u64, stderr: Option<&Path>) -> anyhow::Result<RunOut> {
    let mut runner = Command::new(std::env::current_exe()?);
    runner.env(RUNNER_ENV, "1").args(argv).stdin(Stdio::null());
    if let Some(p) = stderr {
        runner.stderr(File::create(p)?);
    }
    let out = runner
        .output()
        .with_context(|| format!("running {argv:?}"))?;
    if !out.status.success() {
        bail!("{argv:?} failed ({})", out.status);
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    let [wall_ns, rss_kib, cpu_ns] = v[..] else {
        bail!("runner said {text:?}")
    };
    Ok(RunOut {
        packets,
        max_rss_kib: Some(rss_kib),
        cpu: Some(Duration::from_nanos(cpu_ns)),
        timed: Some(Duration::from_nanos(wall_ns)),
        ..RunOut::default()
    })
}

/// Call first in `main` of any program that uses [`run_child`]: in a runner, runs the
/// command given as arguments, prints "wall_ns max_rss_kib cpu_ns" and exits.
pub fn runner_main_if_requested() {
    if std::env::var_os(RUNNER_ENV).is_none() {
        return;
    }
    let argv: Vec<OsString> = std::env::args_os().skip(1).collect();
    match run_and_wait(&argv) {
        Ok((wall, rss, cpu)) => {
            println!("{} {rss} {}", wall.as_nanos(), cpu.as_nanos());
            std::process::exit(0);
        }
        Err(e) => {
            eprintln!("runner: {e:#}");
            std::process::exit(1);
        }
    }
}

fn run_and_wait(argv: &[OsString]) -> anyhow::Result<(Duration, u64, Duration)> {
    let (prog, args) = argv.split_first().context("no command")?;
    let started = Instant::now();
    let child = Command::new(prog)
        .args(args)
        .env_remove(RUNNER_ENV)
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("running {argv:?}"))?;
    let pid = child.id() as libc::pid_t;
    let mut status: libc::c_int = 0;
    // SAFETY: rusage is plain old data, zero is a valid value; wait4 fills it for our child.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: pid is our own child, not reaped yet (std's Child is dropped without waiting).
    let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut ru) };
    let wall = started.elapsed();
    if rc != pid {
        bail!("wait4: {}", io::Error::last_os_error());
    }
    drop(child);
    if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
        bail!("{argv:?} failed (wait status {status:#x})");
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    Ok((wall, ru.ru_maxrss as u64, tv(ru.ru_utime) + tv(ru.ru_stime)))
}

/// "AMD EPYC 7B13" or whatever /proc/cpuinfo says.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into())
}

pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
