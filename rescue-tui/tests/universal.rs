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

/// A Linux whose root is an LVM volume (as Debian's installer lays it out:
/// `/boot` on partition 1, the volume group on partition 2, fstab naming
/// the root `/dev/mapper/debian--vg-root`), made with lvm2 on this machine
/// without device-mapper. `rescue` finds the root in the volume group
/// without activating it, resolves `/boot`, plans the fix-ups, names the
/// volume it cannot reach as one range (in two pieces after an `lvextend`),
/// and `--dry-run` writes nothing. Booting such a system after a real
/// universal restore: `universal_linux.rs`.
#[test]
fn finds_a_linux_root_in_an_lvm_volume_group() {
    require_root();
    use std::process::Command;
    let d = tempfile::tempdir().unwrap();
    let disk = new_file(d.path(), "lvm.img", 256 << 20);
    std::fs::write(d.path().join("t.sfdisk"), "label: dos\nstart=1MiB, size=32MiB, type=83, bootable\nstart=33MiB, type=8e\n").unwrap();
    sh_ok(Command::new("sfdisk").arg("-q").arg(&disk).stdin(std::fs::File::open(d.path().join("t.sfdisk")).unwrap()));
    let (p2, p2_len) = part(&disk, 2);
    let lvs = lvm_layout(&disk, p2, p2_len, "debian-vg", &[("root", 64), ("home", 16), ("swap_1", 8)], |dev| {
        lvm(dev, &["lvextend", "-q", "-L", "+8M", "debian-vg/home"]);
    });
    assert!(!lvs.contains_key("home"), "home is in two pieces: {lvs:?}");
    let root_uuid = "6d1f0c1e-2b3a-4c5d-8e9f-0a1b2c3d4e5f";
    let boot_uuid = "7e2a1d2f-3c4b-4d6e-9fa0-1b2c3d4e5f60";
    // The root: enough of a Debian for the plan (no real kernel or tools).
    let root = d.path().join("root");
    for dir in ["etc/lvm/devices", "usr/sbin", "usr/lib/grub/i386-pc", "usr/lib/modules/6.1.0-28-amd64", "boot"] {
        std::fs::create_dir_all(root.join(dir)).unwrap();
    }
    std::fs::write(root.join("etc/os-release"), "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n").unwrap();
    std::fs::write(
        root.join("etc/fstab"),
        format!("/dev/mapper/debian--vg-root / ext4 errors=remount-ro 0 1\nUUID={boot_uuid} /boot ext4 defaults 0 2\n/dev/mapper/debian--vg-swap_1 none swap sw 0 0\n"),
    )
    .unwrap();
    std::fs::write(root.join("etc/lvm/devices/system.devices"), "# LVM uses devices listed in this file.\nIDTYPE=sys_wwid IDNAME=naa.5000c500a1b2c3d4 DEVNAME=/dev/sda2 PVID=x\n").unwrap();
    for tool in ["update-initramfs", "grub-install", "update-grub"] {
        std::fs::write(root.join("usr/sbin").join(tool), "").unwrap();
    }
    std::fs::write(root.join("usr/lib/modules/6.1.0-28-amd64/modules.dep"), "kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\nkernel/drivers/nvme/host/nvme-core.ko:\n").unwrap();
    let (start, len) = lvs["root"];
    sh_ok(Command::new("mkfs.ext4").args(["-q", "-U", root_uuid, "-E", &format!("offset={start}"), "-d"]).arg(&root).arg(&disk).arg(format!("{}k", len / 1024)));
    let (p1, p1_len) = part(&disk, 1);
    sh_ok(Command::new("mkfs.ext4").args(["-q", "-U", boot_uuid, "-E", &format!("offset={p1}")]).arg(&disk).arg(format!("{}k", p1_len / 1024)));
    let (start, len) = lvs["swap_1"];
    let lo = Loop::attach(&disk, start, len, false);
    sh_ok(Command::new("mkswap").arg(lo.path()));
    drop(lo);

    let disk_s = disk.to_str().unwrap();
    let before = file_hash(&disk);
    let plan = rescue_ok(&["universal-restore", disk_s, "--for", "nvme", "--dry-run"]);
    eprintln!("{plan}");
    for needle in [
        "Linux: Debian GNU/Linux 12 (bookworm) on LVM volume debian-vg/root (partition 2)",
        "mount LVM volume debian-vg/root (partition 2) (ext4) at /, partition 1 (ext4) at /boot",
        "chroot: mv -f /etc/lvm/devices/system.devices /etc/lvm/devices/system.devices.rescue-old",
        "add nvme nvme_core",
        "grub-install --target=i386-pc '--modules=part_gpt part_msdos' <disk>",
        "not searched: LVM volume debian-vg/home: it lies in 2 separate pieces",
    ] {
        assert!(plan.contains(needle), "plan lacks {needle:?}:\n{plan}");
    }
    let json = rescue_ok(&["universal-restore", disk_s, "--for", "nvme", "--dry-run", "--json"]);
    assert!(json.contains("\"lv\": \"debian-vg/root\"") || json.contains("\"lv\":\"debian-vg/root\""), "{json}");
    assert_eq!(before, file_hash(&disk), "--dry-run changed the disk");
    assert!(sh_ok(Command::new("losetup").arg("-j").arg(&disk)).trim().is_empty(), "a loop device is left over the disk");
}

/// A disk whose only Linux is inside a LUKS volume or an md RAID array:
/// the error names those partitions and why they were not searched.
#[test]
fn names_encrypted_and_raid_partitions_it_cannot_search() {
    use std::process::Command;
    let d = tempfile::tempdir().unwrap();
    let disk = new_file(d.path(), "containers.img", 64 << 20);
    std::fs::write(d.path().join("t.sfdisk"), "label: gpt\nstart=1MiB, size=24MiB\nstart=25MiB, size=24MiB\n").unwrap();
    sh_ok(Command::new("sfdisk").arg("-q").arg(&disk).stdin(std::fs::File::open(d.path().join("t.sfdisk")).unwrap()));
    // A real LUKS header (cryptsetup luksFormat), and an md superblock 1.2
    // (4 KiB in, as mdadm writes it) over an ext4 filesystem.
    let luks = Command::new("zstd").arg("-dc").arg(repo().join("imaging/tests/fixtures/fs/luks.img.zst")).output().unwrap();
    assert!(luks.status.success(), "zstd failed");
    let (p1, p1_len) = part(&disk, 1);
    assert!(luks.stdout.len() as u64 <= p1_len);
    let (p2, p2_len) = part(&disk, 2);
    sh_ok(Command::new("mkfs.ext4").args(["-q", "-E", &format!("offset={p2}")]).arg(&disk).arg(format!("{}k", p2_len / 1024)));
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
        f.write_all_at(&luks.stdout, p1).unwrap();
        // Member 0 of a three-disk RAID5 named debian:0, data 1 MiB in
        // (RAID1 is read without md: `universal_linux.rs`).
        let sb = md_superblock(5, 3, 0, "debian:0", [0xab; 16], p2_len / 512 - 4096, 1);
        f.write_all_at(&sb, p2 + 4096).unwrap();
    }
    rescue_fails(
        &["universal-restore", disk.to_str().unwrap(), "--for", "nvme", "--dry-run"],
        1,
        "not searched: partition 1: it is encrypted (LUKS), and no passphrase was given (--luks-key-file FILE, or RESCUE_LUKS_PASSWORD): a system inside it is not fixed",
    );
    // A passphrase that opens no keyslot: said, and the passphrase is not.
    let key = d.path().join("wrong.key");
    std::fs::write(&key, "not the passphrase 4711").unwrap();
    let out = rescue_fails(
        &["universal-restore", disk.to_str().unwrap(), "--for", "nvme", "--luks-key-file", key.to_str().unwrap(), "--dry-run"],
        1,
        "not searched: partition 1: it is encrypted (LUKS), and it could not be opened: no keyslot opens with this passphrase (tried the passphrase given)",
    );
    assert!(!out.contains("4711"), "{out}");
    assert!(out.contains("hint: give the passphrase of encrypted partition 1"), "{out}");
    rescue_fails(
        &["universal-restore", disk.to_str().unwrap(), "--for", "nvme", "--dry-run"],
        1,
        "not searched: partition 2: a member of md RAID5 array debian:0, which needs the array assembled by the kernel's md driver (only RAID1 is read without it): a system inside it is not fixed",
    );
}

/// A LUKS volume inside an LVM volume or an md RAID1 array is not opened
/// (only LUKS on a partition is): the message names each.
#[test]
fn names_luks_inside_lvm_and_md() {
    require_root();
    use std::os::unix::fs::FileExt;
    use std::process::Command;
    let d = tempfile::tempdir().unwrap();
    let disk = new_file(d.path(), "stack.img", 200 << 20);
    std::fs::write(d.path().join("t.sfdisk"), "label: gpt\nstart=1MiB, size=40MiB\nstart=41MiB, size=40MiB\nstart=81MiB, size=100MiB\n").unwrap();
    sh_ok(Command::new("sfdisk").arg("-q").arg(&disk).stdin(std::fs::File::open(d.path().join("t.sfdisk")).unwrap()));
    let luks = Command::new("zstd").arg("-dc").arg(repo().join("imaging/tests/fixtures/fs/luks.img.zst")).output().unwrap();
    assert!(luks.status.success(), "zstd failed");
    let (p3, p3_len) = part(&disk, 3);
    let lvs = lvm_layout(&disk, p3, p3_len, "vg0", &[("crypt", 16)], |_| {});
    let f = std::fs::OpenOptions::new().write(true).open(&disk).unwrap();
    f.write_all_at(&luks.stdout, lvs["crypt"].0).unwrap();
    // An md RAID1 of partitions 1 and 2 (data 1 MiB in) holding the volume.
    let (_, p1_len) = part(&disk, 1);
    for (slot, n) in [(0u16, 1), (1, 2)] {
        let (start, _) = part(&disk, n);
        f.write_all_at(&md_superblock(1, 2, slot, "box:0", [0x5c; 16], p1_len / 512 - 2048, 3), start + 4096).unwrap();
        f.write_all_at(&luks.stdout, start + (1 << 20)).unwrap();
    }
    drop(f);
    let out = rescue_fails(&["universal-restore", disk.to_str().unwrap(), "--for", "nvme", "--dry-run"], 1, "not searched: LVM volume vg0/crypt: it holds an encrypted (LUKS) volume, which universal restore opens only on a partition");
    assert!(out.contains("not searched: md RAID1 box:0 (partitions 1, 2): it holds an encrypted (LUKS) volume"), "{out}");
}
