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
//!
//! optional, with [`Arm64`] (a live system built for arm64 elsewhere):
//! vmlinuz-arm64, initrd-arm64.img     the arm64 live system
//! snp-arm64.efi [ipxe-arm64.efi]      UEFI arm64 -> iPXE (iPXE's bin-arm64-efi/snp.efi
//!                          and ipxe.efi; Debian 12's ipxe package has no arm64 build)
//! boot.ipxe                then branches on ${buildarch} to the arm64 files
//! ```
//!
//! `pxe-server` serves each client the kernel of its own architecture and
//! refuses one whose kernel is missing. An operator can also add the arm64
//! files to an existing bundle by hand: copy them in, and add to
//! `manifest.json` `"kernel_arm64"`, `"initrd_arm64"` and, under
//! `"loaders"`, `"uefi_arm64_snp"` and/or `"uefi_arm64"` (paths relative to
//! the bundle); entries in `"files"` are optional, their sizes are checked.

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
    /// arm64 live system, when the bundle has one (see [`Arm64`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel_arm64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_arm64: Option<String>,
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
    /// Arch 11 (UEFI arm64) and 19 (its HTTP boot): iPXE with its own
    /// drivers, and over the firmware's SNP driver (preferred when both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uefi_arm64: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uefi_arm64_snp: Option<String>,
}

/// An arm64 live system and iPXE for arm64 UEFI, added to the bundle as
/// `vmlinuz-arm64`, `initrd-arm64.img`, `snp-arm64.efi` / `ipxe-arm64.efi`.
/// This builder does not build arm64 itself: the files come from an arm64
/// build of the live system and of iPXE.
#[derive(Debug, Clone, Copy)]
pub struct Arm64<'a> {
    pub kernel: &'a [u8],
    pub initrd: &'a [u8],
    /// iPXE `bin-arm64-efi/snp.efi`: uses the firmware's NIC driver, so it
    /// runs on any arm64 UEFI machine (iPXE has few arm64 NIC drivers).
    pub snp: &'a [u8],
    /// iPXE `bin-arm64-efi/ipxe.efi` (its own NIC drivers), optional.
    pub ipxe: Option<&'a [u8]>,
}

/// Bundle names of the arm64 files (`pxe-server`'s well-known names).
pub const ARM64_KERNEL: &str = "vmlinuz-arm64";
pub const ARM64_INITRD: &str = "initrd-arm64.img";
pub const ARM64_SNP: &str = "snp-arm64.efi";
pub const ARM64_IPXE: &str = "ipxe-arm64.efi";

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
    write_bundle_with(
        out,
        cache,
        kernel_version,
        vmlinuz,
        initramfs,
        cmdline,
        sde,
        None,
    )
}

/// [`write_bundle`], with an arm64 live system too when `arm64` is given.
#[allow(clippy::too_many_arguments)]
pub fn write_bundle_with(
    out: &Path,
    cache: &Cache,
    kernel_version: &str,
    vmlinuz: &[u8],
    initramfs: &[u8],
    cmdline: &str,
    sde: u32,
    arm64: Option<&Arm64<'_>>,
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
    let boot = |k: &str, i: &str| {
        format!(
            "kernel {k} initrd={i} {cmdline} BOOTIF=01-${{netX/mac:hexhyp}}\ninitrd {i}\nboot\n"
        )
    };
    // iPXE says its own architecture: an arm64 iPXE takes the arm64 files.
    let ipxe_script = match arm64 {
        None => format!("#!ipxe\n{}", boot("vmlinuz", "initramfs.img")),
        Some(_) => format!(
            "#!ipxe\niseq ${{buildarch}} arm64 && goto arm64 ||\n{}:arm64\n{}",
            boot("vmlinuz", "initramfs.img"),
            boot(ARM64_KERNEL, ARM64_INITRD)
        ),
    };
    let mut files: Vec<(&str, Vec<u8>)> = vec![
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
    if let Some(a) = arm64 {
        files.push((ARM64_KERNEL, a.kernel.to_vec()));
        files.push((ARM64_INITRD, a.initrd.to_vec()));
        files.push((ARM64_SNP, a.snp.to_vec()));
        if let Some(l) = a.ipxe {
            files.push((ARM64_IPXE, l.to_vec()));
        }
    }
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
        kernel_arm64: arm64.map(|_| ARM64_KERNEL.into()),
        initrd_arm64: arm64.map(|_| ARM64_INITRD.into()),
        cmdline: cmdline.to_string(),
        loaders: Loaders {
            bios: "undionly.kpxe".into(),
            uefi_x64: "ipxe.efi".into(),
            uefi_x64_snp: "snponly.efi".into(),
            uefi_x64_secure_boot: "shimx64.efi".into(),
            uefi_x64_secure_boot_grub: "grubx64.efi".into(),
            uefi_arm64: arm64.and_then(|a| a.ipxe).map(|_| ARM64_IPXE.into()),
            uefi_arm64_snp: arm64.map(|_| ARM64_SNP.into()),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A package cache holding already unpacked stand-ins for the loader
    /// packages, so the bundle is written offline.
    fn fake_cache(dir: &Path) -> Cache {
        for (pkg, files) in [
            (
                "ipxe",
                &[
                    "usr/lib/ipxe/undionly.kpxe",
                    "usr/lib/ipxe/ipxe.efi",
                    "usr/lib/ipxe/snponly.efi",
                ][..],
            ),
            ("shim-signed", &["usr/lib/shim/shimx64.efi.signed"][..]),
            (
                "grub-efi-amd64-signed",
                &["usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed"][..],
            ),
        ] {
            std::fs::create_dir_all(dir.join("debs")).expect("mkdir");
            std::fs::write(dir.join(format!("debs/{pkg}_1_all.deb")), b"").expect("deb");
            let root = dir.join(format!("unpacked/{pkg}_1_all"));
            for f in files {
                let p = root.join(f);
                std::fs::create_dir_all(p.parent().expect("parent")).expect("mkdir");
                std::fs::write(&p, f.as_bytes()).expect("write");
            }
            std::fs::write(root.join(".complete"), b"").expect("marker");
        }
        Cache::new(dir)
    }

    #[test]
    fn arm64_files_and_roles_only_when_given() {
        let t = tempfile::tempdir().expect("tempdir");
        let cache = fake_cache(&t.path().join("cache"));
        let x86 = t.path().join("x86");
        let m = write_bundle(&x86, &cache, "6.1.0-1-amd64", b"k", b"i", "quiet", 0).expect("x86");
        let json = std::fs::read_to_string(x86.join("manifest.json")).expect("manifest");
        // Bundles without arm64 keep the manifest as it was.
        assert!(!json.contains("arm64"), "{json}");
        assert!(m.kernel_arm64.is_none() && m.loaders.uefi_arm64_snp.is_none());
        assert!(!std::fs::read_to_string(x86.join("boot.ipxe"))
            .expect("script")
            .contains("buildarch"));

        let both = t.path().join("both");
        let arm = Arm64 {
            kernel: b"arm-kernel",
            initrd: b"arm-initrd",
            snp: b"snp",
            ipxe: None,
        };
        let m = write_bundle_with(
            &both,
            &cache,
            "6.1.0-1-amd64",
            b"k",
            b"i",
            "quiet",
            0,
            Some(&arm),
        )
        .expect("x86 + arm64");
        assert_eq!(m.kernel_arm64.as_deref(), Some("vmlinuz-arm64"));
        assert_eq!(m.initrd_arm64.as_deref(), Some("initrd-arm64.img"));
        assert_eq!(m.loaders.uefi_arm64_snp.as_deref(), Some("snp-arm64.efi"));
        assert_eq!(m.loaders.uefi_arm64, None);
        for (name, data) in [
            ("vmlinuz-arm64", &b"arm-kernel"[..]),
            ("initrd-arm64.img", b"arm-initrd"),
            ("snp-arm64.efi", b"snp"),
        ] {
            assert_eq!(
                std::fs::read(both.join(name)).expect("read"),
                data,
                "{name}"
            );
            assert!(
                m.files
                    .iter()
                    .any(|f| f.name == name && f.size == data.len() as u64),
                "{name}"
            );
        }
        assert!(!both.join("ipxe-arm64.efi").exists());
        let json = std::fs::read_to_string(both.join("manifest.json")).expect("manifest");
        let back: Manifest = serde_json::from_str(&json).expect("parse");
        assert_eq!(back.kernel_arm64.as_deref(), Some("vmlinuz-arm64"));
        let sums = std::fs::read_to_string(both.join("SHA256SUMS")).expect("sums");
        assert!(sums.contains("  vmlinuz-arm64\n"), "{sums}");
        let script = std::fs::read_to_string(both.join("boot.ipxe")).expect("script");
        assert!(
            script.starts_with("#!ipxe\niseq ${buildarch} arm64 && goto arm64 ||\nkernel vmlinuz ")
                && script.contains(":arm64\nkernel vmlinuz-arm64 initrd=initrd-arm64.img quiet ")
                && script.ends_with("initrd initrd-arm64.img\nboot\n"),
            "{script}"
        );
    }
}
