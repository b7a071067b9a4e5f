//! The Win32 shutdown call: enable SeShutdownPrivilege in the process token
//! (AdjustTokenPrivileges), then InitiateSystemShutdownExW with no delay and
//! applications forced closed; ExitWindowsEx if that is refused. The only
//! `unsafe` code of the binary.
#![allow(unsafe_code)]

use std::io;
use std::ptr;

use windows_sys::Win32::Foundation::{CloseHandle, GetLastError, ERROR_NOT_ALL_ASSIGNED, HANDLE, LUID};
use windows_sys::Win32::Security::{
    AdjustTokenPrivileges, LookupPrivilegeValueW, LUID_AND_ATTRIBUTES, SE_PRIVILEGE_ENABLED, SE_SHUTDOWN_NAME, TOKEN_ADJUST_PRIVILEGES, TOKEN_PRIVILEGES,
    TOKEN_QUERY,
};
use windows_sys::Win32::System::Shutdown::{
    ExitWindowsEx, InitiateSystemShutdownExW, EWX_FORCE, EWX_POWEROFF, EWX_REBOOT, SHTDN_REASON_FLAG_PLANNED, SHTDN_REASON_MAJOR_OTHER,
    SHTDN_REASON_MINOR_OTHER,
};
use windows_sys::Win32::System::Threading::{GetCurrentProcess, OpenProcessToken};

/// Closes the token handle on drop.
struct Token(HANDLE);

impl Drop for Token {
    fn drop(&mut self) {
        // SAFETY: self.0 is a token handle from OpenProcessToken, closed only here.
        unsafe { CloseHandle(self.0) };
    }
}

fn enable_shutdown_privilege() -> io::Result<()> {
    let mut handle: HANDLE = ptr::null_mut();
    // SAFETY: GetCurrentProcess returns a pseudo handle that needs no closing;
    // `handle` is a valid out-pointer.
    if unsafe { OpenProcessToken(GetCurrentProcess(), TOKEN_ADJUST_PRIVILEGES | TOKEN_QUERY, &mut handle) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let token = Token(handle);
    let mut luid = LUID { LowPart: 0, HighPart: 0 };
    // SAFETY: a null system name means this machine; SE_SHUTDOWN_NAME is a
    // static NUL-terminated UTF-16 string; `luid` is a valid out-pointer.
    if unsafe { LookupPrivilegeValueW(ptr::null(), SE_SHUTDOWN_NAME, &mut luid) } == 0 {
        return Err(io::Error::last_os_error());
    }
    let tp = TOKEN_PRIVILEGES { PrivilegeCount: 1, Privileges: [LUID_AND_ATTRIBUTES { Luid: luid, Attributes: SE_PRIVILEGE_ENABLED }] };
    // SAFETY: token.0 is open with TOKEN_ADJUST_PRIVILEGES; `tp` is a valid
    // TOKEN_PRIVILEGES with one entry; no previous state is asked for (null
    // pointers with length 0).
    if unsafe { AdjustTokenPrivileges(token.0, 0, &tp, 0, ptr::null_mut(), ptr::null_mut()) } == 0 {
        return Err(io::Error::last_os_error());
    }
    // It succeeds without granting a privilege the account lacks; only the
    // last error tells.
    // SAFETY: reads the calling thread's last error, no arguments.
    if unsafe { GetLastError() } == ERROR_NOT_ALL_ASSIGNED {
        return Err(io::Error::from_raw_os_error(ERROR_NOT_ALL_ASSIGNED as i32));
    }
    Ok(())
}

/// Power off (or reboot) this machine now.
pub(super) fn shutdown(reboot: bool) -> io::Result<()> {
    enable_shutdown_privilege()?;
    let reason = SHTDN_REASON_MAJOR_OTHER | SHTDN_REASON_MINOR_OTHER | SHTDN_REASON_FLAG_PLANNED;
    // SAFETY: null machine name and message (this machine, no message); the
    // other arguments are plain values.
    if unsafe { InitiateSystemShutdownExW(ptr::null(), ptr::null(), 0, 1, i32::from(reboot), reason) } != 0 {
        return Ok(());
    }
    let first = io::Error::last_os_error();
    let flags = EWX_FORCE | if reboot { EWX_REBOOT } else { EWX_POWEROFF };
    // SAFETY: plain value arguments.
    if unsafe { ExitWindowsEx(flags, reason) } != 0 {
        return Ok(());
    }
    Err(io::Error::other(format!("InitiateSystemShutdownExW: {first}; ExitWindowsEx: {}", io::Error::last_os_error())))
}
