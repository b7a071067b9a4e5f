//! Backup: plan which regions of a disk to store and how, then run the plan
//! through the image writer.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::blockdev::{self, DiskInfo, DiskKind, SourceDisk};
use crate::error::Error;
use crate::extent::{self, Extent};
use crate::fs::{self, FsInfo, FsKind};
use crate::image::format::{hex, BackupKind, Catalog, CopyMode, ImageOptions, Region, RegionKind, SourceInfo};
use crate::image::volume::Output;
use crate::image::format::ChainInfo;
use crate::image::view::RegionView;
use crate::image::{ImageError, ImageReader, ImageWriter, WriterOptions};
use crate::inventory::{self, DiskReport};
use crate::part::{Partition, PartitionTable};
use crate::read_at::{ReadAt, Window};
use crate::task::Task;

/// What to back up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// Every partition, the table and the boot-loader gaps.
    Disk,
    /// The partitions needed to boot the OS found on the disk.
    System,
    /// These partition numbers.
    Partitions(Vec<u32>),
}

#[derive(Debug, Clone)]
pub struct BackupRequest {
    pub source: PathBuf,
    pub selection: Selection,
    pub sector_by_sector: bool,
    /// Sector size to assume when the source is a regular file.
    pub file_sector_size: Option<u32>,
    /// Where the image will be written (to refuse writing into a filesystem
    /// that is being backed up).
    pub output: Option<PathBuf>,
    /// Passphrases of LUKS partitions: an encrypted partition that one of
    /// them opens keeps only its header and the (still encrypted) sectors
    /// its filesystem uses; the others are copied sector by sector.
    pub luks_passphrases: crate::luks::Passphrases,
}

/// One region the backup will store.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedRegion {
    pub kind: RegionKind,
    pub partition: Option<u32>,
    pub disk_offset: u64,
    pub len: u64,
    pub fs: Option<FsInfo>,
    pub mode: CopyMode,
    pub mode_reason: Option<String>,
    /// Bytes that will be read.
    pub bytes: u64,
    #[serde(skip)]
    pub extents: Vec<Extent>,
}

/// The plan of a backup: shown by --dry-run, then executed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BackupPlan {
    pub source: DiskInfo,
    pub kind: BackupKind,
    pub sector_by_sector: bool,
    pub table: Option<PartitionTable>,
    pub regions: Vec<PlannedRegion>,
    /// Why each partition was chosen or left out (system backups).
    pub selection: Vec<String>,
    pub notes: Vec<String>,
}

impl BackupPlan {
    pub fn bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.bytes).sum()
    }
}

/// Gaps between partitions up to this size are stored whole; of larger ones
/// only the first and last MiB (EBRs and boot code live there).
const GAP_WHOLE: u64 = 16 << 20;
const GAP_EDGE: u64 = 1 << 20;

/// Choose the partitions of the OS on a disk. Returns (numbers, reasons).
pub fn select_system(report: &DiskReport) -> (Vec<u32>, Vec<String>) {
    let mut chosen = Vec::new();
    let mut why = Vec::new();
    let label_has = |p: &inventory::PartitionReport, words: &[&str]| {
        let l = p.fs.as_ref().and_then(|f| f.label.clone()).unwrap_or_default().to_lowercase();
        let n = p.partition.name.to_lowercase();
        words.iter().any(|w| l.contains(w) || n.contains(w))
    };
    let fs_kind = |p: &inventory::PartitionReport| p.fs.as_ref().map(|f| f.kind.clone());
    let mut windows_os = None;
    let mut linux: Vec<(u32, u64, bool)> = Vec::new(); // number, size, looks like /boot
    for p in &report.partitions {
        let n = p.partition.number;
        let t = &p.partition.ptype;
        let k = fs_kind(p);
        let reason = if t.is_extended() {
            None
        } else if t.is_esp() {
            Some("EFI system partition: holds the boot loaders".to_string())
        } else if t.is_bios_boot() {
            Some("BIOS boot partition: holds GRUB's core image".to_string())
        } else if t.is_msr() {
            Some("Microsoft reserved partition: Windows expects it on GPT disks".to_string())
        } else if t.is_windows_recovery() || (k == Some(FsKind::Ntfs) && label_has(p, &["recovery", "winre"])) {
            Some("Windows recovery environment".to_string())
        } else if k == Some(FsKind::Ntfs) && (label_has(p, &["system reserved"]) || (p.partition.bootable && p.partition.len <= 1536 << 20)) {
            Some("Windows boot partition (System Reserved: bootmgr and BCD)".to_string())
        } else if t.is_swap() || k == Some(FsKind::Swap) {
            Some("swap: only its header is kept; /etc/fstab usually names it".to_string())
        } else {
            match k {
                Some(FsKind::Ntfs) if windows_os.is_none() && !label_has(p, &["data"]) => {
                    windows_os = Some(n);
                    Some("first NTFS data partition: taken as the Windows system partition".to_string())
                }
                Some(FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4) => {
                    linux.push((n, p.partition.len, label_has(p, &["boot"]) || t.describe().contains("XBOOTLDR")));
                    None
                }
                Some(FsKind::Other(ref o)) if o == "xfs" || o == "btrfs" => {
                    linux.push((n, p.partition.len, false));
                    None
                }
                _ => None,
            }
        };
        if let Some(r) = reason {
            chosen.push(n);
            why.push(format!("partition {n}: {r}"));
        }
    }
    if let Some(&(n, _, _)) = linux.iter().find(|(_, _, boot)| *boot) {
        chosen.push(n);
        why.push(format!("partition {n}: Linux /boot (by its label or type)"));
    }
    if let Some(&(n, _, _)) = linux.iter().filter(|(_, _, boot)| !boot).max_by_key(|(_, len, _)| *len) {
        chosen.push(n);
        why.push(format!("partition {n}: largest Linux filesystem: taken as the root filesystem"));
    }
    for p in &report.partitions {
        let n = p.partition.number;
        if !chosen.contains(&n) && !p.partition.ptype.is_extended() {
            why.push(format!("partition {n}: left out (data, not needed to boot; back it up with `rescue backup part`)"));
        }
    }
    chosen.sort_unstable();
    (chosen, why)
}

/// The extents of an encrypted partition worth storing: the LUKS header
/// and keyslots (everything before the data), and the sectors under the
/// used blocks of the filesystem inside, rounded out to whole encryption
/// sectors. They are stored as they are on the disk, encrypted: the image
/// holds no plaintext, and a restore puts back a volume the same
/// passphrases open (XTS and CBC-ESSIV encrypt each sector on its own).
fn luks_used_extents(dev: &dyn ReadAt, len: u64, pass: &crate::luks::Passphrases) -> Result<(Vec<Extent>, String), String> {
    let vol = pass.open(dev, len).map_err(|e| e.to_string())?;
    let plain = crate::luks::Plain { volume: &vol, dev };
    let inner = fs::probe(&plain, vol.size).map_err(|e| format!("reading inside it: {e}"))?.ok_or("no filesystem recognised inside it")?;
    if !inner.kind.has_used_map() {
        return Err(format!("the {} inside has no used-block reader", inner.kind.name()));
    }
    let used = fs::used_extents(&plain, vol.size, &inner).map_err(|e| format!("the {} inside looks damaged ({e})", inner.kind.name()))?;
    let ss = u64::from(vol.sector_size());
    let off = vol.header.data_offset;
    let mut out = vec![Extent::new(0, off)];
    for e in used {
        let (a, b) = (e.start / ss * ss, e.end().div_ceil(ss) * ss);
        out.push(Extent::new(off + a, b.min(vol.size) - a));
    }
    let what = format!("encrypted (LUKS{}): its header and the sectors the {} inside uses, stored encrypted", vol.header.version, inner.kind.name());
    Ok((extent::normalize(out, len), what))
}

fn region_for_partition(dev: &dyn ReadAt, p: &Partition, fsi: Option<&FsInfo>, sector_by_sector: bool, luks: &crate::luks::Passphrases) -> PlannedRegion {
    let full = |reason: String| (CopyMode::Full, Some(reason), vec![Extent::new(0, p.len)]);
    let (mode, mode_reason, extents) = if sector_by_sector {
        full("sector by sector, as requested".into())
    } else {
        match fsi {
            None => full("no filesystem recognised: copied sector by sector".into()),
            Some(f) if f.is_luks() => {
                if luks.is_empty() {
                    full("encrypted (LUKS): copied sector by sector; with its passphrase (--luks-key-file) only the sectors its filesystem uses are stored".into())
                } else {
                    match luks_used_extents(&Window::new(dev, p.start, p.len), p.len, luks) {
                        Ok((ex, what)) => (CopyMode::Used, Some(what), ex),
                        Err(e) => full(format!("encrypted (LUKS), {e}: copied sector by sector")),
                    }
                }
            }
            Some(f) if !f.kind.has_used_map() => full(format!("{} has no used-block reader: copied sector by sector", f.kind.name())),
            Some(f) => {
                let w = Window::new(dev, p.start, p.len);
                match fs::used_extents(&w, p.len, f) {
                    Ok(ex) if f.kind == FsKind::Swap => (CopyMode::HeaderOnly, Some("swap: only its header is kept".into()), ex),
                    Ok(ex) => (CopyMode::Used, None, ex),
                    Err(e) => full(format!("{} looks damaged ({e}): copied sector by sector", f.kind.name())),
                }
            }
        }
    };
    PlannedRegion {
        kind: RegionKind::Partition,
        partition: Some(p.number),
        disk_offset: p.start,
        len: p.len,
        fs: fsi.cloned(),
        mode,
        mode_reason,
        bytes: extent::total(&extents),
        extents,
    }
}

fn raw_region(kind: RegionKind, start: u64, len: u64) -> PlannedRegion {
    PlannedRegion {
        kind,
        partition: None,
        disk_offset: start,
        len,
        fs: None,
        mode: CopyMode::Full,
        mode_reason: None,
        bytes: len,
        extents: vec![Extent::new(0, len)],
    }
}

/// Device number ("major:minor") of the filesystem holding `path` (or its
/// nearest existing parent).
fn fs_devnum_of(path: &Path) -> Option<String> {
    let mut p = Some(path);
    while let Some(cur) = p {
        if let Ok(m) = std::fs::metadata(cur) {
            return blockdev::fs_devnum(&m);
        }
        p = cur.parent().filter(|x| !x.as_os_str().is_empty()).or(if cur.is_relative() { Some(Path::new(".")) } else { None });
        if p == Some(cur) {
            break;
        }
    }
    None
}

/// Work out what a backup will store. Reads the table and the filesystems'
/// maps; writes nothing.
pub fn plan_backup(req: &BackupRequest) -> Result<BackupPlan, Error> {
    let src = SourceDisk::open(&req.source, req.file_sector_size)?;
    let report = inventory::inspect_open(&src.file, src.info.clone());
    if let Some(e) = &report.table_error {
        if !req.sector_by_sector || req.selection != Selection::Disk {
            return Err(Error::refused(
                format!("the partition table of {} cannot be read: {e}", req.source.display()),
                "back up the whole disk with --sector-by-sector, or repair the table first",
            ));
        }
    }
    let mut notes = Vec::new();
    let mut selection_why = Vec::new();
    let kind = match req.selection {
        Selection::Disk => BackupKind::Disk,
        Selection::System => BackupKind::System,
        Selection::Partitions(_) => BackupKind::Partitions,
    };
    let dev: &dyn ReadAt = &src.file;
    let mut regions = Vec::new();
    let table = report.table.clone();
    let wanted: Vec<u32> = match (&req.selection, &table) {
        (Selection::Disk, _) => table.iter().flat_map(|t| t.partitions.iter()).filter(|p| !p.ptype.is_extended()).map(|p| p.number).collect(),
        (Selection::System, Some(_)) => {
            let (n, why) = select_system(&report);
            selection_why = why;
            if n.is_empty() {
                return Err(Error::refused(
                    format!("no operating system partitions recognised on {}", req.source.display()),
                    "back up the whole disk (`rescue backup disk`) or name the partitions (`rescue backup part DISK:N,M`)",
                ));
            }
            n
        }
        (Selection::Partitions(list), Some(t)) => {
            for n in list {
                match t.partitions.iter().find(|p| p.number == *n) {
                    None => {
                        return Err(Error::refused(
                            format!("{} has no partition {n}", req.source.display()),
                            "run `rescue disks` to see the partition numbers",
                        ))
                    }
                    Some(p) if p.ptype.is_extended() => {
                        return Err(Error::refused(
                            format!("partition {n} is the extended container, not a filesystem"),
                            "name the logical partitions inside it (5, 6, ...)",
                        ))
                    }
                    _ => {}
                }
            }
            list.clone()
        }
        (_, None) => {
            return Err(Error::refused(
                format!("{} has no partition table", req.source.display()),
                "back up the whole disk with `rescue backup disk`",
            ))
        }
    };
    // Refuse to image filesystems that are being written to.
    if let Some(dn) = &src.info.devnum {
        if let Some(m) = blockdev::mounts().iter().find(|m| &m.devnum == dn && mount_is_rw(&m.mountpoint)) {
            return Err(Error::refused(
                format!("{} is mounted read-write on {}: its image would be inconsistent", req.source.display(), m.mountpoint),
                "unmount it (or remount it read-only) and run the backup again",
            ));
        }
    }
    for n in &wanted {
        if let Some(p) = report.partition(*n) {
            let rw_mounted = p.device.as_ref().is_some_and(|d| {
                let m = blockdev::mounts();
                let dn = blockdev::node_devnum(d);
                m.iter().any(|mm| Some(&mm.devnum) == dn.as_ref() && mount_is_rw(&mm.mountpoint))
            });
            if rw_mounted {
                return Err(Error::refused(
                    format!("partition {n} of {} is mounted read-write ({}): its image would be inconsistent", req.source.display(), p.mountpoints.join(", ")),
                    "unmount it (or remount it read-only) and run the backup again",
                ));
            }
            if let (Some(out), Some(d)) = (&req.output, &p.device) {
                let out_dev = fs_devnum_of(out);
                let part_dev = blockdev::node_devnum(d);
                if out_dev.is_some() && out_dev == part_dev {
                    return Err(Error::refused(
                        format!("the image would be written into partition {n}, which is being backed up"),
                        "write the image to another disk or partition",
                    ));
                }
            }
        }
    }
    if let Some(out) = &req.output {
        if src.info.kind == DiskKind::File {
            if let (Ok(a), Ok(b)) = (std::fs::canonicalize(&req.source), std::fs::canonicalize(out.parent().unwrap_or(Path::new(".")))) {
                if b.join(out.file_name().unwrap_or_default()) == a {
                    return Err(Error::refused("the output is the source itself", "choose another output name"));
                }
            }
        }
    }

    if req.sector_by_sector && kind == BackupKind::Disk {
        let mut r = raw_region(RegionKind::Disk, 0, src.info.size);
        r.mode_reason = Some("sector by sector, as requested".into());
        regions.push(r);
    } else if let Some(t) = &table {
        let parts: Vec<&Partition> = t.partitions.iter().filter(|p| !p.ptype.is_extended()).collect();
        if kind != BackupKind::Partitions {
            let first = t.partitions.iter().map(|p| p.start).min().unwrap_or(t.first_usable).min(src.info.size);
            let mut head = raw_region(RegionKind::Head, 0, first);
            head.mode_reason = Some("partition table, boot code and boot-loader gap".into());
            regions.push(head);
        }
        let mut prev_end: Option<u64> = None;
        for p in &parts {
            if kind == BackupKind::Disk {
                if let Some(pe) = prev_end {
                    if p.start > pe {
                        let gap = p.start - pe;
                        if gap <= GAP_WHOLE {
                            regions.push(raw_region(RegionKind::Gap, pe, gap));
                        } else {
                            regions.push(raw_region(RegionKind::Gap, pe, GAP_EDGE));
                            regions.push(raw_region(RegionKind::Gap, p.start - GAP_EDGE, GAP_EDGE));
                            notes.push(format!(
                                "{} of unpartitioned space before partition {} not stored (only its first and last MiB)",
                                blockdev::human_size(gap),
                                p.number
                            ));
                        }
                    }
                }
                prev_end = Some(prev_end.map_or(p.end(), |x: u64| x.max(p.end())));
            }
            if wanted.contains(&p.number) {
                let fsi = report.partition(p.number).and_then(|r| r.fs.clone());
                let r = region_for_partition(dev, p, fsi.as_ref(), req.sector_by_sector, &req.luks_passphrases);
                if let Some(why) = &r.mode_reason {
                    if (r.mode == CopyMode::Full && !req.sector_by_sector) || r.mode == CopyMode::Used {
                        notes.push(format!("partition {}: {why}", p.number));
                    }
                }
                regions.push(r);
            }
        }
    } else {
        // No partition table: a filesystem on the whole disk, or nothing known.
        let p = Partition {
            number: 0,
            start: 0,
            len: src.info.size,
            ptype: crate::part::PartType::Mbr(0),
            guid: None,
            name: String::new(),
            attributes: 0,
            bootable: false,
            logical: false,
        };
        let mut r = region_for_partition(dev, &p, report.whole_disk_fs.as_ref(), req.sector_by_sector, &req.luks_passphrases);
        r.kind = RegionKind::Disk;
        r.partition = None;
        if let Some(why) = &r.mode_reason {
            notes.push(format!("whole disk: {why}"));
        }
        regions.push(r);
    }
    Ok(BackupPlan {
        source: src.info,
        kind,
        sector_by_sector: req.sector_by_sector,
        table,
        regions,
        selection: selection_why,
        notes,
    })
}

fn mount_is_rw(mountpoint: &str) -> bool {
    let Ok(s) = std::fs::read_to_string("/proc/self/mountinfo") else { return true };
    s.lines().any(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        f.get(4).is_some_and(|m| *m == mountpoint) && f.get(5).is_some_and(|o| o.split(',').any(|x| x == "rw"))
    })
}

/// Result of a finished backup.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    pub paths: Vec<PathBuf>,
    pub catalog: Catalog,
    pub seconds: f64,
    /// Bytes of the image that were on the share already when an
    /// interrupted backup was resumed.
    pub resumed_from: Option<u64>,
}

/// A failure writing to a share says what is left there and how to go on.
fn cut_off(e: ImageError, share: Option<&Path>) -> Error {
    match (share, &e) {
        (Some(fin), ImageError::Io { .. }) => Error::Interrupted {
            detail: format!("writing the image to the share failed: {e}; what was written stays as {}.partial (never taken for an image)", fin.display()),
            hint: format!("{}; when the share is back, run the same backup again with --resume: it goes on from the last checkpoint", e.hint()),
        },
        _ => e.into(),
    }
}

/// Execute a backup plan.
pub fn run_backup(plan: &BackupPlan, out: Output, opts: WriterOptions, comment: Option<String>, task: &Task) -> Result<BackupOutcome, Error> {
    let w = ImageWriter::create(out, opts)?;
    run_backup_into(plan, w, None, false, None, comment, task)
}

/// Execute a backup plan into `w`. With `base` (a point of a chain, opened),
/// each region's unchanged chunks are referenced in the base instead of
/// stored; with `fast` too, the data of files whose inode or MFT record is
/// the same as in the base is not even read ([`crate::unchanged`]). `chain`
/// is recorded in the catalog.
pub fn run_backup_into(
    plan: &BackupPlan,
    mut w: ImageWriter,
    base: Option<&ImageReader>,
    fast: bool,
    chain: Option<ChainInfo>,
    comment: Option<String>,
    task: &Task,
) -> Result<BackupOutcome, Error> {
    let t0 = std::time::Instant::now();
    let src = SourceDisk::open(&plan.source.path, Some(plan.source.logical_sector_size))?;
    if src.info.size != plan.source.size {
        return Err(Error::refused(
            format!("{} changed size since the plan was made", plan.source.path.display()),
            "run the backup again",
        ));
    }
    let ss = plan.source.logical_sector_size.max(512) as usize;
    let mut sector0 = vec![0u8; ss];
    let sector0 = if src.info.size >= ss as u64 && src.file.read_exact_at(&mut sector0, 0).is_ok() { Some(hex(&sector0)) } else { None };
    let share = w.resumable().map(Path::to_path_buf);
    let compression = w.options().compression;
    let chunk_size = w.header().chunk_size;
    let mut notes = plan.notes.clone();
    for pr in &plan.regions {
        task.check_cancelled()?;
        let region = Region {
            id: 0,
            kind: pr.kind,
            partition: pr.partition,
            disk_offset: pr.disk_offset,
            len: pr.len,
            fs: pr.fs.clone(),
            mode: pr.mode,
            mode_reason: pr.mode_reason.clone(),
            used_bytes: 0,
            stored_bytes: 0,
            chunks: 0,
            zero_chunks: 0,
            base_chunks: 0,
            segments: Vec::new(),
        };
        let win = Window::new(&src.file, pr.disk_offset, pr.len);
        // The used blocks through the bulk reader (past the page cache when
        // the source is cold); the records compared below through the cache.
        let data = Window::new(src.data(), pr.disk_offset, pr.len);
        let base_region = base.and_then(|b| {
            b.catalog()
                .regions
                .iter()
                .find(|r| r.kind == pr.kind && r.partition == pr.partition && (pr.partition.is_some() || r.disk_offset == pr.disk_offset))
                .map(|r| (b, r))
        });
        let unchanged = match (base_region, pr.partition, pr.fs.as_ref()) {
            (Some((b, r)), Some(n), Some(fs)) if fast => {
                let t = std::time::Instant::now();
                let found = crate::unchanged::compare(&fs.kind, &RegionView::new(b, r), &win, pr.len);
                tracing::info!(partition = n, seconds = t.elapsed().as_secs_f64(), "compared filesystem records with the base point");
                match found {
                    Ok(u) => {
                        notes.push(format!(
                            "partition {n}: {} files ({}) unchanged by their {} since the base point were not read",
                            u.files,
                            blockdev::human_size(u.bytes),
                            if fs.kind == FsKind::Ntfs { "MFT records" } else { "inodes" }
                        ));
                        u.extents
                    }
                    Err(why) => {
                        notes.push(format!("partition {n}: read in full: {why}"));
                        Vec::new()
                    }
                }
            }
            _ => Vec::new(),
        };
        w.add_region_on(&data, region, &pr.extents, base_region, &unchanged, task).map_err(|e| cut_off(e, share.as_deref()))?;
    }
    let catalog = Catalog {
        format_version: 0,
        image_id: String::new(),
        header_hash: String::new(),
        created: 0,
        tool: format!("rescue {}", env!("CARGO_PKG_VERSION")),
        comment,
        kind: plan.kind,
        options: ImageOptions { compression, encrypted: false, sector_by_sector: plan.sector_by_sector, chunk_size, split_size: None },
        source: SourceInfo {
            path: plan.source.path.display().to_string(),
            model: plan.source.model.clone(),
            serial: plan.source.serial.clone(),
            wwn: plan.source.wwn.clone(),
            size: plan.source.size,
            logical_sector_size: plan.source.logical_sector_size,
            physical_sector_size: plan.source.physical_sector_size,
        },
        table: plan.table.clone(),
        sector0,
        regions: Vec::new(),
        selection: plan.selection.clone(),
        notes,
        chain,
    };
    let resumed_from = w.resumed_from();
    let (paths, catalog) = w.finish(catalog).map_err(|e| cut_off(e, share.as_deref()))?;
    Ok(BackupOutcome { paths, catalog, seconds: t0.elapsed().as_secs_f64(), resumed_from })
}
