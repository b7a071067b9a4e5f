//! Screen snapshots: synthetic disks and plans, synthetic keys through
//! `update`, drawn on ratatui's `TestBackend` at 80x24 and 160x50.
//!
//! The fixtures in `tests/snapshots/fixtures/` are the JSON the CLI prints
//! for `scripts/make-sample-disk` disks (`rescue disks --json`, `rescue
//! backup disk ... --dry-run --json`, `rescue restore ... --dry-run --json`,
//! `rescue info --json`), with the identities changed to /dev/sda (SATA SSD),
//! /dev/sdb (USB disk) and /dev/nvme0n1 (root mounted: busy).
//! Snapshots live in `tests/snapshots/`; review changes with `cargo insta`.

use std::path::PathBuf;

use crossterm::event::{KeyCode, KeyEvent, KeyModifiers};
use imaging::backup::BackupPlan;
use imaging::clone::ClonePlan;
use imaging::exec::WritePlan;
use imaging::chain::{PointPlan, PointStatus, PointSummary};
use imaging::image::format::{ChainInfo, PointKind};
use imaging::image::Catalog;
use imaging::inventory::DiskReport;
use imaging::ErrorClass;
use ratatui::backend::TestBackend;
use ratatui::Terminal;

use super::event::{Command, Event, Failure, ImageSummary};
use super::state::{update, Screen, State};
use super::view::render;

const DISKS: &str = include_str!("../../tests/snapshots/fixtures/disks.json");
const BACKUP_PLAN: &str = include_str!("../../tests/snapshots/fixtures/backup_plan.json");
const RESTORE_PLAN: &str = include_str!("../../tests/snapshots/fixtures/restore_plan.json");
const CATALOG: &str = include_str!("../../tests/snapshots/fixtures/catalog.json");

fn disks() -> Vec<DiskReport> {
    serde_json::from_str(DISKS).expect("fixture parses")
}

fn backup_plan() -> BackupPlan {
    serde_json::from_str(BACKUP_PLAN).expect("fixture parses")
}

fn restore_plan() -> WritePlan {
    serde_json::from_str(RESTORE_PLAN).expect("fixture parses")
}

fn image() -> ImageSummary {
    ImageSummary {
        path: PathBuf::from("/mnt/usb/sda-disk.rimg"),
        password: None,
        catalog: serde_json::from_str::<Catalog>(CATALOG).expect("fixture parses"),
        volumes: vec![PathBuf::from("/mnt/usb/sda-disk.rimg")],
        len: 59_000_000,
    }
}

/// A point of the task `sda-disk` in /mnt/usb: #1 is the image of `image()`.
fn point(seq: u32, kind: PointKind, parent: Option<u32>, status: PointStatus) -> PointSummary {
    let path = if seq == 1 { PathBuf::from("/mnt/usb/sda-disk.rimg") } else { PathBuf::from(format!("/mnt/usb/sda-disk.p{seq:03}-{}.img", kind.short())) };
    PointSummary {
        volumes: vec![path.clone()],
        path,
        bytes: if kind == PointKind::Full { 59_000_000 } else { 3_100_000 * u64::from(seq) },
        image_id: format!("id{seq}"),
        task_id: "task1".into(),
        task_name: "sda-disk".into(),
        kind: Some(kind),
        sequence: seq,
        created: 1_795_000_000 + 86_400 * u64::from(seq),
        comment: (seq == 2).then(|| "after the update".into()),
        backup_kind: Some(imaging::image::format::BackupKind::Disk),
        source: Some("/dev/sda".into()),
        parent: parent.map(|p| format!("id{p}")),
        depends_on: parent.map(|p| (1..=p).rev().map(|i| format!("id{i}")).collect()).unwrap_or_default(),
        encrypted: false,
        data_bytes: 144_300_000,
        new_chunks: if kind == PointKind::Full { 2200 } else { 48 },
        base_chunks: if kind == PointKind::Full { 0 } else { 2152 },
        problem: (status == PointStatus::Broken).then(|| "sda-disk.p002-incr.img (a file it depends on) is missing".into()),
        status,
    }
}

/// full #1 <- incr #2 <- incr #3 (broken: #2's file is gone) ; full #1 <- diff #4.
fn chain() -> Vec<PointSummary> {
    vec![
        point(1, PointKind::Full, None, PointStatus::Ok),
        point(2, PointKind::Incremental, Some(1), PointStatus::Ok),
        point(3, PointKind::Incremental, Some(2), PointStatus::Broken),
        point(4, PointKind::Differential, Some(1), PointStatus::Ok),
    ]
}

fn point_plan(kind: PointKind, seq: u32) -> PointPlan {
    let out = PathBuf::from(format!("/mnt/usb/sda-disk.p{seq:03}-{}.img", kind.short()));
    PointPlan {
        kind,
        from: PathBuf::from("/mnt/usb/sda-disk.p004-diff.img"),
        base: (kind != PointKind::Full).then(|| PathBuf::from("/mnt/usb/sda-disk.p004-diff.img")),
        output: out,
        chain: ChainInfo { task_id: "task1".into(), task_name: "sda-disk".into(), kind, sequence: seq, parent: None, links: vec![] },
        compression: imaging::image::Compression::Normal,
        split: None,
        encrypted: false,
        backup: backup_plan(),
        notes: vec!["source /dev/sda: same serial S4EWNX0R123456".into()],
        read_all: false,
    }
}

fn state() -> State {
    let mut s = State::new(PathBuf::from("/mnt/usb"));
    let mut list: Vec<super::event::DiskEntry> = disks().into_iter().map(Ok).collect();
    list.push(Err((PathBuf::from("/dev/sdc"), "/dev/sdc: Input/output error (os error 5)".into())));
    update(&mut s, Event::Disks(list));
    s
}

/// The state with sda's last partition (3) a LUKS volume.
fn luks_state() -> State {
    let mut s = State::new(PathBuf::from("/mnt/usb"));
    let mut list = disks();
    list[0].partitions.last_mut().expect("sda has partitions").fs.as_mut().expect("probed").kind = imaging::fs::FsKind::Other("crypto_LUKS".into());
    update(&mut s, Event::Disks(list.into_iter().map(Ok).collect()));
    s
}

fn press(s: &mut State, code: KeyCode) -> Vec<Command> {
    update(s, Event::Key(KeyEvent::new(code, KeyModifiers::NONE)))
}

/// The restore wizard at its summary: the whole of `image()` onto /dev/sdb,
/// planned.
fn restore_summary() -> State {
    let mut s = state();
    press(&mut s, KeyCode::Char('r'));
    typed(&mut s, "/mnt/usb/sda-disk.rimg");
    press(&mut s, Enter);
    update(&mut s, Event::ImageOpened(Ok(image())));
    update(&mut s, Event::Points(Ok(vec![point(1, PointKind::Full, None, PointStatus::Ok)])));
    keys(&mut s, &[Enter, Down]);
    press(&mut s, Enter);
    update(&mut s, Event::RestorePlanned(Ok(restore_plan())));
    s
}

fn keys(s: &mut State, seq: &[KeyCode]) -> Vec<Command> {
    seq.iter().flat_map(|k| press(s, *k)).collect()
}

fn typed(s: &mut State, text: &str) {
    for c in text.chars() {
        press(s, KeyCode::Char(c));
    }
}

fn draw(s: &State, w: u16, h: u16) -> String {
    let mut t = Terminal::new(TestBackend::new(w, h)).expect("test backend");
    t.draw(|f| render(s, f)).expect("draw");
    let buf = t.backend().buffer();
    buf.content.chunks(w as usize).map(|row| row.iter().map(|c| c.symbol()).collect::<String>().trim_end().to_string()).collect::<Vec<_>>().join("\n")
}

/// Snapshot the screen at 80x24 and 160x50.
fn snap(name: &str, s: &State) {
    let mut settings = insta::Settings::clone_current();
    settings.set_snapshot_path(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/snapshots"));
    settings.set_prepend_module_to_snapshot(false);
    settings.bind(|| {
        insta::assert_snapshot!(format!("tui_{name}_80x24"), draw(s, 80, 24));
        insta::assert_snapshot!(format!("tui_{name}_160x50"), draw(s, 160, 50));
    });
}

use KeyCode::{Backspace, Down, Enter, Esc, Right, Tab};

#[test]
fn home() {
    let mut s = state();
    s.recent.push("[ok]     Backup of sda to /mnt/usb/sda-disk.rimg".into());
    snap("home", &s);
    press(&mut s, KeyCode::Char('j'));
    press(&mut s, KeyCode::Char('j'));
    snap("home_busy_selected", &s);
    press(&mut s, KeyCode::Char('?'));
    snap("home_help", &s);
    press(&mut s, KeyCode::Char('x'));
    assert!(!s.help);
    // vt100: nothing but ASCII on the screen.
    s.ascii = true;
    press(&mut s, KeyCode::Char('?'));
    snap("home_help_ascii", &s);
    for line in draw(&s, 80, 24).lines() {
        assert!(line.is_ascii(), "{line}");
    }
    press(&mut s, KeyCode::Char('x'));
    s.ascii = false;
    assert!(matches!(press(&mut s, KeyCode::Char('s'))[..], [Command::Refresh]));
    assert!(matches!(press(&mut s, KeyCode::Char('q'))[..], [Command::Quit]));
    // Idle on the home screen: a cheap hot-plug check every 8 ticks.
    update(&mut s, Event::Disks(vec![]));
    let c: Vec<Command> = (0..8).flat_map(|_| update(&mut s, Event::Tick)).collect();
    assert!(matches!(c[..], [Command::HotplugCheck]), "{c:?}");
}

#[test]
fn tiny_and_loading_screens_do_not_panic() {
    let s = State::new(PathBuf::from("/"));
    snap("home_loading", &s);
    let mut s = state();
    for (w, h) in [(1, 1), (10, 3), (20, 5), (80, 24), (300, 100)] {
        draw(&s, w, h);
    }
    keys(&mut s, &[KeyCode::Char('b'), Enter, Enter]);
    for (w, h) in [(1, 1), (10, 3), (20, 5)] {
        draw(&s, w, h);
    }
}

#[test]
fn backup_wizard() {
    let mut s = state();
    press(&mut s, KeyCode::Char('b'));
    snap("backup_kind", &s);
    keys(&mut s, &[Down, Down, Enter]);
    snap("backup_disk", &s);
    press(&mut s, Enter);
    keys(&mut s, &[KeyCode::Char(' '), Down, Down, KeyCode::Char(' ')]);
    snap("backup_parts", &s);
    press(&mut s, Enter);
    snap("backup_dest", &s);
    for _ in 0..10 {
        press(&mut s, Backspace);
    }
    typed(&mut s, "data.rimg");
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::FindTasks { dir, source }] if dir == &PathBuf::from("/mnt/usb") && source == &PathBuf::from("/dev/sda")), "{c:?}");
    // No task of this disk in the folder: straight on to the options.
    update(&mut s, Event::TasksFound(vec![]));
    // Encryption on, passwords that differ, a comment.
    keys(&mut s, &[Tab, Right, Tab]);
    typed(&mut s, "secret");
    press(&mut s, Tab);
    typed(&mut s, "secreT");
    keys(&mut s, &[Tab, Right, Right, Right, Tab]);
    typed(&mut s, "700M");
    keys(&mut s, &[Tab, Tab, Tab]);
    typed(&mut s, "before the upgrade");
    let c = press(&mut s, Enter);
    assert!(c.is_empty());
    snap("backup_options_error", &s);
    // Fix the second password.
    keys(&mut s, &[Tab, Tab, Tab, Tab]);
    press(&mut s, Backspace);
    typed(&mut s, "t");
    let c = press(&mut s, Enter);
    let [Command::PlanBackup(req)] = &c[..] else { panic!("expected a plan request, got {c:?}") };
    assert_eq!(req.source, PathBuf::from("/dev/sda"));
    assert_eq!(req.selection, imaging::backup::Selection::Partitions(vec![1, 3]));
    assert_eq!(req.output, Some(PathBuf::from("/mnt/usb/sda-data.rimg")));
    snap("backup_planning", &s);
    update(&mut s, Event::BackupPlanned(Ok(backup_plan())));
    snap("backup_summary", &s);
    let c = press(&mut s, Enter);
    let [Command::RunBackup(job)] = &c[..] else { panic!("expected the backup to start, got {c:?}") };
    assert_eq!(job.password.as_deref(), Some("secret"));
    assert_eq!(job.split, Some(700 << 20));
    assert_eq!(job.comment.as_deref(), Some("before the upgrade"));
    assert!(job.verify);
    progress_and_cancel(&mut s);
}

/// Progress, cancel asked once then confirmed, the engine's Cancelled error.
fn progress_and_cancel(s: &mut State) {
    update(s, Event::Phase { name: "reading partition 3 (ext4)".into(), total: 88_080_384 });
    update(s, Event::Advance { done: 30_000_000, secs: 2.5 });
    update(s, Event::Note("partition 2: ntfs looks damaged: copied sector by sector".into()));
    snap("progress", s);
    assert!(press(s, KeyCode::Char('c')).is_empty());
    snap("progress_ask_cancel", s);
    assert!(press(s, KeyCode::Char('n')).is_empty());
    assert!(press(s, Esc).is_empty());
    assert!(matches!(press(s, KeyCode::Char('y'))[..], [Command::Cancel]));
    update(
        s,
        Event::Finished(Err(Failure {
            message: "backing up /dev/sda: image is incomplete: cancelled by the user".into(),
            hint: "nothing more to do: the operation stopped at your request".into(),
            class: ErrorClass::Cancelled,
            needs_password: false,
        })),
    );
    snap("result_cancelled", s);
    assert!(matches!(press(s, Enter)[..], [Command::Refresh]));
    assert!(matches!(s.screen, Screen::Home));
    assert!(s.recent[0].starts_with("[cancelled]"), "{:?}", s.recent);
}

#[test]
fn restore_wizard() {
    let mut s = state();
    press(&mut s, KeyCode::Char('r'));
    typed(&mut s, "/mnt/usb/sda");
    press(&mut s, Tab);
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::Scan(p)] if p == &PathBuf::from("/mnt/usb")), "{c:?}");
    update(&mut s, Event::Scanned(vec![PathBuf::from("/mnt/usb/old/pc.rimg.001"), PathBuf::from("/mnt/usb/sda-disk.rimg")]));
    press(&mut s, Down);
    snap("restore_image", &s);
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::OpenImage { path, password: None }] if path == &PathBuf::from("/mnt/usb/sda-disk.rimg")), "{c:?}");
    update(
        &mut s,
        Event::ImageOpened(Err(Failure {
            message: "image is encrypted: a password is needed".into(),
            hint: String::new(),
            class: ErrorClass::Failed,
            needs_password: true,
        })),
    );
    typed(&mut s, "pw");
    snap("restore_password", &s);
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::OpenImage { password: Some(p), .. }] if p == "pw"), "{c:?}");
    let mut img = image();
    img.password = Some("pw".into());
    let c = update(&mut s, Event::ImageOpened(Ok(img)));
    assert!(matches!(&c[..], [Command::Points { path, password: Some(p) }] if path == &PathBuf::from("/mnt/usb/sda-disk.rimg") && p == "pw"), "{c:?}");
    // A stand-alone image: the point step is skipped.
    update(&mut s, Event::Points(Ok(vec![point(1, PointKind::Full, None, PointStatus::Ok)])));
    snap("restore_what", &s);
    press(&mut s, Enter);
    press(&mut s, Down);
    snap("restore_target", &s);
    let c = press(&mut s, Enter);
    let [Command::PlanRestore { req, .. }] = &c[..] else { panic!("expected a restore plan request, got {c:?}") };
    assert_eq!(req.target, PathBuf::from("/dev/sdb"));
    assert_eq!(req.source_partition, None);
    update(&mut s, Event::RestorePlanned(Ok(restore_plan())));
    snap("restore_summary", &s);
    // Changing an option plans again.
    let c = keys(&mut s, &[Down, Right]);
    let [Command::PlanRestore { req, .. }] = &c[..] else { panic!("expected a new plan, got {c:?}") };
    assert_eq!(req.layout.align, Some(1 << 20));
    assert!(press(&mut s, Enter).is_empty(), "no run while planning");
    update(&mut s, Event::RestorePlanned(Ok(restore_plan())));
    assert!(press(&mut s, Enter).is_empty());
    snap("restore_confirm", &s);
    typed(&mut s, "sda");
    assert!(press(&mut s, Enter).is_empty(), "a wrong name never confirms");
    snap("restore_confirm_wrong", &s);
    typed(&mut s, "sdb");
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::RunRestore { .. }]), "{c:?}");
    update(&mut s, Event::Phase { name: "verifying image".into(), total: 59_000_000 });
    update(
        &mut s,
        Event::Finished(Ok(vec!["Restore complete: 144.3 MiB written to /dev/sdb WD Elements 25A2 (serial WX12A3456789), 400.0 MiB in 9.1 s".into()])),
    );
    snap("result_restore_ok", &s);
}

#[test]
fn restore_one_partition_and_failure() {
    let mut s = state();
    press(&mut s, KeyCode::Char('r'));
    typed(&mut s, "/mnt/usb/sda-disk.rimg");
    press(&mut s, Enter);
    update(&mut s, Event::ImageOpened(Ok(image())));
    update(&mut s, Event::Points(Ok(vec![])));
    keys(&mut s, &[Down, Down, Down, Enter, Down, Enter]);
    snap("restore_target_partition", &s);
    let c = keys(&mut s, &[Down, Down, Down, Enter]);
    let [Command::PlanRestore { req, .. }] = &c[..] else { panic!("expected a plan request, got {c:?}") };
    assert_eq!((req.source_partition, req.target_partition), (Some(3), Some(3)));
    update(
        &mut s,
        Event::RestorePlanned(Err(Failure {
            message: "planning the restore to /dev/sdb: /dev/sdb is in use: partition 3 mounted on /media/x".into(),
            hint: "unmount its filesystems, swapoff, stop LVM/md users (vgchange -an, mdadm --stop), then try again".into(),
            class: ErrorClass::Refused,
            needs_password: false,
        })),
    );
    snap("restore_refused", &s);
    assert!(press(&mut s, Enter).is_empty());
}

#[test]
fn inventory_waits_for_the_home_screen() {
    let mut s = state();
    keys(&mut s, &[KeyCode::Char('c'), Enter, Down]);
    update(&mut s, Event::Disks(vec![Ok(disks()[1].clone())]));
    assert_eq!(s.readable().len(), 3, "a wizard's disk indexes stay valid");
    keys(&mut s, &[Esc, Esc]);
    assert_eq!(s.readable().len(), 1);
}

#[test]
fn clone_wizard() {
    let mut s = state();
    press(&mut s, KeyCode::Char('c'));
    snap("clone_kind", &s);
    press(&mut s, Enter);
    press(&mut s, Enter);
    snap("clone_target", &s);
    press(&mut s, Esc);
    let c = keys(&mut s, &[Enter, Enter]);
    let [Command::PlanClone(req)] = &c[..] else { panic!("expected a clone plan request, got {c:?}") };
    assert_eq!((req.source.clone(), req.target.clone()), (PathBuf::from("/dev/sda"), PathBuf::from("/dev/sdb")));
    let mut write = restore_plan();
    write.operation = "clone".into();
    write.source = "/dev/sda".into();
    update(&mut s, Event::ClonePlanned(Ok(Box::new(ClonePlan { write, source: backup_plan() }))));
    snap("clone_summary", &s);
    press(&mut s, Enter);
    typed(&mut s, "sdb");
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::RunClone { universal: None, .. }]), "{c:?}");
    update(
        &mut s,
        Event::Finished(Err(Failure {
            message: "cloning to /dev/sdb: restore failed: reading the source at byte 1048576: Input/output error (os error 5); /dev/sdb is incomplete: its partition table was cleared and 0 bytes of data were written; it holds no usable system until a restore completes".into(),
            hint: "install the tool or run the step by hand; the data itself was written".into(),
            class: ErrorClass::Failed,
            needs_password: false,
        })),
    );
    snap("result_clone_failed", &s);
}

/// A clone from a disk with a LUKS partition asks for its passphrase
/// before the plan (masked; Esc goes back to the target, Esc from the
/// summary back to it); a partition clone asks only when that partition is
/// the encrypted one.
#[test]
fn clone_asks_the_passphrase_of_luks_partitions() {
    let mut s = luks_state();
    press(&mut s, KeyCode::Char('c'));
    assert!(keys(&mut s, &[Enter, Enter, Enter]).is_empty(), "the passphrase comes before the plan");
    typed(&mut s, "clone pw");
    snap("clone_luks", &s);
    assert!(!draw(&s, 80, 24).contains("clone pw"));
    press(&mut s, Esc);
    assert!(matches!(&s.screen, Screen::Clone(w) if w.step == super::state::CStep::Target));
    press(&mut s, Enter);
    let c = press(&mut s, Enter);
    let [Command::PlanClone(req)] = &c[..] else { panic!("expected a clone plan request, got {c:?}") };
    assert_eq!(req.luks_passphrases, imaging::luks::Passphrases(vec![b"clone pw".to_vec()]));
    assert!(!format!("{c:?}").contains("clone pw"));
    press(&mut s, Esc);
    assert!(matches!(&s.screen, Screen::Clone(w) if w.step == super::state::CStep::LuksPassword));

    // A partition clone of a partition that is not encrypted: no question.
    let mut s = luks_state();
    press(&mut s, KeyCode::Char('c'));
    let c = keys(&mut s, &[Down, Down, Enter, Enter, Enter, Down, Enter, Enter]);
    let [Command::PlanClone(req)] = &c[..] else { panic!("expected a clone plan request, got {c:?}") };
    assert!(req.luks_passphrases.is_empty() && req.source_partition == Some(1), "{req:?}");
}

/// The clone summary offers universal restore too: it follows the clone
/// under the same confirmation, and changing it plans nothing again.
#[test]
fn clone_with_universal_restore() {
    let mut s = state();
    press(&mut s, KeyCode::Char('c'));
    keys(&mut s, &[Enter, Enter, Esc, Enter, Enter]);
    let mut write = restore_plan();
    write.operation = "clone".into();
    write.source = "/dev/sda".into();
    update(&mut s, Event::ClonePlanned(Ok(Box::new(ClonePlan { write, source: backup_plan() }))));
    assert!(keys(&mut s, &[KeyCode::Up, Right]).is_empty(), "universal restore needs no new plan");
    press(&mut s, Enter);
    let Screen::Confirm(c) = &s.screen else { panic!("confirmation") };
    assert!(c.lines.iter().any(|l| l.contains("Then universal restore") && l.contains("this machine's storage controllers")), "{:?}", c.lines);
    typed(&mut s, "sdb");
    let c = press(&mut s, Enter);
    let [Command::RunClone { universal: Some(job), .. }] = &c[..] else { panic!("expected a clone with universal restore, got {c:?}") };
    assert_eq!(job, &super::event::UniversalJob { disk: PathBuf::from("/dev/sdb"), part: None, for_hw: vec![], luks: Default::default() });
}

#[test]
fn tools() {
    let mut s = state();
    s.log.push("phase: reading partition 1".into());
    press(&mut s, KeyCode::Char('t'));
    snap("tools", &s);
    keys(&mut s, &[Down, Enter]);
    typed(&mut s, "/mnt/usb/sda-disk.rimg");
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::OpenImage { .. }]), "{c:?}");
    update(&mut s, Event::ImageOpened(Ok(image())));
    snap("tools_info", &s);
    keys(&mut s, &[Esc, Down, Down, Down, Down, Down, Down, Enter]);
    snap("tools_power_confirm", &s);
    typed(&mut s, "poweroff");
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::Power(super::event::PowerAction::PowerOff)]), "{c:?}");
    // Check runs as a task.
    let mut s = state();
    keys(&mut s, &[KeyCode::Char('t'), Enter]);
    typed(&mut s, "/mnt/usb/sda-disk.rimg");
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::OpenImage { .. }]), "{c:?}");
    let c = update(&mut s, Event::ImageOpened(Ok(image())));
    assert!(matches!(&c[..], [Command::Check { .. }]), "{c:?}");
    assert!(matches!(s.screen, Screen::Progress(_)));
    update(&mut s, Event::Phase { name: "verifying image".into(), total: 59_000_000 });
    update(&mut s, Event::Crashed("attempt to subtract with overflow".into()));
    snap("result_crashed", &s);
}

#[test]
fn event_loop_on_test_backend() {
    let (tx, rx) = std::sync::mpsc::channel();
    let mut s = state();
    let mut runner = super::worker::Runner::new(tx.clone(), vec![]);
    let mut t = Terminal::new(TestBackend::new(80, 24)).expect("test backend");
    for k in ['j', '?', 'x', 'q'] {
        tx.send(Event::Key(KeyEvent::new(KeyCode::Char(k), KeyModifiers::NONE))).expect("send");
    }
    let flow = super::run_loop(&mut t, &mut s, &rx, &mut runner).expect("loop");
    assert_eq!(flow, super::worker::Flow::Quit);
    assert_eq!(s.sel, 1);
    assert!(!s.help);
}

#[test]
fn progress_sink_sends_events() {
    use imaging::task::Progress;
    let (tx, rx) = std::sync::mpsc::channel();
    let p = super::worker::ChannelProgress::new(tx);
    p.begin("reading partition 1", 100);
    std::thread::sleep(std::time::Duration::from_millis(120));
    p.advance(40);
    p.advance(10);
    p.note("fallback");
    p.finish();
    let evs: Vec<Event> = rx.try_iter().collect();
    assert!(matches!(&evs[0], Event::Phase { name, total: 100 } if name == "reading partition 1"), "{evs:?}");
    assert!(matches!(evs[1], Event::Advance { done: 40, .. }), "{evs:?}");
    assert!(matches!(&evs[2], Event::Note(n) if n == "fallback"), "{evs:?}");
    assert!(matches!(evs[3], Event::Advance { done: 50, .. }), "{evs:?}");
}

#[test]
fn scan_finds_images_and_first_volumes() {
    let d = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir_all(d.path().join("a/b")).expect("mkdir");
    for f in ["one.rimg", "a/split.rimg.001", "a/split.rimg.002", "a/b/two.rimg", "notes.txt", "x.rimg.partial"] {
        std::fs::write(d.path().join(f), b"x").expect("write");
    }
    let mut found = Vec::new();
    super::worker::scan(d.path(), 0, &mut found);
    found.sort();
    let rel: Vec<String> = found.iter().map(|p| p.strip_prefix(d.path()).expect("inside").display().to_string()).collect();
    assert_eq!(rel, ["a/b/two.rimg", "a/split.rimg.001", "one.rimg"]);
}

#[test]
fn restore_a_point_in_time() {
    let mut s = state();
    press(&mut s, KeyCode::Char('r'));
    typed(&mut s, "/mnt/usb/sda-disk.rimg");
    press(&mut s, Enter);
    let c = update(&mut s, Event::ImageOpened(Ok(image())));
    assert!(matches!(&c[..], [Command::Points { password: None, .. }]), "{c:?}");
    snap("restore_points_loading", &s);
    update(&mut s, Event::Points(Ok(chain())));
    // The opened image is selected.
    snap("restore_points", &s);
    // A broken point says why and cannot be chosen.
    let c = keys(&mut s, &[Down, Down, Enter]);
    assert!(c.is_empty(), "{c:?}");
    assert!(matches!(&s.screen, Screen::Restore(w) if w.step == super::state::RStep::Point), "a broken point is not restored");
    snap("restore_point_broken", &s);
    // The differential: opened with its chain.
    let c = keys(&mut s, &[Down, Enter]);
    let [Command::OpenImage { path, .. }] = &c[..] else { panic!("expected the point to be opened, got {c:?}") };
    assert_eq!(path, &PathBuf::from("/mnt/usb/sda-disk.p004-diff.img"));
    let mut diff = image();
    diff.path = path.clone();
    assert!(update(&mut s, Event::ImageOpened(Ok(diff))).is_empty(), "the chain is read once");
    // Back from "what" goes to the points; the choice is kept.
    press(&mut s, Esc);
    assert!(matches!(&s.screen, Screen::Restore(w) if w.step == super::state::RStep::Point && w.point_sel == 3));
    // It is open already: no second read.
    assert!(press(&mut s, Enter).is_empty());
    let c = keys(&mut s, &[Enter, Down, Enter]);
    let [Command::PlanRestore { req, .. }] = &c[..] else { panic!("expected a restore plan request, got {c:?}") };
    assert_eq!(req.image, PathBuf::from("/mnt/usb/sda-disk.p004-diff.img"));
    let mut plan = restore_plan();
    plan.source = "/mnt/usb/sda-disk.p004-diff.img".into();
    update(&mut s, Event::RestorePlanned(Ok(plan)));
    // Changed-block restore: the same plan, no new planning.
    let c = keys(&mut s, &[Down, Down, Down, Right]);
    assert!(c.is_empty(), "{c:?}");
    snap("restore_summary_only_changed", &s);
    press(&mut s, Enter);
    let Screen::Confirm(cf) = &s.screen else { panic!("expected the confirm screen") };
    assert!(cf.title.contains("p004-diff"), "{}", cf.title);
    assert!(cf.lines.iter().any(|l| l.contains("only what differs")), "{:?}", cf.lines);
    typed(&mut s, "sdb");
    let c = press(&mut s, Enter);
    let [Command::RunRestore { plan, .. }] = &c[..] else { panic!("expected the restore to start, got {c:?}") };
    assert!(plan.only_changed);
    assert_eq!(plan.source, "/mnt/usb/sda-disk.p004-diff.img");
}

#[test]
fn restore_one_partition_offers_no_changed_blocks() {
    let mut s = state();
    press(&mut s, KeyCode::Char('r'));
    typed(&mut s, "/mnt/usb/sda-disk.rimg");
    press(&mut s, Enter);
    update(&mut s, Event::ImageOpened(Ok(image())));
    update(&mut s, Event::Points(Ok(vec![])));
    keys(&mut s, &[Down, Down, Down, Enter, Down, Enter, Enter]);
    let mut plan = restore_plan();
    plan.whole_disk = false;
    update(&mut s, Event::RestorePlanned(Ok(plan)));
    assert!(!draw(&s, 160, 50).contains("Only changed blocks"));
    // Sector by sector is followed by universal restore (the hidden
    // changed-block field is skipped); one more Down wraps to the first.
    keys(&mut s, &[Down, Down, Down]);
    let Screen::Restore(w) = &s.screen else { panic!("restore wizard") };
    assert_eq!(w.form.fields[w.form.focus].label, "Universal restore");
    press(&mut s, Down);
    let Screen::Restore(w) = &s.screen else { panic!("restore wizard") };
    assert_eq!(w.form.focus, 0);
}

#[test]
fn backup_a_new_point_of_a_task() {
    let mut s = state();
    keys(&mut s, &[KeyCode::Char('b'), Enter, Enter]);
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::FindTasks { .. }]), "{c:?}");
    let mut tasks = chain();
    tasks.remove(2);
    update(&mut s, Event::TasksFound(tasks));
    snap("backup_chain", &s);
    // Differential, with a comment.
    press(&mut s, Down);
    press(&mut s, Enter);
    press(&mut s, Tab);
    typed(&mut s, "before the upgrade");
    snap("backup_point_options", &s);
    let c = press(&mut s, Enter);
    let [Command::PlanPoint { req, password: None }] = &c[..] else { panic!("expected a point plan request, got {c:?}") };
    assert_eq!(req.kind, Some(PointKind::Differential));
    assert_eq!(req.from, PathBuf::from("/mnt/usb/sda-disk.p004-diff.img"), "the newest point of the task");
    assert_eq!(req.source, Some(PathBuf::from("/dev/sda")));
    assert!(press(&mut s, Enter).is_empty(), "no run while planning");
    update(&mut s, Event::PointPlanned(Ok(Box::new(point_plan(PointKind::Differential, 5)))));
    snap("backup_point_summary", &s);
    let c = press(&mut s, Enter);
    let [Command::RunPoint(job)] = &c[..] else { panic!("expected the point to start, got {c:?}") };
    assert_eq!(job.comment.as_deref(), Some("before the upgrade"));
    assert!(job.verify);
    assert_eq!(job.plan.kind, PointKind::Differential);
    let Screen::Progress(p) = &s.screen else { panic!("progress") };
    assert!(p.title.starts_with("Differential point of sda"), "{}", p.title);
    update(&mut s, Event::Finished(Ok(vec!["Differential point #5 complete: /mnt/usb/sda-disk.p005-diff.img (6.2 MiB)".into()])));
    assert!(s.recent[0].starts_with("[ok]"));

    // A refused plan (another disk now) is shown with its hint; Esc goes
    // back to the choice, and "a new task" leads to the usual options.
    let mut s = state();
    keys(&mut s, &[KeyCode::Char('b'), Enter, Enter, Enter]);
    update(&mut s, Event::TasksFound(chain()));
    keys(&mut s, &[Enter, Enter]);
    update(
        &mut s,
        Event::PointPlanned(Err(Failure {
            message: "planning the incremental backup from /mnt/usb/sda-disk.p004-diff.img: /dev/sda is not the source of this chain: its serial is X, the chain's disk has S4EWNX0R123456".into(),
            hint: "back it up as a new task (`rescue backup disk|system|part ... -o NEW.img`), or name the right disk with --source".into(),
            class: ErrorClass::Refused,
            needs_password: false,
        })),
    );
    assert!(press(&mut s, Enter).is_empty());
    assert!(draw(&s, 160, 50).contains("is not the source of this chain"));
    keys(&mut s, &[Esc, Esc]);
    assert!(matches!(&s.screen, Screen::Backup(w) if w.step == super::state::BStep::Chain));
    // One task of three points (#3 broken is not offered: TasksFound holds intact ones only,
    // but the offers come from the newest point): 3 offers + a new task.
    for _ in 0..5 {
        press(&mut s, Down);
    }
    press(&mut s, Enter);
    assert!(draw(&s, 80, 24).contains("Compression"), "the full options of a new task");
    let c = keys(&mut s, &[Enter]);
    assert!(matches!(&c[..], [Command::PlanBackup(_)]), "{c:?}");
}

/// A source with a LUKS partition: the backup options offer its
/// passphrase (masked), and it rides on the plan of a new task and of a
/// new point; other disks do not show the field.
#[test]
fn backup_offers_the_passphrase_of_luks_partitions() {
    let pass = imaging::luks::Passphrases(vec![b"luks pw".to_vec()]);
    let mut s = luks_state();
    keys(&mut s, &[KeyCode::Char('b'), Enter, Enter, Enter]);
    update(&mut s, Event::TasksFound(vec![]));
    for _ in 0..6 {
        press(&mut s, Tab);
    }
    typed(&mut s, "luks pw");
    snap("backup_options_luks", &s);
    assert!(!draw(&s, 80, 24).contains("luks pw"), "the passphrase is masked");
    let c = press(&mut s, Enter);
    let [Command::PlanBackup(req)] = &c[..] else { panic!("expected a plan request, got {c:?}") };
    assert_eq!(req.luks_passphrases, pass);

    // A new point of a task.
    let mut s = luks_state();
    keys(&mut s, &[KeyCode::Char('b'), Enter, Enter, Enter]);
    update(&mut s, Event::TasksFound(chain()));
    keys(&mut s, &[Enter, Tab, Tab]);
    typed(&mut s, "luks pw");
    let c = press(&mut s, Enter);
    let [Command::PlanPoint { req, .. }] = &c[..] else { panic!("expected a point plan request, got {c:?}") };
    assert_eq!(req.luks_passphrases, pass);

    // Without a LUKS partition there is no such field.
    let mut s = state();
    keys(&mut s, &[KeyCode::Char('b'), Enter, Enter, Enter]);
    update(&mut s, Event::TasksFound(vec![]));
    assert!(!draw(&s, 160, 50).contains("LUKS passphrase"));
}

#[test]
fn tools_merge_and_points() {
    let mut s = state();
    keys(&mut s, &[KeyCode::Char('t'), Down, Down, Enter]);
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::Points { path, password: None }] if path == &PathBuf::from("/mnt/usb")), "{c:?}");
    update(&mut s, Event::Points(Ok(chain())));
    snap("tools_merge_pick", &s);
    let c = keys(&mut s, &[KeyCode::Up, Enter]);
    assert!(c.is_empty());
    assert!(draw(&s, 160, 50).contains("point #3 cannot be restored"));
    keys(&mut s, &[Down, Enter]);
    // Ask to delete the merged files once verified.
    keys(&mut s, &[Tab, Right]);
    snap("tools_merge_output", &s);
    let c = press(&mut s, Enter);
    let [Command::Merge { point: merged, output, delete_merged: true, password: None }] = &c[..] else { panic!("expected a merge, got {c:?}") };
    assert_eq!(merged, &PathBuf::from("/mnt/usb/sda-disk.p004-diff.img"));
    assert_eq!(output, &PathBuf::from("/mnt/usb/sda-disk-merged-p004.img"));
    update(&mut s, Event::Phase { name: "merging partition 3 (ext4)".into(), total: 88_080_384 });
    update(&mut s, Event::Advance { done: 44_000_000, secs: 1.5 });
    assert!(press(&mut s, KeyCode::Char('c')).is_empty());
    snap("merge_ask_cancel", &s);
    assert!(matches!(press(&mut s, KeyCode::Char('y'))[..], [Command::Cancel]));
    update(
        &mut s,
        Event::Finished(Err(Failure {
            message: "merging /mnt/usb/sda-disk.p004-diff.img: cancelled by the user".into(),
            hint: "nothing more to do: the operation stopped at your request".into(),
            class: ErrorClass::Cancelled,
            needs_password: false,
        })),
    );
    assert!(matches!(&s.screen, Screen::Result(r) if r.status == "CANCELLED" && r.title == "Merge cancelled"));

    // The tree of every task in a folder.
    let mut s = state();
    keys(&mut s, &[KeyCode::Char('t'), Down, Down, Down, Enter]);
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::Points { .. }]), "{c:?}");
    update(&mut s, Event::Points(Ok(chain())));
    snap("tools_points", &s);
    s.ascii = true;
    for line in draw(&s, 160, 50).lines() {
        assert!(line.is_ascii(), "{line}");
    }
    // Encrypted points without a password: ask for it, then read again with it.
    let mut s = state();
    keys(&mut s, &[KeyCode::Char('t'), Down, Down, Down, Enter, Enter]);
    let mut locked = point(1, PointKind::Full, None, PointStatus::Locked);
    locked.problem = Some("image is encrypted: a password is needed".into());
    update(&mut s, Event::Points(Ok(vec![locked])));
    typed(&mut s, "pw");
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::Points { password: Some(p), .. }] if p == "pw"), "{c:?}");
}

#[test]
fn points_tree_hangs_each_point_under_its_parent() {
    let t = super::view::points_tree(&chain(), true);
    let lines: Vec<&str> = t.lines().collect();
    assert!(lines[0].starts_with("Task sda-disk: 4 points"), "{t}");
    assert!(lines[0].contains("1 cannot be restored"), "{t}");
    assert!(lines[1].starts_with("  #1 "), "{t}");
    assert!(lines[2].starts_with("  |- #2 "), "{t}");
    assert!(lines[3].starts_with("  |  `- #3 ") && lines[3].contains("cannot be restored"), "{t}");
    assert!(lines[4].starts_with("  `- #4 "), "{t}");
}

/// The restore summary's universal-restore option rides on the restore
/// (same confirmation); Tools runs it alone on a disk after its own plan.
#[test]
fn universal_restore_in_the_restore_summary_and_in_tools() {
    use super::event::{UniversalJob, UniversalPlan};
    let mut s = restore_summary();
    // Up from the first option wraps to the last one: universal restore.
    // Changing it does not plan again: it runs after the restore.
    assert!(keys(&mut s, &[KeyCode::Up, Right, Right]).is_empty());
    snap("restore_summary_universal", &s);
    assert!(press(&mut s, Enter).is_empty());
    let Screen::Confirm(c) = &s.screen else { panic!("expected the confirmation") };
    assert!(c.lines.iter().any(|l| l.contains("Then universal restore") && l.contains("AHCI")), "{:?}", c.lines);
    typed(&mut s, "sdb");
    let c = press(&mut s, Enter);
    let [Command::RunRestore { universal: Some(job), .. }] = &c[..] else { panic!("expected a restore with universal restore, got {c:?}") };
    assert_eq!(job, &UniversalJob { disk: PathBuf::from("/dev/sdb"), part: None, for_hw: vec!["ahci".into()], luks: Default::default() });

    // Tools > Universal restore: disk, hardware, plan, typed name, run.
    let mut s = state();
    press(&mut s, KeyCode::Char('t'));
    keys(&mut s, &[Down, Down, Down, Down, Enter]);
    snap("tools_universal_disk", &s);
    press(&mut s, Enter);
    press(&mut s, Down);
    snap("tools_universal_hardware", &s);
    let c = press(&mut s, Enter);
    let job = UniversalJob { disk: PathBuf::from("/dev/sda"), part: None, for_hw: vec!["ahci".into()], luks: Default::default() };
    assert!(matches!(&c[..], [Command::PlanUniversal(j)] if j == &job), "{c:?}");
    assert!(press(&mut s, Enter).is_empty(), "one plan at a time");
    update(
        &mut s,
        Event::UniversalPlanned(Err(Failure {
            message: "planning universal restore on /dev/sda: no Windows installation and no Linux system found on /dev/sda".into(),
            hint: "restore the Windows or Linux system first".into(),
            class: ErrorClass::Failed,
            needs_password: false,
        })),
    );
    assert!(matches!(&s.screen, Screen::Tools(w) if w.error.as_deref().is_some_and(|e| e.contains("no Windows installation"))));
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::PlanUniversal(_)]), "{c:?}");
    let plan = UniversalPlan {
        what: "the Windows registry and driver files".into(),
        lines: vec![
            "partition 3:".into(),
            "  Windows 10 x64 (build 19045) in Windows".into(),
            "  ControlSet001\\Services\\storahci: Start 3 -> 0; StartOverride removed".into(),
        ],
    };
    update(&mut s, Event::UniversalPlanned(Ok(plan)));
    snap("tools_universal_confirm", &s);
    typed(&mut s, "sdb");
    assert!(press(&mut s, Enter).is_empty(), "a wrong name never confirms");
    typed(&mut s, "sda");
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::RunUniversal(j)] if j == &job), "{c:?}");
    update(&mut s, Event::Phase { name: "universal restore".into(), total: 0 });
    update(&mut s, Event::Finished(Ok(vec!["Universal restore on partition 3: 4 registry changes, 0 files copied; the old hive is kept as SYSTEM.rescue-bak-1".into()])));
    assert!(matches!(&s.screen, Screen::Result(r) if r.status == "OK" && r.title == "Universal restore finished"));
}

/// Tools > Universal restore on a disk with a LUKS partition asks for its
/// passphrase (masked), Esc goes back to the hardware, and the passphrase
/// rides on the plan and on the run; left empty, none is given.
#[test]
fn universal_restore_asks_the_passphrase_of_luks_partitions() {
    use super::event::{UniversalJob, UniversalPlan};
    let mut s = luks_state();
    let n = disks()[0].partitions.last().expect("sda has partitions").partition.number;
    press(&mut s, KeyCode::Char('t'));
    keys(&mut s, &[Down, Down, Down, Down, Enter, Enter, Down]);
    assert!(press(&mut s, Enter).is_empty(), "the passphrase comes first");
    typed(&mut s, "s3cret pass");
    snap("tools_universal_luks", &s);
    let text = draw(&s, 80, 24);
    assert!(text.contains(&format!("encrypted (LUKS) partitions: {n}.")) && !text.contains("s3cret"), "{text}");
    // Esc: back to the hardware, and Enter there asks again.
    press(&mut s, KeyCode::Esc);
    assert!(matches!(&s.screen, Screen::Tools(w) if w.step == super::state::TStep::Hardware));
    assert!(press(&mut s, Enter).is_empty());
    let c = press(&mut s, Enter);
    let job = UniversalJob { disk: PathBuf::from("/dev/sda"), part: None, for_hw: vec!["ahci".into()], luks: imaging::luks::Passphrases(vec![b"s3cret pass".to_vec()]) };
    assert!(matches!(&c[..], [Command::PlanUniversal(j)] if j == &job), "{c:?}");
    assert!(!format!("{c:?}").contains("s3cret"), "the passphrase is never printed: {c:?}");
    update(&mut s, Event::UniversalPlanned(Ok(UniversalPlan { what: "the Linux initramfs and boot loader".into(), lines: vec!["partition 3:".into()] })));
    typed(&mut s, "sda");
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::RunUniversal(j)] if j == &job), "{c:?}");

    // Empty: no passphrase (the partition is then named as not searched).
    let mut s = luks_state();
    press(&mut s, KeyCode::Char('t'));
    keys(&mut s, &[Down, Down, Down, Down, Enter, Enter, Down, Enter]);
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::PlanUniversal(j)] if j.luks.is_empty()), "{c:?}");
}

/// A shell is offered only where the system has one; it comes back to Tools.
#[test]
fn tools_open_a_shell() {
    let mut s = state();
    press(&mut s, KeyCode::Char('t'));
    assert!(!draw(&s, 80, 24).contains("Open a shell"), "no shell on this system: not offered");
    let mut s = state();
    s.shell = Some(PathBuf::from("/bin/sh"));
    press(&mut s, KeyCode::Char('t'));
    assert!(draw(&s, 80, 24).contains("Open a shell"));
    let c = keys(&mut s, &[Down, Down, Down, Down, Down, Down, Down, Enter]);
    assert!(matches!(&c[..], [Command::Shell(p)] if p == &PathBuf::from("/bin/sh")), "{c:?}");
    update(&mut s, Event::ShellDone(Ok("exit status: 0".into())));
    assert!(matches!(s.screen, Screen::Tools(_)));
    assert!(s.log.iter().any(|l| l.contains("shell: ended (exit status: 0)")), "{:?}", s.log);
    update(&mut s, Event::ShellDone(Err("could not start /bin/sh: No such file or directory (os error 2)".into())));
    assert!(matches!(&s.screen, Screen::Tools(w) if w.error.as_deref().is_some_and(|e| e.contains("could not start"))));
}

/// Draw at 80x24 and keep the click targets, as the event loop does.
fn drawn(s: &mut State) -> String {
    let text = draw(s, 80, 24);
    s.hits = super::view::take_hits();
    text
}

fn click(s: &mut State, column: u16, row: u16) -> Vec<Command> {
    use crossterm::event::{MouseButton, MouseEvent, MouseEventKind};
    update(s, Event::Mouse(MouseEvent { kind: MouseEventKind::Down(MouseButton::Left), column, row, modifiers: KeyModifiers::NONE }))
}

/// Where `needle` is on the screen (column, row).
fn find(text: &str, needle: &str) -> (u16, u16) {
    text.lines()
        .enumerate()
        .find_map(|(y, l)| l.find(needle).map(|x| (l[..x].chars().count() as u16, y as u16)))
        .unwrap_or_else(|| panic!("{needle:?} not on the screen:\n{text}"))
}

/// The mouse stands for keys: a click selects a list item, a second click
/// chooses it, the wheel moves the selection, the help bar's items press
/// their keys; clicks elsewhere do nothing.
#[test]
fn the_mouse_clicks_items_and_the_help_bar() {
    use crossterm::event::{MouseEvent, MouseEventKind};
    let mut s = state();
    // Home: a click on the second disk selects it; the help bar's "backup" opens the wizard.
    let t = drawn(&mut s);
    let (x, y) = find(&t, "WD Elements");
    assert!(click(&mut s, x, y).is_empty());
    assert_eq!(s.sel, 1);
    let (x, y) = find(&drawn(&mut s), "b backup");
    click(&mut s, x + 2, y);
    assert!(matches!(&s.screen, Screen::Backup(_)), "the help bar's backup item opens the backup wizard");
    // A list: click the third kind, then click it again to choose it.
    let t = drawn(&mut s);
    let (x, y) = find(&t, "Partitions: the ones you choose");
    click(&mut s, x, y);
    assert!(matches!(&s.screen, Screen::Backup(w) if w.kind == 2 && w.step == super::state::BStep::Kind));
    drawn(&mut s);
    click(&mut s, x, y);
    assert!(matches!(&s.screen, Screen::Backup(w) if w.step == super::state::BStep::Disk), "a click on the selected item chooses it");
    // The wheel moves the selection.
    drawn(&mut s);
    let disk = |s: &State| match &s.screen {
        Screen::Backup(w) => w.disk,
        _ => usize::MAX,
    };
    let before = disk(&s);
    update(&mut s, Event::Mouse(MouseEvent { kind: MouseEventKind::ScrollUp, column: 0, row: 5, modifiers: KeyModifiers::NONE }));
    assert_eq!(disk(&s), before.saturating_sub(1));
    update(&mut s, Event::Mouse(MouseEvent { kind: MouseEventKind::ScrollDown, column: 0, row: 5, modifiers: KeyModifiers::NONE }));
    assert_eq!(disk(&s), before.saturating_sub(1) + 1);
    let now = disk(&s);
    // Nothing under the pointer: nothing happens.
    drawn(&mut s);
    assert!(click(&mut s, 79, 20).is_empty());
    assert!(matches!(&s.screen, Screen::Backup(w) if w.disk == now && w.step == super::state::BStep::Disk));
    // The "Esc back" item of the help bar goes back.
    let (x, y) = find(&drawn(&mut s), "back");
    click(&mut s, x, y);
    assert!(matches!(&s.screen, Screen::Backup(w) if w.step == super::state::BStep::Kind));
}

/// The backup destination can be a partition of another disk: listed under
/// the path (mounted ones as folders), mounted read-write after the typed
/// confirmation, and the path then points into it.
#[test]
fn backup_to_a_partition_of_another_disk() {
    let mut s = state();
    keys(&mut s, &[KeyCode::Char('b'), Enter, Enter]);
    let Screen::Backup(w) = &s.screen else { panic!("backup wizard") };
    assert_eq!(w.step, super::state::BStep::Dest);
    let places = super::state::dest_places(&s, 0);
    // Not the source disk (sda); nvme0n1's root is offered as its folder.
    assert_eq!(places.len(), 6, "{places:?}");
    assert!(places.iter().all(|p| p.disk != 0));
    assert_eq!(places.last().and_then(|p| p.mounted_at.clone()), Some(PathBuf::from("/")));
    snap("backup_dest_places", &s);
    press(&mut s, Tab);
    snap("backup_dest_places_focus", &s);
    // Typing goes nowhere while the list has the focus; Down picks sdb's NTFS.
    press(&mut s, KeyCode::Char('x'));
    press(&mut s, Down);
    assert!(press(&mut s, Enter).is_empty());
    let Screen::Confirm(c) = &s.screen else { panic!("a confirmation before mounting") };
    assert_eq!(c.word, "sdb:2");
    assert!(c.lines.iter().any(|l| l.contains("read-write")), "{:?}", c.lines);
    typed(&mut s, "sdb:2");
    let cmds = press(&mut s, Enter);
    let [Command::MountDest { disk, number: 2 }] = &cmds[..] else { panic!("expected a mount, got {cmds:?}") };
    assert_eq!(disk.disk.path, PathBuf::from("/dev/sdb"));
    update(&mut s, Event::DestMounted(Ok((PathBuf::from("/dev/sdb"), 2, PathBuf::from("/run/rescue/mnt/sdb-2")))));
    let Screen::Backup(w) = &s.screen else { panic!("back in the wizard") };
    assert_eq!((w.dest.as_str(), w.dest_focus, w.busy), ("/run/rescue/mnt/sdb-2/sda-disk.rimg", 0, false));
    assert_eq!(s.mounted, vec![(PathBuf::from("/dev/sdb"), 2, PathBuf::from("/run/rescue/mnt/sdb-2"))]);
    // Mounted now: offered as its folder, no second mount.
    let places = super::state::dest_places(&s, 0);
    assert_eq!(places[1].mounted_at, Some(PathBuf::from("/run/rescue/mnt/sdb-2")));
    keys(&mut s, &[Tab, Enter]);
    let Screen::Backup(w) = &s.screen else { panic!("no confirmation for a mounted partition") };
    assert_eq!(w.dest, "/run/rescue/mnt/sdb-2/sda-disk.rimg");
    // A failed mount says why in the wizard.
    keys(&mut s, &[Tab, Down, Enter]);
    typed(&mut s, "sdb:3");
    press(&mut s, Enter);
    update(
        &mut s,
        Event::DestMounted(Err(Failure { message: "mounting partition 3 of /dev/sdb: mount failed: wrong fs type".into(), hint: "check the filesystem".into(), class: ErrorClass::Failed, needs_password: false })),
    );
    assert!(matches!(&s.screen, Screen::Backup(w) if w.error.as_deref().is_some_and(|e| e.contains("wrong fs type")) && !w.busy));
}

/// "Edit partitions" in the restore summary: sizes change by steps on the
/// keyboard, never below what a filesystem holds, fixed partitions stay,
/// and Enter plans again with every resizable partition's size.
#[test]
fn restore_summary_edits_partition_sizes() {
    let mut s = restore_summary();
    assert!(press(&mut s, KeyCode::Char('e')).is_empty());
    let Screen::Restore(w) = &s.screen else { panic!("restore wizard") };
    let e = w.edit.as_ref().expect("the editor is open");
    assert_eq!(e.parts.iter().map(|p| (p.number, p.resizable)).collect::<Vec<_>>(), vec![(1, false), (2, true), (3, true)]);
    assert_eq!(e.sel, 1, "the first resizable partition is selected");
    let step = e.step;
    snap("restore_edit_sizes", &s);
    // The ESP keeps its size.
    keys(&mut s, &[KeyCode::Up, Right]);
    let Screen::Restore(w) = &s.screen else { panic!() };
    let e = w.edit.as_ref().unwrap();
    assert_eq!(e.parts[0].size, e.parts[0].planned);
    assert!(e.note.as_deref().is_some_and(|n| n.contains("keeps its size")), "{:?}", e.note);
    // NTFS down as far as it goes: stops at what it holds.
    keys(&mut s, &[Down, KeyCode::PageDown, KeyCode::PageDown, KeyCode::PageDown, KeyCode::PageDown, KeyCode::PageDown]);
    let Screen::Restore(w) = &s.screen else { panic!() };
    let e = w.edit.as_ref().unwrap();
    let ntfs = &e.parts[1];
    assert_eq!(ntfs.size, imaging::layout::min_shrunk_size(ntfs.used.unwrap(), 1 << 20));
    assert!(e.note.as_deref().is_some_and(|n| n.contains("cannot be smaller")), "{:?}", e.note);
    // ext4 up by two steps.
    keys(&mut s, &[Down, Right, Right]);
    snap("restore_edit_sizes_changed", &s);
    let Screen::Restore(w) = &s.screen else { panic!() };
    let (ntfs_to, ext_to) = (w.edit.as_ref().unwrap().parts[1].size, w.edit.as_ref().unwrap().parts[2].size);
    assert!(ext_to >= w.edit.as_ref().unwrap().parts[2].planned + step);
    let c = press(&mut s, Enter);
    let [Command::PlanRestore { req, .. }] = &c[..] else { panic!("a new plan with the sizes, got {c:?}") };
    assert_eq!(req.layout.sizes.iter().map(|(k, v)| (*k, *v)).collect::<Vec<_>>(), vec![(2, ntfs_to), (3, ext_to)]);
    // Esc leaves the editor without changes; changing the layout mode drops the sizes.
    update(&mut s, Event::RestorePlanned(Ok(restore_plan())));
    keys(&mut s, &[KeyCode::Char('e'), Right, Esc]);
    let Screen::Restore(w) = &s.screen else { panic!() };
    assert!(w.edit.is_none() && w.sizes.len() == 2);
    let c = press(&mut s, Right);
    let [Command::PlanRestore { req, .. }] = &c[..] else { panic!("{c:?}") };
    assert!(req.layout.sizes.is_empty(), "fill replaces the manual sizes");
}

/// The clone wizard's system kind plans a clone of the boot partitions onto
/// a whole disk, and its summary says which partitions and why.
#[test]
fn system_clone_in_the_wizard() {
    let mut s = state();
    press(&mut s, KeyCode::Char('c'));
    keys(&mut s, &[Down, Enter, Enter, Down]);
    let c = press(&mut s, Enter);
    let [Command::PlanClone(req)] = &c[..] else { panic!("expected a clone plan request, got {c:?}") };
    assert!(req.system && req.source_partition.is_none() && req.target_partition.is_none(), "{req:?}");
    let mut write = restore_plan();
    write.operation = "clone".into();
    write.source = "/dev/sda".into();
    let mut source = backup_plan();
    source.selection = vec!["partition 1: EFI system partition: holds the boot loaders".into(), "partition 3: left out (data, not needed to boot; back it up with `rescue backup part`)".into()];
    update(&mut s, Event::ClonePlanned(Ok(Box::new(ClonePlan { write, source }))));
    assert!(draw(&s, 160, 50).contains("partition 3: left out"));
    press(&mut s, Enter);
    let Screen::Confirm(c) = &s.screen else { panic!("confirmation") };
    assert!(c.lines.iter().any(|l| l.contains("EFI system partition")), "{:?}", c.lines);
}

/// Saved shares are offered: as backup destinations (their NAME:PATH) and,
/// with ↑/↓ in the restore's folder field, as folders to scan (beside
/// "every disk").
#[test]
fn saved_shares_are_offered_in_the_wizards() {
    let mut s = state();
    s.saved_shares = vec![("nas".into(), "smb://tech@nas/images".into()), ("lab".into(), "smb://10.0.0.5/lab".into())];
    keys(&mut s, &[KeyCode::Char('b'), Enter, Enter, Tab]);
    assert!(draw(&s, 80, 24).contains("[share nas] smb://tech@nas/images: save there"));
    let n = super::state::dest_places(&s, 0).len();
    for _ in 0..n {
        press(&mut s, Down);
    }
    press(&mut s, Enter);
    let Screen::Backup(w) = &s.screen else { panic!("backup wizard") };
    assert_eq!((w.dest.as_str(), w.dest_focus), ("nas:sda-disk.rimg", 0));
    // Restore: the folder field cycles default folder -> nas: -> lab: -> default.
    let mut s = state();
    s.saved_shares = vec![("nas".into(), "smb://tech@nas/images".into()), ("lab".into(), "smb://10.0.0.5/lab".into())];
    keys(&mut s, &[KeyCode::Char('r'), Tab]);
    assert!(draw(&s, 160, 50).contains("saved shares (nas, lab)"));
    let dir = |s: &State| match &s.screen {
        Screen::Restore(w) => w.scan_dir.clone(),
        _ => String::new(),
    };
    press(&mut s, Down);
    assert_eq!(dir(&s), super::state::EVERY_DISK);
    press(&mut s, Down);
    assert_eq!(dir(&s), "nas:");
    press(&mut s, Down);
    assert_eq!(dir(&s), "lab:");
    press(&mut s, Down);
    assert_eq!(dir(&s), "/mnt/usb");
    press(&mut s, KeyCode::Up);
    assert_eq!(dir(&s), "lab:");
    // Every disk: one scan command; nothing found says where it looked.
    keys(&mut s, &[KeyCode::Up, KeyCode::Up]);
    assert_eq!(dir(&s), super::state::EVERY_DISK);
    let c = press(&mut s, Enter);
    assert!(matches!(&c[..], [Command::ScanDisks]), "{c:?}");
    update(&mut s, Event::Scanned(vec![]));
    assert!(matches!(&s.screen, Screen::Restore(w) if w.error.as_deref().is_some_and(|e| e.contains("on any disk's filesystems"))));
}

/// A storage or network controller without a driver is named on the home
/// screen (why its disks or network are missing), and Tools > Hardware
/// lists every PCI device with its driver.
#[test]
fn controllers_without_a_driver_are_named() {
    use imaging::hardware::{class_name, PciDevice};
    let dev = |slot: &str, class: u32, vendor: u16, device: u16, driver: Option<&str>| PciDevice {
        slot: slot.into(),
        class,
        vendor,
        device,
        kind: class_name(class),
        driver: driver.map(Into::into),
        modalias: Some(format!("pci:v0000{vendor:04X}d0000{device:04X}sv")),
    };
    let mut s = state();
    assert!(!draw(&s, 80, 24).contains("No driver"));
    update(
        &mut s,
        Event::Hardware(vec![
            dev("0000:00:00.0", 0x060000, 0x8086, 0x9b61, None),
            dev("0000:00:0e.0", 0x010400, 0x8086, 0x9a0b, None),
            dev("0000:00:17.0", 0x010601, 0x8086, 0x06d2, Some("ahci")),
            dev("0000:02:00.0", 0x020000, 0x10ec, 0x8125, None),
        ]),
    );
    snap("home_no_driver", &s);
    assert!(draw(&s, 80, 24).contains("! No driver: [8086:9a0b] RAID controller and 1 more (Tools > Hardware)"));
    assert!(s.log.iter().any(|l| l.contains("no driver: [10ec:8125] Ethernet controller")));
    keys(&mut s, &[KeyCode::Char('t'), Down, Down, Down, Down, Down, Enter]);
    let t = draw(&s, 160, 50);
    assert!(t.contains("Without a driver") && t.contains("[8086:06d2] SATA controller (AHCI) at 0000:00:17.0  ahci"), "{t}");
}
