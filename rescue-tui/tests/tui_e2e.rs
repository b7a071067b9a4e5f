//! End-to-end: the real `rescue` TUI in tmux, driven with send-keys and read
//! with capture-pane. A complete backup of a sample disk image, a restore
//! onto a second image file, a clone onto a third, and a cancel mid-way;
//! then a chain: a full backup, a change, an incremental point, and a restore
//! of that point chosen from the chain. The results are checked with the CLI
//! (`rescue check`, `rescue info`, `rescue disks`, `rescue points`) and by
//! comparing the partitions byte for byte.
//! Needs tmux and the mkfs tools of `scripts/make-sample-disk` (scripts/setup).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// A tmux session running the TUI; killed on drop, also when a test fails.
struct Tmux {
    name: String,
}

impl Tmux {
    /// The real `rescue` TUI in `dir` with `disks` as disks and `env`
    /// (`TERM=... [VAR=...]`) in its environment, its log in `dir/tui.log`;
    /// the pane says "rescue exited with N" when it ends.
    fn rescue(tag: &str, dir: &Path, env: &str, disks: &[&Path]) -> Tmux {
        let disks: Vec<String> = disks.iter().map(|d| format!("--disk {}", d.display())).collect();
        let cmd = format!(
            "cd {dir} && {env} RESCUE_LOG_FILE={dir}/tui.log {bin} {disks}; echo \"rescue exited with $?\"; sleep 120",
            dir = dir.display(),
            bin = env!("CARGO_BIN_EXE_rescue"),
            disks = disks.join(" "),
        );
        Tmux::start(tag, &cmd)
    }

    fn start(tag: &str, cmd: &str) -> Tmux {
        let name = format!("rescue-e2e-{tag}-{}", std::process::id());
        let _ = Command::new("tmux").args(["kill-session", "-t", &name]).output();
        sh_ok(Command::new("tmux").args(["new-session", "-d", "-s", &name, "-x", "100", "-y", "30", cmd]));
        Tmux { name }
    }

    fn pane(&self) -> String {
        let out = Command::new("tmux").args(["capture-pane", "-p", "-t", &self.name]).output().expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        let mut args = vec!["send-keys", "-t", &self.name];
        args.extend_from_slice(keys);
        sh_ok(Command::new("tmux").args(&args));
    }

    /// From the home screen: the restore wizard's "(every disk)" scan, until
    /// it lists the image of [`stick_with_image`].
    fn scan_every_disk(&self) {
        self.keys(&["r"]);
        self.wait("Scan folder", 10);
        self.keys(&["Tab", "Down"]);
        self.wait("Scan folder: [(every disk)", 10);
        self.keys(&["Enter"]);
        self.wait("backups/pc.rimg", 60);
    }

    fn text(&self, s: &str) {
        sh_ok(Command::new("tmux").args(["send-keys", "-t", &self.name, "-l", s]));
    }

    /// Poll the pane until it shows `needle`; fail with the pane text.
    fn wait(&self, needle: &str, secs: u64) -> String {
        let t0 = Instant::now();
        loop {
            let p = self.pane();
            if p.contains(needle) {
                return p;
            }
            if t0.elapsed() > Duration::from_secs(secs) {
                panic!("timed out after {secs} s waiting for {needle:?}; the pane shows:\n{p}");
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// From the home screen to the summary of a whole-disk restore of the
    /// image `img` onto the disk named `target` (planned, not started).
    fn restore_summary(&self, img: &str, target: &str) {
        self.keys(&["r"]);
        self.wait("Scan folder", 10);
        self.text(img);
        self.keys(&["Enter"]);
        self.wait("Restore what?", 30);
        self.keys(&["Enter"]);
        self.wait("Restore onto which disk?", 10);
        self.select(&format!("[{target}]"));
        self.keys(&["Enter"]);
        self.wait(&format!("type {target} to start"), 60);
    }

    /// Move the list selection (`> ` marker) to the line containing `needle`.
    fn select(&self, needle: &str) {
        // Other disks of the machine (loop devices) come first: go to the top, then down.
        self.keys(&["Home"]);
        for _ in 0..40 {
            self.keys(&["k"]);
        }
        for _ in 0..80 {
            std::thread::sleep(Duration::from_millis(60));
            let p = self.pane();
            if p.lines().any(|l| l.starts_with("> ") && l.contains(needle)) {
                return;
            }
            self.keys(&["j"]);
        }
        panic!("could not select {needle:?}; the pane shows:\n{}", self.pane());
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux").args(["kill-session", "-t", &self.name]).output();
    }
}

/// Mounts and loop devices that the TUI makes and releases when it quits;
/// when a test fails first, tmux kills the TUI and this releases them.
struct Release {
    mounts: Vec<PathBuf>,
    files: Vec<PathBuf>,
}

impl Drop for Release {
    fn drop(&mut self) {
        let mounted = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
        for m in &self.mounts {
            if mounted.lines().any(|l| l.split(' ').nth(1) == m.to_str()) {
                let _ = Command::new("umount").arg("-l").arg(m).status();
            }
            let _ = std::fs::remove_dir(m);
        }
        for f in &self.files {
            let out = Command::new("losetup").arg("-j").arg(f).output().map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            for dev in out.lines().filter_map(|l| l.split(':').next()) {
                let _ = Command::new("losetup").arg("-d").arg(dev).status();
            }
        }
    }
}

fn need_tmux() {
    if Command::new("tmux").arg("-V").output().is_err() {
        panic!("tmux is needed for this test: apt-get install tmux");
    }
}

/// A 400 MiB GPT disk image in `dir` with one ext4 partition (1..391 MiB)
/// labelled `label`. Needs root (loop device).
fn ext4_disk(dir: &Path, name: &str, label: &str) -> PathBuf {
    let disk = file(dir, name, 400 << 20);
    std::fs::write(dir.join("l"), "label: gpt\nstart=1MiB, size=390MiB, type=0FC63DAF-8483-4772-8E79-3D47D8E4E4C7\n").expect("layout");
    sh_ok(Command::new("sfdisk").arg("-q").arg(&disk).stdin(std::fs::File::open(dir.join("l")).expect("layout")));
    let lo = Loop::attach(&disk, 1 << 20, 390 << 20, false);
    sh_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-L", label, lo.path()]));
    disk
}

/// A USB stick as it comes: GPT, one ext4 partition holding
/// backups/pc.rimg (a backup of the sample disk); not mounted.
fn stick_with_image(dir: &Path) -> PathBuf {
    let stick = ext4_disk(dir, "stick.img", "stick");
    let lo = Loop::attach(&stick, 1 << 20, 390 << 20, false);
    let m = Mount::new(lo.path(), &dir.join("m"), "ext4", false);
    std::fs::create_dir(m.0.join("backups")).expect("mkdir");
    rescue_ok(&["backup", "disk", sample_disk().to_str().expect("utf-8"), "-o", m.0.join("backups/pc.rimg").to_str().expect("utf-8"), "--compress", "fast"]);
    drop(m);
    drop(lo);
    stick
}

fn disks_json(p: &Path) -> serde_json::Value {
    let out = rescue_ok(&["disks", "--json", p.to_str().expect("utf-8 path")]);
    let v: serde_json::Value = serde_json::from_str(&out).expect("disks --json");
    v.as_array()
        .and_then(|a| a.iter().find(|d| d["path"].as_str().is_some_and(|x| Path::new(x) == p)).cloned())
        .unwrap_or_else(|| panic!("{} not in `rescue disks --json`: {out}", p.display()))
}

/// (number, start, len, fs kind) of each partition.
fn parts(p: &Path) -> Vec<(u64, u64, u64, String)> {
    let d = disks_json(p);
    d["partitions"]
        .as_array()
        .expect("partitions")
        .iter()
        .map(|x| {
            (
                x["number"].as_u64().expect("number"),
                x["start"].as_u64().expect("start"),
                x["len"].as_u64().expect("len"),
                x["fs"]["kind"].as_str().unwrap_or("-").to_string(),
            )
        })
        .collect()
}


/// Same partitions, same filesystems, same bytes in every partition.
fn same_partitions(a: &Path, b: &Path) {
    let pa = parts(a);
    let pb = parts(b);
    assert_eq!(pa, pb, "partition tables differ");
    assert_eq!(pa.iter().map(|p| p.3.as_str()).collect::<Vec<_>>(), ["fat32", "ntfs", "ext4"]);
    for (n, start, len, _) in &pa {
        assert_eq!(hash_range(a, *start, *len), hash_range(b, *start, *len), "partition {n} differs");
    }
}

fn file(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::File::create(&p).and_then(|f| f.set_len(size)).expect("create disk file");
    p
}

#[test]
fn tui_backup_restore_clone_cancel_in_tmux() {
    need_tmux();
    let src = sample_disk();
    let d = tempfile::tempdir().expect("temp dir");
    let dir = d.path();
    let tgt = file(dir, "target.img", 400 << 20);
    let cln = file(dir, "clone.img", 400 << 20);
    // Sparse and without a partition table: copied sector by sector, slow
    // enough to cancel.
    let big = file(dir, "big.img", 40 << 30);
    let img = dir.join("disk.rimg");
    let t = Tmux::rescue("main", dir, "TERM=vt100", &[src, &tgt, &cln, &big]);
    t.wait("Recent operations", 30);
    t.wait("> [", 30);

    // 1. Backup of the whole sample disk, with a comment.
    t.select("[sample.img]");
    t.keys(&["b"]);
    t.wait("What do you want to back up?", 10);
    t.keys(&["Enter"]);
    t.wait("Which disk?", 10);
    t.select("[sample.img]");
    t.keys(&["Enter"]);
    t.wait("Image file:", 10);
    t.keys(&["C-u"]);
    t.text(img.to_str().expect("utf-8"));
    t.keys(&["Enter"]);
    t.wait("Verify after", 10);
    for _ in 0..5 {
        t.keys(&["Tab"]);
    }
    t.text("made in tmux");
    t.keys(&["Enter"]);
    t.wait("total to read", 60);
    t.keys(&["Enter"]);
    let p = t.wait("Backup finished", 180);
    assert!(p.contains("[OK]") && p.contains("Verified"), "{p}");
    t.keys(&["Enter"]);
    t.wait("Recent operations", 10);
    let out = rescue_ok(&["check", img.to_str().expect("utf-8")]);
    assert!(out.contains("Image OK"), "{out}");
    let info: serde_json::Value = serde_json::from_str(&rescue_ok(&["info", "--json", img.to_str().expect("utf-8")])).expect("info --json");
    assert_eq!(info["catalog"]["comment"], "made in tmux");
    assert_eq!(info["catalog"]["kind"], "disk");

    // 2. Restore it onto the second image file; a wrong name does nothing.
    t.restore_summary(img.to_str().expect("utf-8"), "target.img");
    t.keys(&["Enter"]);
    t.wait("Type the name", 10);
    t.text("sample.img");
    t.keys(&["Enter"]);
    t.wait("nothing was written", 10);
    t.text("target.img");
    t.keys(&["Enter"]);
    let p = t.wait("Restore finished", 180);
    assert!(p.contains("Restore complete"), "{p}");
    t.keys(&["Enter"]);
    t.wait("Recent operations", 10);
    same_partitions(src, &tgt);

    // 3. Clone the sample disk onto the third image file.
    t.keys(&["c"]);
    t.wait("What do you want to clone?", 10);
    t.keys(&["Enter"]);
    t.wait("Copy from which disk?", 10);
    t.select("[sample.img]");
    t.keys(&["Enter"]);
    t.wait("Copy onto which disk?", 10);
    t.select("[clone.img]");
    t.keys(&["Enter"]);
    t.wait("type clone.img to start", 60);
    t.keys(&["Enter"]);
    t.wait("Type the name", 10);
    t.text("clone.img");
    t.keys(&["Enter"]);
    let p = t.wait("Clone finished", 180);
    assert!(p.contains("Clone complete"), "{p}");
    t.keys(&["Enter"]);
    t.wait("Recent operations", 10);
    same_partitions(src, &cln);

    // 4. Cancel a long backup right after it starts: asks once, then stops.
    t.select("[big.img]");
    t.keys(&["b", "Enter"]);
    t.wait("Which disk?", 10);
    t.select("[big.img]");
    t.keys(&["Enter"]);
    t.wait("Image file:", 10);
    t.keys(&["C-u"]);
    let big_img = dir.join("big.rimg");
    t.text(big_img.to_str().expect("utf-8"));
    t.keys(&["Enter"]);
    t.wait("Verify after", 10);
    t.keys(&["Enter"]);
    t.wait("total to read", 60);
    t.keys(&["Enter"]);
    t.wait("Speed", 30);
    t.keys(&["c"]);
    t.wait("y = cancel", 10);
    t.keys(&["y"]);
    let p = t.wait("[CANCELLED]", 120);
    assert!(p.contains("cancelled"), "{p}");
    let left: Vec<_> = std::fs::read_dir(dir)
        .expect("read dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("big.rimg"))
        .collect();
    assert!(left.is_empty(), "a cancelled backup left {left:?}");
    t.keys(&["Enter"]);
    t.wait("[cancelled]", 10);

    // 5. Quit cleanly.
    t.keys(&["q"]);
    t.wait("rescue exited with 0", 10);
}

#[test]
fn tui_full_then_incremental_then_restore_the_point_in_tmux() {
    need_tmux();
    let d = tempfile::tempdir().expect("temp dir");
    let dir = d.path();
    // A private copy of the sample disk: this test changes it between points.
    let src = dir.join("src.img");
    sh_ok(Command::new("cp").arg("--sparse=always").arg(sample_disk()).arg(&src));
    let tgt = file(dir, "target.img", 400 << 20);
    let imgs = dir.join("imgs");
    std::fs::create_dir(&imgs).expect("mkdir");
    let img = imgs.join("src.rimg");
    let t = Tmux::rescue("chain", dir, "TERM=xterm", &[&src, &tgt]);
    t.wait("Recent operations", 30);
    t.wait("> [", 30);

    // 1. A full backup of the whole disk: a new task.
    t.select("[src.img]");
    t.keys(&["b", "Enter"]);
    t.wait("Which disk?", 10);
    t.select("[src.img]");
    t.keys(&["Enter"]);
    t.wait("Image file:", 10);
    t.keys(&["C-u"]);
    t.text(img.to_str().expect("utf-8"));
    t.keys(&["Enter"]);
    t.wait("Verify after", 10);
    t.keys(&["Enter"]);
    t.wait("total to read", 60);
    t.keys(&["Enter"]);
    let p = t.wait("Backup finished", 120);
    assert!(p.contains("[OK]"), "{p}");
    t.keys(&["Enter"]);
    t.wait("Recent operations", 10);

    // 2. Change the source: a new file on its FAT32 partition.
    let (_, start, _, fs) = parts(&src).into_iter().find(|p| p.0 == 1).expect("partition 1");
    assert_eq!(fs, "fat32");
    let payload = dir.join("payload.bin");
    std::fs::write(&payload, (0..700_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect::<Vec<u8>>()).expect("payload");
    sh_ok(Command::new("mcopy").env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(format!("{}@@{start}", src.display())).arg(&payload).arg("::/CHANGED.BIN"));

    // 3. Back up the same disk to the same folder: the TUI offers a new
    //    point of the task; take the incremental one.
    t.keys(&["b", "Enter"]);
    t.wait("Which disk?", 10);
    t.select("[src.img]");
    t.keys(&["Enter"]);
    t.wait("Image file:", 10);
    t.keys(&["C-u"]);
    t.text(img.to_str().expect("utf-8"));
    t.keys(&["Enter"]);
    t.wait("add a point to a task", 30);
    t.select("New incremental point");
    t.keys(&["Enter"]);
    t.wait("Options of the new point", 10);
    t.keys(&["Tab"]);
    t.text("after the change");
    t.keys(&["Enter"]);
    let p = t.wait("total to read", 60);
    assert!(p.contains("New incremental point #2"), "{p}");
    t.keys(&["Enter"]);
    let p = t.wait("Backup finished", 120);
    assert!(p.contains("[OK]") && p.contains("Incremental point #2 complete") && p.contains("Verified"), "{p}");
    // Files unchanged by their records were not read, and the result says so.
    assert!(p.contains("unchanged by their inodes") && p.contains("fat32 keeps no records"), "{p}");
    t.keys(&["Enter"]);
    t.wait("Recent operations", 10);

    // The CLI sees a chain of two intact points, the second after the first.
    let pts: serde_json::Value = serde_json::from_str(&rescue_ok(&["points", "--json", imgs.to_str().expect("utf-8")])).expect("points --json");
    let pts = pts.as_array().expect("a list of points");
    assert_eq!(pts.len(), 2, "{pts:?}");
    assert_eq!((pts[0]["kind"].as_str(), pts[1]["kind"].as_str()), (Some("full"), Some("incremental")), "{pts:?}");
    assert!(pts.iter().all(|p| p["status"] == "ok"), "{pts:?}");
    assert_eq!(pts[1]["parent"], pts[0]["image_id"]);
    assert_eq!(pts[1]["comment"], "after the change");
    assert!(pts[1]["bytes"].as_u64().expect("bytes") < pts[0]["bytes"].as_u64().expect("bytes") / 4, "an incremental stores only what changed: {pts:?}");
    let incr = PathBuf::from(pts[1]["path"].as_str().expect("path"));
    let text = rescue_ok(&["points", imgs.to_str().expect("utf-8")]);
    assert!(text.contains("incremental") && text.contains("after the change"), "{text}");

    // 4. Restore: open the full image, pick the incremental point from its chain.
    t.keys(&["r"]);
    t.wait("Scan folder", 10);
    t.text(img.to_str().expect("utf-8"));
    t.keys(&["Enter"]);
    t.wait("Which point in time?", 30);
    t.select("incremental");
    t.keys(&["Enter"]);
    t.wait("Restore what?", 30);
    t.keys(&["Enter"]);
    t.wait("Restore onto which disk?", 10);
    t.select("[target.img]");
    t.keys(&["Enter"]);
    let p = t.wait("type target.img to start", 60);
    assert!(p.contains(incr.file_name().and_then(|n| n.to_str()).expect("name")), "the plan restores the chosen point: {p}");
    t.keys(&["Enter"]);
    t.wait("Type the name", 10);
    t.text("target.img");
    t.keys(&["Enter"]);
    let p = t.wait("Restore finished", 120);
    assert!(p.contains("Restore complete"), "{p}");
    t.keys(&["Enter"]);
    t.wait("Recent operations", 10);
    // The target holds the changed disk (the full point alone would lack the new file).
    same_partitions(&src, &tgt);
    let (_, tstart, _, _) = parts(&tgt).into_iter().find(|p| p.0 == 1).expect("partition 1");
    let back = dir.join("back.bin");
    sh_ok(Command::new("mcopy").env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(format!("{}@@{tstart}", tgt.display())).arg("::/CHANGED.BIN").arg(&back));
    assert_eq!(std::fs::read(&back).expect("copied back"), std::fs::read(&payload).expect("payload"));

    // 5. Back to the full point with a changed-block restore: only what
    //    differs is written, and the result is the same as a full restore
    //    (done with the CLI onto a copy of the target as it is now).
    let twin = dir.join("twin.img");
    sh_ok(Command::new("cp").arg("--sparse=always").arg(&tgt).arg(&twin));
    t.keys(&["r"]);
    t.wait("Scan folder", 10);
    t.text(img.to_str().expect("utf-8"));
    t.keys(&["Enter"]);
    t.wait("Which point in time?", 30);
    t.select("full");
    t.keys(&["Enter"]);
    t.wait("Restore what?", 30);
    t.keys(&["Enter"]);
    t.wait("Restore onto which disk?", 10);
    t.select("[target.img]");
    t.keys(&["Enter"]);
    t.wait("type target.img to start", 60);
    t.keys(&["Down", "Down", "Down", "Right"]);
    t.wait("yes: read the target", 10);
    t.keys(&["Enter"]);
    let p = t.wait("Type the name", 10);
    assert!(p.contains("changed-block restore"), "{p}");
    t.text("target.img");
    t.keys(&["Enter"]);
    let p = t.wait("Restore finished", 120);
    assert!(p.contains("Restore complete"), "{p}");
    t.keys(&["Enter"]);
    t.wait("Recent operations", 10);
    rescue_ok(&["restore", img.to_str().expect("utf-8"), "--to", twin.to_str().expect("utf-8"), "--yes"]);
    same_partitions(&twin, &tgt);
    // The state of the full point: the file added later is gone.
    let out = Command::new("mcopy").env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(format!("{}@@{tstart}", tgt.display())).arg("::/CHANGED.BIN").arg(dir.join("gone.bin")).output().expect("mcopy");
    assert!(!out.status.success(), "CHANGED.BIN is still on the target after restoring the full point");

    t.keys(&["q"]);
    t.wait("rescue exited with 0", 10);
}

/// Universal restore from the TUI on a disk with a real Windows 7 hive:
/// once as the restore summary's option (restore an image of the disk onto
/// another, AHCI enabled on the copy), once from Tools on the original.
/// Then a shell from Tools: it gets the keys, and the TUI comes back. Needs
/// root (loop devices and ntfs-3g for the fixture and the check).
#[test]
fn tui_universal_restore_and_shell_in_tmux() {
    need_tmux();
    require_root();
    let d = tempfile::tempdir().expect("temp dir");
    let dir = d.path();
    let win = windows7_disk(dir);
    let img = dir.join("win.rimg");
    rescue_ok(&["backup", "disk", win.to_str().expect("utf-8"), "-o", img.to_str().expect("utf-8")]);
    let tgt = file(dir, "copy.img", 100 << 20);
    let t = Tmux::rescue("universal", dir, "TERM=xterm SHELL=/bin/sh", &[&win, &tgt]);
    t.wait("Recent operations", 30);
    t.wait("> [", 30);

    // 1. Restore the image onto copy.img with universal restore for AHCI.
    t.restore_summary(img.to_str().expect("utf-8"), "copy.img");
    // Up from the first option wraps to the last: universal restore.
    t.keys(&["Up", "Right", "Right"]);
    t.wait("yes: for AHCI (SATA)", 10);
    t.keys(&["Enter"]);
    let p = t.wait("Type the name", 10);
    assert!(p.contains("Then universal restore"), "{p}");
    t.text("copy.img");
    t.keys(&["Enter"]);
    let p = t.wait("Restore finished", 180);
    assert!(p.contains("Restore complete") && p.contains("Universal restore on partition 1"), "{p}");
    t.keys(&["Enter"]);
    t.wait("Recent operations", 10);
    assert_eq!(windows7_service_start(&tgt, &dir.join("m1"), "ControlSet001", "msahci"), 0, "msahci enabled on the restored copy");
    assert_eq!(windows7_service_start(&win, &dir.join("m2"), "ControlSet001", "msahci"), 3, "the source disk is untouched so far");

    // 2. Tools > Universal restore on the original disk, for AHCI.
    t.keys(&["t"]);
    t.wait("Tools", 10);
    t.select("Universal restore");
    t.keys(&["Enter"]);
    t.wait("which disk holds", 10);
    t.select("[win.img]");
    t.keys(&["Enter"]);
    t.wait("boot on:", 10);
    t.select("For AHCI (SATA)");
    t.keys(&["Enter"]);
    let p = t.wait("Type the name", 120);
    assert!(p.contains("msahci") && p.contains("type  win.img"), "the plan names the change: {p}");
    assert_eq!(windows7_service_start(&win, &dir.join("m3"), "ControlSet001", "msahci"), 3, "planning writes nothing");
    t.text("win.img");
    t.keys(&["Enter"]);
    let p = t.wait("Universal restore finished", 180);
    assert!(p.contains("registry changes"), "{p}");
    t.keys(&["Enter"]);
    t.wait("Recent operations", 10);
    assert_eq!(windows7_service_start(&win, &dir.join("m4"), "ControlSet001", "msahci"), 0, "msahci enabled on the original");

    // 3. A shell from Tools takes the keys; `exit` comes back to the TUI.
    t.keys(&["t"]);
    t.wait("Tools", 10);
    t.select("Open a shell");
    t.keys(&["Enter"]);
    t.wait("type exit to go back", 10);
    let out = dir.join("shell-out");
    t.text(&format!("echo shell-$((6*7)) > {}; exit", out.display()));
    t.keys(&["Enter"]);
    t.wait("Open a shell", 20);
    assert_eq!(std::fs::read_to_string(&out).expect("the shell ran the command").trim(), "shell-42");
    // The TUI reads keys again.
    t.keys(&["Escape"]);
    t.wait("Recent operations", 10);
    let log = std::fs::read_to_string(dir.join("tui.log")).unwrap_or_default();
    assert!(!log.contains("panicked"), "{log}");
}

/// A backup onto a partition of another disk that the TUI mounts for you
/// (after you type its name): the image lands in that filesystem, and when
/// the TUI quits the partition is unmounted and its loop device gone. Needs
/// root (loop devices, mount).
#[test]
fn tui_backup_onto_a_partition_it_mounts_in_tmux() {
    need_tmux();
    require_root();
    let src = sample_disk();
    let d = tempfile::tempdir().expect("temp dir");
    let dir = d.path();
    let dest = ext4_disk(dir, "dest.img", "backups");
    // Dropped after the TUI: what a TUI killed by a failing test leaves.
    let _release = Release { mounts: vec![imaging::mount::base_dir().join("dest.img-1")], files: vec![dest.clone()] };
    let t = Tmux::rescue("mountdest", dir, "TERM=xterm", &[src, &dest]);
    t.wait("Recent operations", 30);
    t.wait("> [", 30);
    t.keys(&["b"]);
    t.wait("What do you want to back up?", 10);
    t.keys(&["Enter"]);
    t.wait("Which disk?", 10);
    t.select("[sample.img]");
    t.keys(&["Enter"]);
    t.wait("Or save on another disk's partition", 10);
    t.keys(&["Tab"]);
    t.select("[dest.img] 1:ext4 backups");
    t.keys(&["Enter"]);
    let p = t.wait("Type the name", 10);
    assert!(p.contains("read-write"), "{p}");
    t.text("dest.img:1");
    t.keys(&["Enter"]);
    let p = t.wait("dest.img-1/sample-disk.rimg", 30);
    let mnt = imaging::mount::base_dir().join("dest.img-1");
    assert!(std::fs::read_to_string("/proc/mounts").expect("mounts").contains(&mnt.display().to_string()), "mounted: {p}");
    t.keys(&["Enter"]);
    t.wait("Verify after", 30);
    t.keys(&["Enter"]);
    t.wait("total to read", 60);
    t.keys(&["Enter"]);
    let p = t.wait("Backup finished", 180);
    assert!(p.contains("[OK]"), "{p}");
    t.keys(&["Enter"]);
    t.wait("Recent operations", 10);
    t.keys(&["q"]);
    t.wait("rescue exited with 0", 60);
    // Unmounted, loop device gone, folder removed.
    assert!(!std::fs::read_to_string("/proc/mounts").expect("mounts").contains(&mnt.display().to_string()), "still mounted after quit");
    let lo = sh_ok(Command::new("losetup").arg("-j").arg(&dest));
    assert!(lo.trim().is_empty(), "loop device left: {lo}");
    assert!(!mnt.exists(), "mount folder left");
    // The image is in the ext4 filesystem, and sound.
    let lo = Loop::attach(&dest, 1 << 20, 390 << 20, true);
    let m = Mount::new(lo.path(), &dir.join("m"), "ext4", true);
    let img = m.0.join("sample-disk.rimg");
    rescue_ok(&["check", img.to_str().expect("utf-8")]);
    drop(m);
}

/// "Edit partitions" in the restore summary: the ext4 partition made five
/// steps larger with the keyboard; the restored disk has that size, and the
/// filesystem passes its checker with the same files. Needs root (the file
/// comparison mounts the filesystems).
#[test]
fn tui_restore_with_edited_partition_sizes_in_tmux() {
    need_tmux();
    require_root();
    let src = sample_disk();
    let d = tempfile::tempdir().expect("temp dir");
    let dir = d.path();
    let img = dir.join("disk.rimg");
    rescue_ok(&["backup", "disk", src.to_str().expect("utf-8"), "-o", img.to_str().expect("utf-8"), "--compress", "fast"]);
    let tgt = file(dir, "target.img", 400 << 20);
    let t = Tmux::rescue("sizes", dir, "TERM=xterm", &[&tgt]);
    t.wait("Recent operations", 30);
    t.restore_summary(img.to_str().expect("utf-8"), "target.img");
    t.keys(&["e"]);
    t.wait("Edit partitions", 10);
    t.select("partition 3: ext4");
    for _ in 0..5 {
        t.keys(&["Right"]);
    }
    t.wait("(was ", 10);
    t.keys(&["Enter"]);
    let p = t.wait("type target.img to start", 60);
    assert!(!p.contains("Edit partitions"), "{p}");
    t.keys(&["Enter"]);
    t.wait("Type the name", 10);
    t.text("target.img");
    t.keys(&["Enter"]);
    let p = t.wait("Restore finished", 180);
    assert!(p.contains("Restore complete"), "{p}");
    // Partition 3 is five steps (a hundredth of the disk each, whole MiB) larger.
    let step = ((400u64 << 20) / 100 >> 20) << 20;
    let sp = parts(src);
    let mut want = sp[2].2;
    for _ in 0..5 {
        want = (want + step) / step * step;
    }
    let tp = parts(&tgt);
    assert_eq!(tp[2].2, want, "{tp:?}");
    assert_eq!((tp[0].2, tp[1].2), (sp[0].2, sp[1].2), "the others keep their sizes");
    same_files(src, sp[2].1, sp[2].2, &tgt, tp[2].1, tp[2].2, "ext4");
    fsck(&tgt, tp[2].1, tp[2].2, "ext4");
}

/// The restore wizard finds an image on a disk nobody mounted: "(every
/// disk)" mounts each filesystem read-only to look (the disk is not changed
/// by a single byte), the image found is restored, and when the TUI quits
/// nothing stays mounted or attached. Needs root (loop devices, mount).
#[test]
fn tui_restore_finds_images_on_every_disk_in_tmux() {
    need_tmux();
    require_root();
    let src = sample_disk();
    let d = tempfile::tempdir().expect("temp dir");
    let dir = d.path();
    let stick = stick_with_image(dir);
    let stick_hash = file_hash(&stick);
    let tgt = file(dir, "target.img", 400 << 20);
    let _release = Release { mounts: vec![imaging::mount::base_dir().join("stick.img-1-ro")], files: vec![stick.clone()] };
    let t = Tmux::rescue("everydisk", dir, "TERM=xterm", &[&stick, &tgt]);
    t.wait("Recent operations", 30);
    t.scan_every_disk();
    t.select("backups/pc.rimg");
    t.keys(&["Enter"]);
    t.wait("Restore what?", 30);
    t.keys(&["Enter"]);
    t.wait("Restore onto which disk?", 10);
    t.select("[target.img]");
    t.keys(&["Enter"]);
    t.wait("type target.img to start", 60);
    t.keys(&["Enter"]);
    t.wait("Type the name", 10);
    t.text("target.img");
    t.keys(&["Enter"]);
    let p = t.wait("Restore finished", 180);
    assert!(p.contains("Restore complete"), "{p}");
    t.keys(&["Enter"]);
    t.wait("Recent operations", 10);
    t.keys(&["q"]);
    t.wait("rescue exited with 0", 60);
    same_partitions(src, &tgt);
    let lo = sh_ok(Command::new("losetup").arg("-j").arg(&stick));
    assert!(lo.trim().is_empty(), "loop device left: {lo}");
    assert!(!std::fs::read_to_string("/proc/mounts").expect("mounts").contains("stick.img-1-ro"), "still mounted after quit");
    assert_eq!(file_hash(&stick), stick_hash, "looking for images changed the stick");
}

/// The pid of the `rescue` process whose command line names `arg`.
fn rescue_pid(arg: &Path) -> Option<u32> {
    let want = arg.to_string_lossy().into_owned();
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
        let args: Vec<String> = cmd.split(|b| *b == 0).map(|a| String::from_utf8_lossy(a).into_owned()).collect();
        (args.first().is_some_and(|a| a == env!("CARGO_BIN_EXE_rescue")) && args.iter().any(|a| *a == want)).then_some(pid)
    })
}

#[test]
fn tui_releases_its_mounts_when_terminated_in_tmux() {
    need_tmux();
    require_root();
    let d = tempfile::tempdir().expect("temp dir");
    let dir = d.path();
    let stick = stick_with_image(dir);
    let mnt = imaging::mount::base_dir().join("stick.img-1-ro");
    let _release = Release { mounts: vec![mnt.clone()], files: vec![stick.clone()] };
    for (sig, code) in [("TERM", 143), ("HUP", 129)] {
        let t = Tmux::rescue(&format!("sig{sig}"), dir, "TERM=xterm", &[&stick]);
        t.wait("Recent operations", 30);
        // Finding images on every disk mounts the stick's ext4 until quit.
        t.scan_every_disk();
        assert!(std::fs::read_to_string("/proc/mounts").expect("mounts").contains("stick.img-1-ro"), "the scan did not mount the stick");
        let pid = rescue_pid(&stick).expect("the rescue process");
        sh_ok(Command::new("kill").arg(format!("-{sig}")).arg(pid.to_string()));
        t.wait(&format!("rescue exited with {code}"), 30);
        assert!(!std::fs::read_to_string("/proc/mounts").expect("mounts").contains("stick.img-1-ro"), "SIG{sig}: the stick is still mounted");
        let lo = sh_ok(Command::new("losetup").arg("-j").arg(&stick));
        assert!(lo.trim().is_empty(), "SIG{sig}: loop device left: {lo}");
    }
}
