//! Mounting a partition read-write as a place to save images on (the TUI's
//! backup destination "a partition of any disk"): ext2/3/4, FAT and exFAT
//! through the kernel (mount(2) itself, [`sys`]: the live system has no
//! `mount` program), NTFS through ntfs-3g (Debian's kernel has
//! no ntfs3 driver, and ntfs-3g is what the live system carries). The
//! partition's own /dev node is used when it has one; otherwise (a disk
//! image file, a loop device without partition nodes) a loop device over
//! its byte range. Everything is released on drop: unmounted (the FUSE
//! process waited for, so the data is on the disk), the loop device
//! detached, the folder removed.
//!
//! Refused: a partition that is already mounted (its mount point is the
//! place to save to), in use, or without a filesystem that can be written.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::error::Error;
use crate::exec::LoopDevice;
use crate::fs::FsKind;
use crate::inventory::DiskReport;

pub mod sys;

/// A partition mounted read-write; unmounted on drop.
#[derive(Debug)]
pub struct MountedPartition {
    pub dir: PathBuf,
    /// The node that was mounted (partition node or loop device).
    pub device: PathBuf,
    fuse: bool,
    _loop: Option<LoopDevice>,
}

/// Where the TUI mounts destinations: /run/rescue/mnt on the live system
/// (a tmpfs), else the temporary folder.
pub fn base_dir() -> PathBuf {
    let run = Path::new("/run/rescue/mnt");
    if std::fs::create_dir_all(run).is_ok() {
        run.to_path_buf()
    } else {
        std::env::temp_dir().join("rescue-mnt")
    }
}

/// Mount partition `number` of `disk` read-write on a new folder under `base`.
pub fn mount_rw(disk: &DiskReport, number: u32, base: &Path) -> Result<MountedPartition, Error> {
    mount(disk, number, base, true)
}

/// Mount partition `number` of `disk` read-only on a new folder under
/// `base`, writing nothing at all: a read-only loop device where one is
/// needed, ext3/4 without journal replay (`noload`), ntfs-3g `ro`.
pub fn mount_ro(disk: &DiskReport, number: u32, base: &Path) -> Result<MountedPartition, Error> {
    mount(disk, number, base, false)
}

fn mount(disk: &DiskReport, number: u32, base: &Path, write: bool) -> Result<MountedPartition, Error> {
    let refuse = |reason: String, hint: &str| Error::Refused { reason, hint: hint.into() };
    let p = disk
        .partitions
        .iter()
        .find(|p| p.partition.number == number)
        .ok_or_else(|| refuse(format!("{} has no partition {number}", disk.disk.path.display()), "choose a partition that `rescue disks` lists"))?;
    if let Some(m) = p.mountpoints.first() {
        return Err(refuse(format!("partition {number} of {} is already mounted at {m}", disk.disk.path.display()), "save the image under that folder instead"));
    }
    if !p.busy.is_empty() {
        return Err(refuse(format!("partition {number} of {} is in use: {}", disk.disk.path.display(), p.busy.join("; ")), "stop what uses it first"));
    }
    let fs = p.fs.as_ref().map(|f| &f.kind).filter(|k| k.holds_images()).ok_or_else(|| {
        refuse(
            format!("partition {number} of {} has no filesystem images can be saved on", disk.disk.path.display()),
            "choose an ext4, NTFS, FAT32 or exFAT partition",
        )
    })?;
    let (device, lo) = match &p.device {
        Some(d) if d.exists() => (d.clone(), None),
        _ => {
            let lo = if write {
                LoopDevice::attach(&disk.disk.path, p.partition.start, p.partition.len)?
            } else {
                LoopDevice::attach_read_only(&disk.disk.path, p.partition.start, p.partition.len)?
            };
            (lo.path.clone(), Some(lo))
        }
    };
    let name: String = format!("{}-{number}{}", disk.disk.name, if write { "" } else { "-ro" }).chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' || c == '.' { c } else { '_' }).collect();
    let dir = base.join(name);
    std::fs::create_dir_all(&dir).map_err(|e| Error::Io { what: format!("creating {}", dir.display()), source: e })?;
    let rw = if write { "rw" } else { "ro" };
    let failed = |tool: &str, detail: String| {
        let _ = std::fs::remove_dir(&dir);
        Error::Tool { cmd: format!("{tool} (partition {number} of {})", disk.disk.path.display()), detail }
    };
    // A FUSE program, for NTFS and for exFAT where the kernel has no driver.
    let fuse_mount = |prog: &str| -> Result<(), Error> {
        let out = Command::new(prog).args(["-o", rw]).arg(&device).arg(&dir).output().map_err(|e| failed(prog, e.to_string()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(failed(prog, String::from_utf8_lossy(&out.stderr).trim().lines().next().unwrap_or("failed").to_string()))
        }
    };
    let fuse = match fs {
        FsKind::Ntfs => {
            fuse_mount("ntfs-3g")?;
            true
        }
        FsKind::Exfat => match sys::mount(&device, &dir, "exfat", rw) {
            Ok(()) => false,
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => {
                fuse_mount("mount.exfat-fuse")?;
                true
            }
            Err(e) => return Err(failed("mount", e.to_string())),
        },
        _ => {
            let (fstype, opts) = match fs {
                FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => ("vfat", rw),
                // A dirty journal would be replayed even read-only: not here.
                FsKind::Ext3 | FsKind::Ext4 if !write => ("ext4", "ro,noload"),
                _ => ("ext4", rw),
            };
            sys::mount(&device, &dir, fstype, opts).map_err(|e| failed("mount", e.to_string()))?;
            false
        }
    };
    Ok(MountedPartition { dir, device, fuse, _loop: lo })
}

impl Drop for MountedPartition {
    fn drop(&mut self) {
        sys::sync();
        for _ in 0..20 {
            if sys::unmount(&self.dir, false).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        if self.fuse {
            // umount returns before the FUSE process has flushed and closed
            // the device: wait for it, so the data is on the disk before the
            // loop device goes.
            crate::exec::wait_for_process_using(&self.device, Duration::from_secs(30));
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}
