//! Choose kernel modules from an unpacked kernel package and write the
//! `modules.dep` / `modules.alias` of that subset, the way `depmod` would,
//! from each module's `.modinfo` (`depends=`, `alias=`, `softdep=`,
//! `firmware=`). No `depmod` run, no root.
//!
//! `modules.dep` lists each module's dependencies transitively, ordered so
//! that they load from the last entry to the first (kmod's convention).
//! Deliberately not written: `modules.symbols`, `modules.softdep` and the
//! binary `.bin` indexes (`rescue-init` reads only the text files; soft
//! dependencies are added to the module set instead).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

use crate::elf::Elf;
use crate::Error;

/// The modules the live system carries by default: storage controllers,
/// NICs, USB and input for a keyboard, filesystems and fuse (see the boot
/// media issue). Names missing from a kernel are reported, not fatal.
pub const DEFAULT_MODULES: &[&str] = &[
    // storage
    "nvme",
    "ahci",
    "ata_piix",
    "ata_generic",
    "pata_acpi",
    "vmd",
    "megaraid_sas",
    "mpt3sas",
    "smartpqi",
    "hpsa",
    "aacraid",
    "virtio_blk",
    "virtio_scsi",
    "virtio_pci",
    "sd_mod",
    "sr_mod",
    "usb_storage",
    "uas",
    "mmc_block",
    "sdhci_pci",
    "sdhci_acpi",
    "rtsx_pci_sdmmc",
    "hv_storvsc",
    "hv_vmbus",
    "xen_blkfront",
    "vmw_pvscsi",
    "nvme_fabrics",
    "raid0",
    "raid1",
    "raid10",
    "raid456",
    "dm_mod",
    "dm_crypt",
    "dm_raid",
    "loop",
    // network
    "e1000",
    "e1000e",
    "igb",
    "igc",
    "ixgbe",
    "i40e",
    "ice",
    "r8169",
    "r8152",
    "tg3",
    "bnx2x",
    "bnxt_en",
    "mlx5_core",
    "virtio_net",
    "vmxnet3",
    "hv_netvsc",
    "xen_netfront",
    "atlantic",
    "alx",
    "be2net",
    "cdc_ether",
    "ax88179_178a",
    "usbnet",
    // USB host controllers and keyboards
    "xhci_pci",
    "ehci_pci",
    "ohci_pci",
    "uhci_hcd",
    "usbhid",
    "hid_generic",
    "hid_apple",
    "hid_microsoft",
    "hyperv_keyboard",
    // filesystems
    "ext4",
    "vfat",
    // vfat's default iocharset in Debian's kernel (without it no FAT
    // filesystem mounts: "IO charset ascii not found")
    "nls_ascii",
    "nls_cp437",
    "nls_iso8859_1",
    "nls_utf8",
    "exfat",
    "fuse",
    "isofs",
    "udf",
    "btrfs",
    "xfs",
    "ntfs3",
    "squashfs",
    "overlay",
    "efivarfs",
    // misc
    "virtio_console",
    "virtio_rng",
    "crc32c_generic",
    "crc32c_intel",
];

/// One module file of the kernel package.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Module {
    pub name: String,
    /// Relative to `/lib/modules/<version>`.
    pub path: String,
    pub depends: Vec<String>,
    #[serde(skip)]
    pub aliases: Vec<String>,
    pub firmware: Vec<String>,
    pub size: u64,
}

/// The modules of one kernel tree (`lib/modules/<version>`).
pub struct Tree {
    pub version: String,
    pub root: PathBuf,
    /// module name -> path relative to `root`.
    files: BTreeMap<String, String>,
    builtin: BTreeSet<String>,
}

/// The outcome of choosing modules.
#[derive(Debug, Default, serde::Serialize)]
pub struct Selection {
    pub modules: BTreeMap<String, Module>,
    /// Asked for, but built into this kernel (nothing to load).
    pub builtin: Vec<String>,
    /// Asked for, but neither a module file nor built in.
    pub missing: Vec<String>,
}

pub fn normalize(name: &str) -> String {
    name.trim().trim_end_matches(".ko").replace('-', "_")
}

impl Tree {
    /// Index `root` (`.../lib/modules/<version>`): every `*.ko` below `kernel/`.
    pub fn open(root: &Path) -> Result<Tree, Error> {
        let version = root
            .file_name()
            .map(|s| s.to_string_lossy().to_string())
            .ok_or_else(|| Error::Missing {
                what: "kernel module directory".into(),
                path: root.to_path_buf(),
                package: None,
            })?;
        let mut files = BTreeMap::new();
        let mut stack = vec![root.join("kernel")];
        while let Some(dir) = stack.pop() {
            let entries = fs::read_dir(&dir).map_err(|e| Error::io("listing", &dir, e))?;
            for e in entries {
                let e = e.map_err(|e| Error::io("listing", &dir, e))?;
                let ft = e
                    .file_type()
                    .map_err(|e| Error::io("listing", &e_path(&dir), e))?;
                let p = e.path();
                if ft.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "ko") {
                    let rel = p
                        .strip_prefix(root)
                        .unwrap_or(&p)
                        .to_string_lossy()
                        .to_string();
                    let name = normalize(&e.file_name().to_string_lossy());
                    files.insert(name, rel);
                }
            }
        }
        let builtin = fs::read_to_string(root.join("modules.builtin"))
            .unwrap_or_default()
            .lines()
            .map(|l| normalize(l.rsplit('/').next().unwrap_or(l)))
            .collect();
        Ok(Tree {
            version,
            root: root.to_path_buf(),
            files,
            builtin,
        })
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    pub fn is_builtin(&self, name: &str) -> bool {
        self.builtin.contains(&normalize(name))
    }

    fn read_module(&self, name: &str) -> Result<Module, Error> {
        let rel = self.files.get(name).ok_or_else(|| Error::Missing {
            what: format!("module {name}"),
            path: self.root.clone(),
            package: None,
        })?;
        let path = self.root.join(rel);
        let data = fs::read(&path).map_err(|e| Error::io("reading", &path, e))?;
        let info = Elf::parse(&path, &data)?.modinfo()?;
        let mut m = Module {
            name: name.to_string(),
            path: rel.clone(),
            depends: Vec::new(),
            aliases: Vec::new(),
            firmware: Vec::new(),
            size: data.len() as u64,
        };
        for (k, v) in info {
            match k.as_str() {
                "depends" => m
                    .depends
                    .extend(v.split(',').filter(|d| !d.is_empty()).map(normalize)),
                "alias" => m.aliases.push(v),
                "firmware" => m.firmware.push(v),
                // `softdep=pre: crc32c post: x`: load those too, when they are modules.
                "softdep" => m.depends.extend(
                    v.split_whitespace()
                        .filter(|w| !w.ends_with(':'))
                        .map(normalize)
                        .filter(|d| self.files.contains_key(d)),
                ),
                _ => {}
            }
        }
        m.depends.sort();
        m.depends.dedup();
        Ok(m)
    }

    /// The modules named, with everything they depend on.
    pub fn select(&self, names: &[String]) -> Result<Selection, Error> {
        let mut sel = Selection::default();
        let mut todo: Vec<String> = Vec::new();
        for n in names {
            let n = normalize(n);
            if self.files.contains_key(&n) {
                todo.push(n);
            } else if self.builtin.contains(&n) {
                sel.builtin.push(n);
            } else {
                sel.missing.push(n);
            }
        }
        while let Some(n) = todo.pop() {
            if sel.modules.contains_key(&n) {
                continue;
            }
            let m = self.read_module(&n)?;
            for d in &m.depends {
                if self.files.contains_key(d) {
                    todo.push(d.clone());
                } else if !self.builtin.contains(d) {
                    return Err(Error::BrokenKernel {
                        module: n.clone(),
                        dependency: d.clone(),
                        root: self.root.clone(),
                    });
                }
            }
            sel.modules.insert(n, m);
        }
        sel.builtin.sort();
        sel.builtin.dedup();
        sel.missing.sort();
        sel.missing.dedup();
        Ok(sel)
    }
}

fn e_path(p: &Path) -> PathBuf {
    p.to_path_buf()
}

impl Selection {
    /// `modules.dep` text for the subset.
    pub fn modules_dep(&self) -> String {
        let mut out = String::new();
        for m in self.modules.values() {
            // Post-order DFS gives dependencies before dependents; kmod wants
            // the reverse (loaded last to first).
            let mut order = Vec::new();
            let mut seen = BTreeSet::new();
            seen.insert(m.name.clone());
            for d in &m.depends {
                self.post_order(d, &mut seen, &mut order);
            }
            order.reverse();
            out.push_str(&m.path);
            out.push(':');
            for d in order {
                if let Some(dm) = self.modules.get(&d) {
                    out.push(' ');
                    out.push_str(&dm.path);
                }
            }
            out.push('\n');
        }
        out
    }

    fn post_order(&self, name: &str, seen: &mut BTreeSet<String>, order: &mut Vec<String>) {
        if !seen.insert(name.to_string()) {
            return;
        }
        if let Some(m) = self.modules.get(name) {
            for d in &m.depends {
                self.post_order(d, seen, order);
            }
            order.push(name.to_string());
        }
    }

    /// `modules.alias` text for the subset (sorted by module, then in
    /// `.modinfo` order, like depmod).
    pub fn modules_alias(&self) -> String {
        let mut out = String::from("# Aliases extracted from modules themselves.\n");
        for m in self.modules.values() {
            for a in &m.aliases {
                out.push_str(&format!("alias {a} {}\n", m.name));
            }
        }
        out
    }

    pub fn total_size(&self) -> u64 {
        self.modules.values().map(|m| m.size).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, depends: &[&str]) -> Module {
        Module {
            name: name.into(),
            path: format!("kernel/{name}.ko"),
            depends: depends.iter().map(|s| s.to_string()).collect(),
            aliases: vec![format!("pci:v*d{name}*")],
            firmware: vec![],
            size: 1,
        }
    }

    #[test]
    fn dep_file_is_transitive_and_ordered_like_depmod() {
        let mut s = Selection::default();
        for m in [
            module("ahci", &["libahci", "libata"]),
            module("libahci", &["libata"]),
            module("libata", &["scsi_mod"]),
            module("scsi_mod", &[]),
        ] {
            s.modules.insert(m.name.clone(), m);
        }
        assert_eq!(
            s.modules_dep(),
            "kernel/ahci.ko: kernel/libahci.ko kernel/libata.ko kernel/scsi_mod.ko\n\
             kernel/libahci.ko: kernel/libata.ko kernel/scsi_mod.ko\n\
             kernel/libata.ko: kernel/scsi_mod.ko\n\
             kernel/scsi_mod.ko:\n"
        );
        assert_eq!(
            s.modules_alias().lines().nth(1),
            Some("alias pci:v*dahci* ahci")
        );
    }

    #[test]
    fn names_are_normalized() {
        assert_eq!(normalize("nvme-core.ko"), "nvme_core");
        assert_eq!(normalize(" usb-storage "), "usb_storage");
    }
}
