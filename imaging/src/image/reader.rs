//! Reading an image: open and authenticate, walk the index, and the parallel
//! decode pipeline used by restore and check.
//!
//! ```text
//! reader thread --(frames read in index order)--> N workers: check stored
//!     hash, decrypt, decompress, check every chunk hash --> sink.write_at
//! ```
//! Workers hand each verified chunk straight to the sink with its position, so
//! no reorder buffer is needed; the sink (a disk, a file, nothing for check)
//! writes positionally.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crossbeam_channel::bounded;

use super::crypto::{self, KdfParams, Keys};
use super::format::*;
use super::volume::VolumeSet;
use super::ImageError;
use crate::blockdev::aligned::{AlignedBuf, BUFFER_ALIGN};
use crate::read_at::ReadAt;
use crate::task::Task;

/// Receives verified chunks of a region. Offsets are region-relative.
pub trait ChunkSink: Sync {
    fn write_at(&self, region: &Region, offset: u64, data: &[u8]) -> io::Result<()>;
}

/// A sink that drops everything (for `check`).
pub struct NullSink;
impl ChunkSink for NullSink {
    fn write_at(&self, _: &Region, _: u64, _: &[u8]) -> io::Result<()> {
        Ok(())
    }
}

/// What can be learned from an image without its password.
#[derive(Debug, Clone)]
pub struct Peek {
    pub header: Header,
    pub footer: Footer,
    pub volumes: Vec<PathBuf>,
    pub logical_len: u64,
}

/// An open, authenticated image.
pub struct ImageReader {
    vols: VolumeSet,
    /// The other images of its chain that it reads frames from
    /// (`catalog.chain.links`, same order).
    links: Vec<VolumeSet>,
    header: Header,
    keys: Option<Keys>,
    catalog: Catalog,
    footer: Footer,
    threads: usize,
    /// How [`verify_stored`](Self::verify_stored) reads: past the page
    /// cache (`Some(true)`), through it (`Some(false)`), or as the cache
    /// and `RESCUE_DIRECT_IO` say (`None`).
    uncached: Option<bool>,
}

impl std::fmt::Debug for ImageReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ImageReader").field("volumes", &self.vols).finish()
    }
}

fn corrupt(vols: &VolumeSet, offset: u64, what: impl Into<String>) -> ImageError {
    let (volume, volume_offset) = vols.locate(offset);
    let file = vols.paths().first().and_then(|p| p.file_name()).map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    ImageError::Corrupt { what: format!("{file}: {}", what.into()), offset, volume, volume_offset }
}

/// Find and check the images a chain point depends on: beside the point
/// under their recorded names, or (renamed) by their image id.
fn open_links(path: &Path, header: &Header, chain: &ChainInfo) -> Result<Vec<VolumeSet>, ImageError> {
    if chain.links.len() > MAX_LINKS {
        return Err(ImageError::Invalid(format!("the catalog lists {} chain links", chain.links.len())));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let mut out = Vec::with_capacity(chain.links.len());
    for l in &chain.links {
        let missing = |why: String| ImageError::MissingLink { file: dir.join(&l.file).display().to_string(), kind: l.kind.name().into(), sequence: l.sequence, why };
        let named = dir.join(&l.file);
        let first_try = if crate::store::for_path(&named).exists(&named) { Some(open_link(&named, l, header)) } else { None };
        let vs = match first_try {
            Some(Ok(v)) => v,
            other => {
                // Renamed? Look for a first volume with that image id.
                let found = if crate::store::for_path(&dir).can_list() {
                    crate::store::list(&dir).ok().and_then(|files| {
                        files.into_iter().filter(|p| p != &named).find(|p| super::volume::volume_id(p).is_some_and(|(i, id)| i <= 1 && hex(&id) == l.image_id))
                    })
                } else {
                    None
                };
                match (found, other) {
                    (Some(p), _) => open_link(&p, l, header).map_err(|e| missing(format!("is damaged: {e}")))?,
                    (None, Some(Err(e))) => return Err(missing(format!("does not match: {e}"))),
                    (None, _) => return Err(missing("is missing".into())),
                }
            }
        };
        out.push(vs);
    }
    Ok(out)
}

fn open_link(p: &Path, l: &ChainLink, header: &Header) -> Result<VolumeSet, ImageError> {
    let vs = VolumeSet::open(p)?;
    if hex(&vs.image_id) != l.image_id {
        return Err(ImageError::Invalid(format!("{} is another image (id {})", p.display(), hex(&vs.image_id))));
    }
    let (h, f) = peek_set(&vs)?;
    if hex(&f.catalog_hash) != l.catalog_hash {
        return Err(ImageError::Invalid(format!("{} was changed after this point was made (catalog hash differs)", p.display())));
    }
    if h.salt != header.salt || h.flags != header.flags || h.chunk_size != header.chunk_size || (h.kdf_m_kib, h.kdf_t, h.kdf_p) != (header.kdf_m_kib, header.kdf_t, header.kdf_p) {
        return Err(ImageError::Invalid(format!("{} has other keys or chunk size than this point", p.display())));
    }
    Ok(vs)
}

fn read_range(vols: &VolumeSet, offset: u64, len: u64, limit: u64, what: &str) -> Result<Vec<u8>, ImageError> {
    if len > limit || offset.checked_add(len).is_none_or(|e| e > vols.len()) {
        return Err(corrupt(vols, offset, format!("{what} of {len} bytes lies outside the image")));
    }
    let mut b = vec![0u8; len as usize];
    vols.read_exact_at(&mut b, offset).map_err(|e| {
        let (v, vo) = vols.locate(offset);
        ImageError::Io { path: PathBuf::from(format!("volume {v} at byte {vo}")), source: e }
    })?;
    Ok(b)
}

/// Read header and footer: everything that needs no password.
fn peek_set(vols: &VolumeSet) -> Result<(Header, Footer), ImageError> {
    let path0 = vols.paths().first().cloned().unwrap_or_default();
    if vols.len() < (HEADER_LEN + FOOTER_LEN) as u64 {
        return Err(ImageError::Incomplete { what: format!("{} holds only {} bytes", path0.display(), vols.len()) });
    }
    let hb = read_range(vols, 0, HEADER_LEN as u64, HEADER_LEN as u64, "header")?;
    let header = Header::decode(&hb).map_err(|e| match e {
        DecodeError::Magic => ImageError::NotAnImage { path: path0.clone(), offset: 64 },
        DecodeError::Version(v) => ImageError::Version { path: path0.clone(), version: v, supported: FORMAT_VERSION },
        DecodeError::Hash => corrupt(vols, 0, "the image header is damaged"),
        DecodeError::Invalid(w) => corrupt(vols, 0, format!("the image header is invalid: {w}")),
    })?;
    if header.image_id != vols.image_id {
        return Err(corrupt(vols, 0, "the image header does not match its volume header"));
    }
    let fpos = vols.len() - FOOTER_LEN as u64;
    let fb = read_range(vols, fpos, FOOTER_LEN as u64, FOOTER_LEN as u64, "footer")?;
    let footer = Footer::decode(&fb).map_err(|e| match e {
        DecodeError::Magic => ImageError::Incomplete {
            what: if vols.split_size > 0 {
                format!(
                    "no end marker after volume {}: the backup was interrupted or volume {} is missing",
                    vols.volume_count(),
                    vols.volume_count() + 1
                )
            } else {
                "no end marker: the backup was interrupted or the file was truncated".to_string()
            },
        },
        DecodeError::Version(v) => ImageError::Version { path: path0.clone(), version: v, supported: FORMAT_VERSION },
        _ => corrupt(vols, fpos, "the end marker (footer) is damaged"),
    })?;
    if footer.logical_len != vols.len() {
        return Err(ImageError::Incomplete { what: format!("the image should hold {} bytes but holds {}", footer.logical_len, vols.len()) });
    }
    if footer.volume_count != vols.volume_count() {
        return Err(ImageError::Incomplete {
            what: format!("the image has {} volumes but {} were found", footer.volume_count, vols.volume_count()),
        });
    }
    Ok((header, footer))
}

/// Open an image without a password: header, footer and volume list.
pub fn peek(path: &Path) -> Result<Peek, ImageError> {
    let vols = VolumeSet::open(path)?;
    let (header, footer) = peek_set(&vols)?;
    Ok(Peek { header, footer, volumes: vols.paths(), logical_len: vols.len() })
}

impl ImageReader {
    /// Open an image (every volume), check header and footer, derive keys
    /// when encrypted, and read and authenticate the catalog.
    pub fn open(path: &Path, password: Option<&[u8]>) -> Result<Self, ImageError> {
        let mut r = Self::open_without_links(path, password)?;
        if let Some(c) = &r.catalog.chain {
            r.links = open_links(path, &r.header, c)?;
        }
        Ok(r)
    }

    /// Like [`open`](Self::open) but without looking for the chain links: the
    /// catalog can be read, chunks held in other files cannot.
    pub fn open_without_links(path: &Path, password: Option<&[u8]>) -> Result<Self, ImageError> {
        let vols = VolumeSet::open(path)?;
        let (header, footer) = peek_set(&vols)?;
        let keys = if header.encrypted() {
            let pw = password.ok_or(ImageError::PasswordNeeded)?;
            let params = KdfParams { m_kib: header.kdf_m_kib, t: header.kdf_t, p: header.kdf_p };
            if params.m_kib > 4 << 20 || params.t > 100 || params.p > 64 {
                return Err(corrupt(&vols, 0, "the header asks for an absurd key derivation cost"));
            }
            let k = Keys::derive(pw, &header.salt, params).map_err(|e| ImageError::Invalid(e.to_string()))?;
            if k.key_check(&header.image_id) != header.key_check {
                return Err(ImageError::WrongPassword);
            }
            Some(k)
        } else {
            None
        };
        let stored = read_range(&vols, footer.catalog_offset, footer.catalog_len, MAX_CATALOG, "catalog")?;
        if blake3::hash(&stored).as_bytes() != &footer.catalog_hash {
            return Err(corrupt(&vols, footer.catalog_offset, "the catalog is damaged (hash mismatch)"));
        }
        let plain = open_record(keys.as_ref(), &stored, MAX_CATALOG).map_err(|w| corrupt(&vols, footer.catalog_offset, format!("catalog: {w}")))?;
        let catalog: Catalog = serde_json::from_slice(&plain).map_err(|e| corrupt(&vols, footer.catalog_offset, format!("catalog: {e}")))?;
        if catalog.image_id != hex(&header.image_id) || catalog.header_hash != header.digest() {
            return Err(corrupt(&vols, 0, "the catalog belongs to another header (image spliced or header replaced)"));
        }
        if catalog.options.chunk_size != header.chunk_size {
            return Err(corrupt(&vols, 0, "catalog and header disagree on the chunk size"));
        }
        let links = Vec::new();
        let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        Ok(Self { vols, links, header, keys, catalog, footer, threads, uncached: None })
    }

    /// The volume set that holds frame `f` (this image or a chain link).
    fn vols_of(&self, f: &FrameRef) -> Result<&VolumeSet, ImageError> {
        match f.link() {
            0 => Ok(&self.vols),
            k => self.links.get(k - 1).ok_or_else(|| corrupt(&self.vols, f.offset, format!("a frame names chain link {k}, but the point has {}", self.links.len()))),
        }
    }

    /// Read frame `f` from whichever file of the chain holds it, check its
    /// stored hash, decrypt and decompress it.
    pub(crate) fn load_frame(&self, f: &FrameRef, dec: &mut zstd::bulk::Decompressor<'static>) -> Result<AlignedBuf, ImageError> {
        let vols = self.vols_of(f)?;
        let stored = read_range(vols, f.offset, u64::from(f.stored_len), MAX_FRAME, "frame")?;
        decode_frame(vols, self.keys.as_ref(), f, &stored, dec)
    }

    /// Chunk `e`'s bytes within its decoded frame, checked against its hash.
    pub(crate) fn checked_chunk<'p>(&self, region: &Region, e: &Entry, plain: &'p [u8]) -> Result<&'p [u8], ImageError> {
        let cs = self.header.chunk_size as usize;
        let start = e.offset_in_frame as usize;
        let data = plain.get(start..start + e.len as usize).ok_or_else(|| bad(region, e, cs, "chunk lies outside its frame"))?;
        if crypto::chunk_hash(self.keys.as_ref(), data) != e.hash {
            return Err(bad(region, e, cs, "content does not match its hash"));
        }
        Ok(data)
    }

    /// Volume files of the chain links this point depends on.
    pub fn link_volumes(&self) -> Vec<PathBuf> {
        self.links.iter().flat_map(|l| l.paths()).collect()
    }

    /// Every open file the image reads from (its volumes and its chain links'),
    /// so a restore can refuse a target that holds one of them.
    pub fn files(&self) -> Vec<(PathBuf, &std::fs::File)> {
        std::iter::once(&self.vols).chain(self.links.iter()).flat_map(|v| v.files().map(|(p, f)| (p.to_path_buf(), f))).collect()
    }

    /// First volume of each chain link, in `catalog.chain.links` order.
    pub fn link_paths(&self) -> Vec<PathBuf> {
        self.links.iter().map(|l| l.paths().into_iter().next().unwrap_or_default()).collect()
    }

    /// Check that every chain link is present and matches, without keeping them open.
    pub fn check_links(&self, path: &Path) -> Result<(), ImageError> {
        match &self.catalog.chain {
            Some(c) => open_links(path, &self.header, c).map(|_| ()),
            None => Ok(()),
        }
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The image's keys (encrypted images), shared by its chain.
    pub(crate) fn keys(&self) -> Option<&Keys> {
        self.keys.as_ref()
    }

    pub fn footer(&self) -> &Footer {
        &self.footer
    }

    pub fn volumes(&self) -> Vec<PathBuf> {
        self.vols.paths()
    }

    pub fn volume_set(&self) -> &VolumeSet {
        &self.vols
    }

    pub fn len(&self) -> u64 {
        self.vols.len()
    }

    pub fn is_empty(&self) -> bool {
        self.vols.is_empty()
    }

    pub fn set_threads(&mut self, n: usize) {
        self.threads = n.max(1);
    }

    /// Make the stored-bytes check read past the page cache, or through it,
    /// whatever the cache holds (`None`: decide by what it holds).
    pub fn set_uncached_reads(&mut self, v: Option<bool>) {
        self.uncached = v;
    }

    /// Read, authenticate and decode one index segment.
    pub fn segment(&self, region: &Region, r: &SegmentRef) -> Result<Segment, ImageError> {
        let stored = read_range(&self.vols, r.offset, r.stored_len, MAX_SEGMENT, "index segment")?;
        if hex(blake3::hash(&stored).as_bytes()) != r.hash {
            return Err(corrupt(&self.vols, r.offset, format!("index of region {} is damaged (hash mismatch)", region.id)));
        }
        let plain = open_record(self.keys.as_ref(), &stored, MAX_SEGMENT * 4)
            .map_err(|w| corrupt(&self.vols, r.offset, format!("index of region {}: {w}", region.id)))?;
        let seg = Segment::decode(&plain, self.header.chunk_size)
            .map_err(|e| corrupt(&self.vols, r.offset, format!("index of region {}: {e:?}", region.id)))?;
        if seg.region != region.id || seg.entries.len() as u32 != r.entries {
            return Err(corrupt(&self.vols, r.offset, format!("index segment does not belong to region {}", region.id)));
        }
        let chunks = region.len.div_ceil(u64::from(self.header.chunk_size));
        if let Some(e) = seg.entries.iter().find(|e| e.chunk >= chunks) {
            return Err(corrupt(&self.vols, r.offset, format!("chunk {} lies past the end of region {}", e.chunk, region.id)));
        }
        Ok(seg)
    }

    /// Fast integrity pass over the stored bytes of the given regions: every
    /// index segment and frame is read and its BLAKE3 compared with the index
    /// (for encrypted images the index itself is authenticated, so this also
    /// proves every frame authentic). Needs no decompression, so it runs at
    /// the speed of reading: every worker reads and hashes batches of frames.
    /// Restore runs it before writing the first byte.
    pub fn verify_stored(&self, regions: &[u32], task: &Task) -> Result<(), ImageError> {
        let mut list = Vec::new();
        for id in regions {
            list.push(self.catalog.region(*id).ok_or_else(|| ImageError::Invalid(format!("no region {id}")))?);
        }
        // Frames in chain links are verified too: count their files (an
        // upper bound: a point rarely uses every frame of its base).
        let total: u64 = list.iter().map(|r| r.stored_bytes).sum::<u64>() + self.links.iter().map(|l| l.len()).sum::<u64>();
        task.progress.begin("verifying image", total);
        // Frames that follow each other in the image are read with one call
        // (up to 8 MiB); each worker reads its batch and hashes it frame by
        // frame, so the copies out of the page cache (the larger part of the
        // work when the image is cached) and the waits for the disk are spread
        // over all cores, with a read in flight per worker.
        //
        // An image that is not in the page cache is read past it (O_DIRECT)
        // in requests of 1 MiB, at least eight in flight: the disk then
        // streams faster than through the kernel's read-ahead, and no copy
        // out of the cache is made. `RESCUE_DIRECT_IO=1` always reads so.
        type Batch = (Vec<FrameRef>, u64, u64);
        let uncached = self.uncached.unwrap_or_else(|| crate::blockdev::direct_io_requested() || self.vols.mostly_uncached());
        let (batch_max, workers) = if uncached { (1u64 << 20, self.threads.max(8)) } else { (8u64 << 20, self.threads) };
        let (tx, rx) = bounded::<Result<Batch, ImageError>>(workers * 2);
        std::thread::scope(|s| -> Result<(), ImageError> {
            let task_r = task.clone();
            let list = &list;
            s.spawn(move || {
                let mut batch: Vec<FrameRef> = Vec::new();
                let flush = |batch: &mut Vec<FrameRef>| -> bool {
                    let Some(first) = batch.first() else { return true };
                    let start = first.offset;
                    let end = batch.last().map_or(start, |f| f.offset + u64::from(f.stored_len));
                    let len = end - start;
                    let r = self.vols_of(first).and_then(|vols| {
                        if len > batch_max + MAX_FRAME || start.checked_add(len).is_none_or(|e| e > vols.len()) {
                            Err(corrupt(vols, start, format!("frames of {len} bytes lie outside the image")))
                        } else {
                            Ok((std::mem::take(batch), start, len))
                        }
                    });
                    let stop = r.is_err();
                    !(tx.send(r).is_err() || stop)
                };
                // Deduplicated frames are listed again by later segments:
                // verify each once (bounded: beyond the cap a frame may be
                // read twice, which costs time, not correctness).
                let mut done = std::collections::HashSet::new();
                for region in list {
                    for sref in &region.segments {
                        let seg = match self.segment(region, sref) {
                            Ok(x) => x,
                            Err(e) => {
                                let _ = tx.send(Err(e));
                                return;
                            }
                        };
                        for f in &seg.frames {
                            let key = (f.link(), f.offset);
                            if done.contains(&key) {
                                continue;
                            }
                            if done.len() < 4 << 20 {
                                done.insert(key);
                            }
                            if let Err(e) = task_r.check_cancelled() {
                                let _ = tx.send(Err(e.into()));
                                return;
                            }
                            let contiguous = batch.last().is_some_and(|p| p.link() == f.link() && p.offset + u64::from(p.stored_len) == f.offset);
                            // A deduplicated frame may lie before the batch: not contiguous then.
                            let size = match batch.first() {
                                Some(b) if contiguous => f.offset + u64::from(f.stored_len) - b.offset,
                                _ => 0,
                            };
                            if !batch.is_empty() && (!contiguous || size > batch_max) && !flush(&mut batch) {
                                return;
                            }
                            batch.push(*f);
                        }
                    }
                }
                flush(&mut batch);
            });
            let workers: Vec<_> = (0..workers)
                .map(|_| {
                    let rx = rx.clone();
                    s.spawn(move || -> Result<(), ImageError> {
                        // Buffers per worker, reused for every batch.
                        let mut b: Vec<u8> = Vec::new();
                        let mut aligned = AlignedBuf::new(0, BUFFER_ALIGN);
                        for msg in rx.iter() {
                            let (frames, start, len) = msg?;
                            let Some(first) = frames.first() else { continue };
                            let vols = self.vols_of(first)?;
                            let io_err = |e| {
                                let (v, vo) = vols.locate(start);
                                let file = vols.paths().first().map(|p| p.display().to_string()).unwrap_or_default();
                                ImageError::Io { path: PathBuf::from(format!("{file}: volume {v} at byte {vo}")), source: e }
                            };
                            let data: &[u8] = match uncached.then(|| vols.read_uncached(start, len as usize, &mut aligned)).flatten() {
                                Some(r) => r.map_err(io_err)?,
                                None => {
                                    b.resize(len as usize, 0);
                                    vols.read_exact_at(&mut b, start).map_err(io_err)?;
                                    &b
                                }
                            };
                            for f in &frames {
                                let at = (f.offset - start) as usize;
                                let bytes = &data[at..at + f.stored_len as usize];
                                if blake3::hash(bytes).as_bytes() != &f.hash {
                                    return Err(corrupt(vols, f.offset, "frame is damaged (hash mismatch)"));
                                }
                                task.progress.advance(bytes.len() as u64);
                            }
                        }
                        Ok(())
                    })
                })
                .collect();
            drop(rx);
            let mut first = None;
            for w in workers {
                match w.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        first.get_or_insert(e);
                    }
                    Err(_) => {
                        first.get_or_insert(ImageError::Invalid("a verify worker panicked".into()));
                    }
                }
            }
            first.map_or(Ok(()), Err)
        })?;
        task.check_cancelled()?;
        task.progress.finish();
        Ok(())
    }

    /// Decode every chunk of `region` and give it to `sink`; every chunk is
    /// verified against its hash before the sink sees it. Zero chunks are
    /// passed as zeros (the target may hold old data there).
    pub fn read_region(&self, region: &Region, sink: &dyn ChunkSink, task: &Task) -> Result<(), ImageError> {
        self.read_region_with(region, sink, task, false)
    }

    /// Like [`read_region`](Self::read_region); with `fill_unstored`, chunks the
    /// image does not hold (unused by the filesystem) are written as zeros
    /// too, so the target becomes an exact copy (sector-by-sector restore).
    pub fn read_region_with(&self, region: &Region, sink: &dyn ChunkSink, task: &Task, fill_unstored: bool) -> Result<(), ImageError> {
        self.read_region_changed(region, sink, task, fill_unstored, None)
    }

    /// Like [`read_region_with`](Self::read_region_with); with `target` (the
    /// place the region goes, region-relative), only chunks whose content
    /// differs from the target's are given to the sink: each target chunk is
    /// read and hashed and compared with the index, and frames are read and
    /// decoded only for chunks that differ. The result on the target is the
    /// same as a full restore's.
    pub fn read_region_changed(&self, region: &Region, sink: &dyn ChunkSink, task: &Task, fill_unstored: bool, target: Option<&dyn ReadAt>) -> Result<(), ImageError> {
        self.read_region_inner(region, sink, task, fill_unstored, Filter::Target(target), None)
    }

    /// Give `sink` only the chunks of `region` in `changed` (found by
    /// [`verify_changed`](Self::verify_changed)): the target is not read
    /// again, and frames are read only for those chunks.
    pub fn read_region_only(&self, region: &Region, sink: &dyn ChunkSink, task: &Task, fill_unstored: bool, changed: &ChangedChunks) -> Result<(), ImageError> {
        self.read_region_inner(region, sink, task, fill_unstored, Filter::Only(changed), None)
    }

    /// Before a changed-block restore writes anything: find the chunks of
    /// each region that differ from its target, and check the stored bytes
    /// of the frames that hold them (all frames of boot areas and gaps,
    /// which the restore blanks first). Only what the restore will read is
    /// read, and a damaged image is found before the first write. Returns
    /// the differing chunks of each data region (by region id), so the
    /// restore need not read the target a second time.
    pub fn verify_changed(&self, items: &[(&Region, &dyn ReadAt)], fill_unstored: bool, task: &Task) -> Result<std::collections::HashMap<u32, ChangedChunks>, ImageError> {
        let frames = std::sync::Mutex::new(std::collections::HashMap::<(usize, u64), FrameRef>::new());
        let mut changed = std::collections::HashMap::new();
        for (region, target) in items {
            if matches!(region.kind, RegionKind::Head | RegionKind::Gap) {
                for r in &region.segments {
                    let seg = self.segment(region, r)?;
                    let mut g = frames.lock().map_err(|_| ImageError::Invalid("a thread panicked".into()))?;
                    for f in seg.frames {
                        g.insert((f.link(), f.offset), f);
                    }
                }
                continue;
            }
            let set = ChangedChunks::new(region.len.div_ceil(u64::from(self.header.chunk_size)));
            self.read_region_inner(region, &NullSink, task, fill_unstored, Filter::Target(Some(*target)), Some((&frames, &set)))?;
            changed.insert(region.id, set);
        }
        let mut list: Vec<FrameRef> = frames.into_inner().map_err(|_| ImageError::Invalid("a thread panicked".into()))?.into_values().collect();
        list.sort_by_key(|f| (f.link(), f.offset));
        let total: u64 = list.iter().map(|f| u64::from(f.stored_len)).sum();
        task.progress.begin("verifying the chunks to write", total);
        for f in &list {
            task.check_cancelled()?;
            let vols = self.vols_of(f)?;
            let b = read_range(vols, f.offset, u64::from(f.stored_len), MAX_FRAME, "frame")?;
            if blake3::hash(&b).as_bytes() != &f.hash {
                return Err(corrupt(vols, f.offset, "frame is damaged (hash mismatch)"));
            }
            task.progress.advance(b.len() as u64);
        }
        task.progress.finish();
        Ok(changed)
    }

    #[allow(clippy::type_complexity)]
    fn read_region_inner(
        &self,
        region: &Region,
        sink: &dyn ChunkSink,
        task: &Task,
        fill_unstored: bool,
        filter: Filter<'_>,
        collect: Option<(&std::sync::Mutex<std::collections::HashMap<(usize, u64), FrameRef>>, &ChangedChunks)>,
    ) -> Result<(), ImageError> {
        let target = match filter {
            Filter::Target(t) => t,
            Filter::Only(_) => None,
        };
        let only = match filter {
            Filter::Only(c) => Some(c),
            Filter::Target(_) => None,
        };
        let cs = self.header.chunk_size as usize;
        // Comparing with a target read past the page cache: as many workers
        // as it wants reads in flight (they mostly wait for the disk).
        let threads = self.threads.max(target.map_or(0, |t| t.reads_in_flight()));
        let keys = self.keys.clone().map(Arc::new);
        let expected = if fill_unstored { region.len } else { region.chunks * cs as u64 };
        let what = match (collect.is_some(), target.is_some() || only.is_some()) {
            (true, _) => format!("comparing {} with the target", describe(region)),
            (false, true) => format!("restoring what differs in {}", describe(region)),
            _ => format!("restoring {}", describe(region)),
        };
        task.progress.begin(&what, expected);
        let (tx, rx) = bounded::<Result<(FrameRef, Vec<Entry>, Vec<u8>), ImageError>>(threads * 2);
        let zeros = AlignedBuf::new(cs * 64, BUFFER_ALIGN);
        std::thread::scope(|s| -> Result<(), ImageError> {
            let task_r = task.clone();
            let reader = s.spawn(move || {
                let total_chunks = region.len.div_ceil(cs as u64);
                let zero_entry = |k: u64| Entry {
                    chunk: k,
                    frame: u32::MAX,
                    offset_in_frame: 0,
                    len: (region.len - k * cs as u64).min(cs as u64) as u32,
                    flags: ENTRY_ZERO,
                    hash: [0; 32],
                };
                let zero_group = |from: u64, to: u64| (FrameRef { offset: 0, stored_len: 0, raw_len: 0, flags: 0, hash: [0; 32] }, (from..to).map(zero_entry).collect::<Vec<_>>(), Vec::new());
                // Send zero chunks [from, to) in groups (sector-by-sector restore).
                let fill = |from: u64, to: u64| -> bool {
                    let mut k = from;
                    while k < to {
                        if task_r.check_cancelled().is_err() {
                            return false;
                        }
                        let end = (k + 64).min(to);
                        if tx.send(Ok(zero_group(k, end))).is_err() {
                            return false;
                        }
                        k = end;
                    }
                    true
                };
                let mut next_chunk = 0u64;
                for sref in &region.segments {
                    let seg = match self.segment(region, sref) {
                        Ok(s) => s,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return;
                        }
                    };
                    // Group consecutive entries by frame (zero entries form their own group).
                    let mut i = 0;
                    while i < seg.entries.len() {
                        if let Err(e) = task_r.check_cancelled() {
                            let _ = tx.send(Err(e.into()));
                            return;
                        }
                        let e0 = seg.entries[i];
                        if fill_unstored && e0.chunk > next_chunk && !fill(next_chunk, e0.chunk) {
                            return;
                        }
                        let mut j = i + 1;
                        while j < seg.entries.len() && seg.entries[j].is_zero() == e0.is_zero() && (e0.is_zero() || seg.entries[j].frame == e0.frame) && j - i < 64 {
                            j += 1;
                        }
                        let group = seg.entries[i..j].to_vec();
                        next_chunk = group.last().map_or(next_chunk, |e| e.chunk + 1);
                        i = j;
                        let msg = if e0.is_zero() {
                            Ok((FrameRef { offset: 0, stored_len: 0, raw_len: 0, flags: 0, hash: [0; 32] }, group, Vec::new()))
                        } else if target.is_some() || only.is_some() {
                            // The worker reads the frame only if a chunk differs.
                            Ok((seg.frames[e0.frame as usize], group, Vec::new()))
                        } else {
                            let f = seg.frames[e0.frame as usize];
                            self.vols_of(&f).and_then(|v| read_range(v, f.offset, u64::from(f.stored_len), MAX_FRAME, "frame")).map(|b| (f, group, b))
                        };
                        let stop = msg.is_err();
                        if tx.send(msg).is_err() || stop {
                            return;
                        }
                    }
                }
                if fill_unstored {
                    fill(next_chunk, total_chunks);
                }
            });
            let mut workers = Vec::new();
            for _ in 0..threads {
                let rx = rx.clone();
                let keys = keys.clone();
                let zeros = &zeros;
                workers.push(s.spawn(move || -> Result<(), ImageError> {
                    let mut dec = zstd::bulk::Decompressor::new().map_err(|e| ImageError::Invalid(format!("zstd: {e}")))?;
                    let mut tbuf = Vec::new();
                    for msg in rx.iter() {
                        let (f, mut entries, mut stored) = msg?;
                        if target.is_some() || only.is_some() {
                            let before: u64 = entries.iter().map(|e| u64::from(e.len)).sum();
                            let keep: Vec<Entry> = match (only, target) {
                                // The differing chunks are known already.
                                (Some(set), _) => entries.iter().filter(|e| set.contains(e.chunk)).copied().collect(),
                                // Keep only the chunks whose target content differs.
                                (None, Some(t)) => {
                                    let mut keep = Vec::with_capacity(entries.len());
                                    for run in runs(&entries, |a, b| b.chunk == a.chunk + 1) {
                                        let off = run[0].chunk * cs as u64;
                                        let len: usize = run.iter().map(|e| e.len as usize).sum();
                                        tbuf.resize(len, 0);
                                        t.read_exact_at(&mut tbuf, off).map_err(|err| sink_error(region, run[0].chunk, off, err))?;
                                        let mut at = 0usize;
                                        for e in run {
                                            let data = &tbuf[at..at + e.len as usize];
                                            at += e.len as usize;
                                            let same = if e.is_zero() { data.iter().all(|&b| b == 0) } else { crypto::chunk_hash(keys.as_deref(), data) == e.hash };
                                            if !same {
                                                keep.push(*e);
                                            }
                                        }
                                    }
                                    keep
                                }
                                (None, None) => entries.clone(),
                            };
                            let after: u64 = keep.iter().map(|e| u64::from(e.len)).sum();
                            task.progress.advance(before - after);
                            entries = keep;
                            if entries.is_empty() {
                                continue;
                            }
                            if let Some((frames, set)) = collect {
                                for e in &entries {
                                    set.insert(e.chunk);
                                }
                                if !entries[0].is_zero() {
                                    frames.lock().map_err(|_| ImageError::Invalid("a thread panicked".into()))?.insert((f.link(), f.offset), f);
                                }
                                task.progress.advance(after);
                                continue;
                            }
                            if !entries[0].is_zero() {
                                let vols = self.vols_of(&f)?;
                                stored = read_range(vols, f.offset, u64::from(f.stored_len), MAX_FRAME, "frame")?;
                            }
                        }
                        if entries.first().is_some_and(|e| e.is_zero()) {
                            // Runs of consecutive zero chunks go out as one write.
                            for run in runs(&entries, |a, b| b.chunk == a.chunk + 1) {
                                let off = run[0].chunk * cs as u64;
                                let len: usize = run.iter().map(|e| e.len as usize).sum();
                                let mut done = 0;
                                while done < len {
                                    let n = (len - done).min(zeros.len());
                                    sink.write_at(region, off + done as u64, &zeros[..n]).map_err(|err| sink_error(region, run[0].chunk, off, err))?;
                                    done += n;
                                }
                                task.progress.advance(len as u64);
                            }
                            continue;
                        }
                        let plain = decode_frame(self.vols_of(&f)?, keys.as_deref(), &f, &stored, &mut dec)?;
                        for e in &entries {
                            let start = e.offset_in_frame as usize;
                            let data = plain.get(start..start + e.len as usize).ok_or_else(|| bad(region, e, cs, "chunk lies outside its frame"))?;
                            if crypto::chunk_hash(keys.as_deref(), data) != e.hash {
                                return Err(bad(region, e, cs, "content does not match its hash"));
                            }
                        }
                        // Every chunk verified: write runs that are adjacent both
                        // on the target and in the frame with one call each.
                        for run in runs(&entries, |a, b| b.chunk == a.chunk + 1 && b.offset_in_frame == a.offset_in_frame + a.len) {
                            let start = run[0].offset_in_frame as usize;
                            let len: usize = run.iter().map(|e| e.len as usize).sum();
                            let off = run[0].chunk * cs as u64;
                            sink.write_at(region, off, &plain[start..start + len]).map_err(|err| sink_error(region, run[0].chunk, off, err))?;
                            task.progress.advance(len as u64);
                        }
                    }
                    Ok(())
                }));
            }
            drop(rx);
            let mut first_err = None;
            for w in workers {
                match w.join() {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        first_err.get_or_insert(e);
                    }
                    Err(_) => {
                        first_err.get_or_insert(ImageError::Invalid("a restore worker panicked".into()));
                    }
                }
            }
            let _ = reader.join();
            match first_err {
                Some(e) => Err(e),
                None => {
                    task.check_cancelled()?;
                    Ok(())
                }
            }
        })?;
        task.progress.finish();
        Ok(())
    }
}

/// Which chunks of a region a restore gives to its sink.
#[derive(Clone, Copy)]
enum Filter<'a> {
    /// All (`None`), or those that differ from this target.
    Target(Option<&'a dyn ReadAt>),
    /// Those in this set.
    Only(&'a ChangedChunks),
}

/// The chunks of a region that differ from the target, one bit each
/// (128 KiB per TiB at 16 KiB chunks), filled by workers in parallel.
pub struct ChangedChunks {
    bits: Vec<std::sync::atomic::AtomicU64>,
}

impl ChangedChunks {
    pub fn new(chunks: u64) -> ChangedChunks {
        ChangedChunks { bits: (0..chunks.div_ceil(64)).map(|_| std::sync::atomic::AtomicU64::new(0)).collect() }
    }

    /// Mark chunk `k` (out-of-range chunks are ignored).
    pub fn insert(&self, k: u64) {
        if let Some(w) = self.bits.get((k / 64) as usize) {
            w.fetch_or(1 << (k % 64), std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Mark every chunk that overlaps bytes `[start, end)` of the region.
    pub fn insert_bytes(&self, start: u64, end: u64, chunk_size: u64) {
        if end > start && chunk_size > 0 {
            for k in start / chunk_size..end.div_ceil(chunk_size) {
                self.insert(k);
            }
        }
    }

    pub fn contains(&self, k: u64) -> bool {
        self.bits.get((k / 64) as usize).is_some_and(|w| w.load(std::sync::atomic::Ordering::Relaxed) & (1 << (k % 64)) != 0)
    }

    /// How many chunks are marked.
    pub fn len(&self) -> u64 {
        self.bits.iter().map(|w| u64::from(w.load(std::sync::atomic::Ordering::Relaxed).count_ones())).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Split `v` into maximal runs where `joins(prev, next)` holds.
fn runs<T>(v: &[T], joins: impl Fn(&T, &T) -> bool) -> impl Iterator<Item = &[T]> {
    let mut rest = v;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut n = 1;
        while n < rest.len() && joins(&rest[n - 1], &rest[n]) {
            n += 1;
        }
        let (a, b) = rest.split_at(n);
        rest = b;
        Some(a)
    })
}

fn describe(r: &Region) -> String {
    match (r.kind, r.partition) {
        (RegionKind::Partition, Some(n)) => format!("partition {n}"),
        (RegionKind::Head, _) => "boot area".into(),
        (RegionKind::Gap, _) => "gap".into(),
        (RegionKind::Disk, _) => "disk".into(),
        _ => "region".into(),
    }
}

fn bad(region: &Region, e: &Entry, cs: usize, what: &str) -> ImageError {
    ImageError::BadChunk { region: region.id, chunk: e.chunk, disk_offset: region.disk_offset + e.chunk * cs as u64, what: what.into() }
}

fn sink_error(region: &Region, chunk: u64, off: u64, err: io::Error) -> ImageError {
    ImageError::Io { path: PathBuf::from(format!("target (region {} chunk {chunk}, region byte {off})", region.id)), source: err }
}

/// The plain bytes go into an aligned buffer: restore writes them to the
/// target as they are, which on a raw disk (Windows, O_DIRECT) then needs no
/// bounce copy.
fn decode_frame(vols: &VolumeSet, keys: Option<&Keys>, f: &FrameRef, stored: &[u8], dec: &mut zstd::bulk::Decompressor<'static>) -> Result<AlignedBuf, ImageError> {
    if blake3::hash(stored).as_bytes() != &f.hash {
        return Err(corrupt(vols, f.offset, "frame is damaged (hash mismatch)"));
    }
    let opened;
    let payload = match keys {
        Some(k) => {
            opened = k.open(stored).map_err(|e| corrupt(vols, f.offset, format!("frame: {e}")))?;
            &opened[..]
        }
        None => stored,
    };
    let (plain, len) = if f.flags & FRAME_COMPRESSED != 0 {
        let mut plain = AlignedBuf::new(f.raw_len as usize, BUFFER_ALIGN);
        let n = dec.decompress_to_buffer(payload, &mut plain[..]).map_err(|e| corrupt(vols, f.offset, format!("frame does not decompress: {e}")))?;
        (plain, n)
    } else {
        (AlignedBuf::copy_of(payload), payload.len())
    };
    if len != f.raw_len as usize {
        return Err(corrupt(vols, f.offset, format!("frame holds {len} bytes, index says {}", f.raw_len)));
    }
    Ok(plain)
}

/// Decrypt (when keyed) and decompress a record written by the writer's
/// `write_record`.
fn open_record(keys: Option<&Keys>, stored: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    let z = match keys {
        Some(k) => k.open(stored).map_err(|e| e.to_string())?,
        None => stored.to_vec(),
    };
    let mut out = Vec::new();
    let mut d = zstd::stream::read::Decoder::new(&z[..]).map_err(|e| e.to_string())?;
    use std::io::Read;
    (&mut d).take(limit + 1).read_to_end(&mut out).map_err(|e| e.to_string())?;
    if out.len() as u64 > limit {
        return Err(format!("record larger than {limit} bytes"));
    }
    Ok(out)
}

