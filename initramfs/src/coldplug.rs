//! Load the kernel modules for the hardware present: walk `/sys/devices` for
//! `modalias` files, look each up in `modules.alias`, and load the matches
//! with their dependencies from `modules.dep` through `finit_module(2)`.
//!
//! Devices that appear later are handled by [`crate::hotplug`] from kernel
//! uevents; when the uevent socket is not available, PID 1's main loop calls
//! [`Coldplug::scan`] again (cheap: a few thousand sysfs entries, and only
//! modaliases not seen before are looked up).
//!
//! The modules one scan finds are loaded by several threads at once: a
//! driver's probe often waits on its hardware (a SATA link coming up, an
//! NVMe controller getting ready, a NIC reset), and `finit_module(2)` only
//! returns after the probe. Loaded one after another, these waits add up
//! to most of the time between the kernel starting `/init` and `rescue`
//! being on screen. Two threads needing the same dependency are safe: the
//! kernel makes the second wait until the first has loaded it, then says
//! `EEXIST`, which counts as loaded.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::log::Log;
use crate::modules::{name_of_path, normalize, AliasDb, DepDb};
use crate::sys;

pub struct Coldplug {
    root: PathBuf,
    alias: AliasDb,
    dep: DepDb,
    loaded: Mutex<HashSet<String>>,
    seen: HashSet<String>,
    failed: Mutex<HashSet<String>>,
}

/// At most this many modules are being loaded at once.
const LOADERS: usize = 8;

impl Coldplug {
    /// Read the databases under `/lib/modules/<running kernel>`.
    pub fn open(log: &Log) -> Option<Coldplug> {
        let release = fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()?
            .trim()
            .to_string();
        let root = Path::new("/lib/modules").join(&release);
        let read = |name: &str| match fs::read_to_string(root.join(name)) {
            Ok(t) => Some(t),
            Err(e) => {
                log.warn(&format!(
                    "no {} for kernel {release}: {e}; no modules will be loaded",
                    root.join(name).display()
                ));
                None
            }
        };
        let alias = AliasDb::parse(&read("modules.alias")?);
        let dep = DepDb::parse(&read("modules.dep")?);
        let mut c = Coldplug {
            root,
            alias,
            dep,
            loaded: Mutex::new(HashSet::new()),
            seen: HashSet::new(),
            failed: Mutex::new(HashSet::new()),
        };
        c.refresh_loaded();
        Some(c)
    }

    fn refresh_loaded(&mut self) {
        if let Ok(t) = fs::read_to_string("/proc/modules") {
            let loaded = self.loaded.get_mut().unwrap_or_else(|e| e.into_inner());
            for line in t.lines() {
                if let Some(name) = line.split_whitespace().next() {
                    loaded.insert(normalize(name));
                }
            }
        }
    }

    fn is_loaded(&self, name: &str) -> bool {
        lock(&self.loaded).contains(name)
    }

    fn has_failed(&self, name: &str) -> bool {
        lock(&self.failed).contains(name)
    }

    /// Load one module by name, with its dependencies.
    pub fn load(&self, name: &str, log: &Log) -> bool {
        let name = normalize(name);
        if self.is_loaded(&name) || self.has_failed(&name) {
            return self.is_loaded(&name);
        }
        let order = self.dep.load_order(&name, &lock(&self.loaded));
        let order = match order {
            Ok(o) => o,
            Err(_) => {
                // Built into the kernel, or not in the image.
                if !Path::new("/sys/module").join(&name).exists() {
                    log.warn(&format!("module {name} is not in this image"));
                }
                lock(&self.failed).insert(name);
                return false;
            }
        };
        for path in order {
            let m = name_of_path(&path);
            if self.is_loaded(&m) {
                continue;
            }
            match fs::File::open(self.root.join(&path)).and_then(|f| sys::finit_module(&f)) {
                Ok(()) => {
                    log.info(&format!("loaded {m}"));
                    lock(&self.loaded).insert(m);
                }
                // Loaded meanwhile, by another of our threads or the kernel.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    lock(&self.loaded).insert(m);
                }
                Err(e) => {
                    log.warn(&format!(
                        "loading {m} ({}): {e}",
                        self.root.join(&path).display()
                    ));
                    let mut failed = lock(&self.failed);
                    failed.insert(m);
                    failed.insert(name);
                    return false;
                }
            }
        }
        true
    }

    /// Load `names` (with their dependencies) on up to [`LOADERS`] threads
    /// at once; true when any of them loaded.
    fn load_all(&self, names: Vec<String>, log: &Log) -> bool {
        let queue = Mutex::new(names);
        let any = std::sync::atomic::AtomicBool::new(false);
        let n = lock(&queue).len().min(LOADERS);
        std::thread::scope(|s| {
            for _ in 0..n {
                s.spawn(|| loop {
                    let Some(m) = lock(&queue).pop() else { break };
                    if self.load(&m, log) {
                        any.store(true, std::sync::atomic::Ordering::Relaxed);
                    }
                });
            }
        });
        any.into_inner()
    }

    /// Load the modules an alias (`fs-ext4`, `crypto-crc32c`) or a module
    /// name stands for, as `modprobe NAME` does.
    pub fn load_alias(&self, name: &str, log: &Log) -> bool {
        if self.dep.contains(name) {
            return self.load(name, log);
        }
        let wanted: Vec<String> = self
            .alias
            .lookup(name)
            .into_iter()
            .map(str::to_string)
            .collect();
        let mut ok = !wanted.is_empty();
        for m in wanted {
            ok &= self.load(&m, log);
        }
        ok
    }

    /// (module files, aliases) known.
    pub fn counts(&self) -> (usize, usize) {
        (self.dep.len(), self.alias.len())
    }

    /// Scan sysfs until no new module loads (loading a bus driver reveals
    /// the devices on that bus: virtio_pci, then virtio_blk). Returns the
    /// number of modules loaded.
    pub fn scan(&mut self, log: &Log) -> usize {
        let before = lock(&self.loaded).len();
        for _pass in 0..8 {
            let mut fresh = Vec::new();
            walk(Path::new("/sys/devices"), 0, &mut |alias| {
                if self.seen.insert(alias.to_string()) {
                    fresh.push(alias.to_string());
                }
            });
            if fresh.is_empty() {
                break;
            }
            let mut once = HashSet::new();
            let mut wanted: Vec<String> = fresh
                .iter()
                .flat_map(|a| self.alias.lookup(a))
                .filter(|m| once.insert(*m))
                .map(str::to_string)
                .filter(|m| !self.is_loaded(m) && !self.has_failed(m))
                .collect::<Vec<_>>();
            // The queue is taken from its end: keep the order of sysfs.
            wanted.reverse();
            if !self.load_all(wanted, log) {
                break;
            }
        }
        lock(&self.loaded).len() - before
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Call `f` with the content of every `modalias` file below `dir`, without
/// following symlinks.
fn walk(dir: &Path, depth: usize, f: &mut dyn FnMut(&str)) {
    if depth > 40 {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            walk(&e.path(), depth + 1, f);
        } else if ft.is_file() && e.file_name() == "modalias" {
            if let Ok(t) = read_small(&e.path()) {
                let t = t.trim();
                if !t.is_empty() {
                    f(t);
                }
            }
        }
    }
}

fn read_small(p: &Path) -> io::Result<String> {
    fs::read_to_string(p)
}
