//! Block devices and disk image files: identity, geometry, who is using them,
//! and exclusive opening for writing.
//!
//! Facts come from sysfs (`/sys/class/block`), the udev database
//! (`/run/udev/data`), `/proc/self/mountinfo` and `/proc/swaps`, so no external
//! tool is needed in the initramfs. A regular file is treated as a disk with
//! 512-byte sectors (or the size the caller says).
//!
//! On Windows the disks are `\\.\PhysicalDriveN`, described by storage
//! ioctls (`blockdev/sys_windows.rs`, buffers decoded by `winioctl.rs`); the
//! volumes on a target are locked and dismounted for the whole write instead of
//! being required unmounted. Other devices (`\\.\C:`, partitions) are refused.

#[cfg(unix)]
pub(crate) mod sys;
#[cfg(windows)]
#[path = "blockdev/sys_windows.rs"]
pub(crate) mod sys;
pub(crate) mod winioctl;
pub mod aligned;

pub use aligned::{AlignedBuf, AlignedIo, Alignment};
pub use sys::advise_sequential;
#[cfg(windows)]
pub use sys::{disk_number, volumes_on_disk, Volume};

use std::fs::{File, OpenOptions};
use std::io;
#[cfg(unix)]
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Block device or regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskKind {
    Block,
    File,
}

/// Identity and geometry of a disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskInfo {
    pub path: PathBuf,
    /// Kernel name (`sda`, `nvme0n1`, `loop3`) or the file name.
    pub name: String,
    pub kind: DiskKind,
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
    /// sata, nvme, usb, virtio, scsi, mmc, loop, file.
    pub transport: Option<String>,
    pub rotational: Option<bool>,
    pub removable: bool,
    pub read_only: bool,
    /// "major:minor" of a block device.
    pub devnum: Option<String>,
    /// For loop devices: the file behind it.
    pub loop_backing: Option<PathBuf>,
    /// (st_dev, st_ino) of a regular file, to recognise it again.
    pub file_id: Option<(u64, u64)>,
}

impl DiskInfo {
    /// One line a person recognises the disk by.
    pub fn describe(&self) -> String {
        let mut s = self.path.display().to_string();
        if let Some(m) = &self.model {
            s.push_str(&format!(" {m}"));
        }
        if let Some(se) = &self.serial {
            s.push_str(&format!(" (serial {se})"));
        }
        s.push_str(&format!(", {}", human_size(self.size)));
        s
    }
}

/// Errors about devices.
#[derive(Debug, thiserror::Error)]
pub enum BlockError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: io::Error },
    #[error("{path} is neither a block device nor a regular file")]
    NotADisk { path: PathBuf },
    #[error("{path} is in use: {reasons}")]
    Busy { path: PathBuf, reasons: String },
    #[error("{path} changed since the plan was made: {what}")]
    IdentityChanged { path: PathBuf, what: String },
    #[error("{path}: {what} is not supported on this system yet")]
    Unsupported { path: PathBuf, what: &'static str },
}

impl BlockError {
    pub fn hint(&self) -> &'static str {
        match self {
            BlockError::Io { .. } => "check the device path and that you are root",
            #[cfg(windows)]
            BlockError::NotADisk { .. } => r"pass a disk such as \\.\PhysicalDrive1 (see `rescue disks`), or a disk image file",
            #[cfg(not(windows))]
            BlockError::NotADisk { .. } => "pass a disk such as /dev/sdb, /dev/nvme0n1, /dev/loop0, or a disk image file",
            #[cfg(windows)]
            BlockError::Busy { .. } => "close the programs and windows using its volumes (and any command prompt inside them); the system disk and a disk holding the image or a page file cannot be written",
            #[cfg(not(windows))]
            BlockError::Busy { .. } => "unmount its filesystems, swapoff, stop LVM/md users (vgchange -an, mdadm --stop), then try again",
            BlockError::IdentityChanged { .. } => "the disks changed (hot-plug?): run the command again to make a new plan",
            BlockError::Unsupported { .. } => "use a disk image file here, or run the Linux rescue system for raw disks",
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlockError + '_ {
    move |source| BlockError::Io { path: path.to_path_buf(), source }
}

fn read_trim(p: impl AsRef<Path>) -> Option<String> {
    let s = std::fs::read_to_string(p).ok()?;
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// `/sys/class/block/NAME` for a block device node, found via major:minor so
/// symlinks like /dev/disk/by-id work.
fn sysfs_dir(devnum: &str) -> Option<PathBuf> {
    let p = PathBuf::from(format!("/sys/dev/block/{devnum}"));
    std::fs::canonicalize(p).ok()
}

#[cfg(unix)]
fn devnum_of(meta: &std::fs::Metadata) -> String {
    let rdev = meta.rdev();
    format!("{}:{}", libc::major(rdev), libc::minor(rdev))
}

/// Identity of a regular file, to recognise it under another name:
/// (st_dev, st_ino) on Unix, (volume serial number, file index) on Windows.
pub fn file_id(f: &File) -> Option<(u64, u64)> {
    #[cfg(unix)]
    return f.metadata().ok().map(|m| (m.dev(), m.ino()));
    #[cfg(windows)]
    return sys::file_id(f).ok();
}

/// [`file_id`] of the file at `path` (None when it cannot be opened).
pub fn file_id_of_path(path: &Path) -> Option<(u64, u64)> {
    #[cfg(unix)]
    return std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()));
    #[cfg(windows)]
    return File::open(path).ok().and_then(|f| file_id(&f));
}

/// "major:minor" of the device node at `path`; None for anything else and on
/// systems without device numbers.
pub fn node_devnum(path: &Path) -> Option<String> {
    #[cfg(unix)]
    return std::fs::metadata(path).ok().map(|m| devnum_of(&m));
    #[cfg(not(unix))]
    return {
        let _ = path;
        None
    };
}

/// "major:minor" of the filesystem holding the file with metadata `m`; None on
/// systems without device numbers.
pub fn fs_devnum(m: &std::fs::Metadata) -> Option<String> {
    #[cfg(unix)]
    return Some(format!("{}:{}", libc::major(m.dev()), libc::minor(m.dev())));
    #[cfg(not(unix))]
    return {
        let _ = m;
        None
    };
}

#[cfg(unix)]
fn udev_property(devnum: &str, key: &str) -> Option<String> {
    let db = std::fs::read_to_string(format!("/run/udev/data/b{devnum}")).ok()?;
    db.lines().find_map(|l| l.strip_prefix("E:")?.strip_prefix(key)?.strip_prefix('=').map(str::to_string))
}

#[cfg(unix)]
fn transport_of(sys: &Path, name: &str) -> Option<String> {
    let s = sys.to_string_lossy();
    let t = if name.starts_with("loop") {
        "loop"
    } else if name.starts_with("nvme") {
        "nvme"
    } else if name.starts_with("mmcblk") {
        "mmc"
    } else if s.contains("/usb") {
        "usb"
    } else if s.contains("/virtio") && name.starts_with("vd") {
        "virtio"
    } else if s.contains("/ata") {
        "sata"
    } else if s.contains("/virtio") {
        "virtio-scsi"
    } else if s.contains("/host") {
        "scsi"
    } else {
        return None;
    };
    Some(t.into())
}

/// Facts about a disk (block device or image file). `file_sector_size` is used
/// for regular files (512 when None).
pub fn probe_disk(path: &Path, file_sector_size: Option<u32>) -> Result<DiskInfo, BlockError> {
    // Raw disks first: metadata() of a `\\.\PhysicalDriveN` fails on Windows
    // (GetFileInformationByHandle is not for devices).
    #[cfg(windows)]
    if winioctl::physical_drive_number(&path.to_string_lossy()).is_some() {
        return sys::probe_physical_drive(path).map_err(io_err(path));
    }
    let meta = std::fs::metadata(path).map_err(io_err(path))?;
    let ft = meta.file_type();
    if ft.is_file() {
        let ss = file_sector_size.unwrap_or(512);
        return Ok(DiskInfo {
            path: path.to_path_buf(),
            name: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
            kind: DiskKind::File,
            model: Some("disk image file".into()),
            vendor: None,
            serial: None,
            wwn: None,
            size: meta.len(),
            logical_sector_size: ss,
            physical_sector_size: ss,
            transport: Some("file".into()),
            rotational: None,
            removable: false,
            read_only: meta.permissions().readonly(),
            devnum: None,
            loop_backing: None,
            file_id: file_id_of_path(path),
        });
    }
    probe_block(path, &meta)
}

/// Anything but a regular file or `\\.\PhysicalDriveN` (handled in
/// [`probe_disk`]): volumes, partitions, folders.
#[cfg(windows)]
fn probe_block(path: &Path, _meta: &std::fs::Metadata) -> Result<DiskInfo, BlockError> {
    Err(BlockError::NotADisk { path: path.to_path_buf() })
}

#[cfg(unix)]
fn probe_block(path: &Path, meta: &std::fs::Metadata) -> Result<DiskInfo, BlockError> {
    let ft = meta.file_type();
    if !ft.is_block_device() {
        return Err(BlockError::NotADisk { path: path.to_path_buf() });
    }
    let devnum = devnum_of(meta);
    let sys = sysfs_dir(&devnum).ok_or_else(|| BlockError::NotADisk { path: path.to_path_buf() })?;
    let name = sys.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // A partition's queue/ and device/ live in the parent disk's directory.
    let disk_sys = if sys.join("partition").exists() { sys.parent().map(Path::to_path_buf).unwrap_or(sys.clone()) } else { sys.clone() };
    let size = read_trim(sys.join("size")).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0) * 512;
    let lss = read_trim(disk_sys.join("queue/logical_block_size")).and_then(|s| s.parse().ok()).unwrap_or(512);
    let pss = read_trim(disk_sys.join("queue/physical_block_size")).and_then(|s| s.parse().ok()).unwrap_or(lss);
    let dev = disk_sys.join("device");
    let model = read_trim(dev.join("model")).or_else(|| udev_property(&devnum, "ID_MODEL"));
    let serial = read_trim(dev.join("serial"))
        .or_else(|| udev_property(&devnum, "ID_SERIAL_SHORT"))
        .or_else(|| udev_property(&devnum, "ID_SERIAL"));
    let wwn = read_trim(disk_sys.join("wwid")).or_else(|| read_trim(dev.join("wwid"))).or_else(|| udev_property(&devnum, "ID_WWN"));
    let loop_backing = read_trim(sys.join("loop/backing_file")).map(PathBuf::from);
    Ok(DiskInfo {
        path: path.to_path_buf(),
        name: name.clone(),
        kind: DiskKind::Block,
        model,
        vendor: read_trim(dev.join("vendor")),
        serial,
        wwn,
        size,
        logical_sector_size: lss,
        physical_sector_size: pss,
        transport: transport_of(&sys, &name),
        rotational: read_trim(disk_sys.join("queue/rotational")).map(|s| s == "1"),
        removable: read_trim(disk_sys.join("removable")).is_some_and(|s| s == "1"),
        read_only: read_trim(sys.join("ro")).is_some_and(|s| s == "1"),
        devnum: Some(devnum),
        loop_backing,
        file_id: None,
    })
}

/// Whole disks the kernel knows, as /dev paths: skips partitions, RAM disks,
/// zram, device-mapper and md devices (they are listed as holders instead),
/// unattached loop devices and empty drives.
#[cfg(unix)]
pub fn list_block_disks() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir("/sys/block") else { return out };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if ["ram", "zram", "dm-", "md", "sr", "fd", "nbd"].iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let size = read_trim(e.path().join("size")).and_then(|s| s.parse::<u64>().ok()).unwrap_or(0);
        if size == 0 {
            continue;
        }
        out.push(PathBuf::from(format!("/dev/{name}")));
    }
    out.sort();
    out
}

/// The `\\.\PhysicalDriveN` present, leaving out drives without media.
#[cfg(windows)]
pub fn list_block_disks() -> Vec<PathBuf> {
    sys::list_physical_drives()
}

/// A partition device of a whole block device: (number, /dev path, major:minor).
pub fn partition_devices(disk: &DiskInfo) -> Vec<(u32, PathBuf, String)> {
    let mut out = Vec::new();
    let Some(devnum) = &disk.devnum else { return out };
    let Some(sys) = sysfs_dir(devnum) else { return out };
    let Ok(rd) = std::fs::read_dir(&sys) else { return out };
    for e in rd.flatten() {
        let p = e.path();
        if let Some(n) = read_trim(p.join("partition")).and_then(|s| s.parse().ok()) {
            let name = e.file_name().to_string_lossy().into_owned();
            let dn = read_trim(p.join("dev")).unwrap_or_default();
            out.push((n, PathBuf::from(format!("/dev/{name}")), dn));
        }
    }
    out.sort();
    out
}

/// One mounted filesystem.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub devnum: String,
    pub mountpoint: String,
    pub fstype: String,
    pub source: String,
}

/// Current mounts (from /proc/self/mountinfo).
pub fn mounts() -> Vec<Mount> {
    let Ok(s) = std::fs::read_to_string("/proc/self/mountinfo") else { return Vec::new() };
    s.lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let f: Vec<&str> = pre.split(' ').collect();
            let g: Vec<&str> = post.split(' ').collect();
            Some(Mount {
                devnum: f.get(2)?.to_string(),
                mountpoint: unescape_mount(f.get(4)?),
                fstype: g.first()?.to_string(),
                source: g.get(1).map(|x| unescape_mount(x)).unwrap_or_default(),
            })
        })
        .collect()
}

fn unescape_mount(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// major:minor of the active swap devices.
pub fn swap_devnums() -> Vec<String> {
    let Ok(s) = std::fs::read_to_string("/proc/swaps") else { return Vec::new() };
    s.lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|p| node_devnum(Path::new(p)))
        .collect()
}

/// Devices stacked on top of a block device (LVM, md, dm-crypt), by name.
pub fn holders(devnum: &str) -> Vec<String> {
    let Some(sys) = sysfs_dir(devnum) else { return Vec::new() };
    let Ok(rd) = std::fs::read_dir(sys.join("holders")) else { return Vec::new() };
    rd.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect()
}

/// Loop devices whose backing file is `file` (by device and inode).
#[cfg(unix)]
pub fn loops_backed_by(file_id: (u64, u64)) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for p in list_block_disks() {
        if let Ok(info) = probe_disk(&p, None) {
            if let Some(b) = &info.loop_backing {
                if file_id_of_path(b) == Some(file_id) {
                    out.push(p);
                }
            }
        }
    }
    out
}

/// None on Windows: it has no loop devices (attached VHDs are disks of their own).
#[cfg(windows)]
pub fn loops_backed_by(_file_id: (u64, u64)) -> Vec<PathBuf> {
    Vec::new()
}

/// Why a disk (or any of its partitions) cannot be written now; empty = free.
pub fn busy_reasons(disk: &DiskInfo) -> Vec<String> {
    // Windows: the volumes on the disk that cannot be locked (see sys_windows.rs).
    #[cfg(windows)]
    if disk.kind == DiskKind::Block {
        return sys::busy_reasons(&disk.path);
    }
    let mut reasons = busy_reasons_direct(disk);
    // The file behind this disk (or this file) may be attached as other loop
    // devices, e.g. one per partition with `losetup -o`: their users count.
    let backing_id = match disk.kind {
        DiskKind::File => disk.file_id,
        DiskKind::Block => disk.loop_backing.as_deref().and_then(file_id_of_path),
    };
    if let Some(id) = backing_id {
        for l in loops_backed_by(id) {
            if l.canonicalize().ok() == disk.path.canonicalize().ok() {
                continue;
            }
            if let Ok(li) = probe_disk(&l, None) {
                let inner = busy_reasons_direct(&li);
                if !inner.is_empty() || disk.kind == DiskKind::File {
                    reasons.push(format!("its file is attached as {}", l.display()));
                }
                reasons.extend(inner);
            }
        }
    }
    reasons.sort();
    reasons.dedup();
    reasons
}

/// Users of a block device and its partitions, without following loop backing files.
fn busy_reasons_direct(disk: &DiskInfo) -> Vec<String> {
    let mut reasons = Vec::new();
    let Some(dn) = &disk.devnum else { return reasons };
    let mounts = mounts();
    let swaps = swap_devnums();
    let mut all = vec![(disk.path.display().to_string(), dn.clone())];
    all.extend(partition_devices(disk).into_iter().map(|(_, p, d)| (p.display().to_string(), d)));
    for (label, devnum) in all {
        for m in mounts.iter().filter(|m| m.devnum == devnum) {
            reasons.push(format!("{label} is mounted on {}", m.mountpoint));
        }
        if swaps.contains(&devnum) {
            reasons.push(format!("{label} is active swap"));
        }
        for h in holders(&devnum) {
            reasons.push(format!("{label} is used by {h} (LVM/md/dm)"));
        }
    }
    reasons
}

/// An open disk or disk image file. Every read and write goes through the
/// aligning layer ([`aligned`]), which passes aligned requests straight on and
/// makes the others whole sectors when the handle demands it: on Windows for
/// raw disks always, on Linux for block devices opened with O_DIRECT (see
/// [`direct_io_requested`]).
pub type DiskFile = AlignedIo<File>;

/// The environment variable that makes Linux open source and target block
/// devices with O_DIRECT (value `1`).
pub const DIRECT_IO_ENV: &str = "RESCUE_DIRECT_IO";

/// Whether `RESCUE_DIRECT_IO=1` asks for O_DIRECT on Linux block devices.
///
/// O_DIRECT has the rules of a Windows raw disk handle (offset, length and
/// buffer address in whole logical sectors, else EINVAL), so it is how the
/// Linux tests prove that every disk access of the engine goes through the
/// aligning layer correctly, on real 512- and 4096-byte-sector loop devices;
/// in the field it also keeps a rescue copy out of the page cache. It is an
/// environment variable, not an option of each command, because it changes
/// how disks are opened, never what a plan does: it reaches every
/// `SourceDisk`/`TargetDisk` (CLI, TUI, unattended jobs) without threading a
/// flag through every request type.
pub fn direct_io_requested() -> bool {
    std::env::var_os(DIRECT_IO_ENV).is_some_and(|v| v == "1")
}

/// Open a block device, or a regular file on a filesystem that lives on
/// one, for reading past the page cache (O_DIRECT): offsets, lengths and
/// buffer addresses must then be multiples of the device's block size
/// ([`UNCACHED_ALIGN`] covers every common one). Files elsewhere (network
/// filesystems, FUSE, tmpfs: device numbers with major 0) are refused,
/// since there the page cache's read-ahead is what makes reading fast; so
/// is whatever refuses O_DIRECT itself.
#[cfg(target_os = "linux")]
pub fn open_uncached(path: &Path) -> io::Result<File> {
    let meta = std::fs::metadata(path)?;
    if !meta.file_type().is_block_device() && libc::major(meta.dev()) == 0 {
        return Err(io::Error::new(io::ErrorKind::Unsupported, "not on a block device"));
    }
    OpenOptions::new().read(true).custom_flags(libc::O_DIRECT).open(path)
}

/// Alignment used for reads through [`open_uncached`] handles.
pub const UNCACHED_ALIGN: u64 = 4096;

/// What fraction of `[start, start + len)` of a file or block device is in
/// the page cache, sampled (4 MiB at 8 places) without reading anything.
/// `None` when the kernel does not say.
#[cfg(unix)]
pub fn cached_fraction(f: &File, start: u64, len: u64) -> Option<f64> {
    const WINDOW: u64 = 4 << 20;
    const SAMPLES: u64 = 8;
    let mut sum = 0.0;
    for k in 0..SAMPLES {
        let at = start + (len / SAMPLES) * k;
        sum += sys::resident_fraction(f, at, WINDOW.min(start + len - at)).ok()?;
    }
    Some(sum / SAMPLES as f64)
}

/// The rules every request on `info` must follow once it is open.
fn alignment_for(info: &DiskInfo) -> Alignment {
    if info.kind != DiskKind::Block {
        return Alignment::NONE;
    }
    if cfg!(windows) || direct_io_requested() {
        Alignment::sectors(info.logical_sector_size)
    } else {
        Alignment::NONE
    }
}

/// Open options for `info`: O_DIRECT on Linux block devices when asked.
fn open_options(info: &DiskInfo, write: bool) -> OpenOptions {
    let mut oo = OpenOptions::new();
    oo.read(true).write(write);
    #[cfg(unix)]
    if info.kind == DiskKind::Block {
        // O_EXCL on a block device: the kernel answers EBUSY while the disk
        // or a partition is claimed (mount, swap, md, dm).
        let mut flags = if write { libc::O_EXCL } else { 0 };
        #[cfg(target_os = "linux")]
        if direct_io_requested() {
            flags |= libc::O_DIRECT;
        }
        oo.custom_flags(flags);
    }
    #[cfg(not(unix))]
    let _ = info;
    oo
}

/// A disk opened for reading.
#[derive(Debug)]
pub struct SourceDisk {
    pub info: DiskInfo,
    pub file: DiskFile,
    /// Opened on the first call of [`data`](Self::data).
    bulk: std::sync::OnceLock<Bulk>,
}

impl SourceDisk {
    pub fn open(path: &Path, file_sector_size: Option<u32>) -> Result<Self, BlockError> {
        let info = probe_disk(path, file_sector_size)?;
        let file = open_options(&info, false).open(path).map_err(io_err(path))?;
        let file = AlignedIo::new(file, alignment_for(&info));
        Ok(Self { info, file, bulk: std::sync::OnceLock::new() })
    }

    /// The reader for the bulk of the data (the used blocks of a backup);
    /// `file` stays the one for metadata, which the page cache serves well.
    /// See [`DataReader`].
    pub fn data(&self) -> DataReader<'_> {
        let bulk = self.bulk.get_or_init(|| Bulk::open(&self.info.path, &self.info, self.file.inner()));
        DataReader { main: &self.file, bulk }
    }
}

/// A second handle on a disk for the bulk of its data, read past the page
/// cache (O_DIRECT), when the disk is mostly not in the cache (the usual
/// case in a rescue system) or `RESCUE_DIRECT_IO=1` asks for it on a disk
/// image file. Block devices already opened with O_DIRECT need none.
#[derive(Debug, Default)]
struct Bulk {
    handle: Option<DiskFile>,
    /// Set when the handle refused a read (a filesystem without O_DIRECT):
    /// from then on everything goes through the main handle.
    failed: std::sync::atomic::AtomicBool,
}

impl Bulk {
    #[cfg(target_os = "linux")]
    fn open(path: &Path, info: &DiskInfo, file: &File) -> Bulk {
        let forced = direct_io_requested();
        let wanted = match (info.kind, forced) {
            (DiskKind::Block, true) => false,
            (_, true) => true,
            _ => cached_fraction(file, 0, info.size).is_some_and(|x| x < 0.5),
        };
        let sector = match info.kind {
            DiskKind::Block => info.logical_sector_size,
            DiskKind::File => UNCACHED_ALIGN as u32,
        };
        let handle = wanted.then(|| open_uncached(path).ok()).flatten().map(|f| AlignedIo::new(f, Alignment::sectors(sector)));
        Bulk { handle, failed: Default::default() }
    }

    #[cfg(not(target_os = "linux"))]
    fn open(_path: &Path, _info: &DiskInfo, _file: &File) -> Bulk {
        Bulk::default()
    }
}

/// Reads a disk's bulk data past the page cache when it has a [`Bulk`]
/// handle, with several reads in flight (see `ReadAt::reads_in_flight`):
/// on a cold disk that is faster than the kernel's read-ahead and makes no
/// copy out of the cache. Otherwise, or when the filesystem refuses such a
/// read, through the main handle.
pub struct DataReader<'a> {
    main: &'a DiskFile,
    bulk: &'a Bulk,
}

impl DataReader<'_> {
    fn bulk(&self) -> Option<&DiskFile> {
        self.bulk.handle.as_ref().filter(|_| !self.bulk.failed.load(std::sync::atomic::Ordering::Relaxed))
    }
}

impl crate::read_at::ReadAt for DataReader<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if let Some(b) = self.bulk() {
            match b.read_exact_at(buf, offset) {
                Err(e) if e.kind() == io::ErrorKind::InvalidInput => {
                    tracing::info!(error = %e, "reads past the page cache refused; reading through it");
                    self.bulk.failed.store(true, std::sync::atomic::Ordering::Relaxed);
                }
                r => return r,
            }
        }
        self.main.read_exact_at(buf, offset)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        crate::read_at::ReadAt::prefetch(self.bulk().unwrap_or(self.main), offset, len)
    }

    fn reads_in_flight(&self) -> usize {
        crate::read_at::ReadAt::reads_in_flight(self.bulk().unwrap_or(self.main))
    }
}

/// A disk opened for writing, exclusively, for the whole operation.
#[derive(Debug)]
pub struct TargetDisk {
    pub info: DiskInfo,
    pub file: DiskFile,
    /// Opened on the first call of [`data`](Self::data).
    bulk: std::sync::OnceLock<Bulk>,
    /// Windows: handles holding the volumes of the disk locked and dismounted
    /// until the target is dropped.
    #[cfg(windows)]
    #[allow(dead_code)] // held only for their Drop, which unlocks
    locks: Vec<File>,
}

impl TargetDisk {
    /// Open with O_EXCL (block devices: the kernel answers EBUSY while the disk
    /// or a partition is claimed by a mount, swap, md or dm) or an exclusive
    /// lock (files), after checking our own list of users.
    pub fn open(path: &Path, file_sector_size: Option<u32>) -> Result<Self, BlockError> {
        let info = probe_disk(path, file_sector_size)?;
        let reasons = busy_reasons(&info);
        if !reasons.is_empty() {
            return Err(BlockError::Busy { path: path.to_path_buf(), reasons: reasons.join("; ") });
        }
        // Windows: lock and dismount every volume on the disk first; the locks
        // are the real exclusivity check (they fail while files are open there).
        #[cfg(windows)]
        let locks = if info.kind == DiskKind::Block {
            sys::lock_volumes(path, true).map_err(|reasons| BlockError::Busy { path: path.to_path_buf(), reasons: reasons.join("; ") })?
        } else {
            Vec::new()
        };
        #[cfg_attr(unix, allow(unused_mut))]
        let mut oo = open_options(&info, true);
        // Windows: share reading only, so no one else may open it for writing
        // while we hold it (a second writer gets ERROR_SHARING_VIOLATION); this
        // replaces the advisory lock, which Windows has no equivalent of.
        #[cfg(windows)]
        std::os::windows::fs::OpenOptionsExt::share_mode(&mut oo, FILE_SHARE_READ);
        let file = oo.open(path).map_err(|e| {
            if is_busy_error(&e) {
                BlockError::Busy { path: path.to_path_buf(), reasons: "the system reports it busy (a partition is mounted or claimed, or another program has it open)".into() }
            } else {
                BlockError::Io { path: path.to_path_buf(), source: e }
            }
        })?;
        #[cfg(unix)]
        if info.kind == DiskKind::File {
            sys::lock_exclusive(&file).map_err(|_| BlockError::Busy { path: path.to_path_buf(), reasons: "another program holds a lock on it".into() })?;
        }
        let file = AlignedIo::new(file, alignment_for(&info));
        Ok(Self {
            info,
            file,
            bulk: std::sync::OnceLock::new(),
            #[cfg(windows)]
            locks,
        })
    }

    /// The reader for what a changed-block restore compares: the target's
    /// data past the page cache when it is cold (see [`DataReader`]). Its
    /// writes still go through `file`.
    pub fn data(&self) -> DataReader<'_> {
        let bulk = self.bulk.get_or_init(|| Bulk::open(&self.info.path, &self.info, self.file.inner()));
        DataReader { main: &self.file, bulk }
    }

    /// Check that the device is still the one the plan was made for.
    pub fn check_identity(&self, expected: &DiskInfo) -> Result<(), BlockError> {
        let now = probe_disk(&self.info.path, Some(expected.logical_sector_size))?;
        let mut diffs = Vec::new();
        if now.size != expected.size {
            diffs.push(format!("size {} is now {}", expected.size, now.size));
        }
        if now.serial != expected.serial {
            diffs.push("serial number".to_string());
        }
        if now.wwn != expected.wwn {
            diffs.push("WWN".to_string());
        }
        if now.devnum != expected.devnum || now.file_id != expected.file_id {
            diffs.push("device number".to_string());
        }
        if diffs.is_empty() {
            Ok(())
        } else {
            Err(BlockError::IdentityChanged { path: self.info.path.clone(), what: diffs.join(", ") })
        }
    }

    /// Flush data to stable storage and, for block devices, have the kernel
    /// re-read the partition table (retrying while udev still holds it).
    pub fn sync_and_reread(&self) -> Result<Vec<String>, BlockError> {
        self.file.sync_all().map_err(io_err(&self.info.path))?;
        let mut notes = Vec::new();
        if self.info.kind == DiskKind::Block {
            #[cfg(unix)]
            let _ = sys::flush_buffers(self.file.inner());
            // EINVAL (Linux): this device keeps no partitions, e.g. a loop
            // device without partition scanning; asking again changes nothing.
            let no_partitions = |e: &std::io::Error| cfg!(unix) && e.raw_os_error() == Some(libc::EINVAL);
            let mut last = None;
            for i in 0..10 {
                match sys::reread_partitions(self.file.inner()) {
                    Ok(()) => {
                        last = None;
                        break;
                    }
                    Err(e) if no_partitions(&e) => {
                        last = Some(e);
                        break;
                    }
                    // Busy (udev or a prober has it open): wait and retry.
                    Err(e) => {
                        last = Some(e);
                        std::thread::sleep(std::time::Duration::from_millis(100 * (i + 1)));
                    }
                }
            }
            match last {
                Some(e) if no_partitions(&e) => notes.push(format!(
                    "{} shows no partition devices (the kernel does not scan its partitions, e.g. a loop device attached without --partscan); the table on it is written",
                    self.info.path.display()
                )),
                Some(e) => notes.push(format!("the kernel did not re-read the partition table of {} ({e}); reboot or run `partprobe`", self.info.path.display())),
                None => {}
            }
            // Let udev create the partition nodes.
            #[cfg(target_os = "linux")]
            let _ = std::process::Command::new("udevadm").args(["settle", "--timeout=10"]).status();
        }
        Ok(notes)
    }
}

/// FILE_SHARE_READ from <winnt.h>.
#[cfg(windows)]
const FILE_SHARE_READ: u32 = 1;

/// Whether opening failed because someone else holds the disk: EBUSY for an
/// O_EXCL open on Linux, a sharing violation (ERROR_SHARING_VIOLATION = 32) on
/// Windows.
fn is_busy_error(e: &io::Error) -> bool {
    #[cfg(unix)]
    return e.raw_os_error() == Some(libc::EBUSY);
    #[cfg(windows)]
    return e.raw_os_error() == Some(32);
}

/// Sizes the way people read them: 1.5 GiB, 512 MiB, 4.0 KiB.
pub fn human_size(n: u64) -> String {
    const U: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = n as f64;
    let mut i = 0;
    while v >= 1024.0 && i < U.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", U[i])
    }
}

/// Parse sizes like `4G`, `700MiB`, `50M`, `1T`, `512` (bytes).
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let v: f64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        _ => return None,
    };
    Some((v * mult as f64) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files on a filesystem without a block device (tmpfs here) keep the
    /// page cache; files on one may be read past it.
    #[test]
    #[cfg(target_os = "linux")]
    fn uncached_reads_only_for_block_backed_files() {
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            let f = tempfile::NamedTempFile::new_in(shm).unwrap();
            std::fs::write(f.path(), vec![1u8; 8192]).unwrap();
            let e = open_uncached(f.path()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::Unsupported, "{e}");
        }
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let p = dir.path().join("x");
        std::fs::write(&p, vec![1u8; 8192]).unwrap();
        let meta = std::fs::metadata(&p).unwrap();
        if libc::major(meta.dev()) != 0 {
            open_uncached(&p).unwrap();
        }
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("50M"), Some(50 << 20));
        assert_eq!(parse_size("4GiB"), Some(4 << 30));
        assert_eq!(parse_size("1.5G"), Some(3 << 29));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12Q"), None);
        assert_eq!(human_size(1536 << 20), "1.5 GiB");
        assert_eq!(human_size(100), "100 B");
    }

    #[test]
    fn mount_escapes() {
        assert_eq!(unescape_mount("/mnt/my\\040disk"), "/mnt/my disk");
        assert_eq!(unescape_mount("/plain"), "/plain");
    }

    #[test]
    fn file_as_disk() {
        // A closed file (on Windows an open writer elsewhere makes it busy).
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk.img");
        File::create(&path).unwrap().set_len(1 << 20).unwrap();
        let d = probe_disk(&path, None).unwrap();
        assert_eq!(d.kind, DiskKind::File);
        assert_eq!(d.size, 1 << 20);
        assert_eq!(d.logical_sector_size, 512);
        let tgt = TargetDisk::open(&path, None).unwrap();
        // A second writer is refused while the first holds the file.
        assert!(matches!(TargetDisk::open(&path, None), Err(BlockError::Busy { .. })));
        tgt.check_identity(&d).unwrap();
    }
}
