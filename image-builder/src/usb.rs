//! The USB stick image: a GPT disk image to `dd` onto a stick (or to write
//! with `image-builder usb --write`, see [`flash`]) that boots under legacy
//! BIOS and under UEFI with Secure Boot, with an optional data partition
//! where `rescue` can save images.
//!
//! ```text
//! LBA 0           protective MBR; bytes 0..440 are GRUB's boot.img (BIOS)
//! LBA 1..33       primary GPT, 128 entries
//! p1 LBA 34..2047 "BIOS boot": GRUB's i386-pc core.img, loaded by boot.img
//! p2 1 MiB..      "EFI system", FAT32 "RESCUE":
//!                   EFI/BOOT/BOOTX64.EFI   Microsoft-signed shim (shim-signed)
//!                   EFI/BOOT/grubx64.efi   Debian-signed GRUB (grub-efi-amd64-signed)
//!                   EFI/debian/grub.cfg    the menu, for BIOS and UEFI alike
//!                   live/vmlinuz, live/initramfs.img
//! p3 (optional)   "RESCUE-DATA": exFAT (type Microsoft basic data, readable
//!                 on Windows and macOS) or ext4 (Linux filesystem)
//! last 33 LBAs    backup GPT
//! ```
//!
//! UEFI: the firmware starts shim from the removable-media path, shim starts
//! `grubx64.efi` beside it, and Debian's signed `grubx64.efi` has the prefix
//! `/EFI/debian` built in: its embedded configuration sources
//! `$prefix/grub.cfg` when that directory exists on the partition GRUB was
//! loaded from, so it always reads *this* stick's menu (the ISO's `gcdx64`
//! instead searches every disk for `/.disk/info`). Then Debian's signed
//! kernel: the Secure Boot chain is the ISO's.
//!
//! BIOS: `grub-mkimage -O i386-pc` with the prefix `(,gpt2)/EFI/debian`
//! (an empty disk name means the drive the BIOS booted from) and every
//! module the menu needs built in, so nothing is loaded from the stick but
//! `grub.cfg`. What `grub-bios-setup` would patch is patched here, without
//! touching a device: boot.img's kernel sector (0x5c) is the BIOS boot
//! partition's first LBA and its boot-drive check (0x66) becomes two NOPs,
//! as `grub-bios-setup` does for hard disks (buggy BIOSes pass a wrong drive
//! number); the block list at the end of core.img's first sector (diskboot)
//! names the rest of core.img. The protective MBR entry is marked active
//! (0x80): UEFI 2.10 §5.2.3 says UEFI ignores the flag, and some BIOSes only
//! boot a disk with an active MBR entry.
//!
//! Built unprivileged (partition images as files, spliced at their offsets;
//! the GPT written by `imaging::part`) and reproducibly: the GUIDs, the FAT
//! volume id, the exFAT serial number and the ext4 UUID derive from
//! `SOURCE_DATE_EPOCH`; `mkfs.exfat` takes its serial number from the clock,
//! so it is patched ([`crate::exfat::set_serial`]); `mkfs.ext4` runs with
//! `E2FSPROGS_FAKE_TIME` (the same `/etc/mke2fs.conf` is an input, like the
//! tools' versions).
//!
//! Deliberately unsupported: sticks with 4096-byte logical sectors (the
//! image's GPT is for 512-byte sectors; `--write` refuses them), hybrid or
//! pure MBR layouts for BIOSes that cannot boot a GPT disk at all, and
//! 32-bit UEFI.

pub mod flash;

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;

use imaging::part::{guids, PartType, Partition, PartitionTable, TableKind};
use sha2::{Digest, Sha256};

use crate::deb::Cache;
use crate::stage::{self, put, read_pkg, run};
use crate::{Error, Result};

pub const SECTOR: u64 = 512;
pub const MIB: u64 = 1 << 20;
/// The BIOS boot partition fills the gap between the primary GPT and 1 MiB.
pub const BIOS_BOOT_LBA: u64 = 34;
pub const BIOS_BOOT_SECTORS: u64 = 2048 - BIOS_BOOT_LBA;
pub const BIOS_BOOT_NUMBER: u32 = 1;
pub const ESP_NUMBER: u32 = 2;
pub const DATA_NUMBER: u32 = 3;
pub const ESP_LABEL: &str = "RESCUE";
pub const DATA_LABEL: &str = "RESCUE-DATA";
/// Where `grub.cfg` lives on the ESP (the signed GRUB's built-in prefix).
pub const GRUB_DIR: &str = "EFI/debian";
/// Default size of the data partition in the image (grown by `--write`).
pub const DEFAULT_DATA_SIZE: u64 = 32 * MIB;
/// The smallest ESP: FAT32 needs 65525 clusters (512-byte clusters here).
const MIN_ESP: u64 = 64 * MIB;

/// The data partition's filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DataFs {
    /// Readable on Windows, macOS and Linux.
    Exfat,
    /// Linux only; keeps permissions and ownership.
    Ext4,
}

impl DataFs {
    pub fn name(self) -> &'static str {
        match self {
            DataFs::Exfat => "exfat",
            DataFs::Ext4 => "ext4",
        }
    }

    fn type_guid(self) -> &'static str {
        match self {
            DataFs::Exfat => guids::MS_BASIC_DATA,
            DataFs::Ext4 => guids::LINUX_FS,
        }
    }

    /// What is at the start of a partition, by magic number.
    pub fn detect(dev: &dyn imaging::ReadAt, offset: u64) -> Option<DataFs> {
        let mut b = [0u8; 2048];
        dev.read_exact_at(&mut b, offset).ok()?;
        if &b[3..11] == b"EXFAT   " {
            Some(DataFs::Exfat)
        } else if b[1024 + 56..1024 + 58] == [0x53, 0xef] {
            Some(DataFs::Ext4)
        } else {
            None
        }
    }
}

/// What goes into the image besides the kernel and initramfs.
#[derive(Debug, Clone)]
pub struct Options {
    /// Extra kernel arguments on every menu entry.
    pub append: String,
    /// The data partition, if any: filesystem and size in bytes.
    pub data: Option<(DataFs, u64)>,
    pub sde: u32,
}

/// A built image: its size and partition table.
#[derive(Debug, Clone)]
pub struct Built {
    pub size: u64,
    pub table: PartitionTable,
}

/// A GUID (RFC 4122 version 4 layout) derived from `SOURCE_DATE_EPOCH` and
/// what it names, so that builds are reproducible.
fn derived_guid(sde: u32, what: &str) -> String {
    let h = Sha256::digest(format!("rescue-usb {sde} {what}"));
    let mut b = [0u8; 16];
    b.copy_from_slice(&h[..16]);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn derived_u32(sde: u32, what: &str) -> u32 {
    let h = Sha256::digest(format!("rescue-usb {sde} {what}"));
    u32::from_le_bytes([h[0], h[1], h[2], h[3]])
}

/// The partition table of an image with an ESP of `esp_len` bytes and an
/// optional data partition; returns it and the image size.
pub fn table(esp_len: u64, data: Option<(DataFs, u64)>, sde: u32) -> (PartitionTable, u64) {
    let part = |number: u32, start: u64, len: u64, ptype: &str, name: &str| Partition {
        number,
        start,
        len,
        ptype: PartType::Gpt(ptype.into()),
        guid: Some(derived_guid(sde, &format!("partition {number}"))),
        name: name.into(),
        attributes: 0,
        bootable: false,
        logical: false,
    };
    let mut partitions = vec![
        part(
            BIOS_BOOT_NUMBER,
            BIOS_BOOT_LBA * SECTOR,
            BIOS_BOOT_SECTORS * SECTOR,
            guids::BIOS_BOOT,
            "BIOS boot",
        ),
        part(ESP_NUMBER, MIB, esp_len, guids::EFI_SYSTEM, "EFI system"),
    ];
    let mut end = MIB + esp_len;
    if let Some((fs, len)) = data {
        partitions.push(part(DATA_NUMBER, end, len, fs.type_guid(), DATA_LABEL));
        end += len;
    }
    // Room for the backup GPT (33 sectors), keeping the size whole MiB.
    let size = end + MIB;
    let t = PartitionTable {
        kind: TableKind::Gpt,
        sector_size: SECTOR as u32,
        disk_id: derived_guid(sde, "disk"),
        first_usable: BIOS_BOOT_LBA * SECTOR,
        last_usable: size - 33 * SECTOR,
        partitions,
        max_entries: 128,
        warnings: Vec::new(),
    };
    (t, size)
}

/// GRUB's boot.img patched for a core.img at [`BIOS_BOOT_LBA`].
fn boot_sector(grub_pc: &Path) -> Result<Vec<u8>> {
    let mut b = read_pkg(grub_pc, "usr/lib/grub/i386-pc/boot.img", "grub-pc-bin")?;
    // 0x66: `jmp 3f` over the boot-drive check (GRUB 2.06 boot.S).
    if b.len() != 512 || b[0x66] != 0xeb {
        return Err(Error::Tool {
            cmd: "boot.img of grub-pc-bin".into(),
            detail: "not the GRUB 2 boot.img layout this builder knows".into(),
            package: Some("grub-pc-bin".into()),
        });
    }
    b[0x5c..0x64].copy_from_slice(&BIOS_BOOT_LBA.to_le_bytes());
    b[0x66] = 0x90;
    b[0x67] = 0x90;
    Ok(b)
}

/// The BIOS core image with its block list filled in, padded to sectors.
fn bios_core(grub_common: &Path, grub_pc: &Path, stage_dir: &Path) -> Result<Vec<u8>> {
    let img = stage_dir.join("core.img");
    run(
        Command::new(grub_common.join("usr/bin/grub-mkimage"))
            .arg("-d")
            .arg(grub_pc.join("usr/lib/grub/i386-pc"))
            .args(["-O", "i386-pc", "-p"])
            .arg(format!("(,gpt{ESP_NUMBER})/{GRUB_DIR}"))
            .arg("-o")
            .arg(&img)
            .args(crate::iso::BIOS_MODULES),
        "grub-common",
    )?;
    let mut core = fs::read(&img).map_err(|e| Error::io("reading", &img, e))?;
    core.resize(core.len().div_ceil(512) * 512, 0);
    let sectors = (core.len() / 512) as u64;
    let bad = |detail: String| Error::Tool {
        cmd: "grub-mkimage -O i386-pc".into(),
        detail,
        package: Some("grub-common".into()),
    };
    if sectors > BIOS_BOOT_SECTORS {
        return Err(bad(format!(
            "core.img is {sectors} sectors; the BIOS boot partition holds {BIOS_BOOT_SECTORS}"
        )));
    }
    // struct grub_pc_bios_boot_blocklist { u64 start; u16 len; u16 segment }
    // at the end of diskboot (GRUB 2.06 grub-setup's save_blocklists).
    let bl = 512 - 12;
    let len = u16::from_le_bytes([core[bl + 8], core[bl + 9]]);
    if u64::from(len) != sectors - 1 || core[bl + 10..bl + 12] != [0x20, 0x08] {
        return Err(bad(format!(
            "unexpected diskboot block list (len {len} for {sectors} sectors)"
        )));
    }
    core[bl..bl + 8].copy_from_slice(&(BIOS_BOOT_LBA + 1).to_le_bytes());
    Ok(core)
}

/// Copy `src` into `dst` at `offset`, skipping blocks of zeroes (`dst` is
/// a new file, all zeroes: the result stays sparse).
fn splice(src: &File, dst: &dyn imaging::read_at::FileExt, offset: u64, src_path: &Path) -> Result<()> {
    const BLOCK: usize = 64 * 1024;
    let len = src
        .metadata()
        .map_err(|e| Error::io("reading", src_path, e))?
        .len();
    let mut buf = vec![0u8; BLOCK];
    let mut pos = 0u64;
    while pos < len {
        let n = (len - pos).min(BLOCK as u64) as usize;
        src.read_exact_at(&mut buf[..n], pos)
            .map_err(|e| Error::io("reading", src_path, e))?;
        for (i, chunk) in buf[..n].chunks(4096).enumerate() {
            if chunk.iter().any(|&b| b != 0) {
                dst.write_all_at(chunk, offset + pos + (i * 4096) as u64)
                    .map_err(|e| Error::io("writing", src_path, e))?;
            }
        }
        pos += n as u64;
    }
    Ok(())
}

/// Make the empty data filesystem in the file `img` of `len` bytes.
pub fn make_data_fs(img: &Path, fs: DataFs, len: u64, sde: Option<u32>) -> Result<()> {
    let f = File::create(img).map_err(|e| Error::io("creating", img, e))?;
    f.set_len(len).map_err(|e| Error::io("sizing", img, e))?;
    drop(f);
    match fs {
        DataFs::Exfat => {
            run(
                Command::new("mkfs.exfat").args(["-L", DATA_LABEL]).arg(img),
                "exfatprogs",
            )?;
            if let Some(sde) = sde {
                let f = File::options()
                    .read(true)
                    .write(true)
                    .open(img)
                    .map_err(|e| Error::io("opening", img, e))?;
                crate::exfat::set_serial(&f, derived_u32(sde, "exfat serial"))?;
            }
        }
        DataFs::Ext4 => {
            let mut cmd = Command::new("mkfs.ext4");
            cmd.args(["-q", "-F", "-L", DATA_LABEL, "-b", "4096", "-m", "0"]);
            let mut ext = String::from("root_owner=0:0,lazy_itable_init=0,nodiscard");
            if let Some(sde) = sde {
                let uuid = derived_guid(sde, "ext4");
                cmd.args(["-U", &uuid]);
                ext.push_str(&format!(",hash_seed={uuid}"));
                cmd.env("E2FSPROGS_FAKE_TIME", sde.to_string());
            }
            run(cmd.arg("-E").arg(ext).arg(img), "e2fsprogs")?;
        }
    }
    Ok(())
}

/// Build the USB image at `out` from the kernel and initramfs bytes.
pub fn write(
    out: &Path,
    cache: &Cache,
    vmlinuz: &[u8],
    initramfs: &[u8],
    opts: &Options,
) -> Result<Built> {
    let grub_pc = cache.package("grub-pc-bin")?;
    let grub_common = cache.package("grub-common")?;
    let grub_efi = cache.package("grub-efi-amd64-signed")?;
    let shim = cache.package("shim-signed")?;
    let mtime = stage::mtime(opts.sde);
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| Error::io("creating", dir, e))?;
    let stage_dir = dir.join(format!(".usb-stage.{}", std::process::id()));
    let _ = fs::remove_dir_all(&stage_dir);
    let result = (|| {
        fs::create_dir_all(&stage_dir).map_err(|e| Error::io("creating", &stage_dir, e))?;
        let boot = boot_sector(&grub_pc)?;
        let core = bios_core(&grub_common, &grub_pc, &stage_dir)?;

        // The ESP.
        let esp = stage_dir.join("esp");
        let shim_bytes = read_pkg(&shim, "usr/lib/shim/shimx64.efi.signed", "shim-signed")?;
        let grub_bytes = read_pkg(
            &grub_efi,
            "usr/lib/grub/x86_64-efi-signed/grubx64.efi.signed",
            "grub-efi-amd64-signed",
        )?;
        let cfg = crate::iso::grub_cfg(&opts.append);
        put(&esp, "EFI/BOOT/BOOTX64.EFI", &shim_bytes, mtime)?;
        put(&esp, "EFI/BOOT/grubx64.efi", &grub_bytes, mtime)?;
        put(&esp, &format!("{GRUB_DIR}/grub.cfg"), cfg.as_bytes(), mtime)?;
        put(&esp, "live/vmlinuz", vmlinuz, mtime)?;
        put(&esp, "live/initramfs.img", initramfs, mtime)?;
        let content =
            (shim_bytes.len() + grub_bytes.len() + vmlinuz.len() + initramfs.len() + cfg.len())
                as u64;
        // A quarter spare for kernel updates and the FAT, whole MiB.
        let esp_len = (content + content / 4 + 4 * MIB)
            .div_ceil(MIB)
            .max(MIN_ESP / MIB)
            * MIB;
        let esp_img = stage_dir.join("esp.img");
        stage::fat_image(
            &esp,
            &esp_img,
            &stage::Fat {
                volume_id: &format!("{:08x}", derived_u32(opts.sde, "esp volume id")),
                label: ESP_LABEL,
                size_kib: esp_len / 1024,
                fat32: true,
                sde: opts.sde,
            },
        )?;

        let data_img = stage_dir.join("data.img");
        if let Some((fs, len)) = opts.data {
            make_data_fs(&data_img, fs, len, Some(opts.sde))?;
        }

        // Assemble.
        let (table, size) = table(esp_len, opts.data, opts.sde);
        let tmp = stage_dir.join("usb.img");
        let img = File::create(&tmp).map_err(|e| Error::io("creating", &tmp, e))?;
        img.set_len(size)
            .map_err(|e| Error::io("sizing", &tmp, e))?;
        for w in gpt_writes(&table, size, &boot)? {
            img.write_all_at(&w.data, w.offset)
                .map_err(|e| Error::io("writing", &tmp, e))?;
        }
        img.write_all_at(&core, BIOS_BOOT_LBA * SECTOR)
            .map_err(|e| Error::io("writing", &tmp, e))?;
        let open = |p: &Path| File::open(p).map_err(|e| Error::io("opening", p, e));
        splice(&open(&esp_img)?, &img, MIB, &esp_img)?;
        if let Some(p) = table.partitions.iter().find(|p| p.number == DATA_NUMBER) {
            splice(&open(&data_img)?, &img, p.start, &data_img)?;
        }
        img.sync_all().map_err(|e| Error::io("writing", &tmp, e))?;
        drop(img);
        fs::rename(&tmp, out).map_err(|e| Error::io("renaming into place", out, e))?;
        Ok(Built { size, table })
    })();
    let _ = fs::remove_dir_all(&stage_dir);
    result
}

/// The sectors of `table` on a disk of `size` bytes, with `boot` (GRUB's
/// boot.img) as the MBR's boot code and the protective entry marked active.
pub fn gpt_writes(
    table: &PartitionTable,
    size: u64,
    boot: &[u8],
) -> Result<Vec<imaging::part::SectorWrite>> {
    let mut writes = imaging::part::serialize(table, size, Some(boot))?;
    for w in writes.iter_mut().filter(|w| w.offset == 0) {
        if w.data.len() >= 512 && w.data[446 + 4] == 0xee {
            w.data[446] = 0x80;
        }
    }
    Ok(writes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layout_is_aligned_and_fits() {
        let (t, size) = table(64 * MIB, Some((DataFs::Exfat, DEFAULT_DATA_SIZE)), 0);
        assert_eq!(size, (1 + 64 + 32 + 1) * MIB);
        let esp = t
            .partitions
            .iter()
            .find(|p| p.number == ESP_NUMBER)
            .expect("esp");
        assert_eq!((esp.start, esp.len), (MIB, 64 * MIB));
        let data = t
            .partitions
            .iter()
            .find(|p| p.number == DATA_NUMBER)
            .expect("data");
        assert_eq!(data.start % MIB, 0);
        assert_eq!(data.ptype, PartType::Gpt(guids::MS_BASIC_DATA.into()));
        let boot = vec![0u8; 512];
        let w = gpt_writes(&t, size, &boot).expect("valid table");
        let mbr = &w.iter().find(|w| w.offset == 0).expect("sector 0").data;
        assert_eq!(
            (mbr[446], mbr[450], mbr[510], mbr[511]),
            (0x80, 0xee, 0x55, 0xaa)
        );
        // Read back: the same partitions.
        let mut disk = vec![0u8; size as usize];
        for x in &w {
            disk[x.offset as usize..][..x.data.len()].copy_from_slice(&x.data);
        }
        let back = imaging::part::read(&disk, size, 512)
            .expect("reads")
            .expect("a table");
        assert_eq!(back.partitions.len(), 3);
        assert_eq!(back.disk_id, t.disk_id);
        assert!(back.warnings.is_empty(), "{:?}", back.warnings);
        let (t2, _) = table(64 * MIB, None, 0);
        assert_eq!(t2.partitions.len(), 2);
    }

    #[test]
    fn guids_are_stable_per_epoch_and_valid() {
        let a = derived_guid(1_700_000_000, "disk");
        assert_eq!(a, derived_guid(1_700_000_000, "disk"));
        assert_ne!(a, derived_guid(1_700_000_001, "disk"));
        assert_ne!(a, derived_guid(1_700_000_000, "partition 1"));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }

    #[test]
    fn detects_data_filesystems() {
        let mut b = vec![0u8; 4096];
        assert_eq!(DataFs::detect(&b, 0), None);
        b[1024 + 56] = 0x53;
        b[1024 + 57] = 0xef;
        assert_eq!(DataFs::detect(&b, 0), Some(DataFs::Ext4));
        b[3..11].copy_from_slice(b"EXFAT   ");
        assert_eq!(DataFs::detect(&b, 0), Some(DataFs::Exfat));
        assert_eq!(DataFs::detect(&b, 4000), None);
    }
}
