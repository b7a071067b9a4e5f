//! The build report: what went into the media, sizes, checksums and what is
//! missing (`build-report.json`, plus `SHA256SUMS` for the output files).
//! Apart from `elapsed_ms` it is reproducible like the media.

use std::path::Path;

use sha2::{Digest, Sha256};

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
    /// Firmware a module may ask for that no firmware directory had. Debian
    /// ships most NIC firmware in the `non-free-firmware` component
    /// (firmware-realtek, firmware-misc-nonfree, firmware-bnx2x, ...).
    pub firmware_missing: Vec<FirmwareNote>,
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
            "kernel {}; {} modules ({} KiB); {} tools/libraries; firmware: {} included, {} missing; {} default modules not in this kernel; {} ms\n",
            self.kernel_version,
            self.modules.len(),
            self.modules_size / 1024,
            self.tools.len(),
            self.firmware_included.len(),
            self.firmware_missing.len(),
            self.modules_not_in_kernel.len(),
            self.elapsed_ms
        ));
        s
    }
}
