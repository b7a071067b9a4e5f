//! Shrinking a filesystem on its way to a smaller target, without ever
//! writing to the source (image or source disk).
//!
//! For each [`FsShrink`] of a plan the executor, before it writes anything to
//! the target:
//! 1. restores (or clones) the partition into a new sparse scratch file in the
//!    scratch folder (`--scratch-dir`, default `/var/tmp`), writing exactly what
//!    a restore onto a disk would write;
//! 2. shrinks the filesystem in that file through a loop device: ext2/3/4 with
//!    `e2fsck -fy` and `resize2fs` (checked against `resize2fs -P` first, then
//!    `e2fsck -fn`), NTFS with `ntfsresize` (checked against `ntfsresize
//!    --info` first, then `ntfsfix -n`);
//! 3. truncates the file to the new size.
//!
//! Then the executor copies the file's data extents (SEEK_DATA/SEEK_HOLE: the
//! holes were never written, like the unused blocks a used-blocks restore
//! skips) onto the target. Scratch files are deleted when dropped, so also on
//! failure, cancellation or panic.
//!
//! Deliberately unsupported: shrinking FAT, exFAT, XFS, btrfs and anything
//! else (the planner keeps those at their size); shrinking in place on the
//! target (a failure would leave a half-moved filesystem there).

#[cfg(unix)]
mod sys;
#[cfg(windows)]
#[path = "shrink/sys_windows.rs"]
mod sys;

use std::fs::File;
use std::io;
#[cfg(unix)]
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::blockdev::{human_size, DiskInfo};
use crate::error::Error;
use crate::exec::{self, LoopDevice, RegionSource};
use crate::layout::{FsShrink, Layout};
use crate::read_at::FileExt;
use crate::task::Task;

/// Where scratch files go unless the user chooses.
pub const DEFAULT_SCRATCH_DIR: &str = "/var/tmp";

/// The scratch space of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Scratch {
    pub dir: PathBuf,
    /// Bytes the scratch files may take at most.
    pub needed: u64,
    /// Free bytes in `dir` when the plan was made.
    pub available: u64,
}

/// Upper bound of the scratch space the shrinks of `layout` take. A scratch
/// file holds what the source writes into it; the resize tool then moves the
/// data that lies past the new end into holes below it (new blocks, at most
/// all the data), and truncating the file frees the old places again. Files
/// are shrunk one after the other and kept until the target is written, so:
/// everything written, plus the most one shrink moves, plus 16 MiB for the
/// metadata the tools rewrite.
pub fn scratch_needed(layout: &Layout) -> u64 {
    let bytes = |s: &FsShrink| layout.moves.iter().find(|m| m.region == s.region).map_or(s.from, |m| m.bytes).min(s.from);
    let written: u64 = layout.shrinks.iter().map(bytes).sum();
    let moved = layout.shrinks.iter().map(|s| bytes(s).min(s.from.saturating_sub(s.to))).max().unwrap_or(0);
    if layout.shrinks.is_empty() {
        0
    } else {
        written + moved + (16 << 20)
    }
}

fn scratch_hint() -> &'static str {
    "choose a folder on another disk with enough free space with --scratch-dir (or RESCUE_SCRATCH_DIR), e.g. on a mounted USB disk"
}

/// Check the scratch folder for `layout`'s shrinks: it exists, is not on the
/// target, and has room.
pub fn plan_scratch(dir: Option<&Path>, layout: &Layout, target: &DiskInfo) -> Result<Scratch, Error> {
    if !cfg!(target_os = "linux") {
        return Err(Error::refused(
            "shrinking filesystems is not supported on this system yet (it needs resize2fs or ntfsresize on a Linux loop device)",
            "restore to a target with room for every partition at its size, or run this restore from the Linux rescue system",
        ));
    }
    let dir = dir.map_or_else(|| PathBuf::from(DEFAULT_SCRATCH_DIR), Path::to_path_buf);
    let needed = scratch_needed(layout);
    let available = check_dir(&dir, needed, target)?;
    Ok(Scratch { dir, needed, available })
}

/// Free bytes of `dir` after checking it can hold `needed` bytes of scratch
/// files and does not live on `target`.
fn check_dir(dir: &Path, needed: u64, target: &DiskInfo) -> Result<u64, Error> {
    let f = File::open(dir).map_err(|e| {
        Error::refused(format!("the scratch folder {} for shrinking filesystems cannot be opened: {e}", dir.display()), scratch_hint())
    })?;
    let m = f.metadata().map_err(Error::io(format!("reading {}", dir.display())))?;
    if !m.is_dir() {
        return Err(Error::refused(format!("the scratch path {} is not a folder", dir.display()), scratch_hint()));
    }
    if exec::lies_on(target, &f) {
        return Err(Error::refused(
            format!("the scratch folder {} lies on the target {}, which the restore overwrites", dir.display(), target.path.display()),
            scratch_hint(),
        ));
    }
    let available = sys::available_bytes(&f).map_err(Error::io(format!("reading the free space of {}", dir.display())))?;
    if available < needed {
        return Err(Error::refused(
            format!(
                "the scratch folder {} has {} free, but shrinking needs up to {} there (the used data of the shrinking filesystems)",
                dir.display(),
                human_size(available),
                human_size(needed)
            ),
            scratch_hint(),
        ));
    }
    Ok(available)
}

/// Check the scratch folder again right before the run (the plan may be old).
pub fn recheck(scratch: &Scratch, target: &DiskInfo) -> Result<(), Error> {
    check_dir(&scratch.dir, scratch.needed, target).map(|_| ())
}

/// A shrunk filesystem in its scratch file; the file is deleted on drop.
#[derive(Debug)]
pub struct Shrunk {
    path: PathBuf,
    file: File,
    len: u64,
    /// What the tools said worth keeping (e.g. a forced resize).
    pub notes: Vec<String>,
}

impl Drop for Shrunk {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// A shrink failed before anything reached the target.
fn failed(s: &FsShrink, what: String) -> Error {
    Error::refused(
        format!("shrinking partition {} ({}) failed, nothing was written to the target: {what}", s.partition, s.fs),
        "check the source filesystem with its checker (e2fsck -fn / ntfsfix -n), or restore to a disk large enough not to shrink",
    )
}

/// Exit code and output of a tool, or a [`failed`] error with its last lines.
fn tool_code(s: &FsShrink, cmd: &mut Command, ok: &dyn Fn(i32) -> bool) -> Result<(i32, String), Error> {
    let name = cmd.get_program().to_string_lossy().into_owned();
    let out = cmd.stdin(std::process::Stdio::null()).output().map_err(|e| failed(s, format!("running {name}: {e} (is it installed?)")))?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    match out.status.code() {
        Some(c) if ok(c) => Ok((c, text)),
        _ => {
            let tail: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
            let tail = tail[tail.len().saturating_sub(3)..].join(" / ");
            Err(failed(s, format!("{name} exited with {}: {tail}", out.status)))
        }
    }
}

/// Output of a tool that must succeed with `ok`.
fn tool(s: &FsShrink, cmd: &mut Command, ok: &dyn Fn(i32) -> bool) -> Result<String, Error> {
    tool_code(s, cmd, ok).map(|(_, text)| text)
}

/// Whether an error was caused by a full filesystem (ENOSPC).
fn is_no_space(e: &Error) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if c.downcast_ref::<io::Error>().is_some_and(|io| io.kind() == io::ErrorKind::StorageFull) {
            return true;
        }
        cur = c.source();
    }
    e.to_string().contains("No space left on device")
}

/// A number after `key` in a tool's output ("Estimated minimum size of the
/// filesystem: 92027", "You might resize at 40361984 bytes").
fn number_after(text: &str, key: &str) -> Option<u64> {
    let at = text.find(key)? + key.len();
    text[at..].trim_start_matches([':', ' ']).split(|c: char| !c.is_ascii_digit()).next()?.parse().ok()
}

fn ext_block_size(dev: &Path) -> Option<u64> {
    let out = Command::new("dumpe2fs").arg("-h").arg(dev).output().ok()?;
    number_after(&String::from_utf8_lossy(&out.stdout), "Block size:")
}

/// Restore region `s.region` of `src` into a scratch file in `dir` and shrink
/// its filesystem to `s.to` bytes there.
pub fn shrink(src: &dyn RegionSource, s: &FsShrink, dir: &Path, task: &Task) -> Result<Shrunk, Error> {
    let path = dir.join(format!("rescue-shrink-{}-part{}-{:08x}.img", std::process::id(), s.partition, u32::from_le_bytes(crate::image::crypto::random())));
    let mut oo = std::fs::OpenOptions::new();
    oo.read(true).write(true).create_new(true);
    #[cfg(unix)]
    oo.mode(0o600);
    let file = oo
        .open(&path)
        .map_err(|e| Error::refused(format!("cannot create a scratch file in {}: {e}", dir.display()), scratch_hint()))?;
    // From here on the guard deletes the file whatever happens.
    let mut out = Shrunk { path, file, len: s.from, notes: Vec::new() };
    out.file.set_len(s.from).map_err(Error::io(format!("sizing the scratch file {}", out.path.display())))?;
    task.progress.note(&format!("partition {}: restoring into scratch file {} to shrink it", s.partition, out.path.display()));
    let f = &out.file;
    let from = s.from;
    let write = |off: u64, data: &[u8]| -> io::Result<()> {
        if off.saturating_add(data.len() as u64) > from {
            return Err(io::Error::other(format!("write at byte {off} lies past the partition end ({from})")));
        }
        f.write_all_at(data, off)
    };
    src.copy(s.region, &write, task).map_err(|e| {
        if is_no_space(&e) {
            Error::refused(
                format!("the scratch folder {} ran out of space while partition {} was restored into it; nothing was written to the target", dir.display(), s.partition),
                scratch_hint(),
            )
        } else {
            e
        }
    })?;
    task.check_cancelled()?;
    task.progress.note(&format!("partition {}: shrinking {} from {} to {}", s.partition, s.fs, human_size(s.from), human_size(s.to)));
    {
        let lo = LoopDevice::attach(&out.path, 0, s.from)?;
        match s.fs.as_str() {
            "ext2" | "ext3" | "ext4" => {
                // 0: clean, 1: errors fixed, 2: fixed, reboot (only matters for a mounted root).
                let (code, _) = tool_code(s, Command::new("e2fsck").args(["-f", "-y"]).arg(&lo.path), &|c| (0..=3).contains(&c))?;
                if code > 0 {
                    out.notes.push(format!("partition {}: e2fsck repaired the copy before shrinking it (the source is unchanged)", s.partition));
                }
                let est = tool(s, Command::new("resize2fs").arg("-P").arg(&lo.path), &|c| c == 0)?;
                let bs = ext_block_size(&lo.path).unwrap_or(4096);
                let min = number_after(&est, "Estimated minimum size of the filesystem").map(|b| b * bs);
                let mut cmd = Command::new("resize2fs");
                if min.is_some_and(|m| m > s.to) {
                    // resize2fs -P errs on the large side, most for small
                    // filesystems with flex_bg; e2fsck below checks the result.
                    out.notes.push(format!(
                        "partition {}: resize2fs estimates a minimum of {}, the plan gives {}: resized with -f, then checked",
                        s.partition,
                        human_size(min.unwrap_or(0)),
                        human_size(s.to)
                    ));
                    cmd.arg("-f");
                }
                tool(s, cmd.arg(&lo.path).arg(format!("{}s", s.to / 512)), &|c| c == 0)?;
            }
            "ntfs" => {
                let info = tool(s, Command::new("ntfsresize").args(["--info", "--force", "--no-progress-bar"]).arg(&lo.path), &|c| c == 0)?;
                if let Some(min) = number_after(&info, "You might resize at") {
                    if min > s.to {
                        return Err(Error::refused(
                            format!(
                                "partition {}: ntfsresize needs at least {} for this NTFS, the plan gives it {}; nothing was written to the target",
                                s.partition,
                                human_size(min),
                                human_size(s.to)
                            ),
                            "choose a larger target disk, or free space in the NTFS first",
                        ));
                    }
                }
                tool(s, Command::new("ntfsresize").args(["--force", "--force", "--no-progress-bar", "--size"]).arg(s.to.to_string()).arg(&lo.path), &|c| c == 0)?;
            }
            other => return Err(failed(s, format!("no shrink tool for {other}"))),
        }
    }
    // Check the result on a device of exactly the new size (NTFS keeps its
    // backup boot sector in the last sector).
    {
        let lo = LoopDevice::attach(&out.path, 0, s.to)?;
        match s.fs.as_str() {
            "ntfs" => tool(s, Command::new("ntfsfix").arg("-n").arg(&lo.path), &|c| c == 0)?,
            _ => tool(s, Command::new("e2fsck").arg("-fn").arg(&lo.path), &|c| c == 0)?,
        };
    }
    out.file.set_len(s.to).map_err(Error::io(format!("truncating the scratch file {}", out.path.display())))?;
    out.len = s.to;
    Ok(out)
}

/// Bytes of the data extents of `sh` (what the source and the tools wrote).
pub fn data_bytes(sh: &Shrunk) -> u64 {
    #[cfg(unix)]
    return sh.file.metadata().map(|m| m.blocks() * 512).unwrap_or(sh.len).min(sh.len);
    #[cfg(not(unix))]
    return sh.len;
}

/// Give the shrunk filesystem's data extents to `write(offset, data)`; holes
/// are skipped without reading them.
pub fn copy_out(sh: &Shrunk, partition: u32, write: &dyn Fn(u64, &[u8]) -> io::Result<()>, task: &Task) -> Result<u64, Error> {
    const BLOCK: u64 = 1 << 20;
    let what = || format!("reading the scratch file {}", sh.path.display());
    task.progress.begin(&format!("writing shrunk partition {partition}"), data_bytes(sh));
    let mut off = 0u64;
    let mut written = 0u64;
    let mut buf = vec![0u8; BLOCK as usize];
    while off < sh.len {
        let Some(start) = sys::next_data(&sh.file, off).map_err(Error::io(what()))? else { break };
        if start >= sh.len {
            break;
        }
        let end = sys::next_hole(&sh.file, start).map_err(Error::io(what()))?.unwrap_or(sh.len).min(sh.len);
        let mut at = start;
        while at < end {
            task.check_cancelled()?;
            let n = (end - at).min(BLOCK) as usize;
            sh.file.read_exact_at(&mut buf[..n], at).map_err(Error::io(what()))?;
            write(at, &buf[..n]).map_err(Error::io(format!("writing shrunk partition {partition} (byte {at})")))?;
            task.progress.advance(n as u64);
            written += n as u64;
            at += n as u64;
        }
        off = end;
    }
    task.progress.finish();
    Ok(written)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (STYLE.md)
mod tests {
    use super::*;

    #[test]
    fn tool_numbers_are_found() {
        assert_eq!(number_after("resize2fs 1.47.0\nEstimated minimum size of the filesystem: 92027\n", "Estimated minimum size of the filesystem"), Some(92027));
        assert_eq!(number_after("You might resize at 40361984 bytes or 41 MB (freeing 85 MB).", "You might resize at"), Some(40361984));
        assert_eq!(number_after("nothing here", "You might resize at"), None);
    }

    // Hole maps come from the filesystem holding the scratch file: Unix only
    // (shrinking is refused elsewhere).
    #[cfg(unix)]
    #[test]
    fn copy_out_skips_holes() {
        let d = tempfile::tempdir().unwrap();
        let path = d.path().join("s.img");
        let file = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(&path).unwrap();
        file.set_len(8 << 20).unwrap();
        file.write_all_at(&[1u8; 4096], 1 << 20).unwrap();
        file.write_all_at(&[2u8; 4096], 6 << 20).unwrap();
        let sh = Shrunk { path: path.clone(), file, len: 4 << 20, notes: Vec::new() };
        let seen = std::sync::Mutex::new(Vec::new());
        let n = copy_out(&sh, 1, &|off, data| {
            seen.lock().unwrap().push((off, data.len(), data[0]));
            Ok(())
        }, &Task::default())
        .unwrap();
        // Only the data below the new end; the filesystem's block size is the
        // granularity of the hole map.
        let seen = seen.into_inner().unwrap();
        assert!(seen.iter().all(|&(off, len, b)| off >= 1 << 20 && off + len as u64 <= (1 << 20) + 65536 && (b == 1 || b == 0)), "{seen:?}");
        assert!((4096..1 << 20).contains(&n), "{n}");
        drop(sh);
        assert!(!path.exists(), "the scratch file outlived its guard");
    }
}
