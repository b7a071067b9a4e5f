//! Files of ext2/3/4, read-only: inodes, directories (linear, which htree
//! directories also are), extent trees and the old indirect block map.
//!
//! Layout per the kernel's `Documentation/filesystems/ext4/` (inodes,
//! `ifork.rst` for extents and block maps, `directory.rst`). Refused with an
//! [`FilesError::Unsupported`]: inline data and fscrypt-encrypted inodes.

use std::io;

use super::{read, Entry, FileMap, FilesError, Kind, MapBuilder, Node};
use crate::fs::ext::{read_groups, Group, Super};
use crate::fs::{le16, le32};
use crate::read_at::ReadAt;

const KIND: &str = "ext";
const ROOT_INO: u32 = 2;
const INCOMPAT_FILETYPE: u32 = 0x2;

const FL_ENCRYPT: u32 = 0x800;
const FL_EXTENTS: u32 = 0x8_0000;
const FL_INLINE_DATA: u32 = 0x1000_0000;

const S_IFMT: u16 = 0xF000;
const S_IFDIR: u16 = 0x4000;
const S_IFREG: u16 = 0x8000;
const S_IFLNK: u16 = 0xA000;

/// Largest directory read into memory.
const MAX_DIR: u64 = 64 << 20;
/// Most extents of one file held in memory.
const MAX_RUNS: usize = 1 << 20;

/// An open ext2/3/4 filesystem.
pub struct ExtFs<'a> {
    dev: &'a dyn ReadAt,
    sb: Super,
    groups: Vec<Group>,
}

/// An inode, as far as reading files needs it.
struct Inode {
    ino: u32,
    mode: u16,
    size: u64,
    atime: i64,
    mtime: i64,
    mtime_nsec: u32,
    flags: u32,
    block: [u8; 60],
    offset: u64,
}

/// `len` blocks of a file from logical block `logical` at physical `physical`
/// (`None`: a hole or unwritten extent, reads as zeros).
#[derive(Debug, Clone, Copy)]
struct Run {
    logical: u64,
    physical: Option<u64>,
    len: u64,
}

/// Adds data block `b` at logical block `l` to the runs (`block_map`).
type PushBlock<'p> = dyn FnMut(&mut Vec<Run>, u64, u32) -> Result<(), FilesError> + 'p;

fn corrupt(offset: u64, what: impl Into<String>) -> FilesError {
    FilesError::Corrupt { kind: KIND, offset, what: what.into() }
}

/// Seconds and nanoseconds from a 32-bit time and its `_extra` field (two
/// epoch bits for dates past 2038, then nanoseconds).
fn time(base: u32, extra: Option<u32>) -> (i64, u32) {
    let secs = i64::from(base as i32);
    match extra {
        Some(x) => (secs + (i64::from(x & 3) << 32), (x >> 2).min(999_999_999)),
        None => (secs, 0),
    }
}

impl<'a> ExtFs<'a> {
    /// `Ok(None)` when `head` (the first 4 KiB) holds no ext superblock.
    pub fn open(dev: &'a dyn ReadAt, head: &[u8]) -> Result<Option<Self>, FilesError> {
        let Some(sbb) = head.get(1024..2048) else { return Ok(None) };
        let Some(sb) = Super::parse(sbb).map_err(|e| FilesError::from_fs(KIND, e))? else { return Ok(None) };
        let groups = read_groups(dev, &sb).map_err(|e| FilesError::from_fs(KIND, e))?;
        Ok(Some(ExtFs { dev, sb, groups }))
    }

    pub fn name(&self) -> String {
        self.sb.kind().name().to_string()
    }

    /// The root folder, with its times and mode (bare when its inode cannot be read).
    pub fn root(&self) -> Entry {
        self.entry("/".into(), ROOT_INO).ok().filter(|e| e.kind == Kind::Dir).unwrap_or(Entry {
            name: "/".into(),
            kind: Kind::Dir,
            size: 0,
            mtime: 0,
            mtime_nsec: 0,
            atime: None,
            mode: None,
            attributes: None,
            target: None,
            node: Node::Ext(ROOT_INO),
        })
    }

    fn inode(&self, ino: u32) -> Result<Inode, FilesError> {
        let n = u64::from(ino);
        if ino == 0 || n > self.sb.groups * self.sb.inodes_per_group {
            return Err(corrupt(0, format!("inode {ino} does not exist")));
        }
        let g = (n - 1) / self.sb.inodes_per_group;
        let idx = (n - 1) % self.sb.inodes_per_group;
        let table = self.groups.get(g as usize).map(|g| g.inode_table()).ok_or_else(|| corrupt(0, format!("inode {ino}: no group {g}")))?;
        if table == 0 || table >= self.sb.blocks_count {
            return Err(corrupt(0, format!("inode {ino}: inode table of group {g} at block {table} lies outside the filesystem")));
        }
        let offset = table * self.sb.block_size + idx * self.sb.inode_size;
        let b = read(self.dev, KIND, offset, self.sb.inode_size, 1 << 16)?;
        Ok(parse_inode(ino, offset, &b))
    }

    /// Regular files whose inode is byte for byte the same in `self` and
    /// `other` (two copies of one filesystem: an image of it and the disk
    /// now) and whose data lies in the same blocks: the blocks, as device
    /// byte ranges, go to `out`; returns how many files. Any write through
    /// the filesystem changes the inode (ctime, mtime, size, extents), so
    /// these blocks hold the same bytes in both copies. Inodes the
    /// filesystem writes behind its own back (journal, quota, orphan file,
    /// xattr inodes) and everything that is not a regular file's data
    /// (directories, extent tree blocks, bitmaps) are left out.
    pub(crate) fn same_files(&self, other: &ExtFs<'_>, out: &mut Vec<crate::extent::Extent>) -> Result<u64, FilesError> {
        const EA_INODE_FL: u32 = 0x20_0000;
        let (a, b) = (&self.sb, &other.sb);
        if a.uuid != b.uuid || a.block_size != b.block_size || a.inode_size != b.inode_size || a.inodes_per_group != b.inodes_per_group || a.groups != b.groups || a.first_ino != b.first_ino {
            return Err(FilesError::Unsupported { what: "the two filesystems are not copies of one filesystem (UUID or geometry differ)".into() });
        }
        let isz = a.inode_size;
        // Inode tables are read in pieces of at most 4 MiB from each copy.
        let per = ((4u64 << 20) / isz).max(1);
        let mut files = 0;
        for (g, (ga, gb)) in self.groups.iter().zip(&other.groups).enumerate() {
            let n = ga.inodes_in_use_bound(a).min(gb.inodes_in_use_bound(b));
            let mut first = 0;
            while first < n {
                let count = per.min(n - first);
                let table = |fs: &ExtFs<'_>, grp: &Group| -> Result<(u64, Vec<u8>), FilesError> {
                    let t = grp.inode_table();
                    if t == 0 || t >= fs.sb.blocks_count {
                        return Err(corrupt(0, format!("inode table of group {g} at block {t} lies outside the filesystem")));
                    }
                    let off = t * fs.sb.block_size + first * isz;
                    Ok((off, read(fs.dev, KIND, off, count * isz, 8 << 20)?))
                };
                let (off_a, ta) = table(self, ga)?;
                let (off_b, tb) = table(other, gb)?;
                for k in 0..count {
                    let ino = g as u64 * a.inodes_per_group + first + k + 1;
                    let r = (k * isz) as usize..((k + 1) * isz) as usize;
                    let (ra, rb) = (&ta[r.clone()], &tb[r]);
                    if ino < a.first_ino || a.special_inodes.contains(&ino) || b.special_inodes.contains(&ino) || ra != rb {
                        continue;
                    }
                    let (mode, links, dtime, flags) = (le16(ra, 0), le16(ra, 0x1A), le32(ra, 0x14), le32(ra, 0x20));
                    if mode & S_IFMT != S_IFREG || links == 0 || dtime != 0 || flags & (EA_INODE_FL | FL_INLINE_DATA | FL_ENCRYPT) != 0 {
                        continue;
                    }
                    let ia = parse_inode(ino as u32, off_a + k * isz, ra);
                    let ib = parse_inode(ino as u32, off_b + k * isz, rb);
                    // The block lists, read from each copy (the index blocks
                    // of an extent tree lie outside the inode).
                    let (Ok(ma), Ok(mb)) = (self.map_inode(&ia), other.map_inode(&ib)) else { continue };
                    let (Some(ea), Some(eb)) = (ma.device_units(a.block_size), mb.device_units(b.block_size)) else { continue };
                    if ea != eb {
                        continue;
                    }
                    out.extend(ea);
                    files += 1;
                }
                first += count;
            }
        }
        Ok(files)
    }

    fn entry(&self, name: String, ino: u32) -> Result<Entry, FilesError> {
        let i = self.inode(ino)?;
        let kind = match i.mode & S_IFMT {
            S_IFDIR => Kind::Dir,
            S_IFREG => Kind::File,
            S_IFLNK => Kind::Symlink,
            _ => Kind::Other,
        };
        let target = if kind == Kind::Symlink { Some(self.link_target(&i)?) } else { None };
        Ok(Entry {
            name,
            kind,
            size: i.size,
            mtime: i.mtime,
            mtime_nsec: i.mtime_nsec,
            atime: Some(i.atime),
            mode: Some(u32::from(i.mode & 0o7777)),
            attributes: None,
            target,
            node: Node::Ext(ino),
        })
    }

    fn link_target(&self, i: &Inode) -> Result<String, FilesError> {
        // A fast symlink keeps its target in i_block (e2fsprogs'
        // ext2fs_is_fast_symlink: shorter than i_block, no inline data).
        if i.size < 60 && i.flags & (FL_INLINE_DATA | FL_EXTENTS) == 0 {
            return Ok(String::from_utf8_lossy(&i.block[..i.size as usize]).into_owned());
        }
        if i.size > 4096 {
            return Err(corrupt(i.offset, format!("symlink inode {} is {} bytes long", i.ino, i.size)));
        }
        let mut v = Vec::new();
        self.copy(i, &mut v)?;
        Ok(String::from_utf8_lossy(&v).into_owned())
    }

    pub fn list(&self, dir: &Entry) -> Result<Vec<Entry>, FilesError> {
        let Node::Ext(ino) = dir.node else { return Err(corrupt(0, "not an ext entry")) };
        let i = self.inode(ino)?;
        if i.mode & S_IFMT != S_IFDIR {
            return Err(FilesError::NotADirectory { path: dir.name.clone() });
        }
        if i.size > MAX_DIR {
            return Err(corrupt(i.offset, format!("directory inode {ino} is {} bytes long", i.size)));
        }
        let mut data = Vec::with_capacity(i.size as usize);
        self.copy(&i, &mut data)?;
        let bs = self.sb.block_size as usize;
        let filetype = self.sb.incompat & INCOMPAT_FILETYPE != 0;
        let mut out = Vec::new();
        for (bi, blk) in data.chunks(bs).enumerate() {
            let mut at = 0usize;
            while at + 8 <= blk.len() {
                let child = le32(blk, at);
                let rec_len = usize::from(le16(blk, at + 4));
                let name_len = if filetype { usize::from(blk[at + 6]) } else { usize::from(le16(blk, at + 6)) };
                if rec_len < 8 || rec_len % 4 != 0 || at + rec_len > blk.len() || 8 + name_len > rec_len {
                    return Err(corrupt(i.offset, format!("directory inode {ino}: bad entry at byte {} of block {bi}", at)));
                }
                // Inode 0: an unused slot (or the metadata_csum tail).
                if child != 0 {
                    let name = String::from_utf8_lossy(&blk[at + 8..at + 8 + name_len]).into_owned();
                    if name != "." && name != ".." {
                        out.push(self.entry(name, child)?);
                    }
                }
                at += rec_len;
            }
        }
        Ok(out)
    }

    pub(crate) fn dev(&self) -> &dyn ReadAt {
        self.dev
    }

    /// Why this filesystem's blocks may not show its last state, if so.
    pub(crate) fn unclean(&self) -> Option<&'static str> {
        self.sb.unclean()
    }

    pub fn map(&self, file: &Entry) -> Result<FileMap, FilesError> {
        let Node::Ext(ino) = file.node else { return Err(corrupt(0, "not an ext entry")) };
        self.map_inode(&self.inode(ino)?)
    }

    /// Write the first `i.size` bytes of the inode's data to `out`.
    fn copy(&self, i: &Inode, out: &mut dyn io::Write) -> Result<u64, FilesError> {
        self.map_inode(i)?.copy_plain(self.dev, KIND, out)
    }

    /// Where the first `i.size` bytes of the inode's data are.
    fn map_inode(&self, i: &Inode) -> Result<FileMap, FilesError> {
        if i.flags & FL_INLINE_DATA != 0 {
            return Err(FilesError::Unsupported { what: format!("inode {}: inline data (ext4 inline_data feature)", i.ino) });
        }
        if i.flags & FL_ENCRYPT != 0 {
            return Err(FilesError::Unsupported { what: format!("inode {}: an encrypted (fscrypt) file", i.ino) });
        }
        let bs = self.sb.block_size;
        // A damaged size must not make us write terabytes of zeros.
        let fs_bytes = self.sb.blocks_count.saturating_mul(bs);
        if i.size > fs_bytes {
            return Err(corrupt(i.offset, format!("inode {} claims {} bytes, more than the filesystem's {fs_bytes} (sparse files that large are not supported)", i.ino, i.size)));
        }
        let nblocks = i.size.div_ceil(bs);
        let mut runs = if i.flags & FL_EXTENTS != 0 { self.extents(i, nblocks)? } else { self.block_map(i, nblocks)? };
        runs.sort_by_key(|r| r.logical);
        let mut m = MapBuilder::new(i.size, i.size);
        let mut next = 0u64; // next logical block to map
        for r in &runs {
            if r.logical >= nblocks || r.logical + r.len <= next {
                continue;
            }
            let start = r.logical.max(next);
            if start > next {
                m.push((start - next) * bs, None);
            }
            let skip = start - r.logical;
            let blocks = (r.len - skip).min(nblocks - start);
            m.push(blocks * bs, r.physical.map(|p| (p + skip) * bs));
            next = start + blocks;
        }
        Ok(m.finish())
    }

    fn check_block(&self, i: &Inode, b: u64, len: u64) -> Result<(), FilesError> {
        if b.checked_add(len).is_none_or(|e| e > self.sb.blocks_count) || b < self.sb.first_data_block {
            return Err(corrupt(i.offset, format!("inode {}: blocks {b}+{len} lie outside the filesystem ({} blocks)", i.ino, self.sb.blocks_count)));
        }
        Ok(())
    }

    /// Walk the extent tree (`ext4_extents.h`): header magic 0xF30A, depth at
    /// most 5, index nodes pointing to blocks of the tree.
    fn extents(&self, i: &Inode, nblocks: u64) -> Result<Vec<Run>, FilesError> {
        let mut runs = Vec::new();
        self.extent_node(i, &i.block, 0, None, &mut runs, nblocks)?;
        Ok(runs)
    }

    fn extent_node(&self, i: &Inode, node: &[u8], level: u32, expect_depth: Option<u16>, runs: &mut Vec<Run>, nblocks: u64) -> Result<(), FilesError> {
        if node.len() < 12 || le16(node, 0) != 0xF30A {
            return Err(corrupt(i.offset, format!("inode {}: bad extent header", i.ino)));
        }
        let entries = usize::from(le16(node, 2));
        let depth = le16(node, 6);
        if depth > 5 || expect_depth.is_some_and(|d| d != depth) || level > 5 || 12 + entries * 12 > node.len() {
            return Err(corrupt(i.offset, format!("inode {}: bad extent tree node (depth {depth}, {entries} entries)", i.ino)));
        }
        for k in 0..entries {
            let e = &node[12 + k * 12..24 + k * 12];
            let logical = u64::from(le32(e, 0));
            if depth == 0 {
                let raw = u64::from(le16(e, 4));
                let (len, unwritten) = if raw > 32768 { (raw - 32768, true) } else { (raw, false) };
                let start = u64::from(le32(e, 8)) | (u64::from(le16(e, 6)) << 32);
                if len == 0 || logical >= nblocks {
                    continue;
                }
                if !unwritten {
                    self.check_block(i, start, len)?;
                }
                if runs.len() >= MAX_RUNS {
                    return Err(corrupt(i.offset, format!("inode {}: more than {MAX_RUNS} extents", i.ino)));
                }
                runs.push(Run { logical, physical: (!unwritten).then_some(start), len });
            } else {
                let leaf = u64::from(le32(e, 4)) | (u64::from(le16(e, 8)) << 32);
                self.check_block(i, leaf, 1)?;
                let child = read(self.dev, KIND, leaf * self.sb.block_size, self.sb.block_size, 1 << 16)?;
                self.extent_node(i, &child, level + 1, Some(depth - 1), runs, nblocks)?;
            }
        }
        Ok(())
    }

    /// The ext2/3 block map: 12 direct blocks, then single, double and
    /// triple indirect blocks of 32-bit block numbers (0: a hole).
    fn block_map(&self, i: &Inode, nblocks: u64) -> Result<Vec<Run>, FilesError> {
        let mut runs: Vec<Run> = Vec::new();
        let per = self.sb.block_size / 4;
        let mut push = |runs: &mut Vec<Run>, logical: u64, b: u32| -> Result<(), FilesError> {
            if b == 0 || logical >= nblocks {
                return Ok(());
            }
            let b = u64::from(b);
            self.check_block(i, b, 1)?;
            match runs.last_mut() {
                Some(r) if r.logical + r.len == logical && r.physical.is_some_and(|p| p + r.len == b) => r.len += 1,
                _ => {
                    if runs.len() >= MAX_RUNS {
                        return Err(corrupt(i.offset, format!("inode {}: more than {MAX_RUNS} runs", i.ino)));
                    }
                    runs.push(Run { logical, physical: Some(b), len: 1 })
                }
            }
            Ok(())
        };
        for k in 0..12u64 {
            push(&mut runs, k, le32(&i.block, (k * 4) as usize))?;
        }
        // (first logical block covered, blocks covered per pointer at this level).
        let mut first = 12u64;
        for (slot, level) in [(12usize, 1u32), (13, 2), (14, 3)] {
            let span = per.pow(level);
            let ptr = le32(&i.block, slot * 4);
            if first < nblocks && ptr != 0 {
                self.indirect(i, u64::from(ptr), level, first, nblocks, &mut runs, &mut push)?;
            }
            first = first.saturating_add(span);
        }
        Ok(runs)
    }

    #[allow(clippy::too_many_arguments)]
    fn indirect(
        &self,
        i: &Inode,
        block: u64,
        level: u32,
        first: u64,
        nblocks: u64,
        runs: &mut Vec<Run>,
        push: &mut PushBlock<'_>,
    ) -> Result<(), FilesError> {
        self.check_block(i, block, 1)?;
        let b = read(self.dev, KIND, block * self.sb.block_size, self.sb.block_size, 1 << 16)?;
        let per = self.sb.block_size / 4;
        let span = per.pow(level - 1);
        for k in 0..per {
            let logical = first + k * span;
            if logical >= nblocks {
                break;
            }
            let p = le32(&b, (k * 4) as usize);
            if level == 1 {
                push(runs, logical, p)?;
            } else if p != 0 {
                self.indirect(i, u64::from(p), level - 1, logical, nblocks, runs, push)?;
            }
        }
        Ok(())
    }
}

/// An inode from its on-disk bytes (`b`: one inode, `inode_size` long).
fn parse_inode(ino: u32, offset: u64, b: &[u8]) -> Inode {
    let extra = if b.len() > 0x82 { usize::from(le16(b, 0x80)) } else { 0 };
    // An `_extra` time field is there when i_extra_isize covers it.
    let has = |off: usize| (off + 4 <= 0x80 + extra && off + 4 <= b.len()).then(|| le32(b, off));
    let (mtime, mtime_nsec) = time(le32(b, 0x10), has(0x88));
    let (atime, _) = time(le32(b, 0x08), has(0x8C));
    let mut block = [0u8; 60];
    block.copy_from_slice(&b[0x28..0x28 + 60]);
    Inode {
        ino,
        mode: le16(b, 0),
        size: u64::from(le32(b, 0x04)) | (u64::from(le32(b, 0x6C)) << 32),
        atime,
        mtime,
        mtime_nsec,
        flags: le32(b, 0x20),
        block,
        offset,
    }
}
