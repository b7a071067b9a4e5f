//! End-to-end tests of the media: build them all twice from the Debian
//! kernel package and the static (musl) `rescue` and `rescue-init`, check
//! that the builds are bit-identical, boot them in qemu (kernel + initramfs
//! with disks on virtio, AHCI and NVMe and DHCP on qemu's user network; the
//! ISO from CD and as a hard disk; the USB image from a virtio disk under
//! SeaBIOS and a USB stick under OVMF; the ISO from CD and the USB image
//! from a stick under OVMF with Secure Boot enforced (Microsoft keys); an
//! unsigned kernel that Secure Boot must reject), and write the USB image to a disk image file (and, as
//! root, a loop device) with `--write`.
//!
//! Needs: the rustup target `x86_64-unknown-linux-musl`, `musl-tools`,
//! `qemu-system-x86`, `ovmf`, `cpio`, `exfatprogs`, `e2fsprogs`, the tools
//! of `scripts/make-sample-disk`, and the Debian packages in the cache
//! (`apt-get download` fetches them once; the cache is
//! `$RESCUE_BUILD_CACHE` or `~/.cache/rescue-image-builder`).
//! The musl binaries are built by `scripts/build-media --binaries-only` into
//! `$RESCUE_MEDIA_TARGET_DIR` (default `target/media`; a separate target
//! dir, so the outer `cargo test` lock is not in the way): ~10 minutes cold
//! on 2 cores, ~4 after a change in `imaging` or `rescue-tui` (LTO release
//! build), seconds otherwise.
//!
//! `RESCUE_SKIP_MEDIA_TESTS=1` skips these tests (and says so);
//! `RESCUE_BOOT_MATRIX=0` leaves out the ISO as a hard disk, Secure Boot
//! and the unsigned kernel (~2 minutes less under TCG, for quick runs while
//! working; CI runs them all). Outputs go to `$CARGO_TARGET_TMPDIR/media`; the boots run
//! in parallel threads, and a failed boot prints the tail of its serial log
//! (the whole log is `media/boot-test/NAME.log`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("crate is in the workspace")
        .to_path_buf()
}

/// Where the tests put media, logs and disks.
fn work() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("media")
}

fn matrix() -> bool {
    std::env::var_os("RESCUE_BOOT_MATRIX").is_none_or(|v| v != "0")
}

fn skip() -> bool {
    if std::env::var_os("RESCUE_SKIP_MEDIA_TESTS").is_some_and(|v| v != "0") {
        eprintln!("SKIPPED: RESCUE_SKIP_MEDIA_TESTS is set");
        return true;
    }
    false
}

/// (rescue, rescue-init), built once per test run.
fn musl_binaries() -> &'static (PathBuf, PathBuf) {
    static BINS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    BINS.get_or_init(|| {
        let ws = workspace();
        let st = Command::new(ws.join("scripts/build-media"))
            .arg("--binaries-only")
            .current_dir(&ws)
            .status()
            .expect("running scripts/build-media --binaries-only");
        assert!(
            st.success(),
            "scripts/build-media --binaries-only failed ({st}); see its output above"
        );
        let target = std::env::var_os("RESCUE_MEDIA_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| ws.join("target/media"));
        let dir = target.join("x86_64-unknown-linux-musl/release");
        (dir.join("rescue"), dir.join("rescue-init"))
    })
}

/// `image-builder CMD -o OUT --rescue .. --init .. EXTRA...`
fn build_media(cmd: &str, out: &Path, extra: &[&str]) {
    let (rescue, init) = musl_binaries();
    let t = Instant::now();
    let o = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .arg(cmd)
        .arg("-o")
        .arg(out)
        .arg("--rescue")
        .arg(rescue)
        .arg("--init")
        .arg(init)
        .args(extra)
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("running image-builder");
    assert!(
        o.status.success(),
        "image-builder {cmd} failed:\n{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    eprintln!(
        "built {cmd} {} in {:.1} s:\n{}",
        out.display(),
        t.elapsed().as_secs_f64(),
        String::from_utf8_lossy(&o.stderr)
    );
}

/// Kernel arguments of the boot menus of the test media: run `rescue
/// disks` once on the serial console, then power off.
const APPEND: &str = "console=ttyS0 rescue.run=disks";

/// The media of the default configuration (menus with [`APPEND`]), built
/// once with `image-builder all`: kernel, initramfs, ISO, USB image, PXE.
fn default_media() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = work().join("test-a");
        build_media("all", &dir, &["--append", APPEND]);
        dir
    })
}

#[test]
fn initramfs_is_reproducible_and_complete() {
    if skip() {
        return;
    }
    // The second build runs beside the first (which the boot tests wait for).
    let b = work().join("test-b");
    let second = std::thread::spawn({
        let b = b.clone();
        move || build_media("all", &b, &["--append", APPEND])
    });
    let a = default_media();
    second.join().expect("second build");
    for f in [
        "initramfs.img",
        "vmlinuz",
        "rescue.iso",
        "rescue-usb.img",
        "SHA256SUMS",
    ] {
        let (x, y) = (
            std::fs::read(a.join(f)).expect("first build"),
            std::fs::read(b.join(f)).expect("second build"),
        );
        assert!(
            x == y,
            "{f} differs between two builds with the same SOURCE_DATE_EPOCH"
        );
    }
    let iso = std::fs::metadata(a.join("rescue.iso")).expect("iso").len();
    assert!(
        iso < 40_000_000,
        "ISO is {iso} bytes, over the 40 MB budget"
    );
    eprintln!("ISO: {iso} bytes");
    // The content, listed by GNU cpio from the decompressed archive.
    let img = std::fs::read(a.join("initramfs.img")).expect("built");
    let cpio = zstd_decompress(&img);
    let mut child = Command::new("cpio")
        .args(["-t", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("cpio installed");
    let mut stdin = child.stdin.take().expect("piped");
    let writer = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &cpio));
    let mut list = String::new();
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_string(&mut list)
        .expect("cpio output");
    writer
        .join()
        .expect("writer thread")
        .expect("writing to cpio");
    assert!(child.wait().expect("cpio").success());
    for want in [
        "init",
        "usr/bin/rescue",
        "sbin/modprobe",
        "usr/sbin/resize2fs",
        "usr/sbin/e2fsck",
        "usr/sbin/ntfsresize",
        "usr/sbin/losetup",
        "usr/bin/ntfsfix",
        "usr/sbin/dumpe2fs",
        "lib/x86_64-linux-gnu/libext2fs.so.2",
        "dev/console",
    ] {
        assert!(
            list.lines().any(|l| l == want),
            "{want} missing from the initramfs"
        );
    }
    for m in [
        "nvme.ko",
        "ahci.ko",
        "virtio_blk.ko",
        "e1000e.ko",
        "r8169.ko",
        "usb-storage.ko",
        "ext4.ko",
        "fuse.ko",
        "vmd.ko",
    ] {
        assert!(
            list.lines().any(|l| l.ends_with(&format!("/{m}"))),
            "module {m} missing"
        );
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("build-report.json")).expect("report"))
            .expect("report is JSON");
    assert!(report["modules"].as_array().is_some_and(|m| m.len() > 100));
    // Every firmware file the report lists is in the archive (which ones
    // depends on the Debian firmware packages being fetched: firmware.rs).
    for fw in report["firmware_included"].as_array().expect("firmware_included") {
        let fw = fw.as_str().expect("a path");
        assert!(
            list.lines().any(|l| l == format!("lib/firmware/{fw}")),
            "firmware {fw} listed as included but not in the initramfs"
        );
    }
    assert!(report["outputs"].as_array().is_some_and(|o| o.len() >= 2));

    // The PXE bundle: the manifest lists every file with its checksum.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(a.join("pxe/manifest.json")).expect("manifest"))
            .expect("manifest is JSON");
    assert_eq!(manifest["format"], "rescue-pxe-bundle");
    assert_eq!(manifest["version"], 1);
    let files = manifest["files"].as_array().expect("files");
    for role in ["kernel", "initrd", "ipxe_script", "grub_cfg"] {
        let name = manifest[role].as_str().expect("role names a file");
        assert!(
            files.iter().any(|f| f["name"] == name),
            "{role} {name} not in files"
        );
    }
    for f in files {
        let name = f["name"].as_str().expect("name");
        let data = std::fs::read(a.join("pxe").join(name)).expect("bundle file exists");
        assert_eq!(
            data.len() as u64,
            f["size"].as_u64().expect("size"),
            "{name}"
        );
    }
    let pxe_sums = std::fs::read(a.join("pxe/SHA256SUMS")).expect("sums");
    assert_eq!(
        pxe_sums,
        std::fs::read(b.join("pxe/SHA256SUMS")).expect("sums"),
        "PXE bundle differs between builds"
    );
}

/// Every boot at once, each qemu in its own thread (TCG shares two cores
/// better than it waits for one): the kernel + initramfs with a disk on
/// virtio, AHCI and NVMe and a NIC on qemu's user network (DHCP from SLIRP);
/// the hybrid ISO from the CD drive (SeaBIOS); the USB image as a virtio
/// disk (SeaBIOS: GRUB i386-pc from the BIOS boot partition) and as a USB
/// stick on xHCI under OVMF (shim + signed GRUB from the ESP). Unless
/// `RESCUE_BOOT_MATRIX=0`, also the ISO as a hard disk, the ISO and the USB
/// image under OVMF with Secure Boot enforced (Microsoft keys: shim ->
/// Debian's GRUB -> Debian's kernel, locked down), and the USB image with
/// an unsigned kernel, which Secure Boot must reject. Each case must power
/// off after `rescue disks` and show its texts on the serial console.
#[test]
fn boots_kernel_iso_and_usb_image() {
    if skip() {
        return;
    }
    let media = default_media();
    let disk = sample_disk();
    let d = disk.display().to_string();
    let vd = format!("file={d},format=raw,if=virtio,snapshot=on");
    let iso = media.join("rescue.iso").display().to_string();
    let stick = media.join("rescue-usb.img").display().to_string();
    let mut cases: Vec<(&str, Vec<String>, &[&str])> = vec![
        (
            "kernel-initrd",
            strings(&[
                "-kernel",
                &media.join("vmlinuz").display().to_string(),
                "-initrd",
                &media.join("initramfs.img").display().to_string(),
                "-append",
                "console=ttyS0 rescue.run=disks panic=-1 ip=dhcp rescue.server=10.0.2.2:8080",
                "-drive",
                &vd,
                "-device",
                "ich9-ahci,id=ahci",
                "-drive",
                &format!("id=sata0,file={d},if=none,format=raw,snapshot=on"),
                "-device",
                "ide-hd,drive=sata0,bus=ahci.0",
                "-drive",
                &format!("id=nvme0,file={d},if=none,format=raw,snapshot=on"),
                "-device",
                "nvme,serial=rescue0001,drive=nvme0",
                // An Intel e1000 on qemu's user network: its DHCP server
                // hands out 10.0.2.15; no traffic leaves the process.
                "-nic",
                "user,model=e1000",
            ]),
            &[
                "/dev/vda",
                "/dev/sda",
                "/dev/nvme0n1",
                "ext4 \"linux\"",
                "ntfs \"Windows\"",
                "rescue-init: network eth0 10.0.2.15/24 via 10.0.2.2",
            ],
        ),
        (
            "iso-cd",
            strings(&["-cdrom", &iso, "-boot", "d", "-drive", &vd]),
            &["/dev/vda"],
        ),
        (
            "usb-seabios-virtio",
            strings(&[
                "-drive",
                &format!("file={stick},format=raw,if=virtio,snapshot=on"),
                "-drive",
                &vd,
            ]),
            &["GRUB loading", "/dev/vda", "/dev/vdb"],
        ),
    ];
    let usb_stick = |name: &str, secure: bool| {
        ovmf(name, secure).map(|mut args| {
            args.extend(strings(&[
                "-device",
                "qemu-xhci",
                "-drive",
                &format!("id=stick,file={stick},format=raw,if=none,snapshot=on"),
                "-device",
                "usb-storage,drive=stick,bootindex=0",
                "-drive",
                &vd,
            ]));
            args
        })
    };
    match usb_stick("usb-ovmf-stick", false) {
        Some(args) => cases.push((
            "usb-ovmf-stick",
            args,
            &["Secure boot disabled", "/dev/vda"],
        )),
        None => eprintln!("SKIPPED the OVMF boots: apt-get install ovmf"),
    }
    let mut unsigned_case = None;
    if matrix() {
        cases.push((
            "iso-hd",
            strings(&[
                "-drive",
                &format!("file={iso},format=raw,if=ide,snapshot=on"),
                "-drive",
                &vd,
            ]),
            &["/dev/vda"],
        ));
        if let Some(mut args) = ovmf("iso-cd-ovmf-secboot", true) {
            args.extend(strings(&["-cdrom", &iso, "-drive", &vd]));
            cases.push((
                "iso-cd-ovmf-secboot",
                args,
                &["Secure boot enabled", "/dev/vda"],
            ));
        }
        if let Some(args) = usb_stick("usb-ovmf-secboot", true) {
            cases.push((
                "usb-ovmf-secboot",
                args,
                &["Secure boot enabled", "/dev/vda"],
            ));
        }
        // The USB image again, with the kernel's Authenticode signature
        // removed.
        let unsigned = work().join("rescue-usb-unsigned.img");
        let kernel = strip_signature(&std::fs::read(media.join("vmlinuz")).expect("kernel"));
        image_builder::usb::write(
            &unsigned,
            &image_builder::deb::Cache::new(image_builder::default_cache_dir()),
            &kernel,
            &std::fs::read(media.join("initramfs.img")).expect("initramfs"),
            &image_builder::usb::Options {
                append: APPEND.into(),
                data: None,
                sde: 1_700_000_000,
            },
        )
        .expect("building the image with an unsigned kernel");
        if let Some(mut args) = ovmf("usb-unsigned-secboot", true) {
            args.extend(strings(&[
                "-drive",
                &format!(
                    "file={},format=raw,if=virtio,snapshot=on",
                    unsigned.display()
                ),
            ]));
            unsigned_case = Some(args);
        }
    } else {
        eprintln!(
            "SKIPPED the ISO as a disk, Secure Boot and the unsigned kernel: RESCUE_BOOT_MATRIX=0 is set"
        );
    }
    std::thread::scope(|sc| {
        let rejected = unsigned_case.as_ref().map(|args| {
            sc.spawn(move || {
                let args: Vec<&str> = args.iter().map(String::as_str).collect();
                // GRUB asks shim to verify the kernel; shim says no.
                boot_until(
                    "usb-unsigned-secboot",
                    &args,
                    &["bad shim signature", "invalid signature", "Linux version"],
                )
            })
        });
        let boots = sc.spawn(|| boot_all(&cases));
        let rejected = rejected.map(|h| h.join().expect("boot thread"));
        let booted = boots.join();
        if let Some(text) = rejected {
            assert!(
                !text.contains("Linux version") && !text.contains("rescue-init"),
                "an unsigned kernel started under Secure Boot; tail:\n{}",
                tail(&text, 40)
            );
            assert!(
                text.contains("bad shim signature") || text.contains("invalid signature"),
                "no signature error from GRUB/shim; tail:\n{}",
                tail(&text, 40)
            );
        }
        assert!(booted.is_ok(), "boots failed (see above)");
    });
    let _ = std::fs::remove_file(work().join("rescue-usb-unsigned.img"));
}

/// Remove the Authenticode signature of a PE file (the kernel's EFI stub):
/// clear the certificate table directory entry and cut the table off.
fn strip_signature(pe: &[u8]) -> Vec<u8> {
    let u32_at = |at: usize| u32::from_le_bytes(pe[at..at + 4].try_into().expect("4 bytes"));
    let hdr = u32_at(0x3c) as usize;
    assert_eq!(&pe[hdr..hdr + 4], b"PE\0\0", "not a PE file");
    let opt = hdr + 24;
    assert_eq!(&pe[opt..opt + 2], &[0x0b, 0x02], "not PE32+");
    // Data directory 4 (certificate table): file offset and size.
    let dir = opt + 112 + 4 * 8;
    let off = u32_at(dir) as usize;
    assert!(off > 0 && off <= pe.len(), "the kernel is not signed");
    let mut out = pe[..off].to_vec();
    out[dir..dir + 8].fill(0);
    out
}

/// `image-builder usb --write` onto a disk image file: refused without a
/// terminal to confirm on, onto the image itself, and onto a file attached
/// as a loop device (root only); with `--yes` the data partition fills the
/// target, the exFAT made anew passes fsck.exfat, the ESP is the image's.
/// As root, also onto a loop device.
#[test]
fn usb_write_to_a_file_and_refusals() {
    if skip() {
        return;
    }
    let img = default_media().join("rescue-usb.img");
    let dir = work().join("usb-write");
    std::fs::create_dir_all(&dir).expect("work dir");
    let stick = dir.join("stick.img");
    let f = std::fs::File::create(&stick).expect("stick");
    f.set_len(256 << 20).expect("size");
    drop(f);
    let write = |target: &Path, extra: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_image-builder"))
            .arg("usb")
            .arg("--from")
            .arg(&img)
            .arg("--write")
            .arg(target)
            .args(extra)
            .stdin(Stdio::null())
            .output()
            .expect("running image-builder")
    };
    let refused = |o: &std::process::Output, why: &str| {
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(3), "not refused ({why}): {err}");
        assert!(err.contains(why), "{why:?} not in: {err}");
    };
    refused(&write(&stick, &[]), "no terminal");
    refused(&write(&img, &["--yes"]), "holds the image");

    let o = write(&stick, &["--dry-run", "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let plan: serde_json::Value = serde_json::from_slice(&o.stdout).expect("plan JSON");
    assert_eq!(plan["data"]["action"], "recreate");
    let start = plan["data"]["start"].as_u64().expect("start");
    assert_eq!(start + plan["data"]["to"].as_u64().expect("to"), 255 << 20);

    let o = write(&stick, &["--yes"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let s = std::fs::File::open(&stick).expect("stick");
    let t = imaging::part::read(&s, 256 << 20, 512)
        .expect("reads")
        .expect("a table");
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let p3 = t
        .partitions
        .iter()
        .find(|p| p.number == 3)
        .expect("data partition");
    assert_eq!(p3.end(), 255 << 20);
    // The ESP is the image's, byte for byte.
    let esp = t.partitions.iter().find(|p| p.number == 2).expect("ESP");
    let mut x = vec![0u8; esp.len as usize];
    let mut y = vec![0u8; esp.len as usize];
    std::os::unix::fs::FileExt::read_exact_at(&s, &mut x, esp.start).expect("read");
    let i = std::fs::File::open(&img).expect("image");
    std::os::unix::fs::FileExt::read_exact_at(&i, &mut y, esp.start).expect("read");
    assert!(x == y, "the ESP on the stick differs from the image's");
    // The data partition: an exFAT of the partition's size that fsck likes.
    let part = dir.join("p3.img");
    let mut data = vec![0u8; p3.len as usize];
    std::os::unix::fs::FileExt::read_exact_at(&s, &mut data, p3.start).expect("read");
    std::fs::write(&part, &data).expect("write");
    drop(data);
    let v = image_builder::exfat::Volume::open(&s, p3.start).expect("exFAT");
    assert_eq!(v.volume_bytes, p3.len);
    let fsck = Command::new("fsck.exfat")
        .arg("-n")
        .arg(&part)
        .output()
        .expect("fsck.exfat");
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let _ = std::fs::remove_file(&part);

    // Root only: a file attached as a loop device is in use, and a loop
    // device is a target like a stick.
    if !is_root() {
        eprintln!("SKIPPED the loop device cases: not root");
    } else if let Some(lo) = losetup(&stick) {
        let o = write(&stick, &["--yes"]);
        let _ = Command::new("losetup").arg("-d").arg(&lo).status();
        refused(&o, "attached as");
        let other = dir.join("loop-target.img");
        std::fs::File::create(&other)
            .expect("create")
            .set_len(200 << 20)
            .expect("size");
        if let Some(lo) = losetup(&other) {
            let o = write(Path::new(&lo), &["--yes"]);
            let t = std::fs::File::open(&lo)
                .ok()
                .and_then(|f| imaging::part::read(&f, 200 << 20, 512).ok().flatten());
            let _ = Command::new("losetup").arg("-d").arg(&lo).status();
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let t = t.expect("a partition table on the loop device");
            assert_eq!(t.partitions.iter().map(|p| p.end()).max(), Some(199 << 20));
        }
        let _ = std::fs::remove_file(&other);
    }
    let _ = std::fs::remove_file(&stick);
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

/// `losetup --find --show FILE`, None when that is not possible here.
fn losetup(file: &Path) -> Option<String> {
    let o = Command::new("losetup")
        .args(["--find", "--show"])
        .arg(file)
        .output()
        .ok()?;
    if !o.status.success() {
        eprintln!(
            "SKIPPED a loop device case: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        return None;
    }
    Some(String::from_utf8_lossy(&o.stdout).trim().to_string())
}

fn strings(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// The OVMF firmware options (q35; with Secure Boot: SMM, the secure
/// flash and Microsoft's keys enrolled), with a fresh copy of the variable
/// store for boot `name`. None when the ovmf package is missing.
fn ovmf(name: &str, secure: bool) -> Option<Vec<String>> {
    let (code, vars) = if secure {
        ("OVMF_CODE_4M.secboot.fd", "OVMF_VARS_4M.ms.fd")
    } else {
        ("OVMF_CODE_4M.fd", "OVMF_VARS_4M.fd")
    };
    let (code, vars) = (
        Path::new("/usr/share/OVMF").join(code),
        Path::new("/usr/share/OVMF").join(vars),
    );
    if !(code.exists() && vars.exists()) {
        return None;
    }
    let dir = work().join("boot-test");
    std::fs::create_dir_all(&dir).expect("work dir");
    let copy = dir.join(format!("{name}.vars.fd"));
    std::fs::copy(&vars, &copy).expect("copying the OVMF variable store");
    let mut args = if secure {
        strings(&[
            "-machine",
            "q35,smm=on",
            "-global",
            "driver=cfi.pflash01,property=secure,value=on",
        ])
    } else {
        strings(&["-machine", "q35"])
    };
    args.extend([
        "-drive".to_string(),
        format!(
            "if=pflash,format=raw,unit=0,file={},readonly=on",
            code.display()
        ),
        "-drive".to_string(),
        format!("if=pflash,format=raw,unit=1,file={}", copy.display()),
    ]);
    Some(args)
}

/// Boot every (name, qemu args, wanted serial text) case in its own
/// thread; each must power off after `rescue disks` and show its texts.
fn boot_all(cases: &[(&str, Vec<String>, &[&str])]) {
    std::thread::scope(|sc| {
        let handles: Vec<_> = cases
            .iter()
            .map(|(name, args, want)| {
                sc.spawn(move || {
                    let args: Vec<&str> = args.iter().map(String::as_str).collect();
                    let text = boot(name, &args);
                    for w in *want {
                        assert!(
                            text.contains(w),
                            "{name}: {w:?} not on the serial console; tail:\n{}",
                            tail(&text, 40)
                        );
                    }
                })
            })
            .collect();
        let failed: Vec<String> = handles
            .into_iter()
            .zip(cases)
            .filter_map(|(h, (name, _, _))| h.join().is_err().then(|| name.to_string()))
            .collect();
        assert!(
            failed.is_empty(),
            "boots failed: {failed:?} (their logs are above)"
        );
    });
}

fn zstd_decompress(data: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut child = Command::new("zstd")
        .args(["-d", "-c", "-q"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("zstd installed");
    let mut stdin = child.stdin.take().expect("piped");
    let data = data.to_vec();
    let w = std::thread::spawn(move || std::io::Write::write_all(&mut stdin, &data));
    child
        .stdout
        .take()
        .expect("piped")
        .read_to_end(&mut out)
        .expect("zstd output");
    w.join().expect("writer").expect("writing to zstd");
    assert!(child.wait().expect("zstd").success());
    out
}

fn accel() -> &'static str {
    if Path::new("/sys/module/kvm_pvm").exists() || !Path::new("/dev/kvm").exists() {
        "tcg"
    } else {
        "kvm"
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn sample_disk() -> PathBuf {
    static DISK: OnceLock<PathBuf> = OnceLock::new();
    DISK.get_or_init(|| {
        let work = work().join("boot-test");
        std::fs::create_dir_all(&work).expect("work dir");
        let disk = work.join("disk.img");
        if !disk.exists() {
            let st = Command::new(workspace().join("scripts/make-sample-disk"))
                .arg(&disk)
                .arg("256")
                .status()
                .expect("running make-sample-disk");
            assert!(
                st.success(),
                "scripts/make-sample-disk failed (run scripts/setup for mkfs.ntfs, mtools, ...)"
            );
        }
        disk
    })
    .clone()
}

/// Run qemu with `args` (plus memory and serial options) until it stops,
/// the timeout passes, or (when `stop` is not empty) one of `stop` shows up
/// on the serial console; qemu is killed in the last two cases. Returns
/// (exit status if it stopped by itself, serial log, seconds).
fn run_qemu(
    name: &str,
    args: &[&str],
    stop: &[&str],
) -> (Option<std::process::ExitStatus>, String, String, f64) {
    let work = work().join("boot-test");
    std::fs::create_dir_all(&work).expect("work dir");
    let log = work.join(format!("{name}.log"));
    let _ = std::fs::remove_file(&log);
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-accel",
        accel(),
        "-m",
        "1024",
        // One vCPU: several guests share two host cores under TCG, and
        // multi-threaded TCG only adds contention then.
        "-smp",
        "1",
        "-nographic",
        "-no-reboot",
        "-monitor",
        "none",
    ])
    .args(args)
    .arg("-serial")
    .arg(format!("file:{}", log.display()))
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    let started = Instant::now();
    let mut child = qemu
        .spawn()
        .expect("qemu-system-x86_64 installed (apt-get install qemu-system-x86)");
    // Generous: several boots share two cores under TCG.
    let timeout = Duration::from_secs(if accel() == "tcg" { 300 } else { 90 });
    let read_log = || String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).to_string();
    let status = loop {
        if let Some(st) = child.try_wait().expect("waiting for qemu") {
            break Some(st);
        }
        if started.elapsed() > timeout
            || (!stop.is_empty() && {
                let t = read_log();
                stop.iter().any(|s| t.contains(s))
            })
        {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    (status, read_log(), err, started.elapsed().as_secs_f64())
}

/// Boot until one of `stop` appears on the serial console (or qemu stops,
/// or the timeout); return the serial log.
fn boot_until(name: &str, args: &[&str], stop: &[&str]) -> String {
    let (_, text, _, elapsed) = run_qemu(name, args, stop);
    eprintln!("{name} ({}): {elapsed:.1} s wall", accel());
    text
}

/// Run qemu with `args` until it powers off; return the serial log. Panics
/// with the log tail on timeout, failure, or when `rescue disks` did not
/// finish.
fn boot(name: &str, args: &[&str]) -> String {
    let (status, text, err, elapsed) = run_qemu(name, args, &[]);
    let Some(status) = status else {
        panic!(
            "{name}: qemu ({}) did not power off in {elapsed:.0} s; serial log tail:\n{}",
            accel(),
            tail(&text, 60)
        );
    };
    assert!(
        status.success(),
        "{name}: qemu failed ({status}): {err}\nserial log tail:\n{}",
        tail(&text, 60)
    );
    for want in [
        "rescue-init: rescue disks exited with 0",
        "reboot: Power down",
    ] {
        assert!(
            text.contains(want),
            "{name}: {want:?} not on the serial console; tail:\n{}",
            tail(&text, 60)
        );
    }
    let uptime = text
        .lines()
        .find_map(|l| l.strip_prefix("rescue-init: kernel up "))
        .unwrap_or("?");
    eprintln!(
        "{name} ({}): {elapsed:.1} s wall; rescue-init: kernel up {uptime}",
        accel()
    );
    text
}

/// The unattended job of a PXE client, on the real live system: the kernel
/// and initramfs boot with the job on the command line (as `pxe-server`
/// writes it), rescue-init brings up the network (DHCP on qemu's user
/// network) and runs `rescue job`, which restores a relative image from the
/// server's image folder (`pxe-server`'s HTTP side, on this host's
/// loopback, reached as 10.0.2.2) onto the virtio disk, reports progress
/// and `done` to the server, and powers the machine off.
#[test]
fn a_pxe_job_restores_a_disk_reports_and_powers_off() {
    use pxe_server::clients::{ClientStatus, Registry};
    use std::net::{Ipv4Addr, SocketAddr, TcpListener};
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex, RwLock};
    if skip() {
        return;
    }
    let media = default_media();
    let (rescue, _) = musl_binaries();
    let work = work().join("job-test");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("images")).expect("work dir");
    let src = sample_disk();
    let img = work.join("images/sample.rimg");
    let o = Command::new(rescue)
        .args(["backup", "disk"])
        .arg(&src)
        .arg("-o")
        .arg(&img)
        .output()
        .expect("running rescue backup");
    assert!(o.status.success(), "backup: {}", String::from_utf8_lossy(&o.stderr));
    let target = work.join("target.img");
    std::fs::File::create(&target)
        .and_then(|f| f.set_len(std::fs::metadata(&src).expect("source").len()))
        .expect("target disk");

    // The PXE server's HTTP side with --images.
    let port = TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
    std::fs::create_dir_all(work.join("bundle")).expect("bundle dir");
    let registry = Arc::new(Registry::default());
    let ctx = Arc::new(pxe_server::http::HttpContext {
        bundle: Arc::new(pxe_server::bundle::Bundle::unchecked(&work.join("bundle")).expect("bundle")),
        policy: Arc::new(RwLock::new(
            pxe_server::policy::Policy::parse("", &work.join("policy.toml")).expect("policy"),
        )),
        registry: registry.clone(),
        server_ip: Ipv4Addr::new(10, 0, 2, 2),
        port,
        cmdline: String::new(),
        images: Some(Arc::new(
            pxe_server::images::ImageDir::open(&work.join("images")).expect("image dir"),
        )),
    });
    let server = pxe_server::http::HttpServer::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, port)), ctx)
        .expect("bind");
    let stop = Arc::new(AtomicBool::new(false));
    let seen: Arc<Mutex<Vec<ClientStatus>>> = Arc::new(Mutex::new(Vec::new()));
    let mac: pxe_server::mac::Mac = "52:54:00:12:34:99".parse().expect("mac");
    let threads = [
        std::thread::spawn({
            let stop = stop.clone();
            move || {
                let _ = server.run(&stop);
            }
        }),
        std::thread::spawn({
            let (stop, seen, registry) = (stop.clone(), seen.clone(), registry.clone());
            move || {
                while !stop.load(Ordering::SeqCst) {
                    if let Some(st) = registry.list().into_iter().find(|r| r.mac == mac).and_then(|r| r.status) {
                        let mut v = seen.lock().expect("lock");
                        if v.last() != Some(&st) {
                            v.push(st);
                        }
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        }),
    ];
    let append = format!(
        "console=ttyS0 panic=-1 rescue.server=http://10.0.2.2:{port} rescue.mac={mac} rescue.job=restore \
         rescue.image=sample.rimg rescue.disk=disk0 rescue.then=poweroff"
    );
    let (status, text, err, secs) = run_qemu(
        "pxe-job",
        &[
            "-kernel",
            &media.join("vmlinuz").display().to_string(),
            "-initrd",
            &media.join("initramfs.img").display().to_string(),
            "-append",
            &append,
            "-drive",
            &format!("file={},format=raw,if=virtio", target.display()),
            // qemu's user network: DHCP hands out 10.0.2.15, and 10.0.2.2
            // is this host's loopback; nothing leaves the process.
            "-nic",
            &format!("user,model=virtio-net-pci,mac={mac}"),
        ],
        &[],
    );
    stop.store(true, Ordering::SeqCst);
    for t in threads {
        let _ = t.join();
    }
    eprintln!("pxe-job ({}): {secs:.1} s wall", accel());
    let seen = seen.lock().expect("lock").clone();
    assert!(
        status.is_some_and(|s| s.success()),
        "the job did not power the machine off ({status:?}, {err}); reports {seen:?}; serial log tail:\n{}",
        tail(&text, 60)
    );
    for want in [
        &format!("rescue job: restore http://10.0.2.2:{port}/images/sample.rimg to /dev/vda") as &str,
        "done; powering off",
        "reboot: Power down",
    ] {
        assert!(text.contains(want), "{want:?} not on the serial console; tail:\n{}", tail(&text, 60));
    }
    assert!(seen.iter().any(|s| s.state == "running"), "progress reports: {seen:?}");
    let last = seen.last().expect("reports");
    assert_eq!((last.state.as_str(), last.progress), ("done", Some(1.0)), "{seen:?}");
    // The server kept the job's course, not only its last report.
    let record = registry.list().into_iter().find(|r| r.mac == mac).expect("the client's record");
    let states: Vec<&str> = record.history.iter().map(|e| e.state.as_str()).collect();
    let running = states.iter().position(|s| *s == "running");
    assert!(running.is_some() && states.last() == Some(&"done") && running < Some(states.len() - 1), "history: {:?}", record.history);
    // The disk holds the image's partitions, byte for byte.
    let parts = |p: &Path| -> Vec<(u64, u64)> {
        let o = Command::new("sfdisk").arg("-J").arg(p).output().expect("sfdisk");
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("sfdisk -J");
        v["partitiontable"]["partitions"]
            .as_array()
            .expect("partitions")
            .iter()
            .map(|x| (x["start"].as_u64().expect("start") * 512, x["size"].as_u64().expect("size") * 512))
            .collect()
    };
    let hash = |p: &Path, start: u64, len: u64| {
        use std::io::{Seek, SeekFrom};
        let mut f = std::fs::File::open(p).expect("open");
        f.seek(SeekFrom::Start(start)).expect("seek");
        let mut h = <sha2::Sha256 as sha2::Digest>::new();
        std::io::copy(&mut f.take(len), &mut h).expect("read");
        sha2::Digest::finalize(h).to_vec()
    };
    let ps = parts(&src);
    assert_eq!(ps, parts(&target), "partition tables differ");
    for (start, len) in ps {
        assert_eq!(hash(&src, start, len), hash(&target, start, len), "the partition at byte {start} differs");
    }
    let _ = std::fs::remove_dir_all(&work);
}
