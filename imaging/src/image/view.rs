//! Random access to one region (a partition) of an image, for reading files
//! out of it without restoring it.
//!
//! Reads go chunk by chunk through the region's index: chunks the image does
//! not hold (blocks the filesystem did not use) read as zeros, exactly what a
//! restore would leave there. A few index segments and decoded frames are kept
//! (least recently used first out), so walking a directory tree does not
//! decode the same frame again for every inode. Every chunk is checked against
//! its hash the first time its bytes are used: a damaged image gives an
//! [`ImageError`] naming the chunk, never wrong file contents.

use std::io;
use std::sync::Mutex;

use super::format::{Entry, Region, Segment};
use super::reader::ImageReader;
use super::ImageError;
use crate::read_at::ReadAt;

/// Decoded frames kept in memory (frames are up to a few MiB each).
const FRAMES: usize = 8;
/// Decoded index segments kept in memory.
const SEGMENTS: usize = 4;

/// A [`ReadAt`] over one region of an image (offsets relative to the region).
///
/// I/O errors carry the [`ImageError`] inside: get it back with
/// [`image_error`].
pub struct RegionView<'a> {
    reader: &'a ImageReader,
    region: &'a Region,
    state: Mutex<State>,
}

struct Frame {
    key: (usize, u64),
    plain: crate::blockdev::aligned::AlignedBuf,
    /// Offsets in the frame of the chunks already checked against their hash.
    verified: Vec<u32>,
}

#[derive(Default)]
struct State {
    /// (index into `region.segments`, decoded segment), most recent last.
    segments: Vec<(usize, Segment)>,
    /// Most recent last.
    frames: Vec<Frame>,
    dec: Option<zstd::bulk::Decompressor<'static>>,
}

impl<'a> RegionView<'a> {
    pub fn new(reader: &'a ImageReader, region: &'a Region) -> Self {
        Self { reader, region, state: Mutex::new(State::default()) }
    }

    /// Region-relative byte ranges of every chunk the index lists (zero
    /// chunks included: a restore writes them), merged.
    pub fn extents(&self) -> Result<Vec<crate::extent::Extent>, ImageError> {
        let cs = u64::from(self.reader.header().chunk_size);
        let mut out: Vec<crate::extent::Extent> = Vec::new();
        for r in &self.region.segments {
            let seg = self.reader.segment(self.region, r)?;
            for e in &seg.entries {
                let start = e.chunk * cs;
                match out.last_mut() {
                    Some(x) if x.end() == start => x.len += u64::from(e.len),
                    _ => out.push(crate::extent::Extent::new(start, u64::from(e.len))),
                }
            }
        }
        Ok(out)
    }

    pub fn region(&self) -> &Region {
        self.region
    }

    pub fn len(&self) -> u64 {
        self.region.len
    }

    pub fn is_empty(&self) -> bool {
        self.region.len == 0
    }

    /// The index entry of chunk `k`, or None when the image holds no chunk there.
    fn entry(&self, st: &mut State, k: u64) -> Result<Option<(Entry, super::format::FrameRef)>, ImageError> {
        let refs = &self.region.segments;
        let Some(i) = refs.iter().position(|r| r.first_chunk <= k && k <= r.last_chunk) else {
            return Ok(None);
        };
        let pos = match st.segments.iter().position(|(j, _)| *j == i) {
            Some(p) => p,
            None => {
                let seg = self.reader.segment(self.region, &refs[i])?;
                if st.segments.len() >= SEGMENTS {
                    st.segments.remove(0);
                }
                st.segments.push((i, seg));
                st.segments.len() - 1
            }
        };
        let item = st.segments.remove(pos);
        st.segments.push(item);
        let seg = &st.segments[st.segments.len() - 1].1;
        let Ok(p) = seg.entries.binary_search_by_key(&k, |e| e.chunk) else {
            return Ok(None);
        };
        let e = seg.entries[p];
        if e.is_zero() {
            return Ok(Some((e, super::format::FrameRef { offset: 0, stored_len: 0, raw_len: 0, flags: 0, hash: [0; 32] })));
        }
        let f = *seg.frames.get(e.frame as usize).ok_or_else(|| ImageError::BadChunk {
            region: self.region.id,
            chunk: k,
            disk_offset: self.region.disk_offset + k * u64::from(self.reader.header().chunk_size),
            what: "chunk names a frame the index lacks".into(),
        })?;
        Ok(Some((e, f)))
    }

    /// Copy bytes `[within, within + out.len())` of chunk `k` into `out`.
    fn chunk(&self, st: &mut State, k: u64, out: &mut [u8], within: usize) -> Result<(), ImageError> {
        let Some((e, f)) = self.entry(st, k)? else {
            out.fill(0);
            return Ok(());
        };
        if e.is_zero() {
            out.fill(0);
            return Ok(());
        }
        let key = (f.link(), f.offset);
        let pos = match st.frames.iter().position(|fr| fr.key == key) {
            Some(p) => p,
            None => {
                if st.dec.is_none() {
                    st.dec = Some(zstd::bulk::Decompressor::new().map_err(|e| ImageError::Invalid(format!("zstd: {e}")))?);
                }
                let dec = st.dec.as_mut().ok_or_else(|| ImageError::Invalid("zstd".into()))?;
                let plain = self.reader.load_frame(&f, dec)?;
                if st.frames.len() >= FRAMES {
                    st.frames.remove(0);
                }
                st.frames.push(Frame { key, plain, verified: Vec::new() });
                st.frames.len() - 1
            }
        };
        let mut fr = st.frames.remove(pos);
        let start = e.offset_in_frame as usize;
        let data = if fr.verified.contains(&e.offset_in_frame) {
            fr.plain.get(start..start + e.len as usize)
        } else {
            // On a bad chunk the frame stays out of the cache.
            self.reader.checked_chunk(self.region, &e, &fr.plain)?;
            fr.verified.push(e.offset_in_frame);
            fr.plain.get(start..start + e.len as usize)
        };
        let data = data.unwrap_or_default();
        let n = out.len().min(data.len().saturating_sub(within));
        out[..n].copy_from_slice(&data[within..within + n]);
        out[n..].fill(0);
        st.frames.push(fr);
        Ok(())
    }
}

impl ReadAt for RegionView<'_> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if offset.checked_add(buf.len() as u64).is_none_or(|e| e > self.region.len) {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("read past the end of region {}", self.region.id)));
        }
        let cs = u64::from(self.reader.header().chunk_size);
        let mut st = self.state.lock().map_err(|_| io::Error::other("a reader thread panicked"))?;
        let mut done = 0usize;
        while done < buf.len() {
            let pos = offset + done as u64;
            let k = pos / cs;
            let within = (pos % cs) as usize;
            let n = ((cs as usize) - within).min(buf.len() - done);
            self.chunk(&mut st, k, &mut buf[done..done + n], within).map_err(io::Error::other)?;
            done += n;
        }
        Ok(())
    }
}

/// The image error behind an I/O error from a [`RegionView`], if any.
pub fn image_error(e: io::Error) -> Result<ImageError, io::Error> {
    if !e.get_ref().is_some_and(|i| i.is::<ImageError>()) {
        return Err(e);
    }
    let kind = e.kind();
    match e.into_inner().map(|i| i.downcast::<ImageError>()) {
        Some(Ok(ie)) => Ok(*ie),
        Some(Err(other)) => Err(io::Error::new(kind, other)),
        None => Err(io::Error::from(kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_error_is_passed_through() {
        let e = io::Error::new(io::ErrorKind::UnexpectedEof, "eof");
        assert!(image_error(e).is_err());
        let e = io::Error::other(ImageError::Invalid("x".into()));
        assert!(matches!(image_error(e), Ok(ImageError::Invalid(_))));
    }
}
