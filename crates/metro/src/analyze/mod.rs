//! `metro analyze FILE...`: the engine over capture files. Reads each file record by record
//! (frame numbers count every record, as tshark's `frame.number`), decodes, runs the engine,
//! and folds samples into per-responder (and per-connection) statistics. One damaged file
//! never stops the others; the samples before the damage are kept.

mod output;
mod parallel;
mod progress;

use std::collections::{BTreeMap, HashMap};

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::net::{IpAddr, SocketAddr};
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use clap::{Args, ValueEnum};
use metro_core::Nanos;
use metro_core::Segment;
use metro_core::aggregate::{Numbering, Stats};
use metro_core::config::{Counters, EngineConfig};
use metro_core::driver::Driver;
use metro_core::proto::ProtoCounters;
use metro_core::sample::{Found, NO_TAG, Observer};
use metro_core::sample::{Kind, KindSet, Sample};
use metro_core::wire::DecodeError;

use crate::pcap::{CaptureReader, ReadError};
use crate::replay::{Frames, ToDriver, replay};

pub use output::{render_json, render_table, sample_line_tail};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned text tables.
    Table,
    /// One JSON document.
    Json,
}

/// Measure TCP round-trip times in capture files.
#[derive(Args, Debug, Clone)]
#[command(after_help = "\
Each sample is the time between a packet passing the capture point and the packet that proves
its receiver got it passing back: `seq` (data acknowledged, as tshark's tcp.analysis.ack_rtt),
`handshake` (SYN and SYN/ACK acknowledged), `ts` (TCP timestamp echo). Samples over
retransmitted or reordered data are ambiguous and dropped (counted in the summary).

Output: the report (the table, or JSON with --format json) goes to standard output and the
closing summary to standard error. With `--samples -` standard output carries only the sample
lines, and the report moves to standard error (after a line saying so); add -q to get the
samples alone.

Examples:
  metro analyze capture.pcap
  metro generate -n 100000 | metro analyze -
  metro analyze --plot rtt.png --report rtt.html capture.pcap
  metro analyze --flows --kinds seq,handshake a.pcapng b.pcap.gz
  metro analyze --samples - capture.pcap | jq 'select(.rtt_ms > 100)'
  metro analyze --format json capture.pcap > report.json

Exit status: 0 all files read; 1 a file was damaged, truncated or unreadable (its samples up
to the damage are still reported); 2 bad usage.")]
pub struct AnalyzeArgs {
    /// Capture files: pcap or pcapng, optionally gzip-compressed (detected by content);
    /// `-` reads standard input.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,

    /// Report format.
    #[arg(long, value_enum, default_value_t = Format::Table)]
    pub format: Format,

    /// Also report one row per connection and responder.
    #[arg(long)]
    pub flows: bool,

    /// Write every sample as one JSON object per line to PATH (`-` for standard output: the
    /// report then goes to standard error, or nowhere with -q).
    #[arg(long, value_name = "PATH")]
    pub samples: Option<PathBuf>,

    /// Also draw the RTT plot (`metro plot`'s picture) to PATH.svg or PATH.png, from the
    /// same run of the engine as the table (its events kept in a temporary file).
    #[arg(long, value_name = "PATH")]
    pub plot: Option<PathBuf>,

    /// Also write one self-contained HTML page (the table, the summary and the plot; opens
    /// without network access) to PATH, from the same run of the engine as the table (the
    /// picture shared with --plot).
    #[arg(long, value_name = "PATH")]
    pub report: Option<PathBuf>,

    /// Which kinds of sample to report, comma-separated: seq, handshake, ts (TCP),
    /// quic_handshake, quic_spin, dns, icmp [default: all].
    #[arg(long, value_name = "LIST", default_value = "seq,handshake,ts,quic_handshake,quic_spin,dns,icmp", hide_default_value = true, value_parser = <KindSet as std::str::FromStr>::from_str)]
    pub kinds: KindSet,

    /// Maximum connections tracked at once, in total over all threads. Beyond it a new
    /// connection sheds the oldest half-open or one-sided entry; connections that completed
    /// a two-way exchange hold at most 3/4 of the table and are evicted (least recently seen
    /// first) only to make room for each other, never by a flood of one-sided traffic.
    #[arg(long, default_value_t = 1 << 20, value_name = "N")]
    pub max_flows: usize,

    /// Responders given a row of their own, at most (the first seen); the samples of any
    /// more are summarised in one `other` row, so that memory stays bounded (about 2 KB a
    /// responder) whatever the capture holds. Applies to --plot and --report too.
    #[arg(long, default_value_t = crate::plot::DEFAULT_MAX_RESPONDERS, value_name = "N", value_parser = crate::plot::parse_max_responders)]
    pub max_responders: usize,

    /// Do not use IP IDs to tell a frame captured twice (mirror port, tap) from a
    /// retransmission: for captures behind a middlebox that rewrites them. TSvals and the
    /// 2 ms window still decide (docs/accuracy.md).
    #[arg(long)]
    pub ignore_ip_id: bool,

    /// Print only what was asked for: no summary, no progress bar, and with `--samples -` no
    /// report (errors are still printed).
    #[arg(long, short)]
    pub quiet: bool,

    /// Threads for each file's engine work [default: the number of available cores]. 1 runs
    /// everything on one thread; more split the connections over that many engines, each
    /// with max-flows/N of the table (the output is the same unless the summary counts flows
    /// evicted for a full table).
    #[arg(long, value_name = "N", value_parser = parse_threads)]
    pub threads: Option<usize>,
}

fn parse_threads(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("`{s}` is not a number of threads (1 or more)")),
    }
}

/// The default for `--threads`: the cores this process may run on.
pub fn default_threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

/// Statistics for one responder (the source of closing packets).
#[derive(Debug, Clone)]
pub struct ResponderReport {
    pub addr: IpAddr,
    /// The protocol of its samples (a host answering TCP and DNS has a row for each):
    /// `tcp`, `quic`, `dns` or `icmp`.
    pub protocol: &'static str,
    pub stats: Stats,
    pub kinds: [u64; Kind::COUNT],
}

/// A responder's key: its address and the protocol of its samples
/// ([`Kind::protocol_index`]).
pub(crate) type ResponderKey = (IpAddr, u8);

/// Statistics for one connection, from one responder's side.
#[derive(Debug, Clone)]
pub struct FlowReport {
    pub file: usize,
    pub flow_id: u64,
    pub responder: SocketAddr,
    pub peer: SocketAddr,
    pub first_ts: Nanos,
    pub stats: Stats,
    pub kinds: [u64; Kind::COUNT],
}

/// Per-file reading outcome.
#[derive(Debug, Clone)]
pub struct FileReport {
    pub path: PathBuf,
    pub records: u64,
    pub error: Option<String>,
    /// The file was opened and recognised as a capture (its records, if any, were read).
    pub opened: bool,
}

impl Report {
    /// Files opened and recognised as captures (the summary's count).
    pub fn files_read(&self) -> usize {
        self.files.iter().filter(|f| f.opened).count()
    }
}

/// How a file is named in messages (`-` is standard input).
pub fn display_name(path: &Path) -> String {
    if is_stdin(path) {
        "standard input".to_string()
    } else {
        path.display().to_string()
    }
}

fn is_stdin(path: &Path) -> bool {
    path.as_os_str() == "-"
}

/// Opens a capture file, or standard input for `-`; the error is the message for the file's
/// report.
pub(crate) fn open_capture(path: &Path) -> Result<CaptureReader, String> {
    let opened = if is_stdin(path) {
        CaptureReader::from_reader(Box::new(io::stdin()))
    } else {
        CaptureReader::open(path)
    };
    opened.map_err(|e| match e {
        ReadError::Io { source, .. } => format!("cannot open: {source}"),
        e => e.to_string(),
    })
}

/// Everything `metro analyze` found, ready to render.
#[derive(Debug, Default)]
pub struct Report {
    pub files: Vec<FileReport>,
    pub responders: Vec<ResponderReport>,
    /// The samples of responders beyond `--max-responders`, if any (its `addr` is unused).
    pub other: Option<ResponderReport>,
    /// The `--max-responders` in force.
    pub max_responders: usize,
    pub flows: Vec<FlowReport>,
    pub summary: Summary,
}

/// Counters over all files.
#[derive(Debug, Default, Clone)]
pub struct Summary {
    pub records: u64,
    pub tcp_packets: u64,
    pub undecodable: BTreeMap<&'static str, u64>,
    pub unsupported_linktypes: BTreeMap<u32, u64>,
    /// Records that are not packets (pcapng custom and systemd journal blocks): counted in
    /// `records`, as tshark numbers them, and otherwise skipped.
    pub non_packets: u64,
    pub engine: Counters,
    /// QUIC, DNS and ICMP.
    pub proto: ProtoCounters,
}

/// The position of the `other` row: responders beyond the cap.
const OTHER: u32 = u32::MAX - 1;

/// Per-responder statistics, in the order responders are first seen: at most `cap`
/// responders, the samples of any more in one `other` report.
struct Responders {
    numbers: Numbering<ResponderKey>,
    list: Vec<ResponderReport>,
    other: Option<ResponderReport>,
    cap: usize,
}

impl Responders {
    fn new(cap: usize) -> Responders {
        Responders {
            numbers: Numbering::default(),
            list: Vec::new(),
            other: None,
            cap,
        }
    }

    /// The report for `addr`, found first where `tag` says (set to its position).
    #[inline]
    fn get_tagged(&mut self, addr: ResponderKey, tag: &mut u32) -> &mut ResponderReport {
        let i = self.index_of(addr, tag);
        self.at(i)
    }

    /// The report at position `i` (or the `other` one).
    #[inline]
    fn at(&mut self, i: u32) -> &mut ResponderReport {
        if i == OTHER {
            return self.other.get_or_insert_with(|| ResponderReport {
                addr: IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
                protocol: "other",
                stats: Stats::new(),
                kinds: [0; Kind::COUNT],
            });
        }
        &mut self.list[i as usize]
    }

    /// The position of `addr`'s report, created if new and there is room, else [`OTHER`].
    #[inline]
    fn index_of(&mut self, key: ResponderKey, tag: &mut u32) -> u32 {
        if let Some(i) = self.numbers.find(key, tag) {
            return i;
        }
        self.add(key, tag)
    }

    /// A responder not numbered yet: its report, if there is room, else [`OTHER`].
    #[cold]
    #[inline(never)]
    fn add(&mut self, key: ResponderKey, tag: &mut u32) -> u32 {
        if self.list.len() >= self.cap {
            return OTHER;
        }
        let i = self.numbers.add(key, tag);
        self.list.push(ResponderReport {
            addr: key.0,
            protocol: metro_core::sample::PROTOCOLS[usize::from(key.1)],
            stats: Stats::new(),
            kinds: [0; Kind::COUNT],
        });
        i
    }
}

/// Collects samples: the per-line sample writer and the aggregates.
struct Collector<'w, 'o> {
    file_idx: usize,
    file_name: String,
    samples_out: Option<&'w mut (dyn Write + 'o)>,
    write_error: Option<io::Error>,
    responders: Responders,
    flows: Option<HashMap<(usize, u64, SocketAddr), FlowReport>>,
    line: Vec<u8>,
    /// `--plot`/`--report`: the picture's events, kept as the engine reports them.
    spool: Option<&'w mut crate::plot::Spool>,
    /// [`Self::wants_whole_samples`], kept for the engine's samples.
    whole: bool,
}

impl Collector<'_, '_> {
    /// Whether each sample is needed whole (sample lines or per-connection rows), not just
    /// its responder, kind and RTT.
    fn wants_whole_samples(&self) -> bool {
        self.samples_out.is_some() || self.flows.is_some() || self.spool.is_some()
    }

    /// Whether retransmissions are wanted (for the picture).
    fn wants_retransmits(&self) -> bool {
        self.spool.is_some()
    }

    /// The position of `addr`'s report (created if new).
    fn responder_index(&mut self, addr: ResponderKey) -> u32 {
        let mut tag = NO_TAG;
        self.responders.index_of(addr, &mut tag)
    }

    /// [`Observer::found`] when the whole sample is needed: out of the engine's way.
    #[cold]
    #[inline(never)]
    fn found_whole(
        &mut self,
        tag: &mut u32,
        kind: Kind,
        (rtt, ts): (Nanos, Nanos),
        (frame, open_frame, flow_id): (u64, u64, u64),
        (responder, responder_port): (&IpAddr, u16),
        (peer, peer_port): (&IpAddr, u16),
    ) {
        let f = Found {
            kind,
            rtt,
            ts,
            frame,
            open_frame,
            flow_id,
            responder,
            responder_port,
            peer,
            peer_port,
        };
        self.sample_tagged(&f.sample(), tag);
    }

    /// Aggregate one sample known only by its responder's position, kind and RTT (when
    /// [`Self::wants_whole_samples`] is false).
    #[inline]
    fn aggregate_at(&mut self, responder: u32, kind: Kind, rtt: Nanos) {
        let r = self.responders.at(responder);
        r.stats.add(rtt as f64 / 1e6);
        r.kinds[kind.index()] += 1;
    }
}

impl Observer for Collector<'_, '_> {
    fn sample(&mut self, s: &Sample) {
        let mut tag = NO_TAG;
        self.sample_tagged(s, &mut tag);
    }

    /// The TCP engine's samples: aggregated from what the engine found when nothing needs the
    /// whole sample (no ports, no `SocketAddr`s built), else as [`Self::sample_tagged`].
    #[inline(always)]
    fn found(&mut self, f: Found<'_>, tag: &mut u32) {
        if self.whole {
            // Field by field: the sample is laid out in memory only on this path.
            self.found_whole(
                tag,
                f.kind,
                (f.rtt, f.ts),
                (f.frame, f.open_frame, f.flow_id),
                (f.responder, f.responder_port),
                (f.peer, f.peer_port),
            );
            return;
        }
        let i = self
            .responders
            .index_of((*f.responder, f.kind.protocol_index()), tag);
        let r = self.responders.at(i);
        r.stats.add(f.rtt as f64 / 1e6);
        r.kinds[f.kind.index()] += 1;
    }

    fn sample_tagged(&mut self, s: &Sample, tag: &mut u32) {
        let ms = s.rtt_ms();
        let r = self
            .responders
            .get_tagged((s.responder.ip(), s.kind.protocol_index()), tag);
        r.stats.add(ms);
        r.kinds[s.kind.index()] += 1;
        if let Some(flows) = &mut self.flows {
            let f = flows
                .entry((self.file_idx, s.flow_id, s.responder))
                .or_insert_with(|| FlowReport {
                    file: self.file_idx,
                    flow_id: s.flow_id,
                    responder: s.responder,
                    peer: s.peer,
                    first_ts: s.ts,
                    stats: Stats::new(),
                    kinds: [0; Kind::COUNT],
                });
            f.stats.add(ms);
            f.kinds[s.kind.index()] += 1;
        }
        if let Some(spool) = self.spool.as_mut() {
            spool.sample(s);
        }
        if let Some(out) = self.samples_out.as_mut()
            && self.write_error.is_none()
        {
            self.line.clear();
            output::sample_line(&mut self.line, &self.file_name, s);
            if let Err(e) = out.write_all(&self.line) {
                self.write_error = Some(e);
            }
        }
    }

    fn retransmit(&mut self, _sender: SocketAddr, _receiver: SocketAddr, ts: Nanos) {
        if let Some(spool) = self.spool.as_mut() {
            spool.retransmit(ts);
        }
    }
}

/// Analyze `files`, writing samples to `samples_out` if given. Never fails as a whole: each
/// file's error is recorded in its [`FileReport`]. One thread; see [`analyze_files_threads`].
pub fn analyze_files(
    files: &[PathBuf],
    cfg: &EngineConfig,
    with_flows: bool,
    samples_out: Option<&mut dyn Write>,
    progress: bool,
) -> io::Result<Report> {
    let opts = Options {
        with_flows,
        progress,
        threads: 1,
        max_responders: crate::plot::DEFAULT_MAX_RESPONDERS,
    };
    analyze_files_with(files, cfg, &opts, samples_out, None)
}

/// How `metro analyze` runs, besides the engine's configuration.
#[derive(Clone, Debug)]
pub struct Options {
    /// Per-connection rows.
    pub with_flows: bool,
    /// The progress bar on standard error.
    pub progress: bool,
    /// Threads for each file's engine work (1: all on the calling thread).
    pub threads: usize,
    /// Responders with a row of their own; the rest share the `other` row.
    pub max_responders: usize,
}

/// [`analyze_files`] with each file's engine work spread over `threads` threads (1: all on
/// the calling thread). The report and the sample lines do not depend on `threads`.
pub fn analyze_files_threads(
    files: &[PathBuf],
    cfg: &EngineConfig,
    with_flows: bool,
    samples_out: Option<&mut dyn Write>,
    progress: bool,
    threads: usize,
) -> io::Result<Report> {
    let opts = Options {
        with_flows,
        progress,
        threads,
        max_responders: crate::plot::DEFAULT_MAX_RESPONDERS,
    };
    analyze_files_with(files, cfg, &opts, samples_out, None)
}

/// [`analyze_files_threads`] with every option, also keeping the picture's events in
/// `spool` (`--plot`, `--report`: the engine runs once for the table and the picture).
pub fn analyze_files_with(
    files: &[PathBuf],
    cfg: &EngineConfig,
    opts: &Options,
    mut samples_out: Option<&mut dyn Write>,
    mut spool: Option<&mut crate::plot::Spool>,
) -> io::Result<Report> {
    let (with_flows, progress, threads) = (opts.with_flows, opts.progress, opts.threads);
    let mut report = Report {
        max_responders: opts.max_responders,
        ..Report::default()
    };
    let mut responders = Responders::new(opts.max_responders);
    let mut flows = with_flows.then(HashMap::new);
    // Each thread's engine tracks max_flows / threads connections, at least one: no more
    // threads than that, so the total never exceeds max_flows.
    let threads = threads.min(cfg.max_flows.max(1));
    for (file_idx, path) in files.iter().enumerate() {
        let mut collector = Collector {
            file_idx,
            file_name: path.display().to_string(),
            samples_out: samples_out.as_deref_mut(),
            write_error: None,
            responders: std::mem::replace(&mut responders, Responders::new(0)),
            flows: flows.take(),
            line: Vec::with_capacity(256),
            spool: spool.as_deref_mut(),
            whole: false,
        };
        collector.whole = collector.wants_whole_samples();
        let fr = if threads > 1 {
            parallel::analyze_one(
                path,
                cfg,
                threads,
                &mut collector,
                &mut report.summary,
                progress,
            )
        } else {
            analyze_one(path, cfg, &mut collector, &mut report.summary, progress)
        };
        if let Some(e) = collector.write_error.take() {
            return Err(e);
        }
        responders = collector.responders;
        flows = collector.flows;
        report.files.push(fr);
    }
    report.other = responders.other;
    let mut rs: Vec<ResponderReport> = responders.list;
    rs.sort_by(|a, b| {
        b.stats
            .count()
            .cmp(&a.stats.count())
            .then_with(|| a.addr.cmp(&b.addr))
            .then_with(|| a.protocol.cmp(b.protocol))
    });
    report.responders = rs;
    if let Some(flows) = flows {
        let mut fs: Vec<FlowReport> = flows.into_values().collect();
        fs.sort_by(|a, b| {
            (a.file, a.first_ts, a.flow_id, a.responder).cmp(&(
                b.file,
                b.first_ts,
                b.flow_id,
                b.responder,
            ))
        });
        report.flows = fs;
    }
    Ok(report)
}

fn analyze_one(
    path: &Path,
    cfg: &EngineConfig,
    collector: &mut Collector<'_, '_>,
    summary: &mut Summary,
    progress: bool,
) -> FileReport {
    let mut fr = FileReport {
        path: path.to_path_buf(),
        records: 0,
        error: None,
        opened: false,
    };
    let mut reader = match open_capture(path) {
        Ok(r) => r,
        Err(e) => {
            fr.error = Some(e);
            return fr;
        }
    };
    fr.opened = true;
    let total = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
    let bar = progress::Bar::new(progress, &collector.file_name, total);
    let mut frames = OneThread {
        to: ToDriver {
            driver: Driver::new(cfg.clone()),
            out: collector,
        },
        skipped: Skipped {
            undecodable: &mut summary.undecodable,
            unsupported: &mut summary.unsupported_linktypes,
            seen: Vec::new(),
            bar,
            path,
        },
    };
    let done = replay(&mut reader, &mut frames);
    frames.skipped.bar.clear();
    fr.error = done.error.as_ref().map(describe_read_error);
    fr.records = done.records;
    summary.records += done.records;
    summary.non_packets += done.non_packets;
    let driver = &mut frames.to.driver;
    driver.finish(done.last_ts);
    summary.proto.add(driver.proto().counters());
    let engine = frames.to.driver.tcp();
    summary.tcp_packets += engine.counters().packets;
    summary.engine.add(engine.counters());
    fr
}

/// The one-thread replay: frames to the driver, the rest counted.
struct OneThread<'a, 'c, 'w, 'o> {
    to: ToDriver<'a, Collector<'w, 'o>>,
    skipped: Skipped<'a, 'c>,
}

impl Frames for OneThread<'_, '_, '_, '_> {
    #[inline]
    fn segment(&mut self, frame: u64, ts: Nanos, seg: &Segment, payload: &[u8]) -> ControlFlow<()> {
        self.to.segment(frame, ts, seg, payload)
    }

    fn not_tcp(&mut self, frame: u64, ts: Nanos, linktype: u32, data: &[u8]) {
        self.to.not_tcp(frame, ts, linktype, data);
    }

    fn undecodable(&mut self, e: DecodeError) {
        self.skipped.count(e);
    }

    fn progress(&mut self, reader: &CaptureReader) {
        self.skipped.bar.update(reader.compressed_bytes_read());
    }
}

/// Where a file's undecodable frames are counted (the summary's maps, or a reader
/// thread's), each unsupported link type named once per file.
struct Skipped<'a, 'c> {
    undecodable: &'a mut BTreeMap<&'static str, u64>,
    unsupported: &'a mut BTreeMap<u32, u64>,
    seen: Vec<u32>,
    bar: progress::Bar,
    path: &'c Path,
}

impl Skipped<'_, '_> {
    /// Count a frame that yielded no TCP segment; name an unsupported link type once.
    fn count(&mut self, e: DecodeError) {
        *self.undecodable.entry(e.reason()).or_insert(0) += 1;
        if let DecodeError::UnsupportedLinkType(lt) = e {
            *self.unsupported.entry(lt).or_insert(0) += 1;
            if !self.seen.contains(&lt) {
                self.seen.push(lt);
                self.bar.clear();
                eprintln!(
                    "metro: {}: link type {lt} is not decoded; its packets are counted and skipped",
                    self.path.display()
                );
            }
        }
    }
}

fn describe_read_error(e: &ReadError) -> String {
    e.to_string()
}

/// The `metro analyze` command. Returns the process exit code.
pub fn run(args: &AnalyzeArgs) -> anyhow::Result<i32> {
    if args.files.iter().filter(|p| is_stdin(p)).count() > 1 {
        anyhow::bail!("standard input (`-`) can be read only once");
    }
    let plotting = args.plot.is_some() || args.report.is_some();
    // Check what can be checked before the (possibly long) analysis.
    if let Some(p) = &args.plot {
        crate::plot::ImageFormat::from_path(p)?;
    }
    if plotting {
        crate::plot::load_font(Path::new(crate::plot::DEFAULT_FONT))?;
    }
    let cfg = EngineConfig {
        max_flows: args.max_flows,
        kinds: args.kinds,
        trust_ip_id: !args.ignore_ip_id,
        ..EngineConfig::default()
    };
    let stdout = io::stdout();
    let samples_to_stdout = args.samples.as_deref().is_some_and(is_stdin);
    // The bar redraws a line of standard error: not while sample lines stream to the same
    // terminal, where it would land in the middle of them.
    let progress =
        !args.quiet && io::stderr().is_terminal() && !(samples_to_stdout && stdout.is_terminal());
    let mut sample_file: Option<Box<dyn Write>> = match &args.samples {
        None => None,
        Some(p) if is_stdin(p) => Some(Box::new(BufWriter::with_capacity(1 << 16, stdout.lock()))),
        Some(p) => {
            let f = File::create(p)
                .map_err(|e| anyhow::anyhow!("cannot create samples file {}: {e}", p.display()))?;
            Some(Box::new(BufWriter::with_capacity(1 << 16, f)))
        }
    };
    // The picture's events, kept as the analysis runs (the engine runs once for both).
    let mut spool = if plotting {
        Some(crate::plot::Spool::new(args.max_responders)?)
    } else {
        None
    };
    let opts = Options {
        with_flows: args.flows,
        progress,
        threads: args.threads.unwrap_or_else(default_threads),
        max_responders: args.max_responders,
    };
    let report = analyze_files_with(
        &args.files,
        &cfg,
        &opts,
        sample_file.as_deref_mut().map(|w| w as &mut dyn Write),
        spool.as_mut(),
    )?;
    if let Some(mut w) = sample_file {
        w.flush()?;
    }
    // Whatever went to standard output is out before standard error says anything, so the
    // two never share a line on a terminal or a common pipe.
    io::stdout().flush()?;
    let mut failed = false;
    for f in &report.files {
        if let Some(e) = &f.error {
            failed = true;
            eprintln!("metro: {}: {e}", display_name(&f.path));
        }
    }
    if report.files_read() == 0 {
        // Nothing was read: the errors say why; an all-zero report would only hide them.
        return Ok(1);
    }
    let mut rendered = Vec::new();
    match args.format {
        Format::Table => render_table(&mut rendered, &report, args.flows)?,
        Format::Json => render_json(&mut rendered, &report, args.flows)?,
    }
    if !samples_to_stdout {
        let mut out = stdout.lock();
        out.write_all(&rendered)?;
        out.flush()?;
    } else if !args.quiet {
        // Standard output carries only sample lines; the report goes here, and says so.
        let mut err = io::stderr().lock();
        writeln!(
            err,
            "metro: the report follows on standard error (--samples - uses standard output; \
             -q leaves only the samples)"
        )?;
        err.write_all(&rendered)?;
    }
    if !args.quiet {
        output::render_summary(&mut io::stderr().lock(), &report)?;
    }
    if let Some(spool) = spool {
        let opts = crate::plot::PlotOptions {
            engine: cfg.clone(),
            max_responders: args.max_responders,
            ..crate::plot::PlotOptions::default()
        };
        // The files this analysis could open (the others' errors are already printed).
        let readable: Vec<PathBuf> = report
            .files
            .iter()
            .filter(|f| f.opened)
            .map(|f| f.path.clone())
            .collect();
        // Binned once for both the picture and the report.
        let picture = spool.picture(&readable, &opts)?;
        if let Some(p) = &args.plot {
            picture.write(p, crate::plot::ImageFormat::from_path(p)?)?;
        }
        if let Some(p) = &args.report {
            let svg = picture.svg()?;
            let mut summary = Vec::new();
            output::render_summary(&mut summary, &report)?;
            let mut errors = String::new();
            for f in &report.files {
                if let Some(e) = &f.error {
                    errors.push_str(&format!("{}: {e}\n", display_name(&f.path)));
                }
            }
            let mut table = Vec::new();
            render_table(&mut table, &report, args.flows)?;
            let page = output::html_page(
                &args.files,
                &String::from_utf8_lossy(&table),
                &String::from_utf8_lossy(&summary),
                &errors,
                &svg,
            );
            std::fs::write(p, page)
                .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", p.display()))?;
        }
    }
    Ok(if failed { 1 } else { 0 })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_or_foreign_tag_finds_the_right_responder() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let mut r = Responders::new(10);
        let mut ta = NO_TAG;
        let (a, b) = ((a, 0), (b, 0));
        r.get_tagged(a, &mut ta).kinds[0] += 1;
        let mut tb = NO_TAG;
        r.get_tagged(b, &mut tb).kinds[0] += 1;
        assert_eq!((ta, tb), (0, 1));
        // A tag pointing at another responder's report (another engine's, or a reused
        // connection's) is corrected, not trusted.
        let mut wrong = ta;
        r.get_tagged(b, &mut wrong).kinds[0] += 1;
        assert_eq!(wrong, tb);
        // Out of range.
        let mut beyond = 7;
        r.get_tagged(a, &mut beyond).kinds[0] += 1;
        assert_eq!(beyond, ta);
        assert_eq!(r.list[0].addr, a.0);
        assert_eq!(r.list[0].kinds[0], 2);
        assert_eq!(r.list[1].kinds[0], 2);
        assert_eq!(r.list.len(), 2);
    }
}
