//! The live system's initramfs: `rescue-init` as `/init`, the static
//! `rescue`, the chosen kernel modules with their `modules.dep`/
//! `modules.alias`, their firmware when available, the tools `rescue` runs,
//! and extra files; a newc cpio compressed with zstd (the Debian kernel has
//! `CONFIG_RD_ZSTD=y`).
//!
//! Firmware: exactly the files the selected modules name (`firmware=` in
//! `.modinfo`) plus `--add-firmware`, looked up first in Debian's firmware
//! packages ([`crate::firmware`], pinned by the package cache, so builds
//! stay reproducible) and then in the firmware directories (default
//! `/lib/firmware`). Never whole packages: the default modules name 38
//! files (~2 MiB) of the ~60 MiB the three default packages unpack to.
//!
//! Layout:
//!
//! ```text
//! /init                         rescue-init (PID 1)
//! /sbin/{poweroff,reboot,halt,modprobe} /bin/sync -> /init  (applets of rescue-init)
//! /usr/bin/rescue               the static TUI/CLI
//! /usr/sbin/..., /lib/x86_64-linux-gnu/..., /lib64/ld-linux-x86-64.so.2   tools + libraries
//! /lib/modules/<version>/{kernel/...,modules.dep,modules.alias,modules.builtin,modules.order}
//! /lib/firmware/...             firmware the modules ask for, when found
//! /dev/console                  so the kernel can open init's console before devtmpfs
//! ```

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Instant;

use crate::cpio::Archive;
use crate::deb::Cache;
use crate::elf::Elf;
use crate::firmware::{self, Fetched};
use crate::kmod::{self, Selection, Tree};
use crate::report::{FirmwareNote, Report};
use crate::{tools, Error, Result};

/// What goes into the initramfs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Debian kernel package or metapackage (`linux-image-amd64`).
    pub kernel_package: String,
    /// Use this unpacked kernel tree instead (`.../lib/modules/<version>`,
    /// with `boot/vmlinuz-<version>` two levels up).
    pub kernel_root: Option<PathBuf>,
    pub cache: PathBuf,
    /// Static `rescue` binary.
    pub rescue: PathBuf,
    /// Static `rescue-init` binary.
    pub init: PathBuf,
    /// Module names in addition to [`kmod::DEFAULT_MODULES`].
    pub add_modules: Vec<String>,
    /// Only these modules (plus dependencies) instead of the defaults.
    pub only_modules: Option<Vec<String>>,
    /// Programs to include (with libraries), by name or path.
    pub tools: Vec<(String, Option<String>)>,
    /// Directories searched for firmware files (layout of /lib/firmware),
    /// after the Debian firmware packages.
    pub firmware_dirs: Vec<PathBuf>,
    /// Debian packages of the `non-free-firmware` component searched first
    /// for firmware ([`firmware::DEFAULT_PACKAGES`]); empty: none.
    pub debian_firmware: Vec<String>,
    /// Where the system's apt sources are read to find a Debian mirror
    /// for the firmware packages (`/etc/apt`).
    pub apt_etc: PathBuf,
    /// Firmware files to add whether or not a module names them (paths
    /// relative to a firmware dir).
    pub add_firmware: Vec<String>,
    /// (host file, absolute path in the image).
    pub add_files: Vec<(PathBuf, String)>,
    /// A shell (e.g. busybox) to include as /bin/sh for `rescue.shell`.
    pub shell: Option<PathBuf>,
    pub zstd_level: i32,
    /// mtime of every entry (`SOURCE_DATE_EPOCH`).
    pub mtime: u32,
}

impl Options {
    pub fn new(rescue: PathBuf, init: PathBuf) -> Options {
        Options {
            kernel_package: "linux-image-amd64".into(),
            kernel_root: None,
            cache: crate::default_cache_dir(),
            rescue,
            init,
            add_modules: Vec::new(),
            only_modules: None,
            tools: tools::DEFAULT_TOOLS
                .iter()
                .map(|(t, p)| (t.to_string(), Some(p.to_string())))
                .collect(),
            firmware_dirs: vec![PathBuf::from("/lib/firmware")],
            debian_firmware: firmware::DEFAULT_PACKAGES
                .iter()
                .map(|s| s.to_string())
                .collect(),
            apt_etc: PathBuf::from("/etc/apt"),
            add_firmware: Vec::new(),
            add_files: Vec::new(),
            shell: None,
            zstd_level: 12,
            mtime: crate::source_date_epoch(),
        }
    }
}

/// Parse `SRC:DEST` of `--add-file`.
pub fn parse_add_file(s: &str) -> Result<(PathBuf, String)> {
    match s.rsplit_once(':') {
        Some((src, dest)) if !src.is_empty() && dest.starts_with('/') => {
            Ok((PathBuf::from(src), dest.to_string()))
        }
        _ => Err(Error::BadAddFile(s.to_string())),
    }
}

/// The kernel a build uses.
#[derive(Debug, Clone)]
pub struct Kernel {
    pub package: String,
    pub version: String,
    pub vmlinuz: PathBuf,
    pub modules_root: PathBuf,
}

/// Find (download and unpack if needed) the kernel.
pub fn kernel(opts: &Options) -> Result<Kernel> {
    let modules_root = match &opts.kernel_root {
        Some(r) => r.clone(),
        None => {
            let cache = Cache::new(&opts.cache);
            let package = cache.kernel_package(&opts.kernel_package)?;
            let root = cache.package(&package)?;
            let version = package.trim_start_matches("linux-image-").to_string();
            let m = root.join("lib/modules").join(&version);
            if !m.is_dir() {
                return Err(Error::Missing {
                    what: "kernel modules".into(),
                    path: m,
                    package: Some(package),
                });
            }
            m
        }
    };
    let version = modules_root
        .file_name()
        .map(|s| s.to_string_lossy().to_string())
        .unwrap_or_default();
    let base = modules_root
        .parent()
        .and_then(Path::parent)
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    let vmlinuz = base.join("boot").join(format!("vmlinuz-{version}"));
    if !vmlinuz.is_file() {
        return Err(Error::Missing {
            what: "kernel image".into(),
            path: vmlinuz,
            package: Some(format!("linux-image-{version}")),
        });
    }
    Ok(Kernel {
        package: format!("linux-image-{version}"),
        version,
        vmlinuz,
        modules_root,
    })
}

fn read_static(path: &Path) -> Result<Vec<u8>> {
    let data = fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::NotStatic {
            path: path.to_path_buf(),
            interp: "(file missing)".into(),
        },
        _ => Error::io("reading", path, e),
    })?;
    if let Some(interp) = Elf::parse(path, &data)?.interpreter()? {
        return Err(Error::NotStatic {
            path: path.to_path_buf(),
            interp,
        });
    }
    Ok(data)
}

/// A built initramfs.
pub struct Built {
    /// The compressed archive.
    pub image: Vec<u8>,
    pub kernel: Kernel,
    pub report: Report,
}

/// Assemble and compress the initramfs.
pub fn build(opts: &Options) -> Result<Built> {
    let started = Instant::now();
    let kernel = kernel(opts)?;
    let mut a = Archive::new();
    let mut report = Report::new(&kernel, opts.mtime);

    // Programs.
    a.file("init", read_static(&opts.init)?, 0o755)?;
    a.file("usr/bin/rescue", read_static(&opts.rescue)?, 0o755)?;
    for applet in [
        "sbin/poweroff",
        "sbin/reboot",
        "sbin/halt",
        "sbin/modprobe",
        "bin/sync",
    ] {
        a.symlink(applet, "/init")?;
    }
    for (dir, perm) in [
        ("proc", 0o555),
        ("sys", 0o555),
        ("dev", 0o755),
        ("run", 0o755),
        ("tmp", 0o1777),
        ("mnt", 0o755),
        ("root", 0o700),
    ] {
        a.dir(dir, perm)?;
    }
    a.char_dev("dev/console", 5, 1, 0o600)?;
    a.symlink("etc/mtab", "/proc/self/mounts")?;
    a.file(
        "etc/rescue-release",
        format!("rescue live system, kernel {}\n", kernel.version).into_bytes(),
        0o644,
    )?;
    a.file(
        "etc/passwd",
        b"root:x:0:0:root:/root:/bin/sh\n".to_vec(),
        0o644,
    )?;
    a.file("etc/group", b"root:x:0:\ntty:x:5:\n".to_vec(), 0o644)?;

    let mut programs = Vec::new();
    for (t, pkg) in &opts.tools {
        programs.push(tools::find_program(t, pkg.as_deref())?);
    }
    if let Some(sh) = &opts.shell {
        programs.push(sh.clone());
    }
    let closure = tools::closure(&programs)?;
    for (dest, src) in closure.files {
        let data = fs::read(&src).map_err(|e| Error::io("reading", &src, e))?;
        a.file(&dest, data, 0o755)?;
        report.tools.push(dest);
    }
    for (link, target) in closure.links {
        a.symlink(&link, &target)?;
    }
    if let Some(sh) = &opts.shell {
        a.symlink("bin/sh", &sh.to_string_lossy())?;
    }

    // Modules.
    let tree = Tree::open(&kernel.modules_root)?;
    let mut names: Vec<String> = match &opts.only_modules {
        Some(o) => o.clone(),
        None => kmod::DEFAULT_MODULES
            .iter()
            .map(|s| s.to_string())
            .collect(),
    };
    names.extend(opts.add_modules.iter().cloned());
    let sel = tree.select(&names)?;
    let explicit_missing: Vec<String> = sel
        .missing
        .iter()
        .filter(|m| opts.add_modules.iter().any(|a| kmod::normalize(a) == **m))
        .cloned()
        .collect();
    if !explicit_missing.is_empty() {
        return Err(Error::UnknownModules {
            version: kernel.version.clone(),
            names: explicit_missing.join(", "),
        });
    }
    add_modules(&mut a, &tree, &sel)?;
    add_firmware(&mut a, opts, &sel, &mut report)?;
    report.modules = sel.modules.keys().cloned().collect();
    report.modules_builtin = sel.builtin.clone();
    report.modules_not_in_kernel = sel.missing.clone();
    report.modules_size = sel.total_size();

    // Extra files last: they may replace anything above.
    for (src, dest) in &opts.add_files {
        let data = fs::read(src).map_err(|e| Error::io("reading --add-file", src, e))?;
        let perm = fs::metadata(src)
            .map(|m| std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o777)
            .unwrap_or(0o644);
        a.file(dest, data, perm)?;
    }

    let cpio = a.to_bytes(opts.mtime);
    report.initramfs_entries = a.len();
    report.initramfs_uncompressed = cpio.len() as u64;
    let image = compress(&cpio, opts.zstd_level)
        .map_err(|e| Error::io("compressing", Path::new("initramfs"), e))?;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(Built {
        image,
        kernel,
        report,
    })
}

/// zstd in multi-threaded mode with one worker per core: its output does
/// not depend on the number of workers (zstd >= 1.5), so builds stay
/// bit-identical from one machine to the next, and two cores halve the
/// longest step of `image-builder all`.
fn compress(data: &[u8], level: i32) -> std::io::Result<Vec<u8>> {
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let mut c = zstd::bulk::Compressor::new(level)?;
    c.set_parameter(zstd::zstd_safe::CParameter::NbWorkers(workers as u32))?;
    c.compress(data)
}

fn add_modules(a: &mut Archive, tree: &Tree, sel: &Selection) -> Result<()> {
    let base = format!("lib/modules/{}", tree.version);
    for m in sel.modules.values() {
        let src = tree.root.join(&m.path);
        let data = fs::read(&src).map_err(|e| Error::io("reading", &src, e))?;
        a.file(&format!("{base}/{}", m.path), data, 0o644)?;
    }
    a.file(
        &format!("{base}/modules.dep"),
        sel.modules_dep().into_bytes(),
        0o644,
    )?;
    a.file(
        &format!("{base}/modules.alias"),
        sel.modules_alias().into_bytes(),
        0o644,
    )?;
    for f in [
        "modules.builtin",
        "modules.builtin.modinfo",
        "modules.order",
    ] {
        let p = tree.root.join(f);
        if let Ok(data) = fs::read(&p) {
            a.file(&format!("{base}/{f}"), data, 0o644)?;
        }
    }
    Ok(())
}

/// A place firmware files are looked up, and how the report names it.
struct FirmwareDir {
    path: PathBuf,
    origin: String,
    /// Symlinks must stay inside `path` (an unpacked package: its links
    /// are relative, like `intel/ice/ddp/ice.pkg -> ice-1.3.30.0.pkg`;
    /// one leaving it would read the build host's files). Host
    /// directories may link anywhere (`regulatory.db` -> /etc/alternatives).
    confined: bool,
}

fn find_firmware<'a>(dirs: &'a [FirmwareDir], name: &str) -> Option<(PathBuf, &'a FirmwareDir)> {
    if name.contains("..") || name.starts_with('/') {
        return None;
    }
    dirs.iter().map(|d| (d.path.join(name), d)).find(|(p, d)| {
        p.is_file()
            && (!d.confined
                || matches!((p.canonicalize(), d.path.canonicalize()),
                            (Ok(f), Ok(root)) if f.starts_with(&root)))
    })
}

/// The Debian firmware packages, fetched when some firmware is wanted at
/// all. Firmware is taken for every selected module, not only NICs: the
/// packages are chosen for the NICs, but a storage or USB module whose
/// firmware they happen to hold works better with it, and the cost is
/// only the files named.
fn debian_firmware(opts: &Options, sel: &Selection) -> Vec<Fetched> {
    let wanted = !opts.add_firmware.is_empty() || sel.modules.values().any(|m| !m.firmware.is_empty());
    if !wanted || opts.debian_firmware.is_empty() {
        return Vec::new();
    }
    firmware::fetch(
        &Cache::new(&opts.cache),
        &opts.apt_etc,
        &firmware::dedup(&opts.debian_firmware),
    )
}

fn add_firmware(
    a: &mut Archive,
    opts: &Options,
    sel: &Selection,
    report: &mut Report,
) -> Result<()> {
    let fetched = debian_firmware(opts, sel);
    add_firmware_from(a, opts, sel, fetched, report)
}

/// The firmware of `sel` and `opts.add_firmware`, looked up in the
/// packages `fetched` (in order), then in `opts.firmware_dirs`.
fn add_firmware_from(
    a: &mut Archive,
    opts: &Options,
    sel: &Selection,
    fetched: Vec<Fetched>,
    report: &mut Report,
) -> Result<()> {
    let mut dirs: Vec<FirmwareDir> = fetched
        .iter()
        .filter_map(|f| {
            Some(FirmwareDir {
                path: f.firmware_dir.clone()?,
                origin: f.label(),
                confined: true,
            })
        })
        .collect();
    dirs.extend(opts.firmware_dirs.iter().map(|d| FirmwareDir {
        path: d.clone(),
        origin: d.display().to_string(),
        confined: false,
    }));
    let add = |a: &mut Archive, report: &mut Report, fw: &str, p: &Path, origin: &str| {
        if report.firmware_from.contains_key(fw) {
            return Ok(());
        }
        let data = fs::read(p).map_err(|e| Error::io("reading", p, e))?;
        report.firmware_size += data.len() as u64;
        a.file(&format!("lib/firmware/{fw}"), data, 0o644)?;
        report.firmware_included.push(fw.to_string());
        report.firmware_from.insert(fw.to_string(), origin.to_string());
        Ok::<(), Error>(())
    };
    for m in sel.modules.values() {
        for fw in &m.firmware {
            match find_firmware(&dirs, fw) {
                Some((p, d)) => add(a, report, fw, &p, &d.origin)?,
                None => report.firmware_missing.push(FirmwareNote {
                    module: m.name.clone(),
                    file: fw.clone(),
                }),
            }
        }
    }
    for fw in &opts.add_firmware {
        let (p, d) = find_firmware(&dirs, fw).ok_or_else(|| Error::Missing {
            what: format!("firmware {fw}"),
            path: PathBuf::from(
                dirs.iter()
                    .map(|d| d.path.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            package: None,
        })?;
        add(a, report, fw, &p, &d.origin)?;
    }
    report.firmware_included.sort();
    report.firmware_included.dedup();
    report.firmware_note = firmware_note(opts, &fetched, &dirs, !report.firmware_missing.is_empty());
    report.firmware_packages = fetched;
    Ok(())
}

/// Why firmware is missing (or could be): the sentence for the report.
fn firmware_note(
    opts: &Options,
    fetched: &[Fetched],
    dirs: &[FirmwareDir],
    missing: bool,
) -> Option<String> {
    // Packages failing for the same reason (no mirror) share one line.
    let mut failed: Vec<(Vec<&str>, &str)> = Vec::new();
    for f in fetched {
        let Some(e) = f.error.as_deref() else { continue };
        match failed.iter_mut().find(|(_, why)| *why == e) {
            Some((packages, _)) => packages.push(&f.package),
            None => failed.push((vec![&f.package], e)),
        }
    }
    let failed: Vec<String> = failed
        .iter()
        .map(|(packages, why)| format!("{}: {why}", packages.join(", ")))
        .collect();
    let searched = || {
        dirs.iter()
            .map(|d| d.origin.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    };
    if !failed.is_empty() {
        Some(format!(
            "Debian firmware packages not available, so firmware they hold is missing (they are fetched from the non-free-firmware component of the Debian mirror in {}/sources*; once cached no network is needed): {}",
            opts.apt_etc.display(),
            failed.join("; ")
        ))
    } else if !missing {
        None
    } else if opts.debian_firmware.is_empty() {
        Some(format!(
            "Debian firmware packages not used (--no-debian-firmware); searched only: {}",
            searched()
        ))
    } else {
        Some(format!(
            "the missing files are in none of: {}",
            searched()
        ))
    }
}

impl Built {
    /// The kernel image's bytes.
    pub fn vmlinuz(&self) -> Result<Vec<u8>> {
        fs::read(&self.kernel.vmlinuz).map_err(|e| Error::io("reading", &self.kernel.vmlinuz, e))
    }
}

/// Build and write `initramfs.img`, `vmlinuz`, `build-report.json` and
/// `SHA256SUMS` into `out`.
pub fn write(opts: &Options, out: &Path) -> Result<Built> {
    let mut built = build(opts)?;
    let kernel = built.vmlinuz()?;
    crate::write_atomic(&out.join("vmlinuz"), &kernel)?;
    crate::write_atomic(&out.join("initramfs.img"), &built.image)?;
    built.report.add_output(out, "vmlinuz", &kernel);
    built.report.add_output(out, "initramfs.img", &built.image);
    built.report.write(out)?;
    Ok(built)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn module(name: &str, firmware: &[&str]) -> kmod::Module {
        kmod::Module {
            name: name.into(),
            path: format!("kernel/{name}.ko"),
            depends: vec![],
            aliases: vec![],
            firmware: firmware.iter().map(|s| s.to_string()).collect(),
            size: 1,
        }
    }

    fn file(dir: &Path, name: &str, data: &[u8]) {
        let p = dir.join(name);
        fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir");
        fs::write(p, data).expect("write");
    }

    /// Two packages and a firmware directory on disk: only the files the
    /// modules name are copied, packages first in order, then the
    /// directory; each file's origin is reported.
    #[test]
    fn firmware_comes_from_packages_then_dirs_and_only_named_files() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let (realtek, misc, host) = (
            tmp.path().join("realtek"),
            tmp.path().join("misc"),
            tmp.path().join("host"),
        );
        file(&realtek, "rtl_nic/rtl8168h-2.fw", b"realtek h");
        file(&realtek, "rtl_nic/rtl8125b-2.fw", b"not named by any module");
        file(&misc, "tigon/tg3.bin", b"tg3 from misc");
        file(&host, "tigon/tg3.bin", b"tg3 from the host");
        file(&host, "renesas_usb_fw.mem", b"host only");
        file(&host, "extra.bin", b"asked for");
        fs::create_dir_all(misc.join("intel/ice/ddp")).expect("mkdir");
        file(&misc, "intel/ice/ddp/ice-1.3.30.0.pkg", b"ddp");
        std::os::unix::fs::symlink("ice-1.3.30.0.pkg", misc.join("intel/ice/ddp/ice.pkg"))
            .expect("symlink");
        std::os::unix::fs::symlink(host.join("extra.bin"), misc.join("tigon/tg3_tso.bin"))
            .expect("symlink");
        let fetched = vec![
            Fetched {
                package: "firmware-realtek".into(),
                deb: Some("firmware-realtek_20230210-5_all.deb".into()),
                firmware_dir: Some(realtek),
                error: None,
            },
            Fetched {
                package: "firmware-misc-nonfree".into(),
                deb: Some("firmware-misc-nonfree_20230210-5_all.deb".into()),
                firmware_dir: Some(misc),
                error: None,
            },
        ];
        let mut sel = Selection::default();
        for m in [
            module("r8169", &["rtl_nic/rtl8168h-2.fw", "rtl_nic/rtl8411-1.fw"]),
            module("tg3", &["tigon/tg3.bin", "tigon/tg3_tso.bin"]),
            module("ice", &["intel/ice/ddp/ice.pkg"]),
            module("xhci_pci", &["renesas_usb_fw.mem"]),
            module("evil", &["../../etc/shadow"]),
        ] {
            sel.modules.insert(m.name.clone(), m);
        }
        let mut opts = Options::new("rescue".into(), "init".into());
        opts.firmware_dirs = vec![host.clone()];
        opts.add_firmware = vec!["extra.bin".into()];
        let kernel = no_kernel();
        let mut report = Report::new(&kernel, 0);
        let mut a = Archive::new();
        add_firmware_from(&mut a, &opts, &sel, fetched, &mut report).expect("adds");

        let data = |p: &str| match a.get(p).map(|e| &e.kind) {
            Some(crate::cpio::Kind::File(data)) => Some(data.clone()),
            _ => None,
        };
        assert_eq!(data("lib/firmware/rtl_nic/rtl8168h-2.fw").as_deref(), Some(&b"realtek h"[..]));
        assert_eq!(data("lib/firmware/tigon/tg3.bin").as_deref(), Some(&b"tg3 from misc"[..]));
        assert_eq!(data("lib/firmware/renesas_usb_fw.mem").as_deref(), Some(&b"host only"[..]));
        assert!(data("lib/firmware/rtl_nic/rtl8125b-2.fw").is_none(), "not named");
        // A package's relative symlink is followed; one leaving it is not.
        assert_eq!(data("lib/firmware/intel/ice/ddp/ice.pkg").as_deref(), Some(&b"ddp"[..]));
        assert!(data("lib/firmware/tigon/tg3_tso.bin").is_none());
        let files: Vec<&str> = a
            .iter()
            .filter(|(_, e)| matches!(e.kind, crate::cpio::Kind::File(_)))
            .map(|(p, _)| p)
            .collect();
        assert_eq!(files.len(), 5, "only the named files and --add-firmware: {files:?}");
        assert_eq!(
            report.firmware_included,
            [
                "extra.bin",
                "intel/ice/ddp/ice.pkg",
                "renesas_usb_fw.mem",
                "rtl_nic/rtl8168h-2.fw",
                "tigon/tg3.bin"
            ]
        );
        assert_eq!(report.firmware_from["rtl_nic/rtl8168h-2.fw"], "firmware-realtek 20230210-5");
        assert_eq!(report.firmware_from["tigon/tg3.bin"], "firmware-misc-nonfree 20230210-5");
        assert_eq!(report.firmware_from["extra.bin"], host.display().to_string());
        assert_eq!(report.firmware_size, (9 + 13 + 9 + 9 + 3) as u64);
        let missing: Vec<_> = report
            .firmware_missing
            .iter()
            .map(|n| (n.module.as_str(), n.file.as_str()))
            .collect();
        assert_eq!(
            missing,
            [
                ("evil", "../../etc/shadow"),
                ("r8169", "rtl_nic/rtl8411-1.fw"),
                ("tg3", "tigon/tg3_tso.bin")
            ]
        );
        let note = report.firmware_note.expect("missing files are explained");
        assert!(note.contains("none of: firmware-realtek 20230210-5, firmware-misc-nonfree"), "{note}");
        assert_eq!(report.firmware_packages.len(), 2);
    }

    /// A package that could not be fetched is said in the note, with the
    /// reason, and the build goes on with what the directories have.
    /// A kernel for the report only (nothing is read from it).
    fn no_kernel() -> Kernel {
        Kernel {
            package: "linux-image-x".into(),
            version: "x".into(),
            vmlinuz: "/x".into(),
            modules_root: "/x".into(),
        }
    }

    #[test]
    fn unfetched_package_is_explained() {
        let mut sel = Selection::default();
        let m = module("r8169", &["rtl_nic/rtl8168h-2.fw"]);
        sel.modules.insert(m.name.clone(), m);
        let mut opts = Options::new("rescue".into(), "init".into());
        opts.firmware_dirs = vec![];
        let kernel = no_kernel();
        let mut report = Report::new(&kernel, 0);
        let fetched = vec![Fetched {
            package: "firmware-realtek".into(),
            deb: None,
            firmware_dir: None,
            error: Some("Could not connect to 127.0.0.1:9".into()),
        }];
        add_firmware_from(&mut Archive::new(), &opts, &sel, fetched, &mut report).expect("builds");
        assert_eq!(report.firmware_missing.len(), 1);
        let note = report.firmware_note.clone().expect("explained");
        assert!(note.contains("firmware-realtek: Could not connect to 127.0.0.1:9"), "{note}");
        let json = serde_json::to_value(&report).expect("serializes");
        assert_eq!(json["firmware_packages"][0]["error"], "Could not connect to 127.0.0.1:9");
        assert!(report.summary().contains("firmware note: Debian firmware packages not available"));
    }

    #[test]
    fn compression_does_not_depend_on_the_number_of_workers() {
        // 32 MiB of text-like bytes: several zstd jobs at level 3.
        let mut x = 0x2545_f491u32;
        let data: Vec<u8> = (0..32 << 20)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                b"etaoin shrdlu\n"[(x % 14) as usize]
            })
            .collect();
        let one = {
            let mut c = zstd::bulk::Compressor::new(3).expect("zstd");
            c.set_parameter(zstd::zstd_safe::CParameter::NbWorkers(1))
                .expect("zstdmt");
            c.compress(&data).expect("compresses")
        };
        assert_eq!(compress(&data, 3).expect("compresses"), one);
        assert_eq!(
            zstd::bulk::decompress(&one, data.len()).expect("decompresses"),
            data
        );
    }
}
