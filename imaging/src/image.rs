//! The image format: one file (or a split set `.001`, `.002`, ...) per backup
//! point.
//!
//! Layout of the *logical stream* (the concatenation of the volumes' payloads,
//! each volume file starting with a 64-byte [`format::VolumeHeader`]):
//!
//! ```text
//! Header (512 bytes: magic, image id, chunk size, KDF parameters, key check)
//! frames ...            compressed (and encrypted) groups of chunks
//! index segments ...    per region: frame table + chunk entries (with hashes)
//! catalog               JSON (zstd, encrypted): disk, table, regions, options
//! Footer (128 bytes)    catalog offset/length/hash; written last
//! ```
//!
//! A chunk is a fixed-size window of a region (partition, boot gap, or the
//! whole disk) whose unused blocks read as zero; its identity is the BLAKE3 of
//! its plaintext (keyed when encrypted). Chunks are grouped into frames of up
//! to [`format::FRAME_TARGET`] bytes for compression. Every checksum lives in
//! the index or the catalog, none in the data stream. The footer is written
//! last, so a truncated image is always detected.

pub mod crypto;
pub mod format;
pub mod reader;
pub(crate) mod resume;
pub mod view;
pub mod volume;
pub mod writer;

pub use format::{Catalog, CopyMode, Region, RegionKind};
pub use reader::{ChangedChunks, ImageReader};
pub use writer::{ImageWriter, WriterOptions};

use std::path::PathBuf;

/// Errors of the image format (reading, writing, verifying).
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("{}", io_message(path, source))]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a rescue image (bad magic at byte {offset})")]
    NotAnImage { path: PathBuf, offset: u64 },
    #[error("{path}: image format version {version} is not supported (this build reads version {supported})")]
    Version { path: PathBuf, version: u32, supported: u32 },
    #[error("image is incomplete: {what}")]
    Incomplete { what: String },
    #[error("volume {index} of the image is missing (expected {path})")]
    MissingVolume { index: u32, path: PathBuf },
    #[error("{path} is not volume {expected} of this image: {what}")]
    WrongVolume { path: PathBuf, expected: u32, what: String },
    #[error("this backup point depends on {kind} point #{sequence} ({file}), which {why}")]
    MissingLink { file: String, kind: String, sequence: u32, why: String },
    #[error("image is encrypted: a password is needed")]
    PasswordNeeded,
    #[error("wrong password for this image")]
    WrongPassword,
    #[error("corrupt image: {what} at logical offset {offset} (volume {volume}, byte {volume_offset})")]
    Corrupt { what: String, offset: u64, volume: u32, volume_offset: u64 },
    #[error("bad chunk: region {region} chunk {chunk} (disk offset {disk_offset}): {what}")]
    BadChunk { region: u32, chunk: u64, disk_offset: u64, what: String },
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("cannot resume: {0}")]
    Resume(String),
    #[error(transparent)]
    Cancelled(#[from] crate::task::Cancelled),
}

/// "PATH: why", or just "why" when a store's error already names the file
/// (its messages start with the URL).
fn io_message(path: &std::path::Path, source: &std::io::Error) -> String {
    match crate::store::StoreError::find(source) {
        Some(_) => source.to_string(),
        None => format!("{}: {source}", path.display()),
    }
}

impl ImageError {
    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            ImageError::Io { source, .. } => match crate::store::StoreError::find(source) {
                Some(e) => e.hint(),
                None => "check that the path exists, is readable, and the medium is healthy",
            },
            ImageError::NotAnImage { .. } => "pass the image file written by `rescue backup` (for a split image, its .001 volume)",
            ImageError::Version { .. } => "use the rescue version that wrote the image or a newer one",
            ImageError::Resume(_) => "run the backup again without --resume (the partial file is replaced by a new backup)",
            ImageError::Incomplete { .. } => "the backup was interrupted or a volume is missing: copy all volumes again, or make a new backup",
            ImageError::MissingVolume { .. } => "put every volume (.001, .002, ...) of the image in the same folder",
            ImageError::WrongVolume { .. } => "a volume file was renamed or belongs to another backup: put the right volumes side by side",
            ImageError::MissingLink { .. } => {
                "keep every file of the backup chain in one folder (`rescue points DIR` shows the chain and what is missing), or restore an intact point"
            }
            ImageError::PasswordNeeded => "give the password with --password-file, RESCUE_PASSWORD, or run on a terminal to be asked",
            ImageError::WrongPassword => "check the password (it is case-sensitive) and try again",
            ImageError::Corrupt { .. } | ImageError::BadChunk { .. } => {
                "the image is damaged: restore from another copy of it; `rescue check` shows the first bad place"
            }
            ImageError::Invalid(_) => "check the command's arguments (see --help)",
            ImageError::Cancelled(_) => "nothing more to do: the operation stopped at your request",
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        ImageError::Io { path: path.into(), source }
    }

    /// True for errors that mean the image's content failed verification.
    pub fn is_verification_failure(&self) -> bool {
        matches!(
            self,
            ImageError::Corrupt { .. }
                | ImageError::BadChunk { .. }
                | ImageError::Incomplete { .. }
                | ImageError::MissingVolume { .. }
                | ImageError::WrongVolume { .. }
                | ImageError::MissingLink { .. }
        )
    }
}

/// Compression setting chosen by the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Fast,
    #[default]
    Normal,
    High,
}

impl Compression {
    /// zstd level, or None for no compression.
    pub fn zstd_level(self) -> Option<i32> {
        match self {
            Compression::None => None,
            Compression::Fast => Some(1),
            Compression::Normal => Some(3),
            Compression::High => Some(12),
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "fast" => Some(Self::Fast),
            "normal" => Some(Self::Normal),
            "high" => Some(Self::High),
            _ => None,
        }
    }
}
