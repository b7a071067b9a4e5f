//! Decoders for the output buffers of the Windows disk and volume ioctls that
//! `sys_windows.rs` issues. They are plain byte parsers, built on every
//! platform so their tests run on Linux too; only the Windows build calls them.
//!
//! Offsets are those of the x64 layouts documented in the Windows SDK
//! (`winioctl.h`, "Storage and disk management" structures on learn.microsoft.com):
//! fields are little-endian and aligned to their size, so e.g. the union in
//! DRIVE_LAYOUT_INFORMATION_EX starts at 8 and the first PARTITION_INFORMATION_EX
//! at 48; each PARTITION_INFORMATION_EX is 144 bytes. A `#[cfg(windows)]`
//! compile-time check below compares these numbers with windows-sys's structs.
//! x86 Windows uses the same layouts (its 64-bit integers are 8-aligned too).
//!
//! Every length, count and offset read from a buffer is checked against the
//! buffer before use: a short or inconsistent buffer is a [`WinIoctlError`],
//! never a panic. Strings referenced by offset (vendor, product, serial) may
//! lack their terminating NUL; they then end at the end of the buffer.
//!
//! Deliberately not decoded: the raw bus-specific properties after a
//! STORAGE_DEVICE_DESCRIPTOR, the CHS geometry and the detection info after
//! DISK_GEOMETRY_EX, and dynamic-disk (LDM) metadata.

// Only the Windows build calls these (the tests use them everywhere).
#![cfg_attr(not(windows), allow(dead_code))]

use crate::part::guid_to_string;

/// A buffer an ioctl returned does not hold what its layout promises.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WinIoctlError {
    #[error("{structure}: {need} bytes needed at offset {offset}, the buffer holds {have}")]
    Truncated { structure: &'static str, offset: usize, need: usize, have: usize },
    #[error("{structure}: {field} offset {offset} lies outside the {have}-byte buffer")]
    BadOffset { structure: &'static str, field: &'static str, offset: u32, have: usize },
    #[error("{structure}: unknown partition style {style} (entry {entry:?})")]
    BadStyle { structure: &'static str, style: u32, entry: Option<u32> },
}

type Result<T> = std::result::Result<T, WinIoctlError>;

/// Structure sizes and offsets (x64, see the module doc).
pub(crate) mod layout {
    /// STORAGE_DESCRIPTOR_HEADER: Version, Size.
    pub const DESCRIPTOR_HEADER: usize = 8;
    /// STORAGE_DEVICE_DESCRIPTOR up to RawDeviceProperties (exclusive).
    pub const DEVICE_DESCRIPTOR_FIXED: usize = 36;
    /// STORAGE_ACCESS_ALIGNMENT_DESCRIPTOR: seven u32.
    pub const ACCESS_ALIGNMENT: usize = 28;
    /// DEVICE_SEEK_PENALTY_DESCRIPTOR: Version, Size, IncursSeekPenalty (BOOLEAN), padding.
    pub const SEEK_PENALTY: usize = 12;
    /// DISK_GEOMETRY (24) + DiskSize (8); the Data[] tail is not needed.
    pub const GEOMETRY_EX_FIXED: usize = 32;
    /// DRIVE_LAYOUT_INFORMATION_EX up to PartitionEntry.
    pub const LAYOUT_HEADER: usize = 48;
    /// One PARTITION_INFORMATION_EX.
    pub const PARTITION_ENTRY: usize = 144;
    /// VOLUME_DISK_EXTENTS up to Extents (a u32 count, padded to 8).
    pub const EXTENTS_HEADER: usize = 8;
    /// One DISK_EXTENT: DiskNumber, padding, StartingOffset, ExtentLength.
    pub const DISK_EXTENT: usize = 24;
    /// STORAGE_DEVICE_NUMBER: DeviceType, DeviceNumber, PartitionNumber.
    pub const DEVICE_NUMBER: usize = 12;
    /// STORAGE_PROPERTY_QUERY: PropertyId, QueryType, AdditionalParameters[1], padding.
    pub const PROPERTY_QUERY: usize = 12;
}

// The documented numbers above, checked against the compiler's view of
// windows-sys's definitions.
#[cfg(windows)]
const _: () = {
    use std::mem::{offset_of, size_of};
    use windows_sys::Win32::System::Ioctl as I;
    assert!(offset_of!(I::STORAGE_DEVICE_DESCRIPTOR, RawDeviceProperties) == layout::DEVICE_DESCRIPTOR_FIXED);
    assert!(offset_of!(I::STORAGE_DEVICE_DESCRIPTOR, BusType) == 28);
    assert!(size_of::<I::STORAGE_ACCESS_ALIGNMENT_DESCRIPTOR>() == layout::ACCESS_ALIGNMENT);
    assert!(size_of::<I::DEVICE_SEEK_PENALTY_DESCRIPTOR>() == layout::SEEK_PENALTY);
    assert!(offset_of!(I::DISK_GEOMETRY_EX, Data) == layout::GEOMETRY_EX_FIXED);
    assert!(offset_of!(I::DISK_GEOMETRY_EX, DiskSize) == 24);
    assert!(offset_of!(I::DISK_GEOMETRY, BytesPerSector) == 20);
    assert!(offset_of!(I::DRIVE_LAYOUT_INFORMATION_EX, PartitionEntry) == layout::LAYOUT_HEADER);
    assert!(offset_of!(I::DRIVE_LAYOUT_INFORMATION_EX, Anonymous) == 8);
    assert!(offset_of!(I::DRIVE_LAYOUT_INFORMATION_GPT, StartingUsableOffset) == 16);
    assert!(offset_of!(I::DRIVE_LAYOUT_INFORMATION_GPT, MaxPartitionCount) == 32);
    assert!(size_of::<I::PARTITION_INFORMATION_EX>() == layout::PARTITION_ENTRY);
    assert!(offset_of!(I::PARTITION_INFORMATION_EX, StartingOffset) == 8);
    assert!(offset_of!(I::PARTITION_INFORMATION_EX, PartitionNumber) == 24);
    assert!(offset_of!(I::PARTITION_INFORMATION_EX, IsServicePartition) == 29);
    assert!(offset_of!(I::PARTITION_INFORMATION_EX, Anonymous) == 32);
    assert!(offset_of!(I::PARTITION_INFORMATION_GPT, Attributes) == 32);
    assert!(offset_of!(I::PARTITION_INFORMATION_GPT, Name) == 40);
    assert!(offset_of!(I::PARTITION_INFORMATION_MBR, HiddenSectors) == 4);
    assert!(offset_of!(I::PARTITION_INFORMATION_MBR, PartitionId) == 8);
    assert!(offset_of!(I::VOLUME_DISK_EXTENTS, Extents) == layout::EXTENTS_HEADER);
    assert!(size_of::<I::DISK_EXTENT>() == layout::DISK_EXTENT);
    assert!(size_of::<I::STORAGE_DEVICE_NUMBER>() == layout::DEVICE_NUMBER);
    assert!(size_of::<I::STORAGE_PROPERTY_QUERY>() == layout::PROPERTY_QUERY);
};

fn bytes<'a>(b: &'a [u8], structure: &'static str, offset: usize, need: usize) -> Result<&'a [u8]> {
    offset.checked_add(need).and_then(|end| b.get(offset..end)).ok_or(WinIoctlError::Truncated { structure, offset, need, have: b.len() })
}

fn u8_at(b: &[u8], s: &'static str, at: usize) -> Result<u8> {
    Ok(bytes(b, s, at, 1)?[0])
}

fn u32_at(b: &[u8], s: &'static str, at: usize) -> Result<u32> {
    let mut a = [0u8; 4];
    a.copy_from_slice(bytes(b, s, at, 4)?);
    Ok(u32::from_le_bytes(a))
}

/// LARGE_INTEGER fields that hold sizes and offsets; negative values (never
/// valid there) read as 0 rather than wrapping to huge numbers.
fn u64_at(b: &[u8], s: &'static str, at: usize) -> Result<u64> {
    let mut a = [0u8; 8];
    a.copy_from_slice(bytes(b, s, at, 8)?);
    Ok(u64::try_from(i64::from_le_bytes(a)).unwrap_or(0))
}

fn guid_at(b: &[u8], s: &'static str, at: usize) -> Result<String> {
    let mut g = [0u8; 16];
    g.copy_from_slice(bytes(b, s, at, 16)?);
    Ok(guid_to_string(&g))
}

/// The STORAGE_PROPERTY_QUERY input for IOCTL_STORAGE_QUERY_PROPERTY with
/// PropertyStandardQuery (0) and the given STORAGE_PROPERTY_ID.
pub(crate) fn property_query(property_id: u32) -> [u8; layout::PROPERTY_QUERY] {
    let mut q = [0u8; layout::PROPERTY_QUERY];
    q[0..4].copy_from_slice(&property_id.to_le_bytes());
    q
}

/// STORAGE_PROPERTY_ID values used here.
pub(crate) const STORAGE_DEVICE_PROPERTY: u32 = 0;
pub(crate) const STORAGE_ACCESS_ALIGNMENT_PROPERTY: u32 = 6;
pub(crate) const STORAGE_DEVICE_SEEK_PENALTY_PROPERTY: u32 = 7;

/// The Size of a STORAGE_DESCRIPTOR_HEADER: how many bytes the whole
/// descriptor needs, to retry with a large enough buffer.
pub(crate) fn descriptor_size(b: &[u8]) -> Result<u32> {
    bytes(b, "STORAGE_DESCRIPTOR_HEADER", 0, layout::DESCRIPTOR_HEADER)?;
    u32_at(b, "STORAGE_DESCRIPTOR_HEADER", 4)
}

/// STORAGE_DEVICE_DESCRIPTOR, as far as disks are told apart by it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DeviceDescriptor {
    /// SCSI peripheral device type (0 = direct-access block device).
    pub device_type: u8,
    pub removable: bool,
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub revision: Option<String>,
    pub serial: Option<String>,
    /// STORAGE_BUS_TYPE.
    pub bus_type: u32,
}

/// Decode a STORAGE_DEVICE_DESCRIPTOR (IOCTL_STORAGE_QUERY_PROPERTY,
/// StorageDeviceProperty). String offsets count from the start of the
/// descriptor; 0 means "not reported".
pub(crate) fn parse_device_descriptor(b: &[u8]) -> Result<DeviceDescriptor> {
    const S: &str = "STORAGE_DEVICE_DESCRIPTOR";
    bytes(b, S, 0, layout::DEVICE_DESCRIPTOR_FIXED)?;
    // Strings may only lie within what the descriptor says it holds.
    let size = (u32_at(b, S, 4)? as usize).min(b.len());
    let b = &b[..size.max(layout::DEVICE_DESCRIPTOR_FIXED)];
    let string = |field: &'static str, at: usize| -> Result<Option<String>> {
        let off = u32_at(b, S, at)?;
        if off == 0 {
            return Ok(None);
        }
        let tail = b.get(off as usize..).filter(|t| !t.is_empty()).ok_or(WinIoctlError::BadOffset { structure: S, field, offset: off, have: b.len() })?;
        let end = tail.iter().position(|&c| c == 0).unwrap_or(tail.len());
        let s = String::from_utf8_lossy(&tail[..end]).trim().to_string();
        Ok((!s.is_empty()).then_some(s))
    };
    Ok(DeviceDescriptor {
        device_type: u8_at(b, S, 8)?,
        removable: u8_at(b, S, 10)? != 0,
        vendor: string("VendorIdOffset", 12)?,
        product: string("ProductIdOffset", 16)?,
        revision: string("ProductRevisionOffset", 20)?,
        serial: string("SerialNumberOffset", 24)?,
        bus_type: u32_at(b, S, 28)?,
    })
}

/// Our transport name (the words the Linux side uses where they match) for
/// a STORAGE_BUS_TYPE. virtio-blk (viostor) and virtio-scsi (vioscsi) report
/// SCSI/SAS/RAID buses, so they are recognised by their product string.
pub(crate) fn transport(bus_type: u32, vendor: Option<&str>, product: Option<&str>) -> Option<&'static str> {
    let says_virtio = |s: Option<&str>| s.is_some_and(|s| s.to_ascii_lowercase().contains("virtio"));
    if says_virtio(product) || says_virtio(vendor) {
        return Some("virtio");
    }
    Some(match bus_type {
        1 => "scsi",
        2 => "atapi",
        3 | 11 => "sata",
        4 => "firewire",
        5 => "ssa",
        6 => "fibre",
        7 => "usb",
        8 => "raid",
        9 => "iscsi",
        10 => "sas",
        12 | 13 => "mmc",
        14 => "virtual",
        15 => "vhd",
        16 => "spaces",
        17 => "nvme",
        18 => "scm",
        19 => "ufs",
        _ => return None,
    })
}

/// Logical and physical sector sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct AccessAlignment {
    pub logical: u32,
    pub physical: u32,
}

/// Decode a STORAGE_ACCESS_ALIGNMENT_DESCRIPTOR
/// (StorageAccessAlignmentProperty).
pub(crate) fn parse_access_alignment(b: &[u8]) -> Result<AccessAlignment> {
    const S: &str = "STORAGE_ACCESS_ALIGNMENT_DESCRIPTOR";
    bytes(b, S, 0, layout::ACCESS_ALIGNMENT)?;
    Ok(AccessAlignment { logical: u32_at(b, S, 16)?, physical: u32_at(b, S, 20)? })
}

/// Decode a DEVICE_SEEK_PENALTY_DESCRIPTOR (StorageDeviceSeekPenaltyProperty):
/// whether the disk incurs a seek penalty, i.e. is rotational.
pub(crate) fn parse_seek_penalty(b: &[u8]) -> Result<bool> {
    Ok(u8_at(b, "DEVICE_SEEK_PENALTY_DESCRIPTOR", 8)? != 0)
}

/// Size and sector size from DISK_GEOMETRY_EX.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GeometryEx {
    /// MEDIA_TYPE: 11 = RemovableMedia, 12 = FixedMedia.
    pub media_type: u32,
    pub bytes_per_sector: u32,
    pub disk_size: u64,
}

/// Decode a DISK_GEOMETRY_EX (IOCTL_DISK_GET_DRIVE_GEOMETRY_EX).
pub(crate) fn parse_geometry_ex(b: &[u8]) -> Result<GeometryEx> {
    const S: &str = "DISK_GEOMETRY_EX";
    bytes(b, S, 0, layout::GEOMETRY_EX_FIXED)?;
    Ok(GeometryEx { media_type: u32_at(b, S, 8)?, bytes_per_sector: u32_at(b, S, 20)?, disk_size: u64_at(b, S, 24)? })
}

/// The partition table kind of a DRIVE_LAYOUT_INFORMATION_EX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LayoutStyle {
    Mbr {
        signature: u32,
    },
    Gpt {
        disk_id: String,
        first_usable: u64,
        usable_length: u64,
        max_partitions: u32,
    },
    /// No partition table Windows recognises.
    Raw,
}

/// What PARTITION_INFORMATION_EX says about one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum PartitionKind {
    Mbr { ptype: u8, boot: bool, recognized: bool, hidden_sectors: u32 },
    Gpt { type_guid: String, id: String, attributes: u64, name: String },
    Raw,
}

/// One PARTITION_INFORMATION_EX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct PartitionEntry {
    /// 1-based; 0 for unused MBR slots and extended containers.
    pub number: u32,
    pub start: u64,
    pub length: u64,
    pub kind: PartitionKind,
}

impl PartitionEntry {
    /// Whether the entry describes a partition (MBR layouts always come in
    /// groups of four slots, unused ones with type 0).
    pub fn is_used(&self) -> bool {
        match &self.kind {
            PartitionKind::Mbr { ptype, .. } => *ptype != 0 && self.length > 0,
            PartitionKind::Gpt { .. } | PartitionKind::Raw => self.length > 0,
        }
    }
}

/// DRIVE_LAYOUT_INFORMATION_EX.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DriveLayout {
    pub style: LayoutStyle,
    pub partitions: Vec<PartitionEntry>,
}

const PARTITION_STYLE_MBR: u32 = 0;
const PARTITION_STYLE_GPT: u32 = 1;
const PARTITION_STYLE_RAW: u32 = 2;

/// Decode a DRIVE_LAYOUT_INFORMATION_EX (IOCTL_DISK_GET_DRIVE_LAYOUT_EX),
/// every entry of it, used or not.
pub(crate) fn parse_drive_layout(b: &[u8]) -> Result<DriveLayout> {
    const S: &str = "DRIVE_LAYOUT_INFORMATION_EX";
    const P: &str = "PARTITION_INFORMATION_EX";
    bytes(b, S, 0, layout::LAYOUT_HEADER)?;
    let style_code = u32_at(b, S, 0)?;
    let count = u32_at(b, S, 4)?;
    let style = match style_code {
        PARTITION_STYLE_MBR => LayoutStyle::Mbr { signature: u32_at(b, S, 8)? },
        PARTITION_STYLE_GPT => LayoutStyle::Gpt {
            disk_id: guid_at(b, S, 8)?,
            first_usable: u64_at(b, S, 24)?,
            usable_length: u64_at(b, S, 32)?,
            max_partitions: u32_at(b, S, 40)?,
        },
        PARTITION_STYLE_RAW => LayoutStyle::Raw,
        style => return Err(WinIoctlError::BadStyle { structure: S, style, entry: None }),
    };
    // Check the whole array fits before allocating for it.
    let need = (count as usize).saturating_mul(layout::PARTITION_ENTRY);
    bytes(b, S, layout::LAYOUT_HEADER, need)?;
    let mut partitions = Vec::with_capacity(count as usize);
    for i in 0..count as usize {
        let e = &b[layout::LAYOUT_HEADER + i * layout::PARTITION_ENTRY..][..layout::PARTITION_ENTRY];
        let kind = match u32_at(e, P, 0)? {
            PARTITION_STYLE_MBR => PartitionKind::Mbr {
                ptype: u8_at(e, P, 32)?,
                boot: u8_at(e, P, 33)? != 0,
                recognized: u8_at(e, P, 34)? != 0,
                hidden_sectors: u32_at(e, P, 36)?,
            },
            PARTITION_STYLE_GPT => {
                let units: Vec<u16> = bytes(e, P, 72, 72)?.chunks_exact(2).map(|c| u16::from_le_bytes([c[0], c[1]])).take_while(|&u| u != 0).collect();
                PartitionKind::Gpt {
                    type_guid: guid_at(e, P, 32)?,
                    id: guid_at(e, P, 48)?,
                    attributes: u64::from_le_bytes(bytes(e, P, 64, 8)?.try_into().expect("8 bytes were sliced")),
                    name: String::from_utf16_lossy(&units),
                }
            }
            PARTITION_STYLE_RAW => PartitionKind::Raw,
            style => return Err(WinIoctlError::BadStyle { structure: P, style, entry: Some(i as u32) }),
        };
        partitions.push(PartitionEntry { number: u32_at(e, P, 24)?, start: u64_at(e, P, 8)?, length: u64_at(e, P, 16)?, kind });
    }
    Ok(DriveLayout { style, partitions })
}

/// One DISK_EXTENT of a volume.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DiskExtent {
    pub disk_number: u32,
    pub start: u64,
    pub length: u64,
}

/// Decode a VOLUME_DISK_EXTENTS (IOCTL_VOLUME_GET_VOLUME_DISK_EXTENTS).
pub(crate) fn parse_volume_disk_extents(b: &[u8]) -> Result<Vec<DiskExtent>> {
    const S: &str = "VOLUME_DISK_EXTENTS";
    let count = u32_at(b, S, 0)?;
    let need = (count as usize).saturating_mul(layout::DISK_EXTENT);
    bytes(b, S, layout::EXTENTS_HEADER, need)?;
    (0..count as usize)
        .map(|i| {
            let at = layout::EXTENTS_HEADER + i * layout::DISK_EXTENT;
            Ok(DiskExtent { disk_number: u32_at(b, S, at)?, start: u64_at(b, S, at + 8)?, length: u64_at(b, S, at + 16)? })
        })
        .collect()
}

/// STORAGE_DEVICE_NUMBER.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct DeviceNumber {
    /// DEVICE_TYPE: 7 = FILE_DEVICE_DISK.
    pub device_type: u32,
    /// N of `\\.\PhysicalDriveN`.
    pub device_number: u32,
    /// 0 for the whole disk; u32::MAX when the device cannot be partitioned.
    pub partition_number: u32,
}

/// Decode a STORAGE_DEVICE_NUMBER (IOCTL_STORAGE_GET_DEVICE_NUMBER).
pub(crate) fn parse_device_number(b: &[u8]) -> Result<DeviceNumber> {
    const S: &str = "STORAGE_DEVICE_NUMBER";
    bytes(b, S, 0, layout::DEVICE_NUMBER)?;
    Ok(DeviceNumber { device_type: u32_at(b, S, 0)?, device_number: u32_at(b, S, 4)?, partition_number: u32_at(b, S, 8)? })
}

/// N of a `\\.\PhysicalDriveN` (or `\\?\PhysicalDriveN`) path, any case.
pub(crate) fn physical_drive_number(path: &str) -> Option<u32> {
    let rest = path.strip_prefix(r"\\.\").or_else(|| path.strip_prefix(r"\\?\"))?;
    let (word, n) = rest.split_at_checked("PhysicalDrive".len())?;
    if !word.eq_ignore_ascii_case("PhysicalDrive") || n.is_empty() || !n.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    n.parse().ok()
}

/// Split a REG_MULTI_SZ-style list of UTF-16 strings (as from
/// GetVolumePathNamesForVolumeNameW) at its NULs, dropping empty strings.
pub(crate) fn multi_sz(units: &[u16]) -> Vec<String> {
    units.split(|&u| u == 0).filter(|s| !s.is_empty()).map(String::from_utf16_lossy).collect()
}

// Fixtures are built field by field from the documented layouts (see the
// module doc), not captured from a real Windows machine.
#[cfg(test)]
#[allow(clippy::unwrap_used)] // tests may unwrap (STYLE.md)
mod tests {
    use super::*;

    /// A little builder writing fields at explicit offsets.
    struct Buf(Vec<u8>);
    impl Buf {
        fn new(len: usize) -> Self {
            Buf(vec![0; len])
        }
        fn u8(mut self, at: usize, v: u8) -> Self {
            self.0[at] = v;
            self
        }
        fn u32(mut self, at: usize, v: u32) -> Self {
            self.0[at..at + 4].copy_from_slice(&v.to_le_bytes());
            self
        }
        fn u64(mut self, at: usize, v: u64) -> Self {
            self.0[at..at + 8].copy_from_slice(&v.to_le_bytes());
            self
        }
        fn bytes(mut self, at: usize, v: &[u8]) -> Self {
            self.0[at..at + v.len()].copy_from_slice(v);
            self
        }
    }

    const GUID_ESP: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    const GUID_BASIC: &str = "ebd0a0a2-b9e5-4433-87c0-68b9b6997c7c";

    fn guid(s: &str) -> [u8; 16] {
        crate::part::guid_from_str(s).expect("test GUID is well formed")
    }

    fn device_descriptor() -> Vec<u8> {
        // Fixed part (36 bytes), RawDeviceProperties padding to 40, then the
        // strings: vendor at 40, product at 48, revision at 72, serial at 80.
        Buf::new(100)
            .u32(0, 1) // Version
            .u32(4, 100) // Size
            .u8(8, 0) // DeviceType: direct access
            .u8(10, 1) // RemovableMedia
            .u32(12, 40)
            .u32(16, 48)
            .u32(20, 72)
            .u32(24, 80)
            .u32(28, 7) // BusTypeUsb
            .bytes(40, b"SanDisk\0")
            .bytes(48, b"Cruzer Blade    \0")
            .bytes(72, b"1.00\0")
            .bytes(80, b"  4C530001230925\0")
            .0
    }

    #[test]
    fn device_descriptor_usb_stick() {
        let d = parse_device_descriptor(&device_descriptor()).unwrap();
        assert_eq!(d.vendor.as_deref(), Some("SanDisk"));
        assert_eq!(d.product.as_deref(), Some("Cruzer Blade"));
        assert_eq!(d.revision.as_deref(), Some("1.00"));
        assert_eq!(d.serial.as_deref(), Some("4C530001230925"));
        assert!(d.removable);
        assert_eq!(d.bus_type, 7);
        assert_eq!(transport(d.bus_type, d.vendor.as_deref(), d.product.as_deref()), Some("usb"));
        assert_eq!(descriptor_size(&device_descriptor()).unwrap(), 100);
    }

    #[test]
    fn device_descriptor_absent_strings_and_bad_offsets() {
        // NVMe disks often report no vendor (offset 0).
        let b = Buf::new(64).u32(4, 64).u32(16, 40).u32(28, 17).bytes(40, b"Samsung SSD 980\0").0;
        let d = parse_device_descriptor(&b).unwrap();
        assert_eq!(d.vendor, None);
        assert_eq!(d.serial, None);
        assert_eq!(d.product.as_deref(), Some("Samsung SSD 980"));
        assert_eq!(transport(d.bus_type, None, d.product.as_deref()), Some("nvme"));
        // A serial offset past the end is an error, not a panic.
        let bad = Buf::new(64).u32(4, 64).u32(24, 4000).0;
        assert!(matches!(parse_device_descriptor(&bad), Err(WinIoctlError::BadOffset { field: "SerialNumberOffset", .. })));
        // Strings must lie inside the Size the descriptor claims.
        let beyond = Buf::new(64).u32(4, 40).u32(16, 48).bytes(48, b"x\0").0;
        assert!(matches!(parse_device_descriptor(&beyond), Err(WinIoctlError::BadOffset { .. })));
        // A string without NUL ends at the end of the buffer.
        let unterminated = Buf::new(44).u32(4, 44).u32(16, 40).bytes(40, b"ABCD").0;
        assert_eq!(parse_device_descriptor(&unterminated).unwrap().product.as_deref(), Some("ABCD"));
        // Only the 8-byte header: enough to learn the size, not to decode.
        let header = Buf::new(8).u32(4, 300).0;
        assert_eq!(descriptor_size(&header).unwrap(), 300);
        assert!(matches!(parse_device_descriptor(&header), Err(WinIoctlError::Truncated { .. })));
    }

    #[test]
    fn transports() {
        assert_eq!(transport(11, None, Some("ST2000DM008")), Some("sata"));
        assert_eq!(transport(3, None, None), Some("sata"));
        assert_eq!(transport(10, Some("Red Hat"), Some("VirtIO")), Some("virtio"));
        assert_eq!(transport(13, None, None), Some("mmc"));
        assert_eq!(transport(1, Some("QEMU"), Some("QEMU HARDDISK")), Some("scsi"));
        assert_eq!(transport(0, None, None), None);
        assert_eq!(transport(99, None, None), None);
    }

    #[test]
    fn access_alignment_and_seek_penalty() {
        let b = Buf::new(28).u32(0, 1).u32(4, 28).u32(8, 64).u32(16, 512).u32(20, 4096).0;
        assert_eq!(parse_access_alignment(&b).unwrap(), AccessAlignment { logical: 512, physical: 4096 });
        let b = Buf::new(28).u32(16, 4096).u32(20, 4096).0;
        assert_eq!(parse_access_alignment(&b).unwrap(), AccessAlignment { logical: 4096, physical: 4096 });
        assert!(parse_access_alignment(&b[..27]).is_err());
        assert!(parse_seek_penalty(&Buf::new(12).u8(8, 1).0).unwrap());
        assert!(!parse_seek_penalty(&Buf::new(12).0).unwrap());
        assert!(parse_seek_penalty(&[0; 8]).is_err());
    }

    #[test]
    fn geometry_ex() {
        // 500 GB disk: DISK_GEOMETRY (Cylinders, MediaType=FixedMedia,
        // TracksPerCylinder, SectorsPerTrack, BytesPerSector), then DiskSize.
        let b = Buf::new(40).u64(0, 60801).u32(8, 12).u32(12, 255).u32(16, 63).u32(20, 512).u64(24, 500_107_862_016).0;
        assert_eq!(parse_geometry_ex(&b).unwrap(), GeometryEx { media_type: 12, bytes_per_sector: 512, disk_size: 500_107_862_016 });
        let b4k = Buf::new(32).u32(20, 4096).u64(24, 1 << 40).0;
        assert_eq!(parse_geometry_ex(&b4k).unwrap().bytes_per_sector, 4096);
        assert!(matches!(parse_geometry_ex(&b[..31]), Err(WinIoctlError::Truncated { need: 32, have: 31, .. })));
        // A negative size is not a size.
        assert_eq!(parse_geometry_ex(&Buf::new(32).u64(24, u64::MAX).0).unwrap().disk_size, 0);
    }

    fn gpt_entry(number: u32, start: u64, len: u64, tg: &str, id: &str, attrs: u64, name: &str) -> Vec<u8> {
        let mut b =
            Buf::new(144).u32(0, PARTITION_STYLE_GPT).u64(8, start).u64(16, len).u32(24, number).bytes(32, &guid(tg)).bytes(48, &guid(id)).u64(64, attrs);
        for (i, u) in name.encode_utf16().enumerate() {
            b = b.bytes(72 + 2 * i, &u.to_le_bytes());
        }
        b.0
    }

    fn mbr_entry(number: u32, start: u64, len: u64, ptype: u8, boot: bool) -> Vec<u8> {
        Buf::new(144)
            .u32(0, PARTITION_STYLE_MBR)
            .u64(8, start)
            .u64(16, len)
            .u32(24, number)
            .u8(32, ptype)
            .u8(33, boot as u8)
            .u8(34, (ptype != 0) as u8)
            .u32(36, (start / 512) as u32)
            .0
    }

    #[test]
    fn drive_layout_gpt() {
        let disk_id = "01234567-89ab-cdef-0123-456789abcdef";
        let mut b = Buf::new(48).u32(0, PARTITION_STYLE_GPT).u32(4, 2).bytes(8, &guid(disk_id)).u64(24, 17408).u64(32, 1_000_000_000).u32(40, 128).0;
        b.extend(gpt_entry(1, 1 << 20, 100 << 20, GUID_ESP, "11111111-2222-3333-4444-555555555555", 0, "EFI system partition"));
        b.extend(gpt_entry(2, 101 << 20, 1 << 30, GUID_BASIC, "66666666-7777-8888-9999-aaaaaaaaaaaa", 1 << 63, "Basic data partition"));
        assert_eq!(b.len(), 48 + 2 * 144);
        let l = parse_drive_layout(&b).unwrap();
        assert_eq!(l.style, LayoutStyle::Gpt { disk_id: disk_id.into(), first_usable: 17408, usable_length: 1_000_000_000, max_partitions: 128 });
        assert_eq!(l.partitions.len(), 2);
        assert_eq!(
            l.partitions[1],
            PartitionEntry {
                number: 2,
                start: 101 << 20,
                length: 1 << 30,
                kind: PartitionKind::Gpt {
                    type_guid: GUID_BASIC.into(),
                    id: "66666666-7777-8888-9999-aaaaaaaaaaaa".into(),
                    attributes: 1 << 63,
                    name: "Basic data partition".into()
                }
            }
        );
        assert!(matches!(&l.partitions[0].kind, PartitionKind::Gpt { type_guid, .. } if type_guid == GUID_ESP));
        // One byte short of the second entry.
        assert!(matches!(parse_drive_layout(&b[..b.len() - 1]), Err(WinIoctlError::Truncated { .. })));
    }

    #[test]
    fn drive_layout_mbr_with_empty_slots() {
        let mut b = Buf::new(48).u32(0, PARTITION_STYLE_MBR).u32(4, 4).u32(8, 0xdead_beef).0;
        b.extend(mbr_entry(1, 1 << 20, 500 << 20, 0x07, true));
        b.extend(mbr_entry(2, 501 << 20, 10 << 30, 0x07, false));
        b.extend(mbr_entry(0, 0, 0, 0, false));
        b.extend(mbr_entry(0, 0, 0, 0, false));
        let l = parse_drive_layout(&b).unwrap();
        assert_eq!(l.style, LayoutStyle::Mbr { signature: 0xdead_beef });
        assert_eq!(l.partitions.len(), 4);
        assert_eq!(l.partitions.iter().filter(|p| p.is_used()).count(), 2);
        assert_eq!(l.partitions[0].kind, PartitionKind::Mbr { ptype: 7, boot: true, recognized: true, hidden_sectors: 2048 });
        assert_eq!(l.partitions[1].start, 501 << 20);
    }

    #[test]
    fn drive_layout_raw_and_garbage() {
        let raw = Buf::new(48).u32(0, PARTITION_STYLE_RAW).0;
        assert_eq!(parse_drive_layout(&raw).unwrap(), DriveLayout { style: LayoutStyle::Raw, partitions: vec![] });
        assert!(matches!(parse_drive_layout(&raw[..47]), Err(WinIoctlError::Truncated { .. })));
        let bad_style = Buf::new(48).u32(0, 9).0;
        assert!(matches!(parse_drive_layout(&bad_style), Err(WinIoctlError::BadStyle { style: 9, entry: None, .. })));
        // A huge count must not allocate or overflow.
        let huge = Buf::new(48).u32(0, PARTITION_STYLE_GPT).u32(4, u32::MAX).0;
        assert!(matches!(parse_drive_layout(&huge), Err(WinIoctlError::Truncated { .. })));
        let mut bad_entry = Buf::new(48).u32(4, 1).0;
        bad_entry.extend(Buf::new(144).u32(0, 5).0);
        assert!(matches!(parse_drive_layout(&bad_entry), Err(WinIoctlError::BadStyle { entry: Some(0), .. })));
    }

    #[test]
    fn volume_disk_extents() {
        // A spanned volume over disks 1 and 2.
        let b = Buf::new(8 + 48).u32(0, 2).u32(8, 1).u64(16, 1 << 20).u64(24, 4 << 30).u32(32, 2).u64(40, 1 << 20).u64(48, 2 << 30).0;
        assert_eq!(
            parse_volume_disk_extents(&b).unwrap(),
            vec![DiskExtent { disk_number: 1, start: 1 << 20, length: 4 << 30 }, DiskExtent { disk_number: 2, start: 1 << 20, length: 2 << 30 }]
        );
        assert!(parse_volume_disk_extents(&b[..55]).is_err());
        assert!(parse_volume_disk_extents(&[1, 0]).is_err());
        assert_eq!(parse_volume_disk_extents(&[0; 8]).unwrap(), vec![]);
        assert!(parse_volume_disk_extents(&Buf::new(32).u32(0, u32::MAX).0).is_err());
    }

    #[test]
    fn device_number() {
        let b = Buf::new(12).u32(0, 7).u32(4, 3).0;
        assert_eq!(parse_device_number(&b).unwrap(), DeviceNumber { device_type: 7, device_number: 3, partition_number: 0 });
        assert!(parse_device_number(&b[..11]).is_err());
    }

    #[test]
    fn property_query_bytes() {
        assert_eq!(property_query(STORAGE_ACCESS_ALIGNMENT_PROPERTY), [6, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
    }

    #[test]
    fn drive_paths_and_multi_sz() {
        assert_eq!(physical_drive_number(r"\\.\PhysicalDrive0"), Some(0));
        assert_eq!(physical_drive_number(r"\\?\physicaldrive12"), Some(12));
        assert_eq!(physical_drive_number(r"\\.\PhysicalDrive"), None);
        assert_eq!(physical_drive_number(r"\\.\PhysicalDrive1x"), None);
        assert_eq!(physical_drive_number(r"C:\disk.img"), None);
        assert_eq!(physical_drive_number(r"\\.\Phys"), None);
        let units: Vec<u16> = "C:\\\0D:\\mnt\\data\\\0\0".encode_utf16().collect();
        assert_eq!(multi_sz(&units), vec!["C:\\".to_string(), "D:\\mnt\\data\\".to_string()]);
        assert!(multi_sz(&[0, 0]).is_empty());
    }

    /// Every prefix of every fixture decodes or fails cleanly.
    #[test]
    fn truncations_never_panic() {
        let mut layout = Buf::new(48).u32(0, PARTITION_STYLE_GPT).u32(4, 1).0;
        layout.extend(gpt_entry(1, 1 << 20, 1 << 30, GUID_BASIC, GUID_ESP, 0, "x"));
        let fixtures = [device_descriptor(), layout, Buf::new(32).u32(0, 1).0, Buf::new(40).0];
        for f in &fixtures {
            for n in 0..=f.len() {
                let b = &f[..n];
                let _ = parse_device_descriptor(b);
                let _ = descriptor_size(b);
                let _ = parse_access_alignment(b);
                let _ = parse_seek_penalty(b);
                let _ = parse_geometry_ex(b);
                let _ = parse_drive_layout(b);
                let _ = parse_volume_disk_extents(b);
                let _ = parse_device_number(b);
            }
        }
        // Pseudo-random garbage.
        let mut x = 0x1234_5678_u32;
        for len in [0usize, 3, 12, 36, 47, 48, 100, 192, 300] {
            let g: Vec<u8> = (0..len)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 17;
                    x ^= x << 5;
                    x as u8
                })
                .collect();
            let _ = parse_device_descriptor(&g);
            let _ = parse_drive_layout(&g);
            let _ = parse_volume_disk_extents(&g);
        }
    }
}
