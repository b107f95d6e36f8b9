//! A one-line progress bar on standard error, only when it is a terminal.

use std::io::Write;
use std::time::{Duration, Instant};

pub struct Bar {
    enabled: bool,
    name: String,
    total: u64,
    started: Instant,
    last: Instant,
    drawn: bool,
}

impl Bar {
    pub fn new(enabled: bool, name: &str, total: u64) -> Bar {
        let now = Instant::now();
        Bar {
            enabled,
            name: name.to_string(),
            total,
            started: now,
            last: now,
            drawn: false,
        }
    }

    /// Redraw at most four times a second, and only after the first half second.
    pub fn update(&mut self, done: u64) {
        if !self.enabled {
            return;
        }
        let now = Instant::now();
        if now.duration_since(self.started) < Duration::from_millis(500)
            || now.duration_since(self.last) < Duration::from_millis(250)
        {
            return;
        }
        self.last = now;
        let frac = if self.total > 0 {
            (done as f64 / self.total as f64).min(1.0)
        } else {
            0.0
        };
        let width = 30;
        let filled = (frac * width as f64) as usize;
        let secs = now.duration_since(self.started).as_secs_f64();
        let rate = done as f64 / secs / 1e6;
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\r{} [{}{}] {:5.1}% {:.1} MB/s",
            self.name,
            "#".repeat(filled),
            " ".repeat(width - filled),
            frac * 100.0,
            rate
        );
        let _ = err.flush();
        self.drawn = true;
    }

    pub fn clear(&mut self) {
        if self.drawn {
            let _ = write!(std::io::stderr(), "\r\x1b[2K");
            self.drawn = false;
        }
    }
}
