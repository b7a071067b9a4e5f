//! Filesystem detection and used-block ("intelligent backup") maps.
//!
//! [`probe`] recognises the filesystem at the start of a partition by its
//! on-disk signature and reads its identity (label, UUID as `blkid` prints
//! it, block size, size, space in use). [`used_extents`] turns the
//! filesystem's own allocation structures into the byte ranges a backup must
//! copy: written alone onto a target whose other bytes are garbage, they give
//! a filesystem that passes its own checker with every file intact. That means
//! *all* metadata is included (boot sectors and their backups, superblock and
//! descriptor backups, FATs, allocation bitmaps, inode tables, journals), not
//! only file data.
//!
//! One module per format: `ext` (ext2/3/4), `fat` (FAT12/16/32), `ntfs`,
//! `exfat`, `swap`; `other` only recognises signatures
//! (xfs, btrfs, LVM2, LUKS, md RAID, ISO 9660, BitLocker, ...) so the caller
//! knows to copy those sector by sector.
//!
//! Every number read from disk is untrusted: sizes are checked against the
//! partition length before anything is allocated or read, arithmetic is
//! checked, and an inconsistency is an [`FsError`] (the backup then falls
//! back to a sector-by-sector copy), never a panic.
//!
//! Deliberately unsupported (an error, so the caller copies sector by sector):
//! any filesystem larger than its partition, FAT/exFAT volumes whose FAT is
//! shorter than their cluster count, NTFS volumes whose `$MFT` record 0 or
//! `$Bitmap` record fails its fixups. Hibernation images in swap partitions
//! and ext external journal devices are reported as `Other` (copied whole).

mod bitmap;
mod exfat;
pub(crate) mod ext;
pub(crate) mod fat;
pub(crate) mod ntfs;
mod other;
mod swap;

use std::io;

use serde::{Deserialize, Serialize};

use crate::read_at::ReadAt;
use crate::Extent;

/// The filesystem (or other signature) found on a partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsKind {
    Ext2,
    Ext3,
    Ext4,
    Fat12,
    Fat16,
    Fat32,
    Ntfs,
    Exfat,
    Swap,
    /// Recognised by its signature, but without a used-block reader; named as
    /// `blkid` names it (`"xfs"`, `"btrfs"`, `"LVM2_member"`, `"crypto_LUKS"`,
    /// `"linux_raid_member"`, `"iso9660"`, `"bitlocker"`, ...).
    Other(String),
}

impl FsKind {
    /// Short name, as used in the catalog and shown to the user.
    pub fn name(&self) -> &str {
        match self {
            FsKind::Ext2 => "ext2",
            FsKind::Ext3 => "ext3",
            FsKind::Ext4 => "ext4",
            FsKind::Fat12 => "fat12",
            FsKind::Fat16 => "fat16",
            FsKind::Fat32 => "fat32",
            FsKind::Ntfs => "ntfs",
            FsKind::Exfat => "exfat",
            FsKind::Swap => "swap",
            FsKind::Other(s) => s,
        }
    }

    /// Whether [`used_extents`] can map this kind (otherwise copy every sector).
    pub fn has_used_map(&self) -> bool {
        !matches!(self, FsKind::Other(_))
    }

    /// Whether the live system mounts it read-write to save images on
    /// (ext2/3/4, FAT, exFAT by the kernel; NTFS through ntfs-3g).
    pub fn holds_images(&self) -> bool {
        matches!(self, FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 | FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 | FsKind::Exfat | FsKind::Ntfs)
    }
}

/// What [`probe`] learnt about a filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsInfo {
    pub kind: FsKind,
    pub label: Option<String>,
    /// As `blkid` prints it: ext and swap 8-4-4-4-12 lowercase, FAT and exFAT
    /// `ABCD-1234`, NTFS 16 upper-case hex digits.
    pub uuid: Option<String>,
    /// Filesystem block / cluster size in bytes.
    pub block_size: u32,
    /// Bytes the filesystem spans (may be less than the partition).
    pub size: u64,
    /// Bytes in use per the filesystem's own accounting, when known.
    pub used: Option<u64>,
    /// Bytes per sector recorded in the boot sector (FAT, NTFS, exFAT).
    pub sector_size: Option<u32>,
}

impl FsInfo {
    /// Whether this is a LUKS volume ([`crate::luks::FS_KIND`]).
    pub fn is_luks(&self) -> bool {
        matches!(&self.kind, FsKind::Other(k) if k == crate::luks::FS_KIND)
    }
}

/// Why a filesystem could not be probed or mapped.
#[derive(Debug, thiserror::Error)]
pub enum FsError {
    /// The device could not be read (includes reading past its end).
    #[error("reading at byte {offset}")]
    Io {
        offset: u64,
        #[source]
        source: io::Error,
    },
    /// A structure is inconsistent.
    #[error("{kind}: {what} (at byte {offset})")]
    Corrupt {
        kind: &'static str,
        offset: u64,
        what: String,
    },
    /// An ext block group descriptor is inconsistent.
    #[error("{kind}: block group {group}: {what} (descriptor at byte {offset})")]
    BadGroup {
        kind: &'static str,
        group: u64,
        offset: u64,
        what: String,
    },
    /// A FAT/exFAT/NTFS cluster reference is inconsistent.
    #[error("{kind}: cluster {cluster}: {what}")]
    BadCluster {
        kind: &'static str,
        cluster: u64,
        what: String,
    },
    /// A size read from disk is larger than we are willing to allocate.
    #[error("{kind}: {what} would need {size} bytes (limit {limit})")]
    TooLarge {
        kind: &'static str,
        what: &'static str,
        size: u64,
        limit: u64,
    },
    /// [`used_extents`] was asked for a kind without a used-block reader.
    #[error("no used-block map for {kind}")]
    NoUsedMap { kind: String },
}

impl FsError {
    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            FsError::Io { .. } => {
                "the disk could not be read there: check the cable and the disk's health, \
                 or rescue it with a sector-by-sector clone that skips read errors"
            }
            FsError::Corrupt { .. }
            | FsError::BadGroup { .. }
            | FsError::BadCluster { .. }
            | FsError::TooLarge { .. } => {
                "the filesystem looks damaged: back it up with --sector-by-sector, \
                 or repair it first (e2fsck, chkdsk, fsck.vfat, fsck.exfat)"
            }
            FsError::NoUsedMap { .. } => {
                "this filesystem cannot be backed up used-blocks-only: \
                 use --sector-by-sector (it copies every sector)"
            }
        }
    }
}

/// Recognise the filesystem at the start of `dev` (a partition, `len` bytes).
/// `Ok(None)`: no known signature.
pub fn probe(dev: &dyn ReadAt, len: u64) -> Result<Option<FsInfo>, FsError> {
    // Every signature we know lives in the first 64 KiB + a bit (btrfs at
    // 64 KiB + 64, ISO 9660 at 32 KiB + 1), except md RAID 0.90/1.0 at the end.
    let head_len = len.min(HEAD_LEN);
    let head = read_vec(dev, 0, head_len, HEAD_LEN, "probe")?;
    // Containers first: md RAID 0.90/1.0 keep their superblock at the end and
    // a filesystem at the start, which must not be mapped on its own; LUKS
    // and BitLocker volumes may look like other things to naive probes.
    if let Some(info) = other::probe_container(dev, len, &head)? {
        return Ok(Some(info));
    }
    if let Some(info) = ntfs::probe(dev, len, &head)? {
        return Ok(Some(info));
    }
    if let Some(info) = exfat::probe(dev, len, &head)? {
        return Ok(Some(info));
    }
    if let Some(info) = ext::probe(len, &head)? {
        return Ok(Some(info));
    }
    if let Some(info) = swap::probe(len, &head)? {
        return Ok(Some(info));
    }
    if let Some(info) = other::probe_fs(len, &head)? {
        return Ok(Some(info));
    }
    // FAT last: its signature (a plausible BPB) is the weakest.
    fat::probe(dev, len, &head)
}

/// Byte ranges (relative to the partition start, normalized, clipped to
/// `len`) that must be copied so that the filesystem is complete and valid
/// when only these ranges are written onto a target whose other bytes hold
/// arbitrary garbage. Includes all metadata. Errors when the filesystem is
/// inconsistent (the caller then falls back to sector-by-sector).
pub fn used_extents(dev: &dyn ReadAt, len: u64, info: &FsInfo) -> Result<Vec<Extent>, FsError> {
    let _span = tracing::debug_span!("used_extents", fs = info.kind.name(), len).entered();
    let v = match &info.kind {
        FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4 => ext::used_extents(dev, len)?,
        FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 => fat::used_extents(dev, len)?,
        FsKind::Ntfs => ntfs::used_extents(dev, len)?,
        FsKind::Exfat => exfat::used_extents(dev, len)?,
        FsKind::Swap => swap::used_extents(dev, len)?,
        FsKind::Other(name) => return Err(FsError::NoUsedMap { kind: name.clone() }),
    };
    let v = crate::extent::normalize(v, len);
    tracing::debug!(
        extents = v.len(),
        bytes = crate::extent::total(&v),
        "used-block map"
    );
    Ok(v)
}

/// How much of the partition [`probe`] reads.
const HEAD_LEN: u64 = 64 * 1024 + 4096;

/// Largest single metadata buffer we allocate (FAT chunk, bitmap batch, ...).
pub(crate) const CHUNK: u64 = 4 << 20;

/// Read exactly `buf.len()` bytes at `offset`, mapping errors to [`FsError::Io`].
pub(crate) fn read_at(dev: &dyn ReadAt, buf: &mut [u8], offset: u64) -> Result<(), FsError> {
    dev.read_exact_at(buf, offset)
        .map_err(|source| FsError::Io { offset, source })
}

/// Read `len` bytes at `offset` into a new buffer, refusing more than `limit`.
pub(crate) fn read_vec(
    dev: &dyn ReadAt,
    offset: u64,
    len: u64,
    limit: u64,
    kind: &'static str,
) -> Result<Vec<u8>, FsError> {
    if len > limit {
        return Err(FsError::TooLarge {
            kind,
            what: "metadata read",
            size: len,
            limit,
        });
    }
    let n = usize::try_from(len).map_err(|_| FsError::TooLarge {
        kind,
        what: "metadata read",
        size: len,
        limit,
    })?;
    let mut v = vec![0u8; n];
    read_at(dev, &mut v, offset)?;
    Ok(v)
}

// Little-endian field readers for fixed on-disk layouts. Out-of-range offsets
// read as zero instead of panicking; every caller validates the fields it
// relies on, so a short buffer shows up as an invalid (zero) value.
pub(crate) fn le16(b: &[u8], off: usize) -> u16 {
    b.get(off..off.wrapping_add(2))
        .and_then(|s| s.try_into().ok())
        .map_or(0, u16::from_le_bytes)
}

pub(crate) fn le32(b: &[u8], off: usize) -> u32 {
    b.get(off..off.wrapping_add(4))
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}

pub(crate) fn le64(b: &[u8], off: usize) -> u64 {
    b.get(off..off.wrapping_add(8))
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_le_bytes)
}

pub(crate) fn be32(b: &[u8], off: usize) -> u32 {
    b.get(off..off.wrapping_add(4))
        .and_then(|s| s.try_into().ok())
        .map_or(0, u32::from_be_bytes)
}

pub(crate) fn be64(b: &[u8], off: usize) -> u64 {
    b.get(off..off.wrapping_add(8))
        .and_then(|s| s.try_into().ok())
        .map_or(0, u64::from_be_bytes)
}

pub(crate) fn u8_at(b: &[u8], off: usize) -> u8 {
    b.get(off).copied().unwrap_or(0)
}

/// `b[off..off + n]`, or an empty slice when out of range.
pub(crate) fn bytes(b: &[u8], off: usize, n: usize) -> &[u8] {
    b.get(off..off.saturating_add(n)).unwrap_or(&[])
}

/// A 16-byte UUID as `8-4-4-4-12` lowercase hex; `None` when all zero.
pub(crate) fn uuid_string(b: &[u8]) -> Option<String> {
    if b.len() != 16 || b.iter().all(|&x| x == 0) {
        return None;
    }
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// A NUL- or space-padded 8-bit label; `None` when empty.
pub(crate) fn label_string(b: &[u8], trim_spaces: bool) -> Option<String> {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).into_owned();
    let s = if trim_spaces {
        s.trim_end_matches(' ').to_owned()
    } else {
        s
    };
    (!s.is_empty()).then_some(s)
}

/// A UTF-16LE label of `units` code units; `None` when empty.
pub(crate) fn utf16_label(b: &[u8]) -> Option<String> {
    let units: Vec<u16> = b
        .chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .take_while(|&u| u != 0)
        .collect();
    let s = String::from_utf16_lossy(&units);
    (!s.is_empty()).then_some(s)
}

/// Checked `a * b`, as a [`FsError::Corrupt`] on overflow.
pub(crate) fn mul(kind: &'static str, offset: u64, a: u64, b: u64) -> Result<u64, FsError> {
    a.checked_mul(b).ok_or_else(|| FsError::Corrupt {
        kind,
        offset,
        what: format!("size overflow ({a} * {b})"),
    })
}

/// Checked `a + b`, as a [`FsError::Corrupt`] on overflow.
pub(crate) fn add(kind: &'static str, offset: u64, a: u64, b: u64) -> Result<u64, FsError> {
    a.checked_add(b).ok_or_else(|| FsError::Corrupt {
        kind,
        offset,
        what: format!("size overflow ({a} + {b})"),
    })
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Fixture loading for the unit tests of every format module.

    /// Decompress a zstd fixture from `tests/fixtures/fs/`.
    pub fn fixture(name: &str) -> Vec<u8> {
        let path = format!(
            "{}/tests/fixtures/fs/{name}.zst",
            env!("CARGO_MANIFEST_DIR")
        );
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("reading {path}: {e}"));
        zstd::decode_all(&raw[..]).unwrap_or_else(|e| panic!("decompressing {path}: {e}"))
    }

    /// Load fixture `name`, probe it, check the kind, the boot sector's
    /// sector size (when given), and the UUID and label the INDEX lists, and
    /// map its used blocks: the part every format's tests share.
    pub fn probe_fixture(
        name: &str,
        kind: super::FsKind,
        sector: Option<u32>,
    ) -> (Vec<u8>, super::FsInfo, Vec<crate::Extent>) {
        let img = fixture(name);
        let len = img.len() as u64;
        let info = super::probe(&img, len).expect("probe").expect("recognised");
        assert_eq!(info.kind, kind, "{name}");
        if sector.is_some() {
            assert_eq!(info.sector_size, sector, "{name}");
        }
        assert_eq!(info.uuid, expected(name, "uuid"), "{name} uuid");
        assert_eq!(info.label, expected(name, "label"), "{name} label");
        let v = super::used_extents(&img, len, &info).expect("map");
        (img, info, v)
    }

    /// Flip pseudo-random bytes inside `regions` (`(start, len)`) for
    /// `rounds` rounds, calling `check` on each damaged image; the image is
    /// restored after every round (cheaper than cloning a big fixture).
    pub fn fuzz(
        img: &mut [u8],
        regions: &[(usize, usize)],
        rounds: u32,
        mut check: impl FnMut(&[u8]),
    ) {
        // FS_FUZZ_ROUNDS=100000 for a longer local run.
        let rounds = std::env::var("FS_FUZZ_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(rounds);
        let mut x = 0x9e37_79b9u32;
        for round in 0..rounds {
            let mut saved = Vec::new();
            for _ in 0..(1 + round % 6) {
                x = x.wrapping_mul(1_664_525).wrapping_add(1_013_904_223);
                let (start, len) = regions[(x as usize >> 4) % regions.len()];
                let off = (start + (x as usize >> 9) % len.max(1)).min(img.len() - 1);
                saved.push((off, img[off]));
                img[off] = match round % 3 {
                    0 => (x >> 3) as u8,
                    1 => 0xFF,
                    _ => 0,
                };
            }
            check(img);
            for (off, b) in saved.into_iter().rev() {
                img[off] = b;
            }
        }
    }

    /// Parse `INDEX` lines `name key=value ...` for a fixture's expected values.
    pub fn expected(name: &str, key: &str) -> Option<String> {
        let path = format!("{}/tests/fixtures/fs/INDEX", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(path).ok()?;
        for line in text.lines() {
            let mut words = line.split_whitespace();
            if words.next() != Some(name) {
                continue;
            }
            for w in words {
                if let Some(v) = w.strip_prefix(key).and_then(|r| r.strip_prefix('=')) {
                    return Some(v.to_owned());
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_maps() {
        assert_eq!(FsKind::Ext4.name(), "ext4");
        assert_eq!(FsKind::Fat32.name(), "fat32");
        assert_eq!(FsKind::Other("xfs".into()).name(), "xfs");
        assert!(FsKind::Swap.has_used_map());
        assert!(!FsKind::Other("btrfs".into()).has_used_map());
    }

    #[test]
    fn serde_shape() {
        let s = serde_json::to_string(&FsKind::Fat16).expect("serialize");
        assert_eq!(s, "\"fat16\"");
        let o: FsKind = serde_json::from_str("{\"other\":\"xfs\"}").expect("deserialize");
        assert_eq!(o, FsKind::Other("xfs".into()));
    }

    #[test]
    fn empty_and_tiny_devices_are_unknown() {
        assert!(probe(&Vec::<u8>::new(), 0).expect("probe").is_none());
        assert!(probe(&vec![0u8; 100], 100).expect("probe").is_none());
        assert!(probe(&vec![0xffu8; 70000], 70000).expect("probe").is_none());
    }

    #[test]
    fn other_kind_has_no_map() {
        let info = FsInfo {
            kind: FsKind::Other("xfs".into()),
            label: None,
            uuid: None,
            block_size: 4096,
            size: 0,
            used: None,
            sector_size: None,
        };
        let e = used_extents(&Vec::<u8>::new(), 0, &info).expect_err("no map");
        assert!(matches!(e, FsError::NoUsedMap { .. }));
        assert!(e.hint().contains("sector-by-sector"));
    }

    #[test]
    fn field_readers_never_panic() {
        let b = [1u8, 2, 3];
        assert_eq!(le16(&b, 0), 0x0201);
        assert_eq!(le16(&b, 2), 0);
        assert_eq!(le32(&b, usize::MAX), 0);
        assert_eq!(le64(&b, 0), 0);
        assert_eq!(bytes(&b, 2, 5), &[] as &[u8]);
        assert_eq!(uuid_string(&[0; 16]), None);
        assert_eq!(
            uuid_string(&[0x12; 16]).as_deref(),
            Some("12121212-1212-1212-1212-121212121212")
        );
    }
}
