//! The command line: clap definitions, dispatch, output and exit codes.

mod backup;
mod chain;
mod disks;
mod files;
mod image;
mod job;
#[cfg(unix)]
mod mount;
mod progress;
mod prompt;
mod shares;
pub(crate) mod show;
pub mod universal;
mod write;

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Exit codes (STYLE.md): 0 ok, 1 failed, 2 usage, 3 refused by a safety
/// check, 4 verification failed, 130 cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Exit {
    Failed = 1,
    Usage = 2,
    Refused = 3,
    Verification = 4,
    Cancelled = 130,
}

/// An error with the exit code it maps to.
#[derive(Debug)]
pub struct CliError {
    pub exit: Exit,
    pub error: anyhow::Error,
    pub hint: Option<String>,
}

impl<E: Into<anyhow::Error>> From<E> for CliError {
    fn from(e: E) -> Self {
        let error: anyhow::Error = e.into();
        let (exit, hint) = classify(&error);
        CliError { exit, error, hint }
    }
}

fn classify(e: &anyhow::Error) -> (Exit, Option<String>) {
    // A share or web server that failed: its own hint says what to do.
    for cause in e.chain() {
        if let Some(se) = cause.downcast_ref::<std::io::Error>().and_then(imaging::store::StoreError::find) {
            return (Exit::Failed, Some(se.hint().to_string()));
        }
        if let Some(se) = cause.downcast_ref::<imaging::store::StoreError>() {
            return (Exit::Failed, Some(se.hint().to_string()));
        }
        if let Some(se) = cause.downcast_ref::<imaging::store::shares::SharesError>() {
            return (Exit::Failed, Some(se.hint().to_string()));
        }
    }
    for cause in e.chain() {
        if let Some(ie) = cause.downcast_ref::<imaging::Error>() {
            let exit = match ie.class() {
                imaging::ErrorClass::Refused => Exit::Refused,
                imaging::ErrorClass::Verification => Exit::Verification,
                imaging::ErrorClass::Cancelled => Exit::Cancelled,
                imaging::ErrorClass::Failed => Exit::Failed,
            };
            return (exit, Some(ie.hint()));
        }
        if let Some(ie) = cause.downcast_ref::<imaging::image::ImageError>() {
            let exit = if ie.is_verification_failure() {
                Exit::Verification
            } else if matches!(ie, imaging::image::ImageError::Cancelled(_)) {
                Exit::Cancelled
            } else {
                Exit::Failed
            };
            return (exit, Some(ie.hint().to_string()));
        }
        if let Some(be) = cause.downcast_ref::<imaging::blockdev::BlockError>() {
            let exit = match be {
                imaging::blockdev::BlockError::Busy { .. } | imaging::blockdev::BlockError::IdentityChanged { .. } => Exit::Refused,
                _ => Exit::Failed,
            };
            return (exit, Some(be.hint().to_string()));
        }
        // A damaged image under a filesystem: the image error comes next.
        if let Some(fe) = cause.downcast_ref::<imaging::files::FilesError>() {
            if fe.image_error().is_none() {
                let exit = match fe {
                    imaging::files::FilesError::DestinationOnSource { .. } => Exit::Refused,
                    imaging::files::FilesError::NoPartition { .. } => Exit::Usage,
                    _ => Exit::Failed,
                };
                return (exit, Some(fe.hint().to_string()));
            }
        }
        if let Some(u) = cause.downcast_ref::<UsageError>() {
            return (Exit::Usage, Some(u.1.clone()));
        }
    }
    (Exit::Failed, None)
}

/// A wrong argument found after parsing (exit code 2).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(pub String, pub String);

pub fn usage(msg: impl Into<String>, hint: impl Into<String>) -> CliError {
    CliError { exit: Exit::Usage, error: UsageError(msg.into(), hint.into()).into(), hint: None }
}

/// Print the error chain and the hint; return the exit code.
pub fn report_error(e: &CliError) -> i32 {
    eprintln!("error: {}", e.error);
    for cause in e.error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    let hint = e.hint.clone().or_else(|| e.error.chain().find_map(|c| c.downcast_ref::<UsageError>().map(|u| u.1.clone())));
    if let Some(h) = hint.filter(|h| !h.is_empty()) {
        eprintln!("hint: {h}");
    }
    e.exit as i32
}

pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    // The SMB client logs its failures itself; our errors say them once, with a hint.
    let default = if verbose < 2 { format!("{default},smb=off,smb_transport=off") } else { default.to_string() };
    let filter = tracing_subscriber::EnvFilter::try_from_env("RESCUE_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).try_init();
}

/// Back up, restore and clone disks offline; check and inspect images.
///
/// DISK is a block device (/dev/sdb, /dev/nvme0n1, /dev/loop0) or a raw disk
/// image file. Results go to stdout (--json for machines); progress, messages
/// and questions to stderr. Exit codes: 0 ok, 1 failed, 2 usage, 3 refused by
/// a safety check, 4 verification failed, 130 cancelled.
///
/// A disk or image that is mostly not in the page cache has its bulk data
/// read past it (O_DIRECT, eight reads in flight); RESCUE_DIRECT_IO=1 reads
/// every disk and image that way.
#[derive(Debug, Parser)]
#[command(name = "rescue", version, max_term_width = 80)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Machine-readable JSON on stdout.
    #[arg(long, global = true)]
    pub json: bool,
    /// Do not ask for confirmation (safety checks still apply).
    #[arg(long, short = 'y', global = true)]
    pub yes: bool,
    /// More log output on stderr (-v, -vv); RESCUE_LOG overrides.
    #[arg(long, short = 'v', global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
    /// A disk image file the TUI shows as a disk (repeatable). Without a
    /// subcommand, `rescue` starts the TUI.
    #[arg(long = "disk", global = true, value_name = "FILE")]
    pub disks: Vec<PathBuf>,
    /// Read the password of the SMB shares named on the command line
    /// (smb://USER@HOST/SHARE/...) from this file; else a saved one, else
    /// RESCUE_SMB_PASSWORD, else it is asked for.
    #[arg(long, global = true, value_name = "FILE")]
    pub smb_password_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List disks with their partitions, filesystems and users.
    Disks(DisksArgs),
    /// PCI devices and their drivers: a storage or network controller that
    /// no driver claimed is why its disks or its network are missing.
    Hardware(HardwareArgs),
    /// Back up a disk, its system partitions, or chosen partitions.
    #[command(subcommand)]
    Backup(BackupCmd),
    /// Show what an image holds.
    Info(ImageArgs),
    /// Verify every byte of an image (exit 4 when damaged).
    Check(CheckArgs),
    /// List a directory of a partition in an image, without restoring it
    /// (ext2/3/4, FAT12/16/32, NTFS).
    Ls(LsArgs),
    /// Copy files and directories out of a partition in an image, without
    /// restoring it (ext2/3/4, FAT12/16/32, NTFS incl. compressed files).
    Extract(ExtractArgs),
    /// Show a partition of an image (any point of a chain) read-only at a
    /// folder, through FUSE: its files (ext2/3/4, FAT, NTFS, read by rescue
    /// itself), or with --raw the partition as one file for the kernel's
    /// own drivers. Returns once mounted; `rescue umount DIR` ends it.
    Mount(MountArgs),
    /// End a `rescue mount`.
    Umount(UmountArgs),
    /// Files straight off a disk that no longer boots: list them, copy them
    /// to another disk. The disk is only read (nothing is mounted or
    /// written); a damaged filesystem is read as far as it goes.
    #[command(subcommand)]
    Files(FilesCmd),
    /// Restore an image to a disk, a partition, or free space.
    Restore(RestoreArgs),
    /// Copy a disk or a partition to another, without an image.
    Clone(CloneArgs),
    /// Make the Windows or Linux on a disk boot on other storage hardware:
    /// enable or inject drivers offline; rebuild the initramfs, reinstall GRUB.
    UniversalRestore(UniversalArgs),
    /// Show the backup chains in a folder (or an image's chain) as a tree:
    /// kind, time, size, parent, comment, and whether every file each point
    /// depends on is present and intact.
    Points(PointsArgs),
    /// Fold a chain up to a point into one full image (verified before it
    /// reports success).
    Merge(MergeArgs),
    /// Delete old backup points by a retention scheme, never one that a kept
    /// point depends on.
    Prune(PruneArgs),
    /// Saved SMB locations (NAS shares) for backups and restores.
    ///
    /// A saved share's NAME:PATH stands for its URL wherever a path or URL
    /// goes, with its saved password (e.g. `rescue backup disk /dev/sda -o
    /// nas:pc1/full.rimg`); smb://HOST/SHARE without a user is guest access.
    #[command(subcommand)]
    Shares(SharesCmd),
    /// Run the unattended job a PXE server gave this machine: restore an
    /// image to a disk or back a disk up to a share, report progress to the
    /// server, then power off or reboot. rescue-init starts it when the
    /// kernel command line has rescue.job=; every option defaults to its
    /// RESCUE_* variable (from rescue.NAME= on the command line).
    Job(JobArgs),
}

#[derive(Debug, Args)]
pub struct HardwareArgs {
    /// Every PCI device, not only the storage, network and USB controllers
    /// without a driver.
    #[arg(long)]
    pub all: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobKind {
    Restore,
    Backup,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum JobThen {
    Poweroff,
    Reboot,
}

#[derive(Debug, Args)]
pub struct JobArgs {
    /// What to do.
    #[arg(long, value_enum, env = "RESCUE_JOB")]
    pub job: Option<JobKind>,
    /// The image to restore: a path, an http(s):// or smb:// URL, a saved
    /// share's NAME:PATH, or a path in the PXE server's image folder
    /// (pxe-server --images), fetched as SERVER/images/IMAGE.
    #[arg(long, env = "RESCUE_IMAGE")]
    pub image: Option<String>,
    /// The disk: a device such as /dev/sda, or diskN / N for the Nth fixed
    /// disk of `rescue disks` (USB, removable, loop and read-only disks are
    /// not counted).
    #[arg(long = "target", value_name = "DISK", env = "RESCUE_DISK")]
    pub target: Option<String>,
    /// The folder a backup goes to (smb:// URL or NAME:PATH); the image is
    /// named MAC-DISK-YYYYMMDD-HHMMSS.rimg.
    #[arg(long, env = "RESCUE_SHARE")]
    pub share: Option<String>,
    /// After a job that succeeded (a failed one leaves the machine on).
    #[arg(long, value_enum, env = "RESCUE_THEN")]
    pub then: Option<JobThen>,
    /// The PXE server (http://HOST:PORT or HOST[:PORT]): where relative
    /// images come from and where progress goes.
    #[arg(long, env = "RESCUE_SERVER")]
    pub server: Option<String>,
    /// This machine's MAC address, as the server knows it (default: the
    /// interface rescue-init brought up).
    #[arg(long, env = "RESCUE_MAC")]
    pub mac: Option<String>,
    /// Partition sizes of a restore: keep (default) or fill the disk.
    #[arg(long, value_parser = ["keep", "fill"], env = "RESCUE_LAYOUT")]
    pub layout: Option<String>,
    /// Seconds to wait for the image's web server to answer (the network
    /// may still be coming up).
    #[arg(long, default_value_t = 60)]
    pub wait: u64,
    /// Milliseconds between progress reports to the server.
    #[arg(long, default_value_t = 2000, env = "RESCUE_REPORT_MS")]
    pub report_ms: u64,
    /// Print the command the job runs, and exit.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Subcommand)]
pub enum SharesCmd {
    /// Save a location under a short name. The password is kept (in a file
    /// only this user can read) only with --save-password.
    Add {
        name: String,
        /// smb://[DOMAIN;]USER@HOST[:PORT]/SHARE[/PATH]
        url: String,
        /// Keep the password too (from --smb-password-file,
        /// RESCUE_SMB_PASSWORD, or asked for).
        #[arg(long)]
        save_password: bool,
    },
    /// List the saved locations (never their passwords).
    List,
    /// Forget a saved location.
    Remove { name: String },
    /// Connect to a saved location (or a URL), list its folder and check
    /// that files can be written there.
    Test {
        /// A saved name or an smb:// URL.
        share: String,
    },
}

#[derive(Debug, Args)]
pub struct PruneArgs {
    /// The folder holding the backup points.
    pub dir: PathBuf,
    /// full:N | incremental:N | incremental:groups=M | differential:N |
    /// differential:groups=M | space:SIZE | age:AGE (30d, 8w, 6m) |
    /// gfs:daily=D,weekly=W,monthly=M
    #[arg(long)]
    pub scheme: String,
    /// List what would be deleted, and why, and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Read the password from this file (encrypted chains).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct PointsArgs {
    /// A folder of images (local or smb://), or one image (then only its
    /// task is shown; an http(s):// URL shows the point and the points it
    /// depends on).
    pub path: PathBuf,
    /// Also check every stored byte of each point (the fast check).
    #[arg(long)]
    pub verify: bool,
    /// Read the password from this file (encrypted chains).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// The point whose state the new full image holds.
    pub point: PathBuf,
    /// The new full image.
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// After the new image is verified, delete the merged points' files that
    /// no remaining point depends on.
    #[arg(long)]
    pub delete_merged: bool,
    /// Read the password from this file (encrypted chains).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// Options of a new point of an existing backup task.
#[derive(Debug, Args)]
pub struct PointOpts {
    /// An image of the task (for `incr`, the last point).
    pub image: PathBuf,
    /// The new point (default: beside IMAGE, named TASK.pNNN-KIND.img).
    #[arg(short = 'o', long = "output")]
    pub output: Option<PathBuf>,
    /// The source disk, when it is not found by its serial, WWN or
    /// partition-table id (its identity is still checked).
    #[arg(long, value_name = "DISK")]
    pub source: Option<PathBuf>,
    /// zstd level (default: the task's).
    #[arg(long, value_enum)]
    pub compress: Option<CompressArg>,
    /// Read the password from this file (encrypted tasks).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Check the new point right after writing it.
    #[arg(long)]
    pub verify: bool,
    /// Passphrase or key file of the source's encrypted (LUKS) partitions,
    /// as for `backup disk`: one it opens keeps only the used sectors.
    /// Repeatable; RESCUE_LUKS_PASSWORD also gives one.
    #[arg(long, value_name = "FILE")]
    pub luks_key_file: Vec<PathBuf>,
    /// A comment stored in the point.
    #[arg(long)]
    pub comment: Option<String>,
    /// Show the plan and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Go on with a point written to a share that was cut off (same
    /// options): what is on the share up to its last checkpoint is kept.
    #[arg(long, conflicts_with = "dry_run")]
    pub resume: bool,
    /// Read and hash every used block. By default the data of files whose
    /// inode (ext) or MFT record (NTFS) is unchanged since the base point is
    /// not read (like Acronis' fast incremental and Macrium's delta
    /// indexing); a write around the filesystem (a raw write to the disk)
    /// is seen only with this option.
    #[arg(long)]
    pub read_all: bool,
}

#[derive(Debug, Args)]
pub struct DisksArgs {
    /// Disk image files to list as well.
    pub files: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum BackupCmd {
    /// The whole disk: every partition, the partition table and the
    /// boot-loader gaps.
    Disk {
        /// The disk to back up.
        disk: PathBuf,
        #[command(flatten)]
        opts: BackupOpts,
    },
    /// Chosen partitions: DISK:N[,N...] (e.g. /dev/sda:2,3).
    Part {
        /// DISK:N[,N...]
        spec: String,
        #[command(flatten)]
        opts: BackupOpts,
    },
    /// The partitions needed to boot the OS on the disk (EFI, MSR, Windows,
    /// recovery; or EFI/BIOS boot, /boot, root, swap). Says which and why.
    System {
        disk: PathBuf,
        #[command(flatten)]
        opts: BackupOpts,
    },
    /// A new incremental point: only chunks changed since IMAGE (the last
    /// point) are stored. The source is found by its identity.
    Incr(PointOpts),
    /// A new differential point: only chunks changed since the chain's full
    /// backup are stored.
    Diff(PointOpts),
    /// A new full point of the same task (starts a new chain).
    Full(PointOpts),
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum CompressArg {
    None,
    Fast,
    Normal,
    High,
}

#[derive(Debug, Args)]
pub struct BackupOpts {
    /// The image to write: a path, smb://USER@HOST/SHARE/PATH, or "-" for
    /// stdout; split images get .001, .002, ...
    #[arg(short = 'o', long = "output")]
    pub output: PathBuf,
    /// zstd level: none, fast (1), normal (3), high (12).
    #[arg(long, value_enum, default_value = "normal")]
    pub compress: CompressArg,
    /// Encrypt with AES-256-GCM (password from --password-file,
    /// RESCUE_PASSWORD, or asked twice on the terminal).
    #[arg(long)]
    pub encrypt: bool,
    /// Read the password from this file (first line).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    /// Split into volumes of this size (e.g. 4000M for FAT32, 4480M for
    /// DVD); at least 50M.
    #[arg(long)]
    pub split: Option<String>,
    /// Copy every sector, not only the blocks filesystems use.
    #[arg(long)]
    pub sector_by_sector: bool,
    /// Passphrase or key file of encrypted (LUKS) partitions: one it opens
    /// keeps only its header and the sectors its filesystem uses, stored
    /// still encrypted. Repeat for several; RESCUE_LUKS_PASSWORD also gives
    /// one. Without it such partitions are copied sector by sector.
    #[arg(long, value_name = "FILE")]
    pub luks_key_file: Vec<PathBuf>,
    /// Check the whole image right after writing it.
    #[arg(long)]
    pub verify: bool,
    /// A comment stored in the image.
    #[arg(long)]
    pub comment: Option<String>,
    /// Show the plan and exit.
    #[arg(long)]
    pub dry_run: bool,
    /// Sector size to assume for a disk image file source.
    #[arg(long, value_name = "BYTES")]
    pub sector_size: Option<u32>,
    /// Worker threads (default: one per core).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Go on with a backup to a share that was cut off (same source and
    /// options): what is on the share up to its last checkpoint is kept.
    #[arg(long, conflicts_with_all = ["split", "dry_run"])]
    pub resume: bool,
}

#[derive(Debug, Args)]
pub struct ImageArgs {
    /// The image (a single file, or NAME / NAME.001 of a split set); or an
    /// smb://USER@HOST/SHARE/PATH URL of one on a share, or an http:// or
    /// https:// URL of one on a web server with range requests.
    pub image: PathBuf,
    /// Read the password from this file (encrypted images).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// Also decrypt and decompress every chunk and check its own hash
    /// (slower; the default already checks every stored byte).
    #[arg(long)]
    pub deep: bool,
}

#[derive(Debug, Args)]
pub struct LsArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// The partition (its number, as `rescue info` shows it).
    #[arg(long)]
    pub part: u32,
    /// The directory (or file) to list.
    #[arg(default_value = "/")]
    pub path: String,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// The partition (its number, as `rescue info` shows it).
    #[arg(long)]
    pub part: u32,
    /// An empty folder to mount on.
    pub dir: PathBuf,
    /// Show the partition as one read-only file, DIR/partN.img, to mount
    /// with the kernel's driver (mount -o ro,loop DIR/partN.img /mnt).
    #[arg(long)]
    pub raw: bool,
    /// Serve in this process until unmounted (instead of in the background).
    #[arg(long)]
    pub foreground: bool,
}

#[derive(Debug, Args)]
pub struct UmountArgs {
    /// The folder given to `rescue mount`.
    pub dir: PathBuf,
}

#[derive(Debug, Subcommand)]
pub enum FilesCmd {
    /// List a directory of a partition of a disk (ext2/3/4, FAT12/16/32, NTFS).
    Ls(FilesLsArgs),
    /// Copy files and folders off a partition of a disk into a folder on
    /// another disk, with their times; unreadable files are skipped and
    /// listed at the end (exit status 1). A folder on the source disk is
    /// refused.
    Copy(FilesCopyArgs),
}

#[derive(Debug, Args)]
pub struct FilesLsArgs {
    /// DISK:N (a partition of a disk or disk image file), or DISK when the
    /// whole disk holds one filesystem.
    pub source: String,
    /// The directory (or file) to list.
    #[arg(default_value = "/")]
    pub path: String,
}

#[derive(Debug, Args)]
pub struct FilesCopyArgs {
    /// DISK:N (a partition of a disk or disk image file), or DISK when the
    /// whole disk holds one filesystem.
    pub source: String,
    /// Files and folders to copy (folders with all they hold; / copies
    /// everything).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
    /// The folder to copy into (made if missing), on another disk, or on
    /// an SMB share: smb://USER@HOST/SHARE/PATH or a saved share's NAME:PATH.
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Replace files that exist in DIR (default: refuse them).
    #[arg(long, conflicts_with = "skip_existing")]
    pub overwrite: bool,
    /// Leave files that exist in DIR as they are.
    #[arg(long)]
    pub skip_existing: bool,
}

#[derive(Debug, Args)]
pub struct ExtractArgs {
    #[command(flatten)]
    pub image: ImageArgs,
    /// The partition (its number, as `rescue info` shows it).
    #[arg(long)]
    pub part: u32,
    /// Files and directories to copy (directories with all they hold; /
    /// copies the whole partition).
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<String>,
    /// The folder to copy into (made if missing), local or on an SMB share
    /// (smb://USER@HOST/SHARE/PATH or a saved share's NAME:PATH).
    #[arg(long, value_name = "DIR")]
    pub to: PathBuf,
    /// Replace files that exist in DIR (default: refuse them).
    #[arg(long, conflicts_with = "skip_existing")]
    pub overwrite: bool,
    /// Leave files that exist in DIR as they are.
    #[arg(long)]
    pub skip_existing: bool,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum LayoutArg {
    /// Same partition sizes as the source.
    Keep,
    /// Grow data partitions proportionally to fill a larger disk, and their
    /// filesystems (ext2/3/4 with resize2fs, NTFS with ntfsresize; FAT stays).
    Fill,
}

#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum TableArg {
    /// GPT (UEFI boot; a BIOS boot partition lets GRUB boot it with BIOS).
    Gpt,
    /// MBR: up to 2 TiB; more than 4 partitions become logical ones
    /// (Windows boots from MBR only with BIOS/CSM).
    Mbr,
}

#[derive(Debug, Args)]
pub struct LayoutOpts {
    /// Partition sizes on the target. With either, a smaller target disk
    /// shrinks ext2/3/4 and NTFS filesystems when their used data fits
    /// (in a scratch file, never on the source); FAT, EFI, MSR and recovery
    /// partitions keep their size.
    #[arg(long, value_enum, default_value = "keep")]
    pub layout: LayoutArg,
    /// Partition table of a whole-disk target (default: the source's kind);
    /// refused when the converted disk would not boot.
    #[arg(long, value_enum)]
    pub table: Option<TableArg>,
    /// Folder for the scratch files of shrinking filesystems (needs about
    /// their used size free; not on the target).
    #[arg(long, value_name = "DIR", env = "RESCUE_SCRATCH_DIR", default_value = "/var/tmp")]
    pub scratch_dir: PathBuf,
    /// Move partition starts to multiples of this size (SSD alignment), e.g. 1MiB.
    #[arg(long)]
    pub align: Option<String>,
    /// A partition's size on a whole-disk target: N=SIZE with the image's
    /// partition number, e.g. --size 3=200GiB (repeatable). Smaller shrinks
    /// an ext2/3/4 or NTFS filesystem (never below what it holds), larger
    /// grows it; with --layout fill the others share the rest.
    #[arg(long = "size", value_name = "N=SIZE")]
    pub sizes: Vec<String>,
    /// Write every sector of the restored regions (zeros where the source
    /// filesystem had free blocks).
    #[arg(long)]
    pub sector_by_sector: bool,
    /// Show the plan and exit without writing.
    #[arg(long)]
    pub dry_run: bool,
    /// Sector size to assume for disk image files.
    #[arg(long, value_name = "BYTES")]
    pub sector_size: Option<u32>,
}

#[derive(Debug, Args)]
pub struct RestoreArgs {
    /// The image to restore: a file, an smb://USER@HOST/SHARE/PATH URL, or
    /// an http:// or https:// URL (only the chunks needed are fetched).
    pub image: PathBuf,
    /// Target: DISK (whole disk; with --part: new partition in free space) or
    /// DISK:M (into existing partition M).
    #[arg(long)]
    pub to: String,
    /// Restore only this partition of the image.
    #[arg(long)]
    pub part: Option<u32>,
    /// Changed-block restore: read the target, hash it chunk by chunk, and
    /// write only chunks that differ from the image (fast onto the disk the
    /// image came from; the result is the same as a full restore).
    #[arg(long)]
    pub only_changed: bool,
    /// Continue a restore that stopped (its share or web server went away,
    /// or it was cancelled): the target is read and hashed, and only the
    /// chunks it does not hold yet are fetched and written. Give the same
    /// image, target and options as before.
    #[arg(long)]
    pub resume: bool,
    /// Read the password from this file (encrypted images).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
    #[command(flatten)]
    pub layout: LayoutOpts,
    /// After the restore, make the Windows on the target boot on this
    /// machine's (or --for) storage hardware.
    #[arg(long)]
    pub universal: bool,
    #[command(flatten)]
    pub universal_opts: UniversalOpts,
}

/// Target hardware and driver sources for universal restore.
#[derive(Debug, Args, Clone, Default)]
pub struct UniversalOpts {
    /// Target hardware: ahci, nvme, virtio, vmware, hyperv, intel-rst, or a
    /// hardware ID like PCI\VEN_8086&DEV_2922 (repeatable; default: this
    /// machine's storage controllers).
    #[arg(long = "for", value_name = "HW")]
    pub for_hw: Vec<String>,
    /// Folders searched recursively for driver packages (.inf).
    #[arg(long, value_name = "DIR")]
    pub drivers: Vec<PathBuf>,
    /// Switch off filter drivers of hardware that is gone (Intel RST).
    #[arg(long)]
    pub disable_stale: bool,
    /// Linux: a filesystem UUID that changed; references in fstab,
    /// crypttab, GRUB and mdadm.conf are rewritten (repeatable).
    #[arg(long, value_name = "OLD=NEW")]
    pub map_uuid: Vec<String>,
    /// Linux: make no firmware boot entry. Without it one is made for GRUB
    /// when fixing this machine's own disk (no --for) after an EFI boot.
    #[arg(long)]
    pub no_boot_entry: bool,    /// Linux: passphrase or key file of an encrypted (LUKS) partition holding
    /// the system; it is unlocked here (no dm-crypt needed) and its crypttab
    /// line made to unlock at boot. Repeatable; RESCUE_LUKS_PASSWORD also
    /// gives one.
    #[arg(long = "luks-key-file", value_name = "FILE")]
    pub universal_luks_key_file: Vec<PathBuf>,
    /// Passphrases given otherwise (typed in the TUI).
    #[arg(skip)]
    pub luks_passphrases: imaging::luks::Passphrases,
}

#[derive(Debug, Args)]
pub struct UniversalArgs {
    /// The disk holding the restored Windows.
    #[arg(required_unless_present = "windows_dir")]
    pub disk: Option<PathBuf>,
    /// Only this partition.
    #[arg(long, requires = "disk")]
    pub part: Option<u32>,
    /// Instead of a disk: a Windows folder that is already reachable, like
    /// D:\Windows on WinPE, or the root of its volume (D:\).
    #[arg(long, value_name = "DIR", conflicts_with = "disk")]
    pub windows_dir: Option<PathBuf>,
    #[command(flatten)]
    pub opts: UniversalOpts,
    /// Show every key, file and command that would change or run, and exit.
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct CloneArgs {
    /// Source: DISK or DISK:N.
    pub source: String,
    /// Target: DISK, or DISK:M (existing partition), or DISK with a DISK:N
    /// source (new partition in free space).
    pub target: String,
    /// Only the partitions the installed OS needs to boot (as `backup
    /// system` chooses them, and says why) onto the whole target disk:
    /// moving a system to a new disk, leaving data partitions behind.
    #[arg(long)]
    pub system: bool,
    /// Passphrase or key file of encrypted (LUKS) source partitions: one it
    /// opens copies only its header and the sectors its filesystem uses,
    /// still encrypted. Repeat for several; RESCUE_LUKS_PASSWORD also gives
    /// one. Without it such partitions are copied sector by sector.
    #[arg(long, value_name = "FILE")]
    pub luks_key_file: Vec<PathBuf>,
    #[command(flatten)]
    pub layout: LayoutOpts,
}

/// Split `DISK:N` (the suffix must be a number; paths may contain ':').
pub fn split_disk_part(s: &str) -> (PathBuf, Option<String>) {
    match s.rsplit_once(':') {
        Some((d, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit() || b == b',') => (PathBuf::from(d), Some(n.to_string())),
        _ => (PathBuf::from(s), None),
    }
}

pub use shares::expand_names as expand_share_names;
pub use shares::resolve_typed as resolve_typed_location;
pub use shares::saved_list as saved_shares;

/// Run the command of `cli`, parsed from `argv` (saved share names expanded).
pub fn run(cli: Cli, argv: &[std::ffi::OsString]) -> Result<(), CliError> {
    let g = Global { json: cli.json, yes: cli.yes };
    if let Some(Command::Job(_)) = &cli.command {
        return Err(usage("rescue job runs only from the top level", "run `rescue job` on its own"));
    }
    if cli.command.is_some() {
        shares::prepare(argv, cli.smb_password_file.as_deref())?;
    }
    match cli.command {
        None => Ok(crate::tui::run(cli.disks)?),
        Some(Command::Disks(a)) => disks::run(&g, a),
        Some(Command::Hardware(a)) => disks::hardware(&g, a),
        Some(Command::Backup(b)) => backup::run(&g, b),
        Some(Command::Info(a)) => image::info(&g, a),
        Some(Command::Check(a)) => image::check(&g, a),
        Some(Command::Ls(a)) => files::ls(&g, a),
        Some(Command::Extract(a)) => files::extract(&g, a),
        #[cfg(unix)]
        Some(Command::Mount(a)) => mount::mount(&g, a),
        #[cfg(unix)]
        Some(Command::Umount(a)) => mount::umount(&g, a),
        #[cfg(not(unix))]
        Some(Command::Mount(_) | Command::Umount(_)) => Err(usage("mount needs FUSE, which this system lacks", "use `rescue ls` and `rescue extract`, or restore the partition")),
        Some(Command::Files(FilesCmd::Ls(a))) => files::disk_ls(&g, a),
        Some(Command::Files(FilesCmd::Copy(a))) => files::disk_copy(&g, a),
        Some(Command::Restore(a)) => write::restore(&g, a),
        Some(Command::Clone(a)) => write::clone(&g, a),
        Some(Command::UniversalRestore(a)) => universal::run(&g, a),
        Some(Command::Points(a)) => chain::points(&g, a),
        Some(Command::Merge(a)) => chain::merge(&g, a),
        Some(Command::Prune(a)) => chain::prune(&g, a),
        Some(Command::Shares(c)) => shares::run(&g, c, cli.smb_password_file.as_deref()),
        Some(Command::Job(_)) => unreachable!("handled above"),
    }
}

/// Run the command of `cli` and return the process exit code on success:
/// 0, or for `rescue job` the code asking rescue-init to power off or reboot.
pub fn run_main(cli: Cli, argv: &[std::ffi::OsString]) -> Result<i32, CliError> {
    match cli.command {
        Some(Command::Job(a)) => {
            let g = Global { json: cli.json, yes: cli.yes };
            job::run(&g, a)
        }
        _ => run(cli, argv).map(|()| 0),
    }
}

/// Flags every command shares.
#[derive(Debug, Clone, Copy)]
pub struct Global {
    pub json: bool,
    pub yes: bool,
}

/// Print a value as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(v: &T) -> Result<(), CliError> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn disk_part_split() {
        assert_eq!(split_disk_part("/dev/sda:2"), (PathBuf::from("/dev/sda"), Some("2".into())));
        assert_eq!(split_disk_part("/dev/sda:2,3"), (PathBuf::from("/dev/sda"), Some("2,3".into())));
        assert_eq!(split_disk_part("/dev/disk/by-path/pci-0000:00:1f.2-ata-1"), (PathBuf::from("/dev/disk/by-path/pci-0000:00:1f.2-ata-1"), None));
        assert_eq!(split_disk_part("disk.img"), (PathBuf::from("disk.img"), None));
    }
}
