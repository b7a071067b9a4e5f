//! Linux universal restore, offline: find the installed Linux systems on a
//! target disk, then in a chroot rebuild their initramfs with the storage
//! modules the new hardware needs and reinstall GRUB for the boot mode the
//! disk uses.
//!
//! Every partition with a Linux filesystem (ext2/3/4, xfs, btrfs) is mounted
//! through a loop device over its byte range (`losetup -o OFF --sizelimit
//! LEN`: disk image files, and kernels without loop partition scanning, work
//! alike) and is a root when it holds `etc/os-release` and `etc/fstab`. So is
//! every linear logical volume of an LVM physical volume on the disk: its
//! metadata is read without device-mapper ([`imaging::lvm`]) and the volume
//! mounted as the byte range it is, without activating the volume group (no
//! clash with a group of the same name here, nothing to deactivate after).
//! Its `/boot`, `/usr` and ESP are found in its fstab and resolved by UUID,
//! PARTUUID, LABEL, `/dev/mapper/VG-LV` or `/dev/VG/LV` on the same disk.
//!
//! [`plan`] computes, without writing, what will change: the storage modules
//! (from the `--for` controllers, keeping those some installed kernel has),
//! the files that make them persistent (`/etc/initramfs-tools/modules`, a
//! dracut or mkinitcpio drop-in), UUID rewrites ([`crate::linux`]) and the
//! commands run in the chroot. [`apply`] runs *that* plan with `/dev`,
//! `/proc`, `/sys` and `/run` bound; everything is unmounted and detached on
//! every path (guards with `Drop`).
//!
//! A root (or an LVM physical volume) in an md RAID1 array is mounted
//! through one current member's data range in the same way, and the other
//! members are brought up to date afterwards ([`crate::linux_md`],
//! [`sync_arrays`]); `/dev/md/NAME` and `/dev/mdN` resolve too.
//!
//! A root (or an LVM physical volume) inside a LUKS volume that a
//! passphrase given opens is mounted through the volume's plaintext
//! ([`crate::linux_luks`]: unlocked here, no dm-crypt), and its crypttab
//! line is made to unlock it at boot.
//!
//! Deliberately not supported: roots on other md RAID levels, LUKS inside
//! md or LVM, btrfs subvolumes or
//! LVM volumes that are not one linear range of one PV on this disk
//! (striped, mirrored, RAID, thin, or in pieces after an `lvextend`: named in
//! [`DiskLayout::skipped`]), separate `/var`, boot
//! loaders other than GRUB (systemd-boot entries are left as they are),
//! fstab sources given as `/dev/sdXN`, and updating Debian's debconf
//! `grub-pc/install_devices` (the next grub-pc upgrade on the new machine
//! asks for the disk again). Exercised end to end
//! (`rescue-tui/tests/universal_linux.rs` boots the result in qemu):
//! initramfs-tools and dracut with GRUB for BIOS; a root on LVM with a
//! separate `/boot`, fixed in the live system, with GRUB for BIOS and EFI;
//! a root with `/boot` in an md RAID1 (GRUB's `mdraid1x` in core.img);
//! a root in LUKS2 with `/boot` on its own partition.
//! `/boot` inside an LVM volume (GRUB's `lvm` module) and the mkinitcpio
//! plan (Arch, no Debian package) are covered by unit tests of the plan.

use std::collections::BTreeSet;
use std::fmt;
use std::path::{Component, Path, PathBuf};

use imaging::exec::LoopDevice;
use imaging::fs::FsKind;
use imaging::inventory;
use imaging::part::{PartType, TableKind};
use imaging::read_at::Window;
use serde::{Deserialize, Serialize};

use crate::linux_luks::{Crypt, Sources};
use crate::linux_md::MdArray;
use crate::windows::Controller;

/// Stands for the whole target disk in a planned command (a loop device over
/// the disk image file, or the disk's own node).
pub const DISK: &str = "<disk>";

/// Extra GRUB modules for core.img (see the BIOS grub-install step).
const MODULES: &str = "--modules=part_gpt part_msdos";
/// The same when `/boot/grub` is in an LVM volume: GRUB probes it through a
/// loop device here, so it would not add `lvm` itself.
const MODULES_LVM: &str = "--modules=lvm part_gpt part_msdos";
/// The same for `/boot/grub` in an md RAID1 array (metadata 1.x), and in
/// an LVM volume inside one.
const MODULES_MD: &str = "--modules=mdraid1x part_gpt part_msdos";
const MODULES_MD_LVM: &str = "--modules=mdraid1x lvm part_gpt part_msdos";

/// LVM's devices file (relative to the root).
const DEVICES_FILE: &str = "etc/lvm/devices/system.devices";

/// GPT type of a BIOS boot partition (where GRUB embeds core.img).
const BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
/// GPT type of an EFI system partition.
const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";

#[derive(Debug, thiserror::Error)]
pub enum LinuxError {
    #[error("inspecting {disk}: {detail}")]
    Inspect { disk: String, detail: String },
    #[error("no Linux system found on {disk} (searched partitions {searched})")]
    NoLinux { disk: String, searched: String },
    #[error("partition {part} of {disk} is in use: {why}")]
    Busy { disk: String, part: u32, why: String },
    #[error("mounting partition {part} of {disk} at {at}: {detail}")]
    Mount { disk: String, part: u32, at: String, detail: String },
    #[error("{path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error("{mountpoint} of the system on partition {part} is `{spec}` in /etc/fstab, which is on no partition of this disk")]
    Unresolved { part: u32, mountpoint: String, spec: String },
    #[error("the system on partition {part} has no initramfs tool (looked for update-initramfs, dracut, mkinitcpio)")]
    NoInitramfsTool { part: u32 },
    #[error("no Linux storage module known for {what}")]
    NoModules { what: String },
    #[error("`{cmd}` failed in the system on partition {part} ({status}): {tail}")]
    Command { part: u32, cmd: String, status: String, tail: String },
    #[error("adding the firmware boot entry: {detail}")]
    BootEntry { detail: String, hint: &'static str },
    #[error("bringing the md RAID1 members into one state: {0}")]
    Md(#[from] crate::linux_md::SyncError),
    #[error("{detail}")]
    Crypt { detail: String, hint: &'static str },
}

impl LinuxError {
    /// What to do next.
    pub fn hint(&self) -> &'static str {
        match self {
            LinuxError::Inspect { .. } => "check the disk path (see `rescue disks`)",
            LinuxError::NoLinux { .. } => "restore the Linux system first, or name its root partition with --part N",
            LinuxError::Busy { .. } => "unmount it first (an LVM volume group on it must be deactivated too: `vgchange -an NAME`)",
            LinuxError::Mount { .. } => "check the filesystem (`e2fsck -f`, `xfs_repair`) and try again",
            LinuxError::Io { .. } => "check that the target filesystem is healthy and not full",
            LinuxError::Unresolved { .. } => {
                "if the filesystem was recreated with a new UUID, pass --map-uuid OLD=NEW; otherwise restore that partition too"
            }
            LinuxError::NoInitramfsTool { .. } => "install the distribution's initramfs tool in the system (or rebuild its initramfs by hand)",
            LinuxError::NoModules { .. } => "name the target hardware with --for ahci|nvme|virtio|vmware|hyperv|intel-rst|ide",
            LinuxError::Command { .. } => {
                "the end of its output is shown; fix the cause in the target system (or run the command in a chroot by hand), then run universal-restore again: it is safe to repeat"
            }
            LinuxError::BootEntry { hint, .. } => hint,
            LinuxError::Crypt { hint, .. } => hint,
            LinuxError::Md(_) => "run universal-restore again (it is safe to repeat); until then boot the array from its first member only (`mdadm --assemble --run` with that partition) and add the others back (`mdadm --add`), which recovers them",
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LinuxError + '_ {
    move |source| LinuxError::Io { path: path.display().to_string(), source }
}

// ---------------------------------------------------------------------------
// Files of the target root

/// `rel` (like `etc/os-release`) inside `root`, following symlinks as the
/// target system would: absolute link targets stay inside `root`.
pub fn in_root(root: &Path, rel: &str) -> PathBuf {
    let mut cur = root.to_path_buf();
    let mut todo: Vec<String> = rel.split('/').filter(|s| !s.is_empty()).rev().map(str::to_owned).collect();
    let mut links = 0;
    while let Some(c) = todo.pop() {
        match c.as_str() {
            "." => continue,
            ".." => {
                if cur != root {
                    cur.pop();
                }
                continue;
            }
            _ => {}
        }
        let next = cur.join(&c);
        match std::fs::read_link(&next) {
            Ok(target) if links < 40 => {
                links += 1;
                if target.is_absolute() {
                    cur = root.to_path_buf();
                }
                for comp in target.components().rev() {
                    if let Component::Normal(s) = comp {
                        todo.push(s.to_string_lossy().into_owned());
                    } else if comp == Component::ParentDir {
                        todo.push("..".into());
                    }
                }
            }
            _ => cur = next,
        }
    }
    cur
}

fn read_opt(root: &Path, rel: &str) -> Result<Option<String>, LinuxError> {
    let p = in_root(root, rel);
    match std::fs::read_to_string(&p) {
        Ok(t) => Ok(Some(t)),
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::NotADirectory) => Ok(None),
        Err(e) => Err(io(&p)(e)),
    }
}

fn exists(root: &Path, rel: &str) -> bool {
    in_root(root, rel).exists()
}

/// The few `/etc/os-release` fields we use.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsRelease {
    pub id: String,
    pub id_like: Vec<String>,
    pub pretty_name: String,
}

pub fn parse_os_release(text: &str) -> OsRelease {
    let mut o = OsRelease::default();
    for line in text.lines() {
        let Some((k, v)) = line.trim().split_once('=') else { continue };
        let v = v.trim().trim_matches(|c| c == '"' || c == '\'').to_owned();
        match k {
            "ID" => o.id = v,
            "ID_LIKE" => o.id_like = v.split_whitespace().map(str::to_owned).collect(),
            "PRETTY_NAME" => o.pretty_name = v,
            _ => {}
        }
    }
    if o.pretty_name.is_empty() {
        o.pretty_name = if o.id.is_empty() { "Linux".into() } else { o.id.clone() };
    }
    o
}

/// One `/etc/fstab` line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FstabEntry {
    pub spec: String,
    pub mountpoint: String,
    pub fstype: String,
    pub options: String,
}

pub fn parse_fstab(text: &str) -> Vec<FstabEntry> {
    text.lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some(FstabEntry {
                spec: w.next()?.to_owned(),
                mountpoint: w.next()?.replace("\\040", " "),
                fstype: w.next()?.to_owned(),
                options: w.next().unwrap_or("defaults").to_owned(),
            })
        })
        .collect()
}

/// How the system builds its initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InitramfsTool {
    /// Debian, Ubuntu: `update-initramfs`.
    InitramfsTools,
    /// Fedora, RHEL, SUSE: `dracut`.
    Dracut,
    /// Arch: `mkinitcpio`.
    Mkinitcpio,
}

impl fmt::Display for InitramfsTool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            InitramfsTool::InitramfsTools => "initramfs-tools",
            InitramfsTool::Dracut => "dracut",
            InitramfsTool::Mkinitcpio => "mkinitcpio",
        })
    }
}

fn find_tool(root: &Path, names: &[&str]) -> Option<String> {
    names
        .iter()
        .find(|n| ["usr/sbin", "usr/bin", "sbin", "bin"].iter().any(|d| exists(root, &format!("{d}/{n}"))))
        .map(|n| (*n).to_owned())
}

/// Pick the initramfs tool by what the root has (the distribution family
/// only breaks ties: a Debian may have dracut installed instead).
pub fn initramfs_tool(root: &Path, os: &OsRelease) -> Option<InitramfsTool> {
    let have_it = find_tool(root, &["update-initramfs"]).is_some();
    let have_dracut = find_tool(root, &["dracut"]).is_some();
    let have_mk = find_tool(root, &["mkinitcpio"]).is_some();
    let family = |id: &str| os.id == id || os.id_like.iter().any(|l| l == id);
    match (have_it, have_dracut, have_mk) {
        (true, true, _) if family("debian") => Some(InitramfsTool::InitramfsTools),
        (_, true, _) => Some(InitramfsTool::Dracut),
        (true, _, _) => Some(InitramfsTool::InitramfsTools),
        (_, _, true) => Some(InitramfsTool::Mkinitcpio),
        _ => None,
    }
}

/// Kernel versions installed in the root, with the module names each has
/// (loadable and built in, `-` normalised to `_`).
pub fn kernel_modules(root: &Path) -> Vec<(String, BTreeSet<String>)> {
    let dir = in_root(root, "usr/lib/modules");
    let dir = if dir.is_dir() { dir } else { in_root(root, "lib/modules") };
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(&dir) else { return out };
    let mut kvers: Vec<_> = rd.flatten().filter(|e| e.path().join("modules.dep").exists()).collect();
    kvers.sort_by_key(|e| e.file_name());
    for e in kvers {
        let mut names = BTreeSet::new();
        for f in ["modules.dep", "modules.builtin"] {
            let text = std::fs::read_to_string(e.path().join(f)).unwrap_or_default();
            for line in text.lines() {
                let path = line.split(':').next().unwrap_or("");
                let base = path.rsplit('/').next().unwrap_or("");
                if let Some(name) = base.split(".ko").next().filter(|n| !n.is_empty() && base.contains(".ko")) {
                    names.insert(name.replace('-', "_"));
                }
            }
        }
        out.push((e.file_name().to_string_lossy().into_owned(), names));
    }
    out
}

/// Linux modules that drive a controller (its hardware and compatible IDs,
/// as [`crate::windows::profile`] and sysfs detection give them).
pub fn modules_for_controller(c: &Controller) -> Vec<&'static str> {
    let mut out: Vec<&'static str> = Vec::new();
    for id in &c.ids {
        let u = id.to_ascii_uppercase();
        let has = |s: &str| u.contains(s);
        let m: &[&str] = if has("VEN_1AF4&DEV_1001") || has("VEN_1AF4&DEV_1042") {
            &["virtio_pci", "virtio_blk"]
        } else if has("VEN_1AF4&DEV_1004") || has("VEN_1AF4&DEV_1048") {
            &["virtio_pci", "virtio_scsi", "sd_mod"]
        } else if has("VEN_15AD&DEV_07C0") {
            &["vmw_pvscsi", "sd_mod"]
        } else if has("VEN_1000&DEV_0054") || has("VEN_1000&DEV_0056") {
            &["mptsas", "sd_mod"]
        } else if has("VEN_1000&DEV_0030") {
            &["mptspi", "sd_mod"]
        } else if has("VEN_8086&DEV_9A0B") || has("VEN_8086&DEV_467F") || has("VEN_8086&DEV_A77F") || has("VEN_8086&DEV_201D") {
            &["vmd", "nvme", "nvme_core", "ahci", "libahci", "sd_mod"]
        } else if has("VEN_8086&CC_0104") {
            &["vmd", "ahci", "libahci", "sd_mod"]
        } else if has("CC_0108") {
            &["nvme", "nvme_core"]
        } else if has("CC_0106") {
            &["ahci", "libahci", "sd_mod"]
        } else if has("CC_0101") {
            &["ata_piix", "ata_generic", "pata_acpi", "sd_mod"]
        } else if has("VMBUS\\{BA6163D9") {
            &["hv_vmbus", "hv_storvsc", "sd_mod"]
        } else if u == "VMBUS" || has("ACPI\\VMBUS") {
            &["hv_vmbus"]
        } else {
            &[]
        };
        for x in m {
            if !out.contains(x) {
                out.push(x);
            }
        }
    }
    out
}

// ---------------------------------------------------------------------------
// The disk's partitions

/// A partition of the target disk and what identifies its filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    pub number: u32,
    pub start: u64,
    pub len: u64,
    /// Filesystem name as `mount -t` takes it ("" when unknown).
    pub fstype: String,
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// GPT unique GUID, or MBR `disksig-NN`.
    pub partuuid: Option<String>,
    pub gpt_type: Option<String>,
    /// `VG/LV` when this is a logical volume of an LVM physical volume on
    /// partition `number` (`start`, `len`: its range on the disk).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lv: Option<String>,
    /// The md RAID1 array this is the data of (read through the first
    /// member, on partition `number`), or that holds the LVM volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md: Option<MdArray>,
    /// The LUKS volume (on partition `number`) this is inside: `start` and
    /// `len` are then in its plaintext.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crypt: Option<Crypt>,
}

impl Part {
    /// The byte range (`start`, `len`) of partition `number`'s data holding
    /// `fs` (as probed), in no container yet. An LVM physical volume's
    /// UUID is not a filesystem's: not kept.
    fn probed(number: u32, start: u64, len: u64, fs: Option<&imaging::fs::FsInfo>) -> Part {
        Part {
            number,
            start,
            len,
            fstype: fs.and_then(|f| mount_type(&f.kind)).unwrap_or("").to_owned(),
            uuid: fs.and_then(|f| f.uuid.clone()).filter(|_| !is_pv(fs)),
            label: fs.and_then(|f| f.label.clone()),
            partuuid: None,
            gpt_type: None,
            lv: None,
            md: None,
            crypt: None,
        }
    }
}

fn is_pv(fs: Option<&imaging::fs::FsInfo>) -> bool {
    fs.is_some_and(|f| f.kind == FsKind::Other("LVM2_member".into()))
}

fn is_luks(fs: Option<&imaging::fs::FsInfo>) -> bool {
    fs.is_some_and(imaging::fs::FsInfo::is_luks)
}

/// How a partition or logical volume is named to the user.
pub fn place(partition: u32, lv: Option<&str>) -> String {
    match lv {
        Some(l) => format!("LVM volume {l} (partition {partition})"),
        None => format!("partition {partition}"),
    }
}

/// `/dev/mapper/NAME` of a `VG/LV`.
fn lv_dm_name(lv: &str) -> String {
    let (vg, l) = lv.split_once('/').unwrap_or((lv, ""));
    imaging::lvm::dm_name(vg, l)
}

/// The disk as the plan needs it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskLayout {
    pub path: PathBuf,
    pub size: u64,
    /// "gpt" or "mbr".
    pub table: String,
    /// Partitions, then the linear LVM volumes in them.
    pub parts: Vec<Part>,
    /// LVM volumes (or physical volumes) not searched, and why.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skipped: Vec<String>,
    /// Logical sector size in bytes (firmware boot entries count in it).
    #[serde(default = "default_sector_size")]
    pub sector_size: u32,
    /// LUKS partitions no passphrase given opened (none given, or wrong).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locked: Vec<u32>,
}

fn default_sector_size() -> u32 {
    512
}

fn mount_type(k: &FsKind) -> Option<&str> {
    match k {
        FsKind::Ext2 => Some("ext2"),
        FsKind::Ext3 => Some("ext3"),
        FsKind::Ext4 => Some("ext4"),
        FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => Some("vfat"),
        FsKind::Other(s) if s == "xfs" || s == "btrfs" => Some(s.as_str()),
        _ => None,
    }
}

fn is_root_candidate(fstype: &str) -> bool {
    matches!(fstype, "ext2" | "ext3" | "ext4" | "xfs" | "btrfs")
}

/// Who uses each partition (partition number, users), as the inventory says.
pub type Users = Vec<(u32, Vec<String>)>;

/// Read the disk's table and filesystems. LUKS partitions that one of
/// `luks` opens are unlocked (their plaintext served read-write when
/// `write`) and searched too: the returned [`Sources`] hold them open.
pub fn layout(disk: &Path, luks: &imaging::luks::Passphrases, write: bool) -> Result<(DiskLayout, Users, Sources), LinuxError> {
    let r = inventory::inspect(disk, None).map_err(|e| LinuxError::Inspect { disk: disk.display().to_string(), detail: e.to_string() })?;
    let table = r.table.as_ref();
    let mut parts = Vec::new();
    let mut busy = Vec::new();
    for p in &r.partitions {
        let fs = p.fs.as_ref();
        let partuuid = match (&p.partition.guid, table) {
            (Some(g), _) => Some(g.to_ascii_lowercase()),
            (None, Some(t)) if t.kind == TableKind::Mbr => Some(format!("{}-{:02x}", t.disk_id, p.partition.number)),
            _ => None,
        };
        parts.push(Part {
            number: p.partition.number,
            start: p.partition.start,
            len: p.partition.len,
            fstype: fs.and_then(|f| mount_type(&f.kind)).unwrap_or("").to_owned(),
            uuid: fs.and_then(|f| f.uuid.clone()),
            label: fs.and_then(|f| f.label.clone()),
            partuuid,
            gpt_type: match &p.partition.ptype {
                PartType::Gpt(g) => Some(g.to_ascii_lowercase()),
                PartType::Mbr(_) => None,
            },
            lv: None,
            md: None,
            crypt: None,
        });
        busy.push((p.partition.number, p.busy.clone()));
    }
    let is = |p: &inventory::PartitionReport, kind: &str| p.fs.as_ref().is_some_and(|f| f.kind == FsKind::Other(kind.into()));
    // md RAID1 arrays: each becomes the data range of its first current
    // member, in place of its members' partitions.
    let members: Vec<crate::linux_md::Candidate> = r.partitions.iter().filter(|p| is(p, "linux_raid_member")).map(|p| (p.partition.number, p.partition.start, p.partition.len)).collect();
    let (arrays, mut skipped) = md_parts(disk, &members);
    for a in &arrays {
        let used = a.md.as_ref().map(|m| m.members.iter().map(|x| x.partition).collect::<Vec<_>>()).unwrap_or_default();
        parts.retain(|p| !used.contains(&p.number));
    }
    parts.extend(arrays.iter().cloned());
    let mut pvs: Vec<Part> = r.partitions.iter().filter(|p| is(p, "LVM2_member")).filter_map(|p| parts.iter().find(|x| x.number == p.partition.number).cloned()).collect();
    pvs.extend(arrays.iter().filter(|a| a.fstype.is_empty() && a.uuid.is_none()).cloned());
    // LUKS volumes: a filesystem or an LVM physical volume inside each one
    // unlocked (said in `skipped` for the others, for the message when no
    // root is found).
    let mut sources = Sources::new(disk);
    let luks_parts: Vec<crate::linux_luks::LuksPart> = r.partitions.iter().filter(|p| is_luks(p.fs.as_ref())).map(|p| (p.partition.number, p.partition.start, p.partition.len, p.busy.clone())).collect();
    let unlocking = crate::linux_luks::unlock(&mut sources, &luks_parts, luks, write);
    skipped.extend(unlocking.skipped);
    for u in unlocking.opened {
        let inner = sources.path(Some(&u.crypt)).ok().and_then(|f| std::fs::File::open(f).ok());
        let fs = inner.as_ref().and_then(|f| imaging::fs::probe(&Window::new(f, 0, u.size), u.size).ok().flatten());
        let part = Part { crypt: Some(u.crypt.clone()), ..Part::probed(u.crypt.partition, 0, u.size, fs.as_ref()) };
        if is_pv(fs.as_ref()) {
            pvs.push(part.clone());
        }
        parts.push(part);
    }
    let (lvs, lvm_skipped) = lvm_parts(&sources, &pvs);
    skipped.extend(lvm_skipped);
    parts.extend(lvs);
    let table = match table.map(|t| t.kind) {
        Some(TableKind::Gpt) => "gpt",
        Some(TableKind::Mbr) => "mbr",
        None => "none",
    };
    let lay = DiskLayout { path: disk.to_path_buf(), size: r.disk.size, table: table.into(), parts, skipped, sector_size: r.disk.logical_sector_size.max(512), locked: unlocking.locked };
    Ok((lay, busy, sources))
}

/// The md RAID1 arrays with members among `members` (partitions of
/// `disk`) as parts, and what was not used with the reason.
fn md_parts(disk: &Path, members: &[crate::linux_md::Candidate]) -> (Vec<Part>, Vec<String>) {
    if members.is_empty() {
        return (Vec::new(), Vec::new());
    }
    let src = match imaging::blockdev::SourceDisk::open(disk, None) {
        Ok(s) => s,
        Err(e) => return (Vec::new(), vec![format!("md RAID members: {e}")]),
    };
    let (arrays, mut skipped) = crate::linux_md::arrays(&src.file, members);
    let parts = arrays
        .into_iter()
        .map(|a| {
            let m = &a.members[0];
            let (start, len) = (m.start + m.data_offset, a.data_size);
            let fs = imaging::fs::probe(&Window::new(&src.file, start, len), len).ok().flatten();
            if is_luks(fs.as_ref()) {
                skipped.push(format!("{}: it holds an encrypted (LUKS) volume, which universal restore opens only on a partition: a system inside it is not fixed", a.describe()));
            }
            // An LVM physical volume inside: its volumes are looked for.
            let number = m.partition;
            Part { md: Some(a), ..Part::probed(number, start, len, fs.as_ref()) }
        })
        .collect();
    (parts, skipped)
}

/// The linear logical volumes of the LVM physical volumes `pvs` (partitions
/// of the disk, or the plaintext of LUKS volumes on it) as parts, and what
/// was not searched with the reason.
fn lvm_parts(sources: &Sources, pvs: &[Part]) -> (Vec<Part>, Vec<String>) {
    use imaging::lvm::{self, NotLinear};
    let mut out: Vec<Part> = Vec::new();
    let mut skipped = Vec::new();
    if pvs.is_empty() {
        return (out, skipped);
    }
    // Per volume, why no PV of this disk holds it in one range.
    let mut why_not: Vec<(String, NotLinear)> = Vec::new();
    for p in pvs {
        let src = match sources.path(p.crypt.as_ref()).map_err(std::io::Error::other).and_then(|f| imaging::blockdev::SourceDisk::open(&f, None).map_err(std::io::Error::other)) {
            Ok(s) => s,
            Err(e) => {
                skipped.push(format!("LVM volumes on partition {}: {e}", p.number));
                continue;
            }
        };
        let w = Window::new(&src.file, p.start, p.len);
        let pv = match lvm::read_pv(&w, p.len) {
            Ok(Some(pv)) => pv,
            Ok(None) => continue,
            Err(e) => {
                skipped.push(format!("partition {}: {e}", p.number));
                continue;
            }
        };
        let Some(vg) = pv.vg else {
            skipped.push(format!("partition {}: an LVM physical volume whose group's metadata is elsewhere (another disk)", p.number));
            continue;
        };
        for lv in vg.lvs.iter().filter(|l| l.visible()) {
            let name = format!("{}/{}", vg.name, lv.name);
            match vg.linear_range(lv, &pv.uuid) {
                Ok((off, len)) if off.checked_add(len).is_some_and(|e| e <= p.len) => {
                    let w = Window::new(&src.file, p.start + off, len);
                    let fs = imaging::fs::probe(&w, len).ok().flatten();
                    if is_luks(fs.as_ref()) {
                        skipped.push(format!("LVM volume {name}: it holds an encrypted (LUKS) volume, which universal restore opens only on a partition: a system inside it is not fixed"));
                    }
                    out.push(Part { lv: Some(name), md: p.md.clone(), crypt: p.crypt.clone(), ..Part::probed(p.number, p.start + off, len, fs.as_ref()) });
                }
                Ok(_) => why_not.push((name, NotLinear::Empty)),
                Err(e) => why_not.push((name, e)),
            }
        }
    }
    let mut noted: Vec<&str> = Vec::new();
    for (name, e) in &why_not {
        if out.iter().any(|p| p.lv.as_deref() == Some(name.as_str())) || noted.contains(&name.as_str()) {
            continue;
        }
        // Prefer a reason about the volume itself to "on another PV".
        let e = why_not.iter().filter(|(n, _)| n == name).map(|(_, e)| e).find(|e| **e != NotLinear::OtherPv).unwrap_or(e);
        skipped.push(format!("LVM volume {name}: {e}; mounting it needs the volume group activated (device-mapper), which this does not do"));
        noted.push(name);
    }
    (out, skipped)
}

/// The partition an fstab source names, if it is on this disk.
pub fn resolve_spec<'a>(spec: &str, parts: &'a [Part]) -> Option<&'a Part> {
    let spec = spec.trim_matches('"');
    let (kind, val) = if let Some(v) = spec.strip_prefix("UUID=") {
        ("uuid", v)
    } else if let Some(v) = spec.strip_prefix("/dev/disk/by-uuid/") {
        ("uuid", v)
    } else if let Some(v) = spec.strip_prefix("PARTUUID=") {
        ("partuuid", v)
    } else if let Some(v) = spec.strip_prefix("/dev/disk/by-partuuid/") {
        ("partuuid", v)
    } else if let Some(v) = spec.strip_prefix("LABEL=") {
        ("label", v)
    } else if let Some(v) = spec.strip_prefix("/dev/disk/by-label/") {
        ("label", v)
    } else if let Some(v) = spec.strip_prefix("/dev/md/").or_else(|| spec.strip_prefix("/dev/md").filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))) {
        // mdadm's names for an array "host:N": /dev/md/host:N, /dev/md/N
        // and, N being a number, /dev/mdN.
        return parts.iter().find(|p| p.lv.is_none() && p.md.as_ref().is_some_and(|a| a.name == v || a.name.rsplit_once(':').is_some_and(|(_, n)| n == v)));
    } else if let Some(v) = spec.strip_prefix("/dev/mapper/") {
        return parts.iter().find(|p| p.lv.as_deref().is_some_and(|l| lv_dm_name(l) == v));
    } else if let Some(v) = spec.strip_prefix("/dev/").filter(|v| v.matches('/').count() == 1) {
        return parts.iter().find(|p| p.lv.as_deref() == Some(v));
    } else {
        return None;
    };
    let val = val.trim_matches('"');
    parts.iter().find(|p| match kind {
        "uuid" => p.uuid.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(val)),
        "partuuid" => p.partuuid.as_deref().is_some_and(|u| u.eq_ignore_ascii_case(val)),
        _ => p.label.as_deref() == Some(val),
    })
}

// ---------------------------------------------------------------------------
// What a root holds

/// An installed Linux system found on a mounted root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinuxRoot {
    pub partition: u32,
    /// `VG/LV` when the root is an LVM volume on `partition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lv: Option<String>,
    pub os: OsRelease,
    pub fstab: Vec<FstabEntry>,
    pub initramfs: Option<InitramfsTool>,
    /// The LUKS volume the root is in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crypt: Option<Crypt>,
}

/// `Some` when the mounted filesystem at `dir` is a Linux root.
pub fn inspect_root(dir: &Path, partition: u32) -> Result<Option<LinuxRoot>, LinuxError> {
    let Some(fstab) = read_opt(dir, "etc/fstab")? else { return Ok(None) };
    let os = match read_opt(dir, "etc/os-release")? {
        Some(t) => t,
        None => match read_opt(dir, "usr/lib/os-release")? {
            Some(t) => t,
            None => return Ok(None),
        },
    };
    let os = parse_os_release(&os);
    let initramfs = initramfs_tool(dir, &os);
    Ok(Some(LinuxRoot { partition, lv: None, os, fstab: parse_fstab(&fstab), initramfs, crypt: None }))
}

// ---------------------------------------------------------------------------
// The plan

/// What the Linux part of universal restore is asked to do.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Target storage controllers.
    pub controllers: Vec<Controller>,
    /// Filesystem identifiers that changed (old → new), rewritten in fstab,
    /// crypttab, GRUB and mdadm configuration.
    pub uuid_map: Vec<(String, String)>,
    /// Add a firmware boot entry for GRUB's EFI loader: this machine, booted
    /// by EFI, is the one the disk will boot in.
    pub boot_entry: bool,
}

/// A partition mounted into the root for the chroot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlannedMount {
    pub partition: u32,
    /// `VG/LV` when it is an LVM volume on `partition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lv: Option<String>,
    pub start: u64,
    pub len: u64,
    pub fstype: String,
    /// Absolute path inside the target ("/boot", "/boot/efi").
    pub at: String,
    /// Filesystem UUID (for `/dev/disk/by-uuid` in the chroot).
    pub uuid: Option<String>,
    /// The md RAID1 array it is in (written through its first member).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub md: Option<MdArray>,
    /// The LUKS volume it is inside (written through its plaintext).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crypt: Option<Crypt>,
    /// Its `/dev/mapper` name in the system's crypttab, when it is the
    /// volume's plaintext itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mapper: Option<String>,
}

impl PlannedMount {
    /// Mount `p` at `at` (an absolute path in the target) as `fstype`.
    fn of(p: &Part, at: &str, fstype: String) -> PlannedMount {
        PlannedMount { partition: p.number, lv: p.lv.clone(), start: p.start, len: p.len, fstype, at: at.into(), uuid: p.uuid.clone(), md: p.md.clone(), crypt: p.crypt.clone(), mapper: None }
    }
}

/// One change, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// Replace a file of the target (path relative to its root).
    Write { path: String, content: String, summary: String },
    /// Run a command in the chroot; an argument [`DISK`] stands for the disk.
    Run { argv: Vec<String> },
    /// Add (or reuse) this machine's firmware boot entry for the EFI loader
    /// GRUB installed on the ESP (partition `partition`, mounted at `esp`
    /// in the target), first in the boot order.
    BootEntry { partition: u32, esp: String, start_lba: u64, size_lba: u64, partuuid: String },
}

/// The plan for one Linux system.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemPlan {
    pub partition: u32,
    /// `VG/LV` when the root is an LVM volume on `partition`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lv: Option<String>,
    pub name: String,
    pub initramfs: InitramfsTool,
    /// "bios", "efi", "bios+efi", or "none".
    pub boot: String,
    pub mounts: Vec<PlannedMount>,
    pub modules: Vec<String>,
    pub steps: Vec<Step>,
    /// Things the user should know (modules skipped, loader left alone).
    pub notes: Vec<String>,
}

impl SystemPlan {
    /// Where the root is, as the user reads it.
    pub fn place(&self) -> String {
        place(self.partition, self.lv.as_deref())
    }

    /// Whether a step needs the whole disk as a device.
    pub fn needs_disk(&self) -> bool {
        self.steps.iter().any(|s| matches!(s, Step::Run { argv } if argv.iter().any(|a| a == DISK)))
    }
}

impl fmt::Display for SystemPlan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "Linux: {} on {} ({}, boot loader: {})", self.name, self.place(), self.initramfs, self.boot)?;
        let mounts: Vec<String> = self
            .mounts
            .iter()
            .map(|m| {
                let what = match (&m.md, &m.lv, &m.crypt) {
                    (Some(a), None, _) => a.describe(),
                    (_, None, Some(c)) => c.describe(),
                    (_, Some(l), Some(c)) => format!("LVM volume {l} (in the {})", c.describe()),
                    _ => place(m.partition, m.lv.as_deref()),
                };
                format!("{what} ({}) at {}", m.fstype, m.at)
            })
            .collect();
        writeln!(f, "  mount {}; a private /dev; bind /proc /sys /run", mounts.join(", "))?;
        writeln!(f, "  storage modules: {}", self.modules.join(" "))?;
        for s in &self.steps {
            match s {
                Step::Write { path, summary, .. } => writeln!(f, "  write /{path}: {summary}")?,
                Step::Run { argv } => writeln!(f, "  chroot: {}", shell_words(argv))?,
                Step::BootEntry { partition, .. } => writeln!(f, "  firmware boot entry for GRUB on the ESP (partition {partition}) on this machine, first in the boot order")?,
            }
        }
        for n in &self.notes {
            writeln!(f, "  note: {n}")?;
        }
        Ok(())
    }
}

/// First words of the non-comment lines (a modules list file).
fn listed_modules(text: &str) -> BTreeSet<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().next())
        .map(|w| w.replace('-', "_"))
        .collect()
}

const COMMENT: &str = "# Added by rescue universal-restore: storage drivers for the new hardware.";

/// The steps that make `modules` part of every initramfs the tool builds,
/// then the rebuild itself.
fn initramfs_steps(root: &Path, tool: InitramfsTool, modules: &[String]) -> Result<Vec<Step>, LinuxError> {
    let mut steps = Vec::new();
    let words = modules.join(" ");
    match tool {
        InitramfsTool::InitramfsTools => {
            let rel = "etc/initramfs-tools/modules";
            let old = read_opt(root, rel)?.unwrap_or_default();
            let have = listed_modules(&old);
            let missing: Vec<&String> = modules.iter().filter(|m| !have.contains(&m.replace('-', "_"))).collect();
            if !missing.is_empty() {
                let mut content = old.clone();
                if !content.is_empty() && !content.ends_with('\n') {
                    content.push('\n');
                }
                content.push_str(COMMENT);
                content.push('\n');
                for m in &missing {
                    content.push_str(m);
                    content.push('\n');
                }
                let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
                steps.push(Step::Write { path: rel.into(), content, summary: format!("add {}", names.join(" ")) });
            }
            steps.push(Step::Run { argv: argv(&["update-initramfs", "-u", "-k", "all"]) });
        }
        InitramfsTool::Dracut => {
            let rel = "etc/dracut.conf.d/90-rescue-universal-restore.conf";
            let content = format!("{COMMENT}\nadd_drivers+=\" {words} \"\n");
            if read_opt(root, rel)?.as_deref() != Some(content.as_str()) {
                steps.push(Step::Write { path: rel.into(), content, summary: format!("add_drivers {words}") });
            }
            steps.push(Step::Run { argv: argv(&["dracut", "-f", "--regenerate-all", "--no-hostonly", "--add-drivers", &words]) });
        }
        InitramfsTool::Mkinitcpio => {
            if exists(root, "etc/mkinitcpio.conf.d") {
                let rel = "etc/mkinitcpio.conf.d/rescue-universal-restore.conf";
                let content = format!("{COMMENT}\nMODULES+=({words})\n");
                if read_opt(root, rel)?.as_deref() != Some(content.as_str()) {
                    steps.push(Step::Write { path: rel.into(), content, summary: format!("MODULES+=({words})") });
                }
            } else {
                // mkinitcpio before v36 reads only mkinitcpio.conf: extend its MODULES=(...).
                let rel = "etc/mkinitcpio.conf";
                let old = read_opt(root, rel)?.unwrap_or_default();
                let (content, added) = add_to_mkinitcpio_modules(&old, modules);
                if !added.is_empty() {
                    steps.push(Step::Write { path: rel.into(), content, summary: format!("MODULES gains {}", added.join(" ")) });
                }
            }
            steps.push(Step::Run { argv: argv(&["mkinitcpio", "-P"]) });
        }
    }
    Ok(steps)
}

/// Add `modules` inside the first `MODULES=(...)` line (appending one when absent).
pub fn add_to_mkinitcpio_modules(text: &str, modules: &[String]) -> (String, Vec<String>) {
    let mut out = String::new();
    let mut added = Vec::new();
    let mut done = false;
    for line in text.split_inclusive('\n') {
        let t = line.trim_start();
        if !done && t.starts_with("MODULES=(") {
            if let Some(close) = line.rfind(')') {
                let open = line.find('(').expect("line starts with MODULES=(");
                let have: BTreeSet<&str> = line[open + 1..close].split_whitespace().collect();
                let mut inner = line[open + 1..close].trim().to_owned();
                for m in modules {
                    if !have.contains(m.as_str()) {
                        if !inner.is_empty() {
                            inner.push(' ');
                        }
                        inner.push_str(m);
                        added.push(m.clone());
                    }
                }
                out.push_str(&line[..=open]);
                out.push_str(&inner);
                out.push_str(&line[close..]);
                done = true;
                continue;
            }
        }
        out.push_str(line);
    }
    if !done {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(&format!("MODULES=({})\n", modules.join(" ")));
        added = modules.to_vec();
    }
    (out, added)
}

/// A command line as a shell would take it (for the plan and messages).
pub fn shell_words(argv: &[String]) -> String {
    let q: Vec<String> = argv
        .iter()
        .map(|a| if a.is_empty() || a.contains([' ', '"', '\'', '$', '\\']) { format!("'{}'", a.replace('\'', "'\\''")) } else { a.clone() })
        .collect();
    q.join(" ")
}

fn argv(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| (*s).to_owned()).collect()
}

/// Plan the changes for one root mounted (read-only is enough) at `dir`.
pub fn plan(dir: &Path, root: &LinuxRoot, disk: &DiskLayout, opts: &Options) -> Result<SystemPlan, LinuxError> {
    let part = root.partition;
    let mut notes = Vec::new();
    let tool = root.initramfs.ok_or(LinuxError::NoInitramfsTool { part })?;

    // Modules: what the controllers need, kept if some kernel of the root has them.
    let mut wanted: Vec<String> = Vec::new();
    for c in &opts.controllers {
        let m = modules_for_controller(c);
        if m.is_empty() {
            notes.push(format!("no Linux module known for {} ({}); skipped", c.description, c.ids.first().map(String::as_str).unwrap_or("")));
        }
        for x in m {
            if !wanted.iter().any(|w| w == x) {
                wanted.push(x.to_owned());
            }
        }
    }
    if wanted.is_empty() {
        let what: Vec<&str> = opts.controllers.iter().map(|c| c.description.as_str()).collect();
        return Err(LinuxError::NoModules { what: if what.is_empty() { "no controller".into() } else { what.join(", ") } });
    }
    let kernels = kernel_modules(dir);
    let modules: Vec<String> = if kernels.is_empty() {
        notes.push("no kernel modules found under /lib/modules; modules are listed unchecked".into());
        wanted
    } else {
        wanted
            .into_iter()
            .filter(|m| {
                let ok = kernels.iter().any(|(_, names)| names.contains(&m.replace('-', "_")));
                if !ok {
                    let k: Vec<&str> = kernels.iter().map(|(k, _)| k.as_str()).collect();
                    notes.push(format!("module {m} is in none of the kernels ({}); skipped", k.join(", ")));
                }
                ok
            })
            .collect()
    };
    if modules.is_empty() {
        return Err(LinuxError::NoModules { what: "the target hardware in the installed kernels".into() });
    }

    // The root, and what of /boot, /usr and the ESP is on other partitions.
    let this = disk.parts.iter().find(|p| p.number == part && p.lv == root.lv && p.crypt.is_some() == root.crypt.is_some()).ok_or_else(|| LinuxError::Inspect {
        disk: disk.path.display().to_string(),
        detail: format!("{} vanished", place(part, root.lv.as_deref())),
    })?;
    let mut mounts = vec![PlannedMount::of(this, "/", this.fstype.clone())];
    // The system's names for its encrypted volumes (`/dev/mapper/NAME`).
    let crypttab_text = read_opt(dir, "etc/crypttab")?.unwrap_or_default();
    let crypttab = crate::linux_luks::parse_crypttab(&crypttab_text);
    let mapper_name = |p: &Part| p.crypt.as_ref().filter(|_| p.lv.is_none()).and_then(|c| crate::linux_luks::entry_for(&crypttab, c, &disk.parts)).map(|e| e.name.clone());
    let resolve = |spec: &str| {
        resolve_spec(spec, &disk.parts).or_else(|| {
            let name = spec.strip_prefix("/dev/mapper/")?;
            disk.parts.iter().find(|p| mapper_name(p).as_deref() == Some(name))
        })
    };
    let mut esp_at = None;
    let mut entries: Vec<&FstabEntry> = root.fstab.iter().filter(|e| matches!(e.mountpoint.as_str(), "/boot" | "/boot/efi" | "/efi" | "/usr")).collect();
    entries.sort_by_key(|e| e.mountpoint.matches('/').count() + usize::from(e.mountpoint.len() > 1));
    for e in entries {
        let mapped = crate::linux::rewrite_references(&e.spec, &opts.uuid_map).0;
        let is_esp_mp = (e.mountpoint != "/boot" && e.mountpoint != "/usr") || e.fstype == "vfat";
        let Some(p) = resolve(&mapped) else {
            if is_esp_mp {
                notes.push(format!("the ESP ({} at {}) is on no partition of this disk: the EFI boot loader is left as is", e.spec, e.mountpoint));
                continue;
            }
            return Err(LinuxError::Unresolved { part, mountpoint: e.mountpoint.clone(), spec: e.spec.clone() });
        };
        let fstype = if p.fstype.is_empty() { e.fstype.clone() } else { p.fstype.clone() };
        if is_esp_mp && fstype == "vfat" {
            esp_at = Some(e.mountpoint.clone());
        }
        mounts.push(PlannedMount::of(p, &e.mountpoint, fstype));
    }
    for m in mounts.iter_mut() {
        if let Some(p) = disk.parts.iter().find(|p| p.number == m.partition && p.lv == m.lv && p.crypt == m.crypt && p.start == m.start) {
            m.mapper = mapper_name(p);
        }
    }
    // Other fstab references to identifiers that are nowhere on this disk.
    for e in &root.fstab {
        if e.spec.contains('=') || e.spec.starts_with("/dev/disk/") {
            let mapped = opts.uuid_map.iter().any(|(old, _)| e.spec.to_ascii_lowercase().contains(&old.to_ascii_lowercase()));
            if !mapped && resolve(&e.spec).is_none() && e.mountpoint != "none" && e.fstype != "swap" && !e.options.contains("nofail") {
                notes.push(format!("/etc/fstab mounts {} at {}, which is on no partition of this disk; if it was recreated, pass --map-uuid OLD=NEW", e.spec, e.mountpoint));
            }
        }
    }

    let mut steps = Vec::new();
    if !opts.uuid_map.is_empty() {
        let fixes = crate::linux::plan_fixups(dir, &opts.uuid_map).map_err(io(dir))?;
        for fx in fixes {
            let rel = fx.path.strip_prefix(dir).unwrap_or(&fx.path).to_string_lossy().into_owned();
            steps.push(Step::Write { path: rel, content: fx.new_text, summary: format!("{} identifier reference(s) updated", fx.changes.len()) });
        }
    }
    // LVM's devices file (RHEL 9, Fedora) lists the disks it may use by
    // serial or WWID, which the new hardware does not share: its initramfs
    // would then activate nothing. Without the file LVM uses every disk.
    let on_lvm = mounts.iter().any(|m| m.lv.is_some()) || disk.parts.iter().any(|p| p.lv.is_some());
    if on_lvm && exists(dir, DEVICES_FILE) {
        steps.push(Step::Run { argv: argv(&["mv", "-f", &format!("/{DEVICES_FILE}"), &format!("/{DEVICES_FILE}.rescue-old")]) });
        notes.push(format!("LVM's devices file names disks by their serial numbers, which differ on the new hardware: it is moved aside to /{DEVICES_FILE}.rescue-old, so LVM uses every disk; on the new machine `vgimportdevices -a` makes a new one"));
    }
    // Encrypted volumes the initramfs must unlock: the root's and /usr's.
    let mut crypts: Vec<&Crypt> = Vec::new();
    for c in mounts.iter().filter(|m| m.at == "/" || m.at == "/usr").filter_map(|m| m.crypt.as_ref()) {
        if !crypts.iter().any(|x| x.partition == c.partition) {
            crypts.push(c);
        }
    }
    crate::linux_luks::plan(dir, &crypttab_text, tool, &crypts, &disk.parts, &mut steps, &mut notes)?;
    steps.extend(initramfs_steps(dir, tool, &modules)?);
    notes.extend(disk.skipped.iter().map(|k| format!("not searched: {k}")));

    // Boot loader: GRUB for the boot mode(s) this disk is set up for.
    let grub_install = find_tool(dir, &["grub-install", "grub2-install"]);
    let grub_lib = if exists(dir, "usr/lib/grub") { "usr/lib/grub" } else { "usr/lib/grub2" };
    let bios_possible = disk.table == "mbr" || disk.parts.iter().any(|p| p.gpt_type.as_deref() == Some(BIOS_BOOT));
    // /boot/grub inside an LVM volume: core.img must read LVM to find it.
    let boot_mount = mounts.iter().find(|m| m.at == "/boot").unwrap_or(&mounts[0]);
    let modules_arg = match (&boot_mount.md, &boot_mount.lv) {
        (Some(_), Some(_)) => MODULES_MD_LVM,
        (Some(_), None) => MODULES_MD,
        (None, Some(_)) => MODULES_LVM,
        (None, None) => MODULES,
    };
    // md RAID1: written through one member, the others follow after.
    let mut arrays: Vec<&MdArray> = Vec::new();
    for a in mounts.iter().filter_map(|m| m.md.as_ref()) {
        if !arrays.iter().any(|x| x.uuid == a.uuid) {
            arrays.push(a);
        }
    }
    for a in &arrays {
        notes.push(a.plan_note());
    }
    if !arrays.is_empty() && find_tool(dir, &["mdadm"]).is_none() {
        notes.push("mdadm is not installed in the system: its initramfs may not assemble the md RAID array at boot".into());
    }
    let mut boot = Vec::new();
    match &grub_install {
        None => notes.push("GRUB is not installed in the system: the boot loader is left as is".into()),
        // GRUB unlocks the volume itself (cryptodisk): its core.img names
        // the volume, which a reinstall from here would not see.
        Some(_) if boot_mount.crypt.is_some() => notes.push(format!(
            "/boot is in the {}: GRUB, which unlocks it itself, is left as is (it does not depend on the storage controller)",
            boot_mount.crypt.as_ref().map(Crypt::describe).unwrap_or_default()
        )),
        Some(gi) => {
            if bios_possible && exists(dir, &format!("{grub_lib}/i386-pc")) {
                // The partition loop device GRUB probes is not a partition of
                // <disk> to it: name the partition-map modules core.img needs
                // to find /boot/grub (it searches by filesystem UUID).
                steps.push(Step::Run { argv: vec![gi.clone(), "--target=i386-pc".into(), modules_arg.into(), DISK.into()] });
                boot.push("bios");
            }
            if let Some(esp) = &esp_at {
                if exists(dir, &format!("{grub_lib}/x86_64-efi")) {
                    let d = format!("--efi-directory={esp}");
                    // No NVRAM entry can be made for another machine offline:
                    // also install the removable-media path \EFI\BOOT\BOOTX64.EFI,
                    // which firmware boots without one.
                    steps.push(Step::Run { argv: vec![gi.clone(), "--target=x86_64-efi".into(), d.clone(), modules_arg.into(), "--no-nvram".into()] });
                    steps.push(Step::Run { argv: vec![gi.clone(), "--target=x86_64-efi".into(), d, modules_arg.into(), "--removable".into(), "--no-nvram".into()] });
                    boot.push("efi");
                    // On the machine itself the firmware gets its entry too
                    // (written here, not by the system's efibootmgr, which
                    // may be missing and sees no efivarfs in the chroot).
                    let esp_part = mounts.iter().find(|m| &m.at == esp).and_then(|m| disk.parts.iter().find(|p| p.number == m.partition && p.lv.is_none()));
                    match esp_part {
                        Some(p) if opts.boot_entry => match &p.partuuid {
                            Some(id) => steps.push(Step::BootEntry {
                                partition: p.number,
                                esp: esp.clone(),
                                start_lba: p.start / u64::from(disk.sector_size),
                                size_lba: p.len / u64::from(disk.sector_size),
                                partuuid: id.clone(),
                            }),
                            None => notes.push(format!("partition {} has no GPT GUID or MBR signature: no firmware boot entry is made; firmware boots \\EFI\\BOOT\\BOOTX64.EFI", p.number)),
                        },
                        _ => notes.push("no firmware boot entry is made (not on the machine it will boot in, or not booted by EFI): firmware boots \\EFI\\BOOT\\BOOTX64.EFI".into()),
                    }
                } else {
                    notes.push(format!("the ESP at {esp} is kept as is: GRUB for EFI (x86_64-efi) is not installed in the system"));
                }
            } else if disk.parts.iter().any(|p| p.gpt_type.as_deref() == Some(ESP)) && !bios_possible {
                notes.push("the disk has an ESP but the system's fstab does not mount it: the EFI boot loader is left as is".into());
            }
            if boot.is_empty() {
                notes.push("no boot mode GRUB can be installed for (no MBR, BIOS boot partition or mounted ESP): the boot loader is left as is".into());
            } else if let Some(mk) = find_tool(dir, &["update-grub"]) {
                steps.push(Step::Run { argv: vec![mk] });
            } else if let Some(mk) = find_tool(dir, &["grub-mkconfig", "grub2-mkconfig"]) {
                let cfg = if mk.starts_with("grub2") { "/boot/grub2/grub.cfg" } else { "/boot/grub/grub.cfg" };
                steps.push(Step::Run { argv: vec![mk, "-o".into(), cfg.into()] });
            }
        }
    }
    Ok(SystemPlan {
        partition: part,
        lv: root.lv.clone(),
        name: root.os.pretty_name.clone(),
        initramfs: tool,
        boot: if boot.is_empty() { "none".into() } else { boot.join("+") },
        mounts,
        modules,
        steps,
        notes,
    })
}

// ---------------------------------------------------------------------------
// Mounting and running

/// A filesystem mounted on a private directory (over its own loop device, or
/// a bind mount); unmounted and detached on drop.
#[derive(Debug)]
pub struct Mounted {
    pub dir: PathBuf,
    remove_dir: bool,
    /// `/dev/rescue-ul-PID-pN`: the node the filesystem is mounted from.
    node: Option<PathBuf>,
    _loop: Option<LoopDevice>,
}

impl Mounted {
    /// The device node the filesystem is mounted from.
    pub fn device(&self) -> Option<&Path> {
        self.node.as_deref()
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        let mut ok = false;
        for _ in 0..20 {
            if os::unmount(&self.dir, false).is_ok() {
                ok = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        if !ok {
            tracing::warn!(dir = %self.dir.display(), "unmount failed; detaching lazily");
            let _ = os::unmount(&self.dir, true);
        }
        if self.remove_dir {
            let _ = std::fs::remove_dir(&self.dir);
        }
        if let Some(n) = &self.node {
            let _ = std::fs::remove_file(n);
        }
        // The loop device (if any) is detached after this, when the field drops.
    }
}

fn mount_part(sources: &Sources, p: &PlannedMount, dir: &Path, write: bool, remove_dir: bool) -> Result<Mounted, LinuxError> {
    let err = |detail: String| LinuxError::Mount { disk: sources.disk.display().to_string(), part: p.partition, at: p.at.clone(), detail };
    // The disk, or the plaintext of the LUKS volume the filesystem is in.
    let backing = sources.path(p.crypt.as_ref()).map_err(err)?;
    let lo = LoopDevice::attach(&backing, p.start, p.len).map_err(|e| err(e.to_string()))?;
    std::fs::create_dir_all(dir).map_err(|e| err(format!("creating {}: {e}", dir.display())))?;
    // Mounted from a node of our own name, not `/dev/loopN`: tools in the
    // chroot read the device name from mountinfo (see `private_dev`).
    let node = PathBuf::from(format!("/dev/{}", node_name(p.partition, p.lv.as_deref())));
    let _ = std::fs::remove_file(&node);
    mknod_like(&lo.path, &node).map_err(|e| err(e.to_string()))?;
    // ro: ext* must not replay its journal (noload), which would write.
    let opts = match (write, p.fstype.as_str()) {
        (true, _) => "rw",
        (false, "ext3" | "ext4") => "ro,noload",
        (false, "xfs") => "ro,norecovery",
        (false, _) => "ro",
    };
    let done = if p.fstype.is_empty() {
        Err(std::io::Error::other("its filesystem type is unknown (neither recognised here nor named in /etc/fstab)"))
    } else {
        os::mount(&node, dir, &p.fstype, opts)
    };
    if let Err(e) = done {
        let _ = std::fs::remove_file(&node);
        if remove_dir {
            let _ = std::fs::remove_dir(dir);
        }
        return Err(err(e.to_string()));
    }
    Ok(Mounted { dir: dir.to_path_buf(), remove_dir, node: Some(node), _loop: Some(lo) })
}

/// A Linux system found on the disk, its root mounted.
#[derive(Debug)]
pub struct FoundLinux {
    pub root: LinuxRoot,
    pub mount: Mounted,
}

/// What [`find_linux`] found: the systems (roots mounted) and where their
/// bytes are. Fields drop in order: the mounts before the unlocked volumes
/// they are made from.
#[derive(Debug)]
pub struct Found {
    pub layout: DiskLayout,
    pub systems: Vec<FoundLinux>,
    pub sources: Sources,
}

/// Mount the Linux filesystems of `disk` (or only partition `part`) and find
/// installed systems on them. `write`: mount read-write (to apply a plan).
/// LUKS volumes that one of `luks` opens are searched too. An empty result
/// is not an error: the caller decides (Windows may be there).
pub fn find_linux(disk: &Path, part: Option<u32>, write: bool, luks: &imaging::luks::Passphrases) -> Result<Found, LinuxError> {
    let (layout, busy, sources) = layout(disk, luks, write)?;
    let mut out = Found { layout, systems: Vec::new(), sources };
    let (lay, found, sources) = (&out.layout, &mut out.systems, &out.sources);
    for p in lay.parts.iter().filter(|p| part.is_none_or(|n| n == p.number) && is_root_candidate(&p.fstype)) {
        let numbers: Vec<u32> = match &p.md {
            Some(a) => a.members.iter().map(|m| m.partition).collect(),
            None => vec![p.number],
        };
        if let Some((n, why)) = busy.iter().find(|(n, why)| numbers.contains(n) && !why.is_empty()) {
            return Err(LinuxError::Busy { disk: disk.display().to_string(), part: *n, why: why.join(", ") });
        }
        let dir = std::env::temp_dir().join(node_name(p.number, p.lv.as_deref()));
        let pm = PlannedMount::of(p, "/", p.fstype.clone());
        let m = mount_part(sources, &pm, &dir, write, true)?;
        if let Some(mut root) = inspect_root(&m.dir, p.number)? {
            root.lv = p.lv.clone();
            root.crypt = p.crypt.clone();
            tracing::info!(at = %place(p.number, p.lv.as_deref()), os = %root.os.pretty_name, "found Linux");
            found.push(FoundLinux { root, mount: m });
        }
    }
    Ok(out)
}

/// Partitions searched by [`find_linux`] (for a "none found" message).
pub fn searched(lay: &DiskLayout, part: Option<u32>) -> String {
    let v: Vec<String> = lay
        .parts
        .iter()
        .filter(|p| part.is_none_or(|n| n == p.number) && is_root_candidate(&p.fstype))
        .map(|p| match &p.lv {
            Some(l) => format!("LVM volume {l}"),
            None => p.number.to_string(),
        })
        .collect();
    let mut s = if v.is_empty() { "none with a Linux filesystem".to_owned() } else { v.join(", ") };
    for k in &lay.skipped {
        s.push_str(&format!("; not searched: {k}"));
    }
    s
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    pub partition: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lv: Option<String>,
    pub name: String,
    pub files_written: Vec<String>,
    pub commands_run: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_entry: Option<crate::efi_boot::BootEntry>,
    /// What did not work but leaves the system bootable.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// md RAID1 arrays brought into one state afterwards ([`sync_arrays`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arrays: Vec<String>,
}

/// The chroot's mounts, unmounted in reverse order on drop.
struct Chroot {
    mounts: Vec<Mounted>,
}

impl Drop for Chroot {
    fn drop(&mut self) {
        while let Some(m) = self.mounts.pop() {
            drop(m);
        }
        os::sync();
    }
}

fn bind(src: &str, dir: &Path) -> Result<Mounted, LinuxError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    os::bind(Path::new(src), dir).map_err(io(dir))?;
    Ok(Mounted { dir: dir.to_path_buf(), remove_dir: false, node: None, _loop: None })
}

fn write_file(root: &Path, rel: &str, content: &str) -> Result<(), LinuxError> {
    let path = in_root(root, rel);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(io(parent))?;
    }
    let tmp = path.with_extension("rescue-tmp");
    std::fs::write(&tmp, content).map_err(io(&tmp))?;
    if let Ok(meta) = std::fs::metadata(&path) {
        std::fs::set_permissions(&tmp, meta.permissions()).map_err(io(&tmp))?;
    }
    std::fs::rename(&tmp, &path).map_err(io(&path))
}

/// Add this machine's firmware boot entry for GRUB on the ESP mounted at
/// `esp` in `root` (partition `number`).
fn add_boot_entry(root: &Path, esp: &str, number: u32, start: u64, size: u64, partuuid: &str) -> Result<crate::efi_boot::BootEntry, LinuxError> {
    let hd = crate::efi_boot::HardDrive { number, start, size, signature: signature(partuuid)? };
    let (id, loader) = efi_loader(&in_root(root, esp.trim_start_matches('/')))?;
    let vars = crate::efi_boot::Efivars::here().ok_or(LinuxError::BootEntry {
        detail: format!("{} is not there", crate::efi_boot::EFIVARS),
        hint: "boot the rescue system by EFI on the machine itself to add the entry",
    })?;
    vars.add_boot_entry(&id, &hd, &loader).map_err(|e| LinuxError::BootEntry { detail: e.to_string(), hint: e.hint() })
}

/// The partition signature a boot entry names: a GPT GUID, or the MBR
/// disk signature of `disksig-NN`.
fn signature(partuuid: &str) -> Result<crate::efi_boot::Signature, LinuxError> {
    use crate::efi_boot::Signature;
    let bad = || LinuxError::BootEntry { detail: format!("partition identifier {partuuid} is neither a GUID nor an MBR signature"), hint: "check the partition table with `rescue disks`" };
    if let Some(g) = crate::bcd::guid(partuuid) {
        return Ok(Signature::Gpt(g));
    }
    let (sig, _) = partuuid.split_once('-').ok_or_else(bad)?;
    u32::from_str_radix(sig, 16).map(Signature::Mbr).map_err(|_| bad())
}

/// The EFI loader GRUB installed on the ESP mounted at `esp`: its folder
/// name (`debian`, also the entry's name, as grub-install names it) and
/// path (`\EFI\debian\shimx64.efi` when shim is there for Secure Boot,
/// else `grubx64.efi`). The folder whose GRUB was written last wins.
fn efi_loader(esp: &Path) -> Result<(String, String), LinuxError> {
    let efi = std::fs::read_dir(esp).map_err(io(esp))?.flatten().find(|e| e.file_name().eq_ignore_ascii_case("EFI")).map(|e| e.path());
    let mut best: Option<(std::time::SystemTime, String, String)> = None;
    for d in efi.iter().flat_map(|e| std::fs::read_dir(e).into_iter().flatten().flatten()) {
        let name = d.file_name().to_string_lossy().into_owned();
        if name.eq_ignore_ascii_case("BOOT") {
            continue;
        }
        let files: Vec<String> = std::fs::read_dir(d.path()).into_iter().flatten().flatten().map(|f| f.file_name().to_string_lossy().into_owned()).collect();
        let find = |want: &str| files.iter().find(|f| f.eq_ignore_ascii_case(want)).cloned();
        let Some(grub) = find("grubx64.efi") else { continue };
        let when = std::fs::metadata(d.path().join(&grub)).and_then(|m| m.modified()).unwrap_or(std::time::UNIX_EPOCH);
        let file = find("shimx64.efi").unwrap_or(grub);
        if best.as_ref().is_none_or(|(t, _, _)| when > *t) {
            best = Some((when, name.clone(), format!("\\EFI\\{name}\\{file}")));
        }
    }
    best.map(|(_, id, path)| (id, path)).ok_or(LinuxError::BootEntry {
        detail: format!("no EFI/<name>/grubx64.efi on the ESP at {}", esp.display()),
        hint: "check that grub-install wrote EFI/<name>/grubx64.efi on the ESP",
    })
}

/// Fixing a Linux system needs loop devices, mounts and a chroot: the Linux
/// rescue system. Elsewhere (the Windows build) these fail with this error.
#[cfg(not(unix))]
fn linux_only(at: &Path) -> LinuxError {
    LinuxError::Io { path: at.display().to_string(), source: std::io::Error::new(std::io::ErrorKind::Unsupported, "fixing a Linux system needs the Linux rescue system (loop devices, mounts, chroot)") }
}

#[cfg(unix)]
fn symlink(target: impl AsRef<Path>, at: &Path) -> Result<(), LinuxError> {
    std::os::unix::fs::symlink(target, at).map_err(io(at))
}

#[cfg(not(unix))]
fn symlink(_target: impl AsRef<Path>, at: &Path) -> Result<(), LinuxError> {
    Err(linux_only(at))
}

/// Whether `p` is a block device (not an image file).
#[cfg(unix)]
pub fn is_block_device(p: &Path) -> bool {
    std::fs::metadata(p).is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_block_device(&m.file_type()))
}

/// Whether `p` is a block device (not an image file).
#[cfg(not(unix))]
pub fn is_block_device(_p: &Path) -> bool {
    false
}

#[cfg(not(unix))]
fn mknod_like(_like: &Path, at: &Path) -> Result<(), LinuxError> {
    Err(linux_only(at))
}

/// A node at `at` like the device `like` (block or character).
#[cfg(unix)]
fn mknod_like(like: &Path, at: &Path) -> Result<(), LinuxError> {
    imaging::mount::sys::mknod_like(like, at).map_err(io(at))
}

/// The system calls mounting and the chroot need, made directly
/// ([`imaging::mount::sys`]: the live system has no `mount`, `umount`,
/// `chroot` or `sync` programs); on Windows each says it needs Linux.
mod os {
    #[cfg(unix)]
    pub use imaging::mount::sys::{bind, mount, mount_tmpfs, sync, unmount};

    #[cfg(not(unix))]
    fn unsupported() -> std::io::Error {
        std::io::Error::new(std::io::ErrorKind::Unsupported, "fixing a Linux system needs the Linux rescue system (mounts, chroot)")
    }
    #[cfg(not(unix))]
    pub fn mount(_: &std::path::Path, _: &std::path::Path, _: &str, _: &str) -> std::io::Result<()> {
        Err(unsupported())
    }
    #[cfg(not(unix))]
    pub fn mount_tmpfs(_: &str, _: &std::path::Path, _: &str) -> std::io::Result<()> {
        Err(unsupported())
    }
    #[cfg(not(unix))]
    pub fn bind(_: &std::path::Path, _: &std::path::Path) -> std::io::Result<()> {
        Err(unsupported())
    }
    #[cfg(not(unix))]
    pub fn unmount(_: &std::path::Path, _: bool) -> std::io::Result<()> {
        Err(unsupported())
    }
    #[cfg(not(unix))]
    pub fn sync() {}

    /// `chroot ROOT ARGV...` as a command (not started).
    #[cfg(unix)]
    pub fn chroot_command(root: &std::path::Path, argv: &[String]) -> std::io::Result<std::process::Command> {
        let mut c = std::process::Command::new(&argv[0]);
        c.args(&argv[1..]);
        imaging::mount::sys::chroot_on_exec(&mut c, root)?;
        Ok(c)
    }
    #[cfg(not(unix))]
    pub fn chroot_command(_: &std::path::Path, _: &[String]) -> std::io::Result<std::process::Command> {
        Err(unsupported())
    }
}

/// A private `/dev` for the chroot (tmpfs): the usual character devices,
/// the target's partitions under the names they are mounted from
/// (`rescue-ul-PID-pN`) with `/dev/disk/by-uuid` links, and the disk as
/// `rescue-ul-PID-disk`. Not the host's `/dev` and not `/dev/loopN`:
/// Debian's `grub-mkconfig` makes no menu entry for a root on a loop device
/// ("can't cope with devices loop-mounted from files"), and without a
/// by-uuid link `root=` would name a device of this machine.
fn private_dev(dir: &Path, parts: &[DevNode], disk: Option<&Path>) -> Result<Mounted, LinuxError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    os::mount_tmpfs("rescue-dev", dir, "mode=0755,size=16m").map_err(io(dir))?;
    let m = Mounted { dir: dir.to_path_buf(), remove_dir: false, node: None, _loop: None };
    for n in ["null", "zero", "full", "random", "urandom", "tty", "console"] {
        let host = Path::new("/dev").join(n);
        if host.exists() {
            mknod_like(&host, &dir.join(n))?;
        }
    }
    for (name, target) in [("fd", "/proc/self/fd"), ("stdin", "/proc/self/fd/0"), ("stdout", "/proc/self/fd/1"), ("stderr", "/proc/self/fd/2")] {
        symlink(target, &dir.join(name))?;
    }
    for d in ["pts", "shm", "disk/by-uuid"] {
        std::fs::create_dir_all(dir.join(d)).map_err(io(dir))?;
    }
    for DevNode { dev, uuid, lv, mapper } in parts {
        let name = dev.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        mknod_like(dev, &dir.join(&name))?;
        if let Some(u) = uuid {
            symlink(format!("../../{name}"), &dir.join("disk/by-uuid").join(u))?;
        }
        // The plaintext of an encrypted volume under its crypttab name.
        if let Some(m) = mapper {
            std::fs::create_dir_all(dir.join("mapper")).map_err(io(dir))?;
            symlink(format!("../{name}"), &dir.join("mapper").join(m))?;
        }
        // The names fstab uses for an LVM volume (the initramfs hooks look
        // the root up by them, e.g. for its filesystem type).
        if let Some(l) = lv {
            std::fs::create_dir_all(dir.join("mapper")).map_err(io(dir))?;
            symlink(format!("../{name}"), &dir.join("mapper").join(lv_dm_name(l)))?;
            if let Some((vg, lvname)) = l.split_once('/') {
                std::fs::create_dir_all(dir.join(vg)).map_err(io(dir))?;
                symlink(format!("../{name}"), &dir.join(vg).join(lvname))?;
            }
        }
    }
    if let Some(d) = disk {
        mknod_like(d, &dir.join(disk_node_name()))?;
    }
    Ok(m)
}

/// A filesystem's device node for the chroot's `/dev`, and its names.
struct DevNode {
    dev: PathBuf,
    uuid: Option<String>,
    /// `VG/LV` of an LVM volume.
    lv: Option<String>,
    /// `/dev/mapper` name of an encrypted volume's plaintext.
    mapper: Option<String>,
}

/// The device node a partition or LVM volume is mounted from.
fn node_name(partition: u32, lv: Option<&str>) -> String {
    match lv {
        Some(l) => format!("rescue-ul-{}-p{partition}-{}", std::process::id(), lv_dm_name(l)),
        None => format!("rescue-ul-{}-p{partition}", std::process::id()),
    }
}

fn disk_node_name() -> String {
    format!("rescue-ul-{}-disk", std::process::id())
}

/// Run `plan` on a system found by [`find_linux`] with `write` (its root
/// mounted read-write): mount its other partitions, give it `/dev`, `/proc`,
/// `/sys` and `/run`, write the files and run the commands in a chroot.
/// `sources` are those [`find_linux`] returned.
pub fn apply(sources: &Sources, disk_size: u64, found: &FoundLinux, plan: &SystemPlan) -> Result<Report, LinuxError> {
    let disk = sources.disk.as_path();
    let part = plan.partition;
    let root = found.mount.dir.as_path();
    // The whole disk as a device GRUB can install to: a block device as it
    // is, an image file through a loop device (the partitions are loop
    // devices of their own: this kernel need not scan loop partitions).
    let disk_loop = if plan.needs_disk() && !is_block_device(disk) {
        Some(LoopDevice::attach(disk, 0, disk_size).map_err(|e| LinuxError::Mount {
            disk: disk.display().to_string(),
            part: 0,
            at: "(whole disk)".into(),
            detail: e.to_string(),
        })?)
    } else {
        None
    };
    let disk_dev: Option<&Path> = if !plan.needs_disk() { None } else { Some(disk_loop.as_ref().map_or(disk, |l| l.path.as_path())) };
    let mut ch = Chroot { mounts: Vec::new() };
    let mut devs: Vec<DevNode> = Vec::new();
    let root_mount = plan.mounts.iter().find(|m| m.at == "/");
    if let Some(d) = found.mount.device() {
        devs.push(DevNode { dev: d.to_path_buf(), uuid: root_mount.and_then(|m| m.uuid.clone()), lv: plan.lv.clone(), mapper: root_mount.and_then(|m| m.mapper.clone()) });
    }
    for m in plan.mounts.iter().filter(|m| m.at != "/") {
        let dir = in_root(root, m.at.trim_start_matches('/'));
        let mounted = mount_part(sources, m, &dir, true, false)?;
        if let Some(d) = mounted.device() {
            devs.push(DevNode { dev: d.to_path_buf(), uuid: m.uuid.clone(), lv: m.lv.clone(), mapper: m.mapper.clone() });
        }
        ch.mounts.push(mounted);
    }
    ch.mounts.push(private_dev(&root.join("dev"), &devs, disk_dev)?);
    for api in ["proc", "sys", "run"] {
        ch.mounts.push(bind(&format!("/{api}"), &root.join(api))?);
    }
    let disk_arg = if disk_dev.is_some() { format!("/dev/{}", disk_node_name()) } else { String::new() };
    let mut report = Report { partition: part, lv: plan.lv.clone(), name: plan.name.clone(), files_written: Vec::new(), commands_run: Vec::new(), boot_entry: None, warnings: Vec::new(), arrays: Vec::new() };
    for s in &plan.steps {
        match s {
            Step::Write { path, content, .. } => {
                write_file(root, path, content)?;
                report.files_written.push(format!("/{path}"));
            }
            Step::Run { argv } => {
                let args: Vec<String> = argv.iter().map(|a| if a == DISK { disk_arg.clone() } else { a.clone() }).collect();
                let shown = shell_words(&args);
                tracing::info!(partition = part, cmd = %shown, "running in chroot");
                let out = os::chroot_command(root, &args)
                    .map_err(io(root))?
                    .env_clear()
                    .env("PATH", "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin")
                    .env("LC_ALL", "C")
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .env("HOME", "/root")
                    .stdin(std::process::Stdio::null())
                    .output()
                    .map_err(io(Path::new("chroot")))?;
                let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
                tracing::debug!(partition = part, output = %text, "chroot command output");
                if !out.status.success() {
                    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
                    let tail = lines[lines.len().saturating_sub(6)..].join(" | ");
                    return Err(LinuxError::Command { part, cmd: shown, status: out.status.to_string(), tail });
                }
                report.commands_run.push(shown);
            }
            Step::BootEntry { esp, start_lba, size_lba, partuuid, partition } => {
                // The system boots without it (GRUB is also at the fallback
                // path): a firmware that refuses the entry is a warning, not
                // a failed restore.
                match add_boot_entry(root, esp, *partition, *start_lba, *size_lba, partuuid) {
                    Ok(e) => {
                        tracing::info!(partition = part, entry = %e.name, loader = %e.loader, "firmware boot entry");
                        report.boot_entry = Some(e);
                    }
                    Err(e) => report.warnings.push(format!("{e} ({}); the firmware boots \\EFI\\BOOT\\BOOTX64.EFI", e.hint())),
                }
            }
        }
    }
    // Unmount (and sync) before the disk's own loop device goes.
    drop(ch);
    drop(disk_loop);
    Ok(report)
}

/// After [`apply`] of `plans` and with every mount released (the roots
/// [`find_linux`] mounted too): bring each md RAID1 array a plan wrote into
/// one state ([`crate::linux_md::sync`]); what was done goes in the report
/// of the plan that wrote it.
pub fn sync_arrays(disk: &Path, plans: &[SystemPlan], reports: &mut [Report]) -> Result<(), LinuxError> {
    let mut done: Vec<&str> = Vec::new();
    for (pl, r) in plans.iter().zip(reports.iter_mut()) {
        for a in pl.mounts.iter().filter_map(|m| m.md.as_ref()) {
            if done.contains(&a.uuid.as_str()) {
                continue;
            }
            done.push(&a.uuid);
            tracing::info!(array = %a.describe(), "bringing the md RAID1 members into one state");
            r.arrays.push(crate::linux_md::sync_path(disk, a)?);
        }
    }
    Ok(())
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn ctl(name: &str) -> Vec<Controller> {
        crate::windows::profile(name).expect("profile")
    }

    fn mods(name: &str) -> Vec<&'static str> {
        let mut v = Vec::new();
        for c in ctl(name) {
            for m in modules_for_controller(&c) {
                if !v.contains(&m) {
                    v.push(m);
                }
            }
        }
        v
    }

    #[test]
    fn profiles_map_to_modules() {
        assert_eq!(mods("nvme"), ["nvme", "nvme_core"]);
        assert_eq!(mods("ahci"), ["ahci", "libahci", "sd_mod"]);
        assert_eq!(mods("virtio"), ["virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod"]);
        assert!(mods("intel-rst").contains(&"vmd"));
        assert!(mods("hyperv").contains(&"hv_storvsc"));
        assert!(mods("vmware").contains(&"vmw_pvscsi"));
        assert!(mods("PCI\\VEN_DEAD&DEV_BEEF").is_empty());
    }

    #[test]
    fn os_release_and_fstab() {
        let o = parse_os_release("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n");
        assert_eq!((o.id.as_str(), o.pretty_name.as_str()), ("debian", "Debian GNU/Linux 12 (bookworm)"));
        let o = parse_os_release("ID=rocky\nID_LIKE=\"rhel centos fedora\"\n");
        assert_eq!(o.id_like, ["rhel", "centos", "fedora"]);
        assert_eq!(o.pretty_name, "rocky");
        let f = parse_fstab("# c\nUUID=ab / ext4 errors=remount-ro 0 1\n\nLABEL=x /my\\040data xfs\nbroken\n");
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].mountpoint, "/my data");
        assert_eq!(f[1].options, "defaults");
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_stay_in_the_root() {
        let t = tempfile::tempdir().expect("tmp");
        let r = t.path();
        std::fs::create_dir_all(r.join("usr/lib")).expect("mkdir");
        std::fs::create_dir_all(r.join("etc")).expect("mkdir");
        std::fs::write(r.join("usr/lib/os-release"), "ID=x\n").expect("w");
        std::os::unix::fs::symlink("/usr/lib/os-release", r.join("etc/os-release")).expect("ln");
        std::os::unix::fs::symlink("usr/lib", r.join("lib")).expect("ln");
        assert_eq!(in_root(r, "etc/os-release"), r.join("usr/lib/os-release"));
        assert_eq!(in_root(r, "lib/os-release"), r.join("usr/lib/os-release"));
        assert_eq!(in_root(r, "../../etc/../usr/lib/os-release"), r.join("usr/lib/os-release"));
        assert_eq!(read_opt(r, "etc/os-release").expect("read").as_deref(), Some("ID=x\n"));
    }

    fn part(number: u32, fstype: &str, uuid: &str) -> Part {
        Part {
            number,
            start: u64::from(number) << 20,
            len: 1 << 20,
            fstype: fstype.into(),
            uuid: Some(uuid.into()),
            label: None,
            partuuid: Some(format!("1234abcd-{number:02x}")),
            gpt_type: None,
            lv: None,
            md: None,
            crypt: None,
        }
    }

    const ROOT_UUID: &str = "0a1b2c3d-1111-2222-3333-444455556666";

    /// A fake root: Debian-like, one kernel with nvme but no vmd.
    fn fake_root(tool: &str) -> tempfile::TempDir {
        let t = tempfile::tempdir().expect("tmp");
        let r = t.path();
        for d in ["etc/initramfs-tools", "usr/sbin", "usr/lib/grub/i386-pc", "usr/lib/grub/x86_64-efi", "usr/lib/modules/6.1.0-9-amd64"] {
            std::fs::create_dir_all(r.join(d)).expect("mkdir");
        }
        std::os::unix::fs::symlink("usr/lib", r.join("lib")).expect("ln");
        for f in [tool, "grub-install", "update-grub"] {
            std::fs::write(r.join("usr/sbin").join(f), "").expect("w");
        }
        std::fs::write(r.join("etc/os-release"), "PRETTY_NAME=\"Debian 12\"\nID=debian\n").expect("w");
        std::fs::write(r.join("etc/fstab"), format!("UUID={ROOT_UUID} / ext4 defaults 0 1\nUUID=ABCD-1234 /boot/efi vfat umask=0077 0 1\nUUID=feedface-0000-0000-0000-000000000000 /data ext4 defaults 0 2\n")).expect("w");
        std::fs::write(r.join("etc/initramfs-tools/modules"), "# list\nahci\n").expect("w");
        std::fs::write(
            r.join("usr/lib/modules/6.1.0-9-amd64/modules.dep"),
            "kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\nkernel/drivers/nvme/host/nvme-core.ko:\nkernel/drivers/ata/ahci.ko.xz: kernel/drivers/ata/libahci.ko.xz\nkernel/drivers/ata/libahci.ko.xz:\n",
        )
        .expect("w");
        std::fs::write(r.join("usr/lib/modules/6.1.0-9-amd64/modules.builtin"), "kernel/drivers/scsi/sd_mod.ko\n").expect("w");
        t
    }

    fn disk(table: &str) -> DiskLayout {
        let mut esp = part(2, "vfat", "ABCD-1234");
        esp.gpt_type = Some(ESP.into());
        DiskLayout { path: "/tmp/x.img".into(), size: 8 << 20, table: table.into(), parts: vec![part(1, "ext4", ROOT_UUID), esp], skipped: vec![], sector_size: 512, locked: vec![] }
    }

    #[test]
    fn plan_initramfs_tools_bios_and_efi() {
        let t = fake_root("update-initramfs");
        let root = inspect_root(t.path(), 1).expect("inspect").expect("is a root");
        assert_eq!(root.initramfs, Some(InitramfsTool::InitramfsTools));
        let mut controllers = ctl("nvme");
        controllers.extend(ctl("ahci"));
        controllers.extend(ctl("intel-rst"));
        let p = plan(t.path(), &root, &disk("mbr"), &Options { controllers, uuid_map: vec![], boot_entry: false }).expect("plan");
        assert_eq!(p.modules, ["nvme", "nvme_core", "ahci", "libahci", "sd_mod"], "vmd is in no kernel: dropped");
        assert!(p.notes.iter().any(|n| n.contains("vmd")), "{:?}", p.notes);
        assert!(p.notes.iter().any(|n| n.contains("feedface")), "unknown fstab source noted: {:?}", p.notes);
        assert_eq!(p.boot, "bios+efi");
        assert_eq!(p.mounts.iter().map(|m| (m.partition, m.at.as_str())).collect::<Vec<_>>(), [(1, "/"), (2, "/boot/efi")]);
        let Step::Write { path, content, summary } = &p.steps[0] else { panic!("{p}") };
        assert_eq!(path, "etc/initramfs-tools/modules");
        assert_eq!(summary, "add nvme nvme_core libahci sd_mod", "ahci was listed already");
        assert!(content.starts_with("# list\nahci\n# Added by rescue"));
        let runs: Vec<String> = p.steps.iter().filter_map(|s| if let Step::Run { argv } = s { Some(shell_words(argv)) } else { None }).collect();
        assert_eq!(
            runs,
            [
                "update-initramfs -u -k all",
                "grub-install --target=i386-pc '--modules=part_gpt part_msdos' <disk>",
                "grub-install --target=x86_64-efi --efi-directory=/boot/efi '--modules=part_gpt part_msdos' --no-nvram",
                "grub-install --target=x86_64-efi --efi-directory=/boot/efi '--modules=part_gpt part_msdos' --removable --no-nvram",
                "update-grub",
            ]
        );
        assert!(p.needs_disk());
        let shown = p.to_string();
        assert!(shown.contains("chroot: update-initramfs -u -k all"), "{shown}");
        // Idempotent: with the file written, nothing more to add.
        std::fs::write(t.path().join("etc/initramfs-tools/modules"), content).expect("w");
        let p2 = plan(t.path(), &root, &disk("mbr"), &Options { controllers: ctl("nvme"), uuid_map: vec![], boot_entry: false }).expect("plan");
        assert!(matches!(&p2.steps[0], Step::Run { argv } if argv[0] == "update-initramfs"), "{p2}");
        // GPT without a BIOS boot partition: EFI only.
        let p3 = plan(t.path(), &root, &disk("gpt"), &Options { controllers: ctl("nvme"), uuid_map: vec![], boot_entry: false }).expect("plan");
        assert_eq!(p3.boot, "efi");
        assert!(p3.notes.iter().any(|n| n.starts_with("no firmware boot entry is made")), "{p3}");
        // On the machine itself: an entry for the ESP, after GRUB is there.
        let mut d = disk("gpt");
        d.parts[1].partuuid = Some("6b7d9c1e-2f3a-4b5c-8d9e-0a1b2c3d4e5f".into());
        let p4 = plan(t.path(), &root, &d, &Options { controllers: ctl("nvme"), uuid_map: vec![], boot_entry: true }).expect("plan");
        let i = p4.steps.iter().position(|s| matches!(s, Step::BootEntry { .. })).expect("a boot entry step");
        assert_eq!(
            p4.steps[i],
            Step::BootEntry { partition: 2, esp: "/boot/efi".into(), start_lba: 4096, size_lba: 2048, partuuid: "6b7d9c1e-2f3a-4b5c-8d9e-0a1b2c3d4e5f".into() }
        );
        assert!(matches!(&p4.steps[i - 1], Step::Run { argv } if argv.iter().any(|a| a == "--removable")), "{p4}");
        assert!(p4.to_string().contains("firmware boot entry for GRUB on the ESP (partition 2)"), "{p4}");
        assert!(!p4.notes.iter().any(|n| n.contains("boot entry")), "{p4}");
        assert_eq!(signature("6b7d9c1e-2f3a-4b5c-8d9e-0a1b2c3d4e5f").ok(), crate::bcd::guid("6b7d9c1e-2f3a-4b5c-8d9e-0a1b2c3d4e5f").map(crate::efi_boot::Signature::Gpt));
        assert_eq!(signature("1234abcd-02").ok(), Some(crate::efi_boot::Signature::Mbr(0x1234_abcd)));
        assert!(signature("nonsense").is_err());
    }

    #[test]
    fn the_efi_loader_is_the_newest_grub_and_shim_when_there() {
        let t = tempfile::tempdir().expect("tempdir");
        let esp = t.path();
        for (dir, files) in [("EFI/BOOT", &["BOOTX64.EFI", "grubx64.efi"][..]), ("EFI/old", &["grubx64.efi"]), ("EFI/debian", &["shimx64.efi", "grubx64.efi", "mmx64.efi"])] {
            std::fs::create_dir_all(esp.join(dir)).expect("mkdir");
            for f in files {
                std::fs::write(esp.join(dir).join(f), "x").expect("w");
            }
        }
        let old = std::fs::File::options().write(true).open(esp.join("EFI/old/grubx64.efi")).expect("open");
        old.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000)).expect("mtime");
        assert_eq!(efi_loader(esp).expect("found"), ("debian".to_string(), "\\EFI\\debian\\shimx64.efi".to_string()));
        std::fs::remove_dir_all(esp.join("EFI/debian")).expect("rm");
        assert_eq!(efi_loader(esp).expect("found").1, "\\EFI\\old\\grubx64.efi");
        std::fs::remove_dir_all(esp.join("EFI/old")).expect("rm");
        assert!(matches!(efi_loader(esp), Err(LinuxError::BootEntry { .. })), "EFI/BOOT alone is not GRUB's own folder");
        // Which the apply step reports as a warning: the fallback boots.
        let e = add_boot_entry(esp, "/", 2, 4096, 2048, "6b7d9c1e-2f3a-4b5c-8d9e-0a1b2c3d4e5f").expect_err("no loader");
        assert!(e.to_string().contains("no EFI/<name>/grubx64.efi"), "{e}");
    }

    #[test]
    fn plan_dracut_and_mkinitcpio() {
        let t = fake_root("dracut");
        std::fs::write(t.path().join("etc/os-release"), "ID=fedora\n").expect("w");
        let root = inspect_root(t.path(), 1).expect("inspect").expect("root");
        assert_eq!(root.initramfs, Some(InitramfsTool::Dracut));
        let p = plan(t.path(), &root, &disk("mbr"), &Options { controllers: ctl("nvme"), uuid_map: vec![], boot_entry: false }).expect("plan");
        assert!(matches!(&p.steps[0], Step::Write { path, content, .. } if path == "etc/dracut.conf.d/90-rescue-universal-restore.conf" && content.contains("add_drivers+=\" nvme nvme_core \"")));
        assert!(matches!(&p.steps[1], Step::Run { argv } if shell_words(argv) == "dracut -f --regenerate-all --no-hostonly --add-drivers 'nvme nvme_core'"));

        let t = fake_root("mkinitcpio");
        std::fs::write(t.path().join("etc/os-release"), "ID=arch\n").expect("w");
        std::fs::write(t.path().join("etc/mkinitcpio.conf"), "# x\nMODULES=(ext4)\nHOOKS=(base udev)\n").expect("w");
        let root = inspect_root(t.path(), 1).expect("inspect").expect("root");
        let p = plan(t.path(), &root, &disk("mbr"), &Options { controllers: ctl("nvme"), uuid_map: vec![], boot_entry: false }).expect("plan");
        assert!(matches!(&p.steps[0], Step::Write { path, content, .. } if path == "etc/mkinitcpio.conf" && content == "# x\nMODULES=(ext4 nvme nvme_core)\nHOOKS=(base udev)\n"), "{p}");
        assert!(matches!(&p.steps[1], Step::Run { argv } if shell_words(argv) == "mkinitcpio -P"));
        std::fs::create_dir_all(t.path().join("etc/mkinitcpio.conf.d")).expect("mkdir");
        let p = plan(t.path(), &root, &disk("mbr"), &Options { controllers: ctl("nvme"), uuid_map: vec![], boot_entry: false }).expect("plan");
        assert!(matches!(&p.steps[0], Step::Write { content, .. } if content.contains("MODULES+=(nvme nvme_core)")), "{p}");
        assert_eq!(add_to_mkinitcpio_modules("MODULES=()\n", &["a".into()]).0, "MODULES=(a)\n");
        assert_eq!(add_to_mkinitcpio_modules("", &["a".into()]).0, "MODULES=(a)\n");
    }

    #[test]
    fn uuid_map_and_unresolved_boot() {
        let t = fake_root("update-initramfs");
        let new = "99999999-aaaa-bbbb-cccc-dddddddddddd";
        std::fs::write(t.path().join("etc/fstab"), format!("UUID={ROOT_UUID} / ext4 defaults 0 1\nUUID=1111 /boot ext4 defaults 0 2\n")).expect("w");
        let root = inspect_root(t.path(), 1).expect("inspect").expect("root");
        let e = plan(t.path(), &root, &disk("mbr"), &Options { controllers: ctl("nvme"), uuid_map: vec![], boot_entry: false }).expect_err("unresolved /boot");
        assert!(matches!(e, LinuxError::Unresolved { ref mountpoint, .. } if mountpoint == "/boot"), "{e}");
        // The root was recreated with a new UUID and /boot mapped onto partition 2.
        let mut d = disk("mbr");
        d.parts[0].uuid = Some(new.into());
        d.parts[1] = part(2, "ext4", "2222");
        let map = vec![(ROOT_UUID.to_owned(), new.to_owned()), ("1111".to_owned(), "2222".to_owned())];
        let p = plan(t.path(), &root, &d, &Options { controllers: ctl("nvme"), uuid_map: map, boot_entry: false }).expect("plan");
        assert!(matches!(&p.steps[0], Step::Write { path, content, .. } if path == "etc/fstab" && content.contains(new)), "{p}");
        assert_eq!(p.mounts[1].at, "/boot");
        assert_eq!(p.mounts[1].partition, 2);
    }

    /// An LVM volume `vg/lv` on partition 2, as [`layout`] lists it.
    fn lv_part(lv: &str, fstype: &str, uuid: &str) -> Part {
        Part { lv: Some(lv.into()), partuuid: None, start: 40 << 20, ..part(2, fstype, uuid) }
    }

    #[test]
    fn root_in_an_lvm_volume() {
        let t = fake_root("update-initramfs");
        let boot = "b007b007-0000-0000-0000-000000000001";
        std::fs::write(t.path().join("etc/fstab"), "/dev/mapper/my--vg-root / ext4 defaults 0 1
/dev/my-vg/boot /boot ext4 defaults 0 2
").expect("w");
        let mut root = inspect_root(t.path(), 2).expect("inspect").expect("root");
        root.lv = Some("my-vg/root".into());
        let d = DiskLayout {
            path: "/tmp/x.img".into(),
            size: 1 << 30,
            table: "mbr".into(),
            parts: vec![part(2, "", "pv"), lv_part("my-vg/root", "ext4", ROOT_UUID), lv_part("my-vg/boot", "ext4", boot)],
            skipped: vec!["LVM volume my-vg/data: it is a thin volume; ...".into()],
            sector_size: 512,
            locked: vec![],
        };
        let p = plan(t.path(), &root, &d, &Options { controllers: ctl("nvme"), uuid_map: vec![], boot_entry: false }).expect("plan");
        assert_eq!(p.place(), "LVM volume my-vg/root (partition 2)");
        assert_eq!(p.mounts.iter().map(|m| (m.lv.as_deref(), m.at.as_str())).collect::<Vec<_>>(), [(Some("my-vg/root"), "/"), (Some("my-vg/boot"), "/boot")]);
        // /boot/grub inside LVM: core.img gets GRUB's lvm module.
        let runs: Vec<String> = p.steps.iter().filter_map(|s| if let Step::Run { argv } = s { Some(shell_words(argv)) } else { None }).collect();
        assert!(runs.contains(&"grub-install --target=i386-pc '--modules=lvm part_gpt part_msdos' <disk>".to_owned()), "{runs:?}");
        assert!(p.notes.iter().any(|n| n.starts_with("not searched: LVM volume my-vg/data")), "{:?}", p.notes);
        // No devices file: nothing moved.
        assert!(!runs.iter().any(|r| r.starts_with("mv ")), "{runs:?}");
        // /boot on a partition: the plain modules.
        std::fs::write(t.path().join("etc/fstab"), "/dev/mapper/my--vg-root / ext4 defaults 0 1
").expect("w");
        let root2 = LinuxRoot { fstab: parse_fstab("/dev/mapper/my--vg-root / ext4 defaults 0 1\nUUID=ABCD-1234 /boot ext4 defaults 0 2\n"), ..root.clone() };
        let mut d2 = d.clone();
        d2.parts.push(part(1, "ext4", "ABCD-1234"));
        let p2 = plan(t.path(), &root2, &d2, &Options { controllers: ctl("nvme"), uuid_map: vec![], boot_entry: false }).expect("plan");
        assert!(p2.steps.iter().any(|s| matches!(s, Step::Run { argv } if argv.iter().any(|a| a == MODULES))), "{p2}");
    }

    #[test]
    fn spec_resolution() {
        let parts = vec![part(1, "ext4", ROOT_UUID)];
        assert!(resolve_spec(&format!("UUID={}", ROOT_UUID.to_uppercase()), &parts).is_some());
        assert!(resolve_spec(&format!("/dev/disk/by-uuid/{ROOT_UUID}"), &parts).is_some());
        assert!(resolve_spec("PARTUUID=1234abcd-01", &parts).is_some());
        assert!(resolve_spec("/dev/sda1", &parts).is_none());
        assert!(resolve_spec("UUID=", &parts).is_none());
        let parts = vec![part(1, "ext4", ROOT_UUID), lv_part("my-vg/root-fs", "ext4", "1234")];
        assert_eq!(resolve_spec("/dev/mapper/my--vg-root--fs", &parts).and_then(|p| p.lv.as_deref()), Some("my-vg/root-fs"));
        assert_eq!(resolve_spec("/dev/my-vg/root-fs", &parts).and_then(|p| p.lv.as_deref()), Some("my-vg/root-fs"));
        assert!(resolve_spec("/dev/mapper/my-vg-root-fs", &parts).is_none(), "dashes are doubled in dm names");
        assert!(resolve_spec("/dev/my-vg/root", &parts).is_none());
        assert!(resolve_spec("/dev/disk/by-id/x", &parts).is_none());
        assert_eq!(place(2, Some("v/l")), "LVM volume v/l (partition 2)");
        // md arrays by mdadm's names.
        let parts = vec![part(1, "ext4", ROOT_UUID), md_part(3, "debian:0", "ext4", "1234")];
        for spec in ["/dev/md/debian:0", "/dev/md/0", "/dev/md0"] {
            assert_eq!(resolve_spec(spec, &parts).map(|p| p.number), Some(3), "{spec}");
        }
        for spec in ["/dev/md1", "/dev/md/1", "/dev/md/other:0", "/dev/md", "/dev/mdx"] {
            assert!(resolve_spec(spec, &parts).is_none(), "{spec}");
        }
    }

    /// The data of an md RAID1 array `name` with members on partitions
    /// `first` and `first + 1`, as [`layout`] lists it.
    fn md_part(first: u32, name: &str, fstype: &str, uuid: &str) -> Part {
        let member = |n: u32| crate::linux_md::MdMember { partition: n, start: u64::from(n) << 20, slot: (n - first) as u16, sb_at: 4096, sb_len: 260, data_offset: 1 << 20, events: 5, bitmap_at: None };
        let a = MdArray { name: name.into(), uuid: format!("{name}-uuid"), version: "1.2".into(), raid_disks: 2, data_size: 1 << 20, members: vec![member(first), member(first + 1)] };
        Part { start: (u64::from(first) << 20) + (1 << 20), partuuid: None, md: Some(a), ..part(first, fstype, uuid) }
    }

    #[test]
    fn root_and_boot_in_md_raid1() {
        let t = fake_root("update-initramfs");
        std::fs::write(t.path().join("usr/sbin/mdadm"), "").expect("w");
        let boot = "b007b007-0000-0000-0000-000000000002";
        let root = LinuxRoot { fstab: parse_fstab(&format!("UUID={ROOT_UUID} / ext4 defaults 0 1\n/dev/md/boot /boot ext4 defaults 0 2\n")), ..inspect_root(t.path(), 3).expect("inspect").expect("root") };
        let d = DiskLayout {
            path: "/tmp/x.img".into(),
            size: 1 << 30,
            table: "mbr".into(),
            parts: vec![md_part(1, "host:boot", "ext4", boot), md_part(3, "host:0", "ext4", ROOT_UUID)],
            skipped: vec![],
            sector_size: 512,
            locked: vec![],
        };
        let p = plan(t.path(), &root, &d, &Options { controllers: ctl("nvme"), uuid_map: vec![], boot_entry: false }).expect("plan");
        let shown = p.to_string();
        assert!(shown.contains("mount md RAID1 host:0 (partitions 3, 4) (ext4) at /, md RAID1 host:boot (partitions 1, 2) (ext4) at /boot"), "{shown}");
        // /boot/grub in the array: core.img reads md itself.
        let runs: Vec<String> = p.steps.iter().filter_map(|s| if let Step::Run { argv } = s { Some(shell_words(argv)) } else { None }).collect();
        assert!(runs.contains(&"grub-install --target=i386-pc '--modules=mdraid1x part_gpt part_msdos' <disk>".to_owned()), "{runs:?}");
        // Each array is named once, with what happens to its other member.
        let md: Vec<&String> = p.notes.iter().filter(|n| n.starts_with("md RAID1")).collect();
        assert_eq!(md.len(), 2, "{:?}", p.notes);
        assert!(md[0].starts_with("md RAID1 host:0 (partitions 3, 4): written through partition 3, then what changed is copied to partition 4"), "{md:?}");
        assert!(!p.notes.iter().any(|n| n.contains("mdadm is not installed")), "{:?}", p.notes);
        std::fs::remove_file(t.path().join("usr/sbin/mdadm")).expect("rm");
        let p = plan(t.path(), &root, &d, &Options { controllers: ctl("nvme"), uuid_map: vec![], boot_entry: false }).expect("plan");
        assert!(p.notes.iter().any(|n| n.contains("mdadm is not installed")), "{:?}", p.notes);
    }

    /// A root inside LUKS (partition 2 of an MBR disk, `/boot` on partition
    /// 1): its crypttab line gets `initramfs` before the initramfs is made,
    /// also on top of a UUID rewrite of the same file; the plaintext gets
    /// its `/dev/mapper` name; no crypttab line, or no hook, is refused;
    /// `/boot` inside the volume leaves GRUB alone.
    #[test]
    fn root_in_luks() {
        const LUKS_UUID: &str = "9e8d7c6b-5a49-4837-a625-1403f2e1d0c0";
        const BOOT_UUID: &str = "b0070000-1111-2222-3333-444455556666";
        let t = fake_root("update-initramfs");
        let r = t.path();
        std::fs::write(r.join("etc/fstab"), format!("/dev/mapper/root_crypt / ext4 defaults 0 1\nUUID={BOOT_UUID} /boot ext4 defaults 0 2\n")).expect("w");
        let tab = format!("# <target> <source> <key> <options>\nroot_crypt UUID={LUKS_UUID} /etc/keys/root.key luks,discard\nswap_crypt /dev/sda3 /dev/urandom swap\n");
        std::fs::write(r.join("etc/crypttab"), &tab).expect("w");
        let crypt = crate::linux_luks::Crypt { partition: 2, uuid: LUKS_UUID.into(), version: 2 };
        let mut root = inspect_root(r, 2).expect("inspect").expect("is a root");
        root.crypt = Some(crypt.clone());
        let mut container = part(2, "", LUKS_UUID);
        container.start = 512 << 20;
        let mut inner = part(2, "ext4", ROOT_UUID);
        inner.start = 0;
        inner.partuuid = None;
        inner.crypt = Some(crypt.clone());
        let d = DiskLayout { path: "/tmp/x.img".into(), size: 8 << 30, table: "mbr".into(), parts: vec![part(1, "ext4", BOOT_UUID), container, inner], skipped: vec![], sector_size: 512, locked: vec![] };
        let opts = Options { controllers: ctl("nvme"), uuid_map: vec![], boot_entry: false };

        // No hook: the initramfs could not unlock the root.
        let e = plan(r, &root, &d, &opts).expect_err("no cryptsetup-initramfs");
        assert!(matches!(e, LinuxError::Crypt { .. }) && e.to_string().contains("cryptsetup-initramfs"), "{e}");
        std::fs::create_dir_all(r.join("usr/share/initramfs-tools/hooks")).expect("mkdir");
        std::fs::write(r.join("usr/share/initramfs-tools/hooks/cryptroot"), "").expect("w");

        let p = plan(r, &root, &d, &opts).expect("plan");
        assert_eq!(p.mounts[0].crypt.as_ref(), Some(&crypt));
        assert_eq!(p.mounts[0].mapper.as_deref(), Some("root_crypt"));
        assert_eq!((p.mounts[1].partition, p.mounts[1].at.as_str(), p.mounts[1].crypt.is_none()), (1, "/boot", true));
        let shown = p.to_string();
        assert!(shown.contains("mount encrypted partition 2 (LUKS2) (ext4) at /, partition 1 (ext4) at /boot"), "{shown}");
        assert!(shown.contains("write /etc/crypttab: option `initramfs` for root_crypt"), "{shown}");
        let at = |want: &str| p.steps.iter().position(|s| match s {
            Step::Write { path, .. } => path == want,
            Step::Run { argv } => argv[0] == want,
            _ => false,
        });
        let (w, u) = (at("etc/crypttab").expect("crypttab step"), at("update-initramfs").expect("initramfs step"));
        assert!(w < u, "{shown}");
        let Step::Write { content, .. } = &p.steps[w] else { unreachable!() };
        assert_eq!(*content, tab.replace("luks,discard", "luks,discard,initramfs"));
        assert!(p.steps.iter().any(|s| matches!(s, Step::Run { argv } if argv[0] == "grub-install")), "/boot is not encrypted: {shown}");

        // Renamed UUIDs and the option: one write of crypttab with both.
        let new_uuid = "11111111-2222-4333-8444-555555555555";
        let mut d2 = d.clone();
        d2.parts[1].uuid = Some(new_uuid.into());
        d2.parts[2].crypt.as_mut().expect("crypt").uuid = new_uuid.into();
        let opts2 = Options { uuid_map: vec![(LUKS_UUID.into(), new_uuid.into())], ..opts.clone() };
        let p2 = plan(r, &root, &d2, &opts2).expect("plan");
        let writes: Vec<&Step> = p2.steps.iter().filter(|s| matches!(s, Step::Write { path, .. } if path == "etc/crypttab")).collect();
        assert_eq!(writes.len(), 1, "{p2}");
        let Step::Write { content, summary, .. } = writes[0] else { unreachable!() };
        assert!(content.contains(&format!("root_crypt UUID={new_uuid} /etc/keys/root.key luks,discard,initramfs")), "{content}");
        assert!(summary.contains("identifier reference") && summary.contains("initramfs"), "{summary}");

        // Already there: no write.
        std::fs::write(r.join("etc/crypttab"), tab.replace("luks,discard", "luks,initramfs")).expect("w");
        let p3 = plan(r, &root, &d, &opts).expect("plan");
        assert!(!p3.steps.iter().any(|s| matches!(s, Step::Write { path, .. } if path == "etc/crypttab")), "{p3}");

        // No line for the volume: refused, saying which.
        std::fs::write(r.join("etc/crypttab"), "other UUID=0000 none luks\n").expect("w");
        let e = plan(r, &root, &d, &opts).expect_err("no crypttab line");
        assert!(e.to_string().contains(&format!("encrypted partition 2 (LUKS2) (UUID {LUKS_UUID}) has no line")), "{e}");

        // /boot inside the volume too (no /boot line): GRUB is left alone.
        std::fs::write(r.join("etc/crypttab"), &tab).expect("w");
        std::fs::write(r.join("etc/fstab"), "/dev/mapper/root_crypt / ext4 defaults 0 1\n").expect("w");
        let mut root = inspect_root(r, 2).expect("inspect").expect("is a root");
        root.crypt = Some(crypt.clone());
        let p4 = plan(r, &root, &d, &opts).expect("plan");
        assert!(!p4.steps.iter().any(|s| matches!(s, Step::Run { argv } if argv[0].starts_with("grub") || argv[0] == "update-grub")), "{p4}");
        assert!(p4.notes.iter().any(|n| n.starts_with("/boot is in the encrypted partition 2 (LUKS2): GRUB")), "{p4}");
        assert_eq!(p4.boot, "none");
    }
}
