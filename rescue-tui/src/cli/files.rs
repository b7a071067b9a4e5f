//! `rescue ls` and `rescue extract`: files read straight out of a partition
//! of an image (any point of a chain, split, encrypted, or over http),
//! without restoring or mounting it.

use std::fs::{File, FileTimes, OpenOptions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use imaging::files::{self, Entry, FileSystem, Kind};
use imaging::image::view::RegionView;
use imaging::image::{ImageError, ImageReader, Region};
use imaging::store::{self, PathKind, Store};

use super::{image, print_json, show, usage, CliError, Exit, ExtractArgs, FilesCopyArgs, FilesLsArgs, Global, LsArgs};

pub(super) fn partition(r: &ImageReader, n: u32) -> Result<&Region, CliError> {
    r.catalog().partition_region(n).ok_or_else(|| {
        let have: Vec<String> = r.catalog().regions.iter().filter_map(|x| x.partition).map(|p| p.to_string()).collect();
        usage(
            format!("the image holds no partition {n}"),
            format!("its partitions: {} (see `rescue info`)", if have.is_empty() { "none".to_string() } else { have.join(", ") }),
        )
    })
}

fn open_fs<'v>(view: &'v RegionView<'_>, part: u32) -> Result<FileSystem<'v>, CliError> {
    Ok(FileSystem::open(view, view.len()).with_context(|| format!("opening the filesystem of partition {part}"))?)
}

pub fn ls(g: &Global, a: LsArgs) -> Result<(), CliError> {
    let r = image::open(&a.image)?;
    let region = partition(&r, a.part)?;
    let view = RegionView::new(&r, region);
    let fs = open_fs(&view, a.part)?;
    listing(g, &fs, &a.path, &format!("partition {}", a.part))
}

/// `rescue files ls DISK[:N] [PATH]`: the same listing, off a disk.
pub fn disk_ls(g: &Global, a: FilesLsArgs) -> Result<(), CliError> {
    let (src, what) = open_disk(&a.source)?;
    let fs = FileSystem::open(src.reader(), src.len()).with_context(|| format!("opening the filesystem of {what}"))?;
    listing(g, &fs, &a.path, &what)
}

fn listing(g: &Global, fs: &FileSystem<'_>, path: &str, what: &str) -> Result<(), CliError> {
    let e = fs.lookup(path).with_context(|| format!("looking up {path} in {what}"))?;
    let mut list = if e.kind == Kind::Dir { fs.list(&e).with_context(|| format!("listing {path} in {what}"))? } else { vec![e] };
    list.sort_by(|x, y| x.name.cmp(&y.name));
    if g.json {
        return print_json(&list);
    }
    // A closed pipe (`rescue ls ... | head`) ends the listing quietly.
    let mut out = std::io::stdout().lock();
    for e in &list {
        match writeln!(out, "{}", line(e)) {
            Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(()),
            r => r.context("writing the listing")?,
        }
    }
    Ok(())
}

/// Open `DISK:N` (or a whole `DISK`) read-only, warning when it is in use.
fn open_disk(source: &str) -> Result<(files::DiskPartition, String), CliError> {
    let (disk, n) = super::split_disk_part(source);
    let n = match n {
        None => None,
        Some(n) => Some(n.parse::<u32>().map_err(|_| usage(format!("{source}: one partition number is needed after the colon"), "e.g. /dev/sdb:2 (`rescue disks` shows the numbers)"))?),
    };
    let src = files::DiskPartition::open(&disk, n)?;
    let what = match n {
        Some(n) => format!("partition {n} of {}", disk.display()),
        None => disk.display().to_string(),
    };
    for r in &src.busy {
        eprintln!("warning: {r}: reading the device directly while it is in use can see half-written data; unmount it first, or copy from where it is mounted");
    }
    Ok((src, what))
}
/// One `ls -l`-style line: mode, size, mtime (UTC), name.
fn line(e: &Entry) -> String {
    let name = printable(&e.name);
    let name = match &e.target {
        Some(t) => format!("{name} -> {}", printable(t)),
        None => name,
    };
    let when = show::utc(u64::try_from(e.mtime).unwrap_or(0));
    format!("{:<10} {:>12}  {}  {name}", e.mode_string(), e.size, when.trim_end_matches(" UTC"))
}

/// Names come from the image: never send control characters to a terminal.
fn printable(s: &str) -> String {
    s.chars().map(|c| if c.is_control() { '?' } else { c }).collect()
}

pub fn extract(g: &Global, a: ExtractArgs) -> Result<(), CliError> {
    let r = image::open(&a.image)?;
    let region = partition(&r, a.part)?;
    let view = RegionView::new(&r, region);
    let fs = open_fs(&view, a.part)?;
    copy_out(g, &fs, &a.paths, &a.to, a.overwrite, a.skip_existing, "the image")
}

/// `rescue files copy DISK[:N] PATH... --to DIR`: files off a disk that no
/// longer boots, read directly (nothing mounted, nothing written to it).
pub fn disk_copy(g: &Global, a: FilesCopyArgs) -> Result<(), CliError> {
    let (src, what) = open_disk(&a.source)?;
    if !store::is_remote(&a.to) {
        src.check_destination(&a.to)?;
    }
    let fs = FileSystem::open(src.reader(), src.len()).with_context(|| format!("opening the filesystem of {what}"))?;
    copy_out(g, &fs, &a.paths, &a.to, a.overwrite, a.skip_existing, "the disk")
}

/// Copy `paths` of `fs` into the folder `to` (local, or on an SMB share);
/// failures are listed at the end and make the exit status non-zero, after
/// everything else was copied.
fn copy_out(g: &Global, fs: &FileSystem<'_>, paths: &[String], to: &Path, overwrite: bool, skip_existing: bool, source: &str) -> Result<(), CliError> {
    if store::is_remote(to) && !store::smb::is_smb_url(&to.to_string_lossy()) {
        return Err(usage(format!("{}: files can be written to a local folder or an SMB share only", to.display()), "give --to DIR or --to smb://USER@HOST/SHARE/PATH"));
    }
    store::create_dir_all(to).with_context(|| format!("making the folder {}", to.display()))?;
    let mut x = Extractor {
        fs,
        store: store::for_path(to),
        local: !store::is_remote(to),
        source,
        overwrite,
        skip_existing,
        files: 0,
        dirs: 0,
        bytes: 0,
        skipped: Vec::new(),
        failed: Vec::new(),
        tmp_seq: 0,
        acl: fs.name() == "ntfs" && !store::is_remote(to) && cfg!(unix),
        acls: 0,
        acl_failed: Vec::new(),
    };
    for p in paths {
        let src = format!("/{}", p.split('/').filter(|s| !s.is_empty() && *s != ".").collect::<Vec<_>>().join("/"));
        match fs.lookup(p) {
            // The root: its contents go straight into DIR.
            Ok(e) if src == "/" => x.contents(&e, "", to, &mut vec![e.id()]),
            Ok(e) => x.entry(&e, &src, to, &mut Vec::new()),
            Err(err) => x.failed.push((src, anyhow::Error::new(err))),
        }
    }
    for s in &x.skipped {
        eprintln!("skipped: {s}");
    }
    for s in &x.acl_failed {
        eprintln!("permissions not kept: {s}");
    }
    for (p, e) in &x.failed {
        eprintln!("not {}: {p}: {e:#}", if source == "the disk" { "copied" } else { "extracted" });
    }
    if g.json {
        let failed: Vec<_> = x.failed.iter().map(|(p, e)| serde_json::json!({"path": p, "error": format!("{e:#}")})).collect();
        print_json(&serde_json::json!({"files": x.files, "dirs": x.dirs, "bytes": x.bytes, "skipped": x.skipped, "failed": failed, "ntfs_permissions_kept": x.acls}))?;
    } else {
        println!(
            "{} {} file{} and {} folder{} ({}) to {}{}",
            if source == "the disk" { "Copied" } else { "Extracted" },
            x.files,
            if x.files == 1 { "" } else { "s" },
            x.dirs,
            if x.dirs == 1 { "" } else { "s" },
            imaging::blockdev::human_size(x.bytes),
            to.display(),
            if x.skipped.is_empty() { String::new() } else { format!("; {} skipped", x.skipped.len()) }
        );
        if x.acls > 0 {
            println!("NTFS permissions kept on {} of them", x.acls);
        }
    }
    if x.failed.is_empty() {
        return Ok(());
    }
    let damaged = x.failed.iter().any(|(_, e)| e.chain().any(|c| c.downcast_ref::<ImageError>().is_some_and(|i| i.is_verification_failure())));
    Err(CliError {
        exit: if damaged { Exit::Verification } else { Exit::Failed },
        error: anyhow!("{} of the paths could not be {} (listed above)", x.failed.len(), if source == "the disk" { "copied" } else { "extracted" }),
        hint: Some(if damaged {
            "the image is damaged: `rescue check` shows the first bad place; the other files were extracted".into()
        } else if source == "the disk" {
            "the other files were copied; for unreadable ones, make a sector copy first (`rescue backup disk --sector-by-sector`) and copy from the image, which retries nothing on the failing disk".into()
        } else {
            "see the reasons above; --overwrite replaces existing files, --skip-existing keeps them".into()
        }),
    })
}

struct Extractor<'a> {
    fs: &'a FileSystem<'a>,
    /// Where the copies go: local folders, or a share.
    store: &'static dyn Store,
    local: bool,
    /// "the image" or "the disk", for messages.
    source: &'a str,
    overwrite: bool,
    skip_existing: bool,
    files: u64,
    dirs: u64,
    bytes: u64,
    skipped: Vec<String>,
    failed: Vec<(String, anyhow::Error)>,
    tmp_seq: u64,
    /// Copy NTFS permissions (an NTFS source, a local target): switched off
    /// at the first refusal, which says the target is not NTFS.
    acl: bool,
    /// Files and folders whose permissions were kept.
    acls: u64,
    /// Permissions that could not be kept, on a target that keeps others.
    acl_failed: Vec<String>,
}

/// Where entry `name` of an image goes under `into`, or None when the name
/// could leave `into` (`..`, a path separator, empty): names come from an
/// untrusted image.
fn dest_path(into: &Path, name: &str) -> Option<PathBuf> {
    files::safe_name(name).then(|| store::join(into, name))
}

fn system_time(secs: i64, nsec: u32) -> SystemTime {
    let d = Duration::new(secs.unsigned_abs(), if secs >= 0 { nsec } else { 0 });
    if secs >= 0 {
        UNIX_EPOCH + d
    } else {
        UNIX_EPOCH - d
    }
}

fn mtime(e: &Entry) -> SystemTime {
    system_time(e.mtime, e.mtime_nsec)
}

fn atime(e: &Entry) -> Option<SystemTime> {
    e.atime.map(|a| system_time(a, 0))
}

fn times(e: &Entry) -> FileTimes {
    let t = FileTimes::new().set_modified(mtime(e));
    match atime(e) {
        Some(a) => t.set_accessed(a),
        None => t,
    }
}

impl Extractor<'_> {
    fn fail(&mut self, src: &str, e: anyhow::Error) {
        self.failed.push((src.to_string(), e));
    }

    fn entry(&mut self, e: &Entry, src: &str, into: &Path, stack: &mut Vec<u64>) {
        let Some(dest) = dest_path(into, &e.name) else {
            self.fail(src, anyhow!("the name {:?} would leave the target folder: not written", e.name));
            return;
        };
        match e.kind {
            Kind::Dir => self.dir(e, src, &dest, stack),
            Kind::File => match self.file(e, &dest) {
                Ok(true) => {
                    self.files += 1;
                    self.bytes += e.size;
                    self.security(e, src, &dest);
                }
                Ok(false) => self.skipped.push(format!("{src} (exists)")),
                Err(err) => self.fail(src, err),
            },
            Kind::Symlink => {
                if let Err(err) = self.symlink(e, src, &dest) {
                    self.fail(src, err);
                }
            }
            Kind::Other => self.skipped.push(format!("{src} (not a file, folder or symlink)")),
        }
    }

    fn dir(&mut self, e: &Entry, src: &str, dest: &Path, stack: &mut Vec<u64>) {
        if stack.len() >= files::MAX_DEPTH || stack.contains(&e.id()) {
            self.fail(src, anyhow!("the directory contains itself or lies deeper than {} levels (damaged filesystem)", files::MAX_DEPTH));
            return;
        }
        match self.store.kind(dest) {
            Ok(Some(PathKind::Dir)) => {}
            Ok(Some(_)) => {
                self.fail(src, anyhow!("{} exists and is not a folder", dest.display()));
                return;
            }
            Ok(None) => {
                if let Err(err) = self.store.create_dir(dest) {
                    self.fail(src, anyhow::Error::new(err).context(format!("making the folder {}", dest.display())));
                    return;
                }
            }
            Err(err) => {
                self.fail(src, anyhow::Error::new(err).context(format!("looking at {}", dest.display())));
                return;
            }
        }
        self.dirs += 1;
        stack.push(e.id());
        self.contents(e, src, dest, stack);
        stack.pop();
        // Times and mode last: writing into the folder changed its mtime,
        // and a read-only mode would have stopped those writes.
        let meta = if self.local { set_dir_meta(e, dest) } else { self.store.set_times(dest, mtime(e), atime(e)).with_context(|| format!("setting the times of {}", dest.display())) };
        if let Err(err) = meta {
            self.fail(src, err);
        }
        self.security(e, src, dest);
    }

    fn contents(&mut self, e: &Entry, src: &str, dest: &Path, stack: &mut Vec<u64>) {
        match self.fs.list(e) {
            Ok(list) => {
                for c in &list {
                    let child = format!("{src}/{}", c.name);
                    self.entry(c, &child, dest, stack);
                }
            }
            Err(err) => self.fail(if src.is_empty() { "/" } else { src }, anyhow::Error::new(err)),
        }
    }

    /// Keep the NTFS permissions of `e` on `dest` when the target is NTFS
    /// (ntfs-3g takes a security descriptor as `system.ntfs_acl`).
    fn security(&mut self, e: &Entry, src: &str, dest: &Path) {
        if !self.acl {
            return;
        }
        let sd = match self.fs.security(e) {
            Ok(Some(sd)) => sd,
            Ok(None) => return,
            Err(err) => {
                self.acl_failed.push(format!("{src}: {err}"));
                return;
            }
        };
        #[cfg(unix)]
        match xattr::set(dest, "system.ntfs_acl", &sd) {
            Ok(()) => self.acls += 1,
            // Not NTFS (through ntfs-3g): there is nothing to keep them in.
            Err(_) if self.acls == 0 && self.acl_failed.is_empty() => self.acl = false,
            Err(err) => self.acl_failed.push(format!("{src}: {err}")),
        }
        #[cfg(not(unix))]
        let _ = (sd, dest);
    }

    /// Whether `dest` may be written: Ok(false) to skip it.
    fn may_write(&self, dest: &Path) -> anyhow::Result<bool> {
        match self.store.kind(dest).with_context(|| format!("looking at {}", dest.display()))? {
            None => Ok(true),
            Some(_) if self.skip_existing => Ok(false),
            Some(PathKind::Dir) => bail!("{} exists and is a folder", dest.display()),
            Some(_) if self.overwrite => Ok(true),
            Some(_) => bail!("{} exists (--overwrite replaces it, --skip-existing keeps it)", dest.display()),
        }
    }

    /// Copy a file: into a temporary file beside `dest`, then moved into
    /// place (never over an existing file without --overwrite).
    fn file(&mut self, e: &Entry, dest: &Path) -> anyhow::Result<bool> {
        if !self.may_write(dest)? {
            return Ok(false);
        }
        if !self.local {
            return self.file_on_share(e, dest).map(|()| true);
        }
        let dir = dest.parent().ok_or_else(|| anyhow!("{} has no folder", dest.display()))?;
        self.tmp_seq += 1;
        let tmp = dir.join(format!(".rescue-extract-{}-{}.tmp", std::process::id(), self.tmp_seq));
        let f = OpenOptions::new().write(true).create_new(true).open(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let written = (|| -> anyhow::Result<()> {
            let mut w = BufWriter::with_capacity(1 << 20, &f);
            self.fs.read(e, &mut w).with_context(|| format!("reading it from {}", self.source))?;
            w.flush().with_context(|| format!("writing {}", tmp.display()))?;
            drop(w);
            set_file_meta(&f, e)
        })();
        drop(f);
        let placed = written.and_then(|()| {
            if self.overwrite {
                std::fs::rename(&tmp, dest).with_context(|| format!("moving the copy to {}", dest.display()))
            } else {
                // A hard link fails when the name exists; filesystems without
                // links (FAT, exFAT targets) get a checked rename.
                match std::fs::hard_link(&tmp, dest) {
                    Ok(()) => std::fs::remove_file(&tmp).with_context(|| format!("removing {}", tmp.display())),
                    Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => bail!("{} appeared while it was copied", dest.display()),
                    Err(_) if std::fs::symlink_metadata(dest).is_ok() => bail!("{} appeared while it was copied", dest.display()),
                    Err(_) => std::fs::rename(&tmp, dest).with_context(|| format!("moving the copy to {}", dest.display())),
                }
            }
        });
        if placed.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        placed.map(|()| true)
    }

    /// The same on a share: a `.tmp` file, its times set, then renamed.
    fn file_on_share(&mut self, e: &Entry, dest: &Path) -> anyhow::Result<()> {
        let dir = dest.parent().ok_or_else(|| anyhow!("{} has no folder", dest.display()))?;
        self.tmp_seq += 1;
        let tmp = store::join(dir, &format!(".rescue-extract-{}-{}.tmp", std::process::id(), self.tmp_seq));
        let w = self.store.create_new(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        let placed = (|| -> anyhow::Result<()> {
            // Whole WRITE requests, not one per small read.
            let mut buf = BufWriter::with_capacity(1 << 20, w);
            self.fs.read(e, &mut buf).with_context(|| format!("reading it from {}", self.source))?;
            buf.flush().with_context(|| format!("writing {}", tmp.display()))?;
            let w = buf.into_inner().map_err(|e| e.into_error()).with_context(|| format!("writing {}", tmp.display()))?;
            w.finish().with_context(|| format!("writing {}", tmp.display()))?;
            self.store.set_times(&tmp, mtime(e), atime(e)).with_context(|| format!("setting the times of {}", tmp.display()))?;
            if self.overwrite {
                self.store.rename_replace(&tmp, dest)
            } else {
                self.store.rename_noclobber(&tmp, dest)
            }
            .with_context(|| format!("moving the copy to {}", dest.display()))
        })();
        if placed.is_err() {
            let _ = self.store.remove(&tmp);
        }
        placed
    }

    fn symlink(&mut self, e: &Entry, src: &str, dest: &Path) -> anyhow::Result<()> {
        let target = e.target.as_deref().ok_or_else(|| anyhow!("the symlink has no target"))?;
        if !self.local {
            self.skipped.push(format!("{src} (a symlink to {}: shares take no symlinks)", printable(target)));
            return Ok(());
        }
        if !self.may_write(dest)? {
            self.skipped.push(format!("{src} (exists)"));
            return Ok(());
        }
        #[cfg(unix)]
        {
            if std::fs::symlink_metadata(dest).is_ok() {
                std::fs::remove_file(dest).with_context(|| format!("replacing {}", dest.display()))?;
            }
            // The link is created, never followed: extraction writes only
            // through folders it made itself.
            std::os::unix::fs::symlink(target, dest).with_context(|| format!("making the symlink {}", dest.display()))?;
            self.files += 1;
            Ok(())
        }
        #[cfg(not(unix))]
        {
            let _ = (target, dest);
            self.skipped.push(format!("{src} (a symlink: not made on this system)"));
            Ok(())
        }
    }
}

fn set_file_meta(f: &File, e: &Entry) -> anyhow::Result<()> {
    #[cfg(unix)]
    if let Some(m) = e.mode {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(m & 0o7777)).context("setting the mode")?;
    }
    f.set_times(times(e)).context("setting the times")
}

fn set_dir_meta(e: &Entry, dest: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        File::open(dest).and_then(|d| d.set_times(times(e))).with_context(|| format!("setting the times of {}", dest.display()))?;
        if let Some(m) = e.mode {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dest, std::fs::Permissions::from_mode(m & 0o7777)).with_context(|| format!("setting the mode of {}", dest.display()))?;
        }
    }
    #[cfg(not(unix))]
    let _ = (e, dest);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_never_leave_the_target() {
        let into = Path::new("/tmp/out");
        for bad in ["..", ".", "", "../etc", "a/../../b", "/etc/passwd", "x\\..\\y", "nul\0"] {
            assert_eq!(dest_path(into, bad), None, "{bad:?}");
        }
        assert_eq!(dest_path(into, "a..b"), Some(into.join("a..b")));
        assert_eq!(dest_path(into, "...").map(|p| p.starts_with(into)), Some(true));
    }

    /// A FAT image whose root holds a file named `../EVIL.TXT` (its 8.3
    /// entry patched): extraction refuses that one name, writes nothing
    /// outside the folder, and copies the rest.
    #[test]
    fn dot_dot_names_are_never_written_outside_the_folder() {
        let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("../imaging/tests/fixtures/fs/fat16.img.zst");
        let Some(out) = std::process::Command::new("zstd").arg("-dc").arg(&fixture).output().ok().filter(|o| o.status.success()) else {
            eprintln!("zstd not available: skipped");
            return;
        };
        let mut img = out.stdout;
        let at = img.windows(11).position(|w| w == b"SMALL   TXT").expect("fixture holds small.txt");
        img[at..at + 11].copy_from_slice(b"../EVIL TXT");
        img[at + 12] = 0; // no lowercase flags
        let fs = FileSystem::open(&img, img.len() as u64).expect("open fixture");
        let d = tempfile::tempdir().expect("tempdir");
        let into = d.path().join("a").join("b");
        std::fs::create_dir_all(&into).expect("dirs");
        let mut x = Extractor { acl: false, acls: 0, acl_failed: Vec::new(), fs: &fs, store: &store::LocalStore, local: true, source: "the image", overwrite: false, skip_existing: false, files: 0, dirs: 0, bytes: 0, skipped: Vec::new(), failed: Vec::new(), tmp_seq: 0 };
        let root = fs.root();
        x.contents(&root, "", &into, &mut vec![root.id()]);
        assert_eq!(x.failed.len(), 1, "{:?}", x.failed);
        assert!(x.failed[0].0.contains("../EVIL.TXT") && format!("{:#}", x.failed[0].1).contains("would leave"), "{:?}", x.failed);
        assert!(x.files >= 2, "the other files were not extracted");
        assert!(!d.path().join("a").join("EVIL.TXT").exists() && !d.path().join("EVIL.TXT").exists());
    }

    #[test]
    fn times_before_1970() {
        assert_eq!(system_time(-2, 0), UNIX_EPOCH - Duration::from_secs(2));
        assert_eq!(system_time(5, 7), UNIX_EPOCH + Duration::new(5, 7));
    }
}
