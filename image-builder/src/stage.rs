//! Staging directories for the filesystem images of the media: files with
//! fixed mtimes (`SOURCE_DATE_EPOCH`), package files read with a hint naming
//! the package, host tools run with their failure tail, and the FAT image
//! (`mkfs.vfat` + `mcopy`, reproducible) that the ISO's and the USB image's
//! EFI system partitions are made of.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::{Error, Result};

/// `SOURCE_DATE_EPOCH` as a file time.
pub fn mtime(sde: u32) -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(sde))
}

/// Run a host tool; on failure the error names the command, the last lines
/// of its stderr and the Debian package that provides it.
pub fn run(cmd: &mut Command, package: &str) -> Result<()> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| Error::Tool {
        cmd: shown.clone(),
        detail: e.to_string(),
        package: Some(package.into()),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(4).collect();
        return Err(Error::Tool {
            cmd: shown,
            detail: format!(
                "{} ({})",
                tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
                out.status
            ),
            package: Some(package.into()),
        });
    }
    Ok(())
}

/// Write `data` to `dir/rel` (creating directories) with the given mtime.
pub fn put(dir: &Path, rel: &str, data: &[u8], mtime: SystemTime) -> Result<PathBuf> {
    let p = dir.join(rel);
    if let Some(parent) = p.parent() {
        fs::create_dir_all(parent).map_err(|e| Error::io("creating", parent, e))?;
    }
    fs::write(&p, data).map_err(|e| Error::io("writing", &p, e))?;
    set_mtime(&p, mtime)?;
    Ok(p)
}

/// Set the mtime of one file.
pub fn set_mtime(p: &Path, mtime: SystemTime) -> Result<()> {
    fs::File::options()
        .write(true)
        .open(p)
        .and_then(|f| f.set_modified(mtime))
        .map_err(|e| Error::io("setting the mtime of", p, e))
}

/// Set the mtime of `dir` and every directory below it (files were set by
/// [`put`]; directories change whenever an entry is added).
pub fn set_dir_mtimes(dir: &Path, mtime: SystemTime) -> Result<()> {
    for e in fs::read_dir(dir).map_err(|e| Error::io("listing", dir, e))? {
        let e = e.map_err(|e| Error::io("listing", dir, e))?;
        if e.file_type()
            .map_err(|err| Error::io("listing", &e.path(), err))?
            .is_dir()
        {
            set_dir_mtimes(&e.path(), mtime)?;
        }
    }
    fs::File::open(dir)
        .and_then(|f| f.set_modified(mtime))
        .map_err(|e| Error::io("setting the mtime of", dir, e))
}

/// A file of an unpacked package; a missing file names the package.
pub fn read_pkg(root: &Path, rel: &str, package: &str) -> Result<Vec<u8>> {
    let p = root.join(rel);
    fs::read(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Missing {
            what: format!("{rel} of package {package}"),
            path: p,
            package: Some(package.into()),
        },
        _ => Error::io("reading", &p, e),
    })
}

/// How a FAT image is made.
pub struct Fat<'a> {
    /// Volume id, 8 hex digits.
    pub volume_id: &'a str,
    /// Up to 11 characters.
    pub label: &'a str,
    pub size_kib: u64,
    /// FAT32 (`-F 32`, what the UEFI specification asks of an ESP on a
    /// fixed disk) instead of letting mkfs.vfat choose by size.
    pub fat32: bool,
    pub sde: u32,
}

/// Make the FAT image `img` holding every top-level entry of `dir`, with
/// `--invariant` and the mtimes of the staged files (mtools takes its own
/// timestamps from `SOURCE_DATE_EPOCH`).
pub fn fat_image(dir: &Path, img: &Path, fat: &Fat) -> Result<()> {
    set_dir_mtimes(dir, mtime(fat.sde))?;
    let mut mkfs = Command::new("mkfs.vfat");
    mkfs.args(["--invariant", "-i", fat.volume_id, "-n", fat.label]);
    if fat.fat32 {
        // One sector per cluster: FAT32 needs 65525 clusters, which 512-byte
        // clusters reach from 32 MiB on.
        mkfs.args(["-F", "32", "-s", "1"]);
    }
    run(
        mkfs.arg("-C")
            .arg(img)
            .arg(fat.size_kib.to_string())
            .env("SOURCE_DATE_EPOCH", fat.sde.to_string()),
        "dosfstools",
    )?;
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io("listing", dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    run(
        Command::new("mcopy")
            .args(["-s", "-m", "-i"])
            .arg(img)
            .args(&entries)
            .arg("::/")
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("SOURCE_DATE_EPOCH", fat.sde.to_string()),
        "mtools",
    )
}
