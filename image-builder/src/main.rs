//! `image-builder`: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use image_builder::initramfs::{self, Options};
use image_builder::{pxe, usb};

#[derive(Parser)]
#[command(
    name = "image-builder",
    version,
    about = "Build the rescue boot media, unprivileged and reproducibly"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The live initramfs and the kernel: DIR/initramfs.img, DIR/vmlinuz,
    /// DIR/build-report.json, DIR/SHA256SUMS
    Initramfs {
        /// Output directory
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        #[command(flatten)]
        common: Common,
    },
    /// The hybrid ISO (BIOS + UEFI with Secure Boot; CD and USB stick)
    Iso {
        /// Output directory
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Output file name inside DIR
        #[arg(long, default_value = "rescue.iso")]
        name: String,
        /// Extra kernel arguments on every boot menu entry
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        append: String,
    },
    /// The USB stick image (GPT: BIOS + UEFI with Secure Boot, and a data
    /// partition); --write puts it on a stick
    Usb(Box<UsbArgs>),
    /// WinPE: a copy of BOOT_WIM with rescue.exe and a winpeshl.ini that starts it
    Wim {
        /// Output directory (the result is DIR/boot.wim)
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        /// WinPE boot.wim (Windows ADK, or sources/boot.wim of an install medium)
        #[arg(long, value_name = "FILE")]
        boot_wim: PathBuf,
        /// The Windows build of rescue
        #[arg(long, value_name = "FILE")]
        exe: PathBuf,
        /// Image index to change [default: the WIM's boot index, else 1]
        #[arg(long)]
        index: Option<u32>,
    },
    /// The PXE bundle (kernel, initramfs, iPXE, shim + GRUB, manifest.json)
    /// in DIR, ready to serve over TFTP/HTTP
    Pxe {
        /// Output directory
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Kernel command line of network-booted clients
        #[arg(long, default_value = image_builder::pxe::DEFAULT_CMDLINE)]
        cmdline: String,
        /// Also serve arm64 UEFI clients: their live system's kernel (built
        /// elsewhere; this builder makes the x86-64 one)
        #[arg(long, value_name = "FILE", requires_all = ["arm64_initrd", "arm64_snp"])]
        arm64_kernel: Option<PathBuf>,
        /// The arm64 live system's initramfs
        #[arg(long, value_name = "FILE", requires = "arm64_kernel")]
        arm64_initrd: Option<PathBuf>,
        /// iPXE for arm64 UEFI using the firmware's NIC driver
        /// (bin-arm64-efi/snp.efi)
        #[arg(long, value_name = "FILE", requires = "arm64_kernel")]
        arm64_snp: Option<PathBuf>,
        /// iPXE for arm64 UEFI with its own NIC drivers (ipxe.efi), optional
        #[arg(long, value_name = "FILE", requires = "arm64_kernel")]
        arm64_ipxe: Option<PathBuf>,
    },
    /// Every medium but the WIM: DIR/{initramfs.img,vmlinuz}, DIR/rescue.iso,
    /// DIR/rescue-usb.img and the PXE bundle in DIR/pxe
    All {
        /// Output directory
        #[arg(short, long, value_name = "DIR")]
        output: PathBuf,
        #[command(flatten)]
        common: Common,
        /// Kernel command line of network-booted clients
        #[arg(long, default_value = image_builder::pxe::DEFAULT_CMDLINE)]
        cmdline: String,
        /// Extra kernel arguments on every ISO and USB boot menu entry
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        append: String,
    },
}

#[derive(Args)]
struct UsbArgs {
    /// Output image file
    #[arg(short, long, value_name = "FILE", required_unless_present = "from")]
    output: Option<PathBuf>,
    /// Write this existing image with --write instead of building one
    #[arg(
        long,
        value_name = "FILE",
        conflicts_with = "output",
        requires = "write"
    )]
    from: Option<PathBuf>,
    #[command(flatten)]
    common: Common,
    /// Extra kernel arguments on every boot menu entry
    #[arg(long, default_value = "", allow_hyphen_values = true)]
    append: String,
    /// Filesystem of the data partition (where rescue can save images)
    #[arg(long, value_enum, default_value = "exfat")]
    data_fs: DataFsArg,
    /// Size of the data partition in the image; --write grows it to fill
    /// the stick
    #[arg(long, default_value = "32M", value_name = "SIZE")]
    data_size: String,
    /// Write the image to this disk (e.g. /dev/sdb), with the safety rules
    /// of `rescue restore`: mounted or busy disks are refused
    #[arg(long, value_name = "DEV")]
    write: Option<PathBuf>,
    /// Do not ask before --write (every safety check still applies)
    #[arg(long, requires = "write")]
    yes: bool,
    /// Show what --write would do and exit
    #[arg(long, requires = "write")]
    dry_run: bool,
    /// With --dry-run: the plan as JSON on stdout
    #[arg(long, requires = "dry_run")]
    json: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DataFsArg {
    /// Readable on Windows, macOS and Linux
    Exfat,
    /// Linux only
    Ext4,
    /// No data partition
    None,
}

#[derive(Args)]
struct Common {
    /// Static (musl) `rescue` binary
    #[arg(
        long,
        default_value = "target/x86_64-unknown-linux-musl/release/rescue"
    )]
    rescue: PathBuf,
    /// Static (musl) `rescue-init` binary
    #[arg(
        long,
        default_value = "target/x86_64-unknown-linux-musl/release/rescue-init"
    )]
    init: PathBuf,
    /// Debian kernel package or metapackage
    #[arg(long, default_value = "linux-image-amd64")]
    kernel_package: String,
    /// Use an unpacked kernel tree (.../lib/modules/VERSION) instead
    #[arg(long, value_name = "DIR")]
    kernel_root: Option<PathBuf>,
    /// Package cache [default: $RESCUE_BUILD_CACHE or ~/.cache/rescue-image-builder]
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// More kernel modules (names, comma-separated or repeated)
    #[arg(long, value_delimiter = ',')]
    add_modules: Vec<String>,
    /// Only these modules (and their dependencies) instead of the default set
    #[arg(long, value_delimiter = ',')]
    only_modules: Option<Vec<String>>,
    /// Firmware files to include (relative to lib/firmware of a
    /// --debian-firmware package or to a --firmware-dir)
    #[arg(long, value_delimiter = ',')]
    add_firmware: Vec<String>,
    /// Where firmware files are looked for after the Debian firmware
    /// packages [default: /lib/firmware]
    #[arg(long, value_name = "DIR")]
    firmware_dir: Vec<PathBuf>,
    /// Debian firmware packages searched first for the files the modules
    /// name (only those are copied). From the non-free-firmware component
    /// of the mirror in the system's apt sources, which stay unchanged;
    /// fetched once into the cache, offline after that
    #[arg(
        long,
        value_delimiter = ',',
        value_name = "PKG",
        default_values_t = image_builder::firmware::DEFAULT_PACKAGES.iter().map(|p| p.to_string())
    )]
    debian_firmware: Vec<String>,
    /// Take firmware only from --firmware-dir, not from Debian's packages
    #[arg(long, conflicts_with = "debian_firmware")]
    no_debian_firmware: bool,
    /// Extra file: host path and absolute path in the image
    #[arg(long, value_name = "SRC:DEST")]
    add_file: Vec<String>,
    /// Include this shell (e.g. /usr/bin/busybox) as /bin/sh
    #[arg(long, value_name = "PATH")]
    shell: Option<PathBuf>,
    /// zstd level of the initramfs
    #[arg(long, default_value_t = 12)]
    zstd_level: i32,
    /// Timestamp of every file [default: $SOURCE_DATE_EPOCH or 0]
    #[arg(long, env = "SOURCE_DATE_EPOCH", value_name = "SECONDS")]
    source_date_epoch: Option<u32>,
}

impl Common {
    fn options(&self) -> anyhow::Result<Options> {
        let mut o = Options::new(self.rescue.clone(), self.init.clone());
        o.kernel_package = self.kernel_package.clone();
        o.kernel_root = self.kernel_root.clone();
        if let Some(c) = &self.cache {
            o.cache = c.clone();
        }
        o.add_modules = self.add_modules.clone();
        o.only_modules = self.only_modules.clone();
        o.add_firmware = self.add_firmware.clone();
        if !self.firmware_dir.is_empty() {
            o.firmware_dirs = self.firmware_dir.clone();
        }
        o.debian_firmware = if self.no_debian_firmware {
            Vec::new()
        } else {
            self.debian_firmware.clone()
        };
        for f in &self.add_file {
            o.add_files.push(initramfs::parse_add_file(f)?);
        }
        o.shell = self.shell.clone();
        o.zstd_level = self.zstd_level;
        o.mtime = self.source_date_epoch.unwrap_or(0);
        Ok(o)
    }
}

/// Exit codes (shared with `rescue`): 0 ok, 1 failed, 2 usage (clap),
/// 3 refused by a safety check, 4 verification failed.
#[derive(Clone, Copy)]
enum Exit {
    Failed = 1,
    Refused = 3,
    Verification = 4,
}

/// A refusal of the binary itself (no confirmation).
#[derive(Debug, thiserror::Error)]
#[error("refused: {0}")]
struct Refused(String, &'static str);

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Initramfs { output, common: c } => {
            let opts = c.options()?;
            let built = initramfs::write(&opts, &output)
                .with_context(|| format!("building the initramfs into {}", output.display()))?;
            eprint!("{}", built.report.summary());
        }
        Cmd::Iso {
            output,
            common: c,
            name,
            append,
        } => {
            let opts = c.options()?;
            let built = initramfs::write(&opts, &output)
                .with_context(|| format!("building the initramfs into {}", output.display()))?;
            let iso = output.join(&name);
            let cache = image_builder::deb::Cache::new(&opts.cache);
            image_builder::iso::write(
                &iso,
                &cache,
                &built.vmlinuz()?,
                &built.image,
                &append,
                opts.mtime,
            )
            .with_context(|| format!("building {}", iso.display()))?;
            let size = std::fs::metadata(&iso).map(|m| m.len()).unwrap_or(0);
            eprintln!("{}: {size} bytes", iso.display());
        }
        Cmd::Usb(a) => usb(*a)?,
        Cmd::Wim {
            output,
            boot_wim,
            exe,
            index,
        } => {
            let out = output.join("boot.wim");
            image_builder::wim::write(
                &image_builder::wim::Options {
                    boot_wim,
                    exe,
                    index,
                },
                &out,
            )
            .with_context(|| format!("building {}", out.display()))?;
            eprintln!("{}", out.display());
        }
        Cmd::Pxe {
            output,
            common: c,
            cmdline,
            arm64_kernel,
            arm64_initrd,
            arm64_snp,
            arm64_ipxe,
        } => {
            let opts = c.options()?;
            // Read the arm64 files first: a wrong path fails before the build.
            let read = |p: &PathBuf| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
            let arm64 = match (&arm64_kernel, &arm64_initrd, &arm64_snp) {
                (Some(k), Some(i), Some(s)) => Some((read(k)?, read(i)?, read(s)?, arm64_ipxe.as_ref().map(read).transpose()?)),
                _ => None,
            };
            let built = initramfs::build(&opts).context("building the initramfs")?;
            let arm = arm64.as_ref().map(|(kernel, initrd, snp, ipxe)| pxe::Arm64 { kernel, initrd, snp, ipxe: ipxe.as_deref() });
            let m = pxe_bundle(&opts, &built, &output, &cmdline, arm.as_ref())?;
            eprintln!(
                "PXE bundle in {}: {} files",
                output.display(),
                m.files.len()
            );
        }
        Cmd::All {
            output,
            common: c,
            cmdline,
            append,
        } => {
            let opts = c.options()?;
            let mut built = initramfs::write(&opts, &output)
                .with_context(|| format!("building the initramfs into {}", output.display()))?;
            let pxe_dir = output.join("pxe");
            let m = pxe_bundle(&opts, &built, &pxe_dir, &cmdline, None)?;
            for f in &m.files {
                built.report.outputs.push(image_builder::report::Output {
                    name: format!("pxe/{}", f.name),
                    ..f.clone()
                });
            }
            let cache = image_builder::deb::Cache::new(&opts.cache);
            let vmlinuz = built.vmlinuz()?;
            let iso = output.join("rescue.iso");
            image_builder::iso::write(&iso, &cache, &vmlinuz, &built.image, &append, opts.mtime)
                .with_context(|| format!("building {}", iso.display()))?;
            let usb_img = output.join("rescue-usb.img");
            image_builder::usb::write(
                &usb_img,
                &cache,
                &vmlinuz,
                &built.image,
                &usb::Options {
                    append: append.clone(),
                    data: Some((usb::DataFs::Exfat, usb::DEFAULT_DATA_SIZE)),
                    sde: opts.mtime,
                },
            )
            .with_context(|| format!("building {}", usb_img.display()))?;
            for name in ["rescue.iso", "rescue-usb.img"] {
                let p = output.join(name);
                let data = std::fs::read(&p).with_context(|| format!("reading {}", p.display()))?;
                built.report.add_output(&output, name, &data);
            }
            built.report.outputs.sort_by(|a, b| a.name.cmp(&b.name));
            built
                .report
                .write(&output)
                .context("writing the build report")?;
            eprint!("{}", built.report.summary());
        }
    }
    Ok(())
}

fn usb(a: UsbArgs) -> anyhow::Result<()> {
    let image = match (&a.output, &a.from) {
        (_, Some(from)) => from.clone(),
        (Some(out), None) => {
            let data = match a.data_fs {
                DataFsArg::None => None,
                fs => {
                    let size = imaging::blockdev::parse_size(&a.data_size)
                        .filter(|s| *s >= 8 * usb::MIB)
                        .with_context(|| {
                            format!("--data-size {}: not a size of at least 8M", a.data_size)
                        })?;
                    let fs = if fs == DataFsArg::Ext4 {
                        usb::DataFs::Ext4
                    } else {
                        usb::DataFs::Exfat
                    };
                    Some((fs, size.div_ceil(usb::MIB) * usb::MIB))
                }
            };
            let opts = a.common.options()?;
            let built = initramfs::build(&opts).context("building the initramfs")?;
            let cache = image_builder::deb::Cache::new(&opts.cache);
            let img = image_builder::usb::write(
                out,
                &cache,
                &built.vmlinuz()?,
                &built.image,
                &usb::Options {
                    append: a.append.clone(),
                    data,
                    sde: opts.mtime,
                },
            )
            .with_context(|| format!("building {}", out.display()))?;
            eprintln!(
                "{}: {} ({} bytes)",
                out.display(),
                imaging::blockdev::human_size(img.size),
                img.size
            );
            out.clone()
        }
        (None, None) => unreachable!("clap requires --output or --from"),
    };
    let Some(dev) = &a.write else {
        return Ok(());
    };
    let file =
        std::fs::File::open(&image).with_context(|| format!("opening {}", image.display()))?;
    let plan = usb::flash::plan(&image, &file, dev)
        .with_context(|| format!("planning to write {} to {}", image.display(), dev.display()))?;
    if a.dry_run {
        if a.json {
            println!("{}", serde_json::to_string_pretty(&plan)?);
        } else {
            print!("{}", plan.describe());
        }
        return Ok(());
    }
    eprint!("{}", plan.describe());
    confirm(a.yes, &plan.target.name)?;
    let out = usb::flash::execute(&plan, &file)
        .with_context(|| format!("writing {} to {}", image.display(), dev.display()))?;
    for n in &out.notes {
        eprintln!("note: {n}");
    }
    println!(
        "wrote {} to {} ({}) in {:.1} s",
        image.display(),
        plan.target.path.display(),
        imaging::blockdev::human_size(out.bytes_written),
        out.seconds
    );
    Ok(())
}

/// Ask to type the disk's name; `--yes` skips the question, and without a
/// terminal there is no one to ask: refuse.
fn confirm(yes: bool, name: &str) -> anyhow::Result<()> {
    use std::io::{BufRead, IsTerminal, Write};
    if yes {
        return Ok(());
    }
    if !std::io::stdin().is_terminal() {
        return Err(Refused(
            "writing needs confirmation and there is no terminal to ask on".into(),
            "review the plan with --dry-run, then pass --yes",
        )
        .into());
    }
    eprint!("Everything on it is overwritten. Type {name} to continue, anything else to stop: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .context("reading the answer")?;
    if line.trim() == name {
        Ok(())
    } else {
        Err(Refused(format!("the answer was not {name}"), "nothing was written").into())
    }
}

fn pxe_bundle(
    opts: &Options,
    built: &initramfs::Built,
    dir: &std::path::Path,
    cmdline: &str,
    arm64: Option<&pxe::Arm64<'_>>,
) -> anyhow::Result<pxe::Manifest> {
    let cache = image_builder::deb::Cache::new(&opts.cache);
    let vmlinuz = built.vmlinuz()?;
    pxe::write_bundle_with(
        dir,
        &cache,
        &built.kernel.version,
        &vmlinuz,
        &built.image,
        cmdline,
        opts.mtime,
        arm64,
    )
    .with_context(|| format!("writing the PXE bundle into {}", dir.display()))
}

/// The exit code and the hint for an error chain.
fn classify(e: &anyhow::Error) -> (Exit, Option<String>) {
    for c in e.chain() {
        if let Some(r) = c.downcast_ref::<Refused>() {
            return (Exit::Refused, Some(r.1.to_string()));
        }
        if let Some(ie) = c.downcast_ref::<imaging::Error>() {
            let exit = match ie.class() {
                imaging::ErrorClass::Refused => Exit::Refused,
                imaging::ErrorClass::Verification => Exit::Verification,
                _ => Exit::Failed,
            };
            return (exit, Some(ie.hint()));
        }
        if let Some(be) = c.downcast_ref::<imaging::blockdev::BlockError>() {
            let exit = match be {
                imaging::blockdev::BlockError::Busy { .. }
                | imaging::blockdev::BlockError::IdentityChanged { .. } => Exit::Refused,
                _ => Exit::Failed,
            };
            return (exit, Some(be.hint().to_string()));
        }
        if let Some(h) = c
            .downcast_ref::<image_builder::Error>()
            .and_then(|e| e.hint())
        {
            return (Exit::Failed, Some(h));
        }
    }
    (Exit::Failed, None)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("image-builder: {e:#}");
            let (exit, hint) = classify(&e);
            if let Some(h) = hint {
                eprintln!("hint: {h}");
            }
            ExitCode::from(exit as u8)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debian_firmware_default_is_the_library_default() {
        let Cmd::Initramfs { common, .. } = Cli::parse_from(["image-builder", "initramfs", "-o", "x"]).cmd else {
            unreachable!("parsed as initramfs")
        };
        assert_eq!(common.debian_firmware, image_builder::firmware::DEFAULT_PACKAGES);
        let o = common.options().expect("options");
        assert_eq!(o.debian_firmware, image_builder::firmware::DEFAULT_PACKAGES);
        let Cmd::Initramfs { common, .. } =
            Cli::parse_from(["image-builder", "initramfs", "-o", "x", "--no-debian-firmware"]).cmd
        else {
            unreachable!("parsed as initramfs")
        };
        assert!(common.options().expect("options").debian_firmware.is_empty());
        assert!(Cli::try_parse_from([
            "image-builder", "initramfs", "-o", "x", "--no-debian-firmware", "--debian-firmware", "firmware-realtek"
        ])
        .is_err());
    }
}
