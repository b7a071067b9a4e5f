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
//! Remote stores are read-only and cannot list folders: chain links are found
//! by their recorded file names only (a renamed link is found by its image id
//! on local folders alone). SMB is meant to be added as another [`Store`].

pub mod http;

use std::fs::File;
use std::io;
use std::path::Path;

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

    /// Whether folders of this store can be listed (finding renamed chain
    /// links, `rescue points DIR`).
    fn can_list(&self) -> bool;
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

    fn can_list(&self) -> bool {
        true
    }
}

/// True when `path` is a URL of a remote store.
pub fn is_remote(path: &Path) -> bool {
    path.to_str().is_some_and(|s| http::is_http_url(s))
}

/// The store that holds `path`.
pub fn for_path(path: &Path) -> &'static dyn Store {
    if is_remote(path) {
        &http::HttpStore
    } else {
        &LocalStore
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
            StoreError::BadUrl { .. } => "give the image as http://HOST[:PORT]/PATH or https://HOST[:PORT]/PATH",
        }
    }

    /// The store error inside an I/O error, if there is one.
    pub fn find(e: &io::Error) -> Option<&StoreError> {
        e.get_ref().and_then(|inner| inner.downcast_ref::<StoreError>())
    }

    pub(crate) fn into_io(self) -> io::Error {
        let kind = match &self {
            StoreError::Status { status: 404 | 410, .. } => io::ErrorKind::NotFound,
            StoreError::Status { status: 401 | 403, .. } => io::ErrorKind::PermissionDenied,
            StoreError::RangeUnsupported { .. } | StoreError::BadUrl { .. } => io::ErrorKind::Unsupported,
            _ => io::ErrorKind::Other,
        };
        io::Error::new(kind, self)
    }
}
