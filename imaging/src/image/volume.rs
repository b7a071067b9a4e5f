//! Volume files: a single image file, a split set (`NAME.001`, `NAME.002`, ...)
//! or a stream (stdout), each volume starting with a [`VolumeHeader`].
//!
//! Writers create `*.partial` files and rename them to their final names only
//! after the footer is on disk and synced, never over an existing file, so a
//! half-written backup can never be mistaken for a complete one.

use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};

use super::format::{VolumeHeader, VOLUME_HEADER_LEN};
use super::ImageError;
use crate::read_at::{FileExt, ReadAt};
use crate::blockdev::AlignedBuf;
use crate::store::{self, StoreFile};

/// Smallest split size accepted: smaller volumes make thousands of files.
pub const MIN_SPLIT: u64 = 50 << 20;
const MAX_VOLUMES: u32 = 9999;

/// Name of volume `index` (0-based) of a split set.
pub fn split_name(base: &Path, index: u32) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    if index < 999 {
        s.push(format!(".{:03}", index + 1));
    } else {
        s.push(format!(".{}", index + 1));
    }
    PathBuf::from(s)
}

pub(crate) fn partial_name(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".partial");
    PathBuf::from(s)
}

/// Where a backup to a share records how far its partial file is complete.
pub(crate) fn journal_name(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".partial.journal");
    PathBuf::from(s)
}

enum Sink {
    File { file: BufWriter<File>, tmp: PathBuf, fin: PathBuf },
    /// A file on a share (`smb://`), written through its store.
    Remote { file: BufWriter<Box<dyn store::RemoteWriter>>, tmp: PathBuf, fin: PathBuf },
    Stream(Box<dyn Write + Send>),
}

/// Where an image goes.
pub enum Output {
    Path(PathBuf),
    /// A pipe (never a terminal: the caller checks).
    Stream(Box<dyn Write + Send>),
}

/// Writes the logical stream into one or more volumes.
pub struct VolumeWriter {
    base: Option<PathBuf>,
    split: Option<u64>,
    image_id: [u8; 16],
    sink: Option<Sink>,
    index: u32,
    /// Payload bytes in the current volume.
    in_volume: u64,
    logical: u64,
    done: Vec<(PathBuf, PathBuf)>,
    finished: bool,
    /// A resumed partial file stays when this run fails too (it holds the
    /// work of the run that was cut off).
    keep_on_failure: bool,
}

impl VolumeWriter {
    /// Refuses when any final name already exists (nothing is overwritten).
    pub fn create(out: Output, split: Option<u64>, image_id: [u8; 16]) -> Result<Self, ImageError> {
        if let Some(s) = split {
            if s < MIN_SPLIT {
                return Err(ImageError::Invalid(format!("split size {s} is below the minimum of 50 MiB")));
            }
        }
        let (base, sink) = match out {
            Output::Stream(w) => {
                if split.is_some() {
                    return Err(ImageError::Invalid("a streamed image cannot be split".into()));
                }
                (None, Some(Sink::Stream(w)))
            }
            Output::Path(p) => {
                let first = if split.is_some() { split_name(&p, 0) } else { p.clone() };
                for check in [&p, &first] {
                    if store::for_path(check).try_exists(check).map_err(|e| ImageError::io(check, e))? {
                        return Err(ImageError::Invalid(format!(
                            "{} already exists; choose another name or remove it first",
                            check.display()
                        )));
                    }
                }
                (Some(p), None)
            }
        };
        let mut w = VolumeWriter { base, split, image_id, sink, index: 0, in_volume: 0, logical: 0, done: Vec::new(), finished: false, keep_on_failure: false };
        w.open_volume()?;
        Ok(w)
    }

    /// Go on writing the partial file of an interrupted backup to a share
    /// (one volume) at logical position `at`; what follows is cut off.
    pub(crate) fn reopen(fin: PathBuf, image_id: [u8; 16], at: u64) -> Result<Self, ImageError> {
        if store::exists(&fin) {
            return Err(ImageError::Invalid(format!("{} already exists; choose another name or remove it first", fin.display())));
        }
        let tmp = partial_name(&fin);
        let w = store::for_path(&tmp).open_at(&tmp, VOLUME_HEADER_LEN as u64 + at).map_err(|e| ImageError::io(&tmp, e))?;
        let sink = Sink::Remote { file: BufWriter::with_capacity(1 << 20, w), tmp, fin: fin.clone() };
        Ok(VolumeWriter { base: Some(fin), split: None, image_id, sink: Some(sink), index: 0, in_volume: at, logical: at, done: Vec::new(), finished: false, keep_on_failure: true })
    }

    /// Hand what is buffered to the file (or share).
    pub fn flush(&mut self) -> Result<(), ImageError> {
        match &mut self.sink {
            Some(Sink::File { file, tmp, .. }) => file.flush().map_err(|e| ImageError::io(&*tmp, e)),
            Some(Sink::Remote { file, tmp, .. }) => file.flush().map_err(|e| ImageError::io(&*tmp, e)),
            Some(Sink::Stream(w)) => w.flush().map_err(|e| ImageError::io("<stdout>", e)),
            None => Ok(()),
        }
    }

    /// The final name of an image written to a share (one volume), whose
    /// progress is journaled so that `--resume` can go on after a cut.
    pub(crate) fn journaled(&self) -> Option<&Path> {
        match &self.sink {
            Some(Sink::Remote { fin, .. }) if self.split.is_none() => Some(fin),
            _ => None,
        }
    }

    fn open_volume(&mut self) -> Result<(), ImageError> {
        let hdr = VolumeHeader { index: self.index, image_id: self.image_id, split_size: self.split.unwrap_or(0) }.encode();
        if let Some(base) = &self.base {
            let fin = if self.split.is_some() { split_name(base, self.index) } else { base.clone() };
            if store::exists(&fin) {
                return Err(ImageError::Invalid(format!("{} already exists; choose another name or remove it first", fin.display())));
            }
            let tmp = partial_name(&fin);
            if store::is_remote(&fin) {
                let st = store::for_path(&fin);
                let f = match st.create_new(&tmp) {
                    // Left by a backup that was cut off: never complete, so replace it.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        tracing::info!(file = %tmp.display(), "removing the partial file of an interrupted backup");
                        st.remove(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
                        st.create_new(&tmp)
                    }
                    r => r,
                }
                .map_err(|e| ImageError::io(&tmp, e))?;
                let mut file = BufWriter::with_capacity(1 << 20, f);
                file.write_all(&hdr).map_err(|e| ImageError::io(&tmp, e))?;
                self.sink = Some(Sink::Remote { file, tmp, fin });
                self.in_volume = 0;
                return Ok(());
            }
            let f = OpenOptions::new().write(true).create(true).truncate(true).open(&tmp).map_err(|e| ImageError::io(&tmp, e))?;
            let mut file = BufWriter::with_capacity(1 << 20, f);
            file.write_all(&hdr).map_err(|e| ImageError::io(&tmp, e))?;
            self.sink = Some(Sink::File { file, tmp, fin });
        } else if let Some(Sink::Stream(w)) = &mut self.sink {
            w.write_all(&hdr).map_err(|e| ImageError::io("<stdout>", e))?;
        }
        self.in_volume = 0;
        Ok(())
    }

    fn close_volume(&mut self) -> Result<(), ImageError> {
        match self.sink.take() {
            Some(Sink::File { file, tmp, fin }) => {
                let f = file.into_inner().map_err(|e| ImageError::io(&tmp, e.into_error()))?;
                f.sync_all().map_err(|e| ImageError::io(&tmp, e))?;
                self.done.push((tmp, fin));
            }
            Some(Sink::Remote { file, tmp, fin }) => {
                let w = file.into_inner().map_err(|e| ImageError::io(&tmp, e.into_error()))?;
                w.finish().map_err(|e| ImageError::io(&tmp, e))?;
                self.done.push((tmp, fin));
            }
            Some(Sink::Stream(mut w)) => {
                w.flush().map_err(|e| ImageError::io("<stdout>", e))?;
            }
            None => {}
        }
        Ok(())
    }

    /// Logical offset of the next byte written.
    pub fn position(&self) -> u64 {
        self.logical
    }

    pub fn write_all(&mut self, mut data: &[u8]) -> Result<(), ImageError> {
        while !data.is_empty() {
            let room = match self.split {
                Some(s) => s - VOLUME_HEADER_LEN as u64 - self.in_volume,
                None => u64::MAX,
            };
            if room == 0 {
                self.close_volume()?;
                self.index += 1;
                if self.index >= MAX_VOLUMES {
                    return Err(ImageError::Invalid("more than 9999 volumes: choose a larger split size".into()));
                }
                self.open_volume()?;
                continue;
            }
            let n = (data.len() as u64).min(room) as usize;
            match &mut self.sink {
                Some(Sink::File { file, tmp, .. }) => file.write_all(&data[..n]).map_err(|e| ImageError::io(&*tmp, e))?,
                Some(Sink::Remote { file, tmp, .. }) => file.write_all(&data[..n]).map_err(|e| ImageError::io(&*tmp, e))?,
                Some(Sink::Stream(w)) => w.write_all(&data[..n]).map_err(|e| ImageError::io("<stdout>", e))?,
                None => return Err(ImageError::Invalid("volume writer used after close".into())),
            }
            self.in_volume += n as u64;
            self.logical += n as u64;
            data = &data[n..];
        }
        Ok(())
    }

    pub fn volume_count(&self) -> u32 {
        self.index + 1
    }

    /// Sync every volume and give them their final names. Returns the paths.
    pub fn finish(mut self) -> Result<Vec<PathBuf>, ImageError> {
        self.close_volume()?;
        let mut out = Vec::new();
        for (tmp, fin) in &self.done {
            rename_noclobber(tmp, fin)?;
            out.push(fin.clone());
            if store::is_remote(fin) && self.split.is_none() {
                // The image is complete: its journal has no more use.
                let _ = store::remove(&journal_name(fin));
            }
        }
        if let Some(dir) = self.base.as_ref().filter(|b| !store::is_remote(b)).and_then(|b| b.parent()) {
            let dir = if dir.as_os_str().is_empty() { Path::new(".") } else { dir };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        self.finished = true;
        Ok(out)
    }
}

impl Drop for VolumeWriter {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        if self.keep_on_failure {
            if let Some(Sink::Remote { file, .. }) = self.sink.take() {
                drop(file.into_parts());
            }
            return;
        }
        match self.sink.take() {
            Some(Sink::File { tmp, .. }) => {
                let _ = std::fs::remove_file(&tmp);
            }
            Some(Sink::Remote { file, tmp, fin }) => {
                // Close our handle first (a share may refuse to delete an open file).
                drop(file.into_parts());
                match store::remove(&tmp) {
                    Ok(()) => {
                        let _ = store::remove(&journal_name(&fin));
                    }
                    // The share is gone: the partial file and its journal stay
                    // for `--resume` (or the next backup replaces them).
                    Err(e) => tracing::warn!(file = %tmp.display(), error = %e, "could not remove the partial file (it stays, named as partial)"),
                }
            }
            _ => {}
        }
        for (tmp, _) in &self.done {
            let _ = store::remove(tmp);
        }
    }
}

/// Rename without replacing an existing file. Hard links make it atomic where
/// the filesystem has them; FAT and exFAT sticks do not, so fall back to a
/// check followed by a rename there.
fn rename_noclobber(tmp: &Path, fin: &Path) -> Result<(), ImageError> {
    if store::is_remote(fin) {
        return match store::for_path(fin).rename_noclobber(tmp, fin) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                Err(ImageError::Invalid(format!("{} appeared while the backup ran; the new image is left as {}", fin.display(), tmp.display())))
            }
            r => r.map_err(|e| ImageError::io(fin, e)),
        };
    }
    match std::fs::hard_link(tmp, fin) {
        Ok(()) => std::fs::remove_file(tmp).map_err(|e| ImageError::io(tmp, e)),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(ImageError::Invalid(format!("{} appeared while the backup ran; the new image is left as {}", fin.display(), tmp.display())))
        }
        Err(_) => {
            if fin.exists() {
                return Err(ImageError::Invalid(format!(
                    "{} appeared while the backup ran; the new image is left as {}",
                    fin.display(),
                    tmp.display()
                )));
            }
            std::fs::rename(tmp, fin).map_err(|e| ImageError::io(fin, e))
        }
    }
}

struct Vol {
    path: PathBuf,
    file: StoreFile,
    /// Logical offset of this volume's first payload byte.
    start: u64,
    len: u64,
    /// A second handle that reads past the page cache, opened on first use
    /// (`None` when the store or filesystem has none).
    uncached: std::sync::OnceLock<Option<File>>,
}

impl Vol {
    fn new(path: PathBuf, file: StoreFile, start: u64, len: u64) -> Vol {
        Vol { path, file, start, len, uncached: std::sync::OnceLock::new() }
    }

    fn uncached(&self) -> Option<&File> {
        self.uncached
            .get_or_init(|| {
                self.file.local()?;
                #[cfg(target_os = "linux")]
                return crate::blockdev::open_uncached(&self.path).ok();
                #[cfg(not(target_os = "linux"))]
                None
            })
            .as_ref()
    }
}

/// The volumes of an image, read as one logical stream.
pub struct VolumeSet {
    vols: Vec<Vol>,
    total: u64,
    pub image_id: [u8; 16],
    pub split_size: u64,
}

impl std::fmt::Debug for VolumeSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VolumeSet").field("volumes", &self.paths()).field("total", &self.total).finish()
    }
}

fn read_vol_header(path: &Path) -> Result<(StoreFile, VolumeHeader, u64), ImageError> {
    let file = store::for_path(path).open(path).map_err(|e| ImageError::io(path, e))?;
    read_opened_header(path, file)
}

fn read_opened_header(path: &Path, file: StoreFile) -> Result<(StoreFile, VolumeHeader, u64), ImageError> {
    if let Some(f) = file.local() {
        crate::blockdev::advise_sequential(f);
    }
    let len = file.len().map_err(|e| ImageError::io(path, e))?;
    let mut b = [0u8; VOLUME_HEADER_LEN];
    if len < VOLUME_HEADER_LEN as u64 {
        return Err(ImageError::NotAnImage { path: path.into(), offset: 0 });
    }
    file.read_exact_at(&mut b, 0).map_err(|e| ImageError::io(path, e))?;
    let h = VolumeHeader::decode(&b).map_err(|e| match e {
        super::format::DecodeError::Version(v) => ImageError::Version { path: path.into(), version: v, supported: super::format::FORMAT_VERSION },
        super::format::DecodeError::Hash => ImageError::Corrupt { what: format!("volume header of {} is damaged", path.display()), offset: 0, volume: 0, volume_offset: 0 },
        _ => ImageError::NotAnImage { path: path.into(), offset: 0 },
    })?;
    Ok((file, h, len))
}

/// The image id and volume index of a file, if it is a volume of an image.
pub fn volume_id(path: &Path) -> Option<(u32, [u8; 16])> {
    read_vol_header(path).ok().map(|(_, h, _)| (h.index, h.image_id))
}

/// `NAME.001` → `NAME` when the suffix is a volume number.
fn strip_volume_suffix(p: &Path) -> Option<PathBuf> {
    let s = p.to_str()?;
    let (base, num) = s.rsplit_once('.')?;
    if num.len() >= 3 && num.bytes().all(|b| b.is_ascii_digit()) {
        Some(PathBuf::from(base))
    } else {
        None
    }
}

impl VolumeSet {
    /// Open an image by any of its names: `NAME` (single file or split base),
    /// `NAME.001`, or another volume of the set.
    pub fn open(path: &Path) -> Result<Self, ImageError> {
        let store = store::for_path(path);
        // Open rather than test for existence first: on a web server each
        // test is a request.
        let not_found = |e: &io::Error| e.kind() == io::ErrorKind::NotFound;
        let (first, opened) = match store.open(path) {
            Ok(f) => (path.to_path_buf(), f),
            Err(e) if not_found(&e) => {
                let p = split_name(path, 0);
                match store.open(&p) {
                    Ok(f) => (p, f),
                    Err(e2) if not_found(&e2) => {
                        // A remote store's answer ("404 Not Found") says more
                        // than a bare "not found".
                        let why = if store::is_remote(path) { format!("{e} (nor a .001 volume)") } else { "no such image file (nor a .001 volume)".into() };
                        return Err(ImageError::io(path, io::Error::new(io::ErrorKind::NotFound, why)));
                    }
                    Err(e) => return Err(ImageError::io(&p, e)),
                }
            }
            Err(e) => return Err(ImageError::io(path, e)),
        };
        let (file, h, len) = read_opened_header(&first, opened)?;
        if h.split_size == 0 {
            if h.index != 0 {
                return Err(ImageError::WrongVolume { path: first, expected: 0, what: format!("it says it is volume {}", h.index + 1) });
            }
            let payload = len - VOLUME_HEADER_LEN as u64;
            return Ok(VolumeSet {
                vols: vec![Vol::new(first, file, 0, payload)],
                total: payload,
                image_id: h.image_id,
                split_size: 0,
            });
        }
        let base = strip_volume_suffix(&first).ok_or_else(|| ImageError::WrongVolume {
            path: first.clone(),
            expected: 0,
            what: "a split volume must be named NAME.001, NAME.002, ...".into(),
        })?;
        let image_id = h.image_id;
        let split = h.split_size;
        let mut vols = Vec::new();
        let mut start = 0u64;
        let mut index = 0u32;
        loop {
            let p = split_name(&base, index);
            let (file, vh, len) = match store.open(&p) {
                Ok(f) => read_opened_header(&p, f)?,
                Err(e) if not_found(&e) => break,
                Err(e) => return Err(ImageError::io(&p, e)),
            };
            if vh.image_id != image_id {
                return Err(ImageError::WrongVolume { path: p, expected: index + 1, what: "it belongs to another image".into() });
            }
            if vh.index != index {
                return Err(ImageError::WrongVolume { path: p, expected: index + 1, what: format!("it is volume {} of this image", vh.index + 1) });
            }
            if vh.split_size != split {
                return Err(ImageError::WrongVolume { path: p, expected: index + 1, what: "its split size differs".into() });
            }
            let payload = len - VOLUME_HEADER_LEN as u64;
            vols.push(Vol::new(p, file, start, payload));
            start += payload;
            index += 1;
            if index >= MAX_VOLUMES {
                break;
            }
        }
        if vols.is_empty() {
            return Err(ImageError::MissingVolume { index: 1, path: split_name(&base, 0) });
        }
        // A later volume present while an earlier one is missing.
        for gap in 1..=3 {
            let p = split_name(&base, index + gap);
            if store.exists(&p) {
                return Err(ImageError::MissingVolume { index: index + 1, path: split_name(&base, index) });
            }
        }
        // Every volume but the last is exactly split_size long.
        let n = vols.len();
        for (i, v) in vols.iter().enumerate().take(n - 1) {
            if v.len + VOLUME_HEADER_LEN as u64 != split {
                return Err(ImageError::Incomplete {
                    what: format!("volume {} ({}) has {} bytes, expected {split}", i + 1, v.path.display(), v.len + VOLUME_HEADER_LEN as u64),
                });
            }
        }
        Ok(VolumeSet { vols, total: start, image_id, split_size: split })
    }

    pub fn len(&self) -> u64 {
        self.total
    }

    pub fn is_empty(&self) -> bool {
        self.total == 0
    }

    pub fn volume_count(&self) -> u32 {
        self.vols.len() as u32
    }

    pub fn paths(&self) -> Vec<PathBuf> {
        self.vols.iter().map(|v| v.path.clone()).collect()
    }

    /// (volume number starting at 1, byte offset in that file) of a logical offset.
    pub fn locate(&self, offset: u64) -> (u32, u64) {
        let i = self.vols.partition_point(|v| v.start + v.len <= offset).min(self.vols.len().saturating_sub(1));
        let v = &self.vols[i];
        (i as u32 + 1, offset.saturating_sub(v.start) + VOLUME_HEADER_LEN as u64)
    }

    /// Device numbers (st_dev) of the filesystems holding the volumes, so a
    /// restore can refuse to overwrite the disk the image lives on.
    /// Volumes on remote stores have none (they cannot be the target).
    pub fn files(&self) -> impl Iterator<Item = (&Path, &File)> {
        self.vols.iter().filter_map(|v| v.file.local().map(|f| (v.path.as_path(), f)))
    }

    /// Bytes of the volume files (headers included).
    pub fn stored_bytes(&self) -> u64 {
        self.vols.iter().map(|v| v.len + VOLUME_HEADER_LEN as u64).sum()
    }

    /// Whether reading the whole image would mostly wait for the disk: the
    /// page cache is sampled over (up to 8 of) the volumes without reading
    /// anything. False for remote stores, and where the kernel does not say.
    pub fn mostly_uncached(&self) -> bool {
        #[cfg(unix)]
        {
            let mut sum = 0.0;
            let vols = &self.vols[..self.vols.len().min(8)];
            for v in vols {
                let Some(f) = v.file.local() else { return false };
                match crate::blockdev::cached_fraction(f, VOLUME_HEADER_LEN as u64, v.len) {
                    Some(x) => sum += x,
                    None => return false,
                }
            }
            !vols.is_empty() && sum / (vols.len() as f64) < 0.5
        }
        #[cfg(not(unix))]
        false
    }

    /// Read `len` bytes at logical `offset` past the page cache (O_DIRECT),
    /// into `buf` (replaced by a larger one when too small), and return the
    /// part of `buf` that holds them. Whole aligned blocks around the range
    /// are read, so the requests go to the disk as they are, several in
    /// flight when several threads call this. `None` when it cannot be done
    /// that way (a remote store, a filesystem without O_DIRECT, a range that
    /// spans two volumes): the caller reads the usual way then.
    pub fn read_uncached<'b>(&self, offset: u64, len: usize, buf: &'b mut AlignedBuf) -> Option<io::Result<&'b [u8]>> {
        use crate::blockdev::UNCACHED_ALIGN as A;
        let end = offset.checked_add(len as u64).filter(|&e| e <= self.total)?;
        let i = self.vols.partition_point(|v| v.start + v.len <= offset);
        let v = self.vols.get(i).filter(|v| end <= v.start + v.len)?;
        let f = v.uncached()?;
        let from = offset - v.start + VOLUME_HEADER_LEN as u64;
        let first = from / A * A;
        let last = (from + len as u64).div_ceil(A) * A;
        let span = usize::try_from(last - first).ok()?;
        if buf.len() < span {
            *buf = AlignedBuf::new(span.next_power_of_two(), A as usize);
        }
        let need = (from - first) as usize + len;
        // The last block may lie past the end of the file: a short read.
        let got = match crate::blockdev::aligned::read_full(f, &mut buf[..span], first, A as usize) {
            Ok(n) => n,
            // Refused by the filesystem: read the usual way.
            Err(e) if e.kind() == io::ErrorKind::InvalidInput => return None,
            Err(e) => return Some(Err(e)),
        };
        if got < need {
            return Some(Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the image")));
        }
        let at = (from - first) as usize;
        Some(Ok(&buf[at..at + len]))
    }
}

impl ReadAt for VolumeSet {
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        if offset.checked_add(buf.len() as u64).is_none_or(|e| e > self.total) {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end of the image"));
        }
        let mut i = self.vols.partition_point(|v| v.start + v.len <= offset);
        while !buf.is_empty() {
            let v = self.vols.get(i).ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the last volume"))?;
            let within = offset - v.start;
            let n = ((v.len - within) as usize).min(buf.len());
            match &v.file {
                StoreFile::Local(f) => FileExt::read_exact_at(f, &mut buf[..n], within + VOLUME_HEADER_LEN as u64)?,
                remote => remote.read_exact_at(&mut buf[..n], within + VOLUME_HEADER_LEN as u64)?,
            }
            buf = &mut buf[n..];
            offset += n as u64;
            i += 1;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern(n: usize) -> Vec<u8> {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Reads past the page cache give the bytes buffered reads give, at
    /// unaligned offsets, up to the very end of each volume (a short last
    /// block), and decline a range that spans two volumes.
    #[test]
    #[cfg(target_os = "linux")]
    fn uncached_reads_match_buffered_reads() {
        let dir = tempfile::tempdir().unwrap();
        let data = pattern((MIN_SPLIT + (3 << 20) + 12345) as usize);
        let base = dir.path().join("img");
        let mut w = VolumeWriter::create(Output::Path(base.clone()), Some(MIN_SPLIT), [7; 16]).unwrap();
        w.write_all(&data).unwrap();
        w.finish().unwrap();
        let set = VolumeSet::open(&split_name(&base, 0)).unwrap();
        assert_eq!(set.volume_count(), 2);
        assert_eq!(set.len(), data.len() as u64);
        let first_len = MIN_SPLIT - VOLUME_HEADER_LEN as u64;
        let direct_works = crate::blockdev::open_uncached(&split_name(&base, 0)).is_ok();
        let mut buf = AlignedBuf::new(0, 4096);
        let cases: [(u64, usize); 6] = [(0, 1), (1, 4096), (4031, 2 << 20), (first_len - 100, 100), (first_len, 70_000), (data.len() as u64 - 5000, 5000)];
        for (off, len) in cases {
            let got = set.read_uncached(off, len, &mut buf);
            if !direct_works {
                assert!(got.is_none(), "no O_DIRECT here, yet a read at {off} claimed one");
                continue;
            }
            let got = got.unwrap_or_else(|| panic!("read of {len} at {off} declined")).unwrap();
            assert!(got == &data[off as usize..off as usize + len], "bytes differ at {off} (+{len})");
        }
        // Spanning the two volumes, or past the end: not this way.
        assert!(set.read_uncached(first_len - 10, 20, &mut buf).is_none());
        assert!(set.read_uncached(data.len() as u64 - 10, 11, &mut buf).is_none());
    }
}
