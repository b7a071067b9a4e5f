//! The system calls shrinking needs beyond the standard library: free space
//! of a filesystem (fstatvfs) and the data/hole map of a sparse file
//! (lseek SEEK_DATA / SEEK_HOLE, Linux 3.1+).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

/// Bytes an unprivileged user may still write on the filesystem holding `f`.
pub fn available_bytes(f: &File) -> io::Result<u64> {
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: the fd is valid while `f` lives; fstatvfs fills the whole
    // struct it is given a pointer to, and we read it only on success.
    let r = unsafe { libc::fstatvfs(f.as_raw_fd(), st.as_mut_ptr()) };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fstatvfs returned 0, so it initialised the struct.
    let st = unsafe { st.assume_init() };
    // fsblkcnt_t and c_ulong are 32 bits wide on some targets.
    #[allow(clippy::useless_conversion)]
    let (blocks, size) = (u64::from(st.f_bavail), u64::from(st.f_frsize));
    Ok(blocks.saturating_mul(size))
}

fn seek(f: &File, from: u64, whence: libc::c_int) -> io::Result<Option<u64>> {
    let off = libc::off_t::try_from(from).map_err(|_| io::Error::other(format!("offset {from} too large")))?;
    // SAFETY: lseek only reads the fd (valid while `f` lives) and changes its
    // file position, which nothing else of ours relies on (we use pread/pwrite).
    let r = unsafe { libc::lseek(f.as_raw_fd(), off, whence) };
    if r < 0 {
        let e = io::Error::last_os_error();
        // ENXIO: no data (or hole) at or after `from`.
        return if e.raw_os_error() == Some(libc::ENXIO) { Ok(None) } else { Err(e) };
    }
    Ok(Some(r as u64))
}

/// Start of the next data at or after `from`, None when only a hole follows.
pub fn next_data(f: &File, from: u64) -> io::Result<Option<u64>> {
    seek(f, from, libc::SEEK_DATA)
}

/// Start of the next hole at or after `from` (the file end counts as one).
pub fn next_hole(f: &File, from: u64) -> io::Result<Option<u64>> {
    seek(f, from, libc::SEEK_HOLE)
}
