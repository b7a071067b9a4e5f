//! Backup chains end to end: full → incr → incr → diff → incr over real
//! filesystems changed through real mounts; every point restored and checked
//! with the filesystem checkers and file by file; merge of each kind; missing
//! and damaged links refused before any write; changed-block restore onto a
//! damaged disk. Needs root (loop devices, mounts), as CI has.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

type Tree = BTreeMap<String, (String, u64, i64, String)>;

/// Mount partition `n` of `disk` (read-write) and run `f` on its root.
fn with_mounted(disk: &Path, n: u32, fs: &str, f: impl FnOnce(&Path)) {
    let (_, start, len, _) = partitions(disk).into_iter().find(|p| p.0 == n).expect("partition");
    let lo = Loop::attach(disk, start, len, false);
    let dir = tempfile::tempdir().expect("tempdir");
    let m = Mount::new(lo.path(), &dir.path().join("m"), fs, false);
    f(&m.0);
    drop(m);
    drop(lo);
}

/// The file trees of the NTFS (2) and ext4 (3) partitions.
fn trees(disk: &Path) -> (Tree, Tree) {
    let mut out = Vec::new();
    for (n, fs) in [(2, "ntfs"), (3, "ext4")] {
        let (_, start, len, _) = partitions(disk).into_iter().find(|p| p.0 == n).expect("partition");
        let lo = Loop::attach(disk, start, len, true);
        let dir = tempfile::tempdir().expect("tempdir");
        let m = Mount::new(lo.path(), &dir.path().join("m"), fs, true);
        out.push(tree(&m.0));
    }
    let b = out.pop().expect("ext4");
    (out.pop().expect("ntfs"), b)
}

/// A deterministic change of the kind users make between backups: appends,
/// rewrites in the middle of large files, new files, deleted files.
fn change(disk: &Path, step: u8) {
    for (n, fs) in [(2u32, "ntfs"), (3, "ext4")] {
        with_mounted(disk, n, fs, |root| {
            use std::io::{Seek, SeekFrom, Write};
            let fill = |len: usize, seed: u8| -> Vec<u8> { (0..len).map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed).wrapping_add((i >> 9) as u8)).collect() };
            std::fs::write(root.join(format!("new-{step}.bin")), fill(300_000 + usize::from(step) * 1000, step)).expect("new file");
            let mut log = std::fs::OpenOptions::new().append(true).create(true).open(root.join("journal.log")).expect("log");
            log.write_all(format!("step {step}\n").repeat(2000).as_bytes()).expect("append");
            // Rewrite 64 KiB in the middle of the largest regular file.
            let big = std::fs::read_dir(root)
                .expect("dir")
                .flatten()
                .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
                .max_by_key(|e| e.metadata().map(|m| m.len()).unwrap_or(0))
                .expect("a file");
            let len = big.metadata().expect("meta").len();
            let mut f = std::fs::OpenOptions::new().write(true).open(big.path()).expect("open big");
            f.seek(SeekFrom::Start(len / 2)).expect("seek");
            f.write_all(&fill(65536, step.wrapping_add(100))).expect("rewrite");
            f.sync_all().expect("sync");
            if step > 1 {
                let _ = std::fs::remove_file(root.join(format!("new-{}.bin", step - 1)));
            }
        });
    }
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

fn restore_to(img: &Path, dir: &Path, name: &str, size: u64) -> PathBuf {
    let t = new_file(dir, name, size);
    rescue_ok(&["restore", s(img), "--to", s(&t), "--yes"]);
    t
}

fn check_disk(disk: &Path, want: &(Tree, Tree)) {
    for (n, fs) in [(1u32, "vfat"), (2, "ntfs"), (3, "ext4")] {
        let (_, start, len, _) = partitions(disk).into_iter().find(|p| p.0 == n).expect("partition");
        fsck(disk, start, len, fs);
    }
    let got = trees(disk);
    assert_eq!(got.0, want.0, "NTFS files of {} differ from the point's", disk.display());
    assert_eq!(got.1, want.1, "ext4 files of {} differ from the point's", disk.display());
}

#[test]
fn chain_of_points_restores_merges_and_refuses_broken_links() {
    require_root();
    let d = tempfile::tempdir().expect("tempdir");
    let src = sample_copy(d.path(), "src.img");
    let size = std::fs::metadata(&src).expect("meta").len();
    let b = d.path().join("backups");
    std::fs::create_dir_all(&b).expect("dir");
    let full = b.join("pc.img");

    let mut states = Vec::new();
    rescue_ok(&["backup", "disk", s(&src), "-o", s(&full), "--comment", "base"]);
    states.push(trees(&src));
    // #2 incr, #3 incr, #4 diff (against the full), #5 incr (after the diff).
    let steps: [(&str, &str, &str); 4] = [("incr", "pc.img", "pc.p002-incr.img"), ("incr", "pc.p002-incr.img", "pc.p003-incr.img"), ("diff", "pc.p003-incr.img", "pc.p004-diff.img"), ("incr", "pc.p004-diff.img", "pc.p005-incr.img")];
    for (i, (kind, from, expect)) in steps.iter().enumerate() {
        change(&src, i as u8 + 1);
        let out = rescue_ok(&["backup", kind, s(&b.join(from))]);
        assert!(out.contains(expect), "{kind} from {from}: {out}");
        states.push(trees(&src));
    }
    let full_len = std::fs::metadata(&full).expect("meta").len();
    for (_, _, f) in &steps {
        let l = std::fs::metadata(b.join(f)).expect("point").len();
        assert!(l < full_len / 4, "{f} is {l} bytes against the full's {full_len}: not incremental");
    }

    // The chain as a tree.
    let pts: serde_json::Value = serde_json::from_str(&rescue_ok(&["points", s(&b), "--json", "--verify"])).expect("json");
    let pts = pts.as_array().expect("array");
    assert_eq!(pts.len(), 5, "{pts:?}");
    let id = |f: &str| pts.iter().find(|p| p["path"].as_str().is_some_and(|x| x.ends_with(f))).map(|p| p["image_id"].clone()).expect("point");
    let parent = |f: &str| pts.iter().find(|p| p["path"].as_str().is_some_and(|x| x.ends_with(f))).map(|p| p["parent"].clone()).expect("point");
    assert_eq!(parent("pc.p002-incr.img"), id("pc.img"));
    assert_eq!(parent("pc.p003-incr.img"), id("pc.p002-incr.img"));
    assert_eq!(parent("pc.p004-diff.img"), id("pc.img"), "a differential is made against the full");
    assert_eq!(parent("pc.p005-incr.img"), id("pc.p004-diff.img"));
    assert!(pts.iter().all(|p| p["status"] == "ok"), "{pts:?}");
    let text = rescue_ok(&["points", s(&b)]);
    assert!(text.contains("differential") && text.contains("└─"), "{text}");

    // Every point restores to its own state.
    let names = ["pc.img", "pc.p002-incr.img", "pc.p003-incr.img", "pc.p004-diff.img", "pc.p005-incr.img"];
    let mut restored = Vec::new();
    for (k, name) in names.iter().enumerate() {
        let t = restore_to(&b.join(name), d.path(), &format!("t{k}.img"), size);
        check_disk(&t, &states[k]);
        restored.push(t);
    }

    // Merge of each kind: the same bytes as restoring the point.
    for (k, name) in [(2usize, "pc.p003-incr.img"), (3, "pc.p004-diff.img"), (4, "pc.p005-incr.img")] {
        let m = d.path().join(format!("merged-{k}.img"));
        let out = rescue_ok(&["merge", s(&b.join(name)), "-o", s(&m)]);
        assert!(out.contains("Merge complete"), "{out}");
        let info: serde_json::Value = serde_json::from_str(&rescue_ok(&["info", s(&m), "--json"])).expect("info");
        assert_eq!(info["catalog"]["chain"]["kind"], "full", "{info}");
        assert!(info["catalog"]["chain"]["links"].as_array().is_some_and(Vec::is_empty));
        let t = restore_to(&m, d.path(), "from-merge.img", size);
        assert_eq!(file_hash(&t), file_hash(&restored[k]), "merge of {name} restores other bytes than the point");
        std::fs::remove_file(&t).expect("rm");
    }

    // Changed-block restore onto the disk with random damage.
    let t = &restored[4];
    let want = file_hash(t);
    let _ = &want;
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(t).expect("open");
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for _ in 0..60 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let at = (1 << 20) + x % (size - (2 << 20));
            f.write_all_at(&[0x5a; 4096], at).expect("damage");
        }
    }
    assert_ne!(file_hash(t), want);
    // A full restore onto the same damaged disk is the reference (blocks the
    // filesystems do not use stay as they were either way).
    let reference = d.path().join("reference.img");
    std::fs::copy(t, &reference).expect("copy damaged");
    rescue_ok(&["restore", s(&b.join("pc.p005-incr.img")), "--to", s(&reference), "--yes"]);
    let out: serde_json::Value = serde_json::from_str(&rescue_ok(&["restore", s(&b.join("pc.p005-incr.img")), "--to", s(t), "--only-changed", "--yes", "--json"])).expect("json");
    assert_eq!(file_hash(t), file_hash(&reference), "changed-block restore differs from a full restore");
    check_disk(t, &states[4]);
    std::fs::remove_file(&reference).expect("rm");
    let written = out["outcome"]["bytes_written"].as_u64().expect("bytes_written");
    assert!(written > 0 && written < 16 << 20, "changed-block restore wrote {written} bytes for 60 damaged blocks");

    // Another disk is not the source of this chain.
    let other = d.path().join("other.img");
    sh_ok(Command::new(repo().join("scripts/make-sample-disk")).arg(&other).arg("300"));
    rescue_fails(&["backup", "incr", s(&b.join("pc.p005-incr.img")), "--source", s(&other)], 3, "another disk");

    // A missing link: named, and nothing written.
    let target = d.path().join("guard.img");
    std::fs::write(&target, vec![0xA5u8; size as usize]).expect("target");
    let guard = file_hash(&target);
    std::fs::rename(b.join("pc.p002-incr.img"), d.path().join("moved.img")).expect("move");
    let err = rescue_fails(&["restore", s(&b.join("pc.p003-incr.img")), "--to", s(&target), "--yes"], 4, "pc.p002-incr.img");
    assert!(err.contains("missing"), "{err}");
    assert_eq!(file_hash(&target), guard, "a restore with a missing link wrote to the target");
    let out = rescue(&["points", s(&b)]);
    assert_ne!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("BROKEN"), "{}", String::from_utf8_lossy(&out.stdout));
    // The differential depends only on the full.
    rescue_ok(&["restore", s(&b.join("pc.p004-diff.img")), "--to", s(&target), "--dry-run"]);
    // Renamed links are found by their identity.
    std::fs::rename(d.path().join("moved.img"), b.join("renamed.img")).expect("move back");
    rescue_ok(&["restore", s(&b.join("pc.p003-incr.img")), "--to", s(&target), "--dry-run"]);
    std::fs::rename(b.join("renamed.img"), b.join("pc.p002-incr.img")).expect("rename back");

    // A damaged link: found before the first write.
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&full).expect("open full");
        let mut byte = [0u8; 1];
        f.read_exact_at(&mut byte, full_len / 2).expect("read");
        f.write_all_at(&[byte[0] ^ 0x55], full_len / 2).expect("flip");
    }
    rescue_fails(&["restore", s(&b.join("pc.p005-incr.img")), "--to", s(&target), "--yes"], 4, "pc.img");
    assert_eq!(file_hash(&target), guard, "a restore with a damaged link wrote to the target");
}

#[test]
fn encrypted_chain_and_merge_delete() {
    require_root();
    let d = tempfile::tempdir().expect("tempdir");
    let src = sample_copy(d.path(), "src.img");
    let size = std::fs::metadata(&src).expect("meta").len();
    let pw = d.path().join("pw");
    std::fs::write(&pw, "correct horse\n").expect("pw");
    let full = d.path().join("enc.img");
    rescue_ok(&["backup", "part", &format!("{}:3", s(&src)), "-o", s(&full), "--encrypt", "--password-file", s(&pw)]);
    change(&src, 7);
    let want = trees(&src).1;
    let out = rescue_ok(&["backup", "incr", s(&full), "--password-file", s(&pw), "--verify"]);
    assert!(out.contains("enc.p002-incr.img"), "{out}");
    let incr = d.path().join("enc.p002-incr.img");
    assert!(std::fs::metadata(&incr).expect("incr").len() < std::fs::metadata(&full).expect("full").len() / 4);
    rescue_fails(&["points", s(d.path())], 2, "password");
    let t = new_file(d.path(), "t.img", size);
    std::fs::copy(&src, &t).expect("copy");
    // Restore partition 3 of the point into partition 3 of a copy of the source.
    let (_, start, len, _) = partitions(&t).into_iter().find(|p| p.0 == 3).expect("p3");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&t).expect("open");
        f.write_all_at(&vec![0u8; 1 << 20], start + (4 << 20)).expect("wipe");
    }
    rescue_ok(&["restore", s(&incr), "--part", "3", "--to", &format!("{}:3", s(&t)), "--password-file", s(&pw), "--yes"]);
    fsck(&t, start, len, "ext4");
    let lo = Loop::attach(&t, start, len, true);
    let dir = tempfile::tempdir().expect("tempdir");
    let m = Mount::new(lo.path(), &dir.path().join("m"), "ext4", true);
    assert_eq!(tree(&m.0), want, "encrypted incremental restored other files");
    drop(m);
    drop(lo);
    // Merge with --delete-merged removes both files once the merge verified.
    let merged = d.path().join("enc-merged.img");
    rescue_ok(&["merge", s(&incr), "-o", s(&merged), "--delete-merged", "--password-file", s(&pw)]);
    assert!(!incr.exists() && !full.exists(), "merged files were not deleted");
    let out = rescue_ok(&["check", s(&merged), "--deep", "--password-file", s(&pw)]);
    assert!(out.contains("Image OK"), "{out}");
}

/// A changed-block restore remembers which chunks differ before it blanks
/// the partition table; on an MBR disk whose last partition ends at the last
/// sector, that blanking overwrites partition data the first pass found
/// equal, and the restore must write it again.
#[test]
fn only_changed_rewrites_what_the_table_blanking_touched() {
    require_root();
    use std::os::unix::fs::FileExt;
    let d = tempfile::tempdir().expect("tempdir");
    let size = 24u64 << 20;
    let src = new_file(d.path(), "mbr.img", size);
    let mut cmd = Command::new("sfdisk");
    cmd.args(["--quiet", s(&src)]);
    let mut child = cmd.stdin(std::process::Stdio::piped()).spawn().expect("sfdisk");
    {
        use std::io::Write;
        let stdin = child.stdin.as_mut().expect("stdin");
        stdin.write_all(b"label: dos\nstart=2048, type=83\n").expect("sfdisk input");
    }
    assert!(child.wait().expect("sfdisk").success(), "sfdisk failed");
    let (_, start, len, _) = partitions(&src).into_iter().next().expect("partition");
    assert_eq!(start + len, size, "the partition must reach the disk's last sector");
    // Unrecognised content (copied sector by sector), non-zero to the end.
    let data: Vec<u8> = (0..len).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8 | 1).collect();
    std::fs::OpenOptions::new().write(true).open(&src).expect("open").write_all_at(&data, start).expect("fill");
    let img = d.path().join("mbr.rimg");
    rescue_ok(&["backup", "disk", s(&src), "-o", s(&img)]);
    let want = std::fs::read(&src).expect("read source");
    // Damage a little in the middle; the end of the disk stays equal.
    let t = d.path().join("t.img");
    std::fs::copy(&src, &t).expect("copy");
    std::fs::OpenOptions::new().write(true).open(&t).expect("open").write_all_at(&[0xEE; 4096], start + (5 << 20)).expect("damage");
    let out = rescue_ok(&["restore", s(&img), "--to", s(&t), "--only-changed", "--yes"]);
    let got = std::fs::read(&t).expect("read target");
    assert!(got == want, "changed-block restore left the disk different from the source:\n{out}");
}

/// The notes a new point's catalog holds (from `backup incr|diff --json`).
fn point_notes(args: &[&str]) -> Vec<String> {
    let v: serde_json::Value = serde_json::from_str(&rescue_ok(args)).expect("json");
    v["catalog"]["notes"].as_array().expect("notes").iter().filter_map(|n| n.as_str().map(str::to_string)).collect()
}

/// Files unchanged by their records since the base point, from a note.
fn unread_files(notes: &[String], partition: u32) -> Option<u64> {
    let prefix = format!("partition {partition}: ");
    notes.iter().find_map(|n| n.strip_prefix(&prefix)?.split(" files (").next()?.parse().ok())
}

/// Physical byte offset (in the disk file) of the first data block of
/// `path` on the ext4 partition 3, from debugfs.
fn ext_block_of(disk: &Path, path: &str) -> u64 {
    let (_, start, len, _) = partitions(disk).into_iter().find(|p| p.0 == 3).expect("partition 3");
    let lo = Loop::attach(disk, start, len, true);
    let out = sh_ok(Command::new("debugfs").args(["-R", &format!("bmap {path} 0"), lo.path()]));
    let block: u64 = out.trim().parse().unwrap_or_else(|_| panic!("debugfs bmap {path}: {out:?}"));
    start + block * 4096
}

#[test]
fn fast_incremental_reads_only_changed_files_and_read_all_sees_writes_around_the_filesystem() {
    require_root();
    use std::os::unix::fs::FileExt;
    let d = tempfile::tempdir().expect("tempdir");
    let src = sample_copy(d.path(), "src.img");
    let size = std::fs::metadata(&src).expect("meta").len();
    let full = d.path().join("pc.img");
    rescue_ok(&["backup", "disk", s(&src), "-o", s(&full)]);
    change(&src, 1);
    let want = trees(&src);

    // By default the data of files whose inode / MFT record did not change is
    // not read; the point holds the same chunks as one that read everything.
    let fast = d.path().join("fast.img");
    let notes = point_notes(&["backup", "incr", s(&full), "-o", s(&fast), "--json"]);
    assert!(unread_files(&notes, 2).is_some_and(|n| n > 0), "NTFS: no unchanged files skipped: {notes:?}");
    assert!(unread_files(&notes, 3).is_some_and(|n| n > 0), "ext4: no unchanged files skipped: {notes:?}");
    assert!(notes.iter().any(|n| n.starts_with("partition 1: read in full: fat32")), "{notes:?}");
    let all = d.path().join("all.img");
    let notes_all = point_notes(&["backup", "incr", s(&full), "-o", s(&all), "--read-all", "--json"]);
    assert!(unread_files(&notes_all, 3).is_none() && !notes_all.iter().any(|n| n.contains("read in full")), "{notes_all:?}");
    let t_fast = restore_to(&fast, d.path(), "t-fast.img", size);
    check_disk(&t_fast, &want);
    let t_all = restore_to(&all, d.path(), "t-all.img", size);
    assert!(std::fs::read(&t_fast).expect("read") == std::fs::read(&t_all).expect("read"), "the fast point restores other bytes than the read-all one");
    drop((t_fast, t_all));

    // A write around the filesystem (a raw write into an unchanged file's
    // block, inode untouched): --read-all stores it.
    let victim = want.1.iter().find(|(_, v)| v.0.starts_with('f') && v.1 >= 8192).map(|(k, _)| k.clone()).expect("an ext4 file of 8 KiB or more");
    let at = ext_block_of(&src, &format!("/{victim}"));
    let f = std::fs::OpenOptions::new().write(true).open(&src).expect("open source");
    f.write_all_at(&[0xA5; 512], at).expect("raw write");
    drop(f);
    let raw = d.path().join("raw.img");
    point_notes(&["backup", "incr", s(&fast), "-o", s(&raw), "--read-all", "--json"]);
    let t_raw = restore_to(&raw, d.path(), "t-raw.img", size);
    let mut got = [0u8; 512];
    std::fs::File::open(&t_raw).expect("open").read_exact_at(&mut got, at).expect("read");
    assert_eq!(got, [0xA5; 512], "--read-all missed a write around the filesystem");

    // An ext4 not cleanly unmounted is read in full (its journal may hold
    // what the inodes do not show yet), and the write is seen then too.
    let (_, start, len, _) = partitions(&src).into_iter().find(|p| p.0 == 3).expect("partition 3");
    {
        let lo = Loop::attach(&src, start, len, false);
        sh_ok(Command::new("debugfs").args(["-w", "-R", "ssv state 0", lo.path()]));
    }
    let dirty = d.path().join("dirty.img");
    let notes = point_notes(&["backup", "incr", s(&fast), "-o", s(&dirty), "--json"]);
    assert!(notes.iter().any(|n| n.starts_with("partition 3: read in full") && n.contains("not cleanly unmounted")), "{notes:?}");
    assert!(unread_files(&notes, 2).is_some_and(|n| n > 0), "{notes:?}");
    let t_dirty = restore_to(&dirty, d.path(), "t-dirty.img", size);
    std::fs::File::open(&t_dirty).expect("open").read_exact_at(&mut got, at).expect("read");
    assert_eq!(got, [0xA5; 512], "an unclean ext4 was not read in full");
}

/// A LUKS2 partition in a chain: the full and the incremental, both given
/// the passphrase, keep only the used sectors (still encrypted), the
/// incremental only those that changed inside; without the passphrase the
/// incremental's plan says every sector would be stored again. The
/// incremental restores onto a disk of other bytes to a volume the
/// passphrase opens, with a clean ext4 holding the changed files.
#[test]
fn luks_partition_chain_keeps_used_sectors() {
    require_root();
    let d = tempfile::tempdir().expect("tempdir");
    let (size, part_start, part_len) = (144u64 << 20, 1u64 << 20, 128u64 << 20);
    let layout = d.path().join("layout");
    std::fs::write(&layout, "label: gpt\nstart=1MiB, size=128MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n").expect("layout");
    let src = new_file(d.path(), "src.img", size);
    sh_ok(Command::new("sfdisk").arg("-q").arg(&src).stdin(std::fs::File::open(&layout).expect("layout")));
    // The partition's free space is random, as on a wiped disk.
    fill_random(&std::fs::OpenOptions::new().write(true).open(&src).expect("src"), part_start, part_len, 0x2545_f491_4f6c_dd1d);
    let pw = d.path().join("pw");
    std::fs::write(&pw, "chain sesame").expect("pw");
    let lo = Loop::attach(&src, part_start, part_len, false);
    sh_ok(Command::new("cryptsetup").args(["luksFormat", "-q", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--key-file"]).arg(&pw).arg(lo.path()));
    drop(lo);
    let files = d.path().join("files");
    std::fs::create_dir(&files).expect("mkdir");
    std::fs::write(files.join("big.bin"), (0..24u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<u8>>()).expect("w");
    std::fs::write(files.join("notes.txt"), "first state\n").expect("w");
    // Work inside the volume through imaging's unlocked view.
    let inside = |f: &dyn Fn(&Path)| {
        let dev = std::fs::OpenOptions::new().read(true).write(true).open(&src).expect("src");
        let v = imaging::luks::Volume::unlock(&imaging::read_at::Window::new(&dev, part_start, part_len), part_len, b"chain sesame").expect("unlock");
        let plain = imaging::luks_fuse::PlainFile::mount(dev, part_start, v, d.path(), true, "chain").expect("FUSE");
        f(&plain.path());
    };
    inside(&|p| {
        sh_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-E", "nodiscard", "-d"]).arg(&files).arg(p));
    });
    let spec = format!("{}:1", s(&src));
    let full = d.path().join("lk.img");
    rescue_ok(&["backup", "part", &spec, "-o", s(&full), "--luks-key-file", s(&pw)]);
    // Change the files: 2 MiB more, one rewritten.
    inside(&|p| {
        let lo = Loop::attach(p, 0, part_len - (16 << 20), false);
        let m = Mount::new(lo.path(), &d.path().join("mnt"), "ext4", false);
        std::fs::write(m.0.join("new.bin"), (0..2u32 << 20).map(|i| (i.wrapping_mul(40_503) >> 7) as u8).collect::<Vec<u8>>()).expect("w");
        std::fs::write(m.0.join("notes.txt"), "second state\n").expect("w");
        sh_ok(Command::new("cp").arg("-a").arg(format!("{}/.", m.0.display())).arg(d.path().join("want")));
        drop(m);
        drop(lo);
    });
    let out = rescue_ok(&["backup", "incr", s(&full), "--dry-run"]);
    assert!(out.contains("partition 1 is encrypted (LUKS) and the base point stored only its used sectors: give its passphrase (--luks-key-file)"), "{out}");
    let out = rescue_ok(&["backup", "incr", s(&full), "--luks-key-file", s(&pw), "--verify"]);
    let incr = d.path().join("lk.p002-incr.img");
    assert!(out.contains("lk.p002-incr.img"), "{out}");
    let (full_len, incr_len) = (std::fs::metadata(&full).expect("full").len(), std::fs::metadata(&incr).expect("incr").len());
    eprintln!("LUKS chain: full {full_len} bytes, incremental {incr_len} bytes");
    assert!(full_len < part_len / 2, "the full holds more than the used sectors: {full_len}");
    assert!(incr_len < full_len / 3 && incr_len > 2 << 20, "the incremental holds {incr_len} bytes, the full {full_len}");
    let raw = std::fs::read(&incr).expect("read");
    assert!(!raw.windows(12).any(|w| w == b"second state"), "the incremental holds plaintext");
    // Restore the incremental onto a disk of 0xA5 bytes.
    let tgt = d.path().join("tgt.img");
    std::fs::write(&tgt, vec![0xA5u8; size as usize]).expect("tgt");
    sh_ok(Command::new("sfdisk").arg("-q").arg(&tgt).stdin(std::fs::File::open(&layout).expect("layout")));
    rescue_ok(&["restore", s(&incr), "--part", "1", "--to", &format!("{}:1", s(&tgt)), "--yes"]);
    let f = std::fs::File::open(&tgt).expect("tgt");
    let v = imaging::luks::Volume::unlock(&imaging::read_at::Window::new(&f, part_start, part_len), part_len, b"chain sesame").expect("the restored volume opens");
    let plain = imaging::luks_fuse::PlainFile::mount(f, part_start, v, d.path(), false, "restored").expect("FUSE");
    sh_ok(Command::new("e2fsck").arg("-fn").arg(plain.path()));
    let lo = Loop::attach(&plain.path(), 0, part_len - (16 << 20), true);
    let m = Mount::new(lo.path(), &d.path().join("restored"), "ext4", true);
    let (got, want) = (files_of(&m.0), files_of(&d.path().join("want")));
    assert_eq!(got.keys().collect::<Vec<_>>(), want.keys().collect::<Vec<_>>());
    for (k, v) in &want {
        assert_eq!((got[k].0, &got[k].2), (v.0, &v.2), "{k}");
    }
}
