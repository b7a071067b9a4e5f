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
    let disk = sample_copy(d.path(), "dead.img");
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
    let disk = sample_copy(d.path(), "dead.img");
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

/// The security descriptor ntfs-3g shows for a path.
fn ntfs_acl(p: &Path) -> Vec<u8> {
    xattr::get(p, "system.ntfs_acl").unwrap_or_else(|e| panic!("system.ntfs_acl of {}: {e}", p.display())).unwrap_or_else(|| panic!("{} has no NTFS ACL", p.display()))
}

/// Files copied from NTFS onto NTFS keep their permissions (each file's
/// own security descriptor, read from `$Secure`), as ntfs-3g shows them on
/// both sides; onto a folder that is not NTFS the copy just goes without.
#[test]
fn ntfs_permissions_are_kept_on_an_ntfs_target() {
    require_root();
    let d = tempfile::tempdir().expect("tempdir");
    let mk = |name: &str| {
        let raw = d.path().join(name);
        std::fs::File::create(&raw).and_then(|f| f.set_len(16 << 20)).expect("ntfs file");
        sh_ok(Command::new("mkntfs").args(["-q", "-F", "-Q"]).arg(&raw));
        raw
    };
    let (src_raw, dst_raw) = (mk("src.raw"), mk("dst.raw"));
    // Distinct descriptors: ntfs-3g's "permissions" mode writes one per chmod.
    let src = d.path().join("src");
    {
        let _m = Mount::ntfs3g(&src_raw, &src, "rw,permissions");
        std::fs::create_dir_all(src.join("dir/sub")).expect("dirs");
        std::fs::write(src.join("a.txt"), b"a").expect("a");
        std::fs::write(src.join("dir/b.txt"), b"b").expect("b");
        std::fs::write(src.join("dir/sub/c.txt"), b"c").expect("c");
        for (mode, p) in [("640", "a.txt"), ("700", "dir"), ("604", "dir/b.txt"), ("750", "dir/sub"), ("400", "dir/sub/c.txt")] {
            sh_ok(Command::new("chmod").arg(mode).arg(src.join(p)));
        }
    }
    let names = ["a.txt", "dir", "dir/b.txt", "dir/sub", "dir/sub/c.txt"];
    let want: Vec<Vec<u8>> = {
        let _m = Mount::ntfs3g(&src_raw, &src, "ro");
        names.iter().map(|n| ntfs_acl(&src.join(n))).collect()
    };
    assert!(want.windows(2).all(|w| w[0] != w[1]), "the source descriptors should all differ");

    let dst = d.path().join("dst");
    let _m = Mount::ntfs3g(&dst_raw, &dst, "rw");
    std::fs::write(dst.join("fresh"), b"").expect("fresh");
    let fresh = ntfs_acl(&dst.join("fresh"));
    let out = rescue_ok(&["files", "copy", s(&src_raw), "/a.txt", "/dir", "--to", s(&dst.join("out"))]);
    assert!(out.contains("NTFS permissions kept on 5"), "{out}");
    for (n, w) in names.iter().zip(&want) {
        let got = ntfs_acl(&dst.join("out").join(n));
        assert_eq!(&got, w, "{n}: the copy's NTFS permissions differ from the source's");
        assert_ne!(got, fresh, "{n}: the copy has the target's default permissions");
    }
    assert_eq!(std::fs::read(dst.join("out/dir/sub/c.txt")).expect("c"), b"c");

    // Onto a folder that is not NTFS: copied, no permission complaints.
    let plain = d.path().join("plain");
    let o = rescue(&["files", "copy", s(&src_raw), "/dir", "--to", s(&plain)]);
    assert!(o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("permissions"), "{o:?}");
    assert_eq!(std::fs::read(plain.join("dir/b.txt")).expect("b"), b"b");
}
