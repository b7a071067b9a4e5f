//! `rescue universal-restore` on a real Debian: a bookworm system made with
//! debootstrap on an MBR disk image (GRUB for BIOS, serial console), whose
//! initramfs holds only the modules listed in /etc/initramfs-tools/modules
//! (`MODULES=list`: ext4 and, after a first universal restore for virtio,
//! virtio). Booted in qemu as NVMe it stops in the initramfs ("Gave up
//! waiting for root"); after `universal-restore --for nvme --for ahci` it
//! reaches the login prompt as NVMe and as AHCI. The same with dracut
//! instead of initramfs-tools: its initramfs made with only a few drivers
//! (no NVMe), universal restore regenerates it and it boots as NVMe. And
//! with the root in an LVM volume group (made by lvm2 without
//! device-mapper) on a GPT disk for BIOS and EFI: fixed by `rescue` inside
//! the live rescue system (the kernel and initramfs `image-builder` makes,
//! booted by OVMF in qemu, the disk as NVMe) for that machine's own
//! controllers, with a firmware boot entry in its variable store; then
//! booted as NVMe under OVMF through that entry (the fallback loader
//! removed) and as AHCI under SeaBIOS.
//!
//! Needs root, debootstrap, lvm2, mtools, qemu-system-x86_64, OVMF, zstd, the
//! musl target (scripts/build-media) and the Debian mirror
//! of the host's apt sources on the first run, which builds each root
//! filesystem once (about 2 min) into /var/tmp/rescue-debootstrap-cache
//! (a tarball per [`Rootfs`] key, built under a lock). TCG is used when
//! /sys/module/kvm_pvm exists (that nested hypervisor cannot boot a stock
//! kernel) or /dev/kvm is missing, KVM otherwise. Every boot uses
//! `-snapshot`: the disk image only changes through `rescue`.
//! `UL_QEMU_TIMEOUT=SECONDS` overrides the per-boot time limit.
//!
//! GRUB for EFI is installed only in the live-system test: its plan needs
//! the ESP mounted, and the kernel of the machines CI runs on has no vfat
//! (the rescue system's Debian kernel has).

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const CACHE_DIR: &str = "/var/tmp/rescue-debootstrap-cache";
/// Bump when the package list or the debootstrap options change.
const CACHE_KEY: &str = "bookworm-v1";
const PACKAGES: &str = "linux-image-amd64,initramfs-tools,systemd-sysv,udev,kmod,grub-pc,e2fsprogs";
const ROOT_UUID: &str = "3f1c2b7e-5d4a-4e2b-9c1d-0a1b2c3d4e5f";
const DISK_SIZE: u64 = 2 << 30;
const PART_START: u64 = 1 << 20;

/// The Debian mirror the host's apt uses (deb822 or one-line format).
fn mirror() -> String {
    let mut texts = vec![std::fs::read_to_string("/etc/apt/sources.list").unwrap_or_default()];
    if let Ok(rd) = std::fs::read_dir("/etc/apt/sources.list.d") {
        let mut v: Vec<PathBuf> = rd.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "sources" || x == "list")).collect();
        v.sort();
        texts.extend(v.iter().map(|p| std::fs::read_to_string(p).unwrap_or_default()));
    }
    for t in &texts {
        for line in t.lines().map(str::trim).filter(|l| !l.starts_with('#')) {
            let url = if let Some(rest) = line.strip_prefix("URIs:") {
                rest.split_whitespace().next()
            } else if let Some(rest) = line.strip_prefix("deb ") {
                rest.split_whitespace().find(|w| w.contains("://"))
            } else {
                None
            };
            if let Some(u) = url.filter(|u| u.contains("/debian") && !u.contains("security")) {
                return u.to_string();
            }
        }
    }
    "http://deb.debian.org/debian".into()
}

/// A Debian root filesystem the tests unpack: the cache key (bump it when
/// anything below changes), debootstrap's `--include`, and a shell script
/// run in the new root afterwards (with /proc mounted), if any.
struct Rootfs {
    key: &'static str,
    packages: &'static str,
    then: Option<&'static str>,
}

/// initramfs-tools and GRUB for BIOS.
const BIOS_ROOTFS: Rootfs = Rootfs { key: CACHE_KEY, packages: PACKAGES, then: None };

/// dracut instead of initramfs-tools, GRUB for BIOS. The kernel comes after
/// debootstrap, so that apt takes dracut for its initramfs tool (debootstrap
/// would pick initramfs-tools, which conflicts). Its initramfs is then
/// rebuilt as the "old machine" had it: only the drivers listed (as a
/// host-only dracut image of a virtio machine would be), no NVMe, no AHCI.
const DRACUT_ROOTFS: Rootfs = Rootfs {
    key: "bookworm-dracut-v1",
    packages: "dracut,systemd-sysv,udev,kmod,grub-pc,e2fsprogs",
    then: Some(
        "set -e; DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends linux-image-amd64; \
         apt-get clean; \
         for k in /lib/modules/*; do k=${k##*/}; \
           dracut -q -f --no-hostonly --drivers 'ext4 crc32c_generic virtio_blk virtio_pci' /boot/initrd.img-$k $k; done",
    ),
};

/// initramfs-tools, lvm2 (its initramfs hook and udev rules activate the
/// volume group at boot), GRUB for BIOS and GRUB's EFI modules (as a disk
/// set up for both boot modes has).
const LVM_ROOTFS: Rootfs = Rootfs { key: "bookworm-lvm-v2", packages: "linux-image-amd64,initramfs-tools,systemd-sysv,udev,kmod,grub-pc,grub-efi-amd64-bin,e2fsprogs,lvm2", then: None };

/// initramfs-tools, mdadm (its initramfs hook loads the RAID modules, and
/// its udev rules and boot script assemble the array) and GRUB for BIOS.
const MD_ROOTFS: Rootfs = Rootfs { key: "bookworm-md-v1", packages: "linux-image-amd64,initramfs-tools,systemd-sysv,udev,kmod,grub-pc,e2fsprogs,mdadm", then: None };

/// initramfs-tools with cryptsetup-initramfs (its hook and boot script
/// unlock the root's LUKS volume) and GRUB for BIOS.
const LUKS_ROOTFS: Rootfs = Rootfs {
    key: "bookworm-luks-v1",
    packages: "linux-image-amd64,initramfs-tools,systemd-sysv,udev,kmod,grub-pc,e2fsprogs,cryptsetup-initramfs",
    then: None,
};

/// The cached root filesystem tarball (built once, under a lock).
fn rootfs_tarball(fs: &Rootfs) -> PathBuf {
    let key = fs.key;
    std::fs::create_dir_all(CACHE_DIR).expect("cache dir");
    let tar = Path::new(CACHE_DIR).join(format!("{key}.tar.zst"));
    let lock = std::fs::File::create(Path::new(CACHE_DIR).join(format!("{key}.lock"))).expect("lock file");
    lock.lock().expect("locking the debootstrap cache");
    if tar.exists() {
        return tar;
    }
    let build = Path::new(CACHE_DIR).join(format!("{key}.build"));
    let _ = Command::new("umount").arg(build.join("proc")).stderr(Stdio::null()).status();
    let _ = std::fs::remove_dir_all(&build);
    let t0 = Instant::now();
    eprintln!("building the Debian root filesystem {key} with debootstrap (once; 2-4 minutes)...");
    sh_ok(Command::new("debootstrap").env("DEBIAN_FRONTEND", "noninteractive").args(["--variant=minbase", &format!("--include={}", fs.packages), "bookworm"]).arg(&build).arg(mirror()));
    if let Some(script) = fs.then {
        sh_ok(Command::new("mount").args(["-t", "proc", "proc"]).arg(build.join("proc")));
        let out = Command::new("chroot").arg(&build).args(["sh", "-c", script]).output();
        let _ = Command::new("umount").arg(build.join("proc")).status();
        let out = out.expect("running chroot");
        assert!(out.status.success(), "in the new root ({key}): {script}\n{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    }
    let tmp = tar.with_extension("tmp");
    sh_ok(Command::new("sh").arg("-c").arg("tar -C \"$1\" --numeric-owner -cf - . | zstd -T0 -3 -q > \"$2\"").arg("sh").arg(&build).arg(&tmp));
    std::fs::rename(&tmp, &tar).expect("publishing the tarball");
    let _ = std::fs::remove_dir_all(&build);
    eprintln!("debootstrap cache {key} built in {:?}", t0.elapsed());
    tar
}

/// Write `text` to `root/rel`.
fn put(root: &Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().expect("has a parent")).expect("mkdir");
    std::fs::write(&p, text).unwrap_or_else(|e| panic!("writing {}: {e}", p.display()));
}

/// An MBR disk image with the Debian root on partition 1; the initramfs
/// takes only the listed modules.
fn make_disk(dir: &Path) -> PathBuf {
    make_disk_from(dir, &BIOS_ROOTFS, |root| {
        put(root, "etc/initramfs-tools/conf.d/rescue-test.conf", "MODULES=list\n");
        put(root, "etc/initramfs-tools/modules", "# the test's old hardware had no NVMe and no AHCI\next4\ncrc32c_generic\n");
    })
}

/// An MBR disk image with the root of `fs` on partition 1 (serial console,
/// no GRUB menu delay); `extra` adds files to the root first.
fn make_disk_from(dir: &Path, fs: &Rootfs, extra: impl FnOnce(&Path)) -> PathBuf {
    let root = unpack_root(dir, fs, &format!("UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n"), extra);
    let disk = new_file(dir, "debian.img", DISK_SIZE);
    put(dir, "layout", "label: dos\nstart=1MiB, type=83, bootable\n");
    sh_ok(Command::new("sfdisk").arg("-q").arg(&disk).stdin(std::fs::File::open(dir.join("layout")).expect("layout")));
    let kib = (DISK_SIZE - PART_START) / 1024;
    sh_ok(Command::new("mkfs.ext4").args(["-q", "-U", ROOT_UUID, "-E", &format!("offset={PART_START}"), "-d"]).arg(&root).arg(&disk).arg(format!("{kib}k")));
    std::fs::remove_dir_all(&root).expect("removing the unpacked root");
    disk
}

/// Unpack the root of `fs` into `dir/root` with `fstab`, the serial console
/// and no GRUB menu delay; `extra` adds files to it.
fn unpack_root(dir: &Path, fs: &Rootfs, fstab: &str, extra: impl FnOnce(&Path)) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(&root).expect("mkdir");
    sh_ok(Command::new("tar").arg("-C").arg(&root).args(["-I", "zstd", "--numeric-owner", "-xf"]).arg(rootfs_tarball(fs)));
    put(&root, "etc/fstab", fstab);
    put(&root, "etc/hostname", "rescue-ul\n");
    let grub = std::fs::read_to_string(root.join("etc/default/grub")).unwrap_or_default();
    put(
        &root,
        "etc/default/grub",
        &format!("{grub}\nGRUB_TIMEOUT=0\nGRUB_CMDLINE_LINUX_DEFAULT=\"\"\nGRUB_CMDLINE_LINUX=\"console=ttyS0,115200 rootdelay=20\"\nGRUB_TERMINAL=console\n"),
    );
    extra(&root);
    root
}

const BOOT_UUID: &str = "5a0e9b7c-1d2e-4f30-8a4b-6c7d8e9f0a1b";
/// The ESP's FAT volume ID (`1234-ABCD` in fstab).
const ESP_ID: &str = "1234ABCD";
/// GPT: BIOS boot (1 MiB), ESP (64 MiB), /boot (256 MiB), LVM (the rest).
const ESP_START: u64 = 2 << 20;
const BOOT_START: u64 = 66 << 20;
const BOOT_LEN: u64 = 256 << 20;
const PV_START: u64 = 322 << 20;

/// Debian's installer layout with LVM on a disk set up for BIOS and EFI:
/// GPT with a BIOS boot partition, the ESP (`/boot/efi`, empty: no boot
/// loader yet), `/boot` (ext4) and the volume group `debian-vg` with the
/// root and swap volumes, fstab naming them by `/dev/mapper`. The
/// initramfs is rebuilt first with only the listed modules (no NVMe, no
/// AHCI), as on the old machine. Returns the disk and the root volume's
/// byte range.
fn make_lvm_disk(dir: &Path) -> (PathBuf, (u64, u64)) {
    let fstab = format!(
        "/dev/mapper/debian--vg-root / ext4 errors=remount-ro 0 1\nUUID={BOOT_UUID} /boot ext4 defaults 0 2\nUUID={}-{} /boot/efi vfat umask=0077 0 1\n/dev/mapper/debian--vg-swap_1 none swap sw 0 0\n",
        &ESP_ID[..4],
        &ESP_ID[4..]
    );
    let root = unpack_root(dir, &LVM_ROOTFS, &fstab, |root| {
        put(root, "etc/initramfs-tools/conf.d/rescue-test.conf", "MODULES=list\n");
        put(root, "etc/initramfs-tools/modules", "# the test's old hardware had no NVMe and no AHCI\next4\ncrc32c_generic\nvirtio_pci\nvirtio_blk\n");
        std::fs::create_dir_all(root.join("boot/efi")).expect("mkdir /boot/efi");
    });
    let proc = Mount::new("proc", &root.join("proc"), "proc", false);
    sh_ok(Command::new("chroot").arg(&root).args(["update-initramfs", "-u", "-k", "all"]));
    drop(proc);
    // /boot's files go to their own filesystem.
    let boot = dir.join("boot");
    sh_ok(Command::new("mv").arg(root.join("boot")).arg(&boot));
    std::fs::create_dir_all(root.join("boot")).expect("mkdir boot");
    std::fs::remove_dir(boot.join("efi")).expect("the empty /boot/efi");
    std::fs::create_dir_all(root.join("boot/efi")).expect("mkdir /boot/efi");
    let disk = new_file(dir, "debian-lvm.img", DISK_SIZE);
    put(
        dir,
        "layout",
        &format!(
            "label: gpt\nstart=1MiB, size=1MiB, type=21686148-6449-6E6F-744E-656564454649\nstart={}MiB, size={}MiB, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B\nstart={}MiB, size={}MiB, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\nstart={}MiB, type=E6D6D379-F507-44C2-A23C-238F2A3DF928\n",
            ESP_START >> 20,
            (BOOT_START - ESP_START) >> 20,
            BOOT_START >> 20,
            BOOT_LEN >> 20,
            PV_START >> 20
        ),
    );
    sh_ok(Command::new("sfdisk").arg("-q").arg(&disk).stdin(std::fs::File::open(dir.join("layout")).expect("layout")));
    sh_ok(Command::new("mkfs.vfat").args(["-F", "32", "-s", "1", "-S", "512", "-i", ESP_ID, &format!("--offset={}", ESP_START / 512)]).arg(&disk).arg(((BOOT_START - ESP_START) / 1024).to_string()));
    sh_ok(Command::new("mkfs.ext4").args(["-q", "-U", BOOT_UUID, "-E", &format!("offset={BOOT_START}"), "-d"]).arg(&boot).arg(&disk).arg(format!("{}k", BOOT_LEN / 1024)));
    let lvs = lvm_layout(&disk, PV_START, DISK_SIZE - PV_START - (1 << 20), "debian-vg", &[("root", 1500), ("swap_1", 64)], |_| {});
    let (start, len) = lvs["root"];
    sh_ok(Command::new("mkfs.ext4").args(["-q", "-U", ROOT_UUID, "-E", &format!("offset={start}"), "-d"]).arg(&root).arg(&disk).arg(format!("{}k", len / 1024)));
    let (s, l) = lvs["swap_1"];
    let lo = Loop::attach(&disk, s, l, false);
    sh_ok(Command::new("mkswap").arg(lo.path()));
    drop(lo);
    std::fs::remove_dir_all(&root).expect("removing the unpacked root");
    std::fs::remove_dir_all(&boot).expect("removing the unpacked /boot");
    (disk, (start, len))
}

/// Each md RAID1 member of `make_md_disk`: partitions 1 and 2.
const MD_MEMBER: u64 = 1280 << 20;
/// The array's data: from 1 MiB into each member to its end.
const MD_DATA: u64 = MD_MEMBER - (1 << 20);
const MD_UUID: [u8; 16] = [0x5e, 0x5c, 0x0e, 0x01, 0x2a, 0x7b, 0x4c, 0x11, 0x9d, 0x3e, 0x60, 0x71, 0x82, 0x93, 0xa4, 0xb5];

/// Where member `n` (1 or 2) of `make_md_disk` starts.
fn md_member_start(n: u64) -> u64 {
    PART_START + (n - 1) * MD_MEMBER
}

/// A Debian whose root (with /boot) is on an md RAID1 of partitions 1 and
/// 2 of an MBR disk, as Debian's installer makes a mirror: metadata 1.2,
/// fstab by filesystem UUID, mdadm.conf naming the array. The array is made
/// without md (this machine's kernel has none): the filesystem is made in
/// member 1's data range and copied to member 2's, and the superblocks are
/// written by `md_superblock`. The initramfs is rebuilt first with only the
/// listed modules (no NVMe, no AHCI), as on the old machine.
fn make_md_disk(dir: &Path) -> PathBuf {
    let uuid: Vec<String> = MD_UUID.chunks(4).map(|c| c.iter().map(|b| format!("{b:02x}")).collect()).collect();
    let root = unpack_root(dir, &MD_ROOTFS, &format!("UUID={ROOT_UUID} / ext4 errors=remount-ro 0 1\n"), |root| {
        put(root, "etc/initramfs-tools/conf.d/rescue-test.conf", "MODULES=list\n");
        put(root, "etc/initramfs-tools/modules", "# the test's old hardware had no NVMe and no AHCI\next4\ncrc32c_generic\nvirtio_pci\nvirtio_blk\n");
        put(root, "etc/mdadm/mdadm.conf", &format!("HOMEHOST <system>\nMAILADDR root\nARRAY /dev/md/0 metadata=1.2 UUID={} name=rescue-ul:0\n", uuid.join(":")));
    });
    let proc = Mount::new("proc", &root.join("proc"), "proc", false);
    sh_ok(Command::new("chroot").arg(&root).args(["update-initramfs", "-u", "-k", "all"]));
    drop(proc);
    let disk = new_file(dir, "debian-md.img", 2 * MD_MEMBER + (2 << 20));
    put(dir, "layout", &format!("label: dos\nstart=1MiB, size={0}MiB, type=fd, bootable\nstart={1}MiB, size={0}MiB, type=fd\n", MD_MEMBER >> 20, (PART_START + MD_MEMBER) >> 20));
    sh_ok(Command::new("sfdisk").arg("-q").arg(&disk).stdin(std::fs::File::open(dir.join("layout")).expect("layout")));
    let data1 = md_member_start(1) + (1 << 20);
    sh_ok(Command::new("mkfs.ext4").args(["-q", "-U", ROOT_UUID, "-E", &format!("offset={data1}"), "-d"]).arg(&root).arg(&disk).arg(format!("{}k", MD_DATA / 1024)));
    std::fs::remove_dir_all(&root).expect("removing the unpacked root");
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&disk).expect("disk");
        let mut buf = vec![0u8; 8 << 20];
        let mut off = 0;
        while off < MD_DATA {
            let n = (MD_DATA - off).min(buf.len() as u64) as usize;
            f.read_exact_at(&mut buf[..n], data1 + off).expect("reading member 1");
            f.write_all_at(&buf[..n], md_member_start(2) + (1 << 20) + off).expect("writing member 2");
            off += n as u64;
        }
        for (slot, n) in [(0u16, 1u64), (1, 2)] {
            f.write_all_at(&md_superblock(1, 2, slot, "rescue-ul:0", MD_UUID, MD_DATA / 512, 10), md_member_start(n) + 4096).expect("superblock");
        }
    }
    disk
}

/// `mdadm --examine` of member `n` of `make_md_disk`'s disk.
fn md_examine(disk: &Path, n: u64) -> String {
    let lo = Loop::attach(disk, md_member_start(n), MD_MEMBER, true);
    let out = sh_ok(Command::new("mdadm").arg("--examine").arg(lo.path()));
    drop(lo);
    out
}

/// Files in the system's initramfs (its own lsinitramfs in a chroot; it
/// needs a writable /tmp).
fn initramfs_files(disk: &Path, dir: &Path) -> String {
    initramfs_files_in(disk, dir, PART_START, DISK_SIZE - PART_START, "lsinitramfs")
}

/// The same for the root at (`start`, `len`) of `disk`, listed by `tool`
/// (`lsinitramfs`, or dracut's `lsinitrd`).
fn initramfs_files_in(disk: &Path, dir: &Path, start: u64, len: u64, tool: &str) -> String {
    let lo = Loop::attach(disk, start, len, false);
    let m = Mount::new(lo.path(), &dir.join("inspect"), "ext4", false);
    let boot = std::fs::read_dir(m.0.join("boot")).expect("boot dir");
    let initrd = boot.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).find(|n| n.starts_with("initrd.img-")).expect("an initrd in /boot");
    let out = sh_ok(Command::new("chroot").arg(&m.0).args([tool, &format!("/boot/{initrd}")]));
    drop(m);
    drop(lo);
    out
}

/// Files in the initramfs of the system whose root is at `root` of `disk`
/// and whose /boot is at `BOOT_START`.
fn initramfs_files_lvm(disk: &Path, dir: &Path, root: (u64, u64)) -> String {
    initramfs_files_with_boot(disk, root, disk, BOOT_START, dir)
}

/// Files in the initramfs of the system whose root is at (`start`, `len`)
/// of `root_file` and whose /boot is at `boot_start` of `disk` (BOOT_LEN).
fn initramfs_files_with_boot(root_file: &Path, (start, len): (u64, u64), disk: &Path, boot_start: u64, dir: &Path) -> String {
    let lo = Loop::attach(root_file, start, len, false);
    let m = Mount::new(lo.path(), &dir.join("inspect"), "ext4", false);
    let blo = Loop::attach(disk, boot_start, BOOT_LEN, false);
    let bm = Mount::new(blo.path(), &m.0.join("boot"), "ext4", false);
    let initrd = std::fs::read_dir(&bm.0).expect("boot dir").flatten().map(|e| e.file_name().to_string_lossy().into_owned()).find(|n| n.starts_with("initrd.img-")).expect("an initrd in /boot");
    let out = sh_ok(Command::new("chroot").arg(&m.0).args(["lsinitramfs", &format!("/boot/{initrd}")]));
    drop(bm);
    drop(blo);
    drop(m);
    drop(lo);
    out
}

const LUKS_UUID: &str = "6c1e4f0a-8b2d-4e5f-9a7c-3d2b1a0f9e8d";
/// The volume's passphrase: in the key file the system's crypttab names
/// (copied into its initramfs, KEYFILE_PATTERN) and the one given to
/// `rescue --luks-key-file`.
const LUKS_KEY: &str = "rescue-ul: correct horse battery staple";
/// `make_luks_disk`: the LUKS partition (2) after `/boot` (1, BOOT_LEN).
const LUKS_START: u64 = PART_START + BOOT_LEN;
const LUKS_LEN: u64 = DISK_SIZE - LUKS_START;

/// A Debian whose root is in a LUKS2 volume (partition 2 of an MBR disk,
/// `/boot` on partition 1), as Debian's installer encrypts a system: fstab
/// names the root `/dev/mapper/root_crypt`, crypttab the volume by its
/// UUID with a key file that cryptsetup-initramfs copies into the
/// initramfs (KEYFILE_PATTERN), so it boots unattended. The volume is made
/// by cryptsetup (no device-mapper here: formatting needs none; PBKDF2
/// with few iterations, for TCG boots), the root filesystem written into it
/// through `imaging::luks_fuse` (the boots, with the kernel's dm-crypt,
/// check that what it wrote is what dm-crypt reads). Its initramfs was made
/// before the volume existed: it has no crypttab and no NVMe or AHCI
/// driver, so the first boot that works is after universal restore.
fn make_luks_disk(dir: &Path) -> PathBuf {
    let fstab = format!("/dev/mapper/root_crypt / ext4 errors=remount-ro 0 1\nUUID={BOOT_UUID} /boot ext4 defaults 0 2\n");
    let root = unpack_root(dir, &LUKS_ROOTFS, &fstab, |root| {
        use std::os::unix::fs::PermissionsExt;
        put(root, "etc/crypttab", &format!("root_crypt UUID={LUKS_UUID} /etc/keys/root.key luks,discard\n"));
        put(root, "etc/keys/root.key", LUKS_KEY);
        std::fs::set_permissions(root.join("etc/keys/root.key"), std::fs::Permissions::from_mode(0o400)).expect("chmod");
        std::fs::set_permissions(root.join("etc/keys"), std::fs::Permissions::from_mode(0o700)).expect("chmod");
        put(root, "etc/cryptsetup-initramfs/conf-hook", "KEYFILE_PATTERN=\"/etc/keys/*.key\"\n");
        put(root, "etc/initramfs-tools/conf.d/rescue-test.conf", "MODULES=list\nUMASK=0077\n");
        // ecb: xts(aes) without AES-NI needs it, and the hook adds it only
        // when this machine has no AES-NI (the guest CPU may lack it).
        put(root, "etc/initramfs-tools/modules", "# the test's old hardware had no NVMe and no AHCI\next4\ncrc32c_generic\nvirtio_pci\nvirtio_blk\necb\n");
    });
    let boot = dir.join("boot");
    sh_ok(Command::new("mv").arg(root.join("boot")).arg(&boot));
    std::fs::create_dir_all(root.join("boot")).expect("mkdir boot");
    let disk = new_file(dir, "debian-luks.img", DISK_SIZE);
    put(dir, "layout", &format!("label: dos\nstart=1MiB, size={}MiB, type=83, bootable\nstart={}MiB, type=83\n", BOOT_LEN >> 20, LUKS_START >> 20));
    sh_ok(Command::new("sfdisk").arg("-q").arg(&disk).stdin(std::fs::File::open(dir.join("layout")).expect("layout")));
    sh_ok(Command::new("mkfs.ext4").args(["-q", "-U", BOOT_UUID, "-E", &format!("offset={PART_START}"), "-d"]).arg(&boot).arg(&disk).arg(format!("{}k", BOOT_LEN / 1024)));
    let key = dir.join("root.key");
    std::fs::write(&key, LUKS_KEY).expect("key file");
    let lo = Loop::attach(&disk, LUKS_START, LUKS_LEN, false);
    sh_ok(Command::new("cryptsetup")
        .args(["luksFormat", "--batch-mode", "--type", "luks2", "--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000", "--hash", "sha256", "--uuid", LUKS_UUID, "--key-file"])
        .arg(&key)
        .arg(lo.path()));
    drop(lo);
    let plain = LuksPlain::open(&disk, dir, true);
    sh_ok(Command::new("mkfs.ext4").args(["-q", "-F", "-U", ROOT_UUID, "-E", "nodiscard", "-d"]).arg(&root).arg(plain.0.path()));
    drop(plain);
    std::fs::remove_dir_all(&root).expect("removing the unpacked root");
    std::fs::remove_dir_all(&boot).expect("removing the unpacked /boot");
    disk
}

/// The plaintext of `make_luks_disk`'s volume as a file (`imaging::luks_fuse`).
struct LuksPlain(imaging::luks_fuse::PlainFile, u64);

impl LuksPlain {
    fn open(disk: &Path, dir: &Path, write: bool) -> LuksPlain {
        let f = std::fs::OpenOptions::new().read(true).write(write).open(disk).expect("disk");
        let vol = imaging::luks::Volume::unlock(&imaging::read_at::Window::new(&f, LUKS_START, LUKS_LEN), LUKS_LEN, LUKS_KEY.as_bytes()).expect("unlocking the test's volume");
        let size = vol.size;
        LuksPlain(imaging::luks_fuse::PlainFile::mount(f, LUKS_START, vol, dir, write, "test").expect("serving the plaintext (FUSE)"), size)
    }
}

/// Files in the initramfs of `make_luks_disk`'s system.
fn initramfs_files_luks(disk: &Path, dir: &Path) -> String {
    let plain = LuksPlain::open(disk, dir, true);
    let out = initramfs_files_with_boot(&plain.0.path(), (0, plain.1), disk, PART_START, dir);
    drop(plain);
    out
}

/// No FUSE mount of rescue's LUKS plaintext of `disk` is left (rescue
/// names each after its disk; another test's mounts are not seen).
fn assert_no_plaintext_mount(disk: &Path) {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mine = format!("rescue-luks:{}:", disk.display());
    assert!(!info.contains(&mine), "a LUKS plaintext mount of {} is left:\n{info}", disk.display());
}

/// A qemu process, killed on drop.
struct Qemu {
    child: Child,
    log: PathBuf,
    name: &'static str,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn accel() -> &'static str {
    if Path::new("/sys/module/kvm_pvm").exists() || !Path::new("/dev/kvm").exists() {
        "tcg"
    } else {
        "kvm"
    }
}

/// Boot `disk` (copy-on-write: `-snapshot`) with the disk on `bus`.
fn boot(disk: &Path, bus: &'static str, dir: &Path) -> Qemu {
    boot_with(disk, bus, dir, None)
}

/// OVMF on q35 with the variable store `vars` (written to).
fn ovmf(c: &mut Command, vars: &Path) {
    c.args(["-machine", "q35", "-drive", "if=pflash,format=raw,unit=0,file=/usr/share/OVMF/OVMF_CODE_4M.fd,readonly=on", "-drive"]).arg(format!("if=pflash,format=raw,unit=1,file={}", vars.display()));
}

/// A fresh OVMF variable store at `at`: no boot entries.
fn fresh_vars(at: &Path) {
    std::fs::copy("/usr/share/OVMF/OVMF_VARS_4M.fd", at).expect("OVMF variable store (package ovmf, scripts/setup)");
}

/// Boot `disk` on `bus`; "nvme-efi" boots by OVMF with the variable store
/// `vars` (default: a fresh one, so firmware must find
/// \EFI\BOOT\BOOTX64.EFI on the ESP by itself).
fn boot_with(disk: &Path, bus: &'static str, dir: &Path, vars: Option<&Path>) -> Qemu {
    static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let log = dir.join(format!("serial-{n}-{bus}.log"));
    let _ = std::fs::remove_file(&log);
    let mut c = Command::new("qemu-system-x86_64");
    if bus == "nvme-efi" {
        let vars = match vars {
            Some(v) => v.to_path_buf(),
            None => {
                let v = dir.join(format!("ovmf-vars-{n}.fd"));
                fresh_vars(&v);
                v
            }
        };
        ovmf(&mut c, &vars);
    }
    c.args(["-accel", accel(), "-m", "1024", "-smp", "1", "-nodefaults", "-display", "none", "-vga", "none", "-no-reboot", "-snapshot"])
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-drive")
        .arg(format!("file={},if=none,id=d,format=raw", disk.display()));
    match bus {
        "nvme" | "nvme-efi" => c.args(["-device", "nvme,drive=d,serial=rescue-ul"]),
        "ahci" => c.args(["-device", "ahci,id=ahci", "-device", "ide-hd,drive=d,bus=ahci.0"]),
        _ => unreachable!("bus {bus}"),
    };
    let child = c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("starting qemu-system-x86_64 (run scripts/setup)");
    Qemu { child, log, name: bus }
}

/// The live rescue system: the static `rescue` and `rescue-init` (built by
/// `scripts/build-media --binaries-only`, as the media tests do) with the
/// Debian kernel in an initramfs made by this workspace's `image-builder
/// initramfs`. Built once per test run.
fn live_system() -> &'static Path {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(|| {
        let ws = repo();
        let t0 = Instant::now();
        sh_ok(Command::new(ws.join("scripts/build-media")).arg("--binaries-only").current_dir(&ws));
        let musl = std::env::var_os("RESCUE_MEDIA_TARGET_DIR").map(PathBuf::from).unwrap_or_else(|| ws.join("target/media")).join("x86_64-unknown-linux-musl/release");
        // This test runs from TARGET/debug/deps; image-builder is built
        // there too (a no-op after `cargo build --workspace`).
        let exe = std::env::current_exe().expect("test binary path");
        let target = exe.ancestors().nth(3).expect("TARGET/debug/deps/test").to_path_buf();
        sh_ok(without_cargo_test_env(&mut Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))).args(["build", "-q", "-p", "image-builder"]).env("CARGO_TARGET_DIR", &target).current_dir(&ws));
        let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("live-system");
        sh_ok(Command::new(target.join("debug/image-builder"))
            .args(["initramfs", "-o"])
            .arg(&out)
            .arg("--rescue")
            .arg(musl.join("rescue"))
            .arg("--init")
            .arg(musl.join("rescue-init"))
            .env("SOURCE_DATE_EPOCH", "1700000000"));
        eprintln!("live system built in {:?}", t0.elapsed());
        out
    })
}

/// Boot the live system with `disk` as its NVMe disk (written to: no
/// `-snapshot`), run `rescue ARGS` there once on the serial console
/// (`rescue.run`), and wait for it to power off. Returns the console text.
fn run_in_live_system(disk: &Path, dir: &Path, args: &str, vars: Option<&Path>) -> String {
    let live = live_system();
    let log = dir.join("live.log");
    let mut c = Command::new("qemu-system-x86_64");
    if let Some(v) = vars {
        // OVMF boots the kernel from qemu (-kernel) as an EFI program.
        ovmf(&mut c, v);
    }
    c.args(["-accel", accel(), "-m", "1536", "-smp", "2", "-nodefaults", "-display", "none", "-vga", "none", "-no-reboot"])
        .arg("-kernel")
        .arg(live.join("vmlinuz"))
        .arg("-initrd")
        .arg(live.join("initramfs.img"))
        .arg("-append")
        .arg(format!("console=ttyS0 rescue.net=off rescue.run=\"{args}\" rescue.after=poweroff"))
        .arg("-serial")
        .arg(format!("file:{}", log.display()))
        .arg("-drive")
        .arg(format!("file={},if=none,id=d,format=raw", disk.display()))
        .args(["-device", "nvme,drive=d,serial=rescue-live"]);
    let child = c.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().expect("starting qemu-system-x86_64 (run scripts/setup)");
    let mut q = Qemu { child, log, name: "live" };
    let limit = Duration::from_secs(std::env::var("UL_QEMU_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(600));
    let t0 = Instant::now();
    loop {
        if let Ok(Some(st)) = q.child.try_wait() {
            let text = log_text(&q);
            assert!(st.success(), "the live system's qemu failed ({st}):\n{}", tail(&text));
            eprintln!("live system: `rescue {args}` and power-off after {:?}", t0.elapsed());
            return text;
        }
        if t0.elapsed() > limit {
            panic!("the live system did not power off within {limit:?} ({} accel):\n{}", accel(), tail(&log_text(&q)));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn log_text(q: &Qemu) -> String {
    let mut s = Vec::new();
    if let Ok(mut f) = std::fs::File::open(&q.log) {
        let _ = f.read_to_end(&mut s);
    }
    String::from_utf8_lossy(&s).into_owned()
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Wait until each qemu's serial log shows one of `want` (ok) or one of
/// `bad` (failure); panic with the log tail on failure or timeout.
fn wait_for(qs: &mut [Qemu], want: &[&str], bad: &[&str]) -> Vec<String> {
    let limit = Duration::from_secs(std::env::var("UL_QEMU_TIMEOUT").ok().and_then(|s| s.parse().ok()).unwrap_or(420));
    let t0 = Instant::now();
    let mut found: Vec<Option<String>> = vec![None; qs.len()];
    while found.iter().any(Option::is_none) {
        for (i, q) in qs.iter_mut().enumerate() {
            if found[i].is_some() {
                continue;
            }
            let text = log_text(q);
            if let Some(b) = bad.iter().find(|b| text.contains(**b)) {
                panic!("{} boot: unexpected {b:?} on the serial console:\n{}", q.name, tail(&text));
            }
            if let Some(w) = want.iter().find(|w| text.contains(**w)) {
                eprintln!("{} boot: {w:?} after {:?}", q.name, t0.elapsed());
                found[i] = Some((*w).to_string());
                let _ = q.child.kill();
                continue;
            }
            if let Ok(Some(st)) = q.child.try_wait() {
                let mut err = String::new();
                if let Some(e) = q.child.stderr.as_mut() {
                    let _ = e.read_to_string(&mut err);
                }
                panic!("{} boot: qemu exited ({st}) before {want:?}: {err}\n{}", q.name, tail(&text));
            }
            if t0.elapsed() > limit {
                panic!("{} boot: no {want:?} within {limit:?} ({} accel):\n{}", q.name, accel(), tail(&text));
            }
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    found.into_iter().flatten().collect()
}

/// `rescue universal-restore DISK --for nvme --for ahci --dry-run`: the
/// plan holds every one of `needles`, and the disk is unchanged and
/// released afterwards.
fn dry_run_plan(disk: &Path, needles: &[&str]) -> String {
    let before = file_hash(disk);
    let plan = rescue_ok(&["universal-restore", disk.to_str().expect("UTF-8 path"), "--for", "nvme", "--for", "ahci", "--dry-run"]);
    for needle in needles {
        assert!(plan.contains(needle), "plan lacks {needle:?}:\n{plan}");
    }
    assert_eq!(before, file_hash(disk), "--dry-run changed the disk");
    assert_released(disk);
    plan
}

/// The initramfs listing `files` has every one of `has` and none of `lacks`.
fn initramfs_has(files: &str, has: &[&str], lacks: &[&str], when: &str) {
    for f in has {
        assert!(files.contains(f), "{f} missing from the initramfs {when}:\n{files}");
    }
    for f in lacks {
        assert!(!files.contains(f), "{f} is in the initramfs {when}");
    }
}

/// No loop device over `disk` and no rescue mount is left.
fn assert_released(disk: &Path) {
    let loops = sh_ok(Command::new("losetup").arg("-j").arg(disk));
    assert!(loops.trim().is_empty(), "loop devices left over {}: {loops}", disk.display());
    // rescue mounts the disk's partitions through loop devices over it:
    // no mount may be of such a device (by device number, so the other test
    // of this file, running at the same time on its own disk, is not seen).
    let want = std::fs::canonicalize(disk).expect("disk path");
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    for line in info.lines() {
        let Some(dev) = line.split(' ').nth(2) else { continue };
        if let Ok(b) = std::fs::read_to_string(format!("/sys/dev/block/{dev}/loop/backing_file")) {
            assert!(Path::new(b.trim()) != want, "a mount over {} is left: {line}", disk.display());
        }
    }
}

#[test]
fn debian_boots_as_nvme_and_ahci_after_universal_restore() {
    require_root();
    let t0 = Instant::now();
    let d = tempfile::Builder::new().prefix("rescue-ul-test").tempdir_in("/var/tmp").expect("temp dir");
    let disk = make_disk(d.path());
    let disk_s = disk.to_str().expect("UTF-8 path");
    eprintln!("disk image ready after {:?}", t0.elapsed());

    // The "old hardware": virtio. This also installs GRUB for BIOS.
    let out = rescue_ok(&["universal-restore", disk_s, "--for", "virtio", "--yes"]);
    assert!(out.contains("update-initramfs -u -k all"), "{out}");
    assert_released(&disk);
    let files = initramfs_files(&disk, d.path());
    initramfs_has(&files, &["virtio_blk.ko"], &["/nvme.ko", "/ahci.ko"], "before the restore");

    // As NVMe it cannot find its root.
    let mut q = [boot(&disk, "nvme", d.path())];
    wait_for(&mut q, &["Gave up waiting for root", "ALERT!"], &[" login:"]);
    drop(q);

    // The plan names the module file and the commands, and writes nothing.
    dry_run_plan(&disk, &["Debian GNU/Linux 12", "add nvme nvme_core ahci libahci", "chroot: update-initramfs -u -k all", "grub-install --target=i386-pc", "update-grub"]);

    let out = rescue_ok(&["universal-restore", disk_s, "--for", "nvme", "--for", "ahci", "--yes"]);
    assert!(out.contains("Universal restore of Debian GNU/Linux 12") && out.contains("/etc/initramfs-tools/modules"), "{out}");
    assert_released(&disk);
    initramfs_has(&initramfs_files(&disk, d.path()), &["/nvme.ko", "/ahci.ko", "/virtio_blk.ko"], &[], "after the restore");
    // Running again adds nothing to the modules file.
    let again = rescue_ok(&["universal-restore", disk_s, "--for", "nvme", "--for", "ahci", "--dry-run"]);
    assert!(!again.contains("write /etc/initramfs-tools/modules"), "{again}");

    // Both boot to a login prompt (in parallel: each is one TCG thread).
    let mut qs = [boot(&disk, "nvme", d.path()), boot(&disk, "ahci", d.path())];
    wait_for(&mut qs, &[" login:"], &["Gave up waiting for root", "ALERT!", "Kernel panic"]);
    drop(qs);
    assert_released(&disk);
    eprintln!("total {:?}", t0.elapsed());
}

/// dracut: the system's initramfs (made by dracut with only a few drivers,
/// as on a machine with a virtio disk) has no NVMe driver; as NVMe it cannot
/// find its root. Universal restore for NVMe regenerates it with dracut
/// (`--add-drivers`, also kept in a dracut.conf.d file for later kernels),
/// installs GRUB, and it boots from NVMe to a login prompt.
#[test]
fn debian_with_dracut_boots_as_nvme_after_universal_restore() {
    require_root();
    let t0 = Instant::now();
    let d = tempfile::Builder::new().prefix("rescue-dracut-test").tempdir_in("/var/tmp").expect("temp dir");
    // rd.timeout: give up on the missing root within the test's patience.
    let disk = make_disk_from(d.path(), &DRACUT_ROOTFS, |root| put(root, "etc/default/grub.d/rescue-test.cfg", "GRUB_CMDLINE_LINUX=\"$GRUB_CMDLINE_LINUX rd.timeout=60 rd.retry=20\"\n"));
    let disk_s = disk.to_str().expect("UTF-8 path");
    eprintln!("dracut disk image ready after {:?}", t0.elapsed());
    let files = initramfs_files_in(&disk, d.path(), PART_START, DISK_SIZE - PART_START, "lsinitrd");
    assert!(files.contains("virtio_blk.ko"), "the old initramfs lacks virtio_blk:\n{files}");
    assert!(!files.contains("/nvme.ko"), "nvme is in the initramfs before the restore");

    let plan = rescue_ok(&["universal-restore", disk_s, "--for", "nvme", "--dry-run"]);
    for needle in ["Debian GNU/Linux 12", "(dracut, boot loader: bios)", "add_drivers nvme", "dracut -f --regenerate-all --no-hostonly --add-drivers", "grub-install --target=i386-pc"] {
        assert!(plan.contains(needle), "plan lacks {needle:?}:\n{plan}");
    }
    assert_released(&disk);
    let out = rescue_ok(&["universal-restore", disk_s, "--for", "nvme", "--yes"]);
    assert!(out.contains("90-rescue-universal-restore.conf"), "{out}");
    assert_released(&disk);
    let files = initramfs_files_in(&disk, d.path(), PART_START, DISK_SIZE - PART_START, "lsinitrd");
    assert!(files.contains("/nvme.ko"), "nvme missing from the initramfs after the restore");

    let mut q = [boot(&disk, "nvme", d.path())];
    wait_for(&mut q, &[" login:"], &["Kernel panic", "emergency mode", "Could not boot", "does not exist"]);
    drop(q);
    assert_released(&disk);
    eprintln!("total {:?}", t0.elapsed());
}

/// A root on LVM (Debian's installer layout with LVM: the volume group on
/// its own partition, fstab by `/dev/mapper`, `/boot` and the ESP on
/// partitions) on a GPT disk set up for BIOS and EFI, made with lvm2
/// without device-mapper; its initramfs lacks NVMe and AHCI and no boot
/// loader is installed yet. This machine plans the fix (`--dry-run`: it
/// cannot mount the ESP, having no vfat). The fix itself runs where
/// technicians run it: in the live rescue system (its Debian kernel, no
/// mount or chroot programs) booted in qemu with the disk as its NVMe
/// drive. `rescue` finds the root in the volume group without activating
/// it, mounts it as the byte range it is, rebuilds the initramfs (keeping
/// lvm2's hook and udev rules) and installs GRUB for BIOS and for EFI
/// (with the removable-media path). The disk then boots from NVMe under
/// OVMF and from AHCI under SeaBIOS: each initramfs activates the volume
/// group and finds the root.
#[test]
fn debian_on_lvm_boots_by_efi_and_bios_after_universal_restore_in_the_live_system() {
    require_root();
    let t0 = Instant::now();
    let d = tempfile::Builder::new().prefix("rescue-lvm-test").tempdir_in("/var/tmp").expect("temp dir");
    let (disk, root) = make_lvm_disk(d.path());
    eprintln!("LVM disk image ready after {:?}", t0.elapsed());
    let files = initramfs_files_lvm(&disk, d.path(), root);
    initramfs_has(&files, &["virtio_blk.ko", "dm-mod.ko", "sbin/lvm", "69-lvm.rules"], &["/nvme.ko", "/ahci.ko"], "before the restore");

    dry_run_plan(
        &disk,
        &[
            "on LVM volume debian-vg/root (partition 4) (initramfs-tools, boot loader: bios+efi)",
            "partition 3 (ext4) at /boot, partition 2 (vfat) at /boot/efi",
            "add nvme nvme_core ahci libahci",
            "grub-install --target=i386-pc '--modules=part_gpt part_msdos' <disk>",
            "grub-install --target=x86_64-efi --efi-directory=/boot/efi '--modules=part_gpt part_msdos' --removable --no-nvram",
            "note: no firmware boot entry is made (not on the machine it will boot in",
        ],
    );

    // On the machine itself (q35 + OVMF, the disk as NVMe): its own
    // controllers (NVMe, q35's AHCI), and a firmware boot entry.
    let vars = d.path().join("machine-vars.fd");
    fresh_vars(&vars);
    let text = run_in_live_system(&disk, d.path(), "universal-restore /dev/nvme0n1 --yes", Some(&vars));
    for needle in [
        "Universal restore of Debian GNU/Linux 12 (bookworm) on LVM volume debian-vg/root (partition 4)",
        "firmware boot entry for GRUB on the ESP (partition 2) on this machine",
        "\"debian\" (\\EFI\\debian\\grubx64.efi), first in the boot order",
    ] {
        assert!(text.contains(needle), "the live system's output lacks {needle:?}:\n{}", tail(&text));
    }
    eprintln!("{}", text.lines().find(|l| l.contains("Firmware boot entry")).unwrap_or_default());
    initramfs_has(&initramfs_files_lvm(&disk, d.path(), root), &["/nvme.ko", "/ahci.ko"], &[], "after the restore");
    // The ESP (read with mtools: this machine's kernel has no vfat).
    let esp = sh_ok(Command::new("mdir").env("MTOOLS_SKIP_CHECK", "1").args(["-/", "-b", "-i"]).arg(format!("{}@@{ESP_START}", disk.display())).arg("::/EFI"));
    for f in ["BOOT/BOOTX64.EFI", "debian/grubx64.efi"] {
        assert!(esp.to_lowercase().contains(&f.to_lowercase()), "{f} missing from the ESP:\n{esp}");
    }
    // Without the fallback loader the firmware can only boot through the
    // entry universal restore made.
    sh_ok(Command::new("mdel").env("MTOOLS_SKIP_CHECK", "1").arg("-i").arg(format!("{}@@{ESP_START}", disk.display())).arg("::/EFI/BOOT/BOOTX64.EFI"));

    let mut qs = [boot_with(&disk, "nvme-efi", d.path(), Some(&vars)), boot(&disk, "ahci", d.path())];
    wait_for(&mut qs, &[" login:"], &["Gave up waiting for root", "ALERT!", "Kernel panic", "Volume group \"debian-vg\" not found"]);
    drop(qs);
    assert_released(&disk);
    eprintln!("total {:?}", t0.elapsed());
}

/// A root on md RAID1 (Debian's installer layout for a mirror, both
/// members on this disk, metadata 1.2), fixed by a machine without md:
/// `rescue` reads the array's superblocks itself, mounts the filesystem
/// through member 1's data range, rebuilds the initramfs (keeping mdadm's
/// hook) and installs GRUB with `mdraid1x` in core.img (/boot/grub is in
/// the array). Afterwards member 2 is brought up to date with what changed
/// and both members' event counts are raised: `mdadm --examine` reads them
/// as valid, the data ranges are equal, and the disk boots from NVMe and
/// from AHCI, the initramfs assembling the array with both mirrors. Then
/// member 2 is wiped, as on a new machine that got one disk of the mirror:
/// a second run raises member 1's event count past the absent member's,
/// and the system boots with the array degraded (1 of 2 mirrors).
#[test]
fn debian_on_md_raid1_boots_after_universal_restore() {
    require_root();
    let t0 = Instant::now();
    let d = tempfile::Builder::new().prefix("rescue-md-test").tempdir_in("/var/tmp").expect("temp dir");
    let disk = make_md_disk(d.path());
    let disk_s = disk.to_str().expect("UTF-8 path");
    eprintln!("md RAID1 disk image ready after {:?}", t0.elapsed());
    for n in [1, 2] {
        let ex = md_examine(&disk, n);
        for want in ["Raid Level : raid1", "Events : 10", "- correct", "Array State : AA"] {
            assert!(ex.contains(want), "member {n} before: {want:?} missing:\n{ex}");
        }
    }
    let files = initramfs_files_in(&disk, d.path(), md_member_start(1) + (1 << 20), MD_DATA, "lsinitramfs");
    initramfs_has(&files, &["virtio_blk.ko", "/raid1.ko", "sbin/mdadm", "etc/mdadm/mdadm.conf"], &["/nvme.ko", "/ahci.ko"], "before the restore");

    dry_run_plan(
        &disk,
        &[
            "mount md RAID1 rescue-ul:0 (partitions 1, 2) (ext4) at /",
            "add nvme nvme_core ahci libahci",
            "grub-install --target=i386-pc '--modules=mdraid1x part_gpt part_msdos' <disk>",
            "md RAID1 rescue-ul:0 (partitions 1, 2): written through partition 1, then what changed is copied to partition 2",
        ],
    );

    let out = rescue_ok(&["universal-restore", disk_s, "--for", "nvme", "--for", "ahci", "--yes"]);
    eprintln!("{}", out.lines().filter(|l| l.contains("md RAID1")).collect::<Vec<_>>().join("\n"));
    assert!(out.contains("md RAID1 rescue-ul:0 (partitions 1, 2): ") && out.contains("copied from partition 1 to partition 2; event count raised to 11"), "{out}");
    assert_released(&disk);
    for n in [1, 2] {
        let ex = md_examine(&disk, n);
        for want in ["Events : 11", "- correct", "Array State : AA", "State : clean"] {
            assert!(ex.contains(want), "member {n} after: {want:?} missing:\n{ex}");
        }
    }
    assert_eq!(hash_range(&disk, md_member_start(1) + (1 << 20), MD_DATA), hash_range(&disk, md_member_start(2) + (1 << 20), MD_DATA), "the members' data differ");
    let files = initramfs_files_in(&disk, d.path(), md_member_start(1) + (1 << 20), MD_DATA, "lsinitramfs");
    initramfs_has(&files, &["/nvme.ko", "/ahci.ko", "/raid1.ko", "sbin/mdadm"], &[], "after the restore");

    let mut qs = [boot(&disk, "nvme", d.path()), boot(&disk, "ahci", d.path())];
    wait_for(&mut qs, &[" login:"], &["Gave up waiting for root", "ALERT!", "Kernel panic", "grub rescue>"]);
    for q in &qs {
        let text = log_text(q);
        assert!(text.contains("active with 2 out of 2 mirrors"), "{}: the array was not assembled from both members:\n{}", q.name, tail(&text));
        eprintln!("{}: {}", q.name, text.lines().find(|l| l.contains("out of 2 mirrors")).unwrap_or_default().trim());
    }
    drop(qs);
    assert_released(&disk);

    // One disk of a two-disk mirror on the new machine: member 2 is gone
    // (its superblock wiped). Member 1 alone is fixed, its event count
    // raised past the absent member's, and the system boots degraded
    // (Debian's initramfs starts a degraded array 2/3 into its wait for
    // the root, max(30 s, rootdelay)).
    {
        use std::os::unix::fs::FileExt;
        let f = std::fs::OpenOptions::new().write(true).open(&disk).expect("disk");
        f.write_all_at(&[0u8; 4096], md_member_start(2) + 4096).expect("wiping member 2's superblock");
    }
    let out = rescue_ok(&["universal-restore", disk_s, "--for", "nvme", "--yes"]);
    assert!(out.contains("md RAID1 rescue-ul:0 (partition 1): event count raised to 12 (1 member elsewhere now out of date: recovered in full when added back)"), "{out}");
    assert_released(&disk);
    let ex = md_examine(&disk, 1);
    assert!(ex.contains("Events : 12") && ex.contains("- correct"), "member 1 after the second run:\n{ex}");
    let mut q = [boot(&disk, "nvme", d.path())];
    wait_for(&mut q, &[" login:"], &["Gave up waiting for root", "ALERT!", "Kernel panic", "grub rescue>"]);
    let text = log_text(&q[0]);
    assert!(text.contains("active with 1 out of 2 mirrors"), "the array did not start degraded from member 1:\n{}", tail(&text));
    eprintln!("nvme, degraded: {}", text.lines().find(|l| l.contains("out of 2 mirrors")).unwrap_or_default().trim());
    drop(q);
    assert_released(&disk);
    eprintln!("total {:?}", t0.elapsed());
}

/// A root in LUKS2 (Debian's encrypted layout without LVM: `/boot` on its
/// own partition, crypttab with a key file in the initramfs), fixed by a
/// machine without dm-crypt: `rescue` unlocks the volume with the
/// passphrase given (`--luks-key-file`), mounts the root through its
/// plaintext, adds the `initramfs` option to the root's crypttab line (the
/// hook cannot see the volume through that mount), rebuilds the initramfs
/// with the NVMe and AHCI drivers and installs GRUB. Without the passphrase
/// the system is not found, and the message says why. The disk then boots
/// from NVMe and from AHCI: each initramfs unlocks the volume with the
/// kernel's dm-crypt and mounts the root.
#[test]
fn debian_in_luks_boots_after_universal_restore() {
    require_root();
    let t0 = Instant::now();
    let d = tempfile::Builder::new().prefix("rescue-luks-test").tempdir_in("/var/tmp").expect("temp dir");
    let disk = make_luks_disk(d.path());
    let disk_s = disk.to_str().expect("UTF-8 path");
    let key = d.path().join("root.key");
    let key_s = key.to_str().expect("UTF-8 path");
    eprintln!("LUKS disk image ready after {:?}", t0.elapsed());

    let out = rescue_fails(&["universal-restore", disk_s, "--for", "nvme", "--dry-run"], 1, "partition 2: it is encrypted (LUKS), and no passphrase was given (--luks-key-file FILE");
    assert!(out.contains("hint: give the passphrase of encrypted partition 2: --luks-key-file FILE"), "{out}");
    assert!(!out.contains(LUKS_KEY), "{out}");
    let before = file_hash(&disk);
    let plan = rescue_ok(&["universal-restore", disk_s, "--for", "nvme", "--for", "ahci", "--luks-key-file", key_s, "--dry-run"]);
    for needle in [
        "Linux: Debian GNU/Linux 12 (bookworm) on partition 2 (initramfs-tools, boot loader: bios)",
        "mount encrypted partition 2 (LUKS2) (ext4) at /, partition 1 (ext4) at /boot",
        "write /etc/crypttab: option `initramfs` for root_crypt",
        "add nvme nvme_core ahci libahci",
        "chroot: update-initramfs -u -k all",
        "grub-install --target=i386-pc",
        &format!("note: encrypted partition 2 (LUKS2) (UUID {LUKS_UUID}) is unlocked here"),
    ] {
        assert!(plan.contains(needle), "plan lacks {needle:?}:\n{plan}");
    }
    assert_eq!(before, file_hash(&disk), "--dry-run changed the disk");
    assert_released(&disk);
    assert_no_plaintext_mount(&disk);

    let out = rescue_ok(&["universal-restore", disk_s, "--for", "nvme", "--for", "ahci", "--luks-key-file", key_s, "--yes"]);
    assert!(out.contains("Universal restore of Debian GNU/Linux 12 (bookworm) on partition 2: wrote /etc/crypttab, /etc/initramfs-tools/modules"), "{out}");
    assert_released(&disk);
    assert_no_plaintext_mount(&disk);
    let files = initramfs_files_luks(&disk, d.path());
    initramfs_has(&files, &["/nvme.ko", "/ahci.ko", "/dm-crypt.ko", "sbin/cryptsetup", "cryptroot/crypttab", "cryptroot/keyfiles/root_crypt.key"], &[], "after the restore");
    assert_no_plaintext_mount(&disk);

    let mut qs = [boot(&disk, "nvme", d.path()), boot(&disk, "ahci", d.path())];
    wait_for(&mut qs, &[" login:"], &["Gave up waiting for root", "ALERT!", "Kernel panic", "cryptsetup: ERROR", "No key available"]);
    for q in &qs {
        let text = log_text(q);
        assert!(text.contains("root_crypt: set up successfully"), "{}: the initramfs did not unlock the volume:\n{}", q.name, tail(&text));
    }
    drop(qs);
    assert_released(&disk);
    eprintln!("total {:?}", t0.elapsed());
}

/// Debian's installer default "encrypted LVM": `/boot` on partition 1, a
/// LUKS1 volume on partition 2 holding the volume group with the root.
/// The system is a stand-in (the files the plan reads), so only the plan is
/// checked: the volume group is found inside the plaintext without
/// device-mapper, the root's volume is named with the encrypted partition
/// it is in, and the crypttab line of that partition gets `initramfs`;
/// the disk is unchanged and nothing stays mounted.
#[test]
fn a_root_on_lvm_inside_luks_is_planned() {
    require_root();
    let d = tempfile::Builder::new().prefix("rescue-luks-lvm-test").tempdir_in("/var/tmp").expect("temp dir");
    let dir = d.path();
    let uuid = "2f3e4d5c-6b7a-4988-a766-554433221100";
    let root = dir.join("root");
    put(&root, "etc/os-release", "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n");
    put(&root, "etc/fstab", &format!("/dev/mapper/debian--vg-root / ext4 errors=remount-ro 0 1\nUUID={BOOT_UUID} /boot ext4 defaults 0 2\n"));
    put(&root, "etc/crypttab", &format!("sda2_crypt UUID={uuid} none luks,discard\n"));
    for f in ["usr/sbin/update-initramfs", "usr/sbin/grub-install", "usr/sbin/update-grub", "usr/share/initramfs-tools/hooks/cryptroot", "usr/lib/grub/i386-pc/modinfo.sh"] {
        put(&root, f, "");
    }
    put(&root, "usr/lib/modules/6.1.0-13-amd64/modules.dep", "kernel/drivers/nvme/host/nvme.ko: kernel/drivers/nvme/host/nvme-core.ko\nkernel/drivers/nvme/host/nvme-core.ko:\n");
    let disk = new_file(dir, "luks-lvm.img", 320 << 20);
    put(dir, "layout", "label: dos\nstart=1MiB, size=32MiB, type=83, bootable\nstart=33MiB, type=83\n");
    sh_ok(Command::new("sfdisk").arg("-q").arg(&disk).stdin(std::fs::File::open(dir.join("layout")).expect("layout")));
    sh_ok(Command::new("mkfs.ext4").args(["-q", "-U", BOOT_UUID, "-E", &format!("offset={PART_START}")]).arg(&disk).arg("32M"));
    let (start, len) = (33u64 << 20, (320u64 - 34) << 20);
    let key = dir.join("key");
    std::fs::write(&key, "lvm in luks").expect("key file");
    let lo = Loop::attach(&disk, start, len, false);
    sh_ok(Command::new("cryptsetup").args(["luksFormat", "--batch-mode", "--type", "luks1", "--pbkdf-force-iterations", "1000", "--uuid", uuid, "--key-file"]).arg(&key).arg(lo.path()));
    drop(lo);
    {
        let f = std::fs::OpenOptions::new().read(true).write(true).open(&disk).expect("disk");
        let vol = imaging::luks::Volume::unlock(&imaging::read_at::Window::new(&f, start, len), len, b"lvm in luks").expect("unlocking");
        let size = vol.size;
        let plain = imaging::luks_fuse::PlainFile::mount(f, start, vol, dir, true, "test").expect("FUSE");
        let lvs = lvm_layout(&plain.path(), 0, size, "debian-vg", &[("root", 128), ("swap_1", 16)], |_| {});
        let (s, l) = lvs["root"];
        sh_ok(Command::new("mkfs.ext4").args(["-q", "-U", ROOT_UUID, "-E", &format!("offset={s},nodiscard"), "-d"]).arg(&root).arg(plain.path()).arg(format!("{}k", l / 1024)));
    }
    let before = file_hash(&disk);
    let plan = rescue_ok(&["universal-restore", disk.to_str().expect("UTF-8"), "--for", "nvme", "--luks-key-file", key.to_str().expect("UTF-8"), "--dry-run"]);
    for needle in [
        "Linux: Debian GNU/Linux 12 (bookworm) on LVM volume debian-vg/root (partition 2) (initramfs-tools, boot loader: bios)",
        "mount LVM volume debian-vg/root (in the encrypted partition 2 (LUKS1)) (ext4) at /, partition 1 (ext4) at /boot",
        "write /etc/crypttab: option `initramfs` for sda2_crypt",
        "chroot: update-initramfs -u -k all",
        "grub-install --target=i386-pc '--modules=part_gpt part_msdos' <disk>",
    ] {
        assert!(plan.contains(needle), "plan lacks {needle:?}:\n{plan}");
    }
    assert_eq!(before, file_hash(&disk), "--dry-run changed the disk");
    assert_released(&disk);
    assert_no_plaintext_mount(&disk);
}
