//! Files of NTFS, read-only: directory indexes (`$INDEX_ROOT` plus the
//! in-use `INDX` blocks of `$INDEX_ALLOCATION`), `$STANDARD_INFORMATION`
//! times and attributes, resident and non-resident (fragmented, sparse,
//! partly initialised) unnamed `$DATA`, attribute lists, and symbolic links
//! and junctions (reparse points).
//!
//! Structures as the Linux-NTFS project documents them (the same ones
//! [`crate::fs::ntfs`] reads for the used-cluster map, whose record and
//! runlist code this reuses). Refused with [`FilesError::Unsupported`], never
//! read wrongly: NTFS-compressed and EFS-encrypted files, and files behind
//! other reparse points (WOF "CompactOS" compression, deduplication, cloud
//! placeholders), whose `$DATA` is not the file's content. The system
//! metafiles (`$MFT`, `$Bitmap`, ...) are not listed.

use std::collections::HashMap;
use std::io;

use super::{Entry, FileMap, FilesError, Kind, MapBuilder, Node};
use crate::fs::ntfs::{self as vol, Boot, Run, Stream};
use crate::fs::{le16, le32, le64, FsError};
use crate::read_at::ReadAt;

const KIND: &str = "ntfs";
const AT_STANDARD_INFORMATION: u32 = 0x10;
const AT_DATA: u32 = 0x80;
const AT_INDEX_ROOT: u32 = 0x90;
const AT_INDEX_ALLOCATION: u32 = 0xA0;
const AT_BITMAP: u32 = 0xB0;
const AT_REPARSE_POINT: u32 = 0xC0;
const I30: &str = "$I30";
const ROOT_RECORD: u64 = 5;
/// Records below this are reserved for metafiles (`$MFT` .. `$Extend` and spares).
const FIRST_USER_RECORD: u64 = 24;
const REF_MASK: u64 = 0x0000_FFFF_FFFF_FFFF;
const FILE_ATTR_REPARSE: u32 = 0x0400;
const REPARSE_SYMLINK: u32 = 0xA000_000C;
const REPARSE_MOUNT_POINT: u32 = 0xA000_0003;
/// Entries of one directory we accept (guards memory on a corrupt index).
const MAX_ENTRIES: usize = 1 << 21;
/// Largest `$INDEX_ALLOCATION` bitmap we read.
const MAX_BITMAP: u64 = 16 << 20;
const COPY: u64 = 1 << 20;
/// 100 ns intervals between 1601-01-01 and 1970-01-01.
const EPOCH_DIFF: i64 = 116_444_736_000_000_000;

/// An open NTFS filesystem.
pub struct NtfsFs<'a> {
    dev: &'a dyn ReadAt,
    vol: Boot,
    mft: Vec<Run>,
    /// The shared security descriptors of `$Secure:$SDS` by id, read once
    /// when the first one is asked for.
    sds: std::sync::OnceLock<Result<HashMap<u32, Vec<u8>>, String>>,
}

const AT_SECURITY_DESCRIPTOR: u32 = 0x50;
const SECURE_RECORD: u64 = 9;
/// Largest `$SDS` stream read (Windows systems hold a few MiB).
const MAX_SDS: u64 = 64 << 20;
/// `$SDS` comes in 256 KiB blocks, each followed by its mirror copy.
const SDS_BLOCK: u64 = 256 << 10;

/// The descriptors of a `$SDS` stream by security id: each entry is a
/// 20-byte header (hash, id, offset, length with the header) and the
/// self-relative descriptor, 16-byte aligned; the mirror blocks are skipped.
fn parse_sds(b: &[u8]) -> HashMap<u32, Vec<u8>> {
    let mut out = HashMap::new();
    let mut pos = 0u64;
    while pos + 20 <= b.len() as u64 {
        if (pos / SDS_BLOCK) % 2 == 1 {
            pos = (pos / SDS_BLOCK + 1) * SDS_BLOCK;
            continue;
        }
        let p = pos as usize;
        let (id, off, len) = (le32(b, p + 4), le64(b, p + 8), le32(b, p + 16) as u64);
        if len < 20 + 20 || off != pos || pos + len > b.len() as u64 || (pos % SDS_BLOCK) + len > SDS_BLOCK {
            // Free space up to the next block.
            pos = (pos / SDS_BLOCK + 1) * SDS_BLOCK;
            continue;
        }
        out.entry(id).or_insert_with(|| b[p + 20..(pos + len) as usize].to_vec());
        pos += len.div_ceil(16) * 16;
    }
    out
}

fn corrupt(offset: u64, what: impl Into<String>) -> FilesError {
    FilesError::Corrupt { kind: KIND, offset, what: what.into() }
}

fn fs_err(e: FsError) -> FilesError {
    FilesError::from_fs(KIND, e)
}

/// Seconds and nanoseconds since 1970 of an NTFS time (100 ns since 1601).
fn ntfs_time(t: u64) -> (i64, u32) {
    let t = i64::try_from(t).unwrap_or(i64::MAX) - EPOCH_DIFF;
    (t.div_euclid(10_000_000), (t.rem_euclid(10_000_000) * 100) as u32)
}

fn utf16(b: &[u8]) -> String {
    let units: Vec<u16> = b.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).collect();
    String::from_utf16_lossy(&units)
}

/// `rhsa` with `-` for each attribute not set, as for FAT.
fn attr_letters(a: u32) -> String {
    [(0x01, 'r'), (0x02, 'h'), (0x04, 's'), (0x20, 'a')].iter().map(|&(bit, c)| if a & bit != 0 { c } else { '-' }).collect()
}

/// One `$FILE_NAME` found in a directory index.
struct IndexName {
    record: u64,
    seq: u16,
    name: String,
    dir: bool,
    size: u64,
    mtime: u64,
    atime: u64,
    attributes: u32,
}

/// Parse the index entries in `b[start..end]` (one node), appending names.
fn index_entries(b: &[u8], start: usize, end: usize, at: u64, out: &mut Vec<IndexName>) -> Result<(), FilesError> {
    let end = end.min(b.len());
    let mut p = start;
    loop {
        if p + 0x10 > end {
            return Err(corrupt(at + p as u64, "index entries run past their node"));
        }
        let len = usize::from(le16(b, p + 8));
        let key_len = usize::from(le16(b, p + 0x0A));
        let flags = le16(b, p + 0x0C);
        if flags & 0x02 != 0 {
            return Ok(());
        }
        if len < 0x10 || p + len > end || 0x10 + key_len > len || key_len < 0x42 {
            return Err(corrupt(at + p as u64, format!("index entry of {len} bytes with a {key_len}-byte key")));
        }
        let key = &b[p + 0x10..p + 0x10 + key_len];
        let name_len = usize::from(key[0x40]);
        let namespace = key[0x41];
        if 0x42 + 2 * name_len > key.len() {
            return Err(corrupt(at + p as u64, "file name longer than its index key"));
        }
        // DOS 8.3 aliases (namespace 2) duplicate a Win32 name.
        if namespace != 2 {
            if out.len() >= MAX_ENTRIES {
                return Err(corrupt(at, format!("more than {MAX_ENTRIES} entries in one directory")));
            }
            let r = le64(b, p);
            let fa = le32(key, 0x38);
            out.push(IndexName {
                record: r & REF_MASK,
                seq: (r >> 48) as u16,
                name: utf16(&key[0x42..0x42 + 2 * name_len]),
                dir: fa & 0x1000_0000 != 0,
                size: le64(key, 0x30),
                mtime: le64(key, 0x10),
                atime: le64(key, 0x20),
                attributes: fa,
            });
        }
        p += len;
    }
}

/// What a file record says about itself.
struct Record {
    dir: bool,
    size: u64,
    mtime: u64,
    atime: u64,
    attributes: u32,
    /// The reparse tag and, for links and junctions, the target.
    reparse: Option<(u32, Option<String>)>,
    /// The target of an Interix symbolic link (what ntfs-3g creates by
    /// default: a system file holding `IntxLNK\x01` and a UTF-16 path).
    interix: Option<String>,
}

/// The target of a symbolic link or junction (its "print name", else its
/// substitute name).
fn reparse_target(tag: u32, v: &[u8]) -> Option<String> {
    let buf = match tag {
        REPARSE_SYMLINK => 0x14,
        REPARSE_MOUNT_POINT => 0x10,
        _ => return None,
    };
    let field = |o: usize, l: usize| -> Option<String> {
        let (o, l) = (usize::from(le16(v, 8 + o)), usize::from(le16(v, 8 + l)));
        let s = v.get(buf + o..buf + o + l).map(utf16)?;
        (!s.is_empty()).then_some(s)
    };
    field(4, 6).or_else(|| field(0, 2)).map(|s| s.strip_prefix(r"\??\").map(str::to_string).unwrap_or(s))
}

impl<'a> NtfsFs<'a> {
    /// `Ok(None)` when `head` holds no NTFS boot sector.
    pub fn open(dev: &'a dyn ReadAt, head: &[u8]) -> Result<Option<Self>, FilesError> {
        let Some(vol) = Boot::parse(head).map_err(fs_err)? else { return Ok(None) };
        let mft = vol::mft_runs(dev, &vol).map_err(fs_err)?;
        Ok(Some(NtfsFs { dev, vol, mft, sds: std::sync::OnceLock::new() }))
    }

    pub fn name(&self) -> &'static str {
        "ntfs"
    }

    /// The root folder, with its times (bare when its record cannot be read).
    pub fn root(&self) -> Entry {
        let mut e = Entry { name: "/".into(), kind: Kind::Dir, size: 0, mtime: 0, mtime_nsec: 0, atime: None, mode: None, attributes: None, target: None, node: Node::Ntfs(ROOT_RECORD) };
        if let Ok(r) = self.record(ROOT_RECORD).and_then(|rec| self.describe(ROOT_RECORD, &rec)) {
            (e.mtime, e.mtime_nsec) = ntfs_time(r.mtime);
            e.atime = Some(ntfs_time(r.atime).0);
            e.attributes = Some(attr_letters(r.attributes));
        }
        e
    }

    fn record(&self, no: u64) -> Result<Vec<u8>, FilesError> {
        vol::read_record(self.dev, &self.vol, &self.mft, no).map_err(fs_err)
    }

    fn stream(&self, rec: &[u8], no: u64, ty: u32, name: &str) -> Result<Option<Stream>, FilesError> {
        vol::stream(self.dev, &self.vol, rec, no, Some(&self.mft), ty, name).map_err(fs_err)
    }

    /// The bytes of a stream, at most `limit` of them.
    fn small_stream(&self, s: Stream, limit: u64, at: u64) -> Result<Vec<u8>, FilesError> {
        if let Stream::NonResident { size, .. } = &s {
            if *size > limit {
                return Err(corrupt(at, format!("a {size}-byte structure (limit {limit})")));
            }
        }
        let mut v = Vec::new();
        self.copy_stream(&s, "", &mut v)?;
        Ok(v)
    }

    /// Write a stream's bytes to `out`: resident, plain (sparse runs and
    /// the uninitialised tail as zeroes) or LZNT1-compressed.
    fn copy_stream(&self, s: &Stream, name: &str, out: &mut dyn io::Write) -> Result<u64, FilesError> {
        let (runs, size, init, flags, cu) = match s {
            Stream::Resident(v) => {
                out.write_all(v).map_err(FilesError::Write)?;
                return Ok(v.len() as u64);
            }
            Stream::NonResident { runs, size, init, flags, compression_unit } => (runs, *size, *init, *flags, *compression_unit),
        };
        if flags & 0x4000 != 0 {
            return Err(FilesError::Unsupported { what: format!("reading {name}: EFS-encrypted files") });
        }
        if flags & 0x0001 != 0 {
            return self.copy_compressed(runs, size, init, cu, out);
        }
        let mut buf = vec![0u8; COPY.min(size) as usize];
        let mut pos = 0u64;
        while pos < size {
            let n = (size - pos).min(COPY) as usize;
            let chunk = &mut buf[..n];
            let valid = init.saturating_sub(pos).min(n as u64) as usize;
            vol::read_stream(self.dev, &self.vol, runs, pos, &mut chunk[..valid]).map_err(fs_err)?;
            chunk[valid..].fill(0);
            out.write_all(chunk).map_err(FilesError::Write)?;
            pos += n as u64;
        }
        Ok(size)
    }

    /// A compressed stream, one compression unit at a time.
    fn copy_compressed(&self, runs: &[Run], size: u64, init: u64, cu: u8, out: &mut dyn io::Write) -> Result<u64, FilesError> {
        let c = self.compressed(runs.to_vec(), size, init, cu)?;
        let mut buf = vec![0u8; (self.vol.cluster_size << cu) as usize];
        let mut pos = 0u64;
        while pos < size {
            let n = (size - pos).min(buf.len() as u64) as usize;
            self.read_compressed(&c, pos, &mut buf[..n])?;
            out.write_all(&buf[..n]).map_err(FilesError::Write)?;
            pos += n as u64;
        }
        Ok(size)
    }

    fn compressed(&self, runs: Vec<Run>, size: u64, init: u64, cu: u8) -> Result<Compressed, FilesError> {
        let cs = self.vol.cluster_size;
        if cu == 0 || cu > 8 || (cs << cu) > (1 << 20) {
            return Err(FilesError::Unsupported { what: format!("NTFS compression with 2^{cu}-cluster units of {cs}-byte clusters") });
        }
        Ok(Compressed { runs, init: init.min(size), cu })
    }

    /// Bytes `[offset, offset + buf.len())` of a compressed stream (within
    /// its size): each compression unit touched is read whole. A unit stored
    /// in all its clusters is plain, one with no clusters is zeroes, and one
    /// in fewer clusters (the rest sparse) holds LZNT1 data.
    pub(crate) fn read_compressed(&self, c: &Compressed, offset: u64, buf: &mut [u8]) -> Result<(), FilesError> {
        let cs = self.vol.cluster_size;
        let unit_clusters = 1u64 << c.cu;
        let unit = (cs << c.cu) as usize;
        let mut raw = vec![0u8; unit];
        let mut plain = Vec::with_capacity(unit);
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let u = pos / unit as u64;
            let first = u * unit_clusters;
            // Clusters of this unit that are stored, and whether they come first.
            let mut stored = 0u64;
            let mut after_hole = false;
            let from = c.runs.partition_point(|r| r.vcn + r.len <= first);
            for r in c.runs[from..].iter().take_while(|r| r.vcn < first + unit_clusters) {
                let n = (r.vcn + r.len).min(first + unit_clusters) - r.vcn.max(first);
                match r.lcn {
                    Some(_) if after_hole => return Err(corrupt(first * cs, "a compression unit with data after its sparse part")),
                    Some(_) => stored += n,
                    None => after_hole = true,
                }
            }
            plain.clear();
            if stored == unit_clusters {
                vol::read_stream(self.dev, &self.vol, &c.runs, first * cs, &mut raw).map_err(fs_err)?;
                plain.extend_from_slice(&raw);
            } else if stored > 0 {
                let data = &mut raw[..(stored * cs) as usize];
                vol::read_stream(self.dev, &self.vol, &c.runs, first * cs, data).map_err(fs_err)?;
                lznt1(data, &mut plain, unit).map_err(|what| corrupt(first * cs, format!("compression unit {u}: {what}")))?;
            }
            plain.resize(unit, 0);
            let in_unit = (pos - u * unit as u64) as usize;
            let n = (unit - in_unit).min(buf.len() - done);
            let dst = &mut buf[done..done + n];
            dst.copy_from_slice(&plain[in_unit..in_unit + n]);
            // Past the initialised length: zeroes, whatever the unit holds.
            let valid = c.init.saturating_sub(pos).min(n as u64) as usize;
            dst[valid..].fill(0);
            done += n;
        }
        Ok(())
    }

    fn describe(&self, no: u64, rec: &[u8]) -> Result<Record, FilesError> {
        let at = no * self.vol.record_size;
        let dir = le16(rec, 0x16) & 0x0002 != 0;
        let si = match self.stream(rec, no, AT_STANDARD_INFORMATION, "")? {
            Some(Stream::Resident(v)) if v.len() >= 0x24 => v,
            _ => return Err(corrupt(at, format!("record {no} has no $STANDARD_INFORMATION"))),
        };
        let attributes = le32(&si, 0x20);
        let size = if dir {
            0
        } else {
            match self.stream(rec, no, AT_DATA, "")? {
                Some(Stream::Resident(v)) => v.len() as u64,
                Some(Stream::NonResident { size, .. }) => size,
                None => 0,
            }
        };
        let reparse = if attributes & FILE_ATTR_REPARSE != 0 {
            match self.stream(rec, no, AT_REPARSE_POINT, "")? {
                Some(s) => {
                    let v = self.small_stream(s, 64 << 10, at)?;
                    let tag = le32(&v, 0);
                    Some((tag, reparse_target(tag, &v)))
                }
                None => None,
            }
        } else {
            None
        };
        let mut interix = None;
        if !dir && attributes & 0x04 != 0 && (10..=8192).contains(&size) {
            if let Some(s) = self.stream(rec, no, AT_DATA, "")? {
                let v = self.small_stream(s, 8192, at)?;
                if let Some(t) = v.strip_prefix(b"IntxLNK\x01") {
                    interix = Some(utf16(t));
                }
            }
        }
        Ok(Record { dir, size, mtime: le64(&si, 0x08), atime: le64(&si, 0x18), attributes, reparse, interix })
    }

    /// The security descriptor of record `no` (self-relative, the form
    /// Windows and ntfs-3g's `system.ntfs_acl` take), or None when it has
    /// none: its own `$SECURITY_DESCRIPTOR` (NTFS 1.x), else the shared one
    /// its `$STANDARD_INFORMATION` names in `$Secure:$SDS`.
    pub fn security(&self, no: u64) -> Result<Option<Vec<u8>>, FilesError> {
        let at = no * self.vol.record_size;
        let rec = self.record(no)?;
        if let Some(s) = self.stream(&rec, no, AT_SECURITY_DESCRIPTOR, "")? {
            return Ok(Some(self.small_stream(s, 1 << 20, at)?));
        }
        let si = match self.stream(&rec, no, AT_STANDARD_INFORMATION, "")? {
            Some(Stream::Resident(v)) if v.len() >= 0x38 => v,
            _ => return Ok(None),
        };
        let id = le32(&si, 0x34);
        if id == 0 {
            return Ok(None);
        }
        let table = self.sds.get_or_init(|| {
            let load = || -> Result<HashMap<u32, Vec<u8>>, FilesError> {
                let rec = self.record(SECURE_RECORD)?;
                let Some(s) = self.stream(&rec, SECURE_RECORD, AT_DATA, "$SDS")? else { return Ok(HashMap::new()) };
                Ok(parse_sds(&self.small_stream(s, MAX_SDS, SECURE_RECORD * self.vol.record_size)?))
            };
            load().map_err(|e| e.to_string())
        });
        match table {
            Ok(t) => Ok(t.get(&id).cloned()),
            Err(e) => Err(corrupt(at, format!("reading $Secure: {e}"))),
        }
    }

    /// Every name in directory record `no`'s `$I30` index.
    fn index(&self, no: u64) -> Result<Vec<IndexName>, FilesError> {
        let at = no * self.vol.record_size;
        let rec = self.record(no)?;
        if le16(&rec, 0x16) & 0x0002 == 0 {
            return Err(FilesError::NotADirectory { path: format!("(record {no})") });
        }
        let root = match self.stream(&rec, no, AT_INDEX_ROOT, I30)? {
            Some(Stream::Resident(v)) if v.len() >= 0x20 => v,
            _ => return Err(corrupt(at, format!("directory record {no} has no $INDEX_ROOT"))),
        };
        let mut out = Vec::new();
        let block = u64::from(le32(&root, 0x08));
        index_entries(&root, 0x10 + le32(&root, 0x10) as usize, 0x10 + le32(&root, 0x14) as usize, at, &mut out)?;
        if root[0x1C] & 0x01 == 0 {
            return Ok(out);
        }
        if !block.is_power_of_two() || !(512..=65536).contains(&block) {
            return Err(corrupt(at, format!("index blocks of {block} bytes")));
        }
        let Some(Stream::NonResident { runs, size, .. }) = self.stream(&rec, no, AT_INDEX_ALLOCATION, I30)? else {
            return Err(corrupt(at, format!("directory record {no} has a large index without $INDEX_ALLOCATION")));
        };
        let bitmap = match self.stream(&rec, no, AT_BITMAP, I30)? {
            Some(s) => Some(self.small_stream(s, MAX_BITMAP, at)?),
            None => None,
        };
        let mut buf = vec![0u8; block as usize];
        for i in 0..size / block {
            if let Some(bm) = &bitmap {
                if bm.get((i / 8) as usize).is_none_or(|b| b & (1 << (i % 8)) == 0) {
                    continue;
                }
            }
            let off = i * block;
            vol::read_stream(self.dev, &self.vol, &runs, off, &mut buf).map_err(fs_err)?;
            vol::fixups(&mut buf, off, b"INDX", "index block").map_err(fs_err)?;
            index_entries(&buf, 0x18 + le32(&buf, 0x18) as usize, 0x18 + le32(&buf, 0x1C) as usize, off, &mut out)?;
        }
        Ok(out)
    }

    pub fn list(&self, dir: &Entry) -> Result<Vec<Entry>, FilesError> {
        let Node::Ntfs(no) = dir.node else { return Err(corrupt(0, "not an NTFS entry")) };
        let mut out = Vec::new();
        for n in self.index(no)? {
            if n.record == no || (no == ROOT_RECORD && n.record < FIRST_USER_RECORD && n.name.starts_with('$')) {
                continue;
            }
            // The record tells the truth (Windows does not keep the sizes and
            // times in index keys current); the key is the fallback when the
            // record cannot be read, so one bad record does not hide a folder.
            let described = self.record(n.record).and_then(|rec| {
                let seq = le16(&rec, 0x10);
                if n.seq != 0 && seq != n.seq {
                    return Err(corrupt(n.record * self.vol.record_size, format!("record {} was reused (sequence {seq}, index says {})", n.record, n.seq)));
                }
                self.describe(n.record, &rec)
            });
            let r = match described {
                Ok(r) => r,
                Err(e) => {
                    tracing::warn!(name = %n.name, record = n.record, error = %e, "ntfs: using the directory index's copy of the file's details");
                    Record { dir: n.dir, size: n.size, mtime: n.mtime, atime: n.atime, attributes: n.attributes, reparse: None, interix: None }
                }
            };
            let (kind, target) = match (&r.reparse, &r.interix) {
                (_, Some(t)) => (Kind::Symlink, Some(t.clone())),
                (Some((REPARSE_SYMLINK | REPARSE_MOUNT_POINT, t)), _) => (Kind::Symlink, t.clone()),
                _ if r.dir => (Kind::Dir, None),
                _ => (Kind::File, None),
            };
            let (mtime, mtime_nsec) = ntfs_time(r.mtime);
            out.push(Entry {
                name: n.name,
                kind,
                size: if kind == Kind::File { r.size } else { 0 },
                mtime,
                mtime_nsec,
                atime: Some(ntfs_time(r.atime).0),
                mode: None,
                attributes: Some(attr_letters(r.attributes)),
                target,
                node: Node::Ntfs(n.record),
            });
        }
        out.sort_by(|a, b| a.name.to_uppercase().cmp(&b.name.to_uppercase()).then_with(|| a.name.cmp(&b.name)));
        out.dedup_by(|a, b| a.name == b.name && a.node == b.node);
        Ok(out)
    }

    pub(crate) fn dev(&self) -> &dyn ReadAt {
        self.dev
    }

    /// Files whose MFT record is byte for byte the same in `self` and
    /// `other` (two copies of one volume: an image of it and the disk now):
    /// the clusters of their `$DATA` streams, as device byte ranges, go to
    /// `out`; returns how many files. A write through NTFS changes the
    /// record (times, sizes, runs, the update sequence number), so these
    /// clusters hold the same bytes in both copies. Left out: system files
    /// and `$Extend`'s (the logs change their data behind their records),
    /// folders, records continued in others, compressed and encrypted data.
    pub(crate) fn same_files(&self, other: &NtfsFs<'_>, out: &mut Vec<crate::extent::Extent>) -> Result<u64, FilesError> {
        const AT_FILE_NAME: u32 = 0x30;
        const EXTEND_RECORD: u64 = 11;
        let (a, b) = (&self.vol, &other.vol);
        if a.serial != b.serial || a.cluster_size != b.cluster_size || a.record_size != b.record_size {
            return Err(FilesError::Unsupported { what: "the two volumes are not copies of one volume (serial number or geometry differ)".into() });
        }
        let rs = a.record_size;
        let bytes_of = |runs: &[Run], cs: u64| runs.iter().map(|r| r.len * cs).sum::<u64>();
        let records = bytes_of(&self.mft, a.cluster_size).min(bytes_of(&other.mft, b.cluster_size)) / rs;
        let per = ((1u64 << 20) / rs).max(1);
        let mut files = 0;
        let mut no = FIRST_USER_RECORD;
        while no < records {
            let count = per.min(records - no);
            let mut ta = vec![0u8; (count * rs) as usize];
            let mut tb = vec![0u8; (count * rs) as usize];
            vol::read_stream(self.dev, a, &self.mft, no * rs, &mut ta).map_err(fs_err)?;
            vol::read_stream(other.dev, b, &other.mft, no * rs, &mut tb).map_err(fs_err)?;
            for (k, (ra, rb)) in ta.chunks_exact(rs as usize).zip(tb.chunks_exact(rs as usize)).enumerate() {
                let n = no + k as u64;
                if ra != rb || &ra[..4] != b"FILE" {
                    continue;
                }
                let mut rec = ra.to_vec();
                if vol::apply_fixups(&mut rec, n * rs).is_err() {
                    continue;
                }
                let (flags, base) = (le16(&rec, 0x16), le64(&rec, 0x20));
                if flags & 0x1 == 0 || flags & 0x2 != 0 || base != 0 {
                    continue;
                }
                let Ok(list) = vol::attrs(&rec, n * rs) else { continue };
                let parent = list.iter().find(|x| x.ty == AT_FILE_NAME && !x.non_resident).and_then(|x| x.resident_value()).filter(|v| v.len() >= 8).map(|v| le64(v, 0) & REF_MASK);
                if parent.is_none_or(|p| p == EXTEND_RECORD) {
                    continue;
                }
                if let Ok(Some(e)) = vol::plain_data_clusters(a, &rec, n * rs) {
                    out.extend(e);
                    files += 1;
                }
            }
            no += count;
        }
        Ok(files)
    }

    /// Why this volume's clusters may not show its last state, if so.
    pub(crate) fn unclean(&self) -> Option<String> {
        vol::unclean(self.dev, &self.vol, &self.mft)
    }

    pub fn map(&self, file: &Entry) -> Result<FileMap, FilesError> {
        let Node::Ntfs(no) = file.node else { return Err(corrupt(0, "not an NTFS entry")) };
        let rec = self.record(no)?;
        let r = self.describe(no, &rec)?;
        if let Some((tag, _)) = r.reparse {
            return Err(FilesError::Unsupported { what: format!("reading {}: a file behind reparse point {tag:#010x} (e.g. CompactOS compression or deduplication)", file.name) });
        }
        match self.stream(&rec, no, AT_DATA, "")? {
            None => Ok(MapBuilder::new(0, 0).finish()),
            Some(Stream::Resident(v)) => Ok(FileMap::inline(v)),
            Some(Stream::NonResident { runs, size, init, flags, compression_unit }) => {
                if flags & 0x4000 != 0 {
                    return Err(FilesError::Unsupported { what: format!("reading {}: EFS-encrypted files", file.name) });
                }
                if flags & 0x0001 != 0 {
                    return Ok(FileMap::ntfs_compressed(size, self.compressed(runs, size, init, compression_unit)?));
                }
                let cs = self.vol.cluster_size;
                let mut m = MapBuilder::new(size, init);
                for r in &runs {
                    m.push(r.len * cs, r.lcn.map(|l| l * cs));
                }
                Ok(m.finish())
            }
        }
    }
}

/// Where a compressed stream's units are.
#[derive(Debug, Clone)]
pub struct Compressed {
    runs: Vec<Run>,
    init: u64,
    cu: u8,
}

/// Decompress LZNT1 data (a sequence of chunks, each 4096 bytes when
/// decompressed; a short chunk is padded with zeroes, as ntfs-3g does) into
/// `out`, at most `limit` bytes.
fn lznt1(src: &[u8], out: &mut Vec<u8>, limit: usize) -> Result<(), String> {
    const CHUNK: usize = 4096;
    let mut p = 0usize;
    while p + 2 <= src.len() && out.len() < limit {
        let h = u16::from_le_bytes([src[p], src[p + 1]]);
        if h == 0 {
            break;
        }
        let end = p + 2 + usize::from(h & 0x0FFF) + 1;
        if end > src.len() {
            return Err(format!("a chunk of {} bytes runs past the data", end - p));
        }
        let start = out.len();
        if h & 0x8000 == 0 {
            out.extend_from_slice(&src[p + 2..end]);
        } else {
            let mut q = p + 2;
            while q < end {
                let tags = src[q];
                q += 1;
                for bit in 0..8 {
                    if q >= end {
                        break;
                    }
                    if tags & (1 << bit) == 0 {
                        out.push(src[q]);
                        q += 1;
                        continue;
                    }
                    if q + 2 > end {
                        return Err("a back-reference cut short".into());
                    }
                    let t = u16::from_le_bytes([src[q], src[q + 1]]);
                    q += 2;
                    let at = out.len() - start;
                    if at == 0 {
                        return Err("a back-reference at the start of a chunk".into());
                    }
                    // The split between offset and length bits moves with
                    // the position in the chunk.
                    let (mut len_mask, mut shift) = (0x0FFFu16, 12u32);
                    let mut i = at - 1;
                    while i >= 0x10 {
                        len_mask >>= 1;
                        shift -= 1;
                        i >>= 1;
                    }
                    let back = usize::from(t >> shift) + 1;
                    let len = usize::from(t & len_mask) + 3;
                    if back > at || at + len > CHUNK {
                        return Err(format!("a back-reference of {len} bytes from {back} back at {at}"));
                    }
                    for _ in 0..len {
                        out.push(out[out.len() - back]);
                    }
                }
            }
        }
        if out.len() - start > CHUNK {
            return Err("a chunk longer than 4096 bytes".into());
        }
        out.resize(start + CHUNK, 0);
        p = end;
    }
    out.truncate(limit);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(ntfs_time(EPOCH_DIFF as u64), (0, 0));
        assert_eq!(ntfs_time(EPOCH_DIFF as u64 + 10_000_005), (1, 500));
        assert_eq!(ntfs_time(0).0, -11_644_473_600);
    }

    #[test]
    fn link_targets() {
        // A symbolic link to "C:\x": substitute "\??\C:\x", print "C:\x".
        let sub: Vec<u8> = r"\??\C:\x".encode_utf16().flat_map(u16::to_le_bytes).collect();
        let print: Vec<u8> = r"C:\x".encode_utf16().flat_map(u16::to_le_bytes).collect();
        let mut v = vec![0u8; 0x14];
        v[0..4].copy_from_slice(&REPARSE_SYMLINK.to_le_bytes());
        v[8..10].copy_from_slice(&0u16.to_le_bytes());
        v[10..12].copy_from_slice(&(sub.len() as u16).to_le_bytes());
        v[12..14].copy_from_slice(&(sub.len() as u16).to_le_bytes());
        v[14..16].copy_from_slice(&(print.len() as u16).to_le_bytes());
        v.extend_from_slice(&sub);
        v.extend_from_slice(&print);
        assert_eq!(reparse_target(REPARSE_SYMLINK, &v).as_deref(), Some(r"C:\x"));
        assert_eq!(reparse_target(0x8000_0017, &v), None);
        // Truncated buffers give nothing, not a panic.
        assert_eq!(reparse_target(REPARSE_SYMLINK, &v[..0x16]), None);
    }

    #[test]
    fn lznt1_chunks() {
        // One compressed chunk: "abc" then a 6-byte copy from 3 back
        // (at position 3 the split is 4 offset bits, 12 length bits).
        let token: u16 = (2 << 12) | (6 - 3);
        let mut c = vec![0b0000_1000u8, b'a', b'b', b'c'];
        c.extend_from_slice(&token.to_le_bytes());
        let mut src = (0x8000u16 | (c.len() as u16 - 1)).to_le_bytes().to_vec();
        src.extend_from_slice(&c);
        // Then an uncompressed chunk of 4096 bytes.
        src.extend_from_slice(&0x0FFFu16.to_le_bytes());
        src.extend(std::iter::repeat_n(7u8, 4096));
        let mut out = Vec::new();
        lznt1(&src, &mut out, 65536).expect("valid");
        assert_eq!(&out[..9], b"abcabcabc");
        assert!(out[9..4096].iter().all(|&b| b == 0));
        assert!(out[4096..8192].iter().all(|&b| b == 7));
        assert_eq!(out.len(), 8192);
        // Damaged input gives an error or bytes, never a panic.
        for i in 0..src.len().min(64) {
            for x in [0u8, 0xFF, 0x80, 0x0F] {
                let mut bad = src.clone();
                bad[i] = x;
                let mut o = Vec::new();
                let _ = lznt1(&bad, &mut o, 65536);
                assert!(o.len() <= 65536);
            }
        }
    }
}
