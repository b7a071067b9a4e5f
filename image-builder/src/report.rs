//! The build report: what went into the media, sizes, checksums and what is
//! missing (`build-report.json`, plus `SHA256SUMS` for the output files).
//! Apart from `elapsed_ms` it is reproducible like the media.

use std::collections::BTreeMap;
use std::path::Path;

use sha2::{Digest, Sha256};

use crate::firmware::Fetched;
use crate::initramfs::Kernel;
use crate::{Error, Result};

#[derive(Debug, Clone, serde::Serialize)]
pub struct FirmwareNote {
    pub module: String,
    pub file: String,
}

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Output {
    pub name: String,
    pub size: u64,
    pub sha256: String,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub kernel_package: String,
    pub kernel_version: String,
    pub source_date_epoch: u32,
    pub outputs: Vec<Output>,
    pub initramfs_entries: usize,
    pub initramfs_uncompressed: u64,
    pub modules: Vec<String>,
    pub modules_size: u64,
    /// Asked for but built into the kernel: nothing to do.
    pub modules_builtin: Vec<String>,
    /// Default modules this kernel does not have.
    pub modules_not_in_kernel: Vec<String>,
    pub firmware_included: Vec<String>,
    /// Firmware a module may ask for that neither the Debian firmware
    /// packages nor a firmware directory had; [`Report::firmware_note`]
    /// says why.
    pub firmware_missing: Vec<FirmwareNote>,
    /// Where each included firmware file came from: `firmware-realtek
    /// 20230210-5` (a Debian package) or a firmware directory.
    pub firmware_from: BTreeMap<String, String>,
    /// Bytes of firmware in the initramfs (uncompressed).
    pub firmware_size: u64,
    /// The Debian firmware packages asked for (`--debian-firmware`): the
    /// `.deb` used, or why there is none.
    pub firmware_packages: Vec<Fetched>,
    /// Why firmware is missing, when it is (packages turned off or not
    /// fetched, or a file no package has); `null` when nothing is.
    pub firmware_note: Option<String>,
    pub tools: Vec<String>,
    pub elapsed_ms: u64,
}

pub fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Report {
    pub fn new(kernel: &Kernel, sde: u32) -> Report {
        Report {
            kernel_package: kernel.package.clone(),
            kernel_version: kernel.version.clone(),
            source_date_epoch: sde,
            outputs: Vec::new(),
            initramfs_entries: 0,
            initramfs_uncompressed: 0,
            modules: Vec::new(),
            modules_size: 0,
            modules_builtin: Vec::new(),
            modules_not_in_kernel: Vec::new(),
            firmware_included: Vec::new(),
            firmware_missing: Vec::new(),
            firmware_from: BTreeMap::new(),
            firmware_size: 0,
            firmware_packages: Vec::new(),
            firmware_note: None,
            tools: Vec::new(),
            elapsed_ms: 0,
        }
    }

    pub fn add_output(&mut self, _dir: &Path, name: &str, data: &[u8]) {
        self.outputs.retain(|o| o.name != name);
        self.outputs.push(Output {
            name: name.to_string(),
            size: data.len() as u64,
            sha256: sha256_hex(data),
        });
        self.outputs.sort_by(|a, b| a.name.cmp(&b.name));
    }

    /// Write `build-report.json` and `SHA256SUMS` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| {
            Error::io(
                "serializing",
                &dir.join("build-report.json"),
                std::io::Error::other(e),
            )
        })?;
        crate::write_atomic(&dir.join("build-report.json"), &json)?;
        let sums: String = self
            .outputs
            .iter()
            .map(|o| format!("{}  {}\n", o.sha256, o.name))
            .collect();
        crate::write_atomic(&dir.join("SHA256SUMS"), sums.as_bytes())
    }

    /// `; 27 from firmware-realtek 20230210-5, ...` for the summary.
    fn firmware_origins(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for from in self.firmware_from.values() {
            *counts.entry(from.as_str()).or_default() += 1;
        }
        counts
            .iter()
            .map(|(from, n)| format!("; {n} from {from}"))
            .collect()
    }

    /// A few human lines for stderr.
    pub fn summary(&self) -> String {
        let mut s = String::new();
        for o in &self.outputs {
            s.push_str(&format!(
                "{:<16} {:>10} bytes  sha256 {}\n",
                o.name, o.size, o.sha256
            ));
        }
        s.push_str(&format!(
            "kernel {}; {} modules ({} KiB); {} tools/libraries; firmware: {} included ({} KiB{}), {} missing; {} default modules not in this kernel; {} ms\n",
            self.kernel_version,
            self.modules.len(),
            self.modules_size / 1024,
            self.tools.len(),
            self.firmware_included.len(),
            self.firmware_size / 1024,
            self.firmware_origins(),
            self.firmware_missing.len(),
            self.modules_not_in_kernel.len(),
            self.elapsed_ms
        ));
        if let Some(n) = &self.firmware_note {
            s.push_str(&format!("firmware note: {n}\n"));
        }
        s
    }
}
