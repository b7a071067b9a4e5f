//! `image-builder usb --write DEV`: put the USB image onto a stick with the
//! safety rules of `rescue restore` (they come from the same library,
//! `imaging`):
//!
//! - refuse a target that is mounted, swap, held by LVM/md/dm, attached as
//!   a loop device that is in use, holds the image file, is the image file,
//!   is read-only, is smaller than the image or has 4096-byte sectors;
//! - [`plan`] first: a serializable [`Plan`] naming the target by model,
//!   serial and size, the partition table after, and what happens to the
//!   data partition; the binary shows it and asks to type the disk's name
//!   (`--yes` skips only that question);
//! - [`execute`] opens the target exclusively (`O_EXCL` on block devices, a
//!   lock on files), re-checks its identity, blanks the old partition tables
//!   first and writes the new one last, so an interrupted run leaves a disk
//!   that looks empty, and verifies what it wrote after flushing the
//!   device's cache.
//!
//! The data partition grows to fill the stick: an empty exFAT (what the
//! builder makes) is made anew at the full size — only its metadata at the
//! start is written; exFAT has no resize tool — and a non-empty one is kept
//! as it is; ext4 is copied and grown with `resize2fs`, addressed as
//! `DEV?offset=N` (e2fsprogs' unix I/O option) while the disk has no
//! partition table yet, so no desktop automounter can get to it first. The
//! stick gets new random GUIDs: two sticks written from one image must not
//! share a disk GUID (Windows takes the second disk offline).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use imaging::blockdev::{self, human_size, DiskInfo, DiskKind, TargetDisk};
use imaging::part::{self, PartitionTable, TableKind};
use imaging::Error;
use sha2::{Digest, Sha256};

use super::{DataFs, DATA_NUMBER, ESP_NUMBER, MIB, SECTOR};

/// What happens to the data partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataAction {
    /// An empty exFAT, made anew at the new size.
    Recreate,
    /// ext4, copied then grown by `resize2fs`.
    Resize,
    /// exFAT with files in it: copied as it is, not grown.
    Keep,
}

/// The data partition before and after.
#[derive(Debug, Clone, serde::Serialize)]
pub struct DataPlan {
    pub partition: u32,
    pub fs: DataFs,
    pub start: u64,
    /// Size in the image.
    pub from: u64,
    /// Size on the stick.
    pub to: u64,
    pub action: DataAction,
}

/// What `--write` will do; shown before it is done.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Plan {
    pub image: PathBuf,
    pub image_size: u64,
    pub target: DiskInfo,
    /// The target's partition table now, when it has one.
    pub table_before: Option<PartitionTable>,
    pub table_after: PartitionTable,
    pub data: Option<DataPlan>,
    /// Things to look at twice (not refusals).
    pub warnings: Vec<String>,
}

/// What happened.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Outcome {
    pub bytes_written: u64,
    pub seconds: f64,
    pub notes: Vec<String>,
}

fn refused(reason: String, hint: &str) -> Error {
    Error::refused(reason, hint)
}

fn io(what: String) -> impl FnOnce(std::io::Error) -> Error {
    Error::io(what)
}

/// Plan writing `image` (open as `image_file`) to `target`.
pub fn plan(image: &Path, image_file: &File, target: &Path) -> Result<Plan, Error> {
    let image_size = image_file
        .metadata()
        .map_err(io(format!("reading {}", image.display())))?
        .len();
    let not_ours = |why: String| {
        refused(
            format!("{} is not a rescue USB image: {why}", image.display()),
            "build one with `image-builder usb -o FILE`",
        )
    };
    let table = part::read(image_file, image_size, SECTOR as u32)?
        .ok_or_else(|| not_ours("it has no partition table".into()))?;
    if table.kind != TableKind::Gpt
        || !table
            .partitions
            .iter()
            .any(|p| p.number == ESP_NUMBER && p.ptype.is_esp())
    {
        return Err(not_ours(format!(
            "partition {ESP_NUMBER} is not an EFI system partition on a GPT"
        )));
    }

    let disk = blockdev::probe_disk(target, Some(SECTOR as u32))?;
    let reasons = blockdev::busy_reasons(&disk);
    if !reasons.is_empty() {
        return Err(blockdev::BlockError::Busy {
            path: disk.path.clone(),
            reasons: reasons.join("; "),
        }
        .into());
    }
    imaging::exec::refuse_if_target_holds(&disk, &[(image.to_path_buf(), image_file)])?;
    if disk.read_only {
        return Err(refused(
            format!("{} is read-only", disk.describe()),
            "move the stick's write-protect switch, or choose another disk",
        ));
    }
    if disk.logical_sector_size != SECTOR as u32 {
        return Err(refused(
            format!(
                "{} has {}-byte sectors; the image is made for 512-byte sectors",
                disk.describe(),
                disk.logical_sector_size
            ),
            "use a USB stick (they have 512-byte sectors), not a 4Kn disk",
        ));
    }
    if disk.size < image_size {
        return Err(refused(
            format!(
                "{} is smaller than the image ({})",
                disk.describe(),
                human_size(image_size)
            ),
            "use a bigger stick",
        ));
    }

    let mut after = table.clone();
    after.disk_id = part::new_guid();
    for p in &mut after.partitions {
        p.guid = Some(part::new_guid());
    }
    // The data partition ends at the last whole MiB before the backup GPT.
    let usable_end = (disk.size / SECTOR).saturating_sub(33) * SECTOR;
    let new_end = usable_end / MIB * MIB;
    let mut data = None;
    if let Some(p) = after
        .partitions
        .iter_mut()
        .find(|p| p.number == DATA_NUMBER)
    {
        let fs = DataFs::detect(image_file, p.start).ok_or_else(|| {
            not_ours(format!(
                "partition {DATA_NUMBER} holds neither exFAT nor ext4"
            ))
        })?;
        let action = match fs {
            DataFs::Ext4 => DataAction::Resize,
            DataFs::Exfat => {
                let v = crate::exfat::Volume::open(image_file, p.start)
                    .map_err(|e| not_ours(e.to_string()))?;
                if v.is_empty(image_file)
                    .map_err(|e| not_ours(e.to_string()))?
                {
                    DataAction::Recreate
                } else {
                    DataAction::Keep
                }
            }
        };
        let from = p.len;
        let to = if action == DataAction::Keep || new_end <= p.start + from {
            from
        } else {
            new_end - p.start
        };
        p.len = to;
        data = Some(DataPlan {
            partition: p.number,
            fs,
            start: p.start,
            from,
            to,
            action,
        });
    }
    after.last_usable = usable_end;

    let mut warnings = Vec::new();
    if disk.kind == DiskKind::Block && !disk.removable && disk.transport.as_deref() != Some("usb") {
        warnings.push(format!(
            "{} is neither removable nor on USB: make sure it is the disk you mean",
            disk.path.display()
        ));
    }
    let table_before = match File::open(&disk.path) {
        Ok(f) => part::read(&f, disk.size, SECTOR as u32).ok().flatten(),
        Err(_) => None,
    };
    Ok(Plan {
        image: image.to_path_buf(),
        image_size,
        target: disk,
        table_before,
        table_after: after,
        data,
        warnings,
    })
}

impl Plan {
    /// The plan in a few lines for a person.
    pub fn describe(&self) -> String {
        let t = &self.target;
        let mut s = format!(
            "Write {} ({}) to:\n  {}\n  model {}, serial {}, {}, {} bytes, transport {}{}\n",
            self.image.display(),
            human_size(self.image_size),
            t.path.display(),
            t.model.as_deref().unwrap_or("?"),
            t.serial.as_deref().unwrap_or("?"),
            human_size(t.size),
            t.size,
            t.transport.as_deref().unwrap_or("?"),
            if t.removable { ", removable" } else { "" },
        );
        match &self.table_before {
            Some(b) if !b.partitions.is_empty() => {
                s.push_str("  Everything on it is lost, now:\n");
                for p in &b.partitions {
                    s.push_str(&format!(
                        "    partition {}: {} {}{}\n",
                        p.number,
                        human_size(p.len),
                        p.ptype.describe(),
                        if p.name.is_empty() {
                            String::new()
                        } else {
                            format!(" \"{}\"", p.name)
                        }
                    ));
                }
            }
            _ => s.push_str("  It has no partition table now.\n"),
        }
        s.push_str("  After:\n");
        for p in &self.table_after.partitions {
            s.push_str(&format!(
                "    partition {}: {} {} \"{}\"\n",
                p.number,
                human_size(p.len),
                p.ptype.describe(),
                p.name
            ));
        }
        if let Some(d) = &self.data {
            let what = match d.action {
                DataAction::Recreate => {
                    format!("an empty {} made at {}", d.fs.name(), human_size(d.to))
                }
                DataAction::Resize => format!(
                    "{} grown from {} to {}",
                    d.fs.name(),
                    human_size(d.from),
                    human_size(d.to)
                ),
                DataAction::Keep => format!(
                    "{} with files, copied at {} (exFAT cannot be grown)",
                    d.fs.name(),
                    human_size(d.from)
                ),
            };
            s.push_str(&format!("  Data partition {}: {what}\n", d.partition));
        }
        for w in &self.warnings {
            s.push_str(&format!("  WARNING: {w}\n"));
        }
        s
    }
}

const CHUNK: usize = 4 << 20;

/// Copy `len` bytes of `src` at `from` to the target at `to`; returns the
/// SHA-256 of what was written.
fn copy(
    src: &File,
    src_name: &Path,
    from: u64,
    len: u64,
    dst: &dyn imaging::read_at::FileExt,
    to: u64,
) -> Result<[u8; 32], Error> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK as u64) as usize;
        src.read_exact_at(&mut buf[..n], from + done)
            .map_err(io(format!("reading {}", src_name.display())))?;
        dst.write_all_at(&buf[..n], to + done)
            .map_err(io(format!("writing the target at byte {}", to + done)))?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(h.finalize().into())
}

fn hash_range(f: &dyn imaging::read_at::FileExt, off: u64, len: u64) -> Result<[u8; 32], Error> {
    let mut h = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(CHUNK as u64) as usize;
        f.read_exact_at(&mut buf[..n], off + done)
            .map_err(io(format!(
                "reading back the target at byte {}",
                off + done
            )))?;
        h.update(&buf[..n]);
        done += n as u64;
    }
    Ok(h.finalize().into())
}

fn tool(cmd: &mut Command, name: &str, ok_codes: &[i32]) -> Result<(), Error> {
    let out = cmd.output().map_err(|e| Error::Tool {
        cmd: name.into(),
        detail: format!("{e} (install e2fsprogs)"),
    })?;
    if out.status.code().is_some_and(|c| ok_codes.contains(&c)) {
        return Ok(());
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Err(Error::Tool {
        cmd: name.into(),
        detail: format!(
            "{}: {}",
            out.status,
            text.trim().lines().last().unwrap_or("")
        ),
    })
}

/// Check the ext4 at byte `offset` of the block device `dev` and grow it
/// to `len` bytes.
fn grow_ext4_on_device(dev: &Path, offset: u64, len: u64) -> Result<(), Error> {
    let spec = format!("{}?offset={offset}", dev.display());
    // e2fsck exits 1 when it fixed something: fine before a resize.
    tool(
        Command::new("e2fsck").args(["-f", "-y", &spec]),
        "e2fsck",
        &[0, 1],
    )?;
    tool(
        Command::new("resize2fs").args([&spec, &format!("{}K", len / 1024)]),
        "resize2fs",
        &[0],
    )
}

/// The same for a disk image file: resize2fs truncates a regular file to
/// the new filesystem size, offset or not, so the filesystem is grown in a
/// temporary file of its own, the partition's range of the target emptied
/// (a hole where the filesystem supports it, zeroes otherwise) and the
/// result copied in.
fn grow_ext4_in_file(
    target: &TargetDisk,
    image_file: &File,
    image: &Path,
    d: &DataPlan,
) -> Result<(), Error> {
    let tmp = std::env::temp_dir().join(format!(".rescue-usb-ext4.{}.img", std::process::id()));
    let result = (|| {
        let t = File::create(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
        t.set_len(d.to)
            .map_err(io(format!("sizing {}", tmp.display())))?;
        copy(image_file, image, d.start, d.from, &t, 0)?;
        drop(t);
        let spec = tmp.display().to_string();
        tool(
            Command::new("e2fsck").args(["-f", "-y", &spec]),
            "e2fsck",
            &[0, 1],
        )?;
        tool(
            Command::new("resize2fs").args([&spec, &format!("{}K", d.to / 1024)]),
            "resize2fs",
            &[0],
        )?;
        let punched = Command::new("fallocate")
            .args(["--punch-hole", "--offset", &d.start.to_string()])
            .args(["--length", &d.to.to_string()])
            .arg(&target.info.path)
            .output()
            .is_ok_and(|o| o.status.success());
        if !punched {
            let zero = vec![0u8; CHUNK];
            let mut done = 0;
            while done < d.to {
                let n = (d.to - done).min(CHUNK as u64) as usize;
                target
                    .file
                    .write_all_at(&zero[..n], d.start + done)
                    .map_err(io(format!(
                        "clearing the data partition of {}",
                        target.info.path.display()
                    )))?;
                done += n as u64;
            }
        }
        let t = File::open(&tmp).map_err(io(format!("opening {}", tmp.display())))?;
        super::splice(&t, &target.file, d.start, &tmp).map_err(|e| Error::Tool {
            cmd: "copying the grown ext4".into(),
            detail: e.to_string(),
        })
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

/// Write the image as planned. `image_file` is the open image.
pub fn execute(plan: &Plan, image_file: &File) -> Result<Outcome, Error> {
    let t0 = Instant::now();
    let path = &plan.target.path;
    let open = || -> Result<TargetDisk, Error> {
        let t = TargetDisk::open(path, Some(SECTOR as u32))?;
        t.check_identity(&plan.target)?;
        imaging::exec::refuse_if_target_holds(&t.info, &[(plan.image.clone(), image_file)])?;
        Ok(t)
    };
    let mut target = open()?;
    let size = plan.target.size;
    let state = |what: &str| {
        format!(
            "{} is incomplete ({what}); its partition table is blank: run the write again",
            path.display()
        )
    };

    // 1. Blank both GPTs (and the MBR): from here on an interrupted run
    // leaves a disk that looks empty.
    let table_len = 34 * SECTOR;
    let zero = vec![0u8; table_len as usize];
    for off in [0, size - 33 * SECTOR] {
        let n = if off == 0 { table_len } else { 33 * SECTOR };
        target
            .file
            .write_all_at(&zero[..n as usize], off)
            .map_err(io(format!(
                "blanking the partition tables of {}",
                path.display()
            )))?;
    }
    target
        .file
        .sync_data()
        .map_err(io(format!("syncing {}", path.display())))?;

    // 2. BIOS boot partition and ESP, then the data partition.
    let esp_end = plan
        .table_after
        .partitions
        .iter()
        .filter(|p| p.number != DATA_NUMBER)
        .map(|p| p.end())
        .max()
        .unwrap_or(table_len);
    let mut written: Vec<(u64, u64, [u8; 32])> = Vec::new();
    let h = copy(
        image_file,
        &plan.image,
        table_len,
        esp_end - table_len,
        &target.file,
        table_len,
    )?;
    written.push((table_len, esp_end - table_len, h));
    let mut notes = Vec::new();
    if let Some(d) = &plan.data {
        match d.action {
            DataAction::Resize | DataAction::Keep => {
                let h = copy(
                    image_file,
                    &plan.image,
                    d.start,
                    d.from,
                    &target.file,
                    d.start,
                )?;
                written.push((d.start, d.from, h));
            }
            DataAction::Recreate => {
                let tmp = std::env::temp_dir()
                    .join(format!(".rescue-usb-data.{}.img", std::process::id()));
                let made = (|| {
                    super::make_data_fs(&tmp, DataFs::Exfat, d.to, None).map_err(|e| {
                        Error::Tool {
                            cmd: "mkfs.exfat".into(),
                            detail: e.to_string(),
                        }
                    })?;
                    let f = File::open(&tmp).map_err(io(format!("opening {}", tmp.display())))?;
                    let v = crate::exfat::Volume::open(&f, 0)
                        .and_then(|v| v.used_end(&f))
                        .map_err(|e| Error::Tool {
                            cmd: "mkfs.exfat".into(),
                            detail: e.to_string(),
                        })?;
                    copy(&f, &tmp, 0, v, &target.file, d.start).map(|h| (v, h))
                })();
                let _ = std::fs::remove_file(&tmp);
                let (len, h) = made.map_err(|e| annotate(e, &state("data partition")))?;
                written.push((d.start, len, h));
            }
        }
    }
    let mut notes_reread = target.sync_and_reread()?;
    notes.append(&mut notes_reread);

    // 3. Verify, reading back through a flushed cache.
    for (off, len, h) in &written {
        if hash_range(&target.file, *off, *len)? != *h {
            return Err(Error::Verify(format!(
                "bytes {off}..{} of {} do not read back as written; {}",
                off + len,
                path.display(),
                state("verification failed")
            )));
        }
    }
    let bytes: u64 = written.iter().map(|(_, l, _)| l).sum();

    // 4. Grow ext4 while the disk still has no partition table; the tools
    // open the disk exclusively themselves, so let go of it meanwhile.
    let mut table = plan.table_after.clone();
    if let Some(d) = plan
        .data
        .as_ref()
        .filter(|d| d.action == DataAction::Resize && d.to > d.from)
    {
        let grown = if plan.target.kind == DiskKind::Block {
            drop(target);
            let r = grow_ext4_on_device(path, d.start, d.to);
            target = open()?;
            r
        } else {
            grow_ext4_in_file(&target, image_file, &plan.image, d)
        };
        match grown {
            Ok(()) => notes.push(format!(
                "data partition {}: ext4 grown from {} to {}",
                d.partition,
                human_size(d.from),
                human_size(d.to)
            )),
            Err(e) => {
                // Keep the partition at the size of its filesystem.
                if let Some(p) = table
                    .partitions
                    .iter_mut()
                    .find(|p| p.number == d.partition)
                {
                    p.len = d.from;
                }
                notes.push(format!(
                    "data partition {}: ext4 not grown ({e}); it keeps {}",
                    d.partition,
                    human_size(d.from)
                ));
            }
        }
    }

    // 5. The partition tables, last.
    let mut sector0 = vec![0u8; SECTOR as usize];
    image_file
        .read_exact_at(&mut sector0, 0)
        .map_err(io(format!("reading {}", plan.image.display())))?;
    let writes = super::gpt_writes(&table, size, &sector0).map_err(|e| Error::Tool {
        cmd: "partition table".into(),
        detail: format!("{e}; {}", state("no partition table written")),
    })?;
    for w in &writes {
        target
            .file
            .write_all_at(&w.data, w.offset)
            .map_err(io(format!(
                "writing the partition table of {}",
                path.display()
            )))?;
    }
    notes.extend(target.sync_and_reread()?);
    Ok(Outcome {
        bytes_written: bytes + writes.iter().map(|w| w.data.len() as u64).sum::<u64>(),
        seconds: t0.elapsed().as_secs_f64(),
        notes,
    })
}

fn annotate(e: Error, state: &str) -> Error {
    match e {
        Error::Tool { cmd, detail } => Error::Tool {
            cmd,
            detail: format!("{detail}; {state}"),
        },
        Error::Io { what, source } => Error::Io {
            what: format!("{what}; {state}"),
            source,
        },
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::usb::{gpt_writes, table, DEFAULT_DATA_SIZE};

    /// A minimal image: the table, an ESP marker and a fresh data
    /// filesystem (None without its mkfs).
    fn fake_image(dir: &Path, fs: DataFs) -> Option<PathBuf> {
        let (t, size) = table(8 * MIB, Some((fs, DEFAULT_DATA_SIZE)), 7);
        let p = dir.join("usb.img");
        let f = File::create(&p).expect("create");
        f.set_len(size).expect("size");
        for w in gpt_writes(&t, size, &[0u8; 512]).expect("table") {
            f.write_all_at(&w.data, w.offset).expect("write");
        }
        f.write_all_at(b"ESP!", MIB).expect("write");
        let data = dir.join("data.img");
        super::super::make_data_fs(&data, fs, DEFAULT_DATA_SIZE, Some(7)).ok()?;
        let d = std::fs::read(&data).expect("data");
        f.write_all_at(&d, MIB + 8 * MIB).expect("write");
        Some(p)
    }

    fn stick(dir: &Path, size: u64) -> PathBuf {
        let stick = dir.join("stick.img");
        let f = File::create(&stick).expect("stick");
        f.set_len(size).expect("size");
        // Old content that must not survive in the tables.
        f.write_all_at(&[0xa5; 512], size - MIB).expect("write");
        f.write_all_at(&[0xa5; 512], 0).expect("write");
        stick
    }

    #[test]
    fn writes_a_file_target_and_grows_the_exfat() {
        let dir = tempfile::tempdir().expect("tmp");
        let Some(img) = fake_image(dir.path(), DataFs::Exfat) else {
            eprintln!("SKIPPED: mkfs.exfat missing");
            return;
        };
        let stick = stick(dir.path(), 256 * MIB);
        let image_file = File::open(&img).expect("image");
        let plan = plan(&img, &image_file, &stick).expect("plan");
        let d = plan.data.clone().expect("data partition");
        assert_eq!(d.action, DataAction::Recreate);
        assert_eq!(d.start + d.to, 255 * MIB);
        assert!(
            plan.describe().contains("an empty exfat made at"),
            "{}",
            plan.describe()
        );
        let out = execute(&plan, &image_file).expect("written");
        assert!(out.bytes_written > 8 * MIB);
        let s = File::open(&stick).expect("stick");
        let t = part::read(&s, 256 * MIB, 512)
            .expect("reads")
            .expect("table");
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        let p3 = t.partitions.iter().find(|p| p.number == 3).expect("p3");
        assert_eq!(p3.end(), 255 * MIB);
        assert_ne!(
            t.disk_id,
            part::read(&image_file, plan.image_size, 512)
                .expect("r")
                .expect("t")
                .disk_id
        );
        let v = crate::exfat::Volume::open(&s, p3.start).expect("exFAT");
        assert_eq!(v.volume_bytes, p3.len);
        let mut esp = [0u8; 4];
        s.read_exact_at(&mut esp, MIB).expect("read");
        assert_eq!(&esp, b"ESP!");
    }

    #[test]
    fn refuses_the_image_itself_and_a_small_target() {
        let dir = tempfile::tempdir().expect("tmp");
        let Some(img) = fake_image(dir.path(), DataFs::Exfat) else {
            return;
        };
        let image_file = File::open(&img).expect("image");
        let e = plan(&img, &image_file, &img).expect_err("the image onto itself");
        assert_eq!(e.class(), imaging::ErrorClass::Refused, "{e}");
        let small = dir.path().join("small.img");
        File::create(&small)
            .expect("create")
            .set_len(16 * MIB)
            .expect("size");
        let e = plan(&img, &image_file, &small).expect_err("too small");
        assert_eq!(e.class(), imaging::ErrorClass::Refused);
        assert!(e.to_string().contains("smaller than the image"), "{e}");
        // Not a USB image.
        let e = plan(&small, &File::open(&small).expect("open"), &img).expect_err("no table");
        assert!(e.to_string().contains("not a rescue USB image"), "{e}");
    }

    #[test]
    fn grows_an_ext4_data_partition() {
        let dir = tempfile::tempdir().expect("tmp");
        let Some(img) = fake_image(dir.path(), DataFs::Ext4) else {
            eprintln!("SKIPPED: mkfs.ext4 missing");
            return;
        };
        let stick = stick(dir.path(), 200 * MIB);
        let image_file = File::open(&img).expect("image");
        let plan = plan(&img, &image_file, &stick).expect("plan");
        let d = plan.data.clone().expect("data");
        assert_eq!((d.fs, d.action), (DataFs::Ext4, DataAction::Resize));
        let out = execute(&plan, &image_file).expect("written");
        assert!(
            out.notes.iter().any(|n| n.contains("ext4 grown")),
            "{:?}",
            out.notes
        );
        let spec = format!("{}?offset={}", stick.display(), d.start);
        let fsck = Command::new("e2fsck")
            .args(["-fn", &spec])
            .output()
            .expect("e2fsck");
        assert!(
            fsck.status.success(),
            "{}",
            String::from_utf8_lossy(&fsck.stdout)
        );
        let info = Command::new("dumpe2fs")
            .args(["-h", &spec])
            .output()
            .expect("dumpe2fs");
        let text = String::from_utf8_lossy(&info.stdout);
        let blocks: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("Block count:"))
            .and_then(|v| v.trim().parse().ok())
            .expect("block count");
        assert_eq!(blocks * 4096, d.to, "{text}");
    }
}
