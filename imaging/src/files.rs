//! Read-only access to the files of a partition, without mounting it: list a
//! directory, read a file. Used by `rescue ls` and `rescue extract` over a
//! [`RegionView`](crate::image::view::RegionView) of an image, but any
//! [`ReadAt`] works (a partition of a disk, a file in a test).
//!
//! Supported: ext2/3/4 (extent trees and the old indirect block map; htree
//! directories are read linearly, as their blocks stay valid linear
//! directories), FAT12/16/32 (long file names and 8.3 names) and NTFS
//! (B-tree indexes, fragmented and sparse files, attribute lists, symbolic
//! links and junctions).
//!
//! Deliberately unsupported (an [`FilesError::Unsupported`] error, never
//! wrong data): exFAT, ext4 inline data and encrypted (fscrypt) files,
//! NTFS-compressed, EFS-encrypted and WOF-compressed files, alternate data
//! streams, extended attributes and ACLs. Every on-disk number is bounds-checked:
//! a damaged filesystem gives an error, never a panic or an endless loop.

pub mod ext;
pub mod fat;
pub mod ntfs;

use std::io;

use crate::fs::FsError;
use crate::image::ImageError;
use crate::read_at::ReadAt;

/// Longest path of directories walked (guards against directory cycles).
pub const MAX_DEPTH: usize = 256;

/// What a directory entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    File,
    Dir,
    Symlink,
    /// Device nodes, FIFOs, sockets.
    Other,
}

/// One entry of a directory.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Entry {
    pub name: String,
    pub kind: Kind,
    pub size: u64,
    /// Modification time, seconds since 1970 UTC (FAT's local times are
    /// taken as UTC, as Linux does by default).
    pub mtime: i64,
    #[serde(skip_serializing_if = "is_zero")]
    pub mtime_nsec: u32,
    /// Access time (FAT: a date only).
    pub atime: Option<i64>,
    /// Unix permission bits (ext), e.g. 0o644.
    pub mode: Option<u32>,
    /// FAT attributes as letters: r(ead-only) h(idden) s(ystem) a(rchive).
    pub attributes: Option<String>,
    /// Where a symlink points.
    pub target: Option<String>,
    #[serde(skip)]
    pub(crate) node: Node,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Where an entry lives in its filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Node {
    /// An inode number.
    Ext(u32),
    /// First cluster (0 for an empty file; the FAT12/16 root has `root`).
    Fat { cluster: u32, root: bool },
    /// An MFT record number.
    Ntfs(u64),
}

impl Entry {
    /// Identity within its filesystem (inode or first cluster), to notice a
    /// directory met twice on one path (a cycle in a damaged filesystem).
    pub fn id(&self) -> u64 {
        match self.node {
            Node::Ext(i) => u64::from(i),
            Node::Fat { cluster, .. } => u64::from(cluster),
            Node::Ntfs(r) => r,
        }
    }

    /// `ls -l`-style type and permission string: `drwxr-xr-x` for ext,
    /// `d` plus attribute letters for FAT.
    pub fn mode_string(&self) -> String {
        let t = match self.kind {
            Kind::File => '-',
            Kind::Dir => 'd',
            Kind::Symlink => 'l',
            Kind::Other => '?',
        };
        match (self.mode, &self.attributes) {
            (Some(m), _) => {
                let mut s = String::from(t);
                for (i, c) in "rwxrwxrwx".chars().enumerate() {
                    s.push(if m & (1 << (8 - i)) != 0 { c } else { '-' });
                }
                s
            }
            (None, Some(a)) => format!("{t}{a}"),
            (None, None) => t.to_string(),
        }
    }
}

/// Why files could not be listed or read.
#[derive(Debug, thiserror::Error)]
pub enum FilesError {
    /// The image under the partition is damaged or unreadable.
    #[error("the image could not be read")]
    Image(#[source] ImageError),
    #[error("{kind}: reading at byte {offset}")]
    Io {
        kind: &'static str,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("{kind}: {what} (at byte {offset})")]
    Corrupt { kind: &'static str, offset: u64, what: String },
    #[error(transparent)]
    Fs(FsError),
    #[error("{path}: no such file or directory")]
    NotFound { path: String },
    #[error("{path}: not a directory")]
    NotADirectory { path: String },
    #[error("{what} is not supported")]
    Unsupported { what: String },
    /// Writing the file's bytes out failed (not the image's fault).
    #[error("writing the file")]
    Write(#[source] io::Error),
    #[error(transparent)]
    Disk(#[from] crate::blockdev::BlockError),
    #[error("reading the partition table")]
    Table(#[source] crate::part::PartError),
    #[error("{disk} has no partition {n} (it has: {have})")]
    NoPartition { disk: String, n: u32, have: String },
    /// The destination lies on the disk the files come from.
    #[error("{dest} is on {disk}, the disk the files are read from")]
    DestinationOnSource { dest: String, disk: String },
}

impl FilesError {
    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            FilesError::Image(e) => e.hint(),
            FilesError::Io { .. } => "check that the image is readable and complete",
            FilesError::Corrupt { .. } | FilesError::Fs(_) => {
                "the filesystem in the image is damaged: restore the partition and run its checker (e2fsck, fsck.vfat) on the copy"
            }
            FilesError::NotFound { .. } | FilesError::NotADirectory { .. } => "list the parent directory with `rescue ls` to see the names",
            FilesError::Unsupported { .. } => "restore the partition (rescue restore --part N) and mount the copy",
            FilesError::Write(_) => "check that the destination has room and is writable",
            FilesError::Disk(e) => e.hint(),
            FilesError::Table(_) => "the partition table is damaged: give the whole disk without :N if it holds a filesystem directly, or repair the table first",
            FilesError::NoPartition { .. } => "`rescue disks` lists each disk's partitions and their numbers",
            FilesError::DestinationOnSource { .. } => "copy to another disk (a USB stick, a network share): writing to a failing disk can destroy what is being rescued",
        }
    }

    /// An I/O error at `offset`, unwrapping an image error underneath.
    pub(crate) fn io(kind: &'static str, offset: u64, e: io::Error) -> Self {
        match crate::image::view::image_error(e) {
            Ok(ie) => FilesError::Image(ie),
            Err(source) => FilesError::Io { kind, offset, source },
        }
    }

    pub(crate) fn from_fs(kind: &'static str, e: FsError) -> Self {
        match e {
            FsError::Io { offset, source } => FilesError::io(kind, offset, source),
            other => FilesError::Fs(other),
        }
    }

    /// True when the image's content failed verification.
    pub fn image_error(&self) -> Option<&ImageError> {
        match self {
            FilesError::Image(e) => Some(e),
            _ => None,
        }
    }
}

/// Read `len` bytes at `offset` (at most `limit`, so corrupt sizes cannot
/// make us allocate gigabytes).
pub(crate) fn read(dev: &dyn ReadAt, kind: &'static str, offset: u64, len: u64, limit: u64) -> Result<Vec<u8>, FilesError> {
    if len > limit {
        return Err(FilesError::Corrupt { kind, offset, what: format!("a structure of {len} bytes (limit {limit})") });
    }
    let mut b = vec![0u8; len as usize];
    dev.read_exact_at(&mut b, offset).map_err(|e| FilesError::io(kind, offset, e))?;
    Ok(b)
}

/// Where a file's bytes are, found once (when a FUSE client opens the file,
/// say) and then read at any offset with [`FileSystem::read_at`].
#[derive(Debug, Clone)]
pub struct FileMap {
    size: u64,
    kind: MapKind,
}

#[derive(Debug, Clone)]
enum MapKind {
    /// Pieces in file order, covering `[0, size)`.
    Pieces(Vec<Piece>),
    /// Bytes kept in the metadata (NTFS resident data).
    Inline(Vec<u8>),
    /// NTFS-compressed: the units a read touches are decompressed.
    NtfsCompressed(ntfs::Compressed),
}

/// `len` bytes of a file from byte `at`, stored at device byte `dev` (None: zeroes).
#[derive(Debug, Clone, Copy)]
struct Piece {
    at: u64,
    len: u64,
    dev: Option<u64>,
}

/// Builds the pieces of a [`FileMap`]: appended in file order, clipped to
/// the file's size; bytes from `valid` on read as zeroes (NTFS's
/// initialised length).
pub(crate) struct MapBuilder {
    size: u64,
    valid: u64,
    pos: u64,
    pieces: Vec<Piece>,
}

impl MapBuilder {
    pub(crate) fn new(size: u64, valid: u64) -> Self {
        MapBuilder { size, valid: valid.min(size), pos: 0, pieces: Vec::new() }
    }

    /// The next `len` bytes are at device byte `dev` (None: zeroes).
    pub(crate) fn push(&mut self, len: u64, dev: Option<u64>) {
        let len = len.min(self.size - self.pos);
        if len == 0 {
            return;
        }
        let data = if dev.is_some() { self.valid.saturating_sub(self.pos).min(len) } else { 0 };
        if data > 0 {
            self.add(data, dev);
        }
        if len > data {
            self.add(len - data, None);
        }
    }

    fn add(&mut self, len: u64, dev: Option<u64>) {
        match self.pieces.last_mut() {
            Some(p) if p.dev.is_none() && dev.is_none() => p.len += len,
            Some(p) if p.dev.zip(dev).is_some_and(|(a, b)| a + p.len == b) => p.len += len,
            _ => self.pieces.push(Piece { at: self.pos, len, dev }),
        }
        self.pos += len;
    }

    /// The map, padded with zeroes to the file's size.
    pub(crate) fn finish(mut self) -> FileMap {
        let rest = self.size - self.pos;
        if rest > 0 {
            self.add(rest, None);
        }
        FileMap { size: self.size, kind: MapKind::Pieces(self.pieces) }
    }
}

impl FileMap {
    pub(crate) fn inline(v: Vec<u8>) -> Self {
        FileMap { size: v.len() as u64, kind: MapKind::Inline(v) }
    }

    pub(crate) fn ntfs_compressed(size: u64, c: ntfs::Compressed) -> Self {
        FileMap { size, kind: MapKind::NtfsCompressed(c) }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// The device bytes holding the file's data, each piece widened to whole
    /// `unit`s (blocks, clusters: the tail of the last one belongs to the
    /// file too). `None` when the data is not plainly on the device (NTFS
    /// compression); holes and unwritten ranges hold nothing.
    pub(crate) fn device_units(&self, unit: u64) -> Option<Vec<crate::extent::Extent>> {
        match &self.kind {
            MapKind::Inline(_) => Some(Vec::new()),
            MapKind::NtfsCompressed(_) => None,
            MapKind::Pieces(p) => Some(
                p.iter()
                    .filter_map(|p| p.dev.map(|d| (d, d + p.len)))
                    .map(|(s, e)| {
                        let s = s / unit * unit;
                        crate::extent::Extent::new(s, e.div_ceil(unit) * unit - s)
                    })
                    .collect(),
            ),
        }
    }

    /// Write the whole file to `out` (not for NTFS-compressed maps).
    pub(crate) fn copy_plain(&self, dev: &dyn ReadAt, kind: &'static str, out: &mut dyn io::Write) -> Result<u64, FilesError> {
        let pieces = match &self.kind {
            MapKind::Inline(v) => {
                out.write_all(v).map_err(FilesError::Write)?;
                return Ok(self.size);
            }
            MapKind::Pieces(p) => p,
            MapKind::NtfsCompressed(_) => return Err(FilesError::Corrupt { kind, offset: 0, what: "a compressed map copied as plain".into() }),
        };
        let mut buf = vec![0u8; COPY_CHUNK.min(self.size) as usize];
        let mut pos = 0u64;
        while pos < self.size {
            let n = (self.size - pos).min(COPY_CHUNK) as usize;
            FileMap::read_pieces(pieces, dev, kind, pos, &mut buf[..n])?;
            out.write_all(&buf[..n]).map_err(FilesError::Write)?;
            pos += n as u64;
        }
        Ok(self.size)
    }

    /// Read pieces into `buf` from file byte `offset` (`buf` within the file).
    fn read_pieces(pieces: &[Piece], dev: &dyn ReadAt, kind: &'static str, offset: u64, buf: &mut [u8]) -> Result<(), FilesError> {
        let mut i = pieces.partition_point(|p| p.at + p.len <= offset);
        let mut done = 0usize;
        while done < buf.len() {
            let p = pieces.get(i).ok_or_else(|| FilesError::Corrupt { kind, offset, what: "the file map ends early".into() })?;
            let pos = offset + done as u64;
            let skip = pos - p.at;
            let n = ((p.len - skip) as usize).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            match p.dev {
                Some(d) => dev.read_exact_at(dst, d + skip).map_err(|e| FilesError::io(kind, d + skip, e))?,
                None => dst.fill(0),
            }
            done += n;
            i += 1;
        }
        Ok(())
    }
}

/// Largest buffer one sequential copy reads at a time.
const COPY_CHUNK: u64 = 1 << 20;

/// An open filesystem.
pub enum FileSystem<'a> {
    Ext(ext::ExtFs<'a>),
    Fat(fat::FatFs<'a>),
    Ntfs(ntfs::NtfsFs<'a>),
}

impl<'a> FileSystem<'a> {
    /// Recognise the filesystem on `dev` (`len` bytes) and open it.
    pub fn open(dev: &'a dyn ReadAt, len: u64) -> Result<Self, FilesError> {
        use crate::fs::FsKind;
        let info = crate::fs::probe(dev, len).map_err(|e| FilesError::from_fs("fs", e))?;
        let mut head = vec![0u8; 4096.min(len) as usize];
        dev.read_exact_at(&mut head, 0).map_err(|e| FilesError::io("fs", 0, e))?;
        let opened = match info.as_ref().map(|i| &i.kind) {
            Some(FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4) => ext::ExtFs::open(dev, &head)?.map(FileSystem::Ext),
            Some(FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32) => fat::FatFs::open(dev, len, &head)?.map(FileSystem::Fat),
            Some(FsKind::Ntfs) => ntfs::NtfsFs::open(dev, &head)?.map(FileSystem::Ntfs),
            Some(other) => return Err(FilesError::Unsupported { what: format!("reading files of {}", other.name()) }),
            None => None,
        };
        opened.ok_or_else(|| FilesError::Unsupported { what: "reading files of this partition (no ext2/3/4, FAT or NTFS filesystem found)".into() })
    }

    /// "ext4", "FAT32", ...
    pub fn name(&self) -> String {
        match self {
            FileSystem::Ext(f) => f.name(),
            FileSystem::Fat(f) => f.name().into(),
            FileSystem::Ntfs(f) => f.name().into(),
        }
    }

    pub fn root(&self) -> Entry {
        match self {
            FileSystem::Ext(f) => f.root(),
            FileSystem::Fat(f) => f.root(),
            FileSystem::Ntfs(f) => f.root(),
        }
    }

    /// The entries of a directory, without `.` and `..`, in on-disk order.
    pub fn list(&self, dir: &Entry) -> Result<Vec<Entry>, FilesError> {
        if dir.kind != Kind::Dir {
            return Err(FilesError::NotADirectory { path: dir.name.clone() });
        }
        match self {
            FileSystem::Ext(f) => f.list(dir),
            FileSystem::Fat(f) => f.list(dir),
            FileSystem::Ntfs(f) => f.list(dir),
        }
    }

    /// Write a file's bytes to `out`; returns how many.
    pub fn read(&self, file: &Entry, out: &mut dyn io::Write) -> Result<u64, FilesError> {
        let map = self.map(file)?;
        self.copy_map(&map, out)
    }

    /// Where the bytes of `file` are, for [`FileSystem::read_at`].
    /// The NTFS security descriptor of a file or folder (self-relative), for
    /// copies onto NTFS that keep permissions; None on other filesystems.
    pub fn security(&self, e: &Entry) -> Result<Option<Vec<u8>>, FilesError> {
        match (self, &e.node) {
            (FileSystem::Ntfs(f), Node::Ntfs(no)) => f.security(*no),
            _ => Ok(None),
        }
    }

    pub fn map(&self, file: &Entry) -> Result<FileMap, FilesError> {
        if file.kind != Kind::File {
            return Err(FilesError::Unsupported { what: format!("reading {} (not a regular file)", file.name) });
        }
        match self {
            FileSystem::Ext(f) => f.map(file),
            FileSystem::Fat(f) => f.map(file),
            FileSystem::Ntfs(f) => f.map(file),
        }
    }

    /// Read up to `buf.len()` bytes of a mapped file at `offset`; returns
    /// how many (0 at the end of the file).
    pub fn read_at(&self, map: &FileMap, offset: u64, buf: &mut [u8]) -> Result<usize, FilesError> {
        if offset >= map.size {
            return Ok(0);
        }
        let n = ((map.size - offset).min(buf.len() as u64)) as usize;
        let buf = &mut buf[..n];
        let (dev, kind) = match self {
            FileSystem::Ext(f) => (f.dev(), "ext"),
            FileSystem::Fat(f) => (f.dev(), "fat"),
            FileSystem::Ntfs(f) => (f.dev(), "ntfs"),
        };
        match &map.kind {
            MapKind::Inline(v) => buf.copy_from_slice(&v[offset as usize..offset as usize + n]),
            MapKind::Pieces(p) => FileMap::read_pieces(p, dev, kind, offset, buf)?,
            MapKind::NtfsCompressed(c) => match self {
                FileSystem::Ntfs(f) => f.read_compressed(c, offset, buf)?,
                _ => return Err(FilesError::Corrupt { kind, offset, what: "an NTFS map used with another filesystem".into() }),
            },
        }
        Ok(n)
    }

    /// Write a mapped file's bytes to `out`, in order.
    pub(crate) fn copy_map(&self, map: &FileMap, out: &mut dyn io::Write) -> Result<u64, FilesError> {
        let mut buf = vec![0u8; COPY_CHUNK.min(map.size) as usize];
        let mut pos = 0u64;
        while pos < map.size {
            let n = self.read_at(map, pos, &mut buf)?;
            out.write_all(&buf[..n]).map_err(FilesError::Write)?;
            pos += n as u64;
        }
        Ok(pos)
    }

    /// Find `path` ("/", "/EFI/BOOT", "dir/file"), name by name from the root
    /// (FAT and NTFS names match without regard to case when no name
    /// matches exactly, as on Windows).
    pub fn lookup(&self, path: &str) -> Result<Entry, FilesError> {
        let mut cur = self.root();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty() && *p != ".").collect();
        if parts.len() > MAX_DEPTH {
            return Err(FilesError::NotFound { path: path.into() });
        }
        let fat = matches!(self, FileSystem::Fat(_) | FileSystem::Ntfs(_));
        for (i, p) in parts.iter().enumerate() {
            let so_far = format!("/{}", parts[..i].join("/"));
            if cur.kind != Kind::Dir {
                return Err(FilesError::NotADirectory { path: so_far });
            }
            let entries = self.list(&cur)?;
            let found = entries.iter().find(|e| e.name == *p).or_else(|| if fat { entries.iter().find(|e| e.name.eq_ignore_ascii_case(p)) } else { None });
            cur = match found {
                Some(e) => e.clone(),
                None => return Err(FilesError::NotFound { path: format!("/{}", parts[..=i].join("/")) }),
            };
        }
        Ok(cur)
    }
}

/// A partition of a disk (a block device or a raw disk image file), or a
/// whole disk without a partition table, opened read-only for its files.
/// Nothing here ever writes to the disk.
pub struct DiskPartition {
    pub disk: crate::blockdev::DiskInfo,
    /// None: the whole disk holds the filesystem.
    pub part: Option<crate::part::Partition>,
    /// Why the partition is in use (mounted, swap, held by LVM/md).
    pub busy: Vec<String>,
    window: crate::read_at::Window<crate::blockdev::DiskFile>,
}

impl DiskPartition {
    /// Open partition `n` of `disk` (None: the whole disk).
    pub fn open(disk: &std::path::Path, n: Option<u32>) -> Result<Self, FilesError> {
        let src = crate::blockdev::SourceDisk::open(disk, None)?;
        let info = src.info;
        let busy = crate::blockdev::busy_reasons(&info);
        let part = match n {
            None => None,
            Some(n) => {
                let table = crate::part::read(&src.file, info.size, info.logical_sector_size).map_err(FilesError::Table)?;
                let parts = table.map(|t| t.partitions).unwrap_or_default();
                let have = if parts.is_empty() { "none".to_string() } else { parts.iter().map(|p| p.number.to_string()).collect::<Vec<_>>().join(", ") };
                Some(parts.into_iter().find(|p| p.number == n).ok_or_else(|| FilesError::NoPartition { disk: disk.display().to_string(), n, have })?)
            }
        };
        let (start, len) = part.as_ref().map_or((0, info.size), |p| (p.start, p.len));
        // Only this partition's own use matters (another mounted partition
        // of the same disk does not make this one inconsistent); when its
        // device is unknown (an image file), every use is reported.
        let dev = n.and_then(|n| crate::blockdev::partition_devices(&info).into_iter().find(|d| d.0 == n)).map(|d| format!("{} ", d.1.display()));
        let busy = match dev {
            Some(d) => busy.into_iter().filter(|r| r.starts_with(&d)).collect(),
            None => busy,
        };
        Ok(DiskPartition { disk: info, part, busy, window: crate::read_at::Window::new(src.file, start, len) })
    }

    pub fn len(&self) -> u64 {
        self.window.len()
    }

    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// The partition's bytes.
    pub fn reader(&self) -> &dyn ReadAt {
        &self.window
    }

    /// Refuse a destination folder on this disk: files rescued from a
    /// failing disk must never be written back onto it. `dest` need not
    /// exist yet (its nearest existing parent is checked).
    pub fn check_destination(&self, dest: &std::path::Path) -> Result<(), FilesError> {
        let mut p = dest.to_path_buf();
        let meta = loop {
            if let Ok(m) = std::fs::metadata(&p) {
                break Some(m);
            }
            if !p.pop() {
                break None;
            }
        };
        let Some(dn) = meta.as_ref().and_then(crate::blockdev::fs_devnum) else { return Ok(()) };
        let mut ours: Vec<String> = self.disk.devnum.iter().cloned().collect();
        ours.extend(crate::blockdev::partition_devices(&self.disk).into_iter().map(|(_, _, d)| d));
        if ours.contains(&dn) {
            return Err(FilesError::DestinationOnSource { dest: dest.display().to_string(), disk: self.disk.path.display().to_string() });
        }
        Ok(())
    }
}

/// Is `name` (one directory entry's name from an image) safe to create in a
/// folder: not empty, not `.` or `..`, no path separators or NUL, so that
/// joining it to a folder never leaves that folder.
pub fn safe_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0']) && !(cfg!(windows) && name.contains(':'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_names() {
        for n in ["", ".", "..", "a/b", "../x", "/etc", "a\\b", "x\0y"] {
            assert!(!safe_name(n), "{n:?}");
        }
        for n in ["a", "...", "..a", "grub.cfg", "ü"] {
            assert!(safe_name(n), "{n:?}");
        }
    }

    const FIXTURES: [&str; 11] = ["ext2-1k.img", "ext3-4k.img", "ext4-4k.img", "ext4-noflex-1k.img", "ext4-metabg.img", "fat12.img", "fat16.img", "fat32.img", "fat16-4k.img", "ntfs.img", "ntfs-4k.img"];

    /// Every file and directory under `dir`: (path, entry, content).
    fn walk(fs: &FileSystem, dir: &Entry, path: &str, out: &mut Vec<(String, Entry, Vec<u8>)>) {
        for e in fs.list(dir).expect("list") {
            let p = format!("{path}/{}", e.name);
            match e.kind {
                Kind::Dir => {
                    out.push((p.clone(), e.clone(), Vec::new()));
                    walk(fs, &e, &p, out);
                }
                Kind::File => {
                    let mut v = Vec::new();
                    assert_eq!(fs.read(&e, &mut v).expect("read"), e.size, "{p}");
                    assert_eq!(v.len() as u64, e.size, "{p}");
                    out.push((p, e, v));
                }
                _ => out.push((p, e, Vec::new())),
            }
        }
    }

    /// The file as the filesystem's own tools read it (None: tool missing).
    fn tool_cat(img: &std::path::Path, fat: bool, path: &str) -> Option<Vec<u8>> {
        let ntfs = img.file_name().is_some_and(|n| n.to_string_lossy().starts_with("ntfs"));
        let out = if ntfs {
            std::process::Command::new("ntfscat").arg(img).arg(path).output()
        } else if fat {
            std::process::Command::new("mtype").env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(img).arg(format!("::{path}")).output()
        } else {
            std::process::Command::new("debugfs").arg("-R").arg(format!("cat \"{path}\"")).arg(img).output()
        };
        out.ok().filter(|o| o.status.success()).map(|o| o.stdout)
    }

    #[test]
    fn fixtures_read_like_their_tools() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in FIXTURES {
            let img = crate::fs::testutil::fixture(name);
            let fs = FileSystem::open(&img, img.len() as u64).unwrap_or_else(|e| panic!("{name}: {e}"));
            let mut all = Vec::new();
            walk(&fs, &fs.root(), "", &mut all);
            let files = all.iter().filter(|(_, e, _)| e.kind == Kind::File).count();
            assert!(files >= 2, "{name}: {files} files");
            let file = dir.path().join(name);
            std::fs::write(&file, &img).expect("write fixture");
            let fat = name.starts_with("fat");
            let mut compared = 0;
            for (p, e, data) in all.iter().filter(|(_, e, _)| e.kind == Kind::File) {
                assert_eq!(fs.lookup(p).expect("lookup").id(), e.id(), "{name}:{p}");
                // Random access through the map agrees with the stream.
                let map = fs.map(e).expect("map");
                assert_eq!(map.size(), e.size, "{name}:{p}");
                for (off, len) in [(0u64, 1usize), (1, 4095), (e.size / 2, 70_000), (e.size.saturating_sub(1), 10), (e.size, 5)] {
                    let mut b = vec![0xAAu8; len];
                    let n = fs.read_at(&map, off, &mut b).expect("read_at");
                    let lo = (off as usize).min(data.len());
                    let hi = (off as usize + len).min(data.len());
                    assert_eq!(&b[..n], &data[lo..hi], "{name}:{p} at {off}+{len}");
                }
                if let Some(want) = tool_cat(&file, fat, p) {
                    assert!(want == *data, "{name}:{p}: content differs from the tool's ({} vs {} bytes)", data.len(), want.len());
                    compared += 1;
                }
            }
            eprintln!("{name}: {} entries, {files} files, {compared} compared with the filesystem's tool", all.len());
        }
    }

    #[test]
    fn damaged_fixtures_never_panic() {
        for name in FIXTURES {
            let mut img = crate::fs::testutil::fixture(name);
            let len = img.len();
            // Damage the first 256 KiB (superblock, FATs, descriptors,
            // inode tables and directories of these small images).
            crate::fs::testutil::fuzz(&mut img, &[(0, len.min(256 << 10))], 300, |bad| {
                if let Ok(fs) = FileSystem::open(&bad, len as u64) {
                    let mut n = 0;
                    let _ = walk_lossy(&fs, &fs.root(), 0, &mut n);
                }
            });
        }
    }

    /// Like `walk`, ignoring errors, bounded in depth and entries.
    fn walk_lossy(fs: &FileSystem, dir: &Entry, depth: usize, n: &mut usize) -> Option<()> {
        if depth > 8 {
            return None;
        }
        for e in fs.list(dir).ok()? {
            *n += 1;
            if *n > 10_000 {
                return None;
            }
            match e.kind {
                Kind::Dir => {
                    let _ = walk_lossy(fs, &e, depth + 1, n);
                }
                Kind::File => {
                    let _ = fs.read(&e, &mut std::io::sink());
                }
                _ => {}
            }
        }
        Some(())
    }

    /// Run a tool; None when it is not installed.
    fn tool(cmd: &mut std::process::Command) -> Option<std::process::Output> {
        cmd.output().ok()
    }

    /// ext2 with 1 KiB blocks made at test time by mkfs.ext2 -d (skipped
    /// without e2fsprogs): double indirect blocks, holes, fast and slow
    /// symlinks, a directory of many blocks.
    #[test]
    fn generated_ext2_block_maps_symlinks_and_big_directories() {
        let dir = tempfile::tempdir().expect("tempdir");
        let src = dir.path().join("tree");
        std::fs::create_dir_all(src.join("many")).expect("dirs");
        let big: Vec<u8> = (0..3u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8).collect();
        std::fs::write(src.join("big.bin"), &big).expect("big");
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::File::create(src.join("sparse.bin")).expect("sparse");
            f.write_all(b"start").expect("write");
            f.seek(SeekFrom::Start(5 << 20)).expect("seek");
            f.write_all(b"end").expect("write");
        }
        for i in 0..300 {
            std::fs::write(src.join("many").join(format!("file-with-a-longer-name-{i:04}.txt")), format!("{i}\n")).expect("small");
        }
        // Symlinks only where they can be made (not in the Windows build's run).
        #[cfg_attr(not(unix), allow(unused_variables))]
        let long_target = "x/".repeat(50) + "target";
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink("big.bin", src.join("short-link")).expect("symlink");
            std::os::unix::fs::symlink(&long_target, src.join("long-link")).expect("symlink");
        }
        for (mkfs, opts) in [("mkfs.ext2", "-b1024"), ("mkfs.ext3", "-b4096"), ("mkfs.ext4", "-b1024")] {
            let img = dir.path().join(format!("{mkfs}.img"));
            let made = tool(std::process::Command::new(mkfs).args(["-q", "-F", opts, "-d"]).arg(&src).arg(&img).arg("16M"));
            if !made.is_some_and(|o| o.status.success()) {
                eprintln!("{mkfs} not available: skipped");
                continue;
            }
            if mkfs == "mkfs.ext4" {
                // Index the directories (htree): still readable linearly.
                let _ = tool(std::process::Command::new("e2fsck").args(["-fyD"]).arg(&img));
                let htree = tool(std::process::Command::new("debugfs").args(["-R", "htree /many"]).arg(&img));
                assert!(htree.is_none_or(|o| String::from_utf8_lossy(&o.stdout).contains("Root node")), "{mkfs}: /many is not an htree");
            }
            let bytes = std::fs::read(&img).expect("image");
            let fs = FileSystem::open(&bytes, bytes.len() as u64).expect("open");
            let mut v = Vec::new();
            fs.read(&fs.lookup("/big.bin").expect("big"), &mut v).expect("read big");
            assert!(v == big, "{mkfs}: big.bin differs");
            let mut v = Vec::new();
            fs.read(&fs.lookup("/sparse.bin").expect("sparse"), &mut v).expect("read sparse");
            assert_eq!(v.len(), (5 << 20) + 3, "{mkfs}");
            assert!(v.starts_with(b"start") && v.ends_with(b"end") && v[5..5 << 20].iter().all(|&b| b == 0), "{mkfs}: sparse.bin differs");
            let many = fs.list(&fs.lookup("/many").expect("many")).expect("list many");
            assert_eq!(many.len(), 300, "{mkfs}");
            let e = many.iter().find(|e| e.name == "file-with-a-longer-name-0299.txt").expect("last file");
            let mut v = Vec::new();
            fs.read(e, &mut v).expect("read small");
            assert_eq!(v, b"299\n");
            #[cfg(unix)]
            {
                assert_eq!(fs.lookup("/short-link").expect("link").target.as_deref(), Some("big.bin"), "{mkfs}");
                let l = fs.lookup("/long-link").expect("link");
                assert_eq!((l.kind, l.target.as_deref()), (Kind::Symlink, Some(long_target.as_str())), "{mkfs}");
            }
        }
    }

    #[test]
    fn garbage_is_not_a_filesystem() {
        let dev = vec![0x5Au8; 1 << 20];
        assert!(matches!(FileSystem::open(&dev, dev.len() as u64), Err(FilesError::Unsupported { .. })));
    }
}
