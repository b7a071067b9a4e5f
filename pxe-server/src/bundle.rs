//! The set of files the server may hand out, and the only place that turns a
//! client-supplied name into a path.
//!
//! A bundle is either a directory written by `image-builder pxe` (every file
//! below it may be served) or, in the quick form, an explicit list of files
//! (kernel, initrd, loaders from Debian packages) with no directory at all.
//! Confinement rules for names coming from the network: no `..` component, no
//! absolute path, no NUL, and the canonical path (symlinks resolved) must stay
//! below the bundle directory.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

/// Well-known bundle file names.
pub mod names {
    pub const KERNEL: &str = "vmlinuz";
    pub const INITRD: &str = "initrd.img";
    /// iPXE for BIOS PXE ROMs (chainloads over UNDI).
    pub const UNDIONLY: &str = "undionly.kpxe";
    /// iPXE for UEFI using the firmware's SNP driver.
    pub const SNPONLY: &str = "snponly.efi";
    /// iPXE for UEFI with its own NIC drivers.
    pub const IPXE_EFI: &str = "ipxe.efi";
    /// Secure Boot chain: Microsoft-signed shim, then distro-signed GRUB
    /// (shim looks for `grubx64.efi` next to itself).
    pub const SHIM: &str = "shimx64.efi";
    pub const GRUB: &str = "grubx64.efi";
    /// iPXE for arm64 UEFI (optional).
    pub const IPXE_ARM64: &str = "ipxe-arm64.efi";
}

/// Where Debian's packages put the loaders (quick form).
pub const DEBIAN_LOADERS: &[(&str, &str, &str)] = &[
    (names::UNDIONLY, "/usr/lib/ipxe/undionly.kpxe", "ipxe"),
    (names::SNPONLY, "/usr/lib/ipxe/snponly.efi", "ipxe"),
    (names::IPXE_EFI, "/usr/lib/ipxe/ipxe.efi", "ipxe"),
    (
        names::SHIM,
        "/usr/lib/shim/shimx64.efi.signed",
        "shim-signed",
    ),
    (
        names::GRUB,
        "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
        "grub-efi-amd64-signed",
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("bundle {dir} is incomplete, missing: {}", missing.join(", "))]
    Incomplete { dir: PathBuf, missing: Vec<String> },
    #[error("bundle directory {dir} cannot be read")]
    Unreadable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} {path} cannot be read")]
    FileUnreadable {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no network boot loader found for the quick form, looked for {}", looked.join(", "))]
    NoLoaders { looked: Vec<String> },
}

impl BundleError {
    pub fn hint(&self) -> String {
        match self {
            BundleError::Incomplete { .. } => {
                "rebuild the bundle with `image-builder pxe`, or use the quick form --kernel/--initrd"
                    .into()
            }
            BundleError::Unreadable { .. } | BundleError::FileUnreadable { .. } => {
                "check the path and its permissions".into()
            }
            BundleError::NoLoaders { .. } => {
                "install the loaders: apt-get install ipxe shim-signed grub-efi-amd64-signed".into()
            }
        }
    }
}

/// Why a requested name was not served. Callers branch on this (TFTP error
/// code, HTTP status), so it is a type, not a string.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ResolveError {
    #[error("requested name {name:?} is empty or contains NUL")]
    Invalid { name: String },
    #[error("requested name {name:?} is an absolute path")]
    Absolute { name: String },
    #[error("requested name {name:?} contains a `..` component")]
    Traversal { name: String },
    #[error("requested name {name:?} resolves to {resolved} outside the bundle")]
    OutsideBundle { name: String, resolved: PathBuf },
    #[error("requested name {name:?} is not in the bundle")]
    NotFound { name: String },
}

impl ResolveError {
    /// True for attempts to leave the bundle (logged as warnings).
    pub fn is_violation(&self) -> bool {
        matches!(
            self,
            ResolveError::Absolute { .. }
                | ResolveError::Traversal { .. }
                | ResolveError::OutsideBundle { .. }
        )
    }
}

#[derive(Debug, Clone)]
pub struct Bundle {
    /// Canonical bundle directory, if any.
    root: Option<PathBuf>,
    /// Explicit files: bundle name -> real path (quick form; also lets a
    /// directory bundle be overridden).
    files: BTreeMap<String, PathBuf>,
}

impl Bundle {
    /// Opens a bundle directory and checks the files every boot path needs.
    pub fn open_dir(dir: &Path) -> Result<Bundle, BundleError> {
        let root = dir
            .canonicalize()
            .map_err(|source| BundleError::Unreadable {
                dir: dir.to_path_buf(),
                source,
            })?;
        let b = Bundle {
            root: Some(root),
            files: BTreeMap::new(),
        };
        let mut missing: Vec<String> = [names::KERNEL, names::INITRD, names::UNDIONLY]
            .iter()
            .filter(|n| !b.has(n))
            .map(|n| n.to_string())
            .collect();
        if !b.has(names::SNPONLY) && !b.has(names::IPXE_EFI) {
            missing.push(format!("{} or {}", names::SNPONLY, names::IPXE_EFI));
        }
        if !missing.is_empty() {
            return Err(BundleError::Incomplete {
                dir: dir.to_path_buf(),
                missing,
            });
        }
        Ok(b)
    }

    /// The quick form: a kernel and an initrd given on the command line, and
    /// the loaders found at `loaders` (name, path, package) when present.
    pub fn quick(
        kernel: &Path,
        initrd: &Path,
        loaders: &[(&str, &str, &str)],
    ) -> Result<Bundle, BundleError> {
        let mut files = BTreeMap::new();
        for (what, name, path) in [
            ("kernel", names::KERNEL, kernel),
            ("initrd", names::INITRD, initrd),
        ] {
            std::fs::File::open(path).map_err(|source| BundleError::FileUnreadable {
                what,
                path: path.to_path_buf(),
                source,
            })?;
            files.insert(name.to_string(), path.to_path_buf());
        }
        let mut found = 0;
        for (name, path, _pkg) in loaders {
            if Path::new(path).is_file() {
                files.insert(name.to_string(), PathBuf::from(path));
                found += 1;
            }
        }
        if found == 0 {
            return Err(BundleError::NoLoaders {
                looked: loaders
                    .iter()
                    .map(|(_, p, pkg)| format!("{p} ({pkg})"))
                    .collect(),
            });
        }
        Ok(Bundle { root: None, files })
    }

    /// An empty bundle rooted at `dir`, without completeness checks (tests).
    pub fn unchecked(dir: &Path) -> std::io::Result<Bundle> {
        Ok(Bundle {
            root: Some(dir.canonicalize()?),
            files: BTreeMap::new(),
        })
    }

    pub fn has(&self, name: &str) -> bool {
        self.resolve(name).is_ok()
    }

    /// Files of the bundle that exist, for the start-up summary.
    pub fn inventory(&self) -> Vec<String> {
        let all = [
            names::KERNEL,
            names::INITRD,
            names::UNDIONLY,
            names::SNPONLY,
            names::IPXE_EFI,
            names::SHIM,
            names::GRUB,
            names::IPXE_ARM64,
        ];
        all.iter()
            .filter(|n| self.has(n))
            .map(|n| n.to_string())
            .collect()
    }

    /// Maps a name from the network to a regular file inside the bundle.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, ResolveError> {
        if name.is_empty() || name.contains('\0') {
            return Err(ResolveError::Invalid { name: name.into() });
        }
        // Windows-style clients send backslashes.
        let norm = name.replace('\\', "/");
        let p = Path::new(&norm);
        if p.is_absolute() {
            return Err(ResolveError::Absolute { name: name.into() });
        }
        let mut clean = PathBuf::new();
        for c in p.components() {
            match c {
                Component::Normal(s) => clean.push(s),
                Component::CurDir => {}
                Component::ParentDir => return Err(ResolveError::Traversal { name: name.into() }),
                Component::RootDir | Component::Prefix(_) => {
                    return Err(ResolveError::Absolute { name: name.into() })
                }
            }
        }
        let key = clean.to_string_lossy().into_owned();
        if let Some(p) = self.files.get(&key) {
            return Ok(p.clone());
        }
        let Some(root) = &self.root else {
            return Err(ResolveError::NotFound { name: name.into() });
        };
        let joined = root.join(&clean);
        let resolved = match joined.canonicalize() {
            Ok(r) => r,
            Err(_) => return Err(ResolveError::NotFound { name: name.into() }),
        };
        if !resolved.starts_with(root) {
            return Err(ResolveError::OutsideBundle {
                name: name.into(),
                resolved,
            });
        }
        if !resolved.is_file() {
            return Err(ResolveError::NotFound { name: name.into() });
        }
        Ok(resolved)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn confinement() {
        let t = tempfile::tempdir().expect("tempdir");
        let dir = t.path().join("b");
        std::fs::create_dir_all(dir.join("sub")).expect("mkdir");
        std::fs::write(dir.join("sub/a.txt"), b"a").expect("write");
        std::fs::write(t.path().join("secret"), b"s").expect("write");
        std::os::unix::fs::symlink(t.path().join("secret"), dir.join("evil")).expect("symlink");
        std::os::unix::fs::symlink(dir.join("sub/a.txt"), dir.join("good")).expect("symlink");
        let b = Bundle::unchecked(&dir).expect("bundle");
        assert!(b.resolve("sub/a.txt").is_ok());
        assert!(b.resolve("./sub//a.txt").is_ok());
        assert!(b.resolve("sub\\a.txt").is_ok());
        assert!(b.resolve("good").is_ok());
        assert!(matches!(
            b.resolve("../secret"),
            Err(ResolveError::Traversal { .. })
        ));
        assert!(matches!(
            b.resolve("sub/../../secret"),
            Err(ResolveError::Traversal { .. })
        ));
        assert!(matches!(
            b.resolve("..\\secret"),
            Err(ResolveError::Traversal { .. })
        ));
        assert!(matches!(
            b.resolve("/etc/passwd"),
            Err(ResolveError::Absolute { .. })
        ));
        assert!(matches!(
            b.resolve("evil"),
            Err(ResolveError::OutsideBundle { .. })
        ));
        assert!(matches!(
            b.resolve("sub"),
            Err(ResolveError::NotFound { .. })
        ));
        assert!(matches!(b.resolve(""), Err(ResolveError::Invalid { .. })));
        assert!(matches!(
            b.resolve("a\0b"),
            Err(ResolveError::Invalid { .. })
        ));
    }

    #[test]
    fn incomplete_bundle_names_each_missing_file() {
        let t = tempfile::tempdir().expect("tempdir");
        std::fs::write(t.path().join(names::KERNEL), b"k").expect("write");
        let e = Bundle::open_dir(t.path()).expect_err("incomplete");
        let msg = e.to_string();
        assert!(msg.contains("initrd.img"), "{msg}");
        assert!(msg.contains("undionly.kpxe"), "{msg}");
        assert!(msg.contains("snponly.efi or ipxe.efi"), "{msg}");
        assert!(!msg.contains("vmlinuz"), "{msg}");
        for n in [names::INITRD, names::UNDIONLY, names::IPXE_EFI] {
            std::fs::write(t.path().join(n), b"x").expect("write");
        }
        let b = Bundle::open_dir(t.path()).expect("complete");
        assert_eq!(
            b.inventory(),
            vec!["vmlinuz", "initrd.img", "undionly.kpxe", "ipxe.efi"]
        );
    }

    #[test]
    fn quick_form_serves_only_listed_files() {
        let t = tempfile::tempdir().expect("tempdir");
        let k = t.path().join("k");
        let i = t.path().join("i");
        let l = t.path().join("loader");
        for p in [&k, &i, &l] {
            std::fs::write(p, b"x").expect("write");
        }
        let lp = l.to_string_lossy().into_owned();
        let b = Bundle::quick(&k, &i, &[(names::UNDIONLY, &lp, "ipxe")]).expect("quick");
        assert_eq!(b.resolve("vmlinuz"), Ok(k.clone()));
        assert_eq!(b.resolve(names::UNDIONLY), Ok(l.clone()));
        assert!(matches!(b.resolve("k"), Err(ResolveError::NotFound { .. })));
        let e = Bundle::quick(&k, &i, &[(names::UNDIONLY, "/nonexistent/x", "ipxe")]);
        assert!(matches!(e, Err(BundleError::NoLoaders { .. })));
    }
}
