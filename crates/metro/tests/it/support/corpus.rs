//! The shared corpus (148 real captures), which CI lays beside the clone as ../shared.

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
