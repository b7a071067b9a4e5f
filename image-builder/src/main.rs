//! `image-builder`: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use image_builder::initramfs::{self, Options};
use image_builder::pxe;

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
    Initramfs(Common),
    /// The hybrid ISO (BIOS + UEFI with Secure Boot; CD and USB stick)
    Iso {
        #[command(flatten)]
        common: Common,
        /// Output file name inside DIR
        #[arg(long, default_value = "rescue.iso")]
        name: String,
        /// Extra kernel arguments on every boot menu entry
        #[arg(long, default_value = "", allow_hyphen_values = true)]
        append: String,
    },
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
        #[command(flatten)]
        common: Common,
        /// Kernel command line of network-booted clients
        #[arg(long, default_value = image_builder::pxe::DEFAULT_CMDLINE)]
        cmdline: String,
    },
    /// Every medium implemented so far: DIR/{initramfs.img,vmlinuz},
    /// DIR/rescue.iso and the PXE bundle in DIR/pxe
    All {
        #[command(flatten)]
        common: Common,
        /// Kernel command line of network-booted clients
        #[arg(long, default_value = image_builder::pxe::DEFAULT_CMDLINE)]
        cmdline: String,
    },
}

#[derive(Args)]
struct Common {
    /// Output directory
    #[arg(short, long, value_name = "DIR")]
    output: PathBuf,
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
    /// Firmware files to include (relative to a --firmware-dir)
    #[arg(long, value_delimiter = ',')]
    add_firmware: Vec<String>,
    /// Where firmware files are looked for [default: /lib/firmware]
    #[arg(long, value_name = "DIR")]
    firmware_dir: Vec<PathBuf>,
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
        for f in &self.add_file {
            o.add_files.push(initramfs::parse_add_file(f)?);
        }
        o.shell = self.shell.clone();
        o.zstd_level = self.zstd_level;
        o.mtime = self.source_date_epoch.unwrap_or(0);
        Ok(o)
    }
}

fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.cmd {
        Cmd::Initramfs(c) => {
            let opts = c.options()?;
            let built = initramfs::write(&opts, &c.output)
                .with_context(|| format!("building the initramfs into {}", c.output.display()))?;
            eprint!("{}", built.report.summary());
        }
        Cmd::Iso {
            common: c,
            name,
            append,
        } => {
            let opts = c.options()?;
            let built = initramfs::write(&opts, &c.output)
                .with_context(|| format!("building the initramfs into {}", c.output.display()))?;
            let iso = c.output.join(&name);
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
        Cmd::Pxe { common: c, cmdline } => {
            let opts = c.options()?;
            let built = initramfs::build(&opts).context("building the initramfs")?;
            let m = pxe_bundle(&opts, &built, &c.output, &cmdline)?;
            eprintln!(
                "PXE bundle in {}: {} files",
                c.output.display(),
                m.files.len()
            );
        }
        Cmd::All { common: c, cmdline } => {
            let opts = c.options()?;
            let mut built = initramfs::write(&opts, &c.output)
                .with_context(|| format!("building the initramfs into {}", c.output.display()))?;
            let pxe_dir = c.output.join("pxe");
            let m = pxe_bundle(&opts, &built, &pxe_dir, &cmdline)?;
            for f in &m.files {
                built.report.outputs.push(image_builder::report::Output {
                    name: format!("pxe/{}", f.name),
                    ..f.clone()
                });
            }
            let iso = c.output.join("rescue.iso");
            let cache = image_builder::deb::Cache::new(&opts.cache);
            image_builder::iso::write(
                &iso,
                &cache,
                &built.vmlinuz()?,
                &built.image,
                "",
                opts.mtime,
            )
            .with_context(|| format!("building {}", iso.display()))?;
            let data = std::fs::read(&iso).with_context(|| format!("reading {}", iso.display()))?;
            built.report.add_output(&c.output, "rescue.iso", &data);
            built.report.outputs.sort_by(|a, b| a.name.cmp(&b.name));
            built
                .report
                .write(&c.output)
                .context("writing the build report")?;
            eprint!("{}", built.report.summary());
        }
    }
    Ok(())
}

fn pxe_bundle(
    opts: &Options,
    built: &initramfs::Built,
    dir: &std::path::Path,
    cmdline: &str,
) -> anyhow::Result<pxe::Manifest> {
    let cache = image_builder::deb::Cache::new(&opts.cache);
    let vmlinuz = built.vmlinuz()?;
    pxe::write_bundle(
        dir,
        &cache,
        &built.kernel.version,
        &vmlinuz,
        &built.image,
        cmdline,
        opts.mtime,
    )
    .with_context(|| format!("writing the PXE bundle into {}", dir.display()))
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("image-builder: {e:#}");
            if let Some(h) = e
                .chain()
                .find_map(|c| c.downcast_ref::<image_builder::Error>())
                .and_then(|e| e.hint())
            {
                eprintln!("hint: {h}");
            }
            ExitCode::FAILURE
        }
    }
}
