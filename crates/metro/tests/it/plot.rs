//! `metro plot` and `metro analyze --plot/--report`, end to end through the binary: the SVG
//! parses as XML and shows the responders, sample counts and retransmissions that
//! `metro analyze` reports for the same input; the PNG has the PNG signature, the asked
//! dimensions and visible text and marks; the cells drawn from sample lines are the cells a
//! separate binning of those lines (done here) finds; bad input is named.

use crate::support::agent::{TempDir, metro};

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use metro_testkit::generator::{GenConfig, write_capture};
use serde_json::Value;

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../examples/scp-upload.pcap"
);
/// The palette's first colour (the busiest responder) and the retransmission marks'.
const FIRST: &str = "#1F77B4";
const MARK: &str = "#D62728";

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A generated capture with enough loss for retransmissions, more than 8 responders.
fn generated(dir: &Path) -> PathBuf {
    let cfg = GenConfig {
        seed: 7,
        packets: 30_000,
        connections: 300,
        servers: 30,
        loss: 0.01,
        ..GenConfig::default()
    };
    let mut bytes = Vec::new();
    write_capture(&cfg, &mut bytes).unwrap();
    let p = dir.join("gen.pcap");
    std::fs::write(&p, bytes).unwrap();
    p
}

/// `metro analyze --format json` of `file`: (responders as (address, samples), most
/// samples first; retransmissions).
fn analyze(file: &Path) -> (Vec<(String, u64)>, u64) {
    let out = metro(&["analyze", "-q", "--format", "json", s(file)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let rs = doc["responders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["responder"].as_str().unwrap().to_string(),
                r["samples"].as_u64().unwrap(),
            )
        })
        .collect();
    (rs, doc["summary"]["retransmissions"].as_u64().unwrap())
}

/// What a plot's SVG holds: every text, and the elements by tag.
struct Svg {
    texts: Vec<String>,
    /// (stroke, points) of every polyline.
    polylines: Vec<(String, String)>,
    /// (fill, opacity) of every rect.
    rects: Vec<(String, f64)>,
    width: String,
    height: String,
}

fn parse_svg(path: &Path) -> Svg {
    let text = std::fs::read_to_string(path).unwrap();
    let doc = roxmltree::Document::parse(&text).expect("the SVG is well-formed XML");
    let root = doc.root_element();
    assert_eq!(root.tag_name().name(), "svg");
    let mut svg = Svg {
        texts: Vec::new(),
        polylines: Vec::new(),
        rects: Vec::new(),
        width: root.attribute("width").unwrap().to_string(),
        height: root.attribute("height").unwrap().to_string(),
    };
    for n in root.descendants().filter(|n| n.is_element()) {
        match n.tag_name().name() {
            "text" => svg
                .texts
                .push(n.text().unwrap_or_default().trim().to_string()),
            "polyline" => svg.polylines.push((
                n.attribute("stroke").unwrap_or_default().to_string(),
                n.attribute("points").unwrap_or_default().to_string(),
            )),
            "rect" => svg.rects.push((
                n.attribute("fill").unwrap_or_default().to_string(),
                n.attribute("opacity")
                    .and_then(|o| o.parse().ok())
                    .unwrap_or(1.0),
            )),
            _ => {}
        }
    }
    svg
}

impl Svg {
    fn has_text(&self, t: &str) -> bool {
        self.texts.iter().any(|x| x == t)
    }
    fn marks(&self) -> usize {
        self.polylines.iter().filter(|(c, _)| c == MARK).count()
    }
}

#[test]
fn svg_of_the_bundled_example_shows_its_responders_and_counts() {
    let dir = TempDir::new("plot-example");
    let out_svg = dir.join("rtt.svg");
    let out = metro(&["plot", "-o", s(&out_svg), EXAMPLE]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = parse_svg(&out_svg);
    assert_eq!((svg.width.as_str(), svg.height.as_str()), ("1200", "800"));
    let (responders, retransmits) = analyze(Path::new(EXAMPLE));
    assert_eq!(responders.len(), 2);
    for (addr, n) in &responders {
        assert!(svg.has_text(addr), "{addr} not in {:?}", svg.texts);
        assert!(
            svg.has_text(&n.to_string()),
            "count {n} not in {:?}",
            svg.texts
        );
    }
    // No group of others with two responders and the default --top 8.
    assert!(!svg.texts.iter().any(|t| t.contains("other responder")));
    assert_eq!(svg.marks(), retransmits as usize);
    assert!(svg.has_text(&format!("retransmissions: {retransmits} (one mark each)")));
    // One CDF line per responder, in its colour.
    for colour in [FIRST, "#FF7F0E"] {
        assert_eq!(
            svg.polylines.iter().filter(|(c, _)| c == colour).count(),
            1,
            "{colour}"
        );
    }
    assert!(svg.rects.iter().any(|(f, o)| f == FIRST && *o < 1.0));
}

#[test]
fn svg_of_a_generated_capture_marks_every_retransmission_and_groups_the_rest() {
    let dir = TempDir::new("plot-gen-svg");
    let cap = generated(&dir);
    let (responders, retransmits) = analyze(&cap);
    assert!(responders.len() > 8, "{}", responders.len());
    assert!(retransmits > 10, "{retransmits}");
    let out_svg = dir.join("rtt.svg");
    let out = metro(&["plot", "-o", s(&out_svg), s(&cap)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = parse_svg(&out_svg);
    assert_eq!(svg.marks(), retransmits as usize);
    assert!(svg.has_text(&format!("retransmissions: {retransmits} (one mark each)")));
    for (addr, n) in &responders[..8] {
        assert!(svg.has_text(addr), "{addr}");
        assert!(svg.has_text(&n.to_string()), "{addr}: {n}");
    }
    for (addr, _) in &responders[8..] {
        assert!(!svg.has_text(addr), "{addr} should be grouped");
    }
    let others: u64 = responders[8..].iter().map(|r| r.1).sum();
    assert!(svg.has_text(&format!("{} other responders", responders.len() - 8)));
    assert!(
        svg.has_text(&others.to_string()),
        "others' samples {others}"
    );

    // --top 3: three responders by name, the rest grouped.
    let out = metro(&["plot", "--top", "3", "-o", s(&out_svg), s(&cap)]);
    assert!(out.status.success());
    let svg = parse_svg(&out_svg);
    assert!(svg.has_text(&responders[2].0));
    assert!(!svg.has_text(&responders[3].0));
    assert!(svg.has_text(&format!("{} other responders", responders.len() - 3)));
}

#[test]
fn png_has_the_signature_the_size_text_and_marks() {
    let dir = TempDir::new("plot-png");
    let cap = generated(&dir);
    let out_png = dir.join("rtt.png");
    let out = metro(&[
        "plot",
        "--width",
        "900",
        "--height",
        "600",
        "-o",
        s(&out_png),
        s(&cap),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&out_png).unwrap();
    assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n");
    let mut reader = png::Decoder::new(std::io::Cursor::new(&bytes))
        .read_info()
        .unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    assert_eq!((info.width, info.height), (900, 600));
    assert_eq!(info.color_type, png::ColorType::Rgb);
    let px = |x: usize, y: usize| {
        let i = (y * 900 + x) * 3;
        (buf[i], buf[i + 1], buf[i + 2])
    };
    // The title band (top 36 rows, left part) has dark pixels: the text was rasterised.
    let dark = (0..36)
        .flat_map(|y| (0..300).map(move |x| (x, y)))
        .filter(|&(x, y)| {
            let (r, g, b) = px(x, y);
            u32::from(r) + u32::from(g) + u32::from(b) < 200
        })
        .count();
    assert!(dark > 50, "{dark} dark pixels in the title");
    // Retransmission marks in their red; the busiest responder's blue (blended or not).
    let red = (0..600)
        .flat_map(|y| (0..900).map(move |x| (x, y)))
        .filter(|&(x, y)| px(x, y) == (0xd6, 0x27, 0x28))
        .count();
    assert!(red > 20, "{red} mark pixels");
}

/// Sample lines in, cells out: the cells drawn in the busiest responder's colour are those
/// where this test's own binning of the lines (280 time columns over the sample times, 110
/// log rows between the decades around the smallest and largest RTT) finds it has the most
/// samples among the top 8 and the group of the others (ties to the busier).
#[test]
fn plotting_sample_lines_draws_the_cells_they_fall_in() {
    let dir = TempDir::new("plot-lines");
    let cap = generated(&dir);
    let lines = dir.join("s.jsonl");
    let out = metro(&["analyze", "-q", "--samples", s(&lines), s(&cap)]);
    assert!(out.status.success());
    let text = std::fs::read_to_string(&lines).unwrap();
    let samples: Vec<(i64, String, i64)> = text
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap();
            let ts = (v["ts"].as_f64().unwrap() * 1e9) as i64;
            let rtt = ((v["rtt_ms"].as_f64().unwrap() * 1e6).round() as i64).max(1);
            (ts, v["src"].as_str().unwrap().to_string(), rtt)
        })
        .collect();
    let (responders, _) = analyze(&cap);
    let series_of = |addr: &str| {
        responders[..8]
            .iter()
            .position(|r| r.0 == addr)
            .unwrap_or(8)
    };
    let t0 = samples.iter().map(|s| s.0).min().unwrap();
    let t1 = samples.iter().map(|s| s.0).max().unwrap();
    let r0 = samples.iter().map(|s| s.2).min().unwrap() as f64 / 1e6;
    let r1 = samples.iter().map(|s| s.2).max().unwrap() as f64 / 1e6;
    let lo = 10f64.powf(r0.log10().floor());
    let hi = 10f64.powf(r1.log10().ceil());
    let span = (t1 - t0) as f64 / 1e9;
    let mut counts: HashMap<(usize, usize), [u32; 9]> = HashMap::new();
    for (ts, addr, rtt) in &samples {
        let t = (((ts - t0) as f64 / 1e9 / span * 280.0) as usize).min(279);
        let f = ((*rtt as f64 / 1e6 / lo).ln() / (hi / lo).ln()).clamp(0.0, 1.0);
        let r = ((f * 110.0) as usize).min(109);
        counts.entry((t, r)).or_default()[series_of(addr)] += 1;
    }
    let dominated_by = |want: usize| {
        counts
            .values()
            .filter(|c| {
                let max = *c.iter().max().unwrap();
                c.iter().position(|&n| n == max) == Some(want)
            })
            .count()
    };
    let out_svg = dir.join("lines.svg");
    let out = metro(&["plot", "-o", s(&out_svg), s(&lines)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = parse_svg(&out_svg);
    // Cells are translucent (opacity < 1) but for the fullest; the key's swatch is one
    // opaque rect of each colour.
    let drawn = |colour: &str| svg.rects.iter().filter(|(f, _)| f == colour).count() - 1;
    let first = dominated_by(0);
    assert!(first > 100, "{first} cells");
    assert_eq!(drawn(FIRST), first);
    assert_eq!(drawn("#FF7F0E"), dominated_by(1));
    assert_eq!(drawn("#909090"), dominated_by(8));
    assert_eq!(
        svg.rects.iter().filter(|(_, o)| *o < 1.0).count() + 1,
        counts.len(),
        "one rect per non-empty cell"
    );
    assert!(svg.has_text(&responders[0].0));
    assert!(svg.has_text("retransmissions: not in sample lines (plot a capture to see them)"));
    assert_eq!(svg.marks(), 0);
}

#[test]
fn a_malformed_sample_line_is_named_by_its_number() {
    let dir = TempDir::new("plot-bad-line");
    let lines = dir.join("s.jsonl");
    std::fs::write(
        &lines,
        "{\"ts\":1.5,\"kind\":\"seq\",\"src\":\"10.0.0.1\",\"rtt_ms\":2.5}\n\n\
         {\"ts\":1.6,\"kind\":\"seq\",\"src\":\"10.0.0.1\",\"rtt_ms\":\"x\"}\n",
    )
    .unwrap();
    let out = metro(&["plot", "-o", s(&dir.join("x.svg")), s(&lines)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{}:3: not a sample line", lines.display())),
        "{err}"
    );
    assert!(!dir.join("x.svg").exists());
}

#[test]
fn bad_output_names_inputs_and_fonts_are_explained() {
    let dir = TempDir::new("plot-errors");
    let out = metro(&["plot", "-o", s(&dir.join("x.jpg")), EXAMPLE]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("use .svg or .png"));

    let out = metro(&[
        "plot",
        "--font",
        "/nonexistent/font.ttf",
        "-o",
        s(&dir.join("x.png")),
        EXAMPLE,
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/nonexistent/font.ttf") && err.contains("apt-get install fonts-dejavu-core"),
        "{err}"
    );

    let junk = dir.join("junk.bin");
    std::fs::write(&junk, b"hello, not a capture").unwrap();
    let out = metro(&["plot", "-o", s(&dir.join("x.svg")), s(&junk)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("junk.bin") && err.contains("not a pcap"),
        "{err}"
    );

    let out = metro(&["plot", "-o", s(&dir.join("x.svg")), "-"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read standard input"));

    let out = metro(&["plot", "--top", "11", "-o", s(&dir.join("x.svg")), EXAMPLE]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn analyze_writes_the_plot_and_a_self_contained_report() {
    let dir = TempDir::new("plot-report");
    let png = dir.join("a.png");
    let html = dir.join("a.html");
    let out = metro(&["analyze", "--plot", s(&png), "--report", s(&html), EXAMPLE]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("162.243.251.92      198"));
    assert_eq!(&std::fs::read(&png).unwrap()[..8], b"\x89PNG\r\n\x1a\n");
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.starts_with("<!DOCTYPE html>"));
    // The same table as standard output, escaped, and the plot inline.
    let first_row = table.lines().nth(2).unwrap();
    assert!(page.contains(first_row), "{first_row}");
    assert!(page.contains("<svg") && page.contains("162.243.251.92"));
    assert!(page.contains("summary: 1 files, 657 records"));
    // Nothing to fetch: no scripts, no links, no URL but the SVG namespace.
    assert!(!page.contains("<script") && !page.contains("<link"));
    let urls = page.matches("http").count();
    let ns = page.matches("xmlns=\"http://www.w3.org/2000/svg\"").count();
    assert_eq!(urls, ns);
    // The SVG inside parses.
    let start = page.find("<svg").unwrap();
    let end = page.rfind("</svg>").unwrap() + "</svg>".len();
    roxmltree::Document::parse(&page[start..end]).expect("inline SVG is XML");
}

/// A capture cut short: the picture holds the samples before the cut (as many as
/// `metro analyze` finds in the same bytes), and the exit status says the file was damaged.
#[test]
fn a_cut_capture_is_plotted_up_to_the_cut_and_reported() {
    let dir = TempDir::new("plot-cut");
    let cap = generated(&dir);
    let bytes = std::fs::read(&cap).unwrap();
    let cut = dir.join("cut.pcap");
    std::fs::write(&cut, &bytes[..bytes.len() / 2 + 7]).unwrap();
    let out = metro(&["analyze", "-q", "--format", "json", s(&cut)]);
    assert_eq!(out.status.code(), Some(1));
    let doc: Value = serde_json::from_slice(&out.stdout).unwrap();
    let samples: u64 = doc["responders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["samples"].as_u64().unwrap())
        .sum();
    assert!(samples > 1000, "{samples}");
    let out_svg = dir.join("cut.svg");
    let out = metro(&["plot", "-o", s(&out_svg), s(&cut)]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("cut.pcap: cut short at byte offset")
            && err.contains("plotted the samples before it"),
        "{err}"
    );
    let svg = parse_svg(&out_svg);
    assert!(
        svg.texts
            .iter()
            .any(|t| t.starts_with(&format!("{samples} samples from "))),
        "{:?}",
        svg.texts
    );
}

/// The report page lists the files that could not be read, and plots the others.
#[test]
fn the_report_names_unreadable_files_and_plots_the_rest() {
    let dir = TempDir::new("plot-report-errors");
    let junk = dir.join("<junk>.pcap");
    std::fs::write(&junk, "not a capture").unwrap();
    let html = dir.join("r.html");
    let out = metro(&["analyze", "-q", "--report", s(&html), s(&junk), EXAMPLE]);
    assert_eq!(out.status.code(), Some(1));
    let page = std::fs::read_to_string(&html).unwrap();
    assert!(page.contains("<h2>Errors</h2>"));
    // Its name is escaped wherever it appears; the plot is of the example alone.
    assert!(
        page.contains("&lt;junk&gt;.pcap: not a pcap or pcapng file"),
        "{page}"
    );
    assert!(!page.contains("<junk>"));
    assert!(page.contains("241 samples from 2 responders"));
}
