//! Host programs that `rescue` shells out to (e2fsprogs, ntfs-3g, losetup),
//! copied with exactly the shared libraries they need: the ELF interpreter
//! and the transitive `DT_NEEDED` closure, resolved like `ld.so` does on
//! Debian (run path, then the multiarch and plain library directories).
//!
//! The programs come from the build machine's installed Debian packages; the
//! build report names each file and its size so two builders can compare.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use crate::elf::Elf;
use crate::{Error, Result};

/// (program, Debian package providing it).
pub const DEFAULT_TOOLS: &[(&str, &str)] = &[
    ("e2fsck", "e2fsprogs"),
    ("resize2fs", "e2fsprogs"),
    ("ntfsresize", "ntfs-3g"),
    ("ntfs-3g", "ntfs-3g"),
    ("losetup", "mount"),
    // Restore to a smaller disk: the shrunk NTFS is checked with ntfsfix -n,
    // and an ext4's block count read with dumpe2fs.
    ("ntfsfix", "ntfs-3g"),
    ("dumpe2fs", "e2fsprogs"),
];

const BIN_DIRS: &[&str] = &["/usr/sbin", "/usr/bin", "/sbin", "/bin"];
const LIB_DIRS: &[&str] = &[
    "/lib/x86_64-linux-gnu",
    "/usr/lib/x86_64-linux-gnu",
    "/lib64",
    "/usr/lib64",
    "/lib",
    "/usr/lib",
];
/// Where libraries go in the image (on ld.so's built-in search path).
pub const IMAGE_LIB_DIR: &str = "/lib/x86_64-linux-gnu";

/// Find a program on the build machine.
pub fn find_program(name: &str, package: Option<&str>) -> Result<PathBuf> {
    if name.starts_with('/') {
        let p = PathBuf::from(name);
        return if p.is_file() {
            Ok(p)
        } else {
            Err(Error::Missing {
                what: format!("program {name}"),
                path: p,
                package: package.map(str::to_string),
            })
        };
    }
    BIN_DIRS
        .iter()
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| Error::Missing {
            what: format!("program {name}"),
            path: PathBuf::from(BIN_DIRS.join(":")),
            package: package.map(str::to_string),
        })
}

/// What to put in the image for some programs.
#[derive(Debug, Default)]
pub struct Closure {
    /// Image path -> host file: the programs (at their host paths) and every
    /// library they load (in [`IMAGE_LIB_DIR`]).
    pub files: BTreeMap<String, PathBuf>,
    /// Image path -> symlink target: the interpreter's well-known path
    /// (`/lib64/ld-linux-x86-64.so.2`) pointing at its copy in the library
    /// directory, where `libc.so.6` also needs it.
    pub links: BTreeMap<String, String>,
}

/// The programs and every library they load.
pub fn closure(programs: &[PathBuf]) -> Result<Closure> {
    let mut files = BTreeMap::new();
    let mut links = BTreeMap::new();
    let mut todo: Vec<(PathBuf, String)> = programs
        .iter()
        .map(|p| (p.clone(), p.to_string_lossy().to_string()))
        .collect();
    while let Some((src, dest)) = todo.pop() {
        if files.contains_key(&dest) {
            continue;
        }
        let data = fs::read(&src).map_err(|e| Error::io("reading", &src, e))?;
        let elf = Elf::parse(&src, &data)?;
        if let Some(interp) = elf.interpreter()? {
            let real = fs::canonicalize(&interp)
                .map_err(|e| Error::io("resolving the ELF interpreter", Path::new(&interp), e))?;
            let base = interp.rsplit('/').next().unwrap_or(&interp);
            let dest_interp = format!("{IMAGE_LIB_DIR}/{base}");
            if dest_interp != interp {
                links.insert(interp.clone(), dest_interp.clone());
            }
            todo.push((real, dest_interp));
        }
        let (needed, runpath) = elf.needed()?;
        for soname in needed {
            let dest_lib = format!("{IMAGE_LIB_DIR}/{soname}");
            if files.contains_key(&dest_lib) {
                continue;
            }
            let dirs: Vec<&str> = runpath
                .iter()
                .map(String::as_str)
                .filter(|d| !d.contains('$'))
                .chain(LIB_DIRS.iter().copied())
                .collect();
            let found = dirs
                .iter()
                .map(|d| Path::new(d).join(&soname))
                .find(|p| p.exists());
            let Some(found) = found else {
                return Err(Error::Library {
                    soname,
                    by: src.clone(),
                    searched: dirs.join(":"),
                });
            };
            let real = fs::canonicalize(&found).map_err(|e| Error::io("resolving", &found, e))?;
            todo.push((real, dest_lib));
        }
        files.insert(dest, src);
    }
    Ok(Closure { files, links })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closure_of_ls_has_libc_and_the_loader() {
        let Ok(ls) = find_program("ls", None) else {
            return;
        };
        let c = closure(&[ls]).expect("ls resolves");
        assert_eq!(
            c.links
                .get("/lib64/ld-linux-x86-64.so.2")
                .map(String::as_str),
            Some("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2")
        );
        let files = c.files;
        assert!(
            files.contains_key("/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"),
            "{files:?}"
        );
        assert!(
            files.contains_key("/lib/x86_64-linux-gnu/libc.so.6"),
            "{files:?}"
        );
        // Libraries are stored as their real files, not symlinks.
        assert!(files.values().all(|p| !p.is_symlink()));
    }

    #[test]
    fn missing_program_names_the_package() {
        let e = find_program("no-such-program-xyz", Some("xyz-tools")).expect_err("missing");
        assert!(e.hint().is_some_and(|h| h.contains("xyz-tools")), "{e}");
    }
}
