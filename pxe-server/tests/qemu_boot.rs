//! Real firmware PXE clients: qemu with SeaBIOS + the iPXE NIC ROM, and OVMF
//! with its own UEFI network stack, in a network namespace with a bridge and
//! tap devices, booting Debian's kernel plus a tiny initramfs (a static C
//! program, tests/pxe/init.c) whose /init prints a marker on the serial console and powers off.
//!
//! Needs root, qemu-system-x86, ipxe-qemu, ovmf, ipxe (the loaders), gcc,
//! busybox (udhcpd as the existing DHCP server in proxy mode), and a kernel (`scripts/pxe-test-kernel`). TCG is used
//! when /sys/module/kvm_pvm exists (that nested hypervisor cannot run OVMF
//! or a stock kernel), KVM otherwise.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

const MARKER: &str = "PXE-RESCUE-MARKER-7f3a";

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
    panic!("no kernel found: run scripts/pxe-test-kernel (downloads Debian's linux-image without installing it) or set PXE_TEST_KERNEL");
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

fn accel() -> &'static str {
    if Path::new("/sys/module/kvm_pvm").exists() || !Path::new("/dev/kvm").exists() {
        "tcg"
    } else {
        "kvm"
    }
}

#[derive(Clone, Copy, Debug)]
enum Firmware {
    SeaBios,
    Ovmf,
}

struct Vm {
    proc: Proc,
    serial: PathBuf,
    name: String,
}

fn start_vm(ns: &Netns, tmp: &Path, idx: u8, fw: Firmware, bridge: &str) -> Vm {
    let tap = tag(&format!("t{idx}"));
    ns.exec(&["ip", "tuntap", "add", "dev", &tap, "mode", "tap"]);
    ns.exec(&["ip", "link", "set", &tap, "master", bridge]);
    ns.exec(&["ip", "link", "set", &tap, "up"]);
    let serial = tmp.join(format!("serial{idx}.log"));
    let mac = format!("52:54:00:42:00:{idx:02x}");
    let mut args: Vec<String> = vec![
        "qemu-system-x86_64".into(),
        "-machine".into(),
        format!("q35,accel={}", accel()),
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
    match fw {
        Firmware::SeaBios => {
            args.push("-device".into());
            args.push(format!("virtio-net-pci,netdev=n0,mac={mac}"));
        }
        Firmware::Ovmf => {
            let vars = tmp.join(format!("vars{idx}.fd"));
            std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", &vars)
                .expect("ovmf vars: apt-get install -y ovmf");
            args.extend([
                "-drive".into(),
                "if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd"
                    .into(),
                "-drive".into(),
                format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
                "-device".into(),
                // romfile="": OVMF's own virtio-net driver and PXE stack.
                format!("virtio-net-pci,netdev=n0,mac={mac},romfile="),
            ]);
        }
    }
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let proc = Proc::spawn(ns.cmd(&refs), &tmp.join(format!("qemu{idx}.log")), "qemu");
    Vm {
        proc,
        serial,
        name: format!("{fw:?} vm {idx} ({mac})"),
    }
}

fn tail(path: &Path, n: usize) -> String {
    let s = String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Boots one VM per entry of `fws` at once and waits for each marker;
/// returns the times to marker.
fn boot_all(fws: &[Firmware], mode: &str) -> Vec<Duration> {
    require_root();
    for (t, p) in [
        ("qemu-system-x86_64", "qemu-system-x86"),
        ("busybox", "busybox"),
    ] {
        require(t, p);
    }
    for (f, p) in [
        ("/usr/lib/ipxe/snponly.efi", "ipxe"),
        ("/usr/lib/ipxe/undionly.kpxe", "ipxe"),
        ("/usr/lib/ipxe/qemu/efi-virtio.rom", "ipxe-qemu"),
        ("/usr/share/OVMF/OVMF_CODE_4M.fd", "ovmf"),
    ] {
        assert!(
            Path::new(f).is_file(),
            "{f} missing: apt-get install -y {p}"
        );
    }
    let kernel = find_kernel();
    let tmp = tempfile::tempdir().expect("tempdir");
    let initrd = tmp.path().join("initrd.img");
    build_initramfs(tmp.path(), &initrd);

    let ns = Netns::new(&tag(&format!("pq{mode}")));
    let br = "br0";
    ns.exec(&["ip", "link", "add", br, "type", "bridge"]);
    ns.exec(&["ip", "addr", "add", "10.91.0.1/24", "dev", br]);
    ns.exec(&["ip", "link", "set", br, "up"]);
    // proxy mode needs an existing DHCP server: busybox udhcpd on a second
    // address of the same bridge would clash on port 67, so it runs in its
    // own namespace joined to the bridge by a veth pair.
    let dhcp_ns;
    let _udhcpd;
    if mode == "proxy" {
        dhcp_ns = Netns::new(&tag("pqd"));
        let (inner, outer) = (tag("qdi"), tag("qdo"));
        veth(&dhcp_ns, &inner, "10.91.0.2/24", &ns, &outer, "");
        ns.exec(&["ip", "link", "set", &outer, "master", br]);
        let conf = tmp.path().join("udhcpd.conf");
        std::fs::write(
            &conf,
            format!(
                "start 10.91.0.100\nend 10.91.0.150\ninterface {inner}\nlease_file {}\noption subnet 255.255.255.0\n",
                tmp.path().join("udhcpd.leases").display()
            ),
        )
        .expect("conf");
        std::fs::write(tmp.path().join("udhcpd.leases"), b"").expect("leases");
        let mut u = Proc::spawn(
            dhcp_ns.cmd(&[
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
        _udhcpd = Some(u);
    } else {
        _udhcpd = None;
    }

    let k = kernel.to_str().expect("utf8").to_string();
    let i = initrd.to_str().expect("utf8").to_string();
    let leases = tmp.path().join("leases.json");
    let mut args = vec![
        server_bin(),
        "--interface",
        br,
        "--kernel",
        &k,
        "--initrd",
        &i,
        "--cmdline",
        "console=ttyS0 panic=-1",
        "--probe-wait",
        "1.5",
        "--lease-file",
        leases.to_str().expect("utf8"),
    ];
    if mode == "full" {
        args.extend(["--mode", "full", "--range", "10.91.0.160-10.91.0.220"]);
    } else {
        args.extend(["--mode", "proxy"]);
    }
    // PXE_QEMU_NO_RA=1 measures the boot without IPv6 router advertisements.
    if std::env::var_os("PXE_QEMU_NO_RA").is_some() {
        args.push("--no-ipv6-ra");
    }
    let mut cmd = ns.cmd(&args);
    cmd.env("RUST_LOG", "info");
    let mut server = Proc::spawn(cmd, &tmp.path().join("server.log"), "pxe-server");
    server.wait_for("pxe-server ready", Duration::from_secs(20));

    let t0 = Instant::now();
    let mut vms: Vec<Vm> = fws
        .iter()
        .enumerate()
        .map(|(n, fw)| start_vm(&ns, tmp.path(), n as u8 + 1, *fw, br))
        .collect();
    let mut times: Vec<Option<Duration>> = vec![None; vms.len()];
    let per_vm = if accel() == "tcg" { 100 } else { 30 };
    let limit = Duration::from_secs(100 + per_vm * vms.len() as u64 / 2);
    while t0.elapsed() < limit && times.iter().any(Option::is_none) {
        for (n, vm) in vms.iter_mut().enumerate() {
            if times[n].is_none() {
                let s = String::from_utf8_lossy(&std::fs::read(&vm.serial).unwrap_or_default())
                    .into_owned();
                if s.contains(&format!("{MARKER} cmdline:"))
                    && s.contains("rescue.server=http://10.91.0.1:8080")
                {
                    times[n] = Some(t0.elapsed());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let mut failures = String::new();
    for (n, vm) in vms.iter().enumerate() {
        match times[n] {
            Some(t) => eprintln!("{}: marker after {:.1} s", vm.name, t.as_secs_f64()),
            None => failures.push_str(&format!(
                "\n{} ({mode} mode): no marker within {limit:?}; serial tail:\n{}\nqemu log:\n{}\n",
                vm.name,
                tail(&vm.serial, 25),
                vm.proc.log_text()
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{failures}\nserver log tail:\n{}",
        tail(&server.log, 40)
    );
    let status = ns.exec(&[server_bin(), "status"]);
    eprintln!("{status}");
    times.into_iter().flatten().collect()
}

/// Clients per test: 2 (one SeaBIOS, one OVMF) unless PXE_QEMU_CLIENTS says
/// more (alternating firmware); 8 is the "many at once" run, which
/// takes several minutes under TCG on two cores.
fn firmwares() -> Vec<Firmware> {
    let n: usize = std::env::var("PXE_QEMU_CLIENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2)
        .clamp(1, 16);
    (0..n)
        .map(|i| {
            if i % 2 == 0 {
                Firmware::SeaBios
            } else {
                Firmware::Ovmf
            }
        })
        .collect()
}

#[test]
fn seabios_ipxe_and_ovmf_boot_in_full_mode() {
    boot_all(&firmwares(), "full");
}

#[test]
fn seabios_ipxe_and_ovmf_boot_in_proxy_mode() {
    boot_all(&firmwares(), "proxy");
}
