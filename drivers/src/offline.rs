//! Finding and mounting the offline system on a target disk, for `rescue
//! universal-restore`: every NTFS partition of the disk is mounted
//! (`imaging::mount`: ntfs-3g on the partition's node, or on a loop device
//! over its byte range, so disk image files and disks without partition
//! nodes work alike) and searched for Windows installations. Mounts and loop
//! devices are released on drop. On Windows the disk's volumes are Windows'
//! own and are searched where they are.

use std::path::{Path, PathBuf};

#[cfg(not(windows))]
use imaging::fs::FsKind;
#[cfg(not(windows))]
use imaging::inventory;

use crate::windows::{self, WindowsInstall};

#[derive(Debug, thiserror::Error)]
pub enum OfflineError {
    #[error("{0}")]
    Inspect(String),
    #[error("{disk} has no NTFS partition{}", .part.map(|p| format!(" {p}")).unwrap_or_default())]
    NoNtfs { disk: String, part: Option<u32> },
    #[error("partition {part} of {disk} is in use: {why}")]
    Busy { disk: String, part: u32, why: String },
    #[error("mounting partition {part} of {disk}: {detail}")]
    Mount { disk: String, part: u32, detail: String },
    #[error("no Windows installation found on {disk} (searched partitions {searched})")]
    NoWindows { disk: String, searched: String },
    #[error(transparent)]
    Windows(#[from] windows::WindowsError),
}

impl OfflineError {
    pub fn hint(&self) -> &'static str {
        match self {
            OfflineError::Inspect(_) => "check the disk path (see `rescue disks`)",
            OfflineError::NoNtfs { .. } | OfflineError::NoWindows { .. } => {
                "restore the Windows system first, or name the partition that holds it with --part N"
            }
            OfflineError::Busy { .. } => "unmount the partition first",
            OfflineError::Mount { .. } => {
                "if Windows was hibernated or shut down with Fast Startup, boot it once and shut it down fully, or run `ntfsfix` on the partition"
            }
            OfflineError::Windows(e) => e.hint(),
        }
    }
}

/// An NTFS partition mounted on a private directory (`imaging::mount`:
/// ntfs-3g on the partition's node or a loop device over its range);
/// unmounted on drop. On Windows the volume is Windows' own
/// (`\\?\Volume{GUID}\`): nothing was mounted and nothing is released.
#[derive(Debug)]
pub struct MountedVolume {
    pub partition: u32,
    pub dir: PathBuf,
    _mount: Option<Mount>,
}

#[cfg(not(windows))]
type Mount = imaging::mount::MountedPartition;
#[cfg(windows)]
type Mount = ();

pub use imaging::exec::wait_for_process_using;

/// A Windows installation found on a mounted partition.
#[derive(Debug)]
pub struct FoundWindows {
    pub volume: MountedVolume,
    pub installs: Vec<WindowsInstall>,
}


/// Mount the NTFS partitions of `disk` (or only `part`) and find Windows on
/// them. `write`: mount read-write (to apply a plan).
#[cfg(not(windows))]
pub fn find_windows(disk: &Path, part: Option<u32>, write: bool) -> Result<Vec<FoundWindows>, OfflineError> {
    let report = inventory::inspect(disk, None).map_err(|e| OfflineError::Inspect(e.to_string()))?;
    let candidates: Vec<_> = report
        .partitions
        .iter()
        .filter(|p| part.is_none_or(|n| n == p.partition.number))
        .filter(|p| p.fs.as_ref().is_some_and(|f| f.kind == FsKind::Ntfs))
        .collect();
    if candidates.is_empty() {
        return Err(OfflineError::NoNtfs { disk: disk.display().to_string(), part });
    }
    let name = disk.display().to_string();
    let mounted = candidates.iter().map(|p| {
        if !p.busy.is_empty() {
            return Err(OfflineError::Busy { disk: name.clone(), part: p.partition.number, why: p.busy.join(", ") });
        }
        let number = p.partition.number;
        let base = imaging::mount::base_dir();
        let mounted = if write { imaging::mount::mount_rw(&report, number, &base) } else { imaging::mount::mount_ro(&report, number, &base) };
        let m = mounted.map_err(|e| OfflineError::Mount { disk: name.clone(), part: number, detail: e.to_string() })?;
        Ok(MountedVolume { partition: number, dir: m.dir.clone(), _mount: Some(m) })
    });
    search(&name, mounted)
}

/// Search each volume for Windows, in order; volumes without it (System
/// Reserved, recovery, data) are passed over (and released), and none
/// with Windows is an error naming the partitions searched.
fn search(disk: &str, volumes: impl IntoIterator<Item = Result<MountedVolume, OfflineError>>) -> Result<Vec<FoundWindows>, OfflineError> {
    let mut found = Vec::new();
    let mut searched = Vec::new();
    for vol in volumes {
        let vol = vol?;
        searched.push(vol.partition.to_string());
        match windows::find_installations(&vol.dir) {
            Ok(installs) => found.push(FoundWindows { volume: vol, installs }),
            Err(windows::WindowsError::NotFound { .. }) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if found.is_empty() {
        return Err(OfflineError::NoWindows { disk: disk.to_string(), searched: searched.join(", ") });
    }
    Ok(found)
}

/// Which volumes of a disk to search for Windows (`part`: only that
/// partition's), given each volume's (partition, spans other disks): those
/// on one partition of this disk alone. Spanned volumes (dynamic disks,
/// Storage Spaces) are left out: their data is not all here.
pub fn volume_candidates(vols: impl IntoIterator<Item = (Option<u32>, bool)>, part: Option<u32>) -> Vec<usize> {
    vols.into_iter()
        .enumerate()
        .filter(|(_, (p, spans))| !spans && p.is_some_and(|n| part.is_none_or(|want| want == n)))
        .map(|(i, _)| i)
        .collect()
}

/// On Windows (WinPE) the restored disk's volumes are Windows' own: find
/// Windows on each volume of `\\.\PhysicalDriveN` by its GUID path; nothing
/// is mounted. Right after a restore Windows takes a moment to bring the new
/// volumes up, so an empty list is asked again for up to 20 s. A disk image
/// file has no volumes here: refused with the way that works.
#[cfg(windows)]
pub fn find_windows(disk: &Path, part: Option<u32>, _write: bool) -> Result<Vec<FoundWindows>, OfflineError> {
    let name = disk.display().to_string();
    let n = imaging::blockdev::disk_number(disk).map_err(|e| OfflineError::Inspect(format!("{name} is not a disk Windows mounts volumes of ({e}): give the Windows folder with --windows-dir, e.g. D:\\Windows")))?;
    let pick = |v: &[imaging::blockdev::Volume]| volume_candidates(v.iter().map(|x| (x.partition, x.spans_disks)), part);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let vols = loop {
        let v = imaging::blockdev::volumes_on_disk(n).map_err(|e| OfflineError::Inspect(format!("listing the volumes of {name}: {e}")))?;
        if !pick(&v).is_empty() || std::time::Instant::now() >= deadline {
            break v;
        }
        std::thread::sleep(std::time::Duration::from_millis(500));
    };
    let candidates: Vec<&imaging::blockdev::Volume> = pick(&vols).into_iter().map(|i| &vols[i]).collect();
    if candidates.is_empty() {
        return Err(OfflineError::NoNtfs { disk: name, part });
    }
    search(&name, candidates.iter().map(|v| Ok(MountedVolume { partition: v.partition.unwrap_or(0), dir: PathBuf::from(&v.guid_path), _mount: None })))
}

/// The installation(s) in a folder that is already reachable, as on WinPE
/// where the restored Windows is a drive letter: `dir` is either a Windows
/// folder (`D:\Windows`: the one holding `System32\config\SYSTEM`) or the root
/// of its volume (`D:\`, searched like a mounted partition). Nothing is
/// mounted, so nothing needs releasing.
pub fn windows_in_dir(dir: &Path) -> Result<Vec<WindowsInstall>, OfflineError> {
    let root = dir.parent().unwrap_or(dir);
    if let Some(found) = windows::installation_in(root, dir)? {
        return Ok(vec![found]);
    }
    Ok(windows::find_installations(dir)?)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (STYLE.md)
mod tests {
    use super::*;

    #[test]
    fn volumes_searched_for_windows() {
        // (partition, spans disks): a volume on no partition of this disk
        // (its extent does not start one), a spanned one, two plain ones.
        let vols = [(None, false), (Some(1), true), (Some(2), false), (Some(3), false)];
        assert_eq!(volume_candidates(vols, None), vec![2, 3]);
        assert_eq!(volume_candidates(vols, Some(3)), vec![3]);
        assert_eq!(volume_candidates(vols, Some(1)), Vec::<usize>::new());
    }

    #[test]
    fn windows_dir_or_volume_root() {
        let d = tempfile::tempdir().unwrap();
        let win = d.path().join("Windows");
        let cfg = win.join("System32/config");
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::write(cfg.join("SYSTEM"), crate::testutil::regipy("SYSTEM")).unwrap();
        let a = windows_in_dir(&win).unwrap();
        assert_eq!(a.len(), 1);
        assert_eq!((a[0].windows_dir.as_path(), a[0].root.as_path()), (win.as_path(), d.path()));
        let b = windows_in_dir(d.path()).unwrap();
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].system_hive, a[0].system_hive);
        let e = windows_in_dir(&cfg).unwrap_err();
        assert!(e.to_string().contains("no Windows installation"), "{e}");
    }
}
