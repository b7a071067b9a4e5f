//! ext2 / ext3 / ext4: superblock, group descriptors and block bitmaps.
//!
//! Layout per the kernel's `Documentation/filesystems/ext4/` and
//! `fs/ext4/balloc.c`. The used map is the union of
//! - bytes `[0, 2048)` and block 0 (boot block + primary superblock),
//! - per group, the superblock / GDT / reserved-GDT backups
//!   (`ext4_num_base_meta_blocks`: sparse_super, sparse_super2, meta_bg),
//! - every group's block bitmap, inode bitmap and inode table (wherever
//!   flex_bg put them),
//! - the set bits of every initialised block bitmap. A group flagged
//!   `BLOCK_UNINIT` (only honoured with `uninit_bg`/`metadata_csum`, as the
//!   kernel does) has no valid bitmap on disk: its used blocks are exactly the
//!   items above, which is what `ext4_init_block_bitmap` computes.
//!
//! Bitmaps are read in large sequential batches: with flex_bg the bitmaps of a
//! whole flex group are adjacent, so a 100 GiB filesystem needs a few dozen
//! reads, not one per group.
//!
//! Deliberately unsupported: a filesystem larger than its partition (an
//! error), external journal devices (probed as `Other("jbd")`).

use super::bitmap::for_each_run;
use super::{
    bytes, label_string, le16, le32, mul, read_at, read_vec, uuid_string, FsError, FsInfo, FsKind,
    CHUNK,
};
use crate::extent::RunBuilder;
use crate::read_at::ReadAt;
use crate::Extent;

const KIND: &str = "ext";
const SB_OFFSET: u64 = 1024;
const MAGIC: u16 = 0xEF53;

const COMPAT_HAS_JOURNAL: u32 = 0x4;
const COMPAT_SPARSE_SUPER2: u32 = 0x200;
const INCOMPAT_FILETYPE: u32 = 0x2;
const INCOMPAT_RECOVER: u32 = 0x4;
const INCOMPAT_JOURNAL_DEV: u32 = 0x8;
const INCOMPAT_META_BG: u32 = 0x10;
const INCOMPAT_64BIT: u32 = 0x80;
const RO_COMPAT_SPARSE_SUPER: u32 = 0x1;
const RO_COMPAT_LARGE_FILE: u32 = 0x2;
const RO_COMPAT_BTREE_DIR: u32 = 0x4;
const RO_COMPAT_GDT_CSUM: u32 = 0x10;
const RO_COMPAT_BIGALLOC: u32 = 0x200;
const RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const BG_INODE_UNINIT: u16 = 0x1;
const BG_BLOCK_UNINIT: u16 = 0x2;

/// Upper bound on descriptor-table bytes held in memory (4 Mi groups).
const MAX_GDT_BYTES: u64 = 256 << 20;

/// The superblock fields the map needs, validated.
#[derive(Debug, Clone)]
pub(crate) struct Super {
    pub block_size: u64,
    /// Blocks per allocation cluster (1 unless bigalloc).
    pub cluster_ratio: u64,
    pub blocks_count: u64,
    pub free_blocks: u64,
    pub first_data_block: u64,
    pub blocks_per_group: u64,
    pub inodes_per_group: u64,
    pub inode_size: u64,
    pub desc_size: u64,
    pub groups: u64,
    pub compat: u32,
    pub incompat: u32,
    pub ro_compat: u32,
    pub reserved_gdt: u64,
    pub first_meta_bg: u64,
    pub backup_bgs: [u64; 2],
    pub uuid: Option<String>,
    pub label: Option<String>,
    /// First inode number for ordinary files (`s_first_ino`).
    pub first_ino: u64,
    /// `s_state`: bit 0 set when the filesystem was cleanly unmounted.
    pub state: u16,
    /// Inodes the filesystem keeps for itself beyond `first_ino`: journal,
    /// quota files, orphan file (0 where absent).
    pub special_inodes: [u64; 5],
}

fn corrupt(what: impl Into<String>) -> FsError {
    FsError::Corrupt {
        kind: KIND,
        offset: SB_OFFSET,
        what: what.into(),
    }
}

impl Super {
    /// Parse the 1024-byte superblock. `Ok(None)`: no ext magic.
    pub(crate) fn parse(sb: &[u8]) -> Result<Option<Super>, FsError> {
        if sb.len() < 1024 || le16(sb, 0x38) != MAGIC {
            return Ok(None);
        }
        let log_block = le32(sb, 0x18);
        if log_block > 6 {
            return Err(corrupt(format!(
                "block size 1024 << {log_block} is invalid"
            )));
        }
        let block_size = 1024u64 << log_block;
        let compat = le32(sb, 0x5C);
        let incompat = le32(sb, 0x60);
        let ro_compat = le32(sb, 0x64);
        let is64 = incompat & INCOMPAT_64BIT != 0;
        let blocks_count = u64::from(le32(sb, 0x04))
            | if is64 {
                u64::from(le32(sb, 0x150)) << 32
            } else {
                0
            };
        let free_blocks = u64::from(le32(sb, 0x0C))
            | if is64 {
                u64::from(le32(sb, 0x158)) << 32
            } else {
                0
            };
        let first_data_block = u64::from(le32(sb, 0x14));
        let blocks_per_group = u64::from(le32(sb, 0x20));
        let (cluster_ratio, clusters_per_group) = if ro_compat & RO_COMPAT_BIGALLOC != 0 {
            let log_cluster = le32(sb, 0x1C);
            if log_cluster < log_block || log_cluster > log_block + 16 {
                return Err(corrupt(format!(
                    "bigalloc cluster size 1024 << {log_cluster} is invalid"
                )));
            }
            (1u64 << (log_cluster - log_block), u64::from(le32(sb, 0x24)))
        } else {
            (1, blocks_per_group)
        };
        if clusters_per_group == 0
            || clusters_per_group > block_size * 8
            || Some(blocks_per_group) != clusters_per_group.checked_mul(cluster_ratio)
        {
            return Err(corrupt(format!(
                "{blocks_per_group} blocks / {clusters_per_group} clusters per group is invalid for {block_size}-byte blocks"
            )));
        }
        if first_data_block > 1 || blocks_count <= first_data_block {
            return Err(corrupt(format!(
                "block count {blocks_count} / first data block {first_data_block} is invalid"
            )));
        }
        let inodes_per_group = u64::from(le32(sb, 0x28));
        if inodes_per_group == 0 || inodes_per_group > block_size * 8 {
            return Err(corrupt(format!(
                "{inodes_per_group} inodes per group is invalid"
            )));
        }
        let inode_size = if le32(sb, 0x4C) == 0 {
            128
        } else {
            u64::from(le16(sb, 0x58))
        };
        if inode_size < 128 || !inode_size.is_power_of_two() || inode_size > block_size {
            return Err(corrupt(format!("inode size {inode_size} is invalid")));
        }
        let desc_size = if is64 { u64::from(le16(sb, 0xFE)) } else { 32 };
        if !(32..=1024).contains(&desc_size) || !desc_size.is_power_of_two() {
            return Err(corrupt(format!(
                "group descriptor size {desc_size} is invalid"
            )));
        }
        let groups = (blocks_count - first_data_block).div_ceil(blocks_per_group);
        // The kernel's own cross-check (ext4_fill_super): it catches absurd
        // group counts before anything is sized from them.
        let inodes_count = u64::from(le32(sb, 0x00));
        if groups.checked_mul(inodes_per_group) != Some(inodes_count) {
            return Err(corrupt(format!(
                "{groups} groups * {inodes_per_group} inodes per group != {inodes_count} inodes"
            )));
        }
        let first_meta_bg = if incompat & INCOMPAT_META_BG != 0 {
            u64::from(le32(sb, 0x104))
        } else {
            0
        };
        Ok(Some(Super {
            block_size,
            cluster_ratio,
            blocks_count,
            free_blocks,
            first_data_block,
            blocks_per_group,
            inodes_per_group,
            inode_size,
            desc_size,
            groups,
            compat,
            incompat,
            ro_compat,
            reserved_gdt: u64::from(le16(sb, 0xCE)),
            first_meta_bg,
            backup_bgs: [u64::from(le32(sb, 0x24C)), u64::from(le32(sb, 0x250))],
            uuid: uuid_string(bytes(sb, 0x68, 16)),
            label: label_string(bytes(sb, 0x78, 16), false),
            first_ino: if le32(sb, 0x4C) == 0 { 11 } else { u64::from(le32(sb, 0x54)) },
            state: le16(sb, 0x3A),
            special_inodes: [0xE0, 0x240, 0x244, 0x26C, 0x280].map(|off| u64::from(le32(sb, off))),
        }))
    }

    /// ext2, ext3 or ext4, the way `blkid` decides it.
    pub(crate) fn kind(&self) -> FsKind {
        const EXT3_INCOMPAT: u32 = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG;
        const EXT3_RO_COMPAT: u32 =
            RO_COMPAT_SPARSE_SUPER | RO_COMPAT_LARGE_FILE | RO_COMPAT_BTREE_DIR;
        if self.incompat & INCOMPAT_JOURNAL_DEV != 0 {
            FsKind::Other("jbd".into())
        } else if self.incompat & !EXT3_INCOMPAT != 0 || self.ro_compat & !EXT3_RO_COMPAT != 0 {
            FsKind::Ext4
        } else if self.compat & COMPAT_HAS_JOURNAL != 0 {
            FsKind::Ext3
        } else {
            FsKind::Ext2
        }
    }

    fn meta_bg(&self) -> bool {
        self.incompat & INCOMPAT_META_BG != 0
    }

    /// Why the blocks on the device may not show the filesystem's last
    /// state (a journal still to replay, not cleanly unmounted), if so.
    pub(crate) fn unclean(&self) -> Option<&'static str> {
        if self.incompat & INCOMPAT_RECOVER != 0 {
            Some("its journal holds changes not yet written to their place (not cleanly unmounted)")
        } else if self.state & 1 == 0 {
            Some("it was not cleanly unmounted")
        } else {
            None
        }
    }

    fn has_group_csum(&self) -> bool {
        self.ro_compat & (RO_COMPAT_GDT_CSUM | RO_COMPAT_METADATA_CSUM) != 0
    }

    /// The block holding the primary superblock (byte 1024): 1 with 1 KiB
    /// blocks, else 0. The classic descriptor table starts right after it
    /// (`logical_sb_block + 1` in the kernel's `descriptor_loc`).
    fn sb_block(&self) -> u64 {
        SB_OFFSET / self.block_size
    }

    fn desc_per_block(&self) -> u64 {
        self.block_size / self.desc_size
    }

    fn group_first_block(&self, g: u64) -> u64 {
        self.first_data_block + g * self.blocks_per_group
    }

    fn blocks_in_group(&self, g: u64) -> u64 {
        (self.blocks_count - self.group_first_block(g)).min(self.blocks_per_group)
    }

    /// `ext4_bg_has_super`.
    fn has_super(&self, g: u64) -> bool {
        if g == 0 {
            return true;
        }
        if self.compat & COMPAT_SPARSE_SUPER2 != 0 {
            return g == self.backup_bgs[0] || g == self.backup_bgs[1];
        }
        if g <= 1 || self.ro_compat & RO_COMPAT_SPARSE_SUPER == 0 {
            return true;
        }
        if g & 1 == 0 {
            return false;
        }
        [3u64, 5, 7].iter().any(|&b| is_power_of(g, b))
    }

    /// Number of descriptor-table blocks without meta_bg (`s_gdb_count`).
    fn gdt_blocks(&self) -> u64 {
        (self.groups * self.desc_size).div_ceil(self.block_size)
    }

    /// `ext4_num_base_meta_blocks`: superblock, GDT and reserved-GDT blocks at
    /// the start of group `g`.
    fn base_meta_blocks(&self, g: u64) -> u64 {
        let sup = u64::from(self.has_super(g));
        if !self.meta_bg() || g < self.first_meta_bg.saturating_mul(self.desc_per_block()) {
            if sup == 0 {
                return 0;
            }
            let gdb = if self.meta_bg() {
                self.first_meta_bg
            } else {
                self.gdt_blocks()
            };
            sup + gdb + self.reserved_gdt
        } else {
            let dpb = self.desc_per_block();
            let first = g / dpb * dpb;
            let meta = u64::from(g == first || g == first + 1 || g == first + dpb - 1);
            sup + meta
        }
    }
}

fn is_power_of(mut n: u64, base: u64) -> bool {
    while n > 1 && n.checked_rem(base) == Some(0) {
        n /= base;
    }
    n == 1
}

/// One group descriptor, as far as the map needs it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Group {
    block_bitmap: u64,
    inode_bitmap: u64,
    inode_table: u64,
    flags: u16,
    /// Inodes at the end of the group's table never used (`bg_itable_unused`;
    /// meaningful only with group checksums).
    itable_unused: u64,
}

fn parse_desc(sb: &Super, d: &[u8]) -> Group {
    let hi = |off: usize| -> u64 {
        if sb.desc_size >= 64 {
            u64::from(le32(d, off)) << 32
        } else {
            0
        }
    };
    Group {
        block_bitmap: u64::from(le32(d, 0x00)) | hi(0x20),
        inode_bitmap: u64::from(le32(d, 0x04)) | hi(0x24),
        inode_table: u64::from(le32(d, 0x08)) | hi(0x28),
        flags: le16(d, 0x12),
        itable_unused: u64::from(le16(d, 0x1C))
            | if sb.desc_size >= 64 {
                u64::from(le16(d, 0x32)) << 16
            } else {
                0
            },
    }
}

pub(crate) fn probe(len: u64, head: &[u8]) -> Result<Option<FsInfo>, FsError> {
    let Some(sb) = Super::parse(bytes(head, 1024, 1024))? else {
        return Ok(None);
    };
    let _ = len;
    let used = sb
        .blocks_count
        .checked_sub(sb.free_blocks)
        .and_then(|b| b.checked_mul(sb.block_size));
    Ok(Some(FsInfo {
        kind: sb.kind(),
        label: sb.label.clone(),
        uuid: sb.uuid.clone(),
        block_size: sb.block_size as u32,
        size: sb.blocks_count.saturating_mul(sb.block_size),
        used,
        sector_size: None,
    }))
}

impl Group {
    /// First block of the group's inode table.
    pub(crate) fn inode_table(&self) -> u64 {
        self.inode_table
    }

    /// How many inodes at the start of the group's table may be in use
    /// (the rest were never initialised: `INODE_UNINIT`, `bg_itable_unused`).
    pub(crate) fn inodes_in_use_bound(&self, sb: &Super) -> u64 {
        if !sb.has_group_csum() {
            return sb.inodes_per_group;
        }
        if self.flags & BG_INODE_UNINIT != 0 {
            return 0;
        }
        sb.inodes_per_group.saturating_sub(self.itable_unused)
    }
}

/// Read all group descriptors (both the classic layout and meta_bg).
pub(crate) fn read_groups(dev: &dyn ReadAt, sb: &Super) -> Result<Vec<Group>, FsError> {
    let total = mul(KIND, SB_OFFSET, sb.groups, sb.desc_size)?;
    if total > MAX_GDT_BYTES {
        return Err(FsError::TooLarge {
            kind: KIND,
            what: "group descriptor table",
            size: total,
            limit: MAX_GDT_BYTES,
        });
    }
    let mut groups = Vec::with_capacity(sb.groups as usize);
    let dpb = sb.desc_per_block();
    // Classic layout: the table follows the superblock's block. With meta_bg
    // only the first `first_meta_bg` table blocks are laid out this way.
    let classic_groups = if sb.meta_bg() {
        sb.first_meta_bg.saturating_mul(dpb).min(sb.groups)
    } else {
        sb.groups
    };
    let gdt_start = (sb.sb_block() + 1) * sb.block_size;
    let mut done = 0u64;
    while done < classic_groups {
        let n = (classic_groups - done).min(CHUNK / sb.desc_size);
        let off = gdt_start + done * sb.desc_size;
        let buf = read_vec(dev, off, n * sb.desc_size, CHUNK, KIND)?;
        for d in buf.chunks_exact(sb.desc_size as usize) {
            groups.push(parse_desc(sb, d));
        }
        done += n;
    }
    // meta_bg: one descriptor block per meta group, in the meta group's first
    // group, after its superblock backup if it has one.
    while (groups.len() as u64) < sb.groups {
        let g = groups.len() as u64;
        let first = g / dpb * dpb;
        // `descriptor_loc`: 1 KiB blocks with first_data_block 0 (bigalloc)
        // put group 0's superblock in block 1, so its descriptors in block 2.
        let quirk = first == 0 && sb.first_data_block == 0 && sb.block_size == 1024;
        let block = sb.group_first_block(first) + u64::from(sb.has_super(first)) + u64::from(quirk);
        if block >= sb.blocks_count {
            return Err(FsError::BadGroup {
                kind: KIND,
                group: g,
                offset: block.saturating_mul(sb.block_size),
                what: "meta_bg descriptor block lies past the end".into(),
            });
        }
        let buf = read_vec(dev, block * sb.block_size, sb.block_size, CHUNK, KIND)?;
        let n = (sb.groups - g).min(dpb) as usize;
        for d in buf.chunks_exact(sb.desc_size as usize).take(n) {
            groups.push(parse_desc(sb, d));
        }
    }
    Ok(groups)
}

/// Byte offset of group `g`'s descriptor (for error messages).
fn desc_offset(sb: &Super, g: u64) -> u64 {
    (sb.sb_block() + 1) * sb.block_size + g * sb.desc_size
}

pub(crate) fn used_extents(dev: &dyn ReadAt, len: u64) -> Result<Vec<Extent>, FsError> {
    let mut raw = [0u8; 1024];
    read_at(dev, &mut raw, SB_OFFSET)?;
    let sb = Super::parse(&raw)?.ok_or_else(|| corrupt("no ext superblock magic"))?;
    let bs = sb.block_size;
    let size = mul(KIND, SB_OFFSET, sb.blocks_count, bs)?;
    if size > len {
        return Err(corrupt(format!(
            "the filesystem ({size} bytes) is larger than its partition ({len} bytes)"
        )));
    }
    let groups = read_groups(dev, &sb)?;
    let itable_blocks = (sb.inodes_per_group * sb.inode_size).div_ceil(bs);

    let mut meta: Vec<Extent> = Vec::with_capacity(groups.len() * 4 + 2);
    // Boot block + primary superblock, whatever the block size.
    meta.push(Extent::new(0, bs.max(2048)));
    let mut bitmaps: Vec<(u64, u64)> = Vec::new(); // (bitmap block, group)
    let uninit_honoured = sb.has_group_csum();
    for (g, gd) in groups.iter().enumerate() {
        let g = g as u64;
        let bad = |what: &str| FsError::BadGroup {
            kind: KIND,
            group: g,
            offset: desc_offset(&sb, g),
            what: what.into(),
        };
        let in_fs = |b: u64, n: u64| {
            b != 0
                && b >= sb.first_data_block
                && b.checked_add(n).is_some_and(|e| e <= sb.blocks_count)
        };
        if !in_fs(gd.block_bitmap, 1) {
            return Err(bad(&format!(
                "block bitmap at block {} is outside the filesystem",
                gd.block_bitmap
            )));
        }
        if !in_fs(gd.inode_bitmap, 1) {
            return Err(bad(&format!(
                "inode bitmap at block {} is outside the filesystem",
                gd.inode_bitmap
            )));
        }
        if !in_fs(gd.inode_table, itable_blocks) {
            return Err(bad(&format!(
                "inode table at block {} is outside the filesystem",
                gd.inode_table
            )));
        }
        // This group's metadata, wherever flex_bg placed it.
        meta.push(Extent::new(gd.block_bitmap * bs, bs));
        meta.push(Extent::new(gd.inode_bitmap * bs, bs));
        meta.push(Extent::new(gd.inode_table * bs, itable_blocks * bs));
        // Superblock / GDT / reserved-GDT backups at the group's start.
        let base = sb.base_meta_blocks(g).min(sb.blocks_in_group(g));
        meta.push(Extent::new(sb.group_first_block(g) * bs, base * bs));
        if g == 0 {
            // Group 0's table follows the superblock's own block, which is
            // block 1 with 1 KiB blocks even when first_data_block is 0.
            meta.push(Extent::new(0, (sb.sb_block() + base) * bs));
        }
        if uninit_honoured && gd.flags & BG_BLOCK_UNINIT != 0 {
            // Nothing but the metadata above is in use in this group.
            continue;
        }
        bitmaps.push((gd.block_bitmap, g));
    }

    let mut runs = RunBuilder::new();
    bitmaps.sort_unstable();
    let max_batch = (CHUNK / bs).max(1);
    let mut i = 0;
    while i < bitmaps.len() {
        // Extend the batch while the next bitmap is in the next block.
        let first_block = bitmaps[i].0;
        let mut j = i + 1;
        while j < bitmaps.len()
            && bitmaps[j].0 == bitmaps[j - 1].0 + 1
            && bitmaps[j].0 - first_block < max_batch
        {
            j += 1;
        }
        // Two groups sharing one bitmap block would be caught here as well.
        let nblocks = bitmaps[j - 1].0 - first_block + 1;
        let buf = read_vec(dev, first_block * bs, nblocks * bs, CHUNK.max(bs), KIND)?;
        for &(block, g) in &bitmaps[i..j] {
            let off = ((block - first_block) * bs) as usize;
            let bm = bytes(&buf, off, bs as usize);
            let start = sb.group_first_block(g);
            let clusters = sb.blocks_in_group(g).div_ceil(sb.cluster_ratio);
            let ratio = sb.cluster_ratio;
            for_each_run(bm, clusters, 0, |c, n| {
                let b = start + c * ratio;
                let nb = (n * ratio).min(sb.blocks_count - b);
                runs.add(b * bs, nb * bs);
            });
        }
        i = j;
    }

    let mut v = runs.finish(len);
    v.extend(meta);
    Ok(crate::extent::normalize(v, len))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::extent::total;
    use crate::fs::testutil::{expected, fixture, probe_fixture};
    use crate::fs::{probe as probe_any, used_extents as used_any};

    fn check_fixture(name: &str, kind: FsKind) -> (Vec<u8>, FsInfo, Vec<Extent>) {
        let (img, info, v) = probe_fixture(name, kind, None);
        let len = img.len() as u64;
        let bs: u32 = expected(name, "block_size")
            .and_then(|s| s.parse().ok())
            .expect("INDEX block_size");
        assert_eq!(info.block_size, bs, "{name}");
        // Everything the filesystem says is used must be in the map, plus metadata.
        let used = info.used.expect("ext reports used");
        let mapped = total(&v);
        assert!(mapped >= used, "{name}: mapped {mapped} < used {used}");
        assert!(
            mapped <= used + 64 * 1024 * 4,
            "{name}: mapped {mapped} >> used {used}"
        );
        assert!(mapped < len / 2, "{name}: map should be small");
        assert_eq!(v[0].start, 0);
        (img, info, v)
    }

    /// Every byte not in the map may be replaced by garbage: the bytes in the
    /// map must contain all non-zero data the tools wrote except in free blocks.
    #[test]
    fn ext2_1k_blocks() {
        check_fixture("ext2-1k.img", FsKind::Ext2);
    }

    #[test]
    fn ext3_4k_blocks() {
        check_fixture("ext3-4k.img", FsKind::Ext3);
    }

    #[test]
    fn ext4_flex_bg_uninit() {
        let (img, _, v) = check_fixture("ext4-4k.img", FsKind::Ext4);
        let sb = Super::parse(&img[1024..2048])
            .expect("parse")
            .expect("magic");
        assert!(sb.has_group_csum() && sb.groups >= 3);
        let groups = read_groups(&img, &sb).expect("groups");
        assert!(
            groups
                .iter()
                .skip(1)
                .any(|g| g.flags & BG_BLOCK_UNINIT != 0),
            "fixture has no BLOCK_UNINIT group"
        );
        // flex_bg: group 1's bitmaps live in group 0.
        assert!(groups[1].block_bitmap < sb.blocks_per_group);
        // The superblock backup of group 1 is in the map.
        let g1 = sb.group_first_block(1) * sb.block_size;
        assert!(
            v.iter().any(|e| e.start <= g1 && e.end() > g1),
            "backup superblock missing"
        );
    }

    #[test]
    fn ext4_no_flex_bg_1k() {
        let (_, _, v) = check_fixture("ext4-noflex-1k.img", FsKind::Ext4);
        // Group 1 starts at block 8193 and holds a superblock backup.
        let g1 = 8193u64 * 1024;
        assert!(
            v.iter().any(|e| e.start <= g1 && e.end() > g1),
            "backup superblock missing"
        );
    }

    #[test]
    fn ext4_64bit_meta_bg() {
        check_fixture("ext4-metabg.img", FsKind::Ext4);
    }

    #[test]
    fn kernel_base_meta_blocks() {
        let img = fixture("ext4-noflex-1k.img");
        let sb = Super::parse(&img[1024..2048])
            .expect("parse")
            .expect("magic");
        assert!(sb.has_super(0) && sb.has_super(1) && sb.has_super(3) && sb.has_super(9));
        assert!(sb.has_super(25) && sb.has_super(49) && !sb.has_super(2) && !sb.has_super(15));
        assert_eq!(sb.base_meta_blocks(2), 0);
        assert_eq!(
            sb.base_meta_blocks(1),
            1 + sb.gdt_blocks() + sb.reserved_gdt
        );
    }

    #[test]
    fn truncated_image_is_an_error() {
        let img = fixture("ext4-4k.img");
        let len = img.len() as u64;
        let info = probe_any(&img, len).expect("probe").expect("recognised");
        let short = img[..img.len() / 2].to_vec();
        let e = used_any(&short, short.len() as u64, &info).expect_err("truncated");
        assert!(matches!(e, FsError::Corrupt { .. }), "{e}");
        // The device lies about its length: reads fail, no panic.
        let e = used_any(&img[..8192].to_vec(), len, &info).expect_err("short device");
        assert!(matches!(e, FsError::Io { .. }), "{e}");
    }

    #[test]
    fn zeroed_superblock_is_not_ext() {
        let mut img = fixture("ext4-4k.img");
        img[1024..2048].fill(0);
        let len = img.len() as u64;
        assert!(probe_any(&img, len).expect("probe").is_none());
        let info = FsInfo {
            kind: FsKind::Ext4,
            label: None,
            uuid: None,
            block_size: 4096,
            size: len,
            used: None,
            sector_size: None,
        };
        assert!(used_any(&img, len, &info).is_err());
    }

    #[test]
    fn absurd_counts_are_errors() {
        let img = fixture("ext4-4k.img");
        let len = img.len() as u64;
        let info = probe_any(&img, len).expect("probe").expect("recognised");
        // Huge 64-bit block count: more groups than the device could hold.
        let mut bad = img.clone();
        bad[1024 + 0x60..1024 + 0x64].copy_from_slice(&(0x2c2u32 | INCOMPAT_64BIT).to_le_bytes());
        bad[1024 + 0xFE..1024 + 0x100].copy_from_slice(&64u16.to_le_bytes());
        bad[1024 + 0x150..1024 + 0x154].copy_from_slice(&0xffff_ffffu32.to_le_bytes());
        assert!(used_any(&bad, len, &info).is_err());
        // One block per group: millions of groups on a small device.
        let mut bad = img.clone();
        bad[1024 + 0x20..1024 + 0x24].copy_from_slice(&1u32.to_le_bytes());
        assert!(matches!(
            used_any(&bad, len, &info),
            Err(FsError::Corrupt { .. })
        ));
        // Zero blocks per group must not divide by zero.
        let mut bad = img.clone();
        bad[1024 + 0x20..1024 + 0x24].copy_from_slice(&0u32.to_le_bytes());
        assert!(probe_any(&bad, len).is_err());
        // Absurd block size.
        let mut bad = img.clone();
        bad[1024 + 0x18] = 40;
        assert!(probe_any(&bad, len).is_err());
        // A group descriptor pointing past the end.
        let mut bad = img.clone();
        let gdt = 4096 + 32; // group 1's descriptor (32-byte descriptors)
        let desc = if (le32(&img, 1024 + 0x60) & INCOMPAT_64BIT) != 0 {
            4096 + 64
        } else {
            gdt
        };
        bad[desc..desc + 4].copy_from_slice(&0x7fff_ffffu32.to_le_bytes());
        assert!(matches!(
            used_any(&bad, len, &info),
            Err(FsError::BadGroup { group: 1, .. })
        ));
    }

    #[test]
    fn garbage_never_panics() {
        let mut img = fixture("ext4-4k.img");
        let len = img.len() as u64;
        let info = probe_any(&img, len).expect("probe").expect("recognised");
        // Superblock and the descriptor block.
        crate::fs::testutil::fuzz(&mut img, &[(1024, 1024), (4096, 4096)], 400, |bad| {
            let _ = probe_any(&bad, len);
            let _ = used_any(&bad, len, &info);
        });
        let mut img = fixture("ext4-metabg.img");
        let len = img.len() as u64;
        let info = probe_any(&img, len).expect("probe").expect("recognised");
        crate::fs::testutil::fuzz(&mut img, &[(1024, 1024), (2048, 1024)], 300, |bad| {
            let _ = probe_any(&bad, len);
            let _ = used_any(&bad, len, &info);
        });
    }
}
