//! Kernel module databases in the formats `depmod` writes, and the load order
//! they imply.
//!
//! - `modules.alias`: lines `alias PATTERN MODULE`; PATTERN is an `fnmatch(3)`
//!   glob (`*`, `?`, `[...]` with ranges and `!`/`^` negation) matched
//!   against a device's `modalias` (`pci:v00008086d00002922sv...`).
//! - `modules.dep`: lines `PATH: DEP_PATH...` with paths relative to
//!   `/lib/modules/$(uname -r)`; like `depmod` the dependency list is
//!   transitive and ordered so that it is loaded from the last entry to the
//!   first.
//!
//! Module names are compared with `-` and `_` equal, as the kernel does.
//! Deliberately unsupported: `modules.softdep`, `options`/`blacklist`
//! configuration and `install` commands (the live system has no modprobe.d),
//! and the binary `.bin` indexes.

use std::collections::{BTreeMap, HashSet};

/// Normalise a module name: `nvme-core` and `nvme_core` are one module.
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// The module name of a `modules.dep` path: `kernel/drivers/nvme/host/nvme-core.ko` -> `nvme_core`.
pub fn name_of_path(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

/// `fnmatch(3)` without flags, as kmod uses for `modules.alias`.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    glob(pattern.as_bytes(), text.as_bytes())
}

fn glob(p: &[u8], t: &[u8]) -> bool {
    // Iterative matcher with single-star backtracking: linear in practice,
    // and never recursive on hostile patterns.
    let (mut pi, mut ti) = (0usize, 0usize);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, ti));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    ti += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class(&p[pi..], t[ti]) {
                        if matched {
                            pi += next;
                            ti += 1;
                            continue;
                        }
                    } else if t[ti] == b'[' {
                        // An unterminated `[` matches itself.
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
                c => {
                    if c == t[ti] {
                        pi += 1;
                        ti += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, st)) => {
                pi = sp + 1;
                ti = st + 1;
                star = Some((sp, st + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Match one byte against the bracket expression at the start of `p`.
/// Returns (matched, length of the expression) or None when unterminated.
fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let negate = matches!(p.get(i), Some(b'!' | b'^'));
    if negate {
        i += 1;
    }
    let mut matched = false;
    let mut first = true;
    loop {
        let lo = *p.get(i)?;
        if lo == b']' && !first {
            return Some((matched != negate, i + 1));
        }
        first = false;
        if p.get(i + 1) == Some(&b'-') && p.get(i + 2).is_some_and(|&h| h != b']') {
            let hi = p[i + 2];
            if lo <= c && c <= hi {
                matched = true;
            }
            i += 3;
        } else {
            if lo == c {
                matched = true;
            }
            i += 1;
        }
    }
}

/// `modules.alias`: patterns in file order.
#[derive(Debug, Default, Clone)]
pub struct AliasDb {
    entries: Vec<(String, String)>,
}

impl AliasDb {
    pub fn parse(text: &str) -> AliasDb {
        let entries = text
            .lines()
            .filter_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("alias")).then_some(())?;
                let pattern = w.next()?;
                let module = w.next()?;
                Some((pattern.to_string(), normalize(module)))
            })
            .collect();
        AliasDb { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Modules whose alias matches `modalias`, in file order, without repeats.
    pub fn lookup(&self, modalias: &str) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for (pattern, module) in &self.entries {
            if glob_match(pattern, modalias) && !out.contains(&module.as_str()) {
                out.push(module);
            }
        }
        out
    }
}

/// `modules.dep`: module name -> (path, transitive dependencies as paths).
#[derive(Debug, Default, Clone)]
pub struct DepDb {
    entries: BTreeMap<String, (String, Vec<String>)>,
}

/// A module asked for is not in `modules.dep`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownModule(pub String);

impl DepDb {
    pub fn parse(text: &str) -> DepDb {
        let mut entries = BTreeMap::new();
        for line in text.lines() {
            let Some((path, deps)) = line.split_once(':') else {
                continue;
            };
            let path = path.trim();
            if path.is_empty() {
                continue;
            }
            let deps = deps.split_whitespace().map(str::to_string).collect();
            entries.insert(name_of_path(path), (path.to_string(), deps));
        }
        DepDb { entries }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn contains(&self, name: &str) -> bool {
        self.entries.contains_key(&normalize(name))
    }

    /// The module files to load, in order, so that `name` loads: its
    /// dependencies first (each dependency's own entry is followed too, so a
    /// hand-written, non-transitive `modules.dep` works as well), then the
    /// module itself. Modules in `skip` (already loaded) are left out, as are
    /// their dependencies that are only needed through them.
    pub fn load_order(
        &self,
        name: &str,
        skip: &HashSet<String>,
    ) -> Result<Vec<String>, UnknownModule> {
        let name = normalize(name);
        if !self.entries.contains_key(&name) {
            return Err(UnknownModule(name));
        }
        let mut order = Vec::new();
        let mut seen = HashSet::new();
        self.visit(&name, skip, &mut seen, &mut order, 0);
        Ok(order)
    }

    fn visit(
        &self,
        name: &str,
        skip: &HashSet<String>,
        seen: &mut HashSet<String>,
        order: &mut Vec<String>,
        depth: usize,
    ) {
        // Depth bound: a corrupt file with a dependency cycle must not hang PID 1.
        if depth > 64 || skip.contains(name) || !seen.insert(name.to_string()) {
            return;
        }
        let Some((path, deps)) = self.entries.get(name) else {
            return;
        };
        // depmod lists dependencies to be loaded last-to-first.
        for dep in deps.iter().rev() {
            self.visit(&name_of_path(dep), skip, seen, order, depth + 1);
        }
        order.push(path.clone());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_basics() {
        assert!(glob_match(
            "pci:v00008086d*sv*sd*bc01sc06i01*",
            "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"
        ));
        assert!(!glob_match(
            "pci:v00008086d*sv*sd*bc01sc06i01*",
            "pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i00"
        ));
        assert!(glob_match(
            "virtio:d00000002v*",
            "virtio:d00000002v00001AF4"
        ));
        assert!(!glob_match(
            "virtio:d00000002v*",
            "virtio:d00000001v00001AF4"
        ));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(glob_match("*", ""));
        assert!(glob_match("**a**", "bab"));
        assert!(!glob_match("", "a"));
        assert!(glob_match("abc", "abc"));
        assert!(!glob_match("abc", "abcd"));
    }

    #[test]
    fn glob_classes() {
        // As in real aliases: `usb:v1D6Bp0003d*dc*dsc*dp*ic09isc00ip0[0-3]in*`.
        assert!(glob_match("ip0[0-3]in*", "ip02in00"));
        assert!(!glob_match("ip0[0-3]in*", "ip04in00"));
        assert!(glob_match("x[!a-c]", "xd"));
        assert!(!glob_match("x[!a-c]", "xb"));
        assert!(glob_match("x[^a]", "xb"));
        assert!(glob_match("x[]]", "x]"));
        assert!(glob_match("x[a-]", "x-"));
        assert!(
            glob_match("x[", "x["),
            "unterminated bracket matches itself"
        );
        assert!(glob_match("d[0-9]*dc", "d0100dc"));
    }

    #[test]
    fn glob_is_fast_on_hostile_patterns() {
        let p = "*a*a*a*a*a*a*a*a*a*a*b";
        let t = "a".repeat(200);
        assert!(!glob_match(p, &t));
    }

    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias pci:v*d*sv*sd*bc01sc06i01* ahci
alias pci:v00001AF4d00001001sv*sd*bc*sc*i* virtio-pci
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias virtio:d00000002v* virtio_blk
alias pci:v*d*sv*sd*bc01sc08i02* nvme
alias fs-ext4 ext4
garbage line
alias incomplete
";

    #[test]
    fn alias_lookup() {
        let db = AliasDb::parse(ALIAS);
        assert_eq!(db.len(), 6);
        assert_eq!(
            db.lookup("pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"),
            ["virtio_pci"]
        );
        assert_eq!(db.lookup("virtio:d00000002v00001AF4"), ["virtio_blk"]);
        assert_eq!(
            db.lookup("pci:v00008086d00002922sv00001AF4sd00001100bc01sc06i01"),
            ["ahci"]
        );
        assert_eq!(
            db.lookup("pci:v00001B36d00000010sv00001AF4sd00001100bc01sc08i02"),
            ["nvme"]
        );
        assert!(db.lookup("acpi:PNP0A03:").is_empty());
    }

    const DEP: &str = "\
kernel/drivers/nvme/host/nvme-core.ko: kernel/lib/crc64.ko
kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko kernel/lib/crc64.ko
kernel/lib/crc64.ko:
kernel/drivers/ata/ahci.ko: kernel/drivers/ata/libahci.ko kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/ata/libahci.ko: kernel/drivers/ata/libata.ko kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/ata/libata.ko: kernel/drivers/scsi/scsi_mod.ko
kernel/drivers/scsi/scsi_mod.ko:
kernel/cycle/a.ko: kernel/cycle/b.ko
kernel/cycle/b.ko: kernel/cycle/a.ko
";

    #[test]
    fn dep_load_order() {
        let db = DepDb::parse(DEP);
        assert_eq!(db.len(), 9);
        assert!(db.contains("nvme-core") && db.contains("nvme_core"));
        let none = HashSet::new();
        assert_eq!(
            db.load_order("nvme", &none).expect("known"),
            [
                "kernel/lib/crc64.ko",
                "kernel/drivers/nvme/host/nvme-core.ko",
                "kernel/drivers/nvme/host/nvme.ko"
            ]
        );
        assert_eq!(
            db.load_order("ahci", &none).expect("known"),
            [
                "kernel/drivers/scsi/scsi_mod.ko",
                "kernel/drivers/ata/libata.ko",
                "kernel/drivers/ata/libahci.ko",
                "kernel/drivers/ata/ahci.ko"
            ]
        );
    }

    #[test]
    fn dep_skips_loaded_and_survives_cycles() {
        let db = DepDb::parse(DEP);
        let loaded: HashSet<String> = ["scsi_mod".to_string(), "libata".to_string()].into();
        assert_eq!(
            db.load_order("ahci", &loaded).expect("known"),
            [
                "kernel/drivers/ata/libahci.ko",
                "kernel/drivers/ata/ahci.ko"
            ]
        );
        assert_eq!(
            db.load_order("a", &HashSet::new()).expect("known"),
            ["kernel/cycle/b.ko", "kernel/cycle/a.ko"]
        );
        assert_eq!(
            db.load_order("nope", &HashSet::new()),
            Err(UnknownModule("nope".into()))
        );
    }

    #[test]
    fn names_of_paths() {
        assert_eq!(
            name_of_path("kernel/drivers/nvme/host/nvme-core.ko"),
            "nvme_core"
        );
        assert_eq!(name_of_path("kernel/fs/ext4/ext4.ko.xz"), "ext4");
    }
}
