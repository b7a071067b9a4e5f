//! The runner: does what `update` asks, on worker threads, and answers with
//! events on the UI channel. Workers report progress through the engine's
//! `Task` (a [`ChannelProgress`] sink plus the cancel token) and never touch
//! the terminal.

use std::path::{Path, PathBuf};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use imaging::blockdev::human_size as hs;
use imaging::image::volume::Output;
use imaging::image::{ImageError, ImageReader, WriterOptions};
use imaging::task::{CancelToken, Progress, Task};

use super::event::{BackupJob, Command, Event, Failure, ImageSummary, PointJob, PowerAction, UniversalJob, UniversalPlan};

/// Sends progress as events, at most ten a second per phase.
pub struct ChannelProgress {
    tx: Mutex<Sender<Event>>,
    phase: Mutex<PhaseState>,
}

struct PhaseState {
    start: Instant,
    last: Instant,
    done: u64,
}

impl ChannelProgress {
    pub fn new(tx: Sender<Event>) -> Self {
        let now = Instant::now();
        ChannelProgress { tx: Mutex::new(tx), phase: Mutex::new(PhaseState { start: now, last: now, done: 0 }) }
    }

    fn send(&self, ev: Event) {
        if let Ok(tx) = self.tx.lock() {
            let _ = tx.send(ev);
        }
    }
}

impl Progress for ChannelProgress {
    fn begin(&self, phase: &str, total: u64) {
        if let Ok(mut p) = self.phase.lock() {
            p.start = Instant::now();
            p.done = 0;
        }
        self.send(Event::Phase { name: phase.to_string(), total });
    }

    fn advance(&self, n: u64) {
        let ev = {
            let Ok(mut p) = self.phase.lock() else { return };
            p.done += n;
            if p.last.elapsed().as_millis() < 100 {
                return;
            }
            p.last = Instant::now();
            Event::Advance { done: p.done, secs: p.start.elapsed().as_secs_f64() }
        };
        self.send(ev);
    }

    fn note(&self, msg: &str) {
        self.send(Event::Note(msg.to_string()));
    }

    fn finish(&self) {
        let ev = {
            let Ok(p) = self.phase.lock() else { return };
            Event::Advance { done: p.done, secs: p.start.elapsed().as_secs_f64() }
        };
        self.send(ev);
    }
}

pub struct Runner {
    tx: Sender<Event>,
    extra_disks: Vec<PathBuf>,
    cancel: Option<CancelToken>,
    /// Block disks at the last refresh, for hot-plug checks.
    seen: Vec<PathBuf>,
    /// Backup destinations and image folders this TUI mounted; unmounted
    /// when the last holder is dropped.
    #[cfg(unix)]
    mounts: Arc<Mutex<Vec<imaging::mount::MountedPartition>>>,
}

/// What the loop does after a command.
#[derive(Debug, PartialEq, Eq)]
pub enum Flow {
    Continue,
    Quit,
    Power(PowerAction),
    /// Hand the terminal to this shell until it exits.
    Shell(PathBuf),
}

impl Runner {
    pub fn new(tx: Sender<Event>, extra_disks: Vec<PathBuf>) -> Self {
        Runner {
            tx,
            extra_disks,
            cancel: None,
            seen: Vec::new(),
            #[cfg(unix)]
            mounts: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Run `f` on a new thread; a panic becomes an [`Event::Crashed`] so
    /// the screen never waits for an answer that cannot come.
    fn spawn(&self, f: impl FnOnce(Sender<Event>) + Send + 'static) {
        let tx = self.tx.clone();
        std::thread::spawn(move || {
            let tx2 = tx.clone();
            if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || f(tx))) {
                let msg =
                    p.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| p.downcast_ref::<String>().cloned()).unwrap_or_else(|| "unknown panic".into());
                let _ = tx2.send(Event::Crashed(msg));
            }
        });
    }

    fn task(&mut self) -> Task {
        let t = Task::new(Arc::new(ChannelProgress::new(self.tx.clone())), CancelToken::new());
        self.cancel = Some(t.cancel.clone());
        t
    }

    pub fn run(&mut self, cmd: Command) -> Flow {
        match cmd {
            Command::Quit => {
                if let Some(c) = &self.cancel {
                    c.cancel();
                }
                return Flow::Quit;
            }
            Command::Power(a) => return Flow::Power(a),
            Command::Shell(sh) => return Flow::Shell(sh),
            Command::MountDest { disk, number } => {
                // Quick (a mount, an ntfs-3g start): done here, so the
                // mount lives as long as the runner.
                #[cfg(unix)]
                let r = imaging::mount::mount_rw(&disk, number, &imaging::mount::base_dir())
                    .map(|m| {
                        let dir = m.dir.clone();
                        self.mounts.lock().unwrap_or_else(|e| e.into_inner()).push(m);
                        (disk.disk.path.clone(), number, dir)
                    })
                    .map_err(|e| Failure::from_error(&format!("mounting partition {number} of {}", disk.disk.path.display()), &e));
                #[cfg(not(unix))]
                let r = Err(Failure {
                    message: format!("mounting partition {number} of {}: not on this system", disk.disk.path.display()),
                    hint: "assign the volume a drive letter (diskpart) and type its path".into(),
                    class: imaging::ErrorClass::Refused,
                    needs_password: false,
                });
                let _ = self.tx.send(Event::DestMounted(r));
            }
            Command::PlanUniversal(job) => {
                self.spawn(move |tx| {
                    let r = crate::cli::universal::plan_disk(&job.disk, job.part, &universal_opts(&job), true)
                        .map(|w| UniversalPlan { what: w.what().to_string(), lines: w.lines() })
                        .map_err(|e| cli_failure(&format!("planning universal restore on {}", job.disk.display()), e));
                    let _ = tx.send(Event::UniversalPlanned(r));
                });
            }
            Command::RunUniversal(job) => {
                let task = self.task();
                self.spawn(move |tx| {
                    let _ = tx.send(Event::Finished(run_universal(&job, &task)));
                });
            }
            Command::Cancel => {
                if let Some(c) = &self.cancel {
                    c.cancel();
                }
            }
            Command::HotplugCheck => {
                if imaging::blockdev::list_block_disks() != self.seen {
                    return self.run(Command::Refresh);
                }
            }
            Command::Refresh => {
                self.seen = imaging::blockdev::list_block_disks();
                let extra = self.extra_disks.clone();
                self.spawn(move |tx| {
                    let list = imaging::inventory::list(&extra).into_iter().map(|r| r.map_err(|(p, e)| (p, e.to_string()))).collect();
                    let _ = tx.send(Event::Disks(list));
                    let _ = tx.send(Event::Hardware(imaging::hardware::pci_devices(&imaging::hardware::sysfs_root())));
                });
            }
            #[cfg(unix)]
            Command::ScanDisks => {
                let (extra, mounts) = (self.extra_disks.clone(), self.mounts.clone());
                self.spawn(move |tx| {
                    let found = scan_disks(&extra, &mounts);
                    let _ = tx.send(Event::Scanned(found));
                })
            }
            #[cfg(not(unix))]
            Command::ScanDisks => {
                // Windows mounts every volume itself: scan the drive letters.
                let mut found = Vec::new();
                for l in b'C'..=b'Z' {
                    let root = PathBuf::from(format!("{}:\\", l as char));
                    if root.is_dir() {
                        scan(&root, 1, &mut found);
                    }
                }
                let _ = self.tx.send(Event::Scanned(found));
            }
            Command::Scan(dir) => self.spawn(move |tx| {
                let mut found = Vec::new();
                scan(&dir, 0, &mut found);
                found.sort();
                let _ = tx.send(Event::Scanned(found));
            }),
            Command::OpenImage { path, password } => self.spawn(move |tx| {
                let r = open(&path, password.as_deref()).map(|reader| ImageSummary {
                    path: path.clone(),
                    password,
                    catalog: reader.catalog().clone(),
                    volumes: reader.volumes(),
                    len: reader.len(),
                });
                let _ = tx.send(Event::ImageOpened(r));
            }),
            Command::PlanBackup(req) => self.spawn(move |tx| {
                let r = imaging::backup::plan_backup(&req).map_err(|e| Failure::from_error(&format!("planning the backup of {}", req.source.display()), &e));
                let _ = tx.send(Event::BackupPlanned(r));
            }),
            Command::PlanRestore { req, password } => self.spawn(move |tx| {
                let r = open(&req.image, password.as_deref()).and_then(|reader| {
                    imaging::restore::plan_restore(&req, &reader)
                        .map_err(|e| Failure::from_error(&format!("planning the restore to {}", req.target.display()), &e))
                });
                let _ = tx.send(Event::RestorePlanned(r));
            }),
            Command::PlanClone(req) => self.spawn(move |tx| {
                let r = imaging::clone::plan_clone(&req)
                    .map(Box::new)
                    .map_err(|e| Failure::from_error(&format!("planning the clone of {} to {}", req.source.display(), req.target.display()), &e));
                let _ = tx.send(Event::ClonePlanned(r));
            }),
            Command::Points { path, password } => self.spawn(move |tx| {
                let r = imaging::chain::discover(&path, password.as_deref().map(str::as_bytes), false, &Task::default())
                    .map_err(|e| Failure::from_error(&format!("reading the backup points of {}", path.display()), &e));
                let _ = tx.send(Event::Points(r));
            }),
            Command::FindTasks { dir, source } => self.spawn(move |tx| {
                let _ = tx.send(Event::TasksFound(tasks_of(&dir, &source)));
            }),
            Command::PlanPoint { req, password } => self.spawn(move |tx| {
                let kind = req.kind.map(|k| k.name()).unwrap_or("incremental");
                let r = imaging::chain::plan_point(&req, password.as_deref().map(str::as_bytes))
                    .map(Box::new)
                    .map_err(|e| Failure::from_error(&format!("planning the {kind} backup from {}", req.from.display()), &e));
                let _ = tx.send(Event::PointPlanned(r));
            }),
            Command::RunPoint(job) => {
                let task = self.task();
                self.spawn(move |tx| {
                    let r = run_point(*job, &task);
                    let _ = tx.send(Event::Finished(r));
                });
            }
            Command::Merge { point, output, password, delete_merged } => {
                let task = self.task();
                self.spawn(move |tx| {
                    let r = imaging::chain::merge(&point, &output, password.as_deref().map(str::as_bytes), None, delete_merged, &task)
                        .map(|o| {
                            let bytes: u64 = o.paths.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
                            let mut v = vec![
                                format!("Merge complete: {} ({}) holds the state of {}", o.paths[0].display(), hs(bytes), point.display()),
                                format!(
                                    "{} file{} folded; verified chunk by chunk against the point; {:.1} s",
                                    o.merged.len(),
                                    if o.merged.len() == 1 { "" } else { "s" },
                                    o.seconds
                                ),
                            ];
                            v.extend(o.deleted.iter().map(|p| format!("deleted {}", p.display())));
                            v.extend(o.kept.iter().map(|(p, why)| format!("kept {}: {why}", p.display())));
                            v
                        })
                        .map_err(|e| Failure::from_error(&format!("merging {}", point.display()), &e));
                    let _ = tx.send(Event::Finished(r));
                });
            }
            Command::RunBackup(job) => {
                let task = self.task();
                self.spawn(move |tx| {
                    let r = run_backup(*job, &task);
                    let _ = tx.send(Event::Finished(r));
                });
            }
            Command::RunRestore { plan, password, sector_by_sector, universal } => {
                let task = self.task();
                self.spawn(move |tx| {
                    let r = open(Path::new(&plan.source), password.as_deref()).and_then(|reader| {
                        imaging::restore::run_restore(&plan, &reader, sector_by_sector, &task)
                            .map(|o| outcome_lines("Restore", &plan, o))
                            .map_err(|e| Failure::from_error(&format!("restoring to {}", plan.target.path.display()), &e))
                    });
                    let _ = tx.send(Event::Finished(then_universal(r, universal, &task, "restore")));
                });
            }
            Command::RunClone { plan, universal } => {
                let task = self.task();
                self.spawn(move |tx| {
                    let r = imaging::clone::run_clone(&plan, &task)
                        .map(|o| outcome_lines("Clone", &plan.write, o))
                        .map_err(|e| Failure::from_error(&format!("cloning to {}", plan.write.target.path.display()), &e));
                    let _ = tx.send(Event::Finished(then_universal(r, universal, &task, "clone")));
                });
            }
            Command::Check { path, password } => {
                let task = self.task();
                self.spawn(move |tx| {
                    let r = open(&path, password.as_deref()).and_then(|reader| {
                        imaging::check::check_reader(&reader, false, &task)
                            .map(|rep| {
                                vec![format!(
                                    "Image OK: {} volume(s), {} regions, {} chunks, {} of data verified in {:.1} s",
                                    rep.volumes,
                                    rep.regions,
                                    rep.chunks,
                                    hs(rep.data_bytes),
                                    rep.seconds
                                )]
                            })
                            .map_err(|e| Failure::from_error(&format!("checking {}", path.display()), &e))
                    });
                    let _ = tx.send(Event::Finished(r));
                });
            }
        }
        Flow::Continue
    }
}

fn open(path: &Path, password: Option<&str>) -> Result<ImageReader, Failure> {
    ImageReader::open(path, password.map(str::as_bytes)).map_err(|e: ImageError| Failure::from_image(&format!("opening {}", path.display()), &e))
}

fn outcome_lines(what: &str, plan: &imaging::exec::WritePlan, o: imaging::exec::WriteOutcome) -> Vec<String> {
    let mut v = vec![format!("{what} complete: {} written to {} in {:.1} s", hs(o.bytes_written), plan.target.describe(), o.seconds)];
    v.extend(o.grown);
    v.extend(o.notes.into_iter().map(|n| format!("note: {n}")));
    v
}

fn run_backup(job: BackupJob, task: &Task) -> Result<Vec<String>, Failure> {
    let ctx = format!("backing up {}", job.plan.source.path.display());
    let password = job.password.map(String::into_bytes);
    let wo = WriterOptions { compression: job.compression, password: password.clone(), split: job.split, ..Default::default() };
    let res = imaging::backup::run_backup(&job.plan, Output::Path(job.output.clone()), wo, job.comment, task).map_err(|e| Failure::from_error(&ctx, &e))?;
    let image_bytes: u64 = res.paths.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let data = res.catalog.used_bytes();
    let mut lines = vec![
        format!("Backup complete: {} ({} volume{})", res.paths[0].display(), res.paths.len(), if res.paths.len() == 1 { "" } else { "s" }),
        format!("{} of data stored in {} of image, {:.1} s", hs(data), hs(image_bytes), res.seconds),
    ];
    if job.verify {
        let reader = ImageReader::open(&res.paths[0], password.as_deref()).map_err(|e| Failure::from_image("opening the new image to verify it", &e))?;
        imaging::check::check_reader(&reader, true, task).map_err(|e| Failure::from_error("verifying the new image", &e))?;
        lines.push("Verified: every chunk of the new image reads back correctly.".into());
    }
    Ok(lines)
}

fn run_point(job: PointJob, task: &Task) -> Result<Vec<String>, Failure> {
    let plan = &job.plan;
    let password = job.password.as_deref().map(str::as_bytes);
    let res = imaging::chain::run_point(plan, password, None, job.comment, false, task)
        .map_err(|e| Failure::from_error(&format!("writing the {} point {}", plan.kind.name(), plan.output.display()), &e))?;
    let image_bytes: u64 = res.paths.iter().filter_map(|p| std::fs::metadata(p).ok()).map(|m| m.len()).sum();
    let chunks: u64 = res.catalog.regions.iter().map(|r| r.chunks - r.zero_chunks).sum();
    let unchanged: u64 = res.catalog.regions.iter().map(|r| r.base_chunks).sum();
    let mut lines = vec![
        format!("{} point #{} complete: {} ({})", capitalized(plan.kind.name()), plan.chain.sequence, res.paths[0].display(), hs(image_bytes)),
        if plan.base.is_some() {
            format!("{} of {} chunks changed since the base point and were stored; {:.1} s", chunks.saturating_sub(unchanged), chunks, res.seconds)
        } else {
            format!("{} of data stored in full; {:.1} s", hs(res.catalog.used_bytes()), res.seconds)
        },
    ];
    // What the run found out: which files' data it did not need to read
    // (unchanged by their records), or why a partition was read in full.
    lines.extend(res.catalog.notes.iter().filter(|n| !plan.backup.notes.contains(n)).cloned());
    if job.verify {
        let reader = ImageReader::open(&res.paths[0], password).map_err(|e| Failure::from_image("opening the new point to verify it", &e))?;
        imaging::check::check_reader(&reader, true, task).map_err(|e| Failure::from_error("verifying the new point", &e))?;
        lines.push("Verified: every chunk of the new point and of the files it depends on reads back correctly.".into());
    }
    Ok(lines)
}

fn universal_opts(job: &UniversalJob) -> crate::cli::UniversalOpts {
    crate::cli::UniversalOpts { for_hw: job.for_hw.clone(), luks_passphrases: job.luks.clone(), ..Default::default() }
}

fn cli_failure(context: &str, e: crate::cli::CliError) -> Failure {
    Failure {
        message: format!("{context}: {:#}", e.error),
        hint: e.hint.unwrap_or_default(),
        class: if matches!(e.exit, crate::cli::Exit::Refused | crate::cli::Exit::Usage) { imaging::ErrorClass::Refused } else { imaging::ErrorClass::Failed },
        needs_password: false,
    }
}

/// After a restore or clone that succeeded, universal restore when asked:
/// its lines join the result; its failure says the data is written.
fn then_universal(r: Result<Vec<String>, Failure>, job: Option<UniversalJob>, task: &Task, what: &str) -> Result<Vec<String>, Failure> {
    let mut lines = r?;
    let Some(job) = job else { return Ok(lines) };
    match run_universal(&job, task) {
        Ok(more) => {
            lines.extend(more);
            Ok(lines)
        }
        Err(mut f) => {
            // The data is on the disk; say so, or the user writes it again.
            f.message = format!("The {what} finished, but universal restore failed: {}", f.message);
            Err(f)
        }
    }
}

/// Universal restore as a task: find the systems on the disk, change them,
/// and say what changed.
fn run_universal(job: &UniversalJob, task: &Task) -> Result<Vec<String>, Failure> {
    let ctx = format!("universal restore on {}", job.disk.display());
    task.progress.begin("universal restore", 0);
    let work = crate::cli::universal::plan_disk(&job.disk, job.part, &universal_opts(job), false).map_err(|e| cli_failure(&ctx, e))?;
    let done = crate::cli::universal::apply_disk(&job.disk, work, &|m| task.progress.note(&m)).map_err(|e| cli_failure(&ctx, e))?;
    task.progress.finish();
    Ok(done.lines())
}

fn capitalized(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

/// The intact points in `dir` made from `source`: tasks a new point can
/// continue. Unreadable folders and encrypted points (their source is
/// unknown without the password) give nothing, and the wizard makes a new task.
pub fn tasks_of(dir: &Path, source: &Path) -> Vec<imaging::chain::PointSummary> {
    if !dir.is_dir() {
        return Vec::new();
    }
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let want = canon(source);
    match imaging::chain::discover(dir, None, false, &Task::default()) {
        Ok(list) => list
            .into_iter()
            .filter(|p| p.status == imaging::chain::PointStatus::Ok && p.source.as_deref().is_some_and(|s| canon(Path::new(s)) == want))
            .collect(),
        Err(e) => {
            tracing::warn!("looking for backup tasks in {}: {e}", dir.display());
            Vec::new()
        }
    }
}

/// Images on every disk's filesystems: mounted ones are scanned where they
/// are; the others are mounted read-only (nothing is written, not even a
/// journal replay), scanned, and kept mounted only when they hold images.
#[cfg(unix)]
fn scan_disks(extra: &[PathBuf], mounts: &Mutex<Vec<imaging::mount::MountedPartition>>) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let base = imaging::mount::base_dir();
    for d in imaging::inventory::list(extra).into_iter().flatten() {
        for p in &d.partitions {
            if !p.fs.as_ref().is_some_and(|f| f.kind.holds_images()) {
                continue;
            }
            if let Some(m) = p.mountpoints.first() {
                scan(Path::new(m), 1, &mut found);
                continue;
            }
            if !p.busy.is_empty() {
                continue;
            }
            match imaging::mount::mount_ro(&d, p.partition.number, &base) {
                Ok(m) => {
                    let before = found.len();
                    scan(&m.dir, 1, &mut found);
                    if found.len() > before {
                        mounts.lock().unwrap_or_else(|e| e.into_inner()).push(m);
                    }
                }
                Err(e) => tracing::info!("scanning partition {} of {}: {e}", p.partition.number, d.disk.path.display()),
            }
        }
    }
    found.sort();
    found
}

/// Images under `dir`: `*.rimg`, the first volume of split sets, and
/// `*.img` files that are images (chain points) rather than raw disks.
pub fn scan(dir: &Path, depth: u32, out: &mut Vec<PathBuf>) {
    // A folder on a share: its images (first volumes), without descending.
    if imaging::store::is_remote(dir) {
        for p in imaging::store::list(dir).unwrap_or_default() {
            if imaging::image::volume::volume_id(&p).is_some_and(|(i, _)| i == 0) {
                out.push(p);
            }
        }
        return;
    }
    if depth > 4 || ["/proc", "/sys", "/dev", "/run"].iter().any(|p| dir == Path::new(p)) {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else { return };
    for e in rd.flatten() {
        let p = e.path();
        let Ok(ft) = e.file_type() else { continue };
        if ft.is_dir() {
            scan(&p, depth + 1, out);
        } else if ft.is_file() {
            let n = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if n.ends_with(".rimg") || n.ends_with(".rimg.001") {
                out.push(p);
            } else if (n.ends_with(".img") || n.ends_with(".img.001")) && imaging::image::volume::volume_id(&p).is_some_and(|(i, _)| i == 0) {
                // Points of a chain (`NAME.p002-incr.img`): told apart from
                // raw disk images by their header.
                out.push(p);
            }
        }
    }
}
