//! image-builder's writer and pxe-server's reader agree on the arm64 roles
//! of `manifest.json`: a bundle written with an arm64 live system serves
//! arm64 clients its loader and kernel, and x86-64 clients theirs. Offline:
//! the loader packages are stand-ins in a scratch package cache.

use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, RwLock};

use image_builder::deb::Cache;
use image_builder::pxe::{write_bundle, write_bundle_with, Arm64};
use pxe_server::boot::{decide, Arch, BootAction, BootContext, Detected, DhcpMode};
use pxe_server::bundle::{Bundle, KernelArch};
use pxe_server::clients::Registry;
use pxe_server::http::HttpContext;
use pxe_server::mac::Mac;
use pxe_server::policy::Policy;

/// Unpacked stand-ins for the packages `image-builder pxe` copies from.
fn fake_cache(dir: &Path) -> Cache {
    for (pkg, files) in [
        (
            "ipxe",
            &["undionly.kpxe", "ipxe.efi", "snponly.efi"].map(|f| format!("usr/lib/ipxe/{f}"))[..],
        ),
        (
            "shim-signed",
            &["usr/lib/shim/shimx64.efi.signed".to_string()][..],
        ),
        (
            "grub-efi-amd64-signed",
            &["usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed".to_string()][..],
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

fn client(code: u16, ipxe: bool) -> Detected {
    Detected {
        arch_code: code,
        arch: Arch::from_code(code),
        ipxe,
        http_client: false,
    }
}

fn decide_in(b: &Bundle, d: &Detected) -> BootAction {
    decide(
        d,
        &BootContext {
            mode: DhcpMode::Full,
            grub_finds_server: true,
            server_ip: Ipv4Addr::new(10, 0, 0, 1),
            http_port: 8080,
            bundle: b,
            secure_boot: false,
            mac: Mac([0x52, 0x54, 0, 0, 0, 1]),
        },
    )
}

fn http(b: Bundle) -> HttpContext {
    HttpContext {
        bundle: Arc::new(b),
        policy: Arc::new(RwLock::new(Policy::default())),
        registry: Arc::new(Registry::default()),
        server_ip: Ipv4Addr::new(10, 0, 0, 1),
        port: 8080,
        cmdline: String::new(),
        images: None,
    }
}

#[test]
fn image_builder_bundle_with_arm64_serves_each_architecture_its_kernel() {
    let t = tempfile::tempdir().expect("tempdir");
    let cache = fake_cache(&t.path().join("cache"));
    let tftp = |f: &str| BootAction::Tftp { file: f.into() };
    let mac = Mac([0x52, 0x54, 0, 0, 0, 1]);

    let dir = t.path().join("both");
    let arm = Arm64 {
        kernel: b"arm64 kernel",
        initrd: b"arm64 initrd",
        snp: b"snp",
        ipxe: Some(b"ipxe"),
    };
    write_bundle_with(
        &dir,
        &cache,
        "6.1.0-1-amd64",
        b"k",
        b"i",
        "quiet",
        0,
        Some(&arm),
    )
    .expect("write");
    let b = Bundle::open_dir(&dir).expect("open");
    assert!(b.partial().is_empty(), "{:?}", b.partial());
    assert_eq!(decide_in(&b, &client(11, false)), tftp("snp-arm64.efi"));
    assert_eq!(decide_in(&b, &client(7, false)), tftp("snponly.efi"));
    assert_eq!(decide_in(&b, &client(0, false)), tftp("undionly.kpxe"));
    assert_eq!(
        std::fs::read(b.resolve("vmlinuz-arm64").expect("arm64 kernel")).expect("read"),
        b"arm64 kernel"
    );
    let h = http(b);
    h.registry.dhcp(
        mac,
        "ARM 64-bit UEFI (11)",
        Some(KernelArch::Arm64),
        "tftp snp-arm64.efi",
        None,
    );
    let s = h.ipxe_script(mac, None);
    assert!(
        s.contains(
            "kernel http://10.0.0.1:8080/vmlinuz-arm64 initrd=initrd-arm64.img rescue.server="
        ),
        "{s}"
    );
    let s = h.ipxe_script(mac, Some("x86_64"));
    assert!(
        s.contains("kernel http://10.0.0.1:8080/vmlinuz initrd=initrd.img rescue.server="),
        "{s}"
    );

    // Without arm64 files, arm64 clients are refused with the reason.
    let dir = t.path().join("x86");
    write_bundle(&dir, &cache, "6.1.0-1-amd64", b"k", b"i", "quiet", 0).expect("write");
    let b = Bundle::open_dir(&dir).expect("open");
    match decide_in(&b, &client(11, true)) {
        BootAction::Refuse { reason } => {
            assert!(
                reason.contains("missing vmlinuz-arm64, initrd-arm64.img"),
                "{reason}"
            )
        }
        other => panic!("arm64 not refused: {other:?}"),
    }
    let h = http(b);
    let s = h.ipxe_script(mac, Some("arm64"));
    assert!(
        !s.contains("kernel ") && s.contains("no arm64 live system"),
        "{s}"
    );
}
