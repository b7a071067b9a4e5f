//! The hybrid ISO: boots from CD and, written with `dd`, from a USB stick;
//! BIOS through El Torito + GRUB (i386-pc), UEFI through an appended FAT ESP
//! (isohybrid MBR + GPT) holding Debian's Microsoft-signed shim and
//! Debian-signed GRUB (`gcdx64`), which boots Debian's signed kernel: the
//! Secure Boot chain shim -> GRUB -> kernel.
//!
//! Built without root by `grub-mkimage` (from the cached `grub-common`
//! package), `mkfs.vfat` + `mcopy` (dosfstools, mtools) and `xorriso`,
//! reproducibly: fixed FAT volume id and `--invariant`, every timestamp set
//! to `SOURCE_DATE_EPOCH`, xorriso told the same date for its UUIDs.
//!
//! Layout: `/live/{vmlinuz,initramfs.img}`, `/boot/grub/{grub.cfg,bios.img}`,
//! `/.disk/info` (how the signed `gcdx64` finds the ISO: it searches for that
//! file, then reads `/boot/grub/grub.cfg`). Deliberately not done: the
//! `mmx64.efi` MOK manager (package shim-helpers-amd64-signed) — not
//! needed, since every link of the chain is signed by keys shim trusts.

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::deb::Cache;
use crate::stage::{self, put, read_pkg, run, set_dir_mtimes};
use crate::{Error, Result};

/// Modules built into the BIOS core image (also the USB image's).
pub(crate) const BIOS_MODULES: &[&str] = &[
    "biosdisk",
    "iso9660",
    "part_msdos",
    "part_gpt",
    "fat",
    "normal",
    "configfile",
    "linux",
    "echo",
    "search",
    "search_fs_file",
    "serial",
    "terminal",
    "test",
    "all_video",
    "gzio",
    "minicmd",
    "ls",
    "cat",
];

/// The GRUB menu, shared by BIOS and UEFI and by the ISO and the USB image.
/// `append` goes on every kernel line.
pub fn grub_cfg(append: &str) -> String {
    let extra = if append.is_empty() {
        String::new()
    } else {
        format!(" {append}")
    };
    format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input console serial\n\
         terminal_output console serial\n\
         set timeout=3\n\
         set default=0\n\
         menuentry 'rescue' {{\n\
         \tlinux /live/vmlinuz console=ttyS0,115200n8 console=tty0{extra}\n\
         \tinitrd /live/initramfs.img\n\
         }}\n\
         menuentry 'rescue (serial console)' {{\n\
         \tlinux /live/vmlinuz console=tty0 console=ttyS0,115200n8{extra}\n\
         \tinitrd /live/initramfs.img\n\
         }}\n\
         menuentry 'rescue (network: DHCP)' {{\n\
         \tlinux /live/vmlinuz console=ttyS0,115200n8 console=tty0 rescue.net=dhcp{extra}\n\
         \tinitrd /live/initramfs.img\n\
         }}\n\
         menuentry 'rescue (shell)' {{\n\
         \tlinux /live/vmlinuz console=ttyS0,115200n8 console=tty0 rescue.shell{extra}\n\
         \tinitrd /live/initramfs.img\n\
         }}\n"
    )
}

/// UTC `YYYYMMDDhhmmss00` for xorriso's `--modification-date`.
fn xorriso_date(epoch: u32) -> String {
    let (y, m, d, h, min, s) = imaging::civil::utc_parts(u64::from(epoch));
    format!("{y:04}{m:02}{d:02}{h:02}{min:02}{s:02}00")
}

/// Build the ISO at `out` from the kernel and initramfs bytes.
pub fn write(
    out: &Path,
    cache: &Cache,
    vmlinuz: &[u8],
    initramfs: &[u8],
    append: &str,
    sde: u32,
) -> Result<()> {
    let grub_pc = cache.package("grub-pc-bin")?;
    let grub_common = cache.package("grub-common")?;
    let grub_efi = cache.package("grub-efi-amd64-signed")?;
    let shim = cache.package("shim-signed")?;
    let mtime = stage::mtime(sde);
    let dir = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let stage = dir.join(format!(".iso-stage.{}", std::process::id()));
    let _ = fs::remove_dir_all(&stage);
    let root = stage.join("root");
    let result = (|| {
        put(&root, "live/vmlinuz", vmlinuz, mtime)?;
        put(&root, "live/initramfs.img", initramfs, mtime)?;
        put(
            &root,
            "boot/grub/grub.cfg",
            grub_cfg(append).as_bytes(),
            mtime,
        )?;
        put(&root, ".disk/info", b"rescue live system\n", mtime)?;

        // BIOS: El Torito core image with the modules built in.
        let bios_img = root.join("boot/grub/bios.img");
        run(
            Command::new(grub_common.join("usr/bin/grub-mkimage"))
                .arg("-d")
                .arg(grub_pc.join("usr/lib/grub/i386-pc"))
                .args(["-O", "i386-pc-eltorito", "-p", "/boot/grub", "-o"])
                .arg(&bios_img)
                .args(BIOS_MODULES),
            "grub-common",
        )?;
        stage::set_mtime(&bios_img, mtime)?;

        // UEFI: the ESP image.
        let efi = stage.join("efi");
        let shim_bytes = read_pkg(&shim, "usr/lib/shim/shimx64.efi.signed", "shim-signed")?;
        let grub_bytes = read_pkg(
            &grub_efi,
            "usr/lib/grub/x86_64-efi-signed/gcdx64.efi.signed",
            "grub-efi-amd64-signed",
        )?;
        put(&efi, "EFI/BOOT/BOOTX64.EFI", &shim_bytes, mtime)?;
        put(&efi, "EFI/BOOT/grubx64.efi", &grub_bytes, mtime)?;
        put(
            &efi,
            "EFI/BOOT/grub.cfg",
            grub_cfg(append).as_bytes(),
            mtime,
        )?;
        let kib = ((shim_bytes.len() + grub_bytes.len()) / 1024 + 1024).div_ceil(1024) * 1024;
        let efi_img = stage.join("efi.img");
        stage::fat_image(
            &efi,
            &efi_img,
            &stage::Fat {
                volume_id: "52455343",
                label: "RESCUE_ESP",
                size_kib: kib as u64,
                fat32: false,
                sde,
            },
        )?;

        // The hybrid image.
        set_dir_mtimes(&root, mtime)?;
        let tmp_iso = stage.join("out.iso");
        run(
            Command::new("xorriso")
                .args(["-as", "mkisofs", "-r", "-J", "-V", "RESCUE", "-o"])
                .arg(&tmp_iso)
                .arg("--grub2-mbr")
                .arg(grub_pc.join("usr/lib/grub/i386-pc/boot_hybrid.img"))
                .args(["-partition_offset", "16", "--mbr-force-bootable"])
                .args(["-append_partition", "2", "0xef"])
                .arg(&efi_img)
                .args(["-appended_part_as_gpt", "-c", "boot/boot.cat"])
                .args([
                    "-b",
                    "boot/grub/bios.img",
                    "-no-emul-boot",
                    "-boot-load-size",
                    "4",
                    "-boot-info-table",
                    "--grub2-boot-info",
                ])
                .args([
                    "-eltorito-alt-boot",
                    "-e",
                    "--interval:appended_partition_2:all::",
                    "-no-emul-boot",
                ])
                .arg(format!("--modification-date={}", xorriso_date(sde)))
                .args(["--set_all_file_dates", &format!("={sde}")])
                .arg(&root)
                .env("SOURCE_DATE_EPOCH", sde.to_string()),
            "xorriso",
        )?;
        fs::rename(&tmp_iso, out).map_err(|e| Error::io("renaming into place", out, e))
    })();
    let _ = fs::remove_dir_all(&stage);
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xorriso_dates() {
        assert_eq!(xorriso_date(0), "1970010100000000");
        assert_eq!(xorriso_date(1_700_000_000), "2023111422132000");
        assert_eq!(xorriso_date(951_782_400), "2000022900000000");
    }

    #[test]
    fn grub_cfg_appends_to_every_entry() {
        let c = grub_cfg("rescue.run=disks");
        assert_eq!(c.matches("rescue.run=disks").count(), 4);
        assert!(c.contains("rescue.net=dhcp"));
        assert!(c.contains("initrd /live/initramfs.img"));
    }
}
