//! `rescue backup incr|diff|full`, `rescue points`, `rescue merge`.

use std::collections::HashMap;
use std::path::Path;

use anyhow::Context;
use imaging::blockdev::human_size as hs;
use imaging::chain::{self, PointPlan, PointRequest, PointStatus, PointSummary};
use imaging::image::format::PointKind;
use imaging::image::{Compression, ImageError, ImageReader};

use super::{backup::task, print_json, prompt, show, usage, CliError, CompressArg, Global, MergeArgs, PointOpts, PointsArgs, PruneArgs};

/// The password of an image when it is encrypted (asked only then).
fn password_for(image: &Path, file: Option<&Path>) -> Result<Option<Vec<u8>>, CliError> {
    match imaging::image::reader::peek(image) {
        Ok(p) if p.header.encrypted() => Ok(Some(prompt::password(file, false)?)),
        Ok(_) => Ok(None),
        Err(e) => Err(anyhow::Error::from(e).context(format!("opening {}", image.display())).into()),
    }
}

/// A password for a folder: only when one of its images is encrypted.
fn password_for_dir(dir: &Path, file: Option<&Path>) -> Result<Option<Vec<u8>>, CliError> {
    let encrypted = imaging::store::list(dir).map(|files| files.iter().any(|f| imaging::image::reader::peek(f).is_ok_and(|p| p.header.encrypted()))).unwrap_or(false);
    if encrypted {
        Ok(Some(prompt::password(file, false)?))
    } else {
        Ok(None)
    }
}

pub fn point_plan_text(p: &PointPlan) -> String {
    let mut s = format!(
        "New {} point #{} of task {} -> {}\n",
        p.kind.name(),
        p.chain.sequence,
        p.chain.task_name,
        p.output.display()
    );
    match &p.base {
        Some(b) => s.push_str(&format!("  compared with: {} (only chunks that differ are stored)\n", b.display())),
        None => s.push_str("  stands alone (a new chain of the task)\n"),
    }
    for n in &p.notes {
        s.push_str(&format!("  {n}\n"));
    }
    s.push_str(&show::backup_plan(&p.backup));
    s
}

pub fn backup_point(g: &Global, kind: PointKind, o: PointOpts) -> Result<(), CliError> {
    let password = password_for(&o.image, o.password_file.as_deref())?;
    let req = PointRequest {
        from: o.image.clone(),
        kind: Some(kind),
        output: o.output.clone(),
        source: o.source.clone(),
        compression: o.compress.map(|c| match c {
            CompressArg::None => Compression::None,
            CompressArg::Fast => Compression::Fast,
            CompressArg::Normal => Compression::Normal,
            CompressArg::High => Compression::High,
        }),
        luks_passphrases: super::prompt::luks_passphrases(&o.luks_key_file)?,
    };
    let mut plan = chain::plan_point(&req, password.as_deref()).with_context(|| format!("planning the {} backup from {}", kind.name(), o.image.display()))?;
    plan.read_all = o.read_all;
    if o.dry_run {
        return if g.json { print_json(&plan) } else { print!("{}", point_plan_text(&plan)); Ok(()) };
    }
    if !g.json {
        eprint!("{}", point_plan_text(&plan));
    }
    let t = task(g.json);
    let res = chain::run_point(&plan, password.as_deref(), o.threads, o.comment.clone(), o.resume, &t).with_context(|| format!("writing {}", plan.output.display()))?;
    if o.verify {
        let r = ImageReader::open(&res.paths[0], password.as_deref()).context("opening the new point to verify it")?;
        imaging::check::check_reader(&r, true, &t).context("verifying the new point")?;
    }
    let image_bytes: u64 = res.paths.iter().filter_map(|p| imaging::store::len(p).ok()).sum();
    let chunks: u64 = res.catalog.regions.iter().map(|r| r.chunks - r.zero_chunks).sum();
    let base: u64 = res.catalog.regions.iter().map(|r| r.base_chunks).sum();
    let changed = chunks.saturating_sub(base);
    if g.json {
        return print_json(&serde_json::json!({
            "ok": true,
            "kind": kind,
            "volumes": res.paths,
            "image_bytes": image_bytes,
            "data_bytes": res.catalog.used_bytes(),
            "changed_chunks": changed,
            "unchanged_chunks": base,
            "seconds": res.seconds,
            "resumed_from": res.resumed_from,
            "verified": o.verify,
            "catalog": res.catalog,
        }));
    }
    // What the run found out (which data it did not need to read).
    for n in res.catalog.notes.iter().filter(|n| !plan.backup.notes.contains(n)) {
        eprintln!("  {n}");
    }
    if let Some(at) = res.resumed_from {
        println!("Resumed: the first {} were on the share already", imaging::blockdev::human_size(at));
    }
    println!(
        "{} point #{} complete: {} ({}), {} of {} chunks changed{}, {:.1} s{}",
        match kind {
            PointKind::Full => "Full",
            PointKind::Incremental => "Incremental",
            PointKind::Differential => "Differential",
        },
        plan.chain.sequence,
        res.paths[0].display(),
        hs(image_bytes),
        changed,
        chunks,
        if kind == PointKind::Full { " (stored in full)" } else { "" },
        res.seconds,
        if o.verify { "; verified" } else { "" }
    );
    Ok(())
}

fn status_text(p: &PointSummary) -> String {
    match p.status {
        PointStatus::Ok => "ok".into(),
        PointStatus::Locked => "encrypted: password needed".into(),
        PointStatus::Broken => format!("BROKEN: {}", p.problem.as_deref().unwrap_or("unreadable")),
    }
}

/// The chains as trees, one per task.
pub fn points_text(points: &[PointSummary]) -> String {
    let mut s = String::new();
    let mut tasks: Vec<&str> = Vec::new();
    for p in points {
        if !tasks.contains(&p.task_id.as_str()) {
            tasks.push(&p.task_id);
        }
    }
    for t in tasks {
        let ps: Vec<&PointSummary> = points.iter().filter(|p| p.task_id == t).collect();
        let total: u64 = ps.iter().map(|p| p.bytes).sum();
        let name = ps.first().map(|p| p.task_name.as_str()).unwrap_or("");
        s.push_str(&format!("Task {name}: {} point{}, {}\n", ps.len(), if ps.len() == 1 { "" } else { "s" }, hs(total)));
        let mut children: HashMap<Option<&str>, Vec<&PointSummary>> = HashMap::new();
        let ids: Vec<&str> = ps.iter().map(|p| p.image_id.as_str()).collect();
        for p in &ps {
            // A point whose parent is not here hangs at the top (and is broken).
            let parent = p.parent.as_deref().filter(|x| ids.contains(x));
            children.entry(parent).or_default().push(p);
        }
        fn walk(s: &mut String, children: &HashMap<Option<&str>, Vec<&PointSummary>>, at: Option<&str>, prefix: &str) {
            let Some(list) = children.get(&at) else { return };
            for (i, p) in list.iter().enumerate() {
                let last = i + 1 == list.len();
                let (branch, cont) = if at.is_none() { ("", "") } else if last { ("└─ ", "   ") } else { ("├─ ", "│  ") };
                s.push_str(&format!(
                    "{prefix}{branch}#{:<3} {:<12} {}  {:>10}  {}  {}{}\n",
                    p.sequence,
                    p.kind.map(|k| k.name()).unwrap_or("?"),
                    if p.created > 0 { show::utc(p.created) } else { "?".into() },
                    hs(p.bytes),
                    p.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                    status_text(p),
                    p.comment.as_ref().map(|c| format!("  \"{c}\"")).unwrap_or_default()
                ));
                walk(s, children, Some(&p.image_id), &format!("{prefix}{cont}"));
            }
        }
        walk(&mut s, &children, None, "  ");
    }
    if points.is_empty() {
        s.push_str("No images found.\n");
    }
    s
}

pub fn points(g: &Global, a: PointsArgs) -> Result<(), CliError> {
    let password = if imaging::store::is_dir(&a.path) { password_for_dir(&a.path, a.password_file.as_deref())? } else { password_for(&a.path, a.password_file.as_deref())? };
    let t = task(g.json);
    let list = chain::discover(&a.path, password.as_deref(), a.verify, &t).with_context(|| format!("reading the images in {}", a.path.display()))?;
    let broken = list.iter().filter(|p| p.status == PointStatus::Broken).count();
    if g.json {
        print_json(&list)?;
    } else {
        print!("{}", points_text(&list));
    }
    if broken > 0 {
        return Err(anyhow::Error::from(ImageError::Incomplete { what: format!("{broken} point(s) cannot be restored (see above)") }).into());
    }
    Ok(())
}

pub fn merge(g: &Global, a: MergeArgs) -> Result<(), CliError> {
    let password = password_for(&a.point, a.password_file.as_deref())?;
    let t = task(g.json);
    let out = chain::merge(&a.point, &a.output, password.as_deref(), a.threads, a.delete_merged, &t).with_context(|| format!("merging {}", a.point.display()))?;
    if g.json {
        return print_json(&out);
    }
    for (p, why) in &out.kept {
        eprintln!("kept {}: {why}", p.display());
    }
    for p in &out.deleted {
        eprintln!("deleted {}", p.display());
    }
    println!(
        "Merge complete: {} ({}) holds the state of {} ({} file{} folded), verified, {:.1} s",
        out.paths[0].display(),
        hs(out.paths.iter().filter_map(|p| imaging::store::len(p).ok()).sum()),
        a.point.display(),
        out.merged.len(),
        if out.merged.len() == 1 { "" } else { "s" },
        out.seconds
    );
    Ok(())
}

pub fn prune_text(p: &chain::PrunePlan) -> String {
    let mut s = String::new();
    for t in &p.tasks {
        s.push_str(&format!(
            "Task {} ({}): keep {} point(s), delete {} ({} freed)\n",
            t.task_name,
            t.plan.scheme,
            t.plan.keep.len(),
            t.plan.delete.len(),
            hs(t.plan.freed_bytes)
        ));
        for pt in &t.points {
            let del = t.plan.delete.contains(&pt.image_id);
            s.push_str(&format!(
                "  {} #{:<3} {:<12} {}  {:>10}  {}: {}\n",
                if del { "DELETE" } else { "keep  " },
                pt.sequence,
                pt.kind.map(|k| k.name()).unwrap_or("?"),
                show::utc(pt.created),
                hs(pt.bytes),
                pt.path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
                t.plan.reason(&pt.image_id).unwrap_or("")
            ));
        }
        for n in &t.plan.notes {
            s.push_str(&format!("  note: {n}\n"));
        }
    }
    if p.tasks.is_empty() {
        s.push_str("No backup points found.\n");
    }
    s
}

pub fn prune(g: &Global, a: PruneArgs) -> Result<(), CliError> {
    let scheme: imaging::retention::Scheme = a.scheme.parse().map_err(|e: imaging::retention::SchemeError| usage(e.to_string(), e.hint()))?;
    let password = password_for_dir(&a.dir, a.password_file.as_deref())?;
    let t = task(g.json);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0);
    let plan = chain::plan_prune(&a.dir, &scheme, password.as_deref(), now, &t).with_context(|| format!("planning the prune of {}", a.dir.display()))?;
    if a.dry_run {
        return if g.json { print_json(&plan) } else { print!("{}", prune_text(&plan)); Ok(()) };
    }
    let n = plan.files().count();
    if !g.json {
        eprint!("{}", prune_text(&plan));
    }
    if n == 0 {
        if g.json {
            return print_json(&serde_json::json!({"ok": true, "deleted": [], "plan": plan}));
        }
        println!("Nothing to delete.");
        return Ok(());
    }
    prompt::confirm(g.yes, &format!("This deletes {n} file(s) in {}.", a.dir.display()), "prune")?;
    let deleted = chain::run_prune(&plan, password.as_deref(), &t).context("deleting pruned points")?;
    if g.json {
        return print_json(&serde_json::json!({"ok": true, "deleted": deleted, "plan": plan}));
    }
    println!("Prune complete: {} file(s) deleted", deleted.len());
    Ok(())
}
