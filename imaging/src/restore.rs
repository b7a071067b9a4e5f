//! Restore: plan where an image's regions go on a target disk, then execute
//! the plan with every chunk verified before it is written.

use std::io;
use std::path::{Path, PathBuf};

use crate::blockdev::DiskKind;
use crate::error::Error;
use crate::exec::{self, RegionSource, WriteOutcome, WritePlan};
use crate::image::format::{unhex, BackupKind, RegionKind};
use crate::image::reader::ChunkSink;
use crate::image::{ImageReader, Region};
use crate::inventory;
use crate::layout::{LayoutOptions, SrcLayout, SrcRegion};
use crate::task::Task;

#[derive(Debug, Clone)]
pub struct RestoreRequest {
    pub image: PathBuf,
    pub target: PathBuf,
    /// `--part N`: restore only this partition of the image.
    pub source_partition: Option<u32>,
    /// `--to DISK:M`: into this existing partition (None: whole disk, or free space with --part).
    pub target_partition: Option<u32>,
    pub layout: LayoutOptions,
    /// Sector size to assume when the target is a regular file.
    pub file_sector_size: Option<u32>,
    /// Also write zeros where the image holds nothing (unused blocks), so
    /// every sector of the restored regions matches the image.
    pub sector_by_sector: bool,
}

/// The image's layout as the planner sees it.
pub fn src_layout(reader: &ImageReader) -> SrcLayout {
    let c = reader.catalog();
    SrcLayout {
        size: c.source.size,
        sector_size: c.source.logical_sector_size,
        table: c.table.clone(),
        sector0: c.sector0.as_deref().and_then(unhex),
        regions: c
            .regions
            .iter()
            .map(|r| SrcRegion {
                id: r.id,
                kind: r.kind,
                partition: r.partition,
                disk_offset: r.disk_offset,
                len: r.len,
                fs: r.fs.clone(),
                bytes: r.chunks * u64::from(c.options.chunk_size),
            })
            .collect(),
    }
}

/// Plan a restore (reads the target, writes nothing).
pub fn plan_restore(req: &RestoreRequest, reader: &ImageReader) -> Result<WritePlan, Error> {
    let cat = reader.catalog();
    let src = src_layout(reader);
    let target_report = inventory::inspect(&req.target, req.file_sector_size.or(Some(cat.source.logical_sector_size)).filter(|_| is_file(&req.target)))?;
    let target = target_report.disk.clone();
    if target.read_only {
        return Err(Error::refused(format!("{} is read-only", target.path.display()), "use a writable disk (check the write-protect switch)"));
    }
    let files: Vec<(PathBuf, &std::fs::File)> = reader.files();
    exec::refuse_if_target_holds(&target, &files)?;
    let is_partition_node = target.kind == DiskKind::Block && Path::new(&format!("/sys/dev/block/{}/partition", target.devnum.clone().unwrap_or_default())).exists();
    if is_partition_node {
        return Err(Error::refused(
            format!("{} is a partition, not a whole disk", target.path.display()),
            "name the disk and the partition number, e.g. --to /dev/sdb:2",
        ));
    }
    if req.source_partition.is_none() {
        if cat.kind == BackupKind::Partitions {
            return Err(Error::refused(
                "this is a partition image: it cannot be restored as a whole disk",
                "restore one partition with --part N --to DISK[:M]",
            ));
        }
        if req.target_partition.is_some() {
            return Err(Error::refused("--to DISK:M needs --part N (which partition of the image)", "add --part N, or give the whole disk"));
        }
    }
    exec::plan_target("restore", req.image.display().to_string(), &src, req.source_partition, target_report, req.target_partition, &req.layout)
}

fn is_file(p: &Path) -> bool {
    std::fs::metadata(p).map(|m| m.is_file()).unwrap_or(false)
}

struct ImageSource<'a> {
    reader: &'a ImageReader,
    fill_unstored: bool,
    /// What `verify_changed` found differing, by region: the changed-block
    /// restore then writes those chunks without reading the target again
    /// (a disk larger than memory would otherwise be read twice).
    changed: std::sync::Mutex<std::collections::HashMap<u32, crate::image::ChangedChunks>>,
}

struct FnSink<'a> {
    f: &'a (dyn Fn(u64, &[u8]) -> io::Result<()> + Sync),
}

impl ChunkSink for FnSink<'_> {
    fn write_at(&self, _: &Region, offset: u64, data: &[u8]) -> io::Result<()> {
        (self.f)(offset, data)
    }
}

impl RegionSource for ImageSource<'_> {
    fn region_kind(&self, region: u32) -> Option<RegionKind> {
        self.reader.catalog().region(region).map(|r| r.kind)
    }

    fn verify(&self, regions: &[u32], task: &Task) -> Result<(), Error> {
        Ok(self.reader.verify_stored(regions, task)?)
    }

    fn copy(&self, region: u32, write: &(dyn Fn(u64, &[u8]) -> io::Result<()> + Sync), task: &Task) -> Result<(), Error> {
        let r = self.reader.catalog().region(region).ok_or_else(|| Error::refused(format!("no region {region} in the image"), "the plan does not match the image"))?;
        Ok(self.reader.read_region_with(r, &FnSink { f: write }, task, self.fill_unstored)?)
    }

    fn verify_changed(&self, items: &[(u32, &dyn crate::read_at::ReadAt)], task: &Task) -> Result<(), Error> {
        let mut list = Vec::new();
        for (id, t) in items {
            let r = self.reader.catalog().region(*id).ok_or_else(|| Error::refused(format!("no region {id} in the image"), "the plan does not match the image"))?;
            list.push((r, *t));
        }
        let found = self.reader.verify_changed(&list, self.fill_unstored, task)?;
        self.changed.lock().map_err(|_| Error::refused("a thread panicked", "report this bug"))?.extend(found);
        Ok(())
    }

    fn copy_changed(&self, region: u32, target: &dyn crate::read_at::ReadAt, overwritten: &[(u64, u64)], write: &(dyn Fn(u64, &[u8]) -> io::Result<()> + Sync), task: &Task) -> Result<(), Error> {
        let r = self.reader.catalog().region(region).ok_or_else(|| Error::refused(format!("no region {region} in the image"), "the plan does not match the image"))?;
        let known = self.changed.lock().map_err(|_| Error::refused("a thread panicked", "report this bug"))?.remove(&region);
        match known {
            Some(set) => {
                let cs = u64::from(self.reader.header().chunk_size);
                for &(start, end) in overwritten {
                    set.insert_bytes(start, end, cs);
                }
                Ok(self.reader.read_region_only(r, &FnSink { f: write }, task, self.fill_unstored, &set)?)
            }
            None => Ok(self.reader.read_region_changed(r, &FnSink { f: write }, task, self.fill_unstored, Some(target))?),
        }
    }
}

/// Execute a restore plan made by [`plan_restore`] with the same reader.
pub fn run_restore(plan: &WritePlan, reader: &ImageReader, sector_by_sector: bool, task: &Task) -> Result<WriteOutcome, Error> {
    exec::execute(plan, &ImageSource { reader, fill_unstored: sector_by_sector, changed: Default::default() }, task)
}
