//! Real firmware PXE clients: qemu with SeaBIOS + the iPXE NIC ROM, OVMF
//! with its own UEFI network stack, and OVMF with Secure Boot enforced
//! (Microsoft keys enrolled), in network namespaces with a bridge and tap
//! devices, booting Debian's signed kernel plus a tiny initramfs (a static C
//! program, tests/pxe/init.c) whose /init prints a marker and the kernel
//! command line on the serial console and powers off.
//!
//! One test boots every scenario at once (the clients are what costs: TCG
//! on two cores), each in its own namespace with its own pxe-server:
//!
//! - `full`: quick form (`--kernel/--initrd`, loaders from Debian's
//!   packages), full DHCP: SeaBIOS, OVMF, and OVMF Secure Boot (shim ->
//!   signed GRUB -> signed kernel, with a per-MAC job on its command line);
//! - `proxy`: quick form beside a plain dnsmasq as the existing DHCP server
//!   (`--port=0` and a `--dhcp-range`; busybox udhcpd when dnsmasq is not
//!   installed), proxyDHCP, default policy: the iPXE menu times out into
//!   the rescue system: SeaBIOS, OVMF;
//! - `bundle`: `--bundle` written by image-builder's own PXE bundle writer
//!   (manifest.json, `initramfs.img`, loaders from the .debs), proxyDHCP
//!   beside a dnsmasq whose next-server (siaddr) is pxe-server
//!   (`--dhcp-boot=,,IP`), which is what signed GRUB 2.06 needs to find its
//!   server: SeaBIOS and OVMF Secure Boot.
//!
//! By default 8 clients boot at once: 4 in `full`, 2 in each of the others.
//! `PXE_QEMU_CLIENTS=N` boots N clients in `full` (alternating SeaBIOS and
//! OVMF) besides the Secure Boot one; `PXE_QEMU_SCENARIOS=full,bundle`
//! picks scenarios; `PXE_QEMU_TIMEOUT=SECONDS` overrides the time limit.
//!
//! Needs root, qemu-system-x86, ipxe-qemu, ovmf, ipxe, shim-signed,
//! grub-efi-amd64-signed, gcc, dnsmasq-base (or busybox), a kernel (`scripts/pxe-test-kernel`),
//! and image-builder's package cache (it runs `apt-get download` once).
//! TCG is used when /sys/module/kvm_pvm exists (that nested hypervisor
//! cannot run OVMF or a stock kernel), KVM otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const MARKER: &str = "PXE-RESCUE-MARKER-7f3a";
const SERVER_IP: &str = "10.91.0.1";
const SERVER_URL: &str = "rescue.server=http://10.91.0.1:8080";
/// Job of the Secure Boot client in `full`: proves that the per-MAC GRUB
/// config (served over TFTP) reached the kernel command line.
const SB_JOB: &str = "restore lab.img to /dev/sda then poweroff";
const SB_JOB_ARGS: &str = "rescue.job=restore rescue.image=lab.img rescue.disk=/dev/sda";

fn find_kernel() -> PathBuf {
    if let Some(k) = std::env::var_os("PXE_TEST_KERNEL") {
        return k.into();
    }
    for dir in ["/boot", "/var/tmp/pxe-kernel/x/boot"] {
        if let Ok(rd) = std::fs::read_dir(dir) {
            let mut v: Vec<PathBuf> = rd
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-"))
                })
                .collect();
            v.sort();
            if let Some(k) = v.pop() {
                return k;
            }
        }
    }
    // Otherwise Debian's stock kernel through image-builder's package cache
    // (the same one the boot-media tests use; fetched once, never installed).
    let cache = image_builder::deb::Cache::new(image_builder::default_cache_dir());
    let tree = cache
        .kernel_package("linux-image-amd64")
        .and_then(|pkg| cache.package(&pkg))
        .unwrap_or_else(|e| {
            panic!("no kernel found ({e}): set PXE_TEST_KERNEL, or run scripts/pxe-test-kernel (downloads Debian's linux-image without installing it)")
        });
    let mut v: Vec<PathBuf> = std::fs::read_dir(tree.join("boot"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("vmlinuz-")))
        .collect();
    v.sort();
    v.pop().unwrap_or_else(|| panic!("no vmlinuz-* in {}/boot", tree.display()))
}

/// newc cpio (the initramfs format, see the kernel's
/// Documentation/driver-api/early-userspace/buffer-format.rst).
fn cpio_entry(out: &mut Vec<u8>, ino: u32, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
    let hdr = format!(
        "070701{ino:08x}{mode:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
        0, 0, 1, 0, data.len(), 0, 0, rdev.0, rdev.1, name.len() + 1, 0
    );
    out.extend_from_slice(hdr.as_bytes());
    out.extend_from_slice(name.as_bytes());
    out.push(0);
    while out.len() & 3 != 0 {
        out.push(0);
    }
    out.extend_from_slice(data);
    while out.len() & 3 != 0 {
        out.push(0);
    }
}

fn build_initramfs(tmp: &Path, path: &Path) {
    require("gcc", "gcc libc6-dev");
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/pxe/init.c");
    let bin = tmp.join("init");
    sh(&[
        "gcc",
        "-static",
        "-Os",
        "-s",
        &format!("-DMARKER=\"{MARKER}\""),
        "-o",
        bin.to_str().expect("utf8"),
        src.to_str().expect("utf8"),
    ]);
    let init = std::fs::read(&bin).expect("read init");
    let mut out = Vec::new();
    cpio_entry(&mut out, 1, "dev", 0o040755, (0, 0), b"");
    cpio_entry(&mut out, 2, "dev/console", 0o020600, (5, 1), b"");
    cpio_entry(&mut out, 3, "proc", 0o040755, (0, 0), b"");
    cpio_entry(&mut out, 4, "init", 0o100755, (0, 0), &init);
    cpio_entry(&mut out, 0, "TRAILER!!!", 0, (0, 0), b"");
    std::fs::write(path, out).expect("write initramfs");
}

/// A PXE bundle written by image-builder's writer (the one `image-builder
/// pxe` calls), from the test kernel and initramfs: manifest.json,
/// `initramfs.img` (not `initrd.img`), iPXE, shim and GRUB from the .debs.
fn write_image_builder_bundle(dir: &Path, kernel: &Path, initrd: &Path) {
    let version = kernel
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.strip_prefix("vmlinuz-"))
        .unwrap_or("test");
    let cache = image_builder::deb::Cache::new(image_builder::default_cache_dir());
    let m = image_builder::pxe::write_bundle(
        dir,
        &cache,
        version,
        &std::fs::read(kernel).expect("read kernel"),
        &std::fs::read(initrd).expect("read initrd"),
        // Only in the manifest: the server must pass it on.
        "console=ttyS0 panic=-1 bundle.cmdline=from-manifest",
        1_700_000_000,
    )
    .unwrap_or_else(|e| {
        panic!(
            "image-builder could not write the PXE bundle: {e} (hint: {})",
            e.hint().unwrap_or_else(|| "see the error".into())
        )
    });
    assert_eq!(
        m.initrd, "initramfs.img",
        "the test relies on the renamed initrd"
    );
}

fn has_tool(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}

fn accel() -> &'static str {
    if Path::new("/sys/module/kvm_pvm").exists() || !Path::new("/dev/kvm").exists() {
        "tcg"
    } else {
        "kvm"
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Firmware {
    SeaBios,
    Ovmf,
    /// OVMF_CODE_4M.secboot.fd with the Microsoft keys (OVMF_VARS_4M.ms.fd).
    OvmfSecureBoot,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Dhcp {
    Full,
    /// proxyDHCP beside dnsmasq (or busybox udhcpd); `next_server_is_us`
    /// sets that server's next-server (siaddr) to pxe-server's address.
    Proxy {
        next_server_is_us: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Files {
    /// `--kernel --initrd`, loaders from the installed Debian packages.
    Quick,
    /// `--bundle` written by image-builder.
    Bundle,
}

struct Scenario {
    name: &'static str,
    dhcp: Dhcp,
    files: Files,
    /// Policy `default` action.
    default_action: &'static str,
    clients: Vec<Firmware>,
}

fn mac(scenario: usize, idx: usize) -> String {
    format!("52:54:00:42:{scenario:02x}:{idx:02x}")
}

struct Vm {
    proc: Proc,
    serial: PathBuf,
    fw: Firmware,
    name: String,
}

fn start_vm(ns: &Netns, tmp: &Path, idx: usize, mac: &str, fw: Firmware, bridge: &str) -> Vm {
    let tap = format!("tap{idx}");
    ns.exec(&["ip", "tuntap", "add", "dev", &tap, "mode", "tap"]);
    ns.exec(&["ip", "link", "set", &tap, "master", bridge]);
    ns.exec(&["ip", "link", "set", &tap, "up"]);
    let serial = tmp.join(format!("serial{idx}.log"));
    let machine = match fw {
        // SMM keeps the variable store out of reach of the OS, as Secure
        // Boot requires (OVMF's secboot build refuses to start without it).
        Firmware::OvmfSecureBoot => format!("q35,smm=on,accel={}", accel()),
        _ => format!("q35,accel={}", accel()),
    };
    let mut args: Vec<String> = vec![
        "qemu-system-x86_64".into(),
        "-machine".into(),
        machine,
        "-m".into(),
        "512".into(),
        "-display".into(),
        "none".into(),
        "-monitor".into(),
        "none".into(),
        "-serial".into(),
        format!("file:{}", serial.display()),
        "-no-reboot".into(),
        "-netdev".into(),
        format!("tap,id=n0,ifname={tap},script=no,downscript=no"),
        "-boot".into(),
        "n".into(),
    ];
    let (code, vars) = match fw {
        Firmware::SeaBios => (None, None),
        Firmware::Ovmf => (
            Some("/usr/share/OVMF/OVMF_CODE_4M.fd"),
            Some("/usr/share/OVMF/OVMF_VARS_4M.fd"),
        ),
        Firmware::OvmfSecureBoot => (
            Some("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd"),
            Some("/usr/share/OVMF/OVMF_VARS_4M.ms.fd"),
        ),
    };
    match (code, vars) {
        (Some(code), Some(vars_src)) => {
            let vars = tmp.join(format!("vars{idx}.fd"));
            std::fs::copy(vars_src, &vars)
                .unwrap_or_else(|e| panic!("copying {vars_src} ({e}): apt-get install -y ovmf"));
            if fw == Firmware::OvmfSecureBoot {
                args.extend([
                    "-global".into(),
                    "driver=cfi.pflash01,property=secure,value=on".into(),
                ]);
            }
            args.extend([
                "-drive".into(),
                format!("if=pflash,format=raw,unit=0,readonly=on,file={code}"),
                "-drive".into(),
                format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
                "-device".into(),
                // romfile="": OVMF's own virtio-net driver and PXE stack.
                format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
            ]);
        }
        _ => {
            args.push("-device".into());
            args.push(format!("virtio-net-pci,netdev=n0,mac={mac}"));
        }
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = Proc::spawn(ns.cmd(&refs), &tmp.join(format!("qemu{idx}.log")), "qemu");
    Vm {
        proc,
        serial,
        fw,
        name: format!("{fw:?} vm {idx} ({mac})"),
    }
}

/// The last `n` lines of a serial log, without terminal escape sequences
/// (OVMF and GRUB draw menus).
fn tail(path: &Path, n: usize) -> String {
    let raw = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    let mut s = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            s.push(c);
        }
    }
    let lines: Vec<&str> = s.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// What the serial console must show for `fw` in `sc`; `None` once it does.
fn missing_on_console(serial: &str, fw: Firmware, sc: &Scenario) -> Option<&'static str> {
    let Some(at) = serial.find(&format!("{MARKER} cmdline:")) else {
        return Some("the marker");
    };
    let cmdline = serial[at..].lines().next().unwrap_or("");
    if !cmdline.contains(SERVER_URL) {
        return Some("rescue.server= on the kernel command line");
    }
    if sc.files == Files::Bundle && !cmdline.contains("bundle.cmdline=from-manifest") {
        return Some("the manifest's cmdline on the kernel command line");
    }
    if fw == Firmware::OvmfSecureBoot {
        if !serial.contains("secureboot: Secure boot enabled")
            || !serial.contains("Kernel is locked down from EFI Secure Boot")
        {
            return Some("the kernel's \"Secure boot enabled\" and lockdown lines");
        }
        // Loaded by GRUB from this server (iPXE would not say BOOT_IMAGE=(tftp,..)).
        if !cmdline.contains(&format!("BOOT_IMAGE=(tftp,{SERVER_IP})/vmlinuz")) {
            return Some("BOOT_IMAGE=(tftp,server)/vmlinuz (loaded by GRUB)");
        }
        if sc.name == "full" && !cmdline.contains(SB_JOB_ARGS) {
            return Some("the client's job from its own GRUB config");
        }
    }
    None
}

struct Ready {
    kernel: PathBuf,
    initrd: PathBuf,
}

/// Boots the clients of one scenario at once; `Ok` lists the times to
/// marker, `Err` says what failed with the serial and server log tails.
fn run_scenario(idx: usize, sc: &Scenario, ready: &Ready) -> Result<Vec<String>, String> {
    let tmp = tempfile::tempdir().expect("tempdir");
    let ns = Netns::new(&tag(&format!("pq{}", sc.name)));
    let br = "br0";
    ns.exec(&["ip", "link", "add", br, "type", "bridge"]);
    ns.exec(&["ip", "addr", "add", "10.91.0.1/24", "dev", br]);
    ns.exec(&["ip", "link", "set", br, "up"]);
    // The "existing" DHCP server: a plain dnsmasq (busybox udhcpd where
    // dnsmasq is not installed) in its own namespace (a second address in
    // this one would clash on port 67), joined to the bridge by a veth pair.
    let _dhcp_ns;
    let _existing;
    let mut probe_wait = "1.5";
    if let Dhcp::Proxy { next_server_is_us } = sc.dhcp {
        let dns = Netns::new(&tag(&format!("pd{}", sc.name)));
        let (inner, outer) = ("vdhcp", "vdhcpbr");
        veth(&dns, inner, "10.91.0.2/24", &ns, outer, "");
        ns.exec(&["ip", "link", "set", outer, "master", br]);
        let p = if has_tool("dnsmasq") {
            // dnsmasq pings an address (up to 3 s) before offering it: the
            // start-up probe must wait longer than that.
            probe_wait = "5";
            let mut args = vec![
                "dnsmasq".to_string(),
                "--no-daemon".into(),
                "--conf-file=/dev/null".into(),
                "--port=0".into(),
                "--dhcp-range=10.91.0.100,10.91.0.150,255.255.255.0,10m".into(),
                format!("--dhcp-leasefile={}", tmp.path().join("dnsmasq.leases").display()),
                "--log-dhcp".into(),
                "--log-facility=-".into(),
            ];
            if next_server_is_us {
                args.push(format!("--dhcp-boot=,,{SERVER_IP}"));
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            let mut p = Proc::spawn(dns.cmd(&refs), &tmp.path().join("dnsmasq.log"), "dnsmasq");
            p.wait_for("DHCP, IP range", Duration::from_secs(10));
            p
        } else {
            let conf = tmp.path().join("udhcpd.conf");
            let siaddr = if next_server_is_us {
                format!("siaddr {SERVER_IP}\n")
            } else {
                String::new()
            };
            std::fs::write(
                &conf,
                format!(
                    "start 10.91.0.100\nend 10.91.0.150\ninterface {inner}\nlease_file {}\noption subnet 255.255.255.0\n{siaddr}",
                    tmp.path().join("udhcpd.leases").display()
                ),
            )
            .expect("conf");
            std::fs::write(tmp.path().join("udhcpd.leases"), b"").expect("leases");
            let mut u = Proc::spawn(
                dns.cmd(&[
                    "busybox",
                    "udhcpd",
                    "-f",
                    "-a",
                    "100",
                    conf.to_str().expect("utf8"),
                ]),
                &tmp.path().join("udhcpd.log"),
                "udhcpd",
            );
            u.wait_for("started", Duration::from_secs(5));
            u
        };
        eprintln!("{}: the existing DHCP server is {}", sc.name, p.what);
        _existing = Some(p);
        _dhcp_ns = Some(dns);
    } else {
        _existing = None;
        _dhcp_ns = None;
    }

    let macs: Vec<String> = (0..sc.clients.len()).map(|i| mac(idx, i + 1)).collect();
    let mut policy = format!("default = \"{}\"\n", sc.default_action);
    for (m, fw) in macs.iter().zip(&sc.clients) {
        if *fw == Firmware::OvmfSecureBoot {
            policy.push_str(&format!("[clients.\"{m}\"]\nsecure_boot = true\n"));
            if sc.name == "full" {
                policy.push_str(&format!("job = \"{SB_JOB}\"\n"));
            }
        }
    }
    let policy_file = tmp.path().join("policy.toml");
    std::fs::write(&policy_file, policy).expect("policy");
    let leases = tmp.path().join("leases.json");
    let bundle = tmp.path().join("bundle");
    let (k, i) = (
        ready.kernel.to_str().expect("utf8").to_string(),
        ready.initrd.to_str().expect("utf8").to_string(),
    );
    let mut args = vec![
        server_bin(),
        "--interface",
        br,
        "--policy",
        policy_file.to_str().expect("utf8"),
        "--probe-wait",
        probe_wait,
        "--lease-file",
        leases.to_str().expect("utf8"),
    ];
    match sc.files {
        Files::Quick => args.extend([
            "--kernel",
            &k,
            "--initrd",
            &i,
            "--cmdline",
            "console=ttyS0 panic=-1",
        ]),
        Files::Bundle => {
            std::fs::create_dir(&bundle).expect("mkdir");
            write_image_builder_bundle(&bundle, &ready.kernel, &ready.initrd);
            args.extend(["--bundle", bundle.to_str().expect("utf8")]);
        }
    }
    match sc.dhcp {
        Dhcp::Full => args.extend(["--mode", "full", "--range", "10.91.0.160-10.91.0.220"]),
        Dhcp::Proxy { .. } => args.extend(["--mode", "proxy"]),
    }
    // PXE_QEMU_NO_RA=1 measures the boot without IPv6 router advertisements.
    if std::env::var_os("PXE_QEMU_NO_RA").is_some() {
        args.push("--no-ipv6-ra");
    }
    let mut cmd = ns.cmd(&args);
    cmd.env("RUST_LOG", "info");
    let mut server = Proc::spawn(cmd, &tmp.path().join("server.log"), "pxe-server");
    server.wait_for("pxe-server ready", Duration::from_secs(30));
    if sc.dhcp
        == (Dhcp::Proxy {
            next_server_is_us: true,
        })
    {
        let log = server.log_text();
        if !log.contains("next-server is this server") {
            return Err(format!(
                "{}: pxe-server did not see the DHCP server's next-server:\n{log}",
                sc.name
            ));
        }
    }

    let t0 = Instant::now();
    let mut vms: Vec<Vm> = sc
        .clients
        .iter()
        .enumerate()
        .map(|(n, fw)| start_vm(&ns, tmp.path(), n + 1, &macs[n], *fw, br))
        .collect();
    let mut times: Vec<Option<Duration>> = vec![None; vms.len()];
    // Generous: every scenario's clients share two cores under TCG.
    let limit = std::env::var("PXE_QEMU_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(if accel() == "tcg" {
            420
        } else {
            150
        }));
    while t0.elapsed() < limit && times.iter().any(Option::is_none) {
        for (n, vm) in vms.iter_mut().enumerate() {
            if times[n].is_none() {
                let s = String::from_utf8_lossy(&std::fs::read(&vm.serial).unwrap_or_default())
                    .into_owned();
                if missing_on_console(&s, vm.fw, sc).is_none() {
                    times[n] = Some(t0.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut failures = String::new();
    let mut report = Vec::new();
    for (n, vm) in vms.iter().enumerate() {
        match times[n] {
            Some(t) => report.push(format!(
                "{} {}: marker after {:.1} s",
                sc.name,
                vm.name,
                t.as_secs_f64()
            )),
            None => {
                let s = String::from_utf8_lossy(&std::fs::read(&vm.serial).unwrap_or_default())
                    .into_owned();
                failures.push_str(&format!(
                    "\n{} ({}, {:?}, {:?}): {} not on the serial console within {limit:?}; serial tail:\n{}\nqemu log:\n{}\n",
                    vm.name,
                    sc.name,
                    sc.dhcp,
                    sc.files,
                    missing_on_console(&s, vm.fw, sc).unwrap_or("?"),
                    tail(&vm.serial, 30),
                    vm.proc.log_text()
                ))
            }
        }
    }
    if !failures.is_empty() {
        return Err(format!(
            "{failures}\n{} server log tail:\n{}",
            sc.name,
            tail(&server.log, 40)
        ));
    }
    let status = ns.exec(&[server_bin(), "status"]);
    for m in &macs {
        if !status.contains(m.as_str()) {
            return Err(format!(
                "{}: {m} missing from `pxe-server status`:\n{status}",
                sc.name
            ));
        }
    }
    // One client in detail: what it was served (its firmware's loader first).
    if let Some(m) = macs.first() {
        let one = ns.exec(&[server_bin(), "status", "--client", m.as_str()]);
        if !(one.contains(m.as_str()) && one.contains("served: ") && one.lines().count() >= 3) {
            return Err(format!("{}: `pxe-server status --client {m}`:\n{one}", sc.name));
        }
    }
    Ok(report)
}

/// Clients of `full`: 3 (SeaBIOS, OVMF, SeaBIOS) unless PXE_QEMU_CLIENTS
/// says otherwise (alternating firmware), plus the Secure Boot client: with
/// the 2 + 2 of the other scenarios, the 8 clients at once.
fn full_clients() -> Vec<Firmware> {
    let n: usize = std::env::var("PXE_QEMU_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3)
        .clamp(1, 16);
    let mut v: Vec<Firmware> = (0..n)
        .map(|i| {
            if i % 2 == 0 {
                Firmware::SeaBios
            } else {
                Firmware::Ovmf
            }
        })
        .collect();
    v.push(Firmware::OvmfSecureBoot);
    v
}

#[test]
fn firmware_clients_boot_in_full_proxy_and_bundle_scenarios() {
    require_root();
    require("qemu-system-x86_64", "qemu-system-x86");
    if !has_tool("dnsmasq") {
        require("busybox", "dnsmasq-base (or busybox)");
    }
    for (f, p) in [
        ("/usr/lib/ipxe/snponly.efi", "ipxe"),
        ("/usr/lib/ipxe/undionly.kpxe", "ipxe"),
        ("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu"),
        ("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf"),
        ("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd", "ovmf"),
        ("/usr/share/OVMF/OVMF_VARS_4M.ms.fd", "ovmf"),
        ("/usr/lib/shim/shimx64.efi.signed", "shim-signed"),
        (
            "/usr/lib/grub/x86_64-efi-signed/grubnetx64.efi.signed",
            "grub-efi-amd64-signed",
        ),
    ] {
        assert!(
            Path::new(f).is_file(),
            "{f} missing: apt-get install -y {p}"
        );
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let ready = Ready {
        kernel: find_kernel(),
        initrd: tmp.path().join("initrd.img"),
    };
    build_initramfs(tmp.path(), &ready.initrd);

    let all = [
        Scenario {
            name: "full",
            dhcp: Dhcp::Full,
            files: Files::Quick,
            default_action: "rescue",
            clients: full_clients(),
        },
        Scenario {
            name: "proxy",
            dhcp: Dhcp::Proxy {
                next_server_is_us: false,
            },
            files: Files::Quick,
            default_action: "menu",
            clients: vec![Firmware::SeaBios, Firmware::Ovmf],
        },
        Scenario {
            name: "bundle",
            dhcp: Dhcp::Proxy {
                next_server_is_us: true,
            },
            files: Files::Bundle,
            default_action: "rescue",
            clients: vec![Firmware::SeaBios, Firmware::OvmfSecureBoot],
        },
    ];
    let only = std::env::var("PXE_QEMU_SCENARIOS").ok();
    let chosen: Vec<(usize, &Scenario)> = all
        .iter()
        .enumerate()
        .filter(|(_, s)| {
            only.as_deref()
                .is_none_or(|o| o.split(',').any(|n| n == s.name))
        })
        .collect();
    assert!(
        !chosen.is_empty(),
        "PXE_QEMU_SCENARIOS={only:?} names no scenario"
    );
    let t0 = Instant::now();
    let results: Vec<Result<Vec<String>, String>> = std::thread::scope(|s| {
        let handles: Vec<_> = chosen
            .iter()
            .map(|(i, sc)| {
                let ready = &ready;
                s.spawn(move || run_scenario(*i, sc, ready))
            })
            .collect();
        handles
            .into_iter()
            .zip(&chosen)
            .map(|(h, (_, sc))| {
                h.join().unwrap_or_else(|p| {
                    let msg = p
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                        .unwrap_or_default();
                    Err(format!("{}: {msg}", sc.name))
                })
            })
            .collect()
    });
    let mut failures = Vec::new();
    for r in results {
        match r {
            Ok(lines) => lines.iter().for_each(|l| eprintln!("{l}")),
            Err(e) => failures.push(e),
        }
    }
    eprintln!(
        "{} scenarios ({}) in {:.1} s",
        chosen.len(),
        accel(),
        t0.elapsed().as_secs_f64()
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
