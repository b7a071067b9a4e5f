//! Clone: the restore pipeline fed directly from a source disk, no image file.

use std::io;
use std::path::{Path, PathBuf};

use crossbeam_channel::bounded;

use crate::backup::{self, BackupPlan, BackupRequest, Selection};
use crate::blockdev::{self, SourceDisk};
use crate::error::Error;
use crate::exec::{self, RegionSource, WriteOutcome, WritePlan};
use crate::image::format::RegionKind;
use crate::inventory;
use crate::layout::{self, LayoutOptions, SrcLayout, SrcRegion};
use crate::task::Task;

#[derive(Debug, Clone)]
pub struct CloneRequest {
    pub source: PathBuf,
    pub source_partition: Option<u32>,
    /// Only the partitions the installed OS needs to boot (as `backup
    /// system` chooses them) onto the whole target disk ("migrate the
    /// system to a new disk"); with `source_partition` None.
    pub system: bool,
    pub target: PathBuf,
    pub target_partition: Option<u32>,
    pub layout: LayoutOptions,
    pub sector_by_sector: bool,
    pub file_sector_size: Option<u32>,
    /// Passphrases of LUKS partitions (as in [`BackupRequest`]): one opened
    /// copies only its header and used sectors, still encrypted.
    pub luks_passphrases: crate::luks::Passphrases,
}

/// A planned clone: the write plan and the source's backup plan (what to read).
#[derive(Debug, Clone)]
pub struct ClonePlan {
    pub write: WritePlan,
    pub source: BackupPlan,
}

fn same_device(a: &blockdev::DiskInfo, b: &blockdev::DiskInfo) -> bool {
    (a.devnum.is_some() && a.devnum == b.devnum) || (a.file_id.is_some() && a.file_id == b.file_id)
}

pub fn plan_clone(req: &CloneRequest) -> Result<ClonePlan, Error> {
    let selection = match req.source_partition {
        Some(n) => Selection::Partitions(vec![n]),
        None if req.system => Selection::System,
        None => Selection::Disk,
    };
    let bp = backup::plan_backup(&BackupRequest {
        source: req.source.clone(),
        selection,
        sector_by_sector: req.sector_by_sector,
        file_sector_size: req.file_sector_size,
        output: None,
        luks_passphrases: req.luks_passphrases.clone(),
    })?;
    let target_report = inventory::inspect(&req.target, req.file_sector_size.filter(|_| std::fs::metadata(&req.target).is_ok_and(|m| m.is_file())))?;
    let target = target_report.disk.clone();
    if same_device(&bp.source, &target) && req.source_partition.is_none() {
        return Err(Error::refused("the target is the source disk", "choose another target disk"));
    }
    if same_device(&bp.source, &target) && req.source_partition == req.target_partition {
        return Err(Error::refused("the target partition is the source partition", "choose another target partition"));
    }
    if let Some(b) = &target.loop_backing {
        if let Some(id) = bp.source.file_id {
            if blockdev::file_id_of_path(b) == Some(id) {
                return Err(Error::refused("the target is a loop device over the source file", "choose another target"));
            }
        }
    }
    if target.read_only {
        return Err(Error::refused(format!("{} is read-only", target.path.display()), "use a writable disk"));
    }
    let src = SrcLayout {
        size: bp.source.size,
        sector_size: bp.source.logical_sector_size,
        table: bp.table.clone(),
        sector0: {
            let s = SourceDisk::open(&bp.source.path, Some(bp.source.logical_sector_size))?;
            let mut b = vec![0u8; bp.source.logical_sector_size as usize];
            s.file.read_exact_at(&mut b, 0).ok().map(|_| b)
        },
        regions: bp
            .regions
            .iter()
            .enumerate()
            .map(|(i, r)| SrcRegion { id: i as u32, kind: r.kind, partition: r.partition, disk_offset: r.disk_offset, len: r.len, fs: r.fs.clone(), bytes: r.bytes })
            .collect(),
    };
    let write = exec::plan_target("clone", req.source.display().to_string(), &src, req.source_partition, target_report, req.target_partition, &req.layout)?;
    Ok(ClonePlan {
        write,
        source: bp,
    })
}

struct DiskSource<'a> {
    file: &'a blockdev::DiskFile,
    plan: &'a BackupPlan,
}

/// Bytes per read while cloning.
const CLONE_BLOCK: u64 = 1 << 20;

impl RegionSource for DiskSource<'_> {
    fn region_kind(&self, region: u32) -> Option<RegionKind> {
        self.plan.regions.get(region as usize).map(|r| r.kind)
    }

    fn verify(&self, _: &[u32], _: &Task) -> Result<(), Error> {
        Ok(())
    }

    /// One reader thread and the calling thread as writer, so reading the
    /// source and writing the target overlap.
    fn copy(&self, region: u32, write: &(dyn Fn(u64, &[u8]) -> io::Result<()> + Sync), task: &Task) -> Result<(), Error> {
        let r = self.plan.regions.get(region as usize).ok_or_else(|| Error::refused("plan/source mismatch", "make a new plan"))?;
        task.progress.begin(&format!("cloning {}", layout::label(r.kind, r.partition, r.disk_offset)), r.bytes);
        let (tx, rx) = bounded::<Result<(u64, blockdev::AlignedBuf), Error>>(8);
        std::thread::scope(|s| -> Result<(), Error> {
            let file = self.file;
            let base = r.disk_offset;
            let extents = &r.extents;
            let task_r = task.clone();
            s.spawn(move || {
                for e in extents {
                    let mut off = e.start;
                    while off < e.end() {
                        if task_r.check_cancelled().is_err() {
                            let _ = tx.send(Err(Error::Cancelled));
                            return;
                        }
                        let n = (e.end() - off).min(CLONE_BLOCK);
                        // Aligned: a raw disk (Windows, O_DIRECT) needs no bounce copy.
                        let mut buf = blockdev::AlignedBuf::new(n as usize, blockdev::aligned::BUFFER_ALIGN);
                        let res = file
                            .read_exact_at(&mut buf, base + off)
                            .map(|_| (off, buf))
                            .map_err(Error::io(format!("reading the source at byte {}", base + off)));
                        let stop = res.is_err();
                        if tx.send(res).is_err() || stop {
                            return;
                        }
                        off += n;
                    }
                }
            });
            for msg in rx.iter() {
                let (off, buf) = msg?;
                write(off, &buf).map_err(Error::io(format!("writing the target (region byte {off})")))?;
                task.progress.advance(buf.len() as u64);
            }
            Ok(())
        })?;
        task.progress.finish();
        Ok(())
    }
}

pub fn run_clone(plan: &ClonePlan, task: &Task) -> Result<WriteOutcome, Error> {
    let src = SourceDisk::open(&plan.source.source.path, Some(plan.source.source.logical_sector_size))?;
    if src.info.size != plan.source.source.size {
        return Err(Error::refused("the source disk changed size since the plan was made", "run the clone again"));
    }
    exec::execute(&plan.write, &DiskSource { file: &src.file, plan: &plan.source }, task)
}

pub fn is_same_path(a: &Path, b: &Path) -> bool {
    std::fs::canonicalize(a).ok() == std::fs::canonicalize(b).ok()
}
