//! Resuming a backup to a share that was cut off (`rescue backup --resume`).
//!
//! The image format has no per-frame records: without its index, the bytes
//! of a partial file cannot be told apart. So a backup written to a share
//! keeps a small journal beside its partial file (`NAME.partial.journal`),
//! replaced (write, then rename) at each checkpoint: after an index segment
//! is written (at least every 64 MiB stored) and after each region. It holds
//! the position up to which the partial file is complete, the regions done
//! (with their index), and for the region in progress the segments written
//! and the next chunk to read. Each region is named by a fingerprint of what
//! the plan said about it (place, size, filesystem, used extents), so a
//! resume over a source that changed is refused instead of mixing two disks.
//!
//! On resume the partial file's headers are read back, its key is checked
//! against the password, every journaled index segment is read and its hash
//! compared, and the file is cut back to the journaled position: what
//! follows is written again. Deduplication starts afresh from there (a chunk
//! that repeats one written before the cut is stored again: correct, just
//! not as small).

use std::collections::VecDeque;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::crypto::{KdfParams, Keys};
use super::format::{Header, Region, SegmentRef, VolumeHeader, HEADER_LEN, VOLUME_HEADER_LEN};
use super::writer::RegionStats;
use super::ImageError;
use crate::extent::Extent;
use crate::read_at::ReadAt;
use crate::store;

const JOURNAL_VERSION: u32 = 1;
/// The largest journal read back (thousands of segments fit in far less).
const MAX_JOURNAL: u64 = 64 << 20;

/// Chunks of a region (number, hash) read again on resume: the source must
/// still hold them, or it is another disk or it changed.
pub(crate) type Sample = Vec<(u64, String)>;

/// Chunks sampled per index segment, and kept per region at most.
const SAMPLE_PER_SEGMENT: usize = 4;
const SAMPLE_MAX: usize = 64;

/// Add a few non-zero chunks of `entries` (spread over them) to `sample`.
pub(crate) fn add_sample(sample: &mut Sample, entries: &[super::format::Entry]) {
    let data: Vec<&super::format::Entry> = entries.iter().filter(|e| !e.is_zero()).collect();
    if data.is_empty() {
        return;
    }
    for i in 0..SAMPLE_PER_SEGMENT.min(data.len()) {
        let e = data[i * (data.len() - 1) / (SAMPLE_PER_SEGMENT - 1).max(1)];
        if sample.last().is_none_or(|(c, _)| *c != e.chunk) {
            sample.push((e.chunk, super::format::hex(&e.hash)));
        }
    }
    if sample.len() > SAMPLE_MAX {
        // Keep the first and the latest chunks.
        let cut = sample.len() - SAMPLE_MAX;
        sample.drain(SAMPLE_MAX / 4..SAMPLE_MAX / 4 + cut);
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct DoneRegion {
    pub fingerprint: String,
    pub region: Region,
    pub stats: RegionStats,
    pub sample: Sample,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct CurrentRegion {
    pub fingerprint: String,
    pub sample: Sample,
    /// The first chunk not yet in a written segment.
    pub next_chunk: u64,
    pub segments: Vec<SegmentRef>,
    pub stats: RegionStats,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Journal {
    pub version: u32,
    pub image_id: String,
    /// Logical bytes of the image that are complete in the partial file.
    pub position: u64,
    pub done: Vec<DoneRegion>,
    pub current: Option<CurrentRegion>,
}

impl Journal {
    /// A journal of image `image_id` with nothing done yet.
    pub fn new(image_id: String, position: u64) -> Journal {
        Journal { version: JOURNAL_VERSION, image_id, position, done: Vec::new(), current: None }
    }
}

/// What a resumed writer replays: the regions done, and where the region in
/// progress stopped.
pub(crate) struct Replay {
    pub done: VecDeque<DoneRegion>,
    pub current: Option<CurrentRegion>,
}

/// A journal being kept for a backup to a share.
pub(crate) struct Keeper {
    pub path: PathBuf,
    pub journal: Journal,
}

impl Keeper {
    /// Replace the journal on the share: a new file, renamed over the old.
    pub fn save(&self) -> Result<(), ImageError> {
        let json = serde_json::to_vec(&self.journal).map_err(|e| ImageError::Invalid(format!("journal: {e}")))?;
        let mut tmp = self.path.as_os_str().to_owned();
        tmp.push(".new");
        let tmp = PathBuf::from(tmp);
        let st = store::for_path(&self.path);
        let w = match st.create_new(&tmp) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                st.remove(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
                st.create_new(&tmp)
            }
            r => r,
        };
        let mut w = w.map_err(|e| ImageError::io(&tmp, e))?;
        w.write_all(&json).map_err(|e| ImageError::io(&tmp, e))?;
        w.finish().map_err(|e| ImageError::io(&tmp, e))?;
        st.rename_replace(&tmp, &self.path).map_err(|e| ImageError::io(&self.path, e))
    }
}

/// A region's identity in the plan: where it is, what it is, and the bytes
/// the backup keeps of it.
pub(crate) fn fingerprint(region: &Region, extents: &[Extent]) -> String {
    let mut h = blake3::Hasher::new();
    h.update(&serde_json::to_vec(&(region.kind, region.partition, region.disk_offset, region.len, &region.fs, region.mode)).unwrap_or_default());
    for e in extents {
        h.update(&e.start.to_le_bytes());
        h.update(&e.len.to_le_bytes());
    }
    h.finalize().to_hex().to_string()
}

fn read_all(path: &Path, limit: u64) -> Result<Vec<u8>, ImageError> {
    let f = store::for_path(path).open(path).map_err(|e| ImageError::io(path, e))?;
    let len = f.len().map_err(|e| ImageError::io(path, e))?;
    if len > limit {
        return Err(ImageError::Resume(format!("{} is larger than a journal can be", path.display())));
    }
    let mut b = vec![0u8; len as usize];
    f.read_exact_at(&mut b, 0).map_err(|e| ImageError::io(path, e))?;
    Ok(b)
}

/// What a resumed writer starts from.
pub(crate) struct Resumed {
    pub header: Header,
    pub keys: Option<Keys>,
    pub journal: Journal,
}

/// Check the partial file of the interrupted backup to `fin` against its
/// journal: the same image, the key the password gives (or the chain base's
/// key, `base_keys`), and every journaled index segment intact.
pub(crate) fn open(fin: &Path, password: Option<&[u8]>, base: Option<(&Header, Option<&Keys>)>) -> Result<Resumed, ImageError> {
    let jpath = super::volume::journal_name(fin);
    let partial = super::volume::partial_name(fin);
    let nothing = || {
        ImageError::Resume(format!(
            "no interrupted backup to {} was found (neither {} nor its journal); only a backup to a share that was cut off can be resumed",
            fin.display(),
            partial.display()
        ))
    };
    if !store::for_path(&partial).try_exists(&partial).map_err(|e| ImageError::io(&partial, e))? {
        return Err(nothing());
    }
    let raw = match read_all(&jpath, MAX_JOURNAL) {
        Err(ImageError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            return Err(ImageError::Resume(format!("{} has no journal (it was not written by a backup that can be resumed)", partial.display())))
        }
        r => r?,
    };
    let journal: Journal = serde_json::from_slice(&raw).map_err(|e| ImageError::Resume(format!("{} is damaged: {e}", jpath.display())))?;
    if journal.version != JOURNAL_VERSION {
        return Err(ImageError::Resume(format!("{} was written by another version of rescue", jpath.display())));
    }
    let f = store::for_path(&partial).open(&partial).map_err(|e| ImageError::io(&partial, e))?;
    let len = f.len().map_err(|e| ImageError::io(&partial, e))?;
    let mut head = vec![0u8; VOLUME_HEADER_LEN + HEADER_LEN];
    if len < head.len() as u64 {
        return Err(ImageError::Resume(format!("{} is too short to hold its headers", partial.display())));
    }
    f.read_exact_at(&mut head, 0).map_err(|e| ImageError::io(&partial, e))?;
    let vh = VolumeHeader::decode(&head).map_err(|e| ImageError::Resume(format!("{}: not the start of an image ({e:?})", partial.display())))?;
    let header = Header::decode(&head[VOLUME_HEADER_LEN..]).map_err(|e| ImageError::Resume(format!("{}: not the start of an image ({e:?})", partial.display())))?;
    if vh.image_id != header.image_id || vh.split_size != 0 || vh.index != 0 || super::format::hex(&header.image_id) != journal.image_id {
        return Err(ImageError::Resume(format!("{} and {} belong to different backups", partial.display(), jpath.display())));
    }
    if len < VOLUME_HEADER_LEN as u64 + journal.position {
        return Err(ImageError::Resume(format!(
            "{} holds {len} bytes, fewer than its journal says are complete ({})",
            partial.display(),
            VOLUME_HEADER_LEN as u64 + journal.position
        )));
    }
    let same_options = || ImageError::Resume("the interrupted backup was made with other encryption settings: give the same options as the first time".into());
    let keys = if !header.encrypted() {
        if (password.is_some() && base.is_none()) || base.is_some_and(|(bh, _)| bh.encrypted()) {
            return Err(same_options());
        }
        None
    } else if let Some((bh, bk)) = base {
        if bh.salt != header.salt || !bh.encrypted() {
            return Err(same_options());
        }
        Some(bk.cloned().ok_or(ImageError::PasswordNeeded)?)
    } else {
        let pw = password.ok_or(ImageError::PasswordNeeded)?;
        let k = Keys::derive(pw, &header.salt, KdfParams { m_kib: header.kdf_m_kib, t: header.kdf_t, p: header.kdf_p }).map_err(|e| ImageError::Invalid(e.to_string()))?;
        if k.key_check(&header.image_id) != header.key_check {
            return Err(ImageError::WrongPassword);
        }
        Some(k)
    };
    // Every index segment the journal relies on, read back and hashed.
    let segs = journal.done.iter().flat_map(|d| d.region.segments.iter()).chain(journal.current.iter().flat_map(|c| c.segments.iter()));
    for s in segs {
        if s.offset + s.stored_len > journal.position || s.stored_len > MAX_JOURNAL {
            return Err(ImageError::Resume(format!("{} names an index beyond the complete part of the partial file", jpath.display())));
        }
        let mut b = vec![0u8; s.stored_len as usize];
        f.read_exact_at(&mut b, VOLUME_HEADER_LEN as u64 + s.offset).map_err(|e| ImageError::io(&partial, e))?;
        if super::format::hex(blake3::hash(&b).as_bytes()) != s.hash {
            return Err(ImageError::Resume(format!("the index at byte {} of {} does not match its journal", s.offset, partial.display())));
        }
    }
    Ok(Resumed { header, keys, journal })
}
