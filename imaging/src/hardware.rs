//! PCI devices and the drivers that claimed them (sysfs), so a technician
//! sees at once why a disk or a network card is missing: a storage or
//! network controller that no driver claimed means its disks or its link
//! cannot appear (an Intel VMD/RST controller without `vmd`, a NIC whose
//! module or firmware the live system lacks).

use std::path::Path;

use serde::Serialize;

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciDevice {
    /// `0000:00:1f.2`
    pub slot: String,
    /// Class, subclass and programming interface (`0x010601`: AHCI).
    pub class: u32,
    pub vendor: u16,
    pub device: u16,
    /// What the class is, in words ("SATA controller").
    pub kind: String,
    /// The driver bound to it, if any.
    pub driver: Option<String>,
    /// The kernel's modalias (what a module must match to claim it).
    pub modalias: Option<String>,
}

impl PciDevice {
    /// A storage, network or USB controller: without a driver, disks or
    /// links go missing.
    pub fn matters(&self) -> bool {
        matches!(self.class >> 16, 0x01 | 0x02) || self.class >> 8 == 0x0c03
    }

    /// `[8086:a0d3] SATA controller at 0000:00:17.0`
    pub fn describe(&self) -> String {
        format!("[{:04x}:{:04x}] {} at {}", self.vendor, self.device, self.kind, self.slot)
    }
}

/// The class in words (PCI Code and ID Assignment specification, the
/// classes a rescue system meets).
pub fn class_name(class: u32) -> String {
    let (base, sub, pi) = (class >> 16, (class >> 8) & 0xff, class & 0xff);
    let s = match (base, sub) {
        (0x01, 0x00) => "SCSI controller",
        (0x01, 0x01) => "IDE controller",
        (0x01, 0x04) => "RAID controller",
        (0x01, 0x06) if pi == 0x01 => "SATA controller (AHCI)",
        (0x01, 0x06) => "SATA controller",
        (0x01, 0x07) => "SAS controller",
        (0x01, 0x08) if pi == 0x02 => "NVMe controller",
        (0x01, 0x08) => "non-volatile memory controller",
        (0x01, _) => "storage controller",
        (0x02, 0x00) => "Ethernet controller",
        (0x02, 0x80) => "network controller",
        (0x02, _) => "network controller",
        (0x03, _) => "display controller",
        (0x04, _) => "multimedia controller",
        (0x06, 0x00) => "host bridge",
        (0x06, 0x01) => "ISA bridge",
        (0x06, 0x04) => "PCI bridge",
        (0x06, _) => "bridge",
        (0x08, _) => "system peripheral",
        (0x0c, 0x03) => "USB controller",
        (0x0c, 0x05) => "SMBus controller",
        (0x0c, _) => "serial bus controller",
        (0x0d, _) => "wireless controller",
        (0xff, _) => "unassigned class (virtual device)",
        _ => "other device",
    };
    s.to_string()
}

fn hex(dir: &Path, name: &str) -> Option<u32> {
    let t = std::fs::read_to_string(dir.join(name)).ok()?;
    u32::from_str_radix(t.trim().trim_start_matches("0x"), 16).ok()
}

/// The sysfs to read: `/sys`, or `RESCUE_SYSFS` (a made tree, for tests).
pub fn sysfs_root() -> std::path::PathBuf {
    std::env::var_os("RESCUE_SYSFS").map(Into::into).unwrap_or_else(|| "/sys".into())
}

/// Every PCI device under `sysfs_root` (normally `/sys`), by slot. A
/// machine without a PCI bus (or without sysfs) has none.
pub fn pci_devices(sysfs_root: &Path) -> Vec<PciDevice> {
    let Ok(rd) = std::fs::read_dir(sysfs_root.join("bus/pci/devices")) else { return Vec::new() };
    let mut v: Vec<PciDevice> = rd
        .flatten()
        .filter_map(|e| {
            let dir = e.path();
            let class = hex(&dir, "class")?;
            Some(PciDevice {
                slot: e.file_name().to_string_lossy().into_owned(),
                class,
                vendor: hex(&dir, "vendor")? as u16,
                device: hex(&dir, "device")? as u16,
                kind: class_name(class),
                driver: std::fs::read_link(dir.join("driver")).ok().and_then(|l| l.file_name().map(|n| n.to_string_lossy().into_owned())),
                modalias: std::fs::read_to_string(dir.join("modalias")).ok().map(|s| s.trim().to_string()),
            })
        })
        .collect();
    v.sort_by(|a, b| a.slot.cmp(&b.slot));
    v
}

/// The storage, network and USB controllers that no driver claimed.
pub fn unclaimed(sysfs_root: &Path) -> Vec<PciDevice> {
    pci_devices(sysfs_root).into_iter().filter(|d| d.driver.is_none() && d.matters()).collect()
}

#[cfg(all(test, unix))]
#[allow(clippy::unwrap_used)] // tests may unwrap (STYLE.md)
mod tests {
    use super::*;

    fn dev(root: &Path, slot: &str, class: &str, vendor: &str, device: &str, driver: Option<&str>) {
        let d = root.join("bus/pci/devices").join(slot);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("class"), format!("{class}\n")).unwrap();
        std::fs::write(d.join("vendor"), format!("{vendor}\n")).unwrap();
        std::fs::write(d.join("device"), format!("{device}\n")).unwrap();
        std::fs::write(d.join("modalias"), format!("pci:v0000{}d0000{}sv\n", &vendor[2..].to_uppercase(), &device[2..].to_uppercase())).unwrap();
        if let Some(drv) = driver {
            let t = root.join("bus/pci/drivers").join(drv);
            std::fs::create_dir_all(&t).unwrap();
            std::os::unix::fs::symlink(&t, d.join("driver")).unwrap();
        }
    }

    #[test]
    fn lists_devices_and_the_controllers_without_a_driver() {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        dev(r, "0000:00:00.0", "0x060000", "0x8086", "0x9b61", None);
        dev(r, "0000:00:17.0", "0x010601", "0x8086", "0x06d2", Some("ahci"));
        dev(r, "0000:00:0e.0", "0x010400", "0x8086", "0x9a0b", None);
        dev(r, "0000:02:00.0", "0x020000", "0x10ec", "0x8125", None);
        dev(r, "0000:00:14.0", "0x0c0330", "0x8086", "0x06ed", Some("xhci_hcd"));
        let all = pci_devices(r);
        assert_eq!(all.iter().map(|d| d.slot.as_str()).collect::<Vec<_>>(), ["0000:00:00.0", "0000:00:0e.0", "0000:00:14.0", "0000:00:17.0", "0000:02:00.0"]);
        assert_eq!(all[3].driver.as_deref(), Some("ahci"));
        assert_eq!(all[3].kind, "SATA controller (AHCI)");
        assert_eq!(all[0].modalias.as_deref(), Some("pci:v00008086d00009B61sv"));
        // The host bridge has no driver either, but nothing goes missing for it.
        let u = unclaimed(r);
        assert_eq!(u.iter().map(|d| d.describe()).collect::<Vec<_>>(), ["[8086:9a0b] RAID controller at 0000:00:0e.0", "[10ec:8125] Ethernet controller at 0000:02:00.0"]);
        // No PCI bus: nothing, and no error.
        assert!(pci_devices(&r.join("nothing")).is_empty());
    }
}
