//! `metro plot`: RTT as pictures. Reads capture files (through the same engine as
//! `metro analyze`) or the JSON lines `metro analyze --samples` writes, and draws one SVG or
//! PNG (by the output's extension) with RTT over time per responder, the RTT distribution
//! (CDF) per responder, and retransmissions as marks on the time axis.
//!
//! Memory does not depend on the input: the input is read twice. The first pass
//! ([`Census`]) counts samples per responder (at most `max_responders` told apart) and finds the time and RTT ranges; the second
//! ([`Bins`]) folds each sample into fixed grids for the top responders and one "other"
//! group: a time × log-RTT grid (each cell drawn in its dominant group's colour with an
//! opacity that grows with the count, so sparse data looks like a scatter plot and dense
//! data like a heat map), a fine log-RTT
//! histogram (the CDF) and a DDSketch (the key's quantiles). Retransmissions are kept one by
//! one up to [`MAX_MARKS`], beyond which they are counted per time column. Drawing is in
//! [`draw`].

mod draw;

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use metro_core::Nanos;
use metro_core::aggregate::Stats;
use metro_core::config::EngineConfig;
use metro_core::driver::Driver;
use metro_core::sample::Observer;
use metro_core::sample::{Kind, KindSet, Sample};

use crate::pcap::CaptureReader;
use crate::replay::{ToDriver, replay};

pub use draw::{DEFAULT_FONT, FONT_PACKAGE, MARK, load_font};

/// Time columns of the RTT-over-time grid (the plot is ~1100 px wide: ~4 px a column).
pub const TIME_BINS: usize = 280;
/// Log-RTT rows of the RTT-over-time grid.
pub const RTT_BINS: usize = 110;
/// Log-RTT bins of each CDF.
pub const CDF_BINS: usize = 1000;
/// Retransmissions drawn one mark each up to this many; beyond, one mark per time column
/// whose height follows the count.
pub const MAX_MARKS: usize = 2000;
/// Colours available for responders (the palette in [`draw`]).
pub const MAX_TOP: usize = 10;

/// The default for `--max-responders` (`metro plot`'s and `metro analyze`'s): as many as the agent's pairs per
/// interval.
pub const DEFAULT_MAX_RESPONDERS: usize = 65_536;

/// A `--max-responders` value: 1 or more.
pub fn parse_max_responders(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..1 << 31).contains(&n) => Ok(n),
        _ => Err(format!("`{s}` is not a number of responders (1 or more)")),
    }
}

/// Draw RTT over time, the RTT CDF and retransmissions from captures or sample lines.
#[derive(clap::Args, Debug, Clone)]
#[command(after_help = "\
INPUT is a pcap/pcapng capture (optionally gzip-compressed) or a plain file of JSON lines
written by `metro analyze --samples PATH` (recognised by its first character, `{`). Captures also give
the retransmissions (red marks on the time axis); sample lines do not carry them.

The picture has three parts: RTT over time (log scale), one colour per responder for the
--top responders by samples and grey for the others, each cell of the grid in the colour of
the responder with the most samples in it and darker with more samples; the CDF of RTT per
responder; and a key with each responder's samples, p50 and p99. Memory does not depend on
the input size: the input is read twice and binned.

Text is laid out with a TrueType font read at run time (both for SVG and PNG), by default
/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf (Debian package fonts-dejavu-core).

Examples:
  metro plot -o rtt.svg capture.pcap
  metro plot -o rtt.png --top 5 a.pcapng b.pcap.gz
  metro analyze --samples s.jsonl capture.pcap && metro plot -o rtt.png s.jsonl")]
pub struct PlotArgs {
    /// Capture files or sample-line files (not standard input: the input is read twice).
    #[arg(required = true, value_name = "INPUT")]
    pub inputs: Vec<PathBuf>,

    /// The picture to write: PATH.svg or PATH.png.
    #[arg(short, long, value_name = "PATH")]
    pub output: PathBuf,

    /// Responders drawn in their own colour (most samples first; 1 to 10); the rest are
    /// grouped.
    #[arg(long, default_value_t = 8, value_name = "N", value_parser = parse_top)]
    pub top: usize,

    /// Responders told apart at most: the first seen; the samples of any more join the
    /// grey group of others, so that memory stays bounded whatever the input holds.
    #[arg(long, default_value_t = DEFAULT_MAX_RESPONDERS, value_name = "N", value_parser = parse_max_responders)]
    pub max_responders: usize,

    /// Which kinds of sample to plot, comma-separated: seq, handshake, ts (TCP),
    /// quic_handshake, quic_spin, dns, icmp [default: all].
    #[arg(long, value_name = "LIST", default_value = "seq,handshake,ts,quic_handshake,quic_spin,dns,icmp", hide_default_value = true, value_parser = <KindSet as std::str::FromStr>::from_str)]
    pub kinds: KindSet,

    /// Picture width in pixels.
    #[arg(long, default_value_t = 1200, value_parser = clap::value_parser!(u32).range(600..=8000))]
    pub width: u32,

    /// Picture height in pixels.
    #[arg(long, default_value_t = 800, value_parser = clap::value_parser!(u32).range(400..=8000))]
    pub height: u32,

    /// The TrueType font text is drawn with.
    #[arg(long, value_name = "PATH", default_value = DEFAULT_FONT)]
    pub font: PathBuf,

    /// Title at the top (default: the input names).
    #[arg(long)]
    pub title: Option<String>,
}

fn parse_top(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_TOP).contains(&n) => Ok(n),
        _ => Err(format!(
            "`{s}` is not a number of responders from 1 to {MAX_TOP} (one colour each)"
        )),
    }
}

/// The picture formats, from the output's extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImageFormat {
    Svg,
    Png,
}

impl ImageFormat {
    pub fn from_path(p: &Path) -> anyhow::Result<ImageFormat> {
        match p
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            Some("svg") => Ok(ImageFormat::Svg),
            Some("png") => Ok(ImageFormat::Png),
            _ => bail!(
                "{}: the picture's format comes from its extension: use .svg or .png",
                p.display()
            ),
        }
    }
}

/// What the plot is drawn from.
#[derive(Clone, Debug)]
pub struct PlotOptions {
    pub top: usize,
    /// Responders told apart at most (the first seen; the rest join the others' group).
    pub max_responders: usize,
    /// The engine a capture is run through (its `kinds` also filter sample lines): the
    /// same as the analysis beside the picture, for `analyze --plot/--report`.
    pub engine: EngineConfig,
    pub width: u32,
    pub height: u32,
    pub font: PathBuf,
    pub title: Option<String>,
}

impl Default for PlotOptions {
    /// `metro plot`'s defaults.
    fn default() -> Self {
        PlotOptions {
            top: 8,
            max_responders: DEFAULT_MAX_RESPONDERS,
            engine: EngineConfig::default(),
            width: 1200,
            height: 800,
            font: PathBuf::from(DEFAULT_FONT),
            title: None,
        }
    }
}

/// One thing the input says.
#[derive(Clone, Copy, Debug)]
enum Event {
    Sample {
        ts: Nanos,
        responder: IpAddr,
        rtt: Nanos,
    },
    Retransmit {
        ts: Nanos,
    },
}

/// How an input file is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InputKind {
    Capture,
    SampleLines,
}

/// What reading the inputs found besides the events.
#[derive(Debug, Default)]
pub struct ScanNotes {
    /// Whether any input was a capture (so retransmissions are known).
    pub had_capture: bool,
    /// Damaged or truncated captures: the message; the samples before it were used.
    pub damaged: Vec<String>,
}

/// Sample lines from `metro analyze --samples`: the fields the plot needs.
#[derive(serde::Deserialize)]
struct SampleLine {
    ts: f64,
    kind: String,
    src: IpAddr,
    rtt_ms: f64,
}

fn input_kind(path: &Path) -> anyhow::Result<InputKind> {
    if path.as_os_str() == "-" {
        bail!(
            "metro plot reads its input twice (to keep memory bounded) and cannot read standard \
             input: save it to a file first"
        );
    }
    let mut f = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut head = [0u8; 64];
    let n = f
        .read(&mut head)
        .with_context(|| format!("{}: cannot read", path.display()))?;
    let first = head[..n].iter().find(|b| !b.is_ascii_whitespace());
    Ok(if first == Some(&b'{') {
        InputKind::SampleLines
    } else {
        InputKind::Capture
    })
}

/// Observer adapter: engine output to events.
struct Forward<'f>(&'f mut dyn FnMut(Event));

impl Observer for Forward<'_> {
    fn sample(&mut self, s: &Sample) {
        (self.0)(Event::Sample {
            ts: s.ts,
            responder: s.responder.ip(),
            rtt: s.rtt,
        });
    }
    fn retransmit(&mut self, _sender: SocketAddr, _receiver: SocketAddr, ts: Nanos) {
        (self.0)(Event::Retransmit { ts });
    }
}

/// Every event of every input, in order. Fails on an input that is neither a capture nor
/// sample lines, or a malformed sample line (naming the line); a capture damaged part way
/// gives its events up to the damage and a note.
fn scan(
    inputs: &[PathBuf],
    engine: &EngineConfig,
    f: &mut dyn FnMut(Event),
) -> anyhow::Result<ScanNotes> {
    let mut notes = ScanNotes::default();
    for path in inputs {
        match input_kind(path)? {
            InputKind::SampleLines => scan_lines(path, engine.kinds, f)?,
            InputKind::Capture => {
                notes.had_capture = true;
                if let Some(d) = scan_capture(path, engine, f)? {
                    notes.damaged.push(d);
                }
            }
        }
    }
    Ok(notes)
}

fn scan_capture(
    path: &Path,
    cfg: &EngineConfig,
    f: &mut dyn FnMut(Event),
) -> anyhow::Result<Option<String>> {
    let mut reader =
        CaptureReader::open(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    // The same driver as `metro analyze`: the same expiry rhythm, the same QUIC, DNS and
    // ICMP tracker.
    let mut out = Forward(f);
    let done = replay(
        &mut reader,
        &mut ToDriver {
            driver: Driver::new(cfg.clone()),
            out: &mut out,
        },
    );
    Ok(done.error.map(|e| format!("{}: {e}", path.display())))
}

fn scan_lines(path: &Path, kinds: KindSet, f: &mut dyn FnMut(Event)) -> anyhow::Result<()> {
    let file = File::open(path).with_context(|| format!("{}: cannot open", path.display()))?;
    let mut r = BufReader::with_capacity(1 << 16, file);
    let mut line = String::new();
    let mut n = 0u64;
    loop {
        line.clear();
        let got = r
            .read_line(&mut line)
            .with_context(|| format!("{}:{}: cannot read", path.display(), n + 1))?;
        if got == 0 {
            return Ok(());
        }
        n += 1;
        if line.trim().is_empty() {
            continue;
        }
        let s: SampleLine = serde_json::from_str(&line).map_err(|e| {
            anyhow::anyhow!(
                "{}:{n}: not a sample line of `metro analyze --samples` ({e})",
                path.display()
            )
        })?;
        let Some(kind) = Kind::parse(&s.kind) else {
            bail!(
                "{}:{n}: unknown kind `{}` (expected seq, handshake, ts, quic_handshake, quic_spin, dns or icmp)",
                path.display(),
                s.kind
            );
        };
        if !(s.rtt_ms.is_finite() && s.rtt_ms > 0.0 && s.ts.is_finite()) {
            bail!(
                "{}:{n}: rtt_ms must be a positive number and ts a time",
                path.display()
            );
        }
        if kinds.contains(kind) {
            f(Event::Sample {
                ts: (s.ts * 1e9) as Nanos,
                responder: s.src,
                rtt: ((s.rtt_ms * 1e6).round() as Nanos).max(1),
            });
        }
    }
}

/// First pass: samples per responder (the first `cap` responders; the samples of any more
/// are only counted), the time and RTT ranges, retransmissions.
#[derive(Debug)]
struct Census {
    per_responder: HashMap<IpAddr, u64>,
    cap: usize,
    /// Samples of responders beyond the cap.
    untracked: u64,
    samples: u64,
    retransmits: u64,
    t_min: Option<Nanos>,
    t_max: Nanos,
    rtt_min: Nanos,
    rtt_max: Nanos,
}

impl Census {
    fn new(cap: usize) -> Census {
        Census {
            per_responder: HashMap::new(),
            cap,
            untracked: 0,
            samples: 0,
            retransmits: 0,
            t_min: None,
            t_max: 0,
            rtt_min: 0,
            rtt_max: 0,
        }
    }

    fn add(&mut self, e: Event) {
        let ts = match e {
            Event::Sample { ts, responder, rtt } => {
                if let Some(n) = self.per_responder.get_mut(&responder) {
                    *n += 1;
                } else if self.per_responder.len() < self.cap {
                    self.per_responder.insert(responder, 1);
                } else {
                    self.untracked += 1;
                }
                if self.samples == 0 {
                    self.rtt_min = rtt;
                    self.rtt_max = rtt;
                }
                self.samples += 1;
                self.rtt_min = self.rtt_min.min(rtt);
                self.rtt_max = self.rtt_max.max(rtt);
                ts
            }
            Event::Retransmit { ts } => {
                self.retransmits += 1;
                ts
            }
        };
        self.t_min = Some(self.t_min.map_or(ts, |t| t.min(ts)));
        self.t_max = self.t_max.max(ts);
    }

    /// The responders with the most samples (ties by address), at most `n`.
    fn top(&self, n: usize) -> Vec<(IpAddr, u64)> {
        let mut all: Vec<(IpAddr, u64)> =
            self.per_responder.iter().map(|(a, c)| (*a, *c)).collect();
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(n);
        all
    }
}

/// The axes every grid is binned on.
#[derive(Clone, Copy, Debug)]
pub struct Axes {
    /// Time of the first event.
    pub t0: Nanos,
    /// Seconds from `t0` the time axis spans (> 0).
    pub span_s: f64,
    /// RTT range in ms (decade bounds, `lo < hi`).
    pub rtt_lo_ms: f64,
    pub rtt_hi_ms: f64,
}

impl Axes {
    fn new(c: &Census) -> Axes {
        let t0 = c.t_min.unwrap_or(0);
        let span_s = ((c.t_max - t0) as f64 / 1e9).max(1e-3);
        let (lo, hi) = if c.samples == 0 {
            (1.0, 1000.0)
        } else {
            let lo = 10f64.powf((c.rtt_min as f64 / 1e6).log10().floor());
            let mut hi = 10f64.powf((c.rtt_max as f64 / 1e6).log10().ceil());
            if hi <= lo {
                hi = lo * 10.0;
            }
            (lo, hi)
        };
        Axes {
            t0,
            span_s,
            rtt_lo_ms: lo,
            rtt_hi_ms: hi,
        }
    }

    /// The time column of `ts`.
    pub fn time_bin(&self, ts: Nanos) -> usize {
        let x = (ts - self.t0) as f64 / 1e9 / self.span_s;
        ((x * TIME_BINS as f64) as usize).min(TIME_BINS - 1)
    }

    /// Position of an RTT between the axis bounds on the log scale, in [0, 1].
    fn rtt_frac(&self, rtt: Nanos) -> f64 {
        let ms = rtt as f64 / 1e6;
        ((ms / self.rtt_lo_ms).ln() / (self.rtt_hi_ms / self.rtt_lo_ms).ln()).clamp(0.0, 1.0)
    }

    fn rtt_bin(&self, rtt: Nanos, bins: usize) -> usize {
        ((self.rtt_frac(rtt) * bins as f64) as usize).min(bins - 1)
    }

    /// The lower edge of RTT bin `i` of `bins`, in ms.
    pub fn rtt_edge_ms(&self, i: usize, bins: usize) -> f64 {
        self.rtt_lo_ms * (self.rtt_hi_ms / self.rtt_lo_ms).powf(i as f64 / bins as f64)
    }

    /// Seconds from `t0` at the left edge of time column `i`.
    pub fn time_edge_s(&self, i: usize) -> f64 {
        self.span_s * i as f64 / TIME_BINS as f64
    }
}

/// One drawn group: a top responder, or all the others.
pub struct Series {
    /// `None` for the group of other responders.
    pub responder: Option<IpAddr>,
    /// Responders in the group (1 for a top responder).
    pub members: u64,
    /// Samples per (time column, RTT row): `grid[t * RTT_BINS + r]`.
    pub grid: Vec<u32>,
    /// Samples per fine RTT bin, for the CDF.
    pub cdf: Vec<u64>,
    pub stats: Stats,
}

impl Series {
    fn new(responder: Option<IpAddr>, members: u64) -> Series {
        Series {
            responder,
            members,
            grid: vec![0; TIME_BINS * RTT_BINS],
            cdf: vec![0; CDF_BINS],
            stats: Stats::new(),
        }
    }
}

/// Retransmissions as drawn.
pub enum Marks {
    /// Each retransmission's time (seconds from `t0`).
    Each(Vec<f64>),
    /// Retransmissions per time column.
    Binned(Vec<u64>),
}

/// Everything the picture shows.
pub struct Bins {
    pub axes: Axes,
    /// Top responders (most samples first), then the others if any.
    pub series: Vec<Series>,
    pub samples: u64,
    /// Responders told apart (at most the cap).
    pub responders: usize,
    /// Whether some samples came from responders beyond the cap (in the others' group,
    /// which then has more members than `members` says).
    pub beyond_cap: bool,
    pub retransmits: u64,
    /// Whether retransmissions are known (some input was a capture).
    pub retransmits_known: bool,
    pub marks: Marks,
}

/// The second pass's state: each event binned on the first pass's axes and top responders.
struct Binner {
    axes: Axes,
    slot: HashMap<IpAddr, usize>,
    other_slot: usize,
    series: Vec<Series>,
    marks: Marks,
}

impl Binner {
    fn new(census: &Census, top: usize) -> Binner {
        let axes = Axes::new(census);
        let top_list = census.top(top);
        let mut slot: HashMap<IpAddr, usize> = HashMap::new();
        let mut series: Vec<Series> = Vec::new();
        for (i, (addr, _)) in top_list.iter().enumerate() {
            slot.insert(*addr, i);
            series.push(Series::new(Some(*addr), 1));
        }
        let others = census.per_responder.len() - top_list.len();
        if others > 0 || census.untracked > 0 {
            series.push(Series::new(None, others as u64));
        }
        let each = census.retransmits as usize <= MAX_MARKS;
        let marks = if each {
            Marks::Each(Vec::with_capacity(census.retransmits as usize))
        } else {
            Marks::Binned(vec![0; TIME_BINS])
        };
        Binner {
            axes,
            slot,
            other_slot: top_list.len(),
            series,
            marks,
        }
    }

    fn add(&mut self, e: Event) {
        let axes = &self.axes;
        match e {
            Event::Sample { ts, responder, rtt } => {
                let s = &mut self.series[*self.slot.get(&responder).unwrap_or(&self.other_slot)];
                let t = axes.time_bin(ts);
                s.grid[t * RTT_BINS + axes.rtt_bin(rtt, RTT_BINS)] += 1;
                s.cdf[axes.rtt_bin(rtt, CDF_BINS)] += 1;
                s.stats.add(rtt as f64 / 1e6);
            }
            Event::Retransmit { ts } => match &mut self.marks {
                Marks::Each(v) => v.push((ts - axes.t0) as f64 / 1e9),
                Marks::Binned(v) => v[axes.time_bin(ts)] += 1,
            },
        }
    }

    fn finish(self, census: &Census, retransmits_known: bool) -> Bins {
        Bins {
            axes: self.axes,
            series: self.series,
            samples: census.samples,
            responders: census.per_responder.len(),
            beyond_cap: census.untracked > 0,
            retransmits: census.retransmits,
            retransmits_known,
            marks: self.marks,
        }
    }
}

/// Both passes over `inputs`: the binned picture data, and what was noted on the way.
pub fn bin_inputs(
    inputs: &[PathBuf],
    engine: &EngineConfig,
    top: usize,
    max_responders: usize,
) -> anyhow::Result<(Bins, ScanNotes)> {
    let mut census = Census::new(max_responders);
    let notes = scan(inputs, engine, &mut |e| census.add(e))?;
    let mut binner = Binner::new(&census, top);
    scan(inputs, engine, &mut |e| binner.add(e))?;
    let bins = binner.finish(&census, notes.had_capture);
    Ok((bins, notes))
}

/// The events of a run of the engine made elsewhere (`analyze --plot/--report`, beside its
/// table), kept for the picture so that the engine runs once: the first pass's census is
/// taken as they come, and the events themselves go to an unlinked temporary file (33 bytes
/// each), read back for the second pass. Memory does not depend on the input; disk does.
pub struct Spool {
    census: Census,
    file: io::BufWriter<File>,
    record: [u8; SPOOLED],
    error: Option<io::Error>,
}

/// Bytes a spooled event takes: its kind (sample from an IPv4 or IPv6 responder, or a
/// retransmission), time, RTT and responder address.
const SPOOLED: usize = 1 + 8 + 8 + 16;

impl Spool {
    /// An empty spool, its file created (and unlinked at once) in the temporary directory;
    /// responders told apart up to `max_responders`.
    pub fn new(max_responders: usize) -> anyhow::Result<Spool> {
        let dir = std::env::temp_dir();
        let mut n = 0u32;
        let file = loop {
            let path = dir.join(format!("metro-plot-{}-{n}", std::process::id()));
            match File::options()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(f) => {
                    let _ = std::fs::remove_file(&path);
                    break f;
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && n < 1000 => n += 1,
                Err(e) => {
                    return Err(anyhow::anyhow!(
                        "cannot create a temporary file in {} for the plot: {e}",
                        dir.display()
                    ));
                }
            }
        };
        Ok(Spool {
            census: Census::new(max_responders),
            file: io::BufWriter::with_capacity(1 << 16, file),
            record: [0; SPOOLED],
            error: None,
        })
    }

    /// One event, in the order the engine told it.
    fn push(&mut self, e: Event) {
        self.census.add(e);
        if self.error.is_some() {
            return;
        }
        let r = &mut self.record;
        match e {
            Event::Sample { ts, responder, rtt } => {
                r[1..9].copy_from_slice(&ts.to_le_bytes());
                r[9..17].copy_from_slice(&rtt.to_le_bytes());
                match responder {
                    IpAddr::V4(a) => {
                        r[0] = 4;
                        r[17..21].copy_from_slice(&a.octets());
                    }
                    IpAddr::V6(a) => {
                        r[0] = 6;
                        r[17..33].copy_from_slice(&a.octets());
                    }
                }
            }
            Event::Retransmit { ts } => {
                r[0] = 0;
                r[1..9].copy_from_slice(&ts.to_le_bytes());
            }
        }
        if let Err(e) = self.file.write_all(&self.record) {
            self.error = Some(e);
        }
    }

    /// A sample, as the engine reported it.
    pub fn sample(&mut self, s: &Sample) {
        self.push(Event::Sample {
            ts: s.ts,
            responder: s.responder.ip(),
            rtt: s.rtt,
        });
    }

    /// A retransmission seen at `ts`.
    pub fn retransmit(&mut self, ts: Nanos) {
        self.push(Event::Retransmit { ts });
    }

    /// The picture of everything spooled, drawn from `inputs` (for its title), all of them
    /// captures.
    pub fn picture(self, inputs: &[PathBuf], opts: &PlotOptions) -> anyhow::Result<Picture> {
        let Spool {
            census,
            file,
            error,
            ..
        } = self;
        let spool_error = |e: io::Error| anyhow::anyhow!("the plot's temporary file failed: {e}");
        if let Some(e) = error {
            return Err(spool_error(e));
        }
        let mut file = file.into_inner().map_err(|e| spool_error(e.into_error()))?;
        file.seek(io::SeekFrom::Start(0)).map_err(spool_error)?;
        let mut binner = Binner::new(&census, opts.top);
        let mut r = io::BufReader::with_capacity(1 << 16, file);
        let mut rec = [0u8; SPOOLED];
        let word = |b: &[u8]| i64::from_le_bytes(b.try_into().expect("8 bytes"));
        loop {
            match r.read_exact(&mut rec) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(spool_error(e)),
            }
            let ts = word(&rec[1..9]);
            binner.add(match rec[0] {
                0 => Event::Retransmit { ts },
                v => Event::Sample {
                    ts,
                    rtt: word(&rec[9..17]),
                    responder: if v == 4 {
                        IpAddr::from(<[u8; 4]>::try_from(&rec[17..21]).expect("4 bytes"))
                    } else {
                        IpAddr::from(<[u8; 16]>::try_from(&rec[17..33]).expect("16 bytes"))
                    },
                },
            });
        }
        draw::load_font(&opts.font)?;
        Ok(Picture {
            bins: binner.finish(&census, true),
            title: title_of(inputs, opts),
            width: opts.width,
            height: opts.height,
        })
    }
}

/// The inputs binned once (two passes over them), ready to be drawn in any format.
pub struct Picture {
    bins: Bins,
    title: String,
    width: u32,
    height: u32,
}

impl Picture {
    /// Bin `inputs`. Damaged captures are reported in the returned notes; the picture holds
    /// the samples before the damage.
    pub fn of_files(
        inputs: &[PathBuf],
        opts: &PlotOptions,
    ) -> anyhow::Result<(Picture, ScanNotes)> {
        // The font first: a missing font should not cost two passes over a large capture.
        draw::load_font(&opts.font)?;
        let (bins, notes) = bin_inputs(inputs, &opts.engine, opts.top, opts.max_responders)?;
        let picture = Picture {
            bins,
            title: title_of(inputs, opts),
            width: opts.width,
            height: opts.height,
        };
        Ok((picture, notes))
    }

    /// The picture as an SVG document (also what the HTML report embeds).
    pub fn svg(&self) -> anyhow::Result<String> {
        draw::svg(&self.bins, &self.title, self.width, self.height)
    }

    /// Write the picture to `output`, in `format`.
    pub fn write(&self, output: &Path, format: ImageFormat) -> anyhow::Result<()> {
        let bytes = match format {
            ImageFormat::Svg => self.svg()?.into_bytes(),
            ImageFormat::Png => draw::png(&self.bins, &self.title, self.width, self.height)?,
        };
        std::fs::write(output, bytes).with_context(|| format!("cannot write {}", output.display()))
    }
}

/// Bin `inputs` and write the picture to `output` (format by extension). Damaged captures
/// are reported in the returned notes; the picture holds the samples before the damage.
pub fn plot_files(
    inputs: &[PathBuf],
    output: &Path,
    opts: &PlotOptions,
) -> anyhow::Result<ScanNotes> {
    let format = ImageFormat::from_path(output)?;
    let (picture, notes) = Picture::of_files(inputs, opts)?;
    picture.write(output, format)?;
    Ok(notes)
}

/// The title: the one asked for, or the inputs' file names.
fn title_of(inputs: &[PathBuf], opts: &PlotOptions) -> String {
    opts.title.clone().unwrap_or_else(|| {
        let names: Vec<String> = inputs
            .iter()
            .map(|p| {
                p.file_name()
                    .map_or_else(|| p.display().to_string(), |n| n.to_string_lossy().into())
            })
            .collect();
        format!("RTT: {}", names.join(", "))
    })
}

/// `metro plot`. Returns the exit code: 1 when a capture was damaged (the picture holds the
/// samples before the damage).
pub fn run(args: &PlotArgs) -> anyhow::Result<i32> {
    let opts = PlotOptions {
        top: args.top,
        max_responders: args.max_responders,
        engine: EngineConfig {
            kinds: args.kinds,
            ..EngineConfig::default()
        },
        width: args.width,
        height: args.height,
        font: args.font.clone(),
        title: args.title.clone(),
    };
    let notes = plot_files(&args.inputs, &args.output, &opts)?;
    for d in &notes.damaged {
        eprintln!("metro: {d} (plotted the samples before it)");
    }
    Ok(if notes.damaged.is_empty() { 0 } else { 1 })
}
