//! The executor shared by restore and clone: runs a [`WritePlan`] against the
//! target disk in the order that keeps a crash recognisable.
//!
//! 1. open the target exclusively and re-check its identity;
//! 2. verify the source (for images: every stored byte of the regions used);
//!    then shrink the filesystems that must get smaller, each in a scratch
//!    file ([`crate::shrink`]), so a failure there leaves the target untouched;
//! 3. whole-disk plans: blank the partition-table sectors, so an interrupted
//!    run leaves a disk that looks empty rather than one with a valid table
//!    over half-written data;
//! 4. copy the partitions and gaps (shrunk ones from their scratch files);
//! 5. write the boot area and the new partition table last, sync, re-read;
//! 6. grow filesystems that got larger partitions.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::blockdev::{self, BlockError, DiskInfo, DiskKind, TargetDisk};
use crate::error::Error;
use crate::image::format::RegionKind;
use crate::image::ImageError;
use crate::inventory::DiskReport;
use crate::layout::{self, FsGrow, Layout, LayoutOptions, SrcLayout};
use crate::part::{self, PartitionTable};
use crate::read_at::{ReadAt, Window};
use crate::shrink::{self, Scratch};
use crate::task::Task;

/// What a restore or clone will do to the target. Shown by --dry-run, then
/// executed exactly.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WritePlan {
    /// "restore" or "clone".
    pub operation: String,
    /// The image path or the source disk, as the user named it.
    pub source: String,
    pub target: DiskInfo,
    /// When writing into one existing partition of a block device: its node,
    /// opened exclusively instead of the whole disk (other partitions may be in use).
    pub target_partition_device: Option<PathBuf>,
    /// Byte offset of `target_partition_device` on the disk.
    pub target_partition_offset: u64,
    /// Whether the whole disk is rewritten (table included).
    pub whole_disk: bool,
    pub table_before: Option<PartitionTable>,
    #[serde(flatten)]
    pub layout: Layout,
    /// First sector of the source (boot code, MBR signature) for the new table.
    #[serde(skip)]
    pub sector0: Option<Vec<u8>>,
    /// Total bytes of data to write.
    pub bytes: u64,
    /// Where shrinking filesystems are staged (when any shrinks).
    #[serde(default)]
    pub scratch: Option<Scratch>,
    /// Changed-block mode: read the target and write only what differs
    /// (the result is the same as a full write).
    #[serde(default)]
    pub only_changed: bool,
}

/// Plan where `src` goes on the target: the whole disk (`source_partition`
/// None), or one source partition into partition `target_partition` or, when
/// that is None, into free space. Refuses targets whose users would be hurt.
pub fn plan_target(
    operation: &str,
    source: String,
    src: &SrcLayout,
    source_partition: Option<u32>,
    target_report: DiskReport,
    target_partition: Option<u32>,
    opts: &LayoutOptions,
) -> Result<WritePlan, Error> {
    let target = target_report.disk.clone();
    let busy = |reasons: Vec<String>| -> Result<(), Error> {
        if reasons.is_empty() {
            Ok(())
        } else {
            Err(BlockError::Busy { path: target.path.clone(), reasons: reasons.join("; ") }.into())
        }
    };
    let (layout, whole_disk, part_dev, part_off) = match source_partition {
        None => {
            busy(blockdev::busy_reasons(&target))?;
            (layout::whole_disk(src, &target, opts)?, true, None, 0)
        }
        Some(n) => {
            let r = src.regions.iter().find(|r| r.kind == RegionKind::Partition && r.partition == Some(n)).ok_or_else(|| {
                let have: Vec<String> = src.regions.iter().filter_map(|r| r.partition.map(|p| p.to_string())).collect();
                Error::refused(format!("the source holds no partition {n}"), format!("the source holds partitions: {}", have.join(", ")))
            })?;
            let sp = src.table.as_ref().and_then(|t| t.partitions.iter().find(|p| p.number == n));
            let l = layout::single_partition(r, sp, &target, target_report.table.as_ref(), target_partition, opts)?;
            match target_partition {
                Some(m) => {
                    let p = target_report.partition(m).ok_or_else(|| Error::refused(format!("no partition {m}"), "run `rescue disks`"))?;
                    busy(p.busy.iter().map(|b| format!("partition {m}: {b}")).collect())?;
                    (l, false, p.device.clone(), p.partition.start)
                }
                None => {
                    // A new partition: the table changes, so the whole disk must be free.
                    if target.kind == DiskKind::Block {
                        busy(blockdev::busy_reasons(&target))?;
                    }
                    (l, false, None, 0)
                }
            }
        }
    };
    let mut layout = layout;
    let scratch = if layout.shrinks.is_empty() {
        None
    } else {
        let s = shrink::plan_scratch(opts.scratch_dir.as_deref(), &layout, &target)?;
        layout.warnings.push(format!(
            "scratch files for shrinking go to {} (up to {} of {} free), deleted afterwards",
            s.dir.display(),
            blockdev::human_size(s.needed),
            blockdev::human_size(s.available)
        ));
        Some(s)
    };
    let bytes = layout.moves.iter().map(|m| m.bytes).sum();
    Ok(WritePlan {
        operation: operation.into(),
        source,
        target,
        target_partition_device: part_dev,
        target_partition_offset: part_off,
        whole_disk,
        table_before: target_report.table,
        layout,
        sector0: src.sector0.clone(),
        bytes,
        scratch,
        only_changed: false,
    })
}

/// Kinds of source regions, to order the writes.
pub trait RegionSource: Sync {
    fn region_kind(&self, region: u32) -> Option<RegionKind>;
    /// Check the source before the first write (image: stored bytes).
    fn verify(&self, regions: &[u32], task: &Task) -> Result<(), Error>;
    /// Give every byte of `region` to `write(region_offset, data)`.
    fn copy(&self, region: u32, write: &(dyn Fn(u64, &[u8]) -> io::Result<()> + Sync), task: &Task) -> Result<(), Error>;
    /// Check the source before a changed-block write: `items` are the
    /// regions and their places on the target. Default: the full check.
    fn verify_changed(&self, items: &[(u32, &dyn ReadAt)], task: &Task) -> Result<(), Error> {
        let ids: Vec<u32> = items.iter().map(|(r, _)| *r).collect();
        self.verify(&ids, task)
    }
    /// Like `copy`, but give only what differs from `target` (the region's
    /// place on the target, region-relative). `overwritten` lists
    /// region-relative byte ranges the restore has written since
    /// `verify_changed` (blanked table sectors): a source that remembered
    /// what differed must treat them as changed. This default compares bytes
    /// in 64 KiB blocks; sources that know their content's hashes do better.
    fn copy_changed(&self, region: u32, target: &dyn ReadAt, overwritten: &[(u64, u64)], write: &(dyn Fn(u64, &[u8]) -> io::Result<()> + Sync), task: &Task) -> Result<(), Error> {
        let _ = overwritten; // compared with the target as it is now
        const BLOCK: usize = 64 << 10;
        let w = |off: u64, data: &[u8]| -> io::Result<()> {
            let mut old = vec![0u8; BLOCK.min(data.len())];
            let mut at = 0usize;
            while at < data.len() {
                let n = BLOCK.min(data.len() - at);
                let cur = &mut old[..n];
                // Past the end of the target's window reads fail: write then.
                let same = target.read_exact_at(cur, off + at as u64).is_ok() && cur == &data[at..at + n];
                if !same {
                    write(off + at as u64, &data[at..at + n])?;
                }
                at += n;
            }
            Ok(())
        };
        self.copy(region, &w, task)
    }
}

/// What happened.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WriteOutcome {
    /// Data bytes written to the target (in changed-block mode: only what differed).
    pub bytes_written: u64,
    pub seconds: f64,
    pub notes: Vec<String>,
    /// Filesystems resized (shrunk or grown), one line each.
    pub grown: Vec<String>,
}

/// Whether the open file or folder `f` is the target, or lives on it (a
/// filesystem of the target, or of a loop device over the target file).
pub fn lies_on(target: &DiskInfo, f: &File) -> bool {
    let Ok(m) = f.metadata() else { return false };
    let id = blockdev::file_id(f);
    let parts = blockdev::partition_devices(target);
    let fsdev = blockdev::fs_devnum(&m).unwrap_or_default();
    let on_target = match target.kind {
        DiskKind::Block => target.devnum.as_deref() == Some(fsdev.as_str()) || parts.iter().any(|(_, _, dn)| *dn == fsdev),
        DiskKind::File => id.is_some() && target.file_id == id,
    };
    let backing = id.is_some() && target.loop_backing.as_deref().and_then(blockdev::file_id_of_path) == id;
    // On a filesystem of a loop device whose backing file is the target.
    let via_loop = target.kind == DiskKind::File
        && blockdev::loops_backed_by(target.file_id.unwrap_or((0, 0))).iter().any(|l| {
            blockdev::probe_disk(l, None).ok().is_some_and(|li| {
                li.devnum.as_deref() == Some(fsdev.as_str()) || blockdev::partition_devices(&li).iter().any(|(_, _, dn)| *dn == fsdev)
            })
        });
    // Windows: a raw disk target holds the image when the volume the image
    // is on has an extent on that disk.
    #[cfg(windows)]
    let on_target = on_target || (target.kind == DiskKind::Block && volume_on_disk(target, f));
    on_target || backing || via_loop
}

/// Windows: whether the volume holding the open file `f` lies (partly) on the
/// disk `target` (`\\.\PhysicalDriveN`). When the volume cannot be named
/// (network share) it lies on no local disk.
#[cfg(windows)]
fn volume_on_disk(target: &DiskInfo, f: &File) -> bool {
    let disk = match blockdev::sys::disk_number(&target.path) {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(device = %target.path.display(), "no disk number: {e}");
            return false;
        }
    };
    match blockdev::sys::disks_holding_file(f) {
        Ok(disks) => disks.contains(&disk),
        Err(e) => {
            tracing::debug!(device = %target.path.display(), "volume of the image unknown: {e}");
            false
        }
    }
}

/// Refuse when an image volume lives on the target (or is the target).
pub fn refuse_if_target_holds(target: &DiskInfo, files: &[(PathBuf, &File)]) -> Result<(), Error> {
    for (path, f) in files {
        if lies_on(target, f) {
            return Err(Error::refused(
                format!("{} holds the image being read ({})", target.path.display(), path.display()),
                "copy the image to another disk first, or choose another target",
            ));
        }
    }
    Ok(())
}

/// Run `plan`, reading from `src`.
pub fn execute(plan: &WritePlan, src: &dyn RegionSource, task: &Task) -> Result<WriteOutcome, Error> {
    let t0 = std::time::Instant::now();
    // 1. Exclusive open and identity.
    let (target, base) = match &plan.target_partition_device {
        Some(dev) => (TargetDisk::open(dev, None)?, plan.target_partition_offset),
        None => {
            let t = TargetDisk::open(&plan.target.path, Some(plan.target.logical_sector_size))?;
            t.check_identity(&plan.target)?;
            (t, 0)
        }
    };
    if plan.target_partition_device.is_some() {
        let disk = blockdev::probe_disk(&plan.target.path, None)?;
        if disk.size != plan.target.size || disk.serial != plan.target.serial || disk.wwn != plan.target.wwn {
            return Err(blockdev::BlockError::IdentityChanged { path: plan.target.path.clone(), what: "size or serial".into() }.into());
        }
    }
    let tsize = if plan.target_partition_device.is_some() { target.info.size } else { plan.target.size };
    // 2. Verify the source.
    let ids: Vec<u32> = plan.layout.moves.iter().map(|m| m.region).collect();
    if plan.only_changed {
        // Only what differs on the target will be read: check just that.
        // Read past the page cache when the target is cold, several reads
        // in flight (`TargetDisk::data`).
        let windows: Vec<(u32, Window<blockdev::DataReader>)> = plan
            .layout
            .moves
            .iter()
            .map(|m| {
                let rel = m.target_offset.saturating_sub(base);
                (m.region, Window::new(target.data(), rel, m.len.min(tsize.saturating_sub(rel))))
            })
            .collect();
        let items: Vec<(u32, &dyn ReadAt)> = windows.iter().map(|(r, w)| (*r, w as &dyn ReadAt)).collect();
        src.verify_changed(&items, task).map_err(|e| source_failed(e, format!("nothing was written to {}", plan.target.path.display())))?;
    } else {
        src.verify(&ids, task).map_err(|e| source_failed(e, format!("nothing was written to {}", plan.target.path.display())))?;
    }
    task.check_cancelled()?;
    // 2b. Shrink into scratch files; they are deleted when `shrunk` drops.
    let mut shrunk: std::collections::BTreeMap<u32, shrink::Shrunk> = std::collections::BTreeMap::new();
    let mut notes = Vec::new();
    if !plan.layout.shrinks.is_empty() {
        let scratch = plan.scratch.clone().unwrap_or_else(|| Scratch { dir: shrink::DEFAULT_SCRATCH_DIR.into(), needed: shrink::scratch_needed(&plan.layout), available: 0 });
        shrink::recheck(&scratch, &plan.target)?;
        for s in &plan.layout.shrinks {
            task.check_cancelled()?;
            let sh = shrink::shrink(src, s, &scratch.dir, task)?;
            notes.extend(sh.notes.iter().cloned());
            shrunk.insert(s.region, sh);
        }
    }
    let f = &target.file;
    let write_abs = |abs: u64, data: &[u8]| -> io::Result<()> {
        let rel = abs.checked_sub(base).ok_or_else(|| io::Error::other(format!("write at byte {abs} lies before the target partition")))?;
        if rel + data.len() as u64 > tsize {
            return Err(io::Error::other(format!("write at byte {abs} ({} bytes) lies past the end of the target", data.len())));
        }
        f.write_all_at(data, rel)
    };
    let data_written = std::sync::atomic::AtomicU64::new(0);
    let mut written = 0u64;
    // 3. Blank the table sectors (whole disk only).
    let table_writes = match (&plan.layout.table_after, plan.layout.writes_table) {
        (Some(t), true) => Some(part::serialize(t, plan.target.size, plan.sector0.as_deref())?),
        _ => None,
    };
    // Absolute byte ranges blanked below (a changed-block restore must
    // rewrite whatever of its regions they touch).
    let mut blanked: Vec<(u64, u64)> = Vec::new();
    if plan.whole_disk {
        let mut blank: Vec<(u64, u64)> = Vec::new();
        let ss = u64::from(plan.target.logical_sector_size);
        blank.push((0, ss * 2));
        if plan.target.size >= ss * 2 {
            blank.push((plan.target.size - ss, ss));
        }
        if let Some(t) = &plan.layout.table_after {
            blank.extend(part::table_extents(t, plan.target.size).iter().map(|e| (e.start, e.len)));
        }
        blanked.clone_from(&blank);
        for (off, len) in blank {
            write_abs(off, &vec![0u8; len as usize]).map_err(Error::io(format!("blanking the partition table of {}", plan.target.path.display())))?;
        }
        f.sync_data().map_err(Error::io("syncing the target"))?;
    }
    // 4. Data regions, then 5. the boot area.
    let total: u64 = plan.layout.moves.iter().map(|m| m.len).sum();
    let _ = total;
    let (heads, rest): (Vec<_>, Vec<_>) = plan.layout.moves.iter().partition(|m| src.region_kind(m.region) == Some(RegionKind::Head));
    for m in rest.iter().chain(heads.iter()) {
        task.check_cancelled()?;
        let limit = m.len;
        let to = m.target_offset;
        let w = |off: u64, data: &[u8]| -> io::Result<()> {
            if off >= limit {
                return Ok(());
            }
            let n = ((limit - off) as usize).min(data.len());
            data_written.fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
            write_abs(to + off, &data[..n])
        };
        match shrunk.get(&m.region) {
            Some(sh) => {
                let n = plan.layout.shrinks.iter().find(|s| s.region == m.region).map_or(0, |s| s.partition);
                shrink::copy_out(sh, n, &w, task).map_err(|e| annotate_target_state(e, plan, written))?;
            }
            None if plan.only_changed => {
                let rel = to.checked_sub(base).ok_or_else(|| Error::refused("the region lies before the target partition", "this is a bug: report it"))?;
                let window = Window::new(target.data(), rel, limit.min(tsize.saturating_sub(rel)));
                let overwritten: Vec<(u64, u64)> = blanked
                    .iter()
                    .filter_map(|&(off, len)| {
                        let (s, e) = (off.max(to), (off + len).min(to + limit));
                        (s < e).then(|| (s - to, e - to))
                    })
                    .collect();
                src.copy_changed(m.region, &window, &overwritten, &w, task).map_err(|e| annotate_target_state(e, plan, written))?
            }
            None => src.copy(m.region, &w, task).map_err(|e| annotate_target_state(e, plan, written))?,
        }
        written += m.bytes;
    }
    if let Some(ws) = &table_writes {
        for w in ws {
            write_abs(w.offset, &w.data).map_err(Error::io(format!("writing the partition table of {}", plan.target.path.display())))?;
        }
    }
    // Wipe a stale GPT backup header left at the end of a disk that now has MBR.
    if plan.whole_disk {
        if let Some(t) = &plan.layout.table_after {
            let ss = u64::from(plan.target.logical_sector_size);
            let last = plan.target.size / ss * ss - ss;
            if t.kind == part::TableKind::Mbr && !t.partitions.iter().any(|p| p.start <= last && last < p.end()) {
                write_abs(last, &vec![0u8; ss as usize]).map_err(Error::io("clearing the old GPT backup header"))?;
            }
        }
    }
    drop(shrunk);
    notes.extend(target.sync_and_reread()?);
    drop(target);

    // 6. Grow filesystems.
    let mut grown: Vec<String> = plan
        .layout
        .shrinks
        .iter()
        .map(|s| format!("partition {}: {} shrunk from {} to {}", s.partition, s.fs, blockdev::human_size(s.from), blockdev::human_size(s.to)))
        .collect();
    for g in plan.layout.grows.iter().filter(|g| g.grows) {
        match grow_fs(&plan.target.path, g) {
            Ok(msg) => grown.push(msg),
            Err(e) => notes.push(format!("partition {}: {} was not grown: {e}", g.partition, g.fs)),
        }
    }
    let bytes_written = if plan.only_changed { data_written.into_inner() } else { written };
    Ok(WriteOutcome { bytes_written, seconds: t0.elapsed().as_secs_f64(), notes, grown })
}

/// A read of the image failed (e.g. its web server went away): say so, and
/// the target's state, keeping the store's hint. Other errors pass unchanged.
fn source_failed(e: Error, state: String) -> Error {
    match e {
        Error::Image(ie @ ImageError::Io { .. }) => {
            Error::Interrupted { detail: format!("reading the image failed: {ie}; {state}"), hint: format!("{}; then run the same restore again with --resume (only what is missing is fetched)", ie.hint()) }
        }
        other => other,
    }
}

fn annotate_target_state(e: Error, plan: &WritePlan, written: u64) -> Error {
    let state = if plan.whole_disk {
        format!(
            "{} is incomplete: its partition table was cleared and {written} bytes of data were written; it holds no usable system until a restore completes",
            plan.target.path.display()
        )
    } else {
        format!("the target partition on {} is incomplete and its filesystem unusable until a restore completes", plan.target.path.display())
    };
    match e {
        Error::Cancelled => Error::Refused {
            reason: format!("cancelled: {state}"),
            hint: if plan.operation == "clone" { "run the clone again to complete it".into() } else { "run the same restore again with --resume to complete it (what was written is kept)".into() },
        },
        Error::Image(ie) if ie.is_verification_failure() => Error::Verify(format!("{ie}; {state}")),
        e @ Error::Image(ImageError::Io { .. }) => source_failed(e, state),
        other => Error::Tool { cmd: "restore".into(), detail: format!("{other}; {state}") },
    }
}

/// Wait (bounded) until no process has `needle` on its command line: a FUSE
/// driver (ntfs-3g) goes on flushing after `umount` returns, and the device
/// under it must stay until it has.
pub fn wait_for_process_using(needle: &Path, limit: std::time::Duration) {
    let needle = needle.as_os_str().as_encoded_bytes().to_vec();
    let t0 = std::time::Instant::now();
    while t0.elapsed() < limit {
        let busy = std::fs::read_dir("/proc").into_iter().flatten().flatten().any(|e| {
            std::fs::read(e.path().join("cmdline")).is_ok_and(|c| c.split(|b| *b == 0).any(|arg| arg == needle.as_slice()))
        });
        if !busy {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// A loop device over a byte range of a disk or file, detached on drop.
#[derive(Debug)]
pub struct LoopDevice {
    pub path: PathBuf,
}

impl LoopDevice {
    pub fn attach(backing: &Path, offset: u64, size: u64) -> Result<Self, Error> {
        Self::attach_with(backing, offset, size, false)
    }

    /// A read-only loop device: nothing written through it reaches the backing file.
    pub fn attach_read_only(backing: &Path, offset: u64, size: u64) -> Result<Self, Error> {
        Self::attach_with(backing, offset, size, true)
    }

    fn attach_with(backing: &Path, offset: u64, size: u64, read_only: bool) -> Result<Self, Error> {
        let out = Command::new("losetup")
            .args(["--find", "--show", "--offset", &offset.to_string(), "--sizelimit", &size.to_string()])
            .args(if read_only { &["--read-only"][..] } else { &[][..] })
            .arg(backing)
            .output()
            .map_err(|e| Error::Tool { cmd: "losetup".into(), detail: format!("{e} (is util-linux installed and are you root?)") })?;
        if !out.status.success() {
            return Err(Error::Tool { cmd: "losetup".into(), detail: String::from_utf8_lossy(&out.stderr).trim().to_string() });
        }
        Ok(Self { path: PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()) })
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // What a tool wrote through the device may still sit in the device's
        // page cache: the kernel writes it to the backing file at the last
        // close, but while anything else has the device open (udev's probe,
        // a disk scan) the detach waits for that, and a caller reading the
        // backing file next (the shrink path lays a resized scratch file
        // down) would miss those writes. Flush them now.
        if let Ok(f) = std::fs::File::open(&self.path) {
            let _ = f.sync_all();
        }
        for _ in 0..10 {
            if Command::new("losetup").arg("-d").arg(&self.path).status().is_ok_and(|s| s.success()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    }
}

fn run(cmd: &mut Command) -> Result<String, Error> {
    let name = format!("{:?}", cmd.get_program());
    let out = cmd.output().map_err(|e| Error::Tool { cmd: name.clone(), detail: e.to_string() })?;
    if !out.status.success() {
        let mut d = String::from_utf8_lossy(&out.stderr).trim().to_string();
        if d.is_empty() {
            d = String::from_utf8_lossy(&out.stdout).trim().to_string();
        }
        return Err(Error::Tool { cmd: name, detail: format!("{}: {}", out.status, d.lines().last().unwrap_or("")) });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Grow the filesystem of one partition to its new size.
fn grow_fs(disk: &Path, g: &FsGrow) -> Result<String, Error> {
    if !cfg!(target_os = "linux") {
        return Err(Error::Tool {
            cmd: "grow".into(),
            detail: format!("growing {} of partition {} is not supported on this system yet (it needs a Linux loop device); grow it from the Linux rescue system", g.fs, g.partition),
        });
    }
    let lo = LoopDevice::attach(disk, g.offset, g.to)?;
    match g.fs.as_str() {
        "ext2" | "ext3" | "ext4" => {
            // e2fsck exits 1 when it fixed something: that is fine here.
            let st = Command::new("e2fsck").args(["-f", "-y"]).arg(&lo.path).output().map_err(|e| Error::Tool { cmd: "e2fsck".into(), detail: e.to_string() })?;
            if st.status.code().is_none_or(|c| c > 1) {
                return Err(Error::Tool { cmd: "e2fsck".into(), detail: String::from_utf8_lossy(&st.stdout).lines().last().unwrap_or("").to_string() });
            }
            run(Command::new("resize2fs").arg(&lo.path))?;
        }
        "ntfs" => {
            run(Command::new("ntfsresize").args(["--force", "--force", "--no-progress-bar"]).arg(&lo.path))?;
        }
        other => return Err(Error::Tool { cmd: "grow".into(), detail: format!("no grow tool for {other}") }),
    }
    Ok(format!("partition {}: {} grown from {} to {}", g.partition, g.fs, blockdev::human_size(g.from), blockdev::human_size(g.to)))
}

#[cfg(all(test, target_os = "linux"))]
mod loop_tests {
    use super::LoopDevice;
    use std::io::{Read, Write};

    /// What is written through the device is in the backing file once the
    /// device is dropped, even while something else holds the device open
    /// (the kernel would otherwise write it back only at the last close).
    #[test]
    fn writes_through_a_loop_device_reach_the_file_while_it_is_held_open() {
        use std::os::unix::fs::MetadataExt;
        if std::fs::metadata("/proc/self").map(|m| m.uid()).unwrap_or(1) != 0 {
            eprintln!("SKIPPED: loop devices need root");
            return;
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("backing.img");
        std::fs::File::create(&file).and_then(|f| f.set_len(4 << 20)).expect("backing file");
        let lo = LoopDevice::attach(&file, 1 << 20, 2 << 20).expect("losetup");
        let holder = std::fs::File::open(&lo.path).expect("open the device");
        std::fs::OpenOptions::new().write(true).open(&lo.path).and_then(|mut d| d.write_all(b"written through the loop device")).expect("write");
        drop(lo);
        let mut got = vec![0u8; 31];
        let mut f = std::fs::File::open(&file).expect("backing file");
        std::io::Seek::seek(&mut f, std::io::SeekFrom::Start(1 << 20)).expect("seek");
        f.read_exact(&mut got).expect("read");
        drop(holder);
        assert_eq!(&got, b"written through the loop device");
    }
}
