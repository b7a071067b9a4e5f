//! Partition tables against the real tools: fixtures made by sfdisk/sgdisk
//! (scripts/fixtures/gen-part.sh, listed in tests/fixtures/part/INDEX) are
//! read, written back onto fresh sparse files of the same and a larger size,
//! and checked with `sfdisk --dump`, `sgdisk -v` and `fdisk -b 4096`.
//!
//! Tests that run a tool print a note and skip that step when the tool is
//! missing (apt packages: fdisk, gdisk).

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use imaging::part::{self, PartError, PartType, PartitionTable, TableKind};
use imaging::ReadAt;

const MIB: u64 = 1 << 20;

struct Fixture {
    name: String,
    size: u64,
    ss: u32,
    head: Vec<u8>,
    tail: Vec<u8>,
}

/// A disk rebuilt from its head and last MiB; zeros in between.
impl ReadAt for Fixture {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> std::io::Result<()> {
        offset
            .checked_add(buf.len() as u64)
            .filter(|&e| e <= self.size)
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past the end")
            })?;
        let tail_start = self.size - self.tail.len() as u64;
        for (i, b) in buf.iter_mut().enumerate() {
            let o = offset + i as u64;
            *b = if o < self.head.len() as u64 {
                self.head[o as usize]
            } else if o >= tail_start {
                self.tail[(o - tail_start) as usize]
            } else {
                0
            };
        }
        Ok(())
    }
}

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/part")
}

fn fixture(name: &str) -> Fixture {
    let index = std::fs::read_to_string(fixture_dir().join("INDEX")).expect("INDEX");
    let line = index
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not in INDEX"));
    let mut w = line.split_whitespace();
    let _ = w.next();
    let size: u64 = w.next().and_then(|s| s.parse().ok()).expect("size");
    let ss: u32 = w.next().and_then(|s| s.parse().ok()).expect("sector size");
    let head_len: usize = w.next().and_then(|s| s.parse().ok()).expect("head bytes");
    let z = std::fs::read(fixture_dir().join(format!("{name}.zst"))).expect("fixture file");
    let raw = zstd::decode_all(&z[..]).expect("zstd");
    assert_eq!(raw.len(), head_len + MIB as usize, "{name}: head + tail");
    let (head, tail) = raw.split_at(head_len);
    Fixture {
        name: name.to_string(),
        size,
        ss,
        head: head.to_vec(),
        tail: tail.to_vec(),
    }
}

const TABLES: &[&str] = &[
    "mbr-logical",
    "mbr-logical-4k",
    "gpt-win-linux",
    "gpt-4k",
    "gpt-sfdisk",
    "gpt-hybrid",
    "gpt-bad-primary-header",
    "gpt-bad-primary-entries",
];

fn read(f: &Fixture) -> PartitionTable {
    part::read(f, f.size, f.ss)
        .unwrap_or_else(|e| panic!("{}: {e}", f.name))
        .unwrap_or_else(|| panic!("{}: no table", f.name))
}

/// Write the fixture itself as a sparse file (so the tools can dump it).
fn write_fixture(f: &Fixture, path: &Path) {
    let file = File::create(path).expect("create");
    file.set_len(f.size).expect("set_len");
    file.write_all_at(&f.head, 0).expect("write head");
    file.write_all_at(&f.tail, f.size - f.tail.len() as u64)
        .expect("write tail");
}

fn write_table(path: &Path, size: u64, writes: &[part::SectorWrite]) {
    let file = File::create(path).expect("create");
    file.set_len(size).expect("set_len");
    for w in writes {
        file.write_all_at(&w.data, w.offset).expect("write");
    }
}

fn have(tool: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output().is_ok();
    if !ok {
        eprintln!("note: {tool} not installed, skipping that check (apt-get install fdisk gdisk)");
    }
    ok
}

fn run(cmd: &str, args: &[&str], stdin: Option<&str>) -> (bool, String) {
    use std::io::Write;
    use std::process::Stdio;
    let mut c = Command::new(cmd);
    c.args(args).stdout(Stdio::piped()).stderr(Stdio::piped());
    if stdin.is_some() {
        c.stdin(Stdio::piped());
    }
    let mut child = c.spawn().expect("spawn");
    if let Some(s) = stdin {
        child
            .stdin
            .take()
            .expect("stdin")
            .write_all(s.as_bytes())
            .expect("feed stdin");
    }
    let out = child.wait_with_output().expect("wait");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A tool's view of the table with file names and (optionally) the disk-end
/// dependent lines removed, for comparing two disks.
fn dump(path: &Path, t: &PartitionTable, keep_last_lba: bool) -> Option<String> {
    let ss = t.sector_size;
    let p = path.to_str().expect("utf-8 path");
    let text = if ss == 512 {
        if !have("sfdisk") {
            return None;
        }
        let (ok, out) = run("sfdisk", &["--dump", p], None);
        assert!(ok, "sfdisk --dump {p}: {out}");
        out
    } else {
        // sfdisk 2.38 has no --sector-size; fdisk -b can list an image file.
        if !have("fdisk") {
            return None;
        }
        let cols = match t.kind {
            TableKind::Gpt => "Device,Start,Sectors,Type-UUID,UUID,Name,Attrs",
            TableKind::Mbr => "Device,Boot,Start,Sectors,Id",
        };
        let (ok, out) = run("fdisk", &["-b", "4096", "-l", "-o", cols, p], None);
        assert!(ok, "fdisk -l {p}: {out}");
        out
    };
    let name = path.file_name().expect("name").to_str().expect("utf-8");
    Some(
        text.lines()
            .filter(|l| {
                !l.starts_with("device:") && !l.starts_with("Disk ")
                    || l.starts_with("Disk identifier")
            })
            .filter(|l| keep_last_lba || !l.starts_with("last-lba:"))
            .map(|l| {
                l.replace(p, "DISK")
                    .replace(name, "DISK")
                    .split_whitespace()
                    .collect::<Vec<_>>()
                    .join(" ")
            })
            .collect::<Vec<_>>()
            .join("\n"),
    )
}

/// The tools' own consistency checks of a written disk.
fn verify(path: &Path, t: &PartitionTable) {
    let p = path.to_str().expect("utf-8 path");
    if t.sector_size == 512 {
        if t.kind == TableKind::Gpt && have("sgdisk") {
            let (ok, out) = run("sgdisk", &["-v", p], None);
            assert!(
                ok && out.contains("No problems found"),
                "sgdisk -v {p}:\n{out}"
            );
        }
        if have("sfdisk") {
            let (ok, out) = run("sfdisk", &["--verify", p], None);
            assert!(ok, "sfdisk --verify {p}:\n{out}");
            assert!(
                out.contains("No errors detected"),
                "sfdisk --verify {p}:\n{out}"
            );
        }
    } else if have("fdisk") {
        let (_, out) = run("fdisk", &["-b", "4096", p], Some("v\nq\n"));
        assert!(
            out.contains("No errors detected"),
            "fdisk -b 4096 verify {p}:\n{out}"
        );
        assert!(
            !out.contains("corrupt") && !out.contains("mismatch"),
            "fdisk {p}:\n{out}"
        );
    }
}

/// Which healthy fixture a damaged/hybrid one was made from (their tables
/// must read the same).
fn healthy(name: &str) -> &str {
    match name {
        "gpt-hybrid" | "gpt-bad-primary-header" | "gpt-bad-primary-entries" => "gpt-win-linux",
        n => n,
    }
}

/// The module name ends in `part` so `cargo test -p imaging part::` runs these too.
mod imaging_part {
    use super::*;

    #[test]
    fn fixtures_read_as_made() {
        let t = read(&fixture("mbr-logical"));
        assert_eq!(t.kind, TableKind::Mbr);
        assert_eq!(t.disk_id, "12345678");
        assert_eq!(t.max_entries, 4);
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        let nums: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
        assert_eq!(nums, [1, 2, 3, 5, 6, 7, 8]);
        let p = &t.partitions;
        assert!(
            p[0].bootable
                && p[0].ptype == PartType::Mbr(0x0c)
                && p[0].start == 2048 * 512
                && p[0].len == 2 * MIB
        );
        assert!(p[2].ptype.is_extended() && !p[2].logical);
        assert!(p[3..].iter().all(|p| p.logical));
        assert!(p[4].ptype.is_swap() && p[5].ptype.is_windows_data() && p[6].ptype.is_linux_data());
        assert_eq!(
            p[3].start,
            p[2].start + MIB,
            "first logical 1 MiB after its EBR"
        );

        let t = read(&fixture("mbr-logical-4k"));
        assert_eq!((t.sector_size, t.disk_id.as_str()), (4096, "cafe0042"));
        let nums: Vec<u32> = t.partitions.iter().map(|p| p.number).collect();
        assert_eq!(nums, [1, 2, 5, 6, 7]);
        assert!(t.partitions[0].ptype.is_esp() && t.partitions[1].ptype == PartType::Mbr(0x0f));
        assert_eq!(t.partitions[0].start, MIB);

        let t = read(&fixture("gpt-win-linux"));
        assert_eq!(t.kind, TableKind::Gpt);
        assert!(t.warnings.is_empty(), "{:?}", t.warnings);
        assert_eq!(t.disk_id, "5e1f7b7c-1111-4a4a-9b9b-0123456789ab");
        assert_eq!(
            (t.first_usable, t.last_usable, t.max_entries),
            (34 * 512, (204800 - 33) * 512, 128)
        );
        let names: Vec<&str> = t.partitions.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "EFI system partition",
                "Microsoft reserved partition",
                "Basic data partition",
                "Recovery",
                "linux root ünïcode",
                "swap"
            ]
        );
        let p = &t.partitions;
        assert!(p[0].ptype.is_esp() && p[1].ptype.is_msr() && p[2].ptype.is_windows_data());
        assert!(
            p[3].ptype.is_windows_recovery() && p[4].ptype.is_linux_data() && p[5].ptype.is_swap()
        );
        assert_eq!(p[3].attributes, 1 | 1 << 63);
        assert_eq!(
            p[4].guid.as_deref(),
            Some("11111111-2222-4333-8444-555555555505")
        );
        assert_eq!((p[0].start, p[0].len), (MIB, 16 * MIB));
        assert_eq!(p[0].ptype.describe(), "EFI System");
        assert_eq!(p[3].ptype.describe(), "Windows recovery environment");

        let t = read(&fixture("gpt-4k"));
        assert_eq!(
            (t.sector_size, t.first_usable, t.max_entries),
            (4096, 6 * 4096, 128)
        );
        assert!(t.partitions[0].ptype.is_bios_boot() && t.partitions[1].ptype.is_esp());
        assert_eq!(t.partitions[2].start, 8192 * 4096);

        let t = read(&fixture("gpt-sfdisk"));
        let v: Vec<(u32, u64, &str)> = t
            .partitions
            .iter()
            .map(|p| (p.number, p.start / 512, p.name.as_str()))
            .collect();
        assert_eq!(
            v,
            [
                (2, 2048, "first"),
                (1, 18432, "second"),
                (4, 40960, "fourth")
            ]
        );
        assert_eq!(t.partitions[0].attributes, 1 | 4 | 1 << 60);

        let good = read(&fixture("gpt-win-linux"));
        for (name, warning) in [
            ("gpt-hybrid", "hybrid MBR"),
            ("gpt-bad-primary-header", "used the backup"),
            ("gpt-bad-primary-entries", "used the backup"),
        ] {
            let t = read(&fixture(name));
            assert_eq!(t.partitions, good.partitions, "{name}");
            assert_eq!(t.disk_id, good.disk_id, "{name}");
            assert!(
                t.warnings.iter().any(|w| w.contains(warning)),
                "{name}: {:?}",
                t.warnings
            );
        }

        let f = fixture("superfloppy-fat");
        assert_eq!(part::read(&f, f.size, 512).expect("read"), None);
    }

    #[test]
    fn wrong_sector_size_is_named() {
        let f = fixture("gpt-4k");
        match part::read(&f, f.size, 512) {
            Err(PartError::SectorSizeMismatch {
                given: 512,
                found: 4096,
            }) => {}
            other => panic!("{other:?}"),
        }
        let f = fixture("gpt-win-linux");
        match part::read(&f, f.size, 4096) {
            Err(PartError::SectorSizeMismatch {
                given: 4096,
                found: 512,
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    /// read → serialize onto a fresh sparse file of the same and of a larger
    /// size → the tools verify it and dump the same table; read(serialize(t)) == t.
    #[test]
    fn round_trip_through_the_tools() {
        let dir = tempfile::tempdir().expect("tempdir");
        for name in TABLES {
            let f = fixture(name);
            let t = read(&f);
            let orig = dir.path().join(format!("{name}-orig.img"));
            write_fixture(&fixture(healthy(name)), &orig);

            for (label, size) in [("same", f.size), ("larger", f.size + 3 * 64 * MIB + 4096)] {
                let out = dir.path().join(format!("{name}-{label}.img"));
                let writes = part::serialize(&t, size, Some(&f.head[..512]))
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
                write_table(&out, size, &writes);

                // What we wrote is exactly what table_extents announces.
                let ext = part::table_extents(&t, size);
                let written: u64 = writes.iter().map(|w| w.data.len() as u64).sum();
                assert_eq!(imaging::extent::total(&ext), written, "{name} {label}");
                for w in &writes {
                    assert!(
                        ext.iter()
                            .any(|e| e.start <= w.offset
                                && w.offset + w.data.len() as u64 <= e.end()),
                        "{name} {label}: write at {} outside {ext:?}",
                        w.offset
                    );
                }

                let file = File::open(&out).expect("open");
                let back = part::read(&file, size, t.sector_size)
                    .unwrap_or_else(|e| panic!("{name} {label}: {e}"))
                    .expect("a table");
                assert!(
                    back.warnings.is_empty(),
                    "{name} {label}: {:?}",
                    back.warnings
                );
                assert_eq!(back.partitions, t.partitions, "{name} {label}");
                if label == "same" {
                    let mut want = t.clone();
                    want.warnings.clear();
                    assert_eq!(back, want, "{name}: read(serialize(t)) == t");
                }

                verify(&out, &t);
                if let (Some(a), Some(b)) = (dump(&orig, &t, false), dump(&out, &t, false)) {
                    assert_eq!(a, b, "{name} {label}: dump differs");
                }
            }
        }
    }

    /// On the same disk size, the GPT structures we write are byte-identical to
    /// what sgdisk/sfdisk wrote (header, entry array, backup), and MBR/EBR
    /// entries sit in the same sectors with the same LBA fields as sfdisk's.
    #[test]
    fn writes_match_the_tools_bytes() {
        for name in [
            "gpt-win-linux",
            "gpt-4k",
            "gpt-sfdisk",
            "mbr-logical",
            "mbr-logical-4k",
        ] {
            let f = fixture(name);
            let t = read(&f);
            let writes = part::serialize(&t, f.size, Some(&f.head)).expect("serialize");
            let ss = f.ss as usize;
            for w in &writes {
                let mut orig = vec![0u8; w.data.len()];
                f.read_exact_at(&mut orig, w.offset).expect("read orig");
                if t.kind == TableKind::Gpt {
                    // Skip the protective MBR sector (tools differ in CHS details).
                    let skip = if w.offset == 0 { ss } else { 0 };
                    assert!(
                        orig[skip..] == w.data[skip..],
                        "{name}: bytes at {} differ",
                        w.offset
                    );
                    if w.offset == 0 {
                        assert_eq!(orig[446 + 4], 0xee);
                        assert_eq!(
                            orig[446 + 8..446 + 16],
                            w.data[446 + 8..446 + 16],
                            "{name}: 0xEE LBAs"
                        );
                    }
                } else {
                    assert_eq!(
                        &orig[510..512],
                        &[0x55, 0xaa],
                        "{name}: no EBR/MBR at {}",
                        w.offset
                    );
                    for slot in 0..4 {
                        let e = 446 + 16 * slot;
                        assert_eq!(
                            orig[e..e + 16],
                            w.data[e..e + 16],
                            "{name}: entry {slot} at {}",
                            w.offset
                        );
                    }
                    assert_eq!(orig[..446], w.data[..446], "{name}: boot code / signature");
                }
            }
        }
    }

    #[test]
    fn translate_4k_gpt_to_512_and_back() {
        let dir = tempfile::tempdir().expect("tempdir");
        let f = fixture("gpt-4k");
        let t = read(&f);
        let t512 = part::translate(&t, 512).expect("to 512");
        assert_eq!(t512.partitions, t.partitions, "byte offsets unchanged");
        assert_eq!(t512.first_usable, t.first_usable);
        let out = dir.path().join("as512.img");
        write_table(
            &out,
            f.size,
            &part::serialize(&t512, f.size, None).expect("serialize 512"),
        );
        verify(&out, &t512);
        let file = File::open(&out).expect("open");
        let back = part::read(&file, f.size, 512)
            .expect("read")
            .expect("table");
        assert_eq!(back.partitions, t.partitions);
        assert_eq!(back.last_usable, t512.last_usable);
        let again = part::translate(&back, 4096).expect("back to 4096");
        assert_eq!(again, t, "4096 -> 512 -> 4096");

        // 512-byte GPT to 4096: works when aligned (this one is, 1 MiB layout).
        let w = read(&fixture("gpt-win-linux"));
        let w4 = part::translate(&w, 4096).expect("aligned layout");
        assert_eq!(w4.first_usable, 6 * 4096);
        let out = dir.path().join("as4k.img");
        write_table(
            &out,
            100 * MIB,
            &part::serialize(&w4, 100 * MIB, None).expect("serialize 4k"),
        );
        verify(&out, &w4);

        // MBR too.
        let m = read(&fixture("mbr-logical-4k"));
        let m512 = part::translate(&m, 512).expect("mbr to 512");
        let out = dir.path().join("mbr512.img");
        write_table(
            &out,
            24 * MIB,
            &part::serialize(&m512, 24 * MIB, None).expect("serialize"),
        );
        verify(&out, &m512);
        let file = File::open(&out).expect("open");
        assert_eq!(
            part::read(&file, 24 * MIB, 512)
                .expect("read")
                .expect("table")
                .partitions,
            m.partitions
        );
    }

    #[test]
    fn translate_refuses_misaligned_layouts() {
        let mut t = read(&fixture("gpt-win-linux"));
        t.partitions[2].start += 512;
        t.partitions[2].len -= 512;
        assert!(matches!(
            part::translate(&t, 4096),
            Err(PartError::Misaligned { .. })
        ));

        // First partition at LBA 40 (byte 20480, 4 KiB aligned): a 4096-byte
        // GPT's primary array ends at byte 24576, over the partition.
        let mut t = read(&fixture("gpt-win-linux"));
        t.partitions[0].start = 40 * 512;
        assert!(matches!(
            part::translate(&t, 4096),
            Err(PartError::OutsideUsable { number: 1, .. })
        ));
    }

    /// A GPT on a disk larger than 2 TiB (protective MBR saturates at
    /// 0xFFFFFFFF sectors), checked by sgdisk on a sparse file.
    #[test]
    fn gpt_on_a_disk_over_2tib() {
        let dir = tempfile::tempdir().expect("tempdir");
        let t = read(&fixture("gpt-win-linux"));
        let size = 3 << 40;
        let writes = part::serialize(&t, size, None).expect("serialize");
        assert_eq!(&writes[0].data[446 + 12..446 + 16], &[0xff; 4]);
        let out = dir.path().join("big.img");
        if File::create(&out).and_then(|f| f.set_len(size)).is_err() {
            eprintln!("note: the temp filesystem cannot hold a 3 TiB sparse file, skipped");
            return;
        }
        write_table(&out, size, &writes);
        verify(&out, &t);
        let file = File::open(&out).expect("open");
        let back = part::read(&file, size, 512).expect("read").expect("table");
        assert_eq!(back.partitions, t.partitions);
        assert_eq!(back.last_usable, size - 33 * 512);
    }
}
