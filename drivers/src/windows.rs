//! Offline Windows installations and the target machine's storage controllers.
//!
//! - [`find_installations`]: `Windows\System32\config\SYSTEM` under a mounted
//!   volume root (NTFS mounted by ntfs-3g/ntfs3 keeps Windows' mixed case, so
//!   paths are resolved case-insensitively), then [`SystemFacts`] from the hive:
//!   architecture (`Control\Session Manager\Environment\PROCESSOR_ARCHITECTURE`),
//!   version (SOFTWARE `CurrentVersion` if present, else the inbox driver package
//!   versions in `DriverDatabase\DriverPackages`, else the presence of
//!   `CriticalDeviceDatabase` = Windows 7 or older), and the control sets named by
//!   `Select` (Current, Default, LastKnownGood: each one is edited).
//! - [`detect_controllers`]: PCI mass-storage controllers (class 01xxxx) from a
//!   sysfs tree given as a parameter (tests use a fake one). On Windows
//!   (WinPE), [`crate::pnp`] asks SetupAPI instead.
//! - [`profile`]: `--for` profiles and explicit hardware IDs.
//! - [`pci_hardware_ids`]: Windows' PCI ID list, most specific first (Microsoft
//!   Learn, "Identifiers for PCI Devices").

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hive::{Hive, HiveError};
use crate::inf::{Arch, Target};

/// Errors finding or inspecting an installation.
#[derive(Debug, thiserror::Error)]
pub enum WindowsError {
    /// No `Windows\System32\config\SYSTEM` below the root.
    #[error("no Windows installation (Windows\\System32\\config\\SYSTEM) under {root}")]
    NotFound {
        /// Volume root searched.
        root: String,
    },
    /// Hive error with the hive file.
    #[error("{file}: {source}")]
    Hive {
        /// Hive file.
        file: String,
        /// Cause.
        #[source]
        source: HiveError,
    },
    /// Something the hive should have is missing.
    #[error("{file}: {what}")]
    Missing {
        /// Hive file.
        file: String,
        /// What is missing.
        what: String,
    },
    /// Reading sysfs.
    #[error("reading {path}: {source}")]
    Io {
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// Unknown `--for` profile.
    #[error("unknown target profile {name:?}")]
    UnknownProfile {
        /// As given.
        name: String,
    },
}

impl WindowsError {
    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            WindowsError::NotFound { .. } => "mount the Windows system partition (the one with the Windows folder) and pass its mount point",
            WindowsError::Hive { source, .. } => source.hint(),
            WindowsError::Missing { .. } => "the SYSTEM hive looks incomplete; check that it belongs to a Windows installation",
            WindowsError::Io { .. } => "run on the target machine with /sys mounted, or use --for to name the controller",
            WindowsError::UnknownProfile { .. } => "use one of ahci, nvme, virtio, vmware, hyperv, intel-rst, or a hardware ID like PCI\\VEN_8086&DEV_2922",
        }
    }
}

/// Resolve `rel` (components separated by `/` or `\`) below `base`, ignoring case.
pub fn resolve_ci(base: &Path, rel: &str) -> Option<PathBuf> {
    let mut cur = base.to_path_buf();
    for part in rel.split(['/', '\\']).filter(|p| !p.is_empty()) {
        let exact = cur.join(part);
        if exact.exists() {
            cur = exact;
            continue;
        }
        let found = std::fs::read_dir(&cur).ok()?.flatten().find(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(part))
        })?;
        cur = found.path();
    }
    Some(cur)
}

/// Where the version came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum VersionSource {
    /// SOFTWARE hive `Microsoft\Windows NT\CurrentVersion`.
    SoftwareHive,
    /// Inbox driver package versions in SYSTEM `DriverDatabase`.
    DriverDatabase,
    /// Only `CriticalDeviceDatabase` found: Windows 7 / Vista or older.
    CriticalDeviceDatabase,
}

/// Windows version facts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowsVersion {
    /// Major (6 or 10).
    pub major: u32,
    /// Minor (6.1 = 7, 6.2 = 8, 6.3 = 8.1).
    pub minor: u32,
    /// Build (0 = unknown).
    pub build: u32,
    /// Human name ("Windows 10 1709", "Windows 8.1", "Windows 7 or older").
    pub name: String,
    /// Evidence.
    pub source: VersionSource,
}

impl WindowsVersion {
    /// From major/minor/build.
    pub fn new(major: u32, minor: u32, build: u32, source: VersionSource) -> WindowsVersion {
        let name = match (major, minor) {
            _ if source == VersionSource::CriticalDeviceDatabase => "Windows 7 or older".to_owned(),
            (10, _) if build >= 22000 => format!("Windows 11 (build {build})"),
            (10, _) => format!("Windows 10 (build {build})"),
            (6, 3) => "Windows 8.1".to_owned(),
            (6, 2) => "Windows 8".to_owned(),
            (6, 1) => "Windows 7".to_owned(),
            (6, 0) => "Windows Vista".to_owned(),
            _ => format!("Windows NT {major}.{minor}"),
        };
        WindowsVersion {
            major,
            minor,
            build,
            name,
            source,
        }
    }

    /// Windows 8 or later: uses DriverDatabase and StartOverride.
    pub fn is_8_or_later(&self) -> bool {
        (self.major, self.minor) >= (6, 2)
    }
}

/// What the SYSTEM (and SOFTWARE) hive say about an installation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemFacts {
    /// Architecture.
    pub arch: Arch,
    /// Version.
    pub version: WindowsVersion,
    /// Control set key names to edit (`ControlSet001`...), current first.
    pub control_sets: Vec<String>,
    /// The current control set.
    pub current_control_set: String,
    /// Has `Control\CriticalDeviceDatabase` (Windows 7 and older).
    pub has_cddb: bool,
    /// Has root `DriverDatabase` (Windows 8 and later).
    pub has_driver_database: bool,
}

impl SystemFacts {
    /// INF matching target.
    pub fn target(&self) -> Target {
        Target {
            arch: self.arch,
            major: self.version.major,
            minor: self.version.minor,
            build: self.version.build,
        }
    }
}

/// Read the facts from an open SYSTEM hive (and SOFTWARE, when available).
pub fn system_facts(
    system: &Hive,
    software: Option<&Hive>,
    file: &str,
) -> Result<SystemFacts, WindowsError> {
    let herr = |source| WindowsError::Hive {
        file: file.to_owned(),
        source,
    };
    let missing = |what: &str| WindowsError::Missing {
        file: file.to_owned(),
        what: what.to_owned(),
    };
    let mut control_sets: Vec<String> = Vec::new();
    let current = system
        .get_u32("Select", "Current")
        .map_err(herr)?
        .ok_or_else(|| missing("Select\\Current is missing"))?;
    for name in ["Current", "Default", "LastKnownGood"] {
        if let Some(n) = system.get_u32("Select", name).map_err(herr)? {
            let cs = format!("ControlSet{n:03}");
            if n != 0
                && !control_sets.contains(&cs)
                && system.open_key(&cs).map_err(herr)?.is_some()
            {
                control_sets.push(cs);
            }
        }
    }
    let current_control_set = format!("ControlSet{current:03}");
    if !control_sets.contains(&current_control_set) {
        return Err(missing(&format!(
            "{current_control_set} (Select\\Current) does not exist"
        )));
    }
    let env = format!("{current_control_set}\\Control\\Session Manager\\Environment");
    let arch_s = system
        .get_string(&env, "PROCESSOR_ARCHITECTURE")
        .map_err(herr)?
        .ok_or_else(|| missing("PROCESSOR_ARCHITECTURE is missing"))?;
    let arch = Arch::from_name(&arch_s)
        .ok_or_else(|| missing(&format!("unknown PROCESSOR_ARCHITECTURE {arch_s:?}")))?;
    let has_cddb = system
        .open_key(&format!(
            "{current_control_set}\\Control\\CriticalDeviceDatabase"
        ))
        .map_err(herr)?
        .is_some();
    let has_driver_database = system.open_key("DriverDatabase").map_err(herr)?.is_some();
    let version = match software.map(software_version).transpose().map_err(herr)?.flatten() {
        Some(v) => v,
        None => match driver_database_version(system).map_err(herr)? {
            Some(v) => v,
            None if has_cddb => WindowsVersion::new(6, 1, 0, VersionSource::CriticalDeviceDatabase),
            None => return Err(missing("cannot tell the Windows version (no SOFTWARE hive, DriverDatabase or CriticalDeviceDatabase)")),
        },
    };
    Ok(SystemFacts {
        arch,
        version,
        control_sets,
        current_control_set,
        has_cddb,
        has_driver_database,
    })
}

fn software_version(sw: &Hive) -> Result<Option<WindowsVersion>, HiveError> {
    let k = "Microsoft\\Windows NT\\CurrentVersion";
    let build = sw
        .get_string(k, "CurrentBuildNumber")?
        .or(sw.get_string(k, "CurrentBuild")?)
        .and_then(|b| b.trim().parse().ok())
        .unwrap_or(0);
    if let Some(major) = sw.get_u32(k, "CurrentMajorVersionNumber")? {
        let minor = sw.get_u32(k, "CurrentMinorVersionNumber")?.unwrap_or(0);
        return Ok(Some(WindowsVersion::new(
            major,
            minor,
            build,
            VersionSource::SoftwareHive,
        )));
    }
    let Some(cv) = sw.get_string(k, "CurrentVersion")? else {
        return Ok(None);
    };
    let mut it = cv.split('.').map(|p| p.trim().parse::<u32>().ok());
    match (it.next().flatten(), it.next().flatten()) {
        (Some(a), Some(b)) => Ok(Some(WindowsVersion::new(
            a,
            b,
            build,
            VersionSource::SoftwareHive,
        ))),
        _ => Ok(None),
    }
}

/// Decoded `DriverDatabase\DriverPackages\<pkg>\Version` (48 bytes, layout read
/// from real Windows 8.1 and 10 hives): byte 0 = 0xFF for inbox packages (0x00
/// for third party), byte 1 = 0xFF, u16 architecture (0 x86, 9 amd64, 12 arm64),
/// u32 0, class GUID (16), driver date FILETIME (8), driver version (8: w<<48 |
/// x<<32 | y<<16 | z), 8 bytes (0 for inbox packages).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackageVersion {
    /// Inbox (shipped with Windows).
    pub inbox: bool,
    /// PROCESSOR_ARCHITECTURE_* number.
    pub arch: u16,
    /// Class GUID bytes (mixed-endian as in a Windows GUID).
    pub class_guid: [u8; 16],
    /// Driver date FILETIME.
    pub date: u64,
    /// Driver version parts.
    pub version: [u16; 4],
}

impl PackageVersion {
    /// Parse the 48-byte value.
    pub fn parse(b: &[u8]) -> Option<PackageVersion> {
        if b.len() < 48 {
            return None;
        }
        let mut class_guid = [0u8; 16];
        class_guid.copy_from_slice(&b[8..24]);
        let date = u64::from_le_bytes(b[24..32].try_into().ok()?);
        let v = u64::from_le_bytes(b[32..40].try_into().ok()?);
        Some(PackageVersion {
            inbox: b[0] == 0xFF,
            arch: u16::from_le_bytes([b[2], b[3]]),
            class_guid,
            date,
            version: [
                (v >> 48) as u16,
                (v >> 32) as u16,
                (v >> 16) as u16,
                v as u16,
            ],
        })
    }

    /// Encode as Windows stores it.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 48];
        b[0] = if self.inbox { 0xFF } else { 0x00 };
        b[1] = 0xFF;
        b[2..4].copy_from_slice(&self.arch.to_le_bytes());
        b[8..24].copy_from_slice(&self.class_guid);
        b[24..32].copy_from_slice(&self.date.to_le_bytes());
        let [w, x, y, z] = self.version;
        let v = (u64::from(w) << 48) | (u64::from(x) << 32) | (u64::from(y) << 16) | u64::from(z);
        b[32..40].copy_from_slice(&v.to_le_bytes());
        b
    }
}

/// PROCESSOR_ARCHITECTURE_* number of an arch.
pub fn arch_number(a: Arch) -> u16 {
    match a {
        Arch::X86 => 0,
        Arch::Arm => 5,
        Arch::Ia64 => 6,
        Arch::Amd64 => 9,
        Arch::Arm64 => 12,
    }
}

/// Windows version from the inbox packages: the most common (major, minor,
/// build) among them (updated packages keep the OS build, only the revision moves).
fn driver_database_version(system: &Hive) -> Result<Option<WindowsVersion>, HiveError> {
    let Some(pk) = system.open_key("DriverDatabase\\DriverPackages")? else {
        return Ok(None);
    };
    let mut counts: std::collections::BTreeMap<(u16, u16, u16), usize> = Default::default();
    for p in system.subkeys(pk)? {
        if let Some(v) = system
            .value(p, "Version")?
            .and_then(|v| PackageVersion::parse(&v.data))
        {
            if v.inbox {
                *counts
                    .entry((v.version[0], v.version[1], v.version[2]))
                    .or_default() += 1;
            }
        }
    }
    Ok(counts
        .into_iter()
        .max_by_key(|(_, n)| *n)
        .map(|((a, b, c), _)| {
            WindowsVersion::new(a.into(), b.into(), c.into(), VersionSource::DriverDatabase)
        }))
}

/// An offline installation on a mounted volume.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WindowsInstall {
    /// Volume root.
    pub root: PathBuf,
    /// The Windows directory as spelled on disk.
    pub windows_dir: PathBuf,
    /// SYSTEM hive file.
    pub system_hive: PathBuf,
    /// SOFTWARE hive file, if present.
    pub software_hive: Option<PathBuf>,
    /// Facts.
    pub facts: SystemFacts,
    /// Hive open warnings (dirty, logs).
    pub warnings: Vec<String>,
}

/// The installation whose Windows folder is `dir` (on the volume `root`), or
/// `None` when `dir` has no `System32\config\SYSTEM`.
pub fn installation_in(root: &Path, dir: &Path) -> Result<Option<WindowsInstall>, WindowsError> {
    let Some(system_hive) = resolve_ci(dir, "System32/config/SYSTEM").filter(|p| p.is_file()) else {
        return Ok(None);
    };
    let file = system_hive.display().to_string();
    let system = Hive::open(&system_hive).map_err(|source| WindowsError::Hive {
        file: file.clone(),
        source,
    })?;
    let software_hive = resolve_ci(dir, "System32/config/SOFTWARE").filter(|p| p.is_file());
    // A damaged SOFTWARE hive only costs us the version source.
    let software = software_hive.as_ref().and_then(|p| Hive::open(p).ok());
    let facts = system_facts(&system, software.as_ref(), &file)?;
    Ok(Some(WindowsInstall {
        root: root.to_path_buf(),
        windows_dir: dir.to_path_buf(),
        system_hive,
        software_hive,
        facts,
        warnings: system.report.warnings.clone(),
    }))
}

/// Find Windows installations under a mounted volume root (checks `Windows` and
/// any top-level folder holding `System32\config\SYSTEM`, e.g. `WINNT`).
pub fn find_installations(root: &Path) -> Result<Vec<WindowsInstall>, WindowsError> {
    let mut out = Vec::new();
    let entries = std::fs::read_dir(root).map_err(|source| WindowsError::Io {
        path: root.display().to_string(),
        source,
    })?;
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    for dir in dirs {
        out.extend(installation_in(root, &dir)?);
    }
    if out.is_empty() {
        return Err(WindowsError::NotFound {
            root: root.display().to_string(),
        });
    }
    Ok(out)
}

/// A PCI function as sysfs describes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PciDevice {
    /// Vendor ID.
    pub vendor: u16,
    /// Device ID.
    pub device: u16,
    /// Subsystem vendor ID.
    pub subsys_vendor: u16,
    /// Subsystem device ID.
    pub subsys_device: u16,
    /// Revision.
    pub revision: u8,
    /// Class code (base << 16 | sub << 8 | prog-if).
    pub class: u32,
}

/// Windows PCI hardware IDs then compatible IDs, most specific first
/// (Microsoft Learn, "Identifiers for PCI Devices").
pub fn pci_hardware_ids(d: &PciDevice) -> (Vec<String>, Vec<String>) {
    let v = format!("PCI\\VEN_{:04X}", d.vendor);
    let vd = format!("{v}&DEV_{:04X}", d.device);
    let ss = format!("SUBSYS_{:04X}{:04X}", d.subsys_device, d.subsys_vendor);
    let rev = format!("REV_{:02X}", d.revision);
    let cc6 = format!("CC_{:06X}", d.class & 0xFF_FFFF);
    let cc4 = format!("CC_{:04X}", (d.class >> 8) & 0xFFFF);
    let hw = vec![
        format!("{vd}&{ss}&{rev}"),
        format!("{vd}&{ss}"),
        format!("{vd}&{cc6}"),
        format!("{vd}&{cc4}"),
    ];
    let compat = vec![
        format!("{vd}&{rev}"),
        vd.clone(),
        format!("{v}&{cc6}"),
        format!("{v}&{cc4}"),
        v.clone(),
        format!("PCI\\{cc6}"),
        format!("PCI\\{cc4}"),
    ];
    (hw, compat)
}

/// A boot-critical controller the restored Windows must be able to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Controller {
    /// Where it came from (`sysfs 0000:00:1f.2`, `profile nvme`, `explicit`).
    pub origin: String,
    /// Description for the plan.
    pub description: String,
    /// Hardware IDs then compatible IDs, most specific first.
    pub ids: Vec<String>,
}

fn read_hex(dir: &Path, name: &str) -> Result<u32, WindowsError> {
    let p = dir.join(name);
    let s = std::fs::read_to_string(&p).map_err(|source| WindowsError::Io {
        path: p.display().to_string(),
        source,
    })?;
    let t = s.trim();
    u32::from_str_radix(t.trim_start_matches("0x"), 16).map_err(|e| WindowsError::Io {
        path: p.display().to_string(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{t:?}: {e}")),
    })
}

/// Mass-storage controllers (PCI class 01xxxx) under `sysfs_root` (normally `/sys`).
pub fn detect_controllers(sysfs_root: &Path) -> Result<Vec<Controller>, WindowsError> {
    let dir = sysfs_root.join("bus/pci/devices");
    let rd = std::fs::read_dir(&dir).map_err(|source| WindowsError::Io {
        path: dir.display().to_string(),
        source,
    })?;
    let mut slots: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    slots.sort();
    let mut out = Vec::new();
    for s in slots {
        let class = read_hex(&s, "class")?;
        if class >> 16 != 0x01 {
            continue;
        }
        let d = PciDevice {
            vendor: read_hex(&s, "vendor")? as u16,
            device: read_hex(&s, "device")? as u16,
            subsys_vendor: read_hex(&s, "subsystem_vendor").unwrap_or(0) as u16,
            subsys_device: read_hex(&s, "subsystem_device").unwrap_or(0) as u16,
            revision: read_hex(&s, "revision").unwrap_or(0) as u8,
            class,
        };
        let (hw, compat) = pci_hardware_ids(&d);
        let slot = s
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("?")
            .to_owned();
        out.push(Controller {
            origin: format!("sysfs {slot}"),
            description: format!(
                "PCI {:04x}:{:04x} class {:06x}",
                d.vendor, d.device, d.class
            ),
            ids: hw.into_iter().chain(compat).collect(),
        });
    }
    Ok(out)
}

/// A profile controller: (vendor, device, subsystem vendor, subsystem device, revision, class).
fn pci(
    (vendor, device, subsys_vendor, subsys_device, revision, class): (u16, u16, u16, u16, u8, u32),
    what: &str,
    origin: &str,
) -> Controller {
    let (hw, compat) = pci_hardware_ids(&PciDevice {
        vendor,
        device,
        subsys_vendor,
        subsys_device,
        revision,
        class,
    });
    Controller {
        origin: origin.to_owned(),
        description: what.to_owned(),
        ids: hw.into_iter().chain(compat).collect(),
    }
}

/// Controllers for a `--for` profile, or one explicit hardware ID.
pub fn profile(name: &str) -> Result<Vec<Controller>, WindowsError> {
    let o = format!("profile {name}");
    let ids = |what: &str, ids: &[&str]| Controller {
        origin: o.clone(),
        description: what.to_owned(),
        ids: ids.iter().map(|s| (*s).to_owned()).collect(),
    };
    Ok(match name.to_ascii_lowercase().as_str() {
        "ahci" => vec![ids(
            "standard SATA AHCI controller",
            &["PCI\\CC_010601", "PCI\\CC_0106"],
        )],
        "nvme" => vec![ids(
            "standard NVM Express controller",
            &["PCI\\CC_010802", "PCI\\CC_0108"],
        )],
        "ide" => vec![ids("standard IDE controller", &["PCI\\CC_0101"])],
        "virtio" => vec![
            pci(
                (0x1AF4, 0x1001, 0x1AF4, 0x0002, 0x00, 0x01_0000),
                "virtio-blk (legacy)",
                &o,
            ),
            pci(
                (0x1AF4, 0x1042, 0x1AF4, 0x1100, 0x01, 0x01_0000),
                "virtio-blk (modern)",
                &o,
            ),
            pci(
                (0x1AF4, 0x1004, 0x1AF4, 0x0008, 0x00, 0x01_0000),
                "virtio-scsi (legacy)",
                &o,
            ),
            pci(
                (0x1AF4, 0x1048, 0x1AF4, 0x1100, 0x01, 0x01_0000),
                "virtio-scsi (modern)",
                &o,
            ),
        ],
        "vmware" => vec![
            pci(
                (0x15AD, 0x07C0, 0x15AD, 0x07C0, 0x02, 0x01_0700),
                "VMware PVSCSI",
                &o,
            ),
            pci(
                (0x1000, 0x0054, 0x15AD, 0x1976, 0x01, 0x01_0000),
                "LSI SAS 1068 (VMware)",
                &o,
            ),
            pci(
                (0x15AD, 0x07E0, 0x15AD, 0x07E0, 0x00, 0x01_0601),
                "VMware SATA AHCI",
                &o,
            ),
            pci(
                (0x15AD, 0x07F0, 0x15AD, 0x07F0, 0x00, 0x01_0802),
                "VMware NVMe",
                &o,
            ),
        ],
        "hyperv" => vec![
            ids("Hyper-V VMBus", &["VMBUS", "ACPI\\VMBus"]),
            ids(
                "Hyper-V storage (storvsc)",
                &["VMBUS\\{ba6163d9-04a1-4d29-b605-72e2ffb1dc7f}"],
            ),
        ],
        "intel-rst" => vec![
            ids("Intel RST RAID", &["PCI\\VEN_8086&CC_0104"]),
            ids("Intel RST AHCI", &["PCI\\VEN_8086&CC_0106"]),
            pci(
                (0x8086, 0x9A0B, 0x8086, 0x0000, 0x00, 0x01_0400),
                "Intel VMD (RST)",
                &o,
            ),
        ],
        _ if name.contains('\\') => vec![Controller {
            origin: "explicit".into(),
            description: format!("hardware ID {name}"),
            ids: vec![name.to_ascii_uppercase()],
        }],
        _ => {
            return Err(WindowsError::UnknownProfile {
                name: name.to_owned(),
            })
        }
    })
}

/// Inbox services that drive `id` when present in the installation; used when
/// the DriverDatabase / CriticalDeviceDatabase has no entry (both are checked first).
pub fn inbox_services_for(id: &str) -> &'static [&'static str] {
    let u = id.to_ascii_uppercase();
    let has = |s: &str| u.contains(s);
    if has("CC_010601") || has("CC_0106") {
        &["storahci", "msahci"]
    } else if has("CC_010802") || has("CC_0108") {
        &["stornvme"]
    } else if has("CC_0101") {
        &["pciide", "intelide", "atapi"]
    } else if has("VEN_1AF4&DEV_1001") || has("VEN_1AF4&DEV_1042") {
        &["viostor"]
    } else if has("VEN_1AF4&DEV_1004") || has("VEN_1AF4&DEV_1048") {
        &["vioscsi"]
    } else if has("VEN_15AD&DEV_07C0") {
        &["pvscsi"]
    } else if has("VEN_1000&DEV_0054") || has("VEN_1000&DEV_0056") {
        &["LSI_SAS"]
    } else if has("VMBUS\\{BA6163D9") {
        &["storvsc", "vmbus"]
    } else if u == "VMBUS" || has("ACPI\\VMBUS") {
        &["vmbus"]
    } else if has("VEN_8086&CC_0104") || has("VEN_8086&DEV_9A0B") {
        &["iaStorAVC", "iaStorAV", "iaStorV", "iaStorVD"]
    } else {
        &[]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::regipy;

    #[test]
    fn pci_ids_most_specific_first() {
        let d = PciDevice {
            vendor: 0x8086,
            device: 0x2922,
            subsys_vendor: 0x1AF4,
            subsys_device: 0x1100,
            revision: 2,
            class: 0x01_0601,
        };
        let (hw, compat) = pci_hardware_ids(&d);
        assert_eq!(
            hw,
            [
                "PCI\\VEN_8086&DEV_2922&SUBSYS_11001AF4&REV_02",
                "PCI\\VEN_8086&DEV_2922&SUBSYS_11001AF4",
                "PCI\\VEN_8086&DEV_2922&CC_010601",
                "PCI\\VEN_8086&DEV_2922&CC_0106"
            ]
        );
        assert_eq!(
            compat,
            [
                "PCI\\VEN_8086&DEV_2922&REV_02",
                "PCI\\VEN_8086&DEV_2922",
                "PCI\\VEN_8086&CC_010601",
                "PCI\\VEN_8086&CC_0106",
                "PCI\\VEN_8086",
                "PCI\\CC_010601",
                "PCI\\CC_0106"
            ]
        );
    }

    #[cfg(unix)]
    fn fake_dev(root: &Path, slot: &str, vals: &[(&str, &str)]) {
        let d = root.join("bus/pci/devices").join(slot);
        std::fs::create_dir_all(&d).expect("mkdir");
        for (k, v) in vals {
            std::fs::write(d.join(k), format!("{v}\n")).expect("write");
        }
    }

    // sysfs slot names (0000:02:00.0) are not valid Windows file names.
    #[cfg(unix)]
    #[test]
    fn sysfs_detection_keeps_only_mass_storage() {
        let t = tempfile::tempdir().expect("tmp");
        let common = |v: &'static str, d: &'static str, c: &'static str| {
            vec![
                ("vendor", v),
                ("device", d),
                ("subsystem_vendor", "0x1af4"),
                ("subsystem_device", "0x1100"),
                ("revision", "0x02"),
                ("class", c),
            ]
        };
        fake_dev(
            t.path(),
            "0000:00:1f.2",
            &common("0x8086", "0x2922", "0x010601"),
        );
        fake_dev(
            t.path(),
            "0000:00:02.0",
            &common("0x1234", "0x1111", "0x030000"),
        );
        fake_dev(
            t.path(),
            "0000:01:00.0",
            &common("0x1b36", "0x0010", "0x010802"),
        );
        let c = detect_controllers(t.path()).expect("detect");
        assert_eq!(c.len(), 2);
        assert_eq!(c[0].origin, "sysfs 0000:00:1f.2");
        assert_eq!(c[0].ids[0], "PCI\\VEN_8086&DEV_2922&SUBSYS_11001AF4&REV_02");
        assert_eq!(c[0].ids.last().map(String::as_str), Some("PCI\\CC_0106"));
        assert!(c[1].ids.contains(&"PCI\\CC_010802".to_owned()));
        fake_dev(t.path(), "0000:02:00.0", &[("class", "zz")]);
        let e = detect_controllers(t.path()).expect_err("bad class");
        assert!(e.to_string().contains("0000:02:00.0/class"), "{e}");
        assert!(detect_controllers(&t.path().join("nope")).is_err());
    }

    #[test]
    fn profiles_and_explicit_ids() {
        assert_eq!(profile("nvme").expect("p")[0].ids[0], "PCI\\CC_010802");
        let v = profile("virtio").expect("p");
        assert_eq!(v[0].ids[0], "PCI\\VEN_1AF4&DEV_1001&SUBSYS_00021AF4&REV_00");
        assert!(v[2].ids.contains(&"PCI\\VEN_1AF4&DEV_1004".to_owned()));
        for p in ["ahci", "vmware", "hyperv", "intel-rst", "ide"] {
            assert!(!profile(p).expect("p").is_empty());
        }
        assert_eq!(
            profile("PCI\\VEN_8086&DEV_2922").expect("p")[0].ids,
            ["PCI\\VEN_8086&DEV_2922"]
        );
        assert_eq!(
            profile("pci\\cc_010601").expect("p")[0].ids,
            ["PCI\\CC_010601"]
        );
        let e = profile("floppy").expect_err("unknown");
        assert!(e.hint().contains("nvme"));
    }

    #[test]
    fn facts_of_the_three_generations() {
        let h7 = crate::hive::open_hive_bytes(regipy("SYSTEM")).expect("open");
        let f7 = system_facts(&h7, None, "SYSTEM").expect("facts");
        assert_eq!(f7.arch, Arch::X86);
        assert_eq!(
            f7.control_sets,
            ["ControlSet001", "ControlSet002"],
            "LastKnownGood=2 is edited too"
        );
        assert!(f7.has_cddb && !f7.has_driver_database);
        assert_eq!(f7.version.source, VersionSource::CriticalDeviceDatabase);
        assert_eq!(f7.version.name, "Windows 7 or older");
        assert!(!f7.version.is_8_or_later());

        let h81 = crate::hive::open_hive_bytes(regipy("SYSTEM_2")).expect("open");
        let f81 = system_facts(&h81, None, "SYSTEM_2").expect("facts");
        assert_eq!(f81.arch, Arch::Amd64);
        assert_eq!(
            (f81.version.major, f81.version.minor, f81.version.build),
            (6, 3, 9600)
        );
        assert_eq!(f81.version.name, "Windows 8.1");
        assert_eq!(f81.control_sets, ["ControlSet001"]);

        let h10 = crate::hive::open_hive_bytes(regipy("SYSTEM_B")).expect("open");
        let f10 = system_facts(&h10, None, "SYSTEM_B").expect("facts");
        assert_eq!(
            (f10.version.major, f10.version.minor, f10.version.build),
            (10, 0, 16299)
        );
        assert_eq!(f10.version.source, VersionSource::DriverDatabase);
        assert!(f10.version.is_8_or_later());
    }

    #[test]
    fn version_from_software_hive_wins() {
        let h7 = crate::hive::open_hive_bytes(regipy("SYSTEM")).expect("open");
        let mut sw = crate::hive::open_hive_bytes(crate::testutil::raw("hives/hivex/minimal"))
            .expect("open");
        let k = sw
            .create_key("Microsoft\\Windows NT\\CurrentVersion")
            .expect("create");
        sw.set_string(k, "CurrentVersion", "6.1", false)
            .expect("set");
        sw.set_string(k, "CurrentBuildNumber", "7601", false)
            .expect("set");
        let f = system_facts(&h7, Some(&sw), "SYSTEM").expect("facts");
        assert_eq!(
            (f.version.major, f.version.minor, f.version.build),
            (6, 1, 7601)
        );
        assert_eq!(f.version.source, VersionSource::SoftwareHive);
        assert_eq!(f.version.name, "Windows 7");
        sw.set_u32(k, "CurrentMajorVersionNumber", 10).expect("set");
        sw.set_u32(k, "CurrentMinorVersionNumber", 0).expect("set");
        sw.set_string(k, "CurrentBuildNumber", "22631", false)
            .expect("set");
        let f = system_facts(&h7, Some(&sw), "SYSTEM").expect("facts");
        assert_eq!(f.version.name, "Windows 11 (build 22631)");
        assert_eq!(f.target().build, 22631);
    }

    #[test]
    fn package_version_roundtrip_on_real_values() {
        let h = crate::hive::open_hive_bytes(regipy("SYSTEM_B")).expect("open");
        let pk = h
            .key("DriverDatabase\\DriverPackages\\stornvme.inf_amd64_822f29bfb80b20e8")
            .expect("pkg");
        let raw = h.value(pk, "Version").expect("read").expect("Version").data;
        let v = PackageVersion::parse(&raw).expect("parse");
        assert!(v.inbox);
        assert_eq!(v.arch, 9);
        assert_eq!(v.version, [10, 0, 16299, 251]);
        assert_eq!(v.encode(), raw);
    }

    #[test]
    fn finds_installation_case_insensitively() {
        let t = tempfile::tempdir().expect("tmp");
        let cfg = t.path().join("WINDOWS/system32/CONFIG");
        std::fs::create_dir_all(&cfg).expect("mkdir");
        std::fs::write(cfg.join("system"), regipy("SYSTEM_2")).expect("write");
        std::fs::create_dir_all(t.path().join("Users")).expect("mkdir");
        let found = find_installations(t.path()).expect("found");
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].facts.version.name, "Windows 8.1");
        assert!(found[0].warnings.iter().any(|w| w.contains("dirty")));
        let e = find_installations(&t.path().join("Users")).expect_err("none");
        assert!(matches!(e, WindowsError::NotFound { .. }));
    }
}
