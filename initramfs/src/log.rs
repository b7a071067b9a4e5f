//! PID 1's log: each line goes to the kernel log (`/dev/kmsg`, so `dmesg`
//! and the console show it) and to `/run/rescue-init.log`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::Mutex;

pub const LOG_FILE: &str = "/run/rescue-init.log";

pub struct Log {
    kmsg: Mutex<Option<File>>,
    file: Mutex<Option<File>>,
}

impl Log {
    pub fn new() -> Log {
        let kmsg = OpenOptions::new().write(true).open("/dev/kmsg").ok();
        Log {
            kmsg: Mutex::new(kmsg),
            file: Mutex::new(None),
        }
    }

    /// Start writing the log file (once `/run` is mounted).
    pub fn open_file(&self) {
        let f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(LOG_FILE)
            .ok();
        if let Ok(mut g) = self.file.lock() {
            *g = f;
        }
    }

    fn write(&self, level: u8, msg: &str) {
        if let Ok(mut g) = self.kmsg.lock() {
            match g.as_mut() {
                // One write = one kernel log record.
                Some(k) => {
                    let _ = k.write_all(format!("<{level}>rescue-init: {msg}\n").as_bytes());
                }
                None => eprintln!("rescue-init: {msg}"),
            }
        }
        if let Ok(mut g) = self.file.lock() {
            if let Some(f) = g.as_mut() {
                let _ = writeln!(f, "[{:>10.3}] {msg}", uptime().unwrap_or(0.0));
            }
        }
    }

    pub fn info(&self, msg: &str) {
        self.write(6, msg)
    }

    pub fn warn(&self, msg: &str) {
        self.write(4, msg)
    }

    pub fn error(&self, msg: &str) {
        self.write(3, msg)
    }
}

impl Default for Log {
    fn default() -> Self {
        Log::new()
    }
}

/// Seconds since the kernel started (`/proc/uptime`).
pub fn uptime() -> Option<f64> {
    std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}
