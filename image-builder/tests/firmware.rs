//! NIC firmware from Debian's `non-free-firmware` packages in a real
//! initramfs: the default module set against the cached Debian kernel (as
//! in `media.rs`: `~/.cache/rescue-image-builder` or `$RESCUE_BUILD_CACHE`,
//! fetched with `apt-get download` once), the firmware packages fetched
//! once through the builder's private apt setup (network to the system's
//! Debian mirror the first time; bounded by apt's 30 s timeouts and a
//! 5-minute watchdog here), then a few seconds per run.
//!
//! `rescue` and `rescue-init` are stand-ins: a 64-byte static ELF header
//! is all the initramfs build checks, and these tests look at modules and
//! firmware only (`media.rs` boots the real thing). The tools list is empty
//! for the same reason.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Duration;

use image_builder::initramfs::{self, Options};
use image_builder::kmod::Tree;

/// The NIC modules whose firmware the default packages hold, and which.
const NIC_FIRMWARE: &[(&str, &str)] = &[
    ("r8169", "firmware-realtek"),
    ("r8152", "firmware-realtek"),
    ("bnx2x", "firmware-bnx2x"),
    ("tg3", "firmware-misc-nonfree"),
    ("ice", "firmware-misc-nonfree"),
];

fn tmp(name: &str) -> PathBuf {
    let d = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("firmware")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("creating the test directory");
    d
}

/// A static "program": an ELF64 x86-64 header without program or section
/// headers, hence without an interpreter.
fn static_stub(dir: &Path) -> PathBuf {
    let mut h = vec![0u8; 64];
    h[..4].copy_from_slice(b"\x7fELF");
    h[4] = 2; // 64-bit
    h[5] = 1; // little-endian
    h[6] = 1; // version
    h[16] = 2; // ET_EXEC
    h[18] = 62; // x86-64
    h[20] = 1;
    let p = dir.join("static-stub");
    std::fs::write(&p, h).expect("writing the stub");
    p
}

/// Options for a quick build: default modules, no tools, zstd level 1,
/// no host firmware directory (so only the packages can provide firmware).
fn options(dir: &Path) -> Options {
    let stub = static_stub(dir);
    let mut o = Options::new(stub.clone(), stub);
    o.tools.clear();
    o.zstd_level = 1;
    o.mtime = 1_700_000_000;
    o.firmware_dirs = vec![dir.join("no-host-firmware")];
    o
}

/// Build with a watchdog: the first run downloads ~16 MB of packages.
fn build(opts: Options) -> initramfs::Built {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(initramfs::build(&opts).map_err(|e| e.to_string()));
    });
    match rx.recv_timeout(Duration::from_secs(300)) {
        Ok(Ok(b)) => b,
        Ok(Err(e)) => panic!("building the initramfs failed: {e}"),
        Err(_) => panic!(
            "building the initramfs took over 5 minutes: is the Debian mirror of /etc/apt/sources* reachable (the firmware packages are fetched once)?"
        ),
    }
}

/// path -> data of the regular files of the built initramfs.
fn files(built: &initramfs::Built) -> BTreeMap<String, Vec<u8>> {
    let cpio = zstd::stream::decode_all(&built.image[..]).expect("zstd");
    image_builder::cpio::read(&cpio)
        .expect("a valid newc archive")
        .into_iter()
        .filter(|e| e.mode & 0o170000 == 0o100000)
        .map(|e| (e.path, e.data))
        .collect()
}

/// The firmware files `module` names in the kernel the build used.
fn named_by(built: &initramfs::Built, module: &str) -> Vec<String> {
    let tree = Tree::open(&built.kernel.modules_root).expect("kernel tree");
    let sel = tree.select(&[module.to_string()]).expect("module");
    sel.modules[module].firmware.clone()
}

/// `./lib/firmware/<dirs>` extracted from a `.deb` with dpkg-deb and tar,
/// not through the builder's cache.
fn extract(deb: &Path, members: &[&str], into: &Path) {
    let st = Command::new("sh")
        .arg("-c")
        .arg(r#"deb=$1; dir=$2; shift 2; dpkg-deb --fsys-tarfile "$deb" | tar -x -C "$dir" "$@""#)
        .arg("sh")
        .arg(deb)
        .arg(into)
        .args(members.iter().map(|m| format!("./lib/firmware/{m}")))
        .status()
        .expect("running dpkg-deb and tar");
    assert!(
        st.success(),
        "extracting {members:?} from {}",
        deb.display()
    );
}

#[test]
fn debian_nic_firmware_is_in_the_initramfs() {
    let dir = tmp("default");
    let opts = options(&dir);
    let cache = opts.cache.clone();
    let built = build(opts);
    let r = &built.report;
    for p in &r.firmware_packages {
        assert!(
            p.error.is_none(),
            "{} could not be fetched (network to the Debian mirror is needed once): {}",
            p.package,
            p.error.as_deref().unwrap_or_default()
        );
    }
    let files = files(&built);
    // The packages, extracted independently, as the reference.
    let reference = dir.join("reference");
    std::fs::create_dir_all(&reference).expect("mkdir");
    let debs: BTreeMap<&str, PathBuf> = r
        .firmware_packages
        .iter()
        .map(|p| {
            let deb = p.deb.as_deref().expect("fetched packages name their .deb");
            (p.package.as_str(), cache.join("debs").join(deb))
        })
        .collect();
    extract(&debs["firmware-realtek"], &["rtl_nic"], &reference);
    extract(&debs["firmware-bnx2x"], &["bnx2x"], &reference);
    extract(
        &debs["firmware-misc-nonfree"],
        &["tigon", "intel/ice"],
        &reference,
    );

    let mut count = 0;
    for (module, package) in NIC_FIRMWARE {
        let names = named_by(&built, module);
        assert!(
            !names.is_empty(),
            "{module} names no firmware in this kernel"
        );
        for fw in names {
            let got = files
                .get(&format!("lib/firmware/{fw}"))
                .unwrap_or_else(|| panic!("{fw} ({module}) not in the initramfs"));
            let want = std::fs::read(reference.join("lib/firmware").join(&fw))
                .unwrap_or_else(|e| panic!("{fw} in {package}: {e}"));
            assert!(got == &want, "{fw} differs from the one in {package}");
            assert!(
                r.firmware_included.contains(&fw),
                "{fw} not listed as included"
            );
            assert!(
                r.firmware_from[&fw].starts_with(&format!("{package} ")),
                "{fw} from {} instead of {package}",
                r.firmware_from[&fw]
            );
            count += 1;
        }
    }
    for must in ["rtl_nic/rtl8168h-2.fw", "tigon/tg3.bin"] {
        assert!(r.firmware_included.iter().any(|f| f == must), "{must}");
    }
    assert!(r.firmware_included.iter().any(|f| f.starts_with("bnx2x/")));
    // Only what modules name: nothing else below lib/firmware.
    let in_image = files
        .keys()
        .filter(|p| p.starts_with("lib/firmware/"))
        .count();
    assert_eq!(in_image, r.firmware_included.len());
    assert!(
        r.firmware_missing.is_empty(),
        "missing: {:?} ({:?})",
        r.firmware_missing,
        r.firmware_note
    );
    eprintln!(
        "{count} NIC firmware files checked; {} included, {} KiB",
        r.firmware_included.len(),
        r.firmware_size / 1024
    );
}

/// `--no-debian-firmware` through the CLI: the NIC firmware is listed as
/// missing and the report says why.
#[test]
fn without_debian_firmware_nic_firmware_is_missing() {
    let dir = tmp("off");
    let stub = static_stub(&dir);
    let out = dir.join("out");
    let o = Command::new(env!("CARGO_BIN_EXE_image-builder"))
        .args(["initramfs", "--no-debian-firmware", "--zstd-level", "1"])
        .arg("-o")
        .arg(&out)
        .arg("--rescue")
        .arg(&stub)
        .arg("--init")
        .arg(&stub)
        .arg("--firmware-dir")
        .arg(dir.join("empty"))
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .expect("running image-builder");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "image-builder failed: {err}");
    assert!(
        err.contains("firmware note: Debian firmware packages not used"),
        "{err}"
    );
    let r: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("build-report.json")).expect("report"))
            .expect("JSON");
    let missing: Vec<(&str, &str)> = r["firmware_missing"]
        .as_array()
        .expect("firmware_missing")
        .iter()
        .map(|n| {
            (
                n["module"].as_str().expect("module"),
                n["file"].as_str().expect("file"),
            )
        })
        .collect();
    for want in [("r8169", "rtl_nic/rtl8168h-2.fw"), ("tg3", "tigon/tg3.bin")] {
        assert!(missing.contains(&want), "{want:?} not in {missing:?}");
    }
    assert!(missing.iter().any(|(m, _)| *m == "bnx2x"));
    assert_eq!(r["firmware_included"].as_array().map(Vec::len), Some(0));
    assert_eq!(r["firmware_packages"].as_array().map(Vec::len), Some(0));
}

/// No reachable mirror and nothing cached: the build still succeeds, and
/// the report names each package with apt's reason. The mirror is a closed
/// port on loopback, so this needs no network and fails fast.
#[test]
fn unreachable_mirror_builds_and_says_why() {
    let dir = tmp("offline");
    let etc = dir.join("etc-apt");
    std::fs::create_dir_all(etc.join("sources.list.d")).expect("mkdir");
    std::fs::write(
        etc.join("sources.list.d/debian.sources"),
        "Types: deb\nURIs: http://127.0.0.1:9/debian\nSuites: bookworm\nComponents: main\n",
    )
    .expect("writing the sources");
    // The kernel from the shared cache, the firmware through an empty one.
    let kernel = initramfs::kernel(&options(&dir)).expect("the cached Debian kernel");
    let mut opts = options(&dir);
    opts.kernel_root = Some(kernel.modules_root);
    opts.cache = dir.join("empty-cache");
    opts.apt_etc = etc;
    let built = build(opts);
    let r = &built.report;
    assert_eq!(r.firmware_packages.len(), 3);
    for p in &r.firmware_packages {
        let e = p
            .error
            .as_deref()
            .unwrap_or_else(|| panic!("{} fetched?", p.package));
        assert!(e.contains("127.0.0.1:9"), "{}: {e}", p.package);
    }
    assert!(r.firmware_included.is_empty());
    assert!(r
        .firmware_missing
        .iter()
        .any(|n| n.module == "r8169" && n.file == "rtl_nic/rtl8168h-2.fw"));
    let note = r.firmware_note.as_deref().expect("a note");
    assert!(
        note.contains("firmware-realtek, firmware-bnx2x, firmware-misc-nonfree: apt-get update:")
            && note.contains("Could not connect to 127.0.0.1:9"),
        "{note}"
    );
    assert!(r.summary().contains("firmware note:"));
    assert!(
        !dir.join("empty-cache/debs")
            .read_dir()
            .is_ok_and(|mut d| d.next().is_some()),
        "nothing half-downloaded is left in the cache"
    );
}
