//! MBR codec: the IBM PC partition table in sector 0 and the chain of
//! Extended Boot Records (EBRs) inside an extended partition, read the way
//! Linux `block/partitions/msdos.c` reads them (which also fixes the
//! numbering: primaries 1-4 by slot, logicals 5.. in chain order).
//!
//! Sector 0 layout: boot code 0..440, disk signature 440..444 (Windows NT),
//! 444..446 reserved, four 16-byte entries at 446, 0x55 0xAA at 510.
//! Entry: status (0x80 active), CHS start (3), type, CHS end (3), LBA start
//! (u32 LE), sector count (u32 LE). UEFI 2.10 §5.2.1 (legacy MBR) describes
//! the same layout.
//!
//! In an EBR, entry 0 is the logical partition, its start relative to this
//! EBR; entry 1 links to the next EBR, its start relative to the start of the
//! extended partition, its size covering the next EBR up to the end of the
//! next logical partition.

use std::collections::HashSet;

use super::{
    layout_warnings, le_u32, read_bytes, PartError, PartType, Partition, PartitionTable,
    SectorWrite, TableKind,
};
use crate::read_at::ReadAt;

/// More EBRs than this is treated as a corrupt chain (Linux allows up to
/// 256 minors per disk in total; nobody has 255 logical partitions).
pub(super) const MAX_EBRS: usize = 256;

const ENTRIES: usize = 446;
const PROTECTIVE: u8 = 0xee;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Entry {
    status: u8,
    ptype: u8,
    start: u32,
    len: u32,
}

impl Entry {
    fn parse(b: &[u8]) -> Self {
        Entry {
            status: b[0],
            ptype: b[4],
            start: le_u32(b, 8),
            len: le_u32(b, 12),
        }
    }

    fn is_empty(&self) -> bool {
        self.ptype == 0 || self.len == 0
    }
}

/// A parsed sector 0.
#[derive(Debug, Clone, Default)]
pub(super) struct Mbr {
    entries: [Entry; 4],
    signature: u32,
}

impl Mbr {
    pub(super) fn has_protective(&self) -> bool {
        self.entries.iter().any(|e| e.ptype == PROTECTIVE)
    }

    /// A protective 0xEE entry next to other entries (UEFI 2.10 §5.2.3
    /// allows only the 0xEE one).
    pub(super) fn is_hybrid(&self) -> bool {
        self.has_protective()
            && self
                .entries
                .iter()
                .any(|e| !e.is_empty() && e.ptype != PROTECTIVE)
    }
}

pub(super) fn is_extended_type(t: u8) -> bool {
    matches!(t, 0x05 | 0x0f | 0x85)
}

/// Sector 0 as an MBR, or None when it is not one: no 0x55AA, a status byte
/// other than 0x00/0x80 (the check Linux and libblkid use), or the boot
/// sector of a FAT/NTFS/exFAT filesystem without a table ("superfloppy").
pub(super) fn parse_sector0(s: &[u8]) -> Option<Mbr> {
    if s.len() < 512 || s[510] != 0x55 || s[511] != 0xaa {
        return None;
    }
    let entries = [0, 1, 2, 3].map(|i| Entry::parse(&s[ENTRIES + 16 * i..ENTRIES + 16 * (i + 1)]));
    if entries.iter().any(|e| e.status != 0 && e.status != 0x80) {
        return None;
    }
    let protective = entries.iter().any(|e| e.ptype == PROTECTIVE);
    if !protective && looks_like_vbr(s) {
        return None;
    }
    Some(Mbr {
        entries,
        signature: le_u32(s, 440),
    })
}

/// A filesystem boot sector: x86 jump + an NTFS/exFAT OEM id or a FAT
/// filesystem type string with a sane bytes-per-sector field (the same idea
/// as libblkid's "probably FAT -- ignore" in `partitions/dos.c`).
fn looks_like_vbr(s: &[u8]) -> bool {
    let jump = (s[0] == 0xeb && s[2] == 0x90) || s[0] == 0xe9;
    if !jump {
        return false;
    }
    if &s[3..11] == b"NTFS    " || &s[3..11] == b"EXFAT   " {
        return true;
    }
    let bps = u16::from_le_bytes([s[11], s[12]]);
    let bps_ok = bps.is_power_of_two() && (512..=4096).contains(&bps);
    bps_ok
        && (&s[54..59] == b"FAT12"
            || &s[54..59] == b"FAT16"
            || &s[82..87] == b"FAT32"
            || &s[54..57] == b"FAT")
}

fn mbr_partition(number: u32, e: &Entry, base_lba: u64, ss: u64, logical: bool) -> Partition {
    Partition {
        number,
        start: (base_lba + u64::from(e.start)) * ss,
        len: u64::from(e.len) * ss,
        ptype: PartType::Mbr(e.ptype),
        guid: None,
        name: String::new(),
        attributes: 0,
        bootable: e.status == 0x80,
        logical,
    }
}

/// Read the MBR table `m` (sector 0 already parsed) and its EBR chain.
pub(super) fn read(
    dev: &dyn ReadAt,
    disk_len: u64,
    ss: u32,
    m: &Mbr,
) -> Result<PartitionTable, PartError> {
    let ssz = u64::from(ss);
    let mut warnings = Vec::new();
    let mut partitions = Vec::new();
    let mut ext: Option<(u64, u64)> = None;
    for (i, e) in m.entries.iter().enumerate() {
        if e.is_empty() {
            continue;
        }
        if is_extended_type(e.ptype) {
            if ext.is_some() {
                warnings.push(format!(
                    "second extended partition in slot {} ignored (only the first is followed)",
                    i + 1
                ));
            } else {
                ext = Some((u64::from(e.start), u64::from(e.len)));
            }
        }
        partitions.push(mbr_partition(i as u32 + 1, e, 0, ssz, false));
    }
    if let Some((ext_start, ext_len)) = ext {
        read_chain(dev, ss, ext_start, ext_len, &mut partitions, &mut warnings)?;
    }
    partitions.sort_by_key(|p| (p.start, p.number));
    let mut t = PartitionTable {
        kind: TableKind::Mbr,
        sector_size: ss,
        disk_id: format!("{:08x}", m.signature),
        first_usable: ssz,
        last_usable: disk_len / ssz * ssz,
        partitions,
        max_entries: 4,
        warnings,
    };
    layout_warnings(&mut t, disk_len);
    Ok(t)
}

/// Follow the EBR chain of the extended partition at `ext_start` (LBA).
fn read_chain(
    dev: &dyn ReadAt,
    ss: u32,
    ext_start: u64,
    ext_len: u64,
    out: &mut Vec<Partition>,
    warnings: &mut Vec<String>,
) -> Result<(), PartError> {
    let ssz = u64::from(ss);
    let ext_end = ext_start + ext_len;
    let mut visited = HashSet::new();
    let mut ebr = ext_start;
    let mut number = 5;
    loop {
        if !visited.insert(ebr) {
            return Err(PartError::EbrLoop { lba: ebr });
        }
        if visited.len() > MAX_EBRS {
            return Err(PartError::TooManyLogical { limit: MAX_EBRS });
        }
        let s = read_bytes(dev, ebr * ssz, ssz)?;
        if s[510] != 0x55 || s[511] != 0xaa {
            // Linux stops the chain here too; an empty extended partition
            // (no logicals yet) has no valid first EBR.
            if ebr != ext_start {
                warnings.push(format!(
                    "EBR at LBA {ebr} has no 0x55AA signature; the chain ends there"
                ));
            }
            return Ok(());
        }
        let entries =
            [0, 1, 2, 3].map(|i| Entry::parse(&s[ENTRIES + 16 * i..ENTRIES + 16 * (i + 1)]));
        // Like Linux: the data partition is the first non-empty, non-extended
        // entry; the link is the first extended one.
        if let Some(e) = entries
            .iter()
            .find(|e| !e.is_empty() && !is_extended_type(e.ptype))
        {
            let p = mbr_partition(number, e, ebr, ssz, true);
            if p.start / ssz < ext_start || p.end() / ssz > ext_end {
                warnings.push(format!(
                    "logical partition {number} lies outside its extended partition"
                ));
            }
            out.push(p);
            number += 1;
        }
        let Some(link) = entries
            .iter()
            .find(|e| !e.is_empty() && is_extended_type(e.ptype))
        else {
            return Ok(());
        };
        let next = ext_start + u64::from(link.start);
        if next >= ext_end {
            warnings.push(format!(
                "EBR at LBA {ebr} links to LBA {next} outside the extended partition; the chain ends there"
            ));
            return Ok(());
        }
        ebr = next;
    }
}

/// Check that a partition's LBAs fit the 32-bit MBR fields with sectors of
/// `ss` bytes.
pub(super) fn check_lba_fits(p: &Partition, ss: u32) -> Result<(), PartError> {
    let ssz = u64::from(ss);
    for (what, v) in [("start LBA", p.start / ssz), ("sector count", p.len / ssz)] {
        if v > u64::from(u32::MAX) {
            return Err(PartError::MbrLbaTooLarge {
                number: p.number,
                what,
                lba: v,
            });
        }
    }
    Ok(())
}

/// Where each logical partition's EBR goes, as (EBR LBA, logical partition),
/// in chain order (by partition number). The first EBR is at the start of the
/// extended partition; each other one at the start of the gap before its
/// logical partition (right after the preceding logical partition), which is
/// where fdisk/sfdisk put it.
pub(super) fn ebr_positions(t: &PartitionTable) -> Result<Vec<(u64, &Partition)>, PartError> {
    let ssz = u64::from(t.sector_size);
    let mut logicals: Vec<&Partition> = t.partitions.iter().filter(|p| p.logical).collect();
    if logicals.is_empty() {
        return Ok(Vec::new());
    }
    let exts: Vec<&Partition> = t
        .partitions
        .iter()
        .filter(|p| !p.logical && p.ptype.is_extended())
        .collect();
    let [ext] = exts[..] else {
        return Err(PartError::InvalidTable(format!(
            "logical partitions need exactly one extended partition, found {}",
            exts.len()
        )));
    };
    logicals.sort_by_key(|p| p.number);
    let mut out = Vec::with_capacity(logicals.len());
    for (i, p) in logicals.iter().enumerate() {
        if p.start <= ext.start || p.end() > ext.end() {
            return Err(PartError::InvalidPartition {
                number: p.number,
                problem: format!(
                    "logical partition must lie inside the extended partition {} after its first sector",
                    ext.number
                ),
            });
        }
        let ebr = if i == 0 {
            ext.start
        } else {
            logicals
                .iter()
                .map(|q| q.end())
                .filter(|&e| e <= p.start)
                .max()
                .unwrap_or(ext.start)
                .max(ext.start)
        };
        if ebr >= p.start || (i > 0 && ebr == ext.start) {
            return Err(PartError::InvalidPartition {
                number: p.number,
                problem: "no free sector before it for its EBR (leave a gap of at least one sector, usually 1 MiB)"
                    .into(),
            });
        }
        out.push((ebr / ssz, *p));
    }
    Ok(out)
}

/// CHS address for an LBA with the conventional 255 heads x 63 sectors
/// geometry; LBAs beyond cylinder 1023 get the 1023/254/63 marker every
/// modern tool writes.
fn chs(lba: u64) -> [u8; 3] {
    let c = lba / (255 * 63);
    if c > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let h = (lba / 63) % 255;
    let s = lba % 63 + 1;
    [h as u8, (s as u8) | (((c >> 8) as u8) << 6), c as u8]
}

/// Write entry `slot`; `start` is the LBA field (relative in EBRs), `base`
/// what it is relative to (CHS fields are absolute, as fdisk writes them).
fn put_entry(sec: &mut [u8], slot: usize, status: u8, ptype: u8, base: u64, start: u64, len: u64) {
    let e = &mut sec[ENTRIES + 16 * slot..ENTRIES + 16 * (slot + 1)];
    e[0] = status;
    e[1..4].copy_from_slice(&chs(base + start));
    e[4] = ptype;
    e[5..8].copy_from_slice(&chs((base + start + len).saturating_sub(1)));
    // Callers checked both fit 32 bits (check_lba_fits).
    e[8..12].copy_from_slice(&(start as u32).to_le_bytes());
    e[12..16].copy_from_slice(&(len as u32).to_le_bytes());
}

fn boot_sector(ssz: u64, sector0: Option<&[u8]>) -> Vec<u8> {
    let mut s = vec![0u8; ssz as usize];
    if let Some(src) = sector0 {
        let n = src.len().min(440);
        s[..n].copy_from_slice(&src[..n]);
    }
    s[510] = 0x55;
    s[511] = 0xaa;
    s
}

/// The protective MBR of UEFI 2.10 §5.2.3 (table 5.4): one 0xEE entry from
/// LBA 1 over the rest of the disk (0xFFFFFFFF sectors when larger), start
/// CHS 0x000200, end CHS of the last LBA, disk signature zero ("unused").
pub(super) fn protective(disk_sectors: u64, ssz: u64, sector0: Option<&[u8]>) -> Vec<u8> {
    let mut s = boot_sector(ssz, sector0);
    let len = (disk_sectors - 1).min(u64::from(u32::MAX));
    put_entry(&mut s, 0, 0, PROTECTIVE, 0, 1, len);
    if disk_sectors - 1 > u64::from(u32::MAX) || disk_sectors / (255 * 63) > 1023 {
        // Table 5.4: "Set to 0xFFFFFF if it is not possible to represent the
        // value in this field."
        s[ENTRIES + 5..ENTRIES + 8].fill(0xff);
    }
    s
}

/// Sector 0 and the EBRs for an MBR table.
pub(super) fn serialize(
    t: &PartitionTable,
    disk_len: u64,
    sector0: Option<&[u8]>,
) -> Result<Vec<SectorWrite>, PartError> {
    let ssz = u64::from(t.sector_size);
    let end = disk_len / ssz * ssz;
    for p in &t.partitions {
        check_lba_fits(p, t.sector_size)?;
        if p.start < ssz || p.end() > end {
            return Err(PartError::OutsideUsable {
                number: p.number,
                start: p.start,
                end: p.end(),
                first_usable: ssz,
                last_usable: end,
            });
        }
        let ok = if p.logical {
            p.number >= 5
        } else {
            (1..=4).contains(&p.number)
        };
        if !ok {
            return Err(PartError::InvalidPartition {
                number: p.number,
                problem: "MBR numbers are 1-4 for primary and 5.. for logical partitions".into(),
            });
        }
        if p.logical && p.ptype.is_extended() {
            return Err(PartError::InvalidPartition {
                number: p.number,
                problem: "a logical partition cannot be an extended container".into(),
            });
        }
    }
    let ebrs = ebr_positions(t)?;
    if ebrs.len() > MAX_EBRS {
        return Err(PartError::TooManyLogical { limit: MAX_EBRS });
    }

    let mut s0 = boot_sector(ssz, sector0);
    let sig = match u32::from_str_radix(&t.disk_id, 16) {
        Ok(v) if t.disk_id.len() == 8 => v.to_le_bytes(),
        _ if t.disk_id.is_empty() => match sector0 {
            Some(s) if s.len() >= 444 => [s[440], s[441], s[442], s[443]],
            _ => [0; 4],
        },
        _ => {
            return Err(PartError::InvalidTable(format!(
                "MBR disk signature {:?} is not 8 hex digits",
                t.disk_id
            )))
        }
    };
    s0[440..444].copy_from_slice(&sig);
    for p in t.partitions.iter().filter(|p| !p.logical) {
        let PartType::Mbr(ty) = p.ptype else {
            return Err(wrong_type());
        };
        put_entry(
            &mut s0,
            p.number as usize - 1,
            if p.bootable { 0x80 } else { 0 },
            ty,
            0,
            p.start / ssz,
            p.len / ssz,
        );
    }
    let mut out = vec![SectorWrite {
        offset: 0,
        data: s0,
    }];
    let ext_lba = t
        .partitions
        .iter()
        .find(|p| !p.logical && p.ptype.is_extended())
        .map(|p| p.start / ssz)
        .unwrap_or(0);
    for (i, (ebr, p)) in ebrs.iter().enumerate() {
        let mut s = vec![0u8; ssz as usize];
        s[510] = 0x55;
        s[511] = 0xaa;
        let PartType::Mbr(ty) = p.ptype else {
            return Err(wrong_type());
        };
        put_entry(
            &mut s,
            0,
            if p.bootable { 0x80 } else { 0 },
            ty,
            *ebr,
            p.start / ssz - ebr,
            p.len / ssz,
        );
        if let Some((next, np)) = ebrs.get(i + 1) {
            // Link: start relative to the extended partition, size from the
            // next EBR to the end of the next logical partition.
            put_entry(
                &mut s,
                1,
                0,
                0x05,
                ext_lba,
                next - ext_lba,
                np.end() / ssz - next,
            );
        }
        out.push(SectorWrite {
            offset: ebr * ssz,
            data: s,
        });
    }
    Ok(out)
}

/// validate_common already rejects GPT types in an MBR table; this keeps the
/// codec safe on its own.
fn wrong_type() -> PartError {
    PartError::InvalidTable("GPT partition type in an MBR table".into())
}
