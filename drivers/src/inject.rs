//! Offline driver injection for an installed Windows: compute a [`Plan`] of every
//! registry value/key and file that changes, show it (`--dry-run`), then
//! [`apply`] exactly that plan.
//!
//! For each boot-critical controller (IDs most specific first):
//! 1. inbox drivers already in that Windows: found through `DriverDatabase`
//!    (8+: `DeviceIds\<id>` → INF → active package → `Descriptors\<id>` →
//!    configuration → `Service`) or `CriticalDeviceDatabase` (7 and older), with a
//!    small built-in table as fallback; they get `Start=0` and, on 8+, lose the
//!    `StartOverride` key that silently keeps them disabled. Every control set
//!    named by `Select` is edited.
//! 2. third-party packages from `--drivers` folders (searched recursively): the
//!    best model by hardware ID rank, then DriverVer, is injected when it matches
//!    more specifically than the inbox driver (or no inbox driver exists): files
//!    to `System32\drivers` (DIRID 12) or the driver store (DIRID 13, ImagePath
//!    pointing there), the service key (Start=0), and device registration:
//!    `CriticalDeviceDatabase` on 7, `DriverDatabase` (DriverInfFiles, DeviceIds,
//!    DriverPackages with the binary `Version`, Configurations, Descriptors,
//!    `OemInfMap`) plus `INF\oemN.inf` and `FileRepository` staging on 8+, so PnP
//!    finishes the install at first boot.
//!
//! Not done (deliberately): `Tag`/`GroupOrderList` (load order within a group is
//! not needed to boot), catalog signature checks (Windows checks at boot; the
//! plan says the package is unverified), co-installers, and old-format-log
//! replay. `DriverPackages` values `SignerScore`/`StatusFlags` copy those Windows
//! 8.1 wrote for a third-party package staged with pnputil (SYSTEM_2 `oem1.inf`).

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hive::{self, reg_type, Hive, HiveError};
use crate::inf::{self, DriverInstall, Inf, InfError, Model, RegData, RegLine};
use crate::windows::{
    self, arch_number, resolve_ci, Controller, PackageVersion, SystemFacts, WindowsInstall,
};

/// Errors planning or applying an injection.
#[derive(Debug, thiserror::Error)]
pub enum InjectError {
    /// Hive problem.
    #[error("{file}: {source}")]
    Hive {
        /// Hive file.
        file: String,
        /// Cause.
        #[source]
        source: HiveError,
    },
    /// INF problem.
    #[error("{file}: {source}")]
    Inf {
        /// INF file.
        file: String,
        /// Cause.
        #[source]
        source: InfError,
    },
    /// A file the INF copies is not in the package folder.
    #[error("{inf}: file {file} (line {line}) is not in {dir}")]
    MissingFile {
        /// INF.
        inf: String,
        /// File name.
        file: String,
        /// INF line.
        line: usize,
        /// Folder searched.
        dir: String,
    },
    /// File system error.
    #[error("{action} {path}: {source}")]
    Io {
        /// What.
        action: &'static str,
        /// Path.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The backup file already exists.
    #[error("backup {path} already exists")]
    BackupExists {
        /// Path.
        path: String,
    },
    /// The hive changed between planning and applying.
    #[error("{path} changed since the plan was made")]
    HiveChanged {
        /// Path.
        path: String,
    },
    /// Installation facts.
    #[error(transparent)]
    Windows(#[from] windows::WindowsError),
}

impl InjectError {
    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        match self {
            InjectError::Hive { source, .. } => source.hint(),
            InjectError::Inf { source, .. } => source.hint(),
            InjectError::MissingFile { .. } => "extract the complete driver package (the .inf with its .sys and .cat files) into the folder",
            InjectError::Io { .. } => "check that the Windows volume is mounted read-write and has free space",
            InjectError::BackupExists { .. } => "wait a second and retry, or move the old backup away",
            InjectError::HiveChanged { .. } => "make the plan again (something else edited the hive)",
            InjectError::Windows(e) => e.hint(),
        }
    }
}

/// One change in the plan. Registry paths are relative to the SYSTEM hive root
/// (`HKLM\SYSTEM` when loaded).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Action {
    /// Create a key (and missing parents).
    CreateKey {
        /// Key path.
        key: String,
        /// Why.
        reason: String,
    },
    /// Set a value (creating the key when missing).
    SetValue {
        /// Key path.
        key: String,
        /// Value name.
        name: String,
        /// REG_* type.
        reg_type: u32,
        /// Data (hex string in JSON).
        #[serde(with = "hex_bytes")]
        data: Vec<u8>,
        /// Why.
        reason: String,
    },
    /// Delete a value.
    DeleteValue {
        /// Key path.
        key: String,
        /// Value name.
        name: String,
        /// Why.
        reason: String,
    },
    /// Delete a key and its subtree.
    DeleteKey {
        /// Key path.
        key: String,
        /// Why.
        reason: String,
    },
    /// Copy a file (parents are created).
    CopyFile {
        /// Source.
        from: PathBuf,
        /// Destination.
        to: PathBuf,
        /// Why.
        reason: String,
    },
}

/// How a controller will be driven.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Choice {
    /// An inbox service.
    Inbox {
        /// Service name.
        service: String,
        /// ID that matched.
        matched_id: String,
        /// Evidence (DriverDatabase, CriticalDeviceDatabase, built-in table).
        via: String,
    },
    /// A third-party package.
    ThirdParty {
        /// INF file.
        inf: PathBuf,
        /// Service.
        service: String,
        /// ID that matched.
        matched_id: String,
        /// DriverVer.
        driver_ver: Option<String>,
    },
}

/// Decision for one controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Decision {
    /// The controller.
    pub controller: Controller,
    /// Inbox driver enabled, if any.
    pub inbox: Option<Choice>,
    /// Third-party package injected, if any.
    pub third_party: Option<Choice>,
}

/// Everything the injection will do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    /// The Windows directory.
    pub windows_dir: PathBuf,
    /// SYSTEM hive file.
    pub system_hive: PathBuf,
    /// Backup file the hive is copied to before writing.
    pub backup: PathBuf,
    /// Facts about the installation.
    pub facts: SystemFacts,
    /// Warnings (dirty hive, missing logs, unusable INFs, nothing found...).
    pub warnings: Vec<String>,
    /// Per-controller decisions.
    pub decisions: Vec<Decision>,
    /// Ordered changes.
    pub actions: Vec<Action>,
    /// Length and FNV-1a hash of the SYSTEM hive file when planned; [`apply`]
    /// refuses to run if the file changed since.
    pub hive_fingerprint: Option<String>,
}

/// Planner options (library-owned; the CLI maps its flags to these).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// Controllers to support (from sysfs or `--for`).
    pub controllers: Vec<Controller>,
    /// Folders with driver packages (`--drivers`, the catalog).
    pub driver_dirs: Vec<PathBuf>,
    /// Switch off known boot-breaking filter drivers (`--disable-stale`).
    pub disable_stale: bool,
    /// Backup suffix timestamp (`YYYYMMDDTHHMMSSZ`); now when None.
    pub timestamp: Option<String>,
}

/// Filter drivers of hardware that may be gone and that stop Windows with 0x7B
/// when their controller disappears: Intel RST storage filter (`iaStorF`) and the
/// Intel Optane Memory filter (`iaStorAfs`). They are disabled and removed from
/// the storage class filter lists.
pub const STALE_FILTERS: &[&str] = &["iaStorF", "iaStorAfs"];

/// Storage setup classes whose UpperFilters/LowerFilters are cleaned of stale filters.
const STORAGE_CLASSES: &[&str] = &[
    "{4D36E967-E325-11CE-BFC1-08002BE10318}", // DiskDrive
    "{4D36E96A-E325-11CE-BFC1-08002BE10318}", // HDC
    "{4D36E97B-E325-11CE-BFC1-08002BE10318}", // SCSIAdapter
    "{71A27CDD-812A-11D0-BEC7-08002BE2092F}", // Volume
];

fn herr(file: &Path) -> impl Fn(HiveError) -> InjectError + '_ {
    move |source| InjectError::Hive {
        file: file.display().to_string(),
        source,
    }
}

/// UTC timestamp `YYYYMMDDTHHMMSSZ`.
pub fn utc_stamp() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86400) as i64;
    let (y, m, d) = civil_from_days(days);
    let s = secs % 86400;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Days since 1970-01-01 → (y, m, d) (H. Hinnant's civil calendar algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = i64::from((m + 9) % 12);
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// FILETIME of a DriverVer date (midnight UTC).
fn driver_date_filetime(date: (u16, u8, u8)) -> u64 {
    let days = days_from_civil(i64::from(date.0), u32::from(date.1), u32::from(date.2));
    ((days + 134_774) as u64).saturating_mul(864_000_000_000)
}

/// 64-bit FNV-1a, for the `<inf>_<arch>_<hash>` driver store folder name (Windows
/// derives its hash from the package's signature; any stable unique value works
/// for a folder Windows re-reads from `DriverPackages`).
fn fnv64(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

/// Serde adaptor: bytes as a lowercase hex string (stable, readable `--json`).
mod hex_bytes {
    use serde::{de::Error, Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&b.iter().map(|x| format!("{x:02x}")).collect::<String>())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        if s.len() % 2 != 0 {
            return Err(D::Error::custom("odd-length hex string"));
        }
        (0..s.len())
            .step_by(2)
            .map(|i| {
                s.get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| D::Error::custom(format!("bad hex at {i}")))
            })
            .collect()
    }
}

fn fingerprint(d: &[u8]) -> String {
    format!("{}:{:016x}", d.len(), fnv64(d))
}

/// A usable third-party candidate.
#[derive(Debug, Clone)]
struct Candidate {
    inf_path: PathBuf,
    inf_bytes: Vec<u8>,
    inf: Inf,
    model: Model,
    rank: usize,
    matched_id: String,
}

fn find_infs(dir: &Path, out: &mut Vec<PathBuf>, depth: usize) {
    if depth > 16 {
        return;
    }
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    let mut entries: Vec<PathBuf> = rd.flatten().map(|e| e.path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            find_infs(&p, out, depth + 1);
        } else if p
            .extension()
            .and_then(|e| e.to_str())
            .is_some_and(|e| e.eq_ignore_ascii_case("inf"))
        {
            out.push(p);
        }
    }
}

fn id_rank(ids: &[String], model: &Model) -> Option<(usize, String)> {
    let mut model_ids = vec![model.hardware_id.as_str()];
    model_ids.extend(model.compatible_ids.iter().map(String::as_str));
    ids.iter().enumerate().find_map(|(i, id)| {
        model_ids
            .iter()
            .any(|m| m.eq_ignore_ascii_case(id))
            .then(|| (i, id.clone()))
    })
}

fn load_candidates(
    opts: &Options,
    facts: &SystemFacts,
    warnings: &mut Vec<String>,
) -> Vec<(PathBuf, Vec<u8>, Inf)> {
    let mut infs = Vec::new();
    for d in &opts.driver_dirs {
        find_infs(d, &mut infs, 0);
    }
    let mut out = Vec::new();
    for p in infs {
        let Ok(bytes) = std::fs::read(&p) else {
            warnings.push(format!("{}: unreadable, skipped", p.display()));
            continue;
        };
        match Inf::parse(&bytes, Some(&p.display().to_string())) {
            Ok(inf) => {
                let other: Vec<&String> = inf
                    .template_tokens
                    .iter()
                    .filter(|t| *t != "$ARCH$")
                    .collect();
                if !other.is_empty() {
                    warnings.push(format!(
                        "{}: template with unsubstituted tokens {other:?}, skipped",
                        p.display()
                    ));
                    continue;
                }
                if inf.is_template() {
                    warnings.push(format!(
                        "{}: uses the stampinf decoration NT$ARCH$; treated as NT{}",
                        p.display(),
                        facts.arch.inf_name()
                    ));
                }
                out.push((p, bytes, inf));
            }
            Err(e) => warnings.push(format!("{}: {e}, skipped", p.display())),
        }
    }
    out
}

/// Inbox service for `id`, with the evidence.
fn inbox_for(
    h: &Hive,
    facts: &SystemFacts,
    id: &str,
) -> Result<Option<(String, String)>, HiveError> {
    let cs = &facts.current_control_set;
    let service_exists = |s: &str| {
        h.open_key(&format!("{cs}\\Services\\{s}"))
            .map(|k| k.is_some())
    };
    if facts.has_driver_database {
        if let Some(k) = h.open_key(&format!("DriverDatabase\\DeviceIds\\{id}"))? {
            for v in h.values(k)? {
                let Some(pkg) = h.get_string(
                    &format!("DriverDatabase\\DriverInfFiles\\{}", v.name),
                    "Active",
                )?
                else {
                    continue;
                };
                let pkg_key = format!("DriverDatabase\\DriverPackages\\{pkg}");
                let Some(cfg) =
                    h.get_string(&format!("{pkg_key}\\Descriptors\\{id}"), "Configuration")?
                else {
                    continue;
                };
                if let Some(svc) =
                    h.get_string(&format!("{pkg_key}\\Configurations\\{cfg}"), "Service")?
                {
                    if service_exists(&svc)? {
                        return Ok(Some((svc, format!("DriverDatabase ({})", v.name))));
                    }
                }
            }
        }
    }
    if facts.has_cddb {
        let key = format!(
            "{cs}\\Control\\CriticalDeviceDatabase\\{}",
            id.replace('\\', "#")
        );
        if let Some(svc) = h.get_string(&key, "Service")? {
            if service_exists(&svc)? {
                return Ok(Some((svc, "CriticalDeviceDatabase".into())));
            }
        }
    }
    for s in windows::inbox_services_for(id) {
        if service_exists(s)? {
            return Ok(Some(((*s).to_owned(), "built-in table".into())));
        }
    }
    Ok(None)
}

struct Builder<'a> {
    h: &'a Hive,
    facts: &'a SystemFacts,
    windows_dir: &'a Path,
    actions: Vec<Action>,
    warnings: Vec<String>,
    next_oem: Option<(u32, Vec<u8>)>,
}

impl Builder<'_> {
    fn set(&mut self, key: &str, name: &str, reg_type: u32, data: Vec<u8>, reason: &str) {
        let a = Action::SetValue {
            key: key.to_owned(),
            name: name.to_owned(),
            reg_type,
            data,
            reason: reason.to_owned(),
        };
        if !self.actions.contains(&a) {
            self.actions.push(a);
        }
    }

    fn set_u32(&mut self, key: &str, name: &str, v: u32, reason: &str) {
        self.set(key, name, reg_type::DWORD, v.to_le_bytes().to_vec(), reason);
    }

    fn set_sz(&mut self, key: &str, name: &str, v: &str, reason: &str) {
        self.set(key, name, reg_type::SZ, hive::sz(v), reason);
    }

    fn create(&mut self, key: &str, reason: &str) {
        let a = Action::CreateKey {
            key: key.to_owned(),
            reason: reason.to_owned(),
        };
        if !self.actions.contains(&a) {
            self.actions.push(a);
        }
    }

    fn copy(&mut self, from: PathBuf, to: PathBuf, reason: &str) {
        let a = Action::CopyFile {
            from,
            to,
            reason: reason.to_owned(),
        };
        if !self.actions.contains(&a) {
            self.actions.push(a);
        }
    }

    /// Start=0 and no StartOverride, in every control set.
    fn enable_service(&mut self, svc: &str, reason: &str) -> Result<(), HiveError> {
        for cs in self.facts.control_sets.clone() {
            let key = format!("{cs}\\Services\\{svc}");
            if self.h.open_key(&key)?.is_none() {
                continue;
            }
            if self.h.get_u32(&key, "Start")? != Some(0) {
                self.set_u32(&key, "Start", 0, reason);
            }
            if self.h.open_key(&format!("{key}\\StartOverride"))?.is_some() {
                self.actions.push(Action::DeleteKey {
                    key: format!("{key}\\StartOverride"),
                    reason: "StartOverride keeps the driver disabled on Windows 8+".into(),
                });
            }
        }
        Ok(())
    }

    /// AddReg lines relative to `base` (HKR), with registry semantics.
    fn add_reg(&mut self, base: &str, lines: &[RegLine], reason: &str) {
        for l in lines {
            if !l.root.eq_ignore_ascii_case("HKR") {
                self.warnings.push(format!(
                    "AddReg line {} uses root {}: skipped (only HKR is applied offline)",
                    l.line, l.root
                ));
                continue;
            }
            let key = if l.subkey.is_empty() {
                base.to_owned()
            } else {
                format!("{base}\\{}", l.subkey)
            };
            if l.delete {
                match &l.value_name {
                    Some(n) => self.actions.push(Action::DeleteValue {
                        key,
                        name: n.clone(),
                        reason: reason.to_owned(),
                    }),
                    None => self.actions.push(Action::DeleteKey {
                        key,
                        reason: reason.to_owned(),
                    }),
                }
                continue;
            }
            let name = l.value_name.clone().unwrap_or_default();
            let (t, data) = match &l.data {
                RegData::None => {
                    self.create(&key, reason);
                    continue;
                }
                RegData::Sz(s) => (reg_type::SZ, hive::sz(s)),
                RegData::ExpandSz(s) => (reg_type::EXPAND_SZ, hive::sz(s)),
                RegData::MultiSz(v) => (reg_type::MULTI_SZ, hive::multi_sz(v)),
                RegData::Dword(v) => (reg_type::DWORD, v.to_le_bytes().to_vec()),
                RegData::Binary { reg_type, data } => (*reg_type, data.clone()),
            };
            self.set(&key, &name, t, data, reason);
        }
    }

    /// Next free oemN number from `DriverDatabase\OemInfMap` (bit i, MSB first, = oem<i>.inf used).
    fn alloc_oem(&mut self) -> Result<u32, HiveError> {
        let (mut map, mut n) = match self.next_oem.take() {
            Some((n, m)) => (m, n),
            None => (
                self.h
                    .value(self.h.key("DriverDatabase")?, "OemInfMap")?
                    .map(|v| v.data)
                    .unwrap_or_default(),
                0,
            ),
        };
        let inf_dir = resolve_ci(self.windows_dir, "INF");
        loop {
            let used_bit = map
                .get((n / 8) as usize)
                .is_some_and(|b| b & (0x80 >> (n % 8)) != 0);
            let used_key = self
                .h
                .open_key(&format!("DriverDatabase\\DriverInfFiles\\oem{n}.inf"))?
                .is_some();
            let used_file = inf_dir
                .as_ref()
                .and_then(|d| resolve_ci(d, &format!("oem{n}.inf")))
                .is_some_and(|p| p.exists());
            if !used_bit && !used_key && !used_file {
                break;
            }
            n += 1;
        }
        let byte = (n / 8) as usize;
        if map.len() <= byte {
            map.resize(byte + 1, 0);
        }
        map[byte] |= 0x80 >> (n % 8);
        self.set(
            "DriverDatabase",
            "OemInfMap",
            reg_type::BINARY,
            map.clone(),
            "mark the oemN.inf number used",
        );
        self.next_oem = Some((n + 1, map));
        Ok(n)
    }
}

fn find_source(inf_dir: &Path, name: &str) -> Option<PathBuf> {
    if let Some(p) = resolve_ci(inf_dir, name).filter(|p| p.is_file()) {
        return Some(p);
    }
    // Packages often keep binaries in an arch subfolder (SourceDisksNames paths).
    let mut stack = vec![(inf_dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        for e in std::fs::read_dir(&d).ok()?.flatten() {
            let p = e.path();
            if p.is_dir() && depth < 4 {
                stack.push((p, depth + 1));
            } else if e
                .file_name()
                .to_str()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
            {
                return Some(p);
            }
        }
    }
    None
}

/// Plan for an installation found by [`windows::find_installations`].
pub fn plan(install: &WindowsInstall, opts: &Options) -> Result<Plan, InjectError> {
    let h = Hive::open(&install.system_hive).map_err(herr(&install.system_hive))?;
    plan_with_hive(
        &h,
        &install.facts,
        &install.windows_dir,
        &install.system_hive,
        opts,
    )
}

/// Plan against an already opened SYSTEM hive.
pub fn plan_with_hive(
    h: &Hive,
    facts: &SystemFacts,
    windows_dir: &Path,
    system_hive: &Path,
    opts: &Options,
) -> Result<Plan, InjectError> {
    let he = herr(system_hive);
    let stamp = opts.timestamp.clone().unwrap_or_else(utc_stamp);
    let file_name = system_hive
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("SYSTEM");
    let backup = system_hive.with_file_name(format!("{file_name}.rescue-bak-{stamp}"));
    let mut b = Builder {
        h,
        facts,
        windows_dir,
        actions: Vec::new(),
        warnings: h.report.warnings.clone(),
        next_oem: None,
    };
    let candidates = load_candidates(opts, facts, &mut b.warnings);
    let target = facts.target();
    let mut decisions = Vec::new();
    let mut injected: BTreeMap<String, String> = BTreeMap::new(); // inf path -> service
    for c in &opts.controllers {
        // Inbox: the most specific ID with a usable inbox service.
        let mut inbox = None;
        let mut inbox_rank = usize::MAX;
        for (i, id) in c.ids.iter().enumerate() {
            if let Some((svc, via)) = inbox_for(h, facts, id).map_err(&he)? {
                inbox = Some(Choice::Inbox {
                    service: svc,
                    matched_id: id.clone(),
                    via,
                });
                inbox_rank = i;
                break;
            }
        }
        // Third party: best rank, then newest DriverVer.
        let mut best: Option<Candidate> = None;
        for (path, bytes, inf) in &candidates {
            for m in inf.models(&target) {
                let Some((rank, matched_id)) = id_rank(&c.ids, &m) else {
                    continue;
                };
                let better = match &best {
                    None => true,
                    Some(bst) => {
                        rank < bst.rank
                            || (rank == bst.rank
                                && inf.version().driver_ver > bst.inf.version().driver_ver)
                    }
                };
                if better {
                    best = Some(Candidate {
                        inf_path: path.clone(),
                        inf_bytes: bytes.clone(),
                        inf: inf.clone(),
                        model: m,
                        rank,
                        matched_id,
                    });
                }
            }
        }
        if let Some(Choice::Inbox {
            service,
            matched_id,
            via,
        }) = &inbox
        {
            let reason = format!(
                "enable inbox driver {service} for {} ({matched_id}, via {via})",
                c.description
            );
            b.enable_service(service, &reason).map_err(&he)?;
            if service.eq_ignore_ascii_case("storvsc") {
                b.enable_service("vmbus", &reason).map_err(&he)?;
            }
        }
        let mut third_party = None;
        if let Some(cand) = best.filter(|cand| cand.rank < inbox_rank) {
            let key = cand.inf_path.display().to_string();
            let svc = match injected.get(&key) {
                Some(s) => s.clone(),
                None => {
                    let s = inject_package(&mut b, &cand)?;
                    injected.insert(key, s.clone());
                    s
                }
            };
            third_party = Some(Choice::ThirdParty {
                inf: cand.inf_path.clone(),
                service: svc,
                matched_id: cand.matched_id.clone(),
                driver_ver: cand.inf.version().driver_ver.map(|d| d.to_string()),
            });
        }
        if inbox.is_none() && third_party.is_none() {
            b.warnings.push(format!(
                "no driver found for {} ({}): add its driver package with --drivers",
                c.description,
                c.ids.first().map(String::as_str).unwrap_or("?")
            ));
        }
        decisions.push(Decision {
            controller: c.clone(),
            inbox,
            third_party,
        });
    }
    if opts.disable_stale {
        disable_stale(&mut b).map_err(&he)?;
    }
    Ok(Plan {
        windows_dir: windows_dir.to_path_buf(),
        system_hive: system_hive.to_path_buf(),
        backup,
        facts: facts.clone(),
        warnings: b.warnings,
        decisions,
        actions: b.actions,
        hive_fingerprint: std::fs::read(system_hive).ok().map(|d| fingerprint(&d)),
    })
}

fn disable_stale(b: &mut Builder<'_>) -> Result<(), HiveError> {
    for cs in b.facts.control_sets.clone() {
        for svc in STALE_FILTERS {
            let key = format!("{cs}\\Services\\{svc}");
            if b.h.open_key(&key)?.is_some() && b.h.get_u32(&key, "Start")? != Some(4) {
                b.set_u32(
                    &key,
                    "Start",
                    4,
                    &format!(
                        "--disable-stale: {svc} is a storage filter of hardware that may be gone"
                    ),
                );
            }
        }
        for class in STORAGE_CLASSES {
            let key = format!("{cs}\\Control\\Class\\{class}");
            let Some(k) = b.h.open_key(&key)? else {
                continue;
            };
            for list in ["UpperFilters", "LowerFilters"] {
                let Some(v) = b.h.value(k, list)? else {
                    continue;
                };
                let Some(items) = v.as_multi_sz() else {
                    continue;
                };
                let kept: Vec<String> = items
                    .iter()
                    .filter(|i| !STALE_FILTERS.iter().any(|s| s.eq_ignore_ascii_case(i)))
                    .cloned()
                    .collect();
                if kept.len() != items.len() {
                    let reason = format!("--disable-stale: remove {:?} from {list}", STALE_FILTERS);
                    if kept.is_empty() {
                        b.actions.push(Action::DeleteValue {
                            key: key.clone(),
                            name: list.to_owned(),
                            reason,
                        });
                    } else {
                        b.set(
                            &key,
                            list,
                            reg_type::MULTI_SZ,
                            hive::multi_sz(&kept),
                            &reason,
                        );
                    }
                }
            }
        }
    }
    Ok(())
}

/// Add the actions that install one third-party package; returns the service name.
fn inject_package(b: &mut Builder<'_>, cand: &Candidate) -> Result<String, InjectError> {
    let inf_file = cand.inf_path.display().to_string();
    let ie = |source| InjectError::Inf {
        file: inf_file.clone(),
        source,
    };
    let arch = b.facts.arch;
    let di: DriverInstall = cand
        .inf
        .driver_install(&cand.model.install_section, arch)
        .map_err(ie)?;
    let inf_dir = cand
        .inf_path
        .parent()
        .unwrap_or(Path::new("."))
        .to_path_buf();
    let inf_name = cand
        .inf_path
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("driver.inf")
        .to_ascii_lowercase();
    let pkg = format!(
        "{inf_name}_{}_{:016x}",
        arch.inf_name(),
        fnv64(&cand.inf_bytes)
    );
    let modern = b.facts.version.is_8_or_later() && b.facts.has_driver_database;
    let sys32 =
        resolve_ci(b.windows_dir, "System32").unwrap_or_else(|| b.windows_dir.join("System32"));
    let drivers_dir = resolve_ci(&sys32, "drivers").unwrap_or_else(|| sys32.join("drivers"));
    let store_dir = sys32.join("DriverStore").join("FileRepository").join(&pkg);
    let store_rel = format!("System32\\DriverStore\\FileRepository\\{pkg}");
    let reason = format!("install {} from {inf_name}", cand.model.description);

    // Files.
    let needs_store = modern || di.copy_files.iter().any(|f| f.dirid == 13);
    for f in &di.copy_files {
        let src = find_source(&inf_dir, &f.source).ok_or_else(|| InjectError::MissingFile {
            inf: inf_file.clone(),
            file: f.source.clone(),
            line: f.line,
            dir: inf_dir.display().to_string(),
        })?;
        match f.dirid {
            12 => b.copy(src.clone(), drivers_dir.join(&f.dest), &reason),
            13 => {}
            11 => b.copy(src.clone(), sys32.join(&f.dest), &reason),
            other => b.warnings.push(format!(
                "{inf_name}: {} goes to DIRID {other}, not copied offline",
                f.dest
            )),
        }
        if needs_store {
            b.copy(
                src,
                store_dir.join(&f.dest),
                "stage the package in the driver store",
            );
        }
    }
    if needs_store {
        b.copy(
            cand.inf_path.clone(),
            store_dir.join(&inf_name),
            "stage the package in the driver store",
        );
        if let Some(cat) = cand.inf.version().catalog {
            if let Some(src) = find_source(&inf_dir, &cat) {
                b.copy(
                    src,
                    store_dir.join(cat.to_ascii_lowercase()),
                    "stage the package in the driver store",
                );
            }
        }
    }

    // Services.
    let assoc = di
        .services
        .iter()
        .find(|s| s.is_assoc())
        .or(di.services.first())
        .cloned();
    let Some(assoc) = assoc else {
        return Err(InjectError::Inf {
            file: inf_file.clone(),
            source: InfError::MissingSection {
                section: format!("{}.Services", di.section),
                line: 0,
            },
        });
    };
    let oem = if modern {
        Some(b.alloc_oem().map_err(herr(Path::new("SYSTEM")))?)
    } else {
        None
    };
    for s in &di.services {
        let image = match s.binary_dirid() {
            Some((13, file)) => format!("\\SystemRoot\\{store_rel}\\{file}"),
            Some((12, file)) => format!("System32\\drivers\\{file}"),
            Some((11, file)) => format!("System32\\{file}"),
            _ => s.service_binary.clone().unwrap_or_default(),
        };
        let boot = s.name == assoc.name;
        for cs in b.facts.control_sets.clone() {
            let key = format!("{cs}\\Services\\{}", s.name);
            let why = format!("{reason}: service {}", s.name);
            b.set_u32(&key, "Type", s.service_type.unwrap_or(1), &why);
            b.set_u32(
                &key,
                "Start",
                if boot { 0 } else { s.start_type.unwrap_or(3) },
                &why,
            );
            b.set_u32(&key, "ErrorControl", s.error_control.unwrap_or(1), &why);
            b.set(
                &key,
                "ImagePath",
                reg_type::EXPAND_SZ,
                hive::sz(&image),
                &why,
            );
            if let Some(g) = &s.load_order_group {
                b.set_sz(&key, "Group", g, &why);
            }
            if let Some(d) = &s.display_name {
                b.set_sz(&key, "DisplayName", d, &why);
            }
            if let Some(n) = oem {
                b.set(
                    &key,
                    "Owners",
                    reg_type::MULTI_SZ,
                    hive::multi_sz(&[format!("oem{n}.inf")]),
                    &why,
                );
            }
            b.add_reg(&key, &s.add_reg, &why);
            if b.h
                .open_key(&format!("{key}\\StartOverride"))
                .map_err(herr(Path::new("SYSTEM")))?
                .is_some()
            {
                b.actions.push(Action::DeleteKey {
                    key: format!("{key}\\StartOverride"),
                    reason: "StartOverride keeps the driver disabled on Windows 8+".into(),
                });
            }
        }
        if !boot && s.start_type.is_some_and(|t| t == 0) {
            b.warnings.push(format!(
                "{inf_name}: extra boot service {} also installed",
                s.name
            ));
        }
    }
    let svc = assoc.name.clone();
    let class_guid = cand.inf.version().class_guid.unwrap_or_default();
    // Every model line of this INF for the same install section.
    let ids: Vec<String> = cand
        .inf
        .models(&b.facts.target())
        .into_iter()
        .filter(|m| {
            m.install_section
                .eq_ignore_ascii_case(&cand.model.install_section)
        })
        .flat_map(|m| std::iter::once(m.hardware_id).chain(m.compatible_ids))
        .fold(Vec::new(), |mut acc, id| {
            if !acc.iter().any(|x: &String| x.eq_ignore_ascii_case(&id)) {
                acc.push(id);
            }
            acc
        });

    if let Some(n) = oem {
        let oem_inf = format!("oem{n}.inf");
        let cfg = di.section.clone();
        let dif = format!("DriverDatabase\\DriverInfFiles\\{oem_inf}");
        let why = format!("{reason}: register {oem_inf} in DriverDatabase");
        b.set(
            &dif,
            "",
            reg_type::MULTI_SZ,
            hive::multi_sz(std::slice::from_ref(&pkg)),
            &why,
        );
        b.set_sz(&dif, "Active", &pkg, &why);
        b.set(
            &dif,
            "Configurations",
            reg_type::MULTI_SZ,
            hive::multi_sz(std::slice::from_ref(&cfg)),
            &why,
        );
        for id in &ids {
            b.set(
                &format!("DriverDatabase\\DeviceIds\\{id}"),
                &oem_inf,
                reg_type::BINARY,
                vec![0x01, 0xFF, 0x00, 0x00],
                &why,
            );
        }
        let pk = format!("DriverDatabase\\DriverPackages\\{pkg}");
        let ver = cand.inf.version();
        let dv = ver.driver_ver.unwrap_or(inf::DriverVer {
            date: (2000, 1, 1),
            version: [0; 4],
        });
        let version = PackageVersion {
            inbox: false,
            arch: arch_number(arch),
            class_guid: guid_bytes(&class_guid).unwrap_or([0; 16]),
            date: driver_date_filetime(dv.date),
            version: dv.version,
        };
        b.set_sz(&pk, "", &oem_inf, &why);
        b.set(&pk, "Version", reg_type::BINARY, version.encode(), &why);
        b.set_sz(&pk, "Provider", ver.provider.as_deref().unwrap_or(""), &why);
        b.set_sz(&pk, "InfName", &inf_name, &why);
        b.set_u32(&pk, "SignerScore", 0x0F00_0000, &why);
        b.set_u32(&pk, "StatusFlags", 0x16, &why);
        let cfgk = format!("{pk}\\Configurations\\{cfg}");
        b.set_sz(&cfgk, "Service", &svc, &why);
        b.set_u32(&cfgk, "ConfigScope", 7, &why);
        b.set_u32(&cfgk, "ConfigFlags", 0, &why);
        b.add_reg(&format!("{cfgk}\\Device"), &di.hw_addreg, &why);
        b.add_reg(&format!("{cfgk}\\Services\\{svc}"), &assoc.add_reg, &why);
        for id in &ids {
            let d = format!("{pk}\\Descriptors\\{id}");
            b.set_sz(&d, "Configuration", &cfg, &why);
            b.set_sz(&d, "Manufacturer", &cand.model.manufacturer, &why);
            b.set_sz(&d, "Description", &cand.model.description, &why);
        }
        let inf_dir_win =
            resolve_ci(b.windows_dir, "INF").unwrap_or_else(|| b.windows_dir.join("INF"));
        b.copy(cand.inf_path.clone(), inf_dir_win.join(&oem_inf), &why);
    } else {
        for cs in b.facts.control_sets.clone() {
            for id in &ids {
                let k = format!(
                    "{cs}\\Control\\CriticalDeviceDatabase\\{}",
                    id.replace('\\', "#")
                );
                let why = format!("{reason}: CriticalDeviceDatabase entry");
                b.set_sz(&k, "Service", &svc, &why);
                b.set_sz(&k, "ClassGUID", &class_guid, &why);
            }
        }
    }
    Ok(svc)
}

/// `{4D36E97B-E325-11CE-BFC1-08002BE10318}` → Windows GUID byte layout.
pub fn guid_bytes(s: &str) -> Option<[u8; 16]> {
    let hex: String = s.chars().filter(|c| c.is_ascii_hexdigit()).collect();
    if hex.len() != 32 {
        return None;
    }
    let mut raw = [0u8; 16];
    for (i, r) in raw.iter_mut().enumerate() {
        *r = u8::from_str_radix(hex.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    let mut out = raw;
    out[0..4].copy_from_slice(&[raw[3], raw[2], raw[1], raw[0]]);
    out[4..6].copy_from_slice(&[raw[5], raw[4]]);
    out[6..8].copy_from_slice(&[raw[7], raw[6]]);
    Some(out)
}

/// Apply the registry part of a plan to an open hive.
pub fn apply_registry(plan: &Plan, h: &mut Hive) -> Result<(), HiveError> {
    for a in &plan.actions {
        match a {
            Action::CreateKey { key, .. } => {
                h.create_key(key)?;
            }
            Action::SetValue {
                key,
                name,
                reg_type,
                data,
                ..
            } => {
                let k = h.create_key(key)?;
                h.set_value(k, name, *reg_type, data)?;
            }
            Action::DeleteValue { key, name, .. } => {
                if let Some(k) = h.open_key(key)? {
                    h.delete_value(k, name)?;
                }
            }
            Action::DeleteKey { key, .. } => {
                h.delete_key(key)?;
            }
            Action::CopyFile { .. } => {}
        }
    }
    Ok(())
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Backup of the hive.
    pub backup: PathBuf,
    /// Files written.
    pub files_copied: usize,
    /// Registry actions applied.
    pub registry_changes: usize,
}

/// Execute a plan: back up the hive (and its logs), copy files, edit and save the hive.
pub fn apply(plan: &Plan) -> Result<ApplyReport, InjectError> {
    let io = |action: &'static str, p: &Path| {
        let path = p.display().to_string();
        move |source| InjectError::Io {
            action,
            path,
            source,
        }
    };
    let current = std::fs::read(&plan.system_hive).map_err(io("reading", &plan.system_hive))?;
    if plan
        .hive_fingerprint
        .as_ref()
        .is_some_and(|f| *f != fingerprint(&current))
    {
        return Err(InjectError::HiveChanged {
            path: plan.system_hive.display().to_string(),
        });
    }
    let mut h = Hive::open(&plan.system_hive).map_err(herr(&plan.system_hive))?;
    if plan.backup.exists() {
        return Err(InjectError::BackupExists {
            path: plan.backup.display().to_string(),
        });
    }
    std::fs::copy(&plan.system_hive, &plan.backup)
        .map_err(io("backing up hive to", &plan.backup))?;
    tracing::info!(hive = %plan.system_hive.display(), backup = %plan.backup.display(), "hive backed up");
    if let (Some(dir), Some(bak)) = (
        plan.system_hive.parent(),
        plan.backup.file_name().and_then(|n| n.to_str()),
    ) {
        let base = plan
            .system_hive
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("SYSTEM");
        for ext in ["LOG1", "LOG2", "LOG"] {
            if let Some(log) = resolve_ci(dir, &format!("{base}.{ext}")).filter(|p| p.is_file()) {
                let to = dir.join(format!("{bak}.{ext}"));
                std::fs::copy(&log, &to).map_err(io("backing up log to", &to))?;
            }
        }
    }
    let mut files = 0;
    for a in &plan.actions {
        if let Action::CopyFile { from, to, .. } = a {
            if let Some(parent) = to.parent() {
                std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
            }
            std::fs::copy(from, to).map_err(io("copying to", to))?;
            files += 1;
        }
    }
    apply_registry(plan, &mut h).map_err(herr(&plan.system_hive))?;
    h.save(&plan.system_hive).map_err(herr(&plan.system_hive))?;
    tracing::info!(hive = %plan.system_hive.display(), files, changes = plan.actions.len() - files, "universal restore applied");
    Ok(ApplyReport {
        backup: plan.backup.clone(),
        files_copied: files,
        registry_changes: plan.actions.len() - files,
    })
}

fn render_data(t: u32, d: &[u8]) -> String {
    let v = hive::Value {
        name: String::new(),
        reg_type: t,
        data: d.to_vec(),
    };
    match t {
        reg_type::DWORD => format!("REG_DWORD {:#x}", v.as_u32().unwrap_or(0)),
        reg_type::SZ => format!("REG_SZ {:?}", v.as_string().unwrap_or_default()),
        reg_type::EXPAND_SZ => format!("REG_EXPAND_SZ {:?}", v.as_string().unwrap_or_default()),
        reg_type::MULTI_SZ => format!("REG_MULTI_SZ {:?}", v.as_multi_sz().unwrap_or_default()),
        _ => format!(
            "type {t} hex:{}",
            d.iter().map(|b| format!("{b:02x}")).collect::<String>()
        ),
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "Universal restore plan for {} ({}) in {}",
            self.facts.version.name,
            self.facts.arch.inf_name(),
            self.windows_dir.display()
        )?;
        writeln!(
            f,
            "  SYSTEM hive: {} (backup to {})",
            self.system_hive.display(),
            self.backup.display()
        )?;
        writeln!(
            f,
            "  control sets edited: {}",
            self.facts.control_sets.join(", ")
        )?;
        for w in &self.warnings {
            writeln!(f, "  warning: {w}")?;
        }
        for d in &self.decisions {
            write!(
                f,
                "  controller {} [{}]:",
                d.controller.description, d.controller.origin
            )?;
            match (&d.inbox, &d.third_party) {
                (None, None) => writeln!(f, " NO DRIVER")?,
                _ => writeln!(f)?,
            }
            for c in [&d.inbox, &d.third_party].into_iter().flatten() {
                match c {
                    Choice::Inbox {
                        service,
                        matched_id,
                        via,
                    } => writeln!(f, "    inbox {service} (matches {matched_id}, via {via})")?,
                    Choice::ThirdParty {
                        inf,
                        service,
                        matched_id,
                        driver_ver,
                    } => writeln!(
                        f,
                        "    inject {service} from {} (matches {matched_id}, DriverVer {})",
                        inf.display(),
                        driver_ver.as_deref().unwrap_or("?")
                    )?,
                }
            }
        }
        for a in &self.actions {
            match a {
                Action::CreateKey { key, .. } => writeln!(f, "  create  HKLM\\SYSTEM\\{key}")?,
                Action::SetValue {
                    key,
                    name,
                    reg_type,
                    data,
                    ..
                } => {
                    let n = if name.is_empty() { "(Default)" } else { name };
                    writeln!(
                        f,
                        "  set     HKLM\\SYSTEM\\{key} : {n} = {}",
                        render_data(*reg_type, data)
                    )?
                }
                Action::DeleteValue { key, name, .. } => {
                    writeln!(f, "  delete  HKLM\\SYSTEM\\{key} : {name}")?
                }
                Action::DeleteKey { key, .. } => {
                    writeln!(f, "  delete  HKLM\\SYSTEM\\{key} (with subkeys)")?
                }
                Action::CopyFile { from, to, .. } => {
                    writeln!(f, "  copy    {} -> {}", from.display(), to.display())?
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
