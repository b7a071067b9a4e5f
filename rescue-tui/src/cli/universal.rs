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

/// Plan (and unless `dry_run`, apply after confirmation) on every Windows
/// installation and every Linux system found on `disk`.
pub fn run_on(g: &Global, disk: &Path, part: Option<u32>, o: &UniversalOpts, dry_run: bool, ask: bool) -> Result<(), CliError> {
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
        return Err(CliError {
            exit: super::Exit::Failed,
            hint: Some("restore the Windows or Linux system first, or name the partition that holds it with --part N".into()),
            error: anyhow::anyhow!(
                "no Windows installation and no Linux system found on {} (Linux filesystems searched: {})",
                disk.display(),
                drivers::linux_offline::searched(&linux.layout, part)
            ),
        });
    }
    let mut plans = Vec::new();
    for f in &found {
        for inst in &f.installs {
            let plan = inject::plan(inst, &opts).map_err(|e| CliError {
                exit: super::Exit::Failed,
                hint: Some(e.hint().to_string()),
                error: anyhow::Error::new(e).context(format!("planning driver changes on partition {}", f.volume.partition)),
            })?;
            plans.push((f.volume.partition, plan));
        }
    }
    if dry_run {
        if g.json {
            let mut v: Vec<_> = plans.iter().map(|(p, pl)| serde_json::json!({"partition": p, "plan": pl})).collect();
            v.extend(linux.plans.iter().map(|pl| serde_json::json!({"partition": pl.partition, "linux": pl})));
            return print_json(&v);
        }
        for (p, pl) in &plans {
            println!("partition {p}:\n{pl}");
        }
        for pl in &linux.plans {
            println!("partition {}:\n{pl}", pl.partition);
        }
        return Ok(());
    }
    if !g.json {
        for (p, pl) in &plans {
            eprintln!("partition {p}:\n{pl}");
        }
        for pl in &linux.plans {
            eprintln!("partition {}:\n{pl}", pl.partition);
        }
    }
    if ask {
        let name = disk.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let what = match (plans.is_empty(), linux.plans.is_empty()) {
            (false, true) => "the Windows registry and driver files",
            (true, false) => "the Linux initramfs and boot loader",
            _ => "the Windows registry and driver files, and the Linux initramfs and boot loader,",
        };
        prompt::confirm(g.yes, &format!("This changes {what} on {}.", disk.display()), &name)?;
    }
    let mut reports = Vec::new();
    for (p, pl) in &plans {
        let r = inject::apply(pl).map_err(|e| CliError {
            exit: super::Exit::Failed,
            hint: Some(e.hint().to_string()),
            error: anyhow::Error::new(e).context(format!("applying driver changes on partition {p}")),
        })?;
        reports.push((*p, r));
    }
    drop(found);
    let linux_reports = linux_apply(disk, linux)?;
    if g.json {
        let mut v: Vec<_> = reports.iter().map(|(p, r)| serde_json::json!({"partition": p, "report": r})).collect();
        v.extend(linux_reports.iter().map(|r| serde_json::json!({"partition": r.partition, "linux": r})));
        return print_json(&v);
    }
    for (p, r) in &reports {
        println!(
            "Universal restore on partition {p}: {} registry changes, {} files copied; the old hive is kept as {}",
            r.registry_changes,
            r.files_copied,
            r.backup.display()
        );
    }
    for r in &linux_reports {
        println!(
            "Universal restore of {} on partition {}: wrote {}; ran {}",
            r.name,
            r.partition,
            if r.files_written.is_empty() { "no files".to_string() } else { r.files_written.join(", ") },
            r.commands_run.join("; ")
        );
    }
    Ok(())
}

/// The Linux systems found on a disk (roots mounted) and their plans.
struct LinuxWork {
    layout: drivers::linux_offline::DiskLayout,
    found: Vec<drivers::linux_offline::FoundLinux>,
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
    let (layout, found) = lo::find_linux(disk, part, !dry_run).map_err(|e| linux_failed(e, format!("looking for Linux on {}", disk.display())))?;
    let opts = lo::Options { controllers: controllers.to_vec(), uuid_map };
    let mut plans = Vec::new();
    for f in &found {
        plans.push(lo::plan(&f.mount.dir, &f.root, &layout, &opts).map_err(|e| linux_failed(e, format!("planning the Linux fix-ups on partition {}", f.root.partition)))?);
    }
    Ok(LinuxWork { layout, found, plans })
}

/// Apply the Linux plans; every mount is released before this returns.
fn linux_apply(disk: &Path, w: LinuxWork) -> Result<Vec<drivers::linux_offline::Report>, CliError> {
    let mut out = Vec::new();
    for (f, pl) in w.found.iter().zip(&w.plans) {
        eprintln!("Rebuilding the initramfs of {} on partition {} (this takes a minute)...", pl.name, pl.partition);
        let r = drivers::linux_offline::apply(disk, w.layout.size, f, pl)
            .map_err(|e| linux_failed(e, format!("applying the Linux fix-ups on partition {}", pl.partition)))?;
        out.push(r);
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
/// a chroot for Linux): the Linux rescue system only. Elsewhere (WinPE) say
/// what works there instead, before anything is done.
pub fn disk_route_available(disk: &Path) -> Result<(), CliError> {
    if cfg!(target_os = "linux") {
        return Ok(());
    }
    Err(CliError {
        exit: super::Exit::Refused,
        hint: Some("give the restored Windows by folder, e.g. --windows-dir D:\\Windows (assign its volume a drive letter with diskpart first), or run this from the Linux rescue system".into()),
        error: anyhow::anyhow!("universal restore on a disk ({}) needs the Linux rescue system on this build", disk.display()),
    })
}

pub fn run(g: &Global, a: UniversalArgs) -> Result<(), CliError> {
    match (&a.windows_dir, &a.disk) {
        (Some(dir), _) => run_in_dir(g, dir, &a.opts, a.dry_run),
        (None, Some(disk)) => run_on(g, disk, a.part, &a.opts, a.dry_run, true),
        (None, None) => Err(super::usage("name the disk holding Windows, or --windows-dir", "see rescue universal-restore --help")),
    }
}
