//! Writing an image: the parallel backup pipeline.
//!
//! ```text
//! reader thread --(frame jobs: up to 16 chunks)--> N workers: zero test, hash,
//!     zstd, encrypt --(out of order)--> this thread: reorder, write frames,
//!     build index segments
//! ```
//! Channels are bounded, so memory stays at a few MiB whatever the disk size.

use std::collections::BTreeMap;
use std::sync::Arc;

use crossbeam_channel::bounded;

use super::crypto::{self, KdfParams, Keys};
use super::format::*;
use super::volume::{Output, VolumeWriter};
use super::reader::ImageReader;
use super::resume;
use super::{Compression, ImageError};
use crate::extent::Extent;
use crate::blockdev::aligned::{AlignedBuf, BUFFER_ALIGN};
use crate::read_at::ReadAt;
use crate::task::Task;

/// How to write an image.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    pub compression: Compression,
    pub password: Option<Vec<u8>>,
    pub kdf: KdfParams,
    pub split: Option<u64>,
    pub chunk_size: u32,
    /// Worker threads for hashing, compression and encryption.
    pub threads: usize,
    /// Go on with the interrupted backup to this share file instead of
    /// starting a new one (see [`super::resume`]).
    pub resume: bool,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            compression: Compression::Normal,
            password: None,
            kdf: KdfParams::default(),
            split: None,
            chunk_size: DEFAULT_CHUNK_SIZE,
            threads: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            resume: false,
        }
    }
}

/// Statistics of one stored region.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RegionStats {
    pub used_bytes: u64,
    pub stored_bytes: u64,
    pub chunks: u64,
    pub zero_chunks: u64,
    /// Chunks stored once for several places.
    pub dup_chunks: u64,
    /// Chunks referenced in the chain's base point.
    pub base_chunks: u64,
    /// Used bytes not read: the filesystem's records show them unchanged
    /// since the base point.
    #[serde(default)]
    pub unread_bytes: u64,
}

/// Index of `fr` in the segment's frame table, adding it when new. Frames of
/// different chain files may share an offset: the link is part of the identity.
fn frame_index(segment: &mut Segment, fr: FrameRef) -> u32 {
    match segment.frames.iter().rposition(|x| x.offset == fr.offset && x.link() == fr.link()) {
        Some(i) => i as u32,
        None => {
            segment.frames.push(fr);
            segment.frames.len() as u32 - 1
        }
    }
}

/// A chunk to read: chunk number and the pieces of it that hold data
/// (region-relative byte ranges); the rest of the chunk reads as zero.
struct ChunkPlan {
    chunk: u64,
    len: u32,
    pieces: Vec<Extent>,
    /// Known without reading: the filesystem's records show the chunk's
    /// bytes unchanged since the base point, which holds them here.
    known: Option<Known>,
}

/// A chunk the base point holds unchanged.
#[derive(Clone, Copy)]
enum Known {
    Zero,
    Base { frame: FrameRef, offset_in_frame: u32, hash: [u8; 32] },
}

/// What the reader found in a chunk.
#[derive(Clone, Copy)]
enum ChunkKind {
    Zero,
    /// Same content as an earlier chunk of this image: stored once.
    Dup,
    /// Unchanged since the chain's base point: referenced there.
    Base { frame: FrameRef, offset_in_frame: u32 },
    /// New content; `register`: remember it for deduplication.
    Unique { register: bool },
}

struct FrameJob {
    seq: u64,
    chunks: Vec<ChunkPlan>,
    kinds: Vec<ChunkKind>,
    hashes: Vec<[u8; 32]>,
    /// `chunks.len() * chunk_size` bytes; chunk i starts at i * chunk_size.
    buf: AlignedBuf,
}

struct ChunkOut {
    chunk: u64,
    offset_in_frame: u32,
    len: u32,
    kind: ChunkKind,
    hash: [u8; 32],
}

struct FrameOut {
    seq: u64,
    stored: Vec<u8>,
    raw_len: u32,
    flags: u32,
    chunks: Vec<ChunkOut>,
    used: u64,
    unread: u64,
}

/// Deduplication keys are the first 16 bytes of the chunk hash.
type DedupKey = [u8; 16];
fn dedup_key(h: &[u8; 32]) -> DedupKey {
    let mut k = [0u8; 16];
    k.copy_from_slice(&h[..16]);
    k
}
/// Chunks remembered for deduplication (about 8 GiB of distinct data at
/// 16 KiB chunks; ~60 MiB of memory). Later chunks are still stored, just not
/// deduplicated, so memory stays bounded whatever the disk size.
const DEDUP_CAPACITY: usize = 512 * 1024;

/// Split normalized extents of a region into chunk plans, in chunk order.
/// The chunks to read of a region, from chunk `first` on.
fn chunk_plans(extents: &[Extent], region_len: u64, cs: u64, first: u64) -> impl Iterator<Item = ChunkPlan> + '_ {
    let mut i = 0usize;
    let mut next_chunk = first;
    std::iter::from_fn(move || {
        while i < extents.len() && extents[i].end() <= next_chunk * cs {
            i += 1;
        }
        let e = extents.get(i)?;
        let k = next_chunk.max(e.start / cs);
        let wstart = k * cs;
        if wstart >= region_len {
            return None;
        }
        let wend = (wstart + cs).min(region_len);
        let mut pieces = Vec::new();
        let mut j = i;
        while let Some(x) = extents.get(j) {
            if x.start >= wend {
                break;
            }
            let s = x.start.max(wstart);
            let t = x.end().min(wend);
            if t > s {
                pieces.push(Extent::new(s, t - s));
            }
            j += 1;
        }
        next_chunk = k + 1;
        Some(ChunkPlan { chunk: k, len: (wend - wstart) as u32, pieces, known: None })
    })
}

/// A frame job after reading: its bytes and each chunk's hash (None: all
/// zero).
struct Hashed {
    seq: u64,
    chunks: Vec<ChunkPlan>,
    buf: AlignedBuf,
    sums: Vec<Option<[u8; 32]>>,
}

/// Read the chunks of one frame job and hash every non-zero chunk.
#[allow(clippy::type_complexity)]
fn read_frame(src: &dyn ReadAt, chunks: &[ChunkPlan], cs: u64, keys: Option<&Keys>, region_id: u32) -> Result<(AlignedBuf, Vec<Option<[u8; 32]>>), ImageError> {
    // Aligned, so reads from a raw disk (Windows, O_DIRECT) need no bounce copy.
    let mut buf = AlignedBuf::new(chunks.len() * cs as usize, BUFFER_ALIGN);
    // Coalesce pieces that are adjacent both on disk and in the buffer.
    let mut runs: Vec<(u64, usize, usize)> = Vec::new(); // (disk, buf, len)
    for (ci, c) in chunks.iter().enumerate().filter(|(_, c)| c.known.is_none()) {
        for p in &c.pieces {
            let bo = ci * cs as usize + (p.start - c.chunk * cs) as usize;
            match runs.last_mut() {
                Some((d, b, l)) if *d + *l as u64 == p.start && *b + *l == bo => *l += p.len as usize,
                _ => runs.push((p.start, bo, p.len as usize)),
            }
        }
    }
    for (d, b, l) in runs {
        src.read_exact_at(&mut buf[b..b + l], d).map_err(|e| ImageError::Invalid(format!("reading source at byte {d} of region {region_id}: {e}")))?;
    }
    let sums = chunks
        .iter()
        .enumerate()
        .map(|(i, c)| match c.known {
            Some(Known::Zero) => None,
            Some(Known::Base { hash, .. }) => Some(hash),
            None => {
                let data = &buf[i * cs as usize..i * cs as usize + c.len as usize];
                (!is_zero(data)).then(|| crypto::chunk_hash(keys, data))
            }
        })
        .collect();
    Ok((buf, sums))
}

/// Hint the source about the bytes a batch will read, merging pieces that
/// lie close together into one request.
fn prefetch_batch(src: &dyn ReadAt, batch: &[Vec<ChunkPlan>]) {
    const MERGE_GAP: u64 = 64 << 10;
    let mut run: Option<(u64, u64)> = None;
    for p in batch.iter().flatten().filter(|c| c.known.is_none()).flat_map(|c| c.pieces.iter()) {
        let end = p.start + u64::from(p.len);
        run = match run {
            Some((s, e)) if p.start >= s && p.start <= e + MERGE_GAP => Some((s, e.max(end))),
            Some((s, e)) => {
                src.prefetch(s, e - s);
                Some((p.start, end))
            }
            None => Some((p.start, end)),
        };
    }
    if let Some((s, e)) = run {
        src.prefetch(s, e - s);
    }
}

fn is_zero(b: &[u8]) -> bool {
    b.chunks(512).all(|c| c.iter().fold(0u8, |a, &x| a | x) == 0)
}

/// Writes one image.
pub struct ImageWriter {
    vol: VolumeWriter,
    header: Header,
    keys: Option<Keys>,
    opts: WriterOptions,
    regions: Vec<Region>,
    /// Where each remembered chunk is stored (writer side).
    dedup: std::collections::HashMap<DedupKey, (FrameRef, u32)>,
    /// Which chunks the reader decided to remember (reader side); shared
    /// across regions so a partition copy in another partition dedups too.
    seen: std::collections::HashSet<DedupKey>,
    /// The journal of an image written to a share (for `--resume`).
    keeper: Option<resume::Keeper>,
    /// What a resumed backup had done before it was cut off.
    replay: Option<resume::Replay>,
    resumed_from: Option<u64>,
}

/// Stored bytes after which a backup to a share writes its index so far
/// and a checkpoint: at most this much is written again after a cut.
const CHECKPOINT_BYTES: u64 = 64 << 20;

/// The unchanged chunks of a region in the chain's base point, walked in
/// chunk order alongside the new backup (one index segment in memory).
struct BaseCursor<'a> {
    reader: &'a ImageReader,
    region: &'a Region,
    next_seg: usize,
    seg: Option<Segment>,
    pos: usize,
}

impl<'a> BaseCursor<'a> {
    fn new(reader: &'a ImageReader, region: &'a Region) -> Self {
        Self { reader, region, next_seg: 0, seg: None, pos: 0 }
    }

    /// The base's frame and offset for `chunk` when its hash is `hash`.
    fn find(&mut self, chunk: u64, hash: &[u8; 32]) -> Result<Option<(FrameRef, u32)>, ImageError> {
        Ok(match self.lookup(chunk)? {
            Some(Known::Base { frame, offset_in_frame, hash: h }) if &h == hash => Some((frame, offset_in_frame)),
            _ => None,
        })
    }

    /// What the base holds for `chunk` (None: nothing, the chunk was not
    /// used there), as a reference from the new point.
    fn lookup(&mut self, chunk: u64) -> Result<Option<Known>, ImageError> {
        loop {
            if let Some(seg) = &self.seg {
                while self.pos < seg.entries.len() && seg.entries[self.pos].chunk < chunk {
                    self.pos += 1;
                }
                if self.pos < seg.entries.len() {
                    let e = &seg.entries[self.pos];
                    if e.chunk != chunk {
                        return Ok(None);
                    }
                    if e.is_zero() {
                        return Ok(Some(Known::Zero));
                    }
                    let f = *seg.frames.get(e.frame as usize).ok_or_else(|| ImageError::Invalid(format!("chunk {chunk} of the base point names a frame its index lacks")))?;
                    let link = f.link() + 1;
                    if link > MAX_LINKS {
                        return Err(ImageError::Invalid(format!("the backup chain is longer than {MAX_LINKS} points: make a full backup")));
                    }
                    return Ok(Some(Known::Base { frame: f.with_link(link), offset_in_frame: e.offset_in_frame, hash: e.hash }));
                }
            }
            // Next segment that can hold `chunk`.
            let refs = &self.region.segments;
            while self.next_seg < refs.len() && refs[self.next_seg].last_chunk < chunk {
                self.next_seg += 1;
            }
            let Some(r) = refs.get(self.next_seg) else { return Ok(None) };
            if r.first_chunk > chunk {
                return Ok(None);
            }
            self.seg = Some(self.reader.segment(self.region, r)?);
            self.pos = 0;
            self.next_seg += 1;
        }
    }
}

impl ImageWriter {
    pub fn create(out: Output, opts: WriterOptions) -> Result<Self, ImageError> {
        Self::create_point(out, opts, None)
    }

    /// Create an image; with `base`, a point of `base`'s chain: it shares the
    /// base's keys (salt and KDF parameters), chunk size and encryption, so
    /// its chunks compare with the base's (the password comes from the open base).
    pub fn create_point(out: Output, mut opts: WriterOptions, base: Option<&ImageReader>) -> Result<Self, ImageError> {
        if let Some(b) = base {
            opts.chunk_size = b.header().chunk_size;
            opts.kdf = KdfParams { m_kib: b.header().kdf_m_kib, t: b.header().kdf_t, p: b.header().kdf_p };
        }
        if !opts.chunk_size.is_power_of_two() || !(4096..=(1 << 22)).contains(&opts.chunk_size) {
            return Err(ImageError::Invalid(format!("chunk size {} must be a power of two from 4 KiB to 4 MiB", opts.chunk_size)));
        }
        if opts.resume {
            return Self::resume(out, opts, base);
        }
        let image_id: [u8; 16] = crypto::random();
        let (salt, keys) = match base {
            Some(b) => (b.header().salt, b.keys().cloned()),
            None => {
                let salt: [u8; 32] = crypto::random();
                let keys = match &opts.password {
                    Some(p) => Some(Keys::derive(p, &salt, opts.kdf).map_err(|e| ImageError::Invalid(e.to_string()))?),
                    None => None,
                };
                (salt, keys)
            }
        };
        let header = Header {
            image_id,
            created: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
            chunk_size: opts.chunk_size,
            flags: if keys.is_some() { FLAG_ENCRYPTED } else { 0 },
            kdf_m_kib: opts.kdf.m_kib,
            kdf_t: opts.kdf.t,
            kdf_p: opts.kdf.p,
            salt: if keys.is_some() { salt } else { [0; 32] },
            key_check: keys.as_ref().map(|k| k.key_check(&image_id)).unwrap_or([0; 32]),
        };
        let mut vol = VolumeWriter::create(out, opts.split, image_id)?;
        vol.write_all(&header.encode())?;
        let keeper = vol.journaled().map(|fin| resume::Keeper {
            path: super::volume::journal_name(fin),
            journal: resume::Journal::new(hex(&image_id), 0),
        });
        let mut w = Self { vol, header, keys, opts, regions: Vec::new(), dedup: Default::default(), seen: Default::default(), keeper, replay: None, resumed_from: None };
        // The first checkpoint (the header) also replaces a journal left by an earlier cut-off backup.
        w.checkpoint(None)?;
        Ok(w)
    }

    /// Go on with an interrupted backup to a share (see [`resume`]).
    fn resume(out: Output, opts: WriterOptions, base: Option<&ImageReader>) -> Result<Self, ImageError> {
        let Output::Path(fin) = out else {
            return Err(ImageError::Resume("a backup to stdout cannot be resumed".into()));
        };
        if opts.split.is_some() {
            return Err(ImageError::Resume("a split backup cannot be resumed".into()));
        }
        if !crate::store::is_remote(&fin) {
            return Err(ImageError::Resume(format!(
                "{}: only a backup to a share is resumed (a local backup that stops removes its partial file)",
                fin.display()
            )));
        }
        let r = resume::open(&fin, opts.password.as_deref(), base.map(|b| (b.header(), b.keys())))?;
        if r.header.chunk_size != opts.chunk_size && base.is_some() {
            return Err(ImageError::Resume("the interrupted backup has another chunk size than its chain's base point".into()));
        }
        let mut opts = opts;
        opts.chunk_size = r.header.chunk_size;
        opts.kdf = KdfParams { m_kib: r.header.kdf_m_kib, t: r.header.kdf_t, p: r.header.kdf_p };
        let vol = VolumeWriter::reopen(fin.clone(), r.header.image_id, r.journal.position)?;
        let keeper = resume::Keeper {
            path: super::volume::journal_name(&fin),
            journal: resume::Journal::new(r.journal.image_id.clone(), r.journal.position),
        };
        let replay = resume::Replay { done: r.journal.done.into(), current: r.journal.current };
        tracing::info!(file = %fin.display(), at = r.journal.position, "resuming the interrupted backup");
        Ok(Self {
            vol,
            header: r.header,
            keys: r.keys,
            opts,
            regions: Vec::new(),
            dedup: Default::default(),
            seen: Default::default(),
            keeper: Some(keeper),
            replay: Some(replay),
            resumed_from: Some(r.journal.position),
        })
    }

    /// The image on a share this writer journals (so that a cut-off backup
    /// can be resumed).
    pub fn resumable(&self) -> Option<&std::path::Path> {
        self.keeper.as_ref().and(self.vol.journaled())
    }

    /// Bytes of the image already on the share when a backup was resumed.
    pub fn resumed_from(&self) -> Option<u64> {
        self.resumed_from
    }

    /// Read the sampled chunks of a region from the source again: a resumed
    /// backup must read the disk it was reading before the cut.
    fn check_sample(&self, src: &dyn ReadAt, extents: &[Extent], region_len: u64, region_id: u32, sample: &resume::Sample) -> Result<(), ImageError> {
        let cs = u64::from(self.opts.chunk_size);
        for (chunk, want) in sample {
            let plan = chunk_plans(extents, region_len, cs, *chunk).next().filter(|p| p.chunk == *chunk);
            let same = match plan {
                Some(p) => read_frame(src, std::slice::from_ref(&p), cs, self.keys.as_ref(), region_id)?.1[0].is_some_and(|h| hex(&h) == *want),
                None => false,
            };
            if !same {
                return Err(ImageError::Resume(format!(
                    "chunk {chunk} of region {region_id} is not what was backed up before the cut: the source changed, or it is another disk"
                )));
            }
        }
        Ok(())
    }

    /// Record how far the image is complete (a backup to a share only).
    fn checkpoint(&mut self, current: Option<resume::CurrentRegion>) -> Result<(), ImageError> {
        let Some(k) = self.keeper.as_mut() else { return Ok(()) };
        self.vol.flush()?;
        k.journal.position = self.vol.position();
        k.journal.current = current;
        k.save()
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    pub fn options(&self) -> &WriterOptions {
        &self.opts
    }

    /// Compress, encrypt and write a record (index segment or catalog);
    /// returns (offset, stored length, hash of stored bytes).
    fn write_record(&mut self, plain: &[u8]) -> Result<(u64, u64, [u8; 32]), ImageError> {
        let z = zstd::bulk::compress(plain, 3).map_err(|e| ImageError::Invalid(format!("zstd: {e}")))?;
        let stored = match &self.keys {
            Some(k) => k.seal(&z),
            None => z,
        };
        let off = self.vol.position();
        self.vol.write_all(&stored)?;
        Ok((off, stored.len() as u64, *blake3::hash(&stored).as_bytes()))
    }

    /// Store one region. `src` reads the region (offset 0 = region start);
    /// `extents` (normalized, region-relative) are the bytes to keep, the rest
    /// is stored as zero. Fills in the region's statistics and index.
    pub fn add_region(&mut self, src: &dyn ReadAt, region: Region, extents: &[Extent], task: &Task) -> Result<RegionStats, ImageError> {
        self.add_region_on(src, region, extents, None, &[], task)
    }

    /// Like [`add_region`](Self::add_region); with `base` (the chain's base
    /// point and its copy of this region), chunks whose hash equals the
    /// base's chunk at the same place are referenced there, not stored: the
    /// region is read and hashed, but only changed chunks are compressed and
    /// written. Chunks wholly inside `unchanged` (region-relative ranges the
    /// filesystem's records show unchanged since the base, sorted and
    /// merged: [`crate::unchanged`]) are referenced without being read.
    pub fn add_region_on(
        &mut self,
        src: &dyn ReadAt,
        mut region: Region,
        extents: &[Extent],
        base: Option<(&ImageReader, &Region)>,
        unchanged: &[Extent],
        task: &Task,
    ) -> Result<RegionStats, ImageError> {
        region.id = self.regions.len() as u32;
        let fingerprint = resume::fingerprint(&region, extents);
        let changed = || ImageError::Resume("the source is not what it was when the backup was cut off (its partitions or used blocks differ)".into());
        // A resumed backup: regions finished before the cut are taken as they are.
        let mut start: Option<resume::CurrentRegion> = None;
        if let Some(replay) = self.replay.as_mut() {
            if let Some(d) = replay.done.pop_front() {
                if d.fingerprint != fingerprint {
                    return Err(changed());
                }
                self.check_sample(src, extents, region.len, region.id, &d.sample)?;
                let mut r = d.region.clone();
                r.id = region.id;
                let stats = d.stats;
                self.regions.push(r);
                if let Some(k) = self.keeper.as_mut() {
                    k.journal.done.push(d);
                }
                return Ok(stats);
            }
            match replay.current.take() {
                Some(c) if c.fingerprint == fingerprint => {
                    self.check_sample(src, extents, region.len, region.id, &c.sample)?;
                    start = Some(c);
                }
                Some(_) => return Err(changed()),
                None => {}
            }
        }
        let first_chunk = start.as_ref().map_or(0, |c| c.next_chunk);
        let journaled = self.keeper.is_some();
        let cs = u64::from(self.opts.chunk_size);
        let per_frame = (FRAME_TARGET as u64 / cs).max(1) as usize;
        let threads = self.opts.threads.max(1);
        let level = self.opts.compression.zstd_level();
        let keys = self.keys.clone().map(Arc::new);
        let region_len = region.len;
        let region_id = region.id;
        let used_total = crate::extent::total(extents);
        task.progress.begin(&region_label(&region), used_total);
        if let Some(c) = &start {
            task.progress.advance(c.stats.used_bytes);
        }

        let (job_tx, job_rx) = bounded::<Result<FrameJob, ImageError>>(threads * 2);
        let (out_tx, out_rx) = bounded::<Result<FrameOut, ImageError>>(threads * 2);
        let mut stats = start.as_ref().map(|c| c.stats).unwrap_or_default();
        let mut segment = Segment { region: region_id, ..Default::default() };
        let (mut segs, mut sample) = start.map(|c| (c.segments, c.sample)).unwrap_or_default();
        // Stored bytes since the last index segment was written.
        let mut unindexed = 0u64;

        let result: Result<(), ImageError> = std::thread::scope(|s| {
            // Planner: cuts the region into frame jobs, in order, and hints
            // the source about the bytes the jobs a batch ahead will read.
            let (plan_tx, plan_rx) = bounded::<(u64, Vec<ChunkPlan>)>(threads * 4);
            // At most `window` frames between planner and decider, so a slow
            // read (a disk retrying a sector) cannot let the others run ahead
            // and fill memory while the decider waits for that frame.
            let window = threads * 8;
            let (token_tx, token_rx) = bounded::<()>(window);
            for _ in 0..window {
                let _ = token_tx.send(());
            }
            let task_p = task.clone();
            // Chunks the base holds unchanged are looked up here, in chunk
            // order, so the readers skip them; a failed lookup only means
            // the chunk is read after all.
            let mut known = base.filter(|_| !unchanged.is_empty()).map(|(r, reg)| (BaseCursor::new(r, reg), 0usize));
            s.spawn(move || {
                let mut plans = chunk_plans(extents, region_len, cs, first_chunk)
                    .map(|mut c| {
                        if let Some((cursor, at)) = known.as_mut() {
                            let start = c.chunk * cs;
                            if crate::unchanged::covers(unchanged, at, start, start + u64::from(c.len)) {
                                c.known = cursor.lookup(c.chunk).ok().flatten();
                            }
                        }
                        c
                    })
                    .peekable();
                let batch_jobs = threads * 4;
                let mut take_batch = || -> Vec<Vec<ChunkPlan>> {
                    (0..batch_jobs)
                        .map_while(|_| {
                            let c: Vec<ChunkPlan> = plans.by_ref().take(per_frame).collect();
                            (!c.is_empty()).then_some(c)
                        })
                        .collect()
                };
                let mut next = take_batch();
                prefetch_batch(src, &next);
                let mut seq = 0u64;
                while !next.is_empty() {
                    if task_p.check_cancelled().is_err() {
                        return;
                    }
                    let batch = std::mem::replace(&mut next, take_batch());
                    prefetch_batch(src, &next);
                    for chunks in batch {
                        if token_rx.recv().is_err() || plan_tx.send((seq, chunks)).is_err() {
                            return;
                        }
                        seq += 1;
                    }
                }
            });
            // Hashers: read, test for zeros and hash on all cores; while one
            // waits for the disk the others hash. A source read past the
            // page cache has no read-ahead: as many hashers as it wants
            // reads in flight then (they wait for the disk, not the CPU).
            let readers = threads.max(src.reads_in_flight());
            let (hashed_tx, hashed_rx) = bounded::<Result<Hashed, ImageError>>(readers * 4);
            for _ in 0..readers {
                let plan_rx = plan_rx.clone();
                let hashed_tx = hashed_tx.clone();
                let keys = keys.clone();
                s.spawn(move || {
                    for (seq, chunks) in plan_rx.iter() {
                        let r = read_frame(src, &chunks, cs, keys.as_deref(), region_id).map(|(buf, sums)| Hashed { seq, chunks, buf, sums });
                        let stop = r.is_err();
                        if hashed_tx.send(r).is_err() || stop {
                            return;
                        }
                    }
                });
            }
            drop(plan_rx);
            drop(hashed_tx);
            // Decider: the decisions that need order (unchanged since the
            // base, duplicate, new), frame by frame in sequence, so workers
            // only compress what is new.
            let task_r = task.clone();
            let mut seen = std::mem::take(&mut self.seen);
            let mut base = base.map(|(r, reg)| BaseCursor::new(r, reg));
            let reader = s.spawn(move || {
                let mut pending: BTreeMap<u64, Hashed> = BTreeMap::new();
                let mut want = 0u64;
                for r in hashed_rx.iter() {
                    if let Err(e) = task_r.check_cancelled() {
                        let _ = job_tx.send(Err(e.into()));
                        return seen;
                    }
                    match r {
                        Ok(h) => {
                            pending.insert(h.seq, h);
                        }
                        Err(e) => {
                            let _ = job_tx.send(Err(e));
                            return seen;
                        }
                    }
                    while let Some(Hashed { seq, chunks, buf, sums }) = pending.remove(&want) {
                        want += 1;
                        let _ = token_tx.send(());
                        let mut kinds = Vec::with_capacity(chunks.len());
                        let mut hashes = Vec::with_capacity(chunks.len());
                        for (c, sum) in chunks.iter().zip(sums) {
                            if let Some(Known::Base { frame, offset_in_frame, hash }) = c.known {
                                kinds.push(ChunkKind::Base { frame, offset_in_frame });
                                hashes.push(hash);
                                continue;
                            }
                            let Some(h) = sum else {
                                kinds.push(ChunkKind::Zero);
                                hashes.push([0; 32]);
                                continue;
                            };
                            let k = dedup_key(&h);
                            let in_base = match base.as_mut().map(|b| b.find(c.chunk, &h)) {
                                Some(Ok(x)) => x,
                                Some(Err(e)) => {
                                    let _ = job_tx.send(Err(e));
                                    return seen;
                                }
                                None => None,
                            };
                            if let Some((frame, offset_in_frame)) = in_base {
                                kinds.push(ChunkKind::Base { frame, offset_in_frame });
                            } else if seen.contains(&k) {
                                kinds.push(ChunkKind::Dup);
                            } else {
                                let register = seen.len() < DEDUP_CAPACITY;
                                if register {
                                    seen.insert(k);
                                }
                                kinds.push(ChunkKind::Unique { register });
                            }
                            hashes.push(h);
                        }
                        if job_tx.send(Ok(FrameJob { seq, chunks, kinds, hashes, buf })).is_err() {
                            return seen;
                        }
                    }
                }
                if let Err(e) = task_r.check_cancelled() {
                    let _ = job_tx.send(Err(e.into()));
                }
                seen
            });
            // Workers.
            for _ in 0..threads {
                let job_rx = job_rx.clone();
                let out_tx = out_tx.clone();
                let keys = keys.clone();
                s.spawn(move || {
                    let mut comp = match level.map(zstd::bulk::Compressor::new).transpose() {
                        Ok(c) => c,
                        Err(e) => {
                            let _ = out_tx.send(Err(ImageError::Invalid(format!("zstd: {e}"))));
                            return;
                        }
                    };
                    for job in job_rx.iter() {
                        let r = job.and_then(|j| encode_frame(j, cs, comp.as_mut(), keys.as_deref()));
                        if out_tx.send(r).is_err() {
                            return;
                        }
                    }
                });
            }
            drop(job_rx);
            drop(out_tx);
            // Ordered writer (this thread). It owns the receiver, so when a
            // write fails (a full disk, a share gone) and it returns early,
            // the workers' sends fail and every thread ends; borrowed from
            // outside the scope, it kept them blocked and the scope waited
            // for them forever.
            let out_rx = out_rx;
            let mut pending: BTreeMap<u64, FrameOut> = BTreeMap::new();
            let mut next = 0u64;
            for r in out_rx.iter() {
                let f = r?;
                pending.insert(f.seq, f);
                while let Some(f) = pending.remove(&next) {
                    next += 1;
                    task.progress.advance(f.used);
                    stats.used_bytes += f.used;
                    stats.unread_bytes += f.unread;
                    let frame_idx = segment.frames.len() as u32;
                    if f.raw_len > 0 {
                        let off = self.vol.position();
                        self.vol.write_all(&f.stored)?;
                        stats.stored_bytes += f.stored.len() as u64;
                        unindexed += f.stored.len() as u64;
                        segment.frames.push(FrameRef {
                            offset: off,
                            stored_len: f.stored.len() as u32,
                            raw_len: f.raw_len,
                            flags: f.flags,
                            hash: *blake3::hash(&f.stored).as_bytes(),
                        });
                    }
                    // Remember where new chunks went before resolving
                    // duplicates (a duplicate may sit in the same frame).
                    let this_frame = segment.frames.last().copied().filter(|_| f.raw_len > 0);
                    for c in &f.chunks {
                        if let (ChunkKind::Unique { register: true }, Some(fr)) = (c.kind, this_frame) {
                            self.dedup.insert(dedup_key(&c.hash), (fr, c.offset_in_frame));
                        }
                    }
                    for c in f.chunks {
                        stats.chunks += 1;
                        let (frame, offset_in_frame, flags) = match c.kind {
                            ChunkKind::Zero => {
                                stats.zero_chunks += 1;
                                (u32::MAX, 0, ENTRY_ZERO)
                            }
                            ChunkKind::Unique { .. } => (frame_idx, c.offset_in_frame, 0),
                            ChunkKind::Dup => {
                                stats.dup_chunks += 1;
                                let (fr, off) = *self.dedup.get(&dedup_key(&c.hash)).ok_or_else(|| {
                                    ImageError::Invalid(format!("internal: duplicate chunk {} has no original", c.chunk))
                                })?;
                                (frame_index(&mut segment, fr), off, 0)
                            }
                            ChunkKind::Base { frame, offset_in_frame } => {
                                stats.base_chunks += 1;
                                (frame_index(&mut segment, frame), offset_in_frame, 0)
                            }
                        };
                        segment.entries.push(Entry { chunk: c.chunk, frame, offset_in_frame, len: c.len, flags, hash: c.hash });
                    }
                    if segment.entries.len() >= SEGMENT_ENTRIES || (journaled && unindexed >= CHECKPOINT_BYTES) {
                        let full = std::mem::replace(&mut segment, Segment { region: region_id, ..Default::default() });
                        segs.push(self.write_segment(&full)?);
                        unindexed = 0;
                        if journaled {
                            resume::add_sample(&mut sample, &full.entries);
                            let next_chunk = full.entries.last().map_or(first_chunk, |e| e.chunk + 1);
                            let current = resume::CurrentRegion { fingerprint: fingerprint.clone(), sample: sample.clone(), next_chunk, segments: segs.clone(), stats };
                            self.checkpoint(Some(current))?;
                        }
                    }
                }
            }
            self.seen = reader.join().map_err(|_| ImageError::Invalid("the backup reader thread panicked".into()))?;
            task.check_cancelled()?;
            Ok(())
        });
        result?;
        if !segment.entries.is_empty() {
            segs.push(self.write_segment(&segment)?);
            if journaled {
                resume::add_sample(&mut sample, &segment.entries);
            }
        }
        task.progress.finish();
        region.used_bytes = stats.used_bytes;
        region.stored_bytes = stats.stored_bytes;
        region.chunks = stats.chunks;
        region.zero_chunks = stats.zero_chunks;
        region.base_chunks = stats.base_chunks;
        region.segments = segs;
        if let Some(k) = self.keeper.as_mut() {
            k.journal.done.push(resume::DoneRegion { fingerprint, region: region.clone(), stats, sample });
        }
        self.regions.push(region);
        self.checkpoint(None)?;
        Ok(stats)
    }

    fn write_segment(&mut self, seg: &Segment) -> Result<SegmentRef, ImageError> {
        let (offset, stored_len, hash) = self.write_record(&seg.encode())?;
        Ok(SegmentRef {
            offset,
            stored_len,
            hash: hex(&hash),
            first_chunk: seg.entries.first().map(|e| e.chunk).unwrap_or(0),
            last_chunk: seg.entries.last().map(|e| e.chunk).unwrap_or(0),
            entries: seg.entries.len() as u32,
        })
    }

    /// Write the catalog and the footer, sync, and give the volumes their final
    /// names. `catalog.regions`, ids, header binding and options are filled in here.
    pub fn finish(mut self, mut catalog: Catalog) -> Result<(Vec<std::path::PathBuf>, Catalog), ImageError> {
        if self.replay.as_ref().is_some_and(|r| !r.done.is_empty() || r.current.is_some()) {
            return Err(ImageError::Resume("the source has fewer regions than when the backup was cut off".into()));
        }
        catalog.format_version = FORMAT_VERSION;
        catalog.image_id = hex(&self.header.image_id);
        catalog.header_hash = self.header.digest();
        catalog.created = self.header.created;
        catalog.regions = std::mem::take(&mut self.regions);
        catalog.options.compression = self.opts.compression;
        catalog.options.encrypted = self.keys.is_some();
        catalog.options.chunk_size = self.opts.chunk_size;
        catalog.options.split_size = self.opts.split;
        let json = serde_json::to_vec(&catalog).map_err(|e| ImageError::Invalid(format!("catalog: {e}")))?;
        let (catalog_offset, catalog_len, catalog_hash) = self.write_record(&json)?;
        let footer_pos = self.vol.position();
        let mut footer = Footer {
            volume_count: 0,
            catalog_offset,
            catalog_len,
            logical_len: footer_pos + FOOTER_LEN as u64,
            catalog_hash,
        };
        // The footer may itself start a new volume; count volumes after writing
        // a placeholder-free footer: compute where it lands first.
        footer.volume_count = volumes_after(self.vol.volume_count(), self.opts.split, footer_pos);
        self.vol.write_all(&footer.encode())?;
        debug_assert_eq!(self.vol.volume_count(), footer.volume_count);
        let paths = self.vol.finish()?;
        Ok((paths, catalog))
    }
}

/// How many volumes the set has once `FOOTER_LEN` more bytes are written at
/// logical position `pos`.
fn volumes_after(current: u32, split: Option<u64>, pos: u64) -> u32 {
    match split {
        None => 1,
        Some(s) => {
            let per = s - VOLUME_HEADER_LEN as u64;
            let end = pos + FOOTER_LEN as u64;
            (end.div_ceil(per) as u32).max(current)
        }
    }
}

fn region_label(r: &Region) -> String {
    match (r.kind, r.partition) {
        (RegionKind::Partition, Some(n)) => format!("partition {n}"),
        (RegionKind::Head, _) => "partition table and boot area".into(),
        (RegionKind::Gap, _) => format!("gap at byte {}", r.disk_offset),
        (RegionKind::Disk, _) => "whole disk".into(),
        _ => format!("region {}", r.id),
    }
}

fn encode_frame(job: FrameJob, cs: u64, comp: Option<&mut zstd::bulk::Compressor<'static>>, keys: Option<&Keys>) -> Result<FrameOut, ImageError> {
    let mut plain = Vec::with_capacity(job.buf.len());
    let mut chunks = Vec::with_capacity(job.chunks.len());
    let mut used = 0u64;
    let mut unread = 0u64;
    for (i, c) in job.chunks.iter().enumerate() {
        let n = c.pieces.iter().map(|p| p.len).sum::<u64>();
        used += n;
        if c.known.is_some() {
            unread += n;
        }
        let kind = job.kinds[i];
        let mut out = ChunkOut { chunk: c.chunk, offset_in_frame: 0, len: c.len, kind, hash: job.hashes[i] };
        if let ChunkKind::Unique { .. } = kind {
            out.offset_in_frame = plain.len() as u32;
            plain.extend_from_slice(&job.buf[i * cs as usize..i * cs as usize + c.len as usize]);
        }
        chunks.push(out);
    }
    let raw_len = plain.len() as u32;
    if plain.is_empty() {
        return Ok(FrameOut { seq: job.seq, stored: Vec::new(), raw_len: 0, flags: 0, chunks, used, unread });
    }
    let (payload, flags) = match comp {
        Some(c) => {
            let z = c.compress(&plain).map_err(|e| ImageError::Invalid(format!("zstd: {e}")))?;
            if z.len() < plain.len() {
                (z, FRAME_COMPRESSED)
            } else {
                (plain, 0)
            }
        }
        None => (plain, 0),
    };
    let stored = match keys {
        Some(k) => k.seal(&payload),
        None => payload,
    };
    Ok(FrameOut { seq: job.seq, stored, raw_len, flags, chunks, used, unread })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunk_plans_cover_extents() {
        let ex = vec![Extent::new(100, 50), Extent::new(16384 * 2 - 10, 30), Extent::new(16384 * 5, 16384 * 2 + 5)];
        let plans: Vec<_> = chunk_plans(&ex, 16384 * 7 + 100, 16384, 0).collect();
        let ks: Vec<u64> = plans.iter().map(|p| p.chunk).collect();
        assert_eq!(ks, vec![0, 1, 2, 5, 6, 7]);
        assert_eq!(plans[1].pieces, vec![Extent::new(16384 * 2 - 10, 10)]);
        assert_eq!(plans[2].pieces, vec![Extent::new(16384 * 2, 20)]);
        assert_eq!(plans[5].len, 100);
        assert_eq!(plans[5].pieces, vec![Extent::new(16384 * 7, 5)]);
        let covered: u64 = plans.iter().flat_map(|p| p.pieces.iter()).map(|e| e.len).sum();
        assert_eq!(covered, crate::extent::total(&ex));
    }

    #[test]
    fn volume_count_for_footer() {
        let s = 50 << 20;
        let per = s - 64;
        assert_eq!(volumes_after(1, Some(s), 10), 1);
        assert_eq!(volumes_after(1, Some(s), per - 10), 2);
        assert_eq!(volumes_after(1, Some(s), per - 128), 1);
        assert_eq!(volumes_after(3, None, 5), 1);
    }
}
