//! `rescue backup disk|part|system`.

use std::io::IsTerminal;
use std::path::PathBuf;

use anyhow::Context;
use imaging::backup::{self, BackupRequest, Selection};
use imaging::image::volume::Output;
use imaging::image::{Compression, WriterOptions};
use imaging::task::Task;

use super::{print_json, prompt, show, split_disk_part, usage, BackupCmd, BackupOpts, CliError, CompressArg, Global};

pub fn task(json: bool) -> Task {
    let t = Task::new(super::progress::sink(json), imaging::task::CancelToken::new());
    // First Ctrl-C cancels cleanly; a second one exits at once.
    let flag = t.cancel.flag();
    let _ = signal_hook::flag::register_conditional_shutdown(signal_hook::consts::SIGINT, 130, flag.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGINT, flag.clone());
    let _ = signal_hook::flag::register(signal_hook::consts::SIGTERM, flag);
    t
}

pub fn run(g: &Global, cmd: BackupCmd) -> Result<(), CliError> {
    let (disk, selection, opts) = match cmd {
        BackupCmd::Disk { disk, opts } => (disk, Selection::Disk, opts),
        BackupCmd::System { disk, opts } => (disk, Selection::System, opts),
        BackupCmd::Part { spec, opts } => {
            let (d, n) = split_disk_part(&spec);
            let list = n.ok_or_else(|| usage(format!("{spec}: expected DISK:N[,N...]"), "e.g. rescue backup part /dev/sda:2,3 -o part.img"))?;
            let nums: Result<Vec<u32>, _> = list.split(',').filter(|x| !x.is_empty()).map(str::parse).collect();
            let nums = nums.map_err(|_| usage(format!("{spec}: bad partition list"), "partition numbers are 1, 2, ... as `rescue disks` shows"))?;
            (d, Selection::Partitions(nums), opts)
        }
        BackupCmd::Incr(o) => return super::chain::backup_point(g, imaging::image::format::PointKind::Incremental, o),
        BackupCmd::Diff(o) => return super::chain::backup_point(g, imaging::image::format::PointKind::Differential, o),
        BackupCmd::Full(o) => return super::chain::backup_point(g, imaging::image::format::PointKind::Full, o),
    };
    backup(g, disk, selection, opts)
}

fn backup(g: &Global, disk: PathBuf, selection: Selection, o: BackupOpts) -> Result<(), CliError> {
    let split = match &o.split {
        Some(s) => {
            let v = imaging::blockdev::parse_size(s).ok_or_else(|| usage(format!("--split {s}: not a size"), "use e.g. 4000M, 4G, 700MiB"))?;
            if v < imaging::image::volume::MIN_SPLIT {
                return Err(usage(format!("--split {s} is below the minimum of 50 MiB"), "use at least --split 50M"));
            }
            Some(v)
        }
        None => None,
    };
    let to_stdout = o.output.as_os_str() == "-";
    if to_stdout && std::io::stdout().is_terminal() {
        return Err(usage("refusing to write an image to a terminal", "redirect stdout to a file or a pipe, or use -o FILE"));
    }
    if to_stdout && (o.verify || split.is_some()) {
        return Err(usage("--verify and --split need an image file, not stdout", "use -o FILE"));
    }
    let req = BackupRequest {
        source: disk.clone(),
        selection,
        sector_by_sector: o.sector_by_sector,
        file_sector_size: o.sector_size,
        output: (!to_stdout).then(|| o.output.clone()),
        luks_passphrases: prompt::luks_passphrases(&o.luks_key_file)?,
    };
    let plan = backup::plan_backup(&req).with_context(|| format!("planning the backup of {}", disk.display()))?;
    if o.dry_run {
        return if g.json { print_json(&plan) } else { print!("{}", show::backup_plan(&plan)); Ok(()) };
    }
    if !g.json {
        eprint!("{}", show::backup_plan(&plan));
    }
    let password = if o.encrypt { Some(prompt::password(o.password_file.as_deref(), true)?) } else { None };
    let compression = match o.compress {
        CompressArg::None => Compression::None,
        CompressArg::Fast => Compression::Fast,
        CompressArg::Normal => Compression::Normal,
        CompressArg::High => Compression::High,
    };
    let mut wo = WriterOptions { compression, password: password.clone(), split, ..Default::default() };
    if let Some(t) = o.threads {
        wo.threads = t.max(1);
    }
    wo.resume = o.resume;
    if o.resume && to_stdout {
        return Err(usage("--resume needs the image file on a share, not stdout", "give -o smb://USER@HOST/SHARE/PATH as the first time"));
    }
    let out = if to_stdout { Output::Stream(Box::new(std::io::stdout())) } else { Output::Path(o.output.clone()) };
    let task = task(g.json);
    let res = backup::run_backup(&plan, out, wo, o.comment.clone(), &task).with_context(|| format!("backing up {}", disk.display()))?;
    let mut verified = None;
    if o.verify {
        let reader = imaging::image::ImageReader::open(&res.paths[0], password.as_deref()).context("opening the new image to verify it")?;
        let rep = imaging::check::check_reader(&reader, true, &task).context("verifying the new image")?;
        verified = Some(rep);
    }
    let image_bytes: u64 = res.paths.iter().filter_map(|p| imaging::store::len(p).ok()).sum();
    let data = res.catalog.used_bytes();
    if to_stdout {
        eprintln!("backup written to stdout: {} of data in {:.1} s", imaging::blockdev::human_size(data), res.seconds);
        return Ok(());
    }
    if g.json {
        return print_json(&serde_json::json!({
            "ok": true,
            "volumes": res.paths,
            "image_bytes": image_bytes,
            "data_bytes": data,
            "seconds": res.seconds,
            "resumed_from": res.resumed_from,
            "verified": verified.is_some(),
            "catalog": res.catalog,
        }));
    }
    if let Some(at) = res.resumed_from {
        println!("Resumed: the first {} were on the share already", imaging::blockdev::human_size(at));
    }
    println!(
        "Backup complete: {} ({} volume{}), {} of data stored in {} ({:.0}%), {:.1} s, {}/s{}",
        res.paths[0].display(),
        res.paths.len(),
        if res.paths.len() == 1 { "" } else { "s" },
        imaging::blockdev::human_size(data),
        imaging::blockdev::human_size(image_bytes),
        if data > 0 { image_bytes as f64 * 100.0 / data as f64 } else { 0.0 },
        res.seconds,
        imaging::blockdev::human_size((data as f64 / res.seconds.max(0.001)) as u64),
        if verified.is_some() { "; verified" } else { "" }
    );
    Ok(())
}
