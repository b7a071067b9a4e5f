//! The decisive test of the used-block maps: for each filesystem, make a
//! fresh image with the real mkfs, fill it with files (several sizes, a
//! deleted file, a fragmented file), compute `used_extents`, then copy ONLY
//! those extents onto an image full of pseudo-random garbage and check the
//! copy with the filesystem's own checker and by reading every file back.
//!
//! Needs root (loop devices, mounts) and the tools below; a missing tool is a
//! failure with the Debian package to install, not a skip:
//! e2fsprogs, dosfstools, mtools, ntfs-3g, exfatprogs, exfat-fuse, util-linux.
//! Every loop device and mount is released by a guard, also on failure.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Mutex;

use imaging::extent::total;
use imaging::fs::{probe, used_extents, FsInfo, FsKind};
use imaging::Extent;

/// Loop devices and mounts are global state: one test at a time uses them.
static SERIAL: Mutex<()> = Mutex::new(());

const MIB: u64 = 1 << 20;

fn need(tools: &[(&str, &str)]) {
    for (tool, package) in tools {
        let found = std::env::var("PATH")
            .unwrap_or_default()
            .split(':')
            .chain(["/sbin", "/usr/sbin", "/bin", "/usr/bin"])
            .any(|d| Path::new(d).join(tool).exists());
        assert!(found, "fs_maps needs `{tool}`: apt-get install {package}");
    }
}

fn need_root() {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .expect("running id -u");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0",
        "fs_maps needs root (loop devices and mounts); run the tests as root"
    );
}

fn run(cmd: &str, args: &[&str]) -> Output {
    let out = Command::new(cmd)
        .args(args)
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn stdout(cmd: &str, args: &[&str]) -> String {
    String::from_utf8_lossy(&run(cmd, args).stdout).into_owned()
}

/// A loop device, detached on drop.
struct Loop(String);

impl Loop {
    fn attach(img: &Path, sector: Option<u32>) -> Loop {
        let img = img.to_str().expect("utf-8 path");
        let mut args = vec!["-f", "--show"];
        let s;
        if let Some(n) = sector {
            s = n.to_string();
            args.extend(["-b", &s]);
        }
        args.push(img);
        Loop(stdout("losetup", &args).trim().to_owned())
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        let _ = Command::new("losetup").args(["-d", &self.0]).status();
    }
}

/// A mount point, unmounted on drop (lazily if busy).
struct Mount(PathBuf);

impl Mount {
    fn new(cmd: &str, args: &[&str], dir: &Path) -> Mount {
        fs::create_dir_all(dir).expect("mkdir mountpoint");
        let mut a: Vec<&str> = args.to_vec();
        a.push(dir.to_str().expect("utf-8 path"));
        run(cmd, &a);
        Mount(dir.to_path_buf())
    }

    fn unmount(self) {
        run("sync", &[]);
        run("umount", &[self.0.to_str().expect("utf-8 path")]);
        std::mem::forget(self);
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let p = self.0.to_string_lossy().into_owned();
        let ok = Command::new("umount")
            .arg(&p)
            .status()
            .is_ok_and(|s| s.success());
        if !ok {
            let _ = Command::new("umount").args(["-l", &p]).status();
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), so a byte copied to the
/// wrong place shows up.
fn noise(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// The files every filesystem gets: path -> content.
fn file_set() -> BTreeMap<&'static str, Vec<u8>> {
    let mut m = BTreeMap::new();
    m.insert("empty.bin", Vec::new());
    m.insert("one.bin", noise(1, 1));
    m.insert("page.bin", noise(2, 4095));
    m.insert("pageplus.bin", noise(3, 4097));
    m.insert("dir/medium.bin", noise(4, 100_000));
    m.insert("dir/sub/large.bin", noise(5, 1_000_000));
    m.insert("dir/text.txt", b"the quick brown fox\n".repeat(500));
    m
}

const FRAGMENTED: &str = "frag.bin";
const FRAG_LEN: usize = 1_500_000;

/// Write the file set into a mounted filesystem, plus a fragmented file
/// (interleaved with a file that is then deleted) and another deleted file.
fn populate_mounted(root: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut expect: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    for (p, data) in file_set() {
        let path = root.join(p);
        fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
        fs::write(&path, &data).expect("write file");
        expect.insert(p.to_owned(), data);
    }
    fs::write(root.join("deleted.bin"), noise(6, 300_000)).expect("write");
    run("sync", &[]);
    fs::remove_file(root.join("deleted.bin")).expect("rm");
    // Interleave two files chunk by chunk, syncing after each chunk so the
    // allocator places them alternately; delete one: the other is fragmented.
    let frag = noise(7, FRAG_LEN);
    let filler = noise(8, FRAG_LEN);
    let mut a = File::create(root.join(FRAGMENTED)).expect("create");
    let mut b = File::create(root.join("filler.bin")).expect("create");
    for (ca, cb) in frag.chunks(64 * 1024).zip(filler.chunks(64 * 1024)) {
        a.write_all(ca).expect("write");
        a.sync_all().expect("sync");
        b.write_all(cb).expect("write");
        b.sync_all().expect("sync");
    }
    drop((a, b));
    fs::remove_file(root.join("filler.bin")).expect("rm");
    run("sync", &[]);
    expect.insert(FRAGMENTED.to_owned(), frag);
    expect
}

fn sparse_image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let p = dir.join(name);
    File::create(&p)
        .expect("create image")
        .set_len(size)
        .expect("size image");
    p
}

/// Map `src`, check the map's basic promises, and build the copy: garbage
/// everywhere, then only the mapped extents from `src`.
fn map_and_copy(src: &Path, copy: &Path) -> (FsInfo, Vec<Extent>) {
    let f = File::open(src).expect("open source");
    let len = f.metadata().expect("stat").len();
    let info = probe(&f, len)
        .expect("probe")
        .expect("filesystem recognised");
    let map =
        used_extents(&f, len, &info).unwrap_or_else(|e| panic!("used_extents: {e} ({})", e.hint()));
    assert!(!map.is_empty());
    assert_eq!(
        map,
        imaging::extent::normalize(map.clone(), len),
        "map is normalized"
    );
    assert!(map.last().is_some_and(|e| e.end() <= len));
    let out = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(copy)
        .expect("create copy");
    let mut off = 0u64;
    let mut seed = 0xA5A5u64;
    while off < len {
        let n = (len - off).min(4 * MIB);
        seed += 1;
        out.write_all_at(&noise(seed, n as usize), off)
            .expect("write garbage");
        off += n;
    }
    let mut buf = vec![0u8; 4 * MIB as usize];
    for e in &map {
        let mut done = 0;
        while done < e.len {
            let n = (e.len - done).min(buf.len() as u64) as usize;
            f.read_exact_at(&mut buf[..n], e.start + done)
                .expect("read source");
            out.write_all_at(&buf[..n], e.start + done)
                .expect("write copy");
            done += n as u64;
        }
    }
    out.sync_all().expect("sync copy");
    (info, map)
}

fn compare_tree(root: &Path, expect: &BTreeMap<String, Vec<u8>>, what: &str) {
    for (p, data) in expect {
        let got = fs::read(root.join(p))
            .unwrap_or_else(|e| panic!("{what}: reading {p} from the copy: {e}"));
        assert!(
            got == *data,
            "{what}: {p} differs in the copy ({} vs {} bytes)",
            got.len(),
            data.len()
        );
    }
    assert!(
        !root.join("deleted.bin").exists() && !root.join("filler.bin").exists(),
        "{what}: deleted files are back"
    );
}

fn assert_small(info: &FsInfo, map: &[Extent], expect: &BTreeMap<String, Vec<u8>>, what: &str) {
    let data: u64 = expect.values().map(|v| v.len() as u64).sum();
    let mapped = total(map);
    eprintln!(
        "{what}: fs {} bytes, used {:?}, mapped {mapped} in {} extents, file data {data}",
        info.size,
        info.used,
        map.len()
    );
    assert!(
        mapped >= data,
        "{what}: the map ({mapped}) is smaller than the file data ({data})"
    );
    assert!(
        mapped < info.size / 3,
        "{what}: map of {mapped} bytes is not much smaller than the {}-byte filesystem",
        info.size
    );
}

fn approx(a: u64, b: u64, slack: u64) -> bool {
    a.abs_diff(b) <= slack.max(a.max(b) / 100)
}

// ---------------------------------------------------------------- ext2/3/4

fn ext_case(name: &str, mkfs: &[&str], size: u64, kind: FsKind) {
    need(&[
        ("mke2fs", "e2fsprogs"),
        ("e2fsck", "e2fsprogs"),
        ("debugfs", "e2fsprogs"),
        ("losetup", "mount"),
    ]);
    need_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = sparse_image(tmp.path(), "src.img", size);
    let mut args = vec!["-q", "-F"];
    args.extend_from_slice(mkfs);
    args.push(src.to_str().expect("utf-8"));
    run("mke2fs", &args);
    let expect = {
        let lo = Loop::attach(&src, None);
        let m = Mount::new("mount", &[&lo.0], &tmp.path().join("mnt"));
        let e = populate_mounted(&m.0);
        m.unmount();
        e
    };
    let copy = tmp.path().join("copy.img");
    let (info, map) = map_and_copy(&src, &copy);
    assert_eq!(info.kind, kind, "{name}");
    assert_small(&info, &map, &expect, name);
    // used = (blocks - free) * block size, exactly as dumpe2fs reports it.
    let h = stdout("dumpe2fs", &["-h", src.to_str().expect("utf-8")]);
    let field = |k: &str| -> u64 {
        h.lines()
            .find_map(|l| l.strip_prefix(k).map(|v| v.trim().parse().expect("number")))
            .unwrap_or_else(|| panic!("dumpe2fs has no {k}"))
    };
    let used = (field("Block count:") - field("Free blocks:")) * field("Block size:");
    assert_eq!(info.used, Some(used), "{name}: used");
    // Independent oracle: every block libext2fs considers in use (it
    // computes BLOCK_UNINIT groups' bitmaps itself) must be in the map.
    let bs = field("Block size:");
    for (start, end) in ext_used_blocks(&src) {
        assert!(
            covered(&map, start * bs, (end - start) * bs),
            "{name}: blocks {start}..{end} are in use per dumpe2fs but not in the map"
        );
    }
    // The copy passes e2fsck and every file reads back.
    let fsck = Command::new("e2fsck")
        .args(["-fn", copy.to_str().expect("utf-8")])
        .output()
        .expect("e2fsck");
    assert!(
        fsck.status.success(),
        "{name}: e2fsck -fn on the copy failed:\n{}{}",
        String::from_utf8_lossy(&fsck.stdout),
        String::from_utf8_lossy(&fsck.stderr)
    );
    let out = tmp.path().join("out");
    fs::create_dir_all(&out).expect("mkdir");
    run(
        "debugfs",
        &[
            "-R",
            &format!("rdump / {}", out.display()),
            copy.to_str().expect("utf-8"),
        ],
    );
    compare_tree(&out, &expect, name);
}

/// In-use block ranges `[start, end)` per `dumpe2fs`: each group's range
/// minus its "Free blocks:" list.
fn ext_used_blocks(img: &Path) -> Vec<(u64, u64)> {
    let text = stdout("dumpe2fs", &[img.to_str().expect("utf-8")]);
    let mut used = Vec::new();
    let mut group: Option<(u64, u64)> = None;
    // With bigalloc the free list names clusters by their first block.
    let header = |k: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .map(|v| v.trim().parse::<u64>().expect("number"))
    };
    let bs = header("Block size:").expect("block size");
    let step = header("Cluster size:").map_or(1, |c| c / bs);
    let range = |r: &str| -> (u64, u64) {
        let r = r.trim();
        match r.split_once('-') {
            Some((a, b)) => (
                a.parse().expect("block"),
                b.parse::<u64>().expect("block") + step,
            ),
            None => {
                let a: u64 = r.parse().expect("block");
                (a, a + step)
            }
        }
    };
    for line in text.lines() {
        if let Some(rest) = line
            .strip_prefix("Group ")
            .filter(|r| r.contains("(Blocks "))
        {
            let blocks = rest
                .split_once("(Blocks ")
                .and_then(|(_, r)| r.split_once(')'))
                .expect("group range")
                .0;
            let (gs, ge) = range(blocks);
            group = Some((gs, ge - step + 1));
        } else if let (Some(free), Some((gs, ge))) =
            (line.trim_start().strip_prefix("Free blocks:"), group)
        {
            let mut cur = gs;
            for r in free.split(',').map(str::trim).filter(|r| !r.is_empty()) {
                let (a, b) = range(r);
                if a > cur {
                    used.push((cur, a));
                }
                cur = b;
            }
            if cur < ge {
                used.push((cur, ge));
            }
            group = None;
        }
    }
    assert!(!used.is_empty(), "no groups in dumpe2fs output");
    used
}

/// Whether `[start, start + len)` lies inside a normalized extent list.
fn covered(map: &[Extent], start: u64, len: u64) -> bool {
    let end = start + len;
    let mut pos = start;
    for e in map {
        if e.start <= pos && e.end() > pos {
            pos = e.end();
        }
        if pos >= end {
            return true;
        }
    }
    pos >= end
}

#[test]
fn ext2_1k_blocks() {
    ext_case(
        "ext2",
        &["-t", "ext2", "-b", "1024"],
        24 * MIB,
        FsKind::Ext2,
    );
}

#[test]
fn ext3_4k_blocks() {
    ext_case(
        "ext3",
        &["-t", "ext3", "-b", "4096", "-g", "4096"],
        64 * MIB,
        FsKind::Ext3,
    );
}

#[test]
fn ext4_flex_bg() {
    // 4096 blocks per group: 8 groups, most of them BLOCK_UNINIT.
    ext_case(
        "ext4",
        &["-t", "ext4", "-b", "4096", "-g", "4096"],
        128 * MIB,
        FsKind::Ext4,
    );
}

#[test]
fn ext4_without_flex_bg_1k() {
    ext_case(
        "ext4 ^flex_bg",
        &["-t", "ext4", "-b", "1024", "-O", "^flex_bg"],
        40 * MIB,
        FsKind::Ext4,
    );
}

#[test]
fn ext4_bigalloc() {
    // 16 KiB clusters: bitmaps count clusters, not blocks.
    ext_case(
        "ext4 bigalloc",
        &["-t", "ext4", "-O", "bigalloc", "-C", "16384", "-g", "8192"],
        96 * MIB,
        FsKind::Ext4,
    );
}

#[test]
fn ext4_64bit_meta_bg_sparse_super2() {
    ext_case(
        "ext4 meta_bg",
        &[
            "-t",
            "ext4",
            "-b",
            "1024",
            "-g",
            "1024",
            "-O",
            "64bit,meta_bg,^resize_inode,sparse_super2",
        ],
        48 * MIB,
        FsKind::Ext4,
    );
}

// ---------------------------------------------------------------- FAT

fn fat_case(name: &str, mkfs: &[&str], size: u64, kind: FsKind, sector: u32) {
    need(&[
        ("mkfs.vfat", "dosfstools"),
        ("fsck.vfat", "dosfstools"),
        ("mcopy", "mtools"),
    ]);
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = sparse_image(tmp.path(), "src.img", size);
    let s = src.to_str().expect("utf-8");
    let mut args = mkfs.to_vec();
    args.push(s);
    run("mkfs.vfat", &args);
    // mtools writes without mounting. Holes from deleted files make the
    // last file fragmented: FAT allocates the first free clusters.
    let host = tmp.path().join("host");
    fs::create_dir_all(&host).expect("mkdir");
    let mut expect = BTreeMap::new();
    run("mmd", &["-i", s, "::/dir", "::/dir/sub"]);
    let put = |p: &str, data: &[u8]| {
        let h = host.join(p.replace('/', "_"));
        fs::write(&h, data).expect("write host file");
        run(
            "mcopy",
            &["-i", s, h.to_str().expect("utf-8"), &format!("::/{p}")],
        );
    };
    put("gap1.bin", &noise(9, 200_000));
    for (p, data) in file_set() {
        put(p, &data);
        expect.insert(p.to_owned(), data);
    }
    put("gap2.bin", &noise(10, 150_000));
    put("deleted.bin", &noise(6, 300_000));
    run(
        "mdel",
        &["-i", s, "::/gap1.bin", "::/gap2.bin", "::/deleted.bin"],
    );
    let frag = noise(7, FRAG_LEN);
    put(FRAGMENTED, &frag);
    expect.insert(FRAGMENTED.to_owned(), frag);
    let fsck_src = stdout("fsck.vfat", &["-n", s]);

    let copy = tmp.path().join("copy.img");
    let (info, map) = map_and_copy(&src, &copy);
    assert_eq!(info.kind, kind, "{name}");
    assert_eq!(info.sector_size, Some(sector), "{name}");
    assert_small(&info, &map, &expect, name);
    // fsck.vfat's summary "N files, used/total clusters".
    let summary = fsck_src.lines().last().unwrap_or_default().to_owned();
    let clusters: u64 = summary
        .split_whitespace()
        .find_map(|w| w.split_once('/').and_then(|(u, _)| u.parse().ok()))
        .unwrap_or_else(|| panic!("{name}: no cluster count in fsck.vfat output {summary:?}"));
    let used = info.used.unwrap_or_else(|| panic!("{name}: used unknown"));
    assert!(
        approx(used, clusters * u64::from(info.block_size), 0),
        "{name}: used {used} vs fsck.vfat {summary}"
    );

    let out = Command::new("fsck.vfat")
        .args(["-n", copy.to_str().expect("utf-8")])
        .output()
        .expect("fsck.vfat");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "{name}: fsck.vfat -n on the copy failed:\n{text}"
    );
    let tail = |t: &str| {
        t.lines()
            .last()
            .and_then(|l| l.split_once(": "))
            .map(|(_, r)| r.to_owned())
    };
    assert_eq!(tail(&text), tail(&fsck_src), "{name}: fsck summary differs");
    let c = copy.to_str().expect("utf-8");
    let back = tmp.path().join("back");
    fs::create_dir_all(back.join("dir/sub")).expect("mkdir");
    for p in expect.keys() {
        run(
            "mcopy",
            &[
                "-n",
                "-i",
                c,
                &format!("::/{p}"),
                back.join(p).to_str().expect("utf-8"),
            ],
        );
    }
    let listing = stdout("mdir", &["-/", "-b", "-i", c, "::/"]);
    assert!(
        !listing.contains("deleted.bin") && !listing.contains("gap1"),
        "{name}: deleted files are back"
    );
    compare_tree(&back, &expect, name);
}

#[test]
fn fat12() {
    fat_case(
        "fat12",
        &["-F", "12", "-n", "F12"],
        8 * MIB,
        FsKind::Fat12,
        512,
    );
}

#[test]
fn fat16() {
    fat_case(
        "fat16",
        &["-F", "16", "-n", "F16"],
        32 * MIB,
        FsKind::Fat16,
        512,
    );
}

#[test]
fn fat32() {
    fat_case(
        "fat32",
        &["-F", "32", "-s", "1", "-n", "F32"],
        64 * MIB,
        FsKind::Fat32,
        512,
    );
}

#[test]
fn fat32_4k_sectors() {
    // FAT32 needs 65525+ clusters: with 4 KiB sectors and clusters, 256+ MiB.
    fat_case(
        "fat32 4k",
        &["-F", "32", "-S", "4096", "-s", "1", "-n", "F324K"],
        288 * MIB,
        FsKind::Fat32,
        4096,
    );
}

#[test]
fn fat16_4k_sectors() {
    fat_case(
        "fat16 4k",
        &["-F", "16", "-S", "4096", "-s", "1", "-n", "F4K"],
        48 * MIB,
        FsKind::Fat16,
        4096,
    );
}

// ---------------------------------------------------------------- NTFS

fn ntfs_case(name: &str, mkfs: &[&str], size: u64, sector: u32) {
    need(&[
        ("mkntfs", "ntfs-3g"),
        ("ntfs-3g", "ntfs-3g"),
        ("ntfsfix", "ntfs-3g"),
        ("ntfscat", "ntfs-3g"),
    ]);
    need_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = sparse_image(tmp.path(), "src.img", size);
    let s = src.to_str().expect("utf-8");
    let mut args = vec!["-q", "-F", "-Q"];
    args.extend_from_slice(mkfs);
    args.push(s);
    run("mkntfs", &args);
    let (expect, df_used) = {
        let m = Mount::new("ntfs-3g", &[s], &tmp.path().join("mnt"));
        let e = populate_mounted(&m.0);
        let df_used = df_used(&m.0);
        m.unmount();
        (e, df_used)
    };
    let copy = tmp.path().join("copy.img");
    let (info, map) = map_and_copy(&src, &copy);
    assert_eq!(info.kind, FsKind::Ntfs);
    assert_eq!(info.sector_size, Some(sector));
    assert_small(&info, &map, &expect, name);
    let used = info.used.expect("ntfs used");
    assert!(
        approx(used, df_used, 64 * 1024),
        "{name}: used {used} vs df {df_used}"
    );
    let c = copy.to_str().expect("utf-8");
    run("ntfsfix", &["-n", c]);
    for (p, data) in &expect {
        let got = run("ntfscat", &[c, &format!("/{p}")]).stdout;
        assert!(got == *data, "{name}: {p} differs in the copy (ntfscat)");
    }
    // A read-only mount walks the directory indexes too.
    let m = Mount::new("ntfs-3g", &["-o", "ro", c], &tmp.path().join("mnt2"));
    compare_tree(&m.0, &expect, name);
}

fn df_used(mnt: &Path) -> u64 {
    let out = stdout(
        "df",
        &["-B1", "--output=used", mnt.to_str().expect("utf-8")],
    );
    out.lines()
        .nth(1)
        .and_then(|l| l.trim().parse().ok())
        .expect("df output")
}

#[test]
fn ntfs_512() {
    ntfs_case("ntfs", &[], 48 * MIB, 512);
}

#[test]
fn ntfs_4k_sectors() {
    ntfs_case("ntfs 4k", &["-s", "4096"], 48 * MIB, 4096);
}

// ---------------------------------------------------------------- exFAT

fn exfat_case(name: &str, sector: Option<u32>, size: u64) {
    need(&[
        ("mkfs.exfat", "exfatprogs"),
        ("fsck.exfat", "exfatprogs"),
        ("mount.exfat-fuse", "exfat-fuse"),
        ("losetup", "mount"),
    ]);
    need_root();
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = sparse_image(tmp.path(), "src.img", size);
    let expect = {
        let lo = Loop::attach(&src, sector);
        run("mkfs.exfat", &["-L", "EXMAP", &lo.0]);
        let m = Mount::new("mount.exfat-fuse", &[&lo.0], &tmp.path().join("mnt"));
        let e = populate_mounted(&m.0);
        m.unmount();
        e
    };
    let copy = tmp.path().join("copy.img");
    let (info, map) = map_and_copy(&src, &copy);
    assert_eq!(info.kind, FsKind::Exfat);
    assert_eq!(info.sector_size, Some(sector.unwrap_or(512)));
    assert_eq!(info.label.as_deref(), Some("EXMAP"));
    assert_small(&info, &map, &expect, name);
    let used = info.used.expect("exfat used");
    // dump.exfat's statistics, read from the unmounted image (exfat-fuse's
    // df is taken from its in-memory state and counts the non-heap area).
    let dump = stdout("dump.exfat", &[src.to_str().expect("utf-8")]);
    let stat = |k: &str| -> u64 {
        dump.lines()
            .find_map(|l| l.trim().strip_prefix(k))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("{name}: no {k} in dump.exfat output"))
    };
    let tool_used = (stat("Total Clusters:") - stat("Free Clusters:")) * stat("Cluster size:");
    assert_eq!(used, tool_used, "{name}: used vs dump.exfat");
    let lo = Loop::attach(&copy, sector);
    run("fsck.exfat", &["-n", &lo.0]);
    let m = Mount::new(
        "mount.exfat-fuse",
        &["-o", "ro", &lo.0],
        &tmp.path().join("mnt2"),
    );
    compare_tree(&m.0, &expect, name);
}

#[test]
fn exfat_512() {
    exfat_case("exfat", None, 64 * MIB);
}

#[test]
fn exfat_4k_sectors() {
    exfat_case("exfat 4k", Some(4096), 64 * MIB);
}

// ---------------------------------------------------------------- swap

#[test]
fn swap_header_only() {
    need(&[("mkswap", "util-linux"), ("blkid", "util-linux")]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let src = sparse_image(tmp.path(), "src.img", 16 * MIB);
    run("mkswap", &["-L", "swapmap", src.to_str().expect("utf-8")]);
    let copy = tmp.path().join("copy.img");
    let (info, map) = map_and_copy(&src, &copy);
    assert_eq!(info.kind, FsKind::Swap);
    assert_eq!(map, vec![Extent::new(0, 4096)]);
    let blkid = |p: &Path| {
        let out = stdout("blkid", &["-p", "-o", "export", p.to_str().expect("utf-8")]);
        out.lines()
            .filter(|l| !l.starts_with("DEVNAME="))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let (a, b) = (blkid(&src), blkid(&copy));
    assert!(
        b.contains("TYPE=swap") && b.contains("LABEL=swapmap"),
        "{b}"
    );
    assert_eq!(a, b);
    assert_eq!(
        info.uuid.as_deref(),
        a.lines().find_map(|l| l.strip_prefix("UUID="))
    );
}

// ---------------------------------------------------------------- probe vs blkid

#[test]
fn probe_agrees_with_blkid() {
    need(&[
        ("blkid", "util-linux"),
        ("mke2fs", "e2fsprogs"),
        ("mkfs.vfat", "dosfstools"),
        ("mkntfs", "ntfs-3g"),
        ("mkfs.exfat", "exfatprogs"),
    ]);
    let tmp = tempfile::tempdir().expect("tempdir");
    let cases: &[(&str, &[&str], FsKind)] = &[
        (
            "mke2fs",
            &["-q", "-F", "-t", "ext4", "-L", "lbl4"],
            FsKind::Ext4,
        ),
        ("mke2fs", &["-q", "-F", "-t", "ext3"], FsKind::Ext3),
        (
            "mke2fs",
            &["-q", "-F", "-t", "ext2", "-L", "two"],
            FsKind::Ext2,
        ),
        (
            "mkfs.vfat",
            &["-F", "32", "-s", "1", "-n", "VFAT"],
            FsKind::Fat32,
        ),
        ("mkntfs", &["-q", "-F", "-Q", "-L", "Windows"], FsKind::Ntfs),
        ("mkfs.exfat", &["-L", "Stick"], FsKind::Exfat),
    ];
    for (i, (cmd, args, kind)) in cases.iter().enumerate() {
        let img = sparse_image(tmp.path(), &format!("p{i}.img"), 40 * MIB);
        let mut a = args.to_vec();
        a.push(img.to_str().expect("utf-8"));
        run(cmd, &a);
        let f = File::open(&img).expect("open");
        let info = probe(&f, 40 * MIB).expect("probe").expect("recognised");
        assert_eq!(&info.kind, kind, "{cmd} {args:?}");
        let export = stdout(
            "blkid",
            &["-p", "-o", "export", img.to_str().expect("utf-8")],
        );
        let get = |k: &str| {
            export
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(str::to_owned)
        };
        assert_eq!(info.uuid, get("UUID="), "{cmd} {args:?} uuid");
        assert_eq!(info.label, get("LABEL="), "{cmd} {args:?} label");
        let expected_type = match kind {
            FsKind::Fat32 => "vfat",
            k => k.name(),
        };
        assert_eq!(
            get("TYPE=").as_deref(),
            Some(expected_type),
            "{cmd} {args:?}"
        );
    }
}

// ---------------------------------------------------------------- speed

/// Counts reads, to show that a large ext4 map reads its bitmaps in a few
/// large batches rather than one block per group.
struct Counting {
    f: File,
    reads: std::sync::atomic::AtomicU64,
    bytes: std::sync::atomic::AtomicU64,
}

impl imaging::ReadAt for Counting {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        use std::sync::atomic::Ordering::Relaxed;
        self.reads.fetch_add(1, Relaxed);
        self.bytes.fetch_add(buf.len() as u64, Relaxed);
        FileExt::read_exact_at(&self.f, buf, offset)
    }
}

#[test]
fn ext4_100g_map_reads_only_bitmaps_in_batches() {
    need(&[("mke2fs", "e2fsprogs"), ("dumpe2fs", "e2fsprogs")]);
    let tmp = tempfile::tempdir().expect("tempdir");
    // With metadata_csum most groups are BLOCK_UNINIT (no read at all);
    // without it every one of the 800 bitmaps is initialised and must be read.
    for features in ["metadata_csum", "^metadata_csum,^uninit_bg"] {
        let size = 100 << 30;
        let img = sparse_image(tmp.path(), "big.img", size);
        run(
            "mke2fs",
            &[
                "-q",
                "-F",
                "-t",
                "ext4",
                "-O",
                features,
                "-E",
                "lazy_itable_init=1,lazy_journal_init=1",
                img.to_str().expect("utf-8"),
            ],
        );
        let dev = Counting {
            f: File::open(&img).expect("open"),
            reads: 0.into(),
            bytes: 0.into(),
        };
        let info = probe(&dev, size).expect("probe").expect("ext4");
        let t = std::time::Instant::now();
        let map = used_extents(&dev, size, &info).expect("map");
        let (reads, bytes) = (dev.reads.into_inner(), dev.bytes.into_inner());
        eprintln!(
            "100 GiB ext4 ({features}): {} extents, {} bytes mapped, {reads} reads, {bytes} bytes read, {:?}",
            map.len(),
            total(&map),
            t.elapsed()
        );
        // 800 groups in 50 flex groups: a handful of reads per flex group at most.
        assert!(reads <= 120, "{features}: {reads} reads");
        assert!(bytes <= 8 << 20, "{features}: {bytes} bytes read");
        assert!(total(&map) >= info.used.expect("used"));
        for (start, end) in ext_used_blocks(&img) {
            assert!(
                covered(&map, start * 4096, (end - start) * 4096),
                "{features}: blocks {start}..{end} missing"
            );
        }
        fs::remove_file(&img).expect("rm");
    }
}
