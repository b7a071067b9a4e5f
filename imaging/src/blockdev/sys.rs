//! The few system calls the safe standard library does not offer: block
//! device ioctls and advisory locks. Every `unsafe` block of the crate is here.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

// From <linux/fs.h>: _IO(0x12, 95) and _IO(0x12, 97).
const BLKRRPART: libc::c_ulong = 0x125f;
const BLKFLSBUF: libc::c_ulong = 0x1261;

/// Ask the kernel to re-read the partition table (fails with EBUSY while a
/// partition of the disk is in use).
pub fn reread_partitions(f: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument; the fd is valid for the lifetime of
    // `f`, and the kernel only reads the fd.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKRRPART as _, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Flush the device's buffer cache (so a later read sees what was written
/// through another path, e.g. a partition device).
pub fn flush_buffers(f: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: BLKFLSBUF takes no argument; the fd is valid while `f` lives.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), BLKFLSBUF as _, 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Take an exclusive, non-blocking advisory lock (for image files used as
/// disks: two `rescue` runs must not write the same file).
pub fn lock_exclusive(f: &impl AsRawFd) -> io::Result<()> {
    // SAFETY: flock only reads the fd, which is valid while `f` lives; the
    // flags are constants.
    let r = unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// Tell the kernel a file will be read sequentially (larger read-ahead).
pub fn advise_sequential(f: &impl AsRawFd) {
    // SAFETY: posix_fadvise only reads the fd (valid while `f` lives) and the
    // constant advice; offset 0 and length 0 mean the whole file.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_SEQUENTIAL);
    }
}

/// Ask the kernel to start reading `[offset, offset + len)` of a file in the
/// background (a hint: errors are ignored).
pub fn advise_will_need(f: &impl AsRawFd, offset: u64, len: u64) {
    let (Ok(off), Ok(n)) = (libc::off_t::try_from(offset), libc::off_t::try_from(len)) else {
        return;
    };
    // SAFETY: posix_fadvise only reads the fd (valid while `f` lives) and
    // plain integers; it touches no memory of ours.
    unsafe {
        libc::posix_fadvise(f.as_raw_fd(), off, n, libc::POSIX_FADV_WILLNEED);
    }
}

/// How much of `[offset, offset + len)` of a file is in the page cache, as a
/// fraction (mincore(2) over a read-only mapping, which reads nothing).
/// Errors when the kernel does not say. (A file the caller could not write
/// reports no pages on some kernels: the answer is then 0.)
pub fn resident_fraction(f: &File, offset: u64, len: u64) -> io::Result<f64> {
    let page = 4096u64;
    let start = offset / page * page;
    // The caller keeps the range inside the file or device (a block
    // device's metadata says length 0).
    let end = offset.saturating_add(len);
    if end <= start {
        return Ok(0.0);
    }
    let map_len = usize::try_from(end - start).map_err(|_| io::Error::other("range too large"))?;
    let off = libc::off_t::try_from(start).map_err(|_| io::Error::other("offset too large"))?;
    // SAFETY: a fresh read-only shared mapping of a file we hold open; we never
    // dereference it (mincore only looks at the page tables and page cache),
    // and it is unmapped before returning.
    let addr = unsafe { libc::mmap(std::ptr::null_mut(), map_len, libc::PROT_READ, libc::MAP_SHARED, f.as_raw_fd(), off) };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let pages = map_len.div_ceil(page as usize);
    let mut vec = vec![0u8; pages];
    // SAFETY: `addr` is the page-aligned start of a mapping of `map_len`
    // bytes, and `vec` has one byte per page of it.
    let r = unsafe { libc::mincore(addr, map_len, vec.as_mut_ptr()) };
    let err = io::Error::last_os_error();
    // SAFETY: unmaps exactly the mapping made above, which nothing references.
    unsafe { libc::munmap(addr, map_len) };
    if r < 0 {
        return Err(err);
    }
    let resident = vec.iter().filter(|&&b| b & 1 == 1).count();
    Ok(resident as f64 / pages as f64)
}
