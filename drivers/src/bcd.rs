//! Boot entries after a restore changed disk identity: BCD device elements,
//! `MountedDevices`, and the EFI fallback loader.
//!
//! The BCD store is a registry hive (root `NewStoreRoot`, `Objects\{guid}\Elements\
//! <type>\Element`). An element type's bits 24-27 give its format; format 1 is a
//! device (`11000001` ApplicationDevice, `21000001` OsDevice, `31000003`
//! RamdiskSdiDevice...). Device data (layout as decoded in
//! `shared/testdata/README.md` and Geoff Chappell's BCD notes): a 16-byte
//! additional-options GUID, then a device packet `{u32 type, u32 flags, u32 size,
//! u32 reserved}`. A partition packet (type 6, size 0x48) is followed by a
//! 16-byte partition identifier (GPT: partition GUID; MBR: u64 byte offset), u32
//! 0, u32 partition style (0 GPT, 1 MBR), a 16-byte disk identifier (GPT: disk
//! GUID; MBR: u32 signature) and 16 reserved bytes. Ramdisk devices (recovery
//! WinRE) nest a partition packet further in; every partition packet found at a
//! 4-byte aligned offset is considered, and only those naming an *old* location
//! from the caller's map are rewritten, so firmware entries of other disks stay.
//!
//! `MountedDevices` values hold either 12 bytes (MBR: u32 signature + u64
//! offset) or `DMIO:ID:` + partition GUID (GPT).

use std::fmt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::hive::{reg_type, Hive, HiveError};
use crate::windows::resolve_ci;

/// Where a partition is, as Windows identifies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Location {
    /// GPT: disk GUID and partition GUID (Windows byte order, as on disk in GPT).
    Gpt {
        /// Disk GUID bytes.
        disk: [u8; 16],
        /// Partition GUID bytes.
        partition: [u8; 16],
    },
    /// MBR: disk signature and partition byte offset.
    Mbr {
        /// Disk signature.
        signature: u32,
        /// Partition start in bytes.
        offset: u64,
    },
}

/// Parse a GUID string (`8e0f2c38-e4ea-47ba-b7fc-9d8c74dccf0b`, braces optional)
/// into Windows' mixed-endian byte order.
pub fn guid(s: &str) -> Option<[u8; 16]> {
    crate::inject::guid_bytes(s)
}

/// Format Windows GUID bytes as `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
pub fn guid_string(b: &[u8; 16]) -> String {
    format!(
        "{:08x}-{:04x}-{:04x}-{:02x}{:02x}-{}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10..]
            .iter()
            .map(|x| format!("{x:02x}"))
            .collect::<String>()
    )
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Gpt { disk, partition } => write!(
                f,
                "GPT disk {} partition {}",
                guid_string(disk),
                guid_string(partition)
            ),
            Location::Mbr { signature, offset } => {
                write!(f, "MBR disk {signature:08x} partition at byte {offset:#x}")
            }
        }
    }
}

const PARTITION_PACKET: u32 = 6;
const PACKET_SIZE: usize = 0x48;

fn rd32(b: &[u8], p: usize) -> Option<u32> {
    b.get(p..p + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// Partition packets in device data: (offset of the packet, location).
pub fn partition_packets(data: &[u8]) -> Vec<(usize, Location)> {
    let mut out = Vec::new();
    let mut p = 16;
    while p + PACKET_SIZE <= data.len() {
        if rd32(data, p) == Some(PARTITION_PACKET) && rd32(data, p + 8) == Some(PACKET_SIZE as u32)
        {
            let body = &data[p + 16..p + PACKET_SIZE];
            let style = rd32(body, 20);
            let mut part = [0u8; 16];
            part.copy_from_slice(&body[0..16]);
            let mut disk = [0u8; 16];
            disk.copy_from_slice(&body[24..40]);
            let loc = match style {
                Some(0) => Some(Location::Gpt {
                    disk,
                    partition: part,
                }),
                Some(1) => Some(Location::Mbr {
                    signature: u32::from_le_bytes([disk[0], disk[1], disk[2], disk[3]]),
                    offset: u64::from_le_bytes([
                        part[0], part[1], part[2], part[3], part[4], part[5], part[6], part[7],
                    ]),
                }),
                _ => None,
            };
            if let Some(l) = loc {
                out.push((p, l));
                p += PACKET_SIZE;
                continue;
            }
        }
        p += 4;
    }
    out
}

fn encode_packet_body(loc: &Location) -> [u8; PACKET_SIZE - 16] {
    let mut b = [0u8; PACKET_SIZE - 16];
    match loc {
        Location::Gpt { disk, partition } => {
            b[0..16].copy_from_slice(partition);
            b[20..24].copy_from_slice(&0u32.to_le_bytes());
            b[24..40].copy_from_slice(disk);
        }
        Location::Mbr { signature, offset } => {
            b[0..8].copy_from_slice(&offset.to_le_bytes());
            b[20..24].copy_from_slice(&1u32.to_le_bytes());
            b[24..28].copy_from_slice(&signature.to_le_bytes());
        }
    }
    b
}

/// One device element rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BcdChange {
    /// `Objects\{guid}\Elements\<type>` key.
    pub key: String,
    /// Object description (`12000004`), when present.
    pub description: Option<String>,
    /// Old location.
    pub from: Location,
    /// New location.
    pub to: Location,
    /// Whole new `Element` value.
    pub new_data: Vec<u8>,
}

impl fmt::Display for BcdChange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "BCD {} ({}): {} -> {}",
            self.key,
            self.description.as_deref().unwrap_or("?"),
            self.from,
            self.to
        )
    }
}

/// A device element of a BCD object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceElement {
    /// `Objects\{guid}\Elements\<type>` key.
    pub key: String,
    /// The `Element` value.
    pub data: Vec<u8>,
    /// Partition packets found in it: (offset, location).
    pub packets: Vec<(usize, Location)>,
}

/// Every device element of every object with its partition locations.
pub fn device_elements(bcd: &Hive) -> Result<Vec<DeviceElement>, HiveError> {
    let mut out = Vec::new();
    let objects = bcd.key("Objects")?;
    for o in bcd.subkeys(objects)? {
        let oname = bcd.key_name(o)?;
        let Some(el) = bcd.find_subkey(o, "Elements")? else {
            continue;
        };
        for e in bcd.subkeys(el)? {
            let ename = bcd.key_name(e)?;
            let Ok(t) = u32::from_str_radix(&ename, 16) else {
                continue;
            };
            if (t >> 24) & 0xF != 1 {
                continue;
            }
            let Some(v) = bcd.value(e, "Element")? else {
                continue;
            };
            let packets = partition_packets(&v.data);
            out.push(DeviceElement {
                key: format!("Objects\\{oname}\\Elements\\{ename}"),
                data: v.data,
                packets,
            });
        }
    }
    Ok(out)
}

/// Compute the device element rewrites for `map` (old → new locations).
pub fn plan_bcd(bcd: &Hive, map: &[(Location, Location)]) -> Result<Vec<BcdChange>, HiveError> {
    let mut out = Vec::new();
    for DeviceElement { key, data, packets } in device_elements(bcd)? {
        let mut new_data = data.clone();
        let mut first: Option<(Location, Location)> = None;
        for (p, loc) in packets {
            if let Some((from, to)) = map.iter().find(|(from, _)| *from == loc) {
                new_data[p + 16..p + PACKET_SIZE].copy_from_slice(&encode_packet_body(to));
                first.get_or_insert((*from, *to));
            }
        }
        if let Some((from, to)) = first {
            let obj = key.split('\\').take(2).collect::<Vec<_>>().join("\\");
            let description = bcd.get_string(&format!("{obj}\\Elements\\12000004"), "Element")?;
            out.push(BcdChange {
                key,
                description,
                from,
                to,
                new_data,
            });
        }
    }
    Ok(out)
}

/// Apply rewrites computed by [`plan_bcd`].
pub fn apply_bcd(bcd: &mut Hive, changes: &[BcdChange]) -> Result<(), HiveError> {
    for c in changes {
        let k = bcd.key(&c.key)?;
        bcd.set_value(k, "Element", reg_type::BINARY, &c.new_data)?;
    }
    Ok(())
}

/// `MountedDevices` data for a location.
pub fn mounted_device_data(loc: &Location) -> Vec<u8> {
    match loc {
        Location::Gpt { partition, .. } => {
            let mut v = b"DMIO:ID:".to_vec();
            v.extend_from_slice(partition);
            v
        }
        Location::Mbr { signature, offset } => {
            let mut v = signature.to_le_bytes().to_vec();
            v.extend_from_slice(&offset.to_le_bytes());
            v
        }
    }
}

/// A `MountedDevices` value rewrite.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MountedChange {
    /// Value name (`\DosDevices\C:`, `\??\Volume{...}`).
    pub name: String,
    /// Old data.
    pub old: Vec<u8>,
    /// New data.
    pub new: Vec<u8>,
}

/// Compute `MountedDevices` rewrites in a SYSTEM hive.
pub fn plan_mounted_devices(
    system: &Hive,
    map: &[(Location, Location)],
) -> Result<Vec<MountedChange>, HiveError> {
    let Some(k) = system.open_key("MountedDevices")? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    for v in system.values(k)? {
        if let Some((_, to)) = map
            .iter()
            .find(|(from, _)| mounted_device_data(from) == v.data)
        {
            out.push(MountedChange {
                name: v.name.clone(),
                old: v.data.clone(),
                new: mounted_device_data(to),
            });
        }
    }
    Ok(out)
}

/// Apply `MountedDevices` rewrites.
pub fn apply_mounted_devices(
    system: &mut Hive,
    changes: &[MountedChange],
) -> Result<(), HiveError> {
    let k = system.key("MountedDevices")?;
    for c in changes {
        system.set_value(k, &c.name, reg_type::BINARY, &c.new)?;
    }
    Ok(())
}

/// `MountedDevices` rewrites as plan actions for the SYSTEM hive, so the CLI can
/// append them to an [`crate::inject::Plan`] (one plan, one backup, one write).
pub fn mounted_devices_actions(
    system: &Hive,
    map: &[(Location, Location)],
) -> Result<Vec<crate::inject::Action>, HiveError> {
    Ok(plan_mounted_devices(system, map)?
        .into_iter()
        .map(|c| crate::inject::Action::SetValue {
            key: "MountedDevices".into(),
            name: c.name,
            reg_type: reg_type::BINARY,
            data: c.new,
            reason: "the restored partition has a new identity".into(),
        })
        .collect())
}

/// Rewrite the BCD store file at `path` (with `.LOG1/.LOG2` replayed) for `map`;
/// unless `dry_run`, copy it to `<name>.rescue-bak-<stamp>` first and save it.
pub fn rewrite_bcd_file(
    path: &Path,
    map: &[(Location, Location)],
    stamp: &str,
    dry_run: bool,
) -> Result<Vec<BcdChange>, HiveError> {
    let mut bcd = Hive::open(path)?;
    let changes = plan_bcd(&bcd, map)?;
    if dry_run || changes.is_empty() {
        return Ok(changes);
    }
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("BCD");
    let backup = path.with_file_name(format!("{name}.rescue-bak-{stamp}"));
    if backup.exists() {
        return Err(HiveError::Io {
            action: "backing up BCD to",
            path: backup.display().to_string(),
            source: std::io::Error::new(std::io::ErrorKind::AlreadyExists, "backup exists"),
        });
    }
    std::fs::copy(path, &backup).map_err(|source| HiveError::Io {
        action: "backing up BCD to",
        path: backup.display().to_string(),
        source,
    })?;
    apply_bcd(&mut bcd, &changes)?;
    bcd.save(path)?;
    Ok(changes)
}

/// The copy needed so UEFI firmware without a boot entry still finds Windows:
/// `\EFI\Boot\BOOTX64.EFI` (or `BOOTIA32.EFI`/`BOOTAA64.EFI`) from
/// `\EFI\Microsoft\Boot\bootmgfw.efi`. None when it exists or there is no bootmgfw.
pub fn efi_fallback_copy(esp_root: &Path, arch: crate::inf::Arch) -> Option<(PathBuf, PathBuf)> {
    let name = match arch {
        crate::inf::Arch::X86 => "BOOTIA32.EFI",
        crate::inf::Arch::Arm64 => "BOOTAA64.EFI",
        _ => "BOOTX64.EFI",
    };
    let src = resolve_ci(esp_root, "EFI/Microsoft/Boot/bootmgfw.efi").filter(|p| p.is_file())?;
    if resolve_ci(esp_root, &format!("EFI/Boot/{name}")).is_some_and(|p| p.is_file()) {
        return None;
    }
    let boot =
        resolve_ci(esp_root, "EFI/Boot").unwrap_or_else(|| esp_root.join("EFI").join("Boot"));
    Some((src, boot.join(name)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hive::open_hive_bytes;
    use crate::testutil::{diff, hivex_dump, raw, regipy, vline};

    fn gpt(disk: &str, part: &str) -> Location {
        Location::Gpt {
            disk: guid(disk).expect("guid"),
            partition: guid(part).expect("guid"),
        }
    }

    const OLD_DISK: &str = "0b2394a9-095e-487d-8d48-719ecd4d78ca";
    const OLD_C: &str = "8e0f2c38-e4ea-47ba-b7fc-9d8c74dccf0b";
    const OLD_ESP: &str = "36be3955-63bf-4068-a6ab-00195cca3a22";
    const OLD_RE: &str = "6cdfcd69-de75-4490-8f99-5a84bf264917";

    #[test]
    fn decodes_the_real_store() {
        let bcd = open_hive_bytes(raw("bcd/BCD.regipy-uefi-gpt")).expect("open");
        let els = device_elements(&bcd).expect("elements");
        let win10 = els
            .iter()
            .find(|e| {
                e.key == "Objects\\{733b62e5-f608-11eb-825c-c112f60133ab}\\Elements\\21000001"
            })
            .expect("osdevice");
        assert_eq!(win10.data.len(), 88);
        assert_eq!(win10.packets, [(16, gpt(OLD_DISK, OLD_C))]);
        // The WinRE ramdisk nests a partition packet deeper in its 200 bytes.
        let re = els
            .iter()
            .find(|e| {
                e.key == "Objects\\{733b62e6-f608-11eb-825c-c112f60133ab}\\Elements\\11000001"
            })
            .expect("winre");
        assert_eq!(re.packets.len(), 1);
        assert_eq!(re.packets[0].1, gpt(OLD_DISK, OLD_RE));
        assert_eq!(guid_string(&guid(OLD_C).expect("g")), OLD_C);
    }

    #[test]
    fn rewrite_to_new_gpt_identity_and_read_back() {
        let bytes = raw("bcd/BCD.regipy-uefi-gpt");
        let dir = tempfile::tempdir().expect("tmp");
        let before_p = dir.path().join("BCD.before");
        std::fs::write(&before_p, &bytes).expect("write");
        let before = hivex_dump(&before_p);
        let mut bcd = open_hive_bytes(bytes).expect("open");
        let new_disk = "11111111-2222-3333-4444-555555555555";
        let map = [
            (
                gpt(OLD_DISK, OLD_C),
                gpt(new_disk, "aaaaaaaa-0000-0000-0000-000000000001"),
            ),
            (
                gpt(OLD_DISK, OLD_ESP),
                gpt(new_disk, "aaaaaaaa-0000-0000-0000-000000000002"),
            ),
            (
                gpt(OLD_DISK, OLD_RE),
                gpt(new_disk, "aaaaaaaa-0000-0000-0000-000000000003"),
            ),
        ];
        let changes = plan_bcd(&bcd, &map).expect("plan");
        let keys: Vec<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        assert!(
            keys.contains(&"Objects\\{733b62e5-f608-11eb-825c-c112f60133ab}\\Elements\\11000001")
        );
        assert!(
            keys.contains(&"Objects\\{733b62e5-f608-11eb-825c-c112f60133ab}\\Elements\\21000001")
        );
        assert!(
            keys.contains(&"Objects\\{9dea862c-5cdd-4e70-acc1-f32b344d4795}\\Elements\\11000001"),
            "bootmgr on the ESP"
        );
        assert!(
            keys.contains(&"Objects\\{733b62e7-f608-11eb-825c-c112f60133ab}\\Elements\\31000003"),
            "ramdisk SDI device"
        );
        assert!(
            !keys.iter().any(|k| k.contains("733b62de")),
            "firmware entries of another disk untouched"
        );
        assert!(changes.iter().any(|c| c.to_string().contains("Windows 10")));
        apply_bcd(&mut bcd, &changes).expect("apply");
        let out = dir.path().join("BCD.after");
        bcd.save(&out).expect("save");
        let after = hivex_dump(&out);
        let (removed, added) = diff(&before, &after);
        assert_eq!(removed.len(), changes.len());
        assert_eq!(added.len(), changes.len());
        for c in &changes {
            assert!(
                added.contains(&vline(&c.key, "Element", 3, &c.new_data)),
                "{}",
                c.key
            );
        }
        // Read back with our parser: no old location of this disk remains.
        let re = Hive::open(&out).expect("reopen");
        for e in device_elements(&re).expect("elements") {
            for (_, loc) in e.packets {
                assert!(!map.iter().any(|(from, _)| *from == loc), "{loc}");
            }
        }
        let win = re
            .get_string(
                "Objects\\{733b62e5-f608-11eb-825c-c112f60133ab}\\Elements\\12000002",
                "Element",
            )
            .expect("r");
        assert_eq!(win.as_deref(), Some("\\Windows\\system32\\winload.efi"));
        let os = re
            .value(
                re.key("Objects\\{733b62e5-f608-11eb-825c-c112f60133ab}\\Elements\\21000001")
                    .expect("k"),
                "Element",
            )
            .expect("r")
            .expect("v");
        assert_eq!(partition_packets(&os.data), [(16, map[0].1)]);
    }

    #[test]
    fn gpt_to_mbr_and_mounted_devices() {
        let mut bcd = open_hive_bytes(raw("bcd/BCD.regipy-uefi-gpt")).expect("open");
        let mbr = Location::Mbr {
            signature: 0x5cbe_a03e,
            offset: 0x10_0000,
        };
        let changes = plan_bcd(&bcd, &[(gpt(OLD_DISK, OLD_C), mbr)]).expect("plan");
        apply_bcd(&mut bcd, &changes).expect("apply");
        let re = open_hive_bytes(bcd.to_bytes()).expect("reopen");
        let os = re
            .value(
                re.key("Objects\\{733b62e5-f608-11eb-825c-c112f60133ab}\\Elements\\21000001")
                    .expect("k"),
                "Element",
            )
            .expect("r")
            .expect("v");
        assert_eq!(partition_packets(&os.data), [(16, mbr)]);
        assert_eq!(&os.data[16 + 16..16 + 24], &0x10_0000u64.to_le_bytes());

        // Win7 MountedDevices C: is MBR (sig 5cbea03e, offset 1 MiB); move it to GPT.
        let mut sys = open_hive_bytes(regipy("SYSTEM")).expect("open");
        let new = gpt("11111111-2222-3333-4444-555555555555", OLD_C);
        let mc = plan_mounted_devices(&sys, &[(mbr, new)]).expect("plan");
        assert!(mc.iter().any(|c| c.name == "\\DosDevices\\C:"), "{mc:?}");
        apply_mounted_devices(&mut sys, &mc).expect("apply");
        let re = open_hive_bytes(sys.to_bytes()).expect("reopen");
        let c = re
            .value(re.key("MountedDevices").expect("k"), "\\DosDevices\\C:")
            .expect("r")
            .expect("C:");
        assert_eq!(&c.data[..8], b"DMIO:ID:");
        assert_eq!(c.data[8..], guid(OLD_C).expect("g"));
    }

    #[test]
    fn file_level_rewrite_keeps_a_backup() {
        let t = tempfile::tempdir().expect("tmp");
        let p = t.path().join("BCD");
        let orig = raw("bcd/BCD.regipy-uefi-gpt");
        std::fs::write(&p, &orig).expect("w");
        let map = [(
            gpt(OLD_DISK, OLD_C),
            gpt("11111111-2222-3333-4444-555555555555", OLD_C),
        )];
        let dry = rewrite_bcd_file(&p, &map, "T", true).expect("dry");
        assert_eq!(
            std::fs::read(&p).expect("r"),
            orig,
            "dry run writes nothing"
        );
        let done = rewrite_bcd_file(&p, &map, "T", false).expect("apply");
        assert_eq!(dry, done);
        assert_eq!(
            std::fs::read(t.path().join("BCD.rescue-bak-T")).expect("r"),
            orig
        );
        assert!(
            rewrite_bcd_file(&p, &map, "T", false)
                .expect("again")
                .is_empty(),
            "idempotent"
        );
        let sys = open_hive_bytes(regipy("SYSTEM_B")).expect("open");
        let c = Location::Gpt {
            disk: [0; 16],
            partition: *b"\x21\x1f\x93\x09\xaf\x7f\xa9\x44\x81\xd8\x1e\x73\xc1\x4b\x9e\xaf",
        };
        let acts = mounted_devices_actions(&sys, &[(c, gpt(OLD_DISK, OLD_C))]).expect("actions");
        assert!(acts.iter().any(|a| matches!(a, crate::inject::Action::SetValue { name, .. } if name == "\\DosDevices\\C:")), "{acts:?}");
    }

    #[test]
    fn efi_fallback() {
        let t = tempfile::tempdir().expect("tmp");
        assert!(efi_fallback_copy(t.path(), crate::inf::Arch::Amd64).is_none());
        let mb = t.path().join("EFI/Microsoft/Boot");
        std::fs::create_dir_all(&mb).expect("mkdir");
        std::fs::write(mb.join("bootmgfw.efi"), b"x").expect("write");
        let (from, to) = efi_fallback_copy(t.path(), crate::inf::Arch::Amd64).expect("needed");
        assert_eq!(from, mb.join("bootmgfw.efi"));
        assert!(to.ends_with("EFI/Boot/BOOTX64.EFI"));
        std::fs::create_dir_all(t.path().join("EFI/boot")).expect("mkdir");
        std::fs::write(t.path().join("EFI/boot/bootx64.efi"), b"x").expect("write");
        assert!(efi_fallback_copy(t.path(), crate::inf::Arch::Amd64).is_none());
    }
}
