//! The Windows counterparts of `sys.rs`: file identity and the disk ioctls
//! the safe standard library does not offer. Every `unsafe` block of the
//! crate's Windows build is here.
//!
//! Deliberately missing: read-ahead hints (Windows takes them only as
//! `FILE_FLAG_SEQUENTIAL_SCAN` when a file is opened, and its cache manager
//! detects sequential reads by itself) and advisory locks (targets are
//! opened without write sharing instead, see `TargetDisk::open`).
#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::windows::io::AsRawHandle;

use windows_sys::Win32::Storage::FileSystem::{GetFileInformationByHandle, BY_HANDLE_FILE_INFORMATION};
use windows_sys::Win32::System::Ioctl::IOCTL_DISK_UPDATE_PROPERTIES;
use windows_sys::Win32::System::IO::DeviceIoControl;

/// (volume serial number, file index) of an open file: what (st_dev, st_ino)
/// is on Unix, stable while the file exists.
pub fn file_id(f: &File) -> io::Result<(u64, u64)> {
    // SAFETY: BY_HANDLE_FILE_INFORMATION is plain old data (integers and
    // FILETIMEs), so all zeroes is a valid value.
    let mut info: BY_HANDLE_FILE_INFORMATION = unsafe { std::mem::zeroed() };
    // SAFETY: the handle is valid while `f` lives; the function writes only
    // into `info`, a properly sized and aligned struct we own.
    let ok = unsafe { GetFileInformationByHandle(f.as_raw_handle(), &mut info) };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    let index = (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow);
    Ok((u64::from(info.dwVolumeSerialNumber), index))
}

/// Have Windows re-read the partition table of a disk opened as
/// `\\.\PhysicalDriveN` (IOCTL_DISK_UPDATE_PROPERTIES).
pub fn reread_partitions(f: &File) -> io::Result<()> {
    let mut returned = 0u32;
    // SAFETY: the handle is valid while `f` lives; IOCTL_DISK_UPDATE_PROPERTIES
    // takes no input or output buffer (null pointers with length 0), and
    // `returned` is a u32 we own; the call is synchronous (no OVERLAPPED).
    let ok = unsafe {
        DeviceIoControl(
            f.as_raw_handle(),
            IOCTL_DISK_UPDATE_PROPERTIES,
            std::ptr::null(),
            0,
            std::ptr::null_mut(),
            0,
            &mut returned,
            std::ptr::null_mut(),
        )
    };
    if ok == 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

/// No-op on Windows (see the module doc).
pub fn advise_sequential(_f: &File) {}

/// No-op on Windows (see the module doc).
pub fn advise_will_need(_f: &File, _offset: u64, _len: u64) {}
