//! mount(2), umount2(2), mknod(2), sync(2) and chroot(2) without the
//! programs of the same names: the live rescue system ships `rescue`, a few
//! filesystem tools and no util-linux `mount` or coreutils, so everything
//! that mounts (the image stores on local disks, universal restore's
//! chroot) calls the kernel directly. Every `unsafe` block of this module
//! is here, each with its invariants.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::Command;

fn cstr(p: &[u8]) -> io::Result<CString> {
    CString::new(p).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a path or option contains a NUL byte"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn raw_mount(source: &[u8], target: &Path, fstype: Option<&str>, flags: libc::c_ulong, data: &str) -> io::Result<()> {
    let source = cstr(source)?;
    let target = cstr(target.as_os_str().as_bytes())?;
    let fstype = fstype.map(|t| cstr(t.as_bytes())).transpose()?;
    let data = cstr(data.as_bytes())?;
    // SAFETY: every pointer is a NUL-terminated string owned by this frame
    // (or null for the type of a bind mount, which the kernel then ignores);
    // mount(2) only reads them during the call.
    check(unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ref().map_or(std::ptr::null(), |t| t.as_ptr()),
            flags,
            data.as_ptr().cast(),
        )
    })
}

/// The filesystem type the kernel registers for a name `mount -t` takes:
/// ext2 and ext3 are mounted by the ext4 driver (kernels without separate
/// ext2/ext3 drivers register only `ext4`).
fn kernel_type(fstype: &str) -> &str {
    match fstype {
        "ext2" | "ext3" => "ext4",
        t => t,
    }
}

/// Mount `source` (a block device) on `target` as `fstype` with `mount -o`
/// style `options` (`ro`/`rw` become flags, the rest is passed to the
/// filesystem: `noload`, `norecovery`, `umask=0077`).
pub fn mount(source: &Path, target: &Path, fstype: &str, options: &str) -> io::Result<()> {
    let mut flags: libc::c_ulong = 0;
    let mut data = Vec::new();
    for o in options.split(',').filter(|o| !o.is_empty()) {
        match o {
            "ro" => flags |= libc::MS_RDONLY,
            "rw" | "defaults" => {}
            "nosuid" => flags |= libc::MS_NOSUID,
            "nodev" => flags |= libc::MS_NODEV,
            "noexec" => flags |= libc::MS_NOEXEC,
            o => data.push(o),
        }
    }
    raw_mount(source.as_os_str().as_bytes(), target, Some(kernel_type(fstype)), flags, &data.join(","))
        .map_err(|e| explain(e, &format!("mounting {} on {} as {fstype}", source.display(), target.display()), fstype))
}

/// A tmpfs named `name` on `target` with `options` (e.g. `mode=0755,size=16m`).
pub fn mount_tmpfs(name: &str, target: &Path, options: &str) -> io::Result<()> {
    raw_mount(name.as_bytes(), target, Some("tmpfs"), libc::MS_NOSUID, options).map_err(|e| explain(e, &format!("mounting a tmpfs on {}", target.display()), "tmpfs"))
}

/// `mount --bind source target`.
pub fn bind(source: &Path, target: &Path) -> io::Result<()> {
    raw_mount(source.as_os_str().as_bytes(), target, None, libc::MS_BIND, "").map_err(|e| explain(e, &format!("bind-mounting {} on {}", source.display(), target.display()), ""))
}

fn explain(e: io::Error, what: &str, fstype: &str) -> io::Error {
    let why = match e.raw_os_error() {
        Some(libc::ENODEV) => format!("this kernel has no {fstype} filesystem driver loaded"),
        Some(libc::EINVAL) if !fstype.is_empty() => format!("not a valid {fstype} filesystem, or options it does not take ({e})"),
        Some(libc::EBUSY) => format!("already mounted or in use ({e})"),
        _ => e.to_string(),
    };
    io::Error::new(e.kind(), format!("{what}: {why}"))
}

/// Unmount `target`; `lazy` detaches it now and lets the kernel finish when
/// it is no longer busy (`umount -l`).
pub fn unmount(target: &Path, lazy: bool) -> io::Result<()> {
    let t = cstr(target.as_os_str().as_bytes())?;
    let flags = if lazy { libc::MNT_DETACH } else { 0 };
    // SAFETY: `t` is a NUL-terminated string that lives across the call;
    // umount2 only reads it.
    check(unsafe { libc::umount2(t.as_ptr(), flags) })
}

/// Write every filesystem's dirty data to its disk (`sync`).
pub fn sync() {
    // SAFETY: sync(2) takes no arguments and cannot fail.
    unsafe { libc::sync() }
}

/// Make a device node at `at` with the type and number of the device `like`.
pub fn mknod_like(like: &Path, at: &Path) -> io::Result<()> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let meta = std::fs::metadata(like)?;
    let kind = if meta.file_type().is_block_device() {
        libc::S_IFBLK
    } else if meta.file_type().is_char_device() {
        libc::S_IFCHR
    } else {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("{} is not a device", like.display())));
    };
    let path = cstr(at.as_os_str().as_bytes())?;
    // SAFETY: `path` is a NUL-terminated string that lives across the call;
    // mode and device number are plain integers.
    check(unsafe { libc::mknod(path.as_ptr(), kind | 0o600, meta.rdev() as libc::dev_t) })
}

/// Clear a file's immutable attribute (`chattr -i`), as efivarfs sets it on
/// firmware variables; a filesystem without attributes is left alone.
pub fn clear_immutable(path: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    const FS_IMMUTABLE_FL: libc::c_long = 0x10;
    let f = std::fs::File::open(path)?;
    let mut flags: libc::c_long = 0;
    // SAFETY: FS_IOC_GETFLAGS writes one long through a pointer to a local
    // that outlives the call, on a descriptor this frame owns.
    let got = unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_GETFLAGS, &mut flags) };
    if got != 0 || flags & FS_IMMUTABLE_FL == 0 {
        return Ok(());
    }
    flags &= !FS_IMMUTABLE_FL;
    // SAFETY: as above; FS_IOC_SETFLAGS only reads the long.
    check(unsafe { libc::ioctl(f.as_raw_fd(), libc::FS_IOC_SETFLAGS, &flags) })
}

/// Run `cmd` with `root` as its root directory (`chroot ROOT CMD`): the
/// child changes root and directory between fork and exec. Its program
/// name is looked up in the new root's PATH (the command's environment).
pub fn chroot_on_exec(cmd: &mut Command, root: &Path) -> io::Result<()> {
    let root = cstr(root.as_os_str().as_bytes())?;
    let slash = cstr(b"/")?;
    // SAFETY: the closure runs in the forked child before exec and calls only
    // chroot(2) and chdir(2), which are async-signal-safe; it allocates
    // nothing (both strings were made before the fork and are moved in).
    unsafe {
        cmd.pre_exec(move || {
            if libc::chroot(root.as_ptr()) != 0 || libc::chdir(slash.as_ptr()) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Root only (CI is root): a tmpfs, a bind mount of it, read-only
    /// remount refusals, and a chrooted command that sees the new root.
    #[test]
    fn mounts_binds_and_chroots() {
        if !is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let t = tempfile::tempdir().expect("tmp");
        let a = t.path().join("a");
        let b = t.path().join("b");
        std::fs::create_dir_all(&a).expect("mkdir");
        std::fs::create_dir_all(&b).expect("mkdir");
        mount_tmpfs("rescue-test", &a, "mode=0755,size=1m").expect("tmpfs");
        std::fs::write(a.join("hello"), "hi").expect("write");
        bind(&a, &b).expect("bind");
        assert_eq!(std::fs::read_to_string(b.join("hello")).expect("read through the bind"), "hi");
        // The program is looked up in the new root: its /hello is found
        // (and refused as not executable); this machine has no /hello.
        assert!(!Path::new("/hello").exists());
        let mut c = Command::new("/hello");
        chroot_on_exec(&mut c, &a).expect("chroot");
        let e = c.output().expect_err("/hello is no program");
        assert_eq!(e.kind(), io::ErrorKind::PermissionDenied, "{e}: the chroot's /hello was found (not executable)");
        unmount(&b, false).expect("umount bind");
        unmount(&a, true).expect("umount lazily");
        assert!(!a.join("hello").exists(), "the tmpfs is gone");
        let e = mount(&t.path().join("nope"), &a, "ext4", "ro,noload").expect_err("no such device");
        assert!(e.to_string().contains("as ext4"), "{e}");
        assert!(mount(Path::new("x"), &a, "ext4", "a\0b").is_err());
        sync();
    }

    fn is_root() -> bool {
        std::fs::read_to_string("/proc/self/status").unwrap_or_default().lines().any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"))
    }
}
