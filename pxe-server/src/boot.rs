//! Who gets what: firmware detection from DHCP options 93 / 60 / 77 / 175 and
//! the choice of the first file to serve (RFC 4578 architecture types).
//!
//! Chains:
//! - BIOS PXE ROM (0) -> `undionly.kpxe` over TFTP -> iPXE -> HTTP script.
//! - UEFI x64 (7, 9) -> `snponly.efi` (or `ipxe.efi`) -> iPXE -> HTTP script;
//!   with Secure Boot requested: `shimx64.efi` -> `grubx64.efi` (signed) ->
//!   `grub/grub.cfg` -> `grub/<mac>.cfg` -> signed kernel, all over TFTP.
//!   Shim finds its server in a proxyDHCP offer, but Debian's GRUB 2.06 reads
//!   only the DHCP server's ACK: its `siaddr` (next-server) must be this
//!   server. That holds in full mode, and under proxyDHCP when the existing
//!   DHCP server sets next-server to us (checked at start); otherwise Secure
//!   Boot clients are chained to iPXE and a warning says why.
//! - UEFI HTTP boot (16 / vendor class `HTTPClient`) -> iPXE binary by URL.
//! - iPXE itself (user class `iPXE` or option 175) -> script URL.
//! - arm64 UEFI (11, HTTP 19) -> `snp-arm64.efi` (or `ipxe-arm64.efi`) ->
//!   iPXE -> HTTP script naming `vmlinuz-arm64` / `initrd-arm64.img`.
//! - Anything else is refused with the reason.
//!
//! A client is only told to boot when the bundle holds the live system of its
//! architecture ([`Arch::kernel_arch`]): an arm64 client next to an x86-64
//! only bundle (or the reverse) is refused at DHCP time with the missing
//! files named, never handed a loader that would fetch a foreign kernel.

use std::net::Ipv4Addr;

use crate::bundle::{names, Bundle, KernelArch};
use crate::dhcp::Packet;
use crate::mac::Mac;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Bios,
    UefiX64,
    UefiX64Http,
    UefiArm64,
    UefiArm64Http,
    Other(u16),
}

impl Arch {
    pub fn from_code(c: u16) -> Arch {
        match c {
            0 => Arch::Bios,
            7 | 9 => Arch::UefiX64,
            16 => Arch::UefiX64Http,
            11 => Arch::UefiArm64,
            19 => Arch::UefiArm64Http,
            o => Arch::Other(o),
        }
    }

    /// The live system this firmware runs; `None` for architectures the
    /// server does not serve.
    pub fn kernel_arch(self) -> Option<KernelArch> {
        match self {
            Arch::Bios | Arch::UefiX64 | Arch::UefiX64Http => Some(KernelArch::X86_64),
            Arch::UefiArm64 | Arch::UefiArm64Http => Some(KernelArch::Arm64),
            Arch::Other(_) => None,
        }
    }
}

/// RFC 4578 / IANA names, for log lines about refused clients.
pub fn arch_name(code: u16) -> &'static str {
    match code {
        0 => "x86 BIOS",
        1 => "NEC/PC98",
        2 => "Itanium EFI",
        3 => "DEC Alpha",
        4 => "Arc x86",
        5 => "Intel Lean Client",
        6 => "x86 UEFI (32-bit)",
        7 | 9 => "x64 UEFI",
        8 => "Xscale EFI",
        10 => "ARM 32-bit UEFI",
        11 => "ARM 64-bit UEFI",
        12 | 13 => "PowerPC",
        14 => "PowerPC ePAPR",
        15 => "x86 UEFI HTTP (32-bit)",
        16 => "x64 UEFI HTTP",
        18 => "ARM 32-bit UEFI HTTP",
        19 => "ARM 64-bit UEFI HTTP",
        22..=25 => "RISC-V UEFI",
        _ => "unassigned",
    }
}

/// What the DHCP request says about the client's firmware.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub arch_code: u16,
    pub arch: Arch,
    /// Running iPXE already (user class "iPXE" or option 175).
    pub ipxe: bool,
    /// UEFI HTTP boot client (vendor class "HTTPClient").
    pub http_client: bool,
}

impl Detected {
    pub fn describe(&self) -> String {
        let mut s = format!("{} ({})", arch_name(self.arch_code), self.arch_code);
        if self.ipxe {
            s.push_str(" iPXE");
        }
        if self.http_client {
            s.push_str(" HTTPClient");
        }
        s
    }
}

/// Reads option 93, falling back to the `Arch:NNNNN` part of option 60
/// (`PXEClient:Arch:00007:UNDI:003016`), then to BIOS (PXE 2.0 ROMs).
pub fn detect(p: &Packet) -> Detected {
    let vc = p.vendor_class().unwrap_or_default();
    let from_vc = vc
        .split(':')
        .skip_while(|s| *s != "Arch")
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok());
    let arch_code = p.client_arch().or(from_vc).unwrap_or(0);
    let ipxe = p.option(175).is_some() || p.user_classes().iter().any(|c| c == "iPXE");
    Detected {
        arch_code,
        arch: Arch::from_code(arch_code),
        ipxe,
        http_client: vc.starts_with("HTTPClient"),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpMode {
    Proxy,
    Full,
}

/// Everything the decision depends on besides the request.
pub struct BootContext<'a> {
    pub mode: DhcpMode,
    /// GRUB will find this server: full mode, or the existing DHCP server's
    /// next-server is this server (see the module doc).
    pub grub_finds_server: bool,
    pub server_ip: Ipv4Addr,
    pub http_port: u16,
    pub bundle: &'a Bundle,
    /// The policy asks for the Secure Boot chain for this client.
    pub secure_boot: bool,
    pub mac: Mac,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BootAction {
    /// Put this file name in the reply; the client fetches it over TFTP.
    Tftp {
        file: String,
    },
    /// Put this URL in the reply (iPXE script, UEFI HTTP boot).
    Http {
        url: String,
    },
    Refuse {
        reason: String,
    },
}

impl BootAction {
    pub fn describe(&self) -> String {
        match self {
            BootAction::Tftp { file } => format!("tftp {file}"),
            BootAction::Http { url } => url.clone(),
            BootAction::Refuse { reason } => format!("refused: {reason}"),
        }
    }
}

/// URL of the generated iPXE script for `mac`.
///
/// It ends in `?arch=${buildarch}`, which iPXE expands before fetching (it
/// expands settings in the DHCP filename), so the request says which iPXE
/// build asks: `i386`/`x86_64` or `arm64`. That is the binary that will load
/// the kernel, so it cannot disagree with it, and it still holds after a
/// server restart (the per-MAC architecture remembered at DHCP time is
/// lost) or for an iPXE chained by hand. The remembered architecture is the
/// fallback when the query is missing or was not expanded (see
/// `HttpContext::script_arch`). An in-script `iseq ${buildarch}` branch
/// would work too, but then the server could not refuse a client whose
/// kernel is missing, nor log which kernel it handed out.
pub fn script_url(server_ip: Ipv4Addr, port: u16, mac: Mac) -> String {
    format!(
        "http://{server_ip}:{port}/boot/{}.ipxe?arch=${{buildarch}}",
        mac.dashed()
    )
}

pub fn decide(d: &Detected, ctx: &BootContext<'_>) -> BootAction {
    let has = |n: &str| ctx.bundle.has(n);
    let http = |file: &str| format!("http://{}:{}/{file}", ctx.server_ip, ctx.http_port);
    // Never point a client at a loader or script whose kernel is not its own.
    if let Some(ka) = d.arch.kernel_arch() {
        let missing = ctx.bundle.missing_live_system(ka);
        if !missing.is_empty() {
            let others: Vec<String> = KernelArch::ALL
                .into_iter()
                .filter(|o| *o != ka && ctx.bundle.missing_live_system(*o).is_empty())
                .map(|o| o.to_string())
                .collect();
            let holds = if others.is_empty() {
                String::new()
            } else {
                format!(
                    "; it holds only the {} one, which this client cannot run",
                    others.join(", ")
                )
            };
            return BootAction::Refuse {
                reason: format!(
                    "{} client but the bundle has no {ka} live system (missing {}){holds}",
                    arch_name(d.arch_code),
                    missing.join(", ")
                ),
            };
        }
    }
    if d.ipxe {
        return BootAction::Http {
            url: script_url(ctx.server_ip, ctx.http_port, ctx.mac),
        };
    }
    let uefi_ipxe = |a: KernelArch| a.uefi_loaders().into_iter().find(|n| has(n));
    let x64_ipxe = uefi_ipxe(KernelArch::X86_64);
    let arm64_ipxe = uefi_ipxe(KernelArch::Arm64);
    let no_arm64_ipxe = || {
        format!(
            "the bundle has neither {} nor {}",
            names::SNP_ARM64,
            names::IPXE_ARM64
        )
    };
    match (d.arch, d.http_client) {
        (Arch::UefiX64Http, _) | (Arch::UefiX64, true) => match x64_ipxe {
            Some(f) => BootAction::Http { url: http(f) },
            None => BootAction::Refuse {
                reason: "x64 UEFI HTTP client but the bundle has neither snponly.efi nor ipxe.efi"
                    .into(),
            },
        },
        (Arch::UefiArm64Http, _) | (Arch::UefiArm64, true) => match arm64_ipxe {
            Some(f) => BootAction::Http { url: http(f) },
            None => BootAction::Refuse {
                reason: format!("arm64 UEFI HTTP client but {}", no_arm64_ipxe()),
            },
        },
        (Arch::Bios, _) => {
            if has(names::UNDIONLY) {
                BootAction::Tftp {
                    file: names::UNDIONLY.into(),
                }
            } else {
                BootAction::Refuse {
                    reason: format!("BIOS client but the bundle has no {}", names::UNDIONLY),
                }
            }
        }
        (Arch::UefiX64, false) => {
            let chain = has(names::SHIM) && has(names::GRUB);
            if ctx.secure_boot && ctx.grub_finds_server && chain {
                return BootAction::Tftp {
                    file: names::SHIM.into(),
                };
            }
            if ctx.secure_boot {
                tracing::warn!(
                    mac = %ctx.mac,
                    reason = if chain {
                        "proxyDHCP and the DHCP server's next-server is not this server: GRUB would not find it"
                    } else {
                        "bundle has no shimx64.efi + grubx64.efi"
                    },
                    "secure boot chain not used, chaining to iPXE (boots only with Secure Boot off)"
                );
            }
            match x64_ipxe {
                Some(f) => BootAction::Tftp { file: f.into() },
                None => BootAction::Refuse {
                    reason: "x64 UEFI client but the bundle has neither snponly.efi nor ipxe.efi"
                        .into(),
                },
            }
        }
        (Arch::UefiArm64, false) => match arm64_ipxe {
            Some(f) => BootAction::Tftp { file: f.into() },
            None => BootAction::Refuse {
                reason: format!("arm64 UEFI client but {}", no_arm64_ipxe()),
            },
        },
        (Arch::Other(c), _) => BootAction::Refuse {
            reason: format!(
                "client architecture {c} ({}) is not supported: only x86 BIOS, x64 UEFI and arm64 UEFI are",
                arch_name(c)
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dhcp::packet::{Packet, BOOTREQUEST};

    fn req(arch: Option<u16>, vc: &str, uc: Option<&str>) -> Packet {
        let mut p = Packet {
            op: BOOTREQUEST,
            htype: 1,
            hlen: 6,
            hops: 0,
            xid: 1,
            secs: 0,
            flags: 0,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            giaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: [0; 16],
            sname: vec![],
            file: vec![],
            options: vec![],
        };
        p.set_option(53, vec![1]);
        if let Some(a) = arch {
            p.set_option(93, a.to_be_bytes().to_vec());
        }
        p.set_option(60, vc.as_bytes().to_vec());
        if let Some(u) = uc {
            p.set_option(77, u.as_bytes().to_vec());
        }
        p
    }

    fn bundle(files: &[&str]) -> (tempfile::TempDir, Bundle) {
        let t = tempfile::tempdir().expect("tempdir");
        for f in files {
            std::fs::write(t.path().join(f), b"x").expect("write");
        }
        let b = Bundle::unchecked(t.path()).expect("bundle");
        (t, b)
    }

    fn ctx(b: &Bundle, mode: DhcpMode, sb: bool) -> BootContext<'_> {
        BootContext {
            mode,
            grub_finds_server: mode == DhcpMode::Full,
            server_ip: Ipv4Addr::new(10, 0, 0, 1),
            http_port: 8080,
            bundle: b,
            secure_boot: sb,
            mac: Mac([0x52, 0x54, 0, 0, 0, 1]),
        }
    }

    #[test]
    fn firmware_matrix() {
        let (_t, b) = bundle(&[
            "vmlinuz",
            "initrd.img",
            "undionly.kpxe",
            "snponly.efi",
            "shimx64.efi",
            "grubx64.efi",
        ]);
        let full = ctx(&b, DhcpMode::Full, false);
        let tftp = |f: &str| BootAction::Tftp { file: f.into() };
        let pxe = "PXEClient:Arch:00000:UNDI:002001";
        assert_eq!(
            decide(&detect(&req(Some(0), pxe, None)), &full),
            tftp("undionly.kpxe")
        );
        assert_eq!(
            decide(&detect(&req(Some(7), "PXEClient", None)), &full),
            tftp("snponly.efi")
        );
        assert_eq!(
            decide(&detect(&req(Some(9), "PXEClient", None)), &full),
            tftp("snponly.efi")
        );
        // Arch from the vendor class when option 93 is missing.
        assert_eq!(
            decide(
                &detect(&req(None, "PXEClient:Arch:00007:UNDI:003016", None)),
                &full
            ),
            tftp("snponly.efi")
        );
        assert_eq!(
            decide(
                &detect(&req(Some(16), "HTTPClient:Arch:00016", None)),
                &full
            ),
            BootAction::Http {
                url: "http://10.0.0.1:8080/snponly.efi".into()
            }
        );
        assert_eq!(
            decide(&detect(&req(Some(0), pxe, Some("iPXE"))), &full),
            BootAction::Http {
                url: "http://10.0.0.1:8080/boot/52-54-00-00-00-01.ipxe?arch=${buildarch}".into()
            }
        );
        // Secure Boot: shim in full mode, iPXE under proxyDHCP.
        let sb_full = ctx(&b, DhcpMode::Full, true);
        let sb_proxy = ctx(&b, DhcpMode::Proxy, true);
        assert_eq!(
            decide(&detect(&req(Some(7), "PXEClient", None)), &sb_full),
            tftp("shimx64.efi")
        );
        assert_eq!(
            decide(&detect(&req(Some(7), "PXEClient", None)), &sb_proxy),
            tftp("snponly.efi")
        );
        // Under proxyDHCP when the DHCP server's next-server is us: shim.
        let sb_proxy_next = BootContext {
            grub_finds_server: true,
            ..ctx(&b, DhcpMode::Proxy, true)
        };
        assert_eq!(
            decide(&detect(&req(Some(7), "PXEClient", None)), &sb_proxy_next),
            tftp("shimx64.efi")
        );
        // arm64 only when the bundle has it; unknown archs refused with the name.
        assert!(matches!(
            decide(&detect(&req(Some(11), "PXEClient", None)), &full),
            BootAction::Refuse { .. }
        ));
        match decide(&detect(&req(Some(2), "PXEClient", None)), &full) {
            BootAction::Refuse { reason } => assert!(reason.contains("Itanium"), "{reason}"),
            other => panic!("{other:?}"),
        }
    }

    fn refusal(a: BootAction) -> String {
        match a {
            BootAction::Refuse { reason } => reason,
            other => panic!("not refused: {other:?}"),
        }
    }

    #[test]
    fn arm64_gets_arm64_files_only() {
        let arm = detect(&req(Some(11), "PXEClient:Arch:00011:UNDI:003000", None));
        let arm_http = detect(&req(Some(19), "HTTPClient:Arch:00019", None));
        let arm_ipxe = detect(&req(Some(11), "PXEClient", Some("iPXE")));
        let x64 = detect(&req(Some(7), "PXEClient", None));
        let bios_ipxe = detect(&req(Some(0), "PXEClient", Some("iPXE")));
        assert_eq!(arm.arch.kernel_arch(), Some(KernelArch::Arm64));
        assert_eq!(Arch::Other(2).kernel_arch(), None);
        let tftp = |f: &str| BootAction::Tftp { file: f.into() };
        let script = BootAction::Http {
            url: "http://10.0.0.1:8080/boot/52-54-00-00-00-01.ipxe?arch=${buildarch}".into(),
        };

        // Both live systems: each architecture gets its own loader (SNP
        // first, as for x64), iPXE of either gets the script.
        let (_t, b) = bundle(&[
            "vmlinuz",
            "initrd.img",
            "undionly.kpxe",
            "ipxe.efi",
            "vmlinuz-arm64",
            "initrd-arm64.img",
            "ipxe-arm64.efi",
            "snp-arm64.efi",
        ]);
        let c = ctx(&b, DhcpMode::Proxy, false);
        assert_eq!(decide(&arm, &c), tftp("snp-arm64.efi"));
        assert_eq!(
            decide(&arm_http, &c),
            BootAction::Http {
                url: "http://10.0.0.1:8080/snp-arm64.efi".into()
            }
        );
        assert_eq!(decide(&arm_ipxe, &c), script);
        assert_eq!(decide(&x64, &c), tftp("ipxe.efi"));
        assert_eq!(decide(&bios_ipxe, &c), script);
        let (_t, b) = bundle(&["vmlinuz-arm64", "initrd-arm64.img", "ipxe-arm64.efi"]);
        assert_eq!(
            decide(&arm, &ctx(&b, DhcpMode::Full, false)),
            tftp("ipxe-arm64.efi")
        );

        // An arm64 loader but no arm64 kernel: refused, never the x86 one.
        let (_t, b) = bundle(&[
            "vmlinuz",
            "initrd.img",
            "undionly.kpxe",
            "snponly.efi",
            "ipxe-arm64.efi",
        ]);
        let c = ctx(&b, DhcpMode::Full, false);
        let want = "ARM 64-bit UEFI client but the bundle has no arm64 live system \
                    (missing vmlinuz-arm64, initrd-arm64.img); it holds only the x86-64 one, \
                    which this client cannot run";
        assert_eq!(refusal(decide(&arm, &c)), want);
        assert_eq!(refusal(decide(&arm_ipxe, &c)), want);
        assert!(refusal(decide(&arm_http, &c)).starts_with("ARM 64-bit UEFI HTTP client"));
        assert_eq!(decide(&x64, &c), tftp("snponly.efi"));
        // The kernel but no loader: the loaders are named.
        let (_t, b) = bundle(&["vmlinuz-arm64", "initrd-arm64.img"]);
        assert_eq!(
            refusal(decide(&arm, &ctx(&b, DhcpMode::Full, false))),
            "arm64 UEFI client but the bundle has neither snp-arm64.efi nor ipxe-arm64.efi"
        );

        // The reverse: only arm64 files, x86-64 clients are refused.
        let (_t, b) = bundle(&[
            "vmlinuz-arm64",
            "initrd-arm64.img",
            "snp-arm64.efi",
            "undionly.kpxe",
        ]);
        let c = ctx(&b, DhcpMode::Full, false);
        assert_eq!(
            refusal(decide(&x64, &c)),
            "x64 UEFI client but the bundle has no x86-64 live system (missing vmlinuz, \
             initrd.img); it holds only the arm64 one, which this client cannot run"
        );
        assert!(refusal(decide(&bios_ipxe, &c)).starts_with("x86 BIOS client but"));
        assert_eq!(decide(&arm, &c), tftp("snp-arm64.efi"));
    }
}
