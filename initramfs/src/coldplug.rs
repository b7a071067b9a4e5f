//! Load the kernel modules for the hardware present: walk `/sys/devices` for
//! `modalias` files, look each up in `modules.alias`, and load the matches
//! with their dependencies from `modules.dep` through `finit_module(2)`.
//!
//! Devices that appear later are handled by [`crate::hotplug`] from kernel
//! uevents; when the uevent socket is not available, PID 1's main loop calls
//! [`Coldplug::scan`] again (cheap: a few thousand sysfs entries, and only
//! modaliases not seen before are looked up).

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::log::Log;
use crate::modules::{name_of_path, normalize, AliasDb, DepDb};
use crate::sys;

pub struct Coldplug {
    root: PathBuf,
    alias: AliasDb,
    dep: DepDb,
    loaded: HashSet<String>,
    seen: HashSet<String>,
    failed: HashSet<String>,
}

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
            loaded: HashSet::new(),
            seen: HashSet::new(),
            failed: HashSet::new(),
        };
        c.refresh_loaded();
        Some(c)
    }

    fn refresh_loaded(&mut self) {
        if let Ok(t) = fs::read_to_string("/proc/modules") {
            for line in t.lines() {
                if let Some(name) = line.split_whitespace().next() {
                    self.loaded.insert(normalize(name));
                }
            }
        }
    }

    /// Load one module by name, with its dependencies.
    pub fn load(&mut self, name: &str, log: &Log) -> bool {
        let name = normalize(name);
        if self.loaded.contains(&name) || self.failed.contains(&name) {
            return self.loaded.contains(&name);
        }
        let order = match self.dep.load_order(&name, &self.loaded) {
            Ok(o) => o,
            Err(_) => {
                // Built into the kernel, or not in the image.
                if !Path::new("/sys/module").join(&name).exists() {
                    log.warn(&format!("module {name} is not in this image"));
                }
                self.failed.insert(name);
                return false;
            }
        };
        for path in order {
            let m = name_of_path(&path);
            if self.loaded.contains(&m) {
                continue;
            }
            match fs::File::open(self.root.join(&path)).and_then(|f| sys::finit_module(&f)) {
                Ok(()) => {
                    log.info(&format!("loaded {m}"));
                    self.loaded.insert(m);
                }
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    self.loaded.insert(m);
                }
                Err(e) => {
                    log.warn(&format!(
                        "loading {m} ({}): {e}",
                        self.root.join(&path).display()
                    ));
                    self.failed.insert(m);
                    self.failed.insert(name);
                    return false;
                }
            }
        }
        true
    }

    /// Load the modules an alias (`fs-ext4`, `crypto-crc32c`) or a module
    /// name stands for, as `modprobe NAME` does.
    pub fn load_alias(&mut self, name: &str, log: &Log) -> bool {
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
        let before = self.loaded.len();
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
            let wanted: Vec<String> = fresh
                .iter()
                .flat_map(|a| self.alias.lookup(a))
                .map(str::to_string)
                .collect::<Vec<_>>();
            let mut any = false;
            for m in wanted {
                if !self.loaded.contains(&m) && !self.failed.contains(&m) {
                    any |= self.load(&m, log);
                }
            }
            if !any {
                break;
            }
        }
        self.loaded.len() - before
    }
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
