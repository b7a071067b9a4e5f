//! Positional reads over disks, partitions, files and byte buffers.
//!
//! Every parser in this crate (partition tables, filesystem maps, the image
//! reader) reads through [`ReadAt`], so the same code runs on a block device,
//! a raw disk image file, a window of either (a partition), or an in-memory
//! fixture in a unit test.

use std::fs::File;
use std::io;

/// Read exactly `buf.len()` bytes at `offset`; reading past the end is an
/// `UnexpectedEof` error, never a short read.
pub trait ReadAt: Sync {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;

    /// A hint that `[offset, offset + len)` will be read soon: files and
    /// block devices start reading it in the background, so the next read
    /// overlaps the work on the current one. Others ignore it.
    fn prefetch(&self, offset: u64, len: u64) {
        let _ = (offset, len);
    }

    /// How many reads a caller should keep in flight to keep this source's
    /// disk busy: sources read past the page cache (O_DIRECT, Windows raw
    /// disks) get no read-ahead, so their readers must overlap. 0: no
    /// wish (the kernel's read-ahead and [`prefetch`](Self::prefetch) do it).
    fn reads_in_flight(&self) -> usize {
        0
    }
}

/// Positional reads and writes on a [`File`] on every platform: `pread` /
/// `pwrite` on Unix; on Windows `seek_read` / `seek_write`, which may move
/// fewer bytes than asked (so they are looped here) and move the file cursor
/// (nothing in this crate mixes cursor and positional I/O on one handle).
pub trait FileExt {
    /// Read exactly `buf.len()` bytes at `offset` (`UnexpectedEof` past the end).
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Write all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
}

#[cfg(unix)]
impl FileExt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::read_exact_at(self, buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        std::os::unix::fs::FileExt::write_all_at(self, buf, offset)
    }
}

#[cfg(windows)]
impl FileExt for File {
    fn read_exact_at(&self, mut buf: &mut [u8], mut offset: u64) -> io::Result<()> {
        use std::os::windows::fs::FileExt as _;
        while !buf.is_empty() {
            match self.seek_read(buf, offset) {
                Ok(0) => return Err(eof()),
                Ok(n) => {
                    buf = &mut buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn write_all_at(&self, mut buf: &[u8], mut offset: u64) -> io::Result<()> {
        use std::os::windows::fs::FileExt as _;
        while !buf.is_empty() {
            match self.seek_write(buf, offset) {
                Ok(0) => return Err(io::Error::new(io::ErrorKind::WriteZero, format!("wrote nothing at byte {offset}"))),
                Ok(n) => {
                    buf = &buf[n..];
                    offset += n as u64;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

impl ReadAt for File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(self, buf, offset)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        crate::blockdev::sys::advise_will_need(self, offset, len);
    }
}

impl ReadAt for [u8] {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let start = usize::try_from(offset).map_err(|_| eof())?;
        let end = start.checked_add(buf.len()).ok_or_else(eof)?;
        let src = self.get(start..end).ok_or_else(eof)?;
        buf.copy_from_slice(src);
        Ok(())
    }
}

impl ReadAt for Vec<u8> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.as_slice().read_exact_at(buf, offset)
    }
}

impl<T: ReadAt + ?Sized> ReadAt for &T {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        (**self).prefetch(offset, len)
    }

    fn reads_in_flight(&self) -> usize {
        (**self).reads_in_flight()
    }
}

impl<T: ReadAt + ?Sized + Send> ReadAt for std::sync::Arc<T> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        (**self).read_exact_at(buf, offset)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        (**self).prefetch(offset, len)
    }

    fn reads_in_flight(&self) -> usize {
        (**self).reads_in_flight()
    }
}

/// A window `[start, start + len)` of another reader, e.g. one partition of a
/// disk. Offsets are relative to the window; reads past its end fail.
pub struct Window<R> {
    inner: R,
    start: u64,
    len: u64,
}

impl<R: ReadAt> Window<R> {
    pub fn new(inner: R, start: u64, len: u64) -> Self {
        Self { inner, start, len }
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<R: ReadAt> ReadAt for Window<R> {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).ok_or_else(eof)?;
        if end > self.len {
            return Err(eof());
        }
        self.inner.read_exact_at(buf, self.start + offset)
    }

    fn prefetch(&self, offset: u64, len: u64) {
        if offset < self.len {
            self.inner.prefetch(self.start + offset, len.min(self.len - offset));
        }
    }

    fn reads_in_flight(&self) -> usize {
        self.inner.reads_in_flight()
    }
}

fn eof() -> io::Error {
    io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end")
}

/// Read `len` bytes at `offset` into a new buffer; `len` is checked against
/// `limit` first so corrupt length fields cannot make us allocate gigabytes.
pub fn read_vec(r: &dyn ReadAt, offset: u64, len: u64, limit: u64) -> io::Result<Vec<u8>> {
    if len > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("refusing to read {len} bytes at {offset} (limit {limit})"),
        ));
    }
    let mut v = vec![0u8; len as usize];
    r.read_exact_at(&mut v, offset)?;
    Ok(v)
}
