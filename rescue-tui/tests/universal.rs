//! `rescue universal-restore` end to end: a disk image with an NTFS
//! partition holding a real Windows 7 SYSTEM hive (shared/testdata), AHCI
//! enabled offline, the result read back with libhivex. Needs root.

mod common;


use common::*;

#[test]
fn enables_ahci_on_an_offline_windows_7() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let disk = windows7_disk(d.path());
    let disk_s = disk.to_str().unwrap();
    // The plan names the change and writes nothing.
    let before = file_hash(&disk);
    let plan = rescue_ok(&["universal-restore", disk_s, "--for", "ahci", "--dry-run"]);
    assert!(plan.to_lowercase().contains("msahci"), "{plan}");
    assert_eq!(before, file_hash(&disk), "--dry-run changed the disk");
    // Without a terminal and without --yes: refused.
    rescue_fails(&["universal-restore", disk_s, "--for", "ahci"], 3, "--yes");
    rescue_ok(&["universal-restore", disk_s, "--for", "ahci", "--yes"]);
    let lo = Loop::attach(&disk, 1 << 20, 90 << 20, true);
    let m = Mount::new(lo.path(), &d.path().join("m2"), "ntfs", true);
    let cfg = m.0.join("Windows/System32/config");
    for cs in ["ControlSet001", "ControlSet002"] {
        assert_eq!(service_start(&cfg.join("SYSTEM"), cs, "msahci"), 0, "{cs}: msahci not enabled");
    }
    // Names, not DirEntry values: those keep the directory open (and the
    // mount busy) for as long as they live.
    let backups: Vec<String> = std::fs::read_dir(&cfg).unwrap().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).filter(|n| n.starts_with("SYSTEM.rescue-bak")).collect();
    assert_eq!(backups.len(), 1, "the original hive is kept beside it");
    drop(m);
    drop(lo);
    // A disk without Windows says so.
    let src = sample_disk();
    rescue_fails(&["universal-restore", src.to_str().unwrap(), "--for", "nvme", "--dry-run"], 1, "no Windows installation");
}

/// Windows 7's MBR layout: a "System Reserved" NTFS partition (boot files,
/// no Windows folder) before the Windows one. The first is passed over.
#[test]
fn passes_over_a_system_reserved_partition() {
    require_root();
    use std::process::Command;
    let d = tempfile::tempdir().unwrap();
    let hive = Command::new("xz").arg("-dc").arg(testdata().join("hives/regipy/SYSTEM.xz")).output().unwrap();
    assert!(hive.status.success(), "xz failed");
    let disk = new_file(d.path(), "win7-mbr.img", 128 << 20);
    std::fs::write(d.path().join("t.sfdisk"), "label: dos\nstart=1MiB, size=32MiB, type=7, bootable\nstart=33MiB, size=90MiB, type=7\n").unwrap();
    sh_ok(Command::new("sfdisk").arg("-q").arg(&disk).stdin(std::fs::File::open(d.path().join("t.sfdisk")).unwrap()));
    for (n, (start, len)) in [(1u64 << 20, 32u64 << 20), (33 << 20, 90 << 20)].into_iter().enumerate() {
        let lo = Loop::attach(&disk, start, len, false);
        sh_ok(Command::new("mkfs.ntfs").args(["-q", "-F", "-f", "-L", if n == 0 { "System Reserved" } else { "Windows" }, lo.path()]));
        let m = Mount::new(lo.path(), &d.path().join(format!("m{n}")), "ntfs", false);
        if n == 0 {
            std::fs::create_dir_all(m.0.join("Boot")).unwrap();
            std::fs::write(m.0.join("bootmgr"), b"boot manager").unwrap();
        } else {
            let cfg = m.0.join("Windows/System32/config");
            std::fs::create_dir_all(&cfg).unwrap();
            std::fs::create_dir_all(m.0.join("Windows/System32/drivers")).unwrap();
            std::fs::write(cfg.join("SYSTEM"), &hive.stdout).unwrap();
        }
        drop(m);
        drop(lo);
    }
    let plan = rescue_ok(&["universal-restore", disk.to_str().unwrap(), "--for", "ahci", "--dry-run"]);
    assert!(plan.to_lowercase().contains("msahci") && plan.contains("partition 2"), "{plan}");
    assert!(!plan.contains("partition 1"), "the System Reserved partition has no Windows: {plan}");
}
