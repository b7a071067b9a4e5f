//! What is on a disk: identity, partition table, filesystems, and who uses
//! each partition. Feeds `rescue disks`, the TUI's home screen and every plan.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::blockdev::{self, BlockError, DiskInfo, DiskKind};
use crate::fs::{self, FsInfo};
use crate::part::{self, Partition, PartitionTable};
use crate::read_at::{ReadAt, Window};

/// One partition with what we found on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PartitionReport {
    #[serde(flatten)]
    pub partition: Partition,
    pub type_name: String,
    pub fs: Option<FsInfo>,
    /// Why the filesystem could not be read, when it could not.
    pub fs_error: Option<String>,
    /// /dev node of the partition (block devices only).
    pub device: Option<PathBuf>,
    pub mountpoints: Vec<String>,
    pub busy: Vec<String>,
}

/// A disk with its table and partitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiskReport {
    #[serde(flatten)]
    pub disk: DiskInfo,
    pub table: Option<PartitionTable>,
    pub table_error: Option<String>,
    /// A filesystem directly on the disk (no partition table).
    pub whole_disk_fs: Option<FsInfo>,
    pub partitions: Vec<PartitionReport>,
    /// Why the disk as a whole cannot be written now.
    pub busy: Vec<String>,
}

impl DiskReport {
    pub fn partition(&self, n: u32) -> Option<&PartitionReport> {
        self.partitions.iter().find(|p| p.partition.number == n)
    }
}

/// Read the partition table of an open disk.
pub fn read_table(dev: &dyn ReadAt, info: &DiskInfo) -> Result<Option<PartitionTable>, part::PartError> {
    part::read(dev, info.size, info.logical_sector_size)
}

/// Inspect one disk (block device or image file).
pub fn inspect(path: &Path, file_sector_size: Option<u32>) -> Result<DiskReport, BlockError> {
    let src = blockdev::SourceDisk::open(path, file_sector_size)?;
    Ok(inspect_open(&src.file, src.info))
}

/// Inspect an already opened disk.
pub fn inspect_open(dev: &(dyn ReadAt + Sync), info: DiskInfo) -> DiskReport {
    let (table, table_error) = match read_table(dev, &info) {
        Ok(t) => (t, None),
        Err(e) => (None, Some(e.to_string())),
    };
    let mounts = blockdev::mounts();
    let swaps = blockdev::swap_devnums();
    let part_devs = if info.kind == DiskKind::Block { blockdev::partition_devices(&info) } else { Vec::new() };
    let mut partitions = Vec::new();
    let mut whole_disk_fs = None;
    if let Some(t) = &table {
        for p in &t.partitions {
            let (fsi, fs_error) = if p.ptype.is_extended() {
                (None, None)
            } else {
                let w = Window::new(dev, p.start, p.len);
                match fs::probe(&w, p.len) {
                    Ok(f) => (f, None),
                    Err(e) => (None, Some(e.to_string())),
                }
            };
            let mut fsi = fsi;
            if let Some(f) = fsi.as_mut() {
                if f.used.is_none() && f.kind.has_used_map() {
                    let w = Window::new(dev, p.start, p.len);
                    if let Ok(ex) = fs::used_extents(&w, p.len, f) {
                        f.used = Some(crate::extent::total(&ex));
                    }
                }
            }
            let dev_entry = part_devs.iter().find(|(n, _, _)| *n == p.number);
            let mut mountpoints = Vec::new();
            let mut busy = Vec::new();
            if let Some((_, path, dn)) = dev_entry {
                for m in mounts.iter().filter(|m| &m.devnum == dn) {
                    mountpoints.push(m.mountpoint.clone());
                    busy.push(format!("mounted on {}", m.mountpoint));
                }
                if swaps.iter().any(|s| s == dn) {
                    busy.push("active swap".into());
                }
                for h in blockdev::holders(dn) {
                    busy.push(format!("used by {h}"));
                }
                let _ = path;
            }
            partitions.push(PartitionReport {
                type_name: p.ptype.describe(),
                partition: p.clone(),
                fs: fsi,
                fs_error,
                device: dev_entry.map(|(_, p, _)| p.clone()),
                mountpoints,
                busy,
            });
        }
    } else if table_error.is_none() {
        whole_disk_fs = fs::probe(dev, info.size).ok().flatten();
    }
    let busy = blockdev::busy_reasons(&info);
    DiskReport { disk: info, table, table_error, whole_disk_fs, partitions, busy }
}

/// Every disk of the machine plus the given image files.
pub fn list(extra_files: &[PathBuf]) -> Vec<Result<DiskReport, (PathBuf, BlockError)>> {
    let mut out = Vec::new();
    for p in blockdev::list_block_disks().into_iter().chain(extra_files.iter().cloned()) {
        out.push(inspect(&p, None).map_err(|e| (p.clone(), e)));
    }
    out
}
