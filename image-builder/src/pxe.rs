//! The PXE bundle: one directory to serve over TFTP/HTTP as it is, with the
//! kernel, the initramfs, the network loaders from Debian's packages, boot
//! scripts for iPXE and GRUB, and `manifest.json` for `pxe-server`.
//!
//! ```text
//! vmlinuz, initramfs.img   the live system
//! undionly.kpxe            BIOS PXE  -> iPXE (package ipxe)
//! ipxe.efi, snponly.efi    UEFI x64  -> iPXE (package ipxe; not signed: Secure Boot off)
//! shimx64.efi              UEFI x64 with Secure Boot: Microsoft-signed shim (shim-signed)
//! grubx64.efi              Debian-signed GRUB for the network (grub-efi-amd64-signed
//!                          grubnetx64), loaded by shim from the same directory;
//!                          its prefix is /grub, so it reads grub/grub.cfg
//! grub/grub.cfg            linux + initrd from the same server
//! boot.ipxe                iPXE script: kernel + initrd relative to the script's URL
//!                          (both pass `BOOTIF=01-MAC` of the booting NIC: rescue-init
//!                          brings that one up with DHCP)
//! manifest.json            see [`Manifest`]
//! SHA256SUMS
//! ```

use std::path::Path;

use crate::deb::Cache;
use crate::report::{sha256_hex, Output};
use crate::{Error, Result};

/// Format version of `manifest.json`; bumped on incompatible changes.
pub const MANIFEST_VERSION: u32 = 1;

/// `manifest.json`: what `pxe-server` needs to boot clients from the bundle.
/// All paths are relative to the bundle directory (= the TFTP/HTTP root).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Manifest {
    /// Always `rescue-pxe-bundle`.
    pub format: String,
    pub version: u32,
    pub kernel_version: String,
    pub kernel: String,
    pub initrd: String,
    /// Kernel command line to pass; the server appends its own
    /// `rescue.server=HOST[:PORT]` and, per client, `rescue.job=ID`.
    pub cmdline: String,
    pub loaders: Loaders,
    /// iPXE script that boots kernel + initrd with `cmdline`.
    pub ipxe_script: String,
    /// GRUB configuration read by `loaders.uefi_x64_secure_boot_grub`.
    pub grub_cfg: String,
    pub source_date_epoch: u32,
    /// Every file of the bundle except the manifest itself.
    pub files: Vec<Output>,
}

/// Boot file per client firmware (DHCP option 93 client architecture).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Loaders {
    /// Arch 0 (BIOS PXE): chain-loads iPXE.
    pub bios: String,
    /// Arch 7/9 (UEFI x64) with Secure Boot off: iPXE.
    pub uefi_x64: String,
    /// Like `uefi_x64`, using the firmware's network driver (SNP only).
    pub uefi_x64_snp: String,
    /// Arch 7/9 and 16 (HTTP boot) with Secure Boot on: shim, which then
    /// fetches `uefi_x64_secure_boot_grub` from the same directory.
    pub uefi_x64_secure_boot: String,
    pub uefi_x64_secure_boot_grub: String,
}

/// Default command line of network-booted clients.
pub const DEFAULT_CMDLINE: &str = "console=tty0 console=ttyS0,115200n8";

fn copy_from(root: &Path, rel: &str, package: &str) -> Result<Vec<u8>> {
    let p = root.join(rel);
    std::fs::read(&p).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::Missing {
            what: format!("{rel} of package {package}"),
            path: p,
            package: Some(package.into()),
        },
        _ => Error::io("reading", &p, e),
    })
}

/// Write the bundle into `out` from an already built kernel and initramfs.
pub fn write_bundle(
    out: &Path,
    cache: &Cache,
    kernel_version: &str,
    vmlinuz: &[u8],
    initramfs: &[u8],
    cmdline: &str,
    sde: u32,
) -> Result<Manifest> {
    let ipxe = cache.package("ipxe")?;
    let shim = cache.package("shim-signed")?;
    let grub = cache.package("grub-efi-amd64-signed")?;
    // BOOTIF names the NIC the machine booted from, so rescue-init runs
    // DHCP on that one (GRUB and iPXE fill in the MAC address).
    let grub_cfg = format!(
        "set timeout=0\n\
         menuentry 'rescue' {{\n\
         \tlinux /vmlinuz {cmdline} BOOTIF=01-${{net_default_mac}}\n\
         \tinitrd /initramfs.img\n\
         }}\n"
    );
    let ipxe_script = format!(
        "#!ipxe\nkernel vmlinuz initrd=initramfs.img {cmdline} BOOTIF=01-${{netX/mac:hexhyp}}\ninitrd initramfs.img\nboot\n"
    );
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("vmlinuz", vmlinuz.to_vec()),
        ("initramfs.img", initramfs.to_vec()),
        (
            "undionly.kpxe",
            copy_from(&ipxe, "usr/lib/ipxe/undionly.kpxe", "ipxe")?,
        ),
        (
            "ipxe.efi",
            copy_from(&ipxe, "usr/lib/ipxe/ipxe.efi", "ipxe")?,
        ),
        (
            "snponly.efi",
            copy_from(&ipxe, "usr/lib/ipxe/snponly.efi", "ipxe")?,
        ),
        (
            "shimx64.efi",
            copy_from(&shim, "usr/lib/shim/shimx64.efi.signed", "shim-signed")?,
        ),
        (
            "grubx64.efi",
            copy_from(
                &grub,
                "usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
                "grub-efi-amd64-signed",
            )?,
        ),
        ("grub/grub.cfg", grub_cfg.into_bytes()),
        ("boot.ipxe", ipxe_script.into_bytes()),
    ];
    let mut outputs = Vec::new();
    for (name, data) in &files {
        crate::write_atomic(&out.join(name), data)?;
        outputs.push(Output {
            name: name.to_string(),
            size: data.len() as u64,
            sha256: sha256_hex(data),
        });
    }
    outputs.sort_by(|a, b| a.name.cmp(&b.name));
    let manifest = Manifest {
        format: "rescue-pxe-bundle".into(),
        version: MANIFEST_VERSION,
        kernel_version: kernel_version.to_string(),
        kernel: "vmlinuz".into(),
        initrd: "initramfs.img".into(),
        cmdline: cmdline.to_string(),
        loaders: Loaders {
            bios: "undionly.kpxe".into(),
            uefi_x64: "ipxe.efi".into(),
            uefi_x64_snp: "snponly.efi".into(),
            uefi_x64_secure_boot: "shimx64.efi".into(),
            uefi_x64_secure_boot_grub: "grubx64.efi".into(),
        },
        ipxe_script: "boot.ipxe".into(),
        grub_cfg: "grub/grub.cfg".into(),
        source_date_epoch: sde,
        files: outputs.clone(),
    };
    let json = serde_json::to_vec_pretty(&manifest).map_err(|e| {
        Error::io(
            "serializing",
            &out.join("manifest.json"),
            std::io::Error::other(e),
        )
    })?;
    crate::write_atomic(&out.join("manifest.json"), &json)?;
    let sums: String = outputs
        .iter()
        .map(|o| format!("{}  {}\n", o.sha256, o.name))
        .collect();
    crate::write_atomic(&out.join("SHA256SUMS"), sums.as_bytes())?;
    Ok(manifest)
}
