//! `rescue mount` / `rescue umount`: partitions of an image shown read-only
//! through FUSE, checked against the filesystems' own tools (debugfs,
//! ntfs-3g, mtools) and, with --raw, against the kernel's ext4 driver reading
//! the exposed partition through a loop device. A chain point shows its own
//! files. Root: FUSE and loop mounts.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn mounted(dir: &Path) -> bool {
    let want = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo").lines().filter_map(|l| l.split(' ').nth(4)).any(|m| Path::new(m) == want)
}

/// Unmounts whatever is still mounted at the end, even when the test fails
/// (innermost first).
struct Cleanup(Vec<PathBuf>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        for d in self.0.iter().rev() {
            if mounted(d) {
                let _ = Command::new("umount").arg("-l").arg(d).status();
            }
        }
    }
}

#[test]
fn mounted_partitions_match_the_filesystems_own_tools() {
    require_root();
    let d = tempfile::tempdir().expect("tempdir");
    let disk = sample_disk();
    let img = d.path().join("b.img");
    rescue_ok(&["backup", "disk", s(disk), "-o", s(&img)]);
    let dir = |n: &str| {
        let p = d.path().join(n);
        std::fs::create_dir_all(&p).expect("mount point");
        p
    };
    let (ext_m, ntfs_m, fat_m, raw_m, kernel_m, ntfs3g_m) = (dir("ext"), dir("ntfs"), dir("fat"), dir("raw"), dir("kernel"), dir("ntfs-3g"));
    let _cleanup = Cleanup(vec![ext_m.clone(), ntfs_m.clone(), fat_m.clone(), raw_m.clone(), kernel_m.clone(), ntfs3g_m.clone()]);

    // ext4: every file and folder of /text with modes, sizes, times and
    // bytes as debugfs copies them out; symlinks in /dup read back.
    let out = rescue_ok(&["mount", s(&img), "--part", "3", s(&ext_m)]);
    assert!(out.contains("mounted read-only"), "{out}");
    assert!(mounted(&ext_m));
    let (ext_at, ext_len) = part(disk, 3);
    let ext = d.path().join("ext.img");
    cut(disk, ext_at, ext_len, &ext);
    let theirs = dir("debugfs");
    sh_ok(Command::new("debugfs").arg("-R").arg(format!("rdump /text {}", s(&theirs))).arg(&ext));
    let want = tree(&theirs.join("text"));
    assert!(want.len() > 10, "{want:?}");
    assert_eq!(tree(&ext_m.join("text")), want, "ext4 through the mount differs from debugfs");
    // Random access: a piece from the middle of the large file.
    let mut large = Vec::new();
    sh_ok(Command::new("debugfs").arg("-R").arg(format!("dump /large.log {}", s(&d.path().join("large.log")))).arg(&ext));
    large.extend(std::fs::read(d.path().join("large.log")).expect("large.log"));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::File::open(ext_m.join("large.log")).expect("open through the mount");
        let mut b = vec![0u8; 100_000];
        f.read_exact_at(&mut b, 3_333_333).expect("read at an offset");
        assert!(b == large[3_333_333..3_433_333], "bytes at an offset differ");
    }
    // Writes are refused.
    assert!(std::fs::OpenOptions::new().write(true).open(ext_m.join("README.txt")).is_err());
    assert!(std::fs::write(ext_m.join("new.txt"), "x").is_err());

    // --raw: the same partition for the kernel's ext4 driver, which must see
    // exactly what our reader shows.
    rescue_ok(&["mount", s(&img), "--part", "3", "--raw", s(&raw_m)]);
    let part3 = raw_m.join("part3.img");
    assert_eq!(std::fs::metadata(&part3).expect("part3.img").len(), ext_len);
    // Through the tests' guards, which retry the unmount while the mount is
    // still busy for a moment (a bare umount failed once: "target is busy").
    let kernel_lo = Loop::attach(&part3, 0, ext_len, true);
    let kernel = Mount::new(kernel_lo.path(), &kernel_m, "ext4", true);
    assert_eq!(tree(&ext_m), tree(&kernel_m), "our files differ from the kernel's ext4 reading the raw partition");
    drop(kernel);
    drop(kernel_lo);

    // NTFS: as ntfs-3g shows the partition.
    rescue_ok(&["mount", s(&img), "--part", "2", s(&ntfs_m)]);
    let (ntfs_at, ntfs_len) = part(disk, 2);
    let ntfs = d.path().join("ntfs.img");
    cut(disk, ntfs_at, ntfs_len, &ntfs);
    let m = Mount::ntfs3g(&ntfs, &ntfs3g_m, "ro");
    let want = files_of(&ntfs3g_m);
    assert!(want.len() > 100, "{}", want.len());
    assert_eq!(files_of(&ntfs_m), want, "NTFS through the mount differs from ntfs-3g");
    drop(m);

    // FAT32: as mcopy copies it out (names, bytes, times).
    rescue_ok(&["mount", s(&img), "--part", "1", s(&fat_m)]);
    let mc = dir("mcopy");
    let (fat_at, _) = part(disk, 1);
    sh_ok(Command::new("mcopy").env("MTOOLS_SKIP_CHECK", "1").env("TZ", "UTC").args(["-s", "-m", "-i"]).arg(format!("{}@@{fat_at}", s(disk))).arg("::/EFI").arg(&mc));
    assert_eq!(files_of(&fat_m.join("EFI")), files_of(&mc.join("EFI")), "FAT through the mount differs from mcopy");
    // Names match without regard to case, as on Windows.
    assert!(fat_m.join("efi/boot/bootx64.efi").is_file());

    // Unmounting ends every server.
    for m in [&ext_m, &raw_m, &ntfs_m, &fat_m] {
        rescue_ok(&["umount", s(m)]);
        assert!(!mounted(m), "{} still mounted", m.display());
    }
    let servers = Command::new("pgrep").args(["-f", &format!("mount --foreground {}", s(&img))]).output().expect("pgrep");
    assert!(servers.stdout.is_empty(), "servers left: {}", String::from_utf8_lossy(&servers.stdout));

    // Clear refusals.
    rescue_fails(&["umount", s(&ext_m)], 2, "is not mounted");
    std::fs::write(ext_m.join("x"), "x").expect("file");
    rescue_fails(&["mount", s(&img), "--part", "3", s(&ext_m)], 2, "is not empty");
    rescue_fails(&["mount", s(&img), "--part", "9", s(&fat_m)], 2, "no partition 9");
    assert!(!mounted(&fat_m));
}

#[test]
fn an_encrypted_chain_point_mounts_with_its_own_files() {
    require_root();
    let d = tempfile::tempdir().expect("tempdir");
    let src = sample_copy(d.path(), "src.img");
    let pw = d.path().join("pw");
    std::fs::write(&pw, "mount secret\n").expect("password file");
    let full = d.path().join("pc.img");
    rescue_ok(&["backup", "disk", s(&src), "-o", s(&full), "--encrypt", "--password-file", s(&pw)]);
    let data: Vec<u8> = (0..1_200_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 9) as u8).collect();
    let extra = d.path().join("added.bin");
    std::fs::write(&extra, &data).expect("new file");
    sh_ok(Command::new("mcopy").env("MTOOLS_SKIP_CHECK", "1").args(["-i", &format!("{}@@1M", s(&src))]).arg(&extra).arg("::/EFI/added.bin"));
    rescue_ok(&["backup", "incr", s(&full), "--password-file", s(&pw)]);
    let incr = d.path().join("pc.p002-incr.img");

    let (a, b) = (d.path().join("a"), d.path().join("b"));
    std::fs::create_dir_all(&a).expect("a");
    std::fs::create_dir_all(&b).expect("b");
    let _cleanup = Cleanup(vec![a.clone(), b.clone()]);
    // The password comes through the environment, as a prompt's would.
    let out = Command::new(env!("CARGO_BIN_EXE_rescue")).args(["mount", s(&incr), "--part", "1", s(&a)]).env("RESCUE_PASSWORD", "mount secret").output().expect("rescue mount");
    assert!(out.status.success(), "{out:?}");
    rescue_ok(&["mount", s(&full), "--part", "1", s(&b), "--password-file", s(&pw)]);
    assert_eq!(std::fs::read(a.join("EFI/added.bin")).expect("the new file through the incremental point"), data);
    assert!(!b.join("EFI/added.bin").exists(), "the full point shows a later file");
    assert!(b.join("EFI/BOOT/grub.cfg").is_file());
    rescue_ok(&["umount", s(&a)]);
    rescue_ok(&["umount", s(&b)]);
    // A wrong password is reported by `rescue mount` itself, and nothing is mounted.
    std::fs::write(&pw, "wrong\n").expect("password file");
    rescue_fails(&["mount", s(&incr), "--part", "1", s(&a), "--password-file", s(&pw)], 1, "wrong password");
    assert!(!mounted(&a));
}
