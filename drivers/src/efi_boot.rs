//! Firmware boot entries (UEFI `Boot####` and `BootOrder`) through Linux's
//! efivarfs, as `efibootmgr` makes them: a load option whose device path is
//! the ESP's partition (by its GPT GUID or MBR signature, number, start and
//! size) followed by the loader's file path.
//!
//! Universal restore adds one when it runs on the machine the disk will
//! boot in (the live system booted by EFI): the restored system's own
//! `efibootmgr` is not needed, and an entry that points at the same
//! partition and loader is reused instead of doubled.
//!
//! The formats: UEFI 2.10 §3.1.3 (EFI_LOAD_OPTION), §10.3.5.1 (Hard Drive
//! media device path), §10.3.5.4 (File Path media device path); efivarfs
//! files hold the 32-bit attributes, then the data, written in one write.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

/// Where Linux shows the firmware's variables.
pub const EFIVARS: &str = "/sys/firmware/efi/efivars";
/// EFI_GLOBAL_VARIABLE, the vendor of `Boot####` and `BootOrder`.
const GLOBAL: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS.
const ATTRS: u32 = 0x7;
/// LOAD_OPTION_ACTIVE.
const ACTIVE: u32 = 0x1;

/// How the partition table names the ESP's disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// The partition's unique GUID, in the on-disk (mixed-endian) order.
    Gpt([u8; 16]),
    /// The MBR disk signature.
    Mbr(u32),
}

/// The partition a load option points at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HardDrive {
    pub number: u32,
    /// In logical sectors.
    pub start: u64,
    pub size: u64,
    pub signature: Signature,
}

/// The device path of `loader` (`\EFI\debian\grubx64.efi`) on `hd`.
pub fn device_path(hd: &HardDrive, loader: &str) -> Vec<u8> {
    let mut p = vec![0x04, 0x01, 42, 0];
    p.extend_from_slice(&hd.number.to_le_bytes());
    p.extend_from_slice(&hd.start.to_le_bytes());
    p.extend_from_slice(&hd.size.to_le_bytes());
    let (sig, mbr_type, sig_type) = match hd.signature {
        Signature::Gpt(g) => (g, 0x02, 0x02),
        Signature::Mbr(s) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&s.to_le_bytes());
            (b, 0x01, 0x01)
        }
    };
    p.extend_from_slice(&sig);
    p.push(mbr_type);
    p.push(sig_type);
    let name = crate::hive::sz(loader);
    let len = u16::try_from(4 + name.len()).unwrap_or(u16::MAX);
    p.extend_from_slice(&[0x04, 0x04]);
    p.extend_from_slice(&len.to_le_bytes());
    p.extend_from_slice(&name);
    p.extend_from_slice(&[0x7f, 0xff, 0x04, 0x00]);
    p
}

/// An active EFI_LOAD_OPTION.
pub fn load_option(description: &str, hd: &HardDrive, loader: &str) -> Vec<u8> {
    let path = device_path(hd, loader);
    let mut o = ACTIVE.to_le_bytes().to_vec();
    o.extend_from_slice(&u16::try_from(path.len()).unwrap_or(u16::MAX).to_le_bytes());
    o.extend_from_slice(&crate::hive::sz(description));
    o.extend_from_slice(&path);
    o
}

/// A load option read back: its description and device path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadOption {
    pub attributes: u32,
    pub description: String,
    pub path: Vec<u8>,
}

/// Parse an EFI_LOAD_OPTION; `None` when it is malformed.
pub fn parse_load_option(d: &[u8]) -> Option<LoadOption> {
    let attributes = u32::from_le_bytes(d.get(..4)?.try_into().ok()?);
    let path_len = usize::from(u16::from_le_bytes(d.get(4..6)?.try_into().ok()?));
    let mut units = Vec::new();
    let mut at = 6;
    loop {
        let u = u16::from_le_bytes(d.get(at..at + 2)?.try_into().ok()?);
        at += 2;
        if u == 0 {
            break;
        }
        units.push(u);
    }
    let path = d.get(at..at + path_len)?.to_vec();
    Some(LoadOption { attributes, description: String::from_utf16_lossy(&units), path })
}

/// Whether two device paths name the same partition and file (file names
/// compared without regard to case, as FAT does).
fn same_target(a: &[u8], b: &[u8]) -> bool {
    let norm = |p: &[u8]| -> Option<(Vec<u8>, String)> {
        // Hard Drive node (42 bytes) then the File Path node.
        if p.len() < 46 || p[..4] != [0x04, 0x01, 42, 0] || p[42..44] != [0x04, 0x04] {
            return None;
        }
        let len = usize::from(u16::from_le_bytes([p[44], p[45]]));
        let units: Vec<u16> = p.get(46..42 + len)?.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|u| *u != 0).collect();
        // Start, size and signature (the number adds nothing to them).
        Some((p[8..42].to_vec(), String::from_utf16_lossy(&units).to_ascii_lowercase()))
    };
    matches!((norm(a), norm(b)), (Some(x), Some(y)) if x == y)
}

/// The firmware's variables in an efivarfs folder.
pub struct Efivars {
    dir: PathBuf,
}

/// Errors writing boot entries.
#[derive(Debug, thiserror::Error)]
pub enum EfiError {
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("every boot entry number Boot0000-BootFFFF is taken")]
    Full,
}

impl EfiError {
    pub fn hint(&self) -> &'static str {
        match self {
            EfiError::Io { .. } => "the firmware may refuse new variables when its store is full: remove stale entries in its setup screen (or with efibootmgr -b XXXX -B) and try again",
            EfiError::Full => "remove stale entries with efibootmgr -b XXXX -B and try again",
        }
    }
}

/// What [`Efivars::add_boot_entry`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BootEntry {
    /// `Boot0004`.
    pub name: String,
    pub description: String,
    pub loader: String,
    /// False when an entry for that partition and loader was there already.
    pub created: bool,
    /// The boot order after the change.
    pub order: Vec<String>,
}

impl Efivars {
    pub fn new(dir: impl Into<PathBuf>) -> Efivars {
        Efivars { dir: dir.into() }
    }

    /// This machine's variables, when it booted by EFI and efivarfs is
    /// mounted.
    pub fn here() -> Option<Efivars> {
        let dir = Path::new(EFIVARS);
        fs::read_dir(dir).ok()?.next()?.ok()?;
        Some(Efivars::new(dir))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}-{GLOBAL}"))
    }

    /// A global variable's data (without its attributes).
    pub fn read(&self, name: &str) -> Option<Vec<u8>> {
        let d = fs::read(self.path(name)).ok()?;
        (d.len() >= 4).then(|| d[4..].to_vec())
    }

    /// Write a global variable (non-volatile, boot and runtime access).
    pub fn write(&self, name: &str, data: &[u8]) -> Result<(), EfiError> {
        let path = self.path(name);
        let err = |source| EfiError::Io { path: path.display().to_string(), source };
        if path.exists() {
            make_mutable(&path);
        }
        let mut buf = ATTRS.to_le_bytes().to_vec();
        buf.extend_from_slice(data);
        let mut f = fs::OpenOptions::new().write(true).create(true).truncate(false).open(&path).map_err(err)?;
        // efivarfs takes a variable in one write.
        let n = f.write(&buf).map_err(err)?;
        if n != buf.len() {
            return Err(err(std::io::Error::other(format!("only {n} of {} bytes were taken", buf.len()))));
        }
        Ok(())
    }

    /// The numbers of the `Boot####` variables present.
    fn boot_numbers(&self) -> Vec<u16> {
        let suffix = format!("-{GLOBAL}");
        let mut v: Vec<u16> = fs::read_dir(&self.dir)
            .map(|d| {
                d.flatten()
                    .filter_map(|e| {
                        let n = e.file_name().to_str()?.strip_suffix(&suffix)?.strip_prefix("Boot")?.to_string();
                        (n.len() == 4).then(|| u16::from_str_radix(&n, 16).ok()).flatten()
                    })
                    .collect()
            })
            .unwrap_or_default();
        v.sort_unstable();
        v
    }

    /// The boot order.
    pub fn boot_order(&self) -> Vec<u16> {
        self.read("BootOrder").unwrap_or_default().chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect()
    }

    /// Add (or reuse) the entry that boots `loader` on `hd` and put it first
    /// in the boot order.
    pub fn add_boot_entry(&self, description: &str, hd: &HardDrive, loader: &str) -> Result<BootEntry, EfiError> {
        let want = device_path(hd, loader);
        let numbers = self.boot_numbers();
        let existing = numbers.iter().find_map(|n| {
            let o = self.read(&format!("Boot{n:04X}")).and_then(|d| parse_load_option(&d))?;
            same_target(&o.path, &want).then_some((*n, o.attributes & ACTIVE != 0))
        });
        let (number, created, active) = match existing {
            Some((n, active)) => (n, false, active),
            None => ((0..=u16::MAX).find(|n| !numbers.contains(n)).ok_or(EfiError::Full)?, true, false),
        };
        let name = format!("Boot{number:04X}");
        // A new entry, or ours switched off: (re)write it active.
        if !active {
            self.write(&name, &load_option(description, hd, loader))?;
        }
        let mut order = vec![number];
        order.extend(self.boot_order().into_iter().filter(|n| *n != number));
        let bytes: Vec<u8> = order.iter().flat_map(|n| n.to_le_bytes()).collect();
        self.write("BootOrder", &bytes)?;
        Ok(BootEntry { name, description: description.into(), loader: loader.into(), created, order: order.iter().map(|n| format!("Boot{n:04X}")).collect() })
    }
}

/// efivarfs marks variables the kernel does not know as safe to change
/// immutable; clear that flag before writing (as libefivar does).
fn make_mutable(path: &Path) {
    #[cfg(unix)]
    let _ = imaging::mount::sys::clear_immutable(path);
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esp() -> HardDrive {
        HardDrive { number: 1, start: 2048, size: 1_048_576, signature: Signature::Gpt(crate::bcd::guid("6b7d9c1e-2f3a-4b5c-8d9e-0a1b2c3d4e5f").expect("guid")) }
    }

    #[test]
    fn load_option_bytes_follow_the_uefi_layout() {
        let o = load_option("debian", &esp(), "\\EFI\\debian\\grubx64.efi");
        // Attributes, then the device path's length.
        assert_eq!(&o[..4], &[1, 0, 0, 0]);
        let path_len = u16::from_le_bytes([o[4], o[5]]) as usize;
        // "debian" + NUL in UTF-16.
        assert_eq!(&o[6..20], b"d\0e\0b\0i\0a\0n\0\0\0");
        let p = &o[20..];
        assert_eq!(p.len(), path_len);
        // Hard Drive node: partition 1 at LBA 2048, 1 Mi sectors, GPT GUID.
        assert_eq!(&p[..4], &[4, 1, 42, 0]);
        assert_eq!(u32::from_le_bytes(p[4..8].try_into().expect("test")), 1);
        assert_eq!(u64::from_le_bytes(p[8..16].try_into().expect("test")), 2048);
        assert_eq!(u64::from_le_bytes(p[16..24].try_into().expect("test")), 1_048_576);
        // The GUID's first field is little-endian on disk.
        assert_eq!(&p[24..28], &[0x1e, 0x9c, 0x7d, 0x6b]);
        assert_eq!(&p[38..42], &[0x4e, 0x5f, 2, 2]);
        // File Path node, NUL-terminated UTF-16, then the end node.
        let name_len = "\\EFI\\debian\\grubx64.efi".len() * 2 + 2;
        assert_eq!(&p[42..46], &[4, 4, (4 + name_len) as u8, 0]);
        assert_eq!(&p[46 + name_len..], &[0x7f, 0xff, 4, 0]);
        let back = parse_load_option(&o).expect("parses");
        assert_eq!(back.description, "debian");
        assert_eq!(back.path, device_path(&esp(), "\\EFI\\debian\\grubx64.efi"));
    }

    #[test]
    fn mbr_partitions_are_named_by_the_disk_signature() {
        let hd = HardDrive { number: 2, start: 4096, size: 8192, signature: Signature::Mbr(0x1234_abcd) };
        let p = device_path(&hd, "\\x.efi");
        assert_eq!(&p[24..28], &[0xcd, 0xab, 0x34, 0x12]);
        assert_eq!(&p[28..40], &[0; 12]);
        assert_eq!(&p[40..42], &[1, 1]);
    }

    #[test]
    fn entries_go_first_and_are_not_doubled() {
        let t = tempfile::tempdir().expect("tempdir");
        let v = Efivars::new(t.path());
        // The firmware's own entries.
        let other = HardDrive { number: 1, start: 34, size: 100, signature: Signature::Mbr(7) };
        v.write("Boot0000", &load_option("UEFI Shell", &other, "\\shell.efi")).expect("test");
        v.write("Boot0001", &load_option("UEFI QEMU NVMe", &other, "\\EFI\\BOOT\\BOOTX64.EFI")).expect("test");
        v.write("BootOrder", &[0, 0, 1, 0]).expect("test");
        let e = v.add_boot_entry("debian", &esp(), "\\EFI\\debian\\grubx64.efi").expect("test");
        assert_eq!(e.name, "Boot0002");
        assert!(e.created);
        assert_eq!(v.boot_order(), vec![2, 0, 1]);
        let raw = fs::read(t.path().join(format!("Boot0002-{GLOBAL}"))).expect("test");
        assert_eq!(&raw[..4], &[7, 0, 0, 0], "attributes first");
        // Again, with the path in other case: the same entry, still first.
        v.write("BootOrder", &[0, 0, 2, 0, 1, 0]).expect("test");
        let e = v.add_boot_entry("debian", &esp(), "\\EFI\\DEBIAN\\GRUBX64.EFI").expect("test");
        assert_eq!((e.name.as_str(), e.created), ("Boot0002", false));
        assert_eq!(v.boot_order(), vec![2, 0, 1]);
        assert_eq!(e.order, ["Boot0002", "Boot0000", "Boot0001"]);
        // Another partition (a new GUID) gets its own entry.
        let mut moved = esp();
        moved.signature = Signature::Gpt([9; 16]);
        assert_eq!(v.add_boot_entry("debian", &moved, "\\EFI\\debian\\grubx64.efi").expect("test").name, "Boot0003");
        // A variable store with no order yet.
        let t2 = tempfile::tempdir().expect("tempdir");
        let v2 = Efivars::new(t2.path());
        assert_eq!(v2.add_boot_entry("x", &esp(), "\\a.efi").expect("test").order, ["Boot0000"]);
    }

    #[test]
    fn malformed_options_are_none() {
        assert_eq!(parse_load_option(&[1, 0, 0]), None);
        assert_eq!(parse_load_option(&[1, 0, 0, 0, 10, 0, b'a', 0]), None);
        let mut o = load_option("d", &esp(), "\\a.efi");
        o.truncate(o.len() - 1);
        assert_eq!(parse_load_option(&o), None);
    }
}
