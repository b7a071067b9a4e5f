//! `image-builder`: the boot media of the rescue environment, built
//! unprivileged (no root, loop devices or mounts) and reproducibly (same
//! inputs and `SOURCE_DATE_EPOCH`: same bytes).
//!
//! - [`cpio`]: the newc archive writer (and a reader for checks).
//! - [`elf`]: `.modinfo`, interpreter and `DT_NEEDED` of ELF files.
//! - [`deb`]: Debian packages fetched with `apt-get download` into a cache
//!   and unpacked with `dpkg-deb -x`.
//! - [`kmod`]: the module subset and its `modules.dep`/`modules.alias`.
//! - [`firmware`]: NIC firmware from Debian's `non-free-firmware` packages,
//!   fetched through a private apt setup in the cache.
//! - [`tools`]: host programs with exactly the shared libraries they need.
//! - [`initramfs`]: puts it together; [`report`]: what went in.
//! - [`pxe`]: the network boot bundle and its manifest; [`iso`]: the hybrid
//!   ISO; [`usb`]: the USB stick image and writing it to a stick
//!   ([`usb::flash`]); [`wim`]: WinPE with `rescue.exe`.
//! - [`stage`]: staging directories and FAT images; [`exfat`]: the exFAT
//!   boot-sector facts the USB image needs.

pub mod cpio;
pub mod deb;
pub mod elf;
pub mod exfat;
pub mod firmware;
pub mod initramfs;
pub mod iso;
pub mod kmod;
pub mod pxe;
pub mod report;
pub mod stage;
pub mod tools;
pub mod usb;
pub mod wim;

use std::path::{Path, PathBuf};

/// Everything that can go wrong while building media.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{what} not found at {path}")]
    Missing {
        what: String,
        path: PathBuf,
        package: Option<String>,
    },
    #[error("{path} is not a static executable (it asks for the interpreter {interp})")]
    NotStatic { path: PathBuf, interp: String },
    #[error("`{cmd}` failed: {detail}")]
    Tool {
        cmd: String,
        detail: String,
        package: Option<String>,
    },
    #[error("module {module} in {root} depends on {dependency}, which is neither a module file nor built in")]
    BrokenKernel {
        module: String,
        dependency: String,
        root: PathBuf,
    },
    #[error("shared library {soname} needed by {by} not found in {searched}")]
    Library {
        soname: String,
        by: PathBuf,
        searched: String,
    },
    #[error("archive: {0}")]
    Archive(#[from] cpio::PathError),
    #[error(transparent)]
    Elf(#[from] elf::ElfError),
    #[error("module names not found in kernel {version}: {names}")]
    UnknownModules { version: String, names: String },
    #[error("--add-file {0:?} is not SRC:DEST with an absolute DEST")]
    BadAddFile(String),
    #[error("partition table: {0}")]
    Table(#[from] imaging::part::PartError),
    #[error(transparent)]
    Exfat(#[from] exfat::ExfatError),
}

impl Error {
    pub fn io(action: &'static str, path: &Path, source: std::io::Error) -> Error {
        Error::Io {
            action,
            path: path.to_path_buf(),
            source,
        }
    }

    /// What the user can do about it.
    pub fn hint(&self) -> Option<String> {
        match self {
            Error::Missing { package: Some(p), .. } | Error::Tool { package: Some(p), .. } => {
                Some(format!("install or download the Debian package `{p}` (apt-get install {p}), then run again"))
            }
            Error::Missing { what, .. } if what.starts_with("module") => {
                Some("module names are file names without .ko, e.g. `nvme` or `usb-storage`".into())
            }
            Error::NotStatic { .. } => Some(
                "build it for musl: rustup target add x86_64-unknown-linux-musl; apt-get install musl-tools; \
                 CC_x86_64_unknown_linux_musl=musl-gcc cargo build --release --target x86_64-unknown-linux-musl -p rescue-tui -p rescue-init"
                    .into(),
            ),
            Error::Library { soname, .. } => Some(format!(
                "install the package providing {soname} (dpkg -S {soname} on a machine that has it)"
            )),
            Error::UnknownModules { .. } => Some(
                "check the names with `find /lib/modules -name 'NAME*.ko*'` in the kernel package; names are file names without .ko"
                    .into(),
            ),
            Error::BrokenKernel { .. } => Some("the kernel package looks incomplete: delete it from the cache and run again".into()),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The cache for downloaded packages: `$RESCUE_BUILD_CACHE`, else
/// `$XDG_CACHE_HOME/rescue-image-builder`, else `~/.cache/rescue-image-builder`.
pub fn default_cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("RESCUE_BUILD_CACHE").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("rescue-image-builder");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp"));
    home.join(".cache").join("rescue-image-builder")
}

/// `SOURCE_DATE_EPOCH` as the archive mtime (0 when unset or invalid, so
/// that builds are reproducible by default).
pub fn source_date_epoch() -> u32 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Write `data` to `path` through a temp file in the same directory and a
/// rename, so a reader never sees half a file.
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp{}", std::process::id()));
    std::fs::write(&tmp, data).map_err(|e| Error::io("writing", &tmp, e))?;
    std::fs::rename(&tmp, path).map_err(|e| Error::io("renaming into place", path, e))
}
