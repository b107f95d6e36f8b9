//! Drawing [`Bins`] with plotters, on an SVG or a bitmap backend (the bitmap is encoded as
//! PNG with the `png` crate, which avoids plotters' `image` dependency).
//!
//! Text needs font metrics on both backends: plotters' `ab_glyph` feature measures (and,
//! for PNG, rasterises) with a TrueType font this module loads from a file at run time, so
//! the binary links no fontconfig or freetype. Without the file, the error names the Debian
//! package that provides it.

use std::path::Path;
use std::sync::Mutex;

use anyhow::{Context, anyhow};
use plotters::chart::MeshStyle;
use plotters::coord::Shift;
use plotters::coord::ranged1d::Ranged;
use plotters::prelude::*;
use plotters::style::FontStyle;

use super::{Bins, CDF_BINS, Marks, RTT_BINS, Series, TIME_BINS};

/// Where Debian's fonts-dejavu-core puts its sans-serif font.
pub const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// The Debian package of [`DEFAULT_FONT`].
pub const FONT_PACKAGE: &str = "fonts-dejavu-core";

const FAMILY: &str = "sans-serif";

/// Responder colours (Tableau's ten, red left out: it marks retransmissions).
const PALETTE: [RGBColor; 10] = [
    RGBColor(0x1f, 0x77, 0xb4),
    RGBColor(0xff, 0x7f, 0x0e),
    RGBColor(0x2c, 0xa0, 0x2c),
    RGBColor(0x94, 0x67, 0xbd),
    RGBColor(0x8c, 0x56, 0x4b),
    RGBColor(0xe3, 0x77, 0xc2),
    RGBColor(0xbc, 0xbd, 0x22),
    RGBColor(0x17, 0xbe, 0xcf),
    RGBColor(0x39, 0x3b, 0x79),
    RGBColor(0x63, 0x79, 0x39),
];
/// The group of other responders.
const OTHERS: RGBColor = RGBColor(0x90, 0x90, 0x90);
/// Retransmission marks (no other element of the picture has this colour).
pub const MARK: RGBColor = RGBColor(0xd6, 0x27, 0x28);

/// Up to this many samples, each non-empty cell also gets a dot.
const SPARSE: u64 = 3000;

/// The font file registered so far (plotters keeps registered fonts for the process).
static LOADED: Mutex<Option<std::path::PathBuf>> = Mutex::new(None);

/// Registers `path` as the font all text is drawn with (once per path and process).
pub fn load_font(path: &Path) -> anyhow::Result<()> {
    let mut loaded = LOADED.lock().unwrap_or_else(|p| p.into_inner());
    if loaded.as_deref() == Some(path) {
        return Ok(());
    }
    let bytes = std::fs::read(path).map_err(|e| {
        anyhow!(
            "cannot read the font {} ({e}): the plot's text is laid out with a TrueType font; \
             install it with `apt-get install {FONT_PACKAGE}` or name another .ttf file with --font",
            path.display()
        )
    })?;
    // plotters wants the font for the life of the process: leaked once per distinct path.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| anyhow!("{}: not a TrueType or OpenType font", path.display()))?;
    *loaded = Some(path.to_path_buf());
    Ok(())
}

/// The picture as an SVG document.
pub fn svg(bins: &Bins, title: &str, w: u32, h: u32) -> anyhow::Result<String> {
    let mut s = String::new();
    {
        let root = SVGBackend::with_string(&mut s, (w, h)).into_drawing_area();
        draw_all(&root, bins, title)?;
        root.present()
            .map_err(|e| anyhow!("drawing the SVG: {e}"))?;
    }
    Ok(s)
}

/// The picture as a PNG file's bytes.
pub fn png(bins: &Bins, title: &str, w: u32, h: u32) -> anyhow::Result<Vec<u8>> {
    let mut rgb = vec![0u8; w as usize * h as usize * 3];
    {
        let root = BitMapBackend::with_buffer(&mut rgb, (w, h)).into_drawing_area();
        draw_all(&root, bins, title)?;
        root.present()
            .map_err(|e| anyhow!("drawing the PNG: {e}"))?;
    }
    let mut out = Vec::new();
    let mut enc = png::Encoder::new(&mut out, w, h);
    enc.set_color(png::ColorType::Rgb);
    enc.set_depth(png::BitDepth::Eight);
    let mut wr = enc.write_header().context("encoding the PNG")?;
    wr.write_image_data(&rgb).context("encoding the PNG")?;
    wr.finish().context("encoding the PNG")?;
    Ok(out)
}

fn colour(i: usize, s: &Series) -> RGBColor {
    if s.responder.is_none() {
        OTHERS
    } else {
        PALETTE[i % PALETTE.len()]
    }
}

fn name(s: &Series, beyond_cap: bool) -> String {
    match s.responder {
        Some(a) => a.to_string(),
        None if beyond_cap => format!("{}+ other responders", s.members),
        None => format!(
            "{} other responder{}",
            s.members,
            if s.members == 1 { "" } else { "s" }
        ),
    }
}

/// An RTT in ms as `metro analyze`'s table writes it (its own copy: `analyze` uses `plot`
/// for `--plot`, so `plot` does not use `analyze`).
fn table_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.3}")
    }
}

/// An RTT in ms for an axis label: no trailing zeros.
fn fmt_ms(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.4}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

fn err<E: std::fmt::Display>(e: E) -> anyhow::Error {
    anyhow!("drawing the plot: {e}")
}

fn draw_all<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    bins: &Bins,
    title: &str,
) -> anyhow::Result<()> {
    root.fill(&WHITE).map_err(err)?;
    let (w, h) = root.dim_in_pixel();
    let (head, body) = root.split_vertically(36);
    head.draw(&Text::new(
        title.to_string(),
        (12, 8),
        (FAMILY, 20).into_font().color(&BLACK),
    ))
    .map_err(err)?;
    let (top, bottom) = body.split_vertically((h - 36) * 56 / 100);
    let (cdf, key) = bottom.split_horizontally(w * 60 / 100);
    draw_over_time(&top, bins)?;
    draw_cdf(&cdf, bins)?;
    draw_key(&key, bins)?;
    Ok(())
}

/// A non-empty cell of the RTT-over-time grid.
struct Cell {
    t: usize,
    r: usize,
    /// The series with the most samples in the cell.
    series: usize,
    /// Samples of all series in the cell.
    total: u64,
}

/// Every non-empty cell with its dominant series.
fn dominant_cells(bins: &Bins) -> Vec<Cell> {
    let mut out = Vec::new();
    for k in 0..TIME_BINS * RTT_BINS {
        let mut total = 0u64;
        let mut best = (0u32, 0usize);
        for (i, s) in bins.series.iter().enumerate() {
            let n = s.grid[k];
            total += u64::from(n);
            if n > best.0 {
                best = (n, i);
            }
        }
        if total > 0 {
            out.push(Cell {
                t: k / RTT_BINS,
                r: k % RTT_BINS,
                series: best.1,
                total,
            });
        }
    }
    out
}

/// Both charts' mesh in one look: label fonts and the two greys of the grid lines.
fn house_mesh<'m, 'a, 'b, X: Ranged, Y: Ranged, DB: DrawingBackend>(
    mesh: &'m mut MeshStyle<'a, 'b, X, Y, DB>,
) -> &'m mut MeshStyle<'a, 'b, X, Y, DB> {
    mesh.label_style((FAMILY, 12))
        .axis_desc_style((FAMILY, 13))
        .light_line_style(RGBColor(0xf0, 0xf0, 0xf0))
        .bold_line_style(RGBColor(0xd8, 0xd8, 0xd8))
}

/// RTT over time: the cells, then the retransmission marks.
fn draw_over_time<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    bins: &Bins,
) -> anyhow::Result<()> {
    let a = &bins.axes;
    let (lo, hi) = (a.rtt_lo_ms, a.rtt_hi_ms);
    // A band below the lowest RTT row holds the retransmission marks, clear of the cells.
    let band = lo / (hi / lo).powf(0.08);
    // Long captures read better in minutes or hours than in thousands of seconds: the x
    // axis counts in `unit`, `per` seconds each.
    let (unit, per) = if a.span_s > 3.0 * 3600.0 {
        ("h", 3600.0)
    } else if a.span_s > 300.0 {
        ("min", 60.0)
    } else {
        ("s", 1.0)
    };
    let x = |secs: f64| secs / per;
    let mut chart = ChartBuilder::on(area)
        .margin(8)
        .margin_right(20)
        .caption(
            "RTT over time (each cell: the responder with most samples in it; darker: more samples)",
            (FAMILY, 15),
        )
        .x_label_area_size(38)
        .y_label_area_size(64)
        .build_cartesian_2d(0f64..x(a.span_s), (band..hi).log_scale())
        .map_err(err)?;
    house_mesh(&mut chart.configure_mesh())
        .x_desc(format!(
            "time ({unit} from the first sample or retransmission)"
        ))
        .y_desc("RTT (ms, log scale)")
        .y_label_formatter(&|v| fmt_ms(*v))
        .draw()
        .map_err(err)?;
    // One rectangle per non-empty cell, in the colour of the series with the most samples
    // in it (ties: the busier series), more opaque with more samples (log scale): layered
    // translucent colours would turn into mud where responders overlap.
    let cells = dominant_cells(bins);
    let max = cells.iter().map(|c| c.total).max().unwrap_or(0);
    let scale = (1.0 + max as f64).ln().max(f64::MIN_POSITIVE);
    let rect = |c: &Cell| {
        let alpha = 0.2 + 0.8 * (1.0 + c.total as f64).ln() / scale;
        Rectangle::new(
            [
                (x(a.time_edge_s(c.t)), a.rtt_edge_ms(c.r, RTT_BINS)),
                (x(a.time_edge_s(c.t + 1)), a.rtt_edge_ms(c.r + 1, RTT_BINS)),
            ],
            colour(c.series, &bins.series[c.series]).mix(alpha).filled(),
        )
    };
    chart.draw_series(cells.iter().map(rect)).map_err(err)?;
    if bins.samples <= SPARSE {
        // Few samples: a dot on each cell too, so a lone sample is seen at a glance.
        let dot = |c: &Cell| {
            let mid = x((a.time_edge_s(c.t) + a.time_edge_s(c.t + 1)) / 2.0);
            let y = (a.rtt_edge_ms(c.r, RTT_BINS) * a.rtt_edge_ms(c.r + 1, RTT_BINS)).sqrt();
            Circle::new(
                (mid, y),
                3,
                colour(c.series, &bins.series[c.series]).filled(),
            )
        };
        chart.draw_series(cells.iter().map(dot)).map_err(err)?;
    }
    // Retransmissions: ticks rising from the time axis.
    let y_at = |frac: f64| band * (hi / lo).powf(frac);
    match &bins.marks {
        Marks::Each(ts) => {
            chart
                .draw_series(ts.iter().map(|&t| {
                    PathElement::new(vec![(x(t), band), (x(t), y_at(0.06))], MARK.stroke_width(1))
                }))
                .map_err(err)?;
        }
        Marks::Binned(counts) => {
            let max = counts.iter().copied().max().unwrap_or(0).max(1);
            let scale = (1.0 + max as f64).ln();
            chart
                .draw_series(
                    counts
                        .iter()
                        .enumerate()
                        .filter(|(_, n)| **n > 0)
                        .map(|(t, &n)| {
                            let frac = 0.015 + 0.05 * (1.0 + n as f64).ln() / scale;
                            let mid = x(a.time_edge_s(t) + a.span_s / TIME_BINS as f64 / 2.0);
                            PathElement::new(
                                vec![(mid, band), (mid, y_at(frac))],
                                MARK.stroke_width(2),
                            )
                        }),
                )
                .map_err(err)?;
        }
    }
    Ok(())
}

/// The CDF of each series' RTT.
fn draw_cdf<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, bins: &Bins) -> anyhow::Result<()> {
    let a = &bins.axes;
    let mut chart = ChartBuilder::on(area)
        .margin(8)
        .caption("RTT distribution (CDF)", (FAMILY, 15))
        .x_label_area_size(38)
        .y_label_area_size(64)
        .build_cartesian_2d((a.rtt_lo_ms..a.rtt_hi_ms).log_scale(), 0f64..1f64)
        .map_err(err)?;
    house_mesh(&mut chart.configure_mesh())
        .x_desc("RTT (ms, log scale)")
        .y_desc("fraction of samples ≤ RTT")
        .x_label_formatter(&|v| fmt_ms(*v))
        .draw()
        .map_err(err)?;
    for (i, s) in bins.series.iter().enumerate().rev() {
        let total: u64 = s.cdf.iter().sum();
        if total == 0 {
            continue;
        }
        // A step at each non-empty bin's upper edge.
        let mut pts = Vec::new();
        let mut cum = 0u64;
        for (k, &n) in s.cdf.iter().enumerate() {
            if n == 0 {
                continue;
            }
            let y0 = cum as f64 / total as f64;
            cum += n;
            let x = a.rtt_edge_ms(k + 1, CDF_BINS);
            if pts.is_empty() {
                pts.push((a.rtt_edge_ms(k, CDF_BINS), 0.0));
            }
            pts.push((x, y0));
            pts.push((x, cum as f64 / total as f64));
        }
        pts.push((a.rtt_hi_ms, 1.0));
        chart
            .draw_series(std::iter::once(PathElement::new(
                pts,
                colour(i, s).stroke_width(2),
            )))
            .map_err(err)?;
    }
    Ok(())
}

/// The key: each series' colour, name, samples and quantiles; the retransmissions.
fn draw_key<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, bins: &Bins) -> anyhow::Result<()> {
    let font = |size: i32| (FAMILY, size).into_font().color(&BLACK);
    let cols = [34, 250, 330, 400];
    let mut y = 40;
    let t = |area: &DrawingArea<DB, Shift>, s: String, x: i32, y: i32, size: i32| {
        area.draw(&Text::new(s, (x, y), font(size))).map_err(err)
    };
    t(area, "responder".into(), cols[0], y, 13)?;
    t(area, "samples".into(), cols[1], y, 13)?;
    t(area, "p50 ms".into(), cols[2], y, 13)?;
    t(area, "p99 ms".into(), cols[3], y, 13)?;
    y += 22;
    for (i, s) in bins.series.iter().enumerate() {
        area.draw(&Rectangle::new(
            [(12, y + 1), (26, y + 13)],
            colour(i, s).filled(),
        ))
        .map_err(err)?;
        t(area, name(s, bins.beyond_cap), cols[0], y, 13)?;
        t(area, s.stats.count().to_string(), cols[1], y, 13)?;
        t(area, table_ms(s.stats.quantile(0.5)), cols[2], y, 13)?;
        t(area, table_ms(s.stats.quantile(0.99)), cols[3], y, 13)?;
        y += 20;
    }
    if bins.series.is_empty() {
        t(area, "no RTT samples".into(), cols[0], y, 13)?;
        y += 20;
    }
    y += 12;
    area.draw(&Rectangle::new([(18, y), (20, y + 14)], MARK.filled()))
        .map_err(err)?;
    let retrans = if !bins.retransmits_known {
        "retransmissions: not in sample lines (plot a capture to see them)".to_string()
    } else {
        match bins.marks {
            Marks::Each(_) => format!("retransmissions: {} (one mark each)", bins.retransmits),
            Marks::Binned(_) => format!(
                "retransmissions: {} (per time column; mark height grows with the count)",
                bins.retransmits
            ),
        }
    };
    t(area, retrans, cols[0], y, 13)?;
    y += 26;
    t(
        area,
        format!(
            "{} samples from {}{} responder{}; times are the closing packets'",
            bins.samples,
            bins.responders,
            if bins.beyond_cap { "+" } else { "" },
            if bins.responders == 1 && !bins.beyond_cap {
                ""
            } else {
                "s"
            }
        ),
        12,
        y,
        12,
    )?;
    y += 18;
    t(
        area,
        format!("grid: {TIME_BINS} time columns × {RTT_BINS} RTT rows; CDF: {CDF_BINS} RTT bins"),
        12,
        y,
        12,
    )?;
    Ok(())
}
