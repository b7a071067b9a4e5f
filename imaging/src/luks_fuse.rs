//! An unlocked LUKS volume as a plain file: a one-file FUSE filesystem whose
//! file reads and writes the volume's plaintext, decrypting and encrypting
//! sector by sector on the way to the encrypted partition ([`crate::luks`]).
//! A loop device over that file is then a block device of the plaintext, so
//! the kernel can mount the filesystem (or read the LVM volume group) inside,
//! with no dm-crypt.
//!
//! FUSE comes from `fuser` without libfuse (the kernel's mount call as root),
//! served by a thread of this process. Everything is released on drop: the
//! file system is unmounted and its thread joined after the data reached the
//! partition (`fsync` on every flush and release), and the folder removed.

use std::ffi::OsStr;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fuser::{FileAttr, FileType, MountOption, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyWrite, Request};

use crate::luks::{Plain, Volume};
use crate::read_at::{FileExt, ReadAt, Window};

const ROOT: u64 = 1;
const FILE: u64 = 2;
/// The name of the plaintext file in the mount.
pub const NAME: &str = "plain";
const TTL: Duration = Duration::from_secs(1);

/// The plaintext of an unlocked volume, mounted as `<dir>/plain`.
pub struct PlainFile {
    dir: PathBuf,
    session: Option<fuser::BackgroundSession>,
}

impl std::fmt::Debug for PlainFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "PlainFile({})", self.path().display())
    }
}

impl PlainFile {
    /// Serve `volume`, which lies at byte `offset` of `dev` (a disk, or a disk
    /// image file; opened read-write when `write`), on a new folder under
    /// `base`.
    pub fn mount(dev: File, offset: u64, volume: Volume, base: &Path, write: bool, name: &str) -> std::io::Result<PlainFile> {
        std::fs::create_dir_all(base)?;
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let dir = base.join(format!("luks-{}-{}", std::process::id(), N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)));
        std::fs::create_dir(&dir)?;
        let fs = Fs { dev, offset, volume, write, created: SystemTime::now() };
        let mut opts = vec![MountOption::FSName(format!("rescue-luks:{name}")), MountOption::Subtype("rescue-luks".into()), MountOption::NoDev, MountOption::NoSuid, MountOption::DefaultPermissions];
        if !write {
            opts.push(MountOption::RO);
        }
        match fuser::spawn_mount2(fs, &dir, &opts) {
            Ok(s) => Ok(PlainFile { dir, session: Some(s) }),
            Err(e) => {
                let _ = std::fs::remove_dir(&dir);
                Err(std::io::Error::new(e.kind(), format!("serving the unlocked volume with FUSE on {}: {e} (is /dev/fuse there? modprobe fuse)", dir.display())))
            }
        }
    }

    /// The plaintext file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(NAME)
    }
}

impl Drop for PlainFile {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            // fuser's own unmount gives up on a busy mount, and the join
            // would then wait for ever: a loop device detached just now may
            // still hold the file for a moment. Unmount here first, retrying,
            // and lazily as a last resort (the session then ends when the
            // last user lets go).
            let mut gone = false;
            for _ in 0..40 {
                match crate::mount::sys::unmount(&self.dir, false) {
                    Ok(()) => {
                        gone = true;
                        break;
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) => std::thread::sleep(Duration::from_millis(250)),
                    Err(_) => break,
                }
            }
            if gone {
                s.join();
            } else {
                // Still in use: detached from the tree, the thread goes on
                // serving (so what is written still lands) until the last
                // user lets go. Joining could wait for ever on a user this
                // thread releases later.
                tracing::warn!(dir = %self.dir.display(), "the LUKS plaintext is still in use; detached lazily");
                let _ = crate::mount::sys::unmount(&self.dir, true);
                drop(s);
            }
        }
        let _ = std::fs::remove_dir(&self.dir);
    }
}

struct Fs {
    dev: File,
    offset: u64,
    volume: Volume,
    write: bool,
    created: SystemTime,
}

impl Fs {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            ROOT => (FileType::Directory, 0o755, 0, 2),
            FILE => (FileType::RegularFile, if self.write { 0o600 } else { 0o400 }, self.volume.size, 1),
            _ => return None,
        };
        let t = self.created;
        Some(FileAttr { ino, size, blocks: size.div_ceil(512), atime: t, mtime: t, ctime: t, crtime: t, kind, perm, nlink, uid: 0, gid: 0, rdev: 0, blksize: self.volume.sector_size(), flags: 0 })
    }

    fn at(&self, pos: u64) -> u64 {
        self.offset + self.volume.header.data_offset + pos
    }

    /// Plaintext reads (the partition is at `offset` of the device).
    fn read_plain(&self, buf: &mut [u8], pos: u64) -> std::io::Result<()> {
        let part = Window::new(&self.dev, self.offset, self.volume.header.data_offset + self.volume.size);
        Plain { volume: &self.volume, dev: &part }.read_exact_at(buf, pos)
    }

    fn write_at(&self, data: &[u8], pos: u64) -> std::io::Result<()> {
        let ss = u64::from(self.volume.sector_size());
        let end = pos + data.len() as u64;
        let (start, stop) = (pos / ss * ss, end.div_ceil(ss) * ss);
        // Partial sectors at either end are read first.
        let mut b = if start == pos && stop == end {
            data.to_vec()
        } else {
            let mut b = vec![0u8; (stop - start) as usize];
            let n = b.len();
            if pos != start {
                self.read_plain(&mut b[..ss as usize], start)?;
            }
            if end != stop {
                self.read_plain(&mut b[n - ss as usize..], stop - ss)?;
            }
            b[(pos - start) as usize..(end - start) as usize].copy_from_slice(data);
            b
        };
        self.volume.crypt(&mut b, start, false);
        self.dev.write_all_at(&b, self.at(start))
    }
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(libc::EIO)
}

impl fuser::Filesystem for Fs {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.attr(FILE).filter(|_| parent == ROOT && name == NAME) {
            Some(a) => reply.entry(&TTL, &a, 0),
            None => reply.error(libc::ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(libc::ENOENT),
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(&mut self, _req: &Request<'_>, ino: u64, _mode: Option<u32>, _uid: Option<u32>, _gid: Option<u32>, size: Option<u64>, _atime: Option<fuser::TimeOrNow>, _mtime: Option<fuser::TimeOrNow>, _ctime: Option<SystemTime>, _fh: Option<u64>, _crtime: Option<SystemTime>, _chgtime: Option<SystemTime>, _bkuptime: Option<SystemTime>, _flags: Option<u32>, reply: ReplyAttr) {
        // The volume's size is fixed; times and modes are not kept.
        if size.is_some_and(|s| s != self.volume.size) {
            return reply.error(libc::EPERM);
        }
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(libc::ENOENT),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if ino != FILE {
            return reply.error(libc::EISDIR);
        }
        if flags & libc::O_ACCMODE != libc::O_RDONLY && !self.write {
            return reply.error(libc::EROFS);
        }
        reply.opened(0, 0);
    }

    fn read(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, offset: i64, size: u32, _flags: i32, _lock: Option<u64>, reply: ReplyData) {
        let pos = offset.max(0) as u64;
        let end = (pos + u64::from(size)).min(self.volume.size);
        if pos >= end {
            return reply.data(&[]);
        }
        let mut b = vec![0u8; (end - pos) as usize];
        match self.read_plain(&mut b, pos) {
            Ok(()) => reply.data(&b),
            Err(e) => {
                tracing::error!(pos, error = %e, "reading the encrypted volume");
                reply.error(errno(&e))
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn write(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, offset: i64, data: &[u8], _write_flags: u32, _flags: i32, _lock: Option<u64>, reply: ReplyWrite) {
        let pos = offset.max(0) as u64;
        if !self.write {
            return reply.error(libc::EROFS);
        }
        if pos + data.len() as u64 > self.volume.size {
            return reply.error(libc::ENOSPC);
        }
        match self.write_at(data, pos) {
            Ok(()) => reply.written(data.len() as u32),
            Err(e) => {
                tracing::error!(pos, error = %e, "writing the encrypted volume");
                reply.error(errno(&e))
            }
        }
    }

    fn flush(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _lock: u64, reply: ReplyEmpty) {
        match self.dev.sync_data() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn fsync(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _datasync: bool, reply: ReplyEmpty) {
        match self.dev.sync_data() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn release(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, _flags: i32, _lock: Option<u64>, _flush: bool, reply: ReplyEmpty) {
        match self.dev.sync_data() {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        if ino != ROOT {
            return reply.error(libc::ENOTDIR);
        }
        let entries = [(ROOT, FileType::Directory, "."), (ROOT, FileType::Directory, ".."), (FILE, FileType::RegularFile, NAME)];
        for (i, (ino, kind, name)) in entries.iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(*ino, (i + 1) as i64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
