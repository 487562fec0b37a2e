//! What the person (or the script) running `sluice upload` sees.
//!
//! On a terminal: one `indicatif` bar per file plus a total, on stderr. Otherwise (a pipe,
//! a log file, `--no-progress`): no bars at all, because redrawn bars turn into noise in a
//! log; each file gets one line when it is done instead. Results always go to stdout (one
//! human line, or one JSON object with `--json`); errors also go to stderr so they show up
//! where people look for them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

/// Shared by every file of a run.
#[derive(Clone)]
pub struct Ui {
    bars: Option<Bars>,
}

#[derive(Clone)]
struct Bars {
    multi: MultiProgress,
    total: ProgressBar,
    /// Every file bar, kept alive until the end: a bar dropped while others still redraw
    /// is removed from the screen, and its final line (with the asset id) would be lost.
    files: Arc<Mutex<Vec<ProgressBar>>>,
}

fn style(template: &str) -> ProgressStyle {
    // The templates are constants; a bad one would only lose the styling, not the bar.
    ProgressStyle::with_template(template).unwrap_or_else(|_| ProgressStyle::default_bar())
}

const FILE_TEMPLATE: &str =
    "{prefix:24!} [{bar:30.cyan/blue}] {bytes:>10}/{total_bytes:10} {bytes_per_sec:>12} {msg}";
const TOTAL_TEMPLATE: &str =
    "{prefix:24!} [{bar:30.green/white}] {bytes:>10}/{total_bytes:10} eta {eta:4} {msg}";
const WAIT_TEMPLATE: &str = "{prefix:24!} [{bar:30.yellow/white}] {percent:>3}% {msg}";
const DONE_TEMPLATE: &str = "{prefix:24!} {msg}";

impl Ui {
    /// `bars`: draw progress bars (the caller decided: a TTY and no `--no-progress`).
    pub fn new(bars: bool, total_bytes: u64, files: usize) -> Self {
        let bars = bars.then(|| {
            let multi = MultiProgress::new();
            let total = multi.add(ProgressBar::new(total_bytes));
            total.set_style(style(TOTAL_TEMPLATE));
            total.set_prefix(format!("total ({files} files)"));
            total.enable_steady_tick(Duration::from_millis(250));
            Bars {
                multi,
                total,
                files: Arc::default(),
            }
        });
        Self { bars }
    }

    pub fn has_bars(&self) -> bool {
        self.bars.is_some()
    }

    /// A bar for one file (nothing is drawn until [`FileProgress::start`]).
    /// `planned`: the bytes this file added to the total bar's length.
    pub fn file(&self, name: &str, planned: u64) -> FileProgress {
        let bar = self.bars.as_ref().map(|b| {
            // Inserted above the total, which stays the last line.
            let pb = b.multi.insert_before(&b.total, ProgressBar::new(0));
            pb.set_style(style(FILE_TEMPLATE));
            pb.set_prefix(name.to_string());
            pb.set_message("waiting");
            b.files
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(pb.clone());
            pb
        });
        FileProgress {
            bar,
            total: self.bars.as_ref().map(|b| b.total.clone()),
            pos: Arc::new(AtomicU64::new(0)),
            planned,
        }
    }

    /// A message that must not be lost: above the bars, or on stderr.
    pub fn note(&self, msg: &str) {
        match &self.bars {
            Some(b) => {
                if b.multi.println(msg).is_err() {
                    eprintln!("{msg}");
                }
            }
            None => eprintln!("{msg}"),
        }
    }

    /// All files are done: stop redrawing so the summary prints cleanly below.
    pub fn finish(&self) {
        if let Some(b) = &self.bars {
            for pb in b
                .files
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
            {
                if !pb.is_finished() {
                    pb.abandon();
                }
            }
            b.total.finish_with_message("done");
        }
    }
}

/// Progress of one file; cheap to clone into the request body stream.
#[derive(Clone)]
pub struct FileProgress {
    bar: Option<ProgressBar>,
    total: Option<ProgressBar>,
    /// Bytes counted for this file so far, to keep the total bar in step when the position
    /// moves back after a failed request.
    pos: Arc<AtomicU64>,
    /// This file's share of the total bar's length.
    planned: u64,
}

impl FileProgress {
    /// The upload begins (or resumes) at `offset` of `size` bytes.
    pub fn start(&self, size: u64, offset: u64, resumed: bool) {
        if let Some(b) = &self.bar {
            b.set_length(size);
            b.set_message(if resumed { "resumed" } else { "uploading" });
            b.reset_eta();
        }
        self.set(offset);
    }

    /// `n` more bytes went out.
    pub fn inc(&self, n: u64) {
        self.pos.fetch_add(n, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        if let Some(t) = &self.total {
            t.inc(n);
        }
    }

    /// The committed offset is `pos` (after a resume or a failed request).
    pub fn set(&self, pos: u64) {
        let old = self.pos.swap(pos, Ordering::Relaxed);
        if let Some(b) = &self.bar {
            b.set_position(pos);
        }
        if let Some(t) = &self.total {
            if pos >= old {
                t.inc(pos - old);
            } else {
                t.dec(old - pos);
            }
        }
    }

    pub fn message(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.set_message(msg);
        }
    }

    /// Switch the bar to following the server's processing progress (`--wait`).
    pub fn waiting(&self) {
        if let Some(b) = &self.bar {
            b.set_style(style(WAIT_TEMPLATE));
            b.set_length(1000);
            b.set_position(0);
            b.set_message("queued");
            b.enable_steady_tick(Duration::from_millis(250));
        }
    }

    /// Processing progress in 0.0..=1.0 and the asset's status.
    pub fn processing(&self, progress: f64, status: &str) {
        if let Some(b) = &self.bar {
            b.set_position((progress.clamp(0.0, 1.0) * 1000.0).round() as u64);
            b.set_message(status.to_string());
        }
    }

    pub fn finish(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.finish_with_message(msg);
        }
    }

    /// The upload failed: a plain line instead of a bar, and its bytes no longer count
    /// towards the total, so the total bar can still reach its end.
    pub fn upload_failed(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.set_style(style(DONE_TEMPLATE));
            b.abandon_with_message(msg);
        }
        if let Some(t) = &self.total {
            let done = self.pos.swap(0, Ordering::Relaxed);
            t.dec(done);
            t.set_length(t.length().unwrap_or(0).saturating_sub(self.planned));
        }
    }

    /// The asset failed after a complete upload: its bytes did go out, so the total stays.
    pub fn asset_failed(&self, msg: String) {
        if let Some(b) = &self.bar {
            b.abandon_with_message(msg);
        }
    }
}
