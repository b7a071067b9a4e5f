//! What flows through the TUI: [`Event`]s into `update` (keys, ticks, resize,
//! answers from workers, task progress) and [`Command`]s out of it (work for
//! the runner). Everything here is plain data, so tests can fabricate any of
//! it without a disk or a terminal.

use std::path::PathBuf;

use crossterm::event::KeyEvent;
use imaging::backup::{BackupPlan, BackupRequest};
use imaging::chain::{PointPlan, PointRequest, PointSummary};
use imaging::clone::{ClonePlan, CloneRequest};
use imaging::exec::WritePlan;
use imaging::image::{Catalog, Compression};
use imaging::inventory::DiskReport;
use imaging::restore::RestoreRequest;
use imaging::ErrorClass;

/// One disk of the inventory, or why it could not be read.
pub type DiskEntry = Result<DiskReport, (PathBuf, String)>;

/// An engine error reduced to what the screens show.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    pub message: String,
    pub hint: String,
    pub class: ErrorClass,
    /// The image is encrypted and no (or a wrong) password was given.
    pub needs_password: bool,
}

impl Failure {
    pub fn from_error(context: &str, e: &imaging::Error) -> Self {
        let needs_password = matches!(e, imaging::Error::Image(imaging::image::ImageError::PasswordNeeded | imaging::image::ImageError::WrongPassword));
        Failure { message: format!("{context}: {e}"), hint: e.hint(), class: e.class(), needs_password }
    }

    pub fn from_image(context: &str, e: &imaging::image::ImageError) -> Self {
        use imaging::image::ImageError;
        let class = if e.is_verification_failure() {
            ErrorClass::Verification
        } else if matches!(e, ImageError::Cancelled(_)) {
            ErrorClass::Cancelled
        } else {
            ErrorClass::Failed
        };
        Failure {
            message: format!("{context}: {e}"),
            hint: e.hint().to_string(),
            class,
            needs_password: matches!(e, ImageError::PasswordNeeded | ImageError::WrongPassword),
        }
    }
}

/// An opened image: what the restore wizard and "image info" show.
#[derive(Debug, Clone, PartialEq)]
pub struct ImageSummary {
    pub path: PathBuf,
    pub password: Option<String>,
    pub catalog: Catalog,
    pub volumes: Vec<PathBuf>,
    pub len: u64,
}

#[derive(Debug)]
pub enum Event {
    Key(KeyEvent),
    /// A mouse click or wheel turn (when the terminal reports them).
    Mouse(crossterm::event::MouseEvent),
    /// Periodic wake-up (redraw; hot-plug refresh on the home screen).
    Tick,
    /// A signal (SIGTERM, SIGHUP: the terminal went away) asks rescue to
    /// end: the running task is cancelled and what the TUI mounted is
    /// released before it exits. (No such signals on Windows.)
    #[cfg_attr(not(unix), allow(dead_code))]
    Terminate,
    /// The terminal changed size (the next draw adapts).
    Resize,
    Disks(Vec<DiskEntry>),
    /// The PCI devices and their drivers (with each inventory).
    Hardware(Vec<imaging::hardware::PciDevice>),
    /// Images found by a scan.
    Scanned(Vec<PathBuf>),
    ImageOpened(Result<ImageSummary, Failure>),
    BackupPlanned(Result<BackupPlan, Failure>),
    RestorePlanned(Result<WritePlan, Failure>),
    ClonePlanned(Result<Box<ClonePlan>, Failure>),
    /// The points of a chain (or of every task in a folder), oldest first.
    Points(Result<Vec<PointSummary>, Failure>),
    /// Points already in a backup destination folder whose source is the
    /// disk being backed up: the tasks a new point could continue.
    TasksFound(Vec<PointSummary>),
    PointPlanned(Result<Box<PointPlan>, Failure>),
    UniversalPlanned(Result<UniversalPlan, Failure>),
    /// A backup destination partition was mounted: (disk, partition, folder).
    DestMounted(Result<(PathBuf, u32, PathBuf), Failure>),
    /// The shell the user opened has ended (its exit status, or why it
    /// could not start).
    ShellDone(Result<String, String>),
    /// Task progress: a phase begins.
    Phase {
        name: String,
        total: u64,
    },
    /// Task progress: bytes done in the current phase, seconds since it began.
    Advance {
        done: u64,
        secs: f64,
    },
    Note(String),
    /// The running task ended: lines saying what it did, or why it failed.
    Finished(Result<Vec<String>, Failure>),
    /// A worker thread panicked (a bug): its message.
    Crashed(String),
}

/// Everything the backup executor needs beyond the plan.
#[derive(Debug, Clone)]
pub struct BackupJob {
    pub plan: BackupPlan,
    pub output: PathBuf,
    pub compression: Compression,
    pub password: Option<String>,
    pub split: Option<u64>,
    pub verify: bool,
    pub comment: Option<String>,
}

/// A new point of an existing task (incremental, differential or full).
#[derive(Debug, Clone)]
pub struct PointJob {
    pub plan: PointPlan,
    pub password: Option<String>,
    pub verify: bool,
    pub comment: Option<String>,
}

/// Universal restore: make the Windows or Linux on `disk` (only partition
/// `part` when set) boot on other storage hardware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UniversalJob {
    pub disk: PathBuf,
    pub part: Option<u32>,
    /// Profiles (`ahci`, `nvme`, ...) or hardware IDs; empty: this machine's
    /// storage controllers.
    pub for_hw: Vec<String>,
    /// Passphrases for LUKS partitions holding a Linux system.
    pub luks: imaging::luks::Passphrases,
}

/// A universal-restore plan: what it touches, and every key, file and
/// command it would change or run.
#[derive(Debug, Clone, PartialEq)]
pub struct UniversalPlan {
    pub what: String,
    pub lines: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    PowerOff,
    Reboot,
}

/// Work `update` asks for; the runner does it off the UI thread.
#[derive(Debug, Clone)]
pub enum Command {
    Quit,
    /// Re-read the disk inventory.
    Refresh,
    /// Re-read the inventory only if disks were added or removed.
    HotplugCheck,
    /// Look for images under a folder.
    Scan(PathBuf),
    /// Look for images on every disk's filesystems (mounted read-only for
    /// it; those with images stay mounted until the TUI quits).
    ScanDisks,
    OpenImage {
        path: PathBuf,
        password: Option<String>,
    },
    PlanBackup(BackupRequest),
    PlanRestore {
        req: RestoreRequest,
        password: Option<String>,
    },
    PlanClone(CloneRequest),
    /// List the points of the chain `path` belongs to (a folder: every task in it).
    Points {
        path: PathBuf,
        password: Option<String>,
    },
    /// Look in `dir` for tasks whose source is `source`.
    FindTasks {
        dir: PathBuf,
        source: PathBuf,
    },
    PlanPoint {
        req: PointRequest,
        password: Option<String>,
    },
    RunBackup(Box<BackupJob>),
    RunPoint(Box<PointJob>),
    /// Fold the chain up to `point` into one verified full image.
    Merge {
        point: PathBuf,
        output: PathBuf,
        password: Option<String>,
        delete_merged: bool,
    },
    RunRestore {
        plan: Box<WritePlan>,
        password: Option<String>,
        sector_by_sector: bool,
        /// Then make the restored system boot on other hardware.
        universal: Option<UniversalJob>,
    },
    /// Plan universal restore (nothing is written).
    PlanUniversal(UniversalJob),
    RunUniversal(UniversalJob),
    /// Leave the screen to a shell until it exits.
    Shell(PathBuf),
    /// Mount partition `number` of `disk` read-write as a backup destination.
    MountDest {
        disk: Box<DiskReport>,
        number: u32,
    },
    RunClone {
        plan: Box<ClonePlan>,
        /// Then make the cloned system boot on other hardware.
        universal: Option<UniversalJob>,
    },
    Check {
        path: PathBuf,
        password: Option<String>,
    },
    /// Ask the running task to stop (it returns the engine's Cancelled error).
    Cancel,
    Power(PowerAction),
}
