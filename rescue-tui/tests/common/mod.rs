//! Helpers for the CLI integration tests: sample disks, loop devices (always
//! detached, even when a test fails), filesystem checkers and tree comparison.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("crate lives in the workspace").to_path_buf()
}

/// These tests use loop devices and mounts: root is required (CI is root).
pub fn require_root() {
    // SAFETY-free check through /proc: uid is the second field of "Uid:".
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let uid = status.lines().find(|l| l.starts_with("Uid:")).and_then(|l| l.split_whitespace().nth(1)).unwrap_or("1");
    assert_eq!(uid, "0", "these integration tests need root (loop devices, mounts); run them as root as CI does");
}

pub fn sh(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e} (run scripts/setup to install the tools)"));
    out
}

/// Run `cmd` (stdout and stderr captured), killing it after `limit`: a
/// hung command fails its test with what it printed instead of stalling
/// the whole run.
pub fn output_within(cmd: &mut Command, limit: std::time::Duration) -> Output {
    cmd.stdout(std::process::Stdio::piped()).stderr(std::process::Stdio::piped());
    let child = cmd.spawn().unwrap_or_else(|e| panic!("running {cmd:?}: {e} (run scripts/setup to install the tools)"));
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.expect("waiting for the command"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
            let out = rx.recv().expect("the killed command's output").expect("output");
            panic!(
                "{cmd:?} did not finish in {limit:?} (killed):\nstdout: {}\nstderr: {}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

pub fn sh_ok(cmd: &mut Command) -> String {
    let out = sh(cmd);
    assert!(out.status.success(), "{cmd:?} failed: {}\n{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Run the real `rescue` binary.
pub fn rescue(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_rescue"));
    c.args(args).env_remove("RESCUE_PASSWORD").stdin(std::process::Stdio::null());
    sh(&mut c)
}

pub fn rescue_ok(args: &[&str]) -> String {
    let out = rescue(args);
    assert!(
        out.status.success(),
        "rescue {args:?} failed with {:?}:\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Assert `rescue` failed with `code` and its stderr mentions `needle`.
pub fn rescue_fails(args: &[&str], code: i32, needle: &str) -> String {
    let out = rescue(args);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(code), "rescue {args:?}: expected exit {code}, stderr:\n{err}");
    assert!(err.to_lowercase().contains(&needle.to_lowercase()), "rescue {args:?}: stderr lacks {needle:?}:\n{err}");
    err
}

/// The shared sample disk (made once per test binary; read-only for tests).
pub fn sample_disk() -> &'static Path {
    static P: OnceLock<PathBuf> = OnceLock::new();
    P.get_or_init(|| {
        // Each test process makes its own and nothing removes it at exit:
        // remove those of processes that are gone (they were 140 MiB each).
        if let Ok(rd) = std::fs::read_dir(std::env::temp_dir()) {
            for e in rd.flatten() {
                let name = e.file_name().to_string_lossy().into_owned();
                if let Some(pid) = name.strip_prefix("rescue-test-sample-") {
                    if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
                        let _ = std::fs::remove_dir_all(e.path());
                    }
                }
            }
        }
        let dir = std::env::temp_dir().join(format!("rescue-test-sample-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let p = dir.join("sample.img");
        sh_ok(Command::new(repo().join("scripts/make-sample-disk")).arg(&p).arg("300"));
        p
    })
}

/// A loop device over part of a file, detached on drop.
pub struct Loop(pub PathBuf);

impl Loop {
    pub fn attach(file: &Path, offset: u64, size: u64, read_only: bool) -> Loop {
        let mut c = Command::new("losetup");
        c.args(["--find", "--show", "--offset", &offset.to_string(), "--sizelimit", &size.to_string()]);
        if read_only {
            c.arg("--read-only");
        }
        let out = sh_ok(c.arg(file));
        Loop(PathBuf::from(out.trim()))
    }

    /// Attach a whole file as a disk with the given logical sector size.
    pub fn attach_sector_size(file: &Path, sector_size: u32) -> Loop {
        let out = sh_ok(Command::new("losetup").args(["--find", "--show", "--sector-size", &sector_size.to_string()]).arg(file));
        Loop(PathBuf::from(out.trim()))
    }

    /// Attach a whole file with partition scanning (/dev/loopNpM).
    pub fn attach_partscan(file: &Path) -> Loop {
        let out = sh_ok(Command::new("losetup").args(["--find", "--show", "--partscan"]).arg(file));
        let l = Loop(PathBuf::from(out.trim()));
        let _ = Command::new("udevadm").args(["settle", "--timeout=5"]).status();
        l
    }

    pub fn path(&self) -> &str {
        self.0.to_str().expect("loop paths are UTF-8")
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        // Write what mkfs/mcopy left in the device's page cache to the
        // file now. The kernel does it at the device's last close, but when
        // anything else has the device open at that moment (udev's probe, a
        // test listing every disk), the detach waits for it, and a test that
        // goes on to read the file directly (`rescue backup disk FILE`)
        // would read it without those writes.
        if let Ok(f) = std::fs::File::open(&self.0) {
            let _ = f.sync_all();
        }
        for _ in 0..20 {
            if Command::new("losetup").arg("-d").arg(&self.0).status().is_ok_and(|s| s.success()) {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        eprintln!("warning: could not detach {}", self.0.display());
    }
}

/// A mount, unmounted on drop (waiting for a FUSE daemon to finish writing).
pub struct Mount(pub PathBuf, Option<String>);

impl Mount {
    pub fn new(dev: &str, dir: &Path, fstype: &str, ro: bool) -> Mount {
        std::fs::create_dir_all(dir).expect("mount point");
        // ro,noload: a read-only ext4 mount must not replay the journal (it would write).
        let opts = match (ro, fstype) {
            (true, "ext4") => "ro,noload",
            (true, _) => "ro",
            (false, _) => "rw",
        };
        if fstype == "ntfs" {
            sh_ok(Command::new("ntfs-3g").args(["-o", opts, dev]).arg(dir));
            return Mount(dir.to_path_buf(), Some(dev.to_string()));
        }
        sh_ok(Command::new("mount").args(["-t", fstype, "-o", opts, dev]).arg(dir));
        Mount(dir.to_path_buf(), None)
    }

    /// An ntfs-3g (FUSE) mount of a device or image file with these options.
    pub fn ntfs3g(dev: &Path, dir: &Path, opts: &str) -> Mount {
        std::fs::create_dir_all(dir).expect("mount point");
        sh_ok(Command::new("ntfs-3g").args(["-o", opts]).arg(dev).arg(dir));
        Mount(dir.to_path_buf(), Some(dev.to_string_lossy().into_owned()))
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let mut done = false;
        for _ in 0..20 {
            if Command::new("umount").arg(&self.0).status().is_ok_and(|s| s.success()) {
                done = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(250));
        }
        if !done {
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
        if let Some(dev) = &self.1 {
            drivers::offline::wait_for_process_using(Path::new(dev), std::time::Duration::from_secs(30));
        }
    }
}

/// Partitions of a disk image as sfdisk sees them: (number, start byte, size bytes, type).
pub fn partitions(img: &Path) -> Vec<(u32, u64, u64, String)> {
    let j = sh_ok(Command::new("sfdisk").arg("-J").arg(img));
    let v: serde_json::Value = serde_json::from_str(&j).expect("sfdisk -J output");
    let t = &v["partitiontable"];
    let ss = t["sectorsize"].as_u64().unwrap_or(512);
    t["partitions"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    let node = p["node"].as_str().unwrap_or("");
                    let digits: String = node.chars().rev().take_while(char::is_ascii_digit).collect();
                    let n: u32 = digits.chars().rev().collect::<String>().parse().unwrap_or(0);
                    (n, p["start"].as_u64().unwrap_or(0) * ss, p["size"].as_u64().unwrap_or(0) * ss, p["type"].as_str().unwrap_or("").to_string())
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Run the filesystem's own checker on a partition of an image file.
pub fn fsck(img: &Path, start: u64, len: u64, fs: &str) {
    let lo = Loop::attach(img, start, len, true);
    let out = match fs {
        "ext4" | "ext3" | "ext2" => sh(Command::new("e2fsck").args(["-fn", lo.path()])),
        "vfat" => sh(Command::new("fsck.vfat").args(["-n", lo.path()])),
        "ntfs" => sh(Command::new("ntfsfix").args(["-n", lo.path()])),
        "exfat" => sh(Command::new("fsck.exfat").args(["-n", lo.path()])),
        other => panic!("no checker for {other}"),
    };
    assert!(
        out.status.success(),
        "{fs} check of {} at byte {start} failed:\n{}\n{}",
        img.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Files under a directory: relative path -> (kind+mode, size, mtime, BLAKE3).
pub fn tree(dir: &Path) -> BTreeMap<String, (String, u64, i64, String)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap_or_else(|e| panic!("reading {}: {e}", d.display())) {
            let e = e.expect("dir entry");
            let p = e.path();
            let rel = p.strip_prefix(dir).expect("under dir").to_string_lossy().into_owned();
            if rel == "lost+found" || rel.starts_with("System Volume Information") || rel.starts_with('$') {
                continue;
            }
            let m = std::fs::symlink_metadata(&p).expect("metadata");
            if m.is_dir() {
                out.insert(rel, (format!("d{:o}", m.mode() & 0o7777), 0, m.mtime(), String::new()));
                stack.push(p);
            } else if m.is_file() {
                let data = std::fs::read(&p).expect("read file");
                out.insert(rel, (format!("f{:o}", m.mode() & 0o7777), m.len(), m.mtime(), blake3::hash(&data).to_hex().to_string()));
            } else {
                out.insert(rel, (format!("o{:o}", m.mode()), 0, m.mtime(), String::new()));
            }
        }
    }
    out
}

/// Mount partition `a` of image A and `b` of image B read-only and compare
/// every file's content and metadata.
pub fn same_files(a: &Path, a_start: u64, a_len: u64, b: &Path, b_start: u64, b_len: u64, fs: &str) {
    let la = Loop::attach(a, a_start, a_len, true);
    let lb = Loop::attach(b, b_start, b_len, true);
    let base = tempfile::tempdir().expect("tempdir");
    let (da, db) = (base.path().join("a"), base.path().join("b"));
    let (ta, tb) = if fs == "vfat" {
        // No vfat in this kernel: extract with mtools (keeps modification times).
        for (l, d) in [(&la, &da), (&lb, &db)] {
            std::fs::create_dir_all(d).expect("dir");
            sh_ok(Command::new("mcopy").env("MTOOLS_SKIP_CHECK", "1").args(["-s", "-m", "-n", "-i", l.path(), "::/"]).arg(d));
        }
        (tree(&da), tree(&db))
    } else {
        let ma = Mount::new(la.path(), &da, fs, true);
        let mb = Mount::new(lb.path(), &db, fs, true);
        (tree(&ma.0), tree(&mb.0))
    };
    assert!(!ta.is_empty(), "{fs} partition of {} holds nothing", a.display());
    for (k, v) in &ta {
        assert_eq!(
            tb.get(k),
            Some(v),
            "{fs}: {k} differs between {} and {} (they hold {} and {} entries)",
            a.display(),
            b.display(),
            ta.len(),
            tb.len()
        );
    }
    assert_eq!(ta.len(), tb.len(), "{fs}: file counts differ");
}

/// Which filesystems the kernel (or FUSE) can mount here for comparison.
pub fn mount_type(fs: &str) -> &'static str {
    match fs {
        "ext4" => "ext4",
        "ntfs" => "ntfs",
        "vfat" => "vfat",
        _ => "auto",
    }
}

pub fn file_hash(p: &Path) -> String {
    blake3::hash(&std::fs::read(p).expect("read")).to_hex().to_string()
}

pub fn new_file(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    let f = std::fs::File::create(&p).expect("create");
    f.set_len(size).expect("set_len");
    p
}

/// A private copy of the sample disk, `dir/name`, for a test that changes it.
pub fn sample_copy(dir: &Path, name: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::copy(sample_disk(), &p).expect("copy sample disk");
    p
}

/// `shared/testdata` beside the repository (override with `RESCUE_TESTDATA`).
pub fn testdata() -> PathBuf {
    std::env::var_os("RESCUE_TESTDATA").map(PathBuf::from).unwrap_or_else(|| repo().parent().expect("repo has a parent").join("shared/testdata"))
}

/// Value of `Start` of a service in a hive, read by libhivex (python3-hivex).
pub fn service_start(hive: &Path, control_set: &str, service: &str) -> i64 {
    let script = format!(
        "import hivex,sys\nh=hivex.Hivex(sys.argv[1])\nn=h.root()\nfor p in ['{control_set}','Services','{service}']:\n    n=[c for c in h.node_children(n) if h.node_name(c).lower()==p.lower()][0]\nv=h.node_get_value(n,'Start')\nprint(h.value_dword(v))"
    );
    let out = sh_ok(Command::new("/usr/bin/python3").arg("-c").arg(&script).arg(hive));
    out.trim().parse().unwrap_or_else(|_| panic!("bad Start value {out:?}"))
}

/// Copy bytes `[start, start + len)` of `img` into a new file.
pub fn cut(img: &Path, start: u64, len: u64, out: &Path) {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(img).expect("open disk");
    f.seek(SeekFrom::Start(start)).expect("seek");
    let mut o = std::fs::File::create(out).expect("create");
    std::io::copy(&mut f.take(len), &mut o).expect("copy partition");
}

/// Start and size in bytes of partition `n` of a disk image.
pub fn part(img: &Path, n: u32) -> (u64, u64) {
    partitions(img).into_iter().find(|p| p.0 == n).map(|p| (p.1, p.2)).expect("partition")
}

/// Files only: path -> (size, mtime, hash) (FAT keeps no modes, and the
/// tools leave folder times to chance).
pub fn files_of(dir: &Path) -> BTreeMap<String, (u64, i64, String)> {
    tree(dir).into_iter().filter(|(_, v)| v.0.starts_with('f')).map(|(k, v)| (k, (v.1, v.2, v.3))).collect()
}

/// A 96 MiB GPT disk image in `dir` (`win.img`) whose NTFS partition 1
/// (1 MiB..91 MiB) holds a real Windows 7 SYSTEM hive (shared/testdata) in
/// Windows\System32\config, with msahci disabled (Start 3). Needs root.
pub fn windows7_disk(dir: &Path) -> PathBuf {
    let hive_xz = testdata().join("hives/regipy/SYSTEM.xz");
    assert!(hive_xz.exists(), "test data missing: {} (shared/testdata beside the repo)", hive_xz.display());
    let disk = new_file(dir, "win.img", 96 << 20);
    std::fs::write(dir.join("win.sfdisk"), "label: gpt\nstart=1MiB, size=90MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n").unwrap();
    sh_ok(Command::new("sfdisk").arg("-q").arg(&disk).stdin(std::fs::File::open(dir.join("win.sfdisk")).unwrap()));
    let lo = Loop::attach(&disk, 1 << 20, 90 << 20, false);
    sh_ok(Command::new("mkfs.ntfs").args(["-q", "-F", "-f", lo.path()]));
    let m = Mount::new(lo.path(), &dir.join("win.mnt"), "ntfs", false);
    let cfg = m.0.join("Windows/System32/config");
    std::fs::create_dir_all(&cfg).unwrap();
    std::fs::create_dir_all(m.0.join("Windows/System32/drivers")).unwrap();
    let raw = Command::new("xz").arg("-dc").arg(&hive_xz).output().unwrap();
    assert!(raw.status.success());
    std::fs::write(cfg.join("SYSTEM"), &raw.stdout).unwrap();
    assert_eq!(service_start(&cfg.join("SYSTEM"), "ControlSet001", "msahci"), 3, "fixture: msahci starts disabled");
    drop(m);
    drop(lo);
    disk
}

/// The `Start` of `service` in `control_set` of the SYSTEM hive on the
/// Windows 7 disk made by [`windows7_disk`] (or a restored copy of it).
pub fn windows7_service_start(disk: &Path, mnt: &Path, control_set: &str, service: &str) -> i64 {
    let lo = Loop::attach(disk, 1 << 20, 90 << 20, true);
    let m = Mount::new(lo.path(), mnt, "ntfs", true);
    let v = service_start(&m.0.join("Windows/System32/config/SYSTEM"), control_set, service);
    drop(m);
    drop(lo);
    v
}

/// BLAKE3 of `len` bytes of `p` from `start` (partitions compared byte for byte).
pub fn hash_range(p: &Path, start: u64, len: u64) -> blake3::Hash {
    use std::io::{Read, Seek, SeekFrom};
    let mut f = std::fs::File::open(p).expect("open");
    f.seek(SeekFrom::Start(start)).expect("seek");
    let mut h = blake3::Hasher::new();
    std::io::copy(&mut f.take(len), &mut h).expect("read");
    h.finalize()
}

/// Run an LVM command on the loop device `dev` only, without device-mapper
/// (the CI kernel has none; nothing is activated) or udev.
pub fn lvm(dev: &str, args: &[&str]) -> String {
    let config = format!(
        "devices {{ use_devicesfile=0 obtain_device_list_from_udev=0 filter=[\"a|^{dev}$|\", \"r|.*|\"] }} activation {{ udev_sync=0 udev_rules=0 monitoring=0 }} global {{ locking_type=0 }}"
    );
    sh_ok(Command::new(args[0]).env("LVM_SUPPRESS_FD_WARNINGS", "1").args(["--driverloaded", "n", "--config", &config]).args(&args[1..]))
}

/// An LVM layout made by lvm2 inside the byte range (`start`, `len`) of
/// `disk`: volume group `vg` (4 MiB extents) with the logical volumes
/// `lvs` (name, MiB) created in order; `then` runs after them (for example
/// an `lvextend`) with the PV's loop device. Returns each volume's byte
/// range on the disk, as `lvs` reports it, when it lies in one piece.
pub fn lvm_layout(disk: &Path, start: u64, len: u64, vg: &str, lvs: &[(&str, u64)], then: impl FnOnce(&str)) -> BTreeMap<String, (u64, u64)> {
    let lo = Loop::attach(disk, start, len, false);
    let dev = lo.path().to_owned();
    lvm(&dev, &["pvcreate", "-q", &dev]);
    lvm(&dev, &["vgcreate", "-q", "-s", "4M", vg, &dev]);
    for (name, mib) in lvs {
        lvm(&dev, &["lvcreate", "-q", "-an", "-Zn", "-L", &format!("{mib}M"), "-n", name, vg]);
    }
    then(&dev);
    let pe_start: u64 = lvm(&dev, &["pvs", "--noheadings", "--units", "b", "--nosuffix", "-o", "pe_start", &dev]).trim().parse().expect("pe_start");
    let mut out = BTreeMap::new();
    for line in lvm(&dev, &["lvs", "--noheadings", "--separator", "|", "-o", "lv_name,seg_pe_ranges", vg]).lines() {
        let Some((name, ranges)) = line.trim().split_once('|') else { continue };
        let (a, b) = ranges.rsplit_once(':').expect("dev:first-last").1.split_once('-').expect("first-last");
        let (a, b): (u64, u64) = (a.parse().expect("pe"), b.parse().expect("pe"));
        let range = (start + pe_start + a * (4 << 20), (b - a + 1) * (4 << 20));
        // A volume in two pieces has two lines: keep none.
        if out.insert(name.to_owned(), range).is_some() {
            out.insert(name.to_owned(), (0, 0));
        }
    }
    out.retain(|_, r| r.1 > 0);
    out
}

/// An md RAID superblock 1.2 (written 4 KiB into the member, as mdadm
/// does) for slot `slot` of a `raid_disks`-disk array at `level` named
/// `name` with UUID bytes `uuid`, data 1 MiB in and `data_sectors` long,
/// `events`, clean. Made here from the kernel's layout (md_p.h), not by
/// the code under test; `mdadm --examine` reads it as valid.
pub fn md_superblock(level: u32, raid_disks: u32, slot: u16, name: &str, uuid: [u8; 16], data_sectors: u64, events: u64) -> Vec<u8> {
    let mut sb = vec![0u8; 256 + 2 * raid_disks as usize];
    let put = |sb: &mut Vec<u8>, at: usize, b: &[u8]| sb[at..at + b.len()].copy_from_slice(b);
    put(&mut sb, 0, &0xa92b_4efcu32.to_le_bytes());
    put(&mut sb, 4, &1u32.to_le_bytes());
    put(&mut sb, 16, &uuid);
    put(&mut sb, 32, name.as_bytes());
    put(&mut sb, 64, &1_700_000_000u64.to_le_bytes());
    put(&mut sb, 72, &level.to_le_bytes());
    put(&mut sb, 80, &data_sectors.to_le_bytes());
    put(&mut sb, 92, &raid_disks.to_le_bytes());
    put(&mut sb, 128, &2048u64.to_le_bytes());
    put(&mut sb, 136, &data_sectors.to_le_bytes());
    put(&mut sb, 144, &8u64.to_le_bytes());
    put(&mut sb, 160, &u32::from(slot).to_le_bytes());
    put(&mut sb, 168, &[0x40 + slot as u8; 16]);
    put(&mut sb, 192, &1_700_000_000u64.to_le_bytes());
    put(&mut sb, 200, &events.to_le_bytes());
    put(&mut sb, 208, &u64::MAX.to_le_bytes());
    put(&mut sb, 220, &raid_disks.to_le_bytes());
    for s in 0..raid_disks as usize {
        put(&mut sb, 256 + 2 * s, &(s as u16).to_le_bytes());
    }
    // md's checksum: the 32-bit words (the checksum's own counted as zero,
    // a trailing half word as 16 bits) summed into 64 bits, halves added.
    let mut sum: u64 = sb.chunks_exact(4).map(|w| u64::from(u32::from_le_bytes([w[0], w[1], w[2], w[3]]))).sum();
    if sb.len() % 4 == 2 {
        let n = sb.len();
        sum += u64::from(u16::from_le_bytes([sb[n - 2], sb[n - 1]]));
    }
    put(&mut sb, 216, &(((sum & 0xffff_ffff) + (sum >> 32)) as u32).to_le_bytes());
    sb
}

/// `cmd` without the variables cargo sets for this test (CARGO_PKG_NAME,
/// CARGO_MANIFEST_DIR, ...): a cargo run by it would otherwise see them
/// and run build scripts that watch them (ring's) again, compiling every
/// crate above them again (`scripts/cargo-env` does the same for scripts).
pub fn without_cargo_test_env(cmd: &mut Command) -> &mut Command {
    for (k, _) in std::env::vars_os() {
        let k = k.to_string_lossy();
        let set_by_cargo = ["CARGO_PKG_", "CARGO_MANIFEST_", "CARGO_CRATE_", "CARGO_BIN_EXE_"].iter().any(|p| k.starts_with(p))
            || ["CARGO_BIN_NAME", "CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&k.as_ref());
        if set_by_cargo {
            cmd.env_remove(k.as_ref());
        }
    }
    cmd
}

/// Fill `len` bytes of `f` from `offset` with xorshift64 noise from `seed`
/// (as a wiped or encrypted disk looks), a MiB at a time.
pub fn fill_random(f: &std::fs::File, offset: u64, len: u64, seed: u64) {
    use std::os::unix::fs::FileExt;
    let mut x = seed;
    let mut buf = vec![0u8; 1 << 20];
    let mut done = 0;
    while done < len {
        let n = (len - done).min(buf.len() as u64) as usize;
        for c in buf[..n].chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            c.copy_from_slice(&x.to_le_bytes()[..c.len()]);
        }
        f.write_all_at(&buf[..n], offset + done).expect("writing noise");
        done += n as u64;
    }
}
