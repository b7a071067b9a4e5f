//! Exploring images: `rescue ls` and `rescue extract` read files straight out
//! of a partition of an image, checked against the filesystems' own tools
//! (mtools for FAT, debugfs for ext4, ntfsls and ntfs-3g for NTFS) on the
//! source disk. Only the NTFS test needs root (an ntfs-3g FUSE mount).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

/// `rescue ls --json`: name -> (kind, size, mode).
fn ls(args: &[&str]) -> BTreeMap<String, (String, u64, Option<u64>)> {
    let mut a = vec!["ls", "--json"];
    a.extend_from_slice(args);
    let v: serde_json::Value = serde_json::from_str(&rescue_ok(&a)).expect("ls json");
    v.as_array()
        .expect("list")
        .iter()
        .map(|e| (e["name"].as_str().expect("name").to_string(), (e["kind"].as_str().expect("kind").to_string(), e["size"].as_u64().expect("size"), e["mode"].as_u64())))
        .collect()
}

/// `debugfs -R 'ls -l DIR'`: name -> (kind, size, mode), without . and ..
fn debugfs_ls(part: &Path, dir: &str) -> BTreeMap<String, (String, u64, Option<u64>)> {
    let out = sh_ok(Command::new("debugfs").arg("-R").arg(format!("ls -l {dir}")).arg(part));
    out.lines()
        .filter_map(|l| {
            // "  12  100644 (1)  0  0  45  6-Dec-2026 02:47 README.txt"
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 9 {
                return None;
            }
            let mode = u64::from_str_radix(f[1], 8).ok()?;
            let kind = match mode & 0o170000 {
                0o040000 => "dir",
                0o100000 => "file",
                0o120000 => "symlink",
                _ => "other",
            };
            let name = f[8..].join(" ");
            let size: u64 = f[5].parse().ok()?;
            (name != "." && name != "..").then(|| (name, (kind.to_string(), size, Some(mode & 0o7777))))
        })
        .collect()
}

/// `mdir -b`: the names in a FAT directory.
fn mdir_names(disk: &Path, offset: u64, dir: &str) -> Vec<String> {
    let out = sh_ok(Command::new("mdir").env("MTOOLS_SKIP_CHECK", "1").arg("-b").arg("-i").arg(format!("{}@@{offset}", s(disk))).arg(format!("::{dir}")));
    let mut v: Vec<String> = out.lines().filter_map(|l| l.trim_end_matches('/').rsplit('/').next().map(str::to_string)).filter(|n| !n.is_empty()).collect();
    v.sort();
    v
}


/// A minimal web server with range requests for the files in `root`, on
/// 127.0.0.1 for the rest of the test process; returns its base URL.
fn serve(root: &Path) -> String {
    use std::io::{BufRead, BufReader, Write};
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let url = format!("http://127.0.0.1:{}", l.local_addr().expect("addr").port());
    let root = root.to_path_buf();
    std::thread::spawn(move || {
        for s in l.incoming().flatten() {
            let root = root.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().expect("clone stream"));
                let mut w = s;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let name = line.split_whitespace().nth(1).unwrap_or("/").trim_start_matches('/').to_string();
                    let mut range = None;
                    loop {
                        let mut h = String::new();
                        if r.read_line(&mut h).unwrap_or(0) == 0 || h.trim_end().is_empty() {
                            break;
                        }
                        if let Some((k, v)) = h.trim_end().split_once(':') {
                            if k.eq_ignore_ascii_case("range") {
                                range = v.trim().strip_prefix("bytes=").and_then(|v| v.split_once('-')).and_then(|(a, b)| Some((a.parse::<u64>().ok()?, b.parse::<u64>().ok()?)));
                            }
                        }
                    }
                    let f = (!name.contains("..")).then(|| std::fs::File::open(root.join(&name)).ok()).flatten();
                    let (Some(f), Some((a, b))) = (f, range) else {
                        let _ = w.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n");
                        continue;
                    };
                    let len = f.metadata().expect("metadata").len();
                    let b = b.min(len.saturating_sub(1));
                    let mut body = vec![0u8; (b + 1).saturating_sub(a) as usize];
                    std::os::unix::fs::FileExt::read_exact_at(&f, &mut body, a).expect("read served file");
                    let head = format!("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {a}-{b}/{len}\r\nContent-Length: {}\r\nETag: \"v1\"\r\n\r\n", body.len());
                    if w.write_all(head.as_bytes()).and_then(|()| w.write_all(&body)).is_err() {
                        return;
                    }
                }
            });
        }
    });
    url
}

#[test]
fn ls_and_extract_match_mtools_and_debugfs() {
    let d = tempfile::tempdir().expect("tempdir");
    let disk = sample_disk();
    let img = d.path().join("b.img");
    rescue_ok(&["backup", "disk", s(disk), "-o", s(&img)]);

    // FAT32 (partition 1): names as mdir shows them, sizes and times as mcopy copies them.
    let (fat_at, _) = part(disk, 1);
    for dir in ["/", "/EFI/BOOT"] {
        let got: Vec<String> = ls(&[s(&img), "--part", "1", dir]).into_keys().collect();
        assert_eq!(got, mdir_names(disk, fat_at, dir), "FAT {dir}");
    }
    let text = rescue_ok(&["ls", s(&img), "--part", "1", "/EFI/BOOT"]);
    assert!(text.lines().any(|l| l.contains("300000") && l.ends_with("BOOTX64.EFI")), "{text}");
    let mine = d.path().join("fat-mine");
    rescue_ok(&["extract", s(&img), "--part", "1", "/EFI", "--to", s(&mine)]);
    let theirs_fat = d.path().join("fat-mcopy");
    std::fs::create_dir(&theirs_fat).expect("dir");
    sh_ok(Command::new("mcopy").env("MTOOLS_SKIP_CHECK", "1").env("TZ", "UTC").args(["-s", "-m", "-i"]).arg(format!("{}@@{fat_at}", s(disk))).arg("::/EFI").arg(&theirs_fat));
    let want = files_of(&theirs_fat);
    assert!(want.len() >= 2, "{want:?}");
    assert_eq!(files_of(&mine), want, "FAT files differ from mcopy's (content, size or mtime)");

    // ext4 (partition 3): debugfs on a copy of the partition.
    let (ext_at, ext_len) = part(disk, 3);
    let ext = d.path().join("ext.img");
    cut(disk, ext_at, ext_len, &ext);
    for dir in ["/", "/text"] {
        let got = ls(&[s(&img), "--part", "3", dir]);
        assert_eq!(got, debugfs_ls(&ext, dir), "ext4 {dir}");
    }
    let mine = d.path().join("ext-mine");
    rescue_ok(&["extract", s(&img), "--part", "3", "/text", "/dup", "/README.txt", "--to", s(&mine)]);
    let theirs = d.path().join("ext-debugfs");
    std::fs::create_dir(&theirs).expect("dir");
    for p in ["/text", "/dup", "/README.txt"] {
        sh_ok(Command::new("debugfs").arg("-R").arg(format!("rdump {p} {}", s(&theirs))).arg(&ext));
    }
    let want = tree(&theirs);
    assert!(want.len() > 40, "{want:?}");
    assert_eq!(tree(&mine), want, "ext4 files differ from debugfs rdump's (content, mode, size or mtime)");

    // The whole partition: every file, and a summary on stdout.
    let all = d.path().join("ext-all");
    let out = rescue_ok(&["extract", s(&img), "--part", "3", "/", "--to", s(&all)]);
    assert!(out.contains("Extracted"), "{out}");
    sh_ok(Command::new("debugfs").arg("-R").arg(format!("dump /large.log {}", s(&theirs.join("large.log")))).arg(&ext));
    assert_eq!(file_hash(&all.join("large.log")), file_hash(&theirs.join("large.log")));
    assert_eq!(tree(&all.join("text")), tree(&theirs.join("text")));

    // Over http, with range requests: the same listing and bytes.
    let url = format!("{}/b.img", serve(d.path()));
    assert_eq!(ls(&[&url, "--part", "3", "/text"]), ls(&[s(&img), "--part", "3", "/text"]));
    let web = d.path().join("web");
    rescue_ok(&["extract", &url, "--part", "1", "/EFI", "--to", s(&web)]);
    assert_eq!(files_of(&web), files_of(&theirs_fat));

    // NTFS (partition 2): the names ntfsls shows (its index spills into INDX blocks).
    let (ntfs_at, ntfs_len) = part(disk, 2);
    let ntfs = d.path().join("ntfs.img");
    cut(disk, ntfs_at, ntfs_len, &ntfs);
    let mut want: Vec<String> = sh_ok(Command::new("ntfsls").arg("-f").arg(&ntfs)).lines().map(str::to_string).collect();
    want.sort();
    let got: Vec<String> = ls(&[s(&img), "--part", "2"]).into_keys().collect();
    assert!(want.len() > 100, "{want:?}");
    assert_eq!(got, want, "NTFS root listing differs from ntfsls");

    // A partition the image lacks, and a path the filesystem lacks.
    rescue_fails(&["ls", s(&img), "--part", "9"], 2, "no partition 9");
    rescue_fails(&["ls", s(&img), "--part", "3", "/nothing/here"], 1, "no such file");
}

#[test]
fn chain_points_show_their_own_files_and_existing_files_are_kept() {
    let d = tempfile::tempdir().expect("tempdir");
    let src = sample_copy(d.path(), "src.img");
    let pw = d.path().join("pw");
    std::fs::write(&pw, "explore secret\n").expect("password file");
    let full = d.path().join("pc.img");
    rescue_ok(&["backup", "disk", s(&src), "-o", s(&full), "--encrypt", "--password-file", s(&pw)]);
    // A new file on the FAT partition (at 1 MiB), written in place by mtools.
    let extra = d.path().join("New File.bin");
    let data: Vec<u8> = (0..1_500_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
    std::fs::write(&extra, &data).expect("new file");
    sh_ok(Command::new("mcopy").env("MTOOLS_SKIP_CHECK", "1").args(["-i", &format!("{}@@1M", s(&src))]).arg(&extra).arg("::/EFI/New File.bin"));
    let out = rescue_ok(&["backup", "incr", s(&full), "--password-file", s(&pw)]);
    assert!(out.contains("pc.p002-incr.img"), "{out}");
    let incr = d.path().join("pc.p002-incr.img");

    let names = |img: &Path| ls(&[s(img), "--part", "1", "/EFI", "--password-file", s(&pw)]);
    assert!(names(&incr).contains_key("New File.bin"), "{:?}", names(&incr));
    assert!(!names(&full).contains_key("New File.bin"), "{:?}", names(&full));
    rescue_fails(&["ls", s(&incr), "--part", "1"], 2, "password");

    // Extract from the incremental point: its own file, byte for byte.
    let to = d.path().join("out");
    let x = |extra_args: &[&str]| {
        let mut a = vec!["extract", s(&incr), "--part", "1", "/efi/new file.bin", "/EFI/BOOT/grub.cfg", "--to", s(&to), "--password-file", s(&pw)];
        a.extend_from_slice(extra_args);
        a.iter().map(|x| x.to_string()).collect::<Vec<_>>()
    };
    let run = |a: &[String]| rescue_ok(&a.iter().map(String::as_str).collect::<Vec<_>>());
    run(&x(&[]));
    assert_eq!(std::fs::read(to.join("New File.bin")).expect("extracted"), data);
    let grub = to.join("grub.cfg");
    let want = std::fs::read(&grub).expect("grub.cfg");

    // Existing files are refused, kept, or replaced, as asked.
    std::fs::write(&grub, "changed").expect("change");
    let a = x(&[]);
    let out = rescue(&a.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("exists"), "{out:?}");
    assert_eq!(std::fs::read(&grub).expect("kept"), b"changed");
    let out = run(&x(&["--skip-existing"]));
    assert!(out.contains("2 skipped"), "{out}");
    assert_eq!(std::fs::read(&grub).expect("kept"), b"changed");
    run(&x(&["--overwrite"]));
    assert_eq!(std::fs::read(&grub).expect("replaced"), want);
    let leftovers: Vec<PathBuf> = std::fs::read_dir(&to).expect("dir").flatten().map(|e| e.path()).filter(|p| p.to_string_lossy().contains(".rescue-extract")).collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
}

#[test]
fn damaged_image_gives_a_clear_error() {
    let d = tempfile::tempdir().expect("tempdir");
    let img = d.path().join("b.img");
    rescue_ok(&["backup", "disk", s(sample_disk()), "-o", s(&img)]);
    // Partition 3's frames follow partition 2's index segments (each volume
    // starts with a 64-byte volume header): flip a byte in its first frame,
    // which holds the superblock.
    let info: serde_json::Value = serde_json::from_str(&rescue_ok(&["info", s(&img), "--json"])).expect("info json");
    let regions = info["catalog"]["regions"].as_array().expect("regions");
    let p2 = regions.iter().find(|r| r["partition"] == 2).expect("partition 2");
    let end = p2["segments"].as_array().expect("segments").iter().map(|s| s["offset"].as_u64().expect("offset") + s["stored_len"].as_u64().expect("len")).max().expect("a segment");
    let mut bytes = std::fs::read(&img).expect("read image");
    let at = (64 + end + 100) as usize;
    bytes[at] ^= 0xFF;
    std::fs::write(&img, &bytes).expect("write image");
    let err = rescue_fails(&["ls", s(&img), "--part", "3"], 4, "frame is damaged");
    assert!(err.contains("rescue check"), "{err}");
    rescue_fails(&["extract", s(&img), "--part", "3", "/", "--to", s(&d.path().join("out"))], 4, "damaged");
    // The other partitions are still readable.
    assert!(ls(&[s(&img), "--part", "1"]).contains_key("EFI"));
}

/// NTFS made by mkntfs and filled through ntfs-3g: folders, 300 files in one
/// folder (its index spills into INDX blocks), two files written in turns
/// (fragmented), a 10 MiB sparse file, a Unicode name, a hard link, a
/// symlink (ntfs-3g makes Interix links), set times, and a folder with NTFS
/// compression on (LZNT1 units and incompressible ones). `rescue ls` and
/// `rescue extract` must agree with ntfs-3g's own view of every byte and time.
#[test]
fn ntfs_files_match_ntfs_3g() {
    require_root();
    let d = tempfile::tempdir().expect("tempdir");
    let raw = d.path().join("ntfs.raw");
    std::fs::File::create(&raw).and_then(|f| f.set_len(48 << 20)).expect("ntfs file");
    sh_ok(Command::new("mkntfs").args(["-q", "-F", "-Q", "-L", "Data"]).arg(&raw));
    let src = d.path().join("src");
    {
        let _m = Mount::ntfs3g(&raw, &src, "rw,compression");
        for dir in ["Docs/Sub", "Many", "Packed"] {
            std::fs::create_dir_all(src.join(dir)).expect("dirs");
        }
        // FILE_ATTRIBUTE_COMPRESSED on the folder: new files in it are compressed.
        sh_ok(Command::new("setfattr").args(["-n", "system.ntfs_attrib_be", "-v", "0x00000810"]).arg(src.join("Packed")));
        for i in 0..300 {
            std::fs::write(src.join(format!("Many/file number {i}.txt")), format!("file {i}\n").repeat(i % 7 * 40)).expect("many");
        }
        let text: String = (0..20_000).map(|i| format!("line {i} of a compressible text\n")).collect();
        std::fs::write(src.join("Packed/text.txt"), &text).expect("packed text");
        let noise: Vec<u8> = (0..300_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(src.join("Packed/noise.bin"), &noise).expect("packed noise");
        {
            use std::io::Write;
            let mut a = std::fs::File::create(src.join("Docs/a.bin")).expect("a");
            let mut b = std::fs::File::create(src.join("Docs/b.bin")).expect("b");
            for i in 0..48u32 {
                let block: Vec<u8> = (0..65536u32).map(|j| (j ^ i.wrapping_mul(77)) as u8).collect();
                a.write_all(&block).and_then(|()| a.sync_data()).expect("write a");
                b.write_all(&block[..40_000]).and_then(|()| b.sync_data()).expect("write b");
            }
        }
        {
            use std::io::{Seek, SeekFrom, Write};
            let mut f = std::fs::File::create(src.join("Docs/sparse.bin")).expect("sparse");
            f.seek(SeekFrom::Start(10 << 20)).expect("seek");
            f.write_all(b"tail").expect("tail");
        }
        std::fs::write(src.join("Docs/Ünïcödé ✓.txt"), "unicode\n").expect("unicode");
        std::fs::hard_link(src.join("Docs/Ünïcödé ✓.txt"), src.join("Docs/Sub/hard link.txt")).expect("hard link");
        std::os::unix::fs::symlink("Docs/Sub", src.join("to-sub")).expect("symlink");
        sh_ok(Command::new("touch").args(["-m", "-d", "2011-03-04 05:06:07.123456700 UTC"]).arg(src.join("Docs/a.bin")));
        sh_ok(Command::new("touch").args(["-m", "-d", "1999-12-31 23:59:59 UTC"]).arg(src.join("Docs/Sub")));
    }
    // A GPT disk with the filesystem as partition 1, backed up.
    let disk = d.path().join("disk.img");
    std::fs::File::create(&disk).and_then(|f| f.set_len(50 << 20)).expect("disk");
    let mut sf = Command::new("sfdisk");
    sf.arg("-q").arg(&disk).stdin(std::process::Stdio::piped());
    let mut child = sf.spawn().expect("sfdisk");
    std::io::Write::write_all(child.stdin.as_mut().expect("stdin"), b"label: gpt\nstart=2048, size=98304, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n").expect("sfdisk script");
    assert!(child.wait().expect("sfdisk").success());
    sh_ok(Command::new("dd").arg(format!("if={}", s(&raw))).arg(format!("of={}", s(&disk))).args(["bs=1M", "seek=1", "conv=notrunc,sparse", "status=none"]));
    let img = d.path().join("b.img");
    rescue_ok(&["backup", "disk", s(&disk), "-o", s(&img)]);

    let m = d.path().join("ro");
    let _ro = Mount::ntfs3g(&raw, &m, "ro");
    // Listings: names, kinds and sizes as ntfs-3g shows them.
    for dir in ["/", "/Docs", "/Docs/Sub", "/Many", "/Packed"] {
        let got = ls(&[s(&img), "--part", "1", dir]);
        let mut want = BTreeMap::new();
        for e in std::fs::read_dir(m.join(dir.trim_start_matches('/'))).expect("read_dir") {
            let e = e.expect("entry");
            let md = std::fs::symlink_metadata(e.path()).expect("metadata");
            let kind = if md.is_dir() { "dir" } else if md.is_symlink() { "symlink" } else { "file" };
            let size = if md.is_file() { md.len() } else { 0 };
            want.insert(e.file_name().to_string_lossy().into_owned(), (kind.to_string(), size, None));
        }
        assert_eq!(got, want, "NTFS listing of {dir}");
    }
    let text = rescue_ok(&["ls", s(&img), "--part", "1", "/"]);
    assert!(text.lines().any(|l| l.ends_with("to-sub -> Docs/Sub")), "{text}");
    // Case-insensitive lookup, as on Windows.
    assert!(ls(&[s(&img), "--part", "1", "/docs/SUB"]).contains_key("hard link.txt"));

    // Every file, byte for byte with its mtime; folders' times; the link.
    let out = d.path().join("out");
    rescue_ok(&["extract", s(&img), "--part", "1", "/", "--to", s(&out)]);
    let want = files_of(&m);
    assert!(want.len() > 300, "{}", want.len());
    assert_eq!(files_of(&out), want, "NTFS files differ from ntfs-3g's (content, size or mtime)");
    let mtime = |p: &Path| std::fs::symlink_metadata(p).expect("metadata").modified().expect("mtime");
    assert_eq!(mtime(&out.join("Docs/Sub")), mtime(&m.join("Docs/Sub")), "folder time");
    assert_eq!(std::fs::read_link(out.join("to-sub")).expect("link"), Path::new("Docs/Sub"));
    assert_eq!(
        std::fs::metadata(out.join("Docs/a.bin")).expect("a.bin").modified().expect("mtime"),
        std::time::UNIX_EPOCH + std::time::Duration::new(1_299_215_167, 123_456_700),
        "sub-second times are kept"
    );
}
