//! Partition-table conversion for whole-disk writes: GPT to MBR (more than
//! four partitions become logical partitions in one extended partition) and
//! MBR to GPT (logical partitions become ordinary GPT entries), with the boot
//! mode each result needs.
//!
//! The converted table keeps the source's byte positions; the layout planner
//! then places it on the target like any other table (keeping room for each
//! EBR, aligning, shrinking).
//!
//! Boot rules (why a conversion is refused or what the plan says):
//! - Windows boots from a GPT disk only with UEFI, and from an MBR disk only
//!   with BIOS/CSM (UEFI Specification 2.10 §5 for the tables; Microsoft's
//!   "UEFI/GPT-based hard drive partitions" and "BIOS/MBR-based hard drive
//!   partitions" for Windows). A Windows UEFI system converted to MBR boots only
//!   if it also has BIOS boot code; a Windows BIOS system converted to GPT
//!   needs an EFI system partition with its boot files (`mbr2gpt` makes them).
//! - GRUB for BIOS keeps its core image in the BIOS boot partition on GPT and
//!   in the sectors after the MBR on MBR disks; neither survives a conversion.
//! - UEFI boots an EFI system partition from either table (type 0xEF on MBR).
//!
//! Deliberately unsupported (refused): LDM dynamic disks, Storage Spaces,
//! BSD/Solaris/APFS partitions, unknown types without a recognised
//! filesystem; more than three partitions that must stay primary. A hybrid
//! MBR is read as its GPT (see [`crate::part`]), so that is what converts.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::fs::{FsInfo, FsKind};
use crate::part::{self, guids, PartType, Partition, PartitionTable, TableKind};

/// A partition's number on the source and on the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartNumber {
    pub source: u32,
    pub target: u32,
}

/// What a table conversion does, for the plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TableConversion {
    pub from: TableKind,
    pub to: TableKind,
    /// Every partition kept, by number.
    pub numbers: Vec<PartNumber>,
    /// Source partitions left out, each with why.
    pub dropped: Vec<String>,
    /// How the converted disk boots (or that it holds no boot loader).
    pub boot: String,
}

/// The converted table (source byte positions) and what it means.
pub(super) struct Converted {
    pub table: PartitionTable,
    pub info: TableConversion,
}

fn kind_name(k: TableKind) -> &'static str {
    match k {
        TableKind::Gpt => "GPT",
        TableKind::Mbr => "MBR",
    }
}

/// The type with the same meaning in a table of kind `to`, or why there is
/// none.
pub fn equivalent_type(t: &PartType, fs: Option<&FsInfo>, to: TableKind) -> Result<PartType, String> {
    match to {
        TableKind::Mbr => mbr_type(t, fs).map(PartType::Mbr),
        TableKind::Gpt => gpt_type(t, fs).map(|g| PartType::Gpt(g.to_string())),
    }
}

/// The MBR system indicator for `t`.
fn mbr_type(t: &PartType, fs: Option<&FsInfo>) -> Result<u8, String> {
    let g = match t {
        PartType::Mbr(b) => return Ok(*b),
        PartType::Gpt(g) => g.to_ascii_lowercase(),
    };
    Ok(match g.as_str() {
        guids::EFI_SYSTEM => 0xef,
        guids::LINUX_SWAP => 0x82,
        guids::LINUX_LVM => 0x8e,
        guids::LINUX_RAID => 0xfd,
        guids::LINUX_XBOOTLDR => 0xea,
        guids::LINUX_LUKS => 0x83,
        guids::MS_RECOVERY => 0x27,
        guids::APPLE_HFS => 0xaf,
        guids::BIOS_BOOT => {
            return Err("a BIOS boot partition (GRUB's core image for BIOS boot from GPT) has no MBR equivalent: on MBR disks GRUB lives in the sectors after the MBR".into())
        }
        guids::MS_RESERVED => return Err("the Microsoft reserved partition exists only on GPT disks".into()),
        guids::MS_LDM_METADATA | guids::MS_LDM_DATA => return Err("a Windows dynamic disk (LDM) keeps a different database on MBR and GPT disks".into()),
        guids::MS_STORAGE_SPACES => return Err("Storage Spaces pools exist only on GPT disks".into()),
        guids::LINUX_RESERVED => return Err("the Linux reserved type has no MBR equivalent".into()),
        guids::APPLE_APFS | guids::FREEBSD_UFS | guids::FREEBSD_ZFS | guids::SOLARIS_ZFS => {
            return Err(format!("{} partitions have no MBR type of their own", t.describe()))
        }
        _ if t.is_linux_data() => 0x83,
        _ => match fs.map(|f| &f.kind) {
            Some(FsKind::Fat32) => 0x0c,
            Some(FsKind::Fat12 | FsKind::Fat16) => 0x0e,
            Some(FsKind::Ntfs | FsKind::Exfat) => 0x07,
            Some(FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4) => 0x83,
            Some(FsKind::Swap) => 0x82,
            _ if t.is_windows_data() => 0x07,
            _ => return Err(format!("type {} is unknown and holds no recognised filesystem", t.describe())),
        },
    })
}

/// The GPT type GUID for `t`.
fn gpt_type<'a>(t: &'a PartType, fs: Option<&FsInfo>) -> Result<&'a str, String> {
    let b = match t {
        PartType::Gpt(g) => return Ok(g),
        PartType::Mbr(b) => *b,
    };
    Ok(match b {
        0xef => guids::EFI_SYSTEM,
        0x82 => guids::LINUX_SWAP,
        0x83 => guids::LINUX_FS,
        0x8e => guids::LINUX_LVM,
        0xfd => guids::LINUX_RAID,
        0xea => guids::LINUX_XBOOTLDR,
        0x27 => guids::MS_RECOVERY,
        0xaf => guids::APPLE_HFS,
        0x42 => return Err("a Windows dynamic disk (LDM) keeps a different database on MBR and GPT disks".into()),
        0xa5 | 0xa6 | 0xa9 => return Err(format!("a {} slice holds its own BSD disklabel, which GPT does not nest", t.describe())),
        0xee => return Err("a GPT protective entry cannot be converted".into()),
        _ if t.is_windows_data() || b == 0x12 || b == 0xde => guids::MS_BASIC_DATA,
        _ => match fs.map(|f| &f.kind) {
            Some(FsKind::Fat12 | FsKind::Fat16 | FsKind::Fat32 | FsKind::Ntfs | FsKind::Exfat) => guids::MS_BASIC_DATA,
            Some(FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4) => guids::LINUX_FS,
            Some(FsKind::Swap) => guids::LINUX_SWAP,
            _ => return Err(format!("type {} is unknown and holds no recognised filesystem", t.describe())),
        },
    })
}

/// GPT attribute bit 2: legacy BIOS bootable (UEFI 2.10 table 5.8), the GPT
/// counterpart of the MBR active flag.
const LEGACY_BIOS_BOOTABLE: u64 = 1 << 2;

/// What the source's boot setup looks like.
struct Boot {
    esp: Option<u32>,
    bios_boot_partition: Option<u32>,
    /// Sector 0 holds boot code (bytes 0..440 not all zero).
    bios_code: bool,
    /// That code is GRUB's boot.img.
    grub: bool,
    /// NTFS with the partitions Windows Setup makes (ESP/MSR/recovery on
    /// GPT, an active partition or recovery on MBR).
    windows: bool,
    linux: bool,
}

fn boot_of(t: &PartitionTable, fs_of: &dyn Fn(u32) -> Option<FsInfo>, sector0: Option<&[u8]>) -> Boot {
    let code = sector0.map(|s| &s[..s.len().min(440)]).unwrap_or(&[]);
    let bios_code = code.iter().any(|&b| b != 0);
    let grub = bios_code && code.windows(4).any(|w| w == b"GRUB");
    let kinds: Vec<Option<FsKind>> = t.partitions.iter().map(|p| fs_of(p.number).map(|f| f.kind)).collect();
    let ntfs = kinds.contains(&Some(FsKind::Ntfs));
    let linux = kinds.iter().any(|k| matches!(k, Some(FsKind::Ext2 | FsKind::Ext3 | FsKind::Ext4)));
    let esp = t.partitions.iter().find(|p| p.ptype.is_esp()).map(|p| p.number);
    let windows_parts = t.partitions.iter().any(|p| p.ptype.is_msr() || p.ptype.is_windows_recovery());
    let windows = ntfs
        && match t.kind {
            TableKind::Gpt => esp.is_some() || windows_parts,
            TableKind::Mbr => windows_parts || t.partitions.iter().any(|p| p.bootable) || (bios_code && !grub),
        };
    Boot { esp, bios_boot_partition: t.partitions.iter().find(|p| p.ptype.is_bios_boot()).map(|p| p.number), bios_code, grub, windows, linux }
}

fn keep_hint(from: TableKind) -> String {
    format!("keep the {} (leave out --table)", kind_name(from))
}

/// Convert `t` (already in the target's sector size) to `to`.
pub(super) fn convert(t: &PartitionTable, to: TableKind, fs_of: &dyn Fn(u32) -> Option<FsInfo>, sector0: Option<&[u8]>) -> Result<Converted, Error> {
    let boot = boot_of(t, fs_of, sector0);
    match to {
        TableKind::Mbr => to_mbr(t, &boot, fs_of),
        TableKind::Gpt => to_gpt(t, &boot, fs_of),
    }
}

fn to_mbr(t: &PartitionTable, boot: &Boot, fs_of: &dyn Fn(u32) -> Option<FsInfo>) -> Result<Converted, Error> {
    let ss = u64::from(t.sector_size);
    if let Some(n) = boot.bios_boot_partition {
        return Err(Error::refused(
            format!("partition {n} is a BIOS boot partition: GRUB boots this disk with BIOS from it, and MBR has no such partition (GRUB on MBR lives in the sectors after the MBR), so the converted disk would not boot"),
            "keep the GPT (leave out --table): BIOS boots a GPT disk through its BIOS boot partition, no MBR needed",
        ));
    }
    if boot.windows && boot.esp.is_some() && !boot.bios_code {
        return Err(Error::refused(
            "this Windows system boots with UEFI from its EFI system partition and has no BIOS boot code; Windows boots from an MBR disk only with BIOS/CSM (boot code in sector 0, bootmgr and \\Boot\\BCD on the active partition), so the converted disk would not boot",
            "keep the GPT (leave out --table) and boot the target with UEFI; Windows for a BIOS-only machine needs BIOS boot files first (bcdboot C:\\Windows /f BIOS)",
        ));
    }
    let mut dropped = Vec::new();
    let mut parts: Vec<(Partition, u8)> = Vec::new();
    let mut sorted: Vec<&Partition> = t.partitions.iter().collect();
    sorted.sort_by_key(|p| p.start);
    for p in sorted {
        if p.ptype.is_msr() {
            dropped.push(format!("partition {} (Microsoft reserved) is left out: MBR disks have none and it holds no files", p.number));
            continue;
        }
        let b = mbr_type(&p.ptype, fs_of(p.number).as_ref()).map_err(|why| {
            Error::refused(
                format!("partition {} ({}) cannot be converted to MBR: {why}", p.number, p.ptype.describe()),
                format!("{}, or restore the other partitions one by one with --part", keep_hint(TableKind::Gpt)),
            )
        })?;
        parts.push((p.clone(), b));
    }
    // The active partition: the one marked legacy-BIOS-bootable, else (with
    // BIOS boot code) the Windows partition or the first data partition; some
    // BIOSes skip disks without one.
    let active = parts.iter().position(|(p, _)| p.attributes & LEGACY_BIOS_BOOTABLE != 0).or_else(|| {
        if !boot.bios_code {
            return None;
        }
        parts.iter().position(|(p, _)| {
            !p.ptype.is_esp() && !p.ptype.is_swap() && (!boot.windows || fs_of(p.number).is_some_and(|f| f.kind == FsKind::Ntfs))
        })
    });
    let must_primary: Vec<bool> = parts.iter().enumerate().map(|(i, (p, _))| p.ptype.is_esp() || Some(i) == active).collect();
    let n = parts.len();
    // Which run of partitions (in disk order) goes into the extended one.
    let logical_run = if n <= 4 {
        None
    } else {
        let k = n - 3;
        let i = (0..=3usize).rev().find(|&i| !must_primary[i..i + k].iter().any(|&m| m)).ok_or_else(|| {
            Error::refused(
                "more than three partitions must stay primary (EFI system and active partitions), so the others do not fit one extended partition",
                format!("{}, or restore fewer partitions with --part", keep_hint(TableKind::Gpt)),
            )
        })?;
        Some(i..i + k)
    };
    let keep_numbers = logical_run.is_none() && parts.iter().all(|(p, _)| (1..=4).contains(&p.number));
    let mut out = Vec::new();
    let mut numbers = Vec::new();
    let mut slot = 0u32;
    let mut next_logical = 5u32;
    for (i, (p, b)) in parts.iter().enumerate() {
        let logical = logical_run.as_ref().is_some_and(|r| r.contains(&i));
        if logical_run.as_ref().is_some_and(|r| r.start == i) {
            // The extended partition spans the free space before its first
            // logical partition (its first EBR goes there) up to the last one.
            slot += 1;
            let r = logical_run.as_ref().expect("checked above");
            let prev_end = if i == 0 { 0 } else { parts[i - 1].0.end() };
            let start = prev_end.max(ss).min(p.start);
            out.push(Partition {
                number: slot,
                start,
                len: parts[r.end - 1].0.end() - start,
                ptype: PartType::Mbr(0x0f),
                guid: None,
                name: String::new(),
                attributes: 0,
                bootable: false,
                logical: false,
            });
        }
        let number = if logical {
            next_logical += 1;
            next_logical - 1
        } else if keep_numbers {
            p.number
        } else {
            slot += 1;
            slot
        };
        numbers.push(PartNumber { source: p.number, target: number });
        out.push(Partition {
            number,
            start: p.start,
            len: p.len,
            ptype: PartType::Mbr(*b),
            guid: None,
            name: String::new(),
            attributes: 0,
            bootable: Some(i) == active,
            logical,
        });
    }
    let boot_text = if boot.windows {
        let a = active.map(|i| numbers[i].target).map(|n| format!("partition {n}")).unwrap_or_else(|| "none".into());
        format!("Windows on an MBR disk boots only with BIOS/CSM: enable legacy/CSM boot in the firmware; sector 0's boot code starts the active partition ({a}), which must hold bootmgr and \\Boot\\BCD (bcdboot C:\\Windows /f BIOS makes them); UEFI boot of Windows needs GPT")
    } else if boot.esp.is_some() {
        format!(
            "UEFI boots the EFI system partition (now MBR type 0xef) through its fallback loader \\EFI\\BOOT\\BOOTX64.EFI; the firmware's boot entries named its GPT partition GUID and must be made again (efibootmgr){}",
            if boot.linux { "; PARTUUID= names in /etc/fstab or the kernel command line change" } else { "" }
        )
    } else if boot.bios_code {
        "the BIOS boot code of the protective MBR is kept in sector 0; it boots the MBR disk only if it does not depend on the GPT".into()
    } else {
        "no boot loader found (no EFI system partition, no BIOS boot code): the disk holds data only".into()
    };
    let table = PartitionTable {
        kind: TableKind::Mbr,
        sector_size: t.sector_size,
        disk_id: format!("{:08x}", u32::from_le_bytes(crate::image::crypto::random())),
        first_usable: ss,
        last_usable: 0,
        partitions: out,
        max_entries: 4,
        warnings: Vec::new(),
    };
    Ok(Converted { table, info: TableConversion { from: TableKind::Gpt, to: TableKind::Mbr, numbers, dropped, boot: boot_text } })
}

fn to_gpt(t: &PartitionTable, boot: &Boot, fs_of: &dyn Fn(u32) -> Option<FsInfo>) -> Result<Converted, Error> {
    let ss = u64::from(t.sector_size);
    let active = t.partitions.iter().find(|p| p.bootable).map(|p| p.number);
    if boot.windows && boot.esp.is_none() {
        return Err(Error::refused(
            format!(
                "this Windows system boots with BIOS from the MBR{}; Windows boots from a GPT disk only with UEFI, which needs an EFI system partition with its boot files, and this disk has none",
                active.map(|n| format!(" (active partition {n})")).unwrap_or_default()
            ),
            "keep the MBR (leave out --table); to move to UEFI, restore as it is and run `mbr2gpt /convert` in Windows, which adds the EFI system partition and boot files",
        ));
    }
    if boot.grub && boot.esp.is_none() {
        return Err(Error::refused(
            "GRUB boots this disk with BIOS from the sectors after the MBR, which the GPT entry array overwrites; BIOS boots GRUB from a GPT disk only through a BIOS boot partition, which this disk does not have",
            "keep the MBR (leave out --table); to move to GPT, restore as it is, convert with gdisk, add a 1 MiB BIOS boot partition and run grub-install --target=i386-pc",
        ));
    }
    let mut parts: Vec<Partition> = Vec::new();
    let mut numbers = Vec::new();
    let mut dropped = Vec::new();
    let mut sorted: Vec<&Partition> = t.partitions.iter().collect();
    sorted.sort_by_key(|p| p.start);
    for p in sorted {
        if p.ptype.is_extended() {
            dropped.push(format!("the extended partition {} is left out: GPT lists its logical partitions directly", p.number));
            continue;
        }
        let ptype = equivalent_type(&p.ptype, fs_of(p.number).as_ref(), TableKind::Gpt).map_err(|why| {
            Error::refused(
                format!("partition {} ({}) cannot be converted to GPT: {why}", p.number, p.ptype.describe()),
                format!("{}, or restore the other partitions one by one with --part", keep_hint(TableKind::Mbr)),
            )
        })?;
        // gdisk's numbering: primaries keep 1-4, logical partitions 5.., so
        // /dev/sdX5 stays /dev/sdX5.
        numbers.push(PartNumber { source: p.number, target: p.number });
        parts.push(Partition {
            number: p.number,
            start: p.start,
            len: p.len,
            ptype,
            guid: Some(part::new_guid()),
            name: String::new(),
            attributes: if p.bootable { LEGACY_BIOS_BOOTABLE } else { 0 },
            bootable: false,
            logical: false,
        });
    }
    let boot_text = if boot.esp.is_some() {
        format!(
            "UEFI boots the EFI system partition as before (now GPT type EFI System); firmware boot entries that named the MBR disk signature must be made again (efibootmgr, or bcdboot for Windows){}",
            if boot.linux { "; PARTUUID= names in /etc/fstab or the kernel command line change" } else { "" }
        )
    } else if boot.bios_code {
        format!(
            "the BIOS boot code of sector 0 is kept in the protective MBR, but BIOS boots a GPT disk only with a GPT-aware boot loader{}",
            active.map(|n| format!("; the active flag of partition {n} becomes its legacy-BIOS-bootable attribute")).unwrap_or_default()
        )
    } else {
        "no boot loader found (no EFI system partition, no BIOS boot code): the disk holds data only".into()
    };
    let max_entries = 128;
    let arr = (u64::from(max_entries) * 128).div_ceil(ss) * ss;
    let table = PartitionTable {
        kind: TableKind::Gpt,
        sector_size: t.sector_size,
        disk_id: part::new_guid(),
        first_usable: 2 * ss + arr,
        last_usable: 0,
        partitions: parts,
        max_entries,
        warnings: Vec::new(),
    };
    Ok(Converted { table, info: TableConversion { from: TableKind::Mbr, to: TableKind::Gpt, numbers, dropped, boot: boot_text } })
}
