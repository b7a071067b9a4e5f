//! Debian packages as build inputs: fetched with `apt-get download` into a
//! cache directory (never the repository), unpacked once with `dpkg-deb -x`.
//! Once a package is in the cache no network is needed.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::{Error, Result};

pub struct Cache {
    pub dir: PathBuf,
}

fn run(cmd: &mut Command, package: Option<&str>) -> Result<String> {
    let shown = format!("{cmd:?}").replace('"', "");
    let out = cmd.output().map_err(|e| Error::Tool {
        cmd: shown.clone(),
        detail: e.to_string(),
        package: package.map(str::to_string),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = err.lines().rev().take(3).collect();
        return Err(Error::Tool {
            cmd: shown,
            detail: format!(
                "{} ({})",
                tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
                out.status
            ),
            package: package.map(str::to_string),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    fn debs(&self) -> PathBuf {
        self.dir.join("debs")
    }

    /// The concrete kernel package behind a metapackage (`linux-image-amd64`
    /// -> `linux-image-6.1.0-56-amd64`). Works offline from apt's lists, and
    /// falls back to the newest kernel package already in the cache.
    pub fn kernel_package(&self, name: &str) -> Result<String> {
        if name
            .strip_prefix("linux-image-")
            .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()))
        {
            return Ok(name.to_string());
        }
        let depends = run(
            Command::new("apt-cache").args(["depends", "--no-recommends", "--no-suggests", name]),
            None,
        );
        if let Ok(text) = depends {
            if let Some(p) = text
                .lines()
                .filter_map(|l| l.trim().strip_prefix("Depends: "))
                .find(|p| p.starts_with("linux-image-"))
            {
                return Ok(p.trim().to_string());
            }
        }
        let mut cached: Vec<String> = fs::read_dir(self.debs())
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().to_string())
            .filter(|n| n.starts_with("linux-image-") && n.ends_with(".deb") && !n.contains("-dbg"))
            .collect();
        cached.sort();
        cached
            .pop()
            .and_then(|n| n.split('_').next().map(str::to_string))
            .ok_or_else(|| Error::Missing {
                what: format!("kernel package for {name}"),
                path: self.debs(),
                package: Some(name.into()),
            })
    }

    /// The `.deb` of `package`, downloaded into the cache if not there yet.
    pub fn deb(&self, package: &str) -> Result<PathBuf> {
        if let Some(p) = self.cached_deb(package) {
            return Ok(p);
        }
        self.download(package, &[]).map_err(|e| match e {
            Error::Tool { cmd, detail, .. } => Error::Tool {
                cmd,
                detail: format!(
                    "{detail}; if the package is unknown run `apt-get update` (needs network once)"
                ),
                package: Some(package.into()),
            },
            e => e,
        })
    }

    /// `apt-get download` of `package` into the cache, with `apt_options`
    /// (`-o Name=value` pairs, e.g. a private sources list), whether or not
    /// a copy is cached already.
    pub fn download(&self, package: &str, apt_options: &[String]) -> Result<PathBuf> {
        let dir = self.debs();
        // Download into a private directory and move the finished file in:
        // a parallel build must never see a half-written .deb.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = dir.join(format!(".download{}-{seq}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
        tracing_note(&format!("downloading {package} into {}", dir.display()));
        let fetched = run(
            Command::new("apt-get")
                .args(apt_options)
                .args(["download", "-q", package])
                .current_dir(&tmp),
            Some(package),
        )
        .and_then(|_| {
            for entry in fs::read_dir(&tmp).map_err(|e| Error::io("listing", &tmp, e))? {
                let from = entry.map_err(|e| Error::io("listing", &tmp, e))?.path();
                if let Some(name) = from.file_name() {
                    let to = dir.join(name);
                    fs::rename(&from, &to).map_err(|e| Error::io("moving into", &to, e))?;
                }
            }
            Ok(())
        });
        let _ = fs::remove_dir_all(&tmp);
        fetched?;
        self.cached_deb(package).ok_or_else(|| Error::Missing {
            what: format!("{package}_*.deb after apt-get download"),
            path: dir,
            package: Some(package.into()),
        })
    }

    /// The newest `.deb` of `package` in the cache, if any.
    pub fn cached_deb(&self, package: &str) -> Option<PathBuf> {
        let prefix = format!("{package}_");
        let mut found: Vec<PathBuf> = fs::read_dir(self.debs())
            .ok()?
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .map(|n| n.to_string_lossy().to_string())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            })
            .collect();
        found.sort();
        found.pop()
    }

    /// Unpack a `.deb` (once) and return the directory holding its files.
    pub fn unpack(&self, deb: &Path) -> Result<PathBuf> {
        let stem = deb
            .file_stem()
            .map(|s| s.to_string_lossy().to_string())
            .unwrap_or_default();
        let dest = self.dir.join("unpacked").join(&stem);
        if dest.join(".complete").exists() {
            return Ok(dest);
        }
        // Builds run in parallel (threads of one test process, or several
        // processes): each unpacks into its own scratch directory, and a
        // complete tree, once renamed into place, is never removed, since
        // another build may be reading it.
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = self
            .dir
            .join("unpacked")
            .join(format!(".{stem}.tmp{}-{seq}", std::process::id()));
        let _ = fs::remove_dir_all(&tmp);
        fs::create_dir_all(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
        let unpacked = run(
            Command::new("dpkg-deb").arg("-x").arg(deb).arg(&tmp),
            Some("dpkg"),
        )
        .and_then(|_| {
            fs::write(tmp.join(".complete"), b"").map_err(|e| Error::io("writing", &tmp, e))
        });
        if let Err(e) = unpacked {
            let _ = fs::remove_dir_all(&tmp);
            return Err(e);
        }
        if dest.join(".complete").exists() {
            let _ = fs::remove_dir_all(&tmp);
            return Ok(dest);
        }
        // A leftover without the marker is an interrupted unpack from before
        // the rename-into-place scheme; nothing reads it.
        let _ = fs::remove_dir_all(&dest);
        if let Err(e) = fs::rename(&tmp, &dest) {
            let _ = fs::remove_dir_all(&tmp);
            if !dest.join(".complete").exists() {
                return Err(Error::io("renaming into place", &dest, e));
            }
        }
        Ok(dest)
    }

    /// Fetch and unpack in one step.
    pub fn package(&self, package: &str) -> Result<PathBuf> {
        let deb = self.deb(package)?;
        self.unpack(&deb)
    }
}

/// Progress lines go to stderr only from the binary; the library stays
/// quiet unless asked (`RESCUE_BUILD_VERBOSE`).
fn tracing_note(msg: &str) {
    if std::env::var_os("RESCUE_BUILD_VERBOSE").is_some() {
        eprintln!("image-builder: {msg}");
    }
}
