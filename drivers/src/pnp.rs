//! This machine's storage controllers as Windows Plug and Play lists them, for
//! `rescue universal-restore` run from WinPE without `--for` (on Linux,
//! [`crate::windows::detect_controllers`] reads sysfs instead).
//!
//! The SetupAPI calls (`SetupDiGetClassDevsW` with `DIGCF_PRESENT |
//! DIGCF_ALLCLASSES`, then `SPDRP_HARDWAREID`, `SPDRP_COMPATIBLEIDS`,
//! `SPDRP_CLASS` and `SPDRP_DEVICEDESC` of each device) are in
//! `pnp/sys_windows.rs`; this module decodes what they return and chooses, and
//! is tested on every platform: REG_MULTI_SZ / REG_SZ property buffers (UTF-16LE)
//! and PCI hardware IDs (`PCI\VEN_v&DEV_d&SUBSYS_ssssvvvv&REV_r`, `..&CC_cc`;
//! Microsoft Learn, "Identifiers for PCI Devices").
//!
//! Kept: PCI functions of base class 01 (mass storage; the class comes from the
//! `CC_` IDs Windows builds from the configuration space), and non-PCI devices of
//! setup class `SCSIAdapter` or `HDC` that hardware enumerated (Hyper-V
//! `VMBUS\{ba6163d9-…}` storvsc). Their IDs are passed on as Windows reports
//! them, hardware IDs first, which is the order INF matching wants.
//! Deliberately left out: software-enumerated adapters (`ROOT\`, `SWD\`, `SW\`:
//! iSCSI initiator, Storage Spaces, WinPE's RAM disk), which the restored
//! system does not boot from, and USB mass storage (class `USB`), which Windows
//! drives inbox.

use crate::windows::Controller;

/// A present device as SetupAPI describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PnpDevice {
    /// Device instance ID (`PCI\VEN_8086&DEV_2922&...\3&267A616A&0&FA`).
    pub instance_id: String,
    /// `SPDRP_HARDWAREID`, most specific first.
    pub hardware_ids: Vec<String>,
    /// `SPDRP_COMPATIBLEIDS`.
    pub compatible_ids: Vec<String>,
    /// `SPDRP_CLASS` (setup class name: `SCSIAdapter`, `HDC`, ...).
    pub class: Option<String>,
    /// `SPDRP_DEVICEDESC`.
    pub description: Option<String>,
}

/// What a PCI hardware or compatible ID says; absent parts are `None`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PciId {
    /// `VEN_`.
    pub vendor: Option<u16>,
    /// `DEV_`.
    pub device: Option<u16>,
    /// `SUBSYS_`: subsystem device ID in the high 16 bits, subsystem vendor low.
    pub subsys: Option<u32>,
    /// `REV_`.
    pub revision: Option<u8>,
    /// `CC_cc` (base, sub: `class >> 8`) or `CC_cccccc` (with prog-if), as
    /// base << 16 | sub << 8 | prog-if.
    pub class: Option<u32>,
}

/// Errors asking Windows for the device list.
#[derive(Debug, thiserror::Error)]
pub enum PnpError {
    /// A SetupAPI call failed.
    #[error("{call}: {source}")]
    Call {
        /// The function.
        call: &'static str,
        /// Cause.
        source: std::io::Error,
    },
}

impl PnpError {
    /// What the user can do about it.
    pub fn hint(&self) -> &'static str {
        "name the target hardware with --for ahci|nvme|virtio|vmware|hyperv|intel-rst or a hardware ID"
    }
}

/// UTF-16LE code units of a registry property buffer (an odd last byte is dropped).
fn units(buf: &[u8]) -> Vec<u16> {
    buf.chunks_exact(2)
        .map(|c| u16::from_le_bytes([c[0], c[1]]))
        .collect()
}

/// A REG_MULTI_SZ buffer: UTF-16LE strings, each NUL-terminated, the list ended
/// by an empty string. Tolerates a missing final terminator and stops at the
/// first empty string, as Windows does.
pub fn multi_sz(buf: &[u8]) -> Vec<String> {
    units(buf)
        .split(|u| *u == 0)
        .take_while(|s| !s.is_empty())
        .map(String::from_utf16_lossy)
        .collect()
}

/// A REG_SZ buffer: UTF-16LE up to the first NUL (or the end).
pub fn sz(buf: &[u8]) -> String {
    let u = units(buf);
    let end = u.iter().position(|c| *c == 0).unwrap_or(u.len());
    String::from_utf16_lossy(&u[..end])
}

fn hex<T: TryFrom<u32>>(s: &str, digits: usize) -> Option<T> {
    if s.len() != digits {
        return None;
    }
    u32::from_str_radix(s, 16)
        .ok()
        .and_then(|v| T::try_from(v).ok())
}

/// Parse a PCI hardware or compatible ID (`PCI\VEN_8086&DEV_2922&SUBSYS_11001AF4&REV_02`,
/// `PCI\VEN_8086&CC_0106`, `PCI\CC_010601`). `None` for other buses or
/// malformed fields. A device instance ID (`...\3&267A616A&0&FA`) parses as its
/// hardware ID part.
pub fn parse_pci_id(id: &str) -> Option<PciId> {
    let mut parts = id.split('\\');
    if !parts.next()?.eq_ignore_ascii_case("PCI") {
        return None;
    }
    let mut out = PciId::default();
    for field in parts.next()?.split('&') {
        let (key, val) = field.split_once('_')?;
        match key.to_ascii_uppercase().as_str() {
            "VEN" => out.vendor = Some(hex(val, 4)?),
            "DEV" => out.device = Some(hex(val, 4)?),
            "SUBSYS" => out.subsys = Some(hex(val, 8)?),
            "REV" => out.revision = Some(hex(val, 2)?),
            "CC" => {
                out.class = Some(match val.len() {
                    4 => hex::<u32>(val, 4)? << 8,
                    _ => hex(val, 6)?,
                })
            }
            _ => return None,
        }
    }
    Some(out)
}

fn enumerator(id: &str) -> &str {
    id.split('\\').next().unwrap_or("")
}

/// The controller for `d`, if it is one the restored system may boot from
/// (see the module doc for the rule).
pub fn storage_controller(d: &PnpDevice) -> Option<Controller> {
    let ids: Vec<&String> = d.hardware_ids.iter().chain(&d.compatible_ids).collect();
    let first = ids
        .first()
        .map(|s| s.as_str())
        .unwrap_or(d.instance_id.as_str());
    let bus = enumerator(first).to_ascii_uppercase();
    let pci: Vec<PciId> = ids.iter().filter_map(|i| parse_pci_id(i)).collect();
    let class_code = pci.iter().find_map(|p| p.class);
    let setup_class = d.class.as_deref().unwrap_or("");
    let wanted = if bus == "PCI" {
        class_code.is_some_and(|c| c >> 16 == 0x01)
    } else {
        !matches!(bus.as_str(), "ROOT" | "SWD" | "SW" | "")
            && ["SCSIAdapter", "HDC"]
                .iter()
                .any(|c| c.eq_ignore_ascii_case(setup_class))
    };
    if !wanted || ids.is_empty() {
        return None;
    }
    let mut list: Vec<String> = Vec::new();
    for i in &ids {
        if !list.iter().any(|l| l.eq_ignore_ascii_case(i)) {
            list.push((*i).clone());
        }
    }
    let vendor = pci.iter().find_map(|p| p.vendor);
    let device = pci.iter().find_map(|p| p.device);
    let mut description = match (vendor, device, class_code) {
        (Some(v), Some(dv), Some(c)) => format!("PCI {v:04x}:{dv:04x} class {c:06x}"),
        _ => first.to_owned(),
    };
    if let Some(desc) = d.description.as_deref().filter(|s| !s.is_empty()) {
        description = format!("{description} ({desc})");
    }
    let origin = if d.instance_id.is_empty() {
        first.to_owned()
    } else {
        d.instance_id.clone()
    };
    Some(Controller {
        origin: format!("setupapi {origin}"),
        description,
        ids: list,
    })
}

/// The storage controllers among `devices`, in their order.
pub fn storage_controllers(devices: &[PnpDevice]) -> Vec<Controller> {
    devices.iter().filter_map(storage_controller).collect()
}

#[cfg(windows)]
mod sys_windows;

/// This machine's storage controllers, from SetupAPI.
#[cfg(windows)]
pub fn detect_controllers() -> Result<Vec<Controller>, PnpError> {
    Ok(storage_controllers(&sys_windows::present_devices()?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (STYLE.md)
mod tests {
    use super::*;

    /// UTF-16LE bytes of `strings`, each NUL-terminated, plus the list's final NUL.
    fn msz(strings: &[&str]) -> Vec<u8> {
        let mut u: Vec<u16> = Vec::new();
        for s in strings {
            u.extend(s.encode_utf16());
            u.push(0);
        }
        u.push(0);
        u.iter().flat_map(|c| c.to_le_bytes()).collect()
    }

    #[test]
    fn multi_sz_decodes_utf16_lists() {
        // Bytes as SetupDiGetDeviceRegistryPropertyW returns SPDRP_HARDWAREID.
        let raw: &[u8] = b"P\0C\0I\0\\\0V\0E\0N\0_\x008\x000\x008\x006\0\0\0\x41\0\0\0\0\0";
        assert_eq!(
            multi_sz(raw),
            vec!["PCI\\VEN_8086".to_owned(), "A".to_owned()]
        );
        assert_eq!(multi_sz(&msz(&["x", "é™"])), vec!["x", "é™"]);
        // No final terminators, an odd trailing byte, empty buffers.
        assert_eq!(multi_sz(b"a\0b\0\0\0c\0"), vec!["ab", "c"]);
        assert_eq!(multi_sz(b"a\0b\0\0\0c\0\0\0\0\0"), vec!["ab", "c"]);
        assert_eq!(multi_sz(b"a\0b"), vec!["a"]);
        assert!(multi_sz(b"").is_empty());
        assert!(
            multi_sz(b"\0\0a\0\0\0").is_empty(),
            "an empty first string ends the list"
        );
        assert_eq!(sz(b"S\0C\0S\0I\0A\0d\0a\0p\0t\0e\0r\0\0\0"), "SCSIAdapter");
        assert_eq!(sz(b"H\0D\0C\0"), "HDC");
    }

    #[test]
    fn pci_ids_parse() {
        let p = parse_pci_id("PCI\\VEN_8086&DEV_2922&SUBSYS_11001AF4&REV_02").unwrap();
        assert_eq!(
            p,
            PciId {
                vendor: Some(0x8086),
                device: Some(0x2922),
                subsys: Some(0x1100_1AF4),
                revision: Some(2),
                class: None
            }
        );
        assert_eq!(
            parse_pci_id("PCI\\VEN_8086&DEV_2922&CC_010601")
                .unwrap()
                .class,
            Some(0x01_0601)
        );
        assert_eq!(
            parse_pci_id("pci\\ven_1af4&cc_0100").unwrap(),
            PciId {
                vendor: Some(0x1AF4),
                class: Some(0x01_0000),
                ..Default::default()
            }
        );
        assert_eq!(
            parse_pci_id("PCI\\CC_010802").unwrap().class,
            Some(0x01_0802)
        );
        let inst = parse_pci_id("PCI\\VEN_15AD&DEV_07C0&SUBSYS_07C015AD&REV_02\\4&1C3E2C10&0&00A8")
            .unwrap();
        assert_eq!((inst.vendor, inst.device), (Some(0x15AD), Some(0x07C0)));
        for bad in [
            "USB\\VID_0781&PID_5581",
            "PCI\\VEN_80&DEV_2922",
            "PCI\\VEN_XYZW",
            "PCI\\FOO_1",
            "PCI",
            "PCI\\CC_01060",
            "ACPI\\PNP0A08",
        ] {
            assert_eq!(parse_pci_id(bad), None, "{bad}");
        }
    }

    fn dev(inst: &str, hw: &[&str], compat: &[&str], class: &str) -> PnpDevice {
        PnpDevice {
            instance_id: inst.into(),
            hardware_ids: hw.iter().map(|s| (*s).into()).collect(),
            compatible_ids: compat.iter().map(|s| (*s).into()).collect(),
            class: Some(class.into()),
            description: Some("Standard SATA AHCI Controller".into()),
        }
    }

    #[test]
    fn keeps_storage_controllers_only() {
        // A QEMU q35 machine as WinPE lists it (IDs as Windows builds them).
        let ahci = dev(
            "PCI\\VEN_8086&DEV_2922&SUBSYS_11001AF4&REV_02\\3&267A616A&0&FA",
            &[
                "PCI\\VEN_8086&DEV_2922&SUBSYS_11001AF4&REV_02",
                "PCI\\VEN_8086&DEV_2922&SUBSYS_11001AF4",
                "PCI\\VEN_8086&DEV_2922&CC_010601",
                "PCI\\VEN_8086&DEV_2922&CC_0106",
            ],
            &[
                "PCI\\VEN_8086&DEV_2922&REV_02",
                "PCI\\VEN_8086&DEV_2922",
                "PCI\\VEN_8086&CC_010601",
                "PCI\\VEN_8086&CC_0106",
                "PCI\\VEN_8086",
                "PCI\\CC_010601",
                "PCI\\CC_0106",
            ],
            "hdc",
        );
        let nic = dev(
            "PCI\\VEN_8086&DEV_10D3\\3&0",
            &[
                "PCI\\VEN_8086&DEV_10D3&SUBSYS_00008086&REV_00",
                "PCI\\VEN_8086&DEV_10D3&CC_020000",
            ],
            &["PCI\\CC_0200"],
            "Net",
        );
        let storvsc = dev(
            "VMBUS\\{BA6163D9-04A1-4D29-B605-72E2FFB1DC7F}\\{X}",
            &["VMBUS\\{BA6163D9-04A1-4D29-B605-72E2FFB1DC7F}"],
            &[],
            "SCSIAdapter",
        );
        let iscsi = dev(
            "ROOT\\ISCSIPRT\\0000",
            &["ROOT\\iSCSIPrt"],
            &[],
            "SCSIAdapter",
        );
        let ramdisk = dev("ROOT\\WINPE_RAMDISK\\0000", &[], &[], "SCSIAdapter");
        let usb = dev(
            "USB\\VID_0781&PID_5581\\1",
            &["USB\\VID_0781&PID_5581"],
            &["USB\\Class_08"],
            "USB",
        );
        let got = storage_controllers(&[nic, ahci, iscsi, storvsc, ramdisk, usb]);
        assert_eq!(got.len(), 2, "{got:#?}");
        assert_eq!(
            got[0].origin,
            "setupapi PCI\\VEN_8086&DEV_2922&SUBSYS_11001AF4&REV_02\\3&267A616A&0&FA"
        );
        assert_eq!(
            got[0].description,
            "PCI 8086:2922 class 010601 (Standard SATA AHCI Controller)"
        );
        assert_eq!(got[0].ids.len(), 11);
        assert_eq!(
            got[0].ids[0],
            "PCI\\VEN_8086&DEV_2922&SUBSYS_11001AF4&REV_02"
        );
        assert!(got[0].ids.contains(&"PCI\\CC_010601".to_owned()));
        assert_eq!(
            got[1].ids,
            vec!["VMBUS\\{BA6163D9-04A1-4D29-B605-72E2FFB1DC7F}"]
        );
        // Matches the list the sysfs path computes for the same function.
        let (hw, compat) = crate::windows::pci_hardware_ids(&crate::windows::PciDevice {
            vendor: 0x8086,
            device: 0x2922,
            subsys_vendor: 0x1AF4,
            subsys_device: 0x1100,
            revision: 2,
            class: 0x01_0601,
        });
        assert_eq!(got[0].ids, hw.into_iter().chain(compat).collect::<Vec<_>>());
    }

    /// The real SetupAPI (under Wine: a handful of devices, none PCI).
    #[cfg(windows)]
    #[test]
    fn setupapi_lists_present_devices() {
        let devs = sys_windows::present_devices().unwrap();
        assert!(devs.iter().all(|d| !d.instance_id.is_empty()), "{devs:#?}");
        let _ = storage_controllers(&devs);
    }

    #[test]
    fn pci_class_decides_not_setup_class() {
        // A RAID controller whose driver put it in SCSIAdapter: class 0104 keeps it;
        // a PCI device without class IDs is not guessed at.
        let raid = dev(
            "PCI\\VEN_8086&DEV_2822\\1",
            &["PCI\\VEN_8086&DEV_2822&CC_010400"],
            &[],
            "SCSIAdapter",
        );
        assert!(storage_controller(&raid).is_some());
        let odd = dev(
            "PCI\\VEN_1234&DEV_0001\\1",
            &["PCI\\VEN_1234&DEV_0001"],
            &[],
            "SCSIAdapter",
        );
        assert!(storage_controller(&odd).is_none());
        let empty = PnpDevice::default();
        assert!(storage_controller(&empty).is_none());
    }
}
