//! Where each source region lands on a target disk: keep, fill (grow
//! partitions proportionally into a larger disk) and alignment, for whole-disk
//! and single-partition writes. Shared by restore and clone.

use serde::{Deserialize, Serialize};

use crate::blockdev::{human_size, DiskInfo};
use crate::error::Error;
use crate::fs::{FsInfo, FsKind};
use crate::image::format::RegionKind;
use crate::part::{self, PartType, Partition, PartitionTable, TableKind};

/// Partition sizes on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LayoutMode {
    /// Same sizes as the source.
    #[default]
    Keep,
    /// Grow the data partitions proportionally to use a larger target.
    Fill,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct LayoutOptions {
    pub mode: LayoutMode,
    /// Move partition starts to multiples of this many bytes (SSD alignment).
    pub align: Option<u64>,
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

/// The computed layout.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Layout {
    pub table_after: Option<PartitionTable>,
    pub moves: Vec<RegionMove>,
    pub grows: Vec<FsGrow>,
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

/// End of the usable area of a table of `kind` on a disk of `size` bytes.
fn usable_end(t: &PartitionTable, size: u64) -> u64 {
    let ss = u64::from(t.sector_size);
    match t.kind {
        TableKind::Gpt => {
            let arr = (u64::from(t.max_entries) * 128).div_ceil(ss) * ss;
            (size / ss * ss).saturating_sub(ss + arr)
        }
        TableKind::Mbr => (size / ss * ss).min(u64::from(u32::MAX) * ss),
    }
}

fn fixed_size(p: &Partition, fs: Option<&FsInfo>) -> bool {
    let t = &p.ptype;
    if t.is_esp() || t.is_msr() || t.is_bios_boot() || t.is_windows_recovery() || t.is_swap() || t.is_extended() {
        return true;
    }
    !matches!(fs.map(|f| &f.kind), Some(FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Ntfs))
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

/// Whole-disk layout of `src` on `target`.
pub fn whole_disk(src: &SrcLayout, target: &DiskInfo, opts: &LayoutOptions) -> Result<Layout, Error> {
    let mut warnings = Vec::new();
    let tss = target.logical_sector_size;
    let Some(table0) = &src.table else {
        // No table: regions go where they were.
        let end = src.regions.iter().map(|r| r.disk_offset + r.len).max().unwrap_or(0);
        if end > target.size {
            return Err(too_small(end, target));
        }
        if opts.mode == LayoutMode::Fill || opts.align.is_some() {
            warnings.push("the source has no partition table: --layout and --align do not apply".into());
        }
        let moves = src.regions.iter().map(|r| mv(r, r.disk_offset)).collect();
        return Ok(Layout { table_after: None, moves, grows: Vec::new(), writes_table: false, warnings });
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
    let disk_region = src.regions.iter().find(|r| r.kind == RegionKind::Disk);
    if let Some(d) = disk_region {
        // Sector by sector: the disk as it was; only the GPT backup moves.
        if d.len > target.size {
            return Err(too_small(d.len, target));
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
            writes_table,
            warnings,
        });
    }
    // Partitions that the image holds (and the MBR extended container around
    // any logical ones).
    let has_region = |n: u32| src.regions.iter().any(|r| r.kind == RegionKind::Partition && r.partition == Some(n));
    let any_logical = table.partitions.iter().any(|p| p.logical && has_region(p.number));
    table.partitions.retain(|p| has_region(p.number) || (p.ptype.is_extended() && any_logical));
    let fs_of = |n: u32| src.regions.iter().find(|r| r.partition == Some(n)).and_then(|r| r.fs.clone());
    let end_limit = usable_end(&table, target.size);
    // Fill without --align keeps 1 MiB alignment when the source had it.
    let mib_aligned = table.partitions.iter().all(|p| p.start % (1 << 20) == 0);
    let default_align = if opts.mode == LayoutMode::Fill && mib_aligned { 1 << 20 } else { u64::from(tss) };
    let align = opts.align.unwrap_or(default_align).max(u64::from(tss));
    if align % u64::from(tss) != 0 {
        return Err(Error::refused(format!("alignment {align} is not a multiple of the sector size {tss}"), "use --align 1MiB"));
    }
    // New positions, in start order; logical partitions keep room for their EBR.
    let order: Vec<usize> = {
        let mut v: Vec<usize> = (0..table.partitions.len()).filter(|&i| !table.partitions[i].ptype.is_extended()).collect();
        v.sort_by_key(|&i| table.partitions[i].start);
        v
    };
    let place = |growth: &dyn Fn(&Partition) -> u64| -> Vec<(usize, u64, u64)> {
        let mut out = Vec::new();
        let mut prev_old_end = 0u64;
        let mut prev_new_end = 0u64;
        for &i in &order {
            let p = &table.partitions[i];
            let gap = p.start.saturating_sub(prev_old_end);
            let mut start = prev_new_end + gap;
            if opts.align.is_some() || opts.mode == LayoutMode::Fill {
                start = align_up(start, align);
                if p.logical && start - prev_new_end < u64::from(tss) {
                    start = align_up(prev_new_end + u64::from(tss), align);
                }
            }
            let len = p.len + growth(p);
            out.push((i, start, len));
            prev_old_end = p.end();
            prev_new_end = start + len;
        }
        out
    };
    let base = place(&|_| 0);
    let end0 = base.iter().map(|(_, s, l)| s + l).max().unwrap_or(0);
    if end0 > end_limit {
        return Err(too_small(end0 + (target.size - end_limit), target));
    }
    let positions = if opts.mode == LayoutMode::Fill {
        let growable: Vec<&Partition> = order.iter().map(|&i| &table.partitions[i]).filter(|p| !fixed_size(p, fs_of(p.number).as_ref())).collect();
        let total: u64 = growable.iter().map(|p| p.len).sum();
        let mut extra = end_limit - end0;
        // Alignment of later starts can eat into the extra room; shrink the
        // share until everything fits.
        loop {
            let grow = |p: &Partition| {
                if total == 0 || fixed_size(p, fs_of(p.number).as_ref()) {
                    0
                } else {
                    ((extra as u128 * p.len as u128 / total as u128) as u64) / align * align
                }
            };
            let pos = place(&grow);
            let end = pos.iter().map(|(_, s, l)| s + l).max().unwrap_or(0);
            if end <= end_limit || extra == 0 {
                break pos;
            }
            extra = extra.saturating_sub(end - end_limit + align);
        }
    } else {
        base
    };
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
    // Validate by serializing once (overlaps, alignment, MBR limits).
    part::serialize(&moved, target.size, src.sector0.as_deref()).map_err(|e| {
        Error::refused(format!("the new partition table would be invalid: {e}"), "try without --align, or with --layout keep")
    })?;
    let new_start = |n: u32| moved.partitions.iter().find(|p| p.number == n).map(|p| p.start);
    let mut moves = Vec::new();
    let mut grows = Vec::new();
    let first_new = moved.partitions.iter().map(|p| p.start).min().unwrap_or(u64::MAX);
    for r in &src.regions {
        match r.kind {
            RegionKind::Head => {
                let mut m = mv(r, 0);
                if m.len > first_new {
                    m.len = first_new;
                    m.bytes = m.bytes.min(first_new);
                }
                moves.push(m);
            }
            RegionKind::Partition => {
                let n = r.partition.unwrap_or(0);
                let Some(s) = new_start(n) else { continue };
                moves.push(mv(r, s));
                let newp = moved.partitions.iter().find(|p| p.number == n).map(|p| p.len).unwrap_or(r.len);
                if newp > r.len {
                    let (action, grows_fs) = grow_action(r.fs.as_ref());
                    grows.push(FsGrow {
                        partition: n,
                        fs: r.fs.as_ref().map(|f| f.kind.name().to_string()).unwrap_or_else(|| "none".into()),
                        offset: s,
                        from: r.len,
                        to: newp,
                        action,
                        grows: grows_fs,
                    });
                }
            }
            RegionKind::Gap => {
                // Keep a gap at the same distance before the partition that follows it.
                let next = table0.partitions.iter().filter(|p| !p.ptype.is_extended() && p.start >= r.disk_offset + r.len).min_by_key(|p| p.start);
                let target_off = next.and_then(|p| new_start(p.number).map(|s| (s, p.start))).and_then(|(s, old)| s.checked_sub(old - r.disk_offset));
                let prev_new_end = moved.partitions.iter().filter(|p| !p.ptype.is_extended()).map(|p| p.end()).filter(|&e| target_off.is_some_and(|t| e <= t + r.len)).max().unwrap_or(0);
                match target_off {
                    Some(t) if t >= prev_new_end && t + r.len <= end_limit => moves.push(mv(r, t)),
                    _ => warnings.push(format!("{} not copied: it has no place in the new layout", label(r.kind, r.partition, r.disk_offset))),
                }
            }
            RegionKind::Disk => {}
        }
    }
    Ok(Layout { table_after: Some(moved), moves, grows, writes_table: true, warnings })
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

fn too_small(need: u64, target: &DiskInfo) -> Error {
    Error::refused(
        format!("{} is too small: the plan needs {} ({need} bytes), the disk has {}", target.path.display(), human_size(need), human_size(target.size)),
        "choose a larger target disk (restoring to a smaller disk shrinks filesystems and is not supported yet)",
    )
}

/// Map a partition type to the other table kind.
pub fn convert_type(t: &PartType, fs: Option<&FsInfo>, to: TableKind) -> PartType {
    const ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    const BASIC: &str = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7";
    const LINUX: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
    const SWAP: &str = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";
    match (t, to) {
        (PartType::Gpt(_), TableKind::Gpt) | (PartType::Mbr(_), TableKind::Mbr) => t.clone(),
        (PartType::Gpt(_), TableKind::Mbr) => PartType::Mbr(if t.is_esp() {
            0xef
        } else if t.is_swap() {
            0x82
        } else if t.is_linux_data() {
            0x83
        } else {
            match fs.map(|f| &f.kind) {
                Some(FsKind::Fat32) => 0x0c,
                Some(FsKind::Fat12 | FsKind::Fat16) => 0x0e,
                Some(FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4) => 0x83,
                _ => 0x07,
            }
        }),
        (PartType::Mbr(b), TableKind::Gpt) => PartType::Gpt(
            match b {
                0xef => ESP,
                0x82 => SWAP,
                0x83 => LINUX,
                _ => BASIC,
            }
            .to_string(),
        ),
    }
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
            if p.len < src.len {
                return Err(Error::refused(
                    format!("partition {m} ({}) is smaller than the source partition ({})", human_size(p.len), human_size(src.len)),
                    "choose a larger partition or restore into free space (shrinking is not supported yet)",
                ));
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
            Ok(Layout { table_after: None, moves: vec![m_], grows, writes_table: false, warnings })
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
            Ok(Layout { table_after: Some(t), moves: vec![m_], grows: Vec::new(), writes_table: true, warnings })
        }
    }
}

#[cfg(test)]
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

    #[test]
    fn fill_grows_data_partitions_proportionally() {
        let l = whole_disk(&src(), &disk(1002 * MIB, 512), &LayoutOptions { mode: LayoutMode::Fill, align: None }).unwrap();
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
        let l = whole_disk(&s, &disk(600 * MIB, 512), &LayoutOptions { mode: LayoutMode::Keep, align: Some(MIB) }).unwrap();
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
}
