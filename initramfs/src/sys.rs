//! The system calls PID 1 needs and the standard library does not offer:
//! mount/umount, finit_module, reboot, signal masks, waitpid(-1), kill, a
//! new session with a controlling terminal for children, the netdevice(7)
//! ioctls that configure an interface (up, IPv4 address, MTU, default route),
//! a UDP socket bound to one interface for DHCP, and the kernel's uevent
//! netlink socket. Every `unsafe` block of the crate is here.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::time::Duration;

fn cstr(s: &str) -> io::Result<CString> {
    CString::new(s).map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL byte in argument"))
}

fn check(r: libc::c_int) -> io::Result<()> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// mount(2) with a data string (may be empty).
pub fn mount(
    source: &str,
    target: &str,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> io::Result<()> {
    let (s, t, f, d) = (cstr(source)?, cstr(target)?, cstr(fstype)?, cstr(data)?);
    // SAFETY: all pointers are valid NUL-terminated strings that outlive the
    // call; the kernel copies them and keeps no reference.
    check(unsafe { libc::mount(s.as_ptr(), t.as_ptr(), f.as_ptr(), flags, d.as_ptr().cast()) })
}

/// umount2(2); `detach` = MNT_DETACH (lazy).
pub fn umount(target: &str, detach: bool) -> io::Result<()> {
    let t = cstr(target)?;
    let flags = if detach { libc::MNT_DETACH } else { 0 };
    // SAFETY: `t` is a valid NUL-terminated string for the call's duration.
    check(unsafe { libc::umount2(t.as_ptr(), flags) })
}

/// finit_module(2) without parameters. The file is an uncompressed `.ko`.
pub fn finit_module(f: &impl AsRawFd) -> io::Result<()> {
    let params = c"";
    // SAFETY: the fd is valid while `f` lives; `params` is a static empty C
    // string; flags 0. The kernel reads the file itself.
    let r = unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// How to stop the machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Off,
    Reboot,
    Halt,
}

/// reboot(2). Returns only on failure.
pub fn reboot(how: Power) -> io::Error {
    let cmd = match how {
        Power::Off => libc::RB_POWER_OFF,
        Power::Reboot => libc::RB_AUTOBOOT,
        Power::Halt => libc::RB_HALT_SYSTEM,
    };
    // SAFETY: reboot takes a constant command; it has no memory arguments.
    unsafe { libc::reboot(cmd) };
    io::Error::last_os_error()
}

/// sync(2).
/// mknod(2): a character (`block` false) or block device node, mode 0600.
pub fn mknod(path: &str, block: bool, major: u32, minor: u32) -> io::Result<()> {
    let p = cstr(path)?;
    let kind = if block { libc::S_IFBLK } else { libc::S_IFCHR };
    // SAFETY: `p` is a valid NUL-terminated string for the call's duration;
    // mode and device number are plain integers.
    check(unsafe { libc::mknod(p.as_ptr(), kind | 0o600, libc::makedev(major, minor)) })
}

pub fn sync() {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::sync() }
}

fn sigset(signals: &[libc::c_int]) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it fully before
    // sigaddset reads it, and both only touch the set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Block these signals so they are only received through [`wait_signal`].
/// (`std::process::Command` resets the mask in its children.)
pub fn block_signals(signals: &[libc::c_int]) -> io::Result<()> {
    let set = sigset(signals);
    // SAFETY: `set` is initialised; the old-set pointer may be null.
    let r = unsafe { libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    check(r)
}

/// Wait up to `timeout` for one of the (blocked) `signals`.
pub fn wait_signal(signals: &[libc::c_int], timeout: Duration) -> Option<libc::c_int> {
    let set = sigset(signals);
    let ts = libc::timespec {
        tv_sec: timeout.as_secs().min(3600).try_into().unwrap_or(3600),
        tv_nsec: libc::c_long::from(timeout.subsec_nanos() as i32),
    };
    // SAFETY: `set` and `ts` are initialised and outlive the call; the
    // siginfo pointer may be null.
    let r = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    (r > 0).then_some(r)
}

/// Reap one exited child, any child: Some((pid, exit code or 128+signal)).
pub fn reap_any() -> Option<(u32, i32)> {
    let mut status: libc::c_int = 0;
    // SAFETY: `status` is a valid out pointer; WNOHANG makes it non-blocking.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid <= 0 {
        return None;
    }
    let code = if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else if libc::WIFSIGNALED(status) {
        128 + libc::WTERMSIG(status)
    } else {
        -1
    };
    Some((pid as u32, code))
}

/// kill(2).
pub fn kill(pid: i32, signal: libc::c_int) -> io::Result<()> {
    // SAFETY: kill has no memory arguments.
    check(unsafe { libc::kill(pid, signal) })
}

/// Make the child a session leader with its stdin (a tty) as controlling
/// terminal, so job control and Ctrl-C work in `rescue` and the shell.
pub fn controlling_tty(cmd: &mut Command) {
    // SAFETY: the closure runs between fork and exec and only calls the
    // async-signal-safe setsid(2) and ioctl(2); it allocates nothing.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(io::Error::last_os_error());
            }
            // Failure is fine: the console may not be a tty (e.g. /dev/null).
            libc::ioctl(0, libc::TIOCSCTTY, 1);
            Ok(())
        });
    }
}

/// Give a terminal that reports a 0x0 size (a serial line) a default size,
/// so full-screen programs have something to draw on.
pub fn default_winsize(f: &impl AsRawFd, cols: u16, rows: u16) {
    // SAFETY: `ws` is a valid, initialised winsize for both ioctls; the fd is
    // valid while `f` lives. Errors (not a tty) are ignored on purpose.
    unsafe {
        let mut ws: libc::winsize = std::mem::zeroed();
        if libc::ioctl(f.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) == 0
            && (ws.ws_col == 0 || ws.ws_row == 0)
        {
            ws.ws_col = cols;
            ws.ws_row = rows;
            libc::ioctl(f.as_raw_fd(), libc::TIOCSWINSZ, &ws);
        }
    }
}

// ---- Network interfaces (netdevice(7) ioctls on an AF_INET socket) ----

/// A throwaway AF_INET datagram socket for interface ioctls.
fn inet_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new
    // descriptor that nothing else owns.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An `ifreq` naming interface `name`.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains('\0') {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad interface name",
        ));
    }
    // SAFETY: ifreq is plain data (a name array and a union of plain data);
    // all-zero is a valid value.
    let mut r: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in r.ifr_name.iter_mut().zip(name.bytes()) {
        *d = s as libc::c_char;
    }
    Ok(r)
}

fn sockaddr_in(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes(addr.octets()),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr are both 16-byte plain-data C structs
    // (the kernel reads the former through the latter for AF_INET).
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

/// ioctl(2) with an `ifreq` on `fd`.
fn ifreq_ioctl(fd: &OwnedFd, request: libc::c_ulong, r: &mut libc::ifreq) -> io::Result<()> {
    // SAFETY: `r` is a valid, initialised ifreq that outlives the call; the
    // request codes used here read or write only an ifreq.
    check(unsafe { libc::ioctl(fd.as_raw_fd(), request as _, r as *mut libc::ifreq) })
}

/// Set IFF_UP on interface `name`.
pub fn link_up(name: &str) -> io::Result<()> {
    let fd = inet_socket()?;
    let mut r = ifreq(name)?;
    ifreq_ioctl(&fd, libc::SIOCGIFFLAGS, &mut r)?;
    // SAFETY: SIOCGIFFLAGS filled the `ifru_flags` member of the union.
    let flags = unsafe { r.ifr_ifru.ifru_flags };
    r.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    ifreq_ioctl(&fd, libc::SIOCSIFFLAGS, &mut r)
}

/// Give interface `name` the address `addr/prefix` (the kernel derives the
/// broadcast address and the route to the subnet); 0.0.0.0 removes it.
pub fn set_ipv4(name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let fd = inet_socket()?;
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_addr = sockaddr_in(addr);
    ifreq_ioctl(&fd, libc::SIOCSIFADDR, &mut r)?;
    if addr.is_unspecified() {
        return Ok(());
    }
    let mask = u32::MAX
        .checked_shl(32 - u32::from(prefix.min(32)))
        .unwrap_or(0);
    r.ifr_ifru.ifru_netmask = sockaddr_in(Ipv4Addr::from(mask));
    ifreq_ioctl(&fd, libc::SIOCSIFNETMASK, &mut r)
}

/// Set the MTU of interface `name`.
pub fn set_mtu(name: &str, mtu: u16) -> io::Result<()> {
    let fd = inet_socket()?;
    let mut r = ifreq(name)?;
    r.ifr_ifru.ifru_mtu = libc::c_int::from(mtu);
    ifreq_ioctl(&fd, libc::SIOCSIFMTU, &mut r)
}

/// `struct rtentry` of `<net/route.h>` (x86_64 layout; libc only has it
/// for musl).
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

/// Add the default route via `gateway` on interface `dev` (SIOCADDRT).
/// An existing default route is an `AlreadyExists` error.
pub fn add_default_route(gateway: Ipv4Addr, dev: &str) -> io::Result<()> {
    let fd = inet_socket()?;
    let dev = cstr(dev)?;
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr_in(gateway),
        rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_flags: libc::RTF_UP | libc::RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: dev.as_ptr().cast_mut(),
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    // SAFETY: `rt` has the kernel's `struct rtentry` layout and lives across
    // the call; `rt_dev` points to a NUL-terminated string that outlives it
    // and the kernel only reads it.
    check(unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            libc::SIOCADDRT as _,
            &mut rt as *mut RtEntry,
        )
    })
}

fn setsockopt_int(
    fd: &OwnedFd,
    level: libc::c_int,
    name: libc::c_int,
    v: libc::c_int,
) -> io::Result<()> {
    // SAFETY: the option value is a c_int that lives across the call and its
    // exact size is passed.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&v as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    })
}

/// A UDP socket on port `port` of interface `dev` only (SO_BINDTODEVICE),
/// allowed to broadcast, sharing the port with the sockets of other
/// interfaces (SO_REUSEADDR): what a DHCP client needs before the
/// interface has an address.
pub fn udp_socket_on(dev: &str, port: u16) -> io::Result<std::net::UdpSocket> {
    let fd = inet_socket()?;
    setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)?;
    setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_BROADCAST, 1)?;
    let name = cstr(dev)?;
    // SAFETY: the value is the interface name with its length (without the
    // NUL); the kernel copies it.
    check(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_BINDTODEVICE,
            name.as_ptr().cast(),
            dev.len() as libc::socklen_t,
        )
    })?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: 0 },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is a valid sockaddr_in of the size passed, living
    // across the call.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })?;
    Ok(std::net::UdpSocket::from(fd))
}

// ---- Kernel uevents (netlink(7), NETLINK_KOBJECT_UEVENT) ----

/// A socket on the kernel's uevent multicast group (group 1: the kernel's
/// own events, not udev's), with a large receive buffer so a burst of
/// events at module load is not dropped.
pub fn uevent_socket() -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; a non-negative result is a new
    // descriptor that nothing else owns.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_KOBJECT_UEVENT,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2) and is owned by no one else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SO_RCVBUFFORCE may exceed rmem_max (PID 1 has CAP_NET_ADMIN).
    if setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUFFORCE, 4 << 20).is_err() {
        let _ = setsockopt_int(&fd, libc::SOL_SOCKET, libc::SO_RCVBUF, 4 << 20);
    }
    // SAFETY: sockaddr_nl is plain data; all-zero is valid before the
    // fields are set.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    sa.nl_family = libc::AF_NETLINK as libc::sa_family_t;
    sa.nl_groups = 1;
    // SAFETY: `sa` is a valid sockaddr_nl of the size passed, living across
    // the call.
    check(unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_nl).cast(),
            std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
        )
    })?;
    Ok(fd)
}

/// Receive one datagram; `Ok(None)` when it did not come from the kernel
/// (netlink port id 0), which is then ignored.
pub fn recv_uevent(fd: &OwnedFd, buf: &mut [u8]) -> io::Result<Option<usize>> {
    // SAFETY: as above, all-zero is a valid sockaddr_nl.
    let mut sa: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t;
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes; `sa` and
    // `len` are valid out-parameters of the sizes given; all outlive the
    // call.
    let n = unsafe {
        libc::recvfrom(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            buf.len(),
            0,
            (&mut sa as *mut libc::sockaddr_nl).cast(),
            &mut len,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok((sa.nl_pid == 0).then_some(n as usize))
}
