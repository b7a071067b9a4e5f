//! FAT12 / FAT16 / FAT32.
//!
//! Per Microsoft's "FAT: General Overview of On-Disk Format" (v1.03): the FAT
//! type is decided by the cluster count alone (< 4085 FAT12, < 65525 FAT16,
//! else FAT32), never by the `FAT12   ` string. The used map is the reserved
//! region (boot sector, FAT32 FSInfo and backup boot sector), every FAT copy,
//! the FAT12/16 root directory, and every cluster whose entry in the active
//! FAT is non-zero, except bad-cluster marks.

use super::{add, bytes, le16, le32, mul, read_vec, u8_at, FsError, FsInfo, FsKind, CHUNK};
use crate::extent::RunBuilder;
use crate::read_at::ReadAt;
use crate::Extent;

const KIND: &str = "fat";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FatType {
    Fat12,
    Fat16,
    Fat32,
}

/// The BIOS parameter block, validated, with the derived layout in bytes.
#[derive(Debug, Clone)]
pub(crate) struct Bpb {
    pub fat_type: FatType,
    pub bytes_per_sector: u64,
    pub cluster_size: u64,
    pub reserved_bytes: u64,
    pub num_fats: u64,
    pub fat_bytes: u64,
    pub root_dir_bytes: u64,
    pub data_start: u64,
    /// Count of data clusters (numbered 2..cluster_count + 2).
    pub cluster_count: u64,
    pub total_bytes: u64,
    pub active_fat: u64,
    pub root_cluster: u64,
    pub fsinfo_sector: u64,
    pub volume_id: Option<u32>,
    pub bpb_label: Option<String>,
}

impl Bpb {
    /// `Ok(None)`: not a FAT boot sector. `Err`: it is one, but inconsistent.
    pub(crate) fn parse(bs: &[u8]) -> Result<Option<Bpb>, FsError> {
        if bs.len() < 512 || le16(bs, 510) != 0xAA55 || !matches!(u8_at(bs, 0), 0xEB | 0xE9) {
            return Ok(None);
        }
        let bps = u64::from(le16(bs, 0x0B));
        let spc = u64::from(u8_at(bs, 0x0D));
        let media = u8_at(bs, 0x15);
        if !matches!(bps, 512 | 1024 | 2048 | 4096)
            || !spc.is_power_of_two()
            || !(media == 0xF0 || media >= 0xF8)
        {
            return Ok(None);
        }
        let bad = |what: String| FsError::Corrupt {
            kind: KIND,
            offset: 0,
            what,
        };
        let rsvd = u64::from(le16(bs, 0x0E));
        let nfats = u64::from(u8_at(bs, 0x10));
        let root_entries = u64::from(le16(bs, 0x11));
        let tot16 = u64::from(le16(bs, 0x13));
        let fatsz16 = u64::from(le16(bs, 0x16));
        let tot = if tot16 != 0 {
            tot16
        } else {
            u64::from(le32(bs, 0x20))
        };
        let fatsz = if fatsz16 != 0 {
            fatsz16
        } else {
            u64::from(le32(bs, 0x24))
        };
        if rsvd == 0 || nfats == 0 || tot == 0 || fatsz == 0 {
            return Err(bad(format!(
                "BPB has {rsvd} reserved sectors, {nfats} FATs of {fatsz} sectors, {tot} sectors"
            )));
        }
        let root_dir_sectors = (root_entries * 32).div_ceil(bps);
        let meta_sectors = rsvd + nfats * fatsz + root_dir_sectors;
        let data_sectors = tot.checked_sub(meta_sectors).ok_or_else(|| {
            bad(format!(
                "{meta_sectors} metadata sectors exceed the {tot} sectors"
            ))
        })?;
        let cluster_count = data_sectors / spc;
        let fat_type = if cluster_count < 4085 {
            FatType::Fat12
        } else if cluster_count < 65525 {
            FatType::Fat16
        } else {
            FatType::Fat32
        };
        let is32 = fat_type == FatType::Fat32;
        if is32 && (fatsz16 != 0 || root_entries != 0) {
            return Err(bad("FAT32 cluster count but a FAT12/16 BPB".into()));
        }
        if !is32 && root_entries == 0 {
            return Err(bad("FAT12/16 without root directory entries".into()));
        }
        let ext = if is32 { 0x40 } else { 0x24 };
        let volume_id = (u8_at(bs, ext + 2) == 0x29).then(|| le32(bs, ext + 3));
        let bpb_label = (u8_at(bs, ext + 2) == 0x29)
            .then(|| label_11(bytes(bs, ext + 7, 11)))
            .flatten();
        let ext_flags = le16(bs, 0x28);
        let active_fat = if is32 && ext_flags & 0x80 != 0 {
            u64::from(ext_flags & 0x0F)
        } else {
            0
        };
        if active_fat >= nfats {
            return Err(bad(format!("active FAT {active_fat} of {nfats}")));
        }
        let fat_bytes = fatsz * bps;
        let needed = match fat_type {
            FatType::Fat12 => ((cluster_count + 2) * 3).div_ceil(2),
            FatType::Fat16 => (cluster_count + 2) * 2,
            FatType::Fat32 => (cluster_count + 2) * 4,
        };
        if needed > fat_bytes {
            return Err(bad(format!(
                "{cluster_count} clusters need a {needed}-byte FAT, it has {fat_bytes}"
            )));
        }
        let root_cluster = if is32 { u64::from(le32(bs, 0x2C)) } else { 0 };
        if is32 && (root_cluster < 2 || root_cluster >= cluster_count + 2) {
            return Err(bad(format!(
                "root directory cluster {root_cluster} is out of range"
            )));
        }
        Ok(Some(Bpb {
            fat_type,
            bytes_per_sector: bps,
            cluster_size: spc * bps,
            reserved_bytes: rsvd * bps,
            num_fats: nfats,
            fat_bytes,
            root_dir_bytes: root_dir_sectors * bps,
            data_start: (rsvd + nfats * fatsz + root_dir_sectors) * bps,
            cluster_count,
            total_bytes: tot * bps,
            active_fat,
            root_cluster,
            fsinfo_sector: if is32 { u64::from(le16(bs, 0x30)) } else { 0 },
            volume_id,
            bpb_label,
        }))
    }

    fn kind(&self) -> FsKind {
        match self.fat_type {
            FatType::Fat12 => FsKind::Fat12,
            FatType::Fat16 => FsKind::Fat16,
            FatType::Fat32 => FsKind::Fat32,
        }
    }

    fn fat_offset(&self) -> u64 {
        self.reserved_bytes + self.active_fat * self.fat_bytes
    }

    fn cluster_offset(&self, c: u64) -> u64 {
        self.data_start + (c - 2) * self.cluster_size
    }

    /// Call `f(cluster, entry)` for every data cluster's FAT entry, reading
    /// the active FAT in chunks.
    fn for_each_entry(&self, dev: &dyn ReadAt, mut f: impl FnMut(u64, u32)) -> Result<(), FsError> {
        let end = self.cluster_count + 2;
        match self.fat_type {
            FatType::Fat12 => {
                // At most 4086 entries (6 KiB): read it whole, since entries
                // straddle byte boundaries.
                let n = (end * 3).div_ceil(2);
                let fat = read_vec(dev, self.fat_offset(), n, CHUNK, KIND)?;
                for c in 2..end {
                    let off = (c * 3 / 2) as usize;
                    let v = le16(&fat, off);
                    let e = if c % 2 == 1 { v >> 4 } else { v & 0x0FFF };
                    f(c, u32::from(e));
                }
            }
            FatType::Fat16 | FatType::Fat32 => {
                let w = if self.fat_type == FatType::Fat16 {
                    2
                } else {
                    4
                };
                let per_chunk = CHUNK / w;
                let mut c = 0u64;
                while c < end {
                    let n = (end - c).min(per_chunk);
                    let buf = read_vec(dev, self.fat_offset() + c * w, n * w, CHUNK, KIND)?;
                    for (i, e) in buf.chunks_exact(w as usize).enumerate() {
                        let cl = c + i as u64;
                        if cl < 2 {
                            continue;
                        }
                        let v = if w == 2 {
                            u32::from(le16(e, 0))
                        } else {
                            le32(e, 0) & 0x0FFF_FFFF
                        };
                        f(cl, v);
                    }
                    c += n;
                }
            }
        }
        Ok(())
    }

    fn bad_mark(&self) -> u32 {
        match self.fat_type {
            FatType::Fat12 => 0xFF7,
            FatType::Fat16 => 0xFFF7,
            FatType::Fat32 => 0x0FFF_FFF7,
        }
    }

    /// The volume label from the root directory's volume-ID entry, which is
    /// what Windows and `blkid` show (the BPB copy is often stale).
    fn root_label(&self, dev: &dyn ReadAt) -> Option<String> {
        let (off, n) = if self.fat_type == FatType::Fat32 {
            (self.cluster_offset(self.root_cluster), self.cluster_size)
        } else {
            (
                self.reserved_bytes + self.num_fats * self.fat_bytes,
                self.root_dir_bytes,
            )
        };
        let dir = read_vec(dev, off, n.min(64 * 1024), CHUNK, KIND).ok()?;
        for e in dir.chunks_exact(32) {
            match e[0] {
                0x00 => break,
                0xE5 => continue,
                _ if e[11] & 0x3F == 0x08 => return label_11(&e[..11]),
                _ => {}
            }
        }
        None
    }
}

fn label_11(b: &[u8]) -> Option<String> {
    let s: String = b.iter().map(|&c| char::from(c)).collect();
    let s = s.trim_end_matches(' ');
    (!s.is_empty() && s != "NO NAME").then(|| s.to_owned())
}

pub(crate) fn probe(dev: &dyn ReadAt, len: u64, head: &[u8]) -> Result<Option<FsInfo>, FsError> {
    let Some(bpb) = Bpb::parse(head)? else {
        return Ok(None);
    };
    let used = if bpb.total_bytes > len {
        None
    } else if bpb.fat_type == FatType::Fat32 {
        // FSInfo's free count: a hint per the spec, checked for range.
        let off = bpb.fsinfo_sector * bpb.bytes_per_sector;
        let fsi = read_vec(dev, off, 512, 512, KIND).ok();
        fsi.and_then(|s| {
            let free = u64::from(le32(&s, 488));
            (bpb.fsinfo_sector != 0
                && le32(&s, 0) == 0x4161_5252
                && le32(&s, 484) == 0x6141_7272
                && free <= bpb.cluster_count)
                .then(|| (bpb.cluster_count - free) * bpb.cluster_size)
        })
    } else {
        let mut n = 0u64;
        let bad = bpb.bad_mark();
        bpb.for_each_entry(dev, |_, e| n += u64::from(e != 0 && e != bad))?;
        Some(n * bpb.cluster_size)
    };
    let label = bpb.root_label(dev).or_else(|| bpb.bpb_label.clone());
    Ok(Some(FsInfo {
        kind: bpb.kind(),
        label,
        uuid: bpb
            .volume_id
            .map(|id| format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF)),
        block_size: bpb.cluster_size as u32,
        size: bpb.total_bytes,
        used,
        sector_size: Some(bpb.bytes_per_sector as u32),
    }))
}

pub(crate) fn used_extents(dev: &dyn ReadAt, len: u64) -> Result<Vec<Extent>, FsError> {
    let head = read_vec(dev, 0, 4096.min(len), 4096, KIND)?;
    let bpb = Bpb::parse(&head)?.ok_or_else(|| FsError::Corrupt {
        kind: KIND,
        offset: 0,
        what: "no FAT boot sector".into(),
    })?;
    let data_end = add(
        KIND,
        0,
        bpb.data_start,
        mul(KIND, 0, bpb.cluster_count, bpb.cluster_size)?,
    )?;
    if data_end > len {
        return Err(FsError::Corrupt {
            kind: KIND,
            offset: 0,
            what: format!(
                "the data area ends at byte {data_end}, past the partition ({len} bytes)"
            ),
        });
    }
    // Reserved sectors (boot, FSInfo, backup boot), all FATs, root directory.
    let mut runs = RunBuilder::new();
    runs.add(0, bpb.data_start);
    let bad = bpb.bad_mark();
    let mut cur: Option<(u64, u64)> = None; // run of used clusters
    bpb.for_each_entry(dev, |c, e| {
        let used = e != 0 && e != bad;
        match (&mut cur, used) {
            (Some((_, n)), true) => *n += 1,
            (None, true) => cur = Some((c, 1)),
            (Some((s, n)), false) => {
                runs.add(bpb.cluster_offset(*s), *n * bpb.cluster_size);
                cur = None;
            }
            (None, false) => {}
        }
    })?;
    if let Some((s, n)) = cur {
        runs.add(bpb.cluster_offset(s), n * bpb.cluster_size);
    }
    Ok(runs.finish(len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::total;
    use crate::fs::testutil::{fixture, probe_fixture};
    use crate::fs::{probe as probe_any, used_extents as used_any};

    fn check(name: &str, kind: FsKind, sector: u32) -> (Vec<u8>, FsInfo, Vec<Extent>) {
        let (img, info, v) = probe_fixture(name, kind, Some(sector));
        let len = img.len() as u64;
        assert_eq!(v[0].start, 0);
        if let Some(used) = info.used {
            assert!(total(&v) >= used, "{name}");
        }
        assert!(total(&v) < len / 2, "{name}: map should be small");
        (img, info, v)
    }

    #[test]
    fn fat12() {
        check("fat12.img", FsKind::Fat12, 512);
    }

    #[test]
    fn fat16() {
        check("fat16.img", FsKind::Fat16, 512);
    }

    #[test]
    fn fat32() {
        let (_, info, v) = check("fat32.img", FsKind::Fat32, 512);
        assert!(info.used.is_some());
        // Backup boot sector at sector 6 lies in the reserved region.
        assert!(v[0].len >= 7 * 512);
    }

    #[test]
    fn fat16_4k_sectors() {
        check("fat16-4k.img", FsKind::Fat16, 4096);
    }

    #[test]
    fn type_by_cluster_count_not_label() {
        // A FAT16 volume whose type string claims FAT32 is still FAT16.
        let mut img = fixture("fat16.img");
        img[0x36..0x3E].copy_from_slice(b"FAT32   ");
        let len = img.len() as u64;
        assert_eq!(
            probe_any(&img, len).expect("probe").expect("fat").kind,
            FsKind::Fat16
        );
    }

    #[test]
    fn bad_bpb_is_an_error() {
        let img = fixture("fat16.img");
        let len = img.len() as u64;
        let info = probe_any(&img, len).expect("probe").expect("fat");
        for (off, val) in [(0x0E, 0u8), (0x10, 0), (0x16, 0)] {
            let mut bad = img.clone();
            bad[off] = val;
            if off == 0x16 {
                bad[0x17] = 0;
            }
            assert!(probe_any(&bad, len).is_err(), "offset {off:#x}");
            assert!(used_any(&bad, len, &info).is_err(), "offset {off:#x}");
        }
        // Huge sector count: the volume extends past the partition.
        let mut bad = img.clone();
        bad[0x13..0x15].fill(0);
        bad[0x20..0x24].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        assert!(used_any(&bad, len, &info).is_err());
        // Truncated image.
        let short = img[..img.len() / 3].to_vec();
        assert!(used_any(&short, short.len() as u64, &info).is_err());
        // Not FAT at all once the signature is gone.
        let mut bad = img.clone();
        bad[510] = 0;
        assert!(probe_any(&bad, len).expect("probe").is_none());
    }

    #[test]
    fn garbage_never_panics() {
        for name in ["fat32.img", "fat12.img"] {
            let mut img = fixture(name);
            let len = img.len() as u64;
            let info = probe_any(&img, len).expect("probe").expect("fat");
            crate::fs::testutil::fuzz(&mut img, &[(11, 90)], 500, |bad| {
                let _ = probe_any(&bad, len);
                let _ = used_any(&bad, len, &info);
            });
        }
    }
}
