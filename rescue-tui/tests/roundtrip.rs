//! End-to-end: the real `rescue` binary against disk image files made by the
//! real mkfs tools, checked with the filesystems' own checkers and by
//! comparing every file. Needs root (loop devices, mounts), as CI has.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;

const FS: [&str; 3] = ["vfat", "ntfs", "ext4"];

fn backup(src: &Path, out: &Path, extra: &[&str]) {
    let mut args = vec!["backup", "disk", src.to_str().unwrap(), "-o", out.to_str().unwrap()];
    args.extend_from_slice(extra);
    rescue_ok(&args);
}

/// Every partition of `a` matches the same-numbered partition of `b`.
fn same_disk(a: &Path, b: &Path) {
    let pa = partitions(a);
    let pb = partitions(b);
    assert_eq!(pa.len(), pb.len(), "partition counts differ: {pa:?} vs {pb:?}");
    for ((n, s, l, t), fs) in pa.iter().zip(FS) {
        let (_, s2, l2, t2) = pb.iter().find(|p| p.0 == *n).unwrap_or_else(|| panic!("no partition {n} on {}", b.display())).clone();
        assert_eq!(t, &t2, "partition {n} type");
        fsck(b, s2, l2, fs);
        same_files(a, *s, *l, b, s2, l2, fs);
    }
}

#[test]
fn backup_check_info_restore_same_size() {
    require_root();
    let src = sample_disk();
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.rimg");
    backup(src, &img, &["--verify", "--comment", "before the upgrade"]);
    let out = rescue_ok(&["check", img.to_str().unwrap()]);
    assert!(out.contains("Image OK"), "{out}");
    let info: serde_json::Value = serde_json::from_str(&rescue_ok(&["info", img.to_str().unwrap(), "--json"])).unwrap();
    let cat = &info["catalog"];
    assert_eq!(cat["comment"], "before the upgrade");
    assert_eq!(cat["kind"], "disk");
    let regions = cat["regions"].as_array().unwrap();
    let kinds: Vec<String> = regions.iter().filter_map(|r| r["fs"]["kind"].as_str().map(String::from)).collect();
    assert_eq!(kinds, vec!["fat32", "ntfs", "ext4"]);
    assert!(regions.iter().filter(|r| r["kind"] == "partition").all(|r| r["mode"] == "used"));
    // Used-blocks mode stores much less than the disk.
    let image_len = std::fs::metadata(&img).unwrap().len();
    assert!(image_len < std::fs::metadata(src).unwrap().len() / 2, "image is {image_len} bytes");

    let tgt = new_file(d.path(), "target.img", std::fs::metadata(src).unwrap().len());
    // Old data on the target must not survive where the filesystem needs zeros.
    std::fs::write(&tgt, vec![0xA5u8; std::fs::metadata(src).unwrap().len() as usize]).unwrap();
    let out = rescue_ok(&["restore", img.to_str().unwrap(), "--to", tgt.to_str().unwrap(), "--yes"]);
    assert!(out.contains("Restore complete"), "{out}");
    same_disk(src, &tgt);
    let a = sh_ok(Command::new("sfdisk").arg("-d").arg(src));
    let b = sh_ok(Command::new("sfdisk").arg("-d").arg(&tgt));
    let strip = |s: &str| s.lines().filter(|l| !l.starts_with("device:")).map(|l| l.split_once(" : ").map(|x| x.1.to_string()).unwrap_or(l.to_string())).collect::<Vec<_>>();
    assert_eq!(strip(&a), strip(&b), "partition tables differ");
}

#[test]
fn restore_to_larger_disk_fills_and_aligns() {
    require_root();
    let src = sample_disk();
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.rimg");
    backup(src, &img, &["--compress", "fast"]);
    let tgt = new_file(d.path(), "big.img", 700 << 20);
    let plan: serde_json::Value = serde_json::from_str(&rescue_ok(&[
        "restore", img.to_str().unwrap(), "--to", tgt.to_str().unwrap(), "--layout", "fill", "--align", "1MiB", "--dry-run", "--json",
    ]))
    .unwrap();
    assert_eq!(plan["grows"].as_array().unwrap().len(), 2, "NTFS and ext4 grow: {plan}");
    assert!(std::fs::read(&tgt).unwrap().iter().all(|&b| b == 0), "--dry-run wrote to the target");
    rescue_ok(&["restore", img.to_str().unwrap(), "--to", tgt.to_str().unwrap(), "--layout", "fill", "--align", "1MiB", "--yes"]);
    let pa = partitions(src);
    let pb = partitions(&tgt);
    assert_eq!(pb[0].2, pa[0].2, "the ESP keeps its size");
    for p in &pb {
        assert_eq!(p.1 % (1 << 20), 0, "partition {} not 1 MiB aligned", p.0);
    }
    assert!(pb[1].2 > pa[1].2 && pb[2].2 > pa[2].2, "data partitions did not grow: {pb:?}");
    assert!(pb[2].1 + pb[2].2 > (690 << 20), "the last partition does not reach the end: {pb:?}");
    for ((n, s, l, _), fs) in pb.iter().zip(FS) {
        fsck(&tgt, *s, *l, fs);
        let (_, s0, l0, _) = pa.iter().find(|p| p.0 == *n).unwrap();
        same_files(src, *s0, *l0, &tgt, *s, *l, fs);
    }
    // The ext4 filesystem itself was grown to its partition.
    let lo = Loop::attach(&tgt, pb[2].1, pb[2].2, true);
    let dump = sh_ok(Command::new("dumpe2fs").args(["-h", lo.path()]));
    let blocks: u64 = dump.lines().find(|l| l.starts_with("Block count:")).and_then(|l| l.split_whitespace().last()).unwrap().parse().unwrap();
    let bs: u64 = dump.lines().find(|l| l.starts_with("Block size:")).and_then(|l| l.split_whitespace().last()).unwrap().parse().unwrap();
    assert!(blocks * bs + (1 << 20) >= pb[2].2, "ext4 not grown: {} of {}", blocks * bs, pb[2].2);
}

#[test]
fn partition_restores_into_free_space_and_existing_partition() {
    require_root();
    let src = sample_disk();
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("parts.rimg");
    rescue_ok(&["backup", "part", &format!("{}:2,3", src.display()), "-o", img.to_str().unwrap()]);
    // The whole-disk restore of a partition image is refused.
    let tgt = new_file(d.path(), "t.img", 600 << 20);
    rescue_fails(&["restore", img.to_str().unwrap(), "--to", tgt.to_str().unwrap(), "--yes"], 3, "partition image");
    // Target: GPT with one 120 MiB partition, the rest free.
    sh_ok(Command::new("sfdisk").arg("-q").arg(&tgt).stdin(std::fs::File::open({
        let p = d.path().join("layout");
        std::fs::write(&p, "label: gpt\nstart=1MiB, size=120MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n").unwrap();
        p
    }).unwrap()));
    rescue_ok(&["restore", img.to_str().unwrap(), "--part", "3", "--to", tgt.to_str().unwrap(), "--yes"]);
    let pa = partitions(src);
    let pb = partitions(&tgt);
    assert_eq!(pb.len(), 2, "{pb:?}");
    assert_eq!(pb[1].0, 2, "new partition takes the first free number");
    assert_eq!(pb[1].3, pa[2].3, "the type is kept");
    fsck(&tgt, pb[1].1, pb[1].2, "ext4");
    same_files(src, pa[2].1, pa[2].2, &tgt, pb[1].1, pb[1].2, "ext4");
    // NTFS into the existing, larger partition 1, grown to fill it.
    rescue_ok(&["restore", img.to_str().unwrap(), "--part", "2", "--to", &format!("{}:1", tgt.display()), "--layout", "fill", "--yes"]);
    fsck(&tgt, pb[0].1, pb[0].2, "ntfs");
    same_files(src, pa[1].1, pa[1].2, &tgt, pb[0].1, pb[0].2, "ntfs");
    // A partition smaller than the source is refused.
    let small = new_file(d.path(), "small.img", 200 << 20);
    std::fs::write(d.path().join("l2"), "label: gpt\nstart=1MiB, size=20MiB\n").unwrap();
    sh_ok(Command::new("sfdisk").arg("-q").arg(&small).stdin(std::fs::File::open(d.path().join("l2")).unwrap()));
    let before = file_hash(&small);
    rescue_fails(&["restore", img.to_str().unwrap(), "--part", "3", "--to", &format!("{}:1", small.display()), "--yes"], 3, "smaller");
    assert_eq!(before, file_hash(&small), "a refused restore wrote to the target");
}

#[test]
fn clone_disk_and_partition() {
    require_root();
    let src = sample_disk();
    let d = tempfile::tempdir().unwrap();
    let tgt = new_file(d.path(), "clone.img", std::fs::metadata(src).unwrap().len() + (64 << 20));
    rescue_ok(&["clone", src.to_str().unwrap(), tgt.to_str().unwrap(), "--yes"]);
    same_disk(src, &tgt);
    // Partition clone into an existing partition of another disk.
    let t2 = new_file(d.path(), "t2.img", 400 << 20);
    std::fs::write(d.path().join("l"), "label: gpt\nstart=1MiB, size=200MiB\n").unwrap();
    sh_ok(Command::new("sfdisk").arg("-q").arg(&t2).stdin(std::fs::File::open(d.path().join("l")).unwrap()));
    rescue_ok(&["clone", &format!("{}:3", src.display()), &format!("{}:1", t2.display()), "--yes"]);
    let pa = partitions(src);
    let pb = partitions(&t2);
    fsck(&t2, pb[0].1, pb[0].2, "ext4");
    same_files(src, pa[2].1, pa[2].2, &t2, pb[0].1, pb[0].2, "ext4");
    // The source itself is refused as a target.
    rescue_fails(&["clone", src.to_str().unwrap(), src.to_str().unwrap(), "--yes"], 3, "source");
}

#[test]
fn encrypted_split_sector_by_sector_round_trip_and_damage() {
    require_root();
    let src = sample_disk();
    let d = tempfile::tempdir().unwrap();
    let pw = d.path().join("pw");
    std::fs::write(&pw, "correct horse\n").unwrap();
    let img = d.path().join("sbs.rimg");
    rescue_ok(&[
        "backup", "disk", src.to_str().unwrap(), "-o", img.to_str().unwrap(), "--sector-by-sector", "--encrypt", "--password-file", pw.to_str().unwrap(), "--split", "50M", "--compress", "none",
    ]);
    let vols: Vec<_> = (1..=9).map(|i| d.path().join(format!("sbs.rimg.{i:03}"))).filter(|p| p.exists()).collect();
    assert!(vols.len() >= 2, "expected a split set, got {vols:?}");
    assert!(!img.exists(), "split images have numbered volumes only");
    rescue_ok(&["check", img.to_str().unwrap(), "--password-file", pw.to_str().unwrap()]);
    // Restore: byte-identical disk.
    let tgt = new_file(d.path(), "t.img", std::fs::metadata(src).unwrap().len());
    rescue_ok(&["restore", vols[0].to_str().unwrap(), "--to", tgt.to_str().unwrap(), "--password-file", pw.to_str().unwrap(), "--sector-by-sector", "--yes"]);
    assert_eq!(file_hash(src), file_hash(&tgt), "sector-by-sector restore is not byte-identical");

    // Damage: every case is a clear error and leaves the target untouched.
    let fresh = new_file(d.path(), "fresh.img", std::fs::metadata(src).unwrap().len());
    let untouched = file_hash(&fresh);
    let restore = |image: &Path, password: &Path| {
        rescue(&["restore", image.to_str().unwrap(), "--to", fresh.to_str().unwrap(), "--password-file", password.to_str().unwrap(), "--yes"])
    };
    let bad_pw = d.path().join("bad");
    std::fs::write(&bad_pw, "Correct horse\n").unwrap();
    let out = restore(&img, &bad_pw);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("wrong password"));
    assert_eq!(untouched, file_hash(&fresh));

    let damaged = |name: &str, f: &dyn Fn(&Path)| {
        let dd = d.path().join(name);
        std::fs::create_dir(&dd).unwrap();
        for v in &vols {
            std::fs::copy(v, dd.join(v.file_name().unwrap())).unwrap();
        }
        f(&dd);
        let out = restore(&dd.join("sbs.rimg"), &pw);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(4), "{name}: {err}");
        assert_eq!(untouched, file_hash(&fresh), "{name}: the target was written");
        err
    };
    let err = damaged("missing", &|dd| std::fs::remove_file(dd.join("sbs.rimg.002")).unwrap());
    assert!(err.contains("missing") || err.contains("incomplete"), "{err}");
    let err = damaged("swapped", &|dd| {
        std::fs::rename(dd.join("sbs.rimg.001"), dd.join("x")).unwrap();
        std::fs::rename(dd.join("sbs.rimg.002"), dd.join("sbs.rimg.001")).unwrap();
        std::fs::rename(dd.join("x"), dd.join("sbs.rimg.002")).unwrap();
    });
    assert!(err.contains("volume"), "{err}");
    let last = vols.last().unwrap().file_name().unwrap().to_owned();
    let err = damaged("truncated", &|dd| {
        let f = std::fs::OpenOptions::new().write(true).open(dd.join(&last)).unwrap();
        let len = f.metadata().unwrap().len();
        f.set_len(len - 1000).unwrap();
    });
    assert!(err.contains("incomplete"), "{err}");
    for (i, at) in [(0, 30u64 << 20), (1, 5 << 20)] {
        damaged(&format!("flipped{i}"), &|dd| {
            let p = dd.join(vols[i].file_name().unwrap());
            let mut b = std::fs::read(&p).unwrap();
            let at = (at as usize).min(b.len() - 200);
            b[at] ^= 0x10;
            std::fs::write(&p, b).unwrap();
        });
    }
}

#[test]
fn refusals_leave_targets_untouched() {
    require_root();
    let src = sample_disk();
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("disk.rimg");
    backup(src, &img, &["--compress", "fast"]);
    let size = std::fs::metadata(src).unwrap().len();

    // Too small.
    let small = new_file(d.path(), "small.img", size / 2);
    rescue_fails(&["restore", img.to_str().unwrap(), "--to", small.to_str().unwrap(), "--yes"], 3, "too small");

    // No terminal and no --yes.
    let tgt = new_file(d.path(), "t.img", size);
    rescue_fails(&["restore", img.to_str().unwrap(), "--to", tgt.to_str().unwrap()], 3, "--yes");
    assert!(std::fs::read(&tgt).unwrap().iter().all(|&b| b == 0));

    // The target holds the image: a loop device over the image file itself.
    let lo = Loop::attach(&img, 0, std::fs::metadata(&img).unwrap().len(), false);
    rescue_fails(&["restore", img.to_str().unwrap(), "--to", lo.path(), "--yes"], 3, "holds the image");
    drop(lo);

    // The target has a mounted partition (attached with `losetup -o`, as people
    // do to look inside a disk image), whether named as the file or as a loop
    // device over the whole file.
    rescue_ok(&["restore", img.to_str().unwrap(), "--to", tgt.to_str().unwrap(), "--yes"]);
    let before = file_hash(&tgt);
    let p3 = partitions(&tgt)[2].clone();
    let whole = Loop::attach(&tgt, 0, size, false);
    let part3 = Loop::attach(&tgt, p3.1, p3.2, false);
    let mnt = d.path().join("mnt");
    {
        let _m = Mount::new(part3.path(), &mnt, "ext4", true);
        rescue_fails(&["restore", img.to_str().unwrap(), "--to", whole.path(), "--yes"], 3, "mounted");
        rescue_fails(&["restore", img.to_str().unwrap(), "--to", tgt.to_str().unwrap(), "--yes"], 3, "mounted");
        // A read-only filesystem can be backed up.
        rescue_ok(&["backup", "disk", part3.path(), "-o", d.path().join("ro.rimg").to_str().unwrap()]);
    }
    assert_eq!(before, file_hash(&tgt), "a refused restore wrote to the target");
    {
        // One mounted read-write is refused: its image would be inconsistent.
        let _m = Mount::new(part3.path(), &mnt, "ext4", false);
        rescue_fails(&["backup", "disk", part3.path(), "-o", d.path().join("rw.rimg").to_str().unwrap()], 3, "read-write");
    }
    drop(part3);
    drop(whole);

    // Usage errors: exit 2.
    rescue_fails(&["backup", "disk", src.to_str().unwrap(), "-o", d.path().join("x").to_str().unwrap(), "--split", "10M"], 2, "50");
    rescue_fails(&["backup", "part", src.to_str().unwrap(), "-o", d.path().join("y").to_str().unwrap()], 2, "DISK:N");
    // Existing output is never overwritten.
    rescue_fails(&["backup", "disk", src.to_str().unwrap(), "-o", img.to_str().unwrap()], 1, "already exists");
}

#[test]
fn gpt_from_4096_byte_sectors_is_translated() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let src = new_file(d.path(), "4k.img", 128 << 20);
    std::fs::write(d.path().join("l"), "label: gpt\nstart=1MiB, size=100MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n").unwrap();
    {
        // This sfdisk has no --sector-size: give it a 4096-byte-sector loop device.
        let lo = Loop::attach_sector_size(&src, 4096);
        sh_ok(Command::new("sfdisk").args(["-q", lo.path()]).stdin(std::fs::File::open(d.path().join("l")).unwrap()));
    }
    let content = d.path().join("content");
    std::fs::create_dir(&content).unwrap();
    std::fs::write(content.join("hello.txt"), "hello from a 4Kn disk\n".repeat(1000)).unwrap();
    {
        let lo = Loop::attach(&src, 1 << 20, 100 << 20, false);
        sh_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-b", "4096", "-d"]).arg(&content).arg(lo.path()));
    }
    let img = d.path().join("4k.rimg");
    rescue_ok(&["backup", "disk", src.to_str().unwrap(), "--sector-size", "4096", "-o", img.to_str().unwrap()]);
    let tgt = new_file(d.path(), "512.img", 128 << 20);
    let plan = rescue_ok(&["restore", img.to_str().unwrap(), "--to", tgt.to_str().unwrap(), "--sector-size", "512", "--dry-run"]);
    assert!(plan.contains("translated from 4096-byte to 512-byte sectors"), "{plan}");
    rescue_ok(&["restore", img.to_str().unwrap(), "--to", tgt.to_str().unwrap(), "--sector-size", "512", "--yes"]);
    let p = partitions(&tgt);
    assert_eq!((p[0].1, p[0].2), (1 << 20, 100 << 20), "{p:?}");
    fsck(&tgt, p[0].1, p[0].2, "ext4");
    same_files(&src, 1 << 20, 100 << 20, &tgt, p[0].1, p[0].2, "ext4");

    // An MBR partition at sector 63 cannot live on a 4096-byte-sector disk.
    let odd = new_file(d.path(), "odd.img", 64 << 20);
    std::fs::write(d.path().join("l2"), "label: dos\nstart=63, size=60000, type=83\n").unwrap();
    sh_ok(Command::new("sfdisk").args(["-q"]).arg(&odd).stdin(std::fs::File::open(d.path().join("l2")).unwrap()));
    let img2 = d.path().join("odd.rimg");
    rescue_ok(&["backup", "disk", odd.to_str().unwrap(), "-o", img2.to_str().unwrap()]);
    let t4k = new_file(d.path(), "t4k.img", 64 << 20);
    rescue_fails(&["restore", img2.to_str().unwrap(), "--to", t4k.to_str().unwrap(), "--sector-size", "4096", "--yes"], 3, "cannot be translated");
}

/// MBR with an extended partition and logical partitions, restored as it
/// was and grown into a larger disk.
#[test]
fn mbr_with_logical_partitions_round_trip() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let src = new_file(d.path(), "mbr.img", 200 << 20);
    std::fs::write(
        d.path().join("l"),
        "label: dos\nstart=2048, size=40MiB, type=c, bootable\nstart=83968, size=150MiB, type=5\nstart=86016, size=60MiB, type=83\nstart=210944, size=40MiB, type=7\n",
    )
    .unwrap();
    sh_ok(Command::new("sfdisk").arg("-q").arg(&src).stdin(std::fs::File::open(d.path().join("l")).unwrap()));
    let parts = partitions(&src);
    assert_eq!(parts.len(), 4, "{parts:?}");
    let content = d.path().join("c");
    std::fs::create_dir(&content).unwrap();
    for i in 0..20 {
        std::fs::write(content.join(format!("f{i}.txt")), format!("logical partition file {i}\n").repeat(500 * (i + 1))).unwrap();
    }
    let by_num = |n: u32| parts.iter().find(|p| p.0 == n).unwrap().clone();
    {
        let (_, s, l, _) = by_num(1);
        let lo = Loop::attach(&src, s, l, false);
        sh_ok(Command::new("mkfs.vfat").args(["-F", "32", lo.path()]));
        sh_ok(Command::new("mcopy").env("MTOOLS_SKIP_CHECK", "1").args(["-s", "-m", "-i", lo.path()]).arg(content.join("f1.txt")).arg("::/"));
        let (_, s, l, _) = by_num(5);
        let lo = Loop::attach(&src, s, l, false);
        sh_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&content).arg(lo.path()));
        let (_, s, l, _) = by_num(6);
        let lo = Loop::attach(&src, s, l, false);
        sh_ok(Command::new("mkfs.ntfs").args(["-q", "-F", "-f", lo.path()]));
        sh_ok(Command::new("ntfscp").args(["-f", lo.path()]).arg(content.join("f7.txt")).arg("f7.txt"));
    }
    let img = d.path().join("mbr.rimg");
    rescue_ok(&["backup", "disk", src.to_str().unwrap(), "-o", img.to_str().unwrap()]);
    for (name, size, extra) in [("same", 200u64 << 20, vec![]), ("fill", 400 << 20, vec!["--layout", "fill"])] {
        let tgt = new_file(d.path(), &format!("{name}.img"), size);
        let mut args = vec!["restore", img.to_str().unwrap(), "--to", tgt.to_str().unwrap(), "--yes"];
        args.extend(extra.iter().copied());
        rescue_ok(&args);
        let pb = partitions(&tgt);
        assert_eq!(pb.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2, 5, 6], "{name}: {pb:?}");
        assert_eq!(pb.iter().map(|p| p.3.clone()).collect::<Vec<_>>(), parts.iter().map(|p| p.3.clone()).collect::<Vec<_>>(), "{name}: types");
        for (n, fs) in [(1u32, "vfat"), (5, "ext4"), (6, "ntfs")] {
            let (_, s, l, _) = pb.iter().find(|p| p.0 == n).unwrap().clone();
            fsck(&tgt, s, l, fs);
            let (_, s0, l0, _) = by_num(n);
            same_files(&src, s0, l0, &tgt, s, l, fs);
        }
        if name == "fill" {
            assert!(pb.iter().find(|p| p.0 == 5).unwrap().2 > by_num(5).2, "logical ext4 did not grow: {pb:?}");
        }
        // The boot flag and the disk signature survive.
        let dump = sh_ok(Command::new("sfdisk").arg("-d").arg(&tgt));
        assert!(dump.contains("bootable"), "{dump}");
        let id = |s: &str| s.lines().find(|l| l.starts_with("label-id")).map(str::to_string);
        assert_eq!(id(&dump), id(&sh_ok(Command::new("sfdisk").arg("-d").arg(&src))));
    }
}

/// `backup system` picks the boot partitions and says why.
#[test]
fn system_backup_selects_boot_partitions() {
    require_root();
    let src = sample_disk();
    let d = tempfile::tempdir().unwrap();
    let img = d.path().join("sys.rimg");
    let plan: serde_json::Value = serde_json::from_str(&rescue_ok(&["backup", "system", src.to_str().unwrap(), "-o", img.to_str().unwrap(), "--dry-run", "--json"])).unwrap();
    let why: Vec<String> = plan["selection"].as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect();
    assert!(why.iter().any(|w| w.starts_with("partition 1: EFI system partition")), "{why:?}");
    assert!(why.iter().any(|w| w.starts_with("partition 2:") && w.contains("Windows")), "{why:?}");
    assert!(why.iter().any(|w| w.starts_with("partition 3:") && w.contains("root")), "{why:?}");
    assert!(!img.exists(), "--dry-run wrote an image");
    rescue_ok(&["backup", "system", src.to_str().unwrap(), "-o", img.to_str().unwrap()]);
    let info = rescue_ok(&["info", img.to_str().unwrap()]);
    assert!(info.contains("System backup") && info.contains("EFI system partition"), "{info}");
}

/// A LUKS2 partition whose passphrase is given keeps only its header and
/// the sectors the ext4 inside uses, still encrypted: the image is a
/// fraction of the partition (the rest of it is random, as on a wiped
/// disk), holds no plaintext, and restores onto a target full of other
/// bytes to a volume the same passphrase opens, with a clean ext4 and every
/// file; `rescue clone` with the passphrase does the same. Without the
/// passphrase the plan says how to get that.
#[test]
fn luks_partition_keeps_only_used_sectors_encrypted() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let size = 160u64 << 20;
    let part_len = 150u64 << 20;
    // The volume: random bytes, then cryptsetup's header, then an ext4 with
    // files made inside through imaging's unlocked view.
    let vol = d.path().join("vol.img");
    fill_random(&std::fs::File::create(&vol).unwrap(), 0, part_len, 0x9e37_79b9_7f4a_7c15);
    std::fs::write(d.path().join("pw"), "open sesame").unwrap();
    sh_ok(Command::new("cryptsetup").args(["luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file"]).arg(d.path().join("pw")).arg(&vol));
    let files = d.path().join("files");
    std::fs::create_dir(&files).unwrap();
    std::fs::write(files.join("notes.txt"), "plaintext that must not reach the image ".repeat(300)).unwrap();
    std::fs::write(files.join("data.bin"), (0..5u32 << 20).map(|i| (i * 7 / 3) as u8).collect::<Vec<u8>>()).unwrap();
    {
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&vol).unwrap();
        let v = imaging::luks::Volume::unlock(&f, part_len, b"open sesame").unwrap();
        let plain = imaging::luks_fuse::PlainFile::mount(f, 0, v, d.path(), true, "test").unwrap();
        sh_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(&files).arg(plain.path()));
    }
    let layout = d.path().join("layout");
    std::fs::write(&layout, "label: gpt\nstart=1MiB, size=150MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n").unwrap();
    let src = new_file(d.path(), "src.img", size);
    sh_ok(Command::new("sfdisk").arg("-q").arg(&src).stdin(std::fs::File::open(&layout).unwrap()));
    sh_ok(Command::new("dd").arg(format!("if={}", vol.display())).arg(format!("of={}", src.display())).args(["bs=1M", "seek=1", "conv=notrunc", "status=none"]));
    let spec = format!("{}:1", src.display());
    // Without the passphrase: every sector, and the plan says why.
    let out = rescue_ok(&["backup", "part", &spec, "-o", d.path().join("x").to_str().unwrap(), "--dry-run"]);
    assert!(out.contains("encrypted (LUKS)") && out.contains("--luks-key-file"), "{out}");
    // The key file holds a newline cryptsetup's did not: its first line is tried too.
    std::fs::write(d.path().join("pw-line"), "open sesame\n").unwrap();
    let img = d.path().join("luks.rimg");
    let out = rescue_ok(&["backup", "part", &spec, "-o", img.to_str().unwrap(), "--luks-key-file", d.path().join("pw-line").to_str().unwrap(), "--verify"]);
    assert!(out.contains("Backup complete"), "{out}");
    let info: serde_json::Value = serde_json::from_str(&rescue_ok(&["info", img.to_str().unwrap(), "--json"])).unwrap();
    let r = &info["catalog"]["regions"].as_array().unwrap()[0];
    assert_eq!(r["mode"], "used", "{r}");
    let image_len = std::fs::metadata(&img).unwrap().len();
    // LUKS2's 16 MiB of header and keyslots, the ext4's metadata and
    // journal and the files: about a quarter of the random partition.
    assert!(image_len < part_len / 3, "image is {image_len} bytes for a {part_len}-byte partition");
    let raw = std::fs::read(&img).unwrap();
    assert!(!raw.windows(24).any(|w| w == b"plaintext that must not "), "the image holds plaintext");
    // A wrong passphrase: sector by sector, said in the plan.
    std::fs::write(d.path().join("bad"), "open sesamf").unwrap();
    let out = rescue_ok(&["backup", "part", &spec, "-o", d.path().join("y").to_str().unwrap(), "--luks-key-file", d.path().join("bad").to_str().unwrap(), "--dry-run"]);
    assert!(out.contains("no keyslot opens"), "{out}");
    // Restore onto a disk whose bytes are all 0xA5, and clone onto another
    // (reading the same used sectors): both open with the passphrase.
    let want = files_of(&files);
    let opens_clean_with_the_files = |tgt: &Path, name: &str| {
        let (start, len) = part(tgt, 1);
        let restored = d.path().join(format!("{name}-part.img"));
        cut(tgt, start, len, &restored);
        let f = std::fs::File::open(&restored).unwrap();
        let v = imaging::luks::Volume::unlock(&f, len, b"open sesame").expect("the copied volume opens with the same passphrase");
        let plain = imaging::luks_fuse::PlainFile::mount(f, 0, v, d.path(), false, name).unwrap();
        sh_ok(Command::new("e2fsck").arg("-fn").arg(plain.path()));
        let lo = Loop::attach(&plain.path(), 0, len, true);
        let m = Mount::new(lo.path(), &d.path().join(format!("{name}-mnt")), "ext4", true);
        let got = files_of(&m.0);
        assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>(), "{name}");
        for (k, v) in &want {
            assert_eq!((got[k].0, &got[k].2), (v.0, &v.2), "{name}: {k}");
        }
        drop(m);
        drop(lo);
    };
    let tgt = d.path().join("tgt.img");
    std::fs::write(&tgt, vec![0xA5u8; size as usize]).unwrap();
    sh_ok(Command::new("sfdisk").arg("-q").arg(&tgt).stdin(std::fs::File::open(&layout).unwrap()));
    let cl = d.path().join("clone.img");
    std::fs::copy(&tgt, &cl).unwrap();
    rescue_ok(&["restore", img.to_str().unwrap(), "--part", "1", "--to", &format!("{}:1", tgt.display()), "--yes"]);
    opens_clean_with_the_files(&tgt, "restored");
    // The clone writes only the used sectors: a quarter of what it writes
    // without the passphrase.
    let to_write = |extra: &[&str]| -> f64 {
        let mut args = vec!["clone", spec.as_str(), "--dry-run"];
        let t = format!("{}:1", cl.display());
        args.insert(2, &t);
        args.extend_from_slice(extra);
        let out = rescue_ok(&args);
        let line = out.lines().find(|l| l.contains("data to write:")).unwrap_or_else(|| panic!("{out}"));
        line.split_whitespace().rev().nth(1).and_then(|x| x.parse().ok()).unwrap_or_else(|| panic!("{line}"))
    };
    let (with, without) = (to_write(&["--luks-key-file", d.path().join("pw").to_str().unwrap()]), to_write(&[]));
    assert!(without >= 150.0 && with < without / 3.0, "clone writes {with} MiB with the passphrase, {without} MiB without");
    rescue_ok(&["clone", &spec, &format!("{}:1", cl.display()), "--luks-key-file", d.path().join("pw").to_str().unwrap(), "--yes"]);
    opens_clean_with_the_files(&cl, "cloned");
}
