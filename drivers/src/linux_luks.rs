//! Linux systems inside LUKS, for universal restore: the volumes are
//! unlocked here without dm-crypt ([`imaging::luks`]), each plaintext served
//! as a file ([`imaging::luks_fuse`]) that the filesystems inside are
//! mounted from through loop devices, as partitions are mounted from the
//! disk. What is written goes back encrypted, sector by sector, as
//! dm-crypt would write it.
//!
//! The restored system must then unlock the volume at boot. Debian's
//! initramfs hook (cryptsetup-initramfs) finds the volumes of the root and
//! `/usr` by walking device-mapper from the mounted root; through this
//! file and loop device it finds none, and would build an initramfs that
//! never unlocks the root. The `initramfs` option of the volume's
//! `/etc/crypttab` line makes the hook include it regardless: [`plan`]
//! adds it (a step of the plan, shown first). dracut (`--no-hostonly`) and
//! mkinitcpio unlock from the kernel command line and their own
//! configuration, which do not change here.

use std::path::{Path, PathBuf};

use imaging::luks::Passphrases;
use serde::{Deserialize, Serialize};

use crate::linux_offline::{resolve_spec, InitramfsTool, LinuxError, Part, Step};

/// The LUKS volume a part lies in: its `start` and `len` are in the
/// volume's plaintext, not on the disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Crypt {
    /// The partition holding the volume.
    pub partition: u32,
    /// The volume's LUKS UUID (how crypttab names it).
    pub uuid: String,
    /// LUKS version (1 or 2).
    pub version: u16,
}

impl Crypt {
    /// How the volume is named to the user.
    pub fn describe(&self) -> String {
        format!("encrypted partition {} (LUKS{})", self.partition, self.version)
    }
}

/// Where the bytes of the disk's parts are: the disk, and for parts inside
/// a LUKS volume the plaintext of that volume, unlocked for the run. Keep
/// it until every mount of those parts is released: dropping it unmounts
/// the plaintext files.
pub struct Sources {
    pub disk: PathBuf,
    #[cfg(unix)]
    open: Vec<(u32, imaging::luks_fuse::PlainFile)>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sources({}", self.disk.display())?;
        #[cfg(unix)]
        for (n, p) in &self.open {
            write!(f, ", partition {n}: {p:?}")?;
        }
        f.write_str(")")
    }
}

impl Sources {
    /// Only the disk (nothing unlocked).
    pub fn new(disk: &Path) -> Sources {
        Sources {
            disk: disk.to_path_buf(),
            #[cfg(unix)]
            open: Vec::new(),
        }
    }

    /// The file holding the bytes of a part in `crypt` (the disk: `None`).
    pub fn path(&self, crypt: Option<&Crypt>) -> Result<PathBuf, String> {
        let Some(c) = crypt else { return Ok(self.disk.clone()) };
        #[cfg(unix)]
        if let Some((_, p)) = self.open.iter().find(|(n, _)| *n == c.partition) {
            return Ok(p.path());
        }
        Err(format!("{} is not unlocked", c.describe()))
    }
}

/// A volume [`unlock`] opened: its plaintext is `size` bytes.
#[derive(Debug, Clone)]
pub struct Unlocked {
    pub crypt: Crypt,
    pub size: u64,
}

/// A LUKS partition of the disk: number, first byte, length, and who uses
/// it (from the inventory: a volume opened here has dm holders).
pub type LuksPart = (u32, u64, u64, Vec<String>);

/// What [`unlock`] did.
#[derive(Debug, Default)]
pub struct Unlocking {
    pub opened: Vec<Unlocked>,
    /// Why each other one was not opened.
    pub skipped: Vec<String>,
    /// The partitions no passphrase given opened (none given, or wrong).
    pub locked: Vec<u32>,
}

/// Unlock the LUKS partitions `parts` of the disk with the first of `pass`
/// that opens each, and serve their plaintext (read-write when `write`) for
/// `sources`.
pub fn unlock(sources: &mut Sources, parts: &[LuksPart], pass: &Passphrases, write: bool) -> Unlocking {
    let mut out = Unlocking::default();
    for (number, start, len, users) in parts {
        let not = |why: String| format!("partition {number}: it is encrypted (LUKS), {why}: a system inside it is not fixed");
        if !users.is_empty() {
            out.skipped.push(not(format!("and open on this machine ({}); close it first (`cryptsetup close NAME`)", users.join(", "))));
            continue;
        }
        if pass.is_empty() {
            out.skipped.push(not("and no passphrase was given (--luks-key-file FILE, or RESCUE_LUKS_PASSWORD)".into()));
            out.locked.push(*number);
            continue;
        }
        match open_one(sources, *number, *start, *len, pass, write) {
            Ok(u) => out.opened.push(u),
            Err(OpenError { why, wrong }) => {
                out.skipped.push(not(why));
                if wrong {
                    out.locked.push(*number);
                }
            }
        }
    }
    out
}

/// Why a volume was not opened; `wrong`: no passphrase given opens it.
struct OpenError {
    why: String,
    wrong: bool,
}

impl From<String> for OpenError {
    fn from(why: String) -> OpenError {
        OpenError { why, wrong: false }
    }
}

#[cfg(unix)]
fn open_one(sources: &mut Sources, number: u32, start: u64, len: u64, pass: &Passphrases, write: bool) -> Result<Unlocked, OpenError> {
    use imaging::read_at::Window;
    let dev = std::fs::OpenOptions::new().read(true).write(write).open(&sources.disk).map_err(|e| format!("and opening {} failed: {e}", sources.disk.display()))?;
    let volume = pass
        .open(&Window::new(&dev, start, len), len)
        .map_err(|e| OpenError { wrong: matches!(e, imaging::luks::LuksError::WrongPassphrase(_)), why: format!("and it could not be opened: {e}") })?;
    let crypt = Crypt { partition: number, uuid: volume.header.uuid.to_ascii_lowercase(), version: volume.header.version };
    let size = volume.size;
    // Named after the disk and partition (the mount's source in mountinfo).
    let name = format!("{}:p{number}", sources.disk.display());
    let plain = imaging::luks_fuse::PlainFile::mount(dev, start, volume, &std::env::temp_dir(), write, &name).map_err(|e| format!("and its plaintext could not be served: {e}"))?;
    tracing::info!(partition = number, uuid = %crypt.uuid, file = %plain.path().display(), "unlocked LUKS volume");
    sources.open.push((number, plain));
    Ok(Unlocked { crypt, size })
}

#[cfg(not(unix))]
fn open_one(_: &mut Sources, _: u32, _: u64, _: u64, _: &Passphrases, _: bool) -> Result<Unlocked, OpenError> {
    Err(String::from("which only the Linux rescue system unlocks").into())
}

// ---------------------------------------------------------------------------
// /etc/crypttab

/// One `/etc/crypttab` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CrypttabEntry {
    /// Line index in the file (from 0).
    pub line: usize,
    pub name: String,
    pub source: String,
    pub key: String,
    pub options: Vec<String>,
}

/// The entries of a crypttab (comments and short lines skipped).
pub fn parse_crypttab(text: &str) -> Vec<CrypttabEntry> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with('#'))
        .filter_map(|(line, l)| {
            let mut w = l.split_whitespace();
            let name = w.next()?.to_owned();
            let source = w.next()?.to_owned();
            let key = w.next().unwrap_or("none").to_owned();
            let options = w.next().map(|o| o.split(',').filter(|s| !s.is_empty()).map(str::to_owned).collect()).unwrap_or_default();
            Some(CrypttabEntry { line, name, source, key, options })
        })
        .collect()
}

/// `text` with option `opt` added to the line `line` (the rest of the file,
/// and of the line, as it was).
pub fn add_option(text: &str, line: usize, opt: &str) -> String {
    let mut out = String::with_capacity(text.len() + opt.len() + 8);
    for (i, l) in text.split_inclusive('\n').enumerate() {
        if i != line {
            out.push_str(l);
            continue;
        }
        let (body, nl) = match l.strip_suffix('\n') {
            Some(b) => (b, "\n"),
            None => (l, ""),
        };
        // The end of each whitespace-separated field.
        let mut ends = Vec::new();
        let mut in_field = false;
        for (j, c) in body.char_indices() {
            if c.is_whitespace() {
                if in_field {
                    ends.push(j);
                }
                in_field = false;
            } else {
                in_field = true;
            }
        }
        if in_field {
            ends.push(body.len());
        }
        match ends.len() {
            0..=1 => out.push_str(body),
            2 => {
                out.push_str(body);
                out.push_str(" none ");
                out.push_str(opt);
            }
            3 => {
                out.push_str(&body[..ends[2]]);
                out.push(' ');
                out.push_str(opt);
                out.push_str(&body[ends[2]..]);
            }
            _ => {
                out.push_str(&body[..ends[3]]);
                out.push(',');
                out.push_str(opt);
                out.push_str(&body[ends[3]..]);
            }
        }
        out.push_str(nl);
    }
    out
}

/// The crypttab entry of the volume `c` (by its UUID or its partition).
pub fn entry_for<'a>(entries: &'a [CrypttabEntry], c: &Crypt, parts: &[Part]) -> Option<&'a CrypttabEntry> {
    entries.iter().find(|e| {
        let spec = e.source.trim_matches('"');
        let by_uuid = spec.strip_prefix("UUID=").or_else(|| spec.strip_prefix("/dev/disk/by-uuid/")).is_some_and(|u| u.trim_matches('"').eq_ignore_ascii_case(&c.uuid));
        by_uuid || resolve_spec(spec, parts).is_some_and(|p| p.number == c.partition && p.crypt.is_none() && p.lv.is_none() && p.md.is_none())
    })
}

/// What the plan does for the encrypted volumes `crypts` that hold the root
/// (and `/usr`): for initramfs-tools, each volume's crypttab line gets the
/// `initramfs` option (added to a crypttab `steps` already rewrites, or as
/// a new step; `crypttab` is the system's file as read); for every tool,
/// notes on how the boot unlocks them.
pub(crate) fn plan(root: &Path, crypttab: &str, tool: InitramfsTool, crypts: &[&Crypt], parts: &[Part], steps: &mut Vec<Step>, notes: &mut Vec<String>) -> Result<(), LinuxError> {
    if crypts.is_empty() {
        return Ok(());
    }
    for c in crypts {
        notes.push(format!("{} (UUID {}) is unlocked here with the passphrase given; what is written goes back encrypted", c.describe(), c.uuid));
    }
    let has_cryptsetup = ["usr/sbin/cryptsetup", "sbin/cryptsetup"].iter().any(|p| crate::linux_offline::in_root(root, p).exists());
    match tool {
        InitramfsTool::InitramfsTools => {
            if !crate::linux_offline::in_root(root, "usr/share/initramfs-tools/hooks/cryptroot").exists() {
                return Err(LinuxError::Crypt {
                    detail: "cryptsetup-initramfs is not installed in the system, so its initramfs cannot unlock the encrypted root".into(),
                    hint: "install cryptsetup-initramfs in the system (in a chroot), then run universal-restore again",
                });
            }
            let rel = "etc/crypttab";
            let at = steps.iter().position(|s| matches!(s, Step::Write { path, .. } if path == rel));
            let mut text = match at {
                Some(i) => match &steps[i] {
                    Step::Write { content, .. } => content.clone(),
                    _ => unreachable!("position matched a Write"),
                },
                None => crypttab.to_string(),
            };
            let mut added = Vec::new();
            for c in crypts {
                let entries = parse_crypttab(&text);
                let Some(e) = entry_for(&entries, c, parts) else {
                    return Err(LinuxError::Crypt {
                        detail: format!("{} (UUID {}) has no line in the system's /etc/crypttab, so its initramfs would not unlock it", c.describe(), c.uuid),
                        hint: "add one to /etc/crypttab in the system (e.g. `NAME_crypt UUID=<uuid> none luks`), then run universal-restore again",
                    });
                };
                if !e.options.iter().any(|o| o == "initramfs") {
                    text = add_option(&text, e.line, "initramfs");
                    added.push(e.name.clone());
                }
            }
            if !added.is_empty() {
                let summary = format!(
                    "option `initramfs` for {}: the initramfs unlocks it at boot (the hook looks for the root's volume through device-mapper, which this rescue system does not use)",
                    added.join(", ")
                );
                match at {
                    Some(i) => {
                        if let Step::Write { content, summary: s, .. } = &mut steps[i] {
                            *content = text;
                            s.push_str("; ");
                            s.push_str(&summary);
                        }
                    }
                    None => steps.push(Step::Write { path: rel.into(), content: text, summary }),
                }
            }
        }
        InitramfsTool::Dracut => {
            if !has_cryptsetup {
                notes.push("cryptsetup is not installed in the system: dracut's initramfs cannot unlock the encrypted root".into());
            } else {
                notes.push("dracut (--no-hostonly) includes its crypt module, cryptsetup being installed: at boot it unlocks the root, asking for the passphrase (rd.luks.* on the kernel command line choose the volumes)".into());
            }
        }
        InitramfsTool::Mkinitcpio => {
            let conf = std::fs::read_to_string(crate::linux_offline::in_root(root, "etc/mkinitcpio.conf")).unwrap_or_default();
            let hooks = conf.lines().map(str::trim).rfind(|l| l.starts_with("HOOKS=")).unwrap_or("");
            if !hooks.split(|c: char| !(c.is_alphanumeric() || c == '-' || c == '_')).any(|h| h == "encrypt" || h == "sd-encrypt") {
                notes.push("mkinitcpio.conf's HOOKS has neither `encrypt` nor `sd-encrypt`: the initramfs cannot unlock the encrypted root".into());
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const TAB: &str = "# <target name> <source device> <key file> <options>\nsda3_crypt UUID=0a1b2c3d-1111-2222-3333-444455556666 none luks,discard\nswap\t/dev/sda4  /dev/urandom   swap,cipher=aes-xts-plain64\nhome_crypt UUID=aaaa /etc/keys/home.key\nbare PARTUUID=12345678-02\n";

    #[test]
    fn crypttab_is_parsed() {
        let e = parse_crypttab(TAB);
        assert_eq!(e.len(), 4);
        assert_eq!((e[0].line, e[0].name.as_str(), e[0].key.as_str()), (1, "sda3_crypt", "none"));
        assert_eq!(e[0].options, ["luks", "discard"]);
        assert_eq!((e[1].name.as_str(), e[1].source.as_str()), ("swap", "/dev/sda4"));
        assert_eq!((e[2].key.as_str(), e[2].options.len()), ("/etc/keys/home.key", 0));
        assert_eq!((e[3].line, e[3].key.as_str()), (4, "none"));
    }

    #[test]
    fn the_option_is_added_and_the_rest_kept() {
        let t = add_option(TAB, 1, "initramfs");
        assert_eq!(t.lines().nth(1), Some("sda3_crypt UUID=0a1b2c3d-1111-2222-3333-444455556666 none luks,discard,initramfs"));
        assert_eq!(t.lines().filter(|l| l.contains("initramfs")).count(), 1);
        assert_eq!(t.replace(",initramfs", ""), TAB);
        // Three fields: the options become a fourth; tabs and spaces kept.
        let t = add_option(TAB, 3, "initramfs");
        assert_eq!(t.lines().nth(3), Some("home_crypt UUID=aaaa /etc/keys/home.key initramfs"));
        let t = add_option("a\tUUID=b\tnone\tluks   # x\n", 0, "initramfs");
        assert_eq!(t, "a\tUUID=b\tnone\tluks,initramfs   # x\n");
        // Two fields (the key defaults to none).
        assert_eq!(add_option(TAB, 4, "initramfs").lines().nth(4), Some("bare PARTUUID=12345678-02 none initramfs"));
        // No final newline.
        assert_eq!(add_option("r UUID=x none luks", 0, "initramfs"), "r UUID=x none luks,initramfs");
    }

    fn container(number: u32, uuid: &str, partuuid: &str) -> Part {
        Part {
            number,
            start: 1 << 20,
            len: 1 << 30,
            fstype: String::new(),
            uuid: Some(uuid.into()),
            label: None,
            partuuid: Some(partuuid.into()),
            gpt_type: None,
            lv: None,
            md: None,
            crypt: None,
        }
    }

    #[test]
    fn entries_are_found_by_uuid_or_partition() {
        let parts = [container(3, "0a1b2c3d-1111-2222-3333-444455556666", "12345678-03"), container(2, "ffff", "12345678-02")];
        let e = parse_crypttab(TAB);
        let c = Crypt { partition: 3, uuid: "0A1B2C3D-1111-2222-3333-444455556666".to_ascii_lowercase(), version: 2 };
        assert_eq!(entry_for(&e, &c, &parts).map(|e| e.name.as_str()), Some("sda3_crypt"));
        let c = Crypt { partition: 2, uuid: "ffff".into(), version: 1 };
        assert_eq!(entry_for(&e, &c, &parts).map(|e| e.name.as_str()), Some("bare"));
        let c = Crypt { partition: 5, uuid: "eeee".into(), version: 2 };
        assert!(entry_for(&e, &c, &parts).is_none());
    }
}
