//! Where each source region lands on a target disk: keep, fill (grow
//! partitions proportionally into a larger disk), shrink (ext2/3/4 and NTFS
//! filesystems made smaller so a smaller disk holds them), alignment and
//! partition-table conversion ([`convert`]), for whole-disk and
//! single-partition writes. Shared by restore and clone.
//!
//! Shrinking is planned from the filesystems' own used-space accounting (the
//! catalog's `used`) plus a margin; the executor checks it with the resize
//! tool before anything is written (see [`crate::shrink`]). FAT, EFI system,
//! MSR, recovery, BIOS boot and swap partitions keep their size.

mod convert;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

pub use convert::{equivalent_type, PartNumber, TableConversion};

use crate::blockdev::{human_size, DiskInfo};
use crate::error::Error;
use crate::fs::{FsInfo, FsKind};
use crate::image::format::RegionKind;
use crate::part::{self, PartType, Partition, PartitionTable, TableKind};

const MIB: u64 = 1 << 20;

/// Partition sizes on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LayoutMode {
    /// Same sizes as the source (smaller where the target needs it).
    #[default]
    Keep,
    /// Grow the data partitions proportionally to use a larger target.
    Fill,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(default)]
pub struct LayoutOptions {
    pub mode: LayoutMode,
    /// Move partition starts to multiples of this many bytes (SSD alignment).
    pub align: Option<u64>,
    /// Partition-table kind of a whole-disk target; None keeps the source's.
    pub table: Option<TableKind>,
    /// Folder for the scratch files of shrinking filesystems; None: /var/tmp.
    pub scratch_dir: Option<PathBuf>,
    /// Manual sizes of a whole-disk target, by the image's partition number
    /// (bytes; rounded down to the alignment unit). Smaller than the source:
    /// an ext2/3/4 or NTFS filesystem is shrunk (never below what it holds);
    /// larger: the filesystem is grown. With `Fill`, the partitions without
    /// a size share the rest of the disk.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub sizes: BTreeMap<u32, u64>,
}

/// A source region as the planner sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct SrcRegion {
    pub id: u32,
    pub kind: RegionKind,
    pub partition: Option<u32>,
    pub disk_offset: u64,
    pub len: u64,
    pub fs: Option<FsInfo>,
    /// Bytes of data to write.
    pub bytes: u64,
}

/// The source side of a layout: a disk or an image's catalog.
#[derive(Debug, Clone, PartialEq)]
pub struct SrcLayout {
    pub size: u64,
    pub sector_size: u32,
    pub table: Option<PartitionTable>,
    pub sector0: Option<Vec<u8>>,
    pub regions: Vec<SrcRegion>,
}

/// One region copied to the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegionMove {
    pub region: u32,
    pub label: String,
    pub source_offset: u64,
    pub target_offset: u64,
    /// Bytes of the region written (less than the region when it shrinks).
    pub len: u64,
    pub bytes: u64,
}

/// A filesystem to grow after its partition was enlarged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsGrow {
    pub partition: u32,
    pub fs: String,
    /// Byte offset of the partition on the target.
    pub offset: u64,
    pub from: u64,
    pub to: u64,
    /// What will be done: the tool, or why nothing.
    pub action: String,
    /// False when the filesystem stays at its size.
    pub grows: bool,
}

/// A filesystem made smaller so it fits the target. The executor restores
/// (or clones) it into a sparse scratch file, shrinks it there and copies the
/// result: the source is never written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FsShrink {
    /// The source region.
    pub region: u32,
    /// Partition number on the target.
    pub partition: u32,
    /// Partition number on the source.
    pub source_partition: u32,
    pub fs: String,
    /// Byte offset of the partition on the target.
    pub offset: u64,
    /// Bytes in use, by the filesystem's own accounting.
    pub used: u64,
    /// The smallest size the planner would give it (used plus a margin).
    pub min: u64,
    pub from: u64,
    pub to: u64,
    /// The steps, for the plan.
    pub action: String,
}

/// The computed layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub table_after: Option<PartitionTable>,
    pub moves: Vec<RegionMove>,
    pub grows: Vec<FsGrow>,
    #[serde(default)]
    pub shrinks: Vec<FsShrink>,
    /// Set when the partition table changes kind (GPT <-> MBR).
    #[serde(default)]
    pub conversion: Option<TableConversion>,
    /// Whether the partition table is (re)written.
    pub writes_table: bool,
    pub warnings: Vec<String>,
}

pub fn label(kind: RegionKind, partition: Option<u32>, offset: u64) -> String {
    match (kind, partition) {
        (RegionKind::Partition, Some(n)) => format!("partition {n}"),
        (RegionKind::Head, _) => "partition table and boot area".into(),
        (RegionKind::Gap, _) => format!("boot-loader gap at byte {offset}"),
        (RegionKind::Disk, _) => "whole disk".into(),
        _ => format!("region at byte {offset}"),
    }
}

fn align_up(x: u64, a: u64) -> u64 {
    x.div_ceil(a) * a
}

fn align_down(x: u64, a: u64) -> u64 {
    x / a * a
}

/// Largest end of a table of `kind` on a disk of `size` bytes: GPT keeps
/// its backup entry array and header in the last sectors; MBR's 32-bit LBAs
/// reach 2 TiB with 512-byte sectors.
fn usable_end(t: &PartitionTable, size: u64) -> u64 {
    let ss = u64::from(t.sector_size);
    match t.kind {
        TableKind::Gpt => {
            let arr = (u64::from(t.max_entries) * 128).max(16384).div_ceil(ss) * ss;
            (size / ss * ss).saturating_sub(ss + arr)
        }
        TableKind::Mbr => (size / ss * ss).min(mbr_limit(t.sector_size)),
    }
}

fn mbr_limit(sector_size: u32) -> u64 {
    u64::from(u32::MAX) * u64::from(sector_size)
}

/// Whether the planner can change a partition's size (ext2/3/4 or NTFS on a
/// data partition): what a size editor may offer.
pub fn resizable(p: &Partition, fs: Option<&FsInfo>) -> bool {
    !fixed_size(p, fs)
}

fn fixed_size(p: &Partition, fs: Option<&FsInfo>) -> bool {
    let t = &p.ptype;
    if t.is_esp() || t.is_msr() || t.is_bios_boot() || t.is_windows_recovery() || t.is_swap() || t.is_extended() {
        return true;
    }
    !matches!(fs.map(|f| &f.kind), Some(FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Ntfs))
}

/// The smallest partition the planner gives a filesystem with `used` bytes
/// in use: a tenth more, at least 16 MiB more (journal, metadata the resize
/// tool adds, room to boot), in whole `unit`s. resize2fs -P / ntfsresize
/// --info check it at execution.
pub fn min_shrunk_size(used: u64, unit: u64) -> u64 {
    align_up(used + (used / 10).max(16 * MIB), unit)
}

/// The planned minimum of a shrinkable filesystem, or None when it keeps its size.
fn shrink_floor(p: Option<&Partition>, fs: Option<&FsInfo>, len: u64, unit: u64) -> Option<u64> {
    let f = fs?;
    let fixed = match p {
        Some(p) => fixed_size(p, Some(f)),
        None => !matches!(f.kind, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Ntfs),
    };
    if fixed {
        return None;
    }
    Some(min_shrunk_size(f.used?, unit).min(len))
}

fn shrink_action(fs: &str, to: u64) -> String {
    match fs {
        "ntfs" => format!("restore into a scratch file, ntfsresize to {}, ntfsfix -n, copy", human_size(to)),
        _ => format!("restore into a scratch file, e2fsck -fy, resize2fs to {}, e2fsck -fn, copy", human_size(to)),
    }
}

fn grow_action(fs: Option<&FsInfo>) -> (String, bool) {
    match fs.map(|f| &f.kind) {
        Some(FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4) => ("e2fsck -fy, then resize2fs to fill the partition".into(), true),
        Some(FsKind::Ntfs) => ("ntfsresize to fill the partition".into(), true),
        Some(FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32) => ("FAT stays at its size (no safe FAT grow); the partition is larger".into(), false),
        Some(k) => (format!("{} stays at its size: grow it from the running system", k.name()), false),
        None => ("no filesystem recognised: nothing to grow".into(), false),
    }
}

fn kind_name(k: TableKind) -> &'static str {
    match k {
        TableKind::Gpt => "GPT",
        TableKind::Mbr => "MBR",
    }
}

/// Whole-disk layout of `src` on `target`.
pub fn whole_disk(src: &SrcLayout, target: &DiskInfo, opts: &LayoutOptions) -> Result<Layout, Error> {
    let mut warnings = Vec::new();
    let tss = target.logical_sector_size;
    let Some(table0) = &src.table else {
        if opts.table.is_some() {
            return Err(Error::refused("the source has no partition table, so there is none to convert", "leave out --table"));
        }
        // No table: regions go where they were.
        let end = src.regions.iter().map(|r| r.disk_offset + r.len).max().unwrap_or(0);
        if end > target.size {
            return Err(too_small(end, target, "choose a larger target disk (a disk without a partition table is copied as it is)"));
        }
        if opts.mode == LayoutMode::Fill || opts.align.is_some() {
            warnings.push("the source has no partition table: --layout and --align do not apply".into());
        }
        let moves = src.regions.iter().map(|r| mv(r, r.disk_offset)).collect();
        return Ok(Layout { table_after: None, moves, grows: Vec::new(), shrinks: Vec::new(), conversion: None, writes_table: false, warnings });
    };
    // Sector-size translation.
    let mut table = if table0.sector_size != tss {
        let t = part::translate(table0, tss).map_err(|e| {
            Error::refused(
                format!("the image comes from a {}-byte-sector disk and its partition table cannot be translated to {tss}-byte sectors: {e}", table0.sector_size),
                "restore onto a disk with the same sector size, or restore single partitions with --part",
            )
        })?;
        warnings.push(format!(
            "partition table translated from {}-byte to {tss}-byte sectors (same byte offsets)",
            table0.sector_size
        ));
        t
    } else {
        table0.clone()
    };
    let converting = opts.table.filter(|k| *k != table.kind);
    let disk_region = src.regions.iter().find(|r| r.kind == RegionKind::Disk);
    if let Some(d) = disk_region {
        if let Some(k) = converting {
            return Err(Error::refused(
                format!("a sector-by-sector disk image keeps its {} partition table as it is: it cannot be converted to {}", kind_name(table.kind), kind_name(k)),
                "restore without --table, or back up in used-blocks mode (without --sector-by-sector) to convert",
            ));
        }
        // Sector by sector: the disk as it was; only the GPT backup moves.
        if d.len > target.size {
            return Err(too_small(
                d.len,
                target,
                "choose a larger target disk: a sector-by-sector disk image keeps every partition's size (a used-blocks backup can be restored to a smaller disk)",
            ));
        }
        if opts.mode == LayoutMode::Fill || opts.align.is_some() {
            warnings.push("sector-by-sector image: partitions keep their places (--layout/--align ignored)".into());
        }
        let writes_table = table.kind == TableKind::Gpt && (target.size != src.size || table0.sector_size != tss);
        if table0.sector_size != tss {
            warnings.push("the filesystems keep their original sector size inside the partitions".into());
        }
        return Ok(Layout {
            table_after: Some(table),
            moves: vec![mv(d, 0)],
            grows: Vec::new(),
            shrinks: Vec::new(),
            conversion: None,
            writes_table,
            warnings,
        });
    }
    // Partitions that the image holds (and the MBR extended container around
    // any logical ones).
    let has_region = |n: u32| src.regions.iter().any(|r| r.kind == RegionKind::Partition && r.partition == Some(n));
    let any_logical = table.partitions.iter().any(|p| p.logical && has_region(p.number));
    table.partitions.retain(|p| has_region(p.number) || (p.ptype.is_extended() && any_logical));
    let src_fs = |n: u32| src.regions.iter().find(|r| r.partition == Some(n)).and_then(|r| r.fs.clone());
    // Conversion: the new table keeps the source positions; numbers may change.
    let mut conversion: Option<TableConversion> = None;
    if let Some(k) = converting {
        let c = convert::convert(&table, k, &src_fs, src.sector0.as_deref())?;
        warnings.push(format!("partition table converted from {} to {}", kind_name(table.kind), kind_name(k)));
        warnings.extend(c.info.dropped.iter().cloned());
        let renumbered: Vec<String> = c.info.numbers.iter().filter(|x| x.source != x.target).map(|x| format!("{} -> {}", x.source, x.target)).collect();
        if !renumbered.is_empty() {
            warnings.push(format!("partition numbers change ({}): update /etc/fstab entries that name devices by number", renumbered.join(", ")));
        }
        warnings.push(format!("boot: {}", c.info.boot));
        table = c.table;
        conversion = Some(c.info);
    }
    let dst_of = |n: u32| -> Option<u32> {
        match &conversion {
            Some(c) => c.numbers.iter().find(|x| x.source == n).map(|x| x.target),
            None => Some(n),
        }
    };
    let src_of = |n: u32| -> u32 { conversion.as_ref().and_then(|c| c.numbers.iter().find(|x| x.target == n)).map_or(n, |x| x.source) };
    let fs_of = |n: u32| src_fs(src_of(n));
    let end_limit = usable_end(&table, target.size);
    if table.kind == TableKind::Mbr && target.size / u64::from(tss) * u64::from(tss) > end_limit {
        warnings.push(format!(
            "MBR addresses only the first {} of this {} disk (32-bit sector numbers): the rest stays unused",
            human_size(end_limit),
            human_size(target.size)
        ));
    }
    // Fill without --align keeps 1 MiB alignment when the source had it.
    let mib_aligned = table.partitions.iter().filter(|p| !p.ptype.is_extended()).all(|p| p.start % MIB == 0);
    let aligning = opts.align.is_some() || opts.mode == LayoutMode::Fill;
    let default_align = if opts.mode == LayoutMode::Fill && mib_aligned { MIB } else { u64::from(tss) };
    let align = opts.align.unwrap_or(default_align).max(u64::from(tss));
    if align % u64::from(tss) != 0 {
        return Err(Error::refused(format!("alignment {align} is not a multiple of the sector size {tss}"), "use --align 1MiB"));
    }
    // Where a logical partition moves when its EBR has no room, and the step
    // of shrunk sizes (whole filesystem blocks, keeping 1 MiB alignment).
    let ebr_step = if aligning { align } else if mib_aligned { MIB } else { u64::from(tss) };
    let unit = if mib_aligned { MIB } else { align.max(4096) };
    // New positions, in start order; logical partitions keep room for their EBR.
    let order: Vec<usize> = {
        let mut v: Vec<usize> = (0..table.partitions.len()).filter(|&i| !table.partitions[i].ptype.is_extended()).collect();
        v.sort_by_key(|&i| table.partitions[i].start);
        v
    };
    let place = |size: &dyn Fn(&Partition) -> u64| -> Vec<(usize, u64, u64)> {
        let mut out = Vec::new();
        let mut prev_old_end = 0u64;
        let mut prev_new_end = 0u64;
        for &i in &order {
            let p = &table.partitions[i];
            let gap = p.start.saturating_sub(prev_old_end);
            let mut start = prev_new_end + gap;
            if aligning {
                start = align_up(start, align);
            }
            if p.logical && start < prev_new_end + u64::from(tss) {
                start = align_up(prev_new_end + u64::from(tss), ebr_step);
            }
            let len = size(p);
            out.push((i, start, len));
            prev_old_end = p.end();
            prev_new_end = start + len;
        }
        out
    };
    let end_of = |pos: &[(usize, u64, u64)]| pos.iter().map(|(_, s, l)| s + l).max().unwrap_or(0);
    // Manual sizes, by the target's partition number, checked against what
    // each filesystem can do.
    let mut manual: BTreeMap<u32, u64> = BTreeMap::new();
    for (&n, &want) in &opts.sizes {
        let Some(p) = dst_of(n).and_then(|d| table.partitions.iter().find(|p| p.number == d && !p.ptype.is_extended())) else {
            return Err(Error::refused(format!("the image has no partition {n} to size"), "`rescue info IMAGE` lists its partitions"));
        };
        let fs = fs_of(p.number);
        let fs_name = fs.as_ref().map(|f| f.kind.name().to_string()).unwrap_or_else(|| "no filesystem".into());
        let to = align_down(want, unit).max(unit);
        if to < p.len {
            let Some(min) = shrink_floor(Some(p), fs.as_ref(), p.len, unit) else {
                return Err(Error::refused(
                    format!("partition {n} ({fs_name}) cannot be made smaller than {}: only ext2/3/4 and NTFS data partitions shrink", human_size(p.len)),
                    "keep its size, or choose a size of at least its own",
                ));
            };
            if to < min {
                return Err(Error::refused(
                    format!("partition {n} ({fs_name}, {} used) can shrink to {} at the least, not {}", human_size(fs.as_ref().and_then(|f| f.used).unwrap_or(0)), human_size(min), human_size(to)),
                    "choose a larger size for it",
                ));
            }
        } else if to > p.len && fixed_size(p, fs.as_ref()) {
            return Err(Error::refused(
                format!("partition {n} ({fs_name}, {}) keeps its size: its filesystem cannot be grown here", human_size(p.len)),
                "grow it from the running system after the restore",
            ));
        }
        if to != p.len {
            manual.insert(p.number, to);
        }
    }
    let sized = |p: &Partition| manual.get(&p.number).copied().unwrap_or(p.len);
    let base = place(&sized);
    let end0 = end_of(&base);
    if !manual.is_empty() && end0 > end_limit {
        return Err(Error::refused(
            format!("with the chosen sizes the partitions end at {}, beyond the {} this disk offers", human_size(end0), human_size(end_limit)),
            "make some partitions smaller",
        ));
    }
    if table.kind == TableKind::Mbr && end0 > mbr_limit(tss) {
        return Err(Error::refused(
            format!(
                "MBR partitions end at most at sector 2^32 ({} with {tss}-byte sectors), but this layout reaches byte {end0} ({})",
                human_size(mbr_limit(tss)),
                human_size(end0)
            ),
            if converting.is_some() { "keep the GPT (leave out --table): GPT has no such limit" } else { "convert the table with --table gpt" },
        ));
    }
    let mut shrunk: BTreeMap<u32, u64> = BTreeMap::new();
    let positions = if end0 > end_limit {
        // Too small as it is: shrink the ext2/3/4 and NTFS filesystems, each
        // by a share of the shortfall proportional to the room it has.
        let cands: Vec<(u32, u64, u64)> = order
            .iter()
            .filter_map(|&i| {
                let p = &table.partitions[i];
                shrink_floor(Some(p), fs_of(p.number).as_ref(), p.len, unit).map(|min| (p.number, p.len, min))
            })
            .collect();
        let room: u64 = cands.iter().map(|(_, len, min)| len - min).sum();
        let refuse = || too_small_after_shrink(target, end0 + (target.size - end_limit), room, &cands, &fs_of, converting);
        let mut goal = end0 - end_limit;
        if room < goal {
            return Err(refuse());
        }
        let mut found = None;
        for _ in 0..64 {
            let sizes: BTreeMap<u32, u64> = cands
                .iter()
                .filter_map(|&(n, len, min)| {
                    let r = len - min;
                    let cut = (u128::from(goal) * u128::from(r)).div_ceil(u128::from(room.max(1))) as u64;
                    let to = align_down(len - cut.min(r), unit).max(min);
                    (cut > 0 && to < len).then_some((n, to))
                })
                .collect();
            let pos = place(&|p| sizes.get(&p.number).copied().unwrap_or(p.len));
            let end = end_of(&pos);
            if end <= end_limit {
                found = Some((pos, sizes));
                break;
            }
            if goal >= room {
                break;
            }
            goal = (goal + (end - end_limit)).min(room);
        }
        let (pos, sizes) = found.ok_or_else(refuse)?;
        shrunk = sizes;
        pos
    } else if opts.mode == LayoutMode::Fill {
        let growable: Vec<&Partition> =
            order.iter().map(|&i| &table.partitions[i]).filter(|p| !fixed_size(p, fs_of(p.number).as_ref()) && !manual.contains_key(&p.number)).collect();
        let total: u64 = growable.iter().map(|p| p.len).sum();
        let mut extra = end_limit - end0;
        // Alignment of later starts can eat into the extra room; shrink the
        // share until everything fits.
        loop {
            let grow = |p: &Partition| {
                if total == 0 || fixed_size(p, fs_of(p.number).as_ref()) || manual.contains_key(&p.number) {
                    0
                } else {
                    ((extra as u128 * p.len as u128 / total as u128) as u64) / align * align
                }
            };
            let pos = place(&|p| sized(p) + grow(p));
            let end = end_of(&pos);
            if end <= end_limit || extra == 0 {
                break pos;
            }
            extra = extra.saturating_sub(end - end_limit + align);
        }
    } else {
        base
    };
    // Manual sizes below the source's are shrinks like the automatic ones.
    for (&n, &to) in &manual {
        if table.partitions.iter().any(|p| p.number == n && to < p.len) {
            shrunk.insert(n, to);
        }
    }
    let mut moved = table.clone();
    for (i, s, l) in &positions {
        moved.partitions[*i].start = *s;
        moved.partitions[*i].len = *l;
    }
    // The extended container spans its logical partitions, starting where the
    // first EBR goes.
    if let Some(ei) = moved.partitions.iter().position(|p| p.ptype.is_extended()) {
        let old_ext = &table.partitions[ei];
        let logicals: Vec<(u64, u64, u64)> = positions
            .iter()
            .filter(|(i, _, _)| table.partitions[*i].logical)
            .map(|(i, s, l)| (table.partitions[*i].start, *s, *l))
            .collect();
        if let (Some(first), Some(last)) = (logicals.iter().min_by_key(|x| x.1), logicals.iter().max_by_key(|x| x.1 + x.2)) {
            let lead = first.0.saturating_sub(old_ext.start).max(u64::from(tss));
            let start = first.1.saturating_sub(lead);
            moved.partitions[ei].start = start;
            moved.partitions[ei].len = last.1 + last.2 - start;
        }
    }
    moved.partitions.sort_by_key(|p| p.start);
    moved.last_usable = end_limit;
    if converting == Some(TableKind::Gpt) {
        if let Some(p) = moved.partitions.iter().filter(|p| p.start < moved.first_usable).min_by_key(|p| p.start) {
            let ss = u64::from(tss);
            return Err(Error::refused(
                format!(
                    "partition {} starts at sector {}, inside the first {} sectors, which the GPT header and entry array need",
                    p.number,
                    p.start / ss,
                    moved.first_usable / ss
                ),
                "add --align 1MiB to move the partitions to 1 MiB boundaries",
            ));
        }
    }
    // Validate by serializing once (overlaps, alignment, MBR limits).
    part::serialize(&moved, target.size, src.sector0.as_deref()).map_err(|e| {
        Error::refused(format!("the new partition table would be invalid: {e}"), "try without --align, or with --layout keep")
    })?;
    let new_part = |d: u32| moved.partitions.iter().find(|p| p.number == d);
    let mut moves = Vec::new();
    let mut grows = Vec::new();
    let mut shrinks = Vec::new();
    let first_new = moved.partitions.iter().map(|p| p.start).min().unwrap_or(u64::MAX);
    for r in &src.regions {
        match r.kind {
            RegionKind::Head => {
                if converting.is_some() {
                    warnings.push("the area before the first partition is not copied: it belongs to the old partition table (sector 0's boot code is kept)".into());
                    continue;
                }
                let mut m = mv(r, 0);
                if m.len > first_new {
                    m.len = first_new;
                    m.bytes = m.bytes.min(first_new);
                }
                moves.push(m);
            }
            RegionKind::Partition => {
                let n = r.partition.unwrap_or(0);
                let Some(d) = dst_of(n) else { continue };
                let Some(np) = new_part(d) else { continue };
                let (s, newp) = (np.start, np.len);
                let mut m = mv(r, s);
                if d != n {
                    m.label = format!("partition {n} as partition {d}");
                }
                let fs_name = r.fs.as_ref().map(|f| f.kind.name().to_string()).unwrap_or_else(|| "none".into());
                if let Some(&to) = shrunk.get(&d) {
                    let used = r.fs.as_ref().and_then(|f| f.used).unwrap_or(0);
                    m.len = to;
                    m.label = format!("{}, shrunk to {}", m.label, human_size(to));
                    warnings.push(format!(
                        "partition {d} ({fs_name}, {} used) shrinks from {} to {}: restored into a scratch file, shrunk there, then copied",
                        human_size(used),
                        human_size(r.len),
                        human_size(to)
                    ));
                    shrinks.push(FsShrink {
                        region: r.id,
                        partition: d,
                        source_partition: n,
                        action: shrink_action(&fs_name, to),
                        fs: fs_name,
                        offset: s,
                        used,
                        min: min_shrunk_size(used, unit).min(r.len),
                        from: r.len,
                        to,
                    });
                } else if newp > r.len {
                    let (action, grows_fs) = grow_action(r.fs.as_ref());
                    grows.push(FsGrow { partition: d, fs: fs_name, offset: s, from: r.len, to: newp, action, grows: grows_fs });
                }
                moves.push(m);
            }
            RegionKind::Gap => {
                if converting.is_some() {
                    warnings.push(format!("{} not copied: it belongs to the old partition table", label(r.kind, r.partition, r.disk_offset)));
                    continue;
                }
                // Keep a gap at the same distance before the partition that follows it.
                let next = table0.partitions.iter().filter(|p| !p.ptype.is_extended() && p.start >= r.disk_offset + r.len).min_by_key(|p| p.start);
                let target_off = next.and_then(|p| new_part(p.number).map(|np| (np.start, p.start))).and_then(|(s, old)| s.checked_sub(old - r.disk_offset));
                let prev_new_end = moved.partitions.iter().filter(|p| !p.ptype.is_extended()).map(|p| p.end()).filter(|&e| target_off.is_some_and(|t| e <= t + r.len)).max().unwrap_or(0);
                match target_off {
                    Some(t) if t >= prev_new_end && t + r.len <= end_limit => moves.push(mv(r, t)),
                    _ => warnings.push(format!("{} not copied: it has no place in the new layout", label(r.kind, r.partition, r.disk_offset))),
                }
            }
            RegionKind::Disk => {}
        }
    }
    Ok(Layout { table_after: Some(moved), moves, grows, shrinks, conversion, writes_table: true, warnings })
}

fn mv(r: &SrcRegion, target_offset: u64) -> RegionMove {
    RegionMove {
        region: r.id,
        label: label(r.kind, r.partition, r.disk_offset),
        source_offset: r.disk_offset,
        target_offset,
        len: r.len,
        bytes: r.bytes,
    }
}

fn too_small(need: u64, target: &DiskInfo, hint: &str) -> Error {
    Error::refused(
        format!("{} is too small: the plan needs {} ({need} bytes), the disk has {}", target.path.display(), human_size(need), human_size(target.size)),
        hint,
    )
}

/// The target cannot hold the layout even with every shrinkable filesystem at
/// its planned minimum.
fn too_small_after_shrink(
    target: &DiskInfo,
    need: u64,
    room: u64,
    cands: &[(u32, u64, u64)],
    fs_of: &dyn Fn(u32) -> Option<FsInfo>,
    converting: Option<TableKind>,
) -> Error {
    let least = need.saturating_sub(room);
    let what = if cands.is_empty() {
        "no partition can shrink (only ext2/3/4 and NTFS filesystems shrink; FAT, EFI system, MSR, recovery, BIOS boot and swap partitions keep their size)".to_string()
    } else {
        let list: Vec<String> = cands
            .iter()
            .map(|(n, len, min)| {
                let f = fs_of(*n);
                format!(
                    "partition {n} ({}, {} used) from {} to {}",
                    f.as_ref().map_or("?", |f| f.kind.name()),
                    human_size(f.as_ref().and_then(|f| f.used).unwrap_or(0)),
                    human_size(*len),
                    human_size(*min)
                )
            })
            .collect();
        format!("shrinking {} still needs {}", list.join(", "), human_size(least))
    };
    let gpt = if converting == Some(TableKind::Gpt) { " (the GPT keeps its backup in the last 33 sectors)" } else { "" };
    Error::refused(
        format!(
            "{} is too small even after shrinking: the partitions need {} as they are{gpt}; {what}; the disk has {}",
            target.path.display(),
            human_size(need),
            human_size(target.size)
        ),
        format!("choose a target disk of at least {}, or free space in the source's filesystems first", human_size(least)),
    )
}

/// Map a partition type to the other table kind: [`equivalent_type`], or a
/// data type when there is no equivalent (for a partition restored into
/// free space, where the user chose the table).
pub fn convert_type(t: &PartType, fs: Option<&FsInfo>, to: TableKind) -> PartType {
    equivalent_type(t, fs, to).unwrap_or_else(|_| match to {
        TableKind::Mbr => PartType::Mbr(0x07),
        TableKind::Gpt => PartType::Gpt(part::guids::MS_BASIC_DATA.to_string()),
    })
}

/// Where a single partition region goes on the target: into partition
/// `target_part`, or (None) into the first free space that fits it.
pub fn single_partition(
    src: &SrcRegion,
    src_part: Option<&Partition>,
    target: &DiskInfo,
    target_table: Option<&PartitionTable>,
    target_part: Option<u32>,
    opts: &LayoutOptions,
) -> Result<Layout, Error> {
    let mut warnings = Vec::new();
    let tss = u64::from(target.logical_sector_size);
    match target_part {
        Some(m) => {
            let t = target_table.ok_or_else(|| Error::refused(format!("{} has no partition table", target.path.display()), "restore into free space by leaving out :N"))?;
            let p = t.partitions.iter().find(|p| p.number == m).ok_or_else(|| {
                Error::refused(format!("{} has no partition {m}", target.path.display()), "run `rescue disks` to see the partition numbers")
            })?;
            if p.ptype.is_extended() {
                return Err(Error::refused(format!("partition {m} is the extended container"), "choose a logical or primary partition"));
            }
            let mut shrinks = Vec::new();
            if p.len < src.len {
                // Shrink the filesystem to the partition when its used space fits.
                let floor = shrink_floor(src_part, src.fs.as_ref(), src.len, tss.max(4096));
                let fs_name = src.fs.as_ref().map(|f| f.kind.name().to_string()).unwrap_or_else(|| "none".into());
                let used = src.fs.as_ref().and_then(|f| f.used).unwrap_or(0);
                match floor {
                    Some(min) if min <= p.len => {
                        warnings.push(format!(
                            "partition {m} is smaller than the source: the {fs_name} filesystem ({} used) shrinks from {} to {}: restored into a scratch file, shrunk there, then copied",
                            human_size(used),
                            human_size(src.len),
                            human_size(p.len)
                        ));
                        shrinks.push(FsShrink {
                            region: src.id,
                            partition: m,
                            source_partition: src.partition.unwrap_or(0),
                            action: shrink_action(&fs_name, p.len),
                            fs: fs_name,
                            offset: p.start,
                            used,
                            min,
                            from: src.len,
                            to: p.len,
                        });
                    }
                    Some(min) => {
                        return Err(Error::refused(
                            format!(
                                "partition {m} ({}) is smaller than the source partition ({}) and too small even after shrinking: the {fs_name} filesystem has {} in use and needs at least {}",
                                human_size(p.len),
                                human_size(src.len),
                                human_size(used),
                                human_size(min)
                            ),
                            format!("choose a partition of at least {}, or restore into free space", human_size(min)),
                        ))
                    }
                    None => {
                        return Err(Error::refused(
                            format!("partition {m} ({}) is smaller than the source partition ({})", human_size(p.len), human_size(src.len)),
                            format!(
                                "choose a larger partition or restore into free space ({} cannot shrink: only ext2/3/4 and NTFS filesystems with a known used size do)",
                                fs_name
                            ),
                        ))
                    }
                }
            }
            if let Some(sp) = src_part {
                if convert_type(&sp.ptype, src.fs.as_ref(), t.kind) != p.ptype {
                    warnings.push(format!("partition {m} has type {} but the source was {}; the type is left as it is", p.ptype.describe(), sp.ptype.describe()));
                }
            }
            let mut grows = Vec::new();
            if p.len > src.len && opts.mode == LayoutMode::Fill {
                let (action, g) = grow_action(src.fs.as_ref());
                grows.push(FsGrow {
                    partition: m,
                    fs: src.fs.as_ref().map(|f| f.kind.name().to_string()).unwrap_or_else(|| "none".into()),
                    offset: p.start,
                    from: src.len,
                    to: p.len,
                    action,
                    grows: g,
                });
            } else if p.len > src.len {
                warnings.push(format!(
                    "partition {m} is {} larger than the filesystem; use --layout fill to grow it",
                    human_size(p.len - src.len)
                ));
            }
            let mut m_ = mv(src, p.start);
            m_.label = format!("{} into partition {m}", m_.label);
            if let Some(sh) = shrinks.first() {
                m_.len = sh.to;
                m_.label = format!("{}, shrunk to {}", m_.label, human_size(sh.to));
            }
            Ok(Layout { table_after: None, moves: vec![m_], grows, shrinks, conversion: None, writes_table: false, warnings })
        }
        None => {
            let align = opts.align.unwrap_or(1 << 20).max(tss);
            let sp = src_part.ok_or_else(|| Error::refused("the image region has no partition entry", "restore into an existing partition with DISK:N"))?;
            let mut t = match target_table {
                Some(t) => t.clone(),
                None => {
                    let kind = TableKind::Gpt;
                    warnings.push(format!("{} has no partition table: a new {:?} table is created", target.path.display(), kind));
                    PartitionTable {
                        kind,
                        sector_size: target.logical_sector_size,
                        disk_id: if kind == TableKind::Gpt { part::new_guid() } else { format!("{:08x}", u32::from_le_bytes(crate::image::crypto::random())) },
                        first_usable: 1 << 20,
                        last_usable: 0,
                        partitions: Vec::new(),
                        max_entries: if kind == TableKind::Gpt { 128 } else { 4 },
                        warnings: Vec::new(),
                    }
                }
            };
            let end_limit = usable_end(&t, target.size);
            t.last_usable = end_limit;
            // Free gaps between first usable and the end, outside every
            // partition (primaries and the extended container).
            let mut used: Vec<(u64, u64)> = t.partitions.iter().map(|p| (p.start, p.end())).collect();
            used.sort();
            let mut cursor = t.first_usable.max(align);
            let mut chosen = None;
            for (s, e) in used.iter().copied().chain(std::iter::once((end_limit, end_limit))) {
                let start = align_up(cursor, align);
                if s > start && s - start >= src.len {
                    chosen = Some(start);
                    break;
                }
                cursor = cursor.max(e);
            }
            let start = chosen.ok_or_else(|| {
                Error::refused(
                    format!("{} has no free space of {} for the partition", target.path.display(), human_size(src.len)),
                    "free space with a partition editor, or restore into an existing partition with DISK:N",
                )
            })?;
            let number = match t.kind {
                TableKind::Gpt => (1..=t.max_entries).find(|n| !t.partitions.iter().any(|p| p.number == *n)),
                TableKind::Mbr => (1..=4).find(|n| !t.partitions.iter().any(|p| p.number == *n)),
            }
            .ok_or_else(|| Error::refused("the partition table has no free entry", "delete a partition first or use an existing one with DISK:N"))?;
            if t.kind == TableKind::Mbr && t.partitions.iter().any(|p| p.ptype.is_extended() && p.start <= start && start < p.end()) {
                return Err(Error::refused("the free space lies inside the extended partition", "restore into an existing logical partition with DISK:N"));
            }
            t.partitions.push(Partition {
                number,
                start,
                len: src.len,
                ptype: convert_type(&sp.ptype, src.fs.as_ref(), t.kind),
                guid: if t.kind == TableKind::Gpt { Some(part::new_guid()) } else { None },
                name: if t.kind == TableKind::Gpt { sp.name.clone() } else { String::new() },
                attributes: 0,
                bootable: false,
                logical: false,
            });
            t.partitions.sort_by_key(|p| p.start);
            part::serialize(&t, target.size, None)
                .map_err(|e| Error::refused(format!("the new partition table would be invalid: {e}"), "restore into an existing partition with DISK:N"))?;
            let mut m_ = mv(src, start);
            m_.label = format!("{} as new partition {number}", m_.label);
            Ok(Layout { table_after: Some(t), moves: vec![m_], grows: Vec::new(), shrinks: Vec::new(), conversion: None, writes_table: true, warnings })
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (STYLE.md)
mod tests {
    use super::*;
    use crate::blockdev::DiskKind;
    use crate::fs::FsKind;

    const MIB: u64 = 1 << 20;

    fn disk(size: u64, ss: u32) -> DiskInfo {
        DiskInfo {
            path: "t.img".into(),
            name: "t.img".into(),
            kind: DiskKind::File,
            model: None,
            vendor: None,
            serial: None,
            wwn: None,
            size,
            logical_sector_size: ss,
            physical_sector_size: ss,
            transport: None,
            rotational: None,
            removable: false,
            read_only: false,
            devnum: None,
            loop_backing: None,
            file_id: None,
        }
    }

    fn fs(kind: FsKind) -> Option<FsInfo> {
        Some(FsInfo { kind, label: None, uuid: None, block_size: 4096, size: 0, used: None, sector_size: None })
    }

    fn gpt(parts: &[(u32, u64, u64, &str)]) -> PartitionTable {
        PartitionTable {
            kind: TableKind::Gpt,
            sector_size: 512,
            disk_id: "0b2394a9-095e-487d-8d48-719ecd4d78ca".into(),
            first_usable: 34 * 512,
            last_usable: 0,
            partitions: parts
                .iter()
                .map(|&(n, s, l, t)| Partition {
                    number: n,
                    start: s,
                    len: l,
                    ptype: PartType::Gpt(t.into()),
                    guid: Some(part::new_guid()),
                    name: String::new(),
                    attributes: 0,
                    bootable: false,
                    logical: false,
                })
                .collect(),
            max_entries: 128,
            warnings: Vec::new(),
        }
    }

    const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    const DATA: &str = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7";
    const LINUX: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";

    fn src() -> SrcLayout {
        let t = gpt(&[(1, MIB, 100 * MIB, ESP), (2, 101 * MIB, 300 * MIB, DATA), (3, 401 * MIB, 100 * MIB, LINUX)]);
        let mut regions = vec![SrcRegion { id: 0, kind: RegionKind::Head, partition: None, disk_offset: 0, len: MIB, fs: None, bytes: MIB }];
        for (i, (p, k)) in t.partitions.iter().zip([FsKind::Fat32, FsKind::Ntfs, FsKind::Ext4]).enumerate() {
            regions.push(SrcRegion { id: i as u32 + 1, kind: RegionKind::Partition, partition: Some(p.number), disk_offset: p.start, len: p.len, fs: fs(k), bytes: p.len / 2 });
        }
        SrcLayout { size: 502 * MIB, sector_size: 512, table: Some(t), sector0: None, regions }
    }

    #[test]
    fn keep_places_partitions_where_they_were() {
        let l = whole_disk(&src(), &disk(600 * MIB, 512), &LayoutOptions::default()).unwrap();
        let t = l.table_after.unwrap();
        assert_eq!(t.partitions.iter().map(|p| (p.start, p.len)).collect::<Vec<_>>(), vec![(MIB, 100 * MIB), (101 * MIB, 300 * MIB), (401 * MIB, 100 * MIB)]);
        assert!(l.grows.is_empty());
        assert_eq!(l.moves.len(), 4);
        assert!(l.moves.iter().all(|m| m.source_offset == m.target_offset));
    }

    /// Manual sizes: a shrink (never below what the filesystem holds), a
    /// grow, the rest placed after them; refusals say which partition and why.
    #[test]
    fn manual_sizes_shrink_and_grow_what_they_name() {
        let mut s = src();
        for r in &mut s.regions {
            if let Some(f) = r.fs.as_mut() {
                f.used = Some(40 * MIB);
            }
        }
        let sizes = |v: &[(u32, u64)]| LayoutOptions { sizes: v.iter().copied().collect(), ..Default::default() };
        // NTFS 300 -> 120 MiB, ext4 100 -> 250 MiB (a few bytes off: rounded down to whole MiB).
        let l = whole_disk(&s, &disk(600 * MIB, 512), &sizes(&[(2, 120 * MIB + 5), (3, 250 * MIB)])).unwrap();
        let t = l.table_after.unwrap();
        assert_eq!(t.partitions.iter().map(|p| (p.start, p.len)).collect::<Vec<_>>(), vec![(MIB, 100 * MIB), (101 * MIB, 120 * MIB), (221 * MIB, 250 * MIB)]);
        assert_eq!(l.shrinks.iter().map(|x| (x.partition, x.to)).collect::<Vec<_>>(), vec![(2, 120 * MIB)]);
        assert_eq!(l.grows.iter().map(|g| (g.partition, g.to)).collect::<Vec<_>>(), vec![(3, 250 * MIB)]);
        // With fill, the partitions without a size take the rest (here ext4 alone).
        let mut o = sizes(&[(2, 120 * MIB)]);
        o.mode = LayoutMode::Fill;
        let t = whole_disk(&s, &disk(600 * MIB, 512), &o).unwrap().table_after.unwrap();
        assert_eq!(t.partitions[1].len, 120 * MIB);
        assert!(t.partitions[2].len > 370 * MIB && t.partitions[2].end() <= 600 * MIB, "{:?}", t.partitions);
        // Refused: below the floor, a FAT ESP, a grow beyond the disk, an unknown partition.
        let e = whole_disk(&s, &disk(600 * MIB, 512), &sizes(&[(2, 30 * MIB)])).unwrap_err().to_string();
        assert!(e.contains("partition 2 (ntfs, 40.0 MiB used) can shrink to 56.0 MiB at the least, not 30.0 MiB"), "{e}");
        let e = whole_disk(&s, &disk(600 * MIB, 512), &sizes(&[(1, 50 * MIB)])).unwrap_err().to_string();
        assert!(e.contains("partition 1 (fat32) cannot be made smaller"), "{e}");
        let e = whole_disk(&s, &disk(600 * MIB, 512), &sizes(&[(1, 150 * MIB)])).unwrap_err().to_string();
        assert!(e.contains("partition 1 (fat32, 100.0 MiB) keeps its size"), "{e}");
        let e = whole_disk(&s, &disk(600 * MIB, 512), &sizes(&[(3, 400 * MIB)])).unwrap_err().to_string();
        assert!(e.contains("beyond the"), "{e}");
        let e = whole_disk(&s, &disk(600 * MIB, 512), &sizes(&[(7, 400 * MIB)])).unwrap_err().to_string();
        assert!(e.contains("no partition 7"), "{e}");
        // The size it already has: nothing to do.
        let l = whole_disk(&s, &disk(600 * MIB, 512), &sizes(&[(2, 300 * MIB)])).unwrap();
        assert!(l.shrinks.is_empty() && l.grows.is_empty());
    }

    #[test]
    fn fill_grows_data_partitions_proportionally() {
        let l = whole_disk(&src(), &disk(1002 * MIB, 512), &LayoutOptions { mode: LayoutMode::Fill, ..Default::default() }).unwrap();
        let t = l.table_after.unwrap();
        let p: Vec<_> = t.partitions.iter().map(|p| (p.start, p.len)).collect();
        assert_eq!(p[0], (MIB, 100 * MIB), "the ESP keeps its size");
        // 500 MiB more (minus the GPT backup area), split 3:1 between NTFS and ext4.
        assert!(p[1].1 > 660 * MIB && p[1].1 < 680 * MIB, "{p:?}");
        assert!(p[2].1 > 220 * MIB && p[2].1 < 230 * MIB, "{p:?}");
        assert!(p.iter().all(|(s, l)| s % MIB == 0 && l % MIB == 0), "{p:?}");
        assert!(p[2].0 + p[2].1 <= 1002 * MIB - 33 * 512);
        assert_eq!(l.grows.len(), 2);
        assert!(l.grows.iter().all(|g| g.grows));
    }

    #[test]
    fn align_moves_starts() {
        let mut s = src();
        let t = s.table.as_mut().unwrap();
        t.partitions[0].start = 63 * 512;
        s.regions[1].disk_offset = 63 * 512;
        let l = whole_disk(&s, &disk(600 * MIB, 512), &LayoutOptions { align: Some(MIB), ..Default::default() }).unwrap();
        let t = l.table_after.unwrap();
        assert!(t.partitions.iter().all(|p| p.start % MIB == 0), "{:?}", t.partitions);
        let m = l.moves.iter().find(|m| m.region == 1).unwrap();
        assert_eq!((m.source_offset, m.target_offset), (63 * 512, MIB));
    }

    #[test]
    fn too_small_and_untranslatable_are_refused() {
        let e = whole_disk(&src(), &disk(400 * MIB, 512), &LayoutOptions::default()).unwrap_err();
        assert!(e.to_string().contains("too small"), "{e}");
        let mut s = src();
        s.table.as_mut().unwrap().partitions[0].start = 63 * 512;
        let e = whole_disk(&s, &disk(600 * MIB, 4096), &LayoutOptions::default()).unwrap_err();
        assert!(e.to_string().contains("cannot be translated"), "{e}");
    }

    #[test]
    fn single_partition_goes_into_free_space_with_a_new_number() {
        let s = src();
        let target_table = gpt(&[(1, MIB, 50 * MIB, DATA), (3, 300 * MIB, 50 * MIB, DATA)]);
        let r = &s.regions[3]; // ext4, 100 MiB
        let sp = &s.table.as_ref().unwrap().partitions[2];
        let l = single_partition(r, Some(sp), &disk(600 * MIB, 512), Some(&target_table), None, &LayoutOptions::default()).unwrap();
        let t = l.table_after.unwrap();
        let new = t.partitions.iter().find(|p| p.number == 2).unwrap();
        assert_eq!((new.start, new.len), (51 * MIB, 100 * MIB));
        assert_eq!(new.ptype, sp.ptype);
        // No room anywhere.
        let full = gpt(&[(1, MIB, 590 * MIB, DATA)]);
        assert!(single_partition(r, Some(sp), &disk(600 * MIB, 512), Some(&full), None, &LayoutOptions::default()).is_err());
    }

    #[test]
    fn types_convert_between_table_kinds() {
        let esp = PartType::Gpt(ESP.into());
        assert_eq!(convert_type(&esp, None, TableKind::Mbr), PartType::Mbr(0xef));
        assert_eq!(convert_type(&PartType::Gpt(DATA.into()), fs(FsKind::Fat32).as_ref(), TableKind::Mbr), PartType::Mbr(0x0c));
        assert_eq!(convert_type(&PartType::Mbr(0x83), None, TableKind::Gpt), PartType::Gpt(LINUX.into()));
    }

    /// A source whose filesystems report their used space.
    fn with_used(mut s: SrcLayout, used: &[(u32, u64)]) -> SrcLayout {
        for r in &mut s.regions {
            if let (Some(n), Some(f)) = (r.partition, r.fs.as_mut()) {
                f.used = used.iter().find(|(m, _)| *m == n).map(|(_, u)| *u);
                r.bytes = f.used.unwrap_or(r.len);
            }
        }
        s
    }

    fn parts(l: &Layout) -> Vec<(u32, u64, u64, bool)> {
        l.table_after.as_ref().unwrap().partitions.iter().map(|p| (p.number, p.start, p.len, p.logical)).collect()
    }

    #[test]
    fn smaller_disk_shrinks_ext_and_ntfs_proportionally() {
        // 502 MiB of partitions onto 400 MiB: the FAT ESP keeps its size.
        let s = with_used(src(), &[(1, 10 * MIB), (2, 60 * MIB), (3, 20 * MIB)]);
        let l = whole_disk(&s, &disk(400 * MIB, 512), &LayoutOptions::default()).unwrap();
        let p = parts(&l);
        assert_eq!((p[0].1, p[0].2), (MIB, 100 * MIB), "the ESP keeps its place and size: {p:?}");
        assert!(p[1].2 < 300 * MIB && p[2].2 < 100 * MIB, "{p:?}");
        assert!(p.iter().all(|x| x.1 % MIB == 0 && x.2 % MIB == 0), "{p:?}");
        assert!(p[2].1 + p[2].2 <= 400 * MIB - 33 * 512, "{p:?}");
        // The NTFS has more room, so it gives more.
        assert!(300 * MIB - p[1].2 > 100 * MIB - p[2].2, "{p:?}");
        assert_eq!(l.shrinks.len(), 2);
        for sh in &l.shrinks {
            let m = l.moves.iter().find(|m| m.region == sh.region).unwrap();
            assert_eq!(m.len, sh.to, "the move writes only the new size");
            assert!(sh.to >= sh.min && sh.min > sh.used && sh.to < sh.from, "{sh:?}");
            assert!(m.label.contains("shrunk"), "{}", m.label);
        }
        assert_eq!(l.shrinks[0].fs, "ntfs");
        assert!(l.shrinks[0].action.contains("ntfsresize") && l.shrinks[1].action.contains("resize2fs"));
        assert!(l.grows.is_empty());
        assert!(l.warnings.iter().any(|w| w.contains("shrinks from")), "{:?}", l.warnings);
        // --layout fill on a smaller disk shrinks the same way.
        let f = whole_disk(&s, &disk(400 * MIB, 512), &LayoutOptions { mode: LayoutMode::Fill, ..Default::default() }).unwrap();
        assert_eq!(f.shrinks.len(), 2);
        // A disk that fits needs no shrink.
        assert!(whole_disk(&s, &disk(600 * MIB, 512), &LayoutOptions::default()).unwrap().shrinks.is_empty());
    }

    #[test]
    fn only_what_must_shrink_shrinks() {
        // Just 2 MiB short: a small cut, and a filesystem without room keeps its size.
        let s = with_used(src(), &[(2, 60 * MIB), (3, 95 * MIB)]);
        let l = whole_disk(&s, &disk(500 * MIB, 512), &LayoutOptions::default()).unwrap();
        let p = parts(&l);
        assert_eq!(p[2].2, 100 * MIB, "ext4 has no room above used + margin: {p:?}");
        assert!(p[1].2 >= 290 * MIB && p[1].2 < 300 * MIB, "{p:?}");
        assert_eq!(l.shrinks.len(), 1);
    }

    #[test]
    fn too_small_even_after_shrinking_is_refused_with_the_size_needed() {
        let s = with_used(src(), &[(2, 200 * MIB), (3, 60 * MIB)]);
        let e = whole_disk(&s, &disk(300 * MIB, 512), &LayoutOptions::default()).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("too small even after shrinking") && msg.contains("partition 2 (ntfs"), "{msg}");
        assert!(e.hint().contains("at least"), "{}", e.hint());
        // Unknown used space: nothing can shrink.
        let e = whole_disk(&src(), &disk(400 * MIB, 512), &LayoutOptions::default()).unwrap_err();
        assert!(e.to_string().contains("no partition can shrink"), "{e}");
    }

    #[test]
    fn single_partition_shrinks_into_a_smaller_partition() {
        let s = with_used(src(), &[(3, 20 * MIB)]);
        let target_table = gpt(&[(1, MIB, 60 * MIB, LINUX)]);
        let sp = &s.table.as_ref().unwrap().partitions[2];
        let l = single_partition(&s.regions[3], Some(sp), &disk(600 * MIB, 512), Some(&target_table), Some(1), &LayoutOptions::default()).unwrap();
        assert_eq!(l.shrinks.len(), 1);
        assert_eq!((l.shrinks[0].from, l.shrinks[0].to, l.moves[0].len), (100 * MIB, 60 * MIB, 60 * MIB));
        let tiny = gpt(&[(1, MIB, 30 * MIB, LINUX)]);
        let e = single_partition(&s.regions[3], Some(sp), &disk(600 * MIB, 512), Some(&tiny), Some(1), &LayoutOptions::default()).unwrap_err();
        assert!(e.to_string().contains("too small even after shrinking"), "{e}");
        // FAT never shrinks.
        let e = single_partition(&s.regions[1], Some(&s.table.as_ref().unwrap().partitions[0]), &disk(600 * MIB, 512), Some(&tiny), Some(1), &LayoutOptions::default()).unwrap_err();
        assert!(e.to_string().contains("smaller than the source"), "{e}");
    }

    /// GPT: ESP, then five Linux partitions, no gaps between them.
    fn six() -> SrcLayout {
        let mut spec = vec![(1, MIB, 32 * MIB, ESP)];
        for n in 2..=6u32 {
            spec.push((n, (33 + 40 * u64::from(n - 2)) * MIB, 40 * MIB, LINUX));
        }
        let t = gpt(&spec);
        let mut regions = vec![SrcRegion { id: 0, kind: RegionKind::Head, partition: None, disk_offset: 0, len: MIB, fs: None, bytes: MIB }];
        for (i, p) in t.partitions.iter().enumerate() {
            let k = if i == 0 { FsKind::Fat32 } else { FsKind::Ext4 };
            let mut f = fs(k);
            if let Some(f) = f.as_mut() {
                f.used = Some(4 * MIB);
            }
            regions.push(SrcRegion { id: i as u32 + 1, kind: RegionKind::Partition, partition: Some(p.number), disk_offset: p.start, len: p.len, fs: f, bytes: 4 * MIB });
        }
        SrcLayout { size: 240 * MIB, sector_size: 512, table: Some(t), sector0: None, regions }
    }

    #[test]
    fn gpt_with_six_partitions_becomes_mbr_with_logical_partitions() {
        let opts = LayoutOptions { table: Some(TableKind::Mbr), ..Default::default() };
        let l = whole_disk(&six(), &disk(256 * MIB, 512), &opts).unwrap();
        let t = l.table_after.as_ref().unwrap();
        assert_eq!(t.kind, TableKind::Mbr);
        let p = parts(&l);
        let primaries: Vec<u32> = p.iter().filter(|x| !x.3).map(|x| x.0).collect();
        let logicals: Vec<u32> = p.iter().filter(|x| x.3).map(|x| x.0).collect();
        assert_eq!(primaries, vec![1, 2, 3, 4], "{p:?}");
        assert_eq!(logicals, vec![5, 6, 7], "{p:?}");
        assert!(t.partitions.iter().find(|x| x.number == 4).unwrap().ptype.is_extended());
        assert_eq!(t.partitions.iter().find(|x| x.number == 1).unwrap().ptype, PartType::Mbr(0xef), "the ESP stays primary");
        assert!(t.partitions.iter().filter(|x| x.number >= 5).all(|x| x.ptype == PartType::Mbr(0x83)));
        // Each logical partition has room for its EBR before it.
        part::serialize(t, 256 * MIB, None).unwrap();
        let c = l.conversion.as_ref().unwrap();
        assert_eq!(c.numbers.iter().map(|x| (x.source, x.target)).collect::<Vec<_>>(), vec![(1, 1), (2, 2), (3, 3), (4, 5), (5, 6), (6, 7)]);
        assert!(c.boot.contains("fallback"), "{}", c.boot);
        let m = l.moves.iter().find(|m| m.region == 4).unwrap();
        assert_eq!(m.label, "partition 4 as partition 5");
        assert!(l.moves.iter().all(|m| m.region != 0), "the GPT head is not copied onto an MBR disk");
        assert!(l.warnings.iter().any(|w| w.contains("4 -> 5")), "{:?}", l.warnings);
        // As small as the source: the EBRs take room, so the ext4s shrink a little.
        let same = whole_disk(&six(), &disk(234 * MIB, 512), &opts).unwrap();
        assert!(!same.shrinks.is_empty());
        part::serialize(same.table_after.as_ref().unwrap(), 234 * MIB, None).unwrap();
    }

    #[test]
    fn the_esp_stays_primary_wherever_it_is() {
        // ESP last: the logical run goes before it.
        let mut s = six();
        let t = s.table.as_mut().unwrap();
        t.partitions[0].ptype = PartType::Gpt(LINUX.into());
        t.partitions[5].ptype = PartType::Gpt(ESP.into());
        let l = whole_disk(&s, &disk(256 * MIB, 512), &LayoutOptions { table: Some(TableKind::Mbr), ..Default::default() }).unwrap();
        let t = l.table_after.unwrap();
        let esp = t.partitions.iter().find(|p| p.ptype == PartType::Mbr(0xef)).unwrap();
        assert!(!esp.logical, "{:?}", t.partitions);
        assert_eq!(t.partitions.iter().filter(|p| p.logical).count(), 3);
        part::serialize(&t, 256 * MIB, None).unwrap();
    }

    fn windows_gpt() -> SrcLayout {
        const MSR: &str = "e3c9e316-0b5c-4db8-817d-f92df00215ae";
        let t = gpt(&[(1, MIB, 100 * MIB, ESP), (2, 101 * MIB, 16 * MIB, MSR), (3, 117 * MIB, 300 * MIB, DATA)]);
        let mut regions = vec![];
        for (i, (p, k)) in t.partitions.iter().zip([Some(FsKind::Fat32), None, Some(FsKind::Ntfs)]).enumerate() {
            regions.push(SrcRegion { id: i as u32 + 1, kind: RegionKind::Partition, partition: Some(p.number), disk_offset: p.start, len: p.len, fs: k.and_then(fs), bytes: MIB });
        }
        SrcLayout { size: 420 * MIB, sector_size: 512, table: Some(t), sector0: Some(vec![0; 512]), regions }
    }

    #[test]
    fn windows_uefi_to_mbr_needs_bios_boot_code() {
        let opts = LayoutOptions { table: Some(TableKind::Mbr), ..Default::default() };
        let e = whole_disk(&windows_gpt(), &disk(500 * MIB, 512), &opts).unwrap_err();
        assert!(e.to_string().contains("UEFI") && e.to_string().contains("BIOS"), "{e}");
        assert!(e.hint().contains("keep the GPT"), "{}", e.hint());
        // With BIOS boot code in sector 0 it converts, says how it boots, and
        // leaves the MSR out.
        let mut s = windows_gpt();
        s.sector0 = Some((0..512).map(|i| (i % 251) as u8 + 1).collect());
        let l = whole_disk(&s, &disk(500 * MIB, 512), &opts).unwrap();
        let t = l.table_after.as_ref().unwrap();
        assert_eq!(t.partitions.len(), 2, "{:?}", t.partitions);
        assert!(t.partitions.iter().any(|p| p.bootable && p.ptype == PartType::Mbr(0x07)), "{:?}", t.partitions);
        assert!(l.conversion.as_ref().unwrap().boot.contains("BIOS/CSM"));
        assert!(l.warnings.iter().any(|w| w.contains("Microsoft reserved")), "{:?}", l.warnings);
    }

    #[test]
    fn gpt_only_types_are_refused() {
        const BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
        let mut s = src();
        s.table.as_mut().unwrap().partitions[0].ptype = PartType::Gpt(BIOS_BOOT.into());
        let e = whole_disk(&s, &disk(600 * MIB, 512), &LayoutOptions { table: Some(TableKind::Mbr), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("BIOS boot partition"), "{e}");
        let mut s = src();
        let t = s.table.as_mut().unwrap();
        t.partitions[0].ptype = PartType::Gpt(DATA.into());
        t.partitions[2].ptype = PartType::Gpt("af9b60a0-1431-4f62-bc68-3311714a69ad".into());
        let e = whole_disk(&s, &disk(600 * MIB, 512), &LayoutOptions { table: Some(TableKind::Mbr), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("LDM"), "{e}");
    }

    #[test]
    fn mbr_limit_of_2_tib_is_refused() {
        const GIB: u64 = 1 << 30;
        let t = gpt(&[(1, MIB, 3000 * GIB, LINUX)]);
        let regions = vec![SrcRegion { id: 1, kind: RegionKind::Partition, partition: Some(1), disk_offset: MIB, len: 3000 * GIB, fs: fs(FsKind::Ext4), bytes: GIB }];
        let s = SrcLayout { size: 3001 * GIB, sector_size: 512, table: Some(t), sector0: None, regions };
        let e = whole_disk(&s, &disk(3001 * GIB, 512), &LayoutOptions { table: Some(TableKind::Mbr), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("2^32"), "{e}");
        assert!(e.hint().contains("GPT"), "{}", e.hint());
    }

    fn mbr_logical(first_start: u64) -> SrcLayout {
        let p = |number, start, len, t, logical| Partition { number, start, len, ptype: PartType::Mbr(t), guid: None, name: String::new(), attributes: 0, bootable: false, logical };
        let t = PartitionTable {
            kind: TableKind::Mbr,
            sector_size: 512,
            disk_id: "12345678".into(),
            first_usable: 512,
            last_usable: 200 * MIB,
            partitions: vec![
                p(1, first_start, 40 * MIB, 0x0c, false),
                p(2, 42 * MIB, 150 * MIB, 0x0f, false),
                p(5, 43 * MIB, 60 * MIB, 0x83, true),
                p(6, 104 * MIB, 40 * MIB, 0x07, true),
            ],
            max_entries: 4,
            warnings: Vec::new(),
        };
        let mut regions = vec![];
        for (i, (n, k)) in [(1u32, FsKind::Fat32), (5, FsKind::Ext4), (6, FsKind::Ntfs)].into_iter().enumerate() {
            let q = t.partitions.iter().find(|q| q.number == n).unwrap();
            regions.push(SrcRegion { id: i as u32 + 1, kind: RegionKind::Partition, partition: Some(n), disk_offset: q.start, len: q.len, fs: fs(k), bytes: MIB });
        }
        SrcLayout { size: 200 * MIB, sector_size: 512, table: Some(t), sector0: Some(vec![0; 512]), regions }
    }

    #[test]
    fn mbr_with_logical_partitions_becomes_gpt_keeping_numbers() {
        let l = whole_disk(&mbr_logical(MIB), &disk(200 * MIB, 512), &LayoutOptions { table: Some(TableKind::Gpt), ..Default::default() }).unwrap();
        let t = l.table_after.as_ref().unwrap();
        assert_eq!(t.kind, TableKind::Gpt);
        assert_eq!(parts(&l), vec![(1, MIB, 40 * MIB, false), (5, 43 * MIB, 60 * MIB, false), (6, 104 * MIB, 40 * MIB, false)]);
        assert_eq!(t.partitions[1].ptype, PartType::Gpt(LINUX.into()));
        assert_eq!(t.partitions[2].ptype, PartType::Gpt(DATA.into()));
        assert!(t.partitions.iter().all(|p| p.guid.is_some()));
        assert!(l.warnings.iter().any(|w| w.contains("extended partition 2")), "{:?}", l.warnings);
        assert!(l.conversion.as_ref().unwrap().boot.contains("data only"));
        part::serialize(t, 200 * MIB, None).unwrap();
    }

    #[test]
    fn mbr_to_gpt_without_room_for_the_gpt_arrays_says_how_to_fix() {
        // First partition at sector 2: inside the primary entry array.
        let e = whole_disk(&mbr_logical(1024), &disk(200 * MIB, 512), &LayoutOptions { table: Some(TableKind::Gpt), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("GPT header and entry array"), "{e}");
        assert!(e.hint().contains("--align 1MiB"), "{}", e.hint());
        let l = whole_disk(&mbr_logical(1024), &disk(200 * MIB, 512), &LayoutOptions { table: Some(TableKind::Gpt), align: Some(MIB), ..Default::default() }).unwrap();
        assert_eq!(parts(&l)[0].1, MIB);
        // The last partition reaches into the last 33 sectors and nothing can shrink.
        let mut s = mbr_logical(MIB);
        let t = s.table.as_mut().unwrap();
        t.partitions[1].len = 158 * MIB;
        t.partitions[3].len = 96 * MIB;
        s.regions[2].len = 96 * MIB;
        let e = whole_disk(&s, &disk(200 * MIB, 512), &LayoutOptions { table: Some(TableKind::Gpt), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("too small") && e.to_string().contains("backup in the last 33 sectors"), "{e}");
    }

    #[test]
    fn windows_bios_mbr_to_gpt_is_refused() {
        let mut s = mbr_logical(MIB);
        let t = s.table.as_mut().unwrap();
        t.partitions[0].bootable = true;
        let e = whole_disk(&s, &disk(200 * MIB, 512), &LayoutOptions { table: Some(TableKind::Gpt), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("Windows boots from a GPT disk only with UEFI"), "{e}");
        assert!(e.hint().contains("mbr2gpt"), "{}", e.hint());
        // GRUB in the MBR (BIOS): its core image after sector 0 would be overwritten.
        let mut s = mbr_logical(MIB);
        let mut s0 = vec![0u8; 512];
        s0[0x180..0x184].copy_from_slice(b"GRUB");
        s.sector0 = Some(s0);
        s.regions.retain(|r| r.partition != Some(6));
        let e = whole_disk(&s, &disk(200 * MIB, 512), &LayoutOptions { table: Some(TableKind::Gpt), ..Default::default() }).unwrap_err();
        assert!(e.to_string().contains("GRUB"), "{e}");
    }

    #[test]
    fn equivalent_types() {
        assert_eq!(equivalent_type(&PartType::Gpt(part::guids::LINUX_LVM.into()), None, TableKind::Mbr), Ok(PartType::Mbr(0x8e)));
        assert_eq!(equivalent_type(&PartType::Gpt(part::guids::MS_RECOVERY.into()), None, TableKind::Mbr), Ok(PartType::Mbr(0x27)));
        assert!(equivalent_type(&PartType::Gpt(part::guids::MS_RESERVED.into()), None, TableKind::Mbr).is_err());
        assert!(equivalent_type(&PartType::Gpt("01234567-89ab-cdef-0123-456789abcdef".into()), None, TableKind::Mbr).is_err());
        assert_eq!(equivalent_type(&PartType::Gpt("01234567-89ab-cdef-0123-456789abcdef".into()), fs(FsKind::Ntfs).as_ref(), TableKind::Mbr), Ok(PartType::Mbr(0x07)));
        assert_eq!(equivalent_type(&PartType::Mbr(0x27), None, TableKind::Gpt), Ok(PartType::Gpt(part::guids::MS_RECOVERY.into())));
        assert_eq!(equivalent_type(&PartType::Mbr(0x17), None, TableKind::Gpt), Ok(PartType::Gpt(DATA.into())));
        assert!(equivalent_type(&PartType::Mbr(0x42), None, TableKind::Gpt).is_err());
        assert!(equivalent_type(&PartType::Mbr(0xa5), None, TableKind::Gpt).is_err());
    }
}
