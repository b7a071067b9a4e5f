//! The "newc" cpio format (SVR4 without CRC, magic `070701`) the kernel
//! unpacks as initramfs (`Documentation/driver-api/early-userspace/buffer-format.rst`).
//!
//! Each entry: a 110-byte ASCII header of 13 eight-digit hex fields, the NUL
//! terminated name padded to a multiple of 4 (counted from the header start),
//! then the data padded to 4; the archive ends with `TRAILER!!!`.
//!
//! The writer is reproducible by construction: entries are sorted by path
//! (parents before children), inode numbers are assigned in that order, and
//! uid/gid (0) and mtime are the same for every entry. It never emits hard
//! links (nlink is 1 for files, 2 for directories), so the kernel never
//! tries to link entries together. Deliberately unsupported when reading:
//! the `070702` CRC variant, the old binary and odc formats, and hard links.

use std::collections::BTreeMap;
use std::io::{self, Write};

const MAGIC: &[u8; 6] = b"070701";
const TRAILER: &str = "TRAILER!!!";
const HEADER_LEN: usize = 110;

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

/// What an entry is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Kind {
    Dir,
    File(Vec<u8>),
    Symlink(String),
    CharDev { major: u32, minor: u32 },
}

/// One archive member: its kind and permission bits (no file-type bits).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub perm: u32,
}

impl Entry {
    fn mode(&self) -> u32 {
        let t = match self.kind {
            Kind::Dir => S_IFDIR,
            Kind::File(_) => S_IFREG,
            Kind::Symlink(_) => S_IFLNK,
            Kind::CharDev { .. } => S_IFCHR,
        };
        t | (self.perm & 0o7777)
    }
}

/// A path given to the archive is not usable.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PathError {
    #[error("archive path {0:?} is empty, has a NUL byte, or a `.`/`..` component")]
    Invalid(String),
    #[error("archive path {path:?} is already a {existing} and cannot also be a {new}")]
    Conflict {
        path: String,
        existing: &'static str,
        new: &'static str,
    },
}

fn kind_name(k: &Kind) -> &'static str {
    match k {
        Kind::Dir => "directory",
        Kind::File(_) => "file",
        Kind::Symlink(_) => "symlink",
        Kind::CharDev { .. } => "character device",
    }
}

/// An archive being assembled in memory. Paths are relative (`usr/bin/x`);
/// a leading `/` is accepted and removed. Missing parent directories are
/// created with mode 0755.
#[derive(Debug, Default, Clone)]
pub struct Archive {
    entries: BTreeMap<String, Entry>,
}

fn normalize(path: &str) -> Result<String, PathError> {
    let p = path.trim_start_matches('/').trim_end_matches('/');
    let ok = !p.is_empty()
        && !p.contains('\0')
        && p.split('/').all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(p.to_string())
    } else {
        Err(PathError::Invalid(path.to_string()))
    }
}

impl Archive {
    pub fn new() -> Archive {
        Archive::default()
    }

    /// Add (or replace) an entry. A directory added twice is kept once; a
    /// path may not change kind, except that a later file replaces a file.
    pub fn add(&mut self, path: &str, entry: Entry) -> Result<(), PathError> {
        let p = normalize(path)?;
        let mut parent = p.as_str();
        while let Some((dir, _)) = parent.rsplit_once('/') {
            self.dir_entry(dir)?;
            parent = dir;
        }
        if let Some(old) = self.entries.get(&p) {
            let same_kind =
                std::mem::discriminant(&old.kind) == std::mem::discriminant(&entry.kind);
            if !same_kind {
                return Err(PathError::Conflict {
                    path: p,
                    existing: kind_name(&old.kind),
                    new: kind_name(&entry.kind),
                });
            }
        }
        self.entries.insert(p, entry);
        Ok(())
    }

    fn dir_entry(&mut self, dir: &str) -> Result<(), PathError> {
        match self.entries.get(dir) {
            Some(Entry {
                kind: Kind::Dir, ..
            }) => Ok(()),
            Some(e) => Err(PathError::Conflict {
                path: dir.to_string(),
                existing: kind_name(&e.kind),
                new: "directory",
            }),
            None => {
                self.entries.insert(
                    dir.to_string(),
                    Entry {
                        kind: Kind::Dir,
                        perm: 0o755,
                    },
                );
                Ok(())
            }
        }
    }

    pub fn dir(&mut self, path: &str, perm: u32) -> Result<(), PathError> {
        self.add(
            path,
            Entry {
                kind: Kind::Dir,
                perm,
            },
        )
    }

    pub fn file(&mut self, path: &str, data: Vec<u8>, perm: u32) -> Result<(), PathError> {
        self.add(
            path,
            Entry {
                kind: Kind::File(data),
                perm,
            },
        )
    }

    pub fn symlink(&mut self, path: &str, target: &str) -> Result<(), PathError> {
        self.add(
            path,
            Entry {
                kind: Kind::Symlink(target.to_string()),
                perm: 0o777,
            },
        )
    }

    pub fn char_dev(
        &mut self,
        path: &str,
        major: u32,
        minor: u32,
        perm: u32,
    ) -> Result<(), PathError> {
        self.add(
            path,
            Entry {
                kind: Kind::CharDev { major, minor },
                perm,
            },
        )
    }

    pub fn get(&self, path: &str) -> Option<&Entry> {
        self.entries.get(path.trim_start_matches('/'))
    }

    pub fn contains(&self, path: &str) -> bool {
        self.get(path).is_some()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Paths and entries in archive order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(p, e)| (p.as_str(), e))
    }

    /// Sum of the file and symlink data sizes.
    pub fn data_size(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match &e.kind {
                Kind::File(d) => d.len() as u64,
                Kind::Symlink(t) => t.len() as u64,
                _ => 0,
            })
            .sum()
    }

    /// Write the archive; every entry gets `mtime` (seconds since the epoch,
    /// e.g. `SOURCE_DATE_EPOCH`) and uid/gid 0. Returns the bytes written.
    pub fn write_to(&self, w: &mut impl Write, mtime: u32) -> io::Result<u64> {
        let mut out = Counter { w, n: 0 };
        for (ino, (path, e)) in self.entries.iter().enumerate() {
            let (data, nlink, rdev): (&[u8], u32, (u32, u32)) = match &e.kind {
                Kind::Dir => (&[], 2, (0, 0)),
                Kind::File(d) => (d, 1, (0, 0)),
                Kind::Symlink(t) => (t.as_bytes(), 1, (0, 0)),
                Kind::CharDev { major, minor } => (&[], 1, (*major, *minor)),
            };
            let ino = u32::try_from(ino + 1).map_err(|_| too_big("entries"))?;
            let size = u32::try_from(data.len()).map_err(|_| too_big(path))?;
            header(&mut out, ino, e.mode(), nlink, mtime, size, rdev, path)?;
            out.write_all(data)?;
            pad(&mut out)?;
        }
        header(&mut out, 0, 0, 1, 0, 0, (0, 0), TRAILER)?;
        Ok(out.n)
    }

    pub fn to_bytes(&self, mtime: u32) -> Vec<u8> {
        let mut v = Vec::new();
        // Writing to a Vec cannot fail but for sizes over 4 GiB per file,
        // which the caller's data cannot reach in memory anyway.
        let _ = self.write_to(&mut v, mtime);
        v
    }
}

fn too_big(what: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what}: too large for a newc cpio archive (4 GiB)"),
    )
}

struct Counter<'a, W: Write> {
    w: &'a mut W,
    n: u64,
}

impl<W: Write> Write for Counter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let k = self.w.write(buf)?;
        self.n += k as u64;
        Ok(k)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.w.flush()
    }
}

fn pad<W: Write>(out: &mut Counter<'_, W>) -> io::Result<()> {
    let k = (4 - (out.n % 4) as usize) % 4;
    out.write_all(&[0u8; 3][..k])
}

#[allow(clippy::too_many_arguments)]
fn header<W: Write>(
    out: &mut Counter<'_, W>,
    ino: u32,
    mode: u32,
    nlink: u32,
    mtime: u32,
    size: u32,
    rdev: (u32, u32),
    name: &str,
) -> io::Result<()> {
    let namesize = u32::try_from(name.len() + 1).map_err(|_| too_big(name))?;
    let fields = [
        ino, mode, 0, 0, nlink, mtime, size, 0, 0, rdev.0, rdev.1, namesize, 0,
    ];
    let mut h = Vec::with_capacity(HEADER_LEN + name.len() + 4);
    h.extend_from_slice(MAGIC);
    for f in fields {
        h.extend_from_slice(format!("{f:08X}").as_bytes());
    }
    h.extend_from_slice(name.as_bytes());
    h.push(0);
    out.write_all(&h)?;
    pad(out)
}

/// An entry as read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadEntry {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub nlink: u32,
    pub mtime: u32,
    pub rdev: (u32, u32),
    pub data: Vec<u8>,
}

/// A malformed archive.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ReadError {
    #[error("cpio entry at byte {offset}: {what}")]
    Bad { offset: usize, what: &'static str },
    #[error("cpio archive ends at byte {0} without a TRAILER!!! entry")]
    NoTrailer(usize),
}

/// Parse a newc archive (for tests, fuzzing and `image-builder` self
/// checks). Checks every length against the input before using it.
pub fn read(buf: &[u8]) -> Result<Vec<ReadEntry>, ReadError> {
    let mut out = Vec::new();
    let mut off = 0usize;
    let align = |x: usize| x.div_ceil(4) * 4;
    loop {
        let bad = |what| ReadError::Bad { offset: off, what };
        if off == buf.len() {
            return Err(ReadError::NoTrailer(off));
        }
        let h = buf
            .get(off..off + HEADER_LEN)
            .ok_or_else(|| bad("truncated header"))?;
        if &h[..6] != MAGIC {
            return Err(bad("not a newc header (magic 070701)"));
        }
        let mut f = [0u32; 13];
        for (i, v) in f.iter_mut().enumerate() {
            let s = std::str::from_utf8(&h[6 + i * 8..14 + i * 8])
                .map_err(|_| bad("non-ASCII header field"))?;
            *v = u32::from_str_radix(s, 16).map_err(|_| bad("non-hex header field"))?;
        }
        let namesize = f[11] as usize;
        if namesize == 0 {
            return Err(bad("empty name"));
        }
        let name_start = off + HEADER_LEN;
        let name = buf
            .get(name_start..name_start + namesize)
            .ok_or_else(|| bad("truncated name"))?;
        if name[namesize - 1] != 0 {
            return Err(bad("name not NUL-terminated"));
        }
        let path = std::str::from_utf8(&name[..namesize - 1])
            .map_err(|_| bad("name not UTF-8"))?
            .to_string();
        let data_start = align(name_start + namesize);
        let size = f[6] as usize;
        let data = buf
            .get(data_start..data_start + size)
            .ok_or_else(|| bad("truncated data"))?;
        if path == TRAILER {
            return Ok(out);
        }
        out.push(ReadEntry {
            path,
            mode: f[1],
            uid: f[2],
            gid: f[3],
            nlink: f[4],
            mtime: f[5],
            rdev: (f[9], f[10]),
            data: data.to_vec(),
        });
        off = align(data_start + size);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Archive {
        let mut a = Archive::new();
        a.file("/init", b"#!/bin/sh\necho hi\n".to_vec(), 0o755)
            .expect("valid");
        a.file("usr/bin/rescue", vec![0xAB; 4097], 0o755)
            .expect("valid");
        a.symlink("sbin/poweroff", "/init").expect("valid");
        a.char_dev("dev/console", 5, 1, 0o600).expect("valid");
        a.dir("tmp", 0o1777).expect("valid");
        a.file("etc/a-b", b"x".to_vec(), 0o644).expect("valid");
        a
    }

    #[test]
    fn parents_created_and_sorted() {
        let a = sample();
        let paths: Vec<&str> = a.iter().map(|(p, _)| p).collect();
        assert_eq!(
            paths,
            [
                "dev",
                "dev/console",
                "etc",
                "etc/a-b",
                "init",
                "sbin",
                "sbin/poweroff",
                "tmp",
                "usr",
                "usr/bin",
                "usr/bin/rescue"
            ]
        );
    }

    #[test]
    fn round_trip() {
        let a = sample();
        let bytes = a.to_bytes(1_700_000_000);
        assert_eq!(bytes.len() % 4, 0);
        let back = read(&bytes).expect("parses");
        assert_eq!(back.len(), a.len());
        for (r, (p, e)) in back.iter().zip(a.iter()) {
            assert_eq!(r.path, p);
            assert_eq!(r.mode, e.mode());
            assert_eq!((r.uid, r.gid, r.mtime), (0, 0, 1_700_000_000));
            match &e.kind {
                Kind::File(d) => assert_eq!(&r.data, d),
                Kind::Symlink(t) => assert_eq!(r.data, t.as_bytes()),
                Kind::CharDev { major, minor } => assert_eq!(r.rdev, (*major, *minor)),
                Kind::Dir => assert_eq!(r.nlink, 2),
            }
        }
    }

    /// Golden bytes of a one-entry archive, checked by hand against the
    /// format description.
    #[test]
    fn golden_single_file() {
        let mut a = Archive::new();
        a.file("a", b"hi".to_vec(), 0o644).expect("valid");
        let got = a.to_bytes(0x10);
        // magic, ino 1, mode 0100644, uid, gid, nlink 1, mtime 0x10, size 2,
        // dev major/minor, rdev major/minor, namesize 2 ("a\0"), check.
        let mut want = Vec::new();
        want.extend_from_slice(b"070701");
        for f in [
            "00000001", "000081A4", "00000000", "00000000", "00000001", "00000010", "00000002",
        ] {
            want.extend_from_slice(f.as_bytes());
        }
        want.extend_from_slice("00000000".repeat(4).as_bytes());
        want.extend_from_slice(b"0000000200000000");
        want.extend_from_slice(b"a\0"); // 110 + 2 = 112, aligned
        want.extend_from_slice(b"hi\0\0");
        // The trailer: nlink 1, namesize 11, everything else 0.
        want.extend_from_slice(b"070701");
        want.extend_from_slice("00000000".repeat(4).as_bytes());
        want.extend_from_slice(b"00000001");
        want.extend_from_slice("00000000".repeat(6).as_bytes());
        want.extend_from_slice(b"0000000B00000000");
        want.extend_from_slice(b"TRAILER!!!\0\0\0\0"); // 110 + 11 = 121 -> 124
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(&want)
        );
        assert_eq!(got.len() % 4, 0);
    }

    #[test]
    fn deterministic() {
        assert_eq!(sample().to_bytes(42), sample().to_bytes(42));
        // Insertion order does not matter.
        let mut b = Archive::new();
        b.file("etc/a-b", b"x".to_vec(), 0o644).expect("valid");
        b.dir("tmp", 0o1777).expect("valid");
        b.char_dev("dev/console", 5, 1, 0o600).expect("valid");
        b.symlink("sbin/poweroff", "/init").expect("valid");
        b.file("usr/bin/rescue", vec![0xAB; 4097], 0o755)
            .expect("valid");
        b.file("init", b"#!/bin/sh\necho hi\n".to_vec(), 0o755)
            .expect("valid");
        assert_eq!(sample().to_bytes(42), b.to_bytes(42));
    }

    #[test]
    fn rejects_bad_paths_and_conflicts() {
        let mut a = Archive::new();
        for p in ["", "/", "a/../b", "./a", "a//b", "a\0b"] {
            assert!(
                matches!(a.file(p, vec![], 0o644), Err(PathError::Invalid(_))),
                "{p:?}"
            );
        }
        a.file("x/y", vec![], 0o644).expect("valid");
        assert!(matches!(
            a.file("x", vec![], 0o644),
            Err(PathError::Conflict { .. })
        ));
        assert!(matches!(
            a.file("x/y/z", vec![], 0o644),
            Err(PathError::Conflict { .. })
        ));
        a.file("x/y", b"new".to_vec(), 0o600)
            .expect("a file may replace a file");
    }

    #[test]
    fn reader_rejects_garbage() {
        let bytes = sample().to_bytes(0);
        for cut in [0, 5, 109, 200, bytes.len() - 4] {
            assert!(read(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad = bytes.clone();
        bad[0] = b'1';
        assert!(matches!(read(&bad), Err(ReadError::Bad { offset: 0, .. })));
        let mut bad = bytes;
        bad[60] = b'z'; // inside the filesize field of the first header
        assert!(read(&bad).is_err());
    }

    /// Interop: GNU cpio and bsdcpio list what we wrote (skipped when the
    /// tools are not installed: `apt-get install cpio libarchive-tools`).
    #[test]
    fn interop_with_cpio_tools() {
        let bytes = sample().to_bytes(1_600_000_000);
        let mut want: Vec<String> = sample().iter().map(|(p, _)| p.to_string()).collect();
        want.sort();
        for tool in ["cpio", "bsdcpio"] {
            let child = std::process::Command::new(tool)
                .args(["-t", "--quiet"])
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn();
            let Ok(mut child) = child else {
                eprintln!("skipping {tool}: not installed");
                continue;
            };
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(&bytes)
                .expect("write to cpio");
            let out = child.wait_with_output().expect("cpio runs");
            assert!(
                out.status.success(),
                "{tool}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            let mut got: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string)
                .collect();
            got.sort();
            assert_eq!(got, want, "{tool} -t");
        }
        // And GNU cpio's verbose listing shows the modes, owners and dates we set.
        if let Ok(mut child) = std::process::Command::new("cpio")
            .args(["-tv", "--quiet"])
            .env("TZ", "UTC")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
        {
            child
                .stdin
                .take()
                .expect("piped")
                .write_all(&bytes)
                .expect("write to cpio");
            let out = child.wait_with_output().expect("cpio runs");
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                text.contains(
                    "lrwxrwxrwx   1 root     root            5 Sep 13  2020 sbin/poweroff -> /init"
                ),
                "{text}"
            );
            assert!(
                text.contains("crw-------   1 root     root       5,   1 Sep 13  2020 dev/console"),
                "{text}"
            );
            assert!(
                text.contains("drwxrwxrwt   2 root     root            0 Sep 13  2020 tmp"),
                "{text}"
            );
        }
    }
}
