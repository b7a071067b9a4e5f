//! Partition tables: GPT and MBR (with the extended/logical EBR chain).
//!
//! Everything in this module is in **bytes**, never in sectors, so a table read
//! from a 4096-byte-sector disk can be written onto a 512-byte-sector disk (see
//! [`translate`]). Sector numbers only appear inside the on-disk codecs in
//! [`gpt`] (UEFI Specification 2.10, chapter 5 "GUID Partition Table (GPT)
//! Disk Layout") and [`mbr`] (the IBM PC partition table and EBR chain as
//! Linux `block/partitions/msdos.c` reads it).
//!
//! The flow for a restore is `read` (on the source, stored in the image) →
//! optionally `translate` (other sector size) → `serialize` onto the target
//! size; `table_extents` tells the planner which byte ranges that rewrites.
//!
//! Deliberately unsupported:
//! - hybrid MBRs are *read* (the GPT wins, with a warning) but `serialize`
//!   always writes a pure protective MBR (UEFI 2.10 §5.2.3), because hybrid
//!   entries describe one disk's layout and are unsafe to carry over;
//! - GPT entries larger than 128 bytes are read (first 128 bytes of each), but
//!   written back as 128-byte entries; the primary entry array is always
//!   written at LBA 2;
//! - other labels (Apple partition map, BSD disklabel, Sun, LDM dynamic
//!   disks' private database) are not parsed; an MBR or GPT that *contains*
//!   them is read as such (e.g. type 0x42 / the LDM GUIDs).

mod gpt;
mod mbr;

use std::io;

use serde::{Deserialize, Serialize};

use crate::read_at::ReadAt;
use crate::Extent;

/// Which kind of table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TableKind {
    Gpt,
    Mbr,
}

/// The partition type: a GPT type GUID (lowercase canonical 8-4-4-4-12) or an
/// MBR system indicator byte.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PartType {
    Gpt(String),
    Mbr(u8),
}

/// Well-known GPT partition type GUIDs (UEFI 2.10 table 5.9, the Microsoft
/// and Linux (Discoverable Partitions Specification) registries).
pub mod guids {
    pub const EFI_SYSTEM: &str = "c12a7328-f81f-11d2-ba4b-00a0c93ec93b";
    pub const BIOS_BOOT: &str = "21686148-6449-6e6f-744e-656564454649";
    pub const MS_RESERVED: &str = "e3c9e316-0b5c-4db8-817d-f92df00215ae";
    pub const MS_BASIC_DATA: &str = "ebd0a0a2-b9e5-4433-87c0-68b6b72699c7";
    pub const MS_RECOVERY: &str = "de94bba4-06d1-4d40-a16a-bfd50179d6ac";
    pub const MS_LDM_METADATA: &str = "5808c8aa-7e8f-42e0-85d2-e1e90434cfb3";
    pub const MS_LDM_DATA: &str = "af9b60a0-1431-4f62-bc68-3311714a69ad";
    pub const MS_STORAGE_SPACES: &str = "e75caf8f-f680-4cee-afa3-b001e56efc2d";
    pub const LINUX_FS: &str = "0fc63daf-8483-4772-8e79-3d69d8477de4";
    pub const LINUX_SWAP: &str = "0657fd6d-a4ab-43c4-84e5-0933c84b4f4f";
    pub const LINUX_LVM: &str = "e6d6d379-f507-44c2-a23c-238f2a3df928";
    pub const LINUX_RAID: &str = "a19d880f-05fc-4d3b-a006-743f0f84911e";
    pub const LINUX_LUKS: &str = "ca7d7ccb-63ed-4c53-861c-1742536059cc";
    pub const LINUX_XBOOTLDR: &str = "bc13c2ff-59e6-4262-a352-b275fd6f7172";
    pub const LINUX_ROOT_X86_64: &str = "4f68bce3-e8cd-4db1-96e7-fbcaf984b709";
    pub const LINUX_ROOT_X86: &str = "44479540-f297-41b2-9af7-d131d5f0458a";
    pub const LINUX_ROOT_ARM64: &str = "b921b045-1df0-41c3-af44-4c6f280d3fae";
    pub const LINUX_ROOT_ARM: &str = "69dad710-2ce4-4e3c-b16c-21a1d49abed3";
    pub const LINUX_HOME: &str = "933ac7e1-2eb4-4f13-b844-0e14e2aef915";
    pub const LINUX_SRV: &str = "3b8f8425-20e0-4f3b-907f-1a25a76f98e8";
    pub const LINUX_VAR: &str = "4d21b016-b534-45c2-a9fb-5c16e091fd2d";
    pub const LINUX_VAR_TMP: &str = "7ec6f557-3bc5-4aca-b293-16ef5df639d1";
    pub const LINUX_USR_X86_64: &str = "8484680c-9521-48c6-9c11-b0720656f69e";
    pub const LINUX_RESERVED: &str = "8da63339-0007-60c0-c436-083ac8230908";
    pub const APPLE_HFS: &str = "48465300-0000-11aa-aa11-00306543ecac";
    pub const APPLE_APFS: &str = "7c3457ef-0000-11aa-aa11-00306543ecac";
    pub const FREEBSD_UFS: &str = "516e7cb6-6ecf-11d6-8ff8-00022d09712b";
    pub const FREEBSD_ZFS: &str = "516e7cba-6ecf-11d6-8ff8-00022d09712b";
    pub const SOLARIS_ZFS: &str = "6a898cc3-1dd2-11b2-99a6-080020736631";
}

const GPT_NAMES: &[(&str, &str)] = &[
    (guids::EFI_SYSTEM, "EFI System"),
    (guids::BIOS_BOOT, "BIOS boot"),
    (guids::MS_RESERVED, "Microsoft reserved"),
    (guids::MS_BASIC_DATA, "Microsoft basic data"),
    (guids::MS_RECOVERY, "Windows recovery environment"),
    (guids::MS_LDM_METADATA, "Microsoft LDM metadata"),
    (guids::MS_LDM_DATA, "Microsoft LDM data"),
    (guids::MS_STORAGE_SPACES, "Microsoft Storage Spaces"),
    (guids::LINUX_FS, "Linux filesystem"),
    (guids::LINUX_SWAP, "Linux swap"),
    (guids::LINUX_LVM, "Linux LVM"),
    (guids::LINUX_RAID, "Linux RAID"),
    (guids::LINUX_LUKS, "Linux LUKS"),
    (guids::LINUX_XBOOTLDR, "Linux /boot (XBOOTLDR)"),
    (guids::LINUX_ROOT_X86_64, "Linux root (x86-64)"),
    (guids::LINUX_ROOT_X86, "Linux root (x86)"),
    (guids::LINUX_ROOT_ARM64, "Linux root (ARM-64)"),
    (guids::LINUX_ROOT_ARM, "Linux root (ARM)"),
    (guids::LINUX_HOME, "Linux /home"),
    (guids::LINUX_SRV, "Linux /srv"),
    (guids::LINUX_VAR, "Linux /var"),
    (guids::LINUX_VAR_TMP, "Linux /var/tmp"),
    (guids::LINUX_USR_X86_64, "Linux /usr (x86-64)"),
    (guids::LINUX_RESERVED, "Linux reserved"),
    (guids::APPLE_HFS, "Apple HFS/HFS+"),
    (guids::APPLE_APFS, "Apple APFS"),
    (guids::FREEBSD_UFS, "FreeBSD UFS"),
    (guids::FREEBSD_ZFS, "FreeBSD ZFS"),
    (guids::SOLARIS_ZFS, "Solaris /usr & Apple ZFS"),
];

/// GPT types that hold one Linux filesystem directly (not a container such
/// as LVM, RAID or LUKS).
const LINUX_DATA: &[&str] = &[
    guids::LINUX_FS,
    guids::LINUX_XBOOTLDR,
    guids::LINUX_ROOT_X86_64,
    guids::LINUX_ROOT_X86,
    guids::LINUX_ROOT_ARM64,
    guids::LINUX_ROOT_ARM,
    guids::LINUX_HOME,
    guids::LINUX_SRV,
    guids::LINUX_VAR,
    guids::LINUX_VAR_TMP,
    guids::LINUX_USR_X86_64,
];

impl PartType {
    /// A human-readable name, e.g. "EFI System" or "FAT32 LBA (0x0c)"; the
    /// GUID itself / "type 0xNN" when unknown.
    pub fn describe(&self) -> String {
        match self {
            PartType::Gpt(g) => GPT_NAMES
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(g))
                .map(|(_, n)| (*n).to_string())
                .unwrap_or_else(|| g.clone()),
            PartType::Mbr(t) => match t {
                0x00 => "empty".into(),
                0x01 => "FAT12 (0x01)".into(),
                0x04 => "FAT16 <32M (0x04)".into(),
                0x05 => "extended".into(),
                0x06 => "FAT16 (0x06)".into(),
                0x07 => "NTFS/exFAT/HPFS (0x07)".into(),
                0x0b => "FAT32 (0x0b)".into(),
                0x0c => "FAT32 LBA (0x0c)".into(),
                0x0e => "FAT16 LBA (0x0e)".into(),
                0x0f => "extended LBA (0x0f)".into(),
                0x11 => "hidden FAT12 (0x11)".into(),
                0x12 => "OEM service/diagnostics (0x12)".into(),
                0x14 => "hidden FAT16 <32M (0x14)".into(),
                0x16 => "hidden FAT16 (0x16)".into(),
                0x17 => "hidden NTFS/exFAT (0x17)".into(),
                0x1b => "hidden FAT32 (0x1b)".into(),
                0x1c => "hidden FAT32 LBA (0x1c)".into(),
                0x1e => "hidden FAT16 LBA (0x1e)".into(),
                0x27 => "Windows recovery environment".into(),
                0x42 => "Windows dynamic disk (LDM, 0x42)".into(),
                0x82 => "Linux swap".into(),
                0x83 => "Linux filesystem".into(),
                0x85 => "Linux extended (0x85)".into(),
                0x8e => "Linux LVM".into(),
                0xa5 => "FreeBSD (0xa5)".into(),
                0xa6 => "OpenBSD (0xa6)".into(),
                0xa9 => "NetBSD (0xa9)".into(),
                0xaf => "Apple HFS/HFS+ (0xaf)".into(),
                0xde => "Dell utility (0xde)".into(),
                0xea => "Linux /boot (XBOOTLDR)".into(),
                0xee => "GPT protective (0xee)".into(),
                0xef => "EFI System".into(),
                0xfd => "Linux RAID".into(),
                t => format!("type 0x{t:02x}"),
            },
        }
    }

    fn is_guid(&self, guid: &str) -> bool {
        matches!(self, PartType::Gpt(g) if g.eq_ignore_ascii_case(guid))
    }

    pub fn is_esp(&self) -> bool {
        self.is_guid(guids::EFI_SYSTEM) || *self == PartType::Mbr(0xef)
    }

    pub fn is_msr(&self) -> bool {
        self.is_guid(guids::MS_RESERVED)
    }

    pub fn is_windows_recovery(&self) -> bool {
        self.is_guid(guids::MS_RECOVERY) || *self == PartType::Mbr(0x27)
    }

    pub fn is_bios_boot(&self) -> bool {
        self.is_guid(guids::BIOS_BOOT)
    }

    pub fn is_swap(&self) -> bool {
        self.is_guid(guids::LINUX_SWAP) || *self == PartType::Mbr(0x82)
    }

    /// MBR extended container (0x05 CHS, 0x0f LBA, 0x85 Linux).
    pub fn is_extended(&self) -> bool {
        matches!(self, PartType::Mbr(t) if mbr::is_extended_type(*t))
    }

    /// Holds one Linux filesystem directly (not LVM/RAID/LUKS).
    pub fn is_linux_data(&self) -> bool {
        match self {
            PartType::Gpt(_) => LINUX_DATA.iter().any(|g| self.is_guid(g)),
            PartType::Mbr(t) => *t == 0x83,
        }
    }

    /// FAT/NTFS/exFAT data partitions as Windows creates them (incl. the
    /// hidden MBR variants OEMs use).
    pub fn is_windows_data(&self) -> bool {
        match self {
            PartType::Gpt(_) => self.is_guid(guids::MS_BASIC_DATA),
            PartType::Mbr(t) => matches!(
                t,
                0x01 | 0x04
                    | 0x06
                    | 0x07
                    | 0x0b
                    | 0x0c
                    | 0x0e
                    | 0x11
                    | 0x14
                    | 0x16
                    | 0x17
                    | 0x1b
                    | 0x1c
                    | 0x1e
            ),
        }
    }
}

/// One partition; offsets and lengths in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Partition {
    /// GPT: entry index + 1; MBR: 1-4 primary, 5.. logical (Linux numbering).
    pub number: u32,
    pub start: u64,
    pub len: u64,
    pub ptype: PartType,
    /// GPT unique partition GUID (None for MBR; `serialize` makes a new one
    /// for a GPT partition without).
    pub guid: Option<String>,
    /// GPT partition name (decoded from UTF-16LE), "" for MBR.
    pub name: String,
    /// GPT attribute bits (UEFI 2.10 table 5.8), 0 for MBR.
    pub attributes: u64,
    /// MBR active flag (0x80).
    pub bootable: bool,
    /// MBR logical partition (inside the extended container).
    pub logical: bool,
}

impl Partition {
    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.start.saturating_add(self.len)
    }
}

/// A whole partition table; offsets and lengths in bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionTable {
    pub kind: TableKind,
    pub sector_size: u32,
    /// GPT disk GUID, or the MBR disk signature as 8 lowercase hex digits.
    pub disk_id: String,
    /// Byte offset of the first usable byte (GPT FirstUsableLBA * sector size;
    /// MBR: one sector).
    pub first_usable: u64,
    /// Byte offset one past the last usable byte.
    pub last_usable: u64,
    /// Sorted by start. The MBR extended container itself is listed.
    pub partitions: Vec<Partition>,
    /// GPT NumberOfPartitionEntries (usually 128); 4 for MBR.
    pub max_entries: u32,
    /// Problems that did not stop the read, e.g. "primary GPT header damaged,
    /// used the backup".
    pub warnings: Vec<String>,
}

/// Errors of reading, validating and writing partition tables.
#[derive(Debug, thiserror::Error)]
pub enum PartError {
    #[error("reading {len} bytes at byte {offset}")]
    Io {
        offset: u64,
        len: u64,
        #[source]
        source: io::Error,
    },
    #[error("unsupported sector size {0} (expected a power of two from 512 to 65536)")]
    BadSectorSize(u32),
    #[error("{which} GPT header at LBA {lba}: no \"EFI PART\" signature")]
    GptSignature { which: &'static str, lba: u64 },
    #[error("{which} GPT header at LBA {lba}: header CRC32 mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    GptHeaderCrc {
        which: &'static str,
        lba: u64,
        stored: u32,
        computed: u32,
    },
    #[error("{which} GPT header at LBA {lba}: {problem}")]
    GptHeaderInvalid {
        which: &'static str,
        lba: u64,
        problem: String,
    },
    #[error("{which} GPT partition entry array at LBA {lba}: CRC32 mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    GptEntriesCrc {
        which: &'static str,
        lba: u64,
        stored: u32,
        computed: u32,
    },
    #[error("GPT partition entry {index}: {problem}")]
    GptEntryInvalid { index: u32, problem: String },
    #[error("no usable GPT: primary: {}; backup: {}", .primary.chain(), .backup.chain())]
    GptUnreadable {
        primary: Box<PartError>,
        backup: Box<PartError>,
    },
    #[error("GPT header found for {found}-byte sectors, but the disk was read with {given}-byte sectors")]
    SectorSizeMismatch { given: u32, found: u32 },
    #[error("extended partition chain loops back to the EBR at LBA {lba}")]
    EbrLoop { lba: u64 },
    #[error("extended partition chain longer than {limit} EBRs")]
    TooManyLogical { limit: usize },
    #[error("partition {number}: {problem}")]
    InvalidPartition { number: u32, problem: String },
    #[error("partitions {a} and {b} overlap")]
    Overlap { a: u32, b: u32 },
    #[error("partition {number} [{start}, {end}) lies outside the usable area [{first_usable}, {last_usable}) of this disk")]
    OutsideUsable {
        number: u32,
        start: u64,
        end: u64,
        first_usable: u64,
        last_usable: u64,
    },
    #[error("{what} {value} is not a multiple of the {sector_size}-byte sector size")]
    Misaligned {
        what: String,
        value: u64,
        sector_size: u32,
    },
    #[error("partition {number}: {what} {lba} does not fit the 32-bit LBA fields of an MBR")]
    MbrLbaTooLarge {
        number: u32,
        what: &'static str,
        lba: u64,
    },
    #[error("disk of {disk_len} bytes is too small for this table (needs at least {needed})")]
    DiskTooSmall { disk_len: u64, needed: u64 },
    #[error("invalid table: {0}")]
    InvalidTable(String),
}

impl PartError {
    /// What the user can do next.
    pub fn hint(&self) -> &'static str {
        use PartError::*;
        match self {
            Io { .. } => "the disk could not be read there: check the cable/connection, dmesg for I/O errors, or whether the disk image file is truncated",
            BadSectorSize(_) => "pass the logical sector size the device reports (blockdev --getss), usually 512 or 4096",
            GptSignature { .. } | GptHeaderCrc { .. } | GptHeaderInvalid { .. } | GptEntriesCrc { .. } | GptEntryInvalid { .. } => {
                "the GPT is damaged; if the other copy is intact it is used automatically, otherwise restore the table from a backup image or repair it with gdisk's recovery menu"
            }
            GptUnreadable { .. } => "both GPT copies are damaged: restore the partition table from a backup image, or rebuild it with gdisk/testdisk before imaging",
            SectorSizeMismatch { .. } => "the disk was partitioned with another logical sector size (e.g. moved out of a USB enclosure): read it with the sector size named in the message",
            EbrLoop { .. } | TooManyLogical { .. } => "the extended partition's EBR chain is corrupt: repair it with testdisk, or image the whole disk sector by sector",
            InvalidPartition { .. } | Overlap { .. } | InvalidTable(_) => "fix the layout (partition numbers, types, sizes) before writing it",
            OutsideUsable { .. } | DiskTooSmall { .. } => "the target disk is too small for this layout: choose a larger disk or shrink the last partition first",
            Misaligned { .. } => "the layout does not fit this sector size: move/resize the partitions to multiples of the sector size (1 MiB alignment always works)",
            MbrLbaTooLarge { .. } => "MBR addresses at most 2 TiB with 512-byte sectors: convert the layout to GPT",
        }
    }

    fn io(offset: u64, len: u64, source: io::Error) -> Self {
        PartError::Io {
            offset,
            len,
            source,
        }
    }

    /// The message with its causes, for warnings (which have no error chain
    /// of their own).
    pub(crate) fn chain(&self) -> String {
        let mut s = self.to_string();
        let mut cur = std::error::Error::source(self);
        while let Some(c) = cur {
            s.push_str(": ");
            s.push_str(&c.to_string());
            cur = c.source();
        }
        s
    }
}

/// One block of bytes to write at a byte offset (whole sectors).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SectorWrite {
    pub offset: u64,
    pub data: Vec<u8>,
}

/// Read the partition table of a disk.
///
/// `Ok(None)` means there is no partition table (blank disk or a filesystem
/// without a table, a "superfloppy"). GPT when a protective (or hybrid) MBR
/// is followed by a valid GPT header (header CRC and entry-array CRC checked,
/// UEFI 2.10 §5.3.2); the backup header at the disk end is used, with a
/// warning, when the primary is damaged. Otherwise MBR, including the
/// extended/logical chain (bounded number of EBRs, cycles rejected).
pub fn read(
    dev: &dyn ReadAt,
    disk_len: u64,
    sector_size: u32,
) -> Result<Option<PartitionTable>, PartError> {
    check_sector_size(sector_size)?;
    let ss = u64::from(sector_size);
    if disk_len < ss || disk_len < 512 {
        return Ok(None);
    }
    let s0 = read_bytes(dev, 0, ss)?;
    match mbr::parse_sector0(&s0) {
        Some(m) if m.has_protective() => gpt::read(dev, disk_len, sector_size, &m).map(Some),
        Some(m) => Ok(Some(mbr::read(dev, disk_len, sector_size, &m)?)),
        None => {
            // No usable MBR. UEFI 2.10 §5.2.3 requires a protective MBR, but a
            // wiped sector 0 in front of an intact GPT is a common rescue case:
            // read the GPT, and say so.
            if disk_len >= 2 * ss && read_bytes(dev, ss, 8)? == gpt::SIGNATURE {
                let mut t = gpt::read(dev, disk_len, sector_size, &mbr::Mbr::default())?;
                t.warnings.insert(
                    0,
                    "no protective MBR in sector 0 (a restore writes one)".into(),
                );
                return Ok(Some(t));
            }
            Ok(None)
        }
    }
}

/// Every sector needed to write `table` onto a disk of `disk_len` bytes with
/// `table.sector_size`-byte sectors, after validating the layout.
///
/// GPT: protective MBR (boot code bytes 0..440 from `sector0` when given —
/// GRUB keeps its boot.img there — else zero), primary header + entry array,
/// backup entry array + backup header at the end of *this* `disk_len` (last
/// usable recomputed for it). Partitions or the disk without a GUID get a new
/// random one.
///
/// MBR: sector 0 (boot code 0..440 from `sector0`, disk signature from
/// `disk_id`, else from `sector0`) and one EBR per logical partition, each in
/// the gap before its logical partition (the first at the extended start).
pub fn serialize(
    table: &PartitionTable,
    disk_len: u64,
    sector0: Option<&[u8]>,
) -> Result<Vec<SectorWrite>, PartError> {
    check_sector_size(table.sector_size)?;
    validate_common(table)?;
    match table.kind {
        TableKind::Gpt => gpt::serialize(table, disk_len, sector0),
        TableKind::Mbr => mbr::serialize(table, disk_len, sector0),
    }
}

/// The same table for another logical sector size; byte offsets unchanged.
///
/// Errors when a partition start/length is not a multiple of the new size,
/// when (MBR) an LBA no longer fits 32 bits, or when (GPT) the entry arrays
/// would overlap the first or the last partition.
pub fn translate(
    table: &PartitionTable,
    new_sector_size: u32,
) -> Result<PartitionTable, PartError> {
    check_sector_size(new_sector_size)?;
    let nss = u64::from(new_sector_size);
    let mut t = table.clone();
    t.sector_size = new_sector_size;
    for p in &t.partitions {
        check_aligned(
            &format!("partition {} start", p.number),
            p.start,
            new_sector_size,
        )?;
        check_aligned(
            &format!("partition {} length", p.number),
            p.len,
            new_sector_size,
        )?;
    }
    match t.kind {
        TableKind::Gpt => {
            let old_arr = gpt::array_sectors(table.max_entries, table.sector_size)
                * u64::from(table.sector_size);
            let new_arr = gpt::array_sectors(t.max_entries, new_sector_size) * nss;
            // Keep the same first usable byte when it is aligned and the new
            // primary array fits before it (so 4096 → 512 → 4096 round-trips).
            let min_first = 2 * nss + new_arr;
            t.first_usable = round_up(table.first_usable.max(min_first), nss);
            // The disk end implied by the old backup area, then the new one.
            let disk_end = table
                .last_usable
                .saturating_add(old_arr)
                .saturating_add(u64::from(table.sector_size));
            t.last_usable = (disk_end / nss * nss).saturating_sub(nss + new_arr);
            for p in &t.partitions {
                if p.start < t.first_usable || p.end() > t.last_usable {
                    return Err(PartError::OutsideUsable {
                        number: p.number,
                        start: p.start,
                        end: p.end(),
                        first_usable: t.first_usable,
                        last_usable: t.last_usable,
                    });
                }
            }
        }
        TableKind::Mbr => {
            t.first_usable = nss;
            t.last_usable = table.last_usable / nss * nss;
            for p in &t.partitions {
                mbr::check_lba_fits(p, new_sector_size)?;
            }
        }
    }
    Ok(t)
}

/// Byte ranges the table structures occupy on a disk of `disk_len` bytes (what
/// `serialize` writes): GPT: LBA 0 to the end of the primary array, and the
/// backup array + header; MBR: sector 0 and each EBR sector.
pub fn table_extents(table: &PartitionTable, disk_len: u64) -> Vec<Extent> {
    let ss = u64::from(table.sector_size.max(1));
    let v = match table.kind {
        TableKind::Gpt => {
            let arr = gpt::array_sectors(table.max_entries, table.sector_size);
            let n = disk_len / ss;
            let mut v = vec![Extent::new(0, (2 + arr) * ss)];
            if n > 1 + arr {
                v.push(Extent::new((n - 1 - arr) * ss, (1 + arr) * ss));
            }
            v
        }
        TableKind::Mbr => {
            let mut v = vec![Extent::new(0, ss)];
            if let Ok(ebrs) = mbr::ebr_positions(table) {
                v.extend(ebrs.iter().map(|(lba, _)| Extent::new(lba * ss, ss)));
            }
            v
        }
    };
    crate::extent::normalize(v, disk_len)
}

/// A new random (version 4, RFC 4122 §4.4) GUID, lowercase canonical form.
pub fn new_guid() -> String {
    let mut b = [0u8; 16];
    if getrandom::getrandom(&mut b).is_err() {
        // No entropy source at all (should not happen on Linux >= 3.17): fall
        // back to the clock; uniqueness, not secrecy, is what a partition GUID
        // needs.
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        b = t.to_le_bytes();
    }
    // Bytes are in the on-disk (mixed-endian) order; version and variant bits
    // live in the 3rd field (byte 7 on disk, little-endian) and byte 8.
    b[7] = (b[7] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    guid_to_string(&b)
}

/// Format 16 on-disk GUID bytes (UEFI 2.10 appendix A: the first three
/// fields little-endian) as lowercase 8-4-4-4-12.
pub(crate) fn guid_to_string(b: &[u8; 16]) -> String {
    format!(
        "{:02x}{:02x}{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}-{:02x}{:02x}{:02x}{:02x}{:02x}{:02x}",
        b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]
    )
}

/// Parse 8-4-4-4-12 (any case) into on-disk bytes.
pub(crate) fn guid_from_str(s: &str) -> Option<[u8; 16]> {
    let s = s.as_bytes();
    if s.len() != 36 || s[8] != b'-' || s[13] != b'-' || s[18] != b'-' || s[23] != b'-' {
        return None;
    }
    let hex: Vec<u8> = s.iter().copied().filter(|&c| c != b'-').collect();
    if hex.len() != 32 {
        return None;
    }
    let mut v = [0u8; 16];
    for (i, pair) in hex.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        v[i] = (hi * 16 + lo) as u8;
    }
    // Text order -> on-disk order (first three fields little-endian).
    Some([
        v[3], v[2], v[1], v[0], v[5], v[4], v[7], v[6], v[8], v[9], v[10], v[11], v[12], v[13],
        v[14], v[15],
    ])
}

fn check_sector_size(ss: u32) -> Result<(), PartError> {
    if ss.is_power_of_two() && (512..=65536).contains(&ss) {
        Ok(())
    } else {
        Err(PartError::BadSectorSize(ss))
    }
}

fn check_aligned(what: &str, value: u64, ss: u32) -> Result<(), PartError> {
    // Sector sizes are powers of two (check_sector_size).
    if value & (u64::from(ss) - 1) == 0 {
        Ok(())
    } else {
        Err(PartError::Misaligned {
            what: what.to_string(),
            value,
            sector_size: ss,
        })
    }
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to).saturating_mul(to)
}

fn read_bytes(dev: &dyn ReadAt, offset: u64, len: u64) -> Result<Vec<u8>, PartError> {
    // Every caller passes at most one sector or a GPT entry array that was
    // checked against gpt::MAX_ARRAY_BYTES, so this limit never bites.
    crate::read_at::read_vec(dev, offset, len, gpt::MAX_ARRAY_BYTES)
        .map_err(|e| PartError::io(offset, len, e))
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// Checks shared by both kinds before writing: alignment, non-empty,
/// unique numbers, no overlaps (logical partitions may only lie inside the
/// extended container), and the right type flavour.
fn validate_common(t: &PartitionTable) -> Result<(), PartError> {
    let ss = t.sector_size;
    check_aligned("first usable byte", t.first_usable, ss)?;
    let mut seen = std::collections::BTreeSet::new();
    for p in &t.partitions {
        let bad = |problem: &str| PartError::InvalidPartition {
            number: p.number,
            problem: problem.to_string(),
        };
        check_aligned(&format!("partition {} start", p.number), p.start, ss)?;
        check_aligned(&format!("partition {} length", p.number), p.len, ss)?;
        if p.len == 0 {
            return Err(bad("length is zero"));
        }
        if p.start.checked_add(p.len).is_none() {
            return Err(bad("start + length overflows"));
        }
        if !seen.insert(p.number) {
            return Err(bad("number used twice"));
        }
        match (t.kind, &p.ptype) {
            (TableKind::Gpt, PartType::Gpt(g)) => {
                if guid_from_str(g).is_none() || g.chars().all(|c| c == '0' || c == '-') {
                    return Err(bad("type GUID is not a valid, non-zero 8-4-4-4-12 GUID"));
                }
            }
            (TableKind::Mbr, PartType::Mbr(0)) => {
                return Err(bad("MBR type 0x00 marks an empty slot"))
            }
            (TableKind::Mbr, PartType::Mbr(_)) => {}
            _ => return Err(bad("partition type does not match the table kind")),
        }
    }
    // Overlaps: sort by start and compare neighbours within each "layer"
    // (primary/GPT partitions, and MBR logical partitions).
    for layer in [false, true] {
        let mut v: Vec<&Partition> = t.partitions.iter().filter(|p| p.logical == layer).collect();
        v.sort_by_key(|p| (p.start, p.number));
        for w in v.windows(2) {
            if w[1].start < w[0].end() {
                return Err(PartError::Overlap {
                    a: w[0].number,
                    b: w[1].number,
                });
            }
        }
    }
    Ok(())
}

/// Warnings for a table just read: partitions overlapping each other or
/// lying outside the usable area / the disk.
fn layout_warnings(t: &mut PartitionTable, disk_len: u64) {
    let mut w = Vec::new();
    for layer in [false, true] {
        let v: Vec<&Partition> = t.partitions.iter().filter(|p| p.logical == layer).collect();
        for (i, a) in v.iter().enumerate() {
            for b in v.iter().skip(i + 1) {
                if b.start < a.end() && a.start < b.end() {
                    w.push(format!("partitions {} and {} overlap", a.number, b.number));
                }
            }
        }
    }
    for p in &t.partitions {
        if p.end() > disk_len {
            w.push(format!(
                "partition {} ends at byte {} beyond the end of the disk ({} bytes): truncated disk or image?",
                p.number,
                p.end(),
                disk_len
            ));
        } else if p.start < t.first_usable || p.end() > t.last_usable {
            w.push(format!(
                "partition {} [{}, {}) lies outside the usable area [{}, {})",
                p.number,
                p.start,
                p.end(),
                t.first_usable,
                t.last_usable
            ));
        }
    }
    t.warnings.extend(w);
}

#[cfg(test)]
mod tests;
