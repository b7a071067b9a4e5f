//! File rescue off a disk that no longer boots: `rescue files ls` and
//! `rescue files copy` read a partition of a disk (a loop device here, and a
//! disk image file) directly. Checked against debugfs; a damaged file is
//! skipped and named at the end; the disk is never written; a destination on
//! the source disk is refused. Root: loop devices and a mount.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn files_come_off_a_disk_unchanged_and_a_damaged_file_is_named() {
    require_root();
    let d = tempfile::tempdir().expect("tempdir");
    let disk = d.path().join("dead.img");
    std::fs::copy(sample_disk(), &disk).expect("copy sample disk");
    let (at, len) = part(&disk, 3);

    // What debugfs copies out of the healthy ext4 partition.
    let ext = d.path().join("ext.img");
    cut(&disk, at, len, &ext);
    let want_dir = d.path().join("debugfs");
    std::fs::create_dir(&want_dir).expect("dir");
    sh_ok(Command::new("debugfs").arg("-R").arg(format!("rdump /text {}", s(&want_dir))).arg(&ext));
    let want = tree(&want_dir.join("text"));
    assert!(want.len() > 10, "{want:?}");

    // Damage one file: its extent header (i_block[0]) zeroed, as a bad
    // sector in the inode table would leave it.
    let names: serde_json::Value = serde_json::from_str(&rescue_ok(&["--json", "files", "ls", &format!("{}:3", s(&disk)), "/text"])).expect("json");
    let victim = names.as_array().expect("list").iter().find(|e| e["kind"] == "file" && e["size"].as_u64().unwrap_or(0) > 100).expect("a file")["name"].as_str().expect("name").to_string();
    sh_ok(Command::new("debugfs").arg("-w").arg("-R").arg(format!("sif \"/text/{victim}\" block[0] 0")).arg(&ext));
    sh_ok(Command::new("dd").arg(format!("if={}", s(&ext))).arg(format!("of={}", s(&disk))).arg(format!("seek={at}")).args(["oflag=seek_bytes", "bs=1M", "conv=notrunc", "status=none"]));
    let before = file_hash(&disk);

    // Through a read-only loop device of the whole disk.
    let lo = Loop::attach(&disk, 0, std::fs::metadata(&disk).expect("size").len(), true);
    let out_dir = d.path().join("out");
    let src = format!("{}:3", lo.path());
    let listing = rescue_ok(&["files", "ls", &src, "/text"]);
    assert!(listing.lines().any(|l| l.ends_with(&victim)), "{listing}");
    let o = rescue(&["files", "copy", &src, "/text", "--to", s(&out_dir)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(err.contains(&format!("not copied: /text/{victim}")), "{err}");
    assert!(err.contains("1 of the paths could not be copied"), "{err}");
    assert!(String::from_utf8_lossy(&o.stdout).contains("Copied"), "{o:?}");
    // Every other file, byte for byte, with modes and times; the damaged one
    // is not there at all (no partial file, no temporary file).
    let mut want_rest = want.clone();
    want_rest.remove(&victim).expect("victim in debugfs's copy");
    assert_eq!(tree(&out_dir.join("text")), want_rest, "copied files differ from debugfs rdump's");
    drop(lo);
    assert_eq!(file_hash(&disk), before, "the source disk was written to");

    // A disk image file works the same; a partition it lacks is a usage error.
    let img_out = d.path().join("img-out");
    rescue_ok(&["files", "copy", &format!("{}:1", s(&disk)), "/EFI", "--to", s(&img_out)]);
    assert!(img_out.join("EFI/BOOT/BOOTX64.EFI").is_file());
    rescue_fails(&["files", "ls", &format!("{}:7", s(&disk))], 2, "has no partition 7");
}

#[test]
fn a_destination_on_the_source_disk_is_refused() {
    require_root();
    let d = tempfile::tempdir().expect("tempdir");
    let disk = d.path().join("dead.img");
    std::fs::copy(sample_disk(), &disk).expect("copy sample disk");
    let (at, len) = part(&disk, 3);
    // The ext4 partition as its own device, mounted: the source is that
    // device (a whole-disk filesystem), the destination a folder on it.
    let lo = Loop::attach(&disk, at, len, false);
    let mnt = d.path().join("mnt");
    let m = Mount::new(lo.path(), &mnt, "ext4", false);
    let dest = mnt.join("rescued");
    let err = rescue_fails(&["files", "copy", lo.path(), "/text", "--to", s(&dest)], 3, "the disk the files are read from");
    assert!(err.contains("is mounted on"), "the in-use warning is missing: {err}");
    assert!(!dest.exists(), "the refused copy made {}", dest.display());
    drop(m);
    drop(lo);
}
