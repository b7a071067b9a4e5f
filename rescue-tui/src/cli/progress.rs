//! Progress on stderr: a live status line on a terminal, plain lines every few
//! seconds otherwise, NDJSON events with --json.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use imaging::blockdev::human_size;
use imaging::task::Progress;

struct Phase {
    name: String,
    total: u64,
    start: Instant,
}

pub struct StderrProgress {
    tty: bool,
    json: bool,
    done: AtomicU64,
    /// Milliseconds since `epoch` of the last print.
    last_print: AtomicU64,
    epoch: Instant,
    phase: Mutex<Option<Phase>>,
}

impl StderrProgress {
    pub fn new(json: bool) -> Self {
        Self {
            tty: std::io::stderr().is_terminal(),
            json,
            done: AtomicU64::new(0),
            last_print: AtomicU64::new(0),
            epoch: Instant::now(),
            phase: Mutex::new(None),
        }
    }

    fn print(&self, final_line: bool) {
        let Ok(g) = self.phase.lock() else { return };
        let Some(p) = g.as_ref() else { return };
        let done = self.done.load(Ordering::Relaxed);
        let secs = p.start.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let mut err = std::io::stderr().lock();
        if self.json {
            let _ = writeln!(
                err,
                "{}",
                serde_json::json!({"event": if final_line {"phase-done"} else {"progress"}, "phase": p.name, "done": done, "total": p.total, "bytes_per_second": rate as u64})
            );
            return;
        }
        let pct = if p.total > 0 { format!("{:5.1}%", done as f64 * 100.0 / p.total as f64) } else { String::new() };
        let eta = if p.total > done && rate > 0.0 { format!(" ETA {}", fmt_secs((p.total - done) as f64 / rate)) } else { String::new() };
        let line = format!("{}: {pct} {} of {} at {}/s{eta}", p.name, human_size(done), human_size(p.total), human_size(rate as u64));
        if self.tty {
            let _ = write!(err, "\r\x1b[2K{line}");
            if final_line {
                let _ = writeln!(err, " ({})", fmt_secs(secs));
            }
        } else {
            let _ = writeln!(err, "{line}{}", if final_line { format!(" (done in {})", fmt_secs(secs)) } else { String::new() });
        }
    }
}

fn fmt_secs(s: f64) -> String {
    let s = s.round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

impl Progress for StderrProgress {
    fn begin(&self, phase: &str, total: u64) {
        self.done.store(0, Ordering::Relaxed);
        if let Ok(mut g) = self.phase.lock() {
            *g = Some(Phase { name: phase.to_string(), total, start: Instant::now() });
        }
    }

    fn advance(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
        let now = self.epoch.elapsed().as_millis() as u64;
        let every = if self.tty { 200 } else { 5000 };
        let last = self.last_print.load(Ordering::Relaxed);
        if now.saturating_sub(last) >= every && self.last_print.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok() {
            self.print(false);
        }
    }

    fn note(&self, msg: &str) {
        if self.json {
            eprintln!("{}", serde_json::json!({"event": "note", "message": msg}));
        } else {
            eprintln!("{}{msg}", if self.tty { "\r\x1b[2K" } else { "" });
        }
    }

    fn finish(&self) {
        self.print(true);
    }
}

/// A second sink that hears everything the terminal does: `rescue job`
/// reports the progress of the command it runs to the PXE server.
static ALSO: std::sync::OnceLock<std::sync::Arc<dyn Progress>> = std::sync::OnceLock::new();

/// Send the progress of every task from now on to `p` too (once per process).
pub fn also_report_to(p: std::sync::Arc<dyn Progress>) {
    let _ = ALSO.set(p);
}

/// The terminal's sink, plus the one of [`also_report_to`] when set.
pub fn sink(json: bool) -> std::sync::Arc<dyn Progress> {
    let term = std::sync::Arc::new(StderrProgress::new(json));
    match ALSO.get() {
        Some(also) => std::sync::Arc::new(Tee(term, also.clone())),
        None => term,
    }
}

struct Tee(std::sync::Arc<StderrProgress>, std::sync::Arc<dyn Progress>);

impl Progress for Tee {
    fn begin(&self, phase: &str, total: u64) {
        self.0.begin(phase, total);
        self.1.begin(phase, total);
    }

    fn advance(&self, n: u64) {
        self.0.advance(n);
        self.1.advance(n);
    }

    fn note(&self, msg: &str) {
        self.0.note(msg);
        self.1.note(msg);
    }

    fn finish(&self) {
        self.0.finish();
        self.1.finish();
    }
}
