//! Byte layouts of the image format, version 1 (all integers little-endian).
//!
//! See the module doc of [`crate::image`] for the overall layout. Decoders
//! check every length before allocating and never panic on bad input.

use serde::{Deserialize, Serialize};

use crate::fs::FsInfo;
use crate::image::Compression;
use crate::part::PartitionTable;

pub const FORMAT_VERSION: u32 = 1;
pub const HEADER_MAGIC: &[u8; 8] = b"RESCUIMG";
pub const FOOTER_MAGIC: &[u8; 8] = b"RESCUEND";
pub const VOLUME_MAGIC: &[u8; 8] = b"RESCUVOL";
pub const SEGMENT_MAGIC: &[u8; 4] = b"RSEG";
pub const HEADER_LEN: usize = 512;
pub const FOOTER_LEN: usize = 128;
pub const VOLUME_HEADER_LEN: usize = 64;
/// Default chunk (identity) size: small enough that a day of file changes
/// touches few chunks (see DESIGN.md), large enough to keep the index small.
pub const DEFAULT_CHUNK_SIZE: u32 = 16 * 1024;
/// Chunks are grouped into frames of about this many raw bytes for compression.
pub const FRAME_TARGET: usize = 256 * 1024;
/// Chunk entries per index segment (bounds memory when reading an index).
pub const SEGMENT_ENTRIES: usize = 16 * 1024;
/// Upper bounds used when decoding untrusted lengths.
pub const MAX_CATALOG: u64 = 256 << 20;
pub const MAX_SEGMENT: u64 = 64 << 20;
pub const MAX_FRAME: u64 = 16 << 20;

pub const FLAG_ENCRYPTED: u32 = 1;
/// Frame flag: payload is a zstd frame.
pub const FRAME_COMPRESSED: u32 = 1;
/// Entry flag: the chunk is all zero; no frame holds it.
pub const ENTRY_ZERO: u32 = 1;
/// Frame flags, bits 16..32: which file of a backup chain holds the frame
/// (0: this image; `k`: `catalog.chain.links[k - 1]`).
pub const FRAME_LINK_SHIFT: u32 = 16;
/// The most files one point may reference.
pub const MAX_LINKS: usize = 0xffff;

fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]])
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(a)
}
fn arr<const N: usize>(b: &[u8], o: usize) -> [u8; N] {
    let mut a = [0u8; N];
    a.copy_from_slice(&b[o..o + N]);
    a
}

/// Why a fixed-size structure did not decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    Magic,
    Version(u32),
    Hash,
    Invalid(String),
}

/// The 512-byte header at logical offset 0.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub image_id: [u8; 16],
    pub created: u64,
    pub chunk_size: u32,
    pub flags: u32,
    pub kdf_m_kib: u32,
    pub kdf_t: u32,
    pub kdf_p: u32,
    pub salt: [u8; 32],
    pub key_check: [u8; 32],
}

impl Header {
    pub fn encrypted(&self) -> bool {
        self.flags & FLAG_ENCRYPTED != 0
    }

    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(HEADER_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&(HEADER_LEN as u32).to_le_bytes());
        b[16..32].copy_from_slice(&self.image_id);
        b[32..40].copy_from_slice(&self.created.to_le_bytes());
        b[40..44].copy_from_slice(&self.chunk_size.to_le_bytes());
        b[44..48].copy_from_slice(&self.flags.to_le_bytes());
        b[48..52].copy_from_slice(&1u32.to_le_bytes()); // KDF 1 = Argon2id v0x13
        b[52..56].copy_from_slice(&self.kdf_m_kib.to_le_bytes());
        b[56..60].copy_from_slice(&self.kdf_t.to_le_bytes());
        b[60..64].copy_from_slice(&self.kdf_p.to_le_bytes());
        b[64..96].copy_from_slice(&self.salt);
        b[96..128].copy_from_slice(&self.key_check);
        let h = blake3::hash(&b[..HEADER_LEN - 32]);
        b[HEADER_LEN - 32..].copy_from_slice(h.as_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < HEADER_LEN || &b[0..8] != HEADER_MAGIC {
            return Err(DecodeError::Magic);
        }
        let v = u32_at(b, 8);
        if v != FORMAT_VERSION {
            return Err(DecodeError::Version(v));
        }
        if blake3::hash(&b[..HEADER_LEN - 32]).as_bytes() != &b[HEADER_LEN - 32..HEADER_LEN] {
            return Err(DecodeError::Hash);
        }
        let h = Header {
            image_id: arr(b, 16),
            created: u64_at(b, 32),
            chunk_size: u32_at(b, 40),
            flags: u32_at(b, 44),
            kdf_m_kib: u32_at(b, 52),
            kdf_t: u32_at(b, 56),
            kdf_p: u32_at(b, 60),
            salt: arr(b, 64),
            key_check: arr(b, 96),
        };
        if u32_at(b, 48) != 1 {
            return Err(DecodeError::Invalid(format!("unknown key derivation {}", u32_at(b, 48))));
        }
        if !(4096..=(1 << 22)).contains(&h.chunk_size) || !h.chunk_size.is_power_of_two() {
            return Err(DecodeError::Invalid(format!("chunk size {}", h.chunk_size)));
        }
        Ok(h)
    }

    /// The hash the catalog records to bind this header.
    pub fn digest(&self) -> String {
        hex(blake3::hash(&self.encode()).as_bytes())
    }
}

/// The 128-byte footer at the very end of the logical stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Footer {
    pub volume_count: u32,
    pub catalog_offset: u64,
    pub catalog_len: u64,
    pub logical_len: u64,
    pub catalog_hash: [u8; 32],
}

impl Footer {
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut b = [0u8; FOOTER_LEN];
        b[0..8].copy_from_slice(FOOTER_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.volume_count.to_le_bytes());
        b[16..24].copy_from_slice(&self.catalog_offset.to_le_bytes());
        b[24..32].copy_from_slice(&self.catalog_len.to_le_bytes());
        b[32..40].copy_from_slice(&self.logical_len.to_le_bytes());
        b[40..72].copy_from_slice(&self.catalog_hash);
        let h = blake3::hash(&b[..96]);
        b[96..128].copy_from_slice(h.as_bytes());
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < FOOTER_LEN || &b[0..8] != FOOTER_MAGIC {
            return Err(DecodeError::Magic);
        }
        let v = u32_at(b, 8);
        if v != FORMAT_VERSION {
            return Err(DecodeError::Version(v));
        }
        if blake3::hash(&b[..96]).as_bytes() != &b[96..128] {
            return Err(DecodeError::Hash);
        }
        Ok(Footer {
            volume_count: u32_at(b, 12),
            catalog_offset: u64_at(b, 16),
            catalog_len: u64_at(b, 24),
            logical_len: u64_at(b, 32),
            catalog_hash: arr(b, 40),
        })
    }
}

/// The 64-byte header at the start of every volume file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeHeader {
    pub index: u32,
    pub image_id: [u8; 16],
    /// Size of every volume file but the last; 0 when not split.
    pub split_size: u64,
}

impl VolumeHeader {
    pub fn encode(&self) -> [u8; VOLUME_HEADER_LEN] {
        let mut b = [0u8; VOLUME_HEADER_LEN];
        b[0..8].copy_from_slice(VOLUME_MAGIC);
        b[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        b[12..16].copy_from_slice(&self.index.to_le_bytes());
        b[16..32].copy_from_slice(&self.image_id);
        b[32..40].copy_from_slice(&self.split_size.to_le_bytes());
        let h = blake3::hash(&b[..56]);
        b[56..64].copy_from_slice(&h.as_bytes()[..8]);
        b
    }

    pub fn decode(b: &[u8]) -> Result<Self, DecodeError> {
        if b.len() < VOLUME_HEADER_LEN || &b[0..8] != VOLUME_MAGIC {
            return Err(DecodeError::Magic);
        }
        let v = u32_at(b, 8);
        if v != FORMAT_VERSION {
            return Err(DecodeError::Version(v));
        }
        if blake3::hash(&b[..56]).as_bytes()[..8] != b[56..64] {
            return Err(DecodeError::Hash);
        }
        Ok(VolumeHeader { index: u32_at(b, 12), image_id: arr(b, 16), split_size: u64_at(b, 32) })
    }
}

/// Where a frame lies in the logical stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameRef {
    pub offset: u64,
    pub stored_len: u32,
    pub raw_len: u32,
    pub flags: u32,
    /// BLAKE3 of the stored bytes: a fast check that needs no key nor decompression.
    pub hash: [u8; 32],
}

impl FrameRef {
    /// Which file holds the frame: 0 for this image, `k` for chain link `k - 1`.
    pub fn link(&self) -> usize {
        (self.flags >> FRAME_LINK_SHIFT) as usize
    }

    /// The same frame as seen from a point whose link `link` is this frame's file.
    pub fn with_link(mut self, link: usize) -> Self {
        self.flags = (self.flags & ((1 << FRAME_LINK_SHIFT) - 1)) | ((link as u32) << FRAME_LINK_SHIFT);
        self
    }
}

/// One chunk of a region.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    pub chunk: u64,
    /// Index into the segment's frame table; unused when `ENTRY_ZERO`.
    pub frame: u32,
    pub offset_in_frame: u32,
    pub len: u32,
    pub flags: u32,
    /// Identity of the plaintext (keyed when encrypted).
    pub hash: [u8; 32],
}

impl Entry {
    pub fn is_zero(&self) -> bool {
        self.flags & ENTRY_ZERO != 0
    }
}

/// A decoded index segment: the frames it refers to and its chunk entries, in
/// ascending chunk order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Segment {
    pub region: u32,
    pub frames: Vec<FrameRef>,
    pub entries: Vec<Entry>,
}

const FRAME_REC: usize = 52;
const ENTRY_REC: usize = 56;

impl Segment {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(20 + self.frames.len() * FRAME_REC + self.entries.len() * ENTRY_REC);
        b.extend_from_slice(SEGMENT_MAGIC);
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&self.region.to_le_bytes());
        b.extend_from_slice(&(self.frames.len() as u32).to_le_bytes());
        b.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for f in &self.frames {
            b.extend_from_slice(&f.offset.to_le_bytes());
            b.extend_from_slice(&f.stored_len.to_le_bytes());
            b.extend_from_slice(&f.raw_len.to_le_bytes());
            b.extend_from_slice(&f.flags.to_le_bytes());
            b.extend_from_slice(&f.hash);
        }
        for e in &self.entries {
            b.extend_from_slice(&e.chunk.to_le_bytes());
            b.extend_from_slice(&e.frame.to_le_bytes());
            b.extend_from_slice(&e.offset_in_frame.to_le_bytes());
            b.extend_from_slice(&e.len.to_le_bytes());
            b.extend_from_slice(&e.flags.to_le_bytes());
            b.extend_from_slice(&e.hash);
        }
        b
    }

    /// Decode and check internal consistency (frame indexes, ranges inside
    /// frames, ascending chunks, lengths within `chunk_size`).
    pub fn decode(b: &[u8], chunk_size: u32) -> Result<Self, DecodeError> {
        if b.len() < 20 || &b[0..4] != SEGMENT_MAGIC {
            return Err(DecodeError::Magic);
        }
        let v = u32_at(b, 4);
        if v != FORMAT_VERSION {
            return Err(DecodeError::Version(v));
        }
        let region = u32_at(b, 8);
        let nf = u32_at(b, 12) as usize;
        let ne = u32_at(b, 16) as usize;
        let need = nf
            .checked_mul(FRAME_REC)
            .and_then(|x| ne.checked_mul(ENTRY_REC).and_then(|y| x.checked_add(y)))
            .and_then(|x| x.checked_add(20))
            .ok_or_else(|| DecodeError::Invalid("segment counts overflow".into()))?;
        if need != b.len() {
            return Err(DecodeError::Invalid(format!("segment length {} but counts need {need}", b.len())));
        }
        let mut frames = Vec::with_capacity(nf);
        let mut o = 20;
        for _ in 0..nf {
            let f = FrameRef {
                offset: u64_at(b, o),
                stored_len: u32_at(b, o + 8),
                raw_len: u32_at(b, o + 12),
                flags: u32_at(b, o + 16),
                hash: arr(b, o + 20),
            };
            if u64::from(f.stored_len) > MAX_FRAME || u64::from(f.raw_len) > MAX_FRAME {
                return Err(DecodeError::Invalid(format!("frame at {} too large", f.offset)));
            }
            frames.push(f);
            o += FRAME_REC;
        }
        let mut entries = Vec::with_capacity(ne);
        let mut last: Option<u64> = None;
        for _ in 0..ne {
            let e = Entry {
                chunk: u64_at(b, o),
                frame: u32_at(b, o + 8),
                offset_in_frame: u32_at(b, o + 12),
                len: u32_at(b, o + 16),
                flags: u32_at(b, o + 20),
                hash: arr(b, o + 24),
            };
            o += ENTRY_REC;
            if e.len == 0 || e.len > chunk_size {
                return Err(DecodeError::Invalid(format!("chunk {} has length {}", e.chunk, e.len)));
            }
            if last.is_some_and(|l| e.chunk <= l) {
                return Err(DecodeError::Invalid(format!("chunk {} out of order", e.chunk)));
            }
            last = Some(e.chunk);
            if !e.is_zero() {
                let f = frames
                    .get(e.frame as usize)
                    .ok_or_else(|| DecodeError::Invalid(format!("chunk {} names frame {} of {nf}", e.chunk, e.frame)))?;
                if u64::from(e.offset_in_frame) + u64::from(e.len) > u64::from(f.raw_len) {
                    return Err(DecodeError::Invalid(format!("chunk {} lies outside its frame", e.chunk)));
                }
            }
            entries.push(e);
        }
        Ok(Segment { region, frames, entries })
    }
}

/// Where an index segment lies, recorded in the catalog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRef {
    pub offset: u64,
    pub stored_len: u64,
    /// BLAKE3 of the stored bytes, hex.
    pub hash: String,
    pub first_chunk: u64,
    pub last_chunk: u64,
    pub entries: u32,
}

/// What part of the disk a region is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RegionKind {
    /// From LBA 0 to the first partition: boot code, partition table, boot-loader gap.
    Head,
    /// Unpartitioned space between partitions (EBRs, boot-loader code).
    Gap,
    /// A partition.
    Partition,
    /// The whole disk, sector by sector.
    Disk,
}

/// How a region's bytes were chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CopyMode {
    /// Only blocks the filesystem uses; the rest reads as zero.
    Used,
    /// Every sector.
    Full,
    /// Only the header (swap).
    HeaderOnly,
}

/// One stored range of the source disk.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Region {
    pub id: u32,
    pub kind: RegionKind,
    /// Partition number, for `Partition` regions.
    pub partition: Option<u32>,
    /// Byte offset on the source disk.
    pub disk_offset: u64,
    pub len: u64,
    pub fs: Option<FsInfo>,
    pub mode: CopyMode,
    /// Why this mode (e.g. "xfs has no used-block reader").
    pub mode_reason: Option<String>,
    /// Bytes the map selected.
    pub used_bytes: u64,
    /// Bytes stored in the image for this region (frames only).
    pub stored_bytes: u64,
    pub chunks: u64,
    pub zero_chunks: u64,
    /// Chunks found unchanged in the chain's base and referenced there
    /// instead of stored again (0 for a full image).
    #[serde(default)]
    pub base_chunks: u64,
    pub segments: Vec<SegmentRef>,
}

/// What kind of backup an image is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackupKind {
    Disk,
    System,
    Partitions,
}

/// Identity and geometry of the source disk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct SourceInfo {
    pub path: String,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub wwn: Option<String>,
    pub size: u64,
    pub logical_sector_size: u32,
    pub physical_sector_size: u32,
}

/// Options the image was written with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageOptions {
    pub compression: Compression,
    pub encrypted: bool,
    pub sector_by_sector: bool,
    pub chunk_size: u32,
    pub split_size: Option<u64>,
}

/// The catalog: everything about the image except the chunk index.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Catalog {
    pub format_version: u32,
    pub image_id: String,
    /// Binds the header (salt, KDF parameters, chunk size) to the catalog.
    pub header_hash: String,
    pub created: u64,
    pub tool: String,
    pub comment: Option<String>,
    pub kind: BackupKind,
    pub options: ImageOptions,
    pub source: SourceInfo,
    /// The source's partition table (absent for a disk without one).
    pub table: Option<PartitionTable>,
    /// The first sector of the source disk (MBR boot code, disk signature).
    pub sector0: Option<String>,
    pub regions: Vec<Region>,
    /// Why each partition was (or was not) chosen, for system backups.
    pub selection: Vec<String>,
    pub notes: Vec<String>,
    /// Where this point stands in a backup chain (absent: a stand-alone full).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain: Option<ChainInfo>,
}

/// Kind of a backup point.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PointKind {
    Full,
    Incremental,
    Differential,
}

impl PointKind {
    pub fn name(self) -> &'static str {
        match self {
            PointKind::Full => "full",
            PointKind::Incremental => "incremental",
            PointKind::Differential => "differential",
        }
    }

    /// Short form used in file names.
    pub fn short(self) -> &'static str {
        match self {
            PointKind::Full => "full",
            PointKind::Incremental => "incr",
            PointKind::Differential => "diff",
        }
    }
}

/// Another image of the chain that this point reads frames from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainLink {
    pub image_id: String,
    /// File name of its first volume (looked up beside this point).
    pub file: String,
    /// Hash of its catalog as its footer records it: names exactly that file.
    pub catalog_hash: String,
    pub kind: PointKind,
    pub sequence: u32,
    pub created: u64,
}

/// A point's place in its chain.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainInfo {
    /// Image id of the task's first full backup: every point of the task shares it.
    pub task_id: String,
    /// Base name of the task's files (`NAME.p002-incr.img`, ...).
    pub task_name: String,
    pub kind: PointKind,
    /// 1 for the task's first point, then one more per point.
    pub sequence: u32,
    /// Image id of the point this one was made against (the previous point for
    /// an incremental, the full for a differential).
    pub parent: Option<String>,
    /// The images this point depends on, nearest first; frame link `k` is `links[k - 1]`.
    pub links: Vec<ChainLink>,
}

impl Catalog {
    pub fn region(&self, id: u32) -> Option<&Region> {
        self.regions.iter().find(|r| r.id == id)
    }

    pub fn partition_region(&self, number: u32) -> Option<&Region> {
        self.regions.iter().find(|r| r.kind == RegionKind::Partition && r.partition == Some(number))
    }

    pub fn stored_bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.stored_bytes).sum()
    }

    pub fn used_bytes(&self) -> u64 {
        self.regions.iter().map(|r| r.used_bytes).sum()
    }
}

pub fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    let mut s = String::with_capacity(b.len() * 2);
    for x in b {
        let _ = write!(s, "{x:02x}");
    }
    s
}

pub fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            image_id: [3; 16],
            created: 1_700_000_000,
            chunk_size: DEFAULT_CHUNK_SIZE,
            flags: FLAG_ENCRYPTED,
            kdf_m_kib: 65536,
            kdf_t: 3,
            kdf_p: 1,
            salt: [9; 32],
            key_check: [4; 32],
        }
    }

    #[test]
    fn header_round_trip_and_corruption() {
        let h = header();
        let b = h.encode();
        assert_eq!(Header::decode(&b).unwrap(), h);
        for i in [0usize, 9, 20, 100, 300, 511] {
            let mut c = b;
            c[i] ^= 0x40;
            assert!(Header::decode(&c).is_err(), "flip at {i} not detected");
        }
        assert_eq!(Header::decode(&b[..100]), Err(DecodeError::Magic));
    }

    #[test]
    fn footer_and_volume_round_trip() {
        let f = Footer { volume_count: 3, catalog_offset: 123, catalog_len: 456, logical_len: 789, catalog_hash: [5; 32] };
        let b = f.encode();
        assert_eq!(Footer::decode(&b).unwrap(), f);
        let mut c = b;
        c[17] ^= 1;
        assert_eq!(Footer::decode(&c), Err(DecodeError::Hash));
        let v = VolumeHeader { index: 2, image_id: [1; 16], split_size: 50 << 20 };
        assert_eq!(VolumeHeader::decode(&v.encode()).unwrap(), v);
    }

    #[test]
    fn segment_round_trip_and_validation() {
        let s = Segment {
            region: 4,
            frames: vec![FrameRef { offset: 512, stored_len: 100, raw_len: 32768, flags: FRAME_COMPRESSED, hash: [1; 32] }],
            entries: vec![
                Entry { chunk: 0, frame: 0, offset_in_frame: 0, len: 16384, flags: 0, hash: [2; 32] },
                Entry { chunk: 1, frame: 0, offset_in_frame: 0, len: 16384, flags: ENTRY_ZERO, hash: [0; 32] },
                Entry { chunk: 5, frame: 0, offset_in_frame: 16384, len: 16384, flags: 0, hash: [3; 32] },
            ],
        };
        let b = s.encode();
        assert_eq!(Segment::decode(&b, DEFAULT_CHUNK_SIZE).unwrap(), s);
        // entry pointing outside its frame
        let mut bad = s.clone();
        bad.entries[2].offset_in_frame = 20000;
        assert!(Segment::decode(&bad.encode(), DEFAULT_CHUNK_SIZE).is_err());
        // out of order
        let mut bad = s.clone();
        bad.entries.swap(0, 2);
        assert!(Segment::decode(&bad.encode(), DEFAULT_CHUNK_SIZE).is_err());
        // truncated and absurd counts
        assert!(Segment::decode(&b[..b.len() - 1], DEFAULT_CHUNK_SIZE).is_err());
        let mut huge = b.clone();
        huge[16..20].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Segment::decode(&huge, DEFAULT_CHUNK_SIZE).is_err());
    }

    #[test]
    fn hex_round_trip() {
        assert_eq!(unhex(&hex(&[0, 1, 254, 255])).unwrap(), vec![0, 1, 254, 255]);
        assert!(unhex("abc").is_none());
        assert!(unhex("zz").is_none());
    }
}
