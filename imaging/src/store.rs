//! Image stores: where the files of an image live.
//!
//! Images are named by a path everywhere in this crate; a path that is a URL
//! (`http://` or `https://`) names a file of a remote store. [`for_path`]
//! picks the [`Store`] that opens it, so the image reader (volumes, split
//! sets, chain links found by name beside a point) is the same code for every
//! store. Local files stay plain [`File`]s ([`StoreFile::Local`]) and are read
//! with `pread` as before: the store layer adds no copy and no indirection on
//! the local (benchmarked) path.
//!
//! Web servers are read-only and cannot list folders: chain links there are
//! found by their recorded file names only. SMB shares ([`smb`]) are read,
//! written and listed like local folders: backups go straight to the share
//! (no local scratch space), as `*.partial` files renamed when complete.

pub mod http;
pub mod shares;
pub mod smb;

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::read_at::ReadAt;

/// A file of a remote store, read by position.
pub trait RemoteFile: ReadAt + Send + Sync {
    /// Its size in bytes (fixed when it was opened).
    fn len(&self) -> u64;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// An opened image file.
pub enum StoreFile {
    Local(File),
    Remote(Box<dyn RemoteFile>),
}

impl StoreFile {
    pub fn len(&self) -> io::Result<u64> {
        match self {
            StoreFile::Local(f) => Ok(f.metadata()?.len()),
            StoreFile::Remote(r) => Ok(r.len()),
        }
    }

    /// The local file, if it is one (restore refuses a target that holds it).
    pub fn local(&self) -> Option<&File> {
        match self {
            StoreFile::Local(f) => Some(f),
            StoreFile::Remote(_) => None,
        }
    }
}

impl ReadAt for StoreFile {
    #[inline]
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        match self {
            StoreFile::Local(f) => ReadAt::read_exact_at(f, buf, offset),
            StoreFile::Remote(r) => r.read_exact_at(buf, offset),
        }
    }

    fn prefetch(&self, offset: u64, len: u64) {
        match self {
            StoreFile::Local(f) => ReadAt::prefetch(f, offset, len),
            StoreFile::Remote(r) => r.prefetch(offset, len),
        }
    }
}

/// A new file being written to a remote store, front to back.
pub trait RemoteWriter: Write + Send {
    /// Write what is buffered, make the server commit it, and close the file.
    fn finish(self: Box<Self>) -> io::Result<()>;
}

fn read_only(path: &Path) -> io::Error {
    io::Error::new(io::ErrorKind::Unsupported, format!("{}: this store is read-only", path.display()))
}

/// Where image files live.
pub trait Store: Sync {
    /// Open a file for reading; a missing file is an `io::ErrorKind::NotFound` error.
    fn open(&self, path: &Path) -> io::Result<StoreFile>;

    /// Whether a file exists (errors other than "not found" count as present,
    /// so that opening it reports them).
    fn exists(&self, path: &Path) -> bool {
        match self.open(path) {
            Ok(_) => true,
            Err(e) => e.kind() != io::ErrorKind::NotFound,
        }
    }

    /// Whether a file exists: `Ok(false)` only when the store says "not
    /// found"; any other failure (a wrong password, a missing share) is
    /// returned, so that it is reported as itself.
    fn try_exists(&self, path: &Path) -> io::Result<bool> {
        match self.open(path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether folders of this store can be listed (finding renamed chain
    /// links, `rescue points DIR`).
    fn can_list(&self) -> bool;

    /// The files (not folders) directly in `dir`, as full paths.
    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        Err(io::Error::new(io::ErrorKind::Unsupported, format!("{}: this store cannot list folders", dir.display())))
    }

    /// Whether `path` is a folder.
    fn is_dir(&self, _path: &Path) -> bool {
        false
    }

    /// The size of a file.
    fn len(&self, path: &Path) -> io::Result<u64> {
        self.open(path)?.len()
    }

    /// Create a new file; an existing one is an `AlreadyExists` error.
    fn create_new(&self, path: &Path) -> io::Result<Box<dyn RemoteWriter>> {
        Err(read_only(path))
    }

    /// Open an existing file to go on writing it at `at`, cutting off
    /// whatever follows (resuming an interrupted backup).
    fn open_at(&self, path: &Path, _at: u64) -> io::Result<Box<dyn RemoteWriter>> {
        Err(read_only(path))
    }

    /// Rename `from` to `to`, never replacing an existing `to`.
    fn rename_noclobber(&self, from: &Path, _to: &Path) -> io::Result<()> {
        Err(read_only(from))
    }

    /// Rename `from` to `to`, replacing an existing file `to`.
    fn rename_replace(&self, from: &Path, _to: &Path) -> io::Result<()> {
        Err(read_only(from))
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        Err(read_only(path))
    }

    /// What `path` is, or None when it does not exist.
    fn kind(&self, path: &Path) -> io::Result<Option<PathKind>> {
        Ok(if self.is_dir(path) {
            Some(PathKind::Dir)
        } else {
            self.try_exists(path)?.then_some(PathKind::File)
        })
    }

    /// Make the folder `path` (its parent must exist); an existing one is an
    /// `AlreadyExists` error.
    fn create_dir(&self, path: &Path) -> io::Result<()> {
        Err(read_only(path))
    }

    /// Set the modification (and access) time of a file or folder.
    fn set_times(&self, path: &Path, _modified: SystemTime, _accessed: Option<SystemTime>) -> io::Result<()> {
        Err(read_only(path))
    }
}

/// What a path of a store names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathKind {
    File,
    Dir,
    /// A symlink, device, pipe or socket.
    Other,
}

/// Local files and block devices.
pub struct LocalStore;

impl Store for LocalStore {
    fn open(&self, path: &Path) -> io::Result<StoreFile> {
        File::open(path).map(StoreFile::Local)
    }

    fn exists(&self, path: &Path) -> bool {
        path.exists()
    }

    fn try_exists(&self, path: &Path) -> io::Result<bool> {
        Ok(path.exists())
    }

    fn can_list(&self) -> bool {
        true
    }

    fn list(&self, dir: &Path) -> io::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        for e in std::fs::read_dir(dir)? {
            let p = e?.path();
            if p.is_file() {
                out.push(p);
            }
        }
        Ok(out)
    }

    fn is_dir(&self, path: &Path) -> bool {
        path.is_dir()
    }

    fn len(&self, path: &Path) -> io::Result<u64> {
        Ok(std::fs::metadata(path)?.len())
    }

    fn rename_replace(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        std::fs::remove_file(path)
    }

    fn kind(&self, path: &Path) -> io::Result<Option<PathKind>> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => Ok(Some(PathKind::Dir)),
            Ok(m) if m.is_file() => Ok(Some(PathKind::File)),
            Ok(_) => Ok(Some(PathKind::Other)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn create_dir(&self, path: &Path) -> io::Result<()> {
        std::fs::create_dir(path)
    }

    fn set_times(&self, path: &Path, modified: SystemTime, accessed: Option<SystemTime>) -> io::Result<()> {
        let t = std::fs::FileTimes::new().set_modified(modified);
        let t = match accessed {
            Some(a) => t.set_accessed(a),
            None => t,
        };
        File::open(path)?.set_times(t)
    }
}

/// True when `path` is a URL of a remote store.
pub fn is_remote(path: &Path) -> bool {
    path.to_str().is_some_and(|s| http::is_http_url(s) || smb::is_smb_url(s))
}

/// The store that holds `path`.
pub fn for_path(path: &Path) -> &'static dyn Store {
    match path.to_str() {
        Some(s) if http::is_http_url(s) => &http::HttpStore,
        Some(s) if smb::is_smb_url(s) => &smb::SmbStore,
        _ => &LocalStore,
    }
}

/// `dir` joined with one file name, escaped as its store needs.
pub fn join(dir: &Path, name: &str) -> PathBuf {
    match dir.to_str() {
        Some(s) if smb::is_smb_url(s) => PathBuf::from(format!("{}/{}", s.trim_end_matches('/'), smb::escape(name))),
        _ => dir.join(name),
    }
}

/// Make the folder `path` and any missing parents in its store.
pub fn create_dir_all(path: &Path) -> io::Result<()> {
    let st = for_path(path);
    match st.kind(path)? {
        Some(PathKind::Dir) => return Ok(()),
        Some(_) => return Err(io::Error::new(io::ErrorKind::AlreadyExists, format!("{} exists and is not a folder", path.display()))),
        None => {}
    }
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        create_dir_all(parent)?;
    }
    match st.create_dir(path) {
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && st.is_dir(path) => Ok(()),
        r => r,
    }
}

/// Whether `path` exists in its store.
pub fn exists(path: &Path) -> bool {
    for_path(path).exists(path)
}

/// Whether `path` is a folder of its store.
pub fn is_dir(path: &Path) -> bool {
    for_path(path).is_dir(path)
}

/// The files directly in `dir` (local or on a share).
pub fn list(dir: &Path) -> io::Result<Vec<PathBuf>> {
    for_path(dir).list(dir)
}

/// The size of a file in its store.
pub fn len(path: &Path) -> io::Result<u64> {
    for_path(path).len(path)
}

/// Delete a file from its store.
pub fn remove(path: &Path) -> io::Result<()> {
    for_path(path).remove(path)
}

/// Read-ahead of a sequential reader: the first window, and the most it grows to.
const AHEAD_MIN: usize = 256 << 10;
const AHEAD_MAX: usize = 4 << 20;
/// Sequential readers followed at once (each holds at most `AHEAD_MAX`).
const STREAMS: usize = 4;

/// One sequential reader: where its next read should start, how far ahead
/// to fetch, and what was fetched ahead.
struct Sequential {
    next: u64,
    ahead: usize,
    start: u64,
    data: Vec<u8>,
}

impl Sequential {
    fn covers(&self, offset: u64, len: usize) -> bool {
        offset >= self.start && offset + len as u64 <= self.start + self.data.len() as u64
    }
}

/// Read-ahead for remote files, where each request costs a round trip: a
/// reader that goes on where its last read ended gets a growing window
/// (256 KiB doubling to 4 MiB), like the kernel's page cache does for local
/// files; a random read fetches just what it asks for.
#[derive(Default)]
pub(crate) struct ReadAhead {
    /// Sequential readers seen lately, most recent last.
    streams: Mutex<Vec<Sequential>>,
}

impl ReadAhead {
    /// Fill `buf` from `offset` of a file of `len` bytes named `name`,
    /// through `fetch` (which reads exactly what it is given).
    pub(crate) fn read(&self, buf: &mut [u8], offset: u64, len: u64, name: &str, fetch: impl Fn(&mut [u8], u64) -> io::Result<()>) -> io::Result<()> {
        let end = offset.checked_add(buf.len() as u64).filter(|e| *e <= len);
        let Some(end) = end else {
            return Err(io::Error::new(io::ErrorKind::UnexpectedEof, format!("{name}: read past the end of the file")));
        };
        if buf.is_empty() {
            return Ok(());
        }
        let lock = || self.streams.lock().map_err(|_| io::Error::other("a reading thread panicked"));
        let mut stream = {
            let mut g = lock()?;
            if let Some(st) = g.iter_mut().find(|st| st.covers(offset, buf.len())) {
                let at = (offset - st.start) as usize;
                buf.copy_from_slice(&st.data[at..at + buf.len()]);
                st.next = end;
                return Ok(());
            }
            // A reader going on from where it stopped (or from inside its window).
            let i = g.iter().position(|st| st.next == offset || (offset >= st.start && offset < st.start + st.data.len() as u64));
            i.map(|i| g.remove(i))
        };
        match &mut stream {
            Some(st) if buf.len() < AHEAD_MAX => {
                st.ahead = if st.data.is_empty() { AHEAD_MIN } else { (st.ahead * 2).min(AHEAD_MAX) };
                let want = (buf.len().max(st.ahead) as u64).min(len - offset) as usize;
                st.data.resize(want, 0);
                st.start = offset;
                if let Err(e) = fetch(&mut st.data, offset) {
                    st.data.clear();
                    return Err(e);
                }
                buf.copy_from_slice(&st.data[..buf.len()]);
                st.next = end;
            }
            _ => {
                fetch(buf, offset)?;
                stream = Some(Sequential { next: end, ahead: 0, start: offset, data: Vec::new() });
            }
        }
        let mut g = lock()?;
        if g.len() >= STREAMS {
            g.remove(0);
        }
        g.extend(stream);
        Ok(())
    }
}

/// Why a remote store could not be read. Carried inside the `io::Error`s of
/// [`RemoteFile`] reads, so the image reader's messages show it unchanged.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("{url}: the web server does not support range requests (it answered a range request with the whole file)")]
    RangeUnsupported { url: String },
    #[error("{url}: reading bytes {start}..{end} failed after {attempts} attempts (got {got} of them): {last}")]
    Failed { url: String, start: u64, end: u64, attempts: u32, got: u64, last: String },
    #[error("{url}: the server answered {status} {reason}")]
    Status { url: String, status: u16, reason: String },
    #[error("{url}: the file changed on the server while it was read ({what})")]
    Changed { url: String, what: String },
    #[error("{url}: {what}")]
    Protocol { url: String, what: String },
    #[error("{url}: not a usable URL: {why}")]
    BadUrl { url: String, why: String },
    #[error("{url}: the server refused user {user} {}", if *had_password { "with this password" } else { "without a password" })]
    Auth { url: String, user: String, had_password: bool },
    #[error("{url}: the server {host} has no share named {share}")]
    NoShare { url: String, share: String, host: String },
    #[error("{url}: cannot reach the SMB server {server}: {why}")]
    Unreachable { url: String, server: String, why: String },
    #[error("{url}: {what}")]
    Smb { url: String, what: String },
}

impl StoreError {
    pub fn hint(&self) -> &'static str {
        match self {
            StoreError::RangeUnsupported { .. } => {
                "serve the image with a web server that supports Range requests (nginx, Apache, caddy, `pxe-server`), or copy it to a local disk first"
            }
            StoreError::Failed { .. } => "check the network and the server, then run the command again (nothing is fetched that is not needed)",
            StoreError::Status { .. } => "check the URL (and that the server lets this machine read the file)",
            StoreError::Changed { .. } => "the image must not change while it is read: wait for the copy to the server to finish, then run the command again",
            StoreError::Protocol { .. } => "use another web server, or copy the image to a local disk first",
            StoreError::BadUrl { url, .. } if smb::is_smb_url(url) => "give the location as smb://[DOMAIN;]USER@HOST[:PORT]/SHARE/PATH, and the password with --smb-password-file, RESCUE_SMB_PASSWORD or at the prompt",
            StoreError::BadUrl { .. } => "give the image as http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH",
            StoreError::Auth { had_password: false, .. } => "give the password with --smb-password-file FILE or RESCUE_SMB_PASSWORD, or save the share with `rescue shares add NAME URL --save-password`",
            StoreError::Auth { .. } => "check the user name (DOMAIN;USER@ in the URL for a domain account) and the password",
            StoreError::NoShare { .. } => "check the share name; `smbclient -L HOST -U USER` lists the shares of a server",
            StoreError::Unreachable { .. } => "check that the server is on and reachable from this machine (cable, address, firewall on port 445), then run the command again",
            StoreError::Smb { .. } => "check the path on the share and that the user may read and write there",
        }
    }

    /// The store error inside an I/O error, if there is one.
    pub fn find(e: &io::Error) -> Option<&StoreError> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<StoreError>())
    }

    pub fn into_io(self) -> io::Error {
        let kind = match &self {
            StoreError::Status { status: 404 | 410, .. } => io::ErrorKind::NotFound,
            StoreError::Status { status: 401 | 403, .. } | StoreError::Auth { .. } => io::ErrorKind::PermissionDenied,
            StoreError::RangeUnsupported { .. } | StoreError::BadUrl { .. } => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}
