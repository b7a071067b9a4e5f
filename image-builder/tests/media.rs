//! End-to-end tests of the media: build the real initramfs from the Debian
//! kernel package and the static (musl) `rescue` and `rescue-init`, check
//! that two builds are bit-identical, and boot it in qemu with a sample disk
//! on virtio, AHCI and NVMe.
//!
//! Needs: the rustup target `x86_64-unknown-linux-musl`, `musl-tools`,
//! `qemu-system-x86`, `cpio`, the tools of `scripts/make-sample-disk`, and
//! the kernel package in the cache (`apt-get download` fetches it once; the
//! cache is `$RESCUE_BUILD_CACHE` or `~/.cache/rescue-image-builder`).
//! The musl binaries are built by `scripts/build-media --binaries-only` into
//! `target/media` (a separate target dir, so the outer `cargo test` lock is
//! not in the way): ~10 minutes cold on 2 cores, ~4 after a change in
//! `imaging` or `rescue-tui` (LTO release build), seconds otherwise.
//! `RESCUE_SKIP_MEDIA_TESTS=1` skips these tests (and says so);
//! `RESCUE_BOOT_MATRIX=1` adds the ISO booted as a hard disk (SeaBIOS) and
//! from CD under OVMF with Secure Boot enforced (Microsoft keys), ~2 minutes
//! more under TCG.

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
        let target = std::env::var_os("RESCUE_MEDIA_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| ws.join("target/media"));
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
        "image-builder initramfs failed:\n{}{}",
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

/// The media of the default configuration, built once.
fn default_media() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = workspace().join("target/media/test-a");
        build_media("all", &dir, &[]);
        dir
    })
}

#[test]
fn initramfs_is_reproducible_and_complete() {
    if skip() {
        return;
    }
    let a = default_media();
    let b = workspace().join("target/media/test-b");
    build_media("all", &b, &[]);
    for f in ["initramfs.img", "vmlinuz", "SHA256SUMS"] {
        let (x, y) = (
            std::fs::read(a.join(f)).expect("first build"),
            std::fs::read(b.join(f)).expect("second build"),
        );
        assert!(
            x == y,
            "{f} differs between two builds with the same SOURCE_DATE_EPOCH"
        );
    }
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

/// The hybrid ISO: two builds bit-identical, under 40 MB, and it boots
/// under SeaBIOS from the CD drive; with `RESCUE_BOOT_MATRIX=1` also as a
/// hard disk (a `dd`-written stick) and under OVMF with Secure Boot.
#[test]
fn iso_is_reproducible_and_boots_with_seabios() {
    if skip() {
        return;
    }
    let a = workspace().join("target/media/iso-a");
    let b = workspace().join("target/media/iso-b");
    let args = ["--append", "console=ttyS0 rescue.run=disks"];
    build_media("iso", &a, &args);
    build_media("iso", &b, &args);
    let (x, y) = (
        std::fs::read(a.join("rescue.iso")).expect("iso a"),
        std::fs::read(b.join("rescue.iso")).expect("iso b"),
    );
    assert!(x == y, "two ISO builds differ");
    assert!(
        x.len() < 40_000_000,
        "ISO is {} bytes, over the 40 MB budget",
        x.len()
    );
    eprintln!("ISO: {} bytes", x.len());
    let disk = sample_disk();
    let iso = a.join("rescue.iso");
    let cd = boot(
        "iso-cd",
        &[
            "-cdrom",
            &iso.display().to_string(),
            "-boot",
            "d",
            "-drive",
            &format!("file={},format=raw,if=virtio,snapshot=on", disk.display()),
        ],
    );
    assert!(
        cd.contains("/dev/vda"),
        "the disk was not listed; tail:\n{}",
        tail(&cd, 40)
    );
    // The rest of the matrix costs ~2 more minutes under TCG.
    if std::env::var_os("RESCUE_BOOT_MATRIX").is_none_or(|v| v == "0") {
        eprintln!("SKIPPED the ISO-as-disk and OVMF Secure Boot boots: set RESCUE_BOOT_MATRIX=1 to run them");
        return;
    }
    let hd = boot(
        "iso-hd",
        &[
            "-drive",
            &format!("file={},format=raw,if=ide,snapshot=on", iso.display()),
            "-drive",
            &format!("file={},format=raw,if=virtio,snapshot=on", disk.display()),
        ],
    );
    assert!(
        hd.contains("/dev/vda"),
        "the disk was not listed; tail:\n{}",
        tail(&hd, 40)
    );

    // UEFI with Secure Boot enforced and Microsoft's keys enrolled: shim ->
    // Debian's signed GRUB -> Debian's signed kernel (locked down), and the
    // signed modules load. Skipped when the ovmf package is missing.
    let code = Path::new("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd");
    let vars_ms = Path::new("/usr/share/OVMF/OVMF_VARS_4M.ms.fd");
    if !(code.exists() && vars_ms.exists()) {
        eprintln!("SKIPPED the Secure Boot case: apt-get install ovmf");
        return;
    }
    let vars = workspace().join("target/media/boot-test/OVMF_VARS_4M.ms.fd");
    std::fs::copy(vars_ms, &vars).expect("copying the OVMF variable store");
    let sb = boot(
        "iso-cd-ovmf-secboot",
        &[
            "-machine",
            "q35,smm=on",
            "-global",
            "driver=cfi.pflash01,property=secure,value=on",
            "-drive",
            &format!(
                "if=pflash,format=raw,unit=0,file={},readonly=on",
                code.display()
            ),
            "-drive",
            &format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
            "-cdrom",
            &iso.display().to_string(),
            "-drive",
            &format!("file={},format=raw,if=virtio,snapshot=on", disk.display()),
        ],
    );
    for want in ["Secure boot enabled", "/dev/vda"] {
        assert!(
            sb.contains(want),
            "{want:?} missing under OVMF Secure Boot; tail:\n{}",
            tail(&sb, 40)
        );
    }
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
        let work = workspace().join("target/media/boot-test");
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

/// Run qemu with `args` (plus machine, memory and serial options) until it
/// powers off; return the serial log. Kills qemu and panics with the log
/// tail on timeout, failure, or when `rescue disks` did not finish.
fn boot(name: &str, args: &[&str]) -> String {
    let work = workspace().join("target/media/boot-test");
    std::fs::create_dir_all(&work).expect("work dir");
    let log = work.join(format!("{name}.log"));
    let _ = std::fs::remove_file(&log);
    let mut qemu = Command::new("qemu-system-x86_64");
    qemu.args([
        "-accel",
        accel(),
        "-m",
        "1024",
        "-smp",
        "2",
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
    let timeout = Duration::from_secs(if accel() == "tcg" { 240 } else { 90 });
    let status = loop {
        if let Some(st) = child.try_wait().expect("waiting for qemu") {
            break Some(st);
        }
        if started.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let text = String::from_utf8_lossy(&std::fs::read(&log).unwrap_or_default()).to_string();
    let mut err = String::new();
    if let Some(mut e) = child.stderr.take() {
        let _ = e.read_to_string(&mut err);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let Some(status) = status else {
        panic!(
            "{name}: qemu ({}) did not power off within {timeout:?}; serial log tail:\n{}",
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

/// Boot kernel + initramfs with `rescue.run=disks` and three copies of the
/// sample disk (virtio, AHCI, NVMe); `rescue` must list all three and the
/// machine must power itself off.
#[test]
fn boots_and_lists_virtio_ahci_and_nvme_disks() {
    if skip() {
        return;
    }
    let media = default_media();
    let disk = sample_disk();
    let d = disk.display();
    let (kernel, initrd) = (
        media.join("vmlinuz").display().to_string(),
        media.join("initramfs.img").display().to_string(),
    );
    let text = boot(
        "kernel-initrd",
        &[
            "-kernel",
            &kernel,
            "-initrd",
            &initrd,
            "-append",
            "console=ttyS0 rescue.run=disks panic=-1",
            "-drive",
            &format!("file={d},format=raw,if=virtio,snapshot=on"),
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
        ],
    );
    for want in [
        "/dev/vda",
        "/dev/sda",
        "/dev/nvme0n1",
        "ext4 \"linux\"",
        "ntfs \"Windows\"",
    ] {
        assert!(
            text.contains(want),
            "{want:?} not listed; tail:\n{}",
            tail(&text, 60)
        );
    }
}
