//! `rescue universal-restore` end to end: a disk image with an NTFS
//! partition holding a real Windows 7 SYSTEM hive (shared/testdata), AHCI
//! enabled offline, the result read back with libhivex. Needs root.

mod common;

use std::process::Command;

use common::*;

#[test]
fn enables_ahci_on_an_offline_windows_7() {
    require_root();
    let d = tempfile::tempdir().unwrap();
    let hive_xz = testdata().join("hives/regipy/SYSTEM.xz");
    assert!(hive_xz.exists(), "test data missing: {} (shared/testdata beside the repo)", hive_xz.display());
    let disk = new_file(d.path(), "win.img", 96 << 20);
    std::fs::write(d.path().join("l"), "label: gpt\nstart=1MiB, size=90MiB, type=EBD0A0A2-B9E5-4433-87C0-68B6B72699C7\n").unwrap();
    sh_ok(Command::new("sfdisk").arg("-q").arg(&disk).stdin(std::fs::File::open(d.path().join("l")).unwrap()));
    {
        let lo = Loop::attach(&disk, 1 << 20, 90 << 20, false);
        sh_ok(Command::new("mkfs.ntfs").args(["-q", "-F", "-f", lo.path()]));
        let m = Mount::new(lo.path(), &d.path().join("m"), "ntfs", false);
        let cfg = m.0.join("Windows/System32/config");
        std::fs::create_dir_all(&cfg).unwrap();
        std::fs::create_dir_all(m.0.join("Windows/System32/drivers")).unwrap();
        let raw = Command::new("xz").arg("-dc").arg(&hive_xz).output().unwrap();
        assert!(raw.status.success());
        std::fs::write(cfg.join("SYSTEM"), &raw.stdout).unwrap();
        assert_eq!(service_start(&cfg.join("SYSTEM"), "ControlSet001", "msahci"), 3, "fixture: msahci starts disabled");
    }
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
