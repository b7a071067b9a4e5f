//! Files of FAT12/16/32, read-only: cluster chains, the fixed FAT12/16 root
//! directory, VFAT long file names and 8.3 names.
//!
//! Per Microsoft's "FAT: General Overview of On-Disk Format" (v1.03). Times
//! are local times without a zone on disk; they are taken as UTC, as Linux
//! does without `tz=`. Chains are followed at most cluster-count steps, so a
//! looping FAT gives an error, not an endless loop.

use std::collections::HashMap;
use std::sync::Mutex;

use super::{read, Entry, FileMap, FilesError, Kind, MapBuilder, Node};
use crate::fs::fat::{Bpb, FatType};
use crate::fs::{le16, le32};
use crate::read_at::ReadAt;

const KIND: &str = "fat";
/// FAT bytes cached per block.
const FAT_BLOCK: u64 = 64 << 10;
/// FAT blocks kept in memory (4 MiB).
const FAT_BLOCKS: usize = 64;
/// A directory holds at most 65536 entries (the spec's limit).
const MAX_DIR: u64 = 65536 * 32;

const ATTR_RO: u8 = 0x01;
const ATTR_HIDDEN: u8 = 0x02;
const ATTR_SYSTEM: u8 = 0x04;
const ATTR_VOLUME: u8 = 0x08;
const ATTR_DIR: u8 = 0x10;
const ATTR_ARCHIVE: u8 = 0x20;
const ATTR_LFN: u8 = 0x0F;

/// An open FAT filesystem.
pub struct FatFs<'a> {
    dev: &'a dyn ReadAt,
    bpb: Bpb,
    fat: Mutex<HashMap<u64, Vec<u8>>>,
}

fn corrupt(offset: u64, what: impl Into<String>) -> FilesError {
    FilesError::Corrupt { kind: KIND, offset, what: what.into() }
}

fn bad_cluster(c: u64, what: impl Into<String>) -> FilesError {
    FilesError::Fs(crate::fs::FsError::BadCluster { kind: KIND, cluster: c, what: what.into() })
}

/// Seconds since 1970 of a FAT date and time (2-second resolution).
fn fat_time(date: u16, time: u16) -> i64 {
    if date == 0 {
        return 0;
    }
    let y = 1980 + i64::from(date >> 9);
    let m = u32::from((date >> 5) & 0x0F).clamp(1, 12);
    let d = u32::from(date & 0x1F).max(1);
    let secs = i64::from(time >> 11) * 3600 + i64::from((time >> 5) & 0x3F) * 60 + i64::from(time & 0x1F) * 2;
    crate::civil::days_from_civil(y, m, d) * 86400 + secs
}

/// The checksum of an 8.3 name that its long-name entries carry.
fn lfn_checksum(short: &[u8]) -> u8 {
    short.iter().take(11).fold(0u8, |s, &c| (s >> 1 | (s & 1) << 7).wrapping_add(c))
}

/// An 8.3 name as Linux shows it: the NT lowercase flags applied
/// (0x08 base, 0x10 extension), characters as Latin-1.
fn short_name(e: &[u8]) -> String {
    let mut raw = [0u8; 11];
    raw.copy_from_slice(&e[..11]);
    if raw[0] == 0x05 {
        raw[0] = 0xE5;
    }
    let case = e[12];
    let conv = |b: &[u8], lower: bool| -> String {
        let s: String = b.iter().map(|&c| char::from(c)).collect();
        let s = s.trim_end_matches(' ').to_string();
        if lower {
            s.to_ascii_lowercase()
        } else {
            s
        }
    };
    let base = conv(&raw[..8], case & 0x08 != 0);
    let ext = conv(&raw[8..], case & 0x10 != 0);
    if ext.is_empty() {
        base
    } else {
        format!("{base}.{ext}")
    }
}

impl<'a> FatFs<'a> {
    /// `Ok(None)` when `head` holds no FAT boot sector.
    pub fn open(dev: &'a dyn ReadAt, len: u64, head: &[u8]) -> Result<Option<Self>, FilesError> {
        let Some(bpb) = Bpb::parse(head).map_err(|e| FilesError::from_fs(KIND, e))? else { return Ok(None) };
        if bpb.data_start > len {
            return Err(corrupt(0, format!("the data area starts at byte {}, past the partition's end ({len})", bpb.data_start)));
        }
        Ok(Some(FatFs { dev, bpb, fat: Mutex::new(HashMap::new()) }))
    }

    pub fn name(&self) -> &'static str {
        match self.bpb.fat_type {
            FatType::Fat12 => "fat12",
            FatType::Fat16 => "fat16",
            FatType::Fat32 => "fat32",
        }
    }

    pub fn root(&self) -> Entry {
        let (cluster, root) = match self.bpb.fat_type {
            FatType::Fat32 => (self.bpb.root_cluster as u32, false),
            _ => (0, true),
        };
        Entry { name: "/".into(), kind: Kind::Dir, size: 0, mtime: 0, mtime_nsec: 0, atime: None, mode: None, attributes: None, target: None, node: Node::Fat { cluster, root } }
    }

    fn fat_bytes(&self, off: u64, out: &mut [u8]) -> Result<(), FilesError> {
        let mut cache = self.fat.lock().map_err(|_| corrupt(off, "a reader thread panicked"))?;
        for (i, b) in out.iter_mut().enumerate() {
            let o = off + i as u64;
            let blk = o / FAT_BLOCK;
            if !cache.contains_key(&blk) {
                let start = blk * FAT_BLOCK;
                let len = FAT_BLOCK.min(self.bpb.fat_bytes.saturating_sub(start));
                let base = self.bpb.reserved_bytes + self.bpb.active_fat * self.bpb.fat_bytes;
                let data = read(self.dev, KIND, base + start, len, FAT_BLOCK)?;
                if cache.len() >= FAT_BLOCKS {
                    cache.clear();
                }
                cache.insert(blk, data);
            }
            *b = cache.get(&blk).and_then(|d| d.get((o % FAT_BLOCK) as usize)).copied().ok_or_else(|| corrupt(o, "FAT entry outside the FAT"))?;
        }
        Ok(())
    }

    /// The FAT entry of cluster `c`.
    fn next(&self, c: u64) -> Result<u32, FilesError> {
        Ok(match self.bpb.fat_type {
            FatType::Fat12 => {
                let mut b = [0u8; 2];
                self.fat_bytes(c * 3 / 2, &mut b)?;
                let v = u16::from_le_bytes(b);
                u32::from(if c % 2 == 1 { v >> 4 } else { v & 0x0FFF })
            }
            FatType::Fat16 => {
                let mut b = [0u8; 2];
                self.fat_bytes(c * 2, &mut b)?;
                u32::from(u16::from_le_bytes(b))
            }
            FatType::Fat32 => {
                let mut b = [0u8; 4];
                self.fat_bytes(c * 4, &mut b)?;
                u32::from_le_bytes(b) & 0x0FFF_FFFF
            }
        })
    }

    fn eoc(&self) -> u32 {
        match self.bpb.fat_type {
            FatType::Fat12 => 0xFF8,
            FatType::Fat16 => 0xFFF8,
            FatType::Fat32 => 0x0FFF_FFF8,
        }
    }

    fn valid(&self, c: u64) -> bool {
        c >= 2 && c < self.bpb.cluster_count + 2
    }

    /// Byte runs `(offset, len)` of the first `want` bytes of the chain
    /// from `first` (the whole chain when `want` is None).
    fn chain(&self, first: u64, want: Option<u64>) -> Result<Vec<(u64, u64)>, FilesError> {
        let cs = self.bpb.cluster_size;
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let mut c = first;
        let mut have = 0u64;
        let mut steps = 0u64;
        loop {
            if want.is_some_and(|w| have >= w) {
                break;
            }
            if !self.valid(c) {
                return Err(bad_cluster(c, format!("chain from cluster {first} reaches an invalid cluster")));
            }
            steps += 1;
            if steps > self.bpb.cluster_count + 1 {
                return Err(bad_cluster(first, "the cluster chain loops"));
            }
            let off = self.bpb.data_start + (c - 2) * cs;
            match runs.last_mut() {
                Some((o, l)) if *o + *l == off => *l += cs,
                _ => runs.push((off, cs)),
            }
            have += cs;
            let n = self.next(c)?;
            if n >= self.eoc() {
                break;
            }
            if n == 0 || !self.valid(u64::from(n)) {
                return Err(bad_cluster(c, format!("chain from cluster {first} continues with {n:#x}")));
            }
            c = u64::from(n);
        }
        if let Some(w) = want {
            if have < w {
                return Err(bad_cluster(first, format!("the chain holds {have} bytes, the file {w}")));
            }
        }
        Ok(runs)
    }

    fn dir_bytes(&self, dir: &Entry) -> Result<Vec<u8>, FilesError> {
        match dir.node {
            Node::Fat { root: true, .. } => {
                let off = self.bpb.reserved_bytes + self.bpb.num_fats * self.bpb.fat_bytes;
                read(self.dev, KIND, off, self.bpb.root_dir_bytes, MAX_DIR)
            }
            Node::Fat { cluster, .. } => {
                let mut v = Vec::new();
                for (off, len) in self.chain(u64::from(cluster), None)? {
                    if v.len() as u64 + len > MAX_DIR {
                        return Err(corrupt(off, format!("directory {} is larger than {MAX_DIR} bytes", dir.name)));
                    }
                    v.extend(read(self.dev, KIND, off, len, MAX_DIR)?);
                }
                Ok(v)
            }
            Node::Ext(_) | Node::Ntfs(_) => Err(corrupt(0, "not a FAT entry")),
        }
    }

    pub fn list(&self, dir: &Entry) -> Result<Vec<Entry>, FilesError> {
        let data = self.dir_bytes(dir)?;
        let mut out = Vec::new();
        // Long-name parts collected so far: (checksum, expected next ordinal, UTF-16 units).
        let mut lfn: Option<(u8, u8, Vec<u16>)> = None;
        for e in data.chunks_exact(32) {
            match e[0] {
                0x00 => break,
                0xE5 => {
                    lfn = None;
                    continue;
                }
                _ => {}
            }
            let attr = e[11];
            if attr & 0x3F == ATTR_LFN {
                let ord = e[0];
                let n = ord & 0x1F;
                let units: Vec<u16> = [1usize, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30].iter().map(|&o| le16(e, o)).collect();
                if ord & 0x40 != 0 {
                    let mut v = vec![0u16; 13 * usize::from(n)];
                    if n > 0 {
                        v[13 * usize::from(n - 1)..].copy_from_slice(&units);
                    }
                    lfn = (n >= 1).then_some((e[13], n - 1, v));
                } else {
                    lfn = match lfn.take() {
                        Some((sum, want, mut v)) if want == n && n >= 1 && sum == e[13] => {
                            v[13 * usize::from(n - 1)..13 * usize::from(n)].copy_from_slice(&units);
                            Some((sum, n - 1, v))
                        }
                        _ => None,
                    };
                }
                continue;
            }
            let long = lfn.take();
            if attr & ATTR_VOLUME != 0 {
                continue;
            }
            let name = match long {
                Some((sum, 0, v)) if sum == lfn_checksum(&e[..11]) => {
                    let end = v.iter().position(|&u| u == 0).unwrap_or(v.len());
                    String::from_utf16_lossy(&v[..end])
                }
                _ => short_name(e),
            };
            if name == "." || name == ".." {
                continue;
            }
            let cluster = u32::from(le16(e, 26)) | if self.bpb.fat_type == FatType::Fat32 { u32::from(le16(e, 20)) << 16 } else { 0 };
            let is_dir = attr & ATTR_DIR != 0;
            let mut attributes = String::new();
            for (bit, c) in [(ATTR_RO, 'r'), (ATTR_HIDDEN, 'h'), (ATTR_SYSTEM, 's'), (ATTR_ARCHIVE, 'a')] {
                attributes.push(if attr & bit != 0 { c } else { '-' });
            }
            out.push(Entry {
                name,
                kind: if is_dir { Kind::Dir } else { Kind::File },
                size: if is_dir { 0 } else { u64::from(le32(e, 28)) },
                mtime: fat_time(le16(e, 24), le16(e, 22)),
                mtime_nsec: 0,
                atime: Some(fat_time(le16(e, 18), 0)),
                mode: None,
                attributes: Some(attributes),
                target: None,
                node: Node::Fat { cluster, root: false },
            });
        }
        Ok(out)
    }

    pub(crate) fn dev(&self) -> &dyn ReadAt {
        self.dev
    }

    pub fn map(&self, file: &Entry) -> Result<FileMap, FilesError> {
        let Node::Fat { cluster, .. } = file.node else { return Err(corrupt(0, "not a FAT entry")) };
        let mut m = MapBuilder::new(file.size, file.size);
        if file.size > 0 {
            for (off, len) in self.chain(u64::from(cluster), Some(file.size))? {
                m.push(len, Some(off));
            }
        }
        Ok(m.finish())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_and_names() {
        // 2024-02-29 13:45:58
        let date = ((2024 - 1980) << 9) | (2 << 5) | 29;
        let time = (13 << 11) | (45 << 5) | 29;
        assert_eq!(fat_time(date, time), 1_709_214_358);
        let mut e = [b' '; 32];
        e[..8].copy_from_slice(b"GRUB    ");
        e[8..11].copy_from_slice(b"CFG");
        e[12] = 0x18;
        assert_eq!(short_name(&e), "grub.cfg");
        e[12] = 0;
        assert_eq!(short_name(&e), "GRUB.CFG");
    }
}
