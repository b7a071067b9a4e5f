//! The TUI's state: plain data, changed only by [`update`]. Nothing here
//! touches a disk or the terminal; long or blocking work goes out as a
//! [`Command`] and comes back as an [`Event`].

use std::path::{Path, PathBuf};

use crossterm::event::{KeyCode, KeyEvent, KeyEventKind, KeyModifiers};
use imaging::backup::{BackupPlan, BackupRequest, Selection};
use imaging::chain::{PointPlan, PointRequest, PointStatus, PointSummary};
use imaging::clone::{ClonePlan, CloneRequest};
use imaging::exec::WritePlan;
use imaging::image::format::{BackupKind, PointKind, RegionKind};
use imaging::image::Compression;
use imaging::inventory::DiskReport;
use imaging::layout::{LayoutMode, LayoutOptions};
use imaging::restore::RestoreRequest;
use imaging::ErrorClass;

use super::event::{BackupJob, Command, DiskEntry, Event, Failure, ImageSummary, PointJob, PowerAction, UniversalJob, UniversalPlan};
use super::keys::{self, Action, Binding};

pub struct State {
    pub disks: Vec<DiskEntry>,
    pub loading: bool,
    /// Selected disk on the home screen.
    pub sel: usize,
    pub screen: Screen,
    pub help: bool,
    /// Finished operations, newest first.
    pub recent: Vec<String>,
    /// Everything worth keeping: notes, results, errors.
    pub log: Vec<String>,
    /// Where new images go and where the image scan starts.
    pub default_dir: PathBuf,
    /// Ticks since the last inventory refresh (hot-plug).
    pub idle_ticks: u32,
    /// Draw with ASCII only (vt100 and serial consoles without UTF-8).
    pub ascii: bool,
    /// An inventory that arrived while a wizard was open: the wizards hold
    /// indexes into `disks`, so it is applied back on the home screen.
    pub pending_disks: Option<Vec<DiskEntry>>,
    /// The shell Tools can open; None: this system has none.
    pub shell: Option<PathBuf>,
    /// Click targets of the screen last drawn (see `view::take_hits`).
    pub hits: Vec<super::view::Hit>,
    /// Partitions this TUI mounted as backup destinations: (disk, number,
    /// folder); unmounted when it quits.
    pub mounted: Vec<(PathBuf, u32, PathBuf)>,
    /// Saved SMB shares (`rescue shares add`): (name, URL), offered as
    /// backup destinations and folders to scan for images.
    pub saved_shares: Vec<(String, String)>,
    /// PCI devices and their drivers: the home screen names storage and
    /// network controllers that no driver claimed.
    pub hardware: Vec<imaging::hardware::PciDevice>,
}

pub enum Screen {
    Home,
    Backup(BackupWiz),
    Restore(RestoreWiz),
    Clone(CloneWiz),
    Tools(ToolsWiz),
    Confirm(Box<Confirm>),
    Progress(ProgressView),
    Result(ResultView),
}

// ---------------------------------------------------------------- forms

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum F {
    Compression,
    Encrypt,
    Password,
    Password2,
    Split,
    SplitCustom,
    Copy,
    Verify,
    Comment,
    Layout,
    Align,
    SectorBySector,
    OnlyChanged,
    MergeOutput,
    DeleteMerged,
    Universal,
    /// The passphrase of the source's LUKS partitions (shown when it has one).
    LuksPassphrase,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Choice(Vec<&'static str>, usize),
    Text(String),
    Secret(String),
}

#[derive(Debug, Clone)]
pub struct Field {
    pub id: F,
    pub label: &'static str,
    pub value: Value,
    pub hidden: bool,
}

#[derive(Debug, Clone)]
pub struct Form {
    pub fields: Vec<Field>,
    pub focus: usize,
}

impl Form {
    fn new(fields: Vec<Field>) -> Self {
        Form { fields, focus: 0 }
    }

    pub fn typing(&self) -> bool {
        self.fields.get(self.focus).is_some_and(|f| !matches!(f.value, Value::Choice(..)))
    }

    fn move_focus(&mut self, d: i32) {
        let n = self.fields.len() as i32;
        let mut i = self.focus as i32;
        for _ in 0..n {
            i = (i + d).rem_euclid(n);
            if !self.fields[i as usize].hidden {
                self.focus = i as usize;
                return;
            }
        }
    }

    /// Cycle the focused choice; returns whether something changed.
    fn change(&mut self, d: i32) -> bool {
        if let Some(Field { value: Value::Choice(opts, i), .. }) = self.fields.get_mut(self.focus) {
            *i = (*i as i32 + d).rem_euclid(opts.len() as i32) as usize;
            return true;
        }
        false
    }

    fn edit(&mut self, key: &KeyEvent) {
        if let Some(Field { value: Value::Text(s) | Value::Secret(s), .. }) = self.fields.get_mut(self.focus) {
            edit_text(s, key);
        }
    }

    fn get(&self, id: F) -> &Field {
        self.fields.iter().find(|f| f.id == id).expect("forms hold every field they are asked for")
    }

    pub fn choice(&self, id: F) -> usize {
        match &self.get(id).value {
            Value::Choice(_, i) => *i,
            _ => 0,
        }
    }

    pub fn text(&self, id: F) -> &str {
        match &self.get(id).value {
            Value::Text(s) | Value::Secret(s) => s,
            Value::Choice(..) => "",
        }
    }

    fn set_hidden(&mut self, id: F, hidden: bool) {
        if let Some(f) = self.fields.iter_mut().find(|f| f.id == id) {
            f.hidden = hidden;
        }
    }
}

fn choice(id: F, label: &'static str, opts: &[&'static str], i: usize) -> Field {
    Field { id, label, value: Value::Choice(opts.to_vec(), i), hidden: false }
}

fn text(id: F, label: &'static str, secret: bool) -> Field {
    Field { id, label, value: if secret { Value::Secret(String::new()) } else { Value::Text(String::new()) }, hidden: false }
}

/// Apply a key to a line of text: printable characters and Backspace.
fn edit_text(s: &mut String, key: &KeyEvent) {
    match key.code {
        KeyCode::Char('u') if key.modifiers.contains(KeyModifiers::CONTROL) => s.clear(),
        KeyCode::Char(c) if !key.modifiers.contains(KeyModifiers::CONTROL) && !key.modifiers.contains(KeyModifiers::ALT) => s.push(c),
        KeyCode::Backspace => {
            s.pop();
        }
        _ => {}
    }
}

pub const SPLITS: &[&str] = &["none", "4000M (FAT32)", "4480M (DVD)", "custom"];
pub const COMPRESSIONS: &[&str] = &["none", "fast", "normal", "high"];

fn backup_form() -> Form {
    let mut f = Form::new(vec![
        choice(F::Compression, "Compression", COMPRESSIONS, 2),
        choice(F::Encrypt, "Encryption", &["off", "AES-256"], 0),
        text(F::Password, "Password", true),
        text(F::Password2, "Repeat password", true),
        choice(F::Split, "Split into volumes", SPLITS, 0),
        text(F::SplitCustom, "Volume size", false),
        choice(F::Copy, "Copy", &["used blocks", "sector by sector"], 0),
        choice(F::Verify, "Verify after", &["no", "yes"], 1),
        text(F::Comment, "Comment", false),
        luks_field(),
    ]);
    backup_form_visibility(&mut f);
    f
}

/// The passphrase of the source's LUKS partitions: with it they keep only
/// their used sectors (still encrypted). Hidden until the source has one.
fn luks_field() -> Field {
    Field { hidden: true, ..text(F::LuksPassphrase, "LUKS passphrase", true) }
}

fn backup_form_visibility(f: &mut Form) {
    let enc = f.choice(F::Encrypt) == 1;
    f.set_hidden(F::Password, !enc);
    f.set_hidden(F::Password2, !enc);
    let custom = f.choice(F::Split) == 3;
    f.set_hidden(F::SplitCustom, !custom);
}

fn write_form() -> Form {
    Form::new(vec![
        choice(F::Layout, "Partition sizes", &["keep as the source", "fill the target disk"], 0),
        choice(F::Align, "Align partitions (SSD)", &["as the source", "1 MiB"], 0),
        choice(F::SectorBySector, "Sector by sector", &["no", "yes"], 0),
    ])
}

/// The restore summary: the write options plus changed-block restore,
/// which only a whole-disk restore offers.
fn restore_form() -> Form {
    let mut f = write_form();
    f.fields.push(choice(F::OnlyChanged, "Only changed blocks", &["no: write everything", "yes: read the target, write what differs"], 0));
    f.fields.push(choice(F::Universal, "Universal restore", UNIVERSAL_CHOICES, 0));
    f
}

/// Universal restore in the restore summary: off, or for which hardware.
pub const UNIVERSAL_CHOICES: &[&str] = &[
    "no",
    "yes: this machine's storage controllers",
    "yes: for AHCI (SATA)",
    "yes: for NVMe",
    "yes: for VirtIO (KVM, QEMU, Proxmox)",
    "yes: for VMware (PVSCSI, LSI SAS)",
    "yes: for Hyper-V",
    "yes: for Intel RST / VMD",
];

/// The `--for` profiles behind [`UNIVERSAL_CHOICES`] (index 0: off).
const UNIVERSAL_PROFILES: &[&str] = &["", "", "ahci", "nvme", "virtio", "vmware", "hyperv", "intel-rst"];

/// The hardware of a universal-restore choice in words ("AHCI (SATA)").
pub fn universal_words(choice: usize) -> &'static str {
    UNIVERSAL_CHOICES.get(choice).copied().unwrap_or("").trim_start_matches("yes: ").trim_start_matches("for ")
}

/// The target hardware of a universal-restore choice; None: no universal restore.
pub fn universal_for(choice: usize) -> Option<Vec<String>> {
    match choice {
        0 => None,
        1 => Some(Vec::new()),
        i => Some(vec![UNIVERSAL_PROFILES.get(i).copied().unwrap_or("ahci").to_string()]),
    }
}

/// The clone summary: the write options plus universal restore (a clone
/// onto the disk of another machine).
fn clone_form() -> Form {
    let mut f = write_form();
    f.fields.push(choice(F::Universal, "Universal restore", UNIVERSAL_CHOICES, 0));
    f
}

/// The line the confirmation adds when universal restore follows.
fn universal_line(choice: usize) -> String {
    format!(
        "Then universal restore: the Windows registry and driver files (or the Linux initramfs and boot loader) on the target are changed to boot on {}.",
        universal_words(choice)
    )
}

/// Options of a new point of an existing task: the task fixes the rest
/// (compression, encryption, split size, what is backed up).
fn point_form() -> Form {
    Form::new(vec![choice(F::Verify, "Verify after", &["no", "yes"], 1), text(F::Comment, "Comment", false), luks_field()])
}

fn merge_form(output: String) -> Form {
    Form::new(vec![
        Field { id: F::MergeOutput, label: "New full image", value: Value::Text(output), hidden: false },
        choice(F::DeleteMerged, "Delete merged files", &["no", "yes, once the new image is verified"], 0),
    ])
}

fn layout_options(f: &Form, sizes: &std::collections::BTreeMap<u32, u64>) -> LayoutOptions {
    LayoutOptions {
        mode: if f.choice(F::Layout) == 1 { LayoutMode::Fill } else { LayoutMode::Keep },
        align: (f.choice(F::Align) == 1).then_some(1 << 20),
        sizes: sizes.clone(),
        ..Default::default()
    }
}

/// The partition size editor of a whole-disk restore or clone ("Edit
/// partitions"): sizes change by steps on the keyboard, the bar shows the
/// new layout, and Enter plans again with them (the planner says no, with
/// the reason, when a filesystem cannot take a size).
#[derive(Debug, Clone, PartialEq)]
pub struct SizeEdit {
    pub parts: Vec<EditPart>,
    pub sel: usize,
    /// Bytes per Left/Right press: a hundredth of the disk, whole MiB.
    pub step: u64,
    pub disk_size: u64,
    pub note: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct EditPart {
    pub number: u32,
    /// Start and size in the current plan.
    pub start: u64,
    pub planned: u64,
    pub size: u64,
    /// Filesystem and label, as shown.
    pub what: String,
    pub used: Option<u64>,
    /// ext2/3/4 or NTFS on a data partition: can change size.
    pub resizable: bool,
}

impl SizeEdit {
    /// From a whole-disk plan; `fs` gives each partition's filesystem.
    fn new(plan: &WritePlan, fs: &dyn Fn(u32) -> Option<imaging::fs::FsInfo>) -> Option<SizeEdit> {
        let t = plan.layout.table_after.as_ref().filter(|_| plan.whole_disk)?;
        let mut parts: Vec<EditPart> = t
            .partitions
            .iter()
            .filter(|p| !p.ptype.is_extended())
            .map(|p| {
                let f = fs(p.number);
                // The planner's own rule: it refuses what it cannot resize.
                let resizable = imaging::layout::resizable(p, f.as_ref());
                let what = f
                    .as_ref()
                    .map(|f| format!("{}{}", f.kind.name(), f.label.as_ref().filter(|l| !l.is_empty()).map(|l| format!(" {l}")).unwrap_or_default()))
                    .unwrap_or_else(|| p.ptype.describe());
                EditPart { number: p.number, start: p.start, planned: p.len, size: p.len, what, used: f.and_then(|f| f.used), resizable }
            })
            .collect();
        parts.sort_by_key(|p| p.start);
        let step = ((plan.target.size / 100) >> 20).max(1) << 20;
        let sel = parts.iter().position(|p| p.resizable).unwrap_or(0);
        Some(SizeEdit { parts, sel, step, disk_size: plan.target.size, note: None })
    }

    /// Where the partitions end with the edited sizes (each moves by the
    /// changes before it).
    pub fn end(&self) -> u64 {
        let mut shift: i128 = 0;
        let mut end = 0u64;
        for p in &self.parts {
            let start = (p.start as i128 + shift).max(0) as u64;
            end = end.max(start + p.size);
            shift += p.size as i128 - p.planned as i128;
        }
        end
    }

    fn key(&mut self, a: Action) {
        self.note = None;
        let n = self.parts.len();
        let change = |e: &mut SizeEdit, steps: i64| {
            let step = e.step;
            let Some(p) = e.parts.get_mut(e.sel) else { return };
            if !p.resizable {
                e.note = Some(format!("partition {} ({}) keeps its size", p.number, p.what));
                return;
            }
            let floor = p.used.map(|u| imaging::layout::min_shrunk_size(u, 1 << 20)).unwrap_or(1 << 20);
            let to = if steps < 0 { p.size.saturating_sub(step * steps.unsigned_abs()) } else { p.size + step * steps as u64 };
            // Whole steps, but never below what the filesystem holds.
            p.size = (to / step * step).max(floor.min(p.planned));
            if p.size == floor.min(p.planned) && steps < 0 {
                e.note = Some(format!("partition {} holds {}: it cannot be smaller", p.number, imaging::blockdev::human_size(p.used.unwrap_or(0))));
            }
        };
        match a {
            Action::Up => self.sel = self.sel.saturating_sub(1),
            Action::Down => self.sel = (self.sel + 1).min(n.saturating_sub(1)),
            Action::Left => change(self, -1),
            Action::Right => change(self, 1),
            Action::PageDown => change(self, -10),
            Action::PageUp => change(self, 10),
            _ => {}
        }
    }

    /// The sizes the planner gets: every resizable partition's, explicitly.
    fn sizes(&self) -> std::collections::BTreeMap<u32, u64> {
        self.parts.iter().filter(|p| p.resizable).map(|p| (p.number, p.size)).collect()
    }
}

// ---------------------------------------------------------------- wizards

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BStep {
    Kind,
    Disk,
    Parts,
    Dest,
    /// The destination folder holds a task of this source: new point or new task.
    Chain,
    Options,
    Summary,
}

pub const BACKUP_KINDS: &[&str] =
    &["Whole disk: partition table, boot code and every partition", "System: only what the installed OS needs to boot", "Partitions: the ones you choose"];

pub struct BackupWiz {
    pub step: BStep,
    pub kind: usize,
    /// Index into the readable disks.
    pub disk: usize,
    pub part_sel: usize,
    pub parts: Vec<u32>,
    pub dest: String,
    pub form: Form,
    pub plan: Option<BackupPlan>,
    pub busy: bool,
    pub error: Option<String>,
    pub scroll: u16,
    /// Intact points in the destination folder made from the source disk.
    pub tasks: Vec<PointSummary>,
    pub chain_sel: usize,
    /// A new point of an existing task: its kind and the point it follows.
    pub point: Option<(PointKind, PathBuf)>,
    pub point_form: Form,
    pub point_plan: Option<PointPlan>,
    /// Destination step: 0 the path, 1 the list of partitions to save on.
    pub dest_focus: usize,
    pub dest_sel: usize,
}

/// A partition of another disk that a backup can be saved on.
#[derive(Debug, Clone, PartialEq)]
pub struct DestPlace {
    /// Index into the readable disks.
    pub disk: usize,
    pub number: u32,
    /// Where it is mounted already (by the system or by this TUI).
    pub mounted_at: Option<PathBuf>,
}

/// The partitions a backup of readable disk `source` can go to: those of
/// other disks with a filesystem images can be written on, mounted already
/// or free to mount (not in use).
pub fn dest_places(s: &State, source: usize) -> Vec<DestPlace> {
    let mut v = Vec::new();
    for (i, d) in s.readable().iter().enumerate() {
        if i == source {
            continue;
        }
        for p in &d.partitions {
            let n = p.partition.number;
            if !p.fs.as_ref().is_some_and(|f| f.kind.holds_images()) {
                continue;
            }
            let ours = s.mounted.iter().find(|m| m.0 == d.disk.path && m.1 == n).map(|m| m.2.clone());
            let mounted_at = ours.or_else(|| p.mountpoints.first().map(PathBuf::from));
            if mounted_at.is_none() && !p.busy.is_empty() {
                continue;
            }
            v.push(DestPlace { disk: i, number: n, mounted_at });
        }
    }
    v
}

#[cfg(unix)]
fn mount_base() -> PathBuf {
    imaging::mount::base_dir()
}

#[cfg(not(unix))]
fn mount_base() -> PathBuf {
    std::env::temp_dir()
}

impl BackupWiz {
    /// The options form of the chosen kind of backup.
    pub fn active_form(&self) -> &Form {
        if self.point.is_some() {
            &self.point_form
        } else {
            &self.form
        }
    }

    fn active_form_mut(&mut self) -> &mut Form {
        if self.point.is_some() {
            &mut self.point_form
        } else {
            &mut self.form
        }
    }
}

/// What the backup wizard offers when the destination already holds tasks
/// of the source: for each task (newest point first) a new incremental,
/// differential and full point; None is a new task.
pub fn chain_offers(tasks: &[PointSummary]) -> Vec<Option<(PointKind, &PointSummary)>> {
    let mut latest: Vec<&PointSummary> = Vec::new();
    for p in tasks {
        match latest.iter_mut().find(|l| l.task_id == p.task_id) {
            Some(l) if (p.sequence, p.created) > (l.sequence, l.created) => *l = p,
            Some(_) => {}
            None => latest.push(p),
        }
    }
    latest.sort_by(|a, b| b.created.cmp(&a.created));
    let mut v = Vec::new();
    for l in latest {
        for k in [PointKind::Incremental, PointKind::Differential, PointKind::Full] {
            v.push(Some((k, l)));
        }
    }
    v.push(None);
    v
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RStep {
    Image,
    Password,
    /// Which point in time of the image's chain.
    Point,
    What,
    Target,
    TargetPart,
    Summary,
}

/// The scan folder that stands for every disk's filesystems.
pub const EVERY_DISK: &str = "(every disk)";

pub struct RestoreWiz {
    pub step: RStep,
    pub path: String,
    pub scan_dir: String,
    pub found: Vec<PathBuf>,
    /// 0: image path, 1: folder to scan, 2: found images.
    pub focus: usize,
    pub found_sel: usize,
    pub password: String,
    pub image: Option<ImageSummary>,
    /// The points of the opened image's chain, once read.
    pub points: Option<Vec<PointSummary>>,
    pub point_sel: usize,
    pub what_sel: usize,
    pub target: usize,
    pub tpart_sel: usize,
    /// The existing target partition of the planned single-partition
    /// restore (None: whole disk, or a new partition in free space).
    pub tpart: Option<u32>,
    pub form: Form,
    /// Manual partition sizes (Edit partitions), by image partition number.
    pub sizes: std::collections::BTreeMap<u32, u64>,
    pub edit: Option<SizeEdit>,
    pub plan: Option<WritePlan>,
    pub busy: bool,
    pub error: Option<String>,
    pub scroll: u16,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CStep {
    Kind,
    Source,
    SourcePart,
    Target,
    TargetPart,
    /// The passphrase of the source's LUKS partitions (when it has any).
    LuksPassword,
    Summary,
}

pub const CLONE_KINDS: &[&str] = &[
    "Whole disk onto another disk",
    "System: only what the installed OS needs to boot, onto another disk",
    "One partition into a partition or free space",
];

pub struct CloneWiz {
    pub step: CStep,
    pub kind: usize,
    pub src: usize,
    pub src_part: usize,
    pub dst: usize,
    pub dst_part: usize,
    pub form: Form,
    /// Manual partition sizes (Edit partitions), by source partition number.
    pub sizes: std::collections::BTreeMap<u32, u64>,
    pub edit: Option<SizeEdit>,
    pub plan: Option<ClonePlan>,
    pub busy: bool,
    pub error: Option<String>,
    pub scroll: u16,
    /// The passphrase typed for the source's LUKS partitions.
    pub luks: String,
}

impl CloneWiz {
    /// The source's LUKS partitions that this clone copies.
    pub fn luks_sources(&self, s: &State) -> Vec<u32> {
        let Some(d) = s.disk(self.src) else { return Vec::new() };
        let all = luks_partitions(d);
        if self.kind == 2 {
            source_parts(d).get(self.src_part).filter(|n| all.contains(n)).map(|n| vec![*n]).unwrap_or_default()
        } else {
            all
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Check,
    Info,
    Merge,
    Points,
    Universal,
    Hardware,
    Log,
    Shell,
    PowerOff,
    Reboot,
}

pub const TOOLS: &[(Tool, &str)] = &[
    (Tool::Check, "Check an image (reads and verifies every byte)"),
    (Tool::Info, "Image info (what an image holds)"),
    (Tool::Merge, "Merge images (fold a chain up to a point into one full image)"),
    (Tool::Points, "Backup points (the chains of an image or a folder, as a tree)"),
    (Tool::Universal, "Universal restore (boot a disk's system on other hardware)"),
    (Tool::Hardware, "Hardware (PCI devices and their drivers)"),
    (Tool::Log, "View the log"),
    (Tool::Shell, "Open a shell (type exit to come back)"),
    (Tool::PowerOff, "Power off"),
    (Tool::Reboot, "Reboot"),
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TStep {
    Menu,
    Path,
    Password,
    /// Merge: which point.
    PickPoint,
    /// Merge: where the new full goes.
    MergeOut,
    /// Universal restore: which disk.
    Disk,
    /// Universal restore: for which hardware.
    Hardware,
    /// Universal restore: the passphrase of the disk's LUKS partitions.
    LuksPassword,
    View,
}

pub struct ToolsWiz {
    pub step: TStep,
    pub sel: usize,
    pub tool: Tool,
    pub path: String,
    pub password: String,
    pub info: Option<ImageSummary>,
    pub points: Vec<PointSummary>,
    pub point_sel: usize,
    pub form: Form,
    pub busy: bool,
    pub error: Option<String>,
    pub scroll: u16,
    /// Universal restore: the disk (index into the readable disks) and the
    /// hardware (index into [`UNIVERSAL_CHOICES`] without "no").
    pub disk_sel: usize,
    pub hw_sel: usize,
    /// Universal restore: the passphrase typed for the disk's LUKS partitions.
    pub luks: String,
}

/// A destructive step: the plan in words and the word to type.
pub struct Confirm {
    pub title: String,
    pub lines: Vec<String>,
    pub word: String,
    pub typed: String,
    pub error: Option<String>,
    pub then: Command,
    pub op: Op,
    pub back: Screen,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Backup,
    Restore,
    Clone,
    Check,
    Merge,
    Universal,
    Power,
    /// Mount a partition as the backup destination (then back to the wizard).
    Mount,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Backup => "Backup",
            Op::Restore => "Restore",
            Op::Clone => "Clone",
            Op::Check => "Check",
            Op::Merge => "Merge",
            Op::Universal => "Universal restore",
            Op::Mount => "Mount",
            Op::Power => "Power",
        }
    }
}

pub struct ProgressView {
    pub op: Op,
    pub title: String,
    pub phase: String,
    pub total: u64,
    pub done: u64,
    pub secs: f64,
    pub phases: u32,
    pub notes: Vec<String>,
    pub ask_cancel: bool,
    pub cancelling: bool,
}

pub struct ResultView {
    /// OK, CANCELLED, REFUSED or FAILED: said in words, not only in colour.
    pub status: &'static str,
    pub title: String,
    pub lines: Vec<String>,
    pub hint: Option<String>,
    pub next: Vec<String>,
    pub scroll: u16,
}

// ---------------------------------------------------------------- state

impl State {
    pub fn new(default_dir: PathBuf) -> Self {
        State {
            disks: Vec::new(),
            loading: true,
            sel: 0,
            screen: Screen::Home,
            help: false,
            recent: Vec::new(),
            log: Vec::new(),
            default_dir,
            idle_ticks: 0,
            ascii: false,
            pending_disks: None,
            shell: None,
            hits: Vec::new(),
            mounted: Vec::new(),
            saved_shares: Vec::new(),
            hardware: Vec::new(),
        }
    }

    /// The disks that could be read.
    pub fn readable(&self) -> Vec<&DiskReport> {
        self.disks.iter().filter_map(|d| d.as_ref().ok()).collect()
    }

    fn disk(&self, i: usize) -> Option<&DiskReport> {
        self.readable().get(i).copied()
    }

    /// The key table of the current screen (help bar, `?`).
    pub fn bindings(&self) -> &'static [Binding] {
        match &self.screen {
            Screen::Home => keys::HOME,
            Screen::Backup(w) => match w.step {
                BStep::Kind | BStep::Disk => keys::LIST,
                BStep::Parts => keys::MULTI,
                BStep::Dest if w.dest_focus == 1 => keys::DEST_LIST,
                BStep::Dest => keys::TEXT,
                BStep::Chain => keys::LIST,
                BStep::Options => keys::FORM,
                BStep::Summary => keys::PLAN,
            },
            Screen::Restore(w) => match w.step {
                RStep::Image | RStep::Password => keys::TEXT,
                RStep::Point | RStep::What | RStep::Target | RStep::TargetPart => keys::LIST,
                RStep::Summary if w.edit.is_some() => keys::SIZES,
                RStep::Summary => keys::SUMMARY,
            },
            Screen::Clone(w) => match w.step {
                CStep::Summary if w.edit.is_some() => keys::SIZES,
                CStep::Summary => keys::SUMMARY,
                CStep::LuksPassword => keys::SECRET,
                _ => keys::LIST,
            },
            Screen::Tools(w) => match w.step {
                TStep::Menu | TStep::PickPoint | TStep::Disk | TStep::Hardware => keys::LIST,
                TStep::Path | TStep::Password => keys::TEXT,
                TStep::LuksPassword => keys::SECRET,
                TStep::MergeOut => keys::FORM,
                TStep::View => keys::VIEW,
            },
            Screen::Confirm(_) => keys::CONFIRM,
            Screen::Progress(_) => keys::PROGRESS,
            Screen::Result(_) => keys::RESULT,
        }
    }

    /// Whether letters go into a text field on this screen.
    fn typing(&self) -> bool {
        match &self.screen {
            Screen::Backup(w) => (w.step == BStep::Dest && w.dest_focus == 0) || (w.step == BStep::Options && w.active_form().typing()),
            Screen::Restore(w) => (w.step == RStep::Image && w.focus < 2) || w.step == RStep::Password,
            Screen::Tools(w) => matches!(w.step, TStep::Path | TStep::Password | TStep::LuksPassword) || (w.step == TStep::MergeOut && w.form.typing()),
            Screen::Clone(w) => w.step == CStep::LuksPassword,
            Screen::Confirm(_) => true,
            _ => false,
        }
    }

    fn log_line(&mut self, s: impl Into<String>) {
        self.log.push(s.into());
        if self.log.len() > 2000 {
            self.log.drain(..1000);
        }
    }
}

fn image_name(disk: &DiskReport, kind: usize) -> String {
    let base = disk.disk.name.trim_end_matches(".img").trim_end_matches(".raw");
    let suffix = ["disk", "system", "parts"][kind.min(2)];
    format!("{base}-{suffix}.rimg")
}

/// Which parts of an image can be restored: None is the whole disk.
pub fn restore_choices(cat: &imaging::image::Catalog) -> Vec<Option<u32>> {
    let mut v = Vec::new();
    if cat.kind != BackupKind::Partitions {
        v.push(None);
    }
    v.extend(cat.regions.iter().filter(|r| r.kind == RegionKind::Partition).filter_map(|r| r.partition).map(Some));
    v
}

/// Partitions a single-partition write can go to: None is free space.
pub fn target_parts(d: &DiskReport) -> Vec<Option<u32>> {
    let mut v = vec![None];
    v.extend(d.partitions.iter().filter(|p| !p.partition.ptype.is_extended()).map(|p| Some(p.partition.number)));
    v
}

fn source_parts(d: &DiskReport) -> Vec<u32> {
    d.partitions.iter().filter(|p| !p.partition.ptype.is_extended()).map(|p| p.partition.number).collect()
}

fn step_sel(sel: &mut usize, len: usize, a: Action) {
    if len == 0 {
        *sel = 0;
        return;
    }
    match a {
        Action::Up => *sel = sel.saturating_sub(1),
        Action::Down => *sel = (*sel + 1).min(len - 1),
        _ => {}
    }
}

fn scroll(s: &mut u16, a: Action) {
    match a {
        Action::Up => *s = s.saturating_sub(1),
        Action::Down => *s = s.saturating_add(1),
        Action::PageUp => *s = s.saturating_sub(10),
        Action::PageDown => *s = s.saturating_add(10),
        _ => {}
    }
}

fn opt_password(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The words a confirm screen shows for a write plan.
pub fn write_plan_words(p: &WritePlan) -> Vec<String> {
    let mut v = Vec::new();
    let t = &p.target;
    if p.whole_disk {
        v.push(format!("EVERYTHING on disk {} will be overwritten:", t.name));
    } else if let Some(dev) = &p.target_partition_device {
        v.push(format!("The partition {} on disk {} will be overwritten:", dev.display(), t.name));
    } else {
        v.push(format!("Part of disk {} will be overwritten:", t.name));
    }
    v.push(format!(
        "  {}  model {}  serial {}  size {}",
        t.path.display(),
        t.model.as_deref().unwrap_or("-"),
        t.serial.as_deref().unwrap_or("-"),
        imaging::blockdev::human_size(t.size)
    ));
    if let Some(tb) = &p.table_before {
        if p.whole_disk {
            for part in &tb.partitions {
                v.push(format!("  partition {} ({}, {}) is lost", part.number, part.ptype.describe(), imaging::blockdev::human_size(part.len)));
            }
        }
    }
    for m in &p.layout.moves {
        v.push(format!("  writes {} ({}) at byte {}", m.label, imaging::blockdev::human_size(m.len), m.target_offset));
    }
    if p.layout.writes_table {
        v.push("  writes a new partition table last".into());
    }
    if p.only_changed {
        v.push("  changed-block restore: the disk is read and only what differs is written".into());
    }
    v.push(format!("Source: {}", p.source));
    v
}

// ---------------------------------------------------------------- update

/// Apply one event; return the work to do.
pub fn update(s: &mut State, ev: Event) -> Vec<Command> {
    match ev {
        Event::Key(k) => {
            if k.kind != KeyEventKind::Press {
                return vec![];
            }
            key(s, k)
        }
        Event::Mouse(m) => mouse(s, m),
        // The loop ends the TUI on it (tui.rs); here it is the same as quit.
        Event::Terminate => vec![Command::Quit],
        Event::Hardware(h) => {
            for d in h.iter().filter(|d| d.driver.is_none() && d.matters()) {
                if !s.hardware.contains(d) {
                    s.log_line(format!("no driver: {}", d.describe()));
                }
            }
            s.hardware = h;
            vec![]
        }
        Event::Tick => {
            s.idle_ticks = s.idle_ticks.saturating_add(1);
            // Hot-plug: every ~2 s on the idle home screen, ask whether the
            // set of disks changed (cheap: sysfs only); rescan if so.
            if matches!(s.screen, Screen::Home) && !s.loading && s.idle_ticks >= 8 {
                s.idle_ticks = 0;
                return vec![Command::HotplugCheck];
            }
            vec![]
        }
        Event::Resize => vec![],
        Event::Disks(d) => {
            if matches!(s.screen, Screen::Home) || s.disks.is_empty() {
                set_disks(s, d);
            } else {
                s.pending_disks = Some(d);
            }
            vec![]
        }
        Event::Scanned(found) => {
            if let Screen::Restore(w) = &mut s.screen {
                w.busy = false;
                let place = if w.scan_dir.trim() == EVERY_DISK { "on any disk's filesystems".to_string() } else { format!("under {}", w.scan_dir) };
                w.error = found.is_empty().then(|| format!("no images (*.rimg, *.rimg.001, chain points *.img) found {place}"));
                w.found = found;
                w.found_sel = 0;
                if !w.found.is_empty() {
                    w.focus = 2;
                }
            }
            vec![]
        }
        Event::ImageOpened(r) => image_opened(s, r),
        Event::BackupPlanned(r) => {
            if let Screen::Backup(w) = &mut s.screen {
                w.busy = false;
                match r {
                    Ok(p) => {
                        w.plan = Some(p);
                        w.error = None;
                    }
                    Err(f) => w.error = Some(format!("{}\nhint: {}", f.message, f.hint)),
                }
            }
            vec![]
        }
        Event::RestorePlanned(r) => {
            if let Screen::Restore(w) = &mut s.screen {
                w.busy = false;
                match r {
                    Ok(mut p) => {
                        p.only_changed = p.whole_disk && w.form.choice(F::OnlyChanged) == 1;
                        w.form.set_hidden(F::OnlyChanged, !p.whole_disk);
                        w.plan = Some(p);
                        w.error = None;
                    }
                    Err(f) => {
                        w.plan = None;
                        w.error = Some(format!("{}\nhint: {}", f.message, f.hint));
                    }
                }
            }
            vec![]
        }
        Event::ClonePlanned(r) => {
            if let Screen::Clone(w) = &mut s.screen {
                w.busy = false;
                match r {
                    Ok(p) => {
                        w.plan = Some(*p);
                        w.error = None;
                    }
                    Err(f) => {
                        w.plan = None;
                        w.error = Some(format!("{}\nhint: {}", f.message, f.hint));
                    }
                }
            }
            vec![]
        }
        Event::Points(r) => points_read(s, r),
        Event::UniversalPlanned(r) => universal_planned(s, r),
        Event::DestMounted(r) => {
            match &r {
                Ok((disk, n, dir)) => {
                    s.log_line(format!("mounted partition {n} of {} read-write at {}", disk.display(), dir.display()));
                    s.mounted.push((disk.clone(), *n, dir.clone()));
                }
                Err(f) => s.log_line(format!("mount failed: {}", f.message)),
            }
            let src = match &s.screen {
                Screen::Backup(w) => s.disk(w.disk).map(|d| image_name(d, w.kind)),
                _ => None,
            };
            if let Screen::Backup(w) = &mut s.screen {
                w.busy = false;
                match r {
                    Ok((_, _, dir)) => {
                        w.dest = dir.join(src.unwrap_or_else(|| "backup.rimg".into())).display().to_string();
                        w.dest_focus = 0;
                        w.error = None;
                    }
                    Err(f) => w.error = Some(format!("{}\nhint: {}", f.message, f.hint)),
                }
            }
            vec![]
        }
        Event::ShellDone(r) => {
            let line = match &r {
                Ok(status) => format!("shell: ended ({status})"),
                Err(e) => format!("shell: {e}"),
            };
            s.log_line(line);
            if let (Screen::Tools(w), Err(e)) = (&mut s.screen, r) {
                w.error = Some(e);
            }
            vec![]
        }
        Event::TasksFound(tasks) => {
            // The passphrase field is offered when the source has a LUKS partition.
            let luks = match &s.screen {
                Screen::Backup(w) => s.disk(w.disk).is_some_and(|d| !luks_partitions(d).is_empty()),
                _ => false,
            };
            if let Screen::Backup(w) = &mut s.screen {
                w.form.set_hidden(F::LuksPassphrase, !luks);
                w.point_form.set_hidden(F::LuksPassphrase, !luks);
                if w.step == BStep::Dest && w.busy {
                    w.busy = false;
                    w.chain_sel = 0;
                    w.point = None;
                    w.step = if tasks.is_empty() { BStep::Options } else { BStep::Chain };
                    w.tasks = tasks;
                }
            }
            vec![]
        }
        Event::PointPlanned(r) => {
            if let Screen::Backup(w) = &mut s.screen {
                w.busy = false;
                match r {
                    Ok(p) => {
                        w.point_plan = Some(*p);
                        w.error = None;
                    }
                    Err(f) => {
                        w.point_plan = None;
                        w.error = Some(format!("{}\nhint: {}", f.message, f.hint));
                    }
                }
            }
            vec![]
        }
        Event::Phase { name, total } => {
            s.log_line(format!("phase: {name}"));
            if let Screen::Progress(p) = &mut s.screen {
                p.phase = name;
                p.total = total;
                p.done = 0;
                p.secs = 0.0;
                p.phases += 1;
            }
            vec![]
        }
        Event::Advance { done, secs } => {
            if let Screen::Progress(p) = &mut s.screen {
                p.done = done;
                p.secs = secs;
            }
            vec![]
        }
        Event::Note(n) => {
            s.log_line(format!("note: {n}"));
            if let Screen::Progress(p) = &mut s.screen {
                p.notes.push(n);
            }
            vec![]
        }
        Event::Finished(r) => finished(s, r),
        Event::Crashed(msg) => {
            s.log_line(format!("internal error: {msg}"));
            let text = format!("internal error (a bug in rescue): {msg}\nhint: the log (Tools > View the log) has details; the CLI may work around it");
            match &mut s.screen {
                Screen::Progress(_) => {
                    return finished(
                        s,
                        Err(Failure {
                            message: format!("internal error (a bug in rescue): {msg}"),
                            hint: "the log (Tools > View the log) has details; check the target before trusting it".into(),
                            class: ErrorClass::Failed,
                            needs_password: false,
                        }),
                    )
                }
                Screen::Backup(w) => (w.busy, w.error) = (false, Some(text)),
                Screen::Restore(w) => (w.busy, w.error) = (false, Some(text)),
                Screen::Clone(w) => (w.busy, w.error) = (false, Some(text)),
                Screen::Tools(w) => (w.busy, w.error) = (false, Some(text)),
                _ => {}
            }
            vec![]
        }
    }
}

fn set_disks(s: &mut State, d: Vec<DiskEntry>) {
    s.disks = d;
    s.loading = false;
    s.idle_ticks = 0;
    let n = s.disks.len();
    if s.sel >= n {
        s.sel = n.saturating_sub(1);
    }
}

fn finished(s: &mut State, r: Result<Vec<String>, Failure>) -> Vec<Command> {
    let (op, title, notes) = match &mut s.screen {
        Screen::Progress(p) => (p.op, p.title.clone(), std::mem::take(&mut p.notes)),
        _ => (Op::Check, "Task".to_string(), Vec::new()),
    };
    let view = match r {
        Ok(mut lines) => {
            lines.extend(notes.into_iter().map(|n| format!("note: {n}")));
            let next = match op {
                Op::Backup => {
                    vec!["Keep the image on another disk than the one you backed up.".into(), "Tools > Check image verifies it again at any time.".into()]
                }
                Op::Restore | Op::Clone => vec![
                    "Remove the rescue medium and boot from the target disk.".into(),
                    "If Windows or Linux does not start, check the firmware's boot order (UEFI/BIOS).".into(),
                ],
                Op::Check => vec!["The image is sound: it can be restored.".into()],
                Op::Universal => vec![
                    "Boot the disk on its new hardware; the first start of Windows installs the devices it finds.".into(),
                    "The old SYSTEM hive is kept beside the new one (see above) should you need to go back.".into(),
                ],
                Op::Merge => vec![
                    "The new image stands alone: restore or check it without the other files of the chain.".into(),
                    "Tools > Backup points shows what is left in the folder.".into(),
                ],
                Op::Power | Op::Mount => vec![],
            };
            s.recent.insert(0, format!("[ok]     {title}"));
            ResultView { status: "OK", title: format!("{} finished", op.name()), lines, hint: None, next, scroll: 0 }
        }
        Err(f) => {
            let cancelled = f.class == ErrorClass::Cancelled || f.message.contains("cancelled");
            let tag = if cancelled { "[cancelled]" } else { "[FAILED]" };
            s.recent.insert(0, format!("{tag} {title}"));
            let mut lines = vec![f.message.clone()];
            lines.extend(notes.into_iter().map(|n| format!("note: {n}")));
            ResultView {
                status: match f.class {
                    _ if cancelled => "CANCELLED",
                    ErrorClass::Refused => "REFUSED",
                    ErrorClass::Verification => "VERIFY FAILED",
                    _ => "FAILED",
                },
                title: if cancelled { format!("{} cancelled", op.name()) } else { format!("{} failed", op.name()) },
                lines,
                hint: Some(f.hint.clone()),
                next: vec!["Tools > View the log shows every step.".into()],
                scroll: 0,
            }
        }
    };
    s.recent.truncate(20);
    s.log_line(format!("{}: {}", view.title, view.lines.join("; ")));
    s.screen = Screen::Result(view);
    vec![]
}

fn image_opened(s: &mut State, r: Result<ImageSummary, Failure>) -> Vec<Command> {
    match &mut s.screen {
        Screen::Restore(w) => {
            w.busy = false;
            match r {
                Ok(img) if w.points.is_none() => {
                    // The chosen image: now read its chain to offer its points in time.
                    let cmd = Command::Points { path: img.path.clone(), password: img.password.clone() };
                    w.image = Some(img);
                    w.error = None;
                    w.busy = true;
                    w.step = RStep::Point;
                    return vec![cmd];
                }
                Ok(img) => {
                    // A point of the chain, chosen on the Point step.
                    w.image = Some(img);
                    w.error = None;
                    w.what_sel = 0;
                    w.step = RStep::What;
                }
                Err(f) if f.needs_password => {
                    w.error = (w.step == RStep::Password).then(|| f.message.clone());
                    w.step = RStep::Password;
                    w.password.clear();
                }
                Err(f) => w.error = Some(format!("{}\nhint: {}", f.message, f.hint)),
            }
        }
        Screen::Tools(w) => {
            w.busy = false;
            match r {
                Ok(img) if w.tool == Tool::Check => {
                    // Opened (and the password checked): now read every byte.
                    let cmd = Command::Check { path: img.path.clone(), password: img.password.clone() };
                    s.screen = start_progress(Op::Check, format!("Check of {}", img.path.display()));
                    return vec![cmd];
                }
                Ok(img) => {
                    w.info = Some(img);
                    w.error = None;
                    w.scroll = 0;
                    w.step = TStep::View;
                }
                Err(f) if f.needs_password => {
                    w.error = (w.step == TStep::Password).then(|| f.message.clone());
                    w.step = TStep::Password;
                    w.password.clear();
                }
                Err(f) => w.error = Some(format!("{}\nhint: {}", f.message, f.hint)),
            }
        }
        _ => {}
    }
    vec![]
}

/// The chain of an image (restore wizard) or of an image or folder (tools).
fn points_read(s: &mut State, r: Result<Vec<PointSummary>, Failure>) -> Vec<Command> {
    if let Err(f) = &r {
        s.log_line(format!("{}; hint: {}", f.message, f.hint));
    }
    match &mut s.screen {
        Screen::Restore(w) if w.step == RStep::Point && w.busy => {
            w.busy = false;
            let list = r.unwrap_or_default();
            let here = w.image.as_ref().map(|i| same_file(&i.path, i.volumes.first()));
            let sel = list.iter().position(|p| here.as_ref().is_some_and(|f| f(&p.path)));
            if list.len() <= 1 {
                // A stand-alone image (or an unreadable folder): the image itself is the only point.
                w.points = Some(Vec::new());
                w.what_sel = 0;
                w.step = RStep::What;
            } else {
                w.point_sel = sel.unwrap_or(list.len() - 1);
                w.points = Some(list);
            }
        }
        Screen::Tools(w) if w.busy && matches!(w.tool, Tool::Merge | Tool::Points) => {
            w.busy = false;
            match r {
                Ok(list) if w.password.is_empty() && list.iter().any(|p| p.status == PointStatus::Locked) => {
                    w.error = Some("some images are encrypted: type their password".into());
                    w.step = TStep::Password;
                }
                Ok(list) if list.is_empty() => w.error = Some(format!("no backup images found at {}", w.path.trim())),
                Ok(list) => {
                    w.error = None;
                    w.scroll = 0;
                    if w.tool == Tool::Points {
                        w.step = TStep::View;
                    } else {
                        w.point_sel = list.len() - 1;
                        w.step = TStep::PickPoint;
                    }
                    w.points = list;
                }
                Err(f) if f.needs_password => {
                    w.error = (w.step == TStep::Password).then(|| f.message.clone());
                    w.step = TStep::Password;
                    w.password.clear();
                }
                Err(f) => w.error = Some(format!("{}\nhint: {}", f.message, f.hint)),
            }
        }
        _ => {}
    }
    vec![]
}

/// Whether a path names the image at `path` (or its first volume).
fn same_file(path: &Path, first: Option<&PathBuf>) -> impl Fn(&Path) -> bool {
    let canon = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let mut mine = vec![canon(path)];
    if let Some(f) = first {
        mine.push(canon(f));
    }
    move |p: &Path| mine.contains(&canon(p))
}

/// Why a point cannot be chosen, if it cannot.
pub fn point_unusable(p: &PointSummary) -> Option<String> {
    match p.status {
        PointStatus::Ok => None,
        PointStatus::Locked => Some(format!("point #{} is encrypted with another password: {}", p.sequence, p.problem.as_deref().unwrap_or("locked"))),
        PointStatus::Broken => Some(format!(
            "point #{} cannot be restored: {}\nhint: a file it depends on is missing or damaged; choose an older point, or put the missing file back beside it",
            p.sequence,
            p.problem.as_deref().unwrap_or("it or a file it depends on is unreadable")
        )),
    }
}

fn key(s: &mut State, k: KeyEvent) -> Vec<Command> {
    s.idle_ticks = 0;
    let ctrl_c = k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
    if s.help {
        // Any key closes the overview.
        s.help = false;
        return vec![];
    }
    let typing = s.typing();
    let action =
        if ctrl_c { Some(if matches!(s.screen, Screen::Progress(_)) { Action::Cancel } else { Action::Quit }) } else { keys::lookup(s.bindings(), &k, typing) };
    if action == Some(Action::Help) {
        s.help = true;
        return vec![];
    }
    if ctrl_c && !matches!(s.screen, Screen::Home | Screen::Progress(_)) {
        // Ctrl-C outside a task: leave the wizard, as Esc from its start would.
        s.screen = Screen::Home;
        return vec![];
    }
    let screen = std::mem::replace(&mut s.screen, Screen::Home);
    let (screen, cmds) = match screen {
        Screen::Home => home(s, action),
        Screen::Backup(w) => backup(s, w, action, &k),
        Screen::Restore(w) => restore(s, w, action, &k),
        Screen::Clone(w) => clone(s, w, action, &k),
        Screen::Tools(w) => tools(s, w, action, &k),
        Screen::Confirm(c) => confirm(*c, action, &k),
        Screen::Progress(p) => progress(p, action),
        Screen::Result(mut r) => match action {
            Some(Action::Enter | Action::Back) => {
                s.loading = true;
                (Screen::Home, vec![Command::Refresh])
            }
            Some(a) => {
                scroll(&mut r.scroll, a);
                (Screen::Result(r), vec![])
            }
            None => (Screen::Result(r), vec![]),
        },
    };
    s.screen = screen;
    if matches!(s.screen, Screen::Home) {
        if let Some(d) = s.pending_disks.take() {
            set_disks(s, d);
        }
    }
    cmds
}

fn home(s: &mut State, action: Option<Action>) -> (Screen, Vec<Command>) {
    let n = s.disks.len();
    match action {
        Some(a @ (Action::Up | Action::Down)) => step_sel(&mut s.sel, n, a),
        Some(Action::Quit) => return (Screen::Home, vec![Command::Quit]),
        Some(Action::Refresh) => {
            s.loading = true;
            return (Screen::Home, vec![Command::Refresh]);
        }
        Some(Action::Backup) => {
            // Start from the disk selected on the home screen.
            let disk = s.disks.iter().take(s.sel + 1).filter(|d| d.is_ok()).count().saturating_sub(1);
            let w = BackupWiz {
                step: BStep::Kind,
                kind: 0,
                disk,
                part_sel: 0,
                parts: Vec::new(),
                dest: String::new(),
                form: backup_form(),
                plan: None,
                busy: false,
                error: None,
                scroll: 0,
                tasks: Vec::new(),
                chain_sel: 0,
                dest_focus: 0,
                dest_sel: 0,
                point: None,
                point_form: point_form(),
                point_plan: None,
            };
            return (Screen::Backup(w), vec![]);
        }
        Some(Action::Restore) => {
            let w = RestoreWiz {
                step: RStep::Image,
                path: String::new(),
                scan_dir: s.default_dir.display().to_string(),
                found: Vec::new(),
                focus: 0,
                found_sel: 0,
                password: String::new(),
                image: None,
                points: None,
                point_sel: 0,
                what_sel: 0,
                target: 0,
                tpart_sel: 0,
                tpart: None,
                form: restore_form(),
                sizes: Default::default(),
                edit: None,
                plan: None,
                busy: false,
                error: None,
                scroll: 0,
            };
            return (Screen::Restore(w), vec![]);
        }
        Some(Action::Clone) => {
            let w = CloneWiz {
                step: CStep::Kind,
                kind: 0,
                src: 0,
                src_part: 0,
                dst: 0,
                dst_part: 0,
                form: clone_form(),
                sizes: Default::default(),
                edit: None,
                plan: None,
                busy: false,
                error: None,
                scroll: 0,
                luks: String::new(),
            };
            return (Screen::Clone(w), vec![]);
        }
        Some(Action::Tools) => {
            let w = ToolsWiz {
                step: TStep::Menu,
                sel: 0,
                tool: Tool::Check,
                path: String::new(),
                password: String::new(),
                info: None,
                points: Vec::new(),
                point_sel: 0,
                form: merge_form(String::new()),
                busy: false,
                error: None,
                scroll: 0,
                disk_sel: 0,
                hw_sel: 0,
                luks: String::new(),
            };
            return (Screen::Tools(w), vec![]);
        }
        _ => {}
    }
    (Screen::Home, vec![])
}

fn start_progress(op: Op, title: String) -> Screen {
    Screen::Progress(ProgressView {
        op,
        title,
        phase: "starting".into(),
        total: 0,
        done: 0,
        secs: 0.0,
        phases: 0,
        notes: Vec::new(),
        ask_cancel: false,
        cancelling: false,
    })
}

fn backup(s: &mut State, mut w: BackupWiz, action: Option<Action>, k: &KeyEvent) -> (Screen, Vec<Command>) {
    let ndisks = s.readable().len();
    let mut cmds = vec![];
    match (w.step, action) {
        (_, Some(Action::Back)) => {
            w.error = None;
            w.step = match w.step {
                BStep::Kind => return (Screen::Home, cmds),
                BStep::Disk => BStep::Kind,
                BStep::Parts => BStep::Disk,
                BStep::Dest if w.kind == 2 => BStep::Parts,
                BStep::Dest => BStep::Disk,
                BStep::Chain => BStep::Dest,
                BStep::Options if !w.tasks.is_empty() => BStep::Chain,
                BStep::Options => BStep::Dest,
                BStep::Summary => BStep::Options,
            };
            w.busy = false;
        }
        (BStep::Kind, Some(a @ (Action::Up | Action::Down))) => step_sel(&mut w.kind, BACKUP_KINDS.len(), a),
        (BStep::Kind, Some(Action::Enter)) => w.step = BStep::Disk,
        (BStep::Disk, Some(a @ (Action::Up | Action::Down))) => step_sel(&mut w.disk, ndisks, a),
        (BStep::Disk, Some(Action::Enter)) => {
            if let Some(d) = s.disk(w.disk) {
                let nparts = source_parts(d);
                if w.kind == 2 {
                    w.parts.retain(|p| nparts.contains(p));
                    w.part_sel = 0;
                    w.step = BStep::Parts;
                } else {
                    w.step = BStep::Dest;
                }
                w.dest = s.default_dir.join(image_name(d, w.kind)).display().to_string();
            }
        }
        (BStep::Parts, Some(a @ (Action::Up | Action::Down))) => {
            let n = s.disk(w.disk).map(|d| source_parts(d).len()).unwrap_or(0);
            step_sel(&mut w.part_sel, n, a);
        }
        (BStep::Parts, Some(Action::Toggle)) => {
            if let Some(n) = s.disk(w.disk).and_then(|d| source_parts(d).get(w.part_sel).copied()) {
                if let Some(i) = w.parts.iter().position(|p| *p == n) {
                    w.parts.remove(i);
                } else {
                    w.parts.push(n);
                    w.parts.sort_unstable();
                }
            }
        }
        (BStep::Parts, Some(Action::Enter)) => {
            if w.parts.is_empty() {
                w.error = Some("select at least one partition with Space".into());
            } else {
                w.error = None;
                w.step = BStep::Dest;
            }
        }
        (BStep::Dest, Some(Action::Enter)) if !w.busy && w.dest_focus == 1 && w.dest_sel >= dest_places(s, w.disk).len() => {
            // A saved share: its NAME:PATH form, which Enter on the path resolves.
            let i = w.dest_sel - dest_places(s, w.disk).len();
            if let (Some((name, _)), Some(src)) = (s.saved_shares.get(i), s.disk(w.disk)) {
                w.dest = format!("{name}:{}", image_name(src, w.kind));
                w.dest_focus = 0;
            }
        }
        (BStep::Dest, Some(Action::Enter)) if !w.busy && w.dest_focus == 1 => {
            let places = dest_places(s, w.disk);
            if let (Some(p), Some(src)) = (places.get(w.dest_sel), s.disk(w.disk)) {
                let name = image_name(src, w.kind);
                match &p.mounted_at {
                    Some(dir) => {
                        w.dest = dir.join(name).display().to_string();
                        w.dest_focus = 0;
                    }
                    None => {
                        let Some(d) = s.disk(p.disk) else { return (Screen::Backup(w), cmds) };
                        let part = d.partition(p.number);
                        let what = part.map(|x| super::view::part_description(x)).unwrap_or_default();
                        let word = format!("{}:{}", d.disk.name, p.number);
                        let c = Confirm {
                            title: format!("Mount partition {} of {} to save the backup on", p.number, d.disk.name),
                            lines: vec![
                                format!("Partition {} of {}:", p.number, super::view::disk_line(d)),
                                format!("  {what}"),
                                String::new(),
                                format!("is mounted read-write under {}, and the image file is written", mount_base().display()),
                                "into it. Nothing else on it is changed; it is unmounted when rescue quits.".into(),
                            ],
                            word,
                            typed: String::new(),
                            error: None,
                            then: Command::MountDest { disk: Box::new(d.clone()), number: p.number },
                            op: Op::Mount,
                            back: Screen::Home,
                        };
                        let mut c = Box::new(c);
                        w.busy = true;
                        c.back = Screen::Backup(w);
                        return (Screen::Confirm(c), cmds);
                    }
                }
            }
        }
        (BStep::Dest, Some(Action::Enter)) if !w.busy => {
            if w.dest.trim().is_empty() {
                w.error = Some("type where the image goes, e.g. /mnt/usb/pc.rimg".into());
            } else if let Some(d) = s.disk(w.disk) {
                // A saved share's NAME:PATH is shown as the URL it stands for.
                w.dest = crate::cli::resolve_typed_location(w.dest.trim());
                // Does the folder already hold backups of this disk? Then a
                // new point of that task is offered (answer: TasksFound).
                w.error = None;
                w.busy = true;
                w.tasks.clear();
                let dir = match Path::new(w.dest.trim()).parent() {
                    Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                    _ => PathBuf::from("."),
                };
                cmds.push(Command::FindTasks { dir, source: d.disk.path.clone() });
            }
        }
        (BStep::Chain, Some(a @ (Action::Up | Action::Down))) => step_sel(&mut w.chain_sel, chain_offers(&w.tasks).len(), a),
        (BStep::Chain, Some(Action::Enter)) => {
            w.point = chain_offers(&w.tasks).get(w.chain_sel).copied().flatten().map(|(k, p)| (k, p.path.clone()));
            w.error = None;
            w.step = BStep::Options;
        }
        (BStep::Dest, Some(Action::NextField)) => {
            let n = dest_places(s, w.disk).len() + s.saved_shares.len();
            w.dest_focus = if w.dest_focus == 0 && n > 0 { 1 } else { 0 };
            w.dest_sel = w.dest_sel.min(n.saturating_sub(1));
        }
        (BStep::Dest, Some(a @ (Action::Up | Action::Down))) if w.dest_focus == 1 => {
            step_sel(&mut w.dest_sel, dest_places(s, w.disk).len() + s.saved_shares.len(), a)
        }
        (BStep::Dest, None) if w.dest_focus == 0 => edit_text(&mut w.dest, k),
        (BStep::Options, Some(Action::NextField)) => w.active_form_mut().move_focus(1),
        (BStep::Options, Some(Action::PrevField)) => w.active_form_mut().move_focus(-1),
        (BStep::Options, Some(Action::Left)) => {
            w.active_form_mut().change(-1);
        }
        (BStep::Options, Some(Action::Right)) => {
            w.active_form_mut().change(1);
        }
        (BStep::Options, Some(Action::Enter)) if w.point.is_some() => {
            if let (Some((kind, from)), Some(d)) = (&w.point, s.disk(w.disk)) {
                w.error = None;
                w.point_plan = None;
                w.busy = true;
                w.scroll = 0;
                w.step = BStep::Summary;
                // The source is named so the engine checks that this disk
                // is the task's (serial, WWN, size, partition-table id).
                let req = PointRequest {
                    from: from.clone(),
                    kind: Some(*kind),
                    output: None,
                    source: Some(d.disk.path.clone()),
                    compression: None,
                    luks_passphrases: luks_passphrases(w.point_form.text(F::LuksPassphrase)),
                };
                cmds.push(Command::PlanPoint { req, password: None });
            }
        }
        (BStep::Options, Some(Action::Enter)) => match backup_options_error(&w.form) {
            Some(e) => w.error = Some(e),
            None => {
                w.error = None;
                w.plan = None;
                w.busy = true;
                w.scroll = 0;
                w.step = BStep::Summary;
                if let Some(d) = s.disk(w.disk) {
                    cmds.push(Command::PlanBackup(BackupRequest {
                        source: d.disk.path.clone(),
                        selection: match w.kind {
                            0 => Selection::Disk,
                            1 => Selection::System,
                            _ => Selection::Partitions(w.parts.clone()),
                        },
                        sector_by_sector: w.form.choice(F::Copy) == 1,
                        file_sector_size: None,
                        output: Some(PathBuf::from(w.dest.trim())),
                        luks_passphrases: luks_passphrases(w.form.text(F::LuksPassphrase)),
                    }));
                }
            }
        },
        (BStep::Options, None) => w.active_form_mut().edit(k),
        (BStep::Summary, Some(Action::Enter)) if w.point.is_some() => {
            if let (Some(plan), false) = (&w.point_plan, w.busy) {
                let f = &w.point_form;
                let job = PointJob { plan: plan.clone(), password: None, verify: f.choice(F::Verify) == 1, comment: opt_password(f.text(F::Comment).trim()) };
                let title = format!("{} point of {} to {}", capitalize(plan.kind.name()), plan.backup.source.name, plan.output.display());
                return (start_progress(Op::Backup, title), vec![Command::RunPoint(Box::new(job))]);
            }
        }
        (BStep::Summary, Some(a @ (Action::PageUp | Action::PageDown | Action::Up | Action::Down))) => scroll(&mut w.scroll, a),
        (BStep::Summary, Some(Action::Enter)) => {
            if let (Some(plan), false) = (&w.plan, w.busy) {
                let f = &w.form;
                let split = match f.choice(F::Split) {
                    1 => Some(4000 << 20),
                    2 => Some(4480 << 20),
                    3 => imaging::blockdev::parse_size(f.text(F::SplitCustom).trim()),
                    _ => None,
                };
                let job = BackupJob {
                    plan: plan.clone(),
                    output: PathBuf::from(w.dest.trim()),
                    compression: [Compression::None, Compression::Fast, Compression::Normal, Compression::High][f.choice(F::Compression)],
                    password: (f.choice(F::Encrypt) == 1).then(|| f.text(F::Password).to_string()),
                    split,
                    verify: f.choice(F::Verify) == 1,
                    comment: opt_password(f.text(F::Comment).trim()),
                };
                let title = format!("Backup of {} to {}", plan.source.name, w.dest.trim());
                return (start_progress(Op::Backup, title), vec![Command::RunBackup(Box::new(job))]);
            }
        }
        _ => {}
    }
    if w.step == BStep::Options && w.point.is_none() {
        backup_form_visibility(&mut w.form);
    }
    (Screen::Backup(w), cmds)
}

pub fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

fn backup_options_error(f: &Form) -> Option<String> {
    if f.choice(F::Encrypt) == 1 {
        if f.text(F::Password).is_empty() {
            return Some("type a password (twice) or turn encryption off".into());
        }
        if f.text(F::Password) != f.text(F::Password2) {
            return Some("the two passwords differ: type them again".into());
        }
    }
    if f.choice(F::Split) == 3 {
        match imaging::blockdev::parse_size(f.text(F::SplitCustom).trim()) {
            None => return Some("type a volume size such as 700M or 2G".into()),
            Some(v) if v < imaging::image::volume::MIN_SPLIT => return Some("volumes must be at least 50M".into()),
            _ => {}
        }
    }
    None
}

/// A key in an open size editor: Esc closes it, Enter closes it and returns
/// the sizes to plan with, the rest edit.
fn edit_key(edit: &mut Option<SizeEdit>, action: Option<Action>) -> Option<std::collections::BTreeMap<u32, u64>> {
    match (action, edit.as_mut()) {
        (Some(Action::Back), _) => {
            *edit = None;
            None
        }
        (Some(Action::Enter), Some(e)) => {
            let sizes = e.sizes();
            *edit = None;
            Some(sizes)
        }
        (Some(a), Some(e)) => {
            e.key(a);
            None
        }
        _ => None,
    }
}

fn restore(s: &mut State, mut w: RestoreWiz, action: Option<Action>, k: &KeyEvent) -> (Screen, Vec<Command>) {
    let mut cmds = vec![];
    let ndisks = s.readable().len();
    if w.step == RStep::Summary && w.edit.is_some() {
        if let Some(sizes) = edit_key(&mut w.edit, action) {
            w.sizes = sizes;
            plan_restore(s, &mut w, &mut cmds);
        }
        return (Screen::Restore(w), cmds);
    }
    match (w.step, action) {
        (RStep::Summary, Some(Action::Edit)) => match (&w.plan, &w.image) {
            (Some(p), Some(img)) if !w.busy => {
                let cat = &img.catalog;
                w.edit = SizeEdit::new(p, &|n| cat.regions.iter().find(|r| r.partition == Some(n)).and_then(|r| r.fs.clone()));
                if w.edit.is_none() {
                    w.error = Some("partition sizes are edited for a whole-disk restore".into());
                }
            }
            _ => {}
        },
        (_, Some(Action::Back)) => {
            w.error = None;
            w.step = match w.step {
                RStep::Image => return (Screen::Home, cmds),
                RStep::Password | RStep::Point => RStep::Image,
                RStep::What if w.points.as_ref().is_some_and(|p| p.len() > 1) => RStep::Point,
                RStep::What => RStep::Image,
                RStep::Target => RStep::What,
                RStep::TargetPart => RStep::Target,
                RStep::Summary => {
                    let single = w.image.as_ref().and_then(|i| restore_choices(&i.catalog).get(w.what_sel).copied().flatten()).is_some();
                    if single {
                        RStep::TargetPart
                    } else {
                        RStep::Target
                    }
                }
            };
            w.busy = false;
            if w.step == RStep::Image {
                w.points = None;
            }
        }
        (RStep::Image, Some(Action::NextField)) => w.focus = (w.focus + 1) % 3,
        (RStep::Image, Some(a @ (Action::Up | Action::Down))) if w.focus == 1 => {
            // The folder field cycles through the default folder, every
            // disk, and the saved shares.
            let mut choices = vec![s.default_dir.display().to_string(), EVERY_DISK.to_string()];
            choices.extend(s.saved_shares.iter().map(|(n, _)| format!("{n}:")));
            let at = choices.iter().position(|c| c == w.scan_dir.trim()).unwrap_or(0);
            let n = choices.len();
            w.scan_dir = choices[if a == Action::Down { (at + 1) % n } else { (at + n - 1) % n }].clone();
        }
        (RStep::Image, Some(a @ (Action::Up | Action::Down))) => {
            w.focus = 2;
            step_sel(&mut w.found_sel, w.found.len(), a);
        }
        (RStep::Image, Some(Action::Enter)) => {
            let path = match w.focus {
                1 if w.scan_dir.trim() == EVERY_DISK => {
                    w.busy = true;
                    w.error = None;
                    cmds.push(Command::ScanDisks);
                    return (Screen::Restore(w), cmds);
                }
                1 => {
                    w.busy = true;
                    w.error = None;
                    // A share's folder (URL or a saved share's NAME:PATH) is listed too.
                    w.scan_dir = crate::cli::resolve_typed_location(w.scan_dir.trim());
                    return (Screen::Restore(w.with_scan(&mut cmds)), cmds);
                }
                2 => w.found.get(w.found_sel).map(|p| p.display().to_string()).unwrap_or_default(),
                _ => crate::cli::resolve_typed_location(w.path.trim()),
            };
            if path.is_empty() {
                w.error = Some("type the image's path, or scan a folder for images".into());
            } else {
                w.path = path.clone();
                w.busy = true;
                w.error = None;
                w.password.clear();
                w.points = None;
                cmds.push(Command::OpenImage { path: PathBuf::from(path), password: None });
            }
        }
        (RStep::Image, None) => match w.focus {
            0 => edit_text(&mut w.path, k),
            1 => edit_text(&mut w.scan_dir, k),
            _ => {}
        },
        (RStep::Password, Some(Action::Enter)) => {
            w.busy = true;
            cmds.push(Command::OpenImage { path: PathBuf::from(w.path.trim()), password: opt_password(&w.password) });
        }
        (RStep::Password, None) => edit_text(&mut w.password, k),
        (RStep::Point, Some(a @ (Action::Up | Action::Down))) => {
            w.error = None;
            step_sel(&mut w.point_sel, w.points.as_ref().map_or(0, Vec::len), a);
        }
        (RStep::Point, Some(Action::Enter)) if !w.busy => {
            if let (Some(p), Some(img)) = (w.points.as_ref().and_then(|l| l.get(w.point_sel)), &w.image) {
                if let Some(why) = point_unusable(p) {
                    w.error = Some(why);
                } else if same_file(&img.path, img.volumes.first())(&p.path) {
                    w.error = None;
                    w.what_sel = 0;
                    w.step = RStep::What;
                } else {
                    // Open the chosen point (with its whole chain) for its catalog.
                    w.error = None;
                    w.busy = true;
                    cmds.push(Command::OpenImage { path: p.path.clone(), password: img.password.clone() });
                }
            }
        }
        (RStep::What, Some(a @ (Action::Up | Action::Down))) => {
            let n = w.image.as_ref().map(|i| restore_choices(&i.catalog).len()).unwrap_or(0);
            step_sel(&mut w.what_sel, n, a);
        }
        (RStep::What, Some(Action::Enter)) => w.step = RStep::Target,
        (RStep::Target, Some(a @ (Action::Up | Action::Down))) => step_sel(&mut w.target, ndisks, a),
        (RStep::Target, Some(Action::Enter)) => {
            let single = w.image.as_ref().and_then(|i| restore_choices(&i.catalog).get(w.what_sel).copied().flatten()).is_some();
            if s.disk(w.target).is_some() {
                if single {
                    w.tpart_sel = 0;
                    w.step = RStep::TargetPart;
                } else {
                    w.step = RStep::Summary;
                    plan_restore(s, &mut w, &mut cmds);
                }
            }
        }
        (RStep::TargetPart, Some(a @ (Action::Up | Action::Down))) => {
            let n = s.disk(w.target).map(|d| target_parts(d).len()).unwrap_or(0);
            step_sel(&mut w.tpart_sel, n, a);
        }
        (RStep::TargetPart, Some(Action::Enter)) => {
            w.step = RStep::Summary;
            plan_restore(s, &mut w, &mut cmds);
        }
        (RStep::Summary, Some(a @ (Action::NextField | Action::PrevField))) => w.form.move_focus(if a == Action::NextField { 1 } else { -1 }),
        (RStep::Summary, Some(a @ (Action::Left | Action::Right))) => {
            w.form.change(if a == Action::Right { 1 } else { -1 });
            if w.form.fields[w.form.focus].id == F::Universal {
                // Done after the restore: the plan stays.
            } else if w.form.fields[w.form.focus].id == F::OnlyChanged {
                // Same plan, another way to execute it.
                let on = w.form.choice(F::OnlyChanged) == 1;
                if let Some(p) = &mut w.plan {
                    p.only_changed = on && p.whole_disk;
                }
            } else {
                // The other fields change the layout: a new plan (and the
                // manual sizes give way to the chosen mode).
                if matches!(w.form.fields[w.form.focus].id, F::Layout | F::Align) {
                    w.sizes.clear();
                }
                plan_restore(s, &mut w, &mut cmds);
            }
        }
        (RStep::Summary, Some(a @ (Action::PageUp | Action::PageDown))) => scroll(&mut w.scroll, a),
        (RStep::Summary, Some(Action::Enter)) => {
            if let (Some(plan), false) = (&w.plan, w.busy) {
                let universal = universal_for(w.form.choice(F::Universal)).map(|for_hw| UniversalJob {
                    disk: plan.target.path.clone(),
                    // The restored partition; a new one is found by searching the disk.
                    part: if plan.whole_disk { None } else { w.tpart },
                    for_hw,
                    luks: Default::default(),
                });
                let mut lines = write_plan_words(plan);
                if universal.is_some() {
                    lines.push(universal_line(w.form.choice(F::Universal)));
                }
                let then = Command::RunRestore {
                    plan: Box::new(plan.clone()),
                    password: w.image.as_ref().and_then(|i| i.password.clone()),
                    sector_by_sector: w.form.choice(F::SectorBySector) == 1,
                    universal,
                };
                let c = Confirm {
                    title: format!("Restore {} to {}", w.image.as_ref().map(|i| i.path.display().to_string()).unwrap_or_default(), plan.target.name),
                    lines,
                    word: plan.target.name.clone(),
                    typed: String::new(),
                    error: None,
                    then,
                    op: Op::Restore,
                    back: Screen::Home,
                };
                let mut c = Box::new(c);
                c.back = Screen::Restore(w);
                return (Screen::Confirm(c), cmds);
            }
        }
        _ => {}
    }
    (Screen::Restore(w), cmds)
}

impl RestoreWiz {
    fn with_scan(self, cmds: &mut Vec<Command>) -> Self {
        cmds.push(Command::Scan(PathBuf::from(self.scan_dir.trim())));
        self
    }
}

fn plan_restore(s: &State, w: &mut RestoreWiz, cmds: &mut Vec<Command>) {
    let (Some(img), Some(d)) = (&w.image, s.disk(w.target)) else { return };
    let part = restore_choices(&img.catalog).get(w.what_sel).copied().flatten();
    let tpart = if part.is_some() { target_parts(d).get(w.tpart_sel).copied().flatten() } else { None };
    w.tpart = tpart;
    w.plan = None;
    w.busy = true;
    w.error = None;
    w.scroll = 0;
    cmds.push(Command::PlanRestore {
        req: RestoreRequest {
            image: img.path.clone(),
            target: d.disk.path.clone(),
            source_partition: part,
            target_partition: tpart,
            layout: layout_options(&w.form, &w.sizes),
            file_sector_size: None,
            sector_by_sector: w.form.choice(F::SectorBySector) == 1,
        },
        password: img.password.clone(),
    });
}

fn clone(s: &mut State, mut w: CloneWiz, action: Option<Action>, k: &KeyEvent) -> (Screen, Vec<Command>) {
    let mut cmds = vec![];
    let ndisks = s.readable().len();
    let part = w.kind == 2;
    if w.step == CStep::Summary && w.edit.is_some() {
        if let Some(sizes) = edit_key(&mut w.edit, action) {
            w.sizes = sizes;
            plan_clone(s, &mut w, &mut cmds);
        }
        return (Screen::Clone(w), cmds);
    }
    match (w.step, action) {
        (CStep::Summary, Some(Action::Edit)) => {
            if let (Some(p), Some(src), false) = (&w.plan, s.disk(w.src), w.busy) {
                w.edit = SizeEdit::new(&p.write, &|n| src.partition(n).and_then(|x| x.fs.clone()));
                if w.edit.is_none() {
                    w.error = Some("partition sizes are edited for a whole-disk clone".into());
                }
            }
        }
        (_, Some(Action::Back)) => {
            w.error = None;
            w.step = match w.step {
                CStep::Kind => return (Screen::Home, cmds),
                CStep::Source => CStep::Kind,
                CStep::SourcePart => CStep::Source,
                CStep::Target if part => CStep::SourcePart,
                CStep::Target => CStep::Source,
                CStep::TargetPart => CStep::Target,
                CStep::LuksPassword if part => CStep::TargetPart,
                CStep::LuksPassword => CStep::Target,
                CStep::Summary if !w.luks_sources(s).is_empty() => CStep::LuksPassword,
                CStep::Summary if part => CStep::TargetPart,
                CStep::Summary => CStep::Target,
            };
        }
        (CStep::Kind, Some(a @ (Action::Up | Action::Down))) => step_sel(&mut w.kind, CLONE_KINDS.len(), a),
        (CStep::Kind, Some(Action::Enter)) => w.step = CStep::Source,
        (CStep::Source, Some(a @ (Action::Up | Action::Down))) => step_sel(&mut w.src, ndisks, a),
        (CStep::Source, Some(Action::Enter)) if s.disk(w.src).is_some() => {
            w.src_part = 0;
            w.step = if part { CStep::SourcePart } else { CStep::Target };
            if !part && w.dst == w.src {
                w.dst = if w.src == 0 { 1 } else { 0 };
            }
        }
        (CStep::SourcePart, Some(a @ (Action::Up | Action::Down))) => {
            let n = s.disk(w.src).map(|d| source_parts(d).len()).unwrap_or(0);
            step_sel(&mut w.src_part, n, a);
        }
        (CStep::SourcePart, Some(Action::Enter)) if s.disk(w.src).is_some_and(|d| !source_parts(d).is_empty()) => w.step = CStep::Target,
        (CStep::Target, Some(a @ (Action::Up | Action::Down))) => step_sel(&mut w.dst, ndisks, a),
        (CStep::Target, Some(Action::Enter)) if s.disk(w.dst).is_some() => {
            if part {
                w.dst_part = 0;
                w.step = CStep::TargetPart;
            } else if !w.luks_sources(s).is_empty() {
                w.step = CStep::LuksPassword;
            } else {
                w.step = CStep::Summary;
                plan_clone(s, &mut w, &mut cmds);
            }
        }
        (CStep::TargetPart, Some(a @ (Action::Up | Action::Down))) => {
            let n = s.disk(w.dst).map(|d| target_parts(d).len()).unwrap_or(0);
            step_sel(&mut w.dst_part, n, a);
        }
        (CStep::TargetPart, Some(Action::Enter)) if !w.luks_sources(s).is_empty() => w.step = CStep::LuksPassword,
        (CStep::TargetPart | CStep::LuksPassword, Some(Action::Enter)) => {
            w.step = CStep::Summary;
            plan_clone(s, &mut w, &mut cmds);
        }
        (CStep::LuksPassword, None) => edit_text(&mut w.luks, k),
        (CStep::Summary, Some(a @ (Action::NextField | Action::PrevField))) => w.form.move_focus(if a == Action::NextField { 1 } else { -1 }),
        (CStep::Summary, Some(a @ (Action::Left | Action::Right))) => {
            w.form.change(if a == Action::Right { 1 } else { -1 });
            // Universal restore runs after the clone: the plan stays.
            if w.form.fields[w.form.focus].id != F::Universal {
                if matches!(w.form.fields[w.form.focus].id, F::Layout | F::Align) {
                    w.sizes.clear();
                }
                plan_clone(s, &mut w, &mut cmds);
            }
        }
        (CStep::Summary, Some(a @ (Action::PageUp | Action::PageDown))) => scroll(&mut w.scroll, a),
        (CStep::Summary, Some(Action::Enter)) => {
            if let (Some(plan), false) = (&w.plan, w.busy) {
                let choice = w.form.choice(F::Universal);
                let universal = universal_for(choice).map(|for_hw| UniversalJob {
                    disk: plan.write.target.path.clone(),
                    // The partition written; a new one is found by searching the disk.
                    part: if plan.write.whole_disk { None } else { s.disk(w.dst).and_then(|d| target_parts(d).get(w.dst_part).copied().flatten()) },
                    for_hw,
                    luks: Default::default(),
                });
                let mut lines = write_plan_words(&plan.write);
                if w.kind == 1 {
                    lines.extend(plan.source.selection.iter().cloned());
                }
                if universal.is_some() {
                    lines.push(universal_line(choice));
                }
                let c = Confirm {
                    title: format!("Clone {} to {}", plan.write.source, plan.write.target.name),
                    lines,
                    word: plan.write.target.name.clone(),
                    typed: String::new(),
                    error: None,
                    then: Command::RunClone { plan: Box::new(plan.clone()), universal },
                    op: Op::Clone,
                    back: Screen::Home,
                };
                let mut c = Box::new(c);
                c.back = Screen::Clone(w);
                return (Screen::Confirm(c), cmds);
            }
        }
        _ => {}
    }
    (Screen::Clone(w), cmds)
}

fn plan_clone(s: &State, w: &mut CloneWiz, cmds: &mut Vec<Command>) {
    let (Some(src), Some(dst)) = (s.disk(w.src), s.disk(w.dst)) else { return };
    let part = w.kind == 2;
    w.plan = None;
    w.busy = true;
    w.error = None;
    w.scroll = 0;
    cmds.push(Command::PlanClone(CloneRequest {
        system: w.kind == 1,
        source: src.disk.path.clone(),
        source_partition: if part { source_parts(src).get(w.src_part).copied() } else { None },
        target: dst.disk.path.clone(),
        target_partition: if part { target_parts(dst).get(w.dst_part).copied().flatten() } else { None },
        layout: layout_options(&w.form, &w.sizes),
        sector_by_sector: w.form.choice(F::SectorBySector) == 1,
        file_sector_size: None,
        luks_passphrases: luks_passphrases(&w.luks),
    }));
}

fn tools(s: &mut State, mut w: ToolsWiz, action: Option<Action>, k: &KeyEvent) -> (Screen, Vec<Command>) {
    let mut cmds = vec![];
    match (w.step, action) {
        (TStep::Menu, Some(Action::Back)) => return (Screen::Home, cmds),
        (TStep::PickPoint | TStep::MergeOut, Some(Action::Back)) => {
            w.error = None;
            w.step = if w.step == TStep::MergeOut { TStep::PickPoint } else { TStep::Path };
        }
        (TStep::Hardware, Some(Action::Back)) => {
            w.error = None;
            w.busy = false;
            w.step = TStep::Disk;
        }
        (TStep::LuksPassword, Some(Action::Back)) => {
            w.error = None;
            w.busy = false;
            w.step = TStep::Hardware;
        }
        (_, Some(Action::Back)) => {
            w.error = None;
            w.busy = false;
            w.step = TStep::Menu;
        }
        (TStep::Menu, Some(a @ (Action::Up | Action::Down))) => step_sel(&mut w.sel, tools_menu(s).len(), a),
        (TStep::Menu, Some(Action::Enter)) => {
            let menu = tools_menu(s);
            w.tool = menu[w.sel.min(menu.len() - 1)].0;
            w.error = None;
            match w.tool {
                Tool::Universal => {
                    w.step = TStep::Disk;
                }
                Tool::Shell => {
                    if let Some(sh) = s.shell.clone() {
                        s.log_line(format!("shell: {} started", sh.display()));
                        cmds.push(Command::Shell(sh));
                    }
                }
                Tool::Check | Tool::Info | Tool::Merge | Tool::Points => {
                    if matches!(w.tool, Tool::Merge | Tool::Points) && w.path.is_empty() {
                        w.path = s.default_dir.display().to_string();
                    }
                    w.step = TStep::Path;
                }
                Tool::Log => {
                    w.scroll = (s.log.len() as u16).saturating_sub(10);
                    w.step = TStep::View;
                }
                Tool::Hardware => {
                    w.scroll = 0;
                    w.step = TStep::View;
                }
                Tool::PowerOff | Tool::Reboot => {
                    let (word, action, what) = if w.tool == Tool::PowerOff {
                        ("poweroff", PowerAction::PowerOff, "switch the machine off")
                    } else {
                        ("reboot", PowerAction::Reboot, "restart the machine")
                    };
                    let c = Confirm {
                        title: format!("{} the machine", if w.tool == Tool::PowerOff { "Power off" } else { "Reboot" }),
                        lines: vec![format!("This will {what} now."), "Any task still running is stopped; unsaved work in a shell is lost.".into()],
                        word: word.into(),
                        typed: String::new(),
                        error: None,
                        then: Command::Power(action),
                        op: Op::Power,
                        back: Screen::Home,
                    };
                    let mut c = Box::new(c);
                    c.back = Screen::Tools(w);
                    return (Screen::Confirm(c), cmds);
                }
            }
        }
        (TStep::Path | TStep::Password, Some(Action::Enter)) if !w.busy => {
            let path = PathBuf::from(w.path.trim());
            if w.path.trim().is_empty() {
                w.error = Some("type the image's path".into());
            } else if matches!(w.tool, Tool::Merge | Tool::Points) {
                w.busy = true;
                cmds.push(Command::Points { path, password: opt_password(&w.password) });
            } else {
                w.busy = true;
                cmds.push(Command::OpenImage { path, password: opt_password(&w.password) });
            }
        }
        (TStep::Path, None) => edit_text(&mut w.path, k),
        (TStep::Password, None) => edit_text(&mut w.password, k),
        (TStep::PickPoint, Some(a @ (Action::Up | Action::Down))) => {
            w.error = None;
            step_sel(&mut w.point_sel, w.points.len(), a);
        }
        (TStep::PickPoint, Some(Action::Enter)) => {
            if let Some(p) = w.points.get(w.point_sel) {
                if let Some(why) = point_unusable(p) {
                    w.error = Some(why);
                } else {
                    let dir = p.path.parent().map(Path::to_path_buf).unwrap_or_default();
                    let out = dir.join(format!("{}-merged-p{:03}.img", p.task_name, p.sequence));
                    w.form = merge_form(out.display().to_string());
                    w.error = None;
                    w.step = TStep::MergeOut;
                }
            }
        }
        (TStep::MergeOut, Some(Action::NextField)) => w.form.move_focus(1),
        (TStep::MergeOut, Some(Action::PrevField)) => w.form.move_focus(-1),
        (TStep::MergeOut, Some(a @ (Action::Left | Action::Right))) => {
            w.form.change(if a == Action::Right { 1 } else { -1 });
        }
        (TStep::MergeOut, Some(Action::Enter)) => {
            let out = w.form.text(F::MergeOutput).trim().to_string();
            match w.points.get(w.point_sel) {
                _ if out.is_empty() => w.error = Some("type where the new full image goes".into()),
                Some(p) => {
                    let cmd = Command::Merge {
                        point: p.path.clone(),
                        output: PathBuf::from(&out),
                        password: opt_password(&w.password),
                        delete_merged: w.form.choice(F::DeleteMerged) == 1,
                    };
                    let title = format!("Merge of {} #{} into {out}", p.task_name, p.sequence);
                    return (start_progress(Op::Merge, title), vec![cmd]);
                }
                None => {}
            }
        }
        (TStep::MergeOut, None) => w.form.edit(k),
        (TStep::Disk, Some(a @ (Action::Up | Action::Down))) => step_sel(&mut w.disk_sel, s.readable().len(), a),
        (TStep::Disk, Some(Action::Enter)) => {
            if s.disk(w.disk_sel).is_some() {
                w.error = None;
                w.step = TStep::Hardware;
            }
        }
        (TStep::Hardware, Some(a @ (Action::Up | Action::Down))) if !w.busy => step_sel(&mut w.hw_sel, UNIVERSAL_CHOICES.len() - 1, a),
        (TStep::Hardware, Some(Action::Enter)) if !w.busy => {
            if let (Some(d), Some(for_hw)) = (s.disk(w.disk_sel), universal_for(w.hw_sel + 1)) {
                w.error = None;
                if luks_partitions(d).is_empty() {
                    w.busy = true;
                    w.luks.clear();
                    cmds.push(Command::PlanUniversal(UniversalJob { disk: d.disk.path.clone(), part: None, for_hw, luks: Default::default() }));
                } else {
                    // A Linux inside is searched only when it is unlocked.
                    w.step = TStep::LuksPassword;
                }
            }
        }
        (TStep::LuksPassword, Some(Action::Enter)) if !w.busy => {
            if let (Some(d), Some(for_hw)) = (s.disk(w.disk_sel), universal_for(w.hw_sel + 1)) {
                w.busy = true;
                w.error = None;
                cmds.push(Command::PlanUniversal(UniversalJob { disk: d.disk.path.clone(), part: None, for_hw, luks: luks_passphrases(&w.luks) }));
            }
        }
        (TStep::LuksPassword, None) if !w.busy => edit_text(&mut w.luks, k),
        (TStep::View, Some(a)) => scroll(&mut w.scroll, a),
        _ => {}
    }
    (Screen::Tools(w), cmds)
}

/// A mouse event becomes the keys it stands for: the wheel moves the
/// selection, a click on a list item selects it (on the selected one:
/// chooses it), a click on the help bar presses that key.
fn mouse(s: &mut State, m: crossterm::event::MouseEvent) -> Vec<Command> {
    use crossterm::event::{MouseButton, MouseEventKind};
    use super::view::Hit;
    let press = |s: &mut State, code: KeyCode| update(s, Event::Key(KeyEvent::new(code, KeyModifiers::NONE)));
    let inside = |a: &ratatui::layout::Rect| m.column >= a.x && m.column < a.x + a.width && m.row >= a.y && m.row < a.y + a.height;
    match m.kind {
        MouseEventKind::ScrollUp => press(s, KeyCode::Up),
        MouseEventKind::ScrollDown => press(s, KeyCode::Down),
        MouseEventKind::Down(MouseButton::Left) => match s.hits.iter().find(|h| match h {
            Hit::Row { area, .. } | Hit::Key { area, .. } => inside(area),
        }) {
            Some(Hit::Key { key, .. }) => {
                let key = *key;
                press(s, key)
            }
            Some(Hit::Row { delta, .. }) => {
                let (n, code) = match delta.cmp(&0) {
                    std::cmp::Ordering::Equal => (1, KeyCode::Enter),
                    std::cmp::Ordering::Less => (delta.unsigned_abs(), KeyCode::Up),
                    std::cmp::Ordering::Greater => (delta.unsigned_abs(), KeyCode::Down),
                };
                let mut cmds = Vec::new();
                for _ in 0..n {
                    cmds.extend(press(s, code));
                }
                cmds
            }
            None => vec![],
        },
        _ => vec![],
    }
}

/// The Tools entries this system offers (a shell only where there is one).
pub fn tools_menu(s: &State) -> Vec<(Tool, &'static str)> {
    TOOLS.iter().copied().filter(|(t, _)| *t != Tool::Shell || s.shell.is_some()).collect()
}

/// The numbers of the disk's LUKS partitions.
pub fn luks_partitions(d: &imaging::inventory::DiskReport) -> Vec<u32> {
    d.partitions.iter().filter(|p| p.fs.as_ref().is_some_and(imaging::fs::FsInfo::is_luks)).map(|p| p.partition.number).collect()
}

/// The passphrase typed (none when empty).
fn luks_passphrases(typed: &str) -> imaging::luks::Passphrases {
    imaging::luks::Passphrases(if typed.is_empty() { Vec::new() } else { vec![typed.as_bytes().to_vec()] })
}

/// A universal-restore plan arrived: confirm it with the disk's short name.
fn universal_planned(s: &mut State, r: Result<UniversalPlan, Failure>) -> Vec<Command> {
    let Screen::Tools(w) = &mut s.screen else { return vec![] };
    if !matches!(w.step, TStep::Hardware | TStep::LuksPassword) || !w.busy {
        return vec![];
    }
    w.busy = false;
    let (disk_sel, hw_sel, luks) = (w.disk_sel, w.hw_sel, luks_passphrases(&w.luks));
    let plan = match r {
        Ok(p) => p,
        Err(f) => {
            w.error = Some(format!("{}\nhint: {}", f.message, f.hint));
            return vec![];
        }
    };
    let Some(d) = s.disk(disk_sel) else { return vec![] };
    let for_hw = universal_for(hw_sel + 1).unwrap_or_default();
    let name = d.disk.name.clone();
    let mut lines = vec![
        format!("This changes {} on {}", plan.what, super::view::disk_line(d)),
        format!("so that it boots on {}.", universal_words(hw_sel + 1)),
        String::new(),
    ];
    lines.extend(plan.lines);
    let then = Command::RunUniversal(UniversalJob { disk: d.disk.path.clone(), part: None, for_hw, luks });
    let back = std::mem::replace(&mut s.screen, Screen::Home);
    s.screen = Screen::Confirm(Box::new(Confirm {
        title: format!("Universal restore on {name}"),
        lines,
        word: name,
        typed: String::new(),
        error: None,
        then,
        op: Op::Universal,
        back,
    }));
    vec![]
}

fn confirm(mut c: Confirm, action: Option<Action>, k: &KeyEvent) -> (Screen, Vec<Command>) {
    match action {
        Some(Action::Back) => (c.back, vec![]),
        Some(Action::Enter) => {
            if c.typed.trim() == c.word {
                let title = c.title.clone();
                let then = c.then.clone();
                if matches!(c.op, Op::Power | Op::Mount) {
                    return (c.back, vec![then]);
                }
                (start_progress(c.op, title), vec![then])
            } else {
                c.error = Some(format!("that is not \"{}\": nothing was written; type it exactly, or press Esc", c.word));
                c.typed.clear();
                (Screen::Confirm(Box::new(c)), vec![])
            }
        }
        _ => {
            edit_text(&mut c.typed, k);
            (Screen::Confirm(Box::new(c)), vec![])
        }
    }
}

fn progress(mut p: ProgressView, action: Option<Action>) -> (Screen, Vec<Command>) {
    let mut cmds = vec![];
    match action {
        Some(Action::Cancel) if !p.cancelling => {
            if p.ask_cancel {
                // Second press: take it as yes.
                p.ask_cancel = false;
                p.cancelling = true;
                cmds.push(Command::Cancel);
            } else {
                p.ask_cancel = true;
            }
        }
        Some(Action::Yes) if p.ask_cancel => {
            p.ask_cancel = false;
            p.cancelling = true;
            cmds.push(Command::Cancel);
        }
        Some(Action::No) => p.ask_cancel = false,
        _ => {}
    }
    (Screen::Progress(p), cmds)
}

/// Default folder for images: the current one.
pub fn default_dir() -> PathBuf {
    std::env::current_dir().unwrap_or_else(|_| Path::new("/").to_path_buf())
}
