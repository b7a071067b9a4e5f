//! `rescue universal-restore` and `restore --universal`: make the Windows or
//! Linux on a disk boot on other storage hardware (the `drivers` library does
//! the work: `inject` for Windows, `linux_offline` for Linux).

use std::path::Path;

use drivers::inject::{self, Options};
use drivers::windows;

use super::{print_json, prompt, CliError, Global, UniversalArgs, UniversalOpts};

fn options(o: &UniversalOpts) -> Result<Options, CliError> {
    let mut controllers = Vec::new();
    for f in &o.for_hw {
        controllers.extend(windows::profile(f).map_err(|e| super::usage(e.to_string(), e.hint()))?);
    }
    if controllers.is_empty() {
        controllers = detect_here()?;
        if controllers.is_empty() {
            return Err(super::usage(
                "no storage controllers detected on this machine",
                "name the target hardware with --for ahci|nvme|virtio|vmware|hyperv|intel-rst or a hardware ID",
            ));
        }
    }
    Ok(Options { controllers, driver_dirs: o.drivers.clone(), disable_stale: o.disable_stale, timestamp: None })
}

/// The systems found on a disk and what universal restore would change on
/// them. Holds their partitions mounted (read-write unless planned for a dry
/// run) until it is applied or dropped.
pub struct DiskWork {
    found: Vec<drivers::offline::FoundWindows>,
    windows: Vec<(u32, inject::Plan)>,
    linux: LinuxWork,
}

impl DiskWork {
    /// The plan in words: every key, file and command, by partition.
    pub fn lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (p, pl) in &self.windows {
            v.push(format!("partition {p}:"));
            v.extend(pl.to_string().lines().map(str::to_string));
        }
        for pl in &self.linux.plans {
            v.push(format!("{}:", pl.place()));
            v.extend(pl.to_string().lines().map(str::to_string));
        }
        v
    }

    /// What the change touches, for the confirmation question.
    pub fn what(&self) -> &'static str {
        match (self.windows.is_empty(), self.linux.plans.is_empty()) {
            (false, true) => "the Windows registry and driver files",
            (true, false) => "the Linux initramfs and boot loader",
            _ => "the Windows registry and driver files, and the Linux initramfs and boot loader,",
        }
    }
}

/// Find every Windows installation and Linux system on `disk` (or its
/// partition `part`) and plan their changes for the target hardware in `o`.
pub fn plan_disk(disk: &Path, part: Option<u32>, o: &UniversalOpts, dry_run: bool) -> Result<DiskWork, CliError> {
    disk_route_available(disk)?;
    let opts = options(o)?;
    let found = match drivers::offline::find_windows(disk, part, !dry_run) {
        Ok(f) => f,
        // No Windows is fine when there is Linux: decided below.
        Err(drivers::offline::OfflineError::NoNtfs { .. } | drivers::offline::OfflineError::NoWindows { .. }) => Vec::new(),
        Err(e) => {
            return Err(CliError {
                exit: super::Exit::Failed,
                hint: Some(e.hint().to_string()),
                error: anyhow::Error::new(e).context(format!("looking for Windows on {}", disk.display())),
            })
        }
    };
    let linux = linux_plans(disk, part, o, &opts.controllers, dry_run)?;
    if found.is_empty() && linux.plans.is_empty() {
        let locked = &linux.found.layout.locked;
        let hint = if locked.is_empty() {
            "restore the Windows or Linux system first, or name the partition that holds it with --part N".to_string()
        } else {
            let n: Vec<String> = locked.iter().map(u32::to_string).collect();
            format!(
                "give the passphrase of encrypted partition {}: --luks-key-file FILE or RESCUE_LUKS_PASSWORD (in the menus: Tools > Universal restore asks for it)",
                n.join(", ")
            )
        };
        return Err(CliError {
            exit: super::Exit::Failed,
            hint: Some(hint),
            error: anyhow::anyhow!(
                "no Windows installation and no Linux system found on {} (Linux filesystems searched: {})",
                disk.display(),
                drivers::linux_offline::searched(&linux.found.layout, part)
            ),
        });
    }
    let mut windows = Vec::new();
    for f in &found {
        for inst in &f.installs {
            let plan = inject::plan(inst, &opts).map_err(|e| CliError {
                exit: super::Exit::Failed,
                hint: Some(e.hint().to_string()),
                error: anyhow::Error::new(e).context(format!("planning driver changes on partition {}", f.volume.partition)),
            })?;
            windows.push((f.volume.partition, plan));
        }
    }
    Ok(DiskWork { found, windows, linux })
}

/// What applying did, per system.
pub struct Applied {
    pub windows: Vec<(u32, inject::ApplyReport)>,
    pub linux: Vec<drivers::linux_offline::Report>,
}

impl Applied {
    pub fn lines(&self) -> Vec<String> {
        let mut v = Vec::new();
        for (p, r) in &self.windows {
            v.push(format!(
                "Universal restore on partition {p}: {} registry changes, {} files copied; the old hive is kept as {}",
                r.registry_changes,
                r.files_copied,
                r.backup.display()
            ));
        }
        for r in &self.linux {
            v.push(format!(
                "Universal restore of {} on {}: wrote {}; ran {}",
                r.name,
                drivers::linux_offline::place(r.partition, r.lv.as_deref()),
                if r.files_written.is_empty() { "no files".to_string() } else { r.files_written.join(", ") },
                r.commands_run.join("; ")
            ));
            v.extend(r.warnings.iter().map(|w| format!("warning: {w}")));
            v.extend(r.arrays.iter().cloned());
            if let Some(e) = &r.boot_entry {
                v.push(format!(
                    "Firmware boot entry {} \"{}\" ({}{}), first in the boot order: {}",
                    e.name,
                    e.description,
                    e.loader,
                    if e.created { "" } else { ", there already" },
                    e.order.join(", ")
                ));
            }
        }
        v
    }
}

/// Apply a plan made with `dry_run` false; every mount is released before
/// this returns. `note` hears about the slow steps.
pub fn apply_disk(disk: &Path, w: DiskWork, note: &dyn Fn(String)) -> Result<Applied, CliError> {
    let mut windows = Vec::new();
    for (p, pl) in &w.windows {
        note(format!("Changing the Windows registry and drivers on partition {p}"));
        let r = inject::apply(pl).map_err(|e| CliError {
            exit: super::Exit::Failed,
            hint: Some(e.hint().to_string()),
            error: anyhow::Error::new(e).context(format!("applying driver changes on partition {p}")),
        })?;
        windows.push((*p, r));
    }
    drop(w.found);
    let linux = linux_apply(disk, w.linux, note)?;
    Ok(Applied { windows, linux })
}

/// Plan (and unless `dry_run`, apply after confirmation) on every Windows
/// installation and every Linux system found on `disk`.
pub fn run_on(g: &Global, disk: &Path, part: Option<u32>, o: &UniversalOpts, dry_run: bool, ask: bool) -> Result<(), CliError> {
    let work = plan_disk(disk, part, o, dry_run)?;
    if dry_run {
        if g.json {
            let mut v: Vec<_> = work.windows.iter().map(|(p, pl)| serde_json::json!({"partition": p, "plan": pl})).collect();
            v.extend(work.linux.plans.iter().map(|pl| serde_json::json!({"partition": pl.partition, "linux": pl})));
            return print_json(&v);
        }
        for l in work.lines() {
            println!("{l}");
        }
        return Ok(());
    }
    if !g.json {
        for l in work.lines() {
            eprintln!("{l}");
        }
    }
    if ask {
        let name = disk.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        prompt::confirm(g.yes, &format!("This changes {} on {}.", work.what(), disk.display()), &name)?;
    }
    let done = apply_disk(disk, work, &|m| eprintln!("{m}..."))?;
    if g.json {
        let mut v: Vec<_> = done.windows.iter().map(|(p, r)| serde_json::json!({"partition": p, "report": r})).collect();
        v.extend(done.linux.iter().map(|r| serde_json::json!({"partition": r.partition, "linux": r})));
        return print_json(&v);
    }
    for l in done.lines() {
        println!("{l}");
    }
    Ok(())
}

/// The Linux systems found on a disk (roots mounted) and their plans.
struct LinuxWork {
    found: drivers::linux_offline::Found,
    plans: Vec<drivers::linux_offline::SystemPlan>,
}

fn linux_failed(e: drivers::linux_offline::LinuxError, what: String) -> CliError {
    CliError { exit: super::Exit::Failed, hint: Some(e.hint().to_string()), error: anyhow::Error::new(e).context(what) }
}

/// Find the Linux systems on `disk` and plan their fix-ups (mounted
/// read-write unless `dry_run`).
fn linux_plans(disk: &Path, part: Option<u32>, o: &UniversalOpts, controllers: &[windows::Controller], dry_run: bool) -> Result<LinuxWork, CliError> {
    use drivers::linux_offline as lo;
    let mut uuid_map = Vec::new();
    for m in &o.map_uuid {
        match m.split_once('=') {
            Some((a, b)) if !a.is_empty() && !b.is_empty() => uuid_map.push((a.to_string(), b.to_string())),
            _ => return Err(super::usage(format!("--map-uuid {m}: expected OLD=NEW"), "for example --map-uuid 0a1b2c3d-1111-2222-3333-444455556666=99999999-aaaa-bbbb-cccc-dddddddddddd")),
        }
    }
    // On Windows (WinPE) Linux filesystems cannot be mounted: only the
    // disk's layout is read, for the message when nothing is found.
    if cfg!(windows) {
        let (layout, _, sources) = lo::layout(disk, &Default::default(), false).map_err(|e| linux_failed(e, format!("reading the partitions of {}", disk.display())))?;
        return Ok(LinuxWork { found: lo::Found { layout, systems: Vec::new(), sources }, plans: Vec::new() });
    }
    let mut luks = prompt::luks_passphrases(&o.universal_luks_key_file)?;
    luks.0.extend(o.luks_passphrases.0.iter().cloned());
    let found = lo::find_linux(disk, part, !dry_run, &luks).map_err(|e| linux_failed(e, format!("looking for Linux on {}", disk.display())))?;
    // The firmware entry is for this machine: only when the disk is one of
    // its own, the target hardware is its own (no --for), and it booted by
    // EFI.
    let here = o.for_hw.is_empty() && lo::is_block_device(disk);
    let boot_entry = here && !o.no_boot_entry && drivers::efi_boot::Efivars::here().is_some();
    let opts = lo::Options { controllers: controllers.to_vec(), uuid_map, boot_entry };
    let mut plans = Vec::new();
    for f in &found.systems {
        plans.push(lo::plan(&f.mount.dir, &f.root, &found.layout, &opts).map_err(|e| linux_failed(e, format!("planning the Linux fix-ups on {}", lo::place(f.root.partition, f.root.lv.as_deref()))))?);
    }
    Ok(LinuxWork { found, plans })
}

/// Apply the Linux plans; every mount is released before this returns.
fn linux_apply(disk: &Path, w: LinuxWork, note: &dyn Fn(String)) -> Result<Vec<drivers::linux_offline::Report>, CliError> {
    let mut out = Vec::new();
    for (f, pl) in w.found.systems.iter().zip(&w.plans) {
        note(format!("Rebuilding the initramfs of {} on {} (this takes a minute)", pl.name, pl.place()));
        let r = drivers::linux_offline::apply(&w.found.sources, w.found.layout.size, f, pl)
            .map_err(|e| linux_failed(e, format!("applying the Linux fix-ups on {}", pl.place())))?;
        out.push(r);
    }
    // The roots unmounted: md RAID1 members written through one of them
    // are brought into one state.
    drop(w.found);
    if w.plans.iter().any(|p| p.mounts.iter().any(|m| m.md.is_some())) {
        note("Bringing the md RAID1 members into one state".into());
        drivers::linux_offline::sync_arrays(disk, &w.plans, &mut out).map_err(|e| linux_failed(e, format!("finishing the Linux fix-ups on {}", disk.display())))?;
    }
    Ok(out)
}

/// This machine's storage controllers: sysfs on Linux.
#[cfg(not(windows))]
fn detect_here() -> Result<Vec<windows::Controller>, CliError> {
    use anyhow::Context as _;
    Ok(windows::detect_controllers(Path::new("/sys")).context("detecting this machine's storage controllers")?)
}

/// This machine's storage controllers: SetupAPI on Windows (WinPE).
#[cfg(windows)]
fn detect_here() -> Result<Vec<windows::Controller>, CliError> {
    let found = drivers::pnp::detect_controllers().map_err(|e| CliError {
        exit: super::Exit::Failed,
        hint: Some(e.hint().to_string()),
        error: anyhow::Error::new(e).context("listing this machine's devices"),
    })?;
    for c in &found {
        eprintln!("storage controller on this machine: {} [{}]", c.description, c.origin);
    }
    Ok(found)
}

/// Plan (and unless `dry_run`, apply after confirmation) on the Windows in
/// a folder that is already reachable (`--windows-dir`).
fn run_in_dir(g: &Global, dir: &Path, o: &UniversalOpts, dry_run: bool) -> Result<(), CliError> {
    let opts = options(o)?;
    let failed = |e: anyhow::Error, hint: &str| CliError { exit: super::Exit::Failed, hint: Some(hint.to_string()), error: e };
    let found = drivers::offline::windows_in_dir(dir)
        .map_err(|e| {
        let hint = e.hint();
        failed(anyhow::Error::new(e).context(format!("looking for Windows in {}", dir.display())), hint)
    })?;
    let mut plans = Vec::new();
    for inst in &found {
        let plan = inject::plan(inst, &opts).map_err(|e| {
            let hint = e.hint();
            failed(anyhow::Error::new(e).context(format!("planning driver changes in {}", inst.windows_dir.display())), hint)
        })?;
        plans.push((inst.windows_dir.display().to_string(), plan));
    }
    if dry_run && g.json {
        let v: Vec<_> = plans.iter().map(|(d, pl)| serde_json::json!({"windows_dir": d, "plan": pl})).collect();
        return print_json(&v);
    }
    for (d, pl) in &plans {
        let line = format!("{d}:\n{pl}");
        if dry_run {
            println!("{line}");
        } else if !g.json {
            eprintln!("{line}");
        }
    }
    if dry_run {
        return Ok(());
    }
    prompt::confirm(g.yes, &format!("This changes the Windows registry and driver files in {}.", dir.display()), "yes")?;
    let mut reports = Vec::new();
    for (d, pl) in &plans {
        let r = inject::apply(pl).map_err(|e| {
            let hint = e.hint();
            failed(anyhow::Error::new(e).context(format!("applying driver changes in {d}")), hint)
        })?;
        reports.push((d, r));
    }
    if g.json {
        let v: Vec<_> = reports.iter().map(|(d, r)| serde_json::json!({"windows_dir": d, "report": r})).collect();
        return print_json(&v);
    }
    for (d, r) in &reports {
        println!(
            "Universal restore in {d}: {} registry changes, {} files copied; the old hive is kept as {}",
            r.registry_changes,
            r.files_copied,
            r.backup.display()
        );
    }
    Ok(())
}

/// Finding systems on a disk mounts its partitions (ntfs-3g, loop devices,
/// a chroot for Linux) on Linux. On Windows (WinPE) a physical disk's
/// volumes are Windows' own and Windows is searched on them, but a disk
/// image file has none: say what works there instead, before anything is
/// done.
pub fn disk_route_available(disk: &Path) -> Result<(), CliError> {
    if cfg!(target_os = "linux") {
        return Ok(());
    }
    #[cfg(windows)]
    if imaging::blockdev::probe_disk(disk, None).is_ok_and(|d| d.kind == imaging::blockdev::DiskKind::Block) {
        return Ok(());
    }
    Err(CliError {
        exit: super::Exit::Refused,
        hint: Some("give the restored Windows by folder, e.g. --windows-dir D:\\Windows (attach the image with diskpart and assign its volume a drive letter first), or run this from the Linux rescue system".into()),
        error: anyhow::anyhow!("universal restore on {}: on Windows only a physical disk (\\\\.\\PhysicalDriveN) is searched for Windows, not a disk image file", disk.display()),
    })
}

pub fn run(g: &Global, a: UniversalArgs) -> Result<(), CliError> {
    match (&a.windows_dir, &a.disk) {
        (Some(dir), _) => run_in_dir(g, dir, &a.opts, a.dry_run),
        (None, Some(disk)) => run_on(g, disk, a.part, &a.opts, a.dry_run, true),
        (None, None) => Err(super::usage("name the disk holding Windows, or --windows-dir", "see rescue universal-restore --help")),
    }
}
