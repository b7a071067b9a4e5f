//! Restore and clone to a smaller disk (ext4 and NTFS shrunk in a scratch
//! file) and partition-table conversion (GPT with six partitions to MBR with
//! logical partitions, and back to GPT), with the real `rescue` binary, real
//! mkfs/resize tools and the filesystems' own checkers. Needs root (loop
//! devices, mounts), as CI has.
#![allow(clippy::unwrap_used)] // tests may unwrap (STYLE.md)

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

const MIB: u64 = 1 << 20;

/// Deterministic incompressible bytes (xorshift64*).
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        out.extend_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    out.truncate(len);
    out
}

/// A folder of files: one large random file of `mib` MiB, smaller random and
/// text files in a subfolder, an empty file.
fn content(dir: &Path, seed: u64, mib: usize) -> PathBuf {
    let d = dir.join(format!("content{seed}"));
    std::fs::create_dir_all(d.join("docs")).unwrap();
    std::fs::write(d.join("big.bin"), noise(seed, mib << 20)).unwrap();
    for i in 0..12u64 {
        std::fs::write(d.join("docs").join(format!("part{i}.bin")), noise(seed * 100 + i, 40_000 + 7_000 * i as usize)).unwrap();
        std::fs::write(d.join("docs").join(format!("note{i}.txt")), format!("seed {seed} note {i}\n").repeat(300)).unwrap();
    }
    std::fs::write(d.join("empty"), b"").unwrap();
    d
}

fn sfdisk(img: &Path, script: &str) {
    let mut c = Command::new("sfdisk");
    c.arg("-q").arg("--no-reread").arg(img).stdin(std::process::Stdio::piped());
    let mut child = c.spawn().expect("sfdisk");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(script.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success(), "sfdisk failed on {}", img.display());
}

/// Make filesystem `fs` on partition (start, len) of `img` holding `files`.
fn mkfs(img: &Path, start: u64, len: u64, fs: &str, files: &Path) {
    let lo = Loop::attach(img, start, len, false);
    match fs {
        "ext4" => {
            sh_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-d"]).arg(files).arg(lo.path()));
        }
        "vfat" => {
            sh_ok(Command::new("mkfs.vfat").arg(lo.path()));
            let mut c = Command::new("mcopy");
            c.env("MTOOLS_SKIP_CHECK", "1").args(["-s", "-m", "-i", lo.path()]);
            for e in std::fs::read_dir(files).unwrap() {
                c.arg(e.unwrap().path());
            }
            sh_ok(c.arg("::/"));
        }
        "ntfs" => {
            sh_ok(Command::new("mkfs.ntfs").args(["-q", "-F", "-f", lo.path()]));
            let mnt = tempfile::tempdir().unwrap();
            let m = Mount::new(lo.path(), mnt.path(), "ntfs", false);
            sh_ok(Command::new("cp").args(["-a"]).arg(format!("{}/.", files.display())).arg(&m.0));
        }
        other => panic!("no mkfs for {other}"),
    }
}

/// A 256 MiB GPT disk: a 16 MiB FAT32 ESP, a 112 MiB NTFS and a 112 MiB ext4,
/// each data filesystem about 30% used.
fn shrink_source(dir: &Path) -> PathBuf {
    let img = new_file(dir, "src.img", 256 * MIB);
    sfdisk(
        &img,
        "label: gpt\n\
         start=1MiB, size=16MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
         size=112MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n\
         size=112MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
    );
    let p = partitions(&img);
    mkfs(&img, p[0].1, p[0].2, "vfat", &content(dir, 1, 2));
    mkfs(&img, p[1].1, p[1].2, "ntfs", &content(dir, 2, 30));
    mkfs(&img, p[2].1, p[2].2, "ext4", &content(dir, 3, 28));
    img
}

/// Scratch files left behind in `dir`.
fn leftovers(dir: &Path) -> Vec<String> {
    std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("rescue-shrink-")).collect()
}

/// Partition `a_n` of `a` and `b_n` of `b`: the target passes its checker and
/// holds the same files.
fn same_partition(a: &Path, a_n: u32, b: &Path, b_n: u32, fs: &str) {
    let pa = partitions(a);
    let pb = partitions(b);
    let (_, s, l, _) = pa.iter().find(|p| p.0 == a_n).cloned().unwrap_or_else(|| panic!("no partition {a_n} on {}: {pa:?}", a.display()));
    let (_, s2, l2, _) = pb.iter().find(|p| p.0 == b_n).cloned().unwrap_or_else(|| panic!("no partition {b_n} on {}: {pb:?}", b.display()));
    fsck(b, s2, l2, fs);
    same_files(a, s, l, b, s2, l2, fs);
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// The source is 256 MiB with about 30% in use; the target is 40% smaller.
#[test]
fn restore_to_a_smaller_disk_shrinks_ntfs_and_ext4() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let src = shrink_source(d.path());
    let img = d.path().join("src.rimg");
    rescue_ok(&["backup", "disk", s(&src), "-o", s(&img), "--compress", "fast"]);
    let src_hash = file_hash(&src);
    let tgt = new_file(d.path(), "small.img", 154 * MIB);
    let scratch = d.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();

    // The plan shows old and new sizes and writes nothing.
    let plan: serde_json::Value = serde_json::from_str(&rescue_ok(&["restore", s(&img), "--to", s(&tgt), "--scratch-dir", s(&scratch), "--dry-run", "--json"])).unwrap();
    let shrinks = plan["shrinks"].as_array().unwrap();
    assert_eq!(shrinks.iter().map(|x| x["fs"].as_str().unwrap()).collect::<Vec<_>>(), vec!["ntfs", "ext4"], "{plan}");
    for x in shrinks {
        assert_eq!(x["from"].as_u64(), Some(112 * MIB));
        let (to, used) = (x["to"].as_u64().unwrap(), x["used"].as_u64().unwrap());
        assert!(to < 112 * MIB && to > used, "{x}");
    }
    assert_eq!(plan["scratch"]["dir"].as_str(), Some(s(&scratch)));
    assert!(std::fs::read(&tgt).unwrap().iter().all(|&b| b == 0), "--dry-run wrote to the target");
    let text = rescue_ok(&["restore", s(&img), "--to", s(&tgt), "--scratch-dir", s(&scratch), "--dry-run"]);
    assert!(text.contains("shrinks from 112.0 MiB"), "{text}");

    let out = rescue_ok(&["restore", s(&img), "--to", s(&tgt), "--scratch-dir", s(&scratch), "--yes"]);
    assert!(out.contains("ntfs shrunk from 112.0 MiB") && out.contains("ext4 shrunk from 112.0 MiB"), "{out}");
    assert!(leftovers(&scratch).is_empty(), "scratch files left: {:?}", leftovers(&scratch));
    let pb = partitions(&tgt);
    assert_eq!(pb.len(), 3, "{pb:?}");
    assert_eq!(pb[0].2, 16 * MIB, "the ESP keeps its size");
    assert!(pb[1].2 < 112 * MIB && pb[2].2 < 112 * MIB, "{pb:?}");
    same_partition(&src, 1, &tgt, 1, "vfat");
    same_partition(&src, 2, &tgt, 2, "ntfs");
    same_partition(&src, 3, &tgt, 3, "ext4");
    assert_eq!(src_hash, file_hash(&src), "the source disk changed");
}

#[test]
fn clone_to_a_smaller_disk_shrinks_in_scratch_not_on_the_source() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let src = shrink_source(d.path());
    let src_hash = file_hash(&src);
    let tgt = new_file(d.path(), "small.img", 160 * MIB);
    let scratch = d.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rescue"))
        .args(["clone", s(&src), s(&tgt), "--yes"])
        .env("RESCUE_SCRATCH_DIR", &scratch)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "clone failed: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("shrunk"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(leftovers(&scratch).is_empty());
    assert_eq!(src_hash, file_hash(&src), "the clone wrote to its source");
    same_partition(&src, 2, &tgt, 2, "ntfs");
    same_partition(&src, 3, &tgt, 3, "ext4");
}

/// GPT: ESP + five ext4 partitions (a Linux UEFI disk).
fn six_partition_source(dir: &Path) -> PathBuf {
    let img = new_file(dir, "six.img", 200 * MIB);
    let mut script = "label: gpt\nstart=1MiB, size=16MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n".to_string();
    for _ in 0..5 {
        script.push_str("size=30MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n");
    }
    sfdisk(&img, &script);
    let p = partitions(&img);
    assert_eq!(p.len(), 6);
    mkfs(&img, p[0].1, p[0].2, "vfat", &content(dir, 10, 1));
    for (i, q) in p.iter().enumerate().skip(1) {
        mkfs(&img, q.1, q.2, "ext4", &content(dir, 10 + i as u64, 2));
    }
    img
}

#[test]
fn gpt_with_six_partitions_to_mbr_and_back_to_gpt() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let src = six_partition_source(d.path());
    let img = d.path().join("six.rimg");
    rescue_ok(&["backup", "disk", s(&src), "-o", s(&img), "--compress", "fast"]);

    let mbr = new_file(d.path(), "mbr.img", 200 * MIB);
    let plan = rescue_ok(&["restore", s(&img), "--to", s(&mbr), "--table", "mbr", "--dry-run"]);
    assert!(plan.contains("MBR partition table") && plan.contains("(logical)"), "{plan}");
    assert!(plan.contains("boot: UEFI boots the EFI system partition"), "{plan}");
    rescue_ok(&["restore", s(&img), "--to", s(&mbr), "--table", "mbr", "--yes"]);
    let j: serde_json::Value = serde_json::from_str(&sh_ok(Command::new("sfdisk").arg("-J").arg(&mbr))).unwrap();
    assert_eq!(j["partitiontable"]["label"], "dos");
    let pm = partitions(&mbr);
    assert_eq!(pm.iter().map(|p| (p.0, p.3.as_str())).collect::<Vec<_>>(), vec![(1, "ef"), (2, "83"), (3, "83"), (4, "f"), (5, "83"), (6, "83"), (7, "83")], "{pm:?}");
    // Logical partitions 5.. lie inside the extended partition 4.
    let ext = pm.iter().find(|p| p.0 == 4).unwrap();
    assert!(pm.iter().filter(|p| p.0 >= 5).all(|p| p.1 > ext.1 && p.1 + p.2 <= ext.1 + ext.2), "{pm:?}");
    let gpt_to_mbr = [(1, 1, "vfat"), (2, 2, "ext4"), (3, 3, "ext4"), (4, 5, "ext4"), (5, 6, "ext4"), (6, 7, "ext4")];
    for (a, b, fs) in gpt_to_mbr {
        same_partition(&src, a, &mbr, b, fs);
    }

    // Back to GPT: the logical partitions become GPT entries with their numbers.
    let img2 = d.path().join("mbr.rimg");
    rescue_ok(&["backup", "disk", s(&mbr), "-o", s(&img2), "--compress", "fast"]);
    let gpt = new_file(d.path(), "gpt.img", 200 * MIB);
    rescue_ok(&["restore", s(&img2), "--to", s(&gpt), "--table", "gpt", "--yes"]);
    let j: serde_json::Value = serde_json::from_str(&sh_ok(Command::new("sfdisk").arg("-J").arg(&gpt))).unwrap();
    assert_eq!(j["partitiontable"]["label"], "gpt");
    let pg = partitions(&gpt);
    assert_eq!(pg.iter().map(|p| p.0).collect::<Vec<_>>(), vec![1, 2, 3, 5, 6, 7], "{pg:?}");
    assert_eq!(pg[0].3, "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    assert!(pg[1..].iter().all(|p| p.3 == "0FC63DAF-8483-4772-8E79-3D69D8477DE4"), "{pg:?}");
    for (a, b, fs) in gpt_to_mbr {
        same_partition(&src, a, &gpt, b, fs);
    }
}

#[test]
fn refusals_leave_the_target_untouched() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    // A Windows UEFI system: ESP, MSR, NTFS; no BIOS boot code.
    let win = new_file(d.path(), "win.img", 96 * MIB);
    sfdisk(
        &win,
        "label: gpt\n\
         start=1MiB, size=16MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
         size=16MiB, type=E3C9E316-0B5C-4DB8-817D-F92DF00215AE\n\
         size=60MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n",
    );
    let p = partitions(&win);
    mkfs(&win, p[0].1, p[0].2, "vfat", &content(d.path(), 20, 1));
    mkfs(&win, p[2].1, p[2].2, "ntfs", &content(d.path(), 21, 4));
    let img = d.path().join("win.rimg");
    rescue_ok(&["backup", "disk", s(&win), "-o", s(&img), "--compress", "fast"]);
    let tgt = new_file(d.path(), "t.img", 96 * MIB);
    let before = file_hash(&tgt);
    let err = rescue_fails(&["restore", s(&img), "--to", s(&tgt), "--table", "mbr", "--yes"], 3, "boots with UEFI");
    assert!(err.contains("hint: keep the GPT"), "{err}");
    // Too small even after shrinking the NTFS: 64 MiB cannot hold 16 + 16 MiB
    // fixed partitions and the NTFS's used space plus margin.
    let tiny = new_file(d.path(), "tiny.img", 48 * MIB);
    let err = rescue_fails(&["restore", s(&img), "--to", s(&tiny), "--yes"], 3, "too small even after shrinking");
    assert!(err.contains("at least"), "{err}");
    // A scratch folder that does not exist.
    let smaller = new_file(d.path(), "smaller.img", 70 * MIB);
    rescue_fails(&["restore", s(&img), "--to", s(&smaller), "--scratch-dir", s(&d.path().join("nope")), "--yes"], 3, "scratch folder");
    // --table is for whole disks.
    rescue_fails(&["restore", s(&img), "--part", "3", "--to", s(&tgt), "--table", "mbr", "--yes"], 2, "--table");
    assert_eq!(before, file_hash(&tgt), "a refused restore wrote to the target");
    assert!(std::fs::read(&tiny).unwrap().iter().all(|&b| b == 0));
    assert!(std::fs::read(&smaller).unwrap().iter().all(|&b| b == 0));
}

/// Manual sizes (`--size N=SIZE`): NTFS made smaller, ext4 larger, on a
/// target of the same size; both filesystems are checked and hold the same
/// files. A size below what a filesystem holds is refused before anything
/// is written.
#[test]
fn manual_sizes_shrink_one_partition_and_grow_another() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let src = shrink_source(d.path());
    let img = d.path().join("src.rimg");
    rescue_ok(&["backup", "disk", s(&src), "-o", s(&img), "--compress", "fast"]);
    let tgt = new_file(d.path(), "same.img", 256 * MIB);
    let scratch = d.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let e = rescue_fails(&["restore", s(&img), "--to", s(&tgt), "--size", "2=20MiB", "--yes"], 3, "can shrink to");
    assert!(e.contains("partition 2 (ntfs"), "{e}");
    assert!(std::fs::read(&tgt).unwrap().iter().all(|&b| b == 0), "a refused plan wrote to the target");
    rescue_fails(&["restore", s(&img), "--to", s(&tgt), "--size", "two=20MiB", "--yes"], 2, "expected N=SIZE");
    let out = rescue_ok(&["restore", s(&img), "--to", s(&tgt), "--size", "2=64MiB", "--size", "3=160MiB", "--scratch-dir", s(&scratch), "--yes"]);
    assert!(out.contains("ntfs shrunk from 112.0 MiB"), "{out}");
    let pb = partitions(&tgt);
    assert_eq!(pb.iter().map(|p| p.2).collect::<Vec<_>>(), vec![16 * MIB, 64 * MIB, 160 * MIB], "{pb:?}");
    same_partition(&src, 1, &tgt, 1, "vfat");
    same_partition(&src, 2, &tgt, 2, "ntfs");
    same_partition(&src, 3, &tgt, 3, "ext4");
    // The ext4 filesystem fills its larger partition.
    let (_, st, len, _) = pb[2].clone();
    let lo = Loop::attach(&tgt, st, len, true);
    let info = sh_ok(Command::new("dumpe2fs").arg("-h").arg(lo.path()));
    let blocks: u64 = info.lines().find_map(|l| l.strip_prefix("Block count:")).and_then(|v| v.trim().parse().ok()).unwrap();
    let bsize: u64 = info.lines().find_map(|l| l.strip_prefix("Block size:")).and_then(|v| v.trim().parse().ok()).unwrap();
    assert_eq!(blocks * bsize, 160 * MIB, "ext4 grown to its partition");
    assert!(leftovers(&scratch).is_empty());
}

/// `clone --system`: only what boots (the ESP and the largest Linux
/// filesystem) goes to the new disk, said with the reasons; the data
/// partition stays behind and nothing else is written where it was.
#[test]
fn system_clone_takes_the_boot_partitions_and_leaves_data() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let src = new_file(d.path(), "src.img", 256 * MIB);
    sfdisk(
        &src,
        "label: gpt\n\
         start=1MiB, size=16MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\n\
         size=40MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n\
         size=120MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n",
    );
    let p = partitions(&src);
    mkfs(&src, p[0].1, p[0].2, "vfat", &content(d.path(), 1, 1));
    mkfs(&src, p[1].1, p[1].2, "ext4", &content(d.path(), 2, 8));
    mkfs(&src, p[2].1, p[2].2, "ext4", &content(d.path(), 3, 20));
    let tgt = new_file(d.path(), "new.img", 256 * MIB);
    let out = Command::new(env!("CARGO_BIN_EXE_rescue")).args(["clone", "--system", s(&src), s(&tgt), "--yes"]).stdin(std::process::Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "clone --system failed: {err}");
    assert!(err.contains("partition 3: largest Linux filesystem") && err.contains("partition 2: left out"), "{err}");
    let pt = partitions(&tgt);
    assert_eq!(pt.iter().map(|x| x.0).collect::<Vec<_>>(), vec![1, 3], "{pt:?}");
    same_partition(&src, 1, &tgt, 1, "vfat");
    same_partition(&src, 3, &tgt, 3, "ext4");
    // Where the data partition was, the new disk holds nothing.
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(&tgt).unwrap();
    f.seek(SeekFrom::Start(p[1].1)).unwrap();
    let mut buf = vec![0u8; p[1].2 as usize];
    f.read_exact(&mut buf).unwrap();
    assert!(buf.iter().all(|&b| b == 0), "bytes written where the data partition was");
    rescue_fails(&["clone", "--system", &format!("{}:3", s(&src)), s(&tgt), "--yes"], 2, "--system clones a disk");
}
