//! The agent's logging: tracing to stderr or to a size-rotated file, with the level and the
//! destination switchable at run time (SIGHUP reloads both).
//!
//! [`RotatingFile`] keeps `metro.log` under [`MAX_BYTES`] by renaming it to `metro.log.1`
//! (and `.1` to `.2`, ... up to [`KEEP`]) before a write would cross the limit.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, OnceLock};

use tracing::Level;
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{Layer, filter};

use super::config::LogLevel;

/// Rotate when the file would grow past this.
pub const MAX_BYTES: u64 = 10 << 20;
/// Rotated files kept besides the live one.
pub const KEEP: usize = 5;

/// A log file that rotates by size.
pub struct RotatingFile {
    path: PathBuf,
    file: File,
    size: u64,
    max: u64,
    keep: usize,
}

impl RotatingFile {
    /// Open (append to) `path`, creating its directory if needed.
    pub fn open(path: &Path, max: u64, keep: usize) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            path: path.to_path_buf(),
            file,
            size,
            max: max.max(1),
            keep,
        })
    }

    fn rotated(&self, n: usize) -> PathBuf {
        let mut p = self.path.clone().into_os_string();
        p.push(format!(".{n}"));
        PathBuf::from(p)
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file.flush()?;
        if self.keep == 0 {
            self.file = OpenOptions::new()
                .create(true)
                .write(true)
                .truncate(true)
                .open(&self.path)?;
        } else {
            let _ = std::fs::remove_file(self.rotated(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(self.rotated(n), self.rotated(n + 1));
            }
            std::fs::rename(&self.path, self.rotated(1))?;
            self.file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)?;
        }
        self.size = 0;
        Ok(())
    }
}

impl Write for RotatingFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.size > 0 && self.size + buf.len() as u64 > self.max {
            self.rotate()?;
        }
        self.file.write_all(buf)?;
        self.size += buf.len() as u64;
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

enum Target {
    Stderr,
    File(RotatingFile),
}

static TARGET: Mutex<Option<Target>> = Mutex::new(None);
static LEVEL: AtomicU8 = AtomicU8::new(2);
static INIT: OnceLock<()> = OnceLock::new();

fn level_index(l: LogLevel) -> u8 {
    match l {
        LogLevel::Trace => 0,
        LogLevel::Debug => 1,
        LogLevel::Info => 2,
        LogLevel::Warn => 3,
        LogLevel::Error | LogLevel::Critical => 4,
    }
}

fn enabled(l: &Level) -> bool {
    let i = match *l {
        Level::TRACE => 0,
        Level::DEBUG => 1,
        Level::INFO => 2,
        Level::WARN => 3,
        Level::ERROR => 4,
    };
    i >= LEVEL.load(Ordering::Relaxed)
}

/// Writes one formatted event to the current target.
pub struct TargetWriter;

impl Write for TargetWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut t = TARGET.lock().unwrap_or_else(|e| e.into_inner());
        match t.as_mut() {
            Some(Target::File(f)) => {
                if f.write(buf).is_err() {
                    // The file went away or the disk is full: stderr rather than nothing.
                    let _ = io::stderr().write_all(buf);
                }
            }
            _ => {
                let _ = io::stderr().write_all(buf);
            }
        }
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        if let Some(Target::File(f)) = TARGET.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            f.flush()?;
        }
        Ok(())
    }
}

struct MakeTarget;

impl<'a> MakeWriter<'a> for MakeTarget {
    type Writer = TargetWriter;
    fn make_writer(&'a self) -> TargetWriter {
        TargetWriter
    }
}

/// Set (or change) the level and the destination: `Some(path)` for a rotated file, `None`
/// for stderr. A file that cannot be opened falls back to stderr and returns the error.
pub fn configure(level: LogLevel, file: Option<&Path>) -> io::Result<()> {
    INIT.get_or_init(|| {
        let layer = tracing_subscriber::fmt::layer()
            .with_writer(MakeTarget)
            .with_ansi(false)
            .with_target(false)
            .with_filter(filter::filter_fn(|m| enabled(m.level())));
        // Another subscriber may exist (tests calling run() in-process): keep it.
        let _ = tracing_subscriber::registry().with(layer).try_init();
    });
    LEVEL.store(level_index(level), Ordering::Relaxed);
    let (target, result) = match file {
        None => (Target::Stderr, Ok(())),
        Some(p) => match RotatingFile::open(p, MAX_BYTES, KEEP) {
            Ok(f) => (Target::File(f), Ok(())),
            Err(e) => (Target::Stderr, Err(e)),
        },
    };
    *TARGET.lock().unwrap_or_else(|e| e.into_inner()) = Some(target);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rotates_by_size() {
        let dir = std::env::temp_dir().join(format!("metro-log-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let path = dir.join("sub/metro.log");
        let mut f = RotatingFile::open(&path, 100, 2).unwrap();
        // One write per line, as the tracing layer does (a rotation happens between writes).
        for i in 0..10 {
            f.write_all(format!("line {i:02} {}\n", "x".repeat(30)).as_bytes())
                .unwrap();
        }
        f.flush().unwrap();
        let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
        let cur = read(&path);
        let one = read(&dir.join("sub/metro.log.1"));
        let two = read(&dir.join("sub/metro.log.2"));
        assert!(cur.len() <= 100 && one.len() <= 100 && two.len() <= 100);
        assert!(cur.contains("line 09"), "{cur}");
        assert!(one.contains("line 07") || one.contains("line 06"), "{one}");
        assert!(!dir.join("sub/metro.log.3").exists());
        // Nothing lost within what is kept: lines are whole and in order across files.
        let all = format!("{two}{one}{cur}");
        let nums: Vec<u32> = all.lines().map(|l| l[5..7].parse().unwrap()).collect();
        assert!(nums.windows(2).all(|w| w[1] == w[0] + 1), "{nums:?}");
        assert_eq!(*nums.last().unwrap(), 9);
        // Reopening appends.
        drop(f);
        let f2 = RotatingFile::open(&path, 100, 2).unwrap();
        assert_eq!(f2.size, cur.len() as u64);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
