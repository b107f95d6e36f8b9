//! The shared corpus (148 real captures), which CI lays beside the clone as ../shared, and
//! reading what `metro analyze` and tshark say of it.

use std::path::{Path, PathBuf};

pub fn corpus_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared/corpus");
    assert!(
        dir.is_dir(),
        "the shared corpus must be at {} (CI lays shared/ beside the clone)",
        dir.display()
    );
    dir
}

pub fn corpus_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(corpus_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let n = p.file_name().unwrap().to_string_lossy();
            !n.ends_with(".md") && !n.ends_with(".tsv")
        })
        .collect();
    files.sort();
    assert!(
        files.len() >= 140,
        "corpus looks incomplete: {}",
        files.len()
    );
    files
}

/// A sample line of `metro analyze --samples`: (frame, open_frame, kind, RTT in seconds).
pub type SampleLine = (u64, u64, String, f64);

/// The sample lines `metro analyze --samples` wrote.
pub fn sample_lines(jsonl: &[u8]) -> Vec<SampleLine> {
    std::str::from_utf8(jsonl)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (
                v["frame"].as_u64().unwrap(),
                v["open_frame"].as_u64().unwrap(),
                v["kind"].as_str().unwrap().to_string(),
                v["rtt_ms"].as_f64().unwrap() / 1000.0,
            )
        })
        .collect()
}

/// The rows of a tshark expectations file (tests/data/tshark_*.tsv, made by
/// scripts/tshark-*expectations.sh): its tab-separated fields, comments and header skipped.
pub fn tshark_rows(tsv: &str) -> impl Iterator<Item = Vec<&str>> {
    tsv.lines()
        .filter(|l| !l.starts_with('#'))
        .skip(1)
        .map(|l| l.split('\t').collect())
}
