//! Backup, restore and clone of real loop devices opened with O_DIRECT
//! (`RESCUE_DIRECT_IO=1`), on 512- and 4096-byte logical sectors.
//!
//! O_DIRECT refuses (EINVAL) any read or write whose offset, length or buffer
//! address is not a multiple of the logical sector size, which is the rule a
//! Windows raw disk handle (`\\.\PhysicalDriveN`) enforces with
//! ERROR_INVALID_PARAMETER. These tests are how the Windows build's disk I/O
//! is proven on Linux: every probe (partition tables, superblocks, boot
//! sectors, bitmaps), every table write and the odd-sized tail of the disk
//! must go through `imaging::blockdev::aligned`. Without that layer the
//! backup fails at its first partition-table probe.
//!
//! Needs root (loop devices, mounts), as CI has.
#![allow(clippy::unwrap_used)] // tests may unwrap (STYLE.md)

mod common;

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// Not a multiple of the 1 MiB chunks: the last piece of the disk is short.
const DISK: u64 = (150 << 20) + 3 * 4096;

fn rescue_direct(args: &[&str]) -> String {
    let out = sh(Command::new(env!("CARGO_BIN_EXE_rescue"))
        .args(args)
        .env("RESCUE_DIRECT_IO", "1")
        .env_remove("RESCUE_PASSWORD")
        .stdin(std::process::Stdio::null()));
    assert!(
        out.status.success(),
        "RESCUE_DIRECT_IO=1 rescue {args:?} failed with {:?}:\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Shown when the test fails, or with --nocapture (RESCUE_LOG=
    // imaging::blockdev::aligned=trace lists every request it had to align).
    eprintln!("rescue {args:?}:\n{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Files for the filesystems: text, pseudo-random data, a nested folder.
fn content(dir: &Path) -> PathBuf {
    let c = dir.join("content");
    std::fs::create_dir_all(c.join("sub/deeper")).unwrap();
    std::fs::write(c.join("hello.txt"), "hello through O_DIRECT\n".repeat(3000)).unwrap();
    let mut x = 0x2545_F491_4F6C_DD1Du64;
    let random: Vec<u8> = (0..(3 << 20) + 777)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    std::fs::write(c.join("sub/random.bin"), &random).unwrap();
    std::fs::write(c.join("sub/deeper/small.dat"), b"0123456789").unwrap();
    c
}

/// A GPT disk image for `ss`-byte sectors: FAT, NTFS and ext4 partitions,
/// each made by its own mkfs in a file of its own and copied into place.
fn make_disk(dir: &Path, ss: u32, label: &str) -> (PathBuf, Vec<(u32, u64, u64, String)>) {
    let img = new_file(dir, &format!("src{ss}.img"), DISK);
    let layout = dir.join("layout");
    let table = match label {
        "gpt" => {
            "label: gpt\n\
             start=1MiB, size=40MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
             size=40MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n\
             size=60MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n"
        }
        _ => {
            "label: dos\n\
             start=1MiB, size=40MiB, type=ef\n\
             size=40MiB, type=7\n\
             size=60MiB, type=83\n"
        }
    };
    std::fs::write(&layout, table).unwrap();
    let parts = {
        // This sfdisk has no --sector-size: a loop device gives it the sectors.
        let lo = Loop::attach_sector_size(&img, ss);
        sh_ok(Command::new("sfdisk").args(["-q", lo.path()]).stdin(std::fs::File::open(&layout).unwrap()));
        partitions(Path::new(lo.path()))
    };
    assert_eq!(parts.len(), 3, "{parts:?}");
    let c = content(dir);
    let disk = std::fs::OpenOptions::new().write(true).open(&img).unwrap();
    for ((_, start, len, _), fs) in parts.iter().zip(["vfat", "ntfs", "ext4"]) {
        let f = new_file(dir, &format!("{fs}.fs"), *len);
        let fp = f.to_str().unwrap();
        match fs {
            "vfat" => {
                sh_ok(Command::new("mkfs.vfat").args(["-S", &ss.to_string(), "-n", "ESP", fp]));
                sh_ok(Command::new("mcopy").env("MTOOLS_SKIP_CHECK", "1").args(["-s", "-m", "-i", fp]).arg(c.join("hello.txt")).arg(c.join("sub")).arg("::/"));
            }
            "ntfs" => {
                let start_sectors = (start / u64::from(ss)).to_string();
                sh_ok(Command::new("mkfs.ntfs").args(["-Q", "-F", "-q", "-s", &ss.to_string(), "-p", &start_sectors, "-H", "255", "-S", "63", "-L", "Data", fp]));
                sh_ok(Command::new("ntfscp").arg(fp).arg(c.join("hello.txt")).arg("hello.txt"));
                sh_ok(Command::new("ntfscp").arg(fp).arg(c.join("sub/random.bin")).arg("random.bin"));
            }
            _ => {
                sh_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-b", "4096", "-d"]).arg(&c).arg(fp));
            }
        }
        let data = std::fs::read(&f).unwrap();
        disk.write_all_at(&data, *start).unwrap();
        std::fs::remove_file(&f).unwrap();
    }
    (img, parts)
}

/// Partitions of a disk image with `ss`-byte sectors (read through a loop
/// device: sfdisk here cannot be told the sector size of a file).
fn partitions_of(img: &Path, ss: u32) -> Vec<(u32, u64, u64, String)> {
    let lo = Loop::attach_sector_size(img, ss);
    partitions(Path::new(lo.path()))
}

fn same_disks(src: &Path, tgt: &Path, ss: u32) {
    let (pa, pb) = (partitions_of(src, ss), partitions_of(tgt, ss));
    assert_eq!(pa, pb, "partition tables differ");
    for ((_, start, len, _), fs) in pa.iter().zip(["vfat", "ntfs", "ext4"]) {
        fsck(tgt, *start, *len, fs);
        same_files(src, *start, *len, tgt, *start, *len, fs);
    }
}

/// Backup, check, restore and clone of a `label` disk with `ss`-byte
/// sectors, all through O_DIRECT; then, on the restored disk, a
/// changed-block restore after damage and a restore of one partition into
/// its existing place.
fn round_trip(ss: u32, label: &str) {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let (src, _) = make_disk(d.path(), ss, label);
    let img = d.path().join("disk.rimg");
    let restored = new_file(d.path(), "restored.img", DISK);
    let cloned = new_file(d.path(), "cloned.img", DISK + (8 << 20));
    // Old data on the targets must not survive where the filesystems need zeros.
    for t in [&restored, &cloned] {
        let f = std::fs::OpenOptions::new().write(true).open(t).unwrap();
        f.write_all_at(&vec![0xA5; 4 << 20], 0).unwrap();
    }
    let parts = partitions_of(&src, ss);
    let img_s = img.to_str().unwrap();
    let full;
    {
        let ls = Loop::attach_sector_size(&src, ss);
        let lr = Loop::attach_sector_size(&restored, ss);
        let lc = Loop::attach_sector_size(&cloned, ss);
        rescue_direct(&["backup", "disk", ls.path(), "-o", img_s]);
        let out = rescue_direct(&["check", img_s]);
        assert!(out.contains("Image OK"), "{out}");
        let out = rescue_direct(&["restore", img_s, "--to", lr.path(), "--yes"]);
        assert!(out.contains("Restore complete"), "{out}");
        // The clone goes to a larger disk (for GPT, the backup table moves
        // to its end).
        rescue_direct(&["clone", ls.path(), lc.path(), "--yes"]);

        // Damage the restored disk at odd places: inside a sector of the
        // FAT, a run across the NTFS, the middle of the ext4, the table.
        let t = std::fs::OpenOptions::new().write(true).open(&restored).unwrap();
        t.write_all_at(b"odd", parts[0].1 + 4097).unwrap();
        t.write_all_at(&vec![0x5A; (1 << 20) + 333], parts[1].1 + (3 << 20) + 17).unwrap();
        t.write_all_at(&vec![0xC3; 64 << 10], parts[2].1 + parts[2].2 / 2).unwrap();
        t.write_all_at(&[0xFF; 16], 2 * u64::from(ss) + 40).unwrap();
        t.sync_all().unwrap();
        drop(t);
        // The same damage gets a full restore: where the image holds no
        // data (blocks no filesystem uses) both leave the target as it is.
        let twin = d.path().join("twin.img");
        std::fs::copy(&restored, &twin).unwrap();
        let lt = Loop::attach_sector_size(&twin, ss);
        rescue_direct(&["restore", img_s, "--to", lt.path(), "--yes"]);
        // The loop device must not answer from its cache of the old bytes.
        sh_ok(Command::new("blockdev").args(["--flushbufs", lr.path()]));
        let out = rescue_direct(&["restore", img_s, "--to", lr.path(), "--only-changed", "--yes"]);
        assert!(out.contains("Restore complete"), "{out}");
    }
    full = std::fs::read(d.path().join("twin.img")).unwrap();
    assert!(std::fs::read(&restored).unwrap() == full, "the changed-block restore differs from the full restore");
    same_disks(&src, &restored, ss);

    // One partition back into its existing place on the restored disk.
    {
        let t = std::fs::OpenOptions::new().write(true).open(&restored).unwrap();
        t.write_all_at(&vec![0u8; 2 << 20], parts[2].1).unwrap();
        t.sync_all().unwrap();
    }
    {
        let lr = Loop::attach_sector_size(&restored, ss);
        let out = rescue_direct(&["restore", img_s, "--part", "3", "--to", &format!("{}:3", lr.path()), "--yes"]);
        assert!(out.contains("Restore complete"), "{out}");
    }
    assert!(std::fs::read(&restored).unwrap() == full, "the partition restore differs from the full restore");

    let (pa, pc) = (partitions_of(&src, ss), partitions_of(&cloned, ss));
    assert_eq!(pa.len(), pc.len(), "{pa:?} vs {pc:?}");
    for ((_, s, l, _), ((_, s2, l2, _), fs)) in pa.iter().zip(pc.iter().zip(["vfat", "ntfs", "ext4"])) {
        fsck(&cloned, *s2, *l2, fs);
        same_files(&src, *s, *l, &cloned, *s2, *l2, fs);
    }
}

#[test]
fn backup_restore_clone_loop_devices_with_o_direct_512() {
    round_trip(512, "gpt");
}

#[test]
fn backup_restore_clone_loop_devices_with_o_direct_4096() {
    round_trip(4096, "gpt");
}

/// MBR on 4096-byte sectors: the table and its LBAs are in 4 KiB units.
#[test]
fn backup_restore_clone_an_mbr_disk_with_o_direct_4096() {
    round_trip(4096, "dos");
}

/// A disk image file as the source, its used blocks read past the page cache
/// (`RESCUE_DIRECT_IO=1` forces what a cold source gets anyway): a second
/// O_DIRECT handle beside the cached one that reads the metadata. The FAT's
/// used blocks lie wherever mkfs.vfat puts its sectors, not on 4 KiB
/// boundaries, so the aligning layer is at work. Restored, every file
/// matches; a changed-block restore onto a damaged image file (read the same
/// way) gives the bytes of a full restore.
#[test]
fn backup_of_a_disk_image_file_read_past_the_page_cache() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let (src, _) = make_disk(d.path(), 512, "gpt");
    let img = d.path().join("disk.rimg");
    let img_s = img.to_str().unwrap();
    let restored = new_file(d.path(), "restored.img", DISK);
    rescue_direct(&["backup", "disk", src.to_str().unwrap(), "-o", img_s]);
    let out = rescue_direct(&["restore", img_s, "--to", restored.to_str().unwrap(), "--yes"]);
    assert!(out.contains("Restore complete"), "{out}");
    same_disks(&src, &restored, 512);
    // And an incremental point of it, skipping unchanged files, reads the
    // rest the same way; restored, it gives the same disk.
    let point = d.path().join("disk.p2.rimg");
    rescue_direct(&["backup", "incr", img_s, "-o", point.to_str().unwrap()]);
    let again = new_file(d.path(), "again.img", DISK);
    rescue_direct(&["restore", point.to_str().unwrap(), "--to", again.to_str().unwrap(), "--yes"]);
    same_disks(&src, &again, 512);
    // A changed-block restore onto a disk image file compares what it
    // holds through the same kind of handle: after damage at odd offsets it
    // must give the bytes of the full restore.
    let parts = partitions_of(&src, 512);
    {
        let t = std::fs::OpenOptions::new().write(true).open(&again).unwrap();
        t.write_all_at(b"odd", parts[0].1 + 4097).unwrap();
        t.write_all_at(&vec![0x5A; (1 << 20) + 333], parts[1].1 + (3 << 20) + 17).unwrap();
        t.write_all_at(&vec![0xC3; 64 << 10], parts[2].1 + parts[2].2 / 2 + 512).unwrap();
        t.sync_all().unwrap();
    }
    // The same damage gets a full restore (blocks no filesystem uses stay as
    // they are in both).
    let twin = d.path().join("twin.img");
    std::fs::copy(&again, &twin).unwrap();
    rescue_direct(&["restore", point.to_str().unwrap(), "--to", twin.to_str().unwrap(), "--yes"]);
    let out = rescue_direct(&["restore", point.to_str().unwrap(), "--to", again.to_str().unwrap(), "--only-changed", "--yes"]);
    assert!(out.contains("Restore complete"), "{out}");
    assert!(std::fs::read(&again).unwrap() == std::fs::read(&twin).unwrap(), "the changed-block restore differs from the full restore");
    same_disks(&src, &again, 512);
}
