//! Backup chains: full, incremental and differential points of one task.
//!
//! Every point is a complete image file of its own (header, index, catalog,
//! footer). A point's index lists *every* chunk of its state; chunks that did
//! not change since its base are not stored again but point at a frame of an
//! older file of the chain (frame link, see [`crate::image::format`]). So a
//! point restores by reading its own index and exactly the frames that hold
//! its chunks, wherever they are: no replay of layers.
//!
//! - incremental: base = the previous point; depends on the base and
//!   everything the base depends on;
//! - differential: base = the chain's full; depends on the full only;
//! - full: stands alone, starts a new chain of the same task.
//!
//! Changes are found without change tracking: the source is read (used
//! blocks only, as for a full backup) and each chunk's hash compared with the
//! base's chunk at the same place; only changed chunks are compressed and
//! written.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::backup::{self, BackupOutcome, BackupPlan, BackupRequest, Selection};
use crate::blockdev::{self, DiskInfo, DiskKind};
use crate::error::Error;
use crate::image::format::{hex, BackupKind, Catalog, ChainInfo, ChainLink, CopyMode, PointKind, RegionKind};
use crate::image::volume::{self, Output};
use crate::image::{Compression, ImageError, ImageReader, ImageWriter, WriterOptions};
use crate::task::Task;

/// Base name of a task's files: the image's file name without volume number
/// and `.img`, and without a point suffix (`NAME.p002-incr`).
pub fn task_name_of(path: &Path) -> String {
    let mut n = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "backup".into());
    if let Some((b, num)) = n.rsplit_once('.') {
        if num.len() >= 3 && num.bytes().all(|c| c.is_ascii_digit()) {
            n = b.to_string();
        }
    }
    if let Some(b) = n.strip_suffix(".img") {
        n = b.to_string();
    }
    if let Some((b, p)) = n.rsplit_once(".p") {
        if p.len() > 4 && p.as_bytes()[..3].iter().all(u8::is_ascii_digit) && p.as_bytes()[3] == b'-' {
            n = b.to_string();
        }
    }
    if n.is_empty() {
        "backup".into()
    } else {
        n
    }
}

/// The chain information of an image; a stand-alone image is the full first
/// point of its own task.
pub fn chain_of(cat: &Catalog, path: &Path) -> ChainInfo {
    cat.chain.clone().unwrap_or_else(|| ChainInfo {
        task_id: cat.image_id.clone(),
        task_name: task_name_of(path),
        kind: PointKind::Full,
        sequence: 1,
        parent: None,
        links: Vec::new(),
    })
}

/// File name of a new point: `NAME.p003-incr.img`.
pub fn point_file_name(task_name: &str, sequence: u32, kind: PointKind) -> String {
    format!("{task_name}.p{sequence:03}-{}.img", kind.short())
}

/// How a point was checked by [`discover`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PointStatus {
    /// Every file it depends on is present and matches; with `verify`, every
    /// stored byte it uses checked out too.
    Ok,
    /// It or a file it depends on is missing, damaged or incomplete.
    Broken,
    /// Encrypted and no (or a wrong) password was given: only its existence is known.
    Locked,
}

/// One point found on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointSummary {
    /// First volume.
    pub path: PathBuf,
    pub volumes: Vec<PathBuf>,
    /// Bytes of its own files.
    pub bytes: u64,
    pub image_id: String,
    pub task_id: String,
    pub task_name: String,
    pub kind: Option<PointKind>,
    pub sequence: u32,
    pub created: u64,
    pub comment: Option<String>,
    pub backup_kind: Option<BackupKind>,
    pub source: Option<String>,
    pub parent: Option<String>,
    /// Image ids of the files it reads chunks from.
    pub depends_on: Vec<String>,
    pub encrypted: bool,
    /// Bytes of data the state of this point holds.
    pub data_bytes: u64,
    /// Chunks stored in this file / referenced in older files.
    pub new_chunks: u64,
    pub base_chunks: u64,
    pub status: PointStatus,
    pub problem: Option<String>,
}

/// Files in `dir` that are the first volume of an image.
fn image_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = crate::store::list(dir).map(|v| v.into_iter().filter(|p| {
        // Partial files of running or cut-off backups, and their journals.
        let n = p.to_string_lossy();
        !n.ends_with(".partial") && !n.contains(".partial.journal")
    }).collect()).unwrap_or_default();
    v.retain(|p| volume::volume_id(p).is_some_and(|(i, _)| i == 0));
    v.sort();
    v
}

/// Find the points in a folder (or the folder of an image; then only that
/// image's task), oldest first. `verify` also checks every stored byte each
/// intact point uses (the fast stored-hash pass).
pub fn discover(path: &Path, password: Option<&[u8]>, verify: bool, task: &Task) -> Result<Vec<PointSummary>, Error> {
    let (files, only) = if crate::store::is_dir(path) {
        (image_files(path), None)
    } else {
        let r = ImageReader::open_without_links(path, password).map_err(Error::from)?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        let chain = chain_of(r.catalog(), path);
        let files = if crate::store::for_path(path).can_list() {
            image_files(&dir)
        } else {
            // A web server cannot list its folder: the point and the files
            // it depends on, by their recorded names.
            std::iter::once(path.to_path_buf()).chain(chain.links.iter().map(|l| dir.join(&l.file))).collect()
        };
        (files, Some(chain.task_id))
    };
    let mut out = Vec::new();
    for f in files {
        let s = summarize(&f, password, verify, task)?;
        if only.as_ref().is_none_or(|t| *t == s.task_id) {
            out.push(s);
        }
    }
    out.sort_by(|a, b| (&a.task_id, a.sequence, a.created, &a.path).cmp(&(&b.task_id, b.sequence, b.created, &b.path)));
    Ok(out)
}

fn summarize(path: &Path, password: Option<&[u8]>, verify: bool, task: &Task) -> Result<PointSummary, Error> {
    let (vols, bytes) = match volume::VolumeSet::open(path) {
        Ok(v) => (v.paths(), v.stored_bytes()),
        Err(_) => (vec![path.to_path_buf()], crate::store::len(path).unwrap_or(0)),
    };
    let id = volume::volume_id(path).map(|(_, id)| hex(&id)).unwrap_or_default();
    let mut s = PointSummary {
        path: path.to_path_buf(),
        volumes: vols,
        bytes,
        image_id: id.clone(),
        task_id: id,
        task_name: task_name_of(path),
        kind: None,
        sequence: 0,
        created: 0,
        comment: None,
        backup_kind: None,
        source: None,
        parent: None,
        depends_on: Vec::new(),
        encrypted: false,
        data_bytes: 0,
        new_chunks: 0,
        base_chunks: 0,
        status: PointStatus::Broken,
        problem: None,
    };
    let r = match ImageReader::open_without_links(path, password) {
        Ok(r) => r,
        Err(e @ (ImageError::PasswordNeeded | ImageError::WrongPassword)) => {
            s.encrypted = true;
            s.status = PointStatus::Locked;
            s.problem = Some(e.to_string());
            return Ok(s);
        }
        Err(ImageError::Cancelled(c)) => return Err(Error::from(ImageError::Cancelled(c))),
        Err(e) => {
            s.problem = Some(e.to_string());
            return Ok(s);
        }
    };
    let cat = r.catalog();
    let c = chain_of(cat, path);
    s.task_id = c.task_id.clone();
    s.task_name = c.task_name.clone();
    s.kind = Some(c.kind);
    s.sequence = c.sequence;
    s.created = cat.created;
    s.comment = cat.comment.clone();
    s.backup_kind = Some(cat.kind);
    s.source = Some(cat.source.path.clone());
    s.parent = c.parent.clone();
    s.depends_on = c.links.iter().map(|l| l.image_id.clone()).collect();
    s.encrypted = cat.options.encrypted;
    s.data_bytes = cat.used_bytes();
    s.base_chunks = cat.regions.iter().map(|r| r.base_chunks).sum();
    s.new_chunks = cat.regions.iter().map(|r| r.chunks - r.zero_chunks - r.base_chunks.min(r.chunks - r.zero_chunks)).sum();
    match ImageReader::open(path, password) {
        Ok(full) => {
            s.status = PointStatus::Ok;
            if verify {
                let ids: Vec<u32> = full.catalog().regions.iter().map(|r| r.id).collect();
                if let Err(e) = full.verify_stored(&ids, task) {
                    if matches!(e, ImageError::Cancelled(_)) {
                        return Err(e.into());
                    }
                    s.status = PointStatus::Broken;
                    s.problem = Some(e.to_string());
                }
            }
        }
        Err(e) => s.problem = Some(e.to_string()),
    }
    Ok(s)
}

/// A planned new point: shown by --dry-run, then run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PointPlan {
    pub kind: PointKind,
    /// The image the point was asked for.
    pub from: PathBuf,
    /// The point whose chunks are compared (incremental: `from`; differential:
    /// the chain's full; full: none).
    pub base: Option<PathBuf>,
    pub output: PathBuf,
    pub chain: ChainInfo,
    pub compression: Compression,
    pub split: Option<u64>,
    pub encrypted: bool,
    pub backup: BackupPlan,
    pub notes: Vec<String>,
    /// Read and hash every used block, trusting no filesystem record (by
    /// default the data of files unchanged by their records is not read).
    #[serde(default)]
    pub read_all: bool,
}

/// Which disk holds the source of `cat` now. `given`: the user named it.
fn find_source(cat: &Catalog, given: Option<&Path>) -> Result<(PathBuf, Vec<String>), Error> {
    let mut notes = Vec::new();
    let src = &cat.source;
    let check = |p: &Path| -> Result<Option<String>, Error> {
        let info = blockdev::probe_disk(p, Some(src.logical_sector_size))?;
        same_disk(cat, &info, p)
    };
    if let Some(p) = given {
        let why = check(p)?.unwrap_or_else(|| "named with --source".into());
        notes.push(format!("source {}: {why}", p.display()));
        return Ok((p.to_path_buf(), notes));
    }
    let recorded = PathBuf::from(&src.path);
    let mut tried = Vec::new();
    if recorded.exists() {
        match check(&recorded) {
            Ok(Some(why)) => {
                notes.push(format!("source {}: {why}", recorded.display()));
                return Ok((recorded, notes));
            }
            Ok(None) => tried.push(format!("{}: nothing identifies it as the same disk", recorded.display())),
            Err(e) => tried.push(format!("{}: {e}", recorded.display())),
        }
    }
    // The disk may have another name now (another port, another boot).
    if src.serial.is_some() || src.wwn.is_some() {
        let mut hits = Vec::new();
        for d in blockdev::list_block_disks() {
            if d == recorded {
                continue;
            }
            if let Ok(Some(why)) = check(&d) {
                hits.push((d, why));
            }
        }
        if hits.len() == 1 {
            let (d, why) = hits.remove(0);
            notes.push(format!("source {} (was {}): {why}", d.display(), recorded.display()));
            return Ok((d, notes));
        }
        if hits.len() > 1 {
            return Err(Error::refused(
                format!("several disks look like the source of this chain: {}", hits.iter().map(|h| h.0.display().to_string()).collect::<Vec<_>>().join(", ")),
                "name the source disk with --source DISK",
            ));
        }
    }
    Err(Error::refused(
        format!("the source disk of this chain ({}) was not found{}", describe_source(cat), if tried.is_empty() { String::new() } else { format!(" ({})", tried.join("; ")) }),
        "attach the disk, or name it with --source DISK; to back up another disk start a new task with `rescue backup disk`",
    ))
}

fn describe_source(cat: &Catalog) -> String {
    let s = &cat.source;
    let mut d = s.path.clone();
    if let Some(m) = &s.model {
        d.push_str(&format!(" {m}"));
    }
    if let Some(sn) = &s.serial {
        d.push_str(&format!(" serial {sn}"));
    }
    d.push_str(&format!(", {}", blockdev::human_size(s.size)));
    d
}

/// Whether `info` is the disk `cat` was made from: refused when anything
/// stable differs; Some(why) when something stable matches; None when
/// nothing says either way.
fn same_disk(cat: &Catalog, info: &DiskInfo, path: &Path) -> Result<Option<String>, Error> {
    let src = &cat.source;
    let other = |what: String| {
        Err(Error::refused(
            format!("{} is not the source of this chain: {what}", path.display()),
            "back it up as a new task (`rescue backup disk|system|part ... -o NEW.img`), or name the right disk with --source",
        ))
    };
    if let (Some(a), Some(b)) = (&src.wwn, &info.wwn) {
        if a != b {
            return other(format!("its WWN is {b}, the chain's disk has {a}"));
        }
    }
    if let (Some(a), Some(b)) = (&src.serial, &info.serial) {
        if a != b {
            return other(format!("its serial is {b}, the chain's disk has {a}"));
        }
    }
    if info.size != src.size {
        return other(format!("it holds {} bytes, the chain's disk held {}", info.size, src.size));
    }
    if info.logical_sector_size != src.logical_sector_size {
        return other(format!("its sectors are {} bytes, the chain's were {}", info.logical_sector_size, src.logical_sector_size));
    }
    let table = {
        let dev = crate::blockdev::SourceDisk::open(path, Some(src.logical_sector_size))?;
        crate::inventory::read_table(&dev.file, &dev.info).ok().flatten()
    };
    match (&cat.table, &table) {
        (Some(a), Some(b)) if a.disk_id != b.disk_id => {
            return Err(Error::refused(
                format!("{}: its partition table has disk id {}, the chain's had {}: the disk was repartitioned or is another disk", path.display(), b.disk_id, a.disk_id),
                "start a new chain: `rescue backup full IMAGE` (or back it up as a new task)",
            ))
        }
        (Some(_), None) => {
            return Err(Error::refused(
                format!("{} has no readable partition table now; the chain's disk had one", path.display()),
                "check the disk (`rescue disks`); to keep a copy of it as it is, start a new task with --sector-by-sector",
            ))
        }
        (None, Some(_)) => {
            return Err(Error::refused(
                format!("{} has a partition table now; the chain's disk had none", path.display()),
                "start a new chain: `rescue backup full IMAGE`",
            ))
        }
        _ => {}
    }
    if src.wwn.is_some() && src.wwn == info.wwn {
        return Ok(Some(format!("same WWN {}", info.wwn.as_deref().unwrap_or(""))));
    }
    if src.serial.is_some() && src.serial == info.serial {
        return Ok(Some(format!("same serial {}", info.serial.as_deref().unwrap_or(""))));
    }
    if let (Some(a), Some(_)) = (&cat.table, &table) {
        return Ok(Some(format!("same partition-table disk id {} and size", a.disk_id)));
    }
    if Path::new(&src.path) == path && info.kind == DiskKind::File {
        return Ok(Some("same file and size".into()));
    }
    Ok(None)
}

/// Sequence number for a new point of `task_id` in `dir`.
fn next_sequence(dir: &Path, task_id: &str, password: Option<&[u8]>, at_least: u32) -> u32 {
    let mut max = at_least;
    for f in image_files(dir) {
        if let Ok(r) = ImageReader::open_without_links(&f, password) {
            let c = chain_of(r.catalog(), &f);
            if c.task_id == task_id {
                max = max.max(c.sequence);
            }
        }
    }
    max + 1
}

fn dir_of(path: &Path) -> PathBuf {
    match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Options of a new point.
#[derive(Debug, Clone, Default)]
pub struct PointRequest {
    /// An image of the task (for an incremental: the previous point).
    pub from: PathBuf,
    pub kind: Option<PointKind>,
    pub output: Option<PathBuf>,
    /// The source disk, when it cannot be found by its identity.
    pub source: Option<PathBuf>,
    /// Default: the task's setting.
    pub compression: Option<Compression>,
    /// Passphrases for the source's LUKS partitions (see
    /// [`BackupRequest::luks_passphrases`]).
    pub luks_passphrases: crate::luks::Passphrases,
}

/// Plan a new point of the task `req.from` belongs to (reads the chain and
/// the source, writes nothing).
pub fn plan_point(req: &PointRequest, password: Option<&[u8]>) -> Result<PointPlan, Error> {
    let kind = req.kind.unwrap_or(PointKind::Incremental);
    let from = ImageReader::open(&req.from, password).map_err(Error::from)?;
    let cat = from.catalog();
    let c = chain_of(cat, &req.from);
    let from_path = from.volumes().first().cloned().unwrap_or_else(|| req.from.clone());
    let base = match kind {
        PointKind::Full => None,
        PointKind::Incremental => Some(from_path.clone()),
        PointKind::Differential => {
            if c.kind == PointKind::Full {
                Some(from_path.clone())
            } else {
                let i = c.links.iter().position(|l| l.kind == PointKind::Full).ok_or_else(|| {
                    Error::refused(format!("{} names no full backup in its chain", req.from.display()), "make a full backup: `rescue backup full IMAGE`")
                })?;
                from.link_paths().get(i).cloned()
            }
        }
    };
    let (source, mut notes) = find_source(cat, req.source.as_deref())?;
    let selection = match cat.kind {
        BackupKind::Disk => Selection::Disk,
        BackupKind::System => Selection::System,
        BackupKind::Partitions => Selection::Partitions(cat.regions.iter().filter(|r| r.kind == RegionKind::Partition).filter_map(|r| r.partition).collect()),
    };
    let dir = dir_of(&from_path);
    let sequence = next_sequence(&dir, &c.task_id, password, c.sequence);
    let output = match &req.output {
        Some(o) => o.clone(),
        None => dir.join(point_file_name(&c.task_name, sequence, kind)),
    };
    let file_sector = (blockdev::probe_disk(&source, None).map(|d| d.kind == DiskKind::File).unwrap_or(false)).then_some(cat.source.logical_sector_size);
    let breq = BackupRequest {
        source: source.clone(),
        selection,
        sector_by_sector: cat.options.sector_by_sector,
        file_sector_size: file_sector,
        output: Some(output.clone()),
        luks_passphrases: req.luks_passphrases.clone(),
    };
    let bplan = backup::plan_backup(&breq)?;
    // What changed in the layout: each point records its own layout, so any
    // change is expressible; say what the comparison is based on.
    if let Some(b) = &base {
        let base_cat = if *b == from_path { cat.clone() } else { ImageReader::open_without_links(b, password).map_err(Error::from)?.catalog().clone() };
        for pr in &bplan.regions {
            let Some(n) = pr.partition else { continue };
            match base_cat.partition_region(n) {
                None => notes.push(format!("partition {n} is new since the base point: stored in full")),
                // An encrypted partition the base point stored by its used
                // sectors, now without its passphrase: every sector is new.
                Some(r) if r.mode == CopyMode::Used && pr.mode == CopyMode::Full && pr.mode_reason.as_deref().is_some_and(|m| m.starts_with("encrypted (LUKS)")) => notes.push(format!(
                    "partition {n} is encrypted (LUKS) and the base point stored only its used sectors: give its passphrase (--luks-key-file) as for that point, or every sector of it is stored again"
                )),
                Some(r) if r.disk_offset != pr.disk_offset || r.len != pr.len => notes.push(format!(
                    "partition {n} moved or changed size since the base point ({} at byte {} → {} at byte {}): compared by position inside the partition",
                    blockdev::human_size(r.len),
                    r.disk_offset,
                    blockdev::human_size(pr.len),
                    pr.disk_offset
                )),
                Some(_) => {}
            }
        }
        for r in base_cat.regions.iter().filter(|r| r.kind == RegionKind::Partition) {
            if !bplan.regions.iter().any(|p| p.partition == r.partition) {
                notes.push(format!("partition {} of the base point is gone from the source: the new point does not hold it", r.partition.unwrap_or(0)));
            }
        }
    }
    let chain = ChainInfo {
        task_id: c.task_id.clone(),
        task_name: c.task_name.clone(),
        kind,
        sequence,
        parent: None,
        links: Vec::new(),
    };
    Ok(PointPlan {
        kind,
        from: from_path,
        base,
        output,
        chain,
        compression: req.compression.unwrap_or(cat.options.compression),
        split: cat.options.split_size,
        encrypted: cat.options.encrypted,
        backup: bplan,
        notes,
        read_all: false,
    })
}

/// The link record of an open image.
pub fn link_of(r: &ImageReader, path: &Path) -> ChainLink {
    let c = chain_of(r.catalog(), path);
    ChainLink {
        image_id: r.catalog().image_id.clone(),
        file: path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default(),
        catalog_hash: hex(&r.footer().catalog_hash),
        kind: c.kind,
        sequence: c.sequence,
        created: r.catalog().created,
    }
}

/// Write the planned point. `password` is needed for an encrypted task (a
/// new full gets its own keys from it; other points share the base's).
/// With `resume`, go on with the same point cut off while written to a share.
pub fn run_point(plan: &PointPlan, password: Option<&[u8]>, threads: Option<usize>, comment: Option<String>, resume: bool, task: &Task) -> Result<BackupOutcome, Error> {
    if plan.encrypted && password.is_none() {
        return Err(ImageError::PasswordNeeded.into());
    }
    let base = match &plan.base {
        Some(b) => Some(ImageReader::open(b, password)?),
        None => None,
    };
    let mut chain = plan.chain.clone();
    if let (Some(b), Some(bp)) = (&base, &plan.base) {
        let bc = chain_of(b.catalog(), bp);
        if bc.task_id != chain.task_id {
            return Err(Error::refused(format!("{} belongs to another task", bp.display()), "keep each task's points in their own folder"));
        }
        chain.parent = Some(b.catalog().image_id.clone());
        chain.links = std::iter::once(link_of(b, bp)).chain(bc.links.iter().cloned()).collect();
    }
    let mut opts = WriterOptions {
        compression: plan.compression,
        password: if plan.encrypted { password.map(<[u8]>::to_vec) } else { None },
        split: plan.split,
        resume,
        ..Default::default()
    };
    if let Some(t) = threads {
        opts.threads = t.max(1);
    }
    let w = ImageWriter::create_point(Output::Path(plan.output.clone()), opts, base.as_ref())?;
    backup::run_backup_into(&plan.backup, w, base.as_ref(), !plan.read_all, Some(chain), comment, task)
}

/// What a merge did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergeOutcome {
    pub paths: Vec<PathBuf>,
    pub catalog: Catalog,
    pub seconds: f64,
    /// The files whose state the new image holds (the point and what it depended on).
    pub merged: Vec<PathBuf>,
    pub deleted: Vec<PathBuf>,
    /// Merged files kept because other points still depend on them.
    pub kept: Vec<(PathBuf, String)>,
}

/// Fold the chain up to `point` into one full image at `output`: the same
/// content as restoring the point, standing alone. The new image is checked
/// (every stored byte, every chunk decoded, and its index compared chunk by
/// chunk with the point's) before success is reported; only then, with
/// `delete_merged`, the merged files that no remaining point depends on are
/// deleted.
pub fn merge(point: &Path, output: &Path, password: Option<&[u8]>, threads: Option<usize>, delete_merged: bool, task: &Task) -> Result<MergeOutcome, Error> {
    let t0 = std::time::Instant::now();
    let reader = ImageReader::open(point, password)?;
    let point_path = reader.volumes().first().cloned().unwrap_or_else(|| point.to_path_buf());
    let cat = reader.catalog().clone();
    let c = chain_of(&cat, &point_path);
    let mut merged_files: Vec<PathBuf> = vec![point_path.clone()];
    merged_files.extend(reader.link_paths());
    if crate::store::exists(output) || crate::store::exists(&volume::split_name(output, 0)) {
        return Err(Error::refused(format!("{} exists", output.display()), "choose a new file name for the merged image"));
    }
    // Who else depends on the merged files (decided before writing anything).
    let dir = dir_of(&point_path);
    let mut merged_ids: Vec<String> = vec![cat.image_id.clone()];
    merged_ids.extend(c.links.iter().map(|l| l.image_id.clone()));
    let others = discover(&dir, password, false, task)?;
    let mut needed: HashMap<String, String> = HashMap::new();
    for o in others.iter().filter(|o| !merged_ids.contains(&o.image_id)) {
        for d in &o.depends_on {
            needed.entry(d.clone()).or_insert_with(|| format!("point #{} ({}) depends on it", o.sequence, o.path.display()));
        }
    }
    let opts = WriterOptions {
        compression: cat.options.compression,
        password: if cat.options.encrypted { password.map(<[u8]>::to_vec) } else { None },
        split: cat.options.split_size,
        threads: threads.unwrap_or_else(|| WriterOptions::default().threads).max(1),
        ..Default::default()
    };
    // Same keys as the chain (so chunk identities compare), but no links.
    let mut w = ImageWriter::create_point(Output::Path(output.to_path_buf()), opts, Some(&reader))?;
    for r in &cat.regions {
        task.check_cancelled()?;
        let src = crate::image::view::RegionView::new(&reader, r);
        let extents = src.extents()?;
        let mut region = r.clone();
        region.segments = Vec::new();
        region.base_chunks = 0;
        w.add_region(&src, region, &extents, task)?;
    }
    let sequence = next_sequence(&dir, &c.task_id, password, c.sequence);
    let mut new_cat = cat.clone();
    let seqs: Vec<String> = std::iter::once(c.sequence).chain(c.links.iter().map(|l| l.sequence)).map(|n| format!("#{n}")).collect();
    new_cat.notes.push(format!("merged from {} point(s) {} (state of point #{})", seqs.len(), seqs.join(", "), c.sequence));
    new_cat.chain = Some(ChainInfo { task_id: c.task_id.clone(), task_name: c.task_name.clone(), kind: PointKind::Full, sequence, parent: None, links: Vec::new() });
    let (paths, new_cat) = w.finish(new_cat)?;
    let verified = verify_merge(&reader, &paths[0], password, task);
    if let Err(e) = verified {
        for p in &paths {
            let _ = crate::store::remove(p);
        }
        return Err(match e {
            Error::Cancelled => Error::Cancelled,
            e => Error::Verify(format!("the merged image did not verify and was removed: {e}")),
        });
    }
    let mut deleted = Vec::new();
    let mut kept = Vec::new();
    if delete_merged {
        let ids_paths: Vec<(String, PathBuf)> = merged_ids.iter().cloned().zip(merged_files.iter().cloned()).collect();
        for (id, p) in ids_paths {
            if let Some(why) = needed.get(&id) {
                kept.push((p, why.clone()));
                continue;
            }
            let vols = volume::VolumeSet::open(&p).map(|v| v.paths()).unwrap_or_else(|_| vec![p.clone()]);
            for v in vols {
                crate::store::remove(&v).map_err(Error::io(format!("deleting merged file {}", v.display())))?;
                deleted.push(v);
            }
        }
    }
    Ok(MergeOutcome { paths, catalog: new_cat, seconds: t0.elapsed().as_secs_f64(), merged: merged_files, deleted, kept })
}

/// The merged image decodes completely and lists, chunk by chunk, the same
/// content as the point.
fn verify_merge(point: &ImageReader, merged: &Path, password: Option<&[u8]>, task: &Task) -> Result<(), Error> {
    let m = ImageReader::open(merged, password)?;
    crate::check::check_reader(&m, true, task)?;
    let (a, b) = (point.catalog(), m.catalog());
    if a.regions.len() != b.regions.len() {
        return Err(Error::Verify(format!("the point has {} regions, the merged image {}", a.regions.len(), b.regions.len())));
    }
    for (ra, rb) in a.regions.iter().zip(&b.regions) {
        let mut ea = Vec::new();
        for s in &ra.segments {
            ea.extend(point.segment(ra, s)?.entries.iter().map(|e| (e.chunk, e.is_zero(), if e.is_zero() { [0; 32] } else { e.hash })));
        }
        let mut eb = Vec::new();
        for s in &rb.segments {
            eb.extend(m.segment(rb, s)?.entries.iter().map(|e| (e.chunk, e.is_zero(), if e.is_zero() { [0; 32] } else { e.hash })));
        }
        if ea != eb || ra.len != rb.len || ra.disk_offset != rb.disk_offset {
            let at = ea.iter().zip(&eb).position(|(x, y)| x != y).unwrap_or(ea.len().min(eb.len()));
            return Err(Error::Verify(format!("region {} differs from the point at entry {at}", ra.id)));
        }
    }
    Ok(())
}

/// A planned prune of the points in a folder: one plan per task.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PrunePlan {
    pub dir: PathBuf,
    pub tasks: Vec<TaskPrune>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TaskPrune {
    pub task_name: String,
    pub task_id: String,
    pub plan: crate::retention::PrunePlan,
    /// Files of the points to delete.
    pub files: Vec<PathBuf>,
    /// image id → summary, for showing the plan.
    pub points: Vec<PointSummary>,
}

impl PrunePlan {
    pub fn files(&self) -> impl Iterator<Item = &PathBuf> {
        self.tasks.iter().flat_map(|t| t.files.iter())
    }
}

/// Plan which points of each task in `dir` the retention `scheme` deletes.
/// Refuses when a point is unreadable (broken, or locked without the
/// password): what depends on what would be a guess.
pub fn plan_prune(dir: &Path, scheme: &crate::retention::Scheme, password: Option<&[u8]>, now: i64, task: &Task) -> Result<PrunePlan, Error> {
    if !crate::store::is_dir(dir) {
        return Err(Error::refused(format!("{} is not a folder", dir.display()), "give the folder that holds the backup points"));
    }
    let points = discover(dir, password, false, task)?;
    if let Some(p) = points.iter().find(|p| p.status != PointStatus::Ok) {
        return Err(Error::refused(
            format!("{} cannot be read ({}): pruning would have to guess what depends on what", p.path.display(), p.problem.as_deref().unwrap_or("unknown problem")),
            if p.status == PointStatus::Locked { "give the password with --password-file or RESCUE_PASSWORD" } else { "see `rescue points DIR`; move broken points out of the folder first" },
        ));
    }
    let mut tasks: Vec<TaskPrune> = Vec::new();
    let mut ids: Vec<String> = points.iter().map(|p| p.task_id.clone()).collect();
    ids.dedup();
    for t in ids {
        let ps: Vec<PointSummary> = points.iter().filter(|p| p.task_id == t).cloned().collect();
        let metas: Vec<crate::retention::PointMeta> = ps
            .iter()
            .map(|p| crate::retention::PointMeta {
                id: p.image_id.clone(),
                kind: p.kind.unwrap_or(PointKind::Full),
                parent: p.parent.clone(),
                links: p.depends_on.clone(),
                created: p.created as i64,
                bytes: p.bytes,
            })
            .collect();
        let plan = crate::retention::plan(&metas, scheme, now)?;
        let files = ps.iter().filter(|p| plan.delete.contains(&p.image_id)).flat_map(|p| p.volumes.iter().cloned()).collect();
        tasks.push(TaskPrune { task_name: ps.first().map(|p| p.task_name.clone()).unwrap_or_default(), task_id: t, plan, files, points: ps });
    }
    Ok(PrunePlan { dir: dir.to_path_buf(), tasks })
}

/// Delete the files a prune plan names; checks again, just before deleting,
/// that no point left in the folder depends on a deleted one.
pub fn run_prune(plan: &PrunePlan, password: Option<&[u8]>, task: &Task) -> Result<Vec<PathBuf>, Error> {
    let now = discover(&plan.dir, password, false, task)?;
    let doomed: HashSet<&str> = plan.tasks.iter().flat_map(|t| t.plan.delete.iter().map(String::as_str)).collect();
    for p in now.iter().filter(|p| !doomed.contains(p.image_id.as_str())) {
        if let Some(d) = p.depends_on.iter().find(|d| doomed.contains(d.as_str())) {
            return Err(Error::refused(
                format!("{} depends on a point the plan deletes ({d}): the folder changed since the plan", p.path.display()),
                "run the prune again",
            ));
        }
    }
    let mut deleted = Vec::new();
    for f in plan.files() {
        crate::store::remove(f).map_err(Error::io(format!("deleting {}", f.display())))?;
        deleted.push(f.clone());
    }
    Ok(deleted)
}

/// Points (by image id) that the points in `keep` need, themselves included.
pub fn closure(points: &[PointSummary], keep: &[String]) -> HashSet<String> {
    let by_id: HashMap<&str, &PointSummary> = points.iter().map(|p| (p.image_id.as_str(), p)).collect();
    let mut out = HashSet::new();
    for k in keep {
        out.insert(k.clone());
        if let Some(p) = by_id.get(k.as_str()) {
            out.extend(p.depends_on.iter().cloned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_names() {
        assert_eq!(task_name_of(Path::new("/x/sys.img")), "sys");
        assert_eq!(task_name_of(Path::new("/x/sys.img.001")), "sys");
        assert_eq!(task_name_of(Path::new("sys.p002-incr.img")), "sys");
        assert_eq!(task_name_of(Path::new("sys.p012-diff.img.003")), "sys");
        assert_eq!(task_name_of(Path::new("my.backup")), "my.backup");
        assert_eq!(task_name_of(Path::new("a.pxyz-b.img")), "a.pxyz-b");
        assert_eq!(point_file_name("sys", 3, PointKind::Incremental), "sys.p003-incr.img");
        assert_eq!(task_name_of(Path::new(&point_file_name("w7", 12, PointKind::Differential))), "w7");
    }
}
