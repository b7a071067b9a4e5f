//! `rescue universal-restore` and `restore --universal`: make the Windows on
//! a disk boot on other storage hardware (the `drivers` library does the work).

use std::path::Path;

use anyhow::Context;
use drivers::inject::{self, Options};
use drivers::windows;

use super::{print_json, prompt, CliError, Global, UniversalArgs, UniversalOpts};

fn options(o: &UniversalOpts) -> Result<Options, CliError> {
    let mut controllers = Vec::new();
    for f in &o.for_hw {
        controllers.extend(windows::profile(f).map_err(|e| super::usage(e.to_string(), e.hint()))?);
    }
    if controllers.is_empty() {
        controllers = windows::detect_controllers(Path::new("/sys")).context("detecting this machine's storage controllers")?;
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
/// installation found on `disk`.
pub fn run_on(g: &Global, disk: &Path, part: Option<u32>, o: &UniversalOpts, dry_run: bool, ask: bool) -> Result<(), CliError> {
    let opts = options(o)?;
    let found = drivers::offline::find_windows(disk, part, !dry_run).map_err(|e| CliError {
        exit: super::Exit::Failed,
        hint: Some(e.hint().to_string()),
        error: anyhow::Error::new(e).context(format!("looking for Windows on {}", disk.display())),
    })?;
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
            let v: Vec<_> = plans.iter().map(|(p, pl)| serde_json::json!({"partition": p, "plan": pl})).collect();
            return print_json(&v);
        }
        for (p, pl) in &plans {
            println!("partition {p}:\n{pl}");
        }
        return Ok(());
    }
    if !g.json {
        for (p, pl) in &plans {
            eprintln!("partition {p}:\n{pl}");
        }
    }
    if ask {
        let name = disk.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        prompt::confirm(g.yes, &format!("This changes the Windows registry and driver files on {}.", disk.display()), &name)?;
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
    if g.json {
        let v: Vec<_> = reports.iter().map(|(p, r)| serde_json::json!({"partition": p, "report": r})).collect();
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
    Ok(())
}

pub fn run(g: &Global, a: UniversalArgs) -> Result<(), CliError> {
    run_on(g, &a.disk, a.part, &a.opts, a.dry_run, true)
}
