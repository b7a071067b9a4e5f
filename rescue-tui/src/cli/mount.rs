//! `rescue mount` and `rescue umount`: a partition of any image (any point
//! of a chain, split, encrypted, on a share or a web server) shown read-only
//! through FUSE.
//!
//! Two views. By default the files themselves, read by our own ext/FAT/NTFS
//! readers, so nothing depends on the live system's kernel drivers (a rescue
//! kernel often lacks ntfs3 or vfat). With `--raw`, the partition as one
//! read-only file, `partN.img`, for the kernel's own drivers: `mount -o
//! ro,loop DIR/part3.img /mnt`.
//!
//! `rescue mount` starts a server process (the same binary with
//! `--foreground`) in its own process group, waits until the mount is live,
//! and returns; the server runs until `rescue umount DIR`. The mount needs
//! root or `fusermount3` (Debian `fuse3`).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context};
use fuser::{FileAttr, FileType, MountOption, ReplyAttr, ReplyData, ReplyDirectory, ReplyEntry, ReplyOpen, ReplyStatfs, Request};
use imaging::files::{Entry, FileMap, FileSystem, Kind};
use imaging::image::view::RegionView;
use imaging::image::{ImageError, ImageReader};
use imaging::read_at::ReadAt;

use super::{prompt, usage, CliError, Global, MountArgs, UmountArgs};

/// How long attributes and names stay cached in the kernel: the image
/// never changes under a mount.
const TTL: Duration = Duration::from_secs(3600);
/// How long `rescue mount` waits for the server to mount.
const START_TIMEOUT: Duration = Duration::from_secs(120);
const ROOT: u64 = 1;
const EIO: i32 = libc::EIO;

pub fn mount(_g: &Global, a: MountArgs) -> Result<(), CliError> {
    check_mountpoint(&a.dir)?;
    if a.foreground {
        return serve(&a);
    }
    // Open everything here first: a wrong password, partition or filesystem
    // is reported at once, and a prompted password goes to the server.
    let password = match ImageReader::open(&a.image.image, None) {
        Err(ImageError::PasswordNeeded) => Some(prompt::password(a.image.password_file.as_deref(), false)?),
        r => {
            r.with_context(|| format!("opening {}", a.image.image.display()))?;
            None
        }
    };
    {
        let r = ImageReader::open(&a.image.image, password.as_deref()).with_context(|| format!("opening {}", a.image.image.display()))?;
        let region = super::files::partition(&r, a.part)?;
        if !a.raw {
            let view = RegionView::new(&r, region);
            FileSystem::open(&view, view.len()).with_context(|| format!("opening the filesystem of partition {}", a.part))?;
        }
    }
    let dir = std::fs::canonicalize(&a.dir).with_context(|| format!("finding {}", a.dir.display()))?;
    let log = std::env::temp_dir().join(format!("rescue-mount-{}.log", std::process::id()));
    let log_file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
    let exe = std::env::current_exe().context("finding the rescue binary")?;
    let mut cmd = Command::new(exe);
    cmd.env("RESCUE_MOUNT_LOG", &log);
    cmd.arg("mount").arg("--foreground").arg(&a.image.image).arg("--part").arg(a.part.to_string()).arg(&dir);
    if a.raw {
        cmd.arg("--raw");
    }
    if let Some(f) = &a.image.password_file {
        cmd.arg("--password-file").arg(std::fs::canonicalize(f).unwrap_or_else(|_| f.clone()));
    } else if let Some(p) = &password {
        // Only this process's children see it (as with RESCUE_PASSWORD).
        cmd.env("RESCUE_PASSWORD", String::from_utf8_lossy(p).into_owned());
    }
    let mut child = std::os::unix::process::CommandExt::process_group(&mut cmd, 0)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .context("starting the mount server")?;
    let start = Instant::now();
    loop {
        if is_mountpoint(&dir) {
            break;
        }
        if let Some(status) = child.try_wait().context("waiting for the mount server")? {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            let _ = status;
            return Err(anyhow!("the mount server stopped: {}", text.trim()).into());
        }
        if start.elapsed() > START_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            let _ = std::fs::remove_file(&log);
            return Err(anyhow!("{} was not mounted within {} s: {}", dir.display(), START_TIMEOUT.as_secs(), text.trim()).into());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let what = if a.raw { format!("as {}", dir.join(format!("part{}.img", a.part)).display()) } else { format!("at {}", dir.display()) };
    println!("Partition {} of {} is mounted read-only {what} (server pid {}, log {}).", a.part, a.image.image.display(), child.id(), log.display());
    if a.raw {
        println!("Mount it with the kernel's driver: mount -o ro,loop {} /mnt", dir.join(format!("part{}.img", a.part)).display());
    }
    println!("When done: rescue umount {}", dir.display());
    Ok(())
}

pub fn umount(_g: &Global, a: UmountArgs) -> Result<(), CliError> {
    let dir = std::fs::canonicalize(&a.dir).with_context(|| format!("finding {}", a.dir.display()))?;
    if !is_mountpoint(&dir) {
        return Err(usage(format!("{} is not mounted", dir.display()), "`rescue mount` shows where it mounted; `grep rescue /proc/mounts` lists them"));
    }
    // fusermount3 works for the user who mounted; umount2(2) for root (the
    // live system has neither fusermount3 nor umount).
    let ok = Command::new("fusermount3").arg("-u").arg(&dir).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
        || imaging::mount::sys::unmount(&dir, false).is_ok();
    if !ok {
        return Err(CliError {
            exit: super::Exit::Failed,
            error: anyhow!("{} could not be unmounted", dir.display()),
            hint: Some("a program may still use it (`fuser -m DIR` shows which); close it and try again".into()),
        });
    }
    // The server ends when the kernel lets go of the mount: wait for that,
    // so a script that unmounts and then removes the image finds it free.
    let servers = servers_of(&dir);
    let start = Instant::now();
    while (is_mountpoint(&dir) || servers.iter().any(|p| running(*p))) && start.elapsed() < Duration::from_secs(10) {
        std::thread::sleep(Duration::from_millis(20));
    }
    println!("Unmounted {}", dir.display());
    Ok(())
}

/// The server processes (`rescue mount --foreground ... DIR`) serving `dir`.
fn servers_of(dir: &Path) -> Vec<u32> {
    let want = dir.as_os_str().as_encoded_bytes();
    let Ok(procs) = std::fs::read_dir("/proc") else { return Vec::new() };
    procs
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).filter(|a| !a.is_empty()).collect();
            args.get(1) == Some(&&b"mount"[..]) && args.get(2) == Some(&&b"--foreground"[..]) && args.contains(&want)
        })
        .collect()
}

/// Whether a process is still alive (a zombie has no command line).
fn running(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| !c.is_empty())
}

/// The mount point must be an existing, empty folder that is not mounted.
fn check_mountpoint(dir: &Path) -> Result<(), CliError> {
    let meta = std::fs::metadata(dir).map_err(|e| usage(format!("{}: {e}", dir.display()), "make the folder first (mkdir)"))?;
    if !meta.is_dir() {
        return Err(usage(format!("{} is not a folder", dir.display()), "give an empty folder to mount on"));
    }
    if is_mountpoint(&std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf())) {
        return Err(usage(format!("{} is already a mount point", dir.display()), "`rescue umount DIR` first, or use another folder"));
    }
    if std::fs::read_dir(dir).map(|mut d| d.next().is_some()).unwrap_or(false) {
        return Err(usage(format!("{} is not empty", dir.display()), "mount on an empty folder (its files would be hidden)"));
    }
    Ok(())
}

/// Whether `dir` (canonical) is a mount point, per /proc/self/mountinfo.
fn is_mountpoint(dir: &Path) -> bool {
    let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") else { return false };
    let want = dir.to_string_lossy();
    text.lines().filter_map(|l| l.split(' ').nth(4)).any(|m| unescape(m) == want)
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c)) {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The server: open the image and serve the mount until it is unmounted.
fn serve(a: &MountArgs) -> Result<(), CliError> {
    let r = super::image::open(&a.image)?;
    let region = super::files::partition(&r, a.part)?;
    let view = RegionView::new(&r, region);
    let name = format!("rescue:{}", a.image.image.display());
    let mut opts = vec![MountOption::RO, MountOption::FSName(name), MountOption::Subtype("rescue".into()), MountOption::NoDev, MountOption::NoSuid];
    // Root's mount may be read by everyone (as a kernel mount would);
    // others need user_allow_other in /etc/fuse.conf for that.
    let root = std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0).unwrap_or(false);
    if root {
        opts.push(MountOption::AllowOther);
    }
    let result = if a.raw {
        fuser::mount2(RawFs { view: &view, name: OsString::from(format!("part{}.img", a.part)), created: SystemTime::now() }, &a.dir, &opts)
    } else {
        let fs = FileSystem::open(&view, view.len()).with_context(|| format!("opening the filesystem of partition {}", a.part))?;
        fuser::mount2(FilesFs::new(&fs), &a.dir, &opts)
    };
    result.with_context(|| format!("mounting on {}", a.dir.display()))?;
    // Unmounted cleanly: the log `rescue mount` made for us has served.
    if let Some(log) = std::env::var_os("RESCUE_MOUNT_LOG") {
        let _ = std::fs::remove_file(log);
    }
    Ok(())
}

fn system_time(secs: i64, nsec: u32) -> SystemTime {
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs.unsigned_abs(), nsec)
    } else {
        UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0)
    }
}

/// One known inode: its entry, and its children once listed.
struct Node {
    entry: Entry,
    parent: u64,
    children: Option<Vec<(OsString, u64)>>,
}

/// The files of a partition.
struct FilesFs<'a> {
    fs: &'a FileSystem<'a>,
    nodes: Vec<Node>,
    handles: HashMap<u64, FileMap>,
    next_fh: u64,
    case_insensitive: bool,
}

impl<'a> FilesFs<'a> {
    fn new(fs: &'a FileSystem<'a>) -> Self {
        let case_insensitive = !matches!(fs, FileSystem::Ext(_));
        FilesFs { fs, nodes: vec![Node { entry: fs.root(), parent: ROOT, children: None }], handles: HashMap::new(), next_fh: 1, case_insensitive }
    }

    fn node(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(usize::try_from(ino.checked_sub(1)?).ok()?)
    }

    /// List a directory once; its children get inode numbers.
    fn children(&mut self, ino: u64) -> Result<&[(OsString, u64)], i32> {
        let idx = usize::try_from(ino.checked_sub(1).ok_or(libc::ENOENT)?).map_err(|_| libc::ENOENT)?;
        let node = self.nodes.get(idx).ok_or(libc::ENOENT)?;
        if node.entry.kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        if node.children.is_none() {
            let list = self.fs.list(&node.entry).map_err(|e| {
                tracing::error!(dir = %node.entry.name, error = %format!("{:#}", anyhow::Error::new(e)), "listing a directory");
                EIO
            })?;
            let mut kids = Vec::with_capacity(list.len());
            for e in list {
                // Names that cannot be a file name are not shown.
                if !imaging::files::safe_name(&e.name) {
                    continue;
                }
                let name = OsString::from(&e.name);
                self.nodes.push(Node { entry: e, parent: ino, children: None });
                kids.push((name, self.nodes.len() as u64));
            }
            self.nodes[idx].children = Some(kids);
        }
        Ok(self.nodes[idx].children.as_deref().unwrap_or(&[]))
    }

    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let e = &self.node(ino)?.entry;
        let (kind, perm, size) = match e.kind {
            Kind::Dir => (FileType::Directory, 0o755, 0),
            Kind::File => (FileType::RegularFile, 0o644, e.size),
            Kind::Symlink => (FileType::Symlink, 0o777, e.target.as_ref().map_or(0, |t| t.len() as u64)),
            Kind::Other => (FileType::RegularFile, 0o000, 0),
        };
        // FAT/NTFS read-only attribute: no write bits (the mount is read-only anyway).
        let ro = e.attributes.as_deref().is_some_and(|a| a.starts_with('r'));
        let perm = e.mode.map_or(if ro { perm & 0o555 } else { perm }, |m| (m & 0o7777) as u16);
        let mtime = system_time(e.mtime, e.mtime_nsec);
        Some(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: e.atime.map_or(mtime, |a| system_time(a, 0)),
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind,
            perm,
            nlink: if kind == FileType::Directory { 2 } else { 1 },
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        })
    }
}

impl fuser::Filesystem for FilesFs<'_> {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        let ci = self.case_insensitive;
        let found = match self.children(parent) {
            Ok(kids) => kids.iter().find(|(n, _)| n == name).or_else(|| {
                let want = name.to_string_lossy().to_uppercase();
                kids.iter().find(|(n, _)| ci && n.to_string_lossy().to_uppercase() == want)
            }),
            Err(e) => return reply.error(e),
        };
        match found.map(|(_, ino)| *ino).and_then(|ino| self.attr(ino)) {
            Some(attr) => reply.entry(&TTL, &attr, 0),
            None => reply.error(libc::ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(libc::ENOENT),
        }
    }

    fn readlink(&mut self, _req: &Request<'_>, ino: u64, reply: ReplyData) {
        match self.node(ino).and_then(|n| n.entry.target.as_ref()) {
            Some(t) => reply.data(t.as_bytes()),
            None => reply.error(libc::EINVAL),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(libc::EROFS);
        }
        let Some(node) = self.node(ino) else { return reply.error(libc::ENOENT) };
        match self.fs.map(&node.entry) {
            Ok(map) => {
                let fh = self.next_fh;
                self.next_fh += 1;
                self.handles.insert(fh, map);
                reply.opened(fh, fuser::consts::FOPEN_KEEP_CACHE);
            }
            Err(e) => {
                tracing::error!(file = %node.entry.name, error = %format!("{:#}", anyhow::Error::new(e)), "opening a file");
                reply.error(EIO)
            }
        }
    }

    fn read(&mut self, _req: &Request<'_>, _ino: u64, fh: u64, offset: i64, size: u32, _flags: i32, _lock: Option<u64>, reply: ReplyData) {
        let Some(map) = self.handles.get(&fh) else { return reply.error(libc::EBADF) };
        let mut buf = vec![0u8; size as usize];
        match self.fs.read_at(map, offset.max(0) as u64, &mut buf) {
            Ok(n) => reply.data(&buf[..n]),
            Err(e) => {
                tracing::error!(offset, error = %format!("{:#}", anyhow::Error::new(e)), "reading a file");
                reply.error(EIO)
            }
        }
    }

    fn release(&mut self, _req: &Request<'_>, _ino: u64, fh: u64, _flags: i32, _lock: Option<u64>, _flush: bool, reply: fuser::ReplyEmpty) {
        self.handles.remove(&fh);
        reply.ok();
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        let parent = self.node(ino).map_or(ROOT, |n| n.parent);
        let kids: Vec<(OsString, u64)> = match self.children(ino) {
            Ok(k) => k.to_vec(),
            Err(e) => return reply.error(e),
        };
        let mut all = vec![(OsString::from("."), ino), (OsString::from(".."), parent)];
        all.extend(kids);
        for (i, (name, child)) in all.iter().enumerate().skip(offset.max(0) as usize) {
            let kind = match self.node(*child).map(|n| n.entry.kind) {
                Some(Kind::Dir) => FileType::Directory,
                Some(Kind::Symlink) => FileType::Symlink,
                _ => FileType::RegularFile,
            };
            if reply.add(*child, (i + 1) as i64, kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        reply.statfs(0, 0, 0, self.nodes.len() as u64, 0, 4096, 255, 4096);
    }
}

/// The partition as one read-only file.
struct RawFs<'a> {
    view: &'a RegionView<'a>,
    name: OsString,
    created: SystemTime,
}

const RAW_FILE: u64 = 2;

impl RawFs<'_> {
    fn attr(&self, ino: u64) -> Option<FileAttr> {
        let (kind, perm, size, nlink) = match ino {
            ROOT => (FileType::Directory, 0o555, 0, 2),
            RAW_FILE => (FileType::RegularFile, 0o444, self.view.len(), 1),
            _ => return None,
        };
        let t = self.created;
        Some(FileAttr { ino, size, blocks: size.div_ceil(512), atime: t, mtime: t, ctime: t, crtime: t, kind, perm, nlink, uid: 0, gid: 0, rdev: 0, blksize: 4096, flags: 0 })
    }
}

impl fuser::Filesystem for RawFs<'_> {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.attr(RAW_FILE).filter(|_| parent == ROOT && name == self.name) {
            Some(a) => reply.entry(&TTL, &a, 0),
            None => reply.error(libc::ENOENT),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.attr(ino) {
            Some(a) => reply.attr(&TTL, &a),
            None => reply.error(libc::ENOENT),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, flags: i32, reply: ReplyOpen) {
        if flags & libc::O_ACCMODE != libc::O_RDONLY {
            return reply.error(libc::EROFS);
        }
        if ino != RAW_FILE {
            return reply.error(libc::ENOENT);
        }
        reply.opened(0, fuser::consts::FOPEN_KEEP_CACHE);
    }

    fn read(&mut self, _req: &Request<'_>, _ino: u64, _fh: u64, offset: i64, size: u32, _flags: i32, _lock: Option<u64>, reply: ReplyData) {
        let offset = offset.max(0) as u64;
        let n = self.view.len().saturating_sub(offset).min(u64::from(size)) as usize;
        let mut buf = vec![0u8; n];
        match self.view.read_exact_at(&mut buf, offset) {
            Ok(()) => reply.data(&buf),
            Err(e) => {
                tracing::error!(offset, error = %e, "reading the partition");
                reply.error(EIO)
            }
        }
    }

    fn readdir(&mut self, _req: &Request<'_>, ino: u64, _fh: u64, offset: i64, mut reply: ReplyDirectory) {
        if ino != ROOT {
            return reply.error(libc::ENOTDIR);
        }
        let all = [(ROOT, FileType::Directory, OsStr::new(".")), (ROOT, FileType::Directory, OsStr::new("..")), (RAW_FILE, FileType::RegularFile, self.name.as_os_str())];
        for (i, (ino, kind, name)) in all.iter().enumerate().skip(offset.max(0) as usize) {
            if reply.add(*ino, (i + 1) as i64, *kind, name) {
                break;
            }
        }
        reply.ok();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_paths_are_unescaped() {
        assert_eq!(unescape(r"/tmp/a\040b"), "/tmp/a b");
        assert_eq!(unescape(r"/x\134y"), r"/x\y");
        assert_eq!(unescape(r"/end\04"), r"/end\04");
        assert_eq!(unescape("/plain"), "/plain");
    }

    #[test]
    fn the_mount_point_is_checked() {
        let d = tempfile::tempdir().expect("tempdir");
        assert!(check_mountpoint(&d.path().join("missing")).is_err());
        std::fs::write(d.path().join("f"), "x").expect("file");
        assert!(check_mountpoint(&d.path().join("f")).is_err());
        assert!(check_mountpoint(d.path()).is_err(), "not empty");
        let empty = d.path().join("e");
        std::fs::create_dir(&empty).expect("dir");
        assert!(check_mountpoint(&empty).is_ok());
    }
}
