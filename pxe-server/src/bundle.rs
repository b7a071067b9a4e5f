//! The set of files the server may hand out, and the only place that turns a
//! client-supplied name into a path.
//!
//! A bundle is either a directory written by `image-builder pxe` (every file
//! below it may be served; its `manifest.json` says which file plays which
//! role, see [`Manifest`]), a directory laid out with the well-known
//! [`names`] and no manifest, or, in the quick form, an explicit list of
//! files (kernel, initrd, loaders from Debian packages) with no directory at
//! all. Clients always ask for the well-known names; the manifest maps them
//! to the bundle's files.
//!
//! Confinement rules for names coming from the network: no `..` component,
//! no NUL, and the canonical path (symlinks resolved) must stay below the
//! bundle directory. A leading `/` means the bundle root, as in tftpd-hpa
//! `--secure` and dnsmasq: GRUB asks for `/grub/grub.cfg`.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

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
    /// arm64 (optional, see [`KernelArch`]): the live system built for
    /// arm64, and iPXE for arm64 UEFI over the firmware's SNP driver
    /// (iPXE's `bin-arm64-efi/snp.efi`) or with its own NIC drivers
    /// (`bin-arm64-efi/ipxe.efi`).
    pub const KERNEL_ARM64: &str = "vmlinuz-arm64";
    pub const INITRD_ARM64: &str = "initrd-arm64.img";
    pub const SNP_ARM64: &str = "snp-arm64.efi";
    pub const IPXE_ARM64: &str = "ipxe-arm64.efi";
}

/// The CPU architecture a live system (kernel + initrd) is built for. A
/// client is only ever handed the kernel of its own architecture: an arm64
/// machine cannot run an x86-64 kernel, and the reverse.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(rename_all = "snake_case")]
pub enum KernelArch {
    X86_64,
    Arm64,
}

impl KernelArch {
    pub const ALL: [KernelArch; 2] = [KernelArch::X86_64, KernelArch::Arm64];

    /// Well-known name of this architecture's kernel.
    pub fn kernel(self) -> &'static str {
        match self {
            KernelArch::X86_64 => names::KERNEL,
            KernelArch::Arm64 => names::KERNEL_ARM64,
        }
    }

    pub fn initrd(self) -> &'static str {
        match self {
            KernelArch::X86_64 => names::INITRD,
            KernelArch::Arm64 => names::INITRD_ARM64,
        }
    }

    /// The UEFI iPXE loaders of this architecture, preferred first. BIOS
    /// (`undionly.kpxe`) is x86-64's too, checked apart.
    pub fn uefi_loaders(self) -> [&'static str; 2] {
        match self {
            KernelArch::X86_64 => [names::SNPONLY, names::IPXE_EFI],
            KernelArch::Arm64 => [names::SNP_ARM64, names::IPXE_ARM64],
        }
    }

    /// iPXE's `${buildarch}`: `i386` (undionly.kpxe, a 32-bit iPXE that
    /// boots 64-bit kernels), `x86_64`, `arm64`. Other values are not ours.
    pub fn from_buildarch(s: &str) -> Option<KernelArch> {
        match s {
            "i386" | "x86_64" => Some(KernelArch::X86_64),
            "arm64" => Some(KernelArch::Arm64),
            _ => None,
        }
    }
}

impl std::fmt::Display for KernelArch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            KernelArch::X86_64 => "x86-64",
            KernelArch::Arm64 => "arm64",
        })
    }
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
    #[error("bundle manifest {path} cannot be read")]
    ManifestUnreadable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bundle manifest {path} is not valid JSON of a PXE bundle")]
    ManifestSyntax {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("bundle manifest {path} is format {format:?} version {version}; this pxe-server reads {} version {}", MANIFEST_FORMAT, MANIFEST_VERSION)]
    ManifestVersion {
        path: PathBuf,
        format: String,
        version: u32,
    },
    #[error(
        "bundle manifest {path} names {name:?} for {role}, which is not a file inside the bundle"
    )]
    ManifestPath {
        path: PathBuf,
        role: &'static str,
        name: String,
    },
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
            BundleError::ManifestUnreadable { .. } | BundleError::ManifestSyntax { .. } => {
                "rebuild the bundle with `image-builder pxe`".into()
            }
            BundleError::ManifestVersion { .. } => {
                "use the pxe-server built with the image-builder that wrote the bundle".into()
            }
            BundleError::ManifestPath { .. } => {
                "the manifest must name files below the bundle directory: rebuild the bundle".into()
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
    #[error("requested name {name:?} contains a `..` component")]
    Traversal { name: String },
    /// Outside the bundle, or the `--images` directory.
    #[error("requested name {name:?} resolves to {resolved}, outside the served directory")]
    OutsideBundle { name: String, resolved: PathBuf },
    #[error("requested name {name:?} is not in the served directory")]
    NotFound { name: String },
}

impl ResolveError {
    /// True for attempts to leave the bundle (logged as warnings).
    pub fn is_violation(&self) -> bool {
        matches!(
            self,
            ResolveError::Traversal { .. } | ResolveError::OutsideBundle { .. }
        )
    }
}

/// `manifest.json` of a bundle.
pub const MANIFEST: &str = "manifest.json";
/// The `format` and `version` of `manifest.json` this server reads.
pub const MANIFEST_FORMAT: &str = "rescue-pxe-bundle";
pub const MANIFEST_VERSION: u32 = 1;

/// The part of `manifest.json` (written by `image-builder pxe`, see
/// `image-builder/src/pxe.rs`) that the server uses. Names are relative to
/// the bundle directory; unknown fields are ignored, so newer builders can
/// add fields without a version bump. Every role is optional here: the
/// bundle must hold at least one complete live system (x86-64: `kernel`,
/// `initrd`, `loaders.bios`, `loaders.uefi_x64[_snp]`; arm64:
/// `kernel_arm64`, `initrd_arm64`, `loaders.uefi_arm64[_snp]`), checked in
/// [`Bundle::open_dir`].
#[derive(Debug, Clone, Deserialize)]
pub struct Manifest {
    pub format: String,
    pub version: u32,
    #[serde(default)]
    pub kernel_version: String,
    /// x86-64 live system.
    #[serde(default)]
    pub kernel: Option<String>,
    #[serde(default)]
    pub initrd: Option<String>,
    /// arm64 live system (served to arm64 UEFI clients, option 93 = 11/19).
    #[serde(default)]
    pub kernel_arm64: Option<String>,
    #[serde(default)]
    pub initrd_arm64: Option<String>,
    /// Kernel command line every client gets (before the server's own
    /// arguments and `--cmdline`).
    #[serde(default)]
    pub cmdline: String,
    pub loaders: ManifestLoaders,
    /// Every file of the bundle with its size (and checksum, not read here).
    #[serde(default)]
    pub files: Vec<ManifestFile>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ManifestLoaders {
    /// BIOS PXE (arch 0): iPXE `undionly.kpxe`.
    #[serde(default)]
    pub bios: Option<String>,
    /// UEFI x64 with Secure Boot off: iPXE with its own drivers.
    #[serde(default)]
    pub uefi_x64: Option<String>,
    /// UEFI x64 with Secure Boot off: iPXE over the firmware's SNP driver.
    #[serde(default)]
    pub uefi_x64_snp: Option<String>,
    /// UEFI x64 with Secure Boot: shim, which fetches
    /// `uefi_x64_secure_boot_grub` as `grubx64.efi` from the same server.
    #[serde(default)]
    pub uefi_x64_secure_boot: Option<String>,
    #[serde(default)]
    pub uefi_x64_secure_boot_grub: Option<String>,
    /// UEFI arm64 (arch 11, HTTP 19): iPXE with its own drivers.
    #[serde(default)]
    pub uefi_arm64: Option<String>,
    /// UEFI arm64: iPXE over the firmware's SNP driver (preferred).
    #[serde(default)]
    pub uefi_arm64_snp: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ManifestFile {
    pub name: String,
    pub size: u64,
}

impl Manifest {
    /// (well-known name clients ask for, file of this bundle) pairs.
    fn roles(&self) -> Vec<(&'static str, &str)> {
        let l = &self.loaders;
        [
            (names::KERNEL, &self.kernel),
            (names::INITRD, &self.initrd),
            (names::UNDIONLY, &l.bios),
            (names::IPXE_EFI, &l.uefi_x64),
            (names::SNPONLY, &l.uefi_x64_snp),
            (names::SHIM, &l.uefi_x64_secure_boot),
            (names::GRUB, &l.uefi_x64_secure_boot_grub),
            (names::KERNEL_ARM64, &self.kernel_arm64),
            (names::INITRD_ARM64, &self.initrd_arm64),
            (names::IPXE_ARM64, &l.uefi_arm64),
            (names::SNP_ARM64, &l.uefi_arm64_snp),
        ]
        .into_iter()
        .filter_map(|(role, name)| name.as_deref().map(|n| (role, n)))
        .collect()
    }
}

#[derive(Debug, Clone)]
pub struct Bundle {
    /// Canonical bundle directory, if any.
    root: Option<PathBuf>,
    /// Explicit files: well-known name -> real path (quick form, and the
    /// roles a manifest assigns).
    files: BTreeMap<String, PathBuf>,
    /// Kernel command line from the manifest.
    cmdline: String,
}

impl Bundle {
    /// Opens a bundle directory and checks the files every boot path needs:
    /// with a `manifest.json`, every file it lists (present, listed size) and
    /// the roles it assigns; without one, the well-known [`names`].
    ///
    /// `DIR` is what `image-builder pxe -o DIR` wrote, or what `image-builder
    /// all -o DIR` wrote (the bundle is then `DIR/pxe`).
    pub fn open_dir(dir: &Path) -> Result<Bundle, BundleError> {
        let nested = dir.join("pxe");
        let dir = if !dir.join(MANIFEST).is_file() && nested.join(MANIFEST).is_file() {
            nested.as_path()
        } else {
            dir
        };
        let root = dir
            .canonicalize()
            .map_err(|source| BundleError::Unreadable {
                dir: dir.to_path_buf(),
                source,
            })?;
        let mut b = Bundle {
            root: Some(root.clone()),
            files: BTreeMap::new(),
            cmdline: String::new(),
        };
        let manifest_path = root.join(MANIFEST);
        let mut missing = Vec::new();
        if manifest_path.is_file() {
            let m = read_manifest(&manifest_path)?;
            for f in &m.files {
                match b
                    .resolve(&f.name)
                    .map(|p| std::fs::metadata(p).map(|md| md.len()))
                {
                    Ok(Ok(size)) if size == f.size => {}
                    Ok(Ok(size)) => missing.push(format!(
                        "{} (truncated or changed: {size} bytes, manifest says {})",
                        f.name, f.size
                    )),
                    _ => missing.push(f.name.clone()),
                }
            }
            for (role, name) in m.roles() {
                match b.resolve(name) {
                    Ok(p) => {
                        b.files.insert(role.to_string(), p);
                    }
                    Err(e) if e.is_violation() => {
                        return Err(BundleError::ManifestPath {
                            path: manifest_path,
                            role,
                            name: name.to_string(),
                        })
                    }
                    Err(_) => {
                        if !missing.iter().any(|m| m == name) {
                            missing.push(name.to_string());
                        }
                    }
                }
            }
            b.cmdline = m.cmdline.trim().to_string();
        }
        if missing.is_empty() {
            // One complete live system is enough; a partial other one is
            // named too, since its files show the operator meant to add it.
            let x86 = b.missing_for(KernelArch::X86_64);
            let arm64 = b.missing_for(KernelArch::Arm64);
            if !x86.is_empty() && !arm64.is_empty() {
                missing = x86;
                if b.has_any(KernelArch::Arm64) {
                    missing.extend(arm64);
                }
            }
        }
        if !missing.is_empty() {
            return Err(BundleError::Incomplete {
                dir: dir.to_path_buf(),
                missing,
            });
        }
        Ok(b)
    }

    /// What clients of `arch` need and the bundle lacks: kernel, initrd and
    /// a loader (x86-64: `undionly.kpxe` and a UEFI iPXE, both required
    /// as before arm64 existed). Empty when `arch` is fully served.
    pub fn missing_for(&self, arch: KernelArch) -> Vec<String> {
        let mut missing: Vec<String> = self.missing_live_system(arch);
        if arch == KernelArch::X86_64 && !self.has(names::UNDIONLY) {
            missing.push(names::UNDIONLY.into());
        }
        let [a, b] = arch.uefi_loaders();
        if !self.has(a) && !self.has(b) {
            missing.push(format!("{a} or {b}"));
        }
        missing
    }

    /// True if the bundle holds any file of `arch`'s live system or loaders.
    pub fn has_any(&self, arch: KernelArch) -> bool {
        let [a, b] = arch.uefi_loaders();
        [arch.kernel(), arch.initrd(), a, b]
            .iter()
            .any(|n| self.has(n))
    }

    /// Architectures with some files but not all, and what they lack: their
    /// clients will be refused (said once at start, and per client).
    pub fn partial(&self) -> Vec<(KernelArch, Vec<String>)> {
        KernelArch::ALL
            .into_iter()
            .filter(|a| self.has_any(*a))
            .map(|a| (a, self.missing_for(a)))
            .filter(|(_, m)| !m.is_empty())
            .collect()
    }

    /// The kernel and initrd of `arch` the bundle lacks: a client of that
    /// architecture must be refused rather than handed another one's.
    pub fn missing_live_system(&self, arch: KernelArch) -> Vec<String> {
        [arch.kernel(), arch.initrd()]
            .into_iter()
            .filter(|n| !self.has(n))
            .map(String::from)
            .collect()
    }

    /// Kernel command line the bundle asks for (its manifest's `cmdline`).
    pub fn cmdline(&self) -> &str {
        &self.cmdline
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
        Ok(Bundle {
            root: None,
            files,
            cmdline: String::new(),
        })
    }

    /// Adds an arm64 live system and its iPXE (`bin-arm64-efi/snp.efi` or
    /// `ipxe.efi`, served as `snp-arm64.efi`) to a quick-form bundle:
    /// Debian 12 packages no arm64 iPXE, so the operator names all three.
    pub fn with_arm64(
        mut self,
        kernel: &Path,
        initrd: &Path,
        loader: &Path,
    ) -> Result<Bundle, BundleError> {
        for (what, name, path) in [
            ("arm64 kernel", names::KERNEL_ARM64, kernel),
            ("arm64 initrd", names::INITRD_ARM64, initrd),
            ("arm64 iPXE", names::SNP_ARM64, loader),
        ] {
            std::fs::File::open(path).map_err(|source| BundleError::FileUnreadable {
                what,
                path: path.to_path_buf(),
                source,
            })?;
            self.files.insert(name.to_string(), path.to_path_buf());
        }
        Ok(self)
    }

    /// An empty bundle rooted at `dir`, without completeness checks (tests).
    pub fn unchecked(dir: &Path) -> std::io::Result<Bundle> {
        Ok(Bundle {
            root: Some(dir.canonicalize()?),
            files: BTreeMap::new(),
            cmdline: String::new(),
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
            names::KERNEL_ARM64,
            names::INITRD_ARM64,
            names::SNP_ARM64,
            names::IPXE_ARM64,
        ];
        all.iter()
            .filter(|n| self.has(n))
            .map(|n| n.to_string())
            .collect()
    }

    /// Maps a name from the network to a regular file inside the bundle.
    pub fn resolve(&self, name: &str) -> Result<PathBuf, ResolveError> {
        let clean = clean_name(name)?;
        let key = clean.to_string_lossy().into_owned();
        if let Some(p) = self.files.get(&key) {
            return Ok(p.clone());
        }
        let Some(root) = &self.root else {
            return Err(ResolveError::NotFound { name: name.into() });
        };
        confine_clean(root, &clean, name)
    }
}

/// Maps a name from the network to a regular file under `root` (which must
/// be canonical): `..` components and symlinks leading out of `root` are
/// refused, a leading `/` means `root`, backslashes are separators.
pub fn confine(root: &Path, name: &str) -> Result<PathBuf, ResolveError> {
    let clean = clean_name(name)?;
    confine_clean(root, &clean, name)
}

/// `name` as a relative path without `.`, `..` (refused) or root.
fn clean_name(name: &str) -> Result<PathBuf, ResolveError> {
    if name.is_empty() || name.contains('\0') {
        return Err(ResolveError::Invalid { name: name.into() });
    }
    // Windows-style clients send backslashes.
    let norm = name.replace('\\', "/");
    let mut clean = PathBuf::new();
    for c in Path::new(&norm).components() {
        match c {
            Component::Normal(s) => clean.push(s),
            // A leading `/` is the root (GRUB sends `/grub/grub.cfg`).
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => return Err(ResolveError::Traversal { name: name.into() }),
            Component::Prefix(_) => return Err(ResolveError::Invalid { name: name.into() }),
        }
    }
    if clean.as_os_str().is_empty() {
        return Err(ResolveError::NotFound { name: name.into() });
    }
    Ok(clean)
}

fn confine_clean(root: &Path, clean: &Path, name: &str) -> Result<PathBuf, ResolveError> {
    let resolved = match root.join(clean).canonicalize() {
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

fn read_manifest(path: &Path) -> Result<Manifest, BundleError> {
    let bytes = std::fs::read(path).map_err(|source| BundleError::ManifestUnreadable {
        path: path.to_path_buf(),
        source,
    })?;
    let m: Manifest =
        serde_json::from_slice(&bytes).map_err(|source| BundleError::ManifestSyntax {
            path: path.to_path_buf(),
            source,
        })?;
    if m.format != MANIFEST_FORMAT || m.version != MANIFEST_VERSION {
        return Err(BundleError::ManifestVersion {
            path: path.to_path_buf(),
            format: m.format,
            version: m.version,
        });
    }
    Ok(m)
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
        // A leading `/` is the bundle root, never the host's root.
        assert!(b.resolve("/sub/a.txt").is_ok());
        assert!(matches!(
            b.resolve("/etc/passwd"),
            Err(ResolveError::NotFound { .. })
        ));
        assert!(matches!(
            b.resolve("/../secret"),
            Err(ResolveError::Traversal { .. })
        ));
        assert!(matches!(b.resolve("/"), Err(ResolveError::NotFound { .. })));
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
        // arm64 files named on the command line join the quick form.
        let b = b.with_arm64(&k, &i, &l).expect("arm64");
        assert!(b.missing_for(KernelArch::Arm64).is_empty());
        assert_eq!(b.resolve(names::SNP_ARM64), Ok(l.clone()));
        let e = b.with_arm64(&k, Path::new("/nonexistent/initrd"), &l);
        assert!(
            matches!(
                &e,
                Err(BundleError::FileUnreadable {
                    what: "arm64 initrd",
                    ..
                })
            ),
            "{e:?}"
        );
    }

    /// A manifest as `image-builder pxe` writes it (image-builder/src/pxe.rs).
    fn image_builder_manifest(files: &[(&str, usize)]) -> String {
        let listed: Vec<String> = files
            .iter()
            .map(|(n, size)| format!(r#"{{"name":"{n}","size":{size},"sha256":"00"}}"#))
            .collect();
        format!(
            r#"{{"format":"rescue-pxe-bundle","version":1,"kernel_version":"6.1.0-56-amd64",
            "kernel":"vmlinuz","initrd":"initramfs.img","cmdline":"console=tty0 console=ttyS0,115200n8",
            "loaders":{{"bios":"undionly.kpxe","uefi_x64":"ipxe.efi","uefi_x64_snp":"snponly.efi",
            "uefi_x64_secure_boot":"shimx64.efi","uefi_x64_secure_boot_grub":"grubx64.efi"}},
            "ipxe_script":"boot.ipxe","grub_cfg":"grub/grub.cfg","source_date_epoch":0,
            "files":[{}]}}"#,
            listed.join(",")
        )
    }

    #[test]
    fn manifest_maps_roles_and_checks_every_listed_file() {
        let t = tempfile::tempdir().expect("tempdir");
        let files = [
            ("vmlinuz", 5),
            ("initramfs.img", 7),
            ("undionly.kpxe", 3),
            ("ipxe.efi", 3),
            ("snponly.efi", 3),
            ("shimx64.efi", 4),
            ("grubx64.efi", 4),
            ("grub/grub.cfg", 2),
        ];
        std::fs::create_dir(t.path().join("grub")).expect("mkdir");
        for (n, size) in files {
            std::fs::write(t.path().join(n), vec![b'x'; size]).expect("write");
        }
        std::fs::write(t.path().join(MANIFEST), image_builder_manifest(&files)).expect("write");
        let b = Bundle::open_dir(t.path()).expect("bundle");
        // Clients ask for initrd.img; the bundle calls it initramfs.img.
        assert_eq!(
            b.resolve(names::INITRD).expect("initrd"),
            t.path()
                .canonicalize()
                .expect("canon")
                .join("initramfs.img")
        );
        assert_eq!(b.cmdline(), "console=tty0 console=ttyS0,115200n8");
        assert_eq!(b.inventory().len(), 7, "{:?}", b.inventory());

        // `image-builder all -o DIR` writes the bundle to DIR/pxe.
        let all = tempfile::tempdir().expect("tempdir");
        let pxe = all.path().join("pxe");
        std::fs::create_dir(&pxe).expect("mkdir");
        for entry in std::fs::read_dir(t.path()).expect("ls").flatten() {
            std::fs::rename(entry.path(), pxe.join(entry.file_name())).expect("mv");
        }
        let nested = Bundle::open_dir(all.path()).expect("nested bundle");
        assert_eq!(
            nested.resolve(names::INITRD).expect("initrd"),
            pxe.canonicalize().expect("canon").join("initramfs.img")
        );
        for entry in std::fs::read_dir(&pxe).expect("ls").flatten() {
            std::fs::rename(entry.path(), t.path().join(entry.file_name())).expect("mv");
        }

        // A listed file that is missing or has another size is named.
        std::fs::write(t.path().join("snponly.efi"), b"xy").expect("write");
        std::fs::remove_file(t.path().join("grubx64.efi")).expect("rm");
        let msg = Bundle::open_dir(t.path())
            .expect_err("incomplete")
            .to_string();
        assert!(
            msg.contains("snponly.efi (truncated or changed: 2 bytes, manifest says 3)")
                && msg.contains("grubx64.efi"),
            "{msg}"
        );

        // A manifest pointing outside the bundle is refused.
        let evil = image_builder_manifest(&[])
            .replace(r#""kernel":"vmlinuz""#, r#""kernel":"../vmlinuz""#);
        std::fs::write(t.path().join(MANIFEST), evil).expect("write");
        assert!(matches!(
            Bundle::open_dir(t.path()),
            Err(BundleError::ManifestPath {
                role: "vmlinuz",
                ..
            })
        ));
        // Another format version is refused with both versions named.
        let v2 = image_builder_manifest(&[]).replace(r#""version":1"#, r#""version":2"#);
        std::fs::write(t.path().join(MANIFEST), v2).expect("write");
        let e = Bundle::open_dir(t.path()).expect_err("version");
        assert!(
            matches!(e, BundleError::ManifestVersion { version: 2, .. }),
            "{e}"
        );
        std::fs::write(t.path().join(MANIFEST), b"{").expect("write");
        assert!(matches!(
            Bundle::open_dir(t.path()),
            Err(BundleError::ManifestSyntax { .. })
        ));
    }

    #[test]
    fn arm64_roles_from_the_manifest_and_well_known_names() {
        let t = tempfile::tempdir().expect("tempdir");
        let files = [
            ("vmlinuz", 5),
            ("initramfs.img", 7),
            ("undionly.kpxe", 3),
            ("ipxe.efi", 3),
            ("snponly.efi", 3),
            ("shimx64.efi", 4),
            ("grubx64.efi", 4),
            ("arm64/Image.gz", 6),
            ("arm64/initramfs.img", 8),
            ("arm64/snp.efi", 2),
        ];
        std::fs::create_dir(t.path().join("arm64")).expect("mkdir");
        for (n, size) in files {
            std::fs::write(t.path().join(n), vec![b'x'; size]).expect("write");
        }
        let arm64_roles = r#""kernel_arm64":"arm64/Image.gz","initrd_arm64":"arm64/initramfs.img","loaders":{"uefi_arm64_snp":"arm64/snp.efi","#;
        let m = image_builder_manifest(&files).replace(r#""loaders":{"#, arm64_roles);
        std::fs::write(t.path().join(MANIFEST), &m).expect("write");
        let b = Bundle::open_dir(t.path()).expect("bundle");
        let root = t.path().canonicalize().expect("canon");
        for (role, file) in [
            (names::KERNEL_ARM64, "arm64/Image.gz"),
            (names::INITRD_ARM64, "arm64/initramfs.img"),
            (names::SNP_ARM64, "arm64/snp.efi"),
            (names::KERNEL, "vmlinuz"),
        ] {
            assert_eq!(b.resolve(role), Ok(root.join(file)), "{role}");
        }
        assert!(!b.has(names::IPXE_ARM64));
        assert!(b.missing_for(KernelArch::Arm64).is_empty());
        assert!(b.missing_for(KernelArch::X86_64).is_empty());
        assert!(b.partial().is_empty());

        // A listed arm64 role whose file is gone is named.
        std::fs::remove_file(t.path().join("arm64/Image.gz")).expect("rm");
        let msg = Bundle::open_dir(t.path()).expect_err("missing").to_string();
        assert!(msg.ends_with("missing: arm64/Image.gz"), "{msg}");
        // Also when the manifest names it without listing it in `files`.
        let unlisted: Vec<_> = files
            .iter()
            .filter(|(n, _)| *n != "arm64/Image.gz")
            .copied()
            .collect();
        let m = image_builder_manifest(&unlisted).replace(r#""loaders":{"#, arm64_roles);
        std::fs::write(t.path().join(MANIFEST), &m).expect("write");
        let msg = Bundle::open_dir(t.path()).expect_err("missing").to_string();
        assert!(msg.ends_with("missing: arm64/Image.gz"), "{msg}");
        // An arm64 role pointing outside the bundle is refused by role.
        let evil = m.replace("arm64/Image.gz", "../Image.gz");
        std::fs::write(t.path().join(MANIFEST), evil).expect("write");
        assert!(matches!(
            Bundle::open_dir(t.path()),
            Err(BundleError::ManifestPath {
                role: "vmlinuz-arm64",
                ..
            })
        ));

        // An arm64-only manifest (no x86-64 roles at all) is a bundle.
        let arm_only = tempfile::tempdir().expect("tempdir");
        for n in ["Image", "initrd", "snp.efi"] {
            std::fs::write(arm_only.path().join(n), b"a").expect("write");
        }
        std::fs::write(
            arm_only.path().join(MANIFEST),
            r#"{"format":"rescue-pxe-bundle","version":1,"kernel_arm64":"Image",
               "initrd_arm64":"initrd","loaders":{"uefi_arm64_snp":"snp.efi"}}"#,
        )
        .expect("write");
        let b = Bundle::open_dir(arm_only.path()).expect("arm64-only bundle");
        assert_eq!(
            b.missing_live_system(KernelArch::X86_64),
            vec!["vmlinuz", "initrd.img"]
        );
        assert!(b.missing_for(KernelArch::Arm64).is_empty());
    }

    #[test]
    fn manifest_less_bundles_need_one_complete_architecture() {
        let t = tempfile::tempdir().expect("tempdir");
        let touch = |n: &str| std::fs::write(t.path().join(n), b"x").expect("write");
        // The arm64 well-known names alone make a bundle.
        for n in [names::KERNEL_ARM64, names::INITRD_ARM64, names::IPXE_ARM64] {
            touch(n);
        }
        let b = Bundle::open_dir(t.path()).expect("arm64 only");
        assert_eq!(
            b.inventory(),
            vec!["vmlinuz-arm64", "initrd-arm64.img", "ipxe-arm64.efi"]
        );
        assert!(b.partial().is_empty());
        // A started arm64 set is named with the x86-64 files when neither
        // is complete.
        std::fs::remove_file(t.path().join(names::INITRD_ARM64)).expect("rm");
        let msg = Bundle::open_dir(t.path())
            .expect_err("incomplete")
            .to_string();
        assert!(
            msg.ends_with(
                "missing: vmlinuz, initrd.img, undionly.kpxe, snponly.efi or ipxe.efi, initrd-arm64.img"
            ),
            "{msg}"
        );
        // With x86-64 complete, the partial arm64 set opens, and is said.
        for n in [
            names::KERNEL,
            names::INITRD,
            names::UNDIONLY,
            names::SNPONLY,
        ] {
            touch(n);
        }
        let b = Bundle::open_dir(t.path()).expect("x86-64 complete");
        assert_eq!(
            b.partial(),
            vec![(KernelArch::Arm64, vec!["initrd-arm64.img".to_string()])]
        );
        std::fs::remove_file(t.path().join(names::IPXE_ARM64)).expect("rm");
        std::fs::remove_file(t.path().join(names::KERNEL_ARM64)).expect("rm");
        assert!(Bundle::open_dir(t.path())
            .expect("x86-64")
            .partial()
            .is_empty());
    }
}
