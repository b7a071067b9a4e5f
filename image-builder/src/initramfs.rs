//! The live system's initramfs: `rescue-init` as `/init`, the static
//! `rescue`, the chosen kernel modules with their `modules.dep`/
//! `modules.alias`, their firmware when available, the tools `rescue` runs,
//! and extra files; a newc cpio compressed with zstd (the Debian kernel has
//! `CONFIG_RD_ZSTD=y`).
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
    /// Directories searched for firmware files (layout of /lib/firmware).
    pub firmware_dirs: Vec<PathBuf>,
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

fn find_firmware(dirs: &[PathBuf], name: &str) -> Option<PathBuf> {
    if name.contains("..") {
        return None;
    }
    dirs.iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn add_firmware(
    a: &mut Archive,
    opts: &Options,
    sel: &Selection,
    report: &mut Report,
) -> Result<()> {
    for m in sel.modules.values() {
        for fw in &m.firmware {
            match find_firmware(&opts.firmware_dirs, fw) {
                Some(p) => {
                    let data = fs::read(&p).map_err(|e| Error::io("reading", &p, e))?;
                    a.file(&format!("lib/firmware/{fw}"), data, 0o644)?;
                    report.firmware_included.push(fw.clone());
                }
                None => report.firmware_missing.push(FirmwareNote {
                    module: m.name.clone(),
                    file: fw.clone(),
                }),
            }
        }
    }
    for fw in &opts.add_firmware {
        let p = find_firmware(&opts.firmware_dirs, fw).ok_or_else(|| Error::Missing {
            what: format!("firmware {fw}"),
            path: PathBuf::from(
                opts.firmware_dirs
                    .iter()
                    .map(|d| d.to_string_lossy())
                    .collect::<Vec<_>>()
                    .join(":"),
            ),
            package: None,
        })?;
        let data = fs::read(&p).map_err(|e| Error::io("reading", &p, e))?;
        a.file(&format!("lib/firmware/{fw}"), data, 0o644)?;
        report.firmware_included.push(fw.clone());
    }
    report.firmware_included.sort();
    report.firmware_included.dedup();
    Ok(())
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
