//! `rescue restore` and `rescue clone`: plan, show, confirm, execute.

use anyhow::Context;
use imaging::clone::{self, CloneRequest};
use imaging::exec::{WriteOutcome, WritePlan};
use imaging::layout::{LayoutMode, LayoutOptions};
use imaging::part::TableKind;
use imaging::restore::{self, RestoreRequest};

use super::{backup::task, image, print_json, prompt, show, split_disk_part, usage, CliError, CloneArgs, Global, LayoutArg, LayoutOpts, RestoreArgs, TableArg};

fn layout_options(l: &LayoutOpts) -> Result<LayoutOptions, CliError> {
    let align = match &l.align {
        Some(s) => {
            let v = imaging::blockdev::parse_size(s).filter(|v| *v >= 512 && v.is_power_of_two()).ok_or_else(|| usage(format!("--align {s}: not a power-of-two size"), "use e.g. --align 1MiB"))?;
            Some(v)
        }
        None => None,
    };
    let table = l.table.map(|t| match t {
        TableArg::Gpt => TableKind::Gpt,
        TableArg::Mbr => TableKind::Mbr,
    });
    let mut sizes = std::collections::BTreeMap::new();
    for v in &l.sizes {
        let parsed = v.split_once('=').and_then(|(n, sz)| Some((n.trim().parse::<u32>().ok()?, imaging::blockdev::parse_size(sz.trim())?)));
        let Some((n, sz)) = parsed else {
            return Err(usage(format!("--size {v}: expected N=SIZE"), "e.g. --size 3=200GiB (N is the image's partition number, see `rescue info`)"));
        };
        sizes.insert(n, sz);
    }
    Ok(LayoutOptions { mode: if l.layout == LayoutArg::Fill { LayoutMode::Fill } else { LayoutMode::Keep }, align, table, scratch_dir: Some(l.scratch_dir.clone()), sizes })
}

/// `--table` converts a whole disk's table; one partition keeps the target's.
fn table_needs_whole_disk(l: &LayoutOpts, single: bool) -> Result<(), CliError> {
    if single && l.table.is_some() {
        return Err(usage("--table converts the partition table of a whole-disk restore or clone", "leave out --table when writing one partition"));
    }
    Ok(())
}

fn one_partition(spec: Option<String>, what: &str) -> Result<Option<u32>, CliError> {
    match spec {
        None => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| usage(format!("{what}: `{s}` is not one partition number"), "give one partition, e.g. /dev/sdb:2")),
    }
}

/// Show the plan, ask, and report the outcome.
fn confirm_and_report(g: &Global, plan: &WritePlan, dry_run: bool, run: impl FnOnce() -> Result<WriteOutcome, CliError>) -> Result<(), CliError> {
    if dry_run {
        return if g.json {
            print_json(plan)
        } else {
            print!("{}", show::write_plan(plan));
            Ok(())
        };
    }
    eprint!("{}", show::write_plan(plan));
    let what = if plan.whole_disk {
        format!("This overwrites ALL data on {}.", plan.target.describe())
    } else {
        format!("This overwrites data on {}.", plan.target.describe())
    };
    prompt::confirm(g.yes, &what, &plan.target.name)?;
    let out = run()?;
    if g.json {
        return print_json(&serde_json::json!({"ok": true, "plan": plan, "outcome": out}));
    }
    for n in &out.notes {
        eprintln!("note: {n}");
    }
    for gr in &out.grown {
        println!("{gr}");
    }
    println!(
        "{} complete: {} written to {} in {:.1} s",
        if plan.operation == "clone" { "Clone" } else { "Restore" },
        imaging::blockdev::human_size(out.bytes_written),
        plan.target.path.display(),
        out.seconds
    );
    Ok(())
}

pub fn restore(g: &Global, a: RestoreArgs) -> Result<(), CliError> {
    let (target, tpart) = split_disk_part(&a.to);
    let target_partition = one_partition(tpart, "--to")?;
    table_needs_whole_disk(&a.layout, a.part.is_some())?;
    if a.universal {
        // Refuse before the restore, not after it.
        super::universal::disk_route_available(&target)?;
    }
    let reader = image::open_path(&a.image, a.password_file.as_deref())?;
    let req = RestoreRequest {
        image: a.image.clone(),
        target: target.clone(),
        source_partition: a.part,
        target_partition,
        layout: layout_options(&a.layout)?,
        file_sector_size: a.layout.sector_size,
        sector_by_sector: a.layout.sector_by_sector,
    };
    let mut plan = restore::plan_restore(&req, &reader).with_context(|| format!("planning the restore to {}", target.display()))?;
    // Resuming is a changed-block restore: what was written before is
    // recognised by its hashes, so nothing is fetched twice and nothing
    // depends on a progress file that the interruption may have lost.
    plan.only_changed = a.only_changed || a.resume;
    confirm_and_report(g, &plan, a.layout.dry_run, || {
        let t = task(g.json);
        Ok(restore::run_restore(&plan, &reader, a.layout.sector_by_sector, &t).with_context(|| format!("restoring to {}", target.display()))?)
    })?;
    if a.universal && !a.layout.dry_run {
        // The restore was confirmed already; the driver changes are part of it.
        let part = if plan.whole_disk { None } else { target_partition };
        super::universal::run_on(g, &target, part, &a.universal_opts, false, false)?;
    }
    Ok(())
}

pub fn clone(g: &Global, a: CloneArgs) -> Result<(), CliError> {
    let (src, spart) = split_disk_part(&a.source);
    let (dst, dpart) = split_disk_part(&a.target);
    let source_partition = one_partition(spart, "source")?;
    let target_partition = one_partition(dpart, "target")?;
    if target_partition.is_some() && source_partition.is_none() {
        return Err(usage("a whole disk cannot be cloned into one partition", "clone a partition: SRC:N DST:M"));
    }
    table_needs_whole_disk(&a.layout, source_partition.is_some())?;
    if a.system && (source_partition.is_some() || target_partition.is_some()) {
        return Err(usage("--system clones a disk's system partitions onto a whole disk", "give disks, not partitions: rescue clone --system /dev/sda /dev/sdb"));
    }
    let req = CloneRequest {
        source: src.clone(),
        source_partition,
        system: a.system,
        target: dst.clone(),
        target_partition,
        layout: layout_options(&a.layout)?,
        sector_by_sector: a.layout.sector_by_sector,
        file_sector_size: a.layout.sector_size,
        luks_passphrases: super::prompt::luks_passphrases(&a.luks_key_file)?,
    };
    let plan = clone::plan_clone(&req).with_context(|| format!("planning the clone of {} to {}", src.display(), dst.display()))?;
    if a.system && !g.json {
        for why in &plan.source.selection {
            eprintln!("{why}");
        }
    }
    confirm_and_report(g, &plan.write, a.layout.dry_run, || {
        let t = task(g.json);
        Ok(clone::run_clone(&plan, &t).with_context(|| format!("cloning to {}", dst.display()))?)
    })
}
