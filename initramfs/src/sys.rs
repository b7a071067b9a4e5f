//! The system calls PID 1 needs and the standard library does not offer:
//! mount/umount, finit_module, reboot, signal masks, waitpid(-1), kill, and a
//! new session with a controlling terminal for children. Every `unsafe` block
//! of the crate is here.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::AsRawFd;
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
