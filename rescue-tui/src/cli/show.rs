//! Human-readable renderings of reports and plans (stdout).

use imaging::backup::BackupPlan;
use imaging::blockdev::human_size as hs;
use imaging::exec::WritePlan;
use imaging::image::format::{Catalog, CopyMode, RegionKind};
use imaging::inventory::DiskReport;
use imaging::part::PartitionTable;

/// UTC date and time of a Unix timestamp (no time-zone database in the initramfs).
pub fn utc(ts: u64) -> String {
    let (y, m, d, h, min, s) = imaging::civil::utc_parts(ts);
    format!("{y:04}-{m:02}-{d:02} {h:02}:{min:02}:{s:02} UTC")
}

pub fn table(t: &PartitionTable, out: &mut String, indent: &str) {
    out.push_str(&format!(
        "{indent}{} partition table, {}-byte sectors, disk id {}\n",
        match t.kind {
            imaging::part::TableKind::Gpt => "GPT",
            imaging::part::TableKind::Mbr => "MBR",
        },
        t.sector_size,
        t.disk_id
    ));
    for p in &t.partitions {
        out.push_str(&format!(
            "{indent}  {:>3}  start {:>12}  size {:>10}  {}{}{}\n",
            p.number,
            p.start,
            hs(p.len),
            p.ptype.describe(),
            if p.name.is_empty() { String::new() } else { format!(" \"{}\"", p.name) },
            if p.logical { " (logical)" } else { "" }
        ));
    }
    for w in &t.warnings {
        out.push_str(&format!("{indent}  warning: {w}\n"));
    }
}

pub fn disk(r: &DiskReport) -> String {
    let d = &r.disk;
    let mut s = format!("{}  {}", d.path.display(), hs(d.size));
    for (k, v) in [("model", &d.model), ("serial", &d.serial), ("transport", &d.transport)] {
        if let Some(v) = v {
            s.push_str(&format!("  {k} {v}"));
        }
    }
    s.push_str(&format!("  sectors {}/{}", d.logical_sector_size, d.physical_sector_size));
    if d.rotational == Some(true) {
        s.push_str("  rotational");
    }
    if d.removable {
        s.push_str("  removable");
    }
    s.push('\n');
    if let Some(t) = &r.table {
        s.push_str(&format!(
            "  {} table, disk id {}\n",
            match t.kind {
                imaging::part::TableKind::Gpt => "GPT",
                imaging::part::TableKind::Mbr => "MBR",
            },
            t.disk_id
        ));
        for w in &t.warnings {
            s.push_str(&format!("  warning: {w}\n"));
        }
    } else if let Some(e) = &r.table_error {
        s.push_str(&format!("  partition table unreadable: {e}\n"));
    } else if let Some(f) = &r.whole_disk_fs {
        s.push_str(&format!("  no partition table; {} on the whole disk\n", f.kind.name()));
    } else {
        s.push_str("  no partition table\n");
    }
    for p in &r.partitions {
        let fs = match (&p.fs, &p.fs_error) {
            (Some(f), _) => {
                let mut x = f.kind.name().to_string();
                if let Some(l) = &f.label {
                    x.push_str(&format!(" \"{l}\""));
                }
                if let Some(u) = f.used {
                    x.push_str(&format!(", {} used", hs(u)));
                }
                x
            }
            (None, Some(e)) => format!("unreadable filesystem: {e}"),
            (None, None) => "-".into(),
        };
        s.push_str(&format!(
            "  {:>3}  {:>10}  start {:>12}  {:<28} {}{}{}\n",
            p.partition.number,
            hs(p.partition.len),
            p.partition.start,
            p.type_name,
            fs,
            if p.partition.name.is_empty() { String::new() } else { format!("  [{}]", p.partition.name) },
            if p.busy.is_empty() { String::new() } else { format!("  BUSY: {}", p.busy.join(", ")) }
        ));
    }
    if !r.busy.is_empty() && r.partitions.iter().all(|p| p.busy.is_empty()) {
        s.push_str(&format!("  BUSY: {}\n", r.busy.join("; ")));
    }
    s
}

fn mode(m: CopyMode) -> &'static str {
    match m {
        CopyMode::Used => "used blocks",
        CopyMode::Full => "every sector",
        CopyMode::HeaderOnly => "header only",
    }
}

pub fn backup_plan(p: &BackupPlan) -> String {
    let mut s = format!("Backup of {} ({:?})\n", p.source.describe(), p.kind);
    for w in &p.selection {
        s.push_str(&format!("  {w}\n"));
    }
    for r in &p.regions {
        let what = imaging::layout::label(r.kind, r.partition, r.disk_offset);
        let fs = r.fs.as_ref().map(|f| f.kind.name().to_string()).unwrap_or_default();
        s.push_str(&format!(
            "  {:<34} {:>10}  {:<6} {} ({} to read){}\n",
            what,
            hs(r.len),
            fs,
            mode(r.mode),
            hs(r.bytes),
            r.mode_reason.as_ref().filter(|_| r.kind == RegionKind::Partition || r.kind == RegionKind::Disk).map(|x| format!(": {x}")).unwrap_or_default()
        ));
    }
    for n in &p.notes {
        s.push_str(&format!("  note: {n}\n"));
    }
    s.push_str(&format!("  total to read: {}\n", hs(p.bytes())));
    s
}

pub fn write_plan(p: &WritePlan) -> String {
    let mut s = String::new();
    s.push_str(&format!("{} of {}\n", if p.operation == "clone" { "Clone" } else { "Restore" }, p.source));
    if p.whole_disk {
        s.push_str(&format!("  TARGET (everything on it is overwritten): {}\n", p.target.describe()));
    } else {
        s.push_str(&format!("  TARGET: {}\n", p.target.describe()));
    }
    if let Some(t) = &p.table_before {
        s.push_str("  before:\n");
        table(t, &mut s, "    ");
    }
    if let (Some(t), true) = (&p.layout.table_after, p.layout.writes_table) {
        s.push_str("  after:\n");
        table(t, &mut s, "    ");
    }
    s.push_str("  writes:\n");
    for m in &p.layout.moves {
        s.push_str(&format!(
            "    {:<40} {:>10} at byte {:>13}{}\n",
            m.label,
            hs(m.len),
            m.target_offset,
            if m.target_offset != m.source_offset { format!(" (was {})", m.source_offset) } else { String::new() }
        ));
    }
    if p.layout.writes_table {
        s.push_str("    partition table                           written last\n");
    }
    for g in &p.layout.grows {
        s.push_str(&format!("  partition {} ({}): {} -> {}: {}\n", g.partition, g.fs, hs(g.from), hs(g.to), g.action));
    }
    for w in &p.layout.warnings {
        s.push_str(&format!("  note: {w}\n"));
    }
    if p.only_changed {
        s.push_str(&format!("  changed-block mode: the target is read and compared; of up to {} only what differs is written\n", hs(p.bytes)));
    } else {
        s.push_str(&format!("  data to write: {}\n", hs(p.bytes)));
    }
    s
}

pub fn catalog(c: &Catalog, volumes: &[std::path::PathBuf], image_bytes: u64) -> String {
    let mut s = String::new();
    s.push_str(&format!("Image {}\n", volumes.first().map(|p| p.display().to_string()).unwrap_or_default()));
    if volumes.len() > 1 {
        s.push_str(&format!("  volumes: {} ({} ... {})\n", volumes.len(), volumes[0].display(), volumes[volumes.len() - 1].display()));
    }
    s.push_str(&format!("  kind: {:?} backup, created {}, by {}\n", c.kind, utc(c.created), c.tool));
    if let Some(cm) = &c.comment {
        s.push_str(&format!("  comment: {cm}\n"));
    }
    let src = &c.source;
    s.push_str(&format!(
        "  source: {}{}{}, {}, {}-byte sectors\n",
        src.path,
        src.model.as_ref().map(|m| format!(" {m}")).unwrap_or_default(),
        src.serial.as_ref().map(|m| format!(" (serial {m})")).unwrap_or_default(),
        hs(src.size),
        src.logical_sector_size
    ));
    s.push_str(&format!(
        "  options: compression {:?}, {}, {}, chunk {}{}\n",
        c.options.compression,
        if c.options.encrypted { "encrypted (AES-256-GCM)" } else { "not encrypted" },
        if c.options.sector_by_sector { "sector by sector" } else { "used blocks" },
        hs(u64::from(c.options.chunk_size)),
        c.options.split_size.map(|x| format!(", split at {}", hs(x))).unwrap_or_default()
    ));
    s.push_str(&format!("  size: {} of data in {} of image\n", hs(c.used_bytes()), hs(image_bytes)));
    if let Some(t) = &c.table {
        table(t, &mut s, "  ");
    }
    s.push_str("  stored:\n");
    for r in &c.regions {
        let fs = r
            .fs
            .as_ref()
            .map(|f| format!("{}{}", f.kind.name(), f.label.as_ref().map(|l| format!(" \"{l}\"")).unwrap_or_default()))
            .unwrap_or_default();
        s.push_str(&format!(
            "    {:<32} {:>10}  {:<18} {:<12} data {:>10}  stored {:>10}\n",
            imaging::layout::label(r.kind, r.partition, r.disk_offset),
            hs(r.len),
            fs,
            mode(r.mode),
            hs(r.used_bytes),
            hs(r.stored_bytes)
        ));
    }
    for w in &c.selection {
        s.push_str(&format!("  {w}\n"));
    }
    for n in &c.notes {
        s.push_str(&format!("  note: {n}\n"));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn utc_dates() {
        assert_eq!(super::utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(super::utc(1_795_000_000), "2026-11-18 11:06:40 UTC");
        assert_eq!(super::utc(951_782_400), "2000-02-29 00:00:00 UTC");
    }
}
